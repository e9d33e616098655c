"""A FastMCP server whose OAuth is oauthproxy: ``FastMCP("...", auth=OAuthProxyAuth(proxy))``.

Run: ``OAUTHPROXY_CONFIG=proxy.toml python adapters/examples/fastmcp/app.py``
"""

from __future__ import annotations

import os

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_access_token

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.integrations.fastmcp import OAuthProxyAuth, upstream_token
from oauthproxy_adapters.integrations.proxies import async_proxy

settings = load_settings(os.environ.get("OAUTHPROXY_CONFIG", "proxy.toml"))
proxy = async_proxy(settings)
mcp = FastMCP("oauthproxy-fastmcp-example", auth=OAuthProxyAuth(proxy))


@mcp.tool
async def whoami() -> str:
    """Who is calling, and proof that the server can act upstream on their behalf."""
    token = get_access_token()
    assert token is not None  # the MCP endpoint admits verified requests only
    upstream = await upstream_token(proxy)  # the user's provider token; never sent to the client
    login = token.claims.get("login", "")
    return f"{token.subject} {login} upstream-token:{len(upstream.access_token) > 0}"


if __name__ == "__main__":
    mcp.run(
        transport="http",
        host=settings.host,
        port=settings.port,
        path=settings.mcp_path,
        show_banner=False,
    )
