"""RFC 6749 §4.4 (OAuth 2.1 §4.2), the client credentials grant, for pre-registered machine clients
(MCP extension ``io.modelcontextprotocol/oauth-client-credentials``; handlers/client_credentials.py).

The clients are parsed from ``[[clients.static]]`` tables written with the contract's keys
(``client_secret_env``, ``private_key_jwt`` with ``jwks`` or ``jwks_uri``, ``grant_types``,
``scopes``, ``subject``), then served by the core through the real driver and a memory store.

- Success by each authentication method: a bearer access token for the protected resource (RFC 8707
  §2: ``aud`` is the resource), whose subject is the configured one, no refresh token (RFC 6749
  §4.4.3), ``Cache-Control: no-store`` (spec/security.md 26).
- Every bad input gets its precise OAuth error and stores nothing: unknown client, wrong secret, a
  secret by another method (401 ``invalid_client``, spec/security.md 22), a scope outside the
  client's ``scopes`` (``invalid_scope``), a client not allowed the grant (``unauthorized_client``),
  another resource (``invalid_target``), a misaddressed, foreign, expired or replayed assertion (401).
- Revocation: ``/revoke`` of one token, ``oauthproxy grants revoke --client`` and a client's
  revocation marker all end the tokens; the next request gets a new family.
- Metadata advertises the grant, ``private_key_jwt`` and its algorithms only when such a client is
  configured; the domain event names the grant type for the audit log and the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jwt as jose_jwt

from oauthproxy_adapters import grants_admin
from oauthproxy_adapters.audit import record
from oauthproxy_adapters.driver import run
from oauthproxy_adapters.metrics import Metrics
from oauthproxy_core.domain_events import TokenIssued
from oauthproxy_core.effects import Emit
from oauthproxy_core.errors import InvalidGrantError
from oauthproxy_core.grants import revoke_client
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.handlers.client_credentials import FAMILY
from oauthproxy_core.handlers.upstream_token import upstream_access_token
from tests.clients.machine_support import (
    APP_SECRET,
    CI_SECRET,
    ENTRIES,
    FETCHED_KEY,
    JWKS_URL,
    OTHER_KEY,
    POSTER_SECRET,
    SCOPES,
    basic,
    ci_bot,
    claims_of,
    error_of,
    harness,
    signed,
    static_clients,
    with_assertion,
)
from tests.harness import ISSUER, Harness, make_config


def stored(h: Harness) -> set[tuple[str, str]]:
    return {(kind, key) for kind, key, _value in h.store.dump()}


# -- success ---------------------------------------------------------------------------------------


def test_rfc6749_4_4_basic_secret_gets_a_resource_bound_token_for_its_subject() -> None:
    h, _ = harness()
    resp = ci_bot(h)
    assert resp.status == 200, resp.body
    assert resp.header("cache-control") == "no-store"
    body = json.loads(resp.body)
    # RFC 6749 §4.4.3: no refresh token; no scope asked: every scope the client may have.
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer" and body["scope"] == "mcp:read mcp:write"
    assert body["expires_in"] == h.config.lifetimes.access_token
    claims = claims_of(body["access_token"])
    assert claims["aud"] == h.config.resource == ISSUER + "/mcp"
    assert claims["sub"] == "service:ci-bot" and claims["client_id"] == "ci-bot"
    principal = h.bearer(body["access_token"], ("mcp:read",))
    assert isinstance(principal, Principal), principal
    assert principal.subject == "service:ci-bot" and principal.client_id == "ci-bot"
    assert principal.scopes == ("mcp:read", "mcp:write") and principal.claims == ()


def test_rfc6749_4_4_client_secret_post_and_a_narrower_scope() -> None:
    h, _ = harness()
    resp = h.token(
        {
            "grant_type": "client_credentials",
            "client_id": "poster",
            "client_secret": POSTER_SECRET,
            "scope": "mcp:read",
            "resource": ISSUER + "/mcp/",  # canonicalised (RFC 8707 §2): the same resource
        }
    )
    assert resp.status == 200, resp.body
    body = json.loads(resp.body)
    assert body["scope"] == "mcp:read" and "refresh_token" not in body
    principal = h.bearer(body["access_token"])
    assert isinstance(principal, Principal) and principal.subject == "service:poster"
    assert principal.scopes == ("mcp:read",)
    # A scope the token lacks is still refused at the resource (RFC 6750 §3.1).
    refused = h.bearer(body["access_token"], ("mcp:write",))
    assert isinstance(refused, Challenge) and refused.status == 403


def test_rfc7523_2_2_private_key_jwt_with_configured_jwks() -> None:
    h, _ = harness()
    # The MCP extension's example: no client_id in the body, the assertion names the client.
    resp = with_assertion(h, signed(now=h.clock.now))
    assert resp.status == 200, resp.body
    principal = h.bearer(json.loads(resp.body)["access_token"])
    assert isinstance(principal, Principal) and principal.subject == "service:signer"
    assert principal.scopes == ("mcp",)


def test_rfc7523_2_2_private_key_jwt_with_configured_jwks_uri_through_the_safe_fetcher() -> None:
    h, host = harness()
    resp = with_assertion(
        h, signed(FETCHED_KEY, now=h.clock.now, client_id="fetcher", kid="fetched-key")
    )
    assert resp.status == 200, resp.body
    assert [f.url for f in host.fetches] == [JWKS_URL] and host.fetches[0].purpose == "jwks"
    principal = h.bearer(json.loads(resp.body)["access_token"])
    assert isinstance(principal, Principal) and principal.subject == "agent:fetcher"
    assert principal.scopes == SCOPES  # no scopes configured: every supported one


def test_a_client_of_both_grants_still_signs_users_in_with_the_authorization_code_grant() -> None:
    h, _ = harness()
    client = {"client_id": "poster", "redirect_uris": ["https://poster.example/cb"]}
    code = h.full_code(client, "v" * 43)
    resp = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://poster.example/cb",
            "code_verifier": "v" * 43,
            "client_id": "poster",
            "client_secret": POSTER_SECRET,
        }
    )
    assert resp.status == 200, resp.body
    body = json.loads(resp.body)
    assert "refresh_token" in body
    principal = h.bearer(body["access_token"])
    # A user's token carries the user, not the client's machine subject.
    assert isinstance(principal, Principal) and principal.subject == "idp:42"


# -- bad input: a precise error each, nothing stored -------------------------------------------------


def _post(client_id: str, secret: str) -> dict[str, str]:
    return {"client_id": client_id, "client_secret": secret}


BAD: dict[str, tuple[dict[str, str], tuple[tuple[str, str], ...], int, str]] = {
    "unknown client": ({}, basic("nobody", CI_SECRET), 401, "invalid_client"),
    "wrong secret": ({}, basic("ci-bot", CI_SECRET + "x"), 401, "invalid_client"),
    "secret by another method": (_post("ci-bot", CI_SECRET), (), 401, "invalid_client"),
    "basic for a post client": ({}, basic("poster", POSTER_SECRET), 401, "invalid_client"),
    "no credentials": ({}, (), 401, "invalid_client"),
    "client_id alone for a confidential client": (
        {"client_id": "ci-bot"},
        (),
        401,
        "invalid_client",
    ),
    "scope outside its scopes": (
        {"scope": "mcp"},
        basic("ci-bot", CI_SECRET),
        400,
        "invalid_scope",
    ),
    "one scope of two outside": (
        {"scope": "mcp:read offline_access"},
        basic("ci-bot", CI_SECRET),
        400,
        "invalid_scope",
    ),
    "unsupported scope": ({"scope": "admin"}, basic("ci-bot", CI_SECRET), 400, "invalid_scope"),
    "malformed scope": ({"scope": 'mcp:read "x'}, basic("ci-bot", CI_SECRET), 400, "invalid_scope"),
    "client of the code grant only": ({}, basic("app", APP_SECRET), 400, "unauthorized_client"),
    "public client": ({"client_id": "pub"}, (), 400, "unauthorized_client"),
    "another resource": (
        {"resource": "https://other.example/mcp"},
        basic("ci-bot", CI_SECRET),
        400,
        "invalid_target",
    ),
    "malformed resource": ({"resource": "mcp"}, basic("ci-bot", CI_SECRET), 400, "invalid_target"),
    "the authorization server as resource": (
        {"resource": ISSUER},
        basic("ci-bot", CI_SECRET),
        400,
        "invalid_target",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_rfc6749_4_4_bad_input_gets_its_precise_error_and_stores_nothing(name: str) -> None:
    form, headers, status, error = BAD[name]
    h, _ = harness()
    before = stored(h)
    resp = h.token({"grant_type": "client_credentials", **form}, headers=headers)
    assert resp.status == status, resp.body
    assert error_of(resp) == error
    assert "access_token" not in json.loads(resp.body)
    if status == 401:
        # RFC 6749 §5.2: the client is asked to authenticate (the scheme it may use).
        assert (resp.header("www-authenticate") or "").startswith("Basic")
    assert stored(h) == before


def _misaddressed(now: int) -> dict[str, str]:
    return {
        "the token endpoint URL": signed(now=now, aud=ISSUER + "/token"),
        "another issuer": signed(now=now, aud="https://other.example"),
        "an array with the issuer": signed(now=now, aud=[ISSUER]),
        "signed by another key": signed(OTHER_KEY, now=now),
        "expired": signed(now=now - 600),
        "an oversized jti": signed(now=now, jti="j" * 300),
        "another client's name": signed(now=now, client_id="ci-bot"),
        "iss and sub differ": signed(now=now, sub="ci-bot"),
    }


@pytest.mark.parametrize("name", list(_misaddressed(0)))
def test_rfc7523_3_misaddressed_or_foreign_assertion_is_invalid_client_and_stores_nothing(
    name: str,
) -> None:
    h, _ = harness()
    before = stored(h)
    resp = with_assertion(h, _misaddressed(h.clock.now)[name])
    assert resp.status == 401 and error_of(resp) == "invalid_client", resp.body
    assert stored(h) == before


def test_rfc7523_3_replayed_assertion_is_refused_and_the_replay_stores_nothing() -> None:
    h, _ = harness()
    client_assertion = signed(now=h.clock.now)
    first = with_assertion(h, client_assertion)
    assert first.status == 200, first.body
    after_first = stored(h)
    assert any(kind == "jti" for kind, _ in after_first)
    h.clock.advance(5)
    replay = with_assertion(h, client_assertion)
    assert replay.status == 401 and error_of(replay) == "invalid_client", replay.body
    assert stored(h) == after_first
    # A fresh assertion of the same client is accepted and reuses the client's family.
    again = with_assertion(h, signed(now=h.clock.now))
    assert again.status == 200
    families = [key for kind, key in stored(h) if kind == "grant"]
    assert len(families) == 1


def test_an_assertion_refused_after_it_authenticated_is_spent_and_nothing_else_is_stored() -> None:
    """The one write a refused request can make: the jti of an assertion that authenticated, so
    that the same assertion cannot be retried with another scope (RFC 7523 §3 item 7)."""
    h, _ = harness()
    before = stored(h)
    client_assertion = signed(now=h.clock.now)
    refused = with_assertion(h, client_assertion, scope="mcp:write")
    assert refused.status == 400 and error_of(refused) == "invalid_scope"
    assert {kind for kind, _ in stored(h) - before} == {"jti"}
    retried = with_assertion(h, client_assertion)
    assert retried.status == 401 and error_of(retried) == "invalid_client"


def test_a_dynamically_registered_client_cannot_use_the_grant() -> None:
    h, _ = harness()
    client = h.register(token_endpoint_auth_method="client_secret_basic")
    before = stored(h)
    resp = h.token(
        {"grant_type": "client_credentials"},
        headers=basic(client["client_id"], client["client_secret"]),
    )
    assert resp.status == 400 and error_of(resp) == "unauthorized_client", resp.body
    assert stored(h) == before


# -- revocation ------------------------------------------------------------------------------------


def _token(h: Harness) -> str:
    resp = ci_bot(h)
    assert resp.status == 200, resp.body
    return str(json.loads(resp.body)["access_token"])


def test_tokens_of_one_client_share_one_family_record_and_no_refresh_state() -> None:
    h, _ = harness()
    first, second = _token(h), _token(h)
    assert claims_of(first)["gid"] == claims_of(second)["gid"]
    assert claims_of(first)["jti"] != claims_of(second)["jti"]
    records = stored(h)
    assert {kind for kind, _ in records} == {"grant", FAMILY}
    listing = grants_admin.active_grants(h.store, client_id="ci-bot")
    (family,) = listing.grants
    assert family.id == claims_of(first)["gid"]
    assert family.subject == "service:ci-bot" and family.scopes == ("mcp:read", "mcp:write")
    assert family.resource == h.config.resource
    assert family.refresh_hash == "" and family.upstream_sealed is None
    # Its record outlives every token issued from it.
    assert family.expires_at >= claims_of(second)["exp"]


def test_rfc7009_revoking_one_token_revokes_the_clients_family_and_a_new_one_follows() -> None:
    h, _ = harness()
    first, second = _token(h), _token(h)
    resp = h.form("/revoke", {"token": first}, headers=basic("ci-bot", CI_SECRET))
    assert resp.status == 200
    for token in (first, second):
        refused = h.bearer(token)
        assert isinstance(refused, Challenge) and refused.status == 401
    third = _token(h)
    assert claims_of(third)["gid"] != claims_of(first)["gid"]
    assert isinstance(h.bearer(third), Principal)


def test_rfc7009_another_client_cannot_revoke_a_machine_token() -> None:
    h, _ = harness()
    token = _token(h)
    resp = h.form("/revoke", {"token": token}, headers=basic("app", APP_SECRET))
    assert resp.status == 200
    assert isinstance(h.bearer(token), Principal)


def test_invariant_34_operator_revokes_a_machine_client_with_grants_revoke_client() -> None:
    h, _ = harness()
    token = _token(h)
    listing = grants_admin.active_grants(h.store, client_id="ci-bot")
    assert [g.subject for g in listing.grants] == ["service:ci-bot"]
    outcomes = [
        grants_admin.revoke(h.store, h.server, g.id, clock=h.clock, random=h.random)
        for g in listing.grants
    ]
    assert outcomes == [grants_admin.Outcome.REVOKED]
    refused = h.bearer(token)
    assert isinstance(refused, Challenge) and refused.status == 401
    assert grants_admin.active_grants(h.store, client_id="ci-bot").grants == ()
    # The configuration still allows the client: its next request starts a new family.
    fresh = _token(h)
    assert isinstance(h.bearer(fresh), Principal)
    assert len(grants_admin.active_grants(h.store, client_id="ci-bot").grants) == 1


def test_invariant_34_a_client_revocation_marker_refuses_its_tokens_and_new_ones() -> None:
    h, _ = harness()
    token = _token(h)
    run(revoke_client(h.server.context(now=h.clock.now, random=h.random), "ci-bot"), h.store)
    refused = h.bearer(token)
    assert isinstance(refused, Challenge) and refused.status == 401
    # The token endpoint reads the marker after minting: what it minted is refused anyway.
    resp = ci_bot(h)
    assert resp.status == 401 and error_of(resp) == "invalid_client"


def test_a_family_is_replaced_when_the_configuration_changes_or_before_it_would_expire() -> None:
    h, _ = harness()
    first = _token(h)
    # Narrower scopes in the configuration: a new family, whose tokens carry them.
    narrowed = [dict(e, scopes=["mcp:read"]) if e["client_id"] == "ci-bot" else e for e in ENTRIES]
    h2 = Harness(
        make_config(static_clients=static_clients(narrowed), scopes_supported=SCOPES),
        store=h.store,
        clock=h.clock,
        seed=2,  # another instance: its own random ids
    )
    second = _token(h2)
    assert claims_of(second)["gid"] != claims_of(first)["gid"]
    assert claims_of(second)["scope"] == "mcp:read"
    # Near the end of its record's life, a family issues no more tokens.
    lifetimes = h2.config.lifetimes
    h2.clock.advance(lifetimes.refresh_token + 1)
    third = _token(h2)
    assert claims_of(third)["gid"] != claims_of(second)["gid"]
    assert h2.store.get("grant", claims_of(third)["gid"]) is not None


def test_a_machine_token_unlocks_no_upstream_token() -> None:
    h, _ = harness()
    token = _token(h)
    principal = h.bearer(token)
    assert isinstance(principal, Principal)
    ctx = h.server.context(now=h.clock.now, random=h.random)
    with pytest.raises(InvalidGrantError):
        run(upstream_access_token(ctx, principal.grant_id), h.store)


# -- metadata and events ---------------------------------------------------------------------------


def _metadata(h: Harness) -> dict[str, Any]:
    resp = h.request("GET", "/.well-known/oauth-authorization-server")
    assert resp.status == 200
    return dict(json.loads(resp.body))


def test_rfc8414_metadata_advertises_the_grant_and_jwt_auth_only_with_such_clients() -> None:
    plain = _metadata(Harness(make_config(cimd_enabled=False)))
    assert "client_credentials" not in plain["grant_types_supported"]
    assert "private_key_jwt" not in plain["token_endpoint_auth_methods_supported"]
    assert "token_endpoint_auth_signing_alg_values_supported" not in plain

    h, _ = harness(cimd_enabled=False)
    machine = _metadata(h)
    assert machine["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "client_credentials",
    ]
    # The extension: client_secret_basic or private_key_jwt, with the algorithms for the latter.
    methods = machine["token_endpoint_auth_methods_supported"]
    assert {"client_secret_basic", "private_key_jwt"} <= set(methods)
    assert "ES256" in machine["token_endpoint_auth_signing_alg_values_supported"]
    assert "client_id_metadata_document_supported" not in machine

    secrets_only = [e for e in ENTRIES if e["client_id"] in ("ci-bot", "app")]
    h3 = Harness(
        make_config(
            static_clients=static_clients(secrets_only), scopes_supported=SCOPES, cimd_enabled=False
        )
    )
    only_secrets = _metadata(h3)
    assert "client_credentials" in only_secrets["grant_types_supported"]
    assert "private_key_jwt" not in only_secrets["token_endpoint_auth_methods_supported"]


def _events(h: Harness, form: dict[str, str], headers: Any) -> Iterator[Any]:
    seen: list[Any] = []

    def observe(effect: Any, _result: Any, _seconds: float) -> None:
        if type(effect) is Emit:
            seen.append(effect.event)

    req = h.make_request(
        "POST",
        "/token",
        headers=(("content-type", "application/x-www-form-urlencoded"), *headers),
        body="&".join(f"{k}={v}" for k, v in form.items()).encode(),
    )
    resp = run(h.server.handle(req, now=h.clock.now, random=h.random), h.store, observe=observe)
    assert resp.status == 200, resp.body
    return iter(seen)


def test_the_domain_event_names_the_grant_type_in_the_audit_line_and_the_metrics() -> None:
    h, _ = harness()
    headers = basic("ci-bot", CI_SECRET)
    (first,) = list(_events(h, {"grant_type": "client_credentials"}, headers))
    (second,) = list(_events(h, {"grant_type": "client_credentials"}, headers))
    assert isinstance(first, TokenIssued) and isinstance(second, TokenIssued)
    assert first.grant_type == "client_credentials" and first.new_grant is True
    assert second.new_grant is False and second.grant_id == first.grant_id
    line = record(first)
    assert line["event"] == "token_issued" and line["grant_type"] == "client_credentials"
    assert line["subject"] == "service:ci-bot" and line["client_id"] == "ci-bot"
    assert first.grant_id not in json.dumps(line)  # a short reference only
    metrics = Metrics()
    observe = metrics.observer(audit_log=False)
    observe(Emit(event=first), None, 0.0)
    text = metrics.exposition().decode()
    assert (
        'oauthproxy_transitions_total{event="token_issued",outcome="applied",'
        'state="client_credentials"} 1.0'
    ) in text


def test_tokens_are_signed_by_the_proxy_and_verify_only_for_the_resource() -> None:
    h, _ = harness()
    token = _token(h)
    decoded = jose_jwt.decode(token, h.server.keys.keyset)
    assert decoded.header["typ"] == "at+jwt"
    # Presented for another resource (an MCP server behind another proxy path): refused.
    other = Harness(make_config(mcp_path="/other"), store=h.store, clock=h.clock)
    assert isinstance(other.bearer(token), Challenge)


def test_without_a_machine_client_the_grant_is_unsupported() -> None:
    h = Harness(make_config())
    resp = h.token({"grant_type": "client_credentials"}, headers=basic("ci-bot", CI_SECRET))
    assert resp.status == 400 and error_of(resp) == "unsupported_grant_type"
    assert h.store.dump() == []
