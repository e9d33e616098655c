"""Benchmark: the complete OAuth flow and bearer verification on each store (memory, SQLite, Redis,
Redis behind Sentinel, Redis Cluster, PostgreSQL).

All measurements are taken in one process, interleaved sample by sample (A B C ..., the order
rotated every round, exactly as ``benchmarks/core_flow.py`` does), so that drift hits every store
alike:

``flow_<store>``
    The complete flow of ``benchmarks/core_flow.py`` (register -> authorize -> consent GET -> consent
    POST -> upstream login -> callback -> token -> bearer -> refresh -> revoke) through the sync
    driver, with that benchmark's minimal client, browser and upstream stand-ins, on a
    ``MemoryStore``, a ``SQLiteStore`` in a temporary file (WAL, ``synchronous = FULL``: a commit is
    on disk when the call returns) and a ``RedisStore`` under a random key prefix (the Redis server
    at ``OAUTHPROXY_BENCH_REDIS_URL`` when set, else a private ``redis-server`` started on a free
    loopback port like the Sentinel and Cluster ones below, over loopback TCP), and
    two ``PostgresStore`` under a random table prefix (the server at
    ``OAUTHPROXY_BENCH_POSTGRES_URL``, default the ``oauthproxy_test`` database on 127.0.0.1:5432
    that ``sh .ci/dev bench`` creates, over loopback TCP): ``postgres`` with the server's
    ``synchronous_commit`` (``on``: a write returns once its WAL record is flushed to disk) and
    ``postgres_async_commit`` with ``synchronous_commit=off`` (a write returns before that flush,
    the durability of a Redis that persists with ``appendfsync everysec``; the Redis measured here
    persists nothing); ``redis_sentinel``, a ``RedisSentinelStore`` on a primary with one replica
    and three sentinels, every write waiting for the replica (``WAIT 1``, the default
    ``replicas=1``), and ``redis_cluster``, a ``RedisClusterStore`` on a Cluster of three
    primaries with a replica each, every write waiting for its shard's replica (``replicas=1``),
    both started by this script on free loopback ports (``redis-server`` processes,
    ``tests/stores/redis_topologies.py``, stopped by PID at the end).
    ``flow_<store>_in_core`` is the part of that time spent inside the driver (core + driver +
    store); ratios use it, so the identical stand-in cost does not dilute the store's share.
``bearer_cached_<store>`` / ``bearer_uncached_<store>``
    ``oauthproxy_adapters.proxy.Proxy(config, keys, store, http).verify("Bearer ...")``: the sync
    facade the WSGI adapter and MCP servers use, with its verified-token cache (the signature check
    skipped on a hit; the revocation look-up in the store always made) and without it
    (``token_cache=False``). A sample is a batch of ``BEARER_BATCH`` calls, reported per call:
    one call takes microseconds, and timed alone between two flows it would mostly measure the CPU
    caches the flow just evicted.

Also measured, from ``dump()`` of a fresh store of each kind: the bytes one pending transaction
occupies (the ``tx`` record right after ``/authorize``, and again after consent, when it holds the
sealed upstream PKCE verifier) and the bytes of one grant (the ``grant`` record after ``/token``).

Targets: SQLite flow / memory flow <= 2x; each PostgreSQL, Sentinel and Cluster flow / Redis flow
<= 2x. Results go to
``benchmarks/results/stores_flow.json``; ``benchmarks/render_readme.py`` turns them into
``benchmarks/README.md``.

Usage: ``python benchmarks/stores_flow.py [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.stores.redis_topologies

import attrs
import core_flow

from oauthproxy_adapters.proxy import Proxy as FacadeProxy
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.stores.postgres import PostgresStore
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.redis_cluster import RedisClusterStore
from oauthproxy_adapters.stores.redis_sentinel import RedisSentinelStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_core import AuthorizationServer, Response
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.handlers.bearer import Principal
from tests.stores.redis_topologies import ClusterSet, RedisProcess, SentinelSet, free_ports

RESULTS = Path(__file__).resolve().parent / "results" / "stores_flow.json"
#: The single Redis: this URL when set, else a private ``redis-server`` started like the Sentinel and
#: Cluster ones (same binary, same options), so that the three Redis forms are compared on
#: identical servers and no other user of a shared Redis skews the ratios.
REDIS_URL = os.environ.get("OAUTHPROXY_BENCH_REDIS_URL")
POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_BENCH_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
STORES = (
    "memory",
    "sqlite",
    "redis",
    "redis_sentinel",
    "redis_cluster",
    "postgres",
    "postgres_async_commit",
)
TARGET_SQLITE_VS_MEMORY = 2.0
TARGET_POSTGRES_VS_REDIS = 2.0
TARGET_REPLICATED_VS_REDIS = 2.0
#: Bearer verifications per sample: one call takes microseconds, a flow milliseconds; timing single
#: calls between flows would measure the caches the flow just evicted and the timer itself.
BEARER_BATCH = 20
BENCH_BOUNDS = Bounds(
    registrations_per_address=10_000_000,
    registrations_total=10_000_000,
    authorizations_per_address=10_000_000,
    authorizations_per_client=10_000_000,
    authorizations_total=10_000_000,
)


class Stores:
    """Creates the stores under test and removes what they leave behind."""

    def __init__(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="oauthproxy-bench-")
        self.redis: list[RedisStore] = []
        self.sqlite: list[SQLiteStore] = []
        self.postgres: list[PostgresStore] = []
        self.sentinel_set: SentinelSet | None = None
        self.redis_server: RedisProcess | None = None
        self.redis_url = REDIS_URL
        self.cluster_set: ClusterSet | None = None

    def new(self, kind: str) -> Any:
        prefix = f"oauthproxy-bench-{secrets.token_hex(8)}:"
        if kind == "redis_sentinel":
            if self.sentinel_set is None:
                self.sentinel_set = SentinelSet(Path(self.tmpdir) / "sentinel").start()
            sentinel = RedisSentinelStore(self.sentinel_set.url(prefix))
            self.redis.append(sentinel)
            return sentinel
        if kind == "redis_cluster":
            if self.cluster_set is None:
                self.cluster_set = ClusterSet(Path(self.tmpdir) / "cluster", replicas=1).start()
            cluster = RedisClusterStore(self.cluster_set.url(prefix, query="replicas=1"))
            self.redis.append(cluster)
            return cluster
        if kind == "memory":
            return MemoryStore()
        if kind == "sqlite":
            store = SQLiteStore(os.path.join(self.tmpdir, f"bench-{len(self.sqlite)}.db"))
            self.sqlite.append(store)
            return store
        if kind.startswith("postgres"):
            pg = PostgresStore(
                POSTGRES_URL,
                prefix=f"bench_{secrets.token_hex(8)}_",
                synchronous_commit="off" if kind == "postgres_async_commit" else None,
            )
            self.postgres.append(pg)
            return pg
        if self.redis_url is None:
            (port,) = free_ports(1)
            self.redis_server = RedisProcess(port, Path(self.tmpdir) / "redis")
            self.redis_server.start()
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        store = RedisStore(self.redis_url, prefix=prefix)
        store.get("probe", "probe")  # fail now, not mid-run, if Redis is not there
        self.redis.append(store)
        return store

    def close(self) -> None:
        for r in self.redis:
            r.clear()
            r.close()
        for s in self.sqlite:
            s.close()
        for pg in self.postgres:
            pg.drop_tables()
            pg.close()
        for topology in (self.sentinel_set, self.cluster_set, self.redis_server):
            if topology is not None:
                topology.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class RecordingProxy(core_flow.Proxy):
    """``core_flow.Proxy`` on a given store, noting record sizes at the steps that create them."""

    def __init__(self, store: Any, *, record_sizes: bool = False) -> None:
        super().__init__()
        # One address registers thousands of clients here: lift the spec/security.md 28 bounds (they
        # are still counted, in the store under test, on every registration and authorization).
        self.config = attrs.evolve(self.config, bounds=BENCH_BOUNDS)
        self.server = AuthorizationServer(self.config, self.keys)
        self.store = store
        self.record_sizes = record_sizes
        self.sizes: dict[str, list[dict[str, int]]] = {}

    def _note(self, label: str, kind: str) -> None:
        self.sizes[label] = [
            {"key": len(key.encode()), "value": len(value)}
            for k, key, value in self.store.dump()
            if k == kind
        ]

    def send(self, method: str, target: str, **kw: Any) -> Response:
        resp = super().send(method, target, **kw)
        if self.record_sizes:
            path = target.partition("?")[0]
            if (method, path) == ("GET", "/authorize"):
                self._note("tx_after_authorize", "tx")
            elif (method, path) == ("POST", "/consent"):
                self._note("tx_after_consent", "tx")
            elif (method, path) == ("POST", "/token") and b"authorization_code" in kw.get(
                "body", b""
            ):
                self._note("grant_after_token", "grant")
        return resp


def record_bytes(stores: Stores) -> dict[str, dict[str, Any]]:
    """Bytes of one pending transaction and one grant, from ``dump()`` of a fresh store of each kind."""
    out: dict[str, dict[str, Any]] = {}
    for kind in STORES:
        proxy = RecordingProxy(stores.new(kind), record_sizes=True)
        proxy.tokens()
        entry: dict[str, Any] = {}
        for label, records in proxy.sizes.items():
            assert len(records) == 1, (kind, label, records)
            entry[label] = {"value_bytes": records[0]["value"], "key_bytes": records[0]["key"]}
        out[kind] = entry
    return out


DESCRIPTIONS = {
    "flow": "complete flow (core_flow.py's), wall time per flow",
    "flow_in_core": "complete flow, time inside the driver (core + driver + store) per flow",
    "bearer_cached": "Proxy.verify() (sync facade) with its verified-token cache, per call "
    f"(samples of {BEARER_BATCH} calls)",
    "bearer_uncached": "Proxy.verify() with token_cache=False (ES256 verify every call), per call "
    f"(samples of {BEARER_BATCH} calls)",
}
STORE_WORDS = {
    "memory": "MemoryStore",
    "sqlite": "SQLiteStore (temp file, WAL, synchronous=FULL)",
    "redis": "RedisStore (loopback TCP, random prefix)",
    "redis_sentinel": "RedisSentinelStore (loopback TCP, a primary, one replica, three sentinels; "
    "every write waits for the replica)",
    "redis_cluster": "RedisClusterStore (loopback TCP, three primaries with a replica each; "
    "every write waits for its shard's replica)",
    "postgres": "PostgresStore (loopback TCP, the server's synchronous_commit: on)",
    "postgres_async_commit": "PostgresStore (loopback TCP, synchronous_commit=off)",
}


def ratio_entry(
    results: dict[str, dict[str, Any]],
    round_medians: list[dict[str, float]],
    num: str,
    den: str,
    target: float | None,
    num_words: str,
    den_words: str,
) -> dict[str, Any]:
    per_round = [m[num] / m[den] for m in round_medians]
    spread = statistics.quantiles(per_round, n=10, method="inclusive")
    entry: dict[str, Any] = {
        "numerator": num,
        "denominator": den,
        "numerator_words": num_words,
        "denominator_words": den_words,
        "value": results[num]["median_us"] / results[den]["median_us"],
        "per_round_p10": spread[0],
        "per_round_p90": spread[8],
        "target": target,
    }
    if target is not None:
        entry["pass"] = entry["value"] <= target
    return entry


def filesystem_of(path: str) -> str:
    try:
        done = subprocess.run(
            ["df", "-T", path], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout.splitlines()[-1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, per_round, warmup = (4, 5, 10) if args.quick else (30, 40, 50)

    stores = Stores()
    try:
        sizes = record_bytes(stores)
        proxies = {kind: RecordingProxy(stores.new(kind)) for kind in STORES}
        benches: dict[str, core_flow.Bench] = {}
        for kind, proxy in proxies.items():
            benches[f"flow_{kind}"] = proxy.flow
        for kind, proxy in proxies.items():
            _client, tokens = proxy.tokens()
            header = "Bearer " + tokens["access_token"]
            for cached in (True, False):
                facade = FacadeProxy(
                    proxy.config, proxy.keys, proxy.store, proxy.upstream, token_cache=cached
                )
                assert isinstance(facade.verify(header, ("mcp",)), Principal)

                def verify(facade: FacadeProxy = facade, header: str = header) -> None:
                    for _ in range(BEARER_BATCH):
                        facade.verify(header, ("mcp",))

                benches[f"bearer_{'cached' if cached else 'uncached'}_{kind}"] = verify
        for _ in range(warmup):
            for fn in benches.values():
                fn()
        for proxy in proxies.values():
            proxy.by_endpoint.clear()

        started = time.perf_counter()
        samples, round_medians = core_flow.measure(benches, rounds, per_round)
        elapsed = time.perf_counter() - started
        # A bearer sample is a batch of BEARER_BATCH calls: report the time per call.
        for name in samples:
            if name.startswith("bearer_"):
                samples[name] = [round(v / BEARER_BATCH) for v in samples[name]]
                for m in round_medians:
                    m[name] /= BEARER_BATCH

        results: dict[str, dict[str, Any]] = {}
        for what in ("flow_in_core", "flow", "bearer_cached", "bearer_uncached"):
            for kind in STORES:
                name = f"flow_{kind}_in_core" if what == "flow_in_core" else f"{what}_{kind}"
                summary = core_flow.summarize(samples[name])
                per_second = 1e6 / summary["median_us"]
                unit = "flows/s" if what.startswith("flow") else "verifications/s"
                description = f"{DESCRIPTIONS[what]}, {STORE_WORDS[kind]}: {per_second:,.0f} {unit}"
                if what == "flow":
                    b = sizes[kind]
                    description += (
                        f"; one pending tx {b['tx_after_authorize']['value_bytes']:,} B "
                        f"({b['tx_after_consent']['value_bytes']:,} B after consent), "
                        f"one grant {b['grant_after_token']['value_bytes']:,} B (record values "
                        "from dump())"
                    )
                results[name] = {
                    "description": description,
                    "per_second": per_second,
                    **summary,
                }

        ratios: dict[str, dict[str, Any]] = {
            "sqlite_flow_vs_memory_flow": ratio_entry(
                results,
                round_medians,
                "flow_sqlite_in_core",
                "flow_memory_in_core",
                TARGET_SQLITE_VS_MEMORY,
                "The complete flow on SQLite (every write on disk before it returns)",
                "the same flow on the in-memory store",
            ),
            "redis_flow_vs_memory_flow": ratio_entry(
                results,
                round_medians,
                "flow_redis_in_core",
                "flow_memory_in_core",
                None,
                "The complete flow on Redis (one round trip per store operation)",
                "the same flow on the in-memory store",
            ),
        }
        for kind in ("redis_sentinel", "redis_cluster"):
            ratios[f"{kind}_flow_vs_redis_flow"] = ratio_entry(
                results,
                round_medians,
                f"flow_{kind}_in_core",
                "flow_redis_in_core",
                TARGET_REPLICATED_VS_REDIS,
                f"The complete flow on {STORE_WORDS[kind].partition(' (')[0]} "
                f"({STORE_WORDS[kind].partition('(')[2].rstrip(')')})",
                "the same flow on one Redis",
            )
        for kind in ("postgres", "postgres_async_commit"):
            words = STORE_WORDS[kind].partition("(")[2].rstrip(")")
            ratios[f"{kind}_flow_vs_redis_flow"] = ratio_entry(
                results,
                round_medians,
                f"flow_{kind}_in_core",
                "flow_redis_in_core",
                TARGET_POSTGRES_VS_REDIS,
                f"The complete flow on PostgreSQL ({words})",
                "the same flow on Redis",
            )
        for kind in STORES[1:]:
            ratios[f"bearer_cached_{kind}_vs_memory"] = ratio_entry(
                results,
                round_medians,
                f"bearer_cached_{kind}",
                "bearer_cached_memory",
                None,
                f"A cached bearer verification on {kind} (its revocation look-up in that store)",
                "the same on the in-memory store",
            )
        for kind in STORES:
            ratios[f"bearer_uncached_vs_cached_{kind}"] = ratio_entry(
                results,
                round_medians,
                f"bearer_uncached_{kind}",
                f"bearer_cached_{kind}",
                None,
                f"A bearer verification without the token cache on {kind}",
                "one with the cache",
            )

        tenth = max(1, rounds // 10)
        drift = {
            name: statistics.median(m[name] for m in round_medians[-tenth:])
            / statistics.median(m[name] for m in round_medians[:tenth])
            for name in [f"flow_{k}_in_core" for k in STORES]
            + [f"bearer_cached_{k}" for k in STORES]
        }
        endpoints = {
            f"{kind}: {name}": {"mean_us": total / count / 1000, "calls": count}
            for kind, proxy in proxies.items()
            for name, (total, count) in proxy.by_endpoint.items()
        }
        machine = core_flow.machine()
        machine["packages"]["redis-py"] = _version("redis")
        machine["packages"]["psycopg"] = _version("psycopg")
        report: dict[str, Any] = {
            "benchmark": "stores_flow",
            "title": "The complete flow and bearer verification on each store",
            "script": "benchmarks/stores_flow.py" + (" --quick" if args.quick else ""),
            "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
            "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "machine": machine,
            "settings": {
                "quick": args.quick,
                "rounds": rounds,
                "samples_per_round": per_round,
                "warmup": warmup,
                "bearer_calls_per_sample": BEARER_BATCH,
                "interleaving": f"sample by sample across the {len(STORES)} stores, order rotated "
                "every round",
                "seconds": round(elapsed, 1),
                "flows_run": sum(len(samples[f"flow_{k}"]) for k in STORES),
                "sqlite_directory_filesystem": filesystem_of(stores.tmpdir),
                "redis_url": stores.redis_url or "?",
                "redis_server_version": _redis_version(stores),
                "postgres_server_version": _postgres_version(stores),
                "drift_last_tenth_over_first_tenth": drift,
            },
            "measurements": results,
            "ratios": ratios,
            "endpoints_mean_us": endpoints,
            "record_bytes": sizes,
        }
    finally:
        stores.close()

    print(f"stores_flow: {rounds} rounds x {per_round} samples, interleaved, {elapsed:.1f} s")
    print(f"{'measurement':<40}{'median µs':>12}{'p10':>10}{'p90':>10}{'per s':>10}")
    for name, r in results.items():
        print(
            f"{name:<40}{r['median_us']:>12.1f}{r['p10_us']:>10.1f}{r['p90_us']:>10.1f}"
            f"{r['per_second']:>10,.0f}"
        )
    print(f"\n{'ratio':<48}{'value':>8}{'round p10':>11}{'round p90':>11}{'target':>9}  verdict")
    for name, e in ratios.items():
        target_text = f"<= {e['target']:g}x" if e["target"] is not None else "-"
        verdict = ("PASS" if e["pass"] else "MISS") if "pass" in e else "(info)"
        print(
            f"{name:<48}{e['value']:>7.2f}x{e['per_round_p10']:>10.2f}x"
            f"{e['per_round_p90']:>10.2f}x{target_text:>9}  {verdict}"
        )
    print("\nbytes stored (record values from dump(); key bytes in parentheses):")
    for kind, entry in sizes.items():
        print(
            f"  {kind:<22}"
            + ", ".join(
                f"{label} {v['value_bytes']} ({v['key_bytes']})" for label, v in entry.items()
            )
        )
    print(
        "\ndrift (last tenth / first tenth): " + ", ".join(f"{k} {v:.3f}" for k, v in drift.items())
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


def _version(dist: str) -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _postgres_version(stores: Stores) -> str:
    if not stores.postgres:
        return "?"
    try:
        with stores.postgres[0]._pool.connection() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"
    except Exception:
        return "?"


def _redis_version(stores: Stores) -> str:
    if not stores.redis:
        return "?"
    try:
        info = stores.redis[0]._redis.info("server")
        return str(info.get("redis_version", "?"))
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
