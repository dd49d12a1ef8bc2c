"""The classifier's views of code points, character n-grams (`--set char_ngram_buckets=N`) and word
n-grams (`--set word_ngram_buckets=N`): what they hash are scikit-learn's `char_wb` n-grams and its words
and word bigrams; a run with them trains, reloads through KerasHub, explains, predicts in NumPy, and
exports to a SavedModel and to TFLite that compute what Keras computes."""

import json
import os

import numpy as np
import pytest

from conftest import main_in_process

BUCKETS = 1009  # prime, as the recipe's 262,139: the hash is reduced modulo it at every step


def reference_ids(text, buckets):
    """scikit-learn's character n-grams of each word, with a space either side (2 to 5 long), hashed by the
    formula the model documents: h = n, then h = (h * 4093 + code point) % buckets for each character."""
    from sklearn.feature_extraction.text import CountVectorizer

    grams = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()(text)
    ids = []
    for gram in grams:
        h = len(gram)
        for ch in gram:
            h = (h * 4093 + ord(ch)) % buckets
        ids.append(h)
    return sorted(ids)


def test_the_hashed_n_grams_are_scikit_learns_character_n_grams_of_words():
    from tfllm.models.preprocessors import code_points
    from tfllm.models.text_classifier import char_ngram_ids

    texts = ["A fine film, NOT dull.", "x", "  two  spaces\tand a tab\nand a line ", "", "it's a-ok!!", "CAFÉ ÀÞ ×",
             "ŁÓDŹ ŻÓŁW", "ВОЙНА И МИР", "ΑΘΗΝΑ", "ĐẠI VIỆT", "ＴＯＫＹＯ ＡＢ"]
    points = np.asarray(code_points(texts, 64))
    ids, mask = (np.asarray(a) for a in char_ngram_ids(points, BUCKETS))
    for text, row, row_mask in zip(texts, ids, mask):
        assert sorted(row[row_mask].tolist()) == reference_ids(text, BUCKETS), text
    # Cut at the preprocessor's length: a longer text reads as its first `length` code points.
    cut = np.asarray(code_points(["abcdef ghij"], 6))
    ids, mask = (np.asarray(a) for a in char_ngram_ids(cut, BUCKETS))
    assert sorted(ids[0][mask[0]].tolist()) == reference_ids("abcdef", BUCKETS)


def test_the_model_s_ngram_ids_layer_gives_the_functions_ids_and_none_in_training():
    import keras

    from tfllm.models.preprocessors import code_points
    from tfllm.models.text_classifier import NGRAM_IDS, NgramIds

    points = code_points(["A fine film, NOT dull.", "x", ""], 32)
    for kind, ngram_ids in NGRAM_IDS.items():
        layer = keras.layers.deserialize(keras.layers.serialize(NgramIds(kind, BUCKETS)))  # through its config
        assert (layer.kind, layer.buckets) == (kind, BUCKETS)
        for got, expected in zip(layer(points), ngram_ids(points, BUCKETS)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        # In training the blend passes the encoder's logits alone: no ids to compute.
        ids, mask = layer(points, training=True)
        assert tuple(ids.shape) == (3, 0) and tuple(mask.shape) == (3, 0)
        assert keras.backend.standardize_dtype(mask.dtype) == "bool"
        # Building a model takes its outputs' shapes from `compute_output_spec` (not a trace of `call`):
        # they are the shapes `call` gives, for a known length and an unknown one.
        for length, training in ((32, None), (None, None), (32, True)):
            specs = layer.compute_output_spec(keras.KerasTensor((None, length), "int32"), training=training)
            outputs = layer(points, training=training) if length else ngram_ids(points, BUCKETS)
            for spec, output in zip(specs, outputs):
                assert spec.shape == (None, output.shape[1] if length else None)
                assert spec.dtype == keras.backend.standardize_dtype(output.dtype)
        symbolic = layer(keras.Input((32,), dtype="int32"))
        assert [tuple(x.shape) for x in symbolic] == [(None, ids.shape[1]) for ids in layer(points)]


def test_a_run_saved_before_the_ngram_ids_layer_loads_with_the_same_predictions(tiny_classifier_run, tmp_path):
    """Runs saved before stop 61 computed the views' ids as Keras operations, not `NgramIds` layers: their
    weights file has no (empty) entries for those layers, and loads as it did."""
    import shutil
    import warnings

    import h5py

    from tfllm.training.classifier import load_run, predict_probabilities

    old = shutil.copytree(tiny_classifier_run, tmp_path / "old")
    with h5py.File(old / "task.weights.h5", "r+") as f:
        removed = [name for name in f["layers"] if name.startswith("ngram_ids")]
        for name in removed:
            del f["layers"][name]
    assert len(removed) == 2  # the character and the word view
    texts = ["a gorgeous, witty and moving film", "dull", "ＯＫ — très bien"]
    expected = predict_probabilities(load_run(tiny_classifier_run)[0], texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns about weights it cannot place
        model = load_run(str(old))[0]
    np.testing.assert_array_equal(predict_probabilities(model, texts), expected)


def reference_word_ids(text, buckets):
    """scikit-learn's words (lowercased runs of two or more word characters) and word bigrams, hashed by the
    formula the model documents: a word h = 1, then h = (h * 4093 + code point) % buckets over its first 20
    characters; a bigram h = 7, then h = (h * 4093 + word id) % buckets over its two words' ids."""
    from sklearn.feature_extraction.text import CountVectorizer

    def hashed(items, h):
        for x in items:
            h = (h * 4093 + x) % buckets
        return h

    words = [hashed(map(ord, w[:20]), 1) for w in CountVectorizer().build_analyzer()(text)]
    return sorted(words + [hashed(pair, 7) for pair in zip(words, words[1:])])


def test_the_hashed_words_are_scikit_learns_words_and_bigrams():
    from tfllm.models.preprocessors import code_points
    from tfllm.models.text_classifier import word_ngram_ids

    texts = ["A fine film, NOT dull.", "x", "", "it's a-ok!! a b cc", "“Quoted” — CAFÉ… ÀÞ×Ø 2² snake_case",
             "supercalifragilisticexpialidocious, twenty-one characters+ ok", "日本語 テキスト。次の\tline\nnext",
             # Capitals of other scripts lowercase as str.lower does: Polish, Russian, Greek (no final sigma),
             # Vietnamese, Armenian, Georgian and the fullwidth Latin of CJK text.
             "Źle ŁÓDŹ Żółw", "ВОЙНА и Мир", "ΑΘΗΝΑ Ἀθῆναι", "ĐẠI VIỆT Ước", "ՀԱՅԱՍՏԱՆ", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ", "ＴＯＫＹＯ ｔｏｋｙｏ"]
    points = np.asarray(code_points(texts, 96))
    ids, mask = (np.asarray(a) for a in word_ngram_ids(points, BUCKETS))
    for text, row, row_mask in zip(texts, ids, mask):
        assert sorted(row[row_mask].tolist()) == reference_word_ids(text, BUCKETS), text
    assert mask[0].sum() == 4 + 3  # "fine film not dull": four words, three bigrams ("A" is too short)
    cut = np.asarray(code_points(["one two three"], 9))  # read as "one two t": "t" is too short
    ids, mask = (np.asarray(a) for a in word_ngram_ids(cut, BUCKETS))
    assert sorted(ids[0][mask[0]].tolist()) == reference_word_ids("one two", BUCKETS)


@pytest.mark.parametrize("setting", ["char_ngram_buckets=1009", "word_ngram_buckets=1009"])
def test_a_code_point_view_needs_the_wide_path(tmp_path, capsys, setting):
    result = main_in_process(capsys, "train", "--task", "classify", "--data", "rotten_tomatoes", "--preset", "finetune",
                             "--set", setting, "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "add --set wide_bigram_buckets=N" in result.stderr
    assert not os.path.exists(tmp_path / "run")


@pytest.fixture(scope="module")
def char_run(tiny_classifier_run):
    """The session's tiny classifier: the `tiny` recipe has character and word views of 1,009 buckets
    each, as `default` has views of 262,139."""
    from tfllm import runs

    recipe = runs.read_recipe(tiny_classifier_run)
    assert recipe["char_ngram_buckets"] == recipe["word_ngram_buckets"] == BUCKETS
    return tiny_classifier_run


TEXTS = ["A wonderful, moving film!", "dull and far too long...", "I didn't like it (at all)", "unwatchably smug"]


@pytest.mark.slow
def test_a_run_with_the_views_fits_and_blends_them_in_and_loads_through_keras_hub(char_run):
    import keras_hub

    from tfllm import runs
    from tfllm.models.text_classifier import predict_probabilities

    model = runs.load_task(char_run)
    assert json.load(open(os.path.join(char_run, "preprocessor.json")))["config"]["char_length"] > 0
    probabilities = predict_probabilities(model, TEXTS)
    for view in ("char", "word"):
        table = model.get_layer(f"{view}_ngrams").get_weights()[0]
        assert table.shape == (BUCKETS, 1) and np.count_nonzero(table) > BUCKETS // 4  # fitted after training
        assert getattr(model.get_layer("blend"), f"{view}_scale").numpy() != 0  # and blended in
        # Each view changes what the model says: with its table zeroed, other probabilities.
        model.get_layer(f"{view}_ngrams").set_weights([np.zeros_like(table)])
        assert np.abs(predict_probabilities(model, TEXTS) - probabilities).max() > 1e-3
        model.get_layer(f"{view}_ngrams").set_weights([table])
    hub = keras_hub.models.TextClassifier.from_preset(char_run)
    np.testing.assert_allclose(predict_probabilities(hub, TEXTS), probabilities, atol=1e-6)


@pytest.mark.slow
def test_the_numpy_path_computes_the_views_as_keras_does(char_run):
    from tfllm import fast_classification, runs
    from tfllm.models.text_classifier import predict_probabilities

    fast = fast_classification.load(char_run)
    texts = TEXTS + ["", "x\ty  z", "a" * 400 + " cut after the preprocessor's char_length",
                     "UN CAFÉ ×, ΣΑΣ ВОЙНА Źle ＴＯＫＹＯ", "“Quoted” — twenty-one-characters-long … 2² snake_case a b cc dd"]
    np.testing.assert_allclose(fast.predict(texts), predict_probabilities(runs.load_task(char_run), texts), atol=1e-5)


@pytest.mark.slow
def test_explanations_hold_the_views_fixed_and_stay_complete(char_run):
    from tfllm import runs
    from tfllm.explanations import explain
    from tfllm.models.text_classifier import predict_probabilities

    model = runs.load_task(char_run)
    label_names = runs.read_labels(char_run)
    # Its code points stay whole (they were cut to the token count, and the score was another text's).
    expected = predict_probabilities(model, [TEXTS[2]])[0]
    for method in ("integrated_gradients", "occlusion"):
        e = explain(model, TEXTS[2], method=method, label_names=label_names)
        assert e.probabilities[e.label] == pytest.approx(float(expected[label_names.index(e.label)]), abs=1e-5)
    c = explain(model, TEXTS[2], label_names=label_names, steps=64).completeness
    assert abs(c["difference"]) > 1e-3 and c["error"] < 0.01 * abs(c["difference"]) + 2e-4, c


@pytest.mark.slow
def test_a_run_with_the_views_exports_saved_model_and_tflite_computing_what_keras_does(char_run, tmp_path, capsys):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, for the SavedModel)

    from tfllm import runs
    from tfllm.export.tflite_runtime import load_interpreter, run_signature
    from tfllm.models.text_classifier import predict_probabilities

    model = runs.load_task(char_run, dtype="float32")
    texts = TEXTS + ["ВОЙНА И МИР, Źle ŁÓDŹ", "ＴＯＫＹＯ ĐẠI VIỆT"]  # capitals the views lowercase by their table
    expected = predict_probabilities(model, texts)
    inputs = model.preprocessor(texts)
    assert main_in_process(capsys, "export", char_run, "--name", "chars", "--base-dir", tmp_path / "sm").returncode == 0
    saved = tf.saved_model.load(str(tmp_path / "sm" / "chars" / "1"))
    np.testing.assert_allclose(saved.signatures["serving_default"](text=tf.constant(texts))["probabilities"],
                               expected, atol=1e-5)
    by_ids = saved.signatures["classify_ids"](token_ids=inputs["token_ids"], code_points=inputs["code_points"])
    np.testing.assert_allclose(by_ids["probabilities"], expected, atol=1e-5)

    out = tmp_path / "tflite"
    assert main_in_process(capsys, "export", char_run, "--format", "tflite", "--out", out).returncode == 0
    ids_out = run_signature(load_interpreter(str(out / "model.tflite")),
                            token_ids=np.asarray(inputs["token_ids"]), code_points=np.asarray(inputs["code_points"]))
    np.testing.assert_allclose(ids_out["probabilities"], expected, atol=1e-5)
    expected, inputs = expected[:len(TEXTS)], {k: v[:len(TEXTS)] for k, v in inputs.items()}
    text_out = run_signature(load_interpreter(str(out / "model_text.tflite")), text=np.array(TEXTS, dtype=object))
    np.testing.assert_array_equal(text_out["code_points"], inputs["code_points"])  # ASCII texts: read alike
    np.testing.assert_allclose(text_out["probabilities"], expected, atol=1e-5)
    metadata = json.load(open(out / "metadata.json"))
    assert "code_points" in metadata["model.tflite"]["inputs"]
    assert json.load(open(out / "parity.json"))["model.tflite"]["max_abs_probability_difference"] < 1e-5


@pytest.mark.slow
def test_a_word_view_without_a_character_view_trains_reloads_and_predicts_in_numpy(tmp_path):
    import keras_hub

    from tfllm import fast_classification, runs
    from tfllm.config import TrainConfig
    from tfllm.models.text_classifier import predict_probabilities
    from tfllm.training.classifier import train_classifier

    run_dir = str(tmp_path / "words")
    train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=400, run_dir=run_dir,
                                 overrides={"char_ngram_buckets": 0}), verbose=0)
    model = runs.load_task(run_dir)
    assert not any(layer.name == "char_ngrams" for layer in model.layers)
    assert model.get_layer("blend").word_scale.numpy() != 0 and len(model.get_layer("blend").get_weights()) == 4
    probabilities = predict_probabilities(model, TEXTS)
    hub = keras_hub.models.TextClassifier.from_preset(run_dir)
    np.testing.assert_allclose(predict_probabilities(hub, TEXTS), probabilities, atol=1e-6)
    np.testing.assert_allclose(fast_classification.load(run_dir).predict(TEXTS), probabilities, atol=1e-5)


def test_more_buckets_than_the_int32_hash_allows_are_refused(tmp_path, capsys):
    from tfllm.models.text_classifier import MAX_HASH_BUCKETS

    result = main_in_process(capsys, "train", "--task", "classify", "--data", "rotten_tomatoes", "--preset", "tiny",
                             "--set", f"word_ngram_buckets={MAX_HASH_BUCKETS + 1}", "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "at most that" in result.stderr and result.stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "run")
