"""An `mcp` SDK server protected by oauthproxy in one call: ``protect(server, proxy)``.

Run: ``OAUTHPROXY_CONFIG=proxy.toml python adapters/examples/mcp_sdk/app.py``
"""

from __future__ import annotations

import os

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.integrations.proxies import async_proxy
from oauthproxy_adapters.mcp_sdk import protect, upstream_token

settings = load_settings(os.environ.get("OAUTHPROXY_CONFIG", "proxy.toml"))
proxy = async_proxy(settings)
server = MCPServer("oauthproxy-mcp-sdk-example")


@server.tool()
async def whoami() -> str:
    """Who is calling, and proof that the server can act upstream on their behalf."""
    token = get_access_token()
    assert token is not None  # protect() admits verified requests only
    upstream = await upstream_token(proxy)  # the user's provider token; never sent to the client
    login = (token.claims or {}).get("login", "")
    return f"{token.subject} {login} upstream-token:{len(upstream.access_token) > 0}"


app = protect(server, proxy)  # the authorization server beside the MCP endpoint at mcp_path

if __name__ == "__main__":
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
