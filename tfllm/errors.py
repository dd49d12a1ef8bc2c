"""The exception a user sees for bad input, the warning for input that runs but may mislead, the one for a
full disk, the check for an optional extra, and the record of a Ctrl-C or `kill` that stops a command."""

import contextlib
import errno
import importlib.util
import os
import re
import shlex
import sys
import warnings

from tfllm._env import _PACKAGE


# Whether a `tfllm` command is running: `cli._main` sets it around the command, and its errors name the
# command's flags (--overwrite); a Python caller's name its arguments (overwrite=True, `python_spelling`).
# A module-level flag, not a contextvar: `tfllm serve`'s request threads and tf.data's threads do not inherit
# contextvars, and the errors raised there are the command's too.
command_running = False


class UserInputError(ValueError):
    """Bad input a user can fix: the message names the input and the fix.

    The CLI prints the message on one line and exits with status 2; library
    callers catch it like any `ValueError`. Messages are written with the command's flags, and read with
    Python's names of them when no command is running (`python_spelling`).
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str) and not command_running:
            args = (python_spelling(args[0]),)
        super().__init__(*args)


# TrainConfig's True/False fields: their flags take no value, and `--overwrite` means `overwrite=True`
# (tests/test_python_spelling.py checks the list against TrainConfig).
_SWITCHES = ("overwrite", "jit_compile")
# The words flags take that read as prose otherwise (`--task generate`, `--split test`): the commands' choices.
_CHOICES = {"classify", "generate", "translate", "pretrain", "mlm", "causal", "vectors", "train", "val", "test",
            "wordpiece", "char", "sentencepiece", "none", "dynamic", "auto", "default", "mirrored", "tpu", "attention",
            "occlusion", "greedy", "beam", "random", "tflite"}
_COMMANDS = "train|pretrain|predict|evaluate|export|serve|models|generate|translate|explain|tune|presets"
# Text left as it is: a command to type, whose flags are flags in a notebook too (`hf download X --local-dir D`,
# "(tfllm serve --max-body-bytes)", "tfllm train --task classify --data DATA", up to the end of its sentence).
_COMMAND = re.compile(rf"`[^`-][^`]*`|\btfllm (?:{_COMMANDS})\b(?:[^`();.]|\.(?!\s|$))*")
# A flag after a space, a bracket or a quote (not inside a word or a quoted name: a column '--x'), what
# follows it when that is a value (`--max-rows 400`, `--set key=3`), and "pass" before it.
_FLAG = re.compile(r"(?P<pass>\b[Pp]ass )?(?<![\w'\"-])--(?P<name>[a-z][a-z0-9-]*)(?P<both>/--no-(?P=name))?"
                   r"(?: (?P<value>'[^']*'|\"[^\"]*\"|[^\s;:()`]*[^\s;:()`.,]))?")


def _python_value(text, labels=False):
    """A flag's value as Python writes it: numbers, placeholders (N, FILE) and quoted text as they are."""
    if labels and "," in text:  # `--labels fresh,rotten`: TrainConfig's labels is a list
        return repr(text.split(","))
    if text in ("true", "false", "null"):  # `--set lowercase=true` is JSON's
        return {"true": "True", "false": "False", "null": "None"}[text]
    if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?|[A-Z][A-Z_]*|'.*'|\".*\"", text):
        return text
    return repr(text)


def _is_value(text):
    """Whether the word after a flag is its value rather than the sentence going on (`--split test needs ...`,
    not `--labels splits at commas`): quoted, a number or placeholder, a path or list, or a choice."""
    return bool(re.fullmatch(r"['\"].*|-?\d.*|[A-Z][A-Z_]*", text) or re.search(r"[\d_,/]|\.\w", text)
                or text in _CHOICES)


def _python_flag(match):
    name, value, said = match["name"].replace("-", "_"), match["value"], match["pass"] or ""
    rest = ""
    if value is not None and not (name == "set" or _is_value(value)):
        value, rest = None, " " + match["value"]
    if name == "set":
        setting = re.fullmatch(r"'?([a-z_]+)(?:=(.*?))?'?", value or "")
        if setting is None or setting[2] is None and "_" not in setting[1]:  # `--set fixes ...`: the sentence
            return f"{said}overrides" + (f" {value}" if value else "")
        key, setting_value = setting[1], setting[2]
        if setting_value is None:
            return f"{said}overrides[{key!r}]"
        return f"{said}overrides={{{key!r}: {_python_value(setting_value)}}}"
    if match["both"]:  # --jit-compile/--no-jit-compile
        return f"{said}{name}" + rest
    if name.startswith("no_") and name[3:] in _SWITCHES:
        return f"{said}{name[3:]}=False" + rest
    if name in _SWITCHES:
        return f"{said}{name}=True" + rest
    if value is not None:
        return f"{said}{name}={_python_value(value, labels=name == 'labels')}"
    return f"{said}{name}{'=...' if said else ''}{rest}"  # "Pass text_column=... with one of them"


# A command whose Python call takes the same arguments (`tfllm generate RUN PROMPT` -> `tfllm.generate(RUN,
# [PROMPT])`): a run and, where it takes texts, one text; no flags. Arguments are shell words: a placeholder
# (PROMPT), a plain path, or a quoted text.
_WORD = r"""(?:'[^']*'|"[^"]*"|[^\s`'"-][^\s`'"]*)"""
_SIMPLE_COMMAND = re.compile(rf"`tfllm (?P<command>predict|generate|translate|explain|evaluate) (?P<run>{_WORD})"
                             rf"(?: (?P<text>{_WORD}))?`")


def _python_call(match):
    run, text, command = match["run"], match["text"], match["command"]
    run = run if run[0] in "'\"" or re.fullmatch(r"[A-Z][A-Z_]*", run) else repr(run)
    if text is None:
        return f"`tfllm.{command}({run})`" if command == "evaluate" else match[0]
    if command == "evaluate":
        return match[0]
    return f"`tfllm.{command}({run}, {text if command == 'explain' else f'[{text}]'})`"


def python_spelling(message):
    """`message`, written with a command's flags, with the names a Python caller gives instead:
    `--overwrite` -> `overwrite=True`, `--max-rows 400` -> `max_rows=400`, `--set dropout=0.2` ->
    `overrides={'dropout': 0.2}`, `--text-column` -> `text_column` ("pass text_column=..."), a command that
    is one Python call with the same arguments (`tfllm generate RUN PROMPT`) -> that call, leaving other
    commands to type (`tfllm train --data DATA`) as they are."""
    message = _SIMPLE_COMMAND.sub(_python_call, message)
    kept, parts, start = _COMMAND.finditer(message), [], 0
    for command in kept:
        parts += [_FLAG.sub(_python_flag, message[start:command.start()]), command[0]]
        start = command.end()
    return "".join(parts) + _FLAG.sub(_python_flag, message[start:])


class TfllmWarning(UserWarning):
    """Input that runs but may mislead (unknown tokens, duplicate rows, imbalanced classes).

    The library warns through `warnings`: shown once per call site by default, silenced with
    `warnings.simplefilter("ignore", tfllm.TfllmWarning)`, raised with "error". The CLI prints
    each one as `tfllm: warning: MESSAGE` (`tfllm.cli.main`).
    """


def warn(message):
    """Warns with `message` (a `TfllmWarning`), attributed to the first caller outside tfllm.

    So that the default once-per-call-site filter, and a user's filter by module, see the user's own
    `tfllm.predict(...)` line rather than a line of tfllm (Python 3.12's `skip_file_prefixes` does this;
    tfllm supports 3.11). Where every frame is tfllm's (`python -m tfllm`), the caller of `warn`.
    """
    if not command_running:  # as UserInputError's: a notebook is told data=, not --data
        message = python_spelling(message)
    level, frame = 2, sys._getframe(1)
    # contextlib's frames too: a warning from the exit of a tfllm `with` block (training's "Interrupted. Call
    # the same function again") was attributed to contextlib.py's `__exit__` line, not the caller's.
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename == contextlib.__file__):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, TfllmWarning, stacklevel=level if frame is not None else 2)


def shell_path(path):
    """`path` as a command to paste names it: quoted if it has spaces or shell characters, and after `./` if it
    starts with `-`, which a command reads as an option (`tensorboard --logdir -dashrun/logs` said "expected one
    argument", `tfllm predict -dashrun TEXT` "unrecognized arguments")."""
    path = os.fspath(path)
    return shlex.quote(os.path.join(os.curdir, path) if path.startswith("-") else path)


def spelled(message, python=None):
    """`message` in the caller's names: a command's flags while one runs, Python's otherwise (`python`, else
    `python_spelling`): for a progress line that names an option (a notebook read "cut by --max-rows"), and for
    words a flag's rename does not cover ("run its training command again": call its training function)."""
    return message if command_running else python or python_spelling(message)


def note(message, python=None, file=None):
    """Tells the user something that is not an error: a command prints `message` as its own line (on `file`,
    stderr by default), as it always has; a Python caller gets a `TfllmWarning` (`warn`), which it can filter,
    in its own argument names (`python`, else `message` without its "tfllm: " and in `python_spelling`):
    a notebook read "tfllm: --max-rows 4 keeps 6 rows" on its stderr, unasked and unfilterable."""
    if command_running:
        print(message, file=file or sys.stderr)
    else:
        warn(python or message.strip().removeprefix("tfllm: "))


def require_extra(what, extra, *modules):
    """Raises one line naming the pip extra to install when one of `modules` is missing.

    Checked before the work starts (a TFLite export would otherwise convert the
    model first and then fail on the interpreter's import), without importing.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserInputError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                             f"installed: pip install \"tfllm[{extra}]\" (or -e \".[{extra}]\" in a checkout).")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it unwinds as after Ctrl-C."""


# The stop a signal asked for (KeyboardInterrupt or Terminated), kept after its handler raised it: an
# exception a handler raises can land where Python drops it ("Exception ignored in" a `__del__` or a
# weakref callback, as TensorFlow's iterators have), and the command then ran to its end with exit
# status 0 after a `kill`. Training raises it again at the next batch (`raise_if_stopping`).
_stopping = None


def request_stop(kind, frame=None):
    """For a signal handler: records the stop and raises it (`kind` is KeyboardInterrupt or Terminated).

    Not where the signal landed in a `__del__` (`frame`, the handler's, or one it was called from): Python
    would drop the exception there and print "Exception ignored in ... Traceback" for it. The stop is then
    raised by training at its next batch, or by the CLI when the command returns (`raise_if_stopping`)."""
    global _stopping
    _stopping = kind
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return
        frame = frame.f_back
    raise kind()


def clear_stop():
    global _stopping
    _stopping = None


def raise_if_stopping():
    """Raises again a stop that a signal asked for, if there was one (see `request_stop`)."""
    if _stopping is not None:
        raise _stopping()


class DiskFull(OSError):
    """A write failed for want of space (a full disk, a quota), said in one line with what was kept and what
    to do. Not the user's input, so the CLI exits with status 1 (2 is for input to fix), without a traceback."""

    def __init__(self, message, file=None):
        super().__init__(errno.ENOSPC, message, file or None)  # `filename`: the file written, if known

    def __str__(self):
        return self.strerror


class WorkerLost(RuntimeError):
    """Multi-worker training stopped because another worker is gone (killed, crashed, its machine lost):
    one line, exit status 1, where TensorFlow's gRPC traceback ran to screens."""


def worker_lost(error):
    """True when `error` is TensorFlow's report of a peer worker that went away mid-training: the collective
    ops abort with an `UnavailableError` ("Collective ops is aborted by: failed to connect to all addresses
    ... Connection refused"). Only `MultiWorkerMirroredStrategy` talks to other machines this way."""
    return type(error).__name__ == "UnavailableError" and type(error).__module__.startswith("tensorflow")


# A write that failed for want of room: a full disk, a quota, or a file-size limit (`ulimit -f`; Python ignores
# SIGXFSZ, so the write fails with EFBIG), which h5py reported as 77 tracebacks and a segfault.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL = tuple(os.strerror(n) for n in _NO_ROOM)  # "No space left on device", "Disk quota exceeded", "File too large"


def _causes(error):
    """`error`, then the errors it came from (`__cause__`, else `__context__`), each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def full_disk_file(error):
    """The file a write failed on for want of space, "" if the error does not say, or None when `error`
    (or an error it came from) is not that: an OSError with ENOSPC, EDQUOT or EFBIG, or an error saying so,
    as h5py's (an OSError or a RuntimeError, naming the file) and TensorFlow's ResourceExhaustedError do."""
    for error in _causes(error):
        text = str(error)
        if isinstance(error, OSError) and error.errno in _NO_ROOM or any(f in text for f in _FULL):
            named = re.search(r"filename = '([^']+)'", text) or re.search(r"\}\} (.+?); (?:No space|Disk quota)", text)
            return getattr(error, "filename", None) or (named[1] if named else "")  # h5py's, TensorFlow's message
    return None


def _file_size_limit(error):
    return any(isinstance(e, OSError) and e.errno == errno.EFBIG or os.strerror(errno.EFBIG) in str(e)
               for e in _causes(error))


def full_disk_reason(error):
    """What stopped a write for want of room (`full_disk_file` is not None for `error`): "No space left on
    device", or the file-size limit that did."""
    return "File too large for this process's file-size limit" if _file_size_limit(error) else \
        "No space left on device"


def make_room(error):
    """What to do about `error`'s want of room, as "free some space" is for a full disk."""
    return "raise the file-size limit (ulimit -f)" if _file_size_limit(error) else "free some space"


def disk_full_message(error):
    """The one line to print for a write that failed for want of space, or None for any other error."""
    if isinstance(error, DiskFull):
        return str(error)
    file = full_disk_file(error)
    if file is None:
        return None
    return f"{full_disk_reason(error)}{f' writing {file!r}' if file else ''}. {make_room(error).capitalize()} and run the command again."
