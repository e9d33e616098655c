"""The gateway under hostile input, as ``oauthproxy serve`` runs it: raw bytes to uvicorn on a loopback
socket, ``OAuthProxyApp`` verifying a valid access token, the ``Gateway`` forwarding to an MCP server
(here an echo server, also under uvicorn, that answers with what it received).

With a healthy MCP server behind it, no input may produce a 5xx (a 502 or 504 here means the gateway
broke the request itself), and whatever reaches the MCP server carries exactly one set of identity
headers, the true one: no ``Authorization`` or ``Cookie``, no client-chosen ``X-OAuthProxy-*`` or
forwarding value, however the client spells (case, ``_`` for ``-``: spec/security.md 30), repeats or
hop-by-hop-lists them, no header name a CGI-style stack could fold onto another (``_``), and no dot
segment in the path.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.gateway import PROTECTED_HEADER_PREFIXES, Gateway, folded_header_name
from oauthproxy_adapters.testing.flow import Session
from tests.adapters.live_servers import UvicornThread
from tests.hostile.support import (
    TALLY,
    ErrorLog,
    async_proxy,
    hostile_config,
    httpx_sender,
    new_session,
    still_works,
)

SOAK = os.environ.get("OAUTHPROXY_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(SOAK) if SOAK else 150,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=list(HealthCheck),
)

SPOOFED = "spoofed-by-the-client"
# Field values as HTTP/1.1 lets them through (RFC 9110 §5.5: VCHAR, SP, HTAB, obs-text).
FIELD_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
TOKEN = st.text(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)


RECEIVED: list[dict[str, Any]] = []
#: The forwarding headers the gateway sets on every request.
GATEWAY_FORWARDING = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The MCP server: answers 200 with the request it received (and keeps it in ``RECEIVED``)."""
    if scope["type"] != "http":
        return
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the request never completed: nothing was received
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "path": scope["path"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": len(body),
    }
    RECEIVED.append(seen)
    data = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Stack:
    def __init__(self) -> None:
        self.mcp = UvicornThread(lambda base: echo)
        self.made: dict[str, Any] = {}

        def build(base: str) -> Any:
            proxy, upstream = async_proxy(hostile_config(issuer=base))
            self.made["upstream"] = upstream
            self.made["gateway"] = Gateway(
                self.mcp.base + "/mcp-server", mount_path="/mcp", timeout=10
            )
            return OAuthProxyApp(proxy, self.made["gateway"])

        self.front = UvicornThread(build)
        self.base = self.front.base
        self.port = urlsplit(self.base).port or 0
        self.upstream = self.made["upstream"]

    def stop(self) -> None:
        self.front.stop()
        self.mcp.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack()
    yield s
    s.stop()


def identity(seen: dict[str, Any]) -> dict[str, list[str]]:
    """The identity headers received, keyed by folded name: ``x_oauthproxy_subject`` counts as a
    second ``x-oauthproxy-subject`` (a WSGI server would merge the two)."""
    return {k: v for k, v in protected(seen).items() if k.startswith("x-oauthproxy-")}


def protected(seen: dict[str, Any]) -> dict[str, list[str]]:
    """Every received header whose folded name is an identity or forwarding one (spec/security.md 30)."""
    out: dict[str, list[str]] = {}
    for k, v in seen["headers"]:
        if folded_header_name(k).startswith(PROTECTED_HEADER_PREFIXES):
            out.setdefault(folded_header_name(k), []).append(v)
    return out


def spelled(name: str) -> st.SearchStrategy[str]:
    """``name`` with each letter in either case and each ``-`` as ``-`` or ``_``."""
    parts = [
        st.sampled_from(["-", "_"]) if c == "-" else st.sampled_from(sorted({c.lower(), c.upper()}))
        for c in name
    ]
    return st.tuples(*parts).map("".join)


def exchange(port: int, data: bytes) -> bytes:
    """Send one request and read until the server closes (``Connection: close``). No half-close:
    uvicorn takes the end of our side as a disconnect and drops the request."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        out = bytearray()
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except OSError:
            pass
    return bytes(out)


def parse_response(raw: bytes, method: str) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (content-length or chunked); (0, b"") if none."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, body = 0, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:  # nothing (or a truncated answer) came back
            return status, bytes(body)
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(body)


def render(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes, host: str
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def test_gateway_barrage(stack: Stack) -> None:
    # uvicorn.error: where an exception escaping the ASGI app is reported.
    with ErrorLog("uvicorn.error") as errors, httpx.Client(timeout=10) as client:
        send = httpx_sender(client)
        session: Session = new_session(send, stack.upstream, stack.base)
        token = session.tokens["access_token"]
        cid = session.client["client_id"]
        host = urlsplit(stack.base).netloc
        header_name = st.one_of(
            st.sampled_from(
                [
                    "X-OAuthProxy-Subject",
                    "x-oauthproxy-client-id",
                    "X-OAUTHPROXY-SCOPES",
                    "X-OAuthProxy-Claim-login",
                    "Authorization",
                    "Cookie",
                    "Connection",
                    "Forwarded",
                    "X-Forwarded-For",
                    "X-Forwarded-Host",
                    "X-Forwarded-Proto",
                    "Proxy-Authorization",
                    "TE",
                    "Trailer",
                    "Upgrade",
                    "Expect",
                    "Mcp-Session-Id",
                    "Content-Type",
                ]
            ),
            # spec/security.md 30: the same names as a CGI-style stack folds them.
            st.sampled_from(
                [
                    "x-oauthproxy-subject",
                    "x-oauthproxy-client-id",
                    "x-oauthproxy-scopes",
                    "x-oauthproxy-claim-login",
                    "x-oauthproxy-claim-email",
                    "x-forwarded-for",
                    "x-forwarded-host",
                    "x-forwarded-proto",
                    "x-real-ip",
                    "mcp-session-id",
                ]
            ).flatmap(spelled),
            TOKEN,
        )
        header_value = st.one_of(
            st.just(SPOOFED),
            st.sampled_from(
                [
                    "x-oauthproxy-subject, authorization",
                    "close, x-forwarded-for",
                    "keep-alive, content-length",
                    "100-continue",
                    "Bearer " + token,
                    "Bearer " + token[:-3],
                    "for=evil.example;host=evil.example",
                    "1.2.3.4, caf\xe9",  # obs-text (0x80-0xFF): HTTP/1.1 lets it through
                    "\x80",
                ]
            ),
            FIELD_TEXT,
        )
        segment = st.one_of(
            st.sampled_from(
                ["", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "a", "sse", "%00", "%ff", "~", ";x"]
            ),
            st.text("abc.%/~-_", max_size=8),
        )

        @FUZZ
        @given(
            method=st.one_of(
                st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH"]), TOKEN
            ),
            segments=st.lists(segment, max_size=4),
            query=st.text("abc=&%+;/?#.", max_size=20),
            headers=st.lists(st.tuples(header_name, header_value), max_size=6),
            second_token=st.booleans(),
            body=st.one_of(st.just(b""), st.binary(max_size=200)),
        )
        def barrage(
            method: str,
            segments: list[str],
            query: str,
            headers: list[tuple[str, str]],
            second_token: bool,
            body: bytes,
        ) -> None:
            path = "/mcp" + "".join("/" + s for s in segments)
            target = path + ("?" + query.replace("#", "%23") if query else "")
            auth = [("Authorization", "Bearer " + token)]
            if second_token:
                auth.append(("Authorization", "Bearer " + token[:-3]))
            raw = exchange(stack.port, render(method, target, auth + headers, body, host))
            status, answer = parse_response(raw, method)
            TALLY.record("gateway under uvicorn (hypothesis)", status)
            assert status, (method, target, headers)  # uvicorn answers everything it parsed
            assert status < 500, (method, target, headers, raw[:400])
            if status != 200 or method == "HEAD":
                return
            seen = json.loads(answer)
            names = [k for k, _ in seen["headers"]]
            assert "authorization" not in names and "cookie" not in names, seen
            ids = identity(seen)
            assert ids["x-oauthproxy-subject"] == ["idp:42"], seen
            assert ids["x-oauthproxy-client-id"] == [cid], seen
            assert all(SPOOFED not in v for values in ids.values() for v in values), seen
            # spec/security.md 30: one header per folded identity or forwarding name, the gateway's,
            # and no client-chosen value under any of them (X-Forwarded-For names the address
            # uvicorn took from a trusted peer's X-Forwarded-For: loopback is trusted here).
            forwarding = protected(seen)
            assert all(len(values) == 1 for values in forwarding.values()), seen
            assert set(forwarding) == {*ids, *GATEWAY_FORWARDING}, seen
            assert all(
                SPOOFED not in v
                for k, values in forwarding.items()
                if k != "x-forwarded-for"
                for v in values
            ), seen
            # Nothing a CGI-style stack could fold onto another name.
            assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in names), seen
            assert seen["raw_path"].startswith("/mcp-server"), seen
            assert not any(s in (".", "..") for s in seen["path"].split("/")), seen

        barrage()
        still_works(send, stack.upstream, session, stack.base)
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_gateway_passes_a_plain_request(stack: Stack) -> None:
    """The barrage's assertions are live: an ordinary request reaches the MCP server with the
    identity headers and without the client's credentials."""
    with httpx.Client(timeout=10) as client:
        session = new_session(httpx_sender(client), stack.upstream, stack.base)
        r = client.post(
            stack.base + "/mcp/" + quote("a b"),
            headers={
                "Authorization": "Bearer " + session.tokens["access_token"],
                "X-OAuthProxy-Subject": SPOOFED,
                "Cookie": "a=b",
            },
            content=b"{}",
        )
    assert r.status_code == 200, r.text
    seen = r.json()
    assert identity(seen)["x-oauthproxy-subject"] == ["idp:42"]
    assert seen["raw_path"] == "/mcp-server/a%20b" and seen["body"] == 2
    assert not any(k in ("authorization", "cookie") for k, _ in seen["headers"])


def test_regression_a_client_leaving_mid_body_is_not_forwarded(stack: Stack) -> None:
    """Found by this suite: a client that went away before its body was complete made the gateway
    end the upstream request short. With a declared Content-Length h11 refused ("Too little data
    for declared Content-Length") and the exception escaped the ASGI app (uvicorn: "Exception in
    ASGI application"); with a chunked body the MCP server got the truncated body as if complete.
    Now the forward is abandoned and the MCP server never sees a truncated body."""
    with ErrorLog("uvicorn.error") as errors, httpx.Client(timeout=10) as client:
        session = new_session(httpx_sender(client), stack.upstream, stack.base)
        before = len(RECEIVED)
        host = urlsplit(stack.base).netloc
        head = (
            f"POST /mcp/upload HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {session.tokens['access_token']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        chunked = head.replace(b"Content-Length: 1000", b"Transfer-Encoding: chunked")
        partial = (
            (head + b'{"partial":', socket.SHUT_WR),
            (head + b'{"partial":', socket.SHUT_RDWR),
            # Without a length, a body ended short would look complete to the MCP server.
            (chunked + b'5\r\n{"a":\r\n', socket.SHUT_RDWR),
        )
        for data, close in partial:
            with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
                sock.sendall(data)
                time.sleep(0.2)  # the gateway is now streaming the body upstream
                sock.shutdown(close)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not errors.records:
            time.sleep(0.05)
        # A complete request afterwards is forwarded whole.
        r = client.post(
            stack.base + "/mcp/upload",
            headers={"Authorization": "Bearer " + session.tokens["access_token"]},
            content=b"x" * 1000,
        )
        assert r.status_code == 200 and r.json()["body"] == 1000
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert [seen["body"] for seen in RECEIVED[before:]] == [1000]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-For", b"\x80"),
        ("X-Forwarded-For", b"10.0.0.1, caf\xe9"),
        ("Host", b"h\xf6st.example"),
        ("X-Custom", b"\xff\xfe"),
    ],
)
def test_regression_obs_text_in_forwarded_headers(stack: Stack, name: str, value: bytes) -> None:
    """Found by this suite (soak run): ``X-Forwarded-For: \\x80`` (obs-text, which h11 and uvicorn
    accept) made the gateway encode the appended X-Forwarded-For as ASCII: UnicodeEncodeError, an
    exception out of the ASGI app, 500. Now the value is percent-encoded like every other value
    the gateway sets."""
    with ErrorLog("uvicorn.error") as errors, httpx.Client(timeout=10) as client:
        session = new_session(httpx_sender(client), stack.upstream, stack.base)
        host = urlsplit(stack.base).netloc.encode()
        headers = [(b"Host", host)] if name != "Host" else []
        headers += [
            (b"Authorization", b"Bearer " + session.tokens["access_token"].encode()),
            (name.encode(), value),
            (b"Connection", b"close"),
        ]
        data = b"GET /mcp HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        status, body = parse_response(exchange(stack.port, data + b"\r\n"), "GET")
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert status == 200, body
    seen = json.loads(body)
    for k, v in seen["headers"]:
        if k in ("x-forwarded-for", "x-forwarded-host"):
            assert v.isascii() and v.isprintable(), (k, v)
    # Exactly one, whatever it says (uvicorn trusts X-Forwarded-For from loopback by default and
    # takes the client address from it, so its last entry here is the client's own claim).
    assert len([k for k, _ in seen["headers"] if k == "x-forwarded-for"]) == 1
