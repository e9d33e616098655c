"""Protecting an `mcp` SDK (2.x) server with oauthproxy, in a few lines.

```python
from mcp.server.mcpserver import MCPServer
from oauthproxy_adapters.mcp_sdk import mcp_auth, with_authorization_server, upstream_token

server = MCPServer("my-server", **mcp_auth(proxy))          # the SDK verifies with our core

@server.tool()
async def repos() -> str:
    token = await upstream_token(proxy)                       # the user's GitHub token
    ...

app = with_authorization_server(server.streamable_http_app(), proxy)   # + /authorize, /token, ...
```

or, for a server built without ``mcp_auth``, in one call: ``app = protect(server, proxy)``.

``OAuthProxyTokenVerifier`` implements the SDK's ``TokenVerifier`` protocol on top of the proxy's
bearer verification (signature, ``typ``, issuer, audience = the resource, expiry, revocation), so the
SDK's own ``get_access_token()`` inside a tool returns the verified subject, client, scopes and claims.
``with_authorization_server`` serves the authorization server's endpoints beside the MCP app and leaves
bearer checks on the MCP path to the SDK (which answers 401/403 with its own challenge).

``protect(server, proxy)`` instead builds the server's streamable-HTTP app at the configured
``mcp_path`` and puts ``OAuthProxyApp`` in front of it: the authorization server beside it, and the MCP
path guarded by the proxy itself, so an unauthenticated client gets the core's exact challenge
(spec/interop.md: ``resource_metadata`` and ``scope``, ``error`` only when a token was sent; 403
``insufficient_scope``). A verified request reaches the SDK as its ``AuthenticatedUser``, so
``get_access_token()`` and ``upstream_token(proxy)`` work in tools as with ``mcp_auth``. The SDK's
DNS-rebinding check allows the issuer's host and origin unless ``transport_security`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import auth_context_var, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.authentication import AuthCredentials

from oauthproxy_core.errors import InvalidTokenError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.upstream_token import UpstreamAccess
from oauthproxy_core.tokens import Origin

from .asgi import ASGIApp, OAuthProxyApp, Receive, Scope, Send, bearer_of, principal_from_scope
from .proxy import AsyncProxy

__all__ = [
    "OAuthProxyTokenVerifier",
    "access_token_of",
    "mcp_auth",
    "principal_of",
    "protect",
    "upstream_token",
    "with_authorization_server",
]


#: The claim of an SDK ``AccessToken`` that keeps ``Principal.origin`` (spec/security.md 37): a token
#: without it, or with a value we do not know, never reaches an upstream token.
ORIGIN_CLAIM = "oauthproxy_origin"


class OAuthProxyTokenVerifier:
    """The `mcp` SDK's ``TokenVerifier``, answered by the proxy's core."""

    def __init__(self, proxy: AsyncProxy, required_scopes: Sequence[str] = ()) -> None:
        self.proxy = proxy
        self.required_scopes = tuple(required_scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        verdict = await self.proxy.verify("Bearer " + token, self.required_scopes)
        if isinstance(verdict, Challenge):
            return None
        return access_token_of(verdict, token, self.proxy.config.issuer)


def access_token_of(principal: Principal, token: str, issuer: str) -> AccessToken:
    """The SDK's ``AccessToken`` for a verified ``principal`` (``token`` is the bearer string)."""
    claims: dict[str, Any] = dict(principal.claims)
    # The SDK ties a session to (client_id, iss, subject): iss must be stable across refreshes.
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


def mcp_auth(proxy: AsyncProxy, required_scopes: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments for ``MCPServer(...)``: our verifier and matching ``AuthSettings``."""
    cfg = proxy.config
    return {
        "token_verifier": OAuthProxyTokenVerifier(proxy, required_scopes),
        "auth": AuthSettings(
            issuer_url=cfg.issuer,  # type: ignore[arg-type]
            resource_server_url=cfg.resource,  # type: ignore[arg-type]
            required_scopes=list(required_scopes) or None,
            validate_token_resource=True,
        ),
    }


def with_authorization_server(app: ASGIApp, proxy: AsyncProxy) -> OAuthProxyApp:
    """``app`` plus every endpoint of the authorization server (bearer checks left to ``app``)."""
    return OAuthProxyApp(proxy, app, protect=())


def protect(
    server: MCPServer | Server,
    proxy: AsyncProxy,
    *,
    required_scopes: Sequence[str] = (),
    transport_security: TransportSecuritySettings | None = None,
    **streamable_http: Any,
) -> OAuthProxyApp:
    """``server``'s streamable-HTTP app at ``mcp_path``, protected, with the authorization server.

    ``streamable_http`` goes to ``server.streamable_http_app`` (``json_response``, ``stateless_http``,
    ...). A server built with ``mcp_auth(...)`` already verifies tokens itself: use
    ``with_authorization_server`` for it instead (one verifier per request).
    """
    if isinstance(server, MCPServer) and server.settings.auth is not None:
        raise ValueError("this server was built with mcp_auth(...): use with_authorization_server")
    if transport_security is None:
        issuer = urlsplit(proxy.config.issuer)
        transport_security = TransportSecuritySettings(
            allowed_hosts=[issuer.netloc], allowed_origins=[f"{issuer.scheme}://{issuer.netloc}"]
        )
    app = server.streamable_http_app(
        streamable_http_path=proxy.config.mcp_path,
        transport_security=transport_security,
        **streamable_http,
    )
    return OAuthProxyApp(
        proxy,
        _SDKAuthContext(app, proxy.config.issuer),
        protect=(proxy.config.mcp_path,),
        required_scopes=required_scopes,
    )


class _SDKAuthContext:
    """The proxy's verified ``Principal`` as the SDK's ``AuthenticatedUser`` and auth context."""

    def __init__(self, app: ASGIApp, issuer: str) -> None:
        self.app = app
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_from_scope(scope)
        if principal is None:
            await self.app(scope, receive, send)
            return
        token = bearer_of(scope).token or ""
        user = AuthenticatedUser(access_token_of(principal, token, self.issuer))
        scope = dict(scope, user=user, auth=AuthCredentials(list(principal.scopes)))
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)


def principal_of(token: AccessToken) -> Principal:
    """The proxy's ``Principal`` for an SDK ``AccessToken`` produced by our verifier."""
    claims = dict(token.claims or {})
    grant_id = claims.pop("gid", None)
    claims.pop("iss", None)
    groups = claims.pop("groups", [])
    said = claims.pop(ORIGIN_CLAIM, None)
    origin = next((o for o in Origin if o.value == said), None)
    if not isinstance(grant_id, str) or token.subject is None or token.resource is None:
        raise InvalidTokenError("not a token verified by oauthproxy")
    if origin is None:
        raise InvalidTokenError("not a token verified by oauthproxy")
    if not isinstance(groups, list):
        raise InvalidTokenError("not a token verified by oauthproxy")
    return Principal(
        subject=token.subject,
        client_id=token.client_id,
        scopes=tuple(token.scopes),
        resource=token.resource,
        grant_id=grant_id,
        expires_at=token.expires_at or 0,
        claims=tuple((k, str(v)) for k, v in claims.items()),
        groups=tuple(str(g) for g in groups),
        origin=origin,
    )


async def upstream_token(proxy: AsyncProxy, token: AccessToken | None = None) -> UpstreamAccess:
    """The calling user's upstream access token (refreshed when expired), inside a tool.

    Raises ``InvalidTokenError`` outside an authenticated request or when the grant was revoked.
    """
    token = token or get_access_token()
    if token is None:
        raise InvalidTokenError("no authenticated user in this context")
    return await proxy.upstream_token(principal_of(token))
