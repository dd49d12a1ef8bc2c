"""A run's first explanations: an Explainer's model functions eagerly first (stop 76) against traced from the first.

`tfllm explain RUN TEXT` and a notebook's first `tfllm.explain` calls make a new `Explainer`, whose model functions
(the probabilities, integrated gradients, the attention maps) were `tf.function`s traced on their first call: a
few seconds each to then run once. Since stop 76 an Explainer runs each eagerly for its first
`tfllm.explanations.EAGER_CALLS` calls, then traced. This times both ways in one process, alternating in every
round, with a new Explainer of the same loaded model each time: the first text (what a one-off command waits for),
and then `--texts` more (where the traced function, once traced, is faster). It checks that the two ways give
the same scores.

    .venv/bin/python benchmarks/bench_explain.py RUN_DIR   # -> benchmarks/results/explain_eager_stop76.json
"""

import argparse
import statistics
import time

import numpy as np

from bench_preprocess import cpu_model
from bench_vs_torch import save_results  # standard library only
from tfllm import explanations

TEXTS = ["the plot is thin, but the music soars", "tedious and overlong", "a joyous, moving film",
         "an overlong, tedious and joyless affair", "witty, warm and never dull", "it looks good but says nothing",
         "the best film of the year", "a mess from start to finish"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=len(TEXTS), help="texts a round after the first")
    parser.add_argument("--out", default="benchmarks/results/explain_eager_stop76.json")
    args = parser.parse_args()

    model = explanations.load_explainer(args.run_dir).model
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.texts)]
    eager_calls = explanations.EAGER_CALLS
    ways = {"traced_from_the_first": 0, "eager_first": eager_calls}
    results = {}
    for method in explanations.METHODS:
        seconds = {f"{way}/{what}": [] for way in ways for what in ("first_text", "next_texts")}
        scores = {}
        for _ in range(args.rounds):
            for way, calls in ways.items():
                explanations.EAGER_CALLS = calls
                explainer = explanations.Explainer(model)
                start = time.perf_counter()
                first = explainer.explain(TEXTS[0], method=method)
                seconds[f"{way}/first_text"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for text in texts:
                    explainer.explain(text, method=method)
                seconds[f"{way}/next_texts"].append(time.perf_counter() - start)
                scores[way] = np.asarray(first.scores)
        explanations.EAGER_CALLS = eager_calls
        difference = float(np.abs(scores["eager_first"] - scores["traced_from_the_first"]).max())
        assert difference < 1e-5, f"{method}: the two ways' scores differ by {difference}"
        medians = {key: statistics.median(values) for key, values in seconds.items()}
        results[method] = {
            "seconds": seconds, "median_seconds": medians, "largest_score_difference": difference,
            "first_text_speed_ratio": medians["traced_from_the_first/first_text"] / medians["eager_first/first_text"],
            "first_text_speed_ratio_per_round": [t / e for t, e in zip(seconds["traced_from_the_first/first_text"],
                                                                       seconds["eager_first/first_text"])],
        }
        print(method, {key: round(value, 3) for key, value in medians.items()},
              f"first text {results[method]['first_text_speed_ratio']:.2f}x", flush=True)
    save_results(args.out, {
        "command": f"python benchmarks/bench_explain.py RUN_DIR --rounds {args.rounds} --texts {args.texts}",
        "run": type(model).__name__, "eager_calls": eager_calls, "texts_after_the_first": args.texts,
        "cpu": cpu_model(), "methods": results})


if __name__ == "__main__":
    main()
