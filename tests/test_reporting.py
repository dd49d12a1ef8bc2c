"""A finished run's TensorBoard data, read back with TensorBoard's own readers, and its PNG."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.projector import projector_config_pb2

from tfllm.training import reporting


def _events(directory):
    # size_guidance 0 = keep everything (the default samples tensors down).
    accumulator = EventAccumulator(directory, size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def _scalar_tags(directory):
    # Keras 3 writes scalars through tf.summary, which stores them as tensors.
    return set(_events(directory).Tags()["tensors"])


def _hparams(log_dir):
    """The hyperparameters of the run's hparams session, as the plugin decodes them."""
    accumulator = _events(log_dir)
    content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    session = content[hparams_metadata.SESSION_START_INFO_TAG]
    data = plugin_data_pb2.HParamsPluginData.FromString(session)
    return {k: v for k, v in data.session_start_info.hparams.items()}, accumulator


def _check_projector(log_dir, vocabulary_size):
    log_dir = os.path.join(log_dir, reporting.PROJECTOR_DIR)
    config = projector_config_pb2.ProjectorConfig()
    with open(os.path.join(log_dir, "projector_config.pbtxt")) as f:
        text_format.Parse(f.read(), config)
    (embedding,) = config.embeddings
    with open(os.path.join(log_dir, embedding.metadata_path), encoding="utf-8") as f:
        tokens = f.read().splitlines()
    # The projector finds the checkpoint the way it does here: the newest one in log_dir.
    checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(log_dir))
    matrix = checkpoint.get_tensor(embedding.tensor_name)
    assert matrix.shape[0] == len(tokens) == vocabulary_size
    assert tokens[0] == "[PAD]" and all(tokens)
    # Without an event file TensorBoard would not list the folder as a run, nor show its projector.
    assert "projector" in _events(log_dir).PluginTagToContent("text")
    return tokens


@pytest.mark.slow
def test_classifier_run_writes_scalars_hparams_projector_and_png(tiny_classifier_run):
    log_dir = os.path.join(tiny_classifier_run, "logs")
    train_tags = _scalar_tags(os.path.join(log_dir, "train"))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= train_tags
    assert {"epoch_loss", "epoch_accuracy"} <= _scalar_tags(os.path.join(log_dir, "validation"))
    # Read back as a fit history (what the curves are drawn from after a resume): one value per epoch.
    history = reporting.history_from_logs(log_dir)
    epochs = json.load(open(os.path.join(tiny_classifier_run, "metrics.json")))["epochs_run"]
    assert {"loss", "val_loss", "accuracy", "learning_rate"} <= set(history) and len(history["val_loss"]) == epochs

    hparams, accumulator = _hparams(log_dir)
    assert hparams["hidden_dim"].number_value == 16
    assert hparams["tokenizer"].string_value == "wordpiece"
    # The model's vocabulary (the tokenizer's), not the recipe's cap; and a from-scratch run says so.
    from tfllm.tokenizers import load_tokenizer

    assert hparams["vocabulary_size"].number_value == load_tokenizer(tiny_classifier_run).vocabulary_size()
    assert "from_preset" in hparams and hparams["from_preset"].string_value == ""
    final = set(accumulator.Tags()["tensors"])
    assert {"final/test_accuracy", "final/val_f1", "final/test_roc_auc"} <= final
    accuracy = tf.make_ndarray(accumulator.Tensors("final/test_accuracy")[0].tensor_proto)
    assert 0.0 <= float(accuracy) <= 1.0

    from tfllm.tokenizers import load_tokenizer

    _check_projector(log_dir, load_tokenizer(tiny_classifier_run).vocabulary_size())
    with open(os.path.join(tiny_classifier_run, reporting.CURVES_PNG), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_causal_lm_run_writes_text_samples_and_the_rest(tmp_path):
    from tfllm.config import TrainConfig
    from tfllm.training.causal_lm import train_causal_lm

    run_dir = str(tmp_path / "lm")
    config = TrainConfig(task="generate", data="shakespeare", preset="tiny", run_dir=run_dir, max_rows=20000,
                         steps=6, jit_compile=False, overrides={"eval_interval": 3, "eval_windows": 8})
    train_causal_lm(config, verbose=0)
    log_dir = os.path.join(run_dir, "logs")

    assert {"epoch_loss", "epoch_perplexity", "epoch_learning_rate"} <= _scalar_tags(os.path.join(log_dir, "train"))
    samples = _events(os.path.join(log_dir, "samples"))
    assert "samples" in samples.PluginTagToContent("text")
    texts = [tf.make_ndarray(e.tensor_proto).item().decode() for e in samples.Tensors("samples")]
    assert len(texts) == 2 and all(len(t) > 10 for t in texts)

    hparams, accumulator = _hparams(log_dir)
    assert hparams["tokenizer"].string_value == "char" and hparams["steps"].number_value == 6
    assert {"final/val_perplexity", "final/val_bits_per_character"} <= set(accumulator.Tags()["tensors"])
    # The character vocabulary has a newline and a space: visible, one per line.
    from tfllm.tokenizers import load_tokenizer

    tokens = _check_projector(log_dir, load_tokenizer(run_dir).vocabulary_size())
    assert "\\n" in tokens and "<space>" in tokens
    assert os.path.getsize(os.path.join(run_dir, reporting.CURVES_PNG)) > 1000


def test_metadata_and_flattening_edge_cases(tmp_path):
    tokens = ["[PAD]", " ", "\n", "a\tb", "", "猫"]
    reporting.write_embedding_projector(str(tmp_path), np.eye(6), tokens)
    with open(tmp_path / "metadata.tsv", encoding="utf-8") as f:
        assert f.read().splitlines() == ["[PAD]", "<space>", "\\n", "a\\tb", "<empty>", "猫"]
    with pytest.raises(ValueError, match="5 tokens"):
        reporting.write_embedding_projector(str(tmp_path / "x"), np.eye(6), tokens[:5])

    flat = reporting.flatten_metrics(
        {"val": {"accuracy": 0.5, "roc_auc": float("nan"), "per_class": {"a": {"f1": 1.0}},
                 "confusion_matrix": {"matrix": [[1]]}, "positive_label": "fresh"}, "epochs_run": 3, "ok": True}
    )
    assert flat == {"val_accuracy": 0.5, "epochs_run": 3.0}


def test_plots_from_a_history():
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.8], "accuracy": [0.5, 0.7], "learning_rate": [1e-3, 5e-4]}
    fig = reporting.plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[2].lines) == 1
    report = {"confusion_matrix": {"labels": ["rotten", "fresh"], "matrix": [[3, 1], [2, 4]]}}
    fig = reporting.plot_confusion_matrix(report)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "2", "3", "4"]


def test_confusion_matrix_plot_scales_to_many_classes():
    # 200 classes drew a 162 x 161 inch figure with 40,000 cell texts (a minute, 8 GB).
    n = 200
    labels = [f"class_{i}" for i in range(n)]
    matrix = np.random.default_rng(0).integers(0, 50, size=(n, n)).tolist()
    fig = reporting.plot_confusion_matrix({"confusion_matrix": {"labels": labels, "matrix": matrix}})
    width, height = fig.get_size_inches()
    assert max(width, height) <= reporting.CONFUSION_MAX_INCHES + 1
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    xticks = [t.get_text() for t in ax.get_xticklabels()]
    assert 0 < len(xticks) <= reporting.CONFUSION_MAX_TICKS and xticks[0] == "class_0"
    assert len(ax.get_yticklabels()) == len(xticks)
    # Small matrices are drawn as before: every cell annotated, every label shown.
    small = {"confusion_matrix": {"labels": ["a", "b", "c"], "matrix": [[1, 0, 0], [0, 2, 0], [0, 0, 3]]}}
    fig = reporting.plot_confusion_matrix(small)
    assert tuple(fig.get_size_inches()) == (1.2 + 0.8 * 3 + 1, 1.2 + 0.8 * 3)
    assert len(fig.axes[0].texts) == 9
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]


def _tag_counts(run_dir):
    """{(folder, tag): how many events} over every event file under `run_dir`."""
    import collections
    import glob

    counts = collections.Counter()
    for path in glob.glob(os.path.join(run_dir, "**", "events.out.tfevents*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                counts[(os.path.relpath(os.path.dirname(path), run_dir), value.tag, event.step)] += 1
    return counts


@pytest.mark.slow
def test_a_resumed_finish_writes_the_final_report_once(tiny_classifier_run, tmp_path):
    """A run killed after its final report was written writes it again when it resumes: each tag stays once."""
    import shutil

    from tfllm import runs
    from tfllm.explanations import write_tensorboard_explanations

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_classifier_run, run_dir)
    task = runs.load_task(run_dir)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    hparams = {"hidden_dim": 16}
    for _ in range(2):
        write_tensorboard_explanations(os.path.join(run_dir, "logs"), task, ["rotten", "fresh"], ["a fine film"])
        reporting.write_run_report(run_dir, task, task.preprocessor.tokenizer, hparams, {}, metrics)
    counts = _tag_counts(run_dir)
    assert counts[("logs/explanations", "explanations/0", 0)] == 1
    assert counts[("logs", "final/test_accuracy", 0)] == 1
    assert counts[("logs/projector", "projector", 0)] == 1
    assert {key: n for key, n in counts.items() if n > 1} == {}


@pytest.mark.slow
def test_the_hparams_row_logs_the_tokenizer_s_vocabulary_not_the_recipe_s_cap(tiny_classifier_run, tmp_path):
    """`--set vocabulary_size=2000` on a corpus with 266 distinct pieces logged 2000 where the model had 266
    (a --from-preset run logged its real size): the row now holds the tokenizer's size; the cap is in recipe.json."""
    import shutil

    from tfllm import runs

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_classifier_run, run_dir)
    task = runs.load_task(run_dir)
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    reporting.write_run_report(run_dir, task, task.preprocessor.tokenizer, {"vocabulary_size": 2000}, {}, metrics)
    hparams, _ = _hparams(os.path.join(run_dir, "logs"))
    assert hparams["vocabulary_size"].number_value == task.preprocessor.tokenizer.vocabulary_size() < 2000
    assert hparams["vocabulary_cap"].number_value == 2000


def test_a_search_s_hparams_experiment_names_the_vocabulary_cap_its_trials_log(tmp_path):
    from tfllm.tuning import write_hparams_config

    write_hparams_config(str(tmp_path), "classify", {"vocabulary_size": {"values": [1000, 2000]}}, "val_accuracy")
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.EXPERIMENT_TAG]).experiment
    assert [h.name for h in experiment.hparam_infos] == ["vocabulary_cap"]


def _has_cjk_font():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    # matplotlib's LastResort font maps every character to a box: it draws no glyph.
    return any(ord("正") in FT2Font(path).get_charmap() for path in font_manager.findSystemFonts()
               if "lastresort" not in os.path.basename(path).lower())


def test_chinese_labels_are_drawn_or_named_in_one_note(tmp_path, capsys, monkeypatch):
    """Chinese class names and run names were empty boxes with a "Glyph ... missing" warning per character:
    a CJK font on the system now draws them; without one, one note names them and says what to install."""
    import warnings

    from tfllm import errors

    monkeypatch.setattr(errors, "command_running", True)  # as `tfllm train` runs it: the note on stderr
    report = {"confusion_matrix": {"labels": ["正面", "负面"], "matrix": [[3, 1], [0, 4]]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reporting.plot_confusion_matrix(report).savefig(str(tmp_path / "matrix.png"))
        reporting.save_training_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, str(tmp_path), title="情感")
    assert os.path.getsize(tmp_path / reporting.CURVES_PNG) > 1000
    glyphs = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    err = capsys.readouterr().err
    if _has_cjk_font():
        assert glyphs == [] and "empty boxes" not in err
    else:
        notes = [line for line in err.splitlines() if "empty boxes" in line]
        assert notes == ["tfllm: the confusion matrix draws '正面', '负面' as empty boxes: no font here has their "
                         "characters; install a CJK font (e.g. apt-get install fonts-noto-cjk) and run again.",
                         "tfllm: the training curves' figure draws '情感' as empty boxes: no font here has their "
                         "characters; install a CJK font (e.g. apt-get install fonts-noto-cjk) and run again."]
        # The curves' file, saved by tfllm, warns no more per character (the note said it); the matrix a
        # caller saves itself still gets matplotlib's warnings.
        assert glyphs and not any("24773" in g or "24863" in g for g in glyphs)
