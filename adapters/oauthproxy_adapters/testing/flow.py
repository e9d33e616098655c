"""An MCP client's side of the OAuth flow, for tests: written once, as generators of HTTP calls.

The client registers with Dynamic Client Registration (RFC 7591 §3), sends an authorization request
with PKCE (RFC 7636 §4.1-4.3) and an RFC 8707 ``resource``, approves the proxy's consent page as a
browser submits it, passes through the upstream provider, receives the code with RFC 9207 ``iss``,
redeems it (RFC 6749 §4.1.3, RFC 7636 §4.5) and refreshes (RFC 6749 §6).

Like the core's handlers, each step is a generator: it yields a ``Call`` and receives a ``Reply``. A
driver executes the calls with whatever client a test has, so the same steps run

- in process, through ``httpx.ASGITransport`` (``asgi_client``, ``adrive_httpx``);
- against a live base URL (``httpx.Client`` and ``drive_httpx``, or ``httpx.AsyncClient``);
- through any other transport: a ``send`` function that turns a ``Call`` into a ``Reply``
  (a WSGI test client, the core's sync driver, a load balancer that picks an instance per call).

The client keeps the cookies (the steps never copy them by hand), so a flow that completes proves the
server delivered its consent cookies and honoured them. Every step checks what any flow through this
proxy must show (a 302 to the consent page, ``X-Frame-Options: DENY`` on it, the cookie names and
``Secure`` flag of spec/security.md 17, ``Cache-Control: no-store`` on registration and token
responses) and raises ``FlowError``, an ``AssertionError``, when it does not.

The upstream leg: given an ``upstream`` with a ``login(authorize_url, user)`` method (a
``FakeProvider`` from ``oauthproxy_adapters.testing.provider`` used in process), the user signs in
there without HTTP; without one, the browser follows the provider's authorization URL through the
same ``send`` (a provider served on loopback, or mounted next to the app by ``asgi_client``) and
expects to be sent back to the proxy's callback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx

from oauthproxy_core.cookies import BROWSER, CSRF, cookie_name

__all__ = [
    "CONSENT_FORM_HEADERS",
    "FORM",
    "JSON",
    "REDIRECT_URI",
    "VERIFIER",
    "Call",
    "Flow",
    "FlowError",
    "Reply",
    "Session",
    "SignIn",
    "adrive",
    "adrive_httpx",
    "approve",
    "asgi_client",
    "async_httpx_send",
    "authorization_url",
    "authorize",
    "bearer",
    "consent_fields",
    "drive",
    "drive_httpx",
    "exchange_code",
    "httpx_send",
    "login",
    "new_verifier",
    "open_consent",
    "post_form",
    "redirect_params",
    "refresh",
    "register",
    "request",
    "s256",
    "to_callback",
]

T = TypeVar("T")

FORM = (("Content-Type", "application/x-www-form-urlencoded"),)
JSON = (("Content-Type", "application/json"),)

#: The client's loopback redirect URI (RFC 8252 §7.3), as a native MCP client registers it.
REDIRECT_URI = "http://127.0.0.1:33418/callback"

#: A fixed PKCE verifier (RFC 7636 §4.1: 43 to 128 unreserved characters), the default of the steps;
#: ``login`` draws a fresh one per flow.
VERIFIER = "v" * 43 + "-verifier-of-the-client-0123456789"

#: What a browser sends with the consent form's POST from the proxy's own page: Fetch Metadata says
#: ``same-origin``, and the page's ``Referrer-Policy: no-referrer`` makes its ``Origin`` ``null``
#: (Fetch standard, "serializing a request origin"; spec/security.md 31). Chromium does exactly this:
#: tests/e2e/test_consent_browser.py records what it sends and compares it with this value.
CONSENT_FORM_HEADERS = (("sec-fetch-site", "same-origin"), ("origin", "null"))


class FlowError(AssertionError):
    """A step saw an answer no conforming flow gives; the message quotes it."""


@attrs.frozen
class Call:
    """One HTTP request a step wants sent."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@attrs.frozen
class Reply:
    """The answer to a ``Call``; header names are lower-case."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        """The body as JSON; a ``FlowError`` unless the content type says JSON."""
        _expect((self.header("content-type") or "").startswith("application/json"), "JSON", self)
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


#: A step: yields ``Call`` values, receives ``Reply`` values, returns a ``T``.
Flow = Generator[Call, Reply, T]


def _expect(condition: bool, what: str, reply: Reply | None = None) -> None:
    if not condition:
        shown = "" if reply is None else f": {reply.status} {reply.text[:300]!r}"
        raise FlowError(f"expected {what}{shown}")


# -- drivers ---------------------------------------------------------------------------------------


def drive(flow: Flow[T], send: Callable[[Call], Reply]) -> T:
    """Run ``flow`` to its end, executing each call with ``send``; return its value."""
    reply: Any = None
    try:
        while True:
            reply = send(flow.send(reply))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def adrive(flow: Flow[T], send: Callable[[Call], Awaitable[Reply]]) -> T:
    """``drive`` with an asynchronous ``send``."""
    reply: Any = None
    try:
        while True:
            reply = await send(flow.send(reply))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _reply(resp: httpx.Response) -> Reply:
    return Reply(
        resp.status_code, tuple((k.lower(), v) for k, v in resp.headers.multi_items()), resp.content
    )


def httpx_send(client: httpx.Client) -> Callable[[Call], Reply]:
    """A ``send`` over an ``httpx.Client``, whose cookie jar is the browser's."""

    def send(call: Call) -> Reply:
        resp = client.request(
            call.method, call.url, headers=list(call.headers), content=call.body or None
        )
        return _reply(resp)

    return send


def async_httpx_send(client: httpx.AsyncClient) -> Callable[[Call], Awaitable[Reply]]:
    """A ``send`` over an ``httpx.AsyncClient`` (any transport, e.g. ``httpx.ASGITransport``)."""

    async def send(call: Call) -> Reply:
        resp = await client.request(
            call.method, call.url, headers=list(call.headers), content=call.body or None
        )
        return _reply(resp)

    return send


def drive_httpx(flow: Flow[T], client: httpx.Client) -> T:
    """``drive`` over an ``httpx.Client`` (a live base URL)."""
    return drive(flow, httpx_send(client))


async def adrive_httpx(flow: Flow[T], client: httpx.AsyncClient) -> T:
    """``adrive`` over an ``httpx.AsyncClient``."""
    return await adrive(flow, async_httpx_send(client))


def asgi_client(
    app: Any, base_url: str, *, mounts: Mapping[str, Any] | None = None
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that sends requests for ``base_url`` to the ASGI ``app`` in process
    and never follows redirects (the steps follow them one by one). ``mounts`` maps further base
    URLs to ASGI apps, e.g. ``{provider.base: provider.app}`` so that the browser can sign in at a
    ``FakeProvider`` over HTTP too; anything else is refused, so no request leaves the process."""
    routes: dict[str, httpx.AsyncBaseTransport] = {"all://": httpx.MockTransport(_elsewhere)}
    for url, mounted in (mounts or {}).items():
        routes[_mount_pattern(url)] = httpx.ASGITransport(app=mounted)
    routes[_mount_pattern(base_url)] = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(mounts=routes, base_url=base_url, follow_redirects=False)


def _mount_pattern(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _elsewhere(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"asgi_client: nothing mounted for {request.url}", request=request)


# -- requests --------------------------------------------------------------------------------------


def request(
    method: str, url: str, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> Flow[Reply]:
    """One call, its reply as the value."""
    return (yield Call(method, url, headers, body))


def post_form(
    url: str, data: Mapping[str, str], headers: tuple[tuple[str, str], ...] = ()
) -> Flow[Reply]:
    return (yield Call("POST", url, FORM + headers, urlencode(data).encode()))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The ``Authorization`` header of a request made with ``token`` (RFC 6750 §2.1)."""
    return (("Authorization", f"Bearer {token}"),)


# -- PKCE --------------------------------------------------------------------------------------------


def new_verifier() -> str:
    """A fresh code verifier: 256 bits of randomness (RFC 7636 §7.1)."""
    return secrets.token_urlsafe(48)


def s256(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- the steps ---------------------------------------------------------------------------------------


@attrs.frozen
class Session:
    """What a completed ``login`` leaves: the registered client, the tokens, the redirect's
    parameters (``code``, ``state``, ``iss``) and the verifier that redeemed the code."""

    client: dict[str, Any]
    tokens: dict[str, Any]
    redirect: dict[str, str]
    verifier: str = VERIFIER


class SignIn(Protocol):
    """An upstream provider the user signs in at without HTTP: ``FakeProvider`` is one."""

    def login(self, authorize_url: str, user: Any) -> str:
        """The user approves at the provider; the provider's redirect back to the proxy."""
        ...


def register(base: str, metadata: Mapping[str, Any] | None = None) -> Flow[dict[str, Any]]:
    """RFC 7591 §3.1: a public client (``none``, PKCE) with the loopback redirect URI, unless
    ``metadata`` says otherwise; returns the registration response."""
    body: dict[str, Any] = {
        "redirect_uris": [REDIRECT_URI],
        "client_name": "Test Client",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
    body.update(metadata or {})
    reply = yield from request("POST", base + "/register", JSON, json.dumps(body).encode())
    _expect(reply.status == 201, "201 from /register", reply)
    _expect(reply.header("cache-control") == "no-store", "Cache-Control: no-store", reply)
    client: dict[str, Any] = reply.json()
    _expect(client.get("redirect_uris") == body["redirect_uris"], "the redirect URIs echoed", reply)
    return client


def authorization_url(
    base: str, client: Mapping[str, Any], *, verifier: str = VERIFIER, **params: str | None
) -> str:
    """The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2) with ``state``
    ``client-state-1`` and ``resource`` ``base + "/mcp"``: ``params`` add or replace query
    parameters, and a ``None`` value leaves one out."""
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "state": "client-state-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "resource": base + "/mcp",
    }
    query.update(params)
    return base + "/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def _check_cookies(base: str, reply: Reply, name: str) -> None:
    # spec/security.md 17: __Host- and Secure on https; plain names without Secure on http loopback.
    secure = base.startswith("https://")
    for cookie in reply.header_values("set-cookie"):
        _expect(cookie.startswith(cookie_name(name, secure)), f"a {name} cookie", reply)
        _expect(("; secure" in cookie.lower()) is secure, f"Secure={secure} on {cookie}", reply)


def open_consent(
    base: str, client: Mapping[str, Any], *, verifier: str = VERIFIER, **params: str | None
) -> Flow[dict[str, str]]:
    """authorize -> the consent page; returns the form's hidden fields (``txn``, ``csrf``).
    ``params`` go to ``authorization_url``."""
    url = authorization_url(base, client, verifier=verifier, **params)
    reply = yield from request("GET", url)
    _expect(reply.status == 302, "302 from /authorize", reply)
    consent_url = reply.header("location") or ""
    _expect(
        consent_url.startswith(base + "/consent"),
        f"a redirect to the consent page, not {consent_url!r}",
    )
    page = yield from request("GET", consent_url)
    _expect(page.status == 200, "the consent page", page)
    _expect(page.header("x-frame-options") == "DENY", "X-Frame-Options: DENY", page)
    # The CSRF cookie (the browser's secret, spec/security.md 31) is set on the first page a client
    # sees, then kept.
    _check_cookies(base, page, CSRF)
    return consent_fields(page.text)


def consent_fields(html: str) -> dict[str, str]:
    """The hidden ``txn`` and ``csrf`` fields of the consent page."""
    out = {}
    for name in ("txn", "csrf"):
        marker = f'name="{name}" value="'
        start = html.find(marker)
        if start < 0:
            raise FlowError(f"the consent page has no {name} field")
        start += len(marker)
        out[name] = html[start : html.index('"', start)]
    return out


def approve(base: str, fields: Mapping[str, str], decision: str = "approve") -> Flow[Reply]:
    """The consent form's button (``approve`` or ``deny``), as a browser submits it from the proxy's
    own page."""
    data = {**fields, "decision": decision}
    return (yield from post_form(base + "/consent", data, CONSENT_FORM_HEADERS))


def to_callback(
    base: str,
    client: Mapping[str, Any],
    *,
    upstream: SignIn | None = None,
    user: Any = None,
    verifier: str = VERIFIER,
    **params: str | None,
) -> Flow[str]:
    """authorize -> consent page -> approve (303) -> the provider; returns the URL of the proxy's
    callback the provider sends the browser back to (not yet requested)."""
    fields = yield from open_consent(base, client, verifier=verifier, **params)
    reply = yield from approve(base, fields)
    _expect(reply.status == 303, "303 from the consent approval", reply)
    # The binding cookie, named for the transaction (spec/security.md 11, 17).
    binding = cookie_name(BROWSER, base.startswith("https://")) + "_"
    cookies = reply.header_values("set-cookie")
    _expect(any(c.startswith(binding) for c in cookies), "the binding cookie", reply)
    upstream_url = reply.header("location") or ""
    _expect(bool(upstream_url), "a redirect to the provider", reply)
    if upstream is not None:
        return upstream.login(upstream_url, user)
    at_provider = yield from request("GET", upstream_url)
    _expect(at_provider.status in (302, 303), "the provider's redirect back", at_provider)
    callback = at_provider.header("location") or ""
    _expect(callback.startswith(base), f"a redirect to the proxy, not {callback!r}", at_provider)
    return callback


def redirect_params(reply: Reply, redirect_uri: str) -> dict[str, str]:
    """The query of a 302 to the client's ``redirect_uri``, each parameter once."""
    _expect(reply.status == 302, "302 to the client", reply)
    location = reply.header("location") or ""
    _expect(location.startswith(redirect_uri + "?"), f"a redirect to {redirect_uri}", reply)
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    _expect(all(len(v) == 1 for v in query.values()), f"no repeated parameter in {location}")
    return {k: v[0] for k, v in query.items()}


def authorize(
    base: str,
    client: Mapping[str, Any],
    *,
    upstream: SignIn | None = None,
    user: Any = None,
    verifier: str = VERIFIER,
    state: str = "client-state-1",
    **params: str | None,
) -> Flow[dict[str, str]]:
    """The whole front channel: ``to_callback``, then the callback and the redirect to the client.
    Returns the redirect's parameters after checking ``state`` and RFC 9207 ``iss``."""
    callback = yield from to_callback(
        base, client, upstream=upstream, user=user, verifier=verifier, state=state, **params
    )
    reply = yield from request("GET", callback)
    found = redirect_params(reply, client["redirect_uris"][0])
    _expect(found.get("state") == state, f"state {state!r} back, not {found}")
    _expect(found.get("iss") == base, f"iss {base!r} (RFC 9207), not {found}")
    _expect(bool(found.get("code")), f"a code, not {found}")
    return found


def _client_auth(client: Mapping[str, Any]) -> dict[str, str]:
    # client_secret_post (RFC 6749 §2.3.1) for a confidential client; a public one sends its id.
    out = {"client_id": client["client_id"]}
    if client.get("token_endpoint_auth_method") == "client_secret_post":
        out["client_secret"] = client["client_secret"]
    return out


def exchange_code(
    base: str,
    client: Mapping[str, Any],
    code: str,
    *,
    verifier: str = VERIFIER,
    resource: str | None = None,
) -> Flow[dict[str, Any]]:
    """RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5); returns the token response."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": verifier,
        "resource": resource if resource is not None else base + "/mcp",
        **_client_auth(client),
    }
    reply = yield from post_form(base + "/token", form)
    _expect(reply.status == 200, "200 from /token", reply)
    _expect(reply.header("cache-control") == "no-store", "Cache-Control: no-store", reply)
    tokens: dict[str, Any] = reply.json()
    _expect(tokens.get("token_type") == "Bearer", "token_type Bearer", reply)
    _expect(bool(tokens.get("access_token")), "an access token", reply)
    _expect(bool(tokens.get("refresh_token")), "a refresh token", reply)
    return tokens


def refresh(base: str, client: Mapping[str, Any], refresh_token: str) -> Flow[dict[str, Any]]:
    """RFC 6749 §6; returns the token response (a rotated refresh token among it)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **_client_auth(client)}
    reply = yield from post_form(base + "/token", form)
    _expect(reply.status == 200, "200 from /token (refresh)", reply)
    tokens: dict[str, Any] = reply.json()
    return tokens


def login(
    base: str,
    upstream: SignIn | None = None,
    user: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    resource: str | None = None,
) -> Flow[Session]:
    """Register, authorize through consent and the provider, and redeem the code, with a fresh
    PKCE verifier. ``resource`` defaults to ``base + "/mcp"``."""
    verifier = new_verifier()
    client = yield from register(base, metadata)
    resource_param = {} if resource is None else {"resource": resource}
    redirect = yield from authorize(
        base, client, upstream=upstream, user=user, verifier=verifier, **resource_param
    )
    tokens = yield from exchange_code(
        base, client, redirect["code"], verifier=verifier, resource=resource
    )
    return Session(client=client, tokens=tokens, redirect=redirect, verifier=verifier)
