"""Classifier -> SavedModel with a raw-string `serving_default` signature.

The tokenizer runs inside the graph, so TF Serving (which links TensorFlow
Text's ops) takes plain strings. Any process loading the export must
`import tensorflow_text` first to register those ops.
"""


import keras
import tensorflow as tf

from tfllm import runs
from tfllm.export.versioning import atomic_version_dir, write_archive
from tfllm.models.text_classifier import class_probabilities

SERVING_SIGNATURE = "serving_default"
IDS_SIGNATURE = "classify_ids"


def classifier_archive(model, label_names):
    """An `ExportArchive` with two endpoints, for any KerasHub text classifier with its preprocessor.

    `serving_default(text: string[None]) -> {probabilities: float32[None, K],
    label: string[None], score: float32[None], classes: string[None, K]}` (`classes`: each
    probability column's label), and `classify_ids(token_ids:
    int32[None, L])` with the same outputs for clients that tokenize and pack
    themselves (`L` is the preprocessor's `sequence_length`; padding is the
    tokenizer's pad id). A model with a character or word view
    (`char_ngram_buckets`, `word_ngram_buckets`) also takes `code_points: int32[None, C]` there:
    the text's Unicode code points, 0 after its end (`C` is the
    preprocessor's `char_length`).
    """
    preprocessor = model.preprocessor
    pad_id = preprocessor.tokenizer.pad_token_id
    archive = keras.export.ExportArchive()
    archive.track(model)
    preprocessor(tf.constant(["build"]))  # a Layer must be built before it is tracked
    # Tracked so the graph keeps the tokenizer's lookup tables (keras-hub#2015).
    archive.track(preprocessor)
    names = tf.constant(label_names)

    def outputs(inputs):
        probabilities = class_probabilities(model, inputs)
        return {
            "probabilities": probabilities,
            "label": tf.gather(names, tf.argmax(probabilities, axis=-1)),
            "score": tf.reduce_max(probabilities, axis=-1),
            # The label of each probability column, for each row, as TF Serving's Classify API pairs classes
            # and scores: without it a served model's probabilities came back with no class names anywhere.
            "classes": tf.tile(names[None, :], [tf.shape(probabilities)[0], 1]),
        }

    def from_ids(token_ids, code_points=None):
        inputs = {"token_ids": token_ids, "padding_mask": tf.not_equal(token_ids, pad_id)}
        if "segment_ids" in model.input:  # BERT-style backbones: one segment
            inputs["segment_ids"] = tf.zeros_like(token_ids)
        if code_points is not None:
            inputs["code_points"] = code_points
        return outputs(inputs)

    ids_signature = [tf.TensorSpec([None, preprocessor.sequence_length], tf.int32, name="token_ids")]
    if "code_points" in model.input:
        ids_signature.append(tf.TensorSpec([None, preprocessor.char_length], tf.int32, name="code_points"))

    archive.add_endpoint(
        SERVING_SIGNATURE,
        lambda text: outputs(preprocessor(text)),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")],
    )
    archive.add_endpoint(
        IDS_SIGNATURE,
        from_ids,
        input_signature=ids_signature,
    )
    return archive


def export_classifier(run_dir, name, base_dir="savedmodels", warmup_texts=None):
    """Writes `base_dir/name/<next version>/` atomically; returns its path."""
    run_dir = runs.run_dir_argument(run_dir, "export_classifier")
    # export_classifier is Python's alone (`tfllm export` picks the exporter by the run's task): name the one to call.
    task = runs.task_of(run_dir)
    if task == "pretrain" and runs.read_config(run_dir).get("objective") == "causal":
        task = "generate"  # a causal pretraining run is a text generator
    exporter = {"generate": "tfllm.export.causal_lm.export_causal_lm",
                "translate": "tfllm.export.seq2seq.export_seq2seq"}.get(task)
    runs.require_task(run_dir, "classify", hint=f"Export it with {exporter}(run_dir, name)." if exporter else "")
    model = runs.load_task(run_dir, dtype="float32")  # see load_task: exports compute in float32
    archive = classifier_archive(model, runs.read_labels(run_dir))
    texts = warmup_texts or ["a wonderful, moving film", "dull and far too long"]
    with atomic_version_dir(base_dir, name, task="classify") as version:
        write_archive(archive, version, name, SERVING_SIGNATURE, lambda: {"text": texts})
    return version.path
