"""Fine-tuning KerasHub's own models: tiny BERT and GPT-2 presets built here, driven through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest

from conftest import serving_process
from tfllm.cli import main
from tfllm.errors import UserInputError

pytestmark = pytest.mark.slow

WORDS = ["the", "film", "was", "good", "bad", "dull", "fun", "a", "and", "movie", "great", "boring", "not", "very"]


@pytest.fixture(scope="module")
def bert_preset(tmp_path_factory):
    """A 2-layer BertBackbone with a few-dozen-word WordPiece vocabulary, saved with save_to_preset."""
    keras.utils.set_random_seed(0)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz,.'!") + \
        ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocabulary = list(dict.fromkeys(pieces))
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)
    path = str(tmp_path_factory.mktemp("presets") / "bert_tiny")
    keras_hub.models.BertTextClassifier(backbone, num_classes=4, preprocessor=preprocessor).save_to_preset(path)
    return path, backbone


@pytest.fixture(scope="module")
def gpt2_preset(tmp_path_factory):
    """A 2-layer GPT2Backbone with a byte-level BPE vocabulary of single bytes: printable ASCII, space and newline."""
    keras.utils.set_random_seed(0)
    byte_chars = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    vocabulary = {token: i for i, token in enumerate(byte_chars + ["Ġt", "he", "<|endoftext|>"])}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t", "h e"])
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=64)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=32)
    path = str(tmp_path_factory.mktemp("presets") / "gpt2_tiny")
    keras_hub.models.GPT2CausalLM(backbone, preprocessor=preprocessor).save_to_preset(path)
    return path, backbone


@pytest.fixture(scope="module")
def bert_run(bert_preset, tmp_path_factory):
    """`(run_dir, stderr)`: a classifier fine-tuned from the BERT preset (recipe tiny, 300 reviews, one epoch),
    trained once for the tests that only read it (its model, evaluation, records and exports: SavedModel in the
    end-to-end test, TFLite in `preset_tflite_exports`) or what the command printed on stderr."""
    import contextlib
    import io

    run_dir = tmp_path_factory.mktemp("bert_run") / "bert_run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", bert_preset[0],
                     "--preset", "tiny", "--max-rows", "300", "--epochs", "1", "--run-dir", str(run_dir)])
    assert code == 0, err.getvalue()
    return run_dir, err.getvalue()


@pytest.fixture(scope="module")
def gpt2_as_is_run(gpt2_preset, tmp_path_factory):
    """The GPT-2 preset kept as it is (`--steps 0` on 4,000 rows of shakespeare), written once for the tests
    that only read the run: its generation and its TFLite export (`preset_tflite_exports`)."""
    run_dir = tmp_path_factory.mktemp("gpt2_as_is") / "as_is"
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", gpt2_preset[0], "--steps", "0",
                 "--max-rows", "4000", "--run-dir", str(run_dir)]) == 0
    return run_dir


RELOAD = """
import json, sys
import tensorflow_text  # the tokenizer's ops
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""


def test_fine_tune_a_keras_hub_bert_preset_end_to_end(bert_preset, bert_run, preset_tflite_exports, tmp_path,
                                                     capsys):
    """The shared fine-tuned BERT run (`bert_run`): its model and tokenizer, `tfllm evaluate`, a SavedModel
    reloaded in a fresh process and served over REST, and its TFLite export's parity (`preset_tflite_exports`)."""
    from tfllm.training.classifier import load_run, predict_probabilities

    preset, backbone = bert_preset
    run_dir, _ = bert_run
    model, labels, _ = load_run(str(run_dir))
    assert type(model).__name__ == "BertTextClassifier" and labels == ["rotten", "fresh"]
    # The preset's tokenizer is used as it is (no new vocabulary) and the backbone starts from its weights.
    assert model.preprocessor.tokenizer.get_vocabulary() == keras_hub.tokenizers.Tokenizer.from_preset(preset).get_vocabulary()
    assert model.backbone.count_params() == backbone.count_params()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert 0 <= json.loads(out[out.index("{"):])["accuracy"] <= 1

    assert main(["export", str(run_dir), "--name", "bert", "--base-dir", str(tmp_path / "sm")]) == 0
    texts = ["a good film", "dull and boring"]
    out = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "sm" / "bert" / "1"), json.dumps(texts)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = predict_probabilities(model, texts)
    np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), expected, atol=1e-5)

    # One served request, over TF Serving's REST API from the local server.
    served = _serve_once(tmp_path / "sm", "bert", texts)
    np.testing.assert_allclose([row["probabilities"] for row in served], expected, atol=1e-5)

    # TFLite: the token-id model and (BERT's WordPiece has TF Text kernels) the string model, with parity
    # (this run's export, made once in `preset_tflite_exports`).
    assert preset_tflite_exports["bert"][0] == run_dir
    parity = json.loads((preset_tflite_exports["bert"][1] / "parity.json").read_text())
    assert parity["model.tflite"]["max_abs_probability_difference"] < 1e-4


def test_a_handle_on_a_machine_without_network_is_one_line_at_once_and_a_cached_one_still_loads(
        bert_preset, tmp_path, monkeypatch, capsys):
    """Offline, `--from-preset hf://...` retried each file five times with back-off (27 s here) and then said the
    preset "has no config.json"; a Kaggle handle or KerasHub name printed urllib3's NameResolutionError."""
    import shutil
    import socket
    import time

    from huggingface_hub import constants

    def no_network(host, *args, **kwargs):  # as on a machine without network, whatever the test machine has
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sleeps = []
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(time, "sleep", sleeps.append)  # huggingface_hub's back-off between retries
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test, as is the attribute below
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    argv = ["--preset", "tiny", "--max-rows", "300", "--epochs", "1"]
    for handle, host, fetch in (("hf://someone/bert_tiny", "huggingface.co",
                                 "`hf download someone/bert_tiny --local-dir FOLDER`"),
                                ("bert_tiny_en_uncased", "api.kaggle.com",
                                 "kagglehub.model_download('keras/bert/keras/bert_tiny_en_uncased/"),
                                ("kaggle://keras/bert/keras/bert_tiny_en_uncased/2", "api.kaggle.com",
                                 "kagglehub.model_download('keras/bert/keras/bert_tiny_en_uncased/2')")):
        for task in ("classify", "translate"):
            data = ["--data", "rotten_tomatoes"] if task == "classify" else ["--data", "cedict", "--source-column",
                                                                             "simplified", "--target-column", "english"]
            assert main(["train", "--task", task, *data, "--from-preset", handle, *argv,
                         "--run-dir", str(tmp_path / "r")]) == 2
            err = capsys.readouterr().err
            assert f"cannot reach {host} (no network)" in err and fetch in err and err.count("\n") == 1, err
    assert sleeps == [] and not (tmp_path / "r").exists()

    # The same hf:// handle once its files are in the Hugging Face cache (its layout: a snapshot per commit,
    # refs/main naming the current one) fine-tunes without network.
    snapshot = tmp_path / "hf" / "models--someone--bert_tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(bert_preset[0], snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", "hf://someone/bert_tiny", *argv,
                 "--run-dir", str(tmp_path / "cached")]) == 0
    assert json.loads((tmp_path / "cached" / "metrics.json").read_text())["test"]["accuracy"] >= 0
    # ...and, being there, is refused for what it is, not for the network.
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", "hf://someone/bert_tiny",
                 *argv, "--run-dir", str(tmp_path / "r")]) == 2
    assert "has no causal LM" in capsys.readouterr().err
    assert sleeps == []


def test_frozen_backbone_epochs_are_logged_as_the_run_s_first_epochs(bert_preset, tmp_path):
    from tfllm.training.reporting import history_from_logs

    run_dir = tmp_path / "frozen"
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", bert_preset[0],
                 "--preset", "finetune", "--max-rows", "300", "--epochs", "3", "--set", "freeze_epochs=1",
                 "--set", "early_stopping=false", "--run-dir", str(run_dir)]) == 0
    # Before: the frozen epoch was missing from TensorBoard, and the rest were logged as epochs 0 and 1.
    history = history_from_logs(str(run_dir / "logs"))
    assert len(history["loss"]) == len(history["val_loss"]) == len(history["learning_rate"]) == 3
    # One warm-up and one cosine decay over the whole run: it started again after the frozen epoch (the
    # second epoch's rate was the first's), and never came down to zero.
    rates = history["learning_rate"]
    assert rates[0] > rates[1] > rates[2] and rates[2] < 0.05 * rates[0], rates
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 3


def _serve_once(base, name, texts):
    import socket

    from tfllm.serving import RestClient

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with RestClient("127.0.0.1", ports[0], timeout=30) as client:
        with serving_process([base, "--port", ports[0], "--grpc-port", ports[1]], lambda: client.status(name),
                             base.parent / "server.log", timeout=120):
            return client.predict(name, instances=texts)


def test_fine_tune_a_keras_hub_gpt2_preset_and_generate(gpt2_preset, tmp_path, capsys):
    from tfllm.generation import load_generator

    preset, backbone = gpt2_preset
    run_dir = tmp_path / "gpt2_run"
    before = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings)
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", preset, "--preset", "tiny",
                 "--steps", "8", "--max-rows", "4000", "--no-jit-compile", "--run-dir", str(run_dir)]) == 0
    generator = load_generator(str(run_dir), jit_compile=False)
    assert type(generator.model).__name__ == "GPT2CausalLM"
    assert generator.end_id == generator.tokenizer.end_token_id  # the preset's own end token
    after = keras.ops.convert_to_numpy(generator.model.backbone.token_embedding.embeddings)
    assert np.abs(after - before).max() > 0  # it trained
    text = generator.generate(["the "], max_new_tokens=10, sampler="greedy")[0]
    assert isinstance(text, str)
    # GPT-2's preprocessor puts <|endoftext|> before a text: tfllm's prompts begin with it, and the run loaded
    # by KerasHub's own classes continues a prompt with the same text.
    start = generator.tokenizer.start_token_id
    assert generator.encode("the ").tolist() == [start] + np.asarray(generator.tokenizer("the ")).tolist()
    hub = keras_hub.models.CausalLM.from_preset(str(run_dir))
    hub.compile(sampler="greedy")
    assert hub.generate("the ", max_length=len(generator.encode("the ")) + 10) == "the " + text
    # `evaluate` scores the validation text as training last did: its windows, each after the start token.
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["loss"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["val"]["loss"], abs=1.2e-4)
    # The command streams; a KerasHub model has no position past its window, so neither may the stream
    # (its buffer was window + 64 wide: a traceback on every request).
    capsys.readouterr()
    assert main(["generate", str(run_dir), "the ", "--max-new-tokens", "10", "--sampler", "greedy"]) == 0
    assert capsys.readouterr().out == "the " + text + "\n"
    # A prompt that fills the window leaves room for no new token: it was told to "ask for at most 0 new tokens".
    assert main(["generate", str(run_dir), "the " * generator.window, "--max-new-tokens", "1"]) == 2
    assert f"shorten it to at most {generator.window - 1} tokens" in capsys.readouterr().err
    # The SavedModel decodes at most the model's window (its width buckets start at 128), and says when a
    # request does not fit.
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops for the reloaded graph)

    from tfllm.export.causal_lm import GREEDY_SIGNATURE, export_causal_lm

    loaded = tf.saved_model.load(export_causal_lm(str(run_dir), "g", base_dir=str(tmp_path / "sm")))
    greedy = loaded.signatures[GREEDY_SIGNATURE]
    out = greedy(prompt=tf.constant(["the "]), max_new_tokens=tf.constant([10]))
    assert out["completion"].numpy()[0].decode() == text
    window = generator.window
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"this model sees at most {window} tokens"):
        greedy(prompt=tf.constant(["the "]), max_new_tokens=tf.constant([window]))
    # TFLite: GPT-2's own cache through the prefill/decode signatures, greedy ids as the Keras model's.
    _check_tflite_generator(run_dir, generator, tmp_path / "sm", capsys)
    # Settings its own model fixes are refused, not recorded and ignored.
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", preset, "--preset", "tiny",
                 "--set", "hidden_dim=64", "--run-dir", str(tmp_path / "other")]) == 2
    assert "hidden_dim would be ignored" in capsys.readouterr().err


def test_steps_0_keeps_a_preset_as_it_is_and_runs_it_as_keras_hub_does(gpt2_preset, gpt2_as_is_run, bert_preset,
                                                                       tmp_path, capsys):
    """`--steps 0`: a KerasHub causal LM scored on the text and written as a run (`gpt2_as_is_run`), untrained,
    so that tfllm generates, exports and serves the preset as KerasHub itself generates with it."""
    from tfllm.generation import load_generator

    preset, backbone = gpt2_preset
    run_dir = gpt2_as_is_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 0 and metrics["val"]["loss"] > 0 and "speed" not in json.dumps(metrics)
    generator = load_generator(str(run_dir), jit_compile=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(generator.model.backbone.token_embedding.embeddings),
                                  keras.ops.convert_to_numpy(backbone.token_embedding.embeddings))
    hub = keras_hub.models.CausalLM.from_preset(preset)
    # Its own packing length, not the recipe's (the window of a rotary-position model such as Llama).
    assert generator.model.preprocessor.sequence_length == hub.preprocessor.sequence_length == 32
    hub.compile(sampler="greedy")
    capsys.readouterr()
    assert main(["generate", str(run_dir), "the ", "--max-new-tokens", "12", "--sampler", "greedy"]) == 0
    assert capsys.readouterr().out == hub.generate("the ", max_length=len(generator.encode("the ")) + 12) + "\n"
    # Only a preset can be kept as it is; a new model trains.
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--preset", "tiny", "--steps", "0",
                 "--run-dir", str(tmp_path / "new")]) == 2
    assert "--steps 0 keeps a KerasHub causal LM as it is" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", bert_preset[0], "--steps", "0",
                 "--run-dir", str(tmp_path / "new")]) == 2
    assert "has no causal LM" in capsys.readouterr().err
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", preset, "--steps", "0",
                 "--epochs", "2", "--run-dir", str(tmp_path / "new")]) == 2
    assert "Give --steps (0) or --epochs (2), not both" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_epochs_0_keeps_a_trained_classifier_preset_as_it_is_and_runs_it_as_keras_hub_does(
        bert_preset, gpt2_preset, tiny_classifier_run, tmp_path, capsys):
    """`--epochs 0`: a KerasHub text classifier with its trained head (as a sentiment preset comes), scored on
    the data and written as a run that predicts, exports and serves exactly what KerasHub's own one does."""
    from tfllm.training.classifier import load_run, predict_probabilities

    # A 2-class BERT classifier whose head says something (large weights), saved as KerasHub saves one.
    keras.utils.set_random_seed(1)
    hub = keras_hub.models.BertTextClassifier.from_preset(bert_preset[0], num_classes=2)
    hub.output_dense.kernel.assign(np.random.default_rng(1).normal(0, 3, hub.output_dense.kernel.shape))
    preset = str(tmp_path / "bert_sentiment")
    hub.save_to_preset(preset)
    run_dir = tmp_path / "as_is"
    capsys.readouterr()
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", preset, "--epochs", "0",
                 "--max-rows", "300", "--run-dir", str(run_dir)]) == 0
    assert "The preset's classes, in order: 0 = 'rotten', 1 = 'fresh'" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 0 and 0 <= metrics["test"]["accuracy"] <= 1
    assert "train_seconds" not in json.dumps(metrics)  # no training, no time (nor a "not measured" note)
    model, labels, _ = load_run(str(run_dir))
    texts = ["a good film", "dull and boring", "not very fun at all", "the movie was great"]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(
        keras_hub.models.TextClassifier.from_preset(preset).predict(texts, verbose=0)))
    assert np.abs(expected - 0.5).max() > 0.05  # a head that a new random one would not reproduce
    np.testing.assert_allclose(predict_probabilities(model, texts), expected, atol=1e-5)
    for ours, theirs in zip(model.get_weights(), hub.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert model.preprocessor.sequence_length == 16  # the preset's own packing length, not the recipe's

    # A tfllm classifier run kept as it is on its own data predicts as the run does.
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", tiny_classifier_run, "--epochs", "0",
                 "--max-rows", "400", "--run-dir", str(tmp_path / "tfllm_as_is")]) == 0
    np.testing.assert_allclose(predict_probabilities(load_run(str(tmp_path / "tfllm_as_is"))[0], texts),
                               predict_probabilities(load_run(tiny_classifier_run)[0], texts), atol=1e-6)

    # Refused in one line, nothing written: what has no trained head for these labels, and what would train.
    new = str(tmp_path / "new")
    for flags, message in (
            (["--from-preset", bert_preset[0]], "classifies into 4 classes, and rotten_tomatoes has 2 labels"),
            (["--from-preset", gpt2_preset[0]], "holds none (a backbone, or another task)"),
            (["--from-preset", tiny_classifier_run, "--labels", "fresh,rotten"],
             "was trained on the labels ['rotten', 'fresh'], in that order"),
            (["--preset", "tiny"], "use it with --from-preset PRESET"),
            (["--from-preset", tiny_classifier_run, "--ensemble", "2"], "without --ensemble or --unlabeled"),
            (["--from-preset", preset, "--set", "epochs=3"], "--epochs 0 and --set epochs=3 say different things")):
        capsys.readouterr()
        assert main(["train", "--data", "rotten_tomatoes", "--max-rows", "300", "--epochs", "0", *flags,
                     "--run-dir", new]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(new)


@pytest.mark.slow
def test_epochs_0_over_a_refit_run_keeps_its_out_of_sample_val_figures(tiny_classifier_run, tmp_path, capsys):
    """A tfllm run's n-gram tables counted its validation texts: kept as it is (--epochs 0) on its own split,
    the new run recorded val figures scored on texts the model had seen (0.795 against the run's 0.7045), and
    neither its metrics.json nor its output said so. On other rows the val block says what the tables counted."""
    source = json.loads((Path(tiny_classifier_run) / "metrics.json").read_text())
    assert "val" in source["ngram_tables_from"] and "measured" in source["val"]
    own = tmp_path / "own_split"
    capsys.readouterr()
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", tiny_classifier_run, "--epochs", "0",
                 "--max-rows", "400", "--run-dir", str(own)]) == 0  # the fixture's rows and seed: its split
    assert f"Validation figures: {tiny_classifier_run}'s own" in capsys.readouterr().out
    metrics = json.loads((own / "metrics.json").read_text())
    assert metrics["val"] == source["val"] and metrics["ngram_tables_from"] == source["ngram_tables_from"]
    assert metrics["test"]["num_examples"] == source["test"]["num_examples"]
    # `tfllm evaluate --split val` of the new run says what it says of the source run.
    assert main(["evaluate", str(own), "--split", "val"]) == 0
    assert "these val figures are in-sample" in capsys.readouterr().err

    other = tmp_path / "other_rows"
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", tiny_classifier_run, "--epochs", "0",
                 "--max-rows", "300", "--run-dir", str(other)]) == 0
    metrics = json.loads((other / "metrics.json").read_text())
    assert "in-sample" in metrics["val"]["measured"] and "ngram_tables_from" not in metrics


def _check_tflite_generator(run_dir, generator, base, capsys):
    """TFLite export of a fine-tuned KerasHub causal LM: exact greedy parity, and its loop stops at the window."""
    from tfllm.export.tflite_causal_lm import load_tflite_generator

    assert main(["export", str(run_dir), "--name", "g-tflite", "--base-dir", str(base), "--format", "tflite"]) == 0
    parity = json.loads((base / "g-tflite" / "1" / "parity.json").read_text())
    assert parity["greedy_exact_match"] and parity["greedy_tokens"] > 0
    device, _ = load_tflite_generator(str(base / "g-tflite" / "1" / "model.tflite"))
    prompt = generator.encode("the ").tolist()
    room = generator.window - len(prompt)
    assert device.generate_ids(prompt, room, (generator.end_id,)) == generator.greedy_ids(prompt, room)
    capsys.readouterr()  # the command puts the preset's start token (metadata.json) before the prompt, as Keras does
    assert main(["generate", "--tflite", str(base / "g-tflite" / "1" / "model.tflite"), "the ",
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == "the " + generator.generate(["the "], 5, sampler="greedy")[0] + "\n"
    assert main(["generate", "--tflite", str(base / "g-tflite" / "1" / "model.tflite"), "the ",
                 "--max-new-tokens", str(room + 1)]) == 2
    assert f"sees at most {generator.window} tokens" in capsys.readouterr().err


@pytest.fixture(scope="module")
def preset_tflite_exports(bert_run, gpt2_as_is_run, tmp_path_factory):
    """`{kind: (run folder, TFLite export folder)}`: the classifier fine-tuned from the BERT preset (`bert_run`)
    and the GPT-2 preset kept as it is (`gpt2_as_is_run`, --steps 0), each exported to TFLite once."""
    base = tmp_path_factory.mktemp("preset_exports")
    folders = {}
    for kind, run_dir in (("bert", bert_run[0]), ("gpt2", gpt2_as_is_run)):
        out = base / f"{kind}-tflite"
        assert main(["export", str(run_dir), "--format", "tflite", "--out", str(out)]) == 0
        folders[kind] = run_dir, out
    return folders


@pytest.mark.slow
def test_preset_tflite_exports_record_the_tokenizer_s_unknown_id(preset_tflite_exports):
    """BERT's [UNK] (its WordPiece `oov_token`) was "unknown": null, as KerasHub's BertTokenizer has no
    unk_token_id; GPT-2's byte-level BPE has no unknown token, and its metadata says why."""
    bert = json.loads((preset_tflite_exports["bert"][1] / "metadata.json").read_text())
    from tfllm.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(str(preset_tflite_exports["bert"][1] / "tokenizer"))  # as metadata.json says
    unknown = np.asarray(keras.ops.convert_to_numpy(tokenizer("€"))).ravel().tolist()  # a word it has no piece for
    assert unknown == [tokenizer.token_to_id(tokenizer.oov_token)]
    assert bert["special_token_ids"]["unknown"] == unknown[0]
    gpt2 = json.loads((preset_tflite_exports["gpt2"][1] / "metadata.json").read_text())["special_token_ids"]
    # The test preset's vocabulary has 96 of the 256 bytes (33-126, "Ġ" and "Ċ"): its metadata said "a token for
    # every byte, so no text is unknown", and a text with a tab or an "é" gets id -1.
    assert gpt2["unknown"] is None and "160 of the 256 bytes have no token" in gpt2["unknown_none"], gpt2


def test_a_prompt_of_words_a_wordpiece_preset_has_no_piece_for_is_refused_as_tfllm_s_own_tokenizers_refuse_it():
    """`Generator.unk_id` and the prompt check (`tfllm generate`, its `--tflite` path) read `unk_token_id` only,
    which KerasHub's BertTokenizer lacks (its [UNK] is its WordPiece `oov_token`): a prompt of unknown words went
    in as [UNK] ids, where tfllm's own tokenizers refuse it naming the words."""
    from lm_utils import tiny_lm

    from tfllm.export.tflite_causal_lm import _text_codec
    from tfllm.generation import Generator

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat"])
    assert not hasattr(tokenizer, "unk_token_id")
    generator = Generator(tiny_lm(tokenizer.vocabulary_size()), tokenizer, jit_compile=False)
    assert generator.unk_id == 1
    assert list(generator.encode("the cat")) == [5, 6]
    encode, _ = _text_codec(tokenizer)
    for check in (generator.encode, encode):
        with pytest.raises(UserInputError, match="dog"):
            check("the dog")


@pytest.mark.slow
def test_preset_tflite_exports_say_how_to_tokenize(preset_tflite_exports):
    """The BERT classifier's and the GPT-2 generator's metadata.json had no `tokenizing` section: now each names
    its steps and the KerasHub class and config that give its ids, which rebuilt from the export's files alone
    tokenize as the run does."""
    import importlib
    import re

    from tfllm.tokenizers import load_tokenizer

    texts = ["the film was good, not dull!", "Fun and GREAT movie ... 2 stars"]
    for kind, settings in {"bert": ["lowercase=True", "oov_token='[UNK]'"], "gpt2": []}.items():
        folder = preset_tflite_exports[kind][1]
        meta = json.loads((folder / "metadata.json").read_text())
        rule = meta["tokenizing"]
        assert rule["kind"] == {"bert": "wordpiece", "gpt2": "bytepair"}[kind], rule
        assert all(setting in rule["keras_hub_class"] for setting in settings), rule["keras_hub_class"]
        # A classifier's output is probabilities: nothing to detokenize.
        assert ("detokenize" in rule) == (kind == "gpt2")
        path = re.match(r"[\w.]+", rule["keras_hub_class"]).group(0)
        module, name = path.rsplit(".", 1)
        files = {os.path.basename(f).split(".")[0]: str(folder / f)
                 for f in re.findall(r"tokenizer/assets/\S+?\.(?:txt|json)", meta["tokenizer"])}
        options = {"lowercase": True} if kind == "bert" else {}
        rebuilt = getattr(importlib.import_module(module), name)(**files, **options)
        tokenizer = load_tokenizer(str(folder / "tokenizer"))
        for text in texts:
            assert np.asarray(rebuilt(text)).tolist() == np.asarray(tokenizer(text)).tolist(), (kind, text)


@pytest.fixture(scope="module")
def llama_preset(tmp_path_factory):
    """A 2-layer LlamaBackbone (rotary positions: no position table, grouped-query attention) with a
    SentencePiece vocabulary learned here."""
    import io

    import sentencepiece as spm

    from tfllm.datasets.text import load_text_corpus

    keras.utils.set_random_seed(0)
    lines = [line for line in load_text_corpus("shakespeare")[0].splitlines() if line.strip()][:2000]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=proto, vocab_size=150, pad_id=0,
                                   unk_id=1, bos_id=2, eos_id=3, minloglevel=2)
    backbone = keras_hub.models.LlamaBackbone(vocabulary_size=150, num_layers=2, num_query_heads=4,
                                              num_key_value_heads=2, hidden_dim=16, intermediate_dim=32)
    preprocessor = keras_hub.models.LlamaCausalLMPreprocessor(
        keras_hub.models.LlamaTokenizer(proto=proto.getvalue()), sequence_length=32)
    path = str(tmp_path_factory.mktemp("presets") / "llama_tiny")
    keras_hub.models.LlamaCausalLM(backbone, preprocessor=preprocessor).save_to_preset(path)
    return path


@pytest.fixture(scope="module")
def llama_as_is_run(llama_preset, tmp_path_factory):
    """The Llama preset kept as it is (`--steps 0` on 4,000 rows of shakespeare), written once for the tests
    that only read the run (its window, its completions)."""
    run_dir = tmp_path_factory.mktemp("llama_as_is") / "as_is"
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", llama_preset, "--steps", "0",
                 "--max-rows", "4000", "--run-dir", str(run_dir)]) == 0
    return str(run_dir)


def test_fine_tune_a_rotary_position_preset_generate_and_export(llama_preset, llama_as_is_run, tmp_path, capsys):
    """Llama, Gemma, Mistral... have no position table: the window is the length the run trained on
    (it was an AttributeError at the end of training)."""
    from tfllm.generation import load_generator

    run_dir = tmp_path / "llama_run"
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", llama_preset,
                 "--preset", "tiny", "--steps", "4", "--max-rows", "4000", "--no-jit-compile",
                 "--run-dir", str(run_dir)]) == 0
    generator = load_generator(str(run_dir), jit_compile=False)
    assert type(generator.model).__name__ == "LlamaCausalLM"
    assert generator.window == generator.model.preprocessor.sequence_length
    capsys.readouterr()
    assert main(["generate", str(run_dir), "the ", "--max-new-tokens", "5", "--sampler", "greedy"]) == 0
    assert capsys.readouterr().out == "the " + generator.generate(["the "], 5, sampler="greedy")[0] + "\n"
    _check_tflite_generator(run_dir, generator, tmp_path / "sm", capsys)
    # Kept as it is (--steps 0, `llama_as_is_run`), its window is the length its own preprocessor packs, not the
    # recipe's 64.
    own = keras_hub.models.CausalLMPreprocessor.from_preset(llama_preset).sequence_length
    assert load_generator(llama_as_is_run, jit_compile=False).window == own == 32


def test_a_sentencepiece_completion_keeps_its_first_word_s_space_as_keras_hub_s_generate_does(llama_as_is_run,
                                                                                              tmp_path):
    """A SentencePiece piece carries its word's space as a leading '▁', which the detokenizer drops at a text's
    start: the completion decoded alone glued its first word to the prompt ('ROMEO: thewhich' where KerasHub's
    generate() gave 'ROMEO: the which'), in tfllm generate and the SavedModel alike."""
    import tensorflow as tf

    from tfllm.export.causal_lm import generation_archive
    from tfllm.generation import load_generator

    run_dir = llama_as_is_run  # the preset kept as it is (--steps 0)
    generator = load_generator(run_dir, jit_compile=False)
    keras_lm = keras_hub.models.CausalLM.from_preset(run_dir)
    keras_lm.compile(sampler="greedy")
    generation_archive(generator.model, generator.tokenizer, jit_compile=False).write_out(
        str(tmp_path / "sm"), verbose=False)
    greedy = tf.saved_model.load(str(tmp_path / "sm")).signatures["greedy"]
    prompts = ["ROMEO: the", "First Citizen", "And so", "the king", "What"]
    ours = generator.generate(prompts, 4, sampler="greedy")
    served = greedy(prompt=tf.constant(prompts), max_new_tokens=tf.constant([4] * len(prompts)))["completion"]
    spaced = 0
    for prompt, completion, exported in zip(prompts, ours, served.numpy()):
        length = len(generator.encode(prompt))  # with the start token before it, as generate() puts it
        assert prompt + completion == keras_lm.generate(prompt, max_length=length + 4)
        assert exported.decode("utf-8") == completion
        spaced += completion.startswith(" ")
    assert spaced  # some first new piece began a word (its space was dropped before)


def test_a_16_bit_preset_trained_in_float32_says_so_and_names_the_precision_option(tmp_path, capsys):
    """A preset saved in bfloat16 was trained and saved as float32 without a word."""
    from tfllm.training.common import preset_dtype

    path = str(tmp_path / "gpt2_bf16")
    keras_hub.models.GPT2Backbone(vocabulary_size=8, num_layers=1, num_heads=1, hidden_dim=4, intermediate_dim=8,
                                  max_sequence_length=8, dtype="bfloat16").save_to_preset(path)
    assert preset_dtype(path) == {}
    out = capsys.readouterr().out
    assert "saved in bfloat16; this run trains and saves it in float32" in out and "--precision mixed_bfloat16" in out


def test_a_preset_whose_task_does_not_fit_is_one_line(bert_preset, gpt2_preset, tmp_path, capsys):
    argv = ["--preset", "tiny", "--max-rows", "3000", "--run-dir", str(tmp_path / "r")]
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", bert_preset[0], *argv]) == 2
    err = capsys.readouterr().err
    assert "has no causal LM" in err and "use --task classify for an encoder" in err and err.count("\n") == 1
    # `tfllm pretrain` has no --task: its fix for an encoder is the masked LM (it said "use --task classify").
    assert main(["pretrain", "--objective", "causal", "--data", "shakespeare", "--from-preset", bert_preset[0],
                 *argv]) == 2
    err = capsys.readouterr().err
    assert "has no causal LM" in err and "use --objective mlm for an encoder." in err and "--task" not in err, err
    assert err.count("\n") == 1 and not os.path.exists(tmp_path / "r")
    # A decoder as a classifier: its fix was "use a text model preset (... or a tfllm run)", whatever it was.
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", gpt2_preset[0], *argv]) == 2
    err = capsys.readouterr().err
    assert "is a text generator" in err and "--task generate" in err and err.count("\n") == 1, err
    # A folder that is not there: KerasHub said only "Unknown preset identifier. A preset must be a one of:.".
    for task, data in (("classify", "rotten_tomatoes"), ("generate", "shakespeare")):
        assert main(["train", "--task", task, "--data", data, "--from-preset", str(tmp_path / "nowhere"), *argv]) == 2
        err = capsys.readouterr().err
        assert "nowhere' is not a folder (no such path)" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_keras_hub_preset_passed_as_a_run_says_how_to_make_it_one(bert_preset, gpt2_preset, tmp_path, capsys):
    """A preset saved with KerasHub's save_to_preset given to predict/generate/export: it said "not a tfllm run
    directory (no tfllm/run.json). Pass the --run-dir of a training run", which names no way forward."""
    for argv, task, name in ((["predict", bert_preset[0], "a fine film"], "classify", "BertTextClassifier"),
                             (["export", bert_preset[0], "--name", "b", "--base-dir", str(tmp_path)], "classify",
                              "BertTextClassifier"),
                             (["generate", gpt2_preset[0], "the"], "generate", "GPT2CausalLM")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"is a KerasHub preset ({name}), not a tfllm run" in err and err.count("\n") == 1, err
        assert f"tfllm train --task {task} --data DATA --from-preset {argv[1]}" in err
    assert not (tmp_path / "b").exists()


def test_dropout_reaches_a_keras_hub_classifier_s_head_and_is_refused_where_nothing_takes_it(
        bert_preset, gpt2_preset, tmp_path, capsys):
    """`--set dropout` was recorded in the recipe and ignored for a KerasHub classifier (its head kept
    KerasHub's 0.1), and for a causal LM or the encoder's `embedding_dropout`, which the preset's own
    backbone fixes; the refusal's message said dropout applied."""
    from tfllm.training.classifier import load_run

    run_dir = tmp_path / "bert_dropout"
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", bert_preset[0],
                 "--preset", "tiny", "--max-rows", "200", "--epochs", "1", "--set", "dropout=0.25",
                 "--run-dir", str(run_dir)]) == 0
    model, _, recipe = load_run(str(run_dir))
    assert model.get_config()["dropout"] == recipe["dropout"] == 0.25
    capsys.readouterr()
    argv = ["--preset", "tiny", "--max-rows", "3000", "--run-dir", str(tmp_path / "r")]
    for task, data, preset, setting in (("generate", "shakespeare", gpt2_preset[0], "dropout=0.2"),
                                        ("classify", "rotten_tomatoes", bert_preset[0], "embedding_dropout=0.2")):
        assert main(["train", "--task", task, "--data", data, "--from-preset", preset, "--set", setting, *argv]) == 2
        err = capsys.readouterr().err
        assert f"{setting.split('=')[0]} would be ignored" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("setting", ["window_keep=8", "activation=relu", "layer_norm_epsilon=0.001"])
def test_a_causal_lm_s_own_settings_are_refused_with_from_preset(gpt2_preset, tmp_path, capsys, setting):
    """The recipe recorded them and the preset's model kept its own (window_keep None, activation gelu)."""
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--from-preset", gpt2_preset[0], "--preset",
                 "tiny", "--set", setting, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{setting.split('=')[0]} would be ignored" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("setting", ["bigram_buckets=128", "wide_bigram_buckets=512", "word_vectors=true",
                                     "vector_norm=2.0"])
def test_head_and_word_vector_settings_a_preset_classifier_never_reads_are_refused(bert_preset, tmp_path, capsys,
                                                                                   setting):
    """With a KerasHub classifier (no n-gram paths) or any preset (a trained embedding), these were recorded
    in the recipe and ignored."""
    assert main(["train", "--task", "classify", "--data", "rotten_tomatoes", "--from-preset", bert_preset[0],
                 "--preset", "tiny", "--max-rows", "200", "--set", setting, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{setting.split('=')[0]} would be ignored" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_fine_tuning_a_classifier_run_takes_the_recipe_s_head_not_the_run_s(tiny_classifier_run, tmp_path, capsys):
    """A new head is the recipe's: `finetune` has no n-gram paths, so none of the tiny run's (hashed bigrams, wide
    path, character and word views) carry over from its task.json, and its preprocessor reads no code points."""
    from tfllm import runs
    from tfllm.presets import resolve_preset
    from tfllm.training.classifier import dropped_ngram_paths

    capsys.readouterr()
    assert main(["train", "--data", "rotten_tomatoes", "--from-preset", tiny_classifier_run, "--preset", "finetune",
                 "--epochs", "1", "--max-rows", "200", "--run-dir", str(tmp_path / "tuned")]) == 0
    # Said, not silent (a tuned run's n-gram tables were most of its parameters): what is left out, and how to
    # train that recipe.
    out = capsys.readouterr().out
    assert (f"Note: {tiny_classifier_run} has n-gram paths (bigram_buckets, wide_bigram_buckets, char_ngram_buckets, "
            "word_ngram_buckets) that recipe 'finetune' has none of" in out and "tfllm/recipe.json" in out), out
    assert out.count("Note:") == 1
    assert dropped_ngram_paths(tiny_classifier_run, resolve_preset("classify", "tiny")) == []  # a recipe with them
    head = json.loads((tmp_path / "tuned" / "task.json").read_text())["config"]
    assert runs.read_recipe(tiny_classifier_run)["bigram_buckets"]  # the run had them ...
    assert not any(head.get(k) for k in ("bigram_buckets", "wide_bigram_buckets", "char_ngram_buckets",
                                         "word_ngram_buckets"))  # ... the fine-tuned model has none
    model = runs.load_task(str(tmp_path / "tuned"))
    assert "code_points" not in model.input and not model.preprocessor.char_length
    # A tfllm run brings its tokenizer, recorded in its recipe: the fine-tune records the same.
    assert runs.read_recipe(str(tmp_path / "tuned"))["tokenizer"] == runs.read_recipe(tiny_classifier_run)["tokenizer"]


@pytest.mark.slow
def test_a_tokenizer_is_traced_once_for_every_text_it_tokenizes():
    """Each `tokenize_corpus` call (a run's training text, its validation text, the check for text without ids)
    traced the tokenizer again in a `Dataset.map`: ~2 s a call for a byte-pair tokenizer, however short the text."""
    from tfllm import data as data_lib

    vocabulary = {token: i for i, token in enumerate([chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "Ġt", "he", "<|endoftext|>"])}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t", "h e"])
    texts = ["the cat\nsat on the mat", "the mat", "a cat sat\n" * 5000]  # another length; more than a batch of lines
    ids = [data_lib.tokenize_corpus(tokenizer, text) for text in texts]
    assert data_lib._traced_tokenizer(tokenizer).experimental_get_tracing_count() == 1
    eager = [np.concatenate([np.asarray(tokenizer(line)) for line in text.split("\n") if line]) for text in texts[:2]]
    for got, expected in zip(ids, eager):
        np.testing.assert_array_equal(got, expected)
    assert len(ids[2]) == 5000 * len(np.asarray(tokenizer("a cat sat")))


@pytest.mark.slow
def test_text_a_byte_pair_vocabulary_has_no_token_for_is_one_line(tmp_path, capsys):
    """A GPT-2 vocabulary without some text's characters gives them id -1: `--steps 0` ended in a traceback
    ("label value of -1"), and training in a loss of NaN called a divergence, to be fixed by a lower rate."""
    from tfllm import data as data_lib

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ"]
    vocabulary = {token: i for i, token in enumerate(letters + ["Ġt", "he", "<|endoftext|>"])}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t", "h e"])
    assert data_lib.tokenize_corpus(tokenizer, "the cat\nsat on the mat").min() >= 0
    with pytest.raises(UserInputError, match=r"^3 tokens of the validation text have no id in the tokenizer's "
                                             r"vocabulary \(it gives them -1\), e.g. the characters 'DGO'\."):
        data_lib.tokenize_corpus(tokenizer, "the cat\nthe DOG", "validation")
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=1,
                                             hidden_dim=8, intermediate_dim=8, max_sequence_length=16)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    keras_hub.models.GPT2CausalLM(backbone, preprocessor=preprocessor).save_to_preset(str(tmp_path / "lower"))
    (tmp_path / "upper.txt").write_text("THE CAT SAT ON THE MAT\n" * 40)
    argv = ["train", "--task", "generate", "--data", tmp_path / "upper.txt", "--from-preset", tmp_path / "lower",
            "--steps", "0", "--run-dir", tmp_path / "run"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "have no id in the tokenizer's vocabulary" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_prompt_a_byte_pair_vocabulary_has_no_token_for_is_refused_as_training_text_is(gpt2_as_is_run, capsys):
    """GPT-2's eager tokenizer drops a character its vocabulary has no token for (the TF ops, as training and
    the export's signature tokenize, give it -1): `tfllm generate` went on from "the caf" as if "the café" were
    "the caf", `tfllm explain` attributed up to "f", and "é" alone was "only spaces?"."""
    from tfllm.explanations import load_explainer
    from tfllm.generation import load_generator

    generator = load_generator(str(gpt2_as_is_run), jit_compile=False)
    for prompt in ("the café", "é"):
        with pytest.raises(UserInputError, match=rf"^Prompt '{prompt}' contains characters 'é' the tokenizer has no "
                                                 r"token for .*; remove or replace them\.$"):
            generator.encode(prompt)
        capsys.readouterr()
        assert main(["generate", str(gpt2_as_is_run), prompt, "--max-new-tokens", "4", "--sampler", "greedy"]) == 2
        err = capsys.readouterr().err
        assert "contains characters 'é' the tokenizer has no token for" in err and err.count("\n") == 1, err
    with pytest.raises(UserInputError, match=r"contains characters 'é' the tokenizer has no token for"):
        load_explainer(str(gpt2_as_is_run)).encode("the café")
    assert len(generator.encode("the cafe")) > 0  # text it covers still goes through


def test_a_classifier_text_a_byte_pair_vocabulary_has_no_token_for_is_one_line(tmp_path, capsys):
    """A RoBERTa classifier preset whose vocabulary lacks some bytes gave those texts id -1: training and
    evaluation ran on them without a word, and the TFLite export refused the run ("token_ids must not be
    negative")."""
    byte_level = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    vocabulary = {t: i for i, t in enumerate(dict.fromkeys(byte_level + ["Ġt", "he", "<s>", "<pad>", "</s>",
                                                                          "<unk>", "<mask>"]))}
    tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=["Ġ t", "h e"])
    backbone = keras_hub.models.RobertaBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=1,
                                                hidden_dim=8, intermediate_dim=8, max_sequence_length=32)
    preprocessor = keras_hub.models.RobertaTextClassifierPreprocessor(tokenizer, sequence_length=16)
    keras_hub.models.RobertaTextClassifier(backbone, num_classes=2, preprocessor=preprocessor).save_to_preset(
        str(tmp_path / "roberta"))
    # 121 rows: val/test splits of 12, which no small-split warning adds a line about
    rows = [(f"a fine film {i}", 1) for i in range(60)] + [(f"dull {i}", 0) for i in range(60)] + [("un café crème", 1)]
    (tmp_path / "reviews.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    argv = ["train", "--data", tmp_path / "reviews.csv", "--from-preset", tmp_path / "roberta", "--epochs", "1",
            "--run-dir", tmp_path / "run"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "have no id in the tokenizer's vocabulary" in err and "'èé'" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_a_sequence_length_past_the_presets_positions_is_cut_in_the_recipe_or_refused(bert_preset, gpt2_preset,
                                                                                         tmp_path, capsys):
    """Both were cut where the model was built, without a word, and recipe.json recorded the longer value."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import classifier_preset

    bert, gpt2 = bert_preset[0], gpt2_preset[0]
    # A recipe's longer default (128) is cut to the positions (32), as the model is built.
    assert classifier_preset(TrainConfig(data="rotten_tomatoes", from_preset=bert))["sequence_length"] == 32
    for task, preset, data in (("classify", bert, "rotten_tomatoes"), ("generate", gpt2, "shakespeare")):
        argv = ["train", "--task", task, "--data", data, "--from-preset", preset, "--set", "sequence_length=500",
                "--run-dir", str(tmp_path / task)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--set sequence_length=500 is longer than" in err and "set at most" in err and err.count("\n") == 1
        assert not (tmp_path / task).exists()


def test_a_preset_missing_a_file_is_one_line_naming_it(bert_preset, gpt2_preset, tmp_path, capsys):
    """A preset folder copied without its weights or its tokenizer's files was KerasHub's traceback, which
    named `model.weights.json` for a missing `model.weights.h5`."""
    import shutil

    argv = ["--preset", "tiny", "--max-rows", "300", "--epochs", "1", "--run-dir", str(tmp_path / "r")]
    for source, remove, task, data, missing in (
            (bert_preset[0], "model.weights.h5", "classify", "rotten_tomatoes", "model.weights.h5"),
            (bert_preset[0], "assets", "classify", "rotten_tomatoes", "assets/tokenizer/vocabulary.txt"),
            (gpt2_preset[0], "assets/tokenizer/merges.txt", "generate", "shakespeare", "assets/tokenizer/merges.txt")):
        copy = tmp_path / remove.replace("/", "_")
        shutil.copytree(source, copy)
        shutil.rmtree(copy / remove) if (copy / remove).is_dir() else (copy / remove).unlink()
        args = argv if task == "classify" else [a if a != "--epochs" else "--steps" for a in argv]
        assert main(["train", "--task", task, "--data", data, "--from-preset", str(copy), *args]) == 2
        err = capsys.readouterr().err
        assert f"has no {missing}: a preset folder holds every file save_to_preset wrote" in err, err
        assert err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_a_preset_with_a_damaged_file_is_one_line_naming_it(bert_preset, llama_preset, tmp_path, capsys):
    """A weights file or SentencePiece model cut short in copying was h5py's or TensorFlow's traceback (exit 1),
    naming neither the file nor the preset."""
    import shutil

    argv = ["--preset", "tiny", "--max-rows", "300", "--run-dir", str(tmp_path / "r")]
    four = tmp_path / "four.csv"  # the preset's head has 4 classes, which --epochs 0 keeps
    four.write_text("\n".join(["text,label"] + [f"{WORDS[i % 14]} film {i},{'abcd'[i % 4]}" for i in range(120)]) + "\n")
    for source, damaged, task, data, counted in (
            (bert_preset[0], "model.weights.h5", "classify", "rotten_tomatoes", ["--epochs", "1"]),
            (bert_preset[0], "task.weights.h5", "classify", str(four), ["--epochs", "0"]),
            (llama_preset, "assets/tokenizer/vocabulary.spm", "generate", "shakespeare", ["--steps", "1"])):
        copy = tmp_path / damaged.replace("/", "_")
        shutil.copytree(source, copy)
        (copy / damaged).write_bytes((copy / damaged).read_bytes()[:3000])
        assert main(["train", "--task", task, "--data", data, "--from-preset", str(copy), *argv, *counted]) == 2
        err = capsys.readouterr().err
        assert f"its {damaged} does not read as" in err and "copy the whole preset folder again" in err, err
        assert err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_a_run_directory_that_is_its_own_preset_is_refused_up_front(bert_run, tmp_path, capsys):
    """`--from-preset X --run-dir X --overwrite` set X aside first, and the preset then "has no config.json"."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(bert_run[0], run_dir)  # a copy: the module's run stays as it is whatever happens here
    before = sorted(p.name for p in run_dir.iterdir())
    for argv in (["train", "--data", "rotten_tomatoes", "--epochs", "1"], ["pretrain", "--data", "rotten_tomatoes",
                                                                           "--steps", "1"]):
        assert main([*argv, "--from-preset", str(run_dir), "--run-dir", str(run_dir) + "/", "--overwrite",
                     "--max-rows", "300"]) == 2
        err = capsys.readouterr().err
        assert "--from-preset and --run-dir are the same folder" in err and err.count("\n") == 1, err
        assert sorted(p.name for p in run_dir.iterdir()) == before


def test_a_classifier_preset_that_reads_the_texts_as_unknown_says_so(bert_preset, bert_run, tmp_path, capsys):
    """An English BERT fine-tuned on Chinese reviews read every token as [UNK] and predicted the same for
    every text, without a word (the causal-LM path warned; KerasHub's BertTokenizer has no unk_token_id)."""
    rows = ["text,label"] + [f"这部电影很{'好' if i % 2 else '差'}{i},{'pos' if i % 2 else 'neg'}" for i in range(120)]
    (tmp_path / "zh.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["train", "--data", str(tmp_path / "zh.csv"), "--from-preset", bert_preset[0], "--preset", "tiny",
                 "--epochs", "1", "--run-dir", str(tmp_path / "zh")]) == 0
    err = capsys.readouterr().err
    assert "of the tokens of the training texts are unknown to the tokenizer of" in err, err
    # English texts it covers: no warning (`bert_run`: rotten_tomatoes, --preset tiny, 300 rows, one epoch).
    _, english_err = bert_run
    assert "unknown to the tokenizer" not in english_err


def _hparams(run_dir):
    """`{name: HParam value}` of the HParams session a run wrote in its logs/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(Path(run_dir) / "logs"), size_guidance={"tensors": 0})
    accumulator.Reload()
    session = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    return plugin_data_pb2.HParamsPluginData.FromString(session).session_start_info.hparams


def test_a_from_preset_run_records_the_preset_s_sizes_and_refuses_freezing_every_epoch(bert_preset, bert_run,
                                                                                      tmp_path, capsys):
    argv = ["train", "--data", "rotten_tomatoes", "--from-preset", bert_preset[0], "--preset", "tiny",
            "--max-rows", "300", "--epochs", "1"]
    # freeze_epochs >= epochs was cut to epochs - 1 without a word: the backbone trained from the first step.
    assert main(argv + ["--set", "freeze_epochs=3", "--run-dir", str(tmp_path / "frozen")]) == 2
    assert "freeze_epochs=3 trains the new head alone for 3 of the run's 1 epoch(s)" in capsys.readouterr().err
    assert not (tmp_path / "frozen").exists()
    # recipe.json and the HParams tab named the recipe's sizes (vocabulary 8000, width 128), not the model's:
    # `bert_run` is trained with these same arguments.
    run_dir, _ = bert_run
    backbone = bert_preset[1]
    recipe = json.loads((run_dir / "tfllm" / "recipe.json").read_text())
    sizes = {k: getattr(backbone, k) for k in ("vocabulary_size", "hidden_dim", "num_layers", "num_heads",
                                              "intermediate_dim")}
    assert {k: recipe[k] for k in sizes} == sizes
    hparams = _hparams(run_dir)
    assert hparams["hidden_dim"].number_value == backbone.hidden_dim
    # A fine-tune is told from a from-scratch run of the same sizes by the handle it started from.
    assert hparams["from_preset"].string_value == bert_preset[0]
    assert hparams["vocabulary_size"].number_value == backbone.vocabulary_size


def test_a_from_preset_run_records_the_preset_s_own_settings_not_the_recipe_s(gpt2_preset, gpt2_as_is_run,
                                                                             llama_preset, llama_as_is_run, bert_preset,
                                                                             bert_run):
    """The settings a preset's model brings itself are its own in recipe.json and HParams, or absent: a GPT-2
    fine-tune recorded the generation recipe's tokenizer "char", use_bias false, tie_weights and window_keep,
    and a Llama's its num_heads, of a model that was never built."""
    from tfllm.presets import resolve_preset
    from tfllm.training.classifier import unread_head_settings
    from tfllm.training.common import PRESET_OWN_SETTINGS

    for task, run_dir, preset in (("generate", gpt2_as_is_run, gpt2_preset[0]), ("generate", llama_as_is_run, llama_preset),
                                  ("classify", bert_run[0], bert_preset[0])):
        own = json.loads((Path(preset) / "config.json").read_text())["config"]
        recipe = json.loads((Path(run_dir) / "tfllm" / "recipe.json").read_text())
        hparams = _hparams(run_dir)
        shipped = resolve_preset(task, "tiny" if task == "classify" else "default", {})
        assert {"tokenizer", "hidden_dim", "use_bias"} & set(shipped)  # the recipe has some to leave out
        for key in PRESET_OWN_SETTINGS | ({"dropout"} if task == "generate" else set()):  # a classifier's: its head's
            # KerasHub's backbones name no tokenizer, bias or window_keep: none is recorded.
            assert recipe.get(key, own.get(key)) == own.get(key), (run_dir, key, recipe[key])
            if key in hparams and key != "vocabulary_size":  # HParams' vocabulary_size: the tokenizer's real size
                value = hparams[key]
                assert key in own and own[key] in (value.number_value, value.string_value, value.bool_value), key
        assert "tokenizer" not in recipe and "tokenizer" not in hparams
    # A classifier's dropout is its new head's, the recipe's (the BERT run's recipe is the loop's last).
    assert recipe["dropout"] == resolve_preset("classify", "tiny", {})["dropout"]
    # Nor the recipe's n-gram paths and word vectors, which KerasHub's BERT classifier has none of.
    unread = unread_head_settings(keras_hub.models.BertBackbone)
    assert unread & set(shipped) and not unread & (set(recipe) | set(hparams)), unread & (set(recipe) | set(hparams))


def test_a_text_shorter_than_the_recipe_s_window_says_which_length_would_fit_and_whose_it_is(
        gpt2_preset, tmp_path, capsys):
    """The window of a --from-preset run is the recipe's (64 here), not the preset's own (32): the message
    said "a preset with a smaller sequence_length" to a user whose preset had one. It now names the fix,
    --set sequence_length=N with an N both texts hold, and where the 64 came from."""
    import re

    run_dir = tmp_path / "r"
    argv = ["train", "--task", "generate", "--data", "shakespeare", "--from-preset", gpt2_preset[0],
            "--max-rows", "400", "--steps", "2", "--run-dir", str(run_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sequence_length 64 is the recipe's, not the preset's own 32" in err, err
    assert "(raise --max-rows 400, which cut it)" in err and not run_dir.exists()
    fits = int(re.search(r"--set sequence_length=(\d+)\.$", err.strip()).group(1))
    assert main([*argv, "--set", f"sequence_length={fits}"]) == 0  # the length it names does fit


def test_presets_of_the_wrong_kind_say_what_they_are(bert_preset, gpt2_preset, tmp_path, capsys):
    """A vision preset with --task generate was told "use --task classify for an encoder" (which failed
    too), and with --task classify that it "has no text classifier in KerasHub" (not that it is no text
    model), a broken config.json got a bare JSON parser message, and a tokenizer-only folder "not a preset
    (no config.json)"; each now says what the folder is and what is needed, in one line."""
    import shutil

    keras.utils.set_random_seed(0)
    vision = str(tmp_path / "resnet")
    keras_hub.models.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
                                    stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
                                    use_pre_activation=False, image_shape=(16, 16, 3)).save_to_preset(vision)
    broken = tmp_path / "badcfg"
    broken.mkdir()
    (broken / "config.json").write_text('{"module": "keras_hub.src.models.bert.bert_backbone", "class_name": ')
    broken_task, broken_preprocessor = tmp_path / "badtask", tmp_path / "badpre"
    shutil.copytree(bert_preset[0], broken_task)
    (broken_task / "task.json").write_text('{"mod\n')
    shutil.copytree(gpt2_preset[0], broken_preprocessor)
    (broken_preprocessor / "preprocessor.json").write_text('{"mod\n')
    unknown_class = tmp_path / "foo"  # Keras's advice to register_keras_serializable() was passed through
    shutil.copytree(bert_preset[0], unknown_class)
    (unknown_class / "config.json").write_text((unknown_class / "config.json").read_text().replace("BertBackbone",
                                                                                                   "FooBackbone"))
    tokenizer_only = str(tmp_path / "tokenizer_only")
    keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS).save_to_preset(
        tokenizer_only)
    run_dir = tmp_path / "r"
    for task, data, preset, message in (
            ("generate", "shakespeare", vision, "(ResNetBackbone, saved for ImageClassifier) is not a text model"),
            # --task classify said only that it "has no text classifier in KerasHub"
            ("classify", "rotten_tomatoes", vision, "(ResNetBackbone, saved for ImageClassifier) is not a text model: "
                                                    "it has no tokenizer (tokenizer.json)"),
            ("generate", "shakespeare", str(broken), "its config.json is not valid JSON (Expecting value"),
            # A broken task.json or preprocessor.json: "has no text classifier (causal LM) in KerasHub".
            ("classify", "rotten_tomatoes", str(broken_task), "its task.json is not valid JSON (Invalid control"),
            ("generate", "shakespeare", str(broken_preprocessor), "its preprocessor.json is not valid JSON"),
            ("classify", "rotten_tomatoes", str(unknown_class), "its config.json names the class keras_hub>FooBackbone, "
                                                                "which keras-hub"),
            ("classify", "rotten_tomatoes", tokenizer_only, "holds only a tokenizer (tokenizer.json), no model")):
        assert main(["train", "--task", task, "--data", data, "--from-preset", preset, "--max-rows", "400",
                     "--run-dir", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not run_dir.exists()
