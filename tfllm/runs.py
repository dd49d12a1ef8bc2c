"""The run directory: one place that knows its layout.

A finished run directory is a KerasHub preset with tfllm's records beside it:

    RUN_DIR/
      config.json  metadata.json  task.json  task.weights.h5  model.weights.h5
      preprocessor.json  tokenizer.json  assets/tokenizer/...    <- KerasHub's preset files
      metrics.json                                               <- val/test figures
      logs/                                                      <- TensorBoard
      training_curves.png
      tfllm/run.json      what `tfllm train`/`pretrain` was asked (TrainConfig)
      tfllm/recipe.json   the resolved hyperparameters
      tfllm/labels.json   class names (classifiers)
      tfllm/data.json     the data file's absolute path and sha256 when the run started (an edited file is
                          not re-split; a relative --data is found from another folder)
      tfllm/unlabeled.json  with --unlabeled: the sha256 of the unlabeled texts it learned from (self-training)
      backup/             only while unfinished: resume state

So `keras_hub.models.TextClassifier.from_preset(RUN_DIR)` (or `CausalLM`,
`MaskedLM`, `Backbone`, `Tokenizer`) loads a run after `import tfllm`, and a run
is a preset that `--from-preset` starts from.
"""

import collections.abc
import contextlib
import dataclasses
import fcntl  # POSIX only (Linux, macOS): the run directory's lock; Windows is not supported
import json
import os
import reprlib
import shutil
import stat
import tempfile
import threading

from tfllm import errors
from tfllm.config import TrainConfig, expand_home
from tfllm.errors import UserInputError, shell_path

RECORDS = "tfllm"  # tfllm's own files, in a folder of their own so they never collide with KerasHub's
RUN_CONFIG = os.path.join(RECORDS, "run.json")
RECIPE = os.path.join(RECORDS, "recipe.json")
LABELS = os.path.join(RECORDS, "labels.json")
DATA = os.path.join(RECORDS, "data.json")  # the data file's fingerprint when the run started
UNLABELED = os.path.join(RECORDS, "unlabeled.json")  # the fingerprint of the --unlabeled texts it learned from
METRICS = "metrics.json"
LOGS = "logs"
BACKUP = "backup"
TASK_CONFIG = "task.json"  # KerasHub writes it last-but-one in save_to_preset; with metrics.json it marks "finished"
# Files only the layout before runs were KerasHub presets had (tfllm builds before 2026-11-30, commit d468536;
# they were numbered 0.1.0 as the builds since are, so messages name the layout and the date, not a version).
_OLD_FORMAT = ("model.keras", "preset.json")
OLD_FORMAT = ("written by a tfllm from before runs became KerasHub presets (it holds model.keras and preset.json, "
              "the layout of tfllm builds before 2026-11-30), which this one cannot read")
TASK_NAMES = {"classify": "a text classifier", "generate": "a text generator", "pretrain": "a pretrained model",
              "translate": "a translation model"}


# The function that trains each task: what a Python caller is told where a command is told `tfllm train ...`.
TRAINER_CALLS = {"classify": "tfllm.train_classifier", "generate": "tfllm.training.causal_lm.train_causal_lm",
                 "translate": "tfllm.training.seq2seq.train_seq2seq", "pretrain": "tfllm.pretrain"}


def train_command(task, objective=None, **settings):
    """How to train a run of `task`, in the caller's words (`errors.spelled`): a command to type while one runs
    (`tfllm train --task generate --data DATA`), else its trainer's call (`train_causal_lm(TrainConfig(task=
    'generate', data=DATA, ...))`): a notebook read "train one with `tfllm train --task generate`". `settings`
    are TrainConfig fields, each a placeholder (DATA) or a path."""
    def value(v, shell):
        return v if v.isupper() else shell_path(v) if shell else repr(os.fspath(v))

    start = f"pretrain --objective {objective}" if task == "pretrain" else f"train --task {task}"
    flags = "".join(f" --{k.replace('_', '-')} {value(v, True)}" for k, v in settings.items())
    fields = "".join(f", {k}={value(v, False)}" for k, v in {"objective": objective, **settings}.items() if v)
    return errors.spelled(f"`tfllm {start}{flags}`",
                          python=f"{TRAINER_CALLS[task]}(TrainConfig(task={task!r}{fields}, ...))")


def path(run_dir, name):
    return os.path.join(run_dir, name)


# The process's umask, read once at import: reading it means setting it, and a write_text during training
# must not leave it at 0 for a moment while another thread (TensorBoard's writer) creates a file.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_json(file, value):
    """Writes JSON atomically: readers never see half a file."""
    write_text(file, json.dumps(value, indent=2, ensure_ascii=False))


def write_text(file, text):
    """Writes `text` to `file` through a temporary file beside it, renamed at the end: a failed or stopped
    write leaves the old file (or none), never half of one. A file that was there keeps its permissions.

    A symlink is followed: the file it points to is replaced and the link stays. A target that is not a
    regular file (a FIFO, a device, `/dev/stdout`: a descriptor under /proc) is written in place: renaming
    a file over it replaced the device or the link with a plain file (`--html /dev/null` as root broke the
    system's /dev/null). An OSError names `file`, not the hidden temporary.
    """
    target, in_place = _write_target(file)
    try:
        if in_place:
            with open(target, "w", encoding="utf-8") as f:
                f.write(text)
            return
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        # The name cut short: a file name near the system's limit (255 bytes) is valid, its temporary's longer one not.
        prefix = f".{os.path.basename(target).encode()[:100].decode(errors='ignore')}."
        fd, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    except OSError as e:
        raise _naming(e, file) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o666 & ~_UMASK)
        os.replace(temporary, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, OSError):
            raise _naming(e, file) from None
        raise


def _write_target(file):
    """(the path `write_text` writes, whether in place): `file` with its symlinks followed one by one, so that
    a link into /proc (`/dev/stdout` -> /proc/self/fd/1: an open descriptor, whose file must stay the one the
    shell opened) is seen as one; in place also where the file there is not a regular one."""
    def canonical(path):  # the folder's links resolved, the name's not yet
        return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))

    path = canonical(file)
    for _ in range(40):  # a loop of links: write to it as given, and let the system say ELOOP
        if path.startswith("/proc/"):
            return path, True
        if not os.path.islink(path):
            break
        path = canonical(os.path.join(os.path.dirname(path), os.readlink(path)))
    try:
        return path, not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # not there yet (a link to a missing file: the file it names is created)
        return path, False


def _naming(error, file):
    """`error` again, naming the file the caller gave (not a temporary, not a link's target)."""
    return type(error)(error.errno, error.strerror, os.fspath(file)) if error.errno else error


def files_signature(run_dir):
    """Paths, sizes and modification times of the files loading a run reads (None if unreadable): what a
    cache of loaded runs compares to load a retrained or edited run again.

    Every file counts, `assets/` (a tokenizer's vocabulary) and an ensemble's members included, except
    those under `logs/` and `backup/`, which loading never reads and which grow during training.
    """
    def fail(error):
        raise error

    try:
        signature = []
        for folder, subfolders, files in os.walk(run_dir, onerror=fail):
            subfolders[:] = [name for name in subfolders if name not in (LOGS, BACKUP)]
            for name in files:
                file = os.path.join(folder, name)
                stat = os.stat(file)
                signature.append((os.path.relpath(file, run_dir), stat.st_size, stat.st_mtime_ns))
        return tuple(sorted(signature))
    except OSError:
        return None


# Runs kept loaded per cache (tfllm.predict's, explain's, generate's, translate's): each holds a model, its
# tokenizer and compiled functions (~25 MB for a small one), and a notebook that went through ten runs kept
# them all for the life of the process. A few recent ones cover going back and forth between runs.
RUNS_KEPT = 4
_CACHES = []  # the caches `load_cached` and `cached_for_model` filled, for `clear_cache`


def _registered(cache):
    if not any(c is cache for c in _CACHES):
        _CACHES.append(cache)
    return cache


# One lock per (cache, run directory): two threads that missed the cache at once (a notebook's thread pool
# calling `tfllm.predict` on one run) each loaded it, twice the seconds and memory; the second now waits for
# the first's load and takes it. Other runs, and other caches' loads of this run, do not wait.
_RUN_LOCKS = {}
_RUN_LOCKS_LOCK = threading.Lock()


def _run_lock(cache, key):
    with _RUN_LOCKS_LOCK:
        return _RUN_LOCKS.setdefault((id(cache), key), threading.RLock())  # caches live as long as the process


def load_cached(cache, run_dir, load, size=RUNS_KEPT):
    """`load(run_dir)`, kept in `cache` per run directory: loaded once per process (threads asking at once
    wait for one load), and again only when the directory's files change (a retrained run), or when `size`
    other runs were used since (the least recently used goes first)."""
    key = os.path.realpath(run_dir)
    with _run_lock(cache, key):
        signature = files_signature(key)
        hit = _registered(cache).pop(key, None)  # put back last: the most recently used
        if hit is None or hit[0] != signature or signature is None:
            hit = (signature, load(run_dir))
        cache[key] = hit
    while len(cache) > size:
        cache.pop(next(iter(cache)), None)  # another thread may have dropped it first
    return hit[1]


def clear_cache():
    """Drops the runs and models that `tfllm.predict`, `explain`, `generate`, `translate` and `evaluate` keep
    loaded (the last `RUNS_KEPT` of each), freeing their memory; the next call loads its run again."""
    for cache in _CACHES:
        cache.clear()
    import gc

    gc.collect()


def cached_for_model(cache, model, build, extra=(), size=4):
    """`build(model)` for a model loaded by the caller (and `extra`, what else `build` reads), kept for the
    last `size` of them (each entry holds its model alive): a notebook's loop over one loaded model compiles
    its functions once."""
    key = (id(model), extra)
    hit = _registered(cache).pop(key, None)
    if hit is None or hit[0] is not model:
        hit = (model, build(model))
    cache[key] = hit
    while len(cache) > size:
        cache.pop(next(iter(cache)))
    return hit[1]


def decoder_of(value, function, own, keras_task, by_model, build, cached):
    """What `function` (generate, translate) decodes with: `value` itself if it is an `own` decoder; for a
    task loaded through KerasHub (a `keras_task`), `build(task)`, kept per model; else the cached decoder
    of a run directory, `cached(run_dir)`."""
    if isinstance(value, own):
        return value
    if isinstance(value, keras_task):  # `keras_task.from_preset(run_dir)`
        if value.preprocessor is None:
            raise UserInputError(f"This {keras_task.__name__} has no preprocessor; {function} needs one to tokenize "
                                 f"(or pass a {own.__name__} of it).")
        return cached_for_model(by_model, value, build)
    return cached(run_dir_argument(value, function, f", a {own.__name__} or a KerasHub {keras_task.__name__}"))


def refuse_unknown_options(function, options, takes):
    """One line naming the options `function` takes, for one of `options` that is not among them."""
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise UserInputError(f"{function} takes no option {unknown[0]!r}; it takes {', '.join(sorted(takes))}.")


def takes_named_options(function):
    """`function` refusing a keyword argument it does not take as `tfllm.evaluate` refuses one
    (`refuse_unknown_options`): `tfllm.translate(run, texts, max_length=5)` was Python's TypeError."""
    import functools
    import inspect

    parameters = inspect.signature(function).parameters
    takes = [name for name, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(function)
    def checked(*args, **kwargs):
        refuse_unknown_options(function.__name__, kwargs, takes)
        return function(*args, **kwargs)

    return checked


def run_dir_argument(value, function, others=""):
    """`value` as a path string, a `~` at its start the home folder, or a one-line error saying what `function`
    takes (`others`: beside a run directory): None or a loaded model failed deep in os.path with a TypeError.
    Every Python function that opens a run takes its argument through here: `TrainConfig(run_dir="~/runs/x")`
    trained into the home folder, and `tfllm.predict("~/runs/x", ...)` then called it "not a tfllm run directory"."""
    if isinstance(value, (str, os.PathLike)):
        return expand_home(value)
    raise UserInputError(f"{function} takes the path of a run directory{others}, got {type(value).__name__} "
                         f"{reprlib.repr(value)}.")


def texts_argument(texts, what):
    """`texts` if it is an iterable of texts to go through, else a one-line error naming `what`: a string
    went through character by character, a dict by its keys, None was a TypeError."""
    if isinstance(texts, str):
        raise UserInputError(f"{what} must be a list of strings, got a single string; wrap it in a list.")
    if isinstance(texts, (dict, bytes)) or not isinstance(texts, collections.abc.Iterable):
        raise UserInputError(f"{what} must be a list of strings, got {type(texts).__name__} {reprlib.repr(texts)}.")
    return texts


def refuse_non_strings(items, name="Text {}", offset=0):
    """A text that is not a str (a number, None, bytes from a file read in binary) failed deep in the
    tokenizer with a TypeError that named neither the text nor the fix. `name` names item i (counted from
    `offset` + 1: how many came before these)."""
    for i, item in enumerate(items, offset + 1):
        if not isinstance(item, str):
            decode = "; decode it first (text.decode('utf-8'))" if isinstance(item, bytes) else ""
            what = "None" if item is None else f"{type(item).__name__} ({item!r:.40})"
            raise UserInputError(f"{name.format(i)} is {what}, not a string{decode}.")


def read_train_config(run_dir):
    """The `TrainConfig` a finished run was trained with (fields another tfllm version recorded ignored)."""
    return TrainConfig.from_dict(read_config(run_dir), strict=False)


def read_json(file):
    with open(file, encoding="utf-8") as f:
        return json.load(f)


# The entries a run writes at its top level (the layout above; ensemble.MEMBERS, common.BEST_WEIGHTS and
# reporting.CURVES_PNG by name, as those modules import this one), besides KerasHub's weights files and shards
# (`*.weights.h5`, `*.weights.json`) and tfllm's hidden temporaries: anything else is the user's, which
# --overwrite would delete with the run.
_RUN_ENTRIES = {"config.json", "metadata.json", TASK_CONFIG, "preprocessor.json", "tokenizer.json", "assets", METRICS,
                LOGS, "training_curves.png", RECORDS, BACKUP, "members", *_OLD_FORMAT}


# Hidden entries that are not a user's work: tfllm's own temporaries (`write_atomic`'s `.NAME.*.tmp`,
# `drop_backup`'s folder) and what file browsers and Jupyter leave in any folder they show. Any other hidden
# entry (a `.git`, a `.notes`) is the user's: --overwrite deleted those without a word.
_HIDDEN_CLUTTER = {".backup.removing", ".DS_Store", ".ipynb_checkpoints", ".directory", ".Trash-0"}


def foreign_entries(run_dir):
    """The names in `run_dir` that no tfllm run writes (a user's notes, a run trained into it by hand)."""
    return sorted(name for name in os.listdir(run_dir) if name not in _RUN_ENTRIES and name not in _HIDDEN_CLUTTER
                  and not (name.startswith(".") and name.endswith(".tmp"))
                  and not name.endswith((".weights.h5", ".weights.json")))


def check_no_foreign_entries(run_dir, deleted_by="--overwrite would delete them with the run"):
    """Refuses to delete a run folder (--overwrite, a dead start's rerun) that holds what a tfllm run does not
    write: `train --overwrite` deleted a user's NOTES.txt and a run trained into a subfolder without a word."""
    names = foreign_entries(run_dir) if os.path.isdir(run_dir) else []
    if names:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        raise UserInputError(f"Run directory {run_dir!r} holds {', '.join(names[:3])}{more}, which a tfllm run does "
                             f"not write; {deleted_by}. Move them out of the folder, then run the command again.")


def check_not_inside_a_run(run_dir):
    """Refuses a run directory inside another run's folder (runs/a/inner in runs/a), which retraining that run
    with --overwrite deletes, or inside a `tfllm tune` search folder (its tuning.json, tfllm.tuning.SUMMARY):
    `train --overwrite --run-dir SEARCH/best` was accepted, and the search's next call copied its best trial over
    that run without a word (or, into a trial's folder, tuning.json went on scoring a run it no longer held). An
    ensemble's members, and a search's trials, trained into its folder by this process, are its own."""
    folder = os.path.dirname(os.path.abspath(run_dir))
    while folder != os.path.dirname(folder):
        if os.path.exists(os.path.join(folder, "tuning.json")) and lock_file(folder) not in _held:
            raise UserInputError(f"Run directory {str(run_dir)!r} is inside the hyperparameter search in {folder!r}, whose "
                                 "trials/ and best/ `tfllm tune` writes (and replaces). Pass a --run-dir outside it "
                                 "(e.g. beside it).")
        if os.path.exists(path(folder, RUN_CONFIG)) and lock_file(folder) not in _held:
            raise UserInputError(f"Run directory {run_dir!r} is inside the run in {folder!r}, which "
                                 "--overwrite would delete with it. Pass a --run-dir outside it (e.g. beside it).")
        folder = os.path.dirname(folder)


def enclosing_run(run_dir):
    """The run folder this process holds that `run_dir` is inside (an ensemble's, for a member), as `run_dir`
    spells it, or None."""
    folder = os.path.dirname(os.path.normpath(run_dir))
    while folder and folder != os.path.dirname(folder):
        if lock_file(folder) in _held and os.path.exists(path(folder, RUN_CONFIG)):
            return folder
        folder = os.path.dirname(folder)
    return None


def is_old_format(run_dir):
    return any(os.path.exists(path(run_dir, name)) for name in _OLD_FORMAT)


def drop_backup(run_dir):
    """Removes a finished run's resume state (`backup/`) in one step: renamed away, then deleted. Deleted
    in place, file by file, a kill in between left part of it, and the finished run looked interrupted: a
    rerun "resumed" from epoch 1 and replaced its weights and metrics. What such a kill leaves now is a
    hidden folder, removed by the next call here."""
    backup, removing = path(run_dir, BACKUP), path(run_dir, ".backup.removing")
    shutil.rmtree(removing, ignore_errors=True)
    if os.path.isdir(backup):
        os.rename(backup, removing)
    shutil.rmtree(removing, ignore_errors=True)


def has_backup(backup_dir):
    """Whether `backup_dir` holds something to resume from (weights, an ensemble's marker): a folder left
    empty, or with only a write's temporary file (the disk filled up on the first backup), has not."""
    return os.path.isdir(backup_dir) and any(".tmp" not in name for name in os.listdir(backup_dir))


def is_unfinished(run_dir):
    return has_backup(path(run_dir, BACKUP)) and os.path.exists(path(run_dir, RUN_CONFIG))


def has_weights(run_dir):
    """The backbone's weights: one file, or KerasHub's shard index for a big backbone. A run writes them when
    it finishes (save_to_preset), never before."""
    return any(os.path.exists(path(run_dir, name)) for name in ("model.weights.h5", "model.weights.json"))


# What a finished run holds besides its weights (save_to_preset's config.json and task.json, tfllm's records).
_FINISHED_FILES = (RUN_CONFIG, "config.json", TASK_CONFIG, METRICS)


def is_finished(run_dir):
    return has_weights(run_dir) and all(os.path.exists(path(run_dir, name)) for name in _FINISHED_FILES) \
        and not os.path.isdir(path(run_dir, BACKUP))


def missing_files(run_dir):
    """The files a run that finished (its weights written, its backup gone) has lost since, e.g. a
    metrics.json deleted by hand; [] for any other folder."""
    if not has_weights(run_dir) or os.path.isdir(path(run_dir, BACKUP)):
        return []
    return [name for name in _FINISHED_FILES if not os.path.exists(path(run_dir, name))]


def pass_a_run():
    """The fix for a path that holds no run, in the caller's words. Every command that reads a run (predict,
    evaluate, export, generate, translate, explain) takes it as RUN_DIR, no flag: it said "Pass the --run-dir of
    a training run", which those commands refuse, and a notebook read the flag as `run_dir=`."""
    return errors.spelled("Pass the RUN_DIR of a training run (the folder `tfllm train --run-dir` wrote).",
                          python="Pass the run directory of a training run (its TrainConfig's run_dir).")


def check_finished(run_dir):
    """Raises a one-line `UserInputError` unless `run_dir` holds a finished tfllm run."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise UserInputError(f"A run directory is a path (str or pathlib.Path), got {type(run_dir).__name__}: "
                             f"{run_dir!r}. {pass_a_run()}")
    run_dir = os.fspath(run_dir)  # messages name a pathlib.Path as the user wrote it, not PosixPath('...')
    if is_old_format(run_dir):
        raise UserInputError(
            f"{run_dir!r} was {OLD_FORMAT}. Retrain it with this tfllm: the same "
            f"{errors.spelled('`tfllm train` command', python='training function call')} (its settings "
            f"are in {path(run_dir, 'config.json')}) with a new --run-dir, or with --overwrite to replace it."
        )
    if not os.path.exists(path(run_dir, RUN_CONFIG)):
        if os.path.exists(os.path.join(run_dir, "tuning.json")):  # `tfllm tune`'s folder (tfllm.tuning.SUMMARY)
            raise UserInputError(f"{run_dir!r} holds a hyperparameter search (tfllm tune), not a run; pass its best "
                                 f"run, {os.path.join(run_dir, 'best')!r}.")
        preset = _keras_hub_preset_class(run_dir)
        if preset:  # a KerasHub preset saved elsewhere (save_to_preset): what tfllm can do with it
            task = "generate" if preset.endswith("CausalLM") else "translate" if preset.endswith("Seq2SeqLM") else "classify"
            raise UserInputError(
                f"{run_dir!r} is a KerasHub preset ({preset}), not a tfllm run. Fine-tune it into one"
                f"{' (a classifier keeps its backbone and tokenizer, with a new head)' if task == 'classify' else ''}: "
                f"{train_command(task, data='DATA', from_preset=run_dir, run_dir='RUN')}, then use RUN.")
        raise UserInputError(f"{run_dir!r} is not a tfllm run directory (no {RUN_CONFIG}). {pass_a_run()}")
    missing = missing_files(run_dir)
    if missing:
        raise UserInputError(f"{run_dir!r} holds a finished run that has lost {', '.join(missing)} since. Put "
                             f"{'it' if len(missing) == 1 else 'them'} back, or retrain it with its command and "
                             "--overwrite.")
    _check_vocabulary(run_dir)
    if not is_finished(run_dir):
        previous = _previous(run_dir)
        kept = (f" The finished run it replaces (--overwrite) is kept in {previous!r} until then; use that path "
                "meanwhile.") if is_finished(previous) else ""
        pid = owner_pid(run_dir)
        if pid is not None:
            raise UserInputError(f"{run_dir!r} is being trained by another tfllm process"
                                 f"{f' (pid {pid})' if pid else ''}; wait for it to finish.{kept}")
        if dead_start(run_dir):  # killed before its first backup: a rerun starts over, nothing to resume
            if is_finished(previous):
                raise UserInputError(
                    f"{run_dir!r} holds a run that was stopped before its first backup: run its training command "
                    "again to start it over (with --overwrite), or without --overwrite to put back the finished "
                    f"run it was to replace, kept in {previous!r} until then.")
            raise UserInputError(f"{run_dir!r} holds a run that was stopped before its first backup: run its "
                                 "training command again (it starts over).")
        again = errors.spelled("Run its training command again",  # a notebook has no command: it called a function
                               python="Call its training function again with the same arguments")
        raise UserInputError(f"{run_dir!r} holds a run that did not finish. {again} to resume it.{kept}")


VOCABULARY_FILE = os.path.join("assets", "tokenizer", "vocabulary.txt")


def _check_vocabulary(run_dir):
    """Refuses a tfllm WordPiece vocabulary whose token count is not the model's: a file cut short or edited
    since training loaded without a word and gave other answers (the ids past its end read as unknown)."""
    try:
        if read_json(path(run_dir, "tokenizer.json")).get("module") != "tfllm.tokenizers":
            return  # a KerasHub preset's own tokenizer: its vocabulary need not match the embedding's rows
        size = read_json(path(run_dir, "config.json"))["config"]["vocabulary_size"]
        with open(path(run_dir, VOCABULARY_FILE), "rb") as f:
            count = sum(1 for _ in f)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no such files (a character vocabulary, an ensemble): other checks speak for them
    if isinstance(size, int) and count != size:
        raise UserInputError(f"{run_dir!r}: its vocabulary ({VOCABULARY_FILE}) has {count} tokens but its model "
                             f"{size}: the file changed since the run was trained. Put it back, or retrain the run.")


def _keras_hub_preset_class(folder):
    """The class a KerasHub preset folder holds (its task's, else its backbone's), or None."""
    if not os.path.exists(path(folder, "metadata.json")):
        return None
    for name in (TASK_CONFIG, "config.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return str(read_json(path(folder, name))["class_name"])
    return None


def read_config(run_dir):
    """The run's TrainConfig fields as a dict. Its `data` is recorded as typed; a relative path that names
    nothing from the folder this process runs in (the run is evaluated or exported from elsewhere) is read as
    the absolute path training resolved it to (tfllm/data.json): the file read from there, or, when it is gone,
    the one path a message can tell the user to put it back at."""
    config = read_json(path(run_dir, RUN_CONFIG))
    data = config.get("data")
    if isinstance(data, str) and not os.path.isabs(data) and not os.path.exists(data):
        try:
            where = read_json(path(run_dir, DATA)).get("path")
        except (OSError, ValueError):
            where = None  # a run from before the record
        if where:
            config["data"] = where
    return config


def task_of(run_dir):
    """'classify', 'generate', 'translate' or 'pretrain' (with the objective in the config)."""
    check_finished(run_dir)
    return read_config(run_dir).get("task", "classify")


def require_task(run_dir, *tasks, hint=""):
    """The run's task if it is one of `tasks` ("generate" for a causal pretraining run, which is a text
    generator), else a one-line UserInputError."""
    task = task_of(run_dir)
    run_dir = os.fspath(run_dir)  # a str in the message below (task_of has checked it is a path)
    if task == "pretrain" and "generate" in tasks and read_config(run_dir).get("objective") == "causal":
        return "generate"
    if task not in tasks:
        raise UserInputError(f"{run_dir!r} holds {TASK_NAMES.get(task, task)}, not "
                             f"{' or '.join(TASK_NAMES.get(t, t) for t in tasks)}.{' ' + hint if hint else ''}")
    return task


def explainable_task(run_dir):
    """"classify" or "generate" (a causal pretraining run is a text generator), else a one-line UserInputError."""
    return require_task(run_dir, "classify", "generate", hint="tfllm explain works on classifiers and text generators.")


def exportable_task(run_dir):
    """"classify", "generate" (a causal pretraining run too) or "translate", else a one-line UserInputError; for a
    masked-LM or word-vector pretraining run it says how to fine-tune one that exports."""
    hint = classifier_hint(run_dir) if task_of(run_dir) == "pretrain" else ""
    return require_task(run_dir, "classify", "generate", "translate", hint=hint)


def fine_tuning_preset(handle):
    """The classifier recipe `tfllm train --from-preset HANDLE` uses unless `--preset` says:
    `default` over a word-vector run (its encoder has that recipe's shape and was made for it),
    `finetune` (a small learning rate with warm-up) over any other preset."""
    vectors = os.path.isdir(handle) and is_finished(handle) and read_config(handle).get("objective") == "vectors"
    return "default" if vectors else "finetune"


def classifier_hint(run_dir):
    """What to do with a run that `predict`, `evaluate` or `explain` cannot take as a classifier."""
    if task_of(run_dir) == "pretrain" and read_config(run_dir).get("objective") != "causal":
        return f"Fine-tune it into one: {train_command('classify', data='DATA', from_preset=run_dir)}."
    if task_of(run_dir) == "translate":
        return f"Use `tfllm translate {shell_path(run_dir)} TEXT` for a translation model."
    return f"Use `tfllm generate {shell_path(run_dir)} PROMPT` for a text generator."


def read_labels(run_dir):
    return read_json(path(run_dir, LABELS))


def read_recipe(run_dir):
    return read_json(path(run_dir, RECIPE))


@contextlib.contextmanager
def loading(run_dir):
    """Turns a finished run directory whose files cannot be read (a weights file cut short, a missing
    vocabulary, a JSON file that does not parse) into one UserInputError naming it, not a traceback from
    h5py, KerasHub or json. `load_task` loads in it; commands that read more of a run (its labels, its
    tokenizer for a NumPy path) load in it too."""
    try:
        yield
    except UserInputError:
        raise
    except (OSError, ValueError, KeyError) as e:
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserInputError(f"Run directory {os.fspath(run_dir)!r} cannot be loaded ({type(e).__name__}: {reason}); "
                             "restore its files from a copy, or train it again (with --overwrite).") from e


# One model is built at a time: Keras rewrites each model class's `__bases__` (it puts
# `Functional` in) on that class's first construction, without a lock, so two threads loading
# their first model at once (two `tfllm.explain(run_dir, ...)`) failed in one of them with
# `super(type, obj)` or "a __bases__ item causes an inheritance cycle". Loading is not on a hot path.
# Upstream: keras-team/keras#17270 (the rewrite of a subclass's bases by a functional instance) and
# tensorflow/tensorflow#33986 (models built on several threads at once).
_LOAD_LOCK = threading.RLock()


def load_task(run_dir, kind=None, dtype=None):
    """The KerasHub task of a finished run, loaded with `from_preset` (preprocessor attached).

    `kind` is the KerasHub base class to load as (default: from the run's task).
    `dtype` is the dtype policy to compute in; by default the run's own (a
    `mixed_bfloat16` run computes in bfloat16, as it was trained and scored).
    Exports pass "float32": TFLite has no bfloat16 kernels, and an exported
    model should not depend on the hardware it was trained on.
    """
    with _LOAD_LOCK:
        return _load_task(run_dir, kind, dtype)


def _load_task(run_dir, kind, dtype):
    import keras
    import keras_hub

    import tfllm.models  # noqa: F401  (registers tfllm's classes for from_preset)

    # KerasHub's from_preset takes only a str; "~/runs/x" is the home folder's, as TrainConfig trained it
    # (not run_dir_argument: anything else is check_finished's to refuse, once the arguments are checked).
    run_dir = expand_home(run_dir)
    # The arguments are checked before loading: inside `loading` a bad one read as a damaged run ("restore its
    # files from a copy, or train it again"), and kind="foo" was an AttributeError on `from_preset`.
    if dtype is not None:
        try:
            keras.dtype_policies.get(dtype)
        except (ValueError, TypeError):
            raise UserInputError(f"dtype={dtype!r} is not a Keras dtype policy; pass one such as 'float32', "
                                 "'bfloat16' or 'mixed_bfloat16', or leave it out (the run's own).") from None
    if kind is not None and not (isinstance(kind, type) and issubclass(kind, keras_hub.models.Task)
                                 and kind is not keras_hub.models.Task):  # Task.from_preset refuses itself
        raise UserInputError(f"kind={kind!r} is not a KerasHub task class; pass one such as "
                             "keras_hub.models.TextClassifier, or leave it out (the run's own task).")
    with loading(run_dir):  # a weights file cut short, a config that does not parse: one line
        task = task_of(run_dir)
        own = {"classify": keras_hub.models.TextClassifier, "generate": keras_hub.models.CausalLM,
               "translate": keras_hub.models.Seq2SeqLM}.get(task)
        if own is None:
            # Only a causal run holds a CausalLM; a masked-LM or word-vector one (and one saved before pretrain
            # recorded its default objective, None) holds a MaskedLM, as task_of and `tfllm evaluate` read it.
            causal = read_config(run_dir).get("objective") == "causal"
            own = keras_hub.models.CausalLM if causal else keras_hub.models.MaskedLM
        if kind is not None and not (issubclass(own, kind) or issubclass(kind, own)):
            use = {"classify": "tfllm.predict", "generate": "tfllm.generate", "translate": "tfllm.translate"}.get(task)
            raise UserInputError(f"{run_dir!r} holds {TASK_NAMES.get(task, task)} (a {own.__name__}), which "
                                 f"kind={kind.__name__} cannot load; pass "
                                 f"kind=keras_hub.models.{own.__name__} or leave kind out"
                                 f"{f', or use {use}' if use else ''}.")
        kind = kind or own
        # keras-hub 0.32's from_preset checks a saved dtype policy with `is_float_dtype`, which
        # raises on a mixed policy ("Invalid dtype: mixed_bfloat16"; no upstream issue found):
        # naming the run's own policy skips that check and loads the model as it was trained.
        policy = read_json(path(run_dir, "config.json")).get("config", {}).get("dtype") or {}
        name = policy.get("config", {}).get("name", "") if isinstance(policy, dict) else str(policy)
        dtype = dtype or (name if name.startswith("mixed_") else None)
        # Built uncompiled, so no optimizer is restored, then compiled as KerasHub's constructor would have.
        # task.weights.h5 holds the fresh optimizer `finish_run` compiled, which under mixed_float16 is Keras's
        # LossScaleOptimizer (4 variables); loaded under another policy (exports compute in float32) the task's
        # own Adam has 2, and Keras warned "Skipping variable loading for optimizer 'adam' ... 4 variables".
        # A finished run's optimizer holds nothing to restore; every layer's weights load, and fail, as before.
        model = kind.from_preset(run_dir, compile=False, **({"dtype": dtype} if dtype else {}))
        model.compile()
    from tfllm.models import EnsembleClassifier, TextClassifier

    if isinstance(model, (TextClassifier, EnsembleClassifier)) and model.label_names is None and os.path.exists(path(run_dir, LABELS)):
        model.label_names = read_labels(run_dir)  # a run saved before task.json held them
    return model


def load_translation_task(run_dir, dtype=None):
    """A translation run's `Seq2SeqLM` with its preprocessor at the run's lengths.

    KerasHub's own seq2seq preprocessors (BART's) do not save their sequence
    lengths in `preprocessor.json` (runs save them since
    `training.common.keep_sequence_lengths`; older ones do not); the run's recipe has them.
    """
    import keras_hub

    model = load_task(run_dir, keras_hub.models.Seq2SeqLM, dtype=dtype)
    recipe = read_recipe(run_dir)
    for name in ("encoder_sequence_length", "decoder_sequence_length"):
        if recipe.get(name):
            setattr(model.preprocessor, name, recipe[name])
    return model


def _previous(run_dir):
    """Where `--overwrite` keeps the finished run it replaces until the new one has finished."""
    parent, name = os.path.split(os.path.abspath(run_dir))
    return os.path.join(parent, f".{name}.previous")


# --------------------------------------------------------------------------- who owns a run directory
#
# One training command at a time in a run directory. Two at once took each other's live run for a killed
# one, deleted it and trained into the same folder. The owner holds an `fcntl.flock` on `.NAME.lock`
# beside the folder (in its parent, so the lock stays put while --overwrite moves the folder aside). The
# kernel drops the lock when its process dies, so a SIGKILLed run never leaves a stale lock behind and the
# same command resumes it.

_held = {}  # lock file -> [file descriptor, times acquired, folders created for it]: one process nests


def lock_file(run_dir):
    parent, name = os.path.split(os.path.realpath(run_dir))
    return os.path.join(parent, f".{name}.lock")


def _in_use(run_dir, pid):
    return UserInputError(f"Run directory {run_dir!r} is in use by another tfllm process"
                          f"{f' (pid {pid})' if pid else ''}; wait for it or choose another --run-dir.")


def _read_pid(fd):
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def acquire(run_dir):
    """Makes this process the owner of `run_dir` (again, if it is already: each `acquire` is matched by a
    `release`), or raises a one-line `UserInputError` naming the process that owns it."""
    file = lock_file(run_dir)
    if file in _held:
        _held[file][1] += 1
        return
    parent, created = os.path.dirname(file), None
    if not os.path.isdir(parent):
        created = parent  # the topmost folder made here, removed again on release if left empty
        while not os.path.isdir(os.path.dirname(created)):
            created = os.path.dirname(created)
        os.makedirs(parent, exist_ok=True)
    while True:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise _in_use(run_dir, pid) from None
        # The owner before us removes the file on release: if it did after we opened it, we hold a lock
        # on a file nobody else sees. Lock the one now there instead.
        try:
            current = os.stat(file)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message another command gives
    _held[file] = [fd, 1, created]


def release(run_dir):
    """Undoes one `acquire`; the last one removes the lock file (still holding it, so no process can
    take a lock on a file that is gone) and any folder `acquire` made that is left empty."""
    file = lock_file(run_dir)
    if file not in _held:
        return
    _held[file][1] -= 1
    if _held[file][1]:
        return
    fd, _, created = _held.pop(file)
    with contextlib.suppress(OSError):
        os.remove(file)
    os.close(fd)
    folder = os.path.dirname(file)  # a run that failed at once leaves no empty folders it made
    while created and (folder == created or folder.startswith(created + os.sep)):
        try:
            os.rmdir(folder)
        except OSError:
            break
        folder = os.path.dirname(folder)


@contextlib.contextmanager
def owned(run_dir):
    """Holds `run_dir` for the `with` block (`acquire`, then `release`)."""
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def check_folder(path, what="Run directory", flag="--run-dir", beside=None):
    """A one-line `UserInputError` unless this process can write in the folder `path` (`what`, given
    with `flag`), for the checks that come before any work. Nothing on its way may be a file, and the
    folder (or, not there yet, the one it will be made in) must be writable; with `beside` (why), its
    parent too. Changes nothing. Without it, a PermissionError or NotADirectoryError came as a
    traceback, a --run-dir that is a file only after the data was read."""
    folder = os.path.abspath(path)
    if os.path.islink(folder) and not os.path.exists(folder):  # os.makedirs failed on it: FileExistsError
        raise UserInputError(f"{what} {str(path)!r} is a symbolic link to {os.readlink(folder)!r}, which does not "
                             f"exist. Make that folder, or pass another {flag}.")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserInputError(f"{what} {str(path)!r} cannot be a folder: {existing!r} is a file. Pass another {flag}.")
    room = os.pathconf(existing, "PC_NAME_MAX") - len(".previous") - 1  # beside it: .NAME.previous, .NAME.lock
    if beside and len(os.fsencode(os.path.basename(folder))) > room:  # an OSError (ENAMETOOLONG) traceback
        raise UserInputError(f"{what}'s name {os.path.basename(folder)[:40]!r}... is "
                             f"{len(os.fsencode(os.path.basename(folder)))} bytes long; at most {room} leave room "
                             f"for the files beside it ({beside}). Pass a shorter {flag}.")
    needed = [(existing, "")]
    if beside and existing == folder:
        needed.append((os.path.dirname(folder), f" ({beside})"))
    for place, why in needed:
        if not os.access(place, os.W_OK | os.X_OK):  # also False on a read-only file system
            raise UserInputError(f"{what} {str(path)!r} cannot be written: this user cannot write in {place!r}{why}. "
                                 f"Fix its permissions or pass another {flag}.")


_BESIDE = "the run's lock file and the run --overwrite replaces go beside it"


def check_run_folder(run_dir):
    """`check_folder` for a run directory, and whether another process owns it."""
    check_folder(run_dir, beside=_BESIDE)
    check_not_in_use(run_dir)


def check_not_in_use(run_dir):
    """A one-line `UserInputError` if another process owns `run_dir`; changes nothing."""
    pid = owner_pid(run_dir)
    if pid is not None:
        raise _in_use(run_dir, pid)


def owner_pid(run_dir):
    """The pid of the other process that owns `run_dir` (0 if it wrote none yet), or None if no other
    process does; changes nothing."""
    file = lock_file(run_dir)
    if file in _held:
        return None  # this process: its own caller
    try:
        fd = os.open(file, os.O_RDWR)
    except OSError:
        return None  # no lock file: nobody owns it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    finally:
        os.close(fd)  # also drops the lock just taken
    return None


def dead_start(run_dir):
    """The records of a run stopped (killed) before its first backup: nothing to resume, nothing finished.
    Not a finished run that lost a file since (its weights are there): that one was deleted as a dead start."""
    return os.path.exists(path(run_dir, RUN_CONFIG)) and not is_finished(run_dir) and not is_unfinished(run_dir) \
        and not has_weights(run_dir)


# What may differ between an interrupted run's command and the one that resumes it.
_RESUME_MAY_DIFFER = {"run_dir", "overwrite"}


def changed_settings(run_dir, config):
    """The `TrainConfig` fields of `config` that differ from those `run_dir`'s run was started with,
    and `data (the file changed)` when the data file was edited since (it would split differently)."""
    from tfllm.datasets import same_data

    before, now = read_config(run_dir), dataclasses.asdict(config)
    changed = sorted(k for k in now if k not in _RESUME_MAY_DIFFER and k in before and before[k] != now[k]
                     # x.csv, ./x.csv, /abs/x.csv: one file; so one preset folder (a KerasHub handle is no
                     # path: it compares as text)
                     and not (k in ("data", "from_preset") and same_data(now[k], before[k])))
    if "data" not in changed and data_changed(run_dir, config.data):
        changed.append("data (the file changed)")
    return changed


def _typed(value):
    """A setting's value as a command line gives it: 32, 0.2, rotten_tomatoes; "not given" for None."""
    if value is None:
        return "not given"
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


# TrainConfig fields whose option is not `--` + the field's name with dashes: a switch is named with both
# spellings (errors.python_spelling reads a lone `--jit-compile` as jit_compile=True); model_seed has none.
_OPTIONS = {"jit_compile": "--jit-compile/--no-jit-compile", "model_seed": "model_seed"}


def changed_options(before, now, changed):
    """The settings `changed` (names of keys of the dicts `before` and `now`: a run's or a search's settings then
    and now) as the user types them, with the values now and then: "--seed differs: 7 now, 1337 then", one
    "--set KEY differs: ..." per setting --set changed. A changed --set said "(overrides differs)", a name no
    command takes."""
    said = []
    for name in changed:
        if name == "overrides":
            old, new = before.get(name) or {}, now.get(name) or {}
            said += [f"--set {key} differs: {_typed(new.get(key))} now, {_typed(old.get(key))} then"
                     for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        elif name in now and name in before:
            option = _OPTIONS.get(name, "--" + name.replace("_", "-"))
            said.append(f"{option} differs: {_typed(now[name])} now, {_typed(before[name])} then")
        else:
            said.append(name)  # "data (the file changed)"
    return "; ".join(said)


def write_records(run_dir, config, records):
    """A fresh run's records: the `{path: value}` JSON files, the fingerprint of the data it starts from
    (`data_changed` compares it later), then its `TrainConfig` as run.json."""
    from tfllm.datasets import data_fingerprint, rows_fingerprint

    for name, value in records.items():
        write_json(path(run_dir, name), value)
    where = os.path.abspath(config.data) if config.data and os.path.exists(config.data) else None  # None: bundled
    write_json(path(run_dir, DATA), {"data": str(config.data), "path": where, "sha256": data_fingerprint(config.data),
                                     "rows_sha256": rows_fingerprint(config.data)})
    config.to_json(path(run_dir, RUN_CONFIG))


def _same_rows(record, source):
    """Whether `source`'s parsed rows are those `record` (data.json) holds the fingerprint of: bytes that differ
    only in line endings or a byte-order mark (a CSV re-saved, or `sed -i 's/\r$//'`) read as the same rows and
    split alike. A run recorded before the rows' fingerprint was kept has none: its bytes alone decide."""
    from tfllm.datasets import rows_fingerprint

    recorded = record.get("rows_sha256")
    return recorded is not None and rows_fingerprint(source) == recorded


def data_changed(run_dir, source):
    """Whether `source`, the file the run in `run_dir` was started on, was edited since (False if unknown)."""
    from tfllm.datasets import data_fingerprint

    try:
        record = read_json(path(run_dir, DATA))
    except (OSError, ValueError):
        return False  # a run from before the record, or none to compare
    recorded, now = record.get("sha256"), data_fingerprint(source)
    return recorded is not None and now is not None and now != recorded and not _same_rows(record, source)


def holds_training_data(run_dir, source):
    """Whether `source` holds the very rows the run in `run_dir` started from (a copy of its file, or the
    file at another path after the run was moved): scoring all of it would score rows it trained on.
    "bytes" when its bytes are the training file's, "rows" when only its parsed rows are (another format, other
    line endings: a message saying "byte for byte" of those was false), else False."""
    from tfllm.datasets import data_fingerprint

    try:
        record = read_json(path(run_dir, DATA))
    except (OSError, ValueError):
        return False
    recorded = record.get("sha256")
    if recorded is None:
        return False
    if data_fingerprint(source) == recorded:
        return "bytes"
    return "rows" if _same_rows(record, source) else False


def check_data_unchanged(run_dir, source):
    """Refuses to split `source` again for the run in `run_dir` (its own val/test split) if the file was
    edited since the run was trained: the split would differ, and its test rows could be rows the model
    trained on."""
    if data_changed(run_dir, source):
        raise UserInputError(
            f"{source!r} has changed since the run in {run_dir!r} was trained on it, so it no longer splits as "
            "it did, and its val/test rows could be rows the model trained on. Put the file back as it was, or "
            "train a new run on the edited file.")


def check_not_a_version_folder(run_dir):
    """Refuses a run directory in an exported model's version slot (savedmodels/NAME/7 beside NAME/1):
    `tfllm serve` would try to serve it and `tfllm models --prune` delete it with the old versions."""
    folder = os.path.abspath(run_dir)
    name, parent = os.path.basename(folder), os.path.dirname(folder)
    if not (name.isascii() and name.isdigit()) or not os.path.isdir(parent):
        return
    for sibling in os.listdir(parent):
        if sibling.isascii() and sibling.isdigit() and sibling != name and any(
                os.path.exists(os.path.join(parent, sibling, f)) for f in ("saved_model.pb", "model.tflite")):
            raise UserInputError(f"Run directory {str(run_dir)!r} is a version folder of the model exported in "
                                 f"{parent!r}, where `tfllm serve` loads versions and `tfllm models --prune` "
                                 "deletes old ones. Pass a --run-dir outside it (e.g. runs/NAME), then export.")


def check_writable(run_dir, overwrite=False, config=None):
    """The errors `prepare` gives for `run_dir`, without touching anything (for work that comes first)."""
    check_run_folder(run_dir)  # first: a live run looks like an interrupted one, or one killed before its backup
    check_not_a_version_folder(run_dir)
    check_not_inside_a_run(run_dir)
    if is_unfinished(run_dir):
        changed = changed_settings(run_dir, config) if config is not None else []
        if changed and not overwrite:
            again = errors.spelled("Rerun its own command",  # a notebook ran no command: it called a function
                                   python="Call its training function again with the settings it started with")
            how = changed_options(read_config(run_dir), dataclasses.asdict(config), changed)
            raise UserInputError(
                f"Run directory {run_dir!r} holds an interrupted run started with other settings ({how}). {again} to "
                "resume it, add --overwrite to start over with these, or choose another --run-dir.")
        if changed:
            check_no_foreign_entries(run_dir)  # starting over deletes the folder
        return
    previous = _previous(run_dir)
    if os.path.isdir(previous) and not dead_start(run_dir):
        # Set aside by an --overwrite run that was interrupted and then deleted: the next --overwrite would
        # have deleted it without a word to make room for its own.
        move = errors.spelled(f"mv {shell_path(previous)} {shell_path(run_dir)}",  # a notebook's user renames it
                              python=f"rename {previous!r} to {run_dir!r}")
        raise UserInputError(
            f"{previous!r} holds the run an interrupted `--overwrite` set aside, and {run_dir!r} is no longer the "
            f"run that was to replace it. Move it back ({move}, once {run_dir!r} is out of the way) or elsewhere, or "
            f"delete it, then {errors.spelled('run the command again', python='call the training function again')}.")
    if not (os.path.isdir(run_dir) and os.listdir(run_dir)):
        return
    if dead_start(run_dir) and not is_finished(previous):
        return
    missing = missing_files(run_dir)
    if missing and not overwrite:
        raise UserInputError(f"Run directory {run_dir!r} holds a finished run that has lost {', '.join(missing)} "
                             "since. Put the files back, pass --overwrite to replace it (it is kept until the new "
                             "run finishes) or choose another --run-dir.")
    if not (os.path.exists(path(run_dir, RUN_CONFIG)) or is_old_format(run_dir)):
        raise UserInputError(f"Run directory {run_dir!r} is not empty and is not a tfllm run. "
                             "Choose another --run-dir.")
    if overwrite and os.path.islink(os.path.abspath(run_dir)):
        # The run it replaces is moved aside beside the folder (`previous`): done to the link, the new run
        # went into a new folder in the link's place and the link stayed aside, blocking the next --overwrite.
        raise UserInputError(f"Run directory {run_dir!r} is a symbolic link (to {os.readlink(os.path.abspath(run_dir))!r}): "
                             "--overwrite sets the finished run aside beside its folder, which it cannot do through "
                             f"a link. Pass the folder itself: --run-dir {shell_path(os.path.realpath(run_dir))}.")
    if is_old_format(run_dir) and not overwrite:  # it said "a finished run", which every other command refuses
        raise UserInputError(f"Run directory {run_dir!r} holds a run {OLD_FORMAT}. Pass --overwrite to replace it "
                             "with this command's run (it is kept until the new run finishes) or choose another "
                             "--run-dir.")
    if overwrite:
        check_no_foreign_entries(run_dir)
    if not overwrite:
        raise UserInputError(f"Run directory {run_dir!r} already holds a finished run. Pass --overwrite to "
                             "replace it (it is kept until the new run finishes) or choose another --run-dir.")


def prepare(run_dir, overwrite=False, config=None):
    """Creates `run_dir`, or decides to resume it; returns (resume, previous).

    `resume` is True when the folder holds an interrupted run (its backup is
    there) started with the settings of `config` (a `TrainConfig`); with other
    settings the command is refused, or with `overwrite` the interrupted run
    is deleted and this one starts over. A finished run is never deleted up
    front: without `overwrite` the command is refused; with it the old run
    moves to a hidden sibling (`previous`), which `training.common.guarded_run`
    deletes once the new run has finished and `restore_previous` puts back if
    it fails. A non-empty folder that is not a tfllm run is refused.

    This process owns `run_dir` from here (`acquire`): a command that another
    one is running in is refused. `training.common.guarded_run` releases it.
    """
    check_folder(run_dir, beside=_BESIDE)
    acquire(run_dir)
    try:
        return _prepare(run_dir, overwrite, config)
    except BaseException:
        release(run_dir)
        raise


def _prepare(run_dir, overwrite, config):
    previous = _previous(run_dir)
    if dead_start(run_dir):
        # Killed before its first backup (no cleanup ran): nothing to resume. An --overwrite run
        # also left the old run aside, which comes back before anything else is decided. A user's files put
        # in the folder since went with it.
        check_no_foreign_entries(run_dir, "the run there was killed before its first backup, and starting over "
                                          "would delete them with it")
        shutil.rmtree(run_dir)
        restore_previous(run_dir, previous)
    check_writable(run_dir, overwrite, config)
    kept = previous if os.path.isdir(previous) else None  # beside an interrupted --overwrite run
    if is_unfinished(run_dir):
        if config is None or not changed_settings(run_dir, config):
            return True, kept  # the old run, if any, is dropped when this one finishes
        shutil.rmtree(run_dir)  # --overwrite with other settings: start over
        os.makedirs(run_dir)
        return False, kept
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(run_dir, previous)
        os.makedirs(run_dir, exist_ok=True)
        return False, previous
    os.makedirs(run_dir, exist_ok=True)
    return False, None


def restore_previous(run_dir, previous):
    """Puts back the finished run that a failed `--overwrite` run was to replace."""
    if previous and os.path.isdir(previous):
        shutil.rmtree(run_dir, ignore_errors=True)
        os.replace(previous, run_dir)


def drop_previous(previous):
    if previous:
        shutil.rmtree(previous, ignore_errors=True)
