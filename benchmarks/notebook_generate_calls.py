"""A notebook's `tfllm.generate` calls on one run, for `bench_commits.py --script`: a first call (load and
compile), then the calls a user tries next: other max_new_tokens, other prompts, two prompts at once.
Prints the seconds of each as one JSON line.

    python benchmarks/notebook_generate_calls.py RUN_DIR
"""

import json
import sys
import time

import tfllm

run_dir = sys.argv[1]
seconds = {}
for name, prompts, new_tokens in (("first", ["ROMEO:"], 8), *((f"max_new_tokens={n}", ["ROMEO:"], n) for n in (9, 10, 11, 12)),
                                  ("prompt RO", ["RO"], 9), ("prompt ROMEO: O", ["ROMEO: O"], 9),
                                  ("two prompts", ["ROMEO:", "ROMEO: O"], 9), ("three prompts", ["RO", "ROM", "ROMEO"], 9)):
    start = time.perf_counter()
    tfllm.generate(run_dir, prompts, max_new_tokens=new_tokens, seed=1)
    seconds[name] = round(time.perf_counter() - start, 3)
seconds["after_the_first"] = round(sum(v for k, v in seconds.items() if k != "first"), 3)
print(json.dumps(seconds))
