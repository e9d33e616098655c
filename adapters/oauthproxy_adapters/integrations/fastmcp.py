"""FastMCP (4.x): ``FastMCP("name", auth=OAuthProxyAuth(proxy))``, oauthproxy as FastMCP's auth.

``OAuthProxyAuth`` is a FastMCP ``AuthProvider`` that takes the place of FastMCP's own ``OAuthProxy``:
MCP clients see the same kind of server (RFC 8414 / RFC 9728 metadata at every URL of spec/interop.md,
RFC 7591 registration, ``/authorize`` with this proxy's consent page, the upstream callback,
``/token``, ``/revoke``, JWKS), but every request is answered by oauthproxy's core, and bearer tokens
are checked by the core's verifier (signature, ``typ``, issuer, audience = the resource, expiry,
revocation, scopes; spec/security.md 18).

```python
proxy = async_proxy(load_settings("proxy.toml"))          # .proxies
mcp = FastMCP("my-server", auth=OAuthProxyAuth(proxy))

@mcp.tool
async def whoami() -> str:
    token = get_access_token()                             # fastmcp.server.dependencies
    github = await upstream_token(proxy)                    # the user's provider token
    ...

mcp.run(transport="http", host=..., port=..., path=proxy.config.mcp_path)
```

How it plugs in (FastMCP's ``AuthProvider`` contract, as ``create_streamable_http_app`` uses it):

- ``get_routes(mcp_path)`` returns one route per path the core serves (``.starlette``); FastMCP mounts
  them beside the MCP endpoint. ``mcp_path`` must be the configured ``mcp_path``: the resource URL,
  the token audience and the metadata all derive from it, so a mismatch fails at start.
- ``get_middleware()`` returns a guard that checks the bearer token of every request to the MCP path
  *before* FastMCP's own ``RequireAuthMiddleware`` sees it, and answers a failure with the core's
  single challenge (``resource_metadata`` and ``scope``, plus ``error="invalid_token"`` when a token
  was sent, or 403 ``insufficient_scope``; spec/interop.md). A verified request carries the SDK's
  ``AuthenticatedUser`` with a FastMCP ``AccessToken`` (subject, client, scopes, resource, claims), so
  FastMCP's ``get_access_token()``, ``require_scopes`` and the SDK's ``get_access_token()`` work.
- ``verify_token(token)`` is the same verification, for FastMCP code that calls it directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fastmcp.server.auth import AccessToken, AuthProvider
from fastmcp.server.dependencies import get_access_token
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from oauthproxy_core import front_door
from oauthproxy_core.bearer_header import BearerCredentials
from oauthproxy_core.errors import InvalidTokenError
from oauthproxy_core.front_door import WEBSOCKET_REFUSED, Door, refusal
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.upstream_token import UpstreamAccess
from oauthproxy_core.scopes import without_offline_access

from ..asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    bearer_of,
    send_response,
    with_principal,
)
from ..config_file import load_settings
from ..mcp_sdk import ORIGIN_CLAIM, principal_of
from ..proxy import AsyncProxy
from .proxies import async_proxy
from .starlette import authorization_server_routes

__all__ = ["OAuthProxyAuth", "access_token_of", "upstream_token"]


def access_token_of(principal: Principal, token: str, issuer: str) -> AccessToken:
    """FastMCP's ``AccessToken`` for a verified ``principal`` (the bearer string is ``token``).

    ``claims`` holds the identity claims plus ``iss`` (the SDK ties a session to client, issuer and
    subject, so it must be stable across refreshes) and ``gid`` (the grant, for ``upstream_token``).
    """
    claims: dict[str, Any] = dict(principal.claims)
    claims.update({"iss": issuer, "gid": principal.grant_id, ORIGIN_CLAIM: principal.origin.value})
    if principal.groups:
        claims["groups"] = list(principal.groups)
    return AccessToken(
        token=token,
        client_id=principal.client_id,
        scopes=list(principal.scopes),
        expires_at=principal.expires_at,
        resource=principal.resource,
        subject=principal.subject,
        claims=claims,
    )


class OAuthProxyAuth(AuthProvider):
    """FastMCP's auth provider, answered by oauthproxy (see the module docstring).

    ``required_scopes`` are demanded of every token on the MCP path (403 ``insufficient_scope``
    otherwise); by default any token the proxy issued for this resource is enough.
    """

    def __init__(self, proxy: AsyncProxy, *, required_scopes: Sequence[str] = ()) -> None:
        super().__init__(base_url=proxy.config.issuer, required_scopes=list(required_scopes))
        self.proxy = proxy

    @classmethod
    def from_config(
        cls, path: str | os.PathLike[str], *, required_scopes: Sequence[str] = ()
    ) -> OAuthProxyAuth:
        """The provider for the proxy a ``proxy.toml`` describes. Raises ``ConfigError``."""
        return cls(async_proxy(load_settings(path)), required_scopes=required_scopes)

    # -- verification -----------------------------------------------------------------------

    async def verify(self, authorization: str | BearerCredentials | None) -> Principal | Challenge:
        """The core's verdict on an ``Authorization`` header value (or the parsed credentials of
        all of them), with ``required_scopes``."""
        return await self.proxy.verify(authorization, self.required_scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        verdict = await self.verify("Bearer " + token)
        if isinstance(verdict, Challenge):
            return None
        return access_token_of(verdict, token, self.proxy.config.issuer)

    # -- what the server advertises -----------------------------------------------------------

    @property
    def scopes_supported(self) -> list[str]:
        # What the resource advertises: never offline_access (MCP 2026-07-28, SEP-2207).
        return list(without_offline_access(self.proxy.config.scopes_supported))

    def get_challenge_scopes(self, required_scopes: list[str] | None = None) -> list[str]:
        scopes = self.required_scopes if required_scopes is None else required_scopes
        return list(without_offline_access(scopes or self.proxy.config.default_scopes))

    def set_mcp_path(self, mcp_path: str | None) -> None:
        configured = self.proxy.config.mcp_path
        if mcp_path is not None and mcp_path.rstrip("/") != configured:
            raise ValueError(
                f"FastMCP serves MCP at {mcp_path!r} but oauthproxy's mcp_path is {configured!r}: "
                "the resource URL and the tokens' audience derive from it; make them equal"
            )
        super().set_mcp_path(configured)

    def _get_resource_url(self, path: str | None = None) -> AnyHttpUrl | None:
        # The resource is the proxy's canonical resource (issuer + mcp_path), never rebuilt here:
        # an audience derived from another URL is how FastMCP CVE-2025-69196 happened.
        return AnyHttpUrl(self.proxy.config.resource)

    def get_routes(self, mcp_path: str | None = None) -> list[Route]:
        self.set_mcp_path(mcp_path)
        routes: list[BaseRoute] = authorization_server_routes(self.proxy)
        return [r for r in routes if isinstance(r, Route)]

    def get_middleware(self) -> list[Any]:
        return [Middleware(_BearerGuard, auth=self), Middleware(AuthContextMiddleware)]


class _BearerGuard:
    """Checks bearer tokens with the core; answers the MCP path's failures with its challenge.

    On the MCP path: CORS preflight answered, a failed check answered with the core's challenge, a
    verified request passed on as the SDK's ``AuthenticatedUser``. Elsewhere (custom routes) a valid
    token authenticates the request and anything else leaves it unauthenticated, as Starlette's
    ``AuthenticationMiddleware`` would; the authorization server's own paths are never touched.
    """

    def __init__(self, app: ASGIApp, auth: OAuthProxyAuth) -> None:
        self.app = app
        self.auth = auth
        self.door = auth.proxy.front_door((auth.proxy.config.mcp_path,))
        self.protect = self.door.protect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = kind == "websocket"
        door = self.door.decide(scope.get("method", "GET"), scope["path"], websocket=websocket).door
        if door is Door.AUTHORIZATION_SERVER:
            await self.app(_unauthenticated(scope), receive, send)
            return
        if door is Door.PREFLIGHT:
            await send_response(send, front_door.PREFLIGHT)
            return
        credentials = bearer_of(scope)
        if door in (Door.VERIFY, Door.VERIFY_WEBSOCKET):
            verdict = await self.auth.verify(credentials)
            if isinstance(verdict, Challenge):
                if websocket:
                    await send({"type": "websocket.close", "code": WEBSOCKET_REFUSED})
                    return
                await send_response(send, refusal(verdict))
                return
            await self.app(self._authenticated(scope, verdict, credentials), receive, send)
            return
        proxy = self.auth.proxy
        if credentials.presented:
            verdict = await proxy.verify(credentials)
            if isinstance(verdict, Principal):
                await self.app(self._authenticated(scope, verdict, credentials), receive, send)
                return
        await self.app(_unauthenticated(scope), receive, send)

    def _authenticated(
        self, scope: Scope, principal: Principal, credentials: BearerCredentials
    ) -> Scope:
        token = credentials.token or ""
        access = access_token_of(principal, token, self.auth.proxy.config.issuer)
        scope = with_principal(scope, principal)
        scope["user"] = AuthenticatedUser(access)
        scope["auth"] = AuthCredentials(list(principal.scopes))
        return scope


def _unauthenticated(scope: Scope) -> Scope:
    scope = dict(scope)
    scope["user"] = UnauthenticatedUser()
    scope["auth"] = AuthCredentials()
    return scope


async def upstream_token(proxy: AsyncProxy, token: AccessToken | None = None) -> UpstreamAccess:
    """The calling user's upstream access token (refreshed when expired), inside a FastMCP tool.

    Raises ``InvalidTokenError`` outside an authenticated request or when the grant was revoked.
    """
    token = token or get_access_token()
    if token is None:
        raise InvalidTokenError("no authenticated user in this context")
    return await proxy.upstream_token(principal_of(token))
