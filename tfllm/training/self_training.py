"""Self-training: unlabelled texts made into extra training examples (`tfllm train --unlabeled DATA`).

With few labels, the texts nobody labelled still say which words go
together. A teacher — the same recipe, trained on the labelled texts alone —
labels them; the texts it is most sure of (`self_training_keep` of them, 0.5
by default, in the labelled training split's class proportions) join the
training split, and the run trains on both, its tokenizer included. With
`--set self_training_teachers=N` the teacher is an ensemble of N seeds. With
`--set self_training_rounds=R` it repeats: the teacher of round R is the
student of round R-1 (itself trained on its own teacher's labels), which
labels the same texts again. With `--ensemble N` the student is an ensemble
of N seeds, every member trained on the same pseudo-labelled texts. The
validation and test splits are untouched, so early stopping and the reported
figures are on real labels only. On `rotten_tomatoes` with 500 labels this
scored 0.665 test accuracy against 0.625 without it (5 seeds;
benchmarks/bench_pretrain.py, docs/benchmarks.md), where masked-LM
pretraining on the same texts did not pay.

A teacher no better than always answering the commonest class would only
teach its own noise (on `rotten_tomatoes` with 250 labels, one draw's
teacher scored 27 of 50 validation texts and its student fell from 0.546 to
0.494 test accuracy). So its validation accuracy is tested against that
constant answer (a one-sided binomial test); when the chance of doing as
well by luck is above `self_training_max_p` (0.05 by default; 1 switches the
guard off), no pseudo-label is added and the run trains on the labelled
texts alone, saying so in its output and in `metrics.json`.

The teacher trains in a temporary folder beside the run and is deleted; it
is seeded like the run, so rerunning an interrupted command labels the same
texts and the run resumes.
"""

import dataclasses
import math
import os
import tempfile

import numpy as np

from tfllm import runs
from tfllm.datasets import Split
from tfllm.datasets.text import load_documents
from tfllm.errors import UserInputError
from tfllm.models.text_classifier import predict_probabilities

DEFAULT_KEEP = 0.5
DEFAULT_MAX_P = 0.05


def unlabelled_texts(config, data):
    """The texts of `config.unlabeled` that are in no split of the labelled data (so none is a test text)."""
    train, val = load_documents(config.unlabeled, text_column=config.text_column)
    known = set(data.train.texts) | set(data.val.texts) | set(data.test.texts)
    texts = list(dict.fromkeys(t for t in train + val if t not in known))
    if not texts:
        raise UserInputError(f"--unlabeled {config.unlabeled!r} has no text that is not already in --data; "
                             "pass texts without labels, one per line (or a CSV/JSONL text column).")
    return texts


def select(probabilities, texts, train_labels, keep):
    """The `keep` fraction of `texts` the teacher is surest of, per class in the labelled proportions."""
    num_classes = probabilities.shape[1]
    prior = np.bincount(np.asarray(train_labels, int), minlength=num_classes) / len(train_labels)
    predicted = probabilities.argmax(1)
    total = int(len(texts) * keep)
    chosen_texts, chosen_labels = [], []
    for c in range(num_classes):
        candidates = np.flatnonzero(predicted == c)
        best = candidates[np.argsort(-probabilities[candidates, c], kind="stable")][: round(total * prior[c])]
        chosen_texts += [texts[i] for i in best]
        chosen_labels += [c] * len(best)
    return chosen_texts, chosen_labels


def better_than_constant_p_value(val_accuracy, val_labels):
    """One-sided binomial p-value: the chance that always answering the commonest validation class scores as well.

    The null accuracy is that constant answer's own score on the same texts (0.5 for a balanced binary split).
    Slightly optimistic for recipes that fit a blend on the validation split (the `default` recipe's three
    blend weights), which is why the threshold is a small p and not a margin.
    """
    n = len(val_labels)
    correct = round(val_accuracy * n)
    p0 = np.bincount(np.asarray(val_labels, int)).max() / n
    return float(sum(math.comb(n, k) * p0**k * (1 - p0) ** (n - k) for k in range(correct, n + 1)))


def add_pseudo_labels(config, preset, data, train_classifier, verbose="auto"):
    """`(data with pseudo-labelled training examples added, a report for metrics.json)`."""
    keep, teachers = preset.get("self_training_keep", DEFAULT_KEEP), preset.get("self_training_teachers", 1)
    rounds = preset.get("self_training_rounds", 1)
    max_p = preset.get("self_training_max_p", DEFAULT_MAX_P)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise UserInputError(f"self_training_keep must be in (0, 1]; got {keep}. Try --set self_training_keep=0.5.")
    if isinstance(teachers, bool) or not isinstance(teachers, int) or teachers < 1:
        raise UserInputError(f"self_training_teachers must be a whole number of at least 1; got {teachers!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserInputError(f"self_training_rounds must be a whole number of at least 1; got {rounds!r}.")
    if isinstance(max_p, bool) or not isinstance(max_p, (int, float)) or not 0 < max_p <= 1:
        raise UserInputError(f"self_training_max_p must be in (0, 1]; got {max_p!r}. "
                             "Try --set self_training_max_p=0.05 (1 always self-trains).")
    runs.check_writable(config.run_dir, config.overwrite)  # refused now, not after the teacher has trained
    texts = unlabelled_texts(config, data)
    parent = os.path.dirname(os.path.abspath(config.run_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".teacher-", dir=parent) as folder:
        teacher_dir = os.path.join(folder, "teacher")
        if rounds > 1:
            # The teacher is this same command with one round fewer: it self-trains in turn.
            teacher_config = dataclasses.replace(config, run_dir=teacher_dir, overwrite=False,
                                                 overrides={**config.overrides, "self_training_rounds": rounds - 1})
        else:
            # `self_training_teachers` > 1: the first teacher is an ensemble of that many seeds (surer labels).
            teacher_config = dataclasses.replace(config, unlabeled=None, run_dir=teacher_dir, overwrite=False,
                                                 ensemble=teachers)
        teacher_kind = f"a {rounds - 1}-round self-trained teacher" if rounds > 1 else "a teacher"
        print(f"Self-training: {teacher_kind} trains on the {len(data.train)} labelled texts, "
              f"then labels {len(texts)} unlabelled ones")
        teacher = train_classifier(teacher_config, verbose=verbose)
        probabilities = predict_probabilities(runs.load_task(teacher_dir), texts)
    report = {"unlabeled": config.unlabeled, "num_unlabeled": len(texts), "keep": keep, "teachers": teachers,
              "rounds": rounds, "max_p": max_p,
              "teacher": {"val_accuracy": teacher["val"]["accuracy"], "test_accuracy": teacher["test"]["accuracy"]}}
    p_value = better_than_constant_p_value(teacher["val"]["accuracy"], data.val.labels)
    report["teacher"]["p_value_vs_constant"] = p_value
    if p_value > max_p:
        print(f"Self-training skipped: the teacher's validation accuracy ({teacher['val']['accuracy']:.3f} on "
              f"{len(data.val)} texts) is not clearly better than always answering the commonest class "
              f"(p = {p_value:.2g} > self_training_max_p = {max_p}); training on the labelled texts alone")
        return data, {**report, "num_pseudo_labeled": 0, "skipped": "teacher not better than a constant answer"}
    chosen, labels = select(probabilities, texts, data.train.labels, keep)
    print(f"Self-training: {len(chosen)} pseudo-labelled texts join the {len(data.train)} labelled ones")
    train = Split(data.train.texts + chosen, list(data.train.labels) + labels)
    return dataclasses.replace(data, train=train), {**report, "num_pseudo_labeled": len(chosen)}
