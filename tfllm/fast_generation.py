"""Text generation in NumPy, without TensorFlow: the first command starts in a fraction of a second.

`tfllm generate RUN "prompt"` from a cold start spent most of its time on
things a 0.8M-parameter character model does not need: importing TensorFlow,
Keras and KerasHub (about 3 s here), then tracing and XLA-compiling the
decoding loop (about 4 s), all to produce a few hundred characters that take
0.1 s once compiled. This module decodes the same way with NumPy alone: it
reads the run's backbone config, tokenizer vocabulary and weights file
(`h5py`), and runs the cached, window-sliding loop of
`tfllm.models.causal_lm.CausalLM.generate_step` with the same sampler as
`tfllm.generation.OptionSampler` (same counter-based noise, same top-k /
top-p cuts) and the same streaming chunks as `Generator.generate`, so a
seeded command prints the same text either way (up to float round-off on
near-ties). Training uses it for the TensorBoard text samples too.

It serves what it fully supports: tfllm's bias-free `CausalLMBackbone`
(`FusedDecoderBlock`s, tied embeddings, GELU) with a character tokenizer,
float32 weights, and the greedy / top-k / top-p / random samplers.
`load(run_dir)` returns None for anything else (beam search, subword
tokenizers, KerasHub presets, ...), and callers use the TensorFlow path.
A character tokenizer's text keeps its own spaces, so WordPiece's spacing rule
(`tfllm.config.join_cjk`, applied by `Generator.decode`) has nothing to do here.
"""

import contextlib
import glob
import json
import math
import os

import numpy as np

from tfllm.config import GREEDY_BELOW, truncate_at_stops

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")  # tfllm.tokenizers' id layout
END_ID = 3
STREAM_CHUNK = 64  # as tfllm.generation.STREAM_CHUNK: new tokens per chunk when streaming


@contextlib.contextmanager
def single_threaded_blas():
    """NumPy's OpenBLAS on one thread while decoding: one token's matrices are far too small to split,
    and waking a second thread per product made decoding 7x slower on a busy 2-core machine.
    (What threadpoolctl does, for NumPy's bundled OpenBLAS only; elsewhere a no-op.)"""
    library = None
    try:
        import ctypes

        paths = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "libscipy_openblas*.so*"))
        if paths:
            library = ctypes.CDLL(paths[0])
            get, put = library.scipy_openblas_get_num_threads64_, library.scipy_openblas_set_num_threads64_
            previous = get()
            put(1)
    except (OSError, AttributeError):
        library = None
    try:
        yield
    finally:
        if library is not None:
            put(previous)


def _gelu(x):
    """Exact GELU (Keras' default, approximate=False): 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + _erf(x / np.float32(math.sqrt(2.0))))


def _erf(x):
    """erf without SciPy: Numerical Recipes' erfc fit (fractional error < 1.2e-7), evaluated in float64."""
    x64 = x.astype(np.float64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x64 >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype)


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def uniform_noise(seed, step, vocabulary_size):
    """`tfllm.generation._uniform` in NumPy: murmur3's finaliser over (seed, step, token), uniforms in (0, 1)."""
    with np.errstate(over="ignore"):
        ids = np.arange(vocabulary_size, dtype=np.uint32)
        x = (np.uint32(seed % 2**32) * np.uint32(0x9E3779B1)) ^ (np.uint32(step % 2**32) * np.uint32(0x85EBCA77)) ^ (
            ids * np.uint32(0xC2B2AE3D))
        x = x.astype(np.uint32)
        for shift, mul in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
            x = x ^ (x >> np.uint32(shift))
            if mul is not None:
                x = (x * np.uint32(mul)).astype(np.uint32)
    # Capped below 1 as `_uniform` is (its comment says why).
    return np.minimum(((x >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) / np.float32(2**24),
                      np.float32(1.0 - 2.0**-24))


def next_token(logits, index, temperature, top_k, top_p, seed, banned):
    """One row of `OptionSampler.compute_probabilities` + `get_next_token` (same noise, same cuts)."""
    greedy = temperature < GREEDY_BELOW
    t = np.float32(1.0 if greedy else temperature)
    z = logits.astype(np.float32) / t
    # Banned after scaling, to -inf: a finite -1e9 divided by a huge temperature (1e30) was as likely as any
    # token, and a banned id ended the text at once.
    z[banned] = -np.inf
    z = z - z.max()
    probabilities = np.exp(z)
    probabilities /= probabilities.sum()
    if greedy:
        return int(np.argmax(probabilities))
    vocabulary_size = len(probabilities)
    order = np.argsort(-probabilities, kind="stable")  # tf.math.top_k: descending, ties by lower index
    sorted_probabilities = probabilities[order]
    k = top_k if 0 < top_k < vocabulary_size else vocabulary_size
    before = np.concatenate([[0.0], np.cumsum(sorted_probabilities, dtype=np.float32)[:-1]]).astype(np.float32)
    keep = (np.arange(vocabulary_size) < k) & (before < np.float32(top_p))
    gumbel = -np.log(-np.log(uniform_noise(seed, index, vocabulary_size)))
    scores = np.where(keep, np.log(sorted_probabilities + np.float32(1e-30)) + gumbel, -np.inf)
    return int(order[int(np.argmax(scores))])


class NumpyCausalLM:
    """The forward pass of a bias-free `CausalLMBackbone` with a key/value cache, in NumPy.

    Args:
        weights: dict with `token_embedding` [V, C], `position_embedding` [L, C],
            `final_norm` (gamma, beta) and `blocks`: a list of dicts with
            `attention_norm`, `feedforward_norm` (gamma, beta), `qkv` [C, 3C],
            `attention_output` [C, C], `intermediate` [C, F], `output` [F, C].
        num_heads, sequence_length, layer_norm_epsilon, window_keep: as the Keras model's.
    """

    def __init__(self, weights, num_heads, sequence_length, layer_norm_epsilon=1e-5, window_keep=None):
        self.w = weights
        self.num_heads = num_heads
        self.sequence_length = sequence_length
        self.epsilon = layer_norm_epsilon
        self.window_keep = window_keep
        self.vocabulary_size, self.hidden_dim = weights["token_embedding"].shape

    @classmethod
    def from_keras(cls, model):
        """From a live `tfllm.models.causal_lm.CausalLM` (its current weights); None if it is not the bias-free kind."""
        backbone = getattr(model, "backbone", None)
        if not _supported_config({k: getattr(backbone, k, None) for k in _REQUIRED}):
            return None
        # Under a mixed policy the weights are float32 but the model computes in bfloat16/float16, and
        # the float32 NumPy pass would sample other text than the model does.
        if any(v.dtype != "float32" for v in backbone.weights) or backbone.dtype_policy.compute_dtype != "float32":
            return None

        def norm(layer):
            return layer.gamma.numpy(), layer.beta.numpy()

        blocks = [{"attention_norm": norm(b.attention_norm), "feedforward_norm": norm(b.feedforward_norm),
                   "qkv": b.query_key_value.kernel.numpy(), "attention_output": b.attention_output.kernel.numpy(),
                   "intermediate": b.feedforward_intermediate.kernel.numpy(), "output": b.feedforward_output.kernel.numpy()}
                  for b in backbone.transformer_layers]
        weights = {"token_embedding": backbone.token_embedding.embeddings.numpy(),
                   "position_embedding": backbone.position_embedding.position_embeddings.numpy(),
                   "final_norm": norm(backbone.layer_norm), "blocks": blocks}
        return cls(weights, backbone.num_heads, backbone.sequence_length, backbone.layer_norm_epsilon,
                   getattr(model, "window_keep", None))

    # --- forward ---------------------------------------------------------------------------

    def forward(self, token_ids, cache, start):
        """Logits of `token_ids` (1-D) placed at cache positions `start...`; writes their keys/values into `cache`."""
        w, heads = self.w, self.num_heads
        n, c = len(token_ids), self.hidden_dim
        d = c // heads
        x = w["token_embedding"][token_ids] + w["position_embedding"][start: start + n]
        positions = np.arange(start, start + n)
        for layer, block in enumerate(w["blocks"]):
            qkv = _layer_norm(x, *block["attention_norm"], self.epsilon) @ block["qkv"]
            q, k, v = (qkv[:, i * c: (i + 1) * c].reshape(n, heads, d) for i in range(3))
            cache[layer, 0, start: start + n] = k
            cache[layer, 1, start: start + n] = v
            keys, values = cache[layer, 0, : start + n], cache[layer, 1, : start + n]
            scores = np.einsum("qhd,khd->hqk", q, keys) * np.float32(d ** -0.5)
            scores = np.where(np.arange(start + n)[None, None, :] <= positions[None, :, None], scores, np.float32(-1e9))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = np.einsum("hqk,khd->qhd", scores, values).reshape(n, c)
            x = x + attended @ block["attention_output"]
            y = _gelu(_layer_norm(x, *block["feedforward_norm"], self.epsilon) @ block["intermediate"])
            x = x + y @ block["output"]
        x = _layer_norm(x, *w["final_norm"], self.epsilon)
        return x @ w["token_embedding"].T

    def new_cache(self):
        c = self.hidden_dim
        return np.zeros((len(self.w["blocks"]), 2, self.sequence_length, self.num_heads, c // self.num_heads), np.float32)

    def decode(self, buffer, length, options, stop_ids, banned, position_offset=0):
        """`CausalLM.generate_step` for one row: `buffer[:length]` is the prompt; fills the rest in place.
        The noise of buffer position i is drawn at `i + position_offset` (`OptionSampler`'s).

        Same loop as KerasHub's sampler over tfllm's sliding window: the token at
        buffer position `i` goes to cache position `i - offset`; when the cache is
        full, the last `window_keep` tokens are re-encoded from position 0.
        """
        width, window = len(buffer), self.sequence_length
        keep = self.window_keep or window - 1
        cache_length = min(width, window)
        may_slide = width > window
        cache = self.new_cache()
        offset = 0
        if length > 1 and length - 1 < cache_length:
            self.forward(buffer[: length - 1], cache, 0)
        for index in range(length, width):
            i = index - 1
            if may_slide and i - offset >= cache_length:
                offset = i - keep
                cache = self.new_cache()
                self.forward(buffer[offset:i], cache, 0)
            logits = self.forward(buffer[i: i + 1], cache, i - offset)[-1]
            token = next_token(logits, index + position_offset, *options, banned=banned)
            buffer[index] = token
            if token in stop_ids:
                break
        return buffer


_REQUIRED = ("use_bias", "tie_weights", "activation", "dropout", "num_heads", "sequence_length", "layer_norm_epsilon")


def _supported_config(config):
    return (config.get("use_bias") is False and config.get("tie_weights") is True
            and config.get("activation") == "gelu" and config.get("num_heads"))


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finished_run_configs(run_dir, task):
    """`(task.json, tokenizer.json)` of a finished, current-format run of `task`, else None
    (the TensorFlow path then says what is wrong)."""
    from tfllm import runs  # no TensorFlow there

    if runs.is_old_format(run_dir) or not runs.is_finished(run_dir) or runs.read_config(run_dir).get("task") != task:
        return None
    return _read_json(os.path.join(run_dir, "task.json")), _read_json(os.path.join(run_dir, "tokenizer.json"))


@contextlib.contextmanager
def named_vars(path):
    """Reads a Keras `.weights.h5` file by layer name: yields `by_name(layer, parts=None)`.

    `by_name(layer)` is the float32 arrays of the one layer of that name (None if there is
    not exactly one); with `parts`, a dict of those sub-layers' arrays, by path under the
    layer (None if one is missing).
    """
    import h5py

    with h5py.File(path, "r") as f:
        groups = {}

        def visit(name, group):
            if hasattr(group, "attrs") and name.endswith("/vars") and "name" in group.attrs:
                groups.setdefault(group.attrs["name"], []).append(group)

        f["layers"].visititems(visit)

        def arrays(group):
            return [np.asarray(group[str(i)], np.float32) for i in range(len(group))]

        def by_name(layer, parts=None):
            found = groups.get(layer, [])
            if len(found) != 1:
                return None
            if parts is None:
                return arrays(found[0])
            sub = {part: found[0].parent.get(f"{part}/vars") for part in parts}
            return None if any(g is None for g in sub.values()) else {part: arrays(g) for part, g in sub.items()}

        yield by_name


def _read_weights(path, num_layers):
    """The backbone's arrays from a Keras `.weights.h5` file, found by layer name; None if any is missing."""
    parts = ("attention_norm", "feedforward_norm", "query_key_value", "attention_output",
             "feedforward_intermediate", "feedforward_output")
    with named_vars(path) as by_name:
        token, position, final = by_name("token_embedding"), by_name("position_embedding"), by_name("layer_norm")
        blocks = []
        for i in range(num_layers):
            block = by_name(f"transformer_layer_{i}", parts)
            if block is None:
                return None
            blocks.append({"attention_norm": tuple(block["attention_norm"]), "feedforward_norm": tuple(block["feedforward_norm"]),
                           "qkv": block["query_key_value"][0], "attention_output": block["attention_output"][0],
                           "intermediate": block["feedforward_intermediate"][0], "output": block["feedforward_output"][0]})
    if not (token and position and final and len(token) == 1 and len(final) == 2):
        return None
    return {"token_embedding": token[0], "position_embedding": position[0], "final_norm": tuple(final), "blocks": blocks}


class FastGenerator:
    """A NumPy model and a character vocabulary, streaming text as `tfllm.generation.Generator` does."""

    def __init__(self, model, characters, end_token_trained=False):
        self.model = model
        self.characters = list(characters)
        self.stoi = {ch: i + len(SPECIAL_TOKENS) for i, ch in enumerate(self.characters)}
        # As `tfllm.generation.never_emitted_ids`: the special ids but the end id, and the end id too where the
        # model's training targets never held it (`CausalLM.end_token_trained`, False in runs saved before it).
        self.banned = np.array([i for i in range(len(SPECIAL_TOKENS)) if i != END_ID or not end_token_trained])
        self.special = set(range(len(SPECIAL_TOKENS)))

    def encode(self, text):
        """Token ids, or None when a character is unknown (the TensorFlow path then explains the error)."""
        ids = [self.stoi.get(ch) for ch in text]
        return None if not ids or None in ids else np.asarray(ids, np.int32)

    def decode(self, ids):
        return "".join(self.characters[i - len(SPECIAL_TOKENS)] for i in ids
                       if i not in self.special and 0 <= i - len(SPECIAL_TOKENS) < len(self.characters))

    def single_token_stops(self, stops):
        return [self.stoi[s] for s in stops if len(s) == 1 and s in self.stoi]

    def generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, stops=(), stream_callback=None):
        """New text after `prompt`, as `Generator.generate` makes it for one prompt.

        Without `stream_callback`: one decoding call over prompt + new tokens.
        With it: `Generator`'s streaming chunks (the last `sequence_length`
        tokens as context, `STREAM_CHUNK` new ones per chunk, noise drawn at each token's place in the text).
        """
        with single_threaded_blas():
            return self._generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stops, stream_callback)

    def _generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, stops, stream_callback):
        ids = self.encode(prompt)
        stop_ids = {END_ID, *self.single_token_stops(stops)}
        options = (temperature, top_k, top_p, int(seed))
        if stream_callback is None:
            buffer = np.zeros(len(ids) + max_new_tokens, np.int32)
            buffer[: len(ids)] = ids
            out = self.model.decode(buffer, len(ids), options, stop_ids, self.banned)[len(ids):]
            hits = np.flatnonzero(np.isin(out, list(stop_ids)))
            return truncate_at_stops(self.decode(out[: hits[0]] if len(hits) else out), stops)
        window = self.model.sequence_length
        width = window + STREAM_CHUNK
        new, printed = [], ""
        while True:
            context = np.concatenate([ids, np.asarray(new, np.int32)])[-window:]
            buffer = np.zeros(width, np.int32)
            buffer[: len(context)] = context
            out = self.model.decode(buffer, len(context), options, stop_ids, self.banned,
                                    position_offset=len(ids) + len(new) - len(context))
            chunk = out[len(context):]
            hits = np.flatnonzero(np.isin(chunk, list(stop_ids)))
            if len(hits):
                chunk = chunk[: hits[0]]
            hit_stop = len(chunk) < width - len(context)
            new += chunk.tolist()[: max_new_tokens - len(new)]
            full = self.decode(new)
            text = truncate_at_stops(full, stops)
            if text[len(printed):] and stream_callback is not None:
                stream_callback(0, text[len(printed):])
            printed = text
            if len(new) >= max_new_tokens or hit_stop or text != full:
                return printed


def usable(prompt, max_new_tokens, sampler, temperature, top_k, top_p, stops, max_allowed):
    """True when the options are ones `Generator` accepts and this module serves (else the TensorFlow
    path runs, and explains any error)."""
    return (isinstance(prompt, str) and bool(prompt) and isinstance(max_new_tokens, int)
            and 0 < max_new_tokens <= max_allowed and sampler in ("greedy", "top_k", "top_p", "random")
            and temperature is not None and temperature >= 0 and (sampler != "top_k" or (top_k or 0) >= 1)
            and (sampler != "top_p" or (top_p is not None and 0 < top_p <= 1)) and all(stops))


def sampler_options(sampler, temperature, top_k, top_p):
    """(temperature, top_k, top_p) as `Generator.generate` turns a sampler and its settings into options."""
    greedy = sampler == "greedy" or temperature == 0
    return (0.0 if greedy else float(temperature), int(top_k) if sampler == "top_k" else 0,
            float(top_p) if sampler == "top_p" else 1.0)


def from_keras(model, tokenizer):
    """A `FastGenerator` over a live Keras model and its tokenizer (their current weights), or None."""
    if type(tokenizer).__name__ != "CharacterTokenizer" or not getattr(tokenizer, "vocabulary", None):
        return None
    try:
        numpy_model = NumpyCausalLM.from_keras(model)
    except (AttributeError, TypeError, ValueError):
        return None
    characters = [c for c in tokenizer.vocabulary if c not in SPECIAL_TOKENS]
    if numpy_model is None or numpy_model.vocabulary_size != len(characters) + len(SPECIAL_TOKENS):
        return None
    return FastGenerator(numpy_model, characters, getattr(model, "end_token_trained", False))


def load(run_dir):
    """A `FastGenerator` for a finished run, or None where this module does not serve it (see the module doc)."""
    try:
        configs = finished_run_configs(run_dir, "generate")
        if configs is None:
            return None
        task, tokenizer = configs
        backbone = task["config"]["backbone"]
        config = backbone["config"]
        if (backbone.get("class_name") != "CausalLMBackbone" or task.get("class_name") != "CausalLM"
                or tokenizer.get("class_name") != "CharacterTokenizer" or not _supported_config(config)
                or (config.get("dtype") or {}).get("config", {}).get("name", "float32") != "float32"):
            return None
        characters = [c for c in tokenizer["config"]["vocabulary"] if c not in SPECIAL_TOKENS]
        if config["vocabulary_size"] != len(characters) + len(SPECIAL_TOKENS):
            return None
        weights = _read_weights(os.path.join(run_dir, "model.weights.h5"), config["num_layers"])
        if weights is None or weights["token_embedding"].shape != (config["vocabulary_size"], config["hidden_dim"]):
            return None
        model = NumpyCausalLM(weights, config["num_heads"], config["sequence_length"],
                              config.get("layer_norm_epsilon", 1e-5), task["config"].get("window_keep"))
        return FastGenerator(model, characters, bool(task["config"].get("end_token_trained", False)))
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return None
