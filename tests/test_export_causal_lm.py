"""Generation SavedModel: reload in a fresh process, outputs equal in-process `generate()`."""

import json
import os
import subprocess
import sys

import pytest
from lm_utils import tiny_generator, write_run_dir

from tfllm.export.causal_lm import export_causal_lm

PROMPTS = ["First", "hear me speak, Citizen"]

RELOAD = """
import json, sys
import tensorflow_text  # registers the tokenizer's ops before loading
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
f = m.signatures["serving_default"]
prompts = json.loads(sys.argv[2])
n = len(prompts)
def run(temperature, top_k, seed):
    out = f(prompt=tf.constant(prompts), max_new_tokens=tf.constant([40, 25]), temperature=tf.fill([n], temperature),
            top_k=tf.fill([n], top_k), top_p=tf.ones([n]), seed=tf.constant(seed, tf.int32))
    return [t.decode() for t in out["completion"].numpy()], [t.decode() for t in out["text"].numpy()]
greedy, texts = run(0.0, 0, [0, 0])
sampled, _ = run(1.0, 10, [7, 8])
g = m.signatures["greedy"](prompt=tf.constant(prompts[:1]), max_new_tokens=tf.constant([40]))
errors = []
for bad in ([""], ["First\u20ac"], ["First", "Fir\u20ac", "hear", "\u20ac\u00a7"]):
    k = len(bad)
    try:
        f(prompt=tf.constant(bad), max_new_tokens=tf.fill([k], 5), temperature=tf.zeros([k]), top_k=tf.zeros([k], tf.int32),
          top_p=tf.ones([k]), seed=tf.zeros([k], tf.int32))
    except tf.errors.InvalidArgumentError as e:
        errors.append(e.message)
print(json.dumps({"greedy": greedy, "texts": texts, "sampled": sampled,
                  "greedy_sig": g["completion"].numpy()[0].decode(), "errors": errors}))
"""


@pytest.fixture(scope="module")
def character_export(tmp_path_factory):
    """`(generator, base_dir, path)`: the tiny character generator (a window of 8, window_keep None) written as a
    run and exported once as "tiny_lm", for the tests below that only read the SavedModel."""
    base = tmp_path_factory.mktemp("character_export")
    generator = tiny_generator(jit_compile=True)
    run_dir = write_run_dir(generator, base / "run")
    return generator, str(base / "savedmodels"), export_causal_lm(run_dir, "tiny_lm", base_dir=str(base / "savedmodels"))


@pytest.fixture(scope="module")
def wordpiece_export(tmp_path_factory):
    """`(generator, path)`: the tiny WordPiece generator (Chinese characters and English words) written as a run
    and exported once, for the tests below that only read the SavedModel."""
    from lm_utils import tiny_wordpiece_generator

    base = tmp_path_factory.mktemp("wordpiece_export")
    generator = tiny_wordpiece_generator(jit_compile=True)
    run_dir = write_run_dir(generator, base / "run")
    return generator, export_causal_lm(run_dir, "wp", base_dir=str(base / "savedmodels"))


@pytest.mark.slow
def test_export_reloads_in_fresh_process_with_identical_text(character_export):
    generator, base_dir, path = character_export
    assert path == os.path.join(base_dir, "tiny_lm", "1")
    assert os.path.exists(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))

    result = subprocess.run([sys.executable, "-c", RELOAD, path, json.dumps(PROMPTS)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])

    greedy = [generator.generate([p], n, sampler="greedy")[0] for p, n in zip(PROMPTS, (40, 25))]
    assert served["greedy"] == greedy
    assert served["texts"] == [p + g for p, g in zip(PROMPTS, greedy)]
    assert served["greedy_sig"] == greedy[0]
    # Seeded sampling matches too, row by row (the export was asked for seeds 7 and 8,
    # 40 and 25 new tokens): each served row is what generate() gives that prompt alone
    # with that row's seed and length.
    sample = dict(sampler="top_k", top_k=10, temperature=1.0)
    alone = [generator.generate([p], n, seed=s, **sample)[0] for p, n, s in zip(PROMPTS, (40, 25), (7, 8))]
    assert served["sampled"][0] == alone[0]
    assert served["sampled"][1] == alone[1]
    # And row i of an in-process batch samples with seed + i, as the export's seeds assume.
    batch = generator.generate(PROMPTS, 40, seed=7, **sample)
    assert batch == [alone[0], generator.generate([PROMPTS[1]], 40, seed=8, **sample)[0]]
    assert any("empty" in e for e in served["errors"])
    # The unseen character and its row are named, and a served request's error says just that
    # (tfllm.serving.codec). Before, a batch was refused without naming which of its prompts.
    from tfllm.serving.codec import clean_tf_message

    errors = [clean_tf_message(e) for e in served["errors"]]
    assert errors[1] == "prompt contains characters the tokenizer has no token for in instance 0: \u20ac", errors
    assert errors[2] == "prompt contains characters the tokenizer has no token for in instances 1, 3: \u20ac, \u00a7", errors


@pytest.mark.slow
def test_a_wordpiece_exports_text_has_no_space_between_chinese_characters(wordpiece_export):
    """The SavedModel's signatures join Chinese characters as `Generator.generate` does (they printed 中 国 和)."""
    import re

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, before loading)

    from tfllm.config import CJK_CLASS, CJK_SPACE

    generator, path = wordpiece_export
    loaded = tf.saved_model.load(path)
    prompts = ["中国", "hello world"]
    out = loaded.signatures["serving_default"](
        prompt=tf.constant(prompts), max_new_tokens=tf.constant([30, 30]), temperature=tf.fill([2], 1.5),
        top_k=tf.zeros([2], tf.int32), top_p=tf.ones([2]), seed=tf.constant([3, 4]))
    completions = [t.decode() for t in out["completion"].numpy()]
    assert completions == [generator.generate([p], 30, sampler="random", temperature=1.5, seed=s)[0]
                           for p, s in zip(prompts, (3, 4))]
    assert [t.decode() for t in out["text"].numpy()] == [p + c for p, c in zip(prompts, completions)]
    assert all(re.search(f"{CJK_CLASS}{{2}}", c) and not re.search(CJK_SPACE, c) for c in completions)
    greedy = loaded.signatures["greedy"](prompt=tf.constant(["中国"]), max_new_tokens=tf.constant([30]))
    assert greedy["completion"].numpy()[0].decode() == generator.generate(["中国"], 30, sampler="greedy")[0]


@pytest.mark.slow
def test_a_wordpiece_exports_completion_carries_the_space_before_its_first_word(wordpiece_export):
    """REST gave {"text": "the kinguke", "completion": "uke"}: the SavedModel's completion now has the space
    before a first whole word, as `Generator.generate`, and text = prompt + completion is the whole text."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, before loading)

    generator, path = wordpiece_export
    loaded = tf.saved_model.load(path)
    prompts = ["hello"] * 6 + ["中国", "hello "]
    n = len(prompts)
    out = loaded.signatures["serving_default"](
        prompt=tf.constant(prompts), max_new_tokens=tf.fill([n], 12), temperature=tf.fill([n], 1.5),
        top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]), seed=tf.range(7, 7 + n))
    completions = [t.decode() for t in out["completion"].numpy()]
    assert completions == generator.generate(prompts, 12, sampler="random", temperature=1.5, seed=7)
    assert any(c.startswith(" ") for c in completions[:6]) and not completions[-1].startswith(" ")
    assert [t.decode() for t in out["text"].numpy()] == [p + c for p, c in zip(prompts, completions)]
    for prompt in ("hello", "中国", "hello world ,"):
        greedy = loaded.signatures["greedy"](prompt=tf.constant([prompt]), max_new_tokens=tf.constant([8]))
        text = greedy["text"].numpy()[0].decode()
        new = generator.greedy_ids(generator.encode(prompt), 8)
        assert text == generator.decode(generator.encode(prompt).tolist() + new)
        assert greedy["completion"].numpy()[0].decode() == generator.generate([prompt], 8, sampler="greedy")[0]


@pytest.mark.slow
def test_a_prompt_many_windows_long_is_continued_from_its_last_window(character_export):
    """A 60,000-character prompt took 8 s for 4 new tokens (a buffer and a compiled program as wide as the
    prompt); the SavedModel now decodes only the tokens the model reads, and `text` is still the whole prompt."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, before loading)
    from lm_utils import TEXT

    generator, _, path = character_export  # a window of 8 tokens (characters), window_keep None
    loaded = tf.saved_model.load(path)
    prompts = [TEXT * 40, "First", TEXT * 40]  # about 300 windows, beside a short prompt
    n = len(prompts)
    out = loaded.signatures["serving_default"](
        prompt=tf.constant(prompts), max_new_tokens=tf.fill([n], 6), temperature=tf.constant([0.0, 1.0, 1.0]),
        top_k=tf.zeros([n], tf.int32), top_p=tf.ones([n]), seed=tf.constant([0, 4, 5]))
    completions = [t.decode() for t in out["completion"].numpy()]
    assert [t.decode() for t in out["text"].numpy()] == [p + c for p, c in zip(prompts, completions)]
    # Greedy, the model reads the last window only: the same completion as that window alone.
    assert completions[0] == generator.generate([prompts[0][-8:]], 6, sampler="greedy")[0]
    # Sampled, the noise is drawn where the whole prompt puts it: as in-process, row by row.
    assert completions[2] == generator.generate([prompts[2]], 6, sampler="random", temperature=1.0, seed=5)[0]
    assert completions[1] == generator.generate(["First"], 6, sampler="random", temperature=1.0, seed=4)[0]
