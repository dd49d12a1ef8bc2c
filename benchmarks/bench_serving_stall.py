"""A classifier's latency while long generations run beside it, by `--inter-op-threads`.

    .venv/bin/python benchmarks/bench_serving_stall.py SM [--settings 0 4 8 64] [--rounds 2] [--scale 0.5]

SM is a folder with `models.config` serving a classifier `reviews` and a text generator `shakespeare`
(`tfllm export` of each). For each round, each setting in turn (so all meet the same machine state) starts
`tfllm serve SM --inter-op-threads N`, times a lone 4-row, 64-token generation (the median of three after
one warm-up call), then sends one classification every 50 ms while 8 generations of mixed batch sizes and
lengths (most at widths not compiled yet) run at once, as the tour's repro/block.py did; `--scale` shortens
them. Prints JSON and saves it to benchmarks/results/serving_stall.json.

Why: the served decoding loop is one XLA op, which holds one of TensorFlow's inter-op threads for the whole
generation (compile and run). Once as many generations are in flight as there are inter-op threads, every
other model's request waits for one of them to end.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serving import _free_port  # noqa: E402
from bench_vs_torch import save_results  # noqa: E402  (standard library only)

from tfllm.serving import RestClient  # noqa: E402

JOBS = ((3, 1024), (9, 700), (17, 400), (33, 1000), (64, 1024), (5, 129), (12, 900), (100, 300))


def _generate(port, batch, tokens):
    client = RestClient("127.0.0.1", port, timeout=900)
    client.predict("shakespeare", {"prompt": ["ROMEO:"] * batch, "max_new_tokens": [tokens] * batch,
                                   "temperature": [0.8] * batch, "top_k": [20] * batch, "top_p": [1.0] * batch,
                                   "seed": list(range(batch))})


def _wait_ready(port, proc):
    client = RestClient("127.0.0.1", port, timeout=2)
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if all(v["state"] == "AVAILABLE" for m in ("reviews", "shakespeare")
                   for v in client.status(m)["model_version_status"]):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not load both models in 150 s")


def _one(sm, threads, scale):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tfllm", "serve", sm, "--model-config-file",
                             os.path.join(sm, "models.config"), "--port", str(port), "--grpc-port", "0",
                             "--inter-op-threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, proc)
        lone = []
        for _ in range(4):
            t = time.perf_counter()
            _generate(port, 4, 64)
            lone.append(time.perf_counter() - t)
        latencies, stop = [], threading.Event()

        def probe():
            client = RestClient("127.0.0.1", port, timeout=900)
            while not stop.is_set():
                t = time.perf_counter()
                client.predict("reviews", instances=["a joyous, moving film"])
                latencies.append(time.perf_counter() - t)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        time.sleep(2)
        alone = list(latencies)
        start = time.perf_counter()
        with ThreadPoolExecutor(len(JOBS)) as pool:
            list(pool.map(lambda job: _generate(port, job[0], max(1, int(job[1] * scale))), JOBS))
        wall = time.perf_counter() - start
        stop.set()
        prober.join()
        during = sorted(latencies[len(alone):])
        return {"inter_op_threads": threads, "lone_generation_s": round(statistics.median(lone[1:]), 3),
                "classifier_alone_p50_ms": round(1000 * statistics.median(alone), 1),
                "classifier_during_n": len(during),
                "classifier_during_p50_ms": round(1000 * statistics.median(during), 1),
                "classifier_during_p99_ms": round(1000 * during[int(0.99 * len(during))], 1),
                "classifier_during_max_ms": round(1000 * during[-1], 1),
                "generations_wall_s": round(wall, 1), "load_average_after": os.getloadavg()[0]}
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sm")
    parser.add_argument("--settings", type=int, nargs="+", default=[0, 4, 8, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scale", type=float, default=0.5, help="times each generation's max_new_tokens")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "serving_stall.json"))
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for threads in args.settings:
            runs.append(_one(args.sm, threads, args.scale))
            print(json.dumps(runs[-1]), flush=True)
    result = {"cpus": os.cpu_count(), "platform": platform.platform(), "scale": args.scale, "jobs": JOBS,
              "note": "a shared 2-core machine (other work ran beside it); alternate rounds, compare within one",
              "runs": runs}
    save_results(args.out, result)


if __name__ == "__main__":
    main()
