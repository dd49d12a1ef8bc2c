"""Run-level settings: one dataclass, saved as `config.json` in every run directory."""

import dataclasses
import difflib
import functools
import json
import math
import numbers
import os
import re
import reprlib

from tfllm.errors import UserInputError

# Generation limits and option checks, here rather than in tfllm.generation so that building the
# CLI's parser (`tfllm --help`) and checking a command's options do not import TensorFlow.
MAX_NEW_TOKENS = 8192  # documented upper bound of max_new_tokens
EXPORT_MAX_NEW_TOKENS = 1024  # an exported generator's cap on max_new_tokens per request (SavedModel, REST, gRPC)
SAMPLERS = ("greedy", "top_k", "top_p", "random", "beam")
TOKENIZER_KINDS = ("wordpiece", "char", "sentencepiece")  # what the `tokenizer` setting takes
FLOAT32_MAX = 3.4028234663852886e38
# What `tfllm generate` and `tfllm.generation.generate` sample with unless told (nanoGPT's sample.py settings).
SAMPLING_DEFAULTS = {"sampler": "top_k", "temperature": 0.8, "top_k": 200, "top_p": 0.9, "num_beams": 4, "seed": None}


def truncate_at_stops(text, stops):
    """`text` up to (not including) the first of the stop strings it holds (generation's `stop`; here,
    beside the limits above, so that the TensorFlow-free decoders and the CLI share it)."""
    for s in stops:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


# WordPiece's detokenizer joins tokens with spaces, and tfllm's WordPiece makes each CJK ideograph and each
# punctuation mark a token of its own, so Chinese came out as "中 国 和 党 。". The rule that undoes it, owned
# here (TensorFlow-free) for every path that turns WordPiece ids into text: a space goes when the characters
# on both sides are CJK (an ideograph, or CJK / full-width punctuation); a space between a CJK character and
# a Latin word, or between two Latin words, stays ("中 hello 文" is kept as it is). The same ranges, written
# as literal characters, make one pattern that Python's `re` (`join_cjk`) and TensorFlow's RE2
# (`tfllm.tokenizers.join_cjk_op`, in the exported graphs) both read.
CJK_RANGES = (
    (0x2E80, 0x2FDF),    # CJK radicals supplement, Kangxi radicals (RE2's \p{Han} has them)
    (0x3000, 0x303F),    # CJK symbols and punctuation: 、。「」『』〈〉… (and 々 〇, which \p{Han} has)
    (0x3400, 0x4DBF),    # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF00, 0xFFEF),    # half-width and full-width forms: ，！？：；（）…
    (0x20000, 0x2FA1F),  # extensions B-F and I, compatibility ideographs supplement
    (0x30000, 0x323AF),  # extensions G and H
)
CJK_CLASS = "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in CJK_RANGES) + "]"
# What the TFLite exports' metadata tells an app (it detokenizes on its own).
CJK_CHARACTERS = ("(an ideograph, or CJK or full-width punctuation: code points "
                  + ", ".join(f"U+{low:04X}-U+{high:04X}" for low, high in CJK_RANGES)
                  + "; two passes of replacing 'A B' by 'AB'; spaces next to any other character stay)")
CJK_SPACE = f"({CJK_CLASS}) ({CJK_CLASS})"  # replaced by r"\1\2" twice: matches do not overlap ("中 国 人")


def join_cjk(text):
    """`text` without the spaces a WordPiece detokenizer puts between two CJK characters (see `CJK_RANGES`):
    Python's `re`, for text already out of TensorFlow; `tfllm.tokenizers.join_cjk_op` is the same rule as a TF op."""
    for _ in range(2):
        text = re.sub(CJK_SPACE, r"\1\2", text)
    return text


# A WordPiece completion decoded from the new ids alone has no space before its first word ("the king" +
# "uke" printed "the kinguke"; the whole text detokenized is "the king uke"). The rule that puts it INTO the
# completion, so that prompt + completion is the text: a space goes before the completion when its first token
# is a whole word or a punctuation mark (not a "##" piece, which continues the prompt's last word and is
# detokenized without its "##"), unless the prompt ends in whitespace (or is empty), or the prompt's last
# character and the completion's first are both CJK (`join_cjk`'s rule). Three patterns that Python's `re`
# (`wordpiece_completion`) and TensorFlow's RE2 (`tfllm.tokenizers.wordpiece_completion_op`) both read in full.
WORDPIECE_SUFFIX = "##"  # tfllm's WordPiece tokenizers' suffix indicator (KerasHub's default)
SPACE_RANGES = ((0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))  # what str.isspace() takes
SPACE_CLASS = "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in SPACE_RANGES) + "]"
ENDS_IN_SPACE = f"(?s)(.*{SPACE_CLASS})?"  # also the empty prompt
ENDS_IN_CJK = f"(?s).*{CJK_CLASS}"
STARTS_WITH_CJK = f"(?s){CJK_CLASS}.*"
# What the TFLite export's metadata tells an app.
COMPLETION_SPACE = ("a space before the completion when its first token is a whole word (not a '##' piece, which "
                    "is glued to the prompt without its '##') and the prompt does not end in whitespace (code points "
                    + ", ".join(f"U+{low:04X}" + (f"-U+{high:04X}" if high > low else "") for low, high in SPACE_RANGES)
                    + ") and is not empty, except where the prompt's last character and the completion's first are "
                    "both CJK; prompt + completion is then the text")


def is_suffix_piece(token, suffix=WORDPIECE_SUFFIX):
    """A WordPiece token that continues the word before it ("##k"; a bare "##" is a word), as KerasHub's
    detokenizer tells them apart."""
    return len(token) > len(suffix) and token.startswith(suffix)


def wordpiece_completion(prompt, completion, whole_word):
    """A WordPiece detokenizer's text of the new ids (CJK already joined) as it follows `prompt`, `whole_word`
    saying whether its first token is not a suffix piece: see `COMPLETION_SPACE`. Python's `re`;
    `tfllm.tokenizers.wordpiece_completion_op` is the same rule as a TF op."""
    if (not whole_word or not completion or re.fullmatch(ENDS_IN_SPACE, prompt)
            or (re.fullmatch(ENDS_IN_CJK, prompt) and re.fullmatch(STARTS_WITH_CJK, completion))):
        return completion
    return " " + completion


# SentencePiece's analogue: a piece that begins a word carries its space as a leading "\u2581" ("\u2581which"), and
# its detokenizer drops that space at a text's start, so a completion decoded alone lost it ("ROMEO: the" +
# "which" where KerasHub's generate() gives "ROMEO: the which"). The space goes back before the completion when
# its first piece has more leading "\u2581" than the text has leading spaces, unless the prompt ends in whitespace
# (a trailing space the tokenizer drops would be doubled) or is empty (KerasHub's text starts without it).
WORD_START = "\u2581"
SENTENCEPIECE_SPACE = ("a space before the completion when its first piece begins with '\u2581' that "
                       "SentencePieceProcessor.decode dropped and the prompt is not empty and does not end in whitespace; "
                       "prompt + completion is then the text")


def leading_word_starts(piece):
    """How many "\u2581" a SentencePiece piece begins with (a space each)."""
    return len(piece) - len(piece.lstrip(WORD_START))


def sentencepiece_completion(prompt, completion, first_piece):
    """A SentencePiece detokenizer's text of the new ids as it follows `prompt`, `first_piece` the first new
    id's piece: see `SENTENCEPIECE_SPACE`. `tfllm.tokenizers.sentencepiece_completion_op` is the same rule as a TF op."""
    dropped = leading_word_starts(first_piece) > len(completion) - len(completion.lstrip(" "))
    if not dropped or re.fullmatch(ENDS_IN_SPACE, prompt):
        return completion
    return " " + completion


MAX_BEAMS = 64  # beams multiply the batch and the cache: 100,000 of them ran for hours on a tiny model
SEED_RANGE = (-2**31, 2**31 - 1)  # the exported models' int32 seed; beyond it TensorFlow failed and NumPy wrapped


def is_number(value, whole=False):
    """A real number (a whole one with `whole`), not a bool or a string: what decoding options take."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return not whole or float(value).is_integer()


CODE_POINT_VIEWS = ("char_ngram_buckets", "word_ngram_buckets")  # a classifier head's views of the raw text
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # --precision: Keras dtype policies

# Temperatures below this decode greedily (the limit they tend to): dividing the logits (banned tokens' are -1e9)
# by 1e-30 overflowed float32, and `tfllm generate` printed nothing where the SavedModel gave the greedy text.
GREEDY_BELOW = 1e-6


# The samplers that read each option (the first named in a refusal). Beam search and greedy decoding draw
# nothing: a temperature or seed given to them changed nothing, without a word.
SAMPLER_OF_OPTION = {"top_k": ("top_k",), "top_p": ("top_p",), "num_beams": ("beam",),
                     "temperature": ("top_k", "top_p", "random"), "seed": ("top_k", "top_p", "random")}


def refuse_unread_options(sampler, given, flags=False):
    """Refuses an option of `given` (`{name: value}`, None when not given) that `sampler` does not read: it
    was ignored without a word. `flags`: name them as the command's flags (--top-k), else as arguments."""
    for name, readers in SAMPLER_OF_OPTION.items():
        if name in given and given[name] is not None and sampler not in readers:
            option = f"--{name.replace('_', '-')}" if flags else name
            names = readers if flags else [repr(reader) for reader in readers]
            which = " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"
            prefix = "--sampler " if flags else "sampler="
            now = sampler if flags else repr(sampler)
            raise UserInputError(f"{option} is for {prefix}{which}, and the sampler is {now}; use {prefix}{names[0]} "
                                 f"or leave {option} out.")
    refuse_unread_at_temperature_0(given.get("temperature"), given, flags)


def refuse_unread_at_temperature_0(temperature, given, flags=False):
    """Refuses a seed, top_k or top_p of `given` (None when not given) at `temperature` 0, which decodes greedily
    (documented so): they were ignored without a word, where `--sampler greedy --seed 3` is refused."""
    if temperature is None or not is_number(temperature) or temperature != 0:
        return
    for name in ("seed", "top_k", "top_p"):
        if given.get(name) is not None:
            option, zero = (f"--{name.replace('_', '-')}", "--temperature 0") if flags else (name, "temperature=0")
            greedy = "--sampler greedy" if flags else "sampler='greedy'"
            raise UserInputError(f"{option} is not read at {zero}, which decodes greedily (as {greedy} does); give a "
                                 f"temperature above 0 to sample, or leave {option} out.")


def check_sampler_options(sampler, temperature, top_k, top_p, num_beams, seed=None):
    """One UserInputError for a decoding option of the wrong kind or range (generation and translation):
    `top_k="5"` or `num_beams=2.5` otherwise fail deep inside TensorFlow. Here, without TensorFlow, so that
    `tfllm generate` refuses them before it loads anything. Written with the commands' flags (--num-beams), which
    a Python caller reads as its argument names (num_beams: `errors.python_spelling`)."""
    # The decoders compute in float32, where a temperature past its largest number (3.4e38) is infinity.
    if is_number(temperature) and FLOAT32_MAX < temperature < math.inf:  # 1e39 was called not finite
        raise UserInputError(f"--temperature must be a number from 0 to {FLOAT32_MAX:.7g}, got {temperature!r}, which "
                             "is beyond float32's range (decoding computes in float32, where it is infinity); 0 is "
                             "greedy, 1 samples the model's own probabilities.")
    if not is_number(temperature) or not 0 <= temperature <= FLOAT32_MAX:
        raise UserInputError(f"--temperature must be a number >= 0, got {temperature!r} (a finite one: 0 is greedy, "
                             "1 samples the model's own probabilities).")
    if sampler == "top_k" and (not is_number(top_k, whole=True) or top_k < 1):
        raise UserInputError(f"--top-k must be a whole number of at least 1, got {top_k!r}.")
    if sampler == "top_p" and (not is_number(top_p) or not 0 < top_p <= 1):
        raise UserInputError(f"--top-p must be a number in (0, 1], got {top_p!r}.")
    if sampler == "beam" and (not is_number(num_beams, whole=True) or not 1 <= num_beams <= MAX_BEAMS):
        raise UserInputError(f"--num-beams must be a whole number from 1 to {MAX_BEAMS}, got {num_beams!r}.")
    if seed is not None and (not is_number(seed, whole=True) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise UserInputError(f"--seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {seed!r}.")


def expand_home(value):
    """`value` (a str or a notebook's pathlib.Path) as a str, with a `~` at its start as the home folder; other
    values as they are, for the caller's own check. Every path a user types goes through it: the shell expands `~`
    only where it starts a word, and Python never does, so `base_dir="~/models"` in a notebook (or a quoted
    '~/models' on a command line) made a folder named `~` in the working directory."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    return value


def data_path(value, what, why=""):
    """`value`, a file or folder path or a bundled name, as a str (a notebook's pathlib.Path too); one
    UserInputError naming `what` for anything else (texts held in memory: a list, a DataFrame)."""
    from tfllm.errors import UserInputError

    value = expand_home(value)
    if isinstance(value, str) and value:
        return value
    # reprlib: a notebook's DataFrame or list of rows printed whole, megabytes of it.
    raise UserInputError(f"{what} must be a file or folder path or a bundled name, got {type(value).__name__} "
                         f"{reprlib.repr(value)}. Save texts held in memory to a file first (pandas: "
                         f"`df.to_csv('data.csv', index=False)`){why}.")


# The kinds TrainConfig's fields take (None is always allowed where the field's default is None).
_KINDS = {"task": str, "data": str, "run_dir": str, "preset": str, "text_column": str, "label_column": str,
          "unlabeled": str, "from_preset": str, "epochs": numbers.Integral, "steps": numbers.Integral,
          "batch_size": numbers.Integral, "seed": numbers.Integral, "model_seed": numbers.Integral,
          "ensemble": numbers.Integral, "max_rows": numbers.Integral, "learning_rate": numbers.Real,
          "overwrite": bool, "overrides": dict, "labels": (list, tuple)}


_NAMES = {numbers.Integral: "a whole number", numbers.Real: "a number", str: "a str", dict: "a dict", list: "a list",
          tuple: "a tuple", bool: "True or False"}


@dataclasses.dataclass
class TrainConfig:
    """What `tfllm train` was asked to do; model hyperparameters come from the preset.

    `None` fields fall back to the preset's value, so a run is fully described
    by the preset name plus the fields a user overrode.
    """

    task: str = "classify"  # "classify", "generate", "translate" or "pretrain"
    data: str = "rotten_tomatoes"
    run_dir: str = "runs/latest"
    # None: `default`, or for a classifier fine-tuned `--from-preset` the recipe `runs.fine_tuning_preset`
    # picks (`finetune`, mostly), as `tfllm train` does; its trainer fills it in (`check_config`).
    preset: str | None = None
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
    max_rows: int | None = None  # classify: seeded stratified sample of N rows; translate: seeded sample; generate: first N chars
    from_preset: str | None = None  # start from a tfllm run or a KerasHub preset (folder, handle, hf:// URI)
    objective: str | None = None  # pretraining: "mlm" or "causal"
    overwrite: bool = False  # replace a finished run in run_dir (kept until the new run finishes)
    overrides: dict = dataclasses.field(default_factory=dict)  # settings to override; a misspelt one is refused

    def __post_init__(self):
        """Fields of the wrong kind are one UserInputError here, not a TypeError deep in training
        (`TrainConfig(epochs="1")` from a notebook)."""
        from tfllm.errors import UserInputError

        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = _KINDS.get(field.name)
            if isinstance(value, os.PathLike):  # a notebook's pathlib.Path: the str it names (run.json is JSON)
                value = os.fspath(value)
                setattr(self, field.name, value)
            if field.name in ("data", "run_dir", "unlabeled", "from_preset"):  # '~/runs/x' made a folder named '~'
                value = expand_home(value)
                setattr(self, field.name, value)
            if field.name in ("data", "run_dir") and value in (None, ""):  # a TypeError or FileNotFoundError('')
                raise UserInputError(f"TrainConfig {field.name} must be " + (
                    "a file or folder path or a bundled name (e.g. 'rotten_tomatoes')" if field.name == "data"
                    else "the folder the run goes to (e.g. 'runs/reviews')") + f", got {value!r}.")
            if field.name == "preset" and value is None and not (self.task == "classify" and self.from_preset):
                self.preset = "default"
            if value is None or kind is None:
                continue
            wrong = isinstance(value, bool) and kind is not bool or not isinstance(value, kind)
            if wrong:
                names = " or ".join(_NAMES.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
                # reprlib: a notebook's DataFrame or list of rows printed whole, megabytes of it.
                got = f"{type(value).__name__} {reprlib.repr(value)}"
                if field.name in ("data", "unlabeled"):
                    data_path(value, f"TrainConfig {field.name}", ": a run records the path, and reads the file again "
                                                                  "to resume, evaluate and export")
                raise UserInputError(f"TrainConfig {field.name} must be {names}, got {got}.")
            if kind in (numbers.Integral, numbers.Real):  # NumPy's numbers too, as plain ones for run.json
                setattr(self, field.name, int(value) if kind is numbers.Integral else float(value))

    def to_json(self, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)

    @classmethod
    def from_dict(cls, values, strict=True):
        """A TrainConfig of a dict's fields; a key it has no field for is refused (`{"epoch": 3}` trained
        the preset's epochs without a word), or with `strict=False` ignored (a run's record)."""
        from tfllm.errors import UserInputError

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if strict and unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            raise UserInputError(f"TrainConfig has no field {unknown[0]!r}; " + (
                f"did you mean {close[0]!r}?" if close else f"its fields are {', '.join(sorted(names))}."))
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path):
        """The TrainConfig a run recorded (keys of another tfllm version's are ignored)."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), strict=False)


def read_escapes(value):
    """`value` with its backslash escapes read (\\n, \\t, \\r, \\\\), as users type a newline in a shell
    (`--stop '\\n'`, a generator's `explain --target '\\n'`): a backslash and an n matched nothing. Any other
    backslash stays as typed."""
    return re.sub(r"\\([ntr\\])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m[1]], value)


@functools.lru_cache(maxsize=1)
def byte_decoder():
    """GPT-2's byte-level alphabet back to bytes: printable bytes stand for themselves, the others for
    U+0100 onwards in order (so a space is 'Ġ', U+0120). Here, without TensorFlow, for explanations and the
    tokenizers alike (KerasHub's own `bytes_to_unicode` is in a private module)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + k): b for k, b in enumerate(others)}}
