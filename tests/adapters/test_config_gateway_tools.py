"""``[gateway]`` policy keys and ``[[gateway.tools]]`` rules in ``proxy.toml`` (spec/security.md 38):
what a valid file builds, every mistake named by its key, and the assembled gateway enforcing them."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from oauthproxy_adapters.app import gateway_policy
from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.start_summary import summary_lines
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_core.jsonrpc_inspection import DEFAULT_MAX_MESSAGE_BYTES
from oauthproxy_core.tool_policy import ToolRule
from tests.harness import keys

BASE = """
[server]
base_url = "https://mcp.example"
scopes_supported = ["mcp", "mcp:admin", "offline_access"]

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "s3cret"
"""
GATEWAY = '\n[gateway]\nupstream_url = "http://127.0.0.1:9100/mcp"\n'


def settings(text: str) -> Any:
    return parse_settings(tomllib.loads(BASE + text), environ={})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings(text)
    return list(caught.value.problems)


def test_defaults_read_nothing_and_forward_nothing() -> None:
    plain = settings(GATEWAY)
    assert not plain.gateway_tools.active
    assert plain.gateway_max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert plain.gateway_forward_upstream_token is False


def test_rules_and_options_are_read() -> None:
    loaded = settings(
        GATEWAY
        + """max_message_bytes = 65536
forward_upstream_token = true

[[gateway.tools]]
name = "admin_*"
scopes = ["mcp:admin"]

[[gateway.tools]]
name = "deploy"
groups = ["platform", "acme/ops"]
"""
    )
    assert loaded.gateway_tools.rules == (
        ToolRule(name="admin_*", scopes=("mcp:admin",)),
        ToolRule(name="deploy", groups=("platform", "acme/ops")),
    )
    assert loaded.gateway_max_message_bytes == 65536
    assert loaded.gateway_forward_upstream_token is True


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('name = "x"', "[gateway.tools[0]].scopes: a rule needs scopes, groups or both"),
        ('scopes = ["mcp"]', "[gateway.tools[0]].name: required"),
        ('name = "a[bc]"\nscopes = ["mcp"]', "[gateway.tools[0]].name: may hold visible ASCII"),
        ('name = "a b"\nscopes = ["mcp"]', "[gateway.tools[0]].name: may hold visible ASCII"),
        (
            'name = "x"\nscopes = ["mcp:write"]',
            "[gateway.tools[0]].scopes: 'mcp:write' is not in [server] scopes_supported",
        ),
        (
            'name = "x"\nscopes = ["offline_access"]',
            "[gateway.tools[0]].scopes: offline_access grants refresh tokens",
        ),
        ('name = "x"\ngroups = ["a\\u0007"]', "[gateway.tools[0]].groups: 'a\\x07' is not a group"),
        ('name = "x"\nscopes = "mcp"', "[gateway.tools[0]].scopes: must be a list"),
        ('name = "x"\nscope = ["mcp"]', "[gateway.tools[0]].scope: unknown key; did you mean"),
    ],
)
def test_every_mistake_in_a_rule_names_its_key(rule: str, expected: str) -> None:
    found = problems(GATEWAY + "\n[[gateway.tools]]\n" + rule + "\n")
    assert any(p.startswith(expected) for p in found), found


def test_rules_and_forwarding_need_an_mcp_server() -> None:
    found = problems(
        '\n[gateway]\nforward_upstream_token = true\n\n[[gateway.tools]]\nname = "x"\n'
        'scopes = ["mcp"]\n'
    )
    assert found == [
        "[gateway].tools: tool rules need [gateway] upstream_url (the MCP server they guard)",
        "[gateway].forward_upstream_token: needs [gateway] upstream_url",
    ]


@pytest.mark.parametrize("size", [1023, 64 * 1024 * 1024 + 1])
def test_max_message_bytes_is_bounded(size: int) -> None:
    (found,) = problems(GATEWAY + f"max_message_bytes = {size}\n")
    assert found == "[gateway].max_message_bytes: must be between 1024 and 67108864"


def test_the_assembled_gateway_policy_follows_the_settings() -> None:
    loaded = settings(
        GATEWAY + 'forward_upstream_token = true\n\n[[gateway.tools]]\nname = "a*"\n'
        'scopes = ["mcp:admin"]\n'
    )

    async def nowhere(_request: Any) -> Any:
        raise AssertionError("no upstream call expected")

    proxy = AsyncProxy(loaded.proxy, keys(), AsyncMemoryStore(), nowhere)
    policy = gateway_policy(loaded, proxy)
    assert policy.tools == loaded.gateway_tools
    assert policy.baseline_scopes == loaded.proxy.default_scopes == ("mcp",)
    assert policy.upstream_token is not None
    off = gateway_policy(settings(GATEWAY), proxy)
    assert off.upstream_token is None and not off.active


def test_the_start_summary_names_the_rules_and_warns_of_forwarding() -> None:
    loaded = settings(
        GATEWAY + 'forward_upstream_token = true\n\n[[gateway.tools]]\nname = "a*"\n'
        'scopes = ["mcp:admin"]\n'
    )
    lines = summary_lines(loaded, environ={})
    assert any(
        line.startswith("  resource ") and line.endswith(", 1 tool rule ([[gateway.tools]])")
        for line in lines
    ), lines
    assert any(line.startswith("warning: [gateway].forward_upstream_token:") for line in lines)
    quiet = summary_lines(settings(GATEWAY), environ={})
    assert not any("forward_upstream_token" in line or "tool rule" in line for line in quiet)
