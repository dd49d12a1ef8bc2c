"""The character view (`--set char_ngram_buckets=N`) against the shipped blend, paired, on the bundled reviews.

    .venv/bin/python benchmarks/bench_char_view.py --seeds 1 2 3 1337

For each seed one `default` run on `rotten_tomatoes` (the file's own split) with the character view
(262,139 buckets of character 2-5-grams within words). The view is frozen while the encoder trains, so
the run's encoder and word wide path are the ones the recipe without it trains; the two blends are
both fitted on the validation split, as training fits them: (encoder, wide path), the shipped recipe,
and (encoder, wide path, characters). Reported on the test split: each blend's accuracy, the gain and
its paired-bootstrap 95% interval (2,000 resamples of the test texts), the seconds the view's fit took
and the run's parameters. Prints JSON and saves it to benchmarks/results/char_view.json.
"""

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from bench_vs_torch import cpu_info, save_results  # the machine, as the paired benchmark records it (standard library only)
from tfllm.config import TrainConfig
from tfllm.training.classifier import train_classifier

RESULTS = os.path.join(os.path.dirname(__file__), "results", "char_view.json")
BUCKETS = 262139


def blend_views(run_dir):
    """{split: (views: list of [n, units] logits, labels)} of a finished run's blend inputs on val and test."""
    import keras

    from tfllm.training.classifier import load_run, run_data

    model, _, _ = load_run(run_dir)
    data = run_data(run_dir)
    parts = keras.Model(model.input, model.get_layer("blend").input)
    return {split: ([np.asarray(v) for v in parts.predict(model.preprocessor(list(getattr(data, split).texts)), verbose=0)],
                    np.asarray(getattr(data, split).labels)) for split in ("val", "test")}


def correct(weights, views, labels):
    """Whether each text's blended prediction (one sigmoid unit) is its label."""
    logits = weights[0] * views[0] + weights[1] * views[1] + weights[2] + sum(
        w * v for w, v in zip(weights[3:], views[2:]))
    return (logits[:, -1] > 0).astype(int) == labels


def run(seed):
    from tfllm.models.text_classifier import _fit_blend

    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(data="rotten_tomatoes", split_column="split", run_dir=run_dir, seed=seed,
                             overrides={"char_ngram_buckets": BUCKETS})
        start = time.perf_counter()
        metrics = train_classifier(config, verbose=2)
        seconds = time.perf_counter() - start
        views = blend_views(run_dir)
    (val, val_labels), (test, test_labels) = views["val"], views["test"]
    shipped = correct(_fit_blend(val[:2], val_labels), test[:2], test_labels)
    with_chars = correct(_fit_blend(val, val_labels), test, test_labels)
    rows = np.random.default_rng(0).integers(0, len(shipped), (2000, len(shipped)))
    gain = with_chars[rows].mean(1) - shipped[rows].mean(1)
    return {"seed": seed, "test_accuracy_shipped_blend": round(float(shipped.mean()), 4),
            "test_accuracy_with_char_view": round(float(with_chars.mean()), 4),
            "run_test_accuracy": round(metrics["test"]["accuracy"], 4),  # = the line above: the run's own blend
            "gain_points": round(100 * float(with_chars.mean() - shipped.mean()), 2),
            "gain_points_95": [round(100 * float(q), 2) for q in np.percentile(gain, [2.5, 97.5])],
            "epochs_run": metrics["epochs_run"], "parameters": metrics["parameters"],
            "run_seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 1337])
    args = parser.parse_args()
    results = {"data": "rotten_tomatoes (the file's split)", "recipe": "default + char_ngram_buckets=262139",
               "machine": {**cpu_info(), "python": platform.python_version()}, "date": time.strftime("%Y-%m-%d"),
               "command": "benchmarks/bench_char_view.py --seeds " + " ".join(map(str, args.seeds)),
               "runs": [run(seed) for seed in args.seeds]}
    for key in ("test_accuracy_shipped_blend", "test_accuracy_with_char_view", "gain_points"):
        results[f"mean_{key}"] = round(float(np.mean([r[key] for r in results["runs"]])), 4)
    save_results(RESULTS, results)


if __name__ == "__main__":
    main()
