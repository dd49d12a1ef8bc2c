"""Translation on the bundled cedict: quality within a training-time budget, and decoding speed.

    .venv/bin/python benchmarks/bench_translation.py --tasks zh-en pinyin --minutes 20
    .venv/bin/python benchmarks/bench_translation.py --tasks speed

Tasks:
- `zh-en`: simplified headword -> English gloss (`--source-column simplified
  --target-column english`); test chrF and BLEU (sacreBLEU, every gloss a
  reference), greedy and beam-4. Issue 15's goal: chrF >= 32 within 20 minutes
  on 2 CPU cores (lookup baselines on the same split: chrF 26.2 / BLEU 14.4).
- `pinyin`: pinyin -> simplified characters; test exact match (goal >= 0.55;
  most frequent character per syllable: 0.242 exact, 0.574 per character).
  With `--lm zh_news`, also decoded with shallow fusion of a character n-gram
  model of the bundled People's Daily text and the training targets
  (`tfllm translate --lm`), its weight chosen on validation pairs.
- With `--memory`, both tasks are also scored with the run's training pairs as
  a translation memory (`tfllm translate --memory train`): the memory alone,
  and the memory's 8 best matches with the model breaking near-ties.
- `speed`: one model of the `default` preset's shape with a 33-token decoder
  (untrained: speed does not depend on the weights), greedy decoding of
  32-token outputs with the key/value caches (`Seq2SeqLM.generate_step`)
  versus re-running the whole model for every token
  (`tfllm.translation.greedy_without_cache`, the keras.io example's way), both
  XLA-compiled, same batch; and beam-4 sentences per second.

Training stops at `--minutes` (the preset's `max_train_seconds`), then the
best-val-loss weights are scored. Prints JSON and saves it to
benchmarks/results/translation.json (tasks not run keep their previous entry).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from bench_vs_torch import save_results  # standard library only
from tfllm.config import TrainConfig
from tfllm.datasets.pairs import load_pair_data
from tfllm.evaluation import translation_report
from tfllm.training.seq2seq import own_model, run_decoding_aids, run_memory, train_seq2seq
import tfllm.translation as translation
from tfllm.translation import Translator, greedy_without_cache, load_translator

RESULTS = os.path.join(os.path.dirname(__file__), "results", "translation.json")
TASKS = {"zh-en": ("simplified", "english"), "pinyin": ("pinyin", "simplified")}


def quality(task, minutes, preset, max_rows, beam_examples, overrides, epochs=None, lm_corpus=None,
            lm_weights=(), memory=False):
    source, target = TASKS[task]
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(task="translate", data="cedict", source_column=source, target_column=target,
                             preset=preset, run_dir=run_dir, max_rows=max_rows, epochs=epochs,
                             overrides=dict(overrides, max_train_seconds=minutes * 60))
        # The learning-rate schedule spans --epochs (warm-up, cosine decay): set it to what the budget
        # holds, or the rate is still warming up when the time runs out.
        command = (f"tfllm train --task translate --data cedict --source-column {source} --target-column {target} "
                   f"--preset {preset}{f' --epochs {epochs}' if epochs else ''}  (overrides {json.dumps(config.overrides)})")
        load = [round(x, 2) for x in os.getloadavg()]
        start = time.perf_counter()
        metrics = train_seq2seq(config, verbose=2)
        result = {"command": command, "greedy": metrics["test"], "val_greedy": metrics["val"],
                  **{k: metrics[k] for k in ("train_seconds", "epochs_run", "stopped_by_time_budget",
                                              "decode_seconds", "num_train_examples", "parameters")},
                  # Everything the command did: reading the data, the vocabulary, training, scoring val and test.
                  "command_seconds": round(time.perf_counter() - start, 1), "load_average_at_start": load}
        data = load_pair_data("cedict", source, target, max_rows=max_rows)
        translator = load_translator(run_dir)
        tokenizer = translator.tokenizer
        ids = tokenizer.tokenize(tf.constant(data.test.sources))
        ids = [i for row in (ids if isinstance(ids, list) else ids.to_list()) for i in row]
        result["test_source_unknown_token_rate"] = round(float(np.mean(np.equal(ids, tokenizer.unk_token_id))), 4)
        result["vocabulary_size"] = int(tokenizer.vocabulary_size())
        result["decoder_output_size"] = int(translator.model.backbone.target_vocabulary_size or
                                            result["vocabulary_size"])
        if beam_examples:
            n = min(beam_examples, len(data.test))
            start = time.perf_counter()
            outputs = translator.translate(data.test.sources[:n], sampler="beam", num_beams=4, warn=False)
            result["beam4"] = {**translation_report(outputs, data.test.references[:n]),
                               "seconds": round(time.perf_counter() - start, 1)}
            result["greedy_same_examples"] = translation_report(
                translator.translate(data.test.sources[:n], warn=False), data.test.references[:n])
        if lm_corpus:
            result["lm_fusion"] = fusion(task, translator, run_dir, data, lm_corpus, lm_weights, beam_examples)
        if memory:
            result["memory"] = with_memory(translator, run_dir, data, beam_examples)
        return result


def with_memory(translator, run_dir, data, beam_examples):
    """The run's training pairs as a translation memory (`tfllm translate --memory train`).

    Rows: the memory alone (the target of the best-matching training source),
    and `translate(memory=)`: the best of the 8 best matches' targets by match
    score plus the model's likelihood; sources matching nothing decoded
    (greedy on the whole test split, beam 4 on the first `beam_examples`).
    """
    start = time.perf_counter()
    memory = run_memory(run_dir)
    result = {"pairs": len(memory), "build_seconds": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    found = memory.lookup(data.test.sources, k=1)
    result["memory_alone"] = {**translation_report([f[0] if f else "" for f in found], data.test.references),
                              "seconds": round(time.perf_counter() - start, 1)}
    for name, sampler, count in (("greedy", "greedy", len(data.test)), ("beam4", "beam", beam_examples)):
        count = min(count, len(data.test))
        if not count:
            continue
        start = time.perf_counter()
        beams = 4 if sampler == "beam" else None  # greedy refuses num_beams
        outputs = translator.translate(data.test.sources[:count], sampler=sampler, num_beams=beams, warn=False,
                                       memory=memory)
        result[name] = {**translation_report(outputs, data.test.references[:count]),
                        "seconds": round(time.perf_counter() - start, 1)}
    return result


def fusion(task, translator, run_dir, data, corpus, weights, beam_examples, val_examples=1000):
    """Shallow fusion with an n-gram model of the run's training targets and `corpus`.

    The weight is chosen on the first `val_examples` validation pairs (weight 0:
    no language model), then the test split is decoded once with it.
    """
    start = time.perf_counter()
    lm, _ = run_decoding_aids(translator, run_dir, corpus)
    result = {"corpus": corpus, "build_seconds": round(time.perf_counter() - start, 1), "val": {}}
    metric = "exact_match" if task == "pinyin" else "chrf"
    n = min(val_examples, len(data.val))
    for weight in (0.0, *weights):
        outputs = translator.translate(data.val.sources[:n], warn=False, lm=lm if weight else None, lm_weight=weight)
        result["val"][str(weight)] = translation_report(outputs, data.val.references[:n])
    best = max(weights, key=lambda w: result["val"][str(w)][metric])
    result["weight"] = best
    for name, sampler, count in (("greedy", "greedy", len(data.test)), ("beam4", "beam", beam_examples)):
        count = min(count, len(data.test))
        if not count:
            continue
        start = time.perf_counter()
        beams = 4 if sampler == "beam" else None  # greedy refuses num_beams
        outputs = translator.translate(data.test.sources[:count], sampler=sampler, num_beams=beams, warn=False, lm=lm,
                                       lm_weight=best)
        result[name] = {**translation_report(outputs, data.test.references[:count]), "num_examples": count,
                        "seconds": round(time.perf_counter() - start, 1)}
    return result


def _best_of(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(preset, batch_size, repeats, new_tokens=32):
    from tfllm.models import resolve_preset
    from tfllm.tokenizers import train_tokenizer

    data = load_pair_data("cedict", max_rows=20000)
    settings = resolve_preset("translate", preset, {"decoder_sequence_length": new_tokens + 1})
    tokenizer = train_tokenizer(data.train.sources + data.train.targets, settings["tokenizer"],
                                settings["vocabulary_size"], lowercase=settings.get("lowercase", False))
    keras.utils.set_random_seed(0)
    model = own_model(settings, tokenizer)
    translator = Translator(model)
    # Throughput after compiling, as a call of thousands of sources decodes (under XLA; fewer go without it).
    translation.XLA_MIN_SOURCES = 1
    sources = data.test.sources[:batch_size]
    inputs = model.preprocessor.generate_preprocess(tf.constant(sources), decoder_sequence_length=new_tokens + 1)
    inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
    from keras_hub.samplers import GreedySampler

    @tf.function(jit_compile=True)
    def cached(inputs):  # no stop token: every row decodes all 32 tokens, as the uncached loop below
        return model.generate_step(inputs, stop_token_ids=None, sampler=GreedySampler())["decoder_token_ids"]

    def run_cached():
        return keras.ops.convert_to_numpy(cached(inputs))

    def run_uncached():
        return greedy_without_cache(model, inputs, new_tokens, end_id=-1)

    # Same tokens both ways (up to float ties), then time each after its compile.
    agree = float(np.mean(run_cached() == run_uncached()))
    cached_s, uncached_s = _best_of(run_cached, repeats), _best_of(run_uncached, repeats)
    translator.translate(sources, sampler="beam", num_beams=4, max_new_tokens=new_tokens, warn=False)  # compile
    beam_s = _best_of(lambda: translator.translate(sources, sampler="beam", num_beams=4, max_new_tokens=new_tokens,
                                                   warn=False), repeats)
    return {
        "batch_size": len(sources),
        "new_tokens": new_tokens,
        "token_agreement_cached_vs_uncached": round(agree, 4),
        "cached_greedy_seconds": round(cached_s, 4),
        "uncached_greedy_seconds": round(uncached_s, 4),
        "cached_speedup": round(uncached_s / cached_s, 2),
        "cached_greedy_sentences_per_second": round(len(sources) / cached_s, 1),
        "beam4_seconds": round(beam_s, 4),
        "beam4_sentences_per_second": round(len(sources) / beam_s, 1),
        "note": "untrained weights, so beam-4 rows rarely stop early: an upper bound on its time per sentence",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["zh-en", "pinyin", "speed"],
                        choices=["zh-en", "pinyin", "speed"])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per quality task")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's (the schedule's length)")
    parser.add_argument("--max-rows", type=int, default=None, help="a sample of cedict (quick checks)")
    parser.add_argument("--beam-examples", type=int, default=1000, help="test examples also decoded with beam 4")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="preset overrides (JSON values)")
    parser.add_argument("--batch-size", type=int, default=64, help="speed: sentences per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lm", default=None, metavar="CORPUS",
                        help="also decode with shallow fusion of an n-gram model of CORPUS (zh_news) and the targets")
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.8],
                        help="weights tried on validation pairs; the best decodes the test split")
    parser.add_argument("--memory", action="store_true",
                        help="also translate with the run's training pairs as a translation memory (--memory train)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    results = json.load(open(args.out)) if os.path.exists(args.out) else {}
    # The run that wrote the file last; tasks not rerun keep their entries (each quality task's own `command` is
    # the training it timed).
    results["command"] = "python benchmarks/bench_translation.py " + " ".join(sys.argv[1:])
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    for task in args.tasks:
        if task == "speed":
            results["speed"] = speed(args.preset, args.batch_size, args.repeats)
        else:
            results[task] = quality(task, args.minutes, args.preset, args.max_rows, args.beam_examples, overrides,
                                    args.epochs, args.lm, args.lm_weights, args.memory)
        save_results(args.out, results, shown={task: results[task]})


if __name__ == "__main__":
    main()
