"""tfllm: build, train, export and serve small Transformer language models with Keras 3.

    from tfllm import Transformer          # the article's layer
    from tfllm import TextClassifier, train_classifier, TrainConfig

Names are imported lazily, so `tfllm --help` does not wait for TensorFlow.
"""

import importlib

_EXPORTS = {
    "Transformer": "tfllm.models.transformer",
    "TextClassifier": "tfllm.models.text_classifier",
    "resolve_preset": "tfllm.models.presets",
    "TrainConfig": "tfllm.config",
    "UserInputError": "tfllm.errors",
    "load_classification_data": "tfllm.datasets",
    "train_tokenizer": "tfllm.tokenizers",
    "load_tokenizer": "tfllm.tokenizers",
    "CharacterTokenizer": "tfllm.tokenizers",
    "train_classifier": "tfllm.training.classifier",
    "load_run": "tfllm.training.classifier",
    "classification_report": "tfllm.evaluation",
    "export_classifier": "tfllm.export.saved_model",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfllm' has no attribute {name!r}")


def __dir__():
    return __all__
