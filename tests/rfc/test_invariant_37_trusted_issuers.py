"""Access tokens from ``[[trusted_issuers]]`` at the bearer check (RFC 9068 §4, RFC 7519 §7.2, RFC 8725
§3.1 and §3.11; spec/security.md 37, spec/interop.md, "Tokens from other issuers").

Through the core and the real driver: the issuer's JWK Set comes through ``FetchDocument`` from a
``FakeIssuer`` holding real keys. Every refusal is the exact 401 ``invalid_token`` challenge, and a
refused token leaves nothing in the store but the issuer's cached key set.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_core import HttpFailure
from oauthproxy_core.errors import InvalidGrantError
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.upstream_token import upstream_access_for
from oauthproxy_core.issuers import LEEWAY, REFETCH_INTERVAL
from oauthproxy_core.resource_servers import ResourceServer
from oauthproxy_core.tokens import Origin
from tests.harness import ISSUER, VERIFIER, Browser, Harness, redirect_params
from tests.other_issuers import (
    IDP,
    OTHER_IDP,
    OTHER_JWKS,
    RESOURCE,
    FakeIssuer,
    enterprise,
    hmac_with_public_key,
    issuer_harness,
    raw_signed,
    records,
    trusted,
    unsigned,
)

CHALLENGE = (
    'Bearer resource_metadata="https://proxy.example/.well-known/oauth-protected-resource/mcp", '
    'scope="mcp", error="invalid_token"'
)


def _refused(verdict: Principal | Challenge) -> None:
    assert isinstance(verdict, Challenge), verdict
    assert verdict.status == 401
    assert verdict.www_authenticate == CHALLENGE


def _only_key_cache(h: Harness, before: set[tuple[str, str]]) -> None:
    """Nothing but the issuer's key set (and its refetch marker) was written."""
    added = records(h.store) - before
    assert {kind for kind, _ in added} <= {"jwks", "jwks-refetch"}, added


def _own_token(h: Harness) -> str:
    client = h.register()
    code = redirect_params(h.run_to_callback(client, VERIFIER, Browser()))["code"]
    resp = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )
    assert resp.status == 200, resp.body
    token: str = json.loads(resp.body)["access_token"]
    return token


def test_invariant_37_a_trusted_issuers_token_names_a_prefixed_subject_and_our_scopes() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    verdict = h.bearer(idp.access_token(h.clock.now))
    assert isinstance(verdict, Principal), verdict
    assert verdict.subject == "corp:alice"
    assert verdict.client_id == "corp:ci-job"
    # "admin" is the other issuer's vocabulary, not this resource's: never forwarded.
    assert verdict.scopes == ("mcp", "offline_access")
    assert verdict.resource == RESOURCE
    assert verdict.origin is Origin.TRUSTED_ISSUER
    assert verdict.grant_id == ""
    # RS256 is in the configured list too.
    assert isinstance(h.bearer(idp.access_token(h.clock.now, alg="RS256")), Principal)


def test_invariant_37_scopes_claim_array_audience_array_and_required_scopes() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp, trusted_issuers=(trusted(idp, scopes_claim="scp"),))
    token = idp.access_token(
        h.clock.now, scope=None, scp=["mcp", "other"], aud=["https://api.example", RESOURCE]
    )
    verdict = h.bearer(token, ("mcp",))
    assert isinstance(verdict, Principal), verdict
    assert verdict.scopes == ("mcp",)
    forbidden = h.bearer(token, ("offline_access",))
    assert isinstance(forbidden, Challenge)
    assert forbidden.status == 403
    assert forbidden.error == "insufficient_scope"
    # No client_id or azp: the MCP server sees no client.
    bare = h.bearer(idp.access_token(h.clock.now, client_id=None))
    assert isinstance(bare, Principal)
    assert bare.client_id == ""
    azp = h.bearer(idp.access_token(h.clock.now, client_id=None, azp="batch"))
    assert isinstance(azp, Principal)
    assert azp.client_id == "corp:batch"


def _bad_tokens(idp: FakeIssuer, now: int) -> dict[str, str]:
    good: dict[str, Any] = {
        "iss": idp.issuer,
        "sub": "alice",
        "aud": RESOURCE,
        "scope": "mcp",
        "iat": now,
        "exp": now + 600,
    }
    stranger = idp.impostor()  # same issuer URL, other keys: a forgery with a kid that exists
    return {
        "signed by another key under a known kid": stranger.access_token(now),
        "alg none": unsigned(good, typ="at+jwt"),
        "HS256 keyed with the public key": hmac_with_public_key(idp, good),
        "an algorithm outside the issuer's list": idp.access_token(now, alg="PS256"),
        "an unknown kid": idp.access_token(now, header={"kid": "nobody"}),
        "a critical header": raw_signed(
            idp, {"typ": "at+jwt", "crit": ["x-policy"], "x-policy": 1}, good
        ),
        "an ID-JAG": idp.access_token(now, header={"typ": "oauth-id-jag+jwt"}),
        "a DPoP proof type": idp.access_token(now, header={"typ": "dpop+jwt"}),
        "another audience": idp.access_token(now, aud="https://api.example"),
        "an audience array without ours": idp.access_token(now, aud=["https://a", "https://b"]),
        "our issuer as audience": idp.access_token(now, aud=ISSUER),
        "expired beyond the leeway": idp.access_token(now, iat=now - 900, exp=now - LEEWAY - 1),
        "expired": idp.access_token(now, iat=now - 900, exp=now),
        "no exp": idp.access_token(now, exp=None),
        "not yet valid beyond the leeway": idp.access_token(now, nbf=now + LEEWAY + 5),
        "issued in the future": idp.access_token(now, iat=now + LEEWAY + 5),
        "no sub": idp.access_token(now, sub=None),
        "a sub with a control character": idp.access_token(now, sub="al\nice"),
        "a sub that is not a string": idp.access_token(now, sub=42),
        "a scope claim of another type": idp.access_token(now, scope={"a": 1}),
        "a JWE-shaped token": "a.b.c.d.e",
        "an oversized token": idp.access_token(now, pad="x" * 20_000),
        "a header nested too deep": raw_signed(idp, {"x": json.loads("[" * 40 + "]" * 40)}, good),
    }


def test_invariant_37_every_flawed_token_gets_the_401_challenge_and_stores_nothing() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    assert isinstance(h.bearer(idp.access_token(h.clock.now)), Principal)  # keys now cached
    before = records(h.store)
    for why, token in _bad_tokens(idp, h.clock.now).items():
        verdict = h.bearer(token)
        assert isinstance(verdict, Challenge), why
        _refused(verdict)
    _only_key_cache(h, before)


def test_invariant_37_leeway_tolerates_small_clock_skew() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    now = h.clock.now
    assert isinstance(h.bearer(idp.access_token(now, nbf=now + LEEWAY - 1)), Principal)
    assert isinstance(h.bearer(idp.access_token(now, iat=now + LEEWAY - 1)), Principal)


def test_invariant_37_a_token_is_judged_only_by_the_issuer_it_names() -> None:
    corp, other = FakeIssuer(), FakeIssuer(OTHER_IDP, OTHER_JWKS)

    def fetch(doc: Any) -> Any:
        return (corp if doc.url == corp.jwks_uri else other).fetch(doc)

    h = issuer_harness(
        corp,
        trusted_issuers=(trusted(corp), trusted(other, subject_prefix="partner")),
    )
    h.fetch = fetch
    now = h.clock.now
    # Each issuer's token names its own prefix.
    first = h.bearer(corp.access_token(now))
    second = h.bearer(other.access_token(now))
    assert isinstance(first, Principal) and first.subject == "corp:alice"
    assert isinstance(second, Principal) and second.subject == "partner:alice"
    # A token claiming one issuer but signed with the other's keys verifies under neither.
    _refused(h.bearer(corp.access_token(now, iss=OTHER_IDP)))
    # A token claiming the proxy's own issuer is never tried against a trusted issuer's keys.
    _refused(h.bearer(corp.access_token(now, iss=ISSUER)))
    # An issuer nobody configured.
    _refused(h.bearer(corp.access_token(now, iss="https://stranger.example")))


def test_invariant_37_our_own_tokens_stay_ours_with_trusted_issuers_configured() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    own = h.bearer(_own_token(h))
    assert isinstance(own, Principal), own
    assert own.origin is Origin.GRANT
    assert own.subject == "idp:42"
    assert own.grant_id
    assert idp.fetches == []  # our token never sent the bearer check to another issuer


def test_invariant_37_a_trusted_issuers_token_never_unlocks_an_upstream_token() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    own = h.bearer(_own_token(h))
    assert isinstance(own, Principal)
    # The other issuer names our user's grant in a claim of its own: it changes nothing.
    token = idp.access_token(h.clock.now, gid=own.grant_id, sub="42")
    principal = h.bearer(token)
    assert isinstance(principal, Principal)
    assert principal.origin is Origin.TRUSTED_ISSUER
    assert principal.grant_id == ""
    # Even a principal forged to carry the real grant id is refused before the store is read.
    forged = attrs.evolve(principal, grant_id=own.grant_id)
    effects: list[Any] = []

    def observe(effect: Any, _result: Any, _seconds: float) -> None:
        effects.append(effect)

    ctx = h.server.context(now=h.clock.now, random=h.random)
    for who in (principal, forged):
        with pytest.raises(InvalidGrantError):
            run(upstream_access_for(ctx, who), h.store, h.upstream, observe)
    assert effects == []
    # The user's own principal still reaches it.
    assert run(upstream_access_for(ctx, own), h.store, h.upstream).access_token


def test_invariant_37_keys_are_cached_and_an_unknown_kid_refetches_at_most_once_per_interval() -> (
    None
):
    idp = FakeIssuer()
    h = issuer_harness(idp)
    for _ in range(3):
        assert isinstance(h.bearer(idp.access_token(h.clock.now)), Principal)
    assert len(idp.fetches) == 1  # one fetch, then the store's copy
    # Made-up kids: the first refetches, the rest within the interval do not.
    for n in range(5):
        _refused(h.bearer(idp.access_token(h.clock.now, header={"kid": f"made-up-{n}"})))
    assert len(idp.fetches) == 2
    # The issuer rotates: a token under the new key waits for the interval to pass...
    idp.rotate()
    rotated = idp.access_token(h.clock.now)
    _refused(h.bearer(rotated))
    assert len(idp.fetches) == 2
    h.clock.advance(REFETCH_INTERVAL)
    # ... then one refetch picks up the new keys.
    assert isinstance(h.bearer(rotated), Principal)
    assert len(idp.fetches) == 3
    assert all(f.purpose == "jwks" and f.url == idp.jwks_uri for f in idp.fetches)


def test_invariant_37_stale_keys_serve_while_the_issuer_is_unreachable() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    token = idp.access_token(h.clock.now, exp=h.clock.now + 3600)
    assert isinstance(h.bearer(token), Principal)
    idp.down = True
    h.clock.advance(400)  # past the default freshness (5 minutes)
    assert isinstance(h.bearer(token), Principal)
    assert len(idp.fetches) == 2  # it tried, failed, and used the stale copy


def test_invariant_37_no_keys_at_all_is_a_401_not_an_error_page() -> None:
    idp = FakeIssuer()
    idp.down = True
    h = issuer_harness(idp)
    _refused(h.bearer(idp.access_token(h.clock.now)))
    # A proxy given no safe fetcher fails closed the same way.
    h2 = issuer_harness(FakeIssuer())
    h2.fetch = lambda _doc: HttpFailure(reason="refused")
    _refused(h2.bearer(idp.access_token(h2.clock.now)))


def test_invariant_37_a_trusted_token_is_honoured_only_while_its_issuer_is_configured() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    token = idp.access_token(h.clock.now)
    assert isinstance(h.bearer(token), Principal)
    without = issuer_harness(idp, trusted_issuers=(), store=h.store)
    _refused(without.bearer(token))
    # The enterprise table names the same issuer: that trusts its ID-JAGs, not its access tokens.
    only_enterprise = issuer_harness(
        idp, trusted_issuers=(), enterprise_issuers=(enterprise(idp),), store=h.store
    )
    _refused(only_enterprise.bearer(token))
    assert idp.issuer == IDP


def test_invariant_40_a_trusted_issuers_token_is_accepted_at_its_resource_only() -> None:
    """With several resources, a trusted issuer's token is for the resource its entry names: that
    resource's bearer check accepts it, every other refuses it (spec/security.md 37, 40)."""
    idp = FakeIssuer()
    tools, wiki = ISSUER + "/tools", ISSUER + "/wiki"
    h = issuer_harness(
        idp,
        trusted_issuers=(trusted(idp, audience="api://wiki", resource=wiki),),
        resources=(
            ResourceServer(path="/tools", name="Tools", scopes=("mcp",)),
            ResourceServer(path="/wiki", name="Wiki", scopes=("mcp",)),
        ),
    )
    token = idp.access_token(h.clock.now, aud="api://wiki")

    def at(resource: str) -> Principal | Challenge:
        return run(
            h.server.verify_bearer(
                f"Bearer {token}", now=h.clock.now, random=h.random, resource=resource
            ),
            h.store,
            fetch=h.fetch,
        )

    at_wiki = at(wiki)
    assert isinstance(at_wiki, Principal) and at_wiki.resource == wiki, at_wiki
    assert at_wiki.subject == "corp:alice"
    assert isinstance(at(tools), Challenge)
    with pytest.raises(ValueError, match="not one of this server's protected resources"):
        issuer_harness(idp, trusted_issuers=(trusted(idp, resource=ISSUER + "/nowhere"),))
