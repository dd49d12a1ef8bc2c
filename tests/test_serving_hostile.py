"""The local server against hostile and careless clients (issue 18), as real processes.

One server with small limits serves tiny SavedModels; requests that declare
huge shapes, nest JSON deeply, send bad values or no token must each get one
clear 4xx / non-OK status, fast and without the server's memory growing,
while good requests keep getting the right answers.
"""

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import serving_process

pytest.importorskip("tensorflow_serving")
pytest.importorskip("starlette")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from tfllm.serving import GrpcClient, RestClient, ServingError, fixtures  # noqa: E402

TOKEN = "s3cret-token"
MAX_BATCH, MAX_LEN, MAX_ELEMENTS, MAX_STRING = 64, 512, 20_000, 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def running_server(base, log_path, *extra, env=None, token=None, wait_for="reviews"):
    rest_port, grpc_port = free_port(), free_port()
    with serving_process([base, "--port", rest_port, "--grpc-port", grpc_port, "--poll-seconds", "0.2", *extra],
                         lambda: RestClient("127.0.0.1", rest_port, timeout=2, auth_token=token).status(wait_for),
                         log_path, env=env) as proc:
        yield {"rest": rest_port, "grpc": grpc_port, "proc": proc, "log_path": log_path}


def save_wide_id_scorer(path):
    """A toy with a wide & deep classifier's two lookups of the same ids: the token embedding
    (vocabulary 10) and a wide table of vocabulary + 100 hash buckets, which here always runs
    first (in the real export they race); and, as a classifier with a character view, a `classify_ids`
    that takes the text's `code_points` too."""
    class ToyWide(tf.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tf.Variable(tf.ones([10]), name="token_embedding/embeddings")  # as a tfllm export's
            self.wide = tf.Variable(tf.ones([110]))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
        def score(self, token_ids):
            wide = tf.gather(self.wide, token_ids, name="wide_ngrams")
            with tf.control_dependencies([wide]):
                deep = tf.gather(self.embedding, token_ids, name="token_embedding")
            return {"score": tf.reduce_sum(deep + wide, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids"),
                                      tf.TensorSpec([None, None], tf.int32, name="code_points")])
        def classify_ids(self, token_ids, code_points):
            return {"score": self.score(token_ids)["score"] + tf.cast(tf.reduce_sum(code_points, axis=1), tf.float32)}

    module = ToyWide()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.score,
                                                       "classify_ids": module.classify_ids})


def save_scaler(path):
    """A toy with a float input, as a generator's `temperature`."""
    class Scaler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="temperature")])
        def scale(self, temperature):
            return {"scaled": temperature * 2.0}

    module = Scaler()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.scale})


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    base = tmp_path_factory.mktemp("savedmodels")
    fixtures.build_savedmodels(str(base))
    fixtures.save_id_scorer(str(base / "ids" / "1"))
    save_wide_id_scorer(base / "wide" / "1")
    save_scaler(base / "scaler" / "1")
    fixtures.save_classifier(str(base / "flaky" / "1"), warmup=False)
    return base


@pytest.fixture(scope="module")
def server(savedmodels, tmp_path_factory):
    with running_server(savedmodels, tmp_path_factory.mktemp("log") / "server.log",
                        "--max-batch-size", MAX_BATCH, "--max-sequence-length", MAX_LEN,
                        "--max-elements", MAX_ELEMENTS, "--max-string-bytes", MAX_STRING,
                        "--max-body-bytes", 4_000_000) as s:
        yield s


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server['grpc']}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def raw(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def proto(dtype, shape, **values):
    t = tensor_pb2.TensorProto(dtype=dtype)
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    for field, v in values.items():
        if isinstance(v, bytes):
            setattr(t, field, v)
        else:
            getattr(t, field).extend(v)
    return t


def grpc_predict(stub, model, inputs, timeout=30):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, _, request.model_spec.signature_name = model.partition(":")  # MODEL[:SIGNATURE]
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(v)
    return stub.Predict(request, timeout=timeout)


def check_reviews_answer(client):
    assert client.predict("reviews", {"text": ["good", "bad"]})["label"] == ["positive", "negative"]


# --- item 1: limits on what a request declares ------------------------------------


HOSTILE_GRPC = [
    # (model, inputs, words the message must contain)
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [1048576, 16], int_val=[1])},
     ["1048576 rows", "--max-batch-size"]),
    ("reviews", {"text": proto(types_pb2.DT_STRING, [1048576], string_val=[b"x" * 50])},
     ["1048576 rows", "--max-batch-size"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [2, 100000], int_val=[1])},
     ["100000", "--max-sequence-length"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [60, 500], int_val=[1])},
     ["30000 values", "--max-elements"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [2, -3], int_val=[1])}, ["-3", ">= 0"]),
    ("reviews", {"text": proto(types_pb2.DT_STRING, [0])}, ["empty batch"]),
    ("reviews", {"text": proto(types_pb2.DT_STRING, [1], string_val=[b"\xff\xfe bad"])},
     ["not valid UTF-8"]),
    ("reviews", {"text": proto(types_pb2.DT_STRING, [1], string_val=[b"a" * (MAX_STRING + 1)])},
     ["--max-string-bytes"]),
    ("reviews", {"text": proto(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"])},
     ["holds 2"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [1, 2], int_val=[3, -400])},
     ["negative id -400"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [1, 2], int_val=[3, 400])},
     ["400", "outside the model's vocabulary [0, 10)"]),
    ("wide", {"token_ids": proto(types_pb2.DT_INT32, [1, 2], int_val=[3, 50])},
     ["50", "outside the model's vocabulary [0, 10)"]),
    # The wide table refuses first: its size is not the vocabulary's (it said "vocabulary [0, 110)", then "its
    # lookup table 'wide_ngrams' takes [0, 110)"). The token embedding's size is the server's to say.
    ("wide", {"token_ids": proto(types_pb2.DT_INT32, [1, 2], int_val=[3, 500])},
     ["Token id 500 is outside the model's vocabulary [0, 10); send ids from 0 to 9."]),
    # No text has a code point outside Unicode's range: the model answered one with probabilities.
    *[("wide:classify_ids", {"token_ids": proto(types_pb2.DT_INT32, [1, 2], int_val=[3, 4]),
                             "code_points": proto(types_pb2.DT_INT32, [1, 3], int_val=[97, bad, 0])},
       ["'code_points' holds the code point " + str(bad), "0 to 1114111 (0x10FFFF"]) for bad in (-5, 0x110000)],
    ("shakespeare", {"prompt": proto(types_pb2.DT_STRING, [2], string_val=[b"a", b"b"]),
                     "max_new_tokens": proto(types_pb2.DT_INT32, [3], int_val=[1, 1, 1])},
     ["batch sizes differ", "max_new_tokens: 3", "prompt: 2"]),
    ("ids", {"token_ids": proto(types_pb2.DT_INT32, [1, 2],
                                tensor_content=np.int32([1]).tobytes())}, ["tensor_content"]),
]


@pytest.mark.parametrize("model,inputs,words", HOSTILE_GRPC,
                         ids=[f"{m}-{w[0][:20]}" for m, _, w in HOSTILE_GRPC])
def test_hostile_grpc_requests_are_refused_fast_without_memory(model, inputs, words, server, stub):
    before = rss_bytes(server["proc"].pid)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        grpc_predict(stub, model, inputs)
    elapsed = time.monotonic() - start
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in info.value.details(), info.value.details()
    assert elapsed < 2.0  # 35-40 s before the limits, for the two broadcast shapes
    assert rss_bytes(server["proc"].pid) - before < 50 * 2**20
    check_reviews_answer(GrpcClient("127.0.0.1", server["grpc"], timeout=10))


LONG = "n" * 100_000


@pytest.mark.parametrize("field,code", [
    ("model", grpc.StatusCode.NOT_FOUND), ("label", grpc.StatusCode.INVALID_ARGUMENT),
    ("signature", grpc.StatusCode.FAILED_PRECONDITION), ("input", grpc.StatusCode.INVALID_ARGUMENT),
    ("output_filter", grpc.StatusCode.INVALID_ARGUMENT), ("status", grpc.StatusCode.NOT_FOUND),
])
def test_a_huge_name_is_cut_in_the_grpc_status(field, code, server, stub):
    """The status travels in trailing metadata: echoing a 100,000-character name whole made the
    client refuse it (RESOURCE_EXHAUSTED) instead of reading NOT_FOUND."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = LONG if field == "model" else "reviews"
    request.inputs[LONG if field == "input" else "text"].CopyFrom(
        proto(types_pb2.DT_STRING, [1], string_val=[b"good"]))
    if field == "label":
        request.model_spec.version_label = LONG
    if field == "signature":
        request.model_spec.signature_name = LONG
    if field == "output_filter":
        request.output_filter.append(LONG)
    with pytest.raises(grpc.RpcError) as info:
        if field == "status":
            channel = grpc.insecure_channel(f"127.0.0.1:{server['grpc']}")
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = LONG
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        else:
            stub.Predict(request, timeout=30)
    assert info.value.code() == code, info.value.details()[:300]
    assert "'" + "n" * 80 + "'..." in info.value.details() and len(info.value.details()) < 600


@pytest.mark.parametrize("path,words", [
    ("/v1/models/" + "a" * 60_000, "model '" + "a" * 80 + "'..."),
    ("/v1/models/reviews/labels/" + "b" * 60_000 + ":predict", "label: '" + "b" * 80 + "'..."),
    ("/v1/models/reviews/versions/" + "9" * 400 + ":predict", "Version '" + "9" * 80 + "'..."),
    ("/v1/models/rev%00iews", "model 'rev\\u0000iews'"),  # JSON's escape, not Python's \\x00
])
def test_rest_echoes_a_name_cut_and_escaped_as_json_writes_it(path, words, server):
    """A 60,000-character model name came back whole in the 404; a NUL read 'rev\\x00iews' (Python's repr)."""
    post = path.endswith(":predict")
    status, content = raw(server["rest"], "POST" if post else "GET", path, b'{"instances": ["good"]}' if post else None)
    error = json.loads(content)["error"]
    assert status in (400, 404) and words in error and len(error) < 400, error[:300]


@pytest.mark.parametrize("model,body,words", [
    ("reviews", {"instances": [None]}, "must hold strings (signature: string [-1]); got null at value 0"),
    ("reviews", {"instances": [True]}, "got true at value 0"),
    ("reviews", {"instances": ["good", 5]}, "got a number at value 1"),
    ("ids", {"inputs": {"token_ids": [[1, None]]}}, "must be int32 (signature: int32 [-1, -1]); got null at value 1"),
    ("ids", {"inputs": {"token_ids": [[1, {"x": 1}]]}}, "got an object at value 1"),
    ("ids", {"inputs": {"token_ids": [[1, 2.5]]}}, "got numbers with a fraction or exponent"),
    ("ids", {"inputs": {"token_ids": [[True, False]]}}, "got true/false values"),
])
def test_rest_names_a_wrong_value_in_jsons_words(model, body, words, server):
    """The client wrote JSON: it read "got NoneType None", "got bool True", "got float64 values"."""
    status, content = raw(server["rest"], "POST", PREDICT.format(model), json.dumps(body).encode())
    error = json.loads(content)["error"]
    assert status == 400 and words in error, error
    assert not any(python in error for python in ("NoneType", "bool", "float64", "dict", "None"))


def test_requests_within_the_limits_are_answered(server, stub):
    """The limits refuse only what is over them: a request at each limit is served."""
    out = grpc_predict(stub, "ids", {"token_ids": proto(types_pb2.DT_INT32, [MAX_BATCH, 2],
                                                        int_val=[3])})
    assert tf.make_ndarray(out.outputs["score"]).tolist() == [6.0] * MAX_BATCH
    rest = RestClient("127.0.0.1", server["rest"], timeout=10)
    assert rest.predict("ids", {"token_ids": [[9] * MAX_LEN]}) == [9.0 * MAX_LEN]
    texts = ["good " * (MAX_STRING // 5)] * MAX_BATCH
    assert rest.predict("reviews", {"text": texts})["label"] == ["positive"] * MAX_BATCH


# --- items 1, 2, 4, 5 over REST ---------------------------------------------------

PREDICT = "/v1/models/{}:predict"
HOSTILE_REST = [
    ("reviews", b'{"instances": ' + b"[" * 33 + b'"a"' + b"]" * 33 + b"}", "nested deeper"),
    ("ids", b'{"inputs": {"token_ids": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}}", "nested deeper"),
    ("reviews", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "JSON"),
    ("reviews", json.dumps({"instances": ["x"] * (MAX_BATCH + 1)}).encode(), "--max-batch-size"),
    ("reviews", json.dumps({"inputs": {"text": ["x"] * (MAX_BATCH + 1)}}).encode(),
     "--max-batch-size"),
    ("ids", json.dumps({"inputs": {"token_ids": [[1] * (MAX_LEN + 1)]}}).encode(),
     "--max-sequence-length"),
    ("ids", json.dumps({"inputs": {"token_ids": [[1] * 400] * 60}}).encode(), "--max-elements"),
    ("reviews", json.dumps({"instances": ["a" * (MAX_STRING + 1)]}).encode(),
     "--max-string-bytes"),
    ("reviews", json.dumps({"inputs": {"text": []}}).encode(), "empty batch"),
    ("ids", json.dumps({"inputs": {"token_ids": [[1, -400]]}}).encode(), "negative id -400"),
    *[("wide", json.dumps({"signature_name": "classify_ids", "inputs": {"token_ids": [[1, 2]],
                                                                         "code_points": [[97, bad]]}}).encode(),
       f"Input 'code_points' holds the code point {bad}; code points must be 0 to 1114111")
      for bad in (-5, 2000000000)],
    ("ids", json.dumps({"inputs": {"token_ids": [[1, 2], [3]]}}).encode(), "ragged"),
    ("ids", json.dumps({"inputs": {"token_ids": [[1, None]]}}).encode(), "int32"),
    ("ids", json.dumps({"inputs": {"token_ids": [[1, 2.5]]}}).encode(), "int32"),
    ("reviews", json.dumps({"inputs": {"text": [{"b64": "//4="}]}}).encode(), "UTF-8"),
    ("shakespeare", json.dumps({"inputs": {"prompt": ["a", "b"], "max_new_tokens": [1]}}).encode(),
     "batch sizes differ"),
    ("shakespeare", json.dumps({"inputs": {"prompt": ["a"], "max_new_tokens": [[1]]}}).encode(),
     "nested deeper"),
]


@pytest.mark.parametrize("model,body,word", HOSTILE_REST,
                         ids=[f"{m}-{w}-{i}" for i, (m, _, w) in enumerate(HOSTILE_REST)])
def test_hostile_rest_requests_get_a_json_4xx(model, body, word, server):
    start = time.monotonic()
    status, content = raw(server["rest"], "POST", PREDICT.format(model), body,
                          {"Content-Type": "application/json"})
    assert 400 <= status < 500, (status, content[:300])
    error = json.loads(content)["error"]
    assert word in error, error
    assert time.monotonic() - start < 2.0
    check_reviews_answer(RestClient("127.0.0.1", server["rest"], timeout=10))


def test_gzipped_bodies_and_paths_in_any_case_are_answered_as_tf_serving_does(server):
    """TF Serving gunzips a `Content-Encoding: gzip` body (its auto_uncompress_input) and matches its paths
    case-insensitively; tfllm read the gzip bytes as JSON ("not valid UTF-8: surrogates not allowed")."""
    import gzip

    body = json.dumps({"instances": ["good", "bad"]}).encode()
    plain = raw(server["rest"], "POST", PREDICT.format("reviews"), body)
    assert plain[0] == 200
    assert raw(server["rest"], "POST", PREDICT.format("reviews"), gzip.compress(body),
               {"Content-Encoding": "gzip"}) == plain
    assert raw(server["rest"], "POST", "/V1/Models/reviews:PREDICT", body) == plain
    for headers, payload, status, words in [
            ({"Content-Encoding": "br"}, body, 415, "'br' is not supported"),
            ({"Content-Encoding": "gzip"}, body, 400, "not gzip data"),
            ({"Content-Encoding": "gzip"}, gzip.compress(b" " * 4_000_001), 413, "gunzipped request body"),
            ({}, '{"instances": ["caf\xe9"]}'.encode("latin-1"), 400, "not UTF-8 (invalid continuation byte at byte 19)")]:
        status_got, content = raw(server["rest"], "POST", PREDICT.format("reviews"), payload, headers)
        assert status_got == status and words in json.loads(content)["error"], content


def test_the_server_log_has_no_traceback(server):
    raw(server["rest"], "POST", PREDICT.format("reviews"),
        b'{"instances": ' + b"[" * 40 + b'"a"' + b"]" * 40 + b"}")
    time.sleep(0.2)
    assert "Traceback" not in open(server["log_path"]).read()


def test_large_bodies_do_not_hold_up_a_small_request(server):
    """Eight concurrent ~3.5 MB bodies (under the body limit, each refused for its string):
    a small request sent meanwhile is answered quickly and memory stays bounded."""
    big = json.dumps({"instances": ["good " * 700_000]}).encode()
    before = rss_bytes(server["proc"].pid)

    def send_big(_):
        return raw(server["rest"], "POST", PREDICT.format("reviews"), big)

    rest = RestClient("127.0.0.1", server["rest"], timeout=30)
    with ThreadPoolExecutor(8) as pool:
        bigs = [pool.submit(send_big, i) for i in range(8)]
        time.sleep(0.05)
        start = time.monotonic()
        check_reviews_answer(rest)
        small_seconds = time.monotonic() - start
        statuses = [f.result()[0] for f in bigs]
    assert statuses == [400] * 8
    assert small_seconds < 2.0  # 13 s before (8 x 15 MB tokenized at once)
    assert rss_bytes(server["proc"].pid) - before < 200 * 2**20


# --- item 8: broken versions are reported and retried ------------------------------


def test_a_version_copied_in_file_by_file_loads_once_complete(server, savedmodels, tmp_path):
    staging = tmp_path / "2"
    fixtures.save_classifier(str(staging), bias=5.0, warmup=False)
    target = savedmodels / "flaky" / "2"
    target.mkdir()
    (target / "saved_model.pb").write_bytes((staging / "saved_model.pb").read_bytes())
    rest = RestClient("127.0.0.1", server["rest"], timeout=10)
    grpc_client = GrpcClient("127.0.0.1", server["grpc"], timeout=10)

    def status_of(client, version):
        rows = client.status("flaky")["model_version_status"]
        return next((r for r in rows if r["version"] == str(version)), None)

    deadline = time.monotonic() + 30
    while (status_of(rest, 2) or {}).get("state") in (None, "LOADING"):  # LOADING while it is tried
        assert time.monotonic() < deadline, "the half-copied version never showed in the status"
        time.sleep(0.2)
    for client in (rest, grpc_client):
        row = status_of(client, 2)
        assert row["state"] == "END"
        assert row["status"]["error_code"] == "UNKNOWN" and row["status"]["error_message"]
        assert status_of(client, 1)["state"] == "AVAILABLE"
    with pytest.raises(ServingError, match="version 2 failed to load"):
        rest.predict("flaky", ["bad"], version=2)
    assert rest.predict("flaky", ["bad"])["label"] == ["negative"]  # version 1 still serves

    import shutil

    for entry in os.listdir(staging):  # the rest of the copy arrives
        if entry != "saved_model.pb":
            src = staging / entry
            (shutil.copytree if src.is_dir() else shutil.copy)(src, target / entry)
    deadline = time.monotonic() + 30
    while status_of(rest, 2)["state"] != "AVAILABLE":
        assert time.monotonic() < deadline, "the completed version was never loaded"
        time.sleep(0.2)
    assert rest.predict("flaky", ["bad"])["label"] == ["positive"]
    assert status_of(grpc_client, 2) == {"version": "2", "state": "AVAILABLE",
                                         "status": {"error_code": "OK", "error_message": ""}}


# --- item 12: a busy port fails at once ---------------------------------------------


@pytest.mark.parametrize("busy", ["rest", "grpc"])
def test_a_busy_port_fails_before_loading_models(busy, savedmodels):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        ports = {"rest": free_port(), "grpc": free_port()}
        ports[busy] = taken
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "tfllm.cli", "serve", str(savedmodels), "--port",
             str(ports["rest"]), "--grpc-port", str(ports["grpc"])],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 2, result.stderr
    flag = "--port" if busy == "rest" else "--grpc-port"
    assert flag in result.stderr and str(taken) in result.stderr
    assert "Traceback" not in result.stderr and "loaded" not in result.stderr
    assert time.monotonic() - start < 60


def test_a_port_held_by_a_server_still_loading_its_models_is_busy():
    """A server binds its REST port before its models load (seconds to minutes). The socket was bound but not
    listening then, and Linux lets a second SO_REUSEADDR socket bind such a port: a second `tfllm serve`
    took it, and the first one's REST clients were answered by the second one's models."""
    from tfllm.errors import UserInputError
    from tfllm.serving.server import bind_socket

    first = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(UserInputError, match=f"Cannot bind REST to 127.0.0.1:{first.getsockname()[1]}"):
            bind_socket("127.0.0.1", first.getsockname()[1]).close()
    finally:
        first.close()


# --- item 13: bearer token and Host check --------------------------------------------


@pytest.fixture(scope="module")
def token_server(savedmodels, tmp_path_factory):
    with running_server(savedmodels, tmp_path_factory.mktemp("tlog") / "server.log",
                        "--allowed-host", "models.internal", env={"TFLLM_AUTH_TOKEN": TOKEN},
                        token=TOKEN) as s:
        yield s


@pytest.mark.slow
def test_token_is_required_over_rest(token_server):
    port, path = token_server["rest"], PREDICT.format("reviews")
    body = json.dumps({"instances": ["good"]}).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        for method, p, b in (("POST", path, body), ("GET", "/v1/models/reviews", None)):
            status, content = raw(port, method, p, b, headers)
            assert status == 401, (headers, status)
            assert "bearer token" in json.loads(content)["error"]
    check_reviews_answer(RestClient("127.0.0.1", port, timeout=10, auth_token=TOKEN))
    with pytest.raises(ServingError, match="bearer token"):
        RestClient("127.0.0.1", port, timeout=10, auth_token="nope").status("reviews")


def test_token_is_required_over_grpc(token_server):
    for token in (None, "nope"):
        client = GrpcClient("127.0.0.1", token_server["grpc"], timeout=10, auth_token=token)
        with pytest.raises(ServingError, match="bearer token") as info:
            client.status("reviews")
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(ServingError) as info:
            client.predict("reviews", {"text": ["good"]})
        assert info.value.status == "UNAUTHENTICATED"
    check_reviews_answer(GrpcClient("127.0.0.1", token_server["grpc"], timeout=10,
                                    auth_token=TOKEN))


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "beaRer"])
def test_the_bearer_scheme_is_case_insensitive(scheme, token_server):
    """RFC 7235 section 2.1: 'bearer TOKEN' got 401 / UNAUTHENTICATED."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    status, _ = raw(token_server["rest"], "GET", "/v1/models/reviews", None,
                    {"Authorization": f"{scheme} {TOKEN}"})
    assert status == 200
    channel = grpc.insecure_channel(f"127.0.0.1:{token_server['grpc']}")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "reviews"
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        request, timeout=30, metadata=[("authorization", f"{scheme} {TOKEN}")])
    assert reply.model_version_status[0].version == 1
    channel.close()


@pytest.mark.parametrize("host,allowed", [
    ("evil.example", False), ("evil.example:8501", False), ("127.0.0.1.nip.io", False),
    ("localhost", True), ("127.0.0.1:1234", True), ("[::1]:8501", True),
    ("models.internal", True), ("MODELS.internal.:80", True),
])
def test_host_header_is_checked(host, allowed, token_server):
    headers = {"Host": host, "Authorization": f"Bearer {TOKEN}"}
    status, content = raw(token_server["rest"], "GET", "/v1/models/reviews", None, headers)
    if allowed:
        assert status == 200
    else:
        assert status == 400
        assert "--allowed-host" in json.loads(content)["error"]


@pytest.mark.parametrize("origin,content_type,ok", [
    (None, "application/json", True),  # TF Serving's clients and tfllm's send no Origin
    ("http://127.0.0.1:{port}", "application/json", True),  # the try-it page's own POST
    ("http://evil.example", "text/plain", False),  # CORS "simple" requests: no preflight
    ("http://evil.example", "application/x-www-form-urlencoded", False),
    ("http://127.0.0.1:1", "text/plain", False),  # another origin on the same machine
    ("null", "text/plain", False),  # a sandboxed frame or a file:// page
])
def test_cross_origin_posts_from_web_pages_are_refused(origin, content_type, ok, server):
    """Any web page could make the browser run predictions on the local server (CSRF)."""
    port = server["rest"]
    headers = {"Content-Type": content_type}
    if origin:
        headers["Origin"] = origin.format(port=port)
    status, content = raw(port, "POST", PREDICT.format("reviews"), b'{"instances": ["good"]}', headers)
    if ok:
        assert status == 200 and json.loads(content)["predictions"][0]["label"] == "positive"
    else:
        assert status == 403 and "Cross-origin" in json.loads(content)["error"]


def test_a_page_named_with_allowed_host_may_post(token_server):
    """A page served through a proxy under a name given with --allowed-host (which may rewrite Host)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "https://models.internal"}
    status, _ = raw(token_server["rest"], "POST", PREDICT.format("reviews"), b'{"instances": ["good"]}', headers)
    assert status == 200
    headers["Origin"] = "https://evil.example"
    assert raw(token_server["rest"], "POST", PREDICT.format("reviews"), b'{"instances": ["good"]}', headers)[0] == 403


def test_without_a_token_the_protocol_is_unchanged(server):
    status, content = raw(server["rest"], "GET", "/v1/models/reviews")
    assert status == 200 and json.loads(content)["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_sample_requests_send_the_token_from_the_environment(token_server, monkeypatch, capsys):
    """serving/requests.sh (curl) and serving/request.py send TFLLM_AUTH_TOKEN from the environment; without it
    request.py prints one line per client, not a traceback. request.py runs as `python serving/request.py`
    runs it (runpy, as __main__, its argv and environment set), in this process: its gRPC client imports
    TensorFlow, seconds a fresh process would spend twice."""
    import runpy
    import shutil

    serving = os.path.join(os.path.dirname(__file__), "..", "serving")
    env = dict(os.environ, TFLLM_AUTH_TOKEN=TOKEN, TF_CPP_MIN_LOG_LEVEL="2")
    if shutil.which("curl"):
        out = subprocess.run(["bash", os.path.join(serving, "requests.sh"),
                              f"127.0.0.1:{token_server['rest']}"], env=env,
                             capture_output=True, text=True, check=True, timeout=30).stdout
        assert '"predictions"' in out and "bearer token" not in out
    request_py = os.path.join(serving, "request.py")
    monkeypatch.setattr(sys, "argv", [request_py, "--host", "127.0.0.1", "--rest-port", str(token_server["rest"]),
                                      "--grpc-port", str(token_server["grpc"])])
    monkeypatch.setenv("TFLLM_AUTH_TOKEN", TOKEN)
    capsys.readouterr()
    runpy.run_path(request_py, run_name="__main__")
    out = capsys.readouterr().out
    assert out.count('"label"') >= 4 and "bearer token" not in out
    # Without the token: one line a client, not a traceback (the reviews calls did not catch it; an exception
    # out of the script fails this test).
    monkeypatch.delenv("TFLLM_AUTH_TOKEN")
    runpy.run_path(request_py, run_name="__main__")
    refused, err = capsys.readouterr()
    assert "Traceback" not in err, err[-2000:]
    assert "reviews: [401] Missing or wrong bearer token" in refused, refused
    assert "reviews: [UNAUTHENTICATED] Missing or wrong bearer token" in refused


@pytest.mark.parametrize("bind,allowed,host,ok", [
    ("0.0.0.0", (), "192.168.1.5:8501", True),  # any address of the machine
    ("0.0.0.0", (), "evil.example", False),  # but no DNS name unless listed
    ("0.0.0.0", ("models.internal",), "models.internal:8501", True),
    ("192.168.1.5", (), "192.168.1.5", True),
    ("192.168.1.5", (), "localhost", False),  # not bound to loopback
    ("127.0.0.1", ("*",), "anything.example", True),
    ("::1", (), "[::1]:8501", True),
    ("127.0.0.1", (), None, True),  # HTTP/1.0 without Host: not a browser
])
def test_host_rules(bind, allowed, host, ok):
    from tfllm.serving.security import AccessPolicy

    assert AccessPolicy(None, bind, allowed).host_allowed(host) is ok


def test_token_rules():
    from tfllm.serving.security import AccessPolicy

    policy = AccessPolicy("abc", "127.0.0.1")
    assert policy.token_ok(b"Bearer abc") and policy.token_ok("Bearer abc")
    assert all(policy.token_ok(v) for v in (b"bearer abc", "BEARER abc", b"Bearer  abc "))
    assert not any(policy.token_ok(v) for v in (None, b"", b"Bearer ab", b"Bearer abcd", b"abc",
                                                b"Bearerabc", b"Basic abc", b"Bearer a bc"))
    assert AccessPolicy(None).token_ok(None)
    for bad in ("", " abc", "a b", "caf\u00e9"):
        with pytest.raises(ValueError, match="printable ASCII"):
            AccessPolicy(bad)


def test_grpc_calls_over_the_cap_are_refused_at_once_and_the_cap_frees(tmp_path):
    """The gRPC server had no cap on calls in flight (REST has --max-connections): a burst queued
    without bound behind its 16 worker threads. Now one over --max-concurrent-rpcs (default
    --max-connections) is refused at once with RESOURCE_EXHAUSTED, and calls are taken again
    once those in flight end; GrpcClient's error names the flag. The calls are held
    deterministically: the real registry's statuses() waits on an Event before doing its work."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from tfllm.serving.connections import ConnectionLimits
    from tfllm.serving.grpc_service import make_grpc_server
    from tfllm.serving.registry import ModelRegistry

    assert ConnectionLimits().max_concurrent_rpcs == ConnectionLimits().max_connections
    assert ConnectionLimits(max_connections=7).max_concurrent_rpcs == 7
    fixtures.save_classifier(str(tmp_path / "reviews" / "1"), warmup=False)
    registry = ModelRegistry(str(tmp_path))
    registry.refresh()
    cap, entered, release = 3, threading.Semaphore(0), threading.Event()
    statuses = registry.statuses

    def held_statuses(*args, **kwargs):
        entered.release()
        assert release.wait(60)
        return statuses(*args, **kwargs)

    registry.statuses = held_statuses
    port = free_port()
    server = make_grpc_server(registry, f"127.0.0.1:{port}", max_concurrent_rpcs=cap)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "reviews"
        held = [status_stub.GetModelStatus.future(request, timeout=60) for _ in range(cap)]
        for _ in range(cap):
            assert entered.acquire(timeout=30)  # all `cap` calls are in their handler
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "reviews"
        predict.inputs["text"].CopyFrom(tf.make_tensor_proto(["a good film"]))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for call, message in [(status_stub.GetModelStatus, request), (stub.Predict, predict)]:
            with pytest.raises(grpc.RpcError) as info:
                call(message, timeout=30)  # refused, not queued behind the held calls
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
        # tfllm's client named no flag (grpcio's words alone); REST's refusals name theirs.
        with pytest.raises(ServingError, match=r"^\[RESOURCE_EXHAUSTED\] Concurrent RPC limit exceeded! "
                                               r"\(the server's --max-concurrent-rpcs\)"):
            GrpcClient("127.0.0.1", port, timeout=30).predict("reviews", {"text": ["a good film"]})
        assert not any(f.done() for f in held)
        release.set()
        for f in held:
            assert f.result().model_version_status[0].version == 1
        # grpcio counts a call out once its handler has returned, just after its answer left.
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = stub.Predict(predict, timeout=30)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                time.sleep(0.05)
        assert tf.make_ndarray(answer.outputs["label"]).tolist() == [b"positive"]
    finally:
        release.set()
        channel.close()
        server.stop(0)
        registry.stop()


def _raw_socket(port, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply


def test_a_transfer_coding_other_than_chunked_is_refused(server):
    """`Transfer-Encoding: gzip, chunked` was read as chunked, the gzip ignored (a proxy could frame it otherwise:
    request smuggling); now 501 with TF Serving's {"error": ...}. Plain chunked is still answered."""
    body = b'{"instances": ["good"]}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"POST /v1/models/reviews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    assert _raw_socket(server["rest"], head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked).startswith(b"HTTP/1.1 200")
    reply = _raw_socket(server["rest"], head + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked)
    assert reply.startswith(b"HTTP/1.1 501"), reply[:200]
    assert "Transfer-Encoding 'gzip, chunked' is not supported" in json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]


def test_head_answers_as_get_and_v1_is_one_json_answer_not_a_redirect(server):
    """HEAD /v1/models/NAME was a 400 while GET was 200; GET /v1 was a 307 to /v1/ (which was a 400)."""
    get = raw(server["rest"], "GET", "/v1/models/reviews")
    assert get[0] == 200
    assert raw(server["rest"], "HEAD", "/v1/models/reviews") == (200, b"")
    for path in ("/v1", "/v1/"):
        status, content = raw(server["rest"], "GET", path)
        assert status in (400, 404) and json.loads(content)["error"], (path, status, content)


def test_a_client_gone_before_its_model_call_gets_none(savedmodels):
    """A REST client that disconnected while its request waited for a worker thread still had its model run
    (a generation went on for minutes for no one); now it gets no model call."""
    import asyncio

    from tfllm.serving.registry import ModelRegistry
    from tfllm.serving.rest import make_app

    registry = ModelRegistry(str(savedmodels), poll_seconds=0)
    registry.refresh()
    app = make_app(registry)
    body = json.dumps({"instances": ["good film"] * 400}).encode()  # over the inline limit: a worker thread

    def answer(then):
        messages = [{"type": "http.request", "body": body, "more_body": False}] + ([then] if then else [])
        sent = []

        async def receive():
            return messages.pop(0) if messages else await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/models/reviews:predict", "raw_path": b"",
                 "query_string": b"", "headers": [(b"host", b"localhost"), (b"content-length", b"%d" % len(body))],
                 "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8501), "client": ("127.0.0.1", 1)}
        asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
        return sent[0]["status"]

    assert answer({"type": "http.disconnect"}) == 400  # no one to answer: no model call, no 200
    assert answer(None) == 200  # a client still there is answered


@pytest.mark.parametrize("model,body,words", [
    # A 5,000-digit integer is valid JSON: it was "Malformed JSON in request body: number is
    # infinity when parsed as double".
    ("ids", b'{"inputs": {"token_ids": [[1, ' + b"9" * 5000 + b"]]}}",
     "Instance 0 of input 'token_ids' (99999999999999999999... (5,000 characters) at position 1) is out of int32's "
     "range [-2147483648, 2147483647]"),
    ("ids", b'{"inputs": {"token_ids": [[1, -1' + b"0" * 400 + b"]]}}", "Instance 0 of input 'token_ids' (-1000000000"),
    ("ids", b'{"inputs": {"token_ids": [[1, 2e999]]}}', "Instance 0 of input 'token_ids' (2e999 at position 1) is out of int32's"),
    ("reviews", b'{"instances": [' + b"9" * 5000 + b"]}", "got a number at value 0"),
    # Beyond 64 bits orjson reads a float; within them int64: both were "outside the int32 range".
    ("ids", b'{"inputs": {"token_ids": [[1, 2, 99999999999999999999]]}}',
     "Instance 0 of input 'token_ids' (1e+20 at position 2) is out of int32's"),
    ("ids", b'{"instances": [[1, 2], [3, 2199023255552]]}',
     "Instance 1 of input 'token_ids' (2199023255552 at position 1) is out of int32's"),
    ("ids", b'{"inputs": {"token_ids": [[1, 1e999, NaN]]}}', "Instance 0 of input 'token_ids' (1e999 at position 1)"),
    # TF Serving's parser takes NaN and Infinity; they were "Malformed JSON: unexpected character".
    ("scaler", b'{"instances": [{"temperature": NaN}]}', "Input 'temperature' holds NaN or infinite values."),
    ("scaler", b'{"inputs": {"temperature": [1.0, -Infinity]}}', "Input 'temperature' holds NaN or infinite values."),
    ("scaler", b'{"instances": [Infinity]}', "Input 'temperature' holds NaN or infinite values."),
    ("scaler", b'{"instances": [Nan]}', "Malformed JSON in request body: unexpected character"),
    ("scaler", b'{"instances": [NaN}', "Malformed JSON in request body"),
    # Both said "the model reads only the start of a text": a generator decodes a prompt's end.
    ("shakespeare", b'{"instances": [{"prompt": "' + b"a" * (MAX_STRING + 1) + b'", "max_new_tokens": 1}]}',
     f"over the limit of {MAX_STRING} bytes per string; send a shorter one, or raise the limit (tfllm serve "
     "--max-string-bytes)."),
    ("reviews", b'{"instances": ["' + b"a" * (MAX_STRING + 1) + b'"]}', "; send a shorter one, or raise the limit"),
    # Read as input names: "Missing input(s) ['text'] and unknown input(s) ['b64', 'x']".
    ("reviews", b'{"instances": [{"b64": "YQ==", "x": 1}]}', "A {\"b64\": ...} object must hold that one key; got keys ['b64', 'x']"),
    ("reviews", b'{"inputs": {"b64": "YQ==", "x": 1}}', "A {\"b64\": ...} object must hold that one key"),
])
def test_rest_says_what_is_wrong_with_a_value(model, body, words, server):
    status, content = raw(server["rest"], "POST", PREDICT.format(model), body)
    error = json.loads(content)["error"]
    assert status == 400 and words in error, error
    assert len(error) < 400


def test_both_clients_refuse_nan_before_sending_with_the_servers_words(server):
    """RestClient wrote NaN as JSON's null, and the server answered "must be float32 ...; got null at value 0"."""
    words = "Input 'temperature' holds NaN or infinite values."
    for client in (RestClient("127.0.0.1", server["rest"], timeout=10), GrpcClient("127.0.0.1", server["grpc"], timeout=10)):
        for call in (dict(instances=[{"temperature": float("nan")}]), dict(inputs={"temperature": np.array([1, np.inf])}),
                     dict(instances=np.array([1.0, -np.inf], np.float32))):
            with pytest.raises(ServingError) as caught:
                client.predict("scaler", **call)
            bare = "temperature" not in str(call)  # a bare value: RestClient has no signature to name it by
            assert caught.value.message == (words if not bare or isinstance(client, GrpcClient) else
                                            "An input holds NaN or infinite values."), (client, call, caught.value)
        assert client.predict("scaler", instances=[{"temperature": 1.5}]) == [3.0]


def test_a_number_out_of_range_is_named_by_its_instance_and_shown():
    """`"max_new_tokens": 99999999999` read "Value 0 of input 'max_new_tokens' is out of int32's range": 0 is
    the instance, not the value."""
    from tfllm.serving.codec import json_to_tensor
    from tfllm.serving.jsonio import loads_request as loads
    from tfllm.serving.limits import Limits, RequestError

    spec = tf.TensorSpec([None], tf.int32, name="max_new_tokens")
    for body, words in ((b"[5, 99999999999]", "Instance 1 of input 'max_new_tokens' (99999999999) is out of "
                                               "int32's range [-2147483648, 2147483647]; send a value within it."),
                        (b"[" + b"9" * 5000 + b"]", "Instance 0 of input 'max_new_tokens' (99999999999999999999... "
                                                    "(5,000 characters)) is out of int32's range")):
        with pytest.raises(RequestError) as caught:
            json_to_tensor("max_new_tokens", loads(body), spec, Limits())
        assert str(caught.value).startswith(words), caught.value


def test_a_version_beyond_int64_is_called_out_of_range(server):
    """/versions/99999999999999999999 was "must be a non-negative integer", which it is."""
    body = b'{"instances": ["good"]}'
    status, content = raw(server["rest"], "POST", "/v1/models/reviews/versions/99999999999999999999:predict", body)
    assert status == 400 and json.loads(content)["error"] == (
        f"Version '99999999999999999999' is out of range: versions are int64, at most {2**63 - 1}.")
    status, content = raw(server["rest"], "POST", f"/v1/models/reviews/versions/{2**63 - 1}:predict", body)
    assert status == 404, content  # a version that fits: not served, not refused
    status, content = raw(server["rest"], "POST", "/v1/models/reviews/versions/1x:predict", body)
    assert status == 400 and "must be a non-negative integer" in json.loads(content)["error"], content


def test_grpc_refuses_a_negative_version_and_a_modelless_classify_as_rest_does(server, stub):
    """gRPC version -5 was NOT_FOUND (as if it might appear) where REST's /versions/-5 is a 400; an
    empty ClassificationRequest said "Missing ModelSpec" where REST's :classify says to use Predict."""
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, regression_pb2)

    status, content = raw(server["rest"], "POST", "/v1/models/reviews/versions/-5:predict", b'{"instances": ["good"]}')
    assert status == 400
    rest_error = json.loads(content)["error"]
    predict = predict_pb2.PredictRequest()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    model_status = get_model_status_pb2.GetModelStatusRequest()
    for request in (predict, metadata, model_status):
        request.model_spec.name = "reviews"
        request.model_spec.version.value = -5
    predict.inputs["text"].CopyFrom(proto(types_pb2.DT_STRING, [1], string_val=[b"good"]))
    channel = grpc.insecure_channel(f"127.0.0.1:{server['grpc']}")
    for call, request in ((stub.Predict, predict), (stub.GetModelMetadata, metadata),
                          (model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, model_status)):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, rest_error)
    _, content = raw(server["rest"], "POST", "/v1/models/reviews:classify", b'{"examples": []}')
    assert "use Predict (REST :predict)" in json.loads(content)["error"]
    for method, call, request in (("Classify", stub.Classify, classification_pb2.ClassificationRequest()),
                                  ("Regress", stub.Regress, regression_pb2.RegressionRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(f"{method} is not supported: tfllm serve runs signatures "
                                               "through Predict only"), info.value.details()
        assert "names no model" in info.value.details() and "use Predict (REST :predict)" in info.value.details()
    channel.close()
