"""The local TF-Serving-compatible server and clients, as real processes.

The server runs as a subprocess on free loopback ports, serving tiny
SavedModels built here; answers over REST and gRPC are checked against the
same signatures called in this process.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import serving_process

pytest.importorskip("tensorflow_serving")
pytest.importorskip("starlette")

import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  registers the tokenizer ops

from tfllm.errors import UserInputError  # noqa: E402
from tfllm.serving import (  # noqa: E402
    GrpcClient,
    RestClient,
    ServingError,
    fixtures,
    list_models,
    prune,
    read_warmup_requests,
    write_warmup_requests,
)

REVIEWS = ["a good good film", "bad", "good but bad and bad", ""]
MAX_BODY = 100_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def savedmodels(tmp_path_factory):
    base = tmp_path_factory.mktemp("savedmodels")
    fixtures.build_savedmodels(str(base))
    fixtures.save_classifier(str(base / "hotswap" / "1"), bias=0.0, warmup=False)
    _save_busy_model(str(base / "busy" / "1"))
    _save_temperature_model(str(base / "temperature" / "1"))
    return base


def _save_temperature_model(path):
    """A model with a float32 input, as a generator's `temperature` is."""
    class Temperature(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="temperature")])
        def echo(self, temperature):
            return {"temperature": temperature}

    module = Temperature()
    tf.saved_model.save(module, path, signatures={"serving_default": module.echo})


def _save_busy_model(path):
    """A model that keeps one core busy for `seconds` (a stand-in for long generation)."""
    class Busy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64, name="seconds")])
        def spin(self, seconds):
            start = tf.timestamp()
            tf.while_loop(lambda now: now - start < seconds[0], lambda now: tf.timestamp(), [start])
            return {"seconds": seconds}

    module = Busy()
    tf.saved_model.save(module, path, signatures={"serving_default": module.spin})


@pytest.fixture(scope="module")
def server(savedmodels, tmp_path_factory):
    rest_port, grpc_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with serving_process([savedmodels, "--port", rest_port, "--grpc-port", grpc_port,
                          "--poll-seconds", "0.2", "--max-body-bytes", MAX_BODY],
                         lambda: RestClient("127.0.0.1", rest_port, timeout=2).status("shakespeare"),
                         log_path, timeout=60) as proc:
        yield {"rest": rest_port, "grpc": grpc_port, "proc": proc, "log": log_path}


@pytest.fixture(scope="module")
def rest(server):
    with RestClient("127.0.0.1", server["rest"], timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_client(server):
    with GrpcClient("127.0.0.1", server["grpc"], timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def in_process(savedmodels):
    return {name: tf.saved_model.load(str(savedmodels / name / "1"))
            for name in ("reviews", "shakespeare")}


def _expected_reviews(in_process, texts):
    out = in_process["reviews"].signatures["serving_default"](text=tf.constant(texts))
    return out["probabilities"].numpy(), [b.decode() for b in out["label"].numpy()]


def _assert_reviews(columns, probabilities, labels):
    np.testing.assert_allclose(np.float32(columns["probabilities"]), probabilities, rtol=1e-6)
    assert columns["label"] == labels


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.slow
def test_classification_matches_in_process_call(protocol, rest, grpc_client, in_process):
    client = rest if protocol == "rest" else grpc_client
    probabilities, labels = _expected_reviews(in_process, REVIEWS)

    _assert_reviews(client.predict("reviews", {"text": REVIEWS}), probabilities, labels)
    _assert_reviews(client.predict("reviews", REVIEWS), probabilities, labels)  # bare batch
    rows = client.predict("reviews", instances=REVIEWS)
    assert [r["label"] for r in rows] == labels
    np.testing.assert_allclose(np.float32([r["probabilities"] for r in rows]), probabilities,
                               rtol=1e-6)
    named_rows = client.predict("reviews", instances=[{"text": t} for t in REVIEWS],
                                version=1)
    assert [r["label"] for r in named_rows] == labels
    counts = client.predict("reviews", {"text": REVIEWS}, signature_name="word_count",
                            label="stable")
    assert counts == [4, 1, 5, 0]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_generation_matches_in_process_call(protocol, rest, grpc_client, in_process):
    client = rest if protocol == "rest" else grpc_client
    prompts, steps = ["To be", "ROMEO:"], [3, 1]
    expected = in_process["shakespeare"].signatures["serving_default"](
        prompt=tf.constant(prompts), max_new_tokens=tf.constant(steps))["text"].numpy()
    expected = [b.decode() for b in expected]

    assert client.predict("shakespeare", {"prompt": prompts, "max_new_tokens": steps}) == expected
    rows = [{"prompt": p, "max_new_tokens": n} for p, n in zip(prompts, steps)]
    assert client.predict("shakespeare", instances=rows) == expected
    # The model's own words, without tf.debugging's "[Condition x > y did not hold
    # element-wise:] [x (StringLength:0) = ] [0] ..." (sent before).
    with pytest.raises(ServingError) as info:
        client.predict("shakespeare", {"prompt": [""], "max_new_tokens": [3]})
    assert info.value.message == "prompt must not be empty"
    with pytest.raises(ServingError) as info:
        client.predict("shakespeare", instances=[{"prompt": "a", "max_new_tokens": 1000}])
    assert info.value.message == "max_new_tokens must be <= 64"


def test_binary_values_are_b64(rest, in_process):
    probabilities, labels = _expected_reviews(in_process, ["good"])
    # bytes go out as {"b64": ...}; the server decodes them like TF Serving.
    _assert_reviews(rest.predict("reviews", {"text": [b"good"]}), probabilities, labels)


def test_status_and_metadata_agree_across_protocols(rest, grpc_client):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]}
    for client in (rest, grpc_client):
        assert client.status("reviews") == expected
        assert client.status("reviews", version=1) == expected
        assert client.status("reviews", label="stable") == expected
    meta = rest.metadata("reviews")
    assert meta == grpc_client.metadata("reviews")
    assert meta["model_spec"] == {"name": "reviews", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert set(sigs["serving_default"]["outputs"]) == {"label", "probabilities"}
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    # TF Serving prints the SignatureDefMap with always_print_primitive_fields: every TensorInfo
    # has its shape's "dim" (a list, [] for unknown rank) and "unknown_rank", every dim its
    # "name", every signature "inputs", "outputs", "method_name" (its api_rest.md example).
    # Fields at their defaults were left out: the init op's output had no "dim", so a client
    # reading tensor_shape["dim"] of each output (or ["unknown_rank"]) failed on tfllm serve.
    for sig in sigs.values():
        assert {"inputs", "outputs", "method_name"} <= set(sig), sig
        for info in [*sig["inputs"].values(), *sig["outputs"].values()]:
            shape = info["tensor_shape"]
            assert isinstance(shape["dim"], list) and isinstance(shape["unknown_rank"], bool), info
            assert all(set(d) == {"size", "name"} for d in shape["dim"]), info
    assert sigs["serving_default"]["inputs"]["text"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_unknown_model_version_label_signature(protocol, rest, grpc_client):
    client = rest if protocol == "rest" else grpc_client
    for kwargs, message in [
        ({"model": "nope"}, "'nope'"),
        ({"model": "reviews", "version": 7}, "version 7"),
        ({"model": "reviews", "label": "canary"}, "'canary'"),
        ({"model": "reviews", "label": "can ary"}, "'can ary'"),  # RestClient: http.client's InvalidURL before
    ]:
        with pytest.raises(ServingError, match=message) as info:
            client.predict(inputs=["good"], **kwargs)
        if "label" in kwargs:
            # TF Serving: "Unrecognized servable version label" is InvalidArgument (400), not
            # the NOT_FOUND of a model or version that is not there (yet): it was 404.
            assert info.value.status == (400 if protocol == "rest" else "INVALID_ARGUMENT")
            with pytest.raises(ServingError, match=message) as info:
                client.metadata(**kwargs)
            assert info.value.status == (400 if protocol == "rest" else "INVALID_ARGUMENT")
        else:
            assert info.value.status in (404, "NOT_FOUND")
        if "label" in kwargs:  # as TF Serving, a status request ignores the label
            assert client.status(**kwargs) == client.status("reviews")
            continue
        with pytest.raises(ServingError, match=message):
            client.status(**kwargs)
    with pytest.raises(ServingError, match="'missing' not found") as info:
        client.predict("reviews", ["good"], signature_name="missing")
    # As TF Serving: the model and version exist, so not 404 / NOT_FOUND.
    assert info.value.status == (400 if protocol == "rest" else "FAILED_PRECONDITION")
    if protocol == "grpc":  # the client checks first; the server answers the same
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "reviews", "missing"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(["good"]))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client._channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.Predict(request, timeout=10)
        assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'missing' not found" in raw.value.details()


def test_the_clients_encode_labels_and_refuse_a_version_that_is_not_a_whole_number_before_connecting():
    """RestClient sent a label as written: "can ary" raised http.client's InvalidURL, "a/b" went as the path
    .../labels/a/b. A version "x" was a bare ValueError from int() in both clients, and 2.7 went as version 2."""
    from tfllm.serving.client import _model_path

    assert _model_path("m", label="can ary") == "/v1/models/m/labels/can%20ary"
    assert _model_path("m", label="a/b") == "/v1/models/m/labels/a%2Fb"
    assert _model_path("m", version="3") == _model_path("m", version=np.int64(3)) == "/v1/models/m/versions/3"
    port = _free_port()  # nothing listens there: each refusal comes before connecting
    for client, status in ((RestClient("127.0.0.1", port, timeout=2), 400),
                           (GrpcClient("127.0.0.1", port, timeout=2), "INVALID_ARGUMENT")):
        for version in ("x", 2.7, -1, True, "²"):
            with pytest.raises(ServingError) as info:
                client.predict("m", instances=["a"], version=version)
            assert info.value.status == status, info.value
            assert info.value.message == f"Version {str(version)!r} must be a non-negative integer.", info.value
        with pytest.raises(ServingError, match="out of range: versions are int64"):
            client.status("m", version=2**63)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("value", [[2**40], ["x"]], ids=["int32_overflow", "not_a_number"])
def test_values_the_signature_cannot_hold_are_a_serving_error(protocol, value, rest, grpc_client):
    # Both clients refuse the same input the same way (gRPC's converts before sending).
    client = rest if protocol == "rest" else grpc_client
    with pytest.raises(ServingError, match="max_new_tokens") as info:
        client.predict("shakespeare", {"prompt": ["HE"], "max_new_tokens": value})
    assert info.value.status == (400 if protocol == "rest" else "INVALID_ARGUMENT")


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_float_beyond_float32s_range_is_refused_not_infinity(protocol, server, rest, grpc_client):
    """A generator's "temperature": 1e39 is finite as JSON's float64 and +inf as the signature's float32: it
    was answered 200, sampled uniformly (docs/serving.md: infinity in float inputs is refused)."""
    client = rest if protocol == "rest" else grpc_client
    assert client.predict("temperature", {"temperature": [0.5, 3e38]}) == pytest.approx([0.5, 3e38])
    with pytest.raises(ServingError) as info:
        client.predict("temperature", {"temperature": [0.5, 1e39]})
    assert info.value.status == (400 if protocol == "rest" else "INVALID_ARGUMENT")
    assert info.value.message.startswith("Input 'temperature' holds 1e+39, beyond the float32 range (at most "
                                         "3.402823e+38 in magnitude)"), info.value.message
    if protocol == "rest":  # as a client of another language sends it, rows and all
        status, body = _raw(server["rest"], "POST", "/v1/models/temperature:predict",
                            b'{"instances": [{"temperature": -1e39}]}')
        assert status == 400 and b"holds -1e+39, beyond the float32 range" in body, body


@pytest.mark.parametrize("model,rows", [
    ("reviews", [{"text": "good"}, {"txt": "bad"}]),  # gRPC's client sent one row of two
    ("shakespeare", [{"prompt": "a", "max_new_tokens": 1}, {"prompt": "b"}]),
])
def test_rows_with_other_inputs_get_the_same_refusal_over_both_protocols(model, rows, rest, grpc_client):
    with pytest.raises(ServingError) as by_rest:
        rest.predict(model, instances=rows)
    with pytest.raises(ServingError) as by_grpc:
        grpc_client.predict(model, instances=rows)
    assert by_rest.value.message.startswith("Missing input(s)")
    assert by_grpc.value.message == by_rest.value.message
    assert (by_rest.value.status, by_grpc.value.status) == (400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("rows", ["a joyous, moving film", [], {"text": "good"}, ["good", {"text": "bad"}]],
                         ids=["bare_string", "empty", "one_dict", "mixed"])
def test_rows_that_are_not_a_list_of_rows_get_the_same_refusal_over_both_protocols(rows, rest, grpc_client):
    """GrpcClient sent a bare string as one row per character and answered 21 predictions."""
    with pytest.raises(ServingError) as by_rest:
        rest.predict("reviews", instances=rows)
    with pytest.raises(ServingError) as by_grpc:
        grpc_client.predict("reviews", instances=rows)
    assert by_grpc.value.message == by_rest.value.message
    assert (by_rest.value.status, by_grpc.value.status) == (400, "INVALID_ARGUMENT")
    # A tuple or an array of rows is a list of rows to both.
    for many in (("good", "bad"), np.array(["good", "bad"])):
        assert len(rest.predict("reviews", instances=many)) == len(grpc_client.predict("reviews", instances=many)) == 2


def test_columnar_inputs_may_hold_other_keys_as_in_tf_serving(server, rest, grpc_client, in_process):
    """TF Serving's json_tensor.cc reads each of the signature's inputs from a columnar "inputs"
    object and ignores its other keys (a client sending serving_default's options to a signature
    that takes fewer); it was a 400 here. Its rows and gRPC refuse them, and so do we."""
    probabilities, labels = _expected_reviews(in_process, REVIEWS[:2])
    body = {"inputs": {"text": REVIEWS[:2], "temperature": [0.5, 0.5], "note": {"b64": "eA=="}}}
    status, content = _raw(server["rest"], "POST", "/v1/models/reviews:predict", json.dumps(body).encode())
    assert status == 200, content
    _assert_reviews(json.loads(content)["outputs"], probabilities, labels)
    status, content = _raw(server["rest"], "POST", "/v1/models/shakespeare:predict", json.dumps(
        {"signature_name": "greedy", "inputs": {"prompt": ["To be"], "max_new_tokens": [2], "seed": [7]}}).encode())
    assert status == 200 and len(json.loads(content)["outputs"]) == 1, content
    # A missing input is still named, with the keys that did not match (a misspelt name).
    status, content = _raw(server["rest"], "POST", "/v1/models/reviews:predict", b'{"inputs": {"Text": ["a"]}}')
    assert status == 400 and "Missing input(s) ['text'] and unknown input(s) ['Text']" in json.loads(content)["error"]
    rows = [{"text": t, "note": "x"} for t in REVIEWS[:2]]
    for client in (rest, grpc_client):  # rows (REST) and gRPC's inputs: as TF Serving, refused
        with pytest.raises(ServingError, match=r"nknown input\(s\) \['note'\]"):
            client.predict("reviews", instances=rows)
    with pytest.raises(ServingError, match=r"nknown input\(s\) \['note'\]"):
        grpc_client.predict("reviews", {"text": REVIEWS[:2], "note": ["x", "y"]})


def test_classify_regress_and_multi_inference_are_refused_clearly(server, grpc_client):
    """Before: grpcio's UNIMPLEMENTED "Method not implemented!". As TF Serving for a predict
    signature: INVALID_ARGUMENT, and REST's :classify says the same."""
    import grpc
    from tensorflow_serving.apis import (classification_pb2, inference_pb2, prediction_service_pb2_grpc,
                                         regression_pb2)

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client._channel)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "reviews"
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "reviews"
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add(method_name="tensorflow/serving/classify").model_spec.name = "reviews"
    for method, call, request in [("Classify", stub.Classify, classify),
                                  ("Regress", stub.Regress, regress),
                                  ("MultiInference", stub.MultiInference, multi)]:
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert info.value.details().startswith(f"{method} is not supported: tfllm serve runs "
                                               "signatures through Predict only")
        assert "'tensorflow/serving/predict'" in info.value.details()
    status, content = _raw(server["rest"], "POST", "/v1/models/reviews:classify", b'{"examples": []}')
    assert status == 400
    assert json.loads(content)["error"] == info.value.details().replace("MultiInference", ":classify")
    classify.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(classify, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # A request without a model spec: TF Serving's INVALID_ARGUMENT "Missing ModelSpec" (was NOT_FOUND, model '').
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2

    for call, request in ((stub.Predict, predict_pb2.PredictRequest()),
                          (model_service_pb2_grpc.ModelServiceStub(grpc_client._channel).GetModelStatus,
                           get_model_status_pb2.GetModelStatusRequest())):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=10)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def _raw(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_burst_of_bad_requests_keeps_serving(server, rest, grpc_client, in_process):
    port = server["rest"]
    probabilities, labels = _expected_reviews(in_process, REVIEWS[:2])
    predict = "/v1/models/reviews:predict"
    bad = [
        ("POST", predict, b'{"instances": ["good"'),  # malformed JSON
        ("POST", predict, b'"just a string"'),
        ("POST", predict, b'{"signature_name": "serving_default"}'),  # no instances/inputs
        ("POST", predict, b'{"instances": ["a"], "inputs": ["b"]}'),
        ("POST", predict, b'{"instances": []}'),
        ("POST", predict, b'{"instances": [1, 2]}'),  # wrong dtype
        ("POST", predict, b'{"inputs": {"text": [["a"], ["b"]]}}'),  # wrong shape
        ("POST", predict, b'{"inputs": {"text": ["a", ["b"]]}}'),  # ragged
        ("POST", predict, b'{"inputs": {"txt": ["a"]}}'),  # unknown input name
        ("POST", predict, b'{"inputs": {"text": [{"b64": "***"}]}}'),  # bad base64
        ("POST", predict, b'{"instances": ["a"], "signature_name": "nope"}'),
        ("POST", predict, b'{"instances": ["a"], "signature_name": 3}'),
        ("POST", "/v1/models/nope:predict", b'{"instances": ["a"]}'),
        ("POST", "/v1/models/reviews/versions/9:predict", b'{"instances": ["a"]}'),
        ("POST", "/v1/models/reviews/versions/x:predict", b'{"instances": ["a"]}'),
        ("POST", "/v1/models/reviews/versions/%C2%B2:predict", b'{"instances": ["a"]}'),  # '²'
        ("POST", "/v1/models/reviews/labels/canary:predict", b'{"instances": ["a"]}'),
        ("POST", "/v1/models/reviews:classify", b'{"examples": []}'),
        ("POST", predict, b'{"instances": ["' + b"a" * MAX_BODY + b'"]}'),  # too big
        ("POST", "/v1/models/shakespeare:predict",
         b'{"inputs": {"prompt": ["x"], "max_new_tokens": [1.5]}}'),
        ("POST", "/v1/models/shakespeare:predict",
         b'{"inputs": {"prompt": ["x"], "max_new_tokens": [99999999999]}}'),
        ("POST", "/v1/models/shakespeare:predict",
         b'{"instances": [{"prompt": "", "max_new_tokens": 2}]}'),  # the model refuses
        ("POST", "/v1/models/shakespeare:predict",
         b'{"instances": [{"prompt": "x", "max_new_tokens": 200}]}'),
        ("GET", "/v1/models/nope", None),
        ("GET", "/v1/models/reviews/labels/nope/metadata", None),
        ("GET", "/v2/health", None),
        ("PUT", predict, b'{"instances": ["a"]}'),  # method not allowed
        ("DELETE", "/v1/models/reviews", None),
    ]
    good_body = json.dumps({"instances": REVIEWS[:2]}).encode()
    for method, path, body in bad:
        status, content = _raw(port, method, path, body, {"Content-Type": "application/json"})
        assert 400 <= status < 500, (path, body, status, content)
        error = json.loads(content)["error"]
        assert isinstance(error, str) and error, (path, body)
        status, content = _raw(port, "POST", predict, good_body)
        assert status == 200
        rows = json.loads(content)["predictions"]
        assert [r["label"] for r in rows] == labels
        np.testing.assert_allclose(np.float32([r["probabilities"] for r in rows]),
                                   probabilities, rtol=1e-6)

    # gRPC refusals, then a good call on the same channel.
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client._channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "reviews"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto([1, 2]))  # int, not string
    with pytest.raises(Exception, match="dtype int32 but the signature expects string"):
        stub.Predict(request, timeout=10)
    request.inputs["text"].CopyFrom(tf.make_tensor_proto([["a"]]))
    with pytest.raises(Exception, match="shape"):
        stub.Predict(request, timeout=10)
    _assert_reviews(grpc_client.predict("reviews", {"text": REVIEWS[:2]}), probabilities,
                    labels)
    assert server["proc"].poll() is None


def test_malformed_v1_requests_are_400_as_in_tf_serving(server):
    """TF Serving's http_rest_api_handler answers these 400 "Malformed request: METHOD PATH";
    before, 404 or 405. What does not exist stays a 404, as there."""
    for method, path in [
        ("GET", "/v1/models/reviews/versions/1/"), ("GET", "/v1/models/reviews/metadata/x"),
        ("GET", "/v1/models/reviews:predict"), ("POST", "/v1/models/reviews/metadata"),
        ("POST", "/v1/models/reviews"), ("POST", "/v1/models/reviews:explain"),
        ("PUT", "/v1/models/reviews:predict"), ("DELETE", "/v1/models/reviews"),
        ("POST", "/v1/models"), ("GET", "/v1/other"),
        ("TRACE", "/v1/models/reviews"), ("CONNECT", "/v1/models/reviews:predict"),  # 405 before
        ("PATCH", "/v1/other"), ("OPTIONS", "/v1/models/reviews"),
    ]:
        status, content = _raw(server["rest"], method, path, b"{}" if method != "GET" else None)
        assert status == 400, (method, path, status, content)
        assert json.loads(content)["error"].startswith(f"Malformed request: {method} {path};")
    for path in ["/v1/models/nope", "/v1/models/reviews/versions/9", "/v2/health"]:
        assert _raw(server["rest"], "GET", path)[0] == 404, path
    # A label TF Serving does not map is its InvalidArgument "Unrecognized servable version label".
    status, content = _raw(server["rest"], "GET", "/v1/models/reviews/labels/nope/metadata")
    assert status == 400 and "Unrecognized servable version label" in json.loads(content)["error"]


def test_oversized_body_is_413(server, grpc_client):
    status, content = _raw(server["rest"], "POST", "/v1/models/reviews:predict",
                           b"x" * (MAX_BODY + 1))
    assert status == 413
    assert "limit" in json.loads(content)["error"]
    # grpcio refuses an oversized message before any handler runs, in its own words; GrpcClient names the flag (it
    # said "SERVER: Received message larger than max (N vs. M)" alone).
    with pytest.raises(ServingError, match=r"^\[RESOURCE_EXHAUSTED\] SERVER: Received message larger than max "
                                           r"\(\d+ vs\. 100000\) \(the server's --max-body-bytes\)\.$"):
        grpc_client.predict("reviews", {"text": ["a good film"] * (MAX_BODY // 10)})


@pytest.mark.slow
def test_sample_requests_run_against_the_server(server, monkeypatch, capsys):
    import runpy

    serving = os.path.join(os.path.dirname(__file__), "..", "serving")
    if shutil.which("curl"):
        out = subprocess.run(["bash", os.path.join(serving, "requests.sh"),
                              f"127.0.0.1:{server['rest']}"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        assert '"predictions"' in out and '"model_version_status"' in out
        # Its labels are ones `tfllm serve savedmodels/` has (a canary needs a config); the fixture's toy generator
        # takes two inputs, so the full generation request is refused here, as a real export's is not.
        assert "version label" not in out and out.count('"error"') == out.count("Unknown input(s) ['seed'"), out
    # request.py as `python serving/request.py` runs it (runpy, as __main__, with its argv), in this process: its
    # gRPC client imports TensorFlow, seconds a fresh process would spend again. An exception out of it fails here.
    request_py = os.path.join(serving, "request.py")
    monkeypatch.setattr(sys, "argv", [request_py, "--host", "127.0.0.1", "--rest-port", str(server["rest"]),
                                      "--grpc-port", str(server["grpc"])])
    monkeypatch.delenv("TFLLM_AUTH_TOKEN", raising=False)
    capsys.readouterr()
    runpy.run_path(request_py, run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("ROMEO: la la") == 2 and out.count('"label"') >= 4


def test_new_versions_and_models_are_picked_up(server, savedmodels, rest, grpc_client,
                                               tmp_path_factory):
    staging = tmp_path_factory.mktemp("staging")
    # Exports are written elsewhere and renamed into place, so the server
    # never sees half a version.
    fixtures.save_classifier(str(staging / "2"), bias=5.0, warmup=False)
    before = rest.predict("hotswap", ["bad"])
    os.rename(staging / "2", savedmodels / "hotswap" / "2")
    fixtures.save_generator(str(staging / "new"))
    os.makedirs(savedmodels / "brandnew")
    os.rename(staging / "new", savedmodels / "brandnew" / "7")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        versions = [s["version"] for s in rest.status("hotswap")["model_version_status"]]
        try:
            rest.status("brandnew")
        except ServingError:
            versions = []
        if "2" in versions:
            break
        time.sleep(0.2)
    assert versions == ["2", "1"]
    after = rest.predict("hotswap", ["bad"])  # latest by default
    assert after["label"] == ["positive"] and before["label"] == ["negative"]
    assert rest.predict("hotswap", ["bad"], version=1) == before
    assert grpc_client.predict("hotswap", ["bad"], label="stable")["label"] == ["positive"]
    assert rest.predict("brandnew", {"prompt": ["x"], "max_new_tokens": [1]}) == ["x la"]

    # Pruning renames a version away first; the server then drops it.
    assert prune(str(savedmodels), "hotswap", keep=1) == [1]
    deadline = time.monotonic() + 10
    while rest.status("hotswap")["model_version_status"][-1] != {  # listed as END, as TF Serving lists it
            "version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert grpc_client.status("hotswap")["model_version_status"][-1]["state"] == "END"
    with pytest.raises(ServingError, match="version 1"):
        rest.predict("hotswap", ["bad"], version=1)


def test_client_timeouts_and_unreachable_server():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ServingError, match="timed out"):
            RestClient("127.0.0.1", port, timeout=0.3).status("reviews")
        with pytest.raises(ServingError, match="timed out"):
            GrpcClient("127.0.0.1", port, timeout=0.3).status("reviews")
        assert time.monotonic() - start < 5
    with pytest.raises(ServingError, match="Cannot reach"):
        RestClient("127.0.0.1", _free_port(), timeout=1).status("reviews")
    with pytest.raises(ServingError, match="Cannot reach") as refused:  # not read as a server shutting down
        GrpcClient("127.0.0.1", _free_port(), timeout=5).status("reviews")
    assert "shutting down" not in str(refused.value)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_big_batches_are_answered_right(protocol, rest, grpc_client, in_process):
    """A batch over the inline size limit (REST's threaded path) is answered right."""
    from tfllm.serving.server import INLINE_MAX_BODY_BYTES

    client = rest if protocol == "rest" else grpc_client
    texts = [f"good film number {i}" for i in range(INLINE_MAX_BODY_BYTES // 10)]
    probabilities, labels = _expected_reviews(in_process, texts)
    _assert_reviews(client.predict("reviews", {"text": texts}), probabilities, labels)


@pytest.mark.slow
@pytest.mark.parametrize("slow_protocol,fast_protocol",
                         [("rest", "rest"), ("grpc", "grpc"), ("grpc", "rest"), ("rest", "grpc")])
def test_slow_signatures_do_not_hold_up_fast_requests(slow_protocol, fast_protocol, server,
                                                      in_process):
    """A slow signature's call runs on a thread (REST's small, fast requests run inline
    on the event loop; gRPC's on its pool), so a fast request sent while it runs,
    over either protocol, is answered first."""
    from concurrent.futures import ThreadPoolExecutor

    def client(protocol):
        cls = RestClient if protocol == "rest" else GrpcClient
        return cls("127.0.0.1", server[protocol], timeout=10)

    slow_client, fast_client = client(slow_protocol), client(fast_protocol)
    slow_client.predict("busy", {"seconds": [0.2]})  # the server now knows this signature is slow
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(slow_client.predict, "busy", {"seconds": [2.0]})
        time.sleep(0.3)  # let it start
        fast = fast_client.predict("reviews", {"text": ["good"]})
        assert not slow.done()  # answered while the slow call was still running
        assert slow.result() == [2.0]
    assert fast["label"] == _expected_reviews(in_process, ["good"])[1]
    slow_client.close()
    fast_client.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_concurrent_requests_get_their_own_answers(protocol, rest, grpc_client, in_process):
    """Many clients at once (the threaded path under load, inline when alone): no mix-ups."""
    from concurrent.futures import ThreadPoolExecutor

    client = rest if protocol == "rest" else grpc_client
    texts = [f"{'good ' * (i % 3)}{'bad ' * (i % 4)}film" for i in range(64)]
    probabilities, labels = _expected_reviews(in_process, texts)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: client.predict("reviews", {"text": [t]}), texts))
    assert [a["label"][0] for a in answers] == labels
    np.testing.assert_allclose([a["probabilities"][0] for a in answers], probabilities, rtol=1e-5)


def test_list_models_and_prune(tmp_path, savedmodels):
    base = tmp_path / "savedmodels"
    shutil.copytree(savedmodels / "reviews" / "1", base / "reviews" / "1")
    shutil.copytree(savedmodels / "reviews" / "1", base / "reviews" / "3")
    os.makedirs(base / "reviews" / ".export-tmp-4")  # in-progress exports are ignored

    models = list_models(str(base))
    assert [m["name"] for m in models] == ["reviews"]
    versions = models[0]["versions"]
    assert [v["version"] for v in versions] == [3, 1]
    assert versions[0]["size_bytes"] > 1000
    serving_default = versions[0]["signatures"]["serving_default"]
    assert serving_default["inputs"] == {"text": {"dtype": "string", "shape": [None]}}
    assert serving_default["outputs"]["probabilities"] == {"dtype": "float32",
                                                           "shape": [None, 2]}
    assert set(versions[0]["signatures"]) == {"serving_default", "word_count"}

    assert prune(str(base), "reviews", keep=1) == [1]
    assert [v["version"] for v in list_models(str(base))[0]["versions"]] == [3]
    with pytest.raises(UserInputError, match="at least 1"):
        prune(str(base), "reviews", keep=0)
    with pytest.raises(UserInputError, match="No model 'nope'"):
        prune(str(base), "nope", keep=1)
    with pytest.raises(UserInputError, match="not a folder"):
        list_models(str(tmp_path / "missing"))


def test_models_command(tmp_path, savedmodels, capsys):
    from tfllm.cli import main

    base = tmp_path / "savedmodels"
    for v in ("1", "2"):
        shutil.copytree(savedmodels / "shakespeare" / "1", base / "shakespeare" / v)
    assert main(["models", str(base)]) == 0
    out = capsys.readouterr().out
    assert "shakespeare" in out and "version 2" in out
    assert "serving_default(max_new_tokens: int32[-1], prompt: string[-1]) -> text: string[-1]" in out
    assert main(["models", str(base), "--json", "--prune", "shakespeare", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("\n[") + 1:])
    assert [v["version"] for v in listed[0]["versions"]] == [2]
    assert main(["models", str(base), "--prune", "shakespeare"]) == 2
    assert main(["models", str(tmp_path / "missing")]) == 2
    assert main(["serve", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    # One model's folder, not the folder of models: the message names its parent.
    assert main(["models", str(base / "shakespeare")]) == 2
    assert f"one model's folder (versions 2); pass the folder that holds it, {str(base)!r}" in capsys.readouterr().err


def test_warmup_requests_round_trip(savedmodels, tmp_path):
    requests = read_warmup_requests(str(savedmodels / "reviews" / "1"))
    assert [tf.make_ndarray(r.inputs["text"]).tolist() for r in requests] == [
        [b"a good film"], [b"a bad film"]]
    assert all(r.model_spec.name == "reviews" for r in requests)
    assert all(r.model_spec.signature_name == "serving_default" for r in requests)

    export = tmp_path / "gen"
    shutil.copytree(savedmodels / "shakespeare" / "1", export)
    write_warmup_requests(str(export), "shakespeare", "serving_default",
                          {"prompt": ["To be", "ROMEO:"], "max_new_tokens": [4, 2]})
    requests = read_warmup_requests(str(export))
    assert len(requests) == 2
    # The signature's dtype, not Python's default int64.
    assert requests[1].inputs["max_new_tokens"].dtype == tf.int32.as_datatype_enum
    loaded = tf.saved_model.load(str(export))
    for r in requests:
        out = loaded.signatures["serving_default"](
            **{k: tf.constant(tf.make_ndarray(v)) for k, v in r.inputs.items()})
        assert out["text"].shape == [1]
    with pytest.raises(UserInputError, match="do not match"):
        write_warmup_requests(str(export), "shakespeare", "serving_default", {"prompt": ["x"]})
    with pytest.raises(UserInputError, match="not in"):
        write_warmup_requests(str(export), "shakespeare", "nope", {"prompt": ["x"]})


def test_serve_refuses_a_missing_folder(tmp_path):
    from tfllm.serving.server import serve

    with pytest.raises(UserInputError, match="does not exist"):
        serve(str(tmp_path / "missing"), port=_free_port(), grpc_port=None)
    with pytest.raises(UserInputError, match="must be >= 0"):
        serve(str(tmp_path), port=_free_port(), grpc_port=None, intra_op_threads=-1)


@pytest.mark.parametrize("case", ["missing", "malformed", "malformed_default"])
def test_serve_refuses_a_model_config_it_cannot_read(case, tmp_path):
    # As TF Serving: no start-up with a config that would silently drop policies and labels.
    # A process with a timeout: a server that starts anyway would otherwise run forever.
    from conftest import run_cli

    (tmp_path / "sm").mkdir()
    config = tmp_path / ("sm/models.config" if case == "malformed_default" else "models.config")
    if case != "missing":
        config.write_text("model_config_list { config { name: ")
    flags = [] if case == "malformed_default" else ["--model-config-file", str(config)]
    result = run_cli("serve", tmp_path / "sm", "--port", _free_port(), "--grpc-port", "0", *flags,
                     timeout=60)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("tfllm: error: Cannot read model config") and str(config) in err, err
    assert "--model-config-file" in err and "Traceback" not in result.stderr


@pytest.mark.parametrize("array", [
    np.arange(6, dtype="float32").reshape(2, 3), np.array([True, False]), np.array([[1], [2]], "int64"),
    np.array(["héllo", "你好"], object), np.array([b"\xff\x00", b""], object), np.zeros((0, 3), "float32"),
])
def test_tensor_protos_match_tensorflow_both_ways(array):
    import tensorflow as tf

    from tfllm.serving.tensors import from_tensor_proto, to_tensor_proto

    ours = to_tensor_proto(array)
    expected = tf.make_ndarray(tf.make_tensor_proto(array))
    np.testing.assert_array_equal(tf.make_ndarray(ours), expected)  # TensorFlow (and TF Serving) read ours
    np.testing.assert_array_equal(from_tensor_proto(tf.make_tensor_proto(array)), expected)  # we read TensorFlow's
    assert from_tensor_proto(ours).dtype == expected.dtype


def _busy_calls(ports, seconds):
    """Starts one busy REST call and one busy gRPC call; returns their threads and outcomes."""
    import threading

    outcomes = {}

    def call(protocol):
        client = (RestClient("127.0.0.1", ports["rest"], timeout=30) if protocol == "rest"
                  else GrpcClient("127.0.0.1", ports["grpc"], timeout=30))
        try:
            outcomes[protocol] = client.predict("busy", {"seconds": [seconds]})
        except ServingError as e:
            outcomes[protocol] = e

    threads = [threading.Thread(target=call, args=(p,)) for p in ("rest", "grpc")]
    for t in threads:
        t.start()
    time.sleep(0.7)  # both running
    return threads, outcomes


def _stoppable_server(savedmodels, tmp_path, grace):
    ports = {"rest": _free_port(), "grpc": _free_port()}
    args = [savedmodels, "--port", ports["rest"], "--grpc-port", ports["grpc"], "--poll-seconds", "0",
            "--shutdown-grace-seconds", grace]
    ready = lambda: RestClient("127.0.0.1", ports["rest"], timeout=2).status("busy")  # noqa: E731
    return ports, serving_process(args, ready, tmp_path / "server.log", timeout=60)


# `python -m ctrl_c_server ARGS`: the server as `python -m tfllm.serving.server` runs it, taking Ctrl-C as a terminal's
# process does (a pytest-xdist worker ignores SIGINT, and so do the processes it starts).
CTRL_C_SERVER = """
import runpy, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
runpy.run_module("tfllm.serving.server", run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_while_the_models_load_says_so(savedmodels, tmp_path):
    """Ctrl-C during start-up (a generator loads for 20-30 s) exited 130 with nothing logged, where docs/serving.md says
    the first SIGINT logs a line."""
    from tfllm.serving.warmup import write_warmup_requests

    version = shutil.copytree(savedmodels / "busy" / "1", tmp_path / "sm" / "busy" / "1")
    write_warmup_requests(str(version), "busy", "serving_default", {"seconds": [0.2] * 300})  # a minute of loading
    (tmp_path / "ctrl_c_server.py").write_text(CTRL_C_SERVER)
    log = tmp_path / "server.log"
    with serving_process([tmp_path / "sm", "--port", _free_port(), "--grpc-port", "0"],
                         lambda: "loading busy version 1 ..." in log.read_text(), log, cwd=tmp_path,
                         module="ctrl_c_server") as proc:
        proc.send_signal(2)
        assert proc.wait(30) == 130
    assert log.read_text().strip().endswith("SIGINT: stopped during start-up, before serving any request."), \
        log.read_text()


@pytest.mark.slow
def test_sigterm_refuses_new_work_on_both_protocols_and_finishes_what_is_in_flight(savedmodels, tmp_path):
    ports, serving = _stoppable_server(savedmodels, tmp_path, 20)
    with serving as proc:
        threads, outcomes = _busy_calls(ports, 3.0)
        proc.send_signal(15)
        start = time.monotonic()
        time.sleep(0.5)
        # Before, gRPC kept answering new calls until REST had finished.
        with pytest.raises(ServingError):
            GrpcClient("127.0.0.1", ports["grpc"], timeout=2).status("busy")
        with pytest.raises(ServingError):
            RestClient("127.0.0.1", ports["rest"], timeout=2).status("busy")
        for t in threads:
            t.join(30)
        proc.wait(20)
    # Both finished (before, gRPC's calls were cut off 1 s after REST was done).
    assert outcomes["rest"] == [3.0] and outcomes["grpc"] == [3.0], outcomes
    assert proc.returncode == -15 and time.monotonic() - start < 10
    log = (tmp_path / "server.log").read_text()
    assert "SIGTERM: shutting down" in log and "stopped: every request in flight was answered" in log, log


@pytest.mark.slow
@pytest.mark.parametrize("how", ["grace_runs_out", "second_signal"])
def test_in_flight_requests_are_cut_off_cleanly_and_promptly(how, savedmodels, tmp_path):
    ports, serving = _stoppable_server(savedmodels, tmp_path, 1 if how == "grace_runs_out" else 30)
    with serving as proc:
        threads, outcomes = _busy_calls(ports, 8.0)
        start = time.monotonic()
        proc.send_signal(2)
        if how == "second_signal":
            time.sleep(0.3)
            proc.send_signal(2)
        proc.wait(20)
        stopped = time.monotonic() - start
        for t in threads:
            t.join(30)
    # Before, a second Ctrl-C still waited ~10 s for the running calls; the grace ends at 1 s.
    assert stopped < 4, stopped
    assert proc.returncode == 130
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and "stopped: " in log and "were cut off" in log, log
    # No plain-text 500 for REST; the connection is closed.
    assert isinstance(outcomes["rest"], ServingError) and outcomes["rest"].status != 500, outcomes
    assert isinstance(outcomes["grpc"], ServingError), outcomes
    # gRPC cancelled the call itself, or the process exited under it (a second signal: "Cannot reach ...:
    # Stream removed (Socket closed (GOAWAY received; ... Server shutdown))"): the client says why.
    assert "was shutting down and cut this call off" in str(outcomes["grpc"]), outcomes
    assert "Cannot reach" not in str(outcomes["grpc"]), outcomes


@pytest.mark.slow
def test_a_tflite_export_beside_the_savedmodels_is_named_as_skipped_at_start(tmp_path):
    """`tfllm export --format tflite --name NAME` writes NAME/1/model.tflite into savedmodels/, and the server
    left it out without a word: the model was just not there. Now one line at start says so, and why."""
    base = tmp_path / "savedmodels"
    (base / "reviews-tflite" / "1").mkdir(parents=True)
    (base / "reviews-tflite" / "1" / "model.tflite").write_bytes(b"TFL3")
    log = tmp_path / "server.log"
    with serving_process([base, "--port", _free_port(), "--grpc-port", "0", "--poll-seconds", "0"],
                         lambda: "Serving" in log.read_text(), log, timeout=60):
        pass
    text = log.read_text()
    skipped = [line for line in text.splitlines() if "skipped reviews-tflite" in line]
    assert len(skipped) == 1, text
    assert "version(s) 1, TFLite" in skipped[0] and "serves SavedModels only" in skipped[0], skipped
    assert os.path.join("reviews-tflite", "1", "model.tflite") in skipped[0]
