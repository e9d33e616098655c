"""Benchmark: the flow and the bearer check on a full store against an empty one, and expired
records reclaimed as fast as they are written (spec/architecture.md, "Storage contract").

For each store (memory, SQLite, Redis, PostgreSQL), one kind at a time:

``fill``
    A store is filled with ``--records`` grants and as many client registrations (default 10^6 of
    each), copies of a real grant record and a real registration record (their bytes taken from a
    flow on a ``MemoryStore``) under random keys, live for 30 days; loaded in bulk (``put`` for
    memory, one transaction of ``executemany`` for SQLite, pipelines of ``SET ... EX`` for Redis,
    ``COPY`` for PostgreSQL), the way a long-running deployment accumulates them, only faster.
``flow_<store>_empty`` / ``flow_<store>_full``
    The complete flow of ``benchmarks/core_flow.py`` (register -> ... -> refresh -> revoke) through
    the sync driver on an empty store and on the full one, interleaved sample by sample (as every
    benchmark here), time inside the driver (core + driver + store).
``bearer_<store>_empty`` / ``bearer_<store>_full``
    ``AuthorizationServer.verify_bearer`` through the driver (signature check and the revocation
    look-up in the store), in batches of ``BEARER_BATCH`` calls, per call.
``churn``
    On the full store, one writer puts records with a TTL of ``CHURN_TTL`` seconds as fast as the
    store takes them for ``CHURN_SECONDS``, through the store's own ``put`` with its own reclaiming
    (memory and SQLite on writes, Redis's expiry, PostgreSQL's background purge). Every second the
    churned records still held are counted, and those still live (written less than a TTL ago)
    subtracted: what remains is expired and not yet reclaimed, expressed as seconds of writing
    (the lag). Reclaiming keeps up when the lag never exceeds the store's bound by design
    (:data:`RECLAIM_BOUND`: next to nothing for memory and SQLite, one purge interval for
    PostgreSQL) plus :data:`CHURN_LAG_SLACK`; one that fell behind would see it grow for as long
    as the writer runs. ``size()`` of the store is read before and after.

The Redis server is a private ``redis-server`` on a free loopback port (nothing persisted), so that
the millions of keys never land in a shared one; PostgreSQL is the server at
``OAUTHPROXY_BENCH_POSTGRES_URL`` (default the ``oauthproxy_test`` database on 127.0.0.1:5432 that
``sh .ci/dev bench`` creates), under a random table prefix dropped afterwards, with
``synchronous_commit=off`` (the commit's flush is a constant cost that has nothing to do with the
table's size; ``stores_flow.py`` measures it). SQLite is a file in a temporary directory.

Targets: full/empty <= 1.5x for the flow and the bearer check; reclaiming keeps up.
Results go to ``benchmarks/results/expiry_at_scale.json``.

Usage: ``python benchmarks/expiry_at_scale.py [--quick] [--records N] [--stores memory sqlite ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core_flow
import psycopg
import redis
from stores_flow import RecordingProxy, ratio_entry

from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.stores.postgres import PURGE_INTERVAL, PostgresStore
from oauthproxy_adapters.stores.redis import RedisStore, _pack
from oauthproxy_adapters.stores.sqlite import SQLiteStore

RESULTS = Path(__file__).resolve().parent / "results" / "expiry_at_scale.json"
POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_BENCH_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
STORES = ("memory", "sqlite", "redis", "postgres")
LIVE_TTL = 30 * 24 * 3600
CHURN_TTL = 4
CHURN_SECONDS = 30
CHURN_VALUE = b"\x5a" * 300
BEARER_BATCH = 20
TARGET_FULL_VS_EMPTY = 1.5
#: How late each store reclaims an expired record at most, by design (seconds): memory and SQLite
#: on the next writes, PostgreSQL at the next purge round. Redis promises no bound: its expiry
#: samples keys that carry a TTL and works harder only while many of the sampled ones have expired.
RECLAIM_BOUND: dict[str, float | None] = {
    "memory": 0.0,
    "sqlite": 0.0,
    "redis": None,
    "postgres": PURGE_INTERVAL,
}
#: Reclaiming keeps up when the expired records still held never amount to more than the store's
#: bound plus this many seconds of writing (the sampling of the count is itself a second apart).
CHURN_LAG_SLACK = 1.5
LOAD_BATCH = 10_000
#: Nothing persisted; the last flag's value (the directory) is added per server.
REDIS_FLAGS = ("--appendonly", "no", "--dir")


# -- the records -----------------------------------------------------------------------------------


def real_records() -> dict[str, bytes]:
    """The value bytes of one real grant and one real client registration, from a flow."""
    proxy = RecordingProxy(MemoryStore())
    proxy.tokens()
    values = {kind: value for kind, _key, value in proxy.store.dump()}
    return {"grant": values["grant"], "client": values["client"]}


def records(count: int, templates: dict[str, bytes]) -> Iterator[tuple[str, str, bytes]]:
    """``count`` grants and ``count`` registrations, ``(kind, key, value)``, keys random, in key
    order: a B-tree loaded in order fills its pages one after the other (a restore does the same),
    where random order would spend the fill on page splits, not on what is measured afterwards."""
    for kind in ("client", "grant"):
        value = templates[kind]
        for key in sorted(secrets.token_urlsafe(16) for _ in range(count)):
            yield kind, key, value


# -- a private Redis -------------------------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on a free loopback port, nothing persisted; stopped by its PID."""

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(
                "expiry_at_scale: redis-server is needed (sh .ci/dev bench installs it)"
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                *REDIS_FLAGS,
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url).ping():
                    return
            if time.monotonic() > deadline:
                raise SystemExit("expiry_at_scale: the private redis-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# -- one store under test --------------------------------------------------------------------------


class Subject:
    """An empty store and a full store of one kind, with what the benchmark needs of each kind."""

    def __init__(self, kind: str, workdir: str) -> None:
        self.kind = kind
        self.workdir = workdir
        self.redis: PrivateRedis | None = None
        if kind == "redis":
            self.redis = PrivateRedis(workdir)
        self.empty = self._open("empty")
        self.full = self._open("full")

    def _open(self, which: str) -> Any:
        if self.kind == "memory":
            return MemoryStore(max_records=10_000_000)
        if self.kind == "sqlite":
            return SQLiteStore(os.path.join(self.workdir, f"{which}.db"))
        if self.kind == "redis":
            assert self.redis is not None
            return RedisStore(self.redis.url, prefix=f"{which}:")
        return PostgresStore(
            POSTGRES_URL, prefix=f"scale_{which}_{secrets.token_hex(6)}_", synchronous_commit="off"
        )

    def fill(self, count: int, templates: dict[str, bytes]) -> None:
        store = self.full
        rows = records(count, templates)
        if self.kind == "memory":
            for kind, key, value in rows:
                store.put(kind, key, value, 1, LIVE_TTL)
        elif self.kind == "sqlite":
            expires = time.time() + LIVE_TTL
            with contextlib.closing(sqlite3.connect(store.path)) as db:
                db.executemany(
                    "INSERT INTO records VALUES (?, ?, ?, 1, ?)",
                    ((k, key, v, expires) for k, key, v in rows),
                )
                db.commit()
        elif self.kind == "redis":
            pipe = store._redis.pipeline(transaction=False)
            for i, (kind, key, value) in enumerate(rows, 1):
                pipe.set(f"{store.prefix}{kind}:{key}", _pack(1, value), ex=LIVE_TTL)
                if i % LOAD_BATCH == 0:
                    pipe.execute()
            pipe.execute()
        else:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
                db.execute("SET synchronous_commit = off")
                table = f'"{store.prefix}records"'
                with db.cursor().copy(
                    f"COPY {table} (kind, key, value, version, expires_at) FROM STDIN"
                ) as copy:
                    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LIVE_TTL)
                    for kind, key, value in rows:
                        copy.write_row((kind, key.encode(), value, 1, expires))
                db.execute(f"ANALYZE {table}")

    def held(self, kind: str) -> int:
        """Records of ``kind`` held by the full store, live or expired and not reclaimed."""
        store = self.full
        if self.kind == "memory":
            # Only churn records are written while it runs: the records held minus those before.
            return int(store.size()) - self.records_before_churn
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(store.path)) as db:
                return int(
                    db.execute("SELECT count(*) FROM records WHERE kind = ?", (kind,)).fetchone()[0]
                )
        if self.kind == "redis":
            # Only churn keys are written while it runs: the database's key count minus the count
            # before (DBSIZE is O(1); Redis drops expired keys itself, lazily and in cycles).
            return int(store._redis.dbsize()) - self.records_before_churn
        with psycopg.connect(POSTGRES_URL) as db:
            row = db.execute(
                f'SELECT count(*) FROM "{store.prefix}records" WHERE kind = %s', (kind,)
            ).fetchone()
            return int(row[0]) if row else 0

    def close(self) -> None:
        for store in (self.empty, self.full):
            if isinstance(store, PostgresStore):
                store.drop_tables()
            store.close()
        if self.redis is not None:
            self.redis.stop()

    records_before_churn = 0


# -- measurements ----------------------------------------------------------------------------------


def flows_and_bearer(subject: Subject, rounds: int, per_round: int) -> dict[str, Any]:
    proxies = {which: RecordingProxy(getattr(subject, which)) for which in ("empty", "full")}
    benches: dict[str, Callable[[], Any]] = {}
    for which, proxy in proxies.items():
        benches[f"flow_{which}"] = proxy.flow
    for which, proxy in proxies.items():
        _client, tokens = proxy.tokens()
        token = tokens["access_token"]

        def bearer(proxy: RecordingProxy = proxy, token: str = token) -> None:
            for _ in range(BEARER_BATCH):
                proxy.bearer(token)

        benches[f"bearer_{which}"] = bearer
    for _ in range(5):
        for fn in benches.values():
            fn()
    samples, round_medians = core_flow.measure(benches, rounds, per_round)
    for name in list(samples):
        if name.startswith("bearer_"):
            samples[name] = [round(v / BEARER_BATCH) for v in samples[name]]
            for m in round_medians:
                m[name] /= BEARER_BATCH
    results = {}
    for name in ("flow_empty_in_core", "flow_full_in_core", "bearer_empty", "bearer_full"):
        results[name] = core_flow.summarize(samples[name])
    return {"results": results, "round_medians": round_medians}


def _written_at(timeline: list[tuple[float, float]], t: float) -> float:
    """Records written by time ``t``, interpolated between the samples of ``timeline``."""
    if t <= 0:
        return 0.0
    for (t0, w0), (t1, w1) in itertools.pairwise(timeline):
        if t0 <= t <= t1:
            return w0 + (w1 - w0) * (t - t0) / (t1 - t0) if t1 > t0 else w1
    return timeline[-1][1]


def churn(subject: Subject, seconds: float) -> dict[str, Any]:
    """Write short-lived records for ``seconds``; every second, how many the store still holds
    beyond those still live (written less than a TTL ago): the backlog of reclaiming."""
    store = subject.full
    if subject.kind == "redis":
        subject.records_before_churn = int(store._redis.dbsize())
    elif subject.kind == "memory":
        subject.records_before_churn = int(store.size())
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.put("churn", f"c{i}", CHURN_VALUE, 1, CHURN_TTL)
            i += 1
            written[0] = i

    timeline: list[tuple[float, float]] = [(0.0, 0.0)]
    held: list[tuple[float, int]] = []
    thread = threading.Thread(target=writer, daemon=True)
    started = time.monotonic()
    thread.start()
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        before = written[0]
        count = subject.held("churn")
        t = time.monotonic() - started
        timeline.append((t, (before + written[0]) / 2))
        held.append((t, count))
    stop.set()
    thread.join(30)
    elapsed = time.monotonic() - started
    rate = written[0] / elapsed
    backlog = [
        (
            round(t, 1),
            max(0.0, count - (_written_at(timeline, t) - _written_at(timeline, t - CHURN_TTL))),
        )
        for t, count in held
    ]
    # Seconds of writing that the expired records still held amount to.
    lag = [(t, b / rate) for t, b in backlog]
    bound = RECLAIM_BOUND[subject.kind]
    lag_max = max(x for _t, x in lag)
    return {
        "written": written[0],
        "seconds": round(elapsed, 1),
        "writes_per_second": rate,
        "ttl": CHURN_TTL,
        "held_over_time": [(round(t, 1), c) for t, c in held],
        "expired_held_over_time": [(t, round(b)) for t, b in backlog],
        "lag_median_s": statistics.median(x for _t, x in lag),
        "lag_max_s": lag_max,
        "bound_s": bound,
        "keeps_up": None if bound is None else lag_max <= bound + CHURN_LAG_SLACK,
    }


def churn_seconds(rounds: int) -> float:
    return CHURN_SECONDS if rounds > 3 else 12


def run_store(
    kind: str, count: int, rounds: int, per_round: int, templates: dict[str, bytes]
) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix=f"oauthproxy-scale-{kind}-")
    subject = Subject(kind, workdir)
    try:
        started = time.perf_counter()
        subject.fill(count, templates)
        fill_seconds = time.perf_counter() - started
        size_before = subject.full.size()
        print(f"  {kind}: filled {size_before:,} records in {fill_seconds:.1f} s", flush=True)
        measured = flows_and_bearer(subject, rounds, per_round)
        churned = churn(subject, churn_seconds(rounds))
        size_after = subject.full.size()
        return {
            "fill_seconds": round(fill_seconds, 1),
            "size_after_fill": size_before,
            "size_after_churn": size_after,
            **measured,
            "churn": churned,
        }
    finally:
        subject.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="few rounds, 10^4 records: a smoke test"
    )
    parser.add_argument("--records", type=int, default=None, help="grants (and as many clients)")
    parser.add_argument("--stores", nargs="*", default=list(STORES), choices=STORES)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count = args.records or (10_000 if args.quick else 1_000_000)
    rounds, per_round = (3, 3) if args.quick else (10, 8)
    templates = real_records()

    started = time.perf_counter()
    per_store: dict[str, Any] = {}
    partial = args.output.with_suffix(".json.tmp")
    for kind in args.stores:
        per_store[kind] = run_store(kind, count, rounds, per_round, templates)
        # What is measured so far survives a failure of a later store.
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(per_store, indent=1) + "\n")
    elapsed = time.perf_counter() - started

    words = {
        "memory": "MemoryStore",
        "sqlite": "SQLiteStore (temp file, WAL)",
        "redis": "RedisStore (private redis-server, loopback)",
        "postgres": "PostgresStore (loopback, synchronous_commit=off)",
    }
    measurements: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    churn_rows: list[list[str]] = []
    for kind, data in per_store.items():
        for name, summary in data["results"].items():
            what, which = (
                ("flow", name.split("_")[1])
                if name.startswith("flow")
                else ("bearer", name.split("_")[1])
            )
            per = (
                "flow, time inside the driver"
                if what == "flow"
                else "verify_bearer through the driver, per call"
            )
            filled = "" if which == "empty" else f" holding {data['size_after_fill']:,} records"
            measurements[f"{kind}_{name}"] = {
                "description": f"{per}, {words[kind]}, {which}{filled}",
                "per_second": 1e6 / summary["median_us"],
                **summary,
            }
        for what, num, den in (
            ("flow", "flow_full_in_core", "flow_empty_in_core"),
            ("bearer", "bearer_full", "bearer_empty"),
        ):
            entry = ratio_entry(
                {n: measurements[f"{kind}_{n}"] for n in (num, den)},
                data["round_medians"],
                num,
                den,
                TARGET_FULL_VS_EMPTY,
                f"The {'complete flow' if what == 'flow' else 'bearer check'} on a {words[kind]} "
                f"holding {data['size_after_fill']:,} records",
                "the same on an empty one",
            )
            entry["numerator"], entry["denominator"] = f"{kind}_{num}", f"{kind}_{den}"
            ratios[f"{kind}_{what}_full_vs_empty"] = entry
        c = data["churn"]
        churn_rows.append(
            [
                f"`{kind}`",
                f"{c['written']:,}",
                f"{c['writes_per_second']:,.0f}",
                f"{c['ttl']}",
                f"{c['lag_median_s']:.2f}",
                f"{c['lag_max_s']:.2f}",
                "none promised" if c["bound_s"] is None else f"{c['bound_s']:g}",
                f"{data['size_after_churn'] - data['size_after_fill']:,}",
                {True: "yes", False: "**no**", None: "(context)"}[c["keeps_up"]],
            ]
        )

    churn_seconds_run = churn_seconds(rounds)
    machine = core_flow.machine()
    report = {
        "benchmark": "expiry_at_scale",
        "title": "The flow and the bearer check on a full store, and expired records reclaimed",
        "script": "benchmarks/expiry_at_scale.py" + (" --quick" if args.quick else ""),
        "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "grants": count,
            "registrations": count,
            "grant_bytes": len(templates["grant"]),
            "registration_bytes": len(templates["client"]),
            "rounds": rounds,
            "samples_per_round": per_round,
            "bearer_calls_per_sample": BEARER_BATCH,
            "churn_seconds": churn_seconds_run,
            "churn_ttl": CHURN_TTL,
            "seconds": round(elapsed, 1),
            "per_store": {
                kind: {
                    "fill_seconds": d["fill_seconds"],
                    "size_after_fill": d["size_after_fill"],
                    "size_after_churn": d["size_after_churn"],
                    "churn_held_over_time": d["churn"]["held_over_time"],
                }
                for kind, d in per_store.items()
            },
        },
        "measurements": measurements,
        "ratios": ratios,
        "tables": [
            {
                "title": (
                    f"Reclaiming against writing, on the full stores: one writer puts records with "
                    f"a {CHURN_TTL} s TTL for {churn_seconds_run:g} s; every second, the expired ones "
                    "still held, in seconds of writing (the lag); keeps up = the lag never "
                    f"exceeds the store's bound + {CHURN_LAG_SLACK:g} s"
                ),
                "columns": [
                    "store",
                    "written",
                    "per s",
                    "TTL s",
                    "lag, median (s)",
                    "lag, max (s)",
                    "bound (s)",
                    "held after (beyond the fill)",
                    "keeps up",
                ],
                "rows": churn_rows,
            }
        ],
        "notes": [
            "The lag is a delay, not a leak: it stays level when reclaiming keeps up. PostgreSQL "
            "purges every 5 s (and at once again while a batch comes back full). Redis expires "
            "keys by itself, sampling keys that carry a TTL: among millions of live keys its "
            "samples find few expired ones, so its lag can grow for as long as the writing goes "
            "on; such a key is never returned, and is dropped when read or passed over by SCAN "
            "(as the count after the run did).",
            "Every flow and bearer measurement compares a store holding the fill with an empty "
            "one of the same kind, interleaved sample by sample; the absolute times depend on "
            "the load of the shared machine, the ratios much less.",
        ],
    }
    print(f"expiry_at_scale: {count:,} grants + {count:,} registrations per store, {elapsed:.0f} s")
    for name, r in measurements.items():
        print(
            f"{name:<36}{r['median_us']:>12.1f} µs  p10 {r['p10_us']:>9.1f}  p90 {r['p90_us']:>9.1f}"
        )
    for name, e in ratios.items():
        verdict = "PASS" if e["pass"] else "MISS"
        print(f"{name:<36}{e['value']:>7.2f}x  target <= {e['target']:g}x  {verdict}")
    for row in churn_rows:
        print("churn " + "  ".join(row))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    partial.unlink(missing_ok=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
