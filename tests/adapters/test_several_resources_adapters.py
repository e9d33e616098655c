"""spec/security.md 40 in the embedded adapters: with ``[[resources]]``, the WSGI adapter and the
proxy's own h11 server check a token at a resource's path against that resource (RFC 8707 §2, one
audience per token), as the ASGI application does: a token minted for ``/a`` works at ``/a`` and is
refused with 401 at ``/b``. Both adapters ask ``ProxyConfig.resource_for_request``."""

from __future__ import annotations

import io
from typing import Any

import httpx

from oauthproxy_adapters.h11_server import serve
from oauthproxy_adapters.proxy import AsyncProxy, Proxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.wsgi import OAuthProxyWSGI, principal_from_environ
from oauthproxy_core import HttpFailure, HttpRequest, HttpResponse, Request, Response
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.http import json_response
from tests.adapters.live_servers import H11Thread
from tests.harness import Browser, Harness, keys
from tests.property.test_invariant_40_several_resources import config_for, sign_in


def _token_for_a() -> tuple[Harness, str]:
    h = Harness(config_for("https://proxy.example", ("/a", "/b")))
    token = sign_in(h, Browser(), h.config.resource_urls[0])["access_token"]
    return h, str(token)


def test_invariant_40_the_wsgi_adapter_checks_each_path_against_its_own_resource() -> None:
    h, token = _token_for_a()
    proxy = Proxy(h.config, keys(), h.store, h.upstream, clock=h.clock)
    seen: dict[str, Principal | None] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["principal"] = principal_from_environ(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    wsgi = OAuthProxyWSGI(proxy, app)
    statuses = {}
    for path in ("/a", "/b"):
        seen.clear()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "proxy.example",
            "SERVER_PORT": "443",
            "HTTP_HOST": "proxy.example",
            "wsgi.url_scheme": "https",
            "wsgi.input": io.BytesIO(b"{}"),
            "CONTENT_LENGTH": "2",
            "CONTENT_TYPE": "application/json",
            "HTTP_AUTHORIZATION": "Bearer " + token,
        }
        started: list[str] = []

        def start_response(status: str, headers: Any, *_: Any) -> None:
            started.append(status)  # noqa: B023 (called before the loop moves on)

        b"".join(wsgi(environ, start_response))
        statuses[path] = started[0]
        if path == "/a":
            principal = seen.get("principal")
            assert principal is not None and principal.resource == h.config.resource_urls[0]
    assert statuses["/a"].startswith("200"), statuses
    assert statuses["/b"].startswith("401") and "principal" not in seen, statuses


def test_invariant_40_the_h11_server_checks_each_path_against_its_own_resource() -> None:
    h, token = _token_for_a()

    async def no_upstream(_req: HttpRequest) -> HttpResponse | HttpFailure:
        raise AssertionError("a bearer check makes no upstream call")

    async def app(req: Request, principal: Principal | None) -> Response:
        assert principal is not None
        return json_response(200, {"resource": principal.resource}, no_store=True)

    proxy = AsyncProxy(h.config, keys(), AsyncMemoryStore(), no_upstream, clock=h.clock)
    server = H11Thread(lambda _base, sock: serve(proxy, sock=sock, app_handler=app))
    try:
        headers = {"Authorization": "Bearer " + token}
        at_a = httpx.post(server.base + "/a", json={}, headers=headers, trust_env=False)
        at_b = httpx.post(server.base + "/b", json={}, headers=headers, trust_env=False)
    finally:
        server.stop()
    assert at_a.status_code == 200 and at_a.json()["resource"] == h.config.resource_urls[0]
    assert at_b.status_code == 401 and 'error="invalid_token"' in at_b.headers["www-authenticate"]
