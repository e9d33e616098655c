"""spec/security.md 28: the unauthenticated endpoints are bounded, past a bound the answer is a clear
4xx/429 (never a 5xx), nothing stored is lost, and each bound is enforced atomically in every store."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import attrs
import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_core import Request
from oauthproxy_core.bounds import Bounds
from tests.harness import VERIFIER, Harness, make_config, redirect_params
from tests.property.test_invariants_stateful import interleave

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

TIGHT = Bounds(
    registrations_per_address=3,
    registrations_total=5,
    authorizations_per_client=2,
    authorizations_total=3,
)


def register_from(h: Harness, addr: str) -> Any:
    req = Request(
        method="POST",
        path="/register",
        headers=(("content-type", "application/json"),),
        body=json.dumps(
            {"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}
        ).encode(),
        remote_addr=addr,
    )
    return run(h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream)


def test_invariant_28_registrations_per_address_answer_429_with_retry_after() -> None:
    h = Harness(make_config(bounds=TIGHT))
    ok = [register_from(h, "192.0.2.1") for _ in range(3)]
    assert [r.status for r in ok] == [201, 201, 201]
    refused = register_from(h, "192.0.2.1")
    assert refused.status == 429
    assert json.loads(refused.body)["error"] == "too_many_requests"
    assert 1 <= int(refused.header("retry-after")) <= 3600
    assert refused.header("cache-control") == "no-store"
    # Another address still registers; the refused one after the window.
    assert register_from(h, "192.0.2.2").status == 201
    h.clock.advance(3600)
    assert register_from(h, "192.0.2.1").status == 201
    # Nothing stored was lost: the first clients still authorize.
    client = json.loads(ok[0].body)
    resp = h.request("GET", h.authorize_url(client, VERIFIER))
    assert resp.status == 302


def test_invariant_28_total_registrations_are_bounded_across_addresses() -> None:
    h = Harness(make_config(bounds=TIGHT))
    statuses = [register_from(h, f"198.51.100.{i}").status for i in range(7)]
    assert statuses == [201] * 5 + [429, 429]


def authorize_from(h: Harness, client: dict[str, Any], addr: str) -> Any:
    req = attrs.evolve(h.make_request("GET", h.authorize_url(client, VERIFIER)), remote_addr=addr)
    return run(h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream)


def test_invariant_28_pending_authorizations_per_client_are_bounded() -> None:
    """Per client and source, and in total; the total counts every request, before the lookup."""
    h = Harness(make_config(bounds=attrs.evolve(TIGHT, authorizations_total=4)))
    a, b = h.register(), h.register()
    first = [authorize_from(h, a, "192.0.2.1") for _ in range(2)]
    assert all(r.status == 302 and "/consent?" in r.header("location") for r in first)
    third = authorize_from(h, a, "192.0.2.1")
    assert third.status == 302
    assert redirect_params(third)["error"] == "temporarily_unavailable"  # to the validated URI
    # The same client from another source has slots of its own...
    assert "/consent?" in authorize_from(h, a, "192.0.2.2").header("location")
    # ...until the total (4 requests) is reached: refused before the client is even looked up,
    # so with a page, never a redirect.
    full = authorize_from(h, b, "192.0.2.3")
    assert full.status == 503
    assert full.header("location") is None
    assert 1 <= int(full.header("retry-after")) <= 600
    # The pending transactions created before the bound still complete.
    code_page = h.request("GET", first[0].header("location").removeprefix(h.config.issuer))
    assert code_page.status == 200


def test_invariant_28_request_size_and_parameter_bounds() -> None:
    h = Harness()
    big = h.request(
        "POST",
        "/register",
        headers=(("content-type", "application/json"),),
        body=b"{" + b" " * 70_000 + b"}",
    )
    assert big.status == 413
    many = "&".join(f"p{i}=1" for i in range(100))
    assert h.request("GET", "/authorize?" + many).status == 400
    long_value = h.request("GET", "/authorize?" + urlencode({"client_id": "x" * 5000}))
    assert long_value.status == 400
    deep = h.request(
        "POST",
        "/register",
        headers=(("content-type", "application/json"),),
        body=b"[" * 40 + b"]" * 40,
    )
    assert deep.status == 400


def test_invariant_28_counters_hold_under_interleaved_registrations() -> None:
    """Atomicity without threads: eight registrations interleaved effect by effect, limit three."""
    h = Harness(make_config(bounds=TIGHT))
    reqs = [
        Request(
            method="POST",
            path="/register",
            headers=(("content-type", "application/json"),),
            body=b'{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none"}',
            remote_addr="203.0.113.9",
        )
        for _ in range(8)
    ]
    results = interleave(h, [h.server.handle(r, now=h.clock.now, random=h.random) for r in reqs])
    assert sorted(r.status for r in results) == [201] * 3 + [429] * 5


@pytest.fixture(params=["memory", "sqlite", "redis"])
def real_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(str(tmp_path / "bounds.db"))
        yield store
        store.close()
    else:
        store = RedisStore(REDIS_URL, prefix=f"oauthproxy-test-{secrets.token_hex(6)}:")
        yield store
        store.clear()
        store.close()


def test_invariant_28_bounds_are_atomic_in_every_store(real_store: Any) -> None:
    """Sixteen threads register from one address against a real store; exactly the limit succeed."""
    h = Harness(make_config(bounds=Bounds(registrations_per_address=4)), store=real_store)
    h.random = secrets.token_bytes  # type: ignore[method-assign]
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        status = register_from(h, "192.0.2.77").status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(201) == 4
    assert set(statuses) <= {201, 429, 503}
