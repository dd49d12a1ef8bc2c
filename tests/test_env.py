"""TensorFlow's CUDA probe stays out of a CPU-only machine's logs (tfllm/_env.py)."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tfllm._env import CPU_DEVICE_TYPES, accelerator_present, kept_log_lines, min_log_level, quiet_gpu_probe

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
    # Nor the INFO lines TensorFlow 2.21 prints as it loads whatever TF_CPP_MIN_LOG_LEVEL says (the test below
    # shows they are there to hide): the error is the first thing the user reads.
    assert result.stderr.startswith("tfllm: error:"), result.stderr


@pytest.mark.slow
def test_the_command_runs_keras_on_tensorflow_whatever_keras_backend_says(tiny_classifier_run):
    """KERAS_BACKEND=jax (or keras.json's "backend") made every command that loads Keras a traceback (No module
    named 'jax'); tfllm is TensorFlow's, so its command runs Keras on TensorFlow."""
    result = subprocess.run([sys.executable, "-m", "tfllm", "evaluate", tiny_classifier_run], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, KERAS_BACKEND="jax"))
    assert result.returncode == 0 and '"accuracy"' in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@needs_cpu_only_linux
def test_opting_out_brings_the_probe_back(tmp_path):
    """`TF_ENABLED_DEVICE_TYPES=` (empty) enables every factory, so the same command probes again.

    This also shows the command above does reach TensorFlow's device set-up, so
    the check there means something.
    """
    result = run_console_script(tmp_path, TF_ENABLED_DEVICE_TYPES="", TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 2, result.stderr
    assert "cuInit" in result.stderr
    # TF_CPP_MIN_LOG_LEVEL=0 asks for every line, and the command's filter of TensorFlow's import keeps them.
    assert "absl::InitializeLog()" in result.stderr and "I0000" in result.stderr, result.stderr


IMPORT_LOG = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796524350.684640    6409 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796524350.762885    6409 cpu_feature_guard.cc:227] This TensorFlow binary is optimized
  to use available CPU instructions.
/site-packages/keras/module.py:12: UserWarning: a Python warning
W0000 00:00:1796524350.762885    6409 some.cc:1] a warning
E0000 00:00:1796524350.762885    6409 cuda_platform.cc:52] failed call to cuInit
    its detail
Traceback (most recent call last):
"""


def test_the_import_filter_applies_tf_cpp_min_log_level_to_tensorflow_s_lines_only():
    lines = [line for line in IMPORT_LOG.splitlines(keepends=True)]
    assert kept_log_lines(IMPORT_LOG, 0) == IMPORT_LOG
    assert kept_log_lines(IMPORT_LOG, 1) == "".join([lines[0]] + lines[4:])
    assert kept_log_lines(IMPORT_LOG, 2) == "".join([lines[4]] + lines[6:])
    assert kept_log_lines(IMPORT_LOG, 3) == "".join([lines[4], lines[8]])
    assert [min_log_level(e) for e in ({}, {"TF_CPP_MIN_LOG_LEVEL": "2"}, {"TF_CPP_MIN_LOG_LEVEL": "x"})] == [0, 2, 0]


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


def _retracing_warnings(calls, monkeypatch):
    """TensorFlow's retracing warnings that `calls()` logs, after the filters on its logger."""
    import logging

    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    # PRIVATE API, tests only: TensorFlow warns at most twice per function per process, so each part
    # starts from a fresh counter, or an earlier test in this process could have used the warnings up.
    monkeypatch.setattr(polymorphic_function, "_frequent_tracing_detector_manager",
                        polymorphic_function._FrequentTracingDetectorManager())
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        calls()
    finally:
        logger.removeHandler(handler)
    return [r for r in records if "triggered tf.function retracing" in r]


@pytest.mark.slow
def test_explaining_many_models_does_not_warn_of_retracing(tiny_classifier_run, monkeypatch):
    """Explaining the 5th run in one process printed TensorFlow's "5 out of the last 5 calls to <function
    Explainer._ig_fn.<locals>.fn> triggered tf.function retracing": each model's Explainer has its own
    functions by design. A retracing loop of the user's own is still warned of."""
    import tensorflow as tf

    from tfllm.explanations import Explainer, load_explainer

    model = load_explainer(tiny_classifier_run).model
    # An Explainer's first calls run eagerly (tfllm.explanations.EAGER_CALLS): traced from the first here, as in a
    # process that explains more texts than that.
    monkeypatch.setattr("tfllm.explanations.EAGER_CALLS", 0)

    # TensorFlow warns at the 5th of its last calls that traced (FREQUENT_TRACING_WARNING_THRESHOLD = 5), so five
    # new Explainers are the fewest that would warn without tfllm's filter.
    # Integrated gradients (the default, whose `_ig_fn` warned) at steps=1: each Explainer traces the same
    # functions whatever the number of steps, and one interval computes a fifth less than the default.
    def explain_new_models():  # a new Explainer a run, as tfllm.explain does for each new run
        for _ in range(5):
            Explainer(model).explain("a good film", method="integrated_gradients", steps=1)

    def own_loop():
        for _ in range(5):
            tf.function(lambda x: x + 1)(tf.constant(1.0))

    assert _retracing_warnings(explain_new_models, monkeypatch) == []
    assert _retracing_warnings(own_loop, monkeypatch)


@pytest.mark.slow
def test_models_tfllm_makes_do_not_warn_of_retracing_but_the_users_own_still_do(monkeypatch):
    """The third model tfllm trained in a process (an ensemble member, a trial) printed TensorFlow's retracing
    warning about Keras's predict and train functions; the same warning from the user's own Keras code is kept.

    tfllm's side is `evaluate_loss` (Keras's compiled test step) on a new model each call, as each run's validation
    does. (Until stop 75 it was the wide path's fit, which no longer calls a compiled Keras function: the test
    passed with the filter off. This one fails without it.)"""
    import keras
    import numpy as np
    from lm_utils import tiny_lm

    from tfllm.training.causal_lm import evaluate_loss

    def retracing_warnings(calls):
        return _retracing_warnings(calls, monkeypatch)

    # Five calls: TensorFlow warns at the 5th of its last calls that traced (FREQUENT_TRACING_WARNING_THRESHOLD).
    def tfllm_models():  # each call scores with a new Keras model's compiled test step, inside tfllm's code
        for seed in range(5):
            model = tiny_lm(vocabulary_size=30, sequence_length=8, seed=seed)
            model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            evaluate_loss(model, np.arange(200) % 30, sequence_length=8, batch_size=8)

    def own_models():
        x = np.zeros((4, 3), "float32")
        for _ in range(5):
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
            model.predict(x, verbose=0)

    assert retracing_warnings(tfllm_models) == []
    kept = retracing_warnings(own_models)
    assert kept and all("TensorFlowTrainer" in r for r in kept), kept


@pytest.mark.slow
def test_validating_new_models_eagerly_does_not_warn_of_retracing(monkeypatch):
    """Self-training's third teacher member printed TensorFlow's "5 out of the last 5 calls to <function
    pfor.<locals>.f> triggered tf.function retracing", twice per function: a small validation runs Keras's test
    step eagerly (`common.eager_evaluation`), whose update of tfllm's `auc` metric (`SparseOneVsRestAUC`, three or
    more classes) called `tf.vectorized_map` eagerly, and TensorFlow's `pfor` then traces a new tf.function at each
    call. Each model's metric now traces its update once."""
    import numpy as np

    from tfllm.training.classifier import SparseOneVsRestAUC

    labels, probabilities = np.array([0, 1, 2, 1]), np.full((4, 3), 1 / 3, "float32")

    # Five new models' metrics, as many as TensorFlow needs to warn (FREQUENT_TRACING_WARNING_THRESHOLD), each
    # updated by two validation batches (a smaller last one), as an ensemble's members are.
    def validate_new_models():
        for _ in range(5):
            metric = SparseOneVsRestAUC(3, num_thresholds=50)
            metric.update_state(labels, probabilities)
            metric.update_state(labels[:3], probabilities[:3])

    assert _retracing_warnings(validate_new_models, monkeypatch) == []


EXTRAS_IN = "sorted(m for m in ('keras', 'sklearn', 'matplotlib', 'IPython') if m in sys.modules)"


@pytest.fixture(scope="module")
def command_exit(tmp_path_factory):
    """One fresh process that runs the `tfllm` command (main with no argv: `tfllm train` of a missing file) for two
    tests: which of Keras's extras it imported (printed at exit: the command ends the process itself), and whether its
    quick exit (os._exit, cli._exit_without_teardown) still does what Python's exit does: a thread that is not a
    daemon finishes (it creates `thread-done` after a second), atexit functions run, buffered output is written (the
    last atexit function writes 'atexit ran' with no newline and no flush), an idle thread pool's workers are woken,
    and the status is the command's. Returns (the process's CompletedProcess, the thread's file)."""
    tmp_path = tmp_path_factory.mktemp("command_exit")
    done = tmp_path / "thread-done"
    code = (
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: sys.stdout.write('atexit ran'))  # buffered: no newline, no flush; runs last\n"
        f"atexit.register(lambda: print({EXTRAS_IN}))  # the command ends the process itself\n"
        f"threading.Thread(target=lambda: (time.sleep(1), open({str(done)!r}, 'w').close())).start()\n"
        # An idle pool's workers wait for work forever: Python's exit wakes them, and so must the command's.
        "import concurrent.futures; pool = concurrent.futures.ThreadPoolExecutor(2); pool.submit(print, end='')\n"
        f"sys.argv = ['tfllm', 'train', '--task', 'generate', '--data', {str(tmp_path / 'missing.txt')!r}]\n"
        "from tfllm.cli import main\n"
        "status = main()\n"
        "print('not reached', status)\n"
    )
    # Python buffers a pipe's output unless PYTHONUNBUFFERED is set (this build machine sets it), and the
    # unflushed line is the check that the quick exit flushes: without it the test passed with the flush removed.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env), done


@pytest.mark.slow
def test_the_command_imports_keras_without_the_packages_only_keras_own_extras_need(command_exit):
    """`tfllm ...` (main with no argv) imports Keras without scikit-learn, matplotlib and IPython, which
    Keras and kagglehub import when installed; `import tfllm` in a notebook leaves Keras as it is."""
    out, _ = command_exit
    assert out.stdout == "['keras']\natexit ran", out.stderr  # the extras line (the other is the test below's)
    assert out.returncode == 2 and "does not exist" in out.stderr

    # What Keras was refused still imports for everything else (tfllm's reports, `tfllm tune`'s search).
    code = ("import sys; from tfllm._env import skip_keras_extras; skip_keras_extras(); import keras_hub; "
            f"print({EXTRAS_IN}); import matplotlib.figure, sklearn.gaussian_process, IPython; print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["['keras']", "imported"], out.stderr
    # `import tfllm` and `main([...])` (a notebook's, as this process's) leave Keras's imports as they are.
    import tfllm._env
    from tfllm.cli import main

    main(["presets", "classify"])
    assert not any(isinstance(finder, tfllm._env._SkipKerasExtras) for finder in sys.meta_path)


@pytest.mark.slow
def test_the_servers_own_process_imports_keras_without_its_extras_too(tmp_path):
    """`python -m tfllm.serving.server` (TensorFlow imports Keras as it loads) skips them as the command does.
    Started with --port 0, it says which port the system gave it."""
    import signal
    import time

    code = (
        "import atexit, runpy, signal, sys\n"
        f"atexit.register(lambda: print({EXTRAS_IN}, flush=True))\n"
        # A pytest-xdist worker ignores SIGINT, and so do the processes it starts: Ctrl-C's, as in a terminal.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"sys.argv = ['server', {str(tmp_path)!r}, '--port', '0', '--grpc-port', '0']\n"  # ports the system picks
        "runpy.run_module('tfllm.serving.server', run_name='__main__')\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    for line in server.stdout:  # "Serving none yet from ..." once it is up, TensorFlow loaded
        lines.append(line)
        if line.startswith("Serving") or time.monotonic() > deadline:
            break
    # With --port 0 the line names the port the system chose (it said "http://127.0.0.1:0/"): one that answers.
    port = re.search(r"REST http://127\.0\.0\.1:(\d+)/", lines[-1])
    answered = False
    while port and not answered and time.monotonic() < deadline + 30:  # it listens once uvicorn has started
        try:
            socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=10).close()
            answered = True
        except ConnectionRefusedError:
            time.sleep(0.1)
    server.send_signal(signal.SIGINT)  # Ctrl-C: the server returns and the atexit line is printed
    rest, _ = server.communicate(timeout=60)
    assert lines[-1].startswith("Serving"), "".join(lines)
    assert port and int(port.group(1)) > 0 and answered, lines[-1]
    assert "['keras']" in rest.splitlines(), "".join(lines) + rest


@pytest.mark.slow
def test_the_command_s_quick_exit_still_does_what_python_s_exit_does(command_exit):
    """With TensorFlow loaded, the `tfllm` command ends with os._exit (cli._exit_without_teardown): the
    interpreter's teardown took a second. What the exit did for the command must still happen: threads that are
    not daemons finish, atexit functions run, buffered output is written, and the status is the command's.
    The process is `command_exit`'s, shared with the test above."""
    out, done = command_exit
    assert out.returncode == 2, out.stderr
    assert "does not exist" in out.stderr
    assert out.stdout == "['keras']\natexit ran" and done.exists()  # both atexit lines, the unflushed one too


@pytest.mark.parametrize("ending, status", [("os.abort()", -6), ("raise ImportError('no kernel')", 1)])
def test_the_import_filter_loses_nothing_when_tensorflow_fails_to_load(tmp_path, ending, status):
    """What TensorFlow writes before it aborts (a FATAL record about the CPU, say) or fails still reaches the
    terminal: the filter is a process of its own (tfllm/_env.py, _native_log_filtered)."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "os.write(2, b'F0000 00:00:1.0 1 cpu_feature_guard.cc:1] built for AVX, not available here\\n')\n"
        f"{ending}\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
            "from tfllm._env import filter_tensorflow_import_log; filter_tensorflow_import_log()\n"
            "import tensorflow\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == status, out.stderr
    assert "built for AVX, not available here" in out.stderr and "oneDNN" not in out.stderr, out.stderr
    if status == 1:
        assert out.stderr.index("built for AVX") < out.stderr.index("ImportError: no kernel"), out.stderr
