"""spec/security.md 33 and 34 end to end, every part real: who may sign in, and how access ends.

``oauthproxy serve`` runs as a process with a TOML configuration holding ``[access]`` rules and short
``[lifetimes]`` (``revalidate_after = 0``: every refresh asks the provider again;
``revocation_staleness = 1``). Upstream is the npm ``oidc-provider`` of ``tests/upstream_idp``, whose
accounts the tests choose and change at run time (groups in a nested ``realm_access.roles`` claim, an
unverified address, GitHub organizations and teams behind its GitHub shim, an account switched off).
Behind the gateway is an `mcp` SDK server that reports the identity headers it receives; in front is
the `mcp` SDK client with a headless browser (``tests/e2e/mcp_client.py``).

- An admitted user completes the flow and the MCP server sees ``X-OAuthProxy-Groups``.
- A refused user gets the 403 page, whose "Return to the application" link hands the client
  ``access_denied``; the proxy's SQLite file holds no grant or code of theirs, and neither their
  subject nor their address appears anywhere in it.
- A user removed upstream (a group left, the account disabled, a GitHub organization left) is refused
  at the next refresh (``invalid_grant``), and their last access token through the gateway within
  ``revocation_staleness``.
- ``oauthproxy grants revoke --subject`` (a process, same configuration) ends a live session within
  ``revocation_staleness``.

Each revocation comes right after a look-up the proxy cached as "not revoked", the hardest case for
the ``revocation_staleness`` bound.

Entra's group overage (an ID token with ``_claim_names.groups`` and no ``groups``, resolved through
Microsoft Graph's ``POST /v1.0/me/getMemberObjects``) cannot run through ``serve``: the entra profile
fetches its JWK Set from ``login.microsoftonline.com``, and no configuration key moves it. That test
loads the same kind of TOML file (``[upstream] graph_url`` pointing at a loopback Graph), points only
the profile's ``jwks_uri`` at the test provider, and runs the app ``serve`` builds (``app.build_app``)
under uvicorn on loopback, with the same client and provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import TextContent

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.testing.serve import AppThread, ServeProcess, oauthproxy_command
from oauthproxy_core import codec
from oauthproxy_core.records import Transaction
from tests.e2e import conftest_idp as idp_support
from tests.e2e.mcp_client import (
    BrowserFlowError,
    ToolCallOutcome,
    _Recorder,
    _run,
    run_mcp_session,
)

idp_installed = idp_support.idp_installed
oidc_idp = idp_support.oidc_idp

SECRET_ENV = "ACCESS_E2E_UPSTREAM_SECRET"
#: ``[lifetimes] revocation_staleness`` of every stack: how long a revoked token may still pass.
STALENESS = 1
#: A little past the bound: the proxy counts whole seconds of the same clock, so a request sent
#: ``STALENESS`` seconds after the revocation already meets it; this only rounds up.
SLACK = 0.2
TENANT = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"
GROUP_ADMITTED = "11111111-2222-4333-8444-555555555555"
GROUP_OTHER = "99999999-8888-4777-8666-555555555555"


# --------------------------------------------------------------------------------------------------
# Servers and processes


def build_identity_mcp() -> Any:
    """An `mcp` SDK server whose one tool answers the identity headers the gateway sent it."""
    server = MCPServer("access-e2e", log_level="WARNING")

    @server.tool()
    def identity(ctx: Context) -> str:
        """The X-OAuthProxy-* headers of this request, as JSON."""
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        return json.dumps({k: v for k, v in headers.items() if k.startswith("x-oauthproxy-")})

    return server.streamable_http_app(streamable_http_path="/mcp")


def proxy_toml(base: str, tmp: Path, upstream: str, access: str, gateway: str) -> str:
    port = base.rsplit(":", 1)[1]
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
mcp_path = "/mcp"

[upstream]
client_id = "{idp_support.CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"
allow_insecure_http = true
{upstream}

[access]
{access}

[lifetimes]
revalidate_after = 0
revocation_staleness = {STALENESS}

[consent]
mode = "always"

[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[gateway]
upstream_url = "{gateway}"
"""


@dataclass
class Stack:
    base: str
    idp: idp_support.IdpProcess
    config: Path
    db: Path
    serve: ServeProcess | None = None

    # -- the proxy's store, read from its SQLite file --

    def rows(self) -> list[tuple[str, str, bytes]]:
        """Every record in the file, live or expired."""
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return [
                (kind, key, bytes(value))
                for kind, key, value in db.execute("SELECT kind, key, value FROM records")
            ]

    def keys(self) -> set[tuple[str, str]]:
        return {(kind, key) for kind, key, _v in self.rows()}

    def raw_bytes(self) -> bytes:
        """The database file and its WAL, byte for byte (also what no row holds any more)."""
        return b"".join(p.read_bytes() for p in sorted(self.db.parent.glob(self.db.name + "*")))

    def idp_token_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.idp.log() if e["kind"] == "token" and not e["shim"]]


@pytest.fixture(scope="module")
def mcp_backend() -> Iterator[str]:
    served = AppThread(lambda _base: build_identity_mcp(), lifespan="on")
    try:
        yield served.base + "/mcp"
    finally:
        served.stop()


def start_stack(tmp: Path, mcp_backend: str, profile: str, upstream: str, access: str) -> Stack:
    idp_support.ensure_idp_installed()
    port = idp_support.free_port()
    base = f"http://127.0.0.1:{port}"
    idp = idp_support.start_idp(0, [base + "/auth/callback"], extra_env={"IDP_PROFILE": profile})
    stack = Stack(base=base, idp=idp, config=tmp / "proxy.toml", db=tmp / "state.db")
    try:
        stack.config.write_text(
            proxy_toml(base, tmp, upstream.format(idp=idp.issuer), access, mcp_backend)
        )
        stack.serve = ServeProcess(stack.config, port, tmp).start(
            env={"PYTHONUNBUFFERED": "1", SECRET_ENV: idp_support.CLIENT_SECRET}
        )
    except BaseException:
        idp.stop()
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    output = stack.serve.output(tail=None) if stack.serve else ""
    if stack.serve:
        stack.serve.stop()
    stack.idp.stop()
    # Every refusal the tests provoked was answered, never crashed through.
    assert "Traceback" not in output, output


OIDC_UPSTREAM = """provider = "oidc"
issuer = "{idp}"
scopes = ["openid", "email", "profile"]"""
# Admits members of the role "mcp-users" (Keycloak's nested realm_access.roles), or verified
# addresses at staff.example.
OIDC_ACCESS = """groups_claim = "realm_access.roles"
allowed_groups = ["mcp-users"]
allowed_email_domains = ["staff.example"]"""


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory, mcp_backend: str) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("oidc"), mcp_backend, "oidc", OIDC_UPSTREAM, OIDC_ACCESS
    )
    yield stack
    stop_stack(stack)


GITHUB_UPSTREAM = """provider = "github"
authorize_url = "{idp}/login/oauth/authorize"
token_url = "{idp}/login/oauth/access_token"
api_base_url = "{idp}/api/v3"
scopes = ["read:user"]"""
GITHUB_ACCESS = 'github_orgs = ["acme", "platform-co/sre"]'


@pytest.fixture(scope="module")
def github_stack(tmp_path_factory: pytest.TempPathFactory, mcp_backend: str) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path_factory.mktemp("github"), mcp_backend, "github", GITHUB_UPSTREAM, GITHUB_ACCESS
    )
    yield stack
    stop_stack(stack)


# --------------------------------------------------------------------------------------------------
# The client's side


def identity_of(outcome: ToolCallOutcome) -> dict[str, str]:
    assert not outcome.is_error, outcome.text
    seen: dict[str, str] = json.loads(outcome.text)
    return seen


def groups_of(headers: dict[str, str]) -> list[str]:
    value = headers.get("x-oauthproxy-groups")
    return value.split(",") if value else []


async def sign_in(stack: Stack, account: str) -> ToolCallOutcome:
    stack.idp.login_as(account)
    return await run_mcp_session(stack.base + "/mcp", tool="identity", expected_issuer=stack.base)


def browser_error(exc: BaseException) -> BrowserFlowError:
    """The ``BrowserFlowError`` inside what the SDK raised (it wraps errors in task groups)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BrowserFlowError):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    raise AssertionError(f"the client failed otherwise: {exc!r}") from exc


async def refused_sign_in(
    stack: Stack, account: str, client: ToolCallOutcome | None = None
) -> tuple[BrowserFlowError, list[str]]:
    """A sign-in that must end with the client told ``access_denied``: a new client, or the same
    ``client`` calling its tool again with what it holds. What it reported, and the steps (every
    HTTP exchange) on the way."""
    stack.idp.login_as(account)
    steps: list[str] = []
    try:
        if client is None:
            await run_mcp_session(
                stack.base + "/mcp",
                tool="identity",
                expected_issuer=stack.base,
                follow_refusal_links=True,
                on_step=steps.append,
            )
        else:
            client.browser.follow_refusal_links = True
            await _run(
                client.provider,
                client.browser,
                _Recorder(steps.append),
                client.storage,
                client.server_url,
                client.tool,
                None,
                client.redirect_uri,
                30.0,
            )
    except Exception as exc:
        return browser_error(exc), steps
    raise AssertionError("the sign-in succeeded:\n  " + "\n  ".join(steps))


def probe(stack: Stack, access_token: str) -> httpx.Response:
    """An MCP ``initialize`` through the gateway with ``access_token``."""
    return httpx.post(
        stack.base + "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "access-e2e-probe", "version": "1"},
            },
        },
        headers={
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/json, text/event-stream",
        },
        timeout=10,
    )


def looked_up_now(stack: Stack, access_token: str) -> None:
    """Make the proxy look the token's revocation up now, and trust that answer for the next
    ``revocation_staleness`` seconds: once the token endpoint's own entry (made when it issued the
    token) has lapsed, one request through the gateway. The revocation that follows is then the
    hardest case for the bound: a fresh "not revoked" in the cache."""
    time.sleep(STALENESS + SLACK)
    assert probe(stack, access_token).status_code == 200


def assert_refused_within_staleness(stack: Stack, access_token: str) -> None:
    """spec/security.md 34: once ``revocation_staleness`` has passed since the revocation, the token
    is refused through the gateway (the caller revoked just before)."""
    time.sleep(STALENESS + SLACK)
    refused = probe(stack, access_token)
    assert refused.status_code == 401, (refused.status_code, refused.text)
    assert 'error="invalid_token"' in refused.headers.get("www-authenticate", ""), refused.headers


def refresh(stack: Stack, outcome: ToolCallOutcome) -> httpx.Response:
    """The client's refresh (RFC 6749 §6), sent by hand so the error body can be read."""
    assert outcome.tokens is not None and outcome.tokens.refresh_token
    assert outcome.client_info is not None and outcome.client_info.client_id
    return httpx.post(
        stack.base + "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": outcome.tokens.refresh_token,
            "client_id": outcome.client_info.client_id,
        },
        timeout=10,
    )


def access_token_of(outcome: ToolCallOutcome) -> str:
    assert outcome.tokens is not None
    return outcome.tokens.access_token


# --------------------------------------------------------------------------------------------------
# Admitted and refused


def test_invariant_33_admitted_user_reaches_the_tool_refused_user_leaves_nothing(
    oidc_stack: Stack,
) -> None:
    stack = oidc_stack
    stack.idp.set_account(
        "ada",
        claims={
            "email": "ada@elsewhere.example",
            "email_verified": True,
            "realm_access": {"roles": ["reader", "mcp-users"]},
        },
    )
    # Would match both rules if an unverified address or another role counted.
    stack.idp.set_account(
        "mallory-refused",
        claims={
            "email": "mallory-refused@staff.example",
            "email_verified": False,
            "realm_access": {"roles": ["reader", "mcp-users-not"]},
        },
    )

    admitted = identity_of(asyncio.run(sign_in(stack, "ada")))
    assert admitted["x-oauthproxy-subject"] == "oidc:ada"
    # The groups the decision read, from the nested claim; the one a rule named comes first.
    assert groups_of(admitted) == ["mcp-users", "reader"]

    before = stack.keys()
    redeemed = len(stack.idp_token_requests())
    error, steps = asyncio.run(refused_sign_in(stack, "mallory-refused"))

    # The client was told access_denied by the link of the proxy's 403 page.
    assert error.error == "access_denied", error
    assert error.error_description == "this account is not allowed to use this server"
    assert any("/auth/callback" in s and s.endswith("-> 403") for s in steps), steps
    assert error.page is not None and "This account is not allowed" in error.page
    # The page names the classes of rule in use, never their values.
    assert "verified email addresses of certain domains" in error.page
    assert "members of certain groups" in error.page
    assert "staff.example" not in error.page and "mcp-users" not in error.page
    # The provider did sign the user in: the proxy redeemed their code, then refused them.
    assert [e["grant_type"] for e in stack.idp_token_requests()[redeemed:]] == [
        "authorization_code"
    ]

    # spec/security.md 33: nothing of them in the store. New records: the client's registration
    # and its transaction (besides rate-limit counters and the provider's cached keys); no code,
    # no grant.
    added = stack.keys() - before
    assert {kind for kind, _key in added} - {"bound", "jwks"} == {"client", "tx"}, added
    rows = stack.rows()
    for kind, key, value in rows:
        text = (kind + key).encode() + value
        assert b"mallory" not in text.lower(), (kind, key)
    assert b"mallory" not in stack.raw_bytes().lower()
    transactions = [
        codec.decode(v, Transaction) for k, key, v in rows if k == "tx" and (k, key) in added
    ]
    (refused,) = [t for t in transactions if t.state == "denied"]
    assert refused.subject is None and refused.claims == () and refused.groups == ()
    assert refused.upstream_sealed is None and refused.code_hash is None
    assert refused.grant_id is None


# --------------------------------------------------------------------------------------------------
# Removed upstream


@pytest.mark.parametrize("removal", ["group_left", "account_disabled"])
def test_invariants_33_34_user_removed_upstream_loses_access_at_the_next_refresh(
    oidc_stack: Stack, removal: str
) -> None:
    stack = oidc_stack
    account = f"bob-{removal.replace('_', '-')}"
    stack.idp.set_account(
        account,
        claims={"email": f"{account}@elsewhere.example", "realm_access": {"roles": ["mcp-users"]}},
    )
    first = asyncio.run(sign_in(stack, account))
    assert identity_of(first)["x-oauthproxy-subject"] == f"oidc:{account}"
    token = access_token_of(first)
    looked_up_now(stack, token)

    if removal == "group_left":
        stack.idp.set_account(account, claims={"realm_access": {"roles": ["reader"]}})
    else:
        stack.idp.set_account(account, disabled=True)
    asked = len(stack.idp_token_requests())

    answer = refresh(stack, first)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_grant"
    # The refresh asked the provider (revalidate_after = 0), which refreshed for a user who left the
    # group (the rules then refused them) and refused the disabled account itself.
    (upstream,) = stack.idp_token_requests()[asked:]
    assert upstream["grant_type"] == "refresh_token"
    assert (upstream["status"], upstream["error"]) == (
        (200, None) if removal == "group_left" else (400, "invalid_grant")
    )
    assert_refused_within_staleness(stack, token)

    # The same SDK client calls again: its stored access token is refused (401), it signs in again
    # and is told access_denied, by the proxy's 403 page (group left) or by the provider (account
    # disabled).
    error, steps = asyncio.run(refused_sign_in(stack, account, client=first))
    assert any(s.startswith("mcp: POST") and "/mcp" in s and s.endswith("-> 401") for s in steps)
    assert error.error == "access_denied", error
    if removal == "group_left":
        assert error.page is not None and "This account is not allowed" in error.page
    else:
        assert error.page is None
        assert not any(s.endswith("-> 403") for s in steps), steps


# --------------------------------------------------------------------------------------------------
# Operator revocation


def test_invariant_34_grants_revoke_ends_a_live_session_within_revocation_staleness(
    oidc_stack: Stack,
) -> None:
    stack = oidc_stack
    stack.idp.set_account("carol", claims={"email": "carol@staff.example", "email_verified": True})
    first = asyncio.run(sign_in(stack, "carol"))
    assert identity_of(first)["x-oauthproxy-subject"] == "oidc:carol"
    revoked_token = access_token_of(first)

    def revoke() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *oauthproxy_command(),
                "grants",
                "revoke",
                "--config",
                str(stack.config),
                "--subject",
                "oidc:carol",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, SECRET_ENV: idp_support.CLIENT_SECRET},
            check=False,
        )

    async def live_session() -> tuple[list[str], subprocess.CompletedProcess[str]]:
        """One MCP session, open across the revocation, with the client's OAuth provider."""
        answers: list[str] = []
        async with (
            httpx2.AsyncClient(auth=first.provider, timeout=httpx2.Timeout(30)) as http,
            streamable_http_client(stack.base + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            # Past the token endpoint's own cache entry, so this call's look-up is cached: the
            # revocation right after it is the hardest case for the bound.
            await asyncio.sleep(STALENESS + SLACK)
            before = await session.call_tool("identity", {})
            answers.extend(c.text for c in before.content if isinstance(c, TextContent))
            done = await asyncio.to_thread(revoke)
            await asyncio.sleep(STALENESS + SLACK)
            after = await session.call_tool("identity", {})
            answers.extend(c.text for c in after.content if isinstance(c, TextContent))
        return answers, done

    authorizations = first.browser.authorizations
    answers, done = asyncio.run(live_session())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "revoked 1 grant(s)", done.stdout
    # The session's token was refused after the revocation, so the client had to authorize again
    # (carol is still admitted by the rules, so that succeeds, with new tokens).
    assert first.browser.authorizations == authorizations + 1
    assert [json.loads(a)["x-oauthproxy-subject"] for a in answers] == ["oidc:carol"] * 2
    assert probe(stack, revoked_token).status_code == 401
    answer = refresh(stack, first)  # the revoked family's refresh token
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


# --------------------------------------------------------------------------------------------------
# GitHub organizations and teams


def test_invariant_33_github_organization_rule_reads_every_page_and_is_applied_again(
    github_stack: Stack,
) -> None:
    stack = github_stack
    # 150 organizations: the one a rule names is on the second page of 100.
    orgs = [f"org-{i:03d}" for i in range(149)] + ["acme"]
    stack.idp.set_account(
        "grace", github={"id": 7001, "login": "grace-h", "orgs": orgs, "teams": ["acme/web"]}
    )
    stack.idp.set_account(
        "heidi",
        github={"id": 7002, "login": "heidi-h", "orgs": ["platform-co"], "teams": ["other/sre"]},
    )
    log_start = len(stack.idp.log())

    first = asyncio.run(sign_in(stack, "grace"))
    seen = identity_of(first)
    assert seen["x-oauthproxy-subject"] == "github:7001"
    groups = groups_of(seen)
    assert groups[0] == "acme" and len(groups) == 100  # the rule's org first, then up to 100
    pages = [e for e in stack.idp.log()[log_start:] if e["kind"] in ("github_orgs", "github_teams")]
    assert [(e["kind"], e["page"], e["per_page"]) for e in pages] == [
        ("github_orgs", 1, 100),
        ("github_orgs", 2, 100),
        ("github_teams", 1, 100),
    ]
    # Memberships of private organizations need read:org, which the rule made the proxy ask for.
    assert all("read:org" in e["scopes"] for e in pages)

    # In platform-co, but not in its sre team: the team rule does not admit the organization.
    error, _steps = asyncio.run(refused_sign_in(stack, "heidi"))
    assert error.error == "access_denied" and error.page is not None
    assert b"heidi" not in stack.raw_bytes().lower() and b"github:7002" not in stack.raw_bytes()

    # Grace leaves acme. A GitHub OAuth App has no refresh token upstream: the proxy asks GET /user
    # and the memberships with the token it holds, and the rules refuse her now.
    looked_up_now(stack, access_token_of(first))
    stack.idp.set_account("grace", github={"orgs": orgs[:-1]})
    answer = refresh(stack, first)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert_refused_within_staleness(stack, access_token_of(first))


# --------------------------------------------------------------------------------------------------
# Entra's group overage, resolved through a loopback Microsoft Graph


class FakeGraph:
    """``POST /v1.0/me/getMemberObjects`` as Microsoft Graph answers it, for the user whose access
    token it is (asked of the provider's UserInfo endpoint, as Graph knows its own tokens)."""

    def __init__(self, userinfo_url: str) -> None:
        self.userinfo_url = userinfo_url
        self.groups: dict[str, list[str]] = {}
        self.calls: list[dict[str, Any]] = []
        graph = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, answer = graph.answer(self.path, self.headers.get("authorization"), body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, authorization: str | None, body: bytes) -> tuple[int, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        sub = None
        if scheme.lower() == "bearer" and token:
            me = httpx.get(self.userinfo_url, headers={"Authorization": f"Bearer {token}"})
            sub = me.json().get("sub") if me.status_code == 200 else None
        self.calls.append({"path": path, "sub": sub, "body": json.loads(body or b"null")})
        if path != "/v1.0/me/getMemberObjects":
            return 404, {"error": {"code": "Request_ResourceNotFound"}}
        if sub is None:
            return 401, {"error": {"code": "InvalidAuthenticationToken"}}
        return 200, {"value": self.groups.get(sub, [])}

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def overage_claims(oid: str) -> dict[str, Any]:
    """An Entra ID token's shape for a user in too many groups: ``tid``, and a pointer to Graph
    where ``groups`` would be."""
    return {
        "tid": TENANT,
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {
            "src1": {"endpoint": f"https://graph.windows.net/{TENANT}/users/{oid}/getMemberObjects"}
        },
    }


def test_invariant_33_entra_group_overage_is_resolved_through_graph(
    oidc_idp: idp_support.IdpFactory, mcp_backend: str, tmp_path: Path
) -> None:
    made: dict[str, Any] = {}

    def build(base: str) -> Any:
        """The provider (whose client needs the proxy's callback), the loopback Graph, the TOML
        file, and the app ``serve`` would build from it."""
        idp = made["idp"] = oidc_idp([base + "/auth/callback"])
        graph = made["graph"] = FakeGraph(idp.userinfo_endpoint)
        upstream = f"""provider = "entra"
tenant = "{TENANT}"
issuer = "{idp.issuer}"
authorize_url = "{idp.authorization_endpoint}"
token_url = "{idp.token_endpoint}"
graph_url = "{graph.base}"
scopes = ["openid", "profile", "offline_access"]"""
        access = f'allowed_groups = ["{GROUP_ADMITTED}"]'
        config = made["config"] = tmp_path / "proxy.toml"
        config.write_text(proxy_toml(base, tmp_path, upstream, access, mcp_backend))
        settings = load_settings(config, environ={SECRET_ENV: idp_support.CLIENT_SECRET})
        assert settings.upstream.group_overage_url == graph.base + "/v1.0/me/getMemberObjects"
        # The one change to what `serve` would run: the provider's keys are the test provider's.
        profile = attrs.evolve(settings.upstream, jwks_uri=idp.jwks_uri)
        settings = attrs.evolve(settings, proxy=attrs.evolve(settings.proxy, upstream=profile))
        app, _proxy, _cleanup = build_app(settings)
        return app

    try:
        served = AppThread(build, lifespan="on")
    except BaseException:
        if "graph" in made:
            made["graph"].stop()
        raise
    idp: idp_support.IdpProcess = made["idp"]
    graph: FakeGraph = made["graph"]
    stack = Stack(base=served.base, idp=idp, config=made["config"], db=tmp_path / "state.db")
    try:
        idp.set_account("erin", claims=overage_claims("oid-erin"))
        idp.set_account("frank", claims=overage_claims("oid-frank"))
        graph.groups = {"erin": [GROUP_OTHER, GROUP_ADMITTED], "frank": [GROUP_OTHER]}

        first = asyncio.run(sign_in(stack, "erin"))
        seen = identity_of(first)
        assert seen["x-oauthproxy-subject"] == "entra:erin"
        assert groups_of(seen) == [GROUP_ADMITTED, GROUP_OTHER]
        # Graph was asked with erin's own upstream token, as Graph's API is called.
        assert graph.calls == [
            {
                "path": "/v1.0/me/getMemberObjects",
                "sub": "erin",
                "body": {"securityEnabledOnly": False},
            }
        ]

        error, _steps = asyncio.run(refused_sign_in(stack, "frank"))
        assert error.error == "access_denied" and error.page is not None
        assert [c["sub"] for c in graph.calls[1:]] == ["frank"]
        assert b"frank" not in stack.raw_bytes().lower()

        # Erin leaves the group: at the next refresh the refreshed ID token still reports the
        # overage, Graph is asked again, and the rules refuse her.
        looked_up_now(stack, access_token_of(first))
        graph.groups["erin"] = [GROUP_OTHER]
        answer = refresh(stack, first)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
        assert [c["sub"] for c in graph.calls[2:]] == ["erin"]
        assert_refused_within_staleness(stack, access_token_of(first))
    finally:
        served.stop()
        graph.stop()
