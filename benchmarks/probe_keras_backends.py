"""Probe: the nanogpt-cpu model's train step in plain Keras 3 under the backend KERAS_BACKEND selects.

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/probe_keras_backends.py
    KERAS_BACKEND=jax VENV/bin/python benchmarks/probe_keras_backends.py   # a venv with jax and keras==3.15.1

4 blocks x 128 wide, 4 heads, 64 tokens, batch 12, no biases, tied embeddings; AdamW with global-norm
clipping, jit_compile=True, 50 steps per call; random token ids (speed only). Prints the median ms per
step of each round. docs/benchmarks.md ("Stop 34: where the XLA step loses") has the figures.
"""
import argparse
import json
import os
import time

# --help before importing Keras: it only prints this docstring, exit 0, nothing run.
argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="ROUNDS=N (environment) sets the number of timed rounds (default 3).").parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

B, T, D, H, F, V, L = 12, 64, 128, 4, 512, 65, 4
class Block(layers.Layer):
    def build(self, shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.n1, self.n2 = layers.LayerNormalization(epsilon=1e-5), layers.LayerNormalization(epsilon=1e-5)
        self.qkv = layers.Dense(3 * D, use_bias=False, kernel_initializer=init)
        self.o = layers.Dense(D, use_bias=False, kernel_initializer=init)
        self.f1 = layers.Dense(F, use_bias=False, activation="gelu", kernel_initializer=init)
        self.f2 = layers.Dense(D, use_bias=False, kernel_initializer=init)
    def call(self, x):
        qkv = ops.reshape(self.qkv(self.n1(x)), (-1, T, 3, H, D // H))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        s = ops.einsum("bqhd,bkhd->bhqk", q, k) * (D // H) ** -0.5
        mask = ops.arange(T)[None, :] <= ops.arange(T)[:, None]
        p = ops.softmax(ops.where(mask[None, None], s, -1e9), axis=-1)
        x = x + self.o(ops.reshape(ops.einsum("bhqk,bkhd->bqhd", p, v), (-1, T, D)))
        return x + self.f2(self.f1(self.n2(x)))
class Head(layers.Layer):
    def __init__(self, emb): super().__init__(); self.emb = emb
    def call(self, x): return ops.matmul(x, ops.transpose(self.emb.embeddings))
ids = keras.Input((T,), dtype="int32")
emb = layers.Embedding(V, D, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
pos = layers.Embedding(T, D, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
x = emb(ids) + pos(ops.arange(T))[None]
for _ in range(L): x = Block()(x)
logits = Head(emb)(layers.LayerNormalization(epsilon=1e-5)(x))
model = keras.Model(ids, logits)
model.compile(keras.optimizers.AdamW(1e-3, beta_2=0.99, weight_decay=0.1, global_clipnorm=1.0),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True, steps_per_execution=50)
w = np.random.default_rng(0).integers(0, V, size=(12 * 700, T + 1)).astype("int32")
class Timer(keras.callbacks.Callback):
    def on_train_batch_begin(self, b, logs=None): self.t = time.perf_counter()
    def on_train_batch_end(self, b, logs=None): self.ts.append(time.perf_counter() - self.t)
timer = Timer(); timer.ts = []
model.fit(w[:600, :-1], w[:600, 1:], batch_size=B, epochs=1, verbose=0)
res = []
for r in range(int(os.environ.get("ROUNDS", 3))):
    timer.ts = []
    model.fit(w[:, :-1], w[:, 1:], batch_size=B, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    res.append(round(float(np.median(timer.ts)) / 50 * 1000, 2))
print(json.dumps({"backend": keras.backend.backend(), "ms_per_step": res}))
