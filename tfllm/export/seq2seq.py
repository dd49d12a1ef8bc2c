"""Translation run -> SavedModel that turns source strings into translation strings, in the graph.

Signature (every input batched, as TF Serving's row format and request batching need):

- `serving_default(source: string[B], max_new_tokens: int32[B]) -> {translation: string[B]}`:
  tokenization and packing (the run's `Seq2SeqLMPreprocessor`), the source
  encoded once, greedy decoding with the key/value caches (`Seq2SeqLM.generate_step`
  with KerasHub's `GreedySampler`, XLA-compiled), then special ids dropped and
  the ids detokenized (`tfllm.models.seq2seq_lm.output_text`), so a reloaded
  export gives exactly the in-process greedy output of `tfllm.translation`.

Batches are padded to a power of two (copies of the last row, dropped after
decoding) and the decoder buffer is always the model's decoder length, so
XLA compiles one program per batch bucket. Loading the export in your own
process needs `import tensorflow_text` first (WordPiece tokenizer ops).
"""

import functools
import inspect
import os
import sys

import keras
import keras_hub
import tensorflow as tf

from tfllm import runs
from tfllm.export.causal_lm import assert_rows, in_instances
from tfllm.export.versioning import atomic_version_dir, write_archive
from tfllm.models.seq2seq_lm import output_text

SERVING_SIGNATURE = "serving_default"
BATCH_BUCKETS = tuple(2**i for i in range(17))
WARMUP_BATCH_SIZES = (1, 2, 4)


def _bucket(size, buckets):
    table = tf.constant(buckets, tf.int32)
    index = tf.minimum(tf.searchsorted(table, tf.reshape(size, [1]), side="left")[0], len(buckets) - 1)
    return tf.maximum(table[index], size)


@functools.cache
def _space_pattern():
    """An RE2 pattern of the spaces around a text: every character for which `str.isspace()` is true (29 in
    Python 3.11: U+3000, U+00A0, U+2028, ...), not only the ASCII ones `tf.strings.strip` takes, so that the
    graph strips a source exactly as `tfllm translate` and training strip it (`str.strip()`)."""
    spaces = "".join(f"\\x{{{ord(c):x}}}" for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    return f"^[{spaces}]+|[{spaces}]+$"  # RE2's `$` is the end of the text alone (no multi-line mode)


def strip_spaces(texts):
    """`str.strip()` of each string, as a TF op (a full-width space around a pasted Chinese source was read as
    part of it by the export, and `tfllm serve` translated it differently from `tfllm translate`)."""
    return tf.strings.regex_replace(texts, _space_pattern(), "")


def decoder_layout(model):
    """(decoder buffer width, decoder prompt length): `[BOS]` is 1 token, BART's prompt 2."""
    preprocessor = model.preprocessor
    width = int(preprocessor.decoder_sequence_length)
    if hasattr(model.backbone, "decoder_sequence_length"):
        width = min(width, int(model.backbone.decoder_sequence_length))
    prompt = preprocessor.generate_preprocess(tf.constant([""]), decoder_sequence_length=width)
    return width, int(tf.reduce_sum(tf.cast(prompt["decoder_padding_mask"][0], tf.int32)))


def translation_archive(model, jit_compile=True):
    """An `ExportArchive` with the `serving_default` endpoint (greedy translation)."""
    preprocessor = model.preprocessor
    tokenizer = preprocessor.tokenizer
    end_id = int(tokenizer.end_token_id)
    width, prompt_length = decoder_layout(model)
    max_new = width - prompt_length
    archive = keras.export.ExportArchive()
    archive.track(model)
    tokenizer(tf.constant(["build"]))  # a Layer must be built before it is tracked
    archive.track(tokenizer)  # keeps its lookup tables in the graph (keras-hub#2015)
    preprocessor.generate_preprocess(tf.constant(["build"]), decoder_sequence_length=width)

    takes_sampler = "sampler" in inspect.signature(model.generate_step).parameters

    @tf.function(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
    def decode(inputs):
        if takes_sampler:
            return model.generate_step(inputs, stop_token_ids=[end_id],
                                       sampler=keras_hub.samplers.GreedySampler())["decoder_token_ids"]
        model.sampler = keras_hub.samplers.GreedySampler()  # KerasHub's own tasks (BART) read it from the model
        return model.generate_step(inputs, stop_token_ids=[end_id])["decoder_token_ids"]

    def translate(source, max_new_tokens):
        checks = [
            tf.debugging.assert_positive(tf.shape(source)[0], message="send at least one source"),
            tf.debugging.assert_equal(tf.shape(max_new_tokens)[0], tf.shape(source)[0],
                                      message="max_new_tokens must have one value per source"),
            tf.debugging.Assert(tf.reduce_all(tf.strings.length(strip_spaces(source)) > 0), [
                in_instances("source must not be empty", tf.equal(tf.strings.length(strip_spaces(source)), 0))]),
            assert_rows(max_new_tokens > 0, "max_new_tokens must be >= 1"),  # naming the rows at fault
            assert_rows(max_new_tokens <= max_new, f"max_new_tokens must be <= {max_new}",
                        " (the longest output of this model)"),
        ]
        with tf.control_dependencies(checks):  # stripped as `tfllm translate` does (Translator.check_sources)
            inputs = preprocessor.generate_preprocess(strip_spaces(source), decoder_sequence_length=width)
        inputs = {k: tf.cast(v, tf.int32) for k, v in inputs.items()}
        rows = tf.shape(source)[0]
        take = tf.minimum(tf.range(_bucket(rows, BATCH_BUCKETS)), rows - 1)  # pad with the last row
        ids = decode({k: tf.gather(v, take) for k, v in inputs.items()})[:rows]
        # Row i keeps max_new_tokens_i positions after the prompt: later ones become the end token.
        past = tf.range(width)[None, :] >= prompt_length + max_new_tokens[:, None]
        ids = tf.where(past, end_id, ids)
        return {"translation": output_text(tokenizer, ids, prompt_length)}

    spec = lambda dtype, name: tf.TensorSpec([None], dtype, name=name)  # noqa: E731
    archive.add_endpoint(SERVING_SIGNATURE, translate,
                         input_signature=[spec(tf.string, "source"), spec(tf.int32, "max_new_tokens")])
    return archive


def export_seq2seq(run_dir, name, base_dir="savedmodels", warmup_sources=None):
    """Writes `base_dir/name/<next version>/` atomically from a translation run; returns its path.

    Example:
    >>> export_seq2seq("runs/cedict", "cedict")
    'savedmodels/cedict/1'
    """
    run_dir = runs.run_dir_argument(run_dir, "export_seq2seq")
    runs.require_task(run_dir, "translate")
    model = runs.load_translation_task(run_dir, dtype="float32")  # see runs.load_task
    archive = translation_archive(model)
    width, prompt_length = decoder_layout(model)
    max_new_tokens = width - prompt_length

    def warmup_inputs():
        tokenizer = model.preprocessor.tokenizer
        special = {int(i) for i in tokenizer.special_token_ids if i is not None}
        ordinary = [i for i in range(min(tokenizer.vocabulary_size(), 64)) if i not in special][:4]
        text = keras.ops.convert_to_numpy(tokenizer.detokenize(tf.constant([ordinary]))).ravel()[0]
        sources = warmup_sources or [text.decode("utf-8") if isinstance(text, bytes) else str(text)]
        return {"source": sources, "max_new_tokens": [max_new_tokens] * len(sources)}

    with atomic_version_dir(base_dir, name, task="translate") as version:
        write_archive(archive, version, name, SERVING_SIGNATURE, warmup_inputs, batch_sizes=WARMUP_BATCH_SIZES)
    return os.path.normpath(version.path)
