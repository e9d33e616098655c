"""spec/security.md 24: no store, at any step, holds a plaintext code, token, client secret, upstream
token or PKCE verifier (spec/architecture.md, "Storage contract": keys of secrets are SHA-256 hashes,
upstream tokens are sealed under a key the store never sees).

A complete flow runs on each real store (memory, SQLite in a real file, Redis under a random key
prefix, PostgreSQL under a random table prefix) for two clients, one confidential
(``client_secret_post``) and one public: register, authorize, consent, upstream login, callback,
token, refresh, a second refresh, bearer use. The
store is dumped after every step (what an attacker who reads it at that moment sees); for SQLite the
raw bytes of the database file and its ``-wal`` (and ``-shm``) file are read as well, so rows that
were deleted or overwritten but still sit in a page are searched too; for PostgreSQL every row of
the table, expired ones included.

Every secret of the flow -- each code, access token, refresh token (whole, and its secret part after
the ``.``), client secret, the client's PKCE verifier, the proxy's own upstream verifier and upstream
``state`` (captured from the upstream authorize URL and the token request the upstream received) and
the upstream access token -- is searched for in every encoding an implementation might plausibly
write: raw, base64 (standard and URL-safe, padded and unpadded, at each of the three byte
alignments: the secret is encoded embedded at offsets 0, 1 and 2 and the inner substring that does
not depend on the neighbouring bytes is searched), hex (lower and upper case), URL percent-encoding
and JSON string escaping. A planted-secret test proves the detector finds each encoding.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import psycopg
import pytest

from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.stores.postgres import PostgresStore
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.redis_cluster import RedisClusterStore
from oauthproxy_adapters.stores.redis_sentinel import RedisSentinelStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_adapters.testing.flow import drive, exchange_code
from oauthproxy_core.handlers.bearer import Principal
from oauthproxy_core.resource_servers import ResourceServer
from tests.harness import (
    VERIFIER,
    Browser,
    Clock,
    Harness,
    UpstreamUser,
    consent_fields,
    make_config,
    redirect_params,
)

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
PUBLIC_VERIFIER = "public-client-verifier-" + "P" * 30 + "~._-0123456789"
MIN_NEEDLE = 8  # shorter inner substrings would match by chance


# -- the detector -----------------------------------------------------------------------------------


def _b64_inner(raw: bytes, offset: int, alphabet: str) -> bytes:
    """The part of base64(prefix + raw + suffix) fixed by ``raw`` alone, ``len(prefix) == offset``.

    Output character ``i`` covers bits ``[6i, 6i + 6)`` of the input; it depends only on ``raw``
    when that range lies inside ``raw``'s bits ``[8 * offset, 8 * (offset + len(raw)))``.
    """
    encode = base64.b64encode if alphabet == "std" else base64.urlsafe_b64encode
    encoded = encode(b"\x00" * offset + raw + b"\x00\x00")
    start = -(-8 * offset // 6)  # ceil
    end = (8 * (offset + len(raw))) // 6
    return encoded[start:end]


def encodings(secret: str) -> dict[str, bytes]:
    """Every encoding of ``secret`` searched for, by name."""
    raw = secret.encode()
    out: dict[str, bytes] = {"raw": raw}
    for alphabet in ("std", "urlsafe"):
        encode = base64.b64encode if alphabet == "std" else base64.urlsafe_b64encode
        out[f"base64-{alphabet}-padded"] = encode(raw)
        out[f"base64-{alphabet}-unpadded"] = encode(raw).rstrip(b"=")
        for offset in (0, 1, 2):
            out[f"base64-{alphabet}-offset{offset}"] = _b64_inner(raw, offset, alphabet)
    out["hex-lower"] = raw.hex().encode()
    out["hex-upper"] = raw.hex().upper().encode()
    out["percent"] = quote(secret, safe="").encode()
    out["percent-plus"] = quote_plus(secret).encode()
    out["percent-every-byte-upper"] = "".join(f"%{b:02X}" for b in raw).encode()
    out["percent-every-byte-lower"] = "".join(f"%{b:02x}" for b in raw).encode()
    out["json"] = json.dumps(secret)[1:-1].encode()
    out["json-escaped-slash"] = json.dumps(secret)[1:-1].replace("/", "\\/").encode()
    out["json-unicode-escapes"] = "".join(f"\\u{b:04x}" for b in raw).encode()
    for name, needle in out.items():
        assert len(needle) >= MIN_NEEDLE, (name, secret)
    return out


def find_leaks(secrets_: dict[str, str], haystacks: dict[str, bytes]) -> list[str]:
    """``"<secret> as <encoding> in <where>"`` for every secret found in any haystack."""
    leaks = []
    for label, secret in secrets_.items():
        for enc, needle in encodings(secret).items():
            for where, hay in haystacks.items():
                if needle in hay:
                    leaks.append(f"{label} ({secret!r}) as {enc} in {where}")
    return leaks


def dump_haystacks(store: Any, step: str) -> dict[str, bytes]:
    """One haystack per record: ``kind NUL key NUL value`` (each record searched on its own)."""
    return {
        f"{step}: record {kind}:{key}": kind.encode() + b"\x00" + key.encode() + b"\x00" + value
        for kind, key, value in store.dump()
    }


def sqlite_file_haystacks(path: str) -> dict[str, bytes]:
    out = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(path + suffix)
        if p.exists():
            out[f"raw file {p.name}"] = p.read_bytes()
    assert out.get("raw file " + Path(path).name), "the SQLite file is empty"
    return out


# -- the stores ---------------------------------------------------------------------------------------


def postgres_row_haystacks(store: PostgresStore) -> dict[str, bytes]:
    """Every row of the store's table, live or expired: what reading the table shows."""
    with psycopg.connect(POSTGRES_URL) as db:
        rows = db.execute(f'SELECT kind, key, value FROM "{store.prefix}records"').fetchall()
    assert rows, "the PostgreSQL table is empty"
    return {
        f"row {kind}:{bytes(key).decode()}": kind.encode()
        + b"\x00"
        + bytes(key)
        + b"\x00"
        + bytes(value)
        for kind, key, value in rows
    }


def redis_server_haystacks(servers: list[Any], prefix: str) -> dict[str, bytes]:
    """Every key under ``prefix`` on every server of a replicated deployment (primary and replica,
    or each Cluster node), name and raw value: what reading any one server shows."""
    out = {}
    for server in servers:
        with server.client() as c:
            for name in c.scan_iter(match=prefix + "*"):
                out[f"server {server.port} key {name!r}"] = name + b"\x00" + (c.get(name) or b"")
    assert out, "no server holds a key"
    return out


@pytest.fixture(params=["memory", "sqlite", "redis", "sentinel", "cluster", "postgres"])
def store_and_clock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Any, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield "memory", MemoryStore(clock=clock), clock
    elif request.param == "sqlite":
        store = SQLiteStore(str(tmp_path / "state.db"), clock=clock)
        yield "sqlite", store, clock
        store.close()
    elif request.param == "redis":
        store = RedisStore(REDIS_URL, prefix=f"oauthproxy-test-at-rest-{secrets.token_hex(8)}:")
        try:
            store.get("probe", "probe")
        except Exception as exc:
            pytest.fail(f"this test needs Redis at {REDIS_URL}: {exc}")
        yield "redis", store, clock
        store.clear()
        store.close()
    elif request.param in ("sentinel", "cluster"):
        topology = request.getfixturevalue(f"{request.param}_set")
        url = topology.url(f"at-rest-{secrets.token_hex(8)}:")
        replicated = (
            RedisSentinelStore(url) if request.param == "sentinel" else RedisClusterStore(url)
        )
        yield request.param, replicated, clock
        replicated.clear()
        replicated.close()
    elif request.param == "postgres":
        try:
            pg = PostgresStore(
                POSTGRES_URL,
                prefix=f"at_rest_{secrets.token_hex(8)}_",
                clock=clock,
                synchronous_commit="off",
            )
        except Exception as exc:
            pytest.fail(f"this test needs PostgreSQL at {POSTGRES_URL}: {exc}")
        yield "postgres", pg, clock
        pg.drop_tables()
        pg.close()


# -- the flow -----------------------------------------------------------------------------------------


class RecordingFlow:
    """Runs the flow step by step, dumping the store after every step and collecting every secret."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.secrets: dict[str, str] = {}
        self.haystacks: dict[str, bytes] = {}
        self.steps = 0
        self.public_marker = ""

    def snapshot(self, step: str) -> None:
        self.steps += 1
        self.haystacks.update(dump_haystacks(self.h.store, f"step {self.steps} ({step})"))

    def secret(self, label: str, value: str) -> None:
        assert value, label
        self.secrets[label] = value

    def token(self, who: str, data: dict[str, str]) -> dict[str, Any]:
        resp = self.h.token(data)
        assert resp.status == 200, resp.body
        body: dict[str, Any] = json.loads(resp.body)
        self.snapshot(f"{who} token {data['grant_type']}")
        return body

    def run(self, who: str, verifier: str, auth_method: str) -> None:
        h = self.h
        client = h.register(
            token_endpoint_auth_method=auth_method,
            redirect_uris=[f"http://127.0.0.1:33418/{who}"],
        )
        self.snapshot(f"{who} register")
        self.public_marker = client["client_id"]
        auth: dict[str, str] = {"client_id": client["client_id"]}
        if auth_method == "client_secret_post":
            self.secret(f"{who} client_secret", client["client_secret"])
            auth["client_secret"] = client["client_secret"]
        else:
            assert "client_secret" not in client
        self.secret(f"{who} client PKCE verifier", verifier)

        browser = Browser()
        resp = h.request("GET", h.authorize_url(client, verifier), browser=browser)
        assert resp.status == 302, resp.body
        self.snapshot(f"{who} authorize")
        consent_url = resp.header("location").removeprefix(h.config.issuer)
        page = h.request("GET", consent_url, browser=browser)
        assert page.status == 200, page.body
        self.snapshot(f"{who} consent page")
        resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
        assert resp.status == 303, resp.body
        self.snapshot(f"{who} consent approve")
        upstream_authorize = resp.header("location")
        self.secret(
            f"{who} upstream state", dict(parse_qsl(urlsplit(upstream_authorize).query))["state"]
        )

        calls_before = len(h.upstream.calls)
        tokens_before = set(h.upstream.tokens)
        callback = h.upstream.login(upstream_authorize, UpstreamUser(id=42, login="octocat"))
        resp = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)
        assert resp.status == 302, resp.body
        self.snapshot(f"{who} callback")
        token_calls = [
            dict(parse_qsl(c.body.decode()))
            for c in h.upstream.calls[calls_before:]
            if urlsplit(c.url).path == "/token"
        ]
        assert len(token_calls) == 1
        upstream_verifier = token_calls[0]["code_verifier"]
        assert upstream_verifier != verifier  # spec/security.md 7
        self.secret(f"{who} upstream PKCE verifier", upstream_verifier)
        (upstream_token,) = set(h.upstream.tokens) - tokens_before
        self.secret(f"{who} upstream access token", upstream_token)

        code = redirect_params(resp)["code"]
        self.secret(f"{who} code", code)
        first = self.token(
            who,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": verifier,
                "resource": h.config.resource,
                **auth,
            },
        )
        issued = [first]
        for _ in range(2):
            issued.append(
                self.token(
                    who,
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": issued[-1]["refresh_token"],
                        **auth,
                    },
                )
            )
        for n, body in enumerate(issued):
            self.secret(f"{who} access token #{n}", body["access_token"])
            refresh = body["refresh_token"]
            self.secret(f"{who} refresh token #{n}", refresh)
            _, dot, secret_part = refresh.partition(".")
            assert dot and secret_part, f"refresh token without a '.': {refresh!r}"
            self.secret(f"{who} refresh token #{n} secret part", secret_part)
        for body in issued[-1:]:
            assert isinstance(h.bearer(body["access_token"], ("mcp",)), Principal)
        self.snapshot(f"{who} bearer")


# -- the tests ------------------------------------------------------------------------------------------


def test_invariant_24_detector_finds_a_planted_secret_in_every_encoding() -> None:
    """The search below is only as good as this: each encoding, planted at each offset, is found."""
    secret = "gho_" + secrets.token_urlsafe(24)
    for enc, needle in encodings(secret).items():
        store = MemoryStore()
        store.put("x", "k", b'{"a":"' + needle + b'"}', 1, 60)
        assert find_leaks({"planted": secret}, dump_haystacks(store, "planted")), enc
    for offset in (0, 1, 2):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            for pad in (b"", b"z", b"zz", b"zzz"):
                blob = encode(os.urandom(offset) + secret.encode() + pad)
                assert find_leaks({"planted": secret}, {"blob": b"<" + blob + b">"}), (
                    offset,
                    encode,
                    pad,
                )
    assert not find_leaks({"planted": secret}, {"other": secrets.token_urlsafe(200).encode()})


def test_invariant_24_no_store_holds_a_plaintext_secret_at_any_step(
    store_and_clock: tuple[str, Any, Clock], request: pytest.FixtureRequest
) -> None:
    name, store, clock = store_and_clock
    h = Harness(store=store, clock=clock, seed=secrets.randbits(32))
    flow = RecordingFlow(h)
    flow.run("confidential", VERIFIER, "client_secret_post")
    flow.run("public", PUBLIC_VERIFIER, "none")

    kinds = {where.split(": record ", 1)[1].split(":", 1)[0] for where in flow.haystacks}
    assert {"client", "tx", "grant"} <= kinds, f"{name}: the dumps missed records: {kinds}"
    assert len(flow.secrets) == 15 + 14  # the public client has no secret

    haystacks = dict(flow.haystacks)
    if name == "sqlite":
        files = sqlite_file_haystacks(store.path)
        # The raw bytes are the records' bytes: a public value of the flow is found in them.
        assert any(flow.public_marker.encode() in raw for raw in files.values())
        haystacks.update(files)
    if name == "postgres":
        haystacks.update(postgres_row_haystacks(store))
    if name in ("sentinel", "cluster"):
        topology = request.getfixturevalue(f"{name}_set")
        # The replica too: every write waited for it, so it holds them all.
        servers = topology.servers if name == "sentinel" else topology.nodes
        haystacks.update(redis_server_haystacks(servers, store.prefix))
    leaks = find_leaks(flow.secrets, haystacks)
    assert not leaks, f"{name} store holds secrets in a readable form:\n" + "\n".join(leaks)


def test_invariants_24_40_an_upstream_session_leaves_nothing_readable(
    store_and_clock: tuple[str, Any, Clock],
) -> None:
    """With two resources, a sign-in keeps an upstream session and a second resource's code comes
    from it: no store holds the session's cookie, the provider's token, a code or a token readably."""
    name, store, clock = store_and_clock
    servers = [ResourceServer(path=p, name=p, scopes=("mcp",)) for p in ("/a", "/b")]
    h = Harness(make_config(resources=servers), store=store, clock=clock, seed=secrets.randbits(32))
    first, second = h.config.resource_urls
    found: dict[str, str] = {}
    browser = Browser()
    for n, resource in enumerate((first, second)):
        client = h.register(redirect_uris=[f"http://127.0.0.1:33418/{n}"])
        tokens_before = set(h.upstream.tokens)
        if n == 0:
            resp = h.run_to_callback(client, VERIFIER, browser, resource=resource)
            (found["upstream access token"],) = set(h.upstream.tokens) - tokens_before
        else:
            url = h.authorize_url(client, VERIFIER, resource=resource)
            consent = h.request("GET", url, browser=browser).header("location") or ""
            page = h.request("GET", consent.removeprefix(h.config.issuer), browser=browser)
            resp = h.form(
                "/consent", {**consent_fields(page), "decision": "approve"}, browser=browser
            )
            assert set(h.upstream.tokens) == tokens_before  # from the session, not the provider
        code = redirect_params(resp)["code"]
        found[f"code {n}"] = code
        steps = exchange_code(h.config.issuer, client, code, verifier=VERIFIER, resource=resource)
        body = drive(steps, h.sender())
        found[f"access token {n}"] = body["access_token"]
        found[f"refresh token {n}"] = body["refresh_token"].partition(".")[2]
    (found["session cookie"],) = [v for k, v in browser.cookies.items() if "session" in k]
    haystacks = dump_haystacks(h.store, "after both resources")
    kinds = {where.split(": record ", 1)[1].split(":", 1)[0] for where in haystacks}
    assert "usession" in kinds, f"{name}: the dump missed the session: {kinds}"
    if name == "sqlite":
        haystacks.update(sqlite_file_haystacks(store.path))
    if name == "postgres":
        haystacks.update(postgres_row_haystacks(store))
    leaks = find_leaks(found, haystacks)
    assert not leaks, f"{name} store holds secrets in a readable form:\n" + "\n".join(leaks)
