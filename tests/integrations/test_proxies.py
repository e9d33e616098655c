"""``integrations.proxies``: the proxy an embedding application builds from ``proxy.toml`` is the
one ``oauthproxy serve`` would run (store, keyring created 0600, safe fetcher for CIMD)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.http_clients import AsyncHttpClient, SyncHttpClient
from oauthproxy_adapters.integrations.fastmcp import OAuthProxyAuth
from oauthproxy_adapters.integrations.proxies import (
    async_proxy,
    close_async_proxy,
    close_sync_proxy,
    sync_proxy,
)
from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher, SyncSafeFetcher
from oauthproxy_adapters.stores.sqlite import AsyncSQLiteStore, SQLiteStore

CONFIG = """
[server]
base_url = "https://mcp.example.com"
mcp_path = "/mcp"

[upstream]
provider = "github"
client_id = "Iv1.0123456789abcdef"
client_secret = "s3cret"

[store]
url = "sqlite:///{db}"

[keys]
file = "{keys}"
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(db=tmp_path / "state.db", keys=tmp_path / "k" / "keys.json"))
    return path


def test_sync_and_async_proxies_share_keys_and_store(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path))
    proxy = sync_proxy(settings)
    keys = tmp_path / "k" / "keys.json"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600  # created on first use, private
    assert isinstance(proxy.store, SQLiteStore) and isinstance(proxy.http, SyncHttpClient)
    assert isinstance(proxy.fetch, SyncSafeFetcher)  # documents only through the SSRF-safe fetcher
    assert proxy.config.resource == "https://mcp.example.com/mcp"

    aproxy = async_proxy(settings)  # a second process or thread: the same keyring file
    assert isinstance(aproxy.store, AsyncSQLiteStore) and isinstance(aproxy.http, AsyncHttpClient)
    assert isinstance(aproxy.fetch, AsyncSafeFetcher)
    assert aproxy.keys.active_signing.kid == proxy.keys.active_signing.kid
    close_sync_proxy(proxy)
    asyncio.run(close_async_proxy(aproxy))


def test_fastmcp_provider_from_a_config_file(tmp_path: Path) -> None:
    auth = OAuthProxyAuth.from_config(write(tmp_path), required_scopes=["mcp"])
    assert auth.proxy.config.issuer == "https://mcp.example.com"
    assert auth.required_scopes == ["mcp"]
    asyncio.run(close_async_proxy(auth.proxy))
