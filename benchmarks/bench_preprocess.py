"""Tokenizing for a training run: one `tf.data` map per pipeline against `tfllm.data.preprocess`.

Before stop 25 every pipeline a classifier run built (training, validation,
the predictions for the validation and test reports, the wide path's blend,
the explained texts) mapped the KerasHub preprocessor over its texts, and
each map traced the tokenizer and packer into a graph of its own.
`tfllm.data.preprocess` traces a model's preprocessor once and runs that
graph on chunks of texts. This times both ways of tokenizing the same texts
`--pipelines` times with a fresh preprocessor (what one training run does),
alternating the two in every round, and checks they give the same token ids.

    .venv/bin/python benchmarks/bench_preprocess.py   # -> benchmarks/results/preprocess.json
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
from tfllm.models.presets import resolve_preset


def mapped(texts, preprocessor):
    """The old way: a `tf.data` map of the preprocessor (traced when the pipeline is built)."""
    ds = tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)
    ds = ds.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    return next(iter(ds.batch(len(texts))))


def time_pipelines(way, texts, make_preprocessor, pipelines):
    preprocessor = make_preprocessor()  # a new model's preprocessor: nothing traced yet
    start = time.perf_counter()
    for _ in range(pipelines):
        outputs = mapped(texts, preprocessor) if way == "map" else preprocess(texts, preprocessor)
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
    parser.add_argument("--out", default="benchmarks/results/preprocess.json")
    args = parser.parse_args()

    data = split_as_trained(TrainConfig(data="rotten_tomatoes"))
    preset = resolve_preset("classify", "default", {})
    tokenizer = tokenizers.train_tokenizer(data.train.texts, preset["tokenizer"], preset["vocabulary_size"],
                                           lowercase=preset.get("lowercase", True))

    def make_preprocessor():
        return TextClassifierPreprocessor(tokenizer, sequence_length=preset["sequence_length"])

    cases = {"300 texts (a test's tiny run)": data.train.texts[:300],
             f"{len(data.train)} texts (rotten_tomatoes' training split)": data.train.texts}
    results = {"command": "python benchmarks/bench_preprocess.py " + " ".join(
                   f"--{k} {v}" for k, v in vars(args).items()),
               "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
               "load_average_1min_at_start": round(os.getloadavg()[0], 2),
               "versions": {"tensorflow": tf.__version__},
               "pipelines_per_run": args.pipelines, "cases": {}}
    for name, texts in cases.items():
        seconds = {"map": [], "preprocess": []}
        for round_ in range(args.rounds):
            order = ("map", "preprocess") if round_ % 2 == 0 else ("preprocess", "map")
            ids = {}
            for way in order:
                elapsed, ids[way] = time_pipelines(way, texts, make_preprocessor, args.pipelines)
                seconds[way].append(round(elapsed, 3))
            if not np.array_equal(ids["map"], ids["preprocess"]):
                raise SystemExit(f"{name}: the two ways gave different token ids")
        median = {way: statistics.median(values) for way, values in seconds.items()}
        results["cases"][name] = {"seconds_per_run": seconds, "median": median,
                                  "speedup": round(median["map"] / median["preprocess"], 2)}
        print(f"{name}: map {median['map']:.2f} s, preprocess {median['preprocess']:.2f} s per "
              f"{args.pipelines} pipelines ({results['cases'][name]['speedup']}x); same token ids")
    save_results(args.out, results, shown=f"-> {args.out}")


if __name__ == "__main__":
    main()
