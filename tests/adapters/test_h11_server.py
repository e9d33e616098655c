"""The h11 server's HTTP/1.1 behaviour over raw loopback sockets: keep-alive and pipelining, size bounds
(431, 413 before ``100 Continue``), timeouts (idle, slow-loris 408), malformed HTTP (400 and close),
HEAD, exceptions in the app (generic 500), shutdown with open connections, and spec/security.md 29 as a
Hypothesis property over arbitrary and mutated bytes.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.h11_server import serve
from oauthproxy_core import Request, Response
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.http import json_response
from tests.adapters.live_servers import H11Thread, LoopThread, async_proxy
from tests.harness import ScriptedUpstream, make_config

AS_META = b"/.well-known/oauth-authorization-server"


async def app(req: Request, principal: Principal | None) -> Response:
    if req.path == "/boom":
        raise RuntimeError("secret internal detail")
    if req.path == "/echo":
        return json_response(200, {"method": req.method, "length": len(req.body)})
    return json_response(404, {"error": "not_found"}, no_store=False)


class Errors(logging.Handler):
    """Collects ERROR records of the server's and asyncio's loggers: an unhandled exception shows here."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    loggers = [logging.getLogger("oauthproxy.h11"), logging.getLogger("asyncio")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.fixture(scope="module")
def start(loop: LoopThread) -> Iterator[Callable[..., H11Thread]]:
    started: list[H11Thread] = []

    def start_server(**kw: Any) -> H11Thread:
        def build(base: str, sock: socket.socket) -> Any:
            config = make_config(issuer=base)
            proxy = async_proxy(config, ScriptedUpstream(callback_url=config.callback_url))
            return serve(proxy, sock=sock, app_handler=app, **kw)

        server = H11Thread(build, loop=loop)
        started.append(server)
        return server

    yield start_server
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(start: Callable[..., H11Thread]) -> H11Thread:
    return start(idle_timeout=5.0, request_timeout=5.0)


# -- a raw HTTP/1.1 client ----------------------------------------------------------------------------
class Raw:
    """One TCP connection; h11 in the client role only to frame requests and parse answers."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.sock.close()

    def send(self, *events: h11.Event) -> None:
        self.sock.sendall(b"".join(self.conn.send(e) or b"" for e in events))

    def request(
        self, method: str, target: bytes, headers: list[tuple[str, str]] | None = None, body=b""
    ) -> tuple[h11.Response, bytes]:
        hdrs = [("Host", "127.0.0.1"), *(headers or [])]
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        events: list[h11.Event] = [h11.Request(method=method, target=target, headers=hdrs)]
        if body:
            events.append(h11.Data(data=body))
        self.send(*events, h11.EndOfMessage())
        return self.response()

    def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
                continue
            assert isinstance(event, h11.Event)
            return event

    def response(self) -> tuple[h11.Response, bytes]:
        head = self.next_event()
        assert isinstance(head, h11.Response), head
        body = bytearray()
        while True:
            event = self.next_event()
            if isinstance(event, h11.EndOfMessage):
                return head, bytes(body)
            assert isinstance(event, h11.Data), event
            body += event.data

    def again(self) -> None:
        self.conn.start_next_cycle()

    def closed_within(self, seconds: float) -> bool:
        """True once the server closes the connection (EOF or reset) within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True


def exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = 5.0) -> bytes:
    """Send raw bytes, optionally end our side, and read everything until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = bytearray()
    try:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before taking everything: read the answer
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            out += chunk
        else:
            raise AssertionError("the server neither answered nor closed in time")
    finally:
        sock.close()
    return bytes(out)


def first_response(raw: bytes) -> tuple[h11.Response, dict[bytes, bytes]]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    while True:
        event = client.next_event()
        if isinstance(event, h11.InformationalResponse):
            continue
        assert isinstance(event, h11.Response), (event, raw[:200])
        return event, dict(event.headers)


def status_of(raw: bytes) -> int:
    return first_response(raw)[0].status_code


# -- keep-alive -----------------------------------------------------------------------------------------
def test_keep_alive_three_requests_on_one_connection(server: H11Thread) -> None:
    raw = Raw(server.port)
    try:
        local = raw.sock.getsockname()
        for target in (AS_META, b"/jwks.json", b"/echo"):
            head, body = raw.request("GET", target)
            assert head.status_code == 200, body
            raw.again()
            assert raw.sock.getsockname() == local
        assert json.loads(body) == {"method": "GET", "length": 0}
    finally:
        raw.close()


def test_pipelined_requests_answered_in_order(server: H11Thread) -> None:
    reqs = b"".join(
        b"GET " + t + b" HTTP/1.1\r\nHost: x\r\n\r\n" for t in (AS_META, b"/nowhere", b"/echo")
    )
    raw = Raw(server.port)
    try:
        raw.sock.sendall(reqs)
        statuses = []
        for _ in range(3):
            raw.conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            raw.conn.send(h11.EndOfMessage())
            statuses.append(raw.response()[0].status_code)
            raw.again()
        assert statuses == [200, 404, 200]
    finally:
        raw.close()


# -- malformed HTTP ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Header: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\x00\r\n\r\n",
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=[
        "request-line",
        "nul-in-target",
        "header-bytes",
        "obs-fold",
        "two-lengths",
        "bad-chunk",
    ],
)
def test_malformed_http_is_400_and_close(server: H11Thread, data: bytes) -> None:
    raw = exchange(server.port, data, half_close=False)  # the server must close on its own
    head, headers = first_response(raw)
    assert head.status_code == 400, raw
    assert headers[b"connection"] == b"close"
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "invalid_request"


def test_unsupported_http_version_is_505(server: H11Thread) -> None:
    raw = exchange(server.port, b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", half_close=False)
    head, headers = first_response(raw)
    assert head.status_code == 505 and headers[b"connection"] == b"close"


# -- bounds (spec/security.md 28) ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["one-long-header", "many-headers"])
def test_oversized_headers_are_431(server: H11Thread, shape: str) -> None:
    if shape == "one-long-header":
        extra = b"X-Big: " + b"a" * 20_000 + b"\r\n"
    else:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 200) for i in range(100))
    raw = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    head, headers = first_response(raw)
    assert head.status_code == 431
    assert headers[b"connection"] == b"close"


def test_declared_body_over_limit_is_413_before_upload(server: H11Thread) -> None:
    # Only the head is sent: the answer must come without the 70 kB ever being uploaded.
    raw = exchange(
        server.port,
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 70000\r\n\r\n",
        half_close=False,
    )
    assert status_of(raw) == 413


def test_chunked_body_over_limit_is_413(server: H11Thread) -> None:
    chunk = b"%x\r\n%s\r\n" % (8192, b"a" * 8192)
    data = (
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 10 + b"0\r\n\r\n"
    )
    assert status_of(exchange(server.port, data)) == 413


def test_expect_100_continue_is_answered(server: H11Thread) -> None:
    raw = Raw(server.port)
    try:
        raw.send(
            h11.Request(
                method="POST",
                target="/echo",
                headers=[("Host", "x"), ("Expect", "100-continue"), ("Content-Length", "5")],
            )
        )
        interim = raw.next_event()
        assert isinstance(interim, h11.InformationalResponse) and interim.status_code == 100
        raw.send(h11.Data(data=b"hello"), h11.EndOfMessage())
        head, body = raw.response()
        assert head.status_code == 200 and json.loads(body)["length"] == 5
    finally:
        raw.close()


def test_expect_100_continue_refused_when_too_large(server: H11Thread) -> None:
    raw = exchange(
        server.port,
        b"POST /register HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: 1000000\r\n\r\n",
        half_close=False,
    )
    assert raw.startswith(b"HTTP/1.1 413 ")  # no "100 Continue" first


def test_head_has_no_body_and_keeps_the_connection(server: H11Thread) -> None:
    raw = Raw(server.port)
    try:
        head, body = raw.request("HEAD", AS_META)
        # The core serves metadata to GET only (as under the ASGI adapter); the answer has no body.
        assert head.status_code == 405 and body == b""
        assert int(dict(head.headers)[b"content-length"]) > 0
        raw.again()
        head, body = raw.request("GET", AS_META)
        assert head.status_code == 200 and json.loads(body)["issuer"]
    finally:
        raw.close()


# -- timeouts -------------------------------------------------------------------------------------------
def test_idle_connections_are_closed(start: Callable[..., H11Thread]) -> None:
    srv = start(idle_timeout=0.3, request_timeout=5.0)
    silent = Raw(srv.port)
    used = Raw(srv.port)
    try:
        assert used.request("GET", AS_META)[0].status_code == 200
        t0 = time.monotonic()
        assert silent.closed_within(3.0)
        assert used.closed_within(3.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        silent.close()
        used.close()


def test_slow_loris_gets_408_within_request_timeout(start: Callable[..., H11Thread]) -> None:
    srv = start(idle_timeout=5.0, request_timeout=0.5)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5.0)
    try:
        t0 = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # Dripping a byte now and then must not extend the deadline.
        received = b""
        sock.settimeout(0.1)
        while time.monotonic() - t0 < 3.0:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
                continue
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - t0
        assert received.startswith(b"HTTP/1.1 408 "), received
        assert elapsed < 1.5
    finally:
        sock.close()


# -- robustness -----------------------------------------------------------------------------------------
def test_app_exception_is_a_generic_500(server: H11Thread, errors: Errors) -> None:
    before = len(errors.records)
    raw = Raw(server.port)
    try:
        head, body = raw.request("GET", b"/boom")
        assert head.status_code == 500
        assert json.loads(body) == {"error": "server_error"}
        assert b"secret" not in body and b"Traceback" not in body
        raw.again()
        assert raw.request("GET", AS_META)[0].status_code == 200  # the connection survives
    finally:
        raw.close()
    assert len(errors.records) == before + 1  # logged once, server side
    del errors.records[before:]


def test_close_with_open_keep_alive_connections_is_prompt(
    loop: LoopThread, start: Callable[..., H11Thread]
) -> None:
    srv = start(idle_timeout=30.0, request_timeout=30.0)
    raw = Raw(srv.port)
    partial = Raw(srv.port)
    try:
        assert raw.request("GET", AS_META)[0].status_code == 200
        partial.sock.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.monotonic()
        loop.run(srv.server.close())
        assert time.monotonic() - t0 < 1.0
        assert raw.closed_within(2.0) and partial.closed_within(2.0)
    finally:
        raw.close()
        partial.close()


def test_context_manager_closes(loop: LoopThread) -> None:
    config = make_config(issuer="http://127.0.0.1:1")
    proxy = async_proxy(config, ScriptedUpstream(callback_url=config.callback_url))

    async def scenario() -> int:
        async with await serve(proxy) as srv:
            port = srv.port
            assert port > 0
        return port

    port = loop.run(scenario())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()


# -- spec/security.md 29: any bytes get an HTTP/1.1 answer or a close, never a crash ------------------------
VALID = (
    b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 37\r\n\r\n{"redirect_uris":["http://x.test/cb"]}',
    b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n\r\n5\r\na=b&c\r\n0\r\n\r\n",
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nExpect: 100-continue\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    b"HEAD /jwks.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS /mcp HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n\r\n"
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
)
INTERESTING = (b"\r\n", b"\n", b"\x00", b" ", b":", b"\r\n\r\n", b"\xff", b"chunked", b"9" * 25)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "repeat")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            piece = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8)))
            data[pos:pos] = piece
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        else:
            data += bytes(data)
    return bytes(data)


def assert_answered_or_closed(server: H11Thread, errors: Errors, data: bytes) -> None:
    raw = exchange(server.port, data)
    if raw:
        assert raw.startswith(b"HTTP/1.1 "), raw[:100]
        head, _headers = first_response(raw)
        assert 100 <= head.status_code < 600
        assert head.status_code != 500, raw[:300]  # a 500 is a bug in the proxy
    assert not errors.records, [r.getMessage() for r in errors.records]
    # ... and the server still serves a normal request afterwards.
    after = Raw(server.port)
    try:
        assert after.request("GET", AS_META)[0].status_code == 200
    finally:
        after.close()


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.binary(max_size=600))
def test_invariant_29_h11_arbitrary_bytes(server: H11Thread, errors: Errors, data: bytes) -> None:
    assert_answered_or_closed(server, errors, data)


@FUZZ
@given(data=mutated_requests())
def test_invariant_29_h11_mutated_requests(server: H11Thread, errors: Errors, data: bytes) -> None:
    assert_answered_or_closed(server, errors, data)
