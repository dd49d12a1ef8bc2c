"""Probe: the `default` classifier recipe trained on targets softened by a bag-of-words teacher (issue 14).

    .venv/bin/python benchmarks/probe_distillation.py ALPHA SEED

Knowledge distillation across model families: the encoder trains on
(1 - ALPHA) * label + ALPHA * p_teacher, where p_teacher is multinomial naive Bayes on
word 1-2-gram presence (MNB-bi, Wang & Manning 2012: 79.0 on these reviews), predicted
*out of fold* (5 folds of the training split, so the teacher never scores a text it
was fitted on) and softened by a temperature fitted on those predictions. ALPHA 0 is the recipe as shipped.
The naive-Bayes wide path still counts the hard labels. A probe, not a tfllm
setting: it patches `tfllm.data.classification_dataset` in this process only.
Uses scikit-learn (a tfllm dependency). Appends a row to
benchmarks/results/distillation.json.
"""
import os
import sys

import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_classifier  # noqa: E402
from tfllm import data as data_lib  # noqa: E402
from tfllm.models import text_classifier  # noqa: E402
from tfllm.training import classifier as classifier_training  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "distillation.json")


def naive_bayes_log_odds(fit_texts, fit_labels, texts):
    """Multinomial naive Bayes on word 1-2-gram presence (add-one smoothing): log P(1|x) / P(0|x)."""
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    x = vectorizer.fit_transform(fit_texts)
    counts = [np.asarray(x[fit_labels == c].sum(0)).ravel() + 1.0 for c in (0, 1)]
    ratios = np.log(counts[1] / counts[1].sum()) - np.log(counts[0] / counts[0].sum())
    prior = np.log((fit_labels == 1).mean() / (fit_labels == 0).mean())
    return np.asarray(vectorizer.transform(texts) @ ratios).ravel() + prior


def out_of_fold_teacher(texts, labels, seed, folds=5):
    """P(label 1) for every text from naive Bayes fitted on the other folds; and its out-of-fold accuracy.

    Naive Bayes is far too sure of itself, so its log-odds are divided by the
    temperature with the lowest out-of-fold log loss.
    """
    labels = np.asarray(labels)
    z = np.zeros(len(texts))
    for fit, score in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, labels):
        z[score] = naive_bayes_log_odds([texts[i] for i in fit], labels[fit], [texts[i] for i in score])

    def log_loss(t):
        p = np.clip(1 / (1 + np.exp(-z / t)), 1e-7, 1 - 1e-7)
        return -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))

    temperature = min(np.arange(1.0, 10.1, 0.5), key=log_loss)
    return 1 / (1 + np.exp(-z / temperature)), float(((z > 0) == labels).mean())


def main():
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) != 3:
        sys.exit(__doc__)  # wrong arguments: the usage on stderr, exit 1
    alpha, seed = float(sys.argv[1]), int(sys.argv[2])
    assert 0 <= alpha < 0.5, "ALPHA < 0.5 keeps every soft target on its label's side of 0.5"
    teacher = {"alpha": alpha}  # the teacher's out-of-fold accuracy joins it during the run
    real_dataset = data_lib.classification_dataset

    def softened(split, preprocessor, sigmoid, batch_size, shuffle=False, seed=None):
        if not shuffle or alpha == 0:  # validation and test keep their labels
            return real_dataset(split, preprocessor, sigmoid, batch_size, shuffle, seed)
        p, teacher["teacher_out_of_fold_accuracy"] = out_of_fold_teacher(split.texts, split.labels, seed)
        hard = data_lib.encode_labels(split.labels, sigmoid)
        targets = (1 - alpha) * hard + alpha * tf.constant(p, tf.float32)[:, None]
        ds = tf.data.Dataset.from_tensor_slices((data_lib.preprocess(split.texts, preprocessor), targets))
        return ds.shuffle(len(split.texts), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(-1)

    real_wide = text_classifier.TextClassifier.fit_wide_path

    def hard_wide(self, train_data, val_data, *args, **kwargs):  # naive Bayes counts the labels, not the targets
        # (*args, **kwargs: fit_wide_path has since taken class_weight and refit, which a fixed signature refused.)
        return real_wide(self, train_data.map(lambda x, y: (x, tf.cast(y >= 0.5, y.dtype))), val_data, *args, **kwargs)

    classifier_training.data_lib.classification_dataset = softened
    text_classifier.TextClassifier.fit_wide_path = hard_wide
    bench_classifier.run_probe(OUT, seed, teacher)


if __name__ == "__main__":
    main()
