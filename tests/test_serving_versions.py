"""Version folders a command must never make worse (issue 18, items 7 and 9), and the
serving package's shape (issue 17: split by job, never importing the CLI)."""

import argparse
import ast
import os
import pathlib
import shutil
import time

import pytest

pytest.importorskip("tensorflow_serving")

from tfllm.cli import main  # noqa: E402
from tfllm.export import versioning  # noqa: E402
from tfllm.serving import fixtures, list_models, prune  # noqa: E402
from tfllm.serving.limits import RequestError  # noqa: E402

SERVING = pathlib.Path(__file__).resolve().parent.parent / "tfllm" / "serving"


@pytest.fixture(scope="module")
def good_version(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "1"
    fixtures.save_classifier(str(path), warmup=False)
    return path


def _layout(base, good_version, good=(2,), garbage=(10,), pb_only=()):
    for v in good:
        shutil.copytree(good_version, base / "clf" / str(v))
    for v in garbage:
        (base / "clf" / str(v)).mkdir(parents=True)
        (base / "clf" / str(v) / "saved_model.pb").write_bytes(b"\x08\x96\x01garbage" * 10)
    for v in pb_only:
        (base / "clf" / str(v)).mkdir(parents=True)
        shutil.copy(good_version / "saved_model.pb", base / "clf" / str(v))


def test_prune_never_removes_the_newest_loadable_version(tmp_path, good_version, capsys):
    _layout(tmp_path, good_version, good=(2,), garbage=(10,))
    removed = prune(str(tmp_path), "clf", keep=1)
    assert removed == [] and 2 in removed.skipped and "10" in removed.skipped[2]
    assert sorted(os.listdir(tmp_path / "clf")) == ["10", "2"]

    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 0
    out, err = capsys.readouterr()
    assert "Nothing to prune" in out
    assert (out + err).count("clf version 2") == 1 and "Kept clf version 2" in out, (out, err)  # it was twice
    assert (tmp_path / "clf" / "2" / "saved_model.pb").exists()


def test_prune_still_removes_what_it_should(tmp_path, good_version):
    _layout(tmp_path, good_version, good=(1, 2, 3), garbage=(), pb_only=(4,))
    removed = prune(str(tmp_path), "clf", keep=2)
    # 3 is the newest that loads (4 lacks its variables): kept beyond keep=2's [3, 4].
    assert removed == [1, 2] and removed.skipped == {}
    removed = prune(str(tmp_path), "clf", keep=1)
    assert removed == [] and list(removed.skipped) == [3]
    assert "variables" in removed.skipped[3]


def _tflite_version(folder):
    """A TFLite export's version folder, as far as prune and the listing read it (the identifier, no parity.json)."""
    folder.mkdir(parents=True)
    (folder / versioning.TFLITE_FILE).write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)


def test_prune_keeps_the_newest_savedmodel_under_tflite_versions(tmp_path, good_version, capsys):
    """A TFLite version above a served model's SavedModels, then `--keep 1`, printed "Pruned gen versions [1, 2]":
    TF Serving cannot load the TFLite one, and the server unloaded the model."""
    _layout(tmp_path, good_version, good=(1, 2), garbage=())
    _tflite_version(tmp_path / "clf" / "3")
    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pruned clf versions [1]" in out, out
    assert "Kept clf version 2: the newest SavedModel that loads" in out and "3 (TFLite)" in out, out
    assert sorted(os.listdir(tmp_path / "clf")) == ["2", "3"]


@pytest.mark.slow
def test_models_prints_sizes_in_decimal_units(tmp_path, capsys):
    """A version of 1,000,099 bytes was listed as "976.7 KB" (divided by 1024); the README's MB are decimal."""
    _tflite_version(tmp_path / "clf" / "1")
    with open(tmp_path / "clf" / "1" / versioning.TFLITE_FILE, "ab") as f:
        f.write(b"\0" * (1_000_099 - f.tell()))
    (tmp_path / "clf" / "2").mkdir()
    (tmp_path / "clf" / "2" / "labels.json").write_bytes(b"x" * 1_500)
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "version 1  1.0 MB  " in out and "version 2  1.5 kB  " in out, out


@pytest.mark.parametrize("held,fmt,words", [
    ("saved_model", "tflite", "--name clf-tflite"),
    ("tflite", "saved_model", "holds TFLite versions (1)"),
])
def test_an_export_into_a_folder_of_the_other_format_is_refused_before_anything_is_written(
        tmp_path, good_version, capsys, held, fmt, words):
    """TF Serving polls savedmodels/NAME and loads its newest version: a TFLite export there was that version."""
    if held == "saved_model":
        _layout(tmp_path, good_version, good=(1,), garbage=())
    else:
        _tflite_version(tmp_path / "clf" / "1")
    before = sorted(os.listdir(tmp_path / "clf"))
    # The run folder is no run at all: the refusal comes before it is read.
    assert main(["export", str(tmp_path / "norun"), "--name", "clf", "--base-dir", str(tmp_path), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm: error: ") and "\n" not in err and words in err, err
    # Python's callers too, at the folder's write.
    with pytest.raises(versioning.UserInputError, match="holds"):
        with versioning.atomic_version_dir(str(tmp_path), "clf", fmt=fmt):
            pass
    assert sorted(os.listdir(tmp_path / "clf")) == before


def test_prune_keeps_what_the_folders_models_config_serves(tmp_path, good_version, capsys):
    """`tfllm serve SM` reads SM/models.config; `tfllm models SM --prune clf --keep 1` deleted the version it
    pinned, and the server unloaded the model: "no version of it is left on disk"."""
    _layout(tmp_path, good_version, good=(1, 2, 3, 4), garbage=())
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "clf" base_path: "clf" model_version_policy { specific { versions: 1 } }'
        ' version_labels { key: "stable" value: 2 } }'
        ' config { name: "other" base_path: "elsewhere" model_version_policy { specific { versions: 3 } } } }')
    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pruned clf versions [3]" in out, out  # 3 is pinned in another model's folder only
    assert "Kept clf version 1: " in out and "specific" in out and "Kept clf version 2: " in out and "'stable'" in out
    assert sorted(os.listdir(tmp_path / "clf")) == ["1", "2", "4"]
    (tmp_path / "models.config").write_text("model_config_list { config { name: ")
    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 2
    assert "Not pruning 'clf': cannot read model config" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "clf")) == ["1", "2", "4"]


@pytest.mark.slow
def test_export_keep_keeps_what_the_folders_models_config_serves(tiny_classifier_run, good_version, tmp_path, capsys):
    """`export --keep 1` prunes the versions that the folder's models.config does not serve: of 1 (the config's),
    2 and the new 3, it keeps 1 and 3."""
    # Versions 1 and 2: loadable SavedModels already there (the file's toy classifier; a version folder is
    # self-contained, so copies spare two exports); only the export with --keep is this test's.
    _layout(tmp_path, good_version, good=(1, 2), garbage=())
    (tmp_path / "models.config").write_text('model_config_list { config { name: "clf" base_path: "clf" '
                                            'model_version_policy { specific { versions: 1 } } } }')
    assert main(["export", tiny_classifier_run, "--name", "clf", "--base-dir", str(tmp_path), "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pruned versions [2]" in out and "Kept clf version 1: " in out, out
    assert sorted(os.listdir(tmp_path / "clf")) == ["1", "3"]


@pytest.mark.parametrize("mode", ["folder", "config"])
def test_a_model_whose_every_version_went_lists_them_as_end(tmp_path, good_version, mode):
    """docs/serving.md: a version served and unloaded is listed as END, error_code OK. It held while another
    version remained; when the last one went, the status was "Servable not found ... (models served: none)"."""
    from tfllm.serving.registry import ModelRegistry
    from tfllm.serving.rest import status_json

    _layout(tmp_path, good_version, good=(1, 2), garbage=())
    config = tmp_path / "models.config"
    if mode == "config":
        config.write_text('model_config_list { config { name: "clf" base_path: "clf" '
                          'model_version_policy { all { } } } }')
    registry = ModelRegistry(str(tmp_path), poll_seconds=0, model_config_file=str(config) if mode == "config" else None)
    registry.refresh()
    assert [s.state for s in registry.statuses("clf")] == ["AVAILABLE", "AVAILABLE"]
    for version in ("1", "2"):
        shutil.rmtree(tmp_path / "clf" / version)
    registry.refresh()
    assert status_json(registry.statuses("clf"))["model_version_status"] == [
        {"version": v, "state": "END", "status": {"error_code": "OK", "error_message": ""}} for v in ("2", "1")]
    assert [s.state for s in registry.statuses("clf", 1)] == ["END"]
    with pytest.raises(RequestError, match="Servable not found for request: model 'clf' has no version left") as e:
        registry.resolve("clf")  # predict: still not found
    assert e.value.status == 404
    _layout(tmp_path, good_version, good=(3,), garbage=())  # a new version: served, the others still END
    registry.refresh()
    assert [(s.version, s.state) for s in registry.statuses("clf")] == [(3, "AVAILABLE"), (2, "END"), (1, "END")]
    shutil.rmtree(tmp_path / "clf" / "3")
    if mode == "config":  # a model the config no longer names is unknown, as in TF Serving
        config.write_text("model_config_list { }")
        os.utime(config, (1, 1))
    else:  # as a model whose folder is gone
        shutil.rmtree(tmp_path / "clf")
    registry.refresh()
    with pytest.raises(RequestError, match="Servable not found"):
        registry.statuses("clf")


@pytest.mark.slow
def test_two_prunes_at_once_each_skip_what_the_other_removed(tmp_path, good_version, capsys, monkeypatch):
    """`tfllm models --prune` twice at once (or with an `export --keep`): the one that came second to a
    version crashed with FileNotFoundError renaming it to `.pruning-N`. The other prune is the same command
    run in this process (`main_in_process`), in full, between this prune's choice and its renames."""
    from conftest import main_in_process

    _layout(tmp_path, good_version, good=(1, 2, 3, 4, 5), garbage=())
    check, others, keep = versioning.version_problem, [], ["1"]

    def another_prune_meanwhile(version_dir):  # after this prune chose its versions, before it renames them
        if not others:
            others.append(None)  # once
            with pytest.MonkeyPatch.context() as other:  # the other prune checks its versions as usual
                other.setattr(versioning, "version_problem", check)
                others[0] = main_in_process(capsys, "models", tmp_path, "--prune", "clf", "--keep", keep[0])
        return check(version_dir)

    monkeypatch.setattr(versioning, "version_problem", another_prune_meanwhile)
    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 0
    assert others[0].returncode == 0 and "Pruned clf versions [1, 2, 3, 4]" in others[0].stdout, others[0].stderr
    assert "Nothing to prune" in capsys.readouterr().out  # the other one removed them all
    assert sorted(os.listdir(tmp_path / "clf")) == ["5"]
    _layout(tmp_path, good_version, good=(6, 7), garbage=())
    others.clear()
    keep[0] = "2"  # the other one removes 5; this one, keeping 1, 6 only
    assert prune(str(tmp_path), "clf", keep=1) == [6]
    assert "Pruned clf versions [5]" in others[0].stdout and sorted(os.listdir(tmp_path / "clf")) == ["7"]


def test_a_missing_or_short_data_shard_is_broken_and_never_kept_over_a_good_version(
        tmp_path, good_version, capsys):
    # What a half-finished copy looks like: the index is there, its data shard is not (2)
    # or is short (3). Pruning must keep 1, the newest version that loads.
    _layout(tmp_path, good_version, good=(1, 2, 3), garbage=())
    shard = "variables.data-00000-of-00001"
    (tmp_path / "clf" / "2" / "variables" / shard).unlink()
    short = tmp_path / "clf" / "3" / "variables" / shard
    short.write_bytes(short.read_bytes()[:-10])
    versions = {v["version"]: v for v in list_models(str(tmp_path))[0]["versions"]}
    assert versions[2]["error"] == f"variables/{shard} is missing"
    assert versions[3]["error"].startswith(f"variables/{shard} is truncated")
    assert "error" not in versions[1]
    removed = prune(str(tmp_path), "clf", keep=1)
    assert removed == [2] and list(removed.skipped) == [1]  # 3 is the newest: keep=1 keeps it
    assert sorted(os.listdir(tmp_path / "clf")) == ["1", "3"]


def test_folders_named_with_non_ascii_digits_are_not_versions(tmp_path, good_version, capsys):
    # '²'.isdigit() is true but int('²') raises; int('١') is 1. TF Serving skips both.
    _layout(tmp_path, good_version, good=(1, "²", "١"), garbage=())
    assert [v["version"] for v in list_models(str(tmp_path))[0]["versions"]] == [1]
    assert versioning.versions(str(tmp_path), "clf") == [1]
    assert versioning.next_version(str(tmp_path), "clf") == 2
    assert main(["models", str(tmp_path)]) == 0
    assert "version 1 " in capsys.readouterr().out
    assert prune(str(tmp_path), "clf", keep=1) == []

    from tfllm.serving.registry import ModelRegistry

    registry = ModelRegistry(str(tmp_path))
    registry.refresh()  # raised ValueError on every poll, so the server never saw new versions
    assert [s.version for s in registry.statuses("clf")] == [1]


def test_models_lists_a_broken_version_and_goes_on(tmp_path, good_version, capsys):
    _layout(tmp_path, good_version, good=(2,), garbage=(10,), pb_only=(11,))
    models = list_models(str(tmp_path))
    versions = {v["version"]: v for v in models[0]["versions"]}
    assert "does not parse" in versions[10]["error"] and versions[10]["signatures"] == {}
    assert "variables" in versions[11]["error"]
    assert "error" not in versions[2] and "serving_default" in versions[2]["signatures"]
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BROKEN: saved_model.pb does not parse" in out and "serving_default(" in out


def test_a_file_named_like_a_version_an_incomplete_folder_and_leftovers_are_named_not_a_traceback(
        tmp_path, good_version, capsys):
    """`echo hi > sm/m/7` made `models --prune` (and `export --keep`) a NotADirectoryError traceback; a numbered
    folder without saved_model.pb was left out of `tfllm models` (docs/serving.md: listed as BROKEN); a `latest`
    link a prune left dangling and a `3.tmp` copy were not mentioned anywhere."""
    _layout(tmp_path, good_version, good=(1, 2, 9), garbage=())
    (tmp_path / "clf" / "7").write_text("hi", encoding="utf-8")
    (tmp_path / "clf" / "5").mkdir()
    (tmp_path / "clf" / "5" / "README").write_text("copy cut short", encoding="utf-8")
    shutil.copytree(good_version, tmp_path / "clf" / "3.tmp")
    (tmp_path / "clf" / "latest").symlink_to(tmp_path / "clf" / "1")
    assert main(["models", str(tmp_path), "--prune", "clf", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "Pruned clf versions [1, 2]" in out and "Kept clf version 7: is a file, not a version folder" in out
    assert "Kept clf version 5: holds no export" in out
    assert "version 5 " in out and "BROKEN: no saved_model.pb" in out
    assert "not versions (never served nor pruned): 3.tmp, 7, latest (a link to nothing)" in out
    assert sorted(os.listdir(tmp_path / "clf")) == ["3.tmp", "5", "7", "9", "latest"]


def test_a_version_folder_with_no_export_is_broken_not_tflite(tmp_path, capsys):
    """`mkdir sm/clf/007` was listed as "TFLite (not servable by TF Serving)" beside "BROKEN: no saved_model.pb":
    a folder with neither file is no format, and its line says what is missing (empty, or other files)."""
    (tmp_path / "clf" / "007").mkdir(parents=True)
    (tmp_path / "clf" / "8").mkdir()
    (tmp_path / "clf" / "8" / "README").write_text("copy cut short", encoding="utf-8")
    versions = {v["version"]: v for v in list_models(str(tmp_path))[0]["versions"]}
    assert versions[7]["format"] is None and versions[7]["error"] == "empty folder: no saved_model.pb or model.tflite"
    assert versions[8]["format"] is None and versions[8]["error"] == "no saved_model.pb or model.tflite"
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TFLite" not in out, out
    assert out.splitlines()[1:] == [f"  version 8  14 B  {tmp_path / 'clf' / '8'}",
                                    "    BROKEN: no saved_model.pb or model.tflite",
                                    f"  version 7  0 B  {tmp_path / 'clf' / '007'}",
                                    "    BROKEN: empty folder: no saved_model.pb or model.tflite"]


def test_a_new_export_cleans_stale_temporary_folders(tmp_path):
    model_dir = tmp_path / "clf"
    old = model_dir / ".tmp-old"  # an export from before owners were recorded, long untouched
    old.mkdir(parents=True)
    long_ago = time.time() - versioning.STALE_SECONDS - 10
    os.utime(old, (long_ago, long_ago))
    recent = model_dir / ".tmp-recent"  # maybe still being written: kept
    recent.mkdir()
    host = versioning._host_hash()
    dead = model_dir / f".tmp-999999999@{host}-abc"  # its process is gone
    (dead / "variables").mkdir(parents=True)
    alive = model_dir / f".tmp-{os.getpid()}@{host}-abc"  # a running export: kept
    alive.mkdir()
    with versioning.atomic_version_dir(str(tmp_path), "clf") as version:
        open(os.path.join(version.tmp_dir, "saved_model.pb"), "wb").close()
        assert f".tmp-{os.getpid()}@{host}-" in version.tmp_dir
    assert version.path.endswith(os.path.join("clf", "1"))
    assert sorted(os.listdir(model_dir)) == sorted(["1", ".tmp-recent", alive.name])


def test_overlapping_exports_into_one_name_get_a_version_each(tmp_path):
    # Two `tfllm export --name clf` runs that overlap: both start before either finishes.
    first = versioning.atomic_version_dir(str(tmp_path), "clf")
    second = versioning.atomic_version_dir(str(tmp_path), "clf")
    a, b = first.__enter__(), second.__enter__()
    for target, text in ((a, b"A"), (b, b"B")):
        pathlib.Path(target.tmp_dir, "saved_model.pb").write_bytes(text)
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert (a.path, b.path) == (str(tmp_path / "clf" / "1"), str(tmp_path / "clf" / "2"))
    assert (tmp_path / "clf" / "1" / "saved_model.pb").read_bytes() == b"A"
    assert (tmp_path / "clf" / "2" / "saved_model.pb").read_bytes() == b"B"
    assert sorted(os.listdir(tmp_path / "clf")) == ["1", "2"]


@pytest.mark.slow
def test_writing_an_export_leaves_the_processs_warning_filters_alone_while_it_runs(tmp_path):
    """`write_out` wrapped the write in `warnings.catch_warnings()` + "ignore", which swaps the process's filter
    list for its whole length: another thread's warnings were lost meanwhile, and two exports at once (a notebook's
    thread pool) restored each other's "ignore", leaving every warning off for the rest of the process."""
    import threading
    import warnings

    import keras
    import tensorflow as tf

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: model(x), input_signature=[tf.TensorSpec([None, 3])])
    before, seen = list(warnings.filters), []
    writer = threading.Thread(target=versioning.write_out, args=(archive, str(tmp_path / "export")))
    writer.start()
    while writer.is_alive():  # what this (another) thread's warnings meet while the export is written
        seen.append(list(warnings.filters))
        time.sleep(0.005)
    writer.join()
    assert (tmp_path / "export" / "saved_model.pb").exists() and warnings.filters == before
    # TensorFlow's own save swaps them too, for one attribute's getattr at a time (trackable/autotrackable.py):
    # a few glimpses may catch that; tfllm's "ignore" was on for the whole write.
    assert len(seen) >= 5 and sum(filters != before for filters in seen) < len(seen) / 2


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_version_folder_follows_the_umask(umask, tmp_path):
    # Not mkdtemp's 0700: TF Serving running as another user must be able to read it.
    previous = os.umask(umask)
    try:
        with versioning.atomic_version_dir(str(tmp_path), "clf") as version:
            open(os.path.join(version.tmp_dir, "saved_model.pb"), "wb").close()
    finally:
        os.umask(previous)
    assert os.stat(version.path).st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize("argv,words", [
    (["--keep", "0"], "--keep must be at least 1, got 0"),
    (["--out", "{tmp}/phone"], "--out applies to --format tflite only"),
    (["--quantize", "bogus"], "--quantize applies to --format tflite only"),
    (["--format", "tflite", "--out", "{tmp}/phone", "--keep", "1"], "Drop --keep or --out"),
    (["--base-dir", "{tmp}/afile"], "is a file"),
    (["--base-dir", "{tmp}/afile/sm"], "is a file"),
    (["--format", "tflite", "--out", "{tmp}/afile"], "is a file"),
    # --name and --base-dir place a versioned export; with --out they were ignored without a word.
    (["--format", "tflite", "--out", "{tmp}/phone", "--name", "m"], "Drop --name or --out"),
    (["--format", "tflite", "--out", "{tmp}/phone", "--base-dir", "{tmp}/sm"], "Drop --base-dir or --out"),
])
def test_export_options_that_would_be_ignored_or_fail_late_are_refused_first(
        argv, words, tmp_path, capsys):
    # The run folder is no run at all: refusing these must come before the run is even read,
    # let alone the model loaded (a traceback after minutes of work, before).
    (tmp_path / "afile").write_text("hi")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    name = [] if "--out" in argv else ["--name", "m"]  # --out takes no --name
    assert main(["export", str(tmp_path), *name, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfllm: error: ") and "\n" not in err and words in err, err
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_no_serving_module_imports_the_cli():
    for path in SERVING.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n == "tfllm.cli" or n.startswith("tfllm.cli.") for n in names), path


def test_serving_modules_are_split_by_job():
    sizes = {p.name: len(p.read_text().splitlines()) for p in SERVING.glob("*.py")}
    assert {"registry.py", "codec.py", "rest.py", "grpc_service.py", "server.py",
            "commands.py"} <= set(sizes)
    assert max(sizes.values()) < 450, sizes


def test_cli_delegates_serve_and_models_to_the_serving_package():
    from tfllm.cli import build_parser
    from tfllm.serving import commands

    args = build_parser().parse_args(["serve", "x", "--max-batch-size", "8", "--auth-token", "t"])
    assert args.func is commands.run_serve and args.max_batch_size == 8 and args.auth_token == "t"
    assert build_parser().parse_args(["models"]).func is commands.run_models
    # --model_base_path serves one model's folder as 'default' (TF Serving's naming), the positional folder by its own
    # name: the help said the two were the same.
    parser = argparse.ArgumentParser()
    commands.add_serve_arguments(parser)
    flag = next(a for a in parser._actions if "--model_base_path" in a.option_strings)
    assert "'default'" in flag.help and "by its own name" in flag.help, flag.help


@pytest.mark.parametrize("argv,words", [
    (["--max-batch-size", "0"], "--max-batch-size"),
    (["--max-elements", "-5"], "--max-elements"),
    (["--port", "70000"], "--port"),
    (["--max-concurrent-rpcs", "0"], "--max-concurrent-rpcs"),
])
def test_bad_limits_are_refused_by_the_parser(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", str(tmp_path), *argv])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.slow
def test_serve_gives_more_inter_op_threads_than_model_calls_at_once():
    """Each generation in flight holds one inter-op thread for its whole length (its decoding loop is one
    XLA op). The default was TensorFlow's (one per core): 8 long generations beside a classifier made a
    one-line classification wait 28 s (benchmarks/results/serving_stall.json)."""
    import inspect

    from tfllm.cli import build_parser
    from tfllm.serving import grpc_service

    args = build_parser().parse_args(["serve"])
    grpc_workers = inspect.signature(grpc_service.make_grpc_server).parameters["workers"].default
    assert args.inter_op_threads > 40 + grpc_workers + 1  # anyio's 40 REST worker threads, one inline call


@pytest.mark.parametrize("missing, call, extra", [
    ("starlette", lambda tmp_path: main(["serve", str(tmp_path)]), "serving"),
    ("tensorflow_serving", lambda tmp_path: __import__("tfllm.serving").serving.GrpcClient(), "serving"),
    # Checked before the run is even read, so before a conversion that would be thrown away.
    ("ai_edge_litert", lambda tmp_path: __import__("tfllm.export.tflite").export.tflite.export_tflite(
        str(tmp_path / "run"), "x", base_dir=str(tmp_path)), "tflite"),
])
def test_a_missing_optional_extra_is_one_line_naming_it(missing, call, extra, monkeypatch, tmp_path, capsys):
    import sys

    from tfllm.errors import UserInputError

    monkeypatch.setitem(sys.modules, missing, None)  # how Python marks a module as not importable
    try:
        status = call(tmp_path)
    except UserInputError as e:
        message = str(e)
    else:
        assert status == 2
        message = capsys.readouterr().err
    assert missing in message and f'pip install "tfllm[{extra}]"' in message, message


def test_a_version_being_loaded_is_listed_as_loading(tmp_path, good_version, monkeypatch, caplog):
    """As TF Serving lists it (LOADING) until it is AVAILABLE: a version loading for seconds was missing from
    the model's status, and its own status URL answered 404."""
    import threading

    from tfllm.serving import registry as registry_lib
    from tfllm.serving.rest import status_json

    caplog.set_level("INFO", logger="tfllm.serving")
    shutil.copytree(good_version, tmp_path / "clf" / "1")
    registry = registry_lib.ModelRegistry(str(tmp_path))
    real_load, entered, go_on = registry_lib.load_servable, threading.Event(), threading.Event()

    def held_load(*args):  # the real load, held until the test has looked
        entered.set()
        assert go_on.wait(120)
        return real_load(*args)

    monkeypatch.setattr(registry_lib, "load_servable", held_load)

    def states(version=None):
        return [(s.version, s.state) for s in registry.statuses("clf", version)]

    for expected_while, expected_after in (([(1, "LOADING")], [(1, "AVAILABLE")]),
                                           ([(2, "LOADING"), (1, "AVAILABLE")], [(2, "AVAILABLE"), (1, "AVAILABLE")])):
        if expected_while[0][0] == 2:
            shutil.copytree(good_version, tmp_path / "clf" / "2")
        entered.clear(), go_on.clear()
        refresh = threading.Thread(target=registry.refresh)
        refresh.start()
        assert entered.wait(120)
        assert states() == expected_while and states(expected_while[0][0]) == [expected_while[0]]
        assert status_json(registry.statuses("clf"))["model_version_status"][0]["state"] == "LOADING"
        # A request for the version being loaded is told so (503 / UNAVAILABLE, worth retrying), where it
        # was "Servable not found"; the versions already loaded keep answering.
        loading = expected_while[0][0]
        with pytest.raises(RequestError, match=rf"^Model 'clf' version {loading} is still loading; retry") as e:
            registry.resolve("clf", loading if loading == 2 else None)
        assert (e.value.status, e.value.grpc_code) == (503, "UNAVAILABLE")
        if loading == 2:
            assert registry.resolve("clf").version == 1
        assert f"loading clf version {loading} ..." in caplog.text
        go_on.set()
        refresh.join()
        assert states() == expected_after


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single_model", "folder", "config_latest"])
def test_at_start_up_a_broken_newest_version_leaves_the_newest_that_loads_serving(
        mode, tmp_path, good_version, caplog):
    # A restart after a half-copied deploy: 2 and 3 are good, 4 is a truncated copy. Before, the
    # single-model mode and a `latest` config answered 404 "no version that loads" though 3 loads.
    from tfllm.serving.models import ModelPolicy
    from tfllm.serving.registry import ModelRegistry

    _layout(tmp_path, good_version, good=(2, 3, 4), garbage=())
    shard = tmp_path / "clf" / "4" / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-10])
    config = None
    if mode == "config_latest":
        config = tmp_path / "models.config"
        config.write_text('model_config_list { config { name: "clf" base_path: "clf" '
                          'model_platform: "tensorflow" } }')  # TF Serving's default: latest 1
    models = {"clf": ModelPolicy(base_path=str(tmp_path / "clf"), latest=1)} if mode == "single_model" else None
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the config's relative base_path
    try:
        registry = ModelRegistry(None if models else str(tmp_path), 0, str(config) if config else None,
                                 models=models)
        registry.refresh()
    finally:
        os.chdir(cwd)
    assert registry.resolve("clf").version == 3
    states = {s.version: s for s in registry.statuses("clf")}
    assert states[4].state == "END" and states[4].error, states
    assert "cannot load" in caplog.text
    assert ("version 3 meanwhile" in caplog.text) == (mode != "folder")  # the folder mode serves every version


@pytest.mark.slow
def test_ctrl_c_while_export_keep_prunes_says_the_export_is_done(tiny_classifier_run, tmp_path, capsys, monkeypatch):
    """Ctrl-C during `export --keep`'s prune exited 130 with nothing said after "Exported ..."."""
    (tmp_path / "clf" / "1").mkdir(parents=True)  # an old version for the prune to remove
    (tmp_path / "clf" / "1" / "saved_model.pb").write_bytes(b"old")
    rmtree = shutil.rmtree

    def interrupted(path, *args, **kwargs):  # Ctrl-C as the old version's folder is deleted
        if ".pruning-" in os.fspath(path):
            raise KeyboardInterrupt
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(versioning.shutil, "rmtree", interrupted)
    assert main(["export", tiny_classifier_run, "--name", "clf", "--base-dir", str(tmp_path), "--keep", "1"]) == 130
    out, err = capsys.readouterr()
    version = tmp_path / "clf" / "2"
    assert f"Exported {version}" in out and (version / "saved_model.pb").exists()
    assert f"Interrupted while removing old versions: {version} is exported; the next export with --keep 1 " \
           "removes the rest." in err


@pytest.mark.slow  # a real server
def test_a_version_folder_replaced_in_place_is_reloaded(tmp_path, good_version):
    """`rm -rf sm/m/1 && cp -r OTHER sm/m/1`: the server kept answering with the old model, status
    AVAILABLE, its log silent. It reloads the changed version, once, and says so. And a version kept serving
    while a broken newer one was there (the `latest` policy) was reloaded, "its files changed", once that one
    was removed, though nothing of it had changed."""
    from conftest import serving_process

    from tfllm.serving import RestClient

    shutil.copytree(good_version, tmp_path / "sm" / "m" / "1")
    # The toy classifier's logits are [bad - good, good - bad + bias]: "a bad film" is negative with the
    # fixture's bias 0, positive with a bias of 5.
    other = fixtures.save_classifier(str(tmp_path / "other" / "1"), bias=5.0, warmup=False)
    port = 18350 + os.getpid() % 40
    client = RestClient("127.0.0.1", port, timeout=10)
    log = tmp_path / "serve.log"
    # One model's folder (TF Serving's single-model mode): its newest version only, the `latest` policy.
    with serving_process([tmp_path / "sm" / "m", "--model-name", "m", "--port", port, "--grpc-port", port + 1,
                          "--poll-seconds", "0.2"], lambda: client.status("m"), log):
        assert client.predict("m", instances=["a bad film"], version=1)[0]["label"] == "negative"
        (tmp_path / "sm" / "m" / "7").mkdir()  # a newer version half copied: version 1 serves meanwhile
        shutil.copy(good_version / "saved_model.pb", tmp_path / "sm" / "m" / "7")
        deadline = time.monotonic() + 60
        while "cannot load" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        shutil.rmtree(tmp_path / "sm" / "m" / "7")
        time.sleep(1)  # a few polls
        assert client.predict("m", instances=["a bad film"])[0]["label"] == "negative"
        assert "reloading" not in log.read_text(), log.read_text()
        shutil.rmtree(tmp_path / "sm" / "m" / "1")
        shutil.copytree(other, tmp_path / "sm" / "m" / "1")
        deadline = time.monotonic() + 60
        while client.predict("m", instances=["a bad film"], version=1)[0]["label"] != "positive":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)  # a few more polls: the reloaded version is not loaded again and again
        assert client.status("m")["model_version_status"][0]["state"] == "AVAILABLE"
    assert log.read_text().count("reloading m version 1: its files changed") == 1, log.read_text()


@pytest.mark.slow
def test_an_export_of_another_task_under_a_name_is_refused_before_anything_is_written(tmp_path):
    """`tfllm export runs/cls --name m2`, m2 a translator's: a warning that the signatures differ, then version 2,
    the classifier, which a server then answered translation clients with. The task is read from the input the
    newest version's serving_default takes its text as (the exporters': text, prompt, source)."""
    import keras
    import tensorflow as tf

    def export(input_name, task):
        model = keras.Sequential([keras.Input((), dtype="string"), keras.layers.StringLookup(vocabulary=["a"])])
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda x: {"out": model(x)},
                             input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
        with versioning.atomic_version_dir(str(tmp_path), "m2", task=task) as version:
            versioning.write_out(archive, version.tmp_dir)
        return version.path

    export("source", "translate")
    folder = str(tmp_path / "m2")
    for task, what in (("classify", "a text classifier"), ("generate", "a text generator")):
        with pytest.raises(versioning.UserInputError) as refused:
            export("text" if task == "classify" else "prompt", task)
        assert str(refused.value) == (f"{folder!r} holds versions of a translation model (newest: 1); {what} there "
                                      "would be served to its clients in its place. Export under another name, or "
                                      f"remove {folder!r} first.")
        assert os.listdir(folder) == ["1"]  # nothing written, not even a temporary folder
    assert export("source", "translate").endswith(os.path.join("m2", "2"))  # the same task: a version more


def test_an_export_whose_signatures_differ_from_the_version_before_warns(tmp_path):
    """`tfllm export RUN --name reviews` of a run with other classes added version 4 of 'reviews' without a word, and
    a server moved its clients from 2 classes to 5. A version called as the one before it says nothing."""
    import warnings

    import keras
    import tensorflow as tf

    from tfllm.errors import TfllmWarning

    def export(classes):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(classes)])
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda x: {"probabilities": model(x)},
                             input_signature=[tf.TensorSpec([None, 4], name="x")])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with versioning.atomic_version_dir(str(tmp_path), "reviews") as version:
                versioning.write_out(archive, version.tmp_dir)
        return [str(w.message) for w in caught if issubclass(w.category, TfllmWarning)]

    assert export(2) == [] and export(2) == []  # the first version; then one called the same way
    said = export(5)
    assert len(said) == 1, said
    assert said[0].startswith(f"{tmp_path / 'reviews' / '3'}: its signatures differ from version 2's "
                              "(serving_default's output 'probabilities' float32[None, 2] -> float32[None, 5])"), said
    assert "a server of 'reviews' answers with version 3" in said[0] and "Export under another name" in said[0]
