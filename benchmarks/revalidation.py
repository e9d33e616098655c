"""Benchmark: what re-validation at refresh costs (issue 15, spec/security.md 33).

One in-process ``AsyncProxy`` per variant, each in front of the testing kit's GitHub-shaped
``FakeProvider`` answering in process (no sockets: the figures are the proxy's CPU, not the
provider's latency, which in production dominates and is paid at most once per user per
``revalidate_after``), with a ``[access] github_orgs`` rule the user passes:

``refresh``
    ``POST /token`` with ``grant_type=refresh_token`` while ``revalidate_after`` has not passed
    (the common case: one rotation, no upstream call).
``refresh_revalidating``
    The same with ``revalidate_after = 0``, an OAuth App (no upstream refresh token): every refresh
    also takes the grant's hold, calls ``GET /user`` and ``GET /user/orgs`` and re-applies the rule.
``refresh_revalidating_app``
    The same for a GitHub App (expiring, rotating upstream tokens): an upstream refresh, then
    ``GET /user`` and ``GET /user/orgs``.

Each sample is one refresh (the refresh token of one sample is the next one's); samples alternate
between the variants, the order rotated every round.

Usage: ``python benchmarks/revalidation.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import benchlib
import httpx

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.testing import in_memory_proxy, proxy_config
from oauthproxy_adapters.testing.flow import adrive_httpx, asgi_client, login
from oauthproxy_adapters.testing.provider import FakeProvider, UpstreamUser
from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.config import Lifetimes

BASE = "http://127.0.0.1:8931"
USER = UpstreamUser(id=4242, login="octocat", orgs=("acme",))
RATIOS = {
    "refresh_revalidating_vs_refresh": (
        "refresh_revalidating",
        "refresh",
        "A refresh that re-validates (OAuth App: GET /user, GET /user/orgs)",
        "one that does not",
    ),
    "refresh_revalidating_app_vs_refresh": (
        "refresh_revalidating_app",
        "refresh",
        "A refresh that re-validates (GitHub App: upstream refresh, GET /user, GET /user/orgs)",
        "one that does not",
    ),
}
DESCRIPTIONS = {
    "refresh": "POST /token refresh_token, re-validation not due, per refresh",
    "refresh_revalidating": "the same with revalidate_after = 0, OAuth App upstream, per refresh",
    "refresh_revalidating_app": "the same with revalidate_after = 0, GitHub App upstream "
    "(upstream refresh token rotated), per refresh",
}


class Variant:
    """One proxy, one signed-in user, and the refresh token of the next sample."""

    def __init__(self, *, revalidate_after: int, app: bool) -> None:
        provider = FakeProvider(
            redirect_uri=BASE + "/auth/callback",
            user=USER,
            refresh_tokens=app,
        )
        big = 10**9
        config = proxy_config(
            BASE,
            provider,
            access=AccessPolicy(github_orgs=("acme",)),
            lifetimes=Lifetimes(revalidate_after=revalidate_after),
            bounds=Bounds(
                registrations_per_address=big,
                registrations_total=big,
                authorizations_per_address=big,
                authorizations_per_client=big,
                authorizations_total=big,
            ),
        )
        self.provider = provider
        self.proxy = in_memory_proxy(config, provider)
        self.app = OAuthProxyApp(self.proxy)
        self.client: httpx.AsyncClient | None = None
        self.session: Any = None

    async def start(self) -> None:
        self.client = asgi_client(self.app, BASE)
        self.session = await adrive_httpx(login(BASE, self.provider, USER), self.client)
        self.refresh_token = self.session.tokens["refresh_token"]

    async def refresh(self) -> None:
        assert self.client is not None
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token,
            "client_id": self.session.client["client_id"],
        }
        if "client_secret" in self.session.client:
            form["client_secret"] = self.session.client["client_secret"]
        resp = await self.client.post("/token", data=form)
        if resp.status_code != 200:
            raise RuntimeError(f"refresh failed: {resp.status_code} {resp.text}")
        self.refresh_token = resp.json()["refresh_token"]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = {
        "refresh": Variant(revalidate_after=30 * 24 * 3600, app=False),
        "refresh_revalidating": Variant(revalidate_after=0, app=False),
        "refresh_revalidating_app": Variant(revalidate_after=0, app=True),
    }
    for variant in variants.values():
        await variant.start()

    def timed(name: str, variant: Variant) -> benchlib.Sample:
        async def sample() -> dict[str, float]:
            t0 = time.perf_counter_ns()
            await variant.refresh()
            return {name: (time.perf_counter_ns() - t0) / 1000}

        return sample

    benches = {name: timed(name, v) for name, v in variants.items()}
    for _ in range(args.warmup):
        for bench in benches.values():
            await bench()
    started = time.perf_counter()
    samples, round_medians, rounds_run = await benchlib.interleave(
        benches, args.rounds, args.per_round, deadline_s=args.max_seconds
    )
    elapsed = time.perf_counter() - started
    for variant in variants.values():
        await variant.close()
    measurements = {
        name: {"description": DESCRIPTIONS[name], **benchlib.summarize_us(samples[name])}
        for name in benches
    }
    ratios = {
        key: benchlib.ratio_entry(num, den, measurements, round_medians, num_words=nw, den_words=dw)
        for key, (num, den, nw, dw) in RATIOS.items()
    }
    benchlib.print_table(measurements, ratios)
    return {
        "benchmark": "revalidation",
        "title": "Re-validation at refresh: its cost on the token endpoint (issue 15)",
        "script": "benchmarks/revalidation.py",
        "command": "sh .ci/dev bench --only revalidation.py",
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds_run,
            "samples_per_round": args.per_round,
            "warmup": args.warmup,
            "interleaving": "one refresh per sample, variants interleaved, order rotated per round",
            "seconds": round(elapsed, 1),
        },
        "measurements": measurements,
        "ratios": ratios,
        "drift": benchlib.drift(round_medians, list(benches)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rounds, args.per_round, args.warmup, args.max_seconds = (
        (3, 5, 5, 10.0) if args.quick else (30, 20, 20, 40.0)
    )
    report = asyncio.run(run(args))
    benchlib.write_result("revalidation", report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
