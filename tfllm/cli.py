"""`tfllm` command line: parses arguments, builds a config, calls the library.

Errors a user can fix arrive as `UserInputError` and are printed as one line
with exit status 2, never as a traceback.
"""

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import threading
import warnings

from tfllm.config import PRECISIONS, SAMPLING_DEFAULTS, TOKENIZER_KINDS, expand_home, read_escapes
from tfllm.errors import shell_path

# TensorFlow's C++ start-up chatter (CUDA probing, CPU flags) is noise on a CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_setting(value):
    """`KEY=VALUE` of `--set`: the value as JSON where it parses (numbers, true, null), else a string."""
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. hidden_dim=64; got {value!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def _count(value, least=1):
    """An integer option that must be at least `least` (argparse prints the message with the option's name)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {number}")
    return number


def _seed(value):
    return _count(value, least=0)


def _csv_list(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_train(args):
    from tfllm import runs
    from tfllm.config import TrainConfig

    config = TrainConfig(
        task=args.task,
        data=args.data,
        run_dir=args.run_dir or os.path.join("runs", os.path.basename(args.data).split(".")[0] or "run"),
        preset=args.preset,  # None: TrainConfig's default, `finetune` for a classifier from a preset
        text_column=args.text_column,
        label_column=args.label_column,
        split_column=args.split_column,
        source_column=getattr(args, "source_column", None),
        target_column=getattr(args, "target_column", None),
        labels=args.labels,
        tokenizer=args.tokenizer,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        strategy=args.strategy,
        precision=args.precision,
        jit_compile=args.jit_compile,
        max_rows=args.max_rows,
        overrides=dict(args.set),
        from_preset=args.from_preset,
        objective=getattr(args, "objective", None),
        overwrite=args.overwrite,
        ensemble=getattr(args, "ensemble", 1),
        unlabeled=getattr(args, "unlabeled", None),
    )
    for flag, value in (("--ensemble", config.ensemble != 1), ("--unlabeled", config.unlabeled)):
        if value and config.task != "classify":
            from tfllm.errors import UserInputError

            raise UserInputError(f"{flag} is for --task classify, not {config.task}.")
    if config.strategy == "multi_worker":
        # Every worker is given the same --run-dir and only the chief trains in it, which is known once the
        # strategy exists: the chief owns the folder from `runs.prepare` on (the others prepare scratch folders).
        _train(config)
        return
    # Refused before the data is read: a --run-dir that cannot be a folder or be written, or that another
    # command trains in. Then owned for the whole command: a self-training teacher, an ensemble's members
    # and the run are this command's alone (`runs.prepare` owns it again, nested).
    runs.check_run_folder(config.run_dir)
    with runs.owned(config.run_dir):
        _train(config)


def _train(config):
    if config.task == "pretrain":
        from tfllm.training.pretraining import pretrain

        metrics = pretrain(config)
        print(f"\nValidation: {json.dumps(metrics['val'])}")
        task = "generate" if config.objective == "causal" else "classify"  # a decoder generates; an encoder classifies
        print(f"Run directory (a KerasHub preset): {config.run_dir}  "
              f"(fine-tune: tfllm train --task {task} --from-preset {shell_path(config.run_dir)} ...)")
    elif config.task == "classify":
        from tfllm.training.classifier import train_classifier

        metrics = train_classifier(config)
        # Which class precision, recall and F1 are of: --labels (or the labels' order) picks the positive one.
        positive = metrics["test"].get("positive_label")
        of = f"positive label {positive!r}" if positive is not None else "macro average over the classes"
        print(f"\nTest metrics ({metrics['test']['num_examples']} examples; precision, recall, f1: {of}):")
        for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"):
            if metrics["test"].get(key) is not None:
                print(f"  {key:17s} {metrics['test'][key]:.4f}")
        for member in metrics.get("members", []):  # --ensemble N
            print(f"  member {member['run_dir']}: accuracy {member['test_accuracy']:.4f}, "
                  f"{member['parameters']:,} parameters (the ensemble: {metrics['parameters']:,})")
        logs = shell_path(os.path.join(config.run_dir, "logs"))  # a command to paste: a path with spaces quoted
        print(f"Run directory: {config.run_dir}  (TensorBoard: tensorboard --logdir {logs})")
    elif config.task == "translate":
        from tfllm.training.seq2seq import train_seq2seq

        metrics = train_seq2seq(config)
        print(f"\nTest metrics ({metrics['test']['num_examples']} sources, greedy, against all their references):")
        for key in ("chrf", "bleu", "exact_match", "char_accuracy"):
            # BLEU depends on the tokenizer: say so when it is not sacreBLEU's default.
            tokenize = metrics["test"].get("bleu_tokenize", "13a")
            note = f"  (sacreBLEU tokenize={tokenize})" if key == "bleu" and tokenize != "13a" else ""
            print(f"  {key:14s} {metrics['test'][key]:.4f}{note}")
            if key == "bleu" and "bleu_note" in metrics["test"]:
                print(f"  {'':14s} ({metrics['test']['bleu_note']})")
        print(f"Run directory: {config.run_dir}  (translate: tfllm translate {shell_path(config.run_dir)} TEXT)")
    else:
        from tfllm.training.causal_lm import train_causal_lm

        train_causal_lm(config)


def cmd_evaluate(args):
    from tfllm.scoring import evaluate

    report = evaluate(args.run_dir, data=args.data, split=args.split, text_column=args.text_column,
                      label_column=args.label_column, split_column=args.split_column,
                      source_column=args.source_column, target_column=args.target_column, memory=args.memory,
                      lm=args.lm, input_method=args.input_method, sampler=args.sampler, num_beams=args.num_beams)
    print(readable_json(report))


def readable_json(value, indent=2, _level=0):
    """`value` as indented JSON, except that a list of plain values (numbers, labels) stays on one line: a
    confusion matrix prints one row a line (200 classes printed 40,000 lines, a number a line, with
    `json.dumps(indent=2)`). Still JSON: `json.loads` of the whole text gives `value` back. Labels as written
    ("好"), as predict prints them; `per_class` prints a class a line."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(value, dict) and value:
        # A table of flat records (per_class: {"label": {"precision": ..., "f1": ...}}) prints a record a line.
        table = _level > 0 and all(
            isinstance(v, dict) and v and not any(isinstance(x, (dict, list, tuple)) for x in v.values())
            for v in value.values())
        items = (f"{inner}{json.dumps(str(k), ensure_ascii=False)}: "
                 f"{json.dumps(v, ensure_ascii=False) if table else readable_json(v, indent, _level + 1)}"
                 for k, v in value.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        return "[\n" + ",\n".join(inner + readable_json(v, indent, _level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def _input_texts(args, verb, example, text_column="text", read=None):
    """The texts of `tfllm predict|translate RUN TEXT... [--file PATH]`: those given, then --file's (read as they
    come by `read`, default `read_texts`: a pipe into --file - is answered as it flows), after refusing what
    would be answered wrongly."""
    from tfllm.errors import UserInputError

    command = f"tfllm {args.command} {shell_path(args.run_dir)} \"{example}\""
    if args.text_column is not None and args.file is None:
        raise UserInputError("--text-column names the column of a --file CSV/JSONL; pass --file too, or leave it out.")
    if args.file is None and len(args.texts) == 1 and os.path.isfile(args.texts[0]):
        # `tfllm predict RUN reviews.txt` classified the file's name, with a confident label.
        raise UserInputError(f"{args.texts[0]!r} is a file: to {verb} its lines (or a CSV/JSONL's {text_column!r} "
                             f"column) pass --file {shell_path(args.texts[0])}.")
    if not args.texts and args.file is None:
        raise UserInputError(f"Pass the texts to {verb}, e.g. {command}, or --file PATH (one text per line, or a "
                             f"CSV/JSONL's {text_column!r} column; - for stdin).")
    empty = [i for i, text in enumerate(args.texts, 1) if not text.strip()]
    if empty:
        raise UserInputError(f"Text {empty[0]} is empty; pass the texts to {verb}, e.g. {command}.")
    if args.file is None:
        return iter(args.texts)
    from tfllm.datasets import read_texts
    from tfllm.datasets.text import check_text_column

    if read is None:
        # Translate's own `read` refuses it where it reads text, as it takes a field of a tab-separated .txt
        # (--text-column 2).
        check_text_column(args.file, args.text_column, bundled=False)

    return itertools.chain(args.texts, (read or read_texts)(args.file, args.text_column or text_column))


def cmd_predict(args):
    from tfllm import runs

    runs.require_task(args.run_dir, "classify", hint=runs.classifier_hint(args.run_dir))
    # A CSV/JSONL like the run's own is read in the run's text column, as `evaluate` reads it.
    column = runs.read_config(args.run_dir).get("text_column") or "text"
    texts = _input_texts(args, "classify", "a joyous, moving film", column)
    from tfllm.prediction import classify

    # Each answer as it comes (a chunk at a time): a large --file, or a pipe into --file -, is answered as
    # it is read, never held whole.
    for result in classify(args.run_dir, texts, top_k=args.top_k):
        print(json.dumps(result, ensure_ascii=False), flush=True)


def cmd_export(args):
    from tfllm.export.versioning import DEFAULT_BASE_DIR, check_export_options, validate_export_name
    from tfllm.serving.models import prune as prune_exports  # the one prune: it keeps what models.config serves

    from tfllm import runs
    from tfllm.errors import UserInputError

    if args.name is None and args.out is None:
        raise UserInputError("tfllm export needs --name NAME (the model's folder under --base-dir), or, for "
                             "--format tflite, --out FOLDER to write the files there.")
    # --base-dir's default is None, so that one given with --out is refused (it was ignored) and the default not.
    if args.name is not None and args.out is None:
        validate_export_name(args.name, DEFAULT_BASE_DIR if args.base_dir is None else args.base_dir)
    check_export_options(args.format, args.base_dir, args.out, args.quantize, args.keep, name=args.name)
    if args.base_dir is None:
        args.base_dir = DEFAULT_BASE_DIR
    task = runs.exportable_task(args.run_dir)
    if task == "translate" and args.format == "saved_model":
        from tfllm.export.seq2seq import export_seq2seq

        path = export_seq2seq(args.run_dir, args.name, base_dir=args.base_dir)
    elif args.format == "tflite":
        from tfllm.export.tflite import export_tflite, parity_warning, read_parity

        path = export_tflite(args.run_dir, args.name, base_dir=args.base_dir, quantize=args.quantize, out=args.out)
        print(read_parity(path))
        warning = parity_warning(path)
        if warning:
            print(warning, file=sys.stderr)
    elif task == "classify":
        from tfllm.export.saved_model import export_classifier

        path = export_classifier(args.run_dir, args.name, base_dir=args.base_dir)
    else:
        from tfllm.export.causal_lm import export_causal_lm

        path = export_causal_lm(args.run_dir, args.name, base_dir=args.base_dir)
    print(f"Exported {path}")
    if args.keep is not None:
        try:
            removed = prune_exports(args.base_dir, args.name, args.keep)
        except KeyboardInterrupt:
            # The export is whole; only old versions may be left (a renamed one goes at the next export).
            print(f"Interrupted while removing old versions: {path} is exported; the next export with --keep "
                  f"{args.keep} removes the rest.", file=sys.stderr)
            raise
        if removed:
            print(f"Pruned versions {removed}")
        for line in removed.kept_lines():
            print(line)


# --- presets: `tfllm presets` ------------------------------------------------------


PRESET_COMMANDS = {  # which commands take each task's presets (--preset NAME)
    "classify": ["tfllm train --task classify"],
    "generate": ["tfllm train --task generate", "tfllm pretrain --objective causal"],
    "translate": ["tfllm train --task translate"],
    "pretrain": ["tfllm pretrain --objective mlm"],
    "vectors": ["tfllm pretrain --objective vectors"],
}


def _pretrain_presets_help():
    """`pretrain --preset`'s help: each objective's preset names, from the registry (the help showed none)."""
    from tfllm.presets import PRESETS

    prefix = "tfllm pretrain --objective "
    names = [f"{command.removeprefix(prefix)}: {', '.join(sorted(PRESETS[task]))} (tfllm presets {task} NAME)"
             for task, commands in PRESET_COMMANDS.items() for command in commands if command.startswith(prefix)]
    return f"recipe name (default: 'default'); {'; '.join(names)}"


def _train_presets_help():
    """`train --preset`'s help: each task's preset names, from the registry. It said "'finetune' with
    --from-preset" for every task, and `--task generate --preset finetune` was refused: only classify has it."""
    from tfllm.presets import PRESETS

    names = [f"{task}: {', '.join(sorted(PRESETS[task]))}" for task in ("classify", "generate", "translate")]
    return (f"recipe name (default: 'default'; classify with --from-preset: 'finetune'); {'; '.join(names)} "
            "(tfllm presets TASK NAME)")


def cmd_presets(args):
    """The shipped recipes: every task's preset names, or one preset's settings as `--set` writes them."""
    from tfllm.errors import UserInputError
    from tfllm.presets import OPTIONAL_SETTINGS, PRESET_ALIASES, PRESETS, resolve_preset

    if args.task is not None and args.task not in PRESETS:
        raise UserInputError(f"Unknown task {args.task!r}; choose one of {', '.join(PRESETS)}.")
    if args.name is None:
        listing = {task: sorted(presets) for task, presets in PRESETS.items() if args.task in (None, task)}
        if args.json:
            print(json.dumps(listing, indent=2))
            return
        for task, names in listing.items():
            # An alias is listed as what it is, or it reads as a recipe of its own (`mobile` as the phone one).
            aliases = PRESET_ALIASES.get(task, {})
            shown = [f"{name} (= {aliases[name]})" if name in aliases else name for name in names]
            print(f"{task} ({' or '.join(c + ' --preset NAME' for c in PRESET_COMMANDS[task])}): {', '.join(shown)}")
        print("One preset's settings: tfllm presets TASK NAME (e.g. tfllm presets classify default)")
        return
    preset = resolve_preset(args.task, args.name)
    optional = sorted(OPTIONAL_SETTINGS[args.task] - set(preset))
    same_as = PRESET_ALIASES.get(args.task, {}).get(args.name)
    if args.json:
        print(json.dumps({"settings": preset, "optional_settings": optional,
                          **({"same_as": same_as} if same_as else {})}, indent=2))
        return
    if same_as:
        print(f"{args.name} is the same recipe as {same_as} (an old name, kept so that commands using it still work).")
    print(f"{PRESET_COMMANDS[args.task][0]} --preset {args.name} (change any setting with --set KEY=VALUE):")
    for key in sorted(preset):
        print(f"  {key}={json.dumps(preset[key])}")
    print(f"Not set by this preset, but settable with --set: {', '.join(optional)}")


def add_presets_parser(sub):
    p = sub.add_parser("presets", help="the shipped recipes (presets) of each task and their settings")
    p.add_argument("task", nargs="?", default=None, help="classify, generate, translate, pretrain or vectors")
    p.add_argument("name", nargs="?", default=None, help="a preset of that task, e.g. default")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_presets)


# --- serving: `tfllm serve`, `tfllm models` (arguments and logic in tfllm.serving.commands) ---


def add_serving_parsers(sub):
    from tfllm.serving.commands import add_parsers

    add_parsers(sub)


# --- end serving ----------------------------------------------------------------


# --- generation: `tfllm generate` (logic in tfllm.generation) -------------------


def _generate_without_tensorflow(args, stream):
    """`tfllm generate` in NumPy where `tfllm.fast_generation` serves the run (same text, no TensorFlow
    start-up or compilation); False where it does not, and the TensorFlow path runs instead.
    `TFLLM_NUMPY_GENERATION=0` always takes the TensorFlow path (benchmarks compare the two)."""
    from tfllm import fast_generation
    from tfllm.config import MAX_NEW_TOKENS

    if os.environ.get("TFLLM_NUMPY_GENERATION", "1") == "0":
        return False

    stops = args.stop or []
    if not fast_generation.usable(args.prompt, args.max_new_tokens, args.sampler, args.temperature, args.top_k,
                                  args.top_p, stops, MAX_NEW_TOKENS):
        return False
    generator = fast_generation.load(args.run_dir)
    if generator is None or generator.encode(args.prompt) is None:
        return False
    seed = args.seed
    if seed is None:  # as Generator.generate draws one
        import numpy as np

        seed = int(np.random.default_rng().integers(2**31 - 256))
    options = fast_generation.sampler_options(args.sampler, args.temperature, args.top_k, args.top_p)
    generator.generate(args.prompt, args.max_new_tokens, *options, seed, stops=stops, stream_callback=stream)
    return True




def cmd_generate(args):
    from tfllm.errors import UserInputError

    if args.tflite:  # the exported file's prefill/decode loop, greedy (tfllm.export.tflite_causal_lm)
        from tfllm.export.tflite_causal_lm import generate_text
        from tfllm.config import truncate_at_stops

        if args.run_dir:
            raise UserInputError("Pass either RUN_DIR or --tflite FILE, not both.")
        sampling = [f"--{name.replace('_', '-')}" for name in SAMPLING_DEFAULTS if getattr(args, name) is not None
                    and not (name == "sampler" and args.sampler == "greedy")]
        if sampling:
            raise UserInputError(f"--tflite runs the exported model's greedy loop; {', '.join(sampling)} would be "
                                 "ignored. Leave them out, or generate from the RUN_DIR.")
        if any(not stop for stop in args.stop):
            raise UserInputError("Stop strings must not be empty.")
        if args.num_samples != 1:
            raise UserInputError("--tflite decodes greedily, so every sample would be the same text; leave out "
                                 "--num-samples, or generate from the RUN_DIR.")
        text = truncate_at_stops(generate_text(args.tflite, args.prompt, max_new_tokens=args.max_new_tokens), args.stop)
        print(text if args.no_prompt_echo else args.prompt + text)
        return
    from tfllm.config import SAMPLER_OF_OPTION, refuse_unread_options

    sampler = args.sampler or SAMPLING_DEFAULTS["sampler"]
    refuse_unread_options(sampler, {name: getattr(args, name) for name in SAMPLER_OF_OPTION}, flags=True)
    # What was given (None: not), for Generator.generate, which refuses an option its sampler does not read.
    given = {name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "num_beams")}
    for name, default in SAMPLING_DEFAULTS.items():  # unset: the sampler's defaults
        if getattr(args, name) is None:
            setattr(args, name, default)
    from tfllm.config import MAX_NEW_TOKENS
    from tfllm.config import check_sampler_options

    # Before anything is loaded (and the same for the NumPy and TensorFlow paths): a --seed beyond 32 bits
    # was a traceback on one path and wrapped around on the other.
    if not 0 < args.max_new_tokens <= MAX_NEW_TOKENS:
        raise UserInputError(f"--max-new-tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {args.max_new_tokens}.")
    check_sampler_options(args.sampler, args.temperature, args.top_k, args.top_p, args.num_beams, args.seed)
    first_seed = _sample_seeds(args)
    if not args.run_dir:
        if os.path.isdir(args.prompt):  # `tfllm generate RUN`: argparse filled the prompt, which comes first, with it
            raise UserInputError(f"No prompt after the run directory {args.prompt!r}: pass the text to continue, "
                                 f"e.g. tfllm generate {shell_path(args.prompt)} \"ROMEO:\".")
        raise UserInputError("Pass the RUN_DIR of a trained text generator (or --tflite FILE) before the prompt.")
    from tfllm.datasets.text import unix_newlines

    # Line breaks as training read them, on both paths (Generator.generate does it for the TensorFlow one).
    args.prompt = unix_newlines(args.prompt)
    echo = [not args.no_prompt_echo]  # the prompt is printed once input checks have passed
    shown_prompt = args.prompt
    if args.prompt == "":  # a new document: the run's document separator, continued (as tfllm.generate does)
        from tfllm import runs
        from tfllm.datasets.text import document_start

        if os.path.isfile(runs.path(args.run_dir, runs.RUN_CONFIG)):  # else loading the run says what is wrong
            args.prompt = document_start(runs.read_train_config(args.run_dir)) or ""

    def stream(_, text):
        if echo[0]:
            print(shown_prompt, end="")
            echo[0] = False
        print(text, end="", flush=True)

    for i in range(args.num_samples):  # sample i: seed + i, as row i of tfllm.generate([prompt] * N, seed=seed)
        if i:
            print(SAMPLE_SEPARATOR)
            echo[0] = not args.no_prompt_echo
        if first_seed is not None:
            args.seed = first_seed + i
        if not _generate_without_tensorflow(args, stream):
            from tfllm.generation import cached_generator

            generator = cached_generator(args.run_dir)  # kept per process, as cmd_translate keeps its model
            generator.generate(
                [args.prompt], max_new_tokens=args.max_new_tokens, sampler=args.sampler, **given, seed=args.seed,
                stop=args.stop or None, stream_callback=stream,
            )
        stream(0, "\n")


# The line between `tfllm generate --num-samples N`'s samples, as nanoGPT's sample.py prints it (a sample's own
# text may hold blank lines, so a blank line would not tell samples apart).
SAMPLE_SEPARATOR = "---------------"
MAX_SAMPLES = 256  # as many as tfllm.generate takes prompts in one call (tfllm.generation.MAX_PROMPTS)


def _sample_seeds(args):
    """The first sample's seed for `--num-samples N` (sample i takes it + i): the given --seed, or one drawn once
    here when N > 1; None where each call draws its own (one sample, no --seed). Refuses an N the samples
    cannot differ in (greedy or beam decoding) or whose last seed is past 32 bits."""
    from tfllm.config import SEED_RANGE
    from tfllm.errors import UserInputError

    n = args.num_samples
    if not 1 <= n <= MAX_SAMPLES:
        raise UserInputError(f"--num-samples must be from 1 to {MAX_SAMPLES}, got {n}.")
    if n == 1:
        return args.seed
    if args.sampler in ("greedy", "beam") or args.temperature == 0:
        how = f"--sampler {args.sampler}" if args.sampler in ("greedy", "beam") else "--temperature 0"
        raise UserInputError(f"{how} decodes the same text every time, so the {n} samples would not differ; "
                             "use --sampler top_k, top_p or random with a temperature above 0.")
    if args.seed is None:
        import random

        return random.randrange(SEED_RANGE[1] - n + 2)
    if args.seed + n - 1 > SEED_RANGE[1]:
        raise UserInputError(f"--seed {args.seed} with --num-samples {n}: sample i takes seed + i, past the largest "
                             f"seed {SEED_RANGE[1]}; pass a --seed of at most {SEED_RANGE[1] - n + 1}.")
    return args.seed


def add_generation_parsers(sub):
    from tfllm.config import EXPORT_MAX_NEW_TOKENS, MAX_NEW_TOKENS, SAMPLERS

    p = sub.add_parser("generate", help="continue a prompt with a trained text generator (streams as it goes)")
    p.add_argument("run_dir", nargs="?", default=None, help="run directory (omit with --tflite)")
    p.add_argument("prompt", help='text to continue; "" starts a new document (the model continues the blank '
                   "line between the CSV/JSONL rows it was trained on, or a .txt's line break)")
    p.add_argument("--tflite", metavar="FILE", default=None, help="run an exported model.tflite (or its folder) instead (greedy)")
    p.add_argument("--max-new-tokens", type=int, default=500,
                   help=f"1 to {MAX_NEW_TOKENS} (a served SavedModel export: {EXPORT_MAX_NEW_TOKENS} a request at most)")
    # None: unset (SAMPLING_DEFAULTS), so that --tflite can refuse the ones a user gave.
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="default top_k")
    p.add_argument("--temperature", type=float, default=None,
                   help="default 0.8; 0 means greedy (no --seed, --top-k or --top-p with it)")
    p.add_argument("--top-k", type=int, default=None, help="default 200, clamped to the vocabulary size")
    p.add_argument("--top-p", type=float, default=None, help="default 0.9")
    p.add_argument("--num-beams", type=int, default=None, help="default 4, at most 64")
    p.add_argument("--seed", type=int, default=None, help="a 32-bit whole number (-2147483648 to 2147483647)")
    p.add_argument("--stop", action="append", default=[], type=read_escapes,
                   help=r"stop before this string (repeatable); \n, \t, \r and \\ are read as escapes, so "
                        r"--stop '\n' ends at the end of the line: one row's item of a CSV/JSONL run")
    p.add_argument("--no-prompt-echo", action="store_true", help="print only the new text")
    p.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help=f"N texts from the same prompt (1 to {MAX_SAMPLES}), sample i with seed + i (as Python's "
                        f"tfllm.generate([prompt] * N, seed=seed) row i); a line {SAMPLE_SEPARATOR} between them")
    p.set_defaults(func=cmd_generate)


# --- end generation --------------------------------------------------------------


# --- explain: `tfllm explain` (logic in tfllm.explanations) ---------------------


def cmd_explain(args):
    from tfllm import runs
    from tfllm.errors import UserInputError
    from tfllm.explanations import MAX_STEPS, METHODS

    if args.method is not None and args.method not in METHODS:
        raise UserInputError(f"Unknown --method {args.method!r}; choose one of {', '.join(METHODS)}.")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise UserInputError(f"--steps must be from 1 to {MAX_STEPS}, got {args.steps}.")
    if args.html:  # before the work: a folder or a missing one was a traceback after every text was printed
        _check_output_file(args.html, "--html")
    task = runs.explainable_task(args.run_dir)
    # A generator's prompt of spaces is its space tokens, as `tfllm generate` reads it; only "" has none.
    empty = [i for i, text in enumerate(args.texts, 1) if not (text if task == "generate" else text.strip())]
    if empty:
        from tfllm.explanations import empty_text_message

        raise UserInputError(f"Text {empty[0]} is empty; "
                             + empty_text_message(task == "generate", shell_path(args.run_dir)))
    from tfllm.explanations import load_explainer, render_html, render_terminal, unknown_label

    if task == "classify" and args.target is not None and args.target not in runs.read_labels(args.run_dir):
        raise unknown_label(args.target, runs.read_labels(args.run_dir))

    explainer = load_explainer(args.run_dir)
    method = args.method or explainer.default_method(args.steps)  # once: an ensemble's note is one line
    explanations = [explainer.explain(text, method=method, target=args.target, steps=args.steps,
                                      with_attention=bool(args.html))
                    for text in args.texts]
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for explanation in explanations:
        if args.json:
            print(json.dumps(explanation.to_json(), ensure_ascii=False))
        else:
            print(render_terminal(explanation, color=color) + "\n")
    if args.html:
        _write_output(args.html, render_html(explanations), "--html")
        if explanations[0].attention_note:  # the page says so too; once, not once a text
            print(f"tfllm: note: {args.html} has no attention maps: {explanations[0].attention_note}.",
                  file=sys.stderr)
        if not args.json:
            print(f"Wrote {args.html}")


def _write_output(path, text, flag):
    """Writes a file the user named (`runs.write_text`); a write the system refuses (a folder not writable
    even where `os.access` said so, as /sys for root; a name too long) is one line naming the path, not a
    traceback naming a hidden temporary. A full disk stays `_main`'s one line, status 1."""
    from tfllm import runs
    from tfllm.errors import UserInputError, full_disk_file

    try:
        runs.write_text(path, text)
    except OSError as e:
        if full_disk_file(e) is not None:
            raise
        raise UserInputError(f"{flag} {path!r} cannot be written ({e.strerror}); write it elsewhere.") from None


def _check_output_file(path, flag):
    """Refuses an output file that cannot be written, before any work: a folder, or a file in a folder
    that does not exist or cannot be written."""
    from tfllm.errors import UserInputError

    if os.path.isdir(path):
        raise UserInputError(f"{flag} {path!r} is a folder; give a file name, e.g. {os.path.join(path, 'why.html')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise UserInputError(f"{flag} {path!r}: its folder {folder!r} {what}; create it first or write elsewhere.")
    if not os.access(folder, os.W_OK):
        raise UserInputError(f"{flag} {path!r}: its folder {folder!r} is not writable; write elsewhere.")
    try:
        os.stat(path)  # a name longer than the system takes fails here, before the work
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserInputError(f"{flag} {path!r} cannot be written ({e.strerror}); write it elsewhere.") from None


def add_explain_parsers(sub):
    p = sub.add_parser("explain", help="which tokens made a classifier (or a generator's next token) say what it says")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="+", metavar="text", help="texts to explain (a generator: prompts)")
    p.add_argument("--method", default=None,
                   help="integrated_gradients (default; an ensemble's: occlusion), attention (maps and rollout) "
                        "or occlusion")
    p.add_argument("--target", default=None, metavar="LABEL",
                   help=r"the label to explain, by name, not index (a generator: the next token, \n for a newline); "
                        "default the predicted one")
    p.add_argument("--steps", type=int, default=None, help="integrated gradients' steps (default 50)")
    p.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained page with attention maps (none for an ensemble: explain a member)")
    p.add_argument("--json", action="store_true",
                   help='print {"label", "probabilities", "method", "target" (null for attention), "tokens": [{"token", "text", "score"}]} '
                        'per text, plus "completeness", "tokens_left_out", "views" ({view: score}) and "views_note" where they apply')
    p.set_defaults(func=cmd_explain)


# --- end explain -----------------------------------------------------------------


# --- tune: `tfllm tune` (logic in tfllm.tuning) ---------------------------------


def cmd_tune(args):
    from tfllm.config import TrainConfig
    from tfllm.tuning import read_space, tune

    space = read_space(args.space) if args.space else None
    config = TrainConfig(task=args.task, data=args.data, run_dir=args.run_dir, preset=args.preset,
                         text_column=args.text_column, label_column=args.label_column, split_column=args.split_column,
                         source_column=args.source_column, target_column=args.target_column, labels=args.labels,
                         seed=args.seed, max_rows=args.max_rows, overrides=dict(args.set))
    summary = tune(config, algorithm=args.algorithm, max_trials=args.max_trials, max_minutes=args.max_minutes,
                   objective=args.objective, space=space)
    best = summary["best"]
    print(f"\n{summary['num_completed']} trial(s) completed; details in {os.path.join(args.run_dir, 'tuning.json')}")
    if summary.get("note"):
        print(f"Note: {summary['note']}.")
    if best:
        print(f"Best: {best['trial']} {summary['objective']['name']}={best['objective']:.4f} "
              f"{json.dumps(best['values'])}")
        uses = {"classify": "predict, explain", "generate": "generate from", "translate": "translate with"}[args.task]
        print(f"Best run (export, evaluate, {uses} it): {os.path.join(args.run_dir, best['copied_to'])}  "
              f"(TensorBoard HParams: tensorboard --logdir {shell_path(args.run_dir)})")


def add_tune_parsers(sub):
    p = sub.add_parser("tune", help="search hyperparameters (KerasTuner); every trial a run, the best kept in DIR/best")
    p.add_argument("--task", choices=["classify", "generate", "translate"], default="classify")
    p.add_argument("--data", required=True, help="as for tfllm train")
    p.add_argument("--run-dir", required=True, help="the search directory (rerun to continue the search)")
    p.add_argument("--algorithm", default="random", help="random (default), bayesian or hyperband")
    p.add_argument("--max-trials", type=int, default=10, help="trials in the whole search (default 10)")
    p.add_argument("--max-minutes", type=float, default=None, help="start no new trial after this many minutes")
    p.add_argument("--objective", default=None,
                   help="val_accuracy (classifiers' default) or val_loss (generators' and translators')")
    p.add_argument("--space", default=None, metavar="FILE",
                   help='JSON (or YAML) of the settings to search, e.g. {"hidden_dim": [32, 64], '
                        '"learning_rate": {"min": 1e-4, "max": 3e-3, "sampling": "log"}}; default: around the preset')
    p.add_argument("--preset", default="default", help="the recipe the space centres on")
    p.add_argument("--set", action="append", type=parse_setting, default=[], metavar="KEY=VALUE",
                   help="fix a setting for every trial (repeatable)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--split-column", default=None)
    p.add_argument("--source-column", default=None)
    p.add_argument("--target-column", default=None)
    p.add_argument("--labels", type=_csv_list, default=None)
    p.add_argument("--seed", type=_seed, default=1337, help="seeds the split, every trial and the search")
    p.add_argument("--max-rows", type=_count, default=None,
                   help="as tfllm train's (classify, translate: N rows in all, split into train, val and test)")
    p.set_defaults(func=cmd_tune)


# --- end tune ---------------------------------------------------------------------


# --- translation: `tfllm translate` (logic in tfllm.translation) ----------------


MEMORY_HELP = ("use a translation memory: 'train' (the run's training pairs) or a file of pairs with the run's "
               "columns; a source gets the target of one of its 8 best matches (the model breaks near-ties), or is "
               "translated by the model when nothing matches")


LM_HELP = ("fuse an n-gram model of target-language text with the decoder: a bundled corpus (zh_news) or a "
           ".txt/.csv/.jsonl file; the run's training targets always join it")
INPUT_METHOD_HELP = ("pinyin -> characters: candidates from an input method (each syllable's characters, counted in "
                     "the training pairs, scored by the n-gram model of --lm and how often each whole candidate "
                     "occurs in --lm's text), the model choosing among them")


# Unset, so that an option the chosen decoding does not read can be refused (they were accepted and ignored).
# temperature, top_k, top_p and num_beams: the translator's own (`Translator.translate`), which an unset one takes
# (and which refuses a temperature given to greedy or beam search).
TRANSLATE_DEFAULTS = {"lm_weight": 0.5}


def _translate_sampler(args):
    """The sampler `translate` runs, after refusing the options it would ignore; fills in the defaults."""
    from tfllm.config import refuse_unread_at_temperature_0
    from tfllm.errors import UserInputError

    # As `Translator.translate` chooses it; an unset --num-beams is then its TRANSLATE_BEAMS (it was 1: greedy).
    sampler = args.sampler or ("beam" if args.num_beams not in (None, 1) else "greedy")
    readers = {"top_k": ["top_k"], "top_p": ["top_p"], "temperature": ["top_k", "top_p"], "seed": ["top_k", "top_p"],
               "num_beams": ["beam"]}
    for name, samplers in readers.items():
        given = getattr(args, name) is not None and not (name == "num_beams" and args.num_beams == 1)
        # --temperature 0 means greedy (its help, and `tfllm.translate(..., temperature=0)`), which the default
        # sampler is: accepted as `tfllm generate --temperature 0` is; a --sampler named beside it still decides.
        given = given and not (name == "temperature" and args.temperature == 0 and args.sampler is None
                               and sampler == "greedy")
        if given and sampler not in samplers:
            flag, reader = f"--{name.replace('_', '-')}", " or ".join(samplers)
            raise UserInputError(f"{flag} is for --sampler {reader}, and the sampler is {sampler}; add --sampler "
                                 f"{samplers[0]} or leave {flag} out.")
    refuse_unread_at_temperature_0(args.temperature, {name: getattr(args, name) for name in readers}, flags=True)
    if args.lm_weight is not None and not args.lm:
        raise UserInputError("--lm-weight weighs the scores of --lm; add --lm CORPUS or leave --lm-weight out.")
    if (args.source_column or args.target_column) and args.memory in (None, "train"):
        raise UserInputError("--source-column and --target-column name the columns of a --memory file; add "
                             "--memory PAIRS or leave them out.")
    for name, default in TRANSLATE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return sampler


TRANSLATE_CHUNK = 256  # sources translated (and printed) at a time: a large --file is answered as it is read


def cmd_translate(args):
    from tfllm import runs
    from tfllm.training.seq2seq import run_columns

    runs.require_task(args.run_dir, "translate")
    sampler = _translate_sampler(args)
    # A file of pairs like the run's own is read in its source column; a run trained on a .txt of pairs has
    # none (None), which read_sources says to a CSV/JSONL instead of looking for a column 'text'.
    source = run_columns(runs.read_train_config(args.run_dir))[0]
    from tfllm.datasets.pairs import read_sources

    texts = _input_texts(args, "translate", "a sentence", source or "text",
                         read=lambda path, _: read_sources(path, args.text_column or source,
                                                           named=args.text_column is not None))
    from tfllm.training.seq2seq import run_decoding_aids, run_memory
    from tfllm.translation import SourceNotes, cached_translator, translate

    # Kept per process, as `tfllm.translation.translate` keeps it: a notebook (or a test) calling
    # `tfllm.cli.main(["translate", ...])` again neither reloads the model nor compiles its decoding again.
    translator = cached_translator(args.run_dir)
    lm, method = run_decoding_aids(translator, args.run_dir, args.lm, args.input_method)
    memory = run_memory(args.run_dir, args.memory, args.source_column, args.target_column,
                        named=True) if args.memory else None
    # Warned about once, with the totals of every chunk (each chunk warned of its own: "46 source(s) are
    # longer...", then "9 source(s)...", where tfllm.translate says 55), after the translations printed.
    notes, read = SourceNotes(), 0
    try:
        for chunk in iter(lambda: list(itertools.islice(texts, TRANSLATE_CHUNK)), []):
            given = [text for text in chunk if text]  # a --file's blank line ("") is answered by a blank line
            # A refusal numbers a text as the input does, blank lines counted (it counted within the chunk).
            numbers = [read + i for i, text in enumerate(chunk, 1) if text]
            read += len(chunk)
            given = translator.check_sources(given, numbers=numbers, note=False) if given else []  # noted by translate
            translations = iter(translate(
                translator, given, sampler=sampler, num_beams=args.num_beams if sampler == "beam" else None,
                max_new_tokens=args.max_new_tokens, top_k=args.top_k, top_p=args.top_p,
                # Not to greedy decoding: --temperature 0 alone, accepted above, means it (the translator refuses a
                # temperature given with sampler='greedy', which the command has resolved the sampler to).
                temperature=args.temperature if sampler in ("top_k", "top_p") else None, seed=args.seed, warn=False,
                lm=lm if args.lm else None, lm_weight=args.lm_weight, memory=memory, input_method=method, notes=notes)
                if given else [])
            for text in chunk:
                print(next(translations) if text else "", flush=True)
    finally:  # of the lines translated before an error too
        notes.warn()


def add_translation_parsers(sub):
    p = sub.add_parser("translate", help="translate texts with a trained translation model (one output a line)")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", default=None, metavar="PATH",
                   help="translate each line of a text file (- for standard input; a blank line gives a blank "
                        "line), each row of a CSV/JSONL, "
                        "or the source of each pair of a .txt of tab-separated pairs")
    p.add_argument("--text-column", default=None,
                   help="--file CSV/JSONL: the column to translate (default: the run's source column; a run trained "
                        "on a .txt of pairs has no column name: pass it); a .txt of "
                        "tab-separated pairs: the field's number (default 1, or the run's source column's)")
    p.add_argument("--sampler", choices=["greedy", "beam", "top_k", "top_p"], default=None,
                   help="default: beam with --num-beams > 1, else greedy")
    p.add_argument("--num-beams", type=int, default=None,
                   help="1 to 64 (default 4 with --sampler beam); above 1 without --sampler: beam search")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's longest output")
    p.add_argument("--top-k", type=int, default=None, help="top_k (default 10)")
    p.add_argument("--top-p", type=float, default=None, help="top_p (default 0.9)")
    p.add_argument("--temperature", type=float, default=None,
                   help="top_k and top_p (default 1.0; 0 means greedy, with no --seed, --top-k or --top-p)")
    p.add_argument("--seed", type=int, default=None, help="a 32-bit whole number (-2147483648 to 2147483647)")
    p.add_argument("--lm", default=None, metavar="CORPUS", help=LM_HELP)
    p.add_argument("--lm-weight", type=float, default=None, help="weight of the --lm scores, 0 to 100 (default 0.5)")
    p.add_argument("--memory", default=None, metavar="PAIRS", help=MEMORY_HELP)
    p.add_argument("--input-method", action="store_true", help=INPUT_METHOD_HELP)
    p.add_argument("--source-column", default=None, help="the --memory file's source column (default: the run's)")
    p.add_argument("--target-column", default=None, help="the --memory file's target column (default: the run's)")
    p.set_defaults(func=cmd_translate)


# --- end translation -------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations of its options: `predict RUN --text "x"` was read as
    --text-column (and a message about that), and an abbreviation that works today breaks when an option
    is added."""

    def __init__(self, *args, allow_abbrev=False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def build_parser():
    from tfllm import __version__

    parser = _Parser(prog="tfllm", description="Train, export and serve small Transformer language models.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)  # each a _Parser too
    parser.commands = sub.choices  # name -> its parser, whose usage its errors print

    def add_run_arguments(p, tasks):
        p.add_argument("--task", choices=tasks, default=tasks[0])
        p.add_argument("--from-preset", default=None, metavar="PRESET",
                       help="start from a tfllm run directory, a local KerasHub preset folder, or a KerasHub handle / "
                            "kaggle:// / hf:// URI (online)")
        p.add_argument("--set", action="append", type=parse_setting, default=[], metavar="KEY=VALUE",
                       help="override any setting of the preset (repeatable), e.g. --set hidden_dim=64 "
                            "--set freeze_epochs=2 (the new head alone for 2 epochs first; one warm-up + cosine "
                            "schedule spans the whole run); a misspelt one is refused")
        p.add_argument("--overwrite", action="store_true", help="replace a finished run in --run-dir (kept until "
                                                                "the new one finishes)")

    p = sub.add_parser("train", help="train (or fine-tune) a classifier, a text generator or a translator")
    add_run_arguments(p, ["classify", "generate", "translate"])
    p.add_argument("--data", required=True, help="bundled name (rotten_tomatoes, rotten_tomatoes_3class, shakespeare, zh_news, cedict) or a file/folder")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--split-column", default=None, help="column with train/val/test (default: a seeded stratified split)")
    p.add_argument("--source-column", default=None,
                   help="translate: the column to translate (cedict: simplified; a tab-separated .txt: 1)")
    p.add_argument("--target-column", default=None, help="translate: its translation (cedict: english; .txt: 2)")
    p.add_argument("--labels", type=_csv_list, default=None,
                   help="keep only these labels, e.g. rotten,fresh (the last is positive), exactly as the data writes them")
    p.add_argument("--preset", default=None, help=_train_presets_help())
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default=None,
                   help="default: the preset's (not with --from-preset, which brings its own)")
    p.add_argument("--epochs", type=int, default=None, help="classify, translate: passes over the data (classify: 0 "
                   "with --from-preset keeps its trained classifier as it is); generate: evaluation intervals "
                   "(instead of --steps)")
    p.add_argument("--steps", type=int, default=None,
                   help="generate: training steps (0 with --from-preset: the preset as it is, scored on the text)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--run-dir", default=None, help="where the model, logs and metrics go (default runs/<data>)")
    p.add_argument("--seed", type=_seed, default=1337)
    p.add_argument("--max-rows", type=_count, default=None,
                   help="classify: a seeded, stratified sample of N rows, split into train, val and test (N in "
                        "all, not N to train on); translate: a seeded sample of N pairs, split likewise; generate: the "
                        "first N characters of the training split, and N/9 of the validation split")
    p.add_argument("--strategy", default="auto", help="auto, default, mirrored, multi_worker or tpu")
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None, help="XLA-compile the train step")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="classify: train N seeds (--seed, +1, ...) in RUN_DIR/members/ and save one model that "
                        "averages their probabilities (1: one model)")
    p.add_argument("--unlabeled", default=None, metavar="DATA",
                   help="classify: texts without labels (a .txt, a CSV/JSONL text column, a folder, a bundled name) "
                        "for self-training: a teacher labels the ones it is surest of, which join the training split")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pretrain", help="pretrain an encoder (masked LM) or a decoder (next token) on unlabeled text")
    p.add_argument("--data", required=True,
                   help=".txt/.txt.gz (one document per line), a folder of .txt files, a CSV/JSONL (--text-column) "
                        "or a bundled name (zh_news, shakespeare, rotten_tomatoes)")
    p.add_argument("--objective", choices=["mlm", "causal", "vectors"], default="mlm",
                   help="mlm: an encoder as a masked LM; causal: a decoder on the next token; vectors: an encoder "
                        "whose token embedding holds count-based word vectors of the text (seconds; pays with "
                        "little text and few labels)")
    p.add_argument("--from-preset", default=None, metavar="PRESET", help="continue pretraining this preset")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --run-dir")
    p.add_argument("--set", action="append", type=parse_setting, default=[], metavar="KEY=VALUE",
                   help="override any setting of the preset (repeatable), e.g. --set sequence_length=64")
    p.add_argument("--text-column", default="text")
    p.add_argument("--preset", default="default", help=_pretrain_presets_help())
    p.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default=None)
    p.add_argument("--steps", type=int, default=None, help="mlm, causal: training steps")
    p.add_argument("--epochs", type=int, default=None,
                   help="mlm, causal: evaluation intervals of the preset's eval_interval steps each (instead of "
                        "--steps), not passes over the text: --epochs N trains N x eval_interval steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--seed", type=_seed, default=1337)
    p.add_argument("--max-rows", type=_count, default=None, help="read only the first N documents")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--precision", default="float32", choices=PRECISIONS)
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=cmd_train, task="pretrain", label_column="label", split_column=None, labels=None)

    p = sub.add_parser("evaluate", help="metrics of a trained model on a dataset split (classifiers: accuracy, F1, ...; "
                                        "generators: loss and perplexity; masked-LM pretraining: loss and "
                                        "masked_accuracy)")
    p.add_argument("run_dir")
    p.add_argument("--data", default=None,
                   help="default: the training data, split as the run split it; another file is scored whole, "
                        "or its --split where --split-column names each row's")
    p.add_argument("--text-column", default=None, help="default: the run's")
    p.add_argument("--label-column", default=None, help="default: the run's")
    p.add_argument("--split-column", default=None)
    p.add_argument("--source-column", default=None, help="translation runs: the source column of --data")
    p.add_argument("--target-column", default=None, help="translation runs: the target column of --data")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="classifiers and translation runs (default test); a generator or pretraining run scores "
                        "its validation text")
    p.add_argument("--memory", default=None, metavar="PAIRS",
                   help="translation runs: " + MEMORY_HELP)
    p.add_argument("--lm", default=None, metavar="CORPUS", help="translation runs: " + LM_HELP + " (weight 0.5)")
    p.add_argument("--input-method", action="store_true", help="translation runs: " + INPUT_METHOD_HELP)
    # As `tfllm translate`'s, so greedy and beam search compare on the same pairs (the README does).
    p.add_argument("--sampler", choices=["greedy", "beam"], default=None,
                   help="translation runs: default beam with --num-beams > 1, else greedy")
    p.add_argument("--num-beams", type=int, default=None,
                   help="translation runs: 1 to 64 (default 4 with --sampler beam); above 1: beam search")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="labels and probabilities for some texts (one JSON line each)")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", default=None, metavar="PATH",
                   help="classify each non-blank line of a text file (- for standard input; each answer names "
                        "its text), or each row of a CSV/JSONL")
    p.add_argument("--text-column", default=None, help="--file CSV/JSONL: the column to classify (default: the run's)")
    p.add_argument("--top-k", type=_count, default=None, metavar="K",
                   help='"probabilities" holds only the K most likely labels, most likely first (default: all '
                        "labels, in the run's order); \"label\" is the most likely as always")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run as a TF Serving SavedModel or a TFLite file")
    p.add_argument("run_dir")
    p.add_argument("--name", default=None, help="model name: the folder under savedmodels/ (not with --out)")
    p.add_argument("--base-dir", default=None, help="the folder of models (default: savedmodels; not with --out)")
    p.add_argument("--format", choices=["saved_model", "tflite"], default="saved_model")
    p.add_argument("--quantize", default="none", help="tflite only: none, dynamic, float16, or int8 (classifiers only: "
                   "generators and translators take none, dynamic or float16)")
    p.add_argument("--out", default=None, help="tflite only: write here instead of savedmodels/NAME/VERSION/")
    p.add_argument("--keep", type=int, default=None, help="then delete all but the newest N versions")
    p.set_defaults(func=cmd_export)

    add_serving_parsers(sub)
    add_generation_parsers(sub)
    add_translation_parsers(sub)
    add_explain_parsers(sub)
    add_tune_parsers(sub)
    add_presets_parser(sub)
    return parser


def main(argv=None):
    from tfllm._env import (filter_tensorflow_import_log, quiet_gpu_probe, skip_keras_extras, tensorflow_backend,
                            utf8_standard_streams)

    quiet_gpu_probe()  # before anything imports TensorFlow; see its docstring
    if argv is None:  # the `tfllm` command's own process, not `main([...])` in a notebook
        tensorflow_backend()  # KERAS_BACKEND=jax was a traceback; see its docstring
        utf8_standard_streams()  # a label such as 好 printed in an ASCII locale; see its docstring
        skip_keras_extras()  # a second off every command's start-up; see its docstring
        filter_tensorflow_import_log()  # TF_CPP_MIN_LOG_LEVEL for the lines TensorFlow 2.21 logs as it loads
        status = _main(argv)
        if "tensorflow" in sys.modules and threading.current_thread() is threading.main_thread():
            _exit_without_teardown(status)
        return status
    return _main(argv)


def _exit_without_teardown(status):
    """Ends the `tfllm` command's process once its work is done, without the interpreter's teardown.

    With TensorFlow loaded, Python's exit took 1.0-1.2 s after the command had returned (2026-12-03, 2-core
    AMD EPYC; 1.4-2.5 s after a training run in benchmarks/results/vs_torch.json): tearing down TensorFlow's
    modules and its library's C++ state, past what `atexit` runs. Everything the command writes is closed by
    then (atomic writes, TensorBoard writers flushed and closed), so this does what the exit would have done
    for it, in Python's order (`Py_FinalizeEx`): stops thread pools and waits for threads that are not daemons,
    runs the `atexit` functions (logging's flush, temporary folders' clean-up), flushes the standard streams,
    then `os._exit(status)`.
    """
    import atexit

    # PRIVATE API: threading._shutdown and atexit._run_exitfuncs are the two calls Python's own exit makes
    # (CPython's Python/pylifecycle.c); there is no public way to make them early. _shutdown also wakes idle
    # thread-pool workers (concurrent.futures registers that with it), which joining every thread would wait
    # on forever. tests/test_private_apis.py checks both.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`), a closed stream: as Python's exit, nothing to do
            pass
    os._exit(status)


def _option_like(arg):
    """Whether argparse would read `arg` as an option: a leading '-', but not '-' alone or a negative number
    or a text with a space in it ("-1 star"), which it reads as positionals."""
    return arg.startswith("-") and arg != "-" and " " not in arg and not re.fullmatch(r"-\d+(\.\d*)?", arg)


def _main(argv):
    from tfllm import errors
    from tfllm.errors import Terminated, UserInputError, WorkerLost, disk_full_message

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # as parse_args, which errors on `unknown` in these words
    if unknown:
        words = not any(_option_like(arg) for arg in unknown)
        if words and getattr(args, "func", None) is cmd_generate and not args.run_dir and len(unknown) == 1:
            # `generate RUN --top-k 5 PROMPT` (or `--tflite FILE PROMPT`): argparse took RUN for the prompt and left
            # PROMPT over ("unrecognized arguments"); with --tflite, cmd_generate refuses the run directory in words.
            args.run_dir, args.prompt = args.prompt, unknown[0]
        elif words and isinstance(getattr(args, "texts", None), list):
            # `predict RUN --top-k 2 TEXT` (and translate's): argparse gives a `nargs="*"` positional its empty
            # list when it meets RUN, so texts after an option were left over; explain's `nargs="+"` waits for them.
            args.texts.extend(unknown)
        else:  # the subcommand's usage, not `usage: tfllm [-h] [--version]`
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    # `kill` (SIGTERM: a job scheduler, `timeout`, a closed terminal) stops a command as Ctrl-C does, so a
    # training backs up its state to resume from, or puts back the run it was to replace. Both are kept
    # as well as raised, in case Python drops the exception where the signal lands (errors.request_stop);
    # a Ctrl-C only where Python's own handler is set (not where SIGINT is ignored, as under `nohup`).
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {}
    if in_main_thread:
        handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, _terminate)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            handlers[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    errors.clear_stop()
    running, errors.command_running = errors.command_running, True  # its errors name its flags (errors.py)
    try:
        with _warnings_as_lines():
            _check_text_arguments(args)
            _expand_home(args)
            args.func(args)
        errors.raise_if_stopping()  # a stop that came in a `__del__` (errors.request_stop)
    except UserInputError as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        return 2
    except WorkerLost as e:  # not the user's input: status 1, one line, no gRPC traceback
        print(f"tfllm: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # What reads the output went away (`tfllm predict ... | head`): stop as a Unix tool that SIGPIPE ends
        # does, without a traceback; stdout goes to /dev/null so that Python's flush at exit does not fail again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # not a real file (a notebook's or pytest's captured stdout)
            pass
        return 128 + getattr(signal, "SIGPIPE", 13)
    except Exception as e:
        # A full disk: one line too, with status 1, as a failure that is not the user's input (what a run
        # or an export leaves then is as after any failure: nothing half-written, a backup to resume from).
        message = disk_full_message(e)
        if message is None:
            raise
        print(f"tfllm: error: {message}", file=sys.stderr)
        return 1
    except Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        return 130
    finally:
        errors.command_running = running
        errors.clear_stop()
        for signum, handler in handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    return 0


# The arguments that name files and folders (argparse dests, every subcommand's).
PATH_ARGUMENTS = ("run_dir", "data", "unlabeled", "from_preset", "file", "lm", "memory", "tflite", "html", "space",
                  "base_dir", "out", "model_base_path", "model_base_path_flag", "model_config_file")


def _expand_home(args):
    """`~` at the start of a path argument is the home folder. The shell expands it only where it starts a
    word: `--base-dir=~/models`, a quoted '~/models' or a Makefile variable reached tfllm as is, and made a
    folder named `~` in the working directory."""
    for name in PATH_ARGUMENTS:
        if getattr(args, name, None) is not None:
            setattr(args, name, expand_home(getattr(args, name)))


@contextlib.contextmanager
def _warnings_as_lines():
    """tfllm's warnings (`errors.warn`) as the command's own lines, `tfllm: warning: MESSAGE` on stderr as
    `tfllm: error: ...` is, without the file and line of the code that warned; each time one happens, not
    once per place as Python's default shows them (`predict --file` warns of each text it cannot read).
    Other warnings go to the `showwarning` there was (Python's, or pytest's capture in a test). The filter
    and `showwarning` are the process's, so a server's request threads print theirs the same way."""
    from tfllm.errors import TfllmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", TfllmWarning)
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, TfllmWarning):
                print(f"tfllm: warning: {message}", file=sys.stderr, flush=True)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _check_text_arguments(args):
    """Refuses texts and prompts that are not UTF-8 (Python keeps such bytes of argv as lone surrogates,
    which every tokenizer then fails on with a traceback). Paths may hold such bytes; they are left alone.

    Where the locale's encoding is not UTF-8 (`LC_ALL=POSIX`: ASCII), Python keeps every non-ASCII byte so,
    UTF-8 text's too: a text whose original bytes (`os.fsencode`) are UTF-8 is read as such, not refused."""
    from tfllm.errors import UserInputError

    def recovered(text):
        if not any("\udc80" <= c <= "\udcff" for c in text):
            return text
        try:
            return os.fsencode(text).decode("utf-8")
        except UnicodeError:
            return None

    prompt = getattr(args, "prompt", None)
    texts = getattr(args, "texts", None) or []
    for i, text in enumerate([prompt or "", *texts]):
        if recovered(text) is None:
            what = "The prompt" if i == 0 else f"Text {i}"
            raise UserInputError(f"{what} is not valid UTF-8 ({text.encode('utf-8', 'surrogateescape')[:60]!r}); "
                                 "pass UTF-8 text (check the terminal's or the script's encoding).")
    if prompt:
        args.prompt = recovered(prompt)
    if texts:
        args.texts = [recovered(text) for text in texts]


def _terminate(signum, frame):
    from tfllm import errors

    errors.request_stop(errors.Terminated, frame)


def _interrupt(signum, frame):
    from tfllm import errors

    errors.request_stop(KeyboardInterrupt, frame)


if __name__ == "__main__":
    sys.exit(main())
