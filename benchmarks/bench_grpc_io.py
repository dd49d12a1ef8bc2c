"""grpcio's EventEngine I/O layer on or off, server and client, side by side.

    .venv/bin/pip install -e ".[serving]"   # the server and its clients: grpcio, tensorflow-serving-api, starlette, ...
    .venv/bin/python benchmarks/bench_grpc_io.py [--model-dir savedmodels] [--model reviews]

Starts two `tfllm serve` servers on the same models: one as shipped (it sets
GRPC_EXPERIMENTS=-event_engine_client,-event_engine_listener unless the variable
is set) and one with GRPC_EXPERIMENTS="" (grpcio's default, EventEngine on).
grpc reads the variable once, when it is imported, so every client runs in a
fresh process of its own: one with grpcio's default and one started with the
same flags. Each round runs all four server/client pairs, each timing a model
status call (no model) and a one-string predict with `tfllm.serving.GrpcClient`,
so all meet the same machine state. Prints JSON and saves it to
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
FLAGS = "-event_engine_client,-event_engine_listener"  # tfllm.serving.server.GRPC_EXPERIMENTS


def _env(grpc_experiments):
    env = dict(os.environ)
    env.pop("GRPC_EXPERIMENTS", None)
    if grpc_experiments is not None:
        env["GRPC_EXPERIMENTS"] = grpc_experiments
    return env


def _start(model_dir, model, grpc_experiments):
    from tfllm.serving import RestClient

    rest_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfllm.serving.server", model_dir, "--port", str(rest_port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(grpc_experiments))
    deadline = time.monotonic() + 120
    while True:
        try:
            RestClient("127.0.0.1", rest_port, timeout=2).status(model)
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)
    return proc, grpc_port


def _p50_ms(call, requests):
    for _ in range(50):
        call()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _client(grpc_port, model, requests):
    """The client side, in its own process: p50s of a status call and a predict."""
    from tfllm.serving import GrpcClient

    client = GrpcClient("127.0.0.1", grpc_port, timeout=60)
    print(json.dumps({
        "status_p50_ms": round(_p50_ms(lambda: client.status(model), requests), 3),
        "predict_1_string_p50_ms": round(_p50_ms(
            lambda: client.predict(model, {"text": ["a good film"]}), requests), 3),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--model", default="reviews")
    parser.add_argument("--requests", type=int, default=1500, help="per call kind, pair and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "grpc_io.json"))
    parser.add_argument("--client", type=int, metavar="GRPC_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return _client(args.client, args.model, args.requests)

    tmp = None
    model_dir = args.model_dir
    if model_dir is None:
        from tfllm.serving import fixtures

        tmp = tempfile.TemporaryDirectory()
        model_dir = fixtures.build_savedmodels(tmp.name)
    servers = {"server as shipped (EventEngine off)": None, "server on grpcio default": ""}
    clients = {"client on grpcio default": None, f"client with GRPC_EXPERIMENTS={FLAGS}": FLAGS}
    ports, procs = {}, []
    try:
        for name, value in servers.items():
            proc, ports[name] = _start(model_dir, args.model, value)
            procs.append(proc)
        rounds = []
        for _ in range(args.rounds):
            cells = {}
            for server in servers:
                for client, value in clients.items():
                    out = subprocess.run(
                        [sys.executable, __file__, "--client", str(ports[server]), "--model",
                         args.model, "--requests", str(args.requests)],
                        env=_env(value), capture_output=True, text=True, check=True)
                    cells[f"{server}, {client}"] = json.loads(out.stdout.splitlines()[-1])
            rounds.append(cells)
            print(json.dumps(cells), flush=True)
    finally:
        for proc in procs:
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
