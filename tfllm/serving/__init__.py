"""Serve exported models the way TF Serving does, and call them from Python."""

from tfllm.serving.client import GrpcClient, RestClient, ServingError
from tfllm.serving.models import list_models, prune
from tfllm.serving.warmup import read_warmup_requests, write_warmup_requests


def serve(*args, **kwargs):
    """Runs the local TF-Serving-compatible server; see `server.serve`."""
    from tfllm.serving.server import serve as _serve

    return _serve(*args, **kwargs)


__all__ = [
    "GrpcClient",
    "RestClient",
    "ServingError",
    "list_models",
    "prune",
    "read_warmup_requests",
    "serve",
    "write_warmup_requests",
]
