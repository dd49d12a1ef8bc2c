"""Causal LM -> SavedModel that turns prompt strings into generated strings, in the graph.

Signatures (every input batched, as TF Serving's row format and request
batching need):

- `serving_default(prompt: string[B], max_new_tokens: int32[B],
  temperature: float32[B], top_k: int32[B], top_p: float32[B], seed: int32[B])
  -> {text: string[B], completion: string[B]}`: `completion` is the new text,
  `text` the prompt followed by it. Temperature 0 is greedy; `top_k` 0 and
  `top_p` 1 turn those cuts off.
- `greedy(prompt: string[B], max_new_tokens: int32[B])`: the same outputs,
  greedy decoding.

Decoding is `tfllm.generation.decode_function` (KerasHub's cached loop with
the per-row `OptionSampler`), XLA-compiled, so a row's output equals
`Generator.generate` with the same options and `seed` (row i of an in-process
batch uses `seed + i`). KerasHub's string post-processing calls numpy, so
special tokens are dropped and ids detokenized with TF ops here. Loading the
export needs `import tensorflow_text` first (the tokenizer's ops).

The decoding buffer is rounded up to a multiple of `WIDTH_BUCKET` positions so
that XLA compiles one program per bucket and batch size, not per request.
"""

import os
import warnings

import keras
import tensorflow as tf

from tfllm.export.versioning import atomic_version_dir
from tfllm.generation import EOS_ID, UNK_ID, decode_function, load_generator

SERVING_SIGNATURE = "serving_default"
GREEDY_SIGNATURE = "greedy"
EXPORT_MAX_NEW_TOKENS = 1024  # documented cap on max_new_tokens per request
WIDTH_BUCKET = 128


def generation_archive(model, tokenizer, jit_compile=True):
    """An `ExportArchive` with the `serving_default` and `greedy` endpoints."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    tokenizer(tf.constant(["build"]))  # a Layer must be built before it is tracked
    archive.track(tokenizer)  # keeps its lookup tables in the graph (keras-hub#2015)
    decode = decode_function(model, (EOS_ID,), jit_compile=jit_compile)

    def generate(prompt, max_new_tokens, temperature, top_k, top_p, seed):
        checks = [
            tf.debugging.assert_greater(tf.strings.length(prompt), 0, message="prompt must not be empty"),
            tf.debugging.assert_greater(max_new_tokens, 0, message="max_new_tokens must be >= 1"),
            tf.debugging.assert_less_equal(
                max_new_tokens, EXPORT_MAX_NEW_TOKENS, message=f"max_new_tokens must be <= {EXPORT_MAX_NEW_TOKENS}"
            ),
            tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be >= 0"),
            tf.debugging.assert_greater(top_p, 0.0, message="top_p must be > 0"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be <= 1"),
        ]
        with tf.control_dependencies(checks):
            ids = tokenizer(prompt)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids, padding=0)
        ids = tf.cast(ids, tf.int32)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        checks = [
            tf.debugging.assert_greater(lengths, 0, message="prompt has no tokens the model knows"),
            tf.debugging.assert_equal(
                tf.reduce_any(tf.equal(ids.flat_values, UNK_ID)),
                False,
                message="prompt contains characters the tokenizer never saw in training",
            ),
        ]
        with tf.control_dependencies(checks):
            width = tf.reduce_max(lengths + max_new_tokens)
        width = (width + WIDTH_BUCKET - 1) // WIDTH_BUCKET * WIDTH_BUCKET
        token_ids = ids.to_tensor(default_value=0, shape=tf.stack([ids.nrows(out_type=tf.int32), width]))
        padding_mask = tf.sequence_mask(lengths, width, dtype=tf.int32)
        out = decode(
            {
                "token_ids": token_ids,
                "padding_mask": padding_mask,
                "temperature": temperature,
                "top_k": top_k,
                "top_p": top_p,
                "seed": seed,
            }
        )
        # Row i's new tokens: positions [length_i, length_i + max_new_tokens_i).
        positions = tf.range(width)[None, :]
        new = (positions >= lengths[:, None]) & (positions < (lengths + max_new_tokens)[:, None])
        # Drop everything from the first end token on, then all special ids.
        ended = tf.cumsum(tf.cast(new & tf.equal(out, EOS_ID), tf.int32), axis=-1) > 0
        keep = new & ~ended & (out > EOS_ID)
        completion = tokenizer.detokenize(tf.ragged.boolean_mask(out, keep))
        if completion.shape.rank == 2:  # some detokenizers keep a trailing axis
            completion = tf.squeeze(completion, -1)
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
    generator = load_generator(run_dir)
    archive = generation_archive(generator.model, generator.tokenizer)
    with atomic_version_dir(base_dir, name) as (tmp_dir, final_dir):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive.write_out(tmp_dir, verbose=False)
        try:
            from tfllm.serving.warmup import write_warmup_requests
        except ImportError:  # serving extra not installed: export still works
            write_warmup_requests = None
        if write_warmup_requests is not None:
            # Real prompts from the model's own vocabulary; TF Serving replays
            # them at load time, which also XLA-compiles the common bucket.
            prompts = warmup_prompts or [generator.decode(range(4, min(generator.vocabulary_size, 12)))]
            n = len(prompts)
            write_warmup_requests(
                tmp_dir,
                name,
                SERVING_SIGNATURE,
                {
                    "prompt": prompts,
                    "max_new_tokens": [32] * n,
                    "temperature": [0.8] * n,
                    "top_k": [50] * n,
                    "top_p": [1.0] * n,
                    "seed": list(range(n)),
                },
            )
    return os.path.normpath(final_dir)
