"""Latency and throughput of the local TF-Serving-compatible server.

    .venv/bin/pip install -e ".[serving]"   # the server and its clients: grpcio, tensorflow-serving-api, starlette, ...
    .venv/bin/python benchmarks/bench_serving.py [--model-dir savedmodels]
        [--model reviews] [--generate-model shakespeare]

Starts `python -m tfllm.serving.server` on free loopback ports and measures
classification (1 and 32 strings per request) and, with --generate-model,
generation (32 new tokens), over REST and gRPC with 1 and 16 concurrent
clients, next to the same signature called in this process. Each cell stops
after --requests requests or --seconds seconds, whichever comes first.
Without --model-dir it builds tiny stand-in models (tfllm.serving.fixtures).
--intra-op-threads (default 1, the server's default) applies to the server and
the in-process calls alike. The one-client cells run one transport at a time;
the "interleaved" section then alternates in-process, REST and gRPC calls
request by request, so all three meet the same machine state (this shared
machine drifts by ±20% between cells) and the overhead is a ratio from one
loop. Cells record the CPU time per request of the client and the server
process, and "empty_calls" times a model status request on each protocol (the
transport without a model call). Also measures the floor of a Python gRPC round
trip: an empty PredictionService in its own process, on the server's gRPC stack.
Prints JSON and saves it to benchmarks/results/serving.json.
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bench_vs_torch import save_results  # standard library only

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TEXTS = [
    "A warm, funny and good film with a great cast.",
    "Dull, bad and far too long.",
    "The plot wanders but the acting is good.",
    "One of the best films of the year.",
]
PROMPTS = ["ROMEO:", "To be, or not to be", "First Citizen:", "O, "]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(latencies, rows_per_request, wall):
    lat = np.asarray(latencies) * 1e3
    return {
        "requests": len(lat),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "requests_per_s": round(len(lat) / wall, 1),
        "rows_per_s": round(len(lat) * rows_per_request / wall, 1),
    }


def _process_cpu_seconds(pid):
    """User + system CPU time of another process (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cell(make_call, concurrency, max_requests, max_seconds, rows_per_request, warmup=10,
             server_pid=None):
    """Runs `make_call()()` from `concurrency` threads; returns latency figures.

    Also the CPU time per request that this (client) process spent and, given
    `server_pid`, that the server spent: where a round trip's time goes.
    """
    latencies, lock = [], threading.Lock()
    budget = [max_requests]
    deadline = [0.0]
    start_gate = threading.Barrier(concurrency + 1)

    def worker():
        call = make_call()  # one client per thread, as separate users would have
        for _ in range(warmup):
            call()
        start_gate.wait()
        mine = []
        while time.perf_counter() < deadline[0]:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            t = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + 3600  # set properly once all are warm
    start_gate.wait()
    began, client_cpu = time.perf_counter(), time.process_time()
    server_cpu = _process_cpu_seconds(server_pid) if server_pid else None
    deadline[0] = began + max_seconds
    for t in threads:
        t.join()
    summary = _summary(latencies, rows_per_request, time.perf_counter() - began)
    per_request = 1e3 / max(len(latencies), 1)
    summary["client_cpu_ms_per_request"] = round((time.process_time() - client_cpu) * per_request, 3)
    if server_cpu is not None:
        summary["server_cpu_ms_per_request"] = round(
            (_process_cpu_seconds(server_pid) - server_cpu) * per_request, 3)
    return summary


def run_interleaved(calls, max_requests, max_seconds, warmup=10):
    """Calls each of `calls` ({name: fn}) in turn, rotating the order every round; p50/p99 per name."""
    names = list(calls)
    latencies = {name: [] for name in names}
    for name in names:
        for _ in range(warmup):
            calls[name]()
    deadline = time.perf_counter() + max_seconds
    for i in range(max_requests):
        if time.perf_counter() > deadline:
            break
        for name in names[i % len(names):] + names[: i % len(names)]:
            t = time.perf_counter()
            calls[name]()
            latencies[name].append(time.perf_counter() - t)
    result = {name: {"p50_ms": round(float(np.percentile(lat, 50)) * 1000, 3),
                     "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 3),
                     "requests": len(lat)} for name, lat in latencies.items()}
    for name in names[1:]:
        result[name]["p50_vs_" + names[0]] = round(result[name]["p50_ms"] / result[names[0]]["p50_ms"], 2)
    return result


def _generation_inputs(signature, prompts, max_new_tokens):
    """Fills every input of a generation signature: prompts plus decoding options."""
    defaults = {"max_new_tokens": max_new_tokens, "temperature": 0.0, "top_k": 0,
                "top_p": 1.0, "seed": 0}
    inputs = {}
    for name, spec in signature.items():
        if spec.dtype.name == "string":
            inputs[name] = list(prompts)
            continue
        value = defaults.get(name, 0)
        inputs[name] = value if spec.shape.rank == 0 else [value] * len(prompts)
    return inputs


# A PredictionService that answers every request with an empty response, on the
# same stack as tfllm's server (grpcio's thread-pool server, the same
# GRPC_EXPERIMENTS): the floor of a Python grpcio round trip here, whatever the model.
_ECHO_SERVER = """
import sys
from concurrent import futures
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return predict_pb2.PredictResponse()
server = grpc.server(futures.ThreadPoolExecutor(16))
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""


def grpc_echo_floor(requests):
    """p50 of an empty Predict round trip (client stub -> echo server process)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfllm.serving.server import GRPC_EXPERIMENTS

    port = _free_port()
    env = dict(os.environ)
    env.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    server = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(port)], env=env)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        request = predict_pb2.PredictRequest()
        deadline = time.monotonic() + 60
        while True:
            try:
                stub.Predict(request, timeout=2)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return run_cell(lambda: (lambda: stub.Predict(request, timeout=10)), 1, requests, 10.0, 1, warmup=100)
    finally:
        server.terminate()
        server.wait(10)


def benchmark(args):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer ops

    from tfllm.serving import GrpcClient, RestClient
    from tfllm.serving.server import configure_threads

    # The in-process calls run with the server's thread settings: a like-for-like baseline.
    configure_threads(args.intra_op_threads)

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        from tfllm.serving import fixtures

        tmp = tempfile.TemporaryDirectory()
        model_dir = fixtures.build_savedmodels(tmp.name)
        args.generate_model = args.generate_model or "shakespeare"

    rest_port, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tfllm.serving.server", model_dir, "--port", str(rest_port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "5",
         "--intra-op-threads", str(args.intra_op_threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, TensorFlow {tf.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "model_dir": model_dir if args.model_dir else "tiny fixture models (tfllm.serving.fixtures)",
        "description": args.description,
        "bounds": {"requests_per_cell": args.requests, "seconds_per_cell": args.seconds},
        "intra_op_threads": args.intra_op_threads,
        "command": " ".join(["benchmarks/bench_serving.py"] + sys.argv[1:]),
        "cells": [],
        "interleaved": [],  # one client, in-process/REST/gRPC alternating call by call
    }
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                RestClient("127.0.0.1", rest_port, timeout=2).status(args.model)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.3)

        def latest(name):
            versions = [int(v) for v in os.listdir(os.path.join(model_dir, name)) if v.isdigit()]
            return tf.saved_model.load(os.path.join(model_dir, name, str(max(versions))))

        # Empty round trips to this server (model status, no model call): the
        # transport's own cost, next to which the predict cells can be read.
        status_clients = {"rest_status": RestClient("127.0.0.1", rest_port, timeout=60),
                          "grpc_status": GrpcClient("127.0.0.1", grpc_port, timeout=60)}
        results["empty_calls"] = {
            name: run_cell(lambda: (lambda: client.status(args.model)), 1, args.requests,
                           args.seconds, 1, server_pid=server.pid)
            for name, client in status_clients.items()}
        print(json.dumps({"empty_calls": results["empty_calls"]}), flush=True)

        tasks = []
        classifier = latest(args.model).signatures[args.signature]
        text_input = next(iter(classifier.structured_input_signature[1]))
        for batch in (1, 32):
            texts = [TEXTS[i % len(TEXTS)] for i in range(batch)]
            tasks.append(("classification", args.model, args.signature, classifier,
                          {text_input: texts}, batch))
        if args.generate_model:
            generator = latest(args.generate_model).signatures[args.generate_signature]
            inputs = _generation_inputs(generator.structured_input_signature[1], PROMPTS[:1],
                                        args.max_new_tokens)
            tasks.append(("generation", args.generate_model, args.generate_signature,
                          generator, inputs, 1))

        for task, model, sig_name, fn, inputs, batch in tasks:
            specs = fn.structured_input_signature[1]
            tensors = {k: tf.constant(v, specs[k].dtype) for k, v in inputs.items()}
            base = {}
            for concurrency in (1, 16):
                cell = run_cell(lambda: (lambda: fn(**tensors)), concurrency, args.requests,
                                args.seconds, batch)
                base[concurrency] = cell
                results["cells"].append({"task": task, "transport": "in_process",
                                         "batch": batch, "concurrency": concurrency, **cell})
                print(json.dumps(results["cells"][-1]), flush=True)
            for transport, cls, port in (("rest", RestClient, rest_port),
                                         ("grpc", GrpcClient, grpc_port)):
                def make_call():
                    client = cls("127.0.0.1", port, timeout=60)
                    return lambda: client.predict(model, inputs, signature_name=sig_name)

                for concurrency in (1, 16):
                    cell = run_cell(make_call, concurrency, args.requests, args.seconds, batch,
                                    server_pid=server.pid)
                    cell["p50_overhead_ms"] = round(
                        cell["p50_ms"] - base[concurrency]["p50_ms"], 3)
                    cell["p50_vs_in_process"] = round(
                        cell["p50_ms"] / base[concurrency]["p50_ms"], 2)
                    cell["throughput_vs_in_process"] = round(
                        cell["rows_per_s"] / base[concurrency]["rows_per_s"], 2)
                    results["cells"].append({"task": task, "transport": transport,
                                             "batch": batch, "concurrency": concurrency,
                                             **cell})
                    print(json.dumps(results["cells"][-1]), flush=True)
            rest, grpc_client = RestClient("127.0.0.1", rest_port, timeout=60), GrpcClient("127.0.0.1", grpc_port, timeout=60)
            results["interleaved"].append({"task": task, "batch": batch, **run_interleaved({
                "in_process": lambda: {k: v.numpy() for k, v in fn(**tensors).items()},
                "rest": lambda: rest.predict(model, inputs, signature_name=sig_name),
                "grpc": lambda: grpc_client.predict(model, inputs, signature_name=sig_name),
            }, args.requests, args.seconds * 3)})
            print(json.dumps(results["interleaved"][-1]), flush=True)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        if tmp is not None:
            tmp.cleanup()

    def find(transport, batch=1, concurrency=1, task="classification"):
        return next(c for c in results["cells"] if c["transport"] == transport
                    and c["batch"] == batch and c["concurrency"] == concurrency
                    and c["task"] == task)

    results["grpc_echo_floor"] = grpc_echo_floor(args.requests)
    print(json.dumps({"grpc_echo_floor": results["grpc_echo_floor"]}), flush=True)
    results["goals"] = {
        "classification_1_string_p50_ms": {t: find(t)["p50_ms"] for t in ("rest", "grpc")},
        "goal_p50_ms": 5.0,
        "overhead_p50_vs_in_process": {t: find(t)["p50_vs_in_process"]
                                       for t in ("rest", "grpc")},
        "overhead_p50_ms": {t: find(t)["p50_overhead_ms"] for t in ("rest", "grpc")},
        "overhead_p50_vs_in_process_interleaved": {
            t: results["interleaved"][0][t]["p50_vs_in_process"] for t in ("rest", "grpc")},
        "goal_overhead": 2.0,
    }
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="a savedmodels/ folder (default: "
                        "build tiny fixture models)")
    parser.add_argument("--model", default="reviews", help="the classifier's name")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--generate-model", default=None, help="a generator's name")
    parser.add_argument("--generate-signature", default="serving_default")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--intra-op-threads", type=int, default=1,
                        help="for the server and the in-process baseline alike (0 = TensorFlow's choice)")
    parser.add_argument("--requests", type=int, default=1000, help="per cell, at most")
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell, at most")
    parser.add_argument("--description", default="", help="what the models are, for the record")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "serving.json"))
    args = parser.parse_args()
    results = benchmark(args)
    save_results(args.out, results)


if __name__ == "__main__":
    main()
