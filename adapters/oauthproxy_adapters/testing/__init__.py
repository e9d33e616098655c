"""A testing kit for applications that embed oauthproxy, and for oauthproxy's own test suite.

Three parts, each its own module:

- ``flow``: the MCP client's side of the OAuth flow as sans-IO steps (register with RFC 7591 DCR,
  authorize with PKCE, approve consent, pass through the upstream provider, redeem the code,
  refresh), driven in process through ``httpx.ASGITransport`` or against a live base URL;
- ``provider``: ``FakeProvider``, a GitHub-shaped upstream provider that checks what a real one
  checks, usable as the proxy's HTTP client (no sockets), as an ASGI app, or on loopback, and
  ``upstream_toml``, the ``[upstream]`` table that points ``oauthproxy serve`` at it;
- ``serve``: ``ServeProcess``, ``oauthproxy serve`` as a child process on a free loopback port,
  started until healthy and stopped by its PID; ``AppThread``, an ASGI app on loopback in a thread.

``in_memory_proxy`` assembles an ``AsyncProxy`` for a test: a memory store, a fresh keyring, and a
``FakeProvider`` as its upstream. The recipe in spec/docs/recipes/testing.md shows a whole test.

Nothing here is meant for production: the provider signs in anyone, and the proxy it assembles keeps
its state in memory.
"""

from __future__ import annotations

from typing import Any

from oauthproxy_core import ProxyConfig

from ..keygen import new_keyring
from ..proxy import AsyncProxy, Proxy
from ..stores.memory import AsyncMemoryStore, MemoryStore
from .flow import (
    CONSENT_FORM_HEADERS,
    Call,
    Flow,
    FlowError,
    Reply,
    Session,
    adrive_httpx,
    asgi_client,
    bearer,
    drive_httpx,
    login,
    refresh,
)
from .provider import FakeProvider, ProviderError, UpstreamUser, upstream_toml
from .serve import AppThread, ServeError, ServeProcess, free_port

__all__ = [
    "CONSENT_FORM_HEADERS",
    "AppThread",
    "Call",
    "FakeProvider",
    "Flow",
    "FlowError",
    "ProviderError",
    "Reply",
    "ServeError",
    "ServeProcess",
    "Session",
    "UpstreamUser",
    "adrive_httpx",
    "asgi_client",
    "bearer",
    "drive_httpx",
    "free_port",
    "in_memory_proxy",
    "in_memory_sync_proxy",
    "login",
    "proxy_config",
    "refresh",
    "upstream_toml",
]


def proxy_config(issuer: str, provider: FakeProvider, **overrides: Any) -> ProxyConfig:
    """A ``ProxyConfig`` for ``issuer`` in front of ``provider``; ``overrides`` set other fields
    (``mcp_path``, ``scopes_supported``, ...). The provider's ``redirect_uri`` must be the proxy's
    callback: ``issuer + "/auth/callback"`` unless ``callback_path`` says otherwise."""
    config = ProxyConfig(issuer=issuer, upstream=provider.profile(), **overrides)
    if config.callback_url != provider.redirect_uri:
        raise ValueError(
            f"the provider redirects to {provider.redirect_uri}, the proxy's callback is "
            f"{config.callback_url}"
        )
    return config


def in_memory_proxy(config: ProxyConfig, provider: FakeProvider, **options: Any) -> AsyncProxy:
    """An ``AsyncProxy`` for ``config`` with a memory store and a fresh keyring, whose calls to the
    upstream provider ``provider`` answers in process. ``options`` go to ``AsyncProxy``."""
    return AsyncProxy(config, new_keyring(), AsyncMemoryStore(), provider.async_http, **options)


def in_memory_sync_proxy(config: ProxyConfig, provider: FakeProvider, **options: Any) -> Proxy:
    """The blocking ``Proxy`` counterpart of ``in_memory_proxy`` (WSGI applications)."""
    return Proxy(config, new_keyring(), MemoryStore(), provider, **options)
