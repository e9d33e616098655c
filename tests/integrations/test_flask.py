"""Flask: ``oauthproxy_blueprint(proxy)`` serves the authorization server and ``@require_oauth``
guards views. A real threaded WSGI server on loopback; the `mcp` SDK's OAuth client completes
discovery, DCR, PKCE, consent and token, then reads a protected view."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, g

from oauthproxy_adapters.http_clients import SyncHttpClient
from oauthproxy_adapters.integrations.flask import (
    current_principal,
    oauthproxy_blueprint,
    require_oauth,
)
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_core.http import MAX_BODY_BYTES

from .support import OAuthGet, Upstream, wsgi_behind_proxy


def flask_app(base: str, upstream: Upstream) -> Any:
    config = upstream.config(base, mcp_path="/api", scopes_supported=("mcp", "admin"))
    proxy = Proxy(config, new_keyring(), MemoryStore(), SyncHttpClient())
    app = Flask(__name__)
    app.register_blueprint(oauthproxy_blueprint(proxy))

    @app.get("/api/me")
    @require_oauth(["mcp"])
    def me() -> Any:
        principal = current_principal()
        assert principal is not None and principal is g.oauthproxy_principal
        return {"subject": principal.subject, "client_id": principal.client_id}

    @app.get("/api/admin")
    @require_oauth(["admin"])
    def admin() -> Any:
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with wsgi_behind_proxy(flask_app) as (base, _upstream):
        yield base


def test_endpoints_and_challenges(server: str) -> None:
    meta = httpx.get(server + "/.well-known/oauth-authorization-server")
    assert meta.status_code == 200 and meta.json()["issuer"] == server
    assert meta.headers["access-control-allow-origin"] == "*"
    pre = httpx.options(server + "/token", headers={"Origin": "https://app.example"})
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
    r = httpx.get(server + "/api/me")
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == [
        f'Bearer resource_metadata="{server}/.well-known/oauth-protected-resource/api", scope="mcp"'
    ]
    r = httpx.post(server + "/register", content=b"x" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413


def test_full_flow_with_the_sdk_client(server: str) -> None:
    async def scenario() -> None:
        client = OAuthGet(server + "/api", scope="mcp")
        r = await client.get(server + "/api/me")
        assert r.status_code == 200, r.text
        assert r.json()["subject"] == "github:4242"
        assert client.storage.client_info is not None
        assert r.json()["client_id"] == client.storage.client_info.client_id
        assert client.browser.consent_pages == 1
        r = httpx.get(
            server + "/api/admin", headers={"Authorization": f"Bearer {client.access_token}"}
        )
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]

    asyncio.run(scenario())


def test_the_route_tables_prefix_route_is_served(server: str) -> None:
    """RFC 7592 management (``/register/<client_id>``, a prefix route of the core's table) is the
    core's, not the framework's 404: without a registration access token it is 401."""
    r = httpx.get(server + "/register/some-client")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
