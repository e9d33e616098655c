"""Regression: a refused request creates no rate counter (oauthproxy_core.bounds.take_slots).

Before, the per-address counter was incremented -- and so created -- before the total bound was
checked: once the total was reached, a flood from ever new addresses still added one ``bound``
record per request (IPv6 gives an attacker as many addresses as it likes), so the store grew without
limit although every request was refused. Found by ``benchmarks/loadtest.py``'s flood phase.
"""

from __future__ import annotations

import attrs

from oauthproxy_adapters.driver import run
from oauthproxy_core.bounds import Bounds
from tests.harness import VERIFIER, Harness, make_config
from tests.rfc.test_bounds import register_from

TIGHT = Bounds(
    registrations_per_address=3,
    registrations_total=5,
    authorizations_per_address=2,
    authorizations_per_client=4,
    authorizations_total=6,
)


def _bound_records(h: Harness) -> int:
    return sum(1 for kind, _key, _value in h.store.dump() if kind == "bound")


def test_refused_registrations_from_new_addresses_create_no_counters() -> None:
    h = Harness(make_config(bounds=TIGHT))
    # Five sources: IPv6 counts by /64 (spec/security.md 35), so each is a /64 of its own.
    assert [register_from(h, f"2001:db8:{i:x}::1").status for i in range(5)] == [201] * 5
    held = _bound_records(h)
    assert held == 5 + 1  # five sources and the total
    refused = [register_from(h, f"2001:db8:1:{i:x}::1").status for i in range(500)]
    assert set(refused) == {429}
    assert _bound_records(h) == held


def test_refused_authorizations_from_new_addresses_create_no_counters() -> None:
    h = Harness(make_config(bounds=TIGHT))
    client = h.register()

    def authorize_from(addr: str) -> str:
        req = attrs.evolve(
            h.make_request("GET", h.authorize_url(client, VERIFIER)), remote_addr=addr
        )
        resp = run(h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream)
        if resp.status == 503:  # the total, counted before the lookup: a page
            return "refused"
        assert resp.status == 302
        return "consent" if "/consent?" in resp.header("location") else "redirected"

    first = [authorize_from(f"2001:db8:{i:x}::1") for i in range(6)]
    assert first == ["consent"] * 6  # the total is 6; each source is counted per /64
    held = _bound_records(h)
    assert {authorize_from(f"2001:db8:2:{i:x}::1") for i in range(500)} == {"refused"}
    assert _bound_records(h) == held
    # The next window serves a new source again.
    h.clock.advance(h.config.lifetimes.transaction)
    assert authorize_from("2001:db8:3::9") == "consent"
