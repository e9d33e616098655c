"""The adapters' verified-token cache (proxy.py): what goes in, and what is still checked on a hit.

The cache skips the ES256 signature check. It receives the access token of each response of the
proxy's own token endpoint (``tokens.own_token_claims``), so the first request with a fresh token
needs no verification; a token a client merely presents enters it only after a full verification.
A cached token still meets the revocation look-ups, at most ``[lifetimes] revocation_staleness``
seconds after the last one (spec/security.md 21, 34): a revocation is seen within that bound.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters import proxy as proxy_module
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.testing.flow import Call, Flow, Reply, drive, login, post_form, request
from oauthproxy_core import Request
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.errors import InvalidTokenError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.tokens import own_token_claims, verify_access_token
from tests.harness import Clock, ScriptedUpstream, keys, make_config

BASE = "http://127.0.0.1:8932"


class World:
    """A sync proxy driven in process: ``run(flow)`` sends each call straight to ``handle``."""

    def __init__(self, staleness: int | None = None) -> None:
        lifetimes = Lifetimes() if staleness is None else Lifetimes(revocation_staleness=staleness)
        config = make_config(issuer=BASE, lifetimes=lifetimes)
        self.upstream = ScriptedUpstream(callback_url=config.callback_url)
        self.clock = Clock()
        self.proxy: Proxy = Proxy(config, keys(), MemoryStore(clock=self.clock), self.upstream)
        self.proxy.clock = self.clock
        self.cookies: dict[str, str] = {}  # the browser's jar

    def run(self, flow: Flow[Any]) -> Any:
        return drive(flow, self.send)

    def send(self, call: Call) -> Reply:
        path, _, query = call.url.removeprefix(BASE).partition("?")
        resp = self.proxy.handle(
            Request(
                method=call.method,
                path=path,
                query=query,
                headers=tuple((k.lower(), v) for k, v in call.headers) + self._cookie_header(),
                body=call.body,
                remote_addr="127.0.0.1",
            )
        )
        for value in resp.header_values("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return Reply(resp.status, tuple((k.lower(), v) for k, v in resp.headers), resp.body)

    def _cookie_header(self) -> tuple[tuple[str, str], ...]:
        if not self.cookies:
            return ()
        return (("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())),)

    def access_token(self) -> tuple[str, Any]:
        session = self.run(login(BASE, self.upstream))
        return session.tokens["access_token"], session


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(ctx: Any, token: str, *, audience: str) -> Any:
        calls.append(token)
        return verify_access_token(ctx, token, audience=audience)

    monkeypatch.setattr(proxy_module, "verify_access_token", counting)
    return calls


def test_issued_token_needs_no_signature_check_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    proxy = world.proxy
    calls = _count_verifications(monkeypatch)
    access, _session = world.access_token()
    verdict = proxy.verify("Bearer " + access, ("mcp",))
    assert isinstance(verdict, Principal) and verdict.subject == "idp:42"
    assert calls == []
    # The cached claims are exactly what a full verification yields.
    ctx = proxy.server.context(now=proxy.now(), random=proxy.random)
    assert proxy.cache is not None
    hit = proxy.cache.get(access, ctx.now)
    assert hit is not None
    assert hit[0] == verify_access_token(ctx, access, audience=proxy.config.resource)


def test_presented_token_is_verified_before_it_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    proxy = world.proxy
    access, _session = world.access_token()
    assert proxy.cache is not None
    proxy.cache._entries.clear()
    calls = _count_verifications(monkeypatch)
    assert isinstance(proxy.verify("Bearer " + access), Principal)
    assert isinstance(proxy.verify("Bearer " + access), Principal)
    assert calls == [access]  # verified once, then served from the cache
    # A forged token (our header and claims, another signature) is never cached or accepted.
    head, body, _sig = access.split(".")
    forged = f"{head}.{body}.{'A' * 86}"
    verdict = proxy.verify("Bearer " + forged)
    assert isinstance(verdict, Challenge) and verdict.error == "invalid_token"
    assert proxy.cache.get(forged, proxy.now()) is None


def _revoke(world: World, session: Any) -> None:
    revoked = world.run(
        post_form(
            BASE + "/revoke",
            {
                "token": session.tokens["refresh_token"],
                "client_id": session.client["client_id"],
            },
        )
    )
    assert revoked.status == 200


def test_invariant_34_with_no_staleness_a_cached_token_meets_revocation_at_once() -> None:
    world = World(staleness=0)
    proxy = world.proxy
    access, session = world.access_token()
    assert isinstance(proxy.verify("Bearer " + access), Principal)
    assert proxy.cache is not None and proxy.cache.get(access, proxy.now()) is not None
    _revoke(world, session)
    verdict = proxy.verify("Bearer " + access)
    assert isinstance(verdict, Challenge) and verdict.error == "invalid_token"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    staleness=st.integers(min_value=0, max_value=30),
    uses=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
    revoke_after=st.integers(min_value=0, max_value=40),
)
def test_invariant_34_revocation_reaches_a_cached_token_within_the_staleness_bound(
    staleness: int, uses: list[int], revoke_after: int
) -> None:
    """Whatever the pattern of earlier requests, once ``revocation_staleness`` seconds have passed
    since a revocation every request with the token is refused, and none is look-up free for
    longer than the bound after its last look-up."""
    world = World(staleness=staleness)
    proxy = world.proxy
    access, session = world.access_token()
    for gap in uses:
        world.clock.advance(gap)
        assert isinstance(proxy.verify("Bearer " + access), Principal)
    world.clock.advance(revoke_after)
    _revoke(world, session)
    revoked_at = world.clock.now
    world.clock.advance(staleness)
    verdict = proxy.verify("Bearer " + access)
    assert isinstance(verdict, Challenge) and verdict.error == "invalid_token"
    assert world.clock.now - revoked_at == staleness


def test_invariant_34_between_look_ups_the_store_is_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(staleness=5)
    proxy = world.proxy
    access, _session = world.access_token()
    reads: list[tuple[str, str]] = []
    real_get = proxy.store.get

    def counting(kind: str, key: str) -> Any:
        reads.append((kind, key))
        return real_get(kind, key)

    monkeypatch.setattr(proxy.store, "get", counting)
    for _ in range(4):
        assert isinstance(proxy.verify("Bearer " + access), Principal)
        world.clock.advance(1)
    assert reads == []  # minted moments ago: looked up at issuance
    world.clock.advance(1)  # five seconds after issuance: look up again
    assert isinstance(proxy.verify("Bearer " + access), Principal)
    assert sorted(kind for kind, _key in reads) == ["revoked", "revoked-client"]


def test_own_token_claims_applies_the_claim_checks() -> None:
    world = World()
    proxy = world.proxy
    access, _session = world.access_token()
    ctx = proxy.server.context(now=proxy.now(), random=proxy.random)
    assert own_token_claims(ctx, access, audience=proxy.config.resource).subject == "idp:42"
    with pytest.raises(InvalidTokenError):
        own_token_claims(ctx, access, audience="https://elsewhere.example/mcp")
    later = proxy.server.context(now=proxy.now() + 10**6, random=proxy.random)
    with pytest.raises(InvalidTokenError):
        own_token_claims(later, access, audience=proxy.config.resource)
    for malformed in ("", "a.b", "a.b.c", "x" * 9000):
        with pytest.raises(InvalidTokenError):
            own_token_claims(ctx, malformed, audience=proxy.config.resource)
    # Only the token endpoint's responses fill the cache.
    assert proxy.cache is not None
    proxy.cache._entries.clear()
    assert world.run(request("GET", BASE + "/jwks.json")).status == 200
    assert proxy.cache._entries == {}
