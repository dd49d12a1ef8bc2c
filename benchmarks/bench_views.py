"""The views of code points (character and word n-grams) against the blend without them, paired, on the bundled reviews.

    .venv/bin/python benchmarks/bench_views.py --seeds 1 2 3 1337

For each seed one `default` run on `rotten_tomatoes` (the file's own split), which has both views
(262,139 buckets each of character 2-5-grams within words and of word 1-2-grams). The views are frozen
while the encoder trains, so the run's encoder and word-piece wide path are the ones the recipe without
them trains; each blend is fitted on the validation split, as training fits it: (encoder, wide path),
the recipe before stop 55; + characters, stop 55's; + characters + words, the shipped recipe; and
+ words alone. Reported on the test split: each blend's accuracy, the gains over the previous recipe
with their paired-bootstrap 95% intervals (2,000 resamples of the test texts), and the run's parameters.
Prints JSON and saves it to benchmarks/results/views.json. (Stop 55's char_view.json came from this
script's first version, bench_char_view.py, with the character view alone.)
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

RESULTS = os.path.join(os.path.dirname(__file__), "results", "views.json")
# Which blend inputs each blend reads: (encoder, wide path, characters, words), as the blend layer orders them.
BLENDS = {"encoder + wide path": [0, 1], "+ characters": [0, 1, 2], "+ characters + words": [0, 1, 2, 3],
          "+ words": [0, 1, 3]}


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
        config = TrainConfig(data="rotten_tomatoes", split_column="split", run_dir=run_dir, seed=seed)
        start = time.perf_counter()
        metrics = train_classifier(config, verbose=2)
        seconds = time.perf_counter() - start
        views = blend_views(run_dir)
    (val, val_labels), (test, test_labels) = views["val"], views["test"]
    right = {name: correct(_fit_blend([val[i] for i in inputs], val_labels), [test[i] for i in inputs], test_labels)
             for name, inputs in BLENDS.items()}
    rows = np.random.default_rng(0).integers(0, len(test_labels), (2000, len(test_labels)))
    result = {"seed": seed, "test_accuracy": {name: round(float(r.mean()), 4) for name, r in right.items()},
              "run_test_accuracy": round(metrics["test"]["accuracy"], 4)}  # = "+ characters + words": the run's own
    for name, baseline in (("+ characters + words", "+ characters"), ("+ characters + words", "encoder + wide path")):
        gain = right[name][rows].mean(1) - right[baseline][rows].mean(1)
        result[f"gain_points {name} over {baseline}"] = {
            "gain": round(100 * float(right[name].mean() - right[baseline].mean()), 2),
            "95": [round(100 * float(q), 2) for q in np.percentile(gain, [2.5, 97.5])]}
    return {**result, "epochs_run": metrics["epochs_run"], "parameters": metrics["parameters"],
            "run_seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 1337])
    args = parser.parse_args()
    results = {"data": "rotten_tomatoes (the file's split)", "recipe": "default",
               "machine": {**cpu_info(), "python": platform.python_version()}, "date": time.strftime("%Y-%m-%d"),
               "command": "benchmarks/bench_views.py --seeds " + " ".join(map(str, args.seeds)),
               "runs": [run(seed) for seed in args.seeds]}
    results["mean_test_accuracy"] = {name: round(float(np.mean([r["test_accuracy"][name] for r in results["runs"]])), 4)
                                     for name in BLENDS}
    save_results(RESULTS, results)


if __name__ == "__main__":
    main()
