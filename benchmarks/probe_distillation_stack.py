"""Probe (issue 14, "encoder alone >= 0.79"): the `default` recipe distilled from the stacked n-gram views.

    .venv/bin/python benchmarks/probe_distillation_stack.py ALPHA SEED [--unlabeled]
    .venv/bin/python benchmarks/probe_distillation_stack.py 0 SEED          # the recipe as shipped (the baseline)
    .venv/bin/python benchmarks/probe_distillation_stack.py --teacher-only SEED   # the teacher's figures, no training

Stop 35's probe (`probe_distillation.py`) distilled word naive Bayes (0.775 out of fold) into the
recipe at ALPHA 0.3: no gain. This one tries a stronger teacher and more text:

- The teacher is the stack that scores 0.804 on test with no tfllm model (stop 54,
  `probe_ngram_views.py`): multinomial naive Bayes on word 1-2-gram presence and NB-weighted logistic
  regression (C 0.1) on character 2-5-grams within words, scikit-learn's n-grams, their two logits
  stacked by a logistic regression. Here the stack is fitted on the training split alone, out of fold:
  5 folds (shuffled by SEED); each fold's texts are scored by views fitted on the other four, the
  stacker is fitted on those out-of-fold logits (standard stacking; the validation split stays unseen,
  for early stopping and the recipe's blend), and a temperature with the lowest out-of-fold log loss
  softens it. So the teacher never scores a training text it was fitted on.
- With --unlabeled the training split's plot summaries (the 874 rows labelled `plot`, which the
  binary task leaves out) join the student's training data, labelled by the teacher fitted on all
  labelled training texts (the same stacker and temperature): soft probabilities only.
- The student is `default`'s encoder, trained on (1 - ALPHA) * label + ALPHA * p_teacher (the plots:
  p_teacher). The naive-Bayes wide path and the character and word views still count the labelled
  training texts with their hard labels (the plots not at all), and validation and test keep their
  labels. The tokenizer and word vectors learn from the labelled training texts, as shipped. ALPHA 0
  without --unlabeled is the recipe as shipped.

A probe, not a tfllm setting: it patches `tfllm.data.classification_dataset` and
`TextClassifier.fit_wide_path` in this process only. Uses scikit-learn (a tfllm dependency).
Appends a row (command, seed, alpha, teacher and its figures, unlabeled on/off, encoder-only and
full test accuracy, training seconds, date) to benchmarks/results/distillation_stack.json.
"""
import argparse
import csv
import gzip
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "distillation_stack.json")
TEACHER = "stack: word 1-2-gram MNB + char_wb 2-5-gram NB-LR (C 0.1), logistic stacker on out-of-fold logits"


def nb_ratios(counts, labels, alpha=1.0):
    """Log-count ratios of binarised counts (positive class over negative), as in probe_ngram_views.py."""
    p = alpha + np.asarray(counts[labels == 1].sum(0)).ravel()
    q = alpha + np.asarray(counts[labels == 0].sum(0)).ravel()
    return np.log(p / p.sum()) - np.log(q / q.sum())


def view_logits(fit_texts, fit_labels, *score_sets):
    """For each list of texts in `score_sets`: `[n, 2]` logits of the two views fitted on `fit_texts`
    (word 1-2-gram MNB, character 2-5-gram NB-LR), as probe_ngram_views.py's `views` fits them."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(fit_labels)
    prior = np.log(y.mean() / (1 - y.mean()))
    columns = []
    for vectorizer, kind in ((CountVectorizer(ngram_range=(1, 2), binary=True), "mnb"),
                             (CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), binary=True), "nblr")):
        x = vectorizer.fit_transform(fit_texts)
        r = nb_ratios(x, y)
        scored = [vectorizer.transform(texts) for texts in score_sets]
        if kind == "mnb":
            columns.append([np.asarray(s @ r).ravel() + prior for s in scored])
        else:
            lr = LogisticRegression(C=0.1, max_iter=3000).fit(x.multiply(r).tocsr(), y)
            columns.append([lr.decision_function(s.multiply(r).tocsr()) for s in scored])
    return [np.stack(pair, 1) for pair in zip(*columns)]


def stacked_teacher(train_texts, train_labels, others, seed, folds=5):
    """P(label 1) of the training texts out of fold, and of each list in `others` ({name: texts}) from the
    views fitted on all training texts; and the teacher's figures."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    labels = np.asarray(train_labels)
    texts = list(train_texts)
    oof = np.zeros((len(texts), 2))
    for fit, score in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, labels):
        oof[score] = view_logits([texts[i] for i in fit], labels[fit], [texts[i] for i in score])[0]
    stacker = LogisticRegression().fit(oof, labels)
    z = stacker.decision_function(oof)

    def log_loss(t):
        p = np.clip(1 / (1 + np.exp(-z / t)), 1e-7, 1 - 1e-7)
        return -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))

    temperature = float(min(np.round(np.arange(0.25, 4.01, 0.05), 2), key=log_loss))
    names = list(others)
    full = view_logits(texts, labels, *(others[n] for n in names))
    probabilities = {n: 1 / (1 + np.exp(-stacker.decision_function(v) / temperature)) for n, v in zip(names, full)}
    p_oof = 1 / (1 + np.exp(-z / temperature))
    figures = {
        "teacher": TEACHER,
        "teacher_out_of_fold_accuracy": round(float(((z > 0) == labels).mean()), 4),
        "teacher_out_of_fold_log_loss": round(float(log_loss(temperature)), 4),
        "teacher_view_out_of_fold_accuracy": {"word 1-2-gram MNB": round(float(((oof[:, 0] > 0) == labels).mean()), 4),
                                              "char 2-5-gram NB-LR": round(float(((oof[:, 1] > 0) == labels).mean()), 4)},
        "teacher_stacker_weights": [round(float(w), 3) for w in stacker.coef_[0]],
        "teacher_temperature": temperature,
        "teacher_seconds": round(time.perf_counter() - start, 1),
    }
    return p_oof, probabilities, figures


def plot_summaries(known):
    """The training split's texts labelled `plot` (rotten_tomatoes' unlabelled texts for this task), not in `known`."""
    from tfllm.datasets import BUNDLED, bundled_path

    with gzip.open(bundled_path(BUNDLED["rotten_tomatoes"][0]), "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train" and r["label"] == "plot"]
    return list(dict.fromkeys(r["text"] for r in rows if r["text"] not in known))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("alpha", nargs="?", type=float)
    parser.add_argument("seed", type=int)
    parser.add_argument("--unlabeled", action="store_true", help="add the training split's plot summaries, teacher-labelled")
    parser.add_argument("--teacher-only", action="store_true", help="print the teacher's figures; train nothing")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    if args.alpha is None and not args.teacher_only:
        parser.error("ALPHA is needed unless --teacher-only")
    if args.alpha is not None and not 0 <= args.alpha <= 1:
        parser.error("ALPHA is in [0, 1]")
    command = "benchmarks/probe_distillation_stack.py " + " ".join(argv if argv is not None else sys.argv[1:])

    from tfllm.datasets import load_classification_data

    data = load_classification_data("rotten_tomatoes", split_column="split", labels=["rotten", "fresh"])
    assert data.label_names == ["rotten", "fresh"]
    distil = args.teacher_only or args.alpha > 0 or args.unlabeled
    extra = {"command": command, "alpha": args.alpha or 0.0, "unlabeled": bool(args.unlabeled),
             "teacher": TEACHER if distil else None}
    if distil:
        known = set(data.train.texts) | set(data.val.texts) | set(data.test.texts)
        plots = plot_summaries(known)
        p_train, p_other, figures = stacked_teacher(data.train.texts, data.train.labels,
                                                    {"val": data.val.texts, "test": data.test.texts, "plots": plots},
                                                    args.seed)
        figures["teacher_val_accuracy"] = round(float(((p_other["val"] > 0.5) == np.asarray(data.val.labels)).mean()), 4)
        figures["teacher_test_accuracy"] = round(float(((p_other["test"] > 0.5) == np.asarray(data.test.labels)).mean()), 4)
        figures["plots"] = len(plots)
        figures["plots_mean_p_fresh"] = round(float(p_other["plots"].mean()), 4)
        figures["plots_teacher_confident_share"] = round(float((np.abs(p_other["plots"] - 0.5) > 0.3).mean()), 4)
        extra.update(figures)
        print(json.dumps(figures), flush=True)
    if args.teacher_only:
        return

    import tensorflow as tf

    import bench_classifier
    from tfllm import data as data_lib
    from tfllm.models import text_classifier
    from tfllm.training import classifier as classifier_training

    real_dataset = data_lib.classification_dataset
    hard = {}

    def softened(split, preprocessor, sigmoid, batch_size, shuffle=False, seed=None):
        if not shuffle or not distil:  # validation and test keep their labels; ALPHA 0 alone is the shipped recipe
            return real_dataset(split, preprocessor, sigmoid, batch_size, shuffle, seed)
        assert sigmoid and list(split.texts) == list(data.train.texts), "the run's training split is the probe's"
        # What the n-gram tables count: the labelled texts, hard labels (fit_wide_path below).
        hard["train"] = real_dataset(split, preprocessor, sigmoid, batch_size)
        labels = np.asarray(split.labels, np.float32)
        texts, targets = list(split.texts), (1 - args.alpha) * labels + args.alpha * p_train
        if args.unlabeled:
            texts, targets = texts + plots, np.concatenate([targets, p_other["plots"]])
        ds = tf.data.Dataset.from_tensor_slices((data_lib.preprocess(texts, preprocessor),
                                                 tf.constant(targets[:, None], tf.float32)))
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
        return data_lib.untuned(ds.batch(batch_size).prefetch(data_lib.AUTOTUNE))

    real_wide = text_classifier.TextClassifier.fit_wide_path

    def hard_wide(self, train_data, val_data, *args_, **kwargs):
        return real_wide(self, hard.get("train", train_data), val_data, *args_, **kwargs)

    classifier_training.data_lib.classification_dataset = softened
    text_classifier.TextClassifier.fit_wide_path = hard_wide
    bench_classifier.run_probe(args.out, args.seed, extra)


if __name__ == "__main__":
    main()
