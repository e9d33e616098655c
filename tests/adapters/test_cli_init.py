"""``oauthproxy init`` (issue 20): run as a process in a fresh directory, with flags or answers on
stdin. Its file passes ``check-config``, holds no secret, and no answer can add a key to it; it
never replaces a file without ``--force``. (From init to ``serve``: ``tests/e2e/test_first_run.py``.)
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_adapters.init_config import PROVIDER_HINTS, Answers, render, toml_string
from tests.adapters.test_cli import run

SECRET = "init-secret-value-never-written"
TENANT = "11111111-2222-3333-4444-555555555555"
FLAGS = (
    "--provider",
    "github",
    "--client-id",
    "Ov23liInit",
    "--base-url",
    "https://mcp.example.com",
    "--mcp-url",
    "http://127.0.0.1:9100/mcp",
)


def init(tmp_path: Path, *args: str, stdin: str = "", **env: str) -> tuple[int, str, str]:
    """``oauthproxy init *args`` in ``tmp_path``, ``stdin`` as its input."""
    done = subprocess.run(
        [sys.executable, "-m", "oauthproxy_adapters", "init", *args],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    return done.returncode, done.stdout, done.stderr


def test_init_with_flags_writes_a_file_check_config_accepts(tmp_path: Path) -> None:
    code, out, err = init(tmp_path, "--yes", *FLAGS, GITHUB_CLIENT_SECRET=SECRET)
    assert code == 0, err
    written = (tmp_path / "proxy.toml").read_text()
    assert SECRET not in written and SECRET not in out + err
    assert 'client_secret_env = "GITHUB_CLIENT_SECRET"' in written
    keys = tmp_path / ".oauthproxy" / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700
    # The exact callback URL, where GitHub asks for it, and the next commands.
    assert (
        "Register this callback URL at github:\n    https://mcp.example.com/auth/callback\n" in out
    )
    assert "Authorization callback URL" in out
    assert "    oauthproxy check-config proxy.toml\n" in out

    checked = run("check-config", "proxy.toml", cwd=tmp_path, env={"GITHUB_CLIENT_SECRET": SECRET})
    assert checked.returncode == 0, checked.stderr
    assert "  resource  https://mcp.example.com/mcp -> http://127.0.0.1:9100/mcp\n" in (
        checked.stdout
    )
    # Behind a TLS terminator: listen on loopback, the default port.
    server = tomllib.loads(written)["server"]
    assert (server["host"], server["port"]) == ("127.0.0.1", 8000)


def test_init_writes_each_key_with_its_help_from_the_schema(tmp_path: Path) -> None:
    from oauthproxy_adapters import config_schema  # noqa: PLC0415

    code, _out, err = init(tmp_path, "--yes", *FLAGS)
    assert code == 0, err
    written = " ".join(
        line.removeprefix("# ") for line in (tmp_path / "proxy.toml").read_text().splitlines()
    )
    for table, name in (("server", "base_url"), ("upstream", "client_id"), ("store", "url")):
        assert config_schema.key(table, name).doc.replace("`", "") in written, (table, name)


def test_init_refuses_to_replace_files_without_force(tmp_path: Path) -> None:
    assert init(tmp_path, "--yes", *FLAGS)[0] == 0
    config = tmp_path / "proxy.toml"
    keys = tmp_path / ".oauthproxy" / "keys.json"
    before = (config.read_text(), keys.read_text())

    other = [*FLAGS[:3], "Ov23liOther", *FLAGS[4:]]
    code, out, err = init(tmp_path, "--yes", *other)
    assert code == 1
    assert "error: proxy.toml exists; use --force to replace it" in err
    assert "keys.json exists" in err
    assert out == ""
    assert (config.read_text(), keys.read_text()) == before

    code, _out, err = init(tmp_path, "--yes", "--force", *other)
    assert code == 0, err
    assert 'client_id = "Ov23liOther"' in config.read_text()
    assert keys.read_text() != before[1]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_init_non_interactive_lists_every_missing_or_wrong_flag_and_writes_nothing(
    tmp_path: Path,
) -> None:
    code, out, err = init(
        tmp_path, "--yes", "--provider", "gthub", "--base-url", "http://a.example"
    )
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "error: --provider: must be one of github, google, entra, oidc; did you mean `github`?",
        "error: --client-id: required with --non-interactive",
        "error: --mcp-url: required with --non-interactive",
    ]
    code, _out, err = init(
        tmp_path, "--yes", *FLAGS[:4], "--base-url", "http://a.example", "--mcp-url", "ftp://x"
    )
    assert code == 2
    assert err.splitlines() == [
        "error: [server].base_url: must be https (http only on a loopback host)",
        "error: [gateway].upstream_url: must be an http or https URL",
    ]
    assert list(tmp_path.iterdir()) == []


def test_init_oidc_needs_its_issuer(tmp_path: Path) -> None:
    code, _out, err = init(tmp_path, "--yes", "--provider", "oidc", *FLAGS[2:])
    assert code == 2
    assert "error: --issuer: required with --non-interactive" in err.splitlines()


def test_init_entra_single_tenant_passes_check_config_offline(tmp_path: Path) -> None:
    args = ("--provider", "entra", "--tenant", TENANT, *FLAGS[2:])
    code, out, err = init(tmp_path, "-y", *args)
    assert code == 0, err
    assert "App registrations" in out and "export ENTRA_CLIENT_SECRET=" in out
    checked = run("check-config", "proxy.toml", cwd=tmp_path, env={"ENTRA_CLIENT_SECRET": SECRET})
    assert checked.returncode == 0, checked.stderr
    assert f"any account of the Entra tenant {TENANT} may sign in" in checked.stdout


def test_init_asks_again_until_an_answer_is_accepted(tmp_path: Path) -> None:
    answers = [
        "",  # the default provider, github
        "Ov23li Asked",  # refused: a space
        "Ov23liAsked",
        "ftp://mcp.example.com",  # refused
        "https://mcp.example.com/",  # accepted, without its trailing slash
        "http://127.0.0.1:9100/mcp",
    ]
    code, out, err = init(tmp_path, stdin="\n".join(answers) + "\n")
    assert code == 0, err
    assert err.count("Client id of this proxy at github: ") == 2
    assert err.count("Public base URL of this proxy (the issuer) [http://127.0.0.1:8000]: ") == 2
    assert "error: [upstream].client_id: must not contain spaces or control characters" in err
    assert "https://mcp.example.com/auth/callback" in out
    written = tomllib.loads((tmp_path / "proxy.toml").read_text())
    assert written["server"]["base_url"] == "https://mcp.example.com"
    assert written["upstream"]["client_id"] == "Ov23liAsked"


def test_init_stops_when_the_answers_run_out(tmp_path: Path) -> None:
    code, out, err = init(tmp_path, stdin="google\n")
    assert code == 2
    assert out == ""
    assert "error: no answer for --client-id (end of input)" in err
    assert list(tmp_path.iterdir()) == []


def test_every_provider_init_offers_has_a_callback_hint() -> None:
    from oauthproxy_adapters.init_config import INIT_PROVIDERS  # noqa: PLC0415

    assert set(PROVIDER_HINTS) == set(INIT_PROVIDERS)


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(value=_TEXT)
def test_toml_string_round_trips_any_text(value: str) -> None:
    assert tomllib.loads(f"k = {toml_string(value)}") == {"k": value}


@given(client_id=_TEXT, base_url=_TEXT, mcp_url=_TEXT, issuer=_TEXT)
def test_no_answer_adds_a_key_or_a_table_to_the_file(
    client_id: str, base_url: str, mcp_url: str, issuer: str
) -> None:
    """Whatever is typed, the file has exactly the keys init writes, holding the answers."""
    answers = Answers(
        provider="oidc", client_id=client_id, base_url=base_url, mcp_url=mcp_url, issuer=issuer
    )
    document = tomllib.loads(render(answers))
    assert set(document) == {"server", "upstream", "gateway", "store", "keys"}
    assert set(document["server"]) == {"base_url", "host", "port"}
    assert document["upstream"] == {
        "provider": "oidc",
        "client_id": client_id,
        "client_secret_env": "OIDC_CLIENT_SECRET",
        "issuer": issuer,
    }
    assert document["gateway"] == {"upstream_url": mcp_url}
