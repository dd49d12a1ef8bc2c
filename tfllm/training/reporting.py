"""What a finished run leaves for people to look at: TensorBoard extras and plots.

The Keras `TensorBoard` callback already writes the per-epoch scalars (loss,
metrics, learning rate) to `logs/train` and `logs/validation`, and the
causal-LM trainer writes generated samples to `logs/samples`. This module adds,
once per run, into the same `logs/` folder:

- the hyperparameters dashboard (`hparams`): the preset's values and the
  final metrics, so runs under `tensorboard --logdir runs/` compare side by side;
- the embedding projector, in `logs/projector/`: the token-embedding matrix,
  a `metadata.tsv` of the tokens and `projector_config.pbtxt`;

and, next to `logs/`, `training_curves.png` for people who never open TensorBoard.
Figures are plain `matplotlib.figure.Figure`s (no pyplot state), so the same
functions draw inline in notebooks and into files in headless training.
"""

import contextlib
import functools
import glob
import math
import numbers
import os
import warnings

import numpy as np
import tensorflow as tf
import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CURVES_PNG = "training_curves.png"
# A folder of its own: the projector also looks for checkpoints one level up,
# so files in logs/ itself would list logs/train, logs/validation, ... as
# projector runs too.
PROJECTOR_DIR = "projector"
PROJECTOR_CHECKPOINT = "embedding.ckpt"
PROJECTOR_METADATA = "metadata.tsv"
# Metric groups whose entries are too many to compare runs by.
_SKIPPED_METRICS = ("per_class", "confusion_matrix")


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------


# Fonts with Chinese, Japanese and Korean glyphs, as Debian/Ubuntu, Fedora and macOS name them: matplotlib's
# default DejaVu Sans has none, and Chinese class names or run names were drawn as empty boxes.
_CJK_FONT_HINTS = ("cjk", "wqy", "wenquanyi", "droidsansfallback", "notosanssc", "notoserifsc", "sourcehan",
                   "pingfang", "hiragino", "simhei", "simsun", "msyh", "ukai", "uming", "arphic", "nanum")


@functools.lru_cache(maxsize=None)
def _charmap(path):
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError):
        return frozenset()


@functools.lru_cache(maxsize=1)
def _figure_fonts():
    """(the default font's name, its path), then the system's CJK fonts (name, path), in a fixed order."""
    default = font_manager.findfont(font_manager.FontProperties())
    fonts = [(font_manager.FontProperties(fname=default).get_name(), default)]
    for path in sorted(font_manager.findSystemFonts()):
        if any(hint in os.path.basename(path).lower().replace("-", "").replace("_", "") for hint in _CJK_FONT_HINTS):
            try:
                fonts.append((font_manager.FontProperties(fname=path).get_name(), path))
            except (OSError, RuntimeError):
                continue
    return fonts


def _undrawable(texts):
    """The `texts` with a character none of `_figure_fonts` has (whitespace and control characters aside)."""
    charmaps = [_charmap(path) for _, path in _figure_fonts()]
    return [t for t in dict.fromkeys(texts)
            if any(c.isprintable() and not c.isspace() and not any(ord(c) in m for m in charmaps) for c in t)]


@contextlib.contextmanager
def _fonts_for(texts, what):
    """Draws a figure of `texts` (labels, titles) in the default font with the system's CJK fonts as fallbacks;
    where no font has some characters, one note names those texts (instead of a "Glyph missing" warning per
    character, and boxes nobody was told about)."""
    texts = [str(t) for t in texts if t is not None]
    missing = _undrawable(texts)
    if missing:
        from tfllm.errors import note

        shown = ", ".join(repr(t) for t in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        note(f"tfllm: {what} draws {shown} as empty boxes: no font here has their characters; install a CJK font "
             "(e.g. apt-get install fonts-noto-cjk) and run again.")
    names = list(dict.fromkeys(name for name, _ in _figure_fonts()))
    with matplotlib.rc_context({"font.family": names} if len(names) > 1 else {}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")  # told above
        yield


def _use_fonts(fig):
    """Gives every text of `fig` the family `_fonts_for` set (a figure saved later, out of its context, keeps it)."""
    family = matplotlib.rcParams["font.family"]
    for text in fig.findobj(matplotlib.text.Text):
        text.set_fontfamily(family)
    return fig


def plot_history(history, title=None):
    """One panel per quantity of a Keras `History` (loss, accuracy, ...), train and validation lines.

    Args:
        history: `model.fit(...).history`, a dict of per-epoch lists
            (a `keras.callbacks.History` is accepted too).
        title: optional figure title.

    Example:
    >>> fig = plot_history(model.fit(...).history)
    >>> fig.savefig("curves.png")
    """
    history = getattr(history, "history", history)
    with _fonts_for([title, *history], "the training curves' figure"):
        return _use_fonts(_plot_history(history, title))


def _plot_history(history, title):
    names = [k for k in history if not k.startswith("val_") and len(history[k])]
    # Validation-only entries (none today, but cheap to allow) still get a panel.
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history and len(history[k])]
    fig = Figure(figsize=(4 * max(len(names), 1), 3.2), layout="constrained")
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for key, label in ((name, "train"), ("val_" + name, "validation")):
            values = history.get(key)
            if values:
                # Markers keep a one-epoch run visible (a line needs two points).
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if "val_" + name in history and name in history:
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig


# A confusion matrix figure: at most this many inches a side, numbers written in
# the cells up to this many classes, and at most this many tick labels an axis
# (every k-th class beyond it). 200 classes otherwise drew a 162-inch figure
# with 40,000 cell texts (a minute, gigabytes of memory, a 16k-pixel PNG).
CONFUSION_MAX_INCHES = 14.0
CONFUSION_MAX_ANNOTATED = 20
CONFUSION_MAX_TICKS = 40


def plot_confusion_matrix(report, title="confusion matrix"):
    """The confusion matrix of a `tfllm.evaluation.classification_report` as an annotated heat map.

    Up to `CONFUSION_MAX_ANNOTATED` classes every cell shows its count; beyond,
    the colours alone tell (the counts are in the report). The figure is at
    most `CONFUSION_MAX_INCHES` a side, and past `CONFUSION_MAX_TICKS` classes
    only every k-th class is labelled on the axes.
    """
    with _fonts_for([title, *report["confusion_matrix"]["labels"]], "the confusion matrix"):
        return _use_fonts(_plot_confusion_matrix(report, title))


def _plot_confusion_matrix(report, title):
    labels = [str(label) for label in report["confusion_matrix"]["labels"]]
    matrix = np.asarray(report["confusion_matrix"]["matrix"])
    n = len(labels)
    size = min(1.2 + 0.8 * n, CONFUSION_MAX_INCHES)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax)
    step = max(1, math.ceil(n / CONFUSION_MAX_TICKS))
    ticks = range(0, n, step)
    shown = [labels[i] for i in ticks]
    if n > CONFUSION_MAX_ANNOTATED:
        ax.set_xticks(ticks, shown, rotation=90, fontsize="small")
        ax.set_yticks(ticks, shown, fontsize="small")
    else:
        ax.set_xticks(ticks, shown)
        ax.set_yticks(ticks, shown)
    ax.set_xlabel("predicted" if step == 1 else f"predicted (1 class in {step} labelled)")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= CONFUSION_MAX_ANNOTATED:
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black")
    return fig


def save_training_curves(history, run_dir, title=None):
    """Writes `run_dir/training_curves.png`; returns its path."""
    path = os.path.join(run_dir, CURVES_PNG)
    figure = plot_history(history, title=title)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")  # plot_history told
        figure.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------
# TensorBoard: summaries written once per run
# --------------------------------------------------------------------------


@contextlib.contextmanager
def once_writer(log_dir, name):
    """A default summary writer into `log_dir` whose event file replaces the one an earlier call with `name` wrote.

    A run killed after its final report (or part of it) was written runs that report again when it resumes;
    a second event file would show every tag twice at step 0. The file name ends with `name`, so only this
    writer's earlier files go: the folder may hold other writers' events (logs/ has the hparams session,
    a translation run's test samples, a trial's objective).
    """
    suffix = f".{name}.v2"
    for old in glob.glob(os.path.join(glob.escape(log_dir), "events.out.tfevents.*" + suffix)):
        os.remove(old)
    writer = tf.summary.create_file_writer(log_dir, filename_suffix=suffix)
    with writer.as_default():
        yield writer
    writer.flush()
    writer.close()


# --------------------------------------------------------------------------
# TensorBoard: hparams dashboard
# --------------------------------------------------------------------------


def _hparam_value(value):
    # The hparams plugin takes bool, int, float or str only.
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def flatten_metrics(metrics, prefix=""):
    """Numeric leaves of a nested metrics dict as `{"val_accuracy": 0.8, ...}` (NaN and lists skipped)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if key not in _SKIPPED_METRICS:
                flat.update(flatten_metrics(value, name + "_"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def write_hparams(log_dir, hparams, metrics, run_name=None):
    """Writes one hparams session to `log_dir`: the hyperparameters and the final metrics.

    TensorBoard's HParams tab then lists this run with its hyperparameters and,
    as metric columns, the `final/...` scalars written here plus every scalar
    the Keras callback wrote under `log_dir/train` and `log_dir/validation`.
    No experiment-wide `hparams_config` is written: the dashboard infers the
    columns from all runs, so runs of different presets (or tasks) mix freely.

    Args:
        log_dir: the run's TensorBoard folder (`RUN_DIR/logs`).
        hparams: flat dict of hyperparameters (a preset); values that are
            not bool/int/float/str are shown as strings.
        metrics: nested dict of final metrics (e.g. `metrics.json`).
        run_name: the trial id shown in the dashboard (default: the run directory's name).
    """
    from tensorboard.plugins.hparams import api as hp

    if run_name is None:
        run_name = os.path.basename(os.path.dirname(os.path.abspath(log_dir)))
    values = {k: _hparam_value(v) for k, v in sorted(hparams.items())}
    with once_writer(log_dir, "hparams"):
        hp.hparams(values, trial_id=run_name)
        for name, value in flatten_metrics(metrics).items():
            tf.summary.scalar(f"final/{name}", value, step=0)


# --------------------------------------------------------------------------
# TensorBoard: embedding projector
# --------------------------------------------------------------------------


def find_token_embedding(model, vocabulary_size):
    """The `[vocabulary_size, dim]` token-embedding matrix of `model` as a NumPy array.

    Found by shape rather than by layer type, so it works for `TextClassifier`
    (KerasHub `TokenAndPositionEmbedding`), `CausalLM` (`ReversibleEmbedding`)
    and a plain `keras.layers.Embedding` alike; position tables are skipped by name.
    """
    # By the weight's own layer: DistilBERT's token table is `token_and_position_embedding/token_embedding/...`.
    candidates = [
        w for w in model.weights
        if len(w.shape) == 2 and w.shape[0] == vocabulary_size and "position" not in w.path.split("/")[-2:][0]
    ]
    # A named token embedding wins over another table that happens to have as many rows.
    candidates.sort(key=lambda w: "token" not in w.path)
    if candidates:
        return np.asarray(candidates[0].numpy())
    raise ValueError(f"No [{vocabulary_size}, dim] token-embedding weight found in model {model.name!r}.")


def _visible(token):
    # metadata.tsv has one token per line: whitespace tokens must stay visible
    # and must not break the line structure.
    if token == "":
        return "<empty>"
    if token == " ":
        return "<space>"
    return token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_embedding_projector(log_dir, embeddings, tokens, name="token_embedding"):
    """Writes the projector's checkpoint, `metadata.tsv` and `projector_config.pbtxt` into `log_dir`.

    Keras' own `TensorBoard(embeddings_freq=...)` only looks at top-level
    `Embedding` layers and needs a metadata file written beforehand, so the
    KerasHub embedding layers inside our models would be missed; writing the
    three files directly is what its implementation does anyway.
    """
    from tensorboard.plugins import projector

    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(tokens) != len(embeddings):
        raise ValueError(f"{len(tokens)} tokens for an embedding of {len(embeddings)} rows.")
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, PROJECTOR_METADATA), "w", encoding="utf-8") as f:
        # One column: no header line (the projector's rule for single-column metadata).
        f.writelines(_visible(t) + "\n" for t in tokens)
    # `save` (not `write`) also writes the `checkpoint` index file, through
    # which the projector finds the newest checkpoint in log_dir with a
    # relative path, so the run directory can be moved.
    tf.train.Checkpoint(**{name: tf.Variable(embeddings)}).save(os.path.join(log_dir, PROJECTOR_CHECKPOINT))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = PROJECTOR_METADATA
    projector.visualize_embeddings(log_dir, config)
    # TensorBoard lists a folder as a run (projector runs included) only if it
    # holds an event file; this one also says what the folder is.
    with once_writer(log_dir, "projector"):
        rows, dim = embeddings.shape
        tf.summary.text("projector", f"Token embedding: {rows} tokens x {dim} dimensions (Projector tab).", step=0)


def tokenizer_vocabulary(tokenizer):
    """The tokenizer's tokens in id order."""
    return [str(t) for t in tokenizer.get_vocabulary()]


# --------------------------------------------------------------------------
# All of it, once per run
# --------------------------------------------------------------------------


def history_from_logs(log_dir):
    """The per-epoch values Keras' TensorBoard callback logged under `log_dir` (`train/` and `validation/`),
    as a `fit` history: `{"loss": [...], "val_loss": [...], ...}`, one value per epoch, also across a resume."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = {}
    for folder, prefix in (("train", ""), ("validation", "val_")):
        if not os.path.isdir(os.path.join(log_dir, folder)):
            continue
        events = EventAccumulator(os.path.join(log_dir, folder), size_guidance={"tensors": 0, "scalars": 0})
        events.Reload()
        for tag in events.Tags().get("tensors", []):
            if tag.startswith("epoch_"):
                by_epoch = {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
                history[prefix + tag[len("epoch_"):]] = [by_epoch[step] for step in sorted(by_epoch)]
    return history


# The HParams name of a recipe's `vocabulary_size` where the run learned its tokenizer: the cap it was learned
# under, while the row's `vocabulary_size` is the tokenizer's (the model's) size.
VOCABULARY_CAP = "vocabulary_cap"


def write_run_report(run_dir, model, tokenizer, hparams, history, metrics):
    """Curves PNG, hparams session and embedding projector for a finished run.

    Args:
        run_dir: the run directory (TensorBoard logs go to `run_dir/logs`,
            the projector's files to `run_dir/logs/projector`).
        model: the trained Keras model.
        tokenizer: its tokenizer (names the projector's points).
        hparams: the resolved preset (with `from_preset`); its `vocabulary_size` is logged as the tokenizer's,
            and as `vocabulary_cap` where the run learned its tokenizer.
        history: `model.fit(...).history`.
        metrics: the final metrics dict (as written to `metrics.json`).
    """
    log_dir = os.path.join(run_dir, "logs")
    logged = history_from_logs(log_dir)
    if len(logged.get("loss", [])) > len(history.get("loss", [])):  # resumed: `fit`'s history starts at the resume
        history = logged
    save_training_curves(history, run_dir, title=os.path.basename(os.path.abspath(run_dir)))
    tokens = tokenizer_vocabulary(tokenizer)
    # `vocabulary_size` is the model's vocabulary, the tokenizer's: a recipe's is only the cap its tokenizer was
    # learned under (2000 for a 266-token vocabulary), while a --from-preset run's is the preset's own size. A run
    # that learned its tokenizer logs that cap as `vocabulary_cap` (what a search's space tunes: tuning.py).
    hparams = dict(hparams)
    if "vocabulary_size" in hparams and not hparams.get("from_preset"):
        hparams[VOCABULARY_CAP] = hparams["vocabulary_size"]
    hparams["vocabulary_size"] = len(tokens)
    write_hparams(log_dir, hparams, metrics)
    write_embedding_projector(
        os.path.join(log_dir, PROJECTOR_DIR), find_token_embedding(model, len(tokens)), tokens
    )
