"""End to end, every part real, for device sign-in (RFC 8628; spec/rfc8628.md, spec/security.md 39):
``oauthproxy serve`` as a process with ``[device] enabled``, the npm ``oidc-provider`` upstream, the
demo MCP server behind the gateway, a headless client in its own process
(``tests/e2e/device_client.py``) that starts the grant and polls, and headless Chromium as the
person: it opens ``verification_uri``, types the user code (lower case, the way people do), approves
the consent page marked as a device sign-in, and signs in at the provider. The client then calls a
tool through the gateway with the tokens it polled for, refreshes, and calls it again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oauthproxy_adapters.testing.serve import ServeProcess
from tests.e2e import conftest_idp as idp_support
from tests.e2e.chromium import Browser
from tests.e2e.test_serve_oidc_mcp import McpServerThread, proxy_toml

idp_installed = idp_support.idp_installed
oidc_idp = idp_support.oidc_idp
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(oidc_idp: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = idp_support.free_port()
    base = f"http://127.0.0.1:{port}"
    idp = oidc_idp([base + "/auth/callback"], access_ttl=3600)
    mcp = McpServerThread()
    config = tmp_path / "proxy.toml"
    device = "\n[device]\nenabled = true\ninterval = 1\n\n[metrics]\nenabled = true\n"
    config.write_text(proxy_toml(port, idp.issuer, mcp.port, tmp_path, extra=device))
    serve = ServeProcess(config, port, tmp_path)
    try:
        serve.start(env={"PYTHONUNBUFFERED": "1", "E2E_UPSTREAM_SECRET": idp_support.CLIENT_SECRET})
        yield {"base": base, "serve": serve, "tmp": tmp_path}
    finally:
        serve.stop()
        mcp.stop()


def test_rfc8628_device_sign_in_in_chromium_then_tool_call_and_refresh(
    stack: dict[str, Any],
) -> None:
    base = stack["base"]
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.device_client", base],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    browser: Browser | None = None
    try:
        assert client.stdout is not None
        shown = json.loads(client.stdout.readline() or "{}")
        assert shown.get("verification_uri") == base + "/device", shown
        browser = Browser()
        browser.send("Page.enable")
        browser.send("Runtime.enable")
        browser.navigate(shown["verification_uri"])
        browser.click("#user_code")
        browser.send("Input.insertText", text=shown["user_code"].lower())
        browser.click("button.approve")
        browser.wait_until("document.getElementById('device-sign-in') !== null")
        page = browser.evaluate("document.body.innerText")
        assert "Device sign-in" in page and "device-e2e-cli" in page, page
        browser.click("button.approve")
        # The provider signs testuser in by itself and sends the browser back to the proxy.
        browser.wait_until("document.title === 'Signed in'", timeout=60)
        out, err = client.communicate(timeout=120)
    finally:
        if browser is not None:
            browser.close()
        if client.poll() is None:
            client.kill()
            client.wait(10)
    assert client.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["polled"] and set(result["polled"]) <= {"authorization_pending", "slow_down"}
    assert result["replay"] == "invalid_grant"
    assert result["whoami"].startswith("you are oidc:testuser"), result
    assert result["whoami_after_refresh"] == result["whoami"]
    assert result["rotated"] and result["new_access_token"]
    # The metrics (counted from the same lines as the audit log) name the grant type of the
    # family the device code created, and the device authorization's transitions.
    metrics = httpx.get(base + "/metrics").text
    assert re.search(
        r'oauthproxy_transitions_total\{event="grant_issued",outcome="applied",'
        r'state="urn:ietf:params:oauth:grant-type:device_code"\} 1\.0',
        metrics,
    ), metrics
    for state in ("pending", "verifying", "approved", "redeemed"):
        assert f'event="device_authorization",outcome="applied",state="{state}"' in metrics
    # Neither code reaches the server's output.
    log = stack["serve"].output(tail=None)
    assert shown["user_code"] not in log and shown["user_code"].replace("-", "") not in log
