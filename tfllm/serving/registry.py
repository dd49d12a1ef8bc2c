"""The loaded models, kept in step with a `savedmodels/NAME/VERSION/` folder.

A background thread rescans the folder: new versions are loaded (and warmed
with their `assets.extra/tf_serving_warmup_requests`), vanished ones dropped.
A version that fails to load is reported in the model's status (state `END`
with the error, as TF Serving does) and retried whenever any of its files
change, so a version copied in file by file loads once the copy completes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from tfllm.errors import UserInputError
from tfllm.serving import models as models_lib
from tfllm.serving.limits import RequestError, shown
from tfllm.serving.servable import Servable, load_servable

logger = logging.getLogger("tfllm.serving")


@dataclass(frozen=True)
class VersionStatus:
    """One line of a model's status: a loaded version, or one that failed to load."""

    version: int
    error: str | None = None  # None: AVAILABLE (or END when `ended`); otherwise the load error (state END)
    ended: bool = False  # served once, unloaded since (its folder went, or the policy dropped it): END, OK
    loading: bool = False  # being loaded now: LOADING, OK (as TF Serving lists it until it is AVAILABLE)

    @property
    def state(self) -> str:
        if self.loading:
            return "LOADING"
        return "AVAILABLE" if self.error is None and not self.ended else "END"


def _short_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = next((line for line in text if line.strip()), type(e).__name__)
    return f"{type(e).__name__}: {first.strip()}"[:500]


@dataclass
class ModelState:
    versions: dict[int, Servable]
    labels: dict[str, int]
    failed: dict[int, str] = field(default_factory=dict)  # version -> load error
    refused: dict[str, str] = field(default_factory=dict)  # label -> why it does not resolve
    ended: frozenset = frozenset()  # versions unloaded since they were served (TF Serving keeps them as END)
    model_dir: str | None = None  # the folder its versions were found in (a config's base_path)


class ModelRegistry:
    """Keeps the loaded models in step with a `savedmodels/` folder or a `models.config`.

    Readers get an immutable snapshot (`self._models` is swapped whole), so
    requests never take a lock and a slow load never blocks serving.

    Args:
        base_path: without a config, the folder holding `NAME/VERSION/`
            exports, every one of which is served. With a config, the folder
            its relative `base_path`s are under (TF Serving's
            `model_config_list_root_dir`); None: the working directory.
        poll_seconds: how often to rescan the folders (and the config); 0: only when `refresh` is
            called (the server calls it once, at start-up).
        model_config_file: optional TF Serving `models.config`. As with
            `tensorflow_model_server --model_config_file`, exactly its models
            are served, each under its `name` from its `base_path`, with its
            `model_version_policy` and `version_labels`; it is re-read when
            it changes, so a model removed from it is unloaded.
        models: `{name: ModelPolicy}` served as a config's models, without a
            file (TF Serving's single-model mode).
        config_poll_seconds: re-read the config at most this often; 0: only at the first
            refresh; None: at every refresh, when its modification time changed.

    Example:
    ```python
    registry = ModelRegistry("savedmodels")
    registry.refresh()
    servable = registry.resolve("reviews", label="stable")
    ```
    """

    def __init__(self, base_path: str | None, poll_seconds: float = 1.0,
                 model_config_file: str | None = None, models: dict | None = None,
                 config_poll_seconds: float | None = None):
        self.base_path = base_path
        self.poll_seconds = poll_seconds
        self.config_poll_seconds = config_poll_seconds
        self._config_read_at = None  # time.monotonic() of the last read
        self.model_config_file = model_config_file
        self._models: dict[str, ModelState] = {}
        self._failed: dict[str, tuple[tuple, str]] = {}  # path -> (fingerprint, error)
        self._stamps: dict[str, tuple] = {}  # path -> fingerprint of the loaded version's files when loaded
        # The config's models; None: no config, serve every folder under base_path.
        self._policies: dict[str, models_lib.ModelPolicy] | None = dict(models) if models else (
            {} if model_config_file else None)
        self._lock = threading.Lock()  # one refresh at a time: the poller's or a ReloadConfig's
        self._config_mtime = "unread"  # the config file's mtime when last read
        self._missing: set[str] = set()  # config base_paths already logged as missing
        self._refusals: dict[tuple[str, str], int] = {}  # (model, label) -> version, logged
        self._stop = threading.Event()
        self._thread = None
        self._loading: tuple[str, int] | None = None  # (model, version) being loaded now, for statuses()

    def _read_policies(self) -> None:
        """Re-reads the config file into `self._policies` when it changed (and is due, see
        `config_poll_seconds`)."""
        now, last, every = time.monotonic(), self._config_read_at, self.config_poll_seconds
        if last is not None and every is not None and (every == 0 or now - last < every):
            return
        self._config_read_at = now
        path = self.model_config_file
        try:
            mtime = os.path.getmtime(path)
        except OSError:
            mtime = None  # gone (perhaps being replaced): read_model_config says so once
        if mtime != self._config_mtime:
            try:
                self._policies = models_lib.read_model_config(path)
            except UserInputError as e:
                # The message is a sentence of its own ("... list each model once."): no "once.; keeping".
                logger.error("%s; keeping the previous models and labels.", str(e).rstrip("."))
            self._config_mtime = mtime

    def _config_models(self, policies) -> dict[str, dict[int, str]]:
        """`{name: {version: dir}}` for the config's models, each from its own base_path."""
        found = {}
        for name, policy in policies.items():
            model_dir = os.path.join(self.base_path or "", policy.base_path)  # absolute stays
            if not os.path.isdir(model_dir):
                # TF Serving waits for a missing base_path to appear; so do we (every poll).
                if model_dir not in self._missing:
                    self._missing.add(model_dir)
                    # Where relative ones are looked for, only for a relative one (`/nonexistent` was told it too).
                    under = "" if os.path.isabs(policy.base_path) else " Relative base_paths are under %s." % (
                        repr(self.base_path) if self.base_path
                        else "the working directory (pass MODEL_BASE_PATH to change it)")
                    logger.error("model %r: base_path %s does not exist (yet); serving the other models and "
                                 "looking again every %g s.%s", name, os.path.abspath(model_dir), self.poll_seconds,
                                 under)
                continue
            self._missing.discard(model_dir)
            found[name] = models_lib.scan_model(model_dir)
        return found

    def apply_config(self, config) -> dict[str, str]:
        """Serves a `ModelServerConfig` proto (gRPC `HandleReloadConfigRequest`) as if the config
        file had changed to it; the file's next change replaces it again.

        Returns:
            `{"model/label": why}` for labels refused because their version is not loaded.

        Raises:
            UserInputError: a model listed twice or without a name or base_path.
        """
        policies = models_lib.policies_from_config(config, "in the ReloadConfig request")
        with self._lock:
            self._policies = policies
            self._refresh()
            return {f"{name}/{label}": why for name in policies if name in self._models
                    for label, why in self._models[name].refused.items()}

    def refresh(self) -> None:
        """Loads new versions, retries changed broken ones and drops vanished ones (one scan)."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        if self.model_config_file:
            self._read_policies()
        if self._policies is not None:
            policies = self._policies
            on_disk = self._config_models(policies)
            model_dirs = {name: os.path.join(self.base_path or "", policies[name].base_path) for name in on_disk}
        else:
            policies, on_disk = {}, models_lib.scan(self.base_path)
            model_dirs = {name: os.path.join(self.base_path, name) for name in on_disk}
        current = self._models
        new_models = {}
        seen_paths = set()
        for name, versions in on_disk.items():
            policy = policies.get(name, models_lib.ModelPolicy())
            old = current.get(name, ModelState({}, {}))
            loaded, failed = {}, {}
            selected = policy.select(list(versions))
            for v in selected:
                seen_paths.add(versions[v])
                self._load(name, v, versions[v], old, loaded, failed)
            if failed and not loaded:
                # TF Serving's AvailabilityPreservingPolicy: while every version the policy
                # selects fails to load (broken, or still being copied), keep the newest
                # previously loaded one that is still on disk serving. With nothing
                # selected at all there is no availability to preserve, as in TF Serving.
                kept = [v for v in old.versions if versions.get(v) == old.versions[v].path]
                if kept:
                    loaded[max(kept)] = old.versions[max(kept)]
                    # Its fingerprint stays: dropped, the poll after the broken version went reloaded it.
                    seen_paths.add(versions[max(kept)])
                elif policy.latest is not None:
                    # Nothing served before (start-up, e.g. a restart after a half-copied deploy):
                    # the newest older version that loads serves meanwhile, as it would have if the
                    # server had been running. Before, the model answered 404 "no version that loads".
                    for v in sorted(set(versions) - set(selected), reverse=True):
                        seen_paths.add(versions[v])
                        if self._load(name, v, versions[v], old, loaded, failed):
                            logger.warning("serving %s version %d meanwhile: version(s) %s do not load",
                                           name, v, ", ".join(map(str, sorted(set(selected) & set(failed)))))
                            break
            model_dir = model_dirs[name]
            moved = old.model_dir is not None and old.model_dir != model_dir
            for v in sorted(set(old.versions) - set(loaded)):
                logger.info("unloaded %s version %d (%s)", name, v,
                            f"no longer under the configured base_path {model_dir}" if moved
                            else "its folder is gone" if v not in versions
                            else "changed on disk" if versions[v] != old.versions[v].path
                            else "no longer selected")
            if loaded or failed:
                wanted = dict(policy.labels) or ({"stable": max(loaded)} if loaded else {})
                labels, refused = self._check_labels(name, wanted, loaded, failed, versions,
                                                     old.labels)
                # A new base_path is a new history: the old folder's versions are not listed as END
                # beside the new folder's (version numbers of two folders need not relate).
                ended = frozenset() if moved else frozenset(
                    (old.ended | set(old.versions)) - set(loaded) - set(failed))
                new_models[name] = ModelState(loaded, labels, failed, refused, ended, model_dir)
        for path in set(self._failed) - seen_paths:
            del self._failed[path]
        for path in set(self._stamps) - seen_paths:
            del self._stamps[path]
        for name in sorted(set(current) - set(new_models)):
            old = current[name]
            if old.versions:
                logger.info("unloaded %s: %s", name, "it was removed from the model config"
                            if self._policies is not None and name not in self._policies
                            else "no version of it is left on disk")
            # A model still named (by the config, or by its folder) lists its unloaded versions as END, as TF
            # Serving does, where the last one's going made its status "Servable not found".
            known = name in policies if self._policies is not None else os.path.isdir(old.model_dir or "")
            model_dir = known and os.path.join(self.base_path or "", policies[name].base_path if self._policies
                                               is not None else name)
            if known and model_dir == old.model_dir and (old.versions or old.ended):
                new_models[name] = ModelState({}, {}, ended=old.ended | set(old.versions), model_dir=model_dir)
        self._models = new_models

    def _load(self, name, v, path, old, loaded, failed) -> bool:
        """Puts version `v` in `loaded` (kept, or loaded now) or its error in `failed`.

        A loaded version whose files changed (its folder replaced in place: `rm -rf m/1 && cp -r ... m/1`)
        is loaded again; it kept answering with the old model. The old one serves until the new one loads,
        and goes on serving if it does not (retried when the files change again)."""
        stamp = models_lib.fingerprint(path)
        previous = self._failed.get(path)
        kept = old.versions.get(v)
        kept = kept if kept is not None and kept.path == path else None  # loaded from this folder before
        if kept is not None:
            if self._stamps.get(path) == stamp or (previous is not None and previous[0] == stamp):
                loaded[v] = kept
                return True
            logger.info("reloading %s version %d: its files changed", name, v)
        elif previous is not None and previous[0] == stamp:
            failed[v] = previous[1]
            return False  # retry only once its files change
        # While a changed version reloads, the old one serves: not listed (or refused) as loading.
        self._loading = (name, v) if kept is None else None
        # A large export takes seconds to load (a generator's graphs: ~20 s on 2 cores), and requests for it
        # meanwhile were "Servable not found" with nothing in the log to say why.
        logger.info("loading %s version %d ...", name, v)
        try:
            start = time.perf_counter()
            loaded[v] = load_servable(name, v, path)
            self._failed.pop(path, None)
            self._stamps[path] = stamp
            logger.info("loaded %s version %d in %.1f s", name, v, time.perf_counter() - start)
            return True
        except Exception as e:  # noqa: BLE001 - a broken export must not stop the others
            error = _short_error(e)
            self._failed[path] = (stamp, error)
            if kept is not None:  # a changed version: the old one goes on serving
                loaded[v] = kept
                logger.error("cannot reload %s (will retry when its files change; the version loaded before "
                             "keeps serving): %s", path, error)
                return True
            failed[v] = error
            logger.error("cannot load %s (will retry when its files change): %s", path, error)
            return False
        finally:
            self._loading = None

    def _check_labels(self, name, wanted, loaded, failed, on_disk, old_labels):
        """`(labels, refused)`: the labels that name a loaded version, and why the others do not.

        As TF Serving, a label never loads a version: one naming a version that is
        not loaded is refused (logged once) and keeps the version it named before,
        if that is still loaded, as TF Serving keeps its previous label map.
        """
        labels, refused = {}, {}
        for label, v in wanted.items():
            if v in loaded:
                labels[label] = v
                self._refusals.pop((name, label), None)
                continue
            why = ("it failed to load" if v in failed else
                   "the model_version_policy does not load it" if v in on_disk else
                   "there is no such version folder")
            previous = old_labels.get(label)
            keep = previous if previous in loaded else None
            if keep is not None:
                labels[label] = keep
            refused[label] = (f"Version label {label!r} of model {name!r} names version {v}, "
                              f"which is not currently available for inference ({why})")
            if self._refusals.get((name, label)) != v:
                self._refusals[(name, label)] = v
                logger.error("%s; refusing the label (it %s) until the version loads.",
                             refused[label], f"still names version {keep}" if keep is not None
                             else "resolves to nothing")
        return labels, refused

    def _poll_period(self) -> float | None:
        """Seconds between rescans: the shorter of the two polls that are on (None: neither is)."""
        periods = [p for p in (self.poll_seconds, self.config_poll_seconds) if p]
        return min(periods) if periods else None

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_period()):
            try:
                self.refresh()
            except Exception:  # keep polling whatever the filesystem does
                logger.exception("rescanning %s failed", self.model_config_file or self.base_path)

    def start_polling(self) -> None:
        if self._poll_period() is None:  # 0: the folders were scanned once, as TF Serving does
            return
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def _still_loading(self, name: str, version: int | None = None) -> None:
        """Refuses a request for the version being loaded now with 503 / UNAVAILABLE (worth retrying),
        where "Servable not found" read as if the export were missing."""
        loading = self._loading
        if loading is not None and loading[0] == name and version in (None, loading[1]):
            raise RequestError(f"Model {shown(name)} version {loading[1]} is still loading; retry in a few "
                               "seconds.", 503, grpc_code="UNAVAILABLE")  # REST adds Retry-After: 1

    def _state(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            self._still_loading(name)
            known = ", ".join(sorted(self._models)) or "none"
            raise RequestError(
                f"Servable not found for request: model {shown(name)} (models served: {known}).",
                404,
            )
        return state

    def resolve(self, name: str, version: int | None = None,
                label: str | None = None) -> Servable:
        """The servable a request names; the latest loaded version by default."""
        state = self._state(name)
        if label is not None:
            # TF Serving answers a label it does not map with InvalidArgument (REST 400, gRPC
            # INVALID_ARGUMENT), not 404 / NOT_FOUND, which clients read as "no such model or
            # version (yet)"; a label naming a version that is not loaded is not mapped there.
            if label not in state.labels and label in state.refused:
                raise RequestError(state.refused[label] + ".", 400)
            if label not in state.labels:
                known = ", ".join(sorted(state.labels)) or "none"
                raise RequestError(
                    f"Unrecognized servable version label: {shown(label)} for model {name!r} "
                    f"(labels: {known}).", 400)
            version = state.labels[label]
        if version is None:
            if not state.versions and not state.failed:  # every version unloaded (listed as END)
                raise RequestError(f"Servable not found for request: model {name!r} has no version left (versions "
                                   f"{', '.join(map(str, sorted(state.ended)))} were unloaded).", 404)
            if not state.versions:
                broken = "; ".join(f"version {v}: {e}" for v, e in sorted(state.failed.items()))
                raise RequestError(
                    f"Model {name!r} has no version that loads ({broken}). Export it again or "
                    "fix the files; the server retries when they change.", 404)
            return state.versions[max(state.versions)]
        servable = state.versions.get(version)
        if servable is None:
            if version in state.failed:
                raise RequestError(
                    f"Model {name!r} version {version} failed to load: "
                    f"{state.failed[version]}", 404)
            self._still_loading(name, version)
            known = ", ".join(str(v) for v in sorted(state.versions)) or "none"
            raise RequestError(
                f"Servable not found for request: model {name!r} version {version} "
                f"(versions served: {known}).", 404)
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """The versions a status request covers (all, newest first, by default).

        A request's version label is not passed: TF Serving's GetModelStatus ignores it,
        and without a version every version is listed (a label's own version is in its
        metadata).
        """
        loading = self._loading
        loading = loading[1] if loading is not None and loading[0] == name else None
        if loading is not None and name not in self._models:  # its first version
            if version in (None, loading):
                return [VersionStatus(loading, loading=True)]
        state = self._state(name)
        if version is not None and version == loading and version not in state.versions:
            return [VersionStatus(version, loading=True)]
        if version is None:
            everything = ({v: VersionStatus(v, ended=True) for v in state.ended}
                          | {v: VersionStatus(v, error) for v, error in state.failed.items()}
                          | ({loading: VersionStatus(loading, loading=True)} if loading is not None else {})
                          | {v: VersionStatus(v) for v in state.versions})
            return [everything[v] for v in sorted(everything, reverse=True)]
        if version in state.failed and version not in state.versions:
            return [VersionStatus(version, state.failed[version])]
        if version in state.ended and version not in state.versions:
            return [VersionStatus(version, ended=True)]
        return [VersionStatus(self.resolve(name, version).version)]
