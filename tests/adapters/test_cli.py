"""The ``oauthproxy`` command, run as a real subprocess: check-config, keys, and serve."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SECRET = "cli-S3CRET-never-printed"
ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oauthproxy_adapters", *args],
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def config(base_url: str, keys_file: Path, port: int = 8000, extra: str = "") -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "{base_url}"

[upstream]
provider = "oauth2"
client_id = "proxy-client"
client_secret = "{SECRET}"
authorize_url = "https://idp.example/authorize"
token_url = "https://idp.example/token"
userinfo_url = "https://idp.example/userinfo"

[store]
url = "memory://"

[keys]
file = "{keys_file}"
{extra}
"""


# -- check-config -------------------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config("https://mcp.example", tmp_path / "keys.json"))
    result = run("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"ok: {path}\n  issuer    https://mcp.example\n  resource  https://mcp.example/mcp"
    )
    assert "  provider  oauth2, client_id proxy-client," in result.stdout
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("https://mcp.example", "https://mcp.example/"),
            "[server].base_url: must not end with '/'",
        ),
        (('client_id = "proxy-client"\n', ""), "[upstream].client_id: required"),
        (('url = "memory://"', 'url = "foo://x"'), "[store].url: unknown scheme 'foo'"),
        (("[store]", '[store]\nurll = "x"'), "[store].urll: unknown key"),
    ],
)
def test_check_config_errors_name_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config("https://mcp.example", tmp_path / "keys.json").replace(*change))
    result = run("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {message}")
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr


MANY_MISTAKES = f"""
[server]
base_url = "https://mcp.example/"
port = 70000

[upstream]
provider = "oauth2"
client_id = "proxy-client"
client_secret_en = "UPSTREAM_SECRET"
authorize_url = "https://idp.example/authorize"
token_url = "http://idp.example/token"
userinfo_url = "https://idp.example/userinfo"
scopes = "profile"

[consent]
mode = "sometimes"

[store]
url = "foo://x"

[limits]
registrations_per_address = 0
registration_windw = 60

[metrics]
bearer_token = "{SECRET}"
enabled = true
"""

#: Every mistake of MANY_MISTAKES, as check-config and serve report it, in the schema's order.
EVERY_PROBLEM = [
    "error: [server].port: must be between 0 and 65535",
    "error: [server].base_url: must not end with '/'",
    "error: [upstream].client_secret: required (or client_secret_env)",
    "error: [upstream].scopes: must be a list of non-empty strings",
    "error: [upstream].token_url: http is allowed only on a loopback host",
    "error: [upstream].client_secret_en: unknown key; did you mean `client_secret_env`?",
    "error: [consent].mode: must be one of always, remember",
    "error: [store].url: unknown scheme 'foo' (expected memory, sqlite, redis, redis+sentinel, "
    "redis+cluster, their TLS forms rediss, rediss+sentinel, rediss+cluster, or postgresql)",
    "error: [limits].registrations_per_address: must be at least 1",
    "error: [limits].registration_windw: unknown key; did you mean `registration_window`?",
]


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_every_problem_of_the_file_in_one_run(tmp_path: Path, command: str) -> None:
    """Issue 20, "all errors at once": one run names each mistake as `[table].key: why`, with a
    suggestion for a near-miss key, and nothing else (no cascade from a refused value)."""
    path = tmp_path / "proxy.toml"
    path.write_text(MANY_MISTAKES)
    args = (
        ["check-config", str(path)]
        if command == "check-config"
        else ["serve", "--config", str(path)]
    )
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == EVERY_PROBLEM
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[consent]\ntemplate = "page\\u0000.html"\n', "[consent].template: "),
        ('[keys]\nfile = "keys\\u0000.json"\n', "[keys].file: "),
        ('[store]\nurl = "sqlite:///state\\u0000.db"\n', "[store].url: "),
    ],
)
def test_paths_with_a_nul_byte_are_problems_not_tracebacks(
    tmp_path: Path, extra: str, message: str
) -> None:
    """Found by the schema fuzz test: a TOML escape can put NUL in a path, which open() refuses
    with ValueError; the file is refused naming the key, as every other mistake is."""
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[server]\nbase_url = "https://mcp.example"\n'
        f'[upstream]\nprovider = "github"\nclient_id = "c"\nclient_secret = "{SECRET}"\n' + extra
    )
    result = run("check-config", str(path), cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run("check-config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


# -- keys -----------------------------------------------------------------------------------------


def _kids(path: Path) -> dict[str, list[str]]:
    doc = json.loads(path.read_text())
    return {kind: [k["kid"] for k in doc[kind]] for kind in ("signing", "sealing", "cookie")}


def test_keys_round_trip(tmp_path: Path) -> None:
    keys = tmp_path / "sub" / "keys.json"
    created = run("keys", "new", "--out", str(keys), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    first = _kids(keys)
    assert all(len(v) == 1 for v in first.values())

    again = run("keys", "new", "--out", str(keys), cwd=tmp_path)
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert _kids(keys) == first

    rotated = run("keys", "rotate", "--file", str(keys), "--which", "signing", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    after = _kids(keys)
    assert len(after["signing"]) == 2 and after["signing"][1] == first["signing"][0]
    assert after["sealing"] == first["sealing"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600

    assert run("keys", "rotate", "--file", str(keys), cwd=tmp_path).returncode == 0
    assert [len(v) for v in _kids(keys).values()] == [3, 2, 2]

    retired = run("keys", "retire", "--file", str(keys), "--keep", "1", cwd=tmp_path)
    assert retired.returncode == 0, retired.stderr
    assert [len(v) for v in _kids(keys).values()] == [1, 1, 1]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600

    shown = run("keys", "show", "--file", str(keys), cwd=tmp_path)
    assert shown.returncode == 0
    doc = json.loads(keys.read_text())
    for kind in ("signing", "sealing", "cookie"):
        assert doc[kind][0]["kid"] in shown.stdout
    # Public information only: no private or symmetric key material.
    assert doc["signing"][0]["d"] not in shown.stdout
    assert doc["sealing"][0]["k"] not in shown.stdout
    assert doc["cookie"][0]["k"] not in shown.stdout

    forced = run("keys", "new", "--out", str(keys), "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert _kids(keys)["signing"] != first["signing"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_keys_refuses_a_world_readable_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    assert run("keys", "new", "--out", str(keys), cwd=tmp_path).returncode == 0
    keys.chmod(0o644)
    result = run("keys", "show", "--file", str(keys), cwd=tmp_path)
    assert result.returncode == 2
    assert "chmod 600" in result.stderr


def test_demo_arguments_reach_the_demo(tmp_path: Path) -> None:
    # Options after `demo` belong to the demo's own parser (here: its --help).
    result = run("demo", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "oauthproxy demo" in result.stdout
    assert "--data-dir" in result.stdout


# -- serve ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_a_real_server(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    keys = tmp_path / "state" / "keys.json"
    path = tmp_path / "proxy.toml"
    path.write_text(config(base, keys, port=port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "oauthproxy_adapters", "serve", "--config", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as http:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    meta = http.get(base + "/.well-known/oauth-authorization-server")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            assert meta.status_code == 200
            assert meta.json()["issuer"] == base

            mcp = http.post(base + "/mcp", content=b"{}")
            assert mcp.status_code == 401
            assert mcp.headers["www-authenticate"].startswith(
                f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
            )

            health = http.get(base + "/healthz")
            assert (health.status_code, health.text) == (200, "ok")
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            _out, err = proc.communicate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports the signal.
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert SECRET not in err
    assert "Traceback" not in err


def test_serve_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config("https://mcp.example/", tmp_path / "keys.json"))
    result = run("serve", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: [server].base_url: must not end with '/'")


def test_serve_stack_uses_httptools_and_uvloop_when_installed_else_pure_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``serve`` runs on the ``fast`` extra when it is there and on h11 and asyncio without it."""
    import importlib.util  # noqa: PLC0415

    from oauthproxy_adapters import cli  # noqa: PLC0415

    assert importlib.util.find_spec("httptools") is not None, "the test extra installs [fast]"
    expected_loop = "asyncio" if sys.platform == "win32" else "uvloop"
    assert cli.serve_stack() == ("httptools", expected_loop)

    real = importlib.util.find_spec

    def without_fast(name: str, *args: object) -> object:
        return None if name in ("httptools", "uvloop") else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_fast)
    assert cli.serve_stack() == ("h11", "asyncio")
