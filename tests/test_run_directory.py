"""The run directory's reliability: resuming, backups and the best checkpoint (tfllm.runs, training.common)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from conftest import timed_fits
from tfllm.errors import UserInputError


def test_an_interrupted_run_resumes_only_with_its_own_settings(tmp_path, monkeypatch):
    """Resuming with other settings mixed them silently (a new learning rate ignored, new epochs used, a new
    width a traceback): now refused, or with --overwrite started over; a run killed before its first backup
    (records only) starts over."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    run_dir = str(tmp_path / "run")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", run_dir=run_dir, epochs=30)
    assert runs.prepare(run_dir, config=config) == (False, None)
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    runs.write_json(os.path.join(runs.path(run_dir, runs.BACKUP), "training_metadata.json"), {})  # after an epoch
    assert runs.prepare(run_dir, config=config) == (True, None)
    assert runs.prepare(run_dir, overwrite=True, config=config)[0]  # the same command with --overwrite resumes
    data = tmp_path / "reviews.csv"  # a data file spelt another way is the same file (was "data differ")
    data.write_text("text,label\n")
    before = dataclasses.replace(config, data=str(data))
    assert runs.changed_settings(run_dir, before) == ["data"]
    before.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    assert runs.changed_settings(run_dir, dataclasses.replace(config, data=f"{tmp_path}/./reviews.csv")) == []
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    other = dataclasses.replace(config, learning_rate=0.5, overrides={"hidden_dim": 32})
    # Named as typed, with the values now and then: it said "(learning_rate, overrides differ)", and --set was
    # no name a user had typed.
    with pytest.raises(UserInputError, match=r"other settings \(learning_rate differs: 0.5 now, "
                                             r"not given then; overrides\['hidden_dim'\] differs: 32 "
                                             r"now, not given then\)"):
        runs.prepare(run_dir, config=other)
    with pytest.raises(UserInputError, match=r"other settings \(seed differs: 99 now, 1337 then\)"):  # was "(seed differ)"
        runs.prepare(run_dir, config=dataclasses.replace(config, seed=99))
    from tfllm import errors

    monkeypatch.setattr(errors, "command_running", True)  # as `tfllm train` says it: its options
    with pytest.raises(UserInputError, match=r"other settings \(--learning-rate differs: 0.5 now, "
                                             r"not given then; --set hidden_dim differs: 32 now, not "
                                             r"given then\)"):
        runs.prepare(run_dir, config=other)
    monkeypatch.setattr(errors, "command_running", False)
    assert runs.is_unfinished(run_dir)  # refused: nothing touched
    assert runs.prepare(run_dir, overwrite=True, config=other) == (False, None)
    assert os.listdir(run_dir) == []  # started over

    other.to_json(runs.path(run_dir, runs.RUN_CONFIG))  # killed before its first backup: records only
    assert runs.prepare(run_dir, config=config) == (False, None) and os.listdir(run_dir) == []


def test_a_dead_start_with_a_users_files_is_refused_not_deleted(tmp_path):
    """A rerun after a kill before the first backup deleted the folder, and the notes a user put there since."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    run_dir = str(tmp_path / "run")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", run_dir=run_dir)
    assert runs.prepare(run_dir, config=config) == (False, None)
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))  # killed before its first backup: records only
    (tmp_path / "run" / "NOTES.txt").write_text("why this run", encoding="utf-8")
    assert runs.dead_start(run_dir)
    with pytest.raises(UserInputError, match=r"holds NOTES.txt, which a tfllm run does not write; the run there was "
                                             r"killed before its first backup"):
        runs.prepare(run_dir, config=config)
    assert (tmp_path / "run" / "NOTES.txt").read_text(encoding="utf-8") == "why this run"  # nothing deleted
    assert runs.dead_start(run_dir)


def test_a_backup_that_cannot_be_read_is_one_clear_error(tmp_path):
    import keras

    from tfllm.training.common import Backup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n" + b"\0" * 100)  # cut short by a kill
    backup = Backup(str(tmp_path / "backup"))
    backup.set_model(model)
    with pytest.raises(UserInputError, match="cannot be read .* Delete that folder to start the run over"):
        backup.on_train_begin()


def test_the_best_checkpoint_keeps_the_best_value_from_before_an_interruption(tmp_path):
    """Keras' ModelCheckpoint starts from infinity when a run resumes, so the best epoch since the resume replaced
    a better one from before it; BestCheckpoint reads the best so far from the backup folder."""
    from tfllm.training.common import BestCheckpoint

    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="mse")
    record, best = tmp_path / "backup" / "best.json", tmp_path / "best.weights.h5"
    record.parent.mkdir()
    record.write_text(json.dumps({"monitor": "loss", "best": 1e-9}))  # an earlier epoch did better than any now
    model.fit(x, y, epochs=1, verbose=0, callbacks=[BestCheckpoint(str(best), "loss", str(record))])
    assert not best.exists()
    record.write_text(json.dumps({"monitor": "loss", "best": 1e9}))
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[BestCheckpoint(str(best), "loss", str(record))])
    assert best.exists() and json.loads(record.read_text())["best"] == pytest.approx(history.history["loss"][0])


def test_a_resumed_non_chief_worker_starts_from_the_chiefs_best_weights(tmp_path):
    """A resumed non-chief worker read the chief's best value from backup/best.json but had no best weights in its
    new scratch folder: no later epoch beat the record, so it kept its last epoch's weights where the chief
    loaded its best, and the two workers ended with different models."""
    from tfllm.training.common import BEST_WEIGHTS, BestCheckpoint, make_callbacks

    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="mse")
    chief, scratch = tmp_path / "run", tmp_path / "tfllm-worker1-x"
    (chief / "backup").mkdir(parents=True)
    scratch.mkdir()
    kernel = model.layers[0].kernel
    kernel.assign(np.full((2, 1), 0.25, "float32"))  # the chief's best epoch, before the interruption
    model.save_weights(str(chief / BEST_WEIGHTS))
    (chief / "backup" / "best.json").write_text(json.dumps({"monitor": "val_loss", "best": 1e-9}))
    kernel.assign(np.ones((2, 1), "float32"))
    callbacks = make_callbacks(str(scratch), write_logs=False, backup_dir=str(chief / "backup"))
    assert any(isinstance(c, BestCheckpoint) for c in callbacks)
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=callbacks)  # no better epoch
    model.load_weights(str(scratch / BEST_WEIGHTS))  # as the trainers do once fit ends
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kernel), np.full((2, 1), 0.25))
    assert json.loads((chief / "backup" / "best.json").read_text())["best"] == 1e-9  # read, not written


def test_a_train_config_of_the_wrong_kind_is_one_clear_error_and_paths_and_numpy_numbers_are_taken(tmp_path):
    """`TrainConfig(epochs="1")` failed deep in training with a TypeError; a pathlib.Path or a NumPy number
    (a notebook's) could not be written to run.json."""
    import pathlib

    from tfllm import runs
    from tfllm.config import TrainConfig

    rows = [("a fine film", 1), ("dull", 0)] * 5000  # a notebook's rows in memory: the message printed them all
    for fields, message in ((dict(epochs="1"), "epochs must be a whole number, got str '1'"),
                            (dict(overrides=[("hidden_dim", 8)]), "overrides must be a dict"),
                            (dict(learning_rate=True), "learning_rate must be a number"),
                            (dict(data=rows), r"data must be a file or folder path .*to_csv"),
                            (dict(unlabeled=["a text"] * 5000), r"unlabeled must be a file or folder path"),
                            # a TypeError from os.stat, and FileNotFoundError('') after the data was read
                            (dict(data=None), "data must be a file or folder path or a bundled name"),
                            (dict(run_dir=""), "run_dir must be the folder the run goes to .*, got ''")):
        with pytest.raises(UserInputError, match=message) as error:
            TrainConfig(**fields)
        assert len(str(error.value)) < 400
    import tfllm  # evaluate's data likewise (a TypeError from os.stat)

    with pytest.raises(UserInputError, match=r"evaluate's data must be a file or folder path .*to_csv"):
        tfllm.evaluate(str(tmp_path), data=["a fine film"])
    config = TrainConfig(run_dir=pathlib.Path(tmp_path) / "run", max_rows=np.int64(300), learning_rate=np.float32(0.5))
    config.to_json(runs.path(config.run_dir, runs.RUN_CONFIG))
    assert runs.read_train_config(config.run_dir) == config
    assert config.run_dir == str(tmp_path / "run") and type(config.max_rows) is int
    # A misspelt key of a dict is refused (it trained with the preset's value); a run's record ignores keys.
    with pytest.raises(UserInputError, match="TrainConfig has no field 'epoch'; did you mean 'epochs'\\?"):
        TrainConfig.from_dict({"data": "x.csv", "epoch": 3})
    assert TrainConfig.from_dict({"data": "x.csv", "epoch": 3}, strict=False).epochs is None


@pytest.mark.parametrize("trainer, task", [("tfllm.training.classifier:train_classifier", "classify"),
                                           ("tfllm.training.causal_lm:train_causal_lm", "generate"),
                                           ("tfllm.training.seq2seq:train_seq2seq", "translate"),
                                           ("tfllm.training.pretraining:pretrain", "pretrain")])
def test_a_python_trainer_refuses_its_run_directory_before_reading_the_data(tmp_path, capsys, trainer, task):
    """tfllm train refused a --run-dir that is a file before reading the data; the Python trainers read and
    tokenized all of it first (and printed its summary), then refused."""
    import importlib

    from tfllm.config import TrainConfig

    module, name = trainer.split(":")
    (tmp_path / "my.csv").write_text("text,label\n")
    with pytest.raises(UserInputError, match="cannot be a folder: .* is a file"):
        getattr(importlib.import_module(module), name)(TrainConfig(task=task, data="missing.csv", preset="tiny",
                                                                   run_dir=str(tmp_path / "my.csv")))
    assert capsys.readouterr().out == ""  # before the data (missing.csv would be its own error)


def test_run_directories_a_link_or_a_long_name_would_break_are_refused_in_one_line(tmp_path, tiny_classifier_run):
    """A dangling symbolic link (FileExistsError from os.makedirs), a name too long for the lock file and the
    run --overwrite sets aside beside it (ENAMETOOLONG), and --overwrite through a link (the new run went into
    a new folder in the link's place, the link stayed aside and blocked the next --overwrite)."""
    import shutil

    from tfllm import runs

    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(UserInputError, match="is a symbolic link to .*missing', which does not exist"):
        runs.check_run_folder(str(tmp_path / "dangling"))
    with pytest.raises(UserInputError, match="is 250 bytes long; at most 245"):
        runs.check_run_folder(str(tmp_path / ("a" * 250)))
    runs.check_run_folder(str(tmp_path / ("a" * 245)))
    shutil.copytree(tiny_classifier_run, tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UserInputError, match="is a symbolic link .*Pass the folder itself: run_dir=.*real"):
        runs.check_writable(str(tmp_path / "link"), overwrite=True)
    with pytest.raises(UserInputError, match="already holds a finished run"):  # without --overwrite: as a folder
        runs.check_writable(str(tmp_path / "link"))


def test_a_run_directory_that_is_not_a_path_is_one_clear_error():
    from tfllm import runs

    with pytest.raises(UserInputError, match="A run directory is a path"):
        runs.load_task(None)  # was a TypeError from os.path


def test_a_folder_that_is_no_run_is_named_as_each_command_takes_it(tmp_path, capsys):
    """`tfllm explain runs/nope TEXT` said "Pass the --run-dir of a training run", a flag explain (and predict,
    evaluate, export, generate, translate) do not take: each takes the run as RUN_DIR. A Python caller is
    told of its run directory, not of RUN_DIR or a flag."""
    from tfllm import runs
    from tfllm.cli import main

    nope = str(tmp_path / "nope")
    for command in (["explain", nope, "a film"], ["predict", nope, "a film"], ["evaluate", nope],
                    ["export", nope, "--name", "m"], ["generate", nope, "Once"], ["translate", nope, "hello"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Pass the RUN_DIR of a training run" in err, (command, err)
        assert "Pass the --run-dir" not in err, (command, err)
    with pytest.raises(UserInputError) as error:
        runs.check_finished(nope)
    assert "Pass the run directory of a training run" in str(error.value) and "RUN_DIR" not in str(error.value)


def test_classification_report_refuses_what_it_cannot_score():
    from tfllm.evaluation import classification_report

    report = classification_report([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["neg", "pos"])
    assert report["accuracy"] == pytest.approx(2 / 3) and report["num_examples"] == 3
    assert report["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)  # the mean of the classes' recalls
    with pytest.raises(UserInputError, match="No examples to score"):
        classification_report([], np.zeros((0, 2)), ["neg", "pos"])  # was an IndexError
    with pytest.raises(UserInputError, match=r"shape \(2, 2\)"):
        classification_report([0, 1], [[0.2, 0.8]], ["neg", "pos"])  # was an IndexError


def test_a_multi_class_report_has_scikit_learns_one_vs_rest_roc_auc():
    """metrics.json promised ROC-AUC, and a run of three or more classes had none."""
    from sklearn.metrics import roc_auc_score

    from tfllm.evaluation import classification_report

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    probabilities = rng.dirichlet([1, 1, 1], 60) + np.eye(3)[labels] * 0.3  # a model better than chance
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    report = classification_report(labels, probabilities, ["a", "b", "c"])
    assert report["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"))
    for i, name in enumerate("abc"):
        assert report["per_class"][name]["roc_auc"] == pytest.approx(roc_auc_score(labels == i, probabilities[:, i]))
    # A class with no example has no AUC: the mean is over the others, as it is of the recalls.
    report = classification_report(labels[labels < 2], probabilities[labels < 2], ["a", "b", "c"])
    assert report["per_class"]["c"]["roc_auc"] is None
    assert report["roc_auc"] == pytest.approx(np.mean([report["per_class"][n]["roc_auc"] for n in "ab"]))


def test_a_report_with_an_absent_class_names_the_classes_roc_auc_and_balanced_accuracy_average_over():
    """With a class that has no example, recall/precision/F1 averaged over the classes labelled or predicted
    (scikit-learn's default) and ROC-AUC and balanced accuracy over the classes present, while the report said
    only "average": "macro"."""
    from sklearn.metrics import recall_score, roc_auc_score

    from tfllm.evaluation import classification_report

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)  # classes a and b; c has no example
    probabilities = rng.dirichlet([1, 1, 1], 40) + np.eye(3)[labels] * 0.3
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    report = classification_report(labels, probabilities, ["a", "b", "c"])
    assert report["roc_auc_classes"] == ["a", "b"] and report["balanced_accuracy_classes"] == ["a", "b"]
    assert report["roc_auc"] == pytest.approx(np.mean([roc_auc_score(labels == i, probabilities[:, i]) for i in (0, 1)]))
    predicted = probabilities.argmax(1)
    assert report["balanced_accuracy"] == pytest.approx(recall_score(labels, predicted, labels=[0, 1], average="macro"))
    assert report["recall"] == pytest.approx(recall_score(labels, predicted, average="macro", zero_division=0))
    # Every class present: nothing to name.
    full = classification_report(np.arange(40) % 3, probabilities, ["a", "b", "c"])
    assert "roc_auc_classes" not in full and "balanced_accuracy_classes" not in full


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_probabilities_are_refused_not_scored(bad):
    """A diverged model's NaN probabilities gave confident figures: ROC-AUC 1.0 (a NaN sorts as the
    highest score) and an accuracy from argmax picking the NaN's class."""
    from tfllm.evaluation import classification_report, roc_auc

    probabilities = np.array([[bad, bad], [0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    with pytest.raises(UserInputError, match=r"NaN or infinity \(1 of 4 examples.*diverged.*check the inputs"):
        classification_report([1, 1, 0, 0], probabilities, ["a", "b"])
    with pytest.raises(UserInputError, match="NaN or infinity"):
        roc_auc([1, 1, 0, 0], probabilities[:, 1])


@pytest.mark.parametrize("labels,first", [([-1, 0, 1], "-1"), ([0, 2, 1], "2"), ([0, 0.5, 1], "0.5"),
                                          ([0, np.nan, 1], "nan"), (["a", "b", "a"], "'a'")])
def test_labels_that_are_not_class_ids_are_refused(labels, first):
    """-1 wrapped into the confusion matrix's last row (np.add.at) while accuracy and ROC-AUC read it as
    no class, so the report's figures disagreed."""
    from tfllm.evaluation import classification_report

    probabilities = [[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]]
    with pytest.raises(UserInputError, match=rf"integer ids from 0 to 1 .*the first {first}\."):
        classification_report(labels, probabilities, ["a", "b"])
    # Whole numbers of another type are the same ids.
    as_float = classification_report([1.0, 0.0, 1.0], probabilities, ["a", "b"])
    assert as_float == classification_report(np.array([1, 0, 1]), probabilities, ["a", "b"])


def test_a_data_file_edited_since_training_is_never_split_again_as_the_run_s(tmp_path):
    """An edited file splits differently, so 'the run's test split' would hold rows it trained on, and a
    resume would train on other rows: both refused (before: silently re-split)."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(10)))
    run_dir = str(tmp_path / "run")
    config = TrainConfig(data=str(data), preset="tiny", run_dir=run_dir)
    os.makedirs(run_dir)
    runs.write_records(run_dir, config, {})
    runs.check_data_unchanged(run_dir, str(data))  # the same bytes: fine
    assert runs.changed_settings(run_dir, config) == []
    runs.write_records(str(tmp_path / "bundled"), TrainConfig(data="rotten_tomatoes"), {})  # no file: no fingerprint

    data.write_text(data.read_text() + "great 99,pos\n")
    with pytest.raises(UserInputError, match="has changed since the run .* was trained on it"):
        runs.check_data_unchanged(run_dir, str(data))
    assert runs.changed_settings(run_dir, config) == ["data (the file changed)"]
    assert not runs.data_changed(str(tmp_path / "bundled"), "rotten_tomatoes")

    from tfllm.datasets import data_fingerprint

    folder = tmp_path / "texts"
    (folder / "pos").mkdir(parents=True)
    (folder / "pos" / "a.txt").write_text("a good film")
    before = data_fingerprint(str(folder))
    (folder / ".DS_Store").write_bytes(b"\0\1")  # what a file browser leaves: not data
    assert data_fingerprint(str(folder)) == before
    (folder / "pos" / "b.txt").write_text("a fine film")
    assert data_fingerprint(str(folder)) != before



def test_a_csv_with_only_its_line_endings_or_byte_order_mark_changed_still_splits_as_the_run_s(tmp_path):
    """Excel writes a BOM and \r\n; `sed -i 's/\r$//'` or a re-save without the BOM changed the bytes and not
    one row, and `tfllm evaluate` refused the file as edited (it "no longer splits as it did"). The rows decide
    where the bytes differ; a run recorded before the rows' fingerprint was kept still goes by the bytes."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    data = tmp_path / "excel.csv"
    rows = "review,stars\r\n" + "".join(f"good {i},5\r\nbad {i},1\r\n" for i in range(10)) + ",\r\n"
    data.write_bytes(rows.encode("utf-8-sig"))
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    runs.write_records(run_dir, TrainConfig(data=str(data), preset="tiny", run_dir=run_dir), {})
    copy = tmp_path / "copy.csv"
    for edited in (rows.replace("\r\n", "\n").encode("utf-8-sig"), rows.encode("utf-8"),
                   rows.replace("\r\n", "\n").encode("utf-8")):
        data.write_bytes(edited)
        runs.check_data_unchanged(run_dir, str(data))  # the same rows: fine
        copy.write_bytes(edited)
        assert runs.holds_training_data(run_dir, str(copy))  # and a copy of them is the training data
    data.write_bytes(rows.replace("good 3", "good 33").encode("utf-8"))  # a row edited: refused
    with pytest.raises(UserInputError, match="has changed since the run"):
        runs.check_data_unchanged(run_dir, str(data))
    record = json.loads(open(runs.path(run_dir, runs.DATA)).read())
    del record["rows_sha256"]  # a run from before the rows' fingerprint
    runs.write_json(runs.path(run_dir, runs.DATA), record)
    data.write_bytes(rows.replace("\r\n", "\n").encode("utf-8-sig"))
    with pytest.raises(UserInputError, match="has changed since the run"):
        runs.check_data_unchanged(run_dir, str(data))


def test_a_kill_while_a_backup_or_the_best_checkpoint_is_written_leaves_the_previous_file_whole(
        tmp_path, monkeypatch):
    """Keras wrote both in place: a kill mid-write left a file that loads with only warnings, resetting
    what it lacked (a resumed run lost its optimizer state, or failed after deleting its backup)."""
    import h5py

    from tfllm.training.common import Backup, BestCheckpoint

    def model():
        keras.utils.set_random_seed(len(os.listdir(tmp_path)))
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="first"), keras.layers.Dense(1, name="last")])
        net.compile(optimizer="adam", loss="mse")
        return net

    trained = model()
    backup = Backup(str(tmp_path / "backup"))
    best = BestCheckpoint(str(tmp_path / "best.weights.h5"), "loss", record=str(tmp_path / "backup" / "best.json"))
    for callback in (backup, best):
        callback.set_model(trained)
    backup.on_epoch_end(0)
    best.on_epoch_end(0, {"loss": 1.0})
    saved = [w.copy() for w in trained.get_weights()]

    trained.set_weights([w + 1 for w in saved])
    save_weights = trained.save_weights

    def killed_mid_write(filepath, overwrite=True):
        save_weights(filepath, overwrite=overwrite)
        with h5py.File(filepath, "r+") as f:  # what a write cut short leaves: a layer missing
            del f["layers/dense_1"]  # (named by class in the file)
        raise KeyboardInterrupt

    monkeypatch.setattr(trained, "save_weights", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(1)
    with pytest.raises(KeyboardInterrupt):
        best.on_epoch_end(1, {"loss": 0.5})

    resumed = model()
    restore = Backup(str(tmp_path / "backup"))
    restore.set_model(resumed)
    restore.on_train_begin()
    assert resumed._initial_epoch == 1
    for got, want in zip(resumed.get_weights(), saved):
        np.testing.assert_array_equal(got, want)
    # A backup that opens but lacks a layer (written by Keras in place, a disk error): the other copy is
    # used where it stands (a RestoreOnly worker never writes the chief's backup).
    from tfllm.training.common import RestoreOnly

    restore.on_epoch_end(1)  # the backup of epoch 2, the previous one kept beside it
    with h5py.File(tmp_path / "backup" / "latest.weights.h5", "r+") as f:
        del f["layers/dense_1"]
    files = {p.name: p.read_bytes() for p in (tmp_path / "backup").iterdir()}
    for callback in (RestoreOnly, Backup):
        again = model()
        restore = callback(str(tmp_path / "backup"))
        restore.set_model(again)
        restore.on_train_begin()  # was: "cannot be read ... Delete that folder"
        assert again._initial_epoch == 1
        for got, want in zip(again.get_weights(), saved):
            np.testing.assert_array_equal(got, want)
        assert {p.name: p.read_bytes() for p in (tmp_path / "backup").iterdir()} == files
    reloaded = model()
    reloaded.load_weights(str(tmp_path / "best.weights.h5"))
    for got, want in zip(reloaded.get_weights(), saved):
        np.testing.assert_array_equal(got, want)
    assert not [name for name in os.listdir(tmp_path / "backup") if ".tmp" in name]


def test_a_kill_between_a_backup_s_weights_and_its_metadata_resumes_from_a_matching_pair(tmp_path, monkeypatch):
    """New weights beside the previous epoch's metadata: Keras would resume at the wrong epoch (one epoch
    trained twice); the two files are now paired by the weights' hash, and the previous pair is used."""
    from tfllm.training import common

    def model(seed):
        keras.utils.set_random_seed(seed)
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        net.compile(optimizer="adam", loss="mse")
        return net

    trained = model(0)
    backup = common.Backup(str(tmp_path / "backup"))
    backup.set_model(trained)
    backup.on_epoch_end(0)
    first = [w.copy() for w in trained.get_weights()]
    trained.set_weights([w + 1 for w in first])

    def killed(file, value):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(1)  # the new weights are written, their metadata is not
    monkeypatch.undo()
    resumed = model(1)
    restore = common.Backup(str(tmp_path / "backup"))
    restore.set_model(resumed)
    restore.on_train_begin()
    assert resumed._initial_epoch == 1  # after epoch 0, with epoch 0's weights
    for got, want in zip(resumed.get_weights(), first):
        np.testing.assert_array_equal(got, want)


def test_an_empty_backup_folder_is_nothing_to_resume(tmp_path):
    """A disk that filled up on the first backup left `backup/` empty: it was taken for a backup, the
    next command "resumed" from nothing and skipped what only a fresh run does (word vectors)."""
    from tfllm import runs

    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    runs.write_json(runs.path(str(run_dir), runs.RUN_CONFIG), {})
    assert not runs.has_backup(str(run_dir / "backup")) and not runs.is_unfinished(str(run_dir))
    assert runs.prepare(str(run_dir))[0] is False  # a fresh start
    (run_dir / "backup").mkdir(exist_ok=True)
    (run_dir / "backup" / "latest.123.tmp.weights.h5").write_bytes(b"")  # a write the full disk cut short
    assert not runs.has_backup(str(run_dir / "backup"))
    (run_dir / "backup" / "latest.weights.h5.bkp").write_bytes(b"")
    runs.write_json(runs.path(str(run_dir), runs.RUN_CONFIG), {})
    assert runs.is_unfinished(str(run_dir))


def test_a_crash_after_a_backup_keeps_it_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """A lost worker or a crash mid-run: the backup stays, and the message says so (it printed only the
    traceback, with no word that rerunning resumes)."""
    from tfllm.training import common

    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "latest.weights.h5").write_bytes(b"")  # what `runs.has_backup` looks for
    from tfllm import errors

    # A Python caller is told in a TfllmWarning, in its own words (it read "run the same command again").
    with pytest.raises(RuntimeError), pytest.warns(errors.TfllmWarning, match="its backup is kept: once the cause "
                                                   "is fixed, call the same function again with the same arguments"):
        with common.guarded_run(str(run_dir), resume=False):
            raise RuntimeError("Collective ops is aborted")
    assert (run_dir / "backup").is_dir()
    monkeypatch.setattr(errors, "command_running", True)  # a command prints it, as it always has
    with pytest.raises(RuntimeError):
        with common.guarded_run(str(run_dir), resume=False):
            raise RuntimeError("Collective ops is aborted")
    assert "its backup is kept: once the cause is fixed, run the same command again" in capsys.readouterr().err


def test_resuming_is_a_note_a_python_caller_gets_as_a_warning(tmp_path, capsys, monkeypatch):
    """`train_causal_lm(verbose=0)` printed "Resuming the interrupted run ..." on stdout, where
    `train_classifier(verbose=0)` was silent: every trainer's resume (`common.start_run`) now says it as a
    note, a TfllmWarning a notebook can filter, and a command's line on stdout as before."""
    from tfllm import errors
    from tfllm.config import TrainConfig
    from tfllm.training import common

    # A preset run reads no tokenizer back, so start_run says its line and returns.
    config = TrainConfig(task="generate", data="shakespeare", run_dir=str(tmp_path / "run"), from_preset="PRESET")
    with pytest.warns(errors.TfllmWarning, match="Resuming the interrupted run in .* from its last backup") as caught:
        assert common.start_run(config.run_dir, config, {}, True, []) is None
    assert capsys.readouterr().out == "" and [w.filename for w in caught] == [__file__]
    monkeypatch.setattr(errors, "command_running", True)
    common.start_run(config.run_dir, config, {}, True, [])
    assert "Resuming the interrupted run" in capsys.readouterr().out


def test_the_interrupted_warning_points_at_the_callers_line_not_contextlib(tmp_path):
    """`errors.warn` skips tfllm's frames to reach the caller, but the warning raised in `guarded_run`'s exit
    passes through contextlib's `__exit__` and read "contextlib.py:158: TfllmWarning: Interrupted. ..."."""
    from tfllm import errors
    from tfllm.training import common

    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "latest.weights.h5").write_bytes(b"")  # what `runs.has_backup` looks for
    with pytest.raises(KeyboardInterrupt), pytest.warns(errors.TfllmWarning, match="Interrupted. Call") as caught:
        with common.guarded_run(str(run_dir), resume=False):
            raise KeyboardInterrupt
    assert [w.filename for w in caught] == [__file__]


def test_an_interrupted_overwrite_tells_a_python_caller_how_to_get_the_old_run_back_in_words(tmp_path):
    """A notebook's Ctrl-C warning said "to abandon the new run and get it back: rm -rf runs/k7 && mv ..."."""
    from tfllm import errors
    from tfllm.training import common

    run_dir, previous = tmp_path / "k7", tmp_path / ".k7.previous"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "latest.weights.h5").write_bytes(b"")  # what `runs.has_backup` looks for
    previous.mkdir()
    with pytest.raises(KeyboardInterrupt), pytest.warns(errors.TfllmWarning) as caught:
        with common.guarded_run(str(run_dir), resume=False, previous=str(previous)):
            raise KeyboardInterrupt
    said = str(caught[0].message)
    assert said.endswith(f"to abandon the new run and get it back: delete {run_dir} and rename {previous} to {run_dir}.")
    assert "rm -rf" not in said and "mv " not in said and previous.is_dir()


def test_a_lost_worker_is_one_line_saying_to_rerun_every_worker(tmp_path, capsys):
    """The surviving worker of a multi-worker run printed a screen of gRPC traceback ("Collective ops is aborted
    by: failed to connect to all addresses ... Connection refused") when its peer was killed."""
    import tensorflow as tf

    from tfllm.errors import WorkerLost
    from tfllm.training import common

    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "latest.weights.h5").write_bytes(b"")  # what `runs.has_backup` looks for
    with pytest.raises(WorkerLost) as caught:
        with common.guarded_run(str(run_dir), resume=False):
            raise tf.errors.UnavailableError(None, None, "Graph execution error:\n\nCollective ops is aborted by: "
                                             "failed to connect to all addresses; Connection refused")
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "worker" in message
    assert f"rerun every worker's command to resume from {run_dir / 'backup'}" in message
    assert caught.value.__suppress_context__  # the CLI prints the line alone (tfllm.cli._main), no traceback
    assert (run_dir / "backup").is_dir()
    assert capsys.readouterr().err == ""  # not "Training failed ..." as well


def test_an_interrupted_non_chief_worker_points_at_the_chief_s_backup(tmp_path, capsys, monkeypatch):
    """A non-chief worker trains in a scratch folder; it said "nothing to resume, the new run is removed"
    though the chief's backup resumes the run."""
    from tfllm import errors
    from tfllm.training import common

    monkeypatch.setattr(errors, "command_running", True)  # a worker runs `tfllm train`: the note is printed

    (tmp_path / "run" / "backup").mkdir(parents=True)
    (tmp_path / "run" / "backup" / "latest.weights.h5").write_bytes(b"")
    scratch = tmp_path / "tfllm-worker1-xyz"
    scratch.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with common.guarded_run(str(scratch), resume=False, backup_dir=str(tmp_path / "run" / "backup")):
            raise KeyboardInterrupt
    out = capsys.readouterr().out
    assert f"resume from {tmp_path / 'run' / 'backup'}" in out and "removed" not in out
    assert not scratch.exists() and (tmp_path / "run" / "backup").is_dir()


def _another_tfllms_tiny(monkeypatch, task):
    """Another tfllm's `tiny` preset for `task`: a wider model (the classifier's without its character and word
    views), and another learning rate."""
    from tfllm import presets

    table = presets.PRESETS[task]
    changed = {k: v for k, v in table["tiny"].items() if k not in ("char_ngram_buckets", "word_ngram_buckets")}
    monkeypatch.setitem(table, "tiny", {**changed, "hidden_dim": 24, "learning_rate": 0.5})


def _assert_resumed_with_the_recorded_recipe(run_dir, recipe, out):
    """The resume said it kept the recipe the run started with (tfllm/recipe.json, unchanged), and built the
    model it records (hidden_dim 16, not the changed preset's 24)."""
    assert "Resuming with the recipe the run started with" in out and "hidden_dim" in out and "learning_rate" in out
    assert (run_dir / "tfllm" / "recipe.json").read_text() == recipe  # kept as it began
    assert json.loads((run_dir / "config.json").read_text())["config"]["hidden_dim"] == json.loads(recipe)["hidden_dim"] == 16


@pytest.mark.slow
def test_a_pretraining_run_stopped_after_its_training_reports_the_seconds_its_training_took_and_resumes_with_its_recipe(
        tmp_path, monkeypatch, capsys):
    """Two behaviours of one interrupted `pretrain` run (one run and its resume, not two):
    - A stop after `fit` had ended resumes without training again; metrics.json's train_seconds were then
      the resumed fit's, which trained nothing (a fraction of a second). Now the interrupted fit's. (A classifier's
      case, the same stop after fit, is checked by test_classifier_cli's
      test_a_stop_after_the_last_epoch_resumes_without_training_again, with the run it trains already.)
    - Interrupted under a tfllm whose preset has changed since (another version's `tiny`), it resumes with the
      recipe it recorded when it started (tfllm/recipe.json), not today's preset, which the backup's weights do
      not fit (test_an_interrupted_run_resumes_with_the_recipe_it_started_with checks the other tasks)."""
    from tfllm.cli import main

    def stopped(*args, **kwargs):  # the first thing after fit
        raise KeyboardInterrupt

    fits = timed_fits(monkeypatch, keras.Model)
    run_dir = tmp_path / "run"
    argv = ["pretrain", "--data", "rotten_tomatoes", "--steps", "20", "--set", "eval_interval=10", "--preset", "tiny",
            "--max-rows", "300", "--run-dir", str(run_dir)]
    with monkeypatch.context() as patch:
        patch.setattr("tfllm.training.pretraining._validation_metrics", stopped)
        assert main(argv) == 130
    assert "Run the same command again to resume" in capsys.readouterr().out
    recipe = (run_dir / "tfllm" / "recipe.json").read_text()
    _another_tfllms_tiny(monkeypatch, "pretrain")
    assert main(argv) == 0
    _assert_resumed_with_the_recorded_recipe(run_dir, recipe, capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The first fit's seconds up to its end (not the tf.data teardown after it), not the resume's no-op fit's:
    # nearer the first. (A bound of twice the no-op fit failed once under the full suite's load: 2.1 s of it.)
    seconds = metrics["train_seconds"]
    assert len(fits) == 2 and fits[0] / 2 < seconds < fits[0] + 1  # + set-up around fit
    assert abs(seconds - fits[0]) < abs(seconds - fits[1])
    assert metrics["epochs_run"] == 2


def test_figures_a_resume_cannot_know_are_left_out_with_the_reason(tmp_path):
    """A backup written after fit by a tfllm that did not keep the figures, or a stop between the last
    epoch's backup and the end of fit (every epoch done, no `fit_done`): the resumed fit trains nothing,
    so what it would measure is left out, with the reason, rather than its no-op's seconds."""
    from tfllm.training import common

    x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup_dir, metadata = tmp_path / "backup", tmp_path / "backup" / "training_metadata.json"

    def fit():
        callbacks = [common.Backup(str(backup_dir))]
        common.measure_fit(callbacks, lambda: {"train_seconds": 12.5})
        model.fit(x, y, epochs=2, verbose=0, callbacks=callbacks)
        return common.fit_figures(callbacks, ("train_seconds",))

    assert fit() == {"train_seconds": 12.5}  # trained: measured, and kept with fit_done
    assert json.loads(metadata.read_text())["fit_figures"] == {"train_seconds": 12.5}
    assert fit() == {"train_seconds": 12.5}  # resumed after fit: read back, not measured again
    for record in ({"fit_done": True}, {}):  # an older backup; every epoch done, stopped before fit's end
        kept = {k: v for k, v in json.loads(metadata.read_text()).items() if k in ("epoch", "batch", "weights_sha256")}
        metadata.write_text(json.dumps({**kept, **record}))
        figures = fit()
        assert list(figures) == ["not_measured"] and list(figures["not_measured"]) == ["train_seconds"]
        assert "resumed with its training already done" in figures["not_measured"]["train_seconds"]


@pytest.mark.slow
def test_a_kill_whose_exception_python_dropped_still_stops_the_run_and_it_resumes_with_its_recipe(
        tmp_path, monkeypatch, capsys):
    """Two behaviours of one interrupted `train` run of a classifier (one run and its resume, not two):
    - A signal handler's exception can land where Python drops it ("Exception ignored in" a `__del__`,
      as TensorFlow's iterators have): a `kill` then let the run train on to its end and exit 0. The stop is
      kept and raised again at the next batch, so the run stops, is backed up, and resumes.
    - Interrupted under a tfllm whose preset has changed since (another version's `tiny`: a wider model without
      the character and word views, another learning rate), it resumes with the recipe it recorded when it
      started (tfllm/recipe.json), the optimizer compiled with its learning rate
      (test_an_interrupted_run_resumes_with_the_recipe_it_started_with checks the other tasks)."""
    from tfllm import errors
    from tfllm.cli import main
    from tfllm.training import classifier, common

    def dropped(self, epoch, logs=None):  # the signal lands in a __del__ after the first epoch's backup
        if epoch == 0:
            try:
                errors.request_stop(errors.Terminated)
            except KeyboardInterrupt:
                pass  # what Python does with an exception raised in a __del__
        own(self, epoch, logs)

    own = common.LearningRateLogger.on_epoch_end
    monkeypatch.setattr(common.LearningRateLogger, "on_epoch_end", dropped)
    run_dir = tmp_path / "run"
    argv = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "200", "--epochs", "3",
            "--set", "early_stopping=false", "--run-dir", str(run_dir)]
    assert main(argv) == 143
    assert "run the same command again to resume" in capsys.readouterr().out.lower()
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    monkeypatch.setattr(common.LearningRateLogger, "on_epoch_end", own)
    recipe = (run_dir / "tfllm" / "recipe.json").read_text()
    _another_tfllms_tiny(monkeypatch, "classify")
    rates, compile_classifier = [], classifier.compile_classifier

    def compiled(model, preset, *args, **kwargs):  # the learning rate the resumed run compiles its optimizer with
        rates.append(preset["learning_rate"])
        return compile_classifier(model, preset, *args, **kwargs)

    monkeypatch.setattr(classifier, "compile_classifier", compiled)
    assert main(argv) == 0  # the stop is not carried into the next command
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 3
    _assert_resumed_with_the_recorded_recipe(run_dir, recipe, capsys.readouterr().out)
    assert rates and set(rates) == {json.loads(recipe)["learning_rate"]} != {0.5}
    assert {"char_ngram_buckets", "word_ngram_buckets"} <= set(json.loads((run_dir / "task.json").read_text())["config"])


def test_a_stop_that_lands_in_a_del_is_kept_for_later_not_raised_there(capsys):
    """Raised in a `__del__` (TensorFlow's AtomicFunction has one), Python dropped the stop and printed
    "Exception ignored in ... Traceback" for it: there it is only recorded, and raised where it is safe."""
    import sys

    from tfllm import errors

    class Finalized:
        def __del__(self):  # the signal handler's frame sits on top of this one
            errors.request_stop(errors.Terminated, sys._getframe())

    errors.clear_stop()
    try:
        Finalized()  # finalized at once
        assert "Exception ignored" not in capsys.readouterr().err
        with pytest.raises(errors.Terminated):
            errors.raise_if_stopping()
        with pytest.raises(KeyboardInterrupt):  # elsewhere it is raised where it lands, as before
            errors.request_stop(KeyboardInterrupt, sys._getframe())
    finally:
        errors.clear_stop()


def _finished_run(run_dir, vocabulary_size=None):
    """The files by which tfllm knows a finished run (contents beside the point here)."""
    from tfllm import runs

    for name in ("model.weights.h5", "config.json", runs.TASK_CONFIG, runs.METRICS, runs.RUN_CONFIG):
        os.makedirs(os.path.dirname(runs.path(run_dir, name)), exist_ok=True)
        runs.write_json(runs.path(run_dir, name), {})
    if vocabulary_size:
        runs.write_json(runs.path(run_dir, "config.json"), {"config": {"vocabulary_size": vocabulary_size}})
        runs.write_json(runs.path(run_dir, "tokenizer.json"), {"module": "tfllm.tokenizers"})
        os.makedirs(runs.path(run_dir, "assets/tokenizer"))
    assert runs.is_finished(run_dir)
    return run_dir


def test_a_finished_run_that_lost_a_file_is_never_deleted_as_a_run_killed_before_its_backup(tmp_path):
    """A finished run whose metrics.json was deleted looked like a run killed before its first backup, and
    the next `tfllm train` into it deleted it (and the user's notes in it) without a word."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    run_dir = _finished_run(str(tmp_path / "a"))
    os.remove(runs.path(run_dir, runs.METRICS))
    (tmp_path / "a" / "NOTES.txt").write_text("mine")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", run_dir=run_dir)
    with pytest.raises(UserInputError, match=r"holds a finished run that has lost metrics.json since\. Put the "
                                             r"files back, pass overwrite=True"):
        runs.prepare(run_dir, config=config)
    with pytest.raises(UserInputError, match="has lost metrics.json since. Put it back, or retrain it"):
        runs.check_finished(run_dir)  # predict, evaluate, export: it said "did not finish ... resume it"
    assert (tmp_path / "a" / "NOTES.txt").exists() and runs.has_weights(run_dir)
    os.remove(runs.path(run_dir, "config.json"))  # predict's NumPy path read the weights without it
    with pytest.raises(UserInputError, match="has lost config.json, metrics.json since"):
        runs.check_finished(run_dir)
    with pytest.raises(UserInputError, match="holds NOTES.txt, which a tfllm run does not write"):
        runs.prepare(run_dir, overwrite=True, config=config)  # nor with overwrite: the notes would go with it
    os.remove(tmp_path / "a" / "NOTES.txt")
    resume, previous = runs.prepare(run_dir, overwrite=True, config=config)  # replaced only when asked
    assert not resume and runs.has_weights(previous)


def test_a_run_set_aside_by_an_interrupted_overwrite_is_never_deleted_by_a_later_one(tmp_path):
    """The interrupted --overwrite run deleted by hand, a new run there, then --overwrite again: the first
    run, kept in .NAME.previous, was deleted to make room for the second without a word."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    previous = _finished_run(str(tmp_path / ".a.previous"))
    run_dir = str(tmp_path / "a")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", run_dir=run_dir)
    for folder_state in ("absent", "finished"):
        if folder_state == "finished":
            _finished_run(run_dir)
        with pytest.raises(UserInputError, match=r"\.a\.previous' holds the run an interrupted `overwrite=True` set "
                                                 r"aside.*Move it back \(rename "):
            runs.prepare(run_dir, overwrite=True, config=config)
        assert runs.is_finished(previous)


def test_a_run_directory_in_an_exported_models_version_slot_is_refused_and_never_pruned(tmp_path):
    from tfllm import runs
    from tfllm.export import versioning

    base = tmp_path / "savedmodels"
    for version in (1, 8):
        (base / "rev" / str(version)).mkdir(parents=True)
        (base / "rev" / str(version) / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"is a version folder of the model exported in .*run_dir outside it"):
        runs.check_writable(str(base / "rev" / "7"))
    runs.check_writable(str(tmp_path / "runs" / "7"))  # a number alone is a fine name elsewhere
    _finished_run(str(base / "rev" / "7"))  # put there before this check, or by hand
    result = versioning.prune(str(base), "rev", keep=1)
    assert result == [1] and "holds no export" in result.skipped[7]
    assert runs.is_finished(str(base / "rev" / "7"))


def test_a_vocabulary_that_changed_since_training_is_refused(tmp_path):
    """A vocabulary.txt cut from 50 lines to 20 loaded without a word; predict, evaluate and export went on."""
    from tfllm import runs

    run_dir = _finished_run(str(tmp_path / "a"), vocabulary_size=5)
    vocabulary = tmp_path / "a" / "assets" / "tokenizer" / "vocabulary.txt"
    vocabulary.write_text("[PAD]\n[UNK]\na\nb\nc\n")
    runs.check_finished(run_dir)
    vocabulary.write_text("[PAD]\n[UNK]\na\n")
    with pytest.raises(UserInputError, match=r"vocabulary \(assets/tokenizer/vocabulary.txt\) has 3 tokens but its "
                                             r"model 5: the file changed"):
        runs.check_finished(run_dir)


def test_from_preset_on_a_run_that_has_not_finished_says_so(tmp_path):
    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.training.common import check_from_preset_settings

    run_dir = str(tmp_path / "p")
    runs.write_json(runs.path(run_dir, runs.RUN_CONFIG), {})  # an interrupted --overwrite run: no preset files yet
    runs.write_json(os.path.join(runs.path(run_dir, runs.BACKUP), "training_metadata.json"), {})
    _finished_run(str(tmp_path / ".p.previous"))
    config = TrainConfig(data="rotten_tomatoes", from_preset=run_dir, run_dir=str(tmp_path / "ft"))
    with pytest.raises(UserInputError, match=r"holds a run that did not finish.*kept in .*\.p\.previous"):
        check_from_preset_settings(config)  # was: "a folder but not a preset (no config.json in it)"


def test_a_finished_run_is_refused_in_python_spelling_from_python_and_in_flags_from_the_command(tmp_path, capsys):
    """A notebook was told "Pass --overwrite ... or choose another --run-dir", flags it cannot pass."""
    import tfllm
    from tfllm.cli import main
    from tfllm.config import TrainConfig

    run_dir = _finished_run(str(tmp_path / "run1"))
    with pytest.raises(UserInputError) as error:
        tfllm.train_classifier(TrainConfig(data="rotten_tomatoes", run_dir=run_dir, preset="tiny"))
    assert "Pass overwrite=True to replace it" in str(error.value) and "choose another run_dir." in str(error.value)
    assert "--" not in str(error.value)
    capsys.readouterr()
    assert main(["train", "--data", "rotten_tomatoes", "--run-dir", run_dir, "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "Pass --overwrite to replace it" in err and "choose another --run-dir." in err, err


def test_a_kill_while_a_finished_run_drops_its_backup_leaves_a_finished_run(tmp_path, tiny_classifier_run,
                                                                            monkeypatch):
    """The backup was deleted file by file: a kill in between left part of it, the run read as interrupted,
    and rerunning its command 'resumed' from epoch 1 and replaced the finished weights and metrics."""
    import shutil

    from tfllm import runs

    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_classifier_run, run_dir)
    backup = os.path.join(run_dir, runs.BACKUP)
    os.makedirs(backup)
    for name in ("latest.weights.h5", "training_metadata.json", "best.json"):  # what a backup holds
        with open(os.path.join(backup, name), "w", encoding="utf-8") as f:
            f.write("{}")
    assert runs.is_unfinished(run_dir) and not runs.is_finished(run_dir)
    unlink, calls = os.unlink, []

    def killed_after_one_file(*args, **kwargs):  # the kill: after the first file is gone
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return unlink(*args, **kwargs)

    monkeypatch.setattr(os, "unlink", killed_after_one_file)
    with pytest.raises(KeyboardInterrupt):
        runs.drop_backup(run_dir)
    monkeypatch.setattr(os, "unlink", unlink)
    assert runs.is_finished(run_dir) and not runs.is_unfinished(run_dir)
    runs.check_finished(run_dir)  # evaluate, export, ... take it
    runs.drop_backup(run_dir)  # the next one removes what the kill left
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(tiny_classifier_run))


def test_evaluate_on_a_run_killed_before_its_first_backup_says_it_starts_over(tmp_path, tiny_classifier_run,
                                                                               capsys):
    """`train --overwrite` over a finished run, killed before its first backup: evaluate said "did not finish.
    Run its training command again to resume it", but there is nothing to resume."""
    import shutil

    from tfllm import runs
    from tfllm.cli import main

    run_dir, previous = str(tmp_path / "ow"), str(tmp_path / ".ow.previous")
    shutil.copytree(tiny_classifier_run, previous)  # the finished run --overwrite set aside
    for name in ("assets", "logs", "tfllm", "tokenizer.json"):  # what the new run wrote before the kill
        copy = shutil.copytree if os.path.isdir(os.path.join(previous, name)) else shutil.copy
        copy(os.path.join(previous, name), os.path.join(run_dir, name))
    assert runs.dead_start(run_dir) and not runs.has_backup(runs.path(run_dir, runs.BACKUP))
    assert main(["evaluate", run_dir]) == 2
    err = capsys.readouterr().err
    assert "was stopped before its first backup: run its training command again to start it over (with " \
           f"--overwrite), or without --overwrite to put back the finished run it was to replace, kept in " \
           f"{previous!r}" in err and "resume" not in err
    shutil.rmtree(previous)  # a fresh run killed as early: nothing set aside
    assert main(["evaluate", run_dir]) == 2
    assert "was stopped before its first backup: run its training command again (it starts over)." in \
        capsys.readouterr().err


def test_a_from_preset_folder_spelled_another_way_resumes(tmp_path, monkeypatch):
    """The same --from-preset folder, absolute when started and relative on the rerun, was refused as
    "other settings (from_preset differ)"; a local folder now compares as a file (as --data does), a KerasHub
    handle as text."""
    from tfllm import runs
    from tfllm.config import TrainConfig

    (tmp_path / "presets" / "bert").mkdir(parents=True)
    run_dir = str(tmp_path / "run")
    config = TrainConfig(data="rotten_tomatoes", run_dir=run_dir, from_preset=str(tmp_path / "presets" / "bert"))
    os.makedirs(run_dir)
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    monkeypatch.chdir(tmp_path)
    for spelling in ("presets/bert", "./presets/bert/", "presets/../presets/bert"):
        assert runs.changed_settings(run_dir, dataclasses.replace(config, from_preset=spelling)) == []
    assert runs.changed_settings(run_dir, dataclasses.replace(config, from_preset="bert_tiny_en_uncased")) == \
        ["from_preset"]
    (tmp_path / "presets" / "other").mkdir()
    assert runs.changed_settings(run_dir, dataclasses.replace(config, from_preset="presets/other")) == ["from_preset"]
    handle = dataclasses.replace(config, from_preset="hf://keras/bert_tiny_en_uncased")
    handle.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    assert runs.changed_settings(run_dir, handle) == []
    assert runs.changed_settings(run_dir, dataclasses.replace(config, from_preset="bert_tiny_en_uncased")) == \
        ["from_preset"]


@pytest.mark.slow
@pytest.mark.parametrize("task, command", [
    # classify's case: test_a_kill_whose_exception_python_dropped_still_stops_the_run_and_it_resumes_with_its_recipe,
    # on the run it interrupts already.
    ("generate", ["train", "--task", "generate", "--data", "shakespeare", "--max-rows", "3000", "--no-jit-compile"]),
    ("translate", ["train", "--task", "translate", "--data", "PAIRS", "--source-column", "zh", "--target-column", "en",
                   "--max-rows", "60", "--epochs", "2"]),
    # pretrain's case: test_a_pretraining_run_stopped_after_its_training_reports_the_seconds_its_training_took_and_
    # resumes_with_its_recipe, on the run it interrupts already.
])
def test_an_interrupted_run_resumes_with_the_recipe_it_started_with(tmp_path, monkeypatch, capsys, task, command):
    """A run interrupted under a tfllm whose preset has changed since (another version's `tiny`): the resume
    rebuilt the model from today's preset, which the backup's weights did not fit ("The backup ... cannot be
    read ... Delete that folder"), and a new learning rate would have trained the rest of the run. It now
    resumes with the recipe it recorded when it started (tfllm/recipe.json)."""
    import csv

    from tfllm.cli import main
    from tfllm.training import common

    if task == "translate":
        with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
            words = {"一": "one", "二": "two", "三": "three", "四": "four"}
            csv.writer(f).writerows([("zh", "en")] + [(a + b, f"{words[a]} {words[b]}") for a in words for b in words] * 8)
        command = [str(tmp_path / "pairs.csv") if arg == "PAIRS" else arg for arg in command]
    run_dir = tmp_path / "run"
    argv = [*command, "--preset", "tiny", "--run-dir", str(run_dir)]
    save = common.Backup._save_model

    def saved_then_stopped(self):  # a kill just after the first backup
        save(self)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(common.Backup, "_save_model", saved_then_stopped)
        assert main(argv) == 130
    assert "Run the same command again to resume" in capsys.readouterr().out
    recipe = (run_dir / "tfllm" / "recipe.json").read_text()
    _another_tfllms_tiny(monkeypatch, task)
    assert main(argv) == 0
    _assert_resumed_with_the_recorded_recipe(run_dir, recipe, capsys.readouterr().out)


def test_a_backup_of_another_model_says_the_run_was_started_by_another_version_and_adds_no_logs(tmp_path):
    """Another tfllm version's backup (its model has layers this one's lacks, or not these): the message said
    the backup "cannot be read" and to delete it, Keras warned "Skipping nested container" twice, and the
    failed resume left a new TensorBoard event file in the interrupted run. Now one line says the run was
    started by another version and how to finish it or start over; the logs are left as they were."""
    import warnings

    from tfllm.training import common

    def model(*widths):
        inputs = keras.Input((3,))
        outputs = inputs
        for width in widths:
            outputs = keras.layers.Dense(width)(outputs)
        net = keras.Model(inputs, outputs)
        net.compile(optimizer="adam", loss="mse")
        return net

    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    run_dir = tmp_path / "run"
    old = model(1)
    backup = common.Backup(str(run_dir / "backup"))
    backup.set_model(old)
    backup.on_epoch_end(0)  # the backup an older version's model wrote
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserInputError) as error:
            model(4, 1).fit(x, y, epochs=2, verbose=0, callbacks=common.make_callbacks(str(run_dir)))
    message = str(error.value)
    assert "was started by another tfllm version" in message and "Finish it with the tfllm version" in message
    assert "cannot be read" not in message
    assert not [w for w in caught if "Skipping nested container" in str(w.message)]
    assert not (run_dir / "logs").exists()  # TensorBoard opened no event file


def test_the_caches_of_loaded_runs_keep_the_few_most_recently_used(tmp_path):
    """`tfllm.predict`'s (explain's, generate's, translate's) cache kept every run used for the life of the
    process: a notebook going through ten runs grew by ~25 MB a run. It keeps the last RUNS_KEPT, and
    `tfllm.clear_cache()` drops them all."""
    import tfllm
    from tfllm import runs

    loads, cache = [], {}

    def load(run_dir):
        loads.append(os.path.basename(run_dir))
        return object()

    names = [f"run{i}" for i in range(runs.RUNS_KEPT + 2)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.weights.h5").write_bytes(b"weights")
    first = runs.load_cached(cache, str(tmp_path / names[0]), load)
    for name in names[1:]:
        runs.load_cached(cache, str(tmp_path / name), load)
        assert runs.load_cached(cache, str(tmp_path / names[0]), load) is first  # used again: kept
    assert len(cache) == runs.RUNS_KEPT and loads == names
    kept = sorted(os.path.basename(key) for key in cache)
    assert kept == sorted([names[0], *names[-(runs.RUNS_KEPT - 1):]])  # the least recently used went
    runs.load_cached(cache, str(tmp_path / names[1]), load)  # one that went is loaded again
    assert loads == names + [names[1]]
    tfllm.clear_cache()
    assert cache == {}


@pytest.mark.parametrize("function,args", [("translate", (["你好"],)), ("generate", (["ROMEO:"],)),
                                           ("explain", ("a good film",)), ("predict", (["a good film"],))])
def test_an_argument_the_python_calls_do_not_take_is_one_line_naming_those_they_do(function, args, tmp_path):
    """`tfllm.translate(run, ["你好"], max_length=5)` raised Python's "unexpected keyword argument" TypeError, where
    `tfllm.evaluate(run, text_colum="x")` named the options it takes: refused the same way, before loading."""
    import tfllm

    with pytest.raises(UserInputError, match=rf"^{function} takes no option 'max_length'; it takes .*\bseed\b"
                       if function in ("translate", "generate") else rf"^{function} takes no option 'max_length'; "):
        getattr(tfllm, function)(str(tmp_path / "missing"), *args, max_length=5)


def test_a_binary_models_one_column_of_probabilities_is_that_of_the_second_label():
    """A binary model with one sigmoid unit (KerasHub's TextClassifier, num_classes=1) gives `[n, 1]`: P(second
    label). classification_report refused its shape."""
    from tfllm.evaluation import classification_report

    positive = np.array([[0.1], [0.8], [0.4], [0.7]])
    one_column = classification_report([0, 1, 1, 0], positive, ["neg", "pos"])
    assert one_column == classification_report([0, 1, 1, 0], np.hstack([1 - positive, positive]), ["neg", "pos"])
    assert one_column["accuracy"] == 0.5 and one_column["roc_auc"] == 0.75
    with pytest.raises(UserInputError, match=r"One column of probabilities is P\('pos'\), from 0 to 1; .*sigmoid"):
        classification_report([0, 1], [[-2.0], [3.0]], ["neg", "pos"])  # logits
    with pytest.raises(UserInputError, match=r"shape \(2, 3\)"):  # one column is two classes' only
        classification_report([0, 1], [[0.2], [0.8]], ["a", "b", "c"])


def test_overwrite_never_deletes_what_a_run_does_not_write_nor_a_run_inside_another(tmp_path, tiny_classifier_run,
                                                                                      capsys):
    """`train --run-dir runs/n1/inner` was accepted inside a finished run, and `train --run-dir runs/n1
    --overwrite` then deleted that run and the user's runs/n1/NOTES.txt without a word."""
    import shutil

    from tfllm import cli, runs

    outer = tmp_path / "n1"
    shutil.copytree(tiny_classifier_run, outer)
    train = ["train", "--task", "classify", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "400",
             "--epochs", "1"]
    assert cli.main([*train, "--run-dir", str(outer / "inner")]) == 2
    assert "is inside the run in" in capsys.readouterr().err and not (outer / "inner").exists()
    (outer / "NOTES.txt").write_text("mine", encoding="utf-8")
    shutil.copytree(tiny_classifier_run, outer / "inner")  # as an older tfllm let it be trained
    assert cli.main([*train, "--run-dir", str(outer), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds NOTES.txt, inner, which a tfllm run does not write; --overwrite would delete them" in err
    assert err.count("\n") == 1
    assert (outer / "NOTES.txt").exists() and runs.is_finished(str(outer / "inner")) and runs.is_finished(str(outer))
    assert not os.path.exists(runs._previous(str(outer)))
    # What a run writes itself (its logs, curves, an ensemble's members, a weights shard) is its own.
    (outer / "NOTES.txt").unlink()
    shutil.rmtree(outer / "inner")
    (outer / "model_00001.weights.h5").write_bytes(b"")
    assert runs.foreign_entries(str(outer)) == []
    runs.check_writable(str(outer), overwrite=True)


def test_a_hidden_entry_of_the_user_s_is_foreign_but_tfllm_s_temporaries_and_file_browser_clutter_are_not(tmp_path):
    """Every hidden name counted as the run's, so `train --overwrite` deleted a `.git` or `.notes` kept in the run
    folder without a word; only tfllm's own temporaries and what file browsers and Jupyter leave are not the user's."""
    from tfllm import runs

    (tmp_path / ".git").mkdir()
    (tmp_path / ".notes").write_text("why this run", encoding="utf-8")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    runs.write_json(str(tmp_path / "metrics.json"), {})  # leaves nothing hidden behind
    (tmp_path / ".metrics.json.abc123.tmp").write_text("{", encoding="utf-8")  # as a killed write_text leaves
    assert runs.foreign_entries(str(tmp_path)) == [".git", ".notes"]
    with pytest.raises(UserInputError, match=r"holds \.git, \.notes, which a tfllm run does not write"):
        runs.check_no_foreign_entries(str(tmp_path))


@pytest.mark.slow
def test_a_run_interrupted_after_an_epochs_validation_logs_that_epochs_evaluation_once(tmp_path):
    """A Ctrl-C after an epoch's validation but before its backup (in `pretrain --objective causal`, while the
    epoch's text sample is generated): Keras had written the validation's `evaluation_loss_vs_iterations` point
    as the validation ended, and the resumed run, repeating the epoch, wrote a second one at the same step."""
    import glob

    import tensorflow as tf

    from tfllm.training.common import make_callbacks

    class StoppedInEpoch2(keras.callbacks.Callback):  # placed where causal_lm's TextSamples is: before them all
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    def fit(*before):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
        model.fit(x, y, validation_data=(x, y), batch_size=4, epochs=4, verbose=0,
                  callbacks=[*before, *make_callbacks(str(tmp_path), checkpoint=False)])

    with pytest.raises(KeyboardInterrupt):
        fit(StoppedInEpoch2())
    fit()  # resumed from epoch 1's backup
    steps = {}
    for file in sorted(glob.glob(str(tmp_path / "logs" / "validation" / "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(file):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert steps["evaluation_loss_vs_iterations"] == [2, 4, 6, 8]  # each epoch's 2 steps, once
    assert steps["epoch_loss"] == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_bad_dtype_or_kind_names_the_argument_not_a_damaged_run(tiny_classifier_run):
    """`load_task(run, dtype="bogus")` and a kind that does not fit the run said the (healthy) run "cannot be
    loaded ...; restore its files from a copy, or train it again"; kind="foo" was an AttributeError."""
    import keras_hub

    from tfllm import runs

    with pytest.raises(UserInputError, match=r"^dtype='bogus' is not a Keras dtype policy; pass one such as"):
        runs.load_task(tiny_classifier_run, dtype="bogus")
    for kind in ("foo", keras_hub.models.Task):
        with pytest.raises(UserInputError, match=r"is not a KerasHub task class; pass one such as"):
            runs.load_task(tiny_classifier_run, kind=kind)
    with pytest.raises(UserInputError, match=r"holds a text classifier \(a TextClassifier\), which kind=CausalLM "
                                             r"cannot load; pass kind=keras_hub.models.TextClassifier or leave kind "
                                             r"out, or use tfllm.predict\.$"):
        runs.load_task(tiny_classifier_run, kind=keras_hub.models.CausalLM)
    assert isinstance(runs.load_task(tiny_classifier_run, kind=keras_hub.models.TextClassifier, dtype="float32"),
                      keras_hub.models.TextClassifier)


def test_an_interrupted_run_tells_a_python_caller_to_call_its_training_function_again(tmp_path, monkeypatch):
    """`tfllm.predict` on an interrupted run said "Run its training command again": a notebook ran no command."""
    from tfllm import errors, runs

    run_dir = str(tmp_path / "p")
    runs.write_json(runs.path(run_dir, runs.RUN_CONFIG), {})  # interrupted after its first backup
    runs.write_json(os.path.join(runs.path(run_dir, runs.BACKUP), "training_metadata.json"), {})
    with pytest.raises(UserInputError, match=r"did not finish\. Call its training function again with the same "
                                             r"arguments to resume it\.$"):
        runs.check_finished(run_dir)
    monkeypatch.setattr(errors, "command_running", True)
    with pytest.raises(UserInputError, match=r"did not finish\. Run its training command again to resume it\.$"):
        runs.check_finished(run_dir)


@pytest.mark.slow
def test_a_run_trained_into_a_tilde_path_loads_from_the_same_path(tiny_classifier_run, tmp_path, monkeypatch):
    """`TrainConfig(run_dir="~/py run é")` trains into the home folder; every Python function that opens a run
    then said "'~/py run é' is not a tfllm run directory" of that same path (runs.run_dir_argument)."""
    import shutil

    import tfllm
    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.export.saved_model import export_classifier
    from tfllm.generation import generate

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    typed = "~/py run é"
    shutil.copytree(tiny_classifier_run, TrainConfig(data="rotten_tomatoes", run_dir=typed).run_dir)
    labels = runs.read_labels(tiny_classifier_run)
    assert tfllm.predict(typed, ["a fine film"])[0]["label"] in labels
    assert tfllm.load_run(typed)[1] == labels
    assert list(runs.load_task(typed).label_names) == labels
    assert tfllm.explain(typed, "a fine film").label in labels
    assert "accuracy" in tfllm.evaluate(typed)
    assert export_classifier(typed, "pyrev", base_dir=str(tmp_path / "sm")) == str(tmp_path / "sm" / "pyrev" / "1")
    with pytest.raises(UserInputError, match="holds a text classifier that does not generate text"):
        generate(typed, ["a fine"])  # found as the classifier it is, not "not a tfllm run directory"
    assert not (tmp_path / "~").exists()
