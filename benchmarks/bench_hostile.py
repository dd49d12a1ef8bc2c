"""The local server against a hostile client: bad requests, hostile shapes, many clients.

    .venv/bin/pip install -e ".[serving]"   # the server and its clients: grpcio, tensorflow-serving-api, starlette, ...
    .venv/bin/python benchmarks/bench_hostile.py [--good 1000] [--bad 1000]
        [--clients 16,64] [--requests-per-client 50]

Starts `python -m tfllm.serving.server` with its default limits on free
loopback ports, serving the tiny stand-in models (tfllm.serving.fixtures), and
measures, per protocol:

1. `--bad` bad requests interleaved with `--good` good ones: every bad one must
   be a 4xx / non-OK status, every good one the right answer (checked against
   the same signature called in this process); the server's RSS growth.
2. Hostile shapes (issue 18): a 53-byte gRPC request declaring a
   `[1048576, 16]` tensor with one broadcast value, a `[1048576]` string
   tensor, JSON nested 33 and 900 levels, a 15 MB single string, and eight of
   those at once while a small request is timed. For each: the answer, its
   time, and the server's peak RSS growth (sampled every 5 ms).
3. 16 and 64 concurrent clients sending good requests: errors, p50/p99.

Every phase is bounded by its request counts and per-request timeouts.
Prints JSON and saves it to benchmarks/results/hostile.json.
"""

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOOD_TEXTS = ["a good good film", "bad", "good but bad and bad"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Samples a process's RSS every 5 ms while in the `with` block."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        self.start = rss(self.pid)
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss(self.pid))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end = rss(self.pid)
        self.peak = max(self.peak, self.end)

    def figures(self):
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        return {"rss_before_mb": mb(self.start), "rss_peak_growth_mb": mb(self.peak - self.start),
                "rss_growth_after_mb": mb(self.end - self.start)}


def rest_call(port, method, path, body=None, timeout=60, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def tensor(dtype, shape, **values):
    from tensorflow.core.framework import tensor_pb2

    t = tensor_pb2.TensorProto(dtype=dtype)
    for d in shape:
        t.tensor_shape.dim.add(size=d)
    for field, v in values.items():
        getattr(t, field).extend(v)
    return t


def grpc_request(model, **inputs):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for k, v in inputs.items():
        request.inputs[k].CopyFrom(v)
    return request


def bad_rest_requests():
    p = "/v1/models/{}:predict"
    return [
        ("POST", p.format("reviews"), b'{"instances": ["good"'),
        ("POST", p.format("reviews"), b'{"instances": []}'),
        ("POST", p.format("reviews"), b'{"instances": [1, 2]}'),
        ("POST", p.format("reviews"), b'{"inputs": {"text": [["a"], ["b"]]}}'),
        ("POST", p.format("reviews"), b'{"inputs": {"txt": ["a"]}}'),
        ("POST", p.format("reviews"), b'{"instances": ' + b"[" * 33 + b'"a"' + b"]" * 33 + b"}"),
        ("POST", p.format("ids"), b'{"inputs": {"token_ids": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}}"),
        ("POST", p.format("ids"), b'{"inputs": {"token_ids": [[1, -400]]}}'),
        ("POST", p.format("ids"), b'{"inputs": {"token_ids": [[1, 400]]}}'),
        ("POST", p.format("reviews"), json.dumps({"instances": ["x"] * 2000}).encode()),
        ("POST", p.format("shakespeare"), b'{"inputs": {"prompt": ["a", "b"], "max_new_tokens": [1]}}'),
        ("POST", p.format("shakespeare"), b'{"instances": [{"prompt": "", "max_new_tokens": 2}]}'),
        ("POST", p.format("nope"), b'{"instances": ["a"]}'),
        ("POST", "/v1/models/reviews:classify", b'{"examples": []}'),
        ("GET", "/v1/models/reviews/versions/9", None),
        ("DELETE", "/v1/models/reviews", None),
    ]


def bad_grpc_requests():
    from tensorflow.core.framework import types_pb2 as t

    return [
        grpc_request("ids", token_ids=tensor(t.DT_INT32, [1048576, 16], int_val=[1])),
        grpc_request("reviews", text=tensor(t.DT_STRING, [1048576], string_val=[b"x" * 50])),
        grpc_request("ids", token_ids=tensor(t.DT_INT32, [2, -3], int_val=[1])),
        grpc_request("reviews", text=tensor(t.DT_STRING, [0])),
        grpc_request("reviews", text=tensor(t.DT_STRING, [1], string_val=[b"\xff\xfe"])),
        grpc_request("reviews", text=tensor(t.DT_INT32, [1], int_val=[1])),
        grpc_request("ids", token_ids=tensor(t.DT_INT32, [1, 2], int_val=[3, -400])),
        grpc_request("shakespeare", prompt=tensor(t.DT_STRING, [2], string_val=[b"a", b"b"]),
                     max_new_tokens=tensor(t.DT_INT32, [3], int_val=[1, 1, 1])),
        grpc_request("nope", text=tensor(t.DT_STRING, [1], string_val=[b"a"])),
    ]


def summary(latencies):
    lat = np.asarray(latencies) * 1e3
    return {"requests": int(lat.size), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2)}


def benchmark(args):
    import grpc
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  the fixtures' tokenizer op
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tfllm.serving import GrpcClient, RestClient, fixtures

    tmp = tempfile.TemporaryDirectory()
    model_dir = fixtures.build_savedmodels(tmp.name)
    fixtures.save_id_scorer(os.path.join(model_dir, "ids", "1"))
    expected = tf.saved_model.load(os.path.join(model_dir, "reviews", "1")).signatures[
        "serving_default"](text=tf.constant(GOOD_TEXTS))
    expected_labels = [b.decode() for b in expected["label"].numpy()]
    expected_probs = expected["probabilities"].numpy()

    rest_port, grpc_port = _free_port(), _free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [sys.executable, "-m", "tfllm.serving.server", model_dir, "--port", str(rest_port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "5"], stdout=log, stderr=subprocess.STDOUT)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                   f"TensorFlow {tf.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["benchmarks/bench_hostile.py"] + sys.argv[1:]),
        "server": "python -m tfllm.serving.server with its default limits (tfllm serve --help)",
        "models": "tiny fixture models (tfllm.serving.fixtures): reviews, shakespeare, ids",
    }
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                RestClient("127.0.0.1", rest_port, timeout=2).status("ids")
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.3)
        rest = RestClient("127.0.0.1", rest_port, timeout=60)
        grpc_client = GrpcClient("127.0.0.1", grpc_port, timeout=60)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_client._channel)

        def good(client):
            out = client.predict("reviews", {"text": GOOD_TEXTS})
            return out["label"] == expected_labels and np.allclose(out["probabilities"], expected_probs, rtol=1e-5)

        for _ in range(20):  # warm both paths
            good(rest), good(grpc_client)

        # 1. bad requests between good ones
        results["bad_and_good"] = {}
        for protocol in ("rest", "grpc"):
            bads = bad_rest_requests() if protocol == "rest" else bad_grpc_requests()
            client = rest if protocol == "rest" else grpc_client
            refused, wrong_status, good_ok, good_wrong, bad_lat, good_lat = 0, [], 0, 0, [], []
            conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
            with PeakRss(server.pid) as mem:
                for i in range(max(args.bad, args.good)):
                    if i < args.bad:
                        start = time.perf_counter()
                        if protocol == "rest":
                            method, path, body = bads[i % len(bads)]
                            try:
                                status, content = rest_call(rest_port, method, path, body, conn=conn)
                            except (http.client.HTTPException, OSError):
                                conn.close()
                                conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
                                status, content = rest_call(rest_port, method, path, body, conn=conn)
                            ok = 400 <= status < 500 and isinstance(json.loads(content).get("error"), str)
                            code = status
                        else:
                            try:
                                stub.Predict(bads[i % len(bads)], timeout=60)
                                ok, code = False, "OK"
                            except grpc.RpcError as e:
                                ok, code = e.code() != grpc.StatusCode.INTERNAL, e.code().name
                        bad_lat.append(time.perf_counter() - start)
                        if ok:
                            refused += 1
                        else:
                            wrong_status.append(str(code))
                    if i < args.good:
                        start = time.perf_counter()
                        if good(client):
                            good_ok += 1
                        else:
                            good_wrong += 1
                        good_lat.append(time.perf_counter() - start)
            conn.close()
            results["bad_and_good"][protocol] = {
                "bad_requests": args.bad, "bad_refused_4xx_or_non_ok": refused,
                "bad_other_answers": sorted(set(wrong_status)),
                "good_requests": args.good, "good_correct": good_ok, "good_wrong": good_wrong,
                "bad_latency": summary(bad_lat), "good_latency": summary(good_lat), **mem.figures()}

        # 2. hostile shapes, one at a time
        from tensorflow.core.framework import types_pb2 as t

        hostile = []

        def measure(name, fn):
            with PeakRss(server.pid) as mem:
                start = time.perf_counter()
                answer = fn()
                seconds = time.perf_counter() - start
            entry = {"case": name, "answer": answer, "ms": round(seconds * 1e3, 1), **mem.figures()}
            hostile.append(entry)
            print(json.dumps(entry), flush=True)

        def grpc_answer(request):
            def run():
                try:
                    stub.Predict(request, timeout=120)
                    return "OK"
                except grpc.RpcError as e:
                    return f"{e.code().name}: {e.details()[:120]}"
            return run

        def rest_answer(body, model="reviews"):
            def run():
                status, content = rest_call(rest_port, "POST", f"/v1/models/{model}:predict", body, timeout=120)
                return f"{status}: {content[:120].decode(errors='replace')}"
            return run

        request = grpc_request("ids", token_ids=tensor(t.DT_INT32, [1048576, 16], int_val=[1]))
        measure(f"gRPC int32 [1048576, 16], one broadcast int_val ({request.ByteSize()} bytes)",
                grpc_answer(request))
        request = grpc_request("reviews", text=tensor(t.DT_STRING, [1048576], string_val=[b"x" * 50]))
        measure(f"gRPC string [1048576], one broadcast string_val ({request.ByteSize()} bytes)",
                grpc_answer(request))
        measure("REST JSON nested 33 levels", rest_answer(
            b'{"instances": ' + b"[" * 33 + b'"a"' + b"]" * 33 + b"}"))
        measure("REST JSON numbers nested 900 levels", rest_answer(
            b'{"inputs": {"token_ids": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}}", "ids"))
        big = json.dumps({"instances": ["good " * 3_000_000]}).encode()  # 15 MB, under the body limit
        measure(f"REST one {len(big) / 1e6:.0f} MB string", rest_answer(big))

        def eight_big_and_a_small():
            with ThreadPoolExecutor(8) as pool:
                bigs = [pool.submit(rest_call, rest_port, "POST", "/v1/models/reviews:predict", big, 120)
                        for _ in range(8)]
                time.sleep(0.05)
                start = time.perf_counter()
                ok = good(RestClient("127.0.0.1", rest_port, timeout=60))
                small_ms = (time.perf_counter() - start) * 1e3
                statuses = sorted({f.result()[0] for f in bigs})
            return {"big_statuses": statuses, "small_request_ms": round(small_ms, 1), "small_correct": ok}

        measure(f"REST 8 concurrent {len(big) / 1e6:.0f} MB strings + 1 small request", eight_big_and_a_small)
        results["hostile"] = hostile

        # 3. many clients
        results["concurrency"] = []
        for protocol in ("rest", "grpc"):
            for clients in args.clients:
                cls = RestClient if protocol == "rest" else GrpcClient
                port = rest_port if protocol == "rest" else grpc_port
                pool_clients = [cls("127.0.0.1", port, timeout=60) for _ in range(min(clients, 16))]

                def one(i):
                    client = pool_clients[i % len(pool_clients)]
                    start = time.perf_counter()
                    try:
                        ok = good(client)
                    except Exception:  # noqa: BLE001 - counted as an error
                        ok = False
                    return ok, time.perf_counter() - start

                total = clients * args.requests_per_client
                with PeakRss(server.pid) as mem, ThreadPoolExecutor(clients) as pool:
                    start = time.perf_counter()
                    answers = list(pool.map(one, range(total)))
                    wall = time.perf_counter() - start
                cell = {"protocol": protocol, "clients": clients, "errors_or_wrong": sum(not ok for ok, _ in answers),
                        **summary([s for _, s in answers]), "requests_per_s": round(total / wall, 1),
                        **mem.figures()}
                results["concurrency"].append(cell)
                print(json.dumps(cell), flush=True)
                for c in pool_clients:
                    c.close()
        results["server_alive"] = server.poll() is None
        log.seek(0)
        text = log.read().decode(errors="replace")
        results["server_log_tracebacks"] = text.count("Traceback")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        tmp.cleanup()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=1000)
    parser.add_argument("--bad", type=int, default=1000)
    parser.add_argument("--clients", type=lambda v: [int(x) for x in v.split(",")], default=[16, 64])
    parser.add_argument("--requests-per-client", type=int, default=50)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "hostile.json"))
    args = parser.parse_args()
    results = benchmark(args)
    text = json.dumps(results, indent=2)
    print(text)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
