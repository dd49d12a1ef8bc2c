"""The encoder text classifier: token ids in, class probabilities out."""

import keras
import keras_hub
import numpy as np


def bigram_ids(token_ids, vocabulary_size, bigram_buckets):
    """Hashed-bigram ids of `[batch, length]` token ids, and their mask.

    Bigram ids are `(previous * vocabulary_size + id) % bigram_buckets`, integer
    ops only, so they run the same in the model, in a SavedModel and in TFLite
    (int32 overflow wraps and the floor-mod keeps ids in range).
    A bigram counts where both tokens are real (not padding).
    """
    previous = keras.ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
    bigrams = (previous * vocabulary_size + token_ids) % bigram_buckets
    mask = keras.ops.logical_and(keras.ops.not_equal(token_ids, 0), keras.ops.not_equal(previous, 0))
    return bigrams, mask


def wide_ngram_ids(token_ids, vocabulary_size, bigram_buckets):
    """Ids into the wide path's table (unigrams, then bigram buckets offset by
    the vocabulary size) and their mask, both `[batch, 2 * length]`."""
    bigrams, bigram_mask = bigram_ids(token_ids, vocabulary_size, bigram_buckets)
    ids = keras.ops.concatenate([token_ids, bigrams + vocabulary_size], axis=1)
    return ids, keras.ops.concatenate([keras.ops.not_equal(token_ids, 0), bigram_mask], axis=1)


def _class_ids(labels, num_classes):
    labels = keras.ops.convert_to_numpy(labels)
    return (labels[:, 0] > 0.5).astype(int) if num_classes == 2 else labels.argmax(-1)


@keras.saving.register_keras_serializable(package="tfllm")
class LogitBlend(keras.layers.Layer):
    """`encoder_scale * encoder_logits + wide_scale * wide_logits + bias`.

    Starts as the encoder's logits alone (scales 1 and 0, bias 0).
    """

    def build(self, encoder_logits_shape, wide_logits_shape):
        self.encoder_scale = self.add_weight(shape=(), initializer="ones", name="encoder_scale")
        self.wide_scale = self.add_weight(shape=(), initializer="zeros", name="wide_scale")
        self.bias = self.add_weight(shape=(encoder_logits_shape[-1],), initializer="zeros", name="bias")

    def call(self, encoder_logits, wide_logits):
        return self.encoder_scale * encoder_logits + self.wide_scale * wide_logits + self.bias


def _fit_blend(encoder_logits, wide_logits, labels, l2=1e-3, iterations=50):
    """`LogitBlend` weights by Newton's method: the logistic (sigmoid for one
    unit, softmax for several) regression of `labels` on the two logits, with a
    small L2 penalty on the two scales so that separable data still has one
    optimum. Convex, so it converges in a few steps, to the same weights
    however the inputs were computed (one device or several)."""
    d, w, y = (np.asarray(a, "float64") for a in (encoder_logits, wide_logits, labels))
    n, units = d.shape
    # z = J @ theta with theta = (encoder_scale, wide_scale, bias...): J is [n, units, units + 2].
    jac = np.concatenate([d[..., None], w[..., None], np.broadcast_to(np.eye(units), (n, units, units))], axis=2)
    penalty = np.r_[l2, l2, np.zeros(units)]

    def probabilities_and_loss(theta):  # the loss includes the penalty
        z = jac @ theta
        if units == 1:
            p, loss = 1 / (1 + np.exp(-z)), np.mean(np.logaddexp(0, z) - y * z)
        else:
            z = z - z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            p, loss = np.exp(log_p), -np.mean((y * log_p).sum(axis=1))
        return p, loss + 0.5 * penalty @ theta**2

    theta = np.r_[1.0, 0.0, np.zeros(units)]
    for _ in range(iterations):
        p, loss = probabilities_and_loss(theta)
        gradient = np.einsum("nuk,nu->k", jac, p - y) / n + penalty * theta
        if np.abs(gradient).max() < 1e-9:
            break
        if units == 1:
            hessian = np.einsum("nuk,nu,nul->kl", jac, p * (1 - p), jac) / n
        else:
            s = np.einsum("nu,uv->nuv", p, np.eye(units)) - p[:, :, None] * p[:, None, :]
            hessian = np.einsum("nuk,nuv,nvl->kl", jac, s, jac) / n
        step = np.linalg.lstsq(hessian + np.diag(penalty), gradient, rcond=None)[0]
        t = 1.0  # backtracking keeps every step downhill
        while t > 1e-6 and probabilities_and_loss(theta - t * step)[1] > loss:
            t /= 2
        theta = theta - t * step
    return [np.float32(theta[0]), np.float32(theta[1]), theta[2:].astype("float32")]


def _masked_mean(x, mask):
    # By hand rather than GlobalAveragePooling1D: an empty text (all padding)
    # must give a valid average, not 0/0 = NaN.
    weights = keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)
    return keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)


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
        wide_bigram_buckets: if set, a "wide" linear path beside the encoder
            (wide & deep): one weight per class for every unigram id and for
            each of this many hashed bigram buckets, summed over the text and
            added to the output logits. It costs one float per bucket and
            class, so it can afford ~16x more buckets (fewer collisions) than
            the bigram embeddings. `fit` leaves it out (frozen, zero weight);
            `fit_wide_path` then sets it to naive-Bayes log-count ratios of
            the training texts (as in NBSVM, Wang & Manning 2012, a strong
            bag-of-words model of short sentiment texts) and blends it in.

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
        wide_bigram_buckets=None,
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
        x = _masked_mean(x, padding_mask)
        units = 1 if num_classes == 2 else num_classes
        if bigram_buckets:
            bigrams, bigram_mask = bigram_ids(token_ids, vocabulary_size, bigram_buckets)
            b = keras.layers.Embedding(bigram_buckets, hidden_dim, name="bigram_embedding")(bigrams)
            if embedding_dropout:
                b = keras.layers.Dropout(embedding_dropout, noise_shape=(None, sequence_length, 1), name="bigram_dropout")(b)
            x = x + _masked_mean(b, bigram_mask)
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
        activation = "sigmoid" if units == 1 else "softmax"
        if wide_bigram_buckets:
            # Frozen: its weights are naive-Bayes counts (`fit_wide_path`), and
            # the blend starts as (1 * encoder + 0 * wide), so `fit` trains the
            # encoder exactly as without the wide path.
            ids, masks = wide_ngram_ids(token_ids, vocabulary_size, wide_bigram_buckets)
            w = keras.layers.Embedding(
                vocabulary_size + wide_bigram_buckets, units, embeddings_initializer="zeros", trainable=False,
                name="wide_ngrams",
            )(ids)
            wide_logits = keras.ops.sum(w * keras.ops.expand_dims(keras.ops.cast(masks, w.dtype), -1), axis=1)
            logits = keras.layers.Dense(units, name="logits")(x)
            logits = LogitBlend(trainable=False, name="blend")(logits, wide_logits)
            outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(logits)
        else:
            outputs = keras.layers.Dense(units, activation=activation, dtype="float32", name="probabilities")(x)
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
        self.wide_bigram_buckets = wide_bigram_buckets

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
            "wide_bigram_buckets": self.wide_bigram_buckets,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def fit_wide_path(self, train_data, val_data, smoothing=1.0):
        """Sets the wide path from `train_data` and blends it in on `val_data`.

        Both are `tf.data.Dataset`s of `(token_ids, labels)` batches, as
        `model.fit` takes them.
        Call it after `fit`. First the wide weights become naive-Bayes
        log-count ratios of the training texts (each text counts once per
        n-gram; n-grams never seen get weight 0). They cannot be blended in by
        `fit` itself: on the texts they were counted from they look far more
        certain than on new ones. So the blend (a weight for each logit and a
        bias per class: stacking, Platt-style) is fitted on the validation
        split, with the rest of the model fixed.
        """
        wide = self.get_layer("wide_ngrams")
        counts = np.zeros((self.num_classes, wide.input_dim))
        for token_ids, labels in train_data:
            ids, mask = wide_ngram_ids(token_ids, self.vocabulary_size, self.wide_bigram_buckets)
            ids, mask = keras.ops.convert_to_numpy(ids), keras.ops.convert_to_numpy(mask)
            for row, row_mask, c in zip(ids, mask, _class_ids(labels, self.num_classes)):
                counts[c, np.unique(row[row_mask])] += 1
        # Normalised over the n-grams seen in training, not the whole table:
        # smoothing mass spread over empty hash buckets would drop MNB's
        # per-feature length term and bias every text towards the larger class.
        seen = counts.sum(axis=0) > 0
        log_p = np.log(counts + smoothing) - np.log(counts.sum(axis=1, keepdims=True) + smoothing * seen.sum())
        log_p -= log_p.mean(axis=0)
        log_p[:, ~seen] = 0.0
        wide.set_weights([(log_p[1:] - log_p[:1]).T if self.num_classes == 2 else log_p.T])

        blend = self.get_layer("blend")
        parts = keras.Model(self.input, blend.input)  # (encoder logits, wide logits)
        encoder_logits, wide_logits = parts.predict(val_data.map(lambda x, y: x), verbose=0)
        labels = np.concatenate([keras.ops.convert_to_numpy(y) for _, y in val_data])
        blend.set_weights(_fit_blend(keras.ops.convert_to_numpy(encoder_logits), keras.ops.convert_to_numpy(wide_logits), labels))

    def probabilities(self, token_ids, training=False):
        """Class probabilities `[batch, num_classes]`, also for the one-sigmoid binary head."""
        outputs = self(token_ids, training=training)
        if self.num_classes == 2:
            return keras.ops.concatenate([1.0 - outputs, outputs], axis=-1)
        return outputs
