"""Scoring many texts with a trained classifier: rows per eager call against seconds (`eager_batch_size`).

    .venv/bin/python benchmarks/probe_eager_batch.py runs/reviews   # `make demo`'s run
    -> benchmarks/results/eager_batch.json

`predict_probabilities` calls the model eagerly, batch by batch, and eagerly the cost is mostly per op, not
per row. The batch sizes take turns in every round; the probabilities must not depend on them.
"""

import argparse
import csv
import gzip
import time

import numpy as np

from bench_vs_torch import cpu_info, save_results
from tfllm.datasets import bundled_path
from tfllm.models.text_classifier import eager_batch_size, predict_probabilities
from tfllm.training.classifier import load_run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--texts", type=int, default=11000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/eager_batch.json")
    args = parser.parse_args()
    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:args.texts]
    model, _, _ = load_run(args.run_dir)
    seconds, outputs = {size: [] for size in args.batch_sizes}, {}
    for _ in range(args.rounds):
        for size in args.batch_sizes:
            start = time.perf_counter()
            outputs[size] = predict_probabilities(model, texts, batch_size=size)
            seconds[size].append(round(time.perf_counter() - start, 2))
    first = outputs[args.batch_sizes[0]]
    results = {"run_dir": args.run_dir, "texts": len(texts), "eager_batch_size": eager_batch_size(model),
               "seconds": {str(size): s for size, s in seconds.items()},
               "median_seconds": {str(size): float(np.median(s)) for size, s in seconds.items()},
               "max_abs_difference": float(max(np.abs(first - p).max() for p in outputs.values())), "cpu": cpu_info()}
    save_results(args.out, results)


if __name__ == "__main__":
    main()
