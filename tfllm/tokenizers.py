"""Vocabulary training, tokenizer construction and saving.

Every tokenizer here is a KerasHub `Tokenizer` layer, so the same object
tokenizes inside `tf.data` pipelines and inside exported graphs, and saves in
KerasHub's preset format (`tokenizer.json` + `assets/tokenizer/`). Each one
registers its special tokens the KerasHub way (`pad_token_id`,
`start_token_id`, `end_token_id`, `mask_token_id`, `unk_token_id`), and code
downstream reads the ids from there, so a KerasHub preset's own tokenizer
(BERT's WordPiece, GPT-2's byte-pair, ...) works through the same paths.
Vocabularies trained here put the specials first: `[PAD]`, `[UNK]`, `[BOS]`,
`[EOS]`, `[MASK]`.
"""

import collections
import io
import json
import math
import os
import re

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm.config import (CJK_SPACE, ENDS_IN_CJK, ENDS_IN_SPACE, STARTS_WITH_CJK, TOKENIZER_KINDS, is_suffix_piece,
                          leading_word_starts)
from tfllm.config import byte_decoder
from tfllm.errors import UserInputError

PAD, UNK, BOS, EOS, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, MASK]
KINDS = TOKENIZER_KINDS


def _add_special_tokens(tokenizer, pad, unk, start, end, mask):
    # KerasHub's packers and preprocessors read start/end/pad (and cls/sep for
    # classifiers, mask for masked-LM pretraining) from these attributes.
    for token, name in ((pad, "pad_token"), (unk, "unk_token"), (start, "start_token"), (end, "end_token"),
                        (mask, "mask_token"), (start, "cls_token"), (end, "sep_token")):
        tokenizer._add_special_token(token, name)


def special_token_ids(tokenizer):
    """Every special-token id of a KerasHub tokenizer (never decoded as text)."""
    return sorted({int(i) for i in tokenizer.special_token_ids if i is not None})


def detokenizes_with_spaces(tokenizer):
    """True for a WordPiece tokenizer (tfllm's or a KerasHub preset's): its detokenizer joins every token with
    a space, also between two Chinese characters, so its text goes through `join_cjk_op` / `tfllm.config.join_cjk`.
    Character and SentencePiece tokenizers give back the text's own spaces: their text is left as it is."""
    return isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer)


def keeps_leading_suffix(tokenizer):
    """True for a KerasHub WordPiece tokenizer that is not tfllm's (a preset's `BertTokenizer`): its detokenizer
    leaves the suffix indicator on a text's first piece when that continues a word ("##k"), which tfllm's
    `WordPieceTokenizer.detokenize` drops."""
    return detokenizes_with_spaces(tokenizer) and not isinstance(tokenizer, WordPieceTokenizer)


def join_cjk_op(texts):
    """`tfllm.config.join_cjk` as a TF op (RE2, the same pattern), for graphs and exports: string tensor in and out."""
    for _ in range(2):  # non-overlapping matches: two passes join every gap
        texts = tf.strings.regex_replace(texts, CJK_SPACE, r"\1\2")
    return texts


def wordpiece_completion_op(prompts, completions, whole_word):
    """`tfllm.config.wordpiece_completion` as a TF op (RE2, the same patterns): string tensors and the bool
    tensor `whole_word` in, string tensor out."""
    match = tf.strings.regex_full_match
    bare = (~whole_word | tf.equal(completions, "") | match(prompts, ENDS_IN_SPACE)
            | (match(prompts, ENDS_IN_CJK) & match(completions, STARTS_WITH_CJK)))
    return tf.where(bare, completions, tf.strings.join([" ", completions]))


def marks_word_starts(tokenizer):
    """True for a SentencePiece tokenizer (tfllm's or a preset's, Gemma's, Llama's): a piece that begins a word
    carries its space as a leading "\u2581", which its detokenizer drops at a text's start
    (`tfllm.config.sentencepiece_completion`)."""
    return isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer)


def word_start_counts(tokenizer):
    """Per id of a SentencePiece vocabulary, how many "\u2581" its piece begins with."""
    return [leading_word_starts(piece) for piece in tokenizer.get_vocabulary()]


def sentencepiece_completion_op(prompts, completions, first_ids, counts):
    """`tfllm.config.sentencepiece_completion` as a TF op: string tensors, each completion's first id (a ragged
    `[B, 0 or 1]` int tensor) and `counts` (`word_start_counts`, a tensor) in, string tensor out."""
    starts = tf.reduce_max(tf.gather(counts, first_ids), axis=1)  # an empty completion: the dtype's minimum
    spaces = tf.strings.length(completions) - tf.strings.length(tf.strings.regex_replace(completions, "^ +", ""))
    bare = (starts <= spaces) | tf.strings.regex_full_match(prompts, ENDS_IN_SPACE)
    return tf.where(bare, completions, tf.strings.join([" ", completions]))


def without_leading_suffix_op(completions, whole_word, suffix):
    """A completion whose first piece continues the prompt's last word (`whole_word` False) without the suffix
    indicator KerasHub's detokenizer leaves on it ("##k" -> "k"; `keeps_leading_suffix`): string tensors in and out."""
    return tf.where(whole_word, completions, tf.strings.regex_replace(completions, "^" + re.escape(suffix), ""))


def whole_word_ids(tokenizer):
    """A bool per id of a WordPiece vocabulary: True where the token is no suffix piece
    (`tfllm.config.is_suffix_piece`)."""
    return [not is_suffix_piece(token, tokenizer.suffix_indicator) for token in tokenizer.get_vocabulary()]


def unknown_token_id(tokenizer):
    """The id a tokenizer gives text it has no token for: `unk_token_id` (tfllm's, SentencePiece presets'),
    a KerasHub WordPiece tokenizer's `oov_token` (BertTokenizer has no `unk_token_id`), a KerasHub
    SentencePiece tokenizer's model's own unknown id, or None (byte-level BPE has a token for every byte)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None and getattr(tokenizer, "oov_token", None) is not None:
        unk = tokenizer.token_to_id(tokenizer.oov_token)
    if unk is None and isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer) and tokenizer.proto:
        from sentencepiece import sentencepiece_model_pb2

        unk = sentencepiece_model_pb2.ModelProto.FromString(tokenizer.proto).trainer_spec.unk_id
    return None if unk is None else int(unk)


def unknown_token_entry(tokenizer):
    """An export's `special_token_ids` "unknown" (`unknown_token_id`), and where it is null, why
    ("unknown_none"): an app reading null alone could not tell "no unknown token" from "not recorded"."""
    unk = unknown_token_id(tokenizer)
    if unk is not None:
        return {"unknown": unk}
    if isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        # "A token for every byte, so no text is unknown" was said of every byte-pair vocabulary, and one built
        # without some bytes (a small preset's) gives them id -1: an app must know to look for it.
        vocabulary = set(tokenizer.get_vocabulary())
        missing = sum(char not in vocabulary for char in byte_decoder())
        why = ("byte-level byte-pair encoding has a token for every byte, so no text is unknown" if not missing else
               f"byte-level byte-pair encoding has no unknown token, and {missing} of the 256 bytes have no token in "
               "this vocabulary: text holding them gets id -1")
    else:
        why = f"{type(tokenizer).__name__} has no unknown token"
    return {"unknown": None, "unknown_none": why}


def prompt_start_ids(preprocessor):
    """`[start id]` where a causal LM's preprocessor puts its tokenizer's start token before every text (a
    KerasHub preset's: GPT-2's `<|endoftext|>`, Llama's and Gemma's BOS), else `[]` (tfllm's own decoders,
    which learn from running text). Training windows and every prompt begin with it, as KerasHub's
    `generate()` begins them."""
    if preprocessor is None or not getattr(preprocessor, "add_start_token", False):
        return []
    start = getattr(preprocessor.tokenizer, "start_token_id", None)
    return [] if start is None else [int(start)]


def pad_id(tokenizer):
    """The padding id: the tokenizer's own where it has one, else 0 (GPT-2's byte-pair has none)."""
    value = getattr(tokenizer, "pad_token_id", None)
    return 0 if value is None else int(value)


def tokenizer_family(backbone_cls, name):
    """A registered `Tokenizer` subclass that only names `backbone_cls`'s tokenizer family.

    keras_hub's `Tokenizer.from_preset(dir)` first looks for a registered
    Tokenizer subclass whose `backbone_cls` is the preset's backbone, then
    deserializes whatever class `tokenizer.json` names. tfllm backbones take any
    of tfllm's tokenizers (WordPiece, SentencePiece, characters), so the class
    made here exists only to answer that lookup and is never instantiated.
    """
    family = type(name, (keras_hub.tokenizers.Tokenizer,), {
        "backbone_cls": backbone_cls,
        "__doc__": f"The tokenizer family of `{backbone_cls.__name__}` presets (a lookup key for KerasHub).",
        "__module__": backbone_cls.__module__,
    })
    return keras.saving.register_keras_serializable(package="tfllm")(family)


@keras.saving.register_keras_serializable(package="tfllm")
class WordPieceTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """KerasHub's WordPiece tokenizer with tfllm's special tokens registered.

    Args:
        vocabulary: the vocabulary list (specials first) or a file.
        lowercase: fold case before splitting.
        **kwargs: passed to `keras_hub.tokenizers.WordPieceTokenizer`.

    Example:
    >>> tokenizer = train_tokenizer(["a good film", "a bad film"], "wordpiece", 30)
    >>> tokenizer.end_token_id  # 3
    """

    def __init__(self, vocabulary=None, lowercase=True, **kwargs):
        _add_special_tokens(self, PAD, UNK, BOS, EOS, MASK)
        kwargs.setdefault("special_tokens", SPECIAL_TOKENS)
        super().__init__(vocabulary=vocabulary, lowercase=lowercase, **kwargs)

    def detokenize(self, inputs):
        """KerasHub's, without the suffix indicator a text's first piece keeps when it continues a word that is
        not there (a generator's completion after its prompt, an undertrained translation): "##r soo"."""
        text = super().detokenize(inputs)
        prefix = self.suffix_indicator
        if isinstance(text, (str, bytes)):
            return _without_prefix(text, prefix)
        if isinstance(text, list):  # eager KerasHub detokenizers hand back Python strings
            return [_without_prefix(t, prefix) for t in text]
        return tf.strings.regex_replace(text, "^" + re.escape(prefix), "")


def _without_prefix(text, prefix):
    if isinstance(text, bytes):
        prefix = prefix.encode("utf-8")
    return text[len(prefix):] if text.startswith(prefix) else text


@keras.saving.register_keras_serializable(package="tfllm")
class SentencePieceTokenizer(keras_hub.tokenizers.SentencePieceTokenizer):
    """KerasHub's SentencePiece tokenizer with the special pieces `train_tokenizer` trains.

    Args:
        proto: the serialized SentencePiece model (bytes) or a file.
        **kwargs: passed to `keras_hub.tokenizers.SentencePieceTokenizer`.
    """

    def __init__(self, proto=None, **kwargs):
        _add_special_tokens(self, "<pad>", "<unk>", "<s>", "</s>", MASK)
        super().__init__(proto=proto, **kwargs)


@keras.saving.register_keras_serializable(package="tfllm")
class CharacterTokenizer(keras_hub.tokenizers.Tokenizer):
    """One token per Unicode character, over a vocabulary learned from text.

    KerasHub's `UnicodeCodepointTokenizer` gives every code point an id, so a
    corpus of 77 characters would still get a softmax over the whole code
    point range; this tokenizer keeps only the characters it saw (as nanoGPT's
    `shakespeare_char` does), which works for any script.

    Args:
        vocabulary: list of single characters (special tokens are added in
            front: `[PAD]`=0, `[UNK]`=1, `[BOS]`=2, `[EOS]`=3, `[MASK]`=4).
        sequence_length: if set, outputs are padded/truncated to this length
            and returned dense; otherwise ragged.

    Example:
    >>> tokenizer = CharacterTokenizer(vocabulary=list("abc"))
    >>> tokenizer(["cab"])  # [[7, 5, 6]]
    """

    def __init__(self, vocabulary=None, sequence_length=None, dtype="int32", **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.file_assets = []  # the vocabulary lives in the config
        _add_special_tokens(self, PAD, UNK, BOS, EOS, MASK)
        self.sequence_length = sequence_length
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary):
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        if self.vocabulary is None:
            return
        # StringLookup gives mask_token id 0 and the OOV token id 1, which is
        # exactly our [PAD]/[UNK] layout; the other specials follow as ordinary entries.
        self._lookup = keras.layers.StringLookup(
            vocabulary=SPECIAL_TOKENS[2:] + [c for c in self.vocabulary if c not in SPECIAL_TOKENS],
            mask_token=PAD,
            oov_token=UNK,
            num_oov_indices=1,
            output_mode="int",
            dtype="string",
        )
        # A Python copy, read now (eagerly): StringLookup's get_vocabulary() fails inside a tf.data graph,
        # where KerasHub's MaskedLMPreprocessor asks for vocabulary_size() (masked-LM pretraining with
        # --tokenizer char was a traceback).
        self._vocabulary_list = self._lookup.get_vocabulary()
        self._id_to_token = tf.constant(self._vocabulary_list)
        self._update_special_token_ids()

    def build(self, input_shape=None):
        # Nothing to build: the lookup table is made with the vocabulary. Defined so that `build(None)`
        # (tfllm.data.tensorflow_path's, on every preprocessor layer) marks it built without Keras's
        # UserWarning that the layer "does not have a `build()` method implemented".
        pass

    def get_vocabulary(self):
        return list(self._vocabulary_list)

    def vocabulary_size(self):
        return len(self.get_vocabulary())

    def id_to_token(self, id):
        return self.get_vocabulary()[id]

    def token_to_id(self, token):
        return self.get_vocabulary().index(token)

    def tokenize(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        scalar = inputs.shape.rank == 0
        if scalar:
            inputs = inputs[tf.newaxis]
        chars = tf.strings.unicode_split(inputs, "UTF-8")
        ids = tf.ragged.map_flat_values(self._lookup, chars)
        ids = tf.cast(ids, self.compute_dtype)
        if self.sequence_length:
            ids = ids.to_tensor(default_value=0, shape=(None, self.sequence_length))
        if scalar:
            ids = ids[0]
        return ids

    def detokenize(self, inputs):
        if isinstance(inputs, (list, tuple)):  # eager calls hand back Python lists
            inputs = tf.ragged.constant(inputs)
        elif not isinstance(inputs, tf.RaggedTensor):
            inputs = tf.convert_to_tensor(inputs)
        tokens = tf.gather(self._id_to_token, inputs)
        # Special tokens are not text: drop them when turning ids back into strings.
        tokens = tf.ragged.boolean_mask(tokens, inputs >= len(SPECIAL_TOKENS))
        return tf.strings.reduce_join(tokens, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary": self.vocabulary, "sequence_length": self.sequence_length})
        return config

    # The vocabulary lives in the config: no asset files to write or read.
    def save_assets(self, dir_path):
        pass

    def load_assets(self, dir_path):
        pass

    def load_preset_assets(self, preset):
        pass


def _check_texts(texts):
    if isinstance(texts, str):  # iterated, a string gave one "text" per character: a vocabulary of letters
        raise UserInputError("train_tokenizer takes a list of texts, got a single string; wrap it in a list.")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise UserInputError(
            "Cannot train a tokenizer: the training texts are empty. "
            "Check the text column of your data."
        )
    return texts


KERAS_HUB_ALPHABET = 1000  # the characters TF Text's learner keeps when KerasHub calls it


def word_piece_vocabulary(texts, vocabulary_size, lowercase):
    """KerasHub's `compute_word_piece_vocabulary`, faster, and keeping every character when there are more than 1,000.

    KerasHub calls TF Text's WordPiece learner with its default alphabet of
    the 1,000 most frequent characters and discards every word holding any
    other (the same default as huggingface/tokenizers#1004 describes). That
    is no limit for English, but Chinese has thousands of characters: on
    cedict it kept 920 of 10,161, so a third of the test headwords'
    characters became `[UNK]`. Text with at most 1,000 distinct characters
    gets KerasHub's vocabulary unchanged (tested), learned by `learn_word_pieces`.
    """
    # PRIVATE API: KerasHub's `pretokenize` (word_piece_tokenizer.py), the split its own vocabulary
    # trainer and WordPieceTokenizer use; called here because `compute_word_piece_vocabulary` does not
    # pass TF Text's `max_unique_chars` through (see huggingface/tokenizers#1004 for the same default).
    from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize

    # do_not_convert: graph ops only, no Python control flow on tensors, so AutoGraph's rewrite of KerasHub's
    # source (0.6-0.8 s a process, half of learning a vocabulary for a few hundred texts) buys nothing.
    split = tf.autograph.experimental.do_not_convert(lambda text: pretokenize(text, lowercase, False, True, True))
    words = tf.data.Dataset.from_tensor_slices(texts).batch(1000).map(split, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()  # tfllm.data.untuned's setting (that module imports this one): see there why
    options.autotune.enabled = False
    words = words.with_options(options)
    counts = _word_piece_learner().count_words(words)
    alphabet = {char for word in counts for char in word}
    # Whitespace inside a word: the split is on whitespace, but lowercasing comes after it and is NFKC, which
    # turns a spacing accent into a space and a combining one ("Jesse´s" -> "jesse \u0301s"). The learner
    # lists " " and "## " for it, which the vocabulary file cannot hold (it is read a line at a time, each
    # line's end stripped: " " came back as "" and "## " as "##"). They go, and their room goes to learned
    # pieces; `_keeps_in_file` drops any learned piece that ends in whitespace too.
    unusable = {token for char in alphabet if not _keeps_in_file(char) for token in (char, "##" + char)}
    if len(alphabet) > KERAS_HUB_ALPHABET:
        # The learner lists "##c" for every character c of its alphabet; a character never seen inside a
        # word (every ideograph: the split makes each one a word of its own) can never use it, and 10,000
        # of those would crowd out the learned pieces. They go, and their room goes to learned pieces.
        inside = {char for word in counts if len(word) > 1 for char in word[1:]}
        unusable |= {"##" + char for char in alphabet - inside}
    vocabulary = learn_word_pieces(counts, vocabulary_size + len(unusable), SPECIAL_TOKENS,
                                   max_unique_chars=max(len(alphabet), KERAS_HUB_ALPHABET))
    return _most_used([token for token in vocabulary if token not in unusable and _keeps_in_file(token)],
                      counts, vocabulary_size)


def _keeps_in_file(token):
    """Whether `token` comes back the same from a vocabulary file (`assets/tokenizer/vocabulary.txt`).

    KerasHub's WordPieceTokenizer writes a token a line and reads each line back `rstrip()`ped, so a token
    that ends in whitespace (" ", "## ", "jesse ") or holds a line break cannot be stored. The reading is
    left as it is: the stripping is what lets it read vocabulary files written with "\r\n" or trailing
    spaces (BERT's and other tools'), and runs saved with such tokens load as they always did (their
    " " as "" and "## " as "##", tokens no text produces); the learner no longer emits them instead.
    """
    return bool(token) and token == token.rstrip() and "\n" not in token and "\r" not in token \
        and token != "##"


def _most_used(vocabulary, counts, size):
    """`vocabulary` cut to `size` tokens, keeping the special tokens and the most used of the others.

    The learner keeps every character of its alphabet (TF Text's `ensure_all_tokens_exist`), listed in
    code-point order, so where the characters alone are more than `size` (Chinese text and a small
    vocabulary) cutting the list's tail kept 乐 and 书 and dropped the most frequent characters, 的 and ，
    (zh_news, 600 tokens). A piece's use here is its rarest character's: how often that character starts
    a word (a piece) or follows inside one (a "##" piece), counted over `counts` ({word: count}).
    """
    if len(vocabulary) <= size:
        return vocabulary
    starts, inside = collections.Counter(), collections.Counter()
    for word, count in counts.items():
        starts[word[0]] += count
        for char in word[1:]:
            inside[char] += count

    def use(token):
        if token in SPECIAL_TOKENS:
            return math.inf
        piece, counter = (token[2:], inside) if token.startswith("##") else (token, starts)
        return min((counter[char] for char in piece), default=0)

    kept = set(sorted(vocabulary, key=use, reverse=True)[:size])  # sorted is stable: ties keep the learner's order
    return [token for token in vocabulary if token in kept]  # in the learner's order


def _word_piece_learner():
    # Imported when a vocabulary is learned: a TF Text tool module, not needed to load a tokenizer.
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib

    return wordpiece_tokenizer_learner_lib


def learn_word_pieces(word_counts, vocab_size, reserved_tokens, max_unique_chars=KERAS_HUB_ALPHABET):
    """TF Text's `wordpiece_tokenizer_learner_lib.learn` with KerasHub's settings: the same vocabulary, faster.

    The learner binary-searches a count threshold and relearns the vocabulary
    from scratch at each probe (a dozen; 30-50 s on rotten_tomatoes, 140-210 s
    on cedict), four passes a probe. Each pass counts every piece starting at a
    split point of every word, then discounts each count by the longer pieces
    that contain it as a prefix; what is left is counted directly here
    (`_discounted_piece_counts`), and the first pass, which does not depend on
    the threshold, runs once and each probe filters it (the same vocabulary
    6.6x faster on rotten_tomatoes, 85x on cedict: `benchmarks/bench_vocabulary.py`).
    The rest is TF Text's, through its own helpers: that module is a tool of
    TF Text's, not a documented API (tensorflow-text is pinned), and
    `tests/test_tokenizers.py` fails if the result ever differs from `learn`'s.
    """
    learner = _word_piece_learner()
    params = learner.Params(upper_thresh=int(1e7), lower_thresh=10, num_iterations=4, max_input_tokens=int(5e6),
                            max_token_length=50, max_unique_chars=max_unique_chars, vocab_size=vocab_size,
                            slack_ratio=0.05, include_joiner_token=True, joiner="##",
                            reserved_tokens=reserved_tokens)
    word_counts = list(dict(word_counts).items())
    upper, lower = learner.get_search_threshs(word_counts, params.upper_thresh, params.lower_thresh)
    counts = learner.get_input_words(word_counts, reserved_tokens, params.max_token_length)
    words = learner.filter_input_words(counts, learner.get_allowed_chars(counts, max_unique_chars),
                                       params.max_input_tokens)
    chars = learner.extract_char_tokens(words)
    first_pass = _discounted_piece_counts(words, lambda word: range(1, len(word) + 1), params)

    def learn_with_thresh(thresh):  # TF Text's `learn_with_thresh`, its first pass filtered, not recounted
        tokens = learner.ensure_all_tokens_exist(chars, {t: c for t, c in first_pass if c >= thresh}, True, "##")
        for _ in range(params.num_iterations - 1):
            pieces = _discounted_piece_counts(
                words, lambda word: learner.get_split_indices(word, tokens, True, "##"), params)
            tokens = learner.ensure_all_tokens_exist(chars, {t: c for t, c in pieces if c >= thresh}, True, "##")
        return learner.generate_final_vocabulary(reserved_tokens, chars, tokens)

    slack = max(params.slack_ratio * vocab_size, 0)
    # Every probe's vocabulary holds the specials and each character with and without "##". When
    # those alone are over budget (tiny test presets), every probe is too big and the search only
    # moves up: only its last probe is learned.
    too_big = len(set(reserved_tokens) | chars | {"##" + c for c in chars}) > vocab_size
    while True:  # TF Text's `learn_binary_search`, as a loop
        thresh = (upper + lower) // 2
        if too_big and not (lower >= upper or thresh <= 1):
            lower = thresh + 1
            continue
        vocabulary = learn_with_thresh(thresh)
        if (vocab_size - slack <= len(vocabulary) <= vocab_size) or lower >= upper or thresh <= 1:
            return vocabulary
        if len(vocabulary) > vocab_size:
            lower = thresh + 1
        else:
            upper = thresh - 1


def _discounted_piece_counts(words, split_indices, params):
    """One pass of TF Text's `learn_with_thresh` before its threshold: `[(piece, count)]`, its counts.

    TF Text counts every piece that starts at one of a word's split points, then, longest first, takes
    each piece's count off its shorter prefixes. What that leaves of a piece's count is how often it was
    a whole remainder, the word from one of its split points to its end (each piece is counted once per
    remainder it begins, and the longer pieces those remainders begin take their own counts off), so the
    remainders are counted here and nothing else; pieces TF Text would leave at 0 are not listed (no
    threshold of `learn_word_pieces` is below 5). The list's order does not matter to the vocabulary
    (TF Text's `generate_final_vocabulary` sorts by count, then alphabetically) except where a word and a
    suffix piece are the same string: TF Text's suffix piece, shorter, comes later and wins, so here too.
    """
    words_whole, suffixes = {}, {}
    for word, count in words:
        indices = split_indices(word)
        if not indices:
            continue
        words_whole[word] = words_whole.get(word, 0) + count
        for start in indices[:-1]:  # the last index is the word's end
            piece = params.joiner + word[start:]
            suffixes[piece] = suffixes.get(piece, 0) + count
    return list(words_whole.items()) + list(suffixes.items())


def train_tokenizer(texts, kind="wordpiece", vocabulary_size=10000, sequence_length=None, lowercase=True):
    """Learns a vocabulary from `texts` and returns a KerasHub tokenizer.

    Args:
        texts: list of strings (the training split only).
        kind: `"wordpiece"` (KerasHub + TensorFlow Text; CJK text is split
            one token per character), `"char"` or `"sentencepiece"`.
        vocabulary_size: upper bound on the vocabulary, special tokens included.
        sequence_length: pad/truncate outputs to this length (dense output);
            `None` returns ragged ids, as language models want.
        lowercase: fold case before splitting (wordpiece and sentencepiece).
    """
    texts = _check_texts(texts)
    if kind == "wordpiece":
        vocabulary = word_piece_vocabulary(texts, vocabulary_size, lowercase)
        return WordPieceTokenizer(vocabulary=vocabulary, sequence_length=sequence_length, lowercase=lowercase)
    if kind == "char":
        counts = {}
        for text in texts:
            for char in text:
                counts[char] = counts.get(char, 0) + 1
        chars = sorted(counts, key=lambda c: (-counts[c], c))[: max(vocabulary_size - len(SPECIAL_TOKENS), 1)]
        return CharacterTokenizer(vocabulary=sorted(chars), sequence_length=sequence_length)
    if kind == "sentencepiece":
        import sentencepiece as spm

        proto = io.BytesIO()
        # Trained with sentencepiece directly (not keras_hub's
        # compute_sentence_piece_proto) to pin pad/unk/bos/eos to ids 0-3.
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=proto,
                vocab_size=vocabulary_size,
                model_type="unigram",
                pad_id=0,
                unk_id=1,
                bos_id=2,
                eos_id=3,
                user_defined_symbols=[MASK],
                hard_vocab_limit=False,
                normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
                character_coverage=0.9995,
                # Its trainer skips longer texts without a word (4,192 bytes by default): a file of a few long
                # lines left it nothing to learn from, called too small a vocabulary.
                max_sentence_length=max([4192] + [len(text.encode("utf-8")) + 1 for text in texts]),
                minloglevel=2,
            )
        except RuntimeError as e:  # e.g. "Vocabulary size is smaller than required_chars. 50 vs 54"
            reason = str(e).splitlines()[0].rsplit('] ', 1)[-1].split(' Increase')[0][:200]
            # Its characters alone need `required`: "a few hundred" was wrong for Chinese (1,604 on zh_news).
            required = re.search(r"required_chars\. \d+ vs (\d+)", reason)
            enough = f"at least {required[1]}" if required else "a few hundred or more"
            # An assertion's message has no words after its "] " ("... [!sentences_.empty()] "): "()" was shown.
            reason = f" ({reason})" if reason.strip() and not reason.startswith("[") else ""
            raise UserInputError(f"SentencePiece cannot learn a vocabulary of {vocabulary_size} from these texts"
                                 f"{reason}; raise it with --set vocabulary_size=N ({enough}), or use --tokenizer "
                                 "wordpiece.") from None
        return SentencePieceTokenizer(proto=proto.getvalue(), sequence_length=sequence_length)
    raise UserInputError(f"Unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}.")


def targets_first(tokenizer, targets):
    """`tokenizer` with the tokens of `targets` listed first (after the specials), for a translation model.

    A translation model's source and target share one tokenizer, but its
    decoder only ever emits target tokens. With them first, the decoder's
    softmax can stop at `output_vocabulary_size(tokenizer, targets)` and skip
    every source-only token (the Chinese characters of a Chinese -> English
    model). Tokenization is unchanged: WordPiece and the character tokenizer
    look tokens up by string, so only the ids move. Other tokenizers
    (SentencePiece, whose ids are fixed by its model) come back as they are.
    """
    if not isinstance(tokenizer, (WordPieceTokenizer, CharacterTokenizer)):
        return tokenizer
    vocabulary = list(tokenizer.get_vocabulary())
    specials = len(SPECIAL_TOKENS)
    used = set(_token_ids(tokenizer, targets)) - set(range(specials))
    order = sorted(used) + [i for i in range(specials, len(vocabulary)) if i not in used]
    tokens = [vocabulary[i] for i in order]
    if isinstance(tokenizer, WordPieceTokenizer):
        tokens = vocabulary[:specials] + tokens
    return type(tokenizer).from_config({**tokenizer.get_config(), "vocabulary": tokens})


def output_vocabulary_size(tokenizer, targets):
    """1 + the largest id in the tokenized `targets`: the ids a decoder trained on them must score."""
    return max(_token_ids(tokenizer, targets), default=len(SPECIAL_TOKENS) - 1) + 1


def _token_ids(tokenizer, texts):
    ids = tokenizer.tokenize(tf.constant(list(texts)))
    if isinstance(ids, list):  # KerasHub's eager tokenizers hand back Python lists
        return {i for row in ids for i in row}
    return set(np.unique(ids.flat_values.numpy()).tolist())


def save_tokenizer(tokenizer, directory):
    """Writes `tokenizer.json` and `assets/tokenizer/` into `directory` (a preset's layout)."""
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_to_preset(directory)


def load_tokenizer(directory):
    """Loads the tokenizer of a preset directory (`tokenizer.json` + assets), whatever its class."""
    directory = os.fspath(directory)  # KerasHub's load_preset_assets takes only a str
    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        tokenizer = keras.saving.deserialize_keras_object(json.load(f))
    if tokenizer.file_assets:
        tokenizer.load_preset_assets(directory)
    return tokenizer
