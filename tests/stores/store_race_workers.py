"""Worker processes for the cross-process race tests of test_store_conformance.py.

Kept in their own small module because ``multiprocessing`` with the ``spawn`` start method imports
the target's module in each child: this one imports only the stores.
"""

from __future__ import annotations

from typing import Any

from oauthproxy_adapters.stores.postgres import PostgresStore
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.redis_cluster import RedisClusterStore
from oauthproxy_adapters.stores.redis_sentinel import RedisSentinelStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore


def open_spec(spec: tuple[str, ...]) -> Any:
    """Open a store from a picklable ``("sqlite", path)``, ``("redis", url, prefix)``,
    ``("sentinel", url)``, ``("cluster", url)`` or ``("postgres", url, prefix)``."""
    if spec[0] == "sqlite":
        return SQLiteStore(spec[1])
    if spec[0] == "postgres":
        return PostgresStore(spec[1], prefix=spec[2], synchronous_commit="off")
    if spec[0] == "redis":
        return RedisStore(spec[1], prefix=spec[2])
    if spec[0] == "sentinel":
        return RedisSentinelStore(spec[1])
    if spec[0] == "cluster":
        return RedisClusterStore(spec[1])
    raise ValueError(spec)


def race(
    spec: tuple[str, ...], op: str, worker: int, rounds: int, barrier: Any, results: Any
) -> None:
    """For each round, wait for every worker, then ``take`` or ``compare_and_set`` key ``r<round>``.

    Puts ``(worker, round, won)`` on ``results`` for every round.
    """
    store = open_spec(spec)
    try:
        for r in range(rounds):
            barrier.wait(timeout=30)
            if op == "take":
                won = store.take("race", f"r{r}") is not None
            else:
                won = store.compare_and_set("race", f"r{r}", 1, f"w{worker}".encode(), 60)
            results.put((worker, r, won))
    finally:
        store.close()


def open_postgres(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """Wait for every worker, then open a PostgreSQL store on ``prefix`` (creating the schema if
    no one has yet); puts ``"ok"`` or the error's text on ``results``."""
    barrier.wait(timeout=30)
    try:
        PostgresStore(url, prefix=prefix, purge_interval=0).close()
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("ok")
