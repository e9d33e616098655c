"""The MCP client's side of the OAuth flow, written once as generators of HTTP calls.

Like the core's handlers, a flow step yields ``Call`` values and receives ``Reply`` values; a small
driver executes them with whatever client a test has: httpx over a real socket, httpx through an ASGI
transport, or Flask's test client. The client keeps the cookies (the flow never copies them by hand), so
a flow that completes proves the adapter delivered the consent cookies and honoured them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx

from oauthproxy_core.cookies import BROWSER, CSRF
from tests.harness import CONSENT_FORM_HEADERS, VERIFIER, ScriptedUpstream, UpstreamUser

T = TypeVar("T")

FORM = (("Content-Type", "application/x-www-form-urlencoded"),)
JSON = (("Content-Type", "application/json"),)


@attrs.frozen
class Call:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@attrs.frozen
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        assert (self.header("content-type") or "").startswith("application/json"), self
        return json.loads(self.body)


Flow = Generator[Call, Reply, T]


def drive(flow: Flow[T], send: Callable[[Call], Reply]) -> T:
    reply: Any = None
    try:
        while True:
            reply = send(flow.send(reply))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(flow: Flow[T], send: Callable[[Call], Awaitable[Reply]]) -> T:
    reply: Any = None
    try:
        while True:
            reply = await send(flow.send(reply))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive_httpx(flow: Flow[T], client: httpx.AsyncClient) -> T:
    """``adrive`` with an httpx client (over any transport, e.g. ``httpx.ASGITransport``)."""

    async def send(call: Call) -> Reply:
        resp = await client.request(
            call.method, call.url, headers=list(call.headers), content=call.body or None
        )
        return Reply(
            resp.status_code,
            tuple((k.lower(), v) for k, v in resp.headers.multi_items()),
            resp.content,
        )

    return await adrive(flow, send)


def request(
    method: str, url: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> Flow[Reply]:
    return (yield Call(method, url, headers, body))


def post_form(
    url: str, data: dict[str, str], headers: tuple[tuple[str, str], ...] = ()
) -> Flow[Reply]:
    return (yield Call("POST", url, FORM + headers, urlencode(data).encode()))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {token}"),)


@attrs.frozen
class Session:
    client: dict[str, Any]
    tokens: dict[str, Any]
    redirect: dict[str, str]


def register(base: str) -> Flow[dict[str, Any]]:
    body = {
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "client_name": "Adapter Test Client",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    reply = yield from request("POST", base + "/register", JSON, json.dumps(body).encode())
    assert reply.status == 201, reply
    assert reply.header("cache-control") == "no-store"
    client: dict[str, Any] = reply.json()
    assert client["redirect_uris"] == body["redirect_uris"]
    return client


def open_consent(base: str, client: dict[str, Any]) -> Flow[dict[str, str]]:
    """authorize -> consent GET; returns the consent form's hidden fields."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "state": "client-state-1",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "resource": base + "/mcp",
    }
    reply = yield from request("GET", base + "/authorize?" + urlencode(query))
    assert reply.status == 302, reply
    consent_url = reply.header("location")
    assert consent_url is not None and consent_url.startswith(base + "/consent"), consent_url
    page = yield from request("GET", consent_url)
    assert page.status == 200, page
    assert page.header("x-frame-options") == "DENY"
    # http loopback issuer: plain cookie names, no __Host- prefix, no Secure (spec/security.md 17). The
    # CSRF cookie (the browser's secret) is set on the first page a client sees, then kept.
    for cookie in page.header_values("set-cookie"):
        assert cookie.startswith(CSRF + "=") and "secure" not in cookie.lower(), cookie
    return consent_fields(page.body.decode())


def authorize(
    base: str, upstream: ScriptedUpstream, client: dict[str, Any], user: UpstreamUser
) -> Flow[dict[str, str]]:
    """authorize -> consent GET -> consent POST (303) -> upstream login -> callback -> redirect."""
    fields = yield from open_consent(base, client)
    reply = yield from approve(base, fields)
    assert reply.status == 303, reply
    # The binding cookie, named for the transaction, plain on http loopback (spec/security.md 11, 17).
    assert any(c.startswith(BROWSER + "_") for c in reply.header_values("set-cookie")), reply
    upstream_url = reply.header("location")
    assert upstream_url is not None
    callback = upstream.login(upstream_url, user)
    reply = yield from request("GET", callback)
    assert reply.status == 302, reply
    location = reply.header("location")
    assert location is not None and location.startswith(client["redirect_uris"][0] + "?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == "client-state-1" and params["iss"] == base and params["code"]
    return params


def approve(base: str, fields: dict[str, str]) -> Flow[Reply]:
    """The consent form's Approve button, as a browser submits it from the proxy's own page."""
    return (
        yield from post_form(
            base + "/consent", {**fields, "decision": "approve"}, CONSENT_FORM_HEADERS
        )
    )


def consent_fields(html: str) -> dict[str, str]:
    out = {}
    for name in ("txn", "csrf"):
        marker = f'name="{name}" value="'
        start = html.index(marker) + len(marker)
        out[name] = html[start : html.index('"', start)]
    return out


def exchange_code(base: str, client: dict[str, Any], code: str) -> Flow[dict[str, Any]]:
    reply = yield from post_form(
        base + "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
            "resource": base + "/mcp",
        },
    )
    assert reply.status == 200, reply
    assert reply.header("cache-control") == "no-store"
    tokens: dict[str, Any] = reply.json()
    assert tokens["token_type"] == "Bearer" and tokens["access_token"] and tokens["refresh_token"]
    return tokens


def refresh(base: str, client: dict[str, Any], refresh_token: str) -> Flow[dict[str, Any]]:
    reply = yield from post_form(
        base + "/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client["client_id"],
        },
    )
    assert reply.status == 200, reply
    tokens: dict[str, Any] = reply.json()
    return tokens


def login(base: str, upstream: ScriptedUpstream, user: UpstreamUser | None = None) -> Flow[Session]:
    """Register, authorize through consent and the upstream, and redeem the code."""
    client = yield from register(base)
    redirect = yield from authorize(
        base, upstream, client, user or UpstreamUser(id=42, login="octocat")
    )
    tokens = yield from exchange_code(base, client, redirect["code"])
    return Session(client=client, tokens=tokens, redirect=redirect)


def httpx_send(client: Any) -> Callable[[Call], Reply]:
    """A ``send`` for ``drive`` over an ``httpx.Client``, whose cookie jar is the browser's."""

    def send(call: Call) -> Reply:
        r = client.request(call.method, call.url, headers=list(call.headers), content=call.body)
        return Reply(
            r.status_code, tuple((k.lower(), v) for k, v in r.headers.multi_items()), r.content
        )

    return send
