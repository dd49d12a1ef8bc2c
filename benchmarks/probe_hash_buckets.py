"""Probe (issue 14): what hash collisions in the character and word views cost, on the bundled reviews.

    .venv/bin/python benchmarks/probe_hash_buckets.py runs/reviews RUN_SEED_1 RUN_SEED_2 RUN_SEED_3

For each bucket count, the two views' tables are computed as `TextClassifier.fit_wide_path` computes them
(the model's own hashed ids: `char_ngram_ids`, `word_ngram_ids`; NB-weighted logistic regression, C 0.1,
for characters; naive-Bayes ratios for words) from the training split, then stacked with each given
`default` run's encoder and wide-path logits by a logistic regression fitted on the validation split and
scored on the test split. The views do not change a run's encoder (they are frozen while it trains), so
any runs of the recipe serve. Also: the training split's distinct n-grams, and the share of them that an
ideal hash puts in a bucket with another. Writes benchmarks/results/hash_buckets.json.
"""

import argparse
import math
import os
import time

import numpy as np

from bench_vs_torch import cpu_info, save_results  # standard library only

RESULTS = os.path.join(os.path.dirname(__file__), "results", "hash_buckets.json")


def id_rows(ngram_ids, points, buckets, batch=512):
    rows = []
    for i in range(0, len(points), batch):
        ids, mask = (np.asarray(a) for a in ngram_ids(points[i:i + batch], buckets))
        rows += [r[m] for r, m in zip(ids, mask)]
    return rows


def counts_matrix(rows, buckets):
    import scipy.sparse

    indptr = np.cumsum([0] + [len(r) for r in rows])
    m = scipy.sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows), indptr), shape=(len(rows), buckets))
    m.sum_duplicates()
    return m


def view_logits(points, labels, buckets):
    """{view: {split: logits}} of the two views' tables fitted on the training split, as the model fits them."""
    from sklearn.linear_model import LogisticRegression

    from tfllm.models.text_classifier import _naive_bayes_table, char_ngram_ids, word_ngram_ids

    y = labels["train"]
    out = {}
    x = {s: counts_matrix(id_rows(char_ngram_ids, p, buckets), buckets) for s, p in points.items()}
    seen = (x["train"] > 0).astype(float)
    p, q = (1.0 + np.asarray(seen[y == c].sum(0)).ravel() for c in (1, 0))
    ratio = np.log(p / p.sum()) - np.log(q / q.sum())
    ratio[np.asarray(seen.sum(0)).ravel() == 0] = 0.0
    table = ratio * LogisticRegression(C=0.1, max_iter=3000).fit(x["train"].multiply(ratio).tocsr(), y).coef_[0]
    out["char"] = {s: x[s] @ table for s in ("val", "test")}
    x = {s: counts_matrix(id_rows(word_ngram_ids, p, buckets), buckets) for s, p in points.items()}
    seen = (x["train"] > 0).astype(float)
    table = _naive_bayes_table(np.stack([np.asarray(seen[y == c].sum(0)).ravel() for c in (0, 1)]))[:, 0]
    out["word"] = {s: x[s] @ table for s in ("val", "test")}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished `default` runs on rotten_tomatoes (their encoder and wide logits)")
    parser.add_argument("--buckets", type=int, nargs="+", default=[262139, 524287])
    args = parser.parse_args()

    import keras
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from tfllm.datasets import load_classification_data
    from tfllm.models.preprocessors import code_points
    from tfllm.training.classifier import load_run

    start = time.perf_counter()
    data = load_classification_data("rotten_tomatoes", split_column="split", labels=["rotten", "fresh"])
    texts = {s: list(getattr(data, s).texts) for s in ("train", "val", "test")}
    labels = {s: np.asarray(getattr(data, s).labels) for s in texts}
    points = {s: np.asarray(code_points(t, 320)) for s, t in texts.items()}
    runs = {}
    for run_dir in args.runs:
        model, _, _ = load_run(run_dir)
        parts = keras.Model(model.input, model.get_layer("blend").input)
        runs[run_dir] = {s: [np.asarray(a)[:, -1] for a in parts.predict(model.preprocessor(texts[s]), verbose=0)[:2]]
                         for s in ("val", "test")}
    distinct = {"char": CountVectorizer(analyzer="char_wb", ngram_range=(2, 5)).fit(texts["train"]).vocabulary_,
                "word": CountVectorizer(ngram_range=(1, 2)).fit(texts["train"]).vocabulary_}
    results = {"data": "rotten_tomatoes (the file's split)", "machine": cpu_info(), "date": time.strftime("%Y-%m-%d"),
               "command": "benchmarks/probe_hash_buckets.py " + " ".join(args.runs),
               "distinct_training_ngrams": {k: len(v) for k, v in distinct.items()}, "buckets": {}}
    for buckets in args.buckets:
        views = view_logits(points, labels, buckets)
        accuracies = []
        for run in runs.values():
            x = {s: np.stack(run[s] + [views["char"][s], views["word"][s]], 1) for s in ("val", "test")}
            stack = LogisticRegression(C=100).fit(x["val"], labels["val"])
            accuracies.append(round(float(stack.score(x["test"], labels["test"])), 4))
        results["buckets"][buckets] = {
            "share_of_ngrams_sharing_a_bucket": {k: round(1 - math.exp(-len(v) / buckets), 3) for k, v in distinct.items()},
            "test_accuracy_per_run": accuracies, "mean_test_accuracy": round(float(np.mean(accuracies)), 4)}
    results["seconds"] = round(time.perf_counter() - start, 1)
    save_results(RESULTS, results)


if __name__ == "__main__":
    main()
