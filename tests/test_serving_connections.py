"""The REST server's connections against oversized, slow, idle and departing clients, as real processes.

One server with short timeouts and a small connection cap serves the tiny fixture models
over raw sockets: a huge request head is refused at once, a connection that sends nothing
or half a head is closed at the header deadline, an idle one after its answer, one over
the cap is refused, stalled uploads hold no more memory than the body budget, and good
requests keep being answered meanwhile.
"""

import asyncio
import http.client
import http.server
import json
import os
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import serving_process

pytest.importorskip("starlette")

from tfllm.serving import RestClient, ServingError, fixtures  # noqa: E402
from tfllm.serving.connections import BodyBudget  # noqa: E402
from tfllm.serving.limits import Limits  # noqa: E402

HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS = 1.0, 3.0, 1.0, 30
MAX_PENDING = 16 << 20  # --max-pending-body-bytes: two 8 MiB bodies
GET_STATUS = b"GET /v1/models/reviews HTTP/1.1\r\nHost: 127.0.0.1\r\n"
STALLED_UPLOAD = (b"POST /v1/models/reviews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                  b'{"instances": ["')  # and the rest of the body never comes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = fixtures.build_savedmodels(str(tmp_path_factory.mktemp("connections") / "savedmodels"))
    port = free_port()
    log_path = tmp_path_factory.mktemp("connections-log") / "server.log"
    args = [base, "--port", port, "--grpc-port", 0, "--header-timeout", HEADER_TIMEOUT,
            "--body-timeout", BODY_TIMEOUT, "--idle-timeout", IDLE_TIMEOUT,
            "--max-connections", MAX_CONNECTIONS, "--max-pending-body-bytes", MAX_PENDING]
    with serving_process(args, lambda: RestClient("127.0.0.1", port, timeout=2).status("reviews"),
                         log_path) as proc:
        yield {"port": port, "proc": proc, "log_path": log_path}


def connect(server, data=b""):
    s = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
    if data:
        s.sendall(data)
    return s


def read_until_closed(s, timeout=10.0):
    """`(bytes received, whether the server closed the connection)` within `timeout` seconds."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except socket.timeout:
        return data, False
    finally:
        s.close()


def status_and_error(reply: bytes):
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def check_answers(server):
    client = RestClient("127.0.0.1", server["port"], timeout=10)
    assert client.predict("reviews", {"text": ["good", "bad"]})["label"] == ["positive", "negative"]


@pytest.mark.parametrize("where", ["header", "url"])
def test_an_oversized_request_head_is_refused_with_431(server, where):
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=10)
    path, headers = "/v1/models/reviews", {}
    if where == "header":
        headers["X-Big"] = "a" * 66_000
    else:
        path += "?" + "a" * 66_000
    start = time.monotonic()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    assert response.status == 431 and time.monotonic() - start < 2.0
    assert "65536 bytes" in json.loads(response.read())["error"]
    conn.close()
    check_answers(server)


@pytest.mark.parametrize("where", ["header", "url"])
def test_a_huge_request_head_costs_nothing(server, where):
    """httptools took any head: 64-256 MiB froze the server for minutes, before the token check."""
    huge = b"a" * (8 << 20)
    head = (GET_STATUS + b"X-Big: " + huge + b"\r\n\r\n" if where == "header"
            else b"GET /v1/models/" + huge + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    start = time.monotonic()
    s = connect(server)
    try:
        s.sendall(head)
    except OSError:  # the server stopped reading and closed at 64 KiB
        pass
    reply, closed = read_until_closed(s)
    assert closed and time.monotonic() - start < 3.0
    if reply:  # else a reset: the server closed with the rest of the head unread
        assert status_and_error(reply)[0] == 431
    check_answers(server)


def read_replies(s, count, timeout=10.0):
    """`count` whole answers (each with a content-length) read from one kept-alive connection."""
    s.settimeout(timeout)
    data, replies = b"", []
    while len(replies) < count:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(replies)} answers"
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            if len(rest) < length:
                break
            replies.append((int(head.split(b" ", 2)[1]), json.loads(rest[:length])))
            data = rest[length:]
    return replies


def test_heads_are_counted_per_request_not_per_read(server):
    """The head bound counts the bytes fed to the parser: a body larger than the bound arriving in the
    same read as its head, requests pipelined in one write, and a head of just under 64 KiB sent in
    small pieces are all answered; the same head over the bound in small pieces is refused."""
    body = json.dumps({"instances": ["good " * 20] * 800}).encode()  # ~100 KiB
    assert len(body) > 65536
    predict = (b"POST /v1/models/reviews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s = connect(server, predict + GET_STATUS + b"\r\n" + predict)
    replies = read_replies(s, 3)
    s.close()
    assert [status for status, _ in replies] == [200, 200, 200]
    assert len(replies[0][1]["predictions"]) == len(replies[2][1]["predictions"]) == 800

    for size, expected in ((60_000, 200), (70_000, 431)):
        s = connect(server)
        head = GET_STATUS + b"X-Big: " + b"a" * size + b"\r\n\r\n"
        for i in range(0, len(head), 4096):
            try:
                s.sendall(head[i:i + 4096])
            except OSError:  # refused and closed before the rest was sent
                break
        reply, _ = read_until_closed(s)
        assert int(reply.split(b" ", 2)[1]) == expected
    check_answers(server)


def test_a_connection_that_sends_nothing_or_half_a_head_is_closed(server):
    silent = connect(server)
    half = connect(server, b"POST /v1/models/reviews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
    start = time.monotonic()
    assert read_until_closed(silent) == (b"", True)
    reply, closed = read_until_closed(half)
    assert closed and time.monotonic() - start < HEADER_TIMEOUT + 2
    status, error = status_and_error(reply)
    assert status == 408 and "--header-timeout" in error


def test_a_head_trickled_a_byte_at_a_time_is_cut_off_at_the_deadline(server):
    """Each byte arrives in time; the head as a whole does not."""
    s = connect(server)
    start = time.monotonic()
    for byte in GET_STATUS + b"X-Slow: " + b"a" * 200:
        if select.select([s], [], [], 0)[0] or time.monotonic() - start > HEADER_TIMEOUT + 5:
            break  # the server answered (or never will)
        s.sendall(bytes([byte]))
        time.sleep(0.1)
    reply, closed = read_until_closed(s)
    assert closed and time.monotonic() - start < HEADER_TIMEOUT + 2
    assert status_and_error(reply)[0] == 408


def test_an_idle_connection_is_closed_after_its_answer(server):
    s = connect(server, GET_STATUS + b"\r\n")
    start = time.monotonic()
    reply, closed = read_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 200 ") and closed
    assert time.monotonic() - start < IDLE_TIMEOUT + 2


def test_connections_over_the_limit_are_refused_and_file_descriptors_stay_bounded(server):
    """19,990 half-open connections used up the server's file descriptors before the cap."""
    fds = f"/proc/{server['proc'].pid}/fd"
    before = len(os.listdir(fds))
    held = [connect(server, GET_STATUS + b"X-A: ") for _ in range(MAX_CONNECTIONS)]
    extra = [connect(server) for _ in range(20)]
    for s in extra:
        reply, closed = read_until_closed(s, timeout=HEADER_TIMEOUT / 2)
        assert closed
        status, error = status_and_error(reply)
        assert status == 503 and "--max-connections" in error
    assert len(os.listdir(fds)) <= before + MAX_CONNECTIONS
    for s in held:  # cut off at the header deadline, freeing their places
        assert read_until_closed(s)[1]
    check_answers(server)


@pytest.mark.slow  # waits out the stalled uploads' --body-timeout (3 s): over make test-fast's 3 s line
def test_stalled_uploads_hold_up_no_other_request(server):
    """Two uploads that stop mid-body held both decode slots (--max-concurrent-decodes 2) for
    ever: every large or chunked request waited behind them. Now a body is read whole first,
    within --body-timeout, and a slot is taken only to parse it."""
    stalled = [connect(server, STALLED_UPLOAD) for _ in range(2)]
    started = time.monotonic()
    time.sleep(0.3)
    client = RestClient("127.0.0.1", server["port"], timeout=BODY_TIMEOUT + 10)
    large = ["a good film " * 1000] * 10  # a ~120 KB body: over the 64 KiB of a small one
    assert client.predict("reviews", {"text": large})["label"] == ["positive"] * 10
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=BODY_TIMEOUT + 10)
    conn.request("POST", "/v1/models/reviews:predict", iter([b'{"instances": ["a bad film"]}']))
    response = conn.getresponse()  # (an iterator body goes chunked)
    assert response.status == 200 and json.loads(response.read())["predictions"][0]["label"] == "negative"
    conn.close()
    assert time.monotonic() - started < BODY_TIMEOUT - 0.5  # not freed by the stalled ones' deadline
    for s in stalled:
        reply, closed = read_until_closed(s)
        assert closed and time.monotonic() - started < BODY_TIMEOUT + 2
        status, error = status_and_error(reply)
        assert status == 408 and "--body-timeout" in error


def test_a_client_leaving_mid_upload_is_no_server_fault(server):
    s = connect(server, STALLED_UPLOAD)
    time.sleep(0.3)
    s.close()
    time.sleep(0.5)
    check_answers(server)
    log = open(server["log_path"]).read()
    assert "ClientDisconnect" not in log and "failed" not in log, log[-2000:]


def stalled_large_upload(port, size, sent):
    """Declares a `size`-byte body, sends `sent` bytes of it, stalls; `(reply, closed)`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10)
    head = (b"POST /v1/models/reviews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
    try:
        s.sendall(head + (b'{"instances": ["' + b"a" * size)[:sent])
    except OSError:  # the server answered and closed with this body unread
        pass
    return read_until_closed(s, timeout=BODY_TIMEOUT + 10)


@pytest.mark.slow
def test_stalled_large_uploads_hold_at_most_the_body_budget(server):
    """Bodies are held whole from their first byte until parsed, so uploads stalled mid-body
    held --max-connections x --max-body-bytes (500 x 16 MiB) of memory. Now large ones share
    --max-pending-body-bytes: here 12 uploads of 8 MiB (two fit) stall before their end. The
    two first hold the budget and the others wait for it, what they send left in their
    sockets; the server grows by about the budget, not 12 x 8 MiB, and small requests pass
    meanwhile. The two get 408; the two next waiters then take their place (and time out in
    turn), and the rest, whose wait has run out, get 503 with Retry-After. Then the whole
    budget is free again."""
    pid, port, size = server["proc"].pid, server["port"], 8 << 20
    before = peak = rss_bytes(pid)
    with ThreadPoolExecutor(12) as pool:
        holders = [pool.submit(stalled_large_upload, port, size, size - 1000) for _ in range(2)]
        time.sleep(0.3)  # their heads first: they take the budget
        started = time.monotonic()
        # Half send all they can (what is not read stays in the sockets), half only 32 KB.
        waiters = [pool.submit(stalled_large_upload, port, size, size - 1000 if i % 2 else 32_000)
                   for i in range(10)]
        time.sleep(1.0)
        check_answers(server)  # small bodies take no budget
        assert time.monotonic() - started < BODY_TIMEOUT - 0.5
        while not all(f.done() for f in holders + waiters):
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        replies = [f.result() for f in holders + waiters]
    assert peak - before < MAX_PENDING + (16 << 20), (peak - before) / 2**20  # ~96 MiB before
    assert all(closed for _, closed in replies)
    assert time.monotonic() - started < 2 * BODY_TIMEOUT + 2
    for reply, _ in replies[:2]:
        status, error = status_and_error(reply)
        assert status == 408 and "--body-timeout" in error
    statuses = []
    for reply, _ in replies[2:]:
        if reply:  # else reset: closed with its body unread in the socket
            status, error = status_and_error(reply)
            statuses.append(status)
            if status == 503:
                assert b"\r\nretry-after: 3\r\n" in reply.partition(b"\r\n\r\n")[0].lower()
                assert "--max-pending-body-bytes" in error
            else:
                assert status == 408 and "--body-timeout" in error
    # Two waiters took the budget when the holders left; at least three of the five that sent
    # 32 KB (whose answers no reset can lose) were still waiting at their deadline.
    assert statuses.count(408) <= 2 and statuses.count(503) >= 3, statuses
    # The budget came back whole: a 15 MB body is read and parsed at once (400: its string is
    # over --max-string-bytes), not left waiting for budget (503).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BODY_TIMEOUT + 10)
    start = time.monotonic()
    conn.request("POST", "/v1/models/reviews:predict", json.dumps({"instances": ["a" * 15_000_000]}))
    response = conn.getresponse()
    assert response.status == 400 and "--max-string-bytes" in json.loads(response.read())["error"]
    assert time.monotonic() - start < BODY_TIMEOUT - 0.5
    conn.close()
    check_answers(server)
    large = ["a good film " * 1000] * 10  # ~120 KB: takes budget
    client = RestClient("127.0.0.1", port, timeout=10)
    assert client.predict("reviews", {"text": large})["label"] == ["positive"] * 10
    body = json.dumps({"instances": large}).encode()  # chunked: its share taken as it comes
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/models/reviews:predict", iter([body[i:i + 10_000] for i in range(0, len(body), 10_000)]))
    response = conn.getresponse()
    assert response.status == 200 and len(json.loads(response.read())["predictions"]) == 10
    conn.close()


def test_the_body_budget_is_first_come_first_served_and_never_leaks():
    async def scenario():
        budget = BodyBudget(10)
        with budget.hold() as first:
            assert first.take_now(6)
            second = budget.hold()
            waiting = asyncio.create_task(second.wait(6))
            await asyncio.sleep(0)
            assert not waiting.done() and budget.free == 4
            late = budget.hold()
            assert not late.take_now(1)  # behind the waiter, though 4 are free
            assert late.take_now(4, jump=True) and budget.free == 0  # a holder's growth
            late.release()
            with pytest.raises(TimeoutError):  # a deadline while waiting takes nothing
                async with asyncio.timeout(0.01):
                    await late.wait(2)
            assert late.held == 0 and budget.free == 4
        await asyncio.sleep(0)
        assert waiting.done() and second.held == 6 and budget.free == 4
        granted_then_cancelled = budget.hold()
        task = asyncio.create_task(granted_then_cancelled.wait(8))
        await asyncio.sleep(0)
        second.release()  # grants it; its deadline fires before it runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert granted_then_cancelled.held == 0 and budget.free == 10

    asyncio.run(scenario())


def test_the_body_budget_defaults_to_four_largest_bodies():
    assert Limits().max_pending_body_bytes == 64 << 20
    assert Limits(max_body_bytes=1000).max_pending_body_bytes == 4000
    with pytest.raises(ValueError, match="--max-pending-body-bytes .* at least --max-body-bytes"):
        Limits(max_body_bytes=1000, max_pending_body_bytes=999)


def test_a_client_refused_mid_upload_reports_the_servers_503(server):
    # Before, RestClient said "Lost the connection ... Broken pipe" when the server answered 503
    # (over --max-connections) and closed while the client was still sending a large body.
    held = [connect(server, GET_STATUS + b"X-A: ") for _ in range(MAX_CONNECTIONS)]
    try:
        reply, closed = read_until_closed(connect(server), timeout=HEADER_TIMEOUT / 2)
        assert closed and b"\r\nretry-after: 1\r\n" in reply.lower()
        with pytest.raises(ServingError) as refused:
            RestClient("127.0.0.1", server["port"], timeout=5).predict("reviews", ["a film " * 1_000_000])
        assert refused.value.status == 503 and "--max-connections" in refused.value.message, refused.value
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    check_answers(server)


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Reads each request's whole body, records it, then answers or closes per `server.answer`."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.server.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.server.answer:  # took the request and went away (a shutdown, a crash)
            self.close_connection = True
            return
        body = b'{"outputs": [%d]}' % len(self.server.received)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # an idle keep-alive close the client is not told of

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    httpd.received, httpd.answer = [], False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_request_the_server_took_on_a_new_connection_is_not_sent_again(recording_server):
    # Before, RestClient sent it again on a new connection (the server ran a generation twice),
    # or, against a server that had stopped, said "Cannot reach ...: Connection refused".
    client = RestClient("127.0.0.1", recording_server.server_address[1], timeout=10)
    with pytest.raises(ServingError, match=r"closed the connection before answering \(it may be "
                                           r"shutting down or restarting\); the request may have run"):
        client.predict("shakespeare", {"prompt": ["ROMEO:"]})
    assert len(recording_server.received) == 1


def test_a_keep_alive_connection_the_server_closed_while_idle_is_retried_once(recording_server):
    recording_server.answer = True
    client = RestClient("127.0.0.1", recording_server.server_address[1], timeout=10)
    assert client.predict("reviews", {"text": ["a"]}) == [1]
    time.sleep(0.2)  # the server has closed the idle connection the client still holds
    assert client.predict("reviews", {"text": ["b"]}) == [2]  # sent again on a new connection
    assert [json.loads(b)["inputs"]["text"] for b in recording_server.received] == [["a"], ["b"]]
