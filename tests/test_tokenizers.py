import re

import numpy as np
import pytest
import tensorflow as tf

from tfllm.errors import UserInputError
from tfllm.tokenizers import CharacterTokenizer, load_tokenizer, save_tokenizer, train_tokenizer

ENGLISH = ["the movie was great fun", "a dull and boring film", "great acting, dull plot"] * 5
CHINESE = ["这部电影很好看", "故事很无聊", "演员很好，故事一般"] * 5


@pytest.mark.parametrize("kind", ["wordpiece", "char", "sentencepiece"])
def test_each_kind_tokenizes_inside_tf_data_and_round_trips(kind, tmp_path):
    tokenizer = train_tokenizer(ENGLISH + CHINESE, kind, vocabulary_size=100, sequence_length=12)
    eager = np.asarray(tokenizer(["great fun", "很好看"]))
    assert eager.shape == (2, 12)
    assert (eager[:, 0] > 4).all()  # real tokens, not padding or specials
    # Inside a tf.data map the tokenizer runs as graph ops and must agree with eager.
    in_graph = next(iter(tf.data.Dataset.from_tensor_slices(["great fun", "很好看"]).batch(2).map(tokenizer)))
    np.testing.assert_array_equal(in_graph.numpy(), eager)
    save_tokenizer(tokenizer, tmp_path / "tok")
    np.testing.assert_array_equal(np.asarray(load_tokenizer(str(tmp_path / "tok"))(["great fun", "很好看"])), eager)
    # A pathlib.Path too (was KerasHub's "A preset identifier must be a string").
    np.testing.assert_array_equal(np.asarray(load_tokenizer(tmp_path / "tok")(["great fun", "很好看"])), eager)


def test_wordpiece_splits_chinese_per_character():
    tokenizer = train_tokenizer(CHINESE, "wordpiece", vocabulary_size=50)
    ids = np.asarray(tokenizer("这部电影很好看"))
    assert len(ids) == len("这部电影很好看")
    assert 1 not in ids  # every seen character has its own id, none is [UNK]
    assert len(set(ids.tolist())) == len(set("这部电影很好看"))


def test_wordpiece_english_words_and_unknown_characters():
    tokenizer = train_tokenizer(ENGLISH, "wordpiece", vocabulary_size=50)
    assert tokenizer.vocabulary_size() <= 50
    ids = np.asarray(tokenizer("great 电"))
    assert ids[-1] == 1  # a character never seen is [UNK]


def test_character_tokenizer_detokenizes_and_keeps_specials_fixed():
    tokenizer = CharacterTokenizer(vocabulary=list("abc"))
    assert tokenizer.get_vocabulary()[:5] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
    ids = tokenizer(["cab", "ab"])
    assert tokenizer.detokenize(ids).numpy().tolist() == [b"cab", b"ab"]


def test_the_character_tokenizer_is_built_without_keras_warning_of_a_missing_build(recwarn):
    # train_classifier(tokenizer="char") printed Keras's "`build()` was called on layer 'character_tokenizer', however
    # the layer does not have a `build()` method implemented": tfllm.data builds every preprocessor layer it runs.
    from tfllm import data as data_lib

    tokenizer = train_tokenizer(ENGLISH, "char", vocabulary_size=100)
    ragged = data_lib.preprocess(["great fun", "dull"], tokenizer)
    assert tokenizer.built and [len(ids) for ids in ragged] == [9, 4]
    assert not [w for w in recwarn if "build()" in str(w.message)], [str(w.message) for w in recwarn]


def test_the_cjk_list_is_keras_hubs():
    import re

    from keras_hub.src.tokenizers.word_piece_tokenizer import PY_CJK_REGEX

    from tfllm.datasets.text import CJK_IDEOGRAPHS

    ours, theirs = re.compile(CJK_IDEOGRAPHS), re.compile(PY_CJK_REGEX)
    for code in range(0x3000, 0x32000):
        assert bool(ours.fullmatch(chr(code))) == bool(theirs.fullmatch(chr(code))), hex(code)


def test_sentencepiece_learns_from_lines_longer_than_its_default_limit():
    """Its trainer skips texts over 4,192 bytes by default: three lines of 2,000 words left it none and the
    error blamed the vocabulary size, with "()" for a reason."""
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words) for _ in range(2000)) for _ in range(3)]
    assert min(len(t) for t in texts) > 4192
    tokenizer = train_tokenizer(texts, "sentencepiece", 60)
    assert len(tokenizer.tokenize(texts[0][:100])) > 0
    # What it cannot learn from (zero-width spaces only: no sentences left) is said without empty parentheses.
    with pytest.raises(UserInputError, match=r"^SentencePiece cannot learn a vocabulary of 60 from these texts; ") as e:
        train_tokenizer(["\u200b\u200b"], "sentencepiece", 60)
    assert "()" not in str(e.value)


def test_a_sentencepiece_vocabulary_smaller_than_the_alphabet_is_a_clear_error():
    texts = ["".join(chr(0x4E00 + i + j) for j in range(8)) for i in range(0, 400, 8)]  # 400 distinct characters
    with pytest.raises(UserInputError, match=r"raise it with overrides=\{'vocabulary_size': N\}") as error:  # was a RuntimeError
        train_tokenizer(texts, "sentencepiece", 50)
    # The size it names is enough ("a few hundred or more" was too few for Chinese: 1,604 on zh_news).
    enough = int(re.search(r"'vocabulary_size': N\} \(at least (\d+)\)", str(error.value))[1])
    assert train_tokenizer(texts, "sentencepiece", enough).vocabulary_size() >= 400


def test_empty_training_texts_are_a_clear_error():
    with pytest.raises(UserInputError, match="empty"):
        train_tokenizer(["", "  "], "wordpiece")
    with pytest.raises(UserInputError, match="Unknown tokenizer"):
        train_tokenizer(ENGLISH, "bpe")


def test_one_string_instead_of_a_list_is_a_clear_error():
    # A string is an iterable of characters: it trained a vocabulary of single letters, silently.
    with pytest.raises(UserInputError, match="wrap it in a list"):
        train_tokenizer("the cat sat on the mat", "wordpiece", 50)


def test_wordpiece_keeps_every_chinese_character_beyond_keras_hubs_1000():
    # 1,500 distinct ideographs: KerasHub's learner would keep the 1,000 most frequent and map the rest to [UNK].
    chars = [chr(0x4E00 + i) for i in range(1500)]
    texts = ["".join(chars[i:i + 3]) + " and some english words" for i in range(0, 1500, 3)]
    tokenizer = train_tokenizer(texts, "wordpiece", 1600, lowercase=False)
    vocabulary = tokenizer.get_vocabulary()
    assert set(chars) <= set(vocabulary) and "english" in vocabulary
    assert not [t for t in vocabulary if t.startswith("##") and "\u4e00" <= t[2:] <= "\u9fff"]  # never reachable
    ids = tokenizer.tokenize(tf.constant(["".join(chars[-3:])]))
    ids = ids if isinstance(ids, list) else ids.to_list()
    assert tokenizer.unk_token_id not in ids[0] and len(ids[0]) == 3
    assert len(vocabulary) <= 1600


def test_wordpiece_keeps_the_most_used_characters_when_they_are_more_than_the_vocabulary():
    """The learner lists every character in code-point order: the list's tail was cut, so a small vocabulary
    of Chinese text kept rare characters (low code points) and made the most frequent ones [UNK]."""
    rare = [chr(0x4E00 + i) for i in range(40)]  # 一丁丂...: each once
    frequent = ["这", "的", "龙"]  # high code points, in every text
    texts = ["这的龙，" + char for char in rare] + ["这个龙的"] * 20
    vocabulary = train_tokenizer(texts, "wordpiece", 24, lowercase=False).get_vocabulary()
    assert len(vocabulary) == 24 and set(frequent) <= set(vocabulary) and "个" in vocabulary
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
    assert sum(char in vocabulary for char in rare) <= 24 - 5 - 5  # the specials, 这的龙个 and the comma


def test_wordpiece_small_alphabets_get_keras_hubs_vocabulary_unchanged():
    import keras_hub

    from tfllm.tokenizers import SPECIAL_TOKENS, word_piece_vocabulary

    texts = ["a good film", "a bad film", "the best films of the year", "worse than bad"] * 5
    expected = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts).batch(1000), vocabulary_size=40, lowercase=True,
        reserved_tokens=SPECIAL_TOKENS)
    assert word_piece_vocabulary(texts, 40, lowercase=True) == expected



def test_a_wordpiece_vocabulary_with_a_spacing_accent_round_trips_through_its_file(tmp_path):
    """Lowercasing (NFKC) turns "´" inside a word into a space and a combining accent: the learner listed " "
    and "## ", which the vocabulary file gave back as "" and "##", so the reloaded tokenizer differed."""
    texts = ["jesse´s film is good", "he´s a good man", "it isn´t a film"] * 5
    tokenizer = train_tokenizer(texts, "wordpiece", vocabulary_size=200)
    vocabulary = tokenizer.get_vocabulary()
    assert all(token.strip() and token == token.rstrip() and token != "##" for token in vocabulary)
    save_tokenizer(tokenizer, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.get_vocabulary() == vocabulary
    # Words with the accent, seen and not ("´s" took " " as its first piece, [UNK] once reloaded), and a
    # combining accent after a space.
    text = ["she´s jesse´s, ´s ´ he ́s"]
    assert np.asarray(loaded(text)).tolist() == np.asarray(tokenizer(text)).tolist()


def test_a_vocabulary_file_saved_with_whitespace_tokens_loads_as_before(tmp_path):
    """Runs saved before the learner dropped " " and "## " keep loading, those lines read as "" and "##"
    (KerasHub strips each line), every other token at its id."""
    from tfllm.tokenizers import SPECIAL_TOKENS, WordPieceTokenizer

    tokens = SPECIAL_TOKENS + [" ", "a", "film", "good", "##s", "## "]
    save_tokenizer(WordPieceTokenizer(vocabulary=tokens), tmp_path)
    assert (tmp_path / "assets" / "tokenizer" / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[5] == " "
    loaded = load_tokenizer(tmp_path)
    assert loaded.get_vocabulary() == SPECIAL_TOKENS + ["", "a", "film", "good", "##s", "##"]
    assert np.asarray(loaded(["a good films"])).tolist() == [[6, 8, 7, 9]]

# 60: the alphabet alone is over budget (every probe too big); 300: the search stops within its
# slack; 3000: it runs out of thresholds. 150 English reviews keep each of those (TF Text's probes, counted:
# 60 over at all 10; 300 ends at 299 after 9; 3000 ends at 597 with thresholds left at 9) in ~11 s of TF Text's
# `learn` where 300 reviews took ~18 s.
@pytest.mark.parametrize("language,vocab_size", [pytest.param("english", 60, marks=pytest.mark.slow),
                                                 pytest.param("english", 300, marks=pytest.mark.slow),
                                                 pytest.param("english", 3000, marks=pytest.mark.slow),
                                                 ("chinese", 400)])
def test_learn_word_pieces_gives_tf_texts_vocabulary(language, vocab_size):
    # tfllm's learner reuses the threshold-independent first pass across TF Text's binary search;
    # the vocabulary must be the one TF Text's own `learn` gives, piece for piece and in order.
    import csv
    import gzip
    import itertools

    from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    from tfllm.datasets import bundled_path
    from tfllm.tokenizers import SPECIAL_TOKENS, learn_word_pieces

    name, column = ("rotten_tomatoes.csv.gz", "text") if language == "english" else ("cedict.tsv.gz", "english")
    with gzip.open(bundled_path(name), "rt", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="," if name.endswith("csv.gz") else "\t")
        count = 150 if language == "english" else 300
        texts = [r[column] + ("" if language == "english" else " " + r["simplified"]) for r in itertools.islice(rows, count)]
    counts = learner.count_words([pretokenize(tf.constant(texts), True, False, True, True)])
    alphabet = len({c for word in counts for c in word})
    expected = learner.learn(counts, vocab_size=vocab_size, reserved_tokens=SPECIAL_TOKENS, include_joiner_token=True,
                             joiner="##", max_unique_chars=max(alphabet, 1000))
    assert learn_word_pieces(counts, vocab_size, SPECIAL_TOKENS, max_unique_chars=max(alphabet, 1000)) == expected
    if vocab_size > 60:
        assert len(expected) > 100 + len(SPECIAL_TOKENS)  # learned pieces, not only the alphabet


def test_learn_word_pieces_gives_tf_texts_vocabulary_on_random_words():
    """Counting only whole remainders (`_discounted_piece_counts`) gives TF Text's discounted counts: random
    words over a small alphabet (many shared prefixes and suffixes, ties in count), a word spelt like a
    suffix piece ('##ab') among them."""
    import random

    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    from tfllm.tokenizers import SPECIAL_TOKENS, learn_word_pieces

    rng = random.Random(0)
    for trial in range(6):
        words = {"".join(rng.choice("abcd") for _ in range(rng.randint(1, 7))): rng.randint(1, 40) for _ in range(300)}
        words["##ab"] = 25
        for vocab_size in (30, 60, 120):
            expected = learner.learn(list(words.items()), vocab_size=vocab_size, reserved_tokens=SPECIAL_TOKENS,
                                     include_joiner_token=True, joiner="##", max_unique_chars=1000)
            assert learn_word_pieces(words.items(), vocab_size, SPECIAL_TOKENS) == expected, (trial, vocab_size)


@pytest.mark.slow
def test_preprocess_gives_the_traced_preprocessor_s_tensors_on_tensorflow_text_s_ops():
    from tfllm import data
    from tfllm.models import TextClassifierPreprocessor

    tokenizer = train_tokenizer(ENGLISH, "wordpiece", vocabulary_size=60)
    preprocessor = TextClassifierPreprocessor(tokenizer, sequence_length=8)
    texts = ENGLISH + ["", "an unseen word"]
    signature = [tf.TensorSpec([None], tf.string)]
    expected = tf.function(preprocessor, input_signature=signature)(tf.constant(texts))  # as in tf.data, an export
    # In chunks (here of 4 texts) or in one, the inputs are the traced preprocessor's, and tensors.
    for chunk_size in (4, 8192):
        got = data.preprocess(texts, preprocessor, chunk_size=chunk_size)
        for key, value in expected.items():
            assert isinstance(got[key], tf.Tensor)
            np.testing.assert_array_equal(got[key].numpy(), value.numpy())
    assert data.preprocess([], preprocessor)["token_ids"].shape == (0, 8)
    # Eagerly, on TensorFlow Text's ops, not KerasHub's pure-Python path, which returns NumPy and lists.
    assert tokenizer._allow_python_workflow is False and preprocessor.packer._allow_python_workflow is False
    # A tokenizer alone: its ragged ids, as a tensor.
    ids = data.preprocess(texts, tokenizer)
    assert isinstance(ids, tf.RaggedTensor)
    assert ids.to_list() == tf.function(tokenizer, input_signature=signature)(tf.constant(texts)).to_list()


def test_wordpiece_text_never_starts_with_the_suffix_indicator():
    """A completion's first piece that continues the prompt's last word ("##r") was printed as it is, eagerly,
    in a traced function (the SavedModel's completion) and in a translation."""
    import tensorflow as tf

    tokenizer = train_tokenizer(["a good film with romeo", "a bad film"] * 20, "wordpiece", 40)
    vocabulary = tokenizer.get_vocabulary()
    piece = next(i for i, token in enumerate(vocabulary) if token.startswith("##"))
    word = vocabulary.index("film")
    expected = vocabulary[piece][2:] + " film"
    assert tokenizer.detokenize([[piece, word]]) == [expected]
    traced = tf.function(lambda ids: tokenizer.detokenize(ids), autograph=False)(tf.constant([[piece, word]]))
    assert [t.decode() for t in traced.numpy()] == [expected]
    assert tokenizer.detokenize([[word, piece]]) == ["film" + vocabulary[piece][2:]]  # inside a text: glued
