"""The exception a user sees for bad input, the warning for input that runs but may mislead, the one for a
full disk, the check for an optional extra, and the record of a Ctrl-C or `kill` that stops a command."""

import errno
import importlib.util
import os
import re
import sys
import warnings

from tfllm._env import _PACKAGE


class UserInputError(ValueError):
    """Bad input a user can fix: the message names the input and the fix.

    The CLI prints the message on one line and exits with status 2; library
    callers catch it like any `ValueError`.
    """


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
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, TfllmWarning, stacklevel=level if frame is not None else 2)


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
