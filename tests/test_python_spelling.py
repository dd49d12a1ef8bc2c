"""UserInputError messages name a command's flags under the command, and Python's names elsewhere (errors.py)."""

import dataclasses
import threading

import pytest

from tfllm import errors
from tfllm.config import TrainConfig
from tfllm.errors import UserInputError


def test_a_max_rows_message_reads_in_python_spelling(tmp_path):
    from tfllm.datasets.text import load_documents

    (tmp_path / "d.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"^max_rows=1 keeps 1 document of .*: raise max_rows\.$"):
        load_documents(str(tmp_path / "d.txt"), max_rows=1)


def test_a_set_message_reads_as_overrides():
    from tfllm.presets import checked_setting

    with pytest.raises(UserInputError, match=r"Use overrides=\{'lazy_adam': True\} or "
                                             r"overrides=\{'lazy_adam': False\}\.$"):
        checked_setting("classify", "lazy_adam", "no")


def test_a_missing_column_says_which_argument_to_pass(tmp_path):
    from tfllm.datasets.text import load_documents

    (tmp_path / "d.csv").write_text("text,label\na,b\nc,d\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"Pass text_column=\.\.\. with one of them\.$"):
        load_documents(str(tmp_path / "d.csv"), text_column="review")


@pytest.mark.parametrize("flags, python", [
    ("--max-rows 400 keeps 3 rows", "max_rows=400 keeps 3 rows"),
    ("--from-preset 'runs/a' is not a folder", "from_preset='runs/a' is not a folder"),
    ("use --task generate --from-preset PRESET;", "use task='generate' from_preset=PRESET;"),
    ("pass --labels pos,neg.", "pass labels=['pos', 'neg']."),
    ("--labels splits at commas", "labels splits at commas"),  # a word of the sentence, not a value
    ("(with --overwrite)", "(with overwrite=True)"),
    ("--jit-compile/--no-jit-compile and --set jit_compile=false say different things",
     "jit_compile and overrides={'jit_compile': False} say different things"),
    ("raise --set sequence_length up to 128", "raise overrides['sequence_length'] up to 128"),
    ("--space searches 'a' and --set fixes them", "space searches 'a' and overrides fixes them"),
    ("(--set 'reference_separator=\"/\"')", "(overrides={'reference_separator': \"/\"})"),
    # Commands to type keep their flags: they are what to type in a notebook too.
    ("train one with `tfllm train --task generate`.", "train one with `tfllm train --task generate`."),
    ("`hf download a/b --local-dir FOLDER` fetches it, then pass it to --from-preset.",
     "`hf download a/b --local-dir FOLDER` fetches it, then pass it to from_preset."),
    ("that run: tfllm train --task classify --from-preset runs/x. Or --epochs 3.",
     "that run: tfllm train --task classify --from-preset runs/x. Or epochs=3."),
    ("its columns are ['--a', 'b'].", "its columns are ['--a', 'b']."),  # a user's column name, as it is
    # A command that is one Python call with the same arguments becomes that call.
    ("Use `tfllm generate runs/a PROMPT` for a text generator.", "Use `tfllm.generate('runs/a', [PROMPT])` for a text generator."),
    ("Use `tfllm translate 'my runs/x' TEXT`.", "Use `tfllm.translate('my runs/x', [TEXT])`."),
    ('e.g. `tfllm predict runs/r "a joyous, moving film"`', 'e.g. `tfllm.predict(\'runs/r\', ["a joyous, moving film"])`'),
    ("see `tfllm evaluate runs/r`", "see `tfllm.evaluate('runs/r')`"),
    ("`tfllm explain RUN TEXT`", "`tfllm.explain(RUN, TEXT)`"),
    ("`tfllm generate runs/a PROMPT --seed 1`", "`tfllm generate runs/a PROMPT --seed 1`"),  # flags: as typed
])
def test_python_spelling(flags, python):
    assert errors.python_spelling(flags) == python


def test_the_switches_are_train_configs_true_or_false_fields():
    switches = {f.name for f in dataclasses.fields(TrainConfig) if "bool" in str(f.type)}
    assert switches == set(errors._SWITCHES)


def test_an_error_raised_in_a_thread_of_a_running_command_names_its_flags(monkeypatch):
    """As `tfllm serve`'s request threads and tf.data's: they do not inherit a contextvar."""
    raised = []
    monkeypatch.setattr(errors, "command_running", True)  # as tfllm.cli._main sets it around the command
    thread = threading.Thread(target=lambda: raised.append(UserInputError("Pass --overwrite or --max-rows 3.")))
    thread.start()
    thread.join()
    assert str(raised[0]) == "Pass --overwrite or --max-rows 3."
    monkeypatch.setattr(errors, "command_running", False)
    assert str(UserInputError("Pass --overwrite or --max-rows 3.")) == "Pass overwrite=True or max_rows=3."


def test_a_progress_line_names_the_option_as_the_caller_gives_it(monkeypatch):
    """train_causal_lm's "Text: ... (cut by --max-rows)" line read --max-rows to a Python caller (`errors.spelled`)."""
    assert errors.spelled(" (cut by --max-rows)") == " (cut by max_rows)"
    monkeypatch.setattr(errors, "command_running", True)
    assert errors.spelled(" (cut by --max-rows)") == " (cut by --max-rows)"



def test_errors_that_name_a_command_to_run_name_a_python_call_instead(tmp_path, monkeypatch):
    """A notebook was told to run commands: "Rerun its own command to resume it, add overwrite=True ..." for an
    interrupted run given other settings, "Move it back (mv ...)" for a run an overwrite set aside.
    (tfllm.generate on a classifier: tests/test_causal_lm.py; Ctrl-C: tests/test_run_directory.py.)"""
    from tfllm import runs

    run_dir = str(tmp_path / "k6")  # interrupted after its first backup, then given other settings
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", run_dir=run_dir, epochs=30)
    config.to_json(runs.path(run_dir, runs.RUN_CONFIG))
    runs.write_json(runs.path(runs.path(run_dir, runs.BACKUP), "training_metadata.json"), {})
    other = dataclasses.replace(config, learning_rate=0.5, epochs=2)
    with pytest.raises(UserInputError, match=r"\(epochs differs: 2 now, 30 then; learning_rate differs: 0\.5 now, "
                                             r"not given then\)\. Call its training function again "
                                             r"with the settings it started with to resume it, add overwrite=True to "
                                             r"start over with these, or choose another run_dir\.$"):
        runs.check_writable(run_dir, config=other)

    aside = str(tmp_path / "k7")  # the run an interrupted overwrite set aside, its replacement deleted since
    (tmp_path / ".k7.previous").mkdir()
    with pytest.raises(UserInputError, match=r"Move it back \(rename '.*\.k7\.previous' to '.*k7', once .* or delete "
                                             r"it, then call the training function again\.$"):
        runs.check_writable(aside)

    monkeypatch.setattr(errors, "command_running", True)  # a command is still told its commands
    with pytest.raises(UserInputError, match=r"Rerun its own command to resume it, add --overwrite"):
        runs.check_writable(run_dir, config=other)
    with pytest.raises(UserInputError, match=r"Move it back \(mv .*\.k7\.previous .*k7, once .*then run the "
                                             r"command again\.$"):
        runs.check_writable(aside)


def test_train_command_is_a_command_or_a_trainer_call(monkeypatch):
    from tfllm import runs

    assert runs.train_command("classify", data="DATA", from_preset="runs/my pre") == \
        "tfllm.train_classifier(TrainConfig(task='classify', data=DATA, from_preset='runs/my pre', ...))"
    monkeypatch.setattr(errors, "command_running", True)
    assert runs.train_command("classify", data="DATA", from_preset="runs/my pre") == \
        "`tfllm train --task classify --data DATA --from-preset 'runs/my pre'`"
