"""How many of cedict's zh-en test sources match the translation memory of the training pairs weakly, and what
the memory's best match alone scores on them (no model: the Transformer alone scored chrF 13.6 on every test
source in stop 27's 20-minute run, docs/benchmarks.md). Decides whether `Translator.translate` should leave weak
matches to the model (it does not).

    .venv/bin/python benchmarks/probe_memory_floor.py   # -> benchmarks/results/memory_floor.json
"""

import collections
import os

import sacrebleu

from bench_vs_torch import save_results  # standard library only
from tfllm.datasets.pairs import load_pair_data
from tfllm.memory import TranslationMemory

FLOORS = (0.3, 0.4, 0.5)


def chrf(found, references, rows):
    if not rows:
        return None
    refs = [references[i] for i in rows]
    width = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else r[0] for r in refs] for j in range(width)]
    return round(sacrebleu.corpus_chrf([found[i][0][0] for i in rows], streams).score, 1)


def main():
    data = load_pair_data("cedict", source_column="simplified", target_column="english", reference_separator="/")
    memory = TranslationMemory(data.train.sources, data.train.targets)
    test = data.test
    found = memory.lookup(test.sources, k=1, scores=True)
    matched = [i for i, f in enumerate(found) if f]
    result = {"test_sources": len(test), "no_match": len(test) - len(matched),
              "memory_alone_chrf_matched": chrf(found, test.references, matched),
              "best_match_score_histogram": {f"{k:.1f}": v for k, v in sorted(
                  collections.Counter(round(found[i][0][1], 1) for i in matched).items())},
              "floors": {}}
    for floor in FLOORS:
        below = [i for i in matched if found[i][0][1] < floor]
        result["floors"][str(floor)] = {"sources_below": len(below),
                                        "memory_alone_chrf_below": chrf(found, test.references, below),
                                        "memory_alone_chrf_at_or_above": chrf(
                                            found, test.references, [i for i in matched if found[i][0][1] >= floor])}
    save_results(os.path.join(os.path.dirname(__file__), "results", "memory_floor.json"), result)


if __name__ == "__main__":
    main()
