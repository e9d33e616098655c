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

``OAuthProxyTokenVerifier`` implements the SDK's ``TokenVerifier`` protocol on top of the proxy's
bearer verification (signature, ``typ``, issuer, audience = the resource, expiry, revocation), so the
SDK's own ``get_access_token()`` inside a tool returns the verified subject, client, scopes and claims.
``with_authorization_server`` serves the authorization server's endpoints beside the MCP app and leaves
bearer checks on the MCP path to the SDK (which answers 401/403 with its own challenge).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from oauthproxy_core.errors import InvalidTokenError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.upstream_token import UpstreamAccess

from .asgi import ASGIApp, OAuthProxyApp
from .proxy import AsyncProxy

__all__ = [
    "OAuthProxyTokenVerifier",
    "mcp_auth",
    "principal_of",
    "upstream_token",
    "with_authorization_server",
]


class OAuthProxyTokenVerifier:
    """The `mcp` SDK's ``TokenVerifier``, answered by the proxy's core."""

    def __init__(self, proxy: AsyncProxy, required_scopes: Sequence[str] = ()) -> None:
        self.proxy = proxy
        self.required_scopes = tuple(required_scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        verdict = await self.proxy.verify("Bearer " + token, self.required_scopes)
        if isinstance(verdict, Challenge):
            return None
        claims: dict[str, Any] = dict(verdict.claims)
        # The SDK ties a session to (client_id, iss, subject): iss must be stable across refreshes.
        claims.update({"iss": self.proxy.config.issuer, "gid": verdict.grant_id})
        return AccessToken(
            token=token,
            client_id=verdict.client_id,
            scopes=list(verdict.scopes),
            expires_at=verdict.expires_at,
            resource=verdict.resource,
            subject=verdict.subject,
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


def principal_of(token: AccessToken) -> Principal:
    """The proxy's ``Principal`` for an SDK ``AccessToken`` produced by our verifier."""
    claims = dict(token.claims or {})
    grant_id = claims.pop("gid", None)
    claims.pop("iss", None)
    if not isinstance(grant_id, str) or token.subject is None or token.resource is None:
        raise InvalidTokenError("not a token verified by oauthproxy")
    return Principal(
        subject=token.subject,
        client_id=token.client_id,
        scopes=tuple(token.scopes),
        resource=token.resource,
        grant_id=grant_id,
        expires_at=token.expires_at or 0,
        claims=tuple((k, str(v)) for k, v in claims.items()),
    )


async def upstream_token(proxy: AsyncProxy, token: AccessToken | None = None) -> UpstreamAccess:
    """The calling user's upstream access token (refreshed when expired), inside a tool.

    Raises ``InvalidTokenError`` outside an authenticated request or when the grant was revoked.
    """
    token = token or get_access_token()
    if token is None:
        raise InvalidTokenError("no authenticated user in this context")
    return await proxy.upstream_token(principal_of(token))
