"""Each example in ``adapters/examples/`` runs as its own process (``python app.py``) against a
local development provider, configured only through the ``proxy.toml`` named by
``OAUTHPROXY_CONFIG``, and the `mcp` SDK's client completes the whole flow: discovery, DCR, PKCE,
this proxy's consent page, the token exchange, then an MCP tool call (MCP servers) or a request to
the protected route (web frameworks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.mcp_client import free_loopback_port, run_mcp_session

from .support import EXAMPLES, ExampleProcess, OAuthGet, Upstream

MCP_EXAMPLES = ("fastmcp", "mcp_sdk")
WEB_EXAMPLES = ("fastapi", "flask", "django")


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    started: list[tuple[ExampleProcess, Upstream]] = []

    def start(name: str, mcp_path: str) -> str:
        base = f"http://127.0.0.1:{free_loopback_port()}"
        upstream = Upstream(base)
        config = tmp_path / f"{name}.toml"
        config.write_text(upstream.toml(base, keys_file=tmp_path / "keys.json", mcp_path=mcp_path))
        try:
            started.append((ExampleProcess(name, config, base), upstream))
        except BaseException:
            upstream.stop()
            raise
        return base

    yield start
    for process, upstream in started:
        process.stop()
        upstream.stop()


def test_every_example_is_one_file_and_a_readme() -> None:
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
    assert names == sorted(MCP_EXAMPLES + WEB_EXAMPLES)
    for name in names:
        assert sorted(p.name for p in (EXAMPLES / name).iterdir() if p.suffix) == [
            "README.md",
            "app.py",
        ]


@pytest.mark.parametrize("name", MCP_EXAMPLES)
def test_mcp_example_full_flow(name: str, launch: Callable[[str, str], str]) -> None:
    base = launch(name, "/mcp")
    unauthenticated = httpx.post(base + "/mcp", json={})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"].startswith(
        f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
    )

    async def scenario() -> None:
        outcome = await run_mcp_session(base + "/mcp", expected_issuer=base)
        assert outcome.text == "github:4242 demo-user upstream-token:True"
        assert outcome.browser.consent_pages == 1
        assert outcome.tokens is not None and not outcome.tokens.access_token.startswith("gho_")

    asyncio.run(scenario())


@pytest.mark.parametrize("name", WEB_EXAMPLES)
def test_web_example_full_flow(name: str, launch: Callable[[str, str], str]) -> None:
    base = launch(name, "/api")
    unauthenticated = httpx.get(base + "/api/me")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/api", scope="mcp"'
    )

    async def scenario() -> None:
        client = OAuthGet(base + "/api", scope="mcp")
        r = await client.get(base + "/api/me")
        assert r.status_code == 200, r.text
        assert r.json() == {"subject": "github:4242", "login": "demo-user"}
        assert client.browser.consent_pages == 1

    asyncio.run(scenario())
