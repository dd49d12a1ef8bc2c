"""Text in, text out: prompts -> token ids -> KerasHub cached decoding -> text.

`Generator` pairs a trained `tfllm.models.CausalLM` with its tokenizer. The
decoding loop itself is KerasHub's (`CausalLM.generate_step` and a
`keras_hub.samplers.Sampler` subclass whose options are tensors, so one
compiled function serves every temperature/top-k/top-p/seed; beam search uses
KerasHub's `BeamSampler`); this module adds what a text user needs: prompts of different lengths in one
batch, input checks, stop strings, seeds that repeat, and streaming.

Streaming runs the compiled loop in chunks: each chunk's prompt is the last
`sequence_length` tokens produced so far (all the model can see), padded into
one fixed-shape buffer, so every chunk reuses one compiled function. Its noise
is drawn at each token's position in the whole text (`position_offset`), so a
streamed text is the one a single call (and the SavedModel) makes with the same
seed, for tfllm's models at their default `window_keep` (which always see the
last `sequence_length` tokens).
"""

import inspect
import re

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm import runs
from tfllm.config import MAX_NEW_TOKENS, SAMPLERS, SAMPLING_DEFAULTS, truncate_at_stops  # noqa: F401  (there: the CLI needs no TensorFlow)
from tfllm.config import GREEDY_BELOW, MAX_BEAMS, check_sampler_options, is_number, refuse_unread_options  # noqa: F401  (TensorFlow-free)
from tfllm.config import (CJK_CLASS, WORDPIECE_SUFFIX, is_suffix_piece, join_cjk, sentencepiece_completion,
                          wordpiece_completion)
from tfllm.data import unencodable_characters
from tfllm.datasets.text import unix_newlines
from tfllm.errors import UserInputError, shell_path
from tfllm.tokenizers import (CharacterTokenizer, detokenizes_with_spaces, keeps_leading_suffix, marks_word_starts,
                              prompt_start_ids, special_token_ids, unknown_token_id)

MAX_PROMPTS = 256
STREAM_CHUNK = 64  # new tokens per compiled call when streaming
WIDTH_BUCKET = 128
# XLA compiles one decoding program per (batch, width) shape, 4-5 s each. Batches are
# padded to a power of two (copies of the last row, dropped after decoding) and widths
# to a multiple of WIDTH_BUCKET up to 1024, then to a power of two, so the programs a
# server can ever compile are at most len(BATCH_BUCKETS) x len(WIDTH_BUCKETS). `Generator`
# pads its buffers the same way, so a notebook's next max_new_tokens or prompt does not recompile.
BATCH_BUCKETS = tuple(2**i for i in range(17))  # 1 ... 65536 rows
WIDTH_BUCKETS = tuple(range(WIDTH_BUCKET, 1024 + 1, WIDTH_BUCKET)) + tuple(2**i for i in range(11, 21))


UNIFORM_MAX = 1.0 - 2.0**-24  # the largest float32 below 1


def _uniform(seed, step, vocabulary_size):
    """Deterministic uniforms in (0, 1) of shape `[batch, vocabulary]` from per-row seeds (`step`: a scalar or
    one per row).

    A counter-based hash (murmur3's finaliser over seed, step and token id):
    every row gets its own stream, so a row's text depends on its own seed
    only, not on what else is in the batch (TF Serving batches requests).
    """
    u32 = lambda x: tf.cast(x, tf.uint32)  # noqa: E731
    step = tf.reshape(u32(step), [-1, 1])  # one step for the batch, or one a row
    x = (u32(seed)[:, None] * u32(0x9E3779B1)) ^ (step * u32(0x85EBCA77)) ^ (
        u32(tf.range(vocabulary_size))[None, :] * u32(0xC2B2AE3D)
    )
    for shift, mul in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
        x = x ^ tf.bitwise.right_shift(x, u32(shift))
        if mul is not None:
            x = x * u32(mul)
    # The top value, (2**24 - 0.5) / 2**24, rounds to 1.0 in float32, and -log(-log(1)) is +inf: that token
    # won outright (and NumPy warned of a division by zero). It becomes the largest float32 below 1.
    return tf.minimum((tf.cast(tf.bitwise.right_shift(x, u32(8)), tf.float32) + 0.5) / float(2**24), UNIFORM_MAX)


class OptionSampler(keras_hub.samplers.Sampler):
    """KerasHub sampler whose decoding options are per-row tensors.

    One compiled loop then serves greedy (temperature 0), top-k, top-p and
    plain sampling, in-process and inside the exported SavedModel alike.
    Sampling is Gumbel-max over the kept tokens with `_uniform` noise.

    Args:
        temperature, top_k, top_p, seed: `[batch]` tensors. `top_k <= 0`
            or above the vocabulary means no top-k cut (nanoGPT clamps k);
            `top_p >= 1` means no nucleus cut.
        position_offset: `[batch]`, what to add to a buffer position to make it the position in the whole
            text, where the noise is drawn (a streaming chunk's buffer starts part-way; default 0).
        length: `[batch]`, positions to decode up to in a buffer padded wider (their maximum; default its width).

    Example:
    >>> sampler = OptionSampler(temperature=tf.constant([0.0]), top_k=tf.constant([0]),
    ...                         top_p=tf.constant([1.0]), seed=tf.constant([0]))  # greedy
    """

    def __init__(self, temperature, top_k, top_p, seed, banned_token_ids=(), position_offset=None, length=None):
        super().__init__(temperature=1.0)
        self.options = (temperature, top_k, top_p, seed)
        self.position_offset = position_offset
        self.length = length
        self.banned_token_ids = list(banned_token_ids)
        self._index = None

    def __call__(self, next, prompt, cache=None, index=0, mask=None, stop_token_ids=None, **kwargs):
        """KerasHub's `Sampler.__call__` loop (TensorFlow), with the token at `index` read by `tf.gather` and
        written by a dynamic update rather than `prompt[:, index]`, and bounded by `length`.

        XLA needs a strided slice's bounds at compile time, so `prompt[:, index]` made it take the start index,
        and so the padding mask it is computed from, as a constant: every new prompt length compiled the whole
        program again: seconds each for a notebook's `tfllm.generate` calls, whose buffer fits the window (measured:
        a buffer past the window, with its slide branch, and a served model were not hit;
        benchmarks/results/served_prompt_lengths.json). A gather and a dynamic update take their index at run time.
        """
        index = tf.cast(index, tf.int32)
        mask = tf.zeros_like(prompt, tf.bool) if mask is None else tf.cast(mask, tf.bool)
        cache = () if cache is None else cache
        # A buffer padded to a bucket (`Generator._run`) decodes only up to the width asked for: the steps,
        # and so the tokens, of an unpadded buffer.
        length = tf.shape(prompt)[-1] if self.length is None else tf.reduce_max(self.length)

        def cond(prompt, cache, index, mask):
            if stop_token_ids is None:
                return index < length
            stop = tf.reduce_any(tf.equal(prompt[..., None], tf.constant(list(stop_token_ids), prompt.dtype)), -1)
            done = tf.reduce_any(stop & ~mask, axis=-1)  # a row is done at a new (not prompt) stop token
            return tf.logical_and(index < length, tf.logical_not(tf.reduce_all(done)))

        def body(prompt, cache, index, mask):
            self._index = index  # the step, for the noise `get_next_token` draws
            logits, _, cache = next(prompt, cache, index)
            token = tf.cast(self.get_next_token(self.compute_probabilities(logits)), prompt.dtype)
            token = tf.where(tf.gather(mask, index, axis=1), tf.gather(prompt, index, axis=1), token)  # keep the prompt's
            prompt = keras.ops.slice_update(prompt, [0, index], token[:, None])
            return prompt, cache, index + 1, mask

        return tf.while_loop(cond, body, (prompt, cache, index, mask))[0]

    def compute_probabilities(self, logits):
        temperature = tf.cast(self.options[0], tf.float32)
        # Greedy rows (temperature 0, or below GREEDY_BELOW) keep temperature 1: same argmax, as GreedySampler
        # computes it.
        temperature = tf.where(temperature >= GREEDY_BELOW, temperature, 1.0)
        logits = tf.cast(logits, tf.float32) / temperature[:, None]
        # Special tokens other than the end token (padding, unknown, start, mask) are never text to emit. Banned
        # after scaling, to -inf: a finite -1e9 divided by a huge temperature (1e30) was as likely as any token,
        # and a banned id ended the text at once.
        if self.banned_token_ids:
            banned = tf.reduce_any(tf.range(tf.shape(logits)[-1])[:, None] == tf.constant(self.banned_token_ids)[None, :], -1)
            logits = tf.where(banned[None, :], -float("inf"), logits)
        return keras.activations.softmax(logits)

    def get_next_token(self, probabilities):
        temperature, top_k, top_p, seed = self.options
        vocabulary_size = tf.shape(probabilities)[-1]
        greedy = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        sorted_probs, sorted_ids = tf.math.top_k(probabilities, k=vocabulary_size)
        k = tf.where((top_k > 0) & (top_k < vocabulary_size), top_k, vocabulary_size)
        rank = tf.range(vocabulary_size)[None, :]
        # Nucleus: keep a token while the mass before it is below p (the top token always stays).
        before = tf.cumsum(sorted_probs, axis=-1, exclusive=True)
        keep = (rank < k[:, None]) & (before < tf.cast(top_p, tf.float32)[:, None])
        step = self._index if self.position_offset is None else self._index + tf.cast(self.position_offset, tf.int32)
        gumbel = -tf.math.log(-tf.math.log(_uniform(seed, step, vocabulary_size)))
        scores = tf.where(keep, tf.math.log(sorted_probs + 1e-30) + gumbel, -float("inf"))
        sampled = tf.gather(sorted_ids, tf.argmax(scores, axis=-1, output_type=tf.int32), batch_dims=1)
        return tf.where(tf.cast(temperature, tf.float32) >= GREEDY_BELOW, sampled, greedy)


class BeamSearch(keras_hub.samplers.BeamSampler):
    """KerasHub's `BeamSampler`, never choosing `banned_token_ids` (special tokens but the end), as
    `OptionSampler` does: beams chose [UNK] and [PAD], which the text then dropped, so one beam was not
    greedy and fewer tokens came back than asked for."""

    def __init__(self, num_beams, banned_token_ids=(), length=None):
        super().__init__(num_beams=num_beams)
        self.banned_token_ids = list(banned_token_ids)
        self.length = length  # `[batch]`: decode up to their maximum in a buffer padded wider, as `OptionSampler`

    def run_loop(self, cond, body, model=None, loop_vars=None, maximum_iterations=None):
        # The steps of an unpadded buffer, so the same beams: the padding is never decoded, and the log-likelihoods
        # the best beam is picked by add up the same steps (`loop_vars[2]` is the index the loop starts at).
        if self.length is not None:
            maximum_iterations = tf.reduce_max(self.length) - loop_vars[2]
        return super().run_loop(cond, body, model=model, loop_vars=loop_vars, maximum_iterations=maximum_iterations)

    def compute_probabilities(self, logits):
        if self.banned_token_ids:
            ids = keras.ops.arange(keras.ops.shape(logits)[-1])
            banned = keras.ops.any(ids[:, None] == keras.ops.convert_to_tensor(self.banned_token_ids)[None, :], -1)
            logits = keras.ops.where(banned[None, :], keras.ops.cast(-1e9, logits.dtype), logits)
        return super().compute_probabilities(logits)


def decode_function(model, stop_token_ids, jit_compile=True, banned_token_ids=()):
    """A compiled `f(inputs) -> token_ids` running `model.generate_step` with an `OptionSampler`.

    `inputs` holds `token_ids`/`padding_mask` (`[batch, width]`, prompts
    left-aligned) and per-row `temperature`, `top_k`, `top_p`, `seed` (and `position_offset`, `length`, see
    `OptionSampler`).
    `stop_token_ids` end a row; `banned_token_ids` are never sampled.
    """

    # autograph=False on tfllm's tf.functions: their code and KerasHub's (samplers, generate_step) use graph ops
    # and loops over Python values only, so AutoGraph's source rewrite would change nothing and costs a
    # fresh process up to a second a function (it does not convert `keras`, but does `keras_hub`).
    @tf.function(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
    def decode(inputs):
        sampler = OptionSampler(inputs["temperature"], inputs["top_k"], inputs["top_p"], inputs["seed"],
                                banned_token_ids, inputs.get("position_offset"), inputs.get("length"))
        return generate_step(model, {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
                             list(stop_token_ids), sampler)["token_ids"]

    return decode


def call_for_any_batch(function, *args, any_length=False):
    """Calls the `tf.function` `function` on `args` through a trace made for any batch size (and, with
    `any_length`, any length of every dimension).

    With `reduce_retracing` alone the first call traces for its own batch size and
    the first call with another size traces again, now for any size: seconds of
    Python for a decoding loop. Tracing first with the batch dimension unknown
    leaves one trace that every batch size uses (XLA still compiles once per shape).
    """
    specs = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None] * len(t.shape) if any_length else [None, *t.shape[1:]], t.dtype), args)
    function.get_concrete_function(*specs)  # traced on the first call, looked up after
    return function(*args)


def generate_step(model, inputs, stop_token_ids, sampler):
    """`model.generate_step(inputs)` decoding with `sampler`, leaving the model as it was.

    The sampler (and the graph tensors traced for it) never becomes the
    model's: tfllm's `CausalLM` takes it as an argument; any other KerasHub
    task gets it for the duration of the call only, so a later
    `model.generate()` finds its own sampler and compiled function untouched.
    """
    if "sampler" in inspect.signature(model.generate_step).parameters:
        return model.generate_step(inputs, stop_token_ids=stop_token_ids, sampler=sampler)
    own = model.sampler
    model.sampler = sampler
    try:
        return model.generate_step(inputs, stop_token_ids=stop_token_ids)
    finally:
        model.sampler = own


def emits_end_token(model):
    """Whether a causal LM may emit (and so stop at) its tokenizer's end token.

    tfllm's `CausalLM` records whether its training targets ever held the end token (`end_token_trained`). Its
    corpora are running text, the end token in none of them, so it never learnt when to stop: sampling picked
    the end token now and then by its small leftover probability and the text ended early, far short of
    `max_new_tokens`, without a word (tour G). Such a model never emits it. A model whose targets held it (a
    KerasHub preset such as GPT-2, pretrained with its end token between documents, which has no record) may
    stop there, as KerasHub's `generate()` does.
    """
    return bool(getattr(model, "end_token_trained", True))


def never_emitted_ids(model, tokenizer):
    """The ids no tfllm runtime emits for `model` (`Generator`, the SavedModel, the TFLite loop via its
    `metadata.json`, `tfllm.explain`; `tfllm.fast_generation` reads the same record): the special ids other than
    the end id (padding, unknown, start, mask: never text), and the end id too where `emits_end_token` is False."""
    end_id = int(tokenizer.end_token_id)
    return [i for i in special_token_ids(tokenizer) if i != end_id or not emits_end_token(model)]


def context_window(model):
    """How many tokens a causal LM sees: tfllm's `sequence_length`, a KerasHub backbone's position table
    (`max_sequence_length`: GPT-2, OPT), or for rotary-position models without one (Llama, Gemma,
    Mistral, ...) the length its preprocessor packs, which it was fine-tuned on."""
    backbone = model.backbone
    return (getattr(backbone, "sequence_length", None) or getattr(backbone, "max_sequence_length", None)
            or model.preprocessor.sequence_length)


def unread_prefix(length, window, keep):
    """How many leading tokens of a `length`-token prompt a sliding model (`CausalLM.generate_step`) never reads.

    Past its window the loop starts by re-encoding the last `keep` tokens before the prompt's last one, so a
    prompt longer than `window` is decoded exactly as its last `keep + 1` tokens are (with the noise drawn
    `unread_prefix` positions on, `OptionSampler`'s `position_offset`). Dropping the rest up front saves a
    buffer (and a compiled program) as wide as the whole prompt: a 60,000-character prompt took 8 s to continue
    by 4 tokens. Works on ints and tensors alike.
    """
    return keras.ops.where(length > window, length - (keep + 1), 0)


# The units a prompt's unknown text is named in: runs of letters and digits, each CJK character, each other
# character (punctuation, emoji) alone, as WordPiece splits text before it pieces words.
_WORDS = re.compile(rf"{CJK_CLASS}|(?:(?!{CJK_CLASS})[^\W_])+|\S")
_MOST_WORDS = 2000  # distinct units tokenized to name the unknown ones (a 100,000-character prompt is refused fast)


def _unseen_words(tokenizer, prompt, unk_id):
    """The distinct words (see `_WORDS`) of `prompt` that the tokenizer, tokenizing each alone, gives [UNK] for."""
    words = list(dict.fromkeys(_WORDS.findall(prompt)))[:_MOST_WORDS]
    if not words:
        return []
    ids = tokenizer.tokenize(tf.constant(words))
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_list()
    elif not isinstance(ids, list):  # eager KerasHub tokenizers hand back lists of ids; a dense tensor is padded
        ids = keras.ops.convert_to_numpy(ids).tolist()
    ids = [np.asarray(row).ravel().tolist() for row in ids]
    return [word for word, row in zip(words, ids) if unk_id in row]


def unseen_text(tokenizer, text, most=None):
    """The characters (a character tokenizer) or words of `text` the tokenizer gives [UNK] for, in the order they
    first appear; at most `most` (words: looked for in `_MOST_WORDS`-word pieces of the text until found)."""
    if isinstance(tokenizer, CharacterTokenizer):
        known = set(tokenizer.get_vocabulary())
        return list(dict.fromkeys(c for c in text if c not in known))[:most]
    unk_id = unknown_token_id(tokenizer)
    words, found = list(dict.fromkeys(_WORDS.findall(text))), []
    for start in range(0, len(words), _MOST_WORDS):
        found += _unseen_words(tokenizer, " ".join(words[start:start + _MOST_WORDS]), unk_id)
        if most is not None and len(found) >= most:
            break
    return found[:most]


def refuse_unseen(tokenizer, prompt, ids):
    """Refuses a prompt whose token `ids` hold the tokenizer's unknown id: text it has no token for (for a
    character tokenizer, the characters are named). `tfllm generate` and `tfllm explain` refuse it alike.
    The unknown id is the tokenizer's own wherever it keeps it (`tokenizers.unknown_token_id`): a KerasHub
    BertTokenizer has no `unk_token_id`, and its prompts of unknown words went through as [UNK]."""
    unk_id = unknown_token_id(tokenizer)
    dropped = _byte_pair_dropped(tokenizer, prompt, ids) if unk_id is None else []
    if not dropped and (unk_id is None or not (np.asarray(ids) == unk_id).any()):
        return
    if dropped:
        what = "characters " + ", ".join(repr(c) for c in dropped[:10]) + (" ..." if len(dropped) > 10 else "")
    elif isinstance(tokenizer, CharacterTokenizer):
        unseen = sorted(unseen_text(tokenizer, prompt))
        what = "characters " + ", ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
    else:
        # A WordPiece word the tokenizer cannot piece together is one [UNK] ("Python" -> [UNK]): the message
        # named no text. Each word, ideograph and punctuation mark is tokenized alone to find those that are.
        unseen = _unseen_words(tokenizer, prompt, unk_id)
        what = ("words " + ", ".join(repr(w) for w in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
                if unseen else "text")
    them = "it" if what == "text" else "them"
    raise UserInputError(f"Prompt {shown(prompt)} contains {what} the tokenizer has no token for (never seen in "
                         f"training, or left out of its vocabulary_size); remove or replace {them}.")


def _byte_pair_dropped(tokenizer, prompt, ids):
    """The characters of `prompt` a byte-pair tokenizer has no token for. It gives no [UNK]: its eager path (the
    prompt's `ids`) drops them ("the café" went on as "the caf"), its TF ops, which training and the SavedModel
    tokenize with, give -1 (refused there). Where the ids give the prompt back, nothing was dropped: the TF
    ops (traced once, ~2 s) run only when they do not."""
    if not isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        return []
    ids = np.asarray(ids).ravel()
    if len(ids):
        text = keras.ops.convert_to_numpy(tokenizer.detokenize(ids[None, :].astype("int32")))
        text = text[0] if np.ndim(text) else text
        if (text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)) == prompt:
            return []
    return unencodable_characters(tokenizer, list(dict.fromkeys(prompt)))


class Generator:
    """A causal LM and its tokenizer, ready to turn prompts into text.

    Args:
        model: a trained `tfllm.models.CausalLM` (or a KerasHub `CausalLM`).
        tokenizer: the tokenizer it was trained with.
        jit_compile: compile the decoding loop with XLA (measured 3x faster on
            CPU for the nanogpt-cpu model; see benchmarks/bench_generation.py).
        window: the context window; by default `context_window(model)`.
        start_ids: ids put before every prompt; by default `prompt_start_ids(model.preprocessor)` (a KerasHub
            preset's start token, as its `generate()` puts it; none for tfllm's own models). Give them while
            the preprocessor is detached for training.
        document_start: the text an empty prompt stands for (`tfllm.datasets.text.document_start`: the run
            corpus's document separator), so that "" starts a new document; None refuses an empty prompt
            (unless `start_ids` begin every text).

    Example:
    >>> generator = load_generator("runs/shakespeare")
    >>> generator.generate(["ROMEO:", "JULIET:"], max_new_tokens=50, sampler="top_k", seed=1)
    ['\\nWhat ...', '\\nO, ...']
    """

    def __init__(self, model, tokenizer, jit_compile=True, window=None, start_ids=None, document_start=None):
        self.model = model
        self.tokenizer = tokenizer
        self.jit_compile = jit_compile
        self.vocabulary_size = model.backbone.vocabulary_size
        self.window = window or context_window(model)
        # tfllm's CausalLM slides its window past the end; KerasHub's models stop at their last position.
        self.slides = hasattr(model, "window_keep")
        # Special ids come from the tokenizer (tfllm's, or a KerasHub preset's own).
        self.end_id = int(tokenizer.end_token_id)
        self.unk_id = unknown_token_id(tokenizer)  # WordPiece's oov_token, a SentencePiece model's own too
        self.special_ids = special_token_ids(tokenizer)
        self.banned_ids = never_emitted_ids(model, tokenizer)
        self.start_ids = prompt_start_ids(getattr(model, "preprocessor", None)) if start_ids is None else list(start_ids)
        self.document_start = document_start
        self._compiled = {}  # (sampler family, stop ids) -> compiled decoding function

    # --- input checks -------------------------------------------------------

    def _check_options(self, prompts, max_new_tokens, sampler, temperature, top_k, top_p, num_beams, seed=None):
        runs.texts_argument(prompts, "prompts")
        prompts = list(prompts)
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise UserInputError(f"Give between 1 and {MAX_PROMPTS} prompts, got {len(prompts)}.")
        runs.refuse_non_strings(prompts, "Prompt {}")
        if (not isinstance(max_new_tokens, (int, np.integer)) or isinstance(max_new_tokens, bool)
                or not 0 < max_new_tokens <= MAX_NEW_TOKENS):
            raise UserInputError(f"--max-new-tokens must be an integer from 1 to {MAX_NEW_TOKENS}, "
                                 f"got {max_new_tokens!r}.")
        if sampler not in SAMPLERS:
            raise UserInputError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        check_sampler_options(sampler, temperature, top_k, top_p, num_beams, seed)
        return prompts

    def encode(self, prompt):
        """Token ids of one prompt (after the start ids), refusing empty prompts and unseen characters."""
        if prompt == "" and self.start_ids:  # a KerasHub preset's start token alone begins a new text
            return np.asarray(self.start_ids, "int32")
        if not isinstance(prompt, str) or not prompt:
            raise UserInputError("Empty prompt: this model has no run's document separator to start a new text "
                                 "from; give at least one character of text to continue.")
        ids = np.asarray(keras.ops.convert_to_numpy(self.tokenizer.tokenize(prompt))).astype("int32").ravel()
        refuse_unseen(self.tokenizer, prompt, ids)  # first: a byte-pair tokenizer drops what it has no token for
        if len(ids) == 0:
            raise UserInputError(f"Prompt {shown(prompt)} has no tokens the model knows (only spaces?).")
        return np.concatenate([np.asarray(self.start_ids, "int32"), ids]) if self.start_ids else ids

    def decode(self, ids, prompt=None):
        """The text of `ids` (special ids dropped); given the `prompt` they follow, the completion as it follows
        it: for WordPiece, with the space before its first word (`tfllm.config.wordpiece_completion`), for
        SentencePiece the space of its first piece's "\u2581" (`tfllm.config.sentencepiece_completion`), so that
        prompt + completion is the text."""
        ids = [int(i) for i in ids if int(i) not in self.special_ids]
        if not ids:
            return ""
        text = self.tokenizer.detokenize(np.asarray([ids], "int32"))
        text = keras.ops.convert_to_numpy(text)
        text = text[0] if np.ndim(text) else text
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        # WordPiece puts a space between every two tokens, also between two Chinese characters: removed, as in
        # the SavedModel and KerasHub's generate(). Streaming decodes all new ids again for each chunk, so a
        # space at a chunk's edge is removed too, and the chunks add up to one call's text.
        if marks_word_starts(self.tokenizer) and prompt is not None:  # SentencePiece: "which" -> " which"
            return sentencepiece_completion(prompt, text, self.tokenizer.id_to_token(ids[0]))
        if not detokenizes_with_spaces(self.tokenizer):
            return text
        text = join_cjk(text)
        if prompt is None:
            return text
        suffix = getattr(self.tokenizer, "suffix_indicator", WORDPIECE_SUFFIX)
        whole_word = not is_suffix_piece(self.tokenizer.id_to_token(ids[0]), suffix)
        if not whole_word and keeps_leading_suffix(self.tokenizer) and text.startswith(suffix):
            text = text[len(suffix):]  # "king" + "##k": KerasHub's own detokenizer gave "##k"
        return wordpiece_completion(prompt, text, whole_word)

    # --- compiled decoding --------------------------------------------------

    def _function(self, sampler, num_beams, stop_token_ids):
        """The compiled decoding function for a sampler family, built once and cached.

        Greedy, top-k, top-p and random sampling share one function whose
        options are tensors (`OptionSampler`), so changing them never
        recompiles; beam search uses KerasHub's `BeamSampler`.
        """
        key = ("beam", num_beams) if sampler == "beam" else ("options",)
        key += (tuple(stop_token_ids),)
        if key not in self._compiled:
            if sampler == "beam":
                # Its own compiled function, as KerasHub's make_generate_function builds one, but
                # without setting the model's sampler, generate_function or jit_compile.
                banned, model = self.banned_ids, self.model

                @tf.function(jit_compile=self.jit_compile, reduce_retracing=True, autograph=False)
                def beam_decode(inputs):
                    beam = BeamSearch(num_beams, banned, inputs["length"])
                    return generate_step(model, {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
                                         list(stop_token_ids), beam)["token_ids"]

                self._compiled[key] = beam_decode
            else:
                self._compiled[key] = decode_function(self.model, stop_token_ids, self.jit_compile, self.banned_ids)
        return self._compiled[key]

    def _run(self, function, rows, width, options):
        """`function`'s `[len(rows), width]` token ids for prompts `rows`. The buffer is padded to the export's
        buckets (rows: copies of the last, dropped after; positions: not decoded, the samplers' `length`), so that
        another max_new_tokens, prompt length or number of prompts reuses the compiled program (seconds of XLA
        each) rather than compiling a new one."""
        n = len(rows)
        wide = next((b for b in WIDTH_BUCKETS if b >= width), width)
        # Within the window, the window itself: a KerasHub model has no position past it (`generate` checks
        # the width fits), and a sliding model's program for a wider buffer holds the slide branch, which made
        # a notebook's first call ~2 s slower to compile (`benchmarks/notebook_generate_calls.py`).
        if not self.slides or width <= self.window:
            wide = max(width, min(wide, self.window))
        batch = next((b for b in BATCH_BUCKETS if b >= n), n)
        options = dict(options, length=np.full([n], width, "int32"))
        take = np.minimum(np.arange(batch), n - 1)
        buffer = np.zeros((n, wide), "int32")
        for i, ids in enumerate(rows):
            buffer[i, : len(ids)] = ids
        mask = (np.arange(wide)[None, :] < np.array([len(r) for r in rows])[:, None]).astype("int32")
        inputs = {k: np.asarray(v)[take] for k, v in {"token_ids": buffer, "padding_mask": mask, **options}.items()}
        return keras.ops.convert_to_numpy(call_for_any_batch(function, inputs))[:n, :width]

    def generate(
        self,
        prompts,
        max_new_tokens=200,
        sampler=SAMPLING_DEFAULTS["sampler"],
        temperature=None,
        top_k=None,
        top_p=None,
        num_beams=None,
        seed=None,
        stop=None,
        stream_callback=None,
    ):
        """Continues each prompt; returns the new text of each (prompt not included): the completion, with the
        space a WordPiece model's first new word needs before it (`tfllm.config.wordpiece_completion`), so that
        prompt + completion is the whole text.

        Args:
            prompts: list of strings (lengths may differ). "" starts a new document: a run's model continues its
                corpus's document separator (a blank line between CSV/JSONL rows, a line break in a .txt).
            max_new_tokens: 1 to `MAX_NEW_TOKENS` new tokens per prompt.
            sampler: "greedy", "top_k", "top_p", "random" or "beam".
            temperature: divides the logits; 0 means greedy. The defaults (None: not given) are `tfllm generate`'s
                (`tfllm.config.SAMPLING_DEFAULTS`: the top_k sampler, temperature 0.8, top_k 200). An option
                given to a sampler that does not read it is refused (`refuse_unread_options`), as
                `tfllm.generate` and the command refuse it: it was ignored without a word.
            top_k: keep the k most likely tokens (clamped to the vocabulary).
            top_p: keep the smallest set of tokens with this total probability.
            num_beams: beams for the "beam" sampler.
            seed: integer; row i samples with seed `seed + i`, so the same
                seed and settings give the same text (also in the SavedModel).
            stop: a string or list of strings; text ends before the first one
                (single-token stops also end decoding early).
            stream_callback: called as `stream_callback(index, new_text)` while
                text is produced, in chunks of `STREAM_CHUNK` tokens.
        """
        temperature, top_k, top_p, num_beams = sampling_options(sampler, temperature, top_k, top_p, num_beams, seed)
        prompts = self._check_options(prompts, max_new_tokens, sampler, temperature, top_k, top_p, num_beams, seed)
        # Line breaks as training read them ("\r\n" and "\r" as "\n"): a Windows prompt's "\r" was refused as a
        # character never seen in training, which training had itself dropped.
        prompts = [unix_newlines(p) for p in prompts]
        stops = [stop] if isinstance(stop, str) else list(runs.texts_argument(stop or [], "stop"))
        if any(not isinstance(s, str) or not s for s in stops):
            raise UserInputError(f"Stop strings must be non-empty strings, got {stops!r}.")
        if stream_callback is not None and not callable(stream_callback):
            raise UserInputError(f"stream_callback must be a function called as f(index, new_text), "
                                 f"got {type(stream_callback).__name__}.")
        # An empty prompt starts a new document: the model continues its corpus's separator (only the new text
        # is returned, as for any prompt).
        if self.document_start and not self.start_ids:
            prompts = [self.document_start if p == "" else p for p in prompts]
        encoded = [self.encode(p) for p in prompts]
        longest = max(len(ids) for ids in encoded)
        if not self.slides and longest >= self.window:  # no room for one new token: "ask for at most 0" was the fix
            raise UserInputError(f"This model sees at most {self.window} tokens and the longest prompt has {longest}; "
                                 f"shorten it to at most {self.window - 1} tokens, leaving room for the new ones.")
        if not self.slides and longest + max_new_tokens > self.window:
            raise UserInputError(f"This model sees at most {self.window} tokens and the longest prompt has {longest}; "
                                 f"ask for at most {self.window - longest} new tokens.")
        stop_token_ids = (self.end_id, *self._single_token_stops(stops))
        function = self._function(sampler, num_beams, stop_token_ids)
        n = len(prompts)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - MAX_PROMPTS))
        greedy = sampler == "greedy" or temperature == 0
        options = {
            "temperature": np.full([n], 0.0 if greedy else temperature, "float32"),
            # Clamped to the vocabulary, as documented (a k beyond int32 was an OverflowError).
            "top_k": np.full([n], min(int(top_k), self.vocabulary_size) if sampler == "top_k" else 0, "int32"),
            "top_p": np.full([n], top_p if sampler == "top_p" else 1.0, "float32"),
            "seed": (int(seed) + np.arange(n)).astype("int32"),
            "position_offset": np.zeros([n], "int32"),
        }
        window = self.window

        if stream_callback is None:
            if self.slides:  # only what the model reads (`unread_prefix`), its noise drawn where it was
                drop = [int(unread_prefix(len(ids), window, self.model.window_keep or window - 1)) for ids in encoded]
                encoded = [ids[d:] for ids, d in zip(encoded, drop)]
                options["position_offset"] = np.asarray(drop, "int32")
            width = max(len(ids) for ids in encoded) + max_new_tokens
            out = self._run(function, encoded, width, options)
            new = [self._cut(out[i, len(ids): len(ids) + max_new_tokens], stop_token_ids) for i, ids in enumerate(encoded)]
            return [truncate_at_stops(self.decode(ids, prompt), stops) for ids, prompt in zip(new, prompts)]

        # Streaming: fixed-shape chunks that see the last `window` tokens. A model that does not slide
        # (a KerasHub preset's) has no position beyond its window: one chunk of it (checked above).
        new = [[] for _ in encoded]
        done = [False] * n
        printed = [""] * n
        width = window + STREAM_CHUNK if self.slides else longest + max_new_tokens
        while not all(done):
            contexts = [np.concatenate([ids, np.asarray(t, "int32")])[-window:] for ids, t in zip(encoded, new)]
            # A chunk's buffer position + this = the position in the whole text, where a single call draws its noise.
            offsets = [len(ids) + len(t) - len(c) for ids, t, c in zip(encoded, new, contexts)]
            out = self._run(function, contexts, width, dict(options, position_offset=np.asarray(offsets, "int32")))
            for i, context in enumerate(contexts):
                if done[i]:
                    continue
                chunk = self._cut(out[i, len(context):], stop_token_ids)
                hit_stop = len(chunk) < width - len(context)
                new[i] += chunk.tolist()[: max_new_tokens - len(new[i])]
                full = self.decode(new[i], prompts[i])
                text = truncate_at_stops(full, stops)
                if len(new[i]) >= max_new_tokens or hit_stop or text != full:
                    done[i] = True
                if text[len(printed[i]):]:
                    stream_callback(i, text[len(printed[i]):])
                    printed[i] = text
        return printed

    def greedy_ids(self, prompt_ids, max_new_tokens):
        """The new ids of one prompt's greedy continuation, before the end token: what
        `generate(sampler="greedy")` decodes, as ids (exports compare their own against them)."""
        stop_token_ids = (self.end_id,)
        options = {"temperature": np.zeros([1], "float32"), "top_k": np.zeros([1], "int32"),
                   "top_p": np.ones([1], "float32"), "seed": np.zeros([1], "int32"),
                   "position_offset": np.zeros([1], "int32")}
        ids = np.asarray(prompt_ids, "int32")
        out = self._run(self._function("greedy", 1, stop_token_ids), [ids], len(ids) + max_new_tokens, options)
        return self._cut(out[0, len(ids):], stop_token_ids).tolist()

    def _single_token_stops(self, stops):
        ids = []
        for s in stops:
            encoded = np.asarray(keras.ops.convert_to_numpy(self.tokenizer.tokenize(s))).ravel()
            if len(encoded) == 1 and int(encoded[0]) not in self.special_ids and self.decode(encoded) == s:
                ids.append(int(encoded[0]))
        return ids

    @staticmethod
    def _cut(ids, stop_token_ids):
        """New ids up to (not including) the first stop token."""
        hits = np.flatnonzero(np.isin(ids, stop_token_ids))
        return ids[: hits[0]] if len(hits) else ids



def shown(text, limit=60):
    """`text` quoted for a message, cut at `limit` characters: a 1 MB prompt made a 1 MB error line."""
    return repr(text[:limit]) + (f" (+{len(text) - limit:,} characters)" if len(text) > limit else "")


def load_generator(run_dir, jit_compile=True, dtype=None):
    """The `Generator` of a finished text-generation (or causal pretraining) run directory
    (`dtype`: as `runs.load_task`'s)."""
    run_dir = runs.run_dir_argument(run_dir, "load_generator")
    task = runs.task_of(run_dir)
    if task == "translate":
        raise UserInputError(f"{run_dir!r} holds {runs.TASK_NAMES[task]}: use `tfllm translate {shell_path(run_dir)} TEXT`.")
    if task == "classify" or (task == "pretrain" and runs.read_config(run_dir).get("objective") != "causal"):
        raise UserInputError(
            f"{run_dir!r} holds {runs.TASK_NAMES[task]} that does not generate text; "
            f"train one with {runs.train_command('generate')} (or {runs.train_command('pretrain', objective='causal')})."
        )
    # No `warnings.catch_warnings()` here: it swaps the process's filter list, so two threads loading at once
    # left "ignore" on for good (the user's warnings and tfllm's lost); a run's load warns of nothing now
    # (the optimizer state it was for is not in a preset).
    with runs.loading(run_dir):
        model = runs.load_task(run_dir, keras_hub.models.CausalLM, dtype=dtype)
    from tfllm.datasets.text import document_start

    return Generator(model, model.preprocessor.tokenizer, jit_compile=jit_compile,
                     document_start=document_start(runs.read_train_config(run_dir)))


_LOADED = {}  # real path of a run directory -> (its files' signature, Generator)


_BY_MODEL = {}  # the last few loaded models generate() was given -> their Generators (runs.decoder_of)


def cached_generator(run_dir):
    """The `Generator` of `run_dir`, loaded once per process and kept with its compiled decoding functions.

    A second call returns the same object (no reload, no recompilation); it
    loads again only when the run directory's files change (a retrained run).
    """
    return runs.load_cached(_LOADED, run_dir, load_generator)


PROMPT_TRIES = 200  # places of the training text sample_prompt tries for a tokenizer other than a character one


def sample_prompt(tokenizer, length, val_text, train_text):
    """A prompt of `length` characters that the tokenizer encodes without its unknown token (generation
    refuses those), or None: TensorBoard's samples during training, the TFLite export's parity check.

    The start of the validation text; where it has a character the vocabulary lacks (one only in the
    validation tenth, or a rare one outside a small character vocabulary), the first stretch of the
    training text whose characters it has all; for another tokenizer, a stretch at one of `PROMPT_TRIES`
    places of the training text, of `length` characters or else a quarter of that.
    """
    unk_id = unknown_token_id(tokenizer)

    def encodes(prompt):
        ids = np.asarray(keras.ops.convert_to_numpy(tokenizer.tokenize(prompt))).ravel()
        return bool(prompt.strip()) and len(ids) > 0 and (unk_id is None or not (ids == unk_id).any())

    for prompt in (val_text[:length], train_text[:length]):
        if encodes(prompt):
            return prompt
    if isinstance(tokenizer, CharacterTokenizer):  # one id a character: scan for a stretch of known ones
        known, run = set(tokenizer.get_vocabulary()), 0
        for end, character in enumerate(train_text[:1_000_000], 1):
            run = run + 1 if character in known else 0
            if run >= length and encodes(train_text[end - length:end]):
                return train_text[end - length:end]
        return None
    # Any other tokenizer (a 300-piece WordPiece of Chinese news lacks many characters): stretches at evenly
    # spread places, then shorter ones; at most 2 * PROMPT_TRIES tokenizer calls, each on a few characters.
    text = train_text[:1_000_000]
    for size in dict.fromkeys((length, max(1, length // 4))):
        for begin in range(0, max(1, len(text) - size + 1), max(1, (len(text) - size) // PROMPT_TRIES)):
            if encodes(text[begin:begin + size]):
                return text[begin:begin + size]
    return None


def sampling_options(sampler, temperature, top_k, top_p, num_beams, seed):
    """(temperature, top_k, top_p, num_beams) with `SAMPLING_DEFAULTS` for those not given (None), after
    refusing one given to a sampler that does not read it (`refuse_unread_options`): only the caller's own
    options are refused, so `sampler="greedy"` alone decodes as before."""
    refuse_unread_options(sampler, {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                    "num_beams": num_beams, "seed": seed})
    return tuple(SAMPLING_DEFAULTS[name] if value is None else value for name, value in
                 (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("num_beams", num_beams)))


@runs.takes_named_options
def generate(model_or_run_dir, prompts, max_new_tokens=200, sampler=SAMPLING_DEFAULTS["sampler"],
             temperature=None, top_k=None, top_p=None, seed=None, stop=None, stream_callback=None, num_beams=None):
    """Continues `prompts` with a `Generator`, the model of a run directory, or a loaded KerasHub `CausalLM`
    (`keras_hub.models.CausalLM.from_preset(run_dir)`).

    See `Generator.generate` for the arguments (`temperature`, `top_k`, `top_p`, `num_beams`: by default
    `tfllm generate`'s; these and `seed` given to a sampler that does not read them are refused, as the command
    refuses them: they were ignored; so are `seed`, `top_k` and `top_p` with `temperature=0`, which is greedy).
    Returns the new text per prompt (the completion: prompt + completion is the whole text; a WordPiece
    model's first new word has its space before it, as `Generator.generate` says).
    A run directory's model is loaded once per process (`cached_generator`),
    and a loaded model's decoding functions are kept, so later calls reuse them.

    Example:
    >>> generate("runs/shakespeare", ["ROMEO:"], max_new_tokens=100, sampler="greedy")
    """
    sampling_options(sampler, temperature, top_k, top_p, num_beams, seed)  # refused before a model is loaded
    generator = runs.decoder_of(model_or_run_dir, "generate", Generator, keras_hub.models.CausalLM, _BY_MODEL,
                                lambda model: Generator(model, model.preprocessor.tokenizer), cached_generator)
    return generator.generate(prompts, max_new_tokens=max_new_tokens, sampler=sampler, temperature=temperature,
                              top_k=top_k, top_p=top_p, num_beams=num_beams, seed=seed, stop=stop,
                              stream_callback=stream_callback)
