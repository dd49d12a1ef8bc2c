"""Vocabulary training, tokenizer construction and saving.

Every tokenizer here is a KerasHub `Tokenizer` layer, so the same object
tokenizes inside `tf.data` pipelines and inside exported graphs. All of them
share one id layout for the special tokens, which the models rely on:
id 0 is padding (masked out), 1 unknown, 2 start, 3 end, 4 mask (for
masked-language-model pretraining).
"""

import io
import json
import os

import keras
import keras_hub
import tensorflow as tf

from tfllm.errors import UserInputError

PAD, UNK, BOS, EOS, MASK = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, MASK]
MASK_ID = 4
NUM_SPECIAL = len(SPECIAL_TOKENS)
KINDS = ("wordpiece", "char", "sentencepiece")


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
        self._id_to_token = tf.constant(self._lookup.get_vocabulary())
        self._update_special_token_ids()

    def get_vocabulary(self):
        return self._lookup.get_vocabulary()

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
        tokens = tf.ragged.boolean_mask(tokens, inputs >= NUM_SPECIAL)
        return tf.strings.reduce_join(tokens, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary": self.vocabulary, "sequence_length": self.sequence_length})
        return config

    # The vocabulary lives in the config, so there are no asset files.
    def save_assets(self, dir_path):
        pass

    def load_assets(self, dir_path):
        pass


def _check_texts(texts):
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise UserInputError(
            "Cannot train a tokenizer: the training texts are empty. "
            "Check the text column of your data."
        )
    return texts


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
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts).batch(1000),
            vocabulary_size=vocabulary_size,
            lowercase=lowercase,
            reserved_tokens=SPECIAL_TOKENS,
        )
        return keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary,
            sequence_length=sequence_length,
            lowercase=lowercase,
            special_tokens=SPECIAL_TOKENS,
        )
    if kind == "char":
        counts = {}
        for text in texts:
            for char in text:
                counts[char] = counts.get(char, 0) + 1
        chars = sorted(counts, key=lambda c: (-counts[c], c))[: max(vocabulary_size - NUM_SPECIAL, 1)]
        return CharacterTokenizer(vocabulary=sorted(chars), sequence_length=sequence_length)
    if kind == "sentencepiece":
        import sentencepiece as spm

        proto = io.BytesIO()
        # Trained with sentencepiece directly (not keras_hub's
        # compute_sentence_piece_proto) to pin pad/unk/bos/eos to ids 0-3.
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
            minloglevel=2,
        )
        return keras_hub.tokenizers.SentencePieceTokenizer(
            proto=proto.getvalue(), sequence_length=sequence_length
        )
    raise UserInputError(f"Unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}.")


def save_tokenizer(tokenizer, directory):
    """Writes `tokenizer.json` and the vocabulary assets into `directory`."""
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_to_preset(directory)


def load_tokenizer(directory):
    """Loads a tokenizer written by `save_tokenizer`."""
    with open(os.path.join(directory, "tokenizer.json")) as f:
        tokenizer = keras.saving.deserialize_keras_object(json.load(f))
    if tokenizer.file_assets:
        tokenizer.load_preset_assets(directory)
    return tokenizer
