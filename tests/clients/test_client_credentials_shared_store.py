"""The client credentials grant on two instances sharing one store (RFC 7523 §3 item 7;
handlers/client_credentials.py): a ``private_key_jwt`` assertion accepted by one instance is refused
by the other, because the used ``jti`` is recorded in the store by compare-and-set, not in a
process; and both instances issue from, and revoke, the same client family.

Each store is real: one SQLite file opened by two connections, and a Redis server on 127.0.0.1
(``OAUTHPROXY_TEST_REDIS_URL``), under a prefix of its own.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.stores.base import StoreUnavailableError
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_core.handlers.bearer import Challenge, Principal
from tests.clients.machine_support import (
    CI_SECRET,
    basic,
    ci_bot,
    claims_of,
    error_of,
    harness,
    signed,
    with_assertion,
)
from tests.harness import Clock, Harness

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["sqlite", "redis"])
def two_instances(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Harness, Harness]]:
    """Two proxies (their own servers and random ids, one clock) over one shared store."""
    stores: list[Any]
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        stores = [SQLiteStore(path), SQLiteStore(path)]
    else:
        prefix = f"oauthproxy-test:{uuid.uuid4().hex}:"
        stores = [RedisStore(REDIS_URL, prefix=prefix), RedisStore(REDIS_URL, prefix=prefix)]
        try:
            stores[0].get("probe", "probe")
        except StoreUnavailableError as exc:
            pytest.fail(f"these tests need a Redis server at {REDIS_URL}: {exc}")
    clock = Clock(int(time.time()))
    first, _ = harness()
    second, _ = harness()
    for h, store, seed in ((first, stores[0], 1), (second, stores[1], 2)):
        h.store, h.clock = store, clock
        h.rng.seed(seed)
    try:
        yield first, second
    finally:
        if request.param == "redis":
            stores[0].clear()
        for store in stores:
            store.close()


def test_rfc7523_3_an_assertion_used_on_one_instance_is_refused_on_the_other(
    two_instances: tuple[Harness, Harness],
) -> None:
    a, b = two_instances
    client_assertion = signed(now=a.clock.now)
    accepted = with_assertion(a, client_assertion)
    assert accepted.status == 200, accepted.body
    replayed = with_assertion(b, client_assertion)
    assert replayed.status == 401 and error_of(replayed) == "invalid_client", replayed.body
    # A fresh assertion is fine on either instance.
    fresh = with_assertion(b, signed(now=b.clock.now))
    assert fresh.status == 200, fresh.body


def test_both_instances_issue_from_one_family_and_a_revocation_on_one_ends_it_on_both(
    two_instances: tuple[Harness, Harness],
) -> None:
    a, b = two_instances
    first = json.loads(ci_bot(a).body)["access_token"]
    second = json.loads(ci_bot(b).body)["access_token"]
    assert claims_of(first)["gid"] == claims_of(second)["gid"]
    assert isinstance(b.bearer(first), Principal) and isinstance(a.bearer(second), Principal)
    revoked = a.form("/revoke", {"token": second}, headers=basic("ci-bot", CI_SECRET))
    assert revoked.status == 200
    for h in (a, b):
        for token in (first, second):
            assert isinstance(h.bearer(token), Challenge)
    third = json.loads(ci_bot(b).body)["access_token"]
    assert claims_of(third)["gid"] != claims_of(first)["gid"]
    assert isinstance(a.bearer(third), Principal)
