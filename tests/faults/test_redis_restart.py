"""A Redis server stopped, paused and restarted in the middle of a flow.

The proxy is ``build_app`` under uvicorn on loopback with ``redis://127.0.0.1:<port>/0``: a private
``redis-server`` on a free port (``--save "" --appendonly no``), stopped and restarted by its PID
(``tests/stores/test_redis_outage.PrivateRedis``), never the shared one on 6379.

- Stopped cleanly after a ``SAVE`` (a planned restart that keeps its data) between consent and
  callback: while it is down every endpoint the flow needs answers 503 ``temporarily_unavailable``
  (JSON at the token endpoint, a rendered page in the browser), nothing is consumed by those failed
  requests, and after the restart the *same* callback completes the flow.
- Killed (SIGKILL, no dump: everything is lost) between callback and token: the token request gets a
  503 while it is down and, after the restart, ``invalid_client`` -- the registration is gone -- so
  the client registers again (spec/interop.md: ``invalid_client`` makes clients re-register) and a new
  flow completes.
- Paused (SIGSTOP: the socket stays open, nothing answers) between authorize and consent: the
  consent page is a 503 after the store's socket timeout instead of a hang; after SIGCONT the same
  page and the rest of the flow work.

After each, the records in Redis break no crash-consistency rule (``StoreView.problems``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.scripted_upstream import ScriptedUpstream
from tests.faults.stack import Flow, InProcessProxy, StoreView, free_port, make_keys, write_config
from tests.stores.test_redis_outage import PrivateRedis


class RedisRig:
    def __init__(self, tmp: Path) -> None:
        self.redis = PrivateRedis(free_port(), tmp)
        self.redis.start()
        self.url = f"redis://127.0.0.1:{self.redis.port}/0"
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.upstream = ScriptedUpstream(self.base + "/auth/callback")
        config = write_config(
            tmp / "proxy.toml",
            port=port,
            base_url=self.base,
            upstream=self.upstream.base,
            store_url=self.url,
            keys_file=make_keys(tmp / "keys.json"),
        )
        self.proxy = InProcessProxy(config, port)

    def save(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.save()
        finally:
            client.close()

    def kill(self, sig: signal.Signals) -> None:
        assert self.redis.proc is not None
        self.redis.proc.send_signal(sig)
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self.redis.proc.wait(10)

    def view(self) -> StoreView:
        return StoreView(redis_url=self.url)

    def close(self) -> None:
        self.proxy.stop()
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.redis.stop()
        self.upstream.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[RedisRig]:
    r = RedisRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _unavailable_json(resp: object) -> None:
    import httpx  # noqa: PLC0415

    assert isinstance(resp, httpx.Response)
    assert resp.status_code == 503, (resp.status_code, resp.text[:200])
    assert resp.json()["error"] == "temporarily_unavailable"
    assert resp.headers["retry-after"]


def test_redis_stopped_and_restarted_with_its_data_between_consent_and_callback(
    rig: RedisRig,
) -> None:
    flow = Flow(rig.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        callback_url = flow.to_callback()
        rig.save()
        rig.kill(signal.SIGTERM)

        page = flow.callback(callback_url)
        assert page.status_code == 503 and b"temporarily_unavailable" in page.content
        _unavailable_json(flow.register())
        _unavailable_json(flow.refresh("anything.anything"))
        assert flow.bearer("not-a-token") in (401, 503)

        rig.redis.start()  # loads the dump written by SAVE
        resp = Flow.expect(flow.callback(callback_url), 302, "callback after the restart")
        code = Flow.redirect_params(resp)["code"]
        tokens = Flow.expect(flow.token(code), 200, "token").json()
        assert flow.bearer(tokens["access_token"]) == 404
        Flow.expect(flow.refresh(tokens["refresh_token"]), 200, "refresh")
        assert rig.view().problems() == []
        flow.complete()
    finally:
        flow.close()


def test_redis_killed_and_restarted_empty_between_callback_and_token(rig: RedisRig) -> None:
    flow = Flow(rig.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        code = flow.code()
        rig.kill(signal.SIGKILL)
        _unavailable_json(flow.token(code))

        rig.redis.start()  # nothing on disk: every record is gone
        lost = flow.token(code)
        assert lost.status_code == 401 and lost.json()["error"] == "invalid_client"
        assert rig.view().problems() == []
        flow.client = {}
        flow.complete()  # registers again and completes
        assert rig.view().problems() == []
    finally:
        flow.close()


def test_redis_paused_between_authorize_and_consent_answers_503_then_recovers(
    rig: RedisRig,
) -> None:
    flow = Flow(rig.base)
    try:
        Flow.expect(flow.register(), 201, "register")
        consent_url = Flow.expect(flow.authorize(), 302, "authorize").headers["location"]
        rig.kill(signal.SIGSTOP)
        try:
            page = flow.consent_page(consent_url)  # the store's 2 s socket timeout, then 503
            assert page.status_code == 503 and b"temporarily_unavailable" in page.content
        finally:
            rig.kill(signal.SIGCONT)
        page = Flow.expect(flow.consent_page(consent_url), 200, "consent page after SIGCONT")
        upstream = Flow.expect(flow.approve(page), 303, "approve").headers["location"]
        resp = Flow.expect(flow.callback(flow.upstream_login(upstream)), 302, "callback")
        tokens = Flow.expect(flow.token(Flow.redirect_params(resp)["code"]), 200, "token").json()
        assert flow.bearer(tokens["access_token"]) == 404
        assert rig.view().problems() == []
    finally:
        flow.close()
