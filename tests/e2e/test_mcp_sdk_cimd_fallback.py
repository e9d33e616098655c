"""With registration off and Client ID Metadata Documents on, the real `mcp` SDK client goes the way
the MCP specification (2025-11-25, "Client Registration Approaches") describes: it reads the RFC 8414
metadata, finds ``client_id_metadata_document_supported`` and no ``registration_endpoint``, and
uses its ``client_metadata_url`` as ``client_id``; everything through ``oauthproxy serve`` as a
process, its gateway and an MCP server behind it.

``[clients]`` of the running proxy: ``dcr = false``, ``cimd_allowed_hosts = ["*.clients.example"]``,
``cimd_denied_hosts = ["blocked.clients.example"]``, ``redirect_hosts = ["127.0.0.1"]``. The
document is served over real TLS for ``sdk.clients.example`` (tests/clients/support.py); the proxy
runs under ``trusting_serve.py``, which makes its safe fetcher resolve that one name to 127.0.0.1
and trust that one certificate, so every other check of the fetcher runs as in production.

The TypeScript SDK's client (``@modelcontextprotocol/sdk``, pinned in tests/mcp_ts_client) is run
as a Node process against the same proxy and takes the same path; without a metadata URL it stops
at the metadata, seeing no ``registration_endpoint``.

Also proved here, on the same process: an SDK client without a metadata URL learns that
registration is off from a 404 that says so, and stores nothing; document hosts outside the lists
are refused (a page at /authorize, ``invalid_client`` at /token) without a single fetch, and each
refusal is counted (``oauthproxy_transitions_total{event="client_refused"}``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest

from oauthproxy_adapters.demo_mcp import build_demo_mcp_app
from oauthproxy_adapters.testing.provider import FakeProvider, upstream_toml
from oauthproxy_adapters.testing.serve import AppThread, ServeProcess, free_port
from oauthproxy_core.admission import (
    CAUSES,
    CIMD_HOST_DENIED,
    CIMD_HOST_NOT_ALLOWED,
    REGISTRATION_OFF,
)
from tests.clients.support import TlsDocumentServer
from tests.e2e.mcp_client import (
    HeadlessBrowser,
    _Recorder,
    free_loopback_port,
    refresh_and_call,
    run_mcp_session,
)

prometheus = pytest.importorskip("prometheus_client.parser")

WRAPPER = Path(__file__).with_name("trusting_serve.py")
#: The TypeScript SDK client (``@modelcontextprotocol/sdk``, pinned in its package.json).
TS_CLIENT = Path(__file__).resolve().parents[1] / "mcp_ts_client"
NPM_TIMEOUT = 300.0
DOC_HOST = "sdk.clients.example"
DOC_PATH = "/oauth/client.json"
UPSTREAM_SECRET = "provider-secret-" + "u" * 24
METRICS_TOKEN = "metrics-token-for-the-admission-test"


@attrs.frozen
class Stack:
    base: str
    document_url: str
    docs: TlsDocumentServer
    serve: ServeProcess
    state: Path


def _config(tmp: Path, port: int, upstream: str, mcp: str) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "http://127.0.0.1:{port}"

{upstream_toml(upstream, client_secret=UPSTREAM_SECRET)}
[store]
url = "sqlite:///{tmp / "state.db"}"

[keys]
file = "{tmp / "keys.json"}"

[gateway]
upstream_url = "{mcp}/mcp"

[clients]
dcr = false
cimd_allow_loopback = true
cimd_allowed_hosts = ["*.clients.example"]
cimd_denied_hosts = ["blocked.clients.example"]
redirect_hosts = ["127.0.0.1"]

[metrics]
enabled = true
bearer_token = "{METRICS_TOKEN}"
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    docs = TlsDocumentServer(tmp_path, DOC_HOST)
    url = docs.url(DOC_PATH)
    docs.serve(
        DOC_PATH,
        {
            "client_id": url,
            "client_name": "SDK client without registration",
            "redirect_uris": ["http://127.0.0.1/callback"],  # any loopback port (RFC 8252 §7.3)
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = AppThread(
        lambda at: (
            FakeProvider(
                redirect_uri=base + "/auth/callback", base=at, client_secret=UPSTREAM_SECRET
            ).app
        )
    )
    mcp = AppThread(lambda _at: build_demo_mcp_app(), lifespan="on")
    config = tmp_path / "proxy.toml"
    config.write_text(_config(tmp_path, port, provider.base, mcp.base))
    command = [sys.executable, str(WRAPPER), "serve", "--config", str(config)]
    serve = ServeProcess(config, port, tmp_path, "serve", command=command)
    try:
        serve.start(env={"TEST_DOCUMENT_HOST": DOC_HOST, "TEST_DOCUMENT_CA": str(docs.ca_file)})
        yield Stack(base, url, docs, serve, tmp_path / "state.db")
    finally:
        serve.stop()
        mcp.stop()
        provider.stop()
        docs.stop()


def _metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = httpx.get(
        base + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, trust_env=False
    )
    assert resp.status_code == 200, resp.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus.text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def _refused(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    labels = (("event", "client_refused"), ("outcome", "applied"), ("state", "refused"))
    return metrics.get(("oauthproxy_transitions_total", labels), 0.0)


def _document_fetches(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        value
        for (name, labels), value in metrics.items()
        if name == "oauthproxy_upstream_request_duration_seconds_count"
        and ("kind", "client_metadata") in labels
    )


def _stored_clients(state: Path) -> int:
    """Client records in the proxy's SQLite store (read beside the running process: WAL mode)."""
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT COUNT(*) FROM records WHERE kind = 'client'").fetchone()[0])


def test_mcp_sdk_client_falls_back_to_its_metadata_document_when_registration_is_off(
    stack: Stack,
) -> None:
    meta = httpx.get(stack.base + "/.well-known/oauth-authorization-server", trust_env=False)
    assert "registration_endpoint" not in meta.json()
    assert meta.json()["client_id_metadata_document_supported"] is True

    async def scenario() -> None:
        first = await run_mcp_session(
            stack.base + "/mcp", client_metadata_url=stack.document_url, expected_issuer=stack.base
        )
        assert first.client_info is not None
        assert first.client_info.client_id == stack.document_url
        assert first.requests_to("/register") == []
        assert first.token_requests("authorization_code")
        # The identity the MCP server saw came from the provider, through the gateway.
        assert first.text.startswith("you are ") and "4242" in first.text, first.text
        # The document client keeps working: a refresh, then a call with the new token.
        second = await refresh_and_call(first)
        assert second.text == first.text

    asyncio.run(scenario())
    # Fetched over TLS for the name (Host and SNI), not for the pinned address.
    assert stack.docs.hits and all(h.startswith(DOC_HOST + ":") for h in stack.docs.hits)
    assert _stored_clients(stack.state) == 0  # a metadata document client is never stored
    # The fetch was timed under kind="client_metadata": the series the refusal test reads.
    assert _document_fetches(_metrics(stack.base)) >= 1


def test_mcp_sdk_client_without_a_metadata_url_is_told_registration_is_off(stack: Stack) -> None:
    async def scenario() -> None:
        await run_mcp_session(stack.base + "/mcp", expected_issuer=stack.base)

    with pytest.raises(BaseException) as failed:
        asyncio.run(scenario())
    # The SDK found no registration_endpoint, fell back to <origin>/register (its legacy default)
    # and reports our answer: a 404 saying that registration is not offered.
    text = _all_text(failed.value)
    assert "Registration failed: 404" in text, text
    assert REGISTRATION_OFF in text
    assert _stored_clients(stack.state) == 0


def _all_text(exc: BaseException) -> str:
    parts = [str(exc), *getattr(exc, "__notes__", [])]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(_all_text(inner))
    if exc.__cause__ is not None:
        parts.append(_all_text(exc.__cause__))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("host", "cause"),
    [
        ("blocked.clients.example", CIMD_HOST_DENIED),
        ("clients.example", CIMD_HOST_NOT_ALLOWED),  # the wildcard's base is not below itself
        ("evilclients.example", CIMD_HOST_NOT_ALLOWED),
        ("sdk.clients.example.evil.example", CIMD_HOST_NOT_ALLOWED),
    ],
)
def test_document_hosts_outside_the_lists_are_refused_unfetched_and_counted(
    stack: Stack, host: str, cause: str
) -> None:
    before = _metrics(stack.base)
    client_id = f"https://{host}{DOC_PATH}"
    page = httpx.get(
        stack.base + "/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": "http://127.0.0.1:40000/callback",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "state": "s",
        },
        trust_env=False,
    )
    assert page.status_code == 400 and "location" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert CAUSES[cause] in " ".join(page.text.split())
    token = httpx.post(
        stack.base + "/token",
        data={"grant_type": "refresh_token", "refresh_token": "a.b", "client_id": client_id},
        trust_env=False,
    )
    assert token.status_code == 401
    body: dict[str, Any] = token.json()
    assert body == {
        "error": "invalid_client",
        "error_description": "client not admitted: " + CAUSES[cause],
    }
    after = _metrics(stack.base)
    assert _refused(after) == _refused(before) + 2
    assert _document_fetches(after) == _document_fetches(before)
    assert stack.docs.hits == []


def test_registration_and_its_management_answer_404_through_serve(stack: Stack) -> None:
    for method, path in [
        ("POST", "/register"),
        ("GET", "/register/abc"),
        ("DELETE", "/register/abc"),
    ]:
        resp = httpx.request(
            method,
            stack.base + path,
            content=json.dumps({"redirect_uris": ["http://127.0.0.1/cb"]}),
            headers={"content-type": "application/json", "authorization": "Bearer x"},
            trust_env=False,
        )
        assert resp.status_code == 404, (method, path)
        assert resp.json() == {"error": "not_found", "error_description": REGISTRATION_OFF}
    assert _stored_clients(stack.state) == 0


# -- the TypeScript SDK client ------------------------------------------------------------------------


def _ts_client_installed() -> Path:
    """``npm ci`` in tests/mcp_ts_client unless its node_modules has the SDK (Node.js 20+)."""
    if (TS_CLIENT / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json").is_file():
        return TS_CLIENT
    npm = shutil.which("npm")
    assert npm is not None, "the TypeScript SDK client needs Node.js 20+ and npm on PATH"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=TS_CLIENT,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return TS_CLIENT


def _run_ts_client(stack: Stack, metadata_url: str | None) -> dict[str, Any]:
    """Run client.mjs to completion; the headless browser stands in for the user when the SDK
    asks for an authorization. Its last JSON line, with ``stderr`` added."""
    node = shutil.which("node")
    assert node is not None, "the TypeScript SDK client needs Node.js 20+"
    redirect_uri = f"http://127.0.0.1:{free_loopback_port()}/callback"
    command = [node, "client.mjs", stack.base + "/mcp", redirect_uri, metadata_url or ""]
    proc = subprocess.Popen(
        command,
        cwd=_ts_client_installed(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60.0, proc.kill)  # a stuck client fails the test, never hangs it
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        message: dict[str, Any] = json.loads(proc.stdout.readline() or '{"error": "no output"}')
        if "authorize" in message:
            browser = HeadlessBrowser(redirect_uri, _Recorder(None), expected_issuer=stack.base)
            asyncio.run(browser.redirect_handler(message["authorize"]))
            assert browser.callback_url is not None
            code = parse_qs(urlsplit(browser.callback_url).query)["code"][0]
            proc.stdin.write(code + "\n")
            proc.stdin.flush()
            message = json.loads(proc.stdout.readline() or '{"error": "no output"}')
        proc.wait(30)
        assert proc.stderr is not None
        message["stderr"] = proc.stderr.read()
        return message
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_typescript_sdk_client_falls_back_to_its_metadata_document_when_registration_is_off(
    stack: Stack,
) -> None:
    outcome = _run_ts_client(stack, stack.document_url)
    assert "error" not in outcome, outcome
    assert outcome["client_id"] == stack.document_url
    assert outcome["text"].startswith("you are ") and "4242" in outcome["text"], outcome
    assert not [r for r in outcome["requests"] if "/register" in r], outcome["requests"]
    assert any(r.startswith("POST ") and r.endswith("/token") for r in outcome["requests"])
    assert _stored_clients(stack.state) == 0


def test_typescript_sdk_client_without_a_metadata_url_sees_that_registration_is_off(
    stack: Stack,
) -> None:
    outcome = _run_ts_client(stack, None)
    # Unlike the Python client, it reads the missing registration_endpoint as "no registration"
    # and stops before sending anything more.
    assert "does not support dynamic client registration" in outcome.get("error", ""), outcome
    assert not [r for r in outcome["requests"] if "/register" in r], outcome["requests"]
    assert _stored_clients(stack.state) == 0
