"""Texts in, labels out: a classification run on new texts, for `tfllm predict` and `tfllm.predict`.

NumPy first (`tfllm.fast_classification`): a cold command then needs no TensorFlow (about 0.3 s
instead of 6 s). Texts it cannot tokenize exactly as TensorFlow Text does, KerasHub presets and other
model kinds take the TensorFlow path; `TFLLM_NUMPY_CLASSIFICATION=0` always takes it (the benchmarks
compare the two).
"""

import functools
import itertools
import os

from tfllm import fast_classification, runs
from tfllm.config import CODE_POINT_VIEWS
from tfllm.errors import UserInputError, note, shell_path, spelled, warn

CHUNK = 512  # texts classified (and yielded) at a time: a large file is answered as it is read
# Texts all [UNK] named one warning each, up to this many; the rest counted in one line at the end (a
# 200,000-row file printed 66 such lines among its answers).
UNKNOWN_SHOWN = 3


class _Loaded:
    """A run's NumPy classifier and its Keras task, each loaded once a text needs it."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    @functools.cached_property
    def fast(self):
        return fast_classification.load(self.run_dir)

    def task(self):
        from tfllm.training.classifier import loaded_run  # TensorFlow: only for the texts that need it

        return loaded_run(self.run_dir)  # the Keras task `tfllm.evaluate` also uses


_LOADED = {}  # real path of a run directory -> (its files' signature, _Loaded)


def classify(run_dir, texts, chunk_size=CHUNK, top_k=None):
    """Yields `{"text", "label", "probabilities"}` for each of `texts` (any iterable, read `chunk_size` at a
    time), in order. A text the model reads no word of is refused (UserInputError) before any answer of its
    chunk. The run is loaded once per process (again when its files change). `top_k`: "probabilities" holds
    only the K most likely labels, most likely first (all of them, so ordered, when K is more)."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise UserInputError(f"top_k must be a whole number of at least 1, got {top_k!r}.")
    runs.require_task(run_dir, "classify", hint=runs.classifier_hint(run_dir))
    loaded = runs.load_cached(_LOADED, run_dir, _Loaded)
    texts = iter(texts)
    unknown, total = [], 0  # the numbers of the texts all [UNK], and of all texts, over all chunks
    # How many texts ran past the model's window of tokens, and that window: their tokens past it were
    # never read, and a text of 3,000 words got the label of its first 62 tokens without a word.
    cut, window = 0, None
    for offset in itertools.count(0, chunk_size):
        chunk = list(itertools.islice(texts, chunk_size))
        total += len(chunk)
        if not chunk:
            if len(unknown) > UNKNOWN_SHOWN:
                rest = ", ".join(map(str, unknown[UNKNOWN_SHOWN:UNKNOWN_SHOWN + 10]))
                rest += " ..." if len(unknown) > UNKNOWN_SHOWN + 10 else ""
                warn(f"{len(unknown):,} of the {total:,} texts were all unknown tokens ([UNK]) to this model's "
                     f"vocabulary (the first {UNKNOWN_SHOWN} named above; the others are texts {rest}), so "
                     f"{_unknown_means(run_dir, one=False)}.")
            note_cut_texts(cut, total, window)  # one line at the end, not one a text: a file may have thousands
            return
        runs.refuse_non_strings(chunk, offset=offset)
        # Read at each chunk, not when the run was loaded: a process that sets the variable after a first
        # call took the path of that call ever after.
        fast = loaded.fast if os.environ.get("TFLLM_NUMPY_CLASSIFICATION", "1") != "0" else None
        # None where a text holds a character the NumPy tokenizer does not split as TensorFlow Text does.
        longer = []
        probabilities = fast.predict(chunk, longer) if fast else None
        if probabilities is not None:
            tokenizer = fast.tokenizer
            _check_words(chunk, map(tokenizer.token_ids, chunk), tokenizer.oov_id, run_dir, offset, unknown)
            label_names = fast.label_names
            cut, window = cut + sum(longer), fast.sequence_length - 2
        else:
            from tfllm.tokenizers import unknown_token_id
            from tfllm.training.classifier import predict_probabilities

            task, label_names = loaded.task()
            tokenizer = task.preprocessor.tokenizer
            ids = token_ids(tokenizer, chunk)
            _check_words(chunk, ids, unknown_token_id(tokenizer), run_dir, offset, unknown)
            probabilities = predict_probabilities(task, chunk)
            # [start] and [end] take two of the preprocessor's positions, as `pack` counts them.
            window = task.preprocessor.sequence_length - 2
            cut += sum(len(row) > window for row in ids)
        for text, probs in zip(chunk, probabilities):
            # A 30-class classifier printed 30 probabilities a line: --top-k keeps the K most likely, in order.
            shown = range(len(label_names)) if top_k is None else probs.argsort(kind="stable")[::-1][:top_k]
            yield {"text": text, "label": label_names[int(probs.argmax())],
                   "probabilities": {label_names[int(i)]: float(probs[i]) for i in shown}}


@runs.takes_named_options
def predict(run_dir, texts, top_k=None):
    """`tfllm predict` from Python: a list of `{"text", "label", "probabilities"}`, one per text, as the
    command prints them; the run is loaded once per process, so calling it in a loop does not reload.
    `top_k`: "probabilities" holds only the K most likely labels, most likely first."""
    run_dir = runs.run_dir_argument(run_dir, "predict")
    return list(classify(run_dir, runs.texts_argument(texts, "predict's texts"), top_k=top_k))


def _reads_raw_text(run_dir):
    """Whether the run's classifier also reads the raw text (character or word n-gram views), so that a
    text all [UNK] to its vocabulary is still read (`--preset tiny`'s 50 pieces spell few whole words)."""
    config = runs.read_json(runs.path(run_dir, runs.TASK_CONFIG)).get("config", {})
    # An ensemble's views are its members' (each a classifier's config inside the ensemble backbone's).
    members = [member.get("config", {}) for member in config.get("backbone", {}).get("config", {}).get("members", [])]
    return any(classifier.get(view) for classifier in [config, *members] for view in CODE_POINT_VIEWS)


def _check_words(texts, ids, unknown_id, run_dir, offset, unknown):
    """A text the tokenizer makes nothing of (control characters, NUL, zero-width spaces) is as empty as "":
    the model read only its start and end tokens and still printed a confident label, so it is refused. One
    of nothing but unknown tokens (words or characters never seen in training) gets a warning: its label was
    as confident, without a word. `offset`: how many texts came before these (their numbers count from 1
    over all of them). `unknown`: the numbers of the texts all [UNK] so far, which this adds to; the first
    `UNKNOWN_SHOWN` get a warning each (`classify` counts the rest in one at the end)."""
    for i, (text, row) in enumerate(zip(texts, ids), offset + 1):
        # Read as far as the first known token: `row` may be lazy (the NumPy tokenizer's ids as asked for,
        # where looking up every word of a long text twice made `predict --file` 144 texts a second).
        tokens = (int(t) for t in row)
        first = next(tokens, None)
        if first is None and not text.strip():
            # As `tfllm predict RUN ""` says it (tfllm.cli): an empty text is empty, not one of unreadable characters.
            example = "\"a joyous, moving film\""
            raise UserInputError(spelled(
                f"Text {i} is empty; pass the texts to classify, e.g. tfllm predict {shell_path(run_dir)} {example}.",
                python=f"Text {i} is empty; pass the texts to classify, e.g. tfllm.predict({os.fspath(run_dir)!r}, "
                       f"[{example}])."))
        if first is None:
            raise UserInputError(f"Text {i} ({text[:40]!r}) has no words this model reads (only control, invisible or "
                                 "space characters); pass the texts to classify, e.g. `tfllm predict "
                                 f"{shell_path(run_dir)} \"a joyous, moving film\"`.")
        if unknown_id is not None and first == unknown_id and all(t == unknown_id for t in tokens):
            unknown.append(i)
            if len(unknown) <= UNKNOWN_SHOWN:
                warn(f"text {i} ({text[:40]!r}) is all unknown tokens ([UNK]) to this model's vocabulary, "
                     f"so {_unknown_means(run_dir)}.")


def note_cut_texts(cut, total, window):
    """One line (a note; a TfllmWarning to a Python caller) saying that `cut` of `total` texts ran past the
    classifier's window of `window` tokens, whose tokens past it it never read: a text of 3,000 words got the
    label of its first 62 tokens without a word. Nothing when `cut` is 0. `tfllm predict` and `evaluate` end
    with it."""
    if cut:
        said = (f"{cut:,} of the {total:,} texts were longer than the model's window of {window} tokens; "
                f"only their first {window} tokens were read.")
        note(f"tfllm: note: {said}", python=said)  # a Python caller's warning without the command's prefix


def _unknown_means(run_dir, one=True):
    """What a text all [UNK] means for its label. Not "words never seen in training": a small vocabulary
    (`--preset tiny`'s) cannot spell words that training had plenty of."""
    if _reads_raw_text(run_dir):
        return (f"only {'its' if one else 'their'} characters and words, as the model's n-gram views read them, "
                f"inform {'its label' if one else 'their labels'}")
    return "its label says nothing about it" if one else "their labels say nothing about them"


def token_ids(tokenizer, texts):
    """The token ids a KerasHub tokenizer makes of each text (its rows: ragged, lists, or zero-padded)."""
    import keras
    import tensorflow as tf

    ids = tokenizer(tf.constant(list(texts)))
    if isinstance(ids, tf.RaggedTensor):
        return ids.to_list()
    if isinstance(ids, list):
        return ids
    return [[t for t in row if t != 0] for row in keras.ops.convert_to_numpy(ids).tolist()]
