"""Quality and training time of classifier presets on the bundled Rotten Tomatoes data.

    .venv/bin/python benchmarks/bench_classifier.py --presets default article

Prints JSON and saves it to benchmarks/results/classifier.json. The reference
figures (test split, binary) come from the dataset's SOURCES.md: TF-IDF +
logistic regression 0.780, keras.io's Transformer recipe 0.757.
"""

import argparse
import json
import os
import platform
import tempfile
import time

from tfllm.config import TrainConfig
from tfllm.training.classifier import train_classifier


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["default", "article"])
    parser.add_argument("--data", default="rotten_tomatoes")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "classifier.json"))
    args = parser.parse_args()
    results = {"data": args.data, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"), "presets": {}}
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as run_dir:
            metrics = train_classifier(TrainConfig(data=args.data, preset=preset, run_dir=run_dir, seed=args.seed), verbose=2)
        results["presets"][preset] = {
            "test_accuracy": round(metrics["test"]["accuracy"], 4),
            "test_f1": round(metrics["test"]["f1"], 4),
            "test_roc_auc": round(metrics["test"].get("roc_auc", float("nan")), 4),
            "val_accuracy": round(metrics["val"]["accuracy"], 4),
            "train_seconds": metrics["train_seconds"],
            "epochs_run": metrics["epochs_run"],
        }
        print(json.dumps({preset: results["presets"][preset]}))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
