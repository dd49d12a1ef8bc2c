"""WordPiece vocabulary learning: tfllm's `learn_word_pieces` against TF Text's `learn`, in pairs.

    .venv/bin/python benchmarks/bench_vocabulary.py [--rounds 3]

Every `--task classify` and `--task translate` run with a WordPiece tokenizer
learns its vocabulary first. KerasHub's `compute_word_piece_vocabulary` calls
TF Text's pure-Python learner, which relearns the whole vocabulary at each
probe of its binary search over a count threshold. tfllm's learner gives the
same vocabulary (checked here on every round) with the threshold-free first
pass run once. Both run on the same word counts, alternately, for `--rounds`
rounds on:

- `rotten_tomatoes`: the training split's texts, lowercased, the `default`
  classifier's 8,000-piece budget;
- `cedict`: the training split's English glosses and headwords, the
  `translate` preset's 20,000-piece budget and the full alphabet.

Word counting (KerasHub's pretokenizer in `tf.data`) is the same for both and
timed once. Prints JSON and saves it to `benchmarks/results/vocabulary.json`.
"""

import argparse
import csv
import gzip
import json
import os
import platform
import statistics
import time

import tensorflow as tf
from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

from bench_vs_torch import save_results  # standard library only
from tfllm.datasets import bundled_path
from tfllm.tokenizers import KERAS_HUB_ALPHABET, SPECIAL_TOKENS, learn_word_pieces

HERE = os.path.dirname(os.path.abspath(__file__))


def corpus(name):
    if name == "rotten_tomatoes":
        with gzip.open(bundled_path("rotten_tomatoes.csv.gz"), "rt", encoding="utf-8") as f:
            return [r["text"] for r in csv.DictReader(f) if r["split"] == "train"], 8000
    with gzip.open(bundled_path("cedict.tsv.gz"), "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["split"] == "train"]
    return [r["english"] for r in rows] + [r["simplified"] for r in rows], 20000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpora", nargs="+", default=["rotten_tomatoes", "cedict"])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "vocabulary.json"))
    args = parser.parse_args()

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "corpora": {}}
    for name in args.corpora:
        texts, size = corpus(name)
        start = time.perf_counter()
        words = tf.data.Dataset.from_tensor_slices(texts).batch(1000).map(
            lambda text: pretokenize(text, True, False, True, True))
        counts = learner.count_words(words)
        counting = time.perf_counter() - start
        alphabet = max(len({c for word in counts for c in word}), KERAS_HUB_ALPHABET)
        seconds = {"tf_text": [], "tfllm": []}
        for _ in range(args.rounds):
            start = time.perf_counter()
            expected = learner.learn(counts, vocab_size=size, reserved_tokens=SPECIAL_TOKENS,
                                     include_joiner_token=True, joiner="##", max_unique_chars=alphabet)
            seconds["tf_text"].append(round(time.perf_counter() - start, 2))
            start = time.perf_counter()
            got = learn_word_pieces(counts, size, SPECIAL_TOKENS, max_unique_chars=alphabet)
            seconds["tfllm"].append(round(time.perf_counter() - start, 2))
            if got != expected:
                raise SystemExit(f"{name}: tfllm's vocabulary differs from TF Text's")
        ratios = [a / b for a, b in zip(seconds["tf_text"], seconds["tfllm"])]
        result["corpora"][name] = {
            "texts": len(texts), "distinct_words": len(counts), "vocabulary_budget": size,
            "vocabulary_size": len(expected), "identical": True, "counting_seconds": round(counting, 2),
            "seconds": seconds, "median_speedup": round(statistics.median(ratios), 2)}
        print(json.dumps({name: result["corpora"][name]}), flush=True)
    save_results(args.out, result, shown=f"-> {args.out}")


if __name__ == "__main__":
    main()
