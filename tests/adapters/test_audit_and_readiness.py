"""Observability (issue 8): an audit event for every state change, no secret in any of them, and a
readiness endpoint that follows the store."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.audit import observe
from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_adapters.driver import run
from oauthproxy_adapters.metrics import Metrics
from oauthproxy_core.access import AccessPolicy
from tests.harness import VERIFIER, Browser, Harness, UpstreamUser, make_config, make_profile
from tests.providers.test_callback_flows import redeem


def test_every_state_change_is_audited_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    original = h.request

    def audited(method: str, target: str, **kw: object) -> object:
        req = h.make_request(method, target, **kw)  # type: ignore[arg-type]
        resp = run(
            h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream, observe
        )
        browser = kw.get("browser")
        if browser is not None:
            browser.absorb(resp)  # type: ignore[attr-defined]
        return resp

    h.request = audited  # type: ignore[assignment,method-assign]
    with caplog.at_level(logging.INFO, logger="oauthproxy.audit"):
        client = h.register()
        code = h.full_code(client, VERIFIER)
        tok = json.loads(
            h.token(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": client["client_id"],
                    "redirect_uri": client["redirect_uris"][0],
                    "code_verifier": VERIFIER,
                }
            ).body
        )
        ref = json.loads(
            h.token(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": tok["refresh_token"],
                    "client_id": client["client_id"],
                }
            ).body
        )
        h.form("/revoke", {"token": ref["refresh_token"], "client_id": client["client_id"]})
        # A replayed code is a transition too (exchanged -> revoked).
        h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client["client_id"],
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": VERIFIER,
            }
        )
    h.request = original  # type: ignore[method-assign]
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "oauthproxy.audit"]
    names = [e["event"] for e in events]
    states = [e["state"] for e in events if e["event"] == "transaction"]
    assert names[0] == "client_registered"
    assert states == ["pkce_bound", "upstream_pending", "code_issued", "exchanged", "revoked"]
    assert {"grant_issued", "grant_rotated", "grant_revoked"} <= set(names)
    assert all(e.get("client_id") in (None, client["client_id"]) for e in events)
    assert any(e.get("subject") == "idp:42" for e in events)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (
        code,
        tok["access_token"],
        tok["refresh_token"],
        ref["refresh_token"],
        ref["refresh_token"].split(".")[1],
        VERIFIER,
        *h.upstream.tokens,
    ):
        assert secret not in text


def test_invariant_33_access_decisions_are_audited_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused sign-in and a grant withdrawn at re-validation each leave an audit line (with the
    subject: the log, not the store, says who was refused) and a count in the metrics."""

    profile = make_profile(
        org_membership_url="https://idp.example/user/orgs",
        team_membership_url="https://idp.example/user/teams",
    )
    h = Harness(make_config(upstream=profile, access=AccessPolicy(github_orgs=("acme",))))
    metrics = Metrics()
    observer = metrics.observer(audit_log=True, config=h.config)

    def audited(method: str, target: str, **kw: object) -> object:
        req = h.make_request(method, target, **kw)  # type: ignore[arg-type]
        resp = run(
            h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream, observer
        )
        browser = kw.get("browser")
        if browser is not None:
            browser.absorb(resp)  # type: ignore[attr-defined]
        return resp

    h.request = audited  # type: ignore[assignment,method-assign]
    with caplog.at_level(logging.INFO, logger="oauthproxy.audit"):
        client = h.register()
        outsider = UpstreamUser(id=5, login="out", orgs=("elsewhere",))
        assert h.run_to_callback(client, VERIFIER, Browser(), outsider).status == 403
        member = UpstreamUser(id=6, login="in", orgs=("acme",))
        resp = h.run_to_callback(client, VERIFIER, Browser(), member)
        tokens = redeem(h, client, resp)
        h.upstream.change_user(UpstreamUser(id=6, login="in"))
        h.clock.advance(h.config.lifetimes.revalidate_after)
        refused = h.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client["client_id"],
            }
        )
        assert refused.status == 400
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "oauthproxy.audit"]
    decisions = [
        (e["when"], e["state"], e["rule"], e["subject"])
        for e in events
        if e["event"] == "access_decision"
    ]
    assert decisions == [
        ("sign_in", "refused", "", "idp:5"),
        ("sign_in", "admitted", "github_orgs", "idp:6"),
        ("refresh", "refused", "", "idp:6"),
    ]
    withdrawn = [e for e in events if e["event"] == "grant_revoked"]
    assert [e["cause"] for e in withdrawn] == ["access_withdrawn"]
    assert [
        e["cause"] for e in events if e["event"] == "transaction" and e["state"] == "denied"
    ] == ["access_refused"]
    exposition = metrics.exposition().decode()
    assert 'event="access_decision",outcome="applied",state="refused"} 2.0' in exposition


def test_readyz_follows_the_store(tmp_path: Path) -> None:
    settings = parse_settings(
        {
            "server": {"base_url": "http://127.0.0.1:8000"},
            "upstream": {
                "provider": "oauth2",
                "client_id": "c",
                "client_secret": "s",
                "authorize_url": "http://127.0.0.1:9/a",
                "token_url": "http://127.0.0.1:9/t",
                "userinfo_url": "http://127.0.0.1:9/u",
                "allow_insecure_http": True,
            },
            # A Redis nobody listens on: the process is healthy but not ready.
            "store": {"url": "redis://127.0.0.1:1/0"},
            "keys": {"file": str(tmp_path / "keys.json")},
        }
    )
    app, _proxy, cleanup = build_app(settings)

    async def probe() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            health = (await c.get("/healthz")).status_code
            ready = (await c.get("/readyz")).status_code
        await cleanup()
        return health, ready

    assert asyncio.run(probe()) == (200, 503)
