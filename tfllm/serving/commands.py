"""The `tfllm serve` and `tfllm models` subcommands: their arguments and what they run.

`tfllm.cli` only adds these parsers (`add_parsers`); `python -m
tfllm.serving.server` uses the same `add_serve_arguments`, so the two never
drift. Building a parser imports nothing heavy (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tfllm.errors import UserInputError, require_extra
from tfllm.serving import models as models_lib
from tfllm.serving.connections import DEFAULT_INTER_OP_THREADS, ConnectionLimits
from tfllm.serving.limits import PENDING_BODIES, Limits
from tfllm.serving.security import TOKEN_ENV

_DEFAULTS = Limits()
_CONNECTIONS = ConnectionLimits()


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {number}")
    return number


# tensorflow_model_server flags for what tfllm serve does not do: taken, so that a TF Serving command line
# (serving/docker-compose.yml's) starts, and each named in one warning line (`ignored_flags_warning`).
IGNORED_TF_SERVING_FLAGS = {
    "enable_batching": "tfllm serve runs each request as it comes",
    "batching_parameters_file": "tfllm serve does not batch requests",
    "enable_per_model_batching_parameters": "tfllm serve does not batch requests",
    "rest_api_num_threads": "uvicorn serves REST on one event loop",
    "rest_api_timeout_in_ms": "see --body-timeout and --header-timeout",
    "rest_api_enable_cors_support": "tfllm serve answers no cross-site requests",
    "num_request_iterations_for_warmup": "each warm-up request runs once",
    "monitoring_config_file": "tfllm serve has no Prometheus endpoint",
    "ssl_config_file": "put a TLS proxy in front of tfllm serve",
    "grpc_channel_arguments": "grpcio's defaults are used",
    "grpc_max_threads": "see --max-concurrent-rpcs",
    "num_load_threads": "tfllm serve loads one version at a time",
    "num_unload_threads": "tfllm serve unloads one version at a time",
    "max_num_load_retries": "a version that fails to load is retried when its files change",
    "load_retry_interval_micros": "a version that fails to load is retried when its files change",
    "flush_filesystem_caches": "nothing to flush",
    "saved_model_tags": "tfllm's exports are loaded with the serve tag",
    "xla_cpu_compilation_enabled": "the exports decide their own XLA compilation",
    "enable_signature_method_name_check": "signatures are called by name",
    "enable_grpc_healthcheck_service": "ask GET /v1/models/NAME or gRPC GetModelStatus",
}


def ignored_flags_warning(args) -> str | None:
    """One line naming the TF Serving flags given that tfllm serve takes but does not act on."""
    given = [f"--{flag} ({why})" for flag, why in IGNORED_TF_SERVING_FLAGS.items() if getattr(args, flag, None)]
    if given:
        return "tfllm serve: ignoring TF Serving's " + "; ".join(given) + "."
    return None


def add_thread_arguments(parser) -> None:
    parser.add_argument("--intra-op-threads", "--tensorflow_intra_op_parallelism", type=int, default=None,
                        help="threads per TensorFlow op; 0 = TensorFlow's choice; default 1, fastest for small models")
    parser.add_argument("--inter-op-threads", "--tensorflow_inter_op_parallelism", type=int,
                        default=DEFAULT_INTER_OP_THREADS,
                        help=f"TensorFlow ops run at once (default {DEFAULT_INTER_OP_THREADS}: each generation in "
                             "flight holds one; fewer left other models' requests waiting for generations to "
                             "end); 0 = TensorFlow's choice, one per core")


def add_serve_arguments(p) -> None:
    # The flags of tensorflow_model_server that mean the same here are accepted in its spelling too (the second
    # name of each), so its single-model or models.config command line runs as it is (the batching, monitoring
    # and SSL flags excepted); tests/test_serving_config.py runs one.
    p.description = ("TF Serving's REST and gRPC APIs over exported models. tensorflow_model_server's spellings "
                     "of these flags work too (--rest_api_port, --model_name, --model_base_path, "
                     "--model_config_file, ...); with --rest_api_port, --port is the gRPC port, as there.")
    p.add_argument("model_base_path", nargs="?", default=None,
                   help="folder of NAME/VERSION/ exports, all served (default savedmodels); with --model-name, "
                   "the one model's folder of VERSION/ exports; with --model-config-file, the folder its "
                   "relative base_paths are under (default: the working directory)")
    p.add_argument("--model_base_path", "--model-base-path", dest="model_base_path_flag", default=None,
                   metavar="MODEL_BASE_PATH",
                   help="TF Serving's spelling of the positional MODEL_BASE_PATH, with its naming: one model's "
                   "folder of VERSION/ exports is served as 'default' (TF Serving's --model_name default), "
                   "where the positional folder is served by its own name")
    p.add_argument("--model-name", "--model_name", default=None,
                   help="serve MODEL_BASE_PATH, a folder of VERSION/ exports, as this one model, its newest "
                   "version (TF Serving's single-model mode)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=_port, default=None,
                   help="REST port (default 8501); the gRPC port when --rest_api_port is given, as in TF Serving")
    p.add_argument("--rest_api_port", "--rest-api-port", type=_port, default=None, help="REST port (TF Serving's flag)")
    p.add_argument("--grpc-port", type=_port, default=None, help="gRPC port (default 8500); 0 turns gRPC off")
    p.add_argument("--poll-seconds", "--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="how often to look for new versions; 0: once, at start-up (as TF Serving)")
    p.add_argument("--model-config-file", "--model_config_file", default=None,
                   help="TF Serving models.config: serve exactly its models, each by name from its base_path, "
                   "with its version policies and labels; re-read when it changes (default: "
                   "MODEL_BASE_PATH/models.config if present)")
    p.add_argument("--model-config-poll-seconds", "--model_config_file_poll_wait_seconds", type=float, default=None,
                   help="how often to re-read the models.config; 0: never after start-up (TF Serving's "
                   "default); default: at every --poll-seconds, when it changed")
    # What tfllm serve always does: let a label name a version that has not loaded yet (docs/serving.md,
    # "Labels"), and replay a version's warm-up requests before serving it.
    for flag in ("allow_version_labels_for_unavailable_models", "enable_model_warmup"):
        p.add_argument(f"--{flag}", nargs="?", const="true", default=None, help=argparse.SUPPRESS)
    for flag in IGNORED_TF_SERVING_FLAGS:
        p.add_argument(f"--{flag}", nargs="?", const="true", default=None, help=argparse.SUPPRESS)
    add_thread_arguments(p)
    limits = p.add_argument_group("request limits (a request over one gets a 4xx / INVALID_ARGUMENT naming it)")
    limits.add_argument("--max-batch-size", type=_positive_int, default=_DEFAULTS.max_batch_size,
                        help=f"rows per request (default {_DEFAULTS.max_batch_size})")
    limits.add_argument("--max-sequence-length", type=_positive_int, default=_DEFAULTS.max_sequence_length,
                        help=f"size of every non-batch dimension, e.g. token ids per row (default {_DEFAULTS.max_sequence_length})")
    limits.add_argument("--max-elements", type=_positive_int, default=_DEFAULTS.max_elements,
                        help=f"values per input tensor (default {_DEFAULTS.max_elements})")
    limits.add_argument("--max-string-bytes", type=_positive_int, default=_DEFAULTS.max_string_bytes,
                        help=f"bytes per string value (default {_DEFAULTS.max_string_bytes})")
    limits.add_argument("--max-body-bytes", type=_positive_int, default=_DEFAULTS.max_body_bytes,
                        help=f"bytes per REST body / gRPC message (default {_DEFAULTS.max_body_bytes})")
    limits.add_argument("--max-concurrent-decodes", type=_positive_int, default=_DEFAULTS.max_concurrent_decodes,
                        help="large REST bodies parsed (JSON decoded) at once; it does not cap generations or "
                        f"model calls running at once (default {_DEFAULTS.max_concurrent_decodes})")
    limits.add_argument("--max-pending-body-bytes", type=_positive_int, default=None,
                        help="bytes of REST bodies over 64 KiB held at once, from their first byte until "
                        "parsed, all clients together; more wait their turn within --body-timeout, then "
                        f"503 (default {PENDING_BODIES} x --max-body-bytes: {_DEFAULTS.max_pending_body_bytes})")
    conns = p.add_argument_group("connections (a slow or idle client is cut off, so it cannot hold the server)")
    conns.add_argument("--header-timeout", type=_seconds, default=_CONNECTIONS.header_timeout, metavar="SECONDS",
                       help="time to send a request's line and headers, else 408 and the connection is "
                       f"closed (default {_CONNECTIONS.header_timeout:g})")
    conns.add_argument("--body-timeout", type=_seconds, default=_CONNECTIONS.body_timeout, metavar="SECONDS",
                       help="time to send a whole :predict body once its headers have arrived, else 408 "
                       f"(default {_CONNECTIONS.body_timeout:g})")
    conns.add_argument("--idle-timeout", type=_seconds, default=_CONNECTIONS.idle_timeout, metavar="SECONDS",
                       help=f"an idle kept-alive connection is closed after this (default {_CONNECTIONS.idle_timeout:g})")
    conns.add_argument("--max-connections", type=_positive_int, default=_CONNECTIONS.max_connections,
                       help="REST connections open at once; more are answered 503 and closed "
                       f"(default {_CONNECTIONS.max_connections})")
    conns.add_argument("--max-concurrent-rpcs", type=_positive_int, default=None,
                       help="gRPC calls in flight at once, running or queued; more are refused at once "
                       "with RESOURCE_EXHAUSTED (default: --max-connections)")
    conns.add_argument("--shutdown-grace-seconds", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM or Ctrl-C, REST and gRPC refuse new requests at once and those in "
                       "flight have this long to finish; a second signal stops at once (default 30, "
                       "Kubernetes' default terminationGracePeriodSeconds)")
    # The help says what docs/serving.md's threat model says: a pip install has no docs/ folder.
    access = p.add_argument_group(
        "access", "By default every client that reaches the address may call every model, and replace the "
        "model set over gRPC: on a shared machine, set a token. A request naming another site in Host or "
        "Origin (a web page's) is refused.")
    access.add_argument("--auth-token", default=None,
                        help=f"require 'Authorization: Bearer TOKEN' (REST) / 'authorization' metadata (gRPC); "
                        f"prefer the {TOKEN_ENV} environment variable, which other users cannot read in ps")
    access.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a Host name to answer besides the bound address (repeatable; '*' = any)")


def serve_ports(args) -> tuple[tuple[int, int], tuple[str, str]]:
    """The (REST, gRPC) ports and the flags that gave them: `--port` and `--grpc-port`, or TF Serving's
    `--rest_api_port` and `--port`."""
    if args.rest_api_port is None:
        return ((8501 if args.port is None else args.port), (8500 if args.grpc_port is None else args.grpc_port)), \
            ("--port", "--grpc-port")
    if args.rest_api_port == 0:
        raise UserInputError("--rest_api_port 0 turns REST off in TF Serving; tfllm serve always serves REST: "
                             "give it a port (TF Serving's default is 8501).")
    if args.port is not None and args.grpc_port is not None:
        raise UserInputError(f"With --rest_api_port, --port is the gRPC port (TF Serving's meaning), and so is "
                             f"--grpc-port: give one of them (--port {args.port} or --grpc-port {args.grpc_port}).")
    grpc_port, grpc_flag = (args.port, "--port") if args.port is not None else (args.grpc_port, "--grpc-port")
    return (args.rest_api_port, 8500 if grpc_port is None else grpc_port), ("--rest_api_port", grpc_flag)


def model_base_path(args) -> str | None:
    """The served folder, given as the positional argument or as TF Serving's `--model_base_path`."""
    if args.model_base_path and args.model_base_path_flag and \
            os.path.abspath(args.model_base_path) != os.path.abspath(args.model_base_path_flag):
        raise UserInputError(f"Two model folders: {args.model_base_path!r} and --model_base_path "
                             f"{args.model_base_path_flag!r}; give one.")
    return args.model_base_path or args.model_base_path_flag


def versions_folder(folder: str) -> bool:
    """Whether `folder` holds VERSION/ exports itself and no NAME/VERSION/ ones."""
    return bool(models_lib.scan_model(folder)) and not models_lib.scan(folder)


def run_serve(args) -> None:
    require_extra("tfllm serve", "serving", "starlette", "uvicorn", "grpc", "tensorflow_serving")
    from tfllm.serving.server import serve

    try:
        limits = Limits(max_batch_size=args.max_batch_size, max_sequence_length=args.max_sequence_length,
                        max_elements=args.max_elements, max_string_bytes=args.max_string_bytes,
                        max_body_bytes=args.max_body_bytes, max_concurrent_decodes=args.max_concurrent_decodes,
                        max_pending_body_bytes=args.max_pending_body_bytes)
        connections = ConnectionLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                                       idle_timeout=args.idle_timeout,
                                       max_connections=args.max_connections,
                                       max_concurrent_rpcs=args.max_concurrent_rpcs)
    except ValueError as e:
        raise UserInputError(str(e)) from e
    token = args.auth_token if args.auth_token is not None else os.environ.get(TOKEN_ENV) or None
    (rest_port, grpc_port), port_flags = serve_ports(args)
    warning = ignored_flags_warning(args)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    folder, model_name = model_base_path(args), args.model_name
    if model_name is None and args.model_config_file is None and folder and versions_folder(folder):
        # One model's VERSION/ folders, not NAME/VERSION/ ones: TF Serving serves --model_base_path alone
        # as the model "default" (its --model_name default); the positional folder keeps its own name.
        model_name = "default" if args.model_base_path_flag else os.path.basename(os.path.abspath(folder))
    serve(folder, host=args.host, port=rest_port, grpc_port=grpc_port or None, port_flags=port_flags,
          poll_seconds=args.poll_seconds, model_config_file=args.model_config_file, model_name=model_name,
          config_poll_seconds=args.model_config_poll_seconds,
          intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads,
          limits=limits, auth_token=token, allowed_hosts=tuple(args.allowed_host), connections=connections,
          shutdown_grace_seconds=args.shutdown_grace_seconds)


def add_models_arguments(p) -> None:
    p.add_argument("base_dir", nargs="?", default="savedmodels")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--prune", metavar="NAME", default=None, help="delete old versions of this model ...")
    p.add_argument("--keep", type=int, default=None,
                   help="... keeping the newest N (and always the newest one that loads)")


def run_models(args) -> None:
    from tfllm.serving.models import format_models, list_models, prune

    if (args.prune is None) != (args.keep is None):
        raise UserInputError("Pass --prune NAME and --keep N together.")
    if args.prune is not None:
        removed = prune(args.base_dir, args.prune, args.keep)
        print(f"Pruned {args.prune} versions {list(removed)}" if removed else f"Nothing to prune for {args.prune}")
        for line in removed.kept_lines():
            print(line)
    models = list_models(args.base_dir)
    print(json.dumps(models, indent=2) if args.json else format_models(models))


def add_parsers(sub) -> None:
    """Adds `serve` and `models` to an argparse subparsers object (`tfllm.cli`)."""
    p = sub.add_parser("serve", help="serve savedmodels/ with TF Serving's REST and gRPC APIs")
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)

    p = sub.add_parser("models", help="list exported models, versions, signatures and sizes")
    add_models_arguments(p)
    p.set_defaults(func=run_models)
