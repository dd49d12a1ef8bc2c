"""The same `tfllm` command at two commits, paired: whole-command seconds and the run's test accuracy.

    .venv/bin/python benchmarks/bench_commits.py OLD NEW --rounds 3
    .venv/bin/python benchmarks/bench_commits.py OLD NEW -- train --data rotten_tomatoes --preset tiny

Each commit is checked out into a temporary git worktree and run with this venv's Python
(`PYTHONPATH` puts the worktree's `tfllm` first), the two commits taking turns in every round
(OLD, NEW, NEW, OLD, ...), so load from other work on a shared machine falls on both. The command
(default: `train --data rotten_tomatoes`, the `default` recipe, as `make demo`) gets a fresh
`--run-dir` each time; with --as-given it runs as typed, for a command that is not a training:

    .venv/bin/python benchmarks/bench_commits.py OLD NEW --as-given -- export RUN --name m --format tflite --out DIR

With --script, each turn runs a Python script instead (a notebook's calls, say) with the worktree's
`tfllm`, and keeps the JSON object its last line prints (its own timings) beside the whole seconds:

    .venv/bin/python benchmarks/bench_commits.py OLD NEW --script benchmarks/notebook_generate_calls.py -- RUN

Writes benchmarks/results/commits.json (or --out): every run, the median seconds per commit and their
ratio (OLD / NEW: above 1 means NEW is faster), and the same for each command's CPU seconds (user + system), which
other work on a shared machine moves less than wall seconds.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from bench_vs_torch import cpu_info, save_results  # standard library only

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_COMMAND = ["train", "--data", "rotten_tomatoes"]


def run(worktree, command, run_dir=None, script=None):
    """Runs `tfllm COMMAND` (with `--run-dir RUN_DIR` unless it is None), or `python SCRIPT COMMAND`, from
    `worktree`'s code."""
    env = {**os.environ, "PYTHONPATH": worktree, "TF_CPP_MIN_LOG_LEVEL": "2"}
    program = [os.path.abspath(script)] if script else ["-m", "tfllm.cli"]
    start, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, *program, *command, *(["--run-dir", run_dir] if run_dir else [])],
                         env=env, cwd=worktree, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # The command's CPU time (user + system, its threads and children): less moved than wall seconds by other
    # work on a shared machine, though TensorFlow's pools count spinning threads too.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {"seconds": round(seconds, 2),
              "cpu_seconds": round(after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime, 2)}
    if out.returncode:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"{' '.join(command)} failed at {worktree}")
    if script:
        return {**timing, **json.loads(out.stdout.strip().splitlines()[-1])}
    if run_dir is None:
        return timing
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    return {**timing, "test_accuracy": metrics.get("test", {}).get("accuracy"), "epochs_run": metrics.get("epochs_run")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "commits.json"))
    parser.add_argument("--as-given", action="store_true", help="no --run-dir added, no metrics read (not a training)")
    parser.add_argument("--script", help="a Python script to run instead of a tfllm command (its arguments after --)")
    parser.add_argument("command", nargs="*", help="the tfllm command after --, without --run-dir")
    args = parser.parse_intermixed_args(argv)  # options may follow OLD NEW, as in the examples above
    command = args.command or ([] if args.script else DEFAULT_COMMAND)
    commits = {name: subprocess.check_output(["git", "rev-parse", "--short", name], cwd=ROOT, text=True).strip()
               for name in (args.old, args.new)}
    runs = {args.old: [], args.new: []}
    with tempfile.TemporaryDirectory() as work:
        trees = {}
        for name, commit in commits.items():
            trees[name] = os.path.join(work, commit)
            subprocess.run(["git", "worktree", "add", "--detach", "-q", trees[name], commit], cwd=ROOT, check=True)
        try:
            for r in range(args.rounds):
                order = [args.old, args.new] if r % 2 == 0 else [args.new, args.old]
                for name in order:
                    run_dir = None if args.as_given or args.script else os.path.join(work, f"run-{commits[name]}-{r}")
                    result = run(trees[name], command, run_dir, args.script)
                    runs[name].append(result)
                    print(f"round {r + 1} {commits[name]}: {result}", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT)
    medians = {name: statistics.median(x["seconds"] for x in rows) for name, rows in runs.items()}
    cpu = {name: statistics.median(x["cpu_seconds"] for x in rows) for name, rows in runs.items()}
    results = {
        "command": "python benchmarks/bench_commits.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "tfllm_command": [args.script] if args.script else ["tfllm", *command], "cpu": cpu_info(), "date": time.strftime("%Y-%m-%d"),
        "commits": commits, "runs": {commits[name]: rows for name, rows in runs.items()},
        "median_seconds": {commits[name]: m for name, m in medians.items()},
        "speed_ratio_new_over_old": round(medians[args.old] / medians[args.new], 3),
        "speed_ratio_per_round": [round(a["seconds"] / b["seconds"], 3) for a, b in zip(runs[args.old], runs[args.new])],
        "median_cpu_seconds": {commits[name]: m for name, m in cpu.items()},
        "cpu_ratio_new_over_old": round(cpu[args.old] / cpu[args.new], 3),
        "cpu_ratio_per_round": [round(a["cpu_seconds"] / b["cpu_seconds"], 3) for a, b in zip(runs[args.old], runs[args.new])],
    }
    save_results(args.out, results)


if __name__ == "__main__":
    main()
