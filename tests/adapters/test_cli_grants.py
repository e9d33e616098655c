"""``oauthproxy grants list`` and ``grants revoke`` (grants_admin.py) on real shared stores.

In process, on a real SQLite file and on the real Redis at ``OAUTHPROXY_TEST_REDIS_URL`` (a key
prefix of its own per test): grants are made by real flows (tests/adapters/flow.py) through a
``Proxy`` behind ``OAuthProxyWSGI`` (httpx's WSGI transport keeps the browser's cookies) on the store
the CLI's configuration file names, and a *second* ``Proxy`` on the same file or Redis plays another
instance. The CLI runs as ``cli.main`` on that configuration file. After ``revoke`` the grant's
refresh token gets ``invalid_grant`` and its access token is refused by the bearer check of both
instances (the one that issued it has it in its verified-token cache, which must not matter).

As processes: ``oauthproxy serve`` with a SQLite store and its gateway in front of a small MCP
server, a GitHub-shaped provider on loopback, and ``python -m oauthproxy_adapters grants ...``
against the same configuration file while the server runs: after the revoke, the MCP request with
the old access token is refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from oauthproxy_adapters import cli, grants_admin
from oauthproxy_adapters.app import write_keys_document
from oauthproxy_adapters.keygen import new_keyring_document
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_adapters.stores.base import StoreUnavailableError, SyncStore
from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_adapters.stores.redis import RedisStore
from oauthproxy_adapters.stores.sqlite import SQLiteStore
from oauthproxy_adapters.testing.flow import (
    Reply,
    authorize,
    drive,
    exchange_code,
    post_form,
    register,
)
from oauthproxy_adapters.testing.serve import AppThread, ServeProcess
from oauthproxy_adapters.wsgi import OAuthProxyWSGI
from oauthproxy_core import codec
from oauthproxy_core.crypto import digest
from oauthproxy_core.effects import Stored
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.keys import Keyring
from oauthproxy_core.records import Grant
from oauthproxy_core.upstream_session import ENDED_KIND
from tests.adapters.test_cli import run as run_cli
from tests.e2e.test_multi_instance import (
    Balancer,
    Flow,
    Upstream,
    free_port,
    make_keys,
    write_config,
)
from tests.harness import ScriptedUpstream, UpstreamUser, make_config

REDIS_URL = os.environ.get("OAUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: The issuer of the in-process proxies (no socket: httpx's WSGI transport routes by URL).
BASE = "http://127.0.0.1:8932"
ALICE = UpstreamUser(id=1001, login="alice")
BOB = UpstreamUser(id=1002, login="bob")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _not_found(_environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not here"]


@attrs.frozen
class Session:
    """One user's sign-in with one client: the grant it created and its tokens."""

    client: dict[str, Any]
    tokens: dict[str, Any]

    @property
    def grant_id(self) -> str:
        return str(self.tokens["refresh_token"]).split(".")[0]

    @property
    def access(self) -> str:
        return str(self.tokens["access_token"])


class Deployment:
    """A configuration file, its keyring and store, and any number of proxies sharing them."""

    def __init__(self, tmp_path: Path, store_url: str, open_store: Callable[[], SyncStore]) -> None:
        self.keys_file = tmp_path / "keys.json"
        document = new_keyring_document()
        write_keys_document(str(self.keys_file), document, overwrite=False)
        self.keyring = Keyring.from_dict(document)
        self.store_url = store_url
        self.open_store = open_store
        self.config = tmp_path / "proxy.toml"
        self.config.write_text(
            f"""
[server]
base_url = "{BASE}"

[upstream]
provider = "oauth2"
client_id = "proxy-client"
client_secret = "never-used-by-the-grants-commands"
authorize_url = "https://idp.example/authorize"
token_url = "https://idp.example/token"
userinfo_url = "https://idp.example/user"

[store]
url = "{store_url}"

[keys]
file = "{self.keys_file}"
"""
        )
        self.proxy_config = make_config(issuer=BASE)
        self.upstream = ScriptedUpstream(callback_url=self.proxy_config.callback_url)
        self._stores: list[SyncStore] = []
        self.store = self._open()

    def _open(self) -> SyncStore:
        store = self.open_store()
        self._stores.append(store)
        return store

    def proxy(self) -> Proxy:
        """Another instance: its own store connection, the same file or Redis."""
        return Proxy(self.proxy_config, self.keyring, self._open(), self.upstream)

    def close(self) -> None:
        for store in self._stores:
            store.close()

    @staticmethod
    def send(proxy: Proxy, browser: httpx.Client | None = None) -> Callable[[Any], Reply]:
        http = browser or httpx.Client(transport=httpx.WSGITransport(app=OAuthProxyWSGI(proxy)))

        def send(call: Any) -> Reply:
            r = http.request(call.method, call.url, headers=list(call.headers), content=call.body)
            return Reply(
                r.status_code, tuple((k.lower(), v) for k, v in r.headers.multi_items()), r.content
            )

        return send

    def client(self, proxy: Proxy) -> dict[str, Any]:
        client: dict[str, Any] = drive(register(BASE), self.send(proxy))
        return client

    def sign_in(self, proxy: Proxy, client: dict[str, Any], user: UpstreamUser) -> Session:
        """A real flow through ``proxy`` (one browser: consent cookies kept by httpx)."""
        browser = httpx.Client(transport=httpx.WSGITransport(app=OAuthProxyWSGI(proxy, _not_found)))
        send = self.send(proxy, browser)
        redirect = drive(authorize(BASE, client, upstream=self.upstream, user=user), send)
        tokens = drive(exchange_code(BASE, client, redirect["code"]), send)
        return Session(client=client, tokens=tokens)

    def refresh(self, proxy: Proxy, session: Session) -> Reply:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": session.tokens["refresh_token"],
            "client_id": session.client["client_id"],
        }
        reply: Reply = drive(post_form(BASE + "/token", form), self.send(proxy))
        return reply

    def grant(self, grant_id: str) -> Grant:
        stored = self.store.get("grant", grant_id)
        assert stored is not None
        return codec.decode(stored.value, Grant, stored.version)


@pytest.fixture(params=["sqlite", "redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        made = Deployment(tmp_path, f"sqlite:///{path}", lambda: SQLiteStore(str(path)))
        yield made
        made.close()
        return
    prefix = f"oauthproxy-test-grants:{uuid.uuid4().hex}:"
    made = Deployment(
        tmp_path, f"{REDIS_URL}?prefix={prefix}", lambda: RedisStore(REDIS_URL, prefix=prefix)
    )
    try:
        made.store.get("probe", "probe")
    except StoreUnavailableError as exc:
        pytest.fail(f"these tests need Redis at {REDIS_URL}: {exc}")
    yield made
    cleaner = RedisStore(REDIS_URL, prefix=prefix)
    cleaner.clear()
    cleaner.close()
    made.close()


def grants_cli(deployment: Deployment, *args: str) -> int:
    action, *rest = args
    return cli.main(["grants", action, "--config", str(deployment.config), *rest])


def listed(deployment: Deployment, capsys: pytest.CaptureFixture[str], *filters: str) -> Any:
    assert grants_cli(deployment, "list", "--json", *filters) == 0
    return json.loads(capsys.readouterr().out)


@attrs.frozen
class Three:
    """Alice with clients one and two, Bob with client one, all made through instance ``a``."""

    a: Proxy
    b: Proxy
    one: dict[str, Any]
    two: dict[str, Any]
    alice_one: Session
    alice_two: Session
    bob_one: Session

    @property
    def sessions(self) -> dict[str, Session]:
        return {"alice_one": self.alice_one, "alice_two": self.alice_two, "bob_one": self.bob_one}


def three_grants(d: Deployment) -> Three:
    a, b = d.proxy(), d.proxy()
    one, two = d.client(a), d.client(a)
    return Three(
        a=a,
        b=b,
        one=one,
        two=two,
        alice_one=d.sign_in(a, one, ALICE),
        alice_two=d.sign_in(a, two, ALICE),
        bob_one=d.sign_in(a, one, BOB),
    )


def subject_of(proxy: Proxy, session: Session) -> str:
    verdict = proxy.verify(f"Bearer {session.access}")
    assert isinstance(verdict, Principal), verdict
    return verdict.subject


# -- list ------------------------------------------------------------------------------------------


def test_list_shows_each_active_grant_filtered_by_subject_and_client(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    t = three_grants(deployment)
    alice, bob = subject_of(t.b, t.alice_one), subject_of(t.b, t.bob_one)
    assert alice != bob
    # A rotation shows as the next generation; a grant its client revoked is no longer listed.
    assert deployment.refresh(t.b, t.bob_one).status == 200
    revoked = deployment.sign_in(t.a, t.two, BOB)
    form = {"token": revoked.tokens["refresh_token"], "client_id": t.two["client_id"]}
    assert drive(post_form(BASE + "/revoke", form), deployment.send(t.a)).status == 200

    everything = listed(deployment, capsys)
    assert everything["skipped"] == []
    rows = {g["grant_id"]: g for g in everything["grants"]}
    assert set(rows) == {s.grant_id for s in t.sessions.values()}
    expected = {
        t.alice_one.grant_id: (alice, t.one["client_id"], 1),
        t.alice_two.grant_id: (alice, t.two["client_id"], 1),
        t.bob_one.grant_id: (bob, t.one["client_id"], 2),
    }
    for grant_id, (subject, client_id, generation) in expected.items():
        row = rows[grant_id]
        assert (row["subject"], row["client_id"], row["generation"]) == (
            subject,
            client_id,
            generation,
        )
        assert row["scopes"] == ["mcp"]
        stored = deployment.grant(grant_id)
        assert row["created_at"] == time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.created_at)
        )
        assert ISO_UTC.fullmatch(row["expires_at"]) and row["expires_at"] > row["created_at"]

    def ids(*filters: str) -> set[str]:
        return {g["grant_id"] for g in listed(deployment, capsys, *filters)["grants"]}

    assert ids("--subject", alice) == {t.alice_one.grant_id, t.alice_two.grant_id}
    # Ids are base64url and may begin with "-": given as --client=ID they are never read as options.
    assert ids(f"--client={t.one['client_id']}") == {t.alice_one.grant_id, t.bob_one.grant_id}
    assert ids("--subject", alice, f"--client={t.two['client_id']}") == {t.alice_two.grant_id}
    assert ids("--subject", "nobody") == set()

    # The table: a header, then one line per grant with the same fields.
    assert grants_cli(deployment, "list", f"--client={t.one['client_id']}") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "GRANT",
        "SUBJECT",
        "CLIENT",
        "SCOPES",
        "CREATED",
        "EXPIRES",
        "GENERATION",
    ]
    assert len(lines) == 3
    bob_line = next(line for line in lines if t.bob_one.grant_id in line)
    assert bob_line.split()[1:4] == [bob, t.one["client_id"], "mcp"]
    assert bob_line.split()[-1] == "2"

    # Nothing secret: no token, no digest, nothing sealed (spec/security.md 24).
    assert grants_cli(deployment, "list") == 0
    out = capsys.readouterr().out
    for session in (*t.sessions.values(), revoked):
        grant = deployment.grant(session.grant_id)
        for secret in (
            session.access,
            session.tokens["refresh_token"].split(".")[1],
            grant.refresh_hash,
            grant.previous_hash,
            grant.upstream_sealed,
        ):
            assert not secret or secret not in out
    assert "gho_upstream_token" not in out


def test_a_grant_record_that_does_not_decode_is_reported_as_skipped(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    t = three_grants(deployment)
    deployment.store.put("grant", "damaged", b'["not", "a grant"]', 1, 600)
    document = listed(deployment, capsys)
    assert document["skipped"] == ["damaged"]
    assert len(document["grants"]) == 3
    assert grants_cli(deployment, "list") == 0
    captured = capsys.readouterr()
    assert "warning: skipped grant record damaged: it does not decode" in captured.err
    assert len(captured.out.splitlines()) == 4
    # Named explicitly, it is revoked by its marker (whatever tokens it had are refused from now on).
    assert grants_cli(deployment, "revoke", "--grant", "damaged") == 0
    assert "revoked damaged (its record does not decode" in capsys.readouterr().out
    assert deployment.store.get("revoked", "damaged") is not None
    assert isinstance(t.b.verify(f"Bearer {t.alice_one.access}"), Principal)


def test_text_from_outside_cannot_drive_the_terminal(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subject is the provider's word and a client id may be a URL a client chose: printed with
    their control characters escaped."""
    now = int(time.time())
    grant = Grant(
        id="E" * 22,
        client_id="https://client.example/\x1b[2J",
        subject="oidc:\x1b]0;owned\x07\u2028x",
        scopes=("mcp",),
        resource=BASE + "/mcp",
        created_at=now,
        expires_at=now + 600,
    )
    deployment.store.put("grant", grant.id, codec.encode(grant), 1, 600)
    for output in ("--json", None):
        assert grants_cli(deployment, "list", *([output] if output else [])) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\u2028" not in out
    assert grants_cli(deployment, "list") == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "oidc:\\x1b]0;owned\\x07\\u2028x" in line and "client.example/\\x1b[2J" in line
    assert grants_cli(deployment, "list", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)["grants"]
    assert (row["subject"], row["client_id"]) == (grant.subject, grant.client_id)


# -- revoke ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["subject", "client", "grant"])
def test_invariant_34_revoke_ends_refresh_and_access_on_every_instance(
    deployment: Deployment,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    selector: str,
) -> None:
    t = three_grants(deployment)
    alice = subject_of(t.b, t.alice_one)
    option, value, gone = {
        "subject": ("--subject", alice, {"alice_one", "alice_two"}),
        "client": ("--client", t.one["client_id"], {"alice_one", "bob_one"}),
        "grant": ("--grant", t.alice_one.grant_id, {"alice_one"}),
    }[selector]
    for proxy in (t.a, t.b):  # `a` issued the tokens and holds them in its cache
        for session in t.sessions.values():
            assert isinstance(proxy.verify(f"Bearer {session.access}"), Principal)

    caplog.set_level(logging.INFO, logger="oauthproxy.audit")
    assert grants_cli(deployment, "revoke", f"{option}={value}") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"revoked {len(gone)} grant(s)"
    for name in gone:
        assert f"revoked {t.sessions[name].grant_id} " in out

    for name, session in t.sessions.items():
        if name in gone:
            for proxy in (t.a, t.b):
                verdict = proxy.verify(f"Bearer {session.access}")
                assert isinstance(verdict, Challenge), (name, verdict)
                assert (verdict.status, verdict.error) == (401, "invalid_token")
            reply = deployment.refresh(t.b, session)
            assert (reply.status, reply.json()["error"]) == (400, "invalid_grant")
            # Through the grant machine: revoked, with nothing sealed left in it.
            grant = deployment.grant(session.grant_id)
            assert grant.state == "revoked"
            assert grant.upstream_sealed is None and grant.previous_response_sealed is None
        else:
            assert isinstance(t.b.verify(f"Bearer {session.access}"), Principal), name
            assert deployment.refresh(t.a, session).status == 200, name

    causes = [json.loads(r.getMessage()) for r in caplog.records if r.name == "oauthproxy.audit"]
    revocations = [c for c in causes if c["event"] == "grant_revoked"]
    assert len(revocations) == len(gone)
    assert {c["cause"] for c in revocations} == {"operator_revoked"}

    # The same command again finds nothing to revoke.
    assert grants_cli(deployment, "revoke", f"{option}={value}") == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_dry_run_names_the_grants_and_changes_nothing(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    t = three_grants(deployment)
    alice = subject_of(t.b, t.alice_one)
    assert grants_cli(deployment, "revoke", "--subject", alice, "--dry-run") == 0
    out = capsys.readouterr().out
    assert t.alice_one.grant_id in out and t.alice_two.grant_id in out
    assert t.bob_one.grant_id not in out
    assert out.splitlines()[-1] == "would revoke 2 grant(s); dry run, nothing changed"
    assert deployment.store.get("revoked", t.alice_one.grant_id) is None
    assert isinstance(t.b.verify(f"Bearer {t.alice_one.access}"), Principal)
    assert deployment.refresh(t.b, t.alice_two).status == 200
    assert len(listed(deployment, capsys)["grants"]) == 3


def test_nothing_to_revoke_is_status_1_and_a_wrong_command_line_status_2(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    session = deployment.sign_in(deployment.proxy(), deployment.client(deployment.proxy()), BOB)
    for args, message in [
        (("--subject", "github:0"), "error: no active grant of subject github:0\n"),
        (("--client", "no-such-client"), "error: no active grant of client no-such-client\n"),
        (("--grant=-" + "A" * 21,), f"error: no grant -{'A' * 21} in the store"),
    ]:
        assert grants_cli(deployment, "revoke", *args) == 1
        assert capsys.readouterr().err.startswith(message)
    assert grants_cli(deployment, "revoke", f"--grant={session.grant_id}") == 0
    assert grants_cli(deployment, "revoke", f"--grant={session.grant_id}") == 1
    assert "is already revoked" in capsys.readouterr().err
    for args in [(), ("--subject", "s", "--client", "c"), ("--grant", "g", "--subject", "s")]:
        with pytest.raises(SystemExit) as stopped:
            grants_cli(deployment, "revoke", *args)
        assert stopped.value.code == 2
    assert "usage: oauthproxy grants revoke" in capsys.readouterr().err


# -- stores the commands cannot use ------------------------------------------------------------------


def _config_with_store(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "proxy.toml"
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", MemoryStore)
    path.write_text(deployment.config.read_text().replace(deployment.store_url, store_url))
    return path


@pytest.mark.parametrize(
    ("store_url", "message"),
    [
        ("memory://", "error: [store].url is memory://: its records live inside the serving"),
        ("sqlite:///{tmp}/absent.db", "error: no store at {tmp}/absent.db: `oauthproxy serve`"),
        ("redis://127.0.0.1:1/0", "error: the store is unavailable, nothing more was done: Redis"),
    ],
)
def test_a_store_the_commands_cannot_use_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str, message: str
) -> None:
    config = _config_with_store(tmp_path, store_url.format(tmp=tmp_path))
    for action in (["list"], ["revoke", "--subject", "s"]):
        assert cli.main(["grants", *action, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(message.format(tmp=tmp_path)), err
        assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "absent.db").exists()  # listing never creates an empty store


class FiveMethods:
    """A store with the hot-path contract only (no ``scan``)."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def get(self, kind: str, key: str) -> Stored | None:
        return self.inner.get(kind, key)

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        self.inner.put(kind, key, value, version, ttl)

    def take(self, kind: str, key: str) -> Stored | None:
        return self.inner.take(kind, key)

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        return self.inner.compare_and_set(kind, key, expected_version, value, ttl)

    def delete(self, kind: str, key: str) -> None:
        self.inner.delete(kind, key)

    def close(self) -> None:
        self.inner.close()


def test_a_store_without_scan_is_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config_with_store(tmp_path, "redis://127.0.0.1:6379/0")
    monkeypatch.setattr(grants_admin, "open_store", lambda _url: FiveMethods())
    assert cli.main(["grants", "list", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "error: this store (FiveMethods) cannot list its records: it does not implement "
        "oauthproxy_adapters.stores.base.ScanningStore\n"
    )


# -- while `oauthproxy serve` runs -------------------------------------------------------------------


class McpServer:
    """The MCP server behind the gateway: answers every request, counts them."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        while (await receive()).get("more_body"):
            pass
        body = b'{"jsonrpc":"2.0","id":1,"result":{}}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def mcp_call(base: str, access_token: str) -> httpx.Response:
    return httpx.post(
        f"{base}/mcp",
        headers={
            "authorization": f"Bearer {access_token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        },
        content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        timeout=10.0,
        trust_env=False,
    )


def test_invariant_34_revoke_from_another_process_ends_a_live_session_of_serve(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    upstream = Upstream(base + "/auth/callback")
    mcp = McpServer()
    mcp_thread = AppThread(lambda _base: mcp)
    config = write_config(
        tmp_path / "proxy.toml",
        port=port,
        base_url=base,
        upstream=upstream.base,
        store_url=f"sqlite:///{tmp_path / 'state.db'}",
        keys_file=make_keys(tmp_path / "keys.json"),
    )
    config.write_text(config.read_text() + f'\n[gateway]\nupstream_url = "{mcp_thread.base}/mcp"\n')
    serve = ServeProcess(config, port, tmp_path, "serve")
    lb: Balancer | None = None
    try:
        serve.start()
        lb = Balancer(base, [serve])
        flow = Flow(lb, upstream)
        flow.register()
        tokens = flow.token(flow.code())
        live = mcp_call(base, tokens["access_token"])
        assert live.status_code == 200 and mcp.requests == 1, live.text

        listing = run_cli("grants", "list", "--config", str(config), "--json", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        (grant,) = json.loads(listing.stdout)["grants"]
        assert grant["grant_id"] == tokens["refresh_token"].split(".")[0]
        assert grant["client_id"] == flow.client["client_id"]

        done = run_cli(
            "grants", "revoke", "--config", str(config), "--subject", grant["subject"], cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "revoked 1 grant(s)"

        # spec/security.md 34: refused within [lifetimes] revocation_staleness (5 s by default)
        # of the token's last look-up, which came before the revoke; one second of slack.
        deadline = time.monotonic() + 5.0 + 1.0
        while (refused := mcp_call(base, tokens["access_token"])).status_code != 401:
            assert refused.status_code == 200, refused.text
            assert time.monotonic() < deadline, "the revoked access token is still accepted"
            time.sleep(0.1)
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        seen = mcp.requests
        assert mcp_call(base, tokens["access_token"]).status_code == 401
        assert mcp.requests == seen  # refused at the proxy: the MCP server never saw it
        again = flow.refresh(tokens["refresh_token"])
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    finally:
        if lb is not None:
            lb.close()
        serve.stop()
        mcp_thread.stop()
        upstream.stop()


def test_invariant_40_revoke_by_subject_ends_the_upstream_sessions_even_without_grants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``[[resources]]``, ``grants revoke --subject`` ends the subject's upstream sessions
    first, also when no grant of theirs is active (a user who just signed in, or whose grants ended
    otherwise, could still mint grants from a session). A dry run ends nothing."""
    keys_file = tmp_path / "keys.json"
    write_keys_document(str(keys_file), new_keyring_document(), overwrite=False)
    db = tmp_path / "state.db"
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[server]
base_url = "{BASE}"

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "never-used-by-the-grants-commands"

[store]
url = "sqlite:///{db}"

[keys]
file = "{keys_file}"

[[resources]]
path = "/tools"
upstream_url = "http://127.0.0.1:9101/mcp"

[[resources]]
path = "/wiki"
upstream_url = "http://127.0.0.1:9102/mcp"
"""
    )
    marker = (ENDED_KIND, digest("subject|github:1001"))
    args = ["grants", "revoke", "--config", str(config), "--subject", "github:1001"]
    assert cli.main([*args, "--dry-run"]) == 1
    store = SQLiteStore(str(db))
    try:
        assert store.get(*marker) is None
        before = int(time.time())
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert "ended the upstream sessions of subject github:1001" in out
        assert "no active grant of subject github:1001" in out
        stored = store.get(*marker)
        assert stored is not None and int(stored.value) >= before
    finally:
        store.close()
