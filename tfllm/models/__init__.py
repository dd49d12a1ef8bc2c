from tfllm.models.presets import resolve_preset
from tfllm.models.text_classifier import TextClassifier
from tfllm.models.transformer import Transformer

__all__ = ["TextClassifier", "Transformer", "resolve_preset"]
