"""FastAPI and Starlette: ``install(app, proxy)`` serves the authorization server,
``Depends(require_principal(scopes=[...]))`` hands a route the verified ``Principal`` or answers
with the core's challenge. The `mcp` SDK's OAuth client (as a plain HTTP client's auth) completes
discovery, DCR, PKCE, consent and token against a real uvicorn server, then reads a protected route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.integrations.starlette import install, principal_of, require_principal
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_core.handlers.bearer import Principal

from .support import OAuthGet, Upstream, asgi_behind_proxy

SCOPES = ("mcp", "admin", "offline_access")


def make_proxy(base: str, upstream: Upstream) -> AsyncProxy:
    config = upstream.config(base, mcp_path="/api", scopes_supported=SCOPES)
    return AsyncProxy(config, new_keyring(), AsyncMemoryStore(), AsyncHttpClient())


def fastapi_app(base: str, upstream: Upstream) -> Any:
    app = FastAPI()
    install(app, make_proxy(base, upstream))

    @app.get("/api/me")
    async def me(
        principal: Annotated[Principal, Depends(require_principal(scopes=["mcp"]))],
    ) -> Any:
        return {"subject": principal.subject, "client_id": principal.client_id}

    @app.get("/api/admin")
    async def admin(
        principal: Annotated[Principal, Depends(require_principal(scopes=["admin"]))],
    ) -> Any:
        return {"subject": principal.subject}

    @app.get("/public")
    async def public() -> Any:
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def fastapi_server() -> Iterator[str]:
    with asgi_behind_proxy(fastapi_app) as (base, _upstream):
        yield base


def test_fastapi_unauthenticated_and_public(fastapi_server: str) -> None:
    base = fastapi_server
    r = httpx.get(base + "/api/me")
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == [
        f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/api", scope="mcp"'
    ]
    assert r.json()["error"] == "invalid_token"  # the core's body, rendered by install()'s handler
    r = httpx.get(base + "/api/me", headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert httpx.get(base + "/public").json() == {"ok": True}
    prm = httpx.get(base + "/.well-known/oauth-protected-resource/api").json()
    assert prm["resource"] == base + "/api"


def test_fastapi_full_flow_with_the_sdk_client(fastapi_server: str) -> None:
    base = fastapi_server

    async def scenario() -> None:
        client = OAuthGet(base + "/api", scope="mcp")
        r = await client.get(base + "/api/me")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["subject"] == "github:4242"
        assert client.storage.client_info is not None
        assert body["client_id"] == client.storage.client_info.client_id
        assert client.browser.consent_pages == 1
        # The same token lacks "admin": 403 insufficient_scope naming it (RFC 6750 §3.1).
        r = httpx.get(
            base + "/api/admin", headers={"Authorization": f"Bearer {client.access_token}"}
        )
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert 'scope="admin"' in r.headers["www-authenticate"]

    asyncio.run(scenario())


def test_starlette_endpoint_awaits_the_dependency() -> None:
    def build(base: str, upstream: Upstream) -> Any:
        proxy = make_proxy(base, upstream)
        check = require_principal(scopes=["mcp"], proxy=proxy)

        async def me(request: Request) -> JSONResponse:
            principal = await check(request)
            assert principal_of(request) == principal
            return JSONResponse({"subject": principal.subject})

        app = Starlette(routes=[Route("/api/me", me)])
        install(app, proxy)
        return app

    with asgi_behind_proxy(build) as (base, _upstream):
        r = httpx.get(base + "/api/me")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer ")

        async def scenario() -> None:
            client = OAuthGet(base + "/api")
            r = await client.get(base + "/api/me")
            assert r.status_code == 200 and r.json() == {"subject": "github:4242"}

        asyncio.run(scenario())


def test_the_route_tables_prefix_route_is_served(fastapi_server: str) -> None:
    """RFC 7592 management (``/register/<client_id>``, a prefix route of the core's table) is the
    core's, not the framework's 404: without a registration access token it is 401."""
    r = httpx.get(fastapi_server + "/register/some-client")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
