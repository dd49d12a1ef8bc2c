"""Helpers for the causal-LM tests: a tiny untrained generator and run directory."""

import os

import keras

from tfllm.config import TrainConfig
from tfllm.models.causal_lm import CausalLM
from tfllm.tokenizers import CharacterTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def tiny_lm(vocabulary_size=30, sequence_length=8, window_keep=None, seed=0, use_bias=False):
    """`use_bias=False` (tfllm's FusedDecoderBlock) is what the presets build; True is KerasHub's TransformerDecoder."""
    keras.utils.set_random_seed(seed)
    return CausalLM.from_args(
        vocabulary_size=vocabulary_size, sequence_length=sequence_length, hidden_dim=16,
        num_layers=2, num_heads=2, intermediate_dim=32, window_keep=window_keep, use_bias=use_bias,
    )


def tiny_generator(sequence_length=8, jit_compile=False):
    """An untrained model over TEXT's characters: varied (random) greedy output, no training time."""
    from tfllm.generation import Generator

    tokenizer = CharacterTokenizer(vocabulary=sorted(set(TEXT)))
    model = tiny_lm(tokenizer.vocabulary_size(), sequence_length)
    return Generator(model, tokenizer, jit_compile=jit_compile)


def write_run_dir(generator, run_dir):
    """A run directory as `train_causal_lm` leaves it (a KerasHub preset + tfllm's records), without training."""
    from tfllm.models.causal_lm import CausalLMPreprocessor

    model = generator.model
    model.preprocessor = CausalLMPreprocessor(generator.tokenizer, sequence_length=model.sequence_length)
    model.save_to_preset(str(run_dir))
    write_records(run_dir, "generate")
    return str(run_dir)


def write_records(run_dir, task):
    """tfllm's records of a finished run of `task` (the preset files are the caller's)."""
    from tfllm import runs

    os.makedirs(run_dir, exist_ok=True)
    TrainConfig(task=task, data="shakespeare", preset="tiny", run_dir=str(run_dir)).to_json(runs.path(run_dir, runs.RUN_CONFIG))
    runs.write_json(runs.path(run_dir, runs.RECIPE), {})
    runs.write_json(runs.path(run_dir, runs.METRICS), {})
    if not os.path.exists(runs.path(run_dir, runs.TASK_CONFIG)):  # records only: a stand-in preset
        runs.write_json(runs.path(run_dir, runs.TASK_CONFIG), {})
        runs.write_json(runs.path(run_dir, "config.json"), {})
        open(runs.path(run_dir, "model.weights.h5"), "wb").close()
    return str(run_dir)


MIXED_TEXT = "中国人民银行今天发布新的政策。天气很好，我们去公园！「你好」hello world, the bank of china said.\n" * 4


def tiny_wordpiece_generator(sequence_length=16, jit_compile=False):
    """An untrained model over a WordPiece vocabulary of Chinese characters, CJK punctuation and English words."""
    from tfllm.generation import Generator
    from tfllm.tokenizers import train_tokenizer

    tokenizer = train_tokenizer([MIXED_TEXT], "wordpiece", 120, lowercase=False)
    model = tiny_lm(tokenizer.vocabulary_size(), sequence_length)
    return Generator(model, tokenizer, jit_compile=jit_compile)
