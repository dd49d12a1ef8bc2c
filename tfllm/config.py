"""Run-level settings: one dataclass, saved as `config.json` in every run directory."""

import dataclasses
import json
import os

# Generation limits, here rather than in tfllm.generation so that building the
# CLI's parser (`tfllm --help`) does not import TensorFlow.
MAX_NEW_TOKENS = 8192  # documented upper bound of max_new_tokens
SAMPLERS = ("greedy", "top_k", "top_p", "random", "beam")


def truncate_at_stops(text, stops):
    """`text` up to (not including) the first of the stop strings it holds (generation's `stop`; here,
    beside the limits above, so that the TensorFlow-free decoders and the CLI share it)."""
    for s in stops:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


@dataclasses.dataclass
class TrainConfig:
    """What `tfllm train` was asked to do; model hyperparameters come from the preset.

    `None` fields fall back to the preset's value, so a run is fully described
    by the preset name plus the fields a user overrode.
    """

    task: str = "classify"  # "classify", "generate", "translate" or "pretrain"
    data: str = "rotten_tomatoes"
    run_dir: str = "runs/latest"
    preset: str = "default"
    text_column: str = "text"
    label_column: str = "label"
    split_column: str | None = None
    source_column: str | None = None  # translation: the text to translate (cedict: simplified)
    target_column: str | None = None  # translation: its translation (cedict: english)
    labels: list | None = None  # keep only these labels (e.g. fresh, rotten)
    tokenizer: str | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    seed: int = 1337  # the data split's, and (unless model_seed is set) the model's and the shuffle's
    model_seed: int | None = None  # the model's initialisation and the shuffle only (ensemble members)
    ensemble: int = 1  # classify: train this many seeds and average their probabilities (1: one model)
    unlabeled: str | None = None  # classify: texts without labels for self-training (tfllm.training.self_training)
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool | None = None
    max_rows: int | None = None  # train on the first N rows only (quick runs, tests)
    from_preset: str | None = None  # start from a tfllm run or a KerasHub preset (folder, handle, hf:// URI)
    objective: str | None = None  # pretraining: "mlm" or "causal"
    overwrite: bool = False  # replace a finished run in run_dir (kept until the new run finishes)
    overrides: dict = dataclasses.field(default_factory=dict)  # settings to override; a misspelt one is refused

    def to_json(self, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))
