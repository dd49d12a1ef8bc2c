"""tfllm's text classifier: a KerasHub `TextClassifier` task over an `EncoderBackbone`."""

import functools

import keras
import keras_hub
import numpy as np

from tfllm.datasets.text import (FULLWIDTH_CAPITALS, LOWERCASE_LIMIT, WORD_BIGRAM_SEED, WORD_CHARACTERS, WORD_LENGTH,
                                 WORD_SEED, lowercase_table)
from tfllm.errors import UserInputError
from tfllm.models.encoder_backbone import EncoderBackbone
from tfllm.models.preprocessors import TextClassifierPreprocessor


def bigram_ids(token_ids, padding_mask, vocabulary_size, bigram_buckets):
    """Hashed-bigram ids of `[batch, length]` token ids, and their mask.

    Bigram ids are `(previous * vocabulary_size + id) % bigram_buckets`, integer
    ops only, so they run the same in the model, in a SavedModel and in TFLite
    (int32 overflow wraps and the floor-mod keeps ids in range).
    A bigram counts where both tokens are real (not padding).
    """
    mask = keras.ops.cast(padding_mask, "bool")
    previous = keras.ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
    previous_mask = keras.ops.pad(mask[:, :-1], [[0, 0], [1, 0]])
    bigrams = (previous * vocabulary_size + token_ids) % bigram_buckets
    return bigrams, keras.ops.logical_and(mask, previous_mask)


def wide_ngram_ids(token_ids, padding_mask, vocabulary_size, bigram_buckets):
    """Ids into the wide path's table (unigrams, then bigram buckets offset by
    the vocabulary size) and their mask, both `[batch, 2 * length]`."""
    bigrams, bigram_mask = bigram_ids(token_ids, padding_mask, vocabulary_size, bigram_buckets)
    ids = keras.ops.concatenate([token_ids, bigrams + vocabulary_size], axis=1)
    return ids, keras.ops.concatenate([keras.ops.cast(padding_mask, "bool"), bigram_mask], axis=1)


# Character n-grams: a polynomial hash of each n-gram's code points, reduced modulo a prime number of
# buckets at every step, so that no intermediate value passes 2**31 ((buckets - 1) * 4093 + 0x10FFFF < 2**31)
# and int32 ops give the same ids in Keras, XLA, a SavedModel, TFLite and NumPy, with no wrap-around.
# Hence at most MAX_HASH_BUCKETS buckets (the recipe's 524,287 = 2**19 - 1 is a prime just below).
CHAR_HASH_MULTIPLIER = 4093
MAX_HASH_BUCKETS = (2**31 - 1 - 0x10FFFF) // CHAR_HASH_MULTIPLIER + 1
SPACE = 32
CHAR_NGRAM_ORDERS = (2, 3, 4, 5)


def _lowercase(c):
    """`[batch, length]` int32 code points lowercased as `tfllm.datasets.text.lowercase_table` says ("É" -> "é",
    "Ł" -> "ł", "Ж" -> "ж", "Ａ" -> "ａ")."""
    ops = keras.ops
    table = ops.convert_to_tensor(lowercase_table())
    lowered = ops.where(c < LOWERCASE_LIMIT, ops.take(table, ops.clip(c, 0, LOWERCASE_LIMIT - 1)), c)
    low, high = FULLWIDTH_CAPITALS
    return ops.where(ops.logical_and(c >= low, c <= high), c + 32, lowered)


def char_ngram_ids(code_points, buckets, orders=CHAR_NGRAM_ORDERS):
    """Hashed character n-gram ids of `[batch, length]` code points (0 = padding), and their mask.

    The n-grams of each word with the spaces around it (scikit-learn's `char_wb`: " good " gives
    " g", "go", ..., "od ", " goo", ...): every window of n code points with no space inside it and
    at least one non-space; tabs, newlines and padding count as spaces, and a space is put before
    the text. Letters are lowercased as `_lowercase` does. Returns `[batch, len(orders) * (length + 1)]`
    ids in `0 .. buckets - 1`, each `h = n; h = (h * 4093 + c) % buckets` over the window's code points.
    """
    ops = keras.ops
    c = ops.cast(code_points, "int32")
    is_space = functools.reduce(ops.logical_or, [ops.equal(c, 0), ops.equal(c, SPACE),
                                                 ops.logical_and(ops.greater_equal(c, 9), ops.less_equal(c, 13))])
    c = ops.pad(ops.where(is_space, SPACE, _lowercase(c)), [[0, 0], [1, 0]], constant_values=SPACE)
    ids, masks = [], []
    for n in orders:
        padded = ops.pad(c, [[0, 0], [0, n - 1]], constant_values=SPACE)
        window = [padded[:, k:k - (n - 1) or None] for k in range(n)]  # each `length + 1` long
        h = ops.full_like(c, n)
        for x in window:
            h = (h * CHAR_HASH_MULTIPLIER + x) % buckets
        spaces = [ops.equal(x, SPACE) for x in window]
        mask = ops.logical_not(functools.reduce(ops.logical_and, spaces))  # not all spaces ...
        if n > 2:  # ... and none inside
            mask = ops.logical_and(mask, ops.logical_not(functools.reduce(ops.logical_or, spaces[1:-1])))
        ids.append(h)
        masks.append(mask)
    return keras.ops.concatenate(ids, axis=1), keras.ops.concatenate(masks, axis=1)


def word_ngram_ids(code_points, buckets):
    """Hashed word unigram and bigram ids of `[batch, length]` code points (0 = padding), and their mask.

    The words are scikit-learn's `CountVectorizer` tokens (runs of two or more word characters,
    `WORD_CHARACTERS`, lowercased as `_lowercase` does); a bigram is two words in a row of that list.
    A word's id is `h = 1; h = (h * 4093 + c) % buckets` over its first `WORD_LENGTH` code points, a
    bigram's `h = 7; h = (h * 4093 + id) % buckets` over its two words' ids. Returns `[batch, 2 * length - 1]`
    ids (the words in order, then the bigrams) and a mask of those that exist.
    """
    ops = keras.ops
    c = _lowercase(ops.cast(code_points, "int32"))
    word = functools.reduce(ops.logical_or, [ops.logical_and(ops.greater_equal(c, lo), ops.less_equal(c, hi))
                                             for lo, hi in WORD_CHARACTERS])
    # Each position's hash of the run of word characters that starts there (its first WORD_LENGTH).
    tail = WORD_LENGTH - 1
    padded_c = ops.pad(c, [[0, 0], [0, tail]])
    padded_word = ops.pad(word, [[0, 0], [0, tail]], constant_values=False)
    h, alive = ops.full_like(c, WORD_SEED), word
    for k in range(WORD_LENGTH):
        if k:
            alive = ops.logical_and(alive, padded_word[:, k:k - tail or None])
        h = ops.where(alive, (h * CHAR_HASH_MULTIPLIER + padded_c[:, k:k - tail or None]) % buckets, h)
    before = ops.pad(word[:, :-1], [[0, 0], [1, 0]], constant_values=False)
    after = ops.pad(word[:, 1:], [[0, 0], [0, 1]], constant_values=False)
    starts = functools.reduce(ops.logical_and, [word, ops.logical_not(before), after])  # two characters or more
    # The words in order: a stable sort of the start positions before every other position.
    positions = ops.cumsum(ops.ones_like(c), axis=1) - 1  # (the length is unknown while the model is built)
    order = ops.argsort(ops.where(starts, positions, positions + (1 << 24)), axis=1)
    words = ops.take_along_axis(h, order, axis=1)
    count = ops.sum(ops.cast(starts, "int32"), axis=1, keepdims=True)
    bigrams = ((WORD_BIGRAM_SEED * CHAR_HASH_MULTIPLIER + words[:, :-1]) % buckets * CHAR_HASH_MULTIPLIER
               + words[:, 1:]) % buckets
    return (ops.concatenate([words, bigrams], axis=1),
            ops.concatenate([ops.less(positions, count), ops.less(positions[:, 1:], count)], axis=1))


NGRAM_IDS = {"char": char_ngram_ids, "word": word_ngram_ids}


@keras.saving.register_keras_serializable(package="tfllm")
class NgramIds(keras.layers.Layer):
    """`[batch, length]` code points -> a view's hashed n-gram ids and their mask: `char_ngram_ids` for
    `kind="char"`, `word_ngram_ids` for `"word"`; in training none (`[batch, 0]`), as `LogitBlend` passes
    the encoder's logits alone there.

    One layer, where the functions' ~190 Keras operations on the model's inputs were each a node that
    the functional model runs in Python one by one, in every trace (the train step's too, which
    TensorFlow then pruned them from) and every eager call. It has no weights, so runs saved with
    those operations load into it as they were.
    """

    def __init__(self, kind, buckets, **kwargs):
        super().__init__(**kwargs)
        if kind not in NGRAM_IDS:
            raise ValueError(f"kind must be one of {', '.join(NGRAM_IDS)}, not {kind!r}")
        self.kind, self.buckets = kind, buckets

    def call(self, code_points, training=None):
        if training:
            none = keras.ops.zeros_like(code_points[:, :0])
            return keras.ops.cast(none, "int32"), keras.ops.cast(none, "bool")
        return NGRAM_IDS[self.kind](code_points, self.buckets)

    def compute_output_spec(self, code_points, training=None):
        # Without it Keras infers the output by tracing `call` in a scratch graph each time a model is built
        # (trained, loaded, exported): its ~190 operations took most of building a classifier with views.
        batch, length = code_points.shape
        if training:
            width = 0
        elif length is None:
            width = None
        else:
            width = len(CHAR_NGRAM_ORDERS) * (length + 1) if self.kind == "char" else 2 * length - 1
        return keras.KerasTensor((batch, width), "int32"), keras.KerasTensor((batch, width), "bool")

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "buckets": self.buckets}


def eager_batch_size(model):
    """Rows per eager call of `model` where tfllm computes its outputs over many texts (predictions, and a
    run's views and n-gram ids over a split): at least 256, and for small models more, up to 2,048, as many as
    keep a `[rows, sequence_length, hidden_dim]` activation within 2**22 floats (16 MB); fewer (16 at least)
    for many classes, whose n-gram lookups grow with them.

    Eagerly the cost is mostly per op, not per row: a `default` run scored 11,000 texts in 6.4 s at 256 rows
    a call and 2.6 s at 2,048, the same probabilities (medians, `benchmarks/probe_eager_batch.py`). A traced
    `predict` of the views spent 1.1-1.4 s, most of it tracing (the `tiny` and `default` presets), where the
    eager calls over a validation split take 0.1-0.4 s (docs/benchmarks.md, "training-speed-stop60").
    """
    preprocessor = getattr(model, "preprocessor", None)
    length = getattr(preprocessor, "sequence_length", None)
    width = getattr(getattr(model, "backbone", None), "hidden_dim", None)
    if not (length and width):
        return 256
    rows = min(2048, max(256, 2**22 // (length * width)))
    # The n-gram paths look up a row of `units` (the classes; 1 for two) per n-gram id: a `[rows, ids, units]`
    # gather. With 200 classes, `tiny`'s ~1,500 ids a text and 2,048 rows, scoring 2,000 texts peaked at 7.2 GB;
    # kept within 2**25 floats (128 MB), 1.2 GB, in 3.2 s instead of 2.3 s (/tmp probe, an untrained model).
    units = getattr(model, "num_classes", 2)
    units = 1 if units <= 2 else units
    chars = (getattr(preprocessor, "char_length", None) or 0) + 1
    ids = 2 * length + (len(CHAR_NGRAM_ORDERS) * chars if getattr(model, "char_ngram_buckets", None) else 0) \
        + (2 * chars if getattr(model, "word_ngram_buckets", None) else 0)
    return int(max(16, min(rows, 2**25 // (ids * units))))


def _eager_batches(model, data, batch_size):
    """`(outputs, labels)` as NumPy for each `batch_size` rows of `data`'s `(inputs, labels)` batches, `model`
    called eagerly on them."""
    for x, y in data.rebatch(batch_size):
        outputs = keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))
        yield outputs, keras.ops.convert_to_numpy(y)


def _naive_bayes_table(counts, smoothing=1.0):
    """A frozen n-gram table from `counts[class, id]` (how many training texts of each class hold each id):
    naive-Bayes log-count ratios (`[ids, 1]`, positive over negative, for two classes) or centred
    log-probabilities (`[ids, classes]`), 0 where no training text held the id (NBSVM, Wang & Manning 2012)."""
    # Normalised over the n-grams seen in training, not the whole table:
    # smoothing mass spread over empty hash buckets would drop MNB's
    # per-feature length term and bias every text towards the larger class.
    seen = counts.sum(axis=0) > 0
    log_p = np.log(counts + smoothing) - np.log(counts.sum(axis=1, keepdims=True) + smoothing * seen.sum())
    log_p -= log_p.mean(axis=0)
    log_p[:, ~seen] = 0.0
    return ((log_p[1:] - log_p[:1]).T if len(counts) == 2 else log_p.T).astype("float32")


def _class_ids(labels):
    return keras.ops.convert_to_numpy(labels).astype(int).reshape(-1)


@keras.saving.register_keras_serializable(package="tfllm")
class LogitBlend(keras.layers.Layer):
    """`encoder_scale * encoder_logits + wide_scale * wide_logits + bias [+ char_scale * char_logits]
    [+ word_scale * word_logits]`.

    Starts as the encoder's logits alone (scales 1 and 0, bias 0). The character
    and word views' inputs and scales exist only in models that have them (runs
    saved before them load as they were); the weights are in that order.

    In training it passes the encoder's logits alone, whatever its weights: the
    n-gram tables are frozen and set after `fit`, from the training texts, on
    which their logits look far more certain than on new ones (`fit_wide_path`
    sets them, then fits this blend on the validation split, then counts that
    split into them too). So `fit` trains the
    encoder as it would without them, and the views compute no ids there (`NgramIds`).
    """

    def build(self, encoder_logits_shape, wide_logits_shape, char_logits_shape=None, word_logits_shape=None):
        self.encoder_scale = self.add_weight(shape=(), initializer="ones", name="encoder_scale")
        self.wide_scale = self.add_weight(shape=(), initializer="zeros", name="wide_scale")
        self.bias = self.add_weight(shape=(encoder_logits_shape[-1],), initializer="zeros", name="bias")
        if char_logits_shape is not None:
            self.char_scale = self.add_weight(shape=(), initializer="zeros", name="char_scale")
        if word_logits_shape is not None:
            self.word_scale = self.add_weight(shape=(), initializer="zeros", name="word_scale")

    def call(self, encoder_logits, wide_logits, char_logits=None, word_logits=None, training=None):
        if training:
            return encoder_logits
        logits = self.encoder_scale * encoder_logits + self.wide_scale * wide_logits + self.bias
        if char_logits is not None:
            logits = logits + self.char_scale * char_logits
        return logits if word_logits is None else logits + self.word_scale * word_logits


def _fit_blend(logits, labels, l2=1e-3, iterations=50, class_weight=None):
    """`LogitBlend` weights by Newton's method: the logistic (sigmoid for one
    unit, softmax for several) regression of `labels` on the k `[n, units]`
    logits of `logits` (encoder, wide path, [characters], [words]), with a small L2
    penalty on the k scales so that separable data still has one optimum.
    Convex, so it converges in a few steps, to the same weights however the
    inputs were computed (one device or several). `class_weight` (`{class id:
    weight}`, as `fit` takes it) weighs each row's loss by its class. Returns
    the layer's weights in its order: encoder and wide scales, bias, [character scale], [word scale].

    A class that no row of `labels` has (several classes; a rare one left out of the validation split) is not
    fitted (its bias would run to minus infinity and the class never be predicted again): it gets the mean bias
    of the fitted classes."""
    views = [np.asarray(a, "float64") for a in logits]
    k = len(views)
    n, units = views[0].shape
    labels = np.asarray(labels).astype(int).reshape(-1)
    y = labels[:, None].astype("float64") if units == 1 else np.eye(units)[labels]
    rows = np.ones(n) if class_weight is None else np.array([class_weight.get(c, 1.0) for c in labels], "float64")
    rows = rows / rows.mean()
    # z = V @ scales + bias with theta = (k scales, bias...): V is [n, units, k]; the bias's Jacobian is the
    # identity, so each product below is written per block, without an [n, units, units] array.
    stacked = np.stack(views, axis=2)
    flat = stacked.reshape(n * units, k)
    penalty = np.r_[np.full(k, l2), np.zeros(units)]
    fixed = np.r_[np.zeros(k, bool), ~np.isin(np.arange(units), labels) if units > 1 else np.zeros(1, bool)]

    def probabilities_and_loss(theta):  # the loss includes the penalty
        z = stacked @ theta[:k] + theta[k:]
        if units == 1:
            p, loss = np.exp(-np.logaddexp(0, -z)), np.mean(rows[:, None] * (np.logaddexp(0, z) - y * z))
        else:
            z = z - z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            p, loss = np.exp(log_p), -np.mean(rows * (y * log_p).sum(axis=1))
        return p, loss + 0.5 * penalty @ theta**2

    def transposed_jacobian_times(r):  # J^T r for each row: [n, k + units]
        return np.concatenate([(stacked * r[:, :, None]).sum(axis=1), r], axis=1)

    theta = np.r_[1.0, np.zeros(k - 1), np.zeros(units)]
    for _ in range(iterations):
        p, loss = probabilities_and_loss(theta)
        gradient = transposed_jacobian_times(rows[:, None] * (p - y)).sum(axis=0) / n + penalty * theta
        if np.abs(gradient).max() < 1e-9:
            break
        # Each row's softmax Hessian is diag(p) - p p^T (p (1 - p) for one sigmoid unit), so the sum over rows
        # is J^T diag(w) J - sum_n w_n (J^T p)(J^T p)^T. Before, one einsum over [n, units, units] took 35 s per
        # step at 88 classes.
        w = rows[:, None] * (p if units > 1 else p * (1 - p))
        hessian = np.block([[flat.T @ (flat * w.reshape(-1, 1)), (stacked * w[:, :, None]).sum(axis=0).T],
                            [(stacked * w[:, :, None]).sum(axis=0), np.diag(w.sum(axis=0))]])
        if units > 1:
            jp = transposed_jacobian_times(p)
            hessian -= jp.T @ (rows[:, None] * jp)
        hessian /= n
        gradient[fixed] = 0
        hessian[fixed, :] = hessian[:, fixed] = 0
        step = np.linalg.lstsq(hessian + np.diag(penalty), gradient, rcond=None)[0]  # 0 for the fixed biases
        t = 1.0  # backtracking keeps every step downhill
        while t > 1e-6 and probabilities_and_loss(theta - t * step)[1] > loss:
            t /= 2
        theta = theta - t * step
    if fixed.any():
        # The softmax ignores a constant added to every bias, so the fitted ones all rose together (~19 on a
        # 30-class run) while the unseen classes' stayed 0: those were never predicted, even on their own
        # training texts (probability 1e-11). Given the seen classes' mean bias, they stand as a typical class.
        theta[k:][fixed[k:]] = theta[k:][~fixed[k:]].mean()
    scales = [np.float32(t) for t in theta[:k]]
    return scales[:2] + [theta[k:].astype("float32")] + scales[2:]


def class_probabilities(model, inputs):
    """`[batch, num_classes]` float32 probabilities of any classifier task on preprocessed inputs.

    tfllm's binary head is one sigmoid unit; it becomes two columns here, so
    every caller (predictions, exports, metrics) sees one shape.
    """
    return _class_columns(keras.ops.cast(model(inputs, training=False), "float32"))


def _class_columns(outputs):
    """A column per class: one sigmoid unit's `p` becomes `[1 - p, p]`."""
    if outputs.shape[-1] == 1:
        return keras.ops.concatenate([1.0 - outputs, outputs], axis=-1)
    return outputs


def predict_probabilities(model, texts, batch_size=None):
    """`[n, num_classes]` probabilities for a list of strings (the task's preprocessor tokenizes), `batch_size`
    texts at a time (default: `eager_batch_size`)."""
    from tfllm.data import text_batches

    if isinstance(texts, str):  # sliced, one string gave a row per token position, silently
        raise UserInputError("predict_probabilities takes a list of texts, got a single string; wrap it in a list.")

    probabilities = [keras.ops.convert_to_numpy(class_probabilities(model, inputs))
                     for inputs in text_batches(texts, model.preprocessor, batch_size or eager_batch_size(model))]
    num_classes = max(2, model.output.shape[-1])
    return np.concatenate(probabilities) if probabilities else np.zeros((0, num_classes), "float32")


def compile_probability_head(model, optimizer="auto", loss="auto", metrics="auto", **kwargs):
    """KerasHub's `compile` defaults for a classifier that outputs probabilities (not logits):
    Adam 5e-5; binary cross-entropy for one sigmoid unit, sparse categorical otherwise; accuracy."""
    sigmoid = model.output.shape[-1] == 1
    if optimizer == "auto":
        optimizer = keras.optimizers.Adam(5e-5)
    if loss == "auto":
        loss = keras.losses.BinaryCrossentropy() if sigmoid else keras.losses.SparseCategoricalCrossentropy()
    if metrics == "auto":
        metrics = [keras.metrics.BinaryAccuracy() if sigmoid else keras.metrics.SparseCategoricalAccuracy()]
    keras.Model.compile(model, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)


def _masked_mean(x, mask):
    # By hand rather than GlobalAveragePooling1D: an empty text (all padding)
    # must give a valid average, not 0/0 = NaN.
    weights = keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)
    return keras.ops.sum(x * weights, axis=1) / keras.ops.maximum(keras.ops.sum(weights, axis=1), 1.0)


def label_names_property():
    """The classes' names as a property of a classifier task (tfllm's and the ensemble's).

    A property, not a shared base class: KerasHub's `save_to_preset` lists a task's base classes in
    metadata.json's "tasks", which must stay "TextClassifier". The names are a tuple of str, because Keras
    would wrap a list attribute in a tracked list, which `get_config` must not hold.
    """
    def get(self):
        return self._label_names

    def set(self, names):
        self._label_names = None if names is None else tuple(str(name) for name in names)

    return property(get, set)


@keras.saving.register_keras_serializable(package="tfllm")
class TextClassifier(keras_hub.models.TextClassifier):
    """Encoder backbone, masked mean pooling, softmax/sigmoid: KerasHub's `TextClassifier` task.

    Inputs are the backbone's `{"token_ids", "padding_mask"}`; the attached
    `TextClassifierPreprocessor` turns raw strings into them, so
    `classifier.predict(["a fine film"])` works, and the run directory it is
    saved in loads with `keras_hub.models.TextClassifier.from_preset(run_dir)`.
    Two classes give `Dense(1, sigmoid)` (binary cross-entropy, labels 0/1);
    more give `Dense(num_classes, softmax)` (categorical cross-entropy, integer
    labels). Outputs are probabilities.

    Args:
        backbone: an `EncoderBackbone`.
        num_classes: number of labels (2 means one sigmoid unit).
        preprocessor: a `TextClassifierPreprocessor` (or `None` for token-id inputs).
        dropout: dropout before the output layer.
        bigram_buckets: if set, a fastText-style bag of hashed token bigrams
            (computed from the ids with integer ops, so it exports to TF
            Serving and TFLite alike) is averaged and added to the pooled
            encoder output; word order cues such as "not good" then need
            not be learned by attention from a few thousand examples.
        wide_bigram_buckets: if set, a "wide" linear path beside the encoder
            (wide & deep): one weight per class for every unigram id and for
            each of this many hashed bigram buckets, summed over the text and
            added to the output logits. `fit` leaves it out (frozen; in
            training the blend passes the encoder alone); `fit_wide_path`
            then sets it to naive-Bayes log-count ratios of the training texts
            (as in NBSVM, Wang & Manning 2012) and blends it in.
        char_ngram_buckets: if set (with `wide_bigram_buckets`), a third view:
            one weight per class for each of this many hashed buckets of
            character 2-5-grams within words (`char_ngram_ids`), computed
            from the `code_points` input that the preprocessor adds
            (`char_length`). Also frozen in `fit`; `fit_wide_path` sets it by
            NB-weighted logistic regression (NBSVM's features) and blends it
            in. Character n-grams read what a word-piece vocabulary hides
            (misspellings, inflections, "-ish", "un-"): +0.9 points of test
            accuracy on rotten_tomatoes beside the encoder and the word wide
            path (mean of 4 seeds, benchmarks/bench_views.py).
        word_ngram_buckets: if set (with `wide_bigram_buckets`), a fourth view,
            also read from `code_points`: one weight per class for each of this
            many hashed buckets of word unigrams and bigrams (`word_ngram_ids`:
            scikit-learn's words, not word pieces). Frozen in `fit`;
            `fit_wide_path` sets it to naive-Bayes log-count ratios, as the
            wide path, and blends it in: +0.5 points more (same benchmark).
        label_names: the classes' names, in id order (a run's `tfllm/labels.json`), saved in the task's
            config so that a model loaded with `from_preset` alone can name its predictions
            (`tfllm.Explainer(model)`); `None` where unknown.

    Example:
    >>> backbone = EncoderBackbone(vocabulary_size=50, sequence_length=16, hidden_dim=16,
    ...                            num_layers=2, num_heads=2, intermediate_dim=16)
    >>> model = TextClassifier(backbone, num_classes=2)
    >>> model({"token_ids": np.ones((1, 16), "int32"), "padding_mask": np.ones((1, 16), "int32")}).shape  # (1, 1)
    """

    backbone_cls = EncoderBackbone
    preprocessor_cls = TextClassifierPreprocessor

    def __init__(self, backbone, num_classes, preprocessor=None, dropout=0.1, bigram_buckets=None,
                 wide_bigram_buckets=None, char_ngram_buckets=None, word_ngram_buckets=None, label_names=None,
                 **kwargs):
        if label_names is not None and len(label_names) != num_classes:
            # `from_preset(run_dir, num_classes=3)` of a two-class run: a new head, whose classes the old names
            # are not (an error here broke that KerasHub call).
            label_names = None
        for name, value in (("char_ngram_buckets", char_ngram_buckets), ("word_ngram_buckets", word_ngram_buckets)):
            if value and not wide_bigram_buckets:
                raise UserInputError(f"{name} is blended in beside the wide path: set wide_bigram_buckets too.")
            if value and value > MAX_HASH_BUCKETS:
                raise UserInputError(f"{name}={value} is more than the int32 hash allows ({MAX_HASH_BUCKETS:,}): "
                                     "use at most that (a prime, such as 524287, spreads the n-grams best).")
        # === Layers ===
        self.backbone = backbone
        positions = getattr(backbone, "sequence_length", None)
        if preprocessor is not None and positions and (preprocessor.sequence_length or 0) > positions:
            # KerasHub builds a default preprocessor (512 tokens) for a preset whose preprocessor.json is another
            # task's (`TextClassifier.from_preset(mlm_run)`): its texts overran the backbone's positions.
            preprocessor.sequence_length = positions
        self.preprocessor = preprocessor
        dtype = backbone.dtype_policy
        units = 1 if num_classes == 2 else num_classes
        activation = "sigmoid" if units == 1 else "softmax"

        # === Functional model ===
        inputs = dict(backbone.input)
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        if char_ngram_buckets or word_ngram_buckets:
            inputs["code_points"] = keras.Input(shape=(None,), dtype="int32", name="code_points")
        vocabulary_size = backbone.vocabulary_size
        x = _masked_mean(backbone({"token_ids": token_ids, "padding_mask": padding_mask}), padding_mask)
        if bigram_buckets:
            bigrams, bigram_mask = bigram_ids(token_ids, padding_mask, vocabulary_size, bigram_buckets)
            b = keras.layers.Embedding(bigram_buckets, backbone.hidden_dim, dtype=dtype, name="bigram_embedding")(bigrams)
            if backbone.embedding_dropout:
                b = keras.layers.Dropout(backbone.embedding_dropout, noise_shape=(None, None, 1), dtype=dtype,
                                         name="bigram_dropout")(b)
            x = x + _masked_mean(b, bigram_mask)
        x = keras.layers.Dropout(dropout, dtype=dtype, name="head_dropout")(x)
        if wide_bigram_buckets:
            # Frozen: its weights are naive-Bayes counts (`fit_wide_path`), and in
            # training the blend passes the encoder's logits alone (`LogitBlend`),
            # so `fit` trains the encoder exactly as without the wide path.
            ids, masks = wide_ngram_ids(token_ids, padding_mask, vocabulary_size, wide_bigram_buckets)
            w = keras.layers.Embedding(
                vocabulary_size + wide_bigram_buckets, units, embeddings_initializer="zeros", trainable=False,
                dtype=dtype, name="wide_ngrams",
            )(ids)
            wide_logits = keras.ops.sum(w * keras.ops.expand_dims(keras.ops.cast(masks, w.dtype), -1), axis=1)
            logits = keras.layers.Dense(units, dtype=dtype, name="logits")(x)
            views = {}  # the views read from code points, frozen like the wide path
            for name, buckets in (("char", char_ngram_buckets), ("word", word_ngram_buckets)):
                if buckets:
                    ids, masks = NgramIds(name, buckets, name=f"{name}_ngram_ids")(inputs["code_points"])
                    v = keras.layers.Embedding(buckets, units, embeddings_initializer="zeros", trainable=False,
                                               dtype=dtype, name=f"{name}_ngrams")(ids)
                    views[f"{name}_logits"] = keras.ops.sum(
                        v * keras.ops.expand_dims(keras.ops.cast(masks, v.dtype), -1), axis=1)
            logits = LogitBlend(trainable=False, dtype=dtype, name="blend")(logits, wide_logits, **views)
            outputs = keras.layers.Activation(activation, dtype="float32", name="probabilities")(logits)
        else:
            outputs = keras.layers.Dense(units, activation=activation, dtype="float32", name="probabilities")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.bigram_buckets = bigram_buckets
        self.wide_bigram_buckets = wide_bigram_buckets
        self.char_ngram_buckets = char_ngram_buckets
        self.word_ngram_buckets = word_ngram_buckets
        self.label_names = label_names

    label_names = label_names_property()

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, dropout=self.dropout, bigram_buckets=self.bigram_buckets,
                      wide_bigram_buckets=self.wide_bigram_buckets)
        for name in ("char_ngram_buckets", "word_ngram_buckets", "label_names"):
            if getattr(self, name):  # only then: a run saved before it stays loadable by older tfllm
                config[name] = list(getattr(self, name)) if name == "label_names" else getattr(self, name)
        return config

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """KerasHub's defaults, for a head that outputs probabilities (not logits).

        Adam 5e-5; binary cross-entropy for the one-unit sigmoid head, sparse
        categorical cross-entropy otherwise; accuracy. tfllm's trainer
        compiles its own recipe; these serve `from_preset(...).fit(...)`.
        """
        compile_probability_head(self, optimizer, loss, metrics, **kwargs)

    @property
    def sequence_length(self):
        return self.backbone.sequence_length

    def fit_wide_path(self, train_data, val_data, smoothing=1.0, class_weight=None, refit=True):
        """Sets the wide path from `train_data` and blends it in on `val_data`
        (its rows weighed by `class_weight`, `{class id: weight}`, where given);
        then, with `refit`, sets the n-gram tables again from both. Returns the
        `[n, num_classes]` probabilities of `val_data` before that refit.

        Both are `tf.data.Dataset`s of `(inputs, labels)` batches, as `fit` takes
        them once preprocessed. Call it after `fit`. First the wide weights
        become naive-Bayes log-count ratios of the training texts (each text
        counts once per n-gram; n-grams never seen get weight 0). They cannot be
        blended in by `fit` itself: on the texts they were counted from they look
        far more certain than on new ones. So the blend (a weight for each logit
        and a bias per class: stacking, Platt-style) is fitted on the validation
        split, with the rest of the model fixed. A character view
        (`char_ngram_buckets`) is set from the training split first
        (`_fit_char_ngrams`), a word view (`word_ngram_buckets`) by naive Bayes
        as the wide path, and both are blended in with the other two.

        Once the blend is fitted, the validation texts have done their part as
        unseen ones, and `refit` counts them into the tables too (the blend's
        weights kept): the n-gram views learn from 9% more reviews on
        rotten_tomatoes, +0.27 points of test accuracy over 8 seeds of `default`
        (docs/benchmarks.md, "refit-on-validation"). Scored on the validation split after that,
        the model has seen its texts; the probabilities returned are those of
        the tables it has not (fitted there but for the blend's few weights):
        what `metrics.json` reports for the split.
        """
        statistics, *val_statistics = self._ngram_statistics(*((train_data, val_data) if refit else (train_data,)))
        self._set_ngram_tables(statistics, smoothing, class_weight)
        blend = self.get_layer("blend")
        parts = keras.Model(self.input, blend.input)  # (encoder, wide[, character][, word] logits)
        outputs, labels = zip(*_eager_batches(parts, val_data, eager_batch_size(self)))
        views, labels = keras.tree.map_structure(lambda *rows: np.concatenate(rows), *outputs), np.concatenate(labels)
        blend.set_weights(_fit_blend(views, labels, class_weight=class_weight))
        # The model's output from the views, as `call` computes it: a second `predict` would trace the whole model again.
        names = [f"{name}_logits" for name in ("char", "word") if getattr(self, f"{name}_ngram_buckets")]
        logits = blend(*views[:2], **dict(zip(names, views[2:])))
        val_probabilities = keras.ops.convert_to_numpy(_class_columns(self.get_layer("probabilities")(logits)))
        if refit:
            self._set_ngram_tables({name: statistics[name] + val_statistics[0][name] for name in statistics},
                                   smoothing, class_weight)
        return val_probabilities

    def _ngram_statistics(self, *datasets):
        """What the n-gram tables are set from, a dict for each of `datasets`, each read in one pass:
        how many texts of each class hold each wide-path and word id, and each text's character n-grams."""
        # The ids as the model computes them (the same functions), called eagerly on `eager_batch_size` rows at a
        # time: the hashing is ~770 small ops whose eager cost is per call (on the 64-row training batches they
        # took 7.5 s of a 3-epoch `default` run), and a traced `predict_on_batch` spent longer tracing them.
        def ids_model(inputs, training=False):
            ngrams = {"wide": wide_ngram_ids(inputs["token_ids"], inputs["padding_mask"],
                                             self.backbone.vocabulary_size, self.wide_bigram_buckets)}
            for name, buckets in (("word", self.word_ngram_buckets), ("char", self.char_ngram_buckets)):
                if buckets:
                    ngrams[name] = NGRAM_IDS[name](inputs["code_points"], buckets)
            return {f"{name}_{part}": x for name, pair in ngrams.items() for part, x in zip(("ids", "mask"), pair)}

        return [self._count_ngrams(ids_model, data) for data in datasets]

    def _count_ngrams(self, ids_model, data):
        statistics = {
            "wide": np.zeros((self.num_classes, self.get_layer("wide_ngrams").input_dim)),
            "word": np.zeros((self.num_classes, self.word_ngram_buckets or 0)), "char": [], "labels": []}
        for out, labels in _eager_batches(ids_model, data, eager_batch_size(self)):
            classes = _class_ids(labels)
            for name in ("wide", "word"):
                if f"{name}_ids" in out:
                    for row, row_mask, c in zip(out[f"{name}_ids"], out[f"{name}_mask"], classes):
                        statistics[name][c, np.unique(row[row_mask])] += 1
            if "char_ids" in out:
                statistics["char"] += [row[row_mask] for row, row_mask in zip(out["char_ids"], out["char_mask"])]
            statistics["labels"].append(classes)
        return statistics

    def _set_ngram_tables(self, statistics, smoothing, class_weight):
        self.get_layer("wide_ngrams").set_weights([_naive_bayes_table(statistics["wide"], smoothing)])
        if self.word_ngram_buckets:
            self.get_layer("word_ngrams").set_weights([_naive_bayes_table(statistics["word"], smoothing)])
        if self.char_ngram_buckets:
            self._fit_char_ngrams(statistics["char"], np.concatenate(statistics["labels"]), class_weight)

    def _fit_char_ngrams(self, rows, labels, class_weight=None, C=0.1):
        """The character view's table: a logistic regression (scikit-learn's, L2, `C` 0.1: the best
        validation accuracy of 0.1 / 0.3 / 1 / 3 on rotten_tomatoes) on each training text's n-gram
        counts (`rows`: one array of n-gram ids a text; `labels`: their class ids), each count scaled
        by its n-gram's naive-Bayes log-count ratio where there are two classes (NBSVM's features,
        Wang & Manning 2012). Its intercept is left to the blend."""
        # Here, not at the top: scikit-learn takes ~1 s to import, and only this fit needs it.
        import scipy.sparse
        from sklearn.linear_model import LogisticRegression

        buckets = self.char_ngram_buckets
        indptr = np.cumsum([0] + [len(r) for r in rows])
        counts = scipy.sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows), indptr),
                                         shape=(len(rows), buckets))
        counts.sum_duplicates()
        scale = np.ones(buckets)
        if self.num_classes == 2:
            seen = (counts > 0).astype("float64")
            p, q = (1.0 + np.asarray(seen[labels == c].sum(0)).ravel() for c in (1, 0))
            scale = np.log(p / p.sum()) - np.log(q / q.sum())
            scale[np.asarray(seen.sum(0)).ravel() == 0] = 0.0  # buckets no training text reached
        weights = None if class_weight is None else np.array([class_weight.get(c, 1.0) for c in labels])
        regression = LogisticRegression(C=C, max_iter=3000).fit(counts.multiply(scale).tocsr(), labels,
                                                                sample_weight=weights)
        table = scale[:, None] * regression.coef_.T  # [buckets, 1] (the positive class) or [buckets, classes]
        self.get_layer("char_ngrams").set_weights([table.astype("float32")])
