"""Where the test suite's CPU time goes: `make test` under py-spy, its samples summed by kind of work.

    pip install -e ".[bench]"            # py-spy
    python benchmarks/profile_tests.py   # runs the suite as `make test` does, sampled (about 30 min on 2 cores)
    python benchmarks/profile_tests.py --raw spy.txt   # only sums an earlier `py-spy record --format raw` file

py-spy samples every process of the run (both xdist workers and every subprocess a test starts: CLI
commands, servers, notebook kernels) 50 times a second while it is on a CPU. Each sample's Python
stack decides its kind, first match wins: building a TensorFlow graph (`func_graph_from_py_func`:
tracing `train_step`, decoding loops, preprocessors, exports), importing modules (split into the
pytest workers and the subprocesses), running TensorFlow ops and functions (`TFE_Py_Execute`, which
includes the first call's graph optimisation and XLA compilation), TFLite conversion, SavedModel
writing and loading, matplotlib, and the rest (tokenizer learning, tf.data, Python of tfllm's and the
tests'). Prints a table and writes benchmarks/results/test_suite_profile.json.
"""

import argparse
import collections
import os
import platform
import re
import subprocess
import sys
import time

from bench_vs_torch import save_results  # standard library only

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RATE = 50  # samples a second

# (kind, test on a sample's stack), first match wins.
KINDS = (
    ("graph tracing", lambda s: "func_graph_from_py_func" in s),
    ("imports", lambda s: "_find_and_load" in s),
    ("TensorFlow execution (incl. XLA compiles)", lambda s: "TFE_Py_Execute" in s or "quick_execute" in s),
    ("TFLite conversion", lambda s: "lite/python" in s),
    ("SavedModel save/load", lambda s: "saved_model/save.py" in s or "saved_model/load.py" in s),
    ("matplotlib", lambda s: "matplotlib" in s),
)
_PROCESS = re.compile(r"process (\d+):")
_TEST = re.compile(r"(test_\w+|\w+) \((test_\w+|conftest)\.py:\d+\)")


def samples(raw_file):
    """(stack, count) of a py-spy raw file. A subprocess started with `python -c "..."` puts its script's
    newlines into its stacks' first frame, so lines that do not end in a count continue the previous one."""
    pending = ""
    with open(raw_file, encoding="utf-8", errors="replace") as f:
        for line in f:
            pending += line.rstrip("\n")
            stack, _, count = pending.rpartition(" ")
            if count.isdigit():
                yield stack, int(count)
                pending = ""


def summarise(raw_file):
    kinds, tests, processes = collections.Counter(), collections.Counter(), set()
    total = 0
    for stack, count in samples(raw_file):
        total += count
        pids = _PROCESS.findall(stack)
        processes.update(pids)
        # pytest's own process, then its xdist workers: deeper than that is a process a test started.
        in_subprocess = len(pids) > 2
        for kind, test in KINDS:
            if test(stack):
                break
        else:
            kind = "other Python (tokenizer learning, tf.data, tfllm's and the tests' code)"
        if kind == "imports":
            kind += " in subprocesses" if in_subprocess else " in the pytest workers"
        kinds[kind] += count
        test = _TEST.search(stack)
        if test:
            tests[f"{test.group(2)}::{test.group(1)}"] += count
    seconds = lambda n: round(n / RATE, 1)  # noqa: E731
    return {
        "cpu_seconds_sampled": seconds(total),
        "processes": len(processes),
        "by_kind": {kind: {"cpu_seconds": seconds(n), "share": round(n / total, 3)} for kind, n in kinds.most_common()},
        # In-process work only: a subprocess's stack does not name the test that started it.
        "tests_by_cpu_seconds": {name: seconds(n) for name, n in tests.most_common(25)},
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", help="sum this py-spy raw file instead of running the suite")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "test_suite_profile.json"))
    args = parser.parse_args()
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count()}}
    raw = args.raw
    if raw is None:
        raw = os.path.join(ROOT, "build", "test_suite.pyspy.txt")
        os.makedirs(os.path.dirname(raw), exist_ok=True)
        # The Makefile's pytest line (`make test`), under py-spy.
        command = ["py-spy", "record", "--subprocesses", "--nonblocking", "--rate", str(RATE), "--format", "raw",
                   "-o", raw, "--", sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile",
                   "--no-loadscope-reorder", "tests"]
        start = time.monotonic()
        status = subprocess.run(command, cwd=ROOT).returncode
        result["suite"] = {"command": " ".join(command[command.index("--") + 1:]), "exit_status": status,
                           "wall_seconds": round(time.monotonic() - start, 1)}
    else:
        result["suite"] = {"raw": os.path.abspath(raw)}
    result.update(summarise(raw))
    for kind, figures in result["by_kind"].items():
        print(f"{figures['cpu_seconds']:8.0f} s  {100 * figures['share']:5.1f}%  {kind}")
    print(f"{result['cpu_seconds_sampled']:8.0f} s of CPU sampled in {result['processes']} processes")
    save_results(args.out, result, shown=f"wrote {args.out}")


if __name__ == "__main__":
    main()
