"""Benchmark: the client credentials token request beside the authorization-code one (issue 16, §1).

One in-process ``AsyncProxy`` (memory store, the testing kit's ``FakeProvider`` answering in process)
with three pre-registered clients, and ``POST /token`` timed alone, through the ASGI app:

``authorization_code``
    A confidential client (``client_secret_post``) redeems a fresh code with its PKCE verifier: the
    transaction's compare-and-set, a new refresh-token family stored, an access token and a refresh
    token minted. The sign-in that produced the code (authorize, consent, the provider's callback)
    runs before each sample and is not timed.
``client_credentials``
    A machine client (``client_secret_basic``) asks for a token: its family looked up (one index
    read, one grant read, the revocation markers), an access token minted. Nothing is written.
``client_credentials_jwt``
    The same with ``private_key_jwt`` (RFC 7523 §2.2): an ES256 assertion verified and its ``jti``
    recorded by compare-and-set. The assertion is signed before the sample and not timed (the
    client's work, not the proxy's).

Samples alternate between the variants, the order rotated every round.

Usage: ``python benchmarks/client_credentials.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import benchlib
import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.testing import in_memory_proxy, proxy_config
from oauthproxy_adapters.testing.flow import adrive_httpx, asgi_client, authorize, new_verifier
from oauthproxy_adapters.testing.provider import FakeProvider, UpstreamUser
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.client_auth import ASSERTION_TYPE
from oauthproxy_core.crypto import digest
from oauthproxy_core.records import Client

BASE = "http://127.0.0.1:8932"
USER = UpstreamUser(id=4242, login="octocat")
APP_SECRET = "app-secret-0123456789abcdef"
BOT_SECRET = "ci-bot-secret-0123456789abcdef"
KEY = ECKey.generate_key("P-256", parameters={"kid": "signer-1"})
REDIRECT = "http://127.0.0.1:9999/callback"
RATIOS = {
    "client_credentials_vs_authorization_code": (
        "client_credentials",
        "authorization_code",
        "A client credentials token request (secret)",
        "a code redemption",
    ),
    "client_credentials_jwt_vs_authorization_code": (
        "client_credentials_jwt",
        "authorization_code",
        "A client credentials token request (private_key_jwt)",
        "a code redemption",
    ),
}
DESCRIPTIONS = {
    "authorization_code": "POST /token authorization_code (client_secret_post, PKCE), per request",
    "client_credentials": "POST /token client_credentials (client_secret_basic), per request",
    "client_credentials_jwt": "POST /token client_credentials (private_key_jwt, ES256), "
    "per request",
}


def _clients() -> tuple[Client, ...]:
    jwks = {"keys": [dict(KEY.as_dict(private=False))]}
    common: dict[str, Any] = {"source": "static", "issued_at": 0}
    return (
        Client(
            client_id="app",
            secret_hash=digest(APP_SECRET),
            token_endpoint_auth_method="client_secret_post",
            redirect_uris=(REDIRECT,),
            grant_types=("authorization_code", "refresh_token"),
            application_type="native",
            **common,
        ),
        Client(
            client_id="ci-bot",
            secret_hash=digest(BOT_SECRET),
            token_endpoint_auth_method="client_secret_basic",
            redirect_uris=(),
            grant_types=("client_credentials",),
            subject="service:ci-bot",
            **common,
        ),
        Client(
            client_id="signer",
            token_endpoint_auth_method="private_key_jwt",
            redirect_uris=(),
            grant_types=("client_credentials",),
            subject="service:signer",
            metadata=(("jwks", json.dumps(jwks)),),
            **common,
        ),
    )


class Bench:
    def __init__(self) -> None:
        self.provider = FakeProvider(redirect_uri=BASE + "/auth/callback", user=USER)
        big = 10**9
        config = proxy_config(
            BASE,
            self.provider,
            static_clients=_clients(),
            bounds=Bounds(
                registrations_per_address=big,
                registrations_total=big,
                authorizations_per_address=big,
                authorizations_per_client=big,
                authorizations_total=big,
            ),
        )
        self.app = OAuthProxyApp(in_memory_proxy(config, self.provider))
        self.client: httpx.AsyncClient = asgi_client(self.app, BASE)
        self.basic = "Basic " + base64.b64encode(f"ci-bot:{BOT_SECRET}".encode()).decode()

    async def _post(self, form: dict[str, str], headers: dict[str, str] | None = None) -> float:
        t0 = time.perf_counter_ns()
        resp = await self.client.post("/token", data=form, headers=headers)
        elapsed = (time.perf_counter_ns() - t0) / 1000
        if resp.status_code != 200:
            raise RuntimeError(f"token request failed: {resp.status_code} {resp.text}")
        return elapsed

    async def authorization_code(self) -> dict[str, float]:
        verifier = new_verifier()
        app = {"client_id": "app", "redirect_uris": [REDIRECT]}
        found = await adrive_httpx(
            authorize(BASE, app, upstream=self.provider, user=USER, verifier=verifier),
            self.client,
        )
        form = {
            "grant_type": "authorization_code",
            "code": found["code"],
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "resource": BASE + "/mcp",
            "client_id": "app",
            "client_secret": APP_SECRET,
        }
        return {"authorization_code": await self._post(form)}

    async def client_credentials(self) -> dict[str, float]:
        form = {"grant_type": "client_credentials", "resource": BASE + "/mcp"}
        return {"client_credentials": await self._post(form, {"authorization": self.basic})}

    async def client_credentials_jwt(self) -> dict[str, float]:
        now = int(time.time())
        claims = {
            "iss": "signer",
            "sub": "signer",
            "aud": BASE,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        }
        assertion = jwt.encode({"alg": "ES256", "kid": "signer-1"}, claims, KEY)
        form = {
            "grant_type": "client_credentials",
            "resource": BASE + "/mcp",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return {"client_credentials_jwt": await self._post(form)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench()
    benches = {
        "authorization_code": bench.authorization_code,
        "client_credentials": bench.client_credentials,
        "client_credentials_jwt": bench.client_credentials_jwt,
    }
    for _ in range(args.warmup):
        for sample in benches.values():
            await sample()
    started = time.perf_counter()
    samples, round_medians, rounds_run = await benchlib.interleave(
        benches, args.rounds, args.per_round, deadline_s=args.max_seconds
    )
    elapsed = time.perf_counter() - started
    await bench.client.aclose()
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
        "benchmark": "client_credentials",
        "title": "The client credentials token request beside the authorization code one "
        "(issue 16)",
        "script": "benchmarks/client_credentials.py",
        "command": "sh .ci/dev bench --only client_credentials.py",
        "date": benchlib.now_iso(),
        "machine": benchlib.machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds_run,
            "samples_per_round": args.per_round,
            "warmup": args.warmup,
            "interleaving": "one token request per sample, variants interleaved, order rotated "
            "per round; the sign-in before a code redemption is not timed",
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
    benchlib.write_result("client_credentials", report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
