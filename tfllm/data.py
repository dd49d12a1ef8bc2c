"""Strings -> batched `tf.data` pipelines, one function per task."""

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def encode_labels(labels, num_classes):
    """Binary labels as a float column (sigmoid head), others one-hot (softmax head)."""
    labels = tf.convert_to_tensor(labels, tf.int32)
    if num_classes == 2:
        return tf.cast(labels, tf.float32)[:, None]
    return tf.one_hot(labels, num_classes)


def token_id_rows(texts, tokenizer):
    """Single rows of token ids, tokenized once in large batches (graph ops, not Python)."""
    return tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024).map(tokenizer, num_parallel_calls=AUTOTUNE).unbatch()


def classification_dataset(split, tokenizer, num_classes, batch_size, shuffle=False, seed=None):
    """(token ids, encoded labels) batches for `model.fit`.

    Texts are tokenized once, in large batches inside the pipeline (the
    tokenizer's TF ops, not Python), then cached, so epochs after the first
    only shuffle and batch.
    """
    ds = tf.data.Dataset.from_tensor_slices((list(split.texts), encode_labels(split.labels, num_classes)))
    ds = ds.batch(1024).map(lambda x, y: (tokenizer(x), y), num_parallel_calls=AUTOTUNE).unbatch().cache()
    if shuffle:
        ds = ds.shuffle(len(split.texts), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def text_batches(texts, tokenizer, batch_size=256):
    """Token id batches for prediction (no labels)."""
    return tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size).map(tokenizer, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
