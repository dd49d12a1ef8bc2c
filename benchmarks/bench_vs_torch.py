"""tfllm against a PyTorch reference on this machine: paired, alternating, same data.

    .venv/bin/pip install -e ".[bench]"              # torch 2.13 CPU, benchmarks only
    .venv/bin/python benchmarks/bench_vs_torch.py     # ~15-20 min on 2 cores
    .venv/bin/python benchmarks/bench_vs_torch.py --only steps classifier --rounds 3

Every figure is a ratio of two measurements taken in the same run, one after
the other, in rounds (tfllm, reference, tfllm, reference, ...), so load from
other work on a shared machine hits both sides alike. The reference is
`benchmarks/torch_reference.py` (nanoGPT's character GPT and the article's
classifier, written in PyTorch). Before any timing the same initial weights
are loaded into both, and both must compute the same loss on the same batch
(and, for the GPT, the same loss again after 50 training steps on the same
batches); the script stops otherwise.

Sections (`--only`):
  steps       train step, nanogpt-cpu, float32 and mixed_bfloat16 vs the reference (same batches);
              the reference probes 1 thread and all threads first and keeps the faster (choose_threads)
  train       the whole `tfllm train` command vs `torch_reference.py train`, every phase accounted for
  generate    `tfllm generate RUN "ROMEO:" --max-new-tokens 900` cold vs `torch_reference.py sample`
  predict     `tfllm predict RUN "one text"` cold (article classifier, 1 epoch)
  classifier  train step of the `article` classifier vs the reference (same batches)
  ceiling     how fast any float32 implementation could run the GPT step on this machine: the
              step's matrix-multiply FLOPs, the reference's step rate, and the best rate of the
              machine's matrix multiplies (PyTorch's and XLA's, square and at the step's own shapes);
              their quotient bounds the per-step ratio any float32 code could reach

Writes benchmarks/results/vs_torch.json: ratios (tfllm speed / reference
speed, so > 1 means tfllm is faster), the raw figures of every round, the
machine's CPU model and flags, and the commands.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
TFLLM = [PY, "-m", "tfllm.cli"]
REFERENCE = [PY, os.path.join(HERE, "torch_reference.py")]
GPT_BATCH, GPT_BLOCK = 12, 64
CLS_BATCH, CLS_LENGTH = 32, 100
CHECK_STEPS = 50  # steps both take (one execution of nanogpt-cpu's 50 steps per call) on the same batches before the second loss check
LOSS_TOLERANCE = 1e-4  # initial loss, same weights, same batch (float32 round-off)
TRAINED_LOSS_TOLERANCE = 2e-3  # after CHECK_STEPS (Keras/PyTorch Adam differ in where epsilon enters)


def cpu_info():
    model, flags = platform.processor(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "bf16_hardware": any(f in flags for f in ("avx512_bf16", "amx_bf16"))}


def command_line():
    """The command that ran this script, as a reader of its JSON would type it from the repository root."""
    return " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]])


def save_results(path, results, shown=None):
    """Writes `results` to `path` as JSON, whole or not at all, making its folder; then prints `shown`
    (by default `results`): a str as it is, anything else as JSON. A dict without a "command" is given the
    command that ran this script, so that every figure names how to measure it again."""
    if isinstance(results, dict) and "command" not in results:
        results = {"command": command_line(), **results}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    if shown is None:
        shown = results
    print(shown if isinstance(shown, str) else json.dumps(shown, indent=2, ensure_ascii=False))


def run_worker(args, env=None):
    """Runs this script in worker mode in a fresh process; returns its JSON result."""
    out = subprocess.run([PY, os.path.abspath(__file__), "--worker", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"worker {args[:2]} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(command, env=None):
    """(seconds, completed process) of one command, start to exit."""
    start, wall = time.perf_counter(), time.time()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    seconds = time.perf_counter() - start
    if out.returncode:
        sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
        raise SystemExit(f"command failed: {' '.join(command)}")
    out.launched_at = wall
    out.ended_at = time.time()
    return seconds, out


def median(values):
    return round(statistics.median(values), 4) if values else None


# --- workers: each runs in its own process, tfllm's or torch's, never both ---------------


def gpt_batches(path, count, seed=0):
    """`count` batches of random windows of the bundled corpus, tokenized as tfllm's char tokenizer does."""
    import numpy as np

    sys.path.insert(0, HERE)
    from torch_reference import char_vocabulary, encode, load_shakespeare

    train_text, _ = load_shakespeare()
    ids = encode(train_text, char_vocabulary(train_text))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - GPT_BLOCK - 1, size=(count, GPT_BATCH))
    windows = ids[starts[..., None] + np.arange(GPT_BLOCK + 1)].astype("int32")
    np.savez(path, windows=windows, vocabulary_size=len(set(train_text)) + 5)


def classifier_batches(path, count, vocabulary_size=10000, seed=0):
    """Token-id batches of the article's shape: 32 texts padded to 100, lengths 5-100, with 0/1 labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocabulary_size, size=(count, CLS_BATCH, CLS_LENGTH)).astype("int32")
    lengths = rng.integers(5, CLS_LENGTH + 1, size=(count, CLS_BATCH))
    ids[np.arange(CLS_LENGTH)[None, None, :] >= lengths[..., None]] = 0
    labels = rng.integers(0, 2, size=(count, CLS_BATCH)).astype("float32")
    np.savez(path, ids=ids, labels=labels, vocabulary_size=vocabulary_size)


def _chunk_medians(chunk_seconds, per_chunk):
    return round(statistics.median(chunk_seconds) / per_chunk * 1000, 3)


def worker_tf_gpt(batches_path, weights_path, steps, precision, save_weights):
    """tfllm's nanogpt-cpu model: weights out (or in), loss checks, then timed steps on the same batches."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfllm.presets import resolve_preset
    from tfllm.tokenizers import train_tokenizer
    from tfllm.training import common
    from tfllm.training.causal_lm import StepTimer, build_causal_lm

    data = np.load(batches_path)
    windows = data["windows"]
    keras.utils.set_random_seed(0)
    preset = resolve_preset("generate", "nanogpt-cpu", {"steps": steps})
    spe = preset["steps_per_execution"]
    sys.path.insert(0, HERE)
    from torch_reference import load_shakespeare

    tokenizer = train_tokenizer([load_shakespeare()[0]], "char", preset["vocabulary_size"], lowercase=False)
    assert tokenizer.vocabulary_size() == int(data["vocabulary_size"])
    with common.precision_scope(precision):
        try:
            model = build_causal_lm(preset, tokenizer)
        except (TypeError, AttributeError):  # the older signature took the vocabulary size
            model = build_causal_lm(preset, tokenizer.vocabulary_size())
    model.preprocessor = None  # batches are token ids already (as training detaches it)
    backbone = model.backbone
    names = {"wte.weight": backbone.token_embedding.embeddings, "wpe.weight": backbone.position_embedding.position_embeddings,
             "ln_f.weight": backbone.layer_norm.gamma, "ln_f.bias": backbone.layer_norm.beta}
    for i, block in enumerate(backbone.transformer_layers):
        names.update({
            f"h.{i}.ln_1.weight": block.attention_norm.gamma, f"h.{i}.ln_2.weight": block.feedforward_norm.gamma,
            f"h.{i}.ln_1.bias": block.attention_norm.beta, f"h.{i}.ln_2.bias": block.feedforward_norm.beta,
            f"h.{i}.c_attn.weight": block.query_key_value.kernel, f"h.{i}.attn_proj.weight": block.attention_output.kernel,
            f"h.{i}.c_fc.weight": block.feedforward_intermediate.kernel, f"h.{i}.mlp_proj.weight": block.feedforward_output.kernel,
        })
    if save_weights:
        # Dense kernels are [in, out]; torch's Linear weights are [out, in].
        np.savez(weights_path, **{k: (v.numpy().T if k.endswith(("attn.weight", "proj.weight", "fc.weight")) else v.numpy())
                                  for k, v in names.items()})
    else:
        stored = np.load(weights_path)
        for k, v in names.items():
            v.assign(stored[k].T if k.endswith(("attn.weight", "proj.weight", "fc.weight")) else stored[k])

    def loss_on(batch):
        w = batch.astype("int32")
        logits = model({"token_ids": w[:, :-1], "padding_mask": np.ones_like(w[:, :-1])}, training=False)
        return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(w[:, 1:], tf.cast(logits, "float32")))

    initial_loss = loss_on(windows[0])

    def dataset(batch_windows):
        return tf.data.Dataset.from_tensor_slices(batch_windows).map(
            lambda w: ({"token_ids": w[:, :-1], "padding_mask": tf.ones_like(w[:, :-1])}, w[:, 1:]))

    # CHECK_STEPS training steps (one execution) on the next batches, then the loss on batch 0 again.
    model.fit(dataset(windows[1: CHECK_STEPS + 1]), epochs=1, verbose=0, shuffle=False)
    trained_loss = loss_on(windows[0])

    timer = StepTimer()
    timed_windows = windows[CHECK_STEPS + 1:][: (steps // spe) * spe]
    start = time.perf_counter()
    model.fit(dataset(timed_windows), epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    total = time.perf_counter() - start
    chunks = timer.step_seconds  # one per execution of `spe` steps, the first (compilation) left out
    return {"initial_loss": initial_loss, "loss_after_check_steps": trained_loss,
            "median_ms_per_step": _chunk_medians(chunks, spe), "steps": len(timed_windows),
            "steps_per_execution": spe, "fit_seconds": round(total, 2), "precision": precision}


def worker_torch_gpt(batches_path, weights_path, steps, chunk, threads):
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from torch_reference import GPT, GPT_CONFIG, make_gpt_step

    data = np.load(batches_path)
    windows = torch.from_numpy(data["windows"].astype("int64"))
    model = GPT(**dict(GPT_CONFIG, vocab_size=int(data["vocabulary_size"])))
    stored = np.load(weights_path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(stored[name]))
    optimizer = model.configure_optimizer()
    step = make_gpt_step(model, optimizer, steps=steps)

    def loss_on(w):
        with torch.no_grad():
            model.eval()
            loss = float(model(w[:, :-1], w[:, 1:])[1])
            model.train()
            return loss

    initial_loss = loss_on(windows[0])
    probe = choose_threads(lambda i: step(windows[i][:, :-1], windows[i][:, 1:]), range(1, CHECK_STEPS + 1), threads)
    trained_loss = loss_on(windows[0])
    timed_windows = windows[CHECK_STEPS + 1:][: (steps // chunk) * chunk]
    chunks, start = [], time.perf_counter()
    for c in range(0, len(timed_windows), chunk):
        t = time.perf_counter()
        for w in timed_windows[c: c + chunk]:
            loss = step(w[:, :-1], w[:, 1:])
        loss.item()
        chunks.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return {"initial_loss": initial_loss, "loss_after_check_steps": trained_loss,
            "median_ms_per_step": _chunk_medians(chunks[1:], chunk), "steps": len(timed_windows),
            "fit_seconds": round(total, 2), "threads": torch.get_num_threads(), "thread_probe_ms_per_step": probe}


def choose_threads(run_step, indices, threads):
    """Runs the steps `indices` (the loss-check steps); with `threads` 0 it runs half of them on one
    thread and half on all, and keeps the faster count for the timed steps. PyTorch's OpenMP threads
    spin at barriers: on a shared, oversubscribed machine one thread can be many times faster than
    two, so the reference gets whichever is faster now (conservative for tfllm).
    Returns {threads: ms per step} of the probe."""
    import torch

    indices = list(indices)
    if threads:
        torch.set_num_threads(threads)
        for i in indices:
            run_step(i)
        return {}
    counts = sorted({1, os.cpu_count() or 1})
    share = len(indices) // len(counts)
    times = {}
    for n, count in enumerate(counts):
        torch.set_num_threads(count)
        part = indices[n * share: (n + 1) * share]
        run_step(part[0])  # the first step after a change pays for it
        start = time.perf_counter()
        for i in part[1:]:
            run_step(i)
        times[count] = round((time.perf_counter() - start) / max(len(part) - 1, 1) * 1000, 2)
    for i in indices[len(counts) * share:]:
        run_step(i)
    torch.set_num_threads(min(times, key=times.get))
    return times


def _classifier_names(model):
    """tfllm TextClassifier variables by the reference's parameter names, with torch's layout."""
    import numpy as np

    backbone = model.backbone
    pairs = {"token_embedding.weight": (backbone.token_embedding.embeddings, None),
             "position_embedding.weight": (backbone.position_embedding.position_embeddings, None),
             "head.weight": (model.get_layer("probabilities").kernel, "T"),
             "head.bias": (model.get_layer("probabilities").bias, None)}
    for i, block in enumerate(backbone.transformer_layers):
        p = f"blocks.{i}."
        attention = block._self_attention_layer
        for torch_name, dense in (("query", attention._query_dense), ("key", attention._key_dense),
                                  ("value", attention._value_dense)):
            pairs[p + torch_name + ".weight"] = (dense.kernel, "qkv")  # [C, H, D] -> [H*D, C]
            pairs[p + torch_name + ".bias"] = (dense.bias, "flat")
        pairs[p + "attention_output.weight"] = (attention._output_dense.kernel, "out")  # [H, D, C] -> [C, H*D]
        pairs[p + "attention_output.bias"] = (attention._output_dense.bias, None)
        for torch_name, norm in (("attention_norm", block._self_attention_layer_norm),
                                 ("feedforward_norm", block._feedforward_layer_norm)):
            pairs[p + torch_name + ".weight"] = (norm.gamma, None)
            pairs[p + torch_name + ".bias"] = (norm.beta, None)
        for torch_name, dense in (("intermediate", block._feedforward_intermediate_dense),
                                  ("output", block._feedforward_output_dense)):
            pairs[p + torch_name + ".weight"] = (dense.kernel, "T")
            pairs[p + torch_name + ".bias"] = (dense.bias, None)
    i = len(backbone.transformer_layers)

    def to_torch(value, how):
        if how == "T":
            return value.T
        if how == "qkv":
            return value.reshape(value.shape[0], -1).T
        if how == "flat":
            return value.reshape(-1)
        if how == "out":
            return value.reshape(-1, value.shape[-1]).T
        return value

    def from_torch(value, how, shape):
        if how == "T":
            return value.T
        if how in ("qkv", "out"):
            return value.T.reshape(shape)
        return value.reshape(shape)

    return pairs, to_torch, from_torch, i, np


def worker_tf_classifier(batches_path, weights_path, steps, jit_compile, save_weights):
    import keras
    import numpy as np

    from tfllm.models.encoder_backbone import EncoderBackbone
    from tfllm.presets import resolve_preset
    from tfllm.models.text_classifier import TextClassifier
    from tfllm.training.classifier import compile_classifier

    data = np.load(batches_path)
    ids, labels = data["ids"], data["labels"]
    keras.utils.set_random_seed(0)
    preset = resolve_preset("classify", "article", {} if jit_compile is None else {"jit_compile": jit_compile})
    args = {k: preset[k] for k in ("sequence_length", "hidden_dim", "num_layers", "num_heads", "intermediate_dim", "dropout")}
    # As tfllm.training.classifier.own_classifier builds it, less the preprocessor (the batches are ids).
    model = TextClassifier(EncoderBackbone(vocabulary_size=int(data["vocabulary_size"]), **args), 2,
                           dropout=preset["dropout"])
    compile_classifier(model, preset)
    masks = (ids != 0).astype("int32")
    pairs, to_torch, from_torch, _, _ = _classifier_names(model)
    if save_weights:
        np.savez(weights_path, **{k: to_torch(v.numpy(), how) for k, (v, how) in pairs.items()})
    else:
        stored = np.load(weights_path)
        for k, (v, how) in pairs.items():
            v.assign(from_torch(stored[k], how, v.shape))
    p = np.asarray(model({"token_ids": ids[0], "padding_mask": masks[0]}, training=False))[:, 0].clip(1e-7, 1 - 1e-7)
    y = labels[0]
    initial_loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    import tensorflow as tf

    timer_seconds = []
    from tfllm.training.causal_lm import StepTimer

    timer = StepTimer()
    n = (steps // 1)
    ds = tf.data.Dataset.from_tensor_slices(({"token_ids": ids[1: n + 1], "padding_mask": masks[1: n + 1]},
                                             labels[1: n + 1, :, None]))
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    total = time.perf_counter() - start
    timer_seconds = timer.step_seconds[5:]  # after tracing (and XLA compiling) the step
    return {"initial_loss": initial_loss, "median_ms_per_step": round(statistics.median(timer_seconds) * 1000, 3),
            "steps": n, "fit_seconds": round(total, 2), "jit_compile": model.jit_compile}


def worker_torch_classifier(batches_path, weights_path, steps, threads):
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from torch_reference import Classifier, make_classifier_step

    data = np.load(batches_path)
    ids, labels = torch.from_numpy(data["ids"].astype("int64")), torch.from_numpy(data["labels"])
    model = Classifier(int(data["vocabulary_size"]), sequence_length=CLS_LENGTH)
    stored = np.load(weights_path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(stored[name]).reshape(p.shape))
        model.eval()
        p = model(ids[0]).clamp(1e-7, 1 - 1e-7)
        initial_loss = float(torch.nn.functional.binary_cross_entropy(p, labels[0]))
        model.train()
    step = make_classifier_step(model)
    probe = choose_threads(lambda i: step(ids[i], labels[i]).item(), range(1, 21), threads)
    times = []
    start = time.perf_counter()
    for i in range(1, steps + 1):
        t = time.perf_counter()
        step(ids[i], labels[i]).item()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return {"initial_loss": initial_loss, "median_ms_per_step": round(statistics.median(times[5:]) * 1000, 3),
            "steps": steps, "fit_seconds": round(total, 2), "threads": torch.get_num_threads(),
            "thread_probe_ms_per_step": probe}


def worker_main(argv):
    kind, *rest = argv
    if kind == "gpt-batches":
        gpt_batches(rest[0], int(rest[1]))
        result = {"ok": True}
    elif kind == "classifier-batches":
        classifier_batches(rest[0], int(rest[1]))
        result = {"ok": True}
    elif kind == "tf-gpt":
        result = worker_tf_gpt(rest[0], rest[1], int(rest[2]), rest[3], rest[4] == "save")
    elif kind == "torch-gpt":
        result = worker_torch_gpt(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
    elif kind == "tf-classifier":
        jit = {"none": None, "true": True, "false": False}[rest[3]]
        result = worker_tf_classifier(rest[0], rest[1], int(rest[2]), jit, rest[4] == "save")
    elif kind == "torch-classifier":
        result = worker_torch_classifier(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif kind == "torch-matmul":
        result = worker_torch_matmul(int(rest[0]))
    elif kind == "tf-matmul":
        result = worker_tf_matmul(rest[0])
    else:
        raise SystemExit(f"unknown worker {kind}")
    print(json.dumps(result))


# --- the ceiling: what this machine's matrix multiplies allow ------------------------------


def gpt_step_flops(vocabulary_size):
    """Multiply-add FLOPs of one nanogpt-cpu train step (forward + backward = 3 x forward), counting
    the matrix multiplies only: per token and layer 24 d^2 (query/key/value, output, 4d feed-forward)
    and 4 T d for the attention scores and their weighted sum (the whole T x T, as both sides compute
    it), plus the tied output projection 2 d V. Layer norms, softmax, GELU and the optimizer come on top."""
    sys.path.insert(0, HERE)
    from torch_reference import GPT_CONFIG

    d, layers, t = GPT_CONFIG["n_embd"], GPT_CONFIG["n_layer"], GPT_BLOCK
    per_token = layers * (24 * d * d + 4 * t * d) + 2 * d * vocabulary_size
    return 3 * per_token * GPT_BATCH * GPT_BLOCK


def matmul_shapes():
    """(name, m, k, n): a large square product (the machine's best case) and the forward products
    of the GPT step at batch 12 x 64 tokens (the backward ones have the same sizes, transposed)."""
    sys.path.insert(0, HERE)
    from torch_reference import GPT_CONFIG

    tokens, d, f = GPT_BATCH * GPT_BLOCK, GPT_CONFIG["n_embd"], GPT_CONFIG["intermediate"]
    return [("square_1024", 1024, 1024, 1024), ("qkv", tokens, d, 3 * d), ("attention_out", tokens, d, d),
            ("ffn_in", tokens, d, f), ("ffn_out", tokens, f, d)]


def _rate(run, flops):
    """GFLOP/s of `run()`: the best of 5 timings of as many calls as fill 0.2 s."""
    run()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        run()
        calls += 1
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - t) / calls)
    return round(flops / best / 1e9, 1)


def worker_torch_matmul(threads):
    import torch

    torch.set_num_threads(threads)
    result = {}
    for name, m, k, n in matmul_shapes():
        a, b = torch.randn(m, k), torch.randn(k, n)
        result[name] = _rate(lambda: torch.mm(a, b), 2 * m * k * n)
    return {"threads": threads, "gflops": result}


def worker_tf_matmul(dtype):
    import numpy as np
    import tensorflow as tf

    result = {}
    for name, m, k, n in matmul_shapes():
        a = tf.constant(np.random.default_rng(0).standard_normal((m, k)), dtype)
        b = tf.constant(np.random.default_rng(1).standard_normal((k, n)), dtype)
        # 8 products per call, each on its own input, so one call's overhead does not decide the rate.
        product = tf.function(lambda a, b: tf.add_n([tf.matmul(a + i, b) for i in range(8)]), jit_compile=True)
        result[name] = _rate(lambda: product(a, b).numpy(), 8 * 2 * m * k * n)
    return {"dtype": dtype, "xla": True, "gflops": result}


# --- sections ------------------------------------------------------------------------------


def check_same(name, tf_loss, torch_loss, tolerance):
    difference = abs(tf_loss - torch_loss)
    ok = difference <= tolerance * max(1.0, abs(torch_loss))
    print(f"  {name}: tfllm {tf_loss:.6f}  reference {torch_loss:.6f}  difference {difference:.2e}  "
          f"{'OK' if ok else 'MISMATCH'}", flush=True)
    if not ok:
        raise SystemExit(f"{name}: tfllm and the reference disagree ({tf_loss} vs {torch_loss}); not timing.")
    return {"tfllm": round(tf_loss, 6), "reference": round(torch_loss, 6), "difference": float(f"{difference:.3g}")}


def section_steps(args, work):
    batches, weights = os.path.join(work, "gpt_batches.npz"), os.path.join(work, "gpt_init.npz")
    run_worker(["gpt-batches", batches, str(args.steps + CHECK_STEPS + 1)])
    precisions = ["float32"] + (["mixed_bfloat16"] if args.bf16 else [])
    rounds, checks = [], {}
    for r in range(args.rounds):
        row = {}
        for precision in precisions:
            save = "save" if (r == 0 and precision == "float32") else "load"
            row[f"tfllm_{precision}"] = run_worker(["tf-gpt", batches, weights, str(args.steps), precision, save])
            if precision == "float32":
                row["reference"] = reference = run_worker(
                    ["torch-gpt", batches, weights, str(args.steps), "50", str(args.reference_threads or 0)])
            if r == 0 and precision == "float32":
                checks["initial_loss"] = check_same("initial loss, same weights, batch 0",
                                                    row["tfllm_float32"]["initial_loss"], reference["initial_loss"],
                                                    LOSS_TOLERANCE)
                checks[f"loss_after_{CHECK_STEPS}_steps"] = check_same(
                    f"loss on batch 0 after {CHECK_STEPS} steps on the same batches",
                    row["tfllm_float32"]["loss_after_check_steps"], reference["loss_after_check_steps"],
                    TRAINED_LOSS_TOLERANCE)
        rounds.append(row)
        print(f"  round {r + 1}: " + "  ".join(f"{k} {v['median_ms_per_step']} ms" for k, v in row.items()), flush=True)
    result = {"checks": checks, "rounds": rounds, "steps_per_round": args.steps}
    for precision in precisions:
        ratios = [row["reference"]["median_ms_per_step"] / row[f"tfllm_{precision}"]["median_ms_per_step"] for row in rounds]
        result[f"speed_ratio_{precision}"] = median(ratios)
        result[f"speed_ratio_{precision}_per_round"] = [round(x, 3) for x in ratios]
    best = [row["reference"]["threads"] for row in rounds]
    if args.reference_threads is None:
        args.reference_threads = max(set(best), key=best.count)
    result["reference_threads_used_later"] = args.reference_threads
    return result


def section_ceiling(args, work):
    """The float32 bound on the per-step ratio: the reference's step rate against the best matrix-multiply
    rate this machine reaches (issue 19's 1.5x goal is out of reach where the bound is below it)."""
    import numpy as np

    batches, weights = os.path.join(work, "gpt_batches.npz"), os.path.join(work, "gpt_init.npz")
    run_worker(["gpt-batches", batches, str(args.steps + CHECK_STEPS + 1)])
    flops = gpt_step_flops(int(np.load(batches)["vocabulary_size"]))
    counts = sorted({1, os.cpu_count() or 1})
    rounds = []
    for r in range(args.rounds):
        row = {"tfllm": run_worker(["tf-gpt", batches, weights, str(args.steps), "float32", "save" if r == 0 else "load"]),
               "reference": run_worker(["torch-gpt", batches, weights, str(args.steps), "50", str(args.reference_threads or 0)])}
        row["torch_matmul"] = [run_worker(["torch-matmul", str(n)]) for n in counts]
        row["xla_matmul"] = [run_worker(["tf-matmul", dtype]) for dtype in ("float32", "bfloat16")]
        float32_rates = [m["gflops"] for m in row["torch_matmul"]] + [row["xla_matmul"][0]["gflops"]]
        best_square = max(rates["square_1024"] for rates in float32_rates)
        best_step_shapes = max(min(v for k, v in rates.items() if k != "square_1024") for rates in float32_rates)
        step_rates = {side: flops / (row[side]["median_ms_per_step"] / 1000) / 1e9 for side in ("tfllm", "reference")}
        row["summary"] = {
            "tfllm_step_gflops": round(step_rates["tfllm"], 1), "reference_step_gflops": round(step_rates["reference"], 1),
            "best_float32_matmul_gflops_square": best_square,
            # The slowest of the step's own products, in the best library for them: a floor for the step's matmuls.
            "best_float32_matmul_gflops_step_shapes_slowest": best_step_shapes,
            "ceiling_ratio_square": round(best_square / step_rates["reference"], 2),
            "tfllm_ratio": round(row["reference"]["median_ms_per_step"] / row["tfllm"]["median_ms_per_step"], 3),
        }
        rounds.append(row)
        print(f"  round {r + 1}: " + "  ".join(f"{k} {v}" for k, v in row["summary"].items()), flush=True)
    return {"step_matmul_gflop": round(flops / 1e9, 3), "rounds": rounds, "steps_per_round": args.steps,
            "ceiling_ratio_square": median([row["summary"]["ceiling_ratio_square"] for row in rounds]),
            "tfllm_speed_ratio": median([row["summary"]["tfllm_ratio"] for row in rounds])}


def section_classifier(args, work):
    batches, weights = os.path.join(work, "cls_batches.npz"), os.path.join(work, "cls_init.npz")
    steps = args.classifier_steps
    run_worker(["classifier-batches", batches, str(steps + 1)])
    rounds, checks = [], {}
    variants = {"tfllm_article": "none", "tfllm_article_xla": "true"}
    for r in range(args.rounds):
        row = {}
        for name, jit in variants.items():
            row[name] = run_worker(["tf-classifier", batches, weights, str(steps), jit,
                                    "save" if (r == 0 and name == "tfllm_article") else "load"])
            if name == "tfllm_article":
                row["reference"] = run_worker(["torch-classifier", batches, weights, str(steps),
                                               str(args.reference_threads or 0)])
            if r == 0 and name == "tfllm_article":
                checks["initial_loss"] = check_same("classifier loss, same weights, batch 0 (no dropout)",
                                                    row[name]["initial_loss"], row["reference"]["initial_loss"],
                                                    LOSS_TOLERANCE)
        rounds.append(row)
        print(f"  round {r + 1}: " + "  ".join(f"{k} {v['median_ms_per_step']} ms" for k, v in row.items()), flush=True)
    result = {"checks": checks, "rounds": rounds, "steps_per_round": steps}
    for name in variants:
        ratios = [row["reference"]["median_ms_per_step"] / row[name]["median_ms_per_step"] for row in rounds]
        result[f"speed_ratio_{name}"] = median(ratios)
        result[f"speed_ratio_{name}_per_round"] = [round(x, 3) for x in ratios]
    return result


def section_train(args, work):
    rounds = []
    for r in range(args.rounds):
        # A seed per round, the same for both sides: the validation losses then show the seed-to-seed spread.
        row, seed = {"seed": 1337 + r}, str(1337 + r)
        tf_dir, timing = os.path.join(work, f"tfllm_run_{r}"), os.path.join(work, f"timing_{r}.json")
        command = [*TFLLM, "train", "--task", "generate", "--data", "shakespeare", "--preset", "nanogpt-cpu",
                   "--run-dir", tf_dir, "--steps", str(args.train_steps), "--seed", seed]
        seconds, out = timed(command, env={"TFLLM_TIMING_FILE": timing})
        phases = json.load(open(timing))
        metrics = json.load(open(_metrics_path(tf_dir)))
        row["tfllm"] = {"seconds": round(seconds, 2), "val_loss": metrics["val"]["loss"],
                        "median_ms_per_step": metrics["speed"]["ms_per_step"],
                        "phases_seconds": _account(phases, out, seconds)}
        ref_dir = os.path.join(work, f"reference_run_{r}")
        seconds, out = timed([*REFERENCE, "train", "--out-dir", ref_dir, "--steps", str(args.train_steps),
                              "--seed", seed, *_threads(args)])
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        phases = dict(ref["phases_seconds"])
        phases["startup_and_exit"] = round(seconds - sum(phases.values()) + phases.pop("import"), 3)
        phases["import"] = ref["phases_seconds"]["import"]
        phases["startup_and_exit"] = round(phases["startup_and_exit"] - phases["import"], 3)
        row["reference"] = {"seconds": round(seconds, 2), "val_loss": ref["val_loss"],
                            "median_ms_per_step": ref["median_ms_per_step"], "phases_seconds": phases}
        rounds.append(row)
        print(f"  round {r + 1}: tfllm {row['tfllm']['seconds']} s (val {row['tfllm']['val_loss']})  "
              f"reference {row['reference']['seconds']} s (val {row['reference']['val_loss']})", flush=True)
    ratios = [row["reference"]["seconds"] / row["tfllm"]["seconds"] for row in rounds]
    step_ratios = [row["reference"]["median_ms_per_step"] / row["tfllm"]["median_ms_per_step"] for row in rounds]
    val_loss = {side: [row[side]["val_loss"] for row in rounds] for side in ("tfllm", "reference")}
    return {"rounds": rounds, "steps": args.train_steps, "speed_ratio": median(ratios),
            "val_loss_mean": {side: round(statistics.mean(v), 4) for side, v in val_loss.items()},
            "val_loss_spread": {side: round(max(v) - min(v), 4) for side, v in val_loss.items()},
            "speed_ratio_per_round": [round(x, 3) for x in ratios],
            "step_speed_ratio_inside_the_commands": median(step_ratios),
            "reference_threads": args.reference_threads,
            "commands": {"tfllm": "python -m tfllm.cli train --task generate --data shakespeare --preset nanogpt-cpu "
                                  f"--run-dir DIR --steps {args.train_steps}",
                         "reference": f"python benchmarks/torch_reference.py train --out-dir DIR --steps {args.train_steps}"},
            "run_dirs": {"tfllm": os.path.join(work, f"tfllm_run_{args.rounds - 1}"),
                         "reference": os.path.join(work, f"reference_run_{args.rounds - 1}")}}


def _threads(args):
    """The reference's thread count for whole commands: the faster one in the steps section (or --reference-threads)."""
    return ["--threads", str(args.reference_threads)] if args.reference_threads else []


def _metrics_path(run_dir):
    return os.path.join(run_dir, "metrics.json")


def _account(phases, out, seconds):
    """The tfllm command's seconds: interpreter start + imports before training starts, the
    training function's own phases, and what remains after it returns (exit)."""
    account = {"startup_and_import": round(phases["entered_at"] - out.launched_at, 3)}
    account.update({k: round(v, 3) for k, v in phases["phases"].items()})
    account["exit"] = round(out.ended_at - phases["returned_at"], 3)
    account["unaccounted"] = round(seconds - sum(account.values()), 3)
    return account


def section_generate(args, work, train_result=None):
    if train_result:
        tf_dir, ref_dir = train_result["run_dirs"]["tfllm"], train_result["run_dirs"]["reference"]
    else:
        tf_dir, ref_dir = os.path.join(work, "tfllm_gen_run"), os.path.join(work, "reference_gen_run")
        timed([*TFLLM, "train", "--task", "generate", "--data", "shakespeare", "--preset", "nanogpt-cpu",
               "--run-dir", tf_dir, "--steps", "250"])
        timed([*REFERENCE, "train", "--out-dir", ref_dir, "--steps", "250", *_threads(args)])
    tf_command = [*TFLLM, "generate", tf_dir, "ROMEO:", "--max-new-tokens", str(args.new_tokens), "--seed", "1"]
    ref_command = [*REFERENCE, "sample", "--out-dir", ref_dir, "--prompt", "ROMEO:", "--max-new-tokens", str(args.new_tokens),
                   *_threads(args)]
    rounds = []
    for r in range(args.generate_rounds):
        tf_seconds, tf_out = timed(tf_command)
        ref_seconds, ref_out = timed(ref_command)
        # The same command on tfllm's TensorFlow path (compiled decoding loop), for the NumPy path's effect.
        graph_seconds, graph_out = timed(tf_command, env={"TFLLM_NUMPY_GENERATION": "0"})
        rounds.append({"tfllm": round(tf_seconds, 3), "reference": round(ref_seconds, 3),
                       "tfllm_tensorflow_path": round(graph_seconds, 3),
                       "same_text_on_both_tfllm_paths": graph_out.stdout == tf_out.stdout,
                       "tfllm_characters": len(tf_out.stdout) - 1, "reference_characters": len(ref_out.stdout) - 1,
                       "reference_phases": json.loads(ref_out.stderr.strip().splitlines()[-1])})
        print(f"  round {r + 1}: tfllm generate {tf_seconds:.2f} s  reference sample {ref_seconds:.2f} s  "
              f"tfllm's TensorFlow path {graph_seconds:.2f} s", flush=True)
    ratios = [row["reference"] / row["tfllm"] for row in rounds]
    tf_path_ratios = [row["reference"] / row["tfllm_tensorflow_path"] for row in rounds]
    return {"rounds": rounds, "speed_ratio": median(ratios), "speed_ratio_per_round": [round(x, 3) for x in ratios],
            "speed_ratio_tensorflow_path": median(tf_path_ratios),
            "speed_ratio_tensorflow_path_per_round": [round(x, 3) for x in tf_path_ratios],
            "reference_threads": args.reference_threads,
            "commands": {"tfllm": "python -m tfllm.cli generate RUN ROMEO: --max-new-tokens %d --seed 1" % args.new_tokens,
                         "reference": "python benchmarks/torch_reference.py sample --out-dir DIR --prompt ROMEO: "
                                      "--max-new-tokens %d" % args.new_tokens}}


def section_predict(args, work):
    run_dir = os.path.join(work, "article_run")
    timed([*TFLLM, "train", "--data", "rotten_tomatoes", "--preset", "article", "--epochs", "1", "--run-dir", run_dir])
    seconds, tensorflow_seconds = [], []
    for _ in range(args.generate_rounds):  # alternating: the NumPy path, then the TensorFlow path
        s, out = timed([*TFLLM, "predict", run_dir, "a joyous, moving film"])
        seconds.append(round(s, 3))
        s, tf_out = timed([*TFLLM, "predict", run_dir, "a joyous, moving film"],
                          env={"TFLLM_NUMPY_CLASSIFICATION": "0"})
        tensorflow_seconds.append(round(s, 3))
        if _probabilities(out.stdout) != _probabilities(tf_out.stdout):
            raise SystemExit(f"the NumPy and TensorFlow paths disagree:\n{out}\n{tf_out}")
    print(f"  tfllm predict, one text, cold: {seconds} s; TensorFlow path: {tensorflow_seconds} s", flush=True)
    return {"seconds": seconds, "median_seconds": median(seconds), "goal_seconds": 3.0,
            "tensorflow_path_seconds": tensorflow_seconds, "tensorflow_path_median_seconds": median(tensorflow_seconds),
            "check": "both paths print the same label and probabilities (5 decimals) in every round",
            "command": "python -m tfllm.cli predict RUN 'a joyous, moving film' (article preset, 1 epoch); "
                       "TFLLM_NUMPY_CLASSIFICATION=0 for the TensorFlow path"}


def _probabilities(printed, digits=5):
    result = json.loads(printed.strip().splitlines()[-1])
    return result["label"], {k: round(v, digits) for k, v in result["probabilities"].items()}


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sections = ["steps", "classifier", "train", "generate", "predict", "ceiling"]
    parser.add_argument("--only", nargs="+", choices=sections, default=sections)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=600, help="timed train steps per side and round (steps section)")
    parser.add_argument("--classifier-steps", type=int, default=150)
    parser.add_argument("--train-steps", type=int, default=2000, help="steps of each whole training command")
    parser.add_argument("--generate-rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=900)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also time tfllm with mixed_bfloat16 (steps section)")
    parser.add_argument("--reference-threads", type=int, default=None,
                        help="PyTorch threads for the whole-command sections (default: the faster in the steps section)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "vs_torch.json"))
    args = parser.parse_args(argv)

    import torch  # noqa: F401  (fail early, with the install hint, when the bench extra is missing)

    work = tempfile.mkdtemp(prefix="bench-vs-torch-")
    result = {"command": "python benchmarks/bench_vs_torch.py " + " ".join(sys.argv[1:]), "cpu": cpu_info(),
              "versions": _versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "load_average_1min_at_start": round(os.getloadavg()[0], 2)}
    if os.path.exists(args.out):  # keep sections not rerun this time, marked as such
        previous = json.load(open(args.out))
        for name in sections:
            if name in previous and name not in args.only:
                result[name] = dict(previous[name], from_an_earlier_run=previous[name].get("from_an_earlier_run") or previous.get("started"))
    train = None
    for name in args.only:
        print(f"[{name}]", flush=True)
        if name == "steps":
            result["steps"] = section_steps(args, work)
        elif name == "classifier":
            result["classifier"] = section_classifier(args, work)
        elif name == "train":
            result["train"] = train = section_train(args, work)
        elif name == "generate":
            result["generate"] = section_generate(args, work, train)
        elif name == "predict":
            result["predict"] = section_predict(args, work)
        elif name == "ceiling":
            result["ceiling"] = section_ceiling(args, work)
        result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        save_results(args.out, result, shown=f"  {name} -> {args.out}")  # after every section
    print(json.dumps({k: v for k, v in result.items() if k in ("cpu",)} | {
        name: {k: v for k, v in result[name].items() if "ratio" in k or k in ("checks", "median_seconds", "step_matmul_gflop")}
        for name in sections if name in result}, indent=2))
    return 0


def _versions():
    from importlib.metadata import version

    return {name: version(name) for name in ("tensorflow", "keras", "keras-hub", "torch")}


if __name__ == "__main__":
    sys.exit(main())
