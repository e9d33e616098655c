"""The gateway: forwarding, identity headers, header stripping, SSE streaming, 502/504.

An MCP-like upstream runs under uvicorn on loopback: it echoes what it received and streams Server-Sent
Events in several chunks. The gateway runs under uvicorn too, behind either a stub that injects a
verified principal or the real ``OAuthProxyApp`` with a token from a complete login.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp, with_principal
from oauthproxy_adapters.gateway import Gateway, identity_headers
from oauthproxy_adapters.testing.flow import drive, httpx_send, login
from oauthproxy_core.handlers.bearer import Principal
from tests.adapters.live_servers import UvicornThread, async_proxy
from tests.harness import ScriptedUpstream, make_config

PRINCIPAL = Principal(
    subject="github:4242",
    client_id="client-abc",
    scopes=("mcp", "offline_access"),
    resource="http://127.0.0.1/mcp",
    grant_id="g1",
    expires_at=2_000_000_000,
    claims=(
        ("login", "octocat"),
        ("name", "Jos\u00e9 \r\nX-Evil: 1"),
        ("preferred_username", "octo%cat"),
    ),
)


# -- the upstream MCP-like server -----------------------------------------------------------------


class Upstream:
    """Echo, SSE in chunks (the last one only after the client saw the first), slow, cookies."""

    def __init__(self) -> None:
        self.first_chunk_seen = threading.Event()
        self.waited_for_client: list[bool] = []
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        seen = {
            "method": scope["method"],
            "path": path,
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode(),
        }
        self.requests.append(seen)
        if path == "/mcp/sse":
            await self._sse(send)
        elif path == "/mcp/slow":
            await asyncio.sleep(1.5)
            await _plain(send, 200, b"late")
        else:
            data = json.dumps(seen).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                        (b"set-cookie", b"upstream=1; Path=/"),
                        (b"mcp-session-id", b"sess-1"),
                        (b"connection", b"x-hop"),
                        (b"x-hop", b"secret-hop"),
                        (b"keep-alive", b"timeout=5"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})

    async def _sse(self, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        for i in range(3):
            await send(
                {"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True}
            )
            await asyncio.sleep(0.05)
        # Hold the last event until the client has received the first: a buffering gateway
        # would make this wait time out.
        deadline = time.monotonic() + 5
        while not self.first_chunk_seen.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.waited_for_client.append(self.first_chunk_seen.is_set())
        await send({"type": "http.response.body", "body": b"data: last\n\n", "more_body": False})


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class InjectPrincipal:
    """Stands in for ``OAuthProxyApp``: every request is verified as ``PRINCIPAL``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(with_principal(scope, PRINCIPAL), receive, send)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, str]]:
    app = Upstream()
    server = UvicornThread(lambda _base: app)
    try:
        yield app, server.base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(upstream: tuple[Upstream, str]) -> Iterator[str]:
    _app, base = upstream
    server = UvicornThread(
        lambda _base: InjectPrincipal(Gateway(base + "/mcp", mount_path="/mcp", timeout=0.5))
    )
    try:
        yield server.base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def _headers(seen: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in seen["headers"]:
        out.setdefault(k, []).append(v)
    return out


# -- forwarding ---------------------------------------------------------------------------------------


def test_forwards_method_path_query_body_and_identity(
    gateway: str, upstream: tuple[Upstream, str], http: httpx.Client
) -> None:
    resp = http.post(
        gateway + "/mcp/tools/a%2Fb?x=1&y=%20z",
        content=b'{"jsonrpc":"2.0"}',
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer the-proxys-token",
            "Cookie": "__Host-oauthproxy=browser",
            "X-OAuthProxy-Subject": "github:1",
            "x-oauthproxy-claim-login": "admin",
            "X-OAuthProxy-Anything": "spoof",
            "Mcp-Session-Id": "sess-1",
            "MCP-Protocol-Version": "2025-11-25",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "hop",
            "X-Forwarded-Host": "spoofed.example",
        },
    )
    assert resp.status_code == 200
    seen = resp.json()
    assert seen["method"] == "POST"
    assert seen["raw_path"] == "/mcp/tools/a%2Fb"
    assert seen["query"] == "x=1&y=%20z"
    assert seen["body"] == '{"jsonrpc":"2.0"}'
    h = _headers(seen)
    assert "authorization" not in h
    assert "cookie" not in h
    assert "x-drop-me" not in h
    assert h["x-oauthproxy-subject"] == ["github:4242"]
    assert h["x-oauthproxy-client-id"] == ["client-abc"]
    assert h["x-oauthproxy-scopes"] == ["mcp offline_access"]
    assert h["x-oauthproxy-claim-login"] == ["octocat"]
    assert h["x-oauthproxy-claim-name"] == ["Jos%C3%A9 X-Evil: 1"]
    assert h["x-oauthproxy-claim-preferred-username"] == ["octo%25cat"]
    assert "x-oauthproxy-anything" not in h
    assert not [k for k in h if k.startswith("x-evil")]
    assert h["mcp-session-id"] == ["sess-1"]
    assert h["mcp-protocol-version"] == ["2025-11-25"]
    assert h["content-type"] == ["application/json"]
    _, upstream_base = upstream
    assert h["host"] == [upstream_base.removeprefix("http://")]
    assert h["x-forwarded-host"] == [gateway.removeprefix("http://")]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    # Response: end-to-end headers pass, hop-by-hop ones do not, CORS for browser clients.
    assert resp.headers["mcp-session-id"] == "sess-1"
    assert resp.headers["set-cookie"] == "upstream=1; Path=/"
    assert "x-hop" not in resp.headers
    assert "keep-alive" not in resp.headers
    assert resp.headers["access-control-allow-origin"] == "*"


def test_mount_path_maps_onto_the_upstream_path(gateway: str, http: httpx.Client) -> None:
    seen = http.get(gateway + "/mcp").json()
    assert (seen["method"], seen["path"], seen["body"]) == ("GET", "/mcp", "")
    assert "transfer-encoding" not in _headers(seen)
    assert "content-length" not in _headers(seen)
    assert http.delete(gateway + "/mcp/x/y").json()["path"] == "/mcp/x/y"


def test_outside_the_mount_and_dot_segments(gateway: str, http: httpx.Client) -> None:
    assert http.get(gateway + "/other").status_code == 404
    assert http.get(gateway + "/mcpx").status_code == 404
    # httpx normalises "/mcp/../admin" away: send the raw request line over a socket.
    port = int(gateway.rsplit(":", 1)[1])
    for raw in (b"/mcp/../admin", b"/mcp/%2e%2e/admin", b"/mcp/./x", b"/mcp/a\\..\\b"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 400"), (raw, status_line)


def test_identity_headers_are_sanitised() -> None:
    evil = Principal(
        subject="idp:1\r\nX-Admin: yes",
        client_id="c",
        scopes=("a",),
        resource="r",
        grant_id="g",
        expires_at=1,
        claims=(("e\r\nvil name", "v\x00\r\n"),),
    )
    headers = dict(identity_headers(evil))
    assert headers["X-OAuthProxy-Subject"] == "idp:1X-Admin: yes"
    assert headers["X-OAuthProxy-Claim-e--vil-name"] == "v"
    for name, value in headers.items():
        assert "\r" not in name + value and "\n" not in name + value
        value.encode("ascii")


# -- streaming ----------------------------------------------------------------------------------------


def test_sse_is_streamed_chunk_by_chunk(
    gateway: str, upstream: tuple[Upstream, str], http: httpx.Client
) -> None:
    app, _ = upstream
    app.first_chunk_seen.clear()
    received: list[bytes] = []
    with http.stream("GET", gateway + "/mcp/sse", headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        for chunk in resp.iter_raw():
            received.append(chunk)
            app.first_chunk_seen.set()
    body = b"".join(received)
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: last\n\n"
    # The upstream held back its last event until the client had the first one.
    assert app.waited_for_client[-1] is True
    assert len(received) >= 2


# -- failures -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def test_upstream_down_is_502(http: httpx.Client) -> None:
    target = f"http://127.0.0.1:{_closed_port()}/mcp"
    server = UvicornThread(lambda _base: InjectPrincipal(Gateway(target, mount_path="/mcp")))
    try:
        resp = http.post(server.base + "/mcp", content=b"{}")
    finally:
        server.stop()
    assert resp.status_code == 502
    assert resp.json() == {"error": "bad_gateway"}


def test_upstream_timeout_is_504(gateway: str, http: httpx.Client) -> None:
    started = time.monotonic()
    resp = http.get(gateway + "/mcp/slow")
    assert resp.status_code == 504
    assert resp.json() == {"error": "gateway_timeout"}
    assert time.monotonic() - started < 1.4


def test_without_a_principal_nothing_is_forwarded(upstream: tuple[Upstream, str]) -> None:
    app, base = upstream
    before = len(app.requests)
    messages = asyncio.run(_call(Gateway(base + "/mcp"), {"path": "/mcp"}))
    assert messages[0]["status"] == 401
    assert len(app.requests) == before


def test_websockets_are_refused() -> None:
    scope = {"type": "websocket", "path": "/mcp", "headers": []}
    messages = asyncio.run(_call(Gateway("http://127.0.0.1:1/mcp"), scope))
    assert messages == [{"type": "websocket.close", "code": 1008}]


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    full = {"type": "http", "method": "GET", "query_string": b"", "headers": [], **scope}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(full, receive, send)
    await app.aclose()
    return sent


# -- behind the real OAuthProxyApp, with a token from a complete login --------------------------------


def test_behind_oauthproxyapp_with_a_real_token(
    upstream: tuple[Upstream, str], http: httpx.Client
) -> None:
    app, base = upstream
    made: dict[str, Any] = {}

    def build(proxy_base: str) -> Any:
        config = make_config(issuer=proxy_base)
        made["idp"] = ScriptedUpstream(callback_url=config.callback_url)
        proxy = async_proxy(config, made["idp"])
        return OAuthProxyApp(proxy, Gateway(base + "/mcp", mount_path=config.mcp_path))

    server = UvicornThread(build)
    try:
        before = len(app.requests)
        denied = http.post(server.base + "/mcp", content=b"{}")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Bearer resource_metadata=")
        assert len(app.requests) == before  # the upstream never saw it

        session = drive(login(server.base, made["idp"]), httpx_send(http))
        token = session.tokens["access_token"]
        resp = http.post(
            server.base + "/mcp",
            content=b"{}",
            headers={"Authorization": f"Bearer {token}", "X-OAuthProxy-Subject": "idp:1"},
        )
        assert resp.status_code == 200
        h = _headers(resp.json())
        assert h["x-oauthproxy-subject"] == ["idp:42"]
        assert h["x-oauthproxy-client-id"] == [session.client["client_id"]]
        assert h["x-oauthproxy-scopes"] == ["mcp"]
        assert h["x-oauthproxy-claim-login"] == ["octocat"]
        assert "authorization" not in h
    finally:
        server.stop()
