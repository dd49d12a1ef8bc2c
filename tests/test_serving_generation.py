"""The generation export's shapes are bucketed (issue 18 item 3) and its inputs checked (item 5).

XLA compiles one decoding program per (batch, width) shape; the export pads
batches to powers of two and widths to known buckets, so a request of a new
batch size inside a warmed bucket costs no compile, and padding never changes
a row's text.
"""

import shutil
import time

import pytest

pytest.importorskip("tensorflow_serving")

import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  the tokenizer's ops
from lm_utils import tiny_generator  # noqa: E402

from tfllm.export.causal_lm import (  # noqa: E402
    BATCH_BUCKETS,
    SERVING_SIGNATURE,
    WARMUP_BATCH_SIZES,
    WIDTH_BUCKETS,
    bucket,
    generation_archive,
)
from tfllm.serving.servable import load_servable  # noqa: E402
from tfllm.serving.warmup import read_warmup_requests, write_warmup_requests  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # The archive export_causal_lm writes, without a run directory (its layout is
    # another module's business).
    generator = tiny_generator()
    path = str(tmp_path_factory.mktemp("gen") / "1")
    generation_archive(generator.model, generator.tokenizer).write_out(path, verbose=False)
    # Loaded once, as the server loads it (load_servable: tf.saved_model.load, then each signature's concrete
    # function); the tests call serving_default's function, the greedy test reads the servable's signatures.
    servable = load_servable("gen", 1, path)
    return path, servable.signatures["serving_default"].fn, servable


def call(fn, prompts, max_new_tokens=5, seed=None, top_k=0, **overrides):
    n = len(prompts)
    args = dict(prompt=tf.constant(prompts), max_new_tokens=tf.fill([n], max_new_tokens),
                temperature=tf.fill([n], 1.0), top_k=tf.fill([n], top_k), top_p=tf.ones([n]),
                seed=tf.constant(seed if seed is not None else list(range(n)), tf.int32))
    args.update(overrides)
    return [t.decode() for t in fn(**args)["completion"].numpy()]


def test_buckets_are_bounded_and_hold_every_size():
    for size in (1, 2, 3, 5, 64, 65, 1000, 65536, 70000):
        got = int(bucket(tf.constant(size), BATCH_BUCKETS))
        assert got >= size and (got in BATCH_BUCKETS or got == size)
        assert got < 2 * size or size == 1
    assert [int(bucket(tf.constant(w), WIDTH_BUCKETS)) for w in (1, 128, 129, 1000, 1025, 3000)] == [
        128, 128, 256, 1024, 2048, 4096]
    assert len(BATCH_BUCKETS) * len(WIDTH_BUCKETS) < 500  # known, bounded programs


@pytest.mark.slow
def test_warmup_covers_the_common_batch_buckets(exported, tmp_path):
    # On a copy: warm-up requests in the shared export would be replayed (compiling every warm-up batch size,
    # seconds) by each later load_servable of it.
    path = str(shutil.copytree(exported[0], tmp_path / "1"))
    write_warmup_requests(path, "tiny", SERVING_SIGNATURE,
                          {"prompt": ["First"], "max_new_tokens": [4], "temperature": [0.8],
                           "top_k": [5], "top_p": [1.0], "seed": [0]},
                          batch_sizes=WARMUP_BATCH_SIZES)
    sizes = sorted(r.inputs["prompt"].tensor_shape.dim[0].size for r in read_warmup_requests(path))
    assert sizes == sorted(WARMUP_BATCH_SIZES) and max(sizes) > 1


@pytest.mark.slow
def test_padding_rows_does_not_change_any_row(exported):
    _, fn, _ = exported
    prompts = ["First", "hear me", "Citizen", "speak"]
    batch = call(fn, prompts[:3], seed=[7, 8, 9])  # 3 rows run as a batch of 4
    alone = [call(fn, [p], seed=[s])[0] for p, s in zip(prompts[:3], (7, 8, 9))]
    assert batch == alone


@pytest.mark.slow
def test_a_new_batch_size_in_a_compiled_bucket_costs_no_compile(exported):
    _, fn, _ = exported
    start = time.perf_counter()
    call(fn, ["First"] * 7, max_new_tokens=200)  # bucket (8, 256): compiled now
    first = time.perf_counter() - start
    start = time.perf_counter()
    call(fn, ["hear me", "speak"] * 3, max_new_tokens=190)  # 6 rows, same bucket
    second = time.perf_counter() - start
    assert second < first / 2, (first, second)


@pytest.mark.parametrize("overrides,message", [
    ({"top_k": tf.constant([-1], tf.int32)}, "top_k must be >= 0"),
    ({"seed": tf.constant([1, 2], tf.int32)}, "seed must have one value per prompt"),
    ({"temperature": tf.ones([3])}, "temperature must have one value"),
])
@pytest.mark.slow
def test_bad_options_are_refused_by_the_export(exported, overrides, message):
    _, fn, _ = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(fn, ["First"], **overrides)


@pytest.mark.slow
def test_a_request_without_the_sampling_inputs_is_pointed_at_the_greedy_signature(exported):
    """The README lists serving_default(prompt, max_new_tokens, temperature, top_k, top_p, seed), which reads
    as optional settings; a request of prompt and length alone was told only which inputs were missing."""
    from tfllm.serving.codec import check_names
    from tfllm.serving.limits import RequestError

    signatures = exported[2].signatures
    with pytest.raises(RequestError, match="every input is required; the 'greedy' signature takes only prompt"):
        check_names({"prompt": "First", "max_new_tokens": 5}, signatures["serving_default"])
    check_names({"prompt": "First", "max_new_tokens": 5}, signatures["greedy"])  # which takes them
    with pytest.raises(RequestError) as refused:  # a misspelt prompt is another mistake: no such hint
        check_names({"promt": "First", "max_new_tokens": 5, "temperature": 1, "top_k": 0, "top_p": 1, "seed": 0},
                    signatures["serving_default"])
    assert "greedy" not in str(refused.value)


@pytest.mark.slow
def test_a_refused_row_is_named(exported):
    """A row-format request with one row at fault was refused whole, naming neither the row missing an input
    ("Missing input(s) ['max_new_tokens']; ...") nor the one whose max_new_tokens was 0."""
    from tfllm.serving.codec import rows_to_columns
    from tfllm.serving.limits import RequestError

    signatures = exported[2].signatures
    with pytest.raises(RequestError, match=r"^Missing input\(s\) \['max_new_tokens'\] in instance 1; signature 'greedy'"):
        rows_to_columns([{"prompt": "First", "max_new_tokens": 3}, {"prompt": "First"}], signatures["greedy"])
    for overrides, message in (({"max_new_tokens": tf.constant([3, 0])}, "max_new_tokens must be >= 1 in instance 1"),
                               ({"prompt": tf.constant(["", "First"])}, "prompt must not be empty in instance 0"),
                               ({"top_k": tf.constant([-1, -2])}, "top_k must be >= 0 (0 turns it off) in instances 0, 1")):
        name = "greedy" if "top_k" not in overrides else "serving_default"
        inputs = {"prompt": tf.constant(["First", "hear me"]), "max_new_tokens": tf.constant([3, 3])}
        if name == "serving_default":
            inputs.update(temperature=tf.ones([2]), top_k=tf.zeros([2], tf.int32), top_p=tf.ones([2]),
                          seed=tf.zeros([2], tf.int32))
        with pytest.raises(RequestError) as refused:
            signatures[name].call({**inputs, **overrides})
        assert refused.value.message == message
