"""nanoGPT's CPU recipe on bundled Shakespeare: validation loss, training speed, cached generation speed.

    .venv/bin/python benchmarks/bench_generation.py            # 2000 steps, ~2-3 min
    .venv/bin/python benchmarks/bench_generation.py --steps 200 --no-jit-compile

It also times the train step with either decoder block on the same data, alternating
(KerasHub's TransformerDecoder with biases vs tfllm's bias-free FusedDecoderBlock),
so the block's effect is a ratio from one run rather than two runs on a noisy machine.

Prints JSON and writes benchmarks/results/generation.json. The anchor
(nanoGPT, PyTorch, same machine and corpus): val loss 1.925 at step 2000,
28.9 ms/step (26.6k tokens/s), 940 sampled characters/s without a cache.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bench_vs_torch import save_results  # standard library only

NANOGPT = {"val_loss": 1.925, "tokens_per_second": 26600, "generation_chars_per_second": 940}


def measure_generation(generator, new_tokens, repeats, prompt="\n"):
    """Median characters/s of `repeats` timed runs (after one untimed run that compiles)."""
    kwargs = dict(max_new_tokens=new_tokens, sampler="top_k", top_k=200, temperature=0.8)
    generator.generate([prompt], seed=0, **kwargs)
    rates = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        text = generator.generate([prompt], seed=seed, **kwargs)[0]
        rates.append(len(text) / (time.perf_counter() - start))
    return round(statistics.median(rates)), text


def time_blocks(run_dir, steps, rounds):
    """Median train ms/step of the preset with each decoder block, alternating A/B `rounds` times."""
    from tfllm import data as data_lib
    from tfllm import runs
    from tfllm.datasets.text import load_text_corpus
    from tfllm.tokenizers import load_tokenizer
    from tfllm.training import common
    from tfllm.training.causal_lm import StepTimer, build_causal_lm

    preset = runs.read_recipe(run_dir)
    tokenizer = load_tokenizer(run_dir)
    ids = data_lib.tokenize_corpus(tokenizer, load_text_corpus("shakespeare")[0])
    spe = preset["steps_per_execution"]
    steps = max(steps // spe, 3) * spe
    models = {name: build_causal_lm({**preset, "use_bias": use_bias}, tokenizer)
              for name, use_bias in (("keras_hub_transformer_decoder", True), ("fused_decoder_block", False))}
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            timer = StepTimer()
            dataset = data_lib.random_window_dataset(ids, preset["sequence_length"], preset["batch_size"], seed=0)
            with common.preprocessed(model):  # the windows are token ids already
                model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
            times[name] += [t * 1000 / spe for t in timer.step_seconds]
    result = {name: round(statistics.median(t), 2) for name, t in times.items()}
    result["speedup"] = round(result["keras_hub_transformer_decoder"] / result["fused_decoder_block"], 3)
    result["steps_per_model"] = steps * rounds
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA for the train step (default: the preset's)")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps-per-execution", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=900)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-steps", type=int, default=500, help="train steps per decoder block and round (0: skip)")
    parser.add_argument("--run-dir", default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "generation.json"))
    args = parser.parse_args(argv)

    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.generation import Generator, load_generator
    from tfllm.models.causal_lm import CausalLM
    from tfllm.training.causal_lm import train_causal_lm

    run_dir = args.run_dir or os.path.join(tempfile.mkdtemp(prefix="bench-generation-"), "run")
    overrides = {} if args.steps_per_execution is None else {"steps_per_execution": args.steps_per_execution}
    config = TrainConfig(task="generate", data="shakespeare", preset="nanogpt-cpu", run_dir=run_dir, steps=args.steps,
                         jit_compile=args.jit_compile, precision=args.precision, overrides=overrides,
                         overwrite=bool(args.run_dir))  # --run-dir: replace the run a previous benchmark left there
    start = time.perf_counter()
    train_causal_lm(config, verbose=0)
    train_seconds = time.perf_counter() - start
    metrics = json.load(open(os.path.join(run_dir, runs.METRICS)))
    preset = runs.read_recipe(run_dir)

    generator = load_generator(run_dir)
    generation = {}
    # Sliding-window choices past the 64-token context (see tfllm/models/causal_lm.py).
    default_keep = generator.model.window_keep
    for keep in (default_keep, None, 32):
        model = CausalLM(generator.model.backbone, window_keep=keep)
        rate, text = measure_generation(Generator(model, generator.tokenizer), args.new_tokens, args.repeats)
        generation["exact" if keep is None else f"keep_{keep}"] = rate
        if keep == default_keep:
            sample = text
    model = CausalLM(generator.model.backbone, window_keep=default_keep)
    generation[f"keep_{default_keep}_no_xla"], _ = measure_generation(
        Generator(model, generator.tokenizer, jit_compile=False), args.new_tokens, 1)

    blocks = time_blocks(run_dir, args.block_steps, rounds=2) if args.block_steps else None

    result = {
        "steps": metrics["steps"],
        "val_loss": metrics["val"]["loss"],
        "val_bits_per_character": metrics["val"]["bits_per_character"],
        "median_ms_per_step": metrics["speed"]["ms_per_step"],
        "tokens_per_second": metrics["speed"]["tokens_per_second"],
        # Cached, top-k 200, temperature 0.8, 900 new characters; keep_N = window_keep (the
        # preset's is the default), exact = nanoGPT's crop (re-encode 63 tokens per new token).
        "generation_chars_per_second": generation,
        "window_keep": default_keep,
        # The preset's bias-free block vs KerasHub's TransformerDecoder, same batches, alternating.
        "train_ms_per_step_by_block": blocks,
        "train_seconds_total": round(train_seconds, 1),
        "settings": {"jit_compile": preset["jit_compile"], "precision": args.precision,
                     "steps_per_execution": preset.get("steps_per_execution", 1), "new_tokens": args.new_tokens},
        "vs_nanogpt": {
            "val_loss_goal_1.925_met": metrics["val"]["loss"] <= NANOGPT["val_loss"],
            "train_speed_ratio": round(metrics["speed"]["tokens_per_second"] / NANOGPT["tokens_per_second"], 2),
            "generation_speed_ratio": round(generation[f"keep_{default_keep}"] / NANOGPT["generation_chars_per_second"], 2),
        },
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the 2 cores skews speed figures
        "sample": sample[:300],
    }
    save_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
