"""A proxy process restarted mid-flow finishes the flow (spec/architecture.md, "Storage contract": SQLite
is the embedded default, one file, WAL; every state the flow needs is in the store, none in memory).

One ``oauthproxy serve`` process (the testing kit's ``ServeProcess``) with the SQLite store (a real
file) and a keys file, in front of a GitHub-shaped upstream on loopback (the kit's ``FakeProvider``,
in this test process, so it outlives the proxy).
The process is stopped -- SIGTERM (graceful) and, separately, SIGKILL (no shutdown at all) --

- between consent and callback (the transaction is ``upstream_pending``, the browser is at the
  provider while the proxy is down), or
- between callback and token (a code was issued and not yet redeemed),

then started again on the same port with the same files, and the flow completes. Refresh tokens
issued before the restart (one of them already rotated once) still refresh after it, access tokens
issued before it still verify, and a second restart right after a rotation keeps the rotated token.
Every process binds 127.0.0.1 and is stopped by its own PID (``Popen.send_signal``).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oauthproxy_adapters.testing.serve import ServeProcess, free_port
from tests.e2e.test_multi_instance import (
    Balancer,
    Flow,
    Upstream,
    make_keys,
    write_config,
)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.db = tmp_path / "state.db"
        self.upstream = Upstream(self.base_url + "/auth/callback")
        config = write_config(
            tmp_path / "proxy.toml",
            port=port,
            base_url=self.base_url,
            upstream=self.upstream.base,
            store_url=f"sqlite:///{self.db}",
            keys_file=make_keys(tmp_path / "keys.json"),
        )
        self.proxy = ServeProcess(config, port, tmp_path, "proxy")
        self.lb: Balancer | None = None

    def balancer(self) -> Balancer:
        self.lb = Balancer(self.base_url, [self.proxy])
        return self.lb

    def restart(self, sig: signal.Signals) -> None:
        assert self.proxy.proc is not None
        pid = self.proxy.proc.pid
        code = self.proxy.stop(sig)
        if sig is signal.SIGKILL:
            assert code == -signal.SIGKILL, code
        else:
            # uvicorn shuts down gracefully, then re-raises the captured SIGTERM (uvicorn >= 0.29),
            # so a clean stop reads as "killed by SIGTERM"; anything else is a crash.
            assert code in (0, -signal.SIGTERM), f"exit {code}:\n{self.proxy.output()}"
        if self.lb is not None:
            # A load balancer would open new connections to the new process too.
            self.lb.http.close()
            self.lb.http = httpx.Client(follow_redirects=False, timeout=15.0, trust_env=False)
        self.proxy.start()
        assert self.proxy.proc is not None and self.proxy.proc.pid != pid

    def close(self) -> None:
        if self.lb is not None:
            self.lb.close()
        self.proxy.stop(signal.SIGTERM)
        self.upstream.stop()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        s.proxy.start()
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("point", ["between_consent_and_callback", "between_callback_and_token"])
def test_restart_mid_flow_finishes_the_flow_and_keeps_refresh_tokens(
    setup: Setup, sig: signal.Signals, point: str
) -> None:
    flow = Flow(setup.balancer(), setup.upstream)
    flow.register()

    # Tokens issued before the restart: one grant, its refresh token rotated once already.
    earlier = flow.token(flow.code())
    rotated = flow.refresh(earlier["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    earlier_refresh = rotated.json()["refresh_token"]
    earlier_access = rotated.json()["access_token"]

    upstream_url = flow.authorize_and_consent()
    if point == "between_consent_and_callback":
        setup.restart(sig)
    callback = flow.upstream_login(upstream_url)
    code = flow.callback(callback)
    if point == "between_callback_and_token":
        setup.restart(sig)
    tokens = flow.token(code)
    assert flow.bearer_status(tokens["access_token"]) == 404  # authenticated (no gateway)

    # What was issued before the restart still works after it.
    assert flow.bearer_status(earlier_access) == 404
    after = flow.refresh(earlier_refresh)
    assert after.status_code == 200, after.text
    assert after.json()["refresh_token"] != earlier_refresh

    # A rotation made just before a stop survives it: the successors refresh after a restart.
    latest = [after.json()["refresh_token"], tokens["refresh_token"]]
    setup.restart(sig)
    for refresh_token in latest:
        resp = flow.refresh(refresh_token)
        assert resp.status_code == 200, f"{resp.text}\n{setup.proxy.output()}"
        assert flow.bearer_status(resp.json()["access_token"]) == 404
    assert setup.proxy.starts == 3
