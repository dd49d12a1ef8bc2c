"""Serve exported models the way TF Serving does, and call them from Python."""

from tfllm.serving.client import GrpcClient, RestClient, ServingError
from tfllm.serving.limits import Limits
from tfllm.serving.models import format_models, list_models, prune


def serve(*args, **kwargs):
    """Runs the local TF-Serving-compatible server; see `server.serve`."""
    from tfllm.serving.server import serve as _serve

    return _serve(*args, **kwargs)


def __getattr__(name):
    # The warm-up helpers need `tensorflow-serving-api` (the `serving`
    # extra); importing them lazily keeps `import tfllm.serving` light.
    if name in ("read_warmup_requests", "write_warmup_requests"):
        from tfllm.serving import warmup

        return getattr(warmup, name)
    raise AttributeError(f"module 'tfllm.serving' has no attribute {name!r}")


__all__ = [
    "GrpcClient",
    "Limits",
    "RestClient",
    "ServingError",
    "format_models",
    "list_models",
    "prune",
    "read_warmup_requests",
    "serve",
    "write_warmup_requests",
]
