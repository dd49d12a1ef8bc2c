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
import tensorflow as tf

from tfllm.models.encoder_backbone import EncoderBackbone
from tfllm.tokenizers import tokenizer_family

EncoderTokenizer = tokenizer_family(EncoderBackbone, "EncoderTokenizer")


def _drop_segment_ids(outputs):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(outputs)
    x = {key: value for key, value in x.items() if key != "segment_ids"}
    return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


def code_points(texts, length):
    """`int32[batch, length]` Unicode code points of strings, cut or padded with 0.

    Bytes that are not UTF-8 become U+FFFD, as the tokenizer reads them. Not
    lowercased here: the character and word views lowercase with integer ops
    (`tfllm.models.text_classifier`), so that a phone app or
    another runtime passes the text's code points as they are.
    """
    texts = tf.convert_to_tensor(texts)
    points = tf.strings.unicode_decode(tf.reshape(texts, [-1]), "UTF-8", errors="replace")
    points = points.to_tensor(default_value=0, shape=[None, length])
    return points[0] if texts.shape.rank == 0 else points


@keras.saving.register_keras_serializable(package="tfllm")
class TextClassifierPreprocessor(keras_hub.models.TextClassifierPreprocessor):
    """Strings -> `{"token_ids", "padding_mask"}`: `[start] tokens... [end]`, padded to `sequence_length`.

    KerasHub's `TextClassifierPreprocessor` without `segment_ids` (tfllm's
    encoder has no segment embedding). With `char_length`, also `"code_points"`:
    the text's first `char_length` Unicode code points (0 after its end),
    which a classifier's character and word views read
    (`TextClassifier(char_ngram_buckets=..., word_ngram_buckets=...)`).

    Example:
    >>> preprocessor = TextClassifierPreprocessor(tokenizer, sequence_length=16)
    >>> preprocessor(["a fine film"])["token_ids"].shape  # (1, 16)
    """

    backbone_cls = EncoderBackbone
    tokenizer_cls = EncoderTokenizer

    def __init__(self, tokenizer, sequence_length=512, char_length=None, **kwargs):
        super().__init__(tokenizer, sequence_length=sequence_length, **kwargs)
        self.char_length = char_length

    def call(self, x, y=None, sample_weight=None):
        outputs = _drop_segment_ids(super().call(x, y, sample_weight))
        if not self.char_length:
            return outputs
        inputs, y, sample_weight = keras.utils.unpack_x_y_sample_weight(outputs)
        texts = x[0] if isinstance(x, tuple) else x
        inputs = {**inputs, "code_points": code_points(texts, self.char_length)}
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def get_config(self):
        config = super().get_config()
        if self.char_length:  # only then: a run saved before it stays loadable by older tfllm
            config["char_length"] = self.char_length
        return config


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
