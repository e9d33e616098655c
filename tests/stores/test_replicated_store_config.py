"""The replicated Redis stores in ``proxy.toml`` (issue 19): ``redis+sentinel://`` and
``redis+cluster://`` URLs accepted with their options, refused with a problem of ``[store].url``
that never quotes the password, the password from ``[store] password_env`` put into a URL with
several hosts, the start summary without it; and, against a Sentinel set and a Cluster whose
servers require a password (``redis_topologies``, started here), the store opened from such a
configuration works, and one without the password gets 503-class errors, not a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oauthproxy_adapters.start_summary import store_durability
from oauthproxy_adapters.stores import StoreUnavailableError, open_store
from oauthproxy_adapters.stores.redis_ha_url import parse_redis_ha_url
from tests.adapters.test_cli_store import problem, settings
from tests.stores.redis_topologies import ClusterSet, SentinelSet

STORE_PASSWORD = "p@ss:w/rd %?#"
SENTINEL = "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/2?prefix=mcp:"
CLUSTER = "redis+cluster://c1:7000,c2:7001/0?prefix=mcp:"


def test_replicated_urls_are_accepted_with_their_options() -> None:
    for url in (SENTINEL, CLUSTER, SENTINEL + "&replicas=2&replica_timeout=1.5"):
        assert settings({"url": url}) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "name the monitored service"),
        ("redis+sentinel://:hunter2@s1/mymaster/0?replicas=x", "replicas='x' is not a number"),
        ("redis+cluster://:hunter2@c1:7000/3", "database 0 only"),
        ("redis+cluster://:hunter2@c1:7000/0?prefix={mcp}:", "may not contain { or }"),
        ("redis+cluster://:hunter2@c1:port/0", "the port of host 1 is not a number"),
    ],
)
def test_bad_replicated_urls_are_problems_of_the_url(url: str, why: str) -> None:
    message = problem({"url": url})
    assert message.startswith("[store].url: "), message
    assert why in message and "hunter2" not in message


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://admin:Zx9/kQ2sEcReT@h1:26379/mymaster/0",
        "redis+cluster://:Zx9kQ2sEc?ReT@h1:7000/0",
        "redis+cluster://:Zx9kQ2sEc#ReT@h1:7000/0",
        "redis+sentinel://h1:Zx9kQ2/mymaster/0",
        "redis+cluster://h1:7000,:Zx9kQ2sEc/0",
        "redis+sentinel://h1/mymaster/Zx9kQ2sEc",
        "redis+sentinel://h1/mymaster/0/Zx9kQ2sEc",
    ],
)
def test_no_problem_quotes_a_fragment_of_an_unencoded_password(url: str) -> None:
    """A password with an unencoded ``/``, ``?`` or ``#`` lands in the host, port or path part;
    the problem names what is wrong without quoting any of it (spec/security.md: no secret in
    messages)."""
    message = problem({"url": url})
    assert message.startswith("[store].url: "), message
    for fragment in ("Zx9", "kQ2", "sEc", "ReT"):
        assert fragment not in message, message


def test_password_env_goes_into_a_url_of_several_hosts() -> None:
    for url in (SENTINEL, CLUSTER):
        with_password = settings({"url": url, "password_env": "R"}, {"R": STORE_PASSWORD})
        parsed = parse_redis_ha_url(with_password)
        assert parsed.password == STORE_PASSWORD
        assert parsed.hosts == parse_redis_ha_url(url).hosts
        summary = store_durability(with_password)
        assert "p%40ss" not in summary and STORE_PASSWORD not in summary and ":***@" in summary
    assert "has a password already" in problem(
        {"url": "redis+cluster://:x@c1:7000/0", "password_env": "R"}, {"R": "y"}
    )


def test_the_summary_says_what_a_fail_over_keeps() -> None:
    assert "acknowledged by 1 replica(s)" in store_durability(SENTINEL)
    assert "may lose its last writes" in store_durability(CLUSTER)
    assert "acknowledged by 1 replica(s) of its shard" in store_durability(CLUSTER + "&replicas=1")


def _put_and_take(url: str) -> None:
    """A record written and taken back through a store opened from ``url``."""
    store = open_store(url)
    try:
        store.put("code", "k", b"v", 1, 60)
        assert store.take("code", "k") is not None
    finally:
        store.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SentinelSet, ClusterSet]]:
    sentinels = SentinelSet(tmp_path_factory.mktemp("guarded-sentinel"), password="pw-S3cret")
    cluster = ClusterSet(tmp_path_factory.mktemp("guarded-cluster"), password="pw-S3cret")
    try:
        yield sentinels.start(), cluster.start()
    finally:
        sentinels.stop()
        cluster.stop()


def test_a_store_from_password_env_reaches_servers_that_require_it(
    guarded: tuple[SentinelSet, ClusterSet], tmp_path: Path
) -> None:
    for topology in guarded:
        url = settings(
            {"url": topology.url("cfg:", password=False), "password_env": "R"}, {"R": "pw-S3cret"}
        )
        _put_and_take(url)


def test_a_store_without_the_password_is_unavailable_and_says_so_without_secrets(
    guarded: tuple[SentinelSet, ClusterSet],
) -> None:
    sentinels, cluster = guarded
    store = open_store(sentinels.url("cfg:", password=False))
    try:
        with pytest.raises(StoreUnavailableError) as failure:
            store.put("code", "k", b"v", 1, 60)
        assert "pw-S3cret" not in str(failure.value)
    finally:
        store.close()
    with pytest.raises(StoreUnavailableError) as opening:
        open_store(cluster.url("cfg:", password=False))
    assert "pw-S3cret" not in str(opening.value)


# -- sentinels that require the password too (sentinel_auth=yes) ------------------------------------


@pytest.fixture(scope="module")
def guarded_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    topology = SentinelSet(
        tmp_path_factory.mktemp("guarded-sentinels"), password="pw-S3cret", sentinel_auth=True
    )
    try:
        yield topology.start()
    finally:
        topology.stop()


def test_sentinels_that_require_the_password_are_reached_with_sentinel_auth(
    guarded_sentinels: SentinelSet,
) -> None:
    url = settings(
        {
            "url": guarded_sentinels.url("sa:", password=False, query="sentinel_auth=yes"),
            "password_env": "R",
        },
        {"R": "pw-S3cret"},
    )
    assert parse_redis_ha_url(url).sentinel_auth
    _put_and_take(url)


def test_without_sentinel_auth_such_sentinels_refuse_and_nothing_secret_is_said(
    guarded_sentinels: SentinelSet,
) -> None:
    store = open_store(guarded_sentinels.url("sa:"))  # the data nodes' password, not for sentinels
    try:
        with pytest.raises(StoreUnavailableError) as failure:
            store.put("code", "k", b"v", 1, 60)
        assert "pw-S3cret" not in str(failure.value)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://:hunter2@c1:7000/0?sentinel_auth=yes", "redis+sentinel:// only"),
        ("redis+sentinel://:hunter2@s1/mymaster/0?sentinel_auth=1", "use yes or no"),
    ],
)
def test_bad_sentinel_auth_is_a_problem_of_the_url(url: str, why: str) -> None:
    message = problem({"url": url})
    assert why in message and "hunter2" not in message
