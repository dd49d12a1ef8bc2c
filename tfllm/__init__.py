"""tfllm: build, train, export and serve small Transformer language models with Keras 3.

    from tfllm import Transformer          # the article's layer
    from tfllm import TextClassifier, train_classifier, TrainConfig

Names are imported lazily, so `tfllm --help` does not wait for TensorFlow.
tfllm's Keras classes are registered as soon as Keras or KerasHub is imported
(now, if one already is), so after `import tfllm`, `keras_hub.models.TextClassifier.from_preset(run_dir)`
and its siblings load tfllm runs, and `keras.models.load_model` a model with a `Transformer`.
"""

import importlib
import importlib.abc
import importlib.util
import sys

_EXPORTS = {
    "Transformer": "tfllm.models.transformer",
    "TextClassifier": "tfllm.models.text_classifier",
    "resolve_preset": "tfllm.presets",
    "TrainConfig": "tfllm.config",
    "UserInputError": "tfllm.errors",
    "TfllmWarning": "tfllm.errors",
    "load_classification_data": "tfllm.datasets",
    "train_tokenizer": "tfllm.tokenizers",
    "load_tokenizer": "tfllm.tokenizers",
    "CharacterTokenizer": "tfllm.tokenizers",
    "train_classifier": "tfllm.training.classifier",
    "pretrain": "tfllm.training.pretraining",
    "load_run": "tfllm.training.classifier",
    "classification_report": "tfllm.evaluation",
    "export_classifier": "tfllm.export.saved_model",
    "EncoderBackbone": "tfllm.models",
    "MaskedLM": "tfllm.models",
    "CausalLM": "tfllm.models",
    "load_task": "tfllm.runs",
    "explain": "tfllm.explanations",
    "predict": "tfllm.prediction",
    "evaluate": "tfllm.scoring",
    "generate": "tfllm.generation",
    "translate": "tfllm.translation",
    "Explainer": "tfllm.explanations",
    "clear_cache": "tfllm.runs",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

# Before anything imports TensorFlow: a script or notebook that imports tfllm first
# does not log TensorFlow's failed CUDA probe on a machine without a GPU (tfllm/_env.py).
from tfllm._env import quiet_gpu_probe, quiet_new_model_retracing  # noqa: E402  (standard library only)

quiet_gpu_probe()
quiet_new_model_retracing()  # each new model's first fit/predict is not a retracing loop


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    # `import tfllm` then `tfllm.translation.translate(...)`, as the README's examples write it.
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'tfllm' has no attribute {name!r}")


def __dir__():
    return __all__


_pending = False  # registration waits for a tfllm module that was mid-import to finish


def _register(just_imported=None):
    """Imports tfllm's Keras classes (defining them registers them); False while that cannot be done yet."""
    global _pending
    # When one of tfllm's own modules, or KerasHub, is still being imported, importing
    # tfllm.models now would loop back into it half-initialised: the finder below tries again
    # when the next of them finishes. (`__spec__._initializing` is how importlib marks a module
    # mid-import; `just_imported` has run all its code but keeps the mark until the import returns.)
    if any(getattr(getattr(module, "__spec__", None), "_initializing", False)
           for name, module in list(sys.modules.items())
           if name.startswith(("tfllm.", "keras_hub")) and name != just_imported):
        _pending = True
        return False
    importlib.import_module("tfllm.models")
    _pending = False
    return True


# Importing either makes Keras able to deserialize: `keras.models.load_model("m.keras")` after
# `import tfllm` must find `tfllm>Transformer` though nothing imported KerasHub.
_TRIGGERS = ("keras", "keras_hub")


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers tfllm's classes right after `keras` or `keras_hub` is imported (or, when that
    import came from a tfllm module, right after that module), without importing them ourselves.

    Importing TensorFlow takes seconds; a CLI call like `tfllm --help` must not
    pay for it, while `import tfllm` must still make tfllm's runs loadable by
    KerasHub's `from_preset` and its saved models by `keras.models.load_model`.
    """

    def find_spec(self, name, path=None, target=None):
        # tfllm's own modules too: one of them may be the one importing Keras, and then registering
        # waits until it has finished (see `_register`).
        if name not in _TRIGGERS and not name.startswith("tfllm."):
            return None
        sys.meta_path.remove(self)  # find the real module, not ourselves
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if name not in _TRIGGERS and not _pending:
                return
            try:
                done = _register(just_imported=name)
            except Exception as e:  # noqa: BLE001 - a broken KerasHub must not break the user's `import keras`
                import warnings

                warnings.warn(f"tfllm could not register its Keras classes ({type(e).__name__}: {e}); "
                              "`import tfllm.models` shows why.", RuntimeWarning, stacklevel=2)
                done = True
            if done and self in sys.meta_path:
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_then_register
        return spec


if not (any(name in sys.modules for name in _TRIGGERS) and _register()) and \
        not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
