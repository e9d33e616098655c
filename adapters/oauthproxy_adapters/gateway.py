"""The gateway: a streaming ASGI reverse proxy from the protected ``mcp_path`` to an MCP server.

``oauthproxy serve`` puts ``OAuthProxyApp(proxy, Gateway(upstream_url))`` in front of an MCP server
written in any language. ``OAuthProxyApp`` verifies the bearer token first; only a request carrying
a verified ``Principal`` (``scope["state"]["oauthproxy_principal"]``) reaches the gateway, which
forwards it and streams the answer back.

What is forwarded
    The method, the path (``mcp_path`` maps onto the path of ``upstream_url``; a subpath is
    appended: ``/mcp/x`` -> ``<upstream_url>/x``), the raw query string, the body (streamed) and the
    end-to-end headers. The response (status, headers, body) is streamed back chunk by chunk and
    never buffered, so Server-Sent Events (``text/event-stream``) reach the client as they are
    produced. Bodies are passed through byte for byte (no decompression).

What is removed from the request (so a client cannot spoof identity or reach around the proxy)
    ``Authorization`` (the proxy's access token is for the proxy; the upstream never sees it: no token
    passthrough, spec/security.md 18), ``Cookie`` (the proxy's browser cookies), ``Host`` (set to the
    upstream's), ``Expect``, and the hop-by-hop headers of RFC 9110 §7.6.1 (``Connection`` and every
    header it names, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
    ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Authorization``).

    Identity and forwarding headers, however they are spelled (spec/security.md 30). A server that
    builds a CGI-style environment (WSGI's ``HTTP_*`` keys, PHP-FPM, Rack) folds case, ``-`` and
    ``_`` into one name: a client's ``X_OAuthProxy_Subject`` would land on the same key as the
    gateway's ``X-OAuthProxy-Subject`` (Puma CVE-2024-45614 was this with ``X-Forwarded-For``).
    So a client header is dropped when its name, lower-cased with every character other than a
    letter or digit read as ``-``, starts with one of ``PROTECTED_HEADER_PREFIXES``: ``x-oauthproxy``
    (every identity header), ``x-forwarded`` (``-for``, ``-host``, ``-proto``, ``-port``,
    ``-prefix``, ...), ``forwarded`` (RFC 7239), and the client-address headers other stacks trust
    (``x-real-ip``, ``x-client-ip``, ``true-client-ip``, ``x-cluster-client-ip``,
    ``cf-connecting-ip``, ``fastly-client-ip``, ``x-original-forwarded-for``). The client's own
    ``X-Forwarded-For`` is dropped like the rest: the gateway sends the address the proxy itself
    determined (uvicorn takes it from a trusted peer's ``X-Forwarded-For``, ``[server]
    forwarded_allow_ips``), never a chain the client wrote.

    Besides, only names made of letters, digits and ``-`` are forwarded: a name with ``_`` (or
    ``.`` or any other token character) is dropped, whatever it says. nginx does the same by
    default (``underscores_in_headers off``, ``ignore_invalid_headers on``) for the same reason:
    no stack behind the gateway can then confuse a client's header with one the gateway set.

What is added: the trusted identity headers
    ================================  ============================================================
    ``X-OAuthProxy-Subject``          the user: ``<provider>:<upstream user id>`` (``github:4242``);
                                      for a machine client's token (client credentials grant),
                                      its configured ``subject`` (``service:ci-bot``), never
                                      spelled like a user's (spec/security.md 36)
    ``X-OAuthProxy-Client-Id``        the MCP client the user authorized, or the machine client
    ``X-OAuthProxy-Scopes``           the token's scopes, space-separated
    ``X-OAuthProxy-Groups``           the groups the ``[access]`` decision saw (the groups claim,
                                      GitHub ``org`` and ``org/team`` memberships), comma-separated;
                                      a ``,`` inside a name arrives as ``%2C``. Absent: no groups
    ``X-OAuthProxy-Claim-<name>``     one per identity claim from the upstream userinfo (``login``,
                                      ``email``, ``name``, ``preferred_username``, ...). ``<name>`` keeps
                                      ``[A-Za-z0-9-]``; any other character becomes ``-``
                                      (``X-OAuthProxy-Claim-preferred-username``)
    ``X-Forwarded-For``               the client's address as the proxy sees it (one address)
    ``X-Forwarded-Host``              the ``Host`` the client used
    ``X-Forwarded-Proto``             ``http`` or ``https`` as seen by the proxy
    ================================  ============================================================

    Values have control characters (CR, LF, NUL, ...) removed, then every byte of their UTF-8 form
    outside visible ASCII, and ``%`` itself, percent-encoded (RFC 3986 §2.1): ASCII values arrive
    unchanged, ``José`` arrives as ``Jos%C3%A9`` (``urllib.parse.unquote`` restores it).

    The MCP server may trust these headers ONLY if it is reachable through the gateway alone (bind
    it to loopback or a private network): the gateway guarantees that a client cannot set them,
    under any spelling a server stack folds onto them (above), not that nobody can reach the server
    directly.

Policy (``policy=GatewayPolicy(...)``, ``gateway_policy.py``)
    With ``[[gateway.tools]]`` rules the gateway reads JSON-RPC request bodies (bounded) and refuses
    a ``tools/call`` the token may not make (403, with a step-up challenge when scopes would allow
    it), and removes the tools a user may not call from ``tools/list`` answers, plain JSON or
    Server-Sent Events (spec/security.md 38). With ``forward_upstream_token`` it adds
    ``X-OAuthProxy-Upstream-Token``, the user's provider token. Without either, none of it runs.

Errors
    The upstream unreachable (connection refused, DNS, reset before a response): 502
    ``{"error": "bad_gateway"}``. No response headers within ``timeout`` seconds (connect included):
    504 ``{"error": "gateway_timeout"}``. A path outside ``mount_path``: 404. A path with ``.`` or
    ``..`` segments or a backslash: 400 (they could reach upstream paths outside the mount). A request
    without a verified principal (the gateway used without ``OAuthProxyApp``): 401. WebSocket
    connections are refused. Once the response has started, an upstream failure ends the response.
    The body of a response is not time-limited (SSE streams may idle); it ends when either side
    closes, and a client disconnect closes the upstream stream.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import logging
import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from oauthproxy_core.handlers.bearer import Principal

from .asgi import (
    MCP_CORS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    principal_from_scope,
    send_response,
)
from .gateway_policy import GatewayPolicy, ListingError, ListingFilter, Prepared, listing_filter
from .gateway_policy import prepare as prepare_request

__all__ = [
    "IDENTITY_HEADER_PREFIX",
    "PROTECTED_HEADER_PREFIXES",
    "Gateway",
    "GatewayPolicy",
    "folded_header_name",
    "identity_headers",
]

log = logging.getLogger("oauthproxy.gateway")

IDENTITY_HEADER_PREFIX = "x-oauthproxy-"
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0

# RFC 9110 §7.6.1: "Connection" and the fields it lists are for one hop only; plus the classic
# hop-by-hop set (RFC 2616 §13.5.1) that intermediaries still send.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = _HOP_BY_HOP | {
    "authorization",
    "cookie",
    "host",
    "expect",  # 100-continue is answered by our own server; the upstream gets the body at once
}
#: Folded names (``folded_header_name``) of the headers the gateway sets, or that a stack behind it
#: may read as the client's identity or address; a client header whose folded name starts with one
#: of these is dropped (spec/security.md 30).
PROTECTED_HEADER_PREFIXES: tuple[str, ...] = (
    IDENTITY_HEADER_PREFIX.rstrip("-"),
    "x-forwarded",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
)
# RFC 9110 §5.1 allows more token characters in a name; nginx forwards only these by default.
_FORWARDABLE_NAME = re.compile(r"[a-z0-9-]+")
_FOLD = re.compile(r"[^a-z0-9]")
_RESPONSE_DROP = _HOP_BY_HOP | {"content-length"}  # re-added only when the upstream sent it
_CLAIM_NAME_CHARS = re.compile(r"[^A-Za-z0-9-]")
# Visible ASCII except "%": left as is by the value encoding.
_SAFE_VALUE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

_BAD_GATEWAY = (502, {"error": "bad_gateway"})
_GATEWAY_TIMEOUT = (504, {"error": "gateway_timeout"})
_NOT_FOUND = (404, {"error": "not_found"})
_BAD_PATH = (400, {"error": "invalid_request", "error_description": "bad path"})
_UNAUTHENTICATED = (401, {"error": "invalid_token", "error_description": "no verified principal"})


def _header_value(value: str) -> str:
    text = "".join(c for c in value if unicodedata.category(c) != "Cc")
    return quote(text.strip(), safe=_SAFE_VALUE_CHARS)


def folded_header_name(name: str) -> str:
    """``name`` as every server stack reads it: lower case, any character but a letter or digit
    as ``-`` (CGI-style environments turn ``-`` into ``_``; some turn every other one too)."""
    return _FOLD.sub("-", name.lower())


def _dropped_name(name: str) -> bool:
    """A lower-cased client header name the gateway never forwards (spec/security.md 30)."""
    if not _FORWARDABLE_NAME.fullmatch(name):
        return True  # "_" or another character some stack folds: never forwarded
    # Letters, digits and "-" only: the name is its own folded form.
    return name.startswith(PROTECTED_HEADER_PREFIXES)


def identity_headers(principal: Principal) -> list[tuple[str, str]]:
    """The trusted ``X-OAuthProxy-*`` headers for ``principal`` (see the module docstring)."""
    headers = [
        ("X-OAuthProxy-Subject", _header_value(principal.subject)),
        ("X-OAuthProxy-Client-Id", _header_value(principal.client_id)),
        ("X-OAuthProxy-Scopes", " ".join(_header_value(s) for s in principal.scopes)),
    ]
    if principal.groups:
        listed = ",".join(_header_value(g).replace(",", "%2C") for g in principal.groups)
        headers.append(("X-OAuthProxy-Groups", listed))
    seen: set[str] = set()
    for name, value in principal.claims:
        clean = _CLAIM_NAME_CHARS.sub("-", name).strip("-")
        if not clean or clean.lower() in seen:
            continue
        seen.add(clean.lower())
        headers.append((f"X-OAuthProxy-Claim-{clean}", _header_value(value)))
    return headers


def _no_cookies() -> http.cookiejar.CookieJar:
    # The shared client must not collect the upstream's Set-Cookie headers (they belong to the MCP
    # client and are passed through); a jar that accepts nothing keeps it stateless.
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class Gateway:
    """ASGI app forwarding ``mount_path`` (and below) to ``upstream_url``; see the module docstring.

    ``client``: an ``httpx.AsyncClient`` to use (the caller closes it); by default the gateway owns
    one pooled client, closed by ``aclose()`` or at ASGI lifespan shutdown. ``timeout``: seconds to
    wait for the upstream's response headers (504 after that).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        mount_path: str = "/mcp",
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        policy: GatewayPolicy | None = None,
    ) -> None:
        url = httpx.URL(upstream_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("upstream_url must be an absolute http(s) URL")
        if url.query or url.fragment:
            raise ValueError("upstream_url must not have a query or fragment")
        self.upstream_url = url
        self._base_path = url.raw_path.decode("ascii").rstrip("/")
        self.mount_path = mount_path.rstrip("/")
        self.timeout = timeout
        #: Tool rules and upstream-token forwarding (gateway_policy.py); ``None`` when neither is
        #: configured, so that a plain gateway does no work per request for them.
        self.policy = policy if policy is not None and policy.active else None
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
            cookies=_no_cookies(),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "websocket":
            # Not proxied: refuse the handshake (ASGI: close before accept -> HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            return
        target = self._target(scope)
        if isinstance(target, tuple):
            await _send_json(send, *target)
            return
        principal = principal_from_scope(scope)
        if principal is None:
            await _send_json(send, *_UNAUTHENTICATED)
            return
        await self._forward(scope, receive, send, target, principal)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _target(self, scope: Scope) -> httpx.URL | tuple[int, dict[str, str]]:
        path: str = scope["path"]
        mount = self.mount_path
        if mount and path != mount and not path.startswith(mount + "/"):
            return _NOT_FOUND
        suffix = path[len(mount) :]
        if "\\" in suffix or any(seg in (".", "..") for seg in suffix.split("/")):
            return _BAD_PATH
        raw_path = scope.get("raw_path")
        raw_mount = mount.encode("ascii", "ignore")
        if isinstance(raw_path, bytes) and raw_path.startswith(raw_mount):
            raw_suffix = raw_path[len(raw_mount) :].split(b"?", 1)[0]
        else:
            raw_suffix = quote(suffix, safe="/:@!$&'()*+,;=-._~").encode("ascii")
        target = self._base_path.encode("ascii") + raw_suffix
        if not target:
            target = b"/"
        query: bytes = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        return self.upstream_url.copy_with(raw_path=target)

    def _request_headers(self, scope: Scope, principal: Principal) -> list[tuple[bytes, bytes]]:
        raw: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        named_in_connection: set[str] = set()
        for k, v in raw:
            if k.lower() == b"connection":
                named_in_connection |= {
                    t.strip().lower() for t in v.decode("latin-1").split(",") if t.strip()
                }
        headers: list[tuple[bytes, bytes]] = []
        host = ""
        for k, v in raw:
            name = k.decode("latin-1").lower()
            if name == "host":
                host = v.decode("latin-1")
            if name in _REQUEST_DROP or name in named_in_connection or _dropped_name(name):
                continue
            headers.append((name.encode("latin-1"), v))
        client = scope.get("client")
        extra: list[tuple[str, str]] = []
        if client:
            # uvicorn may have taken the address from a trusted peer's X-Forwarded-For, whose
            # entries can carry obs-text (bytes 0x80-0xFF, which HTTP/1.1 lets through): encoded
            # like every value the gateway sets, never sent raw.
            extra.append(("X-Forwarded-For", _header_value(str(client[0]))))
        if host:
            extra.append(("X-Forwarded-Host", _header_value(host)))
        extra.append(("X-Forwarded-Proto", "https" if scope.get("scheme") == "https" else "http"))
        extra += identity_headers(principal)
        headers += [(k.lower().encode("ascii"), v.encode("ascii")) for k, v in extra]
        return headers

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: httpx.URL,
        principal: Principal,
    ) -> None:
        prepared: Prepared | None = None
        if self.policy is not None:
            try:
                outcome = await prepare_request(self.policy, scope, receive, principal)
            except ClientDisconnected:
                return
            if not isinstance(outcome, Prepared):
                await send_response(send, outcome)
                return
            prepared = outcome
        headers = self._request_headers(scope, principal)
        content: bytes | AsyncIterator[bytes] | None
        body_done = asyncio.Event()
        if prepared is not None and prepared.body is not None:
            headers = prepared.headers(headers)
            content = prepared.body
            body_done.set()
        else:
            if prepared is not None:
                headers = prepared.headers(headers)
            has_body = any(
                (k == b"content-length" and v.strip() not in (b"", b"0"))
                or k == b"transfer-encoding"
                for k, v in scope.get("headers", ())
            )
            content = _request_body(receive, body_done) if has_body else None
            if not has_body:
                body_done.set()
        request = httpx.Request(
            scope["method"],
            target,
            headers=headers,
            content=content,
            extensions={
                "timeout": httpx.Timeout(
                    connect=CONNECT_TIMEOUT, read=None, write=self.timeout, pool=self.timeout
                ).as_dict()
            },
        )
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            await _send_json(send, *_GATEWAY_TIMEOUT)
            return
        except ClientDisconnected:
            return  # the client went away before its body was complete: nobody to answer
        except httpx.HTTPError as exc:
            # Never the query (it is the client's) nor userinfo from the configured URL.
            where = target.copy_with(query=None, userinfo=b"")
            log.warning("gateway: upstream %s unreachable (%s)", where, exc.__class__.__name__)
            await _send_json(send, *_BAD_GATEWAY)
            return
        listing: ListingFilter | None = None
        if prepared is not None and prepared.filter_listing and self.policy is not None:
            if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
                # Asked for identity; a compressed answer cannot be read, so it is not passed on.
                await response.aclose()
                await _send_json(send, *_BAD_GATEWAY)
                return
            listing = listing_filter(self.policy, principal, response.headers.get("content-type"))
        try:
            await self._stream_back(response, receive, send, body_done, listing)
        finally:
            await response.aclose()

    async def _stream_back(
        self,
        response: httpx.Response,
        receive: Receive,
        send: Send,
        body_done: asyncio.Event,
        listing: ListingFilter | None = None,
    ) -> None:
        named = {
            t.strip().lower()
            for v in response.headers.get_list("connection")
            for t in v.split(",")
            if t.strip()
        }
        out: list[tuple[bytes, bytes]] = []
        for k, v in response.headers.raw:
            name = k.decode("latin-1").lower()
            if name in _RESPONSE_DROP or name in named:
                continue
            out.append((name.encode("latin-1"), v))
        length = response.headers.get("content-length")
        if length is not None and "transfer-encoding" not in response.headers and listing is None:
            out.append((b"content-length", length.encode("latin-1")))
        present = {k for k, _ in out}
        out += [
            (k.lower().encode("ascii"), v.encode("ascii"))
            for k, v in MCP_CORS
            if k.lower().encode("ascii") not in present
        ]
        start = {"type": "http.response.start", "status": response.status_code, "headers": out}
        started = False
        if listing is None or not listing.buffers:
            await send(start)
            started = True

        async def pump() -> None:
            nonlocal started
            async for raw in response.aiter_raw():
                chunk = raw if listing is None else listing.feed(raw)
                if chunk:
                    # One ASGI message per upstream chunk: uvicorn writes it out at once (SSE).
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if listing is not None:
                rest = listing.finish()
                if not started:
                    size = str(len(rest)).encode("ascii")
                    await send({**start, "headers": [*out, (b"content-length", size)]})
                    started = True
                if rest:
                    await send({"type": "http.response.body", "body": rest, "more_body": True})

        pump_task = asyncio.ensure_future(pump())
        waiters: set[asyncio.Future[Any]] = {pump_task}
        watcher: asyncio.Future[Any] | None = None
        if body_done.is_set():
            watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
            waiters.add(watcher)
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        if pump_task not in done:
            return  # the client went away: stop reading the upstream (closed by the caller)
        try:
            pump_task.result()
        except httpx.HTTPError as exc:
            # Returning without the final message makes the server abort the response, so the
            # client sees a truncated stream rather than a clean end.
            log.warning("gateway: upstream stream ended early (%s)", exc.__class__.__name__)
            if not started:
                await _send_json(send, *_BAD_GATEWAY)
            return
        except ListingError as exc:
            # spec/security.md 38: an answer that must be filtered and cannot be is not passed on;
            # cut short once started, replaced by a 502 before.
            log.warning("gateway: upstream answer not filterable (%s)", exc)
            if not started:
                await _send_json(send, *_BAD_GATEWAY)
            return
        except OSError:
            return  # writing to the client failed: it disconnected
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _request_body(receive: Receive, done: asyncio.Event) -> AsyncIterator[bytes]:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # A truncated body must not reach the MCP server as if complete (with its declared
                # Content-Length, h11 refuses to end it short: that escaped as an exception).
                raise ClientDisconnected
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
    finally:
        done.set()


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_json(send: Send, status: int, body: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *[(k.lower().encode(), v.encode()) for k, v in MCP_CORS],
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
