"""End to end, the client credentials grant (RFC 6749 §4.4, MCP extension
``io.modelcontextprotocol/oauth-client-credentials``): ``oauthproxy serve`` as a process with two
machine clients in ``[[clients.static]]`` (a secret from the environment; ``private_key_jwt`` with
an inline JWK Set), the demo MCP server behind its gateway, and the real `mcp` SDK clients
``ClientCredentialsOAuthProvider`` and ``PrivateKeyJWTOAuthProvider``, and the TypeScript SDK's
``ClientCredentialsProvider`` and ``PrivateKeyJwtProvider`` (``@modelcontextprotocol/sdk``, pinned in
``tests/ts_sdk/package.json``, installed with ``npm ci`` when missing, run with Node 20).

Each SDK client finds the proxy by discovery (RFC 9728 from the 401, then RFC 8414), obtains a token
with no browser and no user, lists the tools and calls ``whoami``, which reports the identity headers
the gateway added: the configured subject (``service:ci-bot``) and client. Then the operator revokes
the client with ``oauthproxy grants revoke --client`` from another process: its token is refused,
and the client's next request obtains a new one. The metrics name the grant type.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from joserfc.jwk import ECKey
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from oauthproxy_adapters.demo_mcp import build_demo_mcp_app
from oauthproxy_adapters.testing.serve import AppThread, ServeProcess, oauthproxy_command
from tests.e2e.mcp_client import InMemoryTokenStorage

# The demo MCP server's tools (demo_mcp.py); with no [[gateway.tools]] rule, tools/list shows all.
ALL_DEMO_TOOLS = ["admin_stats", "provider_token", "whoami"]

CI_SECRET = "ci-bot-secret-from-the-environment"
TS_SDK = Path(__file__).resolve().parents[1] / "ts_sdk"
NPM_TIMEOUT = 600.0
SIGNER_KEY = ECKey.generate_key("P-256", parameters={"kid": "signer-1"})


def _toml_inline(value: Any) -> str:
    """``value`` (strings, lists, tables) as a TOML inline value."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    return json.dumps(value)


def _config(port: int, tmp: Path, mcp: str) -> str:
    jwks = {"keys": [dict(SIGNER_KEY.as_dict(private=False))]}
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "http://127.0.0.1:{port}"
scopes_supported = ["mcp", "mcp:admin"]

[upstream]
provider = "github"
client_id = "never-contacted"
client_secret = "never-contacted-secret"

[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[gateway]
upstream_url = "{mcp}/mcp"

[lifetimes]
revocation_staleness = 0

[metrics]
enabled = true

[[clients.static]]
client_id = "ci-bot"
client_secret_env = "CI_BOT_SECRET"
token_endpoint_auth_method = "client_secret_basic"
grant_types = ["client_credentials"]
scopes = ["mcp"]
subject = "service:ci-bot"

[[clients.static]]
client_id = "signer"
token_endpoint_auth_method = "private_key_jwt"
jwks = {_toml_inline(jwks)}
grant_types = ["client_credentials"]
subject = "service:signer"
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ServeProcess]:
    mcp = AppThread(lambda _base: build_demo_mcp_app(), lifespan="on")
    try:
        serve = ServeProcess.launch(
            tmp_path,
            lambda port: _config(port, tmp_path, mcp.base),
            env={"CI_BOT_SECRET": CI_SECRET},
        )
        try:
            yield serve
        finally:
            serve.stop()
    finally:
        mcp.stop()


async def _call_whoami(provider: httpx2.Auth, server_url: str) -> tuple[list[str], str]:
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30)) as http_client,
            streamable_http_client(server_url, http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = [tool.name for tool in (await session.list_tools()).tools]
            result = await session.call_tool("whoami", {})
            assert not result.is_error, result
            text = "".join(c.text for c in result.content if isinstance(c, TextContent))
            return tools, text


def _refused(base: str, token: str) -> bool:
    resp = httpx.post(
        base + "/mcp",
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        },
        content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        timeout=10.0,
        trust_env=False,
    )
    assert resp.status_code in (200, 401), resp.text
    return resp.status_code == 401


def test_mcp_sdk_client_credentials_provider_lists_and_calls_tools_through_the_gateway(
    stack: ServeProcess, tmp_path: Path
) -> None:
    base = stack.base_url
    storage = InMemoryTokenStorage()

    def provider() -> ClientCredentialsOAuthProvider:
        return ClientCredentialsOAuthProvider(
            server_url=base + "/mcp",
            storage=storage,
            client_id="ci-bot",
            client_secret=CI_SECRET,
            token_endpoint_auth_method="client_secret_basic",
            issuer=base,
        )

    tools, text = asyncio.run(_call_whoami(provider(), base + "/mcp"))
    assert sorted(tools) == ALL_DEMO_TOOLS  # no [[gateway.tools]] rule hides any
    # The gateway forwarded the configured subject and the client (X-OAuthProxy-*).
    assert text == "you are service:ci-bot (login ?), calling through client ci-bot", text
    assert storage.tokens is not None
    first = storage.tokens
    assert first.refresh_token is None and first.scope == "mcp"

    metrics = httpx.get(base + "/metrics", timeout=5.0, trust_env=False).text
    assert (
        'oauthproxy_transitions_total{event="token_issued",outcome="applied",'
        'state="client_credentials"} 1.0'
    ) in metrics

    # The operator revokes the machine client from another process, on the shared store.
    done = subprocess.run(
        [
            *oauthproxy_command(),
            "grants",
            "revoke",
            "--config",
            str(stack.config),
            "--client",
            "ci-bot",
        ],
        cwd=tmp_path,
        # The command reads the configuration as serve does, secrets from the environment too.
        env={**os.environ, "CI_BOT_SECRET": CI_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "subject service:ci-bot" in done.stdout and "revoked 1 grant(s)" in done.stdout
    assert _refused(base, first.access_token)
    # The configuration still admits the client: the SDK, answered 401, obtains a new token.
    tools, text = asyncio.run(_call_whoami(provider(), base + "/mcp"))
    assert text.startswith("you are service:ci-bot ")
    assert storage.tokens is not None and storage.tokens.access_token != first.access_token


def test_mcp_sdk_private_key_jwt_provider_lists_and_calls_tools_through_the_gateway(
    stack: ServeProcess,
) -> None:
    base = stack.base_url
    assertions = SignedJWTParameters(
        issuer="signer",
        subject="signer",
        signing_key=SIGNER_KEY.as_pem(private=True).decode(),
        signing_algorithm="ES256",
        lifetime_seconds=120,
    )
    storage = InMemoryTokenStorage()
    provider = PrivateKeyJWTOAuthProvider(
        server_url=base + "/mcp",
        storage=storage,
        client_id="signer",
        assertion_provider=assertions.create_assertion_provider(),
        scope="mcp",
        issuer=base,
    )
    tools, text = asyncio.run(_call_whoami(provider, base + "/mcp"))
    assert sorted(tools) == ALL_DEMO_TOOLS  # no [[gateway.tools]] rule hides any
    assert text == "you are service:signer (login ?), calling through client signer", text
    assert storage.tokens is not None and storage.tokens.scope == "mcp"
    assert storage.tokens.refresh_token is None
    # The metadata the SDK read advertises what the extension requires.
    metadata = httpx.get(
        base + "/.well-known/oauth-authorization-server", timeout=5.0, trust_env=False
    ).json()
    assert "client_credentials" in metadata["grant_types_supported"]
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "ES256" in metadata["token_endpoint_auth_signing_alg_values_supported"]


# -- the TypeScript SDK ----------------------------------------------------------------------------

_install_lock = threading.Lock()


def ts_sdk_installed() -> Path:
    """``npm ci`` in tests/ts_sdk unless its node_modules is there; never skipped: a missing Node
    or a failed install fails the test."""
    with _install_lock:
        marker = TS_SDK / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
        if not marker.is_file():
            npm = shutil.which("npm")
            assert npm is not None, "the TypeScript SDK tests need Node.js 20+ and npm on PATH"
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=TS_SDK,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
            assert done.returncode == 0 and marker.is_file(), done.stdout + done.stderr
        return TS_SDK


def _ts_client(base: str, **env: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node is not None, "the TypeScript SDK tests need Node.js 20+"
    return subprocess.run(
        [node, str(ts_sdk_installed() / "client_credentials.mjs")],
        cwd=TS_SDK,
        env={**os.environ, "MCP_URL": base + "/mcp", "ISSUER": base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_ts_client(base: str, **env: str) -> dict[str, Any]:
    done = _ts_client(base, **env)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_typescript_sdk_client_credentials_provider_lists_and_calls_tools(
    stack: ServeProcess,
) -> None:
    base = stack.base_url
    out = _run_ts_client(base, CLIENT_ID="ci-bot", CLIENT_SECRET=CI_SECRET)
    assert sorted(out["tools"]) == ALL_DEMO_TOOLS
    assert out["text"] == "you are service:ci-bot (login ?), calling through client ci-bot"
    assert out["scope"] == "mcp" and out["refresh_token"] is False
    # A wrong secret gets nothing: the SDK reports the token endpoint's invalid_client.
    wrong = _ts_client(base, CLIENT_ID="ci-bot", CLIENT_SECRET=CI_SECRET + "-wrong")
    assert wrong.returncode == 1 and "InvalidClientError" in wrong.stderr, wrong.stderr
    assert wrong.stdout == ""


def test_typescript_sdk_private_key_jwt_provider_lists_and_calls_tools(
    stack: ServeProcess,
) -> None:
    base = stack.base_url
    jwk = json.dumps(SIGNER_KEY.as_dict(private=True))
    out = _run_ts_client(base, CLIENT_ID="signer", PRIVATE_JWK=jwk)
    assert sorted(out["tools"]) == ALL_DEMO_TOOLS
    assert out["text"] == "you are service:signer (login ?), calling through client signer"
    assert out["refresh_token"] is False
