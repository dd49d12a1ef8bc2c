"""Strings -> batched `tf.data` pipelines, one function per task.

Classification and translation: texts are tokenized and packed once, by the
task's preprocessor on TensorFlow Text's ops (`preprocess`), then shuffled and
batched.
Causal language models: the corpus is tokenized once into one int32 array;
training batches are random windows of `sequence_length + 1` tokens cut out of
it inside `tf.data` (nanoGPT's `get_batch`), so the input pipeline costs a
gather per step.
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.tensor_utils import no_convert_scope

from tfllm.errors import UserInputError
from tfllm.presets import MIN_GENERATOR_WINDOW
from tfllm.tokenizers import CharacterTokenizer

AUTOTUNE = tf.data.AUTOTUNE


def untuned(ds):
    """`ds` without tf.data's autotuning thread: maps run a call per core, prefetch buffers grow as needed.

    Every pipeline tfllm builds goes through this. Deleting an iterator waits for that thread, and in
    TensorFlow 2.21 the wait sometimes lasts to the end of the thread's sleep between two tunings, a
    sleep that doubles (up to 60 s) as the iterator lives: `fit` hung 12-25 s after its last epoch in
    a quarter of 500-step `nanogpt-cpu` runs on 2 cores, the main thread in
    `RootDataset::Iterator::~Iterator` and the tuning thread in `Model::OptimizeLoop`'s timed wait
    (no upstream issue found). These pipelines cost a gather or a batch per step: tuning gains nothing.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def encode_labels(labels, sigmoid):
    """Labels as a float column for a one-unit sigmoid head (binary cross-entropy), else integer ids."""
    labels = tf.convert_to_tensor(labels, tf.int32)
    return tf.cast(labels, tf.float32)[:, None] if sigmoid else labels


def tensorflow_path(layer):
    """`layer` (a KerasHub tokenizer or preprocessor, built here if it was not) set to run TensorFlow
    (Text)'s ops when called eagerly, as it does in a traced function, a `tf.data` map or an export
    (anything else, such as a plain function, is returned as it is).

    Returns `layer`. The change is kept: tfllm wants the same ops wherever a
    model's texts are tokenized.
    """
    # PRIVATE API: KerasHub's `_allow_python_workflow` flag (keras-hub 0.32) and Keras's
    # `Layer._flatten_layers`. Outside a tf.function KerasHub's tokenizers and packers run
    # a pure-Python path unless the flag is off (keras-team/keras-hub#2948, the PyGrain
    # migration): WordPiece at ~0.6 ms a text, against 0.3 s for 8,000 texts on TensorFlow
    # Text's ops, which give the ids of a traced call. Guarded by tests/test_private_apis.py.
    if not isinstance(layer, keras.layers.Layer):  # a plain function of strings
        return layer
    if not layer.built:
        layer.build(None)  # a preprocessor makes its packers in build
    for sublayer in layer._flatten_layers():
        if getattr(sublayer, "_allow_python_workflow", False):
            sublayer._allow_python_workflow = False
    return layer


def preprocess(texts, preprocessor, chunk_size=8192):
    """The model inputs for a list of strings: the preprocessor run eagerly, on TensorFlow (Text)'s ops
    (`tensorflow_path`), on chunks of texts.

    Not a `tf.data` map: every map traces the tokenizer and packer into a new
    graph. Not a `tf.function` either (up to stop 60): tracing `default`'s
    preprocessor takes ~0.7 s a model (1-1.6 s for `tiny`'s), and six
    tokenizations of 300 texts eagerly take 0.15 s, of 10,451 texts 1.3 s
    against 1.8 s traced (`benchmarks/bench_preprocess.py`).

    `texts` is a list of strings, or a dict of equally long lists for a
    preprocessor that takes several (a translation's source and target texts).
    """
    columns = texts if isinstance(texts, dict) else {None: texts}
    columns = {name: list(column) for name, column in columns.items()}
    tensorflow_path(preprocessor)
    size = len(next(iter(columns.values())))
    parts = []
    # PRIVATE API: KerasHub's `no_convert_scope` (keras-hub 0.32): eagerly, its layers turn ragged
    # outputs into Python lists and dense ones into NumPy (keras-team/keras-hub#2948); tensors are
    # kept here, as a traced call returns them. Guarded by tests/test_private_apis.py.
    with no_convert_scope():
        for start in range(0, max(size, 1), chunk_size):
            chunk = {name: tf.constant(column[start:start + chunk_size], tf.string) for name, column in columns.items()}
            parts.append(preprocessor(chunk[None] if None in chunk else chunk))
    return tf.nest.map_structure(lambda *chunks: tf.concat(chunks, 0), *parts)


def classification_dataset(split, preprocessor, sigmoid, batch_size, shuffle=False, seed=None):
    """(model inputs, encoded labels) batches for `model.fit`.

    Texts go through the task's preprocessor (tokenizer + packing: TF ops, not
    Python) once, so epochs only shuffle and batch.
    """
    ds = tf.data.Dataset.from_tensor_slices((preprocess(split.texts, preprocessor), encode_labels(split.labels, sigmoid)))
    if shuffle:
        ds = ds.shuffle(len(split.texts), seed=seed, reshuffle_each_iteration=True)
    return untuned(ds.batch(batch_size).prefetch(AUTOTUNE))


def text_batches(texts, preprocessor, batch_size=256):
    """Model-input batches for prediction (no labels)."""
    return untuned(tf.data.Dataset.from_tensor_slices(preprocess(texts, preprocessor)).batch(batch_size))


def tokenize_corpus(tokenizer, text, what="training"):
    """All of `text` (the `what` text, for messages) as one int32 numpy array of token ids."""
    if isinstance(tokenizer, CharacterTokenizer):
        ids = tokenizer.tokenize(tf.constant([text]))
        return ids.flat_values.numpy().astype("int32")
    # Subword tokenizers split on whitespace and lose newlines anyway; feed them
    # line batches through TF ops (the eager path is pure Python and slow).
    lines = [line for line in text.split("\n") if line.strip()]
    parts = [batch.flat_values.numpy() if isinstance(batch, tf.RaggedTensor) else batch.numpy().ravel()
             for batch in _tokenized_batches(tokenizer, lines)]
    ids = np.concatenate(parts).astype("int32") if parts else np.zeros([0], "int32")
    if (ids < 0).any():
        _refuse_unencodable(tokenizer, text, int((ids < 0).sum()), what)
    return ids


@functools.lru_cache(maxsize=4)  # holds the tokenizers it traced, so an id is not reused while its function is kept
def _traced_tokenizer(tokenizer):
    return tf.function(tokenizer, input_signature=[tf.TensorSpec([None], tf.string)])


def _tokenized_batches(tokenizer, lines):
    """`lines`' token ids, a batch (a tensor, ragged or not) of 4,096 at a time, through TF ops: the eager path
    is pure Python and slow, and KerasHub's Python byte-pair tokenizer drops what the TF one gives id -1.

    One function a tokenizer, traced once: a `Dataset.map` of the tokenizer traced it again on every call, ~2 s
    each for a byte-pair tokenizer however short the text (a `--from-preset` GPT-2 run tokenizes several
    texts), where a call of the traced function on a few lines takes milliseconds. On 100,000 lines it is as
    fast as the map's parallel calls, or faster (docs/benchmarks.md, stop 75)."""
    traced = _traced_tokenizer(tokenizer)
    return [traced(tf.constant(lines[i:i + 4096])) for i in range(0, len(lines), 4096)]


def unencodable_characters(tokenizer, characters):
    """Those of `characters` a byte-pair tokenizer gives id -1 (no token in its vocabulary), through the TF
    ops training tokenizes with: KerasHub's eager (Python) path drops them without a trace."""
    rows = [row for batch in _tokenized_batches(tokenizer, list(characters)) for row in
            (batch.to_list() if isinstance(batch, tf.RaggedTensor) else batch.numpy().tolist())]
    return [c for c, row in zip(characters, rows) if min(row, default=0) < 0]


def _refuse_unencodable(tokenizer, text, count, what):
    """A byte-pair vocabulary without a token for some text (a KerasHub GPT-2 preset's, say) gives it id -1,
    which was a traceback from the loss ("label value of -1") or a loss of NaN called a divergence."""
    examples = unencodable_characters(tokenizer, sorted(set(text) - {"\n"}))[:10]
    shown = f", e.g. the characters {''.join(examples)!r}" if examples else ""
    raise UserInputError(f"{count:,} tokens of the {what} text have no id in the tokenizer's vocabulary (it gives "
                         f"them -1){shown}. Use text its vocabulary covers (lowercase it, say), or a preset whose "
                         "tokenizer has the text's characters.")


def check_length(ids, sequence_length, what, fits=None, source="", more=""):
    """`fits`: the longest window every text of the run holds (default this one's); `source`: where the
    window's length comes from, said when it is not the user's own setting; `more`: how to get more text."""
    # A window is `sequence_length + 1` tokens: the inputs, and the same shifted by one as targets.
    if len(ids) < sequence_length + 1:
        fits = len(ids) - 1 if fits is None else fits
        shorter = f", or a shorter window: --set sequence_length={fits}" if fits >= MIN_GENERATOR_WINDOW else ""
        raise UserInputError(
            f"The {what} text is {len(ids)} tokens long, shorter than one training window "
            f"({sequence_length + 1} tokens{source}). Use more text{more}{shorter}."
        )


def split_windows(windows, start_ids=()):
    """`(inputs, next_token_ids)` of `[n, sequence_length + 1]` windows. With `start_ids` (a preset's start
    token, `tokenizers.prompt_start_ids`) the inputs begin with them, as every prompt then does, and the
    first text token is a target too: the window's last token goes unused."""
    if start_ids:
        targets = windows[:, :-1]
        starts = tf.tile(tf.constant([list(start_ids)], windows.dtype), [tf.shape(windows)[0], 1])
        inputs = tf.concat([starts, targets[:, :-len(start_ids)]], axis=1)
    else:
        inputs, targets = windows[:, :-1], windows[:, 1:]
    return {"token_ids": inputs, "padding_mask": tf.ones_like(inputs)}, targets


def random_window_dataset(ids, sequence_length, batch_size, seed=None, start_ids=()):
    """Endless `(inputs, next_token_ids)` batches of random windows, as nanoGPT samples them
    (`start_ids`: see `split_windows`)."""
    check_length(ids, sequence_length, "training")
    data = tf.constant(ids, tf.int32)
    num_starts = len(ids) - sequence_length  # starts 0 .. len - seq - 1: the last window ends at the last id
    offsets = tf.range(sequence_length + 1, dtype=tf.int64)

    def windows(random):
        starts = tf.math.floormod(random, num_starts)
        return split_windows(tf.gather(data, starts[:, None] + offsets[None, :]), start_ids)

    ds = tf.data.Dataset.random(seed=seed).batch(batch_size, drop_remainder=True)
    return untuned(ds.map(windows, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))


def sequential_window_dataset(ids, sequence_length, batch_size, max_windows=None, start_ids=()):
    """Consecutive non-overlapping windows covering `ids` (or `max_windows` spread over it).

    Averaging the loss over these gives the validation loss of the whole text,
    with every position in the window weighted as in training.
    """
    windows = sequential_windows(ids, sequence_length, max_windows)
    return untuned(tf.data.Dataset.from_tensor_slices(windows).batch(batch_size)
                   .map(lambda w: split_windows(w, start_ids)).prefetch(AUTOTUNE))


def sequential_windows(ids, sequence_length, max_windows=None):
    """`[n, sequence_length + 1]` windows of `ids`, each starting at the previous one's last token (so
    every token after the first is a target once), as many as fit (or `max_windows` spread over them)."""
    check_length(ids, sequence_length, "validation")
    # A start s fits while s + sequence_length + 1 <= len(ids); `- 1` more here skipped the last
    # window whenever len(ids) was a multiple of sequence_length plus one.
    starts = np.arange(0, len(ids) - sequence_length, sequence_length)
    if max_windows and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(int)]
    return ids[starts[:, None] + np.arange(sequence_length + 1)[None, :]]
