"""Tokenizing for a training run: the preprocessor traced once against `tfllm.data.preprocess`.

A classifier run tokenizes texts for several pipelines (training, validation,
the predictions for the validation and test reports, the explained texts).
From stop 25 to stop 60 `tfllm.data.preprocess` traced a model's preprocessor
once (a `tf.function`) and ran that graph on chunks of texts (before that,
every pipeline was a `tf.data` map that traced it again). Since stop 61 it
calls the preprocessor eagerly on TensorFlow Text's ops
(`tfllm.data.tensorflow_path`). This times both ways of tokenizing the same
texts `--pipelines` times with a fresh preprocessor (what one training run
does), alternating the two in every round, and checks they give the same
token ids.

    .venv/bin/python benchmarks/bench_preprocess.py   # -> benchmarks/results/preprocess_stop61.json
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

from bench_vs_torch import save_results  # standard library only
from tfllm import tokenizers
from tfllm.config import TrainConfig
from tfllm.data import preprocess
from tfllm.datasets import split_as_trained
from tfllm.models import TextClassifierPreprocessor
from tfllm.presets import resolve_preset
from tfllm.training.classifier import char_preprocessing


def traced(texts, preprocessor, cache={}):
    """The stop-25 way: the preprocessor as one `tf.function` per model, run on the texts."""
    if preprocessor not in cache:
        cache.clear()
        cache[preprocessor] = tf.function(preprocessor, input_signature=[tf.TensorSpec([None], tf.string)])
    return cache[preprocessor](tf.constant(list(texts)))


def time_pipelines(way, texts, make_preprocessor, pipelines):
    preprocessor = make_preprocessor()  # a new model's preprocessor: nothing traced yet
    start = time.perf_counter()
    for _ in range(pipelines):
        outputs = traced(texts, preprocessor) if way == "traced" else preprocess(texts, preprocessor)
    return time.perf_counter() - start, outputs["token_ids"].numpy()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelines", type=int, default=6, help="tokenizations per training run")
    parser.add_argument("--out", default="benchmarks/results/preprocess_stop61.json")
    args = parser.parse_args()

    data = split_as_trained(TrainConfig(data="rotten_tomatoes"))
    preset = resolve_preset("classify", "default", {})
    tokenizer = tokenizers.train_tokenizer(data.train.texts, preset["tokenizer"], preset["vocabulary_size"],
                                           lowercase=preset.get("lowercase", True))

    def make_preprocessor():
        return TextClassifierPreprocessor(tokenizer, sequence_length=preset["sequence_length"],
                                          **char_preprocessing(preset))

    cases = {"300 texts (a test's tiny run)": data.train.texts[:300],
             f"{len(data.train)} texts (rotten_tomatoes' training split)": data.train.texts}
    results = {"command": "python benchmarks/bench_preprocess.py " + " ".join(
                   f"--{k} {v}" for k, v in vars(args).items()),
               "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
               "load_average_1min_at_start": round(os.getloadavg()[0], 2),
               "versions": {"tensorflow": tf.__version__},
               "pipelines_per_run": args.pipelines, "cases": {}}
    for name, texts in cases.items():
        seconds = {"traced": [], "preprocess": []}
        for round_ in range(args.rounds):
            order = ("traced", "preprocess") if round_ % 2 == 0 else ("preprocess", "traced")
            ids = {}
            for way in order:
                elapsed, ids[way] = time_pipelines(way, texts, make_preprocessor, args.pipelines)
                seconds[way].append(round(elapsed, 3))
            if not np.array_equal(ids["traced"], ids["preprocess"]):
                raise SystemExit(f"{name}: the two ways gave different token ids")
        median = {way: statistics.median(values) for way, values in seconds.items()}
        results["cases"][name] = {"seconds_per_run": seconds, "median": median,
                                  "speedup": round(median["traced"] / median["preprocess"], 2)}
        print(f"{name}: traced {median['traced']:.2f} s, preprocess {median['preprocess']:.2f} s per "
              f"{args.pipelines} pipelines ({results['cases'][name]['speedup']}x); same token ids")
    save_results(args.out, results, shown=f"-> {args.out}")


if __name__ == "__main__":
    main()
