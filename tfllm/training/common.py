"""What every training run shares: the run directory, callbacks, the strategy scope."""

import json
import os
import shutil

import keras
import tensorflow as tf

from tfllm.errors import UserInputError

BACKUP = "backup"  # BackupAndRestore's folder; present only while a run is unfinished


def write_json(path, value):
    """Writes JSON atomically: readers never see half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def prepare_run_dir(run_dir):
    """Creates `run_dir`, or decides to resume it.

    Returns True when the folder holds an interrupted run (its BackupAndRestore
    state is there) that should be resumed. A finished tfllm run is replaced; a
    non-empty folder that is not a tfllm run is refused rather than deleted.
    """
    if os.path.isdir(os.path.join(run_dir, BACKUP)) and os.path.exists(os.path.join(run_dir, "config.json")):
        return True
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not os.path.exists(os.path.join(run_dir, "config.json")):
            raise UserInputError(
                f"Run directory {run_dir!r} is not empty and is not a tfllm run. Choose another --run-dir."
            )
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return False


def save_model_atomically(model, path):
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (so TensorBoard plots it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def make_callbacks(run_dir, early_stopping_patience=None, monitor="val_loss", checkpoint=True, write_logs=True):
    """TensorBoard, best-model checkpoint, early stopping, resume, stop on NaN.

    `write_logs=False` is for non-chief workers in multi-worker training, which
    must not write logs or checkpoints of their own.
    """
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        LearningRateLogger(),
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP), delete_checkpoint=True),
    ]
    if write_logs:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False))
    if checkpoint and write_logs:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(run_dir, "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
            )
        )
    if early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, patience=early_stopping_patience, restore_best_weights=True)
        )
    return callbacks


def get_strategy(name="auto"):
    """The `tf.distribute` strategy for `--strategy NAME`."""
    if name in ("auto", "default"):
        if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise UserInputError(f"Unknown strategy {name!r}; choose auto, default or mirrored.")
