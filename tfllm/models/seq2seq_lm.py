"""A Transformer encoder–decoder for translation, in KerasHub's split.

`Seq2SeqBackbone` is a functional Keras model: one token embedding shared by
both sides (source and target share a tokenizer) plus learned position
embeddings -> `num_layers` pre-norm `keras_hub.layers.TransformerEncoder`
blocks -> layer norm; the decoder embeds the target the same way and runs
`num_decoder_layers` pre-norm `keras_hub.layers.TransformerDecoder` blocks
(causal self-attention, then cross-attention over the encoder output) ->
layer norm. `Seq2SeqLM` subclasses `keras_hub.models.Seq2SeqLM` (KerasHub's
`generate()`, samplers, `save_to_preset`/`from_preset`) with BART's cache
contract: the source is encoded once, every decoder block's cross-attention
keys/values are computed once from it, and each new token runs one decoder
position against the self-attention key/value cache.

Text -> ids goes through `Seq2SeqLMPreprocessor` (KerasHub's
`Seq2SeqLMPreprocessor`): `[BOS] source [EOS]` for the encoder, `[BOS] target`
in and `target [EOS]` out for the decoder (teacher forcing). Every special
id comes from the tokenizer. `clean_text` undoes the one thing a WordPiece
detokenizer gets wrong for Chinese (a space between two ideographs, or an ideograph
and a CJK punctuation mark).
"""

import keras
import keras_hub
import tensorflow as tf
from keras import ops

from tfllm.models.causal_lm import mask_after_stop, python_strings
from tfllm.tokenizers import join_cjk_op, tokenizer_family

BACKBONE_ARGS = (
    "vocabulary_size",
    "encoder_sequence_length",
    "decoder_sequence_length",
    "hidden_dim",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "intermediate_dim",
    "dropout",
    "activation",
    "layer_norm_epsilon",
    "tie_weights",
    "target_vocabulary_size",
)
# The backbone arguments that come from the tokenizer, never from a preset.
VOCABULARY_ARGS = ("vocabulary_size", "target_vocabulary_size")


def _initializer(stddev=0.02):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="tfllm")
class SharedEmbedding(keras_hub.layers.ReversibleEmbedding):
    """KerasHub's `ReversibleEmbedding` whose reverse (output) projection scores only the first ids.

    Source and target share one tokenizer whose vocabulary lists the tokens
    of training targets first (`tfllm.tokenizers.targets_first`), so the
    decoder's softmax covers `output_vocabulary_size` ids and skips the
    source-only tokens it never emits (the Chinese characters of a
    Chinese -> English model): a smaller softmax, a faster step.

    Args:
        output_vocabulary_size: ids the reverse projection scores (`None`: all).
        **kwargs: passed to `keras_hub.layers.ReversibleEmbedding`.
    """

    def __init__(self, *args, output_vocabulary_size=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_vocabulary_size = output_vocabulary_size

    def _outputs(self):
        return self.input_dim if self.output_vocabulary_size is None else int(self.output_vocabulary_size)

    def call(self, inputs, reverse=False):
        if not reverse or self._outputs() == self.input_dim:
            return super().call(inputs, reverse=reverse)
        n = self._outputs()
        kernel = ops.transpose(self.embeddings[:n]) if self.tie_weights else self.reverse_embeddings[:, :n]
        if self.reverse_dtype is not None:
            inputs, kernel = ops.cast(inputs, self.reverse_dtype), ops.cast(kernel, self.reverse_dtype)
        return ops.matmul(inputs, kernel)

    def compute_output_shape(self, input_shape, reverse=False):
        shape = super().compute_output_shape(input_shape, reverse=reverse)
        if reverse:
            shape[-1] = self._outputs()
        return shape

    def compute_output_spec(self, inputs, reverse=False):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape, reverse=reverse), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "output_vocabulary_size": self.output_vocabulary_size}


@keras.saving.register_keras_serializable(package="tfllm")
class Seq2SeqBackbone(keras_hub.models.Backbone):
    """Encoder–decoder Transformer: KerasHub `TransformerEncoder` and `TransformerDecoder` blocks.

    Args:
        vocabulary_size: token ids of the (shared) tokenizer.
        encoder_sequence_length: longest source, in tokens (learned positions).
        decoder_sequence_length: longest target, in tokens (learned positions).
        hidden_dim: width of embeddings and residual streams.
        num_layers: encoder blocks.
        num_decoder_layers: decoder blocks (default: `num_layers`).
        num_heads: attention heads per block (`hidden_dim` must divide evenly).
        intermediate_dim: feed-forward width.
        dropout: on embeddings, attention and feed-forward outputs.
        activation: feed-forward activation.
        layer_norm_epsilon: of every layer norm.
        tie_weights: the decoder's output projection is the token embedding.
        target_vocabulary_size: the decoder scores ids `0 ... target_vocabulary_size - 1`
            only (the tokenizer lists target tokens first); `None`: every id.

    Example:
    >>> backbone = Seq2SeqBackbone(vocabulary_size=50, encoder_sequence_length=8,
    ...     decoder_sequence_length=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32)
    >>> out = backbone({"encoder_token_ids": np.ones((1, 8), "int32"),
    ...                 "encoder_padding_mask": np.ones((1, 8), "int32"),
    ...                 "decoder_token_ids": np.ones((1, 8), "int32"),
    ...                 "decoder_padding_mask": np.ones((1, 8), "int32")})
    >>> out["decoder_sequence_output"].shape
    TensorShape([1, 8, 16])
    """

    def __init__(
        self,
        vocabulary_size,
        encoder_sequence_length,
        decoder_sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        num_decoder_layers=None,
        dropout=0.0,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        tie_weights=True,
        target_vocabulary_size=None,
        dtype=None,
        **kwargs,
    ):
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads}).")
        num_decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
        # === Layers ===
        self.token_embedding = SharedEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim, tie_weights=tie_weights,
            output_vocabulary_size=target_vocabulary_size, embeddings_initializer=_initializer(), dtype=dtype,
            name="token_embedding")
        self.encoder_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=encoder_sequence_length, initializer=_initializer(), dtype=dtype,
            name="encoder_position_embedding")
        self.decoder_position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length=decoder_sequence_length, initializer=_initializer(), dtype=dtype,
            name="decoder_position_embedding")
        self.encoder_embeddings_add = keras.layers.Add(dtype=dtype, name="encoder_embeddings_add")
        self.decoder_embeddings_add = keras.layers.Add(dtype=dtype, name="decoder_embeddings_add")
        self.encoder_embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="encoder_embeddings_dropout")
        self.decoder_embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="decoder_embeddings_dropout")
        block_args = dict(intermediate_dim=intermediate_dim, num_heads=num_heads, dropout=dropout,
                          activation=activation, layer_norm_epsilon=layer_norm_epsilon,
                          kernel_initializer=_initializer(), normalize_first=True, dtype=dtype)
        self.encoder_transformer_layers = [
            keras_hub.layers.TransformerEncoder(name=f"encoder_layer_{i}", **block_args) for i in range(num_layers)
        ]
        self.decoder_transformer_layers = [
            keras_hub.layers.TransformerDecoder(name=f"decoder_layer_{i}", **block_args)
            for i in range(num_decoder_layers)
        ]
        self.encoder_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="encoder_layer_norm")
        self.decoder_layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="decoder_layer_norm")

        # === Functional model ===
        encoder_token_ids = keras.Input(shape=(None,), dtype="int32", name="encoder_token_ids")
        encoder_padding_mask = keras.Input(shape=(None,), dtype="int32", name="encoder_padding_mask")
        decoder_token_ids = keras.Input(shape=(None,), dtype="int32", name="decoder_token_ids")
        decoder_padding_mask = keras.Input(shape=(None,), dtype="int32", name="decoder_padding_mask")

        tokens = self.token_embedding(encoder_token_ids)
        x = self.encoder_embeddings_add((tokens, self.encoder_position_embedding(tokens)))
        x = self.encoder_embeddings_dropout(x)
        for layer in self.encoder_transformer_layers:
            x = layer(x, padding_mask=encoder_padding_mask)
        encoder_output = self.encoder_layer_norm(x)

        tokens = self.token_embedding(decoder_token_ids)
        x = self.decoder_embeddings_add((tokens, self.decoder_position_embedding(tokens)))
        x = self.decoder_embeddings_dropout(x)
        for layer in self.decoder_transformer_layers:
            x = layer(decoder_sequence=x, encoder_sequence=encoder_output,
                      decoder_padding_mask=decoder_padding_mask, encoder_padding_mask=encoder_padding_mask)
        decoder_output = self.decoder_layer_norm(x)
        super().__init__(
            inputs={
                "encoder_token_ids": encoder_token_ids,
                "encoder_padding_mask": encoder_padding_mask,
                "decoder_token_ids": decoder_token_ids,
                "decoder_padding_mask": decoder_padding_mask,
            },
            outputs={"encoder_sequence_output": encoder_output, "decoder_sequence_output": decoder_output},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.encoder_sequence_length = encoder_sequence_length
        self.decoder_sequence_length = decoder_sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.tie_weights = tie_weights
        self.target_vocabulary_size = target_vocabulary_size

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in BACKBONE_ARGS})
        return config


Seq2SeqTokenizer = tokenizer_family(Seq2SeqBackbone, "Seq2SeqTokenizer")


def clean_text(texts):
    """Removes the spaces a WordPiece detokenizer puts between two CJK characters (ideographs, CJK and full-width
    punctuation: `tfllm.config.join_cjk`'s rule, the one causal LMs' text follows too), and those around the text
    (a character model's padding-like spaces before its end token; training targets have none): a TF op."""
    return tf.strings.strip(join_cjk_op(texts))


@keras.saving.register_keras_serializable(package="tfllm")
class Seq2SeqLMPreprocessor(keras_hub.models.Seq2SeqLMPreprocessor):
    """`{"encoder_text", "decoder_text"}` strings -> encoder/decoder ids, next-token labels and weights.

    KerasHub's `Seq2SeqLMPreprocessor` over one tokenizer for both sides
    (tfllm's WordPiece splits Chinese one ideograph per token; the `char`
    tokenizer suits any script). `generate_postprocess` also joins the
    ideographs a WordPiece detokenizer separates.

    Example:
    >>> preprocessor = Seq2SeqLMPreprocessor(tokenizer, encoder_sequence_length=8, decoder_sequence_length=16)
    >>> x, y, weights = preprocessor({"encoder_text": ["你好"], "decoder_text": ["hello"]})
    """

    backbone_cls = Seq2SeqBackbone
    tokenizer_cls = Seq2SeqTokenizer

    def generate_postprocess(self, x):
        return python_strings(clean_text(super().generate_postprocess(x)))

    def get_config(self):
        # KerasHub 0.32's Seq2SeqLMPreprocessor does not save its lengths; a preset must keep them.
        config = super().get_config()
        config.update(encoder_sequence_length=self.encoder_sequence_length,
                      decoder_sequence_length=self.decoder_sequence_length)
        return config


@keras.saving.register_keras_serializable(package="tfllm")
class Seq2SeqLM(keras_hub.models.Seq2SeqLM):
    """Translation model: encoder–decoder logits, cached generation with any KerasHub sampler.

    Call it on `{"encoder_token_ids", "encoder_padding_mask",
    "decoder_token_ids", "decoder_padding_mask"}` for logits of shape
    `[batch, decoder_length, vocabulary_size]`; train with `fit()` on the
    preprocessor's `(x, y, sample_weight)`; translate with `generate()`
    (strings in and out when a preprocessor is attached) or
    `tfllm.translation.translate`.

    Args:
        backbone: a `Seq2SeqBackbone`.
        preprocessor: a `Seq2SeqLMPreprocessor` (or None).

    Example:
    >>> lm = Seq2SeqLM(Seq2SeqBackbone(...), preprocessor=preprocessor)
    >>> lm.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=4))
    >>> lm.generate(["你好"], max_length=16)
    """

    backbone_cls = Seq2SeqBackbone
    preprocessor_cls = Seq2SeqLMPreprocessor

    def __init__(self, backbone, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        inputs = backbone.input
        hidden_states = backbone(inputs)["decoder_sequence_output"]
        outputs = backbone.token_embedding(hidden_states, reverse=True)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

    @classmethod
    def from_args(cls, preprocessor=None, **kwargs):
        """Builds the task from flat backbone arguments (preset dicts); extra keys are ignored."""
        backbone_kwargs = {k: v for k, v in kwargs.items() if k in BACKBONE_ARGS or k == "dtype"}
        return cls(Seq2SeqBackbone(**backbone_kwargs), preprocessor=preprocessor)

    def call_encoder(self, token_ids, padding_mask):
        """The encoder's output `[batch, source_length, hidden_dim]`."""
        backbone = self.backbone
        tokens = backbone.token_embedding(token_ids)
        x = backbone.encoder_embeddings_add((tokens, backbone.encoder_position_embedding(tokens)))
        x = backbone.encoder_embeddings_dropout(x)
        for layer in backbone.encoder_transformer_layers:
            x = layer(x, padding_mask=padding_mask)
        return backbone.encoder_layer_norm(x)

    def call_decoder_with_cache(self, encoder_hidden_states, encoder_padding_mask, decoder_token_ids,
                                self_attention_cache, self_attention_cache_update_index,
                                cross_attention_cache, cross_attention_cache_update_index=None):
        """Decoder positions `self_attention_cache_update_index...` against the caches (BART's contract).

        Caches have shape `[batch, num_decoder_layers, 2, length, num_heads,
        head_dim]`. `cross_attention_cache_update_index=0` computes the
        cross-attention keys/values from `encoder_hidden_states`; `None`
        reuses them. Returns `(logits, hidden_states, self_attention_cache,
        cross_attention_cache)`.
        """
        layers = range(self.backbone.num_decoder_layers)
        logits, hidden_states, self_caches, cross_caches = self.call_decoder_with_layer_caches(
            encoder_hidden_states, encoder_padding_mask, decoder_token_ids,
            [self_attention_cache[:, i, ...] for i in layers], self_attention_cache_update_index,
            [cross_attention_cache[:, i, ...] for i in layers], cross_attention_cache_update_index)
        self_attention_cache = ops.stack(self_caches, axis=1)
        if cross_attention_cache_update_index is not None:
            cross_attention_cache = ops.stack(cross_caches, axis=1)
        return logits, hidden_states, self_attention_cache, cross_attention_cache

    def call_decoder_with_layer_caches(self, encoder_hidden_states, encoder_padding_mask, decoder_token_ids,
                                       self_caches, self_attention_cache_update_index,
                                       cross_caches, cross_attention_cache_update_index=None):
        """`call_decoder_with_cache` with lists of per-layer `[batch, 2, length, num_heads, head_dim]` caches.

        The TFLite export runs this: stacking the layers' caches makes a 6-D
        tensor, and TensorFlow's own TFLite kernels take at most 5 dimensions.
        Returns `(logits, hidden_states, self_caches, cross_caches)`.
        """
        backbone = self.backbone
        tokens = backbone.token_embedding(decoder_token_ids)
        positions = backbone.decoder_position_embedding(tokens, start_index=self_attention_cache_update_index)
        x = backbone.decoder_embeddings_add((tokens, positions))
        x = backbone.decoder_embeddings_dropout(x)
        next_selfs, next_crosses = [], []
        for layer, self_cache, cross_cache in zip(backbone.decoder_transformer_layers, self_caches, cross_caches):
            x, next_self, next_cross = layer(
                decoder_sequence=x,
                encoder_sequence=encoder_hidden_states,
                encoder_padding_mask=encoder_padding_mask,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=self_attention_cache_update_index,
                cross_attention_cache=cross_cache,
                cross_attention_cache_update_index=cross_attention_cache_update_index,
            )
            next_selfs.append(next_self)
            next_crosses.append(next_cross)
        hidden_states = backbone.decoder_layer_norm(x)
        logits = backbone.token_embedding(hidden_states, reverse=True)
        return logits, hidden_states, next_selfs, next_crosses

    def _build_cache(self, encoder_token_ids, encoder_padding_mask, decoder_token_ids):
        """Encodes the source once and seeds both caches with one pass over the decoder buffer."""
        backbone = self.backbone
        encoder_hidden_states = self.call_encoder(encoder_token_ids, encoder_padding_mask)
        batch_size = ops.shape(encoder_token_ids)[0]
        head_dim = backbone.hidden_dim // backbone.num_heads
        shape = [batch_size, backbone.num_decoder_layers, 2, ops.shape(decoder_token_ids)[1], backbone.num_heads,
                 head_dim]
        self_cache = ops.zeros(shape, dtype=self.compute_dtype)
        shape[3] = ops.shape(encoder_token_ids)[1]
        cross_cache = ops.zeros(shape, dtype=self.compute_dtype)
        _, hidden_states, self_cache, cross_cache = self.call_decoder_with_cache(
            encoder_hidden_states, encoder_padding_mask, decoder_token_ids, self_cache, 0, cross_cache, 0)
        return hidden_states, encoder_hidden_states, self_cache, cross_cache

    def generate_step(self, inputs, stop_token_ids=None, sampler=None, adjust_logits=None):
        """KerasHub's compilable generation step (encoder once, cached decoder steps).

        `inputs`: `encoder_token_ids`/`encoder_padding_mask` and the decoder
        prompt `decoder_token_ids`/`decoder_padding_mask` (`[BOS]` then
        padding up to the output length). `sampler` (default: the one
        `compile` set) lets a caller decode with its own sampler without
        storing it on the model. `adjust_logits(logits, prompt, index)`, if
        given, returns the scores the sampler sees for position `index`
        (shallow fusion with a language model: `tfllm.translation`).
        """
        encoder_token_ids, encoder_padding_mask = inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
        decoder_token_ids, decoder_padding_mask = inputs["decoder_token_ids"], inputs["decoder_padding_mask"]
        hidden_states, encoder_hidden_states, self_cache, cross_cache = self._build_cache(
            encoder_token_ids, encoder_padding_mask, decoder_token_ids)
        row_lengths = ops.sum(ops.cast(decoder_padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)

        def next(prompt, cache, index):
            cache_index = index - 1
            batch_size = ops.shape(prompt)[0]
            token = ops.slice(prompt, [0, cache_index], [batch_size, 1])
            # The encoder tensors ride in the cache (as BART's do), so the beam
            # sampler repeats them per beam along with the key/value caches.
            self_cache, encoder_hidden_states, encoder_padding_mask, cross_cache = cache
            logits, hidden_states, self_cache, _ = self.call_decoder_with_cache(
                encoder_hidden_states, encoder_padding_mask, token, self_cache, cache_index, cross_cache, None)
            logits = ops.squeeze(logits, axis=1)
            if adjust_logits is not None:
                logits = adjust_logits(logits, prompt, index)
            return (logits, ops.squeeze(hidden_states, axis=1),
                    (self_cache, encoder_hidden_states, encoder_padding_mask, cross_cache))

        decoder_token_ids = (sampler or self.sampler)(
            next=next,
            prompt=decoder_token_ids,
            cache=(self_cache, encoder_hidden_states, encoder_padding_mask, cross_cache),
            index=index,
            mask=decoder_padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        return {"decoder_token_ids": decoder_token_ids,
                "decoder_padding_mask": mask_after_stop(decoder_token_ids, decoder_padding_mask, stop_token_ids)}


def output_text(tokenizer, token_ids, prompt_length=1):
    """Strings from decoded `[batch, width]` ids (TF ops, so exports run it in the graph).

    Keeps positions from `prompt_length` on, up to the first end token, drops
    every special id, detokenizes and joins ideographs (`clean_text`).
    """
    token_ids = tf.convert_to_tensor(token_ids)
    end_id = int(tokenizer.end_token_id)
    special_ids = sorted({int(i) for i in tokenizer.special_token_ids if i is not None})
    positions = tf.range(tf.shape(token_ids)[1])[None, :]
    new = positions >= prompt_length
    ended = tf.cumsum(tf.cast(new & tf.equal(token_ids, end_id), tf.int32), axis=-1) > 0
    special = tf.reduce_any(token_ids[..., None] == tf.constant(special_ids, token_ids.dtype), axis=-1)
    text = tokenizer.detokenize(tf.ragged.boolean_mask(token_ids, new & ~ended & ~special))
    if not tf.is_tensor(text):  # eager KerasHub detokenizers hand back Python lists
        text = tf.constant(text, tf.string)
    if text.shape.rank == 2:  # some detokenizers keep a trailing axis
        text = tf.squeeze(text, -1)
    return clean_text(text)
