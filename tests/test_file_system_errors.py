"""Folders that cannot be written and full disks: one line, nothing lost (tfllm.runs.check_folder, errors.DiskFull).

They gave tracebacks with exit status 1: a --run-dir that is a file only after the data was read, a
read-only folder from `os.makedirs` or `os.replace`, a full disk from h5py or TensorFlow (and a full
disk during a weights write could crash the process with SIGSEGV at exit).
"""

import errno
import os
import shutil
import subprocess
import sys
import types

import pytest

from conftest import main_in_process
from tfllm.errors import UserInputError

TRAIN = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "300"]


def without_notes(stderr):
    """`stderr` without its `tfllm: note:` lines: the tiny recipe notes the reviews longer than its 14-token window."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("tfllm: note:"))


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", [["train", "--data", "{tmp}/missing.csv"], ["pretrain", "--data", "{tmp}/missing.txt"]])
@pytest.mark.parametrize("run_dir", ["afile", "afile/sub"])
def test_a_run_dir_that_cannot_be_a_folder_is_refused_before_the_data_is_read(tmp_path, capsys, command, run_dir):
    from tfllm import runs

    (tmp_path / "afile").write_text("not a folder\n")
    before = sorted(os.listdir(tmp_path))
    argv = [a.format(tmp=tmp_path) for a in command] + ["--run-dir", tmp_path / run_dir]
    result = main_in_process(capsys, *argv)
    # The data file does not exist: refused for the run directory first, so before the data is read.
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == (f"tfllm: error: Run directory {str(tmp_path / run_dir)!r} cannot be a folder: "
                             f"{str(tmp_path / 'afile')!r} is a file. Pass another --run-dir.\n")
    assert sorted(os.listdir(tmp_path)) == before
    for check in (runs.check_writable, runs.prepare):  # the library's way in, too
        with pytest.raises(UserInputError, match="is a file"):
            check(str(tmp_path / run_dir))
    assert sorted(os.listdir(tmp_path)) == before


def _as_a_user_who_cannot_write(folders):
    """The command prefix, and `folders` made unwritable for it: chmod for a user; for root, whom no mode
    stops, folders owned by another user and a root without the capabilities that override modes."""
    if os.geteuid() != 0:
        for folder in folders:
            folder.chmod(0o555)
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: no way to be refused a write")
    for folder in folders:
        os.chown(folder, 65534, 65534)
        folder.chmod(0o755)
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_folders_this_user_cannot_write_in_are_refused_before_any_work(tmp_path):
    read_only, parent_read_only = tmp_path / "ro", tmp_path / "ro2"
    (read_only / "existing").mkdir(parents=True)
    (parent_read_only / "finished" / "tfllm").mkdir(parents=True)
    (parent_read_only / "finished" / "tfllm" / "run.json").write_text("{}")
    prefix = _as_a_user_who_cannot_write([read_only, read_only / "existing", parent_read_only])
    cases = [
        (TRAIN + ["--run-dir", read_only / "new" / "run"],  # its parent: PermissionError from os.makedirs
         f"Run directory {str(read_only / 'new' / 'run')!r} cannot be written: this user cannot write in "
         f"{str(read_only)!r}. Fix its permissions or pass another --run-dir."),
        (TRAIN + ["--run-dir", read_only / "existing"],  # the folder itself
         f"cannot write in {str(read_only / 'existing')!r}. Fix its permissions"),
        (TRAIN + ["--overwrite", "--run-dir", parent_read_only / "finished"],  # os.replace to .finished.previous
         f"cannot write in {str(parent_read_only)!r} (the run's lock file and the run --overwrite replaces go "
         "beside it)"),
        (["export", tmp_path / "nowhere", "--name", "m", "--base-dir", read_only / "base"],
         f"The export folder {str(read_only / 'base' / 'm')!r} cannot be written: this user cannot write in "
         f"{str(read_only)!r}. Fix its permissions or pass another --base-dir."),
        (["export", tmp_path / "nowhere", "--format", "tflite", "--out", read_only / "out"],
         f"The --out folder {str(read_only / 'out')!r} cannot be written"),
    ]
    snapshot = sorted(str(p) for p in tmp_path.rglob("*"))
    try:
        for argv, message in cases:
            result = subprocess.run([*prefix, sys.executable, "-m", "tfllm.cli", *map(str, argv)], capture_output=True,
                                    text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            assert result.returncode == 2 and message in result.stderr, (argv, result.stderr[-3000:])
            assert [line for line in result.stderr.splitlines() if "tfllm" in line or "Trace" in line] == \
                [result.stderr.strip().splitlines()[-1]] and result.stderr.strip().splitlines()[-1].startswith("tfllm: error:")
            assert sorted(str(p) for p in tmp_path.rglob("*")) == snapshot
    finally:
        for folder in (read_only, read_only / "existing", parent_read_only):
            folder.chmod(0o755)


def _full_disk_in_h5py(file):
    # What h5py raises when a write finds no space (its message, as h5py 3.14 gives it).
    return OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: time = Wed Dec  2 08:27:40 "
                   f"2026\n, filename = '{file}', file descriptor = 5, errno = 28, error message = 'No space left "
                   "on device', buf = 0x55c5a7b139e0, total write size = 2048, bytes this sub-write = 2048, offset = 4096)")


@pytest.mark.slow
def test_a_full_disk_while_training_is_one_line_and_loses_nothing(tmp_path, capsys, monkeypatch):
    """Status 1 (not the user's input), one line that says what was kept: a backup to resume from once
    there is space, or nothing, with the finished run an --overwrite run was to replace put back."""
    import tensorflow as tf

    from tfllm.training import common, reporting

    run_dir = tmp_path / "run"
    argv = TRAIN + ["--epochs", "3", "--set", "early_stopping=false", "--run-dir", run_dir]
    save, calls = common.save_weights_atomically, []

    def fills_the_disk_at(n):
        def write(model, filepath):
            calls.append(filepath)
            if len(calls) == n:
                raise _full_disk_in_h5py(f"{filepath}.123.tmp.weights.h5")
            save(model, filepath)
        calls.clear()
        monkeypatch.setattr(common, "save_weights_atomically", write)

    fills_the_disk_at(3)  # epoch 1's backup and best weights are written; epoch 2's backup is not
    result = main_in_process(capsys, *argv)
    assert result.returncode == 1 and without_notes(result.stderr) == (
        f"tfllm: error: No space left on device writing '{run_dir}/backup/latest.weights.h5.123.tmp.weights.h5'. "
        f"The run's backup is kept: free some space, then run the same command again to resume from "
        f"{run_dir}/backup.\n")
    monkeypatch.setattr(common, "save_weights_atomically", save)

    # The resumed run trains its last epochs, then the disk fills after the last epoch, in the save: TensorFlow's
    # error, the backup kept, and the same command finishes the run without training again.
    write_run_report = reporting.write_run_report

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, (
            "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
            f"{run_dir}/logs/final/events.out.tfevents.1.v2; No space left on device\n\tFailed to flush 1 events"))

    monkeypatch.setattr(reporting, "write_run_report", full)
    result = main_in_process(capsys, *argv)
    assert result.returncode == 1 and without_notes(result.stderr) == (
        f"tfllm: error: No space left on device writing '{run_dir}/logs/final/events.out.tfevents.1.v2'. "
        f"The run's backup is kept: free some space, then run the same command again to resume from "
        f"{run_dir}/backup.\n")
    monkeypatch.setattr(reporting, "write_run_report", write_run_report)
    result = main_in_process(capsys, *argv)
    assert result.returncode == 0 and "Resuming the interrupted run" in result.stdout and "Epoch" not in result.stdout
    finished = files(run_dir)

    fills_the_disk_at(1)  # --overwrite, and the first backup finds no space
    result = main_in_process(capsys, *argv, "--overwrite")
    assert result.returncode == 1 and without_notes(result.stderr).count("\n") == 1
    assert result.stderr.endswith(f"Nothing of the new run was kept; the finished run that was there is back in "
                                  f"{run_dir}: free some space and run the command again.\n")
    assert files(run_dir) == finished and sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.slow
def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_version(tiny_classifier_run, tmp_path, capsys,
                                                                       monkeypatch):
    import tensorflow as tf

    from tfllm.export import saved_model

    class FillsTheDisk:  # the model's SavedModel, whose SaveV2 finds no space part-way through the variables
        # What versioning.write_out reads of a Keras ExportArchive first (keras-team/keras#23553's workaround).
        _tf_trackable = types.SimpleNamespace(variables=[], trainable_variables=[], non_trainable_variables=[])

        def write_out(self, directory, **kwargs):
            os.makedirs(os.path.join(directory, "variables"))
            (tmp_path / "written").write_text(directory)
            raise tf.errors.ResourceExhaustedError(None, None, (
                "{{function_node __wrapped__SaveV2_dtypes_57_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                f"{directory}/variables/variables_temp/part-00000-of-00001.data-00000-of-00001.tempstate5; "
                "No space left on device [Op:SaveV2]"))

    monkeypatch.setattr(saved_model, "classifier_archive", lambda model, label_names: FillsTheDisk())
    base = tmp_path / "savedmodels"
    result = main_in_process(capsys, "export", tiny_classifier_run, "--name", "m", "--base-dir", base)
    assert result.returncode == 1 and without_notes(result.stderr) == (
        f"tfllm: error: No space left on device in {str(base / 'm')!r}: the export was not written (nothing of it "
        "is left). Free some space and export again.\n")
    assert (tmp_path / "written").exists() and os.listdir(base) == []


def test_what_counts_as_a_full_disk():
    import tensorflow as tf

    from tfllm.errors import DiskFull, disk_full_message, full_disk_file

    assert full_disk_file(_full_disk_in_h5py("/r/backup/x.h5")) == "/r/backup/x.h5"
    closing = RuntimeError("Disable slist on flush dest failure failed (file write failed: time = Wed Dec  2 09:40:42 "
                           "2026\n, filename = '/r/best.1.tmp.weights.h5', file descriptor = 6, errno = 28, error "
                           "message = 'No space left on device', buf = 0x55f710ea8638, total write size = 1376)")
    assert full_disk_file(closing) == "/r/best.1.tmp.weights.h5"  # h5py, when the file's close fails
    assert full_disk_file(OSError(errno.EDQUOT, "Disk quota exceeded", "/q/f")) == "/q/f"
    assert full_disk_file(tf.errors.ResourceExhaustedError(None, None, "{{function_node x}} /a b/c; No space left "
                                                           "on device [Op:SaveV2]")) == "/a b/c"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise ValueError("wrapped") from e
    except ValueError as e:
        assert full_disk_file(e) == "" and disk_full_message(e) == ("No space left on device. Free some space and "
                                                                   "run the command again.")
    assert full_disk_file(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")) is None
    assert full_disk_file(OSError(errno.EACCES, "Permission denied")) is None and disk_full_message(KeyError()) is None
    assert disk_full_message(DiskFull("No space left on device in '/x'. Free some.", "/x/f")) == \
        "No space left on device in '/x'. Free some."


@pytest.mark.slow
def test_a_disk_that_fills_up_in_a_weights_write_is_one_line_not_a_crash(tmp_path):
    """A real full disk (a small tmpfs, mounted in a mount namespace of its own: root only). HDF5 out of
    space part-way through a weights file printed an h5py traceback for each buffer it could not write,
    then crashed the process (SIGSEGV, exit status 139); `common.check_room` now refuses the write first."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    for size in ("160k", "400k"):  # the first backup, or a later write (the best weights), finds no space
        script = (f"mount -t tmpfs -o size={size} tmpfs {disk} || exit 99; {sys.executable} -m tfllm.cli "
                  f"{' '.join(TRAIN)} --epochs 3 --run-dir {disk}/run; echo \"exit $?\"; ls -A {disk}/run 2>/dev/null || "
                  "echo no run")
        result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        if result.returncode == 99:
            pytest.skip("cannot mount a tmpfs here")
        assert "exit 1" in result.stdout, (result.stdout[-2000:], result.stderr[-3000:])
        errors = [line for line in result.stderr.splitlines() if ("tfllm" in line or "Trace" in line or "Exception" in line)
                  and not line.startswith("tfllm: note:")]  # the tiny recipe's window note comes first
        assert len(errors) == 1 and errors[0].startswith("tfllm: error: No space left on device writing"), errors
        listing = result.stdout.split("exit 1", 1)[1].split()
        if "The run's backup is kept" in errors[0]:
            assert "backup" in listing, listing
        else:
            assert "Nothing of the new run was kept" in errors[0] and listing == ["no", "run"], listing


def test_a_weights_file_that_cannot_fit_is_refused_before_hdf5_starts_it(tmp_path):
    from types import SimpleNamespace

    from tfllm.errors import full_disk_file
    from tfllm.training import common

    common.check_room(str(tmp_path / "small.weights.h5"), [SimpleNamespace(shape=(1000, 16), dtype="float32")])
    huge = SimpleNamespace(shape=(2**40, 1024), dtype="bfloat16")  # 2 PiB
    with pytest.raises(OSError, match=r"the weights need about [\d.]+ MB, [\d.]+ MB are free") as refused:
        common.check_room(str(tmp_path / "big.weights.h5"), [huge])
    assert full_disk_file(refused.value) == str(tmp_path / "big.weights.h5") and os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_file_size_limit_in_a_weights_write_is_one_line_not_a_crash(tmp_path):
    """`ulimit -f` (EFBIG) was not taken for a full disk: h5py printed 77 tracebacks and the process crashed
    (exit status 139); resuming under the limit left a half-copied `.bkp.PID.tmp` in the backup."""
    import resource

    def limit(kib):
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (kib << 10, resource.RLIM_INFINITY))

    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "tfllm.cli", *TRAIN, "--epochs", "3", "--run-dir", str(run_dir)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, preexec_fn=limit(40))
    errors = [line for line in result.stderr.splitlines() if ("tfllm" in line or "Trace" in line or "Exception" in line)
              and not line.startswith("tfllm: note:")]  # the tiny recipe's window note comes first
    assert result.returncode == 1 and len(errors) == 1, (result.returncode, result.stderr[-3000:])
    assert "File too large for this process's file-size limit" in errors[0] and "ulimit -f" in errors[0]
    assert not run_dir.exists()  # nothing to resume: the first backup did not fit
    from tfllm.errors import make_room

    assert make_room(OSError(errno.EFBIG, "File too large")) == "raise the file-size limit (ulimit -f)"
    assert make_room(OSError(errno.ENOSPC, "No space left on device")) == "free some space"


@pytest.mark.slow
def test_a_tilde_the_shell_left_alone_is_the_home_folder(tiny_classifier_run, tmp_path, capsys, monkeypatch):
    """`--base-dir=~/models` (bash expands `~` only where it starts a word) and TrainConfig(run_dir='~/...')
    from a notebook made a folder named '~' in the working directory."""
    from tfllm.cli import PATH_ARGUMENTS, build_parser
    from tfllm.config import TrainConfig
    from tfllm.serving.commands import IGNORED_TF_SERVING_FLAGS

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    result = main_in_process(capsys, "export", tiny_classifier_run, "--name", "r", "--base-dir=~/models")
    assert result.returncode == 0, result.stderr
    assert (home / "models" / "r" / "1" / "saved_model.pb").exists() and not (tmp_path / "~").exists()
    result = main_in_process(capsys, "train", "--data=~/missing.csv", "--run-dir=~/run", "--preset", "tiny")
    assert result.returncode == 2 and str(home / "missing.csv") in result.stderr
    config = TrainConfig(data="~/reviews.csv", run_dir="~/runs/x")
    assert (config.data, config.run_dir) == (str(home / "reviews.csv"), str(home / "runs" / "x"))
    # Every argument that names a file or folder, in every subcommand, is expanded.
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices.values()
    words = {"dir", "data", "file", "path", "from", "out", "lm", "memory", "html", "tflite", "space", "unlabeled"}
    named = {a.dest for p in commands for a in p._actions
             if words & set(a.dest.split("_")) and a.dest not in {*IGNORED_TF_SERVING_FLAGS, "lm_weight"}}
    assert named <= set(PATH_ARGUMENTS), named - set(PATH_ARGUMENTS)


@pytest.mark.slow
def test_a_tilde_in_a_python_api_path_is_the_home_folder(tiny_classifier_run, tmp_path, monkeypatch):
    """`export_classifier(run, name, base_dir="~/sm")` and an export's `out="~/tfl out"` from a notebook made a
    folder named '~' in the working directory, and `list_models("~/sm")` read it, where the command and
    TrainConfig expand `~` (config.expand_home)."""
    import re

    from tfllm.export.saved_model import export_classifier
    from tfllm.export.versioning import write_out_dir
    from tfllm.datasets.pairs import read_pairs
    from tfllm.datasets.text import load_text_corpus
    from tfllm.serving import list_models, prune, serve

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert export_classifier(tiny_classifier_run, "pyrev", base_dir="~/sm") == str(home / "sm" / "pyrev" / "1")
    assert [model["name"] for model in list_models("~/sm")] == ["pyrev"]
    assert list(prune("~/sm", "pyrev", 1)) == []
    # Every exporter's out goes through write_out_dir (export_tflite's, the command's --out).
    written = write_out_dir("~/tfl out", lambda folder: open(os.path.join(folder, "parity.json"), "w").close())
    assert written == str(home / "tfl out") and os.path.exists(home / "tfl out" / "parity.json")
    with pytest.raises(UserInputError, match=re.escape(repr(str(home / "none")))):
        serve("~/none")
    # A translation's decoding aids (translate(lm=..., memory=...)) read their files through these two.
    lines = [f"line {i} of a corpus to count" for i in range(20)]
    (home / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (home / "pairs.csv").write_text("zh,en\n你好,hello\n", encoding="utf-8")
    assert load_text_corpus("~/corpus.txt", flag="--lm", whole=True).splitlines() == lines
    assert read_pairs("~/pairs.csv", "zh", "en", flag="--memory").sources == ["你好"]
    assert not (tmp_path / "~").exists()
