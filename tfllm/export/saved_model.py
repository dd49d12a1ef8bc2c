"""Classifier -> SavedModel with a raw-string `serving_default` signature.

The tokenizer runs inside the graph, so TF Serving (which links TensorFlow
Text's ops) takes plain strings. Any process loading the export must
`import tensorflow_text` first to register those ops.
"""

import os

import keras
import tensorflow as tf

from tfllm.export.versioning import atomic_version_dir
from tfllm.training.classifier import load_run

SERVING_SIGNATURE = "serving_default"
IDS_SIGNATURE = "classify_ids"


def classifier_archive(model, tokenizer, label_names):
    """An `ExportArchive` with two endpoints.

    `serving_default(text: string[None]) -> {probabilities: float32[None, K],
    label: string[None], score: float32[None]}`, and `classify_ids(token_ids:
    int32[None, L])` with the same outputs for clients that tokenize themselves.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    tokenizer(tf.constant(["build"]))  # a Layer must be built before it is tracked
    # Tracked so the graph keeps its lookup tables (keras-hub#2015).
    archive.track(tokenizer)
    names = tf.constant(label_names)

    def outputs(token_ids):
        probabilities = tf.cast(model.probabilities(token_ids), tf.float32)
        return {
            "probabilities": probabilities,
            "label": tf.gather(names, tf.argmax(probabilities, axis=-1)),
            "score": tf.reduce_max(probabilities, axis=-1),
        }

    archive.add_endpoint(
        SERVING_SIGNATURE,
        lambda text: outputs(tokenizer(text)),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.add_endpoint(
        IDS_SIGNATURE,
        outputs,
        input_signature=[tf.TensorSpec([None, model.sequence_length], tf.int32, name="token_ids")],
    )
    return archive


def export_classifier(run_dir, name, base_dir="savedmodels", warmup_texts=None):
    """Writes `base_dir/name/<next version>/` atomically; returns its path."""
    model, tokenizer, label_names, _ = load_run(run_dir)
    archive = classifier_archive(model, tokenizer, label_names)
    with atomic_version_dir(base_dir, name) as (tmp_dir, final_dir):
        archive.write_out(tmp_dir, verbose=False)
        texts = warmup_texts or ["a wonderful, moving film", "dull and far too long"]
        try:
            from tfllm.serving.warmup import write_warmup_requests
        except ImportError:  # serving extra not installed: export still works
            write_warmup_requests = None
        if write_warmup_requests is not None:
            write_warmup_requests(tmp_dir, name, SERVING_SIGNATURE, {"text": texts})
    return final_dir
