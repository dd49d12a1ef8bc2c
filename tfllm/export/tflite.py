"""Run directory -> TFLite files a phone can run, with a parity report: `tfllm export --format tflite`.

The front door: it checks the run and the quantization mode, and writes the
files of `tfllm.export.tflite_classifier` (classifiers; its docstring
describes the folder) or `tfllm.export.tflite_causal_lm` (text generators)
(translation models: `tfllm.export.tflite_seq2seq`, which checks its own) into a temporary folder that is renamed into place at the end, so a failed
export leaves nothing behind. The per-model modules share
`tfllm.export.tflite_runtime` and do not import each other.
"""

import json
import os

from tfllm import runs
from tfllm.errors import UserInputError
from tfllm.export.tflite_causal_lm import export_causal_lm_files
from tfllm.export.tflite_classifier import (  # noqa: F401  (the names users and benchmarks read here)
    IDS_FILE, TEXT_FILE, export_classifier_files)
from tfllm.export.tflite_seq2seq import export_seq2seq_tflite
from tfllm.export.tflite_runtime import load_interpreter, require_tflite, run_signature  # noqa: F401  (public here too)
from tfllm.export.versioning import atomic_version_dir, write_out_dir

QUANTIZE_MODES = {
    "classify": ("none", "dynamic", "float16", "int8"),
    # Full-integer quantization of the key/value cache inputs and outputs would
    # change what a decode step hands to the next one; not offered.
    "generate": ("none", "dynamic", "float16"),
}


# --------------------------------------------------------------------------- run directory


def check_run_dir(run_dir):
    """The run's config as a dict, or `UserInputError` if the run is missing or unfinished."""
    if not os.path.isdir(run_dir):
        raise UserInputError(f"Run directory {run_dir!r} does not exist. {runs.pass_a_run()}")
    task = runs.exportable_task(run_dir)
    return {**runs.read_config(run_dir), "task": task}  # a causal pretraining run exports as the generator it is


# --------------------------------------------------------------------------- entry point


def export_tflite(run_dir, name, base_dir="savedmodels", quantize="none", out=None):
    """Exports a finished run to TFLite; returns the folder written.

    The folder is `base_dir/name/<next version>/`, or `out` if given. Pick a
    `name` of its own (e.g. `reviews-tflite`): TF Serving polls
    `savedmodels/NAME` and expects SavedModels there.

    Args:
        run_dir: a finished `tfllm train` run (classifier, text generator or
            translation model) or a causal pretraining run.
        name: model name, the folder under `base_dir`.
        base_dir: root of the versioned export folders.
        quantize: `none` (float32), `dynamic` (int8 weights), `float16`
            (float16 weights) or `int8` (weights and activations, calibrated on
            the run's training split; classifiers only).
        out: write here instead of a versioned folder.

    Raises:
        UserInputError: the run is missing or half-written, `quantize` does not
            apply to the model kind, or int8 has too little calibration data.
    """
    require_tflite("A TFLite export")  # it runs the converted model to check its parity
    run_dir = runs.run_dir_argument(run_dir, "export_tflite")
    config = check_run_dir(run_dir)
    task = config.get("task", "classify")
    if task == "translate":  # its encode and decode steps, as `tfllm export --format tflite` writes them
        return export_seq2seq_tflite(run_dir, name, base_dir=base_dir, quantize=quantize, out=out)
    modes = QUANTIZE_MODES.get(task, ())
    if quantize not in modes:
        raise UserInputError(
            f"--quantize {quantize!r} is not supported for a {'classifier' if task == 'classify' else 'text generator'}; "
            f"choose one of {', '.join(modes)}."
        )
    export_files = export_classifier_files if task == "classify" else export_causal_lm_files

    def write(directory):
        parity = export_files(run_dir, config, directory, quantize)
        runs.write_json(os.path.join(directory, "parity.json"), parity)

    if out is not None:
        return write_out_dir(out, write, task=task)
    with atomic_version_dir(base_dir, name, fmt="tflite") as version:
        write(version.tmp_dir)
    return version.path


def read_parity(export_dir):
    """The parity report an export wrote, as pretty JSON text."""
    with open(os.path.join(export_dir, "parity.json"), encoding="utf-8") as f:
        return json.dumps(json.load(f), indent=2)


def parity_warning(export_dir):
    """A line for the user when parity.json has a `note` (parity not checked, or checked on degenerate
    reference outputs), or when the string model read some checked texts unlike the Keras model (TF Text's
    TFLite normalizer strips accents as it lowercases; docs/architecture.md); else None."""
    with open(os.path.join(export_dir, "parity.json"), encoding="utf-8") as f:
        parity = json.load(f)
    if parity.get("note"):
        return f"note: {parity['note']}."
    differ = parity.get(TEXT_FILE, {}).get("texts_tokenized_differently", 0)
    if not differ:
        return None
    return (f"note: {TEXT_FILE} tokenized {differ} of the {parity['num_examples']} texts checked unlike the Keras "
            "model (TF Text's TFLite ops strip accents as they lowercase and treat some spaces differently), so its "
            f"answers for them may differ; {IDS_FILE}, given the run's own tokenizer's ids, reads them as Keras does.")
