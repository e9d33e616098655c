"""Trusted issuers in the adapters (proxy.py, mcp_sdk.py; spec/security.md 37): the bearer check
fetches the issuer's JWK Set through the real SSRF-safe fetcher from a real HTTP server on loopback,
caches what it verified, never hands a trusted issuer's principal a user's upstream token, and the
`mcp` SDK's ``AccessToken`` keeps where a principal came from.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oauthproxy_adapters.mcp_sdk import ORIGIN_CLAIM, access_token_of, principal_of
from oauthproxy_adapters.proxy import AsyncProxy, Proxy
from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher, SyncSafeFetcher
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_core.errors import InvalidGrantError, InvalidTokenError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.tokens import Origin
from tests.harness import ISSUER, Clock, ScriptedUpstream, keys, make_config
from tests.other_issuers import FakeIssuer, trusted


class JwksServer:
    """A JWK Set on http://127.0.0.1:<port>/keys.json; ``hits`` counts the GETs it answered."""

    def __init__(self, idp: FakeIssuer) -> None:
        self.idp = idp
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.idp.jwks()).encode()
                self.send_response(200 if self.path == "/keys.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/keys.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer(FakeIssuer())
    try:
        yield server
    finally:
        server.stop()


def _config(server: JwksServer) -> Any:
    idp = server.idp
    idp.jwks_uri = server.url
    return make_config(
        cimd_allow_loopback=True,  # the fetcher's test policy: loopback over http
        trusted_issuers=(trusted(idp, jwks_uri=server.url),),
    )


def _sync_proxy(server: JwksServer, clock: Clock) -> Proxy:
    config = _config(server)
    proxy = Proxy(
        config,
        keys(),
        MemoryStore(clock=clock),
        ScriptedUpstream(callback_url=config.callback_url),
        fetch=SyncSafeFetcher(allow_loopback=True),
    )
    proxy.clock = clock
    return proxy


def test_invariant_37_the_proxy_fetches_keys_through_the_safe_fetcher_and_caches(
    jwks: JwksServer,
) -> None:
    clock = Clock()
    proxy = _sync_proxy(jwks, clock)
    token = jwks.idp.access_token(clock.now)
    for _ in range(3):
        verdict = proxy.verify("Bearer " + token, ("mcp",))
        assert isinstance(verdict, Principal), verdict
        assert verdict.subject == "corp:alice"
        assert verdict.origin is Origin.TRUSTED_ISSUER
    assert jwks.hits == 1
    # Another token of the same issuer: the keys come from the store, not the network.
    assert isinstance(proxy.verify("Bearer " + jwks.idp.access_token(clock.now)), Principal)
    assert jwks.hits == 1
    # A cached token still expires.
    clock.advance(601)
    assert isinstance(proxy.verify("Bearer " + token), Challenge)
    # Never a user's upstream token.
    principal = proxy.verify("Bearer " + jwks.idp.access_token(clock.now))
    assert isinstance(principal, Principal)
    with pytest.raises(InvalidGrantError):
        proxy.upstream_token(principal)


def test_invariant_37_without_a_safe_fetcher_a_trusted_token_fails_closed(
    jwks: JwksServer,
) -> None:
    clock = Clock()
    config = _config(jwks)
    proxy = Proxy(
        config, keys(), MemoryStore(clock=clock), ScriptedUpstream(callback_url=config.callback_url)
    )
    proxy.clock = clock
    verdict = proxy.verify("Bearer " + jwks.idp.access_token(clock.now))
    assert isinstance(verdict, Challenge)
    assert verdict.status == 401
    assert jwks.hits == 0


def test_invariant_37_the_async_proxy_and_the_sdk_token_keep_the_origin(jwks: JwksServer) -> None:
    clock = Clock()
    config = _config(jwks)

    async def scenario() -> None:
        fetcher = AsyncSafeFetcher(allow_loopback=True)
        proxy = AsyncProxy(
            config,
            keys(),
            AsyncMemoryStore(clock=clock),
            ScriptedUpstream(callback_url=config.callback_url),  # type: ignore[arg-type]
            fetch=fetcher,
        )
        proxy.clock = clock
        try:
            token = jwks.idp.access_token(clock.now)
            principal = await proxy.verify("Bearer " + token)
            assert isinstance(principal, Principal), principal
            access = access_token_of(principal, token, ISSUER)
            assert access.claims is not None
            assert access.claims[ORIGIN_CLAIM] == "trusted_issuer"
            again = principal_of(access)
            assert again.origin is Origin.TRUSTED_ISSUER
            with pytest.raises(InvalidGrantError):
                await proxy.upstream_token(again)
            # An SDK token that lost the origin is not ours to trust.
            del access.claims[ORIGIN_CLAIM]
            with pytest.raises(InvalidTokenError):
                principal_of(access)
        finally:
            await fetcher.aclose()

    asyncio.run(scenario())
    assert jwks.hits == 1
