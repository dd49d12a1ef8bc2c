"""The encoder text classifier: token ids in, class probabilities out."""

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="tfllm")
class TextClassifier(keras.Model):
    """Token + position embedding, Transformer encoder blocks, pooling, softmax/sigmoid.

    A Keras functional model whose constructor arguments are its config
    (the KerasHub `Backbone` pattern), so `.keras` files save and reload it
    exactly. Token id 0 is padding: it is masked in attention and pooling.
    Two classes give `Dense(1, sigmoid)` (binary cross-entropy); more give
    `Dense(num_classes, softmax)` (categorical cross-entropy).

    Args:
        vocabulary_size: number of token ids.
        num_classes: number of labels (2 means one sigmoid unit).
        sequence_length: length of the (padded) token id inputs.
        hidden_dim: embedding and block width.
        num_layers: number of `TransformerEncoder` blocks.
        num_heads: attention heads per block.
        intermediate_dim: feed-forward width per block.
        dropout: dropout in the blocks and before the output layer.
        embedding_dropout: probability of dropping a whole token's embedding
            while training ("word dropout"), a strong regulariser on small data.
        bigram_buckets: if set, a fastText-style bag of hashed token bigrams
            (computed from the ids with integer ops, so it exports to TF
            Serving and TFLite alike) is averaged and added to the pooled
            encoder output; word order cues such as "not good" then need
            not be learned by attention from a few thousand examples.

    Example:
    >>> model = TextClassifier(vocabulary_size=50, num_classes=2, sequence_length=16,
    ...                        hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=16)
    >>> model(np.ones((1, 16), "int32")).shape  # (1, 1)
    """

    def __init__(
        self,
        vocabulary_size,
        num_classes,
        sequence_length,
        hidden_dim=128,
        num_layers=2,
        num_heads=8,
        intermediate_dim=512,
        dropout=0.1,
        embedding_dropout=0.0,
        bigram_buckets=None,
        **kwargs,
    ):
        token_ids = keras.Input(shape=(sequence_length,), dtype="int32", name="token_ids")
        x = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size, sequence_length, hidden_dim, name="embedding"
        )(token_ids)
        if embedding_dropout:
            # noise_shape broadcasts over the features: whole tokens are dropped.
            x = keras.layers.Dropout(embedding_dropout, noise_shape=(None, sequence_length, 1), name="token_dropout")(x)
        padding_mask = keras.ops.not_equal(token_ids, 0)
        for i in range(num_layers):
            x = keras_hub.layers.TransformerEncoder(
                intermediate_dim, num_heads, dropout=dropout, name=f"encoder_block_{i}"
            )(x, padding_mask=padding_mask)
        # Masked mean by hand rather than GlobalAveragePooling1D: an empty text
        # (all padding) must give a valid average, not 0/0 = NaN.
        weights = keras.ops.expand_dims(keras.ops.cast(padding_mask, x.dtype), -1)
        x = keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)
        if bigram_buckets:
            previous = keras.ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
            bigrams = (previous * vocabulary_size + token_ids) % bigram_buckets
            b = keras.layers.Embedding(bigram_buckets, hidden_dim, name="bigram_embedding")(bigrams)
            if embedding_dropout:
                b = keras.layers.Dropout(embedding_dropout, noise_shape=(None, sequence_length, 1), name="bigram_dropout")(b)
            bigram_weights = keras.ops.expand_dims(
                keras.ops.cast(keras.ops.logical_and(padding_mask, keras.ops.not_equal(previous, 0)), b.dtype), -1
            )
            x = x + keras.ops.sum(b * bigram_weights, axis=1) / keras.ops.maximum(keras.ops.sum(bigram_weights, axis=1), 1.0)
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        if num_classes == 2:
            outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probabilities")(x)
        else:
            outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
        super().__init__(inputs=token_ids, outputs=outputs, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.num_classes = num_classes
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout
        self.bigram_buckets = bigram_buckets

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary_size": self.vocabulary_size,
            "num_classes": self.num_classes,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "embedding_dropout": self.embedding_dropout,
            "bigram_buckets": self.bigram_buckets,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def probabilities(self, token_ids, training=False):
        """Class probabilities `[batch, num_classes]`, also for the one-sigmoid binary head."""
        outputs = self(token_ids, training=training)
        if self.num_classes == 2:
            return keras.ops.concatenate([1.0 - outputs, outputs], axis=-1)
        return outputs
