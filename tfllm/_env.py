"""Process set-up that must happen before TensorFlow is imported.

Kept apart from everything else (and free of imports beyond the standard
library) because it only works when it runs first: `import tfllm` and
`tfllm.cli.main` call `quiet_gpu_probe()` before anything imports TensorFlow.
`import tfllm` also installs `quiet_new_model_retracing()`'s log filter, and the `tfllm`
command `skip_keras_extras()`'s import hook.
"""

import glob
import importlib.abc
import logging
import os
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


class _NewModelRetracing(logging.Filter):
    """Drops TensorFlow's "5 out of the last 15 calls to <function TensorFlowTrainer...> triggered
    tf.function retracing" warning when tfllm's code made the call: Keras's own train/test/predict
    functions, traced once per new model.

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
        if "triggered tf.function retracing" not in message or "TensorFlowTrainer." not in message:
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
