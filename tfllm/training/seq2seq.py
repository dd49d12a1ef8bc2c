"""TrainConfig -> tokenizer -> Seq2SeqLM task -> model.fit (teacher forcing) -> a finished run directory.

The model is tfllm's `Seq2SeqLM` over one tokenizer trained on the training
split's sources and targets together (so Chinese, pinyin and English share one
vocabulary; WordPiece gives each ideograph its own token), or, with
`from_preset`, a tfllm translation run or a KerasHub `Seq2SeqLM` preset (BART)
with its own tokenizer. Multi-reference targets (cedict's `english` glosses
joined by `/`) train on their first reference and are scored against all of
them. The run directory's layout is `tfllm.runs`'s.
"""

import os
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from tfllm import errors, runs, tokenizers
from tfllm.data import preprocess, untuned
from tfllm.datasets import same_data, warn_about_small_splits
from tfllm.datasets.pairs import BUNDLED_PAIRS, describe, load_pair_data, read_pairs, read_split
from tfllm.errors import UserInputError
from tfllm.evaluation import translation_report
from tfllm.models import Seq2SeqLM, Seq2SeqLMPreprocessor
from tfllm.models.seq2seq_lm import BACKBONE_ARGS, VOCABULARY_ARGS
from tfllm.training import common
from tfllm.translation import Translator, token_rows

SAMPLE_TRANSLATIONS = 20  # test translations shown in TensorBoard's Text tab
AUTOTUNE = tf.data.AUTOTUNE


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy from logits against integer labels, with label smoothing.

    Equal to `CategoricalCrossentropy(from_logits=True, label_smoothing=s)` on
    one-hot labels, without building the `[batch, length, vocabulary]` one-hot
    tensor: `(1 - s) * nll + s * mean(-log_softmax)`.
    """

    def __init__(self, label_smoothing=0.0, name="categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.cast(y_true, "int32")[..., None], axis=-1), -1)
        if not self.label_smoothing:
            return nll
        return (1.0 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_probs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` have passed (checked after every batch); the epoch's end still runs."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = float(seconds)
        self.start = None
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True
            self.stopped = True


def translation_preset(config):
    """The run's recipe, with what only translation reads checked before any data is read or model trained."""
    preset = common.resolve_recipe("translate", config)
    # A source's rows (its several translations) stay in one split and are scored as one pair. Recorded in
    # the recipe: a run trained before the setting has none, and is split again as it was, row by row.
    preset.setdefault("group_sources", True)
    separator = preset.get("reference_separator")
    if separator is not None and not isinstance(separator, str):  # `--set reference_separator=5` reads as a number
        raise UserInputError(f"Setting 'reference_separator' takes text; got {separator!r}. Quote it as JSON text "
                             f"(--set 'reference_separator=\"{separator}\"') or choose a character such as /.")
    # A decoder of one position holds only its start token, an encoder of two only [BOS] [EOS]: a run trained
    # whole and then failed decoding ('max_new_tokens must be ... from 1 to 0'), or translated empty sources.
    for key, least, why in (("decoder_sequence_length", 2, "the start token and one output token"),
                            ("encoder_sequence_length", 3, "[BOS], one source token and [EOS]")):
        if preset[key] < least:
            raise UserInputError(f"Setting {key!r} must be at least {least} ({why}); got {preset[key]!r}.")
    return preset


def load_data(config, preset=None, training=False):
    """The pairs exactly as the training run split them (train, evaluate); `training`: warn of what
    misleads in them (a split column not read), as training reads them."""
    return load_pair_data(config.data, source_column=config.source_column, target_column=config.target_column,
                          split_column=config.split_column, seed=config.seed, max_rows=config.max_rows,
                          reference_separator=(preset or {}).get("reference_separator"),
                          group_sources=(preset or {}).get("group_sources", False), warn_split=training)


def run_data(config, recipe, needs, instead=""):
    """A finished run's pairs, split as it split them; one line naming what `needs` them when its data file
    is gone (the message of a missing --data, 'Check the path, or use a bundled set', named no fix here)."""
    if config.data not in BUNDLED_PAIRS and not os.path.exists(config.data):
        if os.path.isabs(config.data):
            fix = f"which no longer exists; put the file back there{instead}"
        else:  # recorded as given, relative to the folder training ran in
            fix = (f"a path relative to the folder the run was trained from, not found from here; run this from that "
                   f"folder or put the file back{instead}")
        raise UserInputError(f"{needs} reads the run's training data, {config.data!r}, {fix}.")
    return load_data(config, recipe)


def own_model(preset, tokenizer, target_vocabulary_size=None):
    """tfllm's `Seq2SeqLM` as `preset` shapes it; its decoder scores ids below `target_vocabulary_size`."""
    preprocessor = Seq2SeqLMPreprocessor(tokenizer, encoder_sequence_length=preset["encoder_sequence_length"],
                                         decoder_sequence_length=preset["decoder_sequence_length"])
    args = {k: preset[k] for k in BACKBONE_ARGS if k in preset and k not in VOCABULARY_ARGS}
    return Seq2SeqLM.from_args(preprocessor=preprocessor, vocabulary_size=tokenizer.vocabulary_size(),
                               target_vocabulary_size=target_vocabulary_size, **args)


@common.preset_files
def model_from_preset(handle, preset):
    """A tfllm translation run or a KerasHub Seq2SeqLM preset (BART), with its own tokenizer.

    `preset`'s sequence lengths are capped at the positions the backbone has; `preset` is updated to
    the lengths used (the run's recipe, which `runs.load_translation_task` reads them back from).
    """
    import tfllm.models  # noqa: F401  (registers tfllm's classes for from_preset)

    unreachable = common.unreachable_hub(handle)
    try:
        lengths = {"encoder_sequence_length": preset["encoder_sequence_length"],
                   "decoder_sequence_length": preset["decoder_sequence_length"]}
        preprocessor = keras_hub.models.Seq2SeqLMPreprocessor.from_preset(handle, **lengths)
        model = keras_hub.models.Seq2SeqLM.from_preset(handle, preprocessor=preprocessor, **common.preset_dtype(handle))
        # The recipe's lengths, capped at the positions the backbone has (a tfllm run's own lengths, BART's
        # max_sequence_length), as classifiers and generators cap theirs: longer batches failed in fit
        # (`--from-preset` of a `--preset tiny` run with the default recipe's longer lengths).
        backbone = model.backbone
        capped = {}
        for key, wanted in lengths.items():
            longest = getattr(backbone, key, None) or getattr(backbone, "max_sequence_length", None)
            capped[key] = min(wanted, int(longest)) if longest else wanted
        if capped != lengths:
            model.preprocessor = keras_hub.models.Seq2SeqLMPreprocessor.from_preset(handle, **capped)
            preset.update(capped)
        return model
    except Exception as e:  # a missing folder, a preset of another kind, no network for a handle
        offline = common.offline_error(handle, unreachable, e)
        if offline:
            raise offline from None
        # A file missing or damaged: `common.preset_files` names it (this said to pass a BART preset, to BART).
        if isinstance(e, FileNotFoundError) or (isinstance(e, (OSError, tf.errors.OpError))
                                                and common.damaged_file(handle)):
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserInputError(f"Cannot load --from-preset {handle!r} as a sequence-to-sequence model ({message}). "
                             "Pass a tfllm translation run or a KerasHub Seq2SeqLM preset (BART).") from None


# Per side: the positions a text's length leaves besides its tokens (the encoder packs [BOS] and [EOS]; the
# decoder packs its start token and [EOS] into one position more than its length), the setting, and the cost.
CUT = {"source": (2, "encoder_sequence_length", "the encoder reads", "training sees only their first {room} tokens"),
       "target": (1, "decoder_sequence_length", "the decoder writes",
                  "the model never learns their end, so it cannot write them whole (exact match is out of reach)")}


def warn_of_cut_texts(texts, tokenizer, sequence_length, side="source", positions=None):
    """Warns once how many training sources (targets) are longer than the encoder reads (the decoder writes):
    the packer cut them without a word (`--preset tiny`'s 10 tokens made every "is this review positive or
    negative: ..." "is this re", and the model answered the majority class), where `tfllm translate` only
    warned later.

    `positions`: the most the setting can be (a preset's backbone's positions): the advice is capped there
    (BART's 64 got "Raise it with --set decoder_sequence_length=79", which trained at 64 and said it again)."""
    extra, setting, where, cost = CUT[side]
    room = sequence_length - extra
    lengths = np.array([len(row) for row in token_rows(tokenizer, texts)])
    long = int((lengths > room).sum())
    if long:
        fit = enough(lengths, sequence_length, extra)
        # Which share the suggestion fits: "longest 45 tokens ... =14" read as too short without it.
        share = "all of them" if fit == int(lengths.max()) + extra else "95% of them"
        if positions is not None and fit > positions:
            advice = (f"The preset has {positions} positions, which {setting} {sequence_length} already uses: "
                      f"shorten the texts to fit" if sequence_length >= positions else
                      f"Raise it with --set {setting}={positions}, the most the preset's positions allow "
                      f"({fit} would fit {share})")
        else:
            advice = f"Raise it with --set {setting}={fit} (fits {share})"
        errors.warn(f"{long:,} of {len(lengths):,} training {side}s are longer than the {room} tokens {where} "
                    f"({setting} {sequence_length}; longest {lengths.max()} tokens): {cost.format(room=room)}. "
                    f"{advice}.")


def enough(lengths, now, extra):
    """A sequence length that fits 95% of `lengths` (`extra`: the special tokens packed with each), or all of
    them where that is no more than the length `now`."""
    fit = int(np.ceil(np.percentile(lengths, 95))) + extra
    return fit if fit > now else int(lengths.max()) + extra


LENGTH_STEP = 4  # trimmed batch lengths are multiples of this: few distinct shapes to trace


def _trim(x, y, sample_weight, trim_encoder=True):
    """Cuts a batch's padding columns: decoder (and encoder) to their longest row (rounded up to LENGTH_STEP)."""
    def longest(mask, full):
        n = tf.reduce_max(tf.reduce_sum(tf.cast(mask, tf.int32), axis=-1))
        return tf.minimum(-(-n // LENGTH_STEP) * LENGTH_STEP, full)

    encoder = tf.shape(x["encoder_token_ids"])[1]
    if trim_encoder:
        encoder = longest(x["encoder_padding_mask"], encoder)
    decoder = longest(sample_weight, tf.shape(y)[1])
    x = {k: v[:, :encoder] if k.startswith("encoder") else v[:, :decoder] for k, v in x.items()}
    return x, y[:, :decoder], sample_weight[:, :decoder]


def pair_dataset(split, preprocessor, batch_size, shuffle=False, seed=None, bucket=False,
                 output_vocabulary_size=None, trim_encoder=True):
    """`(x, y, sample_weight)` batches: tokenized and packed once (`tfllm.data.preprocess`), then shuffled and batched.

    With `output_vocabulary_size` (the decoder's softmax width), a label the
    decoder cannot score (a token seen only in validation targets) becomes
    `[UNK]`.

    With `bucket`, pairs of similar target length are batched together and
    each batch drops its padding columns, so a batch of short glosses costs
    what its tokens cost, not what the longest possible target would.
    `trim_encoder=False` keeps sources at full length, so the batches come
    in only as many shapes as there are target buckets: few enough for XLA
    to compile each once.
    """
    x, y, w = preprocess({"encoder_text": split.sources, "decoder_text": split.targets}, preprocessor)
    if output_vocabulary_size:
        size, unk = int(output_vocabulary_size), int(preprocessor.tokenizer.unk_token_id)
        y = tf.where(y < size, y, unk)
    ds = tf.data.Dataset.from_tensor_slices((x, y, w))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if not bucket:
        return untuned(ds.batch(batch_size).prefetch(AUTOTUNE))
    full = int(preprocessor.decoder_sequence_length)
    boundaries = list(range(LENGTH_STEP + 1, full + 1, LENGTH_STEP))
    ds = ds.bucket_by_sequence_length(
        lambda x, y, w: tf.reduce_sum(tf.cast(w, tf.int32)), bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1))
    return untuned(
        ds.map(lambda x, y, w: _trim(x, y, w, trim_encoder), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE))


def compile_model(model, preset, steps_per_epoch):
    learning_rate = preset["learning_rate"]
    if preset.get("warmup_fraction"):
        total = max(2, steps_per_epoch * preset["epochs"])
        warmup = max(1, int(total * preset["warmup_fraction"]))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=preset["learning_rate"], warmup_steps=warmup,
            alpha=0.05)
    if preset.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=preset["weight_decay"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    return common.compile_task(
        model,
        optimizer=optimizer,
        # The mean over target tokens: padding slots are weighted 0, and Keras' default reduction
        # divides by every slot, which read the loss low by the share of padding (as pretraining's).
        loss=SmoothedSparseCrossentropy(preset.get("label_smoothing", 0.0), reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=preset.get("jit_compile"),  # unset: Keras' "auto"
        steps_per_execution=preset.get("steps_per_execution", 1),
    )


def split_report(translator, split, **options):
    """Translations of a split (greedy unless told) and their metrics against every reference."""
    outputs = translator.translate(split.sources, warn=False, **options) if len(split) else []
    return translation_report(outputs, split.references), outputs


def write_samples(run_dir, split, outputs, count=SAMPLE_TRANSLATIONS):
    """A table of test translations (source, references, output) in TensorBoard's Text tab."""
    def cell(text):
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| source | references | output |", "|---|---|---|"]
    for source, refs, out in list(zip(split.sources, split.references, outputs))[:count]:
        lines.append(f"| {cell(source)} | {cell(' / '.join(refs))} | {cell(out)} |")
    from tfllm.training.reporting import once_writer

    with once_writer(os.path.join(run_dir, runs.LOGS), "test_translations"):  # once, also when a resume writes it again
        tf.summary.text("test_translations", "\n".join(lines), step=0)


def train_seq2seq(config, verbose="auto"):
    """Trains, evaluates and saves a translation model as `config` says; returns the metrics dict."""
    common.check_config(config, "translate")
    # Classification's column flags were accepted and ignored (the run read --source-column/--target-column).
    for flag, value, default in (("--text-column", config.text_column, "text"),
                                 ("--label-column", config.label_column, "label"), ("--labels", config.labels, None)):
        if value not in (None, default):
            raise UserInputError(f"{flag} is not for --task translate, which reads --source-column and "
                                 "--target-column; leave it out.")
    strategy = common.get_strategy(config.strategy)
    preset = common.resumed_recipe(config, translation_preset(config))
    common.check_global_batch(preset["batch_size"], strategy)
    common.check_multi_worker_recipe(preset, strategy)
    # Everything that can fail on bad input happens before the run directory is touched.
    common.check_run_dir(config)
    data = load_data(config, preset, training=True)
    if verbose:  # verbose=0 silences tfllm's progress lines as it does Keras' (train_classifier)
        print(describe(data), flush=True)
    warn_about_small_splits(config.data, data, "source text")  # chrF and exact match of a few are noise
    keras.utils.set_random_seed(config.seed)
    run_dir = common.worker_run_dir(config.run_dir, strategy)
    resume, previous = runs.prepare(run_dir, overwrite=config.overwrite, config=config)
    with common.guarded_run(run_dir, resume, previous, backup_dir=os.path.join(config.run_dir, common.BACKUP)):
        # One tokenizer for both sides, target tokens first; case is kept unless the preset says otherwise.
        tokenizer = common.start_run(run_dir, config, preset, resume, data.train.sources + data.train.targets,
                                     lowercase=False, targets=data.train.targets)
        with strategy.scope(), common.precision_scope(config.precision):
            if config.from_preset:
                model = model_from_preset(config.from_preset, preset)
                runs.write_json(runs.path(run_dir, runs.RECIPE), preset)  # the lengths it has, if capped
                # A run whose vocabulary lacks the new data's text trained its targets as [UNK] without a word
                # (every metric 0, then empty translations), as classification and generation warn of.
                for texts, what, consequence in (
                        (data.train.sources, "training sources", ", so sources made of them all look alike to it"),
                        (data.train.targets, "training targets", " and translates into [UNK] (empty text)")):
                    ids = token_rows(model.preprocessor.tokenizer, texts[:2000])
                    common.warn_unknown_tokens(config.from_preset, model.preprocessor.tokenizer,
                                               np.concatenate(ids) if ids else [], what, consequence)
            else:
                # The decoder's softmax covers the tokens of training targets only (see targets_first).
                model = own_model(preset, tokenizer, tokenizers.output_vocabulary_size(tokenizer, data.train.targets))
                # Chinese targets in `--preset tiny`'s 100 tokens: 91% [UNK], chrF 0 and empty translations, without
                # a word (a causal run's text is warned of so).
                ids = token_rows(tokenizer, data.train.targets[:2000])
                common.warn_unknown_in_own_vocabulary(tokenizer, np.concatenate(ids) if ids else [],
                                                      preset["vocabulary_size"], what="training targets")
            for texts, side in ((data.train.sources, "source"), (data.train.targets, "target")):
                # A preset's backbone has its positions (a from-scratch model's are made to the settings).
                positions = (getattr(model.backbone, CUT[side][1], None)
                             or getattr(model.backbone, "max_sequence_length", None)) if config.from_preset else None
                warn_of_cut_texts(texts, model.preprocessor.tokenizer,
                                  getattr(model.preprocessor, CUT[side][1]), side, positions)
            compile_model(model, preset, steps_per_epoch=-(-len(data.train) // preset["batch_size"]))
            # A token the decoder cannot score (in validation targets, or in new data for a fine-tuned
            # tfllm run) is learned as [UNK]. Under XLA, sources keep their full length, since XLA
            # compiles once per batch shape.
            batches = dict(bucket=bool(preset.get("bucket_by_length")), trim_encoder=not model.jit_compile,
                           output_vocabulary_size=getattr(model.backbone, "target_vocabulary_size", None))
            train_ds = pair_dataset(data.train, model.preprocessor, preset["batch_size"], shuffle=True,
                                    seed=config.seed, **batches)
            val_ds = pair_dataset(data.val, model.preprocessor, preset["batch_size"], **batches)
            common.adapt_model_to_strategy(model, strategy)
        callbacks = common.make_callbacks(
            run_dir,
            early_stopping_patience=2 if preset.get("early_stopping") else None,
            write_logs=common.is_chief(strategy),
            backup_dir=os.path.join(config.run_dir, common.BACKUP),
        )
        budget = None
        if preset.get("max_train_seconds"):
            budget = TimeBudget(preset["max_train_seconds"])
            callbacks.append(budget)
        start = time.perf_counter()
        # Measured as fit ends and kept in the backup: a run resumed after that reports its training's figures.
        common.measure_fit(callbacks, lambda: {"train_seconds": round(time.perf_counter() - start, 1),
                                               "stopped_by_time_budget": bool(budget and budget.stopped)})
        with common.unknown_length_ok(), common.preprocessed(model), \
                common.eager_evaluation(model, common.dataset_batches(val_ds, preset["epochs"]), strategy):
            fitted = model.fit(train_ds, validation_data=val_ds if len(data.val) else None, epochs=preset["epochs"],
                               shuffle=False, callbacks=callbacks, verbose=verbose)
        best = os.path.join(run_dir, common.BEST_WEIGHTS)
        if os.path.exists(best):
            model.load_weights(best)  # the checkpoint of the lowest val loss (removed when the run is saved)

        translator = Translator(model)
        start = time.perf_counter()
        val_report, _ = split_report(translator, data.val)
        test_report, test_outputs = split_report(translator, data.test)
        decode_seconds = time.perf_counter() - start
        if common.is_chief(strategy):
            write_samples(run_dir, data.test, test_outputs)
        metrics = {
            "val": val_report,
            "test": test_report,
            "decoding": "greedy",
            "references": "all references count for chrf, bleu and exact_match; training used the first",
            **common.fit_figures(callbacks, ("train_seconds", "stopped_by_time_budget")),
            "decode_seconds": round(decode_seconds, 1),
            "epochs_run": common.epochs_completed(callbacks, len(fitted.history.get("loss", []))),
            "num_train_examples": len(data.train),
            "parameters": int(model.count_params()),
        }
        common.finish_run(run_dir, config.run_dir, model, preset, dict(fitted.history), metrics)
        return metrics


def evaluate_run(run_dir, data=None, source_column=None, target_column=None, split_column=None, split="test",
                 sampler=None, num_beams=None, memory=None, lm=None, input_method=False):
    """Metrics of a finished translation run on a split of its own data (as it was split) or of `data`."""
    from tfllm.translation import cached_translator

    runs.require_task(run_dir, "translate")
    config = runs.read_train_config(run_dir)
    recipe = runs.read_recipe(run_dir)
    if split not in ("train", "val", "test"):
        raise UserInputError(f"Unknown split {split!r}; choose train, val or test.")
    if data and not same_data(data, config.data):
        # Another file, in the run's columns unless told: its split where it names splits, else all of it.
        source_column, target_column = run_columns(config, source_column, target_column)
        separator = reference_separator(config, recipe, target_column)
        if split_column:  # exactly the rows it names (none carved out of its train rows for a split it lacks)
            pairs = read_split(data, split, source_column, target_column, split_column, reference_separator=separator,
                               group_sources=True)
        elif split != "test":  # it was ignored: the whole file was scored under the split's name
            raise UserInputError(f"--split {split} needs --split-column: without one, {data!r} is scored whole. "
                                 "Name the column of train/val/test, or leave --split out.")
        else:
            pairs = read_pairs(data, source_column, target_column, reference_separator=separator, group_sources=True)
    else:  # exactly the run's own split
        own = config.split_column or BUNDLED_PAIRS.get(config.data, (None, {}))[1].get("split_column")
        if split_column and split_column != own:  # it was ignored: the run's own split was scored
            how = f"by its column {own!r}" if own else "by the run's seed"
            raise UserInputError(f"--split-column {split_column}: {config.data!r} is the run's own data, scored as the "
                                 f"run split it ({how}); leave --split-column out.")
        if source_column or target_column:  # ignored: the run's own pairs are read in its own columns
            given = [f for f, v in (("--source-column", source_column), ("--target-column", target_column)) if v]
            names, them = ("names a column", "it") if len(given) == 1 else ("name the columns", "them")
            raise UserInputError(f"{' and '.join(given)} {names} of another --data file; {config.data!r} is the "
                                 "run's own data, read in its own columns (and so is a --memory file); leave "
                                 f"{them} out, or add --data FILE.")
        runs.check_data_unchanged(run_dir, config.data)
        pairs = getattr(run_data(config, recipe, f"Evaluating its {split} split",
                                 ", or score a file of pairs with --data FILE"), split)
    if not len(pairs):
        raise UserInputError(f"The {split} split of {config.data!r} is empty; choose another --split.")
    scored = data if data and not same_data(data, config.data) else config.data
    if memory and memory != "train" and same_data(memory, scored):  # scored 100 chrF: it looked the answers up
        raise UserInputError(f"--memory {memory} is the data being scored, so the memory holds the {split} pairs' "
                             "own translations; use --memory train (the run's training pairs) or another file of pairs.")
    if memory == "train" and split == "train" and scored == config.data:
        raise UserInputError("--memory train holds the train split being scored, so it looks up each pair's own "
                             "translation; score --split val or test with it, or leave --memory out.")
    memory = run_memory(run_dir, memory) if memory else None
    translator = cached_translator(run_dir)  # tfllm.translate's: loaded once per process, not once a call
    ngram, method = run_decoding_aids(translator, run_dir, lm, input_method)
    report, _ = split_report(translator, pairs, sampler=sampler, num_beams=num_beams, memory=memory,
                             lm=ngram if lm else None, input_method=method)
    return report  # as every task's evaluation: the metrics themselves (this was {split: metrics} alone)


def run_columns(config, source_column=None, target_column=None):
    """The source and target columns a file of pairs has for a run: as given, else as the run was trained
    (the flags, or its bundled data's own, which are recorded as None)."""
    bundled = BUNDLED_PAIRS.get(config.data, (None, {}))[1]
    return (source_column or config.source_column or bundled.get("source_column"),
            target_column or config.target_column or bundled.get("target_column"))


def reference_separator(config, recipe, target_column):
    """What splits a target of a file of pairs into references for a run: its recipe's `reference_separator`,
    else its bundled data's for that column. A file in the run's bundled pairs' columns ('english': cedict's
    '/'-joined glosses) is read as the run's data was: each gloss a reference (evaluate scored the joined
    string, exact match 0 for an output that was one of them) and a memory's answer the first gloss."""
    bundled = BUNDLED_PAIRS.get(config.data, (None, {"reference_separators": {}}))[1]
    return recipe.get("reference_separator") or bundled["reference_separators"].get(target_column)


def run_memory(run_dir, pairs="train", source_column=None, target_column=None, named=False):
    """A `TranslationMemory` for `Translator.translate(memory=...)`.

    `pairs`: "train" for the run's own training pairs (as it split them), or a
    file of pairs (every row counts) whose columns are `source_column` and
    `target_column`, by default the run's. Each pair's first reference is its target.
    `named`: the caller can name those columns (`tfllm translate`'s --source-column and --target-column);
    a file without the run's columns is then told to pass them, else to rename its columns.
    """
    from tfllm.memory import TranslationMemory

    config = runs.read_train_config(run_dir)
    recipe = runs.read_recipe(run_dir)
    if pairs == "train":
        part = run_data(config, recipe, "--memory train", ", or pass --memory PAIRS (a file of pairs)").train
    else:
        columns = run_columns(config, source_column, target_column)
        # `tfllm evaluate`'s --source-column names --data's column, and `tfllm.translate` has none: "Pass
        # --source-column" was a fix that did not work there.
        fix = None if named else (f"Name its columns {columns[0]!r} and {columns[1]!r}, as the run's (`tfllm "
                                  "translate --memory` alone reads other columns: --source-column, --target-column).")
        part = read_pairs(pairs, *columns, reference_separator=reference_separator(config, recipe, columns[1]),
                          flag="--memory", column_fix=fix)
    return TranslationMemory(part.sources, [references[0] for references in part.references])


def run_decoding_aids(translator, run_dir, corpus=None, input_method=False):
    """`(lm, input_method)` for `Translator.translate(lm=..., input_method=...)`, reading the run's pairs once.

    `lm`: an `NgramLM` of the run's own training targets plus the lines of
    `corpus` (a bundled text such as `zh_news`, or a `.txt`/`.csv`/`.jsonl`
    file in the target language): the training targets teach where outputs
    end; the corpus, which character sequences are words. None when neither
    `corpus` nor `input_method` is asked for.
    `input_method`: an `InputMethod` of the run's training pairs, scored by
    `lm` and counting whole candidates in `corpus`; None unless asked for.
    """
    from tfllm.datasets.text import load_text_corpus
    from tfllm.input_method import InputMethod, refuse_unaligned

    if not (corpus or input_method):
        return None, None
    config = runs.read_train_config(run_dir)
    train = run_data(config, runs.read_recipe(run_dir), "--input-method" if input_method else "--lm").train
    targets = [references[0] for references in train.references]
    if input_method:
        # Before the corpus is read and the n-gram model built: `--input-method --lm zh_news` on a run whose pairs
        # do not line up warned of the corpus ("97% of the tokens of --lm zh_news ...") and then refused the command.
        refuse_unaligned(train.sources, targets)
    # Whole, every line once: its train/validation split cuts a .txt mid-line (two made-up words where a
    # .csv of the same lines, split between rows, had none), and an n-gram model validates nothing.
    text = load_text_corpus(corpus, flag="--lm", whole=True) if corpus else ""
    lines = [line for line in text.splitlines() if line.strip()]
    lm = translator.language_model(targets, lines, corpus)
    if not input_method:
        return lm, None
    ids = {token: i for i, token in enumerate(translator.tokenizer.get_vocabulary())}
    return lm, InputMethod(train.sources, targets, lm, lambda character: ids.get(character, translator.unk_id),
                           corpus=lines)
