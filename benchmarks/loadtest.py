"""Load and flood test of the standalone proxy: real ``oauthproxy serve`` processes on loopback.

What it starts (all on 127.0.0.1, each stopped by its own PID at the end):

- a GitHub-shaped upstream (``oauthproxy_adapters.devprovider.DevProvider`` under uvicorn) in its
  own process;
- one, then two ``oauthproxy serve`` processes sharing one store (an SQLite file, or with
  ``--store redis`` a private ``redis-server`` on a free port, ``--save "" --appendonly no``),
  the same keys file and the same issuer; the load generator plays a round-robin load balancer by
  sending each request to the next instance;
- the load generator: this process, asyncio and one pooled ``httpx.AsyncClient``.

Load phase, per instance count: ``--clients`` concurrent virtual users for ``--duration`` seconds,
after a short warm-up. Each user loops: a complete flow (register, authorize, consent page, consent
approval, the provider's redirect, callback, token, a protected request, refresh) followed by
``--uses`` token-protected requests. Any unexpected status or transport error is an error (target:
zero). Reported: flows/s and requests/s, p50/p99 of a whole flow and of a protected request, the
errors, the resident memory (VmRSS) of every proxy process after the warm-up and at the end (and
sampled in between), and the store's record counts by kind.

Flood phase (``--flood-seconds``, one instance, default ``[limits]``, a fresh store): a legitimate
user runs sequential flows (each from its own X-Forwarded-For address, trusted from loopback by
default) first alone, then while ``--flood-workers`` tasks send registrations from many addresses,
authorization requests from one address against the legitimate user's client, and authorization
requests from many addresses against the flooders' own clients. Reported: the legitimate flow's
median and p99 alone and during the flood, their ratio (the delay factor), the flood's answers by
status (target: no 5xx) and the store's record counts afterwards (bounded by ``[limits]``).

Results: ``benchmarks/results/reliability/<--name>.json`` (default ``loadtest``) and
``benchmarks/RELIABILITY.md``, generated from every file there (``--render`` regenerates the page
without running anything).

Usage::

    .venv/bin/python benchmarks/loadtest.py --clients 32 --duration 60 --instances 1,2
    .venv/bin/python benchmarks/loadtest.py --quick          # 8 clients x 10 s, short flood
    .venv/bin/python benchmarks/loadtest.py --name long-rss --clients 16 --duration 300 \
        --instances 1 --flood-seconds 0                      # resident memory until caches fill
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "reliability"
PAGE = HERE / "RELIABILITY.md"
UPSTREAM_CLIENT_ID = "proxy-at-devprovider"
UPSTREAM_CLIENT_SECRET = "devprovider-secret-" + "s" * 24
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
#: The consent form as a browser posts it from the proxy's own page (spec/security.md 31).
CONSENT_FORM = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
START_TIMEOUT = 30.0
BIG = 10**9


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bin_path(name: str) -> str:
    script = Path(sys.executable).parent / name
    if script.exists():
        return str(script)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} not found (pip install -e . / apt-get install)")
    return found


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: {what} exited at start (code {proc.returncode})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, trust_env=False).status_code < 500:
                return
        time.sleep(0.05)
    raise SystemExit(f"error: {what} did not start")


class Child:
    """A child process stopped by its own PID."""

    def __init__(self, argv: list[str], log: Path, *, cwd: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def rss_kib(self) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_upstream(work: Path, redirect_uri: str) -> tuple[Child, str]:
    port = free_port()
    code = (
        "import sys, uvicorn\n"
        "from oauthproxy_adapters.devprovider import DevProvider\n"
        f"p = DevProvider(client_id={UPSTREAM_CLIENT_ID!r}, client_secret={UPSTREAM_CLIENT_SECRET!r},"
        f" redirect_uri={redirect_uri!r})\n"
        f"uvicorn.run(p.app, host='127.0.0.1', port={port}, log_level='warning')\n"
    )
    child = Child(
        [sys.executable, "-c", code], work / "upstream.log", cwd=work, env=dict(os.environ)
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", child.proc, "upstream")
    return child, base


def start_redis(work: Path) -> tuple[Child, str]:
    port = free_port()
    argv = [bin_path("redis-server"), "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(work)]
    child = Child(argv, work / "redis.log", cwd=work, env=dict(os.environ))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return child, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise SystemExit("error: redis-server did not start")


def write_config(
    path: Path,
    *,
    port: int,
    base_url: str,
    upstream: str,
    store_url: str,
    keys: Path,
    limits: dict[str, int] | None,
) -> None:
    table = "".join(f"{k} = {v}\n" for k, v in (limits or {}).items())
    path.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base_url}"
mcp_path = "/mcp"

[upstream]
provider = "oauth2"
client_id = "{UPSTREAM_CLIENT_ID}"
client_secret = "{UPSTREAM_CLIENT_SECRET}"
authorize_url = "{upstream}/login/oauth/authorize"
token_url = "{upstream}/login/oauth/access_token"
userinfo_url = "{upstream}/user"
userinfo_subject_field = "id"
scopes = ["read:user"]
allow_insecure_http = true

[store]
url = "{store_url}"

[keys]
file = "{keys}"

[limits]
{table}"""
    )


def sqlite_records(path: Path) -> tuple[dict[str, int], int]:
    """Live records by kind in an SQLite store file, and the expired ones not yet purged."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        now = time.time()
        live = dict(
            db.execute(
                "SELECT kind, count(*) FROM records WHERE expires_at > ? GROUP BY kind", (now,)
            ).fetchall()
        )
        expired = db.execute(
            "SELECT count(*) FROM records WHERE expires_at <= ?", (now,)
        ).fetchone()[0]
    finally:
        db.close()
    return live, int(expired)


class Cluster:
    """The upstream, the store and ``instances`` proxies behind one issuer."""

    def __init__(self, work: Path, *, instances: int, store: str, limits: dict[str, int] | None):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.ports = [free_port() for _ in range(instances)]
        self.base = f"http://127.0.0.1:{self.ports[0]}"
        self.children: list[Child] = []
        self.proxies: list[Child] = []
        self.redis: Child | None = None
        self.db: Path | None = None
        upstream, self.upstream_base = start_upstream(work, self.base + "/auth/callback")
        self.children.append(upstream)
        if store == "redis":
            self.redis, store_url = start_redis(work)
            self.children.append(self.redis)
        else:
            self.db = work / "state.db"
            store_url = f"sqlite:///{self.db}"
        self.store_url = store_url
        keys = work / "keys.json"
        subprocess.run(
            [bin_path("oauthproxy"), "keys", "new", "--out", str(keys)],
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
        )
        env = {**os.environ, "OAUTHPROXY_DATA_DIR": str(work / "data")}
        for i, port in enumerate(self.ports):
            config = work / f"proxy{i}.toml"
            write_config(
                config,
                port=port,
                base_url=self.base,
                upstream=self.upstream_base,
                store_url=store_url,
                keys=keys,
                limits=limits,
            )
            argv = [bin_path("oauthproxy"), "serve", "--config", str(config)]
            child = Child(argv, work / f"proxy{i}.log", cwd=work, env=env)
            self.children.append(child)
            self.proxies.append(child)
            wait_http(f"http://127.0.0.1:{port}/healthz", child.proc, f"proxy {i}")

    def rss_kib(self) -> list[int]:
        return [p.rss_kib() for p in self.proxies]

    def records(self) -> dict[str, Any]:
        if self.db is not None:
            live, expired = sqlite_records(self.db)
            size = sum(f.stat().st_size for f in self.work.glob("state.db*") if f.is_file())
            return {"live": live, "expired_not_yet_purged": expired, "file_bytes": size}
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(self.store_url)
        try:
            live: dict[str, int] = {}
            for name in client.scan_iter(match="oauthproxy:*", count=1000):
                kind = name.decode().split(":")[1]
                live[kind] = live.get(kind, 0) + 1
            memory = int(client.info("memory")["used_memory"])
        finally:
            client.close()
        return {"live": live, "redis_used_memory_bytes": memory}

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


# -- the virtual users -------------------------------------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Unexpected(Exception):
    pass


class User:
    """One MCP client and its browser; requests go round-robin over the instances."""

    turn = 0

    def __init__(
        self, http: httpx.AsyncClient, base: str, ports: list[int], headers: dict[str, str]
    ) -> None:
        self.http = http
        self.base = base
        self.netloc = urlsplit(base).netloc
        self.ports = ports
        self.headers = headers
        self.cookies: dict[str, str] = {}
        self.client: dict[str, Any] = {}

    def _target(self, url: str) -> str:
        parts = urlsplit(url)
        port = self.ports[User.turn % len(self.ports)]
        User.turn += 1
        return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))

    async def send(
        self, method: str, url: str, status: int, *, browser: bool = False, **kw: Any
    ) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        if browser and self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        target = self._target(url) if urlsplit(url).netloc == self.netloc else url
        resp = await self.http.request(method, target, headers=headers, **kw)
        if browser:
            for value in resp.headers.get_list("set-cookie"):
                name, _, rest = value.partition("=")
                if "max-age=0" in rest.lower().replace(" ", "").split(";"):
                    self.cookies.pop(name.strip(), None)  # the proxy clears a used binding cookie
                else:
                    self.cookies[name.strip()] = rest.split(";", 1)[0]
        if resp.status_code != status:
            raise Unexpected(f"{method} {urlsplit(url).path}: {resp.status_code}")
        return resp

    async def register(self) -> None:
        body = {
            "redirect_uris": [CLIENT_REDIRECT],
            "client_name": "load client",
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"],
        }
        self.client = (await self.send("POST", self.base + "/register", 201, json=body)).json()

    async def flow(self) -> dict[str, Any]:
        """authorize ... token, one protected request, refresh; returns the refreshed tokens."""
        verifier, challenge = pkce()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client["client_id"],
                "redirect_uri": CLIENT_REDIRECT,
                "state": secrets.token_hex(4),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": self.base + "/mcp",
            }
        )
        resp = await self.send("GET", f"{self.base}/authorize?{query}", 302, browser=True)
        consent = resp.headers["location"]
        if "/consent?" not in consent:
            raise Unexpected(f"authorize: {consent[:80]}")
        page = await self.send("GET", consent, 200, browser=True)
        form = {**hidden_fields(page.text), "decision": "approve"}
        resp = await self.send(
            "POST", self.base + "/consent", 303, data=form, browser=True, headers=CONSENT_FORM
        )
        resp = await self.send("GET", resp.headers["location"], 302)  # the provider
        resp = await self.send("GET", resp.headers["location"], 302, browser=True)  # callback
        params = dict(parse_qsl(urlsplit(resp.headers["location"]).query))
        if "code" not in params:
            raise Unexpected(f"callback: {params.get('error')}")
        # A public client (a metadata-document client: benchmarks/abuse.py) sends no secret.
        secret = {k: v for k, v in self.client.items() if k == "client_secret"}
        token_form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "client_id": self.client["client_id"],
            **secret,
            "redirect_uri": CLIENT_REDIRECT,
            "code_verifier": verifier,
            "resource": self.base + "/mcp",
        }
        tokens = (await self.send("POST", self.base + "/token", 200, data=token_form)).json()
        await self.use(tokens["access_token"])
        refresh_form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": self.client["client_id"],
            **secret,
        }
        refreshed: dict[str, Any] = (
            await self.send("POST", self.base + "/token", 200, data=refresh_form)
        ).json()
        return refreshed

    async def use(self, access_token: str) -> None:
        # No gateway behind the proxy: an accepted token gets 404 from the proxy itself.
        auth = {"authorization": f"Bearer {access_token}"}
        await self.send("GET", self.base + "/mcp", 404, headers=auth)


def hidden_fields(html: str) -> dict[str, str]:
    out = {}
    for name in ("txn", "csrf"):
        marker = f'name="{name}" value="'
        start = html.index(marker) + len(marker)
        out[name] = html[start : html.index('"', start)]
    return out


def quantile(values: list[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def new_http(clients: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=clients * 4, max_keepalive_connections=clients * 4)
    return httpx.AsyncClient(timeout=30.0, trust_env=False, follow_redirects=False, limits=limits)


# -- load phase ----------------------------------------------------------------------------------------


async def load_phase(
    cluster: Cluster, *, clients: int, duration: float, warmup: float, uses: int
) -> dict[str, Any]:
    flows: list[float] = []
    requests: list[float] = []
    errors: dict[str, int] = {}
    counting = False
    stop_at = 0.0
    rss_samples: list[dict[str, Any]] = []

    async def user_loop(http: httpx.AsyncClient, index: int) -> None:
        while time.monotonic() < stop_at:
            user = User(http, cluster.base, cluster.ports, {"X-Forwarded-For": f"10.9.{index}.1"})
            started = time.perf_counter()
            try:
                await user.register()
                tokens = await user.flow()
                flow_s = time.perf_counter() - started
                use_times = []
                for _ in range(uses):
                    t0 = time.perf_counter()
                    await user.use(tokens["access_token"])
                    use_times.append(time.perf_counter() - t0)
            except (Unexpected, httpx.HTTPError) as exc:
                if counting:
                    key = str(exc) if isinstance(exc, Unexpected) else type(exc).__name__
                    errors[key] = errors.get(key, 0) + 1
                continue
            if counting and time.monotonic() < stop_at:
                flows.append(flow_s)
                requests.extend(use_times)

    async def sampler() -> None:
        start = time.monotonic()
        while time.monotonic() < stop_at:
            rss_samples.append(
                {"t": round(time.monotonic() - start, 1), "rss_kib": cluster.rss_kib()}
            )
            await asyncio.sleep(5)

    async with new_http(clients) as http:
        stop_at = time.monotonic() + warmup
        await asyncio.gather(*(user_loop(http, i) for i in range(clients)))
        rss_before = cluster.rss_kib()
        records_before = cluster.records()
        counting = True
        stop_at = time.monotonic() + duration
        started = time.perf_counter()
        await asyncio.gather(sampler(), *(user_loop(http, i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    rss_after = cluster.rss_kib()
    records_after = cluster.records()
    # Requests per flow: register, authorize, consent page, consent, provider, callback, token,
    # protected request, refresh; plus the protected requests after it.
    per_flow = 9 + uses
    return {
        "instances": len(cluster.ports),
        "clients": clients,
        "duration_s": round(elapsed, 2),
        "flows": len(flows),
        "flows_per_s": round(len(flows) / elapsed, 2),
        "requests_per_s": round(len(flows) * per_flow / elapsed, 1),
        "flow_p50_ms": round(quantile(flows, 0.5) * 1000, 1),
        "flow_p99_ms": round(quantile(flows, 0.99) * 1000, 1),
        "protected_request_p50_ms": round(quantile(requests, 0.5) * 1000, 2),
        "protected_request_p99_ms": round(quantile(requests, 0.99) * 1000, 2),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "rss_samples": rss_samples,
        "records_before": records_before,
        "records_after": records_after,
    }


# -- flood phase -----------------------------------------------------------------------------------


async def flood_phase(
    cluster: Cluster, *, seconds: float, workers: int, legit_flows: int
) -> dict[str, Any]:
    answers: dict[str, dict[str, int]] = {}
    stop = asyncio.Event()
    attacker_clients: list[str] = []

    def note(kind: str, status: str) -> None:
        bucket = answers.setdefault(kind, {})
        bucket[status] = bucket.get(status, 0) + 1

    failure_kinds: dict[str, int] = {}
    async with new_http(workers + 4) as http:
        # Two legitimate clients, registered before the flood (which uses up the registrations):
        # one for the flows alone, one for the flows during the flood -- the flood's one-address
        # part targets the second, so that its slots are shared with the attacker as they would be.
        legit_alone = User(http, cluster.base, cluster.ports, {"X-Forwarded-For": "203.0.113.1"})
        await legit_alone.register()
        legit_during = User(http, cluster.base, cluster.ports, {"X-Forwarded-For": "203.0.114.1"})
        await legit_during.register()
        victim = legit_during.client["client_id"]

        async def legit_series(user: User, n: int, tag: int) -> tuple[list[float], int]:
            times, failures = [], 0
            for i in range(n):
                # Each flow from its own address: one address may hold only a few pending ones.
                user.headers = {"X-Forwarded-For": f"203.0.{tag}.{i + 1}"}
                user.cookies = {}
                t0 = time.perf_counter()
                try:
                    tokens = await user.flow()
                    await user.use(tokens["access_token"])
                except (Unexpected, httpx.HTTPError) as exc:
                    failures += 1
                    key = str(exc) if isinstance(exc, Unexpected) else type(exc).__name__
                    failure_kinds[key] = failure_kinds.get(key, 0) + 1
                    continue
                times.append(time.perf_counter() - t0)
            return times, failures

        alone, alone_failures = await legit_series(legit_alone, legit_flows, 113)

        async def flooder(index: int) -> None:
            body = {"redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none"}
            n = 0
            while not stop.is_set():
                n += 1
                kind = ("register", "authorize_one_address", "authorize_many")[n % 3]
                if kind == "authorize_many" and not attacker_clients:
                    kind = "register"  # the flooders' own clients first
                many = {"X-Forwarded-For": f"198.{18 + index % 2}.{n // 250 % 250}.{n % 250 + 1}"}
                try:
                    if kind == "register":
                        resp = await http.post(cluster.base + "/register", json=body, headers=many)
                        if resp.status_code == 201 and len(attacker_clients) < 500:
                            attacker_clients.append(resp.json()["client_id"])
                    else:
                        client_id = (
                            victim
                            if kind == "authorize_one_address"
                            else attacker_clients[n % len(attacker_clients)]
                        )
                        headers = (
                            {"X-Forwarded-For": "192.0.2.66"}
                            if kind == "authorize_one_address"
                            else many
                        )
                        _v, challenge = pkce()
                        query = urlencode(
                            {
                                "response_type": "code",
                                "client_id": client_id,
                                "redirect_uri": CLIENT_REDIRECT,
                                "state": "x",
                                "code_challenge": challenge,
                                "code_challenge_method": "S256",
                            }
                        )
                        resp = await http.get(f"{cluster.base}/authorize?{query}", headers=headers)
                        if resp.status_code == 302:
                            location = resp.headers["location"]
                            error = dict(parse_qsl(urlsplit(location).query)).get("error")
                            note(kind, f"302 {error or 'consent'}")
                            continue
                    note(kind, str(resp.status_code))
                except httpx.HTTPError as exc:
                    note(kind, type(exc).__name__)

        async def legit_while_flooding() -> tuple[list[float], int]:
            await asyncio.sleep(1.0)  # let the flood build up
            result = await legit_series(legit_during, legit_flows, 114)
            return result

        flood_tasks = [asyncio.create_task(flooder(i)) for i in range(workers)]
        wall_start = time.time()
        started = time.perf_counter()
        try:
            during, during_failures = await legit_while_flooding()
            remaining = seconds - (time.perf_counter() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
        finally:
            stop.set()
            await asyncio.gather(*flood_tasks)
        flood_elapsed = time.perf_counter() - started
    total = sum(sum(v.values()) for v in answers.values())
    # Server errors and transport failures (a status that is not a number) both count as failures.
    five_xx = sum(
        n for v in answers.values() for s, n in v.items() if s.startswith("5") or s[0].isalpha()
    )
    alone_p50 = quantile(alone, 0.5)
    during_p50 = quantile(during, 0.5)
    return {
        "flood_seconds": round(flood_elapsed, 1),
        # Fixed-window counters restart at these boundaries (a flood across one gets a new window).
        "crossed_window_ends": [
            w for w in (600, 3600) if int(wall_start // w) != int((wall_start + flood_elapsed) // w)
        ],
        "flood_workers": workers,
        "flood_requests": total,
        "flood_requests_per_s": round(total / flood_elapsed, 1),
        "flood_answers": answers,
        "flood_5xx": five_xx,
        "legit_flows_alone": len(alone),
        "legit_failures_alone": alone_failures,
        "legit_p50_ms_alone": round(alone_p50 * 1000, 1),
        "legit_p99_ms_alone": round(quantile(alone, 0.99) * 1000, 1),
        "legit_flows_during": len(during),
        "legit_failures_during": during_failures,
        "legit_failure_kinds": failure_kinds,
        "legit_p50_ms_during": round(during_p50 * 1000, 1),
        "legit_p99_ms_during": round(quantile(during, 0.99) * 1000, 1),
        "delay_factor_p50": round(during_p50 / alone_p50, 2),
        "records_after": cluster.records(),
        "rss_kib_after": cluster.rss_kib(),
    }


# -- report --------------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def run_header(data: dict[str, Any], title: str) -> list[str]:
    """A result section's heading and where, when and how the run was made."""
    m = data["machine"]
    return [
        f"## {title}",
        "",
        f"- Result file: `benchmarks/results/reliability/{data['name']}.json`",
        f"- Command: `{data['command']}`",
        f"- Date: {data['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; {m['python']}",
    ]


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    out = [
        *run_header(data, f"Run `{data['name']}`"),
        "- Everything on 127.0.0.1 and on the same cores: the proxies, the upstream (the "
        "GitHub-shaped development provider, its own process), the store (an SQLite file, or a "
        "private redis-server) and the load generator (asyncio + httpx, this process). The "
        "figures are those of the whole machine saturated, not of the proxy alone.",
        f"- Each virtual user loops: one complete flow (register, authorize, consent page, consent, "
        f"provider redirect, callback, token, protected request, refresh), then {s['uses']} "
        "protected requests. Requests go round-robin over the instances, one by one. Warm-up: "
        f"{s['warmup_s']:.0f} s, not counted. An error is any unexpected status or transport "
        "failure.",
        "",
        "### Load",
        "",
        "| store | instances | clients | seconds | flows | flows/s | requests/s | flow p50 ms"
        " | flow p99 ms | protected p50 ms | protected p99 ms | errors | RSS after warm-up MiB"
        " | RSS at end MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in data["load"]:
        out.append(
            f"| {r['store']} | {r['instances']} | {r['clients']} | {r['duration_s']} | "
            f"{r['flows']} | **{r['flows_per_s']}** | {r['requests_per_s']} | "
            f"{r['flow_p50_ms']} | {r['flow_p99_ms']} | {r['protected_request_p50_ms']} | "
            f"{r['protected_request_p99_ms']} | **{r['errors']}** | "
            f"{' / '.join(mib(k) for k in r['rss_kib_before'])} | "
            f"{' / '.join(mib(k) for k in r['rss_kib_after'])} |"
        )
    out += ["", "Store records (live, by kind) after the warm-up and at the end of each run:", ""]
    for r in data["load"]:
        before, after = r["records_before"], r["records_after"]
        out.append(
            f"- {r['store']}, {r['instances']} instance(s): {fmt_records(before)} -> "
            f"{fmt_records(after)}"
        )
    out += ["", "RSS samples (MiB per instance, every 5 s):", ""]
    for r in data["load"]:
        series = ", ".join(
            f"{x['t']:.0f}s " + "/".join(mib(k) for k in x["rss_kib"]) for x in r["rss_samples"]
        )
        out.append(f"- {r['store']}, {r['instances']} instance(s): {series}")
    floods = data.get("flood") or []
    if floods:
        out += [
            "",
            "### Flood",
            "",
            "One instance, default `[limits]`, a fresh store. Flood tasks, each sending as fast as "
            "it is answered, rotate between registrations from many X-Forwarded-For addresses, "
            "authorization requests from one address against the legitimate user's client, and "
            "authorization requests from many addresses against the flooders' own clients. A "
            "legitimate user runs sequential complete flows (authorize to refresh, plus a "
            "protected request) alone, then during the flood, each from its own address. The "
            "bounds count in fixed windows aligned to the clock (600 s, the transaction lifetime, "
            "for authorizations; `registration_window`, an hour, for registrations): a flood that "
            "spans a window's end gets each bound again in the next window, so up to twice a "
            "bound around a boundary.",
            "",
            "| flood tasks | flood req/s | flood 5xx | legit flows alone / during | legit failures"
            " | legit p50 ms alone | legit p50 ms during | legit p99 ms alone | legit p99 ms during"
            " | delay factor (p50) |",
            "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for f in floods:
            out.append(
                f"| {f['flood_workers']} | {f['flood_requests_per_s']} | **{f['flood_5xx']}** | "
                f"{f['legit_flows_alone']} / {f['legit_flows_during']} | "
                f"**{f['legit_failures_alone'] + f['legit_failures_during']}** | "
                f"{f['legit_p50_ms_alone']} | {f['legit_p50_ms_during']} | "
                f"{f['legit_p99_ms_alone']} | {f['legit_p99_ms_during']} | "
                f"**{f['delay_factor_p50']}x** |"
            )
        out += [""]
        for f in floods:
            out += [
                f"- {f['flood_workers']} tasks, {f['flood_requests']} requests in "
                f"{f['flood_seconds']} s{crossed(f)}; answers by kind (`302 consent`: a transaction was "
                "created; `302 temporarily_unavailable`: the authorization bound): "
                f"`{json.dumps(f['flood_answers'])}`; store afterwards: "
                f"{fmt_records(f['records_after'])}; proxy RSS afterwards "
                f"{' / '.join(mib(k) for k in f['rss_kib_after'])} MiB; legitimate failures by "
                f"kind: `{json.dumps(f.get('legit_failure_kinds', {}))}`",
            ]
    return "\n".join(out) + "\n"


def render_page() -> str:
    """RELIABILITY.md from every result file in ``results/reliability/``."""
    runs = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("*.json"))]
    runs.sort(key=lambda data: data.get("benchmark") != "loadtest")  # load figures first
    out = [
        "# Reliability: load and flood figures",
        "",
        "<!-- Generated by benchmarks/loadtest.py and benchmarks/abuse.py from"
        " benchmarks/results/reliability/*.json. Do not edit by hand: rerun the scripts"
        " (`loadtest.py --render` regenerates it from the files). -->",
        "",
        "Written by `benchmarks/loadtest.py` and `benchmarks/abuse.py` (their docstrings say what "
        "they start and measure). Fault injection and abuse tests are in `tests/faults/`.",
        "",
    ]
    out += [
        render(data) if data.get("benchmark") == "loadtest" else _render_other(data)
        for data in runs
    ]
    out += ["## Expiry and reclaim", "", RECLAIM_NOTE, ""]
    return "\n".join(out)


def _render_other(data: dict[str, Any]) -> str:
    """A result file another reliability script wrote (``benchmarks/abuse.py``)."""
    import abuse  # noqa: PLC0415 (abuse.py imports this module)

    return abuse.render(data)


def crossed(flood: dict[str, Any]) -> str:
    ends = flood.get("crossed_window_ends")
    if not ends:
        return ""
    return " (crossed the end of a " + " and a ".join(f"{w} s" for w in ends) + " window)"


def fmt_records(r: dict[str, Any]) -> str:
    live = ", ".join(f"{k} {v}" for k, v in sorted(r.get("live", {}).items()))
    extra = []
    if "expired_not_yet_purged" in r:
        extra.append(f"expired not yet purged {r['expired_not_yet_purged']}")
        extra.append(f"files {r['file_bytes'] / 1e6:.1f} MB")
    if "redis_used_memory_bytes" in r:
        extra.append(f"Redis memory {r['redis_used_memory_bytes'] / 1e6:.1f} MB")
    return f"{live} ({'; '.join(extra)})"


RECLAIM_NOTE = """\
Every record has a TTL and no store ever returns an expired one; reclaiming the space is separate.
Redis expires keys itself (`SET ... EX`). The memory store drops expired entries on reads and up to
a batch per write. The SQLite store deletes expired rows in batches of at most 100
(`PURGE_BATCH`), one batch per 100 writes of a process (`PURGE_EVERY`; with the asyncio store the
batch runs on its worker pool and is skipped while the previous one still runs: in a side check,
2 000 writes over 5 000 expired rows reclaimed 1 200 of them). A flow makes about 15 writes and creates
about 6 rows, so reclaim outpaces creation in steady state; a mass expiry -- the per-client
authorization counters of every client at the end of a 600 s window, seen as "expired not yet
purged" in the long run -- drains over the next writes. The SQLite file does not shrink: freed
pages are reused. What a flow leaves behind is by design long-lived: the registered client (90
days), the grant (the refresh token's 30 days), the transaction and its code record (the
transaction lifetime, 10 minutes, kept so a replay is recognised) and the bound counters (their
window). The proxy processes' resident memory grows while its bounded caches fill (the
verified-token cache, 10 000 entries, two tokens per flow here; the codec's memo, 4 096 records) and
is flat afterwards: see the RSS samples of the long run."""


def machine() -> dict[str, Any]:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
    }


def write_outputs(data: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_file = RESULTS / f"{data['name']}.json"
    result_file.write_text(json.dumps(data, indent=2) + "\n")
    PAGE.write_text(render_page())
    print(f"wrote {result_file} and {PAGE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--instances", default="1,2", help="comma-separated instance counts")
    parser.add_argument("--store", default="sqlite", help="sqlite, redis or both: sqlite,redis")
    parser.add_argument("--uses", type=int, default=5, help="protected requests after each flow")
    parser.add_argument("--flood-seconds", type=float, default=30.0, help="0: no flood phase")
    parser.add_argument("--flood-workers", default="4,16", help="one flood per worker count")
    parser.add_argument("--legit-flows", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="8 clients x 10 s, a short flood")
    parser.add_argument("--no-load", action="store_true", help="only the flood phase")
    parser.add_argument("--render", action="store_true", help="only regenerate RELIABILITY.md")
    parser.add_argument(
        "--name", default="loadtest", help="result file results/reliability/NAME.json"
    )
    args = parser.parse_args(argv)
    if args.render:
        PAGE.write_text(render_page())
        print(f"wrote {PAGE}")
        return 0
    if args.quick:
        args.clients, args.duration, args.warmup = 8, 10.0, 2.0
        args.flood_seconds, args.legit_flows = 10.0, 5
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error("--name: letters, digits, - and _ only")
    counts = [int(x) for x in args.instances.split(",") if x.strip()]
    stores = [x.strip() for x in args.store.split(",") if x.strip()]
    flood_workers = [int(x) for x in args.flood_workers.split(",") if x.strip()]
    if not stores or any(x not in ("sqlite", "redis") for x in stores):
        parser.error("--store: sqlite, redis or sqlite,redis")
    if not 1 <= args.clients <= 256 or not 1 <= args.duration <= 600 or not counts:
        parser.error("clients must be 1..256, duration 1..600 s, at least one instance count")
    if any(not 1 <= c <= 4 for c in counts):
        parser.error("instances must be between 1 and 4")

    lifted = {
        "registrations_per_address": BIG,
        "registrations_total": BIG,
        "authorizations_per_address": BIG,
        "authorizations_per_client": BIG,
        "authorizations_total": BIG,
    }
    data: dict[str, Any] = {
        "benchmark": "loadtest",
        "name": args.name,
        "command": "python benchmarks/loadtest.py " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "clients": args.clients,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "instances": counts,
            "stores": stores,
            "uses": args.uses,
            "flood_seconds": args.flood_seconds,
            "flood_workers": flood_workers,
            "quick": args.quick,
        },
        "load": [],
        "flood": [],
    }
    with tempfile.TemporaryDirectory(prefix="oauthproxy-load-") as tmp:
        for store, n in [(store, n) for store in stores for n in counts if not args.no_load]:
            work = Path(tmp) / f"load-{store}-{n}"
            cluster = Cluster(work, instances=n, store=store, limits=lifted)
            try:
                print(f"load: {store}, {n} instance(s), {args.clients} clients")
                result = asyncio.run(
                    load_phase(
                        cluster,
                        clients=args.clients,
                        duration=args.duration,
                        warmup=args.warmup,
                        uses=args.uses,
                    )
                )
            finally:
                cluster.stop()
            result["store"] = store
            data["load"].append(result)
            print(
                f"  {result['flows']} flows, {result['flows_per_s']} flows/s, p50 "
                f"{result['flow_p50_ms']} ms, p99 {result['flow_p99_ms']} ms, errors "
                f"{result['errors']}, RSS {result['rss_kib_before']} -> {result['rss_kib_after']} KiB"
            )
        for workers in flood_workers if args.flood_seconds > 0 else []:
            work = Path(tmp) / f"flood-{workers}"
            cluster = Cluster(work, instances=1, store=stores[0], limits=None)
            try:
                print(f"flood: {stores[0]}, {workers} workers, {args.flood_seconds:.0f} s")
                flood = asyncio.run(
                    flood_phase(
                        cluster,
                        seconds=args.flood_seconds,
                        workers=workers,
                        legit_flows=args.legit_flows,
                    )
                )
            finally:
                cluster.stop()
            flood["store"] = stores[0]
            data["flood"].append(flood)
            print(
                f"  legitimate p50 {flood['legit_p50_ms_alone']} ms alone, "
                f"{flood['legit_p50_ms_during']} ms during ({flood['delay_factor_p50']}x); "
                f"flood 5xx {flood['flood_5xx']}"
            )
    write_outputs(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
