"""Causal LM -> SavedModel that turns prompt strings into generated strings, in the graph.

Signatures (every input batched, as TF Serving's row format and request
batching need):

- `serving_default(prompt: string[B], max_new_tokens: int32[B],
  temperature: float32[B], top_k: int32[B], top_p: float32[B], seed: int32[B])
  -> {text: string[B], completion: string[B]}`: `completion` is the new text,
  `text` the prompt followed by it (a WordPiece model's completion
  carries the space before its first word: `tfllm.config.wordpiece_completion`;
  a SentencePiece model's the space of its first piece's '▁': `tfllm.config.sentencepiece_completion`).
  Temperature 0 is greedy; `top_k` 0 and `top_p` 1 turn those cuts off.
- `greedy(prompt: string[B], max_new_tokens: int32[B])`: the same outputs,
  greedy decoding.

Decoding is `tfllm.generation.decode_function` (KerasHub's cached loop with
the per-row `OptionSampler`), XLA-compiled, so a row's output equals
`Generator.generate` with the same options and `seed` (row i of an in-process
batch uses `seed + i`). KerasHub's string post-processing calls numpy, so
special tokens are dropped and ids detokenized with TF ops here (a WordPiece
tokenizer's spaces between two CJK characters removed, `tfllm.tokenizers.join_cjk_op`). Loading the
export needs `import tensorflow_text` first (the tokenizer's ops).

The decoding buffer is rounded up to a multiple of `WIDTH_BUCKET` positions so
that XLA compiles one program per bucket and batch size, not per request.
"""

import json
import os

import keras
import tensorflow as tf

from tfllm import runs
from tfllm.config import EXPORT_MAX_NEW_TOKENS
from tfllm.export.versioning import atomic_version_dir, write_archive
from tfllm.generation import (BATCH_BUCKETS, WIDTH_BUCKET, WIDTH_BUCKETS, Generator, decode_function,  # noqa: F401
                              load_generator, unread_prefix)
from tfllm.tokenizers import (CharacterTokenizer, detokenizes_with_spaces, join_cjk_op, keeps_leading_suffix,
                              marks_word_starts, sentencepiece_completion_op, whole_word_ids, word_start_counts,
                              without_leading_suffix_op, wordpiece_completion_op)

SERVING_SIGNATURE = "serving_default"
GREEDY_SIGNATURE = "greedy"
# The buckets are generation.py's, which `Generator` pads its buffers to as well.
WARMUP_BATCH_SIZES = (1, 2, 4)  # compiled at load by the warm-up requests, at the first width bucket


def bucket(size, buckets):
    """The smallest of `buckets` that holds `size` (a scalar int32 tensor); `size` beyond them."""
    table = tf.constant(buckets, tf.int32)
    index = tf.minimum(tf.searchsorted(table, tf.reshape(size, [1]), side="left")[0], len(buckets) - 1)
    return tf.maximum(table[index], size)


def in_instances(message, bad):
    """`message` + " in instance(s) i, j, ..." (the first ten) for the rows where the bool vector `bad` holds, as
    a string tensor for `tf.debugging.Assert`: a batch was refused whole, without saying which of its rows."""
    rows = tf.where(bad)[:, 0]
    return tf.strings.join([
        message, " in ", tf.where(tf.size(rows) > 1, "instances ", "instance "),
        tf.strings.reduce_join(tf.strings.as_string(rows[:10]), separator=", "),
        tf.where(tf.size(rows) > 10, ", ...", "")])


def assert_rows(ok, message, after=""):
    """An assertion that `ok` (a bool per row) holds for every row, naming the rows where it does not
    (`in_instances`), then `after`: "max_new_tokens must be >= 1" did not say which row of a batch."""
    return tf.debugging.Assert(tf.reduce_all(ok), [tf.strings.join([in_instances(message, tf.logical_not(ok)), after])])


def generation_archive(model, tokenizer, jit_compile=True, document_start=None):
    """An `ExportArchive` with the `serving_default` and `greedy` endpoints (`document_start`: what a client
    sends to start a new document, which the empty prompt's refusal names)."""
    ids_of = Generator(model, tokenizer)  # the special ids, read from the tokenizer
    end_id, unk_id, special_ids = ids_of.end_id, ids_of.unk_id, ids_of.special_ids
    archive = keras.export.ExportArchive()
    archive.track(model)
    tokenizer(tf.constant(["build"]))  # a Layer must be built before it is tracked
    archive.track(tokenizer)  # keeps its lookup tables in the graph (keras-hub#2015)
    window_keep = getattr(model, "window_keep", None) or ids_of.window - 1
    decode = decode_function(model, (end_id,), jit_compile=jit_compile, banned_token_ids=ids_of.banned_ids)
    if detokenizes_with_spaces(tokenizer):  # per id: no "##" piece (a space may go before it after the prompt)
        whole_words = tf.constant(whole_word_ids(tokenizer), tf.bool)
    if marks_word_starts(tokenizer):  # per id: the spaces its piece's leading "\u2581" stand for
        word_starts = tf.constant(word_start_counts(tokenizer), tf.int32)

    # The graph refuses "" (it has no run records); the message says what `tfllm generate RUN ""` sends instead,
    # in words (TensorFlow escapes quotes and backslashes in assertion messages).
    separator = {"\n\n": "a blank line (two newline characters)", "\n": "one newline character"}.get(
        document_start, json.dumps(document_start))
    new_document = (f"; to start a new document, send what separates the training documents: {separator}"
                    if document_start else "")

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        # Each names the rows at fault ("... in instance 1"), as a REST request's row format numbers them.
        checks = [
            assert_rows(tf.strings.length(prompt) > 0, "prompt must not be empty", new_document),
            assert_rows(max_new_tokens > 0, "max_new_tokens must be >= 1"),
            assert_rows(max_new_tokens <= EXPORT_MAX_NEW_TOKENS, f"max_new_tokens must be <= {EXPORT_MAX_NEW_TOKENS}"),
            assert_rows(temperature >= 0.0, "temperature must be >= 0"),
            assert_rows(top_p > 0.0, "top_p must be > 0"),
            assert_rows(top_p <= 1.0, "top_p must be <= 1"),
            assert_rows(top_k >= 0, "top_k must be >= 0 (0 turns it off)"),
            tf.debugging.assert_positive(tf.shape(prompt)[0], message="send at least one prompt"),
        ] + [
            tf.debugging.assert_equal(tf.shape(x)[0], tf.shape(prompt)[0],
                                      message=f"{name} must have one value per prompt (the same batch size)")
            for name, x in (("max_new_tokens", max_new_tokens), ("temperature", temperature),
                            ("top_k", top_k), ("top_p", top_p), ("seed", seed))
        ]
        with tf.control_dependencies(checks):
            ids = tokenizer(prompt)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids, padding=0)
        ids = tf.cast(ids, tf.int32)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        unknown = tf.equal(ids.flat_values, -1 if unk_id is None else unk_id)
        # Name the rows (a batch of many prompts was refused whole, without saying which one).
        unseen = in_instances("prompt contains characters the tokenizer has no token for",
                              tf.reduce_any(ids.with_flat_values(unknown), axis=1))
        if isinstance(tokenizer, CharacterTokenizer) and tokenizer.sequence_length is None:
            # One id per character: name the first ten it never saw, as `tfllm generate` does (unquoted:
            # the assertion's message escapes quotes).
            chars = tf.unique(tf.boolean_mask(tf.strings.unicode_split(prompt, "UTF-8").flat_values, unknown))[0]
            unseen = tf.strings.join([unseen, ": ", tf.strings.reduce_join(chars[:10], separator=", ")])
        checks = [
            tf.debugging.assert_greater(lengths, 0, message="prompt has no tokens the model knows"),
            tf.debugging.Assert(tf.logical_not(tf.reduce_any(unknown)), [unseen]),
        ]
        if ids_of.start_ids:  # the preset's start token before every prompt, as Generator.encode puts it
            starts = tf.tile(tf.constant([ids_of.start_ids], tf.int32), [ids.nrows(out_type=tf.int32), 1])
            ids = tf.concat([starts, ids], axis=1)
            lengths = tf.cast(ids.row_lengths(), tf.int32)
        offset = tf.zeros_like(lengths)
        if ids_of.slides:  # only the tokens decoding reads: a long prompt's buffer was as wide as the whole prompt
            offset = unread_prefix(lengths, ids_of.window, window_keep)
            ids = tf.ragged.boolean_mask(ids, tf.ragged.range(lengths) >= offset[:, None])
            lengths = lengths - offset
        with tf.control_dependencies(checks):
            width = tf.reduce_max(lengths + max_new_tokens)
        if ids_of.slides:
            width = bucket(width, WIDTH_BUCKETS)
        else:  # a KerasHub model stops at its last position: no bucket beyond it
            fits = tf.debugging.assert_less_equal(
                width, ids_of.window,
                message=f"this model sees at most {ids_of.window} tokens: prompt plus max_new_tokens must fit")
            with tf.control_dependencies([fits]):
                width = tf.minimum(bucket(width, WIDTH_BUCKETS), ids_of.window)
        rows = ids.nrows(out_type=tf.int32)
        token_ids = ids.to_tensor(default_value=0, shape=tf.stack([rows, width]))
        padding_mask = tf.sequence_mask(lengths, width, dtype=tf.int32)
        take = tf.minimum(tf.range(bucket(rows, BATCH_BUCKETS)), rows - 1)  # pad with the last row
        out = decode(
            {
                "token_ids": tf.gather(token_ids, take),
                "padding_mask": tf.gather(padding_mask, take),
                "temperature": tf.gather(temperature, take),
                "top_k": tf.gather(top_k, take),
                "top_p": tf.gather(top_p, take),
                "seed": tf.gather(seed, take),
                "position_offset": tf.gather(offset, take),  # the noise drawn where the whole prompt puts it
            }
        )[:rows]
        # Row i's new tokens: positions [length_i, length_i + max_new_tokens_i).
        positions = tf.range(width)[None, :]
        new = (positions >= lengths[:, None]) & (positions < (lengths + max_new_tokens)[:, None])
        # Drop everything from the first end token on, then all special ids.
        ended = tf.cumsum(tf.cast(new & tf.equal(out, end_id), tf.int32), axis=-1) > 0
        special = tf.reduce_any(out[..., None] == tf.constant(special_ids, out.dtype), axis=-1)
        keep = new & ~ended & ~special
        kept = tf.ragged.boolean_mask(out, keep)
        completion = tokenizer.detokenize(kept)
        if completion.shape.rank == 2:  # some detokenizers keep a trailing axis
            completion = tf.squeeze(completion, -1)
        if marks_word_starts(tokenizer):  # SentencePiece's first "\u2581which" detokenized alone is "which"
            completion = sentencepiece_completion_op(prompt, completion, kept[:, :1], word_starts)
        if detokenizes_with_spaces(tokenizer):  # WordPiece's "中 国" -> "中国", as Generator.decode
            # and the space before a first new whole word ("the king" + " uke"), so that text = prompt + completion
            whole_word = tf.reduce_any(tf.gather(whole_words, kept[:, :1]), axis=1)
            if keeps_leading_suffix(tokenizer):  # "king" + "##k": KerasHub's own detokenizer gave "##k"
                completion = without_leading_suffix_op(completion, whole_word, tokenizer.suffix_indicator)
            completion = wordpiece_completion_op(prompt, join_cjk_op(completion), whole_word)
        return {"text": tf.strings.join([prompt, completion]), "completion": completion}

    spec = lambda dtype, name: tf.TensorSpec([None], dtype, name=name)  # noqa: E731
    archive.add_endpoint(
        SERVING_SIGNATURE,
        generate,
        input_signature=[
            spec(tf.string, "prompt"),
            spec(tf.int32, "max_new_tokens"),
            spec(tf.float32, "temperature"),
            spec(tf.int32, "top_k"),
            spec(tf.float32, "top_p"),
            spec(tf.int32, "seed"),
        ],
    )

    def greedy(prompt, max_new_tokens):
        zeros = tf.zeros_like(max_new_tokens)
        return generate(prompt, max_new_tokens, tf.cast(zeros, tf.float32), zeros, tf.ones_like(zeros, tf.float32), zeros)

    archive.add_endpoint(
        GREEDY_SIGNATURE, greedy, input_signature=[spec(tf.string, "prompt"), spec(tf.int32, "max_new_tokens")]
    )
    return archive


def export_causal_lm(run_dir, name, base_dir="savedmodels", warmup_prompts=None):
    """Writes `base_dir/name/<next version>/` atomically from a generation run; returns its path.

    Example:
    >>> export_causal_lm("runs/shakespeare", "shakespeare")
    'savedmodels/shakespeare/1'
    """
    run_dir = runs.run_dir_argument(run_dir, "export_causal_lm")
    generator = load_generator(run_dir, dtype="float32")  # see runs.load_task: exports compute in float32
    archive = generation_archive(generator.model, generator.tokenizer, document_start=generator.document_start)

    def warmup_inputs():
        # Real prompts from the model's own vocabulary; TF Serving replays
        # them at load time, which also XLA-compiles the common bucket.
        ordinary = [i for i in range(min(generator.vocabulary_size, 64)) if i not in generator.special_ids]
        prompts = warmup_prompts or [generator.decode(ordinary[:8])]
        n = len(prompts)
        longest = max(len(generator.encode(p)) for p in prompts)
        new_tokens = 32 if generator.slides else max(1, min(32, generator.window - longest))
        return {"prompt": prompts, "max_new_tokens": [new_tokens] * n, "temperature": [0.8] * n, "top_k": [50] * n,
                "top_p": [1.0] * n, "seed": list(range(n))}

    with atomic_version_dir(base_dir, name, task="generate") as version:
        write_archive(archive, version, name, SERVING_SIGNATURE, warmup_inputs, batch_sizes=WARMUP_BATCH_SIZES)
    return os.path.normpath(version.path)
