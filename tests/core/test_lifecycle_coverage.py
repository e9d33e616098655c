"""The declared lifecycles and the handlers agree (spec/architecture.md, "the machine owns the write").

- Every declared state and every declared event of every machine is reached by the real handlers,
  driven through the real driver and store, and no state is reached that is not declared.
- No handler chooses a state: outside ``states.py`` no call passes ``state=`` to a record constructor,
  ``attrs.evolve`` or ``persistence.replace``, and ``persistence.replace`` refuses such a change.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_core import codec, grants, persistence, states
from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.effects import HttpFailure
from oauthproxy_core.records import Grant
from oauthproxy_core.states import GrantEvent, GrantState, Lifecycle, TxEvent, TxState
from tests.core.test_states import make_tx, matching
from tests.harness import (
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    make_config,
    make_profile,
    redirect_params,
)
from tests.providers.test_callback_flows import github_harness, grant_of, redeem, upstream_token
from tests.rfc.device_support import drive_every_device_path

CORE = Path(states.__file__).parent
Seen = list[tuple[str, str, str, str]]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    """Records (machine, state before, event applied, state after) of every step the core takes."""
    log: Seen = []
    real = Lifecycle.step

    def recording(self: Lifecycle[Any, Any, Any], record: Any, event: Any, data: Any, **kw: Any):  # type: ignore[no-untyped-def]
        result = real(self, record, event, data, **kw)
        log.append((self.machine.__name__, record.state, result.event.value, result.state))
        return result

    monkeypatch.setattr(Lifecycle, "step", recording)
    yield log


def _code_grant(h: Harness, client: dict[str, Any], code: str) -> Any:
    return h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "client_id": client["client_id"],
            "code_verifier": VERIFIER,
            "resource": h.config.resource,
        },
    )


def _refresh(h: Harness, client: dict[str, Any], refresh: str) -> Any:
    return h.token(
        {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client["client_id"]}
    )


def _consent_path(h: Harness, client: dict[str, Any], browser: Browser) -> str:
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    assert resp.status == 302, resp.body
    return (resp.header("location") or "").removeprefix(h.config.issuer)


def _to_consent(h: Harness, client: dict[str, Any], browser: Browser) -> dict[str, str]:
    page = h.request("GET", _consent_path(h, client, browser), browser=browser)
    assert page.status == 200, page.body
    return consent_fields(page)


def _drive_every_path() -> None:
    """Real flows through the handlers, one per way a transaction or a grant can end."""
    h = Harness()
    client = h.register()

    # Success, rotation, a replay of the rotated token after its grace window, then a code replay.
    code = h.full_code(client, VERIFIER)
    first = _code_grant(h, client, code)
    assert first.status == 200, first.body
    refresh1 = json.loads(first.body)["refresh_token"]
    rotated = _refresh(h, client, refresh1)
    assert rotated.status == 200, rotated.body
    h.clock.advance(h.config.lifetimes.refresh_grace + 1)
    assert _refresh(h, client, refresh1).status == 400  # reuse: the family is revoked
    assert _code_grant(h, client, code).status == 400  # replay of the code

    # Revocation by the client; a code replayed while its grant is still active.
    body = json.loads(_code_grant(h, client, h.full_code(client, VERIFIER)).body)
    assert (
        h.form("/revoke", {"token": body["refresh_token"], "client_id": client["client_id"]}).status
        == 200
    )
    code = h.full_code(client, VERIFIER)
    assert _code_grant(h, client, code).status == 200
    assert _code_grant(h, client, code).status == 400

    # An operator revokes a grant (`oauthproxy grants revoke` runs exactly this).
    body = json.loads(_code_grant(h, client, h.full_code(client, VERIFIER)).body)
    ctx = h.server.context(now=h.clock.now, random=h.random)
    grant_id = body["refresh_token"].split(".")[0]
    run(grants.revoke_grant(ctx, grant_id, GrantEvent.operator_revoked), h.store)
    assert _refresh(h, client, body["refresh_token"]).status == 400

    # Consent denied; the provider denies; the provider fails; another browser returns.
    browser = Browser()
    fields = _to_consent(h, client, browser)
    assert h.form("/consent", {**fields, "decision": "deny"}, browser=browser).status == 303
    browser = Browser()
    fields = _to_consent(h, client, browser)
    resp = h.form("/consent", {**fields, "decision": "approve"}, browser=browser)
    callback = h.upstream.login(resp.header("location") or "", _user(), deny=True)
    h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
    h.upstream.fail_token_with = HttpFailure(reason="timeout")
    resp = h.run_to_callback(client, VERIFIER, Browser())
    assert redirect_params(resp)["error"] == "temporarily_unavailable"
    h.upstream.fail_token_with = None
    browser = Browser()
    fields = _to_consent(h, client, browser)
    resp = h.form("/consent", {**fields, "decision": "approve"}, browser=browser)
    callback = h.upstream.login(resp.header("location") or "", _user())
    assert h.request("GET", callback.removeprefix(h.config.issuer), browser=Browser()).status == 400

    # A transaction left on the consent page past its lifetime.
    browser = Browser()
    fields = _to_consent(h, client, browser)
    h.clock.advance(h.config.lifetimes.transaction + 1)
    assert h.form("/consent", {**fields, "decision": "approve"}, browser=browser).status == 400

    # RFC 7592 §2.3: the client is deleted while one of its authorizations waits for consent.
    managed = h.register()
    browser = Browser()
    consent_path = _consent_path(h, managed, browser)
    resp = h.request(
        "DELETE",
        "/register/" + managed["client_id"],
        headers=(("authorization", "Bearer " + managed["registration_access_token"]),),
    )
    assert resp.status == 204, resp.body
    assert h.request("GET", consent_path, browser=browser).status == 400

    # The provider's refresh token: refreshed, then refused.
    gh, app = github_harness(app=True)
    app_client = gh.register()
    grant = grant_of(
        gh,
        redeem(gh, app_client, gh.run_to_callback(app_client, VERIFIER, Browser()))["access_token"],
    )
    gh.clock.advance(28800)
    upstream_token(gh, grant)
    gh.clock.advance(28800)
    app.valid_refresh = "withdrawn"
    with pytest.raises(Exception, match="revoked"):
        upstream_token(gh, grant)

    # RFC 7592 §2.3: the grant of a deleted client is revoked when its upstream token is asked for.
    gone = gh.register()
    gone_grant = grant_of(
        gh, redeem(gh, gone, gh.run_to_callback(gone, VERIFIER, Browser()))["access_token"]
    )
    resp = gh.request(
        "DELETE",
        "/register/" + gone["client_id"],
        headers=(("authorization", "Bearer " + gone["registration_access_token"]),),
    )
    assert resp.status == 204, resp.body
    with pytest.raises(Exception, match="revoked"):
        upstream_token(gh, gone_grant)


def _drive_access_paths() -> None:
    """spec/security.md 33: a refused sign-in; re-validation at refresh confirming, deferring on a
    transient failure, and withdrawing access once the membership is gone."""
    policy = AccessPolicy(github_orgs=("acme",))
    profile = make_profile(
        org_membership_url="https://idp.example/user/orgs",
        team_membership_url="https://idp.example/user/teams",
    )
    h = Harness(make_config(upstream=profile, access=policy))
    client = h.register()
    outsider = UpstreamUser(id=5, login="out", orgs=("elsewhere",))
    assert h.run_to_callback(client, VERIFIER, Browser(), outsider).status == 403

    member = UpstreamUser(id=6, login="in", orgs=("acme",))
    resp = h.run_to_callback(client, VERIFIER, Browser(), member)
    body = json.loads(_code_grant(h, client, redirect_params(resp)["code"]).body)
    h.clock.advance(h.config.lifetimes.revalidate_after)
    h.upstream.fail_api_with = HttpFailure(reason="timeout")
    assert _refresh(h, client, body["refresh_token"]).status == 503  # deferred
    h.upstream.fail_api_with = None
    renewed = _refresh(h, client, body["refresh_token"])  # revalidated, then rotated
    assert renewed.status == 200, renewed.body
    h.upstream.change_user(UpstreamUser(id=6, login="in", orgs=()))
    h.clock.advance(h.config.lifetimes.revalidate_after)
    assert _refresh(h, client, json.loads(renewed.body)["refresh_token"]).status == 400


def _user() -> Any:
    return UpstreamUser(id=42, login="octocat")


def test_every_declared_state_and_event_is_reached_by_the_handlers(seen: Seen) -> None:
    _drive_every_path()
    _drive_access_paths()
    drive_every_device_path()
    for lifecycle in (states.TRANSACTION, states.GRANT, states.DEVICE):
        name = lifecycle.machine.__name__
        mine = [entry for entry in seen if entry[0] == name]
        reached = {entry[1] for entry in mine} | {entry[3] for entry in mine}
        applied = {entry[2] for entry in mine}
        declared = {s.value for s in lifecycle.states}
        assert reached == declared, f"{name}: reached {sorted(reached)}"
        missing = {e.value for e in lifecycle.events} - applied
        assert not missing, f"{name}: events never applied by a handler: {sorted(missing)}"


def test_revoked_grants_keep_no_sealed_secret(seen: Seen) -> None:
    h = Harness()
    client = h.register()
    body = json.loads(_code_grant(h, client, h.full_code(client, VERIFIER)).body)
    grant_id = body["refresh_token"].split(".")[0]
    assert (
        h.form("/revoke", {"token": body["refresh_token"], "client_id": client["client_id"]}).status
        == 200
    )
    stored = h.store.get("grant", grant_id)
    assert stored is not None
    grant = codec.decode(stored.value, Grant, stored.version)
    assert grant.state == GrantState.revoked.value
    assert grant.upstream_sealed is None and grant.previous_response_sealed is None
    assert ("GrantMachine", "active", GrantEvent.revocation_requested.value, "revoked") in seen
    # A revoked grant's refresh token is refused, and the machine was asked (not a bypass).
    assert _refresh(h, client, body["refresh_token"]).status == 400


def _calls_with_state_keyword(tree: ast.AST) -> list[int]:
    writers = {"evolve", "replace", "Transaction", "Grant", "Client", "ConsentDecision"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in writers and any(k.arg == "state" for k in node.keywords):
            lines.append(node.lineno)
    return lines


def test_no_module_but_states_chooses_a_state() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "states.py":
            continue
        for line in _calls_with_state_keyword(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(CORE)}:{line}")
    assert not offenders, "a state is written outside states.py: " + ", ".join(offenders)


def test_replace_refuses_a_state_change() -> None:
    grant = Grant(
        id="g" * 22,
        client_id="c",
        subject="s",
        scopes=("mcp",),
        resource="r",
        created_at=1,
        expires_at=2,
    )
    gen = persistence.replace("grant", grant.id, grant, 60, state="revoked")
    with pytest.raises(TypeError, match="states"):
        next(gen)


def test_step_refuses_an_undeclared_write_and_drops_writes_when_failing_closed() -> None:
    tx = make_tx(TxState.upstream_pending)
    with pytest.raises(states.UndeclaredWriteError):
        states.step(tx, TxEvent.upstream_returned, matching, client_id="someone-else")
    refused = states.step(
        tx,
        TxEvent.upstream_returned,
        states.EventData(now=matching.now, browser_hash="c" * 64),
        subject="idp:1",
    )
    assert refused.failed_closed and refused.record.state == TxState.failed.value
    assert refused.record.subject is None  # the declared write was dropped, only the state moved
    late = states.step(tx, TxEvent.upstream_returned, states.EventData(now=10**9), subject="idp:1")
    assert late.event is TxEvent.deadline_passed and late.record.state == TxState.expired.value
    assert late.record.subject is None
    ok = states.step(tx, TxEvent.upstream_returned, matching, subject="idp:1")
    assert ok.record.state == TxState.code_issued.value and ok.record.subject == "idp:1"
    assert ok.record.version == tx.version + 1
