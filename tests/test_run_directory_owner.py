"""One training command at a time in a run directory (tfllm.runs.acquire, held by `tfllm train`/`pretrain`).

Two commands on one --run-dir at once: the second took the first's live run for a killed one, deleted it
and trained into the same folder, and both exited 0.
"""

import os
import signal
import subprocess
import sys

import pytest

from conftest import main_in_process
from tfllm.errors import UserInputError

# Another process that owns a run directory, as a training command does, until it is killed.
HOLDER = """
import sys, time
from tfllm import runs
runs.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", [
    ["train", "--data", "rotten_tomatoes", "--preset", "tiny"],
    ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--overwrite"],
    ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--ensemble", "2"],
    ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--unlabeled", "rotten_tomatoes"],
    ["pretrain", "--data", "rotten_tomatoes", "--preset", "tiny"],
])
def test_a_run_directory_another_process_trains_in_is_refused_and_left_alone(tmp_path, capsys, command):
    from tfllm import runs

    run_dir = tmp_path / "run"
    # What a live run looks like before its first backup: its records only. The second command took it
    # for a run killed before its backup and deleted it.
    runs.write_json(runs.path(str(run_dir), runs.RUN_CONFIG), {"task": "classify", "data": "rotten_tomatoes"})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before, listing = files(run_dir), sorted(os.listdir(tmp_path))
        result = main_in_process(capsys, *command, "--run-dir", run_dir)
        assert result.returncode == 2
        assert result.stderr == (f"tfllm: error: Run directory {str(run_dir)!r} is in use by another tfllm process "
                                 f"(pid {holder.pid}); wait for it or choose another --run-dir.\n")
        assert files(run_dir) == before and sorted(os.listdir(tmp_path)) == listing
        # The library's way in as well: every trainer calls `prepare`; self-training checks first.
        with pytest.raises(UserInputError, match=rf"in use by another tfllm process \(pid {holder.pid}\)"):
            runs.prepare(str(run_dir))
        with pytest.raises(UserInputError, match="in use by another tfllm process"):
            runs.check_writable(str(run_dir))
        assert files(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    # Killed outright, the holder ran no cleanup: the kernel dropped its lock, so the same command goes
    # ahead (here the run killed before its first backup starts over, as it did before the lock).
    assert holder.returncode == -signal.SIGKILL
    assert runs.prepare(str(run_dir)) == (False, None) and os.listdir(run_dir) == []
    runs.release(str(run_dir))
    assert not os.path.exists(runs.lock_file(str(run_dir)))  # removed by its last owner


def test_a_run_in_training_or_interrupted_says_which_and_names_the_run_it_replaces(tmp_path, capsys,
                                                                                   tiny_classifier_run):
    """A run another process was training was called one that "did not finish. Run its training command again
    to resume it", which was then refused as in use; neither message named the finished run that --overwrite
    had moved aside, which is kept, and usable, until the new one finishes."""
    import shutil

    from tfllm import runs

    run_dir = tmp_path / "run"
    runs.write_json(runs.path(str(run_dir), runs.RUN_CONFIG), {"task": "classify", "data": "rotten_tomatoes"})
    runs.write_json(os.path.join(runs.path(str(run_dir), runs.BACKUP), "training_metadata.json"), {"epoch": 0})
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = main_in_process(capsys, "predict", run_dir, "a fine film")
        assert result.returncode == 2 and result.stderr == (
            f"tfllm: error: {str(run_dir)!r} is being trained by another tfllm process (pid {holder.pid}); wait "
            "for it to finish.\n")
        previous = tmp_path / ".run.previous"  # where --overwrite keeps the run it replaces
        shutil.copytree(tiny_classifier_run, previous)
        result = main_in_process(capsys, "evaluate", run_dir)
        assert result.returncode == 2 and f"(pid {holder.pid}); wait for it to finish. The finished run it " \
            f"replaces (--overwrite) is kept in {str(previous)!r} until then; use that path meanwhile." in result.stderr
    finally:
        holder.kill()
        holder.wait()
    result = main_in_process(capsys, "export", run_dir, "--name", "x", "--base-dir", tmp_path / "sm")
    assert result.returncode == 2 and "did not finish. Run its training command again to resume it. The finished " \
        f"run it replaces (--overwrite) is kept in {str(previous)!r}" in result.stderr
    assert main_in_process(capsys, "predict", previous, "a fine film").returncode == 0  # and it answers there


def test_one_process_owns_a_run_directory_again_and_the_last_release_frees_it(tmp_path):
    """A command owns its run while its ensemble's members and its self-training teacher own theirs,
    and `prepare` owns the folder the command already owns (it nests); the folder made for the lock file
    goes again when nothing was left in it."""
    from tfllm import runs

    run_dir = str(tmp_path / "new" / "runs" / "run")
    with runs.owned(run_dir):
        assert os.path.exists(runs.lock_file(run_dir))
        assert runs.prepare(run_dir) == (False, None)
        runs.check_writable(run_dir)  # this process's own lock
        with runs.owned(os.path.join(run_dir, "members", "seed_1")):
            pass
        runs.release(run_dir)  # what `guarded_run` does at its end
        assert os.path.exists(runs.lock_file(run_dir))  # still the command's
        other = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(600)", ""), run_dir],
                               capture_output=True, text=True)
        assert other.returncode == 1 and "in use by another tfllm process" in other.stderr
        os.rmdir(run_dir)  # the run failed and was removed
    assert not (tmp_path / "new").exists()
    with runs.owned(str(tmp_path / "kept")):
        (tmp_path / "kept").mkdir()
    assert sorted(os.listdir(tmp_path)) == ["kept"]


def test_a_train_command_owns_its_run_directory_until_it_ends(tmp_path, capsys, monkeypatch):
    """From before the data is read (a second command is refused at once, not after reading the data)
    to the end of the command, also where no `prepare` holds it (between a self-training teacher and its
    student)."""
    from tfllm.training import classifier

    run_dir = str(tmp_path / "run")
    seen = []

    def check(config):  # the first thing the trainer reads
        other = subprocess.run([sys.executable, "-c", HOLDER, run_dir], capture_output=True, text=True)
        seen.append(other.stderr.strip().splitlines()[-1])
        raise UserInputError("stop here")

    monkeypatch.setattr(classifier, "split_as_trained", check)
    result = main_in_process(capsys, "train", "--data", "rotten_tomatoes", "--run-dir", run_dir)
    assert result.returncode == 2 and "stop here" in result.stderr
    assert seen == [f"tfllm.errors.UserInputError: Run directory {run_dir!r} is in use by another tfllm process "
                    f"(pid {os.getpid()}); wait for it or choose another run_dir."]  # a Python holder
    assert os.listdir(tmp_path) == []  # released: no lock file left


def test_write_text_replaces_a_file_whole_and_keeps_its_permissions(tmp_path):
    """`runs.write_text` (every JSON of a run, `explain --html`): a write that fails leaves the old file and
    no temporary beside it; a finished one keeps the old file's mode (a page made private stays private)."""
    from tfllm import runs

    page = tmp_path / "why.html"
    page.write_text("old")
    os.chmod(page, 0o640)

    with pytest.raises(TypeError):  # a write that fails once the temporary file exists
        runs.write_text(str(page), object())
    assert page.read_text() == "old" and os.listdir(tmp_path) == ["why.html"]
    runs.write_text(str(page), "new é")
    assert page.read_text(encoding="utf-8") == "new é" and os.stat(page).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["why.html"]
    runs.write_json(str(tmp_path / "sub" / "m.json"), {"a": 1})  # makes the folder
    umask = os.umask(0)
    os.umask(umask)  # a new file gets the mode `open` would give it, not mkstemp's 0600
    assert (tmp_path / "sub" / "m.json").read_text().startswith("{")
    assert os.stat(tmp_path / "sub" / "m.json").st_mode & 0o777 == 0o666 & ~umask


def test_write_text_follows_a_link_and_writes_a_fifo_or_device_in_place(tmp_path):
    """A temporary renamed over the target replaced a symlink, a FIFO or a device with a plain file
    (`--html /dev/null` as root broke the system's /dev/null): a link is followed (its file replaced, the
    link kept), anything not a regular file is written in place."""
    import stat
    import threading

    from tfllm import runs

    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to("reports/real.html")  # relative, as `ln -s` makes them
    runs.write_text(str(link), "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(os.listdir(tmp_path / "reports")) == ["real.html"]

    fifo = tmp_path / "fifo"  # a stand-in for /dev/null or /dev/stdout: a reader gets what is written
    os.mkfifo(fifo)
    read = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()))
    reader.start()
    runs.write_text(str(fifo), "through the pipe")
    reader.join(10)
    assert read == ["through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link.html", "reports"]


def test_write_text_names_the_file_it_was_given_when_the_system_refuses(tmp_path):
    """An OSError named the hidden temporary ('.x.html.iscsm_vl.tmp'); and a name near the system's limit
    failed because the temporary's name, longer, was over it."""
    from tfllm import runs

    near_limit = tmp_path / ("a" * 250 + ".html")
    runs.write_text(str(near_limit), "ok")
    assert near_limit.read_text() == "ok" and os.listdir(tmp_path) == [near_limit.name]
    for bad in (tmp_path / ("a" * 300 + ".html"), tmp_path / near_limit.name / "x.html"):
        with pytest.raises(OSError) as error:
            runs.write_text(str(bad), "x")
        assert error.value.filename == str(bad), error.value
    assert os.listdir(tmp_path) == [near_limit.name]
