"""Causal LM: model, cache, samplers, saving, text loading, training run directory."""

import gzip
import json
import math
import os
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from lm_utils import tiny_generator, tiny_lm, write_records, write_run_dir

from conftest import assert_keras_roundtrip
from tfllm import data as data_lib
from tfllm.config import SAMPLER_OF_OPTION, TrainConfig
from tfllm.datasets.text import load_text_corpus
from tfllm.errors import UserInputError
from tfllm.generation import MAX_NEW_TOKENS, SAMPLERS, load_generator


def _inputs(ids):
    ids = np.asarray(ids, "int32")
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def _recompute_greedy(model, prompt, n, keep=None):
    """Greedy decoding that re-runs the full model on the visible context every step.

    The context is what `CausalLM` documents: everything while it fits the
    window; once full, only the last `keep` tokens, growing again to the window.
    """
    window = model.sequence_length
    keep = keep or window - 1
    # Right padding to one shape (causal attention: it cannot change earlier logits), one trace.
    forward = tf.function(lambda ids: model({"token_ids": ids, "padding_mask": tf.ones_like(ids)}))
    tokens, start = list(prompt), 0
    for _ in range(n):
        i = len(tokens) - 1
        if i - start >= window:
            start = i - keep
        context = tokens[start: i + 1]
        logits = forward(np.asarray([context + [0] * (window - len(context))], "int32"))
        tokens.append(int(np.argmax(logits[0, len(context) - 1])))
    return tokens


@pytest.mark.parametrize("use_bias", [False, True], ids=["fused_block", "keras_hub_block"])
@pytest.mark.parametrize("window_keep,jit_compile", [(None, False), (4, False), (None, True)])
@pytest.mark.slow
def test_cached_greedy_equals_recompute(window_keep, jit_compile, use_bias):
    model = tiny_lm(window_keep=window_keep, use_bias=use_bias)
    model.compile(sampler="greedy", jit_compile=jit_compile)
    prompts = [[5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [9]]  # shorter and longer than the window (8)
    width = 10 + 20
    buffer = np.zeros((3, width), "int32")
    for row, prompt in enumerate(prompts):
        buffer[row, : len(prompt)] = prompt
    out = model.generate({"token_ids": buffer, "padding_mask": (buffer > 0).astype("int32")}, stop_token_ids=None)
    for row, prompt in enumerate(prompts):
        expected = _recompute_greedy(model, prompt, width - len(prompt), keep=window_keep)
        assert out["token_ids"][row].tolist() == expected


@pytest.mark.parametrize("jit_compile", [False, True])
def test_generation_shorter_than_the_window(jit_compile):
    """Prompt + new tokens inside one window: no sliding (XLA once rejected the unused branch)."""
    model = tiny_lm()
    model.compile(sampler="greedy", jit_compile=jit_compile)
    buffer = np.zeros((1, 5), "int32")
    buffer[0, :2] = [5, 6]
    out = model.generate({"token_ids": buffer, "padding_mask": (buffer > 0).astype("int32")}, stop_token_ids=None)
    assert out["token_ids"][0].tolist() == _recompute_greedy(model, [5, 6], 3)


@pytest.mark.parametrize("use_bias", [False, True], ids=["fused_block", "keras_hub_block"])
def test_keras_round_trip(tmp_path, use_bias):
    model = tiny_lm(window_keep=5, use_bias=use_bias)
    reloaded = assert_keras_roundtrip(model, _inputs([[4, 5, 6, 7, 8, 9]]), str(tmp_path / "lm.keras"))
    assert reloaded.window_keep == 5
    assert type(reloaded.backbone.transformer_layers[0]) is type(model.backbone.transformer_layers[0])


def test_fused_block_is_bias_free_and_masks_padding():
    """nanoGPT's block: no bias weights; a padded key changes no other position's output."""
    model = tiny_lm()
    names = [w.path for w in model.backbone.transformer_layers[0].weights]
    assert not [n for n in names if n.endswith("bias")]
    assert [n for n in names if "query_key_value" in n]  # one fused projection
    ids = np.array([[4, 5, 6, 7, 8], [4, 9, 6, 7, 8]], "int32")  # differ at position 1 only
    mask = np.array([[1, 0, 1, 1, 1]] * 2, "int32")
    logits = keras.ops.convert_to_numpy(model({"token_ids": ids, "padding_mask": mask}))
    np.testing.assert_allclose(logits[0, 2:], logits[1, 2:], atol=1e-6)
    unmasked = keras.ops.convert_to_numpy(model({"token_ids": ids, "padding_mask": np.ones_like(mask)}))
    assert np.abs(unmasked[0, 2:] - unmasked[1, 2:]).max() > 1e-4  # the mask, not luck, made them equal


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.slow
def test_samplers_run_and_respect_seed(sampler):
    generator = tiny_generator()
    # Each sampler's own options only: the others are refused (test_options_a_sampler_does_not_read_are_refused).
    options = dict(temperature=1.5, top_k=5, top_p=0.95, num_beams=2, seed=3)
    kwargs = dict({k: v for k, v in options.items() if sampler in SAMPLER_OF_OPTION[k]}, max_new_tokens=12, sampler=sampler)
    first = generator.generate(["First", "hear me speak"], **kwargs)
    assert len(first) == 2 and all(isinstance(t, str) and len(t) <= 12 for t in first)
    assert generator.generate(["First", "hear me speak"], **kwargs) == first
    if sampler in ("top_k", "top_p", "random"):
        others = [tuple(generator.generate(["First", "hear me speak"], **dict(kwargs, seed=s))) for s in range(4, 8)]
        assert any(o != tuple(first) for o in others)


@pytest.mark.slow
def test_top_k_is_clamped_and_temperature_zero_is_greedy():
    generator = tiny_generator()
    huge = generator.generate(["First"], 10, sampler="top_k", top_k=10**6, temperature=1e-40, seed=7)
    assert huge == generator.generate(["First"], 10, sampler="greedy")
    assert generator.generate(["First"], 10, sampler="top_k", temperature=0.0) == huge
    # A temperature too small to divide by in float32 is its limit, greedy (it overflowed to empty text).
    assert generator.generate(["First"], 10, sampler="random", temperature=1e-40, seed=7) == huge


@pytest.mark.slow
def test_streaming_matches_one_shot_and_stop_strings():
    from tfllm.generation import STREAM_CHUNK

    generator = tiny_generator()
    # Two streamed chunks for both prompts (a chunk adds at most the window + STREAM_CHUNK less its context: 67
    # and 70 tokens here): the second one's buffer starts part-way into the text.
    length = STREAM_CHUNK + 16
    pieces = []
    streamed = generator.generate(["First", "me"], length, sampler="greedy",
                                  stream_callback=lambda i, t: pieces.append((i, t)))
    assert streamed == generator.generate(["First", "me"], length, sampler="greedy")
    # Sampled too: each chunk drew its noise afresh (seed + 7919 * chunk) at its own buffer's positions, so the
    # streamed text (`tfllm generate`'s) parted from a single call's (the SavedModel's) after the first chunk.
    for sampler in ("top_k", "top_p", "random"):
        options = dict(sampler=sampler, temperature=1.0, seed=7, **{"top_k": dict(top_k=5), "top_p": dict(top_p=0.9)}.get(sampler, {}))
        one_call = generator.generate(["First", "me"], length, **options)
        assert generator.generate(["First", "me"], length, stream_callback=lambda i, t: None, **options) == one_call
    assert "".join(t for i, t in pieces if i == 0) == streamed[0]
    text = streamed[0]
    stop = text[5:7]
    stopped = generator.generate(["First"], length, sampler="greedy", stop=stop)[0]
    assert stopped == text[: text.find(stop)]


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts=[""]), "Empty prompt"),
    (dict(prompts=["First€"]), "has no token for"),
    (dict(prompts=["First"], max_new_tokens=0), "max_new_tokens"),
    (dict(prompts=["First"], max_new_tokens=MAX_NEW_TOKENS + 1), "max_new_tokens"),
    (dict(prompts="First"), "list of strings"),
    (dict(prompts=["First"], sampler="nucleus"), "Unknown sampler"),
    # Of the wrong kind: one line, not an error deep inside TensorFlow.
    (dict(prompts=["First"], sampler="top_k", top_k="5"), "top_k must be a whole number"),
    (dict(prompts=["First"], sampler="beam", num_beams=2.5), "num_beams must be a whole number"),
    (dict(prompts=["First"], seed="x"), "seed must be a whole number"),
    (dict(prompts=["First"], temperature="hot"), "temperature must be a number"),
])
def test_bad_generation_inputs(kwargs, match):
    generator = tiny_generator()
    with pytest.raises(UserInputError, match=match):
        generator.generate(**{"max_new_tokens": 5, **kwargs})


@pytest.mark.parametrize("kwargs,match", [
    (dict(sampler="greedy", temperature=0.8), "temperature is for sampler='top_k', 'top_p' or 'random'"),
    (dict(sampler="greedy", top_k=50), "top_k is for sampler='top_k'"),
    (dict(sampler="top_p", top_k=50), "top_k is for sampler='top_k'"),
    (dict(sampler="random", top_p=0.9), "top_p is for sampler='top_p'"),
    (dict(sampler="top_k", num_beams=4), "num_beams is for sampler='beam'"),
    (dict(sampler="beam", seed=0), "seed is for"),
    (dict(sampler="top_k", temperature=0, top_k=5), "top_k is not read at temperature=0"),
])
def test_options_a_sampler_does_not_read_are_refused(kwargs, match):
    """Generator.generate ignored them without a word, where tfllm.generate refused them."""
    generator = tiny_generator()
    with pytest.raises(UserInputError, match=re.escape(match)):
        generator.generate(["First"], 5, **kwargs)
    assert isinstance(generator.generate(["First"], 5, sampler=kwargs["sampler"])[0], str)  # its defaults: not refused


@pytest.mark.slow
def test_a_wordpiece_generator_names_the_words_it_has_no_token_for():
    """The refusal said "contains text the tokenizer has no token for"; which text ("Python" became [UNK])?"""
    from lm_utils import tiny_wordpiece_generator

    generator = tiny_wordpiece_generator()
    with pytest.raises(UserInputError) as refused:
        generator.generate(["中国Python银行 hello world, 谢谢"], max_new_tokens=2)
    assert str(refused.value).startswith(
        "Prompt '中国Python银行 hello world, 谢谢' contains words 'Python', '谢' the tokenizer has no token for"), refused.value
    generator.generate(["中国银行 hello world,"], max_new_tokens=2)  # every word known: generated as before


@pytest.mark.slow
def test_load_generator_refuses_classifier_and_unfinished_runs(tmp_path):
    write_records(tmp_path / "clf", "classify")
    with pytest.raises(UserInputError, match="does not generate text"):
        load_generator(str(tmp_path / "clf"))
    with pytest.raises(UserInputError, match="not a tfllm run"):
        load_generator(str(tmp_path))
    run_dir = write_run_dir(tiny_generator(), tmp_path / "lm")
    assert len(load_generator(run_dir).generate(["First"], 3, sampler="greedy")[0]) == 3


def test_load_generator_tells_a_python_caller_the_function_that_trains_a_generator(tmp_path, monkeypatch):
    """`tfllm.generate` on a classifier run told a notebook to "train one with `tfllm train --task generate`"."""
    from tfllm import errors

    write_records(tmp_path / "clf", "classify")
    with pytest.raises(UserInputError) as refused:
        load_generator(str(tmp_path / "clf"))
    assert str(refused.value).endswith(
        "that does not generate text; train one with tfllm.training.causal_lm.train_causal_lm(TrainConfig("
        "task='generate', ...)) (or tfllm.pretrain(TrainConfig(task='pretrain', "
        "objective='causal', ...))).")
    monkeypatch.setattr(errors, "command_running", True)  # the command's words, as before
    with pytest.raises(UserInputError, match=r"train one with `tfllm train --task generate` \(or `tfllm pretrain "
                                             r"--objective causal`\)\.$"):
        load_generator(str(tmp_path / "clf"))


def test_load_text_corpus(tmp_path):
    train, val = load_text_corpus("shakespeare")
    assert len(val) == pytest.approx(0.1 * (len(train) + len(val)), abs=2) and len(set(train)) == 77
    text = "All the world's a stage, and all the men and women merely players. " * 5
    (tmp_path / "a.txt").write_text(text)
    with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
        f.write(text)
    assert load_text_corpus(str(tmp_path / "a.txt")) == load_text_corpus(str(tmp_path / "a.txt.gz"))
    (tmp_path / "a.csv").write_text("id,body\n" + "".join(f'{i},"{text[:100]} {i}"\n' for i in range(10)))
    train, val = load_text_corpus(str(tmp_path / "a.csv"), text_column="body")
    assert val.endswith(" 9") and "\n\n" in train
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": text[:100]}) + "\n" for _ in range(10)))
    assert load_text_corpus(str(tmp_path / "a.jsonl"))[0].startswith("All the world")


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"too short", "too short"),
    (b"caf\xe9 " * 100, "not UTF-8"),
])
def test_load_text_corpus_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=match):
        load_text_corpus(str(path))
    with pytest.raises(UserInputError, match="does not exist"):
        load_text_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "a.csv").write_text("body\nhello there\n")
    with pytest.raises(UserInputError, match="no text column"):
        load_text_corpus(str(tmp_path / "a.csv"))


def test_random_windows_are_next_token_pairs():
    ids = np.arange(100, dtype="int32")
    x, y = next(iter(data_lib.random_window_dataset(ids, 8, 4, seed=1)))
    x, y = x["token_ids"].numpy(), y.numpy()
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)
    with pytest.raises(UserInputError, match="shorter than one training window"):
        data_lib.random_window_dataset(ids[:5], 8, 4)


def test_a_preset_s_start_token_opens_every_window_and_every_text_token_is_a_target_once():
    """GPT-2, Llama, Gemma... presets put a start token before a text, and generation before every prompt
    (tokenizers.prompt_start_ids): training and validation windows begin with it too."""
    ids = np.arange(10, 30, dtype="int32")
    x, y = next(iter(data_lib.random_window_dataset(ids, 8, 4, seed=1, start_ids=[3])))
    x, y = x["token_ids"].numpy(), y.numpy()
    assert x.shape == y.shape == (4, 8)
    assert (x[:, 0] == 3).all()
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # after the start token, the targets shifted by one
    np.testing.assert_array_equal(y[:, 1:], y[:, :-1] + 1)  # running text
    targets = np.concatenate([t.numpy() for _, t in data_lib.sequential_window_dataset(ids, 8, 4, start_ids=[3])])
    assert (targets.ravel()[:-1] < targets.ravel()[1:]).all()  # no token scored twice
    assert targets.ravel()[0] == ids[0]  # the text's first token is predicted from the start token


def test_every_window_that_fits_is_used():
    """A window is sequence_length + 1 tokens (inputs, and targets shifted by one). The validation windows
    skipped the last one whenever the text was k * sequence_length + 1 tokens, random windows never
    started at the last start, and a text of exactly one window was refused."""
    ids = np.arange(20, dtype="int32")
    starts = set()
    for x, y in data_lib.random_window_dataset(ids, 8, 64, seed=0).take(4):
        starts |= set(x["token_ids"].numpy()[:, 0].tolist())
        np.testing.assert_array_equal(y.numpy(), x["token_ids"].numpy() + 1)
    assert starts == set(range(len(ids) - 8))  # 0 .. 11: the window from 11 ends at the last id, 19
    one = [x["token_ids"].numpy() for x, _ in data_lib.random_window_dataset(ids[:9], 8, 4, seed=0).take(1)][0]
    np.testing.assert_array_equal(one, np.tile(ids[:8], (4, 1)))
    windows = [x["token_ids"].numpy() for x, _ in data_lib.sequential_window_dataset(ids[:9], 8, 4)]
    np.testing.assert_array_equal(np.concatenate(windows), ids[None, :8])
    with pytest.raises(UserInputError, match="8 tokens long, shorter than one training window \\(9 tokens\\)"):
        data_lib.check_length(ids[:8], 8, "validation")
    # The shorter window it suggests is one a generator takes (at least 2 tokens): a text of 2 tokens fits a
    # window of 1, which --set refuses, so the message says to use more text only.
    with pytest.raises(UserInputError, match=r"Use more text \(raise .*max.rows.*2, which cut it\)\.$"):
        data_lib.check_length(ids[:2], 8, "training", more=" (raise --max-rows 2, which cut it)")
    with pytest.raises(UserInputError, match=r", or a shorter window: .*sequence_length.*2\}?\.$"):
        data_lib.check_length(ids[:3], 8, "training")


def test_no_training_pipeline_starts_tf_datas_tuning_thread():
    """Deleting a tf.data iterator waits for its autotuning thread, which sometimes slept on: `fit` hung
    12-25 s after its last epoch (`tfllm.data.untuned`). Every pipeline that training and evaluation
    build turns the tuning off, and still gives its batches."""
    from types import SimpleNamespace

    from tfllm.models import MaskedLMPreprocessor
    from tfllm.tokenizers import train_tokenizer
    from tfllm.training import pretraining, seq2seq

    ids = np.arange(40, dtype="int32")
    texts = ["a", "bb", "ccc"]

    def lengths(text):
        return tf.strings.length(text)

    masked_lm = MaskedLMPreprocessor(train_tokenizer(texts, "wordpiece", 20), sequence_length=4, mask_selection_length=1)

    def pairs(columns):
        source = tf.strings.length(columns["encoder_text"])
        return source, tf.strings.length(columns["decoder_text"]), tf.ones_like(source)

    pipelines = {
        "random windows": data_lib.random_window_dataset(ids, 8, 4, seed=0),
        "validation windows": data_lib.sequential_window_dataset(ids, 8, 4),
        "classification": data_lib.classification_dataset(
            SimpleNamespace(texts=texts, labels=[0, 1, 0]), lengths, sigmoid=True, batch_size=2, shuffle=True, seed=0),
        "prediction": data_lib.text_batches(texts, lengths, batch_size=2),
        "translation": seq2seq.pair_dataset(SimpleNamespace(sources=texts, targets=texts), pairs, batch_size=2),
        "masked-LM pretraining": pretraining._masked_batches(texts, masked_lm, 2, repeat=True, seed=0),
        "masked-LM validation": pretraining._fixed_masked_batches(texts, masked_lm, 2),
    }
    for name, ds in pipelines.items():
        assert ds.options().autotune.enabled is False, name
        assert next(iter(ds)) is not None, name


@pytest.mark.parametrize("batch_size", [1, 64])  # full batches through Keras' evaluate, or one plain call
def test_validation_loss_scores_every_window_that_fits(batch_size):
    from tfllm.training.causal_lm import evaluate_loss

    model = tiny_lm(vocabulary_size=30, sequence_length=16)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(5, 30, 33).astype("int32")  # 2 * 16 + 1: two windows
    windows = np.stack([ids[0:17], ids[16:33]])
    logits = keras.ops.convert_to_numpy(model(_inputs(windows[:, :-1]))).astype("float64")
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probs, windows[:, 1:, None], -1).mean()
    assert evaluate_loss(model, ids, 16, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 64])
@pytest.mark.parametrize("start_ids", [(), (1,)])
def test_validation_loss_scores_the_targets_past_the_last_whole_window(batch_size, start_ids):
    """40 ids and windows of 16: the last 7 targets (of 39) were left out of the final validation's loss."""
    from tfllm.training.causal_lm import evaluate_loss

    model = tiny_lm(vocabulary_size=30, sequence_length=16)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(5, 30, 40).astype("int32")

    def losses(inputs, targets):  # one forward pass, numpy cross-entropy per target
        logits = keras.ops.convert_to_numpy(model(_inputs(np.asarray([inputs], "int32")))).astype("float64")[0]
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        return -log_probs[np.arange(len(targets)), targets]

    if start_ids:  # every id is a target; each window's inputs are the start id and the 15 ids before its targets
        parts = [losses([1, *ids[s:s + 15]], ids[s:s + 16]) for s in (0, 16)] + [losses([1, *ids[24:39]], ids[24:40])[-8:]]
    else:  # targets ids[1:]; the last window ids[23:40] counts only ids[33:40], which no other window scored
        parts = [losses(ids[s:s + 16], ids[s + 1:s + 17]) for s in (0, 16)] + [losses(ids[23:39], ids[24:40])[-7:]]
    every = np.concatenate(parts)
    assert len(every) == len(ids) - (0 if start_ids else 1)
    assert evaluate_loss(model, ids, 16, batch_size=batch_size, start_ids=start_ids) == pytest.approx(
        every.mean(), abs=1e-4)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.slow
def test_training_loss_falls(jit_compile):
    from tfllm.presets import resolve_preset
    from tfllm.training.causal_lm import build_causal_lm

    train, _ = load_text_corpus("shakespeare")
    from tfllm.tokenizers import train_tokenizer

    tokenizer = train_tokenizer([train[:5000]], "char", 50, lowercase=False)
    ids = data_lib.tokenize_corpus(tokenizer, train[:5000])
    preset = resolve_preset("generate", "tiny", {"jit_compile": jit_compile, "steps": 40})
    keras.utils.set_random_seed(0)
    model = build_causal_lm(preset, tokenizer)
    # The char tokenizer's StringLookup cannot run under XLA, and Keras alone would turn
    # jit_compile=True off for the whole task because of it (keras-team/keras#19521); the
    # train step never calls the tokenizer, so XLA must stay on as asked.
    assert not all(layer.supports_jit for layer in model.preprocessor._flatten_layers())
    assert model.jit_compile is jit_compile
    model.preprocessor = None  # batches are token ids already
    ds = data_lib.random_window_dataset(ids, preset["sequence_length"], preset["batch_size"], seed=0)
    history = model.fit(ds, steps_per_epoch=20, epochs=2, verbose=0)
    before = math.log(tokenizer.vocabulary_size())
    assert history.history["loss"][0] < before + 0.2
    assert history.history["loss"][-1] < before - 0.3


@pytest.mark.parametrize("jit_compile, unset, expected", [
    ("auto", False, False),  # Keras' choice, no XLA on a CPU: the string is not read as true
    (None, "auto", False), (None, True, True), (True, "auto", True), (False, True, False),
])
def test_compile_task_reads_a_recipes_jit_compile(jit_compile, unset, expected):
    from tfllm.training.common import compile_task

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    compile_task(model, jit_compile, unset=unset, loss="mse", optimizer="adam")
    assert model.jit_compile is expected


def test_a_classifier_recipes_auto_jit_compile_is_keras_auto():
    from tfllm.training.classifier import compile_classifier

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    compile_classifier(model, {"learning_rate": 1e-3, "epochs": 1, "jit_compile": "auto"})  # --set jit_compile=auto
    assert model.jit_compile is False  # Keras' choice on a CPU; bool("auto") made it True before


def test_xla_is_left_to_keras_under_a_distribution_strategy():
    """A mirrored XLA step fails (variables on other devices), so there Keras' own rule stands."""
    from tfllm.presets import resolve_preset
    from tfllm.tokenizers import CharacterTokenizer
    from tfllm.training.causal_lm import build_causal_lm

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = build_causal_lm(resolve_preset("generate", "tiny", {"jit_compile": True}),
                                CharacterTokenizer(vocabulary=list("abcdefghij")))
    assert model.jit_compile is False


def test_nanogpt_preset_builds_nanogpts_optimizer():
    """AdamW (0.9, 0.99), decay 0.1 on matrices only, and the norm of *all* gradients clipped to 1."""
    from tfllm.presets import resolve_preset
    from tfllm.training.causal_lm import build_causal_lm

    from tfllm.tokenizers import CharacterTokenizer

    model = build_causal_lm(resolve_preset("generate", "nanogpt-cpu", {}), CharacterTokenizer(vocabulary=list("abcdefghij")))
    optimizer = model.optimizer
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.weight_decay) == (0.9, 0.99, 0.1)
    assert optimizer.global_clipnorm == 1.0 and optimizer.clipnorm is None  # torch's clip_grad_norm_
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed and not [p for p in decayed if p.endswith(("gamma", "beta", "bias"))]
    assert not [v.path for v in model.trainable_variables if v.path.endswith("bias")]  # bias=False


@pytest.mark.slow
def test_train_run_dir_metrics_and_tensorboard_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.training.causal_lm import train_causal_lm

    config = TrainConfig(task="generate", data="shakespeare", preset="tiny", run_dir=str(tmp_path / "run"),
                         max_rows=6000, jit_compile=False)
    returned = train_causal_lm(config, verbose=0)
    run_dir = config.run_dir
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert returned == metrics  # the metrics dict, as every other trainer returns (it returned run_dir)
    assert metrics["val"]["perplexity"] == pytest.approx(math.exp(metrics["val"]["loss"]), rel=1e-3)
    assert metrics["val"]["bits_per_character"] == pytest.approx(metrics["val"]["loss"] / math.log(2), rel=1e-3)
    assert metrics["speed"]["tokens_per_second"] > 0 and metrics["steps"] == 40
    assert {"config.json", "task.json", "preprocessor.json", "tokenizer.json", "model.weights.h5", "tfllm", "logs"} \
        <= set(os.listdir(run_dir))
    assert metrics["epochs_run"] == 2
    # The run is a KerasHub CausalLM preset: plain KerasHub generates from it with the run's tokenizer.
    import keras_hub

    lm = keras_hub.models.CausalLM.from_preset(run_dir)
    assert type(lm).__module__ == "tfllm.models.causal_lm"
    # Text in, str out, as KerasHub's own models answer (it was a NumPy array of bytes).
    text = lm.generate("ROMEO", max_length=12)
    assert isinstance(text, str) and text.startswith("ROMEO") and len(text) > len("ROMEO")
    texts = lm.generate(["ROMEO", "JULIET"], max_length=12)
    assert isinstance(texts, list) and [type(t) for t in texts] == [str, str]
    loaded = load_generator(run_dir)
    # Running text holds no end token: the run records so, and generation never emits it (it stopped early).
    assert json.load(open(os.path.join(run_dir, "task.json")))["config"]["end_token_trained"] is False
    assert loaded.end_id in loaded.banned_ids
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(lm(_inputs([[5, 6, 7]]))),
                                  keras.ops.convert_to_numpy(loaded.model(_inputs([[5, 6, 7]]))))

    samples = EventAccumulator(os.path.join(run_dir, "logs", "samples"), size_guidance={"tensors": 0})
    samples.Reload()
    events = samples.Tensors("samples")
    assert len(events) == 2  # one per evaluation interval
    text = events[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```\n") and len(text) > 20
    train = EventAccumulator(os.path.join(run_dir, "logs", "train"), size_guidance={"tensors": 0})
    train.Reload()
    tags = set(train.Tags()["tensors"]) | set(train.Tags()["scalars"])
    assert {"epoch_loss", "epoch_perplexity", "epoch_learning_rate"} <= tags
    # Each validation's perplexity against the step, beside its loss (tfllm's Perplexity added it to the epoch only).
    validation = EventAccumulator(os.path.join(run_dir, "logs", "validation"), size_guidance={"tensors": 0})
    validation.Reload()
    points = {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in validation.Tensors(f"evaluation_{tag}_vs_iterations")]
              for tag in ("loss", "perplexity")}
    assert len(points["perplexity"]) == 2
    np.testing.assert_allclose(points["perplexity"], np.exp(points["loss"]), rtol=1e-5)


@pytest.mark.slow
def test_a_validation_text_that_starts_with_a_character_training_never_saw_still_trains(tmp_path):
    """TensorBoard's samples continue the validation text's start; where the character tokenizer cannot
    encode it (its first character is only in the validation tenth), they continue the training text's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.training.causal_lm import train_causal_lm

    train, _ = load_text_corpus("shakespeare")
    path = tmp_path / "text.txt"
    path.write_text(train[:9000] + "é" + train[9000:9999], encoding="utf-8")  # the last tenth starts at "é"
    assert load_text_corpus(str(path))[1].startswith("é")
    config = TrainConfig(task="generate", data=str(path), preset="tiny", run_dir=str(tmp_path / "run"),
                         jit_compile=False)
    train_causal_lm(config, verbose=0)
    run_dir = config.run_dir
    samples = EventAccumulator(os.path.join(run_dir, "logs", "samples"), size_guidance={"tensors": 0})
    samples.Reload()
    text = samples.Tensors("samples")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```\n" + train[:4]), text


@pytest.mark.slow
def test_causal_pretraining_reads_documents_and_its_run_generates_and_explains(tmp_path, capsys):
    """`tfllm pretrain --objective causal`: --max-rows counts documents (it cut characters), the TensorBoard
    samples find a prompt a 50-character vocabulary can encode (Chinese text: the validation and training
    starts cannot be), and the run is a text generator for generate, explain and fine-tuning."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.cli import main
    from tfllm.datasets.text import load_documents

    run_dir = tmp_path / "zh"
    assert main(["pretrain", "--objective", "causal", "--data", "zh_news", "--max-rows", "300", "--preset", "tiny",
                 "--no-jit-compile", "--run-dir", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert f"tfllm train --task generate --from-preset {run_dir}" in captured.out
    # 50 tokens keep few of the news' characters: most targets are [UNK] (a perplexity of 5 and no word, before).
    assert "of the tokens of the training text are [UNK]" in captured.err, captured.err
    assert "Raise vocabulary_size with --set vocabulary_size=N (now 50)." in captured.err
    _, val_docs = load_documents("zh_news", val_fraction=0.1, max_rows=300)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["num_tokens"] == len("\n".join(val_docs))
    samples = EventAccumulator(str(run_dir / "logs" / "samples"), size_guidance={"tensors": 0})
    samples.Reload()
    assert len(samples.Tensors("samples")) == metrics["epochs_run"]
    assert main(["explain", str(run_dir), "的", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tokens"]
    # evaluate --data reads a folder of .txt files as pretraining does (it was refused as not one file).
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(val_docs[:3]), encoding="utf-8")
    (folder / "b.txt").write_text("\n".join(val_docs[3:6]), encoding="utf-8")
    assert main(["evaluate", str(run_dir), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["num_tokens"] == len("\n".join(val_docs[:6]))
    # export takes it as the text generator it is (both formats said it "holds a pretrained model, not ... a
    # text generator"); the TFLite parity prompt comes from its validation documents, read as pretraining read them.
    assert main(["export", str(run_dir), "--name", "zh", "--base-dir", str(tmp_path / "savedmodels")]) == 0
    assert (tmp_path / "savedmodels" / "zh" / "1" / "saved_model.pb").is_file()
    assert main(["export", str(run_dir), "--format", "tflite", "--out", str(tmp_path / "lite")]) == 0
    assert json.loads((tmp_path / "lite" / "metadata.json").read_text())["task"] == "generate"
    assert main(["generate", "--tflite", str(tmp_path / "lite"), "的", "--max-new-tokens", "5"]) == 0
    # Fine-tuned on text its 50 Chinese characters do not cover, it says so: the run trained on [UNK] in silence,
    # then `generate` refused every prompt of that text as holding characters "the tokenizer never saw".
    capsys.readouterr()
    assert main(["train", "--task", "generate", "--data", "shakespeare", "--max-rows", "3000", "--from-preset",
                 str(run_dir), "--steps", "2", "--no-jit-compile", "--run-dir", str(tmp_path / "ft")]) == 0
    assert "tokens of the training text are unknown to the tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_stopped_after_its_training_reports_the_speed_its_training_measured(tmp_path, monkeypatch):
    """A stop after `fit` had ended (here in the final evaluation) resumes without training again; its
    metrics.json then had null speed figures (the resume's fit timed no step). Now the training's."""
    from tfllm.training import causal_lm

    timers = []

    class Timer(causal_lm.StepTimer):
        def __init__(self):
            super().__init__()
            timers.append(self)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    evaluate = causal_lm.evaluate_loss
    monkeypatch.setattr(causal_lm, "StepTimer", Timer)
    monkeypatch.setattr(causal_lm, "evaluate_loss", stopped)
    config = TrainConfig(task="generate", data="shakespeare", preset="tiny", run_dir=str(tmp_path / "run"),
                         max_rows=6000, jit_compile=False)
    with pytest.raises(KeyboardInterrupt):
        causal_lm.train_causal_lm(config, verbose=0)
    monkeypatch.setattr(causal_lm, "evaluate_loss", evaluate)
    causal_lm.train_causal_lm(config, verbose=0)
    run_dir = config.run_dir
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "tfllm", "recipe.json")) as f:
        per_call = json.load(f).get("steps_per_execution", 1)
    ms_per_step = round(float(np.median(timers[0].step_seconds)) / per_call * 1000, 2)
    assert timers[0].step_seconds and not timers[1].step_seconds  # the resume trained no step
    assert metrics["speed"]["ms_per_step"] == ms_per_step and metrics["speed"]["tokens_per_second"] > 0
    assert metrics["epochs_run"] == 2 and metrics["steps"] == 40


@pytest.mark.parametrize("command", [["pretrain", "--objective", "mlm"], ["pretrain", "--objective", "causal"],
                                     ["pretrain", "--objective", "vectors"], ["train", "--task", "generate"]])
def test_a_text_column_given_with_text_that_has_no_columns_is_refused(tmp_path, capsys, command):
    """--text-column on a .txt file, a folder of them or a bundled corpus was accepted and ignored (every
    line read as a document all the same)."""
    from tfllm.cli import main

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n".join(f"line {i} of a small text to read" for i in range(40)) + "\n")
    steps = [] if "vectors" in command else ["--steps", "2"]  # vectors train no step (and refuse --steps)
    for data in (corpus / "a.txt", corpus, "shakespeare"):
        assert main([*command, "--data", str(data), "--text-column", "body", "--preset", "tiny", *steps,
                     "--run-dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "--text-column 'body'" in err and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def small_text_run(tmp_path_factory):
    """`(text file, run_dir, stdout, stderr)` of one `tfllm train --task generate` (in this process) of 2 steps
    on a small text file with `--set vocabulary_size=30`, trained once for the three tests below that read what
    it printed and wrote: no speed for a run too short to time, what text it reads and its splits' tokens, and
    the characters its vocabulary leaves out."""
    import contextlib
    import io

    from tfllm.cli import main

    base = tmp_path_factory.mktemp("small_text_run")
    text = base / "corpus.txt"
    # 30 tokens leave out the rarer characters (some digits): a few percent, below the 5% warned of before.
    text.write_text("".join(f"line {i} of a small text to read, and then some more words\n"
                            for i in range(400)), encoding="utf-8")
    run_dir = base / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "--task", "generate", "--data", str(text), "--preset", "tiny", "--steps", "2",
                     "--set", "vocabulary_size=30", "--no-jit-compile", "--run-dir", str(run_dir)])
    assert code == 0, err.getvalue()
    return text, run_dir, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_a_run_too_short_to_time_prints_no_speed(small_text_run):
    """Too few steps to time (2): metrics.json's speed is null, and the last line said "None tokens/s"."""
    _, run_dir, out, _ = small_text_run
    assert json.loads((run_dir / "metrics.json").read_text())["speed"]["tokens_per_second"] is None
    line = next(line for line in out.splitlines() if line.startswith("val loss"))
    assert "None" not in line and "tokens/s" not in line and line.endswith(f"-> {run_dir}")


@pytest.mark.slow
def test_a_causal_run_says_what_text_it_reads_and_how_many_tokens_each_split_has(small_text_run):
    """A 50 MB file was ~35 s of reading and tokenizing without a word, no line gave the data's size or
    split, and the final validation's cost (every validation token, whatever the steps) was unsaid."""
    text, run_dir, out, _ = small_text_run
    lines = out.splitlines()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert lines[0].startswith(f"Text: {str(text)!r} (0.0 MB), ") and "validation characters" in lines[0], lines
    assert lines[0].endswith("tokenizing it ...")
    assert lines[1].startswith("Tokens: ") and f"{metrics['val']['num_tokens']:,} validation;" in lines[1], lines
    assert "the final validation, after training, scores all" in lines[1]


@pytest.mark.parametrize("objective", ["mlm", "vectors"])
def test_max_rows_1_is_named_when_it_leaves_too_few_documents(tmp_path, capsys, objective):
    """--max-rows 1 of a corpus of thousands: the message said the corpus had 1 document. (The causal objective
    splits a single document by characters, as `train --task generate` splits a text file: one row trains.)"""
    from tfllm.cli import main

    assert main(["pretrain", "--objective", objective, "--data", "rotten_tomatoes", "--max-rows", "1", "--preset",
                 "tiny", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--max-rows 1" in err and "has 1 non-empty" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_text_cut_too_short_by_max_rows_names_max_rows(tmp_path, capsys):
    """--max-rows 10 of shakespeare: the message said to use more text, not that --max-rows had cut it."""
    from tfllm.cli import main

    assert main(["train", "--task", "generate", "--data", "shakespeare", "--max-rows", "10", "--preset", "tiny",
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "raise --max-rows 10" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_one_beam_is_greedy_and_beams_never_choose_special_tokens():
    """Beam search chose [UNK] and [PAD], which the text then dropped: one beam was not greedy, and fewer
    tokens came back than asked for (7 newlines for 10)."""
    generator = tiny_generator()
    generator.model.backbone.token_embedding.embeddings.assign(  # every token as likely: the first max is [PAD]
        generator.model.backbone.token_embedding.embeddings.numpy() * 0.0 + 0.01)
    greedy = generator.generate(["First"], 20, sampler="greedy")
    assert generator.generate(["First"], 20, sampler="beam", num_beams=1) == greedy
    for beams in (1, 3):
        ids = generator._run(generator._function("beam", beams, (generator.end_id,)), [generator.encode("First")], 25,
                             {})[0]
        chosen = generator._cut(ids[5:], (generator.end_id,))  # after the end token: padding, not chosen
        assert not set(chosen.tolist()) & set(generator.banned_ids), ids


@pytest.mark.slow
def test_beam_search_in_a_padded_buffer_decodes_what_it_decodes_unpadded():
    """Beam search's buffer is padded to the export's buckets (so a notebook's next prompt length or
    max_new_tokens reuses the compiled program) and decoded only up to `length`: the same beams as over the
    unpadded buffer, for prompts of different lengths in one batch, with the end token and
    a stop string's token as stops."""
    from tfllm.generation import BeamSearch, generate_step

    generator = tiny_generator()
    prompts = [generator.encode(p) for p in ("First", "Fi", "Befor")]
    width = 5 + 6
    ids = np.zeros([3, width], "int32")
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = p
    inputs = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(ids != 0)}
    for beams in (2, 4):
        for stop in ((generator.end_id,), (generator.end_id, int(generator.encode(" ")[0]))):
            ours = generator._run(generator._function("beam", beams, stop), prompts, width, {})
            assert ours.shape == (3, width)
            unpadded = generate_step(generator.model, inputs, list(stop),
                                     BeamSearch(beams, generator.banned_ids))["token_ids"]
            np.testing.assert_array_equal(ours, unpadded)


def test_join_cjk_joins_cjk_characters_and_keeps_spaces_next_to_latin_words():
    """The rule that undoes WordPiece's spaces in Chinese (tfllm.config.join_cjk), in Python and as the TF op."""
    import re

    from tfllm.config import CJK_CLASS, CJK_RANGES, join_cjk
    from tfllm.tokenizers import join_cjk_op

    cases = {"中 文": "中文", "中 国 人 民": "中国人民", "中 ， 文": "中，文", "「 你 好 」 。 ！": "「你好」。！",
             "（ 中 ） ： ；": "（中）：；", "hello world": "hello world",
             "中 hello 文": "中 hello 文",  # a space between an ideograph and a Latin word stays
             "中 hello world 文 。": "中 hello world 文。", "hello 。": "hello 。", "中  文": "中  文",
             "𠀀 中 豈": "𠀀中豈", "": ""}
    assert {text: join_cjk(text) for text in cases} == cases
    # The TF op reads the same pattern with RE2: it agrees with Python's re, in and out of a graph, on the cases
    # and on characters spread over every range.
    spread = [" ".join(chr(c) for c in range(low, high + 1, max(1, (high - low) // 9))) for low, high in CJK_RANGES]
    sample = list(cases) + spread + [" ".join(spread) + " a b"]
    expected = [join_cjk(text) for text in sample]
    assert [t.decode() for t in join_cjk_op(tf.constant(sample)).numpy()] == expected
    assert [t.decode() for t in tf.function(join_cjk_op)(tf.constant(sample)).numpy()] == expected
    # The explicit ranges hold every character of RE2's \p{Han} (what translation's rule matched), on a sample.
    characters = [chr(c) for c in range(0x2E00, 0x32400, 7) if not 0xD800 <= c < 0xE000]  # no surrogates
    han = tf.strings.regex_full_match(tf.constant(characters), r"\p{Han}").numpy()
    assert han.sum() > 1000
    assert all(re.fullmatch(CJK_CLASS, c) for c, is_han in zip(characters, han) if is_han)
    assert not any(re.fullmatch(CJK_CLASS, c) for c in "aZ9 ,.!?-éßπж")


def _cjk_gaps(text):
    import re

    from tfllm.config import CJK_SPACE

    return re.findall(CJK_SPACE, text)


def test_only_a_wordpiece_tokenizers_text_loses_its_spaces_between_chinese_characters():
    from lm_utils import MIXED_TEXT, tiny_wordpiece_generator

    from tfllm.generation import Generator
    from tfllm.models.causal_lm import CausalLMPreprocessor
    from tfllm.tokenizers import CharacterTokenizer, train_tokenizer

    generator = tiny_wordpiece_generator()
    tokenizer = generator.tokenizer
    ids = np.asarray(tokenizer.tokenize("中国，你好 hello world 中 hello 好「你」")).tolist()
    assert _cjk_gaps(str(tokenizer.detokenize(np.asarray([ids]))[0]))  # the detokenizer's own spaces
    expected = "中国，你好 hello world 中 hello 好「你」"  # Latin words keep theirs
    assert generator.decode(ids) == expected
    preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=32)
    assert preprocessor.generate_postprocess({"token_ids": np.asarray([ids]),
                                              "padding_mask": np.ones([1, len(ids)], bool)}) == [expected]
    # Character and SentencePiece tokenizers give back the text's own spaces: left as they are.
    for other in (CharacterTokenizer(vocabulary=sorted(set("中国 你好"))),
                  train_tokenizer([MIXED_TEXT] * 20, "sentencepiece", 60, lowercase=False)):
        ids = np.asarray(other.tokenize("中 国 你 好")).tolist()
        assert Generator(generator.model, other, jit_compile=False).decode(ids) == "中 国 你 好"
        preprocessor = CausalLMPreprocessor(other, sequence_length=8)
        assert preprocessor.generate_postprocess({"token_ids": np.asarray([ids]),
                                                  "padding_mask": np.ones([1, len(ids)], bool)}) == ["中 国 你 好"]


@pytest.mark.slow
def test_a_wordpiece_generator_joins_chinese_characters_in_every_path(tmp_path, capsys):
    """`中国和 党 伟 。`: WordPiece's detokenizer put a space between every two Chinese characters in generate(),
    `tfllm generate` and KerasHub's generate() of a run."""
    import re

    import keras_hub
    from lm_utils import tiny_wordpiece_generator

    from tfllm.cli import main
    from tfllm.config import CJK_CLASS
    from tfllm.generation import generate

    from tfllm.generation import STREAM_CHUNK

    generator = tiny_wordpiece_generator()
    options = dict(sampler="random", temperature=1.5, seed=3)
    # Two streamed chunks for both prompts (the first adds at most the window (16) + STREAM_CHUNK less the
    # prompt's 1-2 tokens), whose texts meet where the second starts.
    length = STREAM_CHUNK + 26
    one_call = generator.generate(["中国", "hello"], length, **options)
    pieces = []
    streamed = generator.generate(["中国", "hello"], length, stream_callback=lambda i, t: pieces.append((i, t)),
                                  **options)
    # Streaming decodes all new ids again for each chunk: its chunks add up to one call's text.
    assert streamed == one_call and "".join(t for i, t in pieces if i == 0) == one_call[0]
    assert all(re.search(f"{CJK_CLASS}{{2}}", t) and not _cjk_gaps(t) for t in one_call)
    # A run directory: tfllm.generation.generate, `tfllm generate` and KerasHub's own generate().
    run_dir = write_run_dir(generator, tmp_path / "run")
    texts = generate(run_dir, ["中国"], 20, **options)
    assert not _cjk_gaps(texts[0]) and re.search(f"{CJK_CLASS}{{2}}", texts[0])
    capsys.readouterr()
    assert main(["generate", run_dir, "中国", "--max-new-tokens", "20", "--sampler", "random", "--temperature", "1.5",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == "中国" + texts[0]
    from_preset = keras_hub.models.CausalLM.from_preset(run_dir).generate("中国 你", max_length=12)
    assert from_preset.startswith("中国你") and not _cjk_gaps(from_preset)



def test_wordpiece_completion_rule_in_python_and_tf_agree():
    """The space before a WordPiece completion's first word (`tfllm.config.wordpiece_completion`), in Python and
    as the TF op the SavedModel runs: the same patterns, the same text."""
    import re

    from tfllm.config import SPACE_CLASS, is_suffix_piece, wordpiece_completion
    from tfllm.tokenizers import wordpiece_completion_op

    cases = {("the king", "uke", True): " uke", ("the king", "k", False): "k", ("the king ", "uke", True): "uke",
             ("the king\n", ", ,", True): ", ,", ("the king", ", , ,", True): " , , ,", ("中国", "人民", True): "人民",
             ("中国", "hello", True): " hello", ("hello", "中国", True): " 中国", ("中国。", "「你", True): "「你",
             ("中国", "，", True): "，", ("the king\u3000", "人", True): "人", ("", "uke", True): "uke",
             ("the king", "", True): "", ("中", "x", False): "x", ("𠀀", "豈", True): "豈", ("中", "a", True): " a"}
    assert {case: wordpiece_completion(*case) for case in cases} == cases
    assert [is_suffix_piece(t) for t in ("##k", "##", "k", "#", "###")] == [True, False, False, False, True]
    # "Whitespace" is what str.isspace() says, written as the literal characters RE2 reads too.
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    assert [chr(c) for c in range(0x3001) if re.fullmatch(SPACE_CLASS, chr(c))] == spaces
    sample = list(cases) + [("a" + s, c, True) for s in spaces for c in ("b", "中")] + [("中" + s, "国", True) for s in spaces]
    prompts, completions, whole = (tf.constant(list(column)) for column in zip(*sample))
    expected = [wordpiece_completion(*case) for case in sample]
    assert [t.decode() for t in wordpiece_completion_op(prompts, completions, whole).numpy()] == expected
    assert [t.decode() for t in tf.function(wordpiece_completion_op)(prompts, completions, whole).numpy()] == expected


def test_a_wordpiece_completion_carries_the_space_before_its_first_word():
    """`the king` + `uke` printed `the kinguke`: the new ids were detokenized alone and joined to the prompt.
    The prompt + the completion is now the whole sequence's text, for every token that could come first."""
    from lm_utils import MIXED_TEXT, tiny_wordpiece_generator

    from tfllm.generation import Generator
    from tfllm.tokenizers import CharacterTokenizer, train_tokenizer

    generator = tiny_wordpiece_generator()
    tokenizer = generator.tokenizer

    def ids(text):
        return np.asarray(tokenizer.tokenize(text)).tolist()

    assert generator.decode(ids("world"), "hello") == " world"
    assert generator.decode(ids("world"), "hello \n") == "world"
    assert generator.decode(ids("人民"), "中国") == "人民" and generator.decode(ids("hello"), "中国") == " hello"
    assert generator.decode(ids("world")) == "world"  # without a prompt: the text of the ids alone
    vocabulary = tokenizer.get_vocabulary()
    assert generator.decode([vocabulary.index("##k")], "the kin") == "k"
    ordinary = [i for i in range(tokenizer.vocabulary_size()) if i not in generator.special_ids]
    for prompt in ("hello", "中国", "the bank ,", "中国。"):
        assert generator.decode(ids(prompt)) == prompt
        for i in ordinary:
            completion = generator.decode([i, ordinary[-1]], prompt)
            assert prompt + completion == generator.decode(ids(prompt) + [i, ordinary[-1]]), (prompt, completion)
            cjk = prompt[-1] >= "\u3000" and completion[:1] >= "\u3000"
            assert completion.startswith(" ") == (not vocabulary[i].startswith("##") and not cjk), (prompt, completion)
    # Character text carries its own spaces: a prompt changes nothing. SentencePiece's too, but for the space of
    # a first piece's leading "\u2581", which its detokenizer drops at a text's start (it glued "ab" + "b").
    characters = Generator(generator.model, CharacterTokenizer(vocabulary=sorted(set("中国 你好ab"))), jit_compile=False)
    pieces = Generator(generator.model, train_tokenizer([MIXED_TEXT] * 20, "sentencepiece", 60, lowercase=False),
                       jit_compile=False)
    for text in ("中国你好", " 你好", "a b"):
        other_ids = np.asarray(characters.tokenizer.tokenize(text)).tolist()
        assert characters.decode(other_ids, "ab") == characters.decode(other_ids), text
        other_ids = np.asarray(pieces.tokenizer.tokenize(text)).tolist()
        whole = pieces.decode(np.asarray(pieces.tokenizer.tokenize("ab")).tolist() + other_ids)
        assert "ab" + pieces.decode(other_ids, "ab") == whole, text
        assert pieces.decode(other_ids, "ab ") == pieces.decode(other_ids, "") == pieces.decode(other_ids), text


def test_a_keras_hub_wordpiece_completion_joins_a_suffix_piece_without_its_indicator():
    """A generator over KerasHub's own WordPiece tokenizer (a preset's `BertTokenizer`, not tfllm's) printed
    `the kin##k` where its first new piece was "##k": KerasHub's detokenizer keeps the indicator on a text's first
    piece. `Generator.decode` (`tfllm generate`, `tfllm.generate`, streamed chunks) and the SavedModel's op drop it."""
    import keras_hub
    from lm_utils import tiny_wordpiece_generator

    from tfllm.generation import Generator
    from tfllm.tokenizers import keeps_leading_suffix, without_leading_suffix_op

    own = tiny_wordpiece_generator()
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + own.tokenizer.get_vocabulary()[5:]
    hub = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=False)
    generator = Generator(own.model, hub, jit_compile=False)
    assert keeps_leading_suffix(hub) and not keeps_leading_suffix(own.tokenizer)
    k, a, bare = vocabulary.index("##k"), vocabulary.index("a"), vocabulary.index(",")
    for decoder in (generator, own):
        assert decoder.decode([k], "the kin") == "k"
        assert decoder.decode([k, a], "the kin") == "k a"
        assert decoder.decode([a, k], "the kin") == " ak"  # a whole first word keeps its space
    # The SavedModel's completion (tfllm.export.causal_lm) strips it by the same rule.
    completions = tf.constant(["##k", "##k a", "## a", ""])
    whole_word = tf.constant([False, False, True, False])
    assert [t.decode() for t in without_leading_suffix_op(completions, whole_word, "##").numpy()] == \
        ["k", "k a", "## a", ""]


@pytest.mark.slow
def test_a_wordpiece_generators_completion_follows_its_prompt_in_every_path(tmp_path, capsys):
    """`tfllm generate runs/wp "the king"` printed `the kinguke` (the whole text is `the king uke`): the same
    completion, with its space, from Generator.generate (streamed or not), tfllm.generation.generate and the CLI."""
    from lm_utils import tiny_wordpiece_generator

    from tfllm.cli import main
    from tfllm.generation import generate

    generator = tiny_wordpiece_generator()
    for prompt in ("hello", "中国", "hello world ,"):
        greedy = generator.generate([prompt], 8, sampler="greedy")[0]
        new = generator.greedy_ids(generator.encode(prompt), 8)
        assert prompt + greedy == generator.decode(generator.encode(prompt).tolist() + new), (prompt, greedy)
    prompts = ["hello"] * 6 + ["中国", "hello "]
    options = dict(sampler="random", temperature=1.5, seed=7)
    one_call = generator.generate(prompts, 12, **options)
    assert any(c.startswith(" ") for c in one_call[:6]) and not one_call[-1].startswith(" ")
    pieces = []
    streamed = generator.generate(prompts, 12, stream_callback=lambda i, t: pieces.append((i, t)), **options)
    assert streamed == one_call
    assert ["".join(t for i, t in pieces if i == row) for row in range(len(prompts))] == one_call
    run_dir = write_run_dir(generator, tmp_path / "run")
    texts = generate(run_dir, prompts, 12, **options)
    assert texts == one_call
    for row in range(6):
        capsys.readouterr()
        assert main(["generate", run_dir, "hello", "--max-new-tokens", "12", "--sampler", "random",
                     "--temperature", "1.5", "--seed", str(7 + row)]) == 0
        assert capsys.readouterr().out == "hello" + texts[row] + "\n"


def _end_token_likeliest(end_token_trained):
    """A tiny real model whose likeliest next token is always the end token (the final layer norm's output is one
    vector v, the end token's tied embedding 100 v); its record says whether training targets held the end token."""
    from tfllm.generation import Generator
    from tfllm.tokenizers import CharacterTokenizer
    from lm_utils import TEXT

    tokenizer = CharacterTokenizer(vocabulary=sorted(set(TEXT)))
    model = tiny_lm(tokenizer.vocabulary_size())
    model.end_token_trained = end_token_trained
    backbone, end_id = model.backbone, int(tokenizer.end_token_id)
    v = np.random.default_rng(0).normal(size=backbone.hidden_dim).astype("float32")
    backbone.layer_norm.gamma.assign(np.zeros_like(v))
    backbone.layer_norm.beta.assign(v)
    table = backbone.token_embedding.embeddings.numpy()
    table[end_id] = 100 * v
    backbone.token_embedding.embeddings.assign(table)
    return Generator(model, tokenizer, jit_compile=False)


@pytest.mark.slow
def test_a_model_never_trained_on_the_end_token_never_stops_early_in_any_runtime(tmp_path):
    """A generator trained on running text (no end token in its targets: tour G, bundled shakespeare) sampled the
    end token by its leftover probability and stopped far short of --max-new-tokens (1,981 of 3,000 characters)
    without a word. Such a model (`end_token_trained` False, every tfllm run's record) never emits it: the
    Python loop, the NumPy path, the SavedModel and the TFLite metadata's banned ids all give every token asked
    for, here where the end token is the likeliest one at every step."""
    from tfllm import fast_generation
    from tfllm.export.causal_lm import generation_archive

    generator = _end_token_likeliest(end_token_trained=False)
    end_id = generator.end_id
    logits = keras.ops.convert_to_numpy(generator.model(_inputs([generator.encode("First")])))[0, -1]
    assert int(np.argmax(logits)) == end_id  # greedy decoding without the ban ends at once
    assert end_id in generator.banned_ids
    for options in (dict(sampler="greedy"), dict(sampler="top_k", seed=3), dict(sampler="top_p", seed=3),
                    dict(sampler="beam", num_beams=2)):
        texts = generator.generate(["First", "hear"], 12, **options)
        assert [len(t) for t in texts] == [12, 12], options  # one character a token
    streamed = []
    generator.generate(["First"], 80, sampler="top_k", seed=3, stream_callback=lambda i, t: streamed.append(t))
    assert len("".join(streamed)) == 80
    fast = fast_generation.from_keras(generator.model, generator.tokenizer)
    assert fast.generate("First", 12, *fast_generation.sampler_options("top_k", 1.0, 5, 1.0), 3) == \
        generator.generate(["First"], 12, sampler="top_k", top_k=5, temperature=1.0, seed=3)[0]
    def exported(generator, name):  # the SavedModel's greedy signature, reloaded as a server loads it
        generation_archive(generator.model, generator.tokenizer, jit_compile=False).write_out(
            str(tmp_path / name), verbose=False)
        greedy = tf.saved_model.load(str(tmp_path / name)).signatures["greedy"]
        return greedy(prompt=tf.constant(["First"]), max_new_tokens=tf.constant([12]))["completion"].numpy()[0].decode()

    served = exported(generator, "bans")
    assert served == generator.generate(["First"], 12, sampler="greedy")[0] and len(served) == 12

    # A model whose training targets held the end token (a document-per-row corpus that ends each with it) may
    # stop there, in every runtime alike.
    stopping = _end_token_likeliest(end_token_trained=True)
    assert end_id not in stopping.banned_ids
    assert stopping.generate(["First"], 12, sampler="greedy") == [""]
    assert stopping.generate(["First"], 12, sampler="top_k", temperature=0.1, seed=1) == [""]
    fast = fast_generation.from_keras(stopping.model, stopping.tokenizer)
    assert fast.generate("First", 12, *fast_generation.sampler_options("greedy", 1.0, 0, 1.0), 0) == ""


def test_the_end_token_is_recorded_as_trained_only_where_a_target_held_it(tmp_path):
    """`train_causal_lm` records in task.json whether the end token was ever a next-token target (running text:
    never); a run loaded, also one saved before the record (no key), reads False and bans the end token."""
    from tfllm.models.causal_lm import CausalLM
    from tfllm.training.causal_lm import end_token_trained

    assert not end_token_trained(np.array([3, 5, 6, 7]), 3)  # the first id is no target
    assert end_token_trained(np.array([5, 6, 3, 7]), 3)
    assert end_token_trained(np.array([3, 5, 6]), 3, start_ids=[2])  # after a start token, every id is one
    generator = tiny_generator()
    assert generator.model.get_config()["end_token_trained"] is False
    config = generator.model.get_config()
    del config["end_token_trained"]  # an older run's task.json
    assert CausalLM.from_config(config).end_token_trained is False
    config["end_token_trained"] = True
    assert CausalLM.from_config(config).end_token_trained is True
    run_dir = write_run_dir(generator, tmp_path / "run")
    loaded = load_generator(run_dir, jit_compile=False)
    assert loaded.end_id in loaded.banned_ids


@pytest.mark.slow
@pytest.mark.parametrize("window_keep", [None, 5])
def test_a_prompt_many_windows_long_decodes_as_the_whole_buffer_did_from_only_the_tokens_it_reads(window_keep):
    """A long prompt was decoded in a buffer as wide as itself (a 60,000-character prompt: 8 s for 4 tokens);
    now from its last `window_keep + 1` tokens (`unread_prefix`), with the same text, sampled and greedy."""
    from lm_utils import TEXT

    from tfllm.generation import Generator, decode_function, unread_prefix
    from tfllm.tokenizers import CharacterTokenizer

    assert [int(unread_prefix(n, 8, 5)) for n in (1, 8, 9, 100)] == [0, 0, 3, 94]
    tokenizer = CharacterTokenizer(vocabulary=sorted(set(TEXT)))
    generator = Generator(tiny_lm(tokenizer.vocabulary_size(), 8, window_keep=window_keep), tokenizer, jit_compile=False)
    prompt = TEXT * 3  # 20 windows
    ids = generator.encode(prompt)
    decode = decode_function(generator.model, (generator.end_id,), jit_compile=False, banned_token_ids=generator.banned_ids)
    for temperature, seed in ((0.0, 0), (1.0, 3)):
        whole = decode({"token_ids": np.concatenate([ids, np.zeros(6, "int32")])[None],
                        "padding_mask": (np.arange(len(ids) + 6) < len(ids)).astype("int32")[None],
                        "temperature": np.float32([temperature]), "top_k": np.int32([0]), "top_p": np.float32([1.0]),
                        "seed": np.int32([seed])})
        expected = generator.decode(np.asarray(whole)[0, len(ids):], prompt)
        seed = seed if temperature else None  # a seed at temperature 0 (greedy) is refused: it is not read
        assert generator.generate([prompt], 6, sampler="random", temperature=temperature, seed=seed) == [expected]


@pytest.mark.slow
def test_the_exported_generator_says_what_to_send_for_a_new_document(tmp_path):
    """`tfllm generate RUN ""` starts a new document; the SavedModel refused "" with "prompt must not be empty"
    and no word of the separator a client sends instead."""
    from tfllm.export.causal_lm import generation_archive

    generator = tiny_generator()
    generation_archive(generator.model, generator.tokenizer, jit_compile=False,
                       document_start="\n\n").write_out(str(tmp_path / "export"), verbose=False)
    greedy = tf.saved_model.load(str(tmp_path / "export")).signatures["greedy"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="send what separates the training documents: a blank line"):
        greedy(prompt=tf.constant([""]), max_new_tokens=tf.constant([3]))


@pytest.mark.slow
def test_a_generator_run_names_the_text_its_vocabulary_leaves_out(small_text_run):
    """A vocabulary_size below the corpus's characters trained in silence, and `tfllm generate` then refused
    prompts holding the characters left out: the run now says what share of its text is [UNK], and which."""
    _, run_dir, _, err = small_text_run
    line = next(line for line in err.splitlines() if "are [UNK]" in line)
    assert "of the tokens of the training text are [UNK] ('" in line and "tfllm generate refuses prompts" in line
    assert "--set vocabulary_size=N (now 30)" in line
    from tfllm.tokenizers import load_tokenizer

    vocabulary = set(load_tokenizer(str(run_dir)).get_vocabulary())
    named = line.split("[UNK] (", 1)[1].split("):", 1)[0].removesuffix(", ...").split(", ")
    assert named and all(len(c) == 3 and c[1] not in vocabulary for c in named)  # each one a character left out


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["causal", "mlm"])
def test_pretrain_verbose_0_prints_nothing_and_notes_are_warnings(tmp_path, capfd, objective):
    """`pretrain(objective="causal", verbose=0)` did not pass verbose on (Keras' bars and tfllm's lines printed,
    in the command's spelling: "cut by --max-rows"); the masked LM printed "Masked-LM pretraining on ..." and
    its long-document note to stderr as `--set sequence_length`, which a notebook could not filter."""
    from tfllm.errors import TfllmWarning
    from tfllm.training.pretraining import pretrain

    config = TrainConfig(task="pretrain", objective=objective, data="rotten_tomatoes", preset="tiny", max_rows=300,
                         steps=2, jit_compile=False, run_dir=str(tmp_path / "run"), overrides={"sequence_length": 8})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(config, verbose=0)
    captured = capfd.readouterr()
    assert captured.out == "" and "tfllm" not in captured.err and "--" not in captured.err, captured
    notes = [str(w.message) for w in caught if issubclass(w.category, TfllmWarning)]
    if objective == "mlm":  # reviews are longer than a window of 6 tokens
        assert any("overrides={'sequence_length': N}" in n and "never read" in n for n in notes), notes
