"""The systems the comparison benchmarks run, built the same way, and the flow a client runs on each.

Three authorization servers, each as an ASGI app that also protects one trivial MCP endpoint:

``ours``
    ``OAuthProxyApp(AsyncProxy(config, keys, store, http), mcp_app)`` with a memory, SQLite (temporary
    file) or Redis (random key prefix) store. The upstream HTTP client is the project's own
    ``AsyncHttpClient`` as shipped (requests straight to its pooled httpx transport), with that
    transport replaced by the scripted upstream.
``fastmcp``
    fastmcp's ``OAuthProxy`` (an upstream-token verifier that is a dictionary look-up, so that no
    upstream call happens per MCP request), wired into a Starlette app exactly as
    ``fastmcp.server.http.create_streamable_http_app`` wires it: ``get_routes("/mcp")``, its
    ``get_middleware()`` and its ``RequireAuthMiddleware`` around the MCP endpoint. Variants:
    ``memory`` (``key_value`` ``MemoryStore``; a new upstream HTTP client per upstream call, as
    shipped), ``memory-reused`` (the same, one upstream HTTP client kept for the whole run) and
    ``default`` (no ``client_storage``: its default Fernet-encrypted file tree under a temporary
    ``FASTMCP_HOME``). Its upstream client is faked below the ``httpx2`` client, at the transport:
    the client is still constructed as shipped, only its transport is replaced.
``mcp-sdk``
    The `mcp` SDK's ``create_auth_routes`` with :class:`TrivialProvider`, a minimal in-memory
    ``OAuthAuthorizationServerProvider`` (no consent, no upstream, opaque random tokens), and the
    SDK's ``BearerAuthBackend`` + ``RequireAuthMiddleware`` around the MCP endpoint (as
    ``mcp.server.lowlevel.server`` wires them).

The complete flow: register -> authorize -> consent GET -> consent POST -> (upstream sign-in) ->
callback -> token -> one authenticated MCP request -> refresh. The mcp-sdk system has no consent and no
upstream, so its flow is register -> authorize -> token -> MCP request -> refresh.

The client is one ``httpx.AsyncClient`` per system (``ASGITransport`` in process, or TCP for loopback).
Cookies are kept per flow by :class:`Jar` and sent explicitly; httpx's own jar is given a policy that
stores nothing, so that concurrent flows on one client cannot see each other's cookies.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

BASE = "http://127.0.0.1:8000"
IDP = "https://idp.example"
IDP_Q = quote(IDP, safe="")
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
REDIRECT_Q = quote(CLIENT_REDIRECT, safe="")
JSON_CT = (("content-type", "application/json"),)
FORM_CT = (("content-type", "application/x-www-form-urlencoded"),)
#: The oauthproxy consent form as a browser posts it from the proxy's own page (spec/security.md 31).
CONSENT_CT = (*FORM_CT, ("sec-fetch-site", "same-origin"), ("origin", "null"))

CLIENT_VERIFIER = "benchmark-client-verifier-" + "x" * 40
CLIENT_CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(CLIENT_VERIFIER.encode()).digest())
    .rstrip(b"=")
    .decode()
)
REGISTRATION_BODY = json.dumps(
    {
        "redirect_uris": [CLIENT_REDIRECT],
        "client_name": "Benchmark Client",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
).encode()
MCP_BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
MCP_REPLY = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'

#: What the scripted upstream answers at its token endpoint (code exchange and refresh alike).
UPSTREAM_TOKEN = {
    "access_token": "gho_benchmark_upstream_token",
    "token_type": "bearer",
    "scope": "mcp",
    "refresh_token": "ghr_benchmark_upstream_refresh",
    "expires_in": 28800,
}
UPSTREAM_USER = {"id": 42, "login": "octocat", "name": "Octocat"}


# -- the scripted upstream -------------------------------------------------------------------------


def upstream_answer(method: str, path: str) -> tuple[int, bytes]:
    """A GitHub-shaped provider that says yes to everything (canned answers, no checks)."""
    if method == "POST" and path.endswith("/token"):
        return 200, json.dumps(UPSTREAM_TOKEN).encode()
    if path.endswith("/user"):
        return 200, json.dumps(UPSTREAM_USER).encode()
    return 404, b"{}"


def httpx_upstream_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        status, body = upstream_answer(request.method, request.url.path)
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return httpx.MockTransport(handler)


def httpx2_upstream_transport() -> Any:
    import httpx2  # noqa: PLC0415 (benchmark-only dependency of fastmcp and mcp)

    def handler(request: Any) -> Any:
        status, body = upstream_answer(request.method, request.url.path)
        return httpx2.Response(status, content=body, headers={"content-type": "application/json"})

    return httpx2.MockTransport(handler)


def upstream_login(authorize_url: str, callback_path: str) -> str:
    """The user signs in at the upstream provider; returns the callback the browser goes to."""
    state = dict(parse_qsl(urlsplit(authorize_url).query))["state"]
    return f"{callback_path}?code=upstream-code&state={quote(state, safe='')}&iss={IDP_Q}"


# -- the client side -------------------------------------------------------------------------------


def new_client(app: ASGIApp | None = None, base_url: str = BASE, **kw: Any) -> httpx.AsyncClient:
    """An httpx client on ``app`` in process (``ASGITransport``) or on ``base_url`` over TCP."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # stores nothing
    transport = httpx.ASGITransport(app=app) if app is not None else None  # type: ignore[arg-type]
    return httpx.AsyncClient(
        transport=transport, base_url=base_url, cookies=jar, follow_redirects=False, **kw
    )


class DirectResponse:
    """The part of ``httpx.Response`` the flows read."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = httpx.Headers(headers)
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class DirectClient:
    """A minimal in-process ASGI caller with ``httpx.AsyncClient``'s ``get``/``post`` shape.

    For profiling a system's own side: it does next to nothing, so a profile of a flow driven by it
    is the server's profile.
    """

    def __init__(self, app: ASGIApp, base_url: str = BASE) -> None:
        self.app = app
        parts = urlsplit(base_url)
        self.server = (parts.hostname or "127.0.0.1", parts.port or 80)

    async def request(
        self, method: str, target: str, content: bytes | str = b"", headers: Any = ()
    ) -> DirectResponse:
        path, _, query = target.partition("?")
        body = content.encode() if isinstance(content, str) else content
        raw_headers = [(b"host", f"{self.server[0]}:{self.server[1]}".encode())]
        raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if body:
            raw_headers.append((b"content-length", str(len(body)).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 50000),
            "server": self.server,
        }
        sent = False
        status = 500
        out_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # a client that never disconnects mid-request
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return DirectResponse(status, out_headers, b"".join(chunks))

    async def get(self, target: str, headers: Any = ()) -> DirectResponse:
        return await self.request("GET", target, headers=headers)

    async def post(
        self, target: str, content: bytes | str = b"", headers: Any = ()
    ) -> DirectResponse:
        return await self.request("POST", target, content=content, headers=headers)

    async def aclose(self) -> None:
        return None


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client on one asyncio connection, for the loopback benchmark.

    httpx's connection pool costs the client more CPU per request than the fastest servers here
    spend, so with it the loopback figures would measure the client. This one writes the request
    bytes and reads a ``Content-Length`` body (every system here sends one); one connection per
    worker, reopened if the server closes it.
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, target: str, content: bytes | str = b"", headers: Any = ()
    ) -> DirectResponse:
        body = content.encode() if isinstance(content, str) else content
        lines = [f"{method} {target} HTTP/1.1".encode(), b"host: " + self.host_header]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
        if body or method == "POST":
            lines.append(b"content-length: " + str(len(body)).encode())
        payload = b"\r\n".join(lines) + b"\r\n\r\n" + body
        for attempt in (1, 2):
            if self.writer is None:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(payload)
                head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.aclose()
                if attempt == 2:
                    raise
        status_line, *header_lines = head[:-4].split(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        out_headers = []
        length = 0
        close = False
        for line in header_lines:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            out_headers.append((name, value))
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise AssertionError("chunked responses are not supported by this client")
            elif name == b"connection" and value.lower() == b"close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.aclose()
        return DirectResponse(status, out_headers, data)

    async def get(self, target: str, headers: Any = ()) -> DirectResponse:
        return await self.request("GET", target, headers=headers)

    async def post(
        self, target: str, content: bytes | str = b"", headers: Any = ()
    ) -> DirectResponse:
        return await self.request("POST", target, content=content, headers=headers)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Jar:
    """The browser's cookies for one flow."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def headers(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        out = list(extra)
        if self.cookies:
            out.append(("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        return out

    def keep(self, resp: httpx.Response) -> None:
        for value in resp.headers.get_list("set-cookie"):
            name, _, rest = value.partition("=")
            cookie_value = rest.split(";", 1)[0]
            if "max-age=0" in value.lower():
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = cookie_value


def hidden_field(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def expect(resp: httpx.Response, status: int, step: str) -> httpx.Response:
    if resp.status_code != status:
        raise AssertionError(
            f"{step}: expected {status}, got {resp.status_code}: {resp.text[:300]}"
        )
    return resp


def query_param(url: str, name: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))[name]


def local(url: str, base: str) -> str:
    return url.removeprefix(base)


async def mcp_request(c: httpx.AsyncClient, access_token: str) -> None:
    headers = [
        ("authorization", f"Bearer {access_token}"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ]
    resp = expect(await c.post("/mcp", content=MCP_BODY, headers=headers), 200, "mcp request")
    assert resp.content == MCP_REPLY


async def trivial_mcp_app(scope: Scope, receive: Any, send: Any) -> None:
    """The protected MCP endpoint: reads the request and answers a fixed JSON-RPC result."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(MCP_REPLY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": MCP_REPLY})


async def noop_app(scope: Scope, receive: Any, send: Any) -> None:
    """For measuring the client alone: drains the request, answers 200 with a small body."""
    if scope["type"] != "http":
        return
    await trivial_mcp_app(scope, receive, send)


# -- a system --------------------------------------------------------------------------------------


class System:
    """One authorization server: its ASGI app, its flow, and what to release afterwards.

    ``flow(client)`` runs the complete flow and returns the final (refreshed) token response.
    """

    def __init__(
        self,
        name: str,
        app: ASGIApp,
        flow: Callable[[httpx.AsyncClient], Awaitable[Any]],
        *,
        description: str,
        requests_per_flow: int,
        close: Callable[[], Awaitable[None]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.app = app
        self.flow = flow
        self.description = description
        self.requests_per_flow = requests_per_flow
        self._close = close
        self.extra = extra or {}

    async def close(self) -> None:
        if self._close is not None:
            await self._close()


# -- ours ------------------------------------------------------------------------------------------

STORES = ("memory", "sqlite", "redis")
REDIS_URL = "redis://127.0.0.1:6379/0"


def ours_config(base: str = BASE, **fields: Any) -> Any:
    """Our configuration for the benchmarks; ``fields`` override ``ProxyConfig`` fields."""
    from oauthproxy_core import ProxyConfig, UpstreamProfile  # noqa: PLC0415
    from oauthproxy_core.bounds import Bounds  # noqa: PLC0415

    profile = UpstreamProfile(
        name="idp",
        authorize_url=IDP + "/authorize",
        token_url=IDP + "/token",
        userinfo_url=IDP + "/user",
        client_id="proxy-client",
        client_secret="upstream-client-secret",
        scopes=("read:user",),
        subject_field="id",
        issuer=IDP,
    )
    # The default bounds (500 registrations per address per hour, spec/security.md 28) would answer 429
    # after 500 flows from one benchmark address; the counting itself still runs on every request.
    big = 10**9
    bounds = Bounds(
        registrations_per_address=big,
        registrations_total=big,
        authorizations_per_address=big,
        authorizations_per_client=big,
        authorizations_total=big,
    )
    values: dict[str, Any] = {
        "issuer": base,
        "upstream": profile,
        "scopes_supported": ("mcp", "offline_access"),
        "default_scopes": ("mcp",),
        "bounds": bounds,
    }
    values.update(fields)
    return ProxyConfig(**values)


def ours_store(kind: str, tmpdir: str | None = None, max_records: int = 1_000_000) -> Any:
    from oauthproxy_adapters.stores.memory import AsyncMemoryStore  # noqa: PLC0415
    from oauthproxy_adapters.stores.sqlite import AsyncSQLiteStore  # noqa: PLC0415

    if kind == "memory":
        return AsyncMemoryStore(max_records=max_records)
    if kind == "sqlite":
        directory = tmpdir
        if directory is None:
            directory = tempfile.mkdtemp(prefix="oauthproxy-bench-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
        return AsyncSQLiteStore(os.path.join(directory, "state.db"))
    if kind == "redis":
        from oauthproxy_adapters.stores.redis import AsyncRedisStore  # noqa: PLC0415

        return AsyncRedisStore(REDIS_URL, prefix=f"oauthproxy-bench-{secrets.token_hex(6)}:")
    raise ValueError(kind)


async def purge_redis_prefix(prefix: str, limit: int = 2_000_000) -> int:
    """Delete the benchmark's Redis keys (bounded scan)."""
    import redis.asyncio  # noqa: PLC0415

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    removed = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += await client.delete(*batch)
                batch = []
            if removed >= limit:
                break
        if batch:
            removed += await client.delete(*batch)
    finally:
        await client.aclose()
    return removed


def build_ours(
    store_kind: str = "memory",
    *,
    base: str = BASE,
    token_cache: bool = True,
    store: Any = None,
    keys: Any = None,
    mcp_app: ASGIApp = trivial_mcp_app,
    config: Any = None,
) -> System:
    from oauthproxy_adapters.asgi import OAuthProxyApp  # noqa: PLC0415
    from oauthproxy_adapters.http_clients import AsyncHttpClient  # noqa: PLC0415
    from oauthproxy_adapters.keygen import new_keyring  # noqa: PLC0415
    from oauthproxy_adapters.proxy import AsyncProxy  # noqa: PLC0415

    config = config if config is not None else ours_config(base)
    keys = keys or new_keyring()
    store = store if store is not None else ours_store(store_kind)
    # As shipped (the pooled transport, no httpx.AsyncClient layer), with only the transport faked.
    http = AsyncHttpClient(transport=httpx_upstream_transport())
    proxy = AsyncProxy(config, keys, store, http, token_cache=token_cache)
    app = OAuthProxyApp(proxy, mcp_app)
    resource_q = quote(config.resource, safe="")
    callback_path = urlsplit(config.callback_url).path
    authorize = (
        f"/authorize?response_type=code&client_id={{}}&redirect_uri={REDIRECT_Q}"
        f"&state=client-state&code_challenge={CLIENT_CHALLENGE}&code_challenge_method=S256"
        f"&scope=mcp&resource={resource_q}"
    )

    async def flow(c: httpx.AsyncClient) -> Any:
        resp = expect(
            await c.post("/register", content=REGISTRATION_BODY, headers=JSON_CT), 201, "register"
        )
        client_id = resp.json()["client_id"]
        jar = Jar()
        resp = expect(await c.get(authorize.format(client_id)), 302, "authorize")
        jar.keep(resp)
        resp = expect(
            await c.get(local(resp.headers["location"], base), headers=jar.headers()),
            200,
            "consent page",
        )
        jar.keep(resp)
        html = resp.text
        form = f"txn={hidden_field(html, 'txn')}&csrf={hidden_field(html, 'csrf')}&decision=approve"
        resp = expect(
            await c.post("/consent", content=form, headers=jar.headers(*CONSENT_CT)),
            303,
            "consent approve",
        )
        jar.keep(resp)
        callback = upstream_login(resp.headers["location"], callback_path)
        resp = expect(await c.get(callback, headers=jar.headers()), 302, "callback")
        code = query_param(resp.headers["location"], "code")
        exchange = (
            f"grant_type=authorization_code&code={code}&client_id={client_id}"
            f"&redirect_uri={REDIRECT_Q}&code_verifier={CLIENT_VERIFIER}&resource={resource_q}"
        )
        resp = expect(await c.post("/token", content=exchange, headers=FORM_CT), 200, "token")
        tokens = resp.json()
        await mcp_request(c, tokens["access_token"])
        refresh = (
            f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}"
            f"&client_id={client_id}"
        )
        return expect(
            await c.post("/token", content=refresh, headers=FORM_CT), 200, "refresh"
        ).json()

    prefix = getattr(store, "prefix", None)

    async def close() -> None:
        await http.aclose()
        await store.close()
        if store_kind == "redis" and prefix:
            await purge_redis_prefix(prefix)

    return System(
        f"ours_{store_kind}" + ("" if token_cache else "_nocache"),
        app,
        flow,
        description=f"oauthproxy OAuthProxyApp + AsyncProxy, {store_kind} store",
        requests_per_flow=8,
        close=close,
        extra={"proxy": proxy, "store": store, "config": config, "keys": keys},
    )


# -- fastmcp ---------------------------------------------------------------------------------------

FASTMCP_VARIANTS = ("memory", "memory_reused", "default")


def fastmcp_home() -> str:
    """Point fastmcp's data directory (its default store) at a temporary directory.

    Must run before fastmcp is imported: its settings are read at import time.
    """
    home = os.environ.get("FASTMCP_HOME")
    if not home:
        home = tempfile.mkdtemp(prefix="fastmcp-bench-home-")
        os.environ["FASTMCP_HOME"] = home
        # Child processes (loopback servers) inherit the variable and leave the cleaning to us.
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
    os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
    return home


def build_fastmcp(variant: str = "memory", *, base: str = BASE) -> System:
    fastmcp_home()
    from fastmcp.server.auth.middleware import RequireAuthMiddleware  # noqa: PLC0415
    from fastmcp.server.auth.oauth_proxy import OAuthProxy  # noqa: PLC0415
    from fastmcp.server.auth.providers.jwt import StaticTokenVerifier  # noqa: PLC0415
    from key_value.aio.stores.memory import MemoryStore  # noqa: PLC0415
    from mcp.server.auth.routes import build_resource_metadata_url  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    # fastmcp logs warnings at construction (non-HTTPS cookies); the flow itself logs at DEBUG.
    logging.getLogger("fastmcp").setLevel(logging.ERROR)

    verifier = StaticTokenVerifier(
        tokens={
            UPSTREAM_TOKEN["access_token"]: {
                "client_id": "proxy-client",
                "scopes": ["mcp"],
                "sub": "42",
            }
        },
        required_scopes=["mcp"],
    )
    proxy = OAuthProxy(
        upstream_authorization_endpoint=IDP + "/authorize",
        upstream_token_endpoint=IDP + "/token",
        upstream_client_id="proxy-client",
        upstream_client_secret="upstream-client-secret",
        token_verifier=verifier,
        base_url=base,
        client_storage=None if variant == "default" else MemoryStore(),
        # No jwt_signing_key: as shipped, it is derived from the upstream client secret (HKDF).
    )
    transport = httpx2_upstream_transport()
    original_create = type(proxy)._create_upstream_oauth_client

    if variant == "memory_reused":
        shared = original_create(proxy)
        shared._client._transport = transport

        from contextlib import asynccontextmanager  # noqa: PLC0415

        @asynccontextmanager
        async def reused_client() -> Any:
            yield shared

        proxy._upstream_oauth_client = reused_client  # type: ignore[method-assign]
    else:

        def create_client() -> Any:
            # Constructed exactly as shipped (a fresh httpx2.AsyncClient per upstream call), then
            # only its transport is swapped for the scripted upstream.
            client = original_create(proxy)
            client._client._transport = transport
            return client

        proxy._create_upstream_oauth_client = create_client  # type: ignore[method-assign]

    routes = proxy.get_routes(mcp_path="/mcp")
    resource_url = proxy._get_resource_url("/mcp")
    metadata_url = build_resource_metadata_url(resource_url) if resource_url else None
    routes.append(
        Route(
            "/mcp",
            endpoint=RequireAuthMiddleware(
                trivial_mcp_app, proxy.required_scopes, metadata_url, proxy.challenge_scopes
            ),
            methods=["GET", "POST", "DELETE"],
        )
    )
    app = Starlette(routes=routes, middleware=proxy.get_middleware())
    resource_q = quote(f"{base}/mcp", safe="")
    authorize = (
        f"/authorize?response_type=code&client_id={{}}&redirect_uri={REDIRECT_Q}"
        f"&state=client-state&code_challenge={CLIENT_CHALLENGE}&code_challenge_method=S256"
        f"&scope=mcp&resource={resource_q}"
    )

    async def flow(c: httpx.AsyncClient) -> Any:
        resp = expect(
            await c.post("/register", content=REGISTRATION_BODY, headers=JSON_CT), 201, "register"
        )
        client_id = resp.json()["client_id"]
        jar = Jar()
        resp = expect(await c.get(authorize.format(client_id)), 302, "authorize")
        jar.keep(resp)
        resp = expect(
            await c.get(local(resp.headers["location"], base), headers=jar.headers()),
            200,
            "consent page",
        )
        jar.keep(resp)
        html = resp.text
        form = (
            f"txn_id={hidden_field(html, 'txn_id')}&csrf_token={hidden_field(html, 'csrf_token')}"
            "&submit=true&action=approve"
        )
        resp = expect(
            await c.post("/consent", content=form, headers=jar.headers(*FORM_CT)),
            302,
            "consent approve",
        )
        jar.keep(resp)
        callback = upstream_login(resp.headers["location"], "/auth/callback")
        resp = expect(await c.get(callback, headers=jar.headers()), 302, "callback")
        code = query_param(resp.headers["location"], "code")
        exchange = (
            f"grant_type=authorization_code&code={code}&client_id={client_id}"
            f"&redirect_uri={REDIRECT_Q}&code_verifier={CLIENT_VERIFIER}&resource={resource_q}"
        )
        resp = expect(await c.post("/token", content=exchange, headers=FORM_CT), 200, "token")
        tokens = resp.json()
        await mcp_request(c, tokens["access_token"])
        refresh = (
            f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}"
            f"&client_id={client_id}"
        )
        return expect(
            await c.post("/token", content=refresh, headers=FORM_CT), 200, "refresh"
        ).json()

    descriptions = {
        "memory": "fastmcp OAuthProxy, key_value MemoryStore, upstream client per call (as shipped)",
        "memory_reused": "fastmcp OAuthProxy, key_value MemoryStore, one upstream client reused",
        "default": "fastmcp OAuthProxy, default store (Fernet-encrypted file tree)",
    }
    return System(
        f"fastmcp_{variant}",
        app,
        flow,
        description=descriptions[variant],
        requests_per_flow=8,
        extra={"proxy": proxy},
    )


# -- the mcp SDK with a trivial provider -----------------------------------------------------------


class TrivialProvider:
    """A minimal in-memory ``OAuthAuthorizationServerProvider``: no consent, no upstream.

    Authorization is granted on the spot (the redirect goes straight back to the client with a
    code); tokens are opaque random strings held in dictionaries.
    """

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}
        self.codes: dict[str, Any] = {}
        self.access: dict[str, Any] = {}
        self.refresh: dict[str, Any] = {}

    async def get_client(self, client_id: str) -> Any:
        return self.clients.get(client_id)

    async def register_client(self, client_info: Any) -> None:
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: Any, params: Any) -> str:
        from mcp.server.auth.provider import AuthorizationCode, construct_redirect_uri  # noqa: PLC0415

        code = secrets.token_urlsafe(32)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or ["mcp"],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject="42",
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: Any, authorization_code: str) -> Any:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> Any:
        from mcp.server.auth.provider import AccessToken, RefreshToken  # noqa: PLC0415
        from mcp.shared.auth import OAuthToken  # noqa: PLC0415

        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = int(time.time())
        self.access[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=now + 3600,
            resource=resource,
            subject="42",
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh,
            client_id=client_id,
            scopes=scopes,
            expires_at=now + 30 * 86400,
            resource=resource,
            subject="42",
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=3600,
            refresh_token=refresh,
            scope=" ".join(scopes),
        )

    async def exchange_authorization_code(self, client: Any, authorization_code: Any) -> Any:
        self.codes.pop(authorization_code.code, None)
        return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(self, client: Any, refresh_token: str) -> Any:
        token = self.refresh.get(refresh_token)
        return token if token is not None and token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: Any, refresh_token: Any, scopes: list[str]
    ) -> Any:
        self.refresh.pop(refresh_token.token, None)
        return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> Any:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: Any) -> None:
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)


def build_sdk(*, base: str = BASE) -> System:
    from mcp.server.auth.middleware.auth_context import AuthContextMiddleware  # noqa: PLC0415
    from mcp.server.auth.middleware.bearer_auth import (  # noqa: PLC0415
        BearerAuthBackend,
        RequireAuthMiddleware,
    )
    from mcp.server.auth.provider import ProviderTokenVerifier  # noqa: PLC0415
    from mcp.server.auth.routes import (  # noqa: PLC0415
        build_resource_metadata_url,
        create_auth_routes,
    )
    from mcp.server.auth.settings import (  # noqa: PLC0415
        ClientRegistrationOptions,
        RevocationOptions,
    )
    from pydantic import AnyHttpUrl  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.middleware import Middleware  # noqa: PLC0415
    from starlette.middleware.authentication import AuthenticationMiddleware  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    provider = TrivialProvider()
    routes = create_auth_routes(
        provider,  # type: ignore[arg-type]
        AnyHttpUrl(base),
        client_registration_options=ClientRegistrationOptions(
            enabled=True, valid_scopes=["mcp"], default_scopes=["mcp"]
        ),
        revocation_options=RevocationOptions(enabled=True),
    )
    routes.append(
        Route(
            "/mcp",
            endpoint=RequireAuthMiddleware(
                trivial_mcp_app, ["mcp"], build_resource_metadata_url(AnyHttpUrl(base + "/mcp"))
            ),
        )
    )
    middleware = [
        Middleware(
            AuthenticationMiddleware, backend=BearerAuthBackend(ProviderTokenVerifier(provider))
        ),  # type: ignore[arg-type]
        Middleware(AuthContextMiddleware),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    resource_q = quote(f"{base}/mcp", safe="")
    authorize = (
        f"/authorize?response_type=code&client_id={{}}&redirect_uri={REDIRECT_Q}"
        f"&state=client-state&code_challenge={CLIENT_CHALLENGE}&code_challenge_method=S256"
        f"&scope=mcp&resource={resource_q}"
    )

    async def flow(c: httpx.AsyncClient) -> Any:
        resp = expect(
            await c.post("/register", content=REGISTRATION_BODY, headers=JSON_CT), 201, "register"
        )
        client_id = resp.json()["client_id"]
        resp = expect(await c.get(authorize.format(client_id)), 302, "authorize")
        code = query_param(resp.headers["location"], "code")
        exchange = (
            f"grant_type=authorization_code&code={code}&client_id={client_id}"
            f"&redirect_uri={REDIRECT_Q}&code_verifier={CLIENT_VERIFIER}&resource={resource_q}"
        )
        resp = expect(await c.post("/token", content=exchange, headers=FORM_CT), 200, "token")
        tokens = resp.json()
        await mcp_request(c, tokens["access_token"])
        refresh = (
            f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}"
            f"&client_id={client_id}"
        )
        return expect(
            await c.post("/token", content=refresh, headers=FORM_CT), 200, "refresh"
        ).json()

    return System(
        "mcp_sdk",
        app,
        flow,
        description="mcp SDK create_auth_routes + trivial in-memory provider (no consent, no upstream)",
        requests_per_flow=5,
        extra={"provider": provider},
    )


def build_http_floor(*, base: str = BASE) -> System:
    """No authorization at all: the MCP endpoint alone, answering every request.

    Served on the HTTP stack of ours, it is what that stack costs per MCP request with nothing
    in front of the application: the floor under ours' per-request figure. Its "flow" is one
    MCP request (there is nothing else to do), and its token is never checked.
    """

    async def flow(c: httpx.AsyncClient) -> Any:
        await mcp_request(c, "not-checked")
        return {"access_token": "not-checked"}

    return System(
        "http_floor",
        trivial_mcp_app,
        flow,
        description="the MCP endpoint alone, no authorization (the HTTP stack's floor)",
        requests_per_flow=1,
    )


def build(name: str, *, base: str = BASE) -> System:
    """Build a system by its name: ours_<store>, fastmcp_<variant>, mcp_sdk or http_floor."""
    if name.startswith("ours_"):
        rest = name.removeprefix("ours_")
        cache = not rest.endswith("_nocache")
        return build_ours(rest.removesuffix("_nocache"), base=base, token_cache=cache)
    if name.startswith("fastmcp_"):
        return build_fastmcp(name.removeprefix("fastmcp_"), base=base)
    if name == "mcp_sdk":
        return build_sdk(base=base)
    if name == "http_floor":
        return build_http_floor(base=base)
    raise ValueError(f"unknown system {name!r}")
