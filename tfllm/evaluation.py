"""Metric reports computed from labels and predicted probabilities."""

import re

import numpy as np

from tfllm.datasets.text import CJK_IDEOGRAPHS
from tfllm.errors import UserInputError, note


def _check_finite(values, what):
    """A UserInputError when `values` hold NaN or infinity: ranks and argmax over them are meaningless
    (a NaN row sorts as the highest score, and argmax picks it), yet gave confident figures."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=-1))
        raise UserInputError(f"{what} hold NaN or infinity ({len(rows)} of {len(values)} examples, the first at "
                             f"index {int(rows[0])}): nothing can be scored from them. A model whose training "
                             "diverged gives these (train again, e.g. with a lower learning rate); else check "
                             "the inputs.")


def _numbers(values, what, columns=None):
    """`values` as float64, or a UserInputError naming the first value that is not a number: a
    probability column of text ("n/a", read from a file, say) ended in NumPy's ValueError ("could not
    convert string to float"), rows of unequal length in its "inhomogeneous shape". `columns` names the
    columns of 2-D `values` (the classes). Numbers written as text ("0.5") are read as numbers."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass  # the value at fault is found and named below
    for i, row in enumerate(values):
        if columns is not None and (isinstance(row, (str, bytes)) or not hasattr(row, "__len__")
                                    or len(row) != len(columns)):
            raise UserInputError(f"{what} must be numbers: row {i} (counting from 0) holds {row!r}, not "
                                 f"{len(columns)} numbers (one per class of {list(columns)}). Fix that row.")
        for j, value in enumerate([row] if columns is None else row):
            if value is None:
                continue  # NumPy reads None as NaN, which _check_finite refuses in its own words
            try:
                float(value)
            except (TypeError, ValueError):
                column = "" if columns is None else f", column {columns[j]!r}"
                value = value.item() if isinstance(value, np.generic) else value  # 'n/a', not np.str_('n/a')
                raise UserInputError(f"{what} must be numbers: row {i}{column} (counting from 0) holds {value!r}. "
                                     "Fix or remove that row.") from None
    raise UserInputError(f"{what} must be numbers{'' if columns is None else ', one row of them per example'}.")


def roc_auc(y_true, scores):
    """Exact binary ROC-AUC (Mann-Whitney U with average ranks for ties)."""
    y_true = np.asarray(y_true).astype(bool)
    scores = _numbers(scores, "The scores")
    _check_finite(scores, "The scores")
    n_pos, n_neg = y_true.sum(), (~y_true).sum()
    if n_pos == 0 or n_neg == 0:
        return None  # undefined with one class; None is JSON's null, where NaN is not JSON
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
    """Accuracy, balanced accuracy (the mean recall of the classes that have examples: what accuracy hides
    when a class is rare), precision, recall, F1 and ROC-AUC (binary: of the positive label; else macro,
    ROC-AUC one class against the rest), their support-weighted averages (`weighted`), the confusion matrix
    (rows: true labels, columns: predicted) and per-class figures.

    The macro figures average over different classes when some class has no example: precision, recall
    and F1 over the classes the labels or the predictions hold (scikit-learn's default labels; a class
    predicted without examples counts 0, as its zero_division=0), balanced accuracy over the classes the
    labels hold and ROC-AUC over those with examples both in and out of the class (scikit-learn's). The
    report then names those in `macro_classes`, `balanced_accuracy_classes` and `roc_auc_classes`; a class
    neither in the labels nor predicted has null precision, recall and F1 in `per_class`
    (`note_missing_classes` says so).

    Args:
        y_true: integer label ids.
        probabilities: `[n, num_classes]` class probabilities; for two classes also `[n, 1]`, the probability
            of the second (a binary model's one sigmoid unit).
        label_names: names of the label ids; for two classes index 1 is positive.
    """
    y_true = np.asarray(y_true)
    probabilities = _numbers(probabilities, "The probabilities", label_names)
    k = len(label_names)
    if len(y_true) == 0:
        raise UserInputError("No examples to score: give at least one label and its probabilities.")
    # Label ids index the confusion matrix: -1 wrapped into the last row (np.add.at) while accuracy and
    # ROC-AUC read it as no class, so the figures disagreed; a fraction was truncated into a class.
    numeric = y_true.ndim == 1 and y_true.dtype.kind in "biuf"
    bad = ~((np.mod(y_true, 1) == 0) & (y_true >= 0) & (y_true < k)) if numeric else np.ones(len(y_true), bool)
    if bad.any():
        raise UserInputError(f"Labels must be integer ids from 0 to {k - 1} (one per class of {list(label_names)}); "
                             f"{int(bad.sum())} of {len(y_true)} are not, the first {y_true[bad.argmax()].tolist()!r}.")
    y_true = y_true.astype(int)
    if k == 2 and probabilities.shape == (len(y_true), 1):
        # A binary model's own output: one sigmoid unit's P(second label), as KerasHub's TextClassifier
        # with num_classes=1 gives it (it was refused as the wrong shape).
        _check_finite(probabilities, "The probabilities")
        if ((probabilities < 0) | (probabilities > 1)).any():
            raise UserInputError(f"One column of probabilities is P({label_names[1]!r}), from 0 to 1; got values from "
                                 f"{probabilities.min():g} to {probabilities.max():g} (logits? apply a sigmoid first).")
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=1)
    if probabilities.shape != (len(y_true), k):
        raise UserInputError(f"Expected probabilities of shape ({len(y_true)}, {k}) (one row per label, one column "
                             f"per class of {list(label_names)}), got {probabilities.shape}.")
    _check_finite(probabilities, "The probabilities")
    y_pred = probabilities.argmax(axis=-1)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, name in enumerate(label_names):
        if not confusion[i, :].sum() and not confusion[:, i].sum():
            # Nothing to score: counted 0 it pulled the macro figures down (recall 0.36 beside a balanced
            # accuracy of 0.54, which leaves it out), for no error the model made.
            per_class[name] = {"precision": None, "recall": None, "f1": None, "support": 0}
            continue
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i, :].sum() if confusion[i, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(confusion[i, :].sum())}
    present = [name for name, c in per_class.items() if c["support"]]  # a class with no example has no recall
    report = {"accuracy": float((y_true == y_pred).mean()),
              "balanced_accuracy": float(np.mean([per_class[name]["recall"] for name in present])),
              "num_examples": int(len(y_true))}
    scored = [name for name, c in per_class.items() if c["f1"] is not None]  # in the labels or predicted
    if len(present) < k:  # "macro" alone would hide that it is not every class
        report["balanced_accuracy_classes"] = present
    if len(scored) < k:
        report["macro_classes"] = scored
    if k == 2:
        positive = per_class[label_names[1]]
        report.update(precision=positive["precision"], recall=positive["recall"], f1=positive["f1"])
        report["roc_auc"] = roc_auc(y_true == 1, probabilities[:, 1])
        report["positive_label"] = label_names[1]
        # Both classes' mean too (scikit-learn's average="macro"), as a multi-class report's own figures are.
        report["macro"] = {key: float(np.mean([per_class[name][key] for name in scored]))
                           for key in ("precision", "recall", "f1")}
    else:
        for key in ("precision", "recall", "f1"):
            report[key] = float(np.mean([per_class[name][key] for name in scored]))
        # One class against the rest, as scikit-learn's roc_auc_score(multi_class="ovr", average="macro"),
        # over the classes that have examples both ways (a class's AUC is undefined otherwise).
        for i, name in enumerate(label_names):
            per_class[name]["roc_auc"] = roc_auc(y_true == i, probabilities[:, i])
        defined = [name for name, c in per_class.items() if c["roc_auc"] is not None]
        report["roc_auc"] = float(np.mean([per_class[name]["roc_auc"] for name in defined])) if defined else None
        if len(defined) < k:
            report["roc_auc_classes"] = defined
        report["average"] = "macro"
    # Beside the binary/macro figures: averages weighted by support, as scikit-learn's average="weighted",
    # which a report with only macro figures left to compute by hand.
    report["weighted"] = {key: float(sum(c[key] * c["support"] for c in per_class.values() if c["support"])
                                     / len(y_true)) for key in ("precision", "recall", "f1")}
    # Its orientation said, where a reader had to guess which axis is which.
    report["confusion_matrix"] = {"labels": list(label_names), "rows": "true", "columns": "predicted",
                                  "matrix": confusion.tolist()}
    report["per_class"] = per_class
    return report


def note_missing_classes(report, scored):
    """One note naming the classes that the `scored` data ("the test split", a file's name) has no example of
    (`tfllm evaluate`; training warns of them as it splits, `datasets.warn_about_unscored_classes`): per_class's
    nulls, and macro figures over fewer classes than the run's, are told why."""
    missing = [name for name, c in report["per_class"].items() if not c["support"]]
    unpredicted = [name for name in missing if report["per_class"][name]["f1"] is None]
    predicted = [name for name in missing if name not in unpredicted]
    parts = []
    if unpredicted:
        parts.append(f"{scored} has no example of {', '.join(map(repr, unpredicted))} and none was predicted "
                     "(null in per_class; left out of the macro figures, as of balanced_accuracy)")
    if predicted:
        parts.append(f"{scored} has no example of {', '.join(map(repr, predicted))}, which the model "
                     "predicted (0 in per_class and the macro figures, as scikit-learn's; left out of "
                     "balanced_accuracy)")
    if parts:
        note(f"tfllm: note: {'; '.join(parts)}.")


_CJK = re.compile(CJK_IDEOGRAPHS)


def _reference_streams(references):
    """sacreBLEU's layout: stream k holds every pair's k-th reference (None where a pair has fewer)."""
    most = max((len(refs) for refs in references), default=1)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]


def char_accuracy(output, reference):
    """Characters equal at the same position, over the longer of the two strings."""
    longest = max(len(output), len(reference))
    if not longest:
        return 1.0
    return sum(a == b for a, b in zip(output, reference)) / longest


BLEU_NOTE = ("no reference has 4 words: BLEU's 4-gram precision is 0 by definition, so BLEU is 0 even for exact "
             "answers; read chrF and exact_match")


def translation_report(outputs, references):
    """chrF and BLEU (sacreBLEU, every reference counts), exact match and per-character accuracy.

    Args:
        outputs: one translation per source.
        references: per source, a list of one or more correct translations.

    `exact_match` counts an output equal (after trimming spaces) to any of its
    references; `char_accuracy` is the per-position character agreement with
    the best-matching reference (meaningful for same-length targets, e.g.
    pinyin -> characters). Figures are fractions; chrF and BLEU on sacreBLEU's 0-100 scale.
    BLEU tokenizes with sacreBLEU's "zh" when more than half the sources have a reference containing
    Chinese characters (a Chinese target), else with its default "13a"; `bleu_tokenize` says which.
    `bleu_note` (only where it applies) says BLEU means nothing because no reference has 4 words.
    """
    import sacrebleu

    outputs = [o.strip() for o in outputs]
    references = [[r.strip() for r in refs] for refs in references]
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} reference lists.")
    if not outputs:
        return {"num_examples": 0}
    streams = _reference_streams(references)
    # sacreBLEU's "zh" tokenizer splits Chinese characters into words (its 13a default would see a whole
    # Chinese string as one word), but it also tokenizes the English text differently from 13a, so the
    # tokenizer follows the target language as a whole: "zh" only when most references contain Chinese. An
    # English target with a few Chinese cross-references (cedict's "see 一样[yi1 yang4]") stays 13a, the
    # sacreBLEU default that other English BLEU scores use.
    with_chinese = sum(any(_CJK.search(r) for r in refs) for refs in references)
    tokenize = "zh" if with_chinese > len(references) / 2 else "13a"
    # One-word answers and 3-word titles scored BLEU 0.0 when every output was exactly right: the value is
    # kept (it is sacreBLEU's), with a note saying why it means nothing there.
    words = sacrebleu.metrics.BLEU(tokenize=tokenize).tokenizer
    short = all(len(words(r).split()) < 4 for refs in references for r in refs)
    note = {"bleu_note": BLEU_NOTE} if short else {}
    return {
        "chrf": round(float(sacrebleu.corpus_chrf(outputs, streams).score), 2),
        "bleu": round(float(sacrebleu.corpus_bleu(outputs, streams, tokenize=tokenize).score), 2),
        **note,
        "bleu_tokenize": tokenize,
        "exact_match": round(float(np.mean([o in refs for o, refs in zip(outputs, references)])), 4),
        "char_accuracy": round(float(np.mean([max(char_accuracy(o, r) for r in refs)
                                              for o, refs in zip(outputs, references)])), 4),
        "num_examples": len(outputs),
    }
