"""A tiny classifier's `fit` with Keras's train step traced (as shipped) against run eagerly, by training rows.

    .venv/bin/python benchmarks/probe_eager_training.py   -> benchmarks/results/eager_training.json

Stop 61 runs the test step eagerly when a run evaluates at most 10 batches (`common.eager_evaluation`): tracing
it costs more than the work. This asks the same of the train step, in one process, the two modes taking turns
after a warm-up training: tracing it costs a fixed ~2 s, an eager batch more than a traced one. Not shipped (see
docs/benchmarks.md, "training-speed-stop61"); kept so the crossover can be measured again.
"""

import argparse
import contextlib
import os
import tempfile
import time

import keras

from bench_vs_torch import cpu_info, save_results
from tfllm.config import TrainConfig
from tfllm.models import resolve_preset
from tfllm.training import common
from tfllm.training.classifier import train_classifier

_shipped = common.eager_evaluation
EAGER_TRAIN_STEP = {"on": False}


@contextlib.contextmanager
def _eager_steps(model, batches, strategy):
    """The shipped block, and with the probe's switch on, Keras's train function made eagerly too."""
    with _shipped(model, batches, strategy):
        if EAGER_TRAIN_STEP["on"]:
            model.run_eagerly = True  # read as Keras builds the train function, and only then
            model.make_train_function(force=True)
            model.run_eagerly = False
        try:
            yield
        finally:
            model.train_function = None


def train_once(rows, eager):
    """(whole seconds, fit seconds, training batches, test accuracy) of one tiny training."""
    EAGER_TRAIN_STEP["on"] = eager
    fits, fit = [], keras.Model.fit

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            fits.append(time.perf_counter() - start)

    keras.Model.fit = timed
    try:
        run_dir = os.path.join(tempfile.mkdtemp(), "tiny")
        start = time.perf_counter()
        metrics = train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=rows, run_dir=run_dir),
                                   verbose=0)
        whole = time.perf_counter() - start
    finally:
        keras.Model.fit = fit
    batches = -(-metrics["num_train_examples"] // resolve_preset("classify", "tiny", {})["batch_size"])
    return round(whole, 2), round(sum(fits), 2), batches, metrics["test"]["accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[150, 400])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/eager_training.json")
    args = parser.parse_args()
    common.eager_evaluation = _eager_steps
    train_once(args.rows[0], False)  # warm-up: imports and first-use costs out of the timings
    results = {"machine": cpu_info(), "command": "benchmarks/probe_eager_training.py", "rows": {}}
    for rows in args.rows:
        runs = {"traced": [], "eager": []}
        for _ in range(args.rounds):
            for mode in ("traced", "eager"):
                whole, fit, batches, accuracy = train_once(rows, mode == "eager")
                runs[mode].append({"whole_seconds": whole, "fit_seconds": fit, "test_accuracy": accuracy})
        results["rows"][str(rows)] = {"train_batches": batches, **runs}
    save_results(args.out, results)


if __name__ == "__main__":
    main()
