"""Benchmark: our flow as the store fills up, and the memory each record costs (issue 7).

Three stores are filled step by step, then at every step complete flows (``systems.py``, through our
ASGI app with a minimal in-process ASGI caller, so that the time is the server's) are sampled on all
three in turn, sample by sample:

``clients_memory``
    registered clients 1e3 -> 1e4 -> 1e5 (-> 1e6 when the projected fill time and memory fit) in the
    memory store;
``pending_memory``
    pending authorization transactions 1e3 -> 1e4 -> 1e5 in a second memory store;
``clients_sqlite``
    registered clients 1e3 -> 1e4 -> 1e5 in an SQLite store (temporary file).

Records are written directly with the core's codec (``oauthproxy_core.codec.encode``) from a template
that a real request stored (a ``/register`` for clients, a ``/authorize`` for transactions), each
with a fresh random id, through the store's own ``put``, with the core's lifetimes. Published per
step: flow median and spread, the flow time relative to the first step (flat means ~1.0), and bytes
per record (encoded; the resident-memory growth of the process per record for the memory stores; the
database file growth per record for SQLite).

Usage: ``python benchmarks/compare_scaling.py [--quick] [--max-fill-seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import benchlib
import systems

from oauthproxy_core import codec
from oauthproxy_core.records import Client, Transaction

FLAT_TARGET = 1.25


def rss_bytes() -> int:
    gc.collect()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Population:
    """One store, its system, and the records written into it."""

    def __init__(self, name: str, store_kind: str, record: str, description: str) -> None:
        self.name = name
        self.record = record
        self.description = description
        self.store = systems.ours_store(store_kind, max_records=4_000_000)
        self.system = systems.build_ours(store_kind, store=self.store)
        self.client = systems.DirectClient(self.system.app)
        self.count = 0
        self.encoded_bytes: list[int] = []
        self.template: Any = None
        self.ttl = 0
        self.db_path: str | None = getattr(getattr(self.store, "sync", None), "path", None)

    async def prepare(self) -> None:
        config = self.system.extra["config"]
        resp = await self.client.post(
            "/register", content=systems.REGISTRATION_BODY, headers=systems.JSON_CT
        )
        client_id = resp.json()["client_id"]
        if self.record == "client":
            stored = await self.store.get("client", client_id)
            self.template = codec.decode(stored.value, Client)
            self.ttl = config.lifetimes.client
        else:
            resource_q = quote(config.resource, safe="")
            resp = await self.client.get(
                f"/authorize?response_type=code&client_id={client_id}"
                f"&redirect_uri={systems.REDIRECT_Q}&state=s&code_challenge="
                f"{systems.CLIENT_CHALLENGE}&code_challenge_method=S256&scope=mcp"
                f"&resource={resource_q}"
            )
            txn = systems.query_param(resp.headers["location"], "txn")
            stored = await self.store.get("tx", txn)
            self.template = codec.decode(stored.value, Transaction)
            self.ttl = config.lifetimes.transaction

    def fill_to(self, target: int) -> float:
        """Write records until ``target`` exist; returns the seconds it took."""
        sync = self.store.sync
        kind = "client" if self.record == "client" else "tx"
        field = "client_id" if self.record == "client" else "id"
        template, ttl, encode, evolve = self.template, self.ttl, codec.encode, attrs.evolve
        started = time.perf_counter()
        for _ in range(target - self.count):
            key = secrets.token_urlsafe(16 if kind == "client" else 32)
            value = encode(evolve(template, **{field: key}))
            sync.put(kind, key, value, 1, ttl)
            if len(self.encoded_bytes) < 1000:
                self.encoded_bytes.append(len(value))
        self.count = max(self.count, target)
        return time.perf_counter() - started

    def file_bytes(self) -> int:
        if not self.db_path:
            return 0
        return sum(
            os.path.getsize(p) for p in (self.db_path, self.db_path + "-wal") if os.path.exists(p)
        )


def label(n: int) -> str:
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if n == 10**exponent else str(n)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pops = [
        Population("clients_memory", "memory", "client", "registered clients, memory store"),
        Population("pending_memory", "memory", "tx", "pending transactions, memory store"),
        Population("clients_sqlite", "sqlite", "client", "registered clients, SQLite store"),
    ]
    for pop in pops:
        await pop.prepare()
        for _ in range(args.warmup):
            await pop.system.flow(pop.client)

    steps = args.sizes
    results: dict[str, dict[int, dict[str, Any]]] = {p.name: {} for p in pops}
    skipped: list[str] = []
    rss_before = rss_bytes()
    rss_base = {"clients_memory": rss_before}
    started = time.perf_counter()
    for step in [*steps, args.big]:
        active = [p for p in pops if step in steps or p.name == "clients_memory"]
        if step == args.big:
            pop = pops[0]
            prev = results[pop.name][steps[-1]]
            rate = prev["fill_records_per_s"]
            projected = (step - pop.count) / rate
            per_record = prev["rss_bytes_per_record"]
            needed = per_record * (step - pop.count)
            if projected > args.max_fill_seconds or needed > 0.5 * mem_available():
                skipped.append(
                    f"{label(step)} registered clients skipped: filling would take about "
                    f"{projected:.0f} s (limit {args.max_fill_seconds:g} s) and about "
                    f"{needed / 2**20:,.0f} MiB (half of available: "
                    f"{mem_available() / 2**21:,.0f} MiB)"
                )
                break
        for pop in active:
            before_count, before_rss, before_file = pop.count, rss_bytes(), pop.file_bytes()
            seconds = pop.fill_to(step)
            added = pop.count - before_count
            after_rss, after_file = rss_bytes(), pop.file_bytes()
            results[pop.name][step] = {
                "records": pop.count,
                "fill_seconds": seconds,
                "fill_records_per_s": added / seconds if seconds else float("nan"),
                "rss_bytes_per_record": (after_rss - before_rss) / added if added else 0.0,
                "file_bytes_per_record": (after_file - before_file) / added if added else 0.0,
            }
        # Sample flows on every active store in turn.
        samples: dict[str, list[float]] = {p.name: [] for p in active}
        for i in range(args.flows):
            order = active[i % len(active) :] + active[: i % len(active)]
            for pop in order:
                t0 = time.perf_counter_ns()
                await pop.system.flow(pop.client)
                samples[pop.name].append((time.perf_counter_ns() - t0) / 1000)
        for pop in active:
            results[pop.name][step].update(benchlib.summarize_us(samples[pop.name]))
            r = results[pop.name][step]
            print(
                f"{pop.name:<16}{label(step):>6} records: flow median {r['median_us']:>9.1f} µs "
                f"(p10 {r['p10_us']:.1f}, p90 {r['p90_us']:.1f}); fill "
                f"{r['fill_records_per_s']:,.0f}/s; RSS {r['rss_bytes_per_record']:,.0f} B/record; "
                f"file {r['file_bytes_per_record']:,.0f} B/record"
            )
    elapsed = time.perf_counter() - started
    total_rss = rss_bytes() - rss_base["clients_memory"]

    floor = benchlib.floor_function()
    floor_us = []
    for _ in range(200):
        t0 = time.perf_counter_ns()
        floor()
        floor_us.append((time.perf_counter_ns() - t0) / 1000)
    floor_median = statistics.median(floor_us)
    measurements: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    rows = []
    for pop in pops:
        sizes = sorted(results[pop.name])
        first = results[pop.name][sizes[0]]
        for size in sizes:
            r = results[pop.name][size]
            key = f"{pop.name}_{label(size)}"
            measurements[key] = {
                "description": f"complete flow with {label(size)} {pop.description}",
                **{k: r[k] for k in ("median_us", "p10_us", "p90_us", "p99_us", "n")},
                "x_floor": r["median_us"] / floor_median,
            }
            rows.append(
                [
                    f"`{pop.name}`",
                    label(size),
                    f"**{r['median_us']:,.1f}**",
                    f"{r['p10_us']:,.1f}-{r['p90_us']:,.1f}",
                    f"{r['median_us'] / first['median_us']:.2f}x",
                    f"{r['fill_records_per_s']:,.0f}",
                    f"{r['rss_bytes_per_record']:,.0f}" if pop.db_path is None else "-",
                    f"{r['file_bytes_per_record']:,.0f}" if pop.db_path else "-",
                ]
            )
        last = sizes[-1]
        num, den = f"{pop.name}_{label(last)}", f"{pop.name}_{label(sizes[0])}"
        ratios[f"{pop.name}_flat"] = {
            "numerator": num,
            "denominator": den,
            "numerator_words": f"A flow with {label(last)} {pop.description}",
            "denominator_words": f"one with {label(sizes[0])}",
            "value": measurements[num]["median_us"] / measurements[den]["median_us"],
            "per_round_p10": measurements[num]["p10_us"] / measurements[den]["p10_us"],
            "per_round_p90": measurements[num]["p90_us"] / measurements[den]["p90_us"],
            "target": FLAT_TARGET,
            "target_kind": "at_most",
            "pass": measurements[num]["median_us"] / measurements[den]["median_us"] <= FLAT_TARGET,
        }
    encoded = {
        pop.name: statistics.mean(pop.encoded_bytes) if pop.encoded_bytes else 0 for pop in pops
    }
    report: dict[str, Any] = {
        "benchmark": "compare_scaling",
        "title": "Scaling: our flow as registered clients and pending transactions grow",
        "script": "benchmarks/compare_scaling.py" + (" --quick" if args.quick else ""),
        "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": len(results["clients_memory"]),
            "samples_per_round": f"{args.flows} flows per store per size",
            "warmup": args.warmup,
            "interleaving": "the stores' flows alternate sample by sample at every size",
            "sampling": f"{args.flows} flows per store at every size, the stores' flows "
            f"alternating sample by sample, after {args.warmup} warm-up flows each",
            "seconds": round(elapsed, 1),
        },
        "notes": [
            "Records are written with the core's codec from a template a real request stored, "
            "each with a fresh random id, through the store's `put` and with the core's lifetimes "
            "(clients 90 days, transactions 10 minutes).",
            "Encoded bytes per record (the value the store holds): "
            + ", ".join(f"`{k}` {v:,.0f}" for k, v in encoded.items())
            + ". `RSS B/record` is the growth of this process's resident memory per record "
            "written (key, value, expiry heap entry and allocator overhead included); "
            "`file B/record` is the growth of the SQLite database and its WAL per record.",
            f"`x floor`: multiple of the primitive floor of one flow (core_flow.py, "
            f"{floor_median:,.1f} µs here).",
            f"Resident memory grew by {total_rss / 2**20:,.0f} MiB over the whole run.",
            f"`flat` ratios: flow time at the largest size over the smallest; the target of at most "
            f"{FLAT_TARGET:g}x is this benchmark's reading of 'cost must stay flat per operation'. "
            "The ratio's spread columns are p10/p10 and p90/p90.",
            *skipped,
        ],
        "measurements": measurements,
        "ratios": ratios,
        "tables": [
            {
                "title": "Flow time and memory by size",
                "columns": [
                    "store",
                    "records",
                    "flow median µs",
                    "p10-p90 µs",
                    "vs first size",
                    "records written/s",
                    "RSS B/record",
                    "file B/record",
                ],
                "rows": rows,
            }
        ],
        "bytes_per_record": {
            "encoded": encoded,
            "rss": {
                pop.name: results[pop.name][max(results[pop.name])]["rss_bytes_per_record"]
                for pop in pops
                if pop.db_path is None
            },
            "sqlite_file": results["clients_sqlite"][max(results["clients_sqlite"])][
                "file_bytes_per_record"
            ],
        },
    }
    for pop in pops:
        await pop.system.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--max-fill-seconds", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.big, args.flows, args.warmup = [1_000, 10_000], 100_000, 20, 5
    else:
        args.sizes, args.big, args.flows, args.warmup = [1_000, 10_000, 100_000], 1_000_000, 150, 30
    report = asyncio.run(run(args))
    benchlib.write_result("compare_scaling", report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
