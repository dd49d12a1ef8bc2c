"""Process set-up that must happen before TensorFlow is imported.

Kept apart from everything else (and free of imports beyond the standard
library) because it only works when it runs first: `import tfllm` and
`tfllm.cli.main` call `quiet_gpu_probe()` before anything imports TensorFlow.
`import tfllm` also installs `quiet_new_model_retracing()`'s log filter, and the `tfllm`
command `skip_keras_extras()`'s and `filter_tensorflow_import_log()`'s import hooks.
"""

import codecs
import contextlib
import glob
import importlib.abc
import importlib.machinery
import logging
import os
import re
import subprocess
import sys

# The device factories TensorFlow registers on a machine without accelerators.
# XLA_CPU stays so that nothing a CPU user has today goes away.
CPU_DEVICE_TYPES = "CPU,XLA_CPU"

# Device nodes and driver files of accelerators that register their own
# TensorFlow device factory: NVIDIA (CUDA), AMD (ROCm), Cloud TPU VMs, and
# WSL2's GPU paravirtualization (CUDA through /dev/dxg and WSL's own libcuda;
# no /dev/nvidia* there).
_ACCELERATOR_PATHS = ("/proc/driver/nvidia", "/dev/nvidia*", "/dev/kfd", "/dev/accel*", "/dev/vfio/*",
                      "/dev/dxg", "/usr/lib/wsl/lib/libcuda.so*")
# Remote or Colab TPUs have no local device node but announce themselves here.
_ACCELERATOR_ENV = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


def accelerator_present():
    """True if this machine shows any sign of a GPU or TPU that TensorFlow could use."""
    if any(os.environ.get(name) for name in _ACCELERATOR_ENV):
        return True
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_PATHS)


def tensorflow_backend(environ=None):
    """Runs Keras on TensorFlow in the `tfllm` command's process: tfllm's models, exports and servers are
    TensorFlow's, and `KERAS_BACKEND=jax` (or `"backend": "jax"` in ~/.keras/keras.json) made every command
    that loads Keras a traceback (`No module named 'jax'`, or a model that cannot be built). Set before Keras
    is imported, which reads the variable first; a notebook's own process is left as its user set it."""
    environ = os.environ if environ is None else environ
    environ["KERAS_BACKEND"] = "tensorflow"


def quiet_gpu_probe(environ=None):
    """On a machine with no GPU or TPU, keeps TensorFlow from probing for CUDA.

    The `tensorflow` wheel has CUDA support built in, so on a CPU-only machine
    its first operation calls `cuInit`, which fails and logs
    `E ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)`
    (tensorflow/tensorflow#37689, closed without a change; TensorFlow's answer
    was the `tensorflow-cpu` wheel). It is an ERROR line, so
    `TF_CPP_MIN_LOG_LEVEL=2` keeps it and `3` would hide every real error too;
    `CUDA_VISIBLE_DEVICES` does not stop the `cuInit` call either.

    TensorFlow's own `TF_ENABLED_DEVICE_TYPES` (read by `DeviceFactory::Register`
    in tensorflow/core/framework/device_factory.cc) registers only the device
    factories it lists; with `CPU,XLA_CPU` the GPU factory, and so the CUDA
    probe, never starts. TensorFlow logs one INFO line per factory it skips
    ("Device factory 'GPU' disabled by TF_ENABLED_DEVICE_TYPES environment
    variable."), shown with `TF_CPP_MIN_LOG_LEVEL=0`, for anyone who looks for
    a GPU.

    It is set only when nothing suggests an accelerator (`accelerator_present`)
    and only on Linux (macOS's Metal plug-in registers a 'GPU' factory with no
    device node to look for), and never over a value the user set: setting
    `TF_ENABLED_DEVICE_TYPES=` (empty) turns this off and enables every
    factory. Returns True if it set the variable.
    """
    environ = os.environ if environ is None else environ
    if "TF_ENABLED_DEVICE_TYPES" in environ or not sys.platform.startswith("linux"):
        return False
    if "tensorflow" in sys.modules or accelerator_present():
        # Too late to matter, or a device whose errors the user must see.
        return False
    environ["TF_ENABLED_DEVICE_TYPES"] = CPU_DEVICE_TYPES
    return True


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


# The functions TensorFlow's retracing warning names that are made anew for each model by design: Keras's
# train/test/predict functions, and tfllm's own per-model ones (an Explainer's, a Generator's, a Translator's
# compiled functions: the 5th run explained in one process warned of `Explainer._ig_fn.<locals>.fn`; a
# classifier's eager `auc` update, `SparseOneVsRestAUC._one_hot_update`).
_PER_MODEL_FUNCTIONS = ("<function TensorFlowTrainer.", "<function Explainer._", "<function decode_function.<locals>.",
                        "<function Generator._function.<locals>.", "<function Translator._function.<locals>.",
                        "<function Translator.score.<locals>.", "<bound method SparseOneVsRestAUC._one_hot_update ")


class _NewModelRetracing(logging.Filter):
    """Drops TensorFlow's "5 out of the last 15 calls to <function TensorFlowTrainer...> triggered
    tf.function retracing" warning when tfllm's code made the call: Keras's own train/test/predict
    functions, and tfllm's own ones (`_PER_MODEL_FUNCTIONS`), traced once per new model.

    TensorFlow counts traces by the Python function's code object, so every new model's first `fit` or
    `predict` counts against the same Keras function: the third model tfllm trained in one process (an
    ensemble's members, a search's trials, a self-training student, a notebook's third run) printed that
    warning, twice, telling the user to stop "creating @tf.function repeatedly in a loop", which a new
    model does by design, once (tensorflow/tensorflow#42441; suppression tracked in #43555). Called from
    the user's own code (no tfllm frame on the stack), or about any other function, the warning is kept:
    there it may be a real retracing loop.
    """

    def filter(self, record):
        message = record.getMessage()
        if "triggered tf.function retracing" not in message or not any(f in message for f in _PER_MODEL_FUNCTIONS):
            return True
        frame = sys._getframe(1)  # logging's, TensorFlow's and Keras's frames, then whoever called fit/predict
        while frame is not None:
            if frame.f_code.co_filename.startswith(_PACKAGE):
                return False
            frame = frame.f_back
        return True


def quiet_new_model_retracing():
    """Installs `_NewModelRetracing` on TensorFlow's logger (once; TensorFlow need not be imported yet)."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NewModelRetracing) for f in logger.filters):
        logger.addFilter(_NewModelRetracing())


# Keras modules that import an optional package at their top when it is installed (each in a
# `try: ... except ImportError:` that Keras keeps for machines without it), for a feature no tfllm
# command uses: scikit-learn (with SciPy's stats) for `keras.wrappers`' scikit-learn estimators,
# matplotlib for `keras.visualization`'s image galleries, IPython for `KerasFileEditor`'s notebook
# display and for kagglehub's Colab check (KerasHub imports kagglehub; in a command's own process
# `get_ipython()` is None, so the check answers False either way).
_KERAS_EXTRAS = {
    "keras.src.wrappers.fixes": "sklearn",
    "keras.src.wrappers.utils": "sklearn",
    "keras.src.wrappers.sklearn_wrapper": "sklearn",
    "keras.src.visualization.plot_image_gallery": "matplotlib",
    "keras.src.visualization.plot_bounding_box_gallery": "matplotlib",
    "keras.src.saving.file_editor": "IPython",
    "kagglehub.env": "IPython",
}


class _SkipKerasExtras(importlib.abc.MetaPathFinder):
    """Makes the imports `_KERAS_EXTRAS` lists fail, as on a machine without those packages, when one of
    those Keras modules makes them while it is first imported; any other import of the same packages
    (tfllm's reports import matplotlib, `tfllm tune`'s Bayesian search scikit-learn) finds them as usual.

    `import keras` imports all three when they are installed (`tfllm[dev]` installs them, and
    scikit-learn comes with `keras-tuner[bayesian]`): 1.1-1.7 s of the 4-5 s that every `tfllm` command
    waits for TensorFlow, Keras and KerasHub on a 2-core machine (measured alternating, 2026-12-03).
    Keras imports its optional packages eagerly by design (`keras/src/wrappers/fixes.py`,
    `keras/src/visualization/plot_image_gallery.py`, `keras/src/saving/file_editor.py` in Keras 3.15;
    TensorFlow made the same change for its own scikit-learn import in tensorflow/tensorflow#2178).
    Installed only by the `tfllm` command (`tfllm.cli.main` called with no argv) and by `python -m
    tfllm.serving.server`, never by `import tfllm`: a notebook or script may use those Keras features.
    """

    def find_spec(self, name, path=None, target=None):
        if "." in name or name not in _KERAS_EXTRAS.values():
            return None  # a submodule is only imported once its package has been, which this refused
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # the import system's own frames, up to the module that imports
        importer = frame.f_globals.get("__name__") if frame is not None else None
        if _KERAS_EXTRAS.get(importer) == name and frame.f_code.co_name == "<module>":
            raise ModuleNotFoundError(f"{name} is not imported for Keras in the tfllm command", name=name)
        return None


def skip_keras_extras():
    """Installs `_SkipKerasExtras` (once) before anything imports Keras. Returns True if it did."""
    if "keras" in sys.modules or any(isinstance(f, _SkipKerasExtras) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _SkipKerasExtras())
    return True


# A line of TensorFlow's C++ log (absl's format: severity letter, then MMDD) and the notice absl prints
# before its first line when nothing called absl::InitializeLog().
_NATIVE_RECORD = re.compile(r"^([IWEF])\d{4} ")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = "IWEF"  # TF_CPP_MIN_LOG_LEVEL's order: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL


def utf8_standard_streams():
    """Makes the process's standard streams safe for any text where the locale's encoding is not UTF-8
    (`LC_ALL=POSIX`: ASCII): stdout and stderr write what they cannot encode as backslash escapes (`\\u597d`)
    instead of failing with UnicodeEncodeError on a label such as 好 after a run was trained and saved, and
    stdin (`--file -`) is read as UTF-8, as tfllm reads every file. Where the encoding is UTF-8, nothing
    changes. For the `tfllm` command's and the server's own processes only: a notebook's streams are its own."""
    for stream in (sys.stdout, sys.stderr):
        if _encoding(stream) not in (None, "utf-8"):
            stream.reconfigure(errors="backslashreplace")
    if _encoding(sys.stdin) not in (None, "utf-8"):
        sys.stdin.reconfigure(encoding="utf-8", errors="strict")


def _encoding(stream):
    """A text stream's encoding, normalized ("UTF8" is "utf-8"), or None for one that cannot be
    reconfigured (closed, missing, or not an io.TextIOWrapper)."""
    if not hasattr(stream, "reconfigure") or getattr(stream, "closed", True) or not getattr(stream, "encoding", None):
        return None
    try:
        return codecs.lookup(stream.encoding).name
    except LookupError:
        return stream.encoding


def _kept_lines(lines, min_level):
    """The lines (of what the process wrote to its stderr) that are not TensorFlow C++ log records below
    `min_level`. A record's indented continuation lines go with it; every other line (Python warnings, a
    traceback, anything not in absl's format) is kept. absl's notice counts as a WARNING record."""
    keep_record = True
    for line in lines:
        record = _NATIVE_RECORD.match(line)
        if record:
            keep_record = _SEVERITY.index(record.group(1)) >= min_level
        elif line.rstrip("\r\n") == _ABSL_NOTICE:
            keep_record = min_level < 2
        elif not line.startswith((" ", "\t")):
            keep_record = True  # not a continuation of the record above
        if keep_record:
            yield line


def kept_log_lines(text, min_level):
    """`_kept_lines` of a whole text."""
    return "".join(_kept_lines(text.splitlines(keepends=True), min_level))


def min_log_level(environ=None):
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (0 when unset or not a number)."""
    value = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "0")
    return int(value) if value.strip().isdigit() else 0


def _filter_stdin(min_level):
    """The filter's own process (this file run as a script): stdin to stdout through `_kept_lines`, a line
    at a time, until every writer has closed the pipe."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle; this ends at EOF
    lines = (line.decode("utf-8", "replace") for line in sys.stdin.buffer)
    for line in _kept_lines(lines, min_level):
        sys.stdout.buffer.write(line.encode("utf-8"))
        sys.stdout.buffer.flush()


@contextlib.contextmanager
def _native_log_filtered():
    """Sends what the process writes to file descriptor 2 meanwhile through `_filter_stdin`.

    The filter is a process of its own so that nothing is lost if this one dies on the way: TensorFlow
    logs a FATAL record (a CPU the wheel was not built for, say) and aborts; the filter still reads the
    pipe to its end. It starts in 20-30 ms, beside TensorFlow's 4-5 s import.
    """
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    try:
        # -I: no PYTHON* variables, no user site and not this file's folder (tfllm/) on the path.
        filter_process = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), str(min_log_level())],
                                          stdin=read_end, stdout=saved, stderr=saved)
    except OSError:  # no process to spare: the lines go through unfiltered
        os.close(read_end), os.close(write_end), os.close(saved)
        yield
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer gone, the filter writes what is left and ends
        os.close(saved)
        filter_process.wait()


class _FilteredTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` inside `_native_log_filtered`.

    TensorFlow 2.21 logs through absl before anything calls `absl::InitializeLog()`, and absl writes those
    records to stderr whatever their severity, so `TF_CPP_MIN_LOG_LEVEL` (which the `tfllm` command sets
    to 2) no longer hides the INFO lines every import prints, twice: "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine, GPU will not be used" and absl's notice
    (tensorflow/tensorflow#100442, open; the absl side is abseil/abseil-cpp#1957, open). This applies the
    setting TensorFlow documents to those lines itself: a record at or above the level (every ERROR at the
    command's default) and every line that is not TensorFlow's C++ log are written as they came.
    """

    def __init__(self):
        self.used = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.used:
            return None
        self.used = True
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            with _native_log_filtered():
                run_module(module)

        spec.loader.exec_module = exec_module
        return spec


def filter_tensorflow_import_log():
    """Installs `_FilteredTensorFlowImport` (once) before anything imports TensorFlow. Returns True if it did.

    Only for the `tfllm` command's and the server's own processes: it redirects file descriptor 2 while
    TensorFlow loads, which a notebook's or a script's process may have its own use for.
    """
    if "tensorflow" in sys.modules or any(isinstance(f, _FilteredTensorFlowImport) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _FilteredTensorFlowImport())
    return True


if __name__ == "__main__":  # _native_log_filtered's filter process
    _filter_stdin(int(sys.argv[1]))
