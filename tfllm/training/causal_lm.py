"""TrainConfig -> tokenizer -> CausalLM -> model.fit -> a finished run directory.

A text-generation run directory holds: `config.json` (the TrainConfig),
a KerasHub preset of the `CausalLM` task (tokenizer and preprocessor
included; layout in `tfllm.runs`), `metrics.json` (validation loss/perplexity/bits per character over the whole
validation text, and speed), `logs/` (TensorBoard: loss, perplexity, learning
rate, generated samples) and, while unfinished, `backup/`.

Training counts steps, as nanoGPT does: a Keras "epoch" is `eval_interval`
steps of random windows, after which a slice of the validation text is scored
and a text sample is written to TensorBoard.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfllm import data as data_lib
from tfllm import errors, fast_generation
from tfllm import runs
from tfllm.datasets import is_table
from tfllm.datasets.text import check_text_column, load_documents, load_run_text, load_text_corpus
from tfllm.errors import UserInputError
from tfllm.generation import sample_prompt
from tfllm.models.causal_lm import CausalLM, CausalLMPreprocessor
from tfllm.tokenizers import prompt_start_ids
from tfllm.training import common, timing

SAMPLE_TOKENS = 200  # length of the text samples logged to TensorBoard
LN2 = math.log(2.0)


def causal_lm_preset(config):
    """The recipe of a generation run: the preset with the flags and `--set` applied and checked."""
    if config.steps == 0:  # a preset as it is: scored on the data and written as a run, no step taken
        if not config.from_preset or config.task != "generate":
            raise UserInputError("--steps 0 keeps a KerasHub causal LM as it is (scored on your text, written as a "
                                 "run to export and serve): use it with --task generate --from-preset PRESET; "
                                 "anything else trains at least 1 step.")
        if config.epochs is not None:  # the check below would see the stand-in 1
            raise UserInputError(f"Give --steps (0) or --epochs ({config.epochs}), not both.")
        common.check_flag_and_setting(config, "steps")  # as well
        preset = {**causal_lm_preset(dataclasses.replace(config, steps=1)), "steps": 0}
        if "sequence_length" not in config.overrides:  # its own window too (a recipe's 64 cut a Llama's to 64)
            preset["sequence_length"] = preset_sequence_length(config.from_preset)
        return preset
    preset = common.fit_to_positions(config, common.step_recipe("generate", config))
    # Keras runs whole multi-step calls only: keep the chunk a divisor of the epoch.
    preset["steps_per_execution"] = math.gcd(preset.get("steps_per_execution", 1), steps_per_epoch(preset))
    return preset


def steps_per_epoch(preset):
    """Training steps between evaluations (a Keras epoch); `steps` is rounded to a multiple."""
    if not preset["steps"]:  # --steps 0: no epoch (the preset as it is)
        return 1
    epochs = max(1, round(preset["steps"] / min(preset["eval_interval"], preset["steps"])))
    return preset["steps"] // epochs


def learning_rate_schedule(preset):
    """Linear warm-up to `learning_rate`, then cosine decay to `min_learning_rate` (nanoGPT)."""
    warmup = min(preset.get("warmup_steps", 0), max(preset["steps"] - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else preset["learning_rate"],
        decay_steps=max(preset["steps"] - warmup, 1),
        alpha=preset.get("min_learning_rate", preset["learning_rate"]) / preset["learning_rate"],
        warmup_target=preset["learning_rate"] if warmup else None,
        warmup_steps=warmup,
    )


@keras.saving.register_keras_serializable(package="tfllm")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW, with `global_clipnorm` clipping the gradient summed over replicas.

    Keras 3 on TensorFlow clips each replica's part of the gradient before the
    parts are summed (`_clip_gradients` in `apply`, the all-reduce later in
    `_backend_update_step`), so under `MirroredStrategy` the global norm it
    clips by is the wrong one; tf.keras refused the combination for this reason
    (tensorflow/tensorflow#33929). Here the replicas sum their gradients once
    to get the norm, and each scales its own part by the factor that norm gives
    (`tf.clip_by_global_norm(..., use_norm=)`), so the sum is clipped exactly
    as one device would clip it. One device: unchanged.
    """

    # PRIVATE API: overrides Keras's `BaseOptimizer._clip_gradients` (keras 3.15, called in
    # `_backend_apply_gradients` before the cross-replica sum). Upstream: tensorflow/tensorflow#33929
    # (tf.keras disabled clipping under tf.distribute for this reason); no Keras 3 issue
    # was found. Guarded by tests/test_private_apis.py.
    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if not self.global_clipnorm or context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        summed = context.all_reduce("sum", [tf.convert_to_tensor(g) for g in grads if g is not None])
        return tf.clip_by_global_norm(grads, self.global_clipnorm, use_norm=tf.linalg.global_norm(summed))[0]


def build_causal_lm(preset, tokenizer):
    """The compiled model of a preset over a tokenizer trained here (see `compile_causal_lm`)."""
    model = CausalLM.from_args(**{**preset, "vocabulary_size": tokenizer.vocabulary_size()})
    model.preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=preset["sequence_length"])
    return compile_causal_lm(model, preset)


@common.preset_files
def causal_lm_from_preset(handle, preset, task="generate"):
    """A causal LM task from a tfllm run or a KerasHub preset (GPT-2, OPT, ...), with its own tokenizer.
    `task`: the run's ("generate", or "pretrain" for `--objective causal`), whose flags a refusal names."""
    import keras_hub

    from tfllm.training.classifier import preset_backbone_class, preset_max_length

    backbone_cls = preset_backbone_class(handle)
    try:
        preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
            handle, sequence_length=preset_max_length(handle, preset["sequence_length"]))
        model = keras_hub.models.CausalLM.from_preset(handle, preprocessor=preprocessor, **common.preset_dtype(handle))
    except ValueError as e:
        raise no_causal_lm(handle, backbone_cls, e, task) from None
    return compile_causal_lm(model, preset)


@common.preset_files
def preset_sequence_length(handle):
    """The length a causal LM preset's own preprocessor packs (its window as it is), at most its positions."""
    import keras_hub

    from tfllm.training.classifier import preset_backbone_class, preset_max_length

    backbone_cls = preset_backbone_class(handle)
    try:
        length = keras_hub.models.CausalLMPreprocessor.from_preset(handle).sequence_length
    except ValueError as e:
        raise no_causal_lm(handle, backbone_cls, e) from None
    return preset_max_length(handle, length)


def no_causal_lm(handle, backbone_cls, error, task="generate"):
    from tfllm.training.classifier import is_encoder, is_seq2seq, seq2seq_refusal  # as the loaders above import it

    not_text = common.not_text_model(handle, backbone_cls)  # "use --task classify" would fail too
    if not_text:
        return not_text
    if is_seq2seq(backbone_cls):  # BART was told to "use --task classify for an encoder", which failed too
        return seq2seq_refusal(handle, backbone_cls, "causal LM")
    # `tfllm pretrain` has no --task: an encoder pretrains as a masked LM there (it was told "use --task classify").
    fix = "--objective mlm" if task == "pretrain" else "--task classify"
    hint = f"; use {fix} for an encoder" if is_encoder(backbone_cls) else \
        ". Start a generator from a decoder preset (GPT-2, OPT, Llama, ...) or a tfllm generate run"
    return UserInputError(f"--from-preset {handle!r} ({backbone_cls.__name__}) has no causal LM in KerasHub "
                          f"({str(error).splitlines()[0]}){hint}.")


def compile_causal_lm(model, preset):
    """AdamW with warm-up + cosine, global-norm clipping, sparse CE from logits."""
    optimizer = AdamW(
        learning_rate_schedule(preset),
        beta_1=preset.get("beta_1", 0.9),
        beta_2=preset.get("beta_2", 0.999),
        weight_decay=preset.get("weight_decay", 0.0),
        # nanoGPT clips the norm of all gradients together (clip_grad_norm_), which is
        # Keras' global_clipnorm; Keras' clipnorm would clip each weight's gradient on its own.
        global_clipnorm=preset.get("global_clipnorm"),
    )
    # As nanoGPT: decay matrices and embeddings, not layer-norm scales/offsets or biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return common.compile_task(
        model,
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
        sampler="top_k",
        jit_compile=preset.get("jit_compile"),
        unset=False,
        steps_per_execution=preset.get("steps_per_execution", 1),
    )


class StepTimer(keras.callbacks.Callback):
    """Wall time of each training step (first step of each epoch left out: it includes validation/compilation)."""

    def __init__(self):
        super().__init__()
        self.step_seconds = []
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.step_seconds.append(now - self._last)
        self._last = now


def training_speed(timer, preset, sequence_length):
    """metrics.json's `speed` of a `StepTimer`'s steps: median ms per step and tokens per second; None for
    too few steps to time (a tiny run) rather than NaN."""
    step_seconds = np.median(timer.step_seconds) if timer.step_seconds else float("nan")
    step_seconds /= preset.get("steps_per_execution", 1)
    timed = bool(np.isfinite(step_seconds))
    return {"ms_per_step": round(float(step_seconds) * 1000, 2) if timed else None,
            "tokens_per_second": round(preset["batch_size"] * sequence_length / float(step_seconds)) if timed else None}


class TextSamples(keras.callbacks.Callback):
    """Writes a generated sample to TensorBoard (Text tab, tag `samples`) after every epoch."""

    def __init__(self, log_dir, tokenizer, prompt, max_new_tokens=SAMPLE_TOKENS, seed=0, timer=None, window=None,
                 start_ids=()):
        super().__init__()
        # The context window and start ids, which a model cannot tell while its preprocessor is detached for training.
        self.window, self.start_ids = window, start_ids
        self.timer = timer  # a timing.FitTimer that is told the seconds spent here
        # Opened at the first sample: opened here, a resume whose backup could not be restored (another tfllm
        # version's run) left a new event file in the interrupted run.
        self.log_dir, self.writer = os.path.join(log_dir, "samples"), None
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self._generator = None

    def on_epoch_end(self, epoch, logs=None):
        from tfllm.generation import Generator

        if self.prompt is None:  # no prompt the vocabulary can encode (sample_prompt)
            return
        start = time.perf_counter()
        # NumPy decoding of the current weights where it serves the model (tfllm.fast_generation):
        # the same text as the compiled loop, without tracing and compiling that loop (~4 s).
        fast = fast_generation.from_keras(self.model, self.tokenizer)
        if fast is not None and fast.encode(self.prompt) is not None:
            text = fast.generate(self.prompt, self.max_new_tokens, *fast_generation.sampler_options("top_k", 1.0, 50, 1.0),
                                 self.seed)
        else:
            if self._generator is None:
                # Not XLA-compiled: an XLA decoding loop whose window slides is compiled again whenever the
                # weights change (measured: 3-5 s after any one variable is assigned, while an unchanged
                # model reuses its program), so under mixed precision, which takes this path, every epoch
                # compiled one more program: slower epochs, memory growing until LLVM failed ("Cannot
                # allocate memory") near epoch 166. Uncompiled, a 200-token sample takes ~0.4 s.
                self._generator = Generator(self.model, self.tokenizer, jit_compile=False,
                                            window=self.window, start_ids=self.start_ids)
            new_tokens = self.max_new_tokens
            if not self._generator.slides:  # a KerasHub model stops at its last position
                new_tokens = max(1, min(new_tokens, self._generator.window - len(self._generator.encode(self.prompt))))
            text = self._generator.generate([self.prompt], new_tokens, sampler="top_k", top_k=50, seed=self.seed)[0]
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.log_dir)
        with self.writer.as_default():
            # Markdown: a code block keeps the sample's line breaks.
            tf.summary.text("samples", f"```\n{self.prompt}{text}\n```", step=step)
        self.writer.flush()
        if self.timer is not None:
            self.timer.samples += time.perf_counter() - start


def end_token_trained(ids, end_id, start_ids=()):
    """Whether the end token is among the next-token targets of `ids` (all but the first, or all of them after
    `start_ids`: `num_targets`). Running text, as tfllm reads every corpus (documents joined by blank lines), never
    holds it; a preset's tokenizer may read it from the text (GPT-2's `<|endoftext|>` written between documents)."""
    targets = np.asarray(ids)[0 if start_ids else 1:]
    return bool(np.any(targets == end_id))


def num_targets(ids, start_ids=()):
    """How many of `ids` are next-token targets: all but the first, or all of them after `start_ids`."""
    return len(ids) - (0 if start_ids else 1)


def evaluate_loss(model, ids, sequence_length, batch_size=64, max_windows=None, start_ids=()):
    """Mean next-token loss over every target of `ids` (each window after `start_ids`, as in training).

    Consecutive windows cover `ids`; the targets past the last whole window (up to sequence_length - 1 of
    them, left out before) are scored in one more window ending at the text's end, counting only its targets
    that no window scored. With `max_windows` (a sample spread over the text) only those windows count.
    Only full batches go through Keras' compiled test step, so it runs one
    program (with the training batch size, the one validation compiled
    already); the few windows left over are scored in one plain call instead
    of compiling a second program for their shape.
    """
    windows = data_lib.sequential_windows(ids, sequence_length, max_windows).astype("int32")
    full = len(windows) // batch_size * batch_size

    def token_losses(batch):  # [n, sequence_length] losses of the targets of `batch`'s windows
        inputs, targets = data_lib.split_windows(tf.constant(batch), start_ids)
        logits = tf.cast(model(inputs, training=False), "float32")
        return keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)

    total = 0.0  # nats, summed over the targets scored
    if full:
        ds = data_lib.untuned(tf.data.Dataset.from_tensor_slices(windows[:full]).batch(batch_size)
                              .map(lambda w: data_lib.split_windows(w, start_ids)))
        total += float(model.evaluate(ds, verbose=0, return_dict=True)["loss"]) * full * sequence_length
    if full < len(windows):
        total += float(tf.reduce_sum(token_losses(windows[full:])))
    scored = len(windows) * sequence_length
    tail = num_targets(ids, start_ids) - scored
    sampled = len(windows) < len(range(0, len(ids) - sequence_length, sequence_length))  # max_windows of more
    if tail > 0 and not sampled:
        # A window whose targets are the last sequence_length ids: without start_ids its first id is only input;
        # with them a window's last id goes unused, so any id (the last again) pads it.
        padded = np.append(ids, ids[-1]) if start_ids else np.asarray(ids)
        last = padded[-(sequence_length + 1):].astype("int32")[None]
        total += float(tf.reduce_sum(token_losses(last)[:, -tail:]))
        scored += tail
    return total / scored


def evaluate_run(run_dir, data=None, text_column=None):
    """Loss, perplexity and bits per character of a generation run on text.

    `data` is a text file, a folder of `.txt` files or a bundled corpus (all of it is scored); by default
    the run's own validation text, as its training split it.
    """
    from tfllm.generation import cached_generator

    if runs.task_of(run_dir) == "pretrain" and runs.read_config(run_dir).get("objective") != "causal":
        # An encoder's run (masked LM or word vectors) is pretraining's to score: a causal LM's loss is no figure of it.
        from tfllm.training.pretraining import evaluate_run as evaluate_encoder  # beside this module, which it imports

        return evaluate_encoder(run_dir, data=data, text_column=text_column)
    # tfllm.generate's loaded run, not a copy beside it: a notebook calling both held the model twice
    # (`tfllm.clear_cache()` frees it). Scoring reads only its model, tokenizer and ids, never decodes (so the
    # generator's jit_compile is not read); compiling the model for loss leaves its decoding functions, its own
    # tf.functions, as they were.
    generator = cached_generator(run_dir)
    if data and text_column is None and is_table(data):  # as --help says: the run's (`--data heldout.csv` of a
        text_column = runs.read_train_config(run_dir).text_column  # --text-column title run read 'text')
    if data:
        check_text_column(data, text_column)
    if data and os.path.isdir(data) and runs.read_train_config(run_dir).task == "pretrain":
        # A folder of .txt files as pretraining read it: every non-blank line a document (a generator's
        # training reads the files' text as it is, blank lines kept, as load_text_corpus does below).
        train_docs, val_docs = load_documents(data, text_column=text_column)
        text = "\n".join(train_docs + val_docs)
    elif data:
        # Whole, rows joined as training joins them (train + val glued two rows into one: "...itemAitemB").
        text = load_text_corpus(data, text_column=text_column, use="score", whole=True)
    else:
        config = runs.read_train_config(run_dir)
        runs.check_data_unchanged(run_dir, config.data)
        text = load_run_text(config)[1]
    # Training's window length: a preset's model may see more (GPT-2's 1,024 positions) than it was fine-tuned on.
    model, sequence_length = generator.model, generator.model.preprocessor.sequence_length
    ids = data_lib.tokenize_corpus(generator.tokenizer, text, "evaluated")
    unknown = float(np.mean(np.asarray(ids) == generator.unk_id)) if generator.unk_id is not None and len(ids) else 0.0
    if data and unknown > 0:  # scored as any token, where generate refuses such text
        errors.warn(f"{unknown:.1%} of the tokens of --data {data!r} are [UNK] (text the tokenizer has "
                    "no token for); the loss and perplexity count them as tokens to predict.")
    compile_causal_lm(model, {**runs.read_recipe(run_dir), "steps": 1, "jit_compile": False})
    with common.preprocessed(model):
        loss = evaluate_loss(model, ids, sequence_length, start_ids=generator.start_ids)
    # Bits per character: the mean bits per token scored times the text's tokens per character (a character
    # tokenizer's is loss / ln 2 exactly, its first character, which nothing predicts, not counted against it).
    return {"loss": round(loss, 4), "perplexity": round(math.exp(min(loss, 50.0)), 3),
            "bits_per_character": round(loss * len(ids) / max(len(text), 1) / LN2, 4), "num_tokens": int(len(ids)),
            "num_targets": int(num_targets(ids, generator.start_ids))}


def _text_source(data):
    """`data` as the first progress line names it: a file or folder with its size on disk, or a bundled corpus."""
    if os.path.isfile(data):
        return f"{data!r} ({os.path.getsize(data) / 1e6:,.1f} MB)"
    return repr(data)


def train_causal_lm(config, verbose="auto"):
    """Trains a causal LM as `config` says; returns the metrics dict (metrics.json's), as every trainer does.

    Example:
    >>> from tfllm.config import TrainConfig
    >>> metrics = train_causal_lm(TrainConfig(task="generate", data="shakespeare", preset="nanogpt-cpu", run_dir="runs/sh"))
    """
    common.check_config(config, "generate", "pretrain")  # causal pretraining is trained here
    # Classification's and translation's flags were accepted and ignored: a generator reads running text
    # (--text-column of a CSV/JSONL) and splits off its last tenth for validation.
    for flag, value, default in (("--label-column", config.label_column, "label"), ("--labels", config.labels, None),
                                 ("--split-column", config.split_column, None),
                                 ("--source-column", config.source_column, None),
                                 ("--target-column", config.target_column, None)):
        if value not in (None, default):
            raise UserInputError(f"{flag} is not for --task generate, which reads running text (a CSV/JSONL's "
                                 "--text-column) and holds out its last tenth for validation; leave it out.")
    phases = timing.Phases()  # where the command's seconds go (written only for benchmarks)
    # First: a multi-worker strategy must exist before any other TensorFlow op runs.
    strategy = common.get_strategy(config.strategy)
    preset = common.resumed_recipe(config, causal_lm_preset(config))
    common.check_global_batch(preset["batch_size"], strategy)
    common.check_multi_worker_recipe(preset, strategy)
    # Everything that can fail on bad input happens before the run directory is touched.
    common.check_run_dir(config)
    train_text, val_text = load_run_text(config)
    if verbose:
        # A 50 MB file was ~35 s of reading and tokenizing without a word, and no line gave its size or split.
        cut = errors.spelled(" (cut by --max-rows)") if config.max_rows else ""  # max_rows to a Python caller
        print(f"Text: {_text_source(config.data)}, {len(train_text):,} training and {len(val_text):,} validation "
              f"characters{cut}; tokenizing it ...", flush=True)
    if config.from_preset:
        from tfllm.training.classifier import preset_backbone_class

        preset_backbone_class(config.from_preset)
    keras.utils.set_random_seed(config.seed)
    phases.mark("setup_and_corpus")
    run_dir = common.worker_run_dir(config.run_dir, strategy)  # non-chief workers write to a temporary folder
    resume, previous = runs.prepare(run_dir, overwrite=config.overwrite, config=config)
    with common.guarded_run(run_dir, resume, previous, backup_dir=os.path.join(config.run_dir, common.BACKUP)):
        # Characters: the whole text; subword vocabularies: line by line. (A --from-preset recipe may name no
        # tokenizer: the preset brings its own, and none is trained.)
        texts = [train_text] if preset.get("tokenizer") == "char" else train_text.split("\n")
        tokenizer = common.start_run(run_dir, config, preset, resume, texts)
        phases.mark("tokenizer")

        with strategy.scope(), common.precision_scope(config.precision):
            if config.from_preset:
                model = causal_lm_from_preset(config.from_preset, preset, config.task)
                tokenizer = model.preprocessor.tokenizer
            else:
                model = build_causal_lm(preset, tokenizer)
            common.adapt_model_to_strategy(model, strategy)
        phases.mark("build_model")

        seq = model.preprocessor.sequence_length  # the recipe's, capped at a preset's positions
        train_ids = data_lib.tokenize_corpus(tokenizer, train_text)
        val_ids = data_lib.tokenize_corpus(tokenizer, val_text, "validation")
        if config.from_preset:
            common.warn_unknown_tokens(config.from_preset, tokenizer, train_ids, "training text",
                                       " and generate refuses prompts that hold them")
        else:
            common.warn_unknown_in_own_vocabulary(tokenizer, train_ids, preset["vocabulary_size"], text=train_text)
        # The window must fit both texts; a preset's own length is not the recipe's (64 where OPT's packs 32).
        fits, source = min(len(train_ids), len(val_ids)) - 1, ""
        if seq > fits and config.from_preset and "sequence_length" not in config.overrides:
            own = preset_sequence_length(config.from_preset)
            source = f": sequence_length {seq} is the recipe's" + (f", not the preset's own {own}" if own != seq else "")
        for ids, what in ((train_ids, "training"), (val_ids, "validation")):
            # The text was cut to --max-rows: raising it is the fix ("use more text" read as another file).
            more = f" (raise --max-rows {config.max_rows}, which cut it)" if config.max_rows else ""
            data_lib.check_length(ids, seq, what, fits, source, more)

        epoch_steps = steps_per_epoch(preset)
        epochs = preset["steps"] // epoch_steps
        start_ids = prompt_start_ids(model.preprocessor)  # a preset's start token opens every window, as every prompt
        if hasattr(model, "end_token_trained") and preset["steps"]:  # tfllm's CausalLM; --steps 0 keeps its record
            # Saved with the task (task.json), so every runtime reads one record (`generation.emits_end_token`).
            model.end_token_trained = end_token_trained(train_ids, int(tokenizer.end_token_id), start_ids)
        train_ds = data_lib.random_window_dataset(train_ids, seq, preset["batch_size"], seed=config.seed,
                                                  start_ids=start_ids)
        val_ds = data_lib.sequential_window_dataset(val_ids, seq, preset["batch_size"], max_windows=preset["eval_windows"],
                                                    start_ids=start_ids)

        timer, fit_timer = StepTimer(), timing.FitTimer()
        prompt = sample_prompt(tokenizer, max(1, seq // 4), val_text, train_text)
        phases.mark("tokenize")
        # Perplexity first, so the TensorBoard callback sees the values it adds.
        callbacks = [fit_timer, common.Perplexity(), timer,
                     TextSamples(os.path.join(run_dir, "logs"), tokenizer, prompt, seed=config.seed, timer=fit_timer,
                                 window=seq, start_ids=start_ids)]
        callbacks += common.make_callbacks(
            run_dir,
            checkpoint=False,
            write_logs=common.is_chief(strategy),
            backup_dir=os.path.join(config.run_dir, common.BACKUP),  # every worker resumes from the chief's backup
        )
        # The speed is measured as fit ends and kept in the backup: a run resumed after that reports its training's.
        common.measure_fit(callbacks, lambda: {"speed": training_speed(timer, preset, seq)})
        # Validation at every epoch's end, then the final evaluation's full batches of windows.
        final_windows = len(data_lib.sequential_windows(val_ids, seq))
        evaluated = (common.dataset_batches(val_ds, epochs) or 0) + final_windows // preset["batch_size"]
        if verbose:
            # The final validation scores every validation token (metrics.json's figures are of all of them),
            # whatever the steps: ~25 s for 4.95 M tokens after a 20-step run, said here rather than left a mystery.
            # Its last window, ending at the text's end, scores the targets the whole windows left over.
            per_epoch = min(preset["eval_windows"] or final_windows, final_windows)
            tail = num_targets(val_ids, start_ids) - final_windows * seq
            print(f"Tokens: {len(train_ids):,} training, {len(val_ids):,} validation; each epoch validates on "
                  f"{per_epoch:,} windows of {seq} tokens; the final validation, after training, scores all "
                  f"{final_windows + (tail > 0):,} (every validation token).", flush=True)
        with common.preprocessed(model), common.eager_evaluation(model, evaluated, strategy):  # batches: token ids
            history = model.fit(train_ds, steps_per_epoch=epoch_steps, epochs=epochs, validation_data=val_ds,
                                shuffle=False, callbacks=callbacks, verbose=verbose)  # windows are random already
            phases.mark("fit")
            val_loss = evaluate_loss(model, val_ids, seq, batch_size=preset["batch_size"], start_ids=start_ids)
            phases.mark("final_evaluation")
        metrics = {
            "val": {
                "loss": round(val_loss, 4),
                "perplexity": round(math.exp(val_loss), 3),
                # Nats per token -> bits per character of the validation text.
                "bits_per_character": round(val_loss * len(val_ids) / len(val_text) / LN2, 4),
                "num_tokens": int(len(val_ids)),
                "num_targets": num_targets(val_ids, start_ids),  # next-token targets, every one scored
            },
            **(common.fit_figures(callbacks, ("speed",)) if epochs else {}),  # no step, no speed
            "steps": epochs * epoch_steps,
            "epochs_run": common.epochs_completed(callbacks, len(history.history.get("loss", []))),
            "vocabulary_size": tokenizer.vocabulary_size(),
        }
        phases.mark("metrics")
        common.finish_run(run_dir, config.run_dir, model, preset, history.history, metrics)
        phases.mark("finish_run_save_and_reports")
        phases.write(fit_timer)
        if verbose:
            # No speed where too few steps were timed (a short run) or a resume did not measure it: the line
            # said "None tokens/s".
            speed = metrics.get("speed", {}).get("tokens_per_second")
            print(f"val loss {metrics['val']['loss']:.4f}  perplexity {metrics['val']['perplexity']:.2f}  "
                  f"{f'{speed} tokens/s  ' if speed is not None else ''}-> {run_dir}")
        # The metrics, as train_classifier, train_seq2seq and pretrain return theirs (this returned the run
        # directory, the config's own run_dir, so a notebook's `metrics = ...` got a str).
        return metrics
