"""Probe: the `default` classifier recipe with adversarial training on its embeddings (issue 14).

    .venv/bin/python benchmarks/probe_adversarial_training.py EPSILON SEED

Adversarial training as in Miyato, Dai & Goodfellow (2017), who report it on these reviews:
each step also trains on the batch with the token and bigram embeddings moved by EPSILON
along the loss gradient (normalised per text), and adds that loss's gradients to the clean
ones. EPSILON 0 is the recipe as shipped. A probe, not a tfllm setting: it patches
`TextClassifier.train_step` in this process only. Appends a row to
benchmarks/results/adversarial_training.json (docs/benchmarks.md has the table).
"""
import os
import sys

import keras
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_classifier  # noqa: E402
from tfllm.models.text_classifier import TextClassifier  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "adversarial_training.json")


def tap(layer):
    """Makes `layer` keep its output (`layer.tapped`) and add `layer.delta` to it when that is set."""
    call = layer.call

    def tapped_call(*args, **kwargs):
        layer.tapped = call(*args, **kwargs)
        return layer.tapped if layer.delta is None else layer.tapped + layer.delta

    layer.call, layer.delta = tapped_call, None


def adversarial_train_step(self, data, epsilon):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    layers = [self.backbone.token_embedding, self.get_layer("bigram_embedding")]
    if not hasattr(layers[0], "delta"):
        for layer in layers:
            tap(layer)
    weights = self.trainable_weights
    with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    gradients = tape.gradient(loss, weights + [layer.tapped for layer in layers])
    gradients, embedding_gradients = gradients[:len(weights)], gradients[len(weights):]
    embedding_gradients = [tf.stop_gradient(tf.convert_to_tensor(g)) for g in embedding_gradients]
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g), axis=[1, 2]) for g in embedding_gradients]))  # per text
    for layer, g in zip(layers, embedding_gradients):
        layer.delta = g * (epsilon / (norm + 1e-12))[:, None, None]
    with tf.GradientTape() as tape:
        adversarial_loss = self._compute_loss(x=x, y=y, y_pred=self(x, training=True), sample_weight=sample_weight,
                                              training=True)
    adversarial_gradients = tape.gradient(adversarial_loss, weights)
    for layer in layers:
        layer.delta = None
    # The embedding tables' gradients are IndexedSlices; summed as dense tensors, as Keras' AdamW applies them.
    total = [tf.convert_to_tensor(g) + tf.convert_to_tensor(a) for g, a in zip(gradients, adversarial_gradients)]
    self._loss_tracker.update_state(loss, sample_weight=tf.shape(y)[0])
    self.optimizer.apply_gradients(zip(total, weights))
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def main():
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) != 3:
        sys.exit(__doc__)  # wrong arguments: the usage on stderr, exit 1
    epsilon, seed = float(sys.argv[1]), int(sys.argv[2])
    if epsilon > 0:
        TextClassifier.train_step = lambda self, data: adversarial_train_step(self, data, epsilon)
    bench_classifier.run_probe(OUT, seed, {"epsilon": epsilon})


if __name__ == "__main__":
    main()
