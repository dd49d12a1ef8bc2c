"""Self-training: unlabelled texts made into extra training examples (`tfllm train --unlabeled DATA`).

With few labels, the texts nobody labelled still say which words go
together: the tokenizer and the recipe's word vectors learn from them too
(`ClassificationData.unlabeled`). A teacher — the same recipe, trained on the
labelled texts alone — labels them; the texts it is most sure of (`self_training_keep` of them, 0.5
by default, in the labelled training split's class proportions: fewer, still
in those proportions and with a warning, when the teacher predicts a class for
too few texts, and none when it never predicts one; see `select`) join the
training split, and a student trains on both, its tokenizer included. With
`--set self_training_teachers=N` the teacher is an ensemble of N seeds (3 in
the `default` and `mobile` recipes, 1 elsewhere). With
`--set self_training_rounds=R` it repeats: the teacher of round R is the
student of round R-1 (itself trained on its own teacher's labels), which
labels the same texts again. With `--ensemble N` the student is an ensemble
of N seeds, every member trained on the same pseudo-labelled texts. The
validation and test splits are untouched, so early stopping and the reported
figures are on real labels only. On `rotten_tomatoes` with 500 labels this
scored 0.668 test accuracy against 0.636 without it (with 3 teachers, seeds
5-9; benchmarks/bench_pretrain.py, docs/benchmarks.md), where masked-LM
pretraining on the same texts did not pay.

A poor teacher teaches its own mistakes: on `rotten_tomatoes` with 250
labels one draw's student fell to 0.480 test accuracy (0.46 on its 50
validation texts), below its teacher's 0.555 (0.56). So when the student
validates worse than its teacher by more than the validation split's own
sampling noise (one standard error of the teacher's accuracy there,
`sqrt(a (1 - a) / n)`: 0.07 for 50 texts, 0.035 for 200), the teacher
becomes the run (its own records, with the student's figures beside them in
`metrics.json`). Not simply the better of the two: at 500 and 1,000 labels
that picked the teacher in 4 of 10 draws, and the student was better on
test in all 4 (docs/benchmarks.md), partly because an ensemble teacher's
validation figure is the more optimistic (each member's blend is fitted
there).

The teacher trains in a hidden folder beside the run (`.RUN.teacher`, see
`teacher_dir`) that goes when the run is done. An interrupted teacher resumes
with the same command, as any run does; a finished one (the student was
interrupted) is not trained again, and labels the same texts. Either starts
over when its inputs changed: other settings, a --data file edited since, or
other unlabelled texts (a --unlabeled file edited in place), whose
fingerprint every run trained with them records (`unlabeled_record`).
"""

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil

import numpy as np

from tfllm import runs
from tfllm.config import TrainConfig
from tfllm.datasets import Split
from tfllm.datasets.text import load_documents
from tfllm.errors import UserInputError, warn
from tfllm.models.text_classifier import predict_probabilities

DEFAULT_KEEP = 0.5


def unlabelled_texts(config, data):
    """The texts of `config.unlabeled` that are in no split of the labelled data (so none is a test text)."""
    train, val = load_documents(config.unlabeled, text_column=config.text_column, flag="--unlabeled")
    known = set(data.train.texts) | set(data.val.texts) | set(data.test.texts)
    texts = list(dict.fromkeys(t for t in train + val if t not in known))
    if not texts:
        raise UserInputError(f"--unlabeled {config.unlabeled!r} has no text that is not already in --data; "
                             "pass texts without labels, one per line (or a CSV/JSONL text column).")
    return texts


def unlabeled_record(texts):
    """`{runs.UNLABELED: fingerprint}` of the unlabelled texts a run learns from ({} for none), for its records:
    a teacher whose texts differ from the command's (the file was edited in place) is trained again."""
    if not texts:
        return {}
    digest = hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()
    return {runs.UNLABELED: {"sha256": digest, "num_texts": len(texts)}}


def _other_texts(teacher_dir, texts):
    """Whether the teacher in `teacher_dir` learned from other unlabelled texts than `texts` (also when it did
    not record them: a teacher from before the record, which cannot be told from one of other texts)."""
    try:
        recorded = runs.read_json(runs.path(teacher_dir, runs.UNLABELED))
    except (OSError, ValueError):
        return True
    return recorded != unlabeled_record(texts)[runs.UNLABELED]


def select(probabilities, texts, train_labels, keep, label_names=None):
    """The `keep` fraction of `texts` the teacher is surest of, per class in the labelled proportions.

    Each class `c` is given its share of the `keep` fraction, `round(total * prior[c])`, and takes the
    texts predicted `c` with the highest probability of `c`. When the teacher predicts a class for
    fewer texts than its share, every class shrinks by the same factor so the pseudo-labelled set keeps
    the labelled proportions (fewer pseudo-labels, not skewed ones: a teacher that predicts "fresh" for
    nearly everything would otherwise add mostly "fresh"), and one warning names those classes and their
    counts. When the teacher never predicts a class of the labelled training split, no pseudo-labels
    keep the proportions and none are added (the warning says so). `label_names` name the classes in
    the warning (their indices otherwise).
    """
    num_classes = probabilities.shape[1]
    names = [str(c) for c in range(num_classes)] if label_names is None else [str(n) for n in label_names]
    labelled = np.bincount(np.asarray(train_labels, int), minlength=num_classes)
    prior = labelled / len(train_labels)
    predicted = probabilities.argmax(1)
    available = np.bincount(predicted, minlength=num_classes)
    total = int(len(texts) * keep)
    wanted = [round(total * prior[c]) for c in range(num_classes)]
    short = [c for c in range(num_classes) if available[c] < wanted[c]]
    if short:
        # The largest total whose shares all fit: floor(available / prior), in integers (no float round-off).
        total = min([total] + [int(available[c] * len(train_labels) // labelled[c]) for c in short])
        counts = "; ".join(f"{names[c]}: {available[c]} predicted, {wanted[c]} wanted" for c in short)
        never = [names[c] for c in short if available[c] == 0]
        if never:
            # A pseudo-labelled set without one of the classes teaches the student that the class is rarer
            # than it is: that is the teacher's own mistake, which self-training would only reinforce. So
            # none, rather than a set of the other classes alone (the least surprising of the two: the
            # documented proportions hold, and the warning says why the student has no pseudo-labels).
            warn(f"Self-training: the teacher never predicts {', '.join(never)} for the {len(texts)} unlabelled "
                 f"texts ({counts}), so no pseudo-labels keep the labelled "
                 "class proportions and none are added: the student trains on the labelled texts alone. A teacher "
                 "that never predicts a class is a sign that self-training will not help; more labels or another "
                 "recipe may.")
        else:
            warn(f"Self-training: the teacher predicts too few unlabelled texts of a class to keep the labelled "
                 f"class proportions ({counts}); every class shrinks by the same factor: {total} pseudo-labels "
                 f"instead of {int(len(texts) * keep)}.")
    chosen_texts, chosen_labels = [], []
    for c in range(num_classes):
        candidates = np.flatnonzero(predicted == c)
        best = candidates[np.argsort(-probabilities[candidates, c], kind="stable")][: round(total * prior[c])]
        chosen_texts += [texts[i] for i in best]
        chosen_labels += [c] * len(best)
    return chosen_texts, chosen_labels


def per_class(labels, label_names):
    """`{name: count}` of `labels` (class indices), every class listed."""
    counts = np.bincount(np.asarray(labels, int), minlength=len(label_names))
    return {str(name): int(count) for name, count in zip(label_names, counts)}


def _settings(preset):
    keep, teachers = preset.get("self_training_keep", DEFAULT_KEEP), preset.get("self_training_teachers", 1)
    rounds = preset.get("self_training_rounds", 1)
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise UserInputError(f"self_training_keep must be in (0, 1]; got {keep}. Try --set self_training_keep=0.5.")
    if isinstance(teachers, bool) or not isinstance(teachers, int) or teachers < 1:
        raise UserInputError(f"self_training_teachers must be a whole number of at least 1; got {teachers!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UserInputError(f"self_training_rounds must be a whole number of at least 1; got {rounds!r}.")
    return keep, teachers, rounds


def train_self_trained(config, preset, data, train_classifier, verbose="auto"):
    """Trains a teacher, then `config`'s run on the labelled and pseudo-labelled texts; returns the metrics kept.

    `train_classifier(config, verbose=, data=, self_training=)` trains one run
    (an ensemble with `config.ensemble`); given `self_training` (the report
    for `metrics.json`) it trains on `data` as it is, without self-training again.
    """
    keep, teachers, rounds = _settings(preset)
    runs.check_writable(config.run_dir, config.overwrite, config)  # refused now, not after the teacher has trained
    texts = unlabelled_texts(config, data)
    data = dataclasses.replace(data, unlabeled=texts)  # the teacher's and student's vocabulary and word vectors
    teacher_dir = teacher_folder(config.run_dir)
    os.makedirs(os.path.dirname(teacher_dir), exist_ok=True)
    if rounds > 1:
        # The teacher is this same command with one round fewer: it self-trains in turn.
        # With --overwrite its own teacher starts over too.
        teacher_config = dataclasses.replace(config, run_dir=teacher_dir,
                                             overrides={**config.overrides, "self_training_rounds": rounds - 1})
    else:
        # `self_training_teachers` > 1: the first teacher is an ensemble of that many seeds (surer labels).
        teacher_config = dataclasses.replace(config, unlabeled=None, run_dir=teacher_dir, overwrite=False,
                                             ensemble=teachers)
    if os.path.exists(runs.path(teacher_dir, runs.RUN_CONFIG)) and (
            config.overwrite or runs.changed_settings(teacher_dir, teacher_config) or _other_texts(teacher_dir, texts)):
        # Another command's teacher, one of other inputs (an edited --data or --unlabeled file), or --overwrite:
        # this one starts over.
        shutil.rmtree(teacher_dir)
    teacher_kind = f"a {rounds - 1}-round self-trained teacher" if rounds > 1 else "a teacher"
    if runs.is_finished(teacher_dir):  # the student was interrupted: its teacher is kept
        print(f"Self-training: the finished teacher in {teacher_dir} labels {len(texts)} unlabelled texts")
        teacher = runs.read_json(runs.path(teacher_dir, runs.METRICS))
    else:
        print(f"Self-training: {teacher_kind} trains on the {len(data.train)} labelled texts, "
              f"then labels {len(texts)} unlabelled ones")
        teacher = train_classifier(teacher_config, verbose=verbose, data=data)
    probabilities = predict_probabilities(runs.load_task(teacher_dir), texts)
    chosen, labels = select(probabilities, texts, data.train.labels, keep, data.label_names)
    counts = per_class(labels, data.label_names)
    print(f"Self-training: {len(chosen)} pseudo-labelled texts "
          f"({', '.join(f'{name} {count}' for name, count in counts.items())}) "
          f"join the {len(data.train)} labelled ones")
    report = {"unlabeled": config.unlabeled, "num_unlabeled": len(texts), "num_pseudo_labeled": len(chosen),
              "pseudo_labels_per_class": counts,
              "keep": keep, "teachers": teachers, "rounds": rounds,
              "teacher": {"val_accuracy": teacher["val"]["accuracy"], "test_accuracy": teacher["test"]["accuracy"]}}
    train = Split(data.train.texts + chosen, list(data.train.labels) + labels)
    student = train_classifier(config, verbose=verbose, data=dataclasses.replace(data, train=train),
                               self_training={**report, "kept": "student"})
    student_val, teacher_val = student["val"]["accuracy"], teacher["val"]["accuracy"]
    if not clearly_worse(student_val, teacher_val, len(data.val)):
        shutil.rmtree(teacher_dir)
        return student
    print(f"Self-training: the student validated below its teacher by more than the validation split's "
          f"noise ({student_val:.3f} against {teacher_val:.3f} on {len(data.val)} texts); "
          "the teacher becomes the run")
    return keep_teacher(config.run_dir, teacher_dir, teacher, student, report)


def teacher_folder(run_dir):
    """Where the teacher of `run_dir`'s run trains: a hidden folder beside it, one name per run, so the
    same command finds it again."""
    parent, name = os.path.split(os.path.abspath(run_dir))
    return os.path.join(parent, f".{name}.teacher")


def clearly_worse(student_accuracy, teacher_accuracy, num_texts):
    """Whether the student trails by more than one standard error of the teacher's accuracy on `num_texts`."""
    noise = math.sqrt(teacher_accuracy * (1 - teacher_accuracy) / num_texts)
    return student_accuracy < teacher_accuracy - noise


def keep_teacher(run_dir, teacher_dir, teacher, student, report):
    """Puts the finished teacher run in `run_dir` instead of the student's; returns the metrics it now holds.

    Its records are the teacher's (it trained without pseudo-labels, as an
    ensemble of `self_training_teachers`), pointed at `run_dir`; `metrics.json`
    adds the self-training report with the student's figures.
    """
    aside = teacher_dir.rstrip(os.sep) + ".student"
    os.replace(run_dir, aside)
    os.replace(teacher_dir, run_dir)
    shutil.rmtree(aside)
    for record in glob.glob(os.path.join(run_dir, "**", runs.RUN_CONFIG), recursive=True):
        config = TrainConfig.from_json(record)  # the run's and its ensemble members': where they are now
        if config.run_dir.startswith(teacher_dir):
            config.run_dir = run_dir + config.run_dir[len(teacher_dir):]
            config.to_json(record)
    metrics = {**teacher, "self_training": {
        **report, "kept": "teacher",
        "student": {"val_accuracy": student["val"]["accuracy"], "test_accuracy": student["test"]["accuracy"]}}}
    runs.write_json(runs.path(run_dir, runs.METRICS), metrics)
    return metrics
