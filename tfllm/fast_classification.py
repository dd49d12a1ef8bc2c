"""Classification in NumPy, without TensorFlow: `tfllm predict` answers in well under a second.

A cold `tfllm predict RUN "text"` spent about 6 s importing TensorFlow, Keras
and KerasHub, building the model and tracing its graph, to run a forward pass
that takes a millisecond. This module runs the same forward pass with NumPy
alone, as `tfllm.fast_generation` does for generation: it reads the run's
configs, WordPiece vocabulary and weights files (`h5py`) and computes the
probabilities of tfllm's own `TextClassifier` over an `EncoderBackbone`
(KerasHub's post-norm `TransformerEncoder` blocks, masked mean pooling, the
hashed-bigram bag, the naive-Bayes wide path, the character view and their blend), equal to the
Keras model's up to float round-off.

It serves what it fully supports: that model in float32, with tfllm's
WordPiece tokenizer (it mirrors KerasHub's own Python WordPiece path,
`keras_hub.src.tokenizers.word_piece_tokenizer.pretokenize_python`, whose
Unicode splitting and case folding stand in for TensorFlow Text's ops; tests
check every bundled review and Chinese paragraph against the TensorFlow
tokenizer). `load(run_dir)` returns None for anything else; callers then use
the TensorFlow path.
"""

import itertools
import os
import re
import unicodedata

import numpy as np

from tfllm.datasets.text import (CJK_IDEOGRAPHS, FULLWIDTH_CAPITALS, LOWERCASE_LIMIT, WORD_BIGRAM_SEED, WORD_CHARACTERS,
                                 WORD_LENGTH, WORD_SEED, lowercase_table)
from tfllm.fast_generation import _layer_norm, _read_json, finished_run_configs, named_vars

# KerasHub's pretokenizer (split_on_cjk=True): whitespace and control/format characters split
# words and are dropped; punctuation and CJK ideographs split and are kept as words of their own.
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
_SPLIT = r"[ \t\n\r\f]|\p{Cc}|\p{Cf}|" + _PUNCTUATION + "|" + CJK_IDEOGRAPHS
_KEEP = _PUNCTUATION + "|" + CJK_IDEOGRAPHS
# The same on ASCII text, with the standard library's `re` (no `regex` import for most texts).
_ASCII_SPLIT = re.compile(r"[\x00-\x20\x7f]|[!-/:-@\[-`{-~]")
_ASCII_KEEP = re.compile(r"[!-/:-@\[-`{-~]")
# Dropped by TensorFlow Text's case_fold_utf8 (NFKC_Casefold), as keras_hub's casefold_utf8 lists them.
_DEFAULT_IGNORABLE = re.compile("[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F"
                                "\u202A-\u202E\u2060-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8"
                                "\U0001BCA0-\U0001BCA3\U0001D173-\U0001D17A\U000E0000-\U000E0FFF]")
MAX_BYTES_PER_WORD = 100  # keras_hub's: a longer word is one unknown token


def _casefold(word):
    """TensorFlow Text's `case_fold_utf8` (NFKC_Casefold) in Python, as keras_hub's `casefold_utf8`."""
    if word.isascii():
        return word.lower()
    word = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", word).casefold())
    return _DEFAULT_IGNORABLE.sub("", word)


class WordPiece:
    """tfllm's `WordPieceTokenizer` + KerasHub's `MultiSegmentPacker` (one segment) for ASCII text."""

    def __init__(self, vocabulary, lowercase, suffix_indicator="##", oov_token="[UNK]"):
        self.ids = {token: i for i, token in enumerate(vocabulary)}
        self.lowercase = lowercase
        self.suffix = suffix_indicator
        self.oov_id = self.ids[oov_token]
        self.start_id, self.end_id, self.pad_id = self.ids["[BOS]"], self.ids["[EOS]"], self.ids["[PAD]"]

    def words(self, text):
        if text.isascii():
            split, keep = _ASCII_SPLIT, _ASCII_KEEP
        else:
            import regex  # KerasHub's dependency: Unicode categories (\p{P}, \p{Cc}, \p{Cf})

            split, keep = regex.compile(_SPLIT), regex.compile(_KEEP)
        words, position = [], 0
        for match in split.finditer(text):
            if match.start() > position:
                words.append(text[position: match.start()])
            if keep.fullmatch(match.group()):
                words.append(match.group())
            position = match.end()
        if position < len(text):
            words.append(text[position:])
        return [_casefold(w) for w in words] if self.lowercase else words

    def word_ids(self, word):
        """Greedy longest-match-first subwords; a word that cannot be covered is one unknown token."""
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return [self.oov_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.suffix + word[start:end]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.oov_id]
        return ids

    def token_ids(self, text):
        """The text's token ids, as they are asked for: subwords are looked up only as far as a reader goes."""
        for word in self.words(text):
            yield from self.word_ids(word)

    def pack(self, text, sequence_length, cut=None):
        """`[start] ids... [end]`, the ids truncated to fit `sequence_length`; no padding (it is masked anyway).
        Only the ids that fit are looked up: a 2,000-character review's hundreds of words cost as much as 16.
        `cut`: a list to append whether the text had more ids than fit (one more id looked up)."""
        ids = list(itertools.islice(self.token_ids(text), sequence_length - 1))
        if cut is not None:
            cut.append(len(ids) > sequence_length - 2)
        return np.array([self.start_id] + ids[:sequence_length - 2] + [self.end_id], np.int64)


class NumpyTextClassifier:
    """The forward pass of `tfllm.models.TextClassifier` for one unpadded sequence of token ids."""

    def __init__(self, backbone, head, config, task_config):
        self.backbone, self.head = backbone, head
        self.num_heads = config["num_heads"]
        self.vocabulary_size = config["vocabulary_size"]
        self.bigram_buckets = task_config.get("bigram_buckets")
        self.wide_bigram_buckets = task_config.get("wide_bigram_buckets")
        self.char_ngram_buckets = task_config.get("char_ngram_buckets")
        self.word_ngram_buckets = task_config.get("word_ngram_buckets")

    def _bigrams(self, ids, buckets):
        # As the model: (previous * V + id) with int32 wrap-around, then a floor-mod; the first token has none.
        x = ids[:-1] * self.vocabulary_size + ids[1:]
        x = (x + 2**31) % 2**32 - 2**31
        return np.mod(x, buckets)

    def _char_ngrams(self, code_points, orders=(2, 3, 4, 5), space=32):
        # As `tfllm.models.text_classifier.char_ngram_ids`: a space before the text (and after it, as
        # the padding reads), letters lowercased (`_lowercase`), windows with no space inside and not
        # all spaces, h = (h * 4093 + c) % buckets.
        c = _lowercase(np.array([space, *code_points], np.int64))
        c[(c == 0) | ((c >= 9) & (c <= 13))] = space
        ids = []
        for n in orders:
            padded = np.concatenate([c, np.full(n - 1, space)])
            window = np.stack([padded[k:k + len(c)] for k in range(n)])
            h = np.full(len(c), n, np.int64)
            for x in window:
                h = (h * 4093 + x) % self.char_ngram_buckets
            spaces = window == space
            keep = ~spaces.all(0) & ~spaces[1:-1].any(0)
            ids.append(h[keep])
        return np.concatenate(ids)

    def _word_ngrams(self, code_points):
        # As `tfllm.models.text_classifier.word_ngram_ids`: runs of two or more word characters, each
        # hashed over its first WORD_LENGTH code points from WORD_SEED, then bigrams of consecutive words.
        c = _lowercase(np.array(code_points, np.int64))
        word = np.zeros(len(c), bool)
        for lo, hi in WORD_CHARACTERS:
            word |= (c >= lo) & (c <= hi)
        edges = np.flatnonzero(np.diff(np.r_[0, word.astype(int), 0]))  # starts and ends of the runs
        buckets, words = self.word_ngram_buckets, []
        for start, end in zip(edges[::2], edges[1::2]):
            if end - start >= 2:
                h = WORD_SEED
                for x in c[start:min(end, start + WORD_LENGTH)]:
                    h = (h * 4093 + int(x)) % buckets
                words.append(h)
        bigrams = [((WORD_BIGRAM_SEED * 4093 + a) % buckets * 4093 + b) % buckets for a, b in zip(words, words[1:])]
        return np.array(words + bigrams, np.int64)

    def probabilities(self, ids, code_points=None):
        b, h = self.backbone, self.head
        x = b["token_embedding"][0][ids] + b["position_embedding"][0][: len(ids)]
        for block in b["blocks"]:
            # KerasHub's TransformerEncoder (normalize_first=False): attention, residual, norm; ReLU MLP, residual, norm.
            q, k, v = (np.einsum("lc,chd->lhd", x, block[name][0]) + block[name][1]
                       for name in ("query_dense", "key_dense", "value_dense"))
            scores = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(q.shape[-1]))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = np.einsum("hqk,khd->qhd", scores, v)
            x = _layer_norm(x + np.einsum("lhd,hdc->lc", attended, block["output_dense"][0]) + block["output_dense"][1],
                            *block["_self_attention_layer_norm"], 1e-5)
            y = np.maximum(x @ block["_feedforward_intermediate_dense"][0] + block["_feedforward_intermediate_dense"][1], 0)
            x = _layer_norm(x + y @ block["_feedforward_output_dense"][0] + block["_feedforward_output_dense"][1],
                            *block["_feedforward_layer_norm"], 1e-5)
        pooled = x.mean(0)
        if self.bigram_buckets:
            bigrams = self._bigrams(ids, self.bigram_buckets)
            if len(bigrams):
                pooled = pooled + h["bigram_embedding"][0][bigrams].mean(0)
        kernel, bias = h["logits"] if "logits" in h else h["probabilities"]
        logits = pooled @ kernel + bias
        if self.wide_bigram_buckets:
            table = h["wide_ngrams"][0]
            ngrams = np.concatenate([ids, self._bigrams(ids, self.wide_bigram_buckets) + self.vocabulary_size])
            encoder_scale, wide_scale, blend_bias, *scales = h["blend"]  # then the character, word views'
            logits = encoder_scale * logits + wide_scale * table[ngrams].sum(0) + blend_bias
            for name, ngrams in (("char", self._char_ngrams), ("word", self._word_ngrams)):
                if getattr(self, f"{name}_ngram_buckets"):
                    logits = logits + scales.pop(0) * h[f"{name}_ngrams"][0][ngrams(code_points)].sum(0)
        if logits.shape[-1] == 1:
            fresh = sigmoid(logits[0])
            return np.array([1 - fresh, fresh], np.float32)
        z = np.exp(logits - logits.max())
        return (z / z.sum()).astype(np.float32)


def sigmoid(x):
    """1 / (1 + e^-x) as exp(-log(1 + e^-x)): the first overflowed, with a RuntimeWarning printed to the user, on
    the long texts whose summed n-gram logits pass -88."""
    return np.exp(-np.logaddexp(0, -x))


def _lowercase(c):
    # As `tfllm.models.text_classifier._lowercase` (the table in tfllm.datasets.text).
    low, high = FULLWIDTH_CAPITALS
    below = c < LOWERCASE_LIMIT
    c[below] = lowercase_table()[c[below]]
    c[(c >= low) & (c <= high)] += 32
    return c


def tokenizes_like_tensorflow(text):
    # Characters newer than Python's Unicode tables (category Cn, "unassigned", here) are punctuation
    # or case-folded in `regex`'s or ICU's newer tables, and NUL is dropped by one side only.
    return "\x00" not in text and (text.isascii() or not any(unicodedata.category(c) == "Cn" for c in text))


class FastClassifier:
    def __init__(self, tokenizer, model, sequence_length, label_names, char_length=None):
        self.tokenizer, self.model = tokenizer, model
        self.sequence_length, self.char_length = sequence_length, char_length
        self.label_names = label_names

    def predict(self, texts, cut=None):
        """`[n, num_classes]` probabilities of a list of strings; None if one of them holds a character
        this module cannot tokenize exactly as TensorFlow Text does (the caller then takes that path).
        `cut`: a list to append, text by text, whether its tokens ran past the window (`pack`)."""
        if not all(map(tokenizes_like_tensorflow, texts)):
            return None
        return np.stack([self.model.probabilities(self.tokenizer.pack(t, self.sequence_length, cut),
                                                  [ord(c) for c in t[:self.char_length or 0]])
                         for t in texts])


def _read_backbone(path, num_layers):
    with named_vars(path) as by_name:
        backbone = {name: by_name(name) for name in ("token_embedding", "position_embedding")}
        blocks = []
        for i in range(num_layers):
            block = by_name(f"transformer_layer_{i}", parts=(
                "_self_attention_layer/query_dense", "_self_attention_layer/key_dense",
                "_self_attention_layer/value_dense", "_self_attention_layer/output_dense",
                "_self_attention_layer_norm", "_feedforward_intermediate_dense", "_feedforward_output_dense",
                "_feedforward_layer_norm"))
            blocks.append({name.split("/")[-1]: arrays for name, arrays in (block or {}).items()})
    if not all(backbone.values()) or len(blocks) != num_layers or not all(blocks):
        return None
    backbone["blocks"] = blocks
    return backbone


def load(run_dir):
    """A `FastClassifier` for a finished classification run, or None where this module does not serve it."""
    from tfllm import runs  # no TensorFlow there

    try:
        configs = finished_run_configs(run_dir, "classify")
        if configs is None:
            return None
        task, tokenizer = configs
        backbone = task["config"]["backbone"]
        config = backbone["config"]
        preprocessor = _read_json(os.path.join(run_dir, "preprocessor.json"))
        dtypes = {(c.get("dtype") or {}).get("config", {}).get("name", "float32") for c in (config, task["config"])}
        if (task.get("class_name") != "TextClassifier" or backbone.get("class_name") != "EncoderBackbone"
                or tokenizer.get("class_name") != "WordPieceTokenizer" or dtypes != {"float32"}
                or tokenizer["config"].get("strip_accents") or not tokenizer["config"].get("split", True)
                or preprocessor.get("class_name") != "TextClassifierPreprocessor"):
            return None
        with open(os.path.join(run_dir, "assets", "tokenizer", "vocabulary.txt"), encoding="utf-8") as f:
            vocabulary = f.read().splitlines()
        if len(vocabulary) != config["vocabulary_size"]:
            return None
        weights = _read_backbone(os.path.join(run_dir, "model.weights.h5"), config["num_layers"])
        with named_vars(os.path.join(run_dir, "task.weights.h5")) as by_name:
            head = {name: by_name(name) for name in ("bigram_embedding", "logits", "wide_ngrams", "blend", "probabilities",
                                                     "char_ngrams", "word_ngrams")}
        head = {name: arrays for name, arrays in head.items() if arrays}
        if weights is None or "probabilities" not in head and "logits" not in head:
            return None
        word_piece = WordPiece(vocabulary, tokenizer["config"].get("lowercase", True),
                               tokenizer["config"].get("suffix_indicator", "##"), tokenizer["config"].get("oov_token", "[UNK]"))
        model = NumpyTextClassifier(weights, head, config, task["config"])
        return FastClassifier(word_piece, model, preprocessor["config"]["sequence_length"], runs.read_labels(run_dir),
                              preprocessor["config"].get("char_length"))
    except (OSError, KeyError, TypeError, ValueError, ImportError):
        return None
