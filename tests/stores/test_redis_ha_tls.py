"""``rediss+sentinel://`` and ``rediss+cluster://``: the replicated Redis stores over TLS.

Against a Sentinel set and a Cluster whose every process listens with TLS only (``redis_topologies``
with ``tls``: replication, the sentinels' links and the Cluster bus are TLS too) and requires a
password. The stores work through the sentinels and across the Cluster's slots, every write still
waits for its replica (``WAIT`` over TLS replication); a deployment whose CA the URL does not name
is refused with a 503-class error that quotes no password; and the URL's TLS options are parsed
and checked like the rest of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from oauthproxy_adapters.start_summary import store_durability
from oauthproxy_adapters.stores import StoreUnavailableError, open_async_store, open_store
from oauthproxy_adapters.stores.redis_ha_url import parse_redis_ha_url
from tests.adapters.test_cli_store import problem, settings
from tests.stores.redis_topologies import ClusterSet, SentinelSet, TlsFiles
from tests.tls_material import issue_server_cert, new_authority

PASSWORD = "ha-tls-password-" + "k" * 12


def _tls(root: Path) -> tuple[TlsFiles, Path]:
    """The deployment's TLS files, and the file of another CA (which vouches for none of it)."""
    ca = new_authority(root / "pki", "deployment-ca")
    cert = issue_server_cert(ca, root / "pki", "redis-nodes", client_auth=True)
    other = new_authority(root / "pki", "other-ca")
    return TlsFiles(ca.cert_file, cert.cert_file, cert.key_file), other.cert_file


T = TypeVar("T", SentinelSet, ClusterSet)


def _running(root: Path, kind: Callable[..., T]) -> Iterator[tuple[T, Path]]:
    """A TLS deployment of ``kind`` under ``root``, started, then stopped (every process by PID)."""
    files, other_ca = _tls(root)
    topology = kind(root, password=PASSWORD, tls=files)
    try:
        yield topology.start(), other_ca
    finally:
        topology.stop()


@pytest.fixture(scope="module")
def tls_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SentinelSet, Path]]:
    yield from _running(tmp_path_factory.mktemp("sentinel-tls"), SentinelSet)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterSet, Path]]:
    yield from _running(tmp_path_factory.mktemp("cluster-tls"), ClusterSet)


def _round_trips(url: str, keys: int = 8) -> None:
    store = open_store(url)
    try:
        for n in range(keys):
            key = f"record-{n}"
            assert store.compare_and_set("grant", key, 0, b"v1", 60)
            assert not store.compare_and_set("grant", key, 0, b"again", 60)
            assert store.compare_and_set("grant", key, 1, b"v2", 60)
            got = store.get("grant", key)
            assert got is not None and (got.value, got.version) == (b"v2", 2)
        store.put("code", "once", b"code", 1, 60)
        taken = store.take("code", "once")
        assert taken is not None and taken.value == b"code"
        assert store.take("code", "once") is None
    finally:
        store.close()


def _async_round_trip(url: str) -> None:
    async def run() -> None:
        store = open_async_store(url)
        try:
            assert await store.compare_and_set("grant", "async", 0, b"a", 60)
            got = await store.get("grant", "async")
            assert got is not None and got.value == b"a"
        finally:
            await store.close()

    asyncio.run(run())


def _refused(url: str) -> str:
    """The error of the first use of a store at ``url`` (or of opening it: a Cluster client reads
    the slot map at once), which must be a failed certificate check."""
    with pytest.raises(StoreUnavailableError) as caught:
        store = open_store(url)
        try:
            store.get("grant", "g")
        finally:
            store.close()
    message = str(caught.value)
    assert "certificate verify failed" in message.lower(), message
    return message


def test_sentinel_store_over_tls_waits_for_its_replica(
    tls_sentinel: tuple[SentinelSet, Path],
) -> None:
    topology, _other = tls_sentinel
    url = topology.url("tls-s:")
    assert url.startswith("rediss+sentinel://") and parse_redis_ha_url(url).replicas == 1
    _round_trips(url)  # every write waited for the replica (WAIT) over TLS replication
    _async_round_trip(url)
    with topology.primary().client() as raw:
        assert raw.exists("tls-s:grant:record-0")
    replica = next(s for s in topology.servers if s is not topology.primary())
    with replica.client() as raw:
        assert raw.get("tls-s:grant:record-0") is not None  # replicated, over TLS


def test_sentinel_deployment_behind_another_ca_is_refused(
    tls_sentinel: tuple[SentinelSet, Path],
) -> None:
    topology, other_ca = tls_sentinel
    url = topology.url("tls-s:").replace(
        topology.tls.query() if topology.tls else "", f"ssl_ca_certs={other_ca}"
    )
    message = _refused(url)
    assert PASSWORD not in message


def test_cluster_store_over_tls_spreads_over_its_slots(
    tls_cluster: tuple[ClusterSet, Path],
) -> None:
    topology, _other = tls_cluster
    url = topology.url("tls-c:")
    assert url.startswith("rediss+cluster://")
    _round_trips(url, keys=24)
    _async_round_trip(url)
    # The records landed on more than one primary: the client followed the slots over TLS.
    holders = set()
    for node in topology.nodes:
        with node.client() as raw:
            primary = raw.info("replication")["role"] == "master"
            if primary and next(raw.scan_iter(match="tls-c:*"), None) is not None:
                holders.add(node.port)
    assert len(holders) > 1


def test_cluster_behind_another_ca_is_refused(tls_cluster: tuple[ClusterSet, Path]) -> None:
    topology, other_ca = tls_cluster
    url = topology.url("tls-c:").replace(
        topology.tls.query() if topology.tls else "", f"ssl_ca_certs={other_ca}"
    )
    message = _refused(url)
    assert PASSWORD not in message


# -- the URL ----------------------------------------------------------------------------------------


def test_tls_forms_parse_with_their_files_and_show_their_scheme() -> None:
    parsed = parse_redis_ha_url(
        "rediss+sentinel://:pw@s1:26379,s2/mymaster/1?ssl_ca_certs=%2Fetc%2Fca.pem"
        "&ssl_certfile=/etc/client.crt&ssl_keyfile=/etc/client.key&prefix=x:"
    )
    assert (parsed.scheme, parsed.tls, parsed.db, parsed.service) == (
        "redis+sentinel",
        True,
        1,
        "mymaster",
    )
    assert parsed.ssl_options() == {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/etc/client.crt",
        "ssl_keyfile": "/etc/client.key",
    }
    assert repr(parsed).startswith("RedisHAURL(rediss+sentinel://s1:26379,s2:26379/mymaster/1")
    assert "pw" not in repr(parsed)
    plain = parse_redis_ha_url("redis+cluster://c1:7000/0")
    assert (plain.tls, plain.ssl_options()) == (False, {})
    assert parse_redis_ha_url("rediss+cluster://c1:7000/0").ssl_options() == {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (
            "redis+sentinel://:hunter2@s1/mymaster/0?ssl_ca_certs=/ca.pem",
            "ssl_ca_certs is a TLS option: use rediss+sentinel://",
        ),
        (
            "redis+cluster://:hunter2@c1:7000/0?ssl_certfile=/c.crt",
            "ssl_certfile is a TLS option: use rediss+cluster://",
        ),
        ("rediss+cluster://:hunter2@c1:7000/0?ssl_ca_certs=", "ssl_ca_certs must name one file"),
        ("rediss+cluster://:hunter2@c1:7000/0?ssl_check_hostname=false", "unknown option"),
    ],
)
def test_bad_tls_options_are_problems_of_the_url(url: str, why: str) -> None:
    message = problem({"url": url})
    assert message.startswith("[store].url: "), message
    assert why in message and "hunter2" not in message


def test_tls_urls_pass_the_configuration_and_the_summary_names_them() -> None:
    for url in (
        "rediss+sentinel://s1:26379/mymaster/0?ssl_ca_certs=/etc/ca.pem",
        "rediss+cluster://c1:7000,c2:7001/0?replicas=1",
    ):
        assert settings({"url": url}) == url
        assert "replica" in store_durability(url)


def test_every_tls_connection_asks_for_a_verified_certificate_and_name() -> None:
    """Whatever redis-py's defaults (before 6.0 it checked no host name), the options every TLS
    client is built with say it: the single store's pool, the sentinels' and the data nodes'
    connections, and every Cluster node's."""
    from oauthproxy_adapters.stores.redis_cluster import _options as cluster_options  # noqa: PLC0415
    from oauthproxy_adapters.stores.redis_sentinel import _options as sentinel_options  # noqa: PLC0415

    wanted = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    for opener in (open_store, open_async_store):
        store = opener("rediss://127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem")
        kwargs = store._redis.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        assert {k: kwargs.get(k) for k in wanted} == wanted
    parsed = parse_redis_ha_url("rediss+sentinel://s1/mymaster/0")
    for flavour in (False, True):
        for options in sentinel_options(parsed, 1.0, asyncio=flavour):
            assert {k: options.get(k) for k in wanted} == wanted
    options = cluster_options(parse_redis_ha_url("rediss+cluster://c1:7000/0"), 1.0)
    assert {k: options.get(k) for k in wanted} == wanted
    plain = open_store("redis://127.0.0.1:1/0")
    assert "ssl_check_hostname" not in plain._redis.connection_pool.connection_kwargs  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("ssl_cert_reqs=none", "always checked over TLS (no ssl_cert_reqs)"),
        ("ssl_check_hostname=false", "always checked over TLS (no ssl_check_hostname)"),
        ("password=hunter2", "not as a query option"),
        ("ssl_password=hunter2", "ssl_password) is not supported"),
    ],
)
def test_a_rediss_url_cannot_weaken_tls_or_hide_a_password_in_its_query(
    query: str, why: str
) -> None:
    url = f"rediss://127.0.0.1:6380/0?{query}"
    message = problem({"url": url})
    assert message.startswith("[store].url: ") and why in message, message
    assert "hunter2" not in message
    for opener in (open_store, open_async_store):
        with pytest.raises(ValueError, match="store URL") as caught:
            opener(url)
        assert why in str(caught.value) and "hunter2" not in str(caught.value)
