"""tfllm reads and writes its text as UTF-8 whatever the locale says.

Under a locale whose encoding is ASCII (`LC_ALL=POSIX`, the C locale of many containers and cron jobs),
Python's default for `open(file)` is ASCII: a run whose labels are 好/坏 was written as UTF-8 and then
could not be read back ("cannot be loaded ... train it again"). The scan below keeps every text-mode
`open` in tfllm/ naming its encoding (it reads the source with `ast`, so it runs in well under a second);
the subprocess tests run the CLI under that locale.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The locale a user without a UTF-8 locale has: Python's locale encoding is ASCII, and nothing coerces it.
ASCII_LOCALE = {"LC_ALL": "POSIX", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}

# Openers whose mode is their second argument (`gzip.open` defaults to binary, the others to text);
# `os.open` takes flags and reads bytes.
OPENERS = {"open": "r", "io.open": "r", "codecs.open": "r", "os.fdopen": "r", "gzip.open": "rb"}


def _name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def _text_opens_without_encoding(tree):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg for k in node.keywords}
        if "encoding" in keywords or None in keywords:  # None: a **kwargs that may hold it
            continue
        name = _name(node.func)
        if name in OPENERS:
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), ast.Constant(OPENERS[name]))
            if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value):
                yield node.lineno, name
        # pathlib's: `.read_text()` takes no text, `.write_text(data)` one (runs.write_text takes two).
        elif isinstance(node.func, ast.Attribute) and (
                (node.func.attr == "read_text" and not node.args)
                or (node.func.attr == "write_text" and len(node.args) == 1)):
            yield node.lineno, node.func.attr


def test_every_text_mode_open_names_its_encoding():
    found = []
    for file in sorted((ROOT / "tfllm").rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        found += [f"{file.relative_to(ROOT)}:{line}: {name}(...)" for line, name in _text_opens_without_encoding(tree)]
    assert not found, ("Text-mode opens without encoding= read and write the locale's encoding (ASCII under "
                       "LC_ALL=POSIX); give them encoding=\"utf-8\":\n" + "\n".join(found))


def test_the_scan_finds_what_it_looks_for():
    source = "\n".join([
        'open(f)', 'open(f, "w")', 'io.open(f, mode="a")', 'os.fdopen(fd, "w")', 'gzip.open(f, "rt")',
        'p.read_text()', 'p.write_text(s)',
        # none of these:
        'open(f, "rb")', 'open(f, mode="wb")', 'gzip.open(f)', 'os.open(f, os.O_RDONLY)',
        'open(f, encoding="utf-8")', 'os.fdopen(fd, "w", encoding="utf-8")', 'p.read_text(encoding="utf-8")',
        'runs.write_text(file, text)',
    ])
    assert [line for line, _ in _text_opens_without_encoding(ast.parse(source))] == [1, 2, 3, 4, 5, 6, 7]


def run_in_ascii_locale(*args, extra_env=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **ASCII_LOCALE)
    env.pop("PYTHONIOENCODING", None)
    env.update(extra_env or {})
    args = [a if isinstance(a, bytes) else str(a) for a in args]  # bytes: argv as a terminal sends it
    return subprocess.run([sys.executable, "-m", "tfllm.cli", *args], capture_output=True, timeout=timeout, env=env)


@pytest.fixture
def chinese_labels_run(tiny_classifier_run, tmp_path):
    """A copy of the tiny classifier whose class names are 坏/好, as a run trained on Chinese labels has."""
    from tfllm import runs

    run_dir = str(tmp_path / "h2")
    shutil.copytree(tiny_classifier_run, run_dir)
    labels = runs.read_json(runs.path(run_dir, runs.LABELS))
    assert len(labels) == 2
    runs.write_json(runs.path(run_dir, runs.LABELS), ["坏", "好"])
    return run_dir


@pytest.mark.slow
def test_a_run_with_non_ascii_labels_loads_in_an_ascii_locale(chinese_labels_run):
    result = run_in_ascii_locale("predict", chinese_labels_run, "great", extra_env={"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert json.loads(result.stdout.decode("utf-8").splitlines()[-1])["label"] in ("坏", "好")


def _streams_script(extra_env):
    """What a process that set up its streams as the `tfllm` command does prints of 好 and of its stdin."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **ASCII_LOCALE)
    env.pop("PYTHONIOENCODING", None)
    env.update(extra_env)
    script = ("import sys; from tfllm._env import utf8_standard_streams; utf8_standard_streams(); "
              "print('\\u597d', sys.stdin.read().strip()); print('\\u574f', file=sys.stderr)")  # 好, 坏
    return subprocess.run([sys.executable, "-c", script], input="美好\n".encode("utf-8"), capture_output=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("extra_env", [{}, {"PYTHONIOENCODING": "ascii"}], ids=["posix-locale", "ascii-io"])
def test_standard_streams_write_escapes_where_they_cannot_encode_and_read_utf8(extra_env):
    result = _streams_script(extra_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"\\u597d \\u7f8e\\u597d\n"
    assert result.stderr == b"\\u574f\n"


def test_standard_streams_are_left_alone_in_utf8():
    result = _streams_script({"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "好 美好\n".encode("utf-8")
    assert result.stderr == "坏\n".encode("utf-8")


@pytest.mark.slow
def test_predict_prints_non_ascii_labels_where_stdout_is_ascii(chinese_labels_run, tmp_path):
    texts = tmp_path / "d.csv"
    texts.write_text("text\n美好的电影\ngreat\n", encoding="utf-8")
    for args in (["great"], ["--file", texts]):
        result = run_in_ascii_locale("predict", chinese_labels_run, *args, extra_env={"PYTHONIOENCODING": "ascii"})
        assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
        rows = [json.loads(line) for line in result.stdout.decode("ascii").splitlines() if line.startswith("{")]
        assert rows and all(row["label"] in ("坏", "好") for row in rows)  # the escapes read back as JSON's


def test_utf8_arguments_that_python_kept_as_surrogates_are_read_back():
    """As Python decodes argv in an ASCII locale: each non-ASCII byte a lone surrogate (`surrogateescape`)."""
    import argparse

    from tfllm.cli import _check_text_arguments
    from tfllm.errors import UserInputError

    def as_argv(text):
        return text.encode("utf-8").decode("ascii", "surrogateescape")

    args = argparse.Namespace(texts=[as_argv("美好的电影"), "great"])
    _check_text_arguments(args)
    assert args.texts == ["美好的电影", "great"]
    args = argparse.Namespace(prompt=as_argv("从前"), texts=None)
    _check_text_arguments(args)
    assert args.prompt == "从前"
    with pytest.raises(UserInputError, match=r"Text 2 is not valid UTF-8 \(b'caf\\xe9"):  # Latin-1 bytes
        _check_text_arguments(argparse.Namespace(texts=["fine", "café".encode("latin-1").decode("ascii", "surrogateescape")]))


@pytest.mark.slow
def test_predict_reads_utf8_texts_in_an_ascii_locale(chinese_labels_run):
    # Bytes in argv, as a terminal sends them: Python decodes them with the locale's ASCII.
    result = run_in_ascii_locale("predict", chinese_labels_run, "美好的电影".encode("utf-8"),
                                 extra_env={"PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert json.loads(result.stdout.decode("utf-8").splitlines()[-1])["text"] == "美好的电影"
    result = run_in_ascii_locale("predict", chinese_labels_run, b"caf\xe9")
    assert result.returncode == 2 and b"Text 1 is not valid UTF-8 (b'caf\\xe9')" in result.stderr, result.stderr
