"""tfllm's models in KerasHub's split: backbones, tasks and their preprocessors.

Importing this package registers every class, so `keras_hub.models.*.from_preset(run_dir)`
finds them.
"""

from tfllm.models.causal_lm import CausalLM, CausalLMBackbone, CausalLMPreprocessor
from tfllm.models.encoder_backbone import EncoderBackbone
from tfllm.models.ensemble import EnsembleBackbone, EnsembleClassifier
from tfllm.models.masked_lm import MaskedLM
from tfllm.models.preprocessors import MaskedLMPreprocessor, TextClassifierPreprocessor
from tfllm.presets import resolve_preset
from tfllm.models.seq2seq_lm import Seq2SeqBackbone, Seq2SeqLM, Seq2SeqLMPreprocessor
from tfllm.models.text_classifier import TextClassifier
from tfllm.models.transformer import Transformer

__all__ = [
    "CausalLM",
    "CausalLMBackbone",
    "CausalLMPreprocessor",
    "EncoderBackbone",
    "EnsembleBackbone",
    "EnsembleClassifier",
    "MaskedLM",
    "MaskedLMPreprocessor",
    "TextClassifier",
    "TextClassifierPreprocessor",
    "Transformer",
    "Seq2SeqBackbone",
    "Seq2SeqLM",
    "Seq2SeqLMPreprocessor",
    "resolve_preset",
]
