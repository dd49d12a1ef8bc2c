"""A GPT-style decoder-only language model built on KerasHub.

`CausalLMBackbone` is a functional Keras model: token embedding + learned
position embedding -> `num_layers` causal `keras_hub.layers.TransformerDecoder`
blocks (pre-norm, no cross-attention) -> final layer norm; with
`use_bias=False` the blocks are tfllm's `FusedDecoderBlock` instead (nanoGPT's
bias-free block, which KerasHub's `TransformerDecoder` cannot build). `CausalLM` subclasses
`keras_hub.models.CausalLM`, so `generate()`, the samplers and the key/value
cache machinery come from KerasHub; it adds what a small-context model needs:
generation longer than the context window ("sliding window").

Sliding window: with learned absolute positions, every cached key/value depends
on its position in the window, so when the window moves by one token every
entry changes and nanoGPT's "crop to the last block" means re-encoding the
whole window for each new token. `CausalLM` does that with
`window_keep=sequence_length - 1` (exact nanoGPT semantics). With a smaller
`window_keep`, when the cache is full the model re-encodes only the last
`window_keep` tokens into positions `0..window_keep-1` and then continues
with cheap cached steps until the window is full again; the context a token
sees then varies between `window_keep` and `sequence_length` tokens, which is
still in-distribution for a model trained on every prefix length. See
`benchmarks/bench_generation.py` for the measured trade-off.
"""

import keras
import keras_hub
from keras import ops

from tfllm.tokenizers import detokenizes_with_spaces, join_cjk_op, tokenizer_family

BACKBONE_ARGS = (
    "vocabulary_size",
    "sequence_length",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "intermediate_dim",
    "dropout",
    "tie_weights",
    "layer_norm_epsilon",
    "activation",
    "use_bias",
)


def _initializer(stddev=0.02):
    # GPT-2/nanoGPT initialisation: small normal weights train faster than
    # Glorot at this size and keep the initial loss near log(vocabulary_size).
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="tfllm")
class FusedDecoderBlock(keras.layers.Layer):
    """Pre-norm causal decoder block without biases and with one fused query/key/value projection.

    nanoGPT's block (`bias=False`). KerasHub 0.32's `TransformerDecoder` always
    adds biases and projects queries, keys and values separately; this block
    drops the biases and fuses the three projections into one matmul, which
    makes the `nanogpt-cpu` train step 1.13x faster on a 2-core CPU (21.13 vs
    18.74 ms/step, alternating A/B in benchmarks/bench_generation.py). It keeps `TransformerDecoder`'s call
    contract for decoder-only use (`decoder_padding_mask`,
    `self_attention_cache` of shape `[batch, 2, cache_length, num_heads,
    head_dim]`, `self_attention_cache_update_index`), so `CausalLM`'s cache
    code and KerasHub's samplers serve both kinds of block.

    Args:
        num_heads: attention heads; the input width must divide evenly.
        intermediate_dim: width of the feed-forward layer.
        dropout: dropout on attention probabilities and on both residual branches.
        activation: feed-forward activation.
        layer_norm_epsilon: epsilon of the two layer norms.
        kernel_initializer: initializer of the four projection matrices.
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, activation="gelu", layer_norm_epsilon=1e-5,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, decoder_sequence_shape):
        hidden_dim = decoder_sequence_shape[-1]
        intermediate_shape = tuple(decoder_sequence_shape[:-1]) + (self.intermediate_dim,)

        def dense(units, name, input_shape, activation=None):
            # A copy of the initializer per layer (as KerasHub's clone_initializer), so a seeded one
            # does not give every matrix the same values.
            initializer = keras.initializers.deserialize(keras.initializers.serialize(self.kernel_initializer))
            layer = keras.layers.Dense(units, activation=activation, use_bias=False, kernel_initializer=initializer,
                                       dtype=self.dtype_policy, name=name)
            layer.build(input_shape)
            return layer

        def norm(name):
            layer = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)
            layer.build(decoder_sequence_shape)
            return layer

        self.attention_norm = norm("attention_norm")
        self.query_key_value = dense(3 * hidden_dim, "query_key_value", decoder_sequence_shape)
        self.attention_output = dense(hidden_dim, "attention_output", decoder_sequence_shape)
        self.feedforward_norm = norm("feedforward_norm")
        self.feedforward_intermediate = dense(self.intermediate_dim, "feedforward_intermediate",
                                              decoder_sequence_shape, self.activation)
        self.feedforward_output = dense(hidden_dim, "feedforward_output", intermediate_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def call(self, decoder_sequence, decoder_padding_mask=None, self_attention_cache=None,
             self_attention_cache_update_index=None, training=None, return_attention_scores=False):
        """The block's output (with the updated cache when one is given); with `return_attention_scores`
        and no cache, `(output, attention probabilities [batch, heads, query, key])`, as KerasHub's
        attention layers give them (`tfllm explain --method attention`)."""
        x = decoder_sequence
        batch_size, length, hidden_dim = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head_dim = hidden_dim // self.num_heads
        qkv = self.query_key_value(self.attention_norm(x))
        qkv = ops.reshape(qkv, (batch_size, length, 3, self.num_heads, head_dim))
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

        # Query i sits at position start + i; it sees keys at positions <= its own.
        start = 0
        if self_attention_cache is not None:
            start = self_attention_cache_update_index
            key = ops.slice_update(self_attention_cache[:, 0], [0, start, 0, 0], key)
            value = ops.slice_update(self_attention_cache[:, 1], [0, start, 0, 0], value)
            self_attention_cache = ops.stack([key, value], axis=1)
        query_positions = ops.arange(length) + start
        key_positions = ops.arange(ops.shape(key)[1])
        mask = ops.expand_dims(key_positions, 0) <= ops.expand_dims(query_positions, 1)  # [query, key]
        mask = mask[None, None]
        if decoder_padding_mask is not None and self_attention_cache is None:
            mask = ops.logical_and(mask, ops.cast(decoder_padding_mask, "bool")[:, None, None, :])

        scores = ops.einsum("bqhd,bkhd->bhqk", query, key) * ops.cast(head_dim**-0.5, query.dtype)
        # Softmax in float32, so that mixed precision neither overflows the mask value nor loses the tail.
        scores = ops.where(mask, ops.cast(scores, "float32"), -1e9)
        probabilities = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
        probabilities = self.dropout_layer(probabilities, training=training)
        attended = ops.einsum("bhqk,bkhd->bqhd", probabilities, value)
        attended = ops.reshape(attended, (batch_size, length, hidden_dim))
        x = x + self.dropout_layer(self.attention_output(attended), training=training)

        y = self.feedforward_output(self.feedforward_intermediate(self.feedforward_norm(x)))
        x = x + self.dropout_layer(y, training=training)
        if return_attention_scores and self_attention_cache is None:
            return x, probabilities
        return x if self_attention_cache is None else (x, self_attention_cache)

    def compute_output_shape(self, decoder_sequence_shape):
        return decoder_sequence_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class CausalLMBackbone(keras_hub.models.Backbone):
    """Decoder-only Transformer: embeddings -> causal decoder blocks -> layer norm.

    Args:
        vocabulary_size: number of token ids (the tokenizer's vocabulary).
        sequence_length: context window; also the number of learned positions.
        hidden_dim: width of embeddings and residual stream.
        num_layers: number of `TransformerDecoder` blocks.
        num_heads: attention heads per block (`hidden_dim` must divide evenly).
        intermediate_dim: width of the feed-forward layer (4x `hidden_dim` in GPT).
        dropout: dropout rate on embeddings, attention and feed-forward outputs.
        tie_weights: reuse the token embedding matrix as the output projection.
        layer_norm_epsilon: epsilon of every layer norm.
        activation: feed-forward activation.
        use_bias: `True` builds KerasHub `TransformerDecoder` blocks (with
            biases); `False` builds `FusedDecoderBlock`s, nanoGPT's bias-free block.

    Example:
    >>> backbone = CausalLMBackbone(vocabulary_size=50, sequence_length=16,
    ...     hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32)
    >>> backbone({"token_ids": np.ones((1, 16), "int32"),
    ...           "padding_mask": np.ones((1, 16), "int32")}).shape
    TensorShape([1, 16, 16])
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        tie_weights=True,
        layer_norm_epsilon=1e-5,
        activation="gelu",
        use_bias=True,
        dtype=None,
        **kwargs,
    ):
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads}).")
        # === Layers ===
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            tie_weights=tie_weights,
            embeddings_initializer=_initializer(),
            dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=sequence_length,
            initializer=_initializer(),
            dtype=dtype,
            name="position_embedding",
        )
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        block_args = dict(intermediate_dim=intermediate_dim, num_heads=num_heads, dropout=dropout,
                          activation=activation, layer_norm_epsilon=layer_norm_epsilon,
                          kernel_initializer=_initializer(), dtype=dtype)
        self.transformer_layers = [
            keras_hub.layers.TransformerDecoder(normalize_first=True, name=f"transformer_layer_{i}", **block_args)
            if use_bias
            else FusedDecoderBlock(name=f"transformer_layer_{i}", **block_args)
            for i in range(num_layers)
        ]
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="layer_norm"
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        tokens = self.token_embedding(token_ids)
        x = self.embeddings_add((tokens, self.position_embedding(tokens)))
        x = self.embeddings_dropout(x)
        for layer in self.transformer_layers:
            x = layer(x, decoder_padding_mask=padding_mask)
        x = self.layer_norm(x)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=x,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.tie_weights = tie_weights
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.use_bias = use_bias

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in BACKBONE_ARGS})
        return config


DecoderTokenizer = tokenizer_family(CausalLMBackbone, "DecoderTokenizer")


@keras.saving.register_keras_serializable(package="tfllm")
class CausalLMPreprocessor(keras_hub.models.CausalLMPreprocessor):
    """Strings -> `{"token_ids", "padding_mask"}` and next-token labels, KerasHub's way.

    tfllm's own language models learn from a running text cut into windows,
    with no start token, so by default none is added here either, also when
    `generate()` prepares a prompt.
    """

    backbone_cls = CausalLMBackbone
    tokenizer_cls = DecoderTokenizer

    def __init__(self, tokenizer, sequence_length=1024, add_start_token=False, add_end_token=False, **kwargs):
        super().__init__(tokenizer, sequence_length=sequence_length, add_start_token=add_start_token,
                         add_end_token=add_end_token, **kwargs)

    def _generate_preprocess_python(self, x, sequence_length=None):
        if not self.built:
            self.build(None)
        token_ids, padding_mask = self.packer(self.tokenizer(x), sequence_length=sequence_length,
                                              add_start_value=self.add_start_token, add_end_value=False)
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def generate_postprocess(self, x):
        text = super().generate_postprocess(x)
        if detokenizes_with_spaces(self.tokenizer):  # "中 国" -> "中国", as tfllm.generation and the exports
            text = join_cjk_op(text)
        return python_strings(text)


def python_strings(text):
    """An eager string tensor as KerasHub's own preprocessors hand `generate()` its text: a str, or a list of
    str. tfllm's tokenizers detokenize to a tensor also on KerasHub's Python path, and `generate()` of a run
    loaded with `keras_hub.models.CausalLM.from_preset` then returned NumPy arrays of bytes. A tensor being
    traced (an export) is left as it is."""
    import tensorflow as tf

    if not (isinstance(text, tf.Tensor) and text.dtype == tf.string and tf.executing_eagerly()):
        return text
    values = text.numpy()
    if values.ndim == 0:
        return values.decode("utf-8")
    return [value.decode("utf-8") for value in values] if values.ndim == 1 else text


@keras.saving.register_keras_serializable(package="tfllm")
class CausalLM(keras_hub.models.CausalLM):
    """Next-token language model with cached, window-sliding generation.

    Call it on `{"token_ids", "padding_mask"}` for logits of shape
    `[batch, length, vocabulary_size]`; train it with `fit()` on
    `(inputs, next_token_ids)`; generate with `generate()` on padded token ids
    (KerasHub's API, no preprocessor attached) or, for text, with
    `tfllm.generation.generate`.

    Args:
        backbone: a `CausalLMBackbone`.
        window_keep: how many tokens to keep (re-encode) when generation fills
            the context window. `None` means `sequence_length - 1`, nanoGPT's
            exact crop-every-token semantics; smaller is faster.
        preprocessor: a `CausalLMPreprocessor`, so KerasHub's
            `generate("prompt")` works on strings; tfllm's own decoding
            (`tfllm.generation`) tokenizes itself and works without one.
        end_token_trained: whether the end token was ever a next-token target in
            training (`tfllm.training.causal_lm` sets it from the training ids).
            A model trained on running text (every tfllm corpus: documents are
            joined by blank lines, no end token) never learnt when to stop, only
            a small, nonzero chance of the end token, so tfllm's runtimes
            never emit it (`tfllm.generation.never_emitted_ids`): `generate`,
            the NumPy path, the SavedModel, served models and the TFLite loop
            then give every `max_new_tokens` asked for. Saved in the task's
            config; runs saved before it existed were all trained on running
            text, hence the default False.

    Example:
    >>> lm = CausalLM.from_args(vocabulary_size=50, sequence_length=16,
    ...     hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32)
    >>> lm.compile(sampler="greedy")
    >>> out = lm.generate({"token_ids": np.array([[5, 6, 0, 0]]),
    ...                    "padding_mask": np.array([[1, 1, 0, 0]])},
    ...                   stop_token_ids=None)
    """

    backbone_cls = CausalLMBackbone
    preprocessor_cls = CausalLMPreprocessor

    def __init__(self, backbone, window_keep=None, preprocessor=None, end_token_trained=False, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        if window_keep is not None and not 0 < window_keep < backbone.sequence_length:
            raise ValueError(
                f"window_keep must be between 1 and sequence_length - 1 "
                f"({backbone.sequence_length - 1}), got {window_keep}."
            )
        self.window_keep = window_keep
        self.end_token_trained = bool(end_token_trained)
        inputs = backbone.input
        hidden_states = backbone(inputs)
        outputs = backbone.token_embedding(hidden_states, reverse=True)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @classmethod
    def from_args(cls, window_keep=None, **kwargs):
        """Builds the task from flat backbone arguments (preset dicts); extra keys are ignored."""
        backbone_kwargs = {k: v for k, v in kwargs.items() if k in BACKBONE_ARGS or k == "dtype"}
        return cls(CausalLMBackbone(**backbone_kwargs), window_keep=window_keep)

    def get_config(self):
        config = super().get_config()
        config["window_keep"] = self.window_keep
        config["end_token_trained"] = self.end_token_trained
        return config

    @property
    def sequence_length(self):
        return self.backbone.sequence_length

    def call_with_cache(self, token_ids, cache, cache_update_index):
        """Forward pass over `token_ids` that reads and updates the key/value cache.

        Same contract as KerasHub's `GPT2CausalLM.call_with_cache`: `cache` has
        shape `[batch, num_layers, 2, cache_length, num_heads, head_dim]` and
        `token_ids` are written at positions `cache_update_index...`.
        Returns `(logits, hidden_states, cache)`.
        """
        layer_caches = [cache[:, i, ...] for i in range(self.backbone.num_layers)]
        logits, hidden_states, layer_caches = self.call_with_layer_caches(token_ids, layer_caches, cache_update_index)
        return logits, hidden_states, ops.stack(layer_caches, axis=1)

    def call_with_layer_caches(self, token_ids, layer_caches, cache_update_index):
        """`call_with_cache` with one `[batch, 2, cache_length, num_heads, head_dim]` cache per layer.

        The TFLite export runs this: stacking the layers' caches makes a 6-D
        tensor, and TensorFlow's own TFLite kernels (strided slice among them)
        take at most 5 dimensions. Returns `(logits, hidden_states, layer_caches)`.
        """
        backbone = self.backbone
        tokens = backbone.token_embedding(token_ids)
        # Positions gathered, not sliced from `cache_update_index`: see `generate_step`'s `token`.
        positions = backbone.position_embedding(tokens, positions=cache_update_index + ops.arange(ops.shape(tokens)[1]))
        x = backbone.embeddings_add((tokens, positions))
        x = backbone.embeddings_dropout(x)
        caches = []
        for layer, layer_cache in zip(backbone.transformer_layers, layer_caches):
            x, next_cache = layer(
                x,
                self_attention_cache=layer_cache,
                self_attention_cache_update_index=cache_update_index,
            )
            caches.append(next_cache)
        hidden_states = x = backbone.layer_norm(x)
        logits = backbone.token_embedding(x, reverse=True)
        return logits, hidden_states, caches

    def _encode(self, token_ids, cache_length):
        """Fills a fresh cache of `cache_length` positions with `token_ids` (from position 0)."""
        backbone = self.backbone
        batch_size = ops.shape(token_ids)[0]
        head_dim = backbone.hidden_dim // backbone.num_heads
        shape = [batch_size, backbone.num_layers, 2, cache_length, backbone.num_heads, head_dim]
        cache = ops.zeros(shape, dtype=self.compute_dtype)
        _, hidden_states, cache = self.call_with_cache(token_ids, cache, 0)
        return hidden_states, cache

    def _build_cache(self, token_ids):
        length = ops.shape(token_ids)[1]
        cache_length = ops.minimum(length, self.sequence_length) if not isinstance(length, int) else min(length, self.sequence_length)
        return self._encode(token_ids[:, :cache_length], cache_length)

    def generate_step(self, inputs, stop_token_ids=None, sampler=None):
        """KerasHub's compilable generation step, with a sliding context window.

        `inputs` holds `"token_ids"` and `"padding_mask"` of shape
        `[batch, max_length]`: prompts left-aligned, padded to the length of
        prompt plus new tokens. `max_length` may exceed `sequence_length`.
        `sampler` (default: the one `compile` set) lets a caller decode with its
        own sampler without storing it, or tensors traced for it, on the model.
        """
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        window = self.sequence_length
        keep = self.window_keep or window - 1
        hidden_states, cache = self._build_cache(token_ids)
        cache_length = ops.shape(cache)[3]
        row_lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)
        # The window offset (buffer index of cache position 0) rides along in
        # the cache structure, one copy per row, so that KerasHub's beam
        # sampler can repeat and gather it like the cache itself.
        offset = ops.zeros_like(row_lengths)
        # Prompt + new tokens within one window never slide; leaving the branch
        # out also keeps XLA from rejecting its `keep`-long slice of a shorter buffer.
        max_length = token_ids.shape[1]
        may_slide = max_length is None or max_length > window

        def next(prompt, cache, index):
            kv, offset = cache
            i = index - 1  # buffer position of the token we feed in

            def slide():
                # A trace for any buffer width (a second call's, relaxed by reduce_retracing) also compiles this
                # branch for buffers shorter than `keep`, which never slide: XLA refused the `keep`-long slice of
                # them ("Expected size[1] in [0, 14], but got 15"). Its size, from the buffer's shape, is a
                # constant to XLA.
                size = ops.minimum(keep, ops.shape(prompt)[1])
                start = i - size
                context = ops.take(prompt, start + ops.arange(size), axis=1)  # a gather: see `token` below
                _, fresh = self._encode(context, cache_length)
                return fresh, ops.zeros_like(offset) + start

            if may_slide:
                kv, offset = ops.cond(i - offset[0] >= cache_length, slide, lambda: (kv, offset))
            # A gather, not a slice: XLA takes a slice's start as a compile-time constant, which made the padding
            # mask (the start index's source) one, and every new prompt length a new compile (OptionSampler).
            token = ops.take(prompt, ops.reshape(i, [1]), axis=1)
            logits, hidden, kv = self.call_with_cache(token, kv, i - offset[0])
            return ops.squeeze(logits, axis=1), ops.squeeze(hidden, axis=1), (kv, offset)

        token_ids = (sampler or self.sampler)(
            next=next,
            prompt=token_ids,
            cache=(cache, offset),
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        return {"token_ids": token_ids, "padding_mask": mask_after_stop(token_ids, padding_mask, stop_token_ids)}


def mask_after_stop(token_ids, prompt_mask, stop_token_ids):
    """The padding mask of decoded `token_ids`: False after the first stop token that was not in the prompt
    (`prompt_mask` True), as KerasHub's GPT2CausalLM.generate_step builds it; all True without stop tokens."""
    if stop_token_ids is None:
        return ops.ones_like(token_ids, dtype="bool")
    end_locations = ops.zeros_like(token_ids, dtype="bool")
    for stop in stop_token_ids:
        end_locations = ops.logical_or(end_locations, ops.equal(token_ids, stop))
    end_locations = ops.cast(ops.logical_and(end_locations, ops.logical_not(ops.cast(prompt_mask, "bool"))), "int32")
    overflow = ops.cumsum(end_locations, axis=-1) - end_locations  # ones after each end, not at it
    return ops.logical_not(ops.cast(overflow, "bool"))
