"""The `savedmodels/NAME/VERSION/` folder layout TF Serving reads.

Everything here reads files only (`saved_model.pb`, `models.config`); nothing
loads a model, so listing a folder is quick and needs no TensorFlow Text ops.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from tfllm.config import expand_home
from tfllm.errors import UserInputError
from tfllm.export import versioning

SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = versioning.TFLITE_FILE


def scan(base_path: str, files: tuple[str, ...] = (SAVED_MODEL_FILE,)) -> dict[str, dict[int, str]]:
    """Finds every servable version under `base_path`.

    Args:
        base_path: a folder laid out as `NAME/VERSION/saved_model.pb`.
        files: a version folder counts if it holds one of these; the default
            finds what a server can load, `(SAVED_MODEL_FILE, TFLITE_FILE)`
            every export, `()` every numbered folder (what `tfllm models`
            lists, an incomplete one as BROKEN).

    Returns:
        `{name: {version: version_dir}}`. Folders whose name is not a
        non-negative integer (temporary export or prune folders) are skipped,
        as TF Serving skips them.
    """
    found: dict[str, dict[int, str]] = {}
    try:
        names = sorted(os.listdir(base_path))
    except FileNotFoundError:
        return found
    for name in names:
        model_dir = os.path.join(base_path, name)
        if name.startswith(".") or not os.path.isdir(model_dir):
            continue
        versions = scan_model(model_dir, files)
        if versions:
            found[name] = versions
    return found


def scan_model(model_dir: str, files: tuple[str, ...] = (SAVED_MODEL_FILE,)) -> dict[int, str]:
    """`{version: version_dir}` for one model's folder (see `scan`); `{}` if it is gone."""
    versions = {}
    try:
        entries = os.listdir(model_dir)
    except OSError:
        return versions
    for entry in entries:
        path = os.path.join(model_dir, entry)
        if versioning.is_version_name(entry) and (any(os.path.isfile(os.path.join(path, f)) for f in files)
                                                  or files == () and os.path.isdir(path)):
            versions[int(entry)] = path
    return versions


def fingerprint(path: str) -> tuple:
    """Every file's name, size and modification time under a version folder.

    A failed version is retried when this changes, so a copy that lands
    `saved_model.pb` first and the variables later is loaded once complete.
    """
    entries = []
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size,
                            st.st_mtime_ns))
    return tuple(sorted(entries))


# The layout's owner reads them (an export compares a new version's with the one before it).
read_signature_defs = versioning.read_signature_defs
describe_signatures = versioning.describe_signatures


def _dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def list_models(base_path: str) -> list[dict]:
    """Describes every model and version under a `savedmodels/` folder.

    Args:
        base_path: a folder laid out as `NAME/VERSION/`.

    Returns:
        One dict per model, sorted by name: `{"name", "versions": [{"version",
        "path", "format", "size_bytes", "signatures": {sig: {"inputs",
        "outputs"}}}]}` with versions newest first; `format` is
        `saved_model` or `tflite` (the signatures of `model.tflite`, and of
        `model_text.tflite` as `"model_text.tflite:NAME"` where it is there), or
        None for a folder with neither file (an `"error"` says so). A
        version that cannot load (a garbage `saved_model.pb`, missing
        variables, a truncated `model.tflite`) is listed with an `"error"`
        and no signatures.

    Raises:
        UserInputError: if `base_path` is not a folder.
    """
    base_path = expand_home(base_path)  # "~/models" from Python, as the command takes it
    if not os.path.isdir(base_path):
        raise UserInputError(
            f"{base_path!r} is not a folder; pass the folder that holds "
            "NAME/VERSION/ exports (for example savedmodels/)."
        )
    # Every numbered folder: one without saved_model.pb (a copy cut short) is listed as BROKEN, as docs/serving.md
    # says, not left out.
    found = scan(base_path, files=())
    own = scan_model(base_path, files=(SAVED_MODEL_FILE, TFLITE_FILE))
    if not found and own:  # one model's folder (NAME/), as TF Serving's --model_base_path takes
        parent = os.path.dirname(os.path.normpath(base_path)) or "."
        raise UserInputError(
            f"{base_path!r} is one model's folder (versions {', '.join(map(str, sorted(own)))}); "
            f"pass the folder that holds it, {parent!r}."
        )
    models = []
    for name, versions in found.items():
        model = {"name": name, "versions": [_describe_version(v, versions[v]) for v in sorted(versions, reverse=True)]}
        # What a server never reads and prune never removes (a `latest` link, a `3.tmp` copy): named, so a
        # link left dangling by a prune or a half-made copy is not forgotten there.
        model_dir = os.path.join(base_path, name)
        ignored = sorted(e for e in os.listdir(model_dir) if not e.startswith(".") and
                         not (versioning.is_version_name(e) and os.path.isdir(os.path.join(model_dir, e))))
        if ignored:
            model["ignored"] = [e + (" (a link to nothing)" if os.path.islink(os.path.join(model_dir, e)) and
                                     not os.path.exists(os.path.join(model_dir, e)) else "") for e in ignored]
        models.append(model)
    return models


def describe_tflite_signatures(model_path: str) -> dict[str, dict]:
    """Input and output names, dtypes and shapes of each signature of a `.tflite` file."""
    import numpy as np

    from tfllm.export.tflite_runtime import load_interpreter

    def tensors(details):
        # A dimension the file leaves open (the batch) is -1 in `shape_signature`.
        # Strings as the SavedModels' listing names them (NumPy calls TFLite's string "bytes").
        return {name: {"dtype": "string" if np.dtype(d["dtype"]).kind in "SO" else np.dtype(d["dtype"]).name,
                       "shape": [None if n < 0 else int(n) for n in d["shape_signature"]]}
                for name, d in sorted(details.items())}

    interpreter = load_interpreter(model_path=model_path)
    described = {}
    for name in sorted(interpreter.get_signature_list()):
        runner = interpreter.get_signature_runner(name)
        described[name] = {"inputs": tensors(runner.get_input_details()),
                           "outputs": tensors(runner.get_output_details())}
    return described


def _describe_version(version: int, path: str) -> dict:
    tflite = not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))
    # A folder with neither file (an empty `mkdir NAME/7`) is no format: it was listed as TFLite ("not servable
    # by TF Serving") beside "BROKEN: no saved_model.pb", as if it were a TFLite export.
    export = not tflite or os.path.isfile(os.path.join(path, TFLITE_FILE))
    entry = {"version": version, "path": path, "format": ("tflite" if tflite else "saved_model") if export else None,
             "size_bytes": _dir_size(path)}
    if not export:
        entry["signatures"] = {}
        entry["error"] = ("empty folder: " if not os.listdir(path) else "") + f"no {SAVED_MODEL_FILE} or {TFLITE_FILE}"
        return entry
    problem = versioning.version_problem(path)
    if problem is None and tflite and importlib.util.find_spec("ai_edge_litert") is None:
        entry["signatures"] = {}  # a good file; only reading its signatures needs the interpreter
        entry["note"] = 'signatures not read: pip install "tfllm[tflite]"'
        return entry
    if problem is None:
        try:
            if tflite:
                entry["signatures"] = describe_tflite_signatures(os.path.join(path, TFLITE_FILE))
                text_model = os.path.join(path, versioning.TFLITE_TEXT_FILE)
                if os.path.isfile(text_model):  # strings in: listed too, under its file's name
                    entry["signatures"].update({f"{versioning.TFLITE_TEXT_FILE}:{name}": io for name, io in
                                                describe_tflite_signatures(text_model).items()})
            else:
                entry["signatures"] = describe_signatures(path)
        except Exception as e:  # noqa: BLE001 - one broken version must not hide the rest
            problem = f"cannot read its signatures ({type(e).__name__}: {str(e)[:200]})"
    if problem is not None:
        entry["signatures"] = {}
        entry["error"] = problem
    return entry


def _format_tensor(name: str, info: dict) -> str:
    shape = "?" if info["shape"] is None else str(info["shape"]).replace("None", "-1")
    return f"{name}: {info['dtype']}{shape}"


def _format_size(size: int) -> str:
    # Decimal units, as the README's and the benchmarks' MB figures: 1,000,099 bytes printed "976.7 KB".
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def format_models(models: list[dict]) -> str:
    """`list_models` output as the text `tfllm models` prints."""
    if not models:
        return "No models found (expected NAME/VERSION/saved_model.pb or NAME/VERSION/model.tflite)."
    lines = []
    for model in models:
        lines.append(model["name"])
        for v in model["versions"]:
            kind = "  TFLite (not servable by TF Serving)" if v["format"] == "tflite" else ""
            lines.append(f"  version {v['version']}  {_format_size(v['size_bytes'])}  {v['path']}{kind}")
            if "error" in v:
                lines.append(f"    BROKEN: {v['error']}")
            if "note" in v:
                lines.append(f"    ({v['note']})")
            for sig, io in v["signatures"].items():
                ins = ", ".join(_format_tensor(k, i) for k, i in io["inputs"].items())
                outs = ", ".join(_format_tensor(k, i) for k, i in io["outputs"].items())
                lines.append(f"    {sig}({ins}) -> {outs}")
        if model.get("ignored"):
            lines.append(f"  not versions (never served nor pruned): {', '.join(model['ignored'])}")
    return "\n".join(lines)


def prune(base_path: str, name: str, keep: int) -> list[int]:
    """Deletes all but the newest `keep` versions of a model.

    Never deletes the newest version that loads (see `versioning.prune`), nor
    one that `base_path/models.config` serves by number or label (`tfllm serve
    base_path` reads that file: pruning it took the server's model away); the result's `skipped` says what was kept and why. Each doomed version is
    first renamed to a non-integer folder, so a server polling the folder
    never sees a half-deleted version.

    Args:
        base_path: a folder laid out as `NAME/VERSION/`.
        name: the model whose versions to prune.
        keep: how many of the newest versions to keep (at least 1).

    Returns:
        The deleted version numbers, oldest first (a `versioning.PruneResult`).

    Raises:
        UserInputError: if `keep` < 1 or the model does not exist.
    """
    if keep < 1:
        raise UserInputError(f"--keep must be at least 1, got {keep}.")
    base_path = expand_home(base_path)
    every_export = scan(base_path, files=(SAVED_MODEL_FILE, TFLITE_FILE))
    if not every_export.get(name):
        known = ", ".join(every_export) or "none"
        raise UserInputError(
            f"No model {name!r} under {base_path!r} (models found: {known})."
        )
    return versioning.prune(base_path, name, keep, pinned=pinned_versions(base_path, name))


def pinned_versions(base_path: str, name: str) -> dict[int, str]:
    """`{version: why}` for the versions of `base_path/name` that `base_path/models.config` pins: by a
    `specific` policy or a version label, of any config model whose base_path is that folder.

    Raises:
        UserInputError: the config exists and cannot be read (what it pins is unknown).
    """
    path = os.path.join(base_path, "models.config")
    if not os.path.exists(path):
        return {}
    try:
        policies = read_model_config(path)
    except UserInputError as e:  # what it pins is unknown: prune nothing rather than a served version
        raise UserInputError(f"Not pruning {name!r}: {str(e)[:1].lower()}{str(e)[1:]}") from e
    folder = os.path.realpath(os.path.join(base_path, name))
    pinned = {}
    for model, policy in policies.items():
        # As `tfllm serve base_path` resolves it: relative base_paths are under base_path.
        if os.path.realpath(os.path.join(base_path, policy.base_path)) != folder:
            continue
        for version in policy.specific or ():
            pinned.setdefault(version, f"{path} serves it (model {model!r}, specific versions)")
        for label, version in sorted(policy.labels.items()):
            pinned.setdefault(version, f"{path} serves it (model {model!r}, label {label!r})")
    return pinned


@dataclass
class ModelPolicy:
    """One model of a `models.config`: where it is, which versions to serve, its labels.

    Attributes:
        base_path: the model's folder (`base_path`), as written in the config.
        labels: `{label: version}` from `version_labels`. Labels never change
            which versions load: one naming a version the policy does not
            load is refused by the registry, as TF Serving refuses it.
        latest: serve only the newest N versions (TF Serving's `latest`).
        specific: serve exactly these versions (TF Serving's `specific`).
        Neither set means all versions on disk (TF Serving's `all`); the
        local server uses that for every model when it runs without a config.
    """

    base_path: str = ""
    labels: dict[str, int] = field(default_factory=dict)
    latest: int | None = None
    specific: list[int] | None = None

    def select(self, versions: list[int]) -> list[int]:
        """The versions to load out of those on disk."""
        if self.specific is not None:
            chosen = set(self.specific)
        elif self.latest is not None:
            chosen = set(sorted(versions)[-self.latest :])
        else:
            chosen = set(versions)
        return sorted(v for v in versions if v in chosen)


def policies_from_config(config, where: str) -> dict[str, ModelPolicy]:
    """`{name: ModelPolicy}` from a `ModelServerConfig` proto (`where` names it in errors).

    Raises:
        UserInputError: a model without a name or base_path, or listed twice
            (TF Serving refuses those configs too).
    """
    policies = {}
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise UserInputError(f"Model config {where} has a model without a name or base_path "
                                 f"(name {model.name!r}, base_path {model.base_path!r}); give "
                                 "every model both.")
        if model.name in policies:
            raise UserInputError(f"Model config {where} lists model {model.name!r} twice; "
                                 "list each model once.")
        if model.model_platform not in ("", "tensorflow"):  # TF Serving refuses any other platform too
            raise UserInputError(f"Model config {where}: model {model.name!r} has model_platform "
                                 f"{model.model_platform!r}; tfllm serve serves TensorFlow SavedModels only, so set "
                                 'model_platform: "tensorflow" or leave it out.')
        policy = ModelPolicy(base_path=model.base_path, labels=dict(model.version_labels))
        which = model.model_version_policy.WhichOneof("policy_choice")
        if which == "latest":
            policy.latest = model.model_version_policy.latest.num_versions or 1
        elif which == "specific":
            policy.specific = list(model.model_version_policy.specific.versions)
            if not policy.specific:  # it served nothing, and start-up said only "Serving none yet"
                raise UserInputError(f"Model config {where}: model {model.name!r} has a specific version policy "
                                     "with no versions; list them (specific { versions: 1 }) or use latest.")
        elif which is None:
            policy.latest = 1  # TF Serving's default policy
        policies[model.name] = policy
    return policies


def read_model_config(path: str) -> dict[str, ModelPolicy]:
    """Reads the models, version policies and labels of a TF Serving `models.config`.

    `name`, `base_path`, `model_version_policy` and `version_labels` are
    used; a server with a config serves exactly its models (`ModelRegistry`).

    Raises:
        UserInputError: if the file does not parse as a `ModelServerConfig`,
            or a model lacks a name or base_path or is listed twice.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        with open(path, encoding="utf-8") as f:
            text_format.Parse(f.read(), config)
    except (OSError, text_format.ParseError) as e:
        reason = (str(e).splitlines()[0] if str(e) else type(e).__name__).rstrip(".")  # inside our sentence
        raise UserInputError(f"Cannot read model config {path!r} ({reason}); pass a TF Serving "
                             "models.config (--model-config-file) that exists and parses.") from e
    return policies_from_config(config, repr(path))
