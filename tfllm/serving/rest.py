"""TF Serving's REST API (`/v1/models/...`) as a Starlette (ASGI) app.

Every answer is JSON; every refusal is TF Serving's `{"error": "..."}` with a
4xx status (a 500 only for a fault of the server or the model itself, logged
on one line). A body is read whole first, within a deadline, and large ones hold a
share of a byte budget (`Limits.max_pending_body_bytes`) from before their first
byte is read until they are parsed; they are then decoded a few at a time
(`Limits.max_concurrent_decodes`), and small ones never queue behind them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import zlib

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from tfllm.serving.codec import json_to_tensors, outputs_to_json
from tfllm.serving.connections import MAX_HEAD_BYTES, BodyBudget, BodyHold, ConnectionLimits
from tfllm.serving.jsonio import dumps as _dumps, loads_request as _loads
from tfllm.serving.limits import Limits, RequestError, bad_version, cut, shown
from tfllm.serving.registry import ModelRegistry, VersionStatus
from tfllm.serving.servable import Servable, Signature
from tfllm.serving.security import AccessPolicy

logger = logging.getLogger("tfllm.serving")

# A REST request whose body is at most INLINE_MAX_BODY_BYTES, for a signature whose
# recent calls took under INLINE_MAX_SECONDS, runs on the event loop instead of a
# worker thread when it is the only request in the server: the hop to a thread
# and back costs ~0.1 ms, a quarter of a one-string classification. Under
# concurrent load, and for generation and big batches, requests go to threads,
# where TensorFlow (which releases the GIL) runs them on every core: inlining
# everything cut 16-client throughput by a third on 2 cores.
INLINE_MAX_BODY_BYTES = 4096
INLINE_MAX_SECONDS = 0.002

# TF Serving's path patterns are case-insensitive ("(?i)/v1/models/..."): its literal words and verbs
# in any case, the model name and label as written. `_AccessCheck` does "/v1/models".
_PATH = re.compile(
    r"^(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<meta>/metadata)?"
    r"(?::(?P<verb>[A-Za-z]+))?$", re.IGNORECASE
)


def _malformed(request: Request) -> RequestError:
    # TF Serving answers 400 with these words for any /v1/ path or method it has no
    # handler for (404 is kept for a model or version that does not exist).
    return RequestError(
        f"Malformed request: {cut(request.method)} {cut(request.url.path)}; the paths are GET "
        "/v1/models/NAME[/versions/V|/labels/L][/metadata] and POST "
        "/v1/models/NAME[/versions/V|/labels/L]:predict.", 400)


# Every method reaches the /v1/ handlers, so a wrong one is TF Serving's 400, not a 405: all of
# RFC 9110's (section 9) and PATCH (RFC 5789).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]


def _parse_path(request: Request):
    m = _PATH.match(request.path_params["path"])
    if not m:
        raise _malformed(request)
    version = m["version"]
    if version is not None:
        if not (version.isascii() and version.isdigit()) or len(version) > 19 or int(version) >= 2**63:  # not '²'
            raise bad_version(version)
        version = int(version)
    return m["name"], version, m["label"], m["meta"] is not None, m["verb"] and m["verb"].lower()


def status_json(statuses: list[VersionStatus]) -> dict:
    """TF Serving's model status: LOADING, AVAILABLE, or END (with the load error when it failed)."""
    return {"model_version_status": [
        {"version": str(s.version), "state": s.state,
         "status": {"error_code": "OK" if s.error is None else "UNKNOWN",
                    "error_message": s.error or ""}}
        for s in statuses
    ]}


def _json_reply(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(_dumps(obj), status_code=status, media_type="application/json",
                    headers=headers)


class _AccessCheck:
    """ASGI middleware: the Host name and the bearer token, before any routing."""

    def __init__(self, app, policy: AccessPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            # Only plain chunked framing: "gzip, chunked" was read as chunked with the gzip coding
            # ignored, so a proxy that reads such a request differently could smuggle one past us.
            codings = b",".join(v for k, v in scope.get("headers") or () if k == b"transfer-encoding")
            if codings and codings.strip().lower() != b"chunked":
                await _json_reply({"error": f"Transfer-Encoding {shown(codings.decode('latin-1'))} is not "
                                   "supported; send a Content-Length or plain chunked."},
                                  501, {"Connection": "close"})(scope, receive, send)
                return
            # A head still incomplete after MAX_HEAD_BYTES is refused as it arrives
            # (connections.py), but one that ended within a read gets here: bound it exactly.
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
                    len(k) + len(v) for k, v in scope.get("headers") or ()) > MAX_HEAD_BYTES:
                await _json_reply({"error": f"The request's line and headers are over {MAX_HEAD_BYTES} "
                                   "bytes."}, 431)(scope, receive, send)
                return
            path = scope.get("path", "")
            if path[:11].lower() in ("/v1/models/", "/v1/models") and not path.startswith("/v1/models"):
                scope = {**scope, "path": "/v1/models" + path[10:]}  # TF Serving's "(?i)"
            headers = dict(scope.get("headers") or ())
            host = headers.get(b"host")
            host = host.decode("latin-1") if host is not None else None
            if scope.get("method") in ("GET", "HEAD") and _is_page(scope.get("path", "")):
                # The try-it page's static files hold no data and a browser cannot send a bearer
                # token when it navigates; the API calls it makes still need the token. The Host
                # check (DNS rebinding) applies to the page as to everything else.
                refusal = None if self.policy.host_allowed(host) else self.policy.refusal(host, None)
            else:
                # A browser's cross-site POST (CSRF) is refused by its Origin: see security.py.
                origin = headers.get(b"origin") if scope.get("method") not in ("GET", "HEAD") else None
                refusal = self.policy.refusal(host, headers.get(b"authorization"), origin)
            if refusal is not None:
                status, message = refusal
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                await _json_reply({"error": message}, status, extra)(scope, receive, send)
                return
        await self.app(scope, receive, send)


STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
               "style.css": "text/css; charset=utf-8"}
# The page runs only its own script and talks only to this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static_name(path: str) -> str | None:
    """The page file a GET path names: index.html at `/` only (its URLs, `static/app.js`, are
    relative to `/`: served as /static/index.html it loaded without its script and style)."""
    if path == "/":
        return "index.html"
    name = path[len("/static/"):] if path.startswith("/static/") else None
    return name if name in _PAGE_FILES and name != "index.html" else None


def _is_page(path: str) -> bool:
    return _static_name(path) is not None


def model_list(registry: ModelRegistry) -> dict:
    """`GET /v1/models` (tfllm's addition; TF Serving has no listing): each model's served version and
    its signatures' inputs (dtype, shape) and outputs, or why no version loads."""
    out = []
    for name in registry.model_names():
        try:
            servable = registry.resolve(name)
        except RequestError as e:
            out.append({"name": name, "error": e.message})
            continue
        out.append({"name": name, "version": str(servable.version), "signatures": {
            key: {"inputs": {k: {"dtype": spec.dtype.name,
                                 "shape": None if spec.shape.rank is None else spec.shape.as_list()}
                             for k, spec in sorted(sig.inputs.items())},
                  "outputs": list(sig.outputs)}
            for key, sig in sorted(servable.signatures.items())}})
    return {"models": out}


def make_app(registry: ModelRegistry, limits: Limits | None = None,
             policy: AccessPolicy | None = None,
             body_timeout: float = ConnectionLimits().body_timeout):
    """The ASGI app for TF Serving's `/v1/models/...` REST paths.

    Plain Starlette rather than FastAPI on top of it: the two routes take raw
    bodies, so FastAPI's request validation would only add per-request work
    (0.05-0.08 ms of a ~1 ms request, measured with a bare app).

    Args:
        registry: the loaded models.
        limits: per-request limits (defaults: `Limits()`).
        policy: token and Host checks (defaults: none, loopback names).
        body_timeout: seconds a `:predict` body has to arrive once its headers have
            (`tfllm serve --body-timeout`); then 408.
    """
    limits = limits or Limits()
    active = 0  # predict requests in progress (all on the event loop's thread: no lock)
    decode_slots = asyncio.Semaphore(limits.max_concurrent_decodes)
    budget = BodyBudget(limits.max_pending_body_bytes)

    async def request_error(request, e: RequestError):
        # 408 / 413 / 503 leave the rest of a body unread, which must not be parsed as a next request.
        headers = dict(e.headers or {})
        if e.status in (408, 413, 503):
            headers["Connection"] = "close"
        if e.status == 503:  # a refusal for load (--max-pending-body-bytes): worth retrying soon
            headers.setdefault("Retry-After", "1")
        return _json_reply({"error": e.message}, e.status, headers or None)

    async def http_error(request, e: HTTPException):
        return _json_reply({"error": f"{e.detail}: {cut(request.method)} {cut(request.url.path)}"},
                           e.status_code)

    def guarded(handler):
        async def wrapper(request: Request):
            try:
                return await handler(request)
            except (RequestError, HTTPException):
                raise
            except ClientDisconnect:  # the client left mid-upload: no fault, no one to answer
                return Response(status_code=400)
            except Exception as e:  # noqa: BLE001 - a fault of ours: one log line, JSON 500
                logger.error("%s %s failed: %s: %s", request.method, request.url.path[:200],
                             type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
                return _json_reply({"error": f"Internal error ({type(e).__name__}); the server "
                                    "log has the details."}, 500)
        return wrapper

    async def model_path(request: Request):
        if request.method in ("GET", "HEAD"):  # HEAD: GET's status and headers (the server drops the body)
            return await get(request)
        if request.method == "POST":
            return await post(request)
        raise _malformed(request)

    async def malformed(request: Request):
        raise _malformed(request)

    @guarded
    async def get(request: Request):
        name, version, label, meta, verb = _parse_path(request)
        if verb:
            raise _malformed(request)
        if meta:
            servable = registry.resolve(name, version, label)
            return _json_reply({
                "model_spec": {"name": name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": servable.metadata_json},
            })
        return _json_reply(status_json(registry.statuses(name, version)))

    def over_budget(size: int) -> RequestError:
        return RequestError(
            f"The server is holding {budget.capacity - budget.free} bytes of request bodies; "
            f"{size} more would go over its {budget.capacity}-byte limit (tfllm serve "
            "--max-pending-body-bytes); try again later.", 503,
            headers={"Retry-After": str(math.ceil(body_timeout))})

    async def read_body(request: Request, hold: BodyHold) -> bytearray:
        """The whole body, its bytes over `small_body_bytes` taken from `budget` into `hold`
        (the caller releases them): a declared Content-Length before a byte is read, a
        chunked body's as they come.

        A body that finds the budget spent waits for its share, up to `body_timeout`, and then
        has `body_timeout` to arrive. Waiting is back-pressure: the bytes not read stay in the
        client's socket (uvicorn stops reading a connection 64 KiB ahead of the app), as
        gRPC's ResourceQuota and HTTP/2 flow control bound memory, so a burst of large
        requests is answered in turn instead of failing. A wait that runs out is 503 with
        Retry-After (RFC 9110 section 15.6.4: a temporary overload), Envoy's answer when its
        overload manager finds memory short; not 408, as the server, not the client, was slow.
        Retry-After is the deadline, by which every body held now is parsed or cut off."""
        max_body, small = limits.max_body_bytes, limits.small_body_bytes
        length = request.headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > max_body:
            raise RequestError(
                f"Request body of {length} bytes is over the {max_body}-byte limit "
                "(tfllm serve --max-body-bytes); send fewer instances per request.", 413)
        body = bytearray()  # one growing buffer: no second copy from joining chunks
        waiting = 0

        async def take(n: int, deadline) -> None:
            nonlocal waiting
            if not hold.take_now(n):
                waiting = n
                await hold.wait(n)
                waiting = 0
                deadline.reschedule(asyncio.get_running_loop().time() + body_timeout)

        try:
            async with asyncio.timeout(body_timeout) as deadline:  # the whole body, not each read
                if declared is not None and declared > small:
                    await take(declared, deadline)
                async for chunk in request.stream():
                    size = len(body) + len(chunk)
                    if size > max_body:
                        raise RequestError(
                            f"Request body is over the {max_body}-byte limit (tfllm serve "
                            "--max-body-bytes); send fewer instances per request.", 413)
                    need = size - small - hold.held if declared is None else 0
                    if need > 0 and not hold.held:
                        await take(need, deadline)
                    elif need > 0 and not hold.take_now(need, jump=True):
                        raise over_budget(need)  # no waiting while holding: it could deadlock
                    body += chunk
        except TimeoutError:
            came = len(body)
            body.clear()  # as below
            if waiting:
                raise over_budget(waiting) from None
            # RFC 9110 section 15.5.9: "the server did not receive a complete request message
            # within the time that it was prepared to wait".
            raise RequestError(
                f"The request body did not arrive within {body_timeout:g} s ({came} bytes "
                "came; tfllm serve --body-timeout).", 408) from None
        except BaseException:
            body.clear()  # its memory goes with its share of the budget (a traceback keeps this frame)
            raise
        return body

    def uncompressed(request: Request, raw: bytearray) -> bytearray:
        """The body, gunzipped when `Content-Encoding: gzip` says so, as TF Serving's HTTP server
        does by default (its `auto_uncompress_input`), within --max-body-bytes uncompressed."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return raw
        if encoding not in ("gzip", "x-gzip"):
            raise RequestError(f"Content-Encoding {shown(encoding)} is not supported; send the body as it "
                               "is or gzipped.", 415)
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip's header and trailer
        try:
            body = inflate.decompress(bytes(raw), limits.max_body_bytes + 1)
        except zlib.error as e:
            raise RequestError(f"The body is not gzip data, as its Content-Encoding says ({e}).") from e
        if len(body) > limits.max_body_bytes or inflate.unconsumed_tail:
            raise RequestError(f"The gunzipped request body is over the {limits.max_body_bytes}-byte limit "
                               "(tfllm serve --max-body-bytes); send fewer instances per request.", 413)
        if not inflate.eof:
            raise RequestError("The gzipped body is cut short; send all of it.")
        return bytearray(body)

    def parse_predict(servable: Servable, raw: bytes) -> tuple[Signature, dict, bool]:
        try:
            body = _loads(raw)
        except ValueError as e:
            try:  # orjson's words for other bytes ("surrogates not allowed") do not say what is wrong
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as bad:
                raise RequestError(f"The request body is not UTF-8 ({bad.reason} at byte {bad.start}); send "
                                   "JSON in UTF-8, and binary values as {\"b64\": ...}.") from e
            raise RequestError(f"Malformed JSON in request body: {str(e)[:300]}") from e
        except RecursionError as e:  # a JSON parser without a depth limit
            raise RequestError("Malformed JSON in request body: nested too deeply.") from e
        if not isinstance(body, dict):
            raise RequestError('The request body must be a JSON object with "instances" '
                               'or "inputs".')
        signature_name = body.get("signature_name")
        if signature_name is not None and not isinstance(signature_name, str):
            raise RequestError('"signature_name" must be a string.')
        sig = servable.signature(signature_name)
        return (sig, *json_to_tensors(body, sig, limits))

    def answer(sig: Signature, kwargs: dict, row_format: bool, request: Request | None = None) -> bytes:
        # On a worker thread: a client that left while this waited for a thread or a decode slot gets no
        # model call (a generation ran on for minutes for no one). A call once started runs to its end.
        if request is not None and anyio.from_thread.run(request.is_disconnected):
            raise ClientDisconnect()
        return _dumps(outputs_to_json(sig.call(kwargs), row_format))

    @guarded
    async def post(request: Request):
        nonlocal active
        name, version, label, meta, verb = _parse_path(request)
        if meta or verb not in ("classify", "regress", "predict"):
            raise _malformed(request)
        if verb != "predict":
            raise registry.resolve(name, version, label).refuse_method(f":{verb}", None)
        servable = registry.resolve(name, version, label)
        # The whole body first (at most max_body_bytes, within body_timeout), then a decode
        # slot only for parsing it: a client that stalls mid-upload holds its connection and
        # its share of the byte budget, never a slot that other large or chunked requests wait
        # for. Its size is what arrived. The share goes back once the body is parsed, or
        # whatever ends the request (a 4xx, a deadline, a client gone): `with` always does.
        with budget.hold() as hold:
            raw = uncompressed(request, await read_body(request, hold))
            active += 1
            try:
                if len(raw) <= limits.small_body_bytes:
                    return Response(await predict(request, servable, raw), media_type="application/json")
                async with decode_slots:  # large bodies: a few parsed at a time (their memory)
                    try:
                        parsed = await run_in_threadpool(parse_predict, servable, raw)
                    finally:  # its memory goes with its share of the budget, also on a 400
                        raw.clear()  # (a traceback would keep the frames that name it)
                        hold.release()
                return Response(await run_in_threadpool(answer, *parsed, request),
                                media_type="application/json")
            finally:
                active -= 1

    async def predict(request: Request, servable: Servable, raw: bytes) -> bytes:
        # Concurrent requests on worker threads overlap; a lone short one runs inline
        # (see INLINE_MAX_SECONDS).
        if len(raw) > INLINE_MAX_BODY_BYTES:
            return await run_in_threadpool(lambda: answer(*parse_predict(servable, raw), request))
        sig, kwargs, row_format = parse_predict(servable, raw)
        if sig.recent_seconds < INLINE_MAX_SECONDS:
            # One turn of the loop lets requests that are already waiting start and
            # count themselves in `active`.
            await asyncio.sleep(0)
            if active == 1:
                return answer(sig, kwargs, row_format)
        return await run_in_threadpool(answer, sig, kwargs, row_format, request)

    async def page(request: Request):
        name = _static_name(request.url.path)
        if name is None:
            raise RequestError(f"Not found: {cut(request.url.path)}", 404)
        return FileResponse(os.path.join(STATIC_DIR, name), media_type=_PAGE_FILES[name], headers=_PAGE_HEADERS)

    @guarded
    async def list_models(request: Request):
        return _json_reply(model_list(registry))

    app = Starlette(
        routes=[Route("/", page, methods=["GET"]),
                Route("/static/{name}", page, methods=["GET"]),
                Route("/v1/models", list_models, methods=["GET"]),
                Route("/v1/models/{path:path}", model_path, methods=_METHODS),
                Route("/v1/{path:path}", malformed, methods=_METHODS)],
        exception_handlers={RequestError: request_error, HTTPException: http_error},
    )
    # "GET /v1" was a 307 to "/v1/" (its Location without the Host's port), which was a 400: one JSON 404 now.
    app.router.redirect_slashes = False
    return _AccessCheck(app, policy or AccessPolicy())
