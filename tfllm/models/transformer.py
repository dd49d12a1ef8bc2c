"""The `Transformer` layer the article calls but Keras does not have."""

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="tfllm")
class Transformer(keras.layers.Layer):
    """A stack of Transformer encoder blocks that pools to one vector per sequence.

    Takes embeddings `[batch, length, features]` and returns `[batch, d_model]`,
    so the article's `Dense(1, activation="sigmoid")` right after it gives the
    `(None, 1)` output it prints. Blocks are KerasHub `TransformerEncoder`s;
    sine position encodings are added first because a bare `Embedding` (as in
    the article) carries no order. A Keras mask (e.g. `Embedding(...,
    mask_zero=True)`) is honoured by attention and by the pooling.

    Args:
        num_layers: number of encoder blocks.
        d_model: width of the blocks; inputs of another width are projected.
        dff: width of each block's feed-forward layer.
        num_heads: attention heads (must divide `d_model`).
        dropout: dropout rate inside the blocks.
        pooling: `"mean"` (masked average) or `"first"` (first position).

    Example:
    >>> inputs = keras.Input(shape=(100,))
    >>> embedding = keras.layers.Embedding(10000, 128)(inputs)
    >>> transformer = Transformer(num_layers=2, d_model=128, dff=512)(embedding)
    >>> outputs = keras.layers.Dense(1, activation="sigmoid")(transformer)
    """

    def __init__(self, num_layers=2, d_model=128, dff=512, num_heads=8, dropout=0.1, pooling="mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("mean", "first"):
            raise ValueError(f"pooling must be 'mean' or 'first', got {pooling!r}")
        for name, value in (("num_layers", num_layers), ("d_model", d_model), ("dff", dff), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Transformer {name} must be a whole number of at least 1, got {value!r}")
        if d_model % num_heads:  # KerasHub would give each head d_model // num_heads dimensions, dropping the rest
            raise ValueError(f"Transformer num_heads must divide d_model: {d_model} is not a multiple of {num_heads}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"Transformer dropout must be a number from 0 up to (not including) 1, got {dropout!r}")
        self.num_layers = num_layers
        self.d_model = d_model
        self.dff = dff
        self.num_heads = num_heads
        self.dropout = dropout
        self.pooling = pooling
        self.supports_masking = True
        self.position_encoding = keras_hub.layers.SinePositionEncoding(dtype=self.dtype_policy)
        # It only reads the shape; saying so stops Keras warning that it drops the mask.
        self.position_encoding.supports_masking = True
        self.blocks = [
            keras_hub.layers.TransformerEncoder(
                intermediate_dim=dff, num_heads=num_heads, dropout=dropout, dtype=self.dtype_policy, name=f"block_{i}"
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        if len(input_shape) != 3:  # token ids straight from Input: failed at the first fit, deep in the encoding
            raise ValueError(f"Transformer takes embeddings [batch, length, features], got shape {tuple(input_shape)}; "
                             "put an Embedding layer before it: Transformer(...)(Embedding(vocab_size, 128)(inputs))")
        self.projection = None
        if input_shape[-1] != self.d_model:
            self.projection = keras.layers.Dense(self.d_model, dtype=self.dtype_policy, name="projection")
            self.projection.build(input_shape)
        block_shape = tuple(input_shape[:-1]) + (self.d_model,)
        self.position_encoding.build(block_shape)
        for block in self.blocks:
            block.build(block_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = self.projection(inputs) if self.projection is not None else inputs
        x = x + self.position_encoding(x)
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        if self.pooling == "first":
            return x[:, 0, :]
        if mask is None:
            return keras.ops.mean(x, axis=1)
        weights = keras.ops.cast(mask, x.dtype)[..., None]
        return keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.d_model)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "d_model": self.d_model,
                "dff": self.dff,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "pooling": self.pooling,
            }
        )
        return config
