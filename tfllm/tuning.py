"""`tfllm tune`: hyperparameter search over a preset's settings, on KerasTuner; every trial is a normal run.

KerasTuner does the searching (random, Bayesian optimisation, Hyperband) and
keeps the search's state on disk, so an interrupted search continues where it
stopped; tfllm only supplies `run_trial`, which trains one ordinary run with
the trial's values as `TrainConfig.overrides` and reports its objective. The
search directory:

    DIR/
      tuning.json            every trial (values, objective, val/test figures, seconds) and the best
      best/                  a copy of the best trial's run (without logs/): export and evaluate it, then
                             predict (classifier) or generate (generator) with it
      trials/trial_000/ ...  one finished run per trial, TensorBoard logs included
      logs/                  the HParams dashboard's experiment (tensorboard --logdir DIR)
      tuner/                 KerasTuner's state (oracle.json, trial_*/trial.json)

The space comes from the preset (`default_space`), or from a small JSON/YAML
file (`read_space`): with `--space` only the settings it names are searched.
"""

import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import time

from tfllm import runs
from tfllm.datasets import data_fingerprint, same_data
from tfllm.errors import UserInputError, warn

ALGORITHMS = ("random", "bayesian", "hyperband")
OBJECTIVES = {"val_loss": "min", "val_accuracy": "max"}
# The settings a default space searches, where the preset has them.
TUNABLE = ("num_layers", "num_decoder_layers", "hidden_dim", "num_heads", "intermediate_dim", "dropout",
           "learning_rate", "vocabulary_size", "sequence_length")
# A generator's or translator's val_loss is per token of its own vocabulary: a smaller one folds rare characters
# into [UNK] and scores a lower loss for it (a search picked vocabulary 25 over 50, and its best run refused
# "ROMEO:"). Losses of different vocabularies are not comparable, so these searches do not vary them.
VOCABULARY_SETTINGS = ("vocabulary_size", "tokenizer")
TRIALS, BEST, PROJECT, LOGS, SUMMARY = "trials", "best", "tuner", "logs", "tuning.json"
SAMPLINGS = ("linear", "log", "reverse_log")


# --------------------------------------------------------------------------- the search space


def _halve_double(value, keep=lambda v: v >= 1):
    return sorted({v for v in (value // 2, value, value * 2) if keep(v)})


def default_space(task, preset):
    """`{setting: spec}` around the preset's values: sizes halved and doubled, one layer more or fewer,
    dropout 0-0.5, the learning rate within 3x either way (log scale). A generator's or translator's
    vocabulary is kept (`VOCABULARY_SETTINGS`)."""
    space = {}
    for key in TUNABLE:
        if task != "classify" and key in VOCABULARY_SETTINGS:
            continue
        value = preset.get(key)
        if value is None or isinstance(value, bool):
            continue
        if key in ("num_layers", "num_decoder_layers"):
            space[key] = {"min": max(1, value - 1), "max": value + 1}
        elif key == "dropout":
            space[key] = {"min": 0.0, "max": 0.5}
        elif key == "learning_rate":
            space[key] = {"min": value / 3, "max": value * 3, "sampling": "log"}
        elif key == "sequence_length" and preset.get("window_keep"):
            # A generator re-encodes its last `window_keep` tokens when the window is full: keep it shorter.
            space[key] = {"values": _halve_double(value, keep=lambda v: v > preset["window_keep"])}
        else:
            space[key] = {"values": _halve_double(value)}
    return space


def read_space(path):
    """The `--space` file's dict (JSON, or YAML for .yaml/.yml), or a one-line error naming the file."""
    if not os.path.isfile(path):
        raise UserInputError(f"--space {path!r} does not exist; pass a JSON file like "
                             '{"hidden_dim": [32, 64], "dropout": {"min": 0.0, "max": 0.5}}.')
    is_yaml = path.endswith((".yaml", ".yml"))
    syntax_errors = (ValueError,)  # JSON syntax, bad UTF-8
    if is_yaml:
        try:
            import yaml  # optional: PyYAML, where installed
        except ImportError:
            raise UserInputError(f"--space {path!r} is YAML, but PyYAML is not installed; use JSON.") from None
        syntax_errors += (yaml.YAMLError,)
    try:
        with open(path, encoding="utf-8") as f:
            value = yaml.safe_load(f) if is_yaml else json.load(f)
    except syntax_errors as e:
        raise UserInputError(f"--space {path!r} is not valid {'YAML' if is_yaml else 'JSON'}: "
                             f"{str(e).splitlines()[0]}") from None
    if not isinstance(value, dict) or not value:
        raise UserInputError(f"--space {path!r} must be a non-empty object of settings, e.g. "
                             '{"hidden_dim": [32, 64]}.')
    return value


def _check_value(task, key, value, where):
    """A one-line error, naming the space's entry, for a value `--set` would refuse."""
    from tfllm.presets import checked_setting

    try:
        checked_setting(task, key, value)
    except UserInputError as e:
        raise UserInputError(f"{where}: {e}") from None


def check_space(task, preset, space, source="--space"):
    """`space` in canonical form (`{"values": [...]}` or `{"min", "max", "sampling"[, "step"]}` per setting),
    or a one-line error naming the setting: unknown, an empty range, or values of the wrong kind."""
    from tfllm.presets import known_settings

    known = known_settings(task)
    canonical = {}
    for key, spec in space.items():
        where = f"{source}: {key!r}"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known settings: {', '.join(sorted(known))}."
            raise UserInputError(f"{source}: unknown setting {key!r} for task {task!r}.{hint}")
        integer = isinstance(preset.get(key), int) and not isinstance(preset.get(key), bool)
        if not isinstance(spec, (list, dict)):
            spec = [spec]  # one value: the setting is fixed for every trial
        if isinstance(spec, dict) and "values" in spec:
            if set(spec) != {"values"}:  # a list of values is searched as it is: sampling, min, step were ignored
                raise UserInputError(f"{where}: a list of values takes nothing beside it, got {spec!r}; give "
                                     "either \"values\" or {\"min\", \"max\", \"sampling\", \"step\"}.")
            spec = spec["values"]
            if not isinstance(spec, list):  # a TypeError traceback ('int' object is not iterable)
                raise UserInputError(f"{where}: \"values\" takes a list, got {spec!r}; e.g. {{\"values\": [{spec!r}]}}.")
        if isinstance(spec, list):
            if not spec:
                raise UserInputError(f"{where} has an empty range ([]); list at least one value.")
            if not all(isinstance(v, (int, float, str, bool)) for v in spec):
                raise UserInputError(f"{where}: values must be numbers, strings or booleans, got {spec!r}.")
            if integer and not all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in spec):
                raise UserInputError(f"{where} takes whole numbers, got {spec!r}.")
            kinds = {type(v) for v in spec}
            if kinds == {int, float}:  # KerasTuner's Choice takes one type
                spec = [float(v) for v in spec]
            elif len(kinds) > 1:
                raise UserInputError(f"{where}: values must all be of one kind, got {spec!r}.")
            for v in spec:  # what --set would refuse (a dropout of 1.5, an unknown tokenizer) fails every trial
                _check_value(task, key, v, where)
            canonical[key] = {"values": [int(v) if integer else v for v in dict.fromkeys(spec)]}
            continue
        unknown = sorted(set(spec) - {"min", "max", "sampling", "step"})
        if unknown or "min" not in spec or "max" not in spec:
            raise UserInputError(f"{where} needs a list of values or {{\"min\": ..., \"max\": ...}} "
                                 f"(optional \"sampling\": linear|log, \"step\"), got {spec!r}.")
        low, high = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
            raise UserInputError(f"{where}: min and max must be numbers, got {low!r} and {high!r}.")
        if low > high:
            raise UserInputError(f"{where} has an empty range: min {low} > max {high}.")
        sampling = spec.get("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise UserInputError(f"{where}: unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}.")
        if sampling != "linear" and low <= 0:
            raise UserInputError(f"{where}: {sampling} sampling needs min > 0, got {low}.")
        if integer and not all(float(v).is_integer() for v in (low, high)):
            raise UserInputError(f"{where} takes whole numbers, got min {low} and max {high}.")
        for v in (low, high):
            _check_value(task, key, v, where)
        out = {"min": int(low) if integer else float(low), "max": int(high) if integer else float(high),
               "sampling": sampling}
        if spec.get("step") is not None:
            step = spec["step"]
            if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0:
                raise UserInputError(f"{where}: step must be a positive number, got {step!r}.")
            if integer and not float(step).is_integer():  # KerasTuner's ValueError, a traceback
                raise UserInputError(f"{where} takes whole numbers, got step {step}.")
            out["step"] = int(step) if integer else step
        canonical[key] = out
    return canonical


def _fixed(spec):
    """Whether a canonical space entry has one value only."""
    return len(spec["values"]) == 1 if "values" in spec else spec["min"] == spec["max"]


def hyperparameters(space):
    """A `keras_tuner.HyperParameters` of the canonical space (ints stay ints)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for key, spec in space.items():
        try:
            if "values" in spec:
                hp.Choice(key, spec["values"])
            elif isinstance(spec["min"], int):
                hp.Int(key, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])
            else:
                hp.Float(key, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"])
        except ValueError as e:  # what KerasTuner refuses beyond check_space (a log step <= 1): was a traceback
            raise UserInputError(f"--space: {key!r}: {str(e).splitlines()[0]}") from None
    return hp


# --------------------------------------------------------------------------- one trial = one run


def _trainer(task):
    if task == "classify":
        from tfllm.training.classifier import train_classifier

        return train_classifier
    if task == "translate":
        from tfllm.training.seq2seq import train_seq2seq

        return train_seq2seq
    from tfllm.training.causal_lm import train_causal_lm

    return train_causal_lm


def _lowest_logged_val_loss(run_dir):
    """The lowest per-epoch validation loss Keras' TensorBoard callback logged (the epoch whose weights the run keeps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(os.path.join(run_dir, runs.LOGS, "validation"), size_guidance={"tensors": 0})
    accumulator.Reload()
    if "epoch_loss" not in accumulator.Tags()["tensors"]:
        return float("nan")
    return min(float(tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors("epoch_loss"))


def trial_results(task, run_dir, objective):
    """`{objective: value, ...}` of a finished trial run: what KerasTuner ranks by, and what tuning.json shows."""
    metrics = runs.read_json(runs.path(run_dir, runs.METRICS))
    results = {}
    if task == "classify":
        results.update(val_accuracy=metrics["val"]["accuracy"], test_accuracy=metrics["test"]["accuracy"],
                       parameters=metrics["parameters"])
    elif task == "translate":
        results.update(val_chrf=metrics["val"].get("chrf"), test_chrf=metrics["test"].get("chrf"),
                       parameters=metrics["parameters"])
    # A generator's metrics.json has the loss on its whole validation text; the others log it per epoch. A
    # classifier ranked by accuracy records it too: it breaks ties of the objective (`ranked_trials`).
    loss = metrics["val"].get("loss") if task == "generate" else None
    results["val_loss"] = loss if loss is not None else _lowest_logged_val_loss(run_dir)
    if objective != "val_loss" and not math.isfinite(results["val_loss"]):
        del results["val_loss"]  # no logged loss: the tie-break goes on to the trial's number
    return {k: v for k, v in results.items() if v is not None}


def ranked_trials(trials, objective):
    """The completed ones of KerasTuner `trials`, best first: by the objective, then the lower validation loss,
    then the earlier trial. KerasTuner sorts by the objective alone, over its trials in the order a rerun finds
    their files on disk, so tied trials (classifiers' val_accuracy of 1.0 on small data) came out in another
    order and a rerun that trained nothing swapped best/ to another model."""
    sign = -1 if OBJECTIVES[objective] == "max" else 1

    def key(trial):
        loss = trial.metrics.get_last_value("val_loss") if trial.metrics.exists("val_loss") else None
        return (sign * trial.score, loss if loss is not None and math.isfinite(loss) else math.inf,
                int(trial.trial_id))

    return sorted((t for t in trials if t.status == "COMPLETED" and t.score is not None), key=key)


def _write_objective(run_dir, objective, value):
    """The objective as a scalar beside the run's HParams session, so the dashboard shows it as a column."""
    import tensorflow as tf

    from tfllm.training.reporting import once_writer

    with once_writer(os.path.join(run_dir, runs.LOGS), "objective"):  # once, also when a rerun writes it again
        tf.summary.scalar(f"tuning/{objective}", value, step=0)


def write_hparams_config(log_dir, task, space, objective):
    """The HParams dashboard's experiment: the searched settings with their domains, and the metric columns."""
    from tensorboard.plugins.hparams import api as hp

    from tfllm.training.reporting import VOCABULARY_CAP, once_writer

    hparams = []
    for key, spec in space.items():
        if "values" in spec:
            domain = hp.Discrete(spec["values"])
        elif isinstance(spec["min"], int):
            domain = hp.IntInterval(spec["min"], spec["max"])
        else:
            domain = hp.RealInterval(float(spec["min"]), float(spec["max"]))
        # A trial's row logs the searched cap as `vocabulary_cap`; its `vocabulary_size` is the tokenizer's own.
        hparams.append(hp.HParam(VOCABULARY_CAP if key == "vocabulary_size" else key, domain))
    extra = {"classify": ("final/val_accuracy", "final/test_accuracy"), "translate": ("final/val_chrf", "final/test_chrf"),
             "generate": ("final/val_perplexity",)}[task]
    metrics = [hp.Metric(f"tuning/{objective}", display_name=objective)]
    metrics += [hp.Metric(tag, display_name=tag.split("/")[1]) for tag in extra if tag != f"final/{objective}"]
    with once_writer(log_dir, "hparams_config"):  # a continued search writes it again: one copy
        hp.hparams_config(hparams=hparams, metrics=metrics)


def trial_dir(search_dir, trial_id):
    return os.path.join(search_dir, TRIALS, f"trial_{int(trial_id):03d}")


# --------------------------------------------------------------------------- the search


class _OutOfTime(Exception):
    """--max-minutes passed: start no further trial."""


def _tuner_class():
    import keras_tuner

    class RunTuner(keras_tuner.Tuner):
        """A KerasTuner `Tuner` whose trials are tfllm training runs (no hypermodel: `run_trial` trains)."""

        def __init__(self, search, **kwargs):
            self.search_settings = search
            super().__init__(**kwargs)

        def pre_create_trial(self):
            # --max-minutes: start no new trial after the deadline (this call's first trial always runs).
            # KerasTuner has no time limit; its loop ends on an exception from this hook.
            s = self.search_settings
            if s.deadline is not None and time.monotonic() > s.deadline and s.trials_run:
                s.stopped_by_time = True
                raise _OutOfTime()

        def run_trial(self, trial, *args, **kwargs):
            self.search_settings.trials_run += 1
            return self.search_settings.run(trial)

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self.search_settings.write_summary(self.oracle)  # tuning.json lists the running trial too

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            self.search_settings.write_summary(self.oracle)
            if trial.message:
                # Its traceback is kept in KerasTuner's trial.json: named where the error was not foreseen.
                where = "" if trial.status == "FAILED" else (
                    f" (traceback: {os.path.join(self.search_settings.directory, PROJECT, f'trial_{trial.trial_id}')}"
                    "/trial.json)")
                print(f"{os.path.basename(trial_dir(self.search_settings.directory, trial.trial_id))} failed: "
                      f"{_last_error(trial.message)}{where}", file=sys.stderr)

    return RunTuner


def trial_values(hyperparameters):
    """A trial's settings (not KerasTuner's own `tuner/...` entries), with floats on a `step` grid as written:
    KerasTuner computes them as min + k * step, so a dropout of 0.3 trained, and was shown, as
    0.30000000000000004."""
    return {k: float(f"{v:.12g}") if isinstance(v, float) else v
            for k, v in hyperparameters.values.items() if not k.startswith("tuner/")}


@dataclasses.dataclass
class _Search:
    """What one `tune` call searches, and the per-trial work `RunTuner` delegates to it."""

    config: object  # TrainConfig: data flags, preset, seed, fixed overrides; run_dir = the search directory
    space: dict
    objective: str
    algorithm: str
    verbose: int = 1
    deadline: float | None = None
    stopped_by_time: bool = False
    trials_run: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    best: dict | None = None  # the row of the run in DIR/best, as copied there last
    held: str | None = None  # the trial whose run DIR/best holds when this call started (`held_by_best`)
    data_sha256: str | None = None  # the data file's when this call started (None: a bundled name)

    @property
    def directory(self):
        return self.config.run_dir

    def settings(self):
        """What must match for a rerun to continue this search (max trials and minutes may change)."""
        c = self.config
        return {"task": c.task, "data": c.data, "preset": c.preset, "text_column": c.text_column,
                "label_column": c.label_column, "split_column": c.split_column, "source_column": c.source_column,
                "target_column": c.target_column, "labels": c.labels, "max_rows": c.max_rows, "seed": c.seed,
                "overrides": c.overrides, "algorithm": self.algorithm, "objective": self.objective, "space": self.space,
                "data_sha256": self.data_sha256}

    def run(self, trial):
        import keras_tuner

        budget = trial.hyperparameters.values.get("tuner/epochs")  # Hyperband's: that many epochs (no warm start)
        values = trial_values(trial.hyperparameters)
        overrides = {**self.config.overrides, **values}
        if budget is not None:
            if self.config.task == "generate":
                # Budgets count eval_intervals; the last may be cut short, so as to stay within the run's steps
                # (--set steps=10 with an interval of 20 trained 20 steps).
                base = _base_preset(self.config)
                overrides["steps"] = min(int(budget) * base["eval_interval"], base["steps"])
            else:
                overrides["epochs"] = int(budget)
        run_dir = trial_dir(self.directory, trial.trial_id)
        start = time.monotonic()
        try:  # the preset with --set alone was checked before the search: an error here is the trial's values'
            _base_preset(dataclasses.replace(self.config, overrides=overrides))
        except UserInputError as e:
            # This trial fails, the search goes on. As bad input it stopped the search, and every rerun
            # retried the same values and stopped again.
            raise keras_tuner.errors.FailedTrialError(f"Values {values} cannot be trained: {e}") from None
        # A trial whose run finished before an interruption is not trained again.
        if not runs.is_finished(run_dir):
            from tfllm.training.common import TrainingDiverged  # lazy: TensorFlow, as the trainers

            config = dataclasses.replace(self.config, run_dir=run_dir, overrides=overrides, overwrite=False)
            try:
                _trainer(config.task)(config, verbose=2 if self.verbose else 0)
            except TrainingDiverged:
                # This trial's values cannot train (a learning rate too high, most often): it fails, the search
                # goes on. As a UserInputError it stopped the search, removed it if it was the first trial,
                # and stopped every rerun at the same trial; its message names `train`'s --learning-rate.
                raise keras_tuner.errors.FailedTrialError(
                    f"Training diverged (the loss became NaN or infinite) with {values}: too high a "
                    "learning_rate for them") from None
            except UserInputError as e:
                # Bad data or settings fail every trial alike: stop the search (KerasTuner would
                # count the failure and carry on) and say why.
                raise keras_tuner.errors.FatalError(str(e)) from e
        results = trial_results(self.config.task, run_dir, self.objective)
        if not math.isfinite(results.get(self.objective, float("nan"))):
            raise keras_tuner.errors.FailedTrialError(f"{run_dir} has no finite {self.objective}")
        _write_objective(run_dir, self.objective, results[self.objective])
        results["seconds"] = round(time.monotonic() - start, 1)
        return results

    def summary(self, oracle, best=None):
        trials, deleted = [], _deleted_trials(self.directory, oracle)
        for trial_id in sorted(oracle.trials, key=int):
            trial = oracle.trials[trial_id]
            metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
            if "parameters" in metrics:  # KerasTuner stores every metric as a float
                metrics["parameters"] = int(metrics["parameters"])
            row = {
                "trial": os.path.basename(trial_dir(self.directory, trial_id)),
                "run_dir": os.path.relpath(trial_dir(self.directory, trial_id), self.directory),
                "status": trial.status,
                "values": trial_values(trial.hyperparameters),
                "objective": metrics.pop(self.objective, None),
                **metrics,
            }
            if "tuner/epochs" in trial.hyperparameters.values:
                row["budget_epochs"] = trial.hyperparameters.values["tuner/epochs"]
            if trial.message:
                row["error"] = _last_error(trial.message)
            if trial_id in deleted:
                row["run_deleted"] = True  # its folder was removed (to save disk): not a run to copy or load
            trials.append(row)
        completed = [t for t in trials if t["status"] == "COMPLETED" and t["objective"] is not None
                     and not t.get("run_deleted")]
        out = {
            "objective": {"name": self.objective, "direction": OBJECTIVES[self.objective]},
            "search": self.settings(),
            "trials": trials,
            "num_completed": len(completed),
            "best": best or self.best,
            "stopped_by_max_minutes": self.stopped_by_time,
        }
        if out["best"] is None and deleted and not completed:
            # "best": null alone read as a search that found nothing, though its trials completed.
            out["note"] = no_best_left_note(len(deleted))
        return out

    def write_summary(self, oracle, best=None):
        runs.write_json(os.path.join(self.directory, SUMMARY), self.summary(oracle, best))


def _base_preset(config):
    from tfllm.presets import resolve_preset

    return resolve_preset(config.task, config.preset, config.overrides)


def _oracle(algorithm, objective, max_trials, seed, hp, max_epochs):
    import keras_tuner

    goal = keras_tuner.Objective(objective, OBJECTIVES[objective])
    common = {"objective": goal, "seed": seed, "hyperparameters": hp, "allow_new_entries": False,
              "tune_new_entries": False}
    if algorithm == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    elif algorithm == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max(1, max_epochs), **common)
        oracle.max_trials = max_trials  # Hyperband has no such argument; KerasTuner's base oracle honours it
    # KerasTuner pads its best trials with unfinished and failed ones when too few completed: a failed one
    # was copied to DIR/best (or a traceback, when its run had left nothing), and its progress table showed a
    # diverged trial's values as the "Best Value So Far". Only completed trials are the best, in the order
    # `ranked_trials` gives them (ties broken the same way on every call).
    oracle.get_best_trials = lambda num_trials=1: ranked_trials(oracle.trials.values(), objective)[:num_trials]
    return oracle


def _check_directory(directory, settings):
    """A fresh search directory, or one this same search started (then it continues)."""
    summary = os.path.join(directory, SUMMARY)
    if os.path.exists(summary):
        before = runs.read_json(summary).get("search", {})
        # An edited data file splits and trains differently: the new trials would be ranked against the old
        # ones on other data (a search from before the fingerprint was kept has none to compare).
        if "data_sha256" in before and before["data_sha256"] != settings["data_sha256"]:
            raise UserInputError(f"--data {settings['data']!r} changed since the search in {directory!r} started: "
                                 "its trials were trained on the file as it was. Restore the file to continue the "
                                 "search, or start a new one in another --run-dir.")
        changed = sorted(k for k in set(before) | set(settings) if k != "data_sha256" and before.get(k) != settings.get(k)
                         and not (k == "data" and same_data(settings[k], before.get(k))))  # ./x.csv is x.csv
        if changed:
            raise UserInputError(f"--run-dir {directory!r} holds a search with other settings "
                                 f"({runs.changed_options(before, settings, changed)}); "
                                 "rerun it with the same ones to continue it, or choose another --run-dir.")
        return True
    if os.path.isdir(directory) and os.listdir(directory):
        raise UserInputError(f"--run-dir {directory!r} is not empty and holds no search ({SUMMARY}). "
                             "Choose another --run-dir.")
    return False


def tune(config, algorithm="random", max_trials=10, max_minutes=None, objective=None, space=None, verbose=1):
    """Searches hyperparameters for `config`'s task and data; returns the `tuning.json` dict.

    Args:
        config: a `TrainConfig`; `run_dir` is the search directory, `overrides`
            settings fixed for every trial, `seed` seeds the split, every trial
            and the search itself.
        algorithm: "random", "bayesian" or "hyperband" (its epoch budget is each
            trial's `epochs`, or `steps` in `eval_interval`s for a generator;
            every trial trains from scratch).
        max_trials: trials in the whole search, those of earlier runs included.
        max_minutes: start no new trial after this many minutes of this call (its first trial always runs).
        objective: "val_accuracy" (classifiers' default) or "val_loss" (the
            default, and the only one, for generators and translators).
        space: `{setting: [values] | {"min", "max", "sampling", "step"}}`;
            None searches `default_space` of the preset.

    Rerunning with the same arguments and directory continues the search:
    finished trials are kept, an interrupted one resumes.
    """
    if algorithm not in ALGORITHMS:
        raise UserInputError(f"Unknown --algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}.")
    if config.task not in ("classify", "generate", "translate"):
        raise UserInputError(f"tfllm tune searches --task classify, generate or translate, not {config.task!r}.")
    if config.from_preset:
        raise UserInputError("tfllm tune trains from scratch; --from-preset is not supported.")
    objective = objective or ("val_accuracy" if config.task == "classify" else "val_loss")
    if objective not in OBJECTIVES:
        raise UserInputError(f"Unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    if objective == "val_accuracy" and config.task != "classify":
        raise UserInputError(f"--objective val_accuracy is for classifiers; a {config.task} search uses val_loss.")
    if max_trials is None or max_trials < 1:
        raise UserInputError(f"--max-trials must be at least 1, got {max_trials}.")
    if max_minutes is not None and not max_minutes > 0:
        raise UserInputError(f"--max-minutes must be more than 0, got {max_minutes}.")
    preset = _base_preset(config)  # an unknown preset or --set setting fails here, before anything is written
    source = "--space" if space is not None else "the default space"
    if space is None:
        # A setting fixed by --set is not searched: the trials' values replaced it, silently.
        space = {k: v for k, v in default_space(config.task, preset).items() if k not in config.overrides}
    space = check_space(config.task, preset, space, source)
    both = sorted(set(space) & set(config.overrides))
    if both:
        raise UserInputError(f"--space searches {', '.join(map(repr, both))} and --set fixes "
                             f"{'it' if len(both) == 1 else 'them'} for every trial; drop one of the two.")
    varied = [k for k in VOCABULARY_SETTINGS if k in space and not _fixed(space[k])]
    if config.task != "classify" and varied:
        raise UserInputError(f"--space searches {varied[0]!r}, but a {config.task} search ranks trials by val_loss per "
                             "token, and losses of different vocabularies are not comparable (a smaller one scores "
                             f"lower by folding rare characters into [UNK]); fix it with --set {varied[0]}=VALUE.")
    if algorithm == "hyperband" and ({"epochs", "steps"} & set(space)):
        raise UserInputError("--space: Hyperband sets each trial's epochs (steps) itself; leave them out of the space.")
    if not space:
        raise UserInputError(f"Preset {config.preset!r} has none of the settings a search varies (or --set fixes "
                             "them all); pass --space FILE.")
    hyperparameters(space)  # what KerasTuner refuses, before anything is written

    directory = config.run_dir
    # The search owns its folder for the whole call, as `tfllm train` owns a run directory: two searches
    # there at once trampled each other's tuner state, trials and tuning.json. Its trials own their own
    # folders (DIR/trials/trial_NNN) inside it, so they train as usual.
    runs.check_run_folder(directory)
    with runs.owned(directory):
        return _search(config, preset, space, objective, algorithm, max_trials, max_minutes, verbose)


def _search(config, preset, space, objective, algorithm, max_trials, max_minutes, verbose):
    """`tune` in a search directory this process owns."""
    directory = config.run_dir
    search = _Search(config, space, objective, algorithm, verbose=verbose,
                     deadline=None if max_minutes is None else time.monotonic() + 60 * max_minutes,
                     data_sha256=data_fingerprint(config.data))
    restore_best(directory)
    continuing = _check_directory(directory, search.settings())
    if continuing and os.path.isdir(os.path.join(directory, BEST)):
        # tuning.json keeps naming the run in DIR/best while this call runs: it said null until the call's
        # end, and still after an interruption, with best/ there all along. Only if best/ holds that trial's
        # run: replaced by hand (another trial copied there, a run trained there), a rerun reported the best
        # trial as best/ and left the other model in it.
        search.best = runs.read_json(os.path.join(directory, SUMMARY)).get("best")
        search.held = held_by_best(directory)
        if search.held == "":
            best = os.path.join(directory, BEST)
            # A user's finished run, not any trial's copy: replacing it would delete it without a word.
            raise UserInputError(f"{best!r} holds a run that is none of this search's trials (trained or copied "
                                 "there by hand), and `tfllm tune` replaces best/ with its best trial. Move it out "
                                 f"of {directory!r} (or delete it), then run the command again.")
        if search.held is not None and search.held != (search.best or {}).get("trial"):
            search.best = None  # not the run tuning.json names: keep_best copies the best trial again
    # The oracle before anything is written: one that cannot be built leaves no folder to refuse a rerun.
    max_epochs = math.ceil(preset["steps"] / preset["eval_interval"]) if config.task == "generate" else preset["epochs"]
    oracle = _oracle(algorithm, objective, max_trials, config.seed, hyperparameters(space), max_epochs)
    os.makedirs(directory, exist_ok=True)
    if not os.path.isdir(os.path.join(directory, LOGS)):
        write_hparams_config(os.path.join(directory, LOGS), config.task, space, objective)
    tuner = _tuner_class()(search, oracle=oracle, directory=directory, project_name=PROJECT, overwrite=False)
    if continuing:
        # A trial a kill cut short is still RUNNING on disk: it is trained again, so not counted as done.
        statuses = [t.status for t in oracle.trials.values()]
        completed, failed = statuses.count("COMPLETED"), statuses.count("FAILED") + statuses.count("INVALID")
        cut_short = len(statuses) - completed - failed
        print(f"Continuing the search in {directory}: {completed} trial(s) completed"
              + (f", {failed} failed" if failed else "") + (f", {cut_short} cut short (run again)" if cut_short else "")
              + ".")
        deleted = _deleted_trials(directory, oracle)
        if deleted:
            names = ", ".join(os.path.basename(trial_dir(directory, i)) for i in deleted)
            print(f"{names}: run folder(s) deleted; left out of the best run (they still count toward --max-trials).")
    search.write_summary(oracle)
    import keras_tuner
    from keras_tuner.src import config as keras_tuner_config

    # PRIVATE API: `keras_tuner.src.config.DEBUG` (keras-tuner 1.4), True by default, prints a failed trial's
    # traceback as it happens (keras-team/keras-tuner#761). A trial that fails for its values (a diverging
    # learning rate) is one line here instead; the traceback stays in tuner/trial_*/trial.json.
    debug, keras_tuner_config.DEBUG = keras_tuner_config.DEBUG, False
    try:
        tuner.search(verbose=verbose)
        if len(oracle.trials) < max_trials:  # KerasTuner's oracle had nothing more to try: said, not silent
            why = (f"Hyperband's brackets for {max_epochs} epoch(s) are done; raise the trials' epochs (--set) for "
                   "more" if algorithm == "hyperband" else "the space has no other combination of values; widen "
                   "--space for more")
            print(f"The search ended after {len(oracle.trials)} of --max-trials {max_trials} trials: {why}.")
    except _OutOfTime:
        print(f"--max-minutes {max_minutes} passed: no further trial started.")
    except keras_tuner.errors.FatalError as e:
        if not continuing and not any(t.status == "COMPLETED" for t in oracle.trials.values()):
            shutil.rmtree(directory, ignore_errors=True)  # nothing half-written for bad input
        raise UserInputError(str(e)) from None
    except RuntimeError as e:
        if "consecutive failures" not in str(e):
            raise
        _save_ended_trial(oracle)
        search.write_summary(oracle)
        raise UserInputError(f"{oracle.max_consecutive_failed_trials} trials in a row failed (the last: "
                             f"{_last_error(str(e)).rstrip('.')}); narrow --space. Details: "
                             f"{os.path.join(directory, PROJECT)}/trial_*/trial.json") from None
    finally:
        keras_tuner_config.DEBUG = debug
    best = search.best = keep_best(search, oracle)
    search.write_summary(oracle, best)
    warn_of_a_tie(search, oracle, best)
    failed = [oracle.trials[i] for i in sorted(oracle.trials, key=int) if oracle.trials[i].message]
    if best is None and failed:
        # Every trial failed, fewer than KerasTuner's limit in a row: not a search that found something.
        raise UserInputError(f"No trial completed ({len(failed)} failed; the last: "
                             f"{_last_error(failed[-1].message).rstrip('.')}); narrow --space. "
                             f"Details: {os.path.join(directory, SUMMARY)}")
    return runs.read_json(os.path.join(directory, SUMMARY))


def _save_ended_trial(oracle):
    """Records the trial whose failure stopped the search as ended, as `Oracle.end_trial` would have.

    PRIVATE API: KerasTuner 1.4's `Oracle.end_trial` raises "Number of consecutive failures exceeded" before
    it saves the trial (`_save_trial`) and takes it off `ongoing_trials` (no upstream issue found; see
    keras_tuner/src/engine/oracle.py): on disk it stayed RUNNING, with no error, and the next run trained it again.
    """
    trial = oracle.trials[oracle.end_order[-1]]
    for tuner_id, ongoing in list(oracle.ongoing_trials.items()):
        if ongoing.trial_id == trial.trial_id:
            oracle.ongoing_trials.pop(tuner_id)
    oracle._save_trial(trial)
    oracle.save()


def _last_error(message):
    """A failed trial's traceback (KerasTuner keeps it) as its last line, less the exception's class."""
    last = [line for line in message.strip().splitlines() if line.strip()][-1]
    name, sep, text = last.partition(": ")
    return text if sep and "." in name and " " not in name else last


def _identity(run_dir):
    """What tells one run from another: its settings (tfllm/run.json, which names the folder it was trained in)
    and its figures (metrics.json); a copy has both as they are."""
    try:
        return runs.read_json(runs.path(run_dir, runs.RUN_CONFIG)), runs.read_json(runs.path(run_dir, runs.METRICS))
    except (OSError, ValueError):
        return None


def held_by_best(directory):
    """The trial whose run DIR/best holds ("trial_004"); None when best/ holds no finished run (half a copy);
    "" for a finished run that is none of this search's trials (a user's, trained or copied there by hand)."""
    best = os.path.join(directory, BEST)
    if not runs.is_finished(best):
        return None
    identity, trials = _identity(best), os.path.join(directory, TRIALS)
    names = sorted(os.listdir(trials)) if os.path.isdir(trials) else []
    for name in names:
        if _identity(os.path.join(trials, name)) == identity:
            return name
    # A trial whose folder was deleted since (users delete trials/ to save disk): its copy names the trial's
    # folder as the one it was trained in.
    trained_in = os.path.normpath(str(identity[0].get("run_dir") or "")) if identity else ""
    name = os.path.basename(trained_in)
    if (os.path.basename(os.path.dirname(trained_in)) == TRIALS and name.startswith("trial_")
            and not runs.is_finished(os.path.join(trials, name))):
        return name
    return ""


def restore_best(directory):
    """Puts back the DIR/best that a search killed while swapping in a new one had set aside."""
    old = os.path.join(directory, f".{BEST}.old")
    if os.path.isdir(old) and not os.path.isdir(os.path.join(directory, BEST)):
        os.replace(old, os.path.join(directory, BEST))


def _deleted_trials(directory, oracle):
    """The ids of completed trials whose run folder is gone (users delete trials/ to save disk)."""
    return [i for i in sorted(oracle.trials, key=int)
            if oracle.trials[i].status == "COMPLETED" and not runs.is_finished(trial_dir(directory, i))]


def no_best_left_note(deleted):
    return (f"the run folders of all {deleted} completed trial(s) were deleted and best/ holds none of them: no "
            "best run is left; raise --max-trials to train more")


def warn_of_a_tie(search, oracle, best):
    """One line when trials tie on the best objective: which, and how best/ was chosen among them. A
    classifier's val_accuracy is the blend's, fitted on those same validation rows: on small data several
    trials scored 1.0 (their encoders' own accuracies 0.3 and 0.7, all 0.714 on test) and one was picked
    without a word."""
    deleted = _deleted_trials(search.directory, oracle)
    ranked = [t for t in oracle.get_best_trials(len(oracle.trials)) if t.trial_id not in deleted]
    tied = [t for t in ranked if t.score == ranked[0].score] if ranked else []
    if not best or best.get("run_deleted") or len(tied) < 2:
        return
    names = [os.path.basename(trial_dir(search.directory, i)) for i in sorted((t.trial_id for t in tied), key=int)]
    why = ""
    if search.objective == "val_accuracy" and _base_preset(search.config).get("wide_bigram_buckets"):
        why = ("; the objective is the naive-Bayes blend's accuracy on the validation rows it was fitted on, so a "
               "small validation split saturates: compare their test_accuracy in tuning.json, or use more --max-rows")
    warn(f"{', '.join(names)} tie at {search.objective}={tied[0].score:.4f}; best/ is {best['trial']}, the one "
         f"with the lowest val_loss (then the earliest){why}.")


def keep_best(search, oracle):
    """Copies the best trial's run to DIR/best (a normal, loadable run) and returns its summary row. A trial
    whose run folder was deleted is left out; DIR/best, when it still holds that trial's copy, is kept (its row
    marked run_deleted). With no trial folder left and no such copy, DIR/best is removed and the row is None."""
    ranked = oracle.get_best_trials(len(oracle.trials))  # completed ones only (`_oracle`)
    if not ranked:
        return None
    deleted = _deleted_trials(search.directory, oracle)
    trials = [t for t in ranked if t.trial_id not in deleted]
    names = {os.path.basename(trial_dir(search.directory, t.trial_id)): t.trial_id for t in ranked}
    # best/ as tuning.json names it: a whole copy of a completed trial whose folder was deleted.
    kept = (search.best and names.get(search.best.get("trial")) in deleted
            and runs.is_finished(os.path.join(search.directory, BEST)))
    if kept and (not trials or names[search.best["trial"]] == ranked[0].trial_id):
        # The only copy left of the best trial (or of any): kept, its row saying, as the trial's does, that
        # the trial's folder is gone.
        return {**search.best, "run_deleted": True}
    if not trials:
        # A best/ left here is a copy tuning.json does not name (or half a copy): dropped, so that best/ is
        # only ever the run tuning.json's "best" names.
        shutil.rmtree(os.path.join(search.directory, BEST), ignore_errors=True)
        return None
    trial = trials[0]
    source = trial_dir(search.directory, trial.trial_id)
    if (search.best and not search.best.get("run_deleted") and names.get(search.best.get("trial")) == trial.trial_id
            and runs.is_finished(os.path.join(search.directory, BEST))):
        # best/ is this trial's copy already (a rerun that trained nothing, or nothing better): left as it is.
        return search.best
    name = os.path.basename(source)
    if search.held and search.held != name:
        print(f"{BEST}/ held {search.held}'s run, not the best trial's: replaced by {name}.")
    target, old = os.path.join(search.directory, BEST), os.path.join(search.directory, f".{BEST}.old")
    # Without logs/: the trial's own logs stay the one HParams session of this trial.
    tmp = os.path.join(search.directory, f".{BEST}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(LOGS))
    # Set aside, then swap in, then drop: deleting best/ before the rename left no best/ at all to a
    # process killed in between (`restore_best` puts the old one back).
    if os.path.isdir(target):
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    row = next(t for t in search.summary(oracle)["trials"] if t["run_dir"] == os.path.relpath(source, search.directory))
    return {**row, "copied_to": BEST}
