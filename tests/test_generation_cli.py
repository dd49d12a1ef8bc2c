"""`tfllm train --task generate` then `tfllm generate`, as a user runs them."""

import inspect
import json
import os
import pathlib
import re
import shlex

import pytest

from conftest import main_in_process, run_cli
from tfllm.errors import UserInputError


@pytest.mark.slow
def test_cli_train_then_generate(tmp_path, capsys):
    """Trains in this process (the command's code path); `tfllm generate` then runs twice in fresh processes, as a
    user runs it, and prints the same text for the same seed."""
    run_dir = tmp_path / "run"
    result = main_in_process(capsys, "train", "--task", "generate", "--data", "shakespeare", "--preset", "tiny", "--steps", "20",
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
    assert "[UNK]" not in result.stderr
    # Text the tokenizer has no token for is scored as [UNK] tokens, as said (generate refuses such text).
    (tmp_path / "unseen.txt").write_text("JULIET: Jé ☃ jumps! Ĳ ☃☃\n" * 40, encoding="utf-8")
    result = main_in_process(capsys, "evaluate", run_dir, "--data", tmp_path / "unseen.txt")
    assert result.returncode == 0 and "% of the tokens of --data" in result.stderr and "[UNK]" in result.stderr

    result = run_cli("generate", run_dir, "the ", "--max-new-tokens", "30", "--sampler", "top_k", "--seed", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("the ") and len(result.stdout) >= len("the ") + 1
    again = run_cli("generate", run_dir, "the ", "--max-new-tokens", "30", "--sampler", "top_k", "--seed", "1")
    assert again.stdout == result.stdout

    for args, message in [
        (("--max-new-tokens", "0"), "--max-new-tokens must be an integer from 1 to"),  # the flag, not Python's name
        (("--max-new-tokens", "100000"), "--max-new-tokens must be an integer from 1 to"),
    ]:
        bad = main_in_process(capsys, "generate", run_dir, "the ", *args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    bad = main_in_process(capsys, "generate", run_dir, "the \u2603")
    assert bad.returncode == 2 and "has no token for" in bad.stderr


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


def test_a_window_keep_longer_than_the_window_is_refused_before_training(tmp_path, capsys):
    # It was a traceback of the model class (exit 1), after the data was read and tokenized.
    result = main_in_process(capsys, "train", "--task", "generate", "--data", "shakespeare", "--preset", "nanogpt-cpu",
                             "--set", "sequence_length=32", "--set", "window_keep=48", "--steps", "10",
                             "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert ("--set window_keep=48 does not fit --set sequence_length=32" in result.stderr
            and "(from 1 to 31)" in result.stderr), result.stderr
    assert not os.path.exists(tmp_path / "r")


def test_generate_with_a_run_directory_and_no_prompt_says_the_prompt_is_missing(tmp_path, capsys):
    """argparse fills the required prompt first, so `tfllm generate RUN` was told to pass the RUN_DIR it passed."""
    from lm_utils import write_records

    run_dir = write_records(tmp_path / "gen", "generate")
    result = main_in_process(capsys, "generate", run_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"No prompt after the run directory {str(run_dir)!r}: pass the text to continue" in result.stderr
    # The example command is pasted as it is: a run directory with a space comes back whole (it was unquoted).
    spaced = write_records(tmp_path / "运行 1" / "拼音 gen", "generate")
    result = main_in_process(capsys, "generate", str(spaced))
    assert result.returncode == 2
    example = result.stderr.split("e.g. ", 1)[1].strip().rstrip(".")
    assert shlex.split(example) == ["tfllm", "generate", str(spaced), "ROMEO:"]
    result = main_in_process(capsys, "generate", "ROMEO:")  # a prompt and no run directory: as before
    assert result.returncode == 2 and "Pass the RUN_DIR of a trained text generator" in result.stderr


def test_generate_with_a_run_directory_and_tflite_says_pass_one(tmp_path, capsys):
    """`tfllm generate RUN --tflite FILE "ROMEO:"` failed in argparse with "unrecognized arguments: ROMEO:"
    (RUN was taken for the prompt), never reaching the check that says to pass one of them."""
    from lm_utils import write_records

    run_dir = write_records(tmp_path / "gen", "generate")
    result = main_in_process(capsys, "generate", run_dir, "--tflite", tmp_path / "model.tflite", "ROMEO:")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Pass either RUN_DIR or --tflite FILE, not both." in result.stderr
    with pytest.raises(SystemExit) as info:  # other leftovers: argparse's own error, as before
        main_in_process(capsys, "generate", run_dir, "ROMEO:", "--bogus")
    assert info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


# --- inputs a user gets wrong, on an untrained run directory (no training time) ---------------


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    from lm_utils import tiny_generator, write_run_dir

    return write_run_dir(tiny_generator(sequence_length=16), tmp_path_factory.mktemp("gen") / "run")


@pytest.mark.parametrize("numpy_path", ["1", "0"])
@pytest.mark.parametrize("flags,message", [
    (["--seed", str(10**30)], "error: --seed must be a whole number from -2147483648 to 2147483647"),  # OverflowError
    (["--seed", str(2**32)], "error: --seed must be a whole number from"),  # NumPy: the same text as --seed 0
    (["--temperature", "inf"], "error: --temperature must be a number >= 0, got inf"),  # printed uniform noise
    (["--temperature", "1e39"], "got 1e+39, which is beyond float32's range"),  # infinity in float32
    (["--sampler", "beam", "--num-beams", "100000"], "error: --num-beams must be a whole number from 1 to 64"),  # hours
    (["--max-new-tokens", "0"], "error: --max-new-tokens must be an integer from 1 to"),  # a flag, as argparse's are
    # Temperature 0 is greedy: a seed, top-k or top-p with it was ignored (--sampler greedy --seed 3 is refused).
    (["--temperature", "0", "--top-k", "5", "--seed", "3"],
     "--seed is not read at --temperature 0, which decodes greedily (as --sampler greedy does)"),
    (["--temperature", "0", "--top-k", "5"], "--top-k is not read at --temperature 0, which decodes greedily"),
    (["--sampler", "top_p", "--temperature", "0", "--top-p", "0.5"], "--top-p is not read at --temperature 0"),
])
def test_out_of_range_sampling_options_are_one_line(untrained_run, capsys, monkeypatch, numpy_path, flags, message):
    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "4", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("numpy_path", ["1", pytest.param("0", marks=pytest.mark.slow)])
def test_a_prompt_s_windows_line_endings_are_read_as_training_reads_them(untrained_run, capsys, monkeypatch,
                                                                          numpy_path):
    """Training reads "\r\n" and a lone "\r" as "\n" (`datasets.text.unix_newlines`), so no run has "\r" in its
    vocabulary: a prompt from a Windows editor was refused as holding a character never seen in training."""
    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    argv = ["--max-new-tokens", "6", "--sampler", "greedy", "--no-prompt-echo"]
    unix = main_in_process(capsys, "generate", untrained_run, "Be:\nhear", *argv)
    assert unix.returncode == 0, unix.stderr
    for prompt in ("Be:\r\nhear", "Be:\rhear"):
        result = main_in_process(capsys, "generate", untrained_run, prompt, *argv)
        assert (result.returncode, result.stdout) == (0, unix.stdout), result.stderr
    if numpy_path == "0":  # tfllm.generate, in Python
        from tfllm.generation import generate

        assert generate(untrained_run, ["Be:\r\nhear"], max_new_tokens=6, sampler="greedy") == [unix.stdout[:-1]]


@pytest.mark.parametrize("numpy_path", ["1", pytest.param("0", marks=pytest.mark.slow)])
def test_a_huge_temperature_never_samples_a_banned_token(untrained_run, capsys, monkeypatch, numpy_path):
    """Banned ids were set to -1e9 before the division by the temperature: at 1e30 every token was as likely,
    top-k's ties went to the lowest ids (the special ones) and the completion came back empty."""
    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "8", "--seed", "3",
                             "--temperature", "1e30", "--top-k", "5", "--no-prompt-echo")
    assert result.returncode == 0, result.stderr
    greedy = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "8", "--sampler", "greedy",
                             "--no-prompt-echo")
    # As many characters as a greedy text of 8 tokens, none of them a special token (dropped from the text).
    assert len(result.stdout) == len(greedy.stdout) > 1, (result.stdout, greedy.stdout)


@pytest.mark.slow
def test_python_generate_refuses_wrong_kinds_and_clamps_top_k(untrained_run):
    from tfllm.generation import generate, load_generator

    with pytest.raises(UserInputError, match="max_new_tokens must be an integer from 1 to 8192, got True"):
        generate(untrained_run, ["Be"], max_new_tokens=True)  # was a TensorFlow InvalidArgumentError
    with pytest.raises(UserInputError, match=r"Prompt 1 is bytes \(b'Be'\), not a string; decode it first"):
        generate(untrained_run, [b"Be"], max_new_tokens=2)  # was called an empty prompt
    # Options the sampler does not read, refused as the command refuses them (they were ignored).
    for options, message in ((dict(sampler="random", num_beams=3), "num_beams is for sampler='beam'"),
                             (dict(top_p=0.5), "top_p is for sampler='top_p', and the sampler is 'top_k'"),
                             (dict(sampler="greedy", top_k=5), "top_k is for sampler='top_k'"),
                             (dict(sampler="beam", temperature=3.0), "temperature is for sampler='top_k', 'top_p' "
                                                                     "or 'random', and the sampler is 'beam'"),
                             (dict(sampler="greedy", seed=5), "seed is for sampler='top_k'"),
                             (dict(temperature=0, seed=5), r"seed is not read at temperature=0, which decodes greedily "
                                                           r"\(as sampler='greedy' does\)"),
                             (dict(sampler="top_p", temperature=0, top_p=0.5), "top_p is not read at temperature=0")):
        with pytest.raises(UserInputError, match=message):
            generate(untrained_run, ["Be"], max_new_tokens=2, **options)
    assert generate(untrained_run, ["Be"], max_new_tokens=2, temperature=0) == generate(  # greedy, as documented
        untrained_run, ["Be"], max_new_tokens=2, sampler="greedy")
    with pytest.raises(UserInputError, match="seed must be a whole number from"):
        generate(untrained_run, ["Be"], max_new_tokens=2, seed=2**40)
    # top_k is clamped to the vocabulary, as documented (a huge one was an OverflowError of int32).
    vocabulary_size = load_generator(untrained_run).vocabulary_size
    assert generate(untrained_run, ["Be"], max_new_tokens=4, top_k=10**12, seed=3) == \
        generate(untrained_run, ["Be"], max_new_tokens=4, top_k=vocabulary_size, seed=3)


@pytest.mark.slow
def test_python_generate_takes_a_loaded_causal_lm_and_refuses_arguments_of_the_wrong_kind(untrained_run,
                                                                                           monkeypatch):
    """`generate(CausalLM.from_preset(run), ...)` was a TypeError from os.path, as were None for the run or
    the prompts, an int `stop` and a `stream_callback` that is not a function."""
    import keras_hub

    from tfllm import generation

    monkeypatch.setattr(generation, "_BY_MODEL", {})
    model = keras_hub.models.CausalLM.from_preset(untrained_run)
    loaded = generation.generate(model, ["Be"], max_new_tokens=4, seed=3)
    assert loaded == generation.generate(untrained_run, ["Be"], max_new_tokens=4, seed=3)
    [(kept_model, kept)] = generation._BY_MODEL.values()
    generation.generate(model, ["Be"], max_new_tokens=4, seed=3)
    assert kept_model is model and [entry[1] for entry in generation._BY_MODEL.values()] == [kept]  # not rebuilt
    for run_dir, prompts, options, message in (
            (None, ["Be"], {}, "generate takes the path of a run directory, a Generator or a KerasHub CausalLM, "
             "got NoneType"),
            (untrained_run, None, {}, "prompts must be a list of strings, got NoneType"),
            (untrained_run, ["Be"], dict(stop=3), "stop must be a list of strings, got int"),
            (untrained_run, ["Be"], dict(stop=[3]), "Stop strings must be non-empty strings, got [3]"),
            (untrained_run, ["Be"], dict(stream_callback=3), "stream_callback must be a function")):
        with pytest.raises(UserInputError, match=re.escape(message)):
            generation.generate(run_dir, prompts, max_new_tokens=2, **options)


@pytest.mark.slow
def test_a_pathlib_run_directory_loads_as_its_str_does(untrained_run):
    # `generate(Path(RUN), ...)`, `load_task(Path(RUN))`: a notebook's pathlib.Path was refused as a damaged run
    # ("cannot be loaded (ValueError: A preset identifier must be a string ...); restore its files from a copy").
    from tfllm.generation import load_generator
    from tfllm.runs import load_task, require_task

    path = pathlib.Path(untrained_run)
    assert type(load_task(path)) is type(load_task(str(untrained_run)))
    # Messages name the path as the user wrote it, not as "PosixPath('...')".
    with pytest.raises(UserInputError, match=r"^'[^']*missing' is not a tfllm run directory"):
        load_generator(path.parent / "missing")
    with pytest.raises(UserInputError, match=r"^'[^']*' holds a text generator, not a text classifier"):
        require_task(path, "classify")
    from tfllm.export.saved_model import export_classifier

    # export_classifier named no way on (predict does): it names the generator's exporter.
    with pytest.raises(UserInputError, match=r"holds a text generator, not a text classifier\. Export it with "
                                             r"tfllm\.export\.causal_lm\.export_causal_lm\(run_dir, name\)\.$"):
        export_classifier(path, "gen", base_dir=str(path.parent / "savedmodels"))
    # Without XLA (what is checked is the loading, not the compiler: two compilations saved).
    assert load_generator(path, jit_compile=False).generate(["Be"], max_new_tokens=3, seed=1) == \
        load_generator(str(untrained_run), jit_compile=False).generate(["Be"], max_new_tokens=3, seed=1)


def test_generate_takes_its_prompt_after_its_options(untrained_run, capsys, monkeypatch):
    """`tfllm generate RUN --seed 1 PROMPT` was "unrecognized arguments: PROMPT" (argparse took RUN for the prompt)."""
    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", "1")  # the parsing is checked, not the decoding
    options = ["--max-new-tokens", "6", "--seed", "1"]
    expected = main_in_process(capsys, "generate", untrained_run, "Be", *options)
    assert expected.returncode == 0, expected.stderr
    result = main_in_process(capsys, "generate", untrained_run, *options, "Be")
    assert (result.returncode, result.stdout) == (0, expected.stdout), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_python_generate_samples_as_the_command_does_unless_told(untrained_run, capsys, monkeypatch, numpy_path):
    """The README pairs `tfllm generate RUN "ROMEO:" --seed 1` with `generate(RUN, ["ROMEO:"], seed=1)`; the
    Python call sampled with temperature 1.0 and top_k 50 (the command: 0.8 and 200), so the texts differed."""
    from tfllm.generation import generate

    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "12", "--seed", "1",
                             "--no-prompt-echo")
    assert result.returncode == 0, result.stderr
    assert generate(untrained_run, ["Be"], max_new_tokens=12, seed=1) == [result.stdout.rstrip("\n")]
    # (An untrained model's flat scores give the same text at temperature 0.8 or 1.0: the defaults themselves.)
    from tfllm.cli import SAMPLING_DEFAULTS
    from tfllm.generation import Generator

    for function in (generate, Generator.generate):
        defaults = {k: v.default for k, v in inspect.signature(function).parameters.items()}
        # None: the command's default, so that one a sampler does not read is refused
        defaults.update({k: SAMPLING_DEFAULTS[k] for k in ("temperature", "top_k", "top_p", "num_beams")
                         if defaults[k] is None})
        assert {k: defaults[k] for k in SAMPLING_DEFAULTS} == SAMPLING_DEFAULTS
        assert SAMPLING_DEFAULTS["temperature"] == 0.8 and SAMPLING_DEFAULTS["top_k"] == 200  # as --help says


@pytest.mark.slow
def test_a_second_call_with_another_length_decodes_with_the_same_function(untrained_run):
    """The decoding function is traced again for any width (reduce_retracing) and XLA compiles it per width: a
    buffer shorter than the window then held a slice longer than itself ("Expected size[1] in [0, 14], but got
    15"), so a notebook's second `generate(run, ...)` with another max_new_tokens failed."""
    from tfllm.generation import load_generator

    generator = load_generator(untrained_run)
    assert generator.jit_compile and generator.window == 16
    short = generator.generate(["Be"], max_new_tokens=4, sampler="greedy")[0]
    functions = dict(generator._compiled)
    longer = generator.generate(["Be"], max_new_tokens=12, sampler="greedy")[0]
    assert longer.startswith(short) and generator._compiled == functions
    # And past the window, where decoding slides it, as a fresh generator decodes it.
    past = generator.generate(["Be"], max_new_tokens=30, sampler="greedy")[0]
    assert past == load_generator(untrained_run).generate(["Be"], max_new_tokens=30, sampler="greedy")[0]


def test_a_long_prompt_is_not_echoed_whole_in_the_error(untrained_run, capsys):
    result = main_in_process(capsys, "generate", untrained_run, "\u2603" * 100_000, "--max-new-tokens", "2")
    assert result.returncode == 2 and "has no token for" in result.stderr and len(result.stderr) < 400, len(result.stderr)


def test_a_damaged_run_directory_is_one_line(untrained_run, tmp_path, capsys):
    import shutil

    from tfllm.generation import generate

    run_dir = tmp_path / "damaged"
    shutil.copytree(untrained_run, run_dir)
    with open(run_dir / "model.weights.h5", "r+b") as f:  # a copy cut short: h5py's OSError, a traceback
        f.truncate(1000)
    result = main_in_process(capsys, "generate", run_dir, "Be", "--max-new-tokens", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{str(run_dir)!r} cannot be loaded" in result.stderr and "train it again" in result.stderr
    with pytest.raises(UserInputError, match="cannot be loaded"):
        generate(str(run_dir), ["Be"], max_new_tokens=2)


def test_evaluate_on_a_text_too_short_says_to_score_it(untrained_run, tmp_path, capsys):
    """It said the file was "too short to train a language model", where nothing trains."""
    (tmp_path / "mine.txt").write_text("Be not afraid.\n")
    result = main_in_process(capsys, "evaluate", untrained_run, "--data", tmp_path / "mine.txt")
    assert result.returncode == 2 and "is too short to score a language model" in result.stderr, result.stderr


@pytest.mark.parametrize("flags,message", [
    (["--split", "train"], "--split train"),  # scored the validation text, saying nothing
    (["--split", "test"], "--split test"),
    (["--label-column", "y"], "--label-column"),
    (["--memory", "train"], "--memory"),
    (["--source-column", "zh"], "--source-column"),
])
def test_evaluate_refuses_flags_a_generator_does_not_use(untrained_run, capsys, flags, message):
    result = main_in_process(capsys, "evaluate", untrained_run, *flags)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("flags,message", [
    (["--num-beams", "8"], "--num-beams is for --sampler beam, and the sampler is top_k"),  # sampled top-k
    (["--sampler", "top_k", "--top-p", "0.5"], "--top-p is for --sampler top_p"),
    (["--sampler", "greedy", "--top-k", "5"], "--top-k is for --sampler top_k, and the sampler is greedy"),
    # Beam search and greedy decoding draw nothing: a temperature or seed changed nothing, without a word.
    (["--sampler", "beam", "--temperature", "3"], "--temperature is for --sampler top_k, top_p or random, and the "
                                                  "sampler is beam"),
    (["--sampler", "greedy", "--seed", "5"], "--seed is for --sampler top_k, top_p or random"),
])
def test_a_sampling_flag_the_sampler_does_not_read_is_refused(untrained_run, capsys, flags, message):
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "4", *flags)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def _run_trained_on(run_dir, data, copy_to):
    """A copy of `run_dir` whose records say it was trained on `data` (what an empty prompt continues)."""
    import shutil

    from tfllm import runs
    from tfllm.presets import CAUSAL_LM_PRESETS

    shutil.copytree(run_dir, copy_to)
    config = runs.read_train_config(copy_to)
    config.data = data
    config.to_json(runs.path(copy_to, runs.RUN_CONFIG))
    runs.write_json(runs.path(copy_to, runs.RECIPE), CAUSAL_LM_PRESETS["tiny"])  # what evaluate compiles with
    return str(copy_to)


@pytest.fixture(scope="module")
def runs_of_each_separator(untrained_run, tmp_path_factory):
    """{separator: a copy of the untrained run whose records say it was trained on a file of that separator}: a
    CSV's rows are joined with a blank line, a text file's lines with one newline. Shared by both decoding paths
    of the empty-prompt test (nothing writes to them), so the Python calls' loaded models serve both."""
    copies = tmp_path_factory.mktemp("separators")
    return {separator: _run_trained_on(untrained_run, data, copies / f"{separator.count(chr(10))}")
            for data, separator in (("rows.csv", "\n\n"), ("lines.txt", "\n"))}


@pytest.mark.slow
@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_an_empty_prompt_starts_a_new_document_after_the_runs_separator(runs_of_each_separator, capsys,
                                                                       monkeypatch, numpy_path):
    """An empty prompt was refused ("Empty prompt: give at least one character"): there was no documented way
    to generate an item from scratch. It now continues the run corpus's document separator, and only the new
    text comes back."""
    from tfllm.generation import generate

    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    for separator, run_dir in runs_of_each_separator.items():
        options = dict(max_new_tokens=12, seed=3)
        assert generate(run_dir, ["", ""], **options) == generate(run_dir, [separator, separator], **options)
        result = main_in_process(capsys, "generate", run_dir, "", "--max-new-tokens", "12", "--seed", "3")
        assert result.returncode == 0, result.stderr
        assert result.stdout == generate(run_dir, [separator], **options)[0] + "\n"


@pytest.mark.slow
def test_stop_reads_backslash_escapes_on_the_command_line(untrained_run, capsys):
    """`--stop '\\n'` (a backslash and an n, as users type a newline) was never matched: samples ran on past the
    end of the line. The command reads \\n, \\t, \\r and \\\\; the Python API's stop= stays literal."""
    from tfllm.generation import generate

    options = dict(max_new_tokens=120, seed=5)
    whole = generate(untrained_run, ["Be"], **options)[0]
    assert "\n" in whole  # the model writes a line break, where --stop '\n' must end the text
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "120", "--seed", "5",
                             "--no-prompt-echo", "--stop", r"\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == whole[: whole.index("\n")] + "\n"
    assert generate(untrained_run, ["Be"], stop=r"\n", **options)[0] == whole  # literal: no backslash written


@pytest.mark.slow
@pytest.mark.parametrize("numpy_path", ["1", "0"])
def test_num_samples_prints_each_sample_as_the_python_rows(untrained_run, capsys, monkeypatch, numpy_path):
    """`tfllm generate RUN "The" "A"` was "unrecognized arguments" and no flag gave several samples in one process.
    --num-samples N prints N texts, sample i seeded seed + i as row i of `generate([prompt] * N, seed=seed)`."""
    from tfllm.cli import SAMPLE_SEPARATOR
    from tfllm.generation import generate

    monkeypatch.setenv("TFLLM_NUMPY_GENERATION", numpy_path)
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "10", "--seed", "7",
                             "--num-samples", "3")
    assert result.returncode == 0, result.stderr
    rows = generate(untrained_run, ["Be"] * 3, max_new_tokens=10, seed=7)
    assert len(set(rows)) == 3  # three different samples (else the check below could not tell seeds apart)
    assert result.stdout == f"\n{SAMPLE_SEPARATOR}\n".join("Be" + row for row in rows) + "\n"


@pytest.mark.parametrize("flags,message", [
    (["--num-samples", "0"], "--num-samples must be from 1 to 256, got 0"),
    (["--num-samples", "2", "--sampler", "greedy"], "samples would not differ"),
    (["--num-samples", "2", "--temperature", "0"], "samples would not differ"),
    (["--num-samples", "3", "--seed", str(2**31 - 2)], "pass a --seed of at most 2147483645"),
])
def test_num_samples_that_cannot_differ_or_overflow_the_seed_are_refused(untrained_run, capsys, flags, message):
    result = main_in_process(capsys, "generate", untrained_run, "Be", "--max-new-tokens", "4", *flags)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


ROWS = ["Before we proceed", "hear me speak", "First Citizen", "any further, hear me", "we proceed any further",
        "Citizen: hear me speak"]


def _rows_csv(path, column):
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([column, "label"])
        writer.writerows([row, "x"] for row in ROWS)
    return str(path)


def test_evaluate_data_reads_the_runs_text_column(untrained_run, tmp_path, capsys):
    """`tfllm evaluate RUN --data heldout.csv` of a run trained with --text-column title failed "has no text
    column 'text'", though --help says the column defaults to the run's."""
    from tfllm import runs

    run_dir = _run_trained_on(untrained_run, "rows.csv", tmp_path / "run")
    config = runs.read_train_config(run_dir)
    config.text_column = "title"
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    result = main_in_process(capsys, "evaluate", run_dir, "--data", _rows_csv(tmp_path / "heldout.csv", "title"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_tokens"] > 0


def test_evaluate_data_scores_every_row_boundary(untrained_run, tmp_path):
    """`evaluate --data FILE.csv` scored training + validation rows joined with nothing: the two rows at the
    split were glued into one ("...itemAitemB": 18,092 tokens for 18,094 characters)."""
    import tfllm

    run_dir = _run_trained_on(untrained_run, "rows.csv", tmp_path / "run")
    report = tfllm.evaluate(run_dir, data=_rows_csv(tmp_path / "heldout.csv", "text"))
    assert report["num_tokens"] == len("\n\n".join(ROWS))  # a character tokenizer: one token a character


@pytest.mark.slow
def test_evaluate_and_generate_share_one_loaded_model(untrained_run, tmp_path, monkeypatch):
    """`tfllm.evaluate` of a generator kept its own loaded copy beside `tfllm.generate`'s: a notebook calling
    both held the model twice. Now evaluate scores generate's model, with a fresh load's metrics, and
    `tfllm.clear_cache()` frees it."""
    import tfllm
    from tfllm import runs
    from tfllm.generation import cached_generator

    run_dir = _run_trained_on(untrained_run, "rows.csv", tmp_path / "run")  # one no earlier test loaded
    text = _rows_csv(tmp_path / "heldout.csv", "text")
    loads = []
    load = runs.load_task
    monkeypatch.setattr(runs, "load_task", lambda *args, **kwargs: loads.append(args[0]) or load(*args, **kwargs))
    before = tfllm.generate(run_dir, ["Be"], max_new_tokens=4, sampler="greedy")
    model = cached_generator(run_dir).model
    scored = tfllm.evaluate(run_dir, data=text)
    assert len(loads) == 1 and cached_generator(run_dir).model is model
    # Compiling the shared model for loss leaves generation as it was.
    assert tfllm.generate(run_dir, ["Be"], max_new_tokens=4, sampler="greedy") == before and len(loads) == 1
    tfllm.clear_cache()
    assert tfllm.evaluate(run_dir, data=text) == scored and len(loads) == 2
    assert cached_generator(run_dir).model is not model


@pytest.mark.slow
def test_threads_loading_runs_at_once_leave_the_callers_warning_filters_as_they_were(untrained_run, tmp_path):
    """The loaders wrapped the load in `warnings.catch_warnings()` + "ignore", which saves and restores the
    process's filter list: two threads interleaving restored each other's "ignore", and every warning after
    (the user's, tfllm's) was lost for the rest of the process."""
    import threading
    import warnings

    from tfllm.generation import load_generator

    before = list(warnings.filters)
    barrier, errors = threading.Barrier(2), []

    def load():
        barrier.wait()
        try:
            load_generator(untrained_run, jit_compile=False)
        except Exception as e:  # noqa: BLE001  (reported below, with the filters)
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and warnings.filters == before
