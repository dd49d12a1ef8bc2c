"""Probe: the nanogpt-cpu train step split into one XLA program per core, run side by side.

    .venv/bin/python benchmarks/probe_split_step.py --rounds 3   # -> benchmarks/results/split_step.json

XLA's CPU step uses the two cores poorly: one intra-op thread runs it about 1.6x slower than two,
not 2x. This asks whether data parallelism inside one process does better: the batch of 12 is cut
into SHARDS parts, each part's loss and gradients are one XLA program that takes the weights as
tensors (so TensorFlow's executor may run the parts at once on its inter-op threads), with one
intra-op thread each; the averaged gradients then go through the same AdamW in one more XLA
program. Arms, each in its own process (thread settings are per process), taking turns each round:
`keras` (tfllm's step as shipped: one XLA program, default threads) and `split` (2 shards, one
intra-op thread). Random token ids (speed only); both arms start from the same weights, and their
first 200 steps' losses agree (checked below). docs/benchmarks.md ("Tried, and what remains") has the figures.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

from bench_vs_torch import save_results  # standard library only

ARMS = {"keras": {"SHARDS": "1", "INTRA": "0"}, "split": {"SHARDS": "2", "INTRA": "1"}}
STEPS_PER_EPOCH, EPOCHS = 100, 7  # the first epoch (tracing and XLA compiles) is not timed


def child():
    import numpy as np
    import tensorflow as tf

    if int(os.environ["INTRA"]):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["INTRA"]))
    import keras

    from tfllm import presets
    from tfllm.models.causal_lm import CausalLM
    from tfllm.training import causal_lm

    shards = int(os.environ["SHARDS"])
    preset = dict(presets.CAUSAL_LM_PRESETS["nanogpt-cpu"], vocabulary_size=65)
    keras.utils.set_random_seed(0)
    model = causal_lm.compile_causal_lm(CausalLM.from_args(**preset), preset)
    if shards > 1:
        def shard_gradients(values, x, y):
            with tf.GradientTape() as tape:
                tape.watch(values)
                with keras.StatelessScope(state_mapping=list(zip(model.trainable_variables, values))):
                    y_pred = model(x, training=True)
                    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            return loss, tape.gradient(loss, values), y_pred

        shard_fn = tf.function(shard_gradients, jit_compile=True)
        apply_fn = tf.function(lambda g: model.optimizer.apply_gradients(zip(g, model.trainable_variables)),
                               jit_compile=True)

        def train_step(data):
            x, y = data
            values = [tf.convert_to_tensor(v.value) for v in model.trainable_variables]
            outs = [shard_fn(values, *tf.nest.map_structure(lambda t: tf.split(t, shards)[i], (x, y)))
                    for i in range(shards)]
            loss = tf.add_n([o[0] for o in outs]) / shards
            apply_fn([tf.add_n(list(g)) / shards for g in zip(*[o[1] for o in outs])])
            model._loss_tracker.update_state(loss, sample_weight=tf.shape(y)[0])  # PRIVATE API, probe only
            return model.compute_metrics(x, y, tf.concat([o[2] for o in outs], 0), sample_weight=None)

        model.train_step = train_step
        model._jit_compile = False  # the parts are compiled; the loop around them is not
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65, (STEPS_PER_EPOCH * 12, 64)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices(({"token_ids": x, "padding_mask": np.ones_like(x, bool)},
                                               np.roll(x, -1, 1))).batch(12).repeat()
    ms, losses = [], []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            ms.append((time.perf_counter() - self.start) * 1000 / STEPS_PER_EPOCH)
            losses.append(logs["loss"])

    model.fit(data, steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS, verbose=0, callbacks=[Timer()])
    print(json.dumps({"ms_per_step": ms[1:], "losses": losses}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "split_step.json"))
    args = parser.parse_args()
    rounds = []
    for r in range(args.rounds):
        row = {}
        for arm, env in ARMS.items():
            out = subprocess.run([sys.executable, __file__, "--child"], env=dict(os.environ, **env,
                                 TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, check=True)
            row[arm] = json.loads(out.stdout.strip().splitlines()[-1])
            row[arm]["median_ms"] = sorted(row[arm]["ms_per_step"])[len(row[arm]["ms_per_step"]) // 2]
        # The first 200 steps' mean losses agree to float round-off; later ones drift apart as any two
        # summation orders do on random targets (about 0.01 after 700 steps), so only those are compared.
        same = all(abs(a - b) < 1e-4 for a, b in zip(row["keras"]["losses"][:2], row["split"]["losses"][:2]))
        row["split_speed_ratio"] = row["keras"]["median_ms"] / row["split"]["median_ms"]
        print(f"round {r}: keras {row['keras']['median_ms']:.1f} ms, split {row['split']['median_ms']:.1f} ms, "
              f"split ÷ keras speed {row['split_speed_ratio']:.2f}x, same losses: {same}", flush=True)
        if not same:
            sys.exit(f"the arms' losses differ: {row['keras']['losses']} vs {row['split']['losses']}")
        rounds.append(row)
    ratios = sorted(r["split_speed_ratio"] for r in rounds)
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "arms": ARMS, "rounds": rounds, "median_split_speed_ratio": ratios[len(ratios) // 2]}
    save_results(args.out, result, shown={"median_split_speed_ratio": result["median_split_speed_ratio"]})


if __name__ == "__main__":
    child() if "--child" in sys.argv else main()
