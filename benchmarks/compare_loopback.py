"""Benchmark: the complete flow over real loopback HTTP, 32 flows at a time (issue 7).

Each system (``systems.py``) runs under uvicorn in its own subprocess on 127.0.0.1 (same scripted
upstream, faked at its HTTP transport inside the server). This process is the client: one
``httpx.AsyncClient`` per system with keep-alive, and K concurrent asyncio workers that each run
complete flows back to back. The systems take turns in bursts (A B C ... A B C, order rotated every
round); each burst lasts ``--burst`` seconds of starting new flows (flows in flight are let finish
and counted). Reported per system: flows per second, flow latency p50/p99, and the server's CPU time
per flow (read from ``/proc/<pid>/stat``), which does not depend on how the two processes share the
cores.

Usage: ``python benchmarks/compare_loopback.py [--quick] [--systems a,b] [--concurrency 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import benchlib
import httpx
import systems
from serve_system import STACKS

HERE = Path(__file__).resolve().parent
DEFAULT_SYSTEMS = (
    "ours_memory",
    "fastmcp_memory",
    "fastmcp_memory_reused",
    "mcp_sdk",
    "http_floor",
)
#: Served on ours' HTTP stack: the MCP endpoint with no authorization (``systems.build_http_floor``).
ON_OURS_STACK = ("http_floor",)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_kib(pid: int) -> int:
    """A process's peak resident set size (VmHWM, Linux), in KiB; 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def split_name(name: str, args: argparse.Namespace) -> tuple[str, str]:
    """``system@stack`` -> (system, stack); without ``@``, the default stack for that system."""
    system, _, stack = name.partition("@")
    if not stack:
        ours = system.startswith("ours_") or system in ON_OURS_STACK
        stack = args.ours_stack if ours else args.others_stack
    return system, stack


class Server:
    def __init__(self, name: str, system: str, stack: str) -> None:
        self.name = name
        self.stack = stack
        if stack == "serve":
            from oauthproxy_adapters.cli import serve_stack  # noqa: PLC0415

            http, loop = serve_stack()
            self.stack = f"serve: uvicorn {http}/{loop}, coalesced writes"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "serve_system.py"),
                "--system",
                system,
                "--port",
                str(self.port),
                "--stack",
                stack,
            ],
            stdout=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    resp = await client.get("/.well-known/oauth-authorization-server")
                    if resp.status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} server did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def timed_loops(jobs: list[Callable[[], Awaitable[Any]]], seconds: float) -> dict[str, Any]:
    """Each job runs back to back, concurrently with the others, until ``seconds`` have passed."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker(job: Callable[[], Awaitable[Any]]) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await job()
            except (AssertionError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if len(errors) > 50:
                    return
                continue
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker(job) for job in jobs))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall": wall}


async def burst(system: systems.System, workers: list[Any], seconds: float) -> dict[str, Any]:
    """Each worker runs complete flows on its own client until ``seconds`` have passed."""
    return await timed_loops([functools.partial(system.flow, c) for c in workers], seconds)


async def request_burst(workers: list[Any], tokens: list[str], seconds: float) -> dict[str, Any]:
    """Each worker sends authenticated MCP requests with its own token until ``seconds`` pass."""
    jobs = [
        functools.partial(systems.mcp_request, c, t) for c, t in zip(workers, tokens, strict=True)
    ]
    return await timed_loops(jobs, seconds)


def ratio_entry(
    num: str, den: str, words: tuple[str, str], value: float, per_round: list[float]
) -> dict[str, Any]:
    return {
        "numerator": num,
        "denominator": den,
        "numerator_words": words[0],
        "denominator_words": words[1],
        "value": value,
        "per_round_p10": benchlib.quantile(per_round, 0.1) if per_round else value,
        "per_round_p90": benchlib.quantile(per_round, 0.9) if per_round else value,
    }


def accumulate(slot: dict[str, Any], count: str, result: dict[str, Any], server_cpu: float) -> int:
    """Add one burst's ``result`` to a system's totals; returns how many it completed."""
    done = len(result["latencies"])
    slot["latencies"] += result["latencies"]
    slot["errors"] += result["errors"]
    slot["wall"] += result["wall"]
    slot[count] += done
    slot["server_cpu"] += server_cpu
    return done


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.systems.split(",") if n]
    servers = {name: Server(name, *split_name(name, args)) for name in names}
    try:
        await asyncio.gather(*(s.wait_ready() for s in servers.values()))
        flows = {
            name: systems.build(split_name(name, args)[0], base=servers[name].base)
            for name in names
        }
        clients: dict[str, list[Any]] = {}
        for name in names:
            if args.client == "httpx":
                limits = httpx.Limits(
                    max_connections=args.concurrency, max_keepalive_connections=args.concurrency
                )
                shared = systems.new_client(
                    base_url=servers[name].base, limits=limits, timeout=60.0
                )
                clients[name] = [shared] * args.concurrency
            else:
                clients[name] = [
                    systems.RawHttpClient(servers[name].base) for _ in range(args.concurrency)
                ]
        # Memory at equal work: each server's peak RSS after the same number of flows, one at a
        # time (the whole run's peak grows with the flows a server completed, since the memory
        # store keeps their records, and the fastest server completes the most).
        rss_after_flows: dict[str, int] = {}
        for name in names:
            for _ in range(args.rss_flows):
                await flows[name].flow(clients[name][0])
            rss_after_flows[name] = peak_rss_kib(servers[name].proc.pid)
        for name in names:  # warm-up: connections open, caches and code paths warm
            await burst(flows[name], clients[name], args.warmup)

        per_system: dict[str, dict[str, Any]] = {
            n: {
                "latencies": [],
                "errors": [],
                "wall": 0.0,
                "flows": 0,
                "server_cpu": 0.0,
                "client_cpu": 0.0,
            }
            for n in names
        }
        round_rates: list[dict[str, float]] = []
        started = time.perf_counter()
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            rates = {}
            for name in order:
                pid = servers[name].proc.pid
                cpu0, client_cpu0 = cpu_seconds(pid), time.process_time()
                result = await burst(flows[name], clients[name], args.burst)
                cpu1, client_cpu1 = cpu_seconds(pid), time.process_time()
                done = accumulate(per_system[name], "flows", result, cpu1 - cpu0)
                per_system[name]["client_cpu"] += client_cpu1 - client_cpu0
                rates[name] = done / result["wall"]
                rates["cpu_per_flow:" + name] = (cpu1 - cpu0) / max(1, done)
            round_rates.append(rates)
        # Authenticated MCP requests alone: each worker signs in once (not measured), then sends
        # requests with its token; the systems take turns burst by burst as above.
        tokens: dict[str, list[str]] = {}
        for name in names:
            tokens[name] = [
                (await flows[name].flow(client))["access_token"] for client in clients[name]
            ]
        per_request: dict[str, dict[str, Any]] = {
            n: {"latencies": [], "errors": [], "wall": 0.0, "requests": 0, "server_cpu": 0.0}
            for n in names
        }
        for name in names:  # warm-up
            await request_burst(clients[name], tokens[name], args.warmup)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                pid = servers[name].proc.pid
                cpu0 = cpu_seconds(pid)
                result = await request_burst(clients[name], tokens[name], args.burst)
                cpu1 = cpu_seconds(pid)
                done = accumulate(per_request[name], "requests", result, cpu1 - cpu0)
                round_rates[r]["cpu_per_request:" + name] = (cpu1 - cpu0) / max(1, done)
        elapsed = time.perf_counter() - started
        peak_rss = {name: peak_rss_kib(server.proc.pid) for name, server in servers.items()}
        for workers in clients.values():
            for client in set(workers):
                await client.aclose()
    finally:
        for server in servers.values():
            server.stop()

    floor = benchlib.floor_function()
    floor_us = []
    for _ in range(200):
        t0 = time.perf_counter_ns()
        floor()
        floor_us.append((time.perf_counter_ns() - t0) / 1000)
    floor_median = statistics.median(floor_us)
    measurements: dict[str, dict[str, Any]] = {}
    rows = []
    request_rows: list[list[str]] = []
    for name in names:
        slot = per_system[name]
        lat_us = [x * 1e6 for x in slot["latencies"]] or [float("nan")]
        rate = slot["flows"] / slot["wall"] if slot["wall"] else 0.0
        flows_done = slot["flows"] or float("nan")
        cpu_per_flow_us = slot["server_cpu"] / flows_done * 1e6
        client_cpu_per_flow_us = slot["client_cpu"] / flows_done * 1e6
        measurements[name] = {
            "description": f"{flows[name].description}: flow latency with {args.concurrency} "
            "concurrent flows over loopback HTTP",
            **benchlib.summarize_us(lat_us),
            "flows_per_s": rate,
            "server_cpu_us_per_flow": cpu_per_flow_us,
            "client_cpu_us_per_flow": client_cpu_per_flow_us,
            "http_stack": servers[name].stack,
            "mcp_requests": per_request[name]["requests"],
            "mcp_requests_per_s": per_request[name]["requests"] / per_request[name]["wall"]
            if per_request[name]["wall"]
            else 0.0,
            "mcp_request_median_us": statistics.median(per_request[name]["latencies"] or [0.0])
            * 1e6,
            "server_cpu_us_per_mcp_request": per_request[name]["server_cpu"]
            / (per_request[name]["requests"] or float("nan"))
            * 1e6,
            "mcp_request_errors": len(per_request[name]["errors"]),
            "server_peak_rss_kib": peak_rss[name],
            "server_peak_rss_kib_after_equal_flows": rss_after_flows[name],
            "errors": len(slot["errors"]),
            "error_examples": slot["errors"][:3],
        }
        rows.append(
            [
                f"`{name}`",
                servers[name].stack,
                f"**{rate:,.1f}**",
                f"{statistics.median(lat_us) / 1000:,.1f}",
                f"{benchlib.quantile(lat_us, 0.99) / 1000:,.1f}",
                f"{cpu_per_flow_us / 1000:,.2f}",
                f"{cpu_per_flow_us / floor_median:,.1f}x",
                f"{client_cpu_per_flow_us / 1000:,.2f}",
                f"{measurements[name]['server_peak_rss_kib_after_equal_flows'] / 1024:,.1f}",
                f"{measurements[name]['server_peak_rss_kib'] / 1024:,.1f}",
                str(slot["flows"]),
                str(len(slot["errors"])),
            ]
        )
        req = measurements[name]
        request_rows.append(
            [
                f"`{name}`",
                servers[name].stack,
                f"{req['mcp_requests_per_s']:,.1f}",
                f"{req['mcp_request_median_us'] / 1000:,.2f}",
                f"**{req['server_cpu_us_per_mcp_request']:,.1f}**",
                str(req["mcp_requests"]),
                str(req["mcp_request_errors"]),
            ]
        )

    def rate_ratio(
        num: str, den: str, target: float | None, words: tuple[str, str]
    ) -> dict[str, Any]:
        per_round = [m[num] / m[den] for m in round_rates if m.get(den) and num in m]
        value = measurements[num]["flows_per_s"] / measurements[den]["flows_per_s"]
        entry = ratio_entry(num, den, words, value, per_round)
        entry |= {
            "target": target,
            "quantity": "flows per second",
            "sentence": f"{words[0]} completes {value:.2f} times as many flows per second as "
            f"{words[1]} ({measurements[num]['flows_per_s']:,.1f} against "
            f"{measurements[den]['flows_per_s']:,.1f}, {args.concurrency} concurrent flows)",
        }
        if target is not None:
            entry["target_kind"] = "at_least"
            entry["pass"] = value >= target
            entry["sentence"] += (
                f"; the target of at least {target:g} times is {'met' if entry['pass'] else 'missed'}."
            )
        else:
            entry["sentence"] += "; there is no target for this ratio, it is shown for context."
        return entry

    ratios: dict[str, dict[str, Any]] = {}
    if "ours_memory" in names and "fastmcp_memory" in names:
        ratios["ours_memory_vs_fastmcp_memory_flows_per_s"] = rate_ratio(
            "ours_memory",
            "fastmcp_memory",
            5.0,
            ("Ours with the memory store", "fastmcp's OAuthProxy with its memory store"),
        )
    if "ours_memory" in names and "fastmcp_memory_reused" in names:
        ratios["ours_memory_vs_fastmcp_memory_reused_flows_per_s"] = rate_ratio(
            "ours_memory",
            "fastmcp_memory_reused",
            None,
            ("Ours with the memory store", "fastmcp with its upstream client reused"),
        )
    if "ours_memory" in names and "mcp_sdk" in names:
        ratios["ours_memory_vs_mcp_sdk_flows_per_s"] = rate_ratio(
            "ours_memory",
            "mcp_sdk",
            None,
            ("Ours with the memory store", "the mcp SDK with a trivial provider"),
        )

    def cpu_ratio(
        num: str, den: str, unit: str, target: float | None, words: tuple[str, str]
    ) -> dict[str, Any]:
        field = {"flow": "server_cpu_us_per_flow", "request": "server_cpu_us_per_mcp_request"}[unit]
        key = {"flow": "cpu_per_flow:", "request": "cpu_per_request:"}[unit]
        per_round = [
            m[key + num] / m[key + den] for m in round_rates if m.get(key + den) and key + num in m
        ]
        a, b = measurements[num][field], measurements[den][field]
        value = a / b
        what = "complete flow" if unit == "flow" else "authenticated MCP request"
        entry = ratio_entry(num, den, words, value, per_round)
        entry |= {
            "target": target,
            "quantity": f"server CPU per {unit}",
            "sentence": f"{words[0]} spends {value:.3f} times the server CPU of {words[1]} per "
            f"{what} over loopback ({a / 1000:,.2f} ms against {b / 1000:,.2f} ms)",
        }
        if target is not None:
            entry["pass"] = value <= target
            entry["sentence"] += (
                f"; the target of at most {target:g} times is {'met' if entry['pass'] else 'missed'}."
            )
        else:
            entry["sentence"] += "; there is no target for this ratio, it is shown for context."
        return entry

    # Every ours_* system against fastmcp as shipped (the targets: ours_memory on what
    # serve runs); ours_memory also against fastmcp on any other stack measured (context).
    pairs = [(n, "fastmcp_memory") for n in names if n.startswith("ours_")]
    if "ours_memory" in names:
        pairs += [
            ("ours_memory", f)
            for f in names
            if f.startswith("fastmcp_memory@") and f.split("@")[0] == "fastmcp_memory"
        ]
    for name, reference in pairs:
        if reference not in names:
            continue
        words = (
            f"Ours, `{name}` ({servers[name].stack})",
            f"fastmcp's OAuthProxy, `{reference}` ({servers[reference].stack})",
        )
        target = 0.05 if (name, reference) == ("ours_memory", "fastmcp_memory") else None
        for unit, suffix in (("flow", "flow"), ("request", "mcp_request")):
            ratios[f"{name}_vs_{reference}_server_cpu_per_{suffix}"] = cpu_ratio(
                name, reference, unit, target, words
            )

    # The HTTP stack's own floor per MCP request (no authorization in front of the endpoint): what
    # any application served on it pays, against fastmcp and under ours.
    if "http_floor" in names:
        floor_words = f"the bare MCP endpoint on ours' HTTP stack ({servers['http_floor'].stack})"
        if "fastmcp_memory" in names:
            ratios["http_floor_vs_fastmcp_memory_server_cpu_per_mcp_request"] = cpu_ratio(
                "http_floor",
                "fastmcp_memory",
                "request",
                None,
                (floor_words[0].upper() + floor_words[1:], "fastmcp's OAuthProxy"),
            )
        if "ours_memory" in names:
            ratios["ours_memory_vs_http_floor_server_cpu_per_mcp_request"] = cpu_ratio(
                "ours_memory", "http_floor", "request", None, ("Ours", floor_words)
            )

    for name, reference in pairs:
        if reference != "fastmcp_memory" or reference not in names:
            continue
        a = measurements[name]["server_peak_rss_kib_after_equal_flows"]
        b = measurements[reference]["server_peak_rss_kib_after_equal_flows"]
        if not (a and b):
            continue
        entry = ratio_entry(
            name,
            reference,
            (f"Ours, `{name}`", f"fastmcp's OAuthProxy, `{reference}`"),
            a / b,
            [],
        )
        target = 0.75 if name == "ours_memory" else None
        entry |= {
            "target": target,
            "quantity": "server peak RSS",
            "sentence": f"After {args.rss_flows} flows each, the server process of `{name}` "
            f"peaked at {a / b:.2f} times the resident memory of `{reference}`'s "
            f"({a / 1024:,.1f} MiB against {b / 1024:,.1f} MiB)",
        }
        if target is not None:
            entry["pass"] = a / b <= target
            entry["sentence"] += (
                f"; the target of at most {target:g} times is {'met' if entry['pass'] else 'missed'}."
            )
        else:
            entry["sentence"] += "; there is no target for this ratio, it is shown for context."
        ratios[f"{name}_vs_{reference}_server_peak_rss"] = entry

    report: dict[str, Any] = {
        "benchmark": "compare_loopback",
        "title": f"The complete flow over loopback HTTP, {args.concurrency} concurrent flows",
        "script": "benchmarks/compare_loopback.py" + (" --quick" if args.quick else ""),
        "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": args.rounds,
            "samples_per_round": f"one {args.burst:g} s burst of {args.concurrency} concurrent flows",
            "warmup": f"one {args.warmup:g} s burst per system",
            "interleaving": "systems take turns burst by burst, order rotated every round",
            "sampling": f"{args.rounds} rounds; in each, every system runs one {args.burst:g} s "
            f"burst of {args.concurrency} concurrent flows, in turn, order rotated every round; one "
            f"{args.warmup:g} s warm-up burst per system first",
            "seconds": round(elapsed, 1),
        },
        "notes": [
            "Servers: uvicorn (one worker, `lifespan=off`, no access log; the HTTP layer per system "
            "in the table) in a subprocess per "
            "system, on 127.0.0.1. Client: this process, "
            f"{args.concurrency} asyncio workers, each with its own keep-alive connection "
            f"({'a minimal HTTP/1.1 client' if args.client == 'raw' else 'one shared httpx client'}"
            "); client and server share the machine's "
            f"{os.cpu_count()} cores, so flows/s is a whole-machine figure. `server CPU ms/flow` "
            "is the server process's own CPU time divided by the flows it completed.",
            "Latency p50/p99 are over every flow of every burst. `server CPU / floor` is the "
            f"server's CPU time per flow as a multiple of the primitive floor of one flow "
            f"(core_flow.py, {floor_median:,.1f} µs here).",
            "HTTP stacks: `ours_memory` runs on what `oauthproxy serve` runs on this install "
            "(httptools and uvloop with the `fast` extra, h11 and asyncio without; each response "
            "in one socket write, `write_coalescing.py`); fastmcp and the mcp SDK run on plain "
            "uvicorn (h11, asyncio) as they ship, since neither depends on `uvicorn[standard]`. "
            "A `system@stack` row is that system on another stack in the same run: "
            "`ours_memory@uvicorn-h11` is the stack serve ran on before, "
            "`fastmcp_memory@uvicorn-httptools-uvloop` fastmcp on the fast stack, for context.",
            "Authenticated MCP requests: after the flow rounds each worker signs in once (not "
            "measured) and then sends `tools/list` requests with its bearer token back to back, "
            "in bursts taken in turn like the flows'; `server CPU µs/request` is the server "
            "process's CPU time over the requests it answered.",
            *_floor_notes(measurements),
        ],
        "measurements": measurements,
        "ratios": ratios,
        "tables": [
            {
                "title": "Throughput and latency",
                "columns": [
                    "system",
                    "HTTP stack",
                    "flows/s",
                    "p50 ms",
                    "p99 ms",
                    "server CPU ms/flow",
                    "server CPU / floor",
                    "client CPU ms/flow",
                    f"server peak RSS MiB after {args.rss_flows} flows",
                    "server peak RSS MiB, whole run",
                    "flows",
                    "errors",
                ],
                "rows": rows,
            },
            {
                "title": "Authenticated MCP requests (each worker signed in once, then requests "
                "back to back)",
                "columns": [
                    "system",
                    "HTTP stack",
                    "requests/s",
                    "p50 ms",
                    "server CPU µs/request",
                    "requests",
                    "errors",
                ],
                "rows": request_rows,
            },
        ],
    }
    print(
        f"{'system':<24}{'flows/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server cpu ms':>15}"
        f"{'client cpu ms':>15}{'errors':>8}"
    )
    for name, m in measurements.items():
        print(
            f"{name:<24}{m['flows_per_s']:>9.1f}{m['median_us'] / 1000:>9.1f}"
            f"{m['p99_us'] / 1000:>9.1f}{m['server_cpu_us_per_flow'] / 1000:>15.2f}"
            f"{m['client_cpu_us_per_flow'] / 1000:>15.2f}{m['errors']:>8}"
        )
    print(f"\n{'system':<40}{'stack':<26}{'req/s':>9}{'server cpu us/req':>19}{'errors':>8}")
    for name, m in measurements.items():
        print(
            f"{name:<40}{m['http_stack']:<26}{m['mcp_requests_per_s']:>9.1f}"
            f"{m['server_cpu_us_per_mcp_request']:>19.1f}{m['mcp_request_errors']:>8}"
        )
    for key, e in ratios.items():
        print(
            f"{key}: {e['value']:.3f}x (rounds {e['per_round_p10']:.3f}-{e['per_round_p90']:.3f})"
        )
    return report


def _floor_notes(m: dict[str, dict[str, Any]]) -> list[str]:
    """What the HTTP stack's own floor says about the per-request target, in this run's numbers."""
    needed = {"http_floor", "ours_memory", "fastmcp_memory"}
    if not needed <= m.keys():
        return []
    field = "server_cpu_us_per_mcp_request"
    floor, ours, fast = (m[n][field] for n in ("http_floor", "ours_memory", "fastmcp_memory"))
    return [
        "`http_floor` is the same MCP endpoint with nothing in front of it, on ours' HTTP stack: "
        "its `flows` are single MCP requests, so only its per-request figures mean anything. "
        f"That stack alone spends {floor:,.1f} µs of server CPU per MCP request, "
        f"{floor / fast:.3f} times fastmcp's {fast:,.1f} µs; ours spends {ours:,.1f} µs, so "
        f"authorization adds {ours - floor:,.1f} µs. A per-request target below "
        f"{floor / fast:.3f} times fastmcp cannot be met by any application served on this "
        "stack: it would need a cheaper HTTP server than uvicorn.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short bursts: a smoke test")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: one minimal keep-alive HTTP/1.1 connection per worker (default); httpx: one "
        "shared httpx.AsyncClient (its pool costs more client CPU than the servers spend)",
    )
    parser.add_argument(
        "--ours-stack",
        choices=STACKS,
        default="serve",
        help="HTTP layer under ours (default: what `oauthproxy serve` picks on this install)",
    )
    parser.add_argument(
        "--others-stack",
        choices=STACKS,
        default="uvicorn-h11",
        help="HTTP layer under fastmcp and the mcp SDK (default: plain uvicorn, as they ship)",
    )
    parser.add_argument(
        "--rss-flows",
        type=int,
        default=150,
        help="flows each server runs, one at a time, before its peak RSS is read (equal work)",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rounds, args.burst, args.warmup = (1, 1.0, 0.5) if args.quick else (4, 2.5, 1.0)
    systems.fastmcp_home()
    report = asyncio.run(run(args))
    benchlib.write_result("compare_loopback", report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
