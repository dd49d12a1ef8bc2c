"""Pinyin -> characters on cedict: the trained Transformer against n-gram input-method decoding.

    .venv/bin/python benchmarks/bench_pinyin_decoders.py --run-dir RUN   # RUN: a trained pinyin run

RUN is trained as `bench_translation.py --tasks pinyin` trains it (`tfllm train
--task translate --data cedict --source-column pinyin --target-column simplified
--epochs 12 --set max_train_seconds=1200`). Decoders, all scored on the run's own
split (exact match against the one reference):

- `transformer_beam4`: the run alone, beam 4.
- `fused_beam4`: the same with shallow fusion of an n-gram model (`tfllm
  translate --lm zh_news`): the run's training targets and the bundled People's
  Daily text (`tfllm.ngram.NgramLM`).
- `input_method`: what an n-gram input method does, no network: a channel
  P(syllable | character) counted from the training pairs whose syllables and
  characters line up one to one, times the same n-gram model, decoded with a
  beam of 16 over each syllable's 30 most frequent characters.
- `rerank`: the input method's 16 best plus the fused output, reranked by the
  Transformer's log-likelihood plus `a` times the input method's score (`a`
  chosen on the first 1,000 validation pairs).

Prints JSON and writes benchmarks/results/pinyin_decoders.json.
"""

import argparse
import collections
import json
import math
import os
import time

import tensorflow as tf

from tfllm import runs
from tfllm.config import TrainConfig
from tfllm.evaluation import translation_report
from tfllm.training.seq2seq import load_data, run_language_model
from tfllm.translation import load_translator

RESULTS = os.path.join(os.path.dirname(__file__), "results", "pinyin_decoders.json")


def channel(pairs):
    """{syllable: [(character, log P(character | syllable)), ...]} from one-to-one aligned pairs."""
    counts = collections.defaultdict(collections.Counter)
    for source, references in pairs:
        syllables, characters = source.lower().split(), references[0]
        if len(syllables) == len(characters):
            for syllable, character in zip(syllables, characters):
                counts[syllable][character] += 1
    return {s: [(c, math.log(n / sum(cs.values()))) for c, n in cs.most_common(30)] for s, cs in counts.items()}


def input_method(source, table, lm, token_id, beam=16):
    """The `beam` best (score, characters) for one pinyin source: channel plus n-gram scores."""
    rows = {}

    def row(a, b):
        if (a, b) not in rows:
            rows[(a, b)] = lm._distribution(a, b)
        return rows[(a, b)]

    hypotheses = [(0.0, lm.start_id, lm.start_id, "")]
    for syllable in source.lower().split():
        options = table.get(syllable, [(syllable, 0.0)])
        grown = []
        for score, a, b, text in hypotheses:
            scores = row(a, b)
            for character, channel_score in options:
                i = token_id(character)
                lm_score = float(scores[i]) if i < lm.vocabulary_size else -20.0
                grown.append((score + lm_score + channel_score, b, i, text + character))
        hypotheses = sorted(grown, key=lambda h: -h[0])[:beam]
    return sorted(((s + float(row(a, b)[lm.end_id]), t) for s, a, b, t in hypotheses), key=lambda h: -h[0])


def log_likelihoods(translator, sources, targets, batch_size=512):
    """The Transformer's log P(target | source) for each pair (teacher forcing)."""
    out = []
    for start in range(0, len(sources), batch_size):
        x, y, w = translator.preprocessor({"encoder_text": tf.constant(sources[start:start + batch_size]),
                                           "decoder_text": tf.constant(targets[start:start + batch_size])})
        log_probs = tf.nn.log_softmax(tf.cast(translator.model(x, training=False), tf.float32))
        y = tf.cast(y, tf.int32)
        y = tf.where(y >= log_probs.shape[-1], translator.unk_id, y)  # source-only ids: unknown, as in training
        out += tf.reduce_sum(tf.gather(log_probs, y, batch_dims=2) * tf.cast(w, tf.float32), -1).numpy().tolist()
    return out


def decode(translator, lm, table, token_id, sources, weights):
    fused = translator.translate(sources, sampler="beam", num_beams=4, warn=False, lm=lm, lm_weight=0.5)
    candidates = []
    for source, output in zip(sources, fused):
        scored = dict((text, score) for score, text in input_method(source, table, lm, token_id))
        candidates.append((scored, output))
    pairs = [(j, text) for j, (scored, output) in enumerate(candidates) for text in {*scored, output} if text]
    network = log_likelihoods(translator, [sources[j] for j, _ in pairs], [t for _, t in pairs])
    reranked = {}
    for a in weights:
        best = {}
        for (j, text), score in zip(pairs, network):
            scored = candidates[j][0]
            floor = min(scored.values()) if scored else 0.0
            total = score + a * scored.get(text, floor)
            if j not in best or total > best[j][0]:
                best[j] = (total, text)
        reranked[a] = [best.get(j, (0, candidates[j][1]))[1] for j in range(len(sources))]
    input_method_best = [max(scored.items(), key=lambda kv: kv[1])[0] if scored else "" for scored, _ in candidates]
    return fused, input_method_best, reranked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--corpus", default="zh_news")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--val-examples", type=int, default=1000)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    translator = load_translator(args.run_dir)
    config = TrainConfig.from_dict(runs.read_config(args.run_dir))
    data = load_data(config, runs.read_recipe(args.run_dir))
    lm = run_language_model(translator, args.run_dir, args.corpus)
    table = channel(zip(data.train.sources, data.train.references))
    vocabulary = {token: i for i, token in enumerate(translator.tokenizer.get_vocabulary())}

    def token_id(character):
        return vocabulary.get(character, translator.unk_id)

    result = {"corpus": args.corpus, "num_train_pairs": len(data.train)}
    n = min(args.val_examples, len(data.val))
    _, _, val = decode(translator, lm, table, token_id, data.val.sources[:n], args.weights)
    result["val_rerank_exact_match"] = {str(a): translation_report(o, data.val.references[:n])["exact_match"]
                                        for a, o in val.items()}
    a = max(args.weights, key=lambda w: result["val_rerank_exact_match"][str(w)])
    start = time.perf_counter()
    sources, references = data.test.sources, data.test.references
    plain = translator.translate(sources, sampler="beam", num_beams=4, warn=False)
    fused, method, reranked = decode(translator, lm, table, token_id, sources, [a])
    result["test"] = {name: translation_report(outputs, references) for name, outputs in (
        ("transformer_beam4", plain), ("fused_beam4", fused), ("input_method", method), ("rerank", reranked[a]))}
    result["rerank_weight"] = a
    result["test_seconds"] = round(time.perf_counter() - start, 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2, ensure_ascii=False))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
