"""Benchmark: validating a bearer token per request, ours vs fastmcp's OAuthProxy (issue 7).

Each system first runs one complete flow (``systems.py``) to obtain a real access token, then:

``ours_cached`` / ``ours_cached_lookups`` / ``ours_uncached``
    ``AsyncProxy.verify("Bearer ...", ("mcp",))`` with the verified-token cache (the default: a hit
    skips the signature check, and the revocation look-ups for ``[lifetimes] revocation_staleness``
    seconds after the last, 5 by default: spec/security.md 34); the same with
    ``revocation_staleness = 0`` (both revocation look-ups on every request: the cost of the
    revocation check on the bearer path); and with ``token_cache=False`` (ES256 signature check and
    look-ups every time), memory store.
``fastmcp``
    ``OAuthProxy.verify_token(token)`` (its ``load_access_token``: HS256 JWT check, two store look-ups
    in its memory store and the upstream-token verifier, here a dictionary look-up).
``mcp_sdk``
    The trivial provider's ``load_access_token`` (a dictionary look-up; context only).
``raw_es256_verify`` / ``fastmcp_raw_hs256_verify``
    One bare ``joserfc`` ES256 ``jwt.decode`` of our token with the public key, and fastmcp's own
    HS256 JWT check of its token (``JWTIssuer.verify_token``): the cryptographic floor of each.
``*_mcp_request``
    One authenticated MCP request through the whole ASGI app (a minimal in-process ASGI caller, so
    that the client costs next to nothing), for ours, fastmcp and the mcp SDK.

A sample is a batch of calls (timer overhead amortised); samples alternate between measurements,
order rotated every round.

Usage: ``python benchmarks/compare_bearer.py [--quick] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import systems
from joserfc import jwt
from joserfc.jwk import ECKey


def _uncached_note(m: dict[str, dict[str, Any]]) -> str:
    """Why `fastmcp_vs_ours_uncached` cannot reach its target, in this run's own numbers."""
    med = {name: entry["median_us"] for name, entry in m.items()}
    ours_extra = med["ours_uncached"] - med["raw_es256_verify"]
    theirs_extra = med["fastmcp"] - med["fastmcp_raw_hs256_verify"]
    return (
        "Without the cache the 10x target is out of reach for any ES256 verifier: the bare ES256 "
        f"check alone ({med['raw_es256_verify']:,.1f} µs) already takes "
        f"{med['raw_es256_verify'] / med['fastmcp']:.2f} times as long as fastmcp's whole HS256 "
        f"bearer check ({med['fastmcp']:,.1f} µs), and 10x would need "
        f"{med['fastmcp'] / 10:,.1f} µs per check, less than fastmcp's own bare HS256 check "
        f"({med['fastmcp_raw_hs256_verify']:,.1f} µs). Like for like, what each "
        f"adds beyond its own signature check: ours {ours_extra:,.1f} µs, fastmcp "
        f"{theirs_extra:,.1f} µs. The cache (the default) is the design answer: a token is "
        "signature-checked once (or not at all when this process issued it) and every request "
        "still gets the claims, scope and revocation checks."
    )


RATIOS: dict[str, tuple[str, str, float | None, bool, str, str]] = {
    "fastmcp_vs_ours_cached": (
        "fastmcp",
        "ours_cached",
        10.0,
        True,
        "fastmcp's bearer check (verify_token)",
        "ours with the verified-token cache (the default)",
    ),
    "fastmcp_vs_ours_uncached": (
        "fastmcp",
        "ours_uncached",
        10.0,
        True,
        "fastmcp's bearer check (verify_token)",
        "ours without the cache (an ES256 signature check every time)",
    ),
    "ours_cached_lookups_vs_ours_cached": (
        "ours_cached_lookups",
        "ours_cached",
        None,
        False,
        "Our cached bearer check with the revocation look-ups on every request",
        "with them at most every revocation_staleness seconds (the default)",
    ),
    "ours_cached_vs_raw_es256_verify": (
        "ours_cached",
        "raw_es256_verify",
        1.5,
        False,
        "Our bearer check with the cache",
        "one bare ES256 JWT verification",
    ),
    "ours_uncached_vs_raw_es256_verify": (
        "ours_uncached",
        "raw_es256_verify",
        1.5,
        False,
        "Our bearer check without the cache",
        "one bare ES256 JWT verification",
    ),
    "fastmcp_vs_fastmcp_raw_hs256_verify": (
        "fastmcp",
        "fastmcp_raw_hs256_verify",
        None,
        False,
        "fastmcp's bearer check",
        "its own bare HS256 JWT check",
    ),
    "fastmcp_mcp_request_vs_ours_mcp_request": (
        "fastmcp_mcp_request",
        "ours_mcp_request",
        None,
        True,
        "One authenticated MCP request through fastmcp's app",
        "the same through ours",
    ),
    "ours_mcp_request_vs_mcp_sdk_mcp_request": (
        "ours_mcp_request",
        "mcp_sdk_mcp_request",
        None,
        False,
        "One authenticated MCP request through our app",
        "the same through the mcp SDK's bearer middleware and trivial provider",
    ),
}

DESCRIPTIONS = {
    "ours_cached": "AsyncProxy.verify with the verified-token cache (default), memory store, per call",
    "ours_cached_lookups": "AsyncProxy.verify with the cache and revocation_staleness = 0 (two "
    "store look-ups every call), per call",
    "ours_uncached": "AsyncProxy.verify with token_cache=False (ES256 verify every call), per call",
    "fastmcp": "fastmcp OAuthProxy.verify_token (HS256 + JTI and upstream-token look-ups + "
    "StaticTokenVerifier), memory store, per call",
    "mcp_sdk": "mcp SDK trivial provider load_access_token (dictionary look-up), per call",
    "raw_es256_verify": "joserfc jwt.decode of our access token, ES256, per call",
    "fastmcp_raw_hs256_verify": "fastmcp JWTIssuer.verify_token of its access token, HS256, per call",
    "ours_mcp_request": "one authenticated MCP POST through OAuthProxyApp (direct ASGI call)",
    "fastmcp_mcp_request": "one authenticated MCP POST through fastmcp's auth middleware "
    "(direct ASGI call)",
    "mcp_sdk_mcp_request": "one authenticated MCP POST through the mcp SDK's bearer middleware "
    "(direct ASGI call)",
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from oauthproxy_core.handlers.bearer import Principal  # noqa: PLC0415

    ours = systems.build("ours_memory")
    uncached = systems.build_ours(
        "memory", store=ours.extra["store"], keys=ours.extra["keys"], token_cache=False
    )
    from oauthproxy_core.config import Lifetimes  # noqa: PLC0415

    looking = systems.build_ours(
        "memory",
        store=ours.extra["store"],
        keys=ours.extra["keys"],
        config=systems.ours_config(lifetimes=Lifetimes(revocation_staleness=0)),
    )
    fast = systems.build("fastmcp_memory")
    sdk = systems.build("mcp_sdk")
    tokens = {}
    for system in (ours, fast, sdk):
        async with systems.new_client(system.app) as client:
            tokens[system.name] = (await system.flow(client))["access_token"]
    ours_token, fast_token, sdk_token = (
        tokens["ours_memory"],
        tokens["fastmcp_memory"],
        tokens["mcp_sdk"],
    )
    proxy, proxy_nc = ours.extra["proxy"], uncached.extra["proxy"]
    proxy_lookups = looking.extra["proxy"]
    fproxy, provider = fast.extra["proxy"], sdk.extra["provider"]
    public = ECKey.import_key(ours.extra["keys"].active_signing.as_dict(private=False))
    header = "Bearer " + ours_token
    scopes = ("mcp",)
    assert isinstance(await proxy.verify(header, scopes), Principal)
    assert isinstance(await proxy_nc.verify(header, scopes), Principal)
    assert isinstance(await proxy_lookups.verify(header, scopes), Principal)
    assert await fproxy.verify_token(fast_token) is not None
    assert await provider.load_access_token(sdk_token) is not None
    clients = {
        "ours": (systems.DirectClient(ours.app), ours_token),
        "fastmcp": (systems.DirectClient(fast.app), fast_token),
        "mcp_sdk": (systems.DirectClient(sdk.app), sdk_token),
    }
    batch = args.batch

    def timed(name: str, body: Any) -> benchlib.Sample:
        async def sample() -> dict[str, float]:
            t0 = time.perf_counter_ns()
            await body()
            return {name: (time.perf_counter_ns() - t0) / 1000 / batch}

        return sample

    async def ours_cached() -> None:
        for _ in range(batch):
            await proxy.verify(header, scopes)

    async def ours_cached_lookups() -> None:
        for _ in range(batch):
            await proxy_lookups.verify(header, scopes)

    async def ours_uncached() -> None:
        for _ in range(batch):
            await proxy_nc.verify(header, scopes)

    async def fastmcp() -> None:
        for _ in range(batch):
            await fproxy.verify_token(fast_token)

    async def mcp_sdk() -> None:
        for _ in range(batch):
            await provider.load_access_token(sdk_token)

    async def raw_es256() -> None:
        for _ in range(batch):
            jwt.decode(ours_token, public, algorithms=["ES256"])

    issuer = fproxy.jwt_issuer

    async def raw_hs256() -> None:
        for _ in range(batch):
            issuer.verify_token(fast_token)

    def mcp_request(which: str) -> Any:
        client, token = clients[which]

        async def body() -> None:
            for _ in range(batch):
                await systems.mcp_request(client, token)  # type: ignore[arg-type]

        return body

    benches = {
        "ours_cached": timed("ours_cached", ours_cached),
        "ours_cached_lookups": timed("ours_cached_lookups", ours_cached_lookups),
        "ours_uncached": timed("ours_uncached", ours_uncached),
        "fastmcp": timed("fastmcp", fastmcp),
        "mcp_sdk": timed("mcp_sdk", mcp_sdk),
        "raw_es256_verify": timed("raw_es256_verify", raw_es256),
        "fastmcp_raw_hs256_verify": timed("fastmcp_raw_hs256_verify", raw_hs256),
        "ours_mcp_request": timed("ours_mcp_request", mcp_request("ours")),
        "fastmcp_mcp_request": timed("fastmcp_mcp_request", mcp_request("fastmcp")),
        "mcp_sdk_mcp_request": timed("mcp_sdk_mcp_request", mcp_request("mcp_sdk")),
    }
    for _ in range(args.warmup):
        for bench in benches.values():
            await bench()
    started = time.perf_counter()
    samples, round_medians, rounds_run = await benchlib.interleave(
        benches, args.rounds, args.per_round, deadline_s=args.max_seconds
    )
    elapsed = time.perf_counter() - started

    floor = benchlib.floor_function()
    floor_samples = []
    for _ in range(200 if not args.quick else 20):
        t0 = time.perf_counter_ns()
        floor()
        floor_samples.append((time.perf_counter_ns() - t0) / 1000)
    floor_median = statistics.median(floor_samples)

    measurements = {}
    for name in benches:
        summary = benchlib.summarize_us(samples[name])
        measurements[name] = {
            "description": DESCRIPTIONS[name],
            **summary,
            "x_floor": summary["median_us"] / floor_median,
        }
    ratios = {
        key: benchlib.ratio_entry(
            num,
            den,
            measurements,
            round_medians,
            target=target,
            at_least=at_least,
            num_words=nw,
            den_words=dw,
        )
        for key, (num, den, target, at_least, nw, dw) in RATIOS.items()
    }
    report: dict[str, Any] = {
        "benchmark": "compare_bearer",
        "title": "Bearer-token validation per request: ours vs fastmcp's OAuthProxy",
        "script": "benchmarks/compare_bearer.py" + (" --quick" if args.quick else ""),
        "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds_run,
            "samples_per_round": args.per_round,
            "warmup": args.warmup,
            "interleaving": f"sample by sample (one sample = {batch} calls), order rotated "
            "every round",
            "seconds": round(elapsed, 1),
            "drift_last_tenth_over_first_tenth": benchlib.drift(round_medians, list(benches)),
        },
        "notes": [
            "Every token comes from a complete flow through the system's own app. `x floor` is the "
            "multiple of the primitive floor of a whole flow (core_flow.py, "
            f"{floor_median:,.1f} µs here), for scale.",
            "fastmcp signs its tokens with HS256 (a shared secret), ours with ES256 (a public key "
            "anyone can verify), so its cryptographic floor is lower: see "
            "`fastmcp_raw_hs256_verify` against `raw_es256_verify`.",
            _uncached_note(measurements),
        ],
        "measurements": measurements,
        "ratios": ratios,
    }
    benchlib.print_table(measurements, ratios)
    if args.profile or any(e.get("pass") is False for e in ratios.values()):
        calls = 2000 if not args.quick else 200
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            await proxy_nc.verify(header, scopes)
        for _ in range(calls):
            await proxy.verify(header, scopes)
        prof.disable()
        profile = benchlib.profile_rows(prof, 2 * calls)
        report["profile"] = {
            "what": "ours_uncached then ours_cached",
            "calls": 2 * calls,
            **profile,
        }
        benchlib.print_profile(profile, 2 * calls, "call")
    for system in (ours, fast, sdk):
        await system.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--profile", action="store_true", help="profile ours even if targets pass")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rounds, args.per_round, args.warmup, args.batch, args.max_seconds = (
        (3, 3, 2, 20, 10.0) if args.quick else (30, 10, 5, 50, 25.0)
    )
    report = asyncio.run(run(args))
    benchlib.write_result("compare_bearer", report, args.output)
    return 0


if __name__ == "__main__":
    systems.fastmcp_home()
    sys.exit(main())
