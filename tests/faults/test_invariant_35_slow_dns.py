"""spec/security.md 35, a host name as the single source: name servers that never answer, for document
hosts an attacker chose, must not stall other users' sign-ins.

The proxy runs as ``oauthproxy serve`` assembles it (``build_app``) under uvicorn on a loopback
socket, with a real provider on loopback reached by the name ``localhost``: the callback's token and
userinfo requests resolve that name through the event loop's default executor (httpx -> anyio ->
``loop.getaddrinfo``), as a real provider's name would. The safe fetcher's resolver is replaced by
one that blocks, until the test releases it, for every host under ``.slow.test`` (no packet leaves
the machine; other names resolve normally). Attackers then send authorization requests naming more
such documents than any default executor has threads, each from its own address.

Before, document lookups ran on that same default executor (``asyncio.to_thread``), so the
legitimate user's callback waited for a thread until the attacker's name servers answered. Now they
run on the fetcher's own pool of ``[limits] document_lookups_in_flight`` threads; a lookup that
finds them all busy fails at once with a clear 503 ``temporarily_unavailable`` page.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher, system_resolver
from oauthproxy_core.bounds import Bounds
from tests.adapters.live_servers import UvicornThread
from tests.faults.scripted_upstream import CLIENT_ID, CLIENT_SECRET, ScriptedUpstream
from tests.faults.stack import CLIENT_REDIRECT, Flow, pkce_pair

ATTACKERS = 48  # more than any event loop's default executor has threads (at most 32)
POOL = Bounds().document_lookups_in_flight
#: How long the legitimate flow may take while the attacker's lookups hang (it takes well under a
#: second on an idle machine; the margin is for a loaded CI machine).
DEADLINE = 15.0


class SlowNameServers:
    """A resolver that hangs for ``*.slow.test`` until released, and counts the hung lookups."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.hanging = 0
        self.most_hanging = 0

    def __call__(self, host: str, port: int) -> Sequence[str]:
        if not host.endswith(".slow.test"):
            return system_resolver(host, port)
        with self.lock:
            self.hanging += 1
            self.most_hanging = max(self.most_hanging, self.hanging)
        try:
            self.release.wait(60)
            raise OSError("the name server never answered")
        finally:
            with self.lock:
                self.hanging -= 1


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.dns = SlowNameServers()
        self.upstream = ScriptedUpstream()
        provider = "http://localhost:" + str(urlsplit(self.upstream.base).port)

        def build(base: str) -> Any:
            self.upstream.redirect_uri = base + "/auth/callback"
            settings = parse_settings(
                {
                    "server": {"base_url": base},
                    "upstream": {
                        "provider": "oauth2",
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "authorize_url": provider + "/login/oauth/authorize",
                        "token_url": provider + "/login/oauth/access_token",
                        "userinfo_url": provider + "/user",
                        "userinfo_subject_field": "id",
                        "allow_insecure_http": True,
                    },
                    "store": {"url": "memory://"},
                    "keys": {"file": str(tmp / "keys.json")},
                }
            )
            app, proxy, _cleanup = build_app(settings)
            assert isinstance(proxy.fetch, AsyncSafeFetcher)
            proxy.fetch.resolver = self.dns
            return app

        self.server = UvicornThread(build)
        self.base = self.server.base

    def close(self) -> None:
        self.dns.release.set()
        self.server.stop()
        self.upstream.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def attack(rig: Rig, i: int) -> tuple[int, float]:
    _verifier, challenge = pkce_pair()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": f"https://h{i}.slow.test/client.json",
            "redirect_uri": CLIENT_REDIRECT,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    started = time.monotonic()
    with httpx.Client(timeout=90, trust_env=False) as http:
        # uvicorn believes X-Forwarded-For from 127.0.0.1: one address per attacker.
        resp = http.get(
            f"{rig.base}/authorize?{query}", headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}
        )
    assert "location" not in resp.headers  # nothing validated: a page, never a redirect
    return resp.status_code, time.monotonic() - started


def test_invariant_35_slow_name_servers_for_document_hosts_do_not_stall_other_sign_ins(
    rig: Rig,
) -> None:
    with ThreadPoolExecutor(ATTACKERS) as pool:
        attacks = [pool.submit(attack, rig, i) for i in range(ATTACKERS)]
        deadline = time.monotonic() + 10
        while rig.dns.hanging < min(POOL, 4) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rig.dns.hanging > 0, "the attack never reached the resolver"

        # While the attacker's lookups hang, a user signs in: register, authorize, consent, the
        # provider, the callback (which resolves the provider's name), token, refresh.
        done = threading.Event()
        result: dict[str, Any] = {}

        def legitimate() -> None:
            flow = Flow(rig.base, headers={"X-Forwarded-For": "203.0.113.77"}, timeout=60)
            try:
                result["tokens"] = flow.complete()
            except BaseException as exc:  # reported below, in the test's thread
                result["error"] = exc
            finally:
                flow.close()
                done.set()

        user = threading.Thread(target=legitimate, daemon=True)
        started = time.monotonic()
        user.start()
        finished = done.wait(DEADLINE)
        elapsed = time.monotonic() - started
        still_hanging = rig.dns.hanging
        rig.dns.release.set()  # let the attacker's lookups end either way
        user.join(60)
        answers = [a.result() for a in attacks]

    assert finished, f"the sign-in stalled behind the attacker's lookups ({elapsed:.1f} s)"
    assert "error" not in result, result.get("error")
    assert result["tokens"]["token_type"] == "Bearer"
    assert still_hanging > 0  # the flow completed while the lookups still hung
    # The pool held at most its size; every other lookup was refused at once with a clear 503.
    assert rig.dns.most_hanging <= POOL
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {400, 503}, statuses  # 400: the fetch timed out; 503: pool busy
    assert statuses[503] >= ATTACKERS - POOL
    fast = [took for status, took in answers if status == 503]
    assert min(fast) < DEADLINE
