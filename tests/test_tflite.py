"""TFLite export of the tiny classifier: every quantization converts, runs in
ai_edge_litert and agrees with Keras; the raw-string model agrees with the
token-id one; bad input exits 2 and leaves no file behind."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("ai_edge_litert")

from tfllm import runs  # noqa: E402
from tfllm.cli import main  # noqa: E402
from tfllm.export import tflite, versioning  # noqa: E402

# Bounds for a 41-example test split: one flipped prediction moves accuracy
# by 2.4 points, so the 0.5 / 1.5-point bounds apply to the real
# model (see benchmarks/bench_tflite.py); here at most one / two flips.
BOUNDS = {
    # quantize: (max abs probability difference, max accuracy change in points)
    "none": (1e-4, 0.0),
    "dynamic": (1e-2, 2.5),
    "float16": (1e-2, 2.5),
    # Full-integer quantization of this 16-wide, one-epoch model is fragile: with the
    # preset runs' packing ([start] tokens [end]) the test split's largest difference is
    # 0.01-0.29 depending on the training seed (0.20 for the fixture's), all of it
    # quantization (the float export agrees to 1e-6); it was 0.04 before runs were presets.
    # Its probabilities sit near 0.5, so a difference that size flips 0-3 of the 41
    # predictions from run to run (threads make one-epoch training differ): the accuracy
    # change is not bounded here (None) but checked against the report's own figures; the
    # real model's int8 accuracy bound is benchmarks/bench_tflite.py's.
    "int8": (2.5e-1, None),
}


@pytest.fixture(scope="module")
def exports_and_int8_process(tiny_classifier_run, tmp_path_factory):
    """One export per quantization mode, into a versioned folder under one base dir, and what the int8 one printed.

    The int8 export (the last, version 4) is `tfllm export` in a fresh process, as a user's: its printed lines are
    what test_an_export_keeps_the_converter_s_and_interpreter_s_logs_off_the_terminal reads (one int8 export where
    that test made one of its own)."""
    base = tmp_path_factory.mktemp("savedmodels")
    directories = {q: tflite.export_tflite(tiny_classifier_run, "tiny", base_dir=str(base), quantize=q)
                   for q in BOUNDS if q != "int8"}
    int8 = run_cli("export", tiny_classifier_run, "--format", "tflite", "--quantize", "int8", "--name", "tiny",
                   "--base-dir", base)
    assert int8.returncode == 0, int8.stderr
    directories["int8"] = str(base / "tiny" / "4")
    return directories, int8


@pytest.fixture(scope="module")
def exports(exports_and_int8_process):
    return exports_and_int8_process[0]


@pytest.mark.slow
@pytest.mark.parametrize("quantize", list(BOUNDS))
def test_variant_converts_runs_and_agrees_with_keras(exports, quantize):
    directory = exports[quantize]
    for name in ("model.tflite", "model_text.tflite", "labels.json", "metadata.json", "parity.json"):
        assert os.path.exists(os.path.join(directory, name)), name
    assert os.path.exists(os.path.join(directory, "tokenizer", "tokenizer.json"))
    with open(os.path.join(directory, "parity.json")) as f:
        parity = json.load(f)
    max_diff, max_points = BOUNDS[quantize]
    for name in ("model.tflite", "model_text.tflite"):
        report = parity[name]
        assert report["bytes"] == os.path.getsize(os.path.join(directory, name))
        assert report["max_abs_probability_difference"] <= max_diff, (name, report)
        assert report["accuracy_change_points"] == pytest.approx(100 * (report["accuracy"] - parity["keras_accuracy"]))
        if max_points is not None:
            assert abs(report["accuracy_change_points"]) <= max_points, (name, report)
    # The string model matches the id model wherever both tokenized alike.
    assert parity["model_text.tflite"]["max_abs_difference_vs_id_model_same_tokens"] <= max(max_diff, 1e-6)


@pytest.mark.slow
def test_versions_are_numbered(exports):
    assert sorted(os.path.basename(d) for d in exports.values()) == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_models_lists_and_prunes_tflite_versions(exports, tmp_path, capsys):
    base = os.path.dirname(os.path.dirname(exports["none"]))
    copy = tmp_path / "savedmodels"
    shutil.copytree(base, copy)
    with open(copy / "tiny" / "4" / "model.tflite", "r+b") as f:
        f.truncate(100)  # a copy cut short: still the TFLite header, not the size parity.json recorded
    with open(copy / "tiny" / "3" / "model.tflite", "wb") as f:
        f.write(b"not a flatbuffer")
    assert main(["models", str(copy), "--json"]) == 0
    [model] = json.loads(capsys.readouterr().out)
    versions = {v["version"]: v for v in model["versions"]}
    assert sorted(versions) == [1, 2, 3, 4] and {v["format"] for v in versions.values()} == {"tflite"}
    ids = versions[1]["signatures"]["serving_default"]
    # Token ids, and the tiny recipe's character view reads the text's code points.
    assert ids["inputs"] == {"token_ids": {"dtype": "int32", "shape": [None, ids["inputs"]["token_ids"]["shape"][1]]},
                             "code_points": {"dtype": "int32", "shape": [None, ids["inputs"]["code_points"]["shape"][1]]}}
    assert ids["outputs"]["probabilities"]["dtype"] == "float32"
    # The strings-in model beside it is listed too (only model.tflite was).
    text = versions[1]["signatures"]["model_text.tflite:serving_default"]
    assert text["inputs"] == {"text": {"dtype": "string", "shape": [None]}} and "probabilities" in text["outputs"]
    assert "not a TFLite file" in versions[3]["error"] and versions[3]["signatures"] == {}
    assert "error" in versions[4] and versions[4]["signatures"] == {}
    assert main(["models", str(copy)]) == 0
    assert "TFLite (not servable by TF Serving)" in capsys.readouterr().out
    # Without the interpreter (the tflite extra) a good file is listed, not BROKEN.
    with pytest.MonkeyPatch.context() as patch:
        import sys

        patch.setitem(sys.modules, "ai_edge_litert", None)
        assert main(["models", str(copy)]) == 0
        out = capsys.readouterr().out
    assert 'signatures not read: pip install "tfllm[tflite]"' in out and out.count("BROKEN") == 2
    # Pruning a TFLite model keeps its newest good version, as for SavedModels.
    assert main(["models", str(copy), "--prune", "tiny", "--keep", "1"]) == 0
    assert sorted(os.listdir(copy / "tiny")) == ["2", "4"]


@pytest.mark.slow
def test_string_model_matches_id_model_and_keras_tokenizer(tiny_classifier_run, exports):
    import tensorflow as tf

    from tfllm.training.classifier import class_probabilities, load_run

    model, _, _ = load_run(tiny_classifier_run)
    texts = ["A wonderful, moving film!", "dull and far too long...", "", "I didn't like it (at all)", "HELLO 日本"]
    # The Keras preprocessor tokenizes and packs: [start] tokens [end], then pad ids.
    expected = tf.function(model.preprocessor)(tf.constant(texts))
    expected_ids = expected["token_ids"].numpy()
    directory = exports["none"]
    text_out = tflite.run_signature(
        tflite.load_interpreter(os.path.join(directory, "model_text.tflite")), text=np.array(texts, dtype=object)
    )
    np.testing.assert_array_equal(text_out["token_ids"], expected_ids)
    np.testing.assert_array_equal(text_out["code_points"], expected["code_points"].numpy())
    ids_out = tflite.run_signature(tflite.load_interpreter(os.path.join(directory, "model.tflite")),
                                   token_ids=expected_ids, code_points=expected["code_points"].numpy())
    np.testing.assert_allclose(text_out["probabilities"], ids_out["probabilities"], atol=1e-6)
    np.testing.assert_allclose(ids_out["probabilities"], np.asarray(class_probabilities(model, expected)), atol=1e-5)


def assert_classifier_metadata_names_what_loads(directory):
    """Every file metadata.json names exists, its named loader loads tokenizer/, and its ids are the
    tokenizer's: a classifier's named KerasHub's from_preset (no config.json there) and a WordPiece
    vocabulary.txt that character and SentencePiece exports do not have."""
    import re

    from tfllm.tokenizers import load_tokenizer

    meta = json.loads(open(os.path.join(directory, "metadata.json")).read())
    named = re.findall(r"[\w./-]+\.(?:txt|spm|json)", meta["tokenizer"] + " " + meta["token_ids"])
    assert named and all(os.path.isfile(os.path.join(directory, name)) for name in named), (named, meta["tokenizer"])
    assert "tfllm.tokenizers.load_tokenizer" in meta["tokenizer"] and "from_preset" not in meta["tokenizer"]
    tokenizer = load_tokenizer(os.path.join(directory, "tokenizer"))
    vocabulary = json.loads(open(os.path.join(directory, "vocabulary.json"), encoding="utf-8").read())
    assert vocabulary == list(tokenizer.get_vocabulary()) and len(vocabulary) == meta["vocabulary_size"]
    assert meta["special_token_ids"]["unknown"] == tokenizer.unk_token_id
    assert f"0 <= id < {meta['vocabulary_size']}" in meta["input_ranges"]
    return meta, tokenizer


@pytest.mark.slow
def test_wordpiece_classifier_metadata_names_files_that_exist_and_a_loader_that_works(exports, tiny_classifier_run,
                                                                                       capsys):
    meta, tokenizer = assert_classifier_metadata_names_what_loads(exports["none"])
    # An empty text's probabilities, read from no words, were said to be "near the class prior" (a tiny model
    # gave [0.055, 0.945] on balanced data); the advice to refuse it stays, in tfllm predict's words.
    assert "prior" not in meta["empty_text"] and "refuse it" in meta["empty_text"]
    assert main(["predict", tiny_classifier_run, ""]) == 2
    assert "Text 1 is empty" in capsys.readouterr().err and "Text 1 is empty" in meta["empty_text"]
    assert meta["tokenizing"]["kind"] == "wordpiece" and "NFKC_Casefold" in meta["tokenizing"]["tokenize"]
    # The strings-in model strips accents; the Keras tokenizer (and so tokenizing) does not.
    assert not tokenizer.strip_accents and "accents" not in meta["tokenizing"]["tokenize"]
    assert "strips accents" in meta["model_text.tflite"]["tokenizing_difference"]
    # How a long text is cut to the model's shapes: it was not said (longer code_points: "BROADCAST_TO failed").
    length = meta["sequence_length"]
    assert f"[start id] + the text's first {length - 2} token ids" in meta["model.tflite"]["inputs"]["token_ids"]
    if "code_points" in meta["model.tflite"]["inputs"]:
        assert "first" in meta["model.tflite"]["inputs"]["code_points"]


@pytest.mark.slow
def test_string_model_differences_are_all_named_and_checked_on_probe_texts(exports):
    """model_text.tflite also splits at U+00A0 and U+3000 and not at U+200B or the soft hyphen, which
    tokenizing_difference did not name, and parity.json's texts_tokenized_differently was 0 only because the
    test split holds none of them: probe texts now check each, reported apart."""
    from tfllm.export.tflite_classifier import PROBE_CHARACTERS

    with open(os.path.join(exports["none"], "metadata.json"), encoding="utf-8") as f:
        difference = json.load(f)["model_text.tflite"]["tokenizing_difference"]
    with open(os.path.join(exports["none"], "parity.json"), encoding="utf-8") as f:
        text_parity = json.load(f)["model_text.tflite"]
    assert text_parity["probe_characters_checked"] == list(PROBE_CHARACTERS)
    assert set(text_parity["probe_characters_tokenized_differently"]) == set(PROBE_CHARACTERS)
    for name in PROBE_CHARACTERS:
        assert name.split()[0] in difference, name


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_char_and_sentencepiece_classifier_metadata_names_files_that_exist(kind, tmp_path, capsys):
    """No fixture has these tokenizers: a 200-review run each (a few seconds)."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    run_dir = str(tmp_path / "run")
    train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", tokenizer=kind, max_rows=200,
                                 overrides={"vocabulary_size": 100}, run_dir=run_dir), verbose=0)
    directory = str(tmp_path / "tfl")
    assert main(["export", run_dir, "--format", "tflite", "--out", directory]) == 0  # --out needs no --name
    assert "load_tokenizer" in capsys.readouterr().out  # the printed hint names the loader that works
    meta, _ = assert_classifier_metadata_names_what_loads(directory)
    assert not os.path.exists(os.path.join(directory, "model_text.tflite"))
    assert meta["tokenizing"]["kind"] == kind  # SentencePiece's had no section: which file, which settings?
    # A classifier's output is probabilities: SentencePiece's detokenize spoke of completions and prompts.
    assert "detokenize" not in meta["tokenizing"]


FULL_WIDTH = ["ＡＢＣ全角字母１２３", "中国经济发展，很快！", "Ｈｅｌｌｏ　ｗｏｒｌｄ：１２３"]
# What a tour's phone app, following the old text, tokenized unlike tfllm: case folding is not lowercasing,
# only ASCII whitespace splits, control and format characters split and are dropped, ASCII symbols are
# punctuation and other symbols are not, words over 100 bytes are unknown, compatibility forms fold.
EDGE_TEXTS = ["straße STRASSE", "İstanbul ǅ ß ΣΑΣ", "don't waste\u00a0your time", "a\u3000great film",
              "line\u2028break", "zero\u200bwidth", "good\u00adfilm", "bell\x07char x\x00y", "tab\tnew\nline\r\x0cend",
              "price $5+tax good|film ~a^b <c> `d`", "€5 ©2020 30° 😀 ＄5", "ﬁlm ² x²", "e" * 100, "e" * 101,
              "é" * 50, "é" * 51, "Café naïve e\u0301", "wow" + "!" * 5, "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ", "mixed 中文 and english"]
# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt), which NFKC_Casefold removes.
DEFAULT_IGNORABLE = [(0xAD, 0xAD), (0x34F, 0x34F), (0x61C, 0x61C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                     (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
                     (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF)]


def wordpiece_app_ids(text, vocabulary, unk, suffix="##"):
    """tokenizing's steps for a lowercasing WordPiece tokenizer without accent stripping, as an app reads them,
    in plain Python (no tfllm, no TF Text)."""
    import unicodedata

    cjk = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
           (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
    ascii_punctuation = {chr(c) for c in [*range(0x21, 0x30), *range(0x3A, 0x41), *range(0x5B, 0x61), *range(0x7B, 0x7F)]}
    words, word = [], ""
    for ch in text:  # steps (1) and (2): CJK and punctuation are words of their own, spaces and Cc/Cf split
        category = unicodedata.category(ch)
        alone = any(a <= ord(ch) <= b for a, b in cjk) or ch in ascii_punctuation or category.startswith("P")
        if ch in " \t\n\r\f" or category in ("Cc", "Cf") or alone:
            words += [word] if word else []
            words += [ch] if alone else []
            word = ""
        else:
            word += ch
    words += [word] if word else []
    ids = []
    for word in words:
        word = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", word).casefold())  # step (3)
        word = "".join(c for c in word if not any(a <= ord(c) <= b for a, b in DEFAULT_IGNORABLE))
        if len(word.encode("utf-8")) > 100:  # step (4)
            ids.append(unk)
            continue
        pieces, start = [], 0  # step (5)
        while start < len(word):
            end = next((e for e in range(len(word), start, -1)
                        if (suffix if start else "") + word[start:e] in vocabulary), None)
            if end is None:
                pieces = [unk]
                break
            pieces.append(vocabulary[(suffix if start else "") + word[start:end]])
            start = end
        ids += pieces
    return ids


@pytest.mark.slow
def test_the_wordpiece_tokenizing_rule_gives_the_tokenizers_ids_on_full_width_and_edge_text():
    """It said "lowercase first, split at whitespace ...", and the tokenizer also folds full-width forms
    ("，" -> ",", "１２３" -> "1 ##2 ##3"), splits only at ASCII whitespace, drops control and format characters,
    treats ASCII symbols as punctuation and words over 100 bytes as unknown: an app following it got other ids.
    Here the rule is followed as an app would, step by step as it reads, in plain Python."""
    from tfllm.export.tflite_runtime import tokenizing_rule
    from tfllm.tokenizers import train_tokenizer

    corpus = ["abc 123 hello world, 中国 经济 发展 很快! 全角 字母: 1 2 3 strasse film fi 2 e ee eee good width "
              "zero bell char price tax wow full mixed and english line break end new tab é cafe naive time your "
              "don't waste great istanbul σ α dž x y"] * 20
    tokenizer = train_tokenizer(corpus, "wordpiece", 200)
    rule = tokenizing_rule(tokenizer)["tokenize"]
    for says in ("NFKC_Casefold", "'，' -> ','", "'１２３' -> '123'", "'straße' -> 'strasse'", "'ﬁ' -> 'fi'",
                 "'²' -> '2'", "U+200B", "U+00AD", "Cc and Cf", "U+2028", "!-/ :-@ [-` {-~", "€", "100 bytes",
                 "Default_Ignorable_Code_Point", "(1)", "(5)"):
        assert says in rule, says
    vocabulary = {token: i for i, token in enumerate(tokenizer.get_vocabulary())}
    unk = tokenizer.unk_token_id
    assert f"the unknown id ({unk})" in rule
    for text in FULL_WIDTH + EDGE_TEXTS:
        assert wordpiece_app_ids(text, vocabulary, unk) == [int(i) for i in tokenizer.tokenize(text)], text
    # The cases are not vacuous: the 100-byte limit and the folds each decide an id here.
    assert wordpiece_app_ids("e" * 100, vocabulary, unk) != [unk] == wordpiece_app_ids("e" * 101, vocabulary, unk)
    assert wordpiece_app_ids("straße", vocabulary, unk) == wordpiece_app_ids("strasse", vocabulary, unk) != [unk]


def test_the_sentencepiece_tokenizing_rule_names_the_model_file_and_its_normalization():
    import sentencepiece as spm

    from tfllm.export.tflite_runtime import tokenizing_rule
    from tfllm.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["abc 123 hello world, 中国 经济 发展 很快! 全角 字母: 1 2 3"] * 20, "sentencepiece", 40)
    rule = tokenizing_rule(tokenizer)
    assert rule["kind"] == "sentencepiece" and "'nmt_nfkc_cf'" in rule["tokenize"] and ".spm" in rule["tokenize"]
    app = spm.SentencePieceProcessor(model_proto=tokenizer.proto)  # what the rule says an app does
    for text in FULL_WIDTH:
        assert app.encode(text) == [int(i) for i in tokenizer.tokenize(text)], text


@pytest.mark.slow
def test_known_tokenization_difference_is_accents(tiny_classifier_run, exports):
    """TF Text's TFLite normalizer strips accents when it lowercases; KerasHub keeps them."""
    directory = exports["none"]
    out = tflite.run_signature(
        tflite.load_interpreter(os.path.join(directory, "model_text.tflite")), text=np.array(["Café", "Cafe"], dtype=object)
    )
    np.testing.assert_array_equal(out["token_ids"][0], out["token_ids"][1])


@pytest.mark.slow
def test_out_path_replaces_previous_export(tiny_classifier_run, exports, tmp_path, capsys):
    out = tmp_path / "phone"
    shutil.copytree(exports["none"], out)  # the previous export of this run (a copy: the fixture's stays as it is)
    (out / "model.tflite").write_bytes(b"the previous export's")
    assert main(["export", tiny_classifier_run, "--format", "tflite", "--out", str(out)]) == 0
    assert (out / "model.tflite").read_bytes() != b"the previous export's"  # replaced, not left in place
    printed = capsys.readouterr().out
    assert '"max_abs_probability_difference"' in printed
    assert sorted(os.listdir(tmp_path)) == ["phone"]


@pytest.mark.slow
@pytest.mark.parametrize("width, quantized", [(4, False), (64, True)])
def test_a_quantization_that_quantized_nothing_says_so(width, quantized, tmp_path, capsys):
    """A generator whose weights are all under the converter's 1,024-element threshold: --quantize dynamic
    wrote the float32 file while metadata.json said "dynamic" and nothing was printed."""
    import tensorflow as tf

    from tfllm.export.tflite_runtime import convert_saved_model, quantized_tensors

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(0).normal(size=(width, width)).astype("float32"))
    module.f = tf.function(lambda x: {"y": tf.matmul(x, module.w)},
                           input_signature=[tf.TensorSpec([1, width], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    capsys.readouterr()
    content = convert_saved_model(str(tmp_path), ["serving_default"], "dynamic")
    count = quantized_tensors(content, "dynamic", "model.tflite")
    assert (count > 0) == quantized
    printed = capsys.readouterr().out
    assert ("note: --quantize dynamic quantized nothing in model.tflite" in printed) == (not quantized)
    assert quantized_tensors(content, "none", "model.tflite") is None


@pytest.mark.slow
def test_metadata_counts_the_quantized_tensors(exports):
    for quantize in ("dynamic", "float16", "int8"):
        with open(os.path.join(exports[quantize], "metadata.json"), encoding="utf-8") as f:
            counts = json.load(f)["quantized_tensors"]
        narrow = np.float16 if quantize == "float16" else np.int8
        for name in ("model.tflite", "model_text.tflite"):
            details = tflite.load_interpreter(os.path.join(exports[quantize], name)).get_tensor_details()
            assert counts[name] == sum(d["dtype"] == narrow for d in details) > 0, (quantize, name)
    with open(os.path.join(exports["none"], "metadata.json"), encoding="utf-8") as f:
        assert "quantized_tensors" not in json.load(f)


@pytest.mark.slow
def test_out_refuses_to_delete_files_the_user_added_to_an_export(tiny_classifier_run, exports, tmp_path, capsys):
    """Re-exporting into an export folder deleted README_app.txt the user had put there, without a word."""
    out = tmp_path / "phone"
    shutil.copytree(exports["none"], out)
    (out / "README_app.txt").write_text("how the app reads this", encoding="utf-8")
    before = sorted(os.listdir(out))
    assert main(["export", tiny_classifier_run, "--format", "tflite", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "README_app.txt" in err and "another --out" in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(out)) == before and sorted(os.listdir(tmp_path)) == ["phone"]


def test_out_refuses_to_replace_an_export_of_another_task(tiny_classifier_run, tmp_path, capsys):
    """A generator exported into a classifier's folder (or the other way) replaced it without a word."""
    out = tmp_path / "phone"
    out.mkdir()
    (out / "parity.json").write_text("{}", encoding="utf-8")
    (out / "metadata.json").write_text(json.dumps({"task": "generate"}), encoding="utf-8")
    assert main(["export", tiny_classifier_run, "--format", "tflite", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another task ('generate'" in err and "another --out" in err and len(err.splitlines()) == 1
    assert sorted(os.listdir(out)) == ["metadata.json", "parity.json"] and sorted(os.listdir(tmp_path)) == ["phone"]


def test_out_refuses_a_users_file_before_converting(tiny_classifier_run, tmp_path, capsys, monkeypatch):
    """A README of the user's in --out was refused only once the whole export had run (minutes for a big
    model): it is refused before anything is converted (`export_classifier_files` is never reached)."""
    out = tmp_path / "phone"
    out.mkdir()
    (out / "parity.json").write_text("{}", encoding="utf-8")
    (out / "metadata.json").write_text(json.dumps({"task": "classify"}), encoding="utf-8")
    (out / "README_app.txt").write_text("how the app reads this", encoding="utf-8")
    converted = []
    export_files = tflite.export_classifier_files
    monkeypatch.setattr(tflite, "export_classifier_files",
                        lambda *args: converted.append(args) or export_files(*args))
    assert main(["export", tiny_classifier_run, "--format", "tflite", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "README_app.txt" in err and "another --out" in err and len(err.splitlines()) == 1
    assert converted == []
    assert sorted(os.listdir(out)) == ["README_app.txt", "metadata.json", "parity.json"]
    assert sorted(os.listdir(tmp_path)) == ["phone"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_out_folder_follows_the_umask(umask, tmp_path):
    # Not mkdtemp's 0700: a server running as another user must be able to read the export.
    def write(directory):
        open(os.path.join(directory, "model.tflite"), "wb").close()

    previous = os.umask(umask)
    try:
        out = versioning.write_out_dir(str(tmp_path / "phone"), write)
    finally:
        os.umask(previous)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask


def test_an_out_export_that_cannot_take_the_folder_s_place_puts_the_earlier_one_back(tmp_path, monkeypatch):
    """The earlier export had moved to a hidden `.old-*` folder when the rename of the new one failed (an I/O
    error): --out was gone, and the next export did not bring it back."""
    import errno

    def write_with(content):
        def write(directory):
            with open(os.path.join(directory, "model.tflite"), "w") as f:
                f.write(content)
            open(os.path.join(directory, "parity.json"), "w").close()  # what marks a tfllm TFLite export
        return write

    out = versioning.write_out_dir(str(tmp_path / "phone"), write_with("first"))
    rename = os.rename

    def failing_rename(source, target):  # the file system refuses the new export's move into place
        if os.path.basename(str(source)).startswith(".tmp-"):
            raise OSError(errno.EIO, "Input/output error")
        rename(source, target)

    monkeypatch.setattr(versioning.os, "rename", failing_rename)
    with pytest.raises(OSError):
        versioning.write_out_dir(out, write_with("second"))
    assert os.listdir(tmp_path) == ["phone"]
    assert (tmp_path / "phone" / "model.tflite").read_text() == "first"


# An export to --out killed while it writes (the TFLite files of a real model take seconds to minutes).
KILLED_EXPORT = """
import os, sys, time
from tfllm.export import versioning

def write(directory):
    with open(os.path.join(directory, "model.tflite"), "wb") as f:
        f.write(b"half a model")
    print(directory, flush=True)
    time.sleep(600)

versioning.write_out_dir(sys.argv[1], write)
"""


def test_the_folder_a_killed_out_export_leaves_is_removed_by_the_next_one(tmp_path):
    """It was `.tmp-XXXXXXXX`, naming no process, and nothing removed it (33 MB each for the tiny
    classifier); now `.tmp-PID@HOST-...` as in a versioned export, and the next export into the same
    folder removes those of processes that are gone, and nothing else of the user's."""
    import subprocess
    import sys

    killed = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "phone")],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    leftover = killed.stdout.readline().strip()
    killed.kill()
    killed.wait()
    assert os.path.basename(leftover).startswith(f".tmp-{killed.pid}@") and os.path.isdir(leftover)
    running = versioning.owned_temp_dir(str(tmp_path))  # an export of a live process (this one)
    for name in (".tmp-notes", ".tmp-k2j4x9qa"):  # the user's, or an export's from before names said whose
        (tmp_path / name).mkdir()

    def write(directory):
        open(os.path.join(directory, "model.tflite"), "wb").close()

    versioning.write_out_dir(str(tmp_path / "phone"), write)
    assert sorted(os.listdir(tmp_path)) == sorted([".tmp-notes", ".tmp-k2j4x9qa", os.path.basename(running), "phone"])
    assert os.listdir(tmp_path / "phone") == ["model.tflite"]


def _copy_run(run_dir, tmp_path, edit=None, remove=()):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for name in remove:
        os.remove(copy / name)
    if edit:
        config = json.loads((copy / runs.RUN_CONFIG).read_text())
        config.update(edit)
        (copy / runs.RUN_CONFIG).write_text(json.dumps(config))
    return str(copy)


@pytest.mark.parametrize(
    "case",
    ["missing", "half_written", "bad_quantize", "int8_generator", "int8_too_little_data", "out_is_a_file"],
)
def test_bad_input_exits_2_without_partial_files(case, tiny_classifier_run, tmp_path, capsys):
    run_dir, quantize, out = tiny_classifier_run, "none", None
    if case == "missing":
        run_dir = str(tmp_path / "nope")
    elif case == "half_written":
        # Training stopped while saving the preset: the task weights and metrics.json (written last) are missing.
        run_dir = _copy_run(tiny_classifier_run, tmp_path, remove=("task.weights.h5", runs.METRICS))
    elif case == "bad_quantize":
        quantize = "int4"
    elif case == "int8_generator":
        run_dir, quantize = _copy_run(tiny_classifier_run, tmp_path, edit={"task": "generate"}), "int8"
    elif case == "int8_too_little_data":
        # 20 rows leave ~16 training examples, too few to calibrate on.
        run_dir, quantize = _copy_run(tiny_classifier_run, tmp_path, edit={"max_rows": 20}), "int8"
    elif case == "out_is_a_file":
        out = str(tmp_path / "exports" / "model.tflite")
    base = tmp_path / "savedmodels"
    argv = ["export", run_dir, "--format", "tflite", "--quantize", quantize]
    argv += ["--out", out] if out else ["--name", "m", "--base-dir", str(base)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm: error: ") and "\n" not in err
    assert not base.exists() or not os.listdir(base)
    assert not (tmp_path / "exports").exists() or not os.listdir(tmp_path / "exports")


@pytest.mark.slow
def test_cli_process_exits_2_on_int8_with_too_little_data(tiny_classifier_run, tmp_path):
    run_dir = _copy_run(tiny_classifier_run, tmp_path, edit={"max_rows": 20})
    out = tmp_path / "phone"
    result = run_cli("export", run_dir, "--format", "tflite", "--quantize", "int8", "--out", out)
    assert result.returncode == 2, result.stderr
    assert "int8 needs at least" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p != "run"] == []


# --------------------------------------------------------------------------- text generator


@pytest.fixture(scope="module")
def tiny_generator_run(tmp_path_factory):
    """A tiny character-level Shakespeare generator (40 steps)."""
    from tfllm.config import TrainConfig
    from tfllm.training.causal_lm import train_causal_lm

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny_lm")
    config = TrainConfig(
        task="generate", data="shakespeare", preset="tiny", max_rows=50000, jit_compile=False, run_dir=run_dir
    )
    train_causal_lm(config, verbose=0)
    return run_dir


@pytest.fixture(scope="module")
def generator_export_and_process(tiny_generator_run, tmp_path_factory):
    """The tiny generator's float TFLite export (`tfllm export RUN --format tflite --out DIR`, in a fresh process as
    a user's), and what that process printed: the export is read (never changed) by the decode-loop test's "none"
    case and the TensorFlow-interpreter test, the printed lines by
    test_an_export_keeps_the_converter_s_and_interpreter_s_logs_off_the_terminal (one export where each made
    its own)."""
    directory = str(tmp_path_factory.mktemp("generator") / "lm")
    result = run_cli("export", tiny_generator_run, "--format", "tflite", "--out", directory)
    assert result.returncode == 0, result.stderr
    return directory, result


@pytest.fixture(scope="module")
def generator_export(generator_export_and_process):
    return generator_export_and_process[0]


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["none", "dynamic", "float16"])
def test_generator_decode_loop_reproduces_keras_greedy(tiny_generator_run, generator_export, tmp_path, quantize,
                                                        capsys):
    if quantize == "none":
        directory = generator_export
    else:
        directory = tflite.export_tflite(tiny_generator_run, "lm", out=str(tmp_path / "lm"), quantize=quantize)
    with open(os.path.join(directory, "parity.json")) as f:
        parity = json.load(f)
    # 100 tokens run far past the 16-token window, so the re-encoding path is covered too.
    assert parity["greedy_tokens"] == 100
    if quantize == "none":
        assert parity["greedy_exact_match"], parity
    else:
        assert 0.0 <= parity["greedy_agreement_rate"] <= 1.0

    from tfllm.export.tflite_causal_lm import generate_text
    from tfllm.generation import load_generator

    if quantize == "none":
        keras_generator = load_generator(tiny_generator_run, jit_compile=False)  # loaded once for its 3 texts
        keras_text = keras_generator.generate(["ROMEO:"], max_new_tokens=40, sampler="greedy")[0]
        assert generate_text(os.path.join(directory, "model.tflite"), "ROMEO:", max_new_tokens=40) == keras_text
        argv = ["generate", "--tflite", os.path.join(directory, "model.tflite"), "ROMEO:", "--max-new-tokens", "40"]
        assert main(argv) == 0
        assert capsys.readouterr().out == "ROMEO:" + keras_text + "\n"
        # --stop cuts the text as for a run directory; sampling options, which the greedy loop cannot
        # follow, are refused (they were accepted and ignored).
        stop = keras_text[len(keras_text) // 2:][:2]
        assert main(argv + ["--stop", stop, "--sampler", "greedy"]) == 0
        assert capsys.readouterr().out == "ROMEO:" + keras_text[: keras_text.find(stop)] + "\n"
        assert main(argv + ["--temperature", "0.5", "--seed", "1"]) == 2
        assert "--temperature, --seed would be ignored" in capsys.readouterr().err
        assert main(["generate", "--tflite", str(tmp_path / "missing.tflite"), "ROMEO:"]) == 2
        # The export's folder (what `export` prints) runs its model.tflite; one without it is named
        # (a folder was "does not exist").
        assert main(["generate", "--tflite", directory, "ROMEO:", "--max-new-tokens", "40"]) == 0
        assert capsys.readouterr().out == "ROMEO:" + keras_text + "\n"
        assert main(["generate", "--tflite", str(tmp_path), "ROMEO:"]) == 2
        assert "has no model.tflite" in capsys.readouterr().err
        # A file beside the export's metadata that is no TFLite model (its parity.json, a copy cut short) was
        # a traceback from the interpreter ("The model is not a valid Flatbuffer buffer").
        assert main(["generate", "--tflite", os.path.join(directory, "parity.json"), "ROMEO:"]) == 2
        err = capsys.readouterr().err
        assert "parity.json' cannot be read as a TFLite model" in err and err.count("\n") == 1, err
        # An app's loop, written from metadata.json's "loop" and vocabulary.json alone (the ids were only in
        # KerasHub's tokenizer files), gives the same text, past the window too.
        assert _documented_loop(directory, "ROMEO:", 40) == keras_text
        # A prompt longer than the window, as metadata.json's loop says to cut it (it did not say).
        meta = json.loads(open(os.path.join(directory, "metadata.json")).read())
        # Trained on running text, the model never learnt the end token: the loop skips it with the other
        # special ids (it stopped early where the Keras path went on), as every runtime does.
        special = meta["special_token_ids"]
        assert special["end"] in special["never_emitted"] and set(special["never_emitted"]) == set(special["all"])
        # The loop said "skip never_emitted; stop at the end id" with the end id in never_emitted: which applies?
        assert "never chosen: the loop runs until the number of new ids asked for" in meta["loop"]
        assert "stop at the end id" not in meta["loop"]
        # The character generator had no tokenizing section (the translator had one), nor a word on what
        # tfllm generate refuses.
        assert meta["tokenizing"]["kind"] == "char" and "refuse the prompt" in meta["tokenizing"]["tokenize"]
        # "" starts a new document, as it does for the run (it was refused: "this model has no run's document
        # separator"): metadata.json records the run's separator's ids, which an app and --tflite start from.
        assert meta["document_start_ids"] and "document_start_ids" in meta["prompt_rules"]
        new_document = keras_generator.generate(
            [""], max_new_tokens=20, sampler="greedy")[0]
        assert main(["generate", "--tflite", directory, "", "--max-new-tokens", "20"]) == 0
        assert capsys.readouterr().out == new_document + "\n"
        assert _documented_loop(directory, "", 20) == new_document
        long_prompt = "ROMEO:\nand soft, what light through yonder window breaks\n"
        assert len(long_prompt) > meta["sequence_length"] and "A prompt longer than" in meta["loop"]
        long_text = keras_generator.generate(
            [long_prompt], max_new_tokens=20, sampler="greedy")[0]
        assert _documented_loop(directory, long_prompt, 20) == long_text
        # An export written before the ids were recorded says so (not "this model has no separator").
        del meta["document_start_ids"]
        with open(os.path.join(directory, "metadata.json"), "w") as f:
            json.dump(meta, f)
        assert main(["generate", "--tflite", directory, ""]) == 2
        assert "has no document_start_ids" in capsys.readouterr().err


def _documented_loop(directory, prompt, max_new_tokens):
    from tfllm.export.tflite_runtime import load_interpreter

    with open(os.path.join(directory, "metadata.json")) as f:
        meta = json.load(f)
    with open(os.path.join(directory, "vocabulary.json")) as f:
        vocabulary = json.load(f)
    window, keep, special = meta["sequence_length"], meta["window_keep"], meta["special_token_ids"]
    interpreter = load_interpreter(model_path=os.path.join(directory, "model.tflite"))
    prefill, decode = interpreter.get_signature_runner("prefill"), interpreter.get_signature_runner("decode")

    def fill(ids):  # "prefill(the prompt's ids, zero-padded)"
        padded = np.zeros([1, window], np.int32)
        padded[0, :len(ids)] = ids
        return prefill(token_ids=padded)["cache"]

    ids, new = [vocabulary.index(c) for c in prompt] if prompt else list(meta["document_start_ids"]), []
    if len(ids) > window:  # "A prompt longer than the window ...: prefill the keep before its last, decode its last"
        cache, index = fill(ids[-1 - keep:-1]), keep
    else:
        cache, index = fill(ids), len(ids) - 1
    while len(new) < max_new_tokens:
        if index == window:  # "prefill the window_keep ids before the last one, decode the last at index keep"
            cache, index = fill(ids[-1 - keep:-1]), keep
        out = decode(token_id=np.array([[ids[-1]]], np.int32), cache=cache, index=np.array(index, np.int32))
        cache, logits = out["cache"], np.array(out["logits"][0])
        logits[special["never_emitted"]] = -np.inf  # "the argmax ... over the ids not in never_emitted"
        token = int(np.argmax(logits))
        if token == special["end"]:
            break
        ids, new, index = ids + [token], new + [token], index + 1
    return "".join(vocabulary[i] for i in new)


@pytest.mark.slow
def test_generator_int8_is_refused(tiny_generator_run, tmp_path, capsys):
    out = tmp_path / "lm"
    argv = ["export", tiny_generator_run, "--format", "tflite", "--quantize", "int8", "--out", str(out)]
    assert main(argv) == 2
    assert "not supported for a text generator" in capsys.readouterr().err
    assert not out.exists()


# What TensorFlow's converter and TFLite's interpreter printed between an export's own lines.
CONVERTER_NOISE = ("fully_quantize", "XNNPACK delegate", "tf.lite.Interpreter is deprecated")


@pytest.mark.slow
def test_an_export_keeps_the_converter_s_and_interpreter_s_logs_off_the_terminal(exports_and_int8_process,
                                                                                   generator_export_and_process):
    """Fresh processes, as a user's (TFLite logs XNNPACK's line once a process): an int8 classifier export (the
    converter's quantizer notes, its calibrator's deprecated interpreter) and a generator's (XNNPACK, in the
    parity check's interpreter) print tfllm's own lines and none of TensorFlow's. The two processes are the
    `exports` fixture's int8 export and the `generator_export` fixture's."""
    (directories, int8), generator = exports_and_int8_process, generator_export_and_process
    for out, result in ((directories["int8"], int8), generator):
        assert result.returncode == 0, result.stderr
        assert f"Exported {out}" in result.stdout and '"quantize"' in result.stdout, result.stdout
        assert not [noise for noise in CONVERTER_NOISE if noise in result.stderr + result.stdout], result.stderr


def test_a_conversion_that_fails_still_shows_tensorflow_s_reasons(tmp_path, capfd):
    """The capture hides the converter's logs only when it succeeds: a failed conversion writes them to stderr
    (here the op TFLite has no kernel for, which only the log names as "TF Select ops"), and stderr is back
    as it was after it, also after a KeyboardInterrupt (whose capture is not shown)."""
    import sys

    import tensorflow as tf

    from tfllm.export.tflite_runtime import convert_saved_model, quiet_tflite

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, text):
            return {"text": tf.strings.regex_replace(text, "a", "b")}  # no builtin TFLite op, custom ops off

    module = Strings()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    stderr = sys.stderr
    capfd.readouterr()
    with pytest.raises(Exception, match="StaticRegexReplace"):
        convert_saved_model(str(tmp_path / "sm"), ["serving_default"], "none")
    assert "TF Select ops: StaticRegexReplace" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        with quiet_tflite():
            os.write(2, b"from C\n")
            print("from Python", file=sys.stderr)
            raise KeyboardInterrupt
    os.write(2, b"after\n")
    assert sys.stderr is stderr and capfd.readouterr().err == "after\n"


@pytest.mark.slow
def test_a_generator_trained_on_a_csv_column_exports(tmp_path, capsys):
    """The parity prompt is read as training read the text: from a CSV's --text-column (the export read the
    file alone and said "has no text column 'text' ... Pass --text-column", which export does not have)."""
    import csv

    from tfllm.datasets.text import load_text_corpus

    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review"])
        for line in load_text_corpus("shakespeare")[0][:20000].splitlines():
            writer.writerow([line])
    run_dir = tmp_path / "run"
    assert main(["train", "--task", "generate", "--data", str(data), "--text-column", "review", "--preset", "tiny",
                 "--steps", "4", "--no-jit-compile", "--run-dir", str(run_dir)]) == 0
    out = tmp_path / "lite"
    assert main(["export", str(run_dir), "--format", "tflite", "--out", str(out)]) == 0
    assert json.loads((out / "parity.json").read_text())["greedy_exact_match"] is True


# --------------------------------------------------------------------------- translation


@pytest.fixture(scope="module")
def tiny_translation_run(tmp_path_factory):
    """A tiny translation run (numerals -> English words, one epoch)."""
    import csv
    import random

    words = {"一": "one", "二": "two", "三": "three", "四": "four"}
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("pairs")
    with open(folder / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("zh", "en"))
        for _ in range(60):
            chars = [rng.choice(list(words)) for _ in range(rng.randint(1, 2))]
            writer.writerow(("".join(chars), " ".join(words[c] for c in chars)))
    run_dir = str(folder / "tr")
    assert main(["train", "--task", "translate", "--data", str(folder / "pairs.csv"), "--source-column", "zh",
                 "--target-column", "en", "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir]) == 0
    return run_dir


def test_the_python_export_tflite_takes_a_translation_run(tiny_translation_run, tmp_path):
    """`tfllm.export.tflite.export_tflite` (notebook 03's call) refused a translation run that `tfllm export
    --format tflite` exports: "holds a translation model, not a text classifier or a text generator". The
    command goes through it now (the other translation tests export with the command), so one quantization
    a translation model does not take is enough to see the Python call reach the translation export."""
    from tfllm.errors import UserInputError
    from tfllm.export.tflite import export_tflite

    with pytest.raises(UserInputError, match="not supported for a translation model"):
        export_tflite(tiny_translation_run, "tr", quantize="int8", out=str(tmp_path / "lite"))
    assert not (tmp_path / "lite").exists()


@pytest.fixture(scope="module")
def translation_export(tiny_translation_run, tmp_path_factory):
    """`tfllm export RUN --format tflite --out DIR` of the tiny translation run, and what it printed to stderr:
    one export read (never changed) by the tests of what an export holds.

    The same --out export was first stopped part way (a KeyboardInterrupt at the parity check, its last step):
    its exit code and what it left in DIR's parent are returned for
    test_a_translation_export_stopped_part_way_leaves_no_out_folder, whose export after the stopped one is this
    one (one export where there were two)."""
    import contextlib
    import io

    from tfllm.export import tflite_seq2seq

    def stopped(*args, **kwargs):  # the parity check, the last step: everything else is written
        raise KeyboardInterrupt

    parent = tmp_path_factory.mktemp("exports")
    directory = str(parent / "tr")
    argv = ["export", tiny_translation_run, "--format", "tflite", "--out", directory]
    with pytest.MonkeyPatch.context() as patched, contextlib.redirect_stderr(io.StringIO()):
        patched.setattr(tflite_seq2seq, "TFLiteTranslator", stopped)
        stopped_code = main(argv)
    left_after_stop = os.listdir(parent)
    # The whole export runs with the run's data file moved away (read by
    # test_a_translation_export_needs_the_run_not_its_data): it needs the run, not its data.
    data = runs.read_config(tiny_translation_run)["data"]
    moved = str(tmp_path_factory.mktemp("moved") / "moved.csv")
    shutil.move(data, moved)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            assert main(argv) == 0
    finally:
        shutil.move(moved, data)
    return directory, err.getvalue(), stopped_code, left_after_stop


@pytest.mark.slow
def test_a_translation_export_stopped_part_way_leaves_no_out_folder(tiny_translation_run, translation_export, tmp_path,
                                                                   capsys):
    """`--out DIR` of a translation run was written in place: stopped after model.tflite, the tokenizer
    and metadata.json (Ctrl-C, a crash, a kill), DIR was left half-written without parity.json. It is
    written into a temporary folder renamed into place at the end, as the other TFLite exports are.
    The stopped export, and the whole one after it into the same DIR, are the `translation_export` fixture's."""
    directory, _, stopped_code, left_after_stop = translation_export
    assert stopped_code == 130
    assert left_after_stop == []
    # The same checks of --out as the other exports: a folder of the user's is not written into.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["export", tiny_translation_run, "--format", "tflite", "--out", str(tmp_path / "mine")]) == 2
    assert "is a non-empty folder that is not a tfllm TFLite export" in capsys.readouterr().err
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    # The export after the stopped one (the fixture's) wrote DIR whole, and nothing else beside it.
    assert sorted(os.listdir(directory)) == ["metadata.json", "model.tflite", "parity.json", "tokenizer",
                                             "vocabulary.json"]
    assert os.listdir(os.path.dirname(directory)) == ["tr"]


@pytest.mark.slow
def test_a_translation_parity_report_says_when_every_reference_output_is_the_same(translation_export):
    """A one-epoch translator that outputs the same text for every source had parity.json report a 1.0 exact
    match rate and nothing else; the report also lacked the classifier's and generator's quantize and size."""
    directory, err, _, _ = translation_export
    assert "same output" in err  # the printed note
    parity = json.load(open(os.path.join(directory, "parity.json")))
    assert parity["reference_outputs_degenerate"] is True and "same output" in parity["note"]
    assert parity["quantize"] == "none" and parity["model.tflite"]["bytes"] == os.path.getsize(
        os.path.join(directory, "model.tflite"))
    meta = json.load(open(os.path.join(directory, "metadata.json")))
    assert f"0 <= id < {meta['vocabulary_size']}" in meta["input_ranges"]
    # The translator's metadata had no signature shapes (the generator's had), said "self_cache = zeros"
    # without a shape, and left 95 logits beside a 100-entry vocabulary.json unexplained.
    from tfllm.export.tflite_runtime import load_interpreter

    interpreter = load_interpreter(os.path.join(directory, "model.tflite"))
    for key in ("encode", "decode"):
        runner = interpreter.get_signature_runner(key)
        for side, details in (("inputs", runner.get_input_details()), ("outputs", runner.get_output_details())):
            assert set(meta["signatures"][key][side]) == set(details)
            for name, detail in details.items():
                assert meta["signatures"][key][side][name].endswith(str([int(n) for n in detail["shape"]]))
    assert f"self_cache = zeros of {meta['signatures']['decode']['inputs']['self_cache']}" in meta["loop"]
    assert meta["signatures"]["decode"]["outputs"]["logits"] == f"float32[1, {meta['output_vocabulary_size']}]"
    assert f"ids 0 to {meta['output_vocabulary_size'] - 1}" in meta["output_vocabulary"] or (
        meta["output_vocabulary_size"] == meta["vocabulary_size"] and "every id" in meta["output_vocabulary"])


@pytest.mark.slow
def test_a_translation_export_needs_the_run_not_its_data(translation_export):
    """A run whose data file is gone (copied to another machine, the file moved) exported its SavedModel but
    not its TFLite file: the parity check split the data again for its test sources, and the export failed
    with 'Pairs file ... does not exist', which export has no flag to fix. The parity sources then come
    from the run's vocabulary, and parity.json says so. (The `translation_export` fixture's export ran with
    the run's data file moved away.)"""
    directory = translation_export[0]
    parity = json.load(open(os.path.join(directory, "parity.json")))
    assert parity["sources"] > 0 and "vocabulary" in parity["reference"]
    assert parity["greedy_exact_match_rate"] == 1.0


def test_the_export_warns_when_the_string_model_read_some_texts_unlike_keras(tmp_path):
    """parity.json counted the texts `model_text.tflite` tokenized unlike Keras (accents, some spaces), and the
    export said nothing of it."""
    from tfllm.export.tflite import parity_warning

    parity = {"num_examples": 41, "model_text.tflite": {"texts_tokenized_differently": 2}}
    (tmp_path / "parity.json").write_text(json.dumps(parity))
    warning = parity_warning(str(tmp_path))
    assert warning.startswith("note: model_text.tflite tokenized 2 of the 41 texts checked unlike the Keras model")
    assert "model.tflite, given the run's own tokenizer's ids, reads them as Keras does" in warning
    parity["model_text.tflite"]["texts_tokenized_differently"] = 0
    (tmp_path / "parity.json").write_text(json.dumps(parity))
    assert parity_warning(str(tmp_path)) is None
    del parity["model_text.tflite"]  # a model without a string file
    (tmp_path / "parity.json").write_text(json.dumps(parity))
    assert parity_warning(str(tmp_path)) is None


def _tensorflow_interpreter(path):
    """TensorFlow's own `tf.lite.Interpreter` (tfllm runs `ai_edge_litert`'s); it refuses ops over 5-D."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    assert max(len(t["shape"]) for t in interpreter.get_tensor_details()) <= 5
    return interpreter


def _merged(cache):
    """The Keras model's `[1, layers, 2, ...]` cache as the export's `[1, 2 * layers, ...]`."""
    cache = np.asarray(cache)
    return cache.reshape(cache.shape[0], -1, *cache.shape[3:])


@pytest.mark.slow
def test_every_signature_runs_in_tensorflow_s_interpreter_and_agrees_with_keras(
        tiny_generator_run, generator_export, tiny_translation_run, translation_export):
    """The 6-D key/value caches (`[1, layers, 2, len, heads, dim]`) ran in ai_edge_litert but TensorFlow's
    interpreter refused the decode steps: "StridedSlice op only supports 1D-5D input arrays"."""
    import tensorflow as tf

    from tfllm.generation import load_generator

    # The generator: prefill a prompt, then two decode steps, each against the Keras model's cached call.
    directory = generator_export
    interpreter = _tensorflow_interpreter(os.path.join(directory, "model.tflite"))
    prefill, decode = interpreter.get_signature_runner("prefill"), interpreter.get_signature_runner("decode")
    model = load_generator(tiny_generator_run, jit_compile=False, dtype="float32").model
    window = model.sequence_length
    ids = np.zeros([1, window], np.int32)
    ids[0, :5] = [5, 6, 7, 8, 9]
    keras_cache = tf.zeros([1, model.backbone.num_layers, 2, window, model.backbone.num_heads,
                            model.backbone.hidden_dim // model.backbone.num_heads])
    logits, _, keras_cache = model.call_with_cache(tf.constant(ids), keras_cache, 0)
    out = prefill(token_ids=ids)
    np.testing.assert_allclose(out["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(out["cache"], _merged(keras_cache), atol=1e-4)
    cache = out["cache"]
    for index, token in ((4, 9), (5, 10)):
        logits, _, keras_cache = model.call_with_cache(tf.constant([[token]]), keras_cache, index)
        out = decode(token_id=np.array([[token]], np.int32), cache=cache, index=np.array(index, np.int32))
        np.testing.assert_allclose(out["logits"], logits[:, 0], atol=1e-4)
        np.testing.assert_allclose(out["cache"], _merged(keras_cache), atol=1e-4)
        cache = out["cache"]

    # The translator (the module's export of it): encode a source, then two decode steps.
    directory = translation_export[0]
    interpreter = _tensorflow_interpreter(os.path.join(directory, "model.tflite"))
    encode, decode = interpreter.get_signature_runner("encode"), interpreter.get_signature_runner("decode")
    model = runs.load_translation_task(tiny_translation_run, dtype="float32")
    backbone = model.backbone
    packed = model.preprocessor.generate_preprocess(tf.constant(["二三"]),
                                                    decoder_sequence_length=backbone.decoder_sequence_length)
    source = np.asarray(packed["encoder_token_ids"], np.int32)
    mask = np.asarray(packed["encoder_padding_mask"], np.int32)
    encoded = encode(encoder_token_ids=source, encoder_padding_mask=mask)
    encoder_output = model.call_encoder(tf.constant(source), tf.constant(mask))
    np.testing.assert_allclose(encoded["encoder_output"], encoder_output, atol=1e-4)
    shape = [1, backbone.num_decoder_layers, 2, backbone.decoder_sequence_length, backbone.num_heads,
             backbone.hidden_dim // backbone.num_heads]
    self_cache = tf.zeros(shape)
    shape[3] = backbone.encoder_sequence_length
    _, _, _, cross_cache = model.call_decoder_with_cache(encoder_output, tf.constant(mask), tf.zeros([1, 1], "int32"),
                                                         self_cache, 0, tf.zeros(shape), 0)
    np.testing.assert_allclose(encoded["cross_cache"], _merged(cross_cache), atol=1e-4)
    lite_cache = np.zeros(_merged(self_cache).shape, np.float32)
    start = int(model.preprocessor.tokenizer.start_token_id)
    for index, token in ((0, start), (1, 5)):
        logits, _, self_cache, _ = model.call_decoder_with_cache(
            encoder_output, tf.constant(mask), tf.constant([[token]]), self_cache, index, cross_cache, None)
        out = decode(token_id=np.array([[token]], np.int32), index=np.array(index, np.int32), self_cache=lite_cache,
                     cross_cache=encoded["cross_cache"], encoder_output=encoded["encoder_output"],
                     encoder_padding_mask=mask)
        np.testing.assert_allclose(out["logits"], logits[:, 0], atol=1e-4)
        np.testing.assert_allclose(out["self_cache"], _merged(self_cache), atol=1e-4)
        lite_cache = out["self_cache"]
    assert json.loads(open(os.path.join(directory, "parity.json")).read())["greedy_exact_match_rate"] == 1.0


@pytest.mark.parametrize("task, names", [("translate", ("translation export", "tfllm translate RUN_DIR")),
                                         ("classify", ("classifier export", "tfllm predict RUN_DIR"))])
def test_generate_tflite_names_another_export_and_what_runs_it(tmp_path, capsys, task, names):
    """A translator's export (metadata.json there, task: translate) was 'not a tfllm text-generator export (no
    metadata.json saying so beside it)'."""
    (tmp_path / "model.tflite").write_bytes(b"not read")
    (tmp_path / "metadata.json").write_text(json.dumps({"task": task}))
    assert main(["generate", "--tflite", str(tmp_path), "the"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metadata.json" not in err and f"task: {task}" in err, err
    assert all(name in err for name in names), err


def test_the_tokenizer_entry_names_a_sentencepiece_vocabulary_file(tmp_path):
    """A SentencePiece generator's metadata.json named only a Python loader, not the vocabulary.spm an app reads."""
    from tfllm.export.tflite_runtime import tokenizer_entry
    from tfllm.tokenizers import CharacterTokenizer, train_tokenizer

    text = "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. " * 20
    train_tokenizer(text.split(". "), "sentencepiece", 60).save_to_preset(str(tmp_path / "spm" / "tokenizer"))
    entry = tokenizer_entry(str(tmp_path / "spm"))
    assert "tokenizer/assets/tokenizer/vocabulary.spm" in entry, entry
    assert (tmp_path / "spm" / "tokenizer" / "assets" / "tokenizer" / "vocabulary.spm").is_file()
    CharacterTokenizer(vocabulary=list("ab")).save_to_preset(str(tmp_path / "char" / "tokenizer"))
    assert "tokenizer/tokenizer.json" in tokenizer_entry(str(tmp_path / "char"))


def test_sample_prompt_finds_a_known_stretch_for_a_wordpiece_vocabulary_that_lacks_characters():
    """A 300-piece WordPiece generator of Chinese news had its TFLite export refused: the search for a prompt
    its vocabulary encodes went past the texts' starts only for character tokenizers."""
    from tfllm.generation import sample_prompt
    from tfllm.tokenizers import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocabulary=["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "中", "国"])
    train_text = "天地人" * 100 + "中国" * 5 + "天地" * 100
    prompt = sample_prompt(tokenizer, 8, "天天天天天天天天", train_text)
    assert prompt is not None and set(prompt) <= {"中", "国"} and len(prompt) == 8, prompt


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    """`--out ""` was falsy downstream: the export went to savedmodels/NAME/VERSION without a word."""
    from lm_utils import write_records

    from tfllm.errors import UserInputError

    run_dir = write_records(tmp_path / "run", "classify")  # refused before the model loads: records suffice
    monkeypatch.chdir(tmp_path / "run")
    before = sorted(os.listdir("."))
    for out in ("", " "):
        assert main(["export", run_dir, "--format", "tflite", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out is empty" in err, err
        with pytest.raises(UserInputError, match="out is empty"):
            tflite.export_tflite(run_dir, "z", out=out)
    assert sorted(os.listdir(".")) == before  # no savedmodels/


@pytest.mark.slow
def test_a_wordpiece_tflite_generator_puts_the_space_before_its_first_word(tmp_path):
    """`tfllm generate --tflite` and the metadata an app reads give the completion with the space before its
    first whole word, as `Generator.generate` (it was glued to the prompt: `the kinguke`)."""
    from lm_utils import MIXED_TEXT, tiny_wordpiece_generator, write_run_dir

    from tfllm.config import COMPLETION_SPACE, TrainConfig
    from tfllm.export.tflite_causal_lm import generate_text

    generator = tiny_wordpiece_generator()
    run_dir = write_run_dir(generator, tmp_path / "run")
    (tmp_path / "mixed.txt").write_text(MIXED_TEXT * 5, encoding="utf-8")  # the parity check's prompt comes from it
    TrainConfig(task="generate", data=str(tmp_path / "mixed.txt"), preset="tiny", run_dir=run_dir).to_json(
        runs.path(run_dir, runs.RUN_CONFIG))
    directory = tflite.export_tflite(run_dir, "wp", out=str(tmp_path / "wp"))
    with open(os.path.join(directory, "metadata.json")) as f:
        assert COMPLETION_SPACE in json.load(f)["detokenize"]
    for prompt in ("hello", "中国", "hello world ,"):
        text = generate_text(os.path.join(directory, "model.tflite"), prompt, max_new_tokens=8)
        assert text == generator.generate([prompt], 8, sampler="greedy")[0]
        new = generator.greedy_ids(generator.encode(prompt), 8)
        assert prompt + text == generator.decode(generator.encode(prompt).tolist() + new)


def test_export_help_says_which_models_take_int8(capsys):
    """It said --quantize takes "none, dynamic, float16 or int8", and a generator refuses int8."""
    from tfllm.export.tflite import QUANTIZE_MODES

    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "int8 (classifiers only" in text
    assert "int8" not in QUANTIZE_MODES["generate"] and "take none, dynamic or float16" in text


def test_generate_tflite_on_the_model_folder_names_its_newest_version(tmp_path, capsys):
    """`tfllm export --format tflite` writes NAME/1/, NAME/2/...; `generate --tflite NAME` said only "has no
    model.tflite", not that a version folder is what to pass."""
    model = tmp_path / "gpt2-tfl"
    for version in ("1", "2", "10"):
        (model / version).mkdir(parents=True)
        if version != "10":  # an export cut short has no model file: not the one to name
            (model / version / "model.tflite").write_bytes(b"")
    assert main(["generate", "--tflite", str(model), "ROMEO:"]) == 2
    err = capsys.readouterr().err
    assert f"pass a version folder, e.g. {model / '2'}" in err and err.count("\n") == 1, err
