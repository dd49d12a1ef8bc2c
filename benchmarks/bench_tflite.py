"""Size, latency and parity of TFLite variants next to the SavedModel.

    .venv/bin/python benchmarks/bench_tflite.py --classifier runs/reviews [--generator runs/shakespeare]

For the classifier: each quantization (`none`, `dynamic`, `float16`, `int8`)
is exported with `tfllm.export.tflite.export_tflite`; the figures are the
file sizes, per-example latency at batch 1 (token-id model, raw-string model,
and the SavedModel's `serving_default` / `classify_ids` signatures) and the
parity report on the test split. With `--generator`: per-token greedy
latency of each TFLite variant (the Python prefill/decode loop, one thread;
windows re-encoded as the Keras model does) next to Keras `generate()` with
XLA, and the 100-token greedy agreement from each export's parity report. Prints JSON and saves it to
`benchmarks/results/tflite.json`.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from bench_vs_torch import save_results  # standard library only
from tfllm.config import TrainConfig
from tfllm.datasets import split_as_trained
from tfllm.export import tflite


def _per_call_ms(fn, inputs, repeats=1):
    fn(inputs[0])  # first call allocates tensors / traces; not timed
    start = time.perf_counter()
    for _ in range(repeats):
        for x in inputs:
            fn(x)
    return 1000 * (time.perf_counter() - start) / (repeats * len(inputs))


def bench_classifier(run_dir, num_examples):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops the SavedModel uses)

    from tfllm.export.saved_model import export_classifier
    from tfllm.export.tflite_classifier import id_model_inputs
    from tfllm.training.classifier import load_run

    config = tflite.check_run_dir(run_dir)
    model, label_names, _ = load_run(run_dir)
    texts = split_as_trained(TrainConfig.from_dict(config, strict=False), label_names).test.texts[:num_examples]
    inputs = id_model_inputs(model, texts)  # token_ids, and code_points for the character and word views
    ids = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(len(texts))]  # one example a call
    results = {"run_dir": run_dir, "latency_examples": len(texts), "batch_size": 1, "variants": {}}

    with tempfile.TemporaryDirectory() as base:
        saved = export_classifier(run_dir, "bench", base_dir=base)
        loaded = tf.saved_model.load(saved)
        by_text, by_ids = loaded.signatures["serving_default"], loaded.signatures["classify_ids"]
        results["saved_model"] = {
            "bytes": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(saved) for f in fs),
            "ms_per_example_text": _per_call_ms(lambda t: by_text(text=tf.constant([t])), texts),
            "ms_per_example_ids": _per_call_ms(lambda x: by_ids(**{k: tf.constant(v) for k, v in x.items()}), ids),
        }
        print(json.dumps({"saved_model": results["saved_model"]}))
        for quantize in tflite.QUANTIZE_MODES["classify"]:
            directory = tflite.export_tflite(run_dir, "bench-tflite", base_dir=base, quantize=quantize)
            with open(os.path.join(directory, "parity.json")) as f:
                parity = json.load(f)
            # One thread, batch 1: the shape of an on-device call.
            ids_runner = tflite.load_interpreter(os.path.join(directory, tflite.IDS_FILE), num_threads=1).get_signature_runner()
            text_runner = tflite.load_interpreter(os.path.join(directory, tflite.TEXT_FILE), num_threads=1).get_signature_runner()
            variant = {
                "bytes": parity[tflite.IDS_FILE]["bytes"],
                "text_model_bytes": parity[tflite.TEXT_FILE]["bytes"],
                "ms_per_example_ids": _per_call_ms(lambda x: ids_runner(**x), ids),
                "ms_per_example_text": _per_call_ms(lambda t: text_runner(text=np.array([t], dtype=object)), texts),
                "max_abs_probability_difference": parity[tflite.IDS_FILE]["max_abs_probability_difference"],
                "accuracy": parity[tflite.IDS_FILE]["accuracy"],
                "accuracy_change_points": parity[tflite.IDS_FILE]["accuracy_change_points"],
                "text_model_accuracy": parity[tflite.TEXT_FILE]["accuracy"],
                "text_model_max_abs_difference_vs_id_model_same_tokens": parity[tflite.TEXT_FILE][
                    "max_abs_difference_vs_id_model_same_tokens"
                ],
                "texts_tokenized_differently": parity[tflite.TEXT_FILE]["texts_tokenized_differently"],
                "test_examples": parity["num_examples"],
                "keras_accuracy": parity["keras_accuracy"],
            }
            results["variants"][quantize] = variant
            print(json.dumps({quantize: variant}))
    float_bytes = results["variants"]["none"]["bytes"]
    for variant in results["variants"].values():
        variant["size_vs_float32"] = round(variant["bytes"] / float_bytes, 3)
    return results


def bench_generator(run_dir, new_tokens=200):
    """Per-token greedy latency of each TFLite variant and of Keras `generate()` (XLA), plus parity."""
    from tfllm.export.tflite_causal_lm import MODEL_FILE, TFLiteGenerator
    from tfllm.generation import load_generator

    generator = load_generator(run_dir)
    prompt = "ROMEO:"
    results = {"run_dir": run_dir, "new_tokens": new_tokens, "prompt": prompt, "variants": {}}
    generator.generate([prompt], max_new_tokens=new_tokens, sampler="greedy")  # compile first
    start = time.perf_counter()
    generator.generate([prompt], max_new_tokens=new_tokens, sampler="greedy")
    results["keras_xla"] = {"ms_per_token": 1000 * (time.perf_counter() - start) / new_tokens}
    print(json.dumps({"keras_xla": results["keras_xla"]}))
    prompt_ids = generator.encode(prompt)
    with tempfile.TemporaryDirectory() as base:
        for quantize in tflite.QUANTIZE_MODES["generate"]:
            directory = tflite.export_tflite(run_dir, "bench-lm", base_dir=base, quantize=quantize)
            with open(os.path.join(directory, "parity.json")) as f:
                parity = json.load(f)
            device = TFLiteGenerator(os.path.join(directory, MODEL_FILE), window_keep=generator.model.window_keep, num_threads=1)
            start = time.perf_counter()
            ids = device.generate_ids(prompt_ids, new_tokens, (generator.end_id,))
            variant = {
                "bytes": parity[MODEL_FILE]["bytes"],
                "ms_per_token": 1000 * (time.perf_counter() - start) / max(len(ids), 1),
                **{k: v for k, v in parity.items() if k.startswith("greedy")},
            }
            results["variants"][quantize] = variant
            print(json.dumps({quantize: variant}))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="runs/reviews", help="run directory of a trained classifier")
    parser.add_argument("--generator", default=None, help="run directory of a trained text generator")
    parser.add_argument("--latency-examples", type=int, default=300)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "tflite.json"))
    args = parser.parse_args(argv)
    results = {"command": "python benchmarks/bench_tflite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d")}
    if args.classifier:
        results["classifier"] = bench_classifier(args.classifier, args.latency_examples)
    if args.generator:
        results["generator"] = bench_generator(args.generator)
    save_results(args.out, results)


if __name__ == "__main__":
    main()
