"""Where a training command's seconds go: named phases, and inside `fit` the steps apart from the rest.

`benchmarks/bench_vs_torch.py` sets `TFLLM_TIMING_FILE` and reads the JSON a
training run writes there, so every second of `tfllm train` outside the
training steps is accounted for. Without the variable nothing is written.
"""

import json
import os
import time

import keras

TIMING_FILE_VARIABLE = "TFLLM_TIMING_FILE"


class Phases:
    """Wall-clock seconds per named phase, in order; `fit` is split by a `FitTimer`."""

    def __init__(self):
        self.entered_at = time.time()
        self.seconds = {}
        self._last = time.perf_counter()

    def mark(self, name):
        """Books the seconds since the previous mark (or the start) to `name`."""
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def write(self, fit_timer=None):
        """Writes the phases to `$TFLLM_TIMING_FILE`, if set."""
        path = os.environ.get(TIMING_FILE_VARIABLE)
        if not path:
            return
        phases = dict(self.seconds)
        if fit_timer is not None and "fit" in phases:
            split = fit_timer.split()
            split["fit_other"] = phases.pop("fit") - sum(split.values())  # Keras' loop, logging, backups
            phases.update(split)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"entered_at": self.entered_at, "returned_at": time.time(),
                       "phases": {k: round(v, 4) for k, v in phases.items()}}, f, indent=2)


class FitTimer(keras.callbacks.Callback):
    """Splits `fit` into training executions (the first, which traces and compiles, apart), validation and samples.

    Put it first in the callback list. `samples` is filled in by `TextSamples`.
    """

    def __init__(self):
        super().__init__()
        self.executions = []
        self.validation = 0.0
        self.samples = 0.0
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.executions.append(time.perf_counter() - self._start)

    def on_test_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation += time.perf_counter() - self._start

    def split(self):
        first = self.executions[0] if self.executions else 0.0
        return {"fit_first_execution_with_compile": first, "fit_steps": sum(self.executions[1:]),
                "fit_validation": self.validation, "fit_samples": self.samples}
