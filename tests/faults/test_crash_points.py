"""SIGKILL at every store write of a flow, on the SQLite store, on PostgreSQL and on a Redis Cluster;
restart; retry or continue.

``crashpoint_serve.py`` runs the real ``oauthproxy serve`` and kills itself with SIGKILL just
after the N-th store write was acknowledged (before the response is sent). PostgreSQL is the tests'
server (``OAUTHPROXY_TEST_POSTGRES_URL``) under a fresh table prefix, dropped after; the Cluster is
three ``redis-server`` processes started for the test (``tests/stores/redis_topologies.py``). A
first run traces the writes of one complete flow (register, authorize, consent page, consent
approval, callback, token, a protected request, refresh) and the step each belongs to. Then, for
every write N (and once before the first write):

1. the proxy is started with the kill point and the flow runs until the connection drops; the
   process must have died of SIGKILL at that step;
2. the store (read from outside) breaks no crash-consistency rule (``StoreView.problems``): no code
   without its transaction, no grant whose code was not consumed, no upstream state on a
   transaction that moved on;
3. a plain ``oauthproxy serve`` is started on the same port and file; the client retries the step
   that failed, the way real clients do: the retry must succeed or get a clear 4xx (``invalid_grant``
   for a consumed code, the "unknown sign-in" page for a consumed callback state, ...), never a 5xx;
   after a clear error the client starts a new authorization (as MCP clients do on
   ``invalid_grant``) and the flow must complete, through the protected request and a refresh;
4. the store again breaks no rule.

A transaction left in ``code_issued`` without its ``code`` record (killed between the two writes of
the callback) is counted but allowed: nobody ever received that code, so nothing can reach it, and
the record expires with the transaction lifetime.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg
import pytest

from tests.faults.scripted_upstream import ScriptedUpstream
from tests.faults.stack import (
    Flow,
    FlowError,
    ServeProcess,
    StoreView,
    free_port,
    make_keys,
    write_config,
)
from tests.stores.redis_topologies import ClusterSet

WRAPPER = Path(__file__).with_name("crashpoint_serve.py")
STEPS = ("register", "authorize", "consent_page", "approve", "callback", "token", "use", "refresh")


class Run:
    """The intermediate values of one flow, advanced one named step at a time."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.consent_url = ""
        self.page: httpx.Response | None = None
        self.callback_url = ""
        self.code = ""
        self.tokens: dict[str, Any] = {}
        self.refreshed: dict[str, Any] = {}

    def step(self, name: str) -> httpx.Response | None:
        f = self.flow
        if name == "register":
            return Flow.expect(f.register(), 201, "register")
        if name == "authorize":
            resp = Flow.expect(f.authorize(), 302, "authorize")
            self.consent_url = resp.headers["location"]
            return resp
        if name == "consent_page":
            self.page = Flow.expect(f.consent_page(self.consent_url), 200, "consent page")
            return self.page
        if name == "approve":
            assert self.page is not None
            resp = Flow.expect(f.approve(self.page), 303, "approve")
            self.callback_url = f.upstream_login(resp.headers["location"])
            return resp
        if name == "callback":
            resp = Flow.expect(f.callback(self.callback_url), 302, "callback")
            params = Flow.redirect_params(resp)
            if "code" not in params:
                raise FlowError(f"callback: {params}")
            self.code = params["code"]
            return resp
        if name == "token":
            resp = Flow.expect(f.token(self.code), 200, "token")
            self.tokens = resp.json()
            return resp
        if name == "use":
            if f.bearer(self.tokens["access_token"]) != 404:
                raise FlowError("access token refused")
            return None
        if name == "refresh":
            resp = Flow.expect(f.refresh(self.tokens["refresh_token"]), 200, "refresh")
            self.refreshed = resp.json()
            if f.bearer(self.refreshed["access_token"]) != 404:
                raise FlowError("refreshed access token refused")
            return resp
        raise AssertionError(name)


@attrs.frozen
class Outcome:
    write: int
    when: str
    operation: str
    step: str
    retry: str  # what the retried step answered after the restart
    completed: bool
    orphans: int


POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)


class Rig:
    def __init__(self, tmp: Path, store: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "state.db"
        self.store = store
        self.topology: ClusterSet | None = None
        self.pg_prefix = f"crash_{secrets.token_hex(6)}_"
        if store == "sqlite":
            self.store_url = f"sqlite:///{self.db}"
        elif store == "postgres":
            self.store_url = f"{POSTGRES_URL}?prefix={self.pg_prefix}"
        else:
            self.topology = ClusterSet(tmp / "cluster").start()
            self.store_url = self.topology.url("crash:")
        self.upstream = ScriptedUpstream(self.base + "/auth/callback")
        self.config = write_config(
            tmp / "proxy.toml",
            port=self.port,
            base_url=self.base,
            upstream=self.upstream.base,
            store_url=self.store_url,
            keys_file=make_keys(tmp / "keys.json"),
            limits={"authorizations_per_address": 10_000, "registrations_per_address": 10_000},
        )
        self.crashing = ServeProcess(
            self.config,
            self.port,
            tmp,
            "crashing",
            command=[sys.executable, str(WRAPPER), str(self.config)],
        )
        self.plain = ServeProcess(self.config, self.port, tmp, "plain")

    def close(self) -> None:
        for p in (self.crashing, self.plain):
            if p.proc is not None and p.proc.poll() is None:
                p.stop(signal.SIGKILL)
        self.upstream.stop()
        if self.topology is not None:
            self.topology.stop()
        if self.store == "postgres":
            with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
                db.execute(
                    f'DROP TABLE IF EXISTS "{self.pg_prefix}records", '
                    f'"{self.pg_prefix}schema_version"'
                )

    def view(self) -> StoreView:
        """The store as read from outside the proxy."""
        if self.store == "sqlite":
            return StoreView(self.db)
        return StoreView(store_url=self.store_url)

    def trace(self) -> list[tuple[int, str, str, str]]:
        """``(n, operation, kind, step)`` of every write of one complete flow."""
        trace_file = self.tmp / "trace.txt"
        self.crashing.start({"CRASH_TRACE": str(trace_file)})
        run = Run(Flow(self.base))
        writes: list[tuple[int, str, str, str]] = []
        seen = 0
        try:
            for step in STEPS:
                run.step(step)
                lines = trace_file.read_text().splitlines() if trace_file.exists() else []
                for line in lines[seen:]:
                    n, op, kind = line.split()
                    writes.append((int(n), op, kind, step))
                seen = len(lines)
        finally:
            run.flow.close()
            self.crashing.stop(signal.SIGTERM)
        return writes

    def crash_and_recover(self, n: int, when: str, op: str, expected_step: str) -> Outcome:
        known_orphans = set(self.view().orphans())
        self.crashing.start({"CRASH_AT": str(n), "CRASH_WHEN": when})
        run = Run(Flow(self.base))
        try:
            failed = None
            for step in STEPS:
                try:
                    run.step(step)
                except httpx.TransportError:
                    failed = step
                    break
            assert failed == expected_step, f"write {n} {when}: died at {failed}"
            assert self.crashing.wait_exit() == -signal.SIGKILL
            view = self.view()
            assert view.problems() == [], f"write {n} {when}: {view.problems()}"

            self.plain.start()
            try:
                retry, completed = _recover(run, failed)
                after = self.view()
                assert after.problems() == [], f"write {n} {when}: {after.problems()}"
            finally:
                self.plain.stop(signal.SIGTERM)
            orphans = len(set(after.orphans()) - known_orphans)
            return Outcome(n, when, op, failed, retry, completed, orphans)
        finally:
            run.flow.close()


def _recover(run: Run, failed: str) -> tuple[str, bool]:
    """Retry ``failed``; on a clear 4xx start a new authorization; finish the flow."""
    index = STEPS.index(failed)
    try:
        resp = run.step(failed)
        retry = "ok" if resp is None else f"ok {resp.status_code}"
        rest = STEPS[index + 1 :]
    except FlowError as exc:
        message = str(exc)
        status = message.split(": ", 1)[1][:3] if ": " in message else "?"
        assert not status.startswith("5"), f"retry of {failed} after the restart: {message}"
        retry = f"{status} then a new authorization"
        rest = STEPS[1:] if run.flow.client else STEPS
    for step in rest:
        run.step(step)
    return retry, bool(run.refreshed)


@pytest.fixture(params=["sqlite", "postgres", "redis_cluster"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, request.param)
    try:
        yield r
    finally:
        r.close()


def test_sigkill_at_every_store_write_leaves_no_half_written_state(rig: Rig) -> None:
    writes = rig.trace()
    steps_with_writes = {step for _n, _op, _kind, step in writes}
    # Every step that changes state writes something; the protected request only reads.
    assert steps_with_writes >= {"register", "authorize", "approve", "callback", "token", "refresh"}
    # "After write N" leaves the store as "before write N+1" of the same request would, so the
    # distinct crash states of a request are "after each of its writes"; "before its first
    # write" is a stop between two requests (tests/e2e/test_restart.py) and is covered once here.
    points = [(n, "after", f"{op} {kind}", step) for n, op, kind, step in writes]
    first = writes[0]
    points.insert(0, (first[0], "before", f"{first[1]} {first[2]}", first[3]))
    outcomes = [rig.crash_and_recover(n, when, op, step) for n, when, op, step in points]
    assert all(o.completed for o in outcomes)
    _print_table(outcomes)


def _print_table(outcomes: list[Outcome]) -> None:
    width: Callable[[str], str] = lambda s: s.ljust(28)  # noqa: E731
    print("\nwrite | when   | step         | " + width("operation") + " | retry after restart")
    for o in sorted(outcomes, key=lambda o: (o.write, o.when != "before")):
        print(
            f"{o.write:5} | {o.when:6} | {o.step:12} | {width(o.operation)} | {o.retry}"
            + (f" ({o.orphans} unreachable code_issued)" if o.orphans else "")
        )
