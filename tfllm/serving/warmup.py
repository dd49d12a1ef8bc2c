"""TF Serving warm-up files: `assets.extra/tf_serving_warmup_requests`.

TF Serving replays these requests when it loads a version, before marking it
AVAILABLE, so the first user request does not pay for lazy initialisation
(and a broken export fails at load time, not on a user's request).
"""

from __future__ import annotations

import os

# Imported eagerly so that a missing `serving` extra shows up as an
# ImportError when this module is imported, which exporters can catch.
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tfllm.errors import UserInputError
from tfllm.serving import models as models_lib

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving reads at most this many


def write_warmup_requests(export_dir: str, model_name: str, signature_name: str,
                          inputs: dict[str, list], batch_sizes=(1,)) -> str:
    """Writes one warm-up request per row of `inputs` and batch size.

    Tensors take the dtypes the SavedModel's signature declares, so a request
    never fails on a dtype mismatch (which would make TF Serving refuse to
    load the version).

    Args:
        export_dir: a SavedModel folder (a `VERSION/` folder or the temporary
            folder it is renamed from).
        model_name: the name TF Serving serves the model under.
        signature_name: the signature the requests call.
        inputs: `{input name: rows}`; every batched input has the same number
            of rows and each record gets one of them. A scalar input (shape
            `[]`) takes either one value for all records or one per record.
        batch_sizes: each row is also sent repeated to these batch sizes, so
            a model that compiles per batch shape (XLA generation) compiles
            them at load time rather than on a user's request.

    Returns:
        The path of the file written.

    Raises:
        UserInputError: if the names or row counts do not match the signature.

    Example:
    ```python
    write_warmup_requests("savedmodels/reviews/3", "reviews", "serving_default",
                          {"text": ["a great film", "dull"]})
    ```
    """
    import numpy as np
    import tensorflow as tf

    sig_defs = models_lib.read_signature_defs(export_dir)
    if signature_name not in sig_defs:
        raise UserInputError(
            f"Signature {signature_name!r} is not in {export_dir} "
            f"(signatures: {', '.join(k for k in sig_defs if not k.startswith('__'))})."
        )
    specs = sig_defs[signature_name].inputs
    if set(inputs) != set(specs):
        raise UserInputError(
            f"Warm-up inputs {sorted(inputs)} do not match signature {signature_name!r} "
            f"inputs {sorted(specs)}."
        )
    scalar = {k for k, s in specs.items()
              if not s.tensor_shape.unknown_rank and not s.tensor_shape.dim}
    batched_counts = {len(v) for k, v in inputs.items() if k not in scalar}
    per_record_scalars = {len(v) for k, v in inputs.items()
                          if k in scalar and isinstance(v, (list, tuple))}
    counts = batched_counts | per_record_scalars
    if len(counts) > 1:
        raise UserInputError(f"Warm-up inputs have different row counts: {sorted(counts)}.")
    n = min(counts.pop() if counts else 1, MAX_RECORDS)

    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise UserInputError(f"Warm-up batch sizes must be positive integers, got {batch_sizes!r}.")
    path = os.path.join(export_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    records = [(i, b) for b in batch_sizes for i in range(n)][:MAX_RECORDS]
    with tf.io.TFRecordWriter(path) as writer:
        for i, rows in records:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            for name, values in inputs.items():
                dtype = tf.dtypes.as_dtype(specs[name].dtype)
                if name in scalar:
                    value = values[i] if isinstance(values, (list, tuple)) else values
                else:
                    value = [values[i]] * rows
                array = np.asarray(value, dtype=object if dtype == tf.string
                                   else dtype.as_numpy_dtype)
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list:
    """The `PredictRequest`s of a warm-up file, in order."""
    import tensorflow as tf

    path = os.path.join(export_dir, WARMUP_PATH)
    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests
