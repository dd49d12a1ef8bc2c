"""A local server that speaks TF Serving's REST and gRPC protocols.

It serves every SavedModel under a `savedmodels/NAME/VERSION/` folder, as
`tensorflow_model_server --model_config_file=...` would, so a client written
against TF Serving works unchanged against it. REST runs on Starlette/uvicorn,
gRPC on grpcio with the `tensorflow-serving-api` servicers; both share one
registry of loaded models that a background thread keeps in step with the
folder.

Run it with `tfllm serve savedmodels/` or
`python -m tfllm.serving.server savedmodels/ --port 8501 --grpc-port 8500`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import re
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tfllm.errors import UserInputError
from tfllm.serving import models as models_lib
from tfllm.serving import tensors as tensors_lib
from tfllm.serving.jsonio import dumps as _dumps, loads as _loads

logger = logging.getLogger("tfllm.serving")

DEFAULT_SIGNATURE = "serving_default"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_INTRA_OP_THREADS = 1
# A REST request whose body is at most INLINE_MAX_BODY_BYTES, for a signature whose
# recent calls took under INLINE_MAX_SECONDS, runs on the event loop instead of a
# worker thread when it is the only request in the server: the hop to a thread
# and back costs ~0.1 ms, a quarter of a one-string classification. Under
# concurrent load, and for generation and big batches, requests go to threads,
# where TensorFlow (which releases the GIL) runs them on every core: inlining
# everything cut 16-client throughput by a third on 2 cores.
INLINE_MAX_BODY_BYTES = 4096
INLINE_MAX_SECONDS = 0.002
_MAX_WARMUP_RECORDS = 1000
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"  # see serve()

class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------
# Loaded models
# --------------------------------------------------------------------------


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
    """

    name: str
    fn: object
    inputs: dict
    outputs: list[str]
    recent_seconds: float = float("inf")

    def describe_inputs(self) -> str:
        return ", ".join(f"{k} ({_spec_str(s)})" for k, s in sorted(self.inputs.items()))


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
                f"Serving signature name: {name or DEFAULT_SIGNATURE!r} not found in "
                f"model {self.name!r} version {self.version} (signatures: {known}).",
                404,
            )
        return sig


def _spec_str(spec) -> str:
    dims = "unknown rank" if spec.shape.rank is None else [
        -1 if d is None else d for d in spec.shape.as_list()
    ]
    return f"{spec.dtype.name} {dims}"


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
        signatures[sig_name] = Signature(sig_name, fn, dict(kwargs), out_names)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig_def in models_lib.read_signature_defs(path).items():
        sig_map.signature_def[key].CopyFrom(sig_def)
    servable = Servable(name, version, path, signatures, sig_map, loaded)
    servable.metadata_json = json_format.MessageToDict(
        sig_map, preserving_proto_field_name=True
    )
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
            _call(sig, _proto_inputs_to_tensors(request.inputs, sig))
        except RequestError as e:
            logger.warning("warm-up request %d of %s/%d failed: %s", i, servable.name,
                           servable.version, e.message)


@dataclass
class ModelState:
    versions: dict[int, Servable]
    labels: dict[str, int]


class ModelRegistry:
    """Keeps the loaded models in step with a `savedmodels/` folder.

    Readers get an immutable snapshot (`self._models` is swapped whole), so
    requests never take a lock and a slow load never blocks serving.

    Args:
        base_path: the folder holding `NAME/VERSION/` exports.
        poll_seconds: how often to rescan the folder.
        model_config_file: optional TF Serving `models.config` whose
            `version_labels` and `model_version_policy` apply by model name.

    Example:
    ```python
    registry = ModelRegistry("savedmodels")
    registry.refresh()
    servable = registry.resolve("reviews", label="stable")
    ```
    """

    def __init__(self, base_path: str, poll_seconds: float = 1.0,
                 model_config_file: str | None = None):
        self.base_path = base_path
        self.poll_seconds = poll_seconds
        self.model_config_file = model_config_file
        self._models: dict[str, ModelState] = {}
        self._failed: dict[str, float] = {}
        self._policies: dict[str, models_lib.ModelPolicy] = {}
        self._config_mtime = None
        self._stop = threading.Event()
        self._thread = None

    def _read_policies(self) -> dict[str, models_lib.ModelPolicy]:
        path = self.model_config_file
        if not path or not os.path.exists(path):
            return {}
        mtime = os.path.getmtime(path)
        if mtime != self._config_mtime:
            try:
                self._policies = models_lib.read_model_config(path)
            except UserInputError as e:
                logger.error("%s; keeping the previous labels.", e)
            self._config_mtime = mtime
        return self._policies

    def refresh(self) -> None:
        """Loads new versions and drops vanished ones (one scan)."""
        policies = self._read_policies()
        on_disk = models_lib.scan(self.base_path)
        current = self._models
        new_models = {}
        for name, versions in on_disk.items():
            policy = policies.get(name, models_lib.ModelPolicy())
            old = current.get(name, ModelState({}, {}))
            loaded = {}
            for v in policy.select(list(versions)):
                path = versions[v]
                if v in old.versions and old.versions[v].path == path:
                    loaded[v] = old.versions[v]
                    continue
                mtime = os.path.getmtime(os.path.join(path, models_lib.SAVED_MODEL_FILE))
                if self._failed.get(path) == mtime:
                    continue  # retry only once the export changes
                try:
                    start = time.perf_counter()
                    loaded[v] = load_servable(name, v, path)
                    self._failed.pop(path, None)
                    logger.warning("loaded %s version %d in %.1f s", name, v,
                                   time.perf_counter() - start)
                except Exception as e:  # a broken export must not stop the others
                    self._failed[path] = mtime
                    logger.error("cannot load %s: %s", path, e)
            if loaded:
                labels = dict(policy.labels) or {"stable": max(loaded)}
                new_models[name] = ModelState(loaded, labels)
        self._models = new_models

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # keep polling whatever the filesystem does
                logger.exception("rescanning %s failed", self.base_path)

    def start_polling(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def _state(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise RequestError(
                f"Servable not found for request: model {name!r} (models served: {known}).",
                404,
            )
        return state

    def resolve(self, name: str, version: int | None = None,
                label: str | None = None) -> Servable:
        """The servable a request names; the latest version by default."""
        state = self._state(name)
        if label is not None:
            if label not in state.labels:
                known = ", ".join(sorted(state.labels)) or "none"
                raise RequestError(
                    f"Unrecognized servable version label: {label!r} for model {name!r} "
                    f"(labels: {known}).", 404)
            version = state.labels[label]
        if version is None:
            return state.versions[max(state.versions)]
        servable = state.versions.get(version)
        if servable is None:
            known = ", ".join(str(v) for v in sorted(state.versions))
            raise RequestError(
                f"Servable not found for request: model {name!r} version {version} "
                f"(versions served: {known}).", 404)
        return servable

    def statuses(self, name: str, version: int | None = None,
                 label: str | None = None) -> list[Servable]:
        """The servables a status request covers (all versions by default)."""
        if version is None and label is None:
            state = self._state(name)
            return [state.versions[v] for v in sorted(state.versions, reverse=True)]
        return [self.resolve(name, version, label)]


# --------------------------------------------------------------------------
# Requests <-> tensors
# --------------------------------------------------------------------------


def _check_shape(name: str, shape: tuple, spec) -> None:
    expected = spec.shape
    if expected.rank is None:
        return
    if len(shape) != expected.rank or any(
        e is not None and e != got for e, got in zip(expected.as_list(), shape)
    ):
        raise RequestError(
            f"Input {name!r} has shape {list(shape)} but the signature expects "
            f"{_spec_str(spec)} (-1 = any size)."
        )


def _unwrap_b64(value):
    if isinstance(value, list):
        return [_unwrap_b64(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "b64" in value:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError) as e:
                raise RequestError(f"Invalid base64 value: {e}") from e
        raise RequestError(
            f"Unexpected object {sorted(value)}; a binary value is written "
            '{"b64": "<base64>"}.'
        )
    return value


_KIND_OK = {"i": "iu", "u": "iu", "f": "iuf", "c": "iufc", "b": "b"}


def _json_to_tensor(name: str, value, spec):
    import tensorflow as tf

    if spec.dtype == tf.string:
        value = _unwrap_b64(value)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            shape = (len(value),)  # the common case: a flat list of texts
        else:
            arr = np.array(value, dtype=object)
            for leaf in arr.flat if arr.ndim else [arr.item()]:
                if not isinstance(leaf, (str, bytes)):
                    raise RequestError(
                        f"Input {name!r} must hold strings (signature: {_spec_str(spec)}); "
                        f"got {type(leaf).__name__} {str(leaf)[:40]} (ragged lists are "
                        "not allowed either)."
                    )
            value, shape = arr, arr.shape
        _check_shape(name, shape, spec)
        return tf.constant(value, tf.string)
    try:
        arr = np.asarray(_unwrap_b64(value))
    except ValueError as e:
        raise RequestError(f"Input {name!r} is a ragged list; every row must have the "
                           f"same length ({e}).") from e
    np_dtype = spec.dtype.as_numpy_dtype
    kind = np.dtype(np_dtype).kind
    if arr.size and arr.dtype.kind not in _KIND_OK.get(kind, kind):
        raise RequestError(
            f"Input {name!r} must be {spec.dtype.name} (signature: {_spec_str(spec)}); "
            f"got {arr.dtype.name if arr.dtype.kind != 'U' else 'string'} values."
        )
    if kind in "iu" and arr.size:
        info = np.iinfo(np_dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise RequestError(f"Input {name!r} has values outside the {spec.dtype.name} range.")
    _check_shape(name, arr.shape, spec)
    return tf.constant(arr, spec.dtype)


def _is_named(value, sig: Signature) -> bool:
    # A one-input signature may be fed bare values; a {"b64": ...} value is a
    # value, not a map of input names.
    return isinstance(value, dict) and not (len(value) == 1 and "b64" in value
                                            and "b64" not in sig.inputs)


def _check_names(given, sig: Signature) -> None:
    missing = set(sig.inputs) - set(given)
    extra = set(given) - set(sig.inputs)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing input(s) {sorted(missing)}")
        if extra:
            problems.append(f"unknown input(s) {sorted(extra)}")
        raise RequestError(
            f"{' and '.join(problems).capitalize()}; signature {sig.name!r} takes: "
            f"{sig.describe_inputs()}."
        )


def json_to_tensors(body: dict, sig: Signature) -> tuple[dict, bool]:
    """Turns a `:predict` body into signature arguments.

    Returns:
        `(kwargs, row_format)`; `row_format` is True for `"instances"`.
    """
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise RequestError(
            'The request body must hold exactly one of "instances" (row format) or '
            '"inputs" (columnar format).'
        )
    if has_cols:
        inputs = body["inputs"]
        if not _is_named(inputs, sig):
            if len(sig.inputs) != 1:
                raise RequestError(
                    f'"inputs" must be an object keyed by input name; signature '
                    f"{sig.name!r} takes: {sig.describe_inputs()}."
                )
            inputs = {next(iter(sig.inputs)): inputs}
        _check_names(inputs, sig)
        return {k: _json_to_tensor(k, v, sig.inputs[k]) for k, v in inputs.items()}, False

    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise RequestError('"instances" must be a non-empty list of rows.')
    scalars = [k for k, s in sig.inputs.items() if s.shape.rank == 0]
    if scalars:
        raise RequestError(
            f"Input(s) {scalars} of signature {sig.name!r} are scalars, which the row "
            '("instances") format cannot carry; send them in the columnar "inputs" format.'
        )
    if all(_is_named(r, sig) for r in rows):
        for r in rows:
            _check_names(r, sig)
        columns = {k: [r[k] for r in rows] for k in sig.inputs}
    elif len(sig.inputs) == 1 and not any(_is_named(r, sig) for r in rows):
        columns = {next(iter(sig.inputs)): rows}
    else:
        raise RequestError(
            f"Each instance must be an object keyed by input name; signature "
            f"{sig.name!r} takes: {sig.describe_inputs()}."
        )
    return {k: _json_to_tensor(k, v, sig.inputs[k]) for k, v in columns.items()}, True


def _call(sig: Signature, kwargs: dict) -> dict[str, np.ndarray]:
    import tensorflow as tf

    start = time.perf_counter()
    try:
        outputs = sig.fn(**kwargs)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
            tf.errors.FailedPreconditionError) as e:
        # The model's own checks (an empty prompt, a value out of range).
        raise RequestError(_clean_tf_message(e.message)) from e
    except (TypeError, ValueError) as e:
        raise RequestError(str(e).splitlines()[0]) from e
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    outputs = {k: v.numpy() for k, v in outputs.items()}
    seconds = time.perf_counter() - start
    # Racy across threads, harmlessly: it only steers where the next call runs.
    sig.recent_seconds = seconds if sig.recent_seconds == float("inf") else 0.8 * sig.recent_seconds + 0.2 * seconds
    return outputs


def _clean_tf_message(message: str) -> str:
    # Keep what the model said; drop the graph node and call-stack lines
    # TensorFlow wraps it in.
    if "assertion failed:" in message:
        message = message[message.index("assertion failed:"):]
    message = re.sub(r"Graph execution error:\s*|Detected at node .*?\(most recent call "
                     r"last\):\s*(<stack traces unavailable>)?\s*", "", message)
    lines = [line.strip() for line in message.splitlines()
             if line.strip() and not line.lstrip().startswith(("[[", "Function call stack"))]
    return " ".join(lines)[:2000] or "The model rejected the request."


def _strings_to_json(name: str, arr: np.ndarray):
    if name.endswith("_bytes"):
        # TF Serving's rule: binary outputs are named *_bytes and sent as b64.
        conv = [{"b64": base64.b64encode(b).decode()} for b in arr.ravel()]
    else:
        conv = []
        for b in arr.ravel():
            try:
                conv.append(b.decode())
            except UnicodeDecodeError:
                conv.append({"b64": base64.b64encode(b).decode()})
    if arr.ndim == 1:
        return conv
    if arr.ndim == 0:
        return conv[0]
    out = np.empty(len(conv), dtype=object)
    out[:] = conv
    return out.reshape(arr.shape).tolist()


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    """Shapes signature outputs as TF Serving's `predictions` or `outputs`."""
    conv = {k: _strings_to_json(k, v) if v.dtype == object else v for k, v in outputs.items()}
    if not row_format:
        return {"outputs": conv if len(conv) != 1 else next(iter(conv.values()))}
    sizes = {k: (len(v) if np.ndim(outputs[k]) else None) for k, v in conv.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise RequestError(
            f"The outputs' batch sizes differ ({sizes}), which the row format cannot "
            'express; send the request in the columnar "inputs" format.'
        )
    if len(conv) == 1:
        return {"predictions": next(iter(conv.values()))}
    n = next(iter(sizes.values()))
    return {"predictions": [{k: v[i] for k, v in conv.items()} for i in range(n)]}


def _proto_inputs_to_tensors(inputs, sig: Signature) -> dict:
    import tensorflow as tf

    _check_names(inputs, sig)
    kwargs = {}
    for name, proto in inputs.items():
        spec = sig.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise RequestError(
                f"Input {name!r} has dtype {tf.dtypes.as_dtype(proto.dtype).name} but the "
                f"signature expects {_spec_str(spec)}."
            )
        try:
            arr = tensors_lib.from_tensor_proto(proto)
        except Exception as e:
            raise RequestError(f"Input {name!r} is not a valid TensorProto: {e}") from e
        _check_shape(name, arr.shape, spec)
        kwargs[name] = tf.constant(arr, spec.dtype)
    return kwargs


# --------------------------------------------------------------------------
# REST
# --------------------------------------------------------------------------

_PATH = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<meta>/metadata)?"
    r"(?::(?P<verb>[A-Za-z]+))?$"
)


def _parse_path(path: str):
    m = _PATH.match(path)
    if not m:
        raise RequestError(f"Malformed request: unknown path /v1/models/{path}.", 404)
    version = m["version"]
    if version is not None:
        if not version.isdigit():
            raise RequestError(f"Version {version!r} must be a non-negative integer.")
        version = int(version)
    return m["name"], version, m["label"], m["meta"] is not None, m["verb"]


def _status_json(servables) -> dict:
    return {"model_version_status": [
        {"version": str(s.version), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}
        for s in servables
    ]}


def make_app(registry: ModelRegistry, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The Starlette (ASGI) app for TF Serving's `/v1/models/...` REST paths.

    Plain Starlette rather than FastAPI on top of it: the two routes take raw
    bodies, so FastAPI's request validation would only add per-request work
    (0.05-0.08 ms of a ~1 ms request, measured with a bare app).
    """
    active = 0  # predict requests in progress (all on the event loop's thread: no lock)

    def reply(obj, status: int = 200) -> Response:
        return Response(_dumps(obj), status_code=status, media_type="application/json")

    async def request_error(request, e: RequestError):
        return reply({"error": e.message}, e.status)

    async def http_error(request, e: HTTPException):
        return reply({"error": f"{e.detail}: {request.method} {request.url.path}"},
                     e.status_code)

    async def get(request: Request):
        name, version, label, meta, verb = _parse_path(request.path_params["path"])
        if verb:
            raise RequestError(f"Use POST for :{verb}.", 405)
        if meta:
            servable = registry.resolve(name, version, label)
            return reply({
                "model_spec": {"name": name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": servable.metadata_json},
            })
        return reply(_status_json(registry.statuses(name, version, label)))

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise RequestError(
                f"Request body of {length} bytes is over the {max_body_bytes}-byte limit; "
                "send fewer instances per request.", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise RequestError(
                    f"Request body is over the {max_body_bytes}-byte limit; send fewer "
                    "instances per request.", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_predict(servable: Servable, raw: bytes) -> tuple[Signature, dict, bool]:
        try:
            body = _loads(raw)
        except ValueError as e:
            raise RequestError(f"Malformed JSON in request body: {e}") from e
        if not isinstance(body, dict):
            raise RequestError('The request body must be a JSON object with "instances" '
                               'or "inputs".')
        signature_name = body.get("signature_name")
        if signature_name is not None and not isinstance(signature_name, str):
            raise RequestError('"signature_name" must be a string.')
        sig = servable.signature(signature_name)
        return (sig, *json_to_tensors(body, sig))

    def answer(sig: Signature, kwargs: dict, row_format: bool) -> bytes:
        return _dumps(outputs_to_json(_call(sig, kwargs), row_format))

    async def post(request: Request):
        nonlocal active
        name, version, label, meta, verb = _parse_path(request.path_params["path"])
        if meta or verb is None:
            raise RequestError("POST is for /v1/models/NAME[/versions/V|/labels/L]:predict.",
                               405)
        if verb != "predict":
            raise RequestError(
                f":{verb} is not supported; Keras exports carry predict signatures, so "
                "use :predict.", 400)
        servable = registry.resolve(name, version, label)
        active += 1
        try:
            raw = await read_body(request)
            return Response(await predict(servable, raw), media_type="application/json")
        finally:
            active -= 1

    async def predict(servable: Servable, raw: bytes) -> bytes:
        # Concurrent requests on worker threads overlap; a lone short one runs inline
        # (see INLINE_MAX_SECONDS).
        if len(raw) > INLINE_MAX_BODY_BYTES:
            return await run_in_threadpool(lambda: answer(*parse_predict(servable, raw)))
        sig, kwargs, row_format = parse_predict(servable, raw)
        if sig.recent_seconds < INLINE_MAX_SECONDS:
            # One turn of the loop lets requests that are already waiting start and
            # count themselves in `active`.
            await asyncio.sleep(0)
            if active == 1:
                return answer(sig, kwargs, row_format)
        return await run_in_threadpool(answer, sig, kwargs, row_format)

    return Starlette(
        routes=[Route("/v1/models/{path:path}", get, methods=["GET"]),
                Route("/v1/models/{path:path}", post, methods=["POST"])],
        exception_handlers={RequestError: request_error, HTTPException: http_error},
    )


# --------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------


def make_grpc_server(registry: ModelRegistry, address: str,
                     max_message_bytes: int = DEFAULT_MAX_BODY_BYTES, workers: int = 16):
    """A started-on-demand grpc.Server with TF Serving's two services."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    codes = {404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
             405: grpc.StatusCode.UNIMPLEMENTED}

    def resolve(spec) -> Servable:
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        return registry.resolve(spec.name, version, label)

    def guarded(method):
        # Every refusal becomes a gRPC status; the server itself never fails.
        def wrapper(self, request, context):
            try:
                return method(self, request, context)
            except RequestError as e:
                context.abort(codes.get(e.status, grpc.StatusCode.INVALID_ARGUMENT),
                              e.message)
        return wrapper

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        @guarded
        def Predict(self, request, context):
            servable = resolve(request.model_spec)
            sig = servable.signature(request.model_spec.signature_name or None)
            outputs = _call(sig, _proto_inputs_to_tensors(request.inputs, sig))
            if request.output_filter:
                unknown = set(request.output_filter) - set(outputs)
                if unknown:
                    raise RequestError(f"Unknown output(s) in output_filter: {sorted(unknown)}.")
                outputs = {k: outputs[k] for k in request.output_filter}
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(tensors_lib.to_tensor_proto(v))
            return response

        @guarded
        def GetModelMetadata(self, request, context):
            fields = set(request.metadata_field)
            if fields != {"signature_def"}:
                raise RequestError('metadata_field must be ["signature_def"].')
            servable = resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map)
            return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        @guarded
        def GetModelStatus(self, request, context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            response = get_model_status_pb2.GetModelStatusResponse()
            for s in registry.statuses(spec.name, version, spec.version_label or None):
                status = response.model_version_status.add()
                status.version = s.version
                status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
                status.status.SetInParent()  # error_code OK, as TF Serving sends
            return response

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(), server)
    if server.add_insecure_port(address) == 0:
        raise UserInputError(f"Cannot bind gRPC to {address}; pick another --grpc-port.")
    return server


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def configure_threads(intra_op_threads: int, inter_op_threads: int = 0) -> None:
    """Sets TensorFlow's thread pools; must run before any model is loaded."""
    import tensorflow as tf

    if intra_op_threads < 0 or inter_op_threads < 0:
        raise UserInputError("--intra-op-threads and --inter-op-threads must be >= 0 (0 = TensorFlow's choice).")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # TensorFlow already ran something in this process (a notebook)
        logger.warning("TensorFlow is already initialised in this process; thread settings unchanged.")


def serve(model_base_path: str, host: str = "127.0.0.1", port: int = 8501,
          grpc_port: int | None = 8500, poll_seconds: float = 1.0,
          model_config_file: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          intra_op_threads: int | None = None, inter_op_threads: int = 0) -> None:
    """Serves every model under `model_base_path` until interrupted.

    Args:
        model_base_path: folder laid out as `NAME/VERSION/` (SavedModels).
        host: address to bind; loopback unless you mean to expose it.
        port: REST port (TF Serving's default is 8501).
        grpc_port: gRPC port (TF Serving's default is 8500); None or 0
            turns gRPC off.
        poll_seconds: how often to look for new or removed versions.
        model_config_file: a TF Serving `models.config` for version labels
            and policies; defaults to `model_base_path/models.config` when
            that file exists.
        max_body_bytes: larger requests are refused with 413.
        intra_op_threads: threads one TensorFlow op may use, as TF Serving's
            `--tensorflow_intra_op_parallelism` (0 = TensorFlow's choice). The
            default (None) is 1, which suits tfllm's small models: splitting their tiny ops
            across cores costs more than it saves, and concurrent requests
            still use every core. In-process on 2 cores, 1 vs 0
            (benchmarks/results/serving_threads0.json and the serving.json of
            its time): one string 0.43 vs 0.70 ms, 32 strings 1.22 vs 1.53 ms.
        inter_op_threads: TF Serving's `--tensorflow_inter_op_parallelism`
            (0 = TensorFlow's choice).

    Raises:
        UserInputError: if the folder does not exist.
    """
    import uvicorn

    if not os.path.isdir(model_base_path):
        raise UserInputError(
            f"Model folder {model_base_path!r} does not exist; export a model first "
            "(tfllm export RUN_DIR --name NAME) or pass the right folder."
        )
    # grpcio 1.80 moved Python onto its new EventEngine I/O layer; on this loopback
    # it makes a status call slower than the iomgr path it replaced (0.39-0.45 vs
    # 0.33-0.34 ms, benchmarks/results/grpc_io.json). grpc keeps that path behind these
    # experiment flags while it watches the rollout (grpc/grpc#42150); a grpcio that
    # has dropped them logs "Unknown experiment" and runs as before. It must be set
    # before grpc starts; a GRPC_EXPERIMENTS the user set wins.
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    configure_threads(DEFAULT_INTRA_OP_THREADS if intra_op_threads is None else intra_op_threads,
                      inter_op_threads)
    if model_config_file is None:
        candidate = os.path.join(model_base_path, "models.config")
        model_config_file = candidate if os.path.exists(candidate) else None
    registry = ModelRegistry(model_base_path, poll_seconds, model_config_file)
    registry.refresh()
    registry.start_polling()
    grpc_server = None
    if grpc_port:
        grpc_server = make_grpc_server(registry, f"{host}:{grpc_port}", max_body_bytes)
        grpc_server.start()
    names = ", ".join(registry.model_names()) or "none yet"
    print(f"Serving {names} from {model_base_path}: REST http://{host}:{port}/v1/models/"
          + (f", gRPC {host}:{grpc_port}" if grpc_port else ""), flush=True)
    config = uvicorn.Config(make_app(registry, max_body_bytes), host=host, port=port,
                            log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run()
    finally:
        registry.stop()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfllm.serving.server",
        description="Serve savedmodels/NAME/VERSION/ with TF Serving's REST and gRPC APIs.")
    parser.add_argument("model_base_path", help="folder holding NAME/VERSION/ exports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501, help="REST port")
    parser.add_argument("--grpc-port", type=int, default=8500, help="gRPC port, 0 = off")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--model-config-file", default=None)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    from tfllm.cli import add_thread_arguments

    add_thread_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args.model_base_path, args.host, args.port, args.grpc_port, args.poll_seconds,
              args.model_config_file, args.max_body_bytes, args.intra_op_threads, args.inter_op_threads)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
