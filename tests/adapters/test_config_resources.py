"""``[[resources]]`` in ``proxy.toml`` (spec/security.md 40): what a valid file builds, every mistake
named by its key, the single-resource form unchanged, and what ``serve`` prints and serves."""

from __future__ import annotations

import asyncio
import json
import tomllib
from typing import Any

import pytest

from oauthproxy_adapters.app import ResourceGateways, resource_gateway
from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.driver import run
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.start_summary import summary_lines
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_core import AuthorizationServer, Request
from oauthproxy_core.handlers.metadata import authorization_server_metadata
from tests.harness import keys

BASE = """
[server]
base_url = "https://mcp.example"
scopes_supported = ["mcp", "mcp:admin", "wiki"]
service_name = "Example"

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "s3cret"
"""

TWO = """
[[resources]]
path = "/github-tools"
upstream_url = "http://127.0.0.1:9101/mcp"
scopes = ["mcp"]
forward_upstream_token = true

[[resources.tools]]
name = "admin_*"
scopes = ["mcp:admin"]

[[resources]]
path = "/wiki"
upstream_url = "http://127.0.0.1:9102/mcp"
name = "Team wiki"
scopes = ["wiki"]

[resources.access]
allowed_groups = ["writers"]
github_orgs = ["acme"]
"""


def settings(text: str) -> Any:
    return parse_settings(tomllib.loads(BASE + text), environ={})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings(text)
    return list(caught.value.problems)


def test_resources_build_the_core_records_and_one_gateway_each() -> None:
    loaded = settings(TWO)
    proxy = loaded.proxy
    assert proxy.resource_urls == (
        "https://mcp.example/github-tools",
        "https://mcp.example/wiki",
    )
    assert proxy.resource == "https://mcp.example/github-tools"  # the default: the first
    tools, wiki = proxy.resources
    assert (tools.name, tools.scopes, tools.access) == ("Example", ("mcp",), None)
    assert (wiki.name, wiki.scopes) == ("Team wiki", ("wiki",))
    assert wiki.access is not None and wiki.access.allowed_groups == ("writers",)
    # A resource's rule on GitHub organizations makes the sign-in read them (and ask read:org).
    assert proxy.facts_policy.github_orgs == ("acme",)
    assert "read:org" in proxy.upstream.scopes
    first, second = loaded.resources
    assert first.forward_upstream_token and [r.name for r in first.tools.rules] == ["admin_*"]
    assert not second.forward_upstream_token and not second.tools.rules
    assert proxy.resource_at("/wiki/x") == "https://mcp.example/wiki"
    assert proxy.resource_at("/wikipedia") is None
    assert proxy.lifetimes.upstream_session == 3600


def test_the_single_resource_form_is_unchanged() -> None:
    loaded = settings('[gateway]\nupstream_url = "http://127.0.0.1:9100/mcp"\n')
    assert loaded.proxy.resources == () and loaded.resources == ()
    assert loaded.proxy.resource_urls == ("https://mcp.example/mcp",)
    assert loaded.proxy.resource_paths == ("/mcp",)
    server = loaded.proxy.resource_server("https://mcp.example/mcp")
    assert server is not None and server.scopes == loaded.proxy.default_scopes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            TWO + '\n[gateway]\nupstream_url = "http://127.0.0.1:9100/mcp"\n',
            "[gateway].upstream_url: with [[resources]], each resource names its own",
        ),
        ('[[resources]]\npath = "wiki"\nupstream_url = "http://127.0.0.1:1/mcp"\n', "path"),
        ('[[resources]]\npath = "/a/../b"\nupstream_url = "http://127.0.0.1:1/mcp"\n', "path"),
        ('[[resources]]\npath = "/wiki/"\nupstream_url = "http://127.0.0.1:1/mcp"\n', "path"),
        ('[[resources]]\npath = "/wiki"\nupstream_url = "ftp://x/mcp"\n', "upstream_url"),
        ('[[resources]]\npath = "/wiki"\n', "[resources[0]].upstream_url: required"),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            'scopes = ["nope"]\n',
            "[resources[0]].scopes: 'nope' is not in [server] scopes_supported",
        ),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            '[resources.access]\nallowed_emails = ["not-an-address"]\n',
            "[resources[0].access].allowed_emails",
        ),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            '[resources.access]\ngroups_claim = "roles"\n',
            "[resources[0].access].groups_claim: unknown key",
        ),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            '[[resources.tools]]\nname = "x y"\nscopes = ["mcp"]\n',
            "[resources[0].tools[0]].name",
        ),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:2/mcp"\n',
            "lists the path /w twice",
        ),
        (
            '[[resources]]\npath = "/w"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
            '[[resources]]\npath = "/w/x"\nupstream_url = "http://127.0.0.1:2/mcp"\n',
            "/w/x lies below /w",
        ),
    ],
)
def test_every_mistake_is_named_by_its_key(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in line for line in found), found


def test_mcp_path_beside_resources_is_refused_rather_than_ignored() -> None:
    text = BASE.replace("[server]\n", '[server]\nmcp_path = "/mcp"\n') + TWO
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(text), environ={})
    assert any("[server].mcp_path: with [[resources]]" in p for p in caught.value.problems)


def test_upstream_session_lifetime_is_bounded() -> None:
    assert (
        settings(TWO + "[lifetimes]\nupstream_session = 0\n").proxy.lifetimes.upstream_session == 0
    )
    found = problems(TWO + "[lifetimes]\nupstream_session = 90000\n")
    assert any(line.startswith("[lifetimes].upstream_session: must be between") for line in found)


def test_summary_names_every_resource_and_each_forwarding_server() -> None:
    lines = summary_lines(settings(TWO), environ={})
    rows = [line for line in lines if line.strip().startswith("resource")]
    assert len(rows) == 2
    assert "https://mcp.example/github-tools -> http://127.0.0.1:9101/mcp, 1 tool rule" in rows[0]
    assert "https://mcp.example/wiki -> http://127.0.0.1:9102/mcp" in rows[1]
    assert any("/github-tools forward_upstream_token" in line for line in lines)


def _prm(server: AuthorizationServer, path: str) -> Any:
    req = Request(method="GET", path=path, query="", headers=(), body=b"", remote_addr="")
    resp = run(server.handle(req, now=1_800_000_000, random=lambda n: b"\0" * n), MemoryStore())
    assert resp.status == 200, (path, resp.status)
    return json.loads(resp.body)


def test_each_resource_has_its_own_metadata_and_the_issuer_lists_them_all() -> None:
    loaded = settings(TWO)
    server = AuthorizationServer(loaded.proxy, keys())
    tools = _prm(server, "/.well-known/oauth-protected-resource/github-tools")
    wiki = _prm(server, "/.well-known/oauth-protected-resource/wiki")
    assert (tools["resource"], tools["resource_name"], tools["scopes_supported"]) == (
        "https://mcp.example/github-tools",
        "Example",
        ["mcp"],
    )
    assert (wiki["resource"], wiki["resource_name"], wiki["scopes_supported"]) == (
        "https://mcp.example/wiki",
        "Team wiki",
        ["wiki"],
    )
    bare = _prm(server, "/.well-known/oauth-protected-resource")
    assert bare["resource"] == "https://mcp.example/github-tools"
    ctx = server.context(now=1_800_000_000, random=lambda n: b"\0" * n)
    assert authorization_server_metadata(ctx)["protected_resources"] == [
        "https://mcp.example/github-tools",
        "https://mcp.example/wiki",
    ]


def test_resource_gateways_route_by_path_and_answer_404_elsewhere() -> None:
    asyncio.run(_route_by_path())


async def _route_by_path() -> None:
    loaded = settings(TWO)
    proxy = AsyncProxy(loaded.proxy, keys(), AsyncMemoryStore(), http=None)  # type: ignore[arg-type]
    gateways = ResourceGateways(tuple(resource_gateway(loaded, proxy, r) for r in loaded.resources))
    try:
        assert [g.mount_path for g in gateways.gateways] == ["/github-tools", "/wiki"]
        assert gateways.gateways[0].policy is not None  # tool rules and forwarding
        assert gateways.gateways[1].policy is None  # neither: a plain gateway
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/elsewhere", "headers": []}
        await gateways(scope, receive, send)
        assert sent[0]["status"] == 404
        # Mounted alone, it answers the ASGI lifespan and closes its gateways' clients at shutdown.
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def lifespan_receive() -> dict[str, Any]:
            return next(messages)

        sent.clear()
        await gateways({"type": "lifespan"}, lifespan_receive, send)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
        assert all(g._client.is_closed for g in gateways.gateways)
    finally:
        await gateways.aclose()


TRUSTED = """
[[trusted_issuers]]
issuer = "https://login.example.com/"
jwks_uri = "https://login.example.com/jwks.json"
subject_prefix = "corp"
"""


def test_a_trusted_issuer_is_for_the_resource_its_path_names() -> None:
    """spec/security.md 40: ``[[trusted_issuers]] resource`` picks the one resource (and, unless
    ``audience`` says otherwise, the ``aud``) of the issuer's tokens; the default is the first."""
    (default,) = settings(TWO + TRUSTED).proxy.trusted_issuers
    assert (default.resource, default.audience) == ("", "https://mcp.example/github-tools")
    (wiki,) = settings(TWO + TRUSTED + 'resource = "/wiki"\n').proxy.trusted_issuers
    assert (wiki.resource, wiki.audience) == ("https://mcp.example/wiki", wiki.resource)
    (own,) = settings(
        TWO + TRUSTED + 'resource = "/wiki"\naudience = "api://wiki"\n'
    ).proxy.trusted_issuers
    assert (own.resource, own.audience) == ("https://mcp.example/wiki", "api://wiki")
    found = problems(TWO + TRUSTED + 'resource = "/elsewhere"\n')
    assert any(
        "[trusted_issuers[0]].resource: must be the path of a protected resource" in line
        and "/wiki" in line
        for line in found
    ), found


@pytest.mark.parametrize(
    "path",
    ["/device", "/token", "/register/abc", "/jwks.json", "/.well-known/oauth-authorization-server"],
)
def test_a_resource_at_an_endpoint_of_the_authorization_server_is_refused(path: str) -> None:
    """The front door serves the endpoint first, so such a resource would never reach its MCP
    server: the configuration is refused, naming the path and the endpoint."""
    text = f'[[resources]]\npath = "{path}"\nupstream_url = "http://127.0.0.1:1/mcp"\n'
    found = problems(text)
    assert any(f"protected resource path {path} is the authorization server's" in p for p in found)
    single = BASE.replace("[server]\n", f'[server]\nmcp_path = "{path}"\n')
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(single), environ={})
    assert any(path in p for p in caught.value.problems), caught.value.problems
