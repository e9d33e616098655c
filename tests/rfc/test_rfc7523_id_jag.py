"""The Identity Assertion JWT Authorization Grant at the token endpoint (RFC 7523 §2.1, §3 and §3.1;
RFC 7521 §4.1, §5.2; draft-ietf-oauth-identity-assertion-authz-grant-03, "Access Token Request"; the
MCP extension io.modelcontextprotocol/enterprise-managed-authorization §5; spec/security.md 37;
spec/interop.md, "Enterprise-managed authorization").

A ``FakeIssuer`` with real keys plays the enterprise identity provider. Each refusal is checked for
its exact OAuth error and status, and for leaving the store as it was (the issuer's cached key set
aside): only a redemption that succeeds records its ``jti``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_core import Response
from oauthproxy_core.errors import InvalidGrantError
from oauthproxy_core.handlers import id_jag
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.upstream_token import upstream_access_for
from oauthproxy_core.issuers import LEEWAY, REFETCH_INTERVAL
from oauthproxy_core.resource_servers import ResourceServer
from oauthproxy_core.tokens import Origin
from tests.harness import ISSUER, Harness, make_config
from tests.other_issuers import (
    AGENT,
    OTHER_AGENT,
    OTHER_IDP,
    OTHER_JWKS,
    OTHER_SECRET,
    PUBLIC,
    RESOURCE,
    FakeIssuer,
    basic,
    enterprise,
    hmac_with_public_key,
    issuer_harness,
    raw_signed,
    records,
    static_clients,
    trusted,
    unsigned,
)

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _exchange(
    h: Harness,
    assertion: str | None,
    *,
    headers: tuple[tuple[str, str], ...] | None = None,
    **extra: str,
) -> Response:
    form = {"grant_type": GRANT, **extra}
    if assertion is not None:
        form["assertion"] = assertion
    return h.token(form, headers=basic() if headers is None else headers)


def _error(resp: Response) -> str:
    return str(json.loads(resp.body)["error"])


def test_rfc7523_2_1_an_id_jag_buys_a_resource_bound_token_without_refresh() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    resp = _exchange(h, idp.id_jag(h.clock.now), resource=RESOURCE)
    assert resp.status == 200, resp.body
    assert resp.header("cache-control") == "no-store"
    body = json.loads(resp.body)
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "mcp"
    assert "refresh_token" not in body
    principal = h.bearer(body["access_token"])
    assert isinstance(principal, Principal), principal
    assert principal.subject == "acme:alice"
    assert principal.client_id == AGENT
    assert principal.scopes == ("mcp",)
    assert principal.resource == RESOURCE
    assert principal.origin is Origin.ENTERPRISE


def test_rfc7523_2_1_client_secret_post_and_rs256_and_an_audience_array_of_one() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp, enterprise_issuers=(enterprise(idp, clients=(AGENT, OTHER_AGENT)),))
    assertion = idp.id_jag(
        h.clock.now,
        alg="RS256",
        aud=[ISSUER],
        client_id=OTHER_AGENT,
        resource=[RESOURCE, "https://x.example/api"],
    )
    resp = _exchange(h, assertion, headers=(), client_id=OTHER_AGENT, client_secret=OTHER_SECRET)
    assert resp.status == 200, resp.body
    principal = h.bearer(json.loads(resp.body)["access_token"])
    assert isinstance(principal, Principal)
    assert principal.client_id == OTHER_AGENT


def _cases(idp: FakeIssuer, now: int) -> list[tuple[str, str | None, dict[str, Any], int, str]]:
    """(why, assertion, request changes, status, error); request changes may carry ``headers``."""
    good = {
        "iss": idp.issuer,
        "sub": "alice",
        "aud": ISSUER,
        "client_id": AGENT,
        "resource": RESOURCE,
        "iat": now,
        "exp": now + 300,
        "jti": "one",
    }
    stranger = idp.impostor()
    jag = idp.id_jag
    g, b = "invalid_grant", 400
    return [
        ("no assertion", None, {}, 400, "invalid_request"),
        (
            "wrong client secret",
            jag(now),
            {"headers": basic(AGENT, "wrong-secret-1234")},
            401,
            "invalid_client",
        ),
        (
            "a client no enterprise issuer lists",
            jag(now, client_id=OTHER_AGENT),
            {"headers": (), "client_id": OTHER_AGENT, "client_secret": OTHER_SECRET},
            400,
            "unauthorized_client",
        ),
        (
            "a public client",
            jag(now, client_id=PUBLIC),
            {"headers": (), "client_id": PUBLIC},
            400,
            "unauthorized_client",
        ),
        ("no typ", jag(now, header={"typ": None}), {}, b, g),
        ("typ JWT (an ID token)", jag(now, header={"typ": "JWT"}), {}, b, g),
        ("typ at+jwt (an access token)", jag(now, header={"typ": "at+jwt"}), {}, b, g),
        ("an issuer nobody configured", jag(now, iss="https://stranger.example"), {}, b, g),
        ("alg none", unsigned(good, typ="oauth-id-jag+jwt"), {}, b, g),
        (
            "HS256 keyed with the public key",
            hmac_with_public_key(idp, good, typ="oauth-id-jag+jwt"),
            {},
            b,
            g,
        ),
        ("an algorithm outside the list", jag(now, alg="PS256"), {}, b, g),
        ("another key under a known kid", stranger.id_jag(now), {}, b, g),
        ("an unknown kid", jag(now, header={"kid": "nobody"}), {}, b, g),
        (
            "a critical header",
            raw_signed(idp, {"typ": "oauth-id-jag+jwt", "crit": ["p"], "p": 1}, good),
            {},
            b,
            g,
        ),
        ("the token endpoint as audience", jag(now, aud=ISSUER + "/token"), {}, b, g),
        ("another audience", jag(now, aud="https://other-as.example"), {}, b, g),
        ("an audience array with a second member", jag(now, aud=[ISSUER, "https://x"]), {}, b, g),
        ("no audience", jag(now, aud=None), {}, b, g),
        ("another client's assertion", jag(now, client_id=OTHER_AGENT), {}, b, g),
        ("no client_id claim", jag(now, client_id=None), {}, b, g),
        ("no resource", jag(now, resource=None), {}, b, g),
        ("another resource", jag(now, resource="https://proxy.example/other"), {}, b, g),
        (
            "a resource array without ours",
            jag(now, resource=["https://a/x", "https://b/y"]),
            {},
            b,
            g,
        ),
        (
            "a request for another resource",
            jag(now),
            {"resource": "https://proxy.example/x"},
            400,
            "invalid_target",
        ),
        ("expired", jag(now, iat=now - 600, exp=now - LEEWAY - 1), {}, b, g),
        ("no exp", jag(now, exp=None), {}, b, g),
        ("no iat", jag(now, iat=None), {}, b, g),
        ("issued in the future", jag(now, iat=now + LEEWAY + 5, exp=now + 600), {}, b, g),
        ("not yet valid", jag(now, nbf=now + LEEWAY + 5), {}, b, g),
        ("living too long", jag(now, exp=now + id_jag.MAX_ASSERTION_LIFETIME + 60), {}, b, g),
        ("a cnf claim (key-bound)", jag(now, cnf={"jkt": "abc"}), {}, b, g),
        ("authorization_details", jag(now, authorization_details=[{"type": "x"}]), {}, b, g),
        ("an act claim", jag(now, act={"sub": "bot"}), {}, b, g),
        ("a tenant claim", jag(now, tenant="t1"), {}, b, g),
        ("no sub", jag(now, sub=None), {}, b, g),
        ("a sub with a control character", jag(now, sub="al\x00ice"), {}, b, g),
        ("no jti", jag(now, jti=None), {}, b, g),
        ("a scope claim that is not a string", jag(now, scope=["mcp"]), {}, b, g),
        (
            "a scope wider than the assertion",
            jag(now),
            {"scope": "mcp offline_access"},
            400,
            "invalid_scope",
        ),
        (
            "an assertion allowing none of our scopes",
            jag(now, scope="admin"),
            {},
            400,
            "invalid_scope",
        ),
        ("a malformed assertion", "not-a-jwt", {}, b, g),
    ]


def test_rfc7523_3_1_every_flawed_request_gets_its_error_and_stores_nothing() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    # One good exchange first, so the issuer's keys are cached and every case below is decided
    # by its flaw, not by a fetch.
    assert _exchange(h, idp.id_jag(h.clock.now)).status == 200
    before = records(h.store)
    for why, assertion, changes, status, error in _cases(idp, h.clock.now):
        headers = changes.pop("headers", None)
        resp = _exchange(h, assertion, headers=headers, **changes)
        assert (resp.status, _error(resp)) == (status, error), (why, resp.body)
        if status == 401:
            assert (resp.header("www-authenticate") or "").startswith("Basic"), why
        added = records(h.store) - before
        assert {kind for kind, _ in added} <= {"jwks", "jwks-refetch"}, (why, added)


def test_rfc7523_3_an_assertion_is_redeemed_once_across_instances_sharing_the_store(
    tmp_path: Any,
) -> None:
    idp = FakeIssuer()
    store = SQLiteStore(str(tmp_path / "state.db"))
    try:
        first, second = issuer_harness(idp, store=store), issuer_harness(idp, store=store)
        second.clock = first.clock
        assertion = idp.id_jag(first.clock.now)
        assert _exchange(first, assertion).status == 200
        replay = _exchange(second, assertion)
        assert (replay.status, _error(replay)) == (400, "invalid_grant")
        assert "already used" in json.loads(replay.body)["error_description"]
        # The same jti from another issuer is another assertion.
        other = FakeIssuer(OTHER_IDP, OTHER_JWKS)
        both = issuer_harness(
            idp,
            enterprise_issuers=(enterprise(idp), enterprise(other, subject_prefix="other")),
            store=store,
        )
        both.fetch = lambda doc: (other if doc.url == OTHER_JWKS else idp).fetch(doc)
        both.clock = first.clock
        jti = json.loads(__import__("base64").urlsafe_b64decode(assertion.split(".")[1] + "=="))[
            "jti"
        ]
        assert _exchange(both, other.id_jag(both.clock.now, jti=jti)).status == 200
    finally:
        store.close()


def test_rfc7523_3_the_replay_record_lives_until_the_assertion_expires() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    assertion = idp.id_jag(h.clock.now, exp=h.clock.now + 120)
    assert _exchange(h, assertion).status == 200
    h.clock.advance(100)
    assert _error(_exchange(h, assertion)) == "invalid_grant"
    h.clock.advance(REFETCH_INTERVAL + 2 * LEEWAY)
    # Expired by now: refused as expired, never accepted a second time.
    resp = _exchange(h, assertion)
    assert _error(resp) == "invalid_grant"
    assert "expired" in json.loads(resp.body)["error_description"]


def test_rfc7523_scopes_are_narrowed_never_widened() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    now = h.clock.now
    wide = idp.id_jag(now, scope="mcp offline_access admin")
    body = json.loads(_exchange(h, wide, scope="offline_access").body)
    assert body["scope"] == "offline_access"
    body = json.loads(_exchange(h, idp.id_jag(now, scope="mcp offline_access admin")).body)
    assert body["scope"] == "mcp offline_access"  # "admin" is not this resource's scope
    body = json.loads(_exchange(h, idp.id_jag(now, scope=None)).body)
    assert body["scope"] == "mcp"  # no scope claim: the default scopes


def test_rfc7523_a_token_from_an_id_jag_lasts_only_while_its_issuer_vouches() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    token = json.loads(_exchange(h, idp.id_jag(h.clock.now)).body)["access_token"]
    assert isinstance(h.bearer(token), Principal)
    for config in (
        {"enterprise_issuers": ()},
        {"enterprise_issuers": (enterprise(idp, clients=(OTHER_AGENT,)),)},
    ):
        later = issuer_harness(idp, store=h.store, **config)
        later.clock = h.clock
        verdict = later.bearer(token)
        assert isinstance(verdict, Challenge) and verdict.status == 401, config


def test_rfc7523_a_token_from_an_id_jag_holds_no_grant_and_no_upstream_token() -> None:
    idp = FakeIssuer()
    h = issuer_harness(idp)
    body = json.loads(_exchange(h, idp.id_jag(h.clock.now)).body)
    principal = h.bearer(body["access_token"])
    assert isinstance(principal, Principal)
    ctx = h.server.context(now=h.clock.now, random=h.random)
    with pytest.raises(InvalidGrantError):
        run(upstream_access_for(ctx, principal), h.store, h.upstream)
    # No refresh token was issued; the access token is not one either.
    resp = h.token(
        {"grant_type": "refresh_token", "refresh_token": body["access_token"]}, headers=basic()
    )
    assert (resp.status, _error(resp)) == (400, "invalid_grant")


def test_rfc7523_without_an_enterprise_issuer_the_grant_is_unsupported_and_unadvertised() -> None:
    idp = FakeIssuer()
    off = issuer_harness(idp, enterprise_issuers=())
    resp = _exchange(off, idp.id_jag(off.clock.now))
    assert (resp.status, _error(resp)) == (400, "unsupported_grant_type")
    assert idp.fetches == []
    meta = json.loads(off.request("GET", "/.well-known/oauth-authorization-server").body)
    assert GRANT not in meta["grant_types_supported"]
    assert "authorization_grant_profiles_supported" not in meta
    on = issuer_harness(idp)
    meta = json.loads(on.request("GET", "/.well-known/oauth-authorization-server").body)
    assert meta["grant_types_supported"] == ["authorization_code", "refresh_token", GRANT]
    assert meta["authorization_grant_profiles_supported"] == [id_jag.GRANT_PROFILE]
    # Which issuers are trusted is not published.
    assert idp.issuer not in json.dumps(meta)


def test_rfc7523_the_issuers_keys_unreachable_is_a_503_that_stores_nothing() -> None:
    idp = FakeIssuer()
    idp.down = True
    h = issuer_harness(idp)
    before = records(h.store)
    resp = _exchange(h, idp.id_jag(h.clock.now))
    assert (resp.status, _error(resp)) == (503, "temporarily_unavailable")
    assert resp.header("retry-after") is not None
    assert records(h.store) == before


def test_rfc7523_configuration_keeps_issuers_apart() -> None:
    idp = FakeIssuer()
    clients = static_clients()
    bad: list[dict[str, Any]] = [
        {"enterprise_issuers": (enterprise(idp, clients=(PUBLIC,)),)},
        {"enterprise_issuers": (enterprise(idp, clients=("nobody",)),)},
        {"enterprise_issuers": (enterprise(idp, subject_prefix="idp"),)},  # the provider's name
        {"enterprise_issuers": (enterprise(idp, issuer=ISSUER),)},
        {"enterprise_issuers": (enterprise(idp), enterprise(idp))},
        {
            "enterprise_issuers": (
                enterprise(idp),
                enterprise(FakeIssuer(OTHER_IDP, OTHER_JWKS)),  # same prefix, other issuer
            )
        },
        {"enterprise_issuers": (enterprise(idp, jwks_uri="http://login.corp.example/k"),)},
    ]
    for changes in bad:
        with pytest.raises(ValueError, match=r"\[enterprise_issuers\]"):
            make_config(static_clients=clients, **changes)
    # One issuer in both tables, one prefix: allowed.
    make_config(
        static_clients=clients,
        trusted_issuers=(trusted(idp, subject_prefix="acme"),),
        enterprise_issuers=(enterprise(idp),),
    )
    with pytest.raises(ValueError, match="audience"):
        make_config(trusted_issuers=(trusted(idp, audience=ISSUER),))


def _bearer_at(h: Harness, token: str, resource: str) -> Principal | Challenge:
    return run(
        h.server.verify_bearer(
            f"Bearer {token}", now=h.clock.now, random=h.random, resource=resource
        ),
        h.store,
        fetch=h.fetch,
    )


def test_invariant_40_an_id_jag_buys_a_token_for_one_of_several_resources_only() -> None:
    """RFC 8707 §2 with ``[[resources]]``: the token is for the requested resource (or, with none
    requested, the first of ours the assertion names), has that one audience, and is refused by the
    other resource; a resource the assertion does not name is ``invalid_grant``, one that is not
    ours ``invalid_target``, and neither stores anything."""
    idp = FakeIssuer()
    tools, wiki = ISSUER + "/tools", ISSUER + "/wiki"
    h = issuer_harness(
        idp,
        resources=(
            ResourceServer(path="/tools", name="Tools", scopes=("mcp",)),
            ResourceServer(path="/wiki", name="Wiki", scopes=("mcp",)),
        ),
    )
    for requested in (wiki, None):
        extra = {"resource": requested} if requested else {}
        resp = _exchange(h, idp.id_jag(h.clock.now, resource=wiki), **extra)
        assert resp.status == 200, resp.body
        token = json.loads(resp.body)["access_token"]
        at_wiki = _bearer_at(h, token, wiki)
        assert isinstance(at_wiki, Principal) and at_wiki.resource == wiki, at_wiki
        assert isinstance(_bearer_at(h, token, tools), Challenge)

    # Named both: the request decides; none requested: ours in our order (the default first).
    both = [wiki, tools]
    resp = _exchange(h, idp.id_jag(h.clock.now, resource=both))
    token = json.loads(resp.body)["access_token"]
    assert isinstance(_bearer_at(h, token, tools), Principal)
    assert isinstance(_bearer_at(h, token, wiki), Challenge)

    before = records(h.store)
    refused = _exchange(h, idp.id_jag(h.clock.now, resource=wiki), resource=tools)
    assert (refused.status, _error(refused)) == (400, "invalid_grant")
    stranger = _exchange(
        h, idp.id_jag(h.clock.now, resource=wiki), resource="https://elsewhere.example/mcp"
    )
    assert (stranger.status, _error(stranger)) == (400, "invalid_target")
    assert records(h.store) == before
