"""Where the Cluster store puts records (issue 19): each record's slot is its own hash tag's, so
any keys of one record share a slot (a script or ``MULTI`` over them runs; over two records it
fails with ``CROSSSLOT``), braces in a key cannot choose its slot, and a prefix with braces is
refused. Against the session's Cluster of three primaries (``redis_topologies.ClusterSet``); slots
are the server's own (``CLUSTER KEYSLOT``). Also the parsing of both replicated-store URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from oauthproxy_adapters.stores import open_store
from oauthproxy_adapters.stores.redis_cluster import RedisClusterStore, hash_tag
from oauthproxy_adapters.stores.redis_ha_url import parse_redis_ha_url
from oauthproxy_adapters.stores.redis_sentinel import RedisSentinelStore
from tests.stores.redis_topologies import ClusterSet, SentinelSet

# Touches two keys: the record and one kept beside it (what an index or expiry key would be).
_TWO_KEYS = "redis.call('SET', KEYS[2], 'x', 'EX', 60); return redis.call('GET', KEYS[1])"


@pytest.fixture
def cluster(cluster_set: ClusterSet) -> Iterator[RedisClusterStore]:
    store = RedisClusterStore(cluster_set.url(f"slots-{uuid.uuid4().hex[:8]}:"))
    yield store
    store.clear()
    store.close()


def _raw_keys(store: RedisClusterStore) -> list[bytes]:
    return list(store._redis.scan_iter(match=store.prefix + "*"))


def test_a_record_lives_in_the_slot_of_its_own_hash_tag(
    cluster: RedisClusterStore, cluster_set: ClusterSet
) -> None:
    records = [("code", f"k{i}") for i in range(40)] + [("grant", "k1"), ("client", "")]
    for kind, key in records:
        cluster.put(kind, key, b"v", 1, 60)
    names = {name.decode() for name in _raw_keys(cluster)}
    assert len(names) == len(records)  # one key per record, no index or expiry keys
    for kind, key in records:
        name = f"{cluster.prefix}{hash_tag(kind, key)}{kind}:{key}"
        assert name in names
        assert cluster_set.keyslot(name) == cluster_set.keyslot(hash_tag(kind, key))
    slots = {cluster_set.keyslot(name) for name in names}
    assert len(slots) > len(records) // 2  # spread, not piled up


def test_braces_in_a_key_do_not_choose_its_slot(
    cluster: RedisClusterStore, cluster_set: ClusterSet
) -> None:
    """A client-chosen key (a ``client_id`` that is a URL, say) may hold ``{x}``: without the
    store's own tag first, Redis would hash only ``x``, and every such record would share one
    slot, one primary."""
    keys = [f"https://evil.example/{i}/{{x}}" for i in range(30)]
    for key in keys:
        cluster.put("client", key, b"v", 1, 60)
        assert cluster.get("client", key) is not None
    slots = {cluster_set.keyslot(name) for name in _raw_keys(cluster)}
    assert cluster_set.keyslot(f"oauthproxy:client:{keys[0]}") == cluster_set.keyslot("x")
    assert len(slots) > 15


def test_keys_of_one_record_share_a_slot_and_two_records_do_not(
    cluster: RedisClusterStore, cluster_set: ClusterSet
) -> None:
    """A script over the record's key and a key beside it (same tag) runs on the record's
    primary; the same script over two records' keys is refused with ``CROSSSLOT`` by that
    primary. So a compare-and-set or take over several keys of one record stays atomic on one
    node, and the tag is what makes it possible."""
    cluster.put("code", "a", b"va", 1, 60)
    cluster.put("code", "b", b"vb", 1, 60)
    record_a = cluster._k("code", "a")
    beside_a = f"{cluster.prefix}{hash_tag('code', 'a')}index:code:a"
    record_b = cluster._k("code", "b")
    node = cluster._redis.get_node_from_key(record_a)
    direct = cluster._redis.get_redis_connection(node)

    assert direct.eval(_TWO_KEYS, 2, record_a, beside_a)[8:] == b"va"
    # CROSSSLOT (redis-py keeps the message, not the code)
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        direct.eval(_TWO_KEYS, 2, record_a, record_b)
    assert cluster_set.keyslot(record_a) != cluster_set.keyslot(record_b)


def test_cluster_url_options() -> None:
    parsed = parse_redis_ha_url("redis+cluster://:p%40ss@a:7000,b,[::1]:7002/0?prefix=team:")
    assert parsed.hosts == (("a", 7000), ("b", 6379), ("::1", 7002))
    assert parsed.password == "p@ss" and parsed.prefix == "team:" and parsed.replicas == 0
    assert parse_redis_ha_url("redis+cluster://a/0?replicas=1&replica_timeout=2").replicas == 1
    assert "p@ss" not in repr(parsed)
    for bad in (
        "redis+cluster://a:7000/1",  # a Cluster has database 0 only
        "redis+cluster://a:7000/0?prefix={team}:",  # would put every key in one slot
        "redis+cluster://a:7000/0?replicas=-1",
        "redis+cluster://a:x/0",
        "redis+cluster:///0",
    ):
        with pytest.raises(ValueError):
            parse_redis_ha_url(bad)


def test_sentinel_url_options() -> None:
    parsed = parse_redis_ha_url(
        "redis+sentinel://u:pw@s1,s2:26380/mymaster/3?replicas=2&replica_timeout=0.25"
    )
    assert parsed.hosts == (("s1", 26379), ("s2", 26380))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == (
        "mymaster",
        3,
        "u",
        "pw",
    )
    assert (parsed.replicas, parsed.replica_timeout) == (2, 0.25)
    assert parse_redis_ha_url("redis+sentinel://s1/mymaster").replicas == 1
    for bad in (
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1/mymaster/0/1",
        "redis+sentinel://s1/mymaster/0?replicas=-1",
        "redis+sentinel://s1/mymaster/0?replica_timeout=0",
        "redis+sentinel://s1/mymaster/0?unknown=1",
    ):
        with pytest.raises(ValueError):
            parse_redis_ha_url(bad)


def test_open_store_opens_both(cluster_set: ClusterSet, sentinel_set: SentinelSet) -> None:
    for url, cls in (
        (cluster_set.url("open:"), RedisClusterStore),
        (sentinel_set.url("open:"), RedisSentinelStore),
    ):
        store = open_store(url)
        try:
            assert type(store) is cls
            store.put("code", "k", b"v", 1, 60)
            assert store.take("code", "k") is not None
        finally:
            store.close()
