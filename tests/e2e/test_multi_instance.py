"""Two ``oauthproxy serve`` processes behind one logical issuer, sharing one store (spec/architecture.md,
"Storage contract": "a flow begun on one instance completes on another").

Setup, once per shared store (one Redis database, a Redis behind Sentinel and a Redis Cluster started
for the module on free loopback ports by ``tests/stores/redis_topologies.py``, one PostgreSQL
database, and separately one SQLite file):

- a GitHub-shaped upstream on loopback (the testing kit's ``FakeProvider`` in an ``AppThread``),
  whose one registered redirect URI is ``<base_url>/auth/callback``;
- two proxy processes started from the console script (``.venv/bin/oauthproxy serve --config``) by
  the kit's ``ServeProcess``, each listening on its own port, with the same ``base_url`` (the
  issuer, as a load balancer would publish it), the same keys file and the same store URL.

The client is the kit's flow (``oauthproxy_adapters.testing.flow``) with a load balancer as its
transport: every request it makes to the issuer goes to the next instance, round-robin, by rewriting
the ``host:port`` of the issuer-based URL to the instance chosen; cookies are kept by hand (one
browser, one jar). Tests:

- a complete flow whose register, authorize, consent, callback, token, bearer use and refresh land
  on alternating instances;
- spec/security.md 8 across processes: one code raced against both instances at once (two threads, one
  token request to each) is redeemed exactly once -- one 200, one 400 ``invalid_grant`` -- and the
  replay revokes what the winner got; five times.

Redis: the configuration file has no key-prefix setting, so the test uses a dedicated database
(``OAUTHPROXY_TEST_REDIS_DB_URL``, default ``redis://127.0.0.1:6379/5``), flushed before and after.
PostgreSQL: the tests' database (``OAUTHPROXY_TEST_POSTGRES_URL``, default ``oauthproxy_test`` on
127.0.0.1:5432, which ``sh .ci/dev test`` creates) under a fresh table prefix, created by the first
instance to start and dropped after; the password reaches both processes through ``[store]
password_env``, as a deployment would give it, not in the file.
Every process binds 127.0.0.1 and is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from oauthproxy_adapters.stores import open_store
from oauthproxy_adapters.testing import flow as kit
from oauthproxy_adapters.testing.flow import Call, Reply
from oauthproxy_adapters.testing.provider import FakeProvider, upstream_toml
from oauthproxy_adapters.testing.serve import (
    AppThread,
    ServeProcess,
    free_port,
    oauthproxy_command,
)
from tests.stores.redis_topologies import ClusterSet, SentinelSet

REDIS_DB_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_DB_URL", "redis://127.0.0.1:6379/5")
POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
PASSWORD_VARIABLE = "OAUTHPROXY_TEST_STORE_PASSWORD"
UPSTREAM_CLIENT_ID = "proxy-at-devprovider"
UPSTREAM_CLIENT_SECRET = "devprovider-secret-" + "s" * 24
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
RACES = 5
T = TypeVar("T")


# -- the upstream provider ---------------------------------------------------------------------------


class Upstream:
    """The kit's ``FakeProvider`` under uvicorn in a thread of this process."""

    def __init__(self, redirect_uri: str) -> None:
        self.redirect_uri = redirect_uri
        self.server = AppThread(self._build)
        self.base = self.server.base

    def _build(self, base: str) -> Any:
        self.provider = FakeProvider(
            redirect_uri=self.redirect_uri,
            base=base,
            client_id=UPSTREAM_CLIENT_ID,
            client_secret=UPSTREAM_CLIENT_SECRET,
        )
        return self.provider.app

    def stop(self) -> None:
        self.server.stop()


# -- the proxy processes -------------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    port: int,
    base_url: str,
    upstream: str,
    store_url: str,
    keys_file: Path,
    store_extra: str = "",
) -> Path:
    path.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base_url}"
mcp_path = "/mcp"
service_name = "multi-instance e2e"

{upstream_toml(upstream, client_id=UPSTREAM_CLIENT_ID, client_secret=UPSTREAM_CLIENT_SECRET)}
[store]
url = "{store_url}"
{store_extra}
[keys]
file = "{keys_file}"

[lifetimes]
# A revocation (a replayed code) is checked at the very next request on every instance; the
# default bound of 5 seconds is proved in tests/adapters/test_token_cache.py.
revocation_staleness = 0
"""
    )
    return path


def make_keys(path: Path) -> Path:
    done = subprocess.run(
        [*oauthproxy_command(), "keys", "new", "--out", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return path


# -- the client: one browser, one MCP client, a round-robin load balancer --------------------------


class Balancer:
    """Sends each issuer-based request to the next instance, round-robin; keeps the cookies."""

    def __init__(self, base_url: str, instances: list[ServeProcess]) -> None:
        self.base = urlsplit(base_url)
        self.instances = instances
        self.turn = 0
        self.cookies: dict[str, str] = {}
        self.http = httpx.Client(follow_redirects=False, timeout=15.0, trust_env=False)
        #: ``(instance name, method, path)`` of every request sent to an instance.
        self.log: list[tuple[str, str, str]] = []

    def close(self) -> None:
        self.http.close()

    def next_instance(self) -> ServeProcess:
        instance = self.instances[self.turn % len(self.instances)]
        self.turn += 1
        return instance

    def to(self, url: str, instance: ServeProcess) -> str:
        parts = urlsplit(url)
        assert parts.netloc == self.base.netloc, f"{url} is not on the issuer {self.base.netloc}"
        return urlunsplit((parts.scheme, instance.netloc, parts.path, parts.query, ""))

    def send(
        self,
        method: str,
        url: str,
        *,
        instance: ServeProcess | None = None,
        browser: bool = False,
        **kw: Any,
    ) -> httpx.Response:
        target = instance or self.next_instance()
        headers = dict(kw.pop("headers", {}))
        if browser and self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        resp = self.http.request(method, self.to(url, target), headers=headers, **kw)
        self.log.append((target.name, method, urlsplit(url).path))
        if browser:
            for value in resp.headers.get_list("set-cookie"):
                name, _, rest = value.partition("=")
                if "max-age=0" in rest.lower().replace(" ", "").split(";"):
                    self.cookies.pop(name.strip(), None)  # the proxy clears a used binding cookie
                else:
                    self.cookies[name.strip()] = rest.split(";", 1)[0]
        return resp

    def issuer_url(self, path: str) -> str:
        return urlunsplit((self.base.scheme, self.base.netloc, path, "", ""))

    def sender(self, instance: ServeProcess | None = None) -> Callable[[Call], Reply]:
        """A ``send`` for the kit's flow steps: a request to the issuer goes to ``instance`` (or the
        next one), with the browser's cookies; one to anywhere else (the provider) goes straight
        there."""

        def send(call: Call) -> Reply:
            if urlsplit(call.url).netloc == self.base.netloc:
                resp = self.send(
                    call.method,
                    call.url,
                    instance=instance,
                    browser=True,
                    headers=dict(call.headers),
                    content=call.body or None,
                )
            else:
                resp = self.http.request(
                    call.method, call.url, headers=list(call.headers), content=call.body or None
                )
            return Reply(
                resp.status_code,
                tuple((k.lower(), v) for k, v in resp.headers.multi_items()),
                resp.content,
            )

        return send


def _check(resp: httpx.Response, status: int, where: str, instances: list[ServeProcess]) -> None:
    if resp.status_code != status:
        logs = "\n".join(f"== {p.name}\n{p.output()}" for p in instances)
        raise AssertionError(f"{where}: {resp.status_code} {resp.text[:500]}\n{logs}")


class Flow:
    """One authorization-code flow: the kit's steps, each call through the balancer (or a given
    instance); a failed step's message carries the instances' logs."""

    def __init__(self, lb: Balancer, upstream: Upstream) -> None:
        self.lb = lb
        self.upstream = upstream
        self.base = lb.issuer_url("")
        self.client: dict[str, Any] = {}
        self.verifier = kit.new_verifier()

    def run(self, step: kit.Flow[T], instance: ServeProcess | None = None) -> T:
        try:
            return kit.drive(step, self.lb.sender(instance))
        except kit.FlowError as exc:
            logs = "\n".join(f"== {p.name}\n{p.output()}" for p in self.lb.instances)
            raise AssertionError(f"{exc}\n{logs}") from None

    def ok(self, resp: httpx.Response, status: int, where: str) -> httpx.Response:
        _check(resp, status, where, self.lb.instances)
        return resp

    def register(self, instance: ServeProcess | None = None) -> dict[str, Any]:
        metadata = {"client_name": "e2e client", "token_endpoint_auth_method": "client_secret_post"}
        self.client = self.run(kit.register(self.base, metadata), instance)
        return self.client

    def authorize_and_consent(self, instance: ServeProcess | None = None) -> str:
        """authorize -> consent page -> approve; returns the upstream authorize URL."""
        state = "client-state-" + secrets.token_hex(4)
        fields = self.run(
            kit.open_consent(self.base, self.client, verifier=self.verifier, state=state), instance
        )
        reply = self.run(kit.approve(self.base, fields), instance)
        assert reply.status == 303, reply
        upstream_url = reply.header("location") or ""
        assert upstream_url.startswith(self.upstream.base + "/login/oauth/authorize?")
        return upstream_url

    def upstream_login(self, upstream_url: str) -> str:
        """The browser at the provider (not an instance): returns the callback URL it redirects to."""
        reply = self.run(kit.request("GET", upstream_url))
        assert reply.status == 302, reply
        callback = reply.header("location") or ""
        assert callback.startswith(self.lb.issuer_url("/auth/callback") + "?"), callback
        return callback

    def callback(self, callback: str, instance: ServeProcess | None = None) -> str:
        reply = self.run(kit.request("GET", callback), instance)
        params = kit.redirect_params(reply, CLIENT_REDIRECT)
        assert "error" not in params, params
        return params["code"]

    def code(self) -> str:
        return self.callback(self.upstream_login(self.authorize_and_consent()))

    def token_form(self, code: str) -> dict[str, str]:
        return {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": self.client["client_id"],
            "client_secret": self.client["client_secret"],
            "redirect_uri": CLIENT_REDIRECT,
            "code_verifier": self.verifier,
            "resource": self.lb.issuer_url("/mcp"),
        }

    def token(self, code: str, instance: ServeProcess | None = None) -> dict[str, Any]:
        return self.run(
            kit.exchange_code(self.base, self.client, code, verifier=self.verifier), instance
        )

    def refresh(self, refresh_token: str, instance: ServeProcess | None = None) -> httpx.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client["client_id"],
            "client_secret": self.client["client_secret"],
        }
        return self.lb.send("POST", self.lb.issuer_url("/token"), data=form, instance=instance)

    def bearer_status(self, access_token: str, instance: ServeProcess | None = None) -> int:
        """GET the protected MCP path: 404 = authenticated (no gateway configured), 401 = refused."""
        resp = self.lb.send(
            "GET",
            self.lb.issuer_url("/mcp"),
            headers={"authorization": f"Bearer {access_token}"},
            instance=instance,
        )
        assert resp.status_code in (401, 404), (resp.status_code, resp.text)
        return resp.status_code


# -- fixtures ------------------------------------------------------------------------------------------


class Cluster:
    def __init__(
        self, base_url: str, upstream: Upstream, instances: list[ServeProcess], store_url: str
    ) -> None:
        self.base_url = base_url
        self.store_url = store_url
        self.upstream = upstream
        self.instances = instances

    def balancer(self) -> Balancer:
        return Balancer(self.base_url, self.instances)


def _flush_redis_db() -> None:
    client = redis.Redis.from_url(REDIS_DB_URL, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"this test needs Redis at {REDIS_DB_URL}: {exc}")
    finally:
        client.close()


def _postgres_store(prefix: str) -> tuple[str, str, dict[str, str]]:
    """The store URL without its password, the ``[store]`` line naming the variable that holds it,
    and that variable for the processes' environment."""
    parts = urlsplit(POSTGRES_URL)
    password = parts.password
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    url = urlunsplit((parts.scheme, user + host, parts.path, f"prefix={prefix}", ""))
    if password is None:
        return url, "", {}
    return url, f'password_env = "{PASSWORD_VARIABLE}"', {PASSWORD_VARIABLE: password}


def _drop_postgres_tables(prefix: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        db.execute(f'DROP TABLE IF EXISTS "{prefix}records", "{prefix}schema_version"')


@pytest.fixture(
    scope="module", params=["redis", "redis_sentinel", "redis_cluster", "sqlite", "postgres"]
)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp(f"multi-{request.param}")
    # The issuer: one logical server (a load balancer's address; nothing listens there).
    base_url = f"http://127.0.0.1:{free_port()}"
    upstream = Upstream(base_url + "/auth/callback")
    store_extra, env = "", {}
    prefix = f"multi_{secrets.token_hex(6)}_"
    topology: SentinelSet | ClusterSet | None = None
    if request.param == "redis":
        _flush_redis_db()
        store_url = REDIS_DB_URL
    elif request.param == "postgres":
        store_url, store_extra, env = _postgres_store(prefix)
    elif request.param == "redis_sentinel":
        topology = SentinelSet(workdir / "sentinel").start()
        store_url = topology.url(prefix)
    elif request.param == "redis_cluster":
        topology = ClusterSet(workdir / "cluster").start()
        store_url = topology.url(prefix)
    else:
        store_url = f"sqlite:///{workdir / 'shared.db'}"
    keys_file = make_keys(workdir / "keys.json")
    instances = []
    try:
        for name in ("A", "B"):
            port = free_port()
            config = write_config(
                workdir / f"{name}.toml",
                port=port,
                base_url=base_url,
                upstream=upstream.base,
                store_url=store_url,
                keys_file=keys_file,
                store_extra=store_extra,
            )
            instances.append(ServeProcess(config, port, workdir, name))
        for instance in instances:
            instance.start(env)
        yield Cluster(base_url, upstream, instances, store_url)
    finally:
        for instance in instances:
            instance.stop()
        upstream.stop()
        if request.param == "redis":
            _flush_redis_db()
        if request.param == "postgres":
            _drop_postgres_tables(prefix)
        if topology is not None:
            topology.stop()


# -- the tests -----------------------------------------------------------------------------------------


def test_flow_across_alternating_instances_completes(cluster: Cluster) -> None:
    lb = cluster.balancer()
    try:
        flow = Flow(lb, cluster.upstream)
        flow.register()
        code = flow.code()
        tokens = flow.token(code)
        # Each of authorize, consent page, consent POST, callback and token went to the other
        # instance than the step before it.
        steps = [(name, path) for name, _method, path in lb.log]
        assert [p for _n, p in steps] == [
            "/register",
            "/authorize",
            "/consent",
            "/consent",
            "/auth/callback",
            "/token",
        ]
        names = [n for n, _p in steps]
        assert all(a != b for a, b in itertools.pairwise(names)), names

        # The access token is good on both instances (same keys, same store) ...
        a, b = cluster.instances
        assert flow.bearer_status(tokens["access_token"], a) == 404
        assert flow.bearer_status(tokens["access_token"], b) == 404
        # ... and the refresh rotation is shared: refresh on one, the successor on the other.
        first = flow.refresh(tokens["refresh_token"], a)
        _check(first, 200, "refresh on A", cluster.instances)
        second = flow.refresh(first.json()["refresh_token"], b)
        _check(second, 200, "refresh on B", cluster.instances)
        assert flow.bearer_status(second.json()["access_token"], a) == 404
        # The JWKS is the same document on both (one keys file).
        assert (
            lb.http.get(f"http://{a.netloc}/jwks.json").json()
            == lb.http.get(f"http://{b.netloc}/jwks.json").json()
        )
    finally:
        lb.close()


def race_token_requests(
    form: dict[str, str], *instances: ServeProcess
) -> dict[str, httpx.Response]:
    """POST the same token request to each instance at once (one thread each, behind a barrier)."""
    barrier = threading.Barrier(len(instances))
    results: dict[str, httpx.Response] = {}
    errors: list[BaseException] = []

    def redeem(instance: ServeProcess) -> None:
        try:
            with httpx.Client(timeout=15.0, trust_env=False) as http:
                http.get(f"http://{instance.netloc}/healthz")  # the connection is open
                barrier.wait(10)
                results[instance.name] = http.post(f"http://{instance.netloc}/token", data=form)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=redeem, args=(inst,)) for inst in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == len(instances)
    return results


def test_invariant_8_code_raced_against_both_instances_is_redeemed_once(cluster: Cluster) -> None:
    lb = cluster.balancer()
    try:
        flow = Flow(lb, cluster.upstream)
        flow.register()
        a, b = cluster.instances
        for race in range(RACES):
            code = flow.code()
            results = race_token_requests(flow.token_form(code), a, b)
            statuses = {name: r.status_code for name, r in results.items()}
            assert sorted(statuses.values()) == [200, 400], (
                f"race {race}: {statuses} {[r.text for r in results.values()]}"
            )
            winner = next(r for r in results.values() if r.status_code == 200)
            loser = next(r for r in results.values() if r.status_code == 400)
            assert loser.json()["error"] == "invalid_grant", loser.text
            # The replay revoked what the winner got (spec/security.md 8), on both instances.
            tokens = winner.json()
            assert flow.bearer_status(tokens["access_token"], a) == 401
            assert flow.bearer_status(tokens["access_token"], b) == 401
            again = flow.refresh(tokens["refresh_token"])
            assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    finally:
        lb.close()


def test_instances_share_nothing_but_the_store(cluster: Cluster) -> None:
    """Sanity for the setup: two processes, two ports, one issuer in both metadata documents."""
    a, b = cluster.instances
    assert a.proc is not None and b.proc is not None and a.proc.pid != b.proc.pid
    docs = [
        httpx.get(
            f"http://{i.netloc}/.well-known/oauth-authorization-server", timeout=5, trust_env=False
        ).json()
        for i in (a, b)
    ]
    assert docs[0]["issuer"] == docs[1]["issuer"] == cluster.base_url
    body = json.dumps(docs[0])
    assert a.netloc not in body and b.netloc not in body
    # A client registered on A is a record in the one shared store, and known to B.
    lb = cluster.balancer()
    try:
        flow = Flow(lb, cluster.upstream)
        flow.register(a)
        resp = flow.refresh("not-a-token", b)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant", resp.text
    finally:
        lb.close()
    if cluster.store_url.startswith(("redis+sentinel", "redis+cluster")):
        shared = open_store(cluster.store_url)
        try:
            assert shared.size() > 0  # type: ignore[attr-defined]
        finally:
            shared.close()
    elif cluster.store_url.startswith("redis"):
        client = redis.Redis.from_url(cluster.store_url)
        try:
            assert client.dbsize() > 0
        finally:
            client.close()
    elif cluster.store_url.startswith("postgresql"):
        prefix = cluster.store_url.rpartition("prefix=")[2]
        with psycopg.connect(POSTGRES_URL) as db:
            row = db.execute(f'SELECT count(*) FROM "{prefix}records"').fetchone()
        assert row is not None and row[0] > 0
        assert f":{urlsplit(POSTGRES_URL).password}@" not in cluster.store_url
    else:
        path = cluster.store_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT count(*) FROM records").fetchone()[0] > 0
