"""Benchmark: one complete OAuth flow through the sans-IO core, against the primitive floor.

Three pairs of measurements, taken in one process and interleaved sample by sample (A B C D A B C D
..., with the order rotated every round) so that drift (frequency scaling, a noisy neighbour, the
store growing) hits every measurement alike:

``flow``
    register (public client) -> authorize -> consent GET -> consent POST -> upstream login ->
    callback -> token -> bearer verification -> refresh -> revoke, through the sync driver
    (``oauthproxy_adapters.driver.run``) and a ``MemoryStore``, with ``os.urandom`` as the random
    source and ``int(time.time())`` as the clock. The scripted upstream and the browser below are
    deliberately minimal (constant upstream answers, no checks) so that almost all of the time is the
    core's.
``floor``
    The work no implementation of that flow can avoid, as one function: 12 random 256-bit secrets in
    base64url, their 12 SHA-256 digests, one ES256 JWT sign and one verify (joserfc, P-256 like the
    proxy), JSON encode + decode of the registration body and two token responses, and the query
    strings of four redirects.
``bearer`` / ``raw_verify``
    ``AuthorizationServer.verify_bearer`` driven by ``run`` against the MemoryStore (one revocation
    look-up included) vs one bare ``joserfc.jwt.decode`` of the same token with the public key.

Targets: flow/floor <= 3x, bearer/raw_verify <= 1.5x. Results go to ``benchmarks/results/core_flow.json``;
``benchmarks/render_readme.py`` turns them into ``benchmarks/README.md``.

Usage: ``python benchmarks/core_flow.py [--quick] [--profile]``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_core import (
    AuthorizationServer,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    ProxyConfig,
    Request,
    Response,
    UpstreamProfile,
)
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.handlers.bearer import Challenge, Principal

RESULTS = Path(__file__).resolve().parent / "results" / "core_flow.json"

ISSUER = "https://proxy.example"
IDP = "https://idp.example"
IDP_Q = quote(IDP, safe="")
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
REDIRECT_Q = quote(CLIENT_REDIRECT, safe="")
FORM = (("content-type", "application/x-www-form-urlencoded"),)
#: The consent form as a browser posts it from the proxy's own page (spec/security.md 31).
CONSENT_FORM = (*FORM, ("sec-fetch-site", "same-origin"), ("origin", "null"))
JSON_CT = (("content-type", "application/json"),)

# The MCP client's own PKCE pair, fixed: computing it is the client's work, not the proxy's.
CLIENT_VERIFIER = "benchmark-client-verifier-" + "x" * 40
CLIENT_CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(CLIENT_VERIFIER.encode()).digest())
    .rstrip(b"=")
    .decode()
)
REGISTRATION_BODY = json.dumps(
    {
        "redirect_uris": [CLIENT_REDIRECT],
        "client_name": "Benchmark Client",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    }
).encode()

TARGETS = {"flow_vs_floor": 3.0, "bearer_vs_raw_verify": 1.5}

#: The clock every sample is read with: wall time (``perf_counter_ns``) by default, or this thread's
#: CPU time (``--clock cpu``: ``thread_time_ns``), which time spent descheduled by other processes on
#: a shared machine does not inflate.
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}
CLOCK: Callable[[], int] = CLOCKS["wall"]


def now() -> int:
    return int(time.time())


# -- the world around the core: an upstream provider and a browser, both as small as possible ------


def _json_response(body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(
        status=200,
        headers=(("Content-Type", "application/json"),),
        body=json.dumps(body).encode(),
    )


class Upstream:
    """A GitHub-like provider that says yes to everything, with canned answers.

    ``login`` stands for the user signing in at the provider: it reads ``state`` from the authorize
    URL the proxy sent the browser to and returns the callback target. ``__call__`` serves the two
    back-channel calls the proxy makes (code exchange, user info) with fixed replies.
    """

    TOKEN = _json_response({"access_token": "gho_bench", "token_type": "bearer", "scope": "read"})
    USER = _json_response({"id": 42, "login": "octocat", "name": "Octocat"})
    MISSING = HttpResponse(status=404, headers=(), body=b"{}")

    def __init__(self, callback_path: str) -> None:
        self.callback_path = callback_path

    def login(self, authorize_url: str) -> str:
        state = dict(parse_qsl(urlsplit(authorize_url).query))["state"]
        return f"{self.callback_path}?code=up-code&state={state}&iss={IDP_Q}"

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        if req.url.endswith("/token"):
            return self.TOKEN
        if req.url.endswith("/user"):
            return self.USER
        return self.MISSING


class Browser:
    """Keeps the cookies the proxy sets and sends them back."""

    def __init__(self) -> None:
        self.jar: dict[str, str] = {}

    def headers(self) -> tuple[tuple[str, str], ...]:
        if not self.jar:
            return ()
        return (("cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items())),)

    def keep(self, resp: Response) -> None:
        for value in resp.header_values("set-cookie"):
            name, _, rest = value.partition("=")
            self.jar[name] = rest.split(";", 1)[0]


def hidden_field(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


class Proxy:
    """One proxy (core + sync driver + MemoryStore + upstream) and the flows a client runs on it."""

    def __init__(self) -> None:
        profile = UpstreamProfile(
            name="idp",
            authorize_url=IDP + "/authorize",
            token_url=IDP + "/token",
            userinfo_url=IDP + "/user",
            client_id="proxy-client",
            client_secret="upstream-client-secret",
            scopes=("read:user",),
            subject_field="id",
            issuer=IDP,
        )
        self.config = ProxyConfig(
            issuer=ISSUER,
            upstream=profile,
            # One client address registers thousands of times here: lift the abuse bounds.
            bounds=Bounds(
                registrations_per_address=10**9,
                registrations_total=10**9,
                authorizations_per_address=10**9,
                authorizations_per_client=10**9,
                authorizations_total=10**9,
            ),
            scopes_supported=("mcp", "offline_access"),
            default_scopes=("mcp",),
        )
        self.keys = new_keyring()
        self.server = AuthorizationServer(self.config, self.keys)
        self.store = MemoryStore()
        self.upstream = Upstream(urlsplit(self.config.callback_url).path)
        self.public_key = ECKey.import_key(self.keys.active_signing.as_dict(private=False))
        self.resource_q = quote(self.config.resource, safe="")
        #: Nanoseconds spent inside ``run`` (core + driver + store), in total and per endpoint.
        self.in_core_ns = 0
        #: When set, sees every effect the core yields (``effect_counts``); ``None`` while timing.
        self.observe: Callable[[Any, Any, float], None] | None = None
        self.endpoint = ""
        self.by_endpoint: dict[str, list[int]] = {}

    def _account(self, endpoint: str, elapsed: int) -> None:
        self.in_core_ns += elapsed
        slot = self.by_endpoint.setdefault(endpoint, [0, 0])
        slot[0] += elapsed
        slot[1] += 1

    def send(
        self,
        method: str,
        target: str,
        *,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
        browser: Browser | None = None,
    ) -> Response:
        path, _, query = target.partition("?")
        if browser is not None:
            headers = headers + browser.headers()
        req = Request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            remote_addr="127.0.0.1",
        )
        t0 = CLOCK()
        self.endpoint = f"{method} {path}"
        resp = run(
            self.server.handle(req, now=now(), random=os.urandom),
            self.store,
            self.upstream,
            self.observe,
        )
        self._account(f"{method} {path}", CLOCK() - t0)
        if browser is not None:
            browser.keep(resp)
        return resp

    def bearer(self, token: str) -> Principal | Challenge:
        t0 = CLOCK()
        gen = self.server.verify_bearer(
            "Bearer " + token, now=now(), random=os.urandom, required_scopes=("mcp",)
        )
        self.endpoint = "bearer"
        verdict = run(gen, self.store, observe=self.observe)
        self._account("bearer", CLOCK() - t0)
        return verdict

    def tokens(self) -> tuple[str, dict[str, Any]]:
        """register -> authorize -> consent -> upstream -> callback -> token; (client_id, tokens).

        The client's side is written with f-strings: every value it sends is base64url (unreserved)
        or quoted once in ``__init__``, so the stand-ins cost next to nothing.
        """
        resp = self.send("POST", "/register", body=REGISTRATION_BODY, headers=JSON_CT)
        assert resp.status == 201, resp.body
        client_id = json.loads(resp.body)["client_id"]
        browser = Browser()
        query = (
            f"response_type=code&client_id={client_id}&redirect_uri={REDIRECT_Q}"
            f"&state=client-state&code_challenge={CLIENT_CHALLENGE}&code_challenge_method=S256"
            f"&resource={self.resource_q}"
        )
        resp = self.send("GET", "/authorize?" + query, browser=browser)
        assert resp.status == 302, resp.body
        consent = (resp.header("location") or "").removeprefix(ISSUER)
        page = self.send("GET", consent, browser=browser)
        assert page.status == 200, page.body
        html = page.body.decode()
        form = f"txn={hidden_field(html, 'txn')}&csrf={hidden_field(html, 'csrf')}&decision=approve"
        resp = self.send(
            "POST", "/consent", body=form.encode(), headers=CONSENT_FORM, browser=browser
        )
        assert resp.status == 303, resp.body
        callback = self.upstream.login(resp.header("location") or "")
        resp = self.send("GET", callback, browser=browser)
        assert resp.status == 302, resp.body
        code = dict(parse_qsl(urlsplit(resp.header("location") or "").query))["code"]
        exchange = (
            f"grant_type=authorization_code&code={code}&client_id={client_id}"
            f"&redirect_uri={REDIRECT_Q}&code_verifier={CLIENT_VERIFIER}"
            f"&resource={self.resource_q}"
        )
        resp = self.send("POST", "/token", body=exchange.encode(), headers=FORM)
        assert resp.status == 200, resp.body
        return client_id, json.loads(resp.body)

    def flow(self) -> int:
        """The complete flow: ``tokens``, bearer verification, refresh, revocation.

        Returns the nanoseconds spent inside the driver (the core, the driver and the store).
        """
        start = self.in_core_ns
        client_id, tokens = self.tokens()
        assert isinstance(self.bearer(tokens["access_token"]), Principal)
        refresh = (
            f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}"
            f"&client_id={client_id}"
        )
        resp = self.send("POST", "/token", body=refresh.encode(), headers=FORM)
        assert resp.status == 200, resp.body
        revoke = f"token={json.loads(resp.body)['refresh_token']}&client_id={client_id}"
        resp = self.send("POST", "/revoke", body=revoke.encode(), headers=FORM)
        assert resp.status == 200, resp.body
        return self.in_core_ns - start


# -- the primitive floor ---------------------------------------------------------------------------


def make_floor(proxy: Proxy, signs: int = 1) -> Callable[[], None]:
    """The unavoidable primitives of one flow, as one call (``signs`` ES256 signatures)."""
    key = proxy.keys.active_signing
    public = proxy.public_key
    header = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid}
    resource = proxy.config.resource
    callback = proxy.config.callback_url

    def secret() -> str:
        return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")

    def floor() -> None:
        # client id, transaction id, browser cookie, upstream state, upstream verifier, code,
        # grant id, jti x2, refresh secret x2, and one to spare (the client secret's place).
        s = [secret() for _ in range(12)]
        for value in s:
            hashlib.sha256(value.encode()).hexdigest()
        t = now()
        claims = {
            "iss": ISSUER,
            "sub": "idp:42",
            "aud": resource,
            "client_id": s[0],
            "scope": "mcp",
            "iat": t,
            "exp": t + 3600,
            "jti": s[7],
            "gid": s[6],
        }
        token = ""
        for _ in range(signs):
            token = jwt.encode(header, claims, key)
        jwt.decode(token, public, algorithms=["ES256"])
        json.loads(REGISTRATION_BODY)
        json.dumps({"client_id": s[0], "redirect_uris": [CLIENT_REDIRECT]})
        for refresh in (s[9], s[10]):
            body = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "mcp",
                "refresh_token": refresh,
            }
            json.loads(json.dumps(body))
        urlencode({"txn": s[1]})
        urlencode(
            {
                "response_type": "code",
                "client_id": "proxy-client",
                "redirect_uri": callback,
                "scope": "read:user",
                "state": s[3],
                "code_challenge": s[4],
                "code_challenge_method": "S256",
            }
        )
        urlencode({"code": "up-code", "state": s[3], "iss": IDP})
        urlencode({"code": s[5], "state": "client-state", "iss": ISSUER})

    return floor


# -- measurement -----------------------------------------------------------------------------------

Bench = Callable[[], int | None]


def summarize(samples_ns: list[int]) -> dict[str, float]:
    us = [s / 1000 for s in samples_ns]
    deciles = statistics.quantiles(us, n=10, method="inclusive")
    quartiles = statistics.quantiles(us, n=4, method="inclusive")
    return {
        "median_us": statistics.median(us),
        "p10_us": deciles[0],
        "p90_us": deciles[8],
        "q1_us": quartiles[0],
        "q3_us": quartiles[2],
        "n": len(us),
    }


def measure(
    benches: dict[str, Bench], rounds: int, per_round: int
) -> tuple[dict[str, list[int]], list[dict[str, float]]]:
    """Interleave the benches sample by sample, rotating their order every round.

    A bench that returns an int reports a time of its own (``flow`` returns the time spent inside
    the driver); it is kept as ``<name>_in_core`` next to the wall time of the call. Returns every
    sample and, per round, the median of each measurement (for per-round ratios).
    """
    samples: dict[str, list[int]] = {}
    round_medians: list[dict[str, float]] = []
    names = list(benches)
    clock = CLOCK
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round: dict[str, list[int]] = {}
        gc.collect()
        for _ in range(per_round):
            for name in order:
                fn = benches[name]
                t0 = clock()
                inner = fn()
                elapsed = clock() - t0
                this_round.setdefault(name, []).append(elapsed)
                if inner is not None:
                    this_round.setdefault(name + "_in_core", []).append(inner)
        for name, values in this_round.items():
            samples.setdefault(name, []).extend(values)
        round_medians.append({n: statistics.median(v) for n, v in this_round.items()})
    return samples, round_medians


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


#: Effect classes that are a round trip to the store.
STORE_EFFECTS = ("GetRecord", "PutRecord", "CompareAndSet", "TakeRecord", "DeleteRecord")


def effect_counts(proxy: Proxy) -> dict[str, dict[str, int]]:
    """The effects one flow yields, per endpoint and kind (store round trips, HTTP calls, events).

    Counted through the driver's ``observe`` hook on one untimed flow.
    """
    counts: dict[str, dict[str, int]] = {}

    def observe(effect: Any, _result: Any, _seconds: float) -> None:
        slot = counts.setdefault(proxy.endpoint, {})
        name = type(effect).__name__
        slot[name] = slot.get(name, 0) + 1

    proxy.observe = observe
    try:
        proxy.flow()
    finally:
        proxy.observe = None
    total: dict[str, int] = {}
    for slot in counts.values():
        slot["store round trips"] = sum(slot.get(k, 0) for k in STORE_EFFECTS)
        for name, n in slot.items():
            total[name] = total.get(name, 0) + n
    counts["whole flow"] = total
    return counts


def primitive_counts(proxy: Proxy) -> dict[str, int]:
    """How many of each primitive one flow performs, read from a profile of one flow.

    Calls made by this benchmark's stand-ins (client, browser, upstream) are not counted.
    """
    prof = cProfile.Profile()
    prof.runcall(proxy.flow)
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    me = __file__

    def is_(path_end: str, name: str) -> Callable[[str, str], bool]:
        end = path_end.replace("/", os.sep)
        return lambda f, n: f.endswith(end) and n == name

    wanted: dict[str, Callable[[str, str], bool]] = {
        "os.urandom": lambda f, n: "urandom" in n,
        "SHA-256": lambda f, n: "openssl_sha256" in n,
        "ES256 sign (jwt.encode)": is_("joserfc/jwt.py", "encode"),
        "ES256 verify (jwt.decode)": is_("joserfc/jwt.py", "decode"),
        "AES-GCM seal": is_("oauthproxy_core/crypto.py", "seal"),
        "AES-GCM unseal": is_("oauthproxy_core/crypto.py", "unseal"),
        "HMAC": is_("hmac.py", "new"),
        "json.dumps": is_("json/__init__.py", "dumps"),
        "json.loads": is_("json/__init__.py", "loads"),
        "urlencode": is_("urllib/parse.py", "urlencode"),
        "parse_qsl": is_("urllib/parse.py", "parse_qsl"),
    }
    counts = dict.fromkeys(wanted, 0)
    for (filename, _line, func), (_cc, _nc, _tt, _ct, callers) in stats.items():
        for label, match in wanted.items():
            if match(filename, func):
                counts[label] += sum(c[1] for k, c in callers.items() if k[0] != me)
    return counts


def profile_flows(proxy: Proxy, flows: int, top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """cProfile ``flows`` flows; the top entries by cumulative and by own time, per flow.

    The benchmark's own stand-ins are left out of the listing (their cost still shows in the
    cumulative time of the driver that calls the upstream stand-in, which is negligible).
    """
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(flows):
        proxy.flow()
    prof.disable()
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = [
        {
            "function": _where(filename, line, func),
            "calls_per_flow": nc / flows,
            "tottime_us_per_flow": tt / flows * 1e6,
            "cumtime_us_per_flow": ct / flows * 1e6,
        }
        # The benchmark's own stand-ins and clock reads (thread_time_ns is slow under cProfile).
        for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.items()
        if filename != __file__
        and "disable" not in func
        and "_time_ns" not in func
        and "perf_counter" not in func
    ]
    return {
        key: sorted(rows, key=lambda r: r[f"{key}_us_per_flow"], reverse=True)[:top]
        for key in ("cumtime", "tottime")
    }


def print_profile(profile: dict[str, list[dict[str, Any]]], flows: int) -> None:
    for key, rows in profile.items():
        print(f"\nprofile of {flows} flows, top {len(rows)} by {key} (µs per flow, profiled):")
        print(f"{'calls':>8}{'tottime':>10}{'cumtime':>10}  function")
        for r in rows:
            print(
                f"{r['calls_per_flow']:>8.1f}{r['tottime_us_per_flow']:>10.1f}"
                f"{r['cumtime_us_per_flow']:>10.1f}  {r['function']}"
            )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("oauthproxy", "joserfc", "cryptography", "attrs", "python-statemachine"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "?"
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "packages": versions,
    }


DESCRIPTIONS = {
    "flow_in_core": "complete flow, time inside the driver only (core + driver + MemoryStore), "
    "per flow",
    "flow": "complete flow, wall time including the client, browser and upstream stand-ins, "
    "per flow",
    "floor": "primitive floor of one flow: 12 secrets + 12 SHA-256, 1 ES256 sign + 1 verify, "
    "JSON of 3 messages, 4 query strings",
    "floor_2_signs": "the same floor with a second ES256 sign (the flow mints two access tokens)",
    "bearer": "verify_bearer through run() + MemoryStore, revocation look-up included, per call",
    "raw_verify": "joserfc jwt.decode of the same token with the public key, ES256, per call",
}

#: name: (numerator, denominator, target or None, plain-words numerator, plain-words denominator)
RATIOS: dict[str, tuple[str, str, float | None, str, str]] = {
    "flow_vs_floor": (
        "flow_in_core",
        "floor",
        3.0,
        "A complete flow through the core",
        "the cryptography, encoding and randomness no implementation can skip",
    ),
    "bearer_vs_raw_verify": (
        "bearer",
        "raw_verify",
        1.5,
        "Verifying a bearer token through the core (claims checks and a revocation look-up)",
        "a bare ES256 JWT signature check",
    ),
    "flow_vs_floor_2_signs": (
        "flow_in_core",
        "floor_2_signs",
        None,
        "A complete flow through the core",
        "that floor counted with both of the access-token signatures the flow makes",
    ),
    "flow_wall_vs_floor": (
        "flow",
        "floor",
        None,
        "The whole flow timed from outside (client, browser and upstream stand-ins included)",
        "the primitive floor",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of the flow even if targets pass"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time (steadier on a loaded machine)",
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--samples", type=int, help="override the samples per round")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    global CLOCK  # noqa: PLW0603 (one switch for the whole run, read in the hot loop)
    CLOCK = CLOCKS[args.clock]
    rounds, per_round, warmup = (4, 5, 10) if args.quick else (80, 120, 200)
    rounds, per_round = args.rounds or rounds, args.samples or per_round

    proxy = Proxy()
    _client, tokens = proxy.tokens()
    access = tokens["access_token"]
    assert isinstance(proxy.bearer(access), Principal)
    public = proxy.public_key

    def bearer() -> None:
        proxy.bearer(access)

    def raw_verify() -> None:
        jwt.decode(access, public, algorithms=["ES256"])

    floor, floor2 = make_floor(proxy), make_floor(proxy, signs=2)
    benches: dict[str, Bench] = {
        "flow": proxy.flow,
        "floor": floor,
        "floor_2_signs": floor2,
        "bearer": bearer,
        "raw_verify": raw_verify,
    }
    for _ in range(warmup):
        for fn in benches.values():
            fn()
    counts = primitive_counts(proxy)
    effects = effect_counts(proxy)

    proxy.by_endpoint.clear()
    started = time.perf_counter()
    samples, round_medians = measure(benches, rounds, per_round)
    elapsed = time.perf_counter() - started

    order = ["flow_in_core", "flow", "floor", "floor_2_signs", "bearer", "raw_verify"]
    results: dict[str, dict[str, Any]] = {
        n: {"description": DESCRIPTIONS[n], **summarize(samples[n])} for n in order
    }
    ratios: dict[str, dict[str, Any]] = {}
    for name, (num, den, target, num_words, den_words) in RATIOS.items():
        per_round_ratios = [m[num] / m[den] for m in round_medians]
        spread = statistics.quantiles(per_round_ratios, n=10, method="inclusive")
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
        ratios[name] = entry
    # Drift check: does a measurement get slower as the store fills up over the run?
    tenth = max(1, rounds // 10)
    drift = {
        name: statistics.median(m[name] for m in round_medians[-tenth:])
        / statistics.median(m[name] for m in round_medians[:tenth])
        for name in ("flow_in_core", "floor", "bearer", "raw_verify")
    }
    endpoints = {
        name: {"mean_us": total / count / 1000, "calls": count}
        for name, (total, count) in proxy.by_endpoint.items()
    }

    report: dict[str, Any] = {
        "benchmark": "core_flow",
        "title": "A complete OAuth flow through the sans-IO core",
        "script": "benchmarks/core_flow.py" + (" --quick" if args.quick else ""),
        "command": "sh .ci/dev bench" + (" --quick" if args.quick else ""),
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "machine": machine(),
        "settings": {
            "quick": args.quick,
            "rounds": rounds,
            "samples_per_round": per_round,
            "warmup": warmup,
            "interleaving": "sample by sample, order rotated every round",
            "clock": args.clock,
            "seconds": round(elapsed, 1),
            "flows_run": len(samples["flow"]),
            "drift_last_tenth_over_first_tenth": drift,
        },
        "measurements": results,
        "ratios": ratios,
        "endpoints_mean_us": endpoints,
        "flow_primitive_counts": counts,
        "flow_effect_counts": effects,
    }

    print(f"core_flow: {rounds} rounds x {per_round} samples, interleaved, {elapsed:.1f} s")
    print(f"{'measurement':<16}{'median µs':>12}{'p10':>10}{'p90':>10}")
    for name, r in results.items():
        print(f"{name:<16}{r['median_us']:>12.1f}{r['p10_us']:>10.1f}{r['p90_us']:>10.1f}")
    print(f"\n{'ratio':<24}{'value':>8}{'round p10':>11}{'round p90':>11}{'target':>9}  verdict")
    for name, e in ratios.items():
        target_text = f"<= {e['target']:g}x" if e["target"] is not None else "-"
        verdict = ("PASS" if e["pass"] else "MISS") if "pass" in e else "(info)"
        print(
            f"{name:<24}{e['value']:>7.2f}x{e['per_round_p10']:>10.2f}x"
            f"{e['per_round_p90']:>10.2f}x{target_text:>9}  {verdict}"
        )
    print(
        "\ndrift (median of the last tenth of rounds / the first tenth): "
        + ", ".join(f"{k} {v:.3f}" for k, v in drift.items())
    )
    print("\nmean µs per request inside the driver:")
    for name, e in sorted(endpoints.items(), key=lambda kv: -kv[1]["mean_us"]):
        print(f"  {name:<24}{e['mean_us']:>9.1f}")
    print("\neffects one flow yields, per endpoint (store round trips = get+put+cas+take+delete):")
    for name, slot in effects.items():
        print(f"  {name:<20}" + ", ".join(f"{k} {v}" for k, v in sorted(slot.items())))
    print("\nprimitives one flow performs (core and its libraries):")
    print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    if args.profile or any(e.get("pass") is False for e in ratios.values()):
        flows = 20 if args.quick else 300
        profile = profile_flows(proxy, flows)
        report["profile"] = {"flows": flows, **profile}
        print_profile(profile, flows)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
