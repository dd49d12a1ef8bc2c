"""A finished run scored on data: `tfllm evaluate` and `tfllm.evaluate`, one entry for every task.

Each task's own `evaluate_run` does the work (`training.classifier`, `training.causal_lm` (causal pretraining
too), `training.pretraining` (masked-LM pretraining), `training.seq2seq`); this module refuses the options a
run's task does not read, which were ignored without a word (`split="train"` on a generator scored its
validation text; `memory` on a classifier changed nothing), and sends the rest on.
"""

from tfllm import runs
from tfllm.config import data_path
from tfllm.errors import UserInputError

# Each option -> the tasks whose evaluation reads it ("generate": pretraining too, causal or masked LM).
OPTIONS = {"text_column": ("classify", "generate"), "label_column": ("classify",),
           "split_column": ("classify", "translate"), "source_column": ("translate",),
           "target_column": ("translate",), "split": ("classify", "translate"), "memory": ("translate",),
           "lm": ("translate",), "input_method": ("translate",),
           "sampler": ("translate",), "num_beams": ("translate",)}


def evaluate(run_dir, data=None, split=None, **options):
    """Metrics of a finished run, as `tfllm evaluate RUN_DIR` prints them.

    Args:
        run_dir: a classification, generation, pretraining or translation run directory.
        data: another file (or bundled name) to score; by default the run's own data, split exactly
            as its training split it, so no row it trained on is scored.
        split: "train", "val" or "test" (default "test"; a generator scores its validation text).
        **options: `text_column`, `label_column`, `split_column` of `data` (classifiers; a generator
            and a pretraining run read `text_column`), `source_column`, `target_column`, `memory`, `lm`, `input_method`,
            `sampler`, `num_beams` (translation runs; see `tfllm.training.seq2seq.evaluate_run`).

    Returns:
        A classifier's `classification_report` (accuracy, precision/recall/F1, ROC-AUC, confusion
        matrix), a generator's loss, perplexity and bits per character, a masked LM's loss,
        masked_accuracy and perplexity (as its metrics.json's val), or a translator's chrF, BLEU
        and exact match. A word-vector pretraining run is refused: it predicts no token.

    Example:
    >>> tfllm.evaluate("runs/reviews")["accuracy"]
    """
    if data is not None and not isinstance(data, str):  # a list failed in os.stat: "should be string, ... not list"
        data = data_path(data, "evaluate's data")
    run_dir = runs.run_dir_argument(run_dir, "evaluate")
    runs.refuse_unknown_options("evaluate", options, OPTIONS)
    task = runs.task_of(run_dir)
    kind = "generate" if task == "pretrain" else task
    given = dict(options, split=split)
    unset = lambda value: value is None or value is False  # not `in (None, False)`: num_beams=0 equals False
    for name, tasks in OPTIONS.items():
        value = given.get(name)
        if unset(value) or kind in tasks:
            continue
        if name == "split" and kind == "generate" and value == "val" and not data:
            continue  # what it scores: the run's validation text
        flag = "--" + name.replace("_", "-")
        what = ("scores its run's validation text, or all of --data" if name == "split" and kind == "generate"
                else "does not read it")
        shown = flag if value is True else f"{flag} {value}"
        raise UserInputError(f"{shown} is not for {runs.TASK_NAMES.get(task, task)} ({run_dir!r}): its evaluation "
                             f"{what}; leave {flag} out.")
    given = {name: value for name, value in given.items() if not unset(value)}
    given.setdefault("split", "test")
    # Imported here: only the run's task's module, each of which imports TensorFlow (the checks above do not).
    if task == "translate":
        from tfllm.training.seq2seq import evaluate_run

        return evaluate_run(run_dir, data=data, **given)
    if task == "classify":
        from tfllm.training.classifier import evaluate_run

        return evaluate_run(run_dir, data=data, **given)
    given.pop("split")
    if task == "pretrain" and runs.read_config(run_dir).get("objective") != "causal":  # an encoder's (masked LM)
        from tfllm.training.pretraining import evaluate_run

        return evaluate_run(run_dir, data=data, **given)
    from tfllm.training.causal_lm import evaluate_run

    return evaluate_run(run_dir, data=data, **given)
