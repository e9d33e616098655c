"""The demo's MCP server: a real `mcp` SDK server with one tool, ``whoami``, placed behind the
proxy's gateway.

It does no OAuth of its own. It trusts the identity headers that the gateway adds after verifying the
caller's token (see ``gateway.py``), which is exactly how an MCP server written in any language sits
behind ``oauthproxy serve``. It must therefore only be reachable through the gateway (here: it binds
127.0.0.1 on a port nobody else is told about).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def build_demo_mcp_app() -> Any:
    server = MCPServer("oauthproxy-demo", log_level="WARNING")

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Who is calling, as established by the proxy."""
        headers = ctx.headers or {}
        subject = headers.get("x-oauthproxy-subject", "(anonymous)")
        login = headers.get("x-oauthproxy-claim-login", "?")
        client = headers.get("x-oauthproxy-client-id", "?")
        return f"you are {subject} (login {login}), calling through client {client[:10]}"

    return server.streamable_http_app(streamable_http_path="/mcp")
