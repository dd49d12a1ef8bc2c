"""The Transformer encoder backbone: token ids -> contextual token vectors (BERT-style, small)."""

import keras
import keras_hub

BACKBONE_ARGS = ("vocabulary_size", "sequence_length", "hidden_dim", "num_layers", "num_heads",
                 "intermediate_dim", "dropout", "embedding_dropout")


@keras.saving.register_keras_serializable(package="tfllm")
class EncoderBackbone(keras_hub.models.Backbone):
    """Token + learned position embedding, then `num_layers` KerasHub `TransformerEncoder` blocks.

    KerasHub's `Backbone` contract: inputs `{"token_ids", "padding_mask"}`
    (`[batch, length]`, any length up to `sequence_length`), output the
    sequence of hidden vectors `[batch, length, hidden_dim]`. Positions where
    `padding_mask` is 0 are ignored by attention. The token embedding is a
    `ReversibleEmbedding`, so a masked-LM head can tie its output to it
    (`tfllm.models.MaskedLM`) and a classifier fine-tuned afterwards starts
    from the pretrained weights.

    Args:
        vocabulary_size: number of token ids.
        sequence_length: the longest input; also the number of learned positions.
        hidden_dim: embedding and block width.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block.
        intermediate_dim: feed-forward width per block.
        dropout: dropout inside the blocks.
        embedding_dropout: probability of dropping a whole token's embedding
            while training ("word dropout"), a strong regulariser on small data.

    Example:
    >>> backbone = EncoderBackbone(vocabulary_size=50, sequence_length=16, hidden_dim=16,
    ...                            num_layers=2, num_heads=2, intermediate_dim=32)
    >>> backbone({"token_ids": np.ones((1, 16), "int32"), "padding_mask": np.ones((1, 16), "int32")}).shape
    TensorShape([1, 16, 16])
    """

    def __init__(self, vocabulary_size, sequence_length, hidden_dim=128, num_layers=2, num_heads=8,
                 intermediate_dim=512, dropout=0.1, embedding_dropout=0.0, dtype=None, **kwargs):
        # === Layers ===
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size, hidden_dim, dtype=dtype, name="token_embedding")
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length, dtype=dtype, name="position_embedding")
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        # noise_shape broadcasts over the features: whole tokens are dropped.
        self.token_dropout = keras.layers.Dropout(
            embedding_dropout, noise_shape=(None, None, 1), dtype=dtype, name="token_dropout")
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(intermediate_dim, num_heads, dropout=dropout, dtype=dtype,
                                                name=f"transformer_layer_{i}")
            for i in range(num_layers)
        ]

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        x = self.embeddings_add((tokens, self.position_embedding(tokens)))
        x = self.token_dropout(x)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask}, outputs=x, dtype=dtype,
                         **kwargs)

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.embedding_dropout = embedding_dropout

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in BACKBONE_ARGS})
        return config
