"""Versioned export folders, `savedmodels/NAME/VERSION/`, that appear atomically.

TF Serving polls `savedmodels/NAME` and loads any integer sub-folder it finds,
so a version must never be visible half-written: we write into a hidden
sibling folder and `os.rename` it into place (atomic on one filesystem).
A killed export leaves its hidden folder behind; the next export into the
same model removes those whose exporting process is gone.
"""

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import struct
import tempfile
import time

from tfllm import runs
from tfllm.config import expand_home
from tfllm.errors import DiskFull, UserInputError, full_disk_file, full_disk_reason, make_room, warn

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STALE_SECONDS = 3600  # a .tmp- folder that names no owner, untouched this long, is stale
_OWNER = re.compile(r"^\.tmp-(\d+)@([0-9a-f]{8})-")  # .tmp-PID@HOSTHASH-random

logger = logging.getLogger("tfllm.export")


# The file a TFLite export's version folder holds (the tflite_* export modules write it); TF Serving
# cannot serve it, but `tfllm models` lists it and `--keep` prunes it.
TFLITE_FILE = "model.tflite"
TFLITE_TEXT_FILE = "model_text.tflite"  # a WordPiece classifier's strings-in model beside it (tflite_classifier)


def is_model_name(name):
    """Letters, digits, '-', '_' and '.', starting with a letter or digit: a model's folder under
    savedmodels/ and the NAME of TF Serving's /v1/models/NAME."""
    return bool(name) and bool(_NAME.match(name))


DEFAULT_BASE_DIR = "savedmodels"  # `tfllm export --base-dir` when not given


def validate_export_name(name, base_dir=DEFAULT_BASE_DIR):
    if not is_model_name(name) or ".." in name:
        raise UserInputError(
            f"Invalid export name {name!r}: use ASCII letters, digits, '-', '_' or '.', "
            f"with no '/' or '..' (it becomes a folder under {os.path.join(base_dir, '')})."
        )
    return name


def check_export_options(fmt, base_dir, out=None, quantize="none", keep=None, name=None):
    """Refuses `tfllm export` options that would be ignored or fail only after the model loads.

    Raises:
        UserInputError: `keep` < 1, `--out`/`--quantize` without `--format
            tflite`, `--keep`, `--name` or `--base-dir` with `--out`, or a folder to write that is a file
            or that this user cannot write in (`name`: the model's folder; `base_dir` None: not given,
            `DEFAULT_BASE_DIR`), or a model's folder that holds versions of the other format
            (`check_format_beside`).
    """
    from tfllm import runs

    if keep is not None and keep < 1:
        raise UserInputError(f"--keep must be at least 1, got {keep}.")
    if fmt != "tflite" and (out is not None or quantize != "none"):
        flag = "--out" if out is not None else "--quantize"
        raise UserInputError(f"{flag} applies to --format tflite only; add --format tflite or drop {flag}.")
    if out is not None:  # before the model loads; "" was falsy downstream and wrote savedmodels/NAME/VERSION
        _refuse_empty_out(out)
    if out is not None and keep is not None:
        raise UserInputError("--keep prunes versions under --base-dir; an export to --out has none. "
                             "Drop --keep or --out.")
    if out is not None and (name is not None or base_dir is not None):  # they were ignored without a word
        flag = "--name" if name is not None else "--base-dir"
        raise UserInputError(f"{flag} places a versioned export under --base-dir/--name; an export to --out is "
                             f"written to --out alone. Drop {flag} or --out.")
    base_dir = DEFAULT_BASE_DIR if base_dir is None else base_dir
    if out is not None:
        runs.check_folder(out, "The --out folder", "--out", beside="the export is written beside it, then renamed")
    else:
        runs.check_folder(os.path.join(base_dir, name) if name else base_dir, "The export folder", "--base-dir")
        if name:  # before the model loads (atomic_version_dir checks again, for Python's callers)
            check_format_beside(base_dir, name, fmt)


def check_format_beside(base_dir, name, fmt):
    """Refuses a `fmt` (`saved_model` or `tflite`) export into `base_dir/name` when that folder holds versions
    of the other format.

    TF Serving polls `base_dir/name` and loads its newest version: a TFLite version above the SavedModels was the
    one it tried to load, and a prune by number (`--keep 1`) then removed every SavedModel it could serve.

    Raises:
        UserInputError: the folder holds versions of the other format.
    """
    folder = os.path.join(base_dir, name)
    other = TFLITE_FILE if fmt == "saved_model" else "saved_model.pb"
    held = [v for v in versions(base_dir, name) if os.path.isfile(os.path.join(folder, str(v), other))]
    if not held:
        return
    listed = ", ".join(map(str, held[-3:])) + (" ..." if len(held) > 3 else "")
    if fmt == "saved_model":
        raise UserInputError(f"{folder!r} holds TFLite versions ({listed}); a SavedModel there would mix formats "
                             "in one model's folder. Export it under a name of its own (another --name).")
    raise UserInputError(f"{folder!r} holds SavedModel versions ({listed}) that TF Serving serves; a TFLite version "
                         f"there would be the newest it tries to load. Export it under a name of its own "
                         f"(--name {name}-tflite) or to a folder (--out DIR).")


# The task of a SavedModel version, by the input its serving_default takes the text as (the classifier's, the
# generator's and the translator's exports), which is what a server's clients send it.
TASK_OF_INPUT = {"text": "classify", "prompt": "generate", "source": "translate"}


def check_task_beside(base_dir, name, task):
    """Refuses a SavedModel export of `task` ("classify", "generate", "translate") into `base_dir/name` when the
    newest version there is another task's: a server of `name` moves its clients to the newest version, so a
    classifier exported under a translator's name was served to translation clients, after a warning alone.
    (Another version of the same task whose signatures changed is warned about: `warn_of_changed_signatures`.)

    Raises:
        UserInputError: the newest version's serving_default takes another task's input.
    """
    folder = os.path.join(base_dir, name)
    held = [v for v in versions(base_dir, name) if os.path.isfile(os.path.join(folder, str(v), "saved_model.pb"))]
    if not held:
        return
    try:
        inputs = describe_signatures(os.path.join(folder, str(held[-1]))).get("serving_default", {}).get("inputs", {})
    except Exception:  # a version this cannot read (damaged, not a SavedModel) says nothing of its task
        return
    before = next((TASK_OF_INPUT[key] for key in inputs if key in TASK_OF_INPUT), None)
    if before is not None and before != task:
        raise UserInputError(f"{folder!r} holds versions of {runs.TASK_NAMES[before]} (newest: {held[-1]}); "
                             f"{runs.TASK_NAMES[task]} there would be served to its clients in its place. Export "
                             f"under another --name, or remove {folder!r} first.")


def is_version_name(entry):
    """Whether a folder name is a version number: ASCII digits only, as TF Serving reads them.

    `str.isdigit` alone also accepts '²' (which `int` refuses) and '١' (which
    `int` reads as 1).
    """
    return entry.isascii() and entry.isdigit()


def versions(base_dir, name):
    """The integer versions already exported for `name`, ascending."""
    folder = os.path.join(base_dir, name)
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if is_version_name(d))


def read_signature_defs(version_dir):
    """Returns the `SignatureDef` protos of a SavedModel, keyed by name (the file alone: no model loaded)."""
    from tensorflow.core.protobuf import saved_model_pb2  # TensorFlow's protos: the export has TensorFlow loaded

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return dict(saved_model.meta_graphs[0].signature_def)


def _tensor_info_to_dict(info) -> dict:
    import tensorflow as tf  # as read_signature_defs

    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape}


def describe_signatures(version_dir):
    """Input and output names, dtypes and shapes of each public signature (`tfllm models`, and what
    `warn_of_changed_signatures` compares)."""
    described = {}
    for name, sig in sorted(read_signature_defs(version_dir).items()):
        if name.startswith("__"):  # `__saved_model_init_op` is not callable
            continue
        described[name] = {
            "inputs": {k: _tensor_info_to_dict(v) for k, v in sorted(sig.inputs.items())},
            "outputs": {k: _tensor_info_to_dict(v) for k, v in sorted(sig.outputs.items())},
        }
    return described


def warn_of_changed_signatures(base_dir, name, path):
    """Warns when the SavedModel just exported to `path` takes or gives other tensors than the version before
    it: a server of `name` (TF Serving, `tfllm serve`) moves its clients to the newest version once it loads it,
    so a run with other classes, or another sequence length, under an existing name changed what its clients got
    back without a word."""
    new = int(os.path.basename(path))
    earlier = [v for v in versions(base_dir, name)
               if v < new and os.path.isfile(os.path.join(base_dir, name, str(v), "saved_model.pb"))]
    if not earlier or not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return
    try:
        before, after = describe_signatures(os.path.join(base_dir, name, str(earlier[-1]))), describe_signatures(path)
    except Exception:  # a version this cannot read (damaged, not a SavedModel) is not compared: the export is in place
        return

    def shown(tensor):
        if tensor is None:
            return "none"
        return tensor["dtype"] + ("[?]" if tensor["shape"] is None else str(tensor["shape"]))

    changes = [f"signature {s!r} {'added' if s in after else 'gone'}" for s in sorted(set(before) ^ set(after))]
    for signature in sorted(set(before) & set(after)):
        for side in ("inputs", "outputs"):
            old, now = before[signature][side], after[signature][side]
            changes += [f"{signature}'s {side[:-1]} {key!r} {shown(old.get(key))} -> {shown(now.get(key))}"
                        for key in sorted(set(old) | set(now)) if old.get(key) != now.get(key)]
    if changes:
        warn(f"{path}: its signatures differ from version {earlier[-1]}'s ({'; '.join(changes[:3])}"
             f"{'; ...' if len(changes) > 3 else ''}): a server of {name!r} answers with version {new} once it loads "
             f"it, so clients written for version {earlier[-1]} may break. Export under another --name to serve both.")


def next_version(base_dir, name):
    existing = versions(base_dir, name)
    return existing[-1] + 1 if existing else 1


class VersionDir:
    """An export in progress: it writes into `tmp_dir`; `path` is its version folder once in place."""

    def __init__(self, tmp_dir):
        self.tmp_dir = tmp_dir
        self.path = None


@contextlib.contextmanager
def atomic_version_dir(base_dir, name, fmt="saved_model", task=None):
    """Yields a `VersionDir` to write into; on success it becomes the next version.

    `fmt` (`saved_model` or `tflite`) is what it will hold: a folder of the other format's versions is refused
    (`check_format_beside`) before anything is written. `task` (a SavedModel's: "classify", "generate",
    "translate"): a folder whose newest version is another task's is refused too (`check_task_beside`).

    The version number is chosen when the folder is renamed into place, not
    before the (minutes long) write, so two exports into one name that overlap
    get two versions. On any exception the temporary folder is removed and
    nothing appears under `base_dir/name`.
    """
    base_dir = expand_home(base_dir)  # every exporter's base_dir: the Python API's "~/models" is the home folder's
    validate_export_name(name, base_dir)
    check_format_beside(base_dir, name, fmt)
    if task is not None:
        check_task_beside(base_dir, name, task)
    model_dir = os.path.join(base_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    clean_stale(model_dir)
    target = VersionDir(owned_temp_dir(model_dir))
    try:
        yield target
        target.path = _rename_to_next_version(target.tmp_dir, base_dir, name)
        warn_of_changed_signatures(base_dir, name, target.path)
    except BaseException as e:
        shutil.rmtree(target.tmp_dir, ignore_errors=True)
        if not os.listdir(model_dir):
            os.rmdir(model_dir)
        raise_if_disk_full(e, model_dir)
        raise


class _WarningsAndUp(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def tensorflow_info_dropped():
    """TensorFlow's Python INFO records dropped while a SavedModel is written: in a notebook it printed
    "INFO:tensorflow:Assets written to: ..." for every export, where the tfllm command printed nothing. TensorFlow
    sets its logger to INFO in an interactive session (`tf_logging.get_logger` sees `sys.ps1`), to WARNING's
    default elsewhere; this keeps every export at what a command shows. A filter on TensorFlow's logger for the
    write, not its level: the caller's own setting is left as it is, and its warnings and errors pass."""
    logger, only = logging.getLogger("tensorflow"), _WarningsAndUp()
    logger.addFilter(only)
    try:
        yield
    finally:
        logger.removeFilter(only)


def write_out(archive, directory):
    """`archive.write_out(directory)` for a Keras `ExportArchive`, with each endpoint traced once and no model
    traced for nothing. No `warnings.catch_warnings()` around it: it swaps the process's filter list, so two
    threads exporting at once left "ignore" on for good; the write warns of nothing here (keras 3.15: the
    classifier, causal LM and TFLite exports recorded no warning with the filter gone).

    PRIVATE API: Keras's `TFLayer._default_save_signature` and `_list_variables_used_by_fns`
    (keras/src/export/saved_model_export_archive.py; no upstream issue found, keras 3.15). Two traces were thrown
    away, each the size of a model's forward pass (0.6-1.1 s of a tiny classifier's 7-s SavedModel, more for
    larger models and decoding loops):
    - Before saving, `write_out` walks what was tracked for lookup tables (`_filter_and_track_resources`), and
      TensorFlow's walk traces every `tf.function` attribute it finds. `_default_save_signature` is a property
      that builds a new `tf.function` of a model's call each time it is read, so each tracked model, and each
      model nested in it, was traced. Nothing reads it here (the archive's signatures are its endpoints), so it
      reads None while the archive is written.
    - Each endpoint was traced to list its variables, then again by `tf.saved_model.save`: TensorFlow keys its
      traces on whether they are made in a save context. The listing now runs in one too, so the save finds
      its trace.
    Both are set back after the write (a class attribute and a module function: exports do not run in several
    threads at once here)."""
    import keras
    from keras.src.backend.tensorflow.layer import TFLayer
    from keras.src.export import saved_model_export_archive as keras_archive
    from tensorflow.python.saved_model import save_context, save_options

    list_variables = keras_archive._list_variables_used_by_fns

    def list_variables_in_a_save_context(fns):
        with save_context.save_context(save_options.SaveOptions()):
            return list_variables(fns)

    # PRIVATE API: Keras's `ExportArchive._tf_trackable` (keras-team/keras#23553, open in keras 3.15): `track()`
    # lists a model's keras.Variable wrappers under `variables` (and the trainable and non-trainable lists), its
    # endpoints capture the tf.Variables inside them (`_all_variables`), and TensorFlow, which saves an object once
    # but sees two, wrote every weight twice: `default`'s export held 12 MB of 6 MB of weights, and a server
    # loading it held both copies. The lists hold the tf.Variables themselves here, as keras-team/keras#23563 would
    # have Keras do; a reloaded export still lists its variables.
    tracked = archive._tf_trackable
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        setattr(tracked, name, [v.value if isinstance(v, keras.Variable) else v for v in getattr(tracked, name)])
    default_save_signature = TFLayer.__dict__["_default_save_signature"]
    TFLayer._default_save_signature = None
    keras_archive._list_variables_used_by_fns = list_variables_in_a_save_context
    try:
        with tensorflow_info_dropped():
            archive.write_out(directory, verbose=False)
    finally:
        TFLayer._default_save_signature = default_save_signature
        keras_archive._list_variables_used_by_fns = list_variables


def write_archive(archive, version, name, signature, warmup_inputs, **warmup_options):
    """Writes the `ExportArchive` `archive` into `version` (from `atomic_version_dir`), then TF Serving's
    warm-up requests for `signature`, whose inputs `warmup_inputs()` gives, where tfllm's serving extra is
    installed (without it the export still serves; only its first requests are slower)."""
    write_out(archive, version.tmp_dir)
    try:
        from tfllm.serving.warmup import write_warmup_requests  # optional: the serving extra
    except ImportError:
        return
    write_warmup_requests(version.tmp_dir, name, signature, warmup_inputs(), **warmup_options)


def _refuse_empty_out(out):
    if not str(out).strip():
        raise UserInputError("--out is empty; give the folder to write the TFLite export to, or leave --out out to "
                             "write a version under --base-dir.")


def _files_under(folder):
    return {os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names}


def _earlier_task(out):
    """The `task` in the metadata.json of the export in `out`, or None."""
    try:
        with open(os.path.join(out, "metadata.json"), encoding="utf-8") as f:
            return json.load(f).get("task")
    except (OSError, ValueError, AttributeError):
        return None


# What the TFLite exports write at the top of their folder (tflite_classifier, tflite_causal_lm, tflite_seq2seq).
_EXPORT_ENTRIES = {TFLITE_FILE, TFLITE_TEXT_FILE, "vocabulary.json", "labels.json", "metadata.json", "parity.json",
                   "tokenizer"}


def _refuse_foreign_files(out, foreign):
    foreign = sorted(foreign)
    if foreign:
        raise UserInputError(
            f"--out {out!r} holds files this export does not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}), which replacing the folder would delete; move them "
            "out, choose another --out, or remove the folder first.")


def write_out_dir(out, write, task=None):
    """Runs `write(tmp_dir)` and renames the folder to `out` (an export's --out), replacing an earlier
    export there of the same `task`; returns `out`, absolute. On any exception nothing of this export is left.

    The earlier export is replaced only when this one writes every file it holds: replacing it silently
    deleted a file the user had put there (an app's README) and turned a classifier's folder into a
    generator's without a word.
    """
    _refuse_empty_out(out)  # the Python API's out="" (the command refuses it earlier)
    out = os.path.abspath(expand_home(out))  # out="~/app" from Python: the home folder's, as the command's
    if out.endswith(".tflite"):
        raise UserInputError(f"--out {out!r} names a file; pass the folder that should hold model.tflite and its assets.")
    if os.path.exists(out) and os.listdir(out) and not os.path.exists(os.path.join(out, "parity.json")):
        raise UserInputError(f"--out {out!r} is a non-empty folder that is not a tfllm TFLite export. Choose another path.")
    # A file no TFLite export writes (an app's README) is refused now, not after minutes of converting; one
    # this export happens not to write (an earlier export's model_text.tflite) is found only at the end.
    if os.path.exists(out):
        _refuse_foreign_files(out, [name for name in _files_under(out) if name.split(os.sep)[0] not in _EXPORT_ENTRIES])
    earlier = _earlier_task(out) if os.path.exists(out) else None
    if task is not None and earlier is not None and earlier != task:
        raise UserInputError(f"--out {out!r} holds a TFLite export of another task ({earlier!r}, this one is "
                             f"{task!r}); choose another --out, or remove the folder first to replace it.")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    # Named for this process, so the next export here removes it if this one is killed (33 MB each were
    # left for ever). Only such folders go: the rest of --out's parent folder is the user's.
    clean_stale(parent, owned_only=True)
    tmp_dir = owned_temp_dir(parent)
    try:
        write(tmp_dir)
        if os.path.exists(out):
            _refuse_foreign_files(out, _files_under(out) - _files_under(tmp_dir))
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.rename(out, os.path.join(old, "export"))
            try:
                os.rename(tmp_dir, out)
            except BaseException:  # the earlier export back in its place (it stayed in the hidden folder)
                os.rename(os.path.join(old, "export"), out)
                os.rmdir(old)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp_dir, out)
    except BaseException as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise_if_disk_full(e, parent)
        raise
    return out


def raise_if_disk_full(error, folder):
    """A one-line `DiskFull` for an export that `error` stopped for want of space in `folder` (whose
    temporary folder is already removed), instead of TensorFlow's or h5py's traceback."""
    file = full_disk_file(error)
    if file is not None:
        raise DiskFull(f"{full_disk_reason(error)} in {folder!r}: the export was not written (nothing of it is "
                       f"left). {make_room(error).capitalize()} and export again.", file) from error


def _rename_to_next_version(tmp_dir, base_dir, name):
    while True:
        final_dir = os.path.join(base_dir, name, str(next_version(base_dir, name)))
        try:
            os.rename(tmp_dir, final_dir)
            return final_dir
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another export took this number since we looked: take the next one.


def owned_temp_dir(folder):
    """A temporary folder in `folder` for an export to write in, named for its process (`.tmp-PID@HOST-`),
    so that a later export can tell a killed export's leftovers from one still running (`clean_stale`)."""
    return make_temp_dir(prefix=f".tmp-{os.getpid()}@{_host_hash()}-", dir=folder)


def make_temp_dir(prefix, dir):
    """`tempfile.mkdtemp`, but with the mode a plain `mkdir` gives (the umask's).

    mkdtemp makes the folder 0700 and `os.rename` keeps that, so a server
    running as another user (TF Serving's service account) could not read the
    export although every file in it follows the umask.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    umask = os.umask(0)  # the only way to read it; set back at once
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def _newest_mtime(path):
    newest = os.path.getmtime(path)
    for root, dirs, files in os.walk(path):
        for entry in dirs + files:
            try:
                newest = max(newest, os.path.getmtime(os.path.join(root, entry)))
            except OSError:
                pass
    return newest


def _host_hash():
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _is_stale(path, now):
    owner = _OWNER.match(os.path.basename(path))
    if owner and owner[2] == _host_hash():
        return not _pid_alive(int(owner[1]))
    # An older export's folder, or another host's: stale once untouched for long.
    return now - _newest_mtime(path) > STALE_SECONDS


def clean_stale(model_dir, owned_only=False):
    """Removes `.tmp-*` folders of exports that were killed, and half-deleted `.pruning-*` ones.

    A `.tmp-*` folder is stale when the process its name records is gone
    (same host), or when it names none (or another host) and nothing in it
    changed for `STALE_SECONDS`. `owned_only` (a folder of the user's, where
    `--out` goes): only those that name a process of this host that is gone.
    Returns the removed folder names.
    """
    removed = []
    now = time.time()
    try:
        entries = os.listdir(model_dir)
    except OSError:
        return removed
    for entry in entries:
        path = os.path.join(model_dir, entry)
        if not os.path.isdir(path):
            continue
        if owned_only:
            owner = _OWNER.match(entry)
            stale = bool(owner) and owner[2] == _host_hash() and not _pid_alive(int(owner[1]))
        else:
            stale = entry.startswith(".tmp-") and _is_stale(path, now) or \
                entry.startswith(".pruning-") and now - _newest_mtime(path) > 60
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry)
    if removed:
        logger.warning("removed %d folder(s) left by killed exports or prunes in %s: %s",
                       len(removed), model_dir, ", ".join(sorted(removed)))
    return removed


def version_problem(version_dir):
    """Why a version folder cannot load, or None if it looks loadable.

    Reads files only: `saved_model.pb` must parse and hold a graph, and the
    variables it points at must all be there; a TFLite export's `model.tflite`
    must carry the TFLite file identifier.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(version_dir, "saved_model.pb")
    tflite = os.path.join(version_dir, TFLITE_FILE)
    if not os.path.exists(pb) and os.path.exists(tflite):
        return _tflite_problem(version_dir, tflite)
    try:
        with open(pb, "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    except FileNotFoundError:
        return "no saved_model.pb"
    except (OSError, DecodeError, ValueError) as e:
        return f"saved_model.pb does not parse ({type(e).__name__}: {str(e)[:200]})"
    if not saved_model.meta_graphs:
        return "saved_model.pb holds no graph"
    variables = os.path.join(version_dir, "variables")
    if os.path.isdir(variables) or saved_model.meta_graphs[0].object_graph_def.nodes:
        files = os.listdir(variables) if os.path.isdir(variables) else []
        if "variables.index" not in files:
            return "variables/variables.index is missing"
        return _shards_problem(variables)
    return None


def _tflite_problem(version_dir, tflite):
    with open(tflite, "rb") as f:
        # A FlatBuffer's identifier sits at bytes 4-8; TFLite's is "TFL3".
        if f.read(8)[4:] != b"TFL3":
            return "model.tflite is not a TFLite file"
    try:  # the export's parity report records the size it wrote; a copy cut short differs
        with open(os.path.join(version_dir, "parity.json"), encoding="utf-8") as f:
            expected = json.load(f)["model.tflite"]["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    size = os.path.getsize(tflite)
    return None if size == expected else f"model.tflite has {size} bytes, its export wrote {expected}"


def _shards_problem(variables):
    """Why the data shards `variables.index` points at cannot be read, or None.

    A copy in progress has the index but a missing or short shard, and
    `tf.saved_model.load` then fails; so every shard the index names must be
    there and hold every byte an entry points at. Reads the index only.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import tensor_bundle_pb2

    num_shards, ends = None, {}  # ends: {shard: bytes its entries need}
    try:
        with open(os.path.join(variables, "variables.index"), "rb") as f:
            data = f.read()
        for key, value in _table_entries(data):
            if key == b"":  # the header entry
                num_shards = tensor_bundle_pb2.BundleHeaderProto.FromString(value).num_shards
            else:
                entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
                ends[entry.shard_id] = max(ends.get(entry.shard_id, 0), entry.offset + entry.size)
    except (OSError, ValueError, IndexError, struct.error, DecodeError) as e:
        return f"variables/variables.index does not parse ({type(e).__name__}: {str(e)[:200]})"
    if num_shards is None:
        return "variables/variables.index has no header"
    for shard in range(num_shards):
        name = f"variables.data-{shard:05d}-of-{num_shards:05d}"
        try:
            size = os.path.getsize(os.path.join(variables, name))
        except OSError:
            return f"variables/{name} is missing"
        if size < ends.get(shard, 0):
            return f"variables/{name} is truncated ({size} of {ends[shard]} bytes)"
    return None


_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # ends every LevelDB-format table file


def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _table_entries(data):
    """The (key, value) pairs of a LevelDB-format table, the format of `variables.index`.

    TensorFlow writes it uncompressed: a footer points at an index block, whose
    entries point at the data blocks. Raises ValueError (or IndexError) if
    `data` is not such a table.
    """
    if len(data) < 48 or data[-8:] != _TABLE_MAGIC:
        raise ValueError("not a table file (truncated?)")
    _, i = _varint(data, len(data) - 48)  # the metaindex block's offset and size: unused
    _, i = _varint(data, i)
    index_offset, i = _varint(data, i)
    index_size, _ = _varint(data, i)
    for _, handle in _block_entries(data, index_offset, index_size):
        offset, i = _varint(handle, 0)
        size, _ = _varint(handle, i)
        yield from _block_entries(data, offset, size)


def _block_entries(data, offset, size):
    if offset + size + 5 > len(data) or data[offset + size] != 0:  # 5-byte trailer: type, crc
        raise ValueError("a block is out of range or compressed")
    block = data[offset:offset + size]
    num_restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * num_restarts
    i, key = 0, b""
    while i < end:  # each entry: shared key bytes, new key bytes, value length, key, value
        shared, i = _varint(block, i)
        new, i = _varint(block, i)
        length, i = _varint(block, i)
        key = key[:shared] + block[i:i + new]
        i += new
        yield key, block[i:i + length]
        i += length


class PruneResult(list):
    """The removed versions (a list, oldest first), with `skipped`: `{version: why it was kept}`."""

    def __init__(self, removed=(), skipped=None, name=None):
        super().__init__(removed)
        self.skipped = dict(skipped or {})
        self.name = name

    def kept_lines(self):
        """A line for each version kept beyond `keep`, saying why (what the commands print)."""
        return [f"Kept {self.name} version {version}: {why}" for version, why in sorted(self.skipped.items())]


def _saved_model_problem(folder):
    """Why TF Serving cannot serve the version in `folder` ("TFLite", ...), or None."""
    if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
        return "TFLite" if os.path.isfile(os.path.join(folder, TFLITE_FILE)) else "no saved_model.pb"
    return version_problem(folder)


def prune(base_dir, name, keep, pinned=None):
    """Deletes all but the newest `keep` versions of `name`; returns the removed ones.

    Never deletes the newest version that loads: with `2` good and `10`
    broken, `keep=1` keeps both, so a server still has a version to serve.
    Nor the newest SavedModel that loads, whatever TFLite versions sit above it
    (TF Serving cannot load those).
    Nor a version in `pinned` (`{version: why}`: what a `models.config` serves
    by number or label, `tfllm.serving.models.pinned_versions`).
    The result's `skipped` says which versions were kept beyond `keep` and why
    (also logged). Each version is first renamed to a non-integer folder, so a
    server polling the folder never sees a half-deleted version. A version
    another prune removes meanwhile is skipped (and not in the result).
    """
    if keep < 1:
        raise UserInputError(f"--keep must be at least 1, got {keep}.")
    existing, skipped = [], {}
    for version in versions(base_dir, name):
        if os.path.isdir(os.path.join(base_dir, name, str(version))):
            existing.append(version)
        else:  # `echo hi > NAME/7`: no version (os.listdir on it was a NotADirectoryError traceback)
            skipped[version] = f"is a file, not a version folder; move it out of {os.path.join(base_dir, name)!r}"
    doomed = existing[:-keep]
    for version, why in (pinned or {}).items():
        if version in doomed:
            doomed.remove(version)
            skipped[version] = why

    def keep_newest(problem_of, why):
        """Takes the newest version whose folder `problem_of` finds no problem in out of `doomed`."""
        newer = {}
        for version in reversed(existing):
            problem = problem_of(os.path.join(base_dir, name, str(version)))
            if problem is None:
                if version in doomed:
                    doomed.remove(version)
                    skipped[version] = why(", ".join(f"{v} ({newer[v]})" for v in sorted(newer)))
                return
            newer[version] = problem

    keep_newest(version_problem, lambda newer: f"the newest version that loads (newer ones do not: {newer})")
    # And the newest SavedModel that loads: TF Serving loads no TFLite file, so with TFLite versions above the
    # SavedModels `keep=1` removed every version a server could serve (it unloaded the model).
    keep_newest(_saved_model_problem,
                lambda newer: f"the newest SavedModel that loads, what TF Serving serves (newer ones: {newer})")
    for version in list(doomed):
        folder = os.path.join(base_dir, name, str(version))
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            continue  # another prune took it (the rename below skips it)
        if entries and not any(os.path.exists(os.path.join(folder, f)) for f in ("saved_model.pb", TFLITE_FILE)):
            # Not an export (a training run put there, the user's files): prune deleted it with the versions.
            doomed.remove(version)
            skipped[version] = f"holds no export (no saved_model.pb or {TFLITE_FILE}); move it out of {base_dir!r}"
    removed = []
    for version in doomed:
        trash = os.path.join(base_dir, name, f".pruning-{version}")
        try:
            os.rename(os.path.join(base_dir, name, str(version)), trash)
        except FileNotFoundError:
            continue  # another prune (`tfllm models --prune`, `export --keep`) at the same time took it
        removed.append(version)
        with contextlib.suppress(FileNotFoundError):  # or removes its .pruning- folder, as stale
            shutil.rmtree(trash)
    return PruneResult(removed, skipped, name)
