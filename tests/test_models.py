import keras
import numpy as np
import pytest

from conftest import assert_keras_roundtrip
from tfllm.models import EncoderBackbone, TextClassifier, TextClassifierPreprocessor, Transformer, resolve_preset
from tfllm.models.text_classifier import char_ngram_ids, word_ngram_ids
from tfllm.training.classifier import class_probabilities
from tfllm.errors import UserInputError

TINY = dict(vocabulary_size=50, sequence_length=16, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=16)


def token_ids(batch=4, length=16, seed=0):
    ids = np.random.default_rng(seed).integers(5, 50, (batch, length)).astype("int32")
    ids[:, 10:] = 0  # padding
    return ids


def inputs_of(ids):
    return {"token_ids": ids, "padding_mask": (ids != 0).astype("int32")}


def classifier(num_classes, embedding_dropout=0.0, **head):
    return TextClassifier(EncoderBackbone(embedding_dropout=embedding_dropout, **TINY), num_classes, **head)


def probabilities(model, ids):
    return keras.ops.convert_to_numpy(class_probabilities(model, inputs_of(ids)))


@pytest.mark.parametrize("num_classes,units", [(2, 1), (3, 3)])
def test_text_classifier_heads_and_round_trip(tmp_path, num_classes, units):
    keras.utils.set_random_seed(0)
    model = classifier(num_classes, embedding_dropout=0.1, bigram_buckets=64)
    outputs = model(inputs_of(token_ids()))
    assert outputs.shape == (4, units)
    np.testing.assert_allclose(probabilities(model, token_ids()).sum(-1), 1.0, rtol=1e-6)
    model.summary()
    reloaded = assert_keras_roundtrip(model, inputs_of(token_ids()), tmp_path / "m.keras")
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
        y = labels[:, None].astype("float32") if num_classes == 2 else labels.astype("int32")
        return tf.data.Dataset.from_tensor_slices((inputs_of(ids), y)).batch(64), ids, labels

    def accuracy(ids, labels):
        return float(np.mean(probabilities(model, ids).argmax(-1) == labels))

    keras.utils.set_random_seed(0)
    model = classifier(num_classes, wide_bigram_buckets=64)
    # Frozen for `fit`: only the encoder trains; the blend starts as the encoder alone.
    assert not [v.path for v in model.trainable_weights if "wide_ngrams" in v.path or "blend" in v.path]
    (train, _, _), (val, _, _), (_, test_ids, test_labels) = split(400), split(200), split(200)
    before = accuracy(test_ids, test_labels)
    model.fit_wide_path(train, val)
    after = accuracy(test_ids, test_labels)
    assert after > 0.95 and after > before + 0.2, (before, after)
    assert model.get_layer("blend").get_weights()[1] > 0  # the wide logits got weight
    assert_keras_roundtrip(model, inputs_of(test_ids[:8]), tmp_path / "wide.keras")


@pytest.mark.slow
def test_refit_counts_the_validation_texts_into_the_tables_and_keeps_the_blend():
    """`fit_wide_path` fits the blend on the validation split with tables from the training split, then
    (`refit`, the default) sets the tables from both: a token and a word that only validation texts hold get
    weight, every table is what both splits give from scratch, and the blend keeps the weights it was
    fitted with; it returns the validation split's probabilities from before the refit."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    filler = ["plot", "cast", "scene", "film", "story", "music", "actor", "script"]

    def split(n, extra=()):
        labels = rng.integers(0, 2, n)
        ids = rng.integers(10, 50, (n, 16)).astype("int32")
        ids[:, 12:] = 0
        ids[np.arange(n), rng.integers(0, 12, n)] = 5 + labels  # a marker token per class
        texts = [" ".join([*rng.choice(filler, 4), ("dull", "fine")[y]]) for y in labels]
        for token, word in extra:  # validation only: another token and word, in its positive texts
            ids[labels == 1, 0] = token
            texts = [t + " " + word if y else t for t, y in zip(texts, labels)]
        points = np.zeros((n, 48), "int32")
        for i, text in enumerate(texts):
            points[i, :len(text)] = [ord(c) for c in text]
        x = {**inputs_of(ids), "code_points": points}
        return tf.data.Dataset.from_tensor_slices((x, labels[:, None].astype("float32"))).batch(32), x

    (train, _), (val, val_x) = split(300), split(150, extra=[(9, "jazz")])
    # Primes large enough that no n-gram of "jazz" (each holds a j or a z, letters no other word has) shares
    # a bucket with the other words' n-grams.
    head = dict(wide_bigram_buckets=64, char_ngram_buckets=65521, word_ngram_buckets=65521)
    models, returned = {}, {}
    for name, args in (("train only", (train, val, False)), ("refit", (train, val, True)),
                       ("both from scratch", (train.concatenate(val), val, False))):
        keras.utils.set_random_seed(0)
        models[name] = model = classifier(2, **head)
        returned[name] = model.fit_wide_path(*args[:2], refit=args[2])

    def table(name, layer):
        return models[name].get_layer(layer).get_weights()[0]

    word = word_ngram_ids(np.array([[ord(c) for c in "jazz"]], "int32"), head["word_ngram_buckets"])[0]
    jazz = int(keras.ops.convert_to_numpy(word)[0, 0])
    assert table("train only", "wide_ngrams")[9, 0] == 0 and table("refit", "wide_ngrams")[9, 0] > 0
    assert table("train only", "word_ngrams")[jazz, 0] == 0 and table("refit", "word_ngrams")[jazz, 0] > 0
    for layer in ("wide_ngrams", "word_ngrams", "char_ngrams"):
        np.testing.assert_allclose(table("refit", layer), table("both from scratch", layer), rtol=1e-6)
    char = char_ngram_ids(np.array([[ord(c) for c in " jazz"]], "int32"), head["char_ngram_buckets"])
    jazz = np.unique(keras.ops.convert_to_numpy(char[0])[keras.ops.convert_to_numpy(char[1])])
    assert not table("train only", "char_ngrams")[jazz].any() and table("refit", "char_ngrams")[jazz].all()
    for a, b in zip(models["train only"].get_layer("blend").get_weights(),
                    models["refit"].get_layer("blend").get_weights()):
        np.testing.assert_array_equal(a, b)
    # It returns the validation split's probabilities from before the refit (metrics.json's val figures).
    before = keras.ops.convert_to_numpy(class_probabilities(models["train only"], val_x))
    np.testing.assert_allclose(returned["refit"], before, atol=1e-6)
    after = keras.ops.convert_to_numpy(class_probabilities(models["refit"], val_x))
    assert np.abs(after - before).max() > 100 * 1e-6  # the toy's probabilities are all near 0 or 1


@pytest.mark.slow
def test_fit_trains_the_encoder_as_if_the_n_gram_tables_and_the_blend_were_not_there():
    """In training the blend passes the encoder's logits alone: the same encoder trains alike whether its
    frozen tables and blend are as built (scales 0) or set (as after `fit_wide_path`), and inference uses them."""
    ids = token_ids(batch=8)
    points = np.random.default_rng(1).integers(32, 1200, (8, 24)).astype("int32")
    x = {**inputs_of(ids), "code_points": points}
    y = (np.arange(8) % 2)[:, None].astype("float32")
    head = dict(wide_bigram_buckets=64, char_ngram_buckets=97, word_ngram_buckets=89)
    models = []
    for set_tables in (False, True):
        keras.utils.set_random_seed(0)
        model = classifier(2, **head)
        if set_tables:
            rng = np.random.default_rng(2)
            for name in ("wide_ngrams", "char_ngrams", "word_ngrams"):
                layer = model.get_layer(name)
                layer.set_weights([rng.normal(0, 3, layer.get_weights()[0].shape).astype("float32")])
            model.get_layer("blend").set_weights([np.float32(0.5), np.float32(2.0), np.ones(1, "float32"),
                                                  np.float32(1.5), np.float32(1.0)])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        models.append(model)
    plain, with_tables = models
    for a, b in zip(plain.backbone.weights, with_tables.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(plain.predict(x, verbose=0) - with_tables.predict(x, verbose=0)).max() > 0.01


def test_padding_is_masked_and_empty_text_is_finite():
    keras.utils.set_random_seed(0)
    model = classifier(2)
    ids = token_ids()
    longer = ids.copy()
    longer[:, 12:] = 0  # same tokens, only the padding differs
    np.testing.assert_allclose(model(inputs_of(ids)), model(inputs_of(longer)), atol=1e-6)
    assert np.isfinite(keras.ops.convert_to_numpy(model(inputs_of(np.zeros((1, 16), "int32"))))).all()


# One fresh Python process reloads both saved models below, each check printing "NAME ok" or its traceback:
# first the article's .keras file after `import tfllm` alone (nothing has imported KerasHub yet, which is the
# point of that check), then the classifier's KerasHub preset through keras_hub's own from_preset.
RELOAD_SCRIPT = """
import sys, traceback
import numpy as np

def article(d):
    import tfllm, keras
    model = keras.models.load_model(d + "/article.keras")
    np.testing.assert_allclose(model(np.load(d + "/ids.npy")), np.load(d + "/article_expected.npy"), atol=1e-6)

def preset(d):
    import keras_hub, tfllm.models
    task = keras_hub.models.TextClassifier.from_preset(d + "/p")
    assert type(task).__module__ == "tfllm.models.text_classifier", type(task)
    np.testing.assert_array_equal(task.predict(["a good film", "dull"], verbose=0), np.load(d + "/expected.npy"))
    backbone = keras_hub.models.Backbone.from_preset(d + "/p")
    assert type(backbone).__name__ == "EncoderBackbone"
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(d + "/p")
    assert tokenizer.end_token_id == 3
    assert list(np.asarray(tokenizer(["a good film"]))[0]) == list(np.load(d + "/tokens.npy"))

for check in (article, preset):
    try:
        check(sys.argv[1])
        print(check.__name__, "ok", flush=True)
    except BaseException:
        print(check.__name__, "failed:", traceback.format_exc(), flush=True)
"""


@pytest.fixture(scope="module")
def reloaded_in_a_fresh_process(tmp_path_factory):
    """Saves a tiny Transformer model as .keras (the article's kind) and a tiny TextClassifier as a KerasHub
    preset, with their outputs; RELOAD_SCRIPT's stdout and stderr after reloading both in one new process."""
    import subprocess
    import sys

    from tfllm.tokenizers import train_tokenizer

    tmp_path = tmp_path_factory.mktemp("reload")
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(16,))
    x = keras.layers.Embedding(50, 8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(Transformer(num_layers=1, d_model=8, dff=16, num_heads=2)(x)))
    model.save(tmp_path / "article.keras")
    ids = token_ids()
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "article_expected.npy", keras.ops.convert_to_numpy(model(ids)))

    keras.utils.set_random_seed(0)
    texts = ["a good film", "a bad film", "very good fun", "dull and bad", "good good good"] * 8
    tokenizer = train_tokenizer(texts, "wordpiece", 40)
    model = TextClassifier(EncoderBackbone(**{**TINY, "vocabulary_size": tokenizer.vocabulary_size()}), 3,
                           preprocessor=TextClassifierPreprocessor(tokenizer, sequence_length=16), bigram_buckets=64)
    np.save(tmp_path / "expected.npy", model.predict(["a good film", "dull"], verbose=0))
    np.save(tmp_path / "tokens.npy", np.asarray(tokenizer(["a good film"]))[0])
    model.save_to_preset(str(tmp_path / "p"))

    out = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_classifier_is_a_keras_hub_preset_in_a_fresh_process(reloaded_in_a_fresh_process):
    """save_to_preset -> keras_hub's own from_preset (Task, Backbone, Tokenizer) in a new process, same outputs."""
    assert "preset ok" in reloaded_in_a_fresh_process.splitlines(), reloaded_in_a_fresh_process[-3000:]


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


@pytest.mark.parametrize("arguments, message", [
    (dict(d_model=130, num_heads=8), "num_heads must divide d_model: 130 is not a multiple of 8"),
    (dict(num_layers="2"), "num_layers must be a whole number of at least 1, got '2'"),  # a TypeError in range()
    (dict(d_model=0), "d_model must be a whole number of at least 1, got 0"),
    (dict(dropout=1.5), "dropout must be a number from 0 up to \\(not including\\) 1, got 1.5"),
])
def test_transformer_layer_refuses_what_its_docstring_rules_out(arguments, message):
    with pytest.raises(ValueError, match=message):
        Transformer(**arguments)


def test_transformer_layer_on_token_ids_says_to_embed_them_first():
    """Without the article's Embedding the model built, and its first fit or predict failed deep
    inside the position encoding ("Shape must be at most rank 2 but is rank 3")."""
    with pytest.raises(ValueError, match=r"takes embeddings \[batch, length, features\], got shape \(None, 100\); "
                       "put an Embedding layer before it"):
        Transformer(num_layers=1, d_model=32, dff=64, num_heads=2)(keras.Input(shape=(100,)))


@pytest.mark.slow
def test_a_saved_transformer_model_loads_with_plain_keras_after_import_tfllm(reloaded_in_a_fresh_process):
    """`import tfllm` then `keras.models.load_model`, as after a kernel restart: nothing imports KerasHub,
    which used to be the only trigger that registered tfllm's classes ('Could not locate class')."""
    assert "article ok" in reloaded_in_a_fresh_process.splitlines(), reloaded_in_a_fresh_process[-3000:]


@pytest.mark.slow
def test_article_example_as_printed_on_real_data():
    """The article's code with only the import line changed, on bundled reviews."""
    from tfllm.datasets import load_classification_data
    from tfllm.tokenizers import train_tokenizer

    data = load_classification_data("rotten_tomatoes", max_rows=100)  # few rows: the article's code, not the data, is checked
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


def test_tfllm_presets_lists_the_recipes_and_prints_one_as_set_takes_it(capsys):
    import json

    from conftest import main_in_process
    from tfllm.cli import parse_setting
    from tfllm.presets import PRESETS

    listing = main_in_process(capsys, "presets")
    assert listing.returncode == 0
    for task, presets in PRESETS.items():
        assert f"{task} (" in listing.stdout and all(name in listing.stdout for name in presets)
    assert "or tfllm pretrain --objective causal --preset NAME): " in listing.stdout  # its presets too
    shown = main_in_process(capsys, "presets", "classify", "default")
    printed = dict(parse_setting(line.strip()) for line in shown.stdout.splitlines() if line.startswith("  "))
    assert printed == resolve_preset("classify", "default")  # each line is a --set that gives the preset's value
    as_json = json.loads(main_in_process(capsys, "presets", "classify", "mobile", "--json").stdout)
    assert as_json["settings"] == resolve_preset("classify", "mobile") and "ema_epochs" in as_json["optional_settings"]
    assert json.loads(main_in_process(capsys, "presets", "translate", "--json").stdout) == {
        "translate": sorted(PRESETS["translate"])}
    for args, message in ((["classify", "huge"], "Unknown preset 'huge'"), (["classfy"], "Unknown task 'classfy'")):
        refused = main_in_process(capsys, "presets", *args)
        assert refused.returncode == 2 and message in refused.stderr and not refused.stdout


def test_tfllm_presets_says_mobile_is_the_default_recipe(capsys):
    """`mobile` has been `default` since stop 56; listed bare, it read as a smaller phone recipe."""
    import json

    from conftest import main_in_process
    from tfllm.presets import resolve_preset

    assert resolve_preset("classify", "mobile") == resolve_preset("classify", "default")
    assert "mobile (= default)" in main_in_process(capsys, "presets", "classify").stdout
    shown = main_in_process(capsys, "presets", "classify", "mobile").stdout
    assert shown.splitlines()[0].startswith("mobile is the same recipe as default")
    assert "same recipe" not in main_in_process(capsys, "presets", "classify", "default").stdout
    assert json.loads(main_in_process(capsys, "presets", "classify", "mobile", "--json").stdout)["same_as"] == "default"


def test_misspelt_override_is_refused():
    assert resolve_preset("classify", "article", {"label_smoothing": 0.1})["label_smoothing"] == 0.1
    with pytest.raises(UserInputError, match="'hiden_dim'.*Did you mean 'hidden_dim'"):
        resolve_preset("classify", "default", {"hiden_dim": 64})
    with pytest.raises(UserInputError, match="'epochs' for task 'generate'"):  # generation counts steps
        resolve_preset("generate", "tiny", {"epochs": 2})


@pytest.mark.parametrize("key, value, message", [  # resolve_preset is Python: Python spelling (overrides=)
    ("lazy_adam", "no", "'lazy_adam' is a switch; got 'no'. Use overrides=\\{'lazy_adam': True\\}"),  # "no" would be truthy
    ("word_vectors", 0, "'word_vectors' is a switch"),
    ("tokenizer", "bpe", "'tokenizer' takes one of wordpiece, char, sentencepiece; got 'bpe'"),  # refused after the data
    ("epochs", "ten", "'epochs' takes a whole number; got 'ten' \\(e.g. overrides=\\{'epochs': "),
    ("epochs", 2.5, "'epochs' takes a whole number; got 2.5"),
    ("epochs", float("inf"), "'epochs' takes a whole number; got inf"),  # --set epochs=Infinity
    ("learning_rate", True, "'learning_rate' takes a number"),
    ("ema_epochs", "three", "'ema_epochs' takes a number; got 'three' \\(e.g. overrides=\\{'ema_epochs': 3\\}\\)"),  # optional
    ("ema_momentum", True, "'ema_momentum' takes a number"),
    ("label_smoothing", "x", "'label_smoothing' takes a number; got 'x' \\(e.g. overrides=\\{'label_smoothing': 0.1\\}\\)"),
])
def test_an_override_of_the_wrong_kind_is_refused(key, value, message):
    with pytest.raises(UserInputError, match=message):
        resolve_preset("classify", "default", {key: value})


@pytest.mark.parametrize("task, key, value, message", [
    ("classify", "hidden_dim", 0, "'hidden_dim' must be at least 1; got 0"),
    ("classify", "dropout", 1.5, "'dropout' must be from 0 up to \\(not including\\) 1; got 1.5"),
    ("classify", "learning_rate", 0, "'learning_rate' must be above 0"),
    ("classify", "wide_bigram_buckets", -1, "'wide_bigram_buckets' must be 0 or more"),
    ("generate", "sequence_length", -4, "'sequence_length' must be at least 1; got -4"),
    ("pretrain", "mask_selection_rate", 1, "'mask_selection_rate' must be from 0"),
])
def test_an_override_out_of_range_is_refused(task, key, value, message):
    with pytest.raises(UserInputError, match=message):
        resolve_preset(task, "tiny", {key: value})


def test_overrides_of_the_right_kind_are_kept():
    preset = resolve_preset("classify", "default", {"lazy_adam": False, "epochs": 3, "learning_rate": 2e-4,
                                                    "jit_compile": "auto", "tokenizer": "wordpiece"})
    assert (preset["lazy_adam"], preset["epochs"], preset["learning_rate"], preset["jit_compile"]) == (False, 3, 2e-4, "auto")
    steps = resolve_preset("generate", "tiny", {"window_keep": None, "steps": 1e3})["steps"]  # --set steps=1e3
    assert steps == 1000 and isinstance(steps, int)


@pytest.mark.parametrize("length, keep", [(32, 24), (48, 36), (128, 96), (2, 1)])
def test_a_shorter_window_keeps_the_recipes_share_of_it_when_generation_refills(length, keep):
    # nanogpt-cpu keeps 48 of its 64 tokens; --set sequence_length=32 alone kept 48 and failed in the model class.
    for name in ("nanogpt-cpu", "default"):
        preset = resolve_preset("generate", name, {"sequence_length": length})
        assert (preset["sequence_length"], preset["window_keep"]) == (length, keep)
    assert resolve_preset("generate", "nanogpt-cpu", {"sequence_length": 32, "window_keep": 8})["window_keep"] == 8
    assert resolve_preset("generate", "tiny", {"sequence_length": 8})["window_keep"] is None  # the exact crop stays


def test_a_generator_window_of_one_token_is_refused_in_one_line():
    """A window of 1 re-encodes no tokens when it is full: `--set sequence_length=1` trained and then crashed in
    its first sample ("zero-size array to reduction operation maximum"), a fix the --max-rows error suggested."""
    from tfllm.presets import MIN_GENERATOR_WINDOW

    for name in ("tiny", "nanogpt-cpu"):
        with pytest.raises(UserInputError, match=r"^overrides=\{'sequence_length': 1\} is too short for a generator: "
                                                 rf".* at least {MIN_GENERATOR_WINDOW} tokens .*; use overrides="):
            resolve_preset("generate", name, {"sequence_length": 1})
    assert resolve_preset("generate", "tiny", {"sequence_length": MIN_GENERATOR_WINDOW})["sequence_length"] == 2


def test_num_heads_that_do_not_divide_hidden_dim_are_refused_at_the_recipe():
    """--set num_heads=3 on a width of 16 was a 26-line traceback from the generator's (and the translator's)
    model class; the message names both settings and the head counts that fit."""
    for task in ("generate", "translate"):
        with pytest.raises(UserInputError, match=r"^overrides=\{'num_heads': 3\} does not divide the recipe's hidden_dim "
                                                 r"16: .* \(1, 2, 4, 8, 16\), or a hidden_dim that is a multiple of 3\.$"):
            resolve_preset(task, "tiny", {"num_heads": 3})
        with pytest.raises(UserInputError, match=r"^the recipe's num_heads 2 does not divide overrides=\{'hidden_dim': 15\}"):
            resolve_preset(task, "tiny", {"hidden_dim": 15})
        assert resolve_preset(task, "tiny", {"num_heads": 3, "hidden_dim": 15})["num_heads"] == 3
    assert resolve_preset("classify", "tiny", {"num_heads": 3})["num_heads"] == 3  # KerasHub's encoders take it


def test_a_window_keep_that_does_not_fit_the_window_names_both_settings():
    from tfllm.models import CausalLM

    preset = resolve_preset("generate", "nanogpt-cpu", {"sequence_length": 32, "num_layers": 1, "hidden_dim": 8,
                                                        "intermediate_dim": 8, "num_heads": 1})
    assert CausalLM.from_args(**{**preset, "vocabulary_size": 20}).window_keep == 24  # the model takes it
    for overrides, message in (
            ({"sequence_length": 32, "window_keep": 48},
             r"overrides=\{'window_keep': 48\} does not fit overrides=\{'sequence_length': 32\}: .*\(from 1 to 31\)"),
            ({"window_keep": 64}, r"overrides=\{'window_keep': 64\} does not fit the recipe's sequence_length 64: "
                                  r".*\(from 1 to 63\)"),
            ({"window_keep": 0}, r"\(from 1 to 63\)")):
        with pytest.raises(UserInputError, match=message):
            resolve_preset("generate", "nanogpt-cpu", overrides)


def test_every_setting_the_training_code_reads_can_be_overridden():
    # The list of known settings is kept by hand; this fails when training
    # code starts reading a setting that an override would be refused for.
    import pathlib
    import re

    from tfllm.models.causal_lm import BACKBONE_ARGS
    from tfllm.models.encoder_backbone import BACKBONE_ARGS as ENCODER_ARGS
    from tfllm.presets import known_settings
    from tfllm.training.classifier import HEAD_ARGS

    source = pathlib.Path(__file__).parents[1] / "tfllm" / "training"
    for task, module, model_args in (("classify", "classifier.py", ENCODER_ARGS + HEAD_ARGS),
                                     ("generate", "causal_lm.py", BACKBONE_ARGS),
                                     ("pretrain", "pretraining.py", ENCODER_ARGS)):
        read = set(re.findall(r'preset(?:\[|\.get\()"(\w+)"', (source / module).read_text()))
        assert read, module
        known = known_settings(task) | (known_settings("vectors") if task == "pretrain" else set())
        assert read | (set(model_args) - {"vocabulary_size"}) <= known, task


@pytest.mark.slow
def test_masked_lm_validation_loss_is_the_mean_over_every_masked_token():
    """metrics.json's validation loss and perplexity: sum of nll over sum of masked tokens across all
    batches. Keras' loss is a batch-size-weighted mean of per-batch means, which counted a batch of
    one-word texts (one masked token each) as much as a batch of long ones."""
    from tfllm.config import TrainConfig
    from tfllm.training.common import preprocessed
    from tfllm.training.pretraining import _compile, _fixed_masked_batches, _validation_metrics, \
        masked_lm_preset, own_masked_lm
    from tfllm.tokenizers import train_tokenizer

    keras.utils.set_random_seed(0)
    words = ["the", "film", "was", "good", "bad", "dull", "fun", "long", "short", "sad", "and", "very"]
    rng = np.random.default_rng(0)
    long = [" ".join(rng.choice(words, 30)) for _ in range(16)]
    docs = long + [str(w) for w in rng.choice(words, 16)]  # 16 long documents, then 16 one-word ones
    preset = masked_lm_preset(TrainConfig(task="pretrain", preset="tiny", steps=6))
    model = own_masked_lm(preset, train_tokenizer(docs, "wordpiece", 60))
    _compile(model, preset)
    val_ds = _fixed_masked_batches(docs, model.preprocessor, 16)  # one fixed masking, as pretrain's
    total_nll = masked = correct = 0.0
    per_batch = []
    for x, y, w in val_ds:
        logits = keras.ops.convert_to_numpy(model(x)).astype("float64")
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        y, w = np.asarray(y), np.asarray(w, "float64")
        nll = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
        total_nll += (nll * w).sum()
        masked += w.sum()
        correct += ((logits.argmax(-1) == y) * w).sum()
        per_batch.append(((nll * w).sum() / w.sum(), len(y), w.sum()))
    # Very different numbers of masked tokens, so Keras' mean of batch means is off by more than the tolerance.
    assert per_batch[0][2] > 3 * per_batch[1][2]
    by_batch_size = sum(loss * n for loss, n, _ in per_batch) / sum(n for _, n, _ in per_batch)
    assert abs(by_batch_size - total_nll / masked) > 1e-3
    with preprocessed(model):
        val = _validation_metrics(model, val_ds)
    assert val["loss"] == pytest.approx(total_nll / masked, abs=1e-4)
    assert val["perplexity"] == pytest.approx(np.exp(total_nll / masked), rel=1e-3)
    assert val["masked_accuracy"] == pytest.approx(correct / masked, abs=1e-4)


@pytest.mark.slow
def test_masked_lm_batches_mask_the_same_tokens_for_a_seed_by_kerashubs_rules():
    """Pretraining's masks come from the seed and the batch's number (KerasHub's mask generator draws from
    stateful ops in parallel map_fn rows, so two runs with one --seed ended at different losses), and
    follow KerasHub's MaskedLMMaskGenerator: ceil(rate x selectable) tokens, at most the slots, never a
    special token, positions ascending, 80% become [MASK]."""
    import math

    import tensorflow as tf

    from tfllm.models import MaskedLMPreprocessor
    from tfllm.tokenizers import special_token_ids, train_tokenizer
    from tfllm.training.pretraining import _masked_batches

    texts = [f"the {a} film was {w} and {v} but the ending was {w}er" for a in ("new", "old", "odd")
             for w in ("good", "bad", "dull", "fun") for v in ("long", "short", "sad", "slow")]
    tokenizer = train_tokenizer(texts, "wordpiece", 80)
    preprocessor = MaskedLMPreprocessor(tokenizer, sequence_length=12, mask_selection_rate=0.3,
                                        mask_selection_length=3)
    take = lambda seed: [tf.nest.map_structure(np.asarray, batch) for batch in
                         _masked_batches(texts, preprocessor, 8, repeat=True, seed=seed).take(8)]
    first = take(1)
    for batch, again in zip(first, take(1)):
        tf.nest.map_structure(np.testing.assert_array_equal, batch, again)
    assert any((a[0]["token_ids"] != b[0]["token_ids"]).any() for a, b in zip(first, take(2)))
    special = special_token_ids(tokenizer)
    masked = kept = 0
    for x, y, weights in first:
        used = weights > 0
        original = x["token_ids"].copy()
        rows = np.nonzero(used)[0]
        original[rows, x["mask_positions"][used]] = y[used]
        for row in range(len(original)):
            selectable = int(np.isin(original[row], special, invert=True).sum())
            assert used[row].sum() == min(math.ceil(selectable * 0.3), 3)
            positions = x["mask_positions"][row][used[row]]
            assert (np.diff(positions) > 0).all() and not np.isin(original[row][positions], special).any()
        masked += int((x["token_ids"][rows, x["mask_positions"][used]] == tokenizer.mask_token_id).sum())
        kept += int(used.sum())
    assert 0.65 < masked / kept < 0.95


@pytest.mark.slow
def test_masked_lm_pretraining_trains_the_backbone_a_classifier_then_starts_from(tmp_path):
    """MaskedLM (KerasHub's head and mask generator) over an EncoderBackbone, saved as a preset;
    a classifier from that preset starts from the pretrained backbone weights."""
    import warnings

    import keras_hub

    from tfllm.config import TrainConfig
    from tfllm.training.classifier import classifier_from_preset
    from tfllm.training.pretraining import masked_lm_preset, own_masked_lm, _compile, _masked_batches
    from tfllm.tokenizers import train_tokenizer

    keras.utils.set_random_seed(0)
    texts = [f"the film was {w} and {v}" for w in ("good", "bad", "dull", "fun") for v in ("long", "short", "sad")] * 4
    preset = masked_lm_preset(TrainConfig(task="pretrain", preset="tiny", steps=6))
    model = own_masked_lm(preset, train_tokenizer(texts, "wordpiece", 60))
    _compile(model, preset)
    before = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.preprocessor, preprocessor = None, model.preprocessor
        history = model.fit(_masked_batches(texts, preprocessor, 8, repeat=True, seed=0), steps_per_epoch=3, epochs=2,
                            shuffle=False, verbose=0)
        model.preprocessor = preprocessor
    assert len(history.history["loss"]) == 2 and "masked_accuracy" in history.history
    after = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    assert np.abs(after - before).max() > 0
    assert not [w for w in caught if "ran out of data" in str(w.message) or "shuffle=True" in str(w.message)]
    # The loss is the mean cross-entropy of the masked tokens: the mask's unused slots (weight 0) do not
    # count (they did: with ~1 token masked in 10 slots, the loss and 'perplexity' read ~10x too low).
    x, y, weights = next(iter(_masked_batches(texts[:8], preprocessor, 8)))
    model.preprocessor = None
    reported = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)["loss"]
    model.preprocessor = preprocessor
    per_slot = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))
    weights = np.asarray(weights, "float32")
    assert weights.sum() < weights.size  # short texts leave slots unused, so a dilution would show
    assert reported == pytest.approx(float((per_slot * weights).sum() / weights.sum()), rel=1e-4)
    model.save_to_preset(str(tmp_path / "mlm"))
    assert isinstance(keras_hub.models.MaskedLM.from_preset(str(tmp_path / "mlm")), type(model))
    clf = classifier_from_preset(str(tmp_path / "mlm"), {"sequence_length": 16, "dropout": 0.0}, 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clf.backbone.token_embedding.embeddings), after)
    # KerasHub's own TextClassifier of the pretraining preset: its default preprocessor (512 tokens) overran the
    # backbone's positions ("Expected size[0] in [0, 16], but got 512").
    hub = keras_hub.models.TextClassifier.from_preset(str(tmp_path / "mlm"), num_classes=2)
    assert hub.preprocessor.sequence_length == model.backbone.sequence_length
    assert hub.predict(["the film was good and long"], verbose=0).shape == (1, 1)


def test_a_vocabulary_that_leaves_out_most_of_the_text_is_warned_about_not_one_that_covers_it():
    """Pretraining on Chinese news with `--preset tiny`'s 50 tokens trained on [UNK] without a word."""
    import warnings

    from tfllm.errors import TfllmWarning
    from tfllm.tokenizers import train_tokenizer
    from tfllm.training.common import warn_unknown_in_own_vocabulary
    from tfllm.training.pretraining import _sample_ids

    texts = ["".join(chr(0x4E00 + (i * 7 + j) % 300) for j in range(12)) for i in range(100)]  # 300 characters
    for size, warned in ((40, True), (400, False)):
        tokenizer = train_tokenizer(texts, "wordpiece", size)
        ids = _sample_ids(texts, tokenizer)
        assert len(ids) == 1200
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_unknown_in_own_vocabulary(tokenizer, ids, size, "training documents")
        messages = [str(w.message) for w in caught if issubclass(w.category, TfllmWarning)]
        assert len(messages) == warned, messages
        if warned:
            assert "of the tokens of the training documents are [UNK]" in messages[0]
            assert f"Raise vocabulary_size with overrides={{'vocabulary_size': N}} (now {size})." in messages[0]


def test_a_generators_few_unknown_tokens_name_generate_as_the_caller_calls_it():
    """A generator's text with a few [UNK]: the warning said "tfllm generate refuses prompts" to a Python caller."""
    import warnings

    from tfllm.errors import TfllmWarning
    from tfllm.tokenizers import train_tokenizer
    from tfllm.training.common import warn_unknown_in_own_vocabulary
    from tfllm.training.pretraining import _sample_ids

    texts = ["".join(chr(0x4E00 + (i * 7 + j) % 300) for j in range(12)) for i in range(100)]
    texts += ["一" * 11 + chr(0x5000 + i) for i in range(10)]  # 10 characters seen once: left out of 300 tokens
    tokenizer = train_tokenizer(texts, "wordpiece", 300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_unknown_in_own_vocabulary(tokenizer, _sample_ids(texts, tokenizer), 300, text="\n".join(texts))
    messages = [str(w.message) for w in caught if issubclass(w.category, TfllmWarning)]
    assert len(messages) == 1 and "leaves that text out, and tfllm.generate refuses prompts" in messages[0], messages


@pytest.mark.slow
def test_masked_lm_pretraining_warns_when_most_training_tokens_are_unknown(tmp_path, capsys):
    from tfllm.cli import main

    assert main(["pretrain", "--data", "zh_news", "--max-rows", "200", "--preset", "tiny", "--steps", "2",
                 "--run-dir", str(tmp_path / "mlm")]) == 0
    err = capsys.readouterr().err
    assert "of the tokens of the training documents are [UNK]" in err, err
    assert "Raise vocabulary_size with --set vocabulary_size=N (now 60)." in err
    # Said per objective: the masked LM never masks [UNK] (it said the loss counts [UNK] "like any other").
    assert "the masked LM masks no [UNK], so the loss and perplexity score only the rest" in err, err
    assert "like any other" not in err


@pytest.mark.slow
def test_masked_lm_pretraining_refuses_validation_documents_with_nothing_to_mask(tmp_path, capsys):
    """The held-out document all [UNK] to the vocabulary learned from the others: [UNK] is never masked, so
    validation scored nothing, and val_loss 0.0 every epoch and a perplexity of 1.0 went to metrics.json and
    TensorBoard as a perfect score. Refused before training, the run left out."""
    from tfllm.cli import main

    data = tmp_path / "three.txt"
    data.write_text("hello world\ngood bye\nfoo bar\n")
    assert main(["pretrain", "--data", str(data), "--objective", "mlm", "--preset", "tiny", "--steps", "20",
                 "--run-dir", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Epoch" not in out, err
    assert f"--data {str(data)!r}: validation would score nothing: every token the masked LM reads of the 1 " \
           "document held out for validation (the last 33%) is [UNK]" in err and "never masks [UNK]" in err, err
    assert "Give more text" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("steps", [6, 15, 25, 2200])
def test_masked_lm_pretraining_trains_whole_epochs_and_never_more_steps_than_asked(steps):
    """`steps` was rounded to a multiple of eval_interval: --steps 15 trained 20 steps, the last 5 past the
    learning-rate schedule's end (at 0). Now the epochs shrink, and the schedule spans what trains."""
    from tfllm.config import TrainConfig
    from tfllm.training.pretraining import masked_lm_preset

    asked = TrainConfig(task="pretrain", preset="tiny", steps=steps)
    preset = masked_lm_preset(asked)
    epochs = preset["steps"] // preset["eval_interval"]
    assert preset["steps"] == epochs * preset["eval_interval"]  # whole epochs
    assert steps - epochs < preset["steps"] <= steps  # never more, and less by under one step an epoch


def test_set_epochs_counts_masked_lm_pretraining_as_the_epochs_flag_does():
    """`tfllm presets pretrain tiny` lists `epochs` as settable; `--set epochs=N` was recorded and ignored."""
    from tfllm.config import TrainConfig
    from tfllm.training.pretraining import masked_lm_preset

    by_flag = masked_lm_preset(TrainConfig(task="pretrain", preset="tiny", epochs=3))
    by_setting = masked_lm_preset(TrainConfig(task="pretrain", preset="tiny", overrides={"epochs": 3}))
    assert by_setting["steps"] == by_flag["steps"] == 3 * resolve_preset("pretrain", "tiny")["eval_interval"]
    with pytest.raises(UserInputError, match="not both"):
        masked_lm_preset(TrainConfig(task="pretrain", preset="tiny", steps=30, overrides={"epochs": 3}))


@pytest.mark.slow
def test_masked_lm_pretraining_reports_the_steps_it_trained(tmp_path, capsys):
    import json

    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.cli import main
    from tfllm.training.reporting import history_from_logs

    run_dir = tmp_path / "mlm"
    assert main(["pretrain", "--objective", "mlm", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "100",
                 "--steps", "15", "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recipe = json.loads((run_dir / "tfllm" / "recipe.json").read_text())
    logged = history_from_logs(str(run_dir / "logs"))
    epochs = len(logged["loss"])
    assert metrics["steps"] == recipe["steps"] == epochs * recipe["eval_interval"] <= 15
    assert f"{metrics['steps']} steps" in capsys.readouterr().out
    # A perplexity curve, exp of the masked loss (metrics.json's perplexity), where TensorBoard had none.
    for prefix in ("", "val_"):
        np.testing.assert_allclose(logged[prefix + "perplexity"], np.exp(logged[prefix + "masked_loss"]), rtol=1e-5)
    assert logged["val_perplexity"][-1] == pytest.approx(metrics["val"]["perplexity"], rel=1e-3)
    validation = EventAccumulator(str(run_dir / "logs" / "validation"), size_guidance={"tensors": 0})
    validation.Reload()
    points = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in
                    validation.Tensors(f"evaluation_{tag}_vs_iterations")] for tag in ("masked_loss", "perplexity")}
    assert len(points["perplexity"]) == epochs
    np.testing.assert_allclose(points["perplexity"], np.exp(points["masked_loss"]), rtol=1e-5)
    # Its export is refused with the step that makes one exportable (it said only what the run is not).
    capsys.readouterr()
    for form in (["--name", "mlm", "--base-dir", str(tmp_path / "exports")], ["--format", "tflite", "--out", "x"]):
        assert main(["export", str(run_dir), *form]) == 2
        err = capsys.readouterr().err
        assert "holds a pretrained model" in err and "Fine-tune it into one: `tfllm train --task classify" in err, err
        assert f"--from-preset {run_dir}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "exports").exists()


@pytest.mark.slow
def test_evaluate_scores_a_masked_lm_run_as_its_pretraining_validated_it(tmp_path, capsys):
    """`tfllm evaluate` of a masked-LM pretraining run was refused ("its validation figures are in metrics.json"),
    though it scores a causal one: it now gives the masked LM's loss, masked accuracy and perplexity, named as
    metrics.json's val, on the run's own validation documents or on --data, masked alike every time.
    Pretrained from Python without an objective (masked LM, the default), which saved objective None and was then
    loaded as a causal LM ("Unable to find a subclass of CausalLM ... EncoderBackbone")."""
    import json

    import keras_hub

    import tfllm
    from tfllm import runs
    from tfllm.cli import main
    from tfllm.config import TrainConfig
    from tfllm.training.pretraining import pretrain

    run_dir = tmp_path / "mlm"
    pretrain(TrainConfig(task="pretrain", data="rotten_tomatoes", preset="tiny", max_rows=100, steps=4,
                         run_dir=str(run_dir)), verbose=0)
    assert runs.read_config(str(run_dir))["objective"] == "mlm"
    assert isinstance(runs.load_task(str(run_dir)), keras_hub.models.MaskedLM)
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    capsys.readouterr()

    def evaluated(*flags):
        assert main(["evaluate", str(run_dir), *flags]) == 0
        return json.loads(capsys.readouterr().out)

    own = evaluated()
    assert own.keys() == val.keys() and own["num_documents"] == val["num_documents"]
    assert 0 <= own["masked_accuracy"] <= 1 and np.isfinite(own["loss"])
    # Validation's masks (a fixed seed), so the run's own documents score as its pretraining said.
    assert own["loss"] == pytest.approx(val["loss"], abs=1e-3)
    assert own["masked_accuracy"] == pytest.approx(val["masked_accuracy"], abs=1e-3)
    assert evaluated() == own == tfllm.evaluate(str(run_dir))  # a second evaluation agrees; Python's too
    other = tmp_path / "other.txt"
    other.write_text("\n".join(f"a {w} film about {v} people" for w in ("fine", "dull", "long") for v in
                                ("old", "young", "sad", "happy")) + "\n")
    scored = evaluated("--data", str(other))
    assert scored.keys() == own.keys() and scored["num_documents"] == 12 and scored != own
    assert 0 <= scored["masked_accuracy"] <= 1 and np.isfinite(scored["loss"])
    for flags in (["--split", "test"], ["--label-column", "label"]):
        assert main(["evaluate", str(run_dir), *flags]) == 2
        out, err = capsys.readouterr()
        assert f"{' '.join(flags)} is not for a pretrained model" in err and err.count("\n") == 1 and out == "", err
    # Text the vocabulary does not cover: [UNK] is never masked, so nothing was scored, and it read loss 0.0 and
    # perplexity 1.0, a perfect score, exit 0, without a word.
    chinese = tmp_path / "zh3.txt"
    chinese.write_text("今天天气很好\n我们去图书馆\n他喜欢看电影\n", encoding="utf-8")
    assert main(["evaluate", str(run_dir), "--data", str(chinese)]) == 2
    out, err = capsys.readouterr()
    assert f"Nothing of --data {str(chinese)!r} can be scored: every token the masked LM reads of it is [UNK]" in err
    assert err.count("\n") == 1 and out == "", err
    # Mostly [UNK]: scored, with a warning (as the causal objective's evaluation gives) that the figures leave it out.
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("今天天气很好 the film\n我们去图书馆 a story\n", encoding="utf-8")
    assert main(["evaluate", str(run_dir), "--data", str(mixed)]) == 0
    out, err = capsys.readouterr()
    assert f"of the tokens of --data {str(mixed)!r} are [UNK]" in err and "never masks [UNK]" in err, err
    assert json.loads(out)["num_documents"] == 2


@pytest.mark.slow
def test_masked_lm_pretraining_with_the_character_tokenizer_and_fine_tuning_from_it(tmp_path, capsys):
    """`tfllm pretrain --objective mlm --tokenizer char` was a traceback: KerasHub's MaskedLMPreprocessor asks
    the tokenizer its vocabulary size inside the tf.data graph, which StringLookup answers only eagerly."""
    import json

    from tfllm.cli import main

    pre, tuned = tmp_path / "mlm_char", tmp_path / "clf"
    assert main(["pretrain", "--objective", "mlm", "--data", "rotten_tomatoes", "--preset", "tiny", "--tokenizer",
                 "char", "--max-rows", "100", "--steps", "2", "--run-dir", str(pre)]) == 0
    assert json.loads((pre / "metrics.json").read_text())["steps"] == 2
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", str(pre), "--preset", "tiny", "--max-rows",
                 "100", "--run-dir", str(tuned)]) == 0
    capsys.readouterr()
    assert main(["predict", str(tuned), "a fine film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("rotten", "fresh")


@pytest.mark.slow  # the session's tiny trained classifier (~10 s when no other test built it first)
def test_predict_probabilities_refuses_one_string(tiny_classifier_run):
    from tfllm.models.text_classifier import predict_probabilities
    from tfllm.runs import load_task

    model = load_task(tiny_classifier_run)
    with pytest.raises(UserInputError, match="wrap it in a list"):
        predict_probabilities(model, "a fine film")  # was one row of probabilities per token position, silently
    assert predict_probabilities(model, ["a fine film"]).shape == (1, 2)
    # A small model scores 2,048 texts a call (eager_batch_size); the batch does not change an answer.
    texts = [f"a fine film {i}" for i in range(300)]
    np.testing.assert_allclose(predict_probabilities(model, texts), predict_probabilities(model, texts, batch_size=7),
                               atol=1e-6)


def test_the_n_gram_tables_of_many_classes_keep_to_a_budget(capsys):
    """Each bucket of the per-class n-gram tables holds a row of the classes: `default` with 200 classes held
    262 M parameters (1 GB of weights, 11 GB while training). Beyond the budget the buckets shrink."""
    from tfllm.training.classifier import PER_CLASS_TABLES, TABLE_CELLS, class_tables

    default = resolve_preset("classify", "default")
    for num_classes in (2, 3, 4):  # the preset's own sizes, and nothing said
        assert class_tables(default, num_classes) == {name: default[name] for name in PER_CLASS_TABLES}
    assert capsys.readouterr().out == ""
    many = class_tables(default, 200)
    assert all(size * 200 <= TABLE_CELLS for size in many.values())
    assert "N-gram tables for 200 classes: wide_bigram_buckets 262,144 -> " in capsys.readouterr().out
    tiny = resolve_preset("classify", "tiny")
    assert class_tables(tiny, 200) == {name: tiny[name] for name in PER_CLASS_TABLES}  # already small


def test_eager_batch_size_scores_more_texts_a_call_the_smaller_the_model():
    from types import SimpleNamespace

    from tfllm.models.text_classifier import eager_batch_size

    def model(sequence_length, hidden_dim):  # what eager_batch_size reads of a task
        return SimpleNamespace(preprocessor=SimpleNamespace(sequence_length=sequence_length),
                               backbone=SimpleNamespace(hidden_dim=hidden_dim))

    assert eager_batch_size(model(16, 16)) == eager_batch_size(model(64, 32)) == 2048  # tiny, default: the most
    assert eager_batch_size(model(100, 128)) == 2**22 // (100 * 128)  # article: a 16 MB activation
    assert eager_batch_size(model(512, 768)) == 256  # BERT-base: never fewer than before
    assert eager_batch_size(SimpleNamespace(preprocessor=None)) == 256  # a task that does not say
    # Many classes: each n-gram id of the views gathers a row of num_classes; 2,048 rows of a 200-class model
    # peaked at 7.2 GB. The rows keep that gather within 2**25 floats; two or three classes keep 2,048.
    views = lambda num_classes: SimpleNamespace(  # noqa: E731
        preprocessor=SimpleNamespace(sequence_length=16, char_length=320), backbone=SimpleNamespace(hidden_dim=16),
        num_classes=num_classes, char_ngram_buckets=1000, word_ngram_buckets=1000)
    assert eager_batch_size(views(2)) == eager_batch_size(views(3)) == 2048
    assert eager_batch_size(views(200)) * (2 * 16 + 6 * 321) * 200 <= 2**25
    assert eager_batch_size(views(100_000)) == 16


def test_masked_lm_pretraining_says_how_much_of_long_documents_it_never_reads():
    """Each document is cut to the window (16 tokens for tiny), and the rest of a long line was dropped silently."""
    import tensorflow as tf

    from tfllm.training.pretraining import LENGTH_SAMPLE, long_document_note

    words = lambda texts: tf.strings.split(texts)  # noqa: E731
    docs = ["a b c"] * 3 + [" ".join(["w"] * 24)]  # one document of 24 tokens in a 14-token window
    note = long_document_note(docs, words, 16)
    assert note.startswith("tfllm: note: 1 of the 4 training documents are longer than the masked LM's window "
                           "of 14 tokens (sequence_length 16): 42% of their tokens (30% of all) are never read."), note
    assert "Split the text into shorter lines" in note and "raise it with --set sequence_length=N (now 16" in note
    # A Python caller is told its own argument (the note was a print in the command's spelling, unfilterable).
    from tfllm.errors import python_spelling

    assert "raise it with overrides={'sequence_length': N} (now 16" in python_spelling(note)
    assert "up to this preset's 512 positions" in long_document_note(docs, words, 16, positions=512)
    assert "at this preset's 16 positions already" in long_document_note(docs, words, 16, positions=16)
    assert long_document_note(docs[:3], words, 16) is None  # every document fits: nothing said
    # A classifier's texts alike (each text one label: the fix is the window alone, not splitting).
    note = long_document_note(docs, words, 16, classifier=True)
    assert note.startswith("tfllm: note: 1 of the 4 training texts are longer than the classifier's window of 14 "
                           "tokens (sequence_length 16): 42% of their tokens (30% of all) are never read. Raise it "
                           "with --set sequence_length=N (now 16; each step costs more)."), note
    assert long_document_note(docs, words, 16, positions=16, classifier=True).endswith(
        "never read. Its sequence_length is at this preset's 16 positions already.")
    # A few long texts among many short ones: their share of all tokens is "under 1%", not "0%".
    assert "tokens (under 1% of all) are never read" in long_document_note(docs[:3] * 500 + docs[3:], words, 16)
    many = docs * (LENGTH_SAMPLE // 2)
    assert f"of a sample of {LENGTH_SAMPLE:,} of the {len(many):,} training documents" in \
        long_document_note(many, words, 16, seed=1)
