"""Python clients for TF Serving's REST and gRPC APIs.

Both clients have the same methods and return the same Python values (the
JSON shapes of TF Serving's REST API), so code can switch protocol by
switching class. They follow TF Serving's documents, not the local server, so
they work unchanged against `tensorflow_model_server` and `tfllm serve`.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import quote

from tfllm.errors import require_extra
from tfllm.serving.jsonio import dumps as _dumps, from_json_values as _from_json_values, loads as _loads
from tfllm.serving.jsonio import to_json_values as _to_json_values
from tfllm.serving.limits import RequestError, version_number


def _answer_already_sent(conn: http.client.HTTPConnection):
    """The response a server sent before closing mid-request, or None if none arrived."""
    try:
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None


class ServingError(Exception):
    """A request the model server refused or could not answer.

    Attributes:
        message: the server's own error message (or why none came back).
        status: the HTTP status (REST) or gRPC status code name (gRPC);
            None when no answer came back.
    """

    def __init__(self, message: str, status=None):
        super().__init__(message if status is None else f"[{status}] {message}")
        self.message = message
        self.status = status


def _version(version, status) -> int:
    try:
        return version_number(version)
    except RequestError as e:  # refused before connecting, in the server's words
        raise ServingError(e.message, status) from e


def _model_path(model: str, version=None, label=None) -> str:
    if version is not None and label is not None:
        raise ValueError("Pass either version or label, not both.")
    # Percent-encoded, as a path segment is: label "can ary" raised http.client's InvalidURL, "a/b" went as /labels/a/b.
    path = f"/v1/models/{quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{_version(version, 400)}"
    elif label is not None:
        path += f"/labels/{quote(label, safe='')}"
    return path


class RestClient:
    """Client for TF Serving's REST API (`/v1/models/...`).

    Args:
        host: server host name or address.
        port: REST port (TF Serving's default is 8501).
        timeout: seconds to wait for each answer.
        auth_token: sent as `Authorization: Bearer TOKEN`, for a server
            started with `--auth-token` / `TFLLM_AUTH_TOKEN`.

    Example:
    ```python
    client = RestClient("localhost", 8501)
    client.predict("reviews", instances=["a good film"])
    # [{"label": "positive", "probabilities": [0.02, 0.98]}]
    ```
    """

    def __init__(self, host: str = "localhost", port: int = 8501, timeout: float = 30.0,
                 auth_token: str | None = None):
        self.host, self.port, self.timeout = host, port, timeout
        self._auth = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        # One keep-alive connection per thread: http.client costs a third of
        # httpx's per-request time, which matters for millisecond requests.
        self._local = threading.local()

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes | None = None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        headers.update(self._auth)
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt == 1)
            reused = conn.sock is not None  # an earlier request's socket, which the server may close as idle
            try:
                try:
                    conn.request(method, path, body, headers)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may have answered and closed before taking the whole body (a 503
                    # over --max-connections, a 413): its answer says why; "Broken pipe" did not.
                    response = _answer_already_sent(conn)
                    if response is None:
                        raise
                else:
                    response = conn.getresponse()
                content = response.read()
                break
            except TimeoutError as e:
                conn.close()
                raise ServingError(f"{method} {path} timed out after {self.timeout} s") from e
            except http.client.CannotSendRequest as e:  # left mid-exchange; nothing sent, so a new one is safe
                if attempt == 1:
                    raise ServingError(f"Lost the connection to {self.host}:{self.port}: {e!r}") from e
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                # Only a reused keep-alive connection is retried (its idle close races this request, which then
                # never ran). On a new one the server took the request and closed unanswered: it may have run.
                if not reused:
                    raise ServingError(f"{method} http://{self.host}:{self.port}{path}: the server closed the "
                                       "connection before answering (it may be shutting down or restarting); "
                                       "the request may have run") from e
            except OSError as e:
                conn.close()
                self._local.conn = None
                raise ServingError(f"Cannot reach http://{self.host}:{self.port}{path}: {e}") from e
        try:
            payload = _loads(content)
        except ValueError:
            payload = None
        if response.status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            text = content[:500].decode(errors="replace")
            raise ServingError(message or text or response.reason, response.status)
        if payload is None:
            raise ServingError(f"{method} {path} answered with non-JSON: {content[:200]!r}", response.status)
        return payload

    def predict(self, model: str, inputs=None, *, instances=None, signature_name=None, version=None, label=None):
        """Calls `:predict`.

        Args:
            model: the model name.
            inputs: columnar format: `{input name: batch}` (or the bare batch
                for a one-input signature). Answers with the `"outputs"`.
            instances: row format: a list of rows, each `{input name:
                value}` (or a bare value for a one-input signature). Answers
                with the `"predictions"`, one per row.
            signature_name: defaults to `serving_default`.
            version: an integer version; the latest by default.
            label: a version label such as `stable` or `canary`.

        Values may be Python lists, numpy arrays, `str` or `bytes` (sent as
        `{"b64": ...}`); binary outputs come back as `bytes`.

        Raises:
            ServingError: with the server's message.
        """
        if (inputs is None) == (instances is None):
            raise ValueError("Pass exactly one of inputs (columnar) or instances (rows).")
        try:  # NaN and infinity (JSON's null) refused by input name before sending, as GrpcClient and the server do
            body = {"inputs": _to_json_values(inputs)} if inputs is not None else {"instances": _to_json_values(instances)}
        except RequestError as e:
            raise ServingError(e.message, 400) from e
        if signature_name:
            body["signature_name"] = signature_name
        reply = self._request("POST", _model_path(model, version, label) + ":predict", _dumps(body))
        key = "outputs" if inputs is not None else "predictions"
        if key not in reply:
            raise ServingError(f"The answer has no {key!r}: {str(reply)[:200]}")
        return _from_json_values(reply[key])

    def status(self, model: str, version=None, label=None) -> dict:
        """`{"model_version_status": [{"version", "state", "status"}]}`."""
        return self._request("GET", _model_path(model, version, label))

    def metadata(self, model: str, version=None, label=None) -> dict:
        """`{"model_spec": {...}, "metadata": {"signature_def": {...}}}`."""
        return self._request("GET", _model_path(model, version, label) + "/metadata")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# grpcio's details of a call the server cut off as it stopped: "Cancelling all calls" (its grace ran out),
# "Stream removed (Socket closed (GOAWAY received; ... Server shutdown))" (a second signal: the process exited).
SHUTDOWN_DETAILS = ("Cancelling all calls", "GOAWAY", "Server shutdown", "Stream removed")
# grpcio's words for calls a server refuses before any handler runs, so the server cannot name its flag; the client
# does, as REST's refusals name it (its maximum_concurrent_rpcs, its max_receive_message_length).
REFUSED_BY_GRPCIO = {"Concurrent RPC limit exceeded!": "(the server's --max-concurrent-rpcs); retry once its calls in "
                     "flight end.", "SERVER: Received message larger than max": "(the server's --max-body-bytes)."}


class GrpcClient:
    """Client for TF Serving's gRPC `PredictionService` and `ModelService`.

    Takes and returns the same Python values as `RestClient`. Input dtypes
    come from the model's signature (fetched once per model and version), so
    a Python `int` reaches an `int32` input as `int32`, as in REST.

    Args:
        host: server host name or address.
        port: gRPC port (TF Serving's default is 8500).
        timeout: seconds to wait for each answer.
        auth_token: sent as `authorization: Bearer TOKEN` metadata, for a
            server started with `--auth-token` / `TFLLM_AUTH_TOKEN`.

    For the lowest latency, start the client process with
    `GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener`, as `tfllm serve` does for itself: it turns off
    grpcio's EventEngine I/O layer, which is slower on a loopback round trip (`benchmarks/bench_grpc_io.py`). grpc
    reads it once, on import. The client does not set it for you, because it changes every gRPC channel in the process.

    Example:
    ```python
    client = GrpcClient("localhost", 8500)
    client.predict("reviews", {"text": ["a good film"]})
    # {"label": ["positive"], "probabilities": [[0.02, 0.98]]}
    ```
    """

    def __init__(self, host: str = "localhost", port: int = 8500, timeout: float = 30.0,
                 max_message_bytes: int = 64 * 1024 * 1024, auth_token: str | None = None):
        require_extra("GrpcClient", "serving", "grpc", "tensorflow_serving")
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.host, self.port, self.timeout = host, port, timeout
        self._grpc = grpc
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures = {}
        self._metadata = (("authorization", f"Bearer {auth_token}"),) if auth_token else None

    def _call(self, method, request):
        grpc = self._grpc
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"timed out after {self.timeout} s", code.name) from e
            details = e.details() or ""
            if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE) \
                    and any(words in details for words in SHUTDOWN_DETAILS):
                # The server was reached and was shutting down (SHUTDOWN_DETAILS); a refused connection
                # stays "Cannot reach" below.
                raise ServingError(f"{self.host}:{self.port} was shutting down and cut this call off "
                                   f"before it finished ({details}); retry once it is back.", code.name) from e
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"Cannot reach {self.host}:{self.port}: {details}", code.name) from e
            hint = next((hint for words, hint in REFUSED_BY_GRPCIO.items() if details.startswith(words)), None)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and hint is not None:
                raise ServingError(f"{details} {hint}", code.name) from e
            raise ServingError(e.details() or str(e), code.name) from e

    @staticmethod
    def _spec(request, model, version=None, label=None, signature_name=None):
        if version is not None and label is not None:
            raise ValueError("Pass either version or label, not both.")
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = _version(version, "INVALID_ARGUMENT")
        elif label is not None:
            request.model_spec.version_label = label
        if signature_name:
            request.model_spec.signature_name = signature_name
        return request

    def _signature_map(self, model, version, label):
        key = (model, version, label)
        if key not in self._signatures:
            from tensorflow_serving.apis import get_model_metadata_pb2

            response = self._metadata_proto(model, version, label)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(sig_map)
            self._signatures[key] = sig_map.signature_def
        return self._signatures[key]

    def _metadata_proto(self, model, version=None, label=None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = self._spec(get_model_metadata_pb2.GetModelMetadataRequest(), model, version, label)
        request.metadata_field.append("signature_def")
        return self._call(self._predict.GetModelMetadata, request)

    def predict(self, model: str, inputs=None, *, instances=None, signature_name=None, version=None, label=None):
        """Calls `PredictionService.Predict`; see `RestClient.predict`."""
        import numpy as np
        import tensorflow as tf
        from tensorflow.core.framework import tensor_pb2
        from tensorflow_serving.apis import predict_pb2

        from tfllm.serving.codec import as_finite_floats
        from tfllm.serving.tensors import to_tensor_proto

        if (inputs is None) == (instances is None):
            raise ValueError("Pass exactly one of inputs (columnar) or instances (rows).")
        sig_name = signature_name or "serving_default"
        signatures = self._signature_map(model, version, label)
        if sig_name not in signatures:
            known = ", ".join(k for k in signatures if not k.startswith("__"))
            raise ServingError(f"Serving signature name: {sig_name!r} not found "
                               f"(signatures: {known}).", "FAILED_PRECONDITION")  # as the server
        input_infos = signatures[sig_name].inputs
        only = next(iter(input_infos)) if len(input_infos) == 1 else None

        def named(value) -> bool:
            return isinstance(value, dict) and not (set(value) == {"b64"} and only != "b64")

        if instances is not None:
            columns = _rows_to_columns(instances, sig_name, input_infos)
        else:
            columns = inputs if named(inputs) else {only: inputs}
            if None in columns:
                raise ValueError(f"inputs must be a dict of {sorted(input_infos)}.")

        request = self._spec(predict_pb2.PredictRequest(), model, version, label, signature_name)
        for name, value in columns.items():
            if isinstance(value, tensor_pb2.TensorProto):
                request.inputs[name].CopyFrom(value)
                continue
            info = input_infos.get(name)
            dtype = tf.dtypes.as_dtype(info.dtype) if info is not None else None
            # A value the signature's dtype cannot hold (2**40 for int32, "x" for a number)
            # is the refusal RestClient gets from the server as [400]: the same here.
            try:
                if dtype == tf.string:
                    array = np.asarray(_from_json_values(value), dtype=object)
                elif dtype is not None and dtype.is_floating and np.asarray(value).dtype.kind in "iuf":
                    # 1e39 for a float32 input: +inf after the cast (a RuntimeWarning), which the server can only
                    # call infinite; refused as the server refuses it over REST.
                    array = as_finite_floats(name, np.asarray(value), dtype.as_numpy_dtype)
                else:
                    array = np.asarray(value, dtype=dtype.as_numpy_dtype if dtype else None)
                request.inputs[name].CopyFrom(to_tensor_proto(array, dtype))
            except (TypeError, ValueError, OverflowError) as e:
                raise ServingError(f"Input {name!r}: {e}", "INVALID_ARGUMENT") from e
            except RequestError as e:
                raise ServingError(e.message, "INVALID_ARGUMENT") from e
        response = self._call(self._predict.Predict, request)

        outputs = {k: _tensor_to_values(k, v) for k, v in sorted(response.outputs.items())}
        if inputs is not None:
            return outputs if len(outputs) != 1 else next(iter(outputs.values()))
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        n = len(next(iter(outputs.values())))
        return [{k: v[i] for k, v in outputs.items()} for i in range(n)]

    def status(self, model: str, version=None, label=None) -> dict:
        """Same shape as `RestClient.status`."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = self._spec(get_model_status_pb2.GetModelStatusRequest(), model, version, label)
        response = self._call(self._models.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def metadata(self, model: str, version=None, label=None) -> dict:
        """Same shape as `RestClient.metadata`."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        response = self._metadata_proto(model, version, label)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return {
            "model_spec": {"name": response.model_spec.name, "signature_name": "",
                           "version": str(response.model_spec.version.value)},
            "metadata": {"signature_def": json_format.MessageToDict(  # every field, as REST prints
                sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        }

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rows_to_columns(rows, sig_name: str, input_infos) -> dict:
    """Row-format `instances` as columns, refused where the server refuses them for REST, with its message
    (`codec.rows_to_columns`): gRPC has no row format, so a bare string went as one row per character, and
    a row short of one input would shift its column."""
    from types import SimpleNamespace

    import numpy as np
    import tensorflow as tf

    from tfllm.serving.codec import rows_to_columns

    specs = {k: tf.TensorSpec(tf.TensorShape(v.tensor_shape), tf.dtypes.as_dtype(v.dtype))
             for k, v in input_infos.items()}
    sig = SimpleNamespace(name=sig_name, inputs=specs)
    # What RestClient sends as a JSON list (`to_json_values`, orjson's arrays) is a list here too.
    if isinstance(rows, tuple):
        rows = list(rows)
    elif isinstance(rows, np.ndarray):
        rows = rows.tolist()
    try:
        return rows_to_columns(rows, sig)  # the server's own checks, so the same message as RestClient gets
    except RequestError as e:
        raise ServingError(e.message, "INVALID_ARGUMENT") from e


def _tensor_to_values(name: str, proto):
    from tfllm.serving.tensors import from_tensor_proto

    array = from_tensor_proto(proto)
    if array.dtype != object:
        return array.tolist()
    # Strings read as text, except *_bytes outputs (TF Serving's REST rule).
    if name.endswith("_bytes"):
        return array.tolist()

    def decode(v):
        if isinstance(v, list):
            return [decode(x) for x in v]
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v

    return decode(array.tolist())
