"""An ID-JAG is redeemed once across instances sharing a Redis store (RFC 7523 §3,
spec/security.md 37): two proxies, one Redis, the same assertion at both, racing in threads.

The store's compare-and-set on the ``jti`` record (create-if-absent) decides; a per-process cache
could not, which is what this proves with the real shared store.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from oauthproxy_adapters.stores.redis import RedisStore
from tests.harness import Clock, Harness
from tests.other_issuers import FakeIssuer, basic, issuer_harness

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
T = TypeVar("T")


def at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run ``calls`` in threads released together by a barrier; their results, in finishing order."""
    answers: list[T] = []
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> None:
        barrier.wait()
        answers.append(call())

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def _race(proxies: list[Harness], assertion: str) -> list[int]:
    """Both proxies redeem ``assertion`` at once; the statuses they answered."""

    def redeem(proxy: Harness) -> int:
        resp = proxy.token({"grant_type": GRANT, "assertion": assertion}, headers=basic())
        if resp.status != 200:
            assert json.loads(resp.body)["error"] == "invalid_grant"
        return resp.status

    return at_once([lambda p=p: redeem(p) for p in proxies])


def test_invariant_37_one_id_jag_buys_one_token_across_instances_on_redis() -> None:
    idp = FakeIssuer()
    clock = Clock()
    prefix = f"oauthproxy-test-id-jag-{secrets.token_hex(8)}:"
    stores = [RedisStore(REDIS_URL, prefix=prefix) for _ in range(2)]
    try:
        try:
            stores[0].get("jti", "probe")
        except Exception as exc:
            pytest.fail(f"this test needs Redis at {REDIS_URL}: {exc}")
        proxies = [issuer_harness(idp, store=store) for store in stores]
        for proxy in proxies:
            proxy.clock = clock
        for round_ in range(5):
            assertion = idp.id_jag(clock.now, jti=f"race-{round_}")
            assert sorted(_race(proxies, assertion)) == [200, 400]
    finally:
        for store in stores:
            store.close()
