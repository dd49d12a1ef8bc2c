"""Named recipes: flat dicts of model constructor arguments plus training settings.

Keys that match a model's constructor go to the model; `learning_rate`,
`batch_size`, `epochs`, `steps`, ... go to training. `resolve_preset` applies a
run's overrides on top, so there is one source of truth for every setting.
"""

import difflib
import math
import numbers

from tfllm.config import TOKENIZER_KINDS
from tfllm.errors import UserInputError

CLASSIFIER_PRESETS = {
    # The article's hyperparameters, as printed.
    "article": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 10000,
        "sequence_length": 100,
        "hidden_dim": 128,
        "num_layers": 2,
        "num_heads": 8,
        "intermediate_dim": 512,
        "dropout": 0.1,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 32,
        "epochs": 10,
        "early_stopping": False,
    },
    # Tuned for quality on ~10k short texts (rotten_tomatoes val split; the sweep is
    # in docs/benchmarks.md): a narrow encoder, heavy word dropout and weight decay, and a
    # bag of hashed bigrams beside the encoder; early stopping keeps the best epoch.
    # Then a naive-Bayes wide path (unigrams + 4M hashed bigram buckets, one float
    # each) is blended in on the val split: test accuracy 0.774 -> 0.784 (mean of 4 seeds).
    # The token embedding starts from word vectors of the texts: 0.786 on all labels (2 seeds,
    # 0.784 without), and what makes few labels pay (docs/benchmarks.md).
    # A character view (hashed character 2-5-grams within words, NB-weighted logistic regression)
    # is blended in too: 0.780 -> 0.788, mean of 4 seeds; and a word view (scikit-learn's words
    # and word bigrams, naive Bayes): -> 0.793 (benchmarks/bench_views.py). Beside those views the
    # big hashed tables stopped earning their size (stop 56): 4,096 bigram embeddings and 262,144
    # wide bigram buckets score 0.794 (4 seeds) in 4.3 MB, against 0.793 in 52 MB with 262,144 and
    # 4,194,304 (and trained in 27-38 s against 130-190 s, in separate runs); with twice the views' buckets, 0.7985 in 6.4 MB
    # (benchmarks/results/classifier.json, benchmarks/probe_hash_buckets.py). Once the blend is fitted, the
    # tables count the val split too (`refit_on_validation`, read by every recipe with a wide path, on unless
    # set false): 0.798 -> 0.801, 8 seeds taking turns (benchmarks/results/classifier_refit.json).
    "default": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 8000,
        "sequence_length": 64,
        "hidden_dim": 32,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_dim": 64,
        "dropout": 0.3,
        "embedding_dropout": 0.5,
        "bigram_buckets": 4096,
        "wide_bigram_buckets": 262144,
        # Primes (the hash is reduced modulo them) and the largest the int32 hash allows: with 262,139 a third
        # of the training split's n-grams shared a bucket, which cost 0.5 points (tfllm.models.text_classifier).
        "char_ngram_buckets": 524287,
        "word_ngram_buckets": 524287,
        # Pretraining, first: PPMI-SVD word vectors of the training (and --unlabeled) texts as the
        # token embedding (tfllm.word_vectors; the settings of `tfllm pretrain --objective vectors`).
        "word_vectors": True,
        "vector_window": 10,
        "vector_context_power": 0.75,
        "vector_norm": 2.0,
        # With --unlabeled: a 3-seed ensemble labels the unlabelled texts (tfllm.training.self_training).
        "self_training_teachers": 3,
        "learning_rate": 2e-3,
        "weight_decay": 0.2,
        "batch_size": 64,
        "epochs": 15,
        "early_stopping": True,
    },
    # Fine-tuning a pretrained backbone (`--from-preset`, the default there): a
    # small learning rate that warms up over the first 10% of steps and decays
    # on a cosine (the BERT recipe), a few epochs, the best-val-loss epoch kept.
    # From scratch it trains a 2-block, 128-wide encoder.
    "finetune": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 8000,
        "sequence_length": 128,
        "hidden_dim": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_dim": 512,
        "dropout": 0.1,
        "learning_rate": 1e-4,
        "warmup_fraction": 0.1,
        "weight_decay": 0.01,
        # >0 trains only the new head for that many epochs first; the run's one warm-up + cosine schedule spans
        # both phases, so the full model trains on its later, lower part (classifier.train_classifier).
        "freeze_epochs": 0,
        "batch_size": 32,
        "epochs": 3,
        "early_stopping": True,
    },
    # For tests and smoke runs: seconds on a CPU.
    "tiny": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 50,
        "sequence_length": 16,
        "hidden_dim": 16,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 16,
        "dropout": 0.0,
        "embedding_dropout": 0.1,
        "bigram_buckets": 64,  # so tests exercise every layer of the default recipe
        "wide_bigram_buckets": 256,
        "char_ngram_buckets": 1009,
        "word_ngram_buckets": 1009,
        "word_vectors": True,
        "vector_window": 4,
        "vector_context_power": 0.75,
        "vector_norm": 1.0,
        "learning_rate": 3e-3,
        "weight_decay": 0.0,
        "batch_size": 16,
        "epochs": 1,
        "early_stopping": False,
    },
}

# The default recipe sized for phones: since stop 56 the default itself (6.4 MB of weights for two
# classes). The name stays so that commands and notebooks that ask for it keep working; PRESET_ALIASES
# says so wherever presets are listed, so nobody picks it as a smaller recipe.
CLASSIFIER_PRESETS["mobile"] = dict(CLASSIFIER_PRESETS["default"])
PRESET_ALIASES = {"classify": {"mobile": "default"}}  # task -> {old name: the preset it is now}

# Text generation (tfllm.models.causal_lm.CausalLM, tfllm.training.causal_lm).
# "vocabulary_size" bounds the tokenizer; the model gets the tokenizer's real size.
_NANOGPT_CPU = {
    # nanoGPT's documented CPU recipe for shakespeare_char, step for step.
    "tokenizer": "char",
    "lowercase": False,
    "vocabulary_size": 512,
    "sequence_length": 64,
    "hidden_dim": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_dim": 512,
    "dropout": 0.0,
    "tie_weights": True,
    # nanoGPT's bias=False: tfllm's FusedDecoderBlock instead of KerasHub's TransformerDecoder,
    # which always has biases; also the faster block here (tfllm/models/causal_lm.py).
    "use_bias": False,
    "batch_size": 12,
    "steps": 2000,
    "learning_rate": 1e-3,
    "min_learning_rate": 1e-4,
    "warmup_steps": 100,
    "beta_1": 0.9,
    "beta_2": 0.99,
    "weight_decay": 0.1,
    "global_clipnorm": 1.0,
    "eval_interval": 250,  # steps per Keras epoch: validation, TensorBoard samples
    "eval_windows": 240,  # validation windows per epoch (nanoGPT: 20 batches of 12)
    # Generation past the 64-token window: re-encode the last 48 tokens, then
    # continue cached (None = re-encode 63 per token, nanoGPT-exact, ~5x slower).
    "window_keep": 48,
    "jit_compile": True,  # XLA train step: 54 vs 75 ms on a 2-core AVX2 EPYC (docs/benchmarks.md, stop 33)
    # Several train steps per call into TensorFlow: 20.8 vs 22.4 ms/step with 8
    # on a quiet machine (benchmarks/bench_generation.py --steps 400), same loss;
    # 50 vs 10 saves another 2% (17.3 vs 17.7 ms/step). It divides eval_interval,
    # as Keras needs. Thread settings (TF_NUM_INTEROP_THREADS=1 etc.) made no difference.
    "steps_per_execution": 50,
}
CAUSAL_LM_PRESETS = {
    "nanogpt-cpu": _NANOGPT_CPU,
    "default": dict(_NANOGPT_CPU),
    # For tests and smoke runs: seconds on a CPU.
    "tiny": dict(
        _NANOGPT_CPU,
        vocabulary_size=50,
        sequence_length=16,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        batch_size=8,
        steps=40,
        learning_rate=1e-2,
        min_learning_rate=1e-3,
        warmup_steps=4,
        eval_interval=20,
        eval_windows=32,
        window_keep=None,
        steps_per_execution=4,  # exercises the multi-step path; divides eval_interval
        # XLA's compile of the train step takes longer than a tiny run's 40 steps (as the tiny translation
        # preset found); `--set jit_compile=true` compiles it as nanogpt-cpu does. docs/benchmarks.md, stop 76.
        jit_compile=False,
    ),
}

# Masked-LM pretraining of an EncoderBackbone (`tfllm pretrain --objective mlm`);
# `--objective causal` uses the generation presets above.
MASKED_LM_PRESETS = {
    "default": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 8000,
        "sequence_length": 128,
        "hidden_dim": 128,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_dim": 512,
        "dropout": 0.1,
        "mask_selection_rate": 0.15,
        "learning_rate": 1e-3,
        "warmup_fraction": 0.06,
        "weight_decay": 0.01,
        "batch_size": 32,
        "steps": 2000,
        "eval_interval": 250,  # steps per Keras epoch: validation, TensorBoard, backup
    },
    "tiny": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 60,
        "sequence_length": 16,
        "hidden_dim": 16,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 16,
        "dropout": 0.0,
        "mask_selection_rate": 0.25,
        "learning_rate": 3e-3,
        "warmup_fraction": 0.1,
        "weight_decay": 0.0,
        "batch_size": 16,
        "steps": 20,
        "eval_interval": 10,
    },
}

# Word-vector pretraining (`tfllm pretrain --objective vectors`, tfllm.word_vectors): the
# encoder has the `default` classifier's shape, so `tfllm train --task classify --preset default
# --from-preset RUN` fine-tunes it with the default recipe; its token embedding holds the vectors.
_ENCODER_SHAPE = ("tokenizer", "vocabulary_size", "sequence_length", "hidden_dim", "num_layers", "num_heads",
                  "intermediate_dim", "dropout", "embedding_dropout")
WORD_VECTOR_PRESETS = {
    "default": dict(
        {k: CLASSIFIER_PRESETS["default"][k] for k in _ENCODER_SHAPE},
        window=10,  # tokens either side that count as context, weighted 1/distance
        context_power=0.75,  # smooths the context distribution of PMI (as word2vec's negative sampling)
        vector_norm=2.0,  # each vector's length in the embedding (1, 2, 4: chosen on the few-label val split)
    ),
    "tiny": dict({k: CLASSIFIER_PRESETS["tiny"][k] for k in _ENCODER_SHAPE}, window=4, context_power=0.75,
                 vector_norm=1.0),
}

# Translation (tfllm.models.seq2seq_lm.Seq2SeqLM, tfllm.training.seq2seq): one tokenizer for
# source and target; "vocabulary_size" bounds it and the model gets its real size.
TRANSLATION_PRESETS = {
    "default": {
        "tokenizer": "wordpiece",  # Chinese one ideograph per token, English words/pieces
        "lowercase": False,  # references keep their case; so do the outputs
        # cedict: every one of its ~12,000 characters, then ~8,000 English or pinyin words and pieces.
        # The decoder's softmax covers only the target side's share (see tokenizers.targets_first).
        "vocabulary_size": 20000,
        "encoder_sequence_length": 16,
        "decoder_sequence_length": 24,
        "hidden_dim": 128,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "intermediate_dim": 256,
        "dropout": 0.1,
        "label_smoothing": 0.1,
        "learning_rate": 1e-3,
        "warmup_fraction": 0.05,
        "weight_decay": 0.01,
        "batch_size": 128,
        "epochs": 6,
        "early_stopping": True,
        # Batches of similar target length without their padding columns (most glosses are a few
        # tokens). Sources stay at full length under XLA, so there are six batch shapes to compile
        # (one per target bucket): 0.135 s a step against 0.196 s without XLA, timed one after the
        # other in one process (docs/benchmarks.md).
        "bucket_by_length": True,
        "jit_compile": True,
    },
    # For tests and smoke runs: seconds on a CPU.
    "tiny": {
        "tokenizer": "char",
        "lowercase": False,
        "vocabulary_size": 100,
        "encoder_sequence_length": 12,
        "decoder_sequence_length": 16,
        "hidden_dim": 16,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 2,
        "intermediate_dim": 32,
        "dropout": 0.0,
        "label_smoothing": 0.0,
        "learning_rate": 1e-2,
        "warmup_fraction": 0.0,
        "weight_decay": 0.0,
        "batch_size": 16,
        "epochs": 2,
        "early_stopping": False,
        "jit_compile": False,
    },
}

PRESETS = {"classify": CLASSIFIER_PRESETS, "generate": CAUSAL_LM_PRESETS, "pretrain": MASKED_LM_PRESETS,
           "vectors": WORD_VECTOR_PRESETS, "translate": TRANSLATION_PRESETS}

# Settings the training code reads (with a default) that no shipped preset sets.
# With every preset's keys they are what `overrides` may name, so a misspelt
# setting is refused instead of silently training with the preset's value.
OPTIONAL_SETTINGS = {
    "classify": {"ema_momentum", "ema_epochs", "jit_compile", "label_smoothing", "lowercase", "embedding_dropout",
                 "bigram_buckets",
                 "wide_bigram_buckets", "self_training_keep", "word_vectors", "vector_window",
                 "lazy_adam",  # AdamW on the embedding rows a batch used (tfllm.training.optimizers)
                 "vector_context_power", "vector_norm",
                 "self_training_teachers", "self_training_rounds",
                 "char_ngram_buckets", "word_ngram_buckets", "char_length",  # views of code points (text_classifier)
                 "balance_classes",  # class_weight "balanced" in fit and in the blend's fit (tfllm.training.classifier)
                 "refit_on_validation"},  # false: the n-gram tables count the training split alone (fit_wide_path)
    "generate": {"activation", "layer_norm_epsilon"},
    "pretrain": {"lowercase", "embedding_dropout", "jit_compile", "epochs"},
    "vectors": {"lowercase"},
    "translate": {"activation", "layer_norm_epsilon", "tie_weights", "reference_separator", "steps_per_execution",
                  "max_train_seconds", "bucket_by_length",
                  "group_sources"},  # a source's rows in one split, scored as one pair (tfllm.datasets.pairs)
}


# Optional settings that are switches, and numbers with an example value (the shipped presets' own
# values tell the kinds of the rest).
OPTIONAL_SWITCHES = {"lazy_adam", "lowercase", "jit_compile", "tie_weights", "bucket_by_length", "word_vectors",
                     "group_sources", "balance_classes", "refit_on_validation"}
OPTIONAL_NUMBERS = {"ema_epochs": 3, "ema_momentum": 0.99, "label_smoothing": 0.1, "char_length": 320}


# Ranges, checked with the kinds: a dropout of 1.5 or a width of 0 would otherwise fail deep inside Keras.
# Every number is at least 0; these are at least 1, fractions below 1, or above 0.
AT_LEAST_ONE = {"batch_size", "epochs", "steps", "hidden_dim", "intermediate_dim", "num_heads", "sequence_length",
                "encoder_sequence_length", "decoder_sequence_length", "vocabulary_size", "eval_interval",
                "eval_windows", "steps_per_execution", "window", "vector_window", "char_length"}
FRACTIONS = {"dropout", "embedding_dropout", "label_smoothing", "mask_selection_rate", "warmup_fraction",
             "ema_momentum", "beta_1", "beta_2"}
POSITIVE = {"learning_rate", "global_clipnorm", "ema_epochs"}
# A generator's smallest window: past a full window it re-encodes the last sequence_length - 1 tokens (or
# window_keep, at most that), none in a window of 1, which crashed its first sample at the end of an epoch.
MIN_GENERATOR_WINDOW = 2


def _range_problem(key, value):
    """What is wrong with a number's value for setting `key`, or None."""
    if key in AT_LEAST_ONE and value < 1:
        return "at least 1"
    if key in FRACTIONS and not 0 <= value < 1:
        return "from 0 up to (not including) 1"
    if key in POSITIVE and value <= 0:
        return "above 0"
    if value < 0:
        return "0 or more"
    return None


def _setting_kind(task, key):
    """"switch", "whole number" or "number" where every shipped value of `key` (or OPTIONAL_SWITCHES) says so."""
    if key in OPTIONAL_SWITCHES:
        return "switch"
    if key in OPTIONAL_NUMBERS:
        return "number"
    values = [preset[key] for preset in PRESETS[task].values() if preset.get(key) is not None]
    if values and all(isinstance(v, bool) for v in values):
        return "switch"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "whole number"
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "number"
    return None


def checked_setting(task, key, value):
    """`value` if it is of the setting's kind (`1e3` for a whole number becomes 1000), else a UserInputError:
    `--set lazy_adam=no` reads as the string "no", which Python would take as true."""
    if key == "tokenizer" and value not in TOKENIZER_KINDS:
        raise UserInputError(f"Setting 'tokenizer' takes one of {', '.join(TOKENIZER_KINDS)}; got {value!r}.")
    kind = _setting_kind(task, key)
    if kind == "switch" and not isinstance(value, bool) and not (key == "jit_compile" and value == "auto"):
        raise UserInputError(f"Setting {key!r} is a switch; got {value!r}. Use --set {key}=true or --set {key}=false.")
    if kind in ("number", "whole number"):
        # NumPy's numbers too (a tuner's); JSON also reads "NaN" and "Infinity".
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not is_number or (kind == "whole number" and not float(value).is_integer()):
            example = OPTIONAL_NUMBERS.get(key)
            if example is None:
                example = next(p[key] for p in PRESETS[task].values() if p.get(key) is not None)
            raise UserInputError(f"Setting {key!r} takes a {kind}; got {value!r} (e.g. --set {key}={example}).")
        problem = _range_problem(key, value)
        if problem:
            raise UserInputError(f"Setting {key!r} must be {problem}; got {value!r}.")
        if kind == "whole number":
            return int(value)
    return value


def known_settings(task):
    """Every setting a preset of `task` may carry or an override may name."""
    return set(OPTIONAL_SETTINGS[task]).union(*PRESETS[task].values())


def resolve_preset(task, name, overrides=None):
    """Returns a copy of preset `name` for `task` with `overrides` applied."""
    presets = PRESETS.get(task)
    if presets is None:
        raise UserInputError(f"Unknown task {task!r}; choose one of {', '.join(PRESETS)}.")
    if name not in presets:
        raise UserInputError(
            f"Unknown preset {name!r} for task {task!r}; choose one of {', '.join(sorted(presets))}."
        )
    known = known_settings(task)
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else f" Known settings: {', '.join(sorted(known))}."
        raise UserInputError(f"Unknown setting(s) {', '.join(map(repr, unknown))} for task {task!r}.{hint}")
    preset = dict(presets[name])
    given = {key for key, value in (overrides or {}).items() if value is not None}
    for key in given:
        preset[key] = checked_setting(task, key, overrides[key])
    if task == "generate" and "sequence_length" in given and preset["sequence_length"] < MIN_GENERATOR_WINDOW:
        raise UserInputError(f"--set sequence_length={preset['sequence_length']} is too short for a generator: its "
                             f"window must be at least {MIN_GENERATOR_WINDOW} tokens (it continues from the last "
                             f"ones); use --set sequence_length={MIN_GENERATOR_WINDOW} or more.")
    _check_heads(task, preset, given)
    return _fit_window_keep(preset, presets[name], given)


def _check_heads(task, preset, given):
    """A generator's and a translator's attention splits hidden_dim into num_heads equal parts (their model
    classes raise otherwise): --set num_heads=3 on a width of 16 was a 26-line traceback from the model class.
    The classifier's and pretraining's KerasHub encoders give each head hidden_dim // num_heads instead."""
    if task not in ("generate", "translate") or not {"hidden_dim", "num_heads"} & given:
        return
    width, heads = preset.get("hidden_dim"), preset.get("num_heads")
    if width is None or heads is None or width % heads == 0:
        return

    def named(key):
        return f"--set {key}={preset[key]}" if key in given else f"the recipe's {key} {preset[key]}"

    divisors = [d for d in range(1, width + 1) if width % d == 0][:6]
    raise UserInputError(f"{named('num_heads')} does not divide {named('hidden_dim')}: each attention head takes an "
                         f"equal share of hidden_dim. Use a num_heads that divides it ({', '.join(map(str, divisors))}"
                         f"{', ...' if width > divisors[-1] else ''}), or a hidden_dim that is a multiple of {heads}.")


def _fit_window_keep(preset, shipped, given):
    """`preset` with a `window_keep` (the tokens a generator re-encodes when its window is full) that fits its
    `sequence_length`: between 1 and sequence_length - 1. A recipe's 48 of a 64-token window failed as a bare
    ValueError of the model class once --set sequence_length=48 or less was given."""
    keep, length = preset.get("window_keep"), preset.get("sequence_length")
    if keep is None or length is None:  # exact crops (the tiny recipe), or no generation recipe
        return preset
    if "window_keep" in given:
        if not 1 <= keep <= length - 1:
            window = (f"--set sequence_length={length}" if "sequence_length" in given
                      else f"the recipe's sequence_length {length}")
            fits = f"from 1 to {length - 1}" if length > 1 else "none: a window of 1 token keeps nothing"
            raise UserInputError(f"--set window_keep={keep} does not fit {window}: the tokens generation re-encodes "
                                 f"when the window is full number at least 1 and fewer than the window ({fits}). Set window_keep in "
                                 "that range, or leave it out to keep the recipe's share of the window.")
    elif "sequence_length" in given:
        # The recipe's window_keep was chosen for its own window (48 of 64): keep the same share of the new window
        # (24 of 32, 96 of 128), at least 1 and at most sequence_length - 1; a window of 1 token keeps nothing
        # (None: the exact crop, re-encoding sequence_length - 1 = 0 tokens).
        share = shipped["window_keep"] / shipped["sequence_length"]
        preset["window_keep"] = min(max(1, round(share * length)), length - 1) if length > 1 else None
    return preset
