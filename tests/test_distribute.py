"""tf.distribute strategies, mixed precision and their bad-input errors, on this CPU.

Strategies that need several devices run in subprocesses: the CPU is split into
logical devices, or a cluster is formed, before TensorFlow initialises, which
cannot be undone inside the pytest process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfllm import runs
from tfllm.config import TrainConfig
from tfllm.errors import UserInputError
from tfllm.training import common

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")

def train_mirrored_runs(out):
    """Trains a tiny classifier ("cls") and a tiny causal LM ("lm") with `--strategy mirrored` over every logical
    CPU device of this process and saves their final weights in OUT/cls.npz and OUT/lm.npz. The LM runs without
    XLA (an XLA step cannot reach another logical CPU's variables) and keeps its preset's steps_per_execution=4,
    the multi-step path that failed with TensorFlow's default collective all-reduce (see `common.get_strategy`).
    Both in one process: TensorFlow starts once."""
    import keras

    from tfllm.training.causal_lm import train_causal_lm
    from tfllm.training.classifier import train_classifier

    for task in ("cls", "lm"):
        shared = dict(preset="tiny", strategy="mirrored", run_dir=f"{out}/{task}")
        if task == "cls":
            # No word dropout: each replica draws its own mask for its half batch,
            # so with dropout two replicas cannot match one device.
            train_classifier(TrainConfig(data="rotten_tomatoes", max_rows=200, batch_size=16,
                                         overrides={"embedding_dropout": 0.0}, **shared), verbose=0)
        else:
            train_causal_lm(TrainConfig(task="generate", data="shakespeare", max_rows=2000, jit_compile=False,
                                        **shared), verbose=0)
        model = runs.load_task(f"{out}/{task}")
        np.savez(f"{out}/{task}.npz", *[keras.ops.convert_to_numpy(w) for w in model.weights],
                 names=np.array([w.path for w in model.weights]))


# The two-replica side of mirrored_runs, in a fresh process whose one CPU is split into two logical devices
# before TensorFlow initialises: first `tfllm train --batch-size 15` through the CLI's `main`, its exit status
# and stderr saved in batch15.json (test_global_batch_not_divisible_by_replicas_exits_2), then
# train_mirrored_runs (imported from this file: argv[1] is the tests folder). TensorFlow starts once.
TWO_DEVICE_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, os, sys, traceback
    import tensorflow as tf

    tests, out = sys.argv[1], sys.argv[2]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfllm.cli import main

    os.makedirs(out, exist_ok=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "100",
                         "--strategy", "mirrored", "--batch-size", "15", "--run-dir", f"{out}/batch15"])
        except BaseException:
            traceback.print_exc()
            code = None
    with open(f"{out}/batch15.json", "w") as f:
        json.dump({"code": code, "stderr": err.getvalue()}, f)

    sys.path.insert(0, tests)
    from test_distribute import train_mirrored_runs

    train_mirrored_runs(out)
    """
)

# One worker of a two-worker `--strategy multi_worker` classifier run.
WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from tfllm.config import TrainConfig
    from tfllm.training.classifier import train_classifier

    config = TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=120, run_dir=sys.argv[1],
                         strategy="multi_worker", epochs=int(sys.argv[2]))
    metrics = train_classifier(config, verbose=2)  # 2: tfllm's lines ("Resuming ...") printed; 0 silences them
    print("EPOCHS_RUN", metrics["epochs_run"])
    print("TEST_METRICS", metrics["test"]["accuracy"], metrics["test"]["roc_auc"])
    """
)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _logged_epochs(event_file):
    """The epochs (steps of `epoch_loss`) one TensorBoard event file holds, in order."""
    import tensorflow as tf

    return [event.step for event in tf.compat.v1.train.summary_iterator(str(event_file))
            for value in event.summary.value if value.tag == "epoch_loss"]


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """The tiny classifier and causal LM trained over one CPU device and over two logical ones. The one-device
    runs train in this process, whose CPU is one device (a fresh process for them only started TensorFlow once
    more); the two-device runs in TWO_DEVICE_SCRIPT's fresh process."""
    import tensorflow as tf

    out = tmp_path_factory.mktemp("mirrored")
    assert len(tf.config.list_logical_devices("CPU")) == 1
    train_mirrored_runs(out / "d1")
    result = subprocess.run([sys.executable, "-c", TWO_DEVICE_SCRIPT, os.path.dirname(__file__), str(out / "d2")],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def assert_mirrored_matches_one_device(out, task):
    """Same seed and global batch: two replicas end with the weights of one device.

    The baseline is `--strategy mirrored` over the one CPU device: Keras reads
    one batch ahead under any strategy (to build the model), which shifts the
    shuffled order by one reshuffle relative to no strategy at all.
    """
    one, two = np.load(out / f"d1/{task}.npz"), np.load(out / f"d2/{task}.npz")
    names = list(one["names"])
    assert names == list(two["names"]) and len(names) > 0
    blend = [np.abs(one[f"arr_{i}"]).max() for i, name in enumerate(names) if name.startswith("blend/")]
    for i, name in enumerate(names):
        # Summing gradients of two half batches differs from one full batch only by rounding;
        # Adam turns rounding in tiny gradients into steps of up to the learning rate, hence
        # a few 1e-4 here and there (3.05e-4 on one of 256 elements once the word vectors were summed
        # in another order, in both runs alike).
        atol, rtol = 5e-4, 1e-3
        if name.startswith("blend/"):
            # The classifier's blend is not trained by `fit` but regressed afterwards on the
            # validation rows' logits (a dozen rows here), which magnifies that rounding; its
            # bias moves with the scales times the (nearly constant) encoder logits, so it is
            # compared on the scale of the largest blend coefficient, not its own (often ~0).
            atol, rtol = 2e-2 * max(blend), 2e-2
        np.testing.assert_allclose(two[f"arr_{i}"], one[f"arr_{i}"], atol=atol, rtol=rtol, err_msg=f"{task} {name}")


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_match_one_device(mirrored_runs):
    assert_mirrored_matches_one_device(mirrored_runs, "cls")


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_causal_lm_matches_one_device(mirrored_runs):
    """The tied embedding's sparse gradient and Keras' multi-step loop (steps_per_execution=4) on two replicas."""
    assert_mirrored_matches_one_device(mirrored_runs, "lm")


@pytest.mark.slow
def test_multi_worker_killed_worker_resumes_and_only_chief_writes(tmp_path):
    run_dir = tmp_path / "run"
    # The kill comes within 0.2 s of the first backup, and an epoch of the two workers in step takes most of a
    # second or more: three epochs are left to resume.
    epochs = 4
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    def start(index):
        temp_dir = temp_dirs.setdefault(index, tmp_path / f"tmp{index}")  # the restart sees the killed one's
        temp_dir.mkdir(exist_ok=True)
        env = dict(ENV, TMPDIR=str(temp_dir),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        return subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(run_dir), str(epochs)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    temp_dirs = {}
    workers = [start(0), start(1)]
    try:
        # Wait for the chief's first end-of-epoch backup, then kill worker 1.
        metadata = run_dir / "backup" / "training_metadata.json"
        deadline = time.monotonic() + 150
        while not metadata.exists():
            assert time.monotonic() < deadline, "no backup written in time"
            assert all(w.poll() is None for w in workers), [w.communicate()[0][-3000:] for w in workers]
            time.sleep(0.2)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=30)
        # A cluster does not survive losing a worker: the chief fails or waits
        # on the lost peer, and the job restarts every worker.
        try:
            workers[0].wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop(workers[0])
        assert not runs.is_finished(str(run_dir)) and not (run_dir / runs.TASK_CONFIG).exists()
        assert metadata.exists(), "the failed run must keep its backup"
        assert list(temp_dirs[1].glob("tfllm-worker1-*")), "the killed worker's scratch folder"

        workers = [start(0), start(1)]
        # Three epochs of two workers in step: a minute or more on a loaded 2-core machine.
        outputs = [w.communicate(timeout=480)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], [o[-3000:] for o in outputs]
    finally:
        for w in workers:
            stop(w)

    assert "Resuming the interrupted run" in outputs[0], outputs[0][-3000:]
    epochs_run = [int(o.split("EPOCHS_RUN")[1].split()[0]) for o in outputs]
    # Metrics count the whole run, the epochs before the interruption too.
    assert epochs_run[0] == epochs_run[1] == epochs
    # Both workers end on the best epoch's weights (the non-chief scored its last epoch's before).
    tests = [o.split("TEST_METRICS")[1].split("\n")[0] for o in outputs]
    assert tests[0] == tests[1], tests
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == epochs_run[0]
    # Restarted from the backup, not from epoch 0: the restarted chief's event file starts after
    # the epochs the first try finished (worker 1 runs in step with it, or the collectives would hang).
    event_files = sorted((run_dir / "logs" / "train").glob("events.out.tfevents.*"), key=os.path.getmtime)
    assert len(event_files) == 2, event_files
    assert 0 < _logged_epochs(event_files[-1])[0] and _logged_epochs(event_files[-1])[-1] == epochs - 1
    assert runs.is_finished(str(run_dir)) and (run_dir / "task.weights.h5").exists() and (run_dir / "logs").is_dir()
    assert not (run_dir / "backup").exists()
    # Its restart removed the scratch folder (and lock file) the killed worker 1 left, then its own.
    assert not list(temp_dirs[1].glob("*tfllm-worker*")), "worker 1 left a run folder behind"
    assert not [p for p in run_dir.rglob("*") if "worker" in p.name]


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny classifier trained 3 epochs on 200 rows under mixed_bfloat16 (read, never changed, by the tests that
    use it); its config, and the global policy's name right after the training."""
    import keras

    from tfllm.training.classifier import train_classifier

    run_dir = str(tmp_path_factory.mktemp("bf16") / "bf16")
    config = TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=200, epochs=3, run_dir=run_dir,
                         precision="mixed_bfloat16")
    train_classifier(config, verbose=0)
    return run_dir, config, keras.mixed_precision.global_policy().name


@pytest.mark.slow
def test_mixed_bfloat16_trains_and_exports_float32(bf16_run, tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops of the export)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfllm.export.saved_model import export_classifier

    run_dir, config, policy_after_training = bf16_run
    assert policy_after_training == "float32"  # restored for whatever runs next

    # The trainer builds under the policy: bfloat16 blocks, a float32 output layer.
    from tfllm.tokenizers import load_tokenizer
    from tfllm.training.classifier import classifier_preset, own_classifier

    with common.precision_scope(config.precision):
        built = own_classifier(classifier_preset(config), load_tokenizer(run_dir), 2)
    assert built.backbone.get_layer("transformer_layer_0").compute_dtype == "bfloat16"
    assert built.get_layer("probabilities").compute_dtype == "float32"
    events = EventAccumulator(os.path.join(run_dir, "logs", "train"), size_guidance={"tensors": 0}).Reload()
    losses = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_loss")]
    assert len(losses) == 3 and losses[-1] < losses[0]

    export_dir = export_classifier(run_dir, "bf16", base_dir=str(tmp_path / "savedmodels"))
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    outputs = serve(text=tf.constant(["a wonderful film", "dull"]))
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape == (2, 2)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
    # Exports compute in float32 (predict and evaluate keep the run's bfloat16): the SavedModel gives what
    # the float32 reload gives, and the TFLite export, which has no bfloat16 kernels, converts (it failed).
    from tfllm import runs
    from tfllm.export.tflite import export_tflite
    from tfllm.training.classifier import predict_probabilities

    assert runs.load_task(run_dir).backbone.compute_dtype == "bfloat16"
    as_float32 = predict_probabilities(runs.load_task(run_dir, dtype="float32"), ["a wonderful film", "dull"])
    np.testing.assert_allclose(outputs["probabilities"].numpy(), as_float32, atol=1e-5)
    tflite_dir = export_tflite(run_dir, "bf16-tflite", out=str(tmp_path / "tflite"))
    parity = json.loads(open(os.path.join(tflite_dir, "parity.json")).read())
    assert parity["model.tflite"]["max_abs_probability_difference"] < 1e-4


def test_unknown_strategy_and_malformed_tf_config_exit_2(tmp_path, capsys, monkeypatch):
    from tfllm.cli import main

    args = ["train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "100", "--run-dir", str(tmp_path / "r")]
    assert main(args + ["--strategy", "hogwild"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Unknown strategy 'hogwild'" in err and "mirrored" in err and len(err.splitlines()) == 1

    for bad, why in [("{not json", "not valid JSON"), ('{"cluster": {"worker": ["h:1"]}}', '"task"'),
                     ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster" object'),
                     # It has a cluster, which the message said it had not; what it lacks is workers.
                     ('{"cluster": {}}', 'has no workers: cluster["worker"] is empty or absent'),
                     ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
                      'has no workers: cluster["worker"] is empty or absent'),
                     ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "index 3"),
                     # Were TensorFlow tracebacks after the check passed:
                     ('{"cluster": {"worker": ["h:1"], "ps": ["h:2"]}, "task": {"type": "ps", "index": 0}}',
                      'runs "chief" and "worker" tasks'),
                     ('{"cluster": {"worker": ["h:notaport"]}, "task": {"type": "worker", "index": 0}}',
                      "port 1-65535"),
                     ('{"cluster": {"worker": [":12345"]}, "task": {"type": "worker", "index": 0}}',
                      '"host:port"'),
                     ('{"cluster": {"chief": ["h:1", "h:2"]}, "task": {"type": "chief", "index": 0}}',
                      "at most one")]:
        monkeypatch.setenv("TF_CONFIG", bad)
        assert main(args + ["--strategy", "multi_worker"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tfllm: error: TF_CONFIG") and why in err and len(err.splitlines()) == 1
    monkeypatch.delenv("TF_CONFIG")
    assert main(args + ["--strategy", "multi_worker"]) == 2
    assert "needs the TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# One process in a one-worker `--strategy multi_worker` cluster (TF_CONFIG set before TensorFlow starts): first
# the two recipes refused up front, through the CLI's `main` (its exit status and stderr printed as JSON), then
# a one-epoch classifier run as WORKER_SCRIPT trains it. One fresh process with TensorFlow started once.
ONE_WORKER_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback
    from tfllm.cli import main

    refused_run_dir = sys.argv[3]  # WORKER_SCRIPT, run after, reads the run folder and epochs from sys.argv[1:3]
    common_args = ["--preset", "tiny", "--strategy", "multi_worker", "--run-dir", refused_run_dir]
    # The tiny generator's multi-step recipe, compiled with XLA as nanogpt-cpu's is (the tiny preset's own is not).
    for args in (["--task", "generate", "--data", "shakespeare", "--max-rows", "2000", "--jit-compile"],
                 ["--data", "rotten_tomatoes", "--max-rows", "100", "--jit-compile"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = main(["train", *args, *common_args])
            except BaseException:
                traceback.print_exc()
                code = None
        print("REFUSED", json.dumps({"code": code, "stderr": err.getvalue()}), flush=True)
    """
) + WORKER_SCRIPT


@pytest.fixture(scope="module")
def one_worker_cluster(tmp_path_factory):
    """ONE_WORKER_SCRIPT's run: a cluster of one worker, in one fresh process."""
    tmp = tmp_path_factory.mktemp("one_worker")
    env = dict(ENV, TF_CONFIG=json.dumps({"cluster": {"worker": [f"127.0.0.1:{free_ports(1)[0]}"]},
                                          "task": {"type": "worker", "index": 0}}))
    result = subprocess.run([sys.executable, "-c", ONE_WORKER_SCRIPT, str(tmp / "run"), "1", str(tmp / "r")],
                            capture_output=True, text=True, env=env, timeout=300)
    return tmp, result


@pytest.mark.slow
def test_multi_worker_with_one_worker_trains(one_worker_cluster):
    # A one-task cluster is not in Keras's multi-worker mode: its logs were left with the axis added for
    # the multi-worker reduce, and StopOnDivergence's float(loss) failed on the array.
    tmp, result = one_worker_cluster
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EPOCHS_RUN 1" in result.stdout
    accuracy, _ = map(float, result.stdout.split("TEST_METRICS")[1].split())
    assert 0 <= accuracy <= 1 and runs.is_finished(str(tmp / "run"))


@pytest.mark.slow
def test_multi_worker_refuses_a_multi_step_or_xla_recipe_up_front(one_worker_cluster):
    """Both died on every worker after the cluster formed, with TensorFlow tracebacks ("You must feed a value for
    placeholder tensor '.../while/cond/Placeholder'"; "XLA_CPU_JIT: CollectiveGatherV2 unsupported")."""
    tmp, result = one_worker_cluster
    refused = [json.loads(line.removeprefix("REFUSED ")) for line in result.stdout.splitlines()
               if line.startswith("REFUSED ")]
    assert len(refused) == 2, result.stdout[-3000:] + result.stderr[-3000:]
    for outcome, fix in zip(refused, ["add --set steps_per_execution=1 --no-jit-compile on every worker",
                                      "add --no-jit-compile"]):
        assert outcome["code"] == 2, outcome["stderr"][-2000:]
        last = outcome["stderr"].strip().splitlines()[-1]
        assert last.startswith("tfllm: error: --strategy multi_worker cannot train with") and fix in last, last
        assert "Traceback" not in outcome["stderr"]
    assert not (tmp / "r").exists()


@pytest.mark.slow
def test_global_batch_not_divisible_by_replicas_exits_2(mirrored_runs):
    """Over two logical CPU devices (in mirrored_runs' two-device process), `--batch-size 15` exits 2."""
    result = json.loads((mirrored_runs / "d2" / "batch15.json").read_text())
    assert result["code"] == 2, result["stderr"][-2000:]
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith("tfllm: error: Global batch size 15") and "--batch-size 16" in last


@pytest.mark.skipif(bool(__import__("tensorflow").config.list_physical_devices("GPU")), reason="warns only without a GPU")
def test_mixed_float16_without_gpu_warns_and_scales_loss():
    import keras

    from tfllm.models import EncoderBackbone, TextClassifier

    from tfllm.errors import TfllmWarning

    with pytest.warns(TfllmWarning, match="^mixed_float16 without a GPU.*mixed_bfloat16"), \
            common.precision_scope("mixed_float16"):
        backbone = EncoderBackbone(vocabulary_size=50, sequence_length=8, hidden_dim=8, num_layers=1, num_heads=2,
                                   intermediate_dim=8)
        model = TextClassifier(backbone, num_classes=2)
    assert keras.mixed_precision.global_policy().name == "float32"
    # Keras 3 wraps the optimizer in a LossScaleOptimizer for a mixed_float16 model.
    model.compile(optimizer="adam", loss="binary_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(UserInputError, match="Unknown precision"):
        common.set_precision("float8")


def test_read_tf_config_accepts_a_valid_cluster():
    value = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    assert common.read_tf_config({"TF_CONFIG": json.dumps(value)}) == value
    assert common.read_tf_config({}) is None


@pytest.mark.slow
def test_a_mixed_precision_run_is_a_preset_to_fine_tune_from(bf16_run, tmp_path):
    """keras-hub's from_preset refused a run saved with a mixed policy ("Invalid dtype: mixed_bfloat16"), so
    `--from-preset` of a bf16 run said it "has no text classifier in KerasHub"."""
    from tfllm.config import TrainConfig
    from tfllm.runs import load_task
    from tfllm.training.classifier import train_classifier

    bf16 = bf16_run[0]  # the shared mixed_bfloat16 run
    tuned = str(tmp_path / "tuned")
    metrics = train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=100, epochs=1,
                                           from_preset=bf16, run_dir=tuned), verbose=0)
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert load_task(tuned).dtype_policy.name == "float32"  # the fine-tune's own precision


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_masked_lm_pretrains_under_mixed_precision(tmp_path, capsys, precision):
    """KerasHub's MaskedLMHead (autocast=False) added its float32 bias to 16-bit logits inside the task:
    "cannot compute AddV2 as input #1 was expected to be a bfloat16 tensor but is a float tensor", exit 1."""
    import math

    import keras

    from tfllm.cli import main

    run_dir = tmp_path / "mlm"
    assert main(["pretrain", "--data", "rotten_tomatoes", "--objective", "mlm", "--preset", "tiny", "--max-rows", "120",
                 "--steps", "4", "--precision", precision, "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["steps"] == 4 and math.isfinite(metrics["val"]["loss"])
    # --precision was only in run.json: now in metrics.json and among the output's first lines.
    assert metrics["precision"] == precision
    assert f"Precision: {precision}" in "\n".join(capsys.readouterr().out.splitlines()[:5])
    # The saved run reloads under its policy and still computes (evaluate/fine-tune read it so).
    model = runs.load_task(str(run_dir))
    assert model.masked_lm_head.compute_dtype == precision.removeprefix("mixed_")
    batch = {"token_ids": np.ones((2, 8), "int32"), "padding_mask": np.ones((2, 8), bool),
             "mask_positions": np.array([[1, 2], [3, 4]], "int32")}
    assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(model(batch), "float32"))).all()


@pytest.mark.slow
def test_a_mixed_float16_run_loads_in_float32_without_the_optimizer_warning(tmp_path):
    """task.weights.h5 of a mixed_float16 run holds a LossScaleOptimizer (4 variables); every export loads the
    run in float32, whose Adam has 2, and Keras warned "Skipping variable loading for optimizer 'adam'"."""
    import warnings

    import keras

    from tfllm.training.classifier import predict_probabilities, train_classifier

    run_dir = str(tmp_path / "f16")
    train_classifier(TrainConfig(data="rotten_tomatoes", preset="tiny", max_rows=100, epochs=1, run_dir=run_dir,
                                 precision="mixed_float16"), verbose=0)
    texts = ["a wonderful film", "dull"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        as_float32 = runs.load_task(run_dir, dtype="float32")
        own = runs.load_task(run_dir)
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
    # Both compiled as from_preset compiles a task, and with the run's weights (those still load).
    assert isinstance(own.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(as_float32.optimizer, keras.optimizers.LossScaleOptimizer)
    np.testing.assert_allclose(predict_probabilities(as_float32, texts), predict_probabilities(own, texts), atol=2e-3)


@pytest.mark.slow
def test_mirrored_over_one_cpu_traces_its_validation_step(tmp_path):
    """`--strategy mirrored` on a machine with one CPU device is a one-replica MirroredStrategy, which
    `eager_evaluation` took for the default one: fit's validation ran eagerly under it and TensorFlow printed
    "Using MirroredStrategy eagerly has significant overhead currently" (twice per classifier run). In a fresh
    process: TensorFlow logs that line only for its first 5 calls in a process."""
    from conftest import run_cli

    result = run_cli("train", "--data", "rotten_tomatoes", "--preset", "tiny", "--max-rows", "100", "--epochs", "1",
                     "--strategy", "mirrored", "--run-dir", tmp_path / "m", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eagerly" not in result.stderr, result.stderr[-3000:]
    assert runs.is_finished(str(tmp_path / "m"))
