"""A Sentinel fail-over in the middle of a flow (issue 19): a primary, one replica and three
sentinels on loopback (``redis_topologies.SentinelSet``, its own per test); the primary is killed
(SIGKILL by PID) or paused (SIGSTOP) between two steps of a flow driven through the core
(``tests.harness.Harness``) on the ``redis+sentinel://`` store.

What must hold (spec/security.md 8 and 20):

* while no primary answers, a request gets a prompt 503 ``temporarily_unavailable`` with
  ``Retry-After``, never a hang or a 500;
* once the sentinels have promoted the replica, the flow continues where it stopped;
* a code is redeemed once and a refresh token rotated once in all, even when the primary took the
  code (or the refresh token) and died before its replica had the deletion: the store then
  answers 503 (the write did not reach a replica: ``WAIT``), so no token was minted from that
  take, and the one redemption happens on the promoted replica. The control test shows that the
  scenario is real: with ``replicas=0`` (no wait) the same steps redeem one code twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oauthproxy_adapters.stores.redis_sentinel import RedisSentinelStore
from tests.harness import Harness, Response
from tests.stores.redis_topologies import RedisProcess, SentinelSet, wait_until

VERIFIER = "v" * 43


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path)
    try:
        yield topology.start()
    finally:
        topology.stop()


#: The machine running the tests is shared and busy: a replica may take longer than the default
#: half second to acknowledge, and these tests are about where writes land, not how fast.
PATIENT = "replica_timeout=2"


def _harness(topology: SentinelSet, query: str = "") -> Harness:
    query = f"{query}&{PATIENT}" if query else PATIENT
    store = RedisSentinelStore(topology.url("failover:", query=query), socket_timeout=1.0)
    return Harness(store=store)


def _exchange(h: Harness, client: dict[str, Any], code: str) -> Response:
    return h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
            "resource": h.config.resource,
            "client_id": client["client_id"],
        }
    )


def _refresh(h: Harness, client: dict[str, Any], token: str) -> Response:
    return h.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": client["client_id"]}
    )


def _assert_unavailable(resp: Response) -> None:
    assert resp.status == 503, resp.body
    assert json.loads(resp.body)["error"] == "temporarily_unavailable"
    assert resp.header("retry-after") == "1"


def _fail_over(topology: SentinelSet, old: RedisProcess, replica_paused: bool) -> RedisProcess:
    """Kill the primary ``old`` (resuming a paused replica right after, so the sentinels can
    promote it) and wait until the sentinels name the replica and it takes writes."""
    old.kill()
    if replica_paused:
        next(s for s in topology.servers if s is not old).resume()
    # Every sentinel must know of the promotion before the old primary comes back: one that does
    # not would take the restarted (empty) process for the primary still.
    wait_until(
        lambda: topology.agreed_primary() not in (None, old.port), "the sentinels' fail-over"
    )
    new = topology.primary()
    wait_until(lambda: new.client().info("replication")["role"] == "master", "the promotion")
    return new


def _cut_replication(old: RedisProcess, replica: RedisProcess) -> None:
    """Leave the primary without its replica, which keeps its data: the replica is paused and the
    primary, told to give up on a silent replica after a second, drops it. (Pausing alone is not
    enough on loopback: the stream sent meanwhile waits in the paused replica's socket and is
    applied when it resumes.) What the primary writes from now on reaches no replica."""
    with old.client() as c:
        c.config_set("repl-timeout", 1)
    replica.pause()
    wait_until(
        lambda: old.client().info("replication")["connected_slaves"] == 0,
        "the primary to drop its paused replica",
    )


def _rejoin(topology: SentinelSet, old: RedisProcess) -> None:
    """Restart the killed primary as a replica of the new one, as its supervisor should: a node
    without persistence that came back as a primary would be empty, and a sentinel that still
    took it for the primary (seen here: one did, seconds after all had agreed) would make the
    new primary resynchronise from it and lose every record. Writes then find the replica they
    wait for again."""
    new = topology.agreed_primary()
    assert new is not None and new != old.port
    old.start(("--replicaof", "127.0.0.1", str(new)))
    topology.wait_ready()


def test_primary_killed_between_consent_and_token_gives_503_then_the_flow_completes(
    sentinels: SentinelSet,
) -> None:
    h = _harness(sentinels)
    client = h.register()
    code = h.full_code(client, VERIFIER)
    old = sentinels.primary()

    old.kill()
    started = time.monotonic()
    _assert_unavailable(_exchange(h, client, code))
    assert time.monotonic() - started < 5, "a dead primary must not hold a request"

    _fail_over(sentinels, old, replica_paused=False)
    # The promoted replica holds the code (its put waited for the replica), but has no replica of
    # its own until the old primary rejoins: a write then reaches no replica and is answered 503
    # (here a registration; a token request would spend the code on the primary and get a 503,
    # and the client would start again: never a second redemption).
    _assert_unavailable(
        h.request(
            "POST",
            "/register",
            headers=(("content-type", "application/json"),),
            body=json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"]}).encode(),
        )
    )
    _rejoin(sentinels, old)
    tokens = _exchange(h, client, code)
    assert tokens.status == 200, tokens.body
    refreshed = _refresh(h, client, json.loads(tokens.body)["refresh_token"])
    assert refreshed.status == 200, refreshed.body
    again = _exchange(h, client, code)  # (a replay, which also revokes the grant)
    assert again.status == 400 and json.loads(again.body)["error"] == "invalid_grant"


def _code_redeemed_across_a_failover(topology: SentinelSet, query: str) -> list[int]:
    """The replica paused, a token request, the primary killed, the replica promoted, the same
    token request twice more (and the old primary back): the statuses of the three requests."""
    h = _harness(topology, query)
    client = h.register()
    code = h.full_code(client, VERIFIER)
    old = topology.primary()
    replica = next(s for s in topology.servers if s is not old)

    _cut_replication(old, replica)
    statuses = [_exchange(h, client, code).status]
    new = _fail_over(topology, old, replica_paused=True)
    assert new is replica
    _rejoin(topology, old)
    statuses += [_exchange(h, client, code).status, _exchange(h, client, code).status]
    return statuses


def test_invariant_8_code_taken_by_a_primary_that_dies_is_redeemed_once(
    sentinels: SentinelSet,
) -> None:
    """spec/security.md 8: the first request took the code on the primary, whose replica never
    got the deletion; it answered 503 (``WAIT``: no replica had it), so no token was minted, and
    the code is redeemed once on the promoted replica."""
    assert _code_redeemed_across_a_failover(sentinels, "") == [503, 200, 400]


def test_control_without_waiting_for_replicas_the_code_is_redeemed_twice(
    sentinels: SentinelSet,
) -> None:
    """The same steps with ``replicas=0``: the first request is answered 200 from a take the
    promoted replica never saw, and the code is redeemed a second time. This is the failure the
    default ``replicas=1`` prevents, and shows the test above can fail."""
    assert _code_redeemed_across_a_failover(sentinels, "replicas=0") == [200, 200, 400]


def test_invariant_20_refresh_token_used_as_the_primary_dies_is_rotated_once(
    sentinels: SentinelSet,
) -> None:
    """spec/security.md 20: a refresh request whose rotation the replica never saw gets 503; after
    the fail-over the same refresh token is rotated once, and presenting it again (within the
    grace window) gives back that same rotation, not a second one."""
    h = _harness(sentinels)
    client = h.register()
    tokens = _exchange(h, client, h.full_code(client, VERIFIER))
    assert tokens.status == 200, tokens.body
    refresh_token = json.loads(tokens.body)["refresh_token"]
    old = sentinels.primary()
    replica = next(s for s in sentinels.servers if s is not old)

    _cut_replication(old, replica)
    _assert_unavailable(_refresh(h, client, refresh_token))
    _fail_over(sentinels, old, replica_paused=True)
    _rejoin(sentinels, old)
    rotated = _refresh(h, client, refresh_token)
    assert rotated.status == 200, rotated.body
    retried = _refresh(h, client, refresh_token)
    assert retried.status == 200, retried.body
    minted = {json.loads(r.body)["refresh_token"] for r in (rotated, retried)}
    assert len(minted) == 1 and refresh_token not in minted
    assert _refresh(h, client, minted.pop()).status == 200


def test_primary_paused_gives_503_then_the_promoted_replica_serves(sentinels: SentinelSet) -> None:
    """A primary that stops answering (SIGSTOP: a hung host, a long GC-like stall) costs timed
    out requests (503), not hung ones; after the fail-over new flows complete, and the old primary,
    resumed, is demoted by the sentinels rather than taking writes of its own."""
    h = _harness(sentinels)
    client = h.register()
    old = sentinels.primary()
    old.pause()
    started = time.monotonic()
    resp = h.request(
        "POST",
        "/register",
        headers=(("content-type", "application/json"),),
        body=json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"]}).encode(),
    )
    _assert_unavailable(resp)
    assert time.monotonic() - started < 5, "a silent primary must not hold a request"
    wait_until(lambda: sentinels.primary_address()[1] != old.port, "the sentinels' fail-over")
    old.resume()
    wait_until(
        lambda: old.client().info("replication")["role"] == "slave", "the old primary's demotion"
    )
    sentinels.wait_ready()

    def flow_completes() -> bool:
        fresh = h.register()
        return _exchange(h, fresh, h.full_code(fresh, VERIFIER)).status == 200

    # The first requests may still meet a pooled connection to the demoted primary (READONLY):
    # a 503 each, and the connection is dropped.
    wait_until(flow_completes, "a flow on the promoted replica", 20)
    code = h.full_code(client, VERIFIER)
    assert _exchange(h, client, code).status == 200
