"""The REST server's HTTP connections: how large a request head may be, how long a client may
take to send one, how long an idle connection stays open, and how many are open at once.

uvicorn alone bounds none of this. Its default parser (httptools) takes a request line
and headers of any size (one 64-256 MiB header froze the whole server for minutes,
before the token check), and it starts no timer until a first answer has been sent,
so a connection that sends nothing, or half a head, stays open for ever (19,990 of
them used up the process's file descriptors: predicts failed and the model poller
could not list its folder). Here: httptools with a 64 KiB bound on a request's line and
headers (431, RFC 6585 section 5), a deadline for each head (408, RFC 9110 section
15.5.9), uvicorn's keep-alive timeout for idle connections, and a cap on open
connections (503). A body's deadline is the app's (`rest.py`), and so is the byte budget
shared by the large bodies being received (`BodyBudget`).
"""

from __future__ import annotations

import asyncio
import collections
import json
from dataclasses import dataclass

# A request's line and headers, at most: tfllm's clients send well under 1 KiB; Apache's
# and nginx's defaults allow 8 KiB per line. A longer head is refused as soon as this much
# of it has arrived, so a huge header costs nothing.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts and the connection cap of the REST server (`tfllm serve --header-timeout ...`),
    and the cap on gRPC calls in flight.

    Attributes:
        header_timeout: seconds a client has to send a request's line and headers, counted
            from the connection's start, or from its first byte after an answer; then 408
            (or, if it sent nothing, the connection is closed).
        body_timeout: seconds a client has to send a whole `:predict` body once its headers
            have arrived; then 408 (the app's deadline, `rest.py`, which reads the body).
        idle_timeout: seconds a kept-alive connection may wait, idle, after an answer
            (uvicorn's `timeout_keep_alive`).
        max_connections: REST connections open at once; one more is answered 503 and closed
            at once, so idle or stalled clients cannot use up the process's file descriptors.
        max_concurrent_rpcs: gRPC calls in flight at once, running or queued for a worker
            thread (grpcio's `maximum_concurrent_rpcs`); one more is refused at once with
            RESOURCE_EXHAUSTED. None: `max_connections`, so both protocols admit as many
            requests at a time (gRPC multiplexes calls over a few connections, so its
            connections are no bound).
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 5.0
    max_connections: int = 500
    max_concurrent_rpcs: int | None = None

    def __post_init__(self):
        if self.max_concurrent_rpcs is None:
            object.__setattr__(self, "max_concurrent_rpcs", self.max_connections)
        for name in ("header_timeout", "body_timeout", "idle_timeout", "max_connections",
                     "max_concurrent_rpcs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value!r}.")


def raw_reply(status: int, reason: str, message: str) -> bytes:
    """A whole JSON error answer that closes the connection, written below the app (no ASGI)."""
    body = json.dumps({"error": message}).encode()
    retry = "retry-after: 1\r\n" if status == 503 else ""  # a refusal for load: worth retrying soon
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{retry}"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def protocol_class(limits: ConnectionLimits):
    """uvicorn's httptools protocol with the head bound and deadline, the connection cap and
    JSON refusals. Used with `uvicorn.Config(http=..., timeout_keep_alive=limits.idle_timeout)`.

    httptools (llhttp, in C) parses a request in about half the time of h11 (pure Python),
    but keeps no bound of its own on a head, so the bytes of a head are counted here as
    they are fed to it.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_timer = None
        _in_head = True  # the parser expects (the rest of) a request's line and headers
        _head_bytes = 0  # of them received so far

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self.connections.discard(self)
                transport.write(raw_reply(
                    503, "Service Unavailable",
                    f"The server has {limits.max_connections} connections open, its limit "
                    "(tfllm serve --max-connections); try again shortly."))
                transport.close()
                return
            self._start_head_timer()  # even if nothing is ever sent

        def data_received(self, data):
            if self._in_head and self._head_bytes + len(data) > MAX_HEAD_BYTES:
                # Feed only what the bound leaves; if that ends the head, the rest is body.
                room = MAX_HEAD_BYTES - self._head_bytes
                self._feed(data[:room])
                if self._in_head:
                    if not self.transport.is_closing():
                        self.transport.write(raw_reply(
                            431, "Request Header Fields Too Large",
                            f"The request's line and headers are over {MAX_HEAD_BYTES} bytes."))
                        self.transport.close()
                    return
                data = data[room:]
            elif self._in_head:
                self._head_bytes += len(data)
            self._feed(data)

        def _feed(self, data):
            if not data or self.transport.is_closing():
                return
            super().data_received(data)
            # Bytes of a new request after an answer: its head has header_timeout to
            # complete (uvicorn's keep-alive timer stops at the first byte).
            if self._head_timer is None and self._waiting_for_head():
                self._start_head_timer()

        def on_headers_complete(self):
            self._in_head, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self):
            # A pipelined request's head may follow in the same read; it is counted from
            # the next read, so a head is bounded by MAX_HEAD_BYTES plus one read.
            self._in_head = True
            super().on_message_complete()

        def on_response_complete(self):
            self._stop_head_timer()
            super().on_response_complete()

        def connection_lost(self, exc):
            self._stop_head_timer()
            super().connection_lost(exc)

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _start_head_timer(self):
            self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout,
                                                    self.cycle)

        def _stop_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self, cycle):
            self._head_timer = None
            # A request whose head arrived since has its own cycle.
            if self.cycle is not cycle or not self._waiting_for_head() or self.transport.is_closing():
                return
            if self._in_head and self._head_bytes:  # half a head: say why, as RFC 9110's 408 does
                self.transport.write(raw_reply(
                    408, "Request Timeout",
                    f"The request's line and headers did not arrive within {limits.header_timeout:g} s "
                    "(tfllm serve --header-timeout)."))
            self.transport.close()

        def send_400_response(self, msg: str):
            # uvicorn's plain-text refusal of what httptools cannot parse, as JSON like every
            # other answer.
            self.transport.write(raw_reply(400, "Bad Request", "Malformed HTTP request."))
            self.transport.close()

    return BoundedHttpToolsProtocol


class BodyBudget:
    """Bytes of REST bodies being held, shared by every request (`Limits.max_pending_body_bytes`).

    A body is held whole from its first byte until it is parsed, so without this the bodies
    being received at once were bounded only by `--max-connections` x `--max-body-bytes`
    (500 x 16 MiB, ~8 GiB, for any local client). Takers wait first come first served, so a
    large body is not passed for ever by smaller ones; all of it runs on the event loop's
    thread (no lock). Use one `hold()` per request: it gives back what it took when closed.
    """

    def __init__(self, capacity: int):
        self.capacity = self.free = capacity
        self._waiters: collections.deque = collections.deque()  # (bytes, future), oldest first

    def take_now(self, n: int, jump: bool = False) -> bool:
        """Takes `n` bytes if they are free and no one waits for bytes; with `jump`, even if
        some do (only for a body that already holds bytes: its growth is bounded by
        `--max-body-bytes` and its deadline, and waiting while holding could deadlock)."""
        if n > self.free or (self._waiters and not jump):
            return False
        self.free -= n
        return True

    async def wait(self, n: int) -> None:
        """Takes `n` bytes once they are free and every earlier waiter has its own; a cancelled
        wait (a deadline) takes nothing."""
        entry = (n, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except BaseException:
            if entry[1].done() and not entry[1].cancelled():
                self.give(n)  # granted just as the wait was cancelled
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._wake()  # the first in line leaving may let the next one in
            raise

    def give(self, n: int) -> None:
        self.free += n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.free:
            n, waiter = self._waiters.popleft()
            if not waiter.done():  # else cancelled, not yet removed by its taker
                self.free -= n
                waiter.set_result(None)

    def hold(self) -> BodyHold:
        return BodyHold(self)


class BodyHold:
    """One request's share of a `BodyBudget`; `release()` (also on leaving a `with`) gives it all back."""

    def __init__(self, budget: BodyBudget):
        self.budget, self.held = budget, 0

    def take_now(self, n: int, jump: bool = False) -> bool:
        taken = self.budget.take_now(n, jump)
        self.held += n if taken else 0
        return taken

    async def wait(self, n: int) -> None:
        await self.budget.wait(n)
        self.held += n

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget.give(held)

    def __enter__(self) -> BodyHold:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# A generator's decoding loop is one XLA op that holds an inter-op thread for the whole generation
# (compile and run): with TensorFlow's choice (one per core), a few long generations left every other
# model's request waiting for one to end (a classifier waited 28 s on 2 cores). Idle threads cost
# nothing; 64 is more than the model calls that run at once (anyio's 40 REST worker threads and 16
# gRPC workers). benchmarks/bench_serving_stall.py, results/serving_stall.json.
DEFAULT_INTER_OP_THREADS = 64
