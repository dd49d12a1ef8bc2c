"""Versioned export folders, `savedmodels/NAME/VERSION/`, that appear atomically.

TF Serving polls `savedmodels/NAME` and loads any integer sub-folder it finds,
so a version must never be visible half-written: we write into a hidden
sibling folder and `os.rename` it into place (atomic on one filesystem).
"""

import contextlib
import os
import re
import shutil
import tempfile

from tfllm.errors import UserInputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def validate_export_name(name):
    if not name or not _NAME.match(name) or ".." in name:
        raise UserInputError(
            f"Invalid export name {name!r}: use letters, digits, '-', '_' or '.', "
            "with no '/' or '..' (it becomes a folder under savedmodels/)."
        )
    return name


def versions(base_dir, name):
    """The integer versions already exported for `name`, ascending."""
    folder = os.path.join(base_dir, name)
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def next_version(base_dir, name):
    existing = versions(base_dir, name)
    return existing[-1] + 1 if existing else 1


@contextlib.contextmanager
def atomic_version_dir(base_dir, name):
    """Yields a temporary folder to write into; on success it becomes the next version.

    Yields `(tmp_dir, final_dir)`. On any exception the temporary folder is
    removed and nothing appears under `base_dir/name`.
    """
    validate_export_name(name)
    model_dir = os.path.join(base_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-", dir=model_dir)
    try:
        final_dir = os.path.join(model_dir, str(next_version(base_dir, name)))
        yield tmp_dir, final_dir
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not os.listdir(model_dir):
            os.rmdir(model_dir)
        raise


def prune(base_dir, name, keep):
    """Deletes all but the newest `keep` versions of `name`; returns the removed ones.

    Each version is first renamed to a non-integer folder, so a server polling
    the folder never sees a half-deleted version.
    """
    if keep < 1:
        raise UserInputError(f"--keep must be at least 1, got {keep}.")
    removed = versions(base_dir, name)[:-keep]
    for version in removed:
        trash = os.path.join(base_dir, name, f".pruning-{version}")
        os.rename(os.path.join(base_dir, name, str(version)), trash)
        shutil.rmtree(trash)
    return removed
