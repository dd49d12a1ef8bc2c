"""TrainConfig -> tokenizer -> TextClassifier -> model.fit -> a finished run directory.

A run directory holds: `config.json` (the TrainConfig), `preset.json` (the
resolved hyperparameters), `tokenizer/`, `labels.json`, `model.keras`,
`metrics.json`, `logs/` (TensorBoard) and, while unfinished, `backup/`.
"""

import os
import time

import keras
import numpy as np

from tfllm import data as data_lib
from tfllm.datasets import load_classification_data
from tfllm.evaluation import classification_report
from tfllm.models import TextClassifier, resolve_preset
from tfllm.tokenizers import load_tokenizer, save_tokenizer, train_tokenizer
from tfllm.training import common
from tfllm.training.pretraining import pretrain_masked_lm

MODEL_ARGS = ("sequence_length", "hidden_dim", "num_layers", "num_heads", "intermediate_dim", "dropout", "embedding_dropout", "bigram_buckets",
              "wide_bigram_buckets")


def classifier_preset(config):
    flags = dict(tokenizer=config.tokenizer, epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                 jit_compile=config.jit_compile)
    overrides = dict(config.overrides)
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return resolve_preset("classify", config.preset, overrides)


def build_classifier(preset, vocabulary_size, num_classes):
    """The compiled model for a preset: Adam(W) with binary or categorical cross-entropy."""
    model = TextClassifier(
        vocabulary_size=vocabulary_size, num_classes=num_classes, **{k: preset[k] for k in MODEL_ARGS if k in preset}
    )
    # An exponential moving average of the weights (swapped in when fit ends)
    # smooths the noisy late epochs of a small dataset.
    ema = dict(use_ema=True, ema_momentum=preset["ema_momentum"]) if preset.get("ema_momentum") else {}
    if preset.get("weight_decay"):
        optimizer = keras.optimizers.AdamW(preset["learning_rate"], weight_decay=preset["weight_decay"], **ema)
    else:
        optimizer = keras.optimizers.Adam(preset["learning_rate"], **ema)
    binary = num_classes == 2
    smoothing = preset.get("label_smoothing", 0.0)
    if binary:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing, name="binary_crossentropy")
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing, name="categorical_crossentropy")
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    # None keeps Keras' "auto": XLA on GPUs, not on CPUs or under tf.distribute.
    jit_compile = "auto" if preset.get("jit_compile") is None else bool(preset["jit_compile"])
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
    return model


def predict_probabilities(model, tokenizer, texts, batch_size=256):
    """`[n, num_classes]` probabilities for a list of strings."""
    probabilities = []
    for ids in data_lib.text_batches(texts, tokenizer, batch_size):
        probabilities.append(keras.ops.convert_to_numpy(model.probabilities(ids)))
    return np.concatenate(probabilities) if probabilities else np.zeros((0, model.num_classes))


def load_run(run_dir):
    """(model, tokenizer, label_names, preset) of a finished classification run."""
    from tfllm.errors import UserInputError

    if not os.path.exists(os.path.join(run_dir, "model.keras")):
        raise UserInputError(
            f"{run_dir!r} is not a finished tfllm run (no model.keras). Train one with `tfllm train --run-dir {run_dir}`."
        )
    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
    label_names = common.read_json(os.path.join(run_dir, "labels.json"))
    preset = common.read_json(os.path.join(run_dir, "preset.json"))
    return model, tokenizer, label_names, preset


def train_classifier(config, verbose="auto"):
    """Trains, evaluates and saves a classifier as `config` says; returns the metrics dict."""
    # First: a multi-worker strategy must exist before any other TensorFlow op runs.
    strategy = common.get_strategy(config.strategy)
    preset = classifier_preset(config)
    common.check_global_batch(preset["batch_size"], strategy)
    # Everything that can fail on bad input happens before the run directory is touched.
    data = load_classification_data(
        config.data,
        text_column=config.text_column,
        label_column=config.label_column,
        split_column=config.split_column,
        labels=config.labels,
        seed=config.seed,
        max_rows=config.max_rows,
    )
    keras.utils.set_random_seed(config.seed)
    run_dir = common.worker_run_dir(config.run_dir, strategy)  # non-chief workers write to a temporary folder
    resume = common.prepare_run_dir(run_dir)
    with common.guarded_run(run_dir, resume):
        if resume:
            print(f"Resuming the interrupted run in {run_dir}")
            tokenizer = load_tokenizer(os.path.join(run_dir, "tokenizer"))
        else:
            tokenizer = train_tokenizer(
                data.train.texts, preset["tokenizer"], preset["vocabulary_size"], preset["sequence_length"]
            )
            save_tokenizer(tokenizer, os.path.join(run_dir, "tokenizer"))
            common.write_json(os.path.join(run_dir, "labels.json"), data.label_names)
            common.write_json(os.path.join(run_dir, "preset.json"), preset)
            config.to_json(os.path.join(run_dir, "config.json"))

        train_ds = data_lib.classification_dataset(
            data.train, tokenizer, data.num_classes, preset["batch_size"], shuffle=True, seed=config.seed
        )
        val_ds = data_lib.classification_dataset(data.val, tokenizer, data.num_classes, preset["batch_size"])
        with strategy.scope(), common.precision_scope(config.precision):
            model = build_classifier(preset, tokenizer.vocabulary_size(), data.num_classes)
            common.adapt_model_to_strategy(model, strategy)
            if preset.get("pretrain_epochs") and not resume:
                print(f"Masked-LM pretraining of the encoder on the {len(data.train)} training texts")
                pretrain_masked_lm(
                    model,
                    data_lib.token_id_rows(data.train.texts, tokenizer).cache(),
                    epochs=preset["pretrain_epochs"],
                    batch_size=preset["batch_size"],
                    learning_rate=preset.get("pretrain_learning_rate", 1e-3),
                    seed=config.seed,
                    verbose=verbose,
                )
        callbacks = common.make_callbacks(
            run_dir,
            early_stopping_patience=2 if preset.get("early_stopping") else None,
            write_logs=common.is_chief(strategy),
            backup_dir=os.path.join(config.run_dir, common.BACKUP),  # every worker resumes from the chief's backup
        )
        start = time.perf_counter()
        with common.unknown_length_ok():
            # shuffle=False: the pipeline shuffles; Keras's default True only warns for tf.data input.
            history = model.fit(train_ds, validation_data=val_ds, epochs=preset["epochs"], shuffle=False,
                                callbacks=callbacks, verbose=verbose)
            train_seconds = time.perf_counter() - start
            best = os.path.join(run_dir, "best.weights.h5")
            if os.path.exists(best):
                model.load_weights(best)  # the checkpoint of the lowest val loss
                os.remove(best)
            if preset.get("wide_bigram_buckets"):
                print("Naive-Bayes wide path: counts from the training split, blend fitted on the validation split")
                model.fit_wide_path(train_ds, val_ds)  # both cached by fit: no second tokenization

        metrics = {
            "val": classification_report(data.val.labels, predict_probabilities(model, tokenizer, data.val.texts), data.label_names),
            "test": classification_report(data.test.labels, predict_probabilities(model, tokenizer, data.test.texts), data.label_names),
            "train_seconds": round(train_seconds, 1),
            "epochs_run": len(history.history.get("loss", [])),
            "num_train_examples": len(data.train),
        }
        common.finish_run(run_dir, config.run_dir, model, tokenizer, preset, history.history, metrics)
        return metrics
