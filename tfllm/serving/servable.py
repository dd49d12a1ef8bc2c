"""One loaded SavedModel version: its signatures, how a request runs through them, and how it is loaded
(and warmed with its `assets.extra/tf_serving_warmup_requests`, as TF Serving warms a version)."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from tfllm.serving import models as models_lib
from tfllm.serving.codec import clean_tf_message, describe_inputs, proto_inputs_to_tensors
from tfllm.serving.limits import RequestError, shown

logger = logging.getLogger("tfllm.serving")

DEFAULT_SIGNATURE = "serving_default"
_MAX_WARMUP_RECORDS = 1000


@dataclass
class Signature:
    """One callable signature of a loaded SavedModel.

    Attributes:
        name: the signature key, e.g. `serving_default`.
        fn: the concrete function, looked up once at load time.
        inputs: `{input name: tf.TensorSpec}`.
        outputs: output names in a stable order.
        recent_seconds: moving average of the call time (warm-up calls set it
            first); infinite until the signature has been called.
        vocabulary_size: the rows of its token embedding, found at load time (None: it has none, or another
            name); named when another table refuses a token id first.
    """

    name: str
    fn: object
    inputs: dict
    outputs: list[str]
    recent_seconds: float = float("inf")
    vocabulary_size: int | None = None

    def describe_inputs(self) -> str:
        return describe_inputs(self.inputs)

    def call(self, kwargs: dict) -> dict[str, np.ndarray]:
        """Runs the signature; the model's own refusals become `RequestError`s."""
        import tensorflow as tf

        start = time.perf_counter()
        try:
            outputs = self.fn(**kwargs)
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
                tf.errors.FailedPreconditionError) as e:
            # The model's own checks (an empty prompt, a value out of range).
            raise RequestError(clean_tf_message(e.message, self.vocabulary_size)) from e
        except tf.errors.ResourceExhaustedError as e:
            raise RequestError(f"The model ran out of memory for this request; send a "
                               f"smaller one ({clean_tf_message(e.message)[:300]}).", 413) from e
        except (TypeError, ValueError) as e:
            raise RequestError(str(e).splitlines()[0]) from e
        if not isinstance(outputs, dict):
            outputs = {"output_0": outputs}
        outputs = {k: v.numpy() for k, v in outputs.items()}
        seconds = time.perf_counter() - start
        # Racy across threads, harmlessly: it only steers where the next call runs.
        self.recent_seconds = (seconds if self.recent_seconds == float("inf")
                               else 0.8 * self.recent_seconds + 0.2 * seconds)
        return outputs


@dataclass
class Servable:
    """One loaded version of one model.

    Attributes:
        name: the model name (its folder under the base path).
        version: the integer version (its sub-folder).
        path: the version folder.
        signatures: `{signature name: Signature}`.
        signature_def_map: the `SignatureDefMap` proto that metadata returns.
    """

    name: str
    version: int
    path: str
    signatures: dict[str, Signature]
    signature_def_map: object
    loaded: object = None  # keeps the SavedModel's resources alive
    metadata_json: dict = field(default_factory=dict)

    def signature(self, name: str | None) -> Signature:
        sig = self.signatures.get(name or DEFAULT_SIGNATURE)
        if sig is None:
            known = ", ".join(sorted(self.signatures)) or "none"
            raise RequestError(
                f"Serving signature name: {shown(name or DEFAULT_SIGNATURE)} not found in "
                f"model {self.name!r} version {self.version} (signatures: {known}).",
                # TF Serving: REST InvalidArgument (400), gRPC Predict FailedPrecondition;
                # 404 / NOT_FOUND would read as "no such model or version".
                400, grpc_code="FAILED_PRECONDITION",
            )
        return sig

    def refuse_method(self, method: str, signature_name: str | None) -> RequestError:
        """The refusal of Classify / Regress / MultiInference: this server runs Predict only.

        TF Serving answers INVALID_ARGUMENT (400) for a signature whose method_name is
        not classify / regress, which is every Keras export's; so do we, for any.
        """
        sig = self.signature(signature_name)  # an unknown signature gets its own refusal
        kind = self.signature_def_map.signature_def[sig.name].method_name or "none"
        return RequestError(
            f"{method} is not supported: tfllm serve runs signatures through Predict only "
            f"(signature {sig.name!r} of model {self.name!r} version {self.version} has "
            f"method_name {kind!r}, as Keras exports do); use Predict (REST :predict).")


def load_servable(name: str, version: int, path: str) -> Servable:
    """Loads one SavedModel version and caches its signature functions."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    loaded = tf.saved_model.load(path)
    signatures = {}
    for sig_name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        outputs = fn.structured_outputs
        out_names = sorted(outputs) if isinstance(outputs, dict) else ["output_0"]
        # The token embedding as Keras names it (`token_embedding/embeddings:0`, a tfllm export's and KerasHub's).
        embedding = [v.shape[0] for v in fn.variables if re.search(r"(^|/)token_embedding/embeddings:", v.name)]
        signatures[sig_name] = Signature(sig_name, fn, dict(kwargs), out_names,
                                         vocabulary_size=embedding[0] if len(embedding) == 1 else None)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig_def in models_lib.read_signature_defs(path).items():
        sig_map.signature_def[key].CopyFrom(sig_def)
    servable = Servable(name, version, path, signatures, sig_map, loaded)
    # As TF Serving's JSON (always_print_primitive_fields): "dim": [], "unknown_rank": false, ...
    servable.metadata_json = json_format.MessageToDict(
        sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _run_warmup(servable)
    return servable


def _run_warmup(servable: Servable) -> None:
    # TF Serving replays these before marking a version AVAILABLE so the first
    # real request does not pay for lazy initialisation; we do the same.
    from tfllm.serving.warmup import WARMUP_PATH, read_warmup_requests

    if not os.path.exists(os.path.join(servable.path, WARMUP_PATH)):
        return
    for i, request in enumerate(read_warmup_requests(servable.path)[:_MAX_WARMUP_RECORDS]):
        try:
            sig = servable.signature(request.model_spec.signature_name or None)
            sig.call(proto_inputs_to_tensors(request.inputs, sig))
        except RequestError as e:
            logger.warning("warm-up request %d of %s/%d failed: %s", i, servable.name,
                           servable.version, e.message)
