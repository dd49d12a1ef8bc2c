"""Metric reports computed from labels and predicted probabilities."""

import numpy as np


def roc_auc(y_true, scores):
    """Exact binary ROC-AUC (Mann-Whitney U with average ranks for ties)."""
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = y_true.sum(), (~y_true).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_report(y_true, probabilities, label_names):
    """Accuracy, precision, recall, F1 (binary: of the positive label; else macro),
    ROC-AUC for two classes, the confusion matrix and per-class figures.

    Args:
        y_true: integer label ids.
        probabilities: `[n, num_classes]` class probabilities.
        label_names: names of the label ids; for two classes index 1 is positive.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    y_pred = probabilities.argmax(axis=-1)
    k = len(label_names)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(label_names):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i, :].sum() if confusion[i, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(confusion[i, :].sum())}
    report = {"accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"), "num_examples": int(len(y_true))}
    if k == 2:
        positive = per_class[label_names[1]]
        report.update(precision=positive["precision"], recall=positive["recall"], f1=positive["f1"])
        report["roc_auc"] = roc_auc(y_true == 1, probabilities[:, 1])
        report["positive_label"] = label_names[1]
    else:
        for key in ("precision", "recall", "f1"):
            report[key] = float(np.mean([c[key] for c in per_class.values()]))
        report["average"] = "macro"
    report["confusion_matrix"] = {"labels": list(label_names), "matrix": confusion.tolist()}
    report["per_class"] = per_class
    return report
