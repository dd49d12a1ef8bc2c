"""Process start-up for the local server that speaks TF Serving's REST and gRPC protocols.

It serves every SavedModel under a `savedmodels/NAME/VERSION/` folder, as
`tensorflow_model_server --model_config_file=...` would, so a client written
against TF Serving works unchanged against it. The parts live beside this
module, one job each:

- `registry.py`: loaded models and versions, kept in step with the folder;
- `codec.py`: requests to tensors and outputs to answers, with every check;
- `limits.py`: what one request may declare (`Limits`, `RequestError`);
- `security.py`: the optional bearer token and the Host-name check;
- `rest.py`: the Starlette app; `grpc_service.py`: the grpcio services;
- `commands.py`: the `tfllm serve` / `tfllm models` arguments.

This module binds both ports first (a busy port fails in a fraction of a
second, before any model loads), then loads the models and serves.

Run it with `tfllm serve savedmodels/` or
`python -m tfllm.serving.server savedmodels/ --port 8501 --grpc-port 8500`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time

from tfllm import errors, runs
from tfllm.config import expand_home
from tfllm.errors import UserInputError
from tfllm.export import versioning
from tfllm.serving.connections import DEFAULT_INTER_OP_THREADS, ConnectionLimits, protocol_class
from tfllm.serving.limits import DEFAULT_MAX_BODY_BYTES, Limits, RequestError  # noqa: F401
from tfllm.serving.models import SAVED_MODEL_FILE, TFLITE_FILE, ModelPolicy, read_model_config, scan
from tfllm.serving.registry import ModelRegistry  # noqa: F401  (re-exported)
from tfllm.serving.rest import INLINE_MAX_BODY_BYTES, INLINE_MAX_SECONDS, make_app  # noqa: F401
from tfllm.serving.security import AccessPolicy

logger = logging.getLogger("tfllm.serving")

DEFAULT_INTRA_OP_THREADS = 1
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0  # Kubernetes' default terminationGracePeriodSeconds
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"  # see serve()


def configure_threads(intra_op_threads: int, inter_op_threads: int = 0) -> None:
    """Sets TensorFlow's thread pools; must run before any model is loaded."""
    import tensorflow as tf

    if intra_op_threads < 0 or inter_op_threads < 0:
        raise UserInputError("--intra-op-threads and --inter-op-threads must be >= 0 (0 = TensorFlow's choice).")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:  # TensorFlow already ran something in this process (a notebook)
        logger.warning("TensorFlow is already initialised in this process; thread settings unchanged.")


class _LogFormat(logging.Formatter):
    """A server event as a line of its own; warnings and errors say which they are."""

    def format(self, record):
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def log_to_stderr() -> None:
    """Sends the server's events (versions loaded and unloaded, refusals) to stderr, INFO and up, in its
    own words. Before, they went through whatever the process's root logger was: bare lines until the
    models loaded, then "WARNING:tfllm.serving:loaded ..." once TensorFlow's absl had configured it."""
    if any(isinstance(h.formatter, _LogFormat) for h in logger.handlers):  # a second serve() in one process
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def return_freed_memory() -> None:
    """Large request buffers go back to the OS when freed (glibc only; elsewhere a no-op).

    glibc serves a freed large block's size from its heap next time (its mmap
    threshold rises to up to 32 MB after each free), so after a burst of large
    requests the server kept their memory until restart. A fixed 1 MiB
    threshold keeps every larger buffer in its own mapping, unmapped when freed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def bind_socket(host: str, port: int, protocol: str = "REST", flag: str = "--port") -> socket.socket:
    """Binds a port now, so that a busy one fails before any model loads.

    Raises:
        UserInputError: if the address cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise UserInputError(f"Cannot use --host {host!r}: {e}.") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        # Listening at once: Linux lets a second SO_REUSEADDR socket bind a port whose sockets are bound
        # but not listening, so a second `tfllm serve` took the REST port while the first loaded its
        # models. Requests that arrive meanwhile wait in the backlog and are answered once serving starts.
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as e:
        sock.close()
        raise UserInputError(f"Cannot bind {protocol} to {host}:{port} ({e.strerror or e}); pick "
                             f"another {flag} or stop what is using it.") from e
    sock.set_inheritable(True)
    return sock


class Shutdown:
    """What SIGTERM / SIGINT do, the same for REST and gRPC.

    The first signal stops both protocols taking new work at once and gives the requests in flight
    `grace` seconds; a second signal, or the grace running out, ends the process there and then.
    Before, uvicorn's shutdown ran first, with no time limit, while gRPC kept accepting calls, and
    gRPC's own stop (1 s) only began after it; a second Ctrl-C cancelled REST handlers, which
    answered a plain-text 500 and logged a traceback each, and the process still waited for the
    generations running on worker threads.
    """

    def __init__(self, grace: float, grpc_server=None):
        self.grace = grace
        self.grpc_server = grpc_server
        self.signal: int | None = None
        self.started = 0.0
        self.grpc_done = threading.Event()

    def begin(self, sig: int) -> None:
        self.signal, self.started = sig, time.monotonic()
        logger.info(f"{signal.Signals(sig).name}: shutting down; no new requests, those in flight have up to "
                    f"{self.grace:g} s (--shutdown-grace-seconds) to finish; a second signal stops at once.")
        # grpc's stop takes a lock; off the signal handler's thread, which may be anywhere in the event loop.
        threading.Thread(target=self._stop_grpc, name="grpc-stop", daemon=True).start()
        timer = threading.Timer(self.grace, self._grace_ran_out)
        timer.daemon = True
        timer.start()

    def _stop_grpc(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(self.grace).wait()  # refuses new calls now, cancels the rest after grace
        self.grpc_done.set()

    def _grace_ran_out(self) -> None:
        self.grpc_done.wait(1.0)  # gRPC cancels its calls at the same moment: let them hear why
        self.now(f"the {self.grace:g} s grace ran out")

    def now(self, why: str) -> None:
        """Ends the process at once: connections close and clients see them closed (no 500s, no
        tracebacks), and no wait for the model calls still running on worker threads."""
        logger.warning(f"stopped: {why}; requests still in flight were cut off.")
        for handler in logger.handlers:
            handler.flush()
        os._exit(128 + (self.signal or signal.SIGTERM))

    def finish(self) -> None:
        """After REST's in-flight requests are answered: waits for gRPC's, then logs the end."""
        self.grpc_done.wait()
        logger.info(f"stopped: every request in flight was answered ({time.monotonic() - self.started:.1f} s).")


def log_skipped_tflite(base_path: str) -> None:
    """One line per model under `base_path` with TFLite versions the server leaves out, and why.

    A folder of `tfllm export --format tflite --name NAME` exports (or older exports, which could put TFLite
    versions beside SavedModels), served, was skipped without a word (its model was simply not there)."""
    for name, versions in scan(base_path, files=(TFLITE_FILE,)).items():
        tflite = [v for v, path in sorted(versions.items()) if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))]
        if tflite:
            logger.info("skipped %s version(s) %s, TFLite (%s): this server, as TF Serving, serves SavedModels "
                        "only; run the .tflite file on device, with the TFLite interpreter, or with "
                        "`tfllm generate --tflite FILE` for a generator", name, ", ".join(map(str, tflite)),
                        os.path.join(versions[tflite[-1]], TFLITE_FILE))


def check_servable_folder(folder: str) -> None:
    """Refuses a version folder (`sm/m/1`), a run directory, or a folder of run directories holding no export as
    the folder to serve: each started a server with no model ("Serving none yet"), every request a 404. An empty
    folder is fine: TF Serving waits for versions.

    Raises:
        UserInputError: naming what the folder is and what to pass instead.
    """
    if os.path.isfile(os.path.join(folder, SAVED_MODEL_FILE)):
        parent = os.path.dirname(os.path.normpath(os.path.abspath(folder)))
        raise UserInputError(f"{folder!r} is one version of a model (it holds {SAVED_MODEL_FILE}), not a folder of "
                             f"versions; pass its model's folder, {parent!r}.")
    if os.path.isfile(runs.path(folder, runs.RUN_CONFIG)):  # what every run directory holds from its start
        raise UserInputError(f"{folder!r} is a tfllm run directory, not exported models; export it first "
                             f"(tfllm export {errors.shell_path(folder)} --name NAME) and serve the folder of exports "
                             f"({versioning.DEFAULT_BASE_DIR} by default).")
    # The folder above run directories (`runs/`) held no NAME/VERSION/ either: the log said only "Serving none yet".
    held = [] if scan(folder, files=()) else sorted(
        e for e in os.listdir(folder) if os.path.isfile(runs.path(os.path.join(folder, e), runs.RUN_CONFIG)))
    if held:
        named = ", ".join(repr(e) for e in held[:2]) + (", ..." if len(held) > 2 else "")
        raise UserInputError(f"{folder!r} holds tfllm run directories ({named}), not exported models; export one "
                             f"first (tfllm export {errors.shell_path(os.path.join(folder, held[0]))} --name NAME) and "
                             f"serve the folder of exports ({versioning.DEFAULT_BASE_DIR} by default).")


def _uvicorn_server(config, shutdown: Shutdown):
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if self.should_exit:
                shutdown.now(f"second {signal.Signals(sig).name}")
            # Not recorded in uvicorn's _captured_signals: it re-raises them as soon as REST is done,
            # and a SIGTERM then killed the process before gRPC's calls were finished.
            self.should_exit = True
            shutdown.begin(sig)

    return Server(config)


def serve(model_base_path: str | None = None, host: str = "127.0.0.1", port: int = 8501,
          grpc_port: int | None = 8500, poll_seconds: float = 1.0,
          model_config_file: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
          intra_op_threads: int | None = None, inter_op_threads: int = DEFAULT_INTER_OP_THREADS,
          limits: Limits | None = None, auth_token: str | None = None,
          allowed_hosts: tuple[str, ...] = (), connections: ConnectionLimits | None = None,
          model_name: str | None = None, port_flags: tuple[str, str] = ("--port", "--grpc-port"),
          config_poll_seconds: float | None = None,
          shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS) -> None:
    """Serves every model under `model_base_path`, or a config's models, or one model, until interrupted.

    Args:
        model_base_path: without a model config, the folder laid out as
            `NAME/VERSION/` (SavedModels), every model of which is served
            (default `savedmodels`). With one, the folder its relative
            `base_path`s are under (TF Serving's `model_config_list_root_dir`;
            default: the working directory).
        host: address to bind; loopback unless you mean to expose it.
        port: REST port (TF Serving's default is 8501).
        grpc_port: gRPC port (TF Serving's default is 8500); None or 0
            turns gRPC off.
        poll_seconds: how often to look for new or removed versions; 0: once, at start-up (TF
            Serving's `--file_system_poll_wait_seconds=0`).
        model_config_file: a TF Serving `models.config`: exactly its models
            are served, each under its `name` from its `base_path`, with its
            version policies and labels; re-read when it changes. Defaults to
            `model_base_path/models.config` when that file exists.
        max_body_bytes: larger requests are refused with 413 (used when
            `limits` is not given).
        intra_op_threads: threads one TensorFlow op may use, as TF Serving's
            `--tensorflow_intra_op_parallelism` (0 = TensorFlow's choice). The
            default (None) is 1, which suits tfllm's small models: splitting their tiny ops
            across cores costs more than it saves, and concurrent requests
            still use every core. In-process on 2 cores, 1 vs 0
            (benchmarks/results/serving_threads0.json and the serving.json of
            its time): one string 0.43 vs 0.70 ms, 32 strings 1.22 vs 1.53 ms.
        inter_op_threads: TF Serving's `--tensorflow_inter_op_parallelism`
            (0 = TensorFlow's choice, one per core). Default 64: each generation in flight
            holds one for its whole length, and other models' requests need one free.
        limits: per-request limits (`tfllm.serving.limits.Limits`).
        auth_token: a bearer token every REST and gRPC request must carry;
            None serves everyone (TF Serving's protocol, unchanged).
        allowed_hosts: `Host` names to answer besides the bound address
            (DNS-rebinding protection); `("*",)` answers any.
        connections: REST timeouts and connection cap, and the cap on gRPC calls in flight
            (`tfllm.serving.connections.ConnectionLimits`; defaults when None).
        model_name: TF Serving's single-model mode (`--model_name`): `model_base_path` is one
            model's folder of `VERSION/` exports, served under this name, newest version only.
        port_flags: the command-line flags that gave `port` and `grpc_port`, named when one
            cannot be bound (TF Serving's spellings: `--rest_api_port` and `--port`).
        config_poll_seconds: how often to re-read `model_config_file` (TF Serving's
            `--model_config_file_poll_wait_seconds`); 0: never after start-up; None: at every poll.
        shutdown_grace_seconds: on SIGTERM or SIGINT, how long requests in flight (REST and gRPC)
            have to finish; new ones are refused at once. A second signal stops at once.

    Raises:
        UserInputError: if the folder does not exist or is one version's folder or a run
            directory, a setting is out of range, the model config cannot be read or a port
            cannot be bound.
    """
    import uvicorn

    model_base_path, model_config_file = expand_home(model_base_path), expand_home(model_config_file)  # from Python
    models = None
    if model_name is not None:
        if model_config_file is not None or not model_base_path:
            raise UserInputError("--model-name serves one model from the folder of its versions: give that folder "
                                 "(MODEL_BASE_PATH), and no --model-config-file, which names its own models.")
        if not versioning.is_model_name(model_name):
            raise UserInputError(f"--model-name {model_name!r}: use ASCII letters, digits, '-', '_' or '.' (it is the "
                                 "NAME of /v1/models/NAME).")
        # TF Serving's single-model mode: the model's newest version (its default policy, `latest` 1).
        models = {model_name: ModelPolicy(base_path=os.path.abspath(model_base_path), latest=1)}
    elif model_config_file is None:
        model_base_path = model_base_path or "savedmodels"
        candidate = os.path.join(model_base_path, "models.config")
        model_config_file = candidate if os.path.exists(candidate) else None
    if model_base_path is not None and not os.path.isdir(model_base_path):
        raise UserInputError(
            f"Model folder {model_base_path!r} does not exist; export a model first "
            "(tfllm export RUN_DIR --name NAME) or pass the right folder."
        )
    if model_base_path is not None and model_config_file is None:  # a config's root folder holds no versions itself
        check_servable_folder(model_base_path)
    try:
        limits = limits or Limits(max_body_bytes=max_body_bytes)
        policy = AccessPolicy(auth_token, host, tuple(allowed_hosts))
    except ValueError as e:
        raise UserInputError(str(e)) from e
    if not shutdown_grace_seconds >= 0:
        raise UserInputError(f"--shutdown-grace-seconds must be >= 0, got {shutdown_grace_seconds}.")
    for flag, seconds in (("--poll-seconds", poll_seconds), ("--model-config-poll-seconds", config_poll_seconds)):
        if seconds is not None and not seconds >= 0:  # TF Serving's negative values are for its own tests
            raise UserInputError(f"{flag} must be >= 0 (0: once, at start-up), got {seconds}.")
    if model_config_file is not None:
        # As TF Serving: a config that cannot be read or parsed stops start-up, so a
        # typo in its path never silently turns off version policies and labels.
        # (Later edits that do not parse are logged and the previous config kept.)
        read_model_config(model_config_file)
    # grpcio 1.80 moved Python onto its new EventEngine I/O layer; on this loopback
    # it makes a status call slower than the iomgr path it replaced (0.39-0.45 vs
    # 0.33-0.34 ms, benchmarks/results/grpc_io.json). grpc keeps that path behind these
    # experiment flags while it watches the rollout (grpc/grpc#42150); a grpcio that
    # has dropped them logs "Unknown experiment" and runs as before. It must be set
    # before grpc starts; a GRPC_EXPERIMENTS the user set wins.
    os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    return_freed_memory()
    # Both ports before TensorFlow starts and the models load (seconds): a busy port
    # is known at once. The REST socket is kept; the gRPC port is tried here and
    # bound for good by grpcio below.
    rest_socket = bind_socket(host, port, "REST", port_flags[0])
    grpc_server = registry = shutdown = None
    try:
        if grpc_port:
            bind_socket(host, grpc_port, "gRPC", f"{port_flags[1]} (0 turns gRPC off)").close()
        log_to_stderr()
        configure_threads(DEFAULT_INTRA_OP_THREADS if intra_op_threads is None else intra_op_threads,
                          inter_op_threads)
        registry = ModelRegistry(None if models else model_base_path, poll_seconds, model_config_file, models=models,
                                 config_poll_seconds=config_poll_seconds)
        connections = connections or ConnectionLimits()
        if grpc_port:
            from tfllm.serving.grpc_service import make_grpc_server  # imports TensorFlow

            grpc_server = make_grpc_server(registry, f"{host}:{grpc_port}", limits, policy,
                                           max_concurrent_rpcs=connections.max_concurrent_rpcs)
        registry.refresh()
        if models is None and model_config_file is None:
            log_skipped_tflite(model_base_path)
        registry.start_polling()
        if grpc_server is not None:
            grpc_server.start()
        names = ", ".join(registry.model_names()) or "none yet"
        source = f"models.config {model_config_file}" if model_config_file else model_base_path + (
            f" as {model_name!r}" if model_name else "")
        bound = rest_socket.getsockname()[1]  # the port the system chose for --port 0
        print(f"Serving {names} from {source}: REST http://{host}:{bound}/v1/models/"
              + (f", gRPC {host}:{grpc_port}" if grpc_port else "")
              + ("; bearer token required" if auth_token else ""), flush=True)
        # uvicorn's httptools protocol with a bound on a request's head and its deadline
        # (connections.py).
        config = uvicorn.Config(make_app(registry, limits, policy, connections.body_timeout),
                                host=host, port=port,
                                log_level="warning", access_log=False,
                                http=protocol_class(connections),
                                timeout_keep_alive=connections.idle_timeout)
        shutdown = Shutdown(shutdown_grace_seconds, grpc_server)
        _uvicorn_server(config, shutdown).run(sockets=[rest_socket])
        if shutdown.signal is not None:
            shutdown.finish()
    except KeyboardInterrupt as e:  # errors.Terminated too: the `tfllm` command's SIGTERM
        if shutdown is None:  # while the models load (a generator's: ~20 s); the command exited 130 in silence
            name = "SIGTERM" if isinstance(e, errors.Terminated) else "SIGINT"
            logger.warning(f"{name}: stopped during start-up, before serving any request.")
        raise
    finally:
        if registry is not None:
            registry.stop()
        rest_socket.close()
        if grpc_server is not None and (shutdown is None or shutdown.signal is None):
            grpc_server.stop(grace=1)
    if shutdown.signal is not None:  # exit as the signal asks: KeyboardInterrupt (130), or killed by SIGTERM
        signal.raise_signal(shutdown.signal)


def main(argv=None) -> int:
    """`python -m tfllm.serving.server`: the same arguments as `tfllm serve`."""
    import argparse

    from tfllm._env import filter_tensorflow_import_log, skip_keras_extras, utf8_standard_streams
    from tfllm.serving.commands import add_serve_arguments, run_serve

    if argv is None:  # its own process, as the `tfllm` command's (tfllm.cli.main)
        utf8_standard_streams()  # model names and paths in an ASCII locale, as the `tfllm` command's
        skip_keras_extras()  # a second off the server's start-up; see its docstring
        filter_tensorflow_import_log()  # as the `tfllm` command does
    parser = argparse.ArgumentParser(prog="python -m tfllm.serving.server")
    add_serve_arguments(parser)  # and its description
    args = parser.parse_args(argv)
    running, errors.command_running = errors.command_running, True  # its errors name its flags, as tfllm serve's
    try:
        run_serve(args)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        errors.command_running = running
    return 0


if __name__ == "__main__":
    sys.exit(main())
