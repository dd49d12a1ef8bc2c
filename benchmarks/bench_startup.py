"""Start-up and exit of a `tfllm` command on the TensorFlow path, with and without what the command saves.

`import keras` imports scikit-learn, matplotlib and IPython when they are installed (and KerasHub's
kagglehub imports IPython), for features no `tfllm` command uses; the `tfllm` command skips them
(`tfllm._env.skip_keras_extras`). With TensorFlow loaded, Python's exit takes a second of teardown
after the work is done; the command ends without it (`tfllm.cli._exit_without_teardown`). This times
the same commands both ways, alternating in every round: the console script `tfllm ...` (both), and
`tfllm.cli.main([...])` from `python -c` (neither: what a notebook's import and a plain exit get).
Both start the same interpreter and give the same output.

    .venv/bin/python benchmarks/bench_startup.py   # -> benchmarks/results/startup.json
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_vs_torch import cpu_info, save_results  # the machine, as the paired benchmark records it (standard library only)

TFLLM = str(Path(sys.executable).with_name("tfllm"))
PLAIN = "import sys; from tfllm.cli import main; sys.exit(main(sys.argv[1:]))"


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
        seconds = {name: {"command": [], "plain": []} for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                fast, out_fast = timed([TFLLM, *command], env)
                plain, out_plain = timed([sys.executable, "-c", PLAIN, *command], env)
                assert out_fast == out_plain, (out_fast, out_plain)
                seconds[name]["command"].append(round(fast, 3))
                seconds[name]["plain"].append(round(plain, 3))

    results = {
        "machine": {**cpu_info(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "commands": {},
    }
    for name, both in seconds.items():
        fast, plain = statistics.median(both["command"]), statistics.median(both["plain"])
        results["commands"][name] = {
            "seconds": both,
            "median_command_s": round(fast, 3),
            "median_plain_s": round(plain, 3),
            "saved_s": round(plain - fast, 3),
            "speed_ratio": round(plain / fast, 3),
        }
        print(f"{name}: {fast:.2f} s as the tfllm command, {plain:.2f} s through main([...]) ({plain / fast:.2f}x)")
    save_results(args.out, results, shown=f"-> {args.out}")


if __name__ == "__main__":
    main()
