"""The demo's scripted MCP client: every step of MCP authorization, done by hand and printed.

It performs what an MCP client (Claude, VS Code, the `mcp` SDKs) does against a protected server, in
the order the MCP authorization specification describes, so that a reader can follow the flow:

1. call the MCP endpoint without a token and read the 401 challenge (RFC 9728 §5.1);
2. fetch the protected-resource metadata, then the authorization-server metadata (RFC 8414);
3. register dynamically (RFC 7591);
4. start an authorization request with PKCE (RFC 7636) and a ``resource`` (RFC 8707), approve the
   proxy's consent page as a user would, pass through the upstream provider, and receive the code at
   the client's loopback redirect URI with ``iss`` (RFC 9207);
5. redeem the code, call a tool with the access token, refresh the token, call the tool again.

The "browser" is an httpx client with a cookie jar that follows redirects one at a time. Unlike the
testing kit's flow driver (``testing/flow.py``), which goes straight to the issuer's endpoints, this
client finds every endpoint by discovery and prints each step; it takes the PKCE pair and the consent
form's headers from the kit, so both speak the same protocol.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from .testing.flow import CONSENT_FORM_HEADERS, new_verifier, s256

Printer = Callable[[str], None]
REDIRECT_URI = "http://127.0.0.1:53682/callback"


class DemoFailure(Exception):
    pass


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise DemoFailure(message)


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= keep + 3 else value[:keep] + "..."


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    shown = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        secret = k in ("code", "state", "code_challenge", "txn")
        shown.append(f"{k}={_short(v, 6) if secret else v}")
    return f"{parts.scheme}://{parts.netloc}{parts.path}?" + "&".join(shown)


def _mcp_call(
    client: httpx.Client, url: str, token: str, body: dict[str, Any], session: str | None
) -> tuple[httpx.Response, dict[str, Any] | None]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if session:
        headers["Mcp-Session-Id"] = session
    resp = client.post(url, headers=headers, content=json.dumps(body))
    if resp.status_code == 202 or not resp.content:
        return resp, None
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        for line in resp.text.splitlines():
            if line.startswith("data:"):
                return resp, json.loads(line[5:])
        return resp, None
    return resp, resp.json()


def run_demo_client(mcp_url: str, say: Printer, *, tool: str = "whoami") -> dict[str, Any]:
    """Run the whole flow against ``mcp_url``; return what was learnt. Raises ``DemoFailure``."""
    with httpx.Client(timeout=10.0, follow_redirects=False) as http:
        say(f"1. Call the MCP server without a token: POST {mcp_url}")
        resp = http.post(mcp_url, json={"jsonrpc": "2.0", "id": 0, "method": "ping"})
        challenge = resp.headers.get("www-authenticate", "")
        _expect(resp.status_code == 401, f"expected 401, got {resp.status_code}")
        say(f"   -> 401, WWW-Authenticate: {challenge}")
        match = re.search(r'resource_metadata="([^"]+)"', challenge)
        _expect(match is not None, "the challenge names no resource_metadata")
        assert match is not None
        prm_url = match.group(1)

        say(f"2. Discover: GET {prm_url}")
        prm = http.get(prm_url).json()
        issuer = prm["authorization_servers"][0]
        say(f"   -> resource {prm['resource']}, authorization server {issuer}")
        meta_url = issuer + "/.well-known/oauth-authorization-server"
        meta = http.get(meta_url).json()
        _expect(meta["issuer"] == issuer, "issuer mismatch between PRM and AS metadata")
        say(
            f"   GET {meta_url} -> issuer {meta['issuer']}, PKCE {meta['code_challenge_methods_supported']}"
        )

        say(f"3. Register (RFC 7591): POST {meta['registration_endpoint']}")
        reg = http.post(
            meta["registration_endpoint"],
            json={
                "client_name": "oauthproxy demo client",
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            },
        )
        _expect(reg.status_code == 201, f"registration failed: {reg.status_code}")
        client_id = reg.json()["client_id"]
        say(f"   -> 201, client_id {_short(client_id)} (a public client: PKCE, no secret)")

        verifier = new_verifier()
        challenge_value = s256(verifier)
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "state": state,
            "code_challenge": challenge_value,
            "code_challenge_method": "S256",
            "resource": prm["resource"],
            "scope": " ".join(prm.get("scopes_supported", [])[:1]),
        }
        url = meta["authorization_endpoint"] + "?" + urlencode(params)
        say("4. Authorize with PKCE (S256) in the user's browser:")
        code = _browser(http, url, say)
        callback = dict(parse_qsl(urlsplit(code).query))
        _expect(callback.get("state") == state, "state was not returned intact")
        _expect(callback.get("iss") == issuer, "iss missing or wrong (RFC 9207)")
        _expect("code" in callback, f"no code: {callback.get('error')}")
        say(
            f"   -> redirected to the client with code {_short(callback['code'], 6)}, "
            f"state intact, iss {callback['iss']}"
        )

        say(f"5. Redeem the code: POST {meta['token_endpoint']}")
        tok = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": callback["code"],
                "client_id": client_id,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
                "resource": prm["resource"],
            },
        )
        _expect(tok.status_code == 200, f"token request failed: {tok.text}")
        tokens = tok.json()
        say(
            f"   -> access token ({tokens['expires_in']} s, scope '{tokens['scope']}') "
            f"and a refresh token"
        )

        say(f"6. Call the tool '{tool}' through the MCP server")
        result = _call_tool(http, mcp_url, tokens["access_token"], tool, say)
        say(f"   -> {result}")

        say("7. Refresh the access token (the refresh token rotates)")
        ref = http.post(
            meta["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": client_id,
                "resource": prm["resource"],
            },
        )
        _expect(ref.status_code == 200, f"refresh failed: {ref.text}")
        refreshed = ref.json()
        _expect(refreshed["refresh_token"] != tokens["refresh_token"], "refresh token not rotated")
        say("   -> new access token and a new refresh token; the old one is now single-use spent")
        again = _call_tool(http, mcp_url, refreshed["access_token"], tool, say, quiet=True)
        say(f"   the tool answers with the new token too: {again}")
        return {"client_id": client_id, "tool_result": result, "issuer": issuer}


def _browser(http: httpx.Client, url: str, say: Printer) -> str:
    """Follow redirects like a browser, approving the consent page; return the client callback URL."""
    for _ in range(12):
        if url.startswith(REDIRECT_URI):
            return url
        resp = http.get(url)
        say(f"   GET {_redact(url)} -> {resp.status_code}")
        if resp.status_code in (302, 303):
            url = str(resp.url.join(resp.headers["location"]))
            continue
        _expect(resp.status_code == 200, f"unexpected {resp.status_code} at {_redact(url)}")
        fields = dict(re.findall(r'name="(txn|csrf)" value="([^"]*)"', resp.text))
        action = re.search(r'<form method="post" action="([^"]+)"', resp.text)
        _expect(bool(fields) and action is not None, "no consent form found")
        assert action is not None
        say("   the proxy's consent page asks the user; the user clicks Approve")
        # What a browser sends with a form from the proxy's own page (spec/security.md 31): Fetch
        # Metadata, and the Origin that the page's Referrer-Policy: no-referrer makes "null".
        post = http.post(
            action.group(1),
            data={**fields, "decision": "approve"},
            headers=dict(CONSENT_FORM_HEADERS),
        )
        say(f"   POST {action.group(1)} -> {post.status_code}")
        _expect(post.status_code == 303, f"consent was not accepted: {post.status_code}")
        url = str(post.url.join(post.headers["location"]))
    raise DemoFailure("too many redirects")


def _call_tool(
    http: httpx.Client, mcp_url: str, token: str, tool: str, say: Printer, *, quiet: bool = False
) -> str:
    resp, init = _mcp_call(
        http,
        mcp_url,
        token,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "oauthproxy-demo", "version": "0.1"},
            },
        },
        None,
    )
    _expect(resp.status_code == 200 and init is not None, f"initialize failed: {resp.status_code}")
    session = resp.headers.get("mcp-session-id")
    if not quiet:
        assert init is not None
        info = init.get("result", {}).get("serverInfo", {})
        say(f"   initialize -> server '{info.get('name')}'")
    _mcp_call(
        http, mcp_url, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session
    )
    resp, called = _mcp_call(
        http,
        mcp_url,
        token,
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        },
        session,
    )
    _expect(
        resp.status_code == 200 and called is not None, f"tools/call failed: {resp.status_code}"
    )
    assert called is not None
    content = called.get("result", {}).get("content", [])
    return " ".join(c.get("text", "") for c in content if c.get("type") == "text")
