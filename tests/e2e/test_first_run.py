"""A first run as a newcomer makes it (issue 20), with ``oauthproxy`` run as a process in a fresh
directory: ``init``, ``check-config``, ``serve``, a restart, ``serve`` again.

- Without ``[store]``, ``serve`` keeps its state in SQLite at ``./.oauthproxy/state.db`` (created
  private, as the keys file is): a client registered before a restart is still known after it, by
  its RFC 7592 registration access token and at ``/authorize``.
- ``init`` (flags, or answers piped on stdin) writes a file that ``check-config`` accepts and
  ``serve`` runs, and ``serve`` says what it runs with.

Every process binds 127.0.0.1 and is stopped by its own PID (``Popen.send_signal``); the upstream
provider is never contacted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import stat
import subprocess
from pathlib import Path

import httpx

from oauthproxy_adapters.testing.serve import ServeProcess, free_port, oauthproxy_command

SECRET = "first-run-secret-never-printed"
REDIRECT = "http://127.0.0.1:33418/callback"
#: An empty value counts as unset (``default_sqlite_path``, ``default_keys_file``): the defaults
#: under the working directory apply, as for someone who never heard of the variable.
NO_DATA_DIR = {"OAUTHPROXY_DATA_DIR": ""}


def run(
    *args: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*oauthproxy_command(), *args],
        cwd=cwd,
        env={**os.environ, **NO_DATA_DIR, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop(proxy: ServeProcess) -> None:
    code = proxy.stop(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM (the exit status reports the signal).
    assert code in (0, -signal.SIGTERM), f"exit {code}:\n{proxy.output()}"


def minimal_config(port: int) -> str:
    """What a newcomer writes first: server, upstream, gateway; no [store], no [keys]."""
    return f"""\
[server]
base_url = "http://127.0.0.1:{port}"
port = {port}

[upstream]
provider = "github"
client_id = "Ov23liFirstRun"
client_secret = "{SECRET}"

[gateway]
upstream_url = "http://127.0.0.1:9/mcp"
"""


def register(base: str) -> dict[str, str]:
    response = httpx.post(
        base + "/register",
        json={
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "client_name": "first-run client",
        },
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def consent_page(base: str, client_id: str) -> httpx.Response:
    """An authorization request, answered with a redirect to the consent page; that page."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    response = httpx.get(
        base + "/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "state": "s-1",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "resource": base + "/mcp",
        },
        timeout=10,
        trust_env=False,
    )
    if response.status_code != 302:
        return response
    location = response.headers["location"]
    assert location.startswith(base + "/consent?txn="), location
    return httpx.get(location, timeout=10, trust_env=False)


def test_serve_without_a_store_table_keeps_registered_clients_across_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "proxy.toml"
    config.write_text(minimal_config(port))
    proxy = ServeProcess(config, port, tmp_path, name="first-run")
    proxy.start(env=NO_DATA_DIR)
    try:
        client = register(base)
        assert consent_page(base, client["client_id"]).status_code == 200
        first_pid = proxy.pid
        stop(proxy)

        proxy.start(env=NO_DATA_DIR)
        assert proxy.pid != first_pid
        # RFC 7592 §2.1: the registration, read back with its registration access token.
        read = httpx.get(
            client["registration_client_uri"],
            headers={"Authorization": f"Bearer {client['registration_access_token']}"},
            timeout=10,
            trust_env=False,
        )
        assert read.status_code == 200, read.text
        assert read.json()["client_id"] == client["client_id"]
        assert read.json()["redirect_uris"] == [REDIRECT]
        # And the authorization endpoint still knows the client: on to its consent page, not
        # the 400 page of an unknown client.
        again = consent_page(base, client["client_id"])
        assert again.status_code == 200, again.text
        assert "first-run client" in again.text
    finally:
        stop(proxy)

    data = tmp_path / ".oauthproxy"
    assert (data / "state.db").is_file()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("state.db", "keys.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    log = proxy.output()
    assert f"store     sqlite {data / 'state.db'}: survives restarts, one machine only" in log
    assert SECRET not in log


def test_init_with_flags_then_check_config_then_serve(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    made = run(
        "init",
        "--non-interactive",
        "--provider",
        "github",
        "--client-id",
        "Ov23liInitFlags",
        "--base-url",
        base,
        "--mcp-url",
        "http://127.0.0.1:9/mcp",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert f"    {base}/auth/callback\n" in made.stdout
    assert "    oauthproxy check-config proxy.toml\n" in made.stdout
    assert "    oauthproxy serve --config proxy.toml\n" in made.stdout
    assert "export GITHUB_CLIENT_SECRET=" in made.stdout
    keys = tmp_path / ".oauthproxy" / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600

    checked = run("check-config", "proxy.toml", cwd=tmp_path, GITHUB_CLIENT_SECRET=SECRET)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: proxy.toml\n")
    assert f"  resource  {base}/mcp -> http://127.0.0.1:9/mcp\n" in checked.stdout

    served = _serve_briefly(tmp_path, port)
    # serve says what check-config said (its first line says where it listens).
    assert served.splitlines()[1:6] == checked.stdout.splitlines()[1:6]
    assert (tmp_path / ".oauthproxy" / "state.db").is_file()
    assert SECRET not in served + checked.stdout + checked.stderr


def test_init_with_answers_on_stdin_then_check_config_then_serve(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    answers = "\n".join(
        [
            "gitbub",  # refused, with a suggestion, and asked again
            "github",
            "Ov23liInitAsked",
            "https://mcp.example.com?x=1",  # refused by the same rule as check-config's
            base + "/",  # the trailing slash is dropped
            "http://127.0.0.1:9/mcp",
            "",
        ]
    )
    made = run("init", cwd=tmp_path, stdin=answers)
    assert made.returncode == 0, made.stderr
    assert (
        "error: --provider: must be one of github, google, entra, oidc; did you mean `github`?"
        in (made.stderr)
    )
    assert "error: [server].base_url: " in made.stderr
    assert f"    {base}/auth/callback\n" in made.stdout
    written = (tmp_path / "proxy.toml").read_text()
    assert f'base_url = "{base}"\n' in written
    assert 'client_id = "Ov23liInitAsked"\n' in written

    checked = run("check-config", "proxy.toml", cwd=tmp_path, GITHUB_CLIENT_SECRET=SECRET)
    assert checked.returncode == 0, checked.stderr
    served = _serve_briefly(tmp_path, port)
    assert f"  issuer    {base}\n" in served


def _serve_briefly(workdir: Path, port: int) -> str:
    """``oauthproxy serve --config proxy.toml`` until ``/healthz`` answers; its output."""
    proxy = ServeProcess(workdir / "proxy.toml", port, workdir, name="serve")
    proxy.start(env={**NO_DATA_DIR, "GITHUB_CLIENT_SECRET": SECRET})
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5, trust_env=False)
        assert (health.status_code, health.text) == (200, "ok")
    finally:
        stop(proxy)
    log = proxy.output()
    return log[log.index("oauthproxy: listening") :]
