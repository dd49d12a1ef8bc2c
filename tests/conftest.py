"""Shared fixtures: tiny seeded configs, a trained tiny classifier, CLI runner."""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The processes the tests start buffer their output as a user's do. This build machine sets PYTHONUNBUFFERED,
# which wrote every print at once, so tests of output that must be flushed (a pipe answered as it flows, the
# line a signal's exit prints, the command's quick exit) passed with the flush removed.
os.environ.pop("PYTHONUNBUFFERED", None)

# The test files that take longest (minutes of CPU each: notebooks, translation, strategies,
# self-training, TFLite), run first. `make test` hands whole files to its workers in collection
# order (`--dist loadfile --no-loadscope-reorder`; by default xdist orders files by their number
# of tests); a long file handed out last keeps one worker busy while the other waits. Longest
# first lets the short files fill in at the end. Only the order changes.
# Stop 75's measure (test seconds, quiet 2-worker run before that stop's cuts): seq2seq 261, classifier_cli 253,
# from_preset 201, causal_lm 176, distribute 173, tflite 169, notebooks 134, self_training 122, tuning 117,
# explain 112, ensemble 96, models 96; every other file under 90.
LONGEST_FIRST = ("test_seq2seq.py", "test_classifier_cli.py", "test_from_preset.py", "test_causal_lm.py",
                 "test_distribute.py", "test_tflite.py", "test_notebooks.py", "test_self_training.py", "test_tuning.py",
                 "test_explain.py", "test_ensemble.py", "test_models.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order kept


# `make test-fast` is meant to take about a minute; it crept from 72 s to 129 s as tests of 3-16 s
# (or their fixtures) arrived unmarked. Any run lists such tests at its end, so they get marked. A
# fixture may take longer than a test (the session's tiny classifier, a served model: 6-8 s) when
# many quick tests share it.
UNMARKED_SLOW_SECONDS = {"call": 3.0, "setup": 10.0}
_unmarked_slow = []


def pytest_runtest_logreport(report):
    limit = UNMARKED_SLOW_SECONDS.get(report.when)
    if limit and report.duration > limit and "slow" not in report.keywords:
        _unmarked_slow.append((report.duration, report.when, report.nodeid))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section("not marked slow: tests over 3 s, fixtures (setup) over 10 s")
        for duration, when, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{duration:6.2f}s {when:<5} {nodeid}")


def run_cli(*args, timeout=300, cwd=None):
    """Runs `tfllm ARGS` in a fresh process, as a user would."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "tfllm.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


@contextlib.contextmanager
def serving_process(args, ready, log_path, cwd=None, env=None, timeout=90, module="tfllm.serving.server"):
    """Runs `python -m tfllm.serving.server ARGS` (or `module`'s: tfllm.cli, with "serve" in ARGS) for the
    `with` block and yields its Popen: the
    one way the serving tests start a real server. Waits until `ready()` returns truthy (a
    ServingError or OSError from it means not yet), raising RuntimeError with the log if the
    server exits or `timeout` seconds pass; always stops it (terminate, kill after 10 s).
    `env` overrides the environment; a None value removes that variable."""
    from tfllm.serving import ServingError

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if ready():
                        break
                except (ServingError, OSError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + Path(log_path).read_text())
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main_in_process(capsys, *args):
    """Runs `tfllm ARGS` through `tfllm.cli.main` in this process: the console script's code
    path without the seconds a new process spends starting TensorFlow. Returns what
    `run_cli` returns (returncode, stdout, stderr)."""
    from tfllm.cli import main

    capsys.readouterr()  # drop what the test printed before
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def timed_fits(monkeypatch, model_class):
    """The seconds of every `model_class.fit` call from now on, in order (the resume tests compare them
    with what metrics.json reports)."""
    fits, fit = [], model_class.fit

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            fits.append(time.perf_counter() - start)

    monkeypatch.setattr(model_class, "fit", timed)
    return fits


def assert_keras_roundtrip(model, inputs, path):
    """Saves `model` as .keras, reloads it and checks outputs are identical."""
    import keras

    expected = keras.ops.convert_to_numpy(model(inputs))
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is type(model)
    # Through JSON, as the .keras file stores it (tuples come back as lists).
    assert json.loads(json.dumps(reloaded.get_config())) == json.loads(json.dumps(model.get_config()))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(inputs)), expected)
    return reloaded


@pytest.fixture(scope="session")
def tiny_classifier_run(tmp_path_factory):
    """A tiny binary classifier trained for one epoch on 400 bundled reviews (~10 s)."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=400, run_dir=run_dir), verbose=0)
    return run_dir
