"""What every training run shares: the run directory, callbacks, the strategy scope."""

import contextlib
import errno
import functools
import glob
import hashlib
import importlib.metadata
import json
import math
import os
import re
import resource
import shutil
import socket
import sys
import tempfile
import urllib.parse
import warnings

import h5py
import keras
import numpy as np
import tensorflow as tf

from tfllm import errors, runs, tokenizers
from tfllm.config import PRECISIONS  # noqa: F401  (there, TensorFlow-free, for the CLI's parser)
from tfllm.errors import UserInputError, shell_path
from tfllm.runs import BACKUP, read_json, write_json  # noqa: F401  (re-exported for the trainers)


@contextlib.contextmanager
def unknown_length_ok():
    """Silences Keras's "ran out of data" for pipelines whose length it cannot know.

    The tokenized classification pipelines `unbatch()`, so Keras learns their
    length only when the first pass ends, and reports that as running out of
    data. `assert_cardinality` would tell it up front, but then Keras 3.15 builds
    a spare iterator per epoch, which shifts every later shuffle and with it the
    trained models and the benchmarked figures.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


@contextlib.contextmanager
def guarded_run(run_dir, resume, previous=None, resumable=True, backup_dir=None):
    """Wraps a run's training so an interruption can resume and a failure leaves nothing.

    A fresh run that fails is removed, unless it got far enough to back up (a
    lost worker, a crash): then running the same command again resumes. A
    finished run that `--overwrite` moved aside (`previous`) comes back when
    the new one fails, and goes when it succeeds. An interruption before the
    first backup, or of a run that is not `resumable` (seconds of work, no
    backup), is treated as a failure: there is nothing to resume from. So is a
    diverged training, which would diverge again. `backup_dir` is where the
    backup is (default `run_dir/backup`); a non-chief worker's `run_dir` is a
    scratch folder, removed whatever happens, and the backup is the chief's.
    Ends this process's ownership of `run_dir`, which `runs.prepare` took.
    """
    try:
        with _cleanup_on_failure(run_dir, resume, previous, resumable, backup_dir):
            yield
    finally:
        runs.release(run_dir)


@contextlib.contextmanager
def _cleanup_on_failure(run_dir, resume, previous, resumable, backup_dir):
    backup_dir = backup_dir or os.path.join(run_dir, BACKUP)
    try:
        yield
    except BaseException as e:
        if os.path.abspath(os.path.dirname(backup_dir)) != os.path.abspath(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a non-chief worker's scratch folder
        # A diverged run would diverge again when resumed: it goes whatever its backup. So does a run whose
        # input was refused after its last epoch (a NaN in its outputs, say): resumed, it meets the same
        # refusal, and the settings that would fix it are refused as "other settings" of a resume.
        refused_after_fit = isinstance(e, UserInputError) and fit_done(backup_dir)
        backed_up = (resume or runs.has_backup(backup_dir)) and not isinstance(e, TrainingDiverged) \
            and not refused_after_fit
        full_disk = errors.full_disk_file(e)  # a traceback's worth of h5py or TensorFlow otherwise
        if isinstance(e, KeyboardInterrupt) and resumable and backed_up:
            # Said how to get it back: users who abandon the new run did not know the old one was there.
            # A notebook's user is told the two steps in words, not a shell command to paste.
            kept = " The finished run it replaces stays in {} until then; to abandon the new run and get it back: {}."
            shell = (f"rm -rf {shell_path(run_dir)} && mv {shell_path(previous)} {shell_path(run_dir)}"
                     if previous else "")
            words = f"delete {run_dir} and rename {previous} to {run_dir}"
            errors.note(f"\nInterrupted. Run the same command again to resume from {backup_dir}."
                        + (kept.format(previous, shell) if previous else ""),
                        python=f"Interrupted. Call the same function again with the same arguments to resume from "
                               f"{backup_dir}." + (kept.format(previous, words) if previous else ""), file=sys.stdout)
            raise
        crashed = resumable and backed_up and not isinstance(e, UserInputError)  # a crash, a lost worker
        lost = errors.worker_lost(e)  # said below, in one line
        if crashed and full_disk is None and not lost:  # a full disk is said below, in one line
            failed = f"Training failed ({type(e).__name__}); its backup is kept: once the cause is fixed, "
            errors.note(f"\n{failed}run the same command again to resume from {backup_dir}.",
                        python=f"{failed}call the same function again with the same arguments to resume from "
                               f"{backup_dir}.")
        if not backed_up:  # nothing to resume from (interrupted or failed before the first backup)
            shutil.rmtree(run_dir, ignore_errors=True)
            runs.restore_previous(run_dir, previous)
            outer = runs.enclosing_run(run_dir)
            if isinstance(e, KeyboardInterrupt) and outer:
                # An ensemble's member: "the new run is removed" read as the ensemble's, and the next line (the
                # ensemble's own) said to resume it. Only the member's folder goes; what the ensemble finished stays.
                errors.note(f"\nInterrupted before {run_dir}'s first backup: it is removed and trains again from its "
                            f"start when {outer} resumes (the members {outer} finished are kept).", file=sys.stdout)
            elif isinstance(e, KeyboardInterrupt):
                kept = f"; the finished run that was there is back in {run_dir}" if previous else ""
                errors.note(f"\nInterrupted before the first backup: nothing to resume, so the new run is removed{kept}.",
                            file=sys.stdout)
        if full_disk is not None:
            where = f" writing {full_disk!r}" if full_disk else f" in {run_dir!r}"
            if resumable and backed_up:
                kept = (f"The run's backup is kept: {errors.make_room(e)}, then run the same command again to resume "
                        f"from {backup_dir}.")
            elif not backed_up:
                back = f"; the finished run that was there is back in {run_dir}" if previous else ""
                kept = f"Nothing of the new run was kept{back}: {errors.make_room(e)} and run the command again."
            else:
                kept = f"{errors.make_room(e).capitalize()} and run the command again."
            raise errors.DiskFull(f"{errors.full_disk_reason(e)}{where}. {kept}", full_disk) from e
        if lost:
            again = (f"rerun every worker's command to resume from {backup_dir}" if resumable and backed_up else
                     "nothing was backed up yet, so rerun every worker's command to start again")
            raise errors.WorkerLost(f"A worker of this multi-worker run is gone (TensorFlow's {type(e).__name__}: "
                                    f"its collective ops could not reach it); {again}.") from None
        raise
    runs.drop_previous(previous)


# Settings a --from-preset model brings itself (its backbone's shape, its tokenizer): given with it, they
# would be recorded in the run's recipe and ignored. `embedding_dropout`, `activation` and `layer_norm_epsilon`
# are the backbone's too, `window_keep` the saved causal LM task's; `dropout` is the new classification head's
# (classifier_from_preset), and only a classifier has a new head. In the recipe a run records, each of them is
# the preset's own value or left out (`preset_own_settings`).
ARCHITECTURE = {"vocabulary_size", "hidden_dim", "num_layers", "num_heads", "intermediate_dim"}
PRESET_OWN_SETTINGS = ARCHITECTURE | {"tokenizer", "lowercase", "tie_weights", "use_bias", "num_decoder_layers",
                                      "embedding_dropout", "activation", "layer_norm_epsilon", "window_keep"}


def preset_owned(task):
    """The settings a --from-preset model of `task` brings itself: PRESET_OWN_SETTINGS, and `dropout` but for a
    classifier (whose new head takes the recipe's)."""
    return PRESET_OWN_SETTINGS | (set() if task == "classify" else {"dropout"})


def preset_own_settings(handle):
    """The values of PRESET_OWN_SETTINGS that the preset `handle` records itself: its backbone's config (KerasHub's
    and tfllm's backbones name their sizes as tfllm's recipes do) and, for a tfllm run, the rest from the recipe
    it trained (its tokenizer, its generator's window_keep). A setting found in neither is the preset's in a way
    no recipe setting names (a GPT-2's byte-pair tokenizer, a Llama's num_query_heads)."""
    backbone = preset_backbone(handle)[1]
    recorded = {}
    folder = os.path.expanduser(handle)
    if os.path.isdir(folder) and os.path.exists(runs.path(folder, runs.RECIPE)):
        try:
            recorded = runs.read_recipe(folder)
        except (OSError, ValueError):  # a damaged record names nothing: those settings are left out
            pass
    recorded = recorded if isinstance(recorded, dict) else {}
    own = {key: value for key, value in recorded.items() if key in PRESET_OWN_SETTINGS - ARCHITECTURE}
    own.update({key: value for key, value in backbone.items() if key in PRESET_OWN_SETTINGS | {"dropout"}})
    return own


TRAINERS = runs.TRAINER_CALLS  # the Python function that trains each task


def check_config(config, *tasks):
    """A one-line error unless `config` is a TrainConfig of one of `tasks` (the first: this trainer's). A
    config of another task trained a whole model whose run.json named that task, so that nothing could use it."""
    from tfllm.config import TrainConfig

    if not isinstance(config, TrainConfig):
        raise UserInputError(f"{TRAINERS[tasks[0]]} takes a TrainConfig, got {type(config).__name__}; e.g. "
                             f"TrainConfig(task={tasks[0]!r}, data=..., run_dir=...) (TrainConfig.from_dict(d) for a dict).")
    if config.task not in tasks:
        other = f", or train it with {TRAINERS[config.task]}" if config.task in TRAINERS else ""
        raise UserInputError(f"{TRAINERS[tasks[0]]} trains task {tasks[0]!r}, but the config's task is "
                             f"{config.task!r}: pass TrainConfig(task={tasks[0]!r}, ...){other}.")
    refuse_unread_fields(config)
    if config.preset is None:  # a classifier from a preset (TrainConfig.preset): before anything reads it
        config.preset = recipe_name(config)


def refuse_unread_fields(config):
    """Refuses a TrainConfig field that `config.task`'s trainer does not read, before anything is trained: a
    notebook's `TrainConfig(objective="mlm")` given to `train_classifier` trained a classifier without a word,
    and `ensemble=3` trained one generator. (Each trainer refuses the columns it does not read itself.)"""
    for flag, given, task in (("--objective", config.objective is not None, "pretrain"),
                              ("--ensemble", config.ensemble != 1, "classify"),
                              ("--unlabeled", config.unlabeled is not None, "classify"),
                              ("--model-seed", config.model_seed is not None, "classify")):
        if given and config.task != task:
            raise UserInputError(f"{flag} is for --task {task}, not {config.task}; leave it out"
                                 + (f", or pretrain with {TRAINERS[task]}(TrainConfig(task='pretrain', ...))."
                                    if task == "pretrain" else "."))
    if config.task == "pretrain":  # a masked LM or word vectors read running text too (a causal LM said so)
        for flag, value, default in (("--label-column", config.label_column, "label"),
                                     ("--labels", config.labels, None), ("--split-column", config.split_column, None),
                                     ("--source-column", config.source_column, None),
                                     ("--target-column", config.target_column, None)):
            if value not in (None, default):
                raise UserInputError(f"{flag} is not for --task pretrain, which reads running text (a CSV/JSONL's "
                                     "--text-column); leave it out.")


def recipe_name(config):
    """The recipe a config trains: its `preset`, or where that is None (a classifier from a preset, as
    TrainConfig leaves it) the one `tfllm train --from-preset` picks, `runs.fine_tuning_preset`."""
    return config.preset if config.preset is not None else runs.fine_tuning_preset(config.from_preset)


def check_run_dir(config):
    """`runs.prepare`'s refusals of the config's run directory (a file in its way, a finished run without
    `overwrite`, another process training there, ...) before the data is read: `tfllm train` checked first,
    but a Python trainer read and tokenized all of the data and then refused. Each worker of a multi-worker
    run prepares its own folder once the strategy exists, so theirs are checked there. A run killed before
    its first backup is left to `runs.prepare`, which puts back the run an `--overwrite` had set aside first."""
    if config.from_preset and os.path.isdir(os.path.expanduser(config.from_preset)) and \
            os.path.realpath(os.path.expanduser(config.from_preset)) == os.path.realpath(config.run_dir):
        # `--overwrite` set the folder aside before the preset was read, and KerasHub then said it "has no
        # config.json"; without it, the refusal to replace a finished run suggested --overwrite.
        raise UserInputError(f"--from-preset and --run-dir are the same folder ({config.from_preset}): a run cannot "
                             "start from the folder it writes. Pass another --run-dir.")
    if config.strategy != "multi_worker" and not runs.dead_start(config.run_dir):
        runs.check_writable(config.run_dir, config.overwrite, config)


def preset_files(load):
    """Decorates `load(handle, ...)`, a model built from a preset, so that a preset folder missing a file
    (its weights, its tokenizer's vocabulary or merges) is one line naming it, not KerasHub's traceback."""
    @functools.wraps(load)
    def checked(handle, *args, **kwargs):
        try:
            return load(handle, *args, **kwargs)
        except FileNotFoundError as e:
            missing = re.search(r"`([^`]+)` doesn't exist", str(e))
            missing = missing[1] if missing else (e.filename or str(e))
            # keras-hub 0.32's get_file falls back to the sharded index's name when model.weights.h5 is missing.
            missing = "model.weights.h5" if missing == "model.weights.json" else missing
            raise UserInputError(f"--from-preset {handle!r} has no {missing}: a preset folder holds every file "
                                 "save_to_preset wrote (config.json, model.weights.h5, tokenizer.json, "
                                 "assets/...); copy the whole folder again.") from None
        except (OSError, tf.errors.OpError) as e:  # h5py's "truncated file", SentencePiece's ParseFromArray
            damaged = damaged_file(handle)
            if damaged is None:  # every file reads: not the preset's fault (a full disk, ...)
                raise
            what = "an HDF5 weights file" if damaged.endswith(".h5") else "a SentencePiece model"
            raise UserInputError(f"--from-preset {handle!r}: its {damaged} does not read as {what} (damaged, or cut "
                                 "short in copying); copy the whole preset folder again.") from None
    return checked


def damaged_file(handle):
    """The first file of a local preset folder that does not read as what it is (a weights file h5py cannot
    open, a SentencePiece model that does not parse: a copy cut short), as a path inside it; else None.
    KerasHub let h5py's OSError and TensorFlow's SentencePiece op error through, naming neither the file nor
    the preset."""
    folder = os.path.expanduser(handle)
    if not os.path.isdir(folder):
        return None
    for root, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                if name.endswith(".h5"):
                    h5py.File(path, "r").close()
                elif name.endswith(".spm"):
                    import sentencepiece  # here: only a damaged preset's check parses its model

                    with open(path, "rb") as f:
                        sentencepiece.SentencePieceProcessor(model_proto=f.read())
            except (OSError, RuntimeError):  # h5py's OSError; SentencePiece's RuntimeError
                return os.path.relpath(path, folder)
    return None


def warn_unknown_tokens(handle, tokenizer, ids, what, consequence):
    """Warns of what share of `ids`, the tokens of the data, a preset's tokenizer has no token for:
    it is kept as it is, so text it does not cover trains as [UNK] (English BERT on Chinese reviews: all of
    it, and every prediction was the same) without a word."""
    unk = tokenizers.unknown_token_id(tokenizer)
    ids = np.asarray(ids).ravel()
    if unk is None or not len(ids) or (ids == unk).mean() <= 0.01:
        return
    errors.warn(f"{(ids == unk).mean():.0%} of the tokens of the {what} are unknown to the tokenizer of "
                f"{handle} (text it never saw); the model learns [UNK] for them{consequence}. Fine-tune a preset "
                "whose vocabulary covers your text, or a run trained on text like yours.")


# A vocabulary trained on the data leaves out its rarest text by design; past this share of [UNK] tokens the
# model mostly learns [UNK], and its loss and perplexity (which count [UNK] as a token) look fine all the same.
OWN_UNKNOWN_SHARE = 0.05


# Past this share of [UNK] tokens a generator's run names some of the text left out: `tfllm generate` refuses
# prompts holding it, and the run trained without a word of it.
GENERATE_UNKNOWN_SHARE = 0.001


def warn_unknown_in_own_vocabulary(tokenizer, ids, vocabulary_size, what="training text", text=None, masked=False):
    """Warns when more than `OWN_UNKNOWN_SHARE` of `ids` (tokens of the data, flat) are [UNK] to the tokenizer
    trained on it: `--preset tiny`'s 50 tokens kept 45 of zh_news's thousands of characters, and pretraining
    reported a perplexity of 5.37 without a word, where fine-tuning from the run then warned. Given the `text`
    (a generator's), past `GENERATE_UNKNOWN_SHARE` already, naming the first characters or words left out.
    `masked`: a masked LM's text, whose [UNK] tokens are never masked, so its loss leaves them out."""
    unk = tokenizers.unknown_token_id(tokenizer)
    ids = np.asarray(ids).ravel()
    share = (ids == unk).mean() if unk is not None and len(ids) else 0.0
    if share <= (OWN_UNKNOWN_SHARE if text is None else GENERATE_UNKNOWN_SHARE):
        return
    raise_it = f"Raise vocabulary_size with --set vocabulary_size=N (now {vocabulary_size})."
    examples = ""
    if text is not None:
        from tfllm.generation import unseen_text

        unseen = unseen_text(tokenizer, text, most=6)
        examples = f" ({', '.join(repr(u) for u in unseen[:5])}{', ...' if len(unseen) > 5 else ''})" if unseen else ""
    if share <= OWN_UNKNOWN_SHARE:
        errors.warn(f"{share:.1%} of the tokens of the {what} are [UNK]{examples}: a vocabulary of "
                    f"{tokenizer.vocabulary_size()} tokens leaves that text out, and "
                    f"{errors.spelled('tfllm generate', python='tfllm.generate')} refuses prompts holding it. {raise_it}")
        return
    # A masked LM never masks [UNK] (KerasHub's masker picks no special token): it scores the rest alone.
    scored = ("reads [UNK] for it and never learns it: the masked LM masks no [UNK], so the loss and perplexity score "
              "only the rest" if masked else
              "learns [UNK] for it, and the loss and perplexity count [UNK] as a token like any other")
    errors.warn(f"{share:.0%} of the tokens of the {what} are [UNK]{examples}: a vocabulary of "
                f"{tokenizer.vocabulary_size()} tokens leaves out most of its text, so the model {scored}. {raise_it}")


def preset_positions(handle):
    """How many positions a preset's backbone has (tfllm's `sequence_length`, KerasHub's
    `max_sequence_length`), or None for one without a position table (rotary: Llama, Gemma)."""
    backbone = preset_backbone(handle)[1]
    return backbone.get("sequence_length") or backbone.get("max_sequence_length")


def fit_to_positions(config, preset):
    """`preset` with a --from-preset run's `sequence_length` at most its backbone's positions: a recipe's
    longer default is cut to them, a longer `--set sequence_length` is refused. Before, both were cut
    where the model was built, without a word, and the run's recipe.json recorded the longer value."""
    if not config.from_preset:
        return preset
    longest = preset_positions(config.from_preset)
    if longest and preset.get("sequence_length", 0) > longest:
        if "sequence_length" in config.overrides:
            raise UserInputError(f"--set sequence_length={preset['sequence_length']} is longer than --from-preset "
                                 f"{config.from_preset!r} has positions for ({longest}); set at most {longest}.")
        preset["sequence_length"] = longest
    return preset


def preset_dtype(handle):
    """`{"dtype": the policy this command trains in}` for a preset saved with a mixed dtype policy (a run of
    `--precision mixed_bfloat16`), else `{}`, to pass to its `from_preset`: keras-hub 0.32 checks a saved policy
    with `is_float_dtype`, which raises on a mixed one ("Invalid dtype: mixed_bfloat16", as `runs.load_task`
    says), so such a run was refused as --from-preset ("has no text classifier in KerasHub")."""
    policy = preset_backbone(handle)[1].get("dtype") or {}
    name = policy.get("config", {}).get("name", "") if isinstance(policy, dict) else str(policy)
    if name in ("bfloat16", "float16") and keras.config.dtype_policy().name == "float32":
        # Its weights load as float32 and the run saves them so: said, as a 16-bit preset was trained silently.
        print(f"Preset {handle} was saved in {name}; this run trains and saves it in float32 "
              f"(--precision mixed_{name} computes in {name}).")
    return {"dtype": keras.config.dtype_policy().name} if name.startswith("mixed_") else {}


def preset_backbone(handle):
    """`(backbone class, backbone config)` of a preset, or a clear error."""
    # PRIVATE API: keras_hub's preset loader is the only way to read a preset's backbone class and config
    # without building it (keras-hub 0.32 has no public one; no upstream issue asks for it).
    from keras_hub.src.utils.preset_utils import get_preset_loader

    refuse_old_format(handle)
    unreachable = unreachable_hub(handle)
    try:
        loader = get_preset_loader(handle)
        return loader.check_backbone_class(), dict(getattr(loader, "config", {}).get("config", {}))
    except Exception as e:  # a missing folder, no config.json, a handle that cannot be fetched offline, ...
        offline = offline_error(handle, unreachable, e)
        if offline:
            raise offline from None
        unknown = re.search(r"no class registered with Keras for (\S+?)\.", str(e))
        if unknown:  # Keras's advice to register_keras_serializable() is for the author of a custom class
            raise UserInputError(f"Cannot load --from-preset {handle!r}: its config.json names the class "
                                 f"{unknown[1]}, which keras-hub {importlib.metadata.version('keras-hub')} does not "
                                 "have (a newer keras-hub may, or the folder is not a KerasHub preset). Pass a tfllm "
                                 "run directory or a KerasHub preset of a model this keras-hub has.") from None
        message = str(e).splitlines()[0].rstrip(".") if str(e) else type(e).__name__  # KerasHub's ends with ".."
        raise UserInputError(f"Cannot load --from-preset {handle!r}: {message}. Pass a tfllm run directory, a local "
                             "KerasHub preset folder, or a KerasHub handle (needs network).") from None


def refuse_old_format(handle):
    """The one line every command gives for a run from before runs were KerasHub presets (`runs.is_old_format`),
    for a --from-preset `handle` that is one: KerasHub said "Unrecognized format for config.json ... Contents of
    config.json:." of its config.json (the run's TrainConfig)."""
    folder = os.path.expanduser(handle)
    if os.path.isdir(folder) and runs.is_old_format(folder):
        runs.check_finished(folder)


def check_from_preset_settings(config):
    """A one-line UserInputError for settings that `config.from_preset`'s own model fixes."""
    if not config.from_preset:
        return
    handle = config.from_preset
    refuse_old_format(handle)
    # A path (not a KerasHub handle such as bert_tiny_en_uncased or kaggle://...) that is not a folder: KerasHub
    # says only "Unknown preset identifier. A preset must be a one of:.".
    # A handle with a "/" but no "://" (runs/name) is a path too: KerasHub handles are names or URIs.
    folder = os.path.expanduser(handle)
    is_path = handle.startswith(("/", ".", "~")) or ("/" in handle and "://" not in handle)
    if is_path and not os.path.isdir(folder):
        raise UserInputError(f"--from-preset {handle!r} is not a folder ({'it is a file' if os.path.exists(handle) else 'no such path'}). "
                             "Pass a tfllm run directory or a local KerasHub preset folder (with config.json), "
                             "or a KerasHub handle such as bert_tiny_en_uncased (needs network).")
    if not is_path and "://" not in handle and not os.path.isdir(folder):
        import keras_hub  # here: only this check reads KerasHub's table of preset names

        if handle not in keras_hub.models.Backbone.presets:  # KerasHub: "A preset must be a one of:."
            raise UserInputError(f"--from-preset {handle!r} is neither a folder (no such path) nor a KerasHub "
                                 "preset name (such as bert_tiny_en_uncased; `python -c \"import keras_hub; "
                                 "print(list(keras_hub.models.Backbone.presets))\"` lists them). Pass a tfllm run "
                                 "directory, a local KerasHub preset folder, or a kaggle:// or hf:// handle.")
    if os.path.isdir(folder) and os.path.exists(runs.path(folder, runs.RUN_CONFIG)):
        runs.check_finished(folder)  # a tfllm run that is still training, was interrupted, or lost files
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, "config.json")) \
            and os.path.exists(os.path.join(folder, "tokenizer.json")):  # tokenizer.save_to_preset alone
        raise UserInputError(f"--from-preset {handle!r} holds only a tokenizer (tokenizer.json), no model "
                             "(config.json). Pass a model preset (a backbone's or task's save_to_preset writes "
                             "config.json) or a tfllm run directory.")
    # The JSON files KerasHub reads to build a task: KerasHub's message named neither the file nor that it is
    # JSON, and a broken task.json or preprocessor.json was reported as a preset with "no text classifier".
    saved = [name for name in ("config.json", "task.json", "preprocessor.json", "tokenizer.json")
             if os.path.isdir(folder) and os.path.exists(os.path.join(folder, "config.json"))
             and os.path.exists(os.path.join(folder, name))]
    for name in saved:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                json.load(f)
        except ValueError as e:
            raise UserInputError(f"--from-preset {handle!r}: its {name} is not valid JSON ({e}). Restore the "
                                 "file (save_to_preset writes it) or pass another preset.") from None
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, "config.json")):
        raise UserInputError(f"--from-preset {handle!r} is a folder but not a preset (no config.json in it). "
                             "Pass a tfllm run directory or a local KerasHub preset folder (save_to_preset writes "
                             "config.json), or a KerasHub handle such as bert_tiny_en_uncased (needs network).")
    classify = config.task == "classify"
    owned = preset_owned(config.task)
    given = sorted((set(config.overrides) & owned) | ({"tokenizer"} if config.tokenizer else set()))
    if given:
        applies = "the sequence length, the new head's dropout" if classify else "the sequence length"
        raise UserInputError(f"--from-preset {config.from_preset!r} brings its own model and tokenizer, so "
                             f"{', '.join(given)} would be ignored; leave them out ({applies} and the training "
                             "settings apply).")


def not_text_model(handle, backbone_cls):
    """A one-line reason a local preset is no text model (a vision or audio backbone: no tokenizer.json, and
    KerasHub's metadata.json names its tasks, e.g. ImageClassifier), else None."""
    folder = os.path.expanduser(handle)
    if not os.path.isdir(folder) or os.path.exists(os.path.join(folder, "tokenizer.json")):
        return None
    try:
        with open(os.path.join(folder, "metadata.json"), encoding="utf-8") as f:
            tasks = json.load(f).get("tasks") or []
    except (OSError, ValueError):
        tasks = []
    saved_for = f", saved for {', '.join(tasks)}" if tasks else ""
    return UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}{saved_for}) is not a text model: it "
                          "has no tokenizer (tokenizer.json). Pass a text model preset or a tfllm run directory.")


def unreachable_hub(handle):
    """The host a preset handle downloads from, if this machine cannot resolve its name; else None.

    Offline, huggingface_hub retried each file of an `hf://` preset five times with back-off (about 25 s
    a file), and KerasHub then said the preset "has no config.json". When the Hub's host does not
    resolve, this switches huggingface_hub to its own offline mode (`HF_HUB_OFFLINE`) for the process: a
    preset in the local Hugging Face cache still loads, anything else fails at once. Kaggle handles
    (`kaggle://...`, or a KerasHub name such as `bert_tiny_en_uncased`) fail within seconds already, and
    kagglehub's cache serves a versioned one offline; for them only the message changes.
    """
    if os.path.isdir(os.path.expanduser(handle)):
        return None
    if handle.startswith("hf://"):
        from huggingface_hub import constants  # here: KerasHub needs it only for hf:// handles

        host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    elif handle.startswith("kaggle://") or "://" not in handle:
        host = "api.kaggle.com"  # where kagglehub downloads from
    else:  # gs://, modelscope://, ...: left to KerasHub
        return None
    try:
        socket.getaddrinfo(host, 443)
        return None
    except OSError:
        pass
    if handle.startswith("hf://"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True  # read at import; is_offline_mode() reads this attribute
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(handle.removeprefix("hf://"), "config.json"), str):
            return None  # cached: it loads as a local preset would, with the same errors
    return host


def offline_error(handle, host, error):
    """The one-line error for a preset handle that `unreachable_hub` found no way to download, or None
    when `error` is of another kind (a cached Kaggle preset of the wrong kind: a ValueError, not a
    connection's OSError)."""
    if not host or not (handle.startswith("hf://") or isinstance(error, OSError)):
        return None
    if handle.startswith("hf://"):
        fetch = f"`hf download {handle.removeprefix('hf://')} --local-dir FOLDER` fetches it"
    else:
        import keras_hub  # here: only this message reads KerasHub's table of preset names

        kaggle = handle if handle.startswith("kaggle://") else \
            keras_hub.models.Backbone.presets.get(handle, {}).get("kaggle_handle", handle)
        fetch = (f"`python -c \"import kagglehub; print(kagglehub.model_download('{kaggle.removeprefix('kaggle://')}'))\"` "
                 "prints the folder it fetched")
    return UserInputError(f"Cannot load --from-preset {handle!r}: this machine cannot reach {host} (no network), and "
                          f"the preset is not in its download cache. On a machine that is online, {fetch}; copy "
                          "that folder here and pass it to --from-preset.")


def _resolve(task, config, counted):
    """`task`'s preset with `config`'s flags (`counted`: "epochs" or "steps") and `--set` overrides applied."""
    from tfllm.presets import resolve_preset

    flags = dict(tokenizer=config.tokenizer, batch_size=config.batch_size, learning_rate=config.learning_rate,
                 jit_compile=config.jit_compile, **{counted: getattr(config, counted)})
    check_counts({"epochs": config.epochs, "steps": config.steps, "batch_size": config.batch_size})
    for key in flags:
        check_flag_and_setting(config, key)
    overrides = {**config.overrides, **{k: v for k, v in flags.items() if v is not None}}  # unset flags keep --set
    preset = resolve_preset(task, recipe_name(config), overrides)
    if config.from_preset:
        # The preset's own model and tokenizer: the recipe's sizes, tokenizer, biases and dropout, which the model
        # never had (a GPT-2 fine-tune recorded tokenizer "char" and use_bias false), went to recipe.json and HParams.
        own = preset_own_settings(config.from_preset)
        for key in preset_owned(task) & set(preset):
            if key in own:
                preset[key] = own[key]
            else:  # the preset has it in a way no recipe setting names (Llama's num_query_heads, a byte-pair tokenizer)
                del preset[key]
    if preset.get("tokenizer") == "char" and config.overrides.get("lowercase"):  # it was accepted and ignored
        raise UserInputError("--set lowercase=true folds case in the wordpiece and sentencepiece tokenizers; the char "
                             "tokenizer keeps every character as written. Lowercase the texts themselves, or use "
                             "--tokenizer wordpiece.")
    return preset


def resolve_recipe(task, config):
    """The preset of `config` for an epoch-counted `task` (classify, translate), flags and `--set` applied and checked."""
    check_from_preset_settings(config)
    if config.steps is not None:
        raise UserInputError(f"--steps counts the training steps of generation and pretraining; a {task} run "
                             "trains whole passes over its data: use --epochs.")
    return _resolve(task, config, "epochs")


def step_recipe(task, config):
    """The preset of `config` for a step-counted `task` (generate, pretrain, vectors), flags and `--set`
    applied and checked; `--epochs N` means N evaluation intervals instead of `--steps`."""
    check_from_preset_settings(config)
    preset = _resolve(task, config, "steps")
    # `--set epochs=N` (a setting masked-LM pretraining lists) means `--epochs N`: it was recorded and ignored.
    epochs = config.epochs if config.epochs is not None else preset.get("epochs")
    if epochs is not None and "eval_interval" in preset:
        steps = config.steps if config.steps is not None else config.overrides.get("steps")
        if steps is not None:
            raise UserInputError(f"Give --steps ({steps}) or --epochs ({epochs}, each "
                                 f"{preset['eval_interval']} steps here), not both.")
        preset["steps"] = epochs * preset["eval_interval"]
    return preset


def resumed_recipe(config, preset):
    """The recipe `config`'s run trains: `preset` (today's resolution of its preset, flags and `--set`), or,
    where `config.run_dir` holds an interrupted run this command resumes (the same settings), the recipe that
    run recorded when it started (tfllm/recipe.json, the whole resolved preset). A preset that changed since
    (another tfllm version's `tiny`, say) rebuilt the model of its new shape, which the backup's weights did
    not fit, and a new learning rate or batch size went into the rest of the run without a word."""
    run_dir = config.run_dir
    if not runs.is_unfinished(run_dir) or runs.changed_settings(run_dir, config):
        return preset  # a fresh run, or one `runs.prepare` refuses or (--overwrite) starts over
    recipe_file = runs.path(run_dir, runs.RECIPE)
    try:
        recorded = runs.read_recipe(run_dir)
    except FileNotFoundError:  # every run since records one before its first backup
        return preset
    except (OSError, ValueError) as e:
        raise UserInputError(f"The interrupted run in {run_dir!r} cannot resume: its recipe, {recipe_file!r}, cannot "
                             f"be read ({str(e).splitlines()[0][:200]}). Put the file back as it was, or start the "
                             "run over in another --run-dir.") from None
    if not isinstance(recorded, dict):
        raise UserInputError(f"The interrupted run in {run_dir!r} cannot resume: its recipe, {recipe_file!r}, is not "
                             "a JSON object of settings. Put the file back as it was, or start the run over in "
                             "another --run-dir.")
    differ = sorted(key for key in {*preset, *recorded} if preset.get(key, None) != recorded.get(key, None))
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        errors.note(f"Resuming with the recipe the run started with ({recipe_file}): this tfllm's preset "
                    f"{recipe_name(config)!r} now differs in {shown}, which the run keeps as it began.", file=sys.stdout)
    return recorded


def check_flag_and_setting(config, key):
    """A flag and `--set` of the same setting that disagree (`--epochs 3 --set epochs=5`) are one line:
    the flag won without a word."""
    value = getattr(config, key)
    if value is not None and key in config.overrides and config.overrides[key] != value:
        flag = "--jit-compile/--no-jit-compile" if key == "jit_compile" else f"--{key.replace('_', '-')} {value}"
        raise UserInputError(f"{flag} and --set {key}={config.overrides[key]} say different things; give one.")


def check_counts(flags):
    """`--epochs`, `--steps` and `--batch-size` below 1, named as the flags they are (not as settings)."""
    for key in ("epochs", "steps", "batch_size"):
        if flags.get(key) is not None and flags[key] < 1:
            raise UserInputError(f"--{key.replace('_', '-')} must be at least 1, got {flags[key]}.")


def start_run(run_dir, config, preset, resume, texts, records=None, lowercase=True, targets=None):
    """Writes a fresh run's records and trains its tokenizer, or reads the tokenizer back to resume.

    Returns tfllm's tokenizer (trained on `texts`, the training split), or None
    with `--from-preset`, whose preset brings its own. `records` are further
    `{runs path: value}` files for a fresh run (the labels of a classifier);
    `lowercase` is the default when the preset does not say. With `targets`
    (a translation model's), the vocabulary lists their tokens first
    (`tokenizers.targets_first`).
    """
    if resume:
        # Keras' BackupAndRestore keeps weights, optimizer and epoch, not the random state: the seeded shuffle
        # (reshuffled each epoch) and dropout start again from the seed. A note: a command prints it, a Python
        # caller gets a TfllmWarning (train_causal_lm(verbose=0) printed it, where train_classifier's was silent).
        errors.note(f"Resuming the interrupted run in {run_dir} from its last backup; the data order and dropout "
                    "start over from the seed there, so its figures can differ slightly from an uninterrupted run's.",
                    file=sys.stdout)
    else:
        runs.write_records(run_dir, config, {**(records or {}), runs.RECIPE: preset})
    if config.precision and config.precision != "float32":
        print(f"Precision: {config.precision} (16-bit math, float32 weights)")
    if config.from_preset:
        return None
    if resume:
        return tokenizers.load_tokenizer(run_dir)
    tokenizer = tokenizers.train_tokenizer(texts, preset["tokenizer"], preset["vocabulary_size"],
                                           lowercase=preset.get("lowercase", lowercase))
    if targets is not None:
        tokenizer = tokenizers.targets_first(tokenizer, targets)
    tokenizers.save_tokenizer(tokenizer, run_dir)  # a resumed run reads it back
    return tokenizer


@contextlib.contextmanager
def preprocessed(task):
    """Detaches a KerasHub task's preprocessor while it trains on already-tokenized batches.

    KerasHub tasks map their preprocessor over any dataset given to `fit`,
    `evaluate` and `predict`; tfllm tokenizes once and caches instead.
    """
    preprocessor = task.preprocessor
    task.preprocessor = None
    try:
        yield task
    finally:
        task.preprocessor = preprocessor


# Evaluation batches (`fit`'s validation over all its epochs, and any evaluation after it) up to which
# Keras's test step runs eagerly: tracing it costs 1.5-2 s for a tiny classifier, the eager step ~80 ms
# a batch (stop 61, `tiny` on rotten_tomatoes: fit 4.6 -> 3.6 s with 3 validation batches, 8.5 -> 13.3 s
# with 67). Tests' and smoke runs' tiny splits fall below; real runs' validation is traced as before.
EAGER_EVALUATION_BATCHES = 10


@contextlib.contextmanager
def eager_evaluation(model, batches, strategy):
    """Inside the block `model.evaluate` (and `fit`'s validation) runs Keras's test step eagerly, when
    `batches` (how many it evaluates in all; None when unknown) are at most EAGER_EVALUATION_BATCHES and
    the model trains on one device. After the block the test step is traced again when next needed.
    Eager and traced steps agree to float rounding (a tiny run's val loss: 1e-7)."""
    # Under the default strategy only: a mirrored one over a single device (`--strategy mirrored` on a machine
    # with one CPU and no GPU) has one replica too, and its eager step printed TensorFlow's "Using
    # MirroredStrategy eagerly has significant overhead currently" at each fit's validation; traced, it does not.
    single_device = strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy,
                   tf.distribute.TPUStrategy))
    if batches is None or batches > EAGER_EVALUATION_BATCHES or not single_device:
        yield
        return
    run_eagerly = model.run_eagerly
    model.run_eagerly = True  # read as Keras builds the test function, and only then
    try:
        model.make_test_function(force=True)
    finally:
        model.run_eagerly = run_eagerly
    try:
        yield
    finally:
        model.test_function = None


def dataset_batches(ds, passes=1):
    """How many batches `passes` passes over `ds` read, or None where tf.data cannot tell without reading it."""
    batches = int(ds.cardinality())
    return batches * passes if batches >= 0 else None


def compile_task(task, jit_compile=None, unset="auto", **compile_arguments):
    """`task.compile(...)` that keeps a requested `jit_compile=True`, then `build_optimizer`.

    `jit_compile` is a recipe's value: True, False, "auto" (Keras' choice: XLA on GPUs, not on
    CPUs) or None, which means `unset`. tfllm's train, test and predict steps only ever see
    token ids: the preprocessor runs in the input pipeline or is detached while the task trains.
    """
    jit_compile = unset if jit_compile is None else jit_compile
    # Not under a distribution strategy, where Keras' own rule stands: a mirrored XLA step fails
    # ("Trying to access resource ... located in device CPU:1 from device CPU:0").
    keep_xla = jit_compile is True and not tf.distribute.has_strategy()
    task.compile(jit_compile=False if keep_xla else jit_compile, **compile_arguments)
    if keep_xla:
        # PRIVATE API: Keras's `Trainer._jit_compile`, behind the `jit_compile` setter (keras 3.15).
        # The setter turns True into False, with only a warning, when any layer the model tracks
        # cannot run under XLA (keras-team/keras#19521), and a KerasHub task tracks its
        # preprocessor's tokenizer (a `StringLookup`), still after it is detached, though no step
        # calls it. Every nanogpt-cpu run trained without XLA this way: 75 against 54 ms a step on
        # a 2-core EPYC (docs/benchmarks.md, "Stop 33: the train step was not XLA-compiled").
        task._jit_compile = True
    return build_optimizer(task)


def build_optimizer(model):
    """Creates a compiled model's optimizer variables now, so the train step is traced once.

    Without a distribution strategy Keras 3's TensorFlow trainer leaves them to the first
    trace of the train function (`_maybe_symbolic_build` returns early: "defer building
    ... for backwards compatibility"), and a `tf.function` that creates variables on its
    first trace is traced a second time: seconds of Python per run on a CPU. Under a
    strategy Keras builds them the same way, before the first step.
    """
    if model.built and model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return model


def recorded_from_preset(*run_dirs):
    """The `--from-preset` handle the first of `run_dirs` with a run.json records; "" for none (a from-scratch run)."""
    for run_dir in run_dirs:
        try:
            return read_json(runs.path(run_dir, runs.RUN_CONFIG)).get("from_preset") or ""
        except (OSError, ValueError):
            continue
    return ""


def keep_sequence_lengths(preprocessor):
    """Makes `preprocessor`'s saved config hold its encoder and decoder sequence lengths where its class leaves
    them out. KerasHub's `Seq2SeqLMPreprocessor` (BART's) has no `get_config` of its own, so preprocessor.json and
    task.json dropped them, and plain `keras_hub.models.Seq2SeqLM.from_preset(run)` came back at its default
    1024/1024: generate() failed on a backbone of 64 positions. Its constructor takes them, so with them in the
    config the run reloads at the lengths it trained with. (tfllm's own preprocessor saves them already.)
    keras-hub 0.32 (the pinned version); no upstream issue found for it yet: remove once the class saves them."""
    config = preprocessor.get_config()
    names = [name for name in ("encoder_sequence_length", "decoder_sequence_length")
             if name not in config and getattr(preprocessor, name, None) is not None]
    if names:
        get_config = preprocessor.get_config  # this instance's only: the class is KerasHub's
        preprocessor.get_config = lambda: {**get_config(), **{name: getattr(preprocessor, name) for name in names}}


def finish_run(run_dir, final_run_dir, task, preset, history, metrics):
    """Writes a finished run's preset, metrics and reports, then drops its resume state."""
    from tfllm.training import reporting

    # save_to_preset writes task.json before the weights: remove it first so a
    # crash mid-save never looks like a finished run.
    for name in (runs.TASK_CONFIG, runs.METRICS):
        if os.path.exists(runs.path(run_dir, name)):
            os.remove(runs.path(run_dir, name))
    # A fresh (unbuilt) optimizer, so the weights files hold no optimizer state that
    # every later from_preset would warn about skipping; training is over.
    task.compile()
    check_room(os.path.join(run_dir, "task.weights.h5"), task.weights)  # with model.weights.h5, the backbone's
    if task.preprocessor is not None:
        keep_sequence_lengths(task.preprocessor)
    task.save_to_preset(run_dir)
    for stray in glob.glob(os.path.join(run_dir, "*.tmp.weights.h5")):  # a checkpoint write a kill cut short
        os.remove(stray)
    # The policy the model trained (and predicts) under: run.json's --precision was reported nowhere else.
    metrics["precision"] = task.dtype_policy.name
    write_json(runs.path(run_dir, runs.METRICS), metrics)
    # The HParams row tells a fine-tune from a from-scratch run of the same sizes: `from_preset` is the handle
    # the run started from, as typed, or "" (run.json: the chief's records, in `final_run_dir`).
    hparams = {**preset, "from_preset": recorded_from_preset(final_run_dir, run_dir)}
    reporting.write_run_report(run_dir, task, task.preprocessor.tokenizer, hparams, history, metrics)
    # Both kept until now, so a stop before this resumes to the same weights; the backup goes first (the
    # run is finished without it), then the best epoch's weights, which the trainers loaded.
    runs.drop_backup(run_dir)
    if os.path.exists(best := os.path.join(run_dir, BEST_WEIGHTS)):
        os.remove(best)
    cleanup_worker_dir(run_dir, final_run_dir)


class EpochCounter(keras.callbacks.Callback):
    """Counts the run's epochs, also those done before a resume (Keras numbers epochs on from the backup)."""

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = max(self.epochs, epoch + 1)


def epochs_completed(callbacks, default):
    """The whole run's epoch count from `make_callbacks`' `EpochCounter` (else `default`)."""
    counts = [c.epochs for c in callbacks if isinstance(c, EpochCounter)]
    counts += [c.finished_epochs for c in callbacks if isinstance(c, Backup) and c.finished_epochs]
    return max(counts) if counts and max(counts) else default


class Perplexity(keras.callbacks.Callback):
    """Adds `perplexity` (and `val_perplexity`) = exp(`loss`, a logs entry) to the epoch logs, and `perplexity` to
    a fit's validation logs, for TensorBoard (so goes before `make_callbacks`' TensorBoard): its epoch curves and
    `evaluation_perplexity_vs_iterations` beside `evaluation_loss_vs_iterations`. A masked LM's is exp of its
    `masked_loss`, as metrics.json's perplexity is (its `loss` is a mean of batch means)."""

    def __init__(self, loss="loss"):
        super().__init__()
        self.loss = loss

    def on_test_end(self, logs=None):
        self._add(logs, "")

    def on_epoch_end(self, epoch, logs=None):
        for prefix in ("", "val_"):
            self._add(logs, prefix)

    def _add(self, logs, prefix):
        if logs is not None and prefix + self.loss in logs:
            logs[prefix + "perplexity"] = math.exp(min(float(logs[prefix + self.loss]), 50.0))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (so TensorBoard plots it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TrainingDiverged(UserInputError):
    """The loss became NaN or infinite: the settings (most often the learning rate) cannot train this model."""


class StopOnDivergence(keras.callbacks.Callback):
    """Keras' `TerminateOnNaN`, as an error: Keras only stops, and the run was then saved as finished
    (a generator) or failed later in a traceback (a classifier's naive-Bayes fit on NaN weights)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            if self.params.get("verbose") in (1, "auto"):  # the progress bar's line is left open between updates
                print(flush=True)  # so that the error is not written on the end of it, in a terminal
            raise TrainingDiverged(f"Training diverged: the loss became {float(loss)} in step {batch + 1} of an "
                                   "epoch, so nothing was kept. Lower the learning rate (--learning-rate) and run again.")


class StopWhenAsked(keras.callbacks.Callback):
    """Raises a Ctrl-C or `kill` again at the next batch or epoch, in case Python dropped it where its
    signal landed (see `errors.request_stop`), so that the run stops and is backed up as it should."""

    def on_train_batch_end(self, batch, logs=None):
        errors.raise_if_stopping()

    on_test_batch_end = on_predict_batch_end = on_epoch_end = on_train_batch_end


def save_weights_atomically(model, filepath):
    """`model.save_weights(filepath)` written beside the file and renamed over it, so that a kill while
    it is written leaves the previous file whole. Keras writes in place, and loads a file cut short
    with only warnings for the layers it lacks (the rest keep their fresh values)."""
    tmp = f"{filepath[: -len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5"  # Keras wants the suffix
    optimizer = getattr(model, "optimizer", None)
    built = optimizer is not None and optimizer.built  # then Keras saves its state with the weights
    check_room(tmp, list(model.weights) + (list(optimizer.variables) if built else []))
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_room(filepath, variables):
    """Raises a full disk's OSError (ENOSPC), or a file-size limit's (EFBIG), before a weights file of
    `variables` is written where it would not fit.

    HDF5 does not survive running out of space part-way through a file: h5py printed a traceback for each
    buffer it could not write, and the process then often crashed (SIGSEGV, exit status 139; h5py 3.14,
    HDF5 1.14.6), whatever was done with the error. Such a file takes its variables' bytes plus about
    1.2 KB of HDF5 records each (2 KB counted). A quota, or another process filling the disk meanwhile,
    goes unseen here.
    """
    need = sum(math.prod(v.shape) * tf.as_dtype(v.dtype).size + 2048 for v in variables) + (64 << 10)
    disk = os.statvfs(os.path.dirname(os.path.abspath(filepath)))
    free = disk.f_bavail * disk.f_frsize
    if free < need:
        # Decimal MB, as every size tfllm prints (`tfllm models`, the README's figures).
        raise OSError(errno.ENOSPC, f"No space left on device: the weights need about {need / 1e6:.1f} MB, "
                                    f"{free / 1e6:.1f} MB are free", filepath)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]  # `ulimit -f`: HDF5 fails the same way (EFBIG)
    if limit != resource.RLIM_INFINITY and limit < need:
        raise OSError(errno.EFBIG, f"File too large: the weights need about {need / 1e6:.1f} MB, this "
                                   f"process may write files of {limit / 1e6:.2f} MB", filepath)


def _sha256(file):
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_atomically(source, destination):
    tmp = f"{destination}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, destination)
    finally:  # a copy cut short (a full disk, a file-size limit) is not left in the backup
        if os.path.exists(tmp):
            os.remove(tmp)


def fit_done(backup_dir):
    """Whether the backup in `backup_dir` was written after `fit` had ended (`Backup.on_train_end`)."""
    metadata = os.path.join(backup_dir, "training_metadata.json")
    return os.path.exists(metadata) and bool(read_json(metadata).get("fit_done"))


BEST_WEIGHTS = "best.weights.h5"  # the best epoch's weights (`BestCheckpoint`), in the run directory


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` keeping the last two backups, every file written whole, so that a kill
    while one is written resumes from complete files, and a backup that cannot be read at all is one
    clear error."""

    def __init__(self, backup_dir):
        # Kept after `fit` until the run is saved (`finish_run` removes it): a stop during the work after
        # the last epoch (evaluation, the naive-Bayes path, explanations, the save) deleted the whole run,
        # as Keras had deleted the backup. `fit_done` in its metadata then resumes with no epoch to train.
        super().__init__(backup_dir, delete_checkpoint=False, double_checkpoint=True)
        self.finished_epochs = None  # the epochs of a fit that had ended before the resume
        # What the trainer measures of its fit for metrics.json (`measure_fit`), and the figures: measured
        # when fit ends and kept beside `fit_done`, or read back from there by a resume after fit had ended,
        # whose own fit trains nothing (its seconds, speed or time budget would be its no-op's). None: not
        # known (a backup from before they were kept, or a resume that found every epoch done but no
        # `fit_done`, when the stop came between the last epoch's backup and the end of fit).
        self.measure = None
        self.fit_figures = None
        self._trains = True
        self._restored = False  # by `RestoreFirst`, for this `fit`

    def restore_first(self):
        """`restore` now, where `on_train_begin` would (for `RestoreFirst`)."""
        self.restore()
        self._restored = True

    def on_train_end(self, logs=None):
        if self._trains:
            self.fit_figures = self.measure() if self.measure else {}
        self._mark_fit_done()

    def _mark_fit_done(self):
        if os.path.exists(self._training_metadata_path):
            write_json(self._training_metadata_path, {**read_json(self._training_metadata_path), "fit_done": True,
                                                      "fit_figures": self.fit_figures})

    def _save_model(self):
        # PRIVATE API: overrides Keras's `BackupAndRestore._save_model` (keras 3.15), which writes the
        # weights in place: a kill mid-write left a file that loads with warnings and resets what it
        # lacks (the optimizer's state, whole layers), and Keras' fallback to the `.bkp` copy
        # (keras-team/keras#20463) only runs on an OSError. Same files and metadata, each written whole.
        os.makedirs(self.backup_dir, exist_ok=True)
        for current, previous in ((self._weights_path, self._prev_weights_path),
                                  (self._training_metadata_path, self._prev_training_metadata_path)):
            if os.path.exists(current):
                _copy_atomically(current, previous)
        save_weights_atomically(self.model, self._weights_path)
        # The weights' hash pairs the two files: a kill between them leaves new weights beside the
        # previous epoch's metadata, which `on_train_begin` then passes over for the previous pair.
        write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                                                  "weights_sha256": _sha256(self._weights_path)})

    def on_train_begin(self, logs=None):
        if self._restored:  # `RestoreFirst` did, before the other callbacks began
            self._restored = False
            return
        self.restore()

    def restore(self):
        # PRIVATE API: Keras's `BackupAndRestore._load_model` (keras 3.15), read from the latest backup,
        # else from the previous one where it stands. Keras falls back only on an OSError, and by
        # copying the previous files over the latest (keras-team/keras#20463); a file that opens but
        # lacks layers raises a ValueError, and `RestoreOnly` workers must never write the chief's backup.
        latest = self._weights_path, self._training_metadata_path
        problem = None
        for weights, metadata in (latest, (self._prev_weights_path, self._prev_training_metadata_path)):
            if problem is not None and not os.path.exists(weights):
                break
            with tempfile.TemporaryDirectory() as scratch:
                if weights != latest[0]:  # Keras loads only files named *.weights.h5: read a copy
                    weights = shutil.copyfile(weights, os.path.join(scratch, "previous.weights.h5"))
                self._weights_path, self._training_metadata_path = weights, metadata
                try:
                    record = read_json(metadata) if os.path.exists(metadata) else {}
                    if "weights_sha256" in record and record["weights_sha256"] != _sha256(weights):
                        raise _Torn("its weights were written after its metadata, for the next epoch")
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        self._load_model()
                    # Keras loads a file without some nested layers with only a warning each, those layers
                    # keeping their fresh weights: another model's weights, as a file that lacks layers is.
                    skipped = [w for w in caught if str(w.message).startswith("Skipping nested container")]
                    for w in caught:
                        if w not in skipped:
                            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    if skipped:
                        raise ValueError(str(skipped[0].message).split(":")[0] + " (no such layers in the file)")
                    if record.get("fit_done"):
                        self.finished_epochs = self.model._initial_epoch
                        self.model._initial_epoch = self.params["epochs"]  # fit had ended: nothing left to train
                        self.fit_figures = record.get("fit_figures")
                    epochs = (self.params or {}).get("epochs")  # no params: restored outside `fit`
                    self._trains = epochs is None or (self.model._initial_epoch or 0) < epochs
                    return
                except (OSError, ValueError, KeyError) as e:
                    problem = problem or e
                finally:
                    self._weights_path, self._training_metadata_path = latest
        lines = [line for line in str(problem).splitlines() if line.strip()] or [type(problem).__name__]
        # Keras's "A total of 2 objects could not be loaded. Example error message for object <...>:" says
        # what is wrong on its next line.
        reason = " ".join(lines[:2] if lines[0].endswith(":") and len(lines) > 1 else lines[:1])[:300]
        if isinstance(problem, ValueError) and not isinstance(problem, _Torn):
            # A file that opens but whose layers are not this model's: the model this tfllm builds from the
            # run's recipe is not the one that wrote the backup (a kill mid-write is passed over above, for the
            # other copy). Said before as a backup that "cannot be read", to be deleted with its epochs.
            run_dir = os.path.dirname(os.path.normpath(self.backup_dir)) or "."
            raise UserInputError(
                f"The interrupted run in {run_dir!r} was started by another tfllm version (or its recipe, "
                f"{runs.RECIPE}, was edited since): the model this one builds from that recipe is not the one its "
                f"backup in {self.backup_dir!r} holds ({reason}). Finish it with the tfllm version that started it "
                f"(the same command), or start it over with this one: delete {self.backup_dir!r} (the epochs it "
                "trained are lost) and run the command again, or pass another --run-dir.") from None
        raise UserInputError(
            f"The backup in {self.backup_dir!r} cannot be read ({reason}), so the "
            f"interrupted run cannot resume. Delete that folder to start the run over.") from None


class _Torn(ValueError):
    """A backup's weights and metadata that do not pair up (`Backup.restore`)."""


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard writing each epoch's `evaluation_*_vs_iterations` points (validation against the
    optimizer's step) with the epoch's own scalars, at the epoch's end, rather than as its validation ends.
    Written there, an interruption after the validation but before the epoch's backup (a causal run's text
    sample is generated in between) left the point in the event file, and the resumed run, repeating that
    epoch, wrote it again: logs/validation held two at one step."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._fitting, self._evaluation = True, None

    def on_train_end(self, logs=None):
        self._fitting = False
        super().on_train_end(logs)

    def on_test_end(self, logs=None):
        if getattr(self, "_fitting", False) and self.model.optimizer is not None:  # a fit's validation: kept
            self._evaluation = dict(logs or {}), int(self.model.optimizer.iterations.numpy())  # a MirroredVariable has no int()
            logs = {}  # Keras then writes none of them, and closes the validation writer as ever
        super().on_test_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self._evaluation:
            values, step = self._evaluation
            self._evaluation = None
            # PRIVATE API: Keras's `TensorBoard._val_writer` and `summary` (keras 3.15): what Keras's own
            # `on_test_end` in keras/src/callbacks/tensorboard.py writes these points with.
            with self._val_writer.as_default():
                for name, value in values.items():
                    self.summary.scalar(f"evaluation_{name}_vs_iterations", value, step=step)


class RestoreFirst(keras.callbacks.Callback):
    """Restores a `Backup` as `fit` begins, before any other callback: TensorBoard opens a new event file
    in the run's logs when it begins, and a resume whose backup then could not be restored left one in the
    interrupted run. The backup itself stays after TensorBoard, which logs each epoch before it is backed up."""

    def __init__(self, backup):
        super().__init__()
        self.backup = backup

    def on_train_begin(self, logs=None):
        self.backup.restore_first()


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only=True)` whose best value so far survives an interruption (in
    `record`, in the backup folder): a resumed run then keeps the best epoch of the whole run, where
    Keras starts again from infinity and kept the best epoch since the resume. `write_record=False`
    (a non-chief worker, which keeps its own best weights in its scratch folder) only reads it, and
    on a resume starts from the chief's best weights, `chief_weights`."""

    def __init__(self, filepath, monitor, record, write_record=True, chief_weights=None):
        self.record, self.write_record = record, write_record
        best = read_json(record)["best"] if os.path.exists(record) else None
        if best is not None and chief_weights and os.path.exists(chief_weights):
            # A resumed non-chief worker has a new scratch folder, without the best weights of the epochs
            # before the interruption: it kept its last epoch's weights where the chief loaded its best, so
            # the workers ended with different models. Synchronous training makes the chief's best epoch
            # this worker's too. Safe to read now: before this fit's first step the chief, waiting on
            # this worker, cannot have written a newer one.
            _copy_atomically(chief_weights, filepath)
        super().__init__(filepath, monitor=monitor, save_best_only=True, save_weights_only=True,
                         initial_value_threshold=best)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.write_record and self.best is not None and math.isfinite(self.best):
            write_json(self.record, {"monitor": self.monitor, "best": float(self.best)})

    def _save_model(self, epoch, batch, logs):
        # PRIVATE API: overrides Keras's `ModelCheckpoint._save_model` (keras 3.15) to write the best
        # weights whole (`save_weights_atomically`); Keras writes in place, and a kill mid-write left a
        # file that loads with warnings (see `Backup._save_model`, keras-team/keras#20463).
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            save_weights_atomically(self.model, filepath)


class RestoreOnly(Backup):
    """Resumes from a backup without ever writing or deleting it.

    For non-chief workers in multi-worker training: synchronous training keeps
    the weights identical on every worker, so all of them restore the chief's
    backup (the run directory must be on storage every worker can read, as
    with TensorFlow's own multi-worker checkpoints) and only the chief writes it.
    """

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def _mark_fit_done(self):
        pass


def make_callbacks(
    run_dir, early_stopping_patience=None, monitor="val_loss", checkpoint=True, write_logs=True, backup_dir=None,
    ema=False,
):
    """TensorBoard, best-model checkpoint, early stopping, resume, stop on NaN.

    `write_logs=False` is for non-chief workers in multi-worker training, which
    must not write logs or checkpoints of their own; they only read the
    chief's backup in `backup_dir` (default `run_dir/backup`).
    `ema=True` is for an optimizer with `use_ema=True`: validation, the best
    checkpoint and early stopping's restore then see the averaged weights.
    Without it Keras swaps the average in only when `fit` ends, and the best
    checkpoint (raw weights) loaded afterwards silently undid the average.
    """
    backup_dir = backup_dir or os.path.join(run_dir, BACKUP)
    backup = (Backup if write_logs else RestoreOnly)(backup_dir)
    callbacks = [
        RestoreFirst(backup),  # before TensorBoard opens an event file: a resume that cannot restore adds none
        StopWhenAsked(),
        StopOnDivergence(),
        LearningRateLogger(),
        EpochCounter(),
    ]
    if write_logs:  # before the backup: a kill between the two re-logs an epoch, never skips its scalars
        callbacks.append(TensorBoard(os.path.join(run_dir, "logs"), write_graph=False))
    callbacks.append(backup)  # before the swap: it backs up the raw weights
    if ema:  # before the checkpoint and early stopping, which then keep the averaged weights
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if checkpoint:  # every worker: each ends on the best epoch's weights, so all report the run's metrics
        chief_weights = None if write_logs else os.path.join(os.path.dirname(backup_dir), BEST_WEIGHTS)
        callbacks.append(BestCheckpoint(os.path.join(run_dir, BEST_WEIGHTS), monitor,
                                        record=os.path.join(backup_dir, "best.json"), write_record=write_logs,
                                        chief_weights=chief_weights))
    if early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping_patience, restore_best_weights=True)
        )
    return callbacks


def measure_fit(callbacks, measure):
    """Has `make_callbacks`' backup call `measure()` when `fit` ends, for the figures of the fit that go
    in metrics.json (a dict of them), and keep them for a resume after that (`fit_figures`)."""
    next(c for c in callbacks if isinstance(c, Backup)).measure = measure


def fit_figures(callbacks, names):
    """The figures `measure_fit`'s function gave when this run's `fit` ended, also where the run resumed
    after that (its backup kept them); where they cannot be known, `{"not_measured": {name: why}}` for the
    `names` it gives, rather than the figures of a fit that trained nothing."""
    figures = next(c for c in callbacks if isinstance(c, Backup)).fit_figures
    if figures is not None:
        return figures
    why = "the run resumed with its training already done, from a backup that did not record this figure"
    return {"not_measured": {name: why for name in names}}


def logging_callbacks(callbacks):
    """The callbacks of `make_callbacks` that log and guard but keep no state to resume from
    (for a phase of a run that is not backed up, such as a classifier's frozen-backbone epochs)."""
    keep = (StopWhenAsked, StopOnDivergence, LearningRateLogger, EpochCounter, keras.callbacks.TensorBoard)
    return [c for c in callbacks if isinstance(c, keep)]


STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


def read_tf_config(environ=None):
    """The parsed `TF_CONFIG` environment variable, or None when it is unset.

    Checked here, because TensorFlow's own parser either ignores a bad value or
    fails deep inside cluster setup with a message that does not name it.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return None

    def bad(why):
        return UserInputError(f"TF_CONFIG {why}; set it to JSON like {TF_CONFIG_EXAMPLE}")

    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise bad(f"is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise bad("must be a JSON object")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict):
        raise bad('has no "cluster" object')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and _is_address(a) for a in addresses):
            raise bad(f'cluster["{job}"] must be a list of "host:port" strings (port 1-65535)')
    if len(cluster.get("chief", [])) > 1:  # TensorFlow's own check is a ValueError traceback
        raise bad(f'names {len(cluster["chief"])} chiefs; a cluster has at most one "chief" task')
    if not cluster.get("worker") and not cluster.get("chief"):
        # `{"cluster": {}}` has a cluster object, which the message said it had not: what it lacks is tasks.
        raise bad('has no workers: cluster["worker"] is empty or absent')
    # MultiWorkerMirroredStrategy runs chief and worker tasks only (a "ps" job is ParameterServerStrategy's).
    jobs = sorted(set(cluster) & {"chief", "worker"})
    if not isinstance(task, dict) or task.get("type") not in jobs:
        raise bad(f'needs "task": {{"type": one of {jobs or ["worker"]}, "index": N}} (multi_worker runs '
                  '"chief" and "worker" tasks)')
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise bad(f'task index {index!r} is not 0..{len(cluster[task["type"]]) - 1} for the {task["type"]!r} job')
    return value


def _is_address(address):
    host, _, port = address.rpartition(":")
    return bool(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536


def get_strategy(name="auto"):
    """The `tf.distribute` strategy for `--strategy NAME`.

    auto: `MirroredStrategy` over all GPUs when there are several, else the
    default (one device). mirrored: all GPUs, or every logical CPU device when
    there is no GPU (the tests split the CPU in two). multi_worker:
    `MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG`; it must be
    created before any other TensorFlow op runs, so trainers call this first.
    tpu: `TPUStrategy` on the TPU this machine is attached to.
    """
    if name not in STRATEGIES:
        raise UserInputError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name in ("auto", "default"):
        if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # CPU replicas sum gradients through one device, not TensorFlow's default
        # (RING collectives): inside Keras' multi-step loop (`steps_per_execution`
        # > 1, as the causal LM presets use) the collective all-reduce fails with
        # "You must feed a value for placeholder tensor 'while/cond/Placeholder'",
        # for any model (a plain Dense one too, measured with TF 2.21 / Keras 3.15);
        # with ReductionToOneDevice the two-replica run matches one device.
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(
            [d.name for d in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "multi_worker":
        if read_tf_config() is None:
            raise UserInputError(
                f"--strategy multi_worker needs the TF_CONFIG environment variable on every worker, e.g. {TF_CONFIG_EXAMPLE}"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
        raise UserInputError(f"--strategy tpu found no TPU ({e}); run on a TPU VM or choose another --strategy.") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True for the one worker that writes the model, logs and checkpoints (always, outside multi-worker)."""
    # MultiWorkerMirroredStrategy decides it from TF_CONFIG: the "chief" task,
    # or worker 0 when the cluster has no chief. Other strategies have one writer.
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def worker_run_dir(run_dir, strategy):
    """Where this worker writes: `run_dir` for the chief, a private temporary folder for the others.

    Every worker runs the same code (saving included), as in TensorFlow's
    multi-worker tutorial; non-chief copies go to a throwaway folder that
    `cleanup_worker_dir` removes, so only the chief's files appear in `run_dir`.
    A worker killed outright (SIGKILL, out of memory) cannot remove its folder: the next start of the
    same worker of the same run (the folder's name says which) removes those no live process owns.
    """
    if is_chief(strategy):
        return run_dir
    task = strategy.cluster_resolver.task_id
    run = hashlib.sha256(os.path.realpath(run_dir).encode()).hexdigest()[:12]
    prefix = f"tfllm-worker{task}-{run}-"
    for stale in glob.glob(os.path.join(glob.escape(tempfile.gettempdir()), glob.escape(prefix) + "*")):
        # A live worker holds its folder's lock (`runs.prepare`); the kernel dropped a killed one's.
        if os.path.isdir(stale) and runs.owner_pid(stale) is None:
            shutil.rmtree(stale, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(runs.lock_file(stale))
    return tempfile.mkdtemp(prefix=prefix)


def cleanup_worker_dir(path, run_dir):
    if os.path.abspath(path) != os.path.abspath(run_dir):
        shutil.rmtree(path, ignore_errors=True)


def check_global_batch(batch_size, strategy):
    """The batch size is global (split among replicas); it must divide evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        nearest = max(replicas, round(batch_size / replicas) * replicas)
        raise UserInputError(
            f"Global batch size {batch_size} does not divide evenly among {replicas} replicas; "
            f"use --batch-size {nearest} (a multiple of {replicas})."
        )


def check_multi_worker_recipe(preset, strategy):
    """Refuses, in one line naming the flags that fix it, what fails on every worker under
    `MultiWorkerMirroredStrategy` after minutes of setup: TensorFlow's collective all-reduce inside
    Keras' multi-step loop (`steps_per_execution` > 1, as the causal LM presets use: "You must feed a
    value for placeholder tensor '.../while/cond/Placeholder'"), and an XLA-compiled step, which has no
    CPU kernel for the collectives ("XLA_CPU_JIT: CollectiveGatherV2 unsupported")."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    fixes = []
    if preset.get("steps_per_execution", 1) > 1:
        fixes.append((f"steps_per_execution {preset['steps_per_execution']}", "--set steps_per_execution=1"))
    if preset.get("jit_compile") is True:
        fixes.append(("an XLA-compiled step (jit_compile)", "--no-jit-compile"))
    if fixes:
        raise UserInputError(f"--strategy multi_worker cannot train with {' or '.join(what for what, _ in fixes)}: "
                             "TensorFlow's collective ops between workers fail there; add "
                             f"{' '.join(flag for _, flag in fixes)} on every worker.")


def set_precision(policy):
    """Sets the Keras mixed-precision policy for models built from now on; returns the previous one's name.

    Layers read the global policy when they are built, so the model keeps it
    (and saves it in its config) after the policy is restored. The output
    layers are float32 whatever the policy, and Keras' `compile` wraps the
    optimizer in a `LossScaleOptimizer` for `mixed_float16` (whose gradients
    would otherwise underflow); bfloat16 has float32's range and needs none.
    """
    if policy not in PRECISIONS:
        raise UserInputError(f"Unknown precision {policy!r}; choose one of {', '.join(PRECISIONS)}.")
    if policy == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        errors.warn("mixed_float16 without a GPU: CPUs have no fast float16 math, so this trains "
                    "slower than float32; use --precision mixed_bfloat16 on CPUs and TPUs.")
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    return previous


@contextlib.contextmanager
def precision_scope(policy):
    """Builds models under `policy` and restores the previous global policy afterwards."""
    previous = set_precision(policy or "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _num_workers(strategy):
    """How many tasks `TF_CONFIG` names (Keras reduces over workers only when there are several: with one,
    its logs keep the axis the steps below would add)."""
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs)


def adapt_model_to_strategy(model, strategy):
    """Works around two Keras 3 bugs in `fit`/`evaluate` under tf.distribute (keras-team/keras#20585).

    1. Before its first step Keras peeks at one batch to build the model and
       averages it over replicas with `strategy.reduce`, which fails under
       `MultiWorkerMirroredStrategy`, and under `MirroredStrategy` when the
       batch does not split evenly (a validation set smaller than one batch).
       The batch only supplies shapes and dtypes, so this replica's own batch
       is used instead.
    2. Under `MultiWorkerMirroredStrategy` over several workers its step functions average the
       logged values over workers with `strategy.reduce("MEAN", v, axis=0)`,
       which fails on scalars; the steps here return them with a leading axis
       of 1, which that reduce removes.
    Single-device strategies are left alone.
    """
    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    # PRIVATE API: Keras's `Model._maybe_symbolic_build` (keras 3.15, called by the
    # TensorFlow trainer's fit/evaluate). Upstream: keras-team/keras#20585 (open:
    # Keras 3 does not support MultiWorkerMirroredStrategy); no separate issue for the
    # uneven-batch MirroredStrategy case was found. Guarded by tests/test_private_apis.py.
    keras_build = model._maybe_symbolic_build

    def build_from_local_batch(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        return keras_build(data_batch=data_batch)

    model._maybe_symbolic_build = build_from_local_batch
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and _num_workers(strategy) > 1:
        # PRIVATE BEHAVIOUR: Keras's make_train/test_function read `self.train_step` /
        # `self.test_step` per instance, so these wrappers take effect, and its
        # `reduce_per_replica` calls strategy.reduce("MEAN", v, axis=0) on the logs.
        # Upstream: keras-team/keras#20585. Guarded by tests/test_private_apis.py.
        keras_train_step, keras_test_step = model.train_step, model.test_step

        def with_axis(logs):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}

        model.train_step = lambda data: with_axis(keras_train_step(data))
        model.test_step = lambda data: with_axis(keras_test_step(data))
    return model
