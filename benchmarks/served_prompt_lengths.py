"""A served generator's requests with prompts of different lengths, for `bench_commits.py --script`: exports
RUN_DIR as a SavedModel (the worktree's code), loads it as a server does, and times one request per prompt
(batch 1, the same max_new_tokens, so the same buffer shape): the first compiles; the others should not.
Prints the seconds of each as one JSON line.

    python benchmarks/served_prompt_lengths.py RUN_DIR
"""

import json
import sys
import tempfile
import time

import tensorflow as tf
import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

from tfllm.cli import main

run_dir = sys.argv[1]
with tempfile.TemporaryDirectory() as base:
    assert main(["export", run_dir, "--name", "g", "--base-dir", base]) == 0
    serve = tf.saved_model.load(f"{base}/g/1").signatures["serving_default"]
    seconds = {}
    for prompt in ("ROMEO:", "RO", "ROMEO: O", "ROM", "ROMEO: O R", "R"):
        start = time.perf_counter()
        serve(prompt=tf.constant([prompt]), max_new_tokens=tf.constant([8]), temperature=tf.constant([0.8]),
              top_k=tf.constant([200]), top_p=tf.constant([1.0]), seed=tf.constant([1]))
        seconds[f"prompt {prompt!r}"] = round(time.perf_counter() - start, 3)
seconds["after_the_first"] = round(sum(list(seconds.values())[1:]), 3)
print(json.dumps(seconds))
