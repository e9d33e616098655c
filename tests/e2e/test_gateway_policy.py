"""End to end, spec/security.md 38 and the forwarded upstream token: ``oauthproxy serve`` as a process
with ``[[gateway.tools]]`` rules and ``forward_upstream_token = true``, the demo MCP server (a real
`mcp` SDK server with ``whoami``, ``admin_stats`` and ``provider_token``) behind its gateway, the
testing kit's GitHub-shaped provider on loopback, and the real `mcp` SDK client (its own discovery,
registration, PKCE and consent through a headless browser, ``tests/e2e/mcp_client.py``).

One session proves, in order: ``tools/list`` hides ``admin_stats`` from a token without
``mcp:admin``; the provider's token reached the MCP server (``provider_token`` shows the SHA-256
fingerprint of the token the provider issued); a raw ``tools/call`` of ``admin_stats`` with that
token is refused with 403 and the step-up challenge and never reaches the MCP server; and the SDK
client, calling ``admin_stats`` itself, receives that 403, re-authorizes for the union of its scopes
and the challenge's (mcp 2.x implements SEP-2350 step-up), and the call succeeds; the listing then
shows ``admin_stats``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from mcp_types import TextContent

from oauthproxy_adapters.demo_mcp import token_fingerprint
from oauthproxy_adapters.testing import FakeProvider, upstream_toml
from tests.e2e.demo_stack import CLIENT_ID, CLIENT_SECRET, demo_stack
from tests.e2e.mcp_client import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    _Recorder,
    _StorageExpiryAwareProvider,
    free_loopback_port,
)


def proxy_toml(base: str, port: int, provider: str, mcp: str, tmp: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
mcp_path = "/mcp"
scopes_supported = ["mcp", "mcp:admin"]
default_scopes = ["mcp"]

{upstream_toml(provider, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)}
[consent]
mode = "always"

[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[gateway]
upstream_url = "{mcp}"
forward_upstream_token = true

[[gateway.tools]]
name = "admin_*"
scopes = ["mcp:admin"]
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    def config(base: str, port: int, provider: str, mcp: list[str]) -> str:
        return proxy_toml(base, port, provider, mcp[0], tmp_path)

    with demo_stack(tmp_path, 1, config) as started:
        yield started


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


async def scenario(base: str, provider: FakeProvider) -> dict[str, Any]:
    recorder = _Recorder(None)
    redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
    browser = HeadlessBrowser(redirect_uri, recorder, expected_issuer=base)
    storage = InMemoryTokenStorage()
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "step-up e2e",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    )
    oauth = _StorageExpiryAwareProvider(
        server_url=base + "/mcp",
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    seen: dict[str, Any] = {}
    with anyio.fail_after(60):
        async with (
            httpx2.AsyncClient(
                auth=oauth,
                timeout=httpx2.Timeout(30),
                event_hooks={"response": [recorder.on_mcp_response]},
            ) as http_client,
            streamable_http_client(base + "/mcp", http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            seen["first_listing"] = [t.name for t in (await session.list_tools()).tools]
            seen["first_scope"] = (await storage.get_tokens()).scope  # type: ignore[union-attr]
            seen["provider_token"] = _text(await session.call_tool("provider_token", {}))
            seen["upstream_tokens"] = list(provider.tokens)
            token = (await storage.get_tokens()).access_token  # type: ignore[union-attr]
            seen["raw_refusal"] = await _raw_call(base, token)
            seen["authorizations_before"] = browser.authorizations
            admin = await session.call_tool("admin_stats", {})
            seen["admin"] = (_text(admin), admin.is_error)
            seen["authorizations_after"] = browser.authorizations
            seen["second_listing"] = [t.name for t in (await session.list_tools()).tools]
            seen["second_scope"] = (await storage.get_tokens()).scope  # type: ignore[union-attr]
    seen["steps"] = recorder.steps
    return seen


async def _raw_call(base: str, token: str) -> dict[str, Any]:
    """``tools/call admin_stats`` without a session, as a client that knows the tool's name would."""
    body = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "admin_stats"}}
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        resp = await http.post(
            base + "/mcp",
            content=json.dumps(body),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
            },
        )
    return {"status": resp.status_code, "challenge": resp.headers.get("www-authenticate")}


def test_invariant_38_tools_filtered_refused_and_stepped_up_with_the_mcp_sdk_client(
    stack: dict[str, Any],
) -> None:
    base, provider = stack["base"], stack["provider"]
    seen = asyncio.run(scenario(base, provider))
    trail = "\n".join(seen["steps"])
    assert seen["first_scope"] == "mcp", trail
    assert sorted(seen["first_listing"]) == ["provider_token", "whoami"], trail
    # The MCP server received the user's provider token (its fingerprint, never the token).
    fingerprints = {token_fingerprint(t) for t in seen["upstream_tokens"]}
    prefix = "provider token received, sha256 "
    assert seen["provider_token"].startswith(prefix), seen["provider_token"]
    assert seen["provider_token"].removeprefix(prefix) in fingerprints
    # A forbidden call: 403 with the step-up challenge.
    assert seen["raw_refusal"] == {
        "status": 403,
        "challenge": f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", '
        'scope="mcp mcp:admin", error="insufficient_scope"',
    }
    # The SDK client stepped up by itself: one more browser authorization, then success.
    text, is_error = seen["admin"]
    # "2 calls": provider_token, then admin_stats once; the refused attempts never ran it.
    assert not is_error and text == "2 calls served; your scopes: mcp mcp:admin", trail
    assert seen["authorizations_after"] == seen["authorizations_before"] + 1, trail
    assert any(s.endswith("/mcp -> 403") for s in seen["steps"]), trail
    assert set(seen["second_scope"].split()) == {"mcp", "mcp:admin"}
    assert sorted(seen["second_listing"]) == ["admin_stats", "provider_token", "whoami"]
