"""Causal LM -> `model.tflite` with prefill and decode-step signatures, and the device loop.

The file holds two signatures (batch 1, one context window of
`sequence_length` = S positions; cache shape
`[1, 2 * num_layers, S, num_heads, head_dim]`, rows 2l and 2l + 1 holding
layer l's keys and values: the Keras model's `[1, num_layers, 2, ...]` with
two axes merged, because TensorFlow's TFLite kernels take at most 5
dimensions):

- `prefill(token_ids: int32[1, S]) -> {logits: float32[1, S, V], cache}`:
  encodes a zero-padded window from position 0. Cache entries of padded
  positions are junk, but the causal mask hides them and the decode steps
  overwrite them before any real token can attend to them.
- `decode(token_id: int32[1, 1], cache, index: int32[]) -> {logits:
  float32[1, V], cache}`: one token at cache position `index`.

`TFLiteGenerator` runs these with `ai_edge_litert` exactly as
`CausalLM.generate_step` runs Keras: the last prompt token is fed through
`decode` first, and when the window is full the last `window_keep` tokens are
re-encoded with `prefill` (nanoGPT's crop for the default `window_keep`).

A KerasHub task fine-tuned from a preset (GPT-2, OPT, Llama, Gemma, ...) has
the same `call_with_cache(token_ids, cache, index)` and the same cache layout
(`[batch, layers, 2, positions, key/value heads, head_dim]`), so the same two
signatures (the cache reshaped to the export's 5-D one) serve it; its own call
still stacks a 6-D cache inside the graph, which `ai_edge_litert` runs and
TensorFlow's `tf.lite.Interpreter` refuses. It has no position past its
window, so its loop stops there, as `tfllm.generation.Generator` does.
"""

import json
import os
import tempfile
import types

import numpy as np

from tfllm import errors
from tfllm.errors import UserInputError, shell_path
from tfllm import runs
from tfllm.export.tflite_runtime import (convert_saved_model, load_interpreter, quantized_tensors, tokenizer_entry,
                                         tokenizing_rule)
from tfllm.export.versioning import write_out

MODEL_FILE = "model.tflite"
VOCABULARY_FILE = "vocabulary.json"  # the token of each id, beside it
PARITY_TOKENS = 100
# What `generate --tflite` says of another export's file: what it is and what to use instead.
OTHER_EXPORTS = {
    "translate": ("translation export", "translate with the run it came from (tfllm translate RUN_DIR TEXT), or "
                  "run its encode/decode signatures as its metadata.json's loop says"),
    "classify": ("classifier export", "classify with the run it came from (tfllm predict RUN_DIR TEXT), or run "
                 "its signature as its metadata.json says"),
}


def write_causal_lm_saved_model(model, directory):
    """A SavedModel with `prefill` and `decode` signatures for a `CausalLM`."""
    import keras
    import tensorflow as tf

    window, cache_shape = cache_layout(model)
    call = _layer_cache_call(model, cache_shape)

    def prefill(token_ids):
        cache = tf.zeros(cache_shape, model.compute_dtype)
        logits, cache = call(token_ids, cache, 0)
        return {"logits": tf.cast(logits, tf.float32), "cache": cache}

    def decode(token_id, cache, index):
        logits, cache = call(token_id, cache, index)
        return {"logits": tf.cast(logits[:, 0, :], tf.float32), "cache": cache}

    archive = keras.export.ExportArchive()
    # The backbone holds every weight (the LM head is its embedding). The task would bring its
    # preprocessor: a byte-pair tokenizer's lookup tables (GPT-2's), which TFLite cannot convert.
    archive.track(model.backbone)
    archive.add_endpoint("prefill", prefill, input_signature=[tf.TensorSpec([1, window], tf.int32, name="token_ids")])
    archive.add_endpoint(
        "decode",
        decode,
        input_signature=[
            tf.TensorSpec([1, 1], tf.int32, name="token_id"),
            tf.TensorSpec(cache_shape, model.compute_dtype, name="cache"),
            tf.TensorSpec([], tf.int32, name="index"),
        ],
    )
    write_out(archive, directory)


def _layer_cache_call(model, cache_shape):
    """`call(token_ids, cache, index) -> (logits, cache)` over the export's 5-D cache.

    The export's cache is `[1, 2 * layers, positions, heads, head_dim]` (rows
    2l and 2l + 1: layer l's keys and values), not the models' 6-D one:
    TensorFlow's TFLite kernels take at most 5 dimensions. tfllm's `CausalLM`
    runs its layers on their own slices, so no 6-D tensor is built; a KerasHub
    preset's `call_with_cache` stacks its layers itself, so its graph still
    holds 6-D ops (ai_edge_litert runs them, tf.lite.Interpreter does not).
    """
    from keras import ops

    if hasattr(model, "call_with_layer_caches"):
        def call(token_ids, cache, index):
            layer_caches = [cache[:, 2 * i: 2 * i + 2] for i in range(cache_shape[1] // 2)]
            logits, _, layer_caches = model.call_with_layer_caches(token_ids, layer_caches, index)
            return logits, ops.concatenate(layer_caches, axis=1)
        return call

    stacked = [cache_shape[0], cache_shape[1] // 2, 2, *cache_shape[2:]]

    def call(token_ids, cache, index):
        logits, _, cache = model.call_with_cache(token_ids, ops.reshape(cache, stacked), index)
        return logits, ops.reshape(cache, cache_shape)
    return call


def cache_layout(model):
    """`(window, the export's cache shape for batch 1)` of tfllm's `CausalLM` or a KerasHub causal LM.

    The model's own `_build_cache` allocates `[1, layers, 2, window, heads,
    head_dim]` (key/value heads: grouped-query models name them
    `num_key_value_heads`; `head_dim` named by Gemma, else hidden width /
    query heads); the export merges its layer and key/value axes into one of
    2 * layers rows (TFLite's kernels take at most 5 dimensions).
    """
    from tfllm.generation import context_window

    backbone = model.backbone
    window = context_window(model)
    query_heads = (getattr(backbone, "num_heads", None) or getattr(backbone, "num_query_heads", None)
                   or backbone.num_attention_heads)  # Falcon's name
    heads = getattr(backbone, "num_key_value_heads", None) or query_heads
    head_dim = getattr(backbone, "head_dim", None) or backbone.hidden_dim // query_heads
    return window, [1, 2 * backbone.num_layers, window, heads, head_dim]


class TFLiteGenerator:
    """Greedy decoding with the prefill/decode signatures of an exported `model.tflite`.

    Args:
        model_path: the `.tflite` file.
        window_keep: tokens re-encoded when the window is full (the run's
            `window_keep`; `None` means `sequence_length - 1`).
        num_threads: interpreter threads.
        slides: whether the model goes on past its window (tfllm's decoder);
            `False` (a KerasHub preset's) refuses a prompt and length that do not fit.
        banned_token_ids: ids never emitted (special tokens other than the end),
            as the Keras path bans them.
        start_ids: the ids a prompt's text ids follow (a KerasHub preset's start token; the export's
            `prompt_start_ids`), kept here for the text helpers; `generate_ids` takes ids that have them.
        document_ids: the ids an empty prompt stands for (the export's `document_start_ids`: the run's
            document separator, so that "" starts a new document as it does for the run); None for an export
            written before they were recorded.

    Example:
    >>> generator = TFLiteGenerator("savedmodels/shakespeare-tflite/1/model.tflite")
    >>> generator.generate_ids([20, 30, 31], max_new_tokens=100, stop_token_ids=(3,))
    """

    def __init__(self, model_path, window_keep=None, num_threads=None, slides=True, banned_token_ids=(), start_ids=(),
                 document_ids=None):

        interpreter = load_interpreter(model_path, num_threads=num_threads, quiet=True)
        self._prefill = interpreter.get_signature_runner("prefill")
        self._decode = interpreter.get_signature_runner("decode")
        self.window = int(self._prefill.get_input_details()["token_ids"]["shape"][1])
        self.vocabulary_size = int(self._decode.get_output_details()["logits"]["shape"][-1])
        self.keep = window_keep or self.window - 1
        self.slides = slides
        self.banned = np.asarray(sorted(banned_token_ids), np.int64)
        self.start_ids = [int(i) for i in start_ids]
        self.document_ids = None if document_ids is None else [int(i) for i in document_ids]

    def _encode(self, ids):
        padded = np.zeros((1, self.window), np.int32)
        padded[0, : len(ids)] = ids
        return self._prefill(token_ids=padded)["cache"]

    def generate_ids(self, prompt_ids, max_new_tokens, stop_token_ids):
        """The greedy continuation (new ids only) of `prompt_ids`, stopping after a stop token."""
        ids = [int(i) for i in prompt_ids]
        # TFLite's gather does not check indices: a negative or too-large id would read another row.
        bad = [i for i in ids if not 0 <= i < self.vocabulary_size]
        if not ids or bad:
            raise UserInputError(f"Prompt token ids must be 1 or more ids in [0, {self.vocabulary_size}); "
                                 f"got {bad[:3] if bad else 'none'}.")
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise UserInputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        if not self.slides and len(ids) + max_new_tokens > self.window:
            raise UserInputError(f"This model sees at most {self.window} tokens and the prompt has {len(ids)}; "
                                 f"ask for at most {max(self.window - len(ids), 0)} new tokens.")
        cache = self._encode(ids[: self.window])
        offset = 0  # buffer index of cache position 0
        new = []
        while len(new) < max_new_tokens:
            i = len(ids) - 1  # the token fed in now; its logits give the next one
            if i - offset >= self.window:
                offset = i - self.keep
                cache = self._encode(ids[offset:i])
            out = self._decode(token_id=np.array([[ids[i]]], np.int32), cache=cache, index=np.array(i - offset, np.int32))
            cache = out["cache"]
            logits = np.array(out["logits"][0])  # a copy: the banned ids are masked in it
            logits[self.banned] = -np.inf
            token = int(np.argmax(logits))
            if token in stop_token_ids:
                break
            ids.append(token)
            new.append(token)
        return new


def _export_hint(quoted=True):
    """How a generator's TFLite file is made, in the caller's words: a notebook read `tfllm export RUN --format tflite`."""
    command = "tfllm export RUN --format tflite"
    return errors.spelled(f"`{command}`" if quoted else command,
                          python="tfllm.export.tflite.export_tflite(RUN, NAME)")


def load_tflite_generator(model_path):
    """`(TFLiteGenerator, tokenizer)` for an exported file (or the export's folder), with the tokenizer shipped
    beside it."""
    from tfllm.tokenizers import load_tokenizer, special_token_ids

    if os.path.isdir(model_path):  # the folder `export` printed: its model.tflite
        if not os.path.isfile(os.path.join(model_path, MODEL_FILE)):
            from tfllm.export.versioning import versions

            # The model folder `export --format tflite` fills with versions 1/, 2/...: name the newest that has one.
            held = [v for v in versions(model_path, "") if os.path.isfile(os.path.join(model_path, str(v), MODEL_FILE))]
            if held:
                raise UserInputError(f"Folder {model_path!r} holds exported versions, not one {MODEL_FILE}; pass a "
                                     f"version folder, e.g. {os.path.join(model_path, str(held[-1]))}.")
            raise UserInputError(f"Folder {model_path!r} has no {MODEL_FILE}; pass an exported generator's "
                                 f"{MODEL_FILE} or its folder ({_export_hint(quoted=False)}).")
        model_path = os.path.join(model_path, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UserInputError(f"TFLite file {model_path!r} does not exist. Export one with {_export_hint()}.")
    folder = os.path.dirname(os.path.abspath(model_path))
    metadata_path = os.path.join(folder, "metadata.json")
    if not os.path.exists(metadata_path):
        raise UserInputError(f"{model_path!r} is not a tfllm text-generator export (no metadata.json saying so beside it).")
    metadata = runs.read_json(metadata_path)
    task = metadata.get("task")
    if task in OTHER_EXPORTS:  # the metadata is there; say what the file is and what runs it
        kind, instead = OTHER_EXPORTS[task]
        raise UserInputError(f"{model_path!r} is a tfllm {kind} (its metadata.json says task: {task}), not a text "
                             f"generator; {instead}.")
    if task != "generate":
        raise UserInputError(f"{model_path!r} is not a tfllm text-generator export (its metadata.json says task: "
                             f"{task!r}); pass the model.tflite of {_export_hint()} for a "
                             "--task generate run.")
    tokenizer = load_tokenizer(os.path.join(folder, "tokenizer"))
    # The ids the export's model never emits, as its Generator bans them (`never_emitted_ids`: the end id too
    # for a model that never learnt it); exports written before they were listed ban the special ids but the end.
    banned = metadata.get("special_token_ids", {}).get("never_emitted")
    if banned is None:
        banned = [i for i in special_token_ids(tokenizer) if i != int(tokenizer.end_token_id)]
    # Exports written before KerasHub presets could be exported all slide; before start ids, none had any.
    try:
        generator = TFLiteGenerator(model_path, window_keep=metadata.get("window_keep"),
                                    slides=metadata.get("slides", True), banned_token_ids=banned,
                                    start_ids=metadata.get("prompt_start_ids", ()),
                                    document_ids=metadata.get("document_start_ids"))
    except ValueError as e:  # a file cut short, or another file beside the export's metadata: a traceback
        raise UserInputError(f"{model_path!r} cannot be read as a TFLite model ({str(e).splitlines()[0][:120]}); "
                             f"pass the export's {MODEL_FILE}, or export it again (tfllm export RUN --format "
                             "tflite).") from None
    return generator, tokenizer


def _text_codec(tokenizer, start_ids=(), document_ids=None):
    """`(encode, decode)` of `tfllm.generation.Generator` for a tokenizer alone.

    The TFLite path has no Keras model to build a `Generator` from, but must
    check prompts and clean up text exactly as the Keras path does; those two
    methods only touch `self.tokenizer`. An empty prompt is the export's `document_ids` (the run's document
    separator), as `Generator.generate` puts the separator's text in its place.
    """
    from tfllm.generation import Generator

    from tfllm.tokenizers import special_token_ids, unknown_token_id

    special = special_token_ids(tokenizer)
    holder = types.SimpleNamespace(tokenizer=tokenizer, unk_id=unknown_token_id(tokenizer),  # as Generator's
                                   special_ids=special, start_ids=list(start_ids))

    def encode(prompt):
        if prompt == "" and not start_ids and document_ids:
            return np.asarray(document_ids, "int32")
        if prompt == "" and not start_ids and document_ids is None:  # Generator's message would be false here
            raise UserInputError("Empty prompt: this export's metadata.json has no document_start_ids (it was "
                                 "written before they were recorded); export the run again, or give at least one "
                                 "character of text to continue.")
        return Generator.encode(holder, prompt)

    return encode, (lambda ids, prompt=None: Generator.decode(holder, ids, prompt))


def generate_text(model_path, prompt, max_new_tokens=200):
    """Greedy continuation of `prompt` with an exported TFLite generator (what `tfllm generate --tflite` runs):
    the completion, as `Generator.generate` returns it (prompt + completion is the text)."""
    from tfllm.config import MAX_NEW_TOKENS

    if not isinstance(max_new_tokens, int) or not 0 < max_new_tokens <= MAX_NEW_TOKENS:
        raise UserInputError(f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}.")
    generator, tokenizer = load_tflite_generator(model_path)
    encode, decode = _text_codec(tokenizer, generator.start_ids, generator.document_ids)
    ids = encode(prompt)
    if prompt == "" and generator.document_ids and not generator.start_ids:
        prompt = decode(ids)  # the separator's text, which the run's completion follows
    return decode(generator.generate_ids(ids, max_new_tokens, (int(tokenizer.end_token_id),)), prompt)


def greedy_agreement(expected, got):
    """Exact match, matching prefix length and position-wise agreement of two greedy continuations."""
    same = [a == b for a, b in zip(expected, got)]
    return {
        "greedy_exact_match": list(expected) == list(got),
        "greedy_matching_prefix_tokens": same.index(False) if False in same else len(same),
        "greedy_agreement_rate": sum(same) / max(len(expected), len(got), 1),
    }


def export_causal_lm_files(run_dir, config, directory, quantize):
    """Writes `model.tflite`, the tokenizer, `metadata.json`; returns the parity dict (greedy agreement)."""
    import tensorflow as tf

    from tfllm.datasets.text import load_run_text
    from tfllm.generation import load_generator, sample_prompt
    from tfllm.models import causal_lm  # noqa: F401  (registers CausalLM for load_model)
    from tfllm.config import CJK_CHARACTERS, COMPLETION_SPACE
    from tfllm.tokenizers import CharacterTokenizer, detokenizes_with_spaces, unknown_token_entry

    # No XLA: the reference is the plain TF graph of the same computation.
    keras_generator = load_generator(run_dir, jit_compile=False, dtype="float32")
    model = keras_generator.model
    with tempfile.TemporaryDirectory() as saved_model_dir:
        try:
            write_causal_lm_saved_model(model, saved_model_dir)
        except (AttributeError, TypeError, ValueError, tf.errors.OperatorNotAllowedInGraphError) as e:
            if type(model).__module__.startswith("tfllm."):
                raise
            # A KerasHub model whose cache is not one stacked tensor (Gemma3 keeps per-layer pairs).
            raise UserInputError(
                f"TFLite export does not know the key/value cache of KerasHub's {type(model).__name__} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}). Export it as a "
                f"SavedModel (tfllm export {shell_path(run_dir)} --name NAME) for TF Serving.") from None
        content = convert_saved_model(saved_model_dir, ["prefill", "decode"], quantize)
        count = quantized_tensors(content, quantize, MODEL_FILE)
    path = os.path.join(directory, MODEL_FILE)
    with open(path, "wb") as f:
        f.write(content)
    keras_generator.tokenizer.save_to_preset(os.path.join(directory, "tokenizer"))
    # The token of each id, for an app that is not Python (the preset's files are KerasHub's format).
    runs.write_json(os.path.join(directory, VOCABULARY_FILE), list(keras_generator.tokenizer.get_vocabulary()))
    window, cache_shape = cache_layout(model)
    keep = getattr(model, "window_keep", None) or window - 1  # what TFLiteGenerator re-encodes
    rule = tokenizing_rule(keras_generator.tokenizer, task="generate")
    if rule and detokenizes_with_spaces(keras_generator.tokenizer):
        rule.pop("detokenize", None)
    # What an empty prompt stands for: the run's document separator (`document_start`), as its ids, so that ""
    # starts a new document in an app and in `generate --tflite` as it does for the run (it was refused, "no
    # document separator"). None where a preset's start token begins a text; [] where the separator has no ids
    # (a vocabulary without it, or WordPiece, which drops line breaks): the run refuses "" there too.
    document_ids = []
    if keras_generator.document_start and not keras_generator.start_ids:
        try:
            document_ids = keras_generator.encode(keras_generator.document_start).tolist()
        except UserInputError:
            pass
    vocabulary = model.backbone.vocabulary_size
    cache = (f"float32{cache_shape}: [1, 2 * layers, positions, heads, head_dim], rows 2l and 2l + 1 layer l's "
             "keys and values; pass each step's output cache to the next step as it is")
    runs.write_json(
        os.path.join(directory, "metadata.json"),
        {
            "task": "generate",
            "quantize": quantize,
            **({"quantized_tensors": {MODEL_FILE: count}} if quantize != "none" else {}),
            "sequence_length": window,
            # What the loop re-encodes when the window is full (the model's None: all but one position).
            "window_keep": (getattr(model, "window_keep", None) or window - 1) if keras_generator.slides else None,
            "slides": keras_generator.slides,
            "vocabulary_size": vocabulary,
            "special_token_ids": {"end": keras_generator.end_id, **unknown_token_entry(keras_generator.tokenizer),
                                  "all": keras_generator.special_ids,
                                  # The loop skips these; the end id is among them where the model never
                                  # learnt it (trained on running text), so the loop never stops early.
                                  "never_emitted": keras_generator.banned_ids},
            # TFLite checks none of these: an id out of range reads out of bounds or fails.
            "input_ranges": f"token_ids, token_id: 0 <= id < {vocabulary}; index: 0 <= index < {window}",
            "prompt_start_ids": keras_generator.start_ids,  # put before every prompt's ids (a preset's start token)
            "document_start_ids": document_ids,
            # tfllm generate refuses these prompts; the model reads no text in them.
            "prompt_rules": ("an empty prompt starts a new document: its ids are document_start_ids (the ids of "
                             f"the run's document separator, {json.dumps(keras_generator.document_start)}), as "
                             "tfllm generate \"\" does; any other prompt with no ids is invalid: refuse it"
                             if document_ids else
                             "an empty prompt starts a new text: its ids are prompt_start_ids alone"
                             if keras_generator.start_ids else
                             "an empty prompt (or one with no ids) is invalid: refuse it")
                            + "; a prompt holding the unknown id (text the tokenizer has no token for) is refused "
                              "by tfllm generate: refuse it too",
            # The translator had a tokenizing section and the character generator none: which id for which
            # character, and what to do with one the vocabulary lacks. Other tokenizers (a GPT-2 preset's had
            # none) take the shared rule, a WordPiece one without its detokenize: `detokenize` below has it.
            **({"tokenizing": {"kind": "char",
                               "tokenize": f"one id per Unicode character (code point), its index in {VOCABULARY_FILE}; "
                                           "case is kept, nothing is normalized; a character not in it has no id: "
                                           "refuse the prompt naming it, as tfllm generate does",
                               "detokenize": "concatenate the tokens"}}
               if isinstance(keras_generator.tokenizer, CharacterTokenizer) else
               {"tokenizing": rule} if rule else {}),
            "signatures": {
                "prefill": {
                    "inputs": {"token_ids": f"int32[1, {window}], zero-padded"},
                    "outputs": {"logits": f"float32[1, {window}, {vocabulary}]", "cache": cache},
                },
                "decode": {
                    "inputs": {"token_id": "int32[1, 1]", "cache": cache, "index": "int32[], cache position"},
                    "outputs": {"logits": f"float32[1, {vocabulary}]", "cache": cache},
                },
            },
            "tokenizer": tokenizer_entry(directory),
            "token_ids": f"{VOCABULARY_FILE}: the token of each id (id = index)"
                         + ("; a character tokenizer's tokens are single characters" if isinstance(
                             keras_generator.tokenizer, CharacterTokenizer) else ""),
            **({"detokenize": "the ids after the prompt's, special ids dropped: the tokens joined with spaces, a "
                              f"{keras_generator.tokenizer.suffix_indicator!r} piece glued to the one before it "
                              "without its prefix; then remove each space between two CJK characters "
                              + CJK_CHARACTERS + "; then, as the completion follows the prompt, "
                              + COMPLETION_SPACE + "; as tfllm generate --tflite does"}
               if detokenizes_with_spaces(keras_generator.tokenizer) else {}),
            "loop": "greedy, as tfllm generate --tflite runs it: prefill(the prompt's ids, zero-padded); then, n = "
                    "the number of ids so far, decode(token_id = the last id, cache, index = n - 1) gives the next "
                    "id's logits and the cache for the next step: the next id is the argmax of the logits over the "
                    "ids not in special_token_ids.never_emitted. " + (
                        "The end id is among never_emitted (this model never learnt to end a text), so it is "
                        "never chosen: the loop runs until the number of new ids asked for. "
                        if keras_generator.end_id in keras_generator.banned_ids else
                        f"Stop when the next id is the end id ({keras_generator.end_id}), else at the number of "
                        "new ids asked for. ") + (
                        f"When index would reach {window}, prefill the {keep} ids before the last one and decode "
                        f"the last one at index = their number ({keep}). A prompt longer than {window} ids is cut "
                        f"so: only its last {keep + 1} ids are read (prefill the {keep} before its last, decode "
                        f"its last at index {keep})."
                        if keras_generator.slides
                        else f"The window ends at {window} ids: stop there; a prompt must have at most {window - 1} "
                             "ids, leaving room for a new one."),
        },
    )

    # Parity: greedy continuation of the start of the validation text, read as training read it (its
    # --text-column, --max-rows, a pretraining run's documents: the data file alone said "has no text column
    # 'text'" of a CSV trained with --text-column), or of a stretch the vocabulary encodes (as the samples).
    train_text, val_text = load_run_text(runs.read_train_config(run_dir))
    start = val_text.find("\n") + 1  # a prompt that starts at a line, not mid-word
    prompt = sample_prompt(keras_generator.tokenizer, max(1, window // 4), val_text[start:], train_text)
    if prompt is None:  # the file is still good; only the check has nothing to run on
        return {"quantize": quantize, MODEL_FILE: {"bytes": os.path.getsize(path)}, "checked": False,
                "note": f"parity not checked: no stretch of the run's training text that its vocabulary encodes "
                        f"without the unknown token was found, so {MODEL_FILE} was not compared with Keras"}
    prompt_ids = keras_generator.encode(prompt).tolist()
    # A model that does not slide (a KerasHub preset's) decodes only to the end of its window.
    tokens = PARITY_TOKENS if keras_generator.slides else min(PARITY_TOKENS, window - len(prompt_ids))
    expected = keras_generator.greedy_ids(prompt_ids, tokens)
    got = load_tflite_generator(path)[0].generate_ids(prompt_ids, tokens, (keras_generator.end_id,))
    return {
        "quantize": quantize,
        MODEL_FILE: {"bytes": os.path.getsize(path)},
        "prompt": prompt,
        "greedy_tokens": tokens,
        **greedy_agreement(expected, got),
    }
