"""The assembled server (``build_app``) fetches client metadata documents only through the safe
fetcher, under the ``[clients] cimd_allow_loopback`` policy (spec/security.md 23).

A real document server listens on 127.0.0.1 over plain HTTP. With the default policy the proxy must
refuse the ``client_id`` without ever connecting to it; with the test policy the same document is
fetched and the client reaches the consent page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import parse_settings

REDIRECT = "http://127.0.0.1:33418/callback"
VERIFIER = "v" * 64
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")


class _DocumentServer:
    def __init__(self) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                body = json.dumps(
                    {
                        "client_id": outer.url,
                        "client_name": "Loopback Document Client",
                        "redirect_uris": [REDIRECT],
                        "token_endpoint_auth_method": "none",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/client.json"


@pytest.fixture
def doc_server() -> Iterator[_DocumentServer]:
    docs = _DocumentServer()
    thread = threading.Thread(target=docs.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield docs
    finally:
        docs.server.shutdown()
        docs.server.server_close()
        thread.join(5)


def _authorize(tmp_path: Path, client_id: str, *, allow_loopback: bool) -> httpx.Response:
    settings = parse_settings(
        {
            "server": {"base_url": "http://127.0.0.1:8000"},
            "upstream": {
                "provider": "oauth2",
                "client_id": "c",
                "client_secret": "s",
                "authorize_url": "http://127.0.0.1:9/a",
                "token_url": "http://127.0.0.1:9/t",
                "userinfo_url": "http://127.0.0.1:9/u",
                "allow_insecure_http": True,
            },
            "store": {"url": "memory://"},
            "keys": {"file": str(tmp_path / "keys.json")},
            "clients": {"cimd_allow_loopback": allow_loopback},
        }
    )
    app, _proxy, cleanup = build_app(settings)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8000", follow_redirects=True
            ) as c:
                return await c.get(
                    "/authorize",
                    params={
                        "response_type": "code",
                        "client_id": client_id,
                        "redirect_uri": REDIRECT,
                        "code_challenge": CHALLENGE.decode(),
                        "code_challenge_method": "S256",
                        "state": "s1",
                    },
                )
        finally:
            await cleanup()

    return asyncio.run(go())


def test_default_policy_refuses_a_loopback_document_without_connecting(
    tmp_path: Path, doc_server: _DocumentServer
) -> None:
    """spec/security.md 23: the default policy never connects to a loopback document host."""
    resp = _authorize(tmp_path, doc_server.url, allow_loopback=False)
    assert resp.status_code == 400
    assert "invalid_client" in resp.text or "invalid_request" in resp.text
    # Never redirected to an unverified redirect_uri.
    assert "location" not in resp.headers
    assert doc_server.hits == []


def test_loopback_policy_fetches_the_document_and_shows_consent(
    tmp_path: Path, doc_server: _DocumentServer
) -> None:
    resp = _authorize(tmp_path, doc_server.url, allow_loopback=True)
    assert doc_server.hits == ["/oauth/client.json"]
    assert resp.status_code == 200, resp.text
    assert "Loopback Document Client" in resp.text
    # The verified part of the identity: the document's host.
    assert "127.0.0.1" in resp.text
