"""spec/security.md 30: no client-sent header reaches the MCP server under a name that a server stack would
read as one of the gateway's identity or forwarding headers.

Every server that builds a CGI-style environment (WSGI's ``HTTP_*`` keys: wsgiref, a2wsgi, older
gunicorn; PHP-FPM; Rack, Puma CVE-2024-45614) folds ``-`` and ``_`` (and case) into one name, so a
client's ``X_OAuthProxy_Subject`` lands on the same key as the gateway's ``X-OAuthProxy-Subject``:
wsgiref joins the two values with a comma, the client's first. The stack here is the one
``oauthproxy serve`` runs: uvicorn, the real ``OAuthProxyApp`` with a token from a complete login,
the real ``Gateway``; behind it an MCP server under wsgiref (it answers with the ``HTTP_*`` environ it
built) and one under uvicorn (it answers with the raw header names it received).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.gateway import Gateway
from oauthproxy_adapters.testing.flow import drive, httpx_send, login
from tests.adapters.live_servers import UvicornThread, WsgirefThread, async_proxy
from tests.harness import ScriptedUpstream, make_config

SPOOF = "spoofed-by-the-client"

#: The header names the gateway sets or that a stack behind it may read as the client's identity or
#: address, in folded spelling (lower case, ``_`` as ``-``). What the client sends under any
#: spelling of these must never arrive.
PROTECTED = (
    "x-oauthproxy-subject",
    "x-oauthproxy-client-id",
    "x-oauthproxy-scopes",
    "x-oauthproxy-claim-login",
    "x-oauthproxy-claim-email",
    "x-oauthproxy-claim-email-verified",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
)

#: The attacks of issue 13, spelled as a client would.
ATTACKS = (
    ("X-OAuthProxy_Claim_email", "attacker@evil.example"),
    ("X_OAuthProxy_Subject", SPOOF),
    ("x_oauthproxy_client_id", SPOOF),
    ("X-OAUTHPROXY-SCOPES", SPOOF),
    ("X_Forwarded_For", "10.6.6.6"),
    ("X-Forwarded-For", "10.6.6.6"),
    ("x_forwarded_host", "evil.example"),
    ("X-Forwarded-Port", "1"),
    ("X-Real-IP", "10.6.6.6"),
    ("X_Real_Ip", "10.6.6.6"),
    ("True-Client-IP", "10.6.6.6"),
    ("Forwarded", "for=10.6.6.6"),
)


def folded(name: str) -> str:
    return name.lower().replace("_", "-")


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """An MCP server under WSGI: answers with every ``HTTP_*`` key of the environ it was given."""
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An MCP server under ASGI: answers with the raw header names and values it received."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    seen = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    body = json.dumps(seen).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Front:
    """``OAuthProxyApp`` + ``Gateway`` under uvicorn in front of ``mcp_base``, with a live token."""

    def __init__(self, mcp_base: str, http: httpx.Client) -> None:
        made: dict[str, Any] = {}

        def build(base: str) -> Any:
            config = make_config(issuer=base)
            made["idp"] = ScriptedUpstream(callback_url=config.callback_url)
            proxy = async_proxy(config, made["idp"])
            return OAuthProxyApp(proxy, Gateway(mcp_base + "/mcp", mount_path=config.mcp_path))

        # Believe no peer's X-Forwarded-For: the address the gateway forwards is the socket's.
        self.server = UvicornThread(build, proxy_headers=False)
        self.base = self.server.base
        self.host = urlsplit(self.base).netloc

        session = drive(login(self.base, made["idp"]), httpx_send(http))
        self.token: str = session.tokens["access_token"]
        #: What the MCP server must see under the protected names: the gateway's values, only.
        self.trusted = {
            "x-oauthproxy-subject": "idp:42",
            "x-oauthproxy-client-id": session.client["client_id"],
            "x-oauthproxy-scopes": "mcp",
            "x-oauthproxy-claim-login": "octocat",
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-host": self.host,
            "x-forwarded-proto": "http",
        }

    def send_raw(self, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
        """One request written byte for byte (no client library normalises the names)."""
        lines = [
            "POST /mcp HTTP/1.1",
            f"Host: {self.host}",
            f"Authorization: Bearer {self.token}",
            "Content-Length: 2",
            "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in headers]
        data = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n{}"
        port = urlsplit(self.base).port
        assert port is not None
        out = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                out += chunk
        head, _, body = bytes(out).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return status, body

    def stop(self) -> None:
        self.server.stop()


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def _front(mcp: WsgirefThread | UvicornThread, http: httpx.Client) -> Iterator[Front]:
    try:
        front = Front(mcp.base, http)
        try:
            yield front
        finally:
            front.stop()
    finally:
        mcp.stop()


@pytest.fixture(scope="module")
def wsgi_front(http: httpx.Client) -> Iterator[Front]:
    yield from _front(WsgirefThread(lambda _base: wsgi_echo), http)


@pytest.fixture(scope="module")
def asgi_front(http: httpx.Client) -> Iterator[Front]:
    yield from _front(UvicornThread(lambda _base: asgi_echo), http)


def check_environ(front: Front, environ: dict[str, str]) -> None:
    """Every ``HTTP_*`` key that folds to a protected name holds the gateway's value alone."""
    protected = {
        folded(key.removeprefix("HTTP_")): value
        for key, value in environ.items()
        if folded(key.removeprefix("HTTP_")) in PROTECTED
    }
    assert protected == front.trusted, environ
    assert not any(SPOOF in value for value in environ.values()), environ


def check_asgi_headers(front: Front, headers: list[list[str]]) -> None:
    """Every received name that folds to a protected one is the gateway's own, once, its value."""
    protected: dict[str, list[str]] = {}
    for name, value in headers:
        if folded(name) in PROTECTED:
            protected.setdefault(name, []).append(value)
    assert protected == {k: [v] for k, v in front.trusted.items()}, headers
    assert not any("_" in name for name, _ in headers), headers
    assert not any(SPOOF in value for _, value in headers), headers


def test_invariant_30_underscore_spellings_never_reach_a_wsgi_mcp_server(
    wsgi_front: Front,
) -> None:
    status, body = wsgi_front.send_raw(list(ATTACKS))
    assert status == 200, body
    environ = json.loads(body)
    # The two attacks of issue 13, by name: a forged email, a subject list led by the attacker.
    assert "HTTP_X_OAUTHPROXY_CLAIM_EMAIL" not in environ, environ
    assert environ["HTTP_X_OAUTHPROXY_SUBJECT"] == "idp:42", environ
    check_environ(wsgi_front, environ)


def test_invariant_30_underscore_spellings_never_reach_an_asgi_mcp_server(
    asgi_front: Front,
) -> None:
    status, body = asgi_front.send_raw(list(ATTACKS))
    assert status == 200, body
    check_asgi_headers(asgi_front, json.loads(body))


def test_invariant_30_ordinary_headers_still_pass(wsgi_front: Front) -> None:
    """The rule is live and narrow: hyphenated end-to-end headers arrive unchanged."""
    status, body = wsgi_front.send_raw(
        [("Mcp-Session-Id", "sess-1"), ("MCP-Protocol-Version", "2025-11-25"), ("X-Trace", "t1")]
    )
    assert status == 200, body
    environ = json.loads(body)
    assert environ["HTTP_MCP_SESSION_ID"] == "sess-1"
    assert environ["HTTP_MCP_PROTOCOL_VERSION"] == "2025-11-25"
    assert environ["HTTP_X_TRACE"] == "t1"
    check_environ(wsgi_front, environ)


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` with each letter in either case and each ``-`` as ``-`` or ``_``."""
    parts = [
        st.sampled_from(["-", "_"]) if c == "-" else st.sampled_from(sorted({c.lower(), c.upper()}))
        for c in name
    ]
    return st.tuples(*parts).map("".join)


SPELLED = st.sampled_from(PROTECTED).flatmap(
    lambda name: st.one_of(spellings(name), spellings(name + "-x"))
)
PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@PROPERTY
@given(names=st.lists(SPELLED, min_size=1, max_size=5))
def test_invariant_30_property_no_spelling_reaches_the_wsgi_server_as_identity(
    wsgi_front: Front, names: list[str]
) -> None:
    status, body = wsgi_front.send_raw([(name, SPOOF) for name in names])
    assert status == 200, body
    check_environ(wsgi_front, json.loads(body))


@PROPERTY
@given(names=st.lists(SPELLED, min_size=1, max_size=5))
def test_invariant_30_property_no_spelling_reaches_the_asgi_server_as_identity(
    asgi_front: Front, names: list[str]
) -> None:
    status, body = asgi_front.send_raw([(name, SPOOF) for name in names])
    assert status == 200, body
    check_asgi_headers(asgi_front, json.loads(body))
