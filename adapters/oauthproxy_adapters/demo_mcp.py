"""The demo's MCP server: a real `mcp` SDK server placed behind the proxy's gateway, with three tools:

- ``whoami``: who is calling, as the gateway's identity headers say;
- ``admin_stats``: a stand-in for a tool only some users should have, to show the gateway's
  ``[[gateway.tools]]`` rules (``name = "admin_*"``): hidden from ``tools/list`` and refused to a
  token without the rule's scope, until the client steps up;
- ``provider_token``: whether the gateway forwarded the user's provider token
  (``[gateway] forward_upstream_token``), shown only as a short SHA-256 fingerprint, never the token.

It does no OAuth of its own. It trusts the identity headers that the gateway adds after verifying the
caller's token (see ``gateway.py``), which is exactly how an MCP server written in any language sits
behind ``oauthproxy serve``. It must therefore only be reachable through the gateway (here: it binds
127.0.0.1 on a port nobody else is told about).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def token_fingerprint(token: str) -> str:
    """What ``provider_token`` shows of a token: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def build_demo_mcp_app() -> Any:
    server = MCPServer("oauthproxy-demo", log_level="WARNING")
    calls = itertools.count(1)

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Who is calling, as established by the proxy."""
        next(calls)
        headers = ctx.headers or {}
        subject = headers.get("x-oauthproxy-subject", "(anonymous)")
        login = headers.get("x-oauthproxy-claim-login", "?")
        client = headers.get("x-oauthproxy-client-id", "?")
        return f"you are {subject} (login {login}), calling through client {client[:10]}"

    @server.tool()
    def admin_stats(ctx: Context) -> str:
        """An administrator's view of this server (guarded by the gateway's tool rules)."""
        scopes = (ctx.headers or {}).get("x-oauthproxy-scopes", "")
        return f"{next(calls)} calls served; your scopes: {scopes}"

    @server.tool()
    def provider_token(ctx: Context) -> str:
        """Whether the gateway forwarded your provider token (a fingerprint, never the token)."""
        next(calls)
        token = (ctx.headers or {}).get("x-oauthproxy-upstream-token")
        if not token:
            return "no provider token was forwarded"
        return f"provider token received, sha256 {token_fingerprint(token)}"

    return server.streamable_http_app(streamable_http_path="/mcp")
