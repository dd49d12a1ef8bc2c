"""LazyAdamW (tfllm.training.optimizers): AdamW on the embedding rows a batch used."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfllm.training.optimizers import LazyAdamW


def train(optimizer, ids_per_step, dense_weight=True, densify=False):
    """A 6-row embedding (and a dense weight) trained for a few steps on the given lookups; the final values.
    `densify` hands the optimizer dense gradients instead of the embedding's `tf.IndexedSlices`."""
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(6, 3)
    dense = keras.layers.Dense(1)
    embedding.build((None,))
    dense.build((None, 3))
    variables = embedding.trainable_variables + (dense.trainable_variables if dense_weight else [])
    optimizer.build(variables)
    for ids in ids_per_step:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(dense(embedding(tf.constant(ids))) - 1.0))
        gradients = tape.gradient(loss, variables)
        optimizer.apply([tf.convert_to_tensor(g) for g in gradients] if densify else gradients, variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_rows_used_every_step_train_exactly_as_keras_adamw():
    steps = [[0, 1, 2, 3, 4, 5]] * 4  # every row, once per step: lazy and dense updates coincide
    lazy = train(LazyAdamW(0.1, weight_decay=0.2), steps)
    dense = train(keras.optimizers.AdamW(0.1, weight_decay=0.2), steps)
    for a, b in zip(lazy, dense):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lazy[0], train(LazyAdamW(0.1, weight_decay=0.2), [])[0])  # and they did train


def test_unused_rows_are_left_alone_and_repeated_rows_summed():
    start = train(LazyAdamW(0.1, weight_decay=0.2), [])[0]
    lazy = train(LazyAdamW(0.1, weight_decay=0.2), [[0, 1, 1]] * 3)[0]
    dense = train(keras.optimizers.AdamW(0.1, weight_decay=0.2), [[0, 1, 1]] * 3, densify=True)[0]
    np.testing.assert_array_equal(lazy[2:], start[2:])  # never looked up: no step, no decay
    assert not np.allclose(dense[2:], start[2:])  # Keras' AdamW decays every row
    # Row 1, looked up twice per step, gets one Adam step on the summed gradient, as a dense gradient gives.
    # (Keras' AdamW on the sparse gradient squares each lookup's slice before summing them: not Adam's moment.)
    np.testing.assert_allclose(lazy[:2], dense[:2], rtol=1e-5, atol=1e-6)


def test_config_keeps_the_weight_decay_and_round_trips():
    optimizer = LazyAdamW(0.01, weight_decay=0.3)
    optimizer.build([keras.Variable(np.zeros((2, 2), "float32"))])
    config = keras.optimizers.serialize(optimizer)
    again = keras.optimizers.deserialize(config)
    assert isinstance(again, LazyAdamW) and again.get_config()["weight_decay"] == 0.3


def test_amsgrad_is_refused_rather_than_ignored():
    with pytest.raises(ValueError, match="does not support amsgrad=True"):
        train(LazyAdamW(0.1, amsgrad=True), [[0, 1]])
    train(keras.optimizers.AdamW(0.1, amsgrad=True), [[0, 1]])  # what the message points to


@pytest.mark.slow
def test_lazy_adam_and_ema_settings_reach_a_classifiers_training(tmp_path, monkeypatch):
    """`--set lazy_adam=true`: fit hands LazyAdamW the embeddings' sparse gradients. `--set ema_epochs=1`:
    the optimizer keeps the average and every epoch swaps it in before the checkpoint. The run finishes."""
    from tfllm.cli import main

    sparse_steps, swaps = [], []
    real = LazyAdamW.update_step
    real_swap = keras.callbacks.SwapEMAWeights.on_epoch_end

    def counted(self, gradient, variable, learning_rate):  # the real update, its sparse calls counted
        if isinstance(gradient, tf.IndexedSlices):
            sparse_steps.append(variable.name)
        return real(self, gradient, variable, learning_rate)

    def counted_swap(self, epoch, logs=None):  # the real swap, counted
        swaps.append(self.model.optimizer.ema_momentum)
        return real_swap(self, epoch, logs)

    monkeypatch.setattr(LazyAdamW, "update_step", counted)
    monkeypatch.setattr(keras.callbacks.SwapEMAWeights, "on_epoch_end", counted_swap)
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"the film was {w} indeed,{'pos' if i % 2 else 'neg'}\n"
                                             for i, w in enumerate(["good", "bad", "fine", "poor"] * 10)))
    assert main(["train", "--task", "classify", "--data", str(data), "--preset", "tiny", "--set", "lazy_adam=true",
                 "--set", "weight_decay=0.1", "--set", "ema_epochs=1", "--set", "epochs=2",
                 "--run-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert any("embedding" in name for name in sparse_steps)  # traced once per variable: the token/bigram tables
    steps_per_epoch = -(-json.loads((tmp_path / "run" / "metrics.json").read_text())["num_train_examples"] // 16)
    assert swaps == [1 - 1 / steps_per_epoch] * 2  # both epochs, with the momentum ema_epochs=1 gives


def test_an_ema_run_validates_checkpoints_and_keeps_the_averaged_weights(tmp_path):
    """`ema_momentum`: the best checkpoint holds the moving average, not the raw weights it averages."""
    from tfllm.training.common import make_callbacks

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.8), "mse")
    raw = []  # the weights after every step, as the optimizer saw them

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append(np.concatenate([w.ravel() for w in self.model.get_weights()]))

    history = model.fit(x, y, batch_size=8, epochs=4, validation_data=(x, y), verbose=0, shuffle=False,
                        callbacks=[Record()] + make_callbacks(str(tmp_path), ema=True))
    averages = [raw[0]]
    for weights in raw[1:]:
        averages.append(0.8 * averages[-1] + 0.2 * weights)
    best_epoch = int(np.argmin(history.history["val_loss"]))
    model.load_weights(tmp_path / "best.weights.h5")
    saved = np.concatenate([w.ravel() for w in model.get_weights()])
    np.testing.assert_allclose(saved, averages[4 * best_epoch + 3], rtol=1e-4, atol=1e-5)
    assert not np.allclose(saved, raw[4 * best_epoch + 3], atol=1e-3)  # the raw weights were what Keras kept before


def test_ema_epochs_sets_the_momentum_from_the_epoch_length():
    from tfllm.errors import UserInputError
    from tfllm.training.classifier import moving_average

    assert moving_average({}, 164) == {}
    assert moving_average({"ema_epochs": 3}, 164) == {"use_ema": True, "ema_momentum": 1 - 1 / 492}
    assert moving_average({"ema_epochs": 3}, 13)["ema_momentum"] == 1 - 1 / 39  # a few-label run averages fewer steps
    assert moving_average({"ema_epochs": 3, "ema_momentum": 0.9}, 164)["ema_momentum"] == 0.9  # Keras' own, if given
    for bad in ({"ema_epochs": 0}, {"ema_momentum": 1.0}, {"ema_momentum": -0.5}):
        with pytest.raises(UserInputError, match="ema_"):
            moving_average(bad, 164)
