"""Embedding the adapters in real frameworks, each through a complete flow.

- ``OAuthProxyApp`` inside a Starlette application, two ways: as middleware around the app, and as a
  catch-all ``Mount`` beside the app's own routes. The app's routes keep working, and the principal
  reaches a Starlette endpoint as ``request.state.oauthproxy_principal`` (httpx ``ASGITransport``).
- ``OAuthProxyWSGI`` inside Flask (``app.wsgi_app = OAuthProxyWSGI(proxy, app.wsgi_app)``), a Flask view
  reading the principal from the environ (Flask's test client).
"""

from __future__ import annotations

import asyncio
from typing import Any

import flask
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from oauthproxy_adapters.asgi import OAuthProxyApp, principal_from_scope
from oauthproxy_adapters.testing.flow import (
    Call,
    Flow,
    Reply,
    adrive_httpx,
    bearer,
    drive,
    login,
    request,
)
from oauthproxy_adapters.wsgi import OAuthProxyWSGI, principal_from_environ
from tests.adapters.live_servers import async_proxy, sync_proxy
from tests.harness import ScriptedUpstream, make_config

BASE = "http://127.0.0.1:8931"  # no socket: the transports route by URL, the issuer names it


def _world() -> tuple[Any, ScriptedUpstream]:
    config = make_config(issuer=BASE)
    return config, ScriptedUpstream(callback_url=config.callback_url)


# -- Starlette ------------------------------------------------------------------------------------------
async def hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("hello from starlette")


async def whoami(request: StarletteRequest) -> JSONResponse:
    principal = request.state.oauthproxy_principal
    body = await request.body()
    return JSONResponse(
        {"subject": principal.subject, "client_id": principal.client_id, "body": body.decode()}
    )


def starlette_as_middleware(proxy: Any) -> Starlette:
    return Starlette(
        routes=[Route("/hello", hello), Route("/mcp", whoami, methods=["GET", "POST"])],
        middleware=[Middleware(lambda app: OAuthProxyApp(proxy, app))],  # type: ignore[arg-type]
    )


def starlette_with_mount(proxy: Any) -> Starlette:
    protected = Starlette(routes=[Route("/mcp", whoami, methods=["GET", "POST"])])
    return Starlette(
        routes=[Route("/hello", hello), Mount("/", app=OAuthProxyApp(proxy, protected))]
    )


async def _starlette_flow(build: Any) -> None:
    config, upstream = _world()
    proxy = async_proxy(config, upstream)
    app = build(proxy)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:

        async def run(flow: Flow[Any]) -> Any:
            return await adrive_httpx(flow, client)

        # The Starlette app's own route works beside the proxy, without a token.
        hello_reply = await run(request("GET", BASE + "/hello"))
        assert hello_reply.status == 200 and hello_reply.body == b"hello from starlette"
        # The protected route is guarded before Starlette sees it.
        denied = await run(request("POST", BASE + "/mcp", body=b"{}"))
        assert denied.status == 401
        assert (denied.header("www-authenticate") or "").startswith(
            f'Bearer resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp"'
        )
        session = await run(login(BASE, upstream))
        reply = await run(
            request(
                "POST", BASE + "/mcp", bearer(session.tokens["access_token"]), b'{"jsonrpc":"2.0"}'
            )
        )
        assert reply.status == 200, reply
        assert reply.json() == {
            "subject": "idp:42",
            "client_id": session.client["client_id"],
            "body": '{"jsonrpc":"2.0"}',  # the body still reaches the app, unread by the proxy
        }
        # Starlette's own 404 for paths neither serves.
        assert (await run(request("GET", BASE + "/elsewhere"))).status == 404


def test_starlette_with_oauthproxy_middleware() -> None:
    asyncio.run(_starlette_flow(starlette_as_middleware))


def test_starlette_with_oauthproxy_mounted_beside_routes() -> None:
    asyncio.run(_starlette_flow(starlette_with_mount))


# -- Flask ----------------------------------------------------------------------------------------------
def flask_app(proxy: Any) -> flask.Flask:
    app = flask.Flask("mcp_flask_app")

    @app.get("/hello")
    def hello_view() -> str:
        return "hello from flask"

    @app.route("/mcp", methods=["GET", "POST"])
    def mcp_view() -> Any:
        principal = principal_from_environ(flask.request.environ)
        assert principal is not None  # the middleware never lets an anonymous call through
        return {
            "subject": principal.subject,
            "scopes": list(principal.scopes),
            "body": flask.request.get_data(as_text=True),
        }

    app.wsgi_app = OAuthProxyWSGI(proxy, app.wsgi_app)  # type: ignore[method-assign]
    return app


def test_flask_with_oauthproxy_wsgi_middleware() -> None:
    config, upstream = _world()
    app = flask_app(sync_proxy(config, upstream))
    client = app.test_client()

    def send(call: Call) -> Reply:
        resp = client.open(call.url, method=call.method, headers=list(call.headers), data=call.body)
        return Reply(
            resp.status_code,
            tuple((k.lower(), v) for k, v in resp.headers.items()),
            resp.get_data(),
        )

    hello_reply = drive(request("GET", BASE + "/hello"), send)
    assert hello_reply.status == 200 and hello_reply.body == b"hello from flask"
    denied = drive(request("GET", BASE + "/mcp"), send)
    assert denied.status == 401 and denied.json()["error"] == "invalid_token"
    assert denied.header("www-authenticate") == (
        f'Bearer resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp", scope="mcp"'
    )
    session = drive(login(BASE, upstream), send)
    reply = drive(
        request("POST", BASE + "/mcp", bearer(session.tokens["access_token"]), b"ping"), send
    )
    assert reply.status == 200, reply
    assert reply.json() == {"subject": "idp:42", "scopes": ["mcp"], "body": "ping"}
    # Flask's own 404 and 405 answer for paths the proxy does not serve.
    assert drive(request("GET", BASE + "/elsewhere"), send).status == 404
    assert drive(request("DELETE", BASE + "/hello"), send).status == 405


# -- WebSockets (ASGI only) -----------------------------------------------------------------------------
def test_websocket_to_the_protected_path_needs_a_token() -> None:
    """The front door's ``VERIFY_WEBSOCKET``: a WebSocket to the protected path is closed with 1008
    unless it carries one valid bearer token (then the app gets it with the principal); elsewhere,
    the authorization server's paths included, it reaches the app untouched."""
    config, upstream = _world()
    proxy = async_proxy(config, upstream)
    seen: list[tuple[str, str | None]] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        principal = principal_from_scope(scope)
        seen.append((scope["path"], principal.subject if principal else None))

    app = OAuthProxyApp(proxy, inner)
    closed = [{"type": "websocket.close", "code": 1008}]

    async def websocket(
        target: OAuthProxyApp, path: str, *headers: tuple[bytes, bytes]
    ) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        scope = {"type": "websocket", "path": path, "headers": list(headers)}
        await target(scope, receive, send)
        return sent

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            session = await adrive_httpx(login(BASE, upstream), client)
        valid = (b"authorization", b"Bearer " + session.tokens["access_token"].encode())
        assert await websocket(app, "/mcp") == closed
        assert await websocket(app, "/mcp/x", (b"authorization", b"Bearer not.a.token")) == closed
        assert await websocket(app, "/mcp", valid, valid) == closed  # two fields (RFC 6750 §2.1)
        assert await websocket(OAuthProxyApp(proxy), "/mcp", valid) == closed  # no app behind
        assert seen == []
        assert await websocket(app, "/mcp/x", valid) == []
        assert await websocket(app, "/elsewhere") == []
        assert await websocket(app, "/token") == []
        assert seen == [("/mcp/x", "idp:42"), ("/elsewhere", None), ("/token", None)]

    asyncio.run(go())
