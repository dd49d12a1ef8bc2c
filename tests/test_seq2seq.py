"""Translation (issue 15): the encoder–decoder, its cached decoding, training, metrics, export and bad input.

Tiny configs on a few hundred synthetic pairs (Chinese numerals -> English
words, so the char tokenizer's vocabulary stays under 50 and a model learns
something in seconds).
"""

import contextlib
import csv
import io
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import warnings

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from conftest import serving_process, timed_fits
from tfllm import cli
from tfllm.datasets.pairs import PairSplit, load_pair_data
from tfllm.errors import TfllmWarning, UserInputError
from tfllm.evaluation import translation_report
from tfllm.models import Seq2SeqLM, Seq2SeqLMPreprocessor, resolve_preset
from tfllm.ngram import NgramLM
from tfllm.tokenizers import SPECIAL_TOKENS, train_tokenizer
from tfllm.training.common import preprocessed
from tfllm.training.seq2seq import compile_model, own_model, pair_dataset
from tfllm.translation import Translator, greedy_without_cache

WORDS = {"一": "one", "二": "two", "三": "three", "四": "four", "五": "five", "六": "six", "七": "seven",
         "八": "eight"}


def make_pairs(n=300, seed=0):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        chars = [rng.choice(list(WORDS)) for _ in range(rng.randint(1, 3))]
        pairs.append(("".join(chars), " ".join(WORDS[c] for c in chars)))
    return pairs


def sources(pairs):
    """How many pairs scoring counts: a source on several rows is one pair, with all of their references."""
    return len({source for source, *_ in pairs})


def write_csv(path, rows, header=("zh", "en")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", make_pairs())


def tiny_model(seed=0, **overrides):
    """An untrained tiny Seq2SeqLM with a char tokenizer over the synthetic pairs."""
    keras.utils.set_random_seed(seed)
    pairs = make_pairs(100)
    preset = resolve_preset("translate", "tiny", overrides)
    tokenizer = train_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], "char", preset["vocabulary_size"],
                                lowercase=False)
    return own_model(preset, tokenizer), preset


@pytest.fixture(scope="module")
def model_seed_3():
    """An untrained tiny model (seed 3) for the tests of its decoding loop, which each make their own Translator
    (the model itself is only read): built once for them."""
    model, _ = tiny_model(seed=3)
    return model


@pytest.fixture(scope="module")
def translator_seed_2():
    """An untrained tiny model's Translator (seed 2, no XLA) for the tests that only translate with it: its
    decoding functions are traced once for them all, not once per test. Untrained, every token is likely, so
    sampling differs from greedy."""
    model, _ = tiny_model(seed=2)
    return Translator(model, jit_compile=False)


@pytest.fixture(scope="module")
def translator_seed_5():
    """As translator_seed_2, from another seed's untrained model (the beam and language-model fusion tests')."""
    model, _ = tiny_model(seed=5)
    return Translator(model, jit_compile=False)


def generate_inputs(model, sources, width):
    inputs = model.preprocessor.generate_preprocess(tf.constant(sources), decoder_sequence_length=width)
    return {k: tf.cast(v, tf.int32) for k, v in inputs.items()}


def until_end(row, end_id):
    row = list(map(int, row))
    return row[: row.index(end_id) + 1] if end_id in row[1:] else row


# --- the model ----------------------------------------------------------------


@pytest.mark.slow
def test_cached_greedy_equals_uncached_token_for_token(model_seed_3):
    model = model_seed_3
    translator = Translator(model, jit_compile=False)
    sources = ["一二三", "四", "五六七八", "八八"]
    width = 1 + translator.max_new_tokens
    cached = translator.decode_ids(sources, max_new_tokens=translator.max_new_tokens)
    uncached = greedy_without_cache(model, generate_inputs(model, sources, width), translator.max_new_tokens,
                                    translator.end_id)
    end = translator.end_id
    lengths = []
    for a, b in zip(cached, uncached):
        assert until_end(a, end) == until_end(b, end)
        lengths.append(len(until_end(a, end)))
    assert max(lengths) > 3  # an untrained model writes several tokens: the comparison covers cached steps


@pytest.mark.slow
def test_xla_decodes_only_many_sources_at_once_and_decodes_them_as_without(model_seed_3, monkeypatch):
    """Compiling the decoding loop costs more than a few sources take to decode (translation.XLA_MIN_SOURCES)."""
    import tfllm.translation as translation

    model = model_seed_3
    sources, targets = ["一二三", "四", "五六七八", "八八"], ["one two", "four", "five", "eight eight"]
    translator = Translator(model)  # jit_compile=True, as `tfllm translate` loads it
    plain = translator.decode_ids(sources, max_new_tokens=translator.max_new_tokens), translator.score(sources, targets)
    monkeypatch.setattr(translation, "XLA_MIN_SOURCES", len(sources))
    compiled = translator.decode_ids(sources, max_new_tokens=translator.max_new_tokens), translator.score(sources, targets)
    # Each function once without XLA (4 sources are below the default) and once with it.
    assert sorted(key[-1] for key in translator._compiled) == [False, False, True, True]
    np.testing.assert_array_equal(compiled[0], plain[0])
    np.testing.assert_allclose(compiled[1][0], plain[1][0], rtol=1e-5)
    np.testing.assert_array_equal(compiled[1][1], plain[1][1])
    assert not Translator(model, jit_compile=False)._xla(sources)  # never, when told not to


@pytest.mark.slow
def test_decoding_encodes_once_and_runs_one_position_per_step(model_seed_3, monkeypatch):
    model = model_seed_3  # its methods are patched for this test only (monkeypatch puts them back)
    calls = {"encoder": 0, "decoder_lengths": []}
    encoder, decoder = model.call_encoder, model.call_decoder_with_cache

    def count_encoder(*args, **kwargs):
        calls["encoder"] += 1
        return encoder(*args, **kwargs)

    def count_decoder(encoder_hidden_states, encoder_padding_mask, decoder_token_ids, *args, **kwargs):
        calls["decoder_lengths"].append(int(decoder_token_ids.shape[1]))
        return decoder(encoder_hidden_states, encoder_padding_mask, decoder_token_ids, *args, **kwargs)

    monkeypatch.setattr(model, "call_encoder", count_encoder)
    monkeypatch.setattr(model, "call_decoder_with_cache", count_decoder)
    width = 8
    # Eagerly, so Python sees every step of the loop; no stop token, so all 7 steps run.
    model.generate_step(generate_inputs(model, ["一二三", "四五"], width), stop_token_ids=None,
                        sampler=keras_hub.samplers.GreedySampler())
    assert calls["encoder"] == 1
    assert calls["decoder_lengths"] == [width] + [1] * (width - 1)  # seed the caches, then one position per token


@pytest.mark.slow
def test_beam_search_with_one_beam_equals_greedy(translator_seed_5):
    translator = translator_seed_5
    sources = ["一二三", "四", "五六七八"]
    greedy = translator.translate(sources, sampler="greedy", warn=False)
    beam = translator.translate(sources, sampler="beam", num_beams=1, warn=False)
    assert greedy == beam
    assert any(greedy)
    assert translator.translate(sources, sampler="beam", num_beams=3, warn=False)  # runs with several beams


def test_n_gram_model_is_normalised_backs_off_and_prefers_what_it_counted():
    lm = NgramLM.fit([[5, 6, 7], [5, 6], [8]], vocabulary_size=10, start_id=1, end_id=2)
    # After (start, start), (start, 5), (5, 6), an unseen context and an unseen pair with a seen last id.
    contexts = np.array([[1, 1], [1, 5], [5, 6], [9, 9], [9, 5]])
    probabilities = np.exp(lm.log_probs(contexts))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    assert probabilities[1].argmax() == 6 and probabilities[2][[7, 2]].min() > probabilities[2].max() / 2
    assert probabilities[4].argmax() == 6  # (9, 5) was never seen: the bigram after 5 decides
    assert lm.score([5, 6, 7]) > lm.score([7, 6, 5])
    # Kneser-Ney: after a token never seen, 7 (which followed four different tokens) is likelier than 6,
    # counted as often but only ever after 5; raw counts would tie them.
    lm = NgramLM.fit([[5, 6]] * 4 + [[3, 7], [4, 7], [8, 7], [9, 7]], vocabulary_size=10, start_id=1, end_id=2)
    unseen = lm.log_probs(np.array([[0, 0]]))[0]
    assert unseen[7] > unseen[6] and np.isclose(np.exp(unseen).sum(), 1.0, rtol=1e-5)
    with pytest.raises(UserInputError, match="empty"):
        NgramLM.fit([], vocabulary_size=10, start_id=1, end_id=2)


@pytest.mark.slow
def test_fusing_a_language_model_steers_decoding_and_weight_zero_changes_nothing(translator_seed_5):
    translator = translator_seed_5
    sources = ["一二三", "四", "五六七八"]
    lm = translator.language_model(["two one"] * 5)
    for sampler, beams in (("greedy", None), ("beam", 3)):
        plain = translator.translate(sources, sampler=sampler, num_beams=beams, warn=False)
        assert translator.translate(sources, sampler=sampler, num_beams=beams, warn=False, lm=lm,
                                    lm_weight=0.0) == plain
        # An untrained decoder next to a certain language model: the model's only sentence comes out.
        assert translator.translate(sources, sampler=sampler, num_beams=beams, warn=False, lm=lm,
                                    lm_weight=20.0) == ["two one"] * 3
    with pytest.raises(UserInputError, match="lm_weight"):
        translator.translate(sources, lm=lm, lm_weight=-1)
    # Weights past float32's range (inf, 1e300) were accepted and every translation came out empty.
    for weight in (float("inf"), 1e300, float("nan"), 100.5, True):
        with pytest.raises(UserInputError, match=rf"^lm_weight must be a number from 0 to 100 .*got {re.escape(repr(weight))}\.$"):
            translator.translate(sources, lm=lm, lm_weight=weight)
    assert len(translator.translate(sources, warn=False, lm=lm, lm_weight=100)) == 3
    other = NgramLM.fit([[5]], vocabulary_size=lm.vocabulary_size + 1, start_id=lm.start_id, end_id=lm.end_id)
    with pytest.raises(UserInputError, match="another tokenizer"):
        translator.translate(sources, lm=other)
    # A language model of text the output vocabulary lacks ([UNK] after [UNK]) gives [UNK] no more than the token
    # it likes least: it made [UNK], then the end, each translation's likeliest start, and the text came out empty.
    unknown = translator.language_model(["龘龘龘 龘龘"] * 5)
    assert unknown.log_probs(np.array([[unknown.start_id, unknown.start_id]]))[0].argmax() == translator.unk_id
    adjust = translator._fusion(unknown, 1.0)
    logits = tf.zeros([1, translator.output_size])
    lm_part = (adjust(logits, tf.constant([[unknown.start_id, 0]]), tf.constant(1)) - tf.nn.log_softmax(logits))[0]
    assert float(lm_part[translator.unk_id]) == pytest.approx(float(tf.reduce_min(lm_part)))


@pytest.mark.slow
def test_preset_round_trip_and_plain_keras_hub_load(tmp_path):
    model, _ = tiny_model(seed=1)
    inputs = generate_inputs(model, ["一二", "三"], 8)
    with preprocessed(model):
        expected = keras.ops.convert_to_numpy(model(inputs))
    model.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.Seq2SeqLM.from_preset(str(tmp_path))
    assert type(loaded) is Seq2SeqLM and type(loaded.preprocessor) is Seq2SeqLMPreprocessor
    assert loaded.preprocessor.encoder_sequence_length == model.preprocessor.encoder_sequence_length
    with preprocessed(loaded):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(inputs)), expected, atol=1e-6)
    loaded.compile(sampler="greedy")
    # KerasHub's own generate() on strings answers with str, as KerasHub's models do (it was NumPy bytes).
    texts = loaded.generate(["一二", "三"], max_length=8)
    assert isinstance(texts, list) and [type(t) for t in texts] == [str, str]
    assert isinstance(loaded.generate("一二", max_length=8), str)


@pytest.mark.slow
def test_training_reduces_loss():
    model, preset = tiny_model(seed=0)
    pairs = make_pairs(300)
    split = PairSplit([s for s, _ in pairs], [[t] for _, t in pairs])
    ds = pair_dataset(split, model.preprocessor, 32, shuffle=True, seed=0)
    compile_model(model, dict(preset, epochs=2, jit_compile=False), steps_per_epoch=10)
    with preprocessed(model):
        before = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
        model.fit(ds, epochs=2, verbose=0)
        after = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert after < 0.7 * before


def test_label_smoothing_loss_matches_keras_categorical_crossentropy():
    from tfllm.training.seq2seq import SmoothedSparseCrossentropy

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype("float32")
    labels = rng.integers(0, 7, size=(2, 3))
    for smoothing in (0.0, 0.1):
        ours = SmoothedSparseCrossentropy(smoothing)(labels, logits)
        keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)(
            keras.ops.one_hot(labels, 7), logits)
        np.testing.assert_allclose(float(ours), float(keras_loss), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_is_the_mean_over_target_tokens_not_over_padding_slots(smoothing):
    # Keras' default reduction divided by every decoder slot, padding included: a cedict run's
    # val_loss read 2.66 against a true mean per target token of 3.14.
    model, preset = tiny_model(seed=0)
    pairs = make_pairs(8, seed=1)
    split = PairSplit([s for s, _ in pairs], [[t] for _, t in pairs])
    x, y, w = next(iter(pair_dataset(split, model.preprocessor, 8)))
    compile_model(model, dict(preset, epochs=1, label_smoothing=smoothing, jit_compile=False), steps_per_epoch=1)
    with preprocessed(model):
        reported = model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)["loss"]
    logits = keras.ops.convert_to_numpy(model(x)).astype("float64")
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, np.asarray(y)[..., None], -1)[..., 0]
    per_slot = (1 - smoothing) * nll - smoothing * log_probs.mean(-1)
    w = np.asarray(w, "float64")
    assert w.sum() < w.size  # short targets leave padding, so a dilution would show
    assert reported == pytest.approx((per_slot * w).sum() / w.sum(), rel=1e-4)


# --- data and metrics ------------------------------------------------------------


def test_metrics_count_every_reference():
    outputs = ["to be able to", "hello"]
    only_second = [["can", "to be able to"], ["goodbye", "hello"]]
    report = translation_report(outputs, only_second)
    assert report["exact_match"] == 1.0
    assert report["chrf"] == pytest.approx(100.0)
    assert report["char_accuracy"] == 1.0
    first_only = translation_report(outputs, [[refs[0]] for refs in only_second])
    assert first_only["exact_match"] == 0.0 and first_only["chrf"] < 50


@pytest.mark.slow  # reading the bundled cedict file takes ~4 s whatever max_rows is
def test_cedict_gives_every_gloss_as_a_reference_and_trains_on_the_first():
    data = load_pair_data("cedict", max_rows=3000)
    assert (data.source_column, data.target_column) == ("simplified", "english")
    multi = [refs for refs in data.train.references if len(refs) > 1]
    assert multi and all("/" not in r for refs in multi for r in refs)
    assert data.train.targets[0] == data.train.references[0][0]
    assert len(data.test) and len(data.val)  # the file's own split
    pinyin = load_pair_data("cedict", "pinyin", "simplified", max_rows=500)
    assert all(len(refs) == 1 for refs in pinyin.test.references)  # one reference when not the glosses


def test_seeded_split_without_a_split_column(pairs_csv):
    a, b = load_pair_data(pairs_csv, "zh", "en", seed=7), load_pair_data(pairs_csv, "zh", "en", seed=7)
    assert a.test.sources == b.test.sources
    assert (len(a.train), len(a.val), len(a.test)) == (240, 30, 30)


def test_a_pairs_column_that_names_each_rows_split_is_named_in_a_warning_when_not_read(tmp_path):
    """As for classification: a file's own split column was ignored without a word for a seeded split."""
    path = write_csv(tmp_path / "p.csv", [(zh, en, "dev" if i % 10 == 8 else "test" if i % 10 == 9 else "train")
                                          for i, (zh, en) in enumerate(make_pairs(50))], header=("zh", "en", "split"))
    with pytest.warns(TfllmWarning, match=r"p.csv' has a column 'split' whose values \(dev, test, train\) name each "
                                          r"row's split, but it is not read: the split is a seeded one. Pass "
                                          r"split_column='split' to keep the file's split."):
        load_pair_data(path, "zh", "en", warn_split=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        load_pair_data(path, "zh", "en", split_column="split", warn_split=True)
        load_pair_data(path, "zh", "en")  # a run's own data read again to be scored: split as it was trained


def test_translation_training_prints_its_data_line_and_warns_of_a_split_of_one_source(tmp_path, capsys, monkeypatch):
    """A classifier's training prints 'Data: ...' as soon as its data is split; a translation's printed nothing,
    nor said that its validation or test split held a single source text (chrF of one sentence)."""
    from tfllm.datasets import warn_about_small_splits
    from tfllm.datasets.pairs import describe
    from tfllm.errors import UserInputError as Stop
    from tfllm.training import seq2seq

    path = write_csv(tmp_path / "p.csv", [(zh, en, "val" if i == 0 else "test" if i < 4 else "train")
                                          for i, (zh, en) in enumerate(make_pairs(40, seed=3))],
                     header=("zh", "en", "split"))
    data = load_pair_data(path, "zh", "en", split_column="split", group_sources=True)
    assert describe(data) == (f"Data: {len(data.train)} training pairs, val/test 1/{len(data.test)} source texts, "
                              "'zh' -> 'en'")
    with pytest.warns(TfllmWarning) as caught:
        warn_about_small_splits("p.csv", data, "source text")
    assert [str(w.message) for w in caught] == [
        f"'p.csv' gives only 1 validation source text and {len(data.test)} test source texts: one more or less right "
        "moves the figures by 100 points, so they are mostly noise. Give it more data (a seeded split holds out a "
        "tenth for each), or more rows of those splits in its split_column."]
    # The command prints both before anything is trained (stopped here, where the run directory is made).
    monkeypatch.setattr(seq2seq.runs, "prepare", lambda *a, **k: (_ for _ in ()).throw(Stop("stopped")))
    code = cli.main(["train", "--task", "translate", "--data", path, "--source-column", "zh", "--target-column", "en",
                     "--split-column", "split", "--preset", "tiny", "--run-dir", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 2 and describe(data) in out.splitlines()
    assert "warning: " in err and "p.csv' gives only 1 validation source text" in err
    assert "in its --split-column." in err


def test_training_warns_of_sources_longer_than_the_encoder_reads_and_how_long_to_make_it(tmp_path, capsys,
                                                                                         monkeypatch):
    """`--preset tiny` cut every training source to its first 8 tokens without a word (only `tfllm translate`
    warned later); training warns once with the count and a length that fits them."""
    from tfllm.training import seq2seq

    model, preset = tiny_model()
    tokenizer, length = model.preprocessor.tokenizer, model.preprocessor.encoder_sequence_length
    short = [s for s, _ in make_pairs(30, seed=4)]
    long = ["一二三四五六七八" * 3] * 5
    with pytest.warns(TfllmWarning) as caught:
        seq2seq.warn_of_cut_texts(short + long, tokenizer, length, "source")
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"5 of 35 training sources are longer than the {length - 2} tokens the encoder reads")
    fix = message.rsplit("'encoder_sequence_length': ", 1)[1].split("}")[0]  # Python's spelling of --set
    with warnings.catch_warnings():  # the length it names fits them: nothing to warn of
        warnings.simplefilter("error")
        seq2seq.warn_of_cut_texts(short + long, tokenizer, int(fix), "source")
    # The command warns as it trains (stopped before fit).
    path = write_csv(tmp_path / "p.csv", [(zh * 6, en) for zh, en in make_pairs(40, seed=5)])
    monkeypatch.setattr(seq2seq, "compile_model", lambda *a, **k: (_ for _ in ()).throw(UserInputError("stopped")))
    assert cli.main(["train", "--task", "translate", "--data", path, "--source-column", "zh", "--target-column", "en",
                     "--preset", "tiny", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "training sources are longer than" in err and "--set encoder_sequence_length=" in err


def test_training_warns_of_targets_longer_than_the_decoder_writes(tmp_path, capsys, monkeypatch):
    """A target longer than decoder_sequence_length was learned cut (its [EOS] never seen) without a word:
    exact match was out of reach. The packer holds the start token, the target and [EOS] in one position
    more than the length, so a target of length - 1 tokens fits and one token more does not."""
    from tfllm.training import seq2seq

    model, preset = tiny_model()
    tokenizer, length = model.preprocessor.tokenizer, model.preprocessor.decoder_sequence_length
    x, y, w = model.preprocessor({"encoder_text": tf.constant(["一"]),
                                  "decoder_text": tf.constant(["o" * (length - 1)])})
    assert int(tf.reduce_sum(tf.cast(w, "int32"))) == length  # every token and [EOS] are learned: nothing cut
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seq2seq.warn_of_cut_texts(["o" * (length - 1)], tokenizer, length, "target")
    with pytest.warns(TfllmWarning, match=f"^1 of 2 training targets are longer than the {length - 1} tokens the "
                                          f"decoder writes .*'decoder_sequence_length': {length + 1}"):
        seq2seq.warn_of_cut_texts(["o", "o" * length], tokenizer, length, "target")
    # Capped at a preset's positions (BART's 64 was told =79, trained at 64 and was told it again), and the
    # share the suggestion fits is named ("longest 45 tokens ... =14" read as too short).
    many = ["o"] * 19 + ["o" * (length + 5)]
    with pytest.warns(TfllmWarning, match=rf"'decoder_sequence_length': {length + 6}}} \(fits all"):
        seq2seq.warn_of_cut_texts(many, tokenizer, length, "target")
    with pytest.warns(TfllmWarning, match=rf"'decoder_sequence_length': {length + 2}}}, the most the preset's "
                                          rf"positions allow \({length + 6} would fit all of them\)"):
        seq2seq.warn_of_cut_texts(many, tokenizer, length, "target", positions=length + 2)
    with pytest.warns(TfllmWarning, match=f"The preset has {length} positions, which decoder_sequence_length "
                                          f"{length} already uses: shorten"):
        seq2seq.warn_of_cut_texts(many, tokenizer, length, "target", positions=length)
    path = write_csv(tmp_path / "p.csv", [(zh, " ".join([en] * 8)) for zh, en in make_pairs(40, seed=5)])
    monkeypatch.setattr(seq2seq, "compile_model", lambda *a, **k: (_ for _ in ()).throw(UserInputError("stopped")))
    assert cli.main(["train", "--task", "translate", "--data", path, "--source-column", "zh", "--target-column", "en",
                     "--preset", "tiny", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "training targets are longer than" in err and "--set decoder_sequence_length=" in err
    assert "training sources are longer" not in err


def test_the_data_line_counts_sources_with_several_different_targets(tmp_path):
    """The same question with two answers was grouped as two references, so either scored as exact, without a
    word: fine for translation, misleading for question answering."""
    from tfllm.datasets.pairs import describe

    rows = [(zh, en) for zh, en in make_pairs(40, seed=3)] + [("九", "nine"), ("九", "ten"), ("十", "ten")]
    data = load_pair_data(write_csv(tmp_path / "p.csv", rows), "zh", "en", group_sources=True)
    assert describe(data).endswith("'en'; 1 source texts have several different targets: each is scored against "
                                   "all of them")


def test_a_headerless_txt_of_tab_separated_pairs_reads_its_columns_by_position(tmp_path):
    """The Tatoeba/Anki files the keras.io translation examples read (`spa.txt`: English, a tab, the translation, a
    tab, the attribution): they said "Name the columns", then "plain text ... without a source and a target column"."""
    import gzip

    pairs = [(en, zh) for zh, en in make_pairs(50)] + [('"One," he said.', "一")]  # quotes are text, not CSV quoting
    text = "".join(f"{en}\t{zh}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}\n" for i, (en, zh) in enumerate(pairs))
    path = tmp_path / "eng-zh.txt"
    path.write_text(text + "\n", encoding="utf-8")  # a blank last line is no pair
    (tmp_path / "eng-zh.txt.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    for name in ("eng-zh.txt", "eng-zh.txt.gz"):
        # Tatoeba's third field, the attribution, is dropped, and said once (it went without a word).
        with pytest.warns(TfllmWarning) as caught:
            data = load_pair_data(str(tmp_path / name))
        assert [str(w.message) for w in caught] == [
            f"{len(pairs)} lines of {str(tmp_path / name)!r} have more than 2 tab-separated fields; fields after the "
            "second are ignored (line 1 first; a text that holds a tab is cut there)."]
        assert (data.source_column, data.target_column) == ("1", "2")
        read = sorted(zip(data.train.sources + data.val.sources + data.test.sources,
                          data.train.targets + data.val.targets + data.test.targets))
        assert read == sorted(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TfllmWarning)
        load_pair_data(str(path), source_column="1", target_column="3")  # every field read: nothing to say
    reverse = load_pair_data(str(path), source_column="2", target_column="1")
    assert sorted(zip(reverse.train.targets + reverse.val.targets + reverse.test.targets,
                      reverse.train.sources + reverse.val.sources + reverse.test.sources)) == sorted(pairs)
    path.write_text(text + "three\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=f"line {len(pairs) + 1} has no tab: write each pair"):
        load_pair_data(str(path))
    path.write_text("one two\nthree\n", encoding="utf-8")  # plain text, a line each: still refused as such
    with pytest.raises(UserInputError, match="is plain text.* a tab, the target"):
        load_pair_data(str(path))


def test_a_txt_runs_sources_in_a_csv_are_asked_for_by_column(tmp_path):
    """A run trained on a .txt of pairs has no source column name: `translate --file pairs.csv` looked for a
    column 'text' the run never had, and called the header's problem "data row 1"'s."""
    from tfllm.datasets.pairs import read_sources

    pairs = make_pairs(3)
    write_csv(tmp_path / "pairs.csv", pairs, header=("zh", "en"))
    (tmp_path / "pairs.txt").write_text("".join(f"{zh}\t{en}\n" for zh, en in pairs))
    with pytest.raises(UserInputError) as refused:
        list(read_sources(str(tmp_path / "pairs.csv"), None))
    assert str(refused.value) == (f"{str(tmp_path / 'pairs.csv')!r} has columns, and this run was trained on a .txt "
                                  "of pairs, so its source has no column name; pass text_column=... "
                                  "(one of ['zh', 'en']).")
    assert list(read_sources(str(tmp_path / "pairs.csv"), "zh", named=True)) == [zh for zh, _ in pairs]
    assert list(read_sources(str(tmp_path / "pairs.txt"), None)) == [zh for zh, _ in pairs]  # its first field


def test_a_sources_translations_stay_in_one_split_and_are_scored_together(tmp_path):
    """Tatoeba gives a source once per translation ("Go." as "Ve.", "Vete.", "Vaya."). Dealt row by row, 60 of
    80 test sources of this file were also training sources, each scored against one of its translations."""
    from tfllm.config import TrainConfig
    from tfllm.training.seq2seq import load_data, translation_preset

    rows = [(f"go {i % 150}.", f"ve {i % 150} {t}.") for i in range(400) for t in range(1 + i % 3)]
    path = tmp_path / "spa.txt"
    path.write_text("".join(f"{en}\t{es}\tCC-BY 2.0 (France) #{i}\n" for i, (en, es) in enumerate(rows)))
    translations = {}
    for en, es in rows:
        translations.setdefault(en, []).append(es)
    data = load_pair_data(str(path), group_sources=True)
    train = set(data.train.sources)
    for held_out in (data.val, data.test):
        assert len(held_out) and not train & set(held_out.sources)  # never trained on
        assert len(set(held_out.sources)) == len(held_out)  # each source once,
        assert held_out.references == [list(dict.fromkeys(translations[en])) for en in held_out.sources]  # all of them
    scored = data.val.sources + data.test.sources
    assert len(data.train) + sum(len(translations[en]) for en in scored) == len(rows)  # training has every other row
    assert sorted(data.train.sources) == sorted(en for en, _ in rows if en not in scored)

    # A run trained before the setting (its recipe has none) is split again row by row, as it was.
    config = TrainConfig(task="translate", data=str(path), preset="tiny")
    assert translation_preset(config)["group_sources"] is True
    old = load_data(config, {})
    assert len(old.train) + len(old.val) + len(old.test) == len(rows)
    assert all(len(references) == 1 for references in old.test.references)
    # Where no source repeats, both deal the same split: such runs keep theirs.
    path.write_text("".join(f"{en}\t{es[0]}\n" for en, es in translations.items()))
    grouped, by_row = (load_pair_data(str(path), seed=7, group_sources=g) for g in (True, False))
    assert grouped == by_row and len(grouped.test) == 15


@pytest.mark.parametrize("row, message", [
    ({"zh": "一", "en": ["one", "single"]}, "JSON list, not text, as its target"),
    ({"zh": 1, "en": "one"}, "JSON int, not text, as its source"),
])
def test_a_json_list_or_number_is_named_not_called_empty(tmp_path, row, message):
    # It said 'has 1 row(s) with empty ... text ... Remove or fill them' of a filled row.
    path = tmp_path / "pairs.jsonl"
    rows = [row] + [{"zh": s, "en": t} for s, t in make_pairs(10)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(UserInputError, match=message) as error:
        load_pair_data(str(path), "zh", "en")
    assert "empty" not in str(error.value) and "data row 1" in str(error.value)


@pytest.mark.parametrize("rows, args, message", [
    ([("一", "one")] * 10, ["--source-column", "chinese", "--target-column", "en"], "no source column 'chinese'"),
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "english"], "no target column 'english'"),
    ([("一", "one")] * 5 + [("二", "")], ["--source-column", "zh", "--target-column", "en"], "empty target"),
    ([(" ", "one")] + [("二", "two")] * 5, ["--source-column", "zh", "--target-column", "en"], "empty source"),
    ([("一", "one")], ["--source-column", "zh", "--target-column", "en"], "single pair"),
    # A number (JSON-read) was a TypeError traceback; a decoder of one position trained the whole run, then
    # failed its decoding ('max_new_tokens ... from 1 to 0'); an encoder of two read no source token.
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "en", "--set", "reference_separator=5"],
     "takes text"),
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "en", "--set", "decoder_sequence_length=1"],
     "'decoder_sequence_length' must be at least 2"),
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "en", "--set", "encoder_sequence_length=2"],
     "'encoder_sequence_length' must be at least 3"),
    # Classification's flags were accepted and ignored.
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "en", "--text-column", "zh"],
     "--text-column is not for --task translate"),
    ([("一", "one")] * 10, ["--source-column", "zh", "--target-column", "en", "--labels", "one,two"],
     "--labels is not for --task translate"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, rows, args, message):
    data = write_csv(tmp_path / "pairs.csv", rows)
    run_dir = tmp_path / "run"
    code = cli.main(["train", "--task", "translate", "--data", data, *args, "--preset", "tiny",
                     "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def wordpiece_translator():
    """An untrained tiny model with a WordPiece tokenizer (no XLA), built once for the texts it is given."""
    keras.utils.set_random_seed(0)
    pairs = make_pairs(100)
    preset = resolve_preset("translate", "tiny")
    tokenizer = train_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], "wordpiece", 200, lowercase=False)
    return Translator(own_model(preset, tokenizer), jit_compile=False)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["\u200b", "\x01", " \u200b\u200b "])
def test_translate_refuses_a_text_the_tokenizer_makes_nothing_of(wordpiece_translator, text):
    # WordPiece drops control and zero-width characters: the source was [BOS] [EOS] alone, and translate printed
    # an empty line (or a made-up translation) with exit status 0, as `tfllm predict` no longer does.
    translator = wordpiece_translator
    with pytest.raises(UserInputError, match="Text 2 to translate .* has nothing this model reads"):
        translator.translate(["一二", text])
    assert len(translator.translate(["一二"])) == 1
    # `tfllm translate --file` checks 256 lines at a time, blank ones left out: it numbered the text within them.
    with pytest.raises(UserInputError, match="Text 259 to translate .* has nothing this model reads"):
        translator.check_sources(["一二", text], numbers=[257, 259])


def test_another_max_new_tokens_reuses_the_traced_decoding_loop(model_seed_3):
    # Each other max_new_tokens is another decoder width; the loop traced for the first width was traced again
    # for the second (~5 s of Python on 2 cores) before one trace served any width.
    translator = Translator(model_seed_3, jit_compile=False)
    short, longer = (translator.translate(["一二"], max_new_tokens=n) for n in (2, 4))
    (decode,) = translator._compiled.values()
    assert decode.experimental_get_tracing_count() == 1
    assert len(short[0]) <= 2 and len(longer[0]) <= 4


@pytest.mark.slow
def test_translate_refuses_empty_text_and_warns_about_long_sources(translator_seed_2):
    translator = translator_seed_2
    # A space around a source was decoded as part of it (training, scoring and --file strip it); outputs are
    # stripped too (a character model's trailing spaces).
    first, *others = translator.translate(["一二", " 一二", "一二 "], warn=False)
    assert others == [first, first] and first == first.strip()
    with pytest.raises(UserInputError, match="empty"):
        translator.translate(["一", " "])
    with pytest.raises(UserInputError, match=r"Text 2 to translate is int \(3\), not a string"):  # was called empty
        translator.translate(["一", 3])
    with pytest.raises(UserInputError, match="sources must be a list of strings, got NoneType"):  # a TypeError
        translator.translate(None)
    assert translator.translate(iter(["一"]), max_new_tokens=2) == translator.translate(["一"], max_new_tokens=2)
    with pytest.raises(UserInputError, match="max_new_tokens"):
        translator.translate(["一"], max_new_tokens=translator.max_new_tokens + 1)
    with pytest.warns(TfllmWarning, match="longer than the model's 10 tokens.*first 10 tokens"):
        translator.translate(["一二三四五六七八一二三四五六"], max_new_tokens=2)
    with pytest.warns(TfllmWarning, match="never seen in training"):
        translator.translate(["九"], max_new_tokens=2)
    # A seeded call repeats within a process, and top_k beyond
    # the decoder's output vocabulary is clamped (a TensorFlow error), as `tfllm generate` clamps it.
    sampled = [translator.translate(["一二"], sampler="top_k", top_k=10**5, seed=7, max_new_tokens=4) for _ in range(2)]
    assert sampled[0] == sampled[1]
    for options, message in ((dict(sampler="beam", num_beams=2.5), "num_beams must be a whole number"),
                             (dict(batch_size="8"), "batch_size must be a whole number"),
                             (dict(memory="train"), "memory must be a tfllm.memory.TranslationMemory")):
        with pytest.raises(UserInputError, match=message):  # not an error deep in TensorFlow or an AttributeError
            translator.translate(["一"], max_new_tokens=2, **options)
    # An option the sampler does not read is refused, as generate refuses it (sampler="beam", top_k=4 decoded
    # greedily without a word).
    for options, message in ((dict(sampler="beam", top_k=4), "top_k is for sampler='top_k'"),
                             (dict(sampler="greedy", num_beams=3), "num_beams is for sampler='beam'"),
                             (dict(sampler="top_k", top_p=0.5), "top_p is for sampler='top_p'"),
                             (dict(sampler="top_k", temperature=0, seed=3), "seed is not read at temperature=0"),
                             (dict(sampler="top_p", temperature=0, top_p=0.5), "top_p is not read at temperature=0")):
        with pytest.raises(UserInputError, match=message):
            translator.translate(["一"], max_new_tokens=2, **options)
    with pytest.raises(UserInputError, match="temperature must be a number >= 0, got -1"):
        translator.translate(["一"], sampler="top_k", temperature=-1, max_new_tokens=2)
    # Temperature 0 is greedy, as for `tfllm generate` (not a division by zero).
    assert translator.translate(["一二"], sampler="top_p", temperature=0, max_new_tokens=4) == \
        translator.translate(["一二"], max_new_tokens=4)


@pytest.mark.slow
def test_seeded_sampling_gives_a_source_one_translation_whatever_the_batch(translator_seed_2):
    """Seeded top-k/top-p translations hung on the batch: with KerasHub's samplers (one random state per call,
    advanced by every row and batch) a source's text changed with batch_size and with its place among the
    sources (tour G: rows 3-6 of 6 differed at batch_size=2). Each row now samples with generation's
    per-row counter-based noise (OptionSampler), seeded by the call's seed and its source."""
    translator = translator_seed_2
    given = ["一二", "三四五", "六", "七八", "一", "二三", "四四", "五六七"]
    for sampler in ("top_k", "top_p"):
        options = dict(sampler=sampler, seed=5, max_new_tokens=6, warn=False)
        whole = translator.translate(given, **options)
        assert translator.translate(given, **options) == whole  # a seeded call repeats
        assert translator.translate(given, batch_size=2, **options) == whole
        assert translator.translate(given, batch_size=3, **options) == whole
        assert translator.translate(given[::-1], **options) == whole[::-1]  # another place among the sources
        assert translator.translate(given[1:], **options) == whole[1:]
        assert [translator.translate([s], **options)[0] for s in given[:3]] == whole[:3]  # each alone
        assert translator.translate(given[:1] * 3, **options) == whole[:1] * 3
        assert len(set(whole)) > 1  # rows do not all draw the same tokens
        assert translator.translate(given, **dict(options, seed=6)) != whole  # the seed counts
        assert translator.translate(given, **options) != translator.translate(given, max_new_tokens=6, warn=False)


# --- end to end: CLI, run directory, export, serving ------------------------------


@pytest.fixture(scope="module")
def trained_run_and_output(pairs_csv, tmp_path_factory):
    # A run directory with a space: every command that takes it, and the hint it prints, must cope.
    run_dir = str(tmp_path_factory.mktemp("runs") / "运行 1" / "拼音 tr")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", "--task", "translate", "--data", pairs_csv, "--source-column", "zh",
                         "--target-column", "en", "--preset", "tiny", "--epochs", "3", "--run-dir", run_dir])
    assert code == 0
    return run_dir, out.getvalue()


@pytest.fixture(scope="module")
def trained_run(trained_run_and_output):
    return trained_run_and_output[0]


@pytest.mark.slow
def test_the_closing_hint_pastes_back_the_run_directory(trained_run_and_output):
    """It read `tfllm translate 运行 1/拼音 ime TEXT`, unquoted: pasted, the shell split the path at the space."""
    run_dir, out = trained_run_and_output
    hint = out.splitlines()[-1]
    assert hint.startswith(f"Run directory: {run_dir}  (translate: "), hint
    command = hint.split("(translate: ", 1)[1].removesuffix(")")
    assert shlex.split(command) == ["tfllm", "translate", run_dir, "TEXT"]


@pytest.mark.slow
def test_train_translate_evaluate(trained_run, pairs_csv, capsys):
    metrics = json.load(open(os.path.join(trained_run, "metrics.json")))
    for split in ("val", "test"):
        assert set(metrics[split]) >= {"chrf", "bleu", "exact_match", "char_accuracy", "num_examples"}
    test = load_pair_data(pairs_csv, "zh", "en", group_sources=True).test
    assert metrics["test"]["num_examples"] == len(test) == len(set(test.sources)) > 10
    assert json.load(open(os.path.join(trained_run, "tfllm", "run.json")))["task"] == "translate"
    events = [f for root, _, files in os.walk(os.path.join(trained_run, "logs")) for f in files if "tfevents" in f]
    assert events
    model = keras_hub.models.Seq2SeqLM.from_preset(trained_run)
    assert model.preprocessor is not None
    # The decoder scores the target side's tokens only: English letters, not the Chinese source characters.
    vocabulary = model.preprocessor.tokenizer.get_vocabulary()
    output_size = model.backbone.target_vocabulary_size
    assert model.backbone.token_embedding.compute_output_shape((1, 8), reverse=True)[-1] == output_size
    assert set(vocabulary[output_size:]) >= set(WORDS) and set("onetwo") <= set(vocabulary[:output_size])
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "一二", "三", "--num-beams", "2"]) == 0
    translations = capsys.readouterr().out
    assert len(translations.splitlines()) == 2
    # Texts after an option, as explain takes them (they were "unrecognized arguments").
    assert cli.main(["translate", trained_run, "--num-beams", "2", "一二", "三"]) == 0
    assert capsys.readouterr().out == translations
    assert cli.main(["evaluate", trained_run]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["chrf"] == pytest.approx(metrics["test"]["chrf"])  # the run's own test split, again
    assert cli.main(["predict", trained_run, "一二"]) == 2
    assert f"Use `tfllm translate {shlex.quote(trained_run)} TEXT`" in capsys.readouterr().err
    assert cli.main(["generate", trained_run, "一二"]) == 2  # was an AttributeError traceback
    assert f"use `tfllm translate {shlex.quote(trained_run)} TEXT`" in capsys.readouterr().err
    # translate(run_dir) keeps its model per process, and loads again when the run's files change (a retrained
    # run kept its old model before).
    from tfllm import runs, translation

    translation.translate(trained_run, ["一二"])
    first = translation._LOADED[os.path.realpath(trained_run)][1]
    translation.translate(trained_run, ["一二"])
    assert translation._LOADED[os.path.realpath(trained_run)][1] is first
    metrics_file = os.path.join(trained_run, "metrics.json")
    os.utime(metrics_file, ns=(os.stat(metrics_file).st_atime_ns, os.stat(metrics_file).st_mtime_ns + 10**9))
    translation.translate(trained_run, ["一二"])
    second = translation._LOADED[os.path.realpath(trained_run)][1]
    assert second is not first
    # A Seq2SeqLM loaded through KerasHub translates as its run directory does (was a TypeError from os.path).
    assert translation.translate(model, ["一二", "三"]) == translation.translate(trained_run, ["一二", "三"])
    with pytest.raises(UserInputError, match="translate takes the path of a run directory, a Translator or a "
                       "KerasHub Seq2SeqLM, got NoneType"):
        translation.translate(None, ["一二"])
    # A file edited in a subfolder (tfllm/'s records, a tokenizer's assets/) counts too; TensorBoard's logs/ not.
    with open(os.path.join(trained_run, "logs", "notes.txt"), "w") as f:
        f.write("read by no loader")
    translation.translate(trained_run, ["一二"])
    assert translation._LOADED[os.path.realpath(trained_run)][1] is second
    recipe = os.path.join(trained_run, runs.RECIPE)
    os.utime(recipe, ns=(os.stat(recipe).st_atime_ns, os.stat(recipe).st_mtime_ns + 10**9))
    translation.translate(trained_run, ["一二"])
    assert translation._LOADED[os.path.realpath(trained_run)][1] is not second
    os.remove(os.path.join(trained_run, "logs", "notes.txt"))


@pytest.mark.slow
def test_evaluate_takes_the_sampler_and_beams_of_translate(trained_run, capsys):
    """`tfllm evaluate RUN --num-beams 4` was "unrecognized arguments", though the README compares greedy and beam."""
    capsys.readouterr()
    assert cli.main(["evaluate", trained_run, "--num-beams", "4"]) == 0
    assert "chrf" in json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", trained_run, "--sampler", "greedy", "--num-beams", "4"]) == 2


@pytest.mark.slow
def test_sampler_beam_without_num_beams_searches_with_the_default_beams_as_python_does(trained_run, capsys):
    """`tfllm translate RUN x --sampler beam` decoded with --num-beams' default of 1 (greedy) without a word,
    where `translate(run, srcs, sampler="beam")` searches with TRANSLATE_BEAMS."""
    from tfllm.translation import TRANSLATE_BEAMS, cached_translator, translate

    translator = cached_translator(trained_run)  # the command's own (cached per process)
    translator._compiled.clear()
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "一二", "三五", "--sampler", "beam"]) == 0
    by_command = capsys.readouterr().out.splitlines()
    assert {key[0] for key in translator._compiled if key[0] != "score"} == {("beam", TRANSLATE_BEAMS)}
    assert by_command == translate(trained_run, ["一二", "三五"], sampler="beam")
    with pytest.raises(SystemExit):
        cli.main(["translate", "--help"])
    assert f"default {TRANSLATE_BEAMS} with --sampler beam" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_translate_with_a_language_model_from_the_command_line(trained_run, tmp_path, capsys):
    corpus = tmp_path / "english.txt"
    corpus.write_text("one two three\n" * 40, encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "一二", "三", "--lm", str(corpus), "--lm-weight", "0.3"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "--lm" not in err
    # Text in the source's language (as zh_news for a Chinese-to-English run) is warned about: its tokens are
    # ones the decoder never outputs, and every translation came out empty without a word.
    (tmp_path / "chinese.txt").write_text("一二三四五\n" * 40, encoding="utf-8")
    assert cli.main(["translate", trained_run, "一二", "--lm", str(tmp_path / "chinese.txt")]) == 0
    assert "% of the tokens of --lm" in capsys.readouterr().err
    for weight in ("inf", "1e300"):  # printed an empty translation, exit status 0
        assert cli.main(["translate", trained_run, "一二", "--lm", str(corpus), "--lm-weight", weight]) == 2
        assert capsys.readouterr().err.startswith("tfllm: error: --lm-weight must be a number from 0 to 100")
    assert cli.main(["translate", trained_run, "一二", "--lm", str(tmp_path / "missing.txt")]) == 2
    assert "--lm" in (err := capsys.readouterr().err) and "does not exist" in err
    # The corpus's own option is named: these said "--data for text generation" and "Pass --text-column",
    # which translate does not have.
    (tmp_path / "columns.csv").write_text("english,french\none,un\n", encoding="utf-8")
    (tmp_path / "no_text").mkdir()
    for corpus, message in ((tmp_path / "no_text", "has no .txt files"),
                            (tmp_path / "columns.csv", "reads a column named 'text'")):
        assert cli.main(["translate", trained_run, "一二", "--lm", str(corpus)]) == 2
        err = capsys.readouterr().err
        assert "--lm" in err and message in err and "--data" not in err and "--text-column" not in err, err


@pytest.mark.slow
def test_lm_counts_every_line_of_a_txt_as_of_a_csv_of_the_same_lines(trained_run, tmp_path):
    """--lm read a .txt through the corpus reader's 90/10 split, cut at a character: the line it fell in became
    two made-up words, so the same lines as a .csv (split between rows) gave another n-gram model."""
    from tfllm.training.seq2seq import run_decoding_aids
    from tfllm.translation import load_translator

    lines = [" ".join(WORDS[c] for c in source) for source, _ in make_pairs(30, seed=4)]
    text = "".join(line + "\n" for line in lines)
    assert "\n" not in text[int(len(text) * 0.9) - 1: int(len(text) * 0.9) + 1]  # the cut falls inside a line
    (tmp_path / "lm.txt").write_text(text, encoding="utf-8")
    write_csv(tmp_path / "lm.csv", [[line] for line in lines], header=("text",))
    translator = load_translator(trained_run)
    by_txt, _ = run_decoding_aids(translator, trained_run, str(tmp_path / "lm.txt"))
    by_csv, _ = run_decoding_aids(translator, trained_run, str(tmp_path / "lm.csv"))
    ids = np.arange(translator.output_size)
    contexts = np.stack(np.meshgrid(ids, ids), -1).reshape(-1, 2)
    np.testing.assert_array_equal(by_txt.log_probs(contexts), by_csv.log_probs(contexts))


@pytest.mark.slow
def test_scores_do_not_depend_on_the_batch_they_are_computed_in():
    model, _ = tiny_model()
    translator = Translator(model)
    sources, targets = ["一二", "三", "四五六"], ["one two", "three", "four five six"]
    total, count = translator.score(sources, targets)
    assert list(count) == [len(t) + 1 for t in targets]  # every character of the target, and the end token
    assert np.all(total < 0)
    alone = [translator.score([s], [t])[0][0] for s, t in zip(sources, targets)]
    np.testing.assert_allclose(total, alone, rtol=1e-5)
    total, count = translator.score(["一二"] * 3, targets)
    assert translator.rerank(["一二"], [targets]) == [targets[int(np.argmax(total / count))]]
    # Lists that do not pair up are refused (zip dropped the unpaired ones before).
    with pytest.raises(UserInputError, match="3 sources, 1 candidate lists"):
        translator.rerank(["一二"] * 3, [targets])
    with pytest.raises(UserInputError, match="Source 1 has 3 candidates but 2 priors"):
        translator.rerank(["一二"], [targets], priors=[[0.0, 1.0]])


@pytest.mark.slow
def test_translate_a_file_a_pipe_or_a_csv_column(trained_run, tmp_path, capsys, monkeypatch):
    import io
    import shutil

    import tfllm.translation

    # A copy no earlier test has loaded: each command in this process must load it once, not once a command.
    trained_run = str(shutil.copytree(trained_run, tmp_path / "run"))
    loads = []
    load = tfllm.translation.load_translator
    monkeypatch.setattr(tfllm.translation, "load_translator", lambda run_dir: loads.append(run_dir) or load(run_dir))
    sources = ["一二", "三", "四五六"]
    assert cli.main(["translate", trained_run, *sources]) == 0
    expected = capsys.readouterr().out
    assert len(expected.splitlines()) == 3
    # A blank line is no source, and is answered by a blank line: each output line answers its input line.
    (tmp_path / "sources.txt").write_text("一二\n\n三\n四五六\n")
    write_csv(tmp_path / "pairs.csv", [(s, "?") for s in sources])  # the run's own columns: its source, zh
    write_csv(tmp_path / "other.csv", [(s, "?") for s in sources], header=("chinese", "english"))
    # A .txt of tab-separated pairs, as training reads one (Tatoeba's): the sources, not the whole lines.
    (tmp_path / "pairs.txt").write_text("一二\tone two\tCC-BY 2.0\n三\tthree\n\n四五六\tfour five six\n")
    (tmp_path / "reversed.txt").write_text("one two\t一二\nthree\t三\nfour five six\t四五六\n")
    (tmp_path / "holes.txt").write_text("一二\tone two\n\tthree\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "gap.csv").write_text("zh,x\n一二,1\n,\n三,2\n")  # 2 lines answered 3 rows, the gap's left out
    monkeypatch.setattr("sys.stdin", io.StringIO("三\n四五六\n"))
    for argv in (["--file", tmp_path / "sources.txt"], ["一二", "--file", "-"], ["--file", tmp_path / "pairs.csv"],
                 ["--file", tmp_path / "other.csv", "--text-column", "chinese"], ["--file", tmp_path / "pairs.txt"],
                 ["--file", tmp_path / "reversed.txt", "--text-column", "2"]):
        assert cli.main(["translate", trained_run, *map(str, argv)]) == 0, capsys.readouterr().err
        blank = argv[1] == tmp_path / "sources.txt"
        assert capsys.readouterr().out == (expected.replace("\n", "\n\n", 1) if blank else expected), argv
    for argv, message in (
            ([str(tmp_path / "sources.txt")], "is a file: to translate its lines (or a CSV/JSONL's 'zh' column) pass --file"),
            ([], "Pass the texts to translate, e.g. tfllm translate"),
            (["--file", str(tmp_path / "other.csv")], "has no text column 'zh'; its columns are ['chinese', 'english']"),
            (["三", "--text-column", "zh"], "--text-column names the column of a --file"),
            (["--file", str(tmp_path / "holes.txt")], "tab-separated pairs, and its pair 2 has an empty field 1"),
            (["--file", str(tmp_path / "blank.txt")], "is empty. Point --file at a file with one text per line."),
            (["--file", str(tmp_path / "gap.csv")], "data row 2 has an empty 'zh'; fill it in or remove the row, so "
             "that each output line answers one row."),
            (["--file", str(tmp_path / "pairs.txt"), "--text-column", "4"], "its pair 1 has no field 4 (it has 3)"),
            (["--file", str(tmp_path / "pairs.txt"), "--text-column", "zh"], "whose fields are numbered: pass"),
            # A plain .txt's lines are its sources: the column was ignored without a word (predict refused it).
            (["--file", str(tmp_path / "sources.txt"), "--text-column", "nosuch"],
             f"--text-column 'nosuch' names a column of a CSV/JSONL file, and {str(tmp_path / 'sources.txt')!r} "
             "is text, not a CSV/JSONL file (each line read as one text); leave --text-column out."),
            (["--file", "-", "--text-column", "zh"], "--file - reads standard input one text a line")):
        assert cli.main(["translate", trained_run, *argv]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.splitlines()) == 1 and not captured.out, captured.err
    assert loads == [trained_run]


@pytest.mark.slow
def test_a_run_trained_on_a_txt_of_pairs_with_verbose_0_prints_nothing_and_translates_a_csv_column(tmp_path, capfd):
    """Two behaviours of one training (each a training of its own before):
    - `train_seq2seq(..., verbose=0)` silenced Keras' progress bars but still printed its "Data: ..." line: it
      prints nothing now.
    - `tfllm translate RUN --file pairs.csv` of a run trained on a .txt of pairs: "data row 1 has no text column
      'text'", a column the run never had; `translate --help` says the default is the run's source column."""
    from tfllm.config import TrainConfig
    from tfllm.training.seq2seq import train_seq2seq

    pairs = make_pairs(60)
    (tmp_path / "pairs.txt").write_text("".join(f"{zh}\t{en}\n" for zh, en in pairs))
    write_csv(tmp_path / "pairs.csv", [(en, zh) for zh, en in pairs[:3]], header=("en", "zh"))
    run_dir = str(tmp_path / "run")
    capfd.readouterr()
    train_seq2seq(TrainConfig(task="translate", data=str(tmp_path / "pairs.txt"), preset="tiny", epochs=1,
                              run_dir=run_dir), verbose=0)
    assert capfd.readouterr().out == ""
    assert cli.main(["translate", run_dir, "--file", str(tmp_path / "pairs.csv")]) == 2
    assert capfd.readouterr().err == (f"tfllm: error: {str(tmp_path / 'pairs.csv')!r} has columns, and this run was "
                                      "trained on a .txt of pairs, so its source has no column name; pass "
                                      "--text-column (one of ['en', 'zh']).\n")
    assert cli.main(["translate", run_dir, "--file", str(tmp_path / "pairs.csv"), "--text-column", "zh"]) == 0
    from_csv = capfd.readouterr().out
    assert cli.main(["translate", run_dir, *(zh for zh, _ in pairs[:3])]) == 0
    assert capfd.readouterr().out == from_csv


@pytest.mark.slow
def test_translate_file_warns_once_with_the_totals_of_every_chunk(trained_run, tmp_path, capsys, monkeypatch):
    """`translate --file` of more lines than a chunk warned once per chunk, with that chunk's counts ("46
    source(s) are longer...", then "9 source(s)..."); tfllm.translate warns once, with the total."""
    import tfllm

    long = "一二三四五六七八一二三四"  # 12 tokens, the model reads 10
    lines = [long, "一", long + "九", "九", "", long]  # 九: never seen in training
    (tmp_path / "sources.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(cli, "TRANSLATE_CHUNK", 2)  # three chunks
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "--file", str(tmp_path / "sources.txt")]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(lines)
    warned = [line for line in err.splitlines() if line.startswith("tfllm: warning: ")]
    assert len(warned) == 2, err
    assert warned[0].startswith(f"tfllm: warning: 3 source(s) are longer than the model's 10 tokens (first: '{long}', "
                                "12 tokens)"), warned
    assert warned[1].startswith("tfllm: warning: 2 source(s) hold text the model's vocabulary has no token for (never "
                                f"seen in training, or left out of its vocabulary_size; first: '{long}九')"), warned
    with pytest.warns(TfllmWarning) as caught:  # the Python API's, for the same sources
        tfllm.translate(trained_run, [line for line in lines if line], max_new_tokens=2)
    assert [f"tfllm: warning: {w.message}" for w in caught] == warned


@pytest.mark.slow
def test_a_translation_memory_gives_candidates_and_the_model_chooses(trained_run, tmp_path, capsys):
    from tfllm.memory import TranslationMemory
    from tfllm.translation import load_translator

    translator = load_translator(trained_run)
    # The trained model prefers a right translation to a wrong one, by its likelihood per token.
    assert translator.rerank(["三二", "一"], [["xq zz", "three two"], ["one", "seven eight"]]) == ["three two", "one"]
    # A match is returned; equal matches are told apart by the model; a source matching nothing is decoded.
    memory = TranslationMemory(["一二三", "三", "三"], ["one two three", "xq zz", "three"])
    plain = translator.translate(["五"], warn=False)
    assert translator.translate(["一二三", "三", "五"], warn=False, memory=memory) == ["one two three", "three", *plain]
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "一二", "三", "--memory", "train"]) == 0
    by_command = capsys.readouterr().out.splitlines()
    assert len(by_command) == 2
    # Python's translate(run_dir) takes the command's names for the aids, as tfllm.evaluate does (it refused
    # memory="train": "memory must be a tfllm.memory.TranslationMemory").
    from tfllm.translation import translate

    assert translate(trained_run, ["一二", "三"], memory="train") == by_command
    pairs = write_csv(tmp_path / "memory.csv", make_pairs(40, seed=3))
    assert cli.main(["evaluate", trained_run, "--memory", pairs]) == 0
    own = json.load(open(os.path.join(trained_run, "metrics.json")))["test"]["num_examples"]
    assert json.loads(capsys.readouterr().out)["num_examples"] == own
    assert cli.main(["evaluate", trained_run, "--data", pairs]) == 0  # another file: all of it, not a seeded tenth
    assert json.loads(capsys.readouterr().out)["num_examples"] == sources(make_pairs(40, seed=3))
    # A glossary of one pair, in columns of its own names, is a memory too.
    glossary = write_csv(tmp_path / "glossary.csv", [("一二", "twelve")], header=("term", "meaning"))
    assert cli.main(["translate", trained_run, "一二", "--memory", glossary, "--source-column", "term",
                     "--target-column", "meaning"]) == 0
    assert capsys.readouterr().out.splitlines() == ["twelve"]
    assert cli.main(["translate", trained_run, "一二", "--memory", glossary]) == 2
    assert "its columns are ['term', 'meaning']. Pass --source-column with one of them." in capsys.readouterr().err
    # Evaluate's --source-column names --data's column: "Pass --source-column" did not work there, and without
    # --data the flag was ignored without a word.
    assert cli.main(["evaluate", trained_run, "--memory", glossary]) == 2
    assert capsys.readouterr().err.endswith("its columns are ['term', 'meaning']. Name its columns 'zh' and 'en', "
                                            "as the run's (`tfllm translate --memory` alone reads other columns: "
                                            "--source-column, --target-column).\n")
    for flags, said in ((["--source-column", "term"], "--source-column names a column of"),
                        (["--source-column", "zh", "--target-column", "en"],
                         "--source-column and --target-column name the columns of")):
        assert cli.main(["evaluate", trained_run, "--memory", glossary, *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tfllm: error: {said} another --data file;") and "add --data FILE" in err, err
    assert cli.main(["translate", trained_run, "一二", "--memory", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    # An empty memory file named --data, which translate does not have ("Point --data at a file with rows").
    for name in ("empty.txt", "empty.csv"):
        (tmp_path / name).write_text("")
        for command in (["translate", trained_run, "一二"], ["evaluate", trained_run]):
            assert cli.main([*command, "--memory", str(tmp_path / name)]) == 2
            assert capsys.readouterr().err == (f"tfllm: error: --memory {str(tmp_path / name)!r} is empty. Point "
                                               "--memory at a file with rows of pairs.\n")
    with pytest.raises(UserInputError, match=r"^memory='.*empty.txt' is empty. Point memory at a file with rows"):
        translate(trained_run, ["一二"], memory=tmp_path / "empty.txt")
    capsys.readouterr()
    # A source found as it is gets its own target, not a longer source's that holds it (一二 scored as 一二三,
    # and the model chose between them).
    glossary = write_csv(tmp_path / "exact.csv", [("一二三", "one two three"), ("一二", "twelve"), ("八", "eight")])
    assert cli.main(["translate", trained_run, "一二", "一二三", "--memory", glossary]) == 0
    assert capsys.readouterr().out.splitlines() == ["twelve", "one two three"]
    # A memory target with tokens the decoder never outputs (the sources' characters: a cedict gloss such as
    # "CL:个[ge4]") is scored as unknown there, not a traceback ("indices[0,4] = 97 is not in [0, 97)").
    assert translator.output_size < translator.tokenizer.vocabulary_size()
    total, count = translator.score(["三", "三"], ["three 三", "three"])
    assert np.isfinite(total).all() and count[0] > count[1]
    glossary = write_csv(tmp_path / "cjk.csv", [("三", "three"), ("三", "three 三"), ("一二三", "一二三")])
    assert cli.main(["translate", trained_run, "三", "一二三", "--memory", glossary]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "一二三"


@pytest.mark.slow
def test_only_sources_the_model_translates_are_warned_of_unknown_text(trained_run, tmp_path, capsys):
    """`translate 你好 电脑 --memory PAIRS` printed the memory's targets, then warned "2 source(s) hold text the
    model's vocabulary has no token for ... its translation may be wrong" of text the model never read."""
    from tfllm.memory import TranslationMemory
    from tfllm.translation import load_translator

    translator = load_translator(trained_run)
    memory = TranslationMemory(["九"], ["nine"])  # 九: never seen in training
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        assert translator.translate(["九"], memory=memory, max_new_tokens=2) == ["nine"]
    with pytest.warns(TfllmWarning) as caught:  # a source the model decodes is warned of, as without a memory
        translator.translate(["九", "八"], memory=TranslationMemory(["一"], ["one"]), max_new_tokens=2)
    assert [str(w.message).split(";")[0] for w in caught] == [
        "1 source(s) hold text the model's vocabulary has no token for (never seen in training, or left out of its "
        "vocabulary_size"]
    glossary = write_csv(tmp_path / "nine.csv", [("九", "nine")])
    capsys.readouterr()
    assert cli.main(["translate", trained_run, "九", "--memory", glossary]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["nine"] and "warning" not in err, err
    glossary = write_csv(tmp_path / "one.csv", [("一", "one")])
    assert cli.main(["translate", trained_run, "九", "一", "--memory", glossary]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "one"
    assert "tfllm: warning: 1 source(s) hold text the model's vocabulary has no token for" in err and "first: '九'" in err


@pytest.mark.slow
def test_evaluate_another_file_scores_exactly_the_split_it_names(trained_run, tmp_path, capsys):
    # A file of train and test rows only: its val split was carved out of its train rows and scored,
    # and --split without --split-column scored the whole file under the split's name.
    pairs = make_pairs(40, seed=5)
    parts = ["test" if i % 4 == 0 else "train" for i in range(len(pairs))]
    data = write_csv(tmp_path / "parts.csv", [(s, t, p) for (s, t), p in zip(pairs, parts)],
                     header=("zh", "en", "part"))
    assert cli.main(["evaluate", trained_run, "--data", data, "--split-column", "part", "--split", "test"]) == 0
    named = {part: [pair for pair, p in zip(pairs, parts) if p == part] for part in ("train", "test")}
    assert json.loads(capsys.readouterr().out)["num_examples"] == sources(named["test"])
    assert cli.main(["evaluate", trained_run, "--data", data, "--split-column", "part", "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == sources(named["train"])
    assert cli.main(["evaluate", trained_run, "--data", data, "--split-column", "part", "--split", "val"]) == 2
    captured = capsys.readouterr()
    assert not captured.out and "no rows with split 'val'" in captured.err
    assert cli.main(["evaluate", trained_run, "--data", data, "--split", "val"]) == 2
    captured = capsys.readouterr()
    assert not captured.out and "--split-column" in captured.err and len(captured.err.splitlines()) == 1
    # The run's own file is scored as the run split it: another --split-column was ignored without a word.
    from tfllm import runs

    own = runs.read_config(trained_run)["data"]
    assert cli.main(["evaluate", trained_run, "--data", own, "--split-column", "zh"]) == 2
    captured = capsys.readouterr()
    assert not captured.out and "the run's own data" in captured.err and len(captured.err.splitlines()) == 1


@pytest.mark.slow
def test_what_reads_a_runs_data_says_so_when_the_file_is_gone(trained_run, pairs_csv, tmp_path, capsys):
    # The message of a missing --data ('Check the path, or use a bundled set: cedict') named no fix here.
    moved = tmp_path / "moved.csv"
    os.rename(pairs_csv, moved)
    try:
        for argv, fix in ((["translate", trained_run, "一二", "--memory", "train"], "--memory PAIRS"),
                          (["evaluate", trained_run], "--data FILE"),
                          (["translate", trained_run, "一二", "--lm", str(moved)], "put the file back")):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert pairs_csv in err and fix in err and "bundled set" not in err and len(err.splitlines()) == 1
        capsys.readouterr()
        assert cli.main(["translate", trained_run, "一二"]) == 0  # plain decoding needs only the run
    finally:
        os.rename(moved, pairs_csv)


@pytest.mark.slow
def test_evaluate_refuses_a_memory_that_is_the_data_it_scores(trained_run, pairs_csv, tmp_path, capsys):
    # The run's own file as --memory holds the test pairs: evaluate scored its lookups of the answers (chrF 100).
    other = write_csv(tmp_path / "other.csv", make_pairs(40, seed=6))
    for argv in (["evaluate", trained_run, "--memory", pairs_csv],
                 ["evaluate", trained_run, "--memory", pairs_csv, "--split", "val"],
                 ["evaluate", trained_run, "--data", other, "--memory", other],
                 ["evaluate", trained_run, "--memory", "train", "--split", "train"]):
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        assert not captured.out and "--memory train" in captured.err and len(captured.err.splitlines()) == 1
    assert cli.main(["evaluate", trained_run, "--data", other, "--memory", pairs_csv]) == 0  # another memory
    assert json.loads(capsys.readouterr().out)["num_examples"] == sources(make_pairs(40, seed=6))


@pytest.mark.slow
def test_evaluate_reads_a_file_in_a_bundled_runs_columns_as_its_data_each_gloss_a_reference(trained_run, tmp_path,
                                                                                          capsys):
    """A cedict run's `evaluate --data FILE` scored the '/'-joined glosses as one reference (exact match 0 for
    outputs that were each one of them), though `--memory FILE` for the same run split them."""
    import shutil

    import sacrebleu

    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.translation import translate

    run_dir = str(tmp_path / "cedict run")  # the trained run, recorded as trained on cedict (its columns: None)
    shutil.copytree(trained_run, run_dir)
    TrainConfig(task="translate", data="cedict").to_json(runs.path(run_dir, runs.RUN_CONFIG))
    runs.write_json(runs.path(run_dir, runs.DATA), {"data": "cedict", "path": None})  # as a cedict run records
    given = ["一二", "三", "五六"]
    outputs = translate(run_dir, given)
    references = [[output, "zz"] for output in outputs]  # each output is the first of two glosses
    rows = [(s, "/".join(refs), "test") for s, refs in zip(given, references)]
    data = write_csv(tmp_path / "glosses.csv", rows, header=("simplified", "english", "part"))
    chrf = sacrebleu.corpus_chrf(outputs, [list(r) for r in zip(*references)]).score
    for extra in ([], ["--split-column", "part"]):
        capsys.readouterr()
        assert cli.main(["evaluate", run_dir, "--data", data, *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["exact_match"] == 1.0 and report["chrf"] == pytest.approx(chrf, abs=0.01), (extra, report)


def test_a_memory_file_for_a_run_on_bundled_pairs_is_read_in_the_bundled_columns(tmp_path):
    """A cedict run records no column names (the bundled set has its own); its memory files use cedict's."""
    from tfllm import runs
    from tfllm.config import TrainConfig
    from tfllm.training.seq2seq import run_memory

    run_dir = str(tmp_path / "run")
    os.makedirs(runs.path(run_dir, runs.RUN_CONFIG).rsplit(os.sep, 1)[0])
    TrainConfig(task="translate", data="cedict").to_json(runs.path(run_dir, runs.RUN_CONFIG))
    runs.write_json(runs.path(run_dir, runs.RECIPE), {})
    pairs = write_csv(tmp_path / "glossary.csv", [("你好", "hello/hi"), ("谢谢", "thanks")], header=("simplified", "english"))
    assert run_memory(run_dir, pairs).lookup(["谢谢"], k=1) == [["thanks"]]
    # cedict's glosses are '/'-joined references: the memory answers with the first, as training targets it
    # (it answered "hello/hi").
    assert run_memory(run_dir, pairs).lookup(["你好"], k=1) == [["hello"]]
    with pytest.raises(UserInputError, match="does not exist"):
        run_memory(run_dir, str(tmp_path / "missing.csv"))


def test_an_input_method_scores_each_syllables_characters_with_the_ngram_model():
    from tfllm.input_method import InputMethod

    # "shi2" is 十 or 石: the pairs' character sequences tell which, syllable by syllable.
    pairs = [("shi2 tou5", "石头")] * 3 + [("shi2 er4", "十二")] * 3 + [("er4", "二"), ("tou5", "头")]
    ids = {c: i for i, c in enumerate("石头十二", start=3)}
    lm = NgramLM.fit([[ids[c] for c in t] for _, t in pairs], vocabulary_size=7, start_id=1, end_id=2)
    method = InputMethod([s for s, _ in pairs], [t for _, t in pairs], lm, ids.get)
    found = method.candidates(["Shi2 tou5", "shi2 er4", "shi2 jiu3"], k=4)
    assert [text for text, _ in found[0]] == ["石头", "十头"]  # both readings, best first; capitals ignored
    assert found[0][0][1] > found[0][1][1] and found[1][0][0] == "十二"
    assert found[2] == []  # a syllable never seen: no candidates (the model decodes it)
    # Running text in which "十头" occurs whole (and "石头" does not) puts it first.
    counted = InputMethod([s for s, _ in pairs], [t for _, t in pairs], lm, ids.get, corpus=["一十头牛"] + ["十头"] * 30)
    assert [text for text, _ in counted.candidates(["shi2 tou5"], k=2)[0]] == ["十头", "石头"]
    texts = ["十头", "头", "牛十", "石头", "十头牛", "一十头牛" * 3]
    np.testing.assert_array_equal(counted.counts(texts), [31, 31, 0, 0, 1, 0])  # the long one: counted directly
    with pytest.raises(UserInputError, match="line up one to one"):
        InputMethod(["shi2 tou5", "er4"], ["石", "二十"], lm, ids.get)


def test_sources_the_input_method_cannot_read_are_warned_about_with_the_form_it_reads():
    """"diàn nǎo" (tone marks) and "zhongguo" (run together) printed empty lines with exit status 0, no word."""
    from tfllm.input_method import InputMethod
    from tfllm.translation import SourceNotes

    pairs = [("shi2 tou5", "石头"), ("er4", "二"), ("shi2 er4", "十二")]
    ids = {c: i for i, c in enumerate("石头十二", start=3)}
    lm = NgramLM.fit([[ids[c] for c in t] for _, t in pairs], vocabulary_size=7, start_id=1, end_id=2)
    method = InputMethod([s for s, _ in pairs], [t for _, t in pairs], lm, ids.get)
    assert method.example == "shi2 tou5"  # a training source of more than one syllable
    assert [method.unread(s) for s in ("shí tóu", "shitou", "shi2 tou5")] == ["shí", "shitou", None]
    notes = SourceNotes()
    notes.add_unread(method, ["shí tóu", "shitou"], empty=1)
    with pytest.warns(TfllmWarning) as caught:
        notes.warn()
    assert len(caught) == 1
    # Spelled for Python here (`input_method`), for the command as --input-method.
    assert str(caught[0].message).split(" ", 1)[1] == (
        "has no candidates for 2 source(s) (first: 'shí tóu', whose 'shí' is no syllable of the "
        "training sources): it reads syllables with tone numbers separated by spaces, as the training sources "
        "write them, e.g. 'shi2 tou5'; those sources were translated without it (by the model, and lm where given), "
        "and 1 came out empty.")


@pytest.fixture(scope="module")
def aligned_run(pairs_csv, tmp_path_factory):
    """A tiny run the other way, English words -> numerals: one source word per target character."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "aligned")
    assert cli.main(["train", "--task", "translate", "--data", pairs_csv, "--source-column", "en",
                     "--target-column", "zh", "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir]) == 0
    return run_dir


@pytest.mark.slow
def test_the_model_chooses_among_the_input_methods_candidates(aligned_run, trained_run, capsys):
    from tfllm.input_method import InputMethod
    from tfllm.training.seq2seq import run_decoding_aids
    from tfllm.translation import load_translator

    translator = load_translator(aligned_run)
    ids = {token: i for i, token in enumerate(translator.tokenizer.get_vocabulary())}
    lm, _ = run_decoding_aids(translator, aligned_run, input_method=True)
    # "one" reads as 一 mostly and as 二 once: two candidates, best first.
    pairs = [("one", "一")] * 3 + [("one", "二"), ("two", "二"), ("three", "三")]
    method = InputMethod([s for s, _ in pairs], [t for _, t in pairs], lm, ids.get)
    (first, prior), (second, other) = method.candidates(["one"])[0]
    assert {first, second} == {"一", "二"} and prior > other
    likelihood = dict(zip((first, second), translator.score(["one"] * 2, [first, second])[0]))
    model_choice = max(likelihood, key=likelihood.get)
    assert translator.translate(["one"], input_method=method, input_method_weight=0.0) == [first]
    assert translator.translate(["one"], input_method=method, input_method_weight=1e4) == [model_choice]
    plain = translator.translate(["four"], warn=False)  # no candidates: decoded by the model
    assert translator.translate(["four"], warn=False, input_method=method) == plain
    # From the command line, with the run's own pairs: every word has one character, so every test pair is right,
    # which a model trained for one epoch alone is not.
    assert cli.main(["translate", aligned_run, "three one two", "--input-method"]) == 0
    assert capsys.readouterr().out.splitlines() == ["三一二"]
    # Words run together have no candidates: translated by the model, with one warning naming the form it reads.
    assert cli.main(["translate", aligned_run, "threeone", "one two", "--input-method"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == "一二" and err.count("\n") == 1
    assert err.startswith("tfllm: warning: --input-method has no candidates for 1 source(s) (first: 'threeone'"), err
    assert "separated by spaces, as the training sources write them, e.g. '" in err
    assert cli.main(["evaluate", aligned_run, "--input-method"]) == 0
    assert json.loads(capsys.readouterr().out)["exact_match"] == 1.0
    assert json.load(open(os.path.join(aligned_run, "metrics.json")))["test"]["exact_match"] < 1.0
    # A run whose sources do not line up with its targets' characters: one clear line, exit status 2.
    assert cli.main(["translate", trained_run, "一二", "--input-method"]) == 2
    assert "line up one to one" in capsys.readouterr().err


@pytest.mark.slow
def test_the_input_methods_refusal_comes_before_the_lms_warnings(trained_run, capsys):
    """The n-gram model was built first: `--input-method --lm zh_news` on a run whose pairs do not line up (this
    one translates to English, which zh_news is not) warned "...% of the tokens of --lm zh_news are ones this model
    never outputs", then refused the command. The refusal is now the one line."""
    assert cli.main(["translate", trained_run, "一二", "--input-method", "--lm", "zh_news"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfllm: error: An input method needs sources whose words line up") and err.count("\n") == 1, err


@pytest.mark.slow
def test_fine_tuning_a_run_on_targets_its_decoder_does_not_score_with_longer_sequence_lengths(trained_run, tmp_path,
                                                                                              capsys):
    """Two behaviours of one fine-tuning of the run (each a fine-tuning of its own before):
    - targets with tokens the run's decoder does not score (they quote source characters: "一" is a source-only id
      in the trained run's vocabulary) train, and the decoder keeps the run's output vocabulary;
    - a recipe whose lengths exceed the run's (the default recipe's over a `--preset tiny` run) was a TensorFlow
      traceback in fit (the position embedding sliced past its table); they are capped, as classifiers' and
      generators' are."""
    base = keras_hub.models.Seq2SeqLM.from_preset(trained_run).backbone
    rows = [(s, f"{t} ({s})") for s, t in make_pairs(60, seed=3)]
    data = write_csv(tmp_path / "quoted.csv", rows)
    run_dir = str(tmp_path / "tuned")
    assert cli.main(["train", "--task", "translate", "--data", data, "--source-column", "zh", "--target-column", "en",
                     "--from-preset", trained_run, "--preset", "tiny", "--epochs", "1", "--run-dir", run_dir,
                     "--set", f"encoder_sequence_length={base.encoder_sequence_length + 8}",
                     "--set", f"decoder_sequence_length={base.decoder_sequence_length + 8}"]) == 0
    assert json.load(open(os.path.join(run_dir, "metrics.json")))["test"]["num_examples"] > 0
    tuned = keras_hub.models.Seq2SeqLM.from_preset(run_dir).backbone
    assert tuned.target_vocabulary_size == base.target_vocabulary_size < base.vocabulary_size
    preprocessor = keras_hub.models.Seq2SeqLMPreprocessor.from_preset(run_dir)
    assert preprocessor.encoder_sequence_length == base.encoder_sequence_length
    assert preprocessor.decoder_sequence_length == base.decoder_sequence_length
    capsys.readouterr()
    assert cli.main(["translate", run_dir, "一二三"]) == 0


@pytest.mark.slow
def test_fine_tuning_a_run_on_text_its_vocabulary_lacks_warns_of_the_unknown_share(trained_run, tmp_path, capsys,
                                                                                    monkeypatch):
    """English titles over a run of Chinese numerals -> English words trained their targets as [UNK] without a
    word (every metric 0, then empty translations); as classification and generation, training warns."""
    from tfllm.training import seq2seq

    rows = [(f"{s} QZX", f"{t} QZ") for s, t in make_pairs(40, seed=6)]
    data = write_csv(tmp_path / "new.csv", rows)
    monkeypatch.setattr(seq2seq, "compile_model", lambda *a, **k: (_ for _ in ()).throw(UserInputError("stopped")))
    assert cli.main(["train", "--task", "translate", "--data", data, "--source-column", "zh", "--target-column", "en",
                     "--from-preset", trained_run, "--preset", "tiny", "--run-dir", str(tmp_path / "tuned")]) == 2
    err = capsys.readouterr().err
    assert "of the tokens of the training sources are unknown to the tokenizer of" in err
    assert "of the tokens of the training targets are unknown to the tokenizer of" in err


# The fresh process of test_export_reloads_in_a_fresh_process_with_the_same_strings_and_serves: it first reloads
# the SavedModel with TensorFlow and tensorflow_text alone (no tfllm imported) and prints, on a line of its own after
# "RELOADED ", the translations of the padded sources and the messages of the batches with a row at fault; then, given
# server arguments after its first, it serves the export as `python -m tfllm.serving.server ARGS` does. One process
# starts TensorFlow for both checks.
RELOAD_THEN_SERVE = """
import json, sys
import tensorflow as tf, tensorflow_text

path, padded = json.loads(sys.argv.pop(1))
f = tf.saved_model.load(path).signatures["serving_default"]
out = f(source=tf.constant(padded), max_new_tokens=tf.constant([15] * len(padded)))
errors = []
for bad, steps in (([""], [5]), (["一", " \u3000\u00a0", "二", ""], [5] * 4), (["一", "二"], [5, 0])):
    try:
        f(source=tf.constant(bad), max_new_tokens=tf.constant(steps))
    except tf.errors.InvalidArgumentError as e:
        errors.append(e.message)
print("RELOADED", json.dumps([[t.decode() for t in out["translation"].numpy()], errors]), flush=True)
assert "tfllm" not in sys.modules
if len(sys.argv) > 1:
    from tfllm.serving.server import main

    sys.exit(main())
"""


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_with_the_same_strings_and_serves(trained_run, tmp_path):
    from tfllm.export.seq2seq import export_seq2seq
    from tfllm.translation import translate

    sources = ["一二三", "四五", "六", "七八一"]
    savedmodels = tmp_path / "savedmodels"
    path = export_seq2seq(trained_run, "tr", base_dir=str(savedmodels))
    expected = translate(trained_run, sources, warn=False)
    assert all(t == t.strip() for t in expected)
    # Spaces around a source (pasted text) are stripped as training and `translate` strip them: every one
    # str.strip() takes, not only ASCII ones (the export read a full-width space around "电脑" as part of it).
    padded = ["\u3000一二三\u3000", "\u00a0四五 ", "六\u2028\n", "\u2003七八一\u205f\x1c"]
    assert translate(trained_run, padded, warn=False) == expected
    (tmp_path / "reload_then_serve.py").write_text(RELOAD_THEN_SERVE, encoding="utf-8")
    reload_args = [json.dumps([path, padded])]
    try:
        import starlette  # noqa: F401  (the server's; without it, the fresh process only reloads)
    except ImportError:
        result = subprocess.run([sys.executable, "-m", "reload_then_serve", *reload_args], capture_output=True,
                                text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode == 0, result.stderr
        log, answer = result.stdout, None
    else:
        from tfllm.serving import RestClient

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with RestClient("127.0.0.1", port, timeout=60) as client:
            with serving_process([*reload_args, savedmodels, "--port", port, "--grpc-port", "0"],
                                 lambda: client.status("tr"), tmp_path / "server.log", cwd=tmp_path, timeout=120,
                                 module="reload_then_serve"):
                answer = client.predict("tr", {"source": sources, "max_new_tokens": [15] * len(sources)})
        log = (tmp_path / "server.log").read_text(encoding="utf-8")
    reloaded = [line for line in log.splitlines() if line.startswith("RELOADED ")]
    assert len(reloaded) == 1, log[-3000:]
    translations, errors = json.loads(reloaded[0].removeprefix("RELOADED "))
    assert translations == expected
    # A batch with empty sources names them (it was refused whole with "source must not be empty"), as a
    # served request's error says it (tfllm.serving.codec).
    from tfllm.serving.codec import clean_tf_message

    assert [clean_tf_message(e) for e in errors] == ["source must not be empty in instance 0",
                                                     "source must not be empty in instances 1, 3",
                                                     "max_new_tokens must be >= 1 in instance 1"], errors
    assert any(expected)
    if answer is None:
        pytest.skip("serving needs starlette (tfllm[serving]); the reload was checked")
    assert answer == expected  # one output: TF Serving's columnar answer is the bare batch


@pytest.mark.slow
def test_wordpiece_outputs_join_ideographs_in_and_out_of_the_graph():
    from tfllm.models.seq2seq_lm import output_text

    pairs = make_pairs(100)
    tokenizer = train_tokenizer([t for _, t in pairs] + [s for s, _ in pairs], "wordpiece", 60, lowercase=False)
    ids = [tokenizer.start_token_id] + [tokenizer.token_to_id(t) for t in ("一", "二", "three", "三")] + [
        tokenizer.end_token_id, tokenizer.token_to_id("four")]
    expected = ["一二 three 三"]  # ideographs joined, words spaced, nothing after the end token
    assert [t.decode() for t in output_text(tokenizer, tf.constant([ids])).numpy()] == expected
    in_graph = tf.function(lambda x: output_text(tokenizer, x))(tf.constant([ids]))
    assert [t.decode() for t in in_graph.numpy()] == expected


def test_clean_text_follows_the_causal_lms_rule_for_cjk_punctuation():
    """Translation and generation agree: CJK and full-width punctuation joins too (`tfllm.config.join_cjk`)."""
    from tfllm.config import join_cjk
    from tfllm.models.seq2seq_lm import clean_text

    texts = ["中 ， 文 。", " 中 hello 文 ", "「 你 好 」 ！", "hello world"]
    expected = ["中，文。", "中 hello 文", "「你好」！", "hello world"]
    assert [t.decode() for t in clean_text(tf.constant(texts)).numpy()] == expected
    assert [join_cjk(t).strip() for t in texts] == expected


def test_the_export_strips_a_source_as_str_strip_does():
    """Every character str.isspace() calls a space, and no other (tf.strings.strip takes only ASCII ones)."""
    from tfllm.export.seq2seq import strip_spaces

    spaces = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).isspace()]
    texts = [f"{c}电 脑{c}" for c in spaces] + ["".join(spaces), "\u200b电脑\ufeff", "a b\n", "\n\na\nb\n"]
    assert [t.decode() for t in strip_spaces(tf.constant(texts)).numpy()] == [t.strip() for t in texts]


@pytest.fixture(scope="module")
def trained_run_tflite(trained_run, tmp_path_factory):
    """`tfllm export RUN --format tflite --out DIR` of the trained run, read (never changed) by the two TFLite tests
    below: one export where the metadata-loop test (in test_tflite.py before) trained and exported a run of its
    own."""
    pytest.importorskip("ai_edge_litert")
    out = tmp_path_factory.mktemp("tflite") / "tr"
    assert cli.main(["export", trained_run, "--format", "tflite", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_tflite_encoder_and_decoder_step_match_keras_greedy(trained_run, trained_run_tflite):
    out = trained_run_tflite
    parity = json.load(open(out / "parity.json"))
    test = json.load(open(os.path.join(trained_run, "metrics.json")))["test"]["num_examples"]
    assert parity["sources"] == min(20, test) and parity["greedy_exact_match_rate"] == 1.0
    metadata = json.load(open(out / "metadata.json"))
    assert metadata["task"] == "translate" and metadata["output_vocabulary_size"] < metadata["vocabulary_size"]
    from tfllm.export.tflite_runtime import load_interpreter

    decode = load_interpreter(str(out / "model.tflite")).get_signature_runner("decode")
    assert decode.get_output_details()["logits"]["shape"][-1] == metadata["output_vocabulary_size"]


def _translate_from_metadata(directory, source):
    """An app's greedy loop written from metadata.json and vocabulary.json alone (and TensorFlow's interpreter)."""
    import tensorflow as tf

    with open(os.path.join(directory, "metadata.json")) as f:
        meta = json.load(f)
    with open(os.path.join(directory, "vocabulary.json")) as f:
        vocabulary = json.load(f)
    special, length = meta["special_token_ids"], meta["encoder_sequence_length"]
    assert meta["tokenizing"]["kind"] == "char"  # "one id per Unicode character ..., the unknown id ..."
    ids = [vocabulary.index(c) if c in vocabulary else special["unknown"] for c in source.strip()]
    packed = [special["start"]] + ids[:length - 2] + [special["end"]]
    tokens = np.full([1, length], special["pad"], np.int32)
    tokens[0, :len(packed)] = packed
    mask = (np.arange(length) < len(packed)).astype(np.int32)[None]
    interpreter = tf.lite.Interpreter(model_path=os.path.join(directory, "model.tflite"))
    encoded = interpreter.get_signature_runner("encode")(encoder_token_ids=tokens, encoder_padding_mask=mask)
    decode = interpreter.get_signature_runner("decode")
    self_cache = np.zeros(decode.get_input_details()["self_cache"]["shape"], np.float32)
    token, new = special["start"], []
    for index in range(meta["decoder_sequence_length"] - 1):
        out = decode(token_id=np.array([[token]], np.int32), index=np.array(index, np.int32), self_cache=self_cache,
                     cross_cache=encoded["cross_cache"], encoder_output=encoded["encoder_output"],
                     encoder_padding_mask=mask)
        self_cache, token = out["self_cache"], int(np.argmax(out["logits"][0]))
        if token == special["end"]:
            break
        new.append(token)
    return "".join(vocabulary[i] for i in new if i not in special["all"]).strip()


@pytest.mark.slow
def test_a_translation_loop_written_from_metadata_alone_reproduces_keras(trained_run, trained_run_tflite):
    """The translator's metadata.json had no vocabulary file, no loop and no packing: an app could not be
    written from it (the generator's had them).

    Moved from test_tflite.py, where it trained (24 steps) and exported a run of its own so that sources got
    different translations: the module's trained run (3 epochs) translates them differently, and its export is
    shared with the test above."""
    from tfllm.translation import translate

    directory = str(trained_run_tflite)
    meta = json.loads(open(os.path.join(directory, "metadata.json")).read())
    assert "[BOS]" not in meta["loop"] and "strip the spaces" in meta["loop"] and "argmax" in meta["loop"]
    # Spaces around a source, a character never trained on, and one longer than the encoder's 12 positions.
    assert meta["encoder_sequence_length"] == 12 and "九" not in WORDS
    sources = [" 二三 ", "一", "四二", "九", "一二三四一二三四一二三四一二"]
    expected = translate(trained_run, sources)
    assert len(set(expected)) > 1, expected
    assert [_translate_from_metadata(directory, s) for s in sources] == expected


@pytest.mark.parametrize("kind", ["wordpiece", "char"])
def test_targets_first_moves_ids_but_not_tokens(kind):
    from tfllm.tokenizers import output_vocabulary_size, targets_first

    pairs = make_pairs(100)
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    tokenizer = train_tokenizer(sources + targets, kind, 100, lowercase=False)
    ordered = targets_first(tokenizer, targets)
    assert ordered.get_vocabulary()[:5] == tokenizer.get_vocabulary()[:5]  # the specials keep their ids
    assert sorted(ordered.get_vocabulary()) == sorted(tokenizer.get_vocabulary())
    size = output_vocabulary_size(ordered, targets)
    assert size < output_vocabulary_size(tokenizer, targets) or kind == "char"

    def ids(tok, texts):
        out = tok.tokenize(tf.constant(texts))
        return out if isinstance(out, list) else out.to_list()

    def tokens(tok, texts):
        return [[tok.id_to_token(int(i)) for i in row] for row in ids(tok, texts)]

    assert tokens(ordered, sources + targets) == tokens(tokenizer, sources + targets)
    assert max(max(row) for row in ids(ordered, targets)) == size - 1
    assert min(min(row) for row in ids(ordered, sources)) >= size  # source-only ids follow


def test_labels_beyond_the_output_vocabulary_become_unknown():
    model, _ = tiny_model()
    tokenizer = model.preprocessor.tokenizer
    split = PairSplit(["六"], [["one six"]])
    size = int(tokenizer.token_to_id("x"))  # as if "x" appeared in no training target
    (_, y, w), = list(pair_dataset(split, model.preprocessor, 4, output_vocabulary_size=size))
    labels = y.numpy()[w.numpy() > 0]
    assert labels.max() < size and list(labels).count(int(tokenizer.unk_token_id)) == 1
    assert len(labels) == len("one six") + 1  # every character and [EOS], none dropped


@pytest.mark.slow
def test_length_buckets_keep_every_pair_and_drop_only_padding():
    model, _ = tiny_model(seed=0)
    pairs = make_pairs(120)
    split = PairSplit([s for s, _ in pairs], [[t] for _, t in pairs])
    plain = list(pair_dataset(split, model.preprocessor, 16))
    bucketed = list(pair_dataset(split, model.preprocessor, 16, bucket=True))

    def rows(batches):
        out = set()
        for x, y, w in batches:
            for i in range(len(y)):
                keep = int(np.sum(w[i]))
                out.add((tuple(x["encoder_token_ids"][i].numpy()[x["encoder_padding_mask"][i].numpy().astype(bool)]),
                         tuple(y[i].numpy()[:keep])))
        return out

    assert rows(bucketed) == rows(plain) and len(rows(plain)) > 50
    assert sum(len(y) for _, y, _ in bucketed) == 120
    widths = [y.shape[1] for _, y, _ in bucketed]
    assert max(widths) <= model.preprocessor.decoder_sequence_length and min(widths) < max(widths)
    # Nothing but padding was cut: the same number of target tokens, inputs and labels the same width.
    assert sum(float(np.sum(w)) for _, _, w in bucketed) == sum(float(np.sum(w)) for _, _, w in plain)
    assert all(x["decoder_token_ids"].shape == y.shape for x, y, _ in bucketed)
    # For XLA: sources at full length, so the only shapes are the target buckets'.
    full_sources = list(pair_dataset(split, model.preprocessor, 16, bucket=True, trim_encoder=False))
    assert rows(full_sources) == rows(plain)
    assert {x["encoder_token_ids"].shape[1] for x, _, _ in full_sources} == {model.preprocessor.encoder_sequence_length}
    assert {x["encoder_token_ids"].shape[1] for x, _, _ in bucketed} != {model.preprocessor.encoder_sequence_length}
    assert {y.shape[1] for _, y, _ in full_sources} == set(widths)


@pytest.fixture(scope="module")
def bart_preset(tmp_path_factory):
    """A 1-layer BartBackbone with a byte-level BPE vocabulary of single bytes (every ASCII text encodes)."""
    keras.utils.set_random_seed(0)
    byte_chars = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ"]
    vocabulary = {token: i for i, token in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + byte_chars + ["Ġt", "<mask>"])}
    tokenizer = keras_hub.models.BartTokenizer(vocabulary=vocabulary, merges=["Ġ t"])
    backbone = keras_hub.models.BartBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(tokenizer, encoder_sequence_length=12,
                                                              decoder_sequence_length=16)
    path = str(tmp_path_factory.mktemp("presets") / "bart_tiny")
    keras_hub.models.BartSeq2SeqLM(backbone, preprocessor=preprocessor).save_to_preset(path)
    return path


@pytest.mark.slow
def test_fine_tune_a_keras_hub_bart_preset_translate_and_export(bart_preset, tmp_path, capsys):
    rows = [(f"{a} {b}", f"{b} {a}") for a in "abcdefgh" for b in "ijklmnop"] * 3  # swap two letters
    data = write_csv(tmp_path / "swap.csv", rows, header=("src", "tgt"))
    run_dir = str(tmp_path / "bart-run")
    assert cli.main(["train", "--task", "translate", "--data", data, "--source-column", "src", "--target-column",
                     "tgt", "--from-preset", bart_preset, "--preset", "tiny", "--epochs", "1",
                     "--run-dir", run_dir]) == 0
    loaded = keras_hub.models.Seq2SeqLM.from_preset(run_dir)
    assert type(loaded).__name__ == "BartSeq2SeqLM"
    capsys.readouterr()
    from tfllm.translation import translate

    greedy = translate(run_dir, ["a i", "b j"], warn=False)
    assert len(greedy) == 2 and all(isinstance(t, str) for t in greedy)
    assert translate(run_dir, ["a i"], sampler="beam", num_beams=1, warn=False) == greedy[:1]
    # Plain KerasHub reloads the run at the lengths it trained with: they were left out of its preprocessor's
    # config, it came back at 1024/1024, and generate() (and translate(loaded)) failed on 32 positions.
    tiny = resolve_preset("translate", "tiny")
    assert (loaded.preprocessor.encoder_sequence_length, loaded.preprocessor.decoder_sequence_length) == (
        tiny["encoder_sequence_length"], tiny["decoder_sequence_length"])
    assert translate(loaded, ["a i", "b j"], warn=False) == greedy
    loaded.compile(sampler="greedy")
    assert loaded.generate(["a i", "b j"]) == greedy  # KerasHub's own loop, BART's decoder prompt as tfllm's

    from tfllm.export.seq2seq import export_seq2seq

    path = export_seq2seq(run_dir, "bart", base_dir=str(tmp_path / "savedmodels"))
    reloaded = tf.saved_model.load(path).signatures["serving_default"]
    # The run's decoder length less BART's two-token prompt.
    width = resolve_preset("translate", "tiny")["decoder_sequence_length"] - 2
    out = reloaded(source=tf.constant(["a i", "b j"]), max_new_tokens=tf.constant([width, width]))
    assert [t.decode() for t in out["translation"].numpy()] == greedy
    # Its TFLite export was an AttributeError traceback (tfllm's encode/decode steps read tfllm's backbone).
    capsys.readouterr()
    assert cli.main(["export", run_dir, "--name", "bart-tflite", "--format", "tflite",
                     "--base-dir", str(tmp_path / "savedmodels")]) == 2
    err = capsys.readouterr().err
    assert "BartSeq2SeqLM" in err and "SavedModel" in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "savedmodels" / "bart-tflite")


@pytest.mark.slow
def test_a_bart_preset_trained_as_another_task_is_pointed_to_translate(bart_preset, tmp_path, capsys):
    """BART with --task classify was called "a text generator (a decoder)" and sent to --task generate, and with
    --task generate (or pretrain) sent to --task classify (--objective causal), each of which failed too."""
    run_dir = str(tmp_path / "r")
    for argv, task in ((["train", "--task", "classify", "--data", "rotten_tomatoes", "--epochs", "1"], "text classifier"),
                       (["train", "--task", "generate", "--data", "shakespeare", "--steps", "1"], "causal LM"),
                       (["pretrain", "--data", "rotten_tomatoes", "--steps", "1"], "masked LM"),
                       (["pretrain", "--objective", "causal", "--data", "shakespeare", "--steps", "1"], "causal LM")):
        assert cli.main([*argv, "--max-rows", "300", "--from-preset", bart_preset, "--run-dir", run_dir]) == 2
        err = capsys.readouterr().err
        assert f"(BartBackbone) is a sequence-to-sequence model (an encoder-decoder), which has no {task}" in err, err
        assert "--task translate" in err and "--task generate" not in err and "--task classify" not in err, err
        assert "--objective causal" not in err and err.count("\n") == 1
    assert not os.path.exists(run_dir)


@pytest.mark.slow
def test_a_bart_preset_missing_or_with_a_damaged_file_is_one_line_naming_it(bart_preset, tmp_path, capsys):
    """A BART weights file cut short in copying, or missing, was "Cannot load ... as a sequence-to-sequence model
    (Unable to synchronously open file ...). Pass ... a KerasHub Seq2SeqLM preset (BART)", of a BART preset."""
    import shutil

    data = write_csv(tmp_path / "swap.csv", [(f"{a} {b}", f"{b} {a}") for a in "abcdefgh" for b in "ijklmnop"] * 3,
                     header=("src", "tgt"))
    for name, damage, message in (("cut", lambda w: w.write_bytes(w.read_bytes()[:3000]),
                                   "its model.weights.h5 does not read as an HDF5 weights file"),
                                  ("gone", lambda w: w.unlink(), "has no model.weights.h5")):
        copy = tmp_path / name
        shutil.copytree(bart_preset, copy)
        damage(copy / "model.weights.h5")
        assert cli.main(["train", "--task", "translate", "--data", data, "--source-column", "src", "--target-column",
                         "tgt", "--from-preset", str(copy), "--preset", "tiny", "--epochs", "1",
                         "--run-dir", str(tmp_path / "r")]) == 2
        error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfllm: error:")]
        assert len(error) == 1 and message in error[0] and "copy the whole" in error[0], error
    assert not os.path.exists(tmp_path / "r")


def test_bleu_of_references_shorter_than_4_words_carries_a_note_that_it_means_nothing():
    """`translation_report(["A joyous film"], [["A joyous film"]])` was BLEU 0.0 beside chrF 100 and exact match 1,
    without a word of why (no 4-grams); the value stays sacreBLEU's, and a note says to read chrF."""
    short = translation_report(["A joyous film", "positive"], [["A joyous film"], ["positive", "good"]])
    assert short["bleu"] == 0.0 and short["exact_match"] == 1.0 and "no reference has 4 words" in short["bleu_note"]
    long = translation_report(["a film of joy and wit"], [["a film of joy and wit"]])
    assert long["bleu"] == pytest.approx(100.0) and "bleu_note" not in long


def test_bleu_splits_chinese_into_characters():
    report = translation_report(["中国人民银行"], [["中国人民银行"]])
    assert report["bleu_tokenize"] == "zh" and report["bleu"] == pytest.approx(100.0)  # 13a: one word, BLEU 0
    assert translation_report(["the bank"], [["the bank"]])["bleu_tokenize"] == "13a"


def test_english_bleu_stays_13a_when_a_few_references_hold_chinese():
    import sacrebleu

    # A zh->en run: English glosses, a few of them cedict cross-references with Chinese in them. Any Chinese
    # reference used to switch the whole corpus to the "zh" tokenizer, which scores English differently.
    references = [["a cat sat on the mat"], ["the same as before, isn't it?"], ["to go to the bank"],
                  ["see 一樣|一样[yi1 yang4]"], ["variant of 們|们[men5]"], ["it's a dog's life (idiom)"]]
    outputs = ["a cat sat on a mat", "the same as before, is it?", "go to the bank",
               "see 一样[yi1 yang4]", "variant of 们", "a dog's life"]
    report = translation_report(outputs, references)
    streams = [[refs[0] for refs in references]]
    expected = sacrebleu.corpus_bleu(outputs, streams, tokenize="13a").score
    assert sacrebleu.corpus_bleu(outputs, streams, tokenize="zh").score != pytest.approx(expected, abs=0.01)
    assert report["bleu_tokenize"] == "13a" and report["bleu"] == pytest.approx(expected, abs=0.005)
    # A Chinese target (pinyin -> characters): most references are Chinese, so "zh".
    chinese = translation_report(["我们一样", "中国人", "银行"], [["我们一样"], ["中国人民"], ["银行", "bank"]])
    assert chinese["bleu_tokenize"] == "zh"
    assert chinese["bleu"] == pytest.approx(sacrebleu.corpus_bleu(
        ["我们一样", "中国人", "银行"], [["我们一样", "中国人民", "银行"], [None, None, "bank"]], tokenize="zh").score,
        abs=0.005)


def test_every_setting_translation_training_reads_can_be_overridden():
    import pathlib
    import re

    from tfllm.presets import known_settings
    from tfllm.models.seq2seq_lm import BACKBONE_ARGS, VOCABULARY_ARGS

    source = (pathlib.Path(__file__).parents[1] / "tfllm" / "training" / "seq2seq.py").read_text()
    read = set(re.findall(r'preset(?:\[|\.get\()"(\w+)"', source))
    assert {"label_smoothing", "max_train_seconds", "bucket_by_length"} <= read
    assert read | (set(BACKBONE_ARGS) - set(VOCABULARY_ARGS)) <= known_settings("translate")
    with pytest.raises(UserInputError, match="Did you mean 'label_smoothing'"):
        resolve_preset("translate", "tiny", {"label_smothing": 0.1})


@pytest.mark.slow
def test_a_run_stopped_after_its_training_reports_what_its_training_measured(pairs_csv, tmp_path, monkeypatch):
    """A stop after `fit` had ended (here in the first translation) resumes without training again; its
    metrics.json then said `stopped_by_time_budget: false` and the seconds of the resume's fit, which trained
    nothing, where the interrupted fit had stopped by its time budget. Now the figures the training measured."""
    from tfllm.training import seq2seq

    def stopped(*args, **kwargs):  # the first thing after fit and the best epoch's weights
        raise KeyboardInterrupt

    fits, report = timed_fits(monkeypatch, Seq2SeqLM), seq2seq.split_report
    monkeypatch.setattr(seq2seq, "split_report", stopped)
    run_dir = tmp_path / "run"
    argv = ["train", "--task", "translate", "--data", pairs_csv, "--source-column", "zh", "--target-column", "en",
            "--preset", "tiny", "--epochs", "2", "--max-rows", "100", "--set", "max_train_seconds=0.001",
            "--run-dir", str(run_dir)]
    assert cli.main(argv) == 130
    monkeypatch.setattr(seq2seq, "split_report", report)
    assert cli.main(argv) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_by_time_budget"] is True and metrics["epochs_run"] == 1  # stopped after one step
    # The first fit's seconds up to its end (not the tf.data teardown after it), not the resume's no-op fit's.
    assert len(fits) == 2 and max(2 * fits[1], fits[0] / 2) < metrics["train_seconds"] < fits[0] + 1  # + set-up around fit


@pytest.mark.parametrize("flags,message", [
    # Each range error names the flag, as argparse's did for --num-beams 0 ("num_beams must ..." named Python's).
    (["--sampler", "top_k", "--seed", str(10**30)], "error: --seed must be a whole number from"),  # TensorFlow's error
    (["--sampler", "top_k", "--temperature", "inf"], "error: --temperature must be a number >= 0, got inf"),  # noise
    (["--sampler", "beam", "--num-beams", "100000"], "error: --num-beams must be a whole number from 1 to 64"),
    (["--num-beams", "65"], "error: --num-beams must be a whole number from 1 to 64, got 65."),
    (["--sampler", "top_k", "--top-k", "0"], "error: --top-k must be a whole number of at least 1, got 0."),
    (["--max-new-tokens", "1000"], "error: --max-new-tokens must be an integer from 1 to "),
    (["--text-column", "zh"], "--text-column"),  # evaluate's flags of other tasks: refused, not ignored
    # Options the decoding does not read: refused, not ignored.
    (["--num-beams", "4", "--sampler", "greedy"], "--num-beams is for --sampler beam, and the sampler is greedy"),
    (["--top-k", "5"], "--top-k is for --sampler top_k, and the sampler is greedy"),
    (["--sampler", "top_k", "--top-p", "0.5"], "--top-p is for --sampler top_p, and the sampler is top_k"),
    (["--num-beams", "2", "--temperature", "0.5"], "--temperature is for --sampler top_k or top_p"),
    (["--seed", "1"], "--seed is for --sampler top_k or top_p"),
    (["--temperature", "0", "--seed", "1"], "--seed is for --sampler top_k or top_p"),  # "with no --seed"
    (["--sampler", "greedy", "--temperature", "0"], "--temperature is for --sampler top_k or top_p"),  # as generate
    (["--sampler", "top_k", "--temperature", "0", "--seed", "1"], "--seed is not read at --temperature 0, which "
                                                                  "decodes greedily"),  # ignored
    (["--lm-weight", "0.3"], "--lm-weight weighs the scores of --lm"),
    (["--memory", "train", "--source-column", "zh"], "name the columns of a --memory file"),
])
@pytest.mark.slow
def test_translate_out_of_range_options_are_one_line(trained_run, capsys, flags, message):
    command = "evaluate" if flags[0] == "--text-column" else "translate"
    capsys.readouterr()
    code = cli.main([command, trained_run, *(["一二"] if command == "translate" else []), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and message in err and err.count("\n") == 1 and out == "", err


@pytest.mark.parametrize("command", ["translate", "evaluate"])
@pytest.mark.parametrize("value", ["0", "-2"])
@pytest.mark.slow
def test_translate_num_beams_below_one_is_refused_not_greedy(trained_run, capsys, value, command):
    """--num-beams 0 (or -2) decoded greedily without a word; then argparse refused it in a style of its own, a
    usage block and "argument --num-beams: must be at least 1", where 65 was "num_beams must be ... 1 to 64"."""
    assert cli.main([command, trained_run, *(["一二"] if command == "translate" else []), "--num-beams", value]) == 2
    assert capsys.readouterr().err == f"tfllm: error: --num-beams must be a whole number from 1 to 64, got {value}.\n"


@pytest.mark.slow
def test_translate_refuses_a_bool_and_keeps_warnings_short(translator_seed_2):
    translator = translator_seed_2
    with pytest.raises(UserInputError, match="max_new_tokens must be an integer from 1 to"):
        translator.translate(["一"], max_new_tokens=True)  # decoded one token
    with pytest.warns(TfllmWarning, match="longer than the model's") as caught:
        translator.translate(["一二三四五六七八" * 100_000], max_new_tokens=1)  # the warning quoted all 800,000 characters
    assert len(str(caught[0].message)) < 400, len(str(caught[0].message))


@pytest.mark.slow
def test_num_beams_alone_is_beam_search_as_on_the_command_line(translator_seed_2):
    """translate(..., num_beams=4) was refused ("num_beams is for sampler='beam'") where `tfllm translate
    --num-beams 4` searches with 4 beams; a sampler given beside it still decides."""
    translator = translator_seed_2
    beam = translator.translate(["一二"], sampler="beam", num_beams=3, max_new_tokens=2, warn=False)
    assert translator.translate(["一二"], num_beams=3, max_new_tokens=2, warn=False) == beam
    assert translator.translate(["一二"], num_beams=1, max_new_tokens=2, warn=False) == translator.translate(
        ["一二"], sampler="greedy", max_new_tokens=2, warn=False)  # as --num-beams 1: greedy
    for options, message in ((dict(sampler="greedy", num_beams=3), "num_beams is for sampler='beam', and the "
                                                                   "sampler is 'greedy'"),
                             (dict(sampler="top_k", num_beams=3), "num_beams is for sampler='beam'"),
                             (dict(seed=3), "seed is for sampler='top_k' or 'top_p'"),  # greedy: ignored before
                             (dict(num_beams=3, seed=3), "seed is for sampler='top_k' or 'top_p'"),
                             (dict(num_beams=0), "num_beams must be a whole number from 1 to 64, got 0"),
                             (dict(num_beams="4"), "num_beams must be a whole number from 1 to 64, got '4'")):
        with pytest.raises(UserInputError, match=message):
            translator.translate(["一"], max_new_tokens=2, **options)


@pytest.mark.slow
def test_a_temperature_greedy_or_beam_search_would_ignore_is_refused_as_the_command_refuses_it(translator_seed_2):
    """translate(..., sampler="greedy" or "beam", temperature=0.7) decoded as without it, without a word, where
    `tfllm translate --temperature 0.7` and generate(..., sampler="greedy", temperature=0.7) refuse it."""
    translator = translator_seed_2
    for options, sampler in ((dict(temperature=0.7), "greedy"), (dict(sampler="greedy", temperature=0.7), "greedy"),
                             (dict(sampler="beam", num_beams=2, temperature=0.7), "beam"),
                             (dict(num_beams=2, temperature=1.0), "beam"),
                             (dict(sampler="greedy", temperature=0), "greedy")):  # as generate: the sampler decides
        with pytest.raises(UserInputError, match=f"^temperature is for sampler='top_k' or 'top_p', and the sampler "
                                                 f"is '{sampler}'; use sampler='top_k' or leave temperature out.$"):
            translator.translate(["一"], max_new_tokens=2, **options)
    # temperature=0 alone is greedy decoding, the default sampler (its docstring; `tfllm translate --temperature 0`).
    assert translator.translate(["一二"], temperature=0, max_new_tokens=2, warn=False) == translator.translate(
        ["一二"], max_new_tokens=2, warn=False)


def test_text_left_out_of_the_vocabulary_is_not_called_never_seen_in_training(translator_seed_2):
    """'的' was in the training sources but cut by vocabulary_size; the warning said "never seen in training".

    A tokenizer trained on the texts with 九 in them, at a vocabulary_size one short, leaves 九 out; its vocabulary
    is token for token the shared untrained translator's, which therefore is that run's translator (its tracing
    shared with the other tests; building and tracing one of its own took seconds)."""
    pairs = make_pairs(100)
    texts = [s for s, _ in pairs] + [t for _, t in pairs] + ["九"]  # 九 once: the rarest character
    size = len(set("".join(texts))) - 1 + len(SPECIAL_TOKENS)
    tokenizer = train_tokenizer(texts, "char", size, lowercase=False)
    assert "九" not in tokenizer.get_vocabulary() and "一" in tokenizer.get_vocabulary()
    translator = translator_seed_2
    assert translator.tokenizer.get_vocabulary() == tokenizer.get_vocabulary()
    with pytest.warns(TfllmWarning) as caught:
        translator.translate(["一九"], max_new_tokens=1)
    message = str(caught[0].message)
    assert ("1 source(s) hold text the model's vocabulary has no token for (never seen in training, or left out "
            "of its vocabulary_size; first: '一九')") in message, message


@pytest.mark.slow
def test_cli_temperature_0_alone_decodes_greedily_as_its_help_and_python_say(trained_run, capsys):
    """`tfllm translate RUN TEXT --temperature 0` was refused ("--temperature is for --sampler top_k or top_p"),
    where its help says 0 means greedy and `tfllm.translate(..., temperature=0)` decodes greedily."""
    from tfllm.translation import translate

    given = ["一二", "三四五"]
    capsys.readouterr()
    assert cli.main(["translate", trained_run, *given]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert cli.main(["translate", trained_run, *given, "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == greedy == translate(trained_run, given, temperature=0, warn=False) and err == ""
    assert cli.main(["translate", trained_run, *given, "--sampler", "top_k", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == greedy


@pytest.mark.slow
def test_cli_seeded_sampling_translates_a_source_alike_wherever_it_stands(trained_run, capsys):
    """`tfllm translate --sampler top_k --seed 5 A B C` gave B another translation than `... B C` did."""
    def translated(*texts):
        capsys.readouterr()
        assert cli.main(["translate", trained_run, *texts, "--sampler", "top_k", "--temperature", "3",
                         "--seed", "5"]) == 0
        return capsys.readouterr().out.splitlines()

    given = ["一二", "三四", "五", "六七八", "二"]
    whole = translated(*given)
    assert translated(*given) == whole
    assert translated(*given[2:]) == whole[2:]
    assert translated(*given[::-1]) == whole[::-1]


@pytest.mark.slow
def test_a_damaged_translation_run_is_one_line(trained_run, tmp_path, capsys):
    import shutil

    from tfllm.translation import translate

    run_dir = tmp_path / "damaged"
    shutil.copytree(trained_run, run_dir)
    with open(run_dir / "model.weights.h5", "r+b") as f:  # a copy cut short: h5py's OSError, a traceback
        f.truncate(1000)
    capsys.readouterr()
    assert cli.main(["translate", str(run_dir), "一二"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{str(run_dir)!r} cannot be loaded" in err, err
    with pytest.raises(UserInputError, match="cannot be loaded"):
        translate(str(run_dir), ["一二"])


def test_translating_with_a_classifier_says_how_to_train_a_translator_in_the_callers_words(tmp_path):
    """A Python caller was told to run `tfllm train --task translate`."""
    from lm_utils import write_records

    from tfllm.translation import translate

    # Refused from the run's records, before any model loads: a classifier run's records suffice (the session's
    # trained tiny classifier cost this file's worker ~5 s where no other of its files needed it).
    classifier_run = write_records(tmp_path / "run", "classify")
    with pytest.raises(UserInputError, match=r"holds a text classifier, not a translation model; train one with "
                                             r"tfllm\.training\.seq2seq\.train_seq2seq\(TrainConfig\(task=\"translate\""):
        translate(classifier_run, ["你好"])
