"""The private Keras, KerasHub and TFLite names tfllm relies on still exist.

Each check fails with the place in tfllm that uses the name, where a comment
(marked `PRIVATE API` / `PRIVATE BEHAVIOUR`) names the upstream issue and says
what the code works around. When one fails after an upgrade, read that comment
first: the fix may be to drop the workaround (if upstream fixed the bug) or to
follow the rename. `pyproject.toml` pins keras and keras-hub to the tested minor
versions so that this only happens on purpose.
"""

import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def where(path, marker):
    """`path:line` of the first line of `path` containing `marker`, for failure messages."""
    for number, line in enumerate((ROOT / path).read_text().splitlines(), 1):
        if marker in line:
            return f"{path}:{number}"
    return f"{path} (search for {marker!r})"


def require(condition, what, path, marker):
    if not condition:
        pytest.fail(f"{what} is gone or changed. tfllm relies on it at {where(path, marker)}; "
                    "read the comment there (upstream issue, what it works around) before changing the pin.")


# (private name, file that uses it, marker on the commented line, upstream reference the comment must name)
COMMENTED_USES = [
    ("_maybe_symbolic_build", "tfllm/training/common.py", "PRIVATE API: Keras's `Model._maybe_symbolic_build`",
     "keras-team/keras#20585"),
    ("train_step", "tfllm/training/common.py", "PRIVATE BEHAVIOUR: Keras's make_train/test_function",
     "keras-team/keras#20585"),
    ("_clip_gradients", "tfllm/training/causal_lm.py", "PRIVATE API: overrides Keras's `BaseOptimizer._clip_gradients`",
     "tensorflow/tensorflow#33929"),
    ("_experimental_custom_op_registerers", "tfllm/export/tflite_runtime.py",
     "PRIVATE API: `TargetSpec._experimental_custom_op_registerers`", "tensorflow/tensorflow#42643"),
    ("pretokenize", "tfllm/tokenizers.py", "PRIVATE API: KerasHub's `pretokenize`", "huggingface/tokenizers#1004"),
    ("_get_variable_index", "tfllm/training/optimizers.py", "PRIVATE API: Keras's optimizer internals",
     "keras-team/keras#19992"),
    ("_jit_compile", "tfllm/training/common.py", "PRIVATE API: Keras's `Trainer._jit_compile`",
     "keras-team/keras#19521"),
    ("_save_model", "tfllm/training/common.py", "PRIVATE API: overrides Keras's `BackupAndRestore._save_model`",
     "keras-team/keras#20463"),
    ("_load_model", "tfllm/training/common.py", "PRIVATE API: Keras's `BackupAndRestore._load_model`",
     "keras-team/keras#20463"),
    ("_val_writer", "tfllm/training/common.py", "PRIVATE API: Keras's `TensorBoard._val_writer`",
     "callbacks/tensorboard.py"),
    ("_should_save_model", "tfllm/training/common.py", "PRIVATE API: overrides Keras's `ModelCheckpoint._save_model`",
     "keras-team/keras#20463"),
    ("_self_attention_layer", "tfllm/explanations.py",
     "PRIVATE API: KerasHub's `TransformerEncoder._self_attention_layer`", "keras-team/keras-hub#1644"),
    ("DEBUG", "tfllm/tuning.py", "PRIVATE API: `keras_tuner.src.config.DEBUG`", "keras-team/keras-tuner#761"),
    ("_save_trial", "tfllm/tuning.py", "PRIVATE API: KerasTuner 1.4's `Oracle.end_trial`", "oracle.py"),
    ("_allow_python_workflow", "tfllm/data.py", "PRIVATE API: KerasHub's `_allow_python_workflow`",
     "keras-team/keras-hub#2948"),
    ("no_convert_scope", "tfllm/data.py", "PRIVATE API: KerasHub's `no_convert_scope`", "keras-team/keras-hub#2948"),
    ("_default_save_signature", "tfllm/export/versioning.py", "PRIVATE API: Keras's `TFLayer._default_save_signature`",
     "saved_model_export_archive.py"),
    ("_list_variables_used_by_fns", "tfllm/export/versioning.py",
     "PRIVATE API: Keras's `TFLayer._default_save_signature`", "saved_model_export_archive.py"),
    ("_tf_trackable", "tfllm/export/versioning.py", "PRIVATE API: Keras's `ExportArchive._tf_trackable`",
     "keras-team/keras#23553"),
]


@pytest.mark.parametrize("name,path,marker,upstream", COMMENTED_USES, ids=[c[0] for c in COMMENTED_USES])
def test_each_private_use_carries_its_comment(name, path, marker, upstream):
    text = (ROOT / path).read_text()
    assert name in text, f"{path} no longer uses {name}: drop it from COMMENTED_USES and its check below"
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    assert at is not None, f"{path} uses the private {name} without its 'PRIVATE API' comment ({marker!r})"
    comment = "\n".join(lines[at:at + 6])
    assert upstream in comment, f"the comment at {path}:{at + 1} should name the upstream issue {upstream}"


def test_keras_maybe_symbolic_build():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    path, marker = "tfllm/training/common.py", "PRIVATE API: Keras's `Model._maybe_symbolic_build`"
    method = getattr(TensorFlowTrainer, "_maybe_symbolic_build", None)
    require(callable(method), "keras TensorFlowTrainer._maybe_symbolic_build", path, marker)
    require(list(inspect.signature(method).parameters) == ["self", "iterator", "data_batch"],
            "the signature of _maybe_symbolic_build(self, iterator=None, data_batch=None)", path, marker)
    # The per-instance replacement only works while fit/evaluate look it up on self.
    for caller in (TensorFlowTrainer.fit, TensorFlowTrainer.evaluate):
        require("self._maybe_symbolic_build(" in inspect.getsource(caller),
                f"{caller.__qualname__} calling self._maybe_symbolic_build", path, marker)


def test_keras_train_and_test_step_are_looked_up_per_instance():
    from keras.src.backend.tensorflow import trainer

    path, marker = "tfllm/training/common.py", "PRIVATE BEHAVIOUR: Keras's make_train/test_function"
    require("self.train_step" in inspect.getsource(trainer.TensorFlowTrainer.make_train_function),
            "make_train_function reading self.train_step", path, marker)
    require("self.test_step" in inspect.getsource(trainer.TensorFlowTrainer.make_test_function),
            "make_test_function reading self.test_step", path, marker)
    require(hasattr(trainer, "reduce_per_replica"), "keras.src.backend.tensorflow.trainer.reduce_per_replica",
            path, marker)


def test_keras_clip_gradients():
    import keras

    path, marker = "tfllm/training/causal_lm.py", "PRIVATE API: overrides Keras's `BaseOptimizer._clip_gradients`"
    method = getattr(keras.optimizers.AdamW, "_clip_gradients", None)
    require(callable(method), "keras.optimizers.Optimizer._clip_gradients", path, marker)
    require(list(inspect.signature(method).parameters) == ["self", "grads"],
            "the signature of _clip_gradients(self, grads)", path, marker)
    # The override is right only while Keras clips each replica's part before the
    # cross-replica sum in _backend_update_step.
    source = inspect.getsource(keras.optimizers.AdamW._backend_apply_gradients)
    require("self._clip_gradients(" in source and "self._backend_update_step(" in source
            and source.index("self._clip_gradients(") < source.index("self._backend_update_step("),
            "Optimizer._backend_apply_gradients clipping before _backend_update_step", path, marker)


def test_keras_adam_internals_lazy_adamw_uses():
    import keras

    path, marker = "tfllm/training/optimizers.py", "PRIVATE API: Keras's optimizer internals"
    optimizer = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    variable = keras.Variable([1.0, 2.0])
    optimizer.build([variable])
    for name in ("_momentums", "_velocities", "_get_variable_index", "_var_key", "_use_weight_decay"):
        require(hasattr(optimizer, name), f"keras AdamW.{name}", path, marker)
    # LazyAdamW decays in its own update step; Keras' dense decay must stay off while weight_decay is None.
    optimizer.weight_decay = None
    before = keras.ops.convert_to_numpy(variable).copy()
    optimizer._apply_weight_decay([variable])
    require((keras.ops.convert_to_numpy(variable) == before).all(),
            "Optimizer._apply_weight_decay doing nothing while weight_decay is None", path, marker)


def test_keras_jit_compile_behind_its_setter():
    import keras
    from keras.src.backend.tensorflow import trainer

    path, marker = "tfllm/training/common.py", "PRIVATE API: Keras's `Trainer._jit_compile`"
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.lookup = keras.layers.StringLookup(vocabulary=["a"])  # tracked, never called, as a task's tokenizer
    model.compile(loss="mse", jit_compile=True)
    if model.jit_compile:  # keras-team/keras#19521 fixed: compile_task's workaround can go
        pytest.fail(f"Keras now keeps jit_compile=True beside a StringLookup; drop the workaround at {where(path, marker)}")
    model._jit_compile = True
    require(model.jit_compile is True, "the jit_compile property reading Trainer._jit_compile", path, marker)
    require("jit_compile=self.jit_compile" in inspect.getsource(trainer.TensorFlowTrainer._make_function),
            "TensorFlowTrainer._make_function compiling the step with self.jit_compile", path, marker)


def test_tflite_custom_op_registerers():
    import tensorflow as tf

    path, marker = "tfllm/export/tflite_runtime.py", "PRIVATE API: `TargetSpec._experimental_custom_op_registerers`"
    require(hasattr(tf.lite.TargetSpec(), "_experimental_custom_op_registerers"),
            "tf.lite.TargetSpec._experimental_custom_op_registerers", path, marker)
    lite = inspect.getmodule(tf.lite.TFLiteConverter)
    require("target_spec._experimental_custom_op_registerers" in inspect.getsource(lite.TFLiteConverterBase._quantize),
            "TFLiteConverterBase._quantize reading target_spec._experimental_custom_op_registerers", path, marker)


def test_keras_hub_add_special_token():
    # Not commented at the use yet (tfllm/tokenizers.py is being reworked); no upstream
    # issue asks for a public way to declare special tokens on a KerasHub tokenizer.
    from keras_hub.tokenizers import Tokenizer

    method = getattr(Tokenizer, "_add_special_token", None)
    require(callable(method) and list(inspect.signature(method).parameters) == ["self", "token", "name"],
            "keras_hub Tokenizer._add_special_token(self, token, name)", "tfllm/tokenizers.py", "_add_special_token(")


def test_keras_hub_pretokenize():
    import tensorflow as tf

    path, marker = "tfllm/tokenizers.py", "PRIVATE API: KerasHub's `pretokenize`"
    try:
        from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    except ImportError:
        pretokenize = None
    require(callable(pretokenize), "keras_hub.src.tokenizers.word_piece_tokenizer.pretokenize", path, marker)
    words = pretokenize(tf.constant(["Hi, 中国"]), False, False, True, True).to_list()
    require(words == [[b"Hi", b",", "中".encode(), "国".encode()]],
            "pretokenize(text, lowercase, strip_accents, split, split_on_cjk) splitting punctuation and CJK",
            path, marker)


def test_keras_hub_preprocessing_runs_tensorflow_s_ops_eagerly_when_told():
    import keras_hub
    import numpy as np
    import tensorflow as tf

    path, marker = "tfllm/data.py", "PRIVATE API: KerasHub's `_allow_python_workflow`"
    try:
        from keras_hub.src.utils.tensor_utils import no_convert_scope
    except ImportError:
        no_convert_scope = None
    require(callable(no_convert_scope), "keras_hub.src.utils.tensor_utils.no_convert_scope", path,
            "PRIVATE API: KerasHub's `no_convert_scope`")
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "film"])
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=6)
    preprocessor.build(None)
    layers = preprocessor._flatten_layers()
    require(preprocessor.tokenizer in layers and preprocessor.packer in layers and
            all(getattr(layer, "_allow_python_workflow", None) is True for layer in layers),
            "the _allow_python_workflow flag of KerasHub's tokenizers and packers (found via Layer._flatten_layers)",
            path, marker)
    for layer in preprocessor._flatten_layers():
        layer._allow_python_workflow = False
    with no_convert_scope():
        out = preprocessor(tf.constant(["a fine film", "film"]))
    # On TensorFlow's path the outputs stay tensors, with the ids a traced call gives.
    traced = tf.function(preprocessor)(tf.constant(["a fine film", "film"]))
    require(isinstance(out["token_ids"], tf.Tensor) and np.array_equal(out["token_ids"], traced["token_ids"]),
            "an eager call with _allow_python_workflow off returning the traced call's tensors", path, marker)


def test_keras_hub_transformer_encoder_attention_layer():
    import keras
    import keras_hub

    path, marker = "tfllm/explanations.py", "PRIVATE API: KerasHub's `TransformerEncoder._self_attention_layer`"
    block = keras_hub.layers.TransformerEncoder(8, 2)
    block.build((None, 4, 8))
    require(isinstance(getattr(block, "_self_attention_layer", None), keras.layers.MultiHeadAttention),
            "keras_hub TransformerEncoder._self_attention_layer (a MultiHeadAttention)", path, marker)
    require("return_attention_scores" in inspect.signature(keras.layers.MultiHeadAttention.call).parameters,
            "MultiHeadAttention.call(return_attention_scores=...)", path, marker)


def test_keras_layer_call_is_looked_up_per_instance():
    from keras.src.ops.operation import Operation

    path, marker = "tfllm/explanations.py", "PRIVATE BEHAVIOUR: Keras's `Operation.__call__`"
    require("call_fn = self.call" in inspect.getsource(Operation.__call__),
            "Operation.__call__ reading self.call", path, marker)


def test_keras_tuner_debug_switch():
    import keras_tuner.src.engine.base_tuner as base_tuner
    from keras_tuner.src import config

    path, marker = "tfllm/tuning.py", "PRIVATE API: `keras_tuner.src.config.DEBUG`"
    require(isinstance(getattr(config, "DEBUG", None), bool), "keras_tuner.src.config.DEBUG (a bool)", path, marker)
    require("config_module.DEBUG" in inspect.getsource(base_tuner),
            "BaseTuner printing a failed trial's traceback only when config.DEBUG", path, marker)


@pytest.mark.parametrize("package", ["keras", "keras-hub", "keras-tuner"])
def test_installed_versions_match_the_pins(package):
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    extras = r"(?:\[[^\]]*\])?"
    pin = next(d for d in dependencies if re.match(rf"{re.escape(package)}{extras}\s*==", d))
    minor = re.fullmatch(rf"{re.escape(package)}{extras}\s*==\s*(\d+\.\d+)\.\*", pin)
    assert minor, f"pyproject.toml should pin {package} to one minor version ('{package}==X.Y.*'), not {pin!r}"
    installed = version(package)
    assert installed.startswith(minor.group(1) + "."), (
        f"{package} {installed} is installed but pyproject.toml pins {pin}: run this file's tests on the new "
        "version and update the pin and the PRIVATE API comments together")


def test_keras_checkpoint_callbacks_save_through_save_model():
    import keras

    path = "tfllm/training/common.py"
    marker = "PRIVATE API: overrides Keras's `BackupAndRestore._save_model`"
    backup = keras.callbacks.BackupAndRestore("unused")
    for name in ("_weights_path", "_prev_weights_path", "_training_metadata_path", "_prev_training_metadata_path",
                 "_current_epoch", "_last_batch_seen"):
        require(hasattr(backup, name), f"keras BackupAndRestore.{name}", path, marker)
    require("self._save_model()" in inspect.getsource(keras.callbacks.BackupAndRestore.on_epoch_end),
            "BackupAndRestore.on_epoch_end saving through self._save_model()", path, marker)
    marker = "PRIVATE API: Keras's `BackupAndRestore._load_model`"
    load = inspect.getsource(getattr(keras.callbacks.BackupAndRestore, "_load_model", lambda self: None))
    require("self._weights_path" in load and "self._training_metadata_path" in load,
            "BackupAndRestore._load_model reading self._weights_path and self._training_metadata_path", path, marker)
    marker = "PRIVATE API: overrides Keras's `ModelCheckpoint._save_model`"
    method = getattr(keras.callbacks.ModelCheckpoint, "_save_model", None)
    require(callable(method) and list(inspect.signature(method).parameters) == ["self", "epoch", "batch", "logs"],
            "ModelCheckpoint._save_model(self, epoch, batch, logs)", path, marker)
    for name in ("_get_file_path", "_should_save_model"):
        require(callable(getattr(keras.callbacks.ModelCheckpoint, name, None)), f"ModelCheckpoint.{name}", path, marker)
    require("self._save_model(" in inspect.getsource(keras.callbacks.ModelCheckpoint.on_epoch_end),
            "ModelCheckpoint.on_epoch_end saving through self._save_model", path, marker)


def test_python_s_own_exit_steps():
    import atexit
    import threading

    for module, name in ((threading, "_shutdown"), (atexit, "_run_exitfuncs")):
        require(callable(getattr(module, name, None)), f"Python's `{module.__name__}.{name}`", "tfllm/cli.py",
                "PRIVATE API: threading._shutdown and atexit._run_exitfuncs")


def test_keras_hub_preset_file_helpers():
    """What a preset holds, read without building it (`_preset_backbone`, `check_kept_head`)."""
    from keras_hub.src.utils import preset_utils

    path, marker = "tfllm/training/classifier.py", "PRIVATE API: keras_hub's preset"
    for name in ("get_preset_loader", "check_file_exists", "load_json", "check_config_class"):
        require(callable(getattr(preset_utils, name, None)), f"keras_hub.src.utils.preset_utils.{name}", path, marker)


def test_writing_an_export_archive_traces_each_endpoint_once_and_no_tracked_model(tmp_path):
    """Keras's ExportArchive traced each endpoint twice (to list its variables, then to save it) and each tracked
    model's `_default_save_signature` while looking for lookup tables, nested models included;
    `tfllm.export.versioning.write_out` traces each endpoint once, and tracking a model adds no trace."""
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow.layer import TFLayer
    from keras.src.export import saved_model_export_archive as keras_archive

    from tfllm.export.versioning import write_out

    path, marker = "tfllm/export/versioning.py", "PRIVATE API: Keras's `TFLayer._default_save_signature`"
    require(isinstance(TFLayer.__dict__.get("_default_save_signature"), property),
            "keras TFLayer._default_save_signature (a property)", path, marker)
    walk = getattr(keras_archive.SavedModelExportArchive, "_filter_and_track_resources", None)
    require(callable(getattr(keras_archive, "_list_variables_used_by_fns", None)) and callable(walk)
            and "_list_variables_used_by_fns(" in inspect.getsource(walk),
            "keras _filter_and_track_resources calling the module's _list_variables_used_by_fns", path, marker)

    def traces_while_written(track, directory):
        traces = []

        class Counted(keras.layers.Layer):
            def call(self, x):
                traces.append(1)  # Python runs once per trace
                return x * 2.0

        inputs = keras.Input((3,))
        inner = keras.Model(inputs, Counted()(inputs))
        model = keras.Model(inputs, inner(inputs))  # a model nested in the tracked one
        archive = keras.export.ExportArchive()
        if track:
            archive.track(model)
        archive.add_endpoint("serving_default", lambda x: model(x), input_signature=[tf.TensorSpec([None, 3])])
        before = len(traces)
        write_out(archive, str(directory))
        return len(traces) - before

    assert traces_while_written(False, tmp_path / "untracked") == 1
    assert traces_while_written(True, tmp_path / "tracked") == 1
    assert isinstance(TFLayer.__dict__["_default_save_signature"], property)  # put back
    assert keras_archive._list_variables_used_by_fns.__module__ == keras_archive.__name__
    reloaded = tf.saved_model.load(str(tmp_path / "tracked"))
    out = reloaded.signatures["serving_default"](tf.ones([2, 3]))
    np.testing.assert_array_equal(next(iter(out.values())).numpy(), np.full([2, 3], 2.0))


def test_keras_tuner_saves_an_ended_trial_after_its_consecutive_failures_check():
    import keras_tuner

    path, marker = "tfllm/tuning.py", "PRIVATE API: KerasTuner 1.4's `Oracle.end_trial`"
    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=1)
    require(callable(getattr(oracle, "_save_trial", None)), "keras_tuner Oracle._save_trial", path, marker)
    require(isinstance(oracle.ongoing_trials, dict) and isinstance(oracle.end_order, list),
            "Oracle.ongoing_trials (a dict) and Oracle.end_order (a list)", path, marker)
    from keras_tuner.src.engine import oracle as oracle_module

    source = inspect.getsource(oracle_module)  # end_trial itself is wrapped (`synchronized`)
    source = source[source.index("@synchronized\n    def end_trial(self, trial):"):]
    require(0 <= source.find("_check_consecutive_failures()") < source.find("self._save_trial(trial)"),
            "Oracle.end_trial checking the consecutive failures before it saves the trial (if it now saves "
            "first, _save_ended_trial is no longer needed)", path, marker)


def test_keras_tensorboard_writes_evaluation_points_with_its_validation_writer():
    import keras

    from tfllm.training.common import TensorBoard

    path, marker = "tfllm/training/common.py", "PRIVATE API: Keras's `TensorBoard._val_writer`"
    source = inspect.getsource(keras.callbacks.TensorBoard.on_test_end)
    require("self._val_writer.as_default()" in source and "self.summary.scalar(" in source
            and "_vs_iterations" in source,
            "keras TensorBoard.on_test_end writing evaluation_*_vs_iterations with _val_writer and summary",
            path, marker)
    require(hasattr(TensorBoard("/tmp"), "summary"), "keras TensorBoard.summary", path, marker)


def test_an_export_archive_stores_each_weight_once(tmp_path):
    """keras-team/keras#23553: Keras's ExportArchive saved every weight of a tracked model twice (the model's
    keras.Variables under `variables`, the tf.Variables its endpoints capture under `_all_variables`): exports
    twice their weights on disk and in a server's memory. `tfllm.export.versioning.write_out` stores each once; the
    reloaded export still lists its variables and computes what the model computes."""
    import keras
    import tensorflow as tf

    from tfllm.export.versioning import write_out

    path, marker = "tfllm/export/versioning.py", "PRIVATE API: Keras's `ExportArchive._tf_trackable`"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    archive = keras.export.ExportArchive()
    archive.track(model)
    require(all(isinstance(getattr(archive._tf_trackable, name, None), list)
                for name in ("variables", "trainable_variables", "non_trainable_variables")),
            "keras ExportArchive._tf_trackable's variables, trainable_variables and non_trainable_variables lists",
            path, marker)
    archive.add_endpoint("serving_default", lambda x: model(x), input_signature=[tf.TensorSpec([None, 4])])
    write_out(archive, str(tmp_path))
    stored = tf.train.list_variables(str(tmp_path / "variables" / "variables"))
    assert sum(int(np.prod(shape)) for name, shape in stored if name != "_CHECKPOINTABLE_OBJECT_GRAPH") == \
        model.count_params(), stored  # 15 + 12 (the normalization's moving mean and variance too), not twice that
    reloaded = tf.saved_model.load(str(tmp_path))
    assert (len(reloaded.variables), len(reloaded.trainable_variables), len(reloaded.non_trainable_variables)) == \
        (6, 4, 2)
    x = np.arange(8, dtype="float32").reshape(2, 4)
    out = next(iter(reloaded.signatures["serving_default"](tf.constant(x)).values()))
    np.testing.assert_allclose(out.numpy(), keras.ops.convert_to_numpy(model(x)), rtol=1e-6)


def test_writing_an_export_logs_no_tensorflow_info_where_tensorflow_logs_info(tmp_path, caplog):
    """TensorFlow sets its logger to INFO in an interactive session (a notebook: `tf_logging.get_logger` sees
    `sys.ps1`), and every export there printed "INFO:tensorflow:Assets written to: ...", where the tfllm command
    printed nothing. `write_out` drops TensorFlow's records below WARNING while it writes; the logger's level
    is left as the caller set it."""
    import logging

    import keras
    import tensorflow as tf

    from tfllm.export.versioning import write_out

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: model(x), input_signature=[tf.TensorSpec([None, 4])])
    with caplog.at_level(logging.INFO, logger="tensorflow"):  # the notebook's level
        write_out(archive, str(tmp_path / "export"))
        assert logging.getLogger("tensorflow").level == logging.INFO
        logging.getLogger("tensorflow").info("after the export")  # the caller's own INFO records still pass
    said = [r.getMessage() for r in caplog.records if r.name == "tensorflow"]
    assert said == ["after the export"], said
