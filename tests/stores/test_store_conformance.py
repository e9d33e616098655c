"""One conformance suite for every record store (spec/architecture.md, "Storage contract").

The contract tests run against the memory store, SQLite (a real file), Redis (the real server at
``OAUTHPROXY_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``, under a random key prefix per
test), Redis behind Sentinel (a primary, a replica and three sentinels) and a Redis Cluster (three
primaries), both started by the session on free loopback ports (``redis_topologies``), under a
random key prefix per test, and PostgreSQL (the real server at ``OAUTHPROXY_TEST_POSTGRES_URL``, default the
``oauthproxy_test`` database on 127.0.0.1:5432 that ``sh .ci/dev test`` creates, with tables under a
random prefix per test, dropped after it). A server being unreachable is a test *failure*, never a
skip: a shared-store deployment must not pass CI untested. Backend-specific sections follow (SQLite
durability and schema, memory bounds, Redis outages, PostgreSQL schema and purge).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import store_race_workers

from oauthproxy_adapters import stores
from oauthproxy_adapters.stores import (
    AsyncScanningStore,
    AsyncSizedStore,
    AsyncStore,
    ScanningStore,
    SizedStore,
    StoreFullError,
    StoreUnavailableError,
    SyncStore,
    open_async_store,
    open_store,
)
from oauthproxy_adapters.stores import postgres as postgres_module
from oauthproxy_adapters.stores import sqlite as sqlite_module
from oauthproxy_adapters.stores.memory import PURGE_BATCH, AsyncMemoryStore, MemoryStore
from oauthproxy_adapters.stores.postgres import AsyncPostgresStore, PostgresStore
from oauthproxy_adapters.stores.redis import SCAN_COUNT, AsyncRedisStore, RedisStore
from oauthproxy_adapters.stores.redis_cluster import AsyncRedisClusterStore, RedisClusterStore
from oauthproxy_adapters.stores.redis_sentinel import AsyncRedisSentinelStore, RedisSentinelStore
from oauthproxy_adapters.stores.sqlite import (
    SCAN_BATCH,
    AsyncSQLiteStore,
    SQLiteStore,
    default_sqlite_path,
)
from oauthproxy_core.effects import Stored
from tests.stores.redis_topologies import ClusterSet, SentinelSet

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
THREADS = 16
THREAD_ROUNDS = 10
PROCESSES = 4
PROCESS_ROUNDS = 5
TASKS = 16


class FakeClock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _redis_prefix() -> str:
    return f"oauthproxy-test:{uuid.uuid4().hex}:"


def _require_redis(store: RedisStore) -> None:
    try:
        store.get("probe", "probe")
    except StoreUnavailableError as exc:
        pytest.fail(f"these tests need a Redis server at {REDIS_URL} and could not reach it: {exc}")


@pytest.fixture
def redis_store() -> Iterator[RedisStore]:
    store = RedisStore(REDIS_URL, prefix=_redis_prefix())
    _require_redis(store)
    yield store
    store.clear()
    store.close()


#: Sentinel writes wait for the replica: on the shared, busy machine of the tests it may take
#: longer than the default half second, and these tests are about semantics, not speed.
PATIENT = "replica_timeout=2"


def owner_url(request: pytest.FixtureRequest, backend: str, prefix: str) -> str:
    """The URL of the replicated store ``backend`` (``sentinel``, ``cluster``) under ``prefix``."""
    query = PATIENT if backend == "sentinel" else ""
    return str(request.getfixturevalue(f"{backend}_set").url(prefix, query=query))


@pytest.fixture
def sentinel_store(sentinel_set: SentinelSet) -> Iterator[RedisSentinelStore]:
    store = RedisSentinelStore(sentinel_set.url(_redis_prefix(), query=PATIENT))
    yield store
    store.clear()
    store.close()


@pytest.fixture
def cluster_store(cluster_set: ClusterSet) -> Iterator[RedisClusterStore]:
    store = RedisClusterStore(cluster_set.url(_redis_prefix()))
    yield store
    store.clear()
    store.close()


def _postgres_prefix() -> str:
    return f"t{uuid.uuid4().hex[:16]}_"


def open_postgres(prefix: str | None = None, **kwargs: Any) -> PostgresStore:
    """A PostgresStore on the tests' database, under ``prefix`` (default: a fresh one). The tests
    commit without waiting for the disk (``synchronous_commit=off``): the statements, and so the
    semantics under test, are the same, and a thousand writes take a second instead of ten."""
    kwargs.setdefault("synchronous_commit", "off")
    try:
        return PostgresStore(POSTGRES_URL, prefix=prefix or _postgres_prefix(), **kwargs)
    except StoreUnavailableError as exc:
        pytest.fail(
            f"these tests need PostgreSQL at {POSTGRES_URL} (sh .ci/dev test creates the "
            f"database, or set OAUTHPROXY_TEST_POSTGRES_URL) and could not reach it: {exc}"
        )


@pytest.fixture
def postgres_store() -> Iterator[PostgresStore]:
    store = open_postgres()
    yield store
    store.drop_tables()
    store.close()


REPLICATED = ["sentinel", "cluster"]


@pytest.fixture(params=["memory", "sqlite", "redis", *REPLICATED, "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store under test, empty."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "state.db"))
        yield s
        s.close()
    else:
        yield request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, FakeClock]]:
    """A store driven by a fake clock (Redis keeps its own time: see test_redis_ttl_expires; the
    PostgreSQL store's own is the server's: test_postgres_server_clock_expires)."""
    clock = FakeClock()
    if request.param == "memory":
        yield MemoryStore(clock=clock), clock
    elif request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "state.db"), clock=clock)
        yield s, clock
        s.close()
    else:
        pg = open_postgres(clock=clock)
        yield pg, clock
        pg.drop_tables()
        pg.close()


@pytest.fixture(params=["memory", "sqlite", "redis", *REPLICATED, "postgres"])
def async_store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Any]]:
    """Builds the async store inside the test's event loop (redis.asyncio pools are loop-bound)."""
    if request.param == "memory":
        yield AsyncMemoryStore
    elif request.param == "sqlite":
        yield lambda: AsyncSQLiteStore(str(tmp_path / "state.db"))
    elif request.param == "redis":
        prefix = _redis_prefix()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        _require_redis(cleaner)
        yield lambda: AsyncRedisStore(REDIS_URL, prefix=prefix)
        cleaner.clear()
        cleaner.close()
    elif request.param in REPLICATED:
        owner = request.getfixturevalue(f"{request.param}_store")
        url = owner_url(request, request.param, owner.prefix)
        if request.param == "sentinel":
            yield lambda: AsyncRedisSentinelStore(url)
        else:
            yield lambda: AsyncRedisClusterStore(url)
    else:
        owner = open_postgres()
        yield lambda: AsyncPostgresStore(
            POSTGRES_URL, prefix=owner.prefix, synchronous_commit="off"
        )
        owner.drop_tables()
        owner.close()


def run_async(factory: Callable[[], Any], body: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        s = factory()
        try:
            await body(s)
        finally:
            await s.close()

    asyncio.run(main())


# -- the contract, on every store --------------------------------------------------------------------


def test_implements_protocol(store: Any) -> None:
    assert isinstance(store, SyncStore)


def test_get_absent_is_none(store: Any) -> None:
    assert store.get("code", "nope") is None
    assert store.take("code", "nope") is None


def test_put_get_round_trip(store: Any) -> None:
    value = bytes(range(256)) + b"\x00tail"
    store.put("code", "k1", value, 1, 60)
    assert store.get("code", "k1") == Stored(value=value, version=1)
    # A read does not consume.
    assert store.get("code", "k1") == Stored(value=value, version=1)


def test_empty_value_and_odd_keys(store: Any) -> None:
    store.put("client", "", b"", 3, 60)
    store.put("client", "a:b:c/ü* ?[x]", b"v", 4, 60)
    assert store.get("client", "") == Stored(value=b"", version=3)
    assert store.get("client", "a:b:c/ü* ?[x]") == Stored(value=b"v", version=4)


def test_put_replaces_value_and_version(store: Any) -> None:
    store.put("session", "k", b"one", 1, 60)
    store.put("session", "k", b"two", 7, 60)
    assert store.get("session", "k") == Stored(value=b"two", version=7)


def test_kinds_are_separate(store: Any) -> None:
    store.put("code", "same", b"c", 1, 60)
    store.put("token", "same", b"t", 2, 60)
    assert store.get("code", "same") == Stored(value=b"c", version=1)
    assert store.get("token", "same") == Stored(value=b"t", version=2)
    store.delete("code", "same")
    assert store.get("code", "same") is None
    assert store.get("token", "same") == Stored(value=b"t", version=2)


def test_delete(store: Any) -> None:
    store.put("code", "k", b"v", 1, 60)
    store.delete("code", "k")
    assert store.get("code", "k") is None
    store.delete("code", "k")  # absent: not an error
    store.delete("code", "never-existed")


def test_take_returns_once(store: Any) -> None:
    store.put("code", "k", b"v", 5, 60)
    assert store.take("code", "k") == Stored(value=b"v", version=5)
    assert store.take("code", "k") is None
    assert store.get("code", "k") is None


def test_cas_success_bumps_version(store: Any) -> None:
    store.put("txn", "k", b"v1", 1, 60)
    assert store.compare_and_set("txn", "k", 1, b"v2", 60) is True
    assert store.get("txn", "k") == Stored(value=b"v2", version=2)
    assert store.compare_and_set("txn", "k", 2, b"v3", 60) is True
    assert store.get("txn", "k") == Stored(value=b"v3", version=3)


def test_cas_wrong_version_fails_and_changes_nothing(store: Any) -> None:
    store.put("txn", "k", b"v", 4, 60)
    assert store.compare_and_set("txn", "k", 3, b"x", 60) is False
    assert store.compare_and_set("txn", "k", 5, b"x", 60) is False
    assert store.compare_and_set("txn", "k", 0, b"x", 60) is False  # present: not "absent"
    assert store.get("txn", "k") == Stored(value=b"v", version=4)


def test_cas_on_absent_record_fails(store: Any) -> None:
    assert store.compare_and_set("txn", "k", 1, b"x", 60) is False
    assert store.get("txn", "k") is None


def test_cas_zero_inserts_only_if_absent(store: Any) -> None:
    assert store.compare_and_set("reg", "k", 0, b"first", 60) is True
    assert store.get("reg", "k") == Stored(value=b"first", version=1)
    assert store.compare_and_set("reg", "k", 0, b"second", 60) is False
    assert store.get("reg", "k") == Stored(value=b"first", version=1)
    store.delete("reg", "k")
    assert store.compare_and_set("reg", "k", 0, b"third", 60) is True
    assert store.get("reg", "k") == Stored(value=b"third", version=1)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.put("code", "k", b"v", 1, 0),
        lambda s: s.put("code", "k", b"v", 1, -5),
        lambda s: s.put("code", "k", b"v", 1, 1.5),
        lambda s: s.put("code", "k", b"v", 0, 60),
        lambda s: s.put("code", "k", b"v", True, 60),
        lambda s: s.put("", "k", b"v", 1, 60),
        lambda s: s.put("co:de", "k", b"v", 1, 60),
        lambda s: s.compare_and_set("code", "k", -1, b"v", 60),
        lambda s: s.compare_and_set("code", "k", 0, b"v", 0),
        lambda s: s.get("a:b", "k"),
        lambda s: s.take("", "k"),
    ],
)
def test_bad_arguments_raise_value_error_and_store_nothing(store: Any, call: Any) -> None:
    with pytest.raises(ValueError):
        call(store)
    assert store.dump() == []


def test_dump_shows_what_is_at_rest(store: Any) -> None:
    store.put("code", "h1", b"sealed-1", 1, 60)
    store.put("token", "h2", b"sealed-2", 1, 60)
    assert sorted(store.dump()) == [("code", "h1", b"sealed-1"), ("token", "h2", b"sealed-2")]


# -- scan (base.ScanningStore: listing for operators) ------------------------------------------------


def test_scan_lists_the_live_records_of_one_kind_and_no_other(store: Any) -> None:
    assert isinstance(store, ScanningStore)
    store.put("grant", "g1", b"one", 1, 60)
    store.put("grant", "", b"empty key", 2, 60)
    store.put("grant", "a:b:c/ü* ?[x]", b"odd key", 3, 60)
    # Kinds that share a beginning with "grant", and the same key under other kinds.
    for kind in ("grants", "gran", "grant-x", "revoked"):
        store.put(kind, "g1", b"other kind", 1, 60)
    store.put("grant", "gone", b"deleted", 1, 60)
    store.delete("grant", "gone")
    assert sorted(store.scan("grant"), key=lambda item: item[0]) == [
        ("", Stored(value=b"empty key", version=2)),
        ("a:b:c/ü* ?[x]", Stored(value=b"odd key", version=3)),
        ("g1", Stored(value=b"one", version=1)),
    ]
    assert list(store.scan("nothing")) == []


def test_scan_refuses_a_bad_kind_before_iterating(store: Any) -> None:
    for kind in ("", "a:b"):
        with pytest.raises(ValueError):
            store.scan(kind)


def test_scan_yields_every_record_once_across_pages(store: Any) -> None:
    count = max(SCAN_BATCH, SCAN_COUNT) * 2 + 7
    for i in range(count):
        store.put("grant", f"g{i:05}", b"v%d" % i, 1, 60)
    store.put("tx", "t", b"other", 1, 60)
    keys = [key for key, _stored in store.scan("grant")]
    assert len(keys) == count
    assert set(keys) == {f"g{i:05}" for i in range(count)}


def test_scan_never_lists_an_expired_record(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    store.put("grant", "short", b"v", 1, 10)
    store.put("grant", "long", b"w", 1, 100)
    assert {key for key, _ in store.scan("grant")} == {"short", "long"}
    clock.advance(10)  # exactly at expires_at: expired, though not yet reclaimed
    assert list(store.scan("grant")) == [("long", Stored(value=b"w", version=1))]
    clock.advance(1_000_000)
    assert list(store.scan("grant")) == []


def test_redis_scan_skips_a_key_deleted_between_scan_and_read(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key SCAN names is gone (deleted, or expired) by the time its value is read: skipped, not
    an error and not an empty record. SCAN naming a key twice yields it once."""
    redis_store.put("grant", "stays", b"v", 1, 60)
    redis_store.put("grant", "vanishes", b"v", 1, 60)
    raw = redis.Redis.from_url(REDIS_URL)
    real_scan = redis_store._redis.scan

    def scan_then_delete(*args: Any, **kwargs: Any) -> Any:
        cursor, names = real_scan(*args, **kwargs)
        for name in names:
            if name.endswith(b":vanishes"):
                raw.delete(name)
        return cursor, names + names  # and every name twice

    monkeypatch.setattr(redis_store._redis, "scan", scan_then_delete)
    try:
        assert list(redis_store.scan("grant")) == [("stays", Stored(value=b"v", version=1))]
    finally:
        raw.close()


def test_redis_scan_walks_with_scan_match_count_never_keys(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_store.put("grant", "g", b"v", 1, 60)
    calls: list[dict[str, Any]] = []
    real_scan = redis_store._redis.scan

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_scan(*args, **kwargs)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("KEYS walks the whole key space in one blocking call")

    monkeypatch.setattr(redis_store._redis, "scan", recording)
    monkeypatch.setattr(redis_store._redis, "keys", refuse)
    assert [key for key, _ in redis_store.scan("grant")] == ["g"]
    assert calls and all(
        c == {"match": f"{redis_store.prefix}grant:*", "count": SCAN_COUNT} for c in calls
    )


def test_async_scan(async_store_factory: Callable[[], Any]) -> None:
    async def body(s: Any) -> None:
        assert isinstance(s, AsyncScanningStore)
        count = SCAN_BATCH + 3
        for i in range(count):
            await s.put("grant", f"g{i}", b"v", 1, 60)
        await s.put("grants", "g0", b"other kind", 1, 60)
        await s.put("tx", "g0", b"other kind", 1, 60)
        found = [item async for item in s.scan("grant")]
        assert sorted(key for key, _ in found) == sorted(f"g{i}" for i in range(count))
        assert all(stored == Stored(value=b"v", version=1) for _, stored in found)
        with pytest.raises(ValueError):
            s.scan("a:b")

    run_async(async_store_factory, body)


# -- races ---------------------------------------------------------------------------------------


def _thread_race(op: Callable[[int, int], bool]) -> list[int]:
    """Run ``op(worker, round)`` on THREADS threads released together; winners per round."""
    barrier = threading.Barrier(THREADS)

    def work(worker: int) -> list[bool]:
        outcomes = []
        for r in range(THREAD_ROUNDS):
            barrier.wait(timeout=30)
            outcomes.append(op(worker, r))
        return outcomes

    with ThreadPoolExecutor(THREADS) as pool:
        per_worker = list(pool.map(work, range(THREADS)))
    return [sum(outcomes[r] for outcomes in per_worker) for r in range(THREAD_ROUNDS)]


def test_threads_take_one_key_exactly_one_wins(store: Any) -> None:
    for r in range(THREAD_ROUNDS):
        store.put("race", f"r{r}", b"code", 1, 60)
    winners = _thread_race(lambda w, r: store.take("race", f"r{r}") is not None)
    assert winners == [1] * THREAD_ROUNDS


def test_threads_cas_one_version_exactly_one_wins(store: Any) -> None:
    for r in range(THREAD_ROUNDS):
        store.put("race", f"r{r}", b"init", 1, 60)
    won_by: dict[int, int] = {}

    def op(worker: int, r: int) -> bool:
        won = store.compare_and_set("race", f"r{r}", 1, f"w{worker}".encode(), 60)
        if won:
            won_by[r] = worker
        return bool(won)

    assert _thread_race(op) == [1] * THREAD_ROUNDS
    for r in range(THREAD_ROUNDS):
        assert store.get("race", f"r{r}") == Stored(value=f"w{won_by[r]}".encode(), version=2)


def test_threads_insert_if_absent_exactly_one_wins(store: Any) -> None:
    winners = _thread_race(
        lambda w, r: store.compare_and_set("race", f"r{r}", 0, f"w{w}".encode(), 60)
    )
    assert winners == [1] * THREAD_ROUNDS


def _process_spec(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if backend == "sqlite":
        spec: tuple[str, ...] = ("sqlite", str(tmp_path / "shared.db"))
        return spec, SQLiteStore(spec[1])
    if backend == "postgres":
        pg = request.getfixturevalue("postgres_store")
        return ("postgres", POSTGRES_URL, pg.prefix), pg
    if backend in REPLICATED:
        owner = request.getfixturevalue(f"{backend}_store")
        return (backend, owner_url(request, backend, owner.prefix)), owner
    parent = request.getfixturevalue("redis_store")
    return ("redis", REDIS_URL, parent.prefix), parent


@pytest.mark.parametrize("op", ["take", "cas"])
@pytest.mark.parametrize("backend", ["sqlite", "redis", *REPLICATED, "postgres"])
def test_processes_race_exactly_one_wins(
    backend: str, op: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec, parent = _process_spec(backend, tmp_path, request)
    for r in range(PROCESS_ROUNDS):
        parent.put("race", f"r{r}", b"init", 1, 60)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=store_race_workers.race,
            args=(spec, op, worker, PROCESS_ROUNDS, barrier, results),
        )
        for worker in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in range(PROCESSES * PROCESS_ROUNDS)]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    for r in range(PROCESS_ROUNDS):
        winners = [w for (w, rr, won) in outcomes if rr == r and won]
        assert len(winners) == 1, (r, outcomes)
        after = parent.get("race", f"r{r}")
        if op == "take":
            assert after is None
        else:
            assert after == Stored(value=f"w{winners[0]}".encode(), version=2)
    if backend == "sqlite":
        parent.close()


# -- async ---------------------------------------------------------------------------------------


def test_async_contract(async_store_factory: Callable[[], Any]) -> None:
    async def body(s: Any) -> None:
        assert isinstance(s, AsyncStore)
        assert await s.get("code", "k") is None
        await s.put("code", "k", b"v", 1, 60)
        assert await s.get("code", "k") == Stored(value=b"v", version=1)
        assert await s.compare_and_set("code", "k", 1, b"w", 60) is True
        assert await s.compare_and_set("code", "k", 1, b"x", 60) is False
        assert await s.take("code", "k") == Stored(value=b"w", version=2)
        assert await s.take("code", "k") is None
        assert await s.compare_and_set("code", "k", 0, b"y", 60) is True
        assert await s.compare_and_set("code", "k", 0, b"z", 60) is False
        await s.delete("code", "k")
        assert await s.get("code", "k") is None
        with pytest.raises(ValueError):
            await s.put("code", "k", b"v", 1, 0)

    run_async(async_store_factory, body)


def test_async_tasks_take_exactly_one_wins(async_store_factory: Callable[[], Any]) -> None:
    async def body(s: Any) -> None:
        for r in range(5):
            await s.put("race", f"r{r}", b"code", 1, 60)
            got = await asyncio.gather(*(s.take("race", f"r{r}") for _ in range(TASKS)))
            assert sum(g is not None for g in got) == 1

    run_async(async_store_factory, body)


def test_async_tasks_cas_exactly_one_wins(async_store_factory: Callable[[], Any]) -> None:
    async def body(s: Any) -> None:
        for r in range(5):
            await s.put("race", f"r{r}", b"init", 1, 60)
            won = await asyncio.gather(
                *(s.compare_and_set("race", f"r{r}", 1, b"w%d" % i, 60) for i in range(TASKS))
            )
            assert sum(won) == 1
            winner = won.index(True)
            assert await s.get("race", f"r{r}") == Stored(value=b"w%d" % winner, version=2)
            inserted = await asyncio.gather(
                *(s.compare_and_set("race", f"new{r}", 0, b"n", 60) for _ in range(TASKS))
            )
            assert sum(inserted) == 1

    run_async(async_store_factory, body)


# -- expiry (spec/security.md 27: advancing the clock never revives an expired record) ---------------


def test_expired_record_is_never_returned(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    store.put("code", "k", b"v", 1, 10)
    clock.advance(9.999)
    assert store.get("code", "k") == Stored(value=b"v", version=1)
    clock.advance(0.001)  # exactly at expires_at: expired
    assert store.get("code", "k") is None
    assert store.take("code", "k") is None
    assert store.compare_and_set("code", "k", 1, b"x", 10) is False
    assert store.dump() == []
    for _ in range(3):
        clock.advance(1_000_000)
        assert store.get("code", "k") is None


def test_take_of_expired_record_is_none(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    store.put("code", "k", b"v", 1, 1)
    clock.advance(1)
    assert store.take("code", "k") is None
    assert store.get("code", "k") is None


def test_expired_record_counts_as_absent_for_insert(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    store.put("reg", "k", b"old", 9, 5)
    clock.advance(5)
    assert store.compare_and_set("reg", "k", 0, b"new", 5) is True
    assert store.get("reg", "k") == Stored(value=b"new", version=1)
    assert store.compare_and_set("reg", "k", 9, b"stale", 5) is False


def test_cas_and_put_renew_ttl(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    store.put("txn", "k", b"v", 1, 10)
    clock.advance(8)
    assert store.compare_and_set("txn", "k", 1, b"w", 10) is True
    clock.advance(8)
    assert store.get("txn", "k") == Stored(value=b"w", version=2)
    clock.advance(2)
    assert store.get("txn", "k") is None


def test_many_expired_records_are_reclaimed(clocked: tuple[Any, FakeClock]) -> None:
    store, clock = clocked
    for i in range(300):
        store.put("code", f"old{i}", b"v", 1, 1)
    clock.advance(2)
    for i in range(300):
        store.put("code", f"new{i}", b"v", 1, 60)
    live = store.dump()
    assert len(live) == 300
    assert all(key.startswith("new") for (_, key, _) in live)


def test_size_counts_the_records_held(store: Any) -> None:
    assert isinstance(store, SizedStore)
    assert store.size() == 0
    for i in range(3):
        store.put("grant", f"g{i}", b"v", 1, 60)
    store.put("client", "g0", b"v", 1, 60)
    store.put("grant", "g0", b"w", 2, 60)  # a replacement holds no more
    assert store.size() == 4
    store.delete("grant", "g1")
    assert store.take("grant", "g2") is not None
    assert store.size() == 2


def test_size_counts_expired_records_until_they_are_reclaimed(
    clocked: tuple[Any, FakeClock],
) -> None:
    """What is held (memory, disk) is what size() says: an expired record counts until reclaimed."""
    store, clock = clocked
    store.put("code", "old", b"v", 1, 1)
    store.put("code", "live", b"v", 1, 60)
    clock.advance(1)
    assert store.size() == 2
    assert store.get("code", "old") is None  # (the memory store reclaims what a read finds expired)
    if isinstance(store, PostgresStore):
        store.purge_expired()
    else:
        for i in range(100):  # writes reclaim it (memory: at each; SQLite: every 100)
            store.put("code", f"new{i}", b"v", 1, 60)
        for i in range(100):
            store.delete("code", f"new{i}")
    assert store.size() == 1


def test_async_size(async_store_factory: Callable[[], Any]) -> None:
    async def body(s: Any) -> None:
        assert isinstance(s, AsyncSizedStore)
        for i in range(5):
            await s.put("grant", f"g{i}", b"v", 1, 60)
        await s.delete("grant", "g0")
        assert await s.size() == 4

    run_async(async_store_factory, body)


def test_redis_ttl_expires(redis_store: RedisStore) -> None:
    """Redis keeps its own clock: one real one-second TTL, checked through every operation."""
    for key in ("get", "take", "cas", "insert"):
        redis_store.put("code", key, b"v", 1, 1)
    assert redis_store.get("code", "get") == Stored(value=b"v", version=1)
    time.sleep(1.1)
    assert redis_store.get("code", "get") is None
    assert redis_store.take("code", "take") is None
    assert redis_store.compare_and_set("code", "cas", 1, b"x", 60) is False
    assert redis_store.compare_and_set("code", "insert", 0, b"x", 60) is True
    assert redis_store.dump() == [("code", "insert", b"x")]
    assert list(redis_store.scan("code")) == [("insert", Stored(value=b"x", version=1))]


# -- memory store ------------------------------------------------------------------------------


def test_memory_store_is_bounded_and_refusal_loses_nothing() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock, max_records=3)
    for i in range(3):
        store.put("reg", f"k{i}", b"v", 1, 10)
    with pytest.raises(StoreFullError):
        store.put("reg", "k3", b"v", 1, 10)
    with pytest.raises(StoreFullError):
        store.compare_and_set("reg", "k3", 0, b"v", 10)
    assert issubclass(StoreFullError, StoreUnavailableError)
    # Replacing an existing record needs no room.
    store.put("reg", "k0", b"w", 2, 10)
    assert store.compare_and_set("reg", "k1", 1, b"w", 10) is True
    assert len(store.dump()) == 3
    assert store.get("reg", "k2") == Stored(value=b"v", version=1)


def test_memory_store_reclaims_expired_records_when_full() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock, max_records=3)
    for i in range(3):
        store.put("reg", f"k{i}", b"v", 1, 10)
    clock.advance(10)
    for i in range(3, 6):
        store.put("reg", f"k{i}", b"v", 1, 10)
    assert sorted(k for (_, k, _) in store.dump()) == ["k3", "k4", "k5"]
    assert store.compare_and_set("reg", "k3", 0, b"x", 10) is False


def test_memory_purge_per_write_is_bounded() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for i in range(100):
        store.put("code", f"k{i}", b"v", 1, 1)
    clock.advance(1)
    store.put("code", "fresh", b"v", 1, 60)
    assert len(store) == 100 - PURGE_BATCH + 1
    for _ in range(10):
        store.put("code", "fresh", b"v", 1, 60)
    assert len(store) == 1


def test_memory_heap_stays_proportional_under_rewrites() -> None:
    store = MemoryStore()
    for i in range(20_000):
        store.put("txn", "k", b"v", i + 1, 3600)
    assert len(store._expiries) <= 2 * len(store) + 1025


def test_async_memory_store_shares_a_sync_store() -> None:
    sync = MemoryStore()
    sync.put("code", "k", b"v", 1, 60)

    async def main() -> Stored | None:
        return await AsyncMemoryStore(store=sync).take("code", "k")

    assert asyncio.run(main()) == Stored(value=b"v", version=1)
    assert sync.get("code", "k") is None


# -- SQLite --------------------------------------------------------------------------------------


def test_sqlite_data_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = SQLiteStore(path)
    first.put("client", "c1", b"registration", 3, 3600)
    first.close()
    second = open_store("sqlite:///" + path)
    assert second.get("client", "c1") == Stored(value=b"registration", version=3)
    second.close()


def test_sqlite_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "state.db"))
    store.close()
    with pytest.raises(StoreUnavailableError):
        store.get("code", "k")


def test_sqlite_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(str(path))
    assert store.schema_version() == sqlite_module.SCHEMA_VERSION == 1
    assert store.journal_mode() == "wal"
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (
            1,
        )
        columns = [row[1] for row in raw.execute("PRAGMA table_info(records)")]
        assert columns == ["kind", "key", "value", "version", "expires_at"]
    finally:
        raw.close()
        store.close()


def test_sqlite_migration_is_a_function_in_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "state.db")
    v1 = SQLiteStore(path)
    v1.put("client", "c", b"kept", 1, 3600)
    v1.close()

    def to_v2(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE audit (at REAL)")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, to_v2])
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", 2)
    v2 = SQLiteStore(path)
    assert v2.schema_version() == 2
    assert v2.get("client", "c") == Stored(value=b"kept", version=1)
    v2._db().execute("SELECT count(*) FROM audit").fetchone()
    v2.close()
    SQLiteStore(path).close()  # reopening an up-to-date file migrates nothing


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = 99 WHERE name = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreUnavailableError, match="newer"):
        SQLiteStore(path)


def test_sqlite_file_and_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "state.db"
    store = SQLiteStore(str(path))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.close()


def test_sqlite_purges_expired_rows_incrementally(tmp_path: Path) -> None:
    clock = FakeClock()
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path, clock=clock)
    for i in range(sqlite_module.PURGE_EVERY):
        store.put("code", f"old{i}", b"v", 1, 1)
    clock.advance(2)
    for i in range(sqlite_module.PURGE_EVERY):
        store.put("code", f"new{i}", b"v", 1, 60)
    raw = sqlite3.connect(path)
    try:
        (expired,) = raw.execute(
            "SELECT count(*) FROM records WHERE expires_at <= ?", (clock(),)
        ).fetchone()
    finally:
        raw.close()
    assert expired == max(0, sqlite_module.PURGE_EVERY - sqlite_module.PURGE_BATCH)
    store.close()


def test_sqlite_purge_drains_a_backlog_one_batch_per_write(tmp_path: Path) -> None:
    """Every PURGE_EVERY writes a batch; while batches come back full, one more after each write:
    a backlog larger than the write rate still drains, and no write pays for more than one batch."""
    clock = FakeClock()
    path = str(tmp_path / "state.db")
    store = SQLiteStore(path, clock=clock)
    batch, every = sqlite_module.PURGE_BATCH, sqlite_module.PURGE_EVERY
    backlog = 5 * batch + 7
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.executemany(
            "INSERT INTO records VALUES ('code', ?, x'00', 1, ?)",
            [(f"old{i}", clock() + 1) for i in range(backlog)],
        )
        raw.commit()
    clock.advance(1)
    deleted: list[int] = []
    real = sqlite_module.purge_batch

    def counting(db: sqlite3.Connection, now: float) -> int:
        deleted.append(real(db, now))
        return deleted[-1]

    sqlite_module.purge_batch = counting  # type: ignore[assignment]
    try:
        for i in range(every + 6):
            store.put("code", f"new{i}", b"v", 1, 60)
    finally:
        sqlite_module.purge_batch = real  # type: ignore[assignment]
    # The 100th write ran the first batch; the next five writes one batch each, the last short.
    assert deleted == [batch] * 5 + [7]
    assert store.size() == every + 6
    store.close()


def test_sqlite_take_without_returning_is_atomic(tmp_path: Path) -> None:
    """The fallback for SQLite < 3.35 (BEGIN IMMEDIATE + SELECT + DELETE) is exercised too."""
    store = SQLiteStore(str(tmp_path / "state.db"))
    store._use_returning = False
    for r in range(THREAD_ROUNDS):
        store.put("race", f"r{r}", b"code", 1, 60)
    winners = _thread_race(lambda w, r: store.take("race", f"r{r}") is not None)
    assert winners == [1] * THREAD_ROUNDS
    store.close()


def test_sqlite_rejects_memory_path() -> None:
    with pytest.raises(ValueError, match="memory://"):
        SQLiteStore(":memory:")


def test_default_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OAUTHPROXY_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_sqlite_path() == str(tmp_path / ".oauthproxy" / "state.db")
    monkeypatch.setenv("OAUTHPROXY_DATA_DIR", str(tmp_path / "data"))
    assert default_sqlite_path() == str(tmp_path / "data" / "state.db")


def test_async_sqlite_sees_sync_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    sync = SQLiteStore(path)
    sync.put("code", "k", b"v", 1, 60)

    async def main() -> Stored | None:
        s = AsyncSQLiteStore(path)
        try:
            return await s.take("code", "k")
        finally:
            await s.close()

    assert asyncio.run(main()) == Stored(value=b"v", version=1)
    assert sync.get("code", "k") is None
    sync.close()


def _pool_calls(s: AsyncSQLiteStore) -> list[str]:
    calls: list[str] = []
    run = s._run

    async def counting(fn: Callable[..., Any], *args: Any) -> Any:
        calls.append(fn.__name__)
        return await run(fn, *args)

    s._run = counting  # type: ignore[method-assign]
    return calls


def test_async_sqlite_runs_small_statements_on_the_loop(tmp_path: Path) -> None:
    # synchronous=normal: reads and writes need no fsync, so no thread hop at all.
    async def main() -> list[str]:
        s = AsyncSQLiteStore(str(tmp_path / "state.db"))
        calls = _pool_calls(s)
        try:
            await s.put("tx", "k", b"v", 1, 60)
            assert await s.compare_and_set("tx", "k", 1, b"w", 60)
            assert await s.get("tx", "k") == Stored(value=b"w", version=2)
            assert await s.take("tx", "k") == Stored(value=b"w", version=2)
            await s.delete("tx", "k")
        finally:
            await s.close()
        return calls

    assert asyncio.run(main()) == []


def test_async_sqlite_full_sync_writes_on_the_pool(tmp_path: Path) -> None:
    # synchronous=full: every commit fsyncs, which must not block the event loop.
    async def main() -> list[str]:
        s = AsyncSQLiteStore(str(tmp_path / "state.db"), synchronous="full")
        calls = _pool_calls(s)
        try:
            await s.put("tx", "k", b"v", 1, 60)
            assert await s.get("tx", "k") == Stored(value=b"v", version=1)
            assert await s.compare_and_set("tx", "k", 1, b"w", 60)
            assert await s.take("tx", "k") == Stored(value=b"w", version=2)
        finally:
            await s.close()
        return calls

    assert asyncio.run(main()) == ["put", "compare_and_set", "take"]


def test_async_sqlite_never_waits_for_a_lock_on_the_loop(tmp_path: Path) -> None:
    # Another connection (another process, in production) holds the write lock: the loop's
    # statement fails at once without changing anything and is run again on the pool, which waits.
    path = str(tmp_path / "state.db")
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def main() -> tuple[list[str], float, Stored | None]:
        s = AsyncSQLiteStore(path)
        calls = _pool_calls(s)
        try:
            await s.put("code", "k", b"v", 1, 60)
            locker.execute("BEGIN IMMEDIATE")
            threading.Timer(0.2, lambda: locker.execute("COMMIT")).start()
            loop = asyncio.get_running_loop()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = loop.create_task(ticker())
            started = time.perf_counter()
            taken = await s.take("code", "k")
            waited = time.perf_counter() - started
            t.cancel()
            assert ticks >= 5  # the loop kept running while the pool waited for the lock
            return calls, waited, taken
        finally:
            await s.close()

    calls, waited, taken = asyncio.run(main())
    locker.close()
    assert calls == ["take"]
    assert waited >= 0.15
    assert taken == Stored(value=b"v", version=1)


def test_async_sqlite_maintains_the_file_from_the_pool(tmp_path: Path) -> None:
    # The loop's connection neither purges nor checkpoints; every INLINE_MAINTENANCE_EVERY inline
    # writes the pool does both.
    path = str(tmp_path / "state.db")
    now = [1000.0]
    every = sqlite_module.INLINE_MAINTENANCE_EVERY

    async def main() -> list[str]:
        s = AsyncSQLiteStore(path, clock=lambda: now[0])
        ran: list[str] = []
        maintain = s._maintain

        def spy() -> None:
            ran.append("maintain")
            maintain()

        s._maintain = spy  # type: ignore[method-assign]
        try:
            for i in range(every):
                await s.put("tx", f"old{i}", b"v", 1, 1)
            await asyncio.sleep(0.2)  # let that run finish (nothing has expired yet)
            now[0] = 2000.0
            for i in range(every):
                await s.put("tx", f"new{i}", b"v", 1, 60)
        finally:
            await s.close()  # waits for the second run
        return ran

    assert asyncio.run(main()) == ["maintain", "maintain"]
    raw = sqlite3.connect(path)
    try:
        # The second run purged the expired rows (at most one batch of them).
        assert raw.execute("SELECT count(*) FROM records").fetchone()[0] == every
    finally:
        raw.close()


# -- Redis ----------------------------------------------------------------------------------------


def test_redis_layout_is_prefix_kind_key_and_packed_version(redis_store: RedisStore) -> None:
    redis_store.put("code", "h", b"sealed", 258, 60)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        name = f"{redis_store.prefix}code:h"
        assert raw.get(name) == (258).to_bytes(8, "big") + b"sealed"
        assert 0 < raw.ttl(name) <= 60
        raw.set(f"{redis_store.prefix}code:bad", b"short")
    finally:
        raw.close()
    with pytest.raises(StoreUnavailableError, match="malformed"):
        redis_store.get("code", "bad")


def test_redis_unreachable_fails_fast() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix=_redis_prefix())
    calls: list[Callable[[], object]] = [
        lambda: store.get("code", "k"),
        lambda: store.put("code", "k", b"v", 1, 60),
        lambda: store.take("code", "k"),
        lambda: store.compare_and_set("code", "k", 1, b"v", 60),
        lambda: store.compare_and_set("code", "k", 0, b"v", 60),
        lambda: store.delete("code", "k"),
        lambda: list(store.scan("code")),
    ]
    started = time.monotonic()
    for call in calls:
        with pytest.raises(StoreUnavailableError):
            call()
    assert time.monotonic() - started < 3
    store.close()


def test_redis_silent_server_times_out() -> None:
    """A server that accepts connections but never answers: the socket timeout fires, no hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.get("code", "k")
        assert time.monotonic() - started < 3
        store.close()


def test_async_redis_unreachable_fails_fast() -> None:
    async def main() -> None:
        store = AsyncRedisStore("redis://127.0.0.1:1/0")
        try:
            with pytest.raises(StoreUnavailableError):
                await store.take("code", "k")
            with pytest.raises(StoreUnavailableError):
                await store.compare_and_set("code", "k", 1, b"v", 60)
        finally:
            await store.close()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 3


# -- open_store ----------------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OAUTHPROXY_DATA_DIR", str(tmp_path / "data"))
    assert isinstance(open_store("memory://"), MemoryStore)

    relative = open_store("sqlite:///sub/rel.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == str(tmp_path / "sub" / "rel.db")
    relative.close()

    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == str(tmp_path / "abs.db")
    absolute.close()

    default = open_store("sqlite://")
    assert isinstance(default, SQLiteStore)
    assert default.path == str(tmp_path / "data" / "state.db")
    assert (tmp_path / "data" / "state.db").exists()
    default.close()

    shared = open_store(REDIS_URL)
    assert isinstance(shared, RedisStore)
    assert shared.prefix == "oauthproxy:"
    shared.close()

    prefix = _postgres_prefix()
    for url in (
        f"{POSTGRES_URL}?prefix={prefix}&synchronous_commit=off",
        f"{POSTGRES_URL.replace('postgresql://', 'postgres://')}?prefix={prefix}",
    ):
        pg = open_store(url)
        assert isinstance(pg, PostgresStore)
        assert pg.prefix == prefix
        assert pg.synchronous_commit == ("off" if "synchronous_commit" in url else None)
        assert pg.schema_version() == postgres_module.SCHEMA_VERSION
        pg.close()
    PostgresStore(POSTGRES_URL, prefix=prefix, purge_interval=0).drop_tables()

    durable = open_store(f"sqlite:///{tmp_path}/durable.db?synchronous=full")
    assert isinstance(durable, SQLiteStore) and durable.synchronous == "FULL"
    assert durable.path == str(tmp_path / "durable.db")
    durable.close()


def test_redis_url_prefix_separates_deployments() -> None:
    """Issue 4: a key prefix per deployment, so several proxies can share one Redis."""
    a = open_store(REDIS_URL + "?prefix=oauthproxy-test-a:")
    b = open_store(REDIS_URL + "?prefix=oauthproxy-test-b:")
    assert isinstance(a, RedisStore) and isinstance(b, RedisStore)
    try:
        a.put("client", "same-key", b"A", 1, 30)
        assert b.get("client", "same-key") is None
        stored = a.get("client", "same-key")
        assert stored is not None and stored.value == b"A"
        assert any(k.startswith("oauthproxy-test-a:") or k == "same-key" for _, k, _ in a.dump())
    finally:
        a.delete("client", "same-key")
        a.close()
        b.close()


def test_open_async_store_urls(tmp_path: Path, postgres_store: PostgresStore) -> None:
    owner = postgres_store

    async def main() -> None:
        for url, cls in [
            ("memory://", AsyncMemoryStore),
            (f"sqlite:///{tmp_path}/a.db", AsyncSQLiteStore),
            (REDIS_URL, AsyncRedisStore),
            (f"{POSTGRES_URL}?prefix={owner.prefix}", AsyncPostgresStore),
        ]:
            s = open_async_store(url)
            assert isinstance(s, cls)
            await s.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "url",
    [
        "memcached://x",
        "postgresql://127.0.0.1/db?prefix=Team-A",
        "postgresql://127.0.0.1/db?prefix=",
        "postgresql://127.0.0.1/db?prefix=9lives_",
        "postgresql://127.0.0.1/db?synchronous_commit=sometimes",
        "state.db",
        "",
        "sqlite://host/x.db",
        "sqlite:///x.db?synchronous=sometimes",
        "redis://127.0.0.1:6379/0?prefix=",
    ],
)
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(ValueError, match="store URL"):
        open_store(url)
    with pytest.raises(ValueError, match="store URL"):
        open_async_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-store-pw@127.0.0.1:6379/0?prefix=",
        "rediss://user:hunter2-store-pw@127.0.0.1:6379/0?prefix=with%20space",
        "memcached://:hunter2-store-pw@127.0.0.1",
        "hunter2-store-pw",
        "postgresql://u:hunter2-store-pw@127.0.0.1/db?prefix=Team-A",
        "redis+sentinel://:hunter2-store-pw@127.0.0.1:26379/",
    ],
)
def test_a_refused_store_url_never_quotes_its_password(url: str) -> None:
    """spec/security.md 24: secrets stay out of exceptions; an embedder logging the error of
    ``open_store`` must not log the store's password (or a password pasted as the URL)."""
    for opener in (open_store, open_async_store):
        with pytest.raises(ValueError, match="store URL") as caught:
            opener(url)
        assert "hunter2" not in str(caught.value)


def test_stores_package_exports_redis_and_postgres_lazily() -> None:
    assert stores.RedisStore is RedisStore
    assert stores.AsyncRedisStore is AsyncRedisStore
    assert stores.PostgresStore is PostgresStore
    assert stores.AsyncPostgresStore is AsyncPostgresStore
    assert StoreFullError.__mro__[1] is StoreUnavailableError


# -- PostgreSQL ------------------------------------------------------------------------------------


def _raw(sql_text: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement on its own connection to the tests' database (what an operator sees)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        cur = db.execute(sql_text, params or None)
        return list(cur.fetchall()) if cur.description else []


def test_postgres_layout_and_schema_version(postgres_store: PostgresStore) -> None:
    p = postgres_store.prefix
    postgres_store.put("code", "h\u00fc", b"sealed\x00bytes", 258, 60)
    columns = _raw(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = %s ORDER BY ordinal_position",
        f"{p}records",
    )
    assert columns == [
        ("kind", "text"),
        ("key", "bytea"),
        ("value", "bytea"),
        ("version", "bigint"),
        ("expires_at", "timestamp with time zone"),
    ]
    rows = _raw(f'SELECT kind, key, value, version FROM "{p}records"')
    assert rows == [("code", "hü".encode(), b"sealed\x00bytes", 258)]
    assert [r[0] for r in _raw(f'SELECT version FROM "{p}schema_version"')] == [1]
    assert postgres_store.schema_version() == postgres_module.SCHEMA_VERSION == 1
    indexes = {
        r[0] for r in _raw("SELECT indexname FROM pg_indexes WHERE tablename = %s", f"{p}records")
    }
    assert f"{p}records_expires_at" in indexes
    # The expiry is the server's clock plus the TTL.
    (left,) = _raw(f'SELECT extract(epoch FROM expires_at - now()) FROM "{p}records"')[0]
    assert 0 < float(left) <= 60


def test_postgres_a_nul_in_a_key_is_a_key_like_any_other(postgres_store: PostgresStore) -> None:
    """A key can come from a request (a client_id): a NUL in it must be a plain miss, never a 5xx
    (a text column could not hold it; the key column is bytea)."""
    assert postgres_store.get("client", "abc\x00") is None
    postgres_store.put("client", "a\x00b", b"v", 1, 60)
    assert postgres_store.get("client", "a") is None
    assert postgres_store.get("client", "a\x00b") == Stored(value=b"v", version=1)
    assert [k for k, _ in postgres_store.scan("client")] == ["a\x00b"]
    assert postgres_store.take("client", "a\x00b") == Stored(value=b"v", version=1)


def test_postgres_prefixes_separate_deployments(postgres_store: PostgresStore) -> None:
    other = open_postgres()
    try:
        postgres_store.put("client", "same-key", b"A", 1, 60)
        assert other.get("client", "same-key") is None
        other.put("client", "same-key", b"B", 1, 60)
        assert postgres_store.get("client", "same-key") == Stored(value=b"A", version=1)
        assert list(other.scan("client")) == [("same-key", Stored(value=b"B", version=1))]
    finally:
        other.drop_tables()
        other.close()


def test_postgres_server_clock_expires(postgres_store: PostgresStore) -> None:
    """Without an injected clock the server's time decides: one real one-second TTL, checked
    through every operation."""
    for key in ("get", "take", "cas", "insert"):
        postgres_store.put("code", key, b"v", 1, 1)
    assert postgres_store.get("code", "get") == Stored(value=b"v", version=1)
    time.sleep(1.1)
    assert postgres_store.get("code", "get") is None
    assert postgres_store.take("code", "take") is None
    assert postgres_store.compare_and_set("code", "cas", 1, b"x", 60) is False
    assert postgres_store.compare_and_set("code", "insert", 0, b"x", 60) is True
    assert postgres_store.dump() == [("code", "insert", b"x")]
    assert list(postgres_store.scan("code")) == [("insert", Stored(value=b"x", version=1))]
    assert postgres_store.size() == 4  # held until purged
    assert postgres_store.purge_expired() == 3
    assert postgres_store.size() == 1


def test_postgres_migration_is_a_function_in_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = open_postgres()
    prefix = v1.prefix
    try:
        v1.put("client", "c", b"kept", 1, 3600)
        v1.close()

        def to_v2(db: Any, names: Any) -> None:
            db.execute(f'CREATE TABLE "{names.prefix}records_audit" (at timestamptz)')

        monkeypatch.setattr(postgres_module, "MIGRATIONS", [*postgres_module.MIGRATIONS, to_v2])
        monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", 2)
        # An older schema is the operator's to migrate: instances of the previous release may
        # still be running on it.
        with pytest.raises(StoreUnavailableError, match="oauthproxy store migrate"):
            PostgresStore(POSTGRES_URL, prefix=prefix)
        assert postgres_module.migrate(POSTGRES_URL, prefix=prefix) == (1, 2)
        assert postgres_module.migrate(POSTGRES_URL, prefix=prefix) == (2, 2)  # nothing to do
        v2 = open_postgres(prefix)
        assert v2.schema_version() == 2
        assert v2.get("client", "c") == Stored(value=b"kept", version=1)
        assert [r[0] for r in _raw(f'SELECT version FROM "{prefix}schema_version" ORDER BY 1')] == [
            1,
            2,
        ]
        _raw(f'SELECT count(*) FROM "{prefix}records_audit"')
        v2.drop_tables()
        v2.close()
    finally:
        _raw(
            f'DROP TABLE IF EXISTS "{prefix}records_audit", "{prefix}records", "{prefix}schema_version"'
        )


def test_postgres_refuses_a_newer_schema(postgres_store: PostgresStore) -> None:
    _raw(f'INSERT INTO "{postgres_store.prefix}schema_version" (version) VALUES (99)')
    with pytest.raises(StoreUnavailableError, match="newer"):
        PostgresStore(POSTGRES_URL, prefix=postgres_store.prefix)
    with pytest.raises(StoreUnavailableError, match="newer"):
        postgres_module.migrate(POSTGRES_URL, prefix=postgres_store.prefix)


def test_postgres_refuses_a_table_it_did_not_create() -> None:
    prefix = _postgres_prefix()
    _raw(f'CREATE TABLE "{prefix}records" (something text)')
    try:
        with pytest.raises(StoreUnavailableError, match="already exists"):
            PostgresStore(POSTGRES_URL, prefix=prefix)
        assert _raw("SELECT to_regclass(%s) IS NULL", f"{prefix}schema_version") == [(True,)]
    finally:
        _raw(f'DROP TABLE IF EXISTS "{prefix}records", "{prefix}schema_version"')


def test_postgres_processes_opening_an_empty_database_create_the_schema_once() -> None:
    prefix = _postgres_prefix()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=store_race_workers.open_postgres,
            args=(POSTGRES_URL, prefix, barrier, results),
        )
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=60) for _ in range(PROCESSES)]
        for p in procs:
            p.join(timeout=30)
        assert outcomes == ["ok"] * PROCESSES
        assert _raw(f'SELECT version FROM "{prefix}schema_version"') == [(1,)]
    finally:
        _raw(f'DROP TABLE IF EXISTS "{prefix}records", "{prefix}schema_version"')


def test_postgres_purge_deletes_expired_rows_in_bounded_batches() -> None:
    clock = FakeClock()
    store = open_postgres(clock=clock, purge_interval=0)
    batch = postgres_module.PURGE_BATCH
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
            # Rows written straight into the table: a backlog of expired ones, and live ones.
            db.execute(
                f'INSERT INTO "{store.prefix}records" (kind, key, value, version, expires_at)'
                " SELECT 'code', convert_to('old' || i, 'UTF8'), 'v', 1, to_timestamp(%s)"
                " FROM generate_series(1, %s) AS i",
                (clock() + 1, batch + 5),
            )
        store.put("code", "live", b"v", 1, 60)
        assert store.size() == batch + 6
        assert store.purge_expired() == 0  # nothing has expired yet
        clock.advance(1)
        assert store.purge_expired() == batch
        assert store.purge_expired() == 5
        assert store.purge_expired() == 0
        assert store.size() == 1
        assert store.get("code", "live") == Stored(value=b"v", version=1)
    finally:
        store.drop_tables()
        store.close()


def test_postgres_purge_skips_a_row_another_session_holds() -> None:
    """Two instances purging one table never wait for each other: a locked row is left for later."""
    clock = FakeClock()
    store = open_postgres(clock=clock, purge_interval=0)
    try:
        store.put("code", "held", b"v", 1, 1)
        store.put("code", "free", b"v", 1, 1)
        clock.advance(1)
        with psycopg.connect(POSTGRES_URL) as other:
            other.execute(
                f'SELECT 1 FROM "{store.prefix}records" WHERE key = %s FOR UPDATE', (b"held",)
            )
            assert store.purge_expired() == 1  # returned without waiting for the lock
            other.rollback()
        assert store.purge_expired() == 1
        assert store.size() == 0
    finally:
        store.drop_tables()
        store.close()


def test_postgres_purge_plan_never_reads_the_whole_table(postgres_store: PostgresStore) -> None:
    """The purge finds expired rows by the expires_at index and deletes them by row address, in
    the generic plan too (the one a prepared statement ends up with, which cannot know the time it
    will compare with): a plan that scanned the table would, on millions of rows, run past the
    statement timeout at every round and never purge anything."""
    p = postgres_store.prefix
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        db.execute(
            f'INSERT INTO "{p}records" (kind, key, value, version, expires_at)'
            " SELECT 'grant', convert_to('g' || i, 'UTF8'), 'v', 1, now() + interval '30 days'"
            " FROM generate_series(1, 20000) AS i"
        )
        db.execute(f'ANALYZE "{p}records"')
        statement = postgres_store._names.purge.replace("%(now)s", "$1").replace("%(limit)s", "$2")
        db.execute(f"PREPARE purge_plan (float8, int) AS {statement}")
        db.execute("SET plan_cache_mode = force_generic_plan")
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN EXECUTE purge_plan (NULL, 1000)"))
    assert "Tid Scan" in plan, plan
    assert f"Index Scan using {p}records_expires_at" in plan, plan
    assert "Seq Scan" not in plan, plan


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {seconds} s"
        time.sleep(0.05)


def test_postgres_background_purge_drains_a_backlog() -> None:
    clock = FakeClock()
    store = open_postgres(clock=clock, purge_interval=0.1)
    batch = postgres_module.PURGE_BATCH
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
            db.execute(
                f'INSERT INTO "{store.prefix}records" (kind, key, value, version, expires_at)'
                " SELECT 'grant', convert_to('g' || i, 'UTF8'), 'v', 1, to_timestamp(%s)"
                " FROM generate_series(1, %s) AS i",
                (clock() + 1, 2 * batch + 10),
            )
        store.put("grant", "live", b"v", 1, 60)
        clock.advance(1)
        # No request touches the store: the purge thread alone drains three batches' worth.
        _wait_for(lambda: store.size() == 1, "the background purge")
        assert store.get("grant", "live") == Stored(value=b"v", version=1)
    finally:
        store.close()
        PostgresStore(POSTGRES_URL, prefix=store.prefix, purge_interval=0).drop_tables()


def test_async_postgres_background_purge_and_size() -> None:
    clock = FakeClock()
    owner = open_postgres(purge_interval=0)

    async def main() -> int:
        s = AsyncPostgresStore(POSTGRES_URL, prefix=owner.prefix, clock=clock, purge_interval=0.1)
        try:
            for i in range(20):
                await s.put("tx", f"t{i}", b"v", 1, 1)
            await s.put("tx", "live", b"v", 1, 60)
            assert await s.size() == 21
            clock.advance(1)
            deadline = time.monotonic() + 30
            while await s.size() != 1:
                assert time.monotonic() < deadline, "the purge task did not run"
                await asyncio.sleep(0.05)
            assert await s.dump() == [("tx", "live", b"v")]
            return await s.size()
        finally:
            await s.close()

    try:
        assert asyncio.run(main()) == 1
    finally:
        owner.drop_tables()
        owner.close()


def test_postgres_sessions_bound_their_statements(postgres_store: PostgresStore) -> None:
    def setting(store: PostgresStore, name: str) -> str:
        with store._pool.connection() as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
        assert row is not None
        return str(row[0])

    assert setting(postgres_store, "statement_timeout") == "2s"
    assert setting(postgres_store, "lock_timeout") == "2s"
    assert setting(postgres_store, "application_name") == "oauthproxy"
    assert setting(postgres_store, "synchronous_commit") == "off"
    durable = open_postgres(postgres_store.prefix, synchronous_commit=None, timeout=0.5)
    try:
        # Without the option, the server's own setting (on, in a default installation): what a
        # session that sets nothing sees.
        (server_default,) = _raw("SHOW synchronous_commit")[0]
        assert setting(durable, "synchronous_commit") == server_default
        assert setting(durable, "statement_timeout") == "500ms"
    finally:
        durable.close()


def test_postgres_password_is_never_shown() -> None:
    secret = "not-the-password-" + uuid.uuid4().hex
    # Nothing listens on port 1: the connection fails, and its message names the server only.
    with pytest.raises(StoreUnavailableError) as failure:
        PostgresStore(f"postgresql://someone:{secret}@127.0.0.1:1/db", timeout=0.5)
    assert "127.0.0.1" in str(failure.value)
    assert secret not in str(failure.value)
    store = open_postgres()
    try:
        assert "oauthproxy_test:" not in repr(store) and "127.0.0.1:5432" in repr(store)
        assert "oauthproxy_test:" not in str(vars(store).get("location"))
    finally:
        store.drop_tables()
        store.close()


def test_postgres_unreachable_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="PostgreSQL open failed"):
        PostgresStore("postgresql://u@127.0.0.1:1/db", timeout=0.5)
    with pytest.raises(StoreUnavailableError):
        AsyncPostgresStore("postgresql://u@127.0.0.1:1/db", timeout=0.5)
    assert time.monotonic() - started < 5


def test_postgres_silent_server_times_out() -> None:
    """A server that accepts connections but never answers: libpq's connect_timeout fires."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            PostgresStore(f"postgresql://u@127.0.0.1:{port}/db", timeout=0.5)
        assert time.monotonic() - started < 8
