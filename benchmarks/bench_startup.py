"""Start-up of a `tfllm` command on the TensorFlow path: with and without the Keras extras skipped.

`import keras` imports scikit-learn, matplotlib and IPython when they are installed (and KerasHub's
kagglehub imports IPython), for features no `tfllm` command uses; the `tfllm` command skips them
(`tfllm._env.skip_keras_extras`). This times the same commands both ways, alternating in every round:
the console script `tfllm ...` (skipped), and `tfllm.cli.main([...])` from `python -c`, which leaves
Keras as it is (what a notebook gets). Both start the same interpreter and give the same output.

    .venv/bin/python benchmarks/bench_startup.py   # -> benchmarks/results/startup.json
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
from pathlib import Path

TFLLM = str(Path(sys.executable).with_name("tfllm"))
IN_NOTEBOOK_MODE = "import sys; from tfllm.cli import main; sys.exit(main(sys.argv[1:]))"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def timed(argv, env):
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, out.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args()

    env = dict(os.environ, TFLLM_NUMPY_CLASSIFICATION="0")  # the TensorFlow path, which imports Keras
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "tiny")
        subprocess.run([TFLLM, "train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "400",
                        "--epochs", "1", "--run-dir", run_dir], capture_output=True, check=True)
        commands = {
            "predict one text": ["predict", run_dir, "a joyous, moving film"],
            "evaluate": ["evaluate", run_dir],
        }
        seconds = {name: {"skipped": [], "kept": []} for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                skipped, out_skipped = timed([TFLLM, *command], env)
                kept, out_kept = timed([sys.executable, "-c", IN_NOTEBOOK_MODE, *command], env)
                assert out_skipped == out_kept, (out_skipped, out_kept)
                seconds[name]["skipped"].append(round(skipped, 3))
                seconds[name]["kept"].append(round(kept, 3))

    results = {
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "commands": {},
    }
    for name, both in seconds.items():
        skipped, kept = statistics.median(both["skipped"]), statistics.median(both["kept"])
        results["commands"][name] = {
            "seconds": both,
            "median_skipped_s": round(skipped, 3),
            "median_kept_s": round(kept, 3),
            "saved_s": round(kept - skipped, 3),
            "speed_ratio": round(kept / skipped, 3),
        }
        print(f"{name}: {skipped:.2f} s with the extras skipped, {kept:.2f} s with them imported "
              f"({kept / skipped:.2f}x)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
