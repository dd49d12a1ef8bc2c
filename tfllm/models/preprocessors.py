"""Preprocessors (tokenizer + packing) of tfllm's encoder tasks, in KerasHub's classes.

(The causal LM's preprocessor sits beside its task in `tfllm.models.causal_lm`.)

Each one turns raw strings into the backbone's `{"token_ids", "padding_mask"}`
inside `tf.data` and inside exported graphs, and saves as `preprocessor.json`
in a preset. The start, end, pad and mask ids come from the tokenizer
(`tokenizer.start_token_id`, ...), so the same code serves tfllm's tokenizers
and a KerasHub preset's own.
"""

import keras
import keras_hub

from tfllm.models.encoder_backbone import EncoderBackbone
from tfllm.tokenizers import tokenizer_family

EncoderTokenizer = tokenizer_family(EncoderBackbone, "EncoderTokenizer")


def _drop_segment_ids(outputs):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(outputs)
    x = {key: value for key, value in x.items() if key != "segment_ids"}
    return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


@keras.saving.register_keras_serializable(package="tfllm")
class TextClassifierPreprocessor(keras_hub.models.TextClassifierPreprocessor):
    """Strings -> `{"token_ids", "padding_mask"}`: `[start] tokens... [end]`, padded to `sequence_length`.

    KerasHub's `TextClassifierPreprocessor` without `segment_ids` (tfllm's
    encoder has no segment embedding).

    Example:
    >>> preprocessor = TextClassifierPreprocessor(tokenizer, sequence_length=16)
    >>> preprocessor(["a fine film"])["token_ids"].shape  # (1, 16)
    """

    backbone_cls = EncoderBackbone
    tokenizer_cls = EncoderTokenizer

    def call(self, x, y=None, sample_weight=None):
        return _drop_segment_ids(super().call(x, y, sample_weight))


@keras.saving.register_keras_serializable(package="tfllm")
class MaskedLMPreprocessor(keras_hub.models.MaskedLMPreprocessor):
    """Strings -> masked `{"token_ids", "padding_mask", "mask_positions"}`, masked ids, weights.

    KerasHub's `MaskedLMPreprocessor` (its `MaskedLMMaskGenerator` picks 15% of
    the tokens, never a special one) without `segment_ids`.
    """

    backbone_cls = EncoderBackbone
    tokenizer_cls = EncoderTokenizer

    def call(self, x, y=None, sample_weight=None):
        return _drop_segment_ids(super().call(x, y, sample_weight))
