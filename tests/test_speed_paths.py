"""The fast paths of issue 19 (no timing here: speed figures live in benchmarks/bench_vs_torch.py).

* `tfllm.generation.generate(run_dir, ...)` keeps one loaded model per run
  directory: a second call neither reloads nor recompiles.
* Decoding keeps its state out of the model (issue 17): `Generator.generate`
  leaves the model's sampler, `generate_function` and `jit_compile` as they
  were, and a later `model.generate()` works.
"""

import os
import re
import time

import numpy as np
import pytest
import tensorflow as tf

from lm_utils import TEXT, tiny_generator
from tfllm import generation


@pytest.mark.slow
def test_generate_reuses_the_loaded_model_of_a_run_dir(tmp_path, monkeypatch):
    loads = []

    def fake_load(run_dir, jit_compile=True):
        loads.append(run_dir)
        return tiny_generator()

    monkeypatch.setattr(generation, "load_generator", fake_load)
    monkeypatch.setattr(generation, "_LOADED", {})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.weights.h5").write_bytes(b"weights")

    first = generation.generate(str(run_dir), ["First"], max_new_tokens=4, sampler="greedy")
    generator = generation.cached_generator(str(run_dir))
    functions = dict(generator._compiled)
    second = generation.generate(str(run_dir) + "/", ["First"], max_new_tokens=4, sampler="greedy")
    assert len(loads) == 1, "the second call loaded the run again"
    assert second == first
    assert generation.cached_generator(str(run_dir)) is generator
    assert generator._compiled == functions, "the second call compiled a new decoding function"

    # A retrained run (its files changed) is loaded again.
    later = time.time() + 5
    os.utime(run_dir / "model.weights.h5", (later, later))
    generation.generate(str(run_dir), ["First"], max_new_tokens=4, sampler="greedy")
    assert len(loads) == 2


def _symbolic(value):
    return isinstance(value, tf.Tensor) and not hasattr(value, "numpy")


@pytest.mark.slow
def test_generation_keeps_decoding_state_out_of_the_model():
    generator = tiny_generator(sequence_length=8)
    model = generator.model
    model.compile(sampler="greedy")
    own_sampler, own_jit = model.sampler, model.jit_compile
    assert model.generate_function is None

    generator.generate(["First"], max_new_tokens=12, sampler="top_k", top_k=5, seed=1)  # slides past the window
    generator.generate(["First"], max_new_tokens=3, sampler="beam", num_beams=2)
    assert model.sampler is own_sampler
    assert model.jit_compile == own_jit
    assert model.generate_function is None
    assert not any(_symbolic(v) for v in vars(model.sampler).values()), "graph tensors left on the model's sampler"

    # KerasHub's own generate() still works, with the model's own (greedy) sampler.
    ids = np.asarray(generator.encode("First"))
    width = len(ids) + 5
    token_ids = np.zeros((1, width), "int32")
    token_ids[0, : len(ids)] = ids
    mask = (np.arange(width) < len(ids)).astype("int32")[None]
    out = model.generate({"token_ids": token_ids, "padding_mask": mask}, stop_token_ids=None)
    assert np.asarray(out["token_ids"]).shape == (1, width)
    np.testing.assert_array_equal(np.asarray(out["token_ids"])[0, : len(ids)], ids)
    assert model.sampler is own_sampler
    assert set(TEXT)  # the tokenizer's characters (keeps the import meaningful for readers)


def test_fit_traces_the_train_step_once():
    """The optimizer is built before `fit`: otherwise Keras builds it inside the first trace of the train
    step and TensorFlow, seeing new variables, traces the whole step a second time."""
    import keras

    from tfllm.training.classifier import compile_classifier

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    compile_classifier(model, {"learning_rate": 1e-3, "jit_compile": False})
    traces, keras_step = [], model.train_step
    model.train_step = lambda data: (traces.append(1), keras_step(data))[1]  # runs once per trace
    model.fit(np.zeros((10, 4)), np.ones((10, 1)), batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1


def test_a_few_evaluation_batches_run_the_test_step_eagerly_and_many_trace_it():
    """`common.eager_evaluation`: up to EAGER_EVALUATION_BATCHES the test step runs eagerly (a Python
    side effect in it runs once a batch), with the traced step's loss; beyond that, and after the
    block, Keras traces it (the side effect runs once a trace)."""
    import keras

    from tfllm.training import common
    from tfllm.training.classifier import compile_classifier

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    compile_classifier(model, {"learning_rate": 1e-3, "jit_compile": False})
    steps, keras_step = [], model.test_step
    model.test_step = lambda data: (steps.append(1), keras_step(data))[1]
    x, y = np.random.default_rng(0).normal(size=(12, 4)), np.ones((12, 1))
    strategy = tf.distribute.get_strategy()
    with common.eager_evaluation(model, 3, strategy):
        eager = model.evaluate(x, y, batch_size=4, verbose=0)
        eager_again = model.evaluate(x, y, batch_size=4, verbose=0)
    assert len(steps) == 6  # every batch, both times
    steps.clear()
    traced = model.evaluate(x, y, batch_size=4, verbose=0)  # after the block: traced again
    with common.eager_evaluation(model, common.EAGER_EVALUATION_BATCHES + 1, strategy):
        model.evaluate(x, y, batch_size=4, verbose=0)
    assert len(steps) == 1  # traced once, and that trace serves the second block too: not once a batch
    np.testing.assert_allclose([eager, eager_again], [traced, traced], rtol=1e-6)


@pytest.mark.slow  # 4-5 s in quiet suite runs (stops 74, 75)
def test_another_max_new_tokens_prompt_or_batch_size_reuses_the_compiled_program():
    """`tfllm.generate` compiled a new XLA program (~5 s) for each new max_new_tokens, prompt length or number
    of prompts: the buffer is now padded to the window (a text that fits it) or the export's buckets beyond, so
    one program serves each.

    Also (it was test_decoding_is_traced_once_for_every_batch_size, which built a generator of its own): one
    decoding function serves every batch size, traced at most twice (a text within the window; then one past
    it), whether the batch grows (1 -> 3 prompts) or shrinks again (3 -> 1)."""
    generator = tiny_generator()
    first = generator.generate(["First"], max_new_tokens=3, sampler="greedy")
    ((key, decode),) = generator._compiled.items()
    shapes = []

    def recording(inputs):  # the real decoding function, noting the shape XLA compiles for
        shapes.append(inputs["token_ids"].shape)
        return decode(inputs)

    recording.get_concrete_function = decode.get_concrete_function
    generator._compiled[key] = recording
    longer = generator.generate(["First"], max_new_tokens=4, sampler="greedy")
    generator.generate(["Firs"], max_new_tokens=5, sampler="greedy")
    # Batches are padded to powers of two, as the export pads them: 3 and 4 prompts share one program.
    generator.generate(["First", "speak", "hear "], max_new_tokens=3, sampler="greedy")
    generator.generate(["Befor"], max_new_tokens=3, sampler="greedy")  # one prompt again, after three
    assert list(generator._compiled) == [key]  # one greedy decoding function for every batch size
    assert decode.experimental_get_tracing_count() <= 2  # a text within the window; then one past it
    generator.generate(["First", "speak", "hear ", "Befo"], max_new_tokens=2, sampler="top_k", seed=3)
    assert len(shapes) == 5 and shapes[0] == shapes[1] and shapes[2] == shapes[4], shapes  # [3]: "Befor"
    assert longer[0].startswith(first[0])  # the padding decodes nothing more
    assert decode.experimental_get_tracing_count() <= 2  # a text within the window; then one past it


NEW_PROMPT_LENGTH_OPTIONS = ["sampler='top_k', seed=1", "sampler='beam', num_beams=3"]


@pytest.fixture(scope="module")
def xla_logs_of_three_prompt_lengths():
    """One fresh process (TensorFlow's own log of XLA compilations, `device_compiler`'s VLOG, is set up as
    TensorFlow loads) for both samplers: for each of NEW_PROMPT_LENGTH_OPTIONS, a marker line, then a new
    tiny generator (jit_compile=True) decodes prompts of three lengths. Returns (the process's exit status,
    stderr, {options: the stderr written after that options' marker, until the next})."""
    import subprocess
    import sys

    code = ("import sys; from lm_utils import tiny_generator\n"
            + "".join(f"print('--- options: ' + {options!r}, file=sys.stderr, flush=True)\n"
                      "g = tiny_generator(jit_compile=True)\n"
                      f"[g.generate([p], max_new_tokens=3, {options}) for p in ('First', 'Firs', 'Fi')]\n"
                      for options in NEW_PROMPT_LENGTH_OPTIONS))
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_compiler=1",
               PYTHONPATH=os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    parts = out.stderr.split("--- options: ")[1:]
    sections = {part.split("\n", 1)[0]: part for part in parts}
    return out.returncode, out.stderr, sections


@pytest.mark.slow
@pytest.mark.parametrize("options", NEW_PROMPT_LENGTH_OPTIONS)
def test_a_new_prompt_length_does_not_compile_the_decoding_program_again(options, xla_logs_of_three_prompt_lengths):
    """XLA took the padding mask as a compile-time constant (the sampler read `prompt[:, index]`, a strided slice
    whose bounds XLA needs at compile time, and the start index comes from the mask): every new prompt length
    compiled the whole program again at the same shapes, seconds each in a notebook (a buffer within the window).
    Counted from TensorFlow's own log of XLA compilations (`device_compiler`'s VLOG), in a fresh process (one for
    both samplers: this sampler's part of its log, `xla_logs_of_three_prompt_lengths`)."""
    returncode, stderr, sections = xla_logs_of_three_prompt_lengths
    assert returncode == 0, stderr[-2000:]
    assert options in sections, stderr[-3000:]
    assert sections[options].count("Compilation of XLA executable time") == 1, sections[options][-3000:]


def _fast(generator):
    from tfllm import fast_generation

    fast = fast_generation.from_keras(generator.model, generator.tokenizer)
    assert fast is not None
    return fast


def test_numpy_decoding_is_not_used_for_a_mixed_precision_model():
    """Its weights are float32, but it computes in bfloat16: the float32 NumPy pass samples other text
    (its training samples in TensorBoard were not what the model generates)."""
    import keras

    from tfllm import fast_generation

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        generator = tiny_generator()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert fast_generation.from_keras(generator.model, generator.tokenizer) is None
    assert _fast(tiny_generator()) is not None  # the float32 model still takes it


@pytest.mark.slow
def test_training_samples_of_a_mixed_precision_model_are_not_compiled_each_epoch(tmp_path):
    """Without the NumPy pass, the samples decode in TensorFlow: not with XLA, which compiled the sliding
    loop again for every epoch's weights (epochs ever slower, memory growing until LLVM failed)."""
    import keras

    from tfllm.training.causal_lm import TextSamples

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        generator = tiny_generator(sequence_length=8, jit_compile=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    generator.model.compile(optimizer="adam", jit_compile=True)  # as training compiles it; the callback logs at the optimizer's step
    samples = TextSamples(str(tmp_path), generator.tokenizer, "First", max_new_tokens=12)
    samples.set_model(generator.model)
    for epoch in range(2):
        samples.on_epoch_end(epoch)
        variable = generator.model.trainable_variables[-1]
        variable.assign(variable * 1.01)  # as an epoch of training does
    assert samples._generator.jit_compile is False
    (decode,) = samples._generator._compiled.values()
    assert decode.experimental_get_tracing_count() == 1  # one trace serves every epoch


@pytest.mark.slow
def test_numpy_decoding_gives_the_compiled_loops_text():
    """tfllm.fast_generation (no TensorFlow) decodes as Generator does: same sampler noise, same window slides."""
    import pytest

    from tfllm import fast_generation
    from tfllm.config import SAMPLING_DEFAULTS

    for keep in (None, 5):
        generator = tiny_generator(sequence_length=8)
        generator.model.window_keep = keep  # before anything is traced
        fast = _fast(generator)
        for sampler, kwargs in [("greedy", {}), ("top_k", {"top_k": 5, "temperature": 0.8}),
                                ("top_p", {"top_p": 0.9}), ("random", {"temperature": 1.3})]:
            # Generator.generate's default temperature (0.8) where none is given: top_p's 1.0 here decoded at 0.8
            # there, and the texts agreed only while the untrained model's near-uniform tokens drew alike.
            options = fast_generation.sampler_options(sampler, kwargs.get("temperature", SAMPLING_DEFAULTS["temperature"]),
                                                      kwargs.get("top_k", 50), kwargs.get("top_p", 0.9))
            seed = (lambda s: {}) if sampler == "greedy" else (lambda s: {"seed": s})  # greedy refuses a seed
            expected = generator.generate(["First"], max_new_tokens=30, sampler=sampler, **seed(3), **kwargs)[0]
            assert fast.generate("First", 30, *options, 3) == expected, (keep, sampler)
            chunks, fast_chunks = [], []
            expected = generator.generate(["Fi"], max_new_tokens=80, sampler=sampler, **seed(4), stop="ee",
                                          stream_callback=lambda i, t: chunks.append(t), **kwargs)[0]
            text = fast.generate("Fi", 80, *options, 4, stops=["ee"], stream_callback=lambda i, t: fast_chunks.append(t))
            assert (text, fast_chunks) == (expected, chunks), (keep, sampler)
            if keep is None:  # the window always the last 8 tokens: streamed = one call, past the first chunk too
                streamed = fast.generate("Fi", 200, *options, 4, stream_callback=lambda i, t: None)
                assert streamed == fast.generate("Fi", 200, *options, 4), sampler
    with pytest.raises(AssertionError):  # a prompt with an unseen character is left to the TensorFlow path
        assert fast.encode("First \u2603") is not None


@pytest.mark.slow
def test_cli_generate_runs_without_tensorflow(tmp_path):
    """`tfllm generate` on a character model never imports TensorFlow, and prints the TensorFlow path's text."""
    import subprocess
    import sys

    from tfllm.config import TrainConfig
    from tfllm.generation import load_generator
    from tfllm.training.causal_lm import train_causal_lm

    run_dir = str(tmp_path / "run")
    train_causal_lm(TrainConfig(task="generate", data="shakespeare", preset="tiny", run_dir=run_dir, max_rows=6000,
                                jit_compile=False), verbose=0)
    code = ("import sys; from tfllm.cli import main; "
            f"main(['generate', {run_dir!r}, 'the ', '--max-new-tokens', '150', '--seed', '2']); "
            "print('heavy:', sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed, last = out.stdout.rsplit("\n", 2)[0], out.stdout.rsplit("\n", 2)[1]
    assert last == "heavy: []"
    chunks = []
    load_generator(run_dir).generate(["the "], max_new_tokens=150, sampler="top_k", top_k=200, temperature=0.8,
                                     seed=2, stream_callback=lambda i, t: chunks.append(t))
    assert printed == "the " + "".join(chunks)


def test_numpy_classifier_gives_the_keras_models_probabilities(tiny_classifier_run):
    """Every layer of the tiny recipe (encoder, hashed bigrams, naive-Bayes wide path, character and word views, blend) and the
    tokenizer's splitting, subwords, unknown words and truncation, against the Keras model."""
    from tfllm import fast_classification
    from tfllm.training.classifier import load_run, predict_probabilities

    fast = fast_classification.load(tiny_classifier_run)
    task, label_names, _ = load_run(tiny_classifier_run)
    assert fast.label_names == label_names
    assert (fast.model.bigram_buckets and fast.model.wide_bigram_buckets and fast.model.char_ngram_buckets
            and fast.model.word_ngram_buckets)
    # The wide path and the character and word views are blended in, so they are checked too.
    blend = task.get_layer("blend")
    assert blend.get_weights()[1] != 0 and blend.char_scale.numpy() != 0 and blend.word_scale.numpy() != 0
    texts = ["A gorgeous, witty film!", "dull... and LIFELESS", "", "x" * 150, "tab\tand\x01control",
             "zzqx qqzz unheard-of wordsmithery", " ".join(["long"] * 40),
             # Unicode: case folding (ß, ﬁ, full-width, İ, Σ), dropped soft hyphen and zero-width space,
             # punctuation outside ASCII, CJK ideographs split one by one, an emoji.
             "Straße ﬁne ＡＢＣ İstanbul ΣΑΣ", "soft\u00adhyphen zero\u200bwidth", "naïve café… «vraiment»",
             "人民日报，一九九八年。", "😀 emoji!"]
    for text in texts:
        ids = fast.tokenizer.pack(text, task.preprocessor.sequence_length)
        expected = np.asarray(task.preprocessor([text])["token_ids"][0])
        np.testing.assert_array_equal(ids, expected[: len(ids)])
        assert (expected[len(ids):] == fast.tokenizer.pad_id).all(), text
    np.testing.assert_allclose(fast.predict(texts), predict_probabilities(task, texts), atol=1e-5)
    # Characters Python's Unicode tables do not know (newer than them; TensorFlow's ICU and `regex` may
    # split or fold them otherwise) and NUL: left to the TensorFlow path, which flipped labels before.
    assert fast.predict(["a good\u0378film"]) is None and fast.predict(["fine", "nul\x00"]) is None


def test_the_numpy_classifiers_sigmoid_saturates_without_overflow():
    """A long text's summed n-gram logits passed -88, and `tfllm predict` printed NumPy's "overflow encountered in
    exp" RuntimeWarning above its answer."""
    from tfllm.fast_classification import sigmoid

    with np.errstate(over="raise", divide="raise", invalid="raise"):  # the warnings NumPy prints by default
        for x in (np.float32(-1000), np.float32(1000), np.float64(-1e6)):
            assert sigmoid(x) == float(x > 0)
        np.testing.assert_allclose(sigmoid(np.float32([-2, 0, 3])), 1 / (1 + np.exp(-np.float32([-2, 0, 3]))),
                                   rtol=1e-6)


def test_numpy_predict_looks_up_only_the_words_it_reads(tiny_classifier_run, monkeypatch):
    """predict looked up the subwords of every word of a text twice (its ids, then the [UNK] check), where the
    model reads its first sequence_length tokens: 144 texts of 1,800 characters a second."""
    from tfllm import fast_classification, prediction

    tokenizer_class = type(fast_classification.load(tiny_classifier_run).tokenizer)
    lookups = []
    word_ids = tokenizer_class.word_ids
    monkeypatch.setattr(tokenizer_class, "word_ids", lambda self, word: lookups.append(word) or word_ids(self, word))
    [answer] = prediction.predict(tiny_classifier_run, ["a fine film " * 500])
    assert answer["label"] and len(lookups) < 40  # 1,500 words: only those the 16-token model reads, and one


@pytest.mark.slow
def test_cli_predict_runs_without_tensorflow(tiny_classifier_run):
    """`tfllm predict` on tfllm's own classifier never imports TensorFlow, and prints what the TensorFlow
    path (`TFLLM_NUMPY_CLASSIFICATION=0`) prints."""
    import json
    import subprocess
    import sys

    from tfllm.training.classifier import load_run, predict_probabilities

    def predict(*texts, numpy="1"):
        code = ("import sys; from tfllm.cli import main; "
                f"main(['predict', {tiny_classifier_run!r}, *{list(texts)!r}]); "
                "print('heavy:', sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, TFLLM_NUMPY_CLASSIFICATION=numpy))
        assert out.returncode == 0, out.stderr[-2000:]
        *lines, heavy = out.stdout.strip().split("\n")
        return [json.loads(line) for line in lines], heavy

    task, label_names, _ = load_run(tiny_classifier_run)
    texts = ["a joyous, moving film", "a dull mess", "un café très ennuyeux"]
    printed, heavy = predict(*texts)
    assert heavy == "heavy: []"
    for result, expected in zip(printed, predict_probabilities(task, texts)):
        np.testing.assert_allclose([result["probabilities"][name] for name in label_names], expected, atol=1e-5)
        assert result["label"] == label_names[int(expected.argmax())]
    tensorflow_printed, heavy = predict(*texts, numpy="0")
    assert "tensorflow" in heavy and [r["label"] for r in tensorflow_printed] == [r["label"] for r in printed]


def test_python_predict_is_the_commands_answer_and_loads_a_run_once(tiny_classifier_run, capsys, monkeypatch):
    """`tfllm.predict(run_dir, texts)`: what `tfllm predict` prints, as dicts; in a notebook loop the run is
    loaded once (the TensorFlow path too), and a single string is refused, not classified per character."""
    import json

    import tfllm
    from conftest import main_in_process
    from tfllm import fast_classification, prediction
    from tfllm.errors import UserInputError
    from tfllm.training import classifier

    texts = ["a joyous, moving film", "a dull mess"]
    printed = main_in_process(capsys, "predict", tiny_classifier_run, *texts)
    assert printed.returncode == 0, printed.stderr
    expected = [json.loads(line) for line in printed.stdout.splitlines()]
    prediction._LOADED.clear()
    loads = []
    for module, name in ((fast_classification, "load"), (classifier, "load_run")):
        monkeypatch.setattr(module, name, lambda *a, _f=getattr(module, name), _n=name: loads.append(_n) or _f(*a))
    assert tfllm.predict(tiny_classifier_run, texts) == expected == tfllm.predict(tiny_classifier_run, texts)
    assert loads == ["load"]
    # The TensorFlow path, loaded once as well, and taken once the variable says so: the path was chosen when
    # the run was first loaded, so a process that set it after a first call stayed on the NumPy path.
    monkeypatch.setenv("TFLLM_NUMPY_CLASSIFICATION", "0")
    for _ in range(2):
        tensorflow = tfllm.predict(tiny_classifier_run, texts)
        assert [r["label"] for r in tensorflow] == [r["label"] for r in expected]
    assert loads == ["load", "load_run"]
    with pytest.raises(UserInputError, match="wrap it in a list"):
        tfllm.predict(tiny_classifier_run, "a fine film")
    # A text that is not a str was a TypeError from the tokenizer, naming neither the text nor the fix.
    for bad, message in (([1], "Text 1 is int (1), not a string."), (["a fine film", None], "Text 2 is None, not a"),
                         ([b"a fine film"], "Text 1 is bytes (b'a fine film'), not a string; decode it first")):
        with pytest.raises(UserInputError, match=re.escape(message)):
            tfllm.predict(tiny_classifier_run, bad)
    # Arguments of the wrong kind (TypeErrors; a dict classified its keys).
    for run_dir, texts, message in ((tiny_classifier_run, None, "predict's texts must be a list of strings, got "
                                     "NoneType"), (tiny_classifier_run, {"a": "a fine film"}, "got dict"),
                                    (None, ["x"], "predict takes the path of a run directory, got NoneType")):
        with pytest.raises(UserInputError, match=re.escape(message)):
            tfllm.predict(run_dir, texts)


def test_the_sampling_noise_stays_below_one_in_tensorflow_and_numpy():
    """(2**24 - 0.5) / 2**24 rounds to 1.0 in float32, and the Gumbel noise -log(-log(1)) is +inf: with seed
    4955 at the first step, token 392 of a 2,000-token vocabulary won whatever the model said (and NumPy
    printed a RuntimeWarning in the middle of training's progress bar)."""
    import warnings

    import tensorflow as tf

    from tfllm.fast_generation import next_token, uniform_noise
    from tfllm.generation import UNIFORM_MAX, _uniform

    numpy_noise = uniform_noise(4955, 0, 2000)
    tf_noise = _uniform(tf.constant([4955]), tf.constant(0), 2000)[0].numpy()
    np.testing.assert_array_equal(numpy_noise, tf_noise)
    assert numpy_noise.max() == np.float32(UNIFORM_MAX) < 1.0
    logits = np.zeros(2000, np.float32)
    logits[7] = 20.0  # the model is sure
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert next_token(logits, 0, 1.0, 0, 1.0, 4955, []) == 7
        # A temperature too small to divide by in float32 is greedy, as in TensorFlow (it overflowed: NaNs).
        assert next_token(logits, 0, 1e-40, 0, 1.0, 4955, [0]) == 7


def test_predict_warns_about_a_text_of_nothing_but_unknown_words(tiny_classifier_run):
    """"鑫龘" (never seen in training) got a confident label without a word; translate warns of such text and
    generate refuses it. The warning is a `TfllmWarning` (it was a print a notebook could not filter), pointed
    at the caller's line, that a filter silences or makes an error."""
    import warnings

    import tfllm

    with pytest.warns(tfllm.TfllmWarning) as caught:
        [answer] = tfllm.predict(tiny_classifier_run, ["鑫龘"])
    assert set(answer["probabilities"]) == {"fresh", "rotten"}
    [warning] = caught
    message = str(warning.message)
    assert message.startswith("text 1 ('鑫龘') is all unknown tokens ([UNK]) to this model's vocabulary"), message
    assert "only its characters and words" in message  # the tiny recipe's n-gram views still read the raw text
    assert warning.filename == __file__  # the user's call, not a line of tfllm
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfllm.TfllmWarning)
        tfllm.predict(tiny_classifier_run, ["a fine film 鑫龘", "a dull film"])  # a known word: no warning
        with pytest.raises(tfllm.TfllmWarning, match="all unknown tokens"):
            tfllm.predict(tiny_classifier_run, ["鑫龘"])
        warnings.simplefilter("ignore", tfllm.TfllmWarning)
        tfllm.predict(tiny_classifier_run, ["鑫龘"])


def test_the_command_prints_each_warning_as_one_line_every_time(tiny_classifier_run, capsys):
    """The command line says `tfllm: warning: MESSAGE`, once for each time it happens (not once per place, as
    Python shows a warning by default), without the warning's class or the file and line that warned."""
    from conftest import main_in_process

    for _ in range(2):  # the same warnings again: said again
        result = main_in_process(capsys, "predict", tiny_classifier_run, "鑫龘", "a dull film", "龘鑫")
        assert result.returncode == 0, result.stderr
        lines = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
        assert [line[:27] for line in lines] == ["tfllm: warning: text 1 ('鑫龘", "tfllm: warning: text 3 ('龘鑫"], lines
        assert "TfllmWarning" not in result.stderr and ".py" not in result.stderr, result.stderr


def test_predict_names_the_first_few_texts_of_unknown_tokens_and_counts_the_rest(tiny_classifier_run, capsys,
                                                                                  tmp_path):
    """`predict --file` of 200,000 rows printed a warning line for each of its 66 texts all [UNK], among the
    answers: the first few are named, the rest counted in one line at the end."""
    from conftest import main_in_process

    from tfllm.prediction import UNKNOWN_SHOWN

    unknown = UNKNOWN_SHOWN + 4
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"a dull film {i}\n鑫龘\n" for i in range(unknown)), encoding="utf-8")
    result = main_in_process(capsys, "predict", tiny_classifier_run, "--file", texts)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2 * unknown, result.stderr
    lines = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert [line.split(" is ")[0] for line in lines[:-1]] == [f"tfllm: warning: text {2 * i} ('鑫龘')"
                                                              for i in range(1, UNKNOWN_SHOWN + 1)], lines
    assert lines[-1].startswith(f"tfllm: warning: {unknown} of the {2 * unknown} texts were all unknown tokens"), lines
    assert f"the others are texts {2 * UNKNOWN_SHOWN + 2}, " in lines[-1] and "their labels" in lines[-1], lines
