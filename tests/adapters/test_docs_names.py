"""The quick starts and recipes in spec/docs/ name real APIs: every ``module.name`` they mention exists.

The examples they include are built into the pages verbatim (pymdownx.snippets, checked by the
strict docs build) and run by tests/integrations/test_examples.py; this test covers the names the
prose mentions around them, so a rename fails here instead of leaving the documentation wrong."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "spec" / "docs"

NAMES = [
    ("oauthproxy_adapters.mcp_sdk", "protect"),
    ("oauthproxy_adapters.mcp_sdk", "mcp_auth"),
    ("oauthproxy_adapters.mcp_sdk", "with_authorization_server"),
    ("oauthproxy_adapters.mcp_sdk", "upstream_token"),
    ("oauthproxy_adapters.integrations.proxies", "async_proxy"),
    ("oauthproxy_adapters.integrations.proxies", "sync_proxy"),
    ("oauthproxy_adapters.integrations.fastmcp", "OAuthProxyAuth"),
    ("oauthproxy_adapters.integrations.fastmcp", "upstream_token"),
    ("oauthproxy_adapters.integrations.starlette", "install"),
    ("oauthproxy_adapters.integrations.starlette", "require_principal"),
    ("oauthproxy_adapters.integrations.flask", "oauthproxy_blueprint"),
    ("oauthproxy_adapters.integrations.flask", "require_oauth"),
    ("oauthproxy_adapters.integrations.django", "oauthproxy_urls"),
    ("oauthproxy_adapters.integrations.django", "oauth_required"),
    ("oauthproxy_adapters.asgi", "OAuthProxyApp"),
    ("oauthproxy_adapters.wsgi", "OAuthProxyWSGI"),
    ("oauthproxy_adapters.config_file", "load_settings"),
    # recipes/testing.md
    ("oauthproxy_adapters.testing", "FakeProvider"),
    ("oauthproxy_adapters.testing", "in_memory_proxy"),
    ("oauthproxy_adapters.testing", "proxy_config"),
    ("oauthproxy_adapters.testing", "asgi_client"),
    ("oauthproxy_adapters.testing", "adrive_httpx"),
    ("oauthproxy_adapters.testing", "drive_httpx"),
    ("oauthproxy_adapters.testing", "login"),
    ("oauthproxy_adapters.testing", "refresh"),
    ("oauthproxy_adapters.testing", "FlowError"),
    ("oauthproxy_adapters.testing", "AppThread"),
    ("oauthproxy_adapters.testing.serve", "ServeProcess"),
    ("oauthproxy_adapters.testing.flow", "Session"),
]


@pytest.mark.parametrize(("module", "name"), NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_documented_name_exists(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} is documented"


def test_every_included_example_exists() -> None:
    root = DOCS.parents[1]
    for page in sorted(DOCS.glob("**/*.md")):
        for line in page.read_text().splitlines():
            if line.startswith('--8<-- "'):
                target = line.split('"')[1]
                assert (root / target).is_file(), f"{page.name} includes missing {target}"
