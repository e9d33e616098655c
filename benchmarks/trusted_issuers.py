"""Benchmark: a trusted issuer's token at the bearer check, beside the proxy's own (issue 16,
spec/security.md 37).

One in-process ``AsyncProxy`` (memory store) whose configuration trusts an identity provider held in
this process (an ES256 key; its JWK Set answered in process, no sockets), and a user signed in
through the testing kit's ``FakeProvider``:

``ours_cached`` / ``ours_uncached``
    ``AsyncProxy.verify("Bearer ...", ("mcp",))`` of the proxy's own access token, with the
    verified-token cache (the default) and with ``token_cache=False`` (ES256 signature and the two
    revocation look-ups every time).
``trusted_cached`` / ``trusted_uncached``
    The same for the identity provider's own ES256 access token (``[[trusted_issuers]]``): a cache
    hit checks the expiry, scopes and that the issuer is still configured; without the cache, every
    request reads the cached JWK Set from the store, picks the key and checks the signature and
    claims. No revocation look-up: such a token has no grant of ours.

A sample is a batch of calls; samples alternate between the variants, the order rotated every round.

Usage: ``python benchmarks/trusted_issuers.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import benchlib
from joserfc import jwt
from joserfc.jwk import ECKey

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_adapters.testing import proxy_config
from oauthproxy_adapters.testing.flow import adrive_httpx, asgi_client, login
from oauthproxy_adapters.testing.provider import FakeProvider, UpstreamUser
from oauthproxy_core import FetchDocument, HttpFailure, HttpResponse
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.issuers import TrustedIssuer

BASE = "http://127.0.0.1:8933"
IDP = "https://login.corp.example/"
IDP_JWKS = "https://login.corp.example/keys.json"
RATIOS = {
    "trusted_cached_vs_ours_cached": (
        "trusted_cached",
        "ours_cached",
        "A trusted issuer's token, cached",
        "the proxy's own token, cached",
    ),
    "trusted_uncached_vs_ours_uncached": (
        "trusted_uncached",
        "ours_uncached",
        "A trusted issuer's token, verified every time",
        "the proxy's own token, verified every time",
    ),
}
DESCRIPTIONS = {
    "ours_cached": "AsyncProxy.verify of our own token, verified-token cache (default), per call",
    "ours_uncached": "the same with token_cache=False: ES256 and both revocation look-ups",
    "trusted_cached": "AsyncProxy.verify of a trusted issuer's ES256 token, cache on, per call",
    "trusted_uncached": "the same with token_cache=False: JWK Set from the store, ES256, claims",
}


class Issuer:
    """The trusted identity provider: one ES256 key and its JWK Set, answered in process."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": "bench-1"})
        jwks = {"keys": [dict(self.key.as_dict(private=False))]}
        self.body = json.dumps(jwks).encode()

    async def fetch(self, doc: FetchDocument) -> HttpResponse | HttpFailure:
        if doc.url != IDP_JWKS:
            return HttpResponse(status=404)
        headers = (("Content-Type", "application/json"), ("Cache-Control", "max-age=3600"))
        return HttpResponse(status=200, headers=headers, body=self.body)

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": IDP,
            "sub": "alice",
            "aud": BASE + "/mcp",
            "client_id": "ci-job",
            "scope": "mcp",
            "iat": now,
            "exp": now + 7200,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": "ES256", "typ": "at+jwt", "kid": "bench-1"}
        return jwt.encode(header, claims, self.key)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    issuer = Issuer()
    provider = FakeProvider(
        redirect_uri=BASE + "/auth/callback", user=UpstreamUser(id=7, login="octocat")
    )
    big = 10**9
    config = proxy_config(
        BASE,
        provider,
        trusted_issuers=(
            TrustedIssuer(
                issuer=IDP,
                jwks_uri=IDP_JWKS,
                audience=BASE + "/mcp",
                subject_prefix="corp",
                algorithms=("ES256",),
            ),
        ),
        bounds=Bounds(
            registrations_per_address=big,
            registrations_total=big,
            authorizations_per_address=big,
            authorizations_per_client=big,
            authorizations_total=big,
        ),
    )
    keys = new_keyring()  # one keyring: our token verifies on both proxies

    def proxy(**options: Any) -> AsyncProxy:
        return AsyncProxy(
            config, keys, AsyncMemoryStore(), provider.async_http, fetch=issuer.fetch, **options
        )

    cached, uncached = proxy(), proxy(token_cache=False)
    async with asgi_client(OAuthProxyApp(cached), BASE) as client:
        session = await adrive_httpx(login(BASE, provider), client)
    ours = "Bearer " + session.tokens["access_token"]
    # The uncached proxy has a store of its own: its revocation look-ups find no marker, as they
    # would for any token not revoked (the common case).
    theirs = "Bearer " + issuer.token()
    for proxy, token in ((cached, ours), (cached, theirs), (uncached, ours), (uncached, theirs)):
        verdict = await proxy.verify(token, ("mcp",))
        if not isinstance(verdict, Principal):
            raise RuntimeError(f"the bench token was refused: {verdict}")
    batch = args.batch

    def timed(name: str, proxy: Any, token: str) -> benchlib.Sample:
        async def sample() -> dict[str, float]:
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                await proxy.verify(token, ("mcp",))
            return {name: (time.perf_counter_ns() - t0) / 1000 / batch}

        return sample

    benches = {
        "ours_cached": timed("ours_cached", cached, ours),
        "ours_uncached": timed("ours_uncached", uncached, ours),
        "trusted_cached": timed("trusted_cached", cached, theirs),
        "trusted_uncached": timed("trusted_uncached", uncached, theirs),
    }
    for _ in range(args.warmup):
        for bench in benches.values():
            await bench()
    started = time.perf_counter()
    samples, round_medians, rounds_run = await benchlib.interleave(
        benches, args.rounds, args.per_round, deadline_s=args.max_seconds
    )
    elapsed = time.perf_counter() - started
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
        "benchmark": "trusted_issuers",
        "title": "A trusted issuer's token at the bearer check, beside the proxy's own (issue 16)",
        "script": "benchmarks/trusted_issuers.py",
        "command": "sh .ci/dev bench --only trusted_issuers.py",
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds_run,
            "samples_per_round": args.per_round,
            "calls_per_sample": batch,
            "warmup": args.warmup,
            "interleaving": "variants interleaved sample by sample, order rotated per round",
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
    args.rounds, args.per_round, args.warmup, args.max_seconds, args.batch = (
        (3, 5, 3, 10.0, 10) if args.quick else (30, 20, 10, 40.0, 20)
    )
    report = asyncio.run(run(args))
    benchlib.write_result("trusted_issuers", report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
