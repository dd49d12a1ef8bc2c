"""The files in serving/ parse as TF Serving reads them and line up with an export."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import serving_process

pytest.importorskip("tensorflow_serving")
yaml = pytest.importorskip("yaml")

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2  # noqa: E402
from google.protobuf import message_factory  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from tfllm.serving import fixtures  # noqa: E402
from tfllm.serving.models import read_model_config  # noqa: E402

SERVING = Path(__file__).resolve().parent.parent / "serving"
MODELS = {"reviews", "shakespeare"}


def _batching_parameters_class():
    """`tensorflow.serving.BatchingParameters`, built from its field list.

    The `tensorflow-serving-api` wheel ships no `session_bundle_config_pb2`,
    so the message is declared here with the field numbers and types of
    tensorflow_serving/servables/tensorflow/session_bundle_config.proto.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(
        wrappers_pb2.DESCRIPTOR.serialized_pb))
    f = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    msg = f.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for number, name, type_name in [
        (1, "max_batch_size", ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", ".google.protobuf.StringValue"),
    ]:
        msg.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=type_name,
                      label=F.LABEL_OPTIONAL)
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64,
                  label=F.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL,
                  label=F.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def _monitoring_config_class():
    """`tensorflow.serving.MonitoringConfig`: the wheel's own where it ships `monitoring_config_pb2`, else
    declared here with the fields of tensorflow_serving/config/monitoring_config.proto (as BatchingParameters)."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2
        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    pool = descriptor_pool.DescriptorPool()
    f = descriptor_pb2.FileDescriptorProto(name="monitoring_config.proto", package="tensorflow.serving",
                                           syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    prometheus = f.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    f.message_type.add(name="MonitoringConfig").field.add(
        name="prometheus_config", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.serving.PrometheusConfig",
        label=F.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


@pytest.fixture(scope="module")
def model_config():
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((SERVING / "models.config").read_text(), config)
    return config


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((SERVING / "docker-compose.yml").read_text())


def _mounts(service):
    """`{container path: host path}` for the compose service's bind mounts."""
    mounts = {}
    for volume in service["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[container] = (SERVING / host).resolve()
    return mounts


def _flags(service):
    return dict(arg.lstrip("-").split("=", 1) for arg in service["command"])


def test_the_compose_files_tf_serving_command_line_is_taken_by_tfllm_serve(compose):
    """Its --model_config_file_poll_wait_seconds, --allow_version_labels_for_unavailable_models and
    batching flags were `unrecognized arguments`: the repository's own TF Serving command failed."""
    import argparse

    from tfllm.serving.commands import add_serve_arguments, ignored_flags_warning

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(compose["services"]["tfserving"]["command"])
    assert (args.port, args.rest_api_port, args.model_config_poll_seconds, args.poll_seconds) == (8500, 8501, 60, 2)
    warning = ignored_flags_warning(args)
    assert warning.count("\n") == 0 and "--enable_batching" in warning and "--batching_parameters_file" in warning
    assert "allow_version_labels" not in warning  # what tfllm serve always does is not "ignored"
    assert ignored_flags_warning(parser.parse_args(["--port=8500"])) is None
    # Its flags are spelled with dashes too, as tfllm's own (--rest-api-port was 'unrecognized arguments').
    assert parser.parse_args(["--rest-api-port=9001"]).rest_api_port == 9001


def test_models_config_lists_both_models_with_labels(model_config):
    configs = {c.name: c for c in model_config.model_config_list.config}
    assert set(configs) == MODELS
    for name, c in configs.items():
        assert c.base_path == f"/models/{name}"
        assert c.model_platform == "tensorflow"
        assert c.model_version_policy.WhichOneof("policy_choice") is not None
        assert set(c.version_labels) == {"stable", "canary"}
        served = set(c.model_version_policy.specific.versions)
        # TF Serving only resolves labels that name served versions.
        assert set(c.version_labels.values()) <= served


def test_batching_config_parses_and_is_consistent():
    params = text_format.Parse((SERVING / "batching.config").read_text(),
                               _batching_parameters_class()())
    sizes = list(params.allowed_batch_sizes)
    assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    assert params.batch_timeout_micros.value > 0
    assert params.num_batch_threads.value >= 1


def test_monitoring_config_parses_and_enables_prometheus():
    """docs/serving.md said serving/ had the real server's monitoring config; it had none."""
    config = text_format.Parse((SERVING / "monitoring.config").read_text(), _monitoring_config_class()())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_compose_serves_savedmodels_with_the_config_files(compose, model_config):
    service = compose["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving")
    assert {"8500:8500", "8501:8501"} <= set(service["ports"])
    mounts = _mounts(service)
    assert mounts["/models"] == (SERVING.parent / "savedmodels").resolve()
    flags = _flags(service)
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    for flag, local in [("model_config_file", "models.config"),
                        ("batching_parameters_file", "batching.config"),
                        ("monitoring_config_file", "monitoring.config")]:
        assert mounts[flags[flag]] == (SERVING / local).resolve()
    for c in model_config.model_config_list.config:
        assert os.path.dirname(c.base_path) == "/models"


def test_inferenceservices_match_the_models(model_config):
    docs = list(yaml.safe_load_all((SERVING / "inferenceservice.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"InferenceService"}
    assert {d["metadata"]["name"] for d in docs} == MODELS
    for d in docs:
        model = d["spec"]["predictor"]["model"]
        assert model["modelFormat"]["name"] == "tensorflow"
        assert model["storageUri"].endswith(f"/savedmodels/{d['metadata']['name']}")


@pytest.fixture(scope="module")
def toy_classifiers(tmp_path_factory):
    """`toy_classifiers(path, bias=0.0, warmup=True)` puts at `path` what `fixtures.save_classifier` would save there:
    a copy of that toy classifier, saved once for this file (a SavedModel folder is self-contained), so the
    file's ~20 toy classifiers cost one save each of its few kinds. Returns `path` as a string."""
    saved, root = {}, tmp_path_factory.mktemp("toy_classifiers")

    def copy_to(path, bias=0.0, warmup=True):
        if (bias, warmup) not in saved:
            saved[bias, warmup] = fixtures.save_classifier(str(root / f"bias{bias}-warmup{warmup}"), bias=bias,
                                                            warmup=warmup)
        shutil.copytree(saved[bias, warmup], path)
        return str(path)

    return copy_to


@pytest.mark.slow
def test_config_points_at_real_exports(tmp_path, model_config, compose, toy_classifiers):
    """Lay out an export as the compose mount expects and resolve every label."""
    from tfllm.serving.server import ModelRegistry

    savedmodels = tmp_path / "savedmodels"
    for v in (1, 2):
        toy_classifiers(str(savedmodels / "reviews" / str(v)), bias=float(v))
        fixtures.save_generator(str(savedmodels / "shakespeare" / str(v)))
    toy_classifiers(str(savedmodels / "unlisted" / "1"), warmup=False)
    mount = "/models"
    for c in model_config.model_config_list.config:
        host_dir = savedmodels / os.path.relpath(c.base_path, mount)
        for v in c.model_version_policy.specific.versions:
            assert (host_dir / str(v) / "saved_model.pb").exists(), (c.name, v)

    # The local server's config is the same but for base_path, relative to savedmodels/.
    local = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((SERVING / "models.local.config").read_text(), local)
    for docker_model, local_model in zip(model_config.model_config_list.config,
                                         local.model_config_list.config, strict=True):
        assert local_model.base_path == os.path.relpath(docker_model.base_path, mount)
        local_model.base_path = docker_model.base_path
        assert local_model == docker_model

    # The local server honours the same models, labels and policy.
    policies = read_model_config(str(SERVING / "models.local.config"))
    assert policies["reviews"].labels == {"stable": 1, "canary": 2}
    registry = ModelRegistry(str(savedmodels),
                             model_config_file=str(SERVING / "models.local.config"))
    registry.refresh()
    assert registry.model_names() == ["reviews", "shakespeare"]  # not `unlisted`
    assert registry.resolve("reviews", label="canary").version == 2
    assert registry.resolve("shakespeare", label="stable").version == 1
    assert registry.resolve("reviews").version == 2


def _write_config(path, *models):
    """A models.config of `(name, base_path, extra text)` entries."""
    path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}\n'
        for name, base, extra in models) + "}\n")


@pytest.mark.slow
def test_a_config_poll_of_zero_reads_the_config_once(tmp_path, toy_classifiers):
    """TF Serving's --model_config_file_poll_wait_seconds=0 (its default): the config read at start-up
    stays, while the folders are still rescanned."""
    from tfllm.serving.server import ModelRegistry

    toy_classifiers(str(tmp_path / "clf" / "1"), warmup=False)
    config = tmp_path / "models.config"
    _write_config(config, ("first", "clf", ""))
    registry = ModelRegistry(str(tmp_path), model_config_file=str(config), config_poll_seconds=0)
    registry.refresh()
    _write_config(config, ("renamed", "clf", ""))
    os.utime(config, (1, 1))
    toy_classifiers(str(tmp_path / "clf" / "2"), warmup=False)
    registry.refresh()
    assert registry.model_names() == ["first"] and registry.resolve("first").version == 2
    registry.config_poll_seconds = None  # tfllm's default: re-read whenever it changed
    registry.refresh()
    assert registry.model_names() == ["renamed"]
    # `tfllm serve FOLDER` of one model's versions serves it by the folder's name (not as models "1", "2").
    from tfllm.serving.commands import versions_folder

    assert versions_folder(str(tmp_path / "clf")) and not versions_folder(str(tmp_path))


@pytest.mark.slow
def test_a_config_serves_exactly_its_models_by_name_from_their_base_paths(tmp_path, monkeypatch, caplog, toy_classifiers):
    """As tensorflow_model_server --model_config_file: before, the registry served every folder
    under the served one by folder name (unlisted ones with all versions) and ignored base_path."""
    from tfllm.serving.server import ModelRegistry

    toy_classifiers(str(tmp_path / "sm" / "clf" / "1"), bias=0.0, warmup=False)
    toy_classifiers(str(tmp_path / "sm" / "clf" / "2"), bias=5.0, warmup=False)
    toy_classifiers(str(tmp_path / "elsewhere" / "other" / "3"), warmup=False)
    config = tmp_path / "models.config"
    _write_config(config, ("live", "clf", "model_version_policy { all {} }"),
                  ("abs", str(tmp_path / "elsewhere" / "other"), ""),
                  ("later", "not-yet", ""))
    registry = ModelRegistry(str(tmp_path / "sm"), poll_seconds=0.2, model_config_file=str(config))
    with caplog.at_level("ERROR", logger="tfllm.serving"):
        registry.refresh()
        registry.refresh()
    # `clf` is served only as `live`; `abs` from its absolute path; `later` waits, logged once.
    assert registry.model_names() == ["abs", "live"]
    assert [s.version for s in registry.statuses("live")] == [2, 1]
    assert registry.resolve("abs").version == 3
    missing = [r.getMessage() for r in caplog.records if "not-yet" in r.getMessage()]
    assert len(missing) == 1 and "does not exist" in missing[0], missing

    toy_classifiers(str(tmp_path / "sm" / "not-yet" / "1"), warmup=False)
    registry.refresh()
    assert registry.resolve("later").version == 1

    # Removing a model from the file unloads it.
    _write_config(config, ("live", "clf", ""))
    os.utime(config, (1, 1))  # a new mtime even within the clock's resolution
    registry.refresh()
    assert registry.model_names() == ["live"]
    # `latest` 1 by default: 1 is unloaded, and listed as END.
    assert [(s.version, s.state) for s in registry.statuses("live")] == [(2, "AVAILABLE"), (1, "END")]

    # Without MODEL_BASE_PATH, relative base_paths are under the working directory.
    monkeypatch.chdir(tmp_path / "sm")
    registry = ModelRegistry(None, model_config_file=str(config))
    registry.refresh()
    assert registry.resolve("live").version == 2


@pytest.mark.slow
def test_a_model_moved_to_another_base_path_says_so_and_lists_only_its_new_versions(tmp_path, caplog, toy_classifiers):
    """Before, swapping a model's base_path logged "unloaded clf version 2 (its folder is gone)" although
    the folder was still there, and the status listed the old folder's version 2 as END beside the new
    folder's version 1."""
    from tfllm.serving.server import ModelRegistry

    toy_classifiers(str(tmp_path / "old" / "clf" / "2"), warmup=False)
    toy_classifiers(str(tmp_path / "new" / "clf" / "1"), warmup=False)
    config = tmp_path / "models.config"
    _write_config(config, ("clf", "old/clf", ""))
    registry = ModelRegistry(str(tmp_path), model_config_file=str(config))
    registry.refresh()
    assert [(s.version, s.state) for s in registry.statuses("clf")] == [(2, "AVAILABLE")]
    _write_config(config, ("clf", "new/clf", ""))
    os.utime(config, (1, 1))
    with caplog.at_level("INFO", logger="tfllm.serving"):
        registry.refresh()
    unloaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unloaded")]
    assert unloaded == [f"unloaded clf version 2 (no longer under the configured base_path "
                        f"{tmp_path / 'new' / 'clf'})"], unloaded
    assert [(s.version, s.state) for s in registry.statuses("clf")] == [(1, "AVAILABLE")]
    assert registry.resolve("clf").path == str(tmp_path / "new" / "clf" / "1")


@pytest.mark.slow
def test_a_label_never_loads_a_version_the_policy_excludes(tmp_path, caplog, toy_classifiers):
    """Before, `canary` -> 3 loaded version 3 beside the policy's 1 and 2, and unlabelled requests
    then went to 3. As TF Serving: 3 stays unloaded and the label is refused."""
    from tfllm.serving.limits import RequestError
    from tfllm.serving.server import ModelRegistry

    for v in (1, 2, 3):
        toy_classifiers(str(tmp_path / "clf" / str(v)), bias=float(v), warmup=False)
    config = tmp_path / "models.config"
    policy = "model_version_policy { specific { versions: 1 versions: 2 } }"
    _write_config(config, ("clf", "clf", policy + ' version_labels { key: "canary" value: 3 }'
                           ' version_labels { key: "stable" value: 1 }'))
    registry = ModelRegistry(str(tmp_path), model_config_file=str(config))
    with caplog.at_level("ERROR", logger="tfllm.serving"):
        registry.refresh()
        registry.refresh()
    assert [s.version for s in registry.statuses("clf")] == [2, 1]
    assert registry.resolve("clf").version == 2  # the newest version the policy loads
    assert registry.resolve("clf", label="stable").version == 1
    with pytest.raises(RequestError, match="names version 3, which is not currently available") as info:
        registry.resolve("clf", label="canary")
    assert info.value.status == 400 and "model_version_policy does not load it" in info.value.message
    logged = [r.getMessage() for r in caplog.records if "'canary'" in r.getMessage()]
    assert len(logged) == 1, logged

    # Pointed at a loaded version it applies; pointed at a missing one it keeps that version.
    for target, expected in ((2, 2), (5, 2)):
        _write_config(config, ("clf", "clf", policy + f' version_labels {{ key: "canary" value: {target} }}'))
        os.utime(config, (target, target))
        registry.refresh()
        assert registry.resolve("clf", label="canary").version == expected
    assert [s.version for s in registry.statuses("clf")] == [2, 1]


@pytest.mark.parametrize("text,words", [
    ('config { name: "a" base_path: "x" } config { name: "a" base_path: "y" }', "'a' twice"),
    ('config { name: "a" }', "without a name or base_path"),
    # Both were served without a word ("Serving none yet", and a PyTorch model as a SavedModel).
    ('config { name: "a" base_path: "x" model_version_policy { specific { } } }',
     "model 'a' has a specific version policy with no versions; list them"),
    ('config { name: "a" base_path: "x" model_platform: "pytorch" }', "model 'a' has model_platform 'pytorch'"),
])
def test_a_config_with_a_model_twice_or_without_base_path_is_refused(tmp_path, text, words):
    from tfllm.errors import UserInputError

    config = tmp_path / "models.config"
    config.write_text("model_config_list { " + text + " }")
    with pytest.raises(UserInputError, match=words):
        read_model_config(str(config))


def test_config_errors_while_serving_are_logged_as_one_sentence(tmp_path, caplog):
    """Reloads logged "list each model once.; keeping ..." and "(2:34 : Expected "}".); pass ...", and a missing
    absolute base_path was told where relative ones are."""
    from tfllm.serving.registry import ModelRegistry

    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "gone" base_path: "{tmp_path / "nonexistent"}" }} '
                      'config { name: "rel" base_path: "missing" } }')
    registry = ModelRegistry(str(tmp_path), poll_seconds=0, model_config_file=str(config))
    registry.refresh()
    gone, relative = (next(r.getMessage() for r in caplog.records if f"model {name!r}" in r.getMessage())
                      for name in ("gone", "rel"))
    assert "does not exist (yet)" in gone and "Relative base_paths" not in gone, gone
    assert f"Relative base_paths are under {str(tmp_path)!r}." in relative, relative
    for stamp, (text, words) in enumerate([
            ('config { name: "a" base_path: "x" } config { name: "a" base_path: "y" } }', "list each model once"),
            ('config { name: "a" base_path: "x" model_version_policy { specific { } } } }', "with no versions"),
            ('config { name: ', "Cannot read model config")]):
        caplog.clear()
        config.write_text("model_config_list { " + text)
        os.utime(config, (stamp + 1, stamp + 1))
        registry.refresh()
        (message,) = [r.getMessage() for r in caplog.records if "keeping the previous" in r.getMessage()]
        assert words in message and ".;" not in message and ".)" not in message and message.endswith(
            "; keeping the previous models and labels."), message


def test_sample_request_scripts_are_valid():
    subprocess.run(["bash", "-n", str(SERVING / "requests.sh")], check=True)
    compile((SERVING / "request.py").read_text(), "request.py", "exec")
    script = (SERVING / "requests.sh").read_text()
    assert all(f"/{name}" in script for name in MODELS)


def test_the_sample_generation_requests_send_what_a_real_export_takes():
    """The scripts' generation requests once sent two of serving_default's six inputs (a 400 against a real
    export, unseen because the test server's toy generator took two)."""
    import inspect
    import re

    from tfllm.export import causal_lm

    source = inspect.getsource(causal_lm.generation_archive)
    inputs = re.findall(r'spec\(tf\.\w+, "(\w+)"\)', source.split("def greedy")[0])  # serving_default's
    assert len(inputs) == 6 and inputs[:2] == ["prompt", "max_new_tokens"]
    bodies = [json.loads(body) for body in re.findall(r"-d '(\{.*\})'", (SERVING / "requests.sh").read_text())
              if "prompt" in body]
    assert bodies
    for body in bodies:
        expected = inputs[:2] if body.get("signature_name") == "greedy" else inputs
        assert all(sorted(row) == sorted(expected) for row in body["instances"]), body


@pytest.mark.slow  # 3.3 s in stop 61's fresh clone: over make test-fast's 3 s line
def test_latest_policy_keeps_serving_while_the_newer_version_fails_to_load(tmp_path, toy_classifiers):
    """TF Serving's default (AvailabilityPreservingPolicy): a broken or half-copied newer
    version does not take the model offline; the selected version replaces it once it loads."""
    from tfllm.serving.server import ModelRegistry

    savedmodels = tmp_path / "savedmodels"
    toy_classifiers(str(savedmodels / "clf" / "1"), bias=0.0, warmup=False)
    config = tmp_path / "latest.config"  # no model_version_policy: `latest` 1
    config.write_text(f'model_config_list {{ config {{ name: "clf" base_path: "{savedmodels / "clf"}" '
                      'model_platform: "tensorflow" } }\n')
    registry = ModelRegistry(str(savedmodels), model_config_file=str(config))
    registry.refresh()
    assert registry.resolve("clf").version == 1

    staging = tmp_path / "staging"
    toy_classifiers(str(staging), bias=5.0, warmup=False)
    (savedmodels / "clf" / "2").mkdir()
    shutil.copy(staging / "saved_model.pb", savedmodels / "clf" / "2")  # a copy in progress
    registry.refresh()
    assert registry.resolve("clf").version == 1
    statuses = {s.version: s.error for s in registry.statuses("clf")}
    assert statuses[1] is None and statuses[2]  # 1 AVAILABLE, 2 END with its error

    shutil.rmtree(savedmodels / "clf" / "2")
    shutil.copytree(staging, savedmodels / "clf" / "2")  # the copy completes
    registry.refresh()
    # 1 is unloaded only now, and stays listed as END, as TF Serving lists a version it unloaded.
    assert [(s.version, s.state, s.error) for s in registry.statuses("clf")] == [(2, "AVAILABLE", None),
                                                                                 (1, "END", None)]
    assert [s.state for s in registry.statuses("clf", 1)] == ["END"]
    assert registry.resolve("clf").version == 2

    config.unlink()  # a config that vanishes while serving: the last one read still applies
    registry.refresh()
    assert [(s.version, s.state) for s in registry.statuses("clf")] == [(2, "AVAILABLE"), (1, "END")]


# --- a real server run with a config ------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Version 3 is on disk but not in the policy; `canary` names it.
CONFIG_SERVED = [("reviews", "sm/clf", "model_version_policy { specific { versions: 1 versions: 2 } } "
                  'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 }')]


@pytest.fixture(scope="module")
def config_server(tmp_path_factory, toy_classifiers):
    """`tfllm serve --model-config-file models.config` (no folder: base_paths are under the
    working directory) over `sm/clf` versions 1-3 and an unlisted `sm/unlisted`."""
    from tfllm.serving import RestClient

    root = tmp_path_factory.mktemp("configured")
    for v in (1, 2, 3):
        toy_classifiers(str(root / "sm" / "clf" / str(v)), bias=float(v), warmup=False)
    toy_classifiers(str(root / "sm" / "unlisted" / "1"), warmup=False)
    config = root / "models.config"
    _write_config(config, *CONFIG_SERVED)
    rest_port, grpc_port = _free_port(), _free_port()
    log_path = root / "server.log"
    with serving_process(["--model-config-file", "models.config", "--port", rest_port,
                          "--grpc-port", grpc_port, "--poll-seconds", "0.2"],
                         lambda: RestClient("127.0.0.1", rest_port, timeout=2).status("reviews"),
                         log_path, cwd=root):
        yield {"rest": rest_port, "grpc": grpc_port, "config": config, "log": log_path}


def _get(port, path, method="GET", body=None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_the_server_serves_the_configs_models_only(config_server):
    status, listing = _get(config_server["rest"], "/v1/models")
    assert status == 200 and [m["name"] for m in listing["models"]] == ["reviews"], listing
    status, answer = _get(config_server["rest"], "/v1/models/unlisted")
    assert status == 404 and "'unlisted'" in answer["error"]
    status, answer = _get(config_server["rest"], "/v1/models/reviews")
    assert [s["version"] for s in answer["model_version_status"]] == ["2", "1"]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.slow
def test_the_server_refuses_a_label_for_a_version_it_does_not_load(protocol, config_server):
    from tfllm.serving import GrpcClient, RestClient, ServingError

    client = (RestClient("127.0.0.1", config_server["rest"], timeout=10) if protocol == "rest"
              else GrpcClient("127.0.0.1", config_server["grpc"], timeout=10))
    assert client.metadata("reviews")["model_spec"]["version"] == "2"  # not 3
    assert client.metadata("reviews", label="stable")["model_spec"]["version"] == "1"
    with pytest.raises(ServingError, match="'canary' of model 'reviews' names version 3, which is "
                                           "not currently available for inference") as info:
        client.predict("reviews", ["good"], label="canary")
    # TF Serving maps no such label, so its answer is "Unrecognized servable version label":
    # InvalidArgument, REST 400 (it was 404 / NOT_FOUND, which reads as "no such model or version").
    assert info.value.status == (400 if protocol == "rest" else "INVALID_ARGUMENT")
    log = config_server["log"].read_text()
    assert log.count("names version 3") == 1, log


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.slow
def test_status_by_label_lists_every_version_as_tf_serving(protocol, config_server):
    """GetModelStatusWithModelSpec ignores the label when no version is given; before, only the
    labelled version was listed (and an unknown label was a 404)."""
    from tfllm.serving import GrpcClient, RestClient

    client = (RestClient("127.0.0.1", config_server["rest"], timeout=10) if protocol == "rest"
              else GrpcClient("127.0.0.1", config_server["grpc"], timeout=10))
    every = client.status("reviews")
    assert [s["version"] for s in every["model_version_status"]] == ["2", "1"]
    for label in ("stable", "canary", "nope"):
        assert client.status("reviews", label=label) == every


@pytest.mark.slow
def test_reload_config_over_grpc_applies_models_policies_and_labels(config_server):
    """ModelService.HandleReloadConfigRequest: before, UNIMPLEMENTED. Kept last: it changes the
    server's models (and puts the file's config back at the end)."""
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    from tfllm.serving import RestClient

    channel = grpc.insecure_channel(f"127.0.0.1:{config_server['grpc']}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    rest = RestClient("127.0.0.1", config_server["rest"], timeout=10)

    def reload(*models):
        text = config_server["config"].parent / "reload.config"
        _write_config(text, *models)
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(text.read_text(), request.config)
        return stub.HandleReloadConfigRequest(request, timeout=60)

    every = "model_version_policy { all {} } "
    answer = reload(("renamed", "sm/unlisted", ""),
                    ("reviews", "sm/clf", every + 'version_labels { key: "canary" value: 3 }'))
    assert answer.HasField("status") and answer.status.error_code == 0  # as TF Serving's OK
    _, listing = _get(config_server["rest"], "/v1/models")
    assert [m["name"] for m in listing["models"]] == ["renamed", "reviews"]
    assert rest.metadata("reviews", label="canary")["model_spec"]["version"] == "3"
    # TF Serving's ModelService answers a config without a model_config_list (an empty one, a
    # client that forgot to fill it) INVALID_ARGUMENT; it was an OK that changed nothing.
    with pytest.raises(grpc.RpcError) as info:
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model_config_list" in info.value.details()
    _, listing = _get(config_server["rest"], "/v1/models")
    assert [m["name"] for m in listing["models"]] == ["renamed", "reviews"]  # nothing changed

    with pytest.raises(grpc.RpcError) as info:
        reload(("reviews", "sm/clf", every + 'version_labels { key: "canary" value: 9 }'))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'canary' of model 'reviews' names version 9" in info.value.details()
    assert rest.metadata("reviews", label="canary")["model_spec"]["version"] == "3"  # kept
    with pytest.raises(grpc.RpcError) as info:
        reload(("a", "sm/clf", ""), ("a", "sm/clf", ""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "twice" in info.value.details()

    with pytest.raises(grpc.RpcError):  # the file's config: its `canary` -> 3 is refused again
        reload(*CONFIG_SERVED)
    _, listing = _get(config_server["rest"], "/v1/models")
    assert [m["name"] for m in listing["models"]] == ["reviews"]
    channel.close()


@pytest.mark.slow
def test_tf_servings_command_line_serves_one_model_with_its_ports(tmp_path, capsys, monkeypatch, toy_classifiers):
    """tensorflow_model_server's single-model command line, as it is: `--port` gRPC, `--rest_api_port` REST,
    `--model_name` over `--model_base_path` (one model's versions, the newest served). `tfllm serve` refused
    each of those flags (unrecognized arguments), and read `--port` as REST."""
    from conftest import main_in_process

    from tfllm.serving import GrpcClient, RestClient

    for v in (1, 2):
        toy_classifiers(str(tmp_path / "clf" / str(v)), bias=float(v), warmup=False)
    rest_port, grpc_port = _free_port(), _free_port()
    with serving_process([f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=films",
                          f"--model_base_path={tmp_path / 'clf'}", "--file_system_poll_wait_seconds=0.2",
                          "--tensorflow_intra_op_parallelism=1"],
                         lambda: RestClient("127.0.0.1", rest_port, timeout=2).status("films"),
                         tmp_path / "server.log"):
        for client in (RestClient("127.0.0.1", rest_port, timeout=10), GrpcClient("127.0.0.1", grpc_port, timeout=10)):
            assert [s["version"] for s in client.status("films")["model_version_status"]] == ["2"]  # `latest` 1
            assert client.metadata("films")["model_spec"]["version"] == "2"
        status, listing = _get(rest_port, "/v1/models")
        assert [m["name"] for m in listing["models"]] == ["films"], listing
        fixtures.save_classifier(str(tmp_path / "clf" / "3"), warmup=False)  # a new version replaces it
        deadline = time.monotonic() + 30
        while RestClient("127.0.0.1", rest_port, timeout=10).metadata("films")["model_spec"]["version"] != "3":
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

    # TF Serving's --model_base_path without --model_name serves that folder's versions as "default", and
    # --file_system_poll_wait_seconds=0 scans it once. Before: "Serving none yet" (the versions were read as
    # model folders), and 0 was refused.
    with serving_process([f"--rest_api_port={rest_port}", f"--port={grpc_port}", f"--model_base_path={tmp_path / 'clf'}",
                          "--file_system_poll_wait_seconds=0", "--enable_batching=true"],
                         lambda: RestClient("127.0.0.1", rest_port, timeout=2).status("default"),
                         tmp_path / "server2.log"):
        status = RestClient("127.0.0.1", rest_port, timeout=10).status("default")
        assert [s["version"] for s in status["model_version_status"]] == ["3"]
        fixtures.save_classifier(str(tmp_path / "clf" / "4"), warmup=False)
        time.sleep(3)  # the default poll (1 s) would have loaded it
        assert RestClient("127.0.0.1", rest_port, timeout=10).metadata("default")["model_spec"]["version"] == "3"
    log = (tmp_path / "server2.log").read_text()
    assert "ignoring TF Serving's --enable_batching" in log, log
    # Server events are lines of their own (they became "WARNING:tfllm.serving:loaded ..." mid-run).
    assert "\nloaded default version 3 in " in log and "tfllm.serving:" not in log, log

    # What the two command lines cannot both mean is one line, before anything starts. So is a version folder or a
    # run directory given as the folder to serve: each started a server with no model, every request a 404.
    (tmp_path / "other").mkdir()
    run_dir = tmp_path / "runs" / "clf"
    (run_dir / "tfllm").mkdir(parents=True)
    (run_dir / "tfllm" / "run.json").write_text("{}")  # what marks a run directory from its start
    version_folder = f"{str(tmp_path / 'clf' / '3')!r} is one version of a model (it holds saved_model.pb), not a " \
                     f"folder of versions; pass its model's folder, {str(tmp_path / 'clf')!r}."
    for argv, words in (
            ([tmp_path / "clf" / "3"], version_folder),
            ([f"--model_base_path={tmp_path / 'clf' / '3'}"], version_folder),
            (["--model_name", "films", tmp_path / "clf" / "3"], version_folder),
            ([run_dir], f"{str(run_dir)!r} is a tfllm run directory, not exported models; export it first (tfllm "
                        f"export {run_dir} --name NAME)"),
            (["--rest_api_port", "8601", "--port", "8600", "--grpc-port", "8602"], "--port is the gRPC port"),
            (["--rest_api_port", "0"], "always serves REST"),
            (["--model_name", "films"], "give that folder"),
            (["--model_name", "films", tmp_path / "clf", "--model_config_file", tmp_path / "x.config"], "no --model-config-file"),
            (["--model_name", "a/b", tmp_path / "clf"], "'a/b': use ASCII letters"),
            ([tmp_path / "clf", "--model_base_path", tmp_path / "other"], "Two model folders")):
        result = main_in_process(capsys, "serve", *argv)
        assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1, result
    # A busy port is named by the flag that gave it: with TF Serving's, REST's is --rest_api_port (not --port).
    import socket

    monkeypatch.setenv("GRPC_EXPERIMENTS", os.environ.get("GRPC_EXPERIMENTS", ""))  # serve() sets it in-process

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        for argv, flag in ((["--rest_api_port", taken, "--port", _free_port()], "--rest_api_port"),
                           (["--rest_api_port", _free_port(), "--port", taken], "--port (0 turns gRPC off)")):
            result = main_in_process(capsys, "serve", tmp_path / "clf", *argv)
            assert result.returncode == 2 and f"{taken}" in result.stderr and f"another {flag}" in result.stderr, \
                result


def test_a_folder_of_run_directories_with_no_export_is_refused_and_an_empty_folder_is_not(tmp_path):
    """`tfllm serve runs` (runs/gen, runs/clf: run directories, no NAME/VERSION/) started and served nothing; the log
    said only "Serving none yet". (`serve` refuses what check_servable_folder raises before it starts, exit 2.)"""
    from tfllm.errors import UserInputError
    from tfllm.serving.server import check_servable_folder

    for run in ("gen", "clf", "tr"):
        (tmp_path / "runs" / run / "tfllm").mkdir(parents=True)
        (tmp_path / "runs" / run / "tfllm" / "run.json").write_text("{}")  # what marks a run directory from its start
    with pytest.raises(UserInputError) as refused:
        check_servable_folder(str(tmp_path / "runs"))
    message = str(refused.value)
    assert "\n" not in message and "holds tfllm run directories ('clf', 'gen', ...), not exported models" in message
    assert f"tfllm export {tmp_path / 'runs' / 'clf'}" in message, message
    (tmp_path / "empty").mkdir()
    check_servable_folder(str(tmp_path / "empty"))  # an export may come later: served, as TF Serving waits
    (tmp_path / "runs" / "reviews" / "1").mkdir(parents=True)  # an export's version folder beside them: served
    check_servable_folder(str(tmp_path / "runs"))


@pytest.mark.slow
def test_a_config_error_in_the_servers_poll_thread_names_the_commands_flag(tmp_path, toy_classifiers):
    """The poll thread's errors are the `tfllm serve` command's: they name --model-config-file, not the
    Python argument (errors.command_running is the process's, which threads see; a contextvar is not)."""
    from tfllm.serving import RestClient

    toy_classifiers(str(tmp_path / "sm" / "clf" / "1"), warmup=False)
    config = tmp_path / "models.config"
    _write_config(config, ("reviews", "sm/clf", ""))
    rest_port, log_path = _free_port(), tmp_path / "server.log"
    with serving_process(["serve", "--model-config-file", "models.config", "--port", rest_port, "--grpc-port", "0",
                          "--poll-seconds", "0.2"], lambda: RestClient("127.0.0.1", rest_port, timeout=2).status("reviews"),
                         log_path, cwd=tmp_path, module="tfllm.cli"):
        config.write_text("model_config_list { config { name: ")
        deadline = time.monotonic() + 30
        while "Cannot read model config" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    log = log_path.read_text()
    assert "Cannot read model config" in log and "(--model-config-file)" in log, log
