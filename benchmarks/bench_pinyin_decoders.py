"""Pinyin -> characters on cedict: the trained Transformer, shallow fusion, and the input method it reranks.

    .venv/bin/python benchmarks/bench_pinyin_decoders.py --run-dir RUN   # RUN: a trained pinyin run

RUN is trained as `bench_translation.py --tasks pinyin` trains it (`tfllm train
--task translate --data cedict --source-column pinyin --target-column simplified
--epochs 12 --set max_train_seconds=1200`). Decoders, all scored on the run's own
test split (exact match against the one reference):

- `transformer_beam4`: the run alone, beam 4.
- `fused_beam4`: the same with shallow fusion of an n-gram model (`tfllm
  translate --lm zh_news`): the run's training targets and the bundled People's
  Daily text (`tfllm.ngram.NgramLM`).
- `input_method`: `tfllm.input_method.InputMethod` alone, no network: a channel
  P(syllable | character) counted from the training pairs whose syllables and
  characters line up one to one, times the same n-gram model, beam 16 over each
  syllable's 30 most frequent characters (its best candidate).
- `input_method_reranked`: `tfllm translate --input-method --lm zh_news`: the
  input method's 16 best, chosen by their score plus `w` times the
  Transformer's log-likelihood (`w` chosen on the first 1,000 validation pairs).

Prints JSON and writes benchmarks/results/pinyin_decoders.json.
"""

import argparse
import os
import sys
import time

from bench_vs_torch import save_results  # standard library only
from tfllm import runs
from tfllm.evaluation import translation_report
from tfllm.training.seq2seq import load_data, run_decoding_aids
from tfllm.translation import load_translator

RESULTS = os.path.join(os.path.dirname(__file__), "results", "pinyin_decoders.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--corpus", default="zh_news")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--val-examples", type=int, default=1000)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()

    translator = load_translator(args.run_dir)
    config = runs.read_train_config(args.run_dir)
    data = load_data(config, runs.read_recipe(args.run_dir))
    start = time.perf_counter()
    lm, method = run_decoding_aids(translator, args.run_dir, args.corpus, input_method=True)
    result = {"command": "python benchmarks/bench_pinyin_decoders.py " + " ".join(sys.argv[1:]),
              "corpus": args.corpus, "num_train_pairs": len(data.train), "run_metrics": runs.read_json(runs.path(args.run_dir, runs.METRICS)),
              "build_seconds": round(time.perf_counter() - start, 1)}
    n = min(args.val_examples, len(data.val))
    result["val_exact_match_by_weight"] = {
        str(w): translation_report(translator.translate(data.val.sources[:n], warn=False, input_method=method,
                                                        input_method_weight=w), data.val.references[:n])["exact_match"]
        for w in (0.0, *args.weights)}
    weight = max(args.weights, key=lambda w: result["val_exact_match_by_weight"][str(w)])
    sources, references = data.test.sources, data.test.references
    result["test"] = {}
    for name, options in (("transformer_beam4", {"sampler": "beam", "num_beams": 4}),
                          ("fused_beam4", {"sampler": "beam", "num_beams": 4, "lm": lm, "lm_weight": 0.5}),
                          ("input_method", {"input_method": method, "input_method_weight": 0.0}),
                          ("input_method_reranked", {"input_method": method, "input_method_weight": weight})):
        start = time.perf_counter()
        outputs = translator.translate(sources, warn=False, **options)
        result["test"][name] = {**translation_report(outputs, references),
                                "seconds": round(time.perf_counter() - start, 1)}
    result["rerank_weight"] = weight
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    save_results(args.out, result)


if __name__ == "__main__":
    main()
