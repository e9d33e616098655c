"""An application's own test of its protected API, written with ``oauthproxy_adapters.testing``.

This file is the example of spec/docs/recipes/testing.md, included there verbatim: the application
is a Starlette app that serves the authorization server (``install``) and one protected route; the
test signs a user in through the whole OAuth flow, in process, and calls the route with the token.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from oauthproxy_adapters.integrations.starlette import install, require_principal
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.testing import (
    FakeProvider,
    UpstreamUser,
    adrive_httpx,
    asgi_client,
    bearer,
    in_memory_proxy,
    login,
    proxy_config,
    refresh,
)

BASE = "https://api.example.com"


# -- the application under test (in a real project, imported from it) ---------------------------------


async def me(request: Request) -> JSONResponse:
    principal = await require_principal(scopes=["mcp"])(request)
    return JSONResponse({"subject": principal.subject})


def build_app(proxy: AsyncProxy) -> Starlette:
    app = Starlette(routes=[Route("/api/me", me)])
    install(app, proxy)
    return app


# -- the test -------------------------------------------------------------------------------------------


def test_a_signed_in_user_reaches_the_api_and_a_stranger_does_not() -> None:
    provider = FakeProvider(
        redirect_uri=BASE + "/auth/callback", user=UpstreamUser(id=7, login="ada")
    )
    proxy = in_memory_proxy(proxy_config(BASE, provider, mcp_path="/api"), provider)

    async def scenario() -> None:
        async with asgi_client(build_app(proxy), BASE) as client:
            stranger = await client.get("/api/me")
            assert stranger.status_code == 401

            # DCR, PKCE, the consent page, the provider, the callback, the token request.
            session = await adrive_httpx(login(BASE, provider, resource=BASE + "/api"), client)
            token = session.tokens["access_token"]
            signed_in = await client.get("/api/me", headers=bearer(token))
            assert signed_in.status_code == 200
            assert signed_in.json() == {"subject": "github:7"}

            fresh = await adrive_httpx(
                refresh(BASE, session.client, session.tokens["refresh_token"]), client
            )
            again = await client.get("/api/me", headers=bearer(fresh["access_token"]))
            assert again.json() == {"subject": "github:7"}

    asyncio.run(scenario())
