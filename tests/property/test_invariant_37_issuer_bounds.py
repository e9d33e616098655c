"""spec/security.md 37 as properties: no sequence of requests yields a token whose subject, scopes or
audience exceed what the assertion (or the other issuer's token) allows.

Hypothesis draws sequences of ID-JAG exchanges (the claims varied one by one: issuer, ``sub``,
``aud``, ``client_id``, ``resource``, ``scope``, ``jti`` drawn from a small set so that replays
happen; the presenting client and the request's ``scope`` and ``resource`` varied as well) and bearer
checks of trusted-issuer access tokens, all through the core with real signatures. For every token
the proxy issues or accepts, an independent oracle computes what the request was entitled to, and:

- the subject is ``<prefix>:<sub>`` of an assertion whose issuer lists the presenting client;
- the client is the one that authenticated, and the one the assertion names;
- the scopes are within the assertion's (or, without a ``scope`` claim, the default scopes), within
  the request's, and within ``scopes_supported``;
- the audience is the protected resource, and the assertion was made out to this server alone;
- an assertion's ``jti`` buys at most one token.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.tokens import Origin
from tests.harness import ISSUER
from tests.other_issuers import (
    AGENT,
    AGENT_SECRET,
    OTHER_AGENT,
    OTHER_IDP,
    OTHER_JWKS,
    OTHER_SECRET,
    RESOURCE,
    FakeIssuer,
    basic,
    enterprise,
    issuer_harness,
)

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SUPPORTED = ("mcp", "offline_access")
DEFAULT = ("mcp",)
CORP = FakeIssuer()
STRANGER = FakeIssuer(OTHER_IDP, OTHER_JWKS)  # signs, but no table names it
SCOPE_WORDS = ("mcp", "offline_access", "admin", "write")
ABSENT: Any = object()

#: Scope lists, our own scopes drawn more often, so that a request narrows what an assertion allows.
scope_sets = st.lists(st.sampled_from(SCOPE_WORDS + SUPPORTED * 2), max_size=4, unique=True)


def mostly(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """The good values three times as often as each flawed one, so that tokens do get issued."""
    return st.sampled_from(good * 3 + bad)


exchanges = st.fixed_dictionaries(
    {
        "kind": st.just("exchange"),
        "signer": mostly(["corp"], ["stranger"]),
        "sub": st.sampled_from(["alice", "bob", "42"]),
        "aud": mostly(
            [ISSUER, [ISSUER]], [ISSUER + "/token", [ISSUER, RESOURCE], "https://other.example"]
        ),
        "claim_client": mostly([AGENT], [OTHER_AGENT]),
        "client": mostly([AGENT], [OTHER_AGENT]),
        "resource": mostly([RESOURCE, [RESOURCE]], [ISSUER + "/other", ABSENT]),
        "scope_claim": st.one_of(st.just(ABSENT), scope_sets),
        "requested": st.one_of(st.just(None), scope_sets),
        "jti": st.sampled_from(["j1", "j2", "j3"]),
    }
)
bearer_checks = st.fixed_dictionaries(
    {
        "kind": st.just("bearer"),
        "signer": mostly(["corp"], ["stranger"]),
        "sub": st.sampled_from(["alice", "carol"]),
        "aud": mostly([RESOURCE, [RESOURCE, "https://x"]], [ISSUER, "https://x"]),
        "scope_claim": st.one_of(st.just(ABSENT), scope_sets),
        "required": st.lists(st.sampled_from(SUPPORTED), max_size=2, unique=True),
    }
)


def _exchange(h: Any, step: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    signer = CORP if step["signer"] == "corp" else STRANGER
    claims: dict[str, Any] = {
        "sub": step["sub"],
        "aud": step["aud"],
        "client_id": step["claim_client"],
        "jti": step["jti"],
    }
    if step["resource"] is not ABSENT:
        claims["resource"] = step["resource"]
    claims["scope"] = None if step["scope_claim"] is ABSENT else " ".join(step["scope_claim"])
    if step["resource"] is ABSENT:
        claims["resource"] = None
    assertion = signer.id_jag(h.clock.now, **claims)
    form = {"grant_type": GRANT, "assertion": assertion}
    if step["requested"] is not None:
        form["scope"] = " ".join(step["requested"])
    # The client authenticates as registered: AGENT by Basic, OTHER_AGENT in the body.
    if step["client"] == AGENT:
        resp = h.token(form, headers=basic(AGENT, AGENT_SECRET))
    else:
        form.update({"client_id": OTHER_AGENT, "client_secret": OTHER_SECRET})
        resp = h.token(form)
    return resp.status, json.loads(resp.body)


def _entitled_scopes(step: dict[str, Any]) -> set[str]:
    allowed = set(DEFAULT) if step["scope_claim"] is ABSENT else set(step["scope_claim"])
    allowed &= set(SUPPORTED)
    if step["requested"]:
        allowed &= set(step["requested"])
    return allowed


def _claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def _check_exchange(h: Any, step: dict[str, Any], redeemed: set[str]) -> None:
    status, body = _exchange(h, step)
    event(f"exchange answered {status}")
    if status != 200:
        assert body["error"] in {
            "invalid_grant",
            "invalid_scope",
            "unauthorized_client",
            "invalid_target",
        }, body
        return
    # The oracle: everything that had to hold for a token to exist.
    assert step["signer"] == "corp"
    assert step["client"] == AGENT  # the only client the enterprise issuer lists
    assert step["claim_client"] == step["client"]
    assert step["aud"] in (ISSUER, [ISSUER])
    assert step["resource"] in (RESOURCE, [RESOURCE])
    assert step["jti"] not in redeemed, "an assertion was redeemed twice"
    redeemed.add(step["jti"])
    assert "refresh_token" not in body
    granted = set(body["scope"].split())
    assert granted and granted <= _entitled_scopes(step)
    claims = _claims_of(body["access_token"])
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == f"acme:{step['sub']}"
    assert claims["client_id"] == step["client"]
    principal = h.bearer(body["access_token"])
    assert isinstance(principal, Principal)
    assert principal.origin is Origin.ENTERPRISE
    assert set(principal.scopes) == granted
    assert principal.resource == RESOURCE


def _check_bearer(h: Any, step: dict[str, Any]) -> None:
    signer = CORP if step["signer"] == "corp" else STRANGER
    scope = None if step["scope_claim"] is ABSENT else " ".join(step["scope_claim"])
    token = signer.access_token(h.clock.now, sub=step["sub"], aud=step["aud"], scope=scope)
    verdict = h.bearer(token, tuple(step["required"]))
    event(f"bearer check {'accepted' if isinstance(verdict, Principal) else 'refused'}")
    if not isinstance(verdict, Principal):
        return
    assert step["signer"] == "corp"
    aud = step["aud"]
    assert aud == RESOURCE or (isinstance(aud, list) and RESOURCE in aud)
    assert verdict.subject == f"corp:{step['sub']}"
    assert verdict.origin is Origin.TRUSTED_ISSUER
    assert verdict.grant_id == ""
    offered = set() if step["scope_claim"] is ABSENT else set(step["scope_claim"])
    assert set(verdict.scopes) <= offered & set(SUPPORTED)
    assert set(step["required"]) <= set(verdict.scopes)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.one_of(exchanges, bearer_checks), min_size=1, max_size=8))
def test_invariant_37_no_request_sequence_exceeds_what_the_assertion_allows(
    steps: list[dict[str, Any]],
) -> None:
    h = issuer_harness(
        CORP,
        enterprise_issuers=(enterprise(CORP),),
        scopes_supported=SUPPORTED,
        default_scopes=DEFAULT,
    )
    h.fetch = lambda doc: (STRANGER if doc.url == OTHER_JWKS else CORP).fetch(doc)
    redeemed: set[str] = set()
    for step in steps:
        if step["kind"] == "exchange":
            _check_exchange(h, step, redeemed)
        else:
            _check_bearer(h, step)
        h.clock.advance(1)
