"""Abuse: floods of registrations and authorization requests, from one address and from many,
against the real ``oauthproxy serve`` process (uvicorn, a SQLite file) with small ``[limits]``.

How the proxy knows the client's address: ``Request.remote_addr`` is the TCP peer, except that
``oauthproxy serve`` lets uvicorn replace it with the ``X-Forwarded-For`` client when the peer is
listed in ``[server] forwarded_allow_ips`` (default: uvicorn's, 127.0.0.1 and ::1; ``[]`` trusts
nobody).
Here every request comes from 127.0.0.1, so "many addresses" are spoofed through X-Forwarded-For
where the configuration trusts it, and the same header is shown to change nothing where it does not.

Each flood is bounded: past a bound the answer is 429 with ``Retry-After`` (a
``temporarily_unavailable`` redirect at ``/authorize``), never a 5xx; the number of client and
transaction records in the store stays within the configured bounds; and a legitimate flow from
another address completes while the flood goes on. (How much slower it is during a flood is measured
by ``benchmarks/loadtest.py``, not asserted here.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from tests.faults.scripted_upstream import ScriptedUpstream
from tests.faults.stack import (
    CLIENT_REDIRECT,
    Flow,
    ServeProcess,
    StoreView,
    free_port,
    make_keys,
    pkce_pair,
    write_config,
)

LIMITS = {
    "registration_window": 600,  # the authorization window is the transaction lifetime, 600 s
    "registrations_per_address": 5,
    "registrations_total": 40,
    "authorizations_per_address": 8,
    "authorizations_per_client": 12,
    "authorizations_total": 60,
}
FLOOD = 240
WORKERS = 8
LEGIT = {"X-Forwarded-For": "203.0.113.77"}


class FloodRig:
    def __init__(self, tmp: Path, forwarded_allow_ips: list[str] | None) -> None:
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
            limits=LIMITS,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        self.proxy = ServeProcess(config, port, tmp).start()
        self.http = httpx.Client(timeout=30.0, trust_env=False, follow_redirects=False)

    def close(self) -> None:
        self.http.close()
        self.proxy.stop(signal.SIGTERM)
        self.upstream.stop()

    def register(self, headers: dict[str, str]) -> httpx.Response:
        body = {"redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none"}
        return self.http.post(self.base + "/register", json=body, headers=headers)

    def authorize(self, client_id: str, headers: dict[str, str]) -> httpx.Response:
        _verifier, challenge = pkce_pair()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": CLIENT_REDIRECT,
                "state": "flood",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": self.base + "/mcp",
            }
        )
        return self.http.get(f"{self.base}/authorize?{query}", headers=headers)

    def flood(self, send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(send, range(FLOOD)))


def _away_from_a_window_edge(margin: float = 30.0) -> None:
    """Counters live in fixed 600 s windows: start no test just before one ends (the counts below
    are exact, and a window change in the middle of a flood would reset them)."""
    into = time.time() % 600
    if into > 600 - margin:
        time.sleep(600 - into + 0.5)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[FloodRig]:
    _away_from_a_window_edge()
    r = FloodRig(tmp_path, forwarded_allow_ips=None)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def untrusting_rig(tmp_path: Path) -> Iterator[FloodRig]:
    _away_from_a_window_edge()
    r = FloodRig(tmp_path, forwarded_allow_ips=[])
    try:
        yield r
    finally:
        r.close()


def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def _check_429(responses: list[httpx.Response]) -> None:
    for r in responses:
        assert r.status_code < 500, (r.status_code, r.text[:200])
        if r.status_code == 429:
            assert r.json()["error"] == "too_many_requests"
            assert int(r.headers["retry-after"]) >= 1


def _authorize_outcome(resp: httpx.Response) -> str:
    """``consent`` (a transaction was created), the error sent to the client's redirect URI, or the
    error of the page shown when a bound refused the request before the client was looked up
    (``too_many_requests``: the source's bound, ``temporarily_unavailable``: the total)."""
    if resp.status_code in (429, 503):
        assert "location" not in resp.headers
        assert int(resp.headers["retry-after"]) >= 1
        return "too_many_requests" if resp.status_code == 429 else "temporarily_unavailable"
    assert resp.status_code == 302, (resp.status_code, resp.text[:200])
    location = resp.headers["location"]
    if "/consent?" in location:
        return "consent"
    return dict(parse_qsl(urlsplit(location).query))["error"]


def _legit_flow_during(rig: FloodRig, flood: Callable[[], Any], *, register: bool = True) -> Any:
    """Run ``flood`` in a thread and a complete legitimate flow (from 203.0.113.77) meanwhile."""
    flow = Flow(rig.base, headers=LEGIT)
    if not register:
        Flow.expect(flow.register(), 201, "legitimate registration")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("flood", flood()))
    thread.start()
    try:
        flow.complete()
    finally:
        thread.join(120)
        flow.close()
    assert not thread.is_alive()
    return result["flood"]


def test_registration_flood_from_one_address(rig: FloodRig) -> None:
    flooded = _legit_flow_during(rig, lambda: rig.flood(lambda _i: rig.register({})))
    _check_429(flooded)
    assert _statuses(flooded) == {201: 5, 429: FLOOD - 5}
    view = StoreView(rig.db)
    assert view.count("client") == 5 + 1  # the flood's five and the legitimate client
    assert view.problems() == []


def test_registration_flood_from_many_addresses_hits_the_total_bound(rig: FloodRig) -> None:
    def send(i: int) -> httpx.Response:
        return rig.register({"X-Forwarded-For": f"198.51.{i // 250}.{i % 250 + 1}"})

    flooded = _legit_flow_during(rig, lambda: rig.flood(send), register=False)
    _check_429(flooded)
    counts = _statuses(flooded)
    assert counts[201] == LIMITS["registrations_total"] - 1  # the legitimate client took one
    assert counts[429] == FLOOD - counts[201]
    view = StoreView(rig.db)
    assert view.count("client") == LIMITS["registrations_total"]
    # One counter per accepted address, the total, and the legitimate flow's three authorization
    # counters: the refused addresses left nothing (test_bound_records.py).
    assert view.count("bound") == LIMITS["registrations_total"] + 1 + 3


def test_forwarded_for_is_ignored_unless_trusted(untrusting_rig: FloodRig) -> None:
    rig = untrusting_rig

    def send(i: int) -> httpx.Response:
        return rig.register({"X-Forwarded-For": f"198.51.100.{i % 250 + 1}"})

    flooded = rig.flood(send)
    _check_429(flooded)
    # Every request is counted against the real peer, 127.0.0.1.
    assert _statuses(flooded) == {201: 5, 429: FLOOD - 5}


def test_authorization_flood_from_one_address_spares_the_shared_client(rig: FloodRig) -> None:
    """One address hammers the legitimate user's client id: the per-address bound stops it (before
    the client is even looked up), and the client's pending slots are counted per source, so the
    user still signs in."""
    victim = Flow(rig.base, headers=LEGIT)
    Flow.expect(victim.register(), 201, "victim registration")
    client_id = victim.client["client_id"]

    flooded = rig.flood(lambda _i: rig.authorize(client_id, {}))
    outcomes = Counter(_authorize_outcome(r) for r in flooded)
    assert outcomes == {
        "consent": LIMITS["authorizations_per_address"],
        "too_many_requests": FLOOD - LIMITS["authorizations_per_address"],
    }
    victim.complete()
    view = StoreView(rig.db)
    assert view.count("tx") == LIMITS["authorizations_per_address"] + 1
    assert view.problems() == []
    victim.close()


def test_authorization_flood_from_many_addresses_is_bounded_in_total(rig: FloodRig) -> None:
    """Many addresses, many clients: pending transactions never exceed the total bound. A user who
    signed in before keeps using and refreshing tokens during the flood; a new sign-in is refused
    with a clear ``temporarily_unavailable`` page until the window ends (the total bound is shared:
    many sources together may use it up, no single one can)."""
    legit = Flow(rig.base, headers=LEGIT)
    tokens = legit.complete()
    attackers = []
    for i in range(LIMITS["registrations_total"] - 1):
        resp = rig.register({"X-Forwarded-For": f"192.0.2.{i + 1}"})
        assert resp.status_code == 201
        attackers.append(resp.json()["client_id"])

    def send(i: int) -> httpx.Response:
        client = attackers[i % len(attackers)]
        return rig.authorize(client, {"X-Forwarded-For": f"198.18.{i // 200}.{i % 200 + 1}"})

    def flood() -> list[httpx.Response]:
        return rig.flood(send)

    result: dict[str, list[httpx.Response]] = {}
    thread = threading.Thread(target=lambda: result.setdefault("flood", flood()))
    thread.start()
    try:
        assert legit.bearer(tokens["access_token"]) == 404
        refreshed = Flow.expect(legit.refresh(tokens["refresh_token"]), 200, "refresh").json()
    finally:
        thread.join(120)
    assert legit.bearer(refreshed["access_token"]) == 404
    outcomes = Counter(_authorize_outcome(r) for r in result["flood"])
    # The legitimate flow's own authorization took one slot of the total.
    allowed = LIMITS["authorizations_total"] - 1
    assert outcomes == {"consent": allowed, "temporarily_unavailable": FLOOD - allowed}
    refused = legit.authorize()
    assert _authorize_outcome(refused) == "temporarily_unavailable"
    view = StoreView(rig.db)
    assert view.count("tx") == LIMITS["authorizations_total"]
    assert view.count("client") == LIMITS["registrations_total"]
    # Counters: registrations (one per accepted address and the total), authorizations (one per
    # accepted address, one per accepted (client, address), and the total); none for the refused
    # requests.
    assert view.count("bound") <= 2 * LIMITS["registrations_total"] + 2 * allowed + 4
    assert view.problems() == []
    legit.close()
