"""RFC 9112 §6.1: a request with both ``Content-Length`` and ``Transfer-Encoding`` (or an HTTP/1.0
request with ``Transfer-Encoding``) has ambiguous framing. A front end that frames it by
``Content-Length`` and a server that frames it by the chunked coding disagree on where it ends, and the
bytes in between become a second, smuggled request. "Regardless, the server MUST close the connection
after responding to such a request." Both servers the project runs refuse it with 400 and close.

Each case sends one ambiguous request whose chunked body ends early, followed on the same connection
by a smuggled ``GET``. Proved over real loopback sockets against the h11 server and against
``oauthproxy serve`` as a process (uvicorn 0.55 with h11 on its own processed the smuggled request
and kept the connection open: the ASGI app refuses the request itself; on httptools, the ``fast``
extra, uvicorn's parser refuses it before the app and closes).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import h11
import pytest

from oauthproxy_adapters.cli import serve_stack
from oauthproxy_adapters.h11_server import serve
from oauthproxy_adapters.testing.serve import ServeProcess
from oauthproxy_core import Request, Response
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.http import json_response
from tests.adapters.live_servers import H11Thread, async_proxy
from tests.adapters.serve_process import start_serve
from tests.harness import ScriptedUpstream, make_config

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

#: (the ambiguous request head, its chunked body cut short by a zero chunk)
AMBIGUOUS = {
    "length-then-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    "chunked-then-length": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 48\r\n\r\n"
    ),
    "zero-length-and-chunked": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n"
    ),
    "http-1.0-chunked": (
        b"POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
}
END_OF_CHUNKS = b"0\r\n\r\n"


def exchange(port: int, data: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data`` (without ending our side) and read; returns (bytes, closed by the server)."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(out), False
            except ConnectionError:
                return bytes(out), True
            if not chunk:
                return bytes(out), True
            out += chunk
    return bytes(out), False


def responses(raw: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Every HTTP/1.1 response in ``raw``, in order."""
    found: list[tuple[int, dict[bytes, bytes], bytes]] = []
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    while True:
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        try:
            event = conn.next_event()
            if not isinstance(event, h11.Response):
                return found
            status, headers, body = event.status_code, dict(event.headers), bytearray()
            while isinstance(event := conn.next_event(), h11.Data):
                body += event.data
        except h11.RemoteProtocolError:
            return found
        found.append((status, headers, bytes(body)))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return found
        conn.start_next_cycle()


#: What uvicorn answers when its httptools parser (llhttp) refuses a request before the app sees it.
PARSER_REFUSAL = b"Invalid HTTP request received."


def check_refused(raw: bytes, closed: bool, *, by_parser: bool = False) -> None:
    """One 400 with ``Connection: close``, then the connection closed; nothing smuggled answered.

    ``by_parser``: the server's HTTP parser refuses the request itself (uvicorn on httptools, whose
    llhttp rejects Content-Length with Transfer-Encoding), so the body is the parser's, not the app's.
    """
    answers = responses(raw)
    assert len(answers) == 1, raw  # the smuggled request got no answer of its own
    status, headers, body = answers[0]
    assert status == 400, raw
    assert headers.get(b"connection") == b"close", raw
    if by_parser:
        assert body == PARSER_REFUSAL, body
    else:
        error = json.loads(body)
        assert error["error"] == "invalid_request" and "framing" in error["error_description"]
    assert closed, "the connection stayed open after an ambiguously framed request"


# -- the h11 server -------------------------------------------------------------------------------

SEEN: list[str] = []


async def recording_app(req: Request, principal: Principal | None) -> Response:
    SEEN.append(req.path)
    return json_response(200, {"path": req.path})


@pytest.fixture(scope="module")
def h11_server() -> Iterator[H11Thread]:
    def build(base: str, sock: socket.socket) -> Any:
        config = make_config(issuer=base)
        proxy = async_proxy(config, ScriptedUpstream(callback_url=config.callback_url))
        return serve(proxy, sock=sock, app_handler=recording_app)

    server = H11Thread(build)
    yield server
    server.stop()


@pytest.mark.parametrize("head", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_rfc9112_6_1_h11_server_refuses_ambiguous_framing_and_closes(
    h11_server: H11Thread, head: bytes
) -> None:
    del SEEN[:]
    raw, closed = exchange(h11_server.port, head + END_OF_CHUNKS + SMUGGLED)
    check_refused(raw, closed)
    assert SEEN == [], SEEN  # neither the ambiguous request nor the smuggled one reached the app


def test_rfc9112_6_1_h11_server_still_serves_each_framing_alone(h11_server: H11Thread) -> None:
    """The refusal is narrow: chunked alone and Content-Length alone keep the connection."""
    del SEEN[:]
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + END_OF_CHUNKS
    )
    length = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    raw, closed = exchange(h11_server.port, chunked + length + SMUGGLED, wait=1.0)
    assert [status for status, _, _ in responses(raw)] == [200, 200, 200], raw
    assert not closed
    assert SEEN == ["/echo", "/echo", "/smuggled"]


# -- oauthproxy serve (uvicorn) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    work = tmp_path_factory.mktemp("serve-smuggling")
    # At info level uvicorn logs one access line per request it processed: the evidence.
    proc = start_serve(work, "--log-level", "info")
    try:
        yield proc
    finally:
        proc.stop()


def access_lines(proc: ServeProcess) -> list[str]:
    return [line for line in proc.log.read_text().splitlines() if '" ' in line and "HTTP/" in line]


@pytest.mark.parametrize("head", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_rfc9112_6_1_serve_refuses_ambiguous_framing_and_closes(
    serve_process: ServeProcess, head: bytes
) -> None:
    target = head.replace(b"/echo", b"/token")
    raw, closed = exchange(serve_process.port, target + END_OF_CHUNKS + SMUGGLED)
    # With the `fast` extra, serve runs on httptools, whose parser refuses both framings together
    # first (an HTTP/1.0 request with Transfer-Encoding alone reaches the app); else the app does.
    both = b"content-length" in head.lower()
    check_refused(raw, closed, by_parser=both and serve_stack()[0] == "httptools")
    time.sleep(0.2)  # the access log line is written after the response
    assert not any("/smuggled" in line for line in access_lines(serve_process)), (
        serve_process.output()
    )


def test_rfc9112_6_1_serve_still_serves_each_framing_alone(serve_process: ServeProcess) -> None:
    meta = b"/.well-known/oauth-authorization-server"
    chunked = b"GET " + meta + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    length = b"GET " + meta + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    raw, closed = exchange(serve_process.port, chunked + END_OF_CHUNKS + length, wait=1.0)
    assert [status for status, _, _ in responses(raw)] == [200, 200], raw
    assert not closed
