"""spec/security.md 33: who may sign in, and how access is taken away.

Through the real handlers, driver and store (tests/harness.py), with scripted providers shaped like
GitHub (organizations and teams from its REST API), Google (``hd``), Entra (``tid``, groups and the
group overage answered by a Graph-shaped endpoint) and a generic OIDC provider (a nested groups
claim): an admitted user gets a code; a refused one gets a 403 page naming the class of rule (never
its values), the client gets ``access_denied``, and the store holds nothing of them. At refresh,
once ``revalidate_after`` has passed, the provider is asked again: a withdrawn authorization or a
lost membership revokes the family, a transient failure revokes nothing and consumes nothing.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core import codec
from oauthproxy_core.access import AccessPolicy, Facts, decide
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.effects import HttpFailure, HttpResponse
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.providers import entra_profile, google_profile
from oauthproxy_core.records import Grant, Transaction
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    make_config,
    make_profile,
    redirect_params,
)
from tests.providers.idp import CLIENT_ID, IDP, ClaimsProvider, at_idp, json_response
from tests.providers.test_callback_flows import redeem

HOUR = 3600
GITHUB_API = make_profile(
    org_membership_url="https://idp.example/user/orgs",
    team_membership_url="https://idp.example/user/teams",
)
ADA = UpstreamUser(id=42, login="ada", orgs=("acme",), teams=("acme/platform",))
EVE = UpstreamUser(id=66, login="qqevelynqq", orgs=("other",), teams=("other/ops",))
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def harness(access: AccessPolicy, **config: Any) -> Harness:
    h = Harness(make_config(upstream=GITHUB_API, access=access, **config))
    return h


class _Link(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def return_link(page: bytes) -> str:
    parser = _Link()
    parser.feed(page.decode())
    assert len(parser.hrefs) == 1, parser.hrefs
    return parser.hrefs[0]


def stored_text(h: Harness) -> str:
    """Everything the memory store holds, as text (records are JSON)."""
    return "\n".join(f"{kind}:{key}:{value!r}" for kind, key, value in h.store.dump())


def sign_in(h: Harness, user: UpstreamUser, **params: str) -> tuple[dict[str, Any], Any]:
    client = h.register()
    return client, h.run_to_callback(client, VERIFIER, Browser(), user, state="xyz", **params)


def refresh(h: Harness, client: dict[str, Any], token: str) -> Any:
    return h.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": client["client_id"]}
    )


# -- who may sign in ----------------------------------------------------------------------------


def test_invariant_33_member_of_an_allowed_org_signs_in_and_the_groups_reach_the_server() -> None:
    h = harness(AccessPolicy(github_orgs=("acme",)))
    client, resp = sign_in(h, ADA)
    tokens = redeem(h, client, resp)
    principal = h.bearer(tokens["access_token"])
    assert isinstance(principal, Principal)
    assert principal.subject == "idp:42"
    assert "acme" in principal.groups


def test_invariant_33_team_rule_needs_the_team_not_only_the_org() -> None:
    h = harness(AccessPolicy(github_orgs=("acme/platform",)))
    _client, resp = sign_in(h, ADA)
    assert "code" in redirect_params(resp)
    member_of_org_only = UpstreamUser(id=7, login="bob", orgs=("acme",), teams=("acme/sales",))
    _client, resp = sign_in(h, member_of_org_only)
    assert resp.status == 403


def test_invariant_33_read_org_is_requested_only_when_org_rules_exist() -> None:
    with_rules = harness(AccessPolicy(github_orgs=("acme",)))
    without = harness(AccessPolicy(allowed_subjects=("idp:42",)))
    assert "read:org" in with_rules.config.upstream.scopes
    assert "read:org" not in without.config.upstream.scopes
    # Without org rules the membership API is never asked.
    sign_in(without, ADA)
    assert not [c for c in without.upstream.calls if "/user/orgs" in c.url]


def test_invariant_33_refused_user_sees_why_client_gets_access_denied_store_keeps_nothing() -> None:
    h = harness(AccessPolicy(github_orgs=("acme", "acme/platform"), allowed_emails=("a@x.org",)))
    before = {(kind, key) for kind, key, _v in h.store.dump()}
    client, resp = sign_in(h, EVE)
    assert resp.status == 403
    page = resp.body.decode()
    assert "not allowed" in page
    assert "members of certain GitHub organizations or teams" in page
    assert "certain verified email addresses" in page
    # The classes of rule, never the values.
    assert "acme" not in page and "a@x.org" not in page
    link = return_link(resp.body)
    assert link.startswith(client["redirect_uris"][0])
    params = dict(parse_qsl(urlsplit(link).query))
    assert params["error"] == "access_denied" and params["state"] == "xyz"
    assert params["iss"] == h.config.issuer
    # Nothing of the user: no code, no grant, no upstream token, not their subject or login.
    after = {(kind, key) for kind, key, _v in h.store.dump()}
    assert not {kind for kind, _key in after - before} & {"code", "grant"}
    text = stored_text(h)
    issued = [t for t, info in h.upstream.tokens.items() if info.user.id == EVE.id]
    assert issued and not any(token in text for token in issued)
    assert "idp:66" not in text and "qqevelynqq" not in text
    (tx,) = [codec.decode(v, Transaction, 1) for k, _key, v in h.store.dump() if k == "tx"]
    assert tx.state == "denied" and tx.subject is None and tx.upstream_sealed is None


@pytest.mark.parametrize(
    ("policy", "user"),
    [
        (AccessPolicy(allowed_subjects=("idp:42",)), ADA),
        (AccessPolicy(github_orgs=("ACME",)), ADA),  # GitHub logins compare case-insensitively
    ],
)
def test_invariant_33_each_rule_class_admits_its_match(
    policy: AccessPolicy, user: UpstreamUser
) -> None:
    h = harness(policy)
    _client, resp = sign_in(h, user)
    assert "code" in redirect_params(resp)
    _client, resp = sign_in(h, EVE)
    assert resp.status == 403


def _google(claims: dict[str, Any], policy: AccessPolicy) -> tuple[Harness, Any]:
    profile = at_idp(google_profile(client_id=CLIENT_ID, client_secret="s"))
    h = Harness(make_config(upstream=profile, access=policy))
    h.upstream = ClaimsProvider(  # type: ignore[assignment]
        callback_url=h.config.callback_url,
        claims={"iss": IDP, "sub": "1084", **claims},
        id_token=True,
        now=h.clock,
    )
    client = h.register()
    return h, h.run_to_callback(client, VERIFIER, Browser())


def test_invariant_33_google_hosted_domain_comes_from_the_verified_id_token() -> None:
    policy = AccessPolicy(google_hosted_domains=("example.com",))
    _h, resp = _google({"hd": "example.com"}, policy)
    assert "code" in redirect_params(resp)
    _h, resp = _google({"hd": "example.org"}, policy)
    assert resp.status == 403
    # A personal account has no hd; an hd only in UserInfo is not the verified claim.
    _h, resp = _google({}, policy)
    assert resp.status == 403


def test_invariant_33_email_domain_is_exact_never_a_suffix() -> None:
    policy = AccessPolicy(allowed_email_domains=("example.com",))
    ok = {"email": "Ada@Example.COM", "email_verified": True}
    assert "code" in redirect_params(_google(ok, policy)[1])
    for email in ("ada@evil-example.com", "ada@sub.example.com", "ada@example.com.evil"):
        assert _google({"email": email, "email_verified": True}, policy)[1].status == 403
    # An unverified address never matches (spec/security.md 32).
    assert _google({"email": "ada@example.com", "email_verified": False}, policy)[1].status == 403


class EntraWithGraph(ClaimsProvider):
    """An Entra-shaped provider whose ID token may report a group overage, with a Graph-shaped
    ``getMemberObjects`` on loopback-free paths of the same scripted host."""

    def __init__(self, *, graph_groups: list[str] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.graph_groups = graph_groups
        self.graph_calls = 0

    def __call__(self, req: Any) -> HttpResponse | HttpFailure:
        if urlsplit(req.url).path == "/v1.0/me/getMemberObjects":
            self.graph_calls += 1
            assert req.method == "POST" and json.loads(req.body) == {"securityEnabledOnly": False}
            if self.graph_groups is None:
                return json_response({"error": {"code": "Authorization_RequestDenied"}}, 403)
            return json_response({"value": self.graph_groups})
        return super().__call__(req)


def _entra(claims: dict[str, Any], policy: AccessPolicy, graph: list[str] | None = None) -> Any:
    profile = entra_profile(
        client_id=CLIENT_ID, client_secret="s", tenant="common", authority=IDP, graph_url=IDP
    )
    h = Harness(make_config(upstream=profile, access=policy))
    provider = EntraWithGraph(
        graph_groups=graph,
        callback_url=h.config.callback_url,
        claims={"iss": f"{IDP}/{TENANT}/v2.0", "tid": TENANT, "sub": "s-1", **claims},
        id_token=True,
        now=h.clock,
    )
    h.upstream = provider  # type: ignore[assignment]
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser())
    return h, provider, client, resp


def test_invariant_33_entra_tenant_and_groups_from_the_id_token() -> None:
    _h, _p, _c, resp = _entra({}, AccessPolicy(entra_tenants=(TENANT.upper(),)))
    assert "code" in redirect_params(resp)
    _h, _p, _c, resp = _entra(
        {}, AccessPolicy(entra_tenants=("00000000-0000-0000-0000-000000000001",))
    )
    assert resp.status == 403
    h, p, client, resp = _entra({"groups": ["g-1", "g-2"]}, AccessPolicy(allowed_groups=("g-2",)))
    assert p.graph_calls == 0
    principal = h.bearer(redeem(h, client, resp)["access_token"])
    assert isinstance(principal, Principal) and principal.groups[0] == "g-2"


def test_invariant_33_entra_group_overage_is_resolved_at_graph() -> None:
    overage = {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "x"}}}
    _h, p, _c, resp = _entra(overage, AccessPolicy(allowed_groups=("g-9",)), graph=["g-1", "g-9"])
    assert p.graph_calls == 1 and "code" in redirect_params(resp)
    # Graph refuses (a token without the permission): no groups, so the rule does not match.
    _h, p, _c, resp = _entra(overage, AccessPolicy(allowed_groups=("g-9",)), graph=None)
    assert p.graph_calls == 1 and resp.status == 403
    # No group rule: the overage is not chased at all.
    _h, p, _c, resp = _entra(overage, AccessPolicy(entra_tenants=(TENANT,)), graph=["g-9"])
    assert p.graph_calls == 0 and "code" in redirect_params(resp)


def test_invariant_33_generic_oidc_groups_at_a_dotted_path() -> None:
    policy = AccessPolicy(allowed_groups=("mcp-users",), groups_claim="realm_access.roles")
    claims = {"realm_access": {"roles": ["offline", "mcp-users"]}}
    _h, resp = _google(claims, policy)
    assert "code" in redirect_params(resp)
    _h, resp = _google({"realm_access": {"roles": "mcp-admins"}}, policy)
    assert resp.status == 403


# -- Hypothesis: admitted iff some rule matches ------------------------------------------------

_names = st.sampled_from(["acme", "Acme", "other", "x-1", "team"])
_domains = st.sampled_from(["example.com", "example.org", "sub.example.com", "evil-example.com"])
_policies = st.builds(
    AccessPolicy,
    allowed_subjects=st.lists(st.sampled_from(["idp:1", "idp:2", "github:3"]), max_size=2),
    allowed_emails=st.lists(st.sampled_from(["a@example.com", "B@example.org"]), max_size=2),
    allowed_email_domains=st.lists(_domains, max_size=2),
    github_orgs=st.lists(st.sampled_from(["acme", "acme/platform", "other"]), max_size=2),
    google_hosted_domains=st.lists(_domains, max_size=2),
    entra_tenants=st.lists(
        st.sampled_from([TENANT, "00000000-0000-0000-0000-000000000001"]), max_size=1
    ),
    allowed_groups=st.lists(_names, max_size=2),
)
_facts = st.builds(
    Facts,
    subject=st.sampled_from(["idp:1", "idp:2", "github:3", "idp:9"]),
    email=st.none() | st.sampled_from(["A@example.com", "b@example.org", "c@evil-example.com"]),
    hosted_domain=st.none() | _domains,
    tenant=st.none() | st.sampled_from([TENANT, TENANT.upper()]),
    groups=st.lists(_names, max_size=3),
    github_orgs=st.lists(st.sampled_from(["ACME", "other", "third"]), max_size=2),
    github_teams=st.lists(st.sampled_from(["acme/platform", "acme/sales"]), max_size=2),
)


def _oracle(policy: AccessPolicy, facts: Facts) -> bool:
    """The rules as the documentation states them, written independently of access.py."""
    if not any(
        (
            policy.allowed_subjects,
            policy.allowed_emails,
            policy.allowed_email_domains,
            policy.github_orgs,
            policy.google_hosted_domains,
            policy.entra_tenants,
            policy.allowed_groups,
        )
    ):
        return True
    email = (facts.email or "").lower()
    memberships = {m.lower() for m in (*facts.github_orgs, *facts.github_teams)}
    checks = [
        facts.subject in policy.allowed_subjects,
        bool(email) and any(email == e.lower() for e in policy.allowed_emails),
        bool(email) and any(email.endswith("@" + d.lower()) for d in policy.allowed_email_domains),
        any(rule.lower() in memberships for rule in policy.github_orgs),
        facts.hosted_domain is not None
        and facts.hosted_domain.lower() in [d.lower() for d in policy.google_hosted_domains],
        facts.tenant is not None
        and facts.tenant.lower() in [t.lower() for t in policy.entra_tenants],
        any(g in policy.allowed_groups for g in facts.groups),
    ]
    return any(checks)


@given(policy=_policies, facts=_facts)
def test_invariant_33_admitted_if_and_only_if_some_rule_matches(
    policy: AccessPolicy, facts: Facts
) -> None:
    decision = decide(policy, facts)
    assert decision.admitted == _oracle(policy, facts)
    if not decision.admitted:
        assert decision.groups == ()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    orgs=st.lists(st.sampled_from(["acme", "other", "third"]), max_size=3, unique=True),
    rules=st.lists(st.sampled_from(["acme", "acme/platform", "third"]), min_size=1, max_size=2),
)
def test_invariant_33_a_refused_callback_writes_nothing_of_the_user(
    orgs: list[str], rules: list[str]
) -> None:
    h = harness(AccessPolicy(github_orgs=tuple(rules)))
    user = UpstreamUser(id=5150, login="qqzqq", orgs=tuple(orgs), teams=())
    _client, resp = sign_in(h, user)
    admitted = bool(set(orgs) & set(rules))
    kinds = {kind for kind, _k, _v in h.store.dump()}
    if admitted:
        assert "code" in redirect_params(resp)
    else:
        assert resp.status == 403
        assert "code" not in kinds and "grant" not in kinds
        assert "idp:5150" not in stored_text(h) and "qqzqq" not in stored_text(h)


# -- lifetimes --------------------------------------------------------------------------------


def test_refresh_absolute_ends_the_family_whatever_the_rotations() -> None:
    lifetimes = Lifetimes(
        refresh_token=10 * 24 * HOUR, refresh_absolute=25 * 24 * HOUR, revocation_staleness=0
    )
    h = harness(AccessPolicy(), lifetimes=lifetimes)
    client, resp = sign_in(h, ADA)
    token = redeem(h, client, resp)["refresh_token"]
    for _ in range(2):
        h.clock.advance(9 * 24 * HOUR)
        answer = refresh(h, client, token)
        assert answer.status == 200, answer.body
        token = json.loads(answer.body)["refresh_token"]
    h.clock.advance(8 * 24 * HOUR)  # day 26: inside the idle window, past the absolute cap
    assert refresh(h, client, token).status == 400


# -- taking access away at refresh ------------------------------------------------------------


def _grant(h: Harness, grant_id: str) -> Grant:
    for kind, key, value in h.store.dump():
        if kind == "grant" and key == grant_id:
            return codec.decode(value, Grant, 1)
    raise AssertionError("no such grant")


def _signed_in(policy: AccessPolicy, user: UpstreamUser, *, app: bool = False) -> Any:
    h = harness(policy)
    h.upstream.issue_refresh = app
    client, resp = sign_in(h, user)
    tokens = redeem(h, client, resp)
    return h, client, tokens


def test_invariant_33_no_upstream_call_before_revalidate_after() -> None:
    h, client, tokens = _signed_in(AccessPolicy(github_orgs=("acme",)), ADA)
    calls = len(h.upstream.calls)
    h.clock.advance(HOUR - 1)
    assert refresh(h, client, tokens["refresh_token"]).status == 200
    assert len(h.upstream.calls) == calls


@pytest.mark.parametrize("app", [False, True], ids=["oauth-app", "github-app"])
def test_invariant_33_authorization_withdrawn_upstream_revokes_at_the_next_refresh(
    app: bool,
) -> None:
    h, client, tokens = _signed_in(AccessPolicy(github_orgs=("acme",)), ADA, app=app)
    h.upstream.withdraw(ADA.id)
    h.clock.advance(HOUR)
    answer = refresh(h, client, tokens["refresh_token"])
    assert answer.status == 400 and json.loads(answer.body)["error"] == "invalid_grant"
    assert isinstance(h.bearer(tokens["access_token"]), Challenge)  # the access token died too
    grant_id = tokens["refresh_token"].split(".")[0]
    assert _grant(h, grant_id).state == "revoked"


@pytest.mark.parametrize("app", [False, True], ids=["oauth-app", "github-app"])
def test_invariant_33_membership_lost_revokes_and_a_kept_one_rotates(app: bool) -> None:
    h, client, tokens = _signed_in(AccessPolicy(github_orgs=("acme",)), ADA, app=app)
    h.clock.advance(HOUR)
    answer = refresh(h, client, tokens["refresh_token"])
    assert answer.status == 200, answer.body
    renewed = json.loads(answer.body)
    grant = _grant(h, renewed["refresh_token"].split(".")[0])
    assert grant.confirmed_at == h.clock.now and grant.revalidating_until == 0
    # Ada leaves acme.
    h.upstream.change_user(UpstreamUser(id=ADA.id, login="ada", orgs=("elsewhere",)))
    h.clock.advance(HOUR)
    answer = refresh(h, client, renewed["refresh_token"])
    assert answer.status == 400 and json.loads(answer.body)["error"] == "invalid_grant"
    assert isinstance(h.bearer(renewed["access_token"]), Challenge)


TRANSIENT = [
    pytest.param(HttpFailure(reason="timeout"), id="timeout"),
    pytest.param(HttpFailure(reason="connect"), id="connect"),
    pytest.param(json_response({"message": "oops"}, 502), id="502"),
    pytest.param(json_response({"message": "slow"}, 429, (("Retry-After", "9"),)), id="429"),
    pytest.param(
        json_response({"message": "rate"}, 403, (("X-RateLimit-Remaining", "0"),)), id="403-rate"
    ),
]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    failure=st.sampled_from([p.values[0] for p in TRANSIENT]),
    app=st.booleans(),
    where=st.sampled_from(["api", "token"]),
)
def test_invariant_33_revalidation_never_revokes_on_a_transient_failure(
    failure: Any, app: bool, where: str
) -> None:
    h, client, tokens = _signed_in(AccessPolicy(github_orgs=("acme",)), ADA, app=app)
    h.clock.advance(HOUR)
    if where == "token":
        h.upstream.fail_token_with = failure
    h.upstream.fail_api_with = failure
    answer = refresh(h, client, tokens["refresh_token"])
    assert answer.status == 503, answer.body
    assert json.loads(answer.body)["error"] == "temporarily_unavailable"
    grant = _grant(h, tokens["refresh_token"].split(".")[0])
    assert grant.state == "active" and grant.revalidating_until == 0
    assert h.store.get("revoked", grant.id) is None  # no revocation marker either
    # The provider is back: the very same refresh token works (nothing was consumed).
    h.upstream.fail_token_with = None
    h.upstream.fail_api_with = None
    assert refresh(h, client, tokens["refresh_token"]).status == 200


def test_invariant_33_one_revalidation_per_grant_at_a_time() -> None:
    h, client, tokens = _signed_in(AccessPolicy(github_orgs=("acme",)), ADA)
    h.clock.advance(HOUR)
    inner = h.upstream
    answers: list[Any] = []

    class Concurrent:
        """While the first refresh asks the provider, the client retries the same request."""

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def __call__(self, req: Any) -> Any:
            if not answers and urlsplit(req.url).path == "/user":
                answers.append(refresh(h, client, tokens["refresh_token"]))
            return inner(req)

    h.upstream = Concurrent()  # type: ignore[assignment]
    first = refresh(h, client, tokens["refresh_token"])
    assert first.status == 200, first.body
    (second,) = answers
    assert second.status == 503 and second.header("retry-after") is not None
    # Once the first has rotated, the retry is answered from the grace window, identically.
    retried = refresh(h, client, tokens["refresh_token"])
    assert retried.status == 200 and json.loads(retried.body) == json.loads(first.body)
    upstream_user_calls = [c for c in inner.calls if urlsplit(c.url).path == "/user"]
    assert len(upstream_user_calls) == 2  # the sign-in's and one re-validation
