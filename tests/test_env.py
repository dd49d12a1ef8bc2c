"""TensorFlow's CUDA probe stays out of a CPU-only machine's logs (tfllm/_env.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfllm._env import CPU_DEVICE_TYPES, accelerator_present, quiet_gpu_probe

CONSOLE_SCRIPT = Path(sys.executable).with_name("tfllm")
needs_cpu_only_linux = pytest.mark.skipif(
    accelerator_present() or not sys.platform.startswith("linux"),
    reason="the probe is only kept quiet on Linux machines without a GPU or TPU",
)


def run_console_script(tmp_path, **env):
    """A cheap command that imports TensorFlow and runs its first op before failing on the input."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLED_DEVICE_TYPES", "TF_CPP_MIN_LOG_LEVEL")}
    environ.update(env)
    missing = tmp_path / "missing.txt"
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "train", "--task", "generate", "--data", str(missing), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, env=environ,
    )


@pytest.mark.parametrize("device_files, expected", [
    (["/dev/null", "/dev/tty0"], False),
    (["/dev/null", "/dev/nvidia0", "/dev/nvidiactl"], True),
    (["/dev/null", "/dev/dxg"], True),  # WSL2: CUDA without /dev/nvidia* (was taken for a CPU-only machine)
])
def test_accelerators_are_recognised_by_their_device_files(monkeypatch, device_files, expected):
    import fnmatch

    import tfllm._env as env

    for name in env._ACCELERATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    # A machine's /dev cannot be made here; glob answers as that machine's filesystem would.
    monkeypatch.setattr(env.glob, "glob", lambda pattern: fnmatch.filter(device_files, pattern))
    assert env.accelerator_present() is expected


def test_user_setting_wins():
    assert quiet_gpu_probe({"TF_ENABLED_DEVICE_TYPES": ""}) is False
    assert quiet_gpu_probe({"TF_ENABLED_DEVICE_TYPES": "GPU"}) is False


@pytest.mark.slow
@needs_cpu_only_linux
def test_console_script_prints_no_cuda_probe_errors(tmp_path):
    result = run_console_script(tmp_path)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr
    # The same command probes for CUDA without the setting (the test below).
    assert "cuInit" not in result.stderr, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("E0000")], result.stderr


@pytest.mark.slow
@needs_cpu_only_linux
def test_opting_out_brings_the_probe_back(tmp_path):
    """`TF_ENABLED_DEVICE_TYPES=` (empty) enables every factory, so the same command probes again.

    This also shows the command above does reach TensorFlow's device set-up, so
    the check there means something.
    """
    result = run_console_script(tmp_path, TF_ENABLED_DEVICE_TYPES="")
    assert result.returncode == 2, result.stderr
    assert "cuInit" in result.stderr


@needs_cpu_only_linux
def test_importing_tfllm_first_keeps_the_probe_quiet():
    """Notebooks and scripts that import tfllm before TensorFlow get the setting too."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLED_DEVICE_TYPES"}
    code = "import os, sys, tfllm; print(os.environ.get('TF_ENABLED_DEVICE_TYPES'), 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environ)
    assert out.stdout.split() == [CPU_DEVICE_TYPES, "False"], out.stderr


def test_sets_cpu_factories_only_without_accelerators(monkeypatch):
    environ = {}
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert quiet_gpu_probe(environ) is False  # TensorFlow already imported: too late, left alone
    monkeypatch.delitem(sys.modules, "tensorflow")
    monkeypatch.setattr("tfllm._env.accelerator_present", lambda: True)
    assert quiet_gpu_probe(environ) is False and environ == {}
    monkeypatch.setattr("tfllm._env.accelerator_present", lambda: False)
    assert quiet_gpu_probe(environ) is True
    assert environ == {"TF_ENABLED_DEVICE_TYPES": CPU_DEVICE_TYPES}
    monkeypatch.setattr(sys, "platform", "darwin")
    assert quiet_gpu_probe({}) is False


def test_new_models_do_not_warn_of_retracing_but_a_retracing_loop_still_does():
    """The third model trained in a process (an ensemble member, a trial) printed TensorFlow's retracing
    warning about Keras's train and predict functions; a user's own function retraced in a loop still warns."""
    import logging

    import keras
    import numpy as np
    import tensorflow as tf

    import tfllm  # noqa: F401  (installs the filter)

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        x, y = np.zeros((4, 3), "float32"), np.zeros((4, 1), "float32")
        for _ in range(7):  # TensorFlow warns from the 5th trace of one function within 15 calls
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
            model.compile("sgd", "mse")
            model.fit(x, y, verbose=0)
            model.predict(x, verbose=0)

        @tf.function
        def mine(value):
            return value + 1

        for size in range(1, 8):  # a new shape each call: a real retracing loop
            mine(tf.zeros((size,)))
    finally:
        logger.removeHandler(handler)
    retracing = [r for r in records if "triggered tf.function retracing" in r]
    assert retracing and all("mine" in r and "TensorFlowTrainer" not in r for r in retracing), retracing
