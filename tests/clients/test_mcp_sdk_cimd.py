"""The real `mcp` SDK client, configured with ``client_metadata_url``, completes a flow against the
proxy without Dynamic Client Registration.

The SDK requires an https URL with a path. The document is served over real TLS on loopback: a
self-signed certificate for ``client.example``, trusted only by this test's safe fetcher, which
resolves ``client.example`` to 127.0.0.1 (an injected resolver) under the test policy
(``allow_loopback``). So the fetch runs through the production path: address check, pinning to the
IP literal, SNI and certificate verification for the name, the size cap and content-type check."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
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
from tests.e2e.conftest_idp import free_port
from tests.e2e.mcp_client import run_mcp_session
from tests.harness import make_config, make_profile

HOST = "client.example"


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Docs(BaseHTTPRequestHandler):
    body = b""
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.headers.get("Host", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tls_document(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    cert, key = _certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Docs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    url = f"https://{HOST}:{server.server_address[1]}/oauth/client.json"
    _Docs.body = json.dumps(
        {
            "client_id": url,
            "client_name": "SDK CIMD client",
            "redirect_uris": ["http://127.0.0.1/callback"],  # any loopback port (RFC 8252 §7.3)
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    ).encode()
    _Docs.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        yield url, trust
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def cimd_server(tls_document: tuple[str, ssl.SSLContext]) -> Iterator[tuple[str, str]]:
    url, trust = tls_document
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
        verify=trust,
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
    cimd_server: tuple[str, str],
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
    assert _Docs.hits and all(h.startswith(HOST + ":") for h in _Docs.hits)
