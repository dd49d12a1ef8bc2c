"""TrainConfig -> preprocessor -> TextClassifier task -> model.fit -> a finished run directory (a preset).

The model is tfllm's own `TextClassifier` (a tokenizer trained on the training
split and any `--unlabeled` texts, an `EncoderBackbone` whose token embedding
starts, in the `default` and `mobile` recipes, from word vectors of those same
texts: pretraining and fine-tuning in one command) or, with `from_preset`, any KerasHub text
classifier: a tfllm run (pretraining or classification) or a KerasHub preset
(BERT, DistilBERT, RoBERTa, ...), whose tokenizer is used as it is.
The run directory's layout is `tfllm.runs`'s.
"""

import contextlib
import dataclasses
import io
import os
import sys
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tfllm import data as data_lib
from tfllm import prediction, runs, tokenizers
from tfllm.config import CODE_POINT_VIEWS
from tfllm.datasets import (BUNDLED, balanced_class_weight, describe, load_classification_data, note_spaced_labels,
                            same_data, split_as_trained, warn_about_duplicates, warn_about_imbalance,
                            warn_about_labels, warn_about_small_splits, warn_about_unscored_classes)
from tfllm.errors import UserInputError, note, shell_path, warn
from tfllm.evaluation import classification_report, note_missing_classes
from tfllm.models import EncoderBackbone, TextClassifier, TextClassifierPreprocessor
from tfllm.models.text_classifier import class_probabilities, predict_probabilities  # noqa: F401  (re-exported)
from tfllm.models.encoder_backbone import BACKBONE_ARGS
from tfllm.training import common
from tfllm.training.optimizers import LazyAdamW
from tfllm.training.pretraining import embed_word_vectors, long_document_note
from tfllm.training.self_training import train_self_trained, unlabeled_record

HEAD_ARGS = ("dropout", "bigram_buckets", "wide_bigram_buckets", *CODE_POINT_VIEWS)
CHAR_LENGTH = 320  # code points the character and word views read by default (rotten_tomatoes' longest review has 255)
EXPLAINED_VAL_TEXTS = 4  # validation texts explained in TensorBoard's Text tab


def classifier_preset(config):
    if config.epochs == 0:  # a trained classifier preset as it is: scored on the data and written as a run
        if not config.from_preset or config.ensemble != 1 or config.unlabeled:
            raise UserInputError("--epochs 0 keeps a trained text classifier preset as it is (scored on your data, "
                                 "written as a run to export and serve): use it with --from-preset PRESET, without "
                                 "--ensemble or --unlabeled; anything else trains at least 1 epoch.")
        common.check_flag_and_setting(config, "epochs")  # before the stand-in epochs=1 below
        preset = common.resolve_recipe("classify", dataclasses.replace(config, epochs=1))
        preset_backbone_class(config.from_preset)  # one line for a preset that cannot load at all
        if "sequence_length" not in config.overrides:  # the length the preset's own preprocessor packs
            try:
                preset["sequence_length"] = keras_hub.models.TextClassifierPreprocessor.from_preset(
                    config.from_preset).sequence_length
            except ValueError:  # no classifier preprocessor: `check_kept_head` says so
                pass
        return drop_unread_head_settings(config, {**preset, "epochs": 0})
    preset = common.resolve_recipe("classify", config)
    for name in CODE_POINT_VIEWS:
        if preset.get(name) and not preset.get("wide_bigram_buckets"):
            if name not in config.overrides:
                # The views are blended in beside the wide path: turning it off (the preset set them, not the
                # user) turns them off too, rather than a refusal that told them to undo their own --set.
                preset[name] = 0
                continue
            raise UserInputError(f"--set {name}={preset[name]} adds a view beside the naive-Bayes wide path, and "
                                 "this run has none: add --set wide_bigram_buckets=N (the default recipe has "
                                 f"both), or leave --set {name} out.")
    return drop_unread_head_settings(config, common.fit_to_positions(config, preset))


def own_classifier(preset, tokenizer, num_classes):
    """tfllm's `TextClassifier` for a preset, over a tokenizer trained here."""
    backbone = EncoderBackbone(vocabulary_size=tokenizer.vocabulary_size(),
                               **{k: preset[k] for k in BACKBONE_ARGS if k in preset and k != "vocabulary_size"})
    preprocessor = TextClassifierPreprocessor(tokenizer, sequence_length=preset["sequence_length"],
                                              **char_preprocessing(preset))
    return TextClassifier(backbone, num_classes, preprocessor=preprocessor,
                          **{**{k: preset[k] for k in HEAD_ARGS if k in preset}, **class_tables(preset, num_classes)})


TABLE_CELLS = 2**21  # the most cells (buckets x classes) an n-gram table holds: 8 MB of float32
PER_CLASS_TABLES = ("wide_bigram_buckets", *CODE_POINT_VIEWS)  # a row of num_classes a bucket (1 for two)


def class_tables(preset, num_classes):
    """The preset's n-gram table sizes for `num_classes`: each bucket holds a row of the classes (one number for
    two), so `default`'s 524,287-bucket tables held 262 M parameters for 200 classes (1 GB of weights, 11 GB
    while training). Beyond `TABLE_CELLS` cells a table's buckets shrink to fit, to 4,096 at the fewest;
    two to four classes keep the preset's."""
    units = 1 if num_classes <= 2 else num_classes
    sizes = {name: min(preset[name], max(4096, TABLE_CELLS // units)) for name in PER_CLASS_TABLES if preset.get(name)}
    if any(sizes[name] < preset[name] for name in sizes):
        print(f"N-gram tables for {num_classes} classes: " + ", ".join(
            f"{name} {preset[name]:,} -> {sizes[name]:,}" for name in sizes if sizes[name] < preset[name])
            + f" (at most {TABLE_CELLS:,} buckets x classes each)")
    return sizes


def char_preprocessing(preset):
    """The preprocessor's `char_length` for a recipe: the code points its character and word views read, or
    None (neither; also for a preset whose preprocessor had one, when the new head has neither view)."""
    return {"char_length": preset.get("char_length", CHAR_LENGTH)
            if any(preset.get(name) for name in CODE_POINT_VIEWS) else None}


def pretrain_word_vectors(model, tokenizer, texts, preset, seed):
    """The recipe's pretraining step: word vectors of `texts` in the encoder's token embedding
    (`tfllm pretrain --objective vectors` in one go), or a note when the texts are too short for them."""
    start = time.perf_counter()
    try:
        _, found, _ = embed_word_vectors(model.backbone, tokenizer, texts, preset["vector_window"],
                                         preset["vector_context_power"], preset["vector_norm"], seed)
    except UserInputError as e:  # single words, not running text: the encoder starts from random vectors
        print(f"Word vectors skipped ({e}); the token embedding starts at random.")
        return
    print(f"Word vectors: {int(found.sum())} of {len(found)} tokens from {len(texts)} texts "
          f"({time.perf_counter() - start:.1f} s)")


def preset_backbone_class(handle):
    """The backbone class a preset names (local folder, Kaggle handle or hf:// URI), or a clear error."""
    return common.preset_backbone(handle)[0]


def preset_max_length(handle, wanted):
    """`wanted`, capped at the longest input the preset's backbone has positions for."""
    longest = common.preset_positions(handle)
    return min(wanted, longest) if longest else wanted


# Settings a classifier --from-preset never reads: word vectors start a new encoder's embedding (a preset's
# is trained), and the n-gram paths are tfllm's head, which a KerasHub classifier does not have.
WORD_VECTOR_SETTINGS = {"word_vectors", "vector_window", "vector_context_power", "vector_norm"}
NGRAM_SETTINGS = {"bigram_buckets", "wide_bigram_buckets", *CODE_POINT_VIEWS, "char_length"}


def unread_head_settings(backbone_cls):
    """The recipe settings a classifier --from-preset of `backbone_cls` never reads."""
    return WORD_VECTOR_SETTINGS | (set() if backbone_cls is EncoderBackbone else NGRAM_SETTINGS)


def drop_unread_head_settings(config, preset):
    """`preset` without the settings its --from-preset classifier never reads (`unread_head_settings`): a BERT
    fine-tune recorded the recipe's n-gram buckets and word vectors in recipe.json and HParams, for a model that has
    neither. Without --from-preset, `preset` as it is."""
    if config.from_preset:
        for key in unread_head_settings(preset_backbone_class(config.from_preset)):
            preset.pop(key, None)
    return preset


def check_preset_head_settings(config, backbone_cls):
    """A one-line UserInputError for `--set` settings that a --from-preset classifier would record and ignore."""
    given = sorted(unread_head_settings(backbone_cls) & set(config.overrides))
    if given:
        raise UserInputError(f"--from-preset {config.from_preset!r} ({backbone_cls.__name__}) brings its own trained "
                             f"model, so {', '.join(given)} would be ignored; leave them out.")


def _flat_ids(tokenizer, texts):
    """Every token id of `texts` (a KerasHub tokenizer's ragged, dense or list output), in one array."""
    ids = tokenizer(texts)
    if isinstance(ids, tf.RaggedTensor):
        return ids.flat_values.numpy()
    if isinstance(ids, list):  # eager KerasHub tokenizers hand back Python lists
        return np.asarray([i for row in ids for i in row], "int64")
    return keras.ops.convert_to_numpy(ids).ravel()


@common.preset_files
def classifier_from_preset(handle, preset, num_classes, keep_head=False):
    """A classifier task starting from a preset's backbone and tokenizer: its head is new, or, with
    `keep_head` (--epochs 0), the preset's own trained one (`check_kept_head`)."""
    import tfllm.models  # noqa: F401  (registers tfllm's classes for from_preset)

    backbone_cls = preset_backbone_class(handle)
    own = backbone_cls is EncoderBackbone and not keep_head  # tfllm's head, new: its code-point views or none
    dtype = common.preset_dtype(handle)
    try:
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            handle, sequence_length=preset_max_length(handle, preset["sequence_length"]),
            **(char_preprocessing(preset) if own else {}))
        if keep_head:  # KerasHub loads the task's own head when num_classes is not given
            head = {} if backbone_cls is EncoderBackbone else {"activation": "softmax"}
            return keras_hub.models.TextClassifier.from_preset(handle, preprocessor=preprocessor, **head, **dtype)
        if own:
            # KerasHub builds the new head from the preset's task.json, updated with these: every head setting
            # is the recipe's (None where it has none), so a classifier run's n-gram paths and views do not
            # carry over into a recipe without them (as its preprocessor's code points do not).
            return keras_hub.models.TextClassifier.from_preset(
                handle, num_classes=num_classes, preprocessor=preprocessor,
                **{k: preset.get(k) for k in HEAD_ARGS if k != "dropout"}, dropout=preset.get("dropout", 0.1),
                label_names=None, **dtype)  # a new head: the data's classes, named when the run is saved
        # KerasHub's own classifiers output logits unless told; tfllm reads probabilities. Their new head
        # takes the recipe's dropout, as tfllm's does (it kept KerasHub's 0.1 whatever --set dropout said).
        return keras_hub.models.TextClassifier.from_preset(
            handle, num_classes=num_classes, preprocessor=preprocessor, activation="softmax",
            **({"dropout": preset["dropout"]} if "dropout" in preset else {}), **dtype)
    except ValueError as e:
        not_text = common.not_text_model(handle, backbone_cls)  # a vision preset: as --task generate says it
        if not_text:
            raise not_text from None
        encoders = "BERT, DistilBERT, RoBERTa, ... or a tfllm classifier or `tfllm pretrain --objective mlm|vectors` run"
        if is_seq2seq(backbone_cls):  # BART, a tfllm translation run: checked first, as it is a decoder too
            raise seq2seq_refusal(handle, backbone_cls, "text classifier",
                                  f", or start a classifier from an encoder ({encoders})") from None
        if _is_decoder(backbone_cls):  # GPT-2, a causal tfllm run: "or a tfllm run" was what the user had passed
            raise UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}) is a text generator (a decoder), "
                                 "which has no text classifier in KerasHub: fine-tune it with --task generate, or "
                                 f"start a classifier from an encoder ({encoders}).") from None
        raise UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}) has no text classifier in KerasHub "
                             f"({str(e).splitlines()[0]}). Use a text model preset ({encoders}).") from None


def dropped_ngram_paths(handle, preset):
    """The n-gram paths of a tfllm classifier run `handle` (its head's, in task.json) that the recipe `preset`
    has none of: fine-tuned, the run's encoder and tokenizer carry over under the recipe's new head."""
    task = runs.path(handle, "task.json")
    if not (os.path.isdir(handle) and runs.is_finished(handle) and runs.task_of(handle) == "classify"
            and os.path.isfile(task)):
        return []
    head = runs.read_json(task).get("config", {})
    return [k for k in ("bigram_buckets", "wide_bigram_buckets", *CODE_POINT_VIEWS) if head.get(k) and not preset.get(k)]


def check_kept_head(handle, data, source):
    """For --epochs 0: a one-line UserInputError unless `handle` holds a trained classifier for `data`'s labels
    (its task, with the head's weights, over as many classes; a tfllm run's labels, in the same order)."""
    # PRIVATE API: keras_hub's preset files, read as its own loader reads them (keras-hub 0.32 has no public
    # way to ask what a preset holds without building it; no upstream issue asks for one).
    from keras_hub.src.utils.preset_utils import check_config_class, check_file_exists, load_json

    backbone_cls = preset_backbone_class(handle)  # a preset that cannot load at all is refused here
    task = load_json(handle, "task.json") if check_file_exists(handle, "task.json") else None
    if not (task and issubclass(check_config_class(task), keras_hub.models.TextClassifier)
            and check_file_exists(handle, "task.weights.h5")):
        raise UserInputError(f"--epochs 0 keeps a trained classifier as it is, and --from-preset {handle!r} "
                             f"({backbone_cls.__name__}) holds none (a backbone, or another task); fine-tune one "
                             "with --epochs N.")
    classes = task["config"].get("num_classes")
    if classes != data.num_classes:
        raise UserInputError(f"--from-preset {handle!r} classifies into {classes} classes, and {source} has "
                             f"{data.num_classes} labels ({', '.join(map(repr, data.label_names))}): keep it with "
                             "data of its own classes, or fine-tune it with --epochs N (a new head).")
    if os.path.isdir(handle) and runs.is_finished(handle) and os.path.exists(runs.path(handle, runs.LABELS)):
        labels = runs.read_labels(handle)
        if labels != data.label_names:
            raise UserInputError(f"--from-preset {handle!r} was trained on the labels {labels}, in that order, and "
                                 f"{source} gives {data.label_names}: pass --labels {','.join(labels)}.")
    else:  # a KerasHub preset names no labels: its class i is the data's i-th label
        print("The preset's classes, in order: " + ", ".join(f"{i} = {name!r}" for i, name in enumerate(data.label_names))
              + " (the data's label order; --labels sets another)")


def _is_decoder(backbone_cls):
    """True where KerasHub has a causal LM task for `backbone_cls` (GPT-2, OPT, tfllm's CausalLMBackbone, ...),
    and for a sequence-to-sequence one (KerasHub's Seq2SeqLM is a CausalLM: `is_seq2seq`)."""
    return has_task(backbone_cls, keras_hub.models.CausalLM)


def is_seq2seq(backbone_cls):
    """True where KerasHub has a sequence-to-sequence task for `backbone_cls` (BART, tfllm's Seq2SeqBackbone):
    such a preset trains with --task translate, not as a classifier, a generator or a masked LM."""
    return has_task(backbone_cls, keras_hub.models.Seq2SeqLM)


def seq2seq_refusal(handle, backbone_cls, task, instead=""):
    """The one-line UserInputError for a sequence-to-sequence `--from-preset` (`is_seq2seq`) given to a trainer
    whose KerasHub `task` ("text classifier", "causal LM", "masked LM") it has none of: it trains as a translator.
    `instead`: what else the caller's command could start from, after the pointer to `--task translate`.
    One function for the three trainers (classifier, causal LM, masked LM), so that their refusals of one
    preset say the same thing."""
    return UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}) is a sequence-to-sequence model (an "
                          f"encoder-decoder), which has no {task} in KerasHub: fine-tune it with "
                          f"{runs.train_command('translate')}{instead}.")


def is_encoder(backbone_cls):
    """True where KerasHub has a text classifier for `backbone_cls` (BERT, RoBERTa, tfllm's EncoderBackbone, ...)."""
    return has_task(backbone_cls, keras_hub.models.TextClassifier)


def has_task(backbone_cls, base):
    """True where `base` or one of its subclasses (KerasHub's or tfllm's tasks) is built on `backbone_cls`."""
    tasks = [base]
    while tasks:
        task = tasks.pop()
        if getattr(task, "backbone_cls", None) is backbone_cls:
            return True
        tasks.extend(task.__subclasses__())
    return False


def is_sigmoid(model):
    """True for a one-unit sigmoid head (binary cross-entropy, float 0/1 labels)."""
    return model.output.shape[-1] == 1


def moving_average(preset, steps_per_epoch):
    """Keras' `use_ema` and `ema_momentum` for the preset's `ema_epochs` (or `ema_momentum`); {} for neither.

    An exponential moving average of the weights smooths the noisy late epochs
    of a small dataset; validation, the best checkpoint and the run use it
    (`common.make_callbacks(ema=True)`). `ema_epochs` is its horizon in epochs,
    so one recipe suits 800 labels (13 steps an epoch) and 10,000 (164):
    momentum 1 - 1 / (ema_epochs * steps_per_epoch).
    """
    momentum, epochs = preset.get("ema_momentum"), preset.get("ema_epochs")
    if momentum is None and epochs is not None:
        if epochs <= 0:  # its kind is checked with every setting's (`presets.resolve_preset`)
            raise UserInputError(f"ema_epochs must be above 0; got {epochs!r}. Try --set ema_epochs=3.")
        momentum = 1.0 - 1.0 / (epochs * max(1, steps_per_epoch or 1))
    if momentum is None or momentum == 0:
        return {}
    if not 0 < momentum < 1:
        raise UserInputError(f"ema_momentum must be in (0, 1); got {momentum!r}. Try --set ema_momentum=0.99.")
    return dict(use_ema=True, ema_momentum=momentum)


class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of class probabilities against integer labels, with label smoothing: what
    `CategoricalCrossentropy(label_smoothing=s)` computes on one-hot labels, `(1 - s) * nll + s * mean(-log p)`."""

    def __init__(self, label_smoothing=0.0, name="categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        probabilities = keras.ops.cast(y_pred, "float32")
        probabilities = probabilities / keras.ops.sum(probabilities, axis=-1, keepdims=True)
        log_probs = keras.ops.log(keras.ops.clip(probabilities, keras.config.epsilon(), 1.0 - keras.config.epsilon()))
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1, 1))
        nll = -keras.ops.squeeze(keras.ops.take_along_axis(log_probs, labels, axis=-1), -1)
        return (1.0 - self.label_smoothing) * nll - self.label_smoothing * keras.ops.mean(log_probs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


# Thresholds of the `auc` metric TensorBoard plots (Keras's streaming AUC, its ROC curve binned at evenly
# spaced thresholds). Keras's default 200 put a weak model's validation probabilities, all within
# 0.146-0.170, in about five bins: the kept epoch's `auc` read 0.4910 where metrics.json's exact
# roc_auc (evaluation.roc_auc, over every prediction) read 0.4615. At 10,000 that run's figure is exact
# to 1e-6. Evenly spaced thresholds keep Keras's bucketed update (O(batch + thresholds) per step): about
# 0.4 ms more a step on a 2-core CPU. Explicit `thresholds=` would lose that path (O(batch x thresholds)).
AUC_THRESHOLDS = 10_000


@keras.saving.register_keras_serializable(package="tfllm")
class SparseOneVsRestAUC(keras.metrics.AUC):
    """The ROC AUC of each class against the rest, averaged over the classes, from integer labels: what
    metrics.json's roc_auc is for three or more classes (`evaluation.classification_report`), per epoch in
    TensorBoard. Keras's AUC averages per-label AUCs only of one-hot labels (`multi_label=True`), so the
    labels are one-hot encoded here; and a class without positives or negatives so far (a class missing from
    the validation split) is left out of the mean, as the report leaves out its undefined AUC, not counted 0."""

    def __init__(self, num_classes, num_thresholds=AUC_THRESHOLDS, name="auc", **kwargs):
        kwargs.pop("multi_label", None), kwargs.pop("num_labels", None)  # from get_config: always these
        super().__init__(num_thresholds=num_thresholds, multi_label=True, num_labels=num_classes, name=name, **kwargs)
        self.num_classes = int(num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, self.num_classes)
        if tf.executing_eagerly():
            # Eagerly (a small validation's test step, `common.eager_evaluation`) Keras's multi-label update runs
            # `tf.vectorized_map`, whose `pfor` traces a new tf.function at every call: ~90 ms a batch on 2 cores,
            # and self-training's third teacher member printed TensorFlow's "5 out of the last 5 calls to
            # <function pfor.<locals>.f> triggered tf.function retracing". Traced once per metric instead: ~3 ms.
            if getattr(self, "_traced_update", None) is None:
                self._traced_update = tf.function(self._one_hot_update, reduce_retracing=True, autograph=False)
            return self._traced_update(one_hot, y_pred, sample_weight)
        return self._one_hot_update(one_hot, y_pred, sample_weight)

    def _one_hot_update(self, one_hot, y_pred, sample_weight):
        return super().update_state(one_hot, y_pred, sample_weight)

    def result(self):
        # AUC.result's ROC curve with interpolation (its defaults), kept per class.
        ops = keras.ops
        positives = ops.add(self.true_positives, self.false_negatives)
        negatives = ops.add(self.false_positives, self.true_negatives)
        recall = ops.divide_no_nan(self.true_positives, positives)
        fp_rate = ops.divide_no_nan(self.false_positives, negatives)
        heights = ops.divide(ops.add(recall[:-1], recall[1:]), 2.0)
        by_class = ops.sum(ops.multiply(ops.subtract(fp_rate[:-1], fp_rate[1:]), heights), axis=0)
        defined = ops.cast(ops.logical_and(ops.greater(positives[0], 0), ops.greater(negatives[0], 0)), by_class.dtype)
        return ops.divide_no_nan(ops.sum(ops.multiply(by_class, defined)), ops.sum(defined))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def compile_classifier(model, preset, steps_per_epoch=None):
    """Adam(W) with binary (one sigmoid unit) or categorical (softmax) cross-entropy.

    With `warmup_fraction` in the preset (the fine-tuning recipe) the learning
    rate warms up linearly, then decays on a cosine to zero.
    """
    learning_rate = preset["learning_rate"]
    if preset.get("warmup_fraction") is not None and steps_per_epoch:
        total = max(2, steps_per_epoch * preset["epochs"])
        warmup = max(1, int(total * preset["warmup_fraction"]))
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=preset["learning_rate"], warmup_steps=warmup)
    ema = moving_average(preset, steps_per_epoch)
    if preset.get("lazy_adam"):  # AdamW on the rows a batch used: large hashed tables train faster
        optimizer = LazyAdamW(learning_rate, weight_decay=preset.get("weight_decay") or 0.0, **ema)
    elif preset.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=preset["weight_decay"], **ema)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **ema)
    smoothing = preset.get("label_smoothing", 0.0)
    if is_sigmoid(model):
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing, name="binary_crossentropy")
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS, name="auc")]
    else:
        # Keras' sparse loss has no label smoothing (it was left out here without a word).
        loss = (SmoothedSparseCategoricalCrossentropy(smoothing, name="categorical_crossentropy") if smoothing else
                keras.losses.SparseCategoricalCrossentropy(name="categorical_crossentropy"))
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   SparseOneVsRestAUC(model.output.shape[-1], name="auc")]
    # Unset is Keras' "auto": XLA on GPUs, not on CPUs or under tf.distribute.
    return common.compile_task(model, optimizer=optimizer, loss=loss, metrics=metrics,
                               jit_compile=preset.get("jit_compile"))


def load_run(run_dir):
    """(task, label_names, recipe) of a finished classification run; the task has its preprocessor."""
    run_dir = runs.run_dir_argument(run_dir, "load_run")
    runs.require_task(run_dir, "classify", hint=runs.classifier_hint(run_dir))
    return runs.load_task(run_dir), runs.read_labels(run_dir), runs.read_recipe(run_dir)


def write_explanations(run_dir, model, label_names, texts):
    """The first `EXPLAINED_VAL_TEXTS` of `texts` explained in `run_dir/logs` (TensorBoard's Text tab); a failure
    is a warning: an optional report must not leave a trained run unfinished."""
    from tfllm.explanations import write_tensorboard_explanations

    try:
        write_tensorboard_explanations(os.path.join(run_dir, runs.LOGS), model, label_names,
                                       texts[:EXPLAINED_VAL_TEXTS])
    except Exception as e:  # noqa: BLE001
        reason = (str(e).strip().splitlines() or [""])[0]
        warn(f"TensorBoard explanations left out of {run_dir} ({type(e).__name__}: {reason}); "
             "the run still finishes.")


def run_data(run_dir, data=None):
    """A finished run's data, split as its training split it (same seed, rows and labels); `data`: a copy of
    its file at another path (`runs.holds_training_data`), read instead of the recorded path."""
    config = runs.read_train_config(run_dir)
    if data is not None:
        config = dataclasses.replace(config, data=data)
    runs.check_data_unchanged(run_dir, config.data)
    return split_as_trained(config, runs.read_labels(run_dir),
                            needs="evaluate without --data (the run's own split)",
                            instead=", or score another labelled file with --data FILE")


def _start_member_run(run_dir, config, preset, resume, label_names, tokenizer):
    """`common.start_run` for an ensemble member: the same records, and the ensemble's tokenizer instead
    of a newly trained one, so that every member reads the same token ids."""
    if not resume:
        runs.write_records(run_dir, config, {runs.LABELS: label_names, runs.RECIPE: preset})
        tokenizers.save_tokenizer(tokenizer, run_dir)
    return tokenizers.load_tokenizer(run_dir) if resume else tokenizer


def check_unread_options(config):
    """Refuses options a classifier would not read: they were accepted and ignored without a word
    (translation's --source-column/--target-column; --text-column/--label-column of a folder, whose
    texts are its .txt files and labels its sub-folders' names; self-training settings without
    --unlabeled). For the command's own config: a self-training teacher keeps the settings, not the texts."""
    given = sorted(key for key in config.overrides if key.startswith("self_training_"))
    if given and not config.unlabeled:
        raise UserInputError(f"{', '.join(given)} set{'s' * (len(given) == 1)} up self-training, which needs "
                             "--unlabeled DATA (texts without labels); pass it, or leave them out.")
    for flag, value in (("--source-column", config.source_column), ("--target-column", config.target_column)):
        if value is not None:
            raise UserInputError(f"{flag} is for --task translate; a classifier reads --text-column and "
                                 "--label-column: leave it out.")
    refuse_folder_columns(config.data, (("--text-column", config.text_column, "text"),
                                        ("--label-column", config.label_column, "label"),
                                        ("--split-column", config.split_column, None)))


def refuse_folder_columns(data, flags):
    """A folder's texts are its .txt files and their labels the sub-folders' names: a column flag
    (`(flag, value, default)`) given with one was ignored without a word (train, evaluate --data)."""
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        for flag, value, default in flags:
            if value != default:
                raise UserInputError(f"{flag} {value} does not apply to the folder {os.fspath(data)!r}: its texts "
                                     "are its .txt files and their labels the sub-folders' names; leave it out.")


_LOADED = {}  # real path of a run directory -> (its files' signature, (task, label_names))


def loaded_run(run_dir):
    """A run's `(task, label_names)`, loaded once per process (again when its files change; freed by
    `tfllm.clear_cache()`): `tfllm.evaluate`'s and `tfllm.predict`'s, so a notebook calling both holds one copy."""
    def load(run_dir):
        with runs.loading(run_dir):
            return load_run(run_dir)[:2]

    return runs.load_cached(_LOADED, run_dir, load)


def unseen_classes_line(unseen):
    """The line saying the classes `unseen` (names) have no validation rows, so their blend bias is not fitted:
    ten named, the rest counted as classes ("and 5 more rows" read as a count of rows)."""
    shown = (", ".join(map(repr, unseen)) + " rows" if len(unseen) <= 10 else
             "rows of " + ", ".join(map(repr, unseen[:10])) + f" and {len(unseen) - 10} more classes")
    return (f"Naive-Bayes wide path: the validation split has no {shown}, so their blend bias is the mean of the "
            "other classes' (not fitted on them)")


def evaluate_run(run_dir, data=None, split="test", text_column=None, label_column=None, split_column=None):
    """The metrics report (`evaluation.classification_report`) of a finished classification run on a split of
    its own data, split exactly as its training split it (never a row it trained on), or on another file
    `data`: all of it, or its `split` where `split_column` names each row's."""
    if split not in ("train", "val", "test"):
        raise UserInputError(f"Unknown split {split!r}; choose train, val or test.")
    # Kept loaded per process as tfllm.predict keeps its runs: a notebook scoring a run on several files
    # or splits loaded it again each call (`tfllm.clear_cache()` frees it).
    model, label_names = loaded_run(run_dir)
    config = runs.read_train_config(run_dir)
    other = bool(data) and not same_data(data, config.data)
    copy = other and runs.holds_training_data(run_dir, data)
    if copy:  # all of it was scored, the rows the model trained on too, for a figure far above the truth
        how = f"{config.data!r}, byte for byte" if copy == "bytes" else f"the same rows as {config.data!r}"
        print(f"{data!r} holds the run's training data ({how}): scoring the run's "
              f"own {split} split of it, never a row it trained on.", file=sys.stderr)
    if other and not copy:
        refuse_folder_columns(data, [(flag, value, None) for flag, value in (
            ("--text-column", text_column), ("--label-column", label_column),
            ("--split-column", split_column))])
        # Another file, in the run's columns unless told, and its rows of the run's --labels (the others
        # were refused as labels the model was not trained on): its --split where it names splits, else all of it.
        table = load_classification_data(data, text_column=text_column or config.text_column,
                                         label_column=label_column or config.label_column,
                                         split_column=split_column, labels=config.labels, label_names=label_names,
                                         val_fraction=0.0, test_fraction=0.0 if split_column else 1.0)
        note_spaced_labels(data, table, label_column or config.label_column)  # "fresh " scored as "fresh"
        if split != "test" and not split_column:  # all of the file was scored as if it were that split
            raise UserInputError(f"--split {split} needs --split-column, the column of {data!r} that says "
                                 "which rows are train, val or test; without it all of the file is scored.")
        rows = getattr(table, split) if split_column else table.test
        if not len(rows):
            raise UserInputError(f"{data!r} has no rows with split {split!r} in column {split_column!r}.")
    else:  # exactly the training run's split (its rows, seed and labels): never a row it trained on
        # Other columns were ignored without a word: the run's own data is read as it was trained on.
        own_split = config.split_column or BUNDLED.get(config.data, (None, {}))[1].get("split_column")
        for flag, given, own, how in (
                ("--text-column", text_column, config.text_column, f"texts from column {config.text_column!r}"),
                ("--label-column", label_column, config.label_column, f"labels from {config.label_column!r}"),
                ("--split-column", split_column, own_split,
                 f"split by column {own_split!r}" if own_split else "split by the run's seed")):
            if given and given != own:
                raise UserInputError(f"{flag} {given}: {config.data!r} is the run's own data, read as the run read it "
                                     f"({how}); leave {flag} out, or score another file with --data.")
        rows = getattr(run_data(run_dir, data if copy else None), split)
        if split == "val" and "val" in runs.read_json(runs.path(run_dir, runs.METRICS)).get(
                "ngram_tables_from", []):
            note("Note: this run's n-gram tables counted its validation texts once its blend was fitted "
                 "(refit_on_validation), so these val figures are in-sample; metrics.json's val figures were "
                 "measured before that. --split test is the held-out figure.")
    report = classification_report(rows.labels, predict_probabilities(model, rows.texts), label_names)
    note_missing_classes(report, repr(data) if other and not copy and not split_column else f"the {split} split")
    note_cut_texts(model, rows.texts)
    return report


def note_cut_texts(model, texts):
    """`prediction.note_cut_texts` of the classifier `model` on `texts` (for `evaluate`, which scores them here)."""
    window = model.preprocessor.sequence_length - 2  # [start] and [end] take two positions
    ids = prediction.token_ids(model.preprocessor.tokenizer, texts) if len(texts) else []
    prediction.note_cut_texts(sum(len(row) > window for row in ids), len(texts), window)


# metrics.json's val block, where the refit on validation texts came after its figures (`tfllm evaluate` notes it).
VAL_MEASURED_BEFORE_REFIT = "before the refit on validation texts (the saved model has seen them)"


def keep_out_of_sample_val(handle, data, metrics):
    """For --epochs 0 over a tfllm classifier run whose n-gram tables counted its validation texts: its val
    figures scored on those same texts were in-sample (0.795 recorded against the run's own 0.7045), without a
    word. On the run's own split the run's out-of-sample val figures are kept, as its metrics.json has them;
    on other data the val block says what the tables counted."""
    if not (os.path.isdir(handle) and runs.is_finished(handle) and runs.task_of(handle) == "classify"):
        return
    source = runs.read_json(runs.path(handle, runs.METRICS))
    if "val" not in source.get("ngram_tables_from", []) or "val" not in source:
        return
    try:
        own = run_data(handle).val
        same = (runs.read_labels(handle) == list(data.label_names) and list(own.texts) == list(data.val.texts)
                and list(own.labels) == list(data.val.labels))
    except UserInputError:  # its data moved or changed: it cannot be told to be the same split
        same = False
    if same:
        metrics["val"] = source["val"]  # "measured": before the refit, as `tfllm evaluate --split val` notes
        metrics["ngram_tables_from"] = source["ngram_tables_from"]
        print(f"Validation figures: {handle}'s own, measured before its n-gram tables counted these validation "
              "texts (scored now, the model kept as it is has seen them).")
    else:
        metrics["val"]["measured"] = (f"with n-gram tables that counted {handle}'s training and validation texts "
                                      "(in-sample for any of them among these)")


def command_data(config, preset):
    """The command's data, split as the run splits it, described and warned about (on stderr) before training."""
    data = split_as_trained(config)
    print(describe(data), flush=True)
    warn_about_duplicates(config.data, data)
    warn_about_labels(config.data, data, config.label_column)
    warn_about_imbalance(data, balanced=bool(preset.get("balance_classes")))
    warn_about_unscored_classes(data)
    warn_about_small_splits(config.data, data)
    return data


def train_classifier(config, verbose="auto", tokenizer=None, data=None, self_training=None):
    """Trains, evaluates and saves a classifier as `config` says; returns the metrics dict.

    `verbose=0` silences tfllm's own progress lines ("Data: ...", "Word vectors: ...") as it silences
    Keras': they are printed from many helpers, so one check here; warnings still go through `warnings`.
    """
    if verbose != 0:
        return _train_classifier(config, verbose, tokenizer, data, self_training)
    with contextlib.redirect_stdout(io.StringIO()):
        return _train_classifier(config, verbose, tokenizer, data, self_training)


def _train_classifier(config, verbose="auto", tokenizer=None, data=None, self_training=None):
    """`train_classifier`, whose progress lines it prints.

    `config.ensemble` > 1 trains that many seeds and saves their average
    (`tfllm.training.ensemble`). `tokenizer` and `data` (ensemble members, a
    self-training student) are used instead of training one and of reading
    the config's data. `config.unlabeled` self-trains
    (`tfllm.training.self_training`), which calls this function for the
    teacher and then for the student, with `self_training` (its report).
    """
    common.check_config(config, "classify")
    if data is None:  # the command's own config (not an ensemble member's or a teacher's)
        check_unread_options(config)
        common.check_run_dir(config)
    if config.ensemble != 1:
        # Imported here: the ensemble trainer calls this function for each member.
        from tfllm.training.ensemble import train_ensemble

        return train_ensemble(config, verbose=verbose, data=data, self_training=self_training)
    # First: a multi-worker strategy must exist before any other TensorFlow op runs.
    strategy = common.get_strategy(config.strategy)
    preset = common.resumed_recipe(config, classifier_preset(config))
    common.check_global_batch(preset["batch_size"], strategy)
    common.check_multi_worker_recipe(preset, strategy)
    # Everything that can fail on bad input happens before the run directory is touched.
    if data is None:
        data = command_data(config, preset)
    freeze = preset.get("freeze_epochs") or 0
    if freeze and preset["epochs"] and freeze >= preset["epochs"]:  # cut to epochs - 1 without a word: 0
        raise UserInputError(f"--set freeze_epochs={freeze} trains the new head alone for {freeze} of the run's "
                             f"{preset['epochs']} epoch(s), leaving none to fine-tune the backbone; set it below "
                             f"--epochs, or raise --epochs.")
    if config.from_preset:
        check_preset_head_settings(config, preset_backbone_class(config.from_preset))
        if not preset["epochs"]:
            check_kept_head(config.from_preset, data, config.data)
    if config.unlabeled and self_training is None:  # a teacher, then this run as its student
        return train_self_trained(config, preset, data, train_classifier, verbose=verbose)
    # The split keeps `seed`; an ensemble member's weights and shuffle follow its own `model_seed`.
    model_seed = config.seed if config.model_seed is None else config.model_seed
    keras.utils.set_random_seed(model_seed)
    run_dir = common.worker_run_dir(config.run_dir, strategy)  # non-chief workers write to a temporary folder
    resume, previous = runs.prepare(run_dir, overwrite=config.overwrite, config=config)
    with common.guarded_run(run_dir, resume, previous, backup_dir=os.path.join(config.run_dir, common.BACKUP)):
        if tokenizer is None:
            tokenizer = common.start_run(run_dir, config, preset, resume, data.vocabulary_texts,
                                         records={runs.LABELS: data.label_names, **unlabeled_record(data.unlabeled)})
        else:
            tokenizer = _start_member_run(run_dir, config, preset, resume, data.label_names, tokenizer)
        with strategy.scope(), common.precision_scope(config.precision):
            if config.from_preset:
                model = classifier_from_preset(config.from_preset, preset, data.num_classes,
                                               keep_head=not preset["epochs"])
                dropped = dropped_ngram_paths(config.from_preset, preset) if preset["epochs"] else []
                if dropped and config.model_seed in (None, config.seed):  # once: not by each ensemble member
                    # A tuned run's winning recipe (n-gram tables: most of its parameters) was silently
                    # replaced by `finetune`'s plain encoder head, which collapsed to one class on small data.
                    note(f"Note: {shell_path(config.from_preset)} has n-gram paths ({', '.join(dropped)}) "
                         f"that recipe {config.preset!r} has none of, so only its encoder and tokenizer carry "
                         "over, under a new head. To train its own recipe on this data, train from scratch with "
                         f"the settings in {shell_path(runs.path(config.from_preset, runs.RECIPE))} (--preset, "
                         "--set; no --from-preset), or fine-tune with --preset NAME of a recipe with n-gram paths "
                         "(new tables, counted here).", file=sys.stdout)
                common.warn_unknown_tokens(config.from_preset, model.preprocessor.tokenizer,
                                           _flat_ids(model.preprocessor.tokenizer, data.train.texts[:2000]),
                                           "training texts", ", so texts made of them all look alike to it")
                if isinstance(model.preprocessor.tokenizer, keras_hub.tokenizers.BytePairTokenizer):
                    # A byte-pair vocabulary without some text's bytes gives it id -1 (no [UNK]): it trained
                    # and scored on -1 without a word, and the TFLite export refused the run. As generation.
                    data_lib.tokenize_corpus(model.preprocessor.tokenizer, "\n".join(
                        [*data.train.texts, *data.val.texts, *data.test.texts]), "training, validation and test")
            else:
                model = own_classifier(preset, tokenizer, data.num_classes)
                if preset.get("word_vectors") and not resume:  # a resumed run restores its weights
                    pretrain_word_vectors(model, tokenizer, data.vocabulary_texts, preset, model_seed)
            if config.model_seed in (None, config.seed):  # once: not by each ensemble member
                # A text's tokens past the window were cut without a word: 3,000-word reviews trained, and
                # predicted, on their first 62 tokens.
                long = long_document_note(
                    data.train.texts, model.preprocessor.tokenizer, model.preprocessor.sequence_length,
                    common.preset_positions(config.from_preset) if config.from_preset else None,
                    seed=config.seed or 0, classifier=True)
                if long:  # a filterable TfllmWarning to a Python caller, in its names; the command's line to a command
                    note(long, python=long.removeprefix("tfllm: note: "))
            sigmoid = is_sigmoid(model)
            train_ds = data_lib.classification_dataset(
                data.train, model.preprocessor, sigmoid, preset["batch_size"], shuffle=True, seed=model_seed)
            val_ds = data_lib.classification_dataset(data.val, model.preprocessor, sigmoid, preset["batch_size"])
            steps_per_epoch = -(-len(data.train) // preset["batch_size"])
            compile_classifier(model, preset, steps_per_epoch)
            common.adapt_model_to_strategy(model, strategy)
        callbacks = common.make_callbacks(
            run_dir,
            early_stopping_patience=2 if preset.get("early_stopping") else None,
            write_logs=common.is_chief(strategy),
            backup_dir=os.path.join(config.run_dir, common.BACKUP),  # every worker resumes from the chief's backup
            ema=bool(moving_average(preset, steps_per_epoch)),
        )
        # `--set balance_classes=true`: each class weighs as much in the loss (and in the blend's fit) as the others.
        class_weight = balanced_class_weight(data.train.labels, data.num_classes) if preset.get("balance_classes") else None
        start = time.perf_counter()
        # Measured as the last fit ends and kept in the backup: a run resumed after that reports its training's.
        common.measure_fit(callbacks, lambda: {"train_seconds": round(time.perf_counter() - start, 1)})
        with common.unknown_length_ok(), common.preprocessed(model):
            freeze = max(0, min(preset.get("freeze_epochs") or 0, preset["epochs"] - 1))  # 0 for --epochs 0
            history = {}
            if freeze and not resume:  # a resumed run's backup comes after the frozen epochs
                # Train only the new head first, so its random start does not disturb the pretrained backbone.
                # Logged (TensorBoard, learning rate) and guarded like the rest, as epochs 1..freeze of
                # the run; not backed up or checkpointed: an interruption here starts over.
                model.backbone.trainable = False
                compile_classifier(model, preset, steps_per_epoch)
                with common.eager_evaluation(model, common.dataset_batches(val_ds, freeze), strategy):
                    first = model.fit(train_ds, validation_data=val_ds, epochs=freeze, shuffle=False,
                                      verbose=verbose, class_weight=class_weight,
                                      callbacks=common.logging_callbacks(callbacks))
                history = dict(first.history)
                model.backbone.trainable = True
                steps_done = int(model.optimizer.iterations.numpy())
                compile_classifier(model, preset, steps_per_epoch)
                # The new optimizer counts on from the frozen epochs' steps: its warm-up and cosine schedule
                # (over the whole run) went back to its start, never decaying to zero, and TensorBoard's
                # per-step curves started again at step 0.
                model.optimizer.iterations.assign(steps_done)
            # shuffle=False: the pipeline shuffles; Keras's default True only warns for tf.data input.
            # initial_epoch: the run's epochs are numbered on after the frozen ones (TensorBoard, backups).
            evaluated = common.dataset_batches(val_ds, preset["epochs"] - freeze)
            with common.eager_evaluation(model, evaluated, strategy):
                fitted = model.fit(train_ds, validation_data=val_ds, initial_epoch=freeze, epochs=preset["epochs"],
                                   shuffle=False, class_weight=class_weight, callbacks=callbacks, verbose=verbose)
            for key, values in fitted.history.items():
                history[key] = history.get(key, []) + list(values)
            best = os.path.join(run_dir, common.BEST_WEIGHTS)
            if os.path.exists(best):
                model.load_weights(best)  # the checkpoint of the lowest val loss (removed when the run is saved)
            unseen = [name for i, name in enumerate(data.label_names) if i not in set(data.val.labels)]
            # (Not for a preset kept as it is, --epochs 0: its wide path is trained.)
            wide = preset.get("wide_bigram_buckets") and isinstance(model, TextClassifier) and preset["epochs"]
            val_probabilities, tables_from = None, None
            if wide and unseen and len(data.label_names) == 2:
                # Fitted on a split without a class, the blend's bias for it runs to minus infinity: that
                # class was never predicted again (probability 1e-11 for its own training texts).
                # Unlike several classes' (each its own bias), a sigmoid's one bias cannot be fitted on one class:
                # the line says so, and how to get both classes into the validation split.
                missing = ", ".join(map(repr, unseen))
                print(f"Naive-Bayes wide path left out: the validation split has no {missing} rows, and a two-class "
                      "blend cannot be fitted on one class (the encoder's probabilities stand alone); for the wide "
                      f"path, give the validation split rows of both classes: more {missing} rows, or --split-column "
                      "naming each row's split")
            elif wide:
                if unseen:  # several classes: the others' blend is fitted, theirs gets their mean bias (_fit_blend)
                    print(unseen_classes_line(unseen), flush=True)
                # `refit_on_validation` (on unless set false): once the blend is fitted, the tables count both splits.
                refit = preset.get("refit_on_validation", True)
                tables_from = ["train", "val"] if refit else ["train"]
                # Flushed: the fit comes next, minutes for hundreds of classes (scikit-learn's regression of the
                # character view, twice), and a piped stdout held this line back, so nothing said what ran.
                # The epochs' val_accuracy was the encoder path's alone (`LogitBlend` passes it until this fit),
                # often far from metrics.json's blended figures: said here, where the blend comes in.
                print("Naive-Bayes wide path: counts from the training split, blend fitted on the validation split"
                      + (", then counts from both" if refit else "")
                      + " (the epochs' val figures above are the encoder's alone)", flush=True)
                # Both splits cached by fit: no second tokenization. The validation split's figures are
                # those before its texts joined the tables.
                val_probabilities = model.fit_wide_path(train_ds, val_ds, class_weight=class_weight, refit=refit)

        if val_probabilities is None:
            val_probabilities = predict_probabilities(model, data.val.texts)
        metrics = {
            "val": classification_report(data.val.labels, val_probabilities, data.label_names),
            "test": classification_report(data.test.labels, predict_probabilities(model, data.test.texts), data.label_names),
            **(common.fit_figures(callbacks, ("train_seconds",)) if preset["epochs"] else {}),  # no epoch, no time
            # The whole run, also when it resumed: the backup restored the epochs before the interruption.
            "epochs_run": common.epochs_completed(callbacks, freeze + len(fitted.history.get("loss", []))),
            "num_train_examples": len(data.train),
            "parameters": int(model.count_params()),
        }
        if not preset["epochs"] and config.from_preset:
            keep_out_of_sample_val(config.from_preset, data, metrics)
        if tables_from:  # which splits the n-gram tables counted (`tfllm evaluate --split val` says so)
            metrics["ngram_tables_from"] = tables_from
        if tables_from and "val" in tables_from:
            # Recomputed from the saved model, every val figure differed without a word in the file itself.
            metrics["val"]["measured"] = VAL_MEASURED_BEFORE_REFIT
        if self_training:
            metrics["self_training"] = self_training
        if common.is_chief(strategy):
            # A few held-out texts explained (occlusion) in TensorBoard's Text tab: validation texts, or test
            # texts once the n-gram tables counted the validation split (refit_on_validation), which knew those
            # very texts: they were explained saturated (p = 1.000, every token's score 0).
            held_out = data.test if "val" in (tables_from or ()) and len(data.test.texts) else data.val
            write_explanations(run_dir, model, data.label_names, held_out.texts)
        if isinstance(model, TextClassifier):  # saved in task.json: `from_preset(run_dir)` alone names its classes
            model.label_names = data.label_names
        common.finish_run(run_dir, config.run_dir, model, preset, history, metrics)
        return metrics
