"""The real `mcp` SDK client, configured with ``client_metadata_url``, completes a flow against the
proxy without Dynamic Client Registration.

The SDK requires an https URL with a path. The document is served over real TLS on loopback: a
self-signed certificate for ``client.example``, trusted only by this test's safe fetcher, which
resolves ``client.example`` to 127.0.0.1 (an injected resolver) under the test policy
(``allow_loopback``). So the fetch runs through the production path: address check, pinning to the
IP literal, SNI and certificate verification for the name, the size cap and content-type check."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from oauthproxy_adapters.devprovider import DevProvider
from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.mcp_sdk import mcp_auth, with_authorization_server
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from tests.adapters.test_mcp_sdk import Served
from tests.clients.support import TlsDocumentServer
from tests.e2e.conftest_idp import free_port
from tests.e2e.mcp_client import run_mcp_session
from tests.harness import make_config, make_profile

HOST = "client.example"


@pytest.fixture
def tls_document(tmp_path: Path) -> Iterator[tuple[str, TlsDocumentServer]]:
    docs = TlsDocumentServer(tmp_path, HOST)
    path = "/oauth/client.json"
    url = docs.serve(
        path,
        {
            "client_id": docs.url(path),
            "client_name": "SDK CIMD client",
            "redirect_uris": ["http://127.0.0.1/callback"],  # any loopback port (RFC 8252 §7.3)
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    try:
        yield url, docs
    finally:
        docs.stop()


@pytest.fixture
def cimd_server(tls_document: tuple[str, TlsDocumentServer]) -> Iterator[tuple[str, str]]:
    url, docs = tls_document
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
    fetcher = AsyncSafeFetcher(
        allow_loopback=True,  # the test policy: client.example resolves to 127.0.0.1 here
        resolver=lambda host, p: ["127.0.0.1"] if host == HOST else [],
        verify=docs.trust,
    )
    proxy = AsyncProxy(config, new_keyring(), AsyncMemoryStore(), AsyncHttpClient(), fetch=fetcher)
    server = MCPServer("protected", log_level="WARNING", **mcp_auth(proxy))

    @server.tool()
    async def whoami() -> str:
        token = get_access_token()
        assert token is not None
        return f"{token.subject} {token.client_id}"

    app = with_authorization_server(server.streamable_http_app(), proxy)
    servers = [Served(provider.app, provider_port), Served(app, port)]
    try:
        yield base, url
    finally:
        for s in reversed(servers):
            s.stop()


def test_mcp_sdk_client_with_client_metadata_url_needs_no_registration(
    cimd_server: tuple[str, str], tls_document: tuple[str, TlsDocumentServer]
) -> None:
    base, url = cimd_server

    async def scenario() -> None:
        outcome = await run_mcp_session(
            base + "/mcp", client_metadata_url=url, expected_issuer=base
        )
        subject, client_id = outcome.text.split()
        assert client_id == url
        assert outcome.client_info is not None and outcome.client_info.client_id == url
        assert outcome.requests_to("/register") == []  # no DCR
        assert outcome.token_requests("authorization_code")
        assert subject == "github:4242"

    asyncio.run(scenario())
    # The document was fetched over TLS with Host (and SNI) for the name, not the pinned address.
    hits = tls_document[1].hits
    assert hits and all(h.startswith(HOST + ":") for h in hits)
