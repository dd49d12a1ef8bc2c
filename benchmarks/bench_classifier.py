"""Quality and training time of classifier presets on the bundled Rotten Tomatoes data.

    .venv/bin/python benchmarks/bench_classifier.py --presets default article --seeds 1337 1 2
    .venv/bin/python benchmarks/bench_classifier.py --presets default default:word_vectors=false mobile --seeds 1337 1

A preset may carry settings after a colon (`NAME:KEY=VALUE,KEY=VALUE`, as `tfllm train --set`).
The presets take turns for each seed, so a busy machine slows them alike.

Prints JSON and saves it to benchmarks/results/classifier.json (presets not
run keep their previous entry). With several seeds it reports each run and
the mean. For a model with a naive-Bayes wide path it also reports the test
accuracy of the encoder alone (the blend reset to encoder logits only). The reference
figures (test split, binary) come from the dataset's SOURCES.md: TF-IDF +
logistic regression 0.780, keras.io's Transformer recipe 0.757.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from bench_vs_torch import command_line, save_results  # standard library only
from tfllm.cli import parse_setting
from tfllm.config import TrainConfig
from tfllm.evaluation import classification_report
from tfllm.training.classifier import load_run, predict_probabilities, run_data, train_classifier


def parse_spec(spec):
    """`NAME[:KEY=VALUE,...]` -> (preset name, {setting: value}), values read as `tfllm train --set` reads them."""
    name, _, settings = spec.partition(":")
    return name, dict(parse_setting(item) for item in settings.split(",") if item)


def run(data, spec, seed):
    name, overrides = parse_spec(spec)
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(data=data, preset=name, overrides=overrides, run_dir=run_dir, seed=seed)
        metrics = train_classifier(config, verbose=2)
        result = {
            "seed": seed,
            "test_accuracy": round(metrics["test"]["accuracy"], 4),
            "test_f1": round(metrics["test"]["f1"], 4),
            "test_roc_auc": round(metrics["test"].get("roc_auc", float("nan")), 4),
            "val_accuracy": round(metrics["val"]["accuracy"], 4),
            "train_seconds": metrics["train_seconds"],
            "epochs_run": metrics["epochs_run"],
            "parameters": metrics["parameters"],
            # What a phone would carry: the preset's weights (float32 TFLite is about the same size).
            "weights_megabytes": round(sum(os.path.getsize(os.path.join(run_dir, f))
                                           for f in ("model.weights.h5", "task.weights.h5")) / 1e6, 2),
        }
        model, label_names, _ = load_run(run_dir)
        if any(layer.name == "blend" for layer in model.layers):
            blend = model.get_layer("blend")
            weights = blend.get_weights()  # encoder and wide scales, bias, [character view's scale]
            blend.set_weights([np.ones(()), np.zeros(()), np.zeros_like(weights[2])] + [np.zeros(())] * (len(weights) - 3))
            split = run_data(run_dir).test  # the test split exactly as training split it
            encoder_only = classification_report(split.labels, predict_probabilities(model, split.texts), label_names)
            result["encoder_only_test_accuracy"] = round(encoder_only["accuracy"], 4)
    return result


def run_probe(out, seed, extra):
    """One `default` run for a probe script (its patches applied): the row with `extra` (a dict the
    patches may fill during the run), printed and appended to the JSON list in `out`."""
    start = time.time()
    row = dict(run("rotten_tomatoes", "default", seed), **extra, command=command_line(),
               wall_seconds=round(time.time() - start), date=time.strftime("%Y-%m-%d"))
    rows = json.load(open(out)) if os.path.exists(out) else []
    save_results(out, rows + [row], shown=row)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["default", "article"])
    parser.add_argument("--data", default="rotten_tomatoes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "classifier.json"))
    args = parser.parse_args(argv)
    # The run that wrote the file last; each preset's own entry names the command that made it.
    results = {"command": "python benchmarks/bench_classifier.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "data": args.data, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"), "presets": {}}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results["presets"] = json.load(f).get("presets", {})
    rows = {preset: [] for preset in args.presets}
    for seed in args.seeds:
        for preset in args.presets:
            rows[preset].append(run(args.data, preset, seed))
    for preset, runs in rows.items():
        summary = {"command": f"python benchmarks/bench_classifier.py --data {args.data} --presets {preset} --seeds "
                              + " ".join(map(str, args.seeds))}
        for key in runs[0]:
            if key != "seed":
                summary[f"mean_{key}"] = round(sum(r[key] for r in runs) / len(runs), 4)
        results["presets"][preset] = {**summary, "runs": runs}
        print(json.dumps({preset: results["presets"][preset]}))
    save_results(args.out, results)


if __name__ == "__main__":
    main()
