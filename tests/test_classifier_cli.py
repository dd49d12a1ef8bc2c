"""End to end through the CLI, as a user runs it: train -> metrics -> TensorBoard -> export -> reload."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import main_in_process, run_cli, timed_fits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "reviews"
    result = run_cli("train", "--task", "classify", "--data", "rotten_tomatoes", "--preset", "tiny",
                     "--epochs", "1", "--max-rows", "300", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_train_writes_a_complete_run_directory(cli_run):
    run_dir, result = cli_run
    assert "Test metrics" in result.stdout and "accuracy" in result.stdout
    # Which class precision, recall and F1 are of (--labels' last, here the bundled set's): it was not said.
    assert "precision, recall, f1: positive label 'fresh')" in result.stdout
    # The epochs' val_accuracy (TensorBoard's curves) is the encoder's before the n-gram tables and blend: 0.45
    # beside metrics.json's 0.95, without a word.
    assert "(the epochs' val figures above are the encoder's alone)" in result.stdout
    # What it trains on, first: on a large file the tokenizer and word vectors take minutes before anything else.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sizes = [metrics["num_train_examples"], metrics["val"]["num_examples"], metrics["test"]["num_examples"]]
    assert result.stdout.startswith(f"Data: {sum(sizes)} rows, train/val/test {'/'.join(map(str, sizes))}, 2 classes\n")
    # A KerasHub preset at the root, tfllm's own records in tfllm/.
    for name in ("config.json", "metadata.json", "task.json", "preprocessor.json", "tokenizer.json", "model.weights.h5",
                 "task.weights.h5", "assets/tokenizer/vocabulary.txt", "metrics.json", "tfllm/run.json",
                 "tfllm/labels.json", "tfllm/recipe.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "model.keras").exists()
    assert not (run_dir / "backup").exists()  # a finished run leaves no resume state
    # None of Keras's false alarms: "ran out of data" (the pipeline's length is unknown
    # until its first pass ends) and "shuffle=True ... ignored" (its own default for tf.data).
    assert "ran out of data" not in result.stderr and "shuffle=True" not in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"):
        assert key in metrics["test"]
    matrix = np.array(metrics["test"]["confusion_matrix"]["matrix"])
    assert matrix.sum() == metrics["test"]["num_examples"]
    assert json.loads((run_dir / "tfllm" / "labels.json").read_text()) == ["rotten", "fresh"]
    assert "TextClassifier" in json.loads((run_dir / "metadata.json").read_text())["tasks"]


def test_tensorboard_event_files_hold_the_scalars(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = cli_run
    tags = set()
    for sub in ("train", "validation"):
        accumulator = EventAccumulator(str(run_dir / "logs" / sub), size_guidance={"tensors": 0})
        accumulator.Reload()
        tags |= {f"{sub}/{t}" for t in accumulator.Tags()["tensors"] + accumulator.Tags()["scalars"]}
    for tag in ("train/epoch_loss", "train/epoch_accuracy", "train/epoch_learning_rate", "validation/epoch_loss"):
        assert tag in tags, sorted(tags)


def test_predict_and_evaluate_commands(cli_run, capsys):
    run_dir, _ = cli_run
    result = run_cli("predict", run_dir, "a joyous, moving film", "tedious")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["text"] for r in rows] == ["a joyous, moving film", "tedious"]
    for row in rows:
        assert row["label"] in ("rotten", "fresh")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    result = main_in_process(capsys, "evaluate", run_dir, "--split", "test")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The run trained on --max-rows 300: evaluate scores exactly the run's own test split, not the whole file's.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert report["num_examples"] == metrics["test"]["num_examples"] < 300
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # Naming the training data is the same as leaving --data out: never the rows the run trained on.
    named = main_in_process(capsys, "evaluate", run_dir, "--data", "rotten_tomatoes", "--split", "test")
    assert json.loads(named.stdout) == report
    # Other columns of the run's own data were ignored without a word; its own are fine.
    for flag, value in (("--text-column", "review"), ("--label-column", "stars"), ("--split-column", "fold")):
        refused = main_in_process(capsys, "evaluate", run_dir, flag, value)
        assert refused.returncode == 2 and f"{flag} {value}: 'rotten_tomatoes' is the run's own data" in refused.stderr
    own = main_in_process(capsys, "evaluate", run_dir, "--split-column", "split", "--text-column", "text")
    assert own.returncode == 0 and json.loads(own.stdout) == report
    # From Python: the same report (there was no tfllm.evaluate), and options the task does not read refused.
    import tfllm

    assert json.loads(json.dumps(tfllm.evaluate(run_dir, split="test"))) == report
    with pytest.raises(tfllm.UserInputError, match="^memory='train' is not for a text classifier .*leave memory out.$"):
        tfllm.evaluate(run_dir, memory="train")
    with pytest.raises(tfllm.UserInputError, match="evaluate takes no option 'splt'"):
        tfllm.evaluate(run_dir, splt="val")


def test_evaluate_prints_a_many_class_report_a_row_a_line_as_json(monkeypatch, capsys):
    # 200 classes printed 42,042 lines: the confusion matrix a number a line (json.dumps(indent=2)).
    n = 200
    labels = [f"c{i}" for i in range(n)]
    report = {"num_examples": 4000, "accuracy": 0.5, "macro_f1": 0.4, "positive_label": None,
              "per_class": {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 20} for name in labels},
              "confusion_matrix": {"labels": labels, "matrix": np.eye(n, dtype=int).tolist()}}
    import tfllm.scoring

    monkeypatch.setattr(tfllm.scoring, "evaluate", lambda run_dir, **kwargs: report)
    result = main_in_process(capsys, "evaluate", "runs/any")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == report  # still JSON, nothing lost
    lines = result.stdout.splitlines()
    assert len(lines) < 2 * n + 20, len(lines)
    assert '    [1, 0, 0, 0, 0,' in result.stdout  # a matrix row a line
    assert '    "c0": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 20},' in lines
    assert '  "accuracy": 0.5,' in lines  # the scalars as before


def test_evaluate_scores_every_row_of_another_file_in_the_runs_columns(cli_run, tmp_path, capsys):
    import csv
    import gzip

    from tfllm.datasets import bundled_path

    run_dir, _ = cli_run
    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["label"] in ("rotten", "fresh")][:50]
    held_out = tmp_path / "held_out.csv"
    with open(held_out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    report = json.loads(main_in_process(capsys, "evaluate", run_dir, "--data", held_out).stdout)
    assert report["num_examples"] == 50  # all of it, not a seeded tenth
    # --split val of a file without --split-column: all of it was scored, as if it were that split.
    refused = main_in_process(capsys, "evaluate", run_dir, "--data", held_out, "--split", "val")
    assert refused.returncode == 2 and "--split val needs --split-column" in refused.stderr and refused.stdout == ""
    labels = [r["label"] for r in rows]
    assert report["per_class"]["fresh"]["support"] == labels.count("fresh")
    # A held-out file that names its rows' splits needs no train rows (it was "has no rows with split 'train'").
    with open(tmp_path / "named.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "split"])
        writer.writerows([r["text"], r["label"], "val" if i % 5 == 0 else "test"] for i, r in enumerate(rows))
    for split, count in (("test", 40), ("val", 10)):
        result = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "named.csv", "--split-column",
                                 "split", "--split", split)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["num_examples"] == count
    refused = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "named.csv", "--split-column", "split",
                              "--split", "train")
    assert refused.returncode == 2 and "no rows with split 'train'" in refused.stderr
    # One class only: ROC-AUC is undefined, and the report stays JSON (null, not NaN).
    with open(tmp_path / "fresh.csv", "w", newline="", encoding="utf-8") as f:
        # "fresh " (a spreadsheet's stray space) is the run's "fresh", read as training reads it, and said.
        f.write("text,label\n" + "".join(f'"{r["text"]}",fresh \n' for r in rows if r["label"] == "fresh"))
    result = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "fresh.csv")
    assert result.returncode == 0 and json.loads(result.stdout)["roc_auc"] is None and "NaN" not in result.stdout
    assert result.stderr.count(f"{labels.count('fresh')} labels of {str(tmp_path / 'fresh.csv')!r} (column 'label') "
                               "had spaces around them, read without: 'fresh ' -> 'fresh'.") == 1
    # A folder's texts are its .txt files: a column flag with one was ignored without a word.
    (tmp_path / "folder" / "fresh").mkdir(parents=True)
    (tmp_path / "folder" / "fresh" / "1.txt").write_text("a fine film")
    refused = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "folder", "--text-column", "review")
    assert refused.returncode == 2 and "--text-column review does not apply to the folder" in refused.stderr


def test_python_callers_are_told_of_in_sample_val_figures_by_a_warning_in_their_names(tiny_classifier_run, capsys):
    """`tfllm.evaluate(run, split="val")` printed "Note: ... --split test is the held-out figure." on stderr."""
    import tfllm

    with pytest.warns(tfllm.TfllmWarning, match=r"in-sample.*split='test' is the held-out figure"):
        tfllm.evaluate(tiny_classifier_run, split="val")
    assert "Note:" not in capsys.readouterr().err


def test_the_tables_count_the_validation_texts_after_its_figures_are_taken(tiny_classifier_run, tmp_path, capsys):
    """Once the blend is fitted, the n-gram tables count the validation texts too (`refit_on_validation`).
    metrics.json's val figures are those from before: the same as a run of the same seed that keeps the
    tables of the training split alone. The tables differ; metrics.json's val block says when it was measured,
    and `tfllm evaluate --split val` says it scores texts the tables counted.

    The plain run's training also checks that `train_classifier(..., verbose=0)` prints nothing (it silenced
    Keras but still printed tfllm's "Data: ..." lines)."""
    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import load_run, train_classifier

    plain_dir = str(tmp_path / "plain")
    capsys.readouterr()
    train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=400, run_dir=plain_dir,
                                 overrides={"refit_on_validation": False}), verbose=0)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing
    refit, plain = (runs.read_json(runs.path(d, runs.METRICS)) for d in (tiny_classifier_run, plain_dir))
    assert refit["ngram_tables_from"] == ["train", "val"] and plain["ngram_tables_from"] == ["train"]
    # metrics.json itself said nothing of it: each val figure differed from the saved model's, unexplained.
    assert refit["val"].pop("measured") == "before the refit on validation texts (the saved model has seen them)"
    assert "measured" not in plain["val"]
    assert refit["val"] == plain["val"]
    models = [load_run(d)[0] for d in (tiny_classifier_run, plain_dir)]
    for layer in ("wide_ngrams", "char_ngrams", "word_ngrams"):
        refit_table, plain_table = (m.get_layer(layer).get_weights()[0] for m in models)
        assert not np.array_equal(refit_table, plain_table), layer
    np.testing.assert_array_equal(*(m.get_layer("blend").get_weights()[1] for m in models))
    for run_dir, noted in ((tiny_classifier_run, True), (plain_dir, False)):
        result = main_in_process(capsys, "evaluate", run_dir, "--split", "val")
        assert result.returncode == 0 and ("in-sample" in result.stderr) is noted, result.stderr
    assert "in-sample" not in main_in_process(capsys, "evaluate", tiny_classifier_run, "--split", "test").stderr


def test_a_rare_class_is_reported_and_balance_classes_weighs_it_in_training_and_in_the_blend(tmp_path, capsys,
                                                                                              monkeypatch):
    import keras

    from tfllm.datasets import balanced_class_weight
    from tfllm.models.text_classifier import _fit_blend
    from tfllm.training.classifier import load_run, predict_probabilities

    assert balanced_class_weight([0, 0, 0, 1], 2) == {0: 4 / 6, 1: 2.0}
    # The blend's logistic fit: weighed by class, its bias moves towards the rare class.
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.1).astype(int)
    logits = (labels * 2.0 - 1.0 + rng.normal(0, 2, 400))[:, None]
    plain = _fit_blend([logits, logits], labels)
    weighed = _fit_blend([logits, logits], labels, class_weight=balanced_class_weight(labels, 2))
    assert weighed[2][0] > plain[2][0] + 1

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"a good film {i},pos\n" + "".join(f"a bad film {i} {j},neg\n" for j in range(9))
                                             for i in range(30)))
    fits = []
    fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fits.append(k.get("class_weight")) or fit(self, *a, **k))
    runs = {}
    for name, extra in (("plain", []), ("balanced", ["--set", "balance_classes=true"])):
        runs[name] = tmp_path / name
        result = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "3", "--run-dir",
                                 runs[name], *extra)
        assert result.returncode == 0, result.stderr
        warning = [line for line in result.stderr.splitlines() if "imbalanced" in line]
        assert len(warning) == 1 and "('neg' 216, 'pos' 24 training rows)" in warning[0], result.stderr
        assert "always answering 'neg' scores 0.90 accuracy" in warning[0]
        assert ("--set balance_classes=true" in warning[0]) == (name == "plain")
        assert "Precision" not in warning[0]  # the positive label is the rare one, 'pos'
        # The summary shows the figure that says whether the rare class is found, beside accuracy.
        balanced = json.loads((runs[name] / "metrics.json").read_text())["test"]["balanced_accuracy"]
        assert f"  balanced_accuracy {balanced:.4f}" in result.stdout, result.stdout
    assert fits == [None, balanced_class_weight([0] * 216 + [1] * 24, 2)]
    # The rare class is answered more often: its mean probability on the training texts is higher.
    texts = [f"a good film {i}" for i in range(30)] + [f"a bad film {i} 0" for i in range(30)]
    rare = {name: predict_probabilities(load_run(str(run))[0], texts)[:, 1].mean() for name, run in runs.items()}
    assert rare["balanced"] > rare["plain"], rare
    # With 'pos' as the common label, its figures are the positive label's: said, with the way round.
    flipped = tmp_path / "flipped.csv"
    flipped.write_text(data.read_text().replace(",pos", ",tmp").replace(",neg", ",pos").replace(",tmp", ",neg"))
    result = main_in_process(capsys, "train", "--data", flipped, "--preset", "tiny", "--epochs", "1",
                             "--run-dir", tmp_path / "flipped")
    assert "positive label, 'pos', the common one; --labels pos,neg makes 'neg' positive" in result.stderr


def test_duplicate_texts_are_reported_and_an_edited_data_file_is_not_split_again(tmp_path, capsys):
    data = tmp_path / "reviews.csv"
    rows = [f"a good film {i},pos\na bad film {i},neg\n" for i in range(30)]
    data.write_text("text,label\n" + "".join(rows + rows[:10]))  # 20 rows twice
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir)
    assert result.returncode == 0
    # The duplicate rows were scattered across the splits: said, with how many held-out texts it touches.
    assert "test texts and" in result.stderr and "are also training texts" in result.stderr, result.stderr
    own = main_in_process(capsys, "evaluate", run_dir)
    assert own.returncode == 0
    # A copy of the training file (or the file moved with its run) was scored whole, trained rows too.
    import shutil

    shutil.copy(data, tmp_path / "copy.csv")
    copy = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "copy.csv")
    assert copy.returncode == 0 and copy.stdout == own.stdout
    assert "holds the run's training data" in copy.stderr and "never a row it trained on" in copy.stderr
    assert "byte for byte" in copy.stderr
    # The same rows in another format: not "byte for byte", which it is not.
    (tmp_path / "copy.jsonl").write_text("".join(
        json.dumps({"text": line.rsplit(",", 1)[0], "label": line.rsplit(",", 1)[1]}) + "\n"
        for line in data.read_text().splitlines()[1:]))
    jsonl = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "copy.jsonl")
    assert jsonl.returncode == 0 and jsonl.stdout == own.stdout, jsonl.stderr
    assert f"holds the run's training data (the same rows as '{data}')" in jsonl.stderr, jsonl.stderr
    assert "byte for byte" not in jsonl.stderr
    with open(data, "a") as f:
        f.write("a great film,pos\n")  # now every row may land in another split
    result = main_in_process(capsys, "evaluate", run_dir)
    assert result.returncode == 2 and "has changed since the run" in result.stderr, result.stderr
    # Gone: evaluate and the TFLite export (whose parity report reads the test split) said 'Check the path, or
    # use a bundled name', a fix for a --data neither takes.
    data.rename(tmp_path / "moved.csv")
    result = main_in_process(capsys, "evaluate", run_dir)
    assert result.returncode == 2 and f"reads the run's training data, '{data}', which no longer exists" in result.stderr
    assert "score another labelled file with --data FILE" in result.stderr and result.stderr.count("\n") == 1
    # The TFLite export needs only the run (as a translation's): its parity is then on texts of the vocabulary.
    result = main_in_process(capsys, "export", run_dir, "--format", "tflite", "--name", "r", "--base-dir", tmp_path / "sm")
    assert result.returncode == 0, result.stderr
    parity = json.loads((tmp_path / "sm" / "r" / "1" / "parity.json").read_text())
    assert "vocabulary" in parity["texts"] and parity["num_examples"] > 0 and "keras_accuracy" not in parity
    assert parity["model.tflite"]["same_label_as_keras"] == 1.0
    # Except int8, which calibrates on the training texts.
    result = main_in_process(capsys, "export", run_dir, "--format", "tflite", "--quantize", "int8", "--name", "r",
                             "--base-dir", tmp_path / "sm")
    assert result.returncode == 2 and "--quantize int8 (it calibrates on training texts) reads the run's" in result.stderr
    assert "or use --quantize dynamic or float16" in result.stderr and sorted(os.listdir(tmp_path / "sm" / "r")) == ["1"]


def test_a_run_trained_on_a_relative_path_is_evaluated_from_another_folder(tmp_path, monkeypatch, capsys):
    """--data reviews.csv is recorded as typed; from another folder (where it names nothing) evaluate and
    export read the file training read, not 'a path relative to the folder the run was trained from'.
    Its --text-column is the run's: evaluate and predict --file read a file in it without being told."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "reviews.csv").write_text(
        "review,label\n" + "".join(f"a good film {i},pos\na bad film {i},neg\n" for i in range(70)))
    monkeypatch.chdir(tmp_path / "project")
    run_dir = tmp_path / "project" / "run"
    assert main_in_process(capsys, "train", "--data", "reviews.csv", "--text-column", "review", "--preset", "tiny",
                           "--epochs", "1", "--run-dir", "run").returncode == 0
    here = main_in_process(capsys, "evaluate", run_dir)
    assert here.returncode == 0
    (tmp_path / "new.csv").write_text("id,review\n1,a good film\n2,a bad film\n")
    expected = main_in_process(capsys, "predict", run_dir, "a good film", "a bad film")
    assert main_in_process(capsys, "predict", run_dir, "--file", tmp_path / "new.csv").stdout == expected.stdout
    monkeypatch.chdir(tmp_path)
    elsewhere = main_in_process(capsys, "evaluate", run_dir)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == here.stdout  # the same split of the same file
    result = main_in_process(capsys, "export", run_dir, "--format", "tflite", "--quantize", "int8", "--name", "r",
                             "--base-dir", tmp_path / "sm")
    assert result.returncode == 0, result.stderr  # int8 calibrates on the training texts: they were found
    # A file of that name in the other folder is another file: it is read (and refused when it differs).
    (tmp_path / "reviews.csv").write_text("text,label\nsomething else,pos\n")
    result = main_in_process(capsys, "evaluate", run_dir)
    assert result.returncode == 2 and "has changed since the run" in result.stderr
    # The file moved away: from any folder, the message names where training read it, not the relative path.
    (tmp_path / "reviews.csv").unlink()
    (tmp_path / "project" / "reviews.csv").rename(tmp_path / "moved.csv")
    for folder in (tmp_path, tmp_path / "project"):
        monkeypatch.chdir(folder)
        result = main_in_process(capsys, "evaluate", run_dir)
        assert result.returncode == 2 and result.stderr.count("\n") == 1
        assert f"{str(tmp_path / 'project' / 'reviews.csv')!r}, which no longer exists" in result.stderr


def test_max_rows_and_seed_out_of_range_are_refused_by_the_parser(capsys):
    from tfllm.cli import main

    for option, value in (("--max-rows", "0"), ("--max-rows", "-5"), ("--seed", "-1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--data", "rotten_tomatoes", option, value])
        assert exit_info.value.code == 2 and f"argument {option}: must be at least" in capsys.readouterr().err


# One fresh process (one TensorFlow start) for both checks of a user's own process. First the exported
# SavedModel, with TensorFlow and tensorflow_text only (tfllm not yet imported); then the run in plain KerasHub,
# with tfllm imported only to register its classes.
FRESH_PROCESS_LOADS = """
import json, sys
import tensorflow_text  # registers the tokenizer ops before loading
import tensorflow as tf
assert not [name for name in sys.modules if name.split(".")[0] == "tfllm"], "tfllm was imported before the export loaded"
export_dir, run_dir = sys.argv[1], sys.argv[2]
served_texts, run_texts = json.loads(sys.argv[3]), json.loads(sys.argv[4])
model = tf.saved_model.load(export_dir)
out = model.signatures["serving_default"](text=tf.constant(served_texts))
served = {"probabilities": out["probabilities"].numpy().tolist(),
          "label": [l.decode() for l in out["label"].numpy()],
          "classes": [[c.decode() for c in row] for row in out["classes"].numpy()]}
import numpy as np
import keras_hub
import tfllm  # registers tfllm's classes
task = keras_hub.models.TextClassifier.from_preset(run_dir)
backbone = keras_hub.models.Backbone.from_preset(run_dir)
tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(run_dir)
loaded = {"outputs": np.asarray(task.predict(run_texts, verbose=0)).tolist(), "backbone": type(backbone).__name__,
          "ids": np.asarray(tokenizer(run_texts[0])).tolist()}
print(json.dumps({"served": served, "loaded": loaded}))
"""


def test_export_reloads_and_a_run_loads_in_plain_keras_hub_in_a_fresh_process(cli_run, tmp_path, capsys):
    """Two checks that need a user's own process, in one fresh process: (1) `export` writes numbered versions
    whose SavedModel reloads with TensorFlow and tensorflow_text alone, with the same probabilities, labels and
    each column's class names as the run; `--keep 1` prunes the older versions. (2) The run loads in plain
    KerasHub (TextClassifier, Backbone and Tokenizer `from_preset`) with the same outputs and token ids."""
    import keras

    from tfllm.training.classifier import load_run, predict_probabilities

    run_dir, _ = cli_run
    base = tmp_path / "savedmodels"
    for expected_version in ("1", "2"):
        result = main_in_process(capsys, "export", run_dir, "--name", "reviews", "--base-dir", base)
        assert result.returncode == 0, result.stderr
        assert (base / "reviews" / expected_version / "saved_model.pb").exists()
    assert sorted(os.listdir(base / "reviews")) == ["1", "2"]  # no temporary folders left

    texts = ["a joyous, moving film", "tedious and overlong", "电影", ""]
    run_texts = ["a joyous, moving film", "tedious"]
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_LOADS, str(base / "reviews" / "2"), str(run_dir),
                          json.dumps(texts), json.dumps(run_texts)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    both = json.loads(out.stdout.strip().splitlines()[-1])
    served = both["served"]
    model, label_names, _ = load_run(str(run_dir))
    expected = predict_probabilities(model, texts)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert served["label"] == [label_names[i] for i in expected.argmax(-1)]
    # Each probability column's class name (a served model's probabilities came back unlabelled).
    assert served["classes"] == [list(label_names)] * len(texts)

    result = main_in_process(capsys, "export", run_dir, "--name", "reviews", "--base-dir", base, "--keep", "1")
    assert result.returncode == 0
    assert sorted(os.listdir(base / "reviews")) == ["3"]

    # The run in plain KerasHub.
    loaded = both["loaded"]
    np.testing.assert_array_equal(np.asarray(loaded["outputs"], "float32"), model.predict(run_texts, verbose=0))
    assert loaded["backbone"] == "EncoderBackbone"
    assert loaded["ids"] == keras.ops.convert_to_numpy(model.preprocessor.tokenizer(run_texts[0])).tolist()


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    """A tiny classifier of the bundled three-class reviews, trained once for the tests of a three-class run
    (it is not modified): its run directory and metrics."""
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    run_dir = tmp_path_factory.mktemp("three") / "r"
    metrics = train_classifier(TrainConfig(data="rotten_tomatoes_3class", preset="tiny", max_rows=300,
                                           run_dir=str(run_dir)), verbose=0)
    return run_dir, metrics


def test_three_classes_train_with_categorical_cross_entropy(three_class_run):
    from tfllm.training.classifier import load_run

    run_dir, metrics = three_class_run
    assert metrics["test"]["confusion_matrix"]["labels"] == ["fresh", "plot", "rotten"]
    assert metrics["test"]["average"] == "macro"
    model, _, _ = load_run(str(run_dir))
    assert model.output_shape == (None, 3)
    run = json.loads((run_dir / "tfllm" / "run.json").read_text())
    assert run["data"] == "rotten_tomatoes_3class"


def test_label_smoothing_applies_to_three_classes_as_to_two():
    """--set label_smoothing=S with more than two classes trained without it (Keras' sparse loss has none)."""
    import keras

    from tfllm.training.classifier import compile_classifier

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    compile_classifier(model, {"learning_rate": 1e-3, "epochs": 1, "jit_compile": False, "label_smoothing": 0.2})
    labels = np.array([0, 2, 1, 1])
    probabilities = model(np.random.default_rng(0).normal(size=(4, 4)).astype("float32"))
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(np.eye(3)[labels], probabilities)
    assert float(model.loss(labels, probabilities)) == pytest.approx(float(expected), rel=1e-5)
    assert float(model.loss(labels, probabilities)) != pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)), rel=1e-3)


def test_the_auc_curve_matches_the_exact_roc_auc_for_probabilities_in_a_narrow_band():
    """A weak model's validation probabilities all fell within 0.146-0.170: Keras's AUC at its default 200
    thresholds binned them into about five buckets, and TensorBoard's `auc` read 0.4910 where metrics.json's
    exact roc_auc read 0.4615. Here the default is 0.031 off; the metric tfllm compiles is within 0.002."""
    import keras
    from sklearn.metrics import roc_auc_score

    from tfllm.training.classifier import compile_classifier

    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))  # its "probabilities" are its inputs
    compile_classifier(model, {"learning_rate": 1e-3, "epochs": 1, "jit_compile": False})
    labels = np.array([0, 1] * 20, dtype="float32")
    probabilities = np.round(0.146 + 0.024 * np.random.default_rng(1).random(40) + 0.003 * labels, 4)
    probabilities = probabilities.astype("float32")[:, None]
    exact = roc_auc_score(labels, probabilities[:, 0])
    default = keras.metrics.AUC()
    default.update_state(labels, probabilities)
    assert abs(float(default.result()) - exact) > 0.02  # the case the old metric got wrong
    logged = model.evaluate(probabilities, labels[:, None], batch_size=16, verbose=0, return_dict=True)
    assert logged["auc"] == pytest.approx(exact, abs=0.002)


def test_three_classes_log_the_reports_one_vs_rest_auc_per_epoch(three_class_run):
    """Only a binary run logged `auc` (TensorBoard's epoch_auc), though the README lists AUC among the scalars:
    a three-class run now logs metrics.json's roc_auc (each class against the rest, averaged) every epoch."""
    import keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.evaluation import classification_report
    from tfllm.training.classifier import compile_classifier

    run_dir, _ = three_class_run
    for sub in ("train", "validation"):
        accumulator = EventAccumulator(str(run_dir / "logs" / sub), size_guidance={"tensors": 0})
        accumulator.Reload()
        assert "epoch_auc" in accumulator.Tags()["tensors"], (sub, accumulator.Tags())
        assert len(accumulator.Tensors("epoch_auc")) == len(accumulator.Tensors("epoch_loss")) >= 1  # every epoch
    # The figure is the report's, a class with no rows left out of the mean as the report leaves it out.
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))  # its "probabilities" are its inputs
    compile_classifier(model, {"learning_rate": 1e-3, "epochs": 1, "jit_compile": False})
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)  # class 3 never appears
    probabilities = rng.dirichlet(np.ones(4), 60).astype("float32") + np.eye(4, dtype="float32")[labels] * 0.2
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = classification_report(labels, probabilities, ["a", "b", "c", "d"])["roc_auc"]
    logged = model.evaluate(probabilities, labels, batch_size=16, verbose=0, return_dict=True)
    assert 0.5 < logged["auc"] == pytest.approx(expected, abs=0.002)


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--data", "{tmp}/missing.csv"], "does not exist"),
        (["train", "--data", "{tmp}/empty.csv"], "empty"),
        (["train", "--data", "{tmp}/latin1.csv"], "not UTF-8"),
        (["train", "--data", "{tmp}/ok.csv", "--text-column", "review"], "no text column"),
        (["train", "--data", "{tmp}/one_class.csv"], "only one class"),
        (["train", "--data", "{tmp}/blank.csv"], "empty text"),
        (["train", "--data", "{tmp}/ok.csv", "--epochs", "-1"], "--epochs must be at least 1"),
        (["train", "--data", "{tmp}/ok.csv", "--epochs", "3", "--set", "epochs=5"],
         "--epochs 3 and --set epochs=5 say different things; give one"),
        (["train", "--data", "{tmp}/ok.csv", "--no-jit-compile", "--set", "jit_compile=true"],
         "--jit-compile/--no-jit-compile and --set jit_compile=True say different things"),
        (["train", "--data", "{tmp}/ok.csv", "--batch-size", "-1"], "--batch-size must be at least 1"),
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "{tmp}/nowhere"], "is not a folder (no such path)"),
        # A relative path is a path too (KerasHub said "A preset must be a one of:."), and a folder needs config.json.
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "nowhere/run"], "'nowhere/run' is not a folder (no such"),
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "{tmp}/folder"], "is a folder but not a preset (no config"),
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "nosuchdir"], "is neither a folder (no such path) nor a"),
        (["train", "--data", "{tmp}/two_rows.csv"], "gives no val and no test rows"),
        (["train", "--data", "{tmp}/ragged.csv"], "data row 2 (line 3) has 3 fields, the header has 2: quote texts"),
        (["train", "--data", "{tmp}/two_texts.csv"], "more than one column named 'text'"),
        # Flags a classifier does not read were accepted and ignored.
        (["train", "--data", "{tmp}/ok.csv", "--source-column", "text"], "--source-column is for --task translate"),
        (["train", "--data", "{tmp}/ok.csv", "--target-column", "label"], "--target-column is for --task translate"),
        (["train", "--data", "{tmp}/folder", "--text-column", "review"], "--text-column review does not apply to the folder"),
        (["train", "--data", "{tmp}/folder", "--label-column", "y"], "--label-column y does not apply to the folder"),
        (["train", "--data", "{tmp}/folder", "--split-column", "s"], "--split-column s does not apply to the folder"),
        # ... nor does a generator (running text, its last tenth held out).
        (["train", "--task", "generate", "--data", "{tmp}/ok.csv", "--labels", "a,b"],
         "--labels is not for --task generate"),
        (["train", "--task", "generate", "--data", "{tmp}/ok.csv", "--split-column", "s"],
         "--split-column is not for --task generate"),
        (["train", "--task", "generate", "--data", "{tmp}/ok.csv", "--source-column", "text"],
         "--source-column is not for --task generate"),
        # The char tokenizer keeps case: lowercase=true was recorded in the recipe and ignored.
        (["train", "--data", "{tmp}/ok.csv", "--tokenizer", "char", "--set", "lowercase=true"],
         "the char tokenizer keeps every character as written"),
        (["train", "--task", "generate", "--data", "{tmp}/one_line.txt", "--set", "lowercase=true"],
         "the char tokenizer keeps every character as written"),
        # Every text its own class: it was refused as too few rows per class, to raise --max-rows.
        (["train", "--data", "{tmp}/ok.csv", "--label-column", "text"], "--text-column and --label-column both name"),
        (["pretrain", "--data", "{tmp}/one_line.txt"], "at least 2"),
        (["pretrain", "--data", "{tmp}/missing.txt"], "does not exist"),
        (["pretrain", "--data", "{tmp}/words.txt", "--objective", "vectors", "--preset", "tiny"], "running text"),
        (["export", "{tmp}/nowhere", "--name", "x"], "not a tfllm run"),
        (["export", "{tmp}", "--name", "../evil"], "Invalid export name"),
        (["export", "{tmp}"], "needs --name NAME"),
        (["export", "{tmp}", "--name", "my model", "--base-dir", "elsewhere"], "becomes a folder under elsewhere/)"),
        (["predict", "{tmp}/nowhere", "hi"], "not a tfllm run"),
        (["evaluate", "{tmp}/nowhere"], "not a tfllm run"),
        (["generate", "{tmp}/old_format", "hi"], "before runs became KerasHub presets"),
        # A run from before runs were presets, to start from: KerasHub's "Unrecognized format for config.json".
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "{tmp}/old_format"], "before runs became KerasHub presets"),
        (["train", "--data", "{tmp}/ok.csv", "--from-preset", "{tmp}/old_format", "--ensemble", "2"], "before runs became KerasHub presets"),
        (["train", "--task", "generate", "--data", "{tmp}/one_line.txt", "--from-preset", "{tmp}/old_format"],
         "before runs became KerasHub presets"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, capsys, args, match):
    from tfllm.cli import main

    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,a\nok,b\n")
    (tmp_path / "ok.csv").write_text("text,label\n" + "".join(f"fine {i},a\nbad {i},b\n" for i in range(6)))
    (tmp_path / "two_rows.csv").write_text("text,label\nfine,a\nbad,b\n")
    (tmp_path / "ragged.csv").write_text("text,label\nfine,a\nmusic, movie,b\n")
    (tmp_path / "two_texts.csv").write_text("text,label,text\nfine,a,x\nbad,b,y\n")
    (tmp_path / "one_class.csv").write_text("text,label\nfine,a\nbad,a\n")
    (tmp_path / "blank.csv").write_text('text,label\n"",a\nbad,b\n')
    (tmp_path / "one_line.txt").write_text("only one document\n")
    (tmp_path / "words.txt").write_text("a\nb\nc\nd\n")  # no two tokens in one document
    for label in "ab":
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "folder" / label / f"{i}.txt").write_text(f"text {label} {i}")
    old_format_run(tmp_path / "old_format")
    before = sorted(os.listdir(tmp_path))
    argv = [a.format(tmp=tmp_path) for a in args]
    if args[0] in ("train", "pretrain"):
        argv += ["--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2  # in-process: the same code path as the console script, without a new TensorFlow
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == before  # no run dir, no savedmodels/


def old_format_run(folder):
    """What a run from before runs were KerasHub presets holds (the files `runs.is_old_format` reads, and
    its TrainConfig as config.json, which KerasHub reads as a preset's and cannot)."""
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"")
    (folder / "preset.json").write_text(json.dumps({"hidden_dim": 16}))
    (folder / "config.json").write_text(json.dumps({"task": "classify", "data": "rotten_tomatoes", "preset": "tiny"}))
    return folder


def test_from_preset_of_a_run_from_before_runs_were_presets_says_so_from_python(tmp_path):
    """`TrainConfig(from_preset=...)` of such a run: KerasHub's "Unrecognized format for config.json ...
    Contents of config.json:.", where every other use of the run says what it is."""
    from tfllm import TrainConfig, UserInputError, train_classifier
    from tfllm.training.causal_lm import train_causal_lm

    old = old_format_run(tmp_path / "old")
    (tmp_path / "ok.csv").write_text("text,label\n" + "".join(f"fine {i},a\nbad {i},b\n" for i in range(6)))
    for train, task in ((train_classifier, "classify"), (train_causal_lm, "generate")):
        config = TrainConfig(task=task, data=str(tmp_path / "ok.csv"), from_preset=str(old),
                             run_dir=str(tmp_path / "run"))
        with pytest.raises(UserInputError, match="before runs became KerasHub presets") as error:
            train(config)
        assert "Unrecognized format" not in str(error.value)
        assert not (tmp_path / "run").exists()


def test_a_run_from_before_runs_were_presets_is_named_by_its_layout_and_train_offers_to_replace_it(tmp_path, capsys):
    """The message said the run "was written by tfllm 0.1", which `tfllm --version` (0.1.0) is too; and
    `train --run-dir` into it said it "already holds a finished run", where other commands refuse it."""
    import tfllm
    from tfllm.cli import main

    old = old_format_run(tmp_path / "old")
    (tmp_path / "ok.csv").write_text("text,label\n" + "".join(f"fine {i},a\nbad {i},b\n" for i in range(6)))
    assert main(["predict", str(old), "hi"]) == 2
    err = capsys.readouterr().err
    assert "before runs became KerasHub presets" in err and "builds before 2026-11-30" in err
    assert "tfllm 0.1" not in err and tfllm.__version__ not in err
    assert main(["train", "--data", str(tmp_path / "ok.csv"), "--run-dir", str(old)]) == 2
    err = capsys.readouterr().err
    assert "holds a run written by a tfllm from before runs became KerasHub presets" in err and "Pass --overwrite" in err
    assert "finished run" not in err and err.count("\n") == 1
    assert sorted(os.listdir(old)) == ["config.json", "model.keras", "preset.json"]  # left as it was


def test_bad_input_exit_status_from_the_console_script(tmp_path):
    result = run_cli("predict", tmp_path / "nowhere", "hi")
    assert result.returncode == 2 and "not a tfllm run" in result.stderr and "Traceback" not in result.stderr


def test_a_finished_run_is_never_destroyed(cli_run, tmp_path, capsys):
    """Training into a finished run is refused without --overwrite; with it, a failed run puts the old one back."""
    import shutil

    from tfllm import runs
    from tfllm.cli import main
    from tfllm.training import common

    run_dir = tmp_path / "reviews"
    shutil.copytree(cli_run[0], run_dir)
    snapshot = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--run-dir", str(run_dir)]
    assert main(argv) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(argv + ["--batch-size", "-1", "--overwrite"]) == 2  # the example
    # A run that fails after it started (here: inside the guarded training) restores the old one.
    resume, previous = runs.prepare(str(run_dir), overwrite=True)
    assert not resume and previous and not (run_dir / "task.json").exists()
    with pytest.raises(RuntimeError):
        with common.guarded_run(str(run_dir), resume, previous):
            (run_dir / "half-written").write_text("x")
            raise RuntimeError("training failed")
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == snapshot
    assert runs.is_finished(str(run_dir)) and not os.path.exists(previous)


def test_an_overwrite_stopped_before_its_first_backup_never_loses_the_old_run(cli_run, tmp_path, capsys, monkeypatch):
    """Ctrl-C before the first epoch's backup: nothing to resume, so the old run comes back at once. Killed
    outright (no cleanup runs), the old run waits aside and the next command puts it back first."""
    import shutil

    from tfllm import runs
    from tfllm.cli import main
    from tfllm.training import classifier

    run_dir = tmp_path / "reviews"
    shutil.copytree(cli_run[0], run_dir)
    snapshot = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--run-dir", str(run_dir)]

    def interrupted(*args, **kwargs):  # after the new run's records are written, before any backup
        assert (run_dir / "tfllm" / "run.json").exists() and not (run_dir / "task.json").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(classifier, "own_classifier", interrupted)
    assert main(argv + ["--overwrite"]) == 130
    assert "nothing to resume" in capsys.readouterr().out
    assert {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews"]  # no hidden .previous left

    # What a SIGKILL at the same moment leaves: the old run aside, the new run's start in its place.
    resume, previous = runs.prepare(str(run_dir), overwrite=True)
    runs.write_json(runs.path(str(run_dir), runs.RUN_CONFIG), {})
    assert main(argv) == 2 and "already holds a finished run" in capsys.readouterr().err
    assert {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot
    assert not os.path.exists(previous)

def test_version():
    import importlib.metadata

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tfllm", importlib.metadata.version("tfllm")]


def test_the_parser_loads_without_tensorflow():
    # `tfllm --help`, `--version` and argument errors answer at once (0.03 vs 3.3 s here).
    code = "import sys; from tfllm.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    # `tfllm presets` only reads the recipes' table (it took 6-9 s when the table sat in tfllm.models).
    code = ("import sys; from tfllm.cli import main; main(['presets', 'classify', 'tiny']);"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "batch_size=" in result.stdout and result.stdout.split()[-2:] == ["False", "False"], result.stdout


def test_a_run_missing_its_weights_is_not_finished(cli_run, tmp_path, capsys):
    import shutil

    from tfllm.cli import main

    run_dir = tmp_path / "half"
    shutil.copytree(cli_run[0], run_dir)
    (run_dir / "model.weights.h5").unlink()  # a finished run's files, less its weights (and with no backup)
    assert main(["export", str(run_dir), "--name", "x", "--base-dir", str(tmp_path / "sm")]) == 2
    assert "run its training command again (it starts over)" in capsys.readouterr().err  # nothing to resume


@pytest.mark.slow
def test_sigterm_stops_a_training_that_the_same_command_resumes(tmp_path, capsys):
    """`kill` (a scheduler, `timeout`) stops the command as Ctrl-C does: exit 143, a backup to resume from."""
    import signal
    import time

    from tfllm.cli import main

    run_dir = tmp_path / "run"
    # 20 epochs: the signal comes after the first epoch's backup, with 19 epochs (seconds) still to train.
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--epochs", "20",
            "--set", "early_stopping=false", "--run-dir", str(run_dir)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable, "-m", "tfllm.cli", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (run_dir / "backup" / "training_metadata.json").exists() and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Run the same command again to resume" in out and "Traceback" not in err
    done = json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 0 < done < 20
    assert main([a if a != "20" else "2" for a in argv]) == 2  # other settings: refused
    assert "epochs differs" in capsys.readouterr().err
    assert main(argv) == 0
    out = capsys.readouterr().out
    # Says why the figures need not match an uninterrupted run of the same seed.
    assert "Resuming the interrupted run" in out
    assert "start over from the seed there, so its figures can differ slightly" in out
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 20
    # The curves are drawn from what TensorBoard logged, all 20 epochs (fit's history starts at the resume).
    from tfllm.training.reporting import history_from_logs

    history = history_from_logs(str(run_dir / "logs"))
    assert len(history["loss"]) == len(history["val_loss"]) == 20


def test_a_stop_after_the_last_epoch_resumes_without_training_again(tmp_path, capsys, monkeypatch):
    """Keras deleted the backup when `fit` ended, so a Ctrl-C or `kill` during the work after it
    (evaluation, the naive-Bayes path, explanations, the save) removed the whole trained run. The backup
    now stays until the run is saved, and the same command finishes it without another epoch.

    Also the classifier's case of test_run_directory's
    test_a_run_stopped_after_its_training_reports_the_seconds_its_training_took: metrics.json's train_seconds
    were then the resumed fit's, which trained nothing (a fraction of a second); now the interrupted fit's."""
    import keras

    from tfllm.cli import main
    from tfllm.training import classifier
    from tfllm.training.reporting import history_from_logs

    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--epochs", "3",
            "--set", "early_stopping=false"]
    assert main(argv + ["--run-dir", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    report = classifier.classification_report

    def stopped(*args, **kwargs):  # the first thing after fit and the best epoch's weights
        raise KeyboardInterrupt

    fits = timed_fits(monkeypatch, keras.Model)  # the stopped run's fit, then the resume's
    monkeypatch.setattr(classifier, "classification_report", stopped)
    run_dir = tmp_path / "run"
    assert main(argv + ["--run-dir", str(run_dir)]) == 130
    assert "Run the same command again to resume" in capsys.readouterr().out
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["fit_done"]
    monkeypatch.setattr(classifier, "classification_report", report)
    assert main(argv + ["--run-dir", str(run_dir)]) == 0
    assert "Resuming the interrupted run" in capsys.readouterr().out
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["epochs_run"] == whole["epochs_run"] == 3
    assert len(history_from_logs(str(run_dir / "logs"))["loss"]) == 3  # no epoch trained twice
    assert resumed["test"] == whole["test"]  # the same best epoch's weights as the run that was not stopped
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(tmp_path / "whole"))  # no backup, no best.weights.h5 left
    # The first fit's seconds up to its end (not the tf.data teardown after it), not the resume's no-op fit's:
    # nearer the first. (A bound of twice the no-op fit failed once under the full suite's load: 2.1 s of it.)
    seconds = resumed["train_seconds"]
    assert len(fits) == 2 and fits[0] / 2 < seconds < fits[0] + 1  # + set-up around fit
    assert abs(seconds - fits[0]) < abs(seconds - fits[1])


def test_input_refused_after_the_last_epoch_leaves_nothing_and_puts_the_old_run_back(cli_run, tmp_path, capsys,
                                                                                     monkeypatch):
    """With the backup kept past `fit`, a refusal after it (NaN probabilities) left a half-written run
    that resumed into the same refusal, and the --overwrite'd run stayed hidden aside."""
    import shutil

    from tfllm.cli import main
    from tfllm.errors import UserInputError
    from tfllm.training import classifier

    run_dir = tmp_path / "run"
    shutil.copytree(cli_run[0], run_dir)  # a finished run of the same command, for --overwrite to replace
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--epochs", "1",
            "--run-dir", str(run_dir)]
    before = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    def refused(*args, **kwargs):
        raise UserInputError("The probabilities hold NaN.")

    monkeypatch.setattr(classifier, "classification_report", refused)
    assert main(argv + ["--overwrite"]) == 2
    assert "NaN" in capsys.readouterr().err
    assert {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no half-written run, nothing left aside


def test_a_training_that_diverges_is_one_clear_error_and_leaves_nothing(tmp_path, capsys):
    """A NaN loss: Keras' TerminateOnNaN only stopped, so a generator was saved as finished and a classifier
    failed later in a traceback (naive Bayes on NaN weights)."""
    from tfllm.cli import main

    for task, data, extra in (("classify", "rotten_tomatoes", ["--max-rows", "300", "--learning-rate", "1e9"]),
                              ("generate", "shakespeare", ["--max-rows", "6000", "--learning-rate", "1e8",
                                                           "--no-jit-compile"])):
        run_dir = tmp_path / task
        assert main(["train", "--task", task, "--data", data, "--preset", "tiny", *extra, "--run-dir", str(run_dir)]) == 2
        # One error line (the tiny generator's vocabulary also warns of the capitals it maps to [UNK], and the tiny
        # classifier notes the reviews longer than its window).
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if not line.startswith(("tfllm: warning:", "tfllm: note:"))]
        assert len(errors) == 1 and "Training diverged" in errors[0] and "--learning-rate" in errors[0], errors
        # The progress bar's line is ended first: in a terminal the error was written on the end of it.
        assert out.endswith("\n"), out[-200:]
        assert not run_dir.exists()


def test_a_class_missing_from_the_validation_split_is_still_predicted(tmp_path, capsys):
    """5 rows of "pos" among 100: all of them train, none validates. The wide path's blend, fitted on that
    split, pushed "pos" to probability ~1e-11 for every text, its own training texts too."""
    data = tmp_path / "skewed.csv"
    data.write_text("text,label\n" + "".join(f"a dull boring film {i},neg\n" for i in range(100))
                    + "".join(f"a great lovely film {i},pos\n" for i in range(5)))
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert "wide path left out: the validation split has no 'pos' rows" in result.stdout
    # Why (it said only "to fit its blend on") and what to do about it.
    assert "a two-class blend cannot be fitted on one class" in result.stdout
    assert "rows of both classes: more 'pos' rows, or --split-column" in result.stdout
    result = main_in_process(capsys, "predict", run_dir, "a great lovely film 1")
    assert json.loads(result.stdout)["probabilities"]["pos"] > 1e-6


def test_the_blend_of_several_classes_keeps_a_class_without_validation_rows():
    """One rare class missing from the validation split switched the whole naive-Bayes path off (a 200-class
    run lost it to 20 of them): its blend bias is not fitted but is the mean of the other classes' (they rise
    together, the softmax ignoring a shared constant: at 0 it was never predicted)."""
    from tfllm.models.text_classifier import _fit_blend

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)  # classes 0 and 1 only; class 2 has no rows
    views = [np.eye(3)[labels] * 2 + rng.normal(0, 1, (300, 3)) for _ in range(2)]
    encoder_scale, wide_scale, bias = _fit_blend(views, labels)
    assert np.isfinite(bias).all() and bias[:2].any() and np.isclose(bias[2], bias[:2].mean())
    assert encoder_scale > 0 and wide_scale > 0


def test_evaluate_on_another_file_keeps_the_rows_of_the_runs_labels(tmp_path, capsys):
    """A run trained with --labels keeps only those rows of its data; another file's other rows were refused
    as 'labels the model was not trained on', to be dropped by hand."""
    rows = [f"good film {i},pos\nbad film {i},neg\nso-so film {i},mixed\n" for i in range(20)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(rows))
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", tmp_path / "train.csv", "--labels", "neg,pos", "--preset",
                             "tiny", "--epochs", "1", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    (tmp_path / "new.csv").write_text("text,label\ngreat film,pos\nokay film,mixed\nawful film,neg\nfine,pos\n")
    result = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "new.csv")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["num_examples"] == 3 and report["per_class"]["pos"]["support"] == 2
    (tmp_path / "mixed.csv").write_text("text,label\nokay film,mixed\n")
    result = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "mixed.csv")
    assert result.returncode == 2 and "has no rows labelled 'neg', 'pos' in column 'label'" in result.stderr


def test_int8_calibration_sees_every_class_of_a_folder_read_label_by_label(tmp_path, capsys, monkeypatch):
    """A folder is read label by label, so the training split's first 300 texts (the calibration set) were
    all of the first label: the activation ranges were calibrated on one class."""
    import tfllm.export.tflite_classifier as tflite_classifier

    for label, word in (("neg", "dull"), ("pos", "lovely")):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(400):
            (tmp_path / "data" / label / f"{i}.txt").write_text(f"a {word} film {i}")
    run_dir = tmp_path / "run"
    assert main_in_process(capsys, "train", "--data", tmp_path / "data", "--preset", "tiny", "--epochs", "1",
                           "--run-dir", run_dir).returncode == 0
    calibrated, convert = [], tflite_classifier.convert_saved_model

    def recording(saved_model_dir, signatures, quantize, representative_dataset=None, custom_ops=False):
        if custom_ops:  # the string model's calibration texts
            calibrated.extend(sample[0][0].decode() for sample in representative_dataset())
        return convert(saved_model_dir, signatures, quantize, representative_dataset=representative_dataset,
                       custom_ops=custom_ops)

    monkeypatch.setattr(tflite_classifier, "convert_saved_model", recording)
    result = main_in_process(capsys, "export", run_dir, "--format", "tflite", "--quantize", "int8", "--name", "r",
                             "--base-dir", tmp_path / "sm")
    assert result.returncode == 0, result.stderr
    assert len(calibrated) == tflite_classifier.CALIBRATION_EXAMPLES
    assert {"dull", "lovely"} <= {text.split()[1] for text in calibrated}


def test_evaluate_prints_labels_as_written_not_as_escapes(tmp_path, capsys, monkeypatch):
    """The report's labels came out as "\\u597d"; predict prints them as written. The model is a stand-in:
    what is checked is the printing."""
    import tfllm.training.classifier as classifier
    from lm_utils import write_records
    from tfllm.datasets import Split

    run_dir = write_records(tmp_path / "clf", "classify")
    monkeypatch.setattr(classifier, "load_run", lambda run_dir: (None, ["好", "坏"], {}))
    monkeypatch.setattr(classifier, "run_data", lambda run_dir, data=None: type("Data", (), {"test": Split(["a", "b"], [0, 1])}))
    monkeypatch.setattr(classifier, "predict_probabilities", lambda model, texts: np.array([[0.9, 0.1], [0.2, 0.8]]))
    monkeypatch.setattr(classifier, "note_cut_texts", lambda model, texts: None)  # no model to tokenize with
    result = main_in_process(capsys, "evaluate", run_dir)
    assert result.returncode == 0, result.stderr
    assert '"好"' in result.stdout and "\\u" not in result.stdout
    assert json.loads(result.stdout)["confusion_matrix"]["labels"] == ["好", "坏"]


@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_predict_refuses_a_text_with_no_words_as_it_refuses_an_empty_one(cli_run, capsys, monkeypatch, numpy_path):
    """Control characters, a NUL or zero-width spaces tokenize to nothing: the model then printed a confident
    label for an empty input (explain refuses it, and predict refuses "")."""
    monkeypatch.setenv("TFLLM_NUMPY_CLASSIFICATION", numpy_path)
    for texts, number in ((["\x01\x02"], 1), (["a fine film", "\u200b\u200b"], 2), (["\x00", "fine"], 1)):
        result = main_in_process(capsys, "predict", cli_run[0], *texts)
        assert result.returncode == 2 and result.stdout == "", result.stdout
        assert f"Text {number} ({texts[number - 1]!r}) has no words this model reads" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    result = main_in_process(capsys, "predict", cli_run[0], "\U0001F600 \U0001F3AC")  # unknown words: [UNK], answered
    assert result.returncode == 0 and json.loads(result.stdout)["label"] in ("rotten", "fresh")


@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_an_empty_text_is_called_empty_by_the_command_and_by_python(cli_run, capsys, monkeypatch, numpy_path):
    """`tfllm predict RUN ""` said "Text 1 is empty", `tfllm.predict(RUN, [""])` "Text 1 ('') has no words this
    model reads (only control, invisible or space characters)"; that one is for texts that are not empty."""
    import tfllm

    monkeypatch.setenv("TFLLM_NUMPY_CLASSIFICATION", numpy_path)
    run_dir = str(cli_run[0])
    for texts, number in (([""], 1), (["a fine film", "  "], 2)):
        result = main_in_process(capsys, "predict", run_dir, *texts)
        assert result.returncode == 2 and f"Text {number} is empty; pass the texts to classify" in result.stderr
        with pytest.raises(tfllm.UserInputError) as refused:
            tfllm.predict(run_dir, texts)
        assert str(refused.value) == (f"Text {number} is empty; pass the texts to classify, e.g. "
                                      f"tfllm.predict({run_dir!r}, [\"a joyous, moving film\"]).")
    with pytest.raises(tfllm.UserInputError, match=r"Text 1 \('\\x01'\) has no words this model reads"):
        tfllm.predict(run_dir, ["\x01"])


@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_predict_file_classifies_each_line_or_row(cli_run, tmp_path, capsys, monkeypatch, numpy_path):
    """`predict RUN reviews.txt` classified the file's name; --file reads its texts, one JSON line each, in order,
    the same answers as passing them as arguments."""
    import io

    monkeypatch.setenv("TFLLM_NUMPY_CLASSIFICATION", numpy_path)
    texts = ["a joyous, moving film", "tedious and flat", "the best film of the year"]
    expected = main_in_process(capsys, "predict", cli_run[0], *texts)
    assert expected.returncode == 0, expected.stderr
    (tmp_path / "reviews.txt").write_text("\n".join([texts[0], "", *texts[1:]]) + "\n")  # blank lines skipped
    (tmp_path / "reviews.csv").write_text("id,review\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
    (tmp_path / "texts.json").write_text(json.dumps(texts))  # a JSON file of texts: an array, or a string a line
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    (tmp_path / "empty.txt").write_text(" \n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("id,review\n")  # exited 0 with no output, a misspelt column unnoticed
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts)))
    for args in ([tmp_path / "reviews.txt"], [tmp_path / "reviews.csv", "--text-column", "review"], ["-"],
                 [tmp_path / "texts.json"], [tmp_path / "texts.jsonl"]):
        result = main_in_process(capsys, "predict", cli_run[0], "--file", *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected.stdout
    for args, message in (([tmp_path / "reviews.txt"], "is a file: to classify its lines"),
                          (["--file", tmp_path / "reviews.csv"], "has no text column 'text'"),
                          (["hi", "--text-column", "review"], "--text-column names the column of a --file"),
                          # A .txt file's lines are its texts: the column was ignored without a word.
                          (["--file", tmp_path / "reviews.txt", "--text-column", "review"],
                           "is text, not a CSV/JSONL file (each line read as one text)"),
                          # A piped CSV was classified line by line, its header a text, the column ignored.
                          (["--file", "-", "--text-column", "review"], "--file - reads standard input one text a line"),
                          ([], "Pass the texts to classify"),
                          # read_lines' messages said "use a bundled name" and "Point --data at a file"
                          (["--file", tmp_path / "nope.txt"], "--file '" + str(tmp_path / "nope.txt") + "' does not exist"),
                          (["--file", tmp_path / "empty.txt"], "Point --file at a file with one text per line"),
                          (["--file", tmp_path / "empty.csv"], "Point --file at a file with one text per line"),
                          (["--file", tmp_path / "header.csv", "--text-column", "review"], "has a header but no rows"),
                          (["--file", tmp_path / "header.csv", "--text-column", "nosuch"],
                           "has no text column 'nosuch'; its columns are ['id', 'review']. Pass --text-column")):
        result = main_in_process(capsys, "predict", cli_run[0], *args)
        assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_predict_file_answers_a_pipe_as_it_flows_and_stops_quietly_when_the_reader_goes(cli_run, numpy_path):
    """--file - read all of standard input before the first answer (a producer that keeps the pipe open got
    none), and `| head` ended in a BrokenPipeError traceback. Each chunk's answers are flushed whole: the
    output's buffer held the end of a chunk until the next one (or the end of the input)."""
    import threading

    from tfllm.prediction import CHUNK

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TFLLM_NUMPY_CLASSIFICATION=numpy_path)
    command = [sys.executable, "-m", "tfllm.cli", "predict", str(cli_run[0]), "--file", "-"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    answers = []

    def read_first_chunk():
        for line in process.stdout:
            answers.append(json.loads(line)["text"])
            if len(answers) == CHUNK:
                return

    try:
        process.stdin.write("".join(f"a fine film, number {i}\n" for i in range(CHUNK + 88)))  # one chunk and more
        process.stdin.flush()
        # The input is still open: the whole first chunk is answered anyway.
        reader = threading.Thread(target=read_first_chunk, daemon=True)
        reader.start()
        reader.join(120)
        assert answers == [f"a fine film, number {i}" for i in range(CHUNK)], f"{len(answers)} answers of {CHUNK}"
        process.stdin.write("the last film\n")
        process.stdin.close()
        lines = process.stdout.read().splitlines()
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        process.kill()
    assert len(lines) == 89 and json.loads(lines[-1])["text"] == "the last film"

    # The reader closes the pipe after one line: exit status 141 (128 + SIGPIPE, as `yes | head`), no traceback.
    # 1,500 texts (37 KB) fit the pipe whole, so writing them cannot wait on the output nobody reads yet.
    texts = "".join(f"a fine film, number {i}\n" for i in range(1500))
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    process.stdin.write(texts)
    process.stdin.close()
    assert process.stdout.readline()
    process.stdout.close()
    assert process.wait(120) == 141
    assert "Traceback" not in process.stderr.read()


@pytest.mark.parametrize("damage", ["truncated_weights", "no_vocabulary", "bad_task_json"])
def test_a_damaged_run_is_one_line_for_predict_and_evaluate(cli_run, tmp_path, capsys, monkeypatch, damage):
    import shutil

    run_dir = tmp_path / "damaged"
    shutil.copytree(cli_run[0], run_dir)
    if damage == "truncated_weights":  # a copy cut short: h5py's OSError
        with open(run_dir / "model.weights.h5", "r+b") as f:
            f.truncate(1000)
    elif damage == "no_vocabulary":  # KerasHub's FileNotFoundError
        (run_dir / "assets" / "tokenizer" / "vocabulary.txt").unlink()
    else:  # a JSONDecodeError
        (run_dir / "task.json").write_text('{"class_name": ')
    exports = tmp_path / "savedmodels"
    for command in (["predict", run_dir, "a fine film"], ["evaluate", run_dir],
                    ["export", run_dir, "--name", "damaged", "--base-dir", exports]):
        result = main_in_process(capsys, *command)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"{str(run_dir)!r} cannot be loaded" in result.stderr and "train it again" in result.stderr
    assert not exports.exists() or not any(exports.rglob("*.pb"))  # the export left nothing


@pytest.mark.parametrize("flags", [["--memory", "train"], ["--lm", "zh_news"], ["--input-method"],
                                   ["--source-column", "zh"], ["--target-column", "en"]])
def test_evaluate_refuses_translation_flags_on_a_classifier(cli_run, capsys, flags):
    """They were ignored without a word: the report looked like one made with them."""
    result = main_in_process(capsys, "evaluate", cli_run[0], *flags)
    assert result.returncode == 2 and flags[0] in result.stderr and "text classifier" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_blend_fit_is_the_penalised_logistic_regression_and_fits_a_hundred_classes():
    """`_fit_blend`'s Hessian was a naive einsum loop of n * units^2 * k^2: one Newton step took 35 s at 88
    classes, so training hung for half an hour after a 4-second epoch. Matrix products give the same fit."""
    from scipy.optimize import minimize

    from tfllm.models.text_classifier import _fit_blend

    rng = np.random.default_rng(0)
    n, units = 120, 5
    labels = rng.integers(0, units, n)
    views = [np.eye(units)[labels] * s + rng.normal(0, 1, (n, units)) for s in (1.0, 2.0, 0.5)]
    class_weight = {c: 1.0 + c / 2 for c in range(units)}
    rows = np.array([class_weight[c] for c in labels])
    rows = rows / rows.mean()

    def loss(theta):  # the objective as the docstring states it, row by row
        z = sum(t * v for t, v in zip(theta[:3], views)) + theta[3:]
        log_p = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        return -np.mean(rows * log_p[np.arange(n), labels]) + 0.5e-3 * np.sum(theta[:3] ** 2)

    reference = minimize(loss, np.r_[1.0, 0, 0, np.zeros(units)], method="BFGS", options={"gtol": 1e-10}).x
    encoder_scale, wide_scale, bias, char_scale = _fit_blend(views, labels, class_weight=class_weight)
    fitted = np.r_[encoder_scale, wide_scale, char_scale, bias]
    # Biases are fitted up to a shared constant (the softmax ignores it): compare them centred.
    for theta in (fitted, reference):
        theta[3:] -= theta[3:].mean()
    np.testing.assert_allclose(fitted, reference, atol=1e-4)

    n, units = 300, 100  # half an hour before; seconds now
    labels = rng.integers(0, units, n)
    views = [np.eye(units)[labels] + rng.normal(0, 1, (n, units)) for _ in range(4)]
    weights = _fit_blend(views, labels)
    assert weights[2].shape == (units,) and all(np.isfinite(w).all() for w in weights)


@pytest.mark.slow
def test_a_class_with_rows_only_in_training_keeps_the_wide_path_and_can_still_be_predicted(tmp_path, capsys):
    """With several classes, one that the validation split lacks kept a blend bias of 0 while the fitted ones
    all rose to ~19 together: it got probability 1e-11 even on its own training texts. And such a rare class
    keeps the wide path of a multi-class model (its blend bias is the mean of the others'); it does not
    switch the wide path off as in a two-class model."""
    rows = ["text,label,split"]
    for label, words in (("a", "sun bright morning"), ("b", "rain cold evening"), ("c", "wind grey night")):
        rows += [f"{words} {i},{label},{'train' if i < 20 else 'val' if i < 25 else 'test'}" for i in range(28)]
    rows += ["zebra quartz violin,d,train", "zebra quartz violin again,d,train"]
    data = tmp_path / "four.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", data, "--split-column", "split", "--preset", "tiny",
                             "--epochs", "1", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert "the validation split has no 'd' rows, so their blend bias is the mean" in result.stdout, result.stdout
    assert "ngram_tables_from" in json.loads((run_dir / "metrics.json").read_text())  # the wide path is in
    probabilities = json.loads(main_in_process(capsys, "predict", run_dir, "zebra quartz violin").stdout)["probabilities"]
    assert probabilities["d"] > 0.01, probabilities


@pytest.mark.slow
def test_texts_longer_than_the_window_are_said_in_training_predict_and_evaluate(tmp_path, capsys):
    """A classifier reads a text's first sequence_length - 2 tokens: 3,000-word reviews trained, and a long text
    and the same text with "dull tedious boring" after its window were predicted alike, without a word."""
    rows = [f"{' '.join(['the film'] * 20) if i % 4 == 0 else 'a'} {'good' if i % 2 else 'bad'} {i},"
            f"{'pos' if i % 2 else 'neg'}" for i in range(40)]
    data = tmp_path / "long.csv"
    data.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "window" in line]
    assert line.startswith("tfllm: note: ") and " training texts are longer than the classifier's window of 14 tokens " \
        "(sequence_length 16): " in line and line.endswith("Raise it with --set sequence_length=N (now 16; each step "
                                                           "costs more)."), line
    long = " ".join(["the film"] * 20)
    result = main_in_process(capsys, "predict", run_dir, long, "a good film", long + " dull tedious boring")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == ("tfllm: note: 2 of the 3 texts were longer than the model's window of "
                                              "14 tokens; only their first 14 tokens were read."), result.stderr
    result = main_in_process(capsys, "predict", run_dir, "a good film")
    assert "window" not in result.stderr, result.stderr  # every text fits: nothing said
    import tfllm

    with pytest.warns(tfllm.TfllmWarning, match=r"^1 of the 2 texts were longer than the model's window of 14 tokens"):
        tfllm.predict(str(run_dir), [long, "a good film"])  # a Python caller: a filterable warning
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "\n".join(rows[:8]) + "\n", encoding="utf-8")  # two long texts
    result = main_in_process(capsys, "evaluate", run_dir, "--data", other)
    assert result.returncode == 0, result.stderr
    assert "tfllm: note: 2 of the 8 texts were longer than the model's window of 14 tokens; only their first 14 " \
        "tokens were read." in result.stderr, result.stderr


@pytest.mark.slow
def test_the_line_before_the_wide_path_fit_is_out_before_the_fit_starts(tmp_path):
    """Training 300 classes spent ~2 minutes fitting the n-gram tables after its epoch with nothing printed to a
    pipe: the line saying what runs then sat in stdout's buffer. The fit here ends the process at once, without
    Python's flush at exit: what came out is what was flushed before it started."""
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"a good film {i},pos\na bad film {i},neg\n" for i in range(20)),
                    encoding="utf-8")
    script = ("import os, sys\n"
              "from tfllm.models import TextClassifier\n"
              "TextClassifier.fit_wide_path = lambda *args, **kwargs: os._exit(3)\n"
              "from tfllm.cli import main\n"
              "main(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "-c", script, "train", "--data", str(data), "--preset", "tiny",
                             "--epochs", "1", "--run-dir", str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Naive-Bayes wide path: counts from the training split" in result.stdout, result.stdout


def test_classes_without_validation_rows_are_counted_as_classes():
    """300 labels said "the validation split has no 'lab120', ... and 5 more rows": five more classes."""
    from tfllm.training.classifier import unseen_classes_line

    assert "has no 'd' rows, so their blend bias" in unseen_classes_line(["d"])
    line = unseen_classes_line([f"lab{i}" for i in range(15)])
    assert "has no rows of 'lab0', 'lab1'," in line and "'lab9' and 5 more classes, so their blend bias" in line, line


@pytest.mark.slow
def test_turning_the_wide_path_off_turns_the_preset_s_views_off_too(tmp_path, capsys):
    """`--preset tiny --set wide_bigram_buckets=0` was refused: "--set char_ngram_buckets=1009 adds a view ...
    add --set wide_bigram_buckets=N", a setting the user never made (the preset does) and a fix that undid theirs."""
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"a good film {i},pos\na bad film {i},neg\n" for i in range(20)),
                    encoding="utf-8")
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "1", "--run-dir",
                             run_dir, "--set", "wide_bigram_buckets=0")
    assert result.returncode == 0, result.stderr
    recipe = json.loads((run_dir / "tfllm" / "recipe.json").read_text(encoding="utf-8"))
    assert (recipe["wide_bigram_buckets"], recipe["char_ngram_buckets"], recipe["word_ngram_buckets"]) == (0, 0, 0)
    # A view the user asks for themselves still needs the wide path, and the message names their own --set.
    refused = main_in_process(capsys, "train", "--data", data, "--preset", "tiny", "--epochs", "1", "--run-dir",
                              tmp_path / "refused", "--set", "wide_bigram_buckets=0", "--set", "word_ngram_buckets=64")
    assert refused.returncode == 2 and "--set word_ngram_buckets=64 adds a view" in refused.stderr, refused.stderr
    assert "leave --set word_ngram_buckets out" in refused.stderr and not (tmp_path / "refused").exists()


def test_predict_top_k_keeps_the_most_likely_labels_in_order(three_class_run, capsys):
    """A 30-class classifier printed 30 probabilities a line, with no way to ask for fewer."""
    import tfllm

    run_dir, _ = three_class_run
    texts = ["a great film", "a plot summary of the film"]
    every = [json.loads(line) for line in main_in_process(capsys, "predict", run_dir, *texts).stdout.splitlines()]
    result = main_in_process(capsys, "predict", run_dir, *texts, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    top = [json.loads(line) for line in result.stdout.splitlines()]
    for full, row in zip(every, top):
        assert len(full["probabilities"]) == 3 and row["label"] == full["label"]
        expected = sorted(full["probabilities"].items(), key=lambda item: -item[1])[:2]
        assert list(row["probabilities"].items()) == expected and expected[0][0] == row["label"]
    assert tfllm.predict(str(run_dir), texts, top_k=2) == top
    many = json.loads(main_in_process(capsys, "predict", run_dir, texts[0], "--top-k", "5").stdout)
    assert list(many["probabilities"].values()) == sorted(every[0]["probabilities"].values(), reverse=True)
    from tfllm.cli import main

    with pytest.raises(SystemExit) as info:
        main(["predict", str(run_dir), texts[0], "--top-k", "0"])
    assert info.value.code == 2 and "argument --top-k: must be at least 1, got 0" in capsys.readouterr().err


def test_metrics_json_has_macro_and_weighted_averages_and_says_how_its_confusion_matrix_reads(cli_run):
    """metrics.json had only the binary/macro precision, recall and F1 (a binary run no macro ones), and a
    confusion matrix without saying which axis holds the true labels."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    run_dir, _ = cli_run
    report = json.loads((run_dir / "metrics.json").read_text())["test"]
    confusion = report["confusion_matrix"]
    assert (confusion["rows"], confusion["columns"]) == ("true", "predicted")
    matrix = np.array(confusion["matrix"])
    assert [report["per_class"][label]["support"] for label in confusion["labels"]] == matrix.sum(axis=1).tolist()
    # The examples back from the matrix as it says it reads: rows the true labels, columns the predicted ones.
    y_true = [t for t in range(len(matrix)) for p in range(len(matrix)) for _ in range(matrix[t, p])]
    y_pred = [p for t in range(len(matrix)) for p in range(len(matrix)) for _ in range(matrix[t, p])]
    for key, score in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        expected = score(y_true, y_pred, average="weighted", zero_division=0)
        assert report["weighted"][key] == pytest.approx(expected), key
        # A binary report's macro averages too (the README promises macro and weighted P/R/F1; it had only the
        # positive label's).
        assert report["macro"][key] == pytest.approx(score(y_true, y_pred, average="macro", zero_division=0)), key
    assert report["f1"] == report["per_class"][report["positive_label"]]["f1"]  # the binary figures as they were


def test_macro_figures_average_over_the_classes_labelled_or_predicted_as_scikit_learns():
    """A class with no example in the scored split and never predicted counted 0 in macro precision, recall and
    F1 (recall 0.36 beside a balanced accuracy of 0.54); scikit-learn's default leaves it out, and its
    per_class figures are null, not 0.0."""
    from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

    from tfllm.errors import TfllmWarning
    from tfllm.evaluation import classification_report, note_missing_classes

    rng = np.random.default_rng(0)
    names = ["10", "2", "9", "7"]
    y_true = rng.choice([0, 1, 3], size=60)  # no '9'; '7' has examples
    probabilities = rng.random((60, 4))
    probabilities[:, 2] = 0  # never '9'
    probabilities[:5, 3] = 0
    probabilities[y_true == 3, 3] = 0  # '7' predicted only where it is not labelled
    y_pred = probabilities.argmax(axis=-1)
    report = classification_report(y_true, probabilities, names)
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)[:3]
        got = report if average == "macro" else report["weighted"]
        assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(expected), average
    assert report["recall"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert report["per_class"]["9"] == {"precision": None, "recall": None, "f1": None, "support": 0,
                                        "roc_auc": None}
    assert report["macro_classes"] == ["10", "2", "7"]
    with pytest.warns(TfllmWarning, match=r"the test split has no example of '9' and none was predicted"):
        note_missing_classes(report, "the test split")
    # A class predicted without examples counts 0, as scikit-learn's (here the binary report's macro figures).
    binary = classification_report([0, 0, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["neg", "pos"])
    assert [binary["macro"][key] for key in ("precision", "recall", "f1")] == pytest.approx(
        precision_recall_fscore_support([0, 0, 0], [0, 1, 0], average="macro", zero_division=0)[:3])
    assert binary["per_class"]["pos"]["precision"] == 0.0
    with pytest.warns(TfllmWarning, match="no example of 'pos', which the model predicted"):
        note_missing_classes(binary, "the val split")


@pytest.mark.slow
def test_evaluate_notes_the_classes_its_data_has_no_example_of(tiny_classifier_run, tmp_path):
    import csv
    import gzip

    from tfllm.datasets import bundled_path

    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["label"] == "fresh"][:20]
    data = tmp_path / "fresh.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((row["text"], row["label"]) for row in rows)
    result = run_cli("evaluate", tiny_classifier_run, "--data", data)
    assert result.returncode == 0, result.stderr
    assert f"{str(data)!r} has no example of 'rotten'" in result.stderr  # the whole file was scored
    assert json.loads(result.stdout)["per_class"]["rotten"]["support"] == 0


def test_tfllm_evaluate_loads_a_run_once_per_process(tiny_classifier_run, tmp_path, monkeypatch):
    """`tfllm.evaluate` keeps its loaded run as `tfllm.predict` does (it loaded it again each call), with the
    same metrics as a fresh load; `tfllm.clear_cache()` frees it."""
    import shutil

    import tfllm
    from tfllm import runs

    run_dir = str(shutil.copytree(tiny_classifier_run, tmp_path / "run"))  # one no earlier test loaded
    loads = []
    load = runs.load_task
    monkeypatch.setattr(runs, "load_task", lambda *args, **kwargs: loads.append(args[0]) or load(*args, **kwargs))
    first = tfllm.evaluate(run_dir)
    assert tfllm.evaluate(run_dir) == first and len(loads) == 1
    tfllm.clear_cache()
    assert tfllm.evaluate(run_dir) == first and len(loads) == 2


def test_threads_predicting_from_one_run_at_once_load_it_once(tiny_classifier_run, tmp_path, monkeypatch):
    """Two threads that missed the cache of loaded runs at once each loaded the run (twice the seconds and
    memory); the second now waits for the first's load and uses it. A retrained run still loads again."""
    import shutil
    import threading
    import time

    import tfllm
    from tfllm import prediction

    run_dir = str(shutil.copytree(tiny_classifier_run, tmp_path / "run"))
    tfllm.clear_cache()
    loads, load = [], prediction._Loaded

    def counted(path):
        loads.append(path)
        time.sleep(0.5)  # a load takes seconds: the other thread misses the cache meanwhile
        return load(path)

    monkeypatch.setattr(prediction, "_Loaded", counted)
    barrier, results = threading.Barrier(2), []

    def predict():
        barrier.wait()
        results.append(tfllm.predict(run_dir, ["a good film"]))

    threads = [threading.Thread(target=predict) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1] and len(loads) == 1
    os.utime(os.path.join(run_dir, "config.json"), ns=(1, 1))  # as a retrained run's files change
    assert tfllm.predict(run_dir, ["a good film"]) == results[0] and len(loads) == 2


def test_predict_file_stdin_drops_a_byte_order_mark(tiny_classifier_run, capsys, monkeypatch):
    """`predict RUN --file -` kept the UTF-8 byte-order mark a Windows tool writes on its first text
    ("\\ufeffa joyous film"), where a file's is dropped; `translate --file -` reads stdin the same way."""
    import io

    from tfllm.datasets.pairs import read_sources

    texts = ["a joyous, moving film", "tedious and flat"]

    def bom_stdin():
        return io.TextIOWrapper(io.BytesIO("\n".join(texts).encode("utf-8-sig")), encoding="utf-8")

    expected = main_in_process(capsys, "predict", tiny_classifier_run, *texts)
    monkeypatch.setattr("sys.stdin", bom_stdin())
    result = main_in_process(capsys, "predict", tiny_classifier_run, "--file", "-")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == texts
    assert result.stdout == expected.stdout
    monkeypatch.setattr("sys.stdin", bom_stdin())
    assert list(read_sources("-", "text")) == texts


def test_predict_and_translate_file_stdin_that_is_not_utf8_is_one_line_with_a_fix_for_a_pipe(
        tiny_classifier_run, capsys, monkeypatch):
    """`predict --file -` of bytes that are not UTF-8 ended in a traceback from the model (the stream's
    surrogate escape of b"\\xe9" could not be encoded), a UTF-16 pipe's in "Error converting unicode string";
    `translate --file -` reads stdin the same way. `--file /dev/stdin` was told to re-save /dev/stdin."""
    import io
    import re

    from tfllm.datasets.pairs import read_sources
    from tfllm.errors import UserInputError

    def stdin(data):  # as the interpreter opens a pipe in a C.UTF-8 locale
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")

    for data, fix in ((b"a joyous film\ncaf\xe9 was great\n", "bad byte b'\\xe9' on line 2"),
                      ("a joyous film\n".encode("utf-16"), "is UTF-16 text")):
        encoding = "utf-16" if "UTF-16" in fix else "cp1252"
        monkeypatch.setattr("sys.stdin", stdin(data))
        result = main_in_process(capsys, "predict", tiny_classifier_run, "--file", "-")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("tfllm: error: Standard input (--file -) ") and fix in result.stderr
        assert f"`... | iconv -f {encoding} -t utf-8 | tfllm ...`" in result.stderr, result.stderr
        monkeypatch.setattr("sys.stdin", stdin(data))
        with pytest.raises(UserInputError, match=re.escape(fix)):
            list(read_sources("-", "text"))
    result = subprocess.run([sys.executable, "-m", "tfllm.cli", "predict", tiny_classifier_run, "--file", "/dev/stdin"],
                            input=b"caf\xe9 was great\n", capture_output=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 2 and b"`... | iconv -f cp1252 -t utf-8 | tfllm ...`" in result.stderr, result.stderr
    assert b"/dev/stdin-utf8" not in result.stderr


def test_predict_takes_texts_after_its_options_as_explain_does(three_class_run, capsys):
    """`tfllm predict RUN --top-k 2 "the movie was great"` was "unrecognized arguments: the movie was great"."""
    run_dir, _ = three_class_run
    texts = ["a great film", "a plot summary of the film"]
    expected = main_in_process(capsys, "predict", run_dir, *texts, "--top-k", "2")
    assert expected.returncode == 0, expected.stderr
    for argv in (["--top-k", "2", *texts], [texts[0], "--top-k", "2", texts[1]]):
        result = main_in_process(capsys, "predict", run_dir, *argv)
        assert (result.returncode, result.stdout) == (0, expected.stdout), result.stderr


def test_an_unknown_or_abbreviated_option_is_refused_with_the_subcommands_usage(capsys, tmp_path, monkeypatch):
    """`tfllm generate RUN --prompt x` printed the top-level `usage: tfllm [-h] [--version]` over "unrecognized
    arguments", and `tfllm predict RUN --text "x"` was read as --text-column (then a message about a column)."""
    from tfllm.cli import main

    monkeypatch.chdir(tmp_path)
    for argv, command in ((["generate", "RUN", "--prompt", "x"], "generate"), (["export", "RUN", "--dir", "X"], "export"),
                          (["predict", "RUN", "--text", "x"], "predict"),
                          (["train", "--data", "rotten_tomatoes", "--epoch", "3"], "train")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith(f"usage: tfllm {command} [-h]"), err
        assert f"tfllm {command}: error: unrecognized arguments: {' '.join(argv[-2:])}" in err
    assert not os.listdir(tmp_path)  # nothing written


def test_train_help_says_which_task_has_finetune_and_what_max_rows_keeps_of_a_text(capsys, tmp_path):
    """`tfllm train --help` said "'finetune' with --from-preset" for every task (generate has none, and refused
    it), and that --max-rows kept "the first N characters of the text" (it keeps N of the training split and
    N // 9 of the validation split), or that a classifier trained on N rows (they are split into train/val/test)."""
    from tfllm.cli import main
    from tfllm.presets import PRESETS

    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    said = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps lines after a hyphen
    assert info.value.code == 0
    assert "classify with --from-preset: 'finetune'" in said
    for task in ("classify", "generate", "translate"):
        assert f"{task}: {', '.join(sorted(PRESETS[task]))}" in said
    assert "finetune" not in PRESETS["generate"]
    assert "generate: the first N characters of the training split, and N/9 of the validation split" in said
    # It said "train on a seeded, stratified sample of this many rows": --max-rows 300 trained on 252.
    assert "classify: a seeded, stratified sample of N rows, split into train, val and test (N in all" in said
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    assert "N rows in all, split into train, val and test" in " ".join(capsys.readouterr().out.split())
    (tmp_path / "poems.txt").write_text("the moon rises over quiet water\n" * 200)
    from tfllm.datasets.text import load_run_text
    from tfllm.config import TrainConfig

    train, val = load_run_text(TrainConfig(task="generate", data=str(tmp_path / "poems.txt"), max_rows=300))
    assert (len(train), len(val)) == (300, 300 // 9)


def test_pretrain_help_lists_each_objectives_presets(capsys):
    """`tfllm pretrain --help` showed `--preset PRESET` with no names."""
    from tfllm.cli import main
    from tfllm.presets import PRESETS

    with pytest.raises(SystemExit) as info:
        main(["pretrain", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 0
    for objective, task in (("mlm", "pretrain"), ("causal", "generate"), ("vectors", "vectors")):
        assert f"{objective}: {', '.join(sorted(PRESETS[task]))} (tfllm presets {task} NAME)" in said


@pytest.mark.slow
def test_the_commands_printed_for_a_run_directory_starting_with_a_dash_run_as_given(tmp_path, capsys, monkeypatch):
    """`--run-dir=-dashrun` printed `tensorboard --logdir -dashrun/logs`, which TensorBoard read as an option
    ("argument --logdir: expected one argument"), and `tfllm predict -dashrun ...` hints that argparse refused
    the same way (errors.shell_path)."""
    import re
    import shlex

    from tensorboard import program

    from tfllm.cli import build_parser

    monkeypatch.chdir(tmp_path)
    result = main_in_process(capsys, "train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300",
                             "--epochs", "1", "--run-dir=-dashrun")
    assert result.returncode == 0, result.stderr
    hint = re.search(r"\(TensorBoard: (tensorboard .*)\)$", result.stdout, re.M).group(1)
    board = program.TensorBoard()
    board.configure(argv=shlex.split(hint))  # TensorBoard's own parser: it exits 2 on the option-like path
    assert os.path.samefile(board.flags.logdir, tmp_path / "-dashrun" / "logs")
    result = main_in_process(capsys, "predict", "./-dashrun", " ")  # an empty text: the error shows the command
    assert result.returncode == 2
    command = re.search(r"(tfllm predict .*?\"[^\"]*\")", result.stderr).group(1)
    assert os.path.samefile(build_parser().parse_args(shlex.split(command)[1:]).run_dir, tmp_path / "-dashrun")
