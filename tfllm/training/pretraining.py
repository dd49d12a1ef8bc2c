"""Pretraining on unlabeled text: an encoder as a masked LM or with count-based word vectors,
or a decoder on next-token prediction.

The masked-LM objective is KerasHub's: `MaskedLMPreprocessor` (its
`MaskedLMMaskGenerator` hides 15% of the tokens; in training the same rules
draw from the seed, `seeded_masking`, so a seeded run repeats) and `MaskedLM`
with a `MaskedLMHead` tied to the token embedding. The run directory is a preset
holding the `MaskedLM` task, so `tfllm train --task classify --from-preset
RUN_DIR` fine-tunes its backbone with its tokenizer; `evaluate_run` (`tfllm
evaluate`) scores it on text as its validation was scored, masked from one fixed
seed (`VALIDATION_SEED`). The causal objective is
`tfllm.training.causal_lm`'s trainer on the same kinds of text; its run is a
`CausalLM` preset that `tfllm generate` and `--task generate --from-preset` take.
The word-vector objective (`tfllm.word_vectors`) sets the same `MaskedLM`'s
token embedding to PPMI-SVD vectors of the text and leaves its blocks as they
start: seconds of counting that pay where little text and few labels make a
masked LM learn nothing (docs/benchmarks.md, "Few labels").
"""

import dataclasses
import math
import os
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm import errors, runs, tokenizers, word_vectors
from tfllm.data import preprocess, tensorflow_path, untuned
from tfllm.datasets import is_table
from tfllm.datasets.text import check_text_column, load_documents
from tfllm.errors import UserInputError, shell_path
from tfllm.models import EncoderBackbone, MaskedLM, MaskedLMPreprocessor
from tfllm.models.encoder_backbone import BACKBONE_ARGS
from tfllm.models.masked_lm import autocast_head
from tfllm.training import common

OBJECTIVES = ("mlm", "causal", "vectors")
# The seed of validation's masks, in pretraining and in `evaluate_run`, whatever the run's --seed: a text is masked
# alike every time, so `tfllm evaluate RUN` repeats metrics.json's val figures and two runs compare on one masking.
VALIDATION_SEED = 0
MASKED_CHUNK = 8192  # documents masked in one eager call (`_fixed_masked_batches`), each chunk its own seed
NEIGHBOURS_SHOWN = 8  # frequent tokens whose nearest neighbours the vectors run prints and reports


def masked_lm_preset(config):
    preset = common.fit_to_positions(config, common.step_recipe("pretrain", config))
    # Whole epochs (Keras' steps_per_epoch) as near `steps` as they come, never more: `steps` was rounded to a
    # multiple of eval_interval, so --steps 15 trained 20 steps, the last 5 past the schedule's end at a
    # learning rate of 0. As the causal objective does (causal_lm.steps_per_epoch), the epoch shrinks instead.
    epochs = max(1, round(preset["steps"] / min(preset["eval_interval"], preset["steps"])))
    preset["eval_interval"] = preset["steps"] // epochs
    preset["steps"] = epochs * preset["eval_interval"]  # what trains, and what the schedule decays over
    return preset


@common.preset_files
def masked_lm_from_preset(handle, preset):
    """A `MaskedLM` over a preset's encoder backbone and tokenizer (tfllm's or any KerasHub one)."""
    from tfllm.training.classifier import is_seq2seq, preset_backbone_class, preset_max_length, seq2seq_refusal

    backbone_cls = preset_backbone_class(handle)
    try:
        preprocessor = keras_hub.models.MaskedLMPreprocessor.from_preset(
            handle, sequence_length=preset_max_length(handle, preset["sequence_length"]), mask_selection_rate=preset["mask_selection_rate"],
            mask_selection_length=_mask_length(preset))
        return autocast_head(keras_hub.models.MaskedLM.from_preset(handle, preprocessor=preprocessor,
                                                                   **common.preset_dtype(handle)))
    except ValueError as e:
        if is_seq2seq(backbone_cls):  # BART was told to "use --objective causal for a decoder", which failed too
            raise seq2seq_refusal(handle, backbone_cls, "masked LM") from None
        raise UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}) has no masked LM in KerasHub "
                             f"({str(e).splitlines()[0]}); use --objective causal for a decoder.") from None


def _mask_length(preset):
    return max(1, math.ceil(preset["sequence_length"] * preset["mask_selection_rate"]))


def own_masked_lm(preset, tokenizer):
    backbone = EncoderBackbone(vocabulary_size=tokenizer.vocabulary_size(),
                               **{k: preset[k] for k in BACKBONE_ARGS if k in preset and k != "vocabulary_size"})
    preprocessor = MaskedLMPreprocessor(tokenizer, sequence_length=preset["sequence_length"],
                                        mask_selection_rate=preset["mask_selection_rate"],
                                        mask_selection_length=_mask_length(preset))
    return MaskedLM(backbone, preprocessor=preprocessor)


def _compile(model, preset):
    steps, warmup = preset["steps"], max(1, int(preset["steps"] * preset.get("warmup_fraction", 0.0)))
    schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(steps - warmup, 1), warmup_steps=warmup,
                                                      warmup_target=preset["learning_rate"])
    common.compile_task(
        model,
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=preset.get("weight_decay", 0.0)),
        # The mean over the masked tokens: the mask has `mask_selection_length` slots, the unused ones
        # weighted 0; Keras' default divides by every slot, which read the loss (and perplexity) low
        # by the share of slots a short text leaves empty.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        # The loss above is each batch's mean, and Keras averages those weighted by batch size, so a
        # batch of short texts (few masked tokens) counted as much as one of long texts. This
        # weighted metric sums nll and masked tokens across batches: the validation set's exact mean.
        # metrics.json's val loss is this one; TensorBoard plots both (`loss` and `masked_loss`), and
        # docs/architecture.md says which curve metrics.json equals.
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy"),
                          keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="masked_loss")],
        jit_compile=preset.get("jit_compile"),
        unset=False,
    )


def _masked_batches(documents, preprocessor, batch_size, repeat=False, seed=None):
    # Masks are drawn afresh for every batch (the preprocessor runs inside the pipeline), from the
    # batch's number and `seed`: a seeded run masks the same tokens every time (seeded_masking).
    ds = tf.data.Dataset.from_tensor_slices(documents)
    if repeat:
        ds = ds.shuffle(len(documents), seed=seed, reshuffle_each_iteration=True).repeat()
    return untuned(ds.batch(batch_size).enumerate().map(seeded_masking(preprocessor, seed or 0),
                                                         num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def seeded_masking(preprocessor, seed):
    """`(batch number, texts) -> preprocessor(texts)` whose masker draws from stateless random ops.

    KerasHub's `MaskedLMMaskGenerator` draws from TensorFlow Text's stateful
    `random_shuffle`, called once per text in a `map_fn` that runs its rows
    in parallel inside a `tf.data` map, and from one stateful `random_uniform`
    shared by the map's parallel calls: which text gets which draw depends on
    thread timing, so two runs with one `--seed` masked different tokens and
    ended at different losses. The same masking (the same rate, cap, unselectable
    ids and 80/10/10 split) from `stateless_mask`, seeded by the batch's number,
    is the same in every run, in any order.
    """
    if not preprocessor.built:
        preprocessor.build(None)  # KerasHub makes the masker there
    masker = preprocessor.masker

    def mask(number, texts):
        batch_seed = tf.stack([tf.constant(seed, tf.int64), number])
        # PRIVATE API: the masker is an attribute KerasHub's `MaskedLMPreprocessor` calls in
        # `_call_tf` (keras-hub 0.32); set past Keras' attribute tracking while this map traces.
        object.__setattr__(preprocessor, "masker", lambda token_ids: stateless_mask(masker, token_ids, batch_seed))
        try:
            return preprocessor(texts)
        finally:
            object.__setattr__(preprocessor, "masker", masker)

    return mask


def stateless_mask(masker, token_ids, seed):
    """`masker`'s (a `MaskedLMMaskGenerator`'s) outputs for dense `token_ids`, drawn from `seed`.

    As TensorFlow Text's `RandomItemSelector` and `MaskValuesChooser` do: a text's
    selectable tokens (not `unselectable_token_ids`) are picked at random, ceil(rate
    x count) of them but at most `mask_selection_length`, positions ascending;
    each becomes the mask token (80%), a random id (10%) or stays (10%).
    """
    token_ids = tf.convert_to_tensor(token_ids)
    select_seed, value_seed, token_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    length = tf.shape(token_ids)[1]
    slots = masker.mask_selection_length
    unselectable = tf.constant(list(masker.unselectable_token_ids or [-1]), token_ids.dtype)
    selectable = tf.reduce_all(token_ids[..., None] != unselectable, axis=-1)
    count = tf.minimum(tf.math.ceil(tf.reduce_sum(tf.cast(selectable, tf.float32), 1) * masker.mask_selection_rate),
                       float(slots))
    # Selectable positions in a random order first (scores below 1), the others after (2).
    scores = tf.where(selectable, tf.random.stateless_uniform(tf.shape(token_ids), select_seed), 2.0)
    picked = tf.argsort(scores, axis=1)[:, :slots]
    used = tf.range(tf.shape(picked)[1])[None, :] < tf.cast(count, tf.int32)[:, None]
    # Ascending positions, the unused slots last (sorted as `length`) and then 0, as KerasHub pads them.
    positions = tf.sort(tf.where(used, picked, length), axis=1)
    positions = tf.pad(tf.where(used, positions, 0), [[0, 0], [0, slots - tf.shape(picked)[1]]])
    used = tf.pad(used, [[0, 0], [0, slots - tf.shape(used)[1]]])
    mask_ids = tf.where(used, tf.gather(token_ids, positions, batch_dims=1), 0)
    draw = tf.random.stateless_uniform(tf.shape(positions), value_seed)
    random_ids = tf.random.stateless_uniform(tf.shape(positions), token_seed, maxval=masker.vocabulary_size,
                                             dtype=tf.int32)
    values = tf.where(draw < masker.mask_token_rate, tf.cast(masker.mask_token_id, token_ids.dtype),
                      tf.where(draw < masker.mask_token_rate + masker.random_token_rate,
                               tf.cast(random_ids, token_ids.dtype), mask_ids))
    rows = tf.broadcast_to(tf.range(tf.shape(positions)[0])[:, None], tf.shape(positions))
    where = tf.boolean_mask(tf.stack([rows, positions], -1), used)
    return {"token_ids": tf.tensor_scatter_nd_update(token_ids, where, tf.boolean_mask(values, used)),
            "mask_positions": tf.cast(positions, "int64"),
            "mask_ids": mask_ids,
            "mask_weights": tf.cast(used, masker.compute_dtype)}


def _fixed_masked_batches(documents, preprocessor, batch_size, seed=VALIDATION_SEED):
    # One masking, drawn once, without a traced map (`preprocess`: 1-1.5 s less for a tiny run), by the stateless
    # masker training draws from (`seeded_masking`), each chunk of documents from `seed` and its number: the same
    # tokens of the same text in every run and in `evaluate_run`. (KerasHub's masker drew from the state the rest
    # of the run had left the global seed in, which nothing after the run could draw again.)
    tensorflow_path(preprocessor)
    mask = seeded_masking(preprocessor, seed)
    parts = [preprocess(documents[start:start + MASKED_CHUNK], chunk_size=MASKED_CHUNK,
                        preprocessor=lambda texts, number=number: mask(tf.constant(number, tf.int64), texts))
             for number, start in enumerate(range(0, max(len(documents), 1), MASKED_CHUNK))]
    inputs = tf.nest.map_structure(lambda *chunks: tf.concat(chunks, 0), *parts)
    return untuned(tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size))


# Documents whose length `pretrain` measures against the masked LM's window (a seeded sample of a larger corpus).
LENGTH_SAMPLE = 2000


def _sample_ids(documents, tokenize, seed=0):
    """The token ids, flat, of the documents (of a seeded sample of `LENGTH_SAMPLE` of them, when more)."""
    if len(documents) > LENGTH_SAMPLE:
        picked = np.sort(np.random.default_rng(seed).choice(len(documents), LENGTH_SAMPLE, replace=False))
        documents = [documents[i] for i in picked]
    if not len(documents):
        return np.zeros([0], "int64")
    ids = tokenize(tf.constant(list(documents)))
    # A KerasHub tokenizer answers a RaggedTensor, or lists of ids when it runs eagerly outside tf.data.
    return np.asarray(ids.flat_values) if hasattr(ids, "flat_values") else np.concatenate(
        [np.asarray(row, "int64").ravel() for row in ids] + [np.zeros([0], "int64")])


def long_document_note(documents, tokenize, sequence_length, positions=None, seed=0, classifier=False):
    """One line saying how much of the documents the masked LM never reads, or None when every document fits.

    The masked LM reads each document's first `sequence_length` tokens less its [CLS] and [SEP]; the rest is
    cut off by the preprocessor, in every epoch (the causal objective reads running text in windows, all of it).
    `tokenize`: strings -> token ids (a `RaggedTensor` or lists); a corpus of more than `LENGTH_SAMPLE` documents is
    measured on a seeded sample of that many. `positions`: the most a --from-preset backbone takes. A classifier
    (`classifier=True`) reads its training texts' first tokens alike, and a text is one label, so its fix is the
    longer window alone (a masked LM's documents can be split into shorter lines)."""
    reader, what = ("the classifier", "training texts") if classifier else ("the masked LM", "training documents")
    window = max(1, sequence_length - 2)
    total = len(documents)
    sample = documents
    if total > LENGTH_SAMPLE:
        picked = np.sort(np.random.default_rng(seed).choice(total, LENGTH_SAMPLE, replace=False))
        sample = [documents[i] for i in picked]
    if not len(sample):
        return None
    ids = tokenize(tf.constant(list(sample)))
    # A KerasHub tokenizer answers a RaggedTensor, or lists of ids when it runs eagerly outside tf.data.
    lengths = np.asarray(ids.row_lengths() if hasattr(ids, "row_lengths") else [len(row) for row in ids])
    long = lengths[lengths > window]
    if not len(long):
        return None
    unread = int((long - window).sum())
    measured = (f"{len(long):,} of the {len(sample):,} {what}" if len(sample) == total else
                f"{len(long):,} of a sample of {len(sample):,} of the {total:,} {what}")
    at_most = positions and sequence_length >= positions
    if at_most:
        fix = f"sequence_length is at this preset's {positions} positions already"
    elif positions:  # `--set sequence_length=N`: a Python caller reads `overrides={'sequence_length': N}` (note)
        fix = f"raise it with --set sequence_length=N up to this preset's {positions} positions"
    else:
        fix = f"raise it with --set sequence_length=N (now {sequence_length}; each step costs more)"
    if classifier:  # a text is one label: it cannot be split as running text splits into documents
        advice = f"Its {fix}." if at_most else f"{fix[0].upper()}{fix[1:]}."
    else:
        advice = f"Split the text into shorter lines (documents){f' ({fix})' if at_most else f', or {fix}'}."
    return (f"tfllm: note: {measured} are longer than {reader}'s window of {window} tokens "
            f"(sequence_length {sequence_length}): {unread / long.sum():.0%} of their tokens "
            f"({_share(unread / lengths.sum())} of all) are never read. {advice}")


def _share(fraction):
    """A fraction as a whole percentage, or "under 1%": `default`'s note on rotten_tomatoes said "(0% of all)"
    of tokens that are never read."""
    return "under 1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"


def _masked_tokens(batches):
    """How many tokens the masking of `_fixed_masked_batches`' `batches` picked to score (their weights' sum)."""
    return int(sum(float(tf.reduce_sum(weights)) for _, _, weights in batches))


def _unknown_share(documents, tokenizer):
    """The share of the documents' tokens (of a sample of `LENGTH_SAMPLE` of them) that are [UNK] to `tokenizer`."""
    unk = tokenizers.unknown_token_id(tokenizer)
    ids = _sample_ids(documents, tokenizer)
    return float((ids == unk).mean()) if unk is not None and len(ids) else 0.0


# Why a masked LM's figures can score nothing: KerasHub's masker (and `stateless_mask`, its seeded copy) never picks
# a special token, [UNK] included, so text its vocabulary does not cover has no token to mask. Keras' weighted mean
# over no token is 0: a loss of 0.0 and a "perfect" perplexity of 1.0, as if every token had been predicted.
NOTHING_MASKED = ("every token the masked LM reads of {what} is [UNK], text {vocabulary} has no token for, and it never "
                  "masks [UNK]")


def _validation_metrics(model, val_ds):
    """Loss, masked accuracy and perplexity over every masked token of `val_ds` (a compiled `_compile`
    model with its preprocessor detached)."""
    val = model.evaluate(val_ds, verbose=0, return_dict=True)
    loss = float(val["masked_loss"])  # not val["loss"], a mean of per-batch means (see _compile)
    return {"loss": round(loss, 4), "masked_accuracy": round(float(val["masked_accuracy"]), 4),
            "perplexity": round(math.exp(min(loss, 50.0)), 3)}


def evaluate_run(run_dir, data=None, text_column=None):
    """Loss, masked-token accuracy and perplexity of a masked-LM pretraining run on text, named as its
    metrics.json's val figures.

    `data` is a text file, a folder of `.txt` files, a CSV/JSONL (its `text_column`, by default the run's) or a
    bundled corpus, every document of it scored; by default the run's own validation documents, as its pretraining
    split them. Either way masked as pretraining's validation was (`VALIDATION_SEED`), so two evaluations agree
    and the run's own text repeats metrics.json's figures.
    """
    config = runs.read_train_config(run_dir)
    if config.objective == "vectors":  # counted, never trained to predict a token: nothing to score it on
        raise UserInputError(f"{run_dir!r} holds a word-vector pretraining run: its validation figures are in "
                             f"{runs.path(run_dir, runs.METRICS)}. To score it on a task, fine-tune it and evaluate "
                             f"that run: tfllm train --task classify --data DATA --from-preset "
                             f"{shell_path(run_dir)}.")
    if data and text_column is None and is_table(data):  # as a generator's: a CSV/JSONL in the run's column
        text_column = config.text_column
    if data:
        check_text_column(data, text_column)
        train_docs, val_docs = load_documents(data, text_column=text_column)
        documents = train_docs + val_docs
    else:
        runs.check_data_unchanged(run_dir, config.data)
        documents = load_documents(config.data, text_column=config.text_column, max_rows=config.max_rows)[1]
    # The run's own dtype policy (load_task); a KerasHub preset's head casts under a mixed one as tfllm's does.
    model = autocast_head(runs.load_task(run_dir, keras_hub.models.MaskedLM))
    recipe = runs.read_recipe(run_dir)
    _compile(model, {**recipe, "jit_compile": False})  # scored once: no XLA program to compile
    batches = _fixed_masked_batches(documents, model.preprocessor, recipe["batch_size"])
    tokenizer = model.preprocessor.tokenizer
    named = f"--data {data!r}" if data else f"the validation documents of {config.data!r}"
    if not _masked_tokens(batches):  # it answered loss 0.0 and perplexity 1.0, a perfect score, exit 0
        vocabulary = f"this run's vocabulary of {tokenizer.vocabulary_size()} tokens"
        raise UserInputError(f"Nothing of {named} can be scored: "
                             f"{NOTHING_MASKED.format(what='it', vocabulary=vocabulary)}. Evaluate the run on text "
                             "like its training text.")
    unknown = _unknown_share(documents, tokenizer)
    if data and unknown > common.OWN_UNKNOWN_SHARE:  # as the causal objective's evaluation warns
        errors.warn(f"{unknown:.1%} of the tokens of --data {data!r} are [UNK] (text the tokenizer has no token "
                    f"for); the masked LM never masks [UNK], so the loss, masked accuracy and perplexity score only "
                    f"the other {1 - unknown:.1%}.")
    with common.unknown_length_ok(), common.preprocessed(model):
        return {**_validation_metrics(model, batches), "num_documents": len(documents)}


def pretrain(config, verbose="auto"):
    """Pretrains as `config` says (`config.objective`: "mlm", "causal" or "vectors"); returns the metrics dict
    (metrics.json's). `tfllm pretrain` in Python, as `tfllm.pretrain`.

    Example:
    >>> import tfllm
    >>> metrics = tfllm.pretrain(tfllm.TrainConfig(task="pretrain", data="rotten_tomatoes", objective="mlm",
    ...                                            run_dir="runs/reviews-mlm"))
    >>> metrics["val"]["perplexity"]  # the held-out documents' masked-token perplexity
    """
    common.check_config(config, "pretrain")
    objective = config.objective or "mlm"
    if objective not in OBJECTIVES:
        raise UserInputError(f"Unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    # Recorded as trained: a Python call without one saved objective None, and its run was then loaded, exported and
    # evaluated as a causal LM ("Unable to find a subclass of CausalLM that is compatible with EncoderBackbone").
    config = dataclasses.replace(config, objective=objective)
    if objective == "causal":
        from tfllm.training.causal_lm import train_causal_lm

        return train_causal_lm(config, verbose=verbose)  # its metrics.json's dict; verbose=0 is silent here too
    if objective == "vectors":
        return pretrain_vectors(config)

    strategy = common.get_strategy(config.strategy)
    preset = common.resumed_recipe(config, masked_lm_preset(config))
    common.check_global_batch(preset["batch_size"], strategy)
    common.check_multi_worker_recipe(preset, strategy)
    common.check_run_dir(config)
    check_text_column(config.data, config.text_column)
    train_docs, val_docs = load_documents(config.data, text_column=config.text_column, max_rows=config.max_rows)
    keras.utils.set_random_seed(config.seed)
    run_dir = common.worker_run_dir(config.run_dir, strategy)
    resume, previous = runs.prepare(run_dir, overwrite=config.overwrite, config=config)
    with common.guarded_run(run_dir, resume, previous, backup_dir=os.path.join(config.run_dir, common.BACKUP)):
        tokenizer = common.start_run(run_dir, config, preset, resume, train_docs)
        with strategy.scope(), common.precision_scope(config.precision):
            model = masked_lm_from_preset(config.from_preset, preset) if config.from_preset else \
                own_masked_lm(preset, tokenizer)
            _compile(model, preset)
            common.adapt_model_to_strategy(model, strategy)
        preprocessor = model.preprocessor
        note = long_document_note(train_docs, preprocessor.tokenizer, preprocessor.sequence_length,
                                  common.preset_positions(config.from_preset) if config.from_preset else None,
                                  seed=config.seed or 0)
        if note:  # a filterable TfllmWarning to a Python caller, in its names; the command's line to a command
            errors.note(note, python=note.removeprefix("tfllm: note: "))
        if not config.from_preset:
            common.warn_unknown_in_own_vocabulary(preprocessor.tokenizer, _sample_ids(train_docs, preprocessor.tokenizer,
                                                                                       config.seed or 0),
                                                  preset["vocabulary_size"], "training documents", masked=True)
        train_ds = _masked_batches(train_docs, preprocessor, preset["batch_size"], repeat=True, seed=config.seed)
        val_ds = _fixed_masked_batches(val_docs, preprocessor, preset["batch_size"])
        if not _masked_tokens(val_ds):  # validation scored nothing: val_loss 0.0 and perplexity 1.0 every epoch
            held = (f"the {len(val_docs)} document{'s' if len(val_docs) > 1 else ''} held out for validation (the "
                    f"last {len(val_docs) / (len(train_docs) + len(val_docs)):.0%})")
            vocabulary = (f"--from-preset {config.from_preset!r}'s vocabulary" if config.from_preset else
                          "the vocabulary learned from the other documents") + \
                f" ({preprocessor.tokenizer.vocabulary_size()} tokens)"
            fix = ("Pretrain it on text its vocabulary covers" if config.from_preset else
                   "Give more text, whose last documents share the others' words")
            raise UserInputError(f"--data {config.data!r}: validation would score nothing: "
                                 f"{NOTHING_MASKED.format(what=held, vocabulary=vocabulary)}. {fix}.")
        epochs = preset["steps"] // preset["eval_interval"]  # whole epochs (masked_lm_preset)
        # A perplexity curve as the causal objective's, exp of the masked loss as metrics.json's perplexity is;
        # first, so the TensorBoard callback sees the values it adds.
        callbacks = [common.Perplexity("masked_loss"), *common.make_callbacks(
            run_dir, checkpoint=False, write_logs=common.is_chief(strategy),
            backup_dir=os.path.join(config.run_dir, common.BACKUP))]
        start = time.perf_counter()
        # Measured as fit ends and kept in the backup: a run resumed after that reports its training's seconds.
        common.measure_fit(callbacks, lambda: {"train_seconds": round(time.perf_counter() - start, 1)})
        if verbose:  # verbose=0 silences tfllm's progress lines as it does Keras' (train_classifier)
            print(f"Masked-LM pretraining on {len(train_docs)} documents ({len(val_docs)} held out), "
                  f"{epochs * preset['eval_interval']} steps")
        evaluated = common.dataset_batches(val_ds, epochs + 1)  # each epoch's validation, then the final one
        with common.unknown_length_ok(), common.preprocessed(model), \
                common.eager_evaluation(model, evaluated, strategy):
            history = model.fit(train_ds, steps_per_epoch=preset["eval_interval"], epochs=epochs,
                                validation_data=val_ds, shuffle=False, callbacks=callbacks, verbose=verbose)
            val = _validation_metrics(model, val_ds)
        metrics = {
            "val": {**val, "num_documents": len(val_docs)},
            **common.fit_figures(callbacks, ("train_seconds",)),
            "steps": epochs * preset["eval_interval"],
            "epochs_run": common.epochs_completed(callbacks, len(history.history.get("loss", []))),
            "num_train_documents": len(train_docs),
            "vocabulary_size": int(preprocessor.tokenizer.vocabulary_size()),
        }
        common.finish_run(run_dir, config.run_dir, model, preset, history.history, metrics)
        return metrics


def embed_word_vectors(backbone, tokenizer, texts, window, context_power, vector_norm, seed):
    """Sets `backbone`'s token embedding to PPMI-SVD vectors (`tfllm.word_vectors`) of `texts`' tokens,
    each `vector_norm` long; ids without a vector keep their initial row.

    Returns `(unit vectors, which ids got one, the texts' flat token ids)`; a
    UserInputError when the texts have no running text to count.
    """
    ragged = preprocess(texts, tokenizer)
    ids, splits = ragged.flat_values.numpy(), ragged.row_splits.numpy()
    vectors, found = word_vectors.word_vectors(
        ids, splits, tokenizer.vocabulary_size(), backbone.hidden_dim, window=window, context_power=context_power,
        ignore=tokenizers.special_token_ids(tokenizer), seed=seed)
    embedding = backbone.token_embedding
    table = keras.ops.convert_to_numpy(embedding.embeddings)
    table[found] = vectors[found] * vector_norm
    embedding.embeddings.assign(table)
    return vectors, found, ids


def pretrain_vectors(config):
    """`--objective vectors`: a tokenizer trained on the text, PPMI-SVD vectors of its tokens
    (`tfllm.word_vectors`) as the encoder's token embedding, saved as a `MaskedLM` preset like
    `--objective mlm`'s (so fine-tuning, and masked-LM pretraining on top, take it alike)."""
    if config.from_preset:
        raise UserInputError("--objective vectors builds a new tokenizer and encoder; it does not continue "
                             "--from-preset. Use --objective mlm to continue pretraining a preset.")
    # Counting takes no optimizer steps, so these flags have nothing to act on: --epochs, --strategy and
    # --precision were accepted and ignored, the others refused as unknown *settings* of 'vectors'.
    unused = [flag for flag, given in (
        ("--steps", config.steps is not None), ("--epochs", config.epochs is not None),
        ("--batch-size", config.batch_size is not None), ("--learning-rate", config.learning_rate is not None),
        ("--jit-compile", config.jit_compile is not None), ("--strategy", config.strategy != "auto"),
        ("--precision", config.precision != "float32")) if given]
    if unused:
        raise UserInputError(f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not for --objective "
                             "vectors: it counts the text's words in seconds and trains no step; leave "
                             f"{'it' if len(unused) == 1 else 'them'} out (or use --objective mlm).")
    preset = common.step_recipe("vectors", config)
    common.check_run_dir(config)
    check_text_column(config.data, config.text_column)
    train_docs, val_docs = load_documents(config.data, text_column=config.text_column, max_rows=config.max_rows)
    keras.utils.set_random_seed(config.seed)
    resume, previous = runs.prepare(config.run_dir, overwrite=config.overwrite, config=config)
    # Seconds of work and no backup: an interrupted run is removed like a failed one, and starts again.
    with common.guarded_run(config.run_dir, resume, previous, resumable=False):
        start = time.perf_counter()
        tokenizer = common.start_run(config.run_dir, config, preset, False, train_docs)
        model = own_masked_lm(dict(preset, mask_selection_rate=0.15), tokenizer)
        try:
            vectors, found, ids = embed_word_vectors(model.backbone, tokenizer, train_docs, preset["window"],
                                                     preset["context_power"], preset["vector_norm"], config.seed)
        except UserInputError as e:
            raise UserInputError(f"--data {config.data!r}: {e}") from None
        val_ids = preprocess(val_docs, tokenizer).flat_values.numpy() if val_docs else np.zeros(0, "int64")
        # Words, not punctuation or function words, make a readable check of what the vectors learned.
        vocabulary = tokenizer.get_vocabulary()
        frequent = [int(i) for i in np.argsort(-np.bincount(ids, minlength=len(vocabulary)))
                    if found[i] and len(vocabulary[i]) >= 4 and vocabulary[i].isalpha()][:NEIGHBOURS_SHOWN]
        neighbours = {vocabulary[i]: [vocabulary[j] for j in word_vectors.nearest(vectors, i)] for i in frequent}
        for token, near in neighbours.items():
            print(f"  {token}: {' '.join(near)}")
        metrics = {
            # The share of held-out tokens that have a vector: what the fine-tuned encoder starts knowing.
            "val": {"vector_coverage": round(float(found[val_ids].mean()), 4) if len(val_ids) else None,
                    "num_documents": len(val_docs)},
            "train_seconds": round(time.perf_counter() - start, 1),
            "num_train_documents": len(train_docs),
            "vocabulary_size": int(tokenizer.vocabulary_size()),
            "tokens_with_vectors": int(found.sum()),
            "nearest_neighbours": neighbours,
        }
        common.finish_run(config.run_dir, config.run_dir, model, preset, {}, metrics)
        return metrics
