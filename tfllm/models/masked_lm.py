"""Masked-language-model pretraining task over an `EncoderBackbone` (KerasHub's `MaskedLM`)."""

import keras
import keras_hub

from tfllm.models.encoder_backbone import EncoderBackbone
from tfllm.models.preprocessors import MaskedLMPreprocessor


@keras.saving.register_keras_serializable(package="tfllm")
class MaskedLM(keras_hub.models.MaskedLM):
    """Predicts masked tokens from their context; its backbone is what a classifier fine-tunes.

    KerasHub's `MaskedLMHead` ties its output projection to the backbone's
    token embedding. A run directory holding this task is a preset that
    `tfllm train --task classify --from-preset RUN_DIR` starts from (the
    backbone and tokenizer are reused, the head is dropped).

    Args:
        backbone: an `EncoderBackbone`.
        preprocessor: a `MaskedLMPreprocessor`, or `None`.

    Example:
    >>> lm = MaskedLM(EncoderBackbone(vocabulary_size=50, sequence_length=16, hidden_dim=16,
    ...                               num_layers=2, num_heads=2, intermediate_dim=32))
    """

    backbone_cls = EncoderBackbone
    preprocessor_cls = MaskedLMPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.masked_lm_head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=backbone.vocabulary_size,
            token_embedding=backbone.token_embedding,
            intermediate_activation="gelu",
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )

        # === Functional model ===
        inputs = {
            **backbone.input,
            "mask_positions": keras.Input(shape=(None,), dtype="int32", name="mask_positions"),
        }
        x = backbone({"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]})
        outputs = self.masked_lm_head(x, mask_positions=inputs["mask_positions"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        autocast_head(self)


def autocast_head(task):
    """Lets `task.masked_lm_head` (a KerasHub `MaskedLMHead`) cast its float32 bias to a mixed policy's
    16-bit compute dtype, so the task trains under `--precision mixed_bfloat16`/`mixed_float16`.

    KerasHub builds the head with `autocast=False` (keras-hub 0.32) yet adds its float32 bias to the
    16-bit logits; called alone it works (a layer outside any autocast scope opens one for its own mixed
    policy), but inside a task Keras honours `autocast=False` and the addition failed ("cannot compute
    AddV2 as input #1 was expected to be a bfloat16 tensor but is a float tensor"). A related upstream
    report is keras-team/keras-hub#1195 (the head under `dtype=bfloat16`). The head's
    own layers and the tied embedding cast for themselves, so autocasting changes only the bias.
    A float32 task has nothing to cast: this changes nothing there.
    """
    head = getattr(task, "masked_lm_head", None)
    if isinstance(head, keras_hub.layers.MaskedLMHead):
        head.autocast = True
    return task
