"""What one request may ask of the server, and the error it gets when it asks too much.

Every limit is checked on what a request *declares* (a `TensorProto`'s
`tensor_shape`, the nesting of a JSON list) before anything of that size is
allocated: a 53-byte gRPC request can declare a `[1048576, 16]` tensor with a
single broadcast value, and expanding it first is what must not happen.
`tfllm serve --max-batch-size ... --max-sequence-length ... --max-elements ...
--max-string-bytes ...` raises them; docs/serving.md explains each.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# `Limits.max_pending_body_bytes` when not given: this many bodies of the largest size.
PENDING_BODIES = 4


def cut(text: str, limit: int = 80) -> str:
    """A client's text (a name, a path, a header) as a message may echo it: at most `limit`
    characters, then "...", with control and other unprintable characters written as JSON
    writes them (\\u0000). A gRPC status travels in trailing metadata, which clients refuse
    over 8 KiB (a 100,000-character model name got RESOURCE_EXHAUSTED, not NOT_FOUND), and a
    60,000-character name was echoed whole; Python's repr wrote a NUL as \\x00, which a JSON
    client reads as four characters."""
    head = text[:limit]
    if not head.isprintable():
        head = "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in head)
    return head + ("..." if len(text) > limit else "")


def shown(text: str, limit: int = 80) -> str:
    """`cut(text)` in quotes, for REST, gRPC and the registry alike."""
    head = cut(text, limit)
    return f"'{head[:-3]}'..." if len(text) > limit else f"'{head}'"


def bad_version(version) -> "RequestError":
    """A version that is not a non-negative integer: REST's /versions/-1 and gRPC's version -5
    (NOT_FOUND there before, as if it might appear) get the same 400 / INVALID_ARGUMENT."""
    text = str(version)
    if text.isascii() and text.isdigit():  # one, beyond TF Serving's int64 versions
        return RequestError(f"Version {shown(text)} is out of range: versions are int64, at most {2**63 - 1}.")
    return RequestError(f"Version {shown(text)} must be a non-negative integer.")


def version_number(version) -> int:
    """A version as the servers take it: an int (not a bool) or its digits ("3", as status answers write it); else
    `bad_version`'s refusal. The clients' int() refused "x" with a bare ValueError and sent 2.7 as version 2."""
    text = str(version)
    if isinstance(version, bool) or not (isinstance(version, str) or hasattr(version, "__index__")) \
            or not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= 2**63:
        raise bad_version(version)
    return int(text)


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code to answer with.

    gRPC answers map it: 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED,
    401 -> UNAUTHENTICATED, 500 -> INTERNAL, anything
    else -> INVALID_ARGUMENT; `grpc_code` (a `grpc.StatusCode` name) overrides
    that where TF Serving's gRPC code differs from its REST one.
    """

    def __init__(self, message: str, status: int = 400, grpc_code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.grpc_code = grpc_code
        self.headers = headers  # extra REST answer headers (Retry-After)


@dataclass(frozen=True)
class Limits:
    """Per-request limits, the same for REST and gRPC.

    Attributes:
        max_batch_size: rows in one request (the first dimension of every
            batched input, or the number of `instances`).
        max_sequence_length: the size of every other dimension (token ids
            per row, for example).
        max_elements: values in one input tensor, all dimensions multiplied.
        max_string_bytes: bytes in one string value (UTF-8). tfllm's models
            read at most a few hundred tokens of a text, so a longer value is
            refused before it reaches the tokenizer.
        max_body_bytes: bytes in one REST body or gRPC message.
        max_concurrent_decodes: REST bodies over `small_body_bytes` parsed
            at the same time (once each has arrived whole); further large
            ones wait their turn, small ones never wait behind them.
        small_body_bytes: see `max_concurrent_decodes`.
        max_pending_body_bytes: bytes of REST bodies over `small_body_bytes` held by the
            server while they arrive and until each is parsed, all requests together
            (`connections.BodyBudget`); default `PENDING_BODIES` x `max_body_bytes`.
    """

    max_batch_size: int = 1024
    max_sequence_length: int = 4096
    max_elements: int = 1 << 20
    max_string_bytes: int = 64 * 1024
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrent_decodes: int = 2
    small_body_bytes: int = 64 * 1024
    max_pending_body_bytes: int | None = None

    def __post_init__(self):
        if self.max_pending_body_bytes is None and isinstance(self.max_body_bytes, int):
            object.__setattr__(self, "max_pending_body_bytes", PENDING_BODIES * self.max_body_bytes)
        for name in ("max_batch_size", "max_sequence_length", "max_elements",
                     "max_string_bytes", "max_body_bytes", "max_concurrent_decodes",
                     "max_pending_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a positive integer, got {value!r}.")
        if self.max_pending_body_bytes < self.max_body_bytes:  # one such body could never arrive
            raise ValueError(
                f"--max-pending-body-bytes ({self.max_pending_body_bytes}) must be at least "
                f"--max-body-bytes ({self.max_body_bytes}).")

    def check_shape(self, name: str, shape, spec_rank: int | None) -> None:
        """Refuses a declared shape over the limits (no allocation happens here).

        Args:
            name: the input's name, for the message.
            shape: the declared dimensions.
            spec_rank: the signature's rank for this input (None: unknown).
        """
        shape = list(shape)
        for d in shape:
            if d < 0:
                raise RequestError(
                    f"Input {name!r} declares a dimension of {d}; dimensions must be >= 0.")
        if spec_rank is not None and len(shape) != spec_rank:
            return  # the signature check names the expected shape
        if shape:
            if shape[0] == 0:
                raise RequestError(f"Input {name!r} is an empty batch; send at least one row.")
            if shape[0] > self.max_batch_size:
                raise RequestError(
                    f"Input {name!r} has a batch of {shape[0]} rows, over the limit of "
                    f"{self.max_batch_size} (tfllm serve --max-batch-size); split the request.")
            for d in shape[1:]:
                if d > self.max_sequence_length:
                    raise RequestError(
                        f"Input {name!r} has a dimension of {d}, over the limit of "
                        f"{self.max_sequence_length} (tfllm serve --max-sequence-length).")
        count = math.prod(shape)
        if count > self.max_elements:
            raise RequestError(
                f"Input {name!r} declares {count} values (shape {shape}), over the limit of "
                f"{self.max_elements} (tfllm serve --max-elements); split the request.")

    def check_string(self, name: str, value: bytes | str, index: int) -> None:
        at_least = ""
        if isinstance(value, str):
            if len(value) * 4 <= self.max_string_bytes:
                return  # at most 4 UTF-8 bytes per character
            if len(value) > self.max_string_bytes:  # no need to encode it to know
                size, at_least = len(value), "at least "
            else:
                size = len(value.encode())
        else:
            size = len(value)
        if size > self.max_string_bytes:
            raise RequestError(
                f"Input {name!r} value {index} is {at_least}{size} bytes, over the limit of "
                f"{self.max_string_bytes} bytes per string; send a shorter one, or raise the limit (tfllm serve "
                "--max-string-bytes).")  # nothing about the model: a classifier reads a text's start, a generator its end
