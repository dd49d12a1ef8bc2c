"""`tfllm train --task generate` then `tfllm generate`, as a user runs them."""

import json
import os

import pytest

from conftest import main_in_process, run_cli


@pytest.mark.slow
def test_cli_train_then_generate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    result = run_cli("train", "--task", "generate", "--data", "shakespeare", "--preset", "tiny", "--steps", "20",
                     "--max-rows", "5000", "--no-jit-compile", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["loss"] > 0 and metrics["speed"]["tokens_per_second"] > 0

    # `tfllm evaluate` on a generator: the loss of the run's own validation text, as training reported it.
    result = main_in_process(capsys, "evaluate", run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["loss"] == pytest.approx(metrics["val"]["loss"], abs=2e-3)
    assert report["num_tokens"] == metrics["val"]["num_tokens"]

    result = run_cli("generate", run_dir, "the ", "--max-new-tokens", "30", "--sampler", "top_k", "--seed", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("the ") and len(result.stdout) >= len("the ") + 1
    again = run_cli("generate", run_dir, "the ", "--max-new-tokens", "30", "--sampler", "top_k", "--seed", "1")
    assert again.stdout == result.stdout

    for args, message in [
        (("--max-new-tokens", "0"), "max_new_tokens"),
        (("--max-new-tokens", "100000"), "max_new_tokens"),
    ]:
        bad = main_in_process(capsys, "generate", run_dir, "the ", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    bad = main_in_process(capsys, "generate", run_dir, "the \u2603")
    assert bad.returncode == 2 and "never saw" in bad.stderr


def test_cli_bad_inputs_exit_2(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("To be or not")
    result = main_in_process(capsys, "train", "--task", "generate", "--data", tiny, "--preset", "tiny", "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "too short" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "r")

    from lm_utils import write_records

    clf = write_records(tmp_path / "clf", "classify")
    result = main_in_process(capsys, "generate", clf, "hello")
    assert result.returncode == 2 and "does not generate text" in result.stderr
    # Bytes of argv that are not UTF-8 (kept by Python as lone surrogates): one line, not a tokenizer's traceback.
    for command in (["generate", clf, "caf\udce9"], ["predict", clf, "fine", "caf\udce9 great"]):
        result = main_in_process(capsys, *command)
        assert result.returncode == 2 and "is not valid UTF-8 (b'caf\\xe9" in result.stderr, result.stderr

    # Flags a task does not use are refused, not ignored (--steps on a classifier) or silently ranked.
    for task, data, flags, message in (
            ("generate", "shakespeare", ["--steps", "60", "--epochs", "1"], "Give --steps (60) or --epochs (1"),
            ("classify", "rotten_tomatoes", ["--steps", "1"], "a classify run trains whole passes"),
            ("translate", "cedict", ["--steps", "1"], "a translate run trains whole passes")):
        result = main_in_process(capsys, "train", "--task", task, "--data", data, "--preset", "tiny", *flags,
                                 "--run-dir", tmp_path / "s")
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
        assert not os.path.exists(tmp_path / "s")


def test_generate_with_a_run_directory_and_no_prompt_says_the_prompt_is_missing(tmp_path, capsys):
    """argparse fills the required prompt first, so `tfllm generate RUN` was told to pass the RUN_DIR it passed."""
    from lm_utils import write_records

    run_dir = write_records(tmp_path / "gen", "generate")
    result = main_in_process(capsys, "generate", run_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"No prompt after the run directory {str(run_dir)!r}: pass the text to continue" in result.stderr
    result = main_in_process(capsys, "generate", "ROMEO:")  # a prompt and no run directory: as before
    assert result.returncode == 2 and "Pass the RUN_DIR of a trained text generator" in result.stderr
