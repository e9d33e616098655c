"""``[[trusted_issuers]]`` and ``[[enterprise_issuers]]`` in ``proxy.toml`` (config_schema.py,
config_file.py): a valid file builds the core's records with the documented defaults, and every
mistake is reported at its key, the ones about several entries by the table (spec/security.md 37)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from oauthproxy_adapters.config_file import ConfigError, parse_settings

BASE = """
[server]
base_url = "https://mcp.example"

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "upstream-secret-0123456789"

[[clients.static]]
client_id = "agent"
client_secret = "agent-secret-0123456789"
redirect_uris = ["https://agent.example/cb"]

[[clients.static]]
client_id = "public"
redirect_uris = ["http://127.0.0.1:9/cb"]
"""

GOOD = (
    BASE
    + """
[[trusted_issuers]]
issuer = "https://login.example.com/"
jwks_uri = "https://login.example.com/.well-known/jwks.json"
subject_prefix = "corp"
scopes_claim = "scp"

[[trusted_issuers]]
issuer = "https://partner.example"
jwks_uri = "https://partner.example/keys"
audience = "api://mcp"
subject_prefix = "partner"
algorithms = ["PS256"]

[[enterprise_issuers]]
issuer = "https://login.example.com/"
jwks_uri = "https://login.example.com/.well-known/jwks.json"
subject_prefix = "corp"
clients = ["agent"]
"""
)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(text), environ={})
    return list(caught.value.problems)


def test_invariant_37_a_valid_file_builds_the_records_with_their_defaults() -> None:
    proxy = parse_settings(tomllib.loads(GOOD), environ={}).proxy
    corp, partner = proxy.trusted_issuers
    assert corp.issuer == "https://login.example.com/"  # the trailing slash is kept
    assert corp.audience == "https://mcp.example/mcp"  # the protected resource by default
    assert corp.scopes_claim == "scp"
    assert corp.algorithms == ("RS256", "ES256")
    assert partner.audience == "api://mcp"
    assert partner.scopes_claim == "scope"
    assert partner.algorithms == ("PS256",)
    (enterprise,) = proxy.enterprise_issuers
    assert enterprise.clients == ("agent",)
    assert enterprise.subject_prefix == "corp"  # one issuer in both tables, one prefix


def test_invariant_37_every_mistake_in_an_entry_names_its_key() -> None:
    problems = _problems(
        BASE
        + """
[[trusted_issuers]]
issuer = "ftp://login.example.com"
jwks_uri = "http://login.example.com/keys"
subject_prefix = "Corp"
algorithms = ["HS256", "none"]
scope_claim = "scp"

[[enterprise_issuers]]
issuer = "https://idp.example?tenant=1"
jwks_uri = "https://10.0.0.5/keys"
subject_prefix = "acme"
clients = []
"""
    )
    assert problems == [
        "[trusted_issuers[0]].issuer: must be an absolute https URL",
        "[trusted_issuers[0]].jwks_uri: must use https",
        "[trusted_issuers[0]].subject_prefix: must be 1 to 32 of a-z, 0-9, '.', '_', '-' "
        "(starting with a letter or digit)",
        "[trusted_issuers[0]].algorithms: must list some of RS256, RS384, RS512, PS256, PS384, "
        "PS512, ES256, ES384, ES512, EdDSA, Ed25519",
        "[trusted_issuers[0]].scope_claim: unknown key; did you mean `scopes_claim`?",
        "[enterprise_issuers[0]].issuer: must not have a query",
        "[enterprise_issuers[0]].jwks_uri: must name a public address",
        "[enterprise_issuers[0]].clients: required, at least one `[[clients.static]]` client id",
    ]


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (
            '[[trusted_issuers]]\nissuer = "https://mcp.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "corp"',
            "[trusted_issuers] issuer must not be this proxy's own issuer",
        ),
        (
            '[[trusted_issuers]]\nissuer = "https://a.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "github"',
            "[trusted_issuers] subject_prefix must differ from the provider's name",
        ),
        (
            '[[trusted_issuers]]\nissuer = "https://a.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "corp"\naudience = "https://mcp.example"',
            "[trusted_issuers] audience must not be this proxy's issuer",
        ),
        (
            '[[trusted_issuers]]\nissuer = "https://a.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "corp"\n[[trusted_issuers]]\nissuer = "https://b.example"'
            '\njwks_uri = "https://b.example/k"\nsubject_prefix = "corp"',
            "[trusted_issuers] subject_prefix corp is another issuer's",
        ),
        (
            '[[enterprise_issuers]]\nissuer = "https://a.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "corp"\nclients = ["public"]',
            "[enterprise_issuers] clients: public is not a pre-registered confidential client",
        ),
        (
            '[[enterprise_issuers]]\nissuer = "https://a.example"\njwks_uri = "https://a.example/k"'
            '\nsubject_prefix = "corp"\nclients = ["nobody"]',
            "[enterprise_issuers] clients: nobody is not a pre-registered confidential client",
        ),
        (
            "[trusted_issuers]\nissuer = 1",
            "[trusted_issuers]: must be an array of tables ([[trusted_issuers]])",
        ),
    ],
)
def test_invariant_37_rules_across_entries_are_reported_by_table(
    entries: str, problem: str
) -> None:
    assert _problems(BASE + entries) == [problem]


def test_the_documentation_pages_examples_load() -> None:
    """spec/docs/enterprise.md shows these tables: what it shows is a file that loads."""
    page = Path(__file__).resolve().parents[2] / "spec" / "docs" / "enterprise.md"
    blocks = re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 2
    server = """
[server]
base_url = "https://mcp.example.com"

[upstream]
provider = "github"
client_id = "Iv1.abc"
client_secret = "upstream-secret-0123456789"
"""
    proxy = parse_settings(tomllib.loads(server + "\n".join(blocks)), environ={}).proxy
    assert proxy.trusted_issuers[0].audience == proxy.resource
    assert proxy.enterprise_issuers[0].clients == ("agent",)
