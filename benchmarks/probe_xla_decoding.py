"""Translation decoding with and without XLA: the first call (tracing, and compiling under XLA) and a second.

    .venv/bin/python benchmarks/probe_xla_decoding.py --rounds 2   # -> benchmarks/results/xla_decoding.json

A `default`-shaped translation model (untrained, so every source decodes to the full length: the slowest
case) with a WordPiece vocabulary of cedict's first 20,000 entries. Each arm runs in a fresh process, the
arms taking turns; in each, for every size a new `Translator` decodes that many sources twice (other
sources the second time). `tfllm.translation.XLA_MIN_SOURCES` is where tfllm switches XLA on.
"""

import argparse
import gzip
import json
import subprocess
import sys
import time

from bench_vs_torch import cpu_info, save_results


def child(jit_compile, sizes):
    import tfllm.translation as translation
    from tfllm.datasets import bundled_path
    from tfllm.models import resolve_preset
    from tfllm.tokenizers import train_tokenizer
    from tfllm.training.seq2seq import own_model

    translation.XLA_MIN_SOURCES = 1 if jit_compile else 10**9  # this arm's choice, whatever the size
    with gzip.open(bundled_path("cedict.tsv.gz"), "rt", encoding="utf-8") as f:
        rows = [line.split("\t") for line in f.read().splitlines()[1:20001]]
    tokenizer = train_tokenizer([r[1] for r in rows] + [r[3] for r in rows], "wordpiece", 4000, lowercase=False)
    model = own_model(resolve_preset("translate", "default", {}), tokenizer)
    sources, seconds = [r[1] for r in rows], {}
    for n in sizes:
        translator = translation.Translator(model)
        calls = []
        for part in (sources[:n], sources[n:2 * n]):
            start = time.perf_counter()
            translator.translate(part, warn=False)
            calls.append(round(time.perf_counter() - start, 2))
        seconds[str(n)] = {"first": calls[0], "second": calls[1]}
    print("RESULT " + json.dumps(seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 256, 2048])
    parser.add_argument("--out", default="benchmarks/results/xla_decoding.json")
    parser.add_argument("--child", choices=["xla", "no_xla"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child == "xla", args.sizes)
    runs = {"xla": [], "no_xla": []}
    for _ in range(args.rounds):
        for arm in runs:
            out = subprocess.run([sys.executable, __file__, "--child", arm, "--sizes", *map(str, args.sizes)],
                                 capture_output=True, text=True, check=True).stdout
            runs[arm].append(json.loads(out.split("RESULT ", 1)[1]))
            print(arm, runs[arm][-1], flush=True)
    save_results(args.out, {"command": " ".join(sys.argv), "sizes": args.sizes, "runs": runs, "cpu": cpu_info()})


if __name__ == "__main__":
    main()
