"""grpcio's EventEngine I/O layer on or off, side by side, against `tfllm serve`.

    .venv/bin/python benchmarks/bench_grpc_io.py [--model-dir savedmodels] [--model reviews]

Starts two servers on the same models: one as shipped (it sets
GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener unless the variable
is set) and one with GRPC_EXPERIMENTS="" (grpcio's default, EventEngine on). The
client in this process keeps grpcio's default. Rounds alternate between the two,
each timing a model status call (no model) and a one-string predict, so both
meet the same machine state. Prints JSON and saves it to
benchmarks/results/grpc_io.json. Without --model-dir it builds tiny stand-in
models (tfllm.serving.fixtures).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import _free_port  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _start(model_dir, model, grpc_experiments):
    from tfllm.serving import GrpcClient, RestClient

    env = dict(os.environ)
    env.pop("GRPC_EXPERIMENTS", None)
    if grpc_experiments is not None:
        env["GRPC_EXPERIMENTS"] = grpc_experiments
    rest_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfllm.serving.server", model_dir, "--port", str(rest_port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            RestClient("127.0.0.1", rest_port, timeout=2).status(model)
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)
    return proc, GrpcClient("127.0.0.1", grpc_port, timeout=60)


def _p50_ms(call, requests):
    for _ in range(50):
        call()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--model", default="reviews")
    parser.add_argument("--requests", type=int, default=1500, help="per call kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "grpc_io.json"))
    args = parser.parse_args()

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        from tfllm.serving import fixtures

        tmp = tempfile.TemporaryDirectory()
        model_dir = fixtures.build_savedmodels(tmp.name)
    variants = {"as shipped (EventEngine off)": None, "grpcio default (EventEngine on)": ""}
    servers = {}
    try:
        for name, value in variants.items():
            servers[name] = _start(model_dir, args.model, value)
        rounds = []
        for _ in range(args.rounds):
            rounds.append({name: {
                "status_p50_ms": round(_p50_ms(lambda: client.status(args.model), args.requests), 3),
                "predict_1_string_p50_ms": round(_p50_ms(
                    lambda: client.predict(args.model, {"text": ["a good film"]}), args.requests), 3),
            } for name, (_, client) in servers.items()})
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        if tmp is not None:
            tmp.cleanup()

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model_dir": model_dir if args.model_dir else "tiny fixture models (tfllm.serving.fixtures)",
        "command": " ".join(["benchmarks/bench_grpc_io.py"] + sys.argv[1:]),
        "rounds": rounds,
    }
    text = json.dumps(results, indent=2)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
