"""An `mcp` SDK (2.x) server protected by oauthproxy with a few lines (mcp_sdk.py): the SDK verifies
tokens through our core, the authorization server is mounted beside it, a tool sees the verified
principal and obtains the user's upstream token; the real SDK client completes the flow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from oauthproxy_adapters.devprovider import DevProvider
from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.mcp_sdk import mcp_auth, upstream_token, with_authorization_server
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from tests.e2e.conftest_idp import free_port
from tests.e2e.mcp_client import refresh_and_call, run_mcp_session
from tests.harness import make_config, make_profile


class Served:
    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def protected_server() -> Iterator[str]:
    provider_port, port = free_port(), free_port()
    base, dev = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{provider_port}"
    provider = DevProvider(
        client_id="gh-app", client_secret="gh-secret", redirect_uri=base + "/auth/callback"
    )
    config = make_config(
        issuer=base,
        upstream=make_profile(
            name="github",
            authorize_url=dev + "/login/oauth/authorize",
            token_url=dev + "/login/oauth/access_token",
            userinfo_url=dev + "/user",
            client_id="gh-app",
            client_secret="gh-secret",
            issuer=None,
        ),
    )
    proxy = AsyncProxy(config, new_keyring(), AsyncMemoryStore(), AsyncHttpClient())

    # The few lines a user writes:
    server = MCPServer("protected", log_level="WARNING", **mcp_auth(proxy))

    @server.tool()
    async def whoami() -> str:
        token = get_access_token()
        assert token is not None
        upstream = await upstream_token(proxy)
        return f"{token.subject} {token.client_id[:6]} upstream:{upstream.access_token[:4]}"

    app = with_authorization_server(server.streamable_http_app(), proxy)
    servers = [Served(provider.app, provider_port), Served(app, port)]
    try:
        yield base
    finally:
        for s in reversed(servers):
            s.stop()


def test_mcp_sdk_server_protected_by_the_proxy(protected_server: str) -> None:
    async def scenario() -> None:
        outcome = await run_mcp_session(protected_server + "/mcp", expected_issuer=protected_server)
        subject, client, upstream = outcome.text.split()
        assert subject == "github:4242"  # the dev provider's user, through the proxy's subject
        assert outcome.client_info is not None and outcome.client_info.client_id.startswith(client)
        # The tool obtained the user's upstream token through the explicit API (never the client).
        assert upstream == "upstream:gho_"
        assert outcome.tokens is not None and not outcome.tokens.access_token.startswith("gho_")
        again = await refresh_and_call(outcome)
        assert again.text == outcome.text

    asyncio.run(scenario())
