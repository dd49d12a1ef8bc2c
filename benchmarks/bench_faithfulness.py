"""Are tfllm's explanations faithful? ERASER's comprehensiveness and sufficiency on the test split.

    .venv/bin/tfllm train --task classify --data rotten_tomatoes --preset default --run-dir runs/reviews
    .venv/bin/python benchmarks/bench_faithfulness.py --run-dir runs/reviews

For every test text (the split exactly as the run's training split it) and
each method (integrated gradients, attention rollout, occlusion, and random
scores as the control), the top k% of the text's tokens by score for the
predicted class are removed from the token sequence (the rest re-packed, the
special tokens kept):

- comprehensiveness = p(predicted | text) - p(predicted | text without them)
  (higher: the tokens the method picked mattered);
- sufficiency = p(predicted | text) - p(predicted | only them)
  (lower: they alone carry the prediction),

as DeYoung et al. 2020 (ERASER) define them, at k = 1, 5, 10, 20 and 50%
(at least one token), and their mean over those bins (ERASER's AOPC).
Also times integrated gradients (50 steps) on one text, after the first call
compiled it. Prints JSON and saves it to benchmarks/results/faithfulness.json.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

from bench_vs_torch import save_results  # standard library only

KS = (0.01, 0.05, 0.1, 0.2, 0.5)
METHODS = ("integrated_gradients", "attention", "occlusion", "random")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "faithfulness.json")
TIMING_TEXT = "the plot is thin, but the performances are wonderful and the music soars"


def scores_of(explainer, method, x, ids, is_text, target, probabilities, rng, steps):
    """(per-position scores, the completeness record or None)."""
    if method == "random":
        return rng.random(len(ids)), None
    if method == "integrated_gradients":
        return explainer.integrated_gradients(x, is_text, target, steps)[:2]
    if method == "occlusion":
        return explainer.occlusion(x, is_text, target, probabilities), None
    return np.asarray(explainer.attention(x, ids)["token_scores"]), None


def evaluate(explainer, texts, steps, seed, limit=None):
    rng = np.random.default_rng(seed)
    sums = {m: {"comprehensiveness": np.zeros(len(KS)), "sufficiency": np.zeros(len(KS))} for m in METHODS}
    completeness_errors, count = [], 0
    for text in texts[:limit]:
        try:
            x, ids, is_text, probabilities = explainer.prepare(text)
        except Exception:  # noqa: BLE001 - a text with no tokens for this model: not explainable
            continue
        target = int(np.argmax(probabilities))
        positions = np.flatnonzero(is_text)
        rows = []
        for method in METHODS:
            scores, record = scores_of(explainer, method, x, ids, is_text, target, probabilities, rng, steps)
            order = positions[np.argsort(-scores[positions], kind="stable")]
            for k in KS:
                top = order[:max(1, math.ceil(k * len(positions)))]
                without = np.ones(len(ids), bool)
                without[top] = False
                only = ~is_text.copy()
                only[top] = True
                rows += [without, only]
            if record is not None:
                completeness_errors.append((record["error"], abs(record["difference"])))
        removed = explainer.removal_probabilities(x, rows)[:, target]
        p = probabilities[target]
        for i, method in enumerate(METHODS):
            block = removed[i * 2 * len(KS):(i + 1) * 2 * len(KS)]
            sums[method]["comprehensiveness"] += p - block[0::2]
            sums[method]["sufficiency"] += p - block[1::2]
        count += 1
    table = {}
    for method in METHODS:
        comp = sums[method]["comprehensiveness"] / count
        suff = sums[method]["sufficiency"] / count
        table[method] = {
            "comprehensiveness": {f"{k:.0%}": round(float(v), 4) for k, v in zip(KS, comp)},
            "sufficiency": {f"{k:.0%}": round(float(v), 4) for k, v in zip(KS, suff)},
            "comprehensiveness_aopc": round(float(comp.mean()), 4),
            "sufficiency_aopc": round(float(suff.mean()), 4),
        }
    return table, count, completeness_errors


def time_ig(explainer, steps, repeats=30):
    start = time.perf_counter()
    explainer.explain(TIMING_TEXT, steps=steps)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        explainer.explain(TIMING_TEXT, steps=steps)
        times.append(time.perf_counter() - start)
    return {"text": TIMING_TEXT, "steps": steps, "first_call_ms": round(1000 * first, 1),
            "median_ms": round(1000 * float(np.median(times)), 2), "p90_ms": round(1000 * float(np.percentile(times, 90)), 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/reviews")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the random control's seed")
    parser.add_argument("--limit", type=int, default=None, help="only the first N test texts")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)

    if not os.path.exists(os.path.join(args.run_dir, "metrics.json")):
        print(f"No finished run in {args.run_dir}; training one (rotten_tomatoes, default preset)", flush=True)
        subprocess.run([sys.executable, "-m", "tfllm.cli", "train", "--task", "classify", "--data", "rotten_tomatoes",
                        "--preset", "default", "--run-dir", args.run_dir], check=True)

    from tfllm import runs
    from tfllm.explanations import load_explainer
    from tfllm.training.classifier import run_data

    explainer = load_explainer(args.run_dir)
    timing = time_ig(explainer, args.steps)
    print(json.dumps({"ig_timing": timing}), flush=True)
    texts = run_data(args.run_dir).test.texts
    start = time.perf_counter()
    table, count, errors = evaluate(explainer, texts, args.steps, args.seed, args.limit)
    seconds = time.perf_counter() - start
    ig, rnd = table["integrated_gradients"], table["random"]
    result = {
        "run_dir": args.run_dir,
        "run": {k: runs.read_config(args.run_dir).get(k) for k in ("data", "preset", "seed")},
        "test_accuracy": round(runs.read_json(runs.path(args.run_dir, runs.METRICS))["test"]["accuracy"], 4),
        "texts": count,
        "ks": [f"{k:.0%}" for k in KS],
        "methods": table,
        "ig_vs_random_comprehensiveness_at_20": round(ig["comprehensiveness"]["20%"] / rnd["comprehensiveness"]["20%"], 2),
        # |sum of attributions - (score(text) - score(baseline))|, absolute and relative to that difference.
        "ig_completeness_error": {
            "median": round(float(np.median([e for e, _ in errors])), 6),
            "max": round(float(np.max([e for e, _ in errors])), 6),
            "median_relative": round(float(np.median([e / max(d, 1e-6) for e, d in errors])), 6),
        },
        "ig_timing": timing,
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "python benchmarks/bench_faithfulness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    save_results(args.out, result)


if __name__ == "__main__":
    main()
