"""Fault injection at the upstream provider's token and userinfo endpoints (and its authorize
redirect), over the real stack: ``build_app`` under uvicorn on loopback, a real SQLite file, the
scripted upstream of ``scripted_upstream.py``.

For every fault the MCP client gets a clear OAuth error at its redirect URI
(``temporarily_unavailable`` for what may pass -- timeouts, resets, 5xx, 429, a body that never
ends or is too large -- and ``access_denied`` for answers that will not get better) or, for a slow
but timely answer, the flow completes. Afterwards the store holds no code, no grant and no upstream
state for the failed transaction (``StoreView.problems``), the failed transaction is final, and the
same client completes the next flow at once.

The proxy's upstream timeout is two seconds here (``InProcessProxy``), so a hang costs about that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oauthproxy_adapters.http_clients import SyncHttpClient
from oauthproxy_core.effects import HttpFailure, HttpRequest
from tests.faults.scripted_upstream import Fault, ScriptedUpstream
from tests.faults.stack import Flow, InProcessProxy, StoreView, free_port, make_keys, write_config

TRANSIENT = "temporarily_unavailable"
DENIED = "access_denied"

# (fault, what the client must get). `None`: the flow completes.
FAULTS: dict[str, tuple[Fault, str | None]] = {
    "timeout": (Fault("hang", seconds=4.0), TRANSIENT),
    "connection_reset": (Fault("reset"), TRANSIENT),
    "http_500": (Fault("status", status=500), TRANSIENT),
    "http_503_html": (Fault("status", status=503, body=b"<html>down</html>"), TRANSIENT),
    "http_429_retry_after": (
        Fault("status", status=429, headers=(("Retry-After", "30"),)),
        TRANSIENT,
    ),
    "slow_within_timeout": (Fault("slow", seconds=0.3), None),
    # A byte every 0.2 s for 30 s: each read is quick, the whole answer never comes. The proxy
    # must give up on its own deadline (the test client's 15 s timeout would fail the test).
    "body_dripping_past_timeout": (Fault("drip", seconds=30.0), TRANSIENT),
    "malformed_json": (Fault("malformed"), DENIED),
    "oversized_body": (Fault("oversized"), TRANSIENT),
    "html_content_type": (Fault("html"), DENIED),
    "empty_body": (Fault("empty"), DENIED),
}
TOKEN_ONLY = {"github_form_error": (Fault("form_error"), DENIED)}


class Stack:
    def __init__(self, tmp: Path) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.db = tmp / "state.db"
        self.upstream = ScriptedUpstream(self.base + "/auth/callback")
        config = write_config(
            tmp / "proxy.toml",
            port=port,
            base_url=self.base,
            upstream=self.upstream.base,
            store_url=f"sqlite:///{self.db}",
            keys_file=make_keys(tmp / "keys.json"),
            # Every flow here comes from 127.0.0.1; the bounds have their own tests (test_floods).
            limits={"authorizations_per_address": 10_000, "registrations_per_address": 10_000},
        )
        self.proxy = InProcessProxy(config, port, upstream_timeout=2.0)

    def close(self) -> None:
        self.proxy.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("upstream-faults"))
    try:
        yield s
    finally:
        s.close()


def _run_faulted_flow(stack: Stack, endpoint: str, fault: Fault, expected: str | None) -> None:
    flow = Flow(stack.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        callback_url = flow.to_callback()
        stack.upstream.inject(endpoint, fault)
        resp = flow.callback(callback_url)
        assert stack.upstream.pending() == 0, "the fault was not reached"
        if fault.kind == "drip":
            # The upstream notices the closed connection at its next writes (within a second).
            assert stack.upstream.wait_abandoned(), "the proxy went on reading the dripping body"
        assert resp.status_code == 302, (resp.status_code, resp.text[:300])
        params = Flow.redirect_params(resp)
        assert params["state"] == flow.state and params["iss"] == stack.base
        view = StoreView(stack.db)
        assert view.problems() == []
        assert view.orphans() == []
        if expected is None:
            tokens = Flow.expect(flow.token(params["code"]), 200, "token").json()
            assert flow.bearer(tokens["access_token"]) == 404
        else:
            assert "code" not in params, params
            assert params["error"] == expected, params
            assert "gho_" not in resp.headers["location"]  # nothing of the upstream leaks
            # The transaction is final and nothing was issued for it.
            mine = [t for t in view.tx.values() if t.client_id == flow.client["client_id"]]
            assert [t.state for t in mine] == ["failed"], [t.state for t in mine]
            assert mine[0].grant_id is None and mine[0].code_hash is None
            assert not any(g.client_id == flow.client["client_id"] for g in view.grants.values())
            # Replaying the callback issues nothing either.
            replay = flow.callback(callback_url)
            assert replay.status_code == 400
        # The proxy serves the next complete flow, for the same client.
        flow.complete()
        assert StoreView(stack.db).problems() == []
    finally:
        flow.close()


@pytest.mark.parametrize("name", sorted(FAULTS | TOKEN_ONLY))
def test_fault_at_the_upstream_token_endpoint(stack: Stack, name: str) -> None:
    fault, expected = (FAULTS | TOKEN_ONLY)[name]
    _run_faulted_flow(stack, "token", fault, expected)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_at_the_upstream_userinfo_endpoint(stack: Stack, name: str) -> None:
    fault, expected = FAULTS[name]
    _run_faulted_flow(stack, "user", fault, expected)


@pytest.mark.parametrize(
    ("kind", "expected"), [("deny", DENIED), ("server_error", TRANSIENT)], ids=["deny", "error"]
)
def test_error_redirect_from_the_upstream_authorize_endpoint(
    stack: Stack, kind: str, expected: str
) -> None:
    flow = Flow(stack.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        stack.upstream.inject("authorize", Fault(kind))
        resp = flow.callback(flow.to_callback())
        params = Flow.redirect_params(resp)
        assert params["error"] == expected and "code" not in params
        assert StoreView(stack.db).problems() == []
        flow.complete()
    finally:
        flow.close()


def test_a_fault_storm_leaves_a_consistent_store_and_a_working_proxy(stack: Stack) -> None:
    """Every fault once in a row on one client, then a normal flow: no record was left behind."""
    flow = Flow(stack.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        quick = [f for f, _ in FAULTS.values() if f.kind not in ("hang", "drip", "slow")]
        for fault in quick:
            for endpoint in ("token", "user"):
                stack.upstream.inject(endpoint, fault)
                resp = flow.callback(flow.to_callback())
                assert "error" in Flow.redirect_params(resp)
        view = StoreView(stack.db)
        assert view.problems() == [] and view.orphans() == []
        mine = [t for t in view.tx.values() if t.client_id == flow.client["client_id"]]
        assert {t.state for t in mine} == {"failed"}
        flow.complete()
    finally:
        flow.close()


def test_the_blocking_http_client_also_gives_up_on_a_dripping_body(stack: Stack) -> None:
    """``SyncHttpClient`` (WSGI, h11 and blocking embeddings) stops at its deadline too."""
    stack.upstream.inject("token", Fault("drip", seconds=30.0))
    client = SyncHttpClient()
    try:
        result = client(
            HttpRequest(
                method="POST",
                url=stack.upstream.base + "/login/oauth/access_token",
                headers=(("Content-Type", "application/x-www-form-urlencoded"),),
                body=b"code=x",
                timeout=1.0,
            )
        )
    finally:
        client.close()
    assert result == HttpFailure(reason="timeout")
    assert stack.upstream.wait_abandoned()
