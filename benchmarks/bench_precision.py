"""Training speed (tokens/s) by precision and XLA, for the article classifier and the causal LM.

    .venv/bin/python benchmarks/bench_precision.py            # this CPU: float32, mixed_bfloat16, each with/without XLA
    .venv/bin/python benchmarks/bench_precision.py --gpu      # adds mixed_float16 and larger batches

Synthetic token ids (the speed of a step does not depend on the text); each
configuration trains `--warmup` steps (tracing, XLA compilation) and is then
timed over `--steps` steps. Prints JSON and writes it to
benchmarks/results/precision.json (precision_gpu.json with --gpu).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_vs_torch import save_results  # noqa: E402  (standard library only)
from tfllm import data as data_lib  # noqa: E402
from tfllm.models import resolve_preset  # noqa: E402
from tfllm.training import common  # noqa: E402
from tfllm.models.encoder_backbone import BACKBONE_ARGS, EncoderBackbone  # noqa: E402
from tfllm.models.text_classifier import TextClassifier  # noqa: E402
from tfllm.tokenizers import CharacterTokenizer  # noqa: E402
from tfllm.training.causal_lm import build_causal_lm  # noqa: E402
from tfllm.training.classifier import compile_classifier  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def synthetic_dataset(task, batch_size, sequence_length, vocabulary_size):
    rng = np.random.default_rng(0)
    if task == "classify":
        x = rng.integers(1, vocabulary_size, (batch_size * 8, sequence_length)).astype("int32")
        y = rng.integers(0, 2, (len(x), 1)).astype("float32")
        ds = tf.data.Dataset.from_tensor_slices(({"token_ids": x, "padding_mask": np.ones_like(x)}, y))
        return ds.batch(batch_size, drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE)
    return data_lib.random_window_dataset(rng.integers(1, vocabulary_size, 100_000), sequence_length, batch_size, seed=0)


def measure(task, precision, jit_compile, batch_size, steps, warmup):
    keras.utils.set_random_seed(0)
    # The models as training builds them, less the preprocessor: the batches are token ids already.
    if task == "classify":
        preset = resolve_preset("classify", "article", {"jit_compile": jit_compile, "batch_size": batch_size})
        vocabulary_size = preset["vocabulary_size"]
        with common.precision_scope(precision):
            backbone = EncoderBackbone(vocabulary_size=vocabulary_size,
                                       **{k: preset[k] for k in BACKBONE_ARGS if k in preset and k != "vocabulary_size"})
            model = TextClassifier(backbone, 2, dropout=preset["dropout"])
            compile_classifier(model, preset)
    else:
        preset = resolve_preset("generate", "nanogpt-cpu", {"jit_compile": jit_compile, "batch_size": batch_size})
        tokenizer = CharacterTokenizer(vocabulary=[chr(c) for c in range(32, 97)])  # 65 characters, as Shakespeare's
        vocabulary_size = tokenizer.vocabulary_size()
        with common.precision_scope(precision):
            model = build_causal_lm(preset, tokenizer)
        model.preprocessor = None
    ds = synthetic_dataset(task, batch_size, preset["sequence_length"], vocabulary_size)
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
    start = time.perf_counter()
    history = model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    tokens = steps * batch_size * preset["sequence_length"]
    return {
        "task": task,
        "preset": "article" if task == "classify" else "nanogpt-cpu",
        "precision": precision,
        "jit_compile": jit_compile,
        "batch_size": batch_size,
        "sequence_length": preset["sequence_length"],
        "ms_per_step": round(1000 * seconds / steps, 2),
        "tokens_per_second": round(tokens / seconds),
        "final_loss": round(float(history.history["loss"][-1]), 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPU run: float16 too, batches 32 and 256")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tasks", default="classify,generate")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    gpus = tf.config.list_physical_devices("GPU")
    if args.gpu and not gpus:
        sys.exit("bench_precision: --gpu given but TensorFlow sees no GPU")
    precisions = ["float32", "mixed_bfloat16"] + (["mixed_float16"] if args.gpu else [])
    batch_sizes = {"classify": [32, 256], "generate": [12, 128]} if args.gpu else {"classify": [32], "generate": [12]}
    runs = []
    for task in args.tasks.split(","):
        for batch_size in batch_sizes[task]:
            for precision in precisions:
                for jit_compile in (False, True):
                    result = measure(task, precision, jit_compile, batch_size, args.steps, args.warmup)
                    print(json.dumps(result), flush=True)
                    runs.append(result)
    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv),
        "device": tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus
        else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "runs": runs,
    }
    out = args.out or os.path.join(RESULTS, "precision_gpu.json" if args.gpu else "precision.json")
    save_results(out, report)


if __name__ == "__main__":
    main()
