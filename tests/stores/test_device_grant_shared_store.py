"""The device grant across instances sharing a Redis store (RFC 8628 §3.5, spec/security.md 39): a
device started on one proxy is approved through another, the polling interval holds across them,
and two proxies polling an approved device code at once hand out one token."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_core.config import DeviceGrant
from tests.harness import Browser, Clock, Harness, make_config
from tests.rfc.device_support import (
    approve_and_sign_in,
    error_of,
    poll,
    register_device_client,
    start,
)
from tests.stores.test_id_jag_replay_redis import at_once

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _race(proxies: list[Harness], client: dict[str, str], device_code: str) -> list[int]:
    def redeem(proxy: Harness) -> int:
        resp = poll(proxy, client, device_code)
        if resp.status != 200:
            assert error_of(resp) in ("invalid_grant", "slow_down"), resp.body
        return resp.status

    return at_once([lambda p=p: redeem(p) for p in proxies])


def test_invariant_39_two_instances_on_redis_redeem_a_device_code_once() -> None:
    clock = Clock()
    prefix = f"oauthproxy-test-device-{secrets.token_hex(8)}:"
    stores = [RedisStore(REDIS_URL, prefix=prefix) for _ in range(2)]
    try:
        try:
            stores[0].get("device", "probe")
        except Exception as exc:
            pytest.fail(f"this test needs Redis at {REDIS_URL}: {exc}")
        config = make_config(device=DeviceGrant(enabled=True))
        a, b = (Harness(config, store=store, clock=clock, seed=i) for i, store in enumerate(stores))
        client = register_device_client(a)
        for _round in range(3):
            grant = json.loads(start(a, client).body)
            assert error_of(poll(a, client, grant["device_code"])) == "authorization_pending"
            # The interval is the record's: the other instance knows the last poll was just now.
            assert error_of(poll(b, client, grant["device_code"])) == "slow_down"
            assert approve_and_sign_in(b, Browser(), grant["user_code"]).status == 200
            assert sorted(_race([a, b], client, grant["device_code"])) == [200, 400]
            clock.advance(1)
    finally:
        for store in stores:
            store.close()
