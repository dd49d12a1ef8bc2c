"""Probe (issue 14, all labels): which bag-of-n-gram views of the bundled reviews, stacked, reach 0.80?

    .venv/bin/python benchmarks/probe_ngram_views.py                      # the classical views alone (scikit-learn: a tfllm dependency)
    .venv/bin/python benchmarks/probe_ngram_views.py --run runs/reviews   # + a `default` run's encoder and wide logits

`rotten_tomatoes`, binary, the file's own split (tfllm's loader: the same train/val/test texts a run
sees). Each view is fitted on the training split: naive Bayes (MNB, binarised counts, add-one) on word
1-2-grams and 1-3-grams (scikit-learn's tokens), and NB-weighted logistic regression (NBSVM's features,
Wang & Manning 2012) on character 2-5-grams within words, once with scikit-learn's n-grams and once
hashed from code points as a Keras model could compute them (`hashed_char_ids`). A stack is a logistic regression on the views'
logits, fitted on the validation split (as tfllm's blend is) and scored once on the test split. With
--run, the run's encoder and wide-path logits (the inputs of its `blend` layer) join as views.
Writes benchmarks/results/ngram_views.json.
"""

import argparse
import os
import platform
import re
import time

import numpy as np

from bench_vs_torch import save_results  # standard library only

HERE = os.path.dirname(os.path.abspath(__file__))


def nb_ratios(counts, labels, alpha=1.0):
    """Log-count ratios of binarised counts (positive class over negative), as MNB and NBSVM use them."""
    p = alpha + np.asarray(counts[labels == 1].sum(0)).ravel()
    q = alpha + np.asarray(counts[labels == 0].sum(0)).ravel()
    return np.log(p / p.sum()) - np.log(q / q.sum())


def views(data):
    """{name: {split: logits}} of the classical views, each fitted on the training split."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = {s: list(getattr(data, s).texts) for s in ("train", "val", "test")}
    y = np.asarray(data.train.labels)
    prior = np.log(y.mean() / (1 - y.mean()))
    out = {}
    for name, vectorizer, kind in (
            ("word 1-2-gram MNB", CountVectorizer(ngram_range=(1, 2), binary=True), "mnb"),
            ("word 1-3-gram MNB", CountVectorizer(ngram_range=(1, 3), binary=True), "mnb"),
            ("char 2-5-gram NB-LR", CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), binary=True), "nblr")):
        x = {s: vectorizer.fit_transform(t) if s == "train" else vectorizer.transform(t) for s, t in texts.items()}
        r = nb_ratios(x["train"], y)
        if kind == "mnb":
            out[name] = {s: np.asarray(x[s] @ r).ravel() + prior for s in x}
        else:  # C=0.1: the best validation accuracy of 0.1 / 0.3 / 1 / 3 (a one-off sweep)
            scaled = {s: x[s].multiply(r).tocsr() for s in x}
            lr = LogisticRegression(C=0.1, max_iter=3000).fit(scaled["train"], y)
            out[name] = {s: lr.decision_function(scaled[s]) for s in x}
    out["char 2-5-gram NB-LR, hashed code points"] = hashed_view(texts, y)
    return out


def hashed_char_ids(text, buckets=1 << 18, lo=2, hi=5):
    """Character n-gram ids as a model could compute them from code points with integer ops alone (as its
    bigram ids are): the lowercased text with runs of whitespace as one space and a space at each end,
    every n-gram (n = lo..hi) with no space inside it (so within a word, the spaces around it included, as
    scikit-learn's char_wb), hashed by a polynomial over the code points, 31 bits, into `buckets`.
    A repeated n-gram counts each time (no de-duplication: a model sums its table's rows)."""
    codes = [ord(c) for c in " " + re.sub(r"\s+", " ", text.lower()).strip() + " "]
    ids = []
    for n in range(lo, hi + 1):
        for i in range(len(codes) - n + 1):
            if 32 in codes[i + 1:i + n - 1]:
                continue
            h = n
            for c in codes[i:i + n]:
                h = (h * 1000003 + c) & 0x7FFFFFFF
            ids.append(h % buckets)
    return ids


def hashed_view(texts, labels, buckets=1 << 18):
    """NB-weighted logistic regression (C 0.1) on `hashed_char_ids` counts, fitted on the training split."""
    import scipy.sparse
    from sklearn.linear_model import LogisticRegression

    def counts(rows):
        ids = [hashed_char_ids(t, buckets) for t in rows]
        indptr = np.cumsum([0] + [len(i) for i in ids])
        m = scipy.sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(ids), indptr), shape=(len(rows), buckets))
        m.sum_duplicates()
        return m

    x = {s: counts(t) for s, t in texts.items()}
    r = nb_ratios((x["train"] > 0).astype(float), labels)
    r[np.asarray(x["train"].sum(0)).ravel() == 0] = 0.0  # buckets no training text reached
    scaled = {s: m.multiply(r).tocsr() for s, m in x.items()}
    lr = LogisticRegression(C=0.1, max_iter=3000).fit(scaled["train"], labels)
    return {s: lr.decision_function(m) for s, m in scaled.items()}


def run_views(run_dir, data):
    """The run's encoder and wide-path logits on val and test: the two inputs of its `blend` layer."""
    import keras

    from tfllm.training.classifier import load_run

    model, _, _ = load_run(run_dir)
    parts = keras.Model(model.input, model.get_layer("blend").input)
    out = {"tfllm encoder": {}, "tfllm wide path": {}}
    for s in ("val", "test"):
        # (A run since stop 55 has a third input, its character view's logits: not one of these views.)
        encoder, wide, *_ = parts.predict(model.preprocessor(list(getattr(data, s).texts)), verbose=0)
        out["tfllm encoder"][s] = np.asarray(encoder)[:, -1]
        out["tfllm wide path"][s] = np.asarray(wide)[:, -1]
    return out


def stack(logits, names, data):
    from sklearn.linear_model import LogisticRegression

    x = {s: np.stack([logits[n][s] for n in names], 1) for s in ("val", "test")}
    lr = LogisticRegression().fit(x["val"], data.val.labels)
    return {"views": list(names), "val_accuracy_fitted": round(lr.score(x["val"], data.val.labels), 4),
            "test_accuracy": round(lr.score(x["test"], data.test.labels), 4),
            "weights": [round(float(w), 3) for w in lr.coef_[0]],
            "_correct": lr.predict(x["test"]) == np.asarray(data.test.labels)}


def paired_interval(correct, baseline, draws=2000, seed=0):
    """95% interval of the test-accuracy difference against `baseline`, by a paired bootstrap of the test texts."""
    rows = np.random.default_rng(seed).integers(0, len(correct), (draws, len(correct)))
    differences = correct[rows].mean(1) - baseline[rows].mean(1)
    return [round(float(q), 4) for q in np.percentile(differences, [2.5, 97.5])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a `default` classifier run on rotten_tomatoes (its encoder and wide logits)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ngram_views.json"))
    args = parser.parse_args(argv)

    from tfllm.datasets import load_classification_data

    data = load_classification_data("rotten_tomatoes", split_column="split", labels=["rotten", "fresh"])
    start = time.perf_counter()
    logits = views(data)
    if args.run:
        logits.update(run_views(args.run, data))
    single = {n: {s: round(float(((v[s] > 0) == np.asarray(getattr(data, s).labels)).mean()), 4) for s in ("val", "test")}
              for n, v in logits.items()}
    words, chars = "word 1-2-gram MNB", "char 2-5-gram NB-LR"
    hashed = "char 2-5-gram NB-LR, hashed code points"
    stacks = [(words, chars), (words, hashed)]
    if args.run:
        stacks += [("tfllm encoder", "tfllm wide path"), ("tfllm encoder", "tfllm wide path", chars),
                   ("tfllm encoder", "tfllm wide path", words, chars), ("tfllm encoder", words, chars),
                   ("tfllm encoder", "tfllm wide path", hashed), ("tfllm encoder", "tfllm wide path", words, hashed)]
    result = {
        "data": "rotten_tomatoes (the file's split; test scored once per stack)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "command": "benchmarks/probe_ngram_views.py" + (f" --run {args.run}" if args.run else ""),
        "single_views_accuracy": single,
        "stacks": [stack(logits, names, data) for names in stacks],
        "bootstrap": "each stack's test accuracy minus the first stack's (or, with --run, the shipped blend's: "
                     "tfllm encoder + wide path), 95% interval over 2,000 paired resamples of the test texts",
        "seconds": round(time.perf_counter() - start, 1),
    }
    baseline = next((st for st in result["stacks"] if st["views"] == ["tfllm encoder", "tfllm wide path"]),
                    result["stacks"][0])["_correct"]
    for st in result["stacks"]:
        st["test_accuracy_difference_95"] = paired_interval(st.pop("_correct"), baseline)
    save_results(args.out, result)


if __name__ == "__main__":
    main()
