"""Shared pieces of the comparison benchmarks: interleaved sampling, summaries, ratios, the result
file in the shape ``render_readme.py`` reads, and a profile of our side when a target is missed."""

from __future__ import annotations

import cProfile
import datetime as dt
import gc
import json
import os
import platform
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PACKAGES = (
    "oauthproxy",
    "fastmcp",
    "mcp",
    "httpx",
    "httpx2",
    "starlette",
    "uvicorn",
    "joserfc",
    "cryptography",
    "py-key-value-aio",
    "redis",
    "pydantic",
)


def floor_function() -> Callable[[], None]:
    """The primitive floor of one flow, from ``core_flow.py`` (one ES256 sign and verify, ...)."""
    from core_flow import Proxy, make_floor  # noqa: PLC0415 (a sibling script)

    return make_floor(Proxy())


def machine(packages: tuple[str, ...] = PACKAGES) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in packages:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "packages": versions,
    }


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile, ``q`` in [0, 1]."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize_us(samples_us: list[float]) -> dict[str, Any]:
    return {
        "median_us": statistics.median(samples_us),
        "p10_us": quantile(samples_us, 0.10),
        "p90_us": quantile(samples_us, 0.90),
        "p99_us": quantile(samples_us, 0.99),
        "n": len(samples_us),
    }


Sample = Callable[[], Awaitable[dict[str, float]]]


async def interleave(
    benches: dict[str, Sample], rounds: int, per_round: int, *, deadline_s: float | None = None
) -> tuple[dict[str, list[float]], list[dict[str, float]], int]:
    """Run the benches sample by sample (A B C A B C ...), rotating the order every round.

    A bench returns ``{series: microseconds}`` for one sample (it may report several series, such as
    wall time and time inside the app). Returns every sample per series, the per-round medians (for
    per-round ratios) and the number of rounds actually run (``deadline_s`` stops early).
    """
    samples: dict[str, list[float]] = {}
    round_medians: list[dict[str, float]] = []
    names = list(benches)
    started = time.perf_counter()
    done = 0
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round: dict[str, list[float]] = {}
        gc.collect()
        for _ in range(per_round):
            for name in order:
                for series, value in (await benches[name]()).items():
                    this_round.setdefault(series, []).append(value)
        for series, values in this_round.items():
            samples.setdefault(series, []).extend(values)
        round_medians.append({s: statistics.median(v) for s, v in this_round.items()})
        done += 1
        if deadline_s is not None and time.perf_counter() - started > deadline_s:
            break
    return samples, round_medians, done


def ratio_entry(
    num: str,
    den: str,
    measurements: dict[str, Any],
    round_medians: list[dict[str, float]],
    *,
    target: float | None = None,
    at_least: bool = False,
    num_words: str = "",
    den_words: str = "",
    key: str = "median_us",
) -> dict[str, Any]:
    """``num / den`` of the medians; ``at_least``: the target is a minimum (a speed-up)."""
    per_round = [m[num] / m[den] for m in round_medians if num in m and den in m and m[den]]
    entry: dict[str, Any] = {
        "numerator": num,
        "denominator": den,
        "numerator_words": num_words or f"`{num}`",
        "denominator_words": den_words or f"`{den}`",
        "value": measurements[num][key] / measurements[den][key],
        "per_round_p10": quantile(per_round, 0.10) if per_round else float("nan"),
        "per_round_p90": quantile(per_round, 0.90) if per_round else float("nan"),
        "target": target,
    }
    if target is not None:
        entry["target_kind"] = "at_least" if at_least else "at_most"
        entry["pass"] = entry["value"] >= target if at_least else entry["value"] <= target
    return entry


def drift(round_medians: list[dict[str, float]], names: list[str]) -> dict[str, float]:
    tenth = max(1, len(round_medians) // 10)
    out = {}
    for name in names:
        first = [m[name] for m in round_medians[:tenth] if name in m]
        last = [m[name] for m in round_medians[-tenth:] if name in m]
        if first and last:
            out[name] = statistics.median(last) / statistics.median(first)
    return out


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def write_result(name: str, report: dict[str, Any], output: Path | None = None) -> Path:
    path = output or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return path


def print_table(measurements: dict[str, Any], ratios: dict[str, Any]) -> None:
    print(f"{'measurement':<34}{'median µs':>12}{'p10':>11}{'p90':>11}{'x floor':>9}")
    for name, r in measurements.items():
        xf = f"{r['x_floor']:.1f}" if "x_floor" in r else "-"
        print(f"{name:<34}{r['median_us']:>12.1f}{r['p10_us']:>11.1f}{r['p90_us']:>11.1f}{xf:>9}")
    print(f"\n{'ratio':<44}{'value':>9}{'round p10':>11}{'round p90':>11}{'target':>10}  verdict")
    for name, e in ratios.items():
        if e.get("target") is None:
            target, verdict = "-", "(info)"
        else:
            sign = ">=" if e.get("target_kind") == "at_least" else "<="
            target, verdict = f"{sign} {e['target']:g}x", "PASS" if e["pass"] else "MISS"
        print(
            f"{name:<44}{e['value']:>8.2f}x{e['per_round_p10']:>10.2f}x"
            f"{e['per_round_p90']:>10.2f}x{target:>10}  {verdict}"
        )


# -- profiling our side ----------------------------------------------------------------------------


def _where(filename: str, line: int, func: str) -> str:
    if filename == "~":
        return func
    path = filename.replace(os.sep, "/")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[1]
            break
    return f"{path}:{line}({func})"


def profile_rows(
    prof: cProfile.Profile, per: int, top: int = 20
) -> dict[str, list[dict[str, Any]]]:
    """Top functions by cumulative and own time, per unit (flow or call), benchmark files left out."""
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    here = str(HERE)
    rows = [
        {
            "function": _where(filename, line, func),
            "calls_per_unit": nc / per,
            "tottime_us_per_unit": tt / per * 1e6,
            "cumtime_us_per_unit": ct / per * 1e6,
        }
        for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.items()
        if not filename.startswith(here) and "disable" not in func and "run_until" not in func
    ]
    return {
        key: sorted(rows, key=lambda r: r[f"{key}_us_per_unit"], reverse=True)[:top]
        for key in ("cumtime", "tottime")
    }


def print_profile(profile: dict[str, list[dict[str, Any]]], per: int, unit: str) -> None:
    for key, rows in profile.items():
        print(f"\nprofile over {per} {unit}s, top {len(rows)} by {key} (µs per {unit}, profiled):")
        print(f"{'calls':>8}{'tottime':>10}{'cumtime':>10}  function")
        for r in rows:
            print(
                f"{r['calls_per_unit']:>8.1f}{r['tottime_us_per_unit']:>10.1f}"
                f"{r['cumtime_us_per_unit']:>10.1f}  {r['function']}"
            )
