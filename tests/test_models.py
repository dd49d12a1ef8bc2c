import keras
import numpy as np
import pytest

from conftest import assert_keras_roundtrip
from tfllm.models import TextClassifier, Transformer, resolve_preset
from tfllm.errors import UserInputError

TINY = dict(vocabulary_size=50, sequence_length=16, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=16)


def token_ids(batch=4, length=16, seed=0):
    ids = np.random.default_rng(seed).integers(4, 50, (batch, length)).astype("int32")
    ids[:, 10:] = 0  # padding
    return ids


@pytest.mark.parametrize("num_classes,units", [(2, 1), (3, 3)])
def test_text_classifier_heads_and_round_trip(tmp_path, num_classes, units):
    keras.utils.set_random_seed(0)
    model = TextClassifier(num_classes=num_classes, embedding_dropout=0.1, bigram_buckets=64, **TINY)
    outputs = model(token_ids())
    assert outputs.shape == (4, units)
    probabilities = keras.ops.convert_to_numpy(model.probabilities(token_ids()))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)
    model.summary()
    reloaded = assert_keras_roundtrip(model, token_ids(), tmp_path / "m.keras")
    assert reloaded.num_classes == num_classes


@pytest.mark.parametrize("num_classes", [2, 3])
def test_wide_path_is_naive_bayes_from_train_counts_blended_on_val(tmp_path, num_classes):
    """Each text's label is which marker token (5, 6 or 7) it holds among noise tokens:
    the untrained encoder cannot tell, the wide path must, after `fit_wide_path`."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, num_classes, n)
        ids = rng.integers(10, 50, (n, 16)).astype("int32")
        ids[:, 12:] = 0
        ids[np.arange(n), rng.integers(0, 12, n)] = 5 + labels
        y = labels[:, None].astype("float32") if num_classes == 2 else np.eye(num_classes, dtype="float32")[labels]
        return tf.data.Dataset.from_tensor_slices((ids, y)).batch(64), ids, labels

    def accuracy(ids, labels):
        return float(np.mean(keras.ops.convert_to_numpy(model.probabilities(ids)).argmax(-1) == labels))

    keras.utils.set_random_seed(0)
    model = TextClassifier(num_classes=num_classes, wide_bigram_buckets=64, **TINY)
    # Frozen for `fit`: only the encoder trains; the blend starts as the encoder alone.
    assert not [v.path for v in model.trainable_weights if "wide_ngrams" in v.path or "blend" in v.path]
    (train, _, _), (val, _, _), (_, test_ids, test_labels) = split(400), split(200), split(200)
    before = accuracy(test_ids, test_labels)
    model.fit_wide_path(train, val)
    after = accuracy(test_ids, test_labels)
    assert after > 0.95 and after > before + 0.2, (before, after)
    assert model.get_layer("blend").get_weights()[1] > 0  # the wide logits got weight
    assert_keras_roundtrip(model, test_ids[:8], tmp_path / "wide.keras")


def test_padding_is_masked_and_empty_text_is_finite():
    keras.utils.set_random_seed(0)
    model = TextClassifier(num_classes=2, **TINY)
    ids = token_ids()
    longer = ids.copy()
    longer[:, 12:] = 0  # same tokens, only the padding differs
    np.testing.assert_allclose(model(ids), model(longer), atol=1e-6)
    assert np.isfinite(keras.ops.convert_to_numpy(model(np.zeros((1, 16), "int32")))).all()


def test_transformer_layer_config_mask_and_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16,))
    x = keras.layers.Embedding(50, 8, mask_zero=True)(inputs)
    x = Transformer(num_layers=2, d_model=16, dff=32, num_heads=2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    assert model.output_shape == (None, 1)
    layer = model.layers[2]
    assert Transformer.from_config(layer.get_config()).get_config() == layer.get_config()
    ids = token_ids()
    longer = ids.copy()
    longer[:, 12:] = 0
    np.testing.assert_allclose(model(ids), model(longer), atol=1e-6)  # the Keras mask is honoured
    assert_keras_roundtrip(model, ids, tmp_path / "t.keras")


def test_article_example_as_printed_on_real_data():
    """The article's code with only the import line changed, on bundled reviews."""
    from tfllm.datasets import load_classification_data
    from tfllm.tokenizers import train_tokenizer

    data = load_classification_data("rotten_tomatoes", max_rows=400)
    vocab_size = 10000
    tokenizer = train_tokenizer(data.train.texts, "wordpiece", vocab_size, sequence_length=100)
    X_train, y_train = np.asarray(tokenizer(data.train.texts)), np.asarray(data.train.labels)

    # --- the article, verbatim but for `from tfllm import Transformer` ---
    from keras.layers import Input, Embedding, Dense
    from keras.models import Model
    from keras.optimizers import Adam
    from tfllm import Transformer

    inputs = Input(shape=(100,))
    embedding = Embedding(vocab_size, 128)(inputs)
    transformer = Transformer(num_layers=2, d_model=128, dff=512)(embedding)
    outputs = Dense(1, activation='sigmoid')(transformer)
    model = Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=Adam(learning_rate=0.001), loss='binary_crossentropy', metrics=['accuracy'])
    history = model.fit(X_train, y_train, batch_size=32, epochs=10, verbose=0)
    # --- end of the article's code ---

    assert model.output_shape == (None, 1)
    losses = history.history["loss"]
    assert len(losses) == 10 and losses[-1] < losses[0]


def test_presets_and_overrides():
    article = resolve_preset("classify", "article")
    assert (article["vocabulary_size"], article["hidden_dim"], article["num_layers"], article["intermediate_dim"]) == (10000, 128, 2, 512)
    assert (article["sequence_length"], article["batch_size"], article["epochs"], article["learning_rate"]) == (100, 32, 10, 1e-3)
    assert resolve_preset("classify", "default", {"epochs": 3, "batch_size": None})["epochs"] == 3
    with pytest.raises(UserInputError, match="Unknown preset"):
        resolve_preset("classify", "huge")


def test_misspelt_override_is_refused():
    assert resolve_preset("classify", "article", {"label_smoothing": 0.1})["label_smoothing"] == 0.1
    with pytest.raises(UserInputError, match="'hiden_dim'.*Did you mean 'hidden_dim'"):
        resolve_preset("classify", "default", {"hiden_dim": 64})
    with pytest.raises(UserInputError, match="'epochs' for task 'generate'"):  # generation counts steps
        resolve_preset("generate", "tiny", {"epochs": 2})


def test_every_setting_the_training_code_reads_can_be_overridden():
    # The list of known settings is kept by hand; this fails when training
    # code starts reading a setting that an override would be refused for.
    import pathlib
    import re

    from tfllm.models.causal_lm import BACKBONE_ARGS
    from tfllm.models.presets import known_settings
    from tfllm.training.classifier import MODEL_ARGS

    source = pathlib.Path(__file__).parents[1] / "tfllm" / "training"
    for task, module, model_args in (("classify", "classifier.py", MODEL_ARGS),
                                     ("generate", "causal_lm.py", BACKBONE_ARGS)):
        read = set(re.findall(r'preset(?:\[|\.get\()"(\w+)"', (source / module).read_text()))
        assert read, module
        assert read | set(model_args) <= known_settings(task), task


def test_masked_lm_pretraining_trains_the_shared_encoder():
    import warnings

    import tensorflow as tf

    from tfllm.training.pretraining import pretrain_masked_lm

    keras.utils.set_random_seed(0)
    model = TextClassifier(num_classes=2, **TINY)
    model(token_ids())
    before = keras.ops.convert_to_numpy(model.get_layer("embedding").token_embedding.embeddings)
    # Rows of unknown length, as the training pipeline makes them (unbatch after tokenizing).
    rows = tf.data.Dataset.from_tensor_slices(token_ids(batch=32)).batch(8).unbatch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = pretrain_masked_lm(model, rows, epochs=2, batch_size=8, learning_rate=1e-2, seed=0, verbose=0)
    assert len(history.history["loss"]) == 2
    after = keras.ops.convert_to_numpy(model.get_layer("embedding").token_embedding.embeddings)
    assert np.abs(after - before).max() > 0  # the classifier's own embedding was trained
    assert not [w for w in caught if "ran out of data" in str(w.message) or "shuffle=True" in str(w.message)]
