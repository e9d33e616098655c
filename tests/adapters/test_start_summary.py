"""What ``serve`` and ``check-config`` say at start (issue 20, "say what matters at start"), read from
the commands run as processes: issuer, resource, provider, store with its durability, who may sign
in, and one ``warning:`` line for each exposure the file makes; never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthproxy_adapters.testing.serve import ServeProcess, free_port, oauthproxy_command
from tests.adapters.test_cli import SECRET, run

TENANT = "11111111-2222-3333-4444-555555555555"
METRICS_TOKEN = "metrics-token-never-printed-0123"


def _github(port: int, extra: str = "", store: str = 'url = "memory://"') -> str:
    return f"""
[server]
base_url = "http://127.0.0.1:{port}"
port = {port}

[upstream]
provider = "github"
client_id = "Ov23liSummary"
client_secret = "{SECRET}"

[store]
{store}

[keys]
file = "keys.json"
{extra}
"""


def _warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("warning: ")]


def test_check_config_and_serve_print_the_same_summary_and_warnings(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "proxy.toml"
    config.write_text(
        _github(
            port, extra="[metrics]\nenabled = true\n[clients]\ncimd_allow_loopback = true\n"
        ).replace(f"port = {port}\n", f'port = {port}\nforwarded_allow_ips = ["0.0.0.0/0"]\n')
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[:7] == [
        f"ok: {config}",
        f"  issuer    {base}",
        f"  resource  {base}/mcp (no [gateway]: 404 after sign-in)",
        f"  provider  github, client_id Ov23liSummary, callback {base}/auth/callback",
        "  store     memory://: this process only, lost at every restart",
        "  sign-in   any account at github (github.com) may sign in",
        "  clients   dynamic registration; metadata documents from any host",
    ]
    warned = _warnings(checked.stdout)
    assert [w.split(":", 2)[1].strip() for w in warned] == [
        "[store].url",
        "[access]",
        "[metrics].bearer_token",
        "[server].forwarded_allow_ips",
        "[clients].cimd_allow_loopback",
    ]
    assert len(lines) == 7 + len(warned)

    pytest.importorskip("prometheus_client")
    command = [*oauthproxy_command(), "serve", "--config", str(config)]
    proxy = ServeProcess(config, port, tmp_path, name="summary", command=command).start()
    proxy.stop()
    served = proxy.output()
    served = served[served.index("oauthproxy: listening") :].splitlines()
    assert served[0] == f"oauthproxy: listening on 127.0.0.1:{port}"
    assert served[1 : len(lines)] == lines[1:]
    assert SECRET not in checked.stdout + checked.stderr + proxy.output()


def test_a_careful_configuration_gets_no_warning(tmp_path: Path) -> None:
    """SQLite, loopback http, one Entra tenant, metrics behind a token: nothing to warn about."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[server]
base_url = "http://127.0.0.1:8000"

[upstream]
provider = "entra"
tenant = "{TENANT}"
client_id = "11111111-0000-0000-0000-000000000000"
client_secret = "{SECRET}"

[store]
url = "sqlite:///data/state.db"

[gateway]
upstream_url = "http://127.0.0.1:9100/mcp"

[metrics]
enabled = true
bearer_token = "{METRICS_TOKEN}"
"""
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert _warnings(checked.stdout) == []
    assert f"  sign-in   any account of the Entra tenant {TENANT} may sign in\n" in checked.stdout
    assert (
        f"  store     sqlite {tmp_path / 'data' / 'state.db'}: survives restarts, one machine only\n"
        in checked.stdout
    )
    assert "  resource  http://127.0.0.1:8000/mcp -> http://127.0.0.1:9100/mcp\n" in checked.stdout
    assert SECRET not in checked.stdout and METRICS_TOKEN not in checked.stdout
    assert not (tmp_path / "data").exists(), "check-config creates no store"


@pytest.mark.parametrize(
    ("tenant", "who"),
    [
        ("common", "any Microsoft account (work, school or personal) may sign in"),
        ("organizations", "any work or school account of any Entra tenant may sign in"),
    ],
)
def test_a_multi_tenant_entra_app_says_who_may_sign_in_and_warns(
    tmp_path: Path, tenant: str, who: str
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[server]\nbase_url = "https://mcp.example.com"\n'
        f'[upstream]\nprovider = "entra"\ntenant = "{tenant}"\nclient_id = "c"\n'
        f'client_secret = "{SECRET}"\n'
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"  sign-in   {who}\n" in checked.stdout
    assert _warnings(checked.stdout) == [
        f"warning: [access]: no rule, so {who}; dynamic registration is open, so anyone with such "
        "an account can use https://mcp.example.com/mcp (add [access] rules: "
        "allowed_email_domains, github_orgs, allowed_groups, ...)"
    ]


def test_access_rules_replace_the_open_sign_in_warning_with_the_rules(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[server]\nbase_url = "https://mcp.example.com"\n'
        f'[upstream]\nprovider = "github"\nclient_id = "c"\nclient_secret = "{SECRET}"\n'
        '[access]\ngithub_orgs = ["acme/platform"]\nallowed_emails = ["Ada@Example.com"]\n'
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert (
        "  sign-in   only the verified addresses ada@example.com; or members of the GitHub "
        "organizations/teams acme/platform may sign in\n"
    ) in checked.stdout
    assert not [w for w in _warnings(checked.stdout) if "[access]" in w]


def test_redis_store_is_described_as_shared_without_its_password(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        _github(8000, store=f'url = "redis://:{SECRET}@127.0.0.1:6379/0?prefix=summary:"')
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert (
        "  store     redis://:***@127.0.0.1:6379/0?prefix=summary:: shared by every instance "
        "using it; held in memory by Redis unless the Redis server persists it (RDB or AOF)\n"
    ) in checked.stdout
    assert SECRET not in checked.stdout


def test_http_issuer_served_beyond_loopback_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        _github(8000, store="").replace("port = 8000\n", 'port = 8000\nhost = "0.0.0.0"\n')
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert (
        "warning: [server].base_url: plain http while [server].host 0.0.0.0 accepts connections "
        "from other machines: codes and tokens would cross the network unencrypted"
    ) in _warnings(checked.stdout)


def test_forwarded_headers_believed_from_anyone_by_environment_are_warned_about(
    tmp_path: Path,
) -> None:
    """Without ``forwarded_allow_ips``, ``serve`` leaves the choice to uvicorn, which reads
    ``$FORWARDED_ALLOW_IPS``; ``*`` there lets any client choose its address (spec/security.md 35)."""
    config = tmp_path / "proxy.toml"
    config.write_text(_github(8000))
    trusting = run("check-config", str(config), cwd=tmp_path, env={"FORWARDED_ALLOW_IPS": "*"})
    plain = run("check-config", str(config), cwd=tmp_path, env={"FORWARDED_ALLOW_IPS": ""})
    assert any("[server].forwarded_allow_ips" in w for w in _warnings(trusting.stdout))
    assert not any("[server].forwarded_allow_ips" in w for w in _warnings(plain.stdout))


def test_without_store_table_the_summary_names_the_sqlite_default(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(_github(8000, store="").replace("[store]\n", ""))
    checked = run("check-config", str(config), cwd=tmp_path, env={"OAUTHPROXY_DATA_DIR": ""})
    assert checked.returncode == 0, checked.stderr
    path = tmp_path / ".oauthproxy" / "state.db"
    assert f"  store     sqlite {path}: survives restarts, one machine only\n" in checked.stdout
    assert not any("[store].url" in w for w in _warnings(checked.stdout))


def test_the_readme_shows_what_check_config_prints_for_its_example(tmp_path: Path) -> None:
    """The README's start summary is the real one for its configuration example (run in
    /srv/mcp there, in a fresh directory here)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = readme.split("```text\noauthproxy: listening on ", 1)[1].split("```", 1)[0]
    config = tmp_path / "proxy.toml"
    config.write_text(example)
    checked = run("check-config", str(config), cwd=tmp_path, env={"GITHUB_CLIENT_SECRET": SECRET})
    assert checked.returncode == 0, checked.stderr
    expected = shown.splitlines()[1:]
    assert checked.stdout.splitlines()[1:] == [
        line.replace("/srv/mcp", str(tmp_path)) for line in expected
    ]


def test_the_clients_line_and_warnings_follow_the_admission_policy(tmp_path: Path) -> None:
    """``[clients]``: the summary says which clients may come in; the open sign-in warning names
    what lets any client in, or that only admitted clients do; a configuration that admits no
    client, or host lists that ``cimd = false`` leaves unused, is warned about."""
    config = tmp_path / "proxy.toml"
    base = (
        '[server]\nbase_url = "https://mcp.example.com"\n'
        f'[upstream]\nprovider = "github"\nclient_id = "c"\nclient_secret = "{SECRET}"\n'
    )
    cases = [
        (
            "dcr = false\n",
            "no dynamic registration; metadata documents from any host",
            "metadata documents from any host are accepted, so anyone with such an account can use",
        ),
        (
            'dcr = false\ncimd_allowed_hosts = ["claude.ai", "*.VSCode.dev"]\n'
            'cimd_denied_hosts = ["evil.vscode.dev"]\nredirect_hosts = ["127.0.0.1", "[::1]"]\n',
            "no dynamic registration; metadata documents from claude.ai, *.vscode.dev except "
            "evil.vscode.dev; redirect URIs only on 127.0.0.1, ::1",
            "[clients] admits only some clients, but anyone with such an account can use "
            "https://mcp.example.com/mcp through them",
        ),
    ]
    for clients, line, warned in cases:
        config.write_text(base + "[clients]\n" + clients)
        checked = run("check-config", str(config), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert f"  clients   {line}\n" in checked.stdout
        (access,) = [w for w in _warnings(checked.stdout) if w.startswith("warning: [access]")]
        assert warned in access

    config.write_text(
        base + '[clients]\ndcr = false\ncimd = false\ncimd_allowed_hosts = ["claude.ai"]\n'
    )
    checked = run("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "  clients   no dynamic registration; no metadata documents\n" in checked.stdout
    # Nobody can come in: that is the warning, not who could sign in through nobody.
    assert _warnings(checked.stdout) == [
        "warning: [clients]: dcr = false, cimd = false and no [[clients.static]]: no client can "
        "sign anybody in",
        "warning: [clients].cimd_allowed_hosts, cimd_denied_hosts: unused while cimd = false",
    ]


def test_the_clients_line_names_device_sign_in_when_enabled(tmp_path: Path) -> None:
    """``[device] enabled``: the summary says where device sign-in happens (RFC 8628)."""
    config = tmp_path / "proxy.toml"
    base = (
        '[server]\nbase_url = "https://mcp.example.com"\n'
        f'[upstream]\nprovider = "github"\nclient_id = "c"\nclient_secret = "{SECRET}"\n'
    )
    for device, named in (("", False), ("[device]\nenabled = true\n", True)):
        config.write_text(base + device)
        checked = run("check-config", str(config), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        line = "device sign-in at https://mcp.example.com/device ([device], RFC 8628)"
        assert (line in checked.stdout) is named
