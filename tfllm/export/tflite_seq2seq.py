"""Translation run -> `model.tflite` with an encoder signature and a cached decoder-step signature.

Batch 1; E = encoder_sequence_length, D = decoder_sequence_length, caches of
shape `[1, 2 * num_decoder_layers, length, num_heads, head_dim]` (rows 2l and
2l + 1: decoder block l's keys and values; the Keras model's `[1, layers, 2,
...]` with two axes merged, because TensorFlow's TFLite kernels take at most 5
dimensions, so the export runs the blocks on their own slices and never builds
a 6-D tensor):

- `encode(encoder_token_ids: int32[1, E], encoder_padding_mask: int32[1, E])
  -> {encoder_output: float32[1, E, H], cross_cache: [.., E, ..]}`: the source,
  encoded once, and every decoder block's cross-attention keys/values.
- `decode(token_id: int32[1, 1], index: int32[], self_cache: [.., D, ..],
  cross_cache, encoder_output, encoder_padding_mask) -> {logits: float32[1, V],
  self_cache}`: one decoder position against the caches.

`TFLiteTranslator` runs them with `ai_edge_litert` as `Seq2SeqLM.generate_step`
runs Keras (greedy: `[BOS]` at position 0, one step per token, stop at
`[EOS]`). The parity report compares its ids with the Keras model's greedy ids
on the run's test sources. Beside the file, `vocabulary.json` (the token of
each id) and `metadata.json`, whose `loop` (and `tokenizing`, for tfllm's
character and WordPiece tokenizers) is enough to write the loop in an app.
"""

import os
import tempfile

import numpy as np

from tfllm import runs
from tfllm.errors import UserInputError
from tfllm.export.tflite_runtime import (VOCABULARY_FILE, convert_saved_model, load_interpreter, quantized_tensors,
                                          require_tflite, tokenizer_entry, tokenizing_rule, vocabulary_sources)
from tfllm.export.versioning import atomic_version_dir, write_out, write_out_dir

MODEL_FILE = "model.tflite"
PARITY_SOURCES = 20


def _cache_shape(backbone, length):
    return [1, 2 * backbone.num_decoder_layers, length, backbone.num_heads, backbone.hidden_dim // backbone.num_heads]


def _split(cache):
    """The export's 5-D cache as the per-block `[1, 2, length, heads, head_dim]` caches the blocks read."""
    return [cache[:, 2 * i: 2 * i + 2] for i in range(cache.shape[1] // 2)]


def write_seq2seq_saved_model(model, directory):
    """A SavedModel with `encode` and `decode` signatures for a `Seq2SeqLM`."""
    import keras
    import tensorflow as tf

    backbone = model.backbone
    encoder_length, decoder_length = backbone.encoder_sequence_length, backbone.decoder_sequence_length
    self_shape, cross_shape = _cache_shape(backbone, decoder_length), _cache_shape(backbone, encoder_length)

    def encode(encoder_token_ids, encoder_padding_mask):
        encoder_output = model.call_encoder(encoder_token_ids, encoder_padding_mask)
        start = tf.zeros([1, 1], tf.int32)
        _, _, _, cross_caches = model.call_decoder_with_layer_caches(
            encoder_output, encoder_padding_mask, start, _split(tf.zeros(self_shape, model.compute_dtype)), 0,
            _split(tf.zeros(cross_shape, model.compute_dtype)), 0)
        return {"encoder_output": encoder_output, "cross_cache": tf.concat(cross_caches, axis=1)}

    def decode(token_id, index, self_cache, cross_cache, encoder_output, encoder_padding_mask):
        logits, _, self_caches, _ = model.call_decoder_with_layer_caches(
            encoder_output, encoder_padding_mask, token_id, _split(self_cache), index, _split(cross_cache), None)
        return {"logits": tf.cast(logits[:, 0, :], tf.float32), "self_cache": tf.concat(self_caches, axis=1)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("encode", encode, input_signature=[
        tf.TensorSpec([1, encoder_length], tf.int32, name="encoder_token_ids"),
        tf.TensorSpec([1, encoder_length], tf.int32, name="encoder_padding_mask"),
    ])
    archive.add_endpoint("decode", decode, input_signature=[
        tf.TensorSpec([1, 1], tf.int32, name="token_id"),
        tf.TensorSpec([], tf.int32, name="index"),
        tf.TensorSpec(self_shape, model.compute_dtype, name="self_cache"),
        tf.TensorSpec(cross_shape, model.compute_dtype, name="cross_cache"),
        tf.TensorSpec([1, encoder_length, backbone.hidden_dim], model.compute_dtype, name="encoder_output"),
        tf.TensorSpec([1, encoder_length], tf.int32, name="encoder_padding_mask"),
    ])
    write_out(archive, directory)


class TFLiteTranslator:
    """Greedy decoding with the encode/decode signatures of an exported translation `model.tflite`.

    Args:
        model_path: the `.tflite` file.
        start_id, end_id: the tokenizer's `[BOS]` and `[EOS]` ids.
        num_threads: interpreter threads.

    Example:
    >>> translator = TFLiteTranslator("savedmodels/zh-en-tflite/1/model.tflite", start_id=2, end_id=3)
    >>> translator.greedy_ids(encoder_token_ids, encoder_padding_mask, max_new_tokens=20)
    """

    def __init__(self, model_path, start_id, end_id, num_threads=None):

        interpreter = load_interpreter(model_path, num_threads=num_threads, quiet=True)
        self._encode = interpreter.get_signature_runner("encode")
        self._decode = interpreter.get_signature_runner("decode")
        self.start_id, self.end_id = int(start_id), int(end_id)
        self.self_cache_shape = self._decode.get_input_details()["self_cache"]["shape"]
        self.max_new_tokens = int(self.self_cache_shape[2]) - 1

    def greedy_ids(self, encoder_token_ids, encoder_padding_mask, max_new_tokens=None):
        """New ids (up to and including `[EOS]`) for one packed source."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else min(max_new_tokens, self.max_new_tokens)
        encoded = self._encode(encoder_token_ids=np.asarray(encoder_token_ids, np.int32).reshape(1, -1),
                               encoder_padding_mask=np.asarray(encoder_padding_mask, np.int32).reshape(1, -1))
        self_cache = np.zeros(self.self_cache_shape, np.float32)
        token, new = self.start_id, []
        for index in range(max_new_tokens):
            out = self._decode(token_id=np.array([[token]], np.int32), index=np.array(index, np.int32),
                               self_cache=self_cache, cross_cache=encoded["cross_cache"],
                               encoder_output=encoded["encoder_output"],
                               encoder_padding_mask=np.asarray(encoder_padding_mask, np.int32).reshape(1, -1))
            self_cache = out["self_cache"]
            token = int(np.argmax(out["logits"][0]))
            new.append(token)
            if token == self.end_id:
                break
        return new


def export_seq2seq_tflite(run_dir, name, base_dir="savedmodels", quantize="none", out=None):
    """Writes `model.tflite`, the tokenizer, `metadata.json` and `parity.json`; returns the folder.

    The parity report decodes the run's first test sources greedily with the
    Keras model and with the TFLite file and compares the ids.
    """
    import keras_hub
    import tensorflow as tf

    from tfllm.datasets.pairs import load_pair_data

    require_tflite("A TFLite export")  # it runs the converted model to check its parity
    run_dir = runs.run_dir_argument(run_dir, "export_seq2seq_tflite")
    runs.require_task(run_dir, "translate")
    if quantize not in ("none", "dynamic", "float16"):
        raise UserInputError(f"--quantize {quantize!r} is not supported for a translation model; "
                             "choose one of none, dynamic, float16.")
    model = runs.load_translation_task(run_dir, dtype="float32")
    from tfllm.models import Seq2SeqLM
    from tfllm.tokenizers import unknown_token_entry

    if not isinstance(model, Seq2SeqLM):  # KerasHub's BART: other cache attributes and a two-token decoder prompt
        raise UserInputError(f"{run_dir!r} holds a {type(model).__name__}; the TFLite export's encode/decode steps "
                             "are for tfllm's own translation models. Export it as a SavedModel (leave out "
                             "--format tflite).")
    tokenizer = model.preprocessor.tokenizer
    config = runs.read_train_config(run_dir)
    recipe = runs.read_recipe(run_dir)
    try:
        pairs = load_pair_data(config.data, config.source_column, config.target_column, config.split_column,
                               seed=config.seed, max_rows=config.max_rows,
                               reference_separator=recipe.get("reference_separator"),
                               group_sources=recipe.get("group_sources", False))
        sources = (pairs.test.sources or pairs.train.sources)[:PARITY_SOURCES]
        origin = "the run's test sources"
    except UserInputError:  # the data file is gone (a run copied to another machine): the export needs only the run
        sources = vocabulary_sources(tokenizer, PARITY_SOURCES)
        origin = f"texts of the run's vocabulary (its data, {config.data!r}, cannot be read)"
    width = model.backbone.decoder_sequence_length
    inputs = model.preprocessor.generate_preprocess(tf.constant(sources), decoder_sequence_length=width)
    inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
    end_id = int(tokenizer.end_token_id)
    expected = model.generate_step(inputs, stop_token_ids=[end_id],
                                   sampler=keras_hub.samplers.GreedySampler())["decoder_token_ids"].numpy()

    def write(directory):
        with tempfile.TemporaryDirectory() as saved_model_dir:
            write_seq2seq_saved_model(model, saved_model_dir)
            content = convert_saved_model(saved_model_dir, ["encode", "decode"], quantize)
            count = quantized_tensors(content, quantize, MODEL_FILE)
        path = os.path.join(directory, MODEL_FILE)
        with open(path, "wb") as f:
            f.write(content)
        tokenizer.save_to_preset(os.path.join(directory, "tokenizer"))
        # The token of each id, for an app that is not Python (the preset's files are KerasHub's format).
        runs.write_json(os.path.join(directory, VOCABULARY_FILE), list(tokenizer.get_vocabulary()))
        backbone = model.backbone
        encoder_length, start, pad = backbone.encoder_sequence_length, int(tokenizer.start_token_id), int(
            tokenizer.pad_token_id)
        rule = tokenizing_rule(tokenizer, task="translate")
        output_size = getattr(backbone, "target_vocabulary_size", None) or backbone.vocabulary_size
        # The shapes as the converted file has them (the interpreter's, not recomputed here).
        interpreter = load_interpreter(model_content=content, quiet=True)
        runners = {key: interpreter.get_signature_runner(key) for key in ("encode", "decode")}
        self_cache_shape = [int(n) for n in runners["decode"].get_input_details()["self_cache"]["shape"]]
        runs.write_json(os.path.join(directory, "metadata.json"), {
            "task": "translate",
            "quantize": quantize,
            **({"quantized_tensors": {MODEL_FILE: count}} if quantize != "none" else {}),
            "encoder_sequence_length": backbone.encoder_sequence_length,
            "decoder_sequence_length": width,
            "vocabulary_size": backbone.vocabulary_size,
            # The decode step's logits: the target side's ids, listed first (tfllm.tokenizers.targets_first).
            "output_vocabulary_size": output_size,
            # 95 logits beside a 100-entry vocabulary.json read as a mistake.
            "output_vocabulary": (f"decode's logits cover ids 0 to {output_size - 1} only: the target side's "
                                  f"tokens are listed first in {VOCABULARY_FILE}, so logit i is id i; the other "
                                  f"{backbone.vocabulary_size - output_size} ids are source-only tokens the "
                                  "translation never holds" if output_size < backbone.vocabulary_size else
                                  f"decode's logits cover every id of {VOCABULARY_FILE}: logit i is id i"),
            "special_token_ids": {"start": start, "end": end_id, "pad": pad,
                                  **unknown_token_entry(tokenizer),
                                  "all": sorted({int(i) for i in tokenizer.special_token_ids if i is not None})},
            # TFLite checks none of these: an id out of range reads out of bounds or fails.
            "input_ranges": f"encoder_token_ids, token_id: 0 <= id < {backbone.vocabulary_size}; "
                            f"encoder_padding_mask: 0 or 1; index: 0 <= index < {width}",
            # The generator's metadata had these shapes and the translator's only the names.
            "signatures": {key: {side: {name: f"{np.dtype(d['dtype']).name}{[int(n) for n in d['shape']]}"
                                        for name, d in details.items()}
                                 for side, details in (("inputs", runner.get_input_details()),
                                                       ("outputs", runner.get_output_details()))}
                           for key, runner in runners.items()},
            "cache": "self_cache and cross_cache are float32[1, 2 * decoder layers, positions, heads, head_dim] (rows "
                     "2l and 2l + 1: block l's keys and values; positions: decoder_sequence_length and "
                     "encoder_sequence_length); pass them on as the signatures return them",
            "tokenizer": tokenizer_entry(directory),
            "token_ids": f"{VOCABULARY_FILE}: the token of each id (id = index)",
            **({"tokenizing": rule} if rule else {}),
            "loop": (
                "greedy, as tfllm translate and the parity check run it: strip the spaces around the source and "
                f"tokenize it ({'tokenizing' if rule else 'tokenizer/'}); keep its first {encoder_length - 2} "
                f"ids; encoder_token_ids = [start id] + those ids + [end id], padded with the pad id ({pad}) to "
                f"{encoder_length}; encoder_padding_mask = 1 at the non-padded positions, 0 after. "
                "encode(encoder_token_ids, encoder_padding_mask) once. Then self_cache = zeros of "
                f"float32{self_cache_shape} (signatures.decode's), token = the "
                f"start id ({start}), index = 0: decode(token_id = [[token]], index, self_cache, cross_cache and "
                "encoder_output from encode, encoder_padding_mask) gives the next id (argmax of logits) and the "
                "self_cache for the next step; stop at the end id "
                f"({end_id}) or after {width - 1} ids, else feed that id at index + 1. The translation: the "
                "new ids before the end id, special ids dropped, detokenized, spaces around it stripped"),
        })
        translator = TFLiteTranslator(path, tokenizer.start_token_id, end_id)
        exact, wanted = 0, set()
        for row in range(len(sources)):
            got = translator.greedy_ids(inputs["encoder_token_ids"][row].numpy(),
                                        inputs["encoder_padding_mask"][row].numpy())
            want = expected[row, 1:].tolist()
            want = want[: want.index(end_id) + 1] if end_id in want else want
            exact += got == want
            wanted.add(tuple(want))
        # A model that gives every source the same output (a one-epoch model's empty one) matches its TFLite
        # file exactly and shows nothing: the rate alone read as a pass.
        degenerate = len(sources) > 1 and len(wanted) == 1
        runs.write_json(os.path.join(directory, "parity.json"), {
            "quantize": quantize,
            MODEL_FILE: {"bytes": os.path.getsize(path)},
            "sources": len(sources),
            "greedy_exact_match_rate": exact / max(len(sources), 1),
            "reference": f"Keras Seq2SeqLM.generate_step with GreedySampler (no XLA), {origin}",
            "reference_outputs_degenerate": degenerate,
            **({"note": f"the Keras model gives all {len(sources)} sources the same output (ids "
                        f"{list(next(iter(wanted)))}), so the match rate says little; train it longer"}
               if degenerate else {}),
        })

    if out is not None:  # into a temporary folder renamed into place at the end, as every TFLite export
        return write_out_dir(out, write, task="translate")
    with atomic_version_dir(base_dir, name, fmt="tflite") as version:
        write(version.tmp_dir)
    return version.path
