"""Self-training (`tfllm train --unlabeled DATA`): a teacher's surest labels join the training split."""

import csv
import gzip
import json
import os
import re
import shutil

import numpy as np
import pytest

from tfllm.datasets import bundled_path
from tfllm.training.self_training import clearly_worse, keep_teacher, select


def test_select_takes_the_surest_texts_of_each_class_in_the_labelled_proportions():
    texts = [f"t{i}" for i in range(8)]
    p_second = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.55])
    probabilities = np.stack([1 - p_second, p_second], 1)
    chosen, labels = select(probabilities, texts, train_labels=[1, 1, 1, 0], keep=0.5)  # 3:1, 4 texts
    assert list(zip(chosen, labels)) == [("t6", 0), ("t0", 1), ("t1", 1), ("t2", 1)]


def test_select_keeps_the_labelled_proportions_when_the_teacher_predicts_a_class_too_seldom():
    from tfllm.errors import TfllmWarning

    # The tour's teacher: "fresh" (0) for every one of 1,959 texts; 136 fresh and 104 rotten labels.
    rng = np.random.default_rng(0)
    p_fresh = 0.64 + rng.normal(0, 0.01, 1959)
    texts, train_labels = [f"t{i}" for i in range(1959)], [0] * 136 + [1] * 104
    names = ["fresh", "rotten"]
    with pytest.warns(TfllmWarning,
                      match=r"never predicts rotten .*\(rotten: 0 predicted, 424 wanted\).*none are added"):
        chosen, labels = select(np.stack([p_fresh, 1 - p_fresh], 1), texts, train_labels, 0.5, names)
    assert chosen == [] and labels == []  # not 555 pseudo-labels, every one "fresh"
    # 300 rotten predictions where 424 are wanted: both classes shrink by the same factor.
    p_fresh[:300] = 0.3
    with pytest.warns(TfllmWarning, match=r"too few .*\(rotten: 300 predicted, 424 wanted\).* 692 pseudo-labels "
                                          r"instead of 979"):
        chosen, labels = select(np.stack([p_fresh, 1 - p_fresh], 1), texts, train_labels, 0.5, names)
    assert np.bincount(labels).tolist() == [392, 300]  # 136:104 of 692
    assert sorted(chosen[392:]) == sorted(texts[:300])
    # Without labelled examples of a class, its share is none, and nothing is short.
    chosen, labels = select(np.stack([p_fresh, 1 - p_fresh], 1), texts, [0] * 10, 0.1)
    assert labels == [0] * 195


def test_the_teacher_replaces_its_student_only_beyond_the_validation_noise():
    # 50 texts at 0.56: one standard error is 0.070.
    assert clearly_worse(0.46, 0.56, 50) and not clearly_worse(0.50, 0.56, 50)
    assert clearly_worse(0.50, 0.56, 5000)  # the same gap on a large split is real
    assert not clearly_worse(0.60, 0.56, 50) and not clearly_worse(1.0, 1.0, 10)


@pytest.fixture(scope="module")
def unlabelled_file(tmp_path_factory):
    """100 texts of the bundled training split that the run's data does not hold, and three of its test texts."""
    from tfllm.config import TrainConfig
    from tfllm.datasets import split_as_trained

    data = split_as_trained(TrainConfig(data="rotten_tomatoes", max_rows=300))
    known = set(data.train.texts) | set(data.val.texts) | set(data.test.texts)
    with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
        fresh = [r["text"] for r in csv.DictReader(f) if r["split"] == "train" and r["text"] not in known]
    path = tmp_path_factory.mktemp("unlabelled") / "texts.txt"
    path.write_text("\n".join(fresh[:100] + data.test.texts[:3]) + "\n", encoding="utf-8")
    return path, len(data.train)


@pytest.mark.slow
def test_train_with_unlabeled_texts_adds_pseudo_labelled_examples(tmp_path, unlabelled_file, capsys):
    from tfllm.cli import main
    from tfllm.training.classifier import load_run, predict_probabilities

    path, num_labelled = unlabelled_file
    run_dir = tmp_path / "run"
    # Every option at once: a 2-seed ensemble teacher, two rounds, a 2-seed ensemble student.
    assert main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--ensemble", "2",
                 "--unlabeled", str(path), "--set", "self_training_teachers=2", "--set", "self_training_rounds=2",
                 "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = metrics["self_training"]
    assert report["num_unlabeled"] == 100  # the test texts were left out: never trained on, even unlabelled
    assert 0 < report["num_pseudo_labeled"] <= 50  # keep 0.5
    assert 0 <= report["teacher"]["test_accuracy"] <= 1 and report["teachers"] == 2 and report["rounds"] == 2
    # The run is the student (both members trained on the labelled texts and the same pseudo-labelled
    # ones) or, when the student validated clearly worse, the teacher.
    if report["kept"] == "student":
        assert metrics["num_train_examples"] == num_labelled + report["num_pseudo_labeled"]
    else:
        assert report["kept"] == "teacher" and report["student"]["val_accuracy"] < metrics["val"]["accuracy"]
        assert metrics["val"]["accuracy"] == report["teacher"]["val_accuracy"]
    for member in metrics["members"]:
        member_metrics = json.loads((run_dir / member["run_dir"] / "metrics.json").read_text())
        assert member_metrics["num_train_examples"] == metrics["num_train_examples"]
        assert "self_training" not in member_metrics  # the members did not self-train again
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".teacher")]  # the teachers are gone
    task, labels, _ = load_run(str(run_dir))
    assert predict_probabilities(task, ["a fine film"]).shape == (1, len(labels))
    out = capsys.readouterr().out
    # Round 2's teacher is a round-1 student, whose own teacher is the 2-seed ensemble.
    assert "a 1-round self-trained teacher trains" in out
    assert len(re.findall(r"pseudo-labelled texts \(\w+ \d+, \w+ \d+\) join", out)) == 2  # per class
    assert sum(report["pseudo_labels_per_class"].values()) == report["num_pseudo_labeled"]


@pytest.mark.slow
def test_a_teacher_that_validates_better_than_its_student_becomes_the_run(tmp_path, tiny_classifier_run):
    from tfllm.config import TrainConfig
    from tfllm.runs import METRICS, RUN_CONFIG
    from tfllm.training.classifier import load_run, predict_probabilities

    # Two real finished runs: the student in the run directory, the teacher in its temporary folder.
    run_dir, teacher_dir = str(tmp_path / "run"), str(tmp_path / ".teacher-x" / "teacher")
    shutil.copytree(tiny_classifier_run, run_dir)
    shutil.copytree(tiny_classifier_run, teacher_dir)
    (tmp_path / ".teacher-x" / "teacher" / "teacher-only.txt").write_text("the teacher's")
    config = TrainConfig.from_json(os.path.join(teacher_dir, RUN_CONFIG))
    config.run_dir = teacher_dir
    config.to_json(os.path.join(teacher_dir, RUN_CONFIG))
    teacher = json.loads(open(os.path.join(teacher_dir, METRICS)).read())
    student = {"val": {"accuracy": 0.25}, "test": {"accuracy": 0.5}}
    metrics = keep_teacher(run_dir, teacher_dir, teacher, student, {"num_pseudo_labeled": 7})
    assert (tmp_path / "run" / "teacher-only.txt").exists() and not os.path.exists(teacher_dir)
    assert sorted(os.listdir(tmp_path / ".teacher-x")) == []  # the student's folder is gone
    assert TrainConfig.from_json(os.path.join(run_dir, RUN_CONFIG)).run_dir == run_dir
    on_disk = json.loads(open(os.path.join(run_dir, METRICS)).read())
    assert on_disk == metrics and metrics["val"] == teacher["val"]
    assert metrics["self_training"] == {"num_pseudo_labeled": 7, "kept": "teacher",
                                        "student": {"val_accuracy": 0.25, "test_accuracy": 0.5}}
    task, labels, _ = load_run(run_dir)  # a finished run where it now lies
    assert predict_probabilities(task, ["a fine film"]).shape == (1, len(labels))


@pytest.mark.parametrize("extra,match", [
    (["--unlabeled", "{tmp}/missing.txt"], "--unlabeled '{tmp}/missing.txt' does not exist"),
    (["--unlabeled", "{tmp}/empty.txt"], "is empty. Point --unlabeled at a file with rows of text."),  # said --data
    # In --data's column ('text'): "Pass --text-column with one of them" then refused --data for want of 'body'.
    (["--unlabeled", "{tmp}/body.csv"], "--unlabeled '{tmp}/body.csv' has no text column 'text'; its columns are "
     "['id', 'body']. --unlabeled texts are read from --data's text column ('text', set by --text-column): rename "
     "its column of texts to 'text', or give the texts as a .txt file, one per line."),
    (["--unlabeled", "{tmp}/binary.txt"], "--unlabeled '{tmp}/binary.txt' is not UTF-8 text"),  # named the file alone
    (["--unlabeled", "{tmp}/known.txt"], "no text that is not already in --data"),
    (["--unlabeled", "{tmp}/texts.txt", "--set", "self_training_keep=0"], "self_training_keep must be in"),
    (["--unlabeled", "{tmp}/texts.txt", "--set", "self_training_keep=half"], "self_training_keep must be in"),
    (["--unlabeled", "{tmp}/one.txt"], "at least 2 are needed"),
    (["--unlabeled", "{tmp}/texts.txt", "--set", "self_training_teachers=0"], "self_training_teachers must be"),
    (["--unlabeled", "{tmp}/texts.txt", "--set", "self_training_rounds=0"], "self_training_rounds must be"),
    (["--unlabeled", "{tmp}/texts.txt", "--task", "generate"], "--unlabeled is for --task classify"),
    # Without --unlabeled there is no self-training: the settings were accepted and ignored.
    (["--set", "self_training_keep=0.3", "--set", "self_training_rounds=2"],
     "self_training_keep, self_training_rounds set up self-training, which needs --unlabeled DATA"),
])
def test_bad_unlabeled_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, capsys, extra, match):
    from tfllm.cli import main

    # 120 rows: val and test splits of 12, which no small-split warning adds a line about.
    (tmp_path / "data.csv").write_text("text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(60)))
    (tmp_path / "known.txt").write_text("good film 1\nbad film 2\n")
    (tmp_path / "texts.txt").write_text("a new text\nanother one\n")
    (tmp_path / "one.txt").write_text("a single new text\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "body.csv").write_text("id,body\n1,a new text\n2,another one\n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    before = sorted(os.listdir(tmp_path))
    argv = ["train", "--data", str(tmp_path / "data.csv"), "--preset", "tiny", "--run-dir", str(tmp_path / "run")]
    assert main(argv + [a.format(tmp=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err
    assert match.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.slow
def test_a_finished_run_is_refused_before_the_teacher_trains(tiny_classifier_run, unlabelled_file, capsys):
    from tfllm.cli import main

    path, _ = unlabelled_file
    assert main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300",
                 "--unlabeled", str(path), "--run-dir", tiny_classifier_run]) == 2
    out, err = capsys.readouterr()
    assert "already holds a finished run" in err and "Self-training" not in out


@pytest.mark.slow
def test_an_interrupted_teacher_or_student_resumes_with_the_same_command(tmp_path, unlabelled_file, capsys,
                                                                         monkeypatch):
    """The teacher trains in `.RUN.teacher` beside the run: stopped, the same command resumes it (it was a
    temporary folder, deleted while the message said to resume from it); a finished teacher whose student
    was stopped labels again without training again."""
    import signal
    import subprocess
    import sys
    import time

    from tfllm.cli import main
    from tfllm.training import classifier

    path, _ = unlabelled_file
    run_dir, teacher_dir = tmp_path / "run", tmp_path / ".run.teacher"
    # 15 epochs: the signal comes after the teacher's first epoch's backup, with 14 epochs (seconds) still to train.
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--epochs", "15",
            "--set", "early_stopping=false", "--unlabeled", str(path), "--run-dir", str(run_dir)]
    process = subprocess.Popen([sys.executable, "-m", "tfllm.cli", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 240
    while not (teacher_dir / "backup" / "training_metadata.json").exists() and time.time() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    # SIGTERM, which tfllm handles as Ctrl-C: a process started under pytest-xdist inherits SIGINT ignored.
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert f"resume from {teacher_dir / 'backup'}" in out and (teacher_dir / "backup").is_dir()

    calls = []

    def student_interrupted(*args, **kwargs):  # the resumed teacher builds its model, then the student
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return own(*args, **kwargs)

    own = classifier.own_classifier
    monkeypatch.setattr(classifier, "own_classifier", student_interrupted)
    assert main(argv) == 130
    assert "Resuming the interrupted run" in capsys.readouterr().out
    assert (teacher_dir / "metrics.json").exists() and not run_dir.exists()  # the teacher finished and is kept
    monkeypatch.setattr(classifier, "own_classifier", own)

    teacher_weights = (teacher_dir / "model.weights.h5").read_bytes()
    metrics_before = json.loads((teacher_dir / "metrics.json").read_text())
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"the finished teacher in {teacher_dir} labels" in out and "a teacher trains" not in out
    report = json.loads((run_dir / "metrics.json").read_text())["self_training"]
    assert report["teacher"]["val_accuracy"] == metrics_before["val"]["accuracy"]
    if report["kept"] == "teacher":  # the teacher's weights, not a retrained teacher's, became the run
        assert (run_dir / "model.weights.h5").read_bytes() == teacher_weights
    assert not teacher_dir.exists()


@pytest.mark.slow
def test_a_teacher_is_trained_again_when_the_unlabeled_file_was_edited_in_place(tmp_path, unlabelled_file, capsys,
                                                                              monkeypatch):
    """The teacher in `.RUN.teacher` was reused, finished or interrupted, as long as the command was the
    same: a --unlabeled file edited in place since (other texts to learn the vocabulary from and to label)
    kept the teacher of the old texts. Its inputs' fingerprint is now recorded, and another one trains it again."""
    from tfllm.cli import main
    from tfllm.training import classifier

    source, _ = unlabelled_file
    lines = source.read_text(encoding="utf-8").splitlines()[:100]  # texts in no split of the labelled data
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    run_dir, teacher_dir = tmp_path / "run", tmp_path / ".run.teacher"
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300", "--unlabeled", str(path),
            "--run-dir", str(run_dir)]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    # The teacher stopped after its training: an interrupted teacher, which the same command resumes.
    with monkeypatch.context() as patch:
        patch.setattr(classifier, "classification_report", stopped)
        assert main(argv) == 130
    assert (teacher_dir / "backup").is_dir()
    path.write_text("\n".join(lines[40:]) + "\n", encoding="utf-8")  # edited in place
    calls = []

    def student_stopped(*args, **kwargs):  # the teacher builds its model, then the student
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return own(*args, **kwargs)

    own = classifier.own_classifier
    with monkeypatch.context() as patch:
        patch.setattr(classifier, "own_classifier", student_stopped)
        assert main(argv) == 130
    out = capsys.readouterr().out
    assert "a teacher trains" in out and "Resuming the interrupted run" not in out  # started over
    assert (teacher_dir / "metrics.json").exists() and not run_dir.exists()  # finished, its student stopped

    path.write_text("\n".join(lines[:40] + lines[60:]) + "\n", encoding="utf-8")  # edited in place again
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "a teacher trains" in out and "the finished teacher" not in out  # trained again
    report = json.loads((run_dir / "metrics.json").read_text())["self_training"]
    assert report["num_unlabeled"] == 80  # the texts of the file as it is now
