"""Django: ``path("", include(oauthproxy_urls(proxy)))`` serves the authorization server and
``@oauth_required`` guards views, under Django's CSRF middleware. Settings are configured here, in
code; a real threaded WSGI server on loopback; the `mcp` SDK's OAuth client completes discovery,
DCR, PKCE, consent (two cookies at once through Django's response) and token, then reads a view."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from typing import Any

import django
import httpx
import pytest
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import clear_url_caches, include, path

from oauthproxy_adapters.http_clients import SyncHttpClient
from oauthproxy_adapters.integrations.django import oauth_required, oauthproxy_urls
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_adapters.stores.memory import MemoryStore

from .support import OAuthGet, Upstream, wsgi_behind_proxy

URLS = types.ModuleType("oauthproxy_test_django_urls")


def configure() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="integration-test-only",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=URLS,
            MIDDLEWARE=[
                "django.middleware.common.CommonMiddleware",
                "django.middleware.csrf.CsrfViewMiddleware",
            ],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()


@oauth_required(scopes=["mcp"])
def me(request: HttpRequest) -> JsonResponse:
    principal = request.oauthproxy_principal  # type: ignore[attr-defined]
    return JsonResponse({"subject": principal.subject, "client_id": principal.client_id})


@oauth_required
def anyone(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"scopes": list(request.oauthproxy_principal.scopes)})  # type: ignore[attr-defined]


def django_app(base: str, upstream: Upstream) -> Any:
    configure()
    config = upstream.config(base, mcp_path="/api")
    proxy = Proxy(config, new_keyring(), MemoryStore(), SyncHttpClient())
    URLS.urlpatterns = [  # type: ignore[attr-defined]
        path("", include(oauthproxy_urls(proxy))),
        path("api/me", me),
        path("api/anyone", anyone),
    ]
    clear_url_caches()
    return get_wsgi_application()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with wsgi_behind_proxy(django_app) as (base, _upstream):
        yield base


def test_endpoints_and_challenges(server: str) -> None:
    meta = httpx.get(server + "/.well-known/oauth-authorization-server")
    assert meta.status_code == 200 and meta.json()["issuer"] == server
    # A POST from an OAuth client, without any Django CSRF cookie, reaches the core.
    r = httpx.post(server + "/token", data={"grant_type": "authorization_code", "code": "x"})
    assert r.status_code in (400, 401) and "error" in r.json()
    assert r.headers["cache-control"] == "no-store"
    r = httpx.get(server + "/api/me")
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == [
        f'Bearer resource_metadata="{server}/.well-known/oauth-protected-resource/api", scope="mcp"'
    ]
    r = httpx.get(server + "/api/anyone", headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


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
            server + "/api/anyone", headers={"Authorization": f"Bearer {client.access_token}"}
        )
        assert r.status_code == 200 and "mcp" in r.json()["scopes"]

    asyncio.run(scenario())


def test_the_route_tables_prefix_route_is_served(server: str) -> None:
    """RFC 7592 management (``/register/<client_id>``, a prefix route of the core's table) is the
    core's, not the framework's 404: without a registration access token it is 401."""
    r = httpx.get(server + "/register/some-client")
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_token"
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
