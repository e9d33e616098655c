"""A headless MCP client that signs in with the device authorization grant (RFC 8628), run as its
own process by tests/e2e/test_device_grant_browser.py: ``python -m tests.e2e.device_client BASE``.

It discovers the authorization server (RFC 9728, RFC 8414), registers (RFC 7591) with the device
code grant, asks for a device code and prints one JSON line for the person (the test's browser):
``user_code``, ``verification_uri``, ``verification_uri_complete``. Then it polls the token endpoint
as §3.4-3.5 say (waiting ``interval``, 5 seconds more after each ``slow_down``), calls the ``whoami``
tool through the gateway with the real ``mcp`` SDK client, refreshes, calls it again, and prints a
last JSON line with what it saw. It never opens a browser and has no redirect URI it listens on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _say(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def _whoami(mcp_url: str, access_token: str) -> str:
    headers = {"Authorization": f"Bearer {access_token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http_client,
        streamable_http_client(mcp_url, http_client=http_client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("whoami", {})
        return "".join(c.text for c in result.content if isinstance(c, TextContent))


def main(base: str, deadline_seconds: float = 180.0) -> None:
    http = httpx.Client(timeout=30)
    mcp_url = base + "/mcp"
    challenge = http.post(mcp_url, json={})
    assert challenge.status_code == 401, challenge.text
    prm = http.get(base + "/.well-known/oauth-protected-resource/mcp").json()
    issuer = prm["authorization_servers"][0]
    meta = http.get(issuer + "/.well-known/oauth-authorization-server").json()
    assert GRANT in meta["grant_types_supported"], meta
    client = http.post(
        meta["registration_endpoint"],
        json={
            "client_name": "device-e2e-cli",
            # Registration still asks for one (the code flow's); this client never listens on it.
            "redirect_uris": ["http://127.0.0.1:9/unused"],
            "grant_types": ["authorization_code", "refresh_token", GRANT],
            "token_endpoint_auth_method": "none",
        },
    ).json()
    client_id = client["client_id"]
    started = http.post(
        meta["device_authorization_endpoint"],
        data={"client_id": client_id, "resource": prm["resource"]},
    )
    assert started.status_code == 200, started.text
    grant = started.json()
    poll = {"grant_type": GRANT, "device_code": grant["device_code"], "client_id": client_id}
    # One poll before the person is shown the code: nobody can have approved it yet, so this one
    # is pending whatever the timing (a fast browser may finish within the first interval).
    early = http.post(meta["token_endpoint"], data=poll)
    seen: list[str] = [early.json().get("error", f"status {early.status_code}")]
    _say({k: grant[k] for k in ("user_code", "verification_uri", "verification_uri_complete")})

    interval = int(grant["interval"])
    end = time.monotonic() + deadline_seconds
    tokens: dict[str, Any] | None = None
    while tokens is None:
        assert time.monotonic() < end, f"no tokens after {deadline_seconds} s: {seen}"
        time.sleep(interval)
        answer = http.post(meta["token_endpoint"], data=poll)
        if answer.status_code == 200:
            tokens = answer.json()
            break
        error = answer.json()["error"]
        seen.append(error)
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            raise SystemExit(f"device sign-in ended with {error}")
    # The device code is spent: one more poll must not yield a second set of tokens.
    replay = http.post(meta["token_endpoint"], data=poll)
    first = asyncio.run(_whoami(mcp_url, tokens["access_token"]))
    refreshed = http.post(
        meta["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    second = asyncio.run(_whoami(mcp_url, new["access_token"]))
    _say(
        {
            "polled": seen,
            "replay": replay.json().get("error"),
            "whoami": first,
            "whoami_after_refresh": second,
            "rotated": new["refresh_token"] != tokens["refresh_token"],
            "new_access_token": new["access_token"] != tokens["access_token"],
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
