"""Tokenizing a causal-LM run's text: `tfllm.data.tokenize_corpus` (stop 75) against the `Dataset.map` it replaced.

A `--from-preset` causal-LM run tokenizes several texts with the preset's tokenizer (the training text, the
validation text, the check for text without ids). Until stop 74 each call built a `tf.data` pipeline that mapped
the tokenizer, which traced it again: about 2 s a call for KerasHub's byte-pair tokenizer, however short the
text. Since stop 75 one `tf.function` a tokenizer is traced once and called on batches of 4,096 lines. This
times both ways, alternating in every round, with a fresh tokenizer each round (what a run starts with), on
`--calls` short texts and on one long text of `--lines` lines, and checks that they give the same ids.

    .venv/bin/python benchmarks/bench_tokenize_corpus.py   # -> benchmarks/results/tokenize_corpus_stop75.json
"""

import argparse
import statistics
import time

import keras_hub
import numpy as np
import tensorflow as tf

from bench_preprocess import cpu_model
from bench_vs_torch import save_results  # standard library only
from tfllm import data
from tfllm.tokenizers import train_tokenizer


def mapped(tokenizer, text):
    """The stop-74 way: a `tf.data` map of the tokenizer (traced again on every call), on batches of 4,096 lines."""
    lines = [line for line in text.split("\n") if line.strip()]
    batches = tf.data.Dataset.from_tensor_slices(lines).batch(4096).map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate([b.flat_values.numpy() if isinstance(b, tf.RaggedTensor) else b.numpy().ravel()
                           for b in batches]).astype("int32")


def byte_pair():
    vocabulary = {token: i for i, token in enumerate([chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "Ġt", "he",
                                                                                      "<|endoftext|>"])}
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t", "h e"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="short texts a round (a run's training, validation...)")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/results/tokenize_corpus_stop75.json")
    args = parser.parse_args()

    short = "\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200))
    long = "\n".join(f"the quick brown fox {i} jumps over the lazy dog number {i * 7}" for i in range(args.lines))
    wordpiece_texts = long.split("\n")[:2000]
    makers = {"byte_pair": byte_pair, "wordpiece": lambda: train_tokenizer(wordpiece_texts, "wordpiece", 300)}
    ways = {"stop74_dataset_map": mapped, "tokenize_corpus": data.tokenize_corpus}
    seconds = {f"{kind}/{what}/{way}": [] for kind in makers for what in ("short_calls", "long_text") for way in ways}
    for _ in range(args.rounds):
        for kind, make in makers.items():
            ids = {}
            for way, tokenize in ways.items():
                tokenizer = make()
                start = time.perf_counter()
                for _ in range(args.calls):
                    ids[way, "short"] = tokenize(tokenizer, short)
                seconds[f"{kind}/short_calls/{way}"].append(time.perf_counter() - start)
                start = time.perf_counter()
                ids[way, "long"] = tokenize(tokenizer, long)
                seconds[f"{kind}/long_text/{way}"].append(time.perf_counter() - start)
            for what in ("short", "long"):
                np.testing.assert_array_equal(*(ids[way, what] for way in ways))
    medians = {key: round(statistics.median(values), 3) for key, values in seconds.items()}
    ratios = {f"{kind}/{what}": round(medians[f"{kind}/{what}/stop74_dataset_map"]
                                      / medians[f"{kind}/{what}/tokenize_corpus"], 2)
              for kind in makers for what in ("short_calls", "long_text")}
    save_results(args.out, {"cpu": cpu_model(), "rounds": args.rounds, "short_calls": args.calls,
                            "short_lines": 200, "long_lines": args.lines, "median_seconds": medians,
                            "speedup_over_stop74": ratios, "seconds": seconds})


if __name__ == "__main__":
    main()
