"""End to end, every part real: ``oauthproxy serve`` as a process with a TOML config, a real upstream
OIDC provider (npm ``oidc-provider``: one static client, no dynamic registration, PKCE required), a
real `mcp` SDK server behind the gateway, and the real `mcp` SDK client (``OAuthClientProvider`` with
a headless browser that submits the consent form). The client performs discovery (RFC 9728, RFC 8414),
DCR (RFC 7591), PKCE (RFC 7636), consent, the token exchange, a tool call through the gateway and a
refresh."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from oauthproxy_adapters.demo_mcp import build_demo_mcp_app
from oauthproxy_adapters.testing.serve import ServeProcess
from tests.e2e import conftest_idp as idp_support
from tests.e2e.mcp_client import refresh_and_call, run_mcp_session

idp_installed = idp_support.idp_installed
oidc_idp = idp_support.oidc_idp


class McpServerThread:
    """The demo MCP server (identity from the gateway's headers) under uvicorn, lifespan on."""

    def __init__(self) -> None:
        self.port = idp_support.free_port()
        config = uvicorn.Config(
            build_demo_mcp_app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "MCP server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def proxy_toml(port: int, idp_issuer: str, mcp_port: int, tmp_path: Path, extra: str = "") -> str:
    """``oauthproxy serve``'s configuration for this stack; ``extra``: more tables."""
    base = f"http://127.0.0.1:{port}"
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
mcp_path = "/mcp"

[upstream]
provider = "oidc"
issuer = "{idp_issuer}"
client_id = "proxy-client"
client_secret_env = "E2E_UPSTREAM_SECRET"
scopes = ["openid", "email", "profile", "offline_access"]
allow_insecure_http = true

[consent]
mode = "always"

[store]
url = "sqlite:///{tmp_path / "state.db"}"

[keys]
file = "{tmp_path / "keys.json"}"

[gateway]
upstream_url = "http://127.0.0.1:{mcp_port}/mcp"
{extra}"""


@pytest.fixture
def stack(oidc_idp: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = idp_support.free_port()
    base = f"http://127.0.0.1:{port}"
    idp = oidc_idp([base + "/auth/callback"], access_ttl=3600)
    mcp = McpServerThread()
    config = tmp_path / "proxy.toml"
    config.write_text(proxy_toml(port, idp.issuer, mcp.port, tmp_path))
    os.environ["E2E_UPSTREAM_SECRET"] = "proxy-secret"
    serve = ServeProcess(config, port, tmp_path)
    try:
        serve.start(env={"PYTHONUNBUFFERED": "1"})
        yield {"base": base, "idp": idp, "serve": serve}
    finally:
        serve.stop()
        mcp.stop()
        os.environ.pop("E2E_UPSTREAM_SECRET", None)


def test_mcp_sdk_client_through_serve_gateway_and_real_oidc_provider(stack: dict[str, Any]) -> None:
    base = stack["base"]

    async def scenario() -> None:
        first = await run_mcp_session(base + "/mcp", tool="whoami", expected_issuer=base)
        # The identity the MCP server saw came from the upstream provider via the gateway headers.
        assert first.text.startswith("you are oidc:testuser (login "), first.text
        assert first.authorizations == 1
        assert any("/consent" in s for s in first.steps), first.steps
        assert any("/register" in s for s in first.steps), "DCR was not used"
        # A refresh with the same client yields a new token that works through the gateway.
        second = await refresh_and_call(first)
        assert second.text == first.text
        assert second.tokens is not None and first.tokens is not None
        assert second.tokens.access_token != first.tokens.access_token

    asyncio.run(scenario())
    # The client never saw an upstream token: only the proxy's own JWTs were issued to it.
    health = httpx.get(base + "/healthz")
    assert health.status_code == 200
