"""The ASGI adapter: the authorization server, and bearer protection for an MCP app, in one app.

``OAuthProxyApp(proxy, app)`` answers every path the core serves (metadata, registration, authorize,
consent, callback, token, revocation, JWKS), protects ``mcp_path`` (and below) with bearer tokens
(with ``[[resources]]``, the path of each resource, each checking tokens for its own audience),
passes authenticated requests to ``app`` with the verified ``Principal`` in
``scope["state"]["oauthproxy_principal"]`` (Starlette's ``request.state.oauthproxy_principal``), and
everything else to ``app`` untouched. It is plain ASGI 3: mount it in Starlette, FastAPI, the `mcp`
SDK's server or run it alone under uvicorn.

Thin by design (spec/architecture.md): the core's front door (``oauthproxy_core.front_door``) decides where
a request goes; request -> ``oauthproxy_core.Request``, the async driver runs the handler, response
written. Request bodies are read up to the core's bound and refused with 413 past it
(spec/security.md 28); an unexpected exception becomes a generic 500 and a log line, never a traceback to
the client (spec/security.md 29). A request with ambiguous framing (``Transfer-Encoding`` with
``Content-Length``, or in HTTP/1.0) is refused with 400 and ``Connection: close`` before anything
reads it (RFC 9112 §6.1, ``framing.py``): the server in front may not do it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from oauthproxy_core import Request, Response, front_door
from oauthproxy_core.bearer_header import BearerCredentials, parse_bearer
from oauthproxy_core.front_door import WEBSOCKET_REFUSED, Door, refusal
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import MAX_BODY_BYTES, json_response

from .framing import AMBIGUOUS_FRAMING, has_ambiguous_framing
from .proxy import AsyncProxy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("oauthproxy.asgi")

PRINCIPAL_KEY = "oauthproxy_principal"
#: CORS of the protected MCP endpoint, defined with the front door's rule (kept here for importers).
MCP_CORS = front_door.MCP_CORS
MCP_PREFLIGHT = front_door.MCP_PREFLIGHT


def to_core_request(scope: Scope, body: bytes) -> Request:
    headers = tuple(
        (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())
    )
    client = scope.get("client")
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        remote_addr=client[0] if client else "",
    )


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or ``None`` once it exceeds ``limit`` bytes.

    Raises ``ClientDisconnected`` for a truncated body: it must not reach the core as if complete.
    """
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def send_response(send: Send, resp: Response) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
    if resp.status not in (204, 304) and resp.status >= 200:
        # RFC 9110 §8.6: no Content-Length on 204 (and 1xx).
        headers.append((b"content-length", str(len(resp.body)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": resp.body})


TOO_LARGE = json_response(413, {"error": "invalid_request", "error_description": "body too large"})
SERVER_ERROR = json_response(500, {"error": "server_error"})
NOT_FOUND = json_response(404, {"error": "not_found"}, no_store=False)


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


def bearer_of(scope: Scope) -> BearerCredentials:
    """The bearer credentials of an ASGI request, from every ``Authorization`` field it carries."""
    return parse_bearer(
        [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
    )


class OAuthProxyApp:
    def __init__(
        self,
        proxy: AsyncProxy,
        app: ASGIApp | None = None,
        *,
        protect: Sequence[str] | None = None,
        required_scopes: Sequence[str] = (),
    ) -> None:
        self.proxy = proxy
        self.app = app
        self.door = proxy.front_door(protect)
        self.protect = self.door.protect
        self.required_scopes = tuple(required_scopes)

    def is_protected(self, path: str) -> bool:
        return self.door.is_protected(path)

    def _resource(self, path: str) -> str | None:
        """The protected resource a request path is for (``[[resources]]``: the one whose path it
        is at or below; spec/security.md 40); ``None``, the default one, otherwise."""
        return self.proxy.config.resource_for_request(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
            return
        if kind != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            elif kind == "lifespan":
                await serve_lifespan(receive, send)
            return
        if has_ambiguous_framing(
            (name for name, _ in scope.get("headers", ())), scope.get("http_version", "1.1")
        ):
            # RFC 9112 §6.1; uvicorn on h11 would serve the trailing bytes as a second request.
            await send_response(send, AMBIGUOUS_FRAMING)
            return
        try:
            door = self.door.decide(scope["method"], scope["path"]).door
            if door is Door.AUTHORIZATION_SERVER:
                body = await read_body(receive)
                if body is None:
                    await send_response(send, TOO_LARGE)
                    return
                await send_response(send, await self.proxy.handle(to_core_request(scope, body)))
                return
            if door is Door.PREFLIGHT:
                await send_response(send, front_door.PREFLIGHT)
                return
            if door is Door.VERIFY:
                verdict = await self.proxy.verify(
                    bearer_of(scope), self.required_scopes, self._resource(scope["path"])
                )
                if isinstance(verdict, Challenge):
                    await send_response(send, refusal(verdict))
                    return
                scope = with_principal(scope, verdict)
        except ClientDisconnected:
            return  # nobody is listening for an answer
        except Exception:
            log.exception("unhandled error in the authorization server")
            await send_response(send, SERVER_ERROR)
            return
        if self.app is None:
            await send_response(send, NOT_FOUND)
            return
        await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The protected path is protected for every protocol, not only HTTP.
        door = self.door.decide("GET", scope["path"], websocket=True).door
        if door is Door.VERIFY_WEBSOCKET:
            verdict = await self.proxy.verify(
                bearer_of(scope), self.required_scopes, self._resource(scope["path"])
            )
            if isinstance(verdict, Challenge) or self.app is None:
                await send({"type": "websocket.close", "code": WEBSOCKET_REFUSED})
                return
            scope = with_principal(scope, verdict)
        if self.app is not None:
            await self.app(scope, receive, send)


def with_principal(scope: Scope, principal: Principal) -> Scope:
    scope = dict(scope)
    state = dict(scope.get("state") or {})
    state[PRINCIPAL_KEY] = principal
    scope["state"] = state
    return scope


def principal_from_scope(scope: Scope) -> Principal | None:
    state = scope.get("state") or {}
    value = state.get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None


async def serve_lifespan(
    receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> None:
    """The ASGI lifespan protocol for an app with nothing to start; ``on_shutdown`` runs before
    shutdown is reported complete."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
