"""Masked-language-model pretraining of a classifier's encoder on its own training texts.

On a few thousand labelled sentences, a Transformer trained from scratch
learns word meanings only from the labels. Pretraining the same embedding and
encoder blocks to fill in masked tokens first ("self-pretraining", Krishna et
al. 2022, "Downstream datasets make surprisingly good pretraining corpora")
uses every token of the same texts, downloads nothing, and transfers to the
classifier because the layers are shared objects. KerasHub provides the
masking (`MaskedLMMaskGenerator`) and the tied output head (`MaskedLMHead`).
"""

import keras
import keras_hub
import tensorflow as tf

from tfllm.tokenizers import MASK_ID, NUM_SPECIAL
from tfllm.training import common


def masked_lm_model(classifier):
    """An MLM model sharing `classifier`'s embedding and encoder blocks."""
    embedding = classifier.get_layer("embedding")
    token_ids = keras.Input(shape=(classifier.sequence_length,), dtype="int32", name="token_ids")
    mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    x = embedding(token_ids)
    padding_mask = keras.ops.not_equal(token_ids, 0)
    for i in range(classifier.num_layers):
        x = classifier.get_layer(f"encoder_block_{i}")(x, padding_mask=padding_mask)
    logits = keras_hub.layers.MaskedLMHead(token_embedding=embedding.token_embedding, name="mlm_head")(
        x, mask_positions=mask_positions
    )
    return keras.Model({"token_ids": token_ids, "mask_positions": mask_positions}, logits)


def pretrain_masked_lm(classifier, tokenized_texts, epochs, batch_size, learning_rate, seed=None, verbose="auto"):
    """Trains `classifier`'s encoder as a masked LM in place; returns the Keras History.

    Args:
        classifier: a `TextClassifier`; its embedding and blocks are updated.
        tokenized_texts: a `tf.data.Dataset` of single padded token id rows.
    """
    sequence_length = classifier.sequence_length
    masker = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=classifier.vocabulary_size,
        mask_selection_rate=0.15,
        mask_token_id=MASK_ID,
        mask_selection_length=max(1, round(sequence_length * 0.15)),
        unselectable_token_ids=list(range(NUM_SPECIAL)),
    )

    def mask(ids):
        out = masker(ids)
        return (
            {"token_ids": out["token_ids"], "mask_positions": out["mask_positions"]},
            out["mask_ids"],
            out["mask_weights"],
        )

    ds = tokenized_texts.shuffle(8192, seed=seed).batch(batch_size).map(mask, num_parallel_calls=tf.data.AUTOTUNE)
    model = masked_lm_model(classifier)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    with common.unknown_length_ok():
        return model.fit(ds.prefetch(tf.data.AUTOTUNE), epochs=epochs, shuffle=False, verbose=verbose)  # shuffled above
