"""End to end, spec/security.md 40: several MCP servers under one issuer (``[[resources]]``).

One ``oauthproxy serve`` process protects two copies of the demo MCP server (a real `mcp` SDK server
with ``whoami``, ``admin_stats`` and ``provider_token``), each on its own loopback port, at
``/github-tools`` and ``/wiki``, and a third path, ``/ops``, whose own access rules admit nobody the
test signs in as. The upstream is the testing kit's GitHub-shaped provider on loopback, which counts
how often a user agent reached its authorization page. The clients are the real `mcp` SDK client,
one per server, all driven through one headless browser (one cookie jar: one user's browser).

The TypeScript SDK's client (tests/mcp_ts_client) then connects to /wiki in the same browser: it
too passes the wiki's consent page without a sign-in at the provider.

It proves, in order: the wiki client signs in at the provider (one authorization request there);
the github-tools client, in the same browser, passes its own consent page (naming its server) and
gets its code without the provider being asked again; each resource publishes its own metadata and
filters tools by its own rules; each token carries exactly its resource as audience and is refused
(401, with the other resource's challenge) at the other; a tool forbidden at /wiki is refused with
403 and /wiki's step-up challenge; the provider's token reaches the github-tools server, which forwards
it, from the grant made out of the upstream session; and /ops, whose rules refuse the user, refuses
them from the session too, again without a sign-in at the provider.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from oauthproxy_adapters.demo_mcp import token_fingerprint
from oauthproxy_adapters.testing import FakeProvider, upstream_toml
from tests.e2e.demo_stack import CLIENT_ID, CLIENT_SECRET, demo_stack
from tests.e2e.mcp_client import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    _Recorder,
    _StorageExpiryAwareProvider,
    free_loopback_port,
)
from tests.e2e.test_gateway_policy import _text
from tests.e2e.test_mcp_sdk_cimd_fallback import _ts_client_installed


def proxy_toml(base: str, port: int, provider: str, tools: str, wiki: str, tmp: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base}"
scopes_supported = ["mcp", "mcp:admin"]
default_scopes = ["mcp"]
service_name = "the proxy"

{upstream_toml(provider, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)}
[consent]
mode = "always"

[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[[resources]]
path = "/github-tools"
upstream_url = "{tools}"
name = "GitHub tools"
scopes = ["mcp"]
forward_upstream_token = true

[[resources.tools]]
name = "admin_*"
scopes = ["mcp:admin"]

[[resources]]
path = "/wiki"
upstream_url = "{wiki}"
name = "Team wiki"
scopes = ["mcp"]

[[resources.tools]]
name = "provider_token"
scopes = ["mcp:admin"]

[[resources]]
path = "/ops"
upstream_url = "{wiki}"
name = "Operations"

[resources.access]
allowed_subjects = ["oauth2:somebody-else"]
"""


class ConsentReadingBrowser(HeadlessBrowser):
    """The headless browser, keeping the consent pages it approved (to read whom they name)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.consent_texts: list[str] = []

    async def _send(
        self, client: httpx.AsyncClient, method: str, url: str, data: list[tuple[str, str]] | None
    ) -> httpx.Response:
        response = await super()._send(client, method, url, data)
        if "/consent" in url and method == "GET" and response.status_code == 200:
            self.consent_texts.append(response.text)
        return response


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    def config(base: str, port: int, provider: str, mcp: list[str]) -> str:
        return proxy_toml(base, port, provider, mcp[0], mcp[1], tmp_path)

    with demo_stack(tmp_path, 2, config) as started:
        yield started


def _audience(token: str) -> Any:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]


async def connect(
    server_url: str, browser: HeadlessBrowser, redirect_uri: str, work: Any
) -> tuple[Any, str]:
    """One MCP client (its own registration, PKCE, tokens) for ``server_url``, in ``browser``:
    ``work(session)``'s result and the access token the client held."""
    storage = InMemoryTokenStorage()
    metadata = OAuthClientMetadata.model_validate(
        {
            "client_name": "several-resources e2e",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    )
    oauth = _StorageExpiryAwareProvider(
        server_url=server_url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    with anyio.fail_after(60):
        async with (
            httpx2.AsyncClient(
                auth=oauth,
                timeout=httpx2.Timeout(30),
                event_hooks={"response": [browser.recorder.on_mcp_response]},
            ) as http_client,
            streamable_http_client(server_url, http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await work(session)
            tokens = await storage.get_tokens()
    assert tokens is not None
    return result, tokens.access_token


async def _listing(session: ClientSession) -> list[str]:
    return sorted(t.name for t in (await session.list_tools()).tools)


async def _listing_and_provider_token(session: ClientSession) -> tuple[list[str], str]:
    return await _listing(session), _text(await session.call_tool("provider_token", {}))


async def raw_post(url: str, token: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.post(
            url,
            content=json.dumps(body),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
            },
        )


async def ts_client(server_url: str, browser: HeadlessBrowser, redirect_uri: str) -> Any:
    """tests/mcp_ts_client/client.mjs (the TypeScript SDK's own OAuth client) against
    ``server_url``, calling ``whoami``; ``browser`` stands in for the user. Its last JSON line."""
    node = shutil.which("node")
    assert node is not None, "the TypeScript SDK client needs Node.js 20+"
    cwd = await asyncio.to_thread(_ts_client_installed)
    proc = await asyncio.create_subprocess_exec(
        node,
        "client.mjs",
        server_url,
        redirect_uri,
        "",
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    try:
        with anyio.fail_after(60):
            message = json.loads(await proc.stdout.readline() or b'{"error": "no output"}')
            if "authorize" in message:
                await browser.redirect_handler(message["authorize"])
                assert browser.callback_url is not None
                code = parse_qs(urlsplit(browser.callback_url).query)["code"][0]
                proc.stdin.write((code + "\n").encode())
                await proc.stdin.drain()
                message = json.loads(await proc.stdout.readline() or b'{"error": "no output"}')
            await proc.wait()
            message["stderr"] = (await proc.stderr.read()).decode(errors="replace")
        return message
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


async def scenario(base: str, provider: FakeProvider) -> dict[str, Any]:
    recorder = _Recorder(None)
    redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
    browser = ConsentReadingBrowser(redirect_uri, recorder, expected_issuer=base)
    seen: dict[str, Any] = {"steps": recorder.steps}
    seen["wiki_listing"], wiki_token = await connect(
        base + "/wiki", browser, redirect_uri, _listing
    )
    seen["sign_ins_after_wiki"] = provider.authorize_requests
    (seen["tools_listing"], seen["provider_token"]), tools_token = await connect(
        base + "/github-tools", browser, redirect_uri, _listing_and_provider_token
    )
    seen["sign_ins_after_tools"] = provider.authorize_requests
    seen["upstream_tokens"] = list(provider.tokens)
    seen["consent_pages"] = list(browser.consent_texts)
    seen["audiences"] = (_audience(wiki_token), _audience(tools_token))
    # Cross-resource: each token at the other resource, and at its own for contrast.
    seen["tools_token_at_wiki"] = await raw_post(base + "/wiki", tools_token, INITIALIZE)
    seen["wiki_token_at_tools"] = await raw_post(base + "/github-tools", wiki_token, INITIALIZE)
    seen["wiki_token_at_wiki"] = await raw_post(base + "/wiki", wiki_token, INITIALIZE)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "provider_token"}}
    seen["forbidden_at_wiki"] = await raw_post(base + "/wiki", wiki_token, call)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        seen["metadata"] = {
            path: (await http.get(f"{base}/.well-known/oauth-protected-resource{path}")).json()
            for path in ("/github-tools", "/wiki", "/ops")
        }
    seen["ts_client"] = await ts_client(base + "/wiki", browser, redirect_uri)
    seen["sign_ins_after_ts"] = provider.authorize_requests
    seen["consent_pages_after_ts"] = len(browser.consent_texts)
    # /ops: its own rules refuse this user, from the upstream session too.
    browser.follow_refusal_links = True
    try:
        await connect(base + "/ops", browser, redirect_uri, _listing)
    except BaseException as exc:  # the SDK wraps the browser's error in task groups
        seen["ops_refused"] = repr(exc)
    else:
        seen["ops_refused"] = None
    seen["ops_refusal_page"] = browser.refusal_page
    seen["sign_ins_after_ops"] = provider.authorize_requests
    # The user signs out of this browser's session (spec/security.md 40): the next server the
    # client connects to sends the browser to the provider again.
    browser.follow_refusal_links = False
    seen["signout"] = await browser.submit_page_form(base + "/signout")
    seen["session_cookie_after_signout"] = [c.name for c in browser.cookies if "session" in c.name]
    seen["tools_after_signout"], _token = await connect(
        base + "/github-tools", browser, redirect_uri, _listing_and_provider_token
    )
    seen["sign_ins_after_signout"] = provider.authorize_requests
    return seen


def test_invariant_40_two_mcp_servers_one_sign_in_one_audience_each_with_the_mcp_sdk_client(
    stack: dict[str, Any],
) -> None:
    base, provider = stack["base"], stack["provider"]
    seen = asyncio.run(scenario(base, provider))
    trail = "\n".join(seen["steps"])

    # One sign-in at the provider for both servers; each still had its own consent, naming it.
    assert seen["sign_ins_after_wiki"] == 1, trail
    assert seen["sign_ins_after_tools"] == 1, trail
    pages = seen["consent_pages"]
    assert len(pages) == 2, trail
    assert "Team wiki" in pages[0] and "GitHub tools" not in pages[0]
    assert "GitHub tools" in pages[1] and "Team wiki" not in pages[1]

    # Tools filtered by each resource's own rules.
    assert seen["wiki_listing"] == ["admin_stats", "whoami"], trail
    assert seen["tools_listing"] == ["provider_token", "whoami"], trail

    # The provider's token reached the github-tools server, from the grant the session made.
    fingerprints = {token_fingerprint(t) for t in seen["upstream_tokens"]}
    prefix = "provider token received, sha256 "
    assert seen["provider_token"].startswith(prefix), seen["provider_token"]
    assert seen["provider_token"].removeprefix(prefix) in fingerprints

    # One audience per token, and refused (401, the other resource's challenge) elsewhere.
    assert seen["audiences"] == (base + "/wiki", base + "/github-tools")
    wiki_prm = f'resource_metadata="{base}/.well-known/oauth-protected-resource/wiki"'
    tools_prm = f'resource_metadata="{base}/.well-known/oauth-protected-resource/github-tools"'
    for name, prm in (("tools_token_at_wiki", wiki_prm), ("wiki_token_at_tools", tools_prm)):
        refused = seen[name]
        assert refused.status_code == 401, (name, refused.status_code, refused.text)
        challenge = refused.headers["www-authenticate"]
        assert prm in challenge and 'error="invalid_token"' in challenge, challenge
    assert seen["wiki_token_at_wiki"].status_code == 200

    # A tool /wiki forbids: 403 with /wiki's step-up challenge, never forwarded.
    forbidden = seen["forbidden_at_wiki"]
    assert forbidden.status_code == 403, forbidden.text
    challenge = forbidden.headers["www-authenticate"]
    assert wiki_prm in challenge and 'error="insufficient_scope"' in challenge, challenge
    assert "mcp:admin" in challenge, challenge

    # Each resource's own metadata (RFC 9728 §3.1 URL, its resource, name and scopes).
    metadata = seen["metadata"]
    assert metadata["/github-tools"]["resource"] == base + "/github-tools"
    assert metadata["/github-tools"]["resource_name"] == "GitHub tools"
    assert metadata["/wiki"]["resource"] == base + "/wiki"
    assert metadata["/wiki"]["scopes_supported"] == ["mcp"]
    assert metadata["/ops"]["resource_name"] == "Operations"

    # The TypeScript SDK's client: its own consent page for /wiki, no sign-in at the provider.
    ts = seen["ts_client"]
    assert "error" not in ts and ts["text"].startswith("you are "), ts
    assert any("/.well-known/oauth-protected-resource/wiki" in r for r in ts["requests"]), ts
    assert seen["sign_ins_after_ts"] == 1 and seen["consent_pages_after_ts"] == 3, trail

    # /ops: refused by its own rules, decided from the session, without the provider.
    assert seen["ops_refused"] is not None, trail
    assert seen["ops_refusal_page"] and "Operations" in seen["ops_refusal_page"], trail
    assert seen["sign_ins_after_ops"] == 1, trail

    # The consent pages that used the session said so, with the way out; after signing out (the
    # form sent from the page itself, as a browser sends it), the provider is asked again.
    assert "Sign out" not in pages[0] and "Sign out" in pages[1], pages
    signout = seen["signout"]
    assert signout.status_code == 200 and "You are signed out" in signout.text, signout.text
    assert seen["session_cookie_after_signout"] == [], seen["session_cookie_after_signout"]
    assert seen["tools_after_signout"][0] == ["provider_token", "whoami"], trail
    assert seen["sign_ins_after_signout"] == 2, trail
