"""Who may call the server: an optional bearer token, the Host names it answers to and the
pages (by their Origin) it takes requests that run a model from.

Both are off the wire protocol's path when unset: with no token, requests
are TF Serving's exactly. The threat model is in docs/serving.md.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from tfllm.serving.limits import shown

TOKEN_ENV = "TFLLM_AUTH_TOKEN"
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """`Host` header value without its port, lower-case: `[::1]:8501` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        header = header.split(":", 1)[0]
    return header.rstrip(".")


@dataclass(frozen=True)
class AccessPolicy:
    """What a request must carry to be served.

    Args:
        token: the bearer token every request must send (REST: an
            `Authorization: Bearer TOKEN` header; gRPC: `authorization`
            metadata with the same value); None serves everyone.
        bind_host: the address the server listens on.
        allowed_hosts: further `Host` names to answer (a DNS name the server
            is reached by); `*` answers any.

    A browser page can reach a server on 127.0.0.1 by rebinding its own DNS
    name to 127.0.0.1; such requests carry the page's name in `Host`, so the
    server answers only the names it is bound to (and, on a loopback address,
    `localhost`), plus those given. Bound to every interface (0.0.0.0), any IP
    literal is accepted, since the machine's addresses are not known here.
    """

    token: str | None = None
    bind_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self):
        if self.token is not None and (not self.token or self.token != self.token.strip()
                                       or any(ord(c) < 33 or ord(c) > 126 for c in self.token)):
            raise ValueError("The auth token must be printable ASCII without spaces "
                             f"(set with --auth-token or ${TOKEN_ENV}).")

    def _names(self) -> frozenset:
        bind = host_of(self.bind_host) if self.bind_host not in _WILDCARDS else self.bind_host
        names = {bind, *(host_of(h) for h in self.allowed_hosts)}
        if _is_loopback(bind):
            names |= _LOOPBACK_NAMES
        return frozenset(names)

    def host_allowed(self, header: str | None) -> bool:
        if header is None or "*" in self.allowed_hosts:
            return True  # HTTP/1.0 clients send no Host; browsers always do
        host = host_of(header)
        names = self._names()
        if host in names:
            return True
        return self.bind_host in _WILDCARDS and (_is_ip(host) or host == "localhost")

    def token_ok(self, authorization: str | bytes | None) -> bool:
        if self.token is None:
            return True
        if authorization is None:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        # RFC 7235 section 2.1: the scheme is case-insensitive ("bearer", "BEARER"); RFC 6750
        # section 2.1: one or more spaces, then the token.
        scheme, _, credentials = authorization.strip().partition(b" ")
        # The token's comparison is constant time in its content: timing reveals no prefix.
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.lstrip(b" "),
                                                                   self.token.encode())

    def origin_allowed(self, origin: str | bytes | None, host: str | None) -> bool:
        """Whether a request that runs something may come from a page with this `Origin`.

        Any web page can make a browser POST here without asking first (a CORS "simple"
        request: a text/plain or form body); the browser hides the answer, but the model
        runs. Browsers send `Origin` with every POST; TF Serving's clients and tfllm's send
        none, so those are served as before. Allowed: no Origin, the server's own (the
        try-it page: the same host:port as `Host`), and names given with --allowed-host
        (a proxy's, which may rewrite `Host`); `*` allows any.
        """
        if origin is None or "*" in self.allowed_hosts:
            return True
        if isinstance(origin, bytes):
            origin = origin.decode("latin-1")
        scheme, sep, netloc = origin.strip().lower().partition("://")
        if not sep or scheme not in ("http", "https") or not netloc:
            return False  # "null": a sandboxed frame, a file:// page
        if host is not None and netloc == host.strip().lower():
            return True
        return host_of(netloc) in {host_of(h) for h in self.allowed_hosts}

    def refusal(self, host: str | None, authorization, origin=None) -> tuple[int, str] | None:
        """`(HTTP status, message)` for a request this policy refuses, else None (`origin`:
        REST's `Origin` header, passed for methods other than GET and HEAD)."""
        if not self.host_allowed(host):
            return 400, (f"Host {shown(host_of(host))} is not one this server answers to; add it "
                         "with tfllm serve --allowed-host NAME (DNS-rebinding protection).")
        if not self.origin_allowed(origin, host):
            origin = origin.decode("latin-1") if isinstance(origin, bytes) else origin
            return 403, (f"Cross-origin request from {shown(origin)} refused: this server takes "
                         "requests other than GET only from its own page, or from a page whose "
                         "name is given with tfllm serve --allowed-host NAME.")
        if not self.token_ok(authorization):
            return 401, ("Missing or wrong bearer token: send 'Authorization: Bearer TOKEN' "
                         "(gRPC: 'authorization' metadata) with the server's token.")
        return None
