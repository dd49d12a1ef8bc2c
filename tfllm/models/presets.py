"""Named recipes: flat dicts of model constructor arguments plus training settings.

Keys that match a model's constructor go to the model; `learning_rate`,
`batch_size`, `epochs`, `steps`, ... go to training. `resolve_preset` applies a
run's overrides on top, so there is one source of truth for every setting.
"""

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
    # Tuned for quality on a few thousand short texts (see benchmarks/bench_classifier.py):
    # a small, strongly regularised model with early stopping beats a wide one here.
    "default": {
        "tokenizer": "wordpiece",
        "vocabulary_size": 8000,
        "sequence_length": 64,
        "hidden_dim": 64,
        "num_layers": 1,
        "num_heads": 4,
        "intermediate_dim": 128,
        "dropout": 0.3,
        "learning_rate": 5e-4,
        "weight_decay": 0.01,
        "batch_size": 32,
        "epochs": 8,
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
        "learning_rate": 3e-3,
        "weight_decay": 0.0,
        "batch_size": 16,
        "epochs": 1,
        "early_stopping": False,
    },
}

# Filled by the causal-LM module's author; same shape as above.
CAUSAL_LM_PRESETS = {}

PRESETS = {"classify": CLASSIFIER_PRESETS, "generate": CAUSAL_LM_PRESETS}


def resolve_preset(task, name, overrides=None):
    """Returns a copy of preset `name` for `task` with `overrides` applied."""
    presets = PRESETS.get(task)
    if presets is None:
        raise UserInputError(f"Unknown task {task!r}; choose 'classify' or 'generate'.")
    if name not in presets:
        raise UserInputError(
            f"Unknown preset {name!r} for task {task!r}; choose one of {', '.join(sorted(presets))}."
        )
    preset = dict(presets[name])
    for key, value in (overrides or {}).items():
        if value is not None:
            preset[key] = value
    return preset
