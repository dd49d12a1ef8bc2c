"""A rare class: `--set balance_classes=true` against the plain recipe, on an imbalanced cut of the bundled reviews.

    .venv/bin/python benchmarks/bench_imbalance.py --preset mobile --keep 0.1 --seeds 1337 1

The bundled `rotten_tomatoes` file with only `--keep` of its 'fresh' rows (seeded, in every split; the
'rotten' rows and the file's own movie-disjoint split kept), so 'fresh' is about one row in nine. Both
recipes train on the same file, taking turns for each seed. Reported on the test split: accuracy,
balanced accuracy (the mean of the classes' recalls, as `metrics.json` has it) and each class's recall
and F1. Prints JSON and saves it to benchmarks/results/imbalance.json.
"""

import argparse
import csv
import gzip
import os
import platform
import random
import tempfile

from bench_vs_torch import cpu_info, save_results  # the machine, as the paired benchmark records it (standard library only)
from tfllm.config import TrainConfig
from tfllm.datasets import bundled_path
from tfllm.training.classifier import train_classifier

RESULTS = os.path.join(os.path.dirname(__file__), "results", "imbalance.json")


def imbalanced_file(folder, keep, seed=0):
    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(seed)
    rows = [r for r in rows if r["label"] == "rotten" or (r["label"] == "fresh" and rng.random() < keep)]
    path = os.path.join(folder, "imbalanced.csv")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(data, preset, balanced, seed):
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(data=data, preset=preset, split_column="split", run_dir=run_dir, seed=seed,
                             overrides={"balance_classes": True} if balanced else {})
        test = train_classifier(config, verbose=2)["test"]
    per_class = test["per_class"]
    return {"seed": seed, "accuracy": round(test["accuracy"], 4),
            "balanced_accuracy": round(test["balanced_accuracy"], 4),
            **{f"{name}_recall": round(c["recall"], 4) for name, c in per_class.items()},
            **{f"{name}_f1": round(c["f1"], 4) for name, c in per_class.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--keep", type=float, default=0.1, help="the share of 'fresh' rows kept")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1])
    args = parser.parse_args()
    results = {"preset": args.preset, "keep": args.keep, "machine": {**cpu_info(), "python": platform.python_version()},
               "plain": [], "balance_classes": []}
    with tempfile.TemporaryDirectory() as folder:
        data = imbalanced_file(folder, args.keep)
        for seed in args.seeds:
            for name in ("plain", "balance_classes"):
                results[name].append(run(data, args.preset, name == "balance_classes", seed))
    for name in ("plain", "balance_classes"):
        runs = results[name]
        results[f"{name}_mean"] = {key: round(sum(r[key] for r in runs) / len(runs), 4)
                                   for key in runs[0] if key != "seed"}
    save_results(RESULTS, results)


if __name__ == "__main__":
    main()
