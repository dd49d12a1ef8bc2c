"""`tfllm tune`: a KerasTuner search whose trials are tfllm runs (HParams, the best run, resuming, bad input)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import main_in_process

from tfllm.cli import main

SPACE = {"hidden_dim": [8, 16], "learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log"}}


def _tune(run_dir, space_file, *extra):
    return main(["tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "200",
                 "--space", str(space_file), "--run-dir", str(run_dir), *map(str, extra)])


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def _plugin_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return accumulator.PluginTagToContent("hparams")


@pytest.mark.slow
def test_a_search_that_runs_out_of_values_says_so(tmp_path, capsys):
    """A space of one combination ran 1 of --max-trials 2 trials and ended without a word (not by time)."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"hidden_dim": [8]}))
    assert _tune(tmp_path / "search", space, "--max-trials", 2, "--set", "epochs=1") == 0
    out = capsys.readouterr().out
    assert "The search ended after 1 of --max-trials 2 trials: the space has no other combination" in out, out


@pytest.mark.slow
def test_two_trials_write_hparams_a_best_run_and_continue(tmp_path, space_file):
    from tensorboard.plugins.hparams import plugin_data_pb2

    from tfllm import runs
    from tfllm.training.classifier import load_run, predict_probabilities

    run_dir = tmp_path / "search"
    # --max-minutes passes during the first trial: no second one starts.
    assert _tune(run_dir, space_file, "--max-trials", 5, "--max-minutes", 0.001) == 0
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert len(summary["trials"]) == 1 and summary["stopped_by_max_minutes"]
    first = run_dir / "trials" / "trial_000" / "metrics.json"
    first_mtime = os.path.getmtime(first)

    # The same command continues the search up to --max-trials; the finished trial is not rerun.
    assert _tune(run_dir, space_file, "--max-trials", 2) == 0
    assert os.path.getmtime(first) == first_mtime
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert [t["trial"] for t in summary["trials"]] == ["trial_000", "trial_001"]
    assert not summary["stopped_by_max_minutes"]
    for trial in summary["trials"]:
        assert trial["status"] == "COMPLETED"
        assert set(trial["values"]) == set(SPACE)
        assert trial["values"]["hidden_dim"] in (8, 16) and 1e-3 <= trial["values"]["learning_rate"] <= 1e-2
        assert 0 <= trial["objective"] <= 1 and 0 <= trial["test_accuracy"] <= 1 and trial["seconds"] > 0
        assert runs.is_finished(run_dir / trial["run_dir"])
    best = summary["best"]
    assert best["objective"] == max(t["objective"] for t in summary["trials"])
    assert best["copied_to"] == "best"

    # The HParams dashboard: the experiment (searched settings, objective) in DIR/logs, a session per trial.
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        _plugin_tags(run_dir / "logs")["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos} == set(SPACE)
    assert "tuning/val_accuracy" in {m.name.tag for m in experiment.metric_infos}
    session = plugin_data_pb2.HParamsPluginData.FromString(
        _plugin_tags(run_dir / "trials" / "trial_001" / "logs")["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["hidden_dim"].number_value == summary["trials"][1]["values"]["hidden_dim"]

    # The best trial is a normal run: it loads and predicts like the trial it was copied from.
    model, labels, _ = load_run(str(run_dir / "best"))
    assert labels == ["rotten", "fresh"]
    original, _, _ = load_run(str(run_dir / best["run_dir"]))
    texts = ["a fine film", "dull"]
    np.testing.assert_allclose(predict_probabilities(model, texts), predict_probabilities(original, texts), atol=1e-6)
    assert not (run_dir / "best" / "logs").exists()  # one HParams session per trial

    # Another search in the same directory is refused, naming what differs.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hidden_dim": [8]}))
    assert _tune(run_dir, other, "--max-trials", 2) == 2


BAD_SPACES = {
    "unknown setting": ({"hiden_dim": [8, 16]}, "unknown setting 'hiden_dim'"),
    "empty list": ({"hidden_dim": []}, "'hidden_dim' has an empty range"),
    "min above max": ({"dropout": {"min": 0.5, "max": 0.1}}, "'dropout' has an empty range"),
    "log from zero": ({"learning_rate": {"min": 0, "max": 1e-2, "sampling": "log"}}, "needs min > 0"),
    "fractional layers": ({"num_layers": [1.5, 2]}, "'num_layers' takes whole numbers"),
    "no range": ({"dropout": {"low": 0.1}}, "'dropout' needs a list of values"),
    # KerasTuner's ValueError, a traceback
    "fractional step": ({"num_layers": {"min": 1, "max": 3, "step": 0.5}}, "'num_layers' takes whole numbers"),
    # searched as a plain list, the sampling ignored
    "values not a list": ({"hidden_dim": {"values": 8}}, "'hidden_dim': \"values\" takes a list"),  # a TypeError
    "values and sampling": ({"hidden_dim": {"values": [8, 16], "sampling": "log"}}, "takes nothing beside it"),
    # What --set refuses, refused before the first trial (it failed every trial)
    "unknown tokenizer": ({"tokenizer": ["wordpiece", "bpe"]}, "'tokenizer': Setting 'tokenizer' takes one of"),
    "dropout of 1.5": ({"dropout": {"min": 0.1, "max": 1.5}}, "'dropout' must be from 0 up to (not including) 1"),
    # KerasTuner's own checks (a log step is a factor, above 1): a ValueError traceback
    "log step of 1": ({"learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log", "step": 1}},
                      "'learning_rate': For HyperParameters.Float(name='learning_rate'), expected step > 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_exits_2_naming_the_setting(case, tmp_path, capsys):
    space, message = BAD_SPACES[case]
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    assert _tune(tmp_path / "search", path, "--max-trials", 2) == 2
    err = capsys.readouterr().err
    assert message in err and "--space" in err and err.count("\n") == 1, err
    assert not (tmp_path / "search").exists()  # nothing written


@pytest.mark.parametrize("args, message", [
    (["--max-trials", "0"], "--max-trials must be at least 1, got 0"),
    (["--max-minutes", "0"], "--max-minutes must be more than 0"),
    (["--algorithm", "grid"], "Unknown --algorithm 'grid'"),
    (["--objective", "accuracy"], "Unknown --objective 'accuracy'"),
    (["--task", "generate", "--objective", "val_accuracy"], "--objective val_accuracy is for classifiers"),
    (["--preset", "huge"], "Unknown preset 'huge'"),
    (["--set", "hiden_dim=8"], "Unknown setting(s) 'hiden_dim'"),
    # --set fixes a setting for every trial: the space's values replaced it silently.
    (["--set", "hidden_dim=8"], "--space searches 'hidden_dim' and --set fixes it for every trial"),
])
def test_bad_arguments_exit_2(args, message, tmp_path, space_file, capsys):
    assert _tune(tmp_path / "search", space_file, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "search").exists()


def test_bad_space_files_exit_2(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"hidden_dim": [8, 16]')
    for path, message in ((tmp_path / "missing.json", "does not exist"), (broken, "is not valid JSON")):
        assert _tune(tmp_path / "search", path) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err, err


def test_bad_data_fails_the_first_trial_and_leaves_nothing(tmp_path, space_file, capsys):
    code = main(["tune", "--data", str(tmp_path / "missing.csv"), "--preset", "tiny", "--space", str(space_file),
                 "--max-trials", "2", "--run-dir", str(tmp_path / "search")])
    assert code == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "search").exists()


# Another process that takes a folder as a training command does (`runs.acquire`), and holds it while
# its stdin is open (then releases it); "refused: MESSAGE" when the folder is someone else's.
HOLDER = """
import sys
from tfllm import runs
from tfllm.errors import UserInputError
try:
    runs.acquire(sys.argv[1])
except UserInputError as e:
    print(f"refused: {e}", flush=True)
    sys.exit(1)
print("held", flush=True)
sys.stdin.read()
runs.release(sys.argv[1])
"""


def test_a_search_owns_its_folder_and_a_second_one_is_refused_naming_the_first(tmp_path, space_file, capsys,
                                                                                monkeypatch):
    """`tfllm tune` took no lock where `tfllm train` takes one: two searches on one folder at once
    trampled each other's tuner state, trials and tuning.json. A search now owns its folder from before
    it reads it to its end, and another command there is refused in one line naming the owner."""
    import keras_tuner

    from tfllm import runs, tuning

    run_dir = tmp_path / "search"
    seen = []

    def trial(self, trial):  # inside the search's first trial: another process tries the folder
        other = subprocess.run([sys.executable, "-c", HOLDER, str(run_dir)], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, check=False)
        seen.append(other.stdout.strip())
        raise keras_tuner.errors.FatalError("stop here")

    monkeypatch.setattr(tuning._Search, "run", trial)
    assert _tune(run_dir, space_file, "--max-trials", 1) == 2
    assert seen == [  # the holder is a Python script: Python spelling
                    (f"refused: Run directory {str(run_dir)!r} is in use by another tfllm process "
                     f"(pid {os.getpid()}); wait for it or choose another run_dir.")]
    assert os.listdir(tmp_path) == ["space.json"]  # released: no lock file left (and no search for bad input)

    # While another process owns the folder, a search is refused before it writes anything.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        listing = sorted(os.listdir(tmp_path))
        result = main_in_process(capsys, "tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200,
                                 "--space", space_file, "--run-dir", run_dir)
        assert result.returncode == 2
        assert result.stderr == (f"tfllm: error: Run directory {str(run_dir)!r} is in use by another tfllm process "
                                 f"(pid {holder.pid}); wait for it or choose another --run-dir.\n")
        assert sorted(os.listdir(tmp_path)) == listing and not run_dir.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not os.path.exists(runs.lock_file(str(run_dir)))


def test_default_space_centres_on_the_preset():
    from tfllm.presets import resolve_preset
    from tfllm.tuning import check_space, default_space

    preset = resolve_preset("classify", "default")
    space = check_space("classify", preset, default_space("classify", preset))
    assert space["hidden_dim"] == {"values": [16, 32, 64]}
    assert space["num_layers"] == {"min": 1, "max": 2, "sampling": "linear"}
    assert space["learning_rate"]["sampling"] == "log"
    assert space["learning_rate"]["min"] < preset["learning_rate"] < space["learning_rate"]["max"]
    assert "batch_size" not in space and "bigram_buckets" not in space
    # A generator's window: sequence lengths stay above the re-encoded part (window_keep).
    generate = resolve_preset("generate", "nanogpt-cpu")
    assert default_space("generate", generate)["sequence_length"] == {"values": [64, 128]}  # not 32


@pytest.mark.parametrize("task, data", [("generate", ["shakespeare"]),
                                        ("translate", ["cedict", "--source-column", "simplified",
                                                       "--target-column", "english"])])
def test_a_loss_search_does_not_vary_the_vocabulary(task, data, tmp_path, capsys):
    """A smaller vocabulary folds rare characters into [UNK] and lowers the per-token loss: a generator search
    picked vocabulary 25 over 50, and its best run refused "ROMEO:". Its default space leaves the vocabulary
    out, and a --space that varies it is refused."""
    from tfllm.presets import resolve_preset
    from tfllm.tuning import default_space

    space = default_space(task, resolve_preset(task, "tiny"))
    assert space and not {"vocabulary_size", "tokenizer"} & set(space)
    assert "vocabulary_size" in default_space("classify", resolve_preset("classify", "tiny"))  # val_accuracy: fine
    for varied in ({"vocabulary_size": [25, 50]}, {"vocabulary_size": {"min": 25, "max": 50}},
                   {"hidden_dim": [8, 16], "tokenizer": ["char", "wordpiece"]}):
        path = tmp_path / "space.json"
        path.write_text(json.dumps(varied))
        assert main(["tune", "--task", task, "--data", *data, "--preset", "tiny", "--space", str(path),
                     "--run-dir", str(tmp_path / "search")]) == 2
        err = capsys.readouterr().err
        assert "losses of different vocabularies are not comparable" in err and "--set" in err, err
        assert err.count("\n") == 1 and not (tmp_path / "search").exists()


@pytest.mark.slow
def test_an_interrupted_search_reruns_the_interrupted_trial_with_its_values(tmp_path, space_file, monkeypatch,
                                                                           capsys):
    from tfllm import tuning

    trainer = tuning._trainer

    def interrupted_at_the_second_trial(task):
        def train(config, verbose="auto"):
            if config.run_dir.endswith("trial_001"):
                raise KeyboardInterrupt
            return trainer(task)(config, verbose=verbose)
        return train

    run_dir = tmp_path / "search"
    assert _tune(run_dir, space_file, "--max-trials", 1) == 0  # a first call: its best is in DIR/best
    best = json.loads((run_dir / "tuning.json").read_text())["best"]
    assert best["trial"] == "trial_000" and (run_dir / "best").is_dir()
    monkeypatch.setattr(tuning, "_trainer", interrupted_at_the_second_trial)
    assert _tune(run_dir, space_file, "--max-trials", 2) == 130  # the CLI's status for Ctrl-C
    summary = json.loads((run_dir / "tuning.json").read_text())
    values = summary["trials"][1]["values"]
    # tuning.json still names the run in DIR/best (it said null from the call's start, with best/ there).
    assert summary["best"] == best and (run_dir / "best").is_dir()
    first = run_dir / "trials" / "trial_000" / "metrics.json"
    mtime = os.path.getmtime(first)

    monkeypatch.undo()
    capsys.readouterr()
    assert _tune(run_dir, space_file, "--max-trials", 2) == 0
    # It said "2 trial(s) so far", counting the one cut short.
    assert f"Continuing the search in {run_dir}: 1 trial(s) completed, 1 cut short (run again)." in \
        capsys.readouterr().out
    trials = json.loads((run_dir / "tuning.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    assert trials[1]["values"] == values and os.path.getmtime(first) == mtime


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "bayesian", "hyperband"])
def test_every_algorithm_offered_runs_a_trial(algorithm, tmp_path, space_file):
    """`--algorithm bayesian`, offered by --help and the docs, ended in a traceback (ImportError: scikit-learn,
    which keras-tuner[bayesian] installs) and left a folder that refused the rerun."""
    from tfllm import tuning

    assert tuple(tuning.ALGORITHMS) == ("random", "bayesian", "hyperband")
    run_dir = tmp_path / "search"
    assert _tune(run_dir, space_file, "--algorithm", algorithm, "--max-trials", 1, "--set", "epochs=1") == 0
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED"]


@pytest.mark.slow
def test_a_trial_that_diverges_fails_alone_and_the_search_goes_on(tmp_path, capsys):
    """A trial whose learning rate made the loss NaN stopped the whole search with `train`'s message
    ("Lower the learning rate (--learning-rate)", a flag tune lacks), removed the search when it was the
    first trial, and stopped every rerun at the same trial. It now fails alone; the best is a trial that
    completed, and a search where none did is one line (KerasTuner's best was then a failed trial)."""
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"learning_rate": [3e-3, 1e13]}))
    run_dir = tmp_path / "search"
    assert _tune(run_dir, mixed, "--max-trials", 2, "--set", "epochs=1") == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "failed: Training diverged" in err, err  # one line for the failed trial
    assert "|1e+13 " not in out, out  # KerasTuner's table showed the diverged value as the best so far
    summary = json.loads((run_dir / "tuning.json").read_text())
    status = {t["values"]["learning_rate"]: t for t in summary["trials"]}
    assert status[1e13]["status"] == "FAILED" and "Training diverged" in status[1e13]["error"]
    assert "--learning-rate" not in status[1e13]["error"]
    assert status[3e-3]["status"] == "COMPLETED"
    assert summary["best"]["trial"] == status[3e-3]["trial"] and (run_dir / "best").is_dir()

    diverging = tmp_path / "diverging.json"
    diverging.write_text(json.dumps({"learning_rate": [1e13]}))
    result = main_in_process(capsys, "tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200,
                             "--space", diverging, "--max-trials", 1, "--run-dir", tmp_path / "none")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("tfllm: error: No trial completed") and "narrow --space" in last, result.stderr
    assert "--learning-rate" not in result.stderr
    assert not (tmp_path / "none" / "best").exists()
    assert json.loads((tmp_path / "none" / "tuning.json").read_text())["best"] is None


@pytest.mark.slow
def test_the_default_space_leaves_out_what_set_fixes(tmp_path):
    """`--set hidden_dim=8` without --space: the default space still searched hidden_dim (16, 32, ...) and
    the trials' values replaced the --set one, silently."""
    from tfllm import runs

    run_dir = tmp_path / "search"
    assert main(["tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "200", "--max-trials", "1",
                 "--set", "hidden_dim=8", "--set", "learning_rate=0.002", "--set", "epochs=1",
                 "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert summary["search"]["space"] and not {"hidden_dim", "learning_rate"} & set(summary["search"]["space"])
    trial = summary["trials"][0]
    assert trial["status"] == "COMPLETED" and not {"hidden_dim", "learning_rate"} & set(trial["values"])
    overrides = runs.read_config(str(run_dir / trial["run_dir"]))["overrides"]
    assert overrides["hidden_dim"] == 8 and overrides["learning_rate"] == 0.002


@pytest.mark.slow
def test_hyperband_keeps_a_generator_within_its_steps(tmp_path, capsys):
    """Hyperband's budgets count eval_intervals: `--set steps=10` with the tiny preset's interval of 20
    trained every trial 20 steps (and steps=30 never more than 20)."""
    from tfllm import runs
    from tfllm.presets import resolve_preset

    assert resolve_preset("generate", "tiny")["eval_interval"] > 10
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"dropout": [0.0, 0.1]}))
    run_dir = tmp_path / "search"
    assert main(["tune", "--task", "generate", "--data", "shakespeare", "--preset", "tiny", "--max-rows", "200",
                 "--algorithm", "hyperband", "--set", "steps=10", "--space", str(space), "--max-trials", "1",
                 "--run-dir", str(run_dir)]) == 0
    trial = json.loads((run_dir / "tuning.json").read_text())["trials"][0]
    assert trial["status"] == "COMPLETED"
    assert runs.read_config(str(run_dir / trial["run_dir"]))["overrides"]["steps"] == 10
    # The best run is named for what a generator's run is used with (it said "predict it", which predict refuses).
    out = capsys.readouterr().out
    assert "Best run (export, evaluate, generate from it)" in out and "predict" not in out


# A value the setting takes, with which no run trains: the loss becomes NaN in the first batches.
UNTRAINABLE = {"learning_rate": [1e13]}


@pytest.mark.slow  # a trial that trains until its loss diverges
def test_a_trial_with_values_no_run_takes_fails_alone(tmp_path, capsys):
    """--space values no run can train with stopped the whole search at that trial as bad input, and every
    rerun retried the same values and stopped again. That trial now fails alone. (Values outside what a
    setting takes, a dropout of 1.5, are refused before the search: BAD_SPACES.)"""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(UNTRAINABLE))
    run_dir = tmp_path / "search"
    for _ in range(2):  # the rerun says the same, and does not retry the trial
        result = main_in_process(capsys, "tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200,
                                 "--space", space, "--max-trials", 1, "--run-dir", run_dir)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        last = result.stderr.splitlines()[-1]
        assert "No trial completed" in last and "narrow --space" in last, result.stderr
        trials = json.loads((run_dir / "tuning.json").read_text())["trials"]
        assert [t["status"] for t in trials] == ["FAILED"] and "Training diverged" in trials[0]["error"]


@pytest.mark.slow  # a trial that trains until its loss diverges
def test_a_search_stopped_by_failures_in_a_row_records_them_all_and_trains_none_again(tmp_path, capsys):
    """KerasTuner stops a search after 3 failed trials in a row before it saves the third: tuning.json and its
    trial.json said RUNNING, with no error, and the same command trained those values again."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"min": 1e12, "max": 1e13}}))  # every trial diverges
    run_dir = tmp_path / "search"
    args = ("tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200, "--space", space,
            "--max-trials", 3, "--run-dir", run_dir)
    result = main_in_process(capsys, *args)
    assert result.returncode == 2 and "3 trials in a row failed" in result.stderr.splitlines()[-1], result.stderr
    trials = json.loads((run_dir / "tuning.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["FAILED"] * 3 and all("diverged" in t["error"] for t in trials)
    on_disk = sorted((run_dir / "tuner").glob("trial_*/trial.json"))
    assert [json.loads(f.read_text())["status"] for f in on_disk] == ["FAILED"] * 3
    result = main_in_process(capsys, *args)  # the same command: nothing left to train, nothing trained
    assert result.returncode == 2 and "No trial completed (3 failed" in result.stderr, result.stderr
    assert json.loads((run_dir / "tuning.json").read_text())["trials"] == trials


def test_a_search_folder_passed_as_a_run_points_to_its_best_run(tmp_path, capsys):
    """`tfllm explain/evaluate/predict SEARCH_DIR` said it was 'not a tfllm run directory' and asked for
    'the --run-dir of a training run', which is what the user had passed to tune."""
    search = tmp_path / "search"
    search.mkdir()
    (search / "tuning.json").write_text("{}")
    for command in (["explain", search, "a fine film"], ["evaluate", search], ["predict", search, "a fine film"]):
        result = main_in_process(capsys, *command)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "holds a hyperparameter search" in result.stderr and repr(str(search / "best")) in result.stderr


@pytest.mark.parametrize("command, inside", [
    (["train", "--overwrite"], "best"),
    (["train", "--overwrite"], "trials/trial_000"),
    (["train", "--ensemble", "2"], "best"),
    (["train", "--unlabeled", "rotten_tomatoes"], "best/run"),
    (["pretrain"], "best"),
])
def test_a_run_is_not_trained_inside_a_search_folder(tmp_path, capsys, command, inside):
    """`train --overwrite --run-dir SEARCH/best` was accepted (during a search and after it): the search's next
    call copied its best trial over the user's run, or a trial's folder held a run tuning.json still scored.
    Every command that writes a run refuses a folder inside a search, in one line, before writing anything."""
    search = tmp_path / "search"
    search.mkdir()
    (search / "tuning.json").write_text("{}")
    result = main_in_process(capsys, command[0], "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200,
                             *command[1:], "--run-dir", search / inside)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert (f"is inside the hyperparameter search in {str(search)!r}" in result.stderr
            and "Pass a --run-dir outside it" in result.stderr), result.stderr
    assert sorted(os.listdir(search)) == ["tuning.json"]


@pytest.mark.slow  # a trial that trains until its loss diverges
def test_a_search_on_an_edited_data_file_is_not_continued(tmp_path, capsys):
    """The data file edited between two calls: the rerun continued the search, its new trials trained on
    the new file and ranked against the old trials'. It is refused in one line, as a training's resume is."""
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"a fine film {i},good\ndull {i},bad\n" for i in range(20)))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(UNTRAINABLE))  # its trial fails in its first batches: a fast search
    args = ["tune", "--data", data, "--preset", "tiny", "--space", space, "--max-trials", 1, "--run-dir",
            tmp_path / "search"]
    assert "No trial completed" in main_in_process(capsys, *args).stderr
    assert "No trial completed" in main_in_process(capsys, *args).stderr  # the same file: continued
    # The same file spelt another way continues too (it was "a search with other settings (data differ)").
    spelt = [f"{os.path.dirname(data)}/./{os.path.basename(data)}" if arg == data else arg for arg in args]
    assert "No trial completed" in main_in_process(capsys, *spelt).stderr
    # Other settings are named as typed, with their values (it said "(overrides, seed differ)").
    result = main_in_process(capsys, *args, "--set", "hidden_dim=32", "--seed", 5)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "(--set hidden_dim differs: 32 now, not given then; --seed differs: 5 now, 1337 then)" in result.stderr
    with open(data, "a") as f:
        f.write("an edited row,good\n")
    result = main_in_process(capsys, *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"--data {str(data)!r} changed since the search" in result.stderr


def test_a_best_run_set_aside_by_a_killed_swap_comes_back(tmp_path):
    """keep_best sets DIR/best aside before swapping in the new one: a search killed in between finds the
    old best/ back on its next call (restore_best, which the search runs first), and a new best/ is not
    overwritten by a stale one."""
    from tfllm.tuning import restore_best

    (tmp_path / ".best.old").mkdir()
    (tmp_path / ".best.old" / "metrics.json").write_text("{}")
    restore_best(str(tmp_path))
    assert (tmp_path / "best" / "metrics.json").exists() and not (tmp_path / ".best.old").exists()
    (tmp_path / ".best.old").mkdir()
    restore_best(str(tmp_path))  # best/ is there: the set-aside copy is not put over it
    assert (tmp_path / "best" / "metrics.json").exists()


def test_trial_values_are_the_step_grid_as_written():
    """KerasTuner's min + k * step gave a dropout of 0.30000000000000004, trained and printed so."""
    import keras_tuner

    from tfllm.tuning import trial_values

    hp = keras_tuner.HyperParameters()
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Int("num_layers", 1, 3)
    hp.values.update({"dropout": 0.1 * 3, "tuner/epochs": 2})
    assert 0.1 * 3 != 0.3
    assert trial_values(hp) == {"dropout": 0.3, "num_layers": 1}


@pytest.fixture(scope="module")
def two_trial_search(tmp_path_factory):
    """A finished search of SPACE, two one-epoch trials (`--max-trials 2 --set epochs=1`). Tests that change it
    work on a copy (`searched_copy`)."""
    tmp = tmp_path_factory.mktemp("two_trials")
    space = tmp / "space.json"
    space.write_text(json.dumps(SPACE))
    assert _tune(tmp / "search", space, "--max-trials", 2, "--set", "epochs=1") == 0
    return tmp / "search"


def searched_copy(two_trial_search, tmp_path):
    """A copy of the shared two-trial search in tmp_path/search, to delete folders of."""
    import shutil

    return Path(shutil.copytree(two_trial_search, tmp_path / "search"))


@pytest.mark.slow
def test_a_deleted_trial_folder_is_left_out_of_the_best_run_with_a_note(two_trial_search, tmp_path, space_file,
                                                                         capsys):
    """Users delete trials/ to save disk: with the best trial's folder (and best/) deleted, the rerun of the
    same search crashed in shutil.copytree (FileNotFoundError); a deleted other trial still counted."""
    import shutil

    from tfllm import runs

    run_dir = searched_copy(two_trial_search, tmp_path)  # the search of SPACE, --max-trials 2 --set epochs=1
    best = json.loads((run_dir / "tuning.json").read_text())["best"]
    other = ({"trial_000", "trial_001"} - {best["trial"]}).pop()
    shutil.rmtree(run_dir / "best")
    shutil.rmtree(run_dir / best["run_dir"])
    capsys.readouterr()

    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    out = capsys.readouterr().out
    assert f"{best['trial']}: run folder(s) deleted; left out of the best run" in out, out
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert summary["best"]["trial"] == other and runs.is_finished(run_dir / "best")
    assert summary["num_completed"] == 1
    assert [t.get("run_deleted", False) for t in summary["trials"]] == [t["trial"] == best["trial"]
                                                                       for t in summary["trials"]]


@pytest.mark.slow
def test_a_search_whose_trial_folders_are_all_deleted_names_only_the_best_copy_it_has(two_trial_search, tmp_path,
                                                                                     space_file, capsys):
    """With every trial folder deleted, a rerun kept naming the best trial as if its folder were there (and
    printed "0 trial(s) completed" beside it); with best/ half gone too, it left best/ on disk while
    tuning.json's "best" said null, with nothing saying why."""
    import shutil

    from tfllm import runs

    run_dir = searched_copy(two_trial_search, tmp_path)  # the search of SPACE, --max-trials 2 --set epochs=1
    best = json.loads((run_dir / "tuning.json").read_text())["best"]
    shutil.rmtree(run_dir / "trials")
    capsys.readouterr()

    # best/ is the only copy left of the best trial: kept, and named with its folder marked deleted.
    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert summary["best"] == {**best, "run_deleted": True} and runs.is_finished(run_dir / "best")
    assert summary["num_completed"] == 0 and "note" not in summary

    # Half a copy (its metrics.json gone): no best run is left, and tuning.json says so once.
    os.remove(run_dir / "best" / runs.METRICS)
    capsys.readouterr()
    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "tuning.json").read_text())
    assert summary["best"] is None and not (run_dir / "best").exists()
    assert "the run folders of all 2 completed trial(s) were deleted" in summary["note"]
    assert out.count(summary["note"]) == 1 and "Best:" not in out


@pytest.mark.slow  # imports KerasTuner (TensorFlow)
def test_tied_trials_are_ranked_by_the_lower_val_loss_then_the_earlier_trial():
    """KerasTuner sorted by the objective alone, over trials in the order a rerun found their files: trials tied
    at val_accuracy 1.0 came out in another order, and a rerun that trained nothing swapped best/ to another."""
    import itertools

    from keras_tuner.engine.hyperparameters import HyperParameters
    from keras_tuner.engine.trial import Trial

    from tfllm.tuning import ranked_trials

    def trial(trial_id, score, val_loss=None, status="COMPLETED"):
        t = Trial(HyperParameters(), trial_id=trial_id, status=status)
        t.score = score
        if val_loss is not None:
            t.metrics.update("val_loss", val_loss)
        return t

    trials = [trial("00", 0.9, 0.2), trial("01", 1.0), trial("02", 1.0, 0.5), trial("03", 1.0, 0.4),
              trial("04", 1.0, 0.4), trial("05", 1.0, status="FAILED")]
    for order in itertools.permutations(trials):
        assert [t.trial_id for t in ranked_trials(order, "val_accuracy")] == ["03", "04", "02", "01", "00"]
    losses = [trial("00", 0.7), trial("01", 0.5), trial("02", 0.5)]
    for order in itertools.permutations(losses):
        assert [t.trial_id for t in ranked_trials(order, "val_loss")] == ["01", "02", "00"]


@pytest.mark.slow
def test_a_rerun_that_trains_nothing_leaves_the_best_run_as_it_is(two_trial_search, tmp_path, space_file):
    """The same command again ("2 trial(s) completed") copied a best trial into best/ again, and with tied
    objectives another one: best/ and tuning.json's "best" now stay as they are."""
    run_dir = searched_copy(two_trial_search, tmp_path)  # the search of SPACE, --max-trials 2 --set epochs=1
    before = json.loads((run_dir / "tuning.json").read_text())
    assert all(t["val_loss"] > 0 for t in before["trials"])  # the tie-break after the objective
    inode = os.stat(run_dir / "best").st_ino
    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    after = json.loads((run_dir / "tuning.json").read_text())
    assert after["best"] == before["best"] and os.stat(run_dir / "best").st_ino == inode


@pytest.mark.slow
def test_a_rerun_copies_the_best_trial_again_over_another_trial_and_refuses_to_delete_a_users_run(
        two_trial_search, tmp_path, space_file, capsys):
    """best/ replaced by hand (another trial copied there): a rerun that trained nothing still reported the best
    trial as best/ and left the other model in it. It copies the best trial again, saying so; a finished run that
    is none of the trials (the user's) is refused in one line rather than deleted."""
    import shutil

    from tfllm import runs

    def identity(folder):  # a run's settings (they name the folder it was trained in) and figures
        return [Path(runs.path(str(folder), name)).read_text() for name in (runs.RUN_CONFIG, runs.METRICS)]

    run_dir = searched_copy(two_trial_search, tmp_path)  # the search of SPACE, --max-trials 2 --set epochs=1
    best = json.loads((run_dir / "tuning.json").read_text())["best"]
    other = ({"trial_000", "trial_001"} - {best["trial"]}).pop()
    shutil.rmtree(run_dir / "best")
    shutil.copytree(run_dir / "trials" / other, run_dir / "best")
    capsys.readouterr()
    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    out = capsys.readouterr().out
    assert f"best/ held {other}'s run, not the best trial's: replaced by {best['trial']}." in out, out
    assert identity(run_dir / "best") == identity(run_dir / best["run_dir"])
    assert json.loads((run_dir / "tuning.json").read_text())["best"]["trial"] == best["trial"]

    mine = tmp_path / "mine"
    assert main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "200", "--epochs", "1",
                 "--run-dir", str(mine)]) == 0
    shutil.rmtree(run_dir / "best")
    shutil.copytree(mine, run_dir / "best")
    result = main_in_process(capsys, "tune", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", 200,
                             "--space", space_file, "--max-trials", 2, "--set", "epochs=1", "--run-dir", run_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{str(run_dir / 'best')!r} holds a run that is none of this search's trials" in result.stderr
    assert identity(run_dir / "best") == identity(mine) and runs.is_finished(str(run_dir / "best"))


@pytest.mark.slow
def test_trials_tied_on_the_objective_are_named_with_the_tie_break(two_trial_search, tmp_path, space_file, capsys):
    """On small data the blend's val_accuracy, fitted on the same validation rows, saturates: trials tied at 1.0
    and one was picked without a word. Now one line names them and how best/ was chosen."""
    run_dir = searched_copy(two_trial_search, tmp_path)  # the search of SPACE, --max-trials 2 --set epochs=1
    for path in (run_dir / "tuner").glob("trial_*/trial.json"):  # the two trials tied, as saturated ones are
        trial = json.loads(path.read_text())
        trial["score"] = 1.0
        trial["metrics"]["metrics"]["val_accuracy"]["observations"] = [{"value": [1.0], "step": 0}]
        path.write_text(json.dumps(trial))
    trials = json.loads((run_dir / "tuning.json").read_text())["trials"]
    lower = min(trials, key=lambda t: t["val_loss"])["trial"]
    capsys.readouterr()
    assert _tune(run_dir, space_file, "--max-trials", 2, "--set", "epochs=1") == 0
    out, err = capsys.readouterr()
    assert json.loads((run_dir / "tuning.json").read_text())["best"]["trial"] == lower
    assert (f"tfllm: warning: trial_000, trial_001 tie at val_accuracy=1.0000; best/ is {lower}, the one with the "
            "lowest val_loss (then the earliest); the objective is the naive-Bayes blend's accuracy on the "
            "validation rows it was fitted on") in err, err
    assert err.count("tie at") == 1 and f"Best: {lower} val_accuracy=1.0000" in out
