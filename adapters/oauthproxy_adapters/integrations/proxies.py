"""A ``Proxy`` or ``AsyncProxy`` from validated ``proxy.toml`` settings, for embedding.

The standalone server (``oauthproxy serve``, ``..app.build_app``) and an application embedding the
proxy read the same file::

    settings = load_settings(os.environ["OAUTHPROXY_CONFIG"])     # ..config_file
    proxy = async_proxy(settings)                                   # ASGI: FastMCP, FastAPI, mcp SDK
    proxy = sync_proxy(settings)                                    # WSGI: Flask, Django

Both assemble what ``build_app`` assembles: the store from ``[store] url``, the keyring from
``[keys] file`` (created with mode 0600 when missing), one pooled HTTP client for the upstream
provider, and the SSRF-safe fetcher for client metadata documents (spec/security.md 23) under the
``[clients] cimd_allow_loopback`` policy. Their connections live as long as the process; call
``close_async_proxy`` / ``close_sync_proxy`` at shutdown when that matters.
"""

from __future__ import annotations

from ..app import load_or_create_keyring
from ..config_file import ConfigError, Settings, redact_url
from ..http_clients import AsyncHttpClient, SyncHttpClient
from ..proxy import AsyncProxy, Proxy
from ..safe_fetch import AsyncSafeFetcher, SyncSafeFetcher
from ..stores import open_async_store, open_store

__all__ = ["async_proxy", "close_async_proxy", "close_sync_proxy", "sync_proxy"]


def _store_error(settings: Settings, exc: Exception) -> ConfigError:
    # The message may quote the URL: never with a Redis password in it.
    message = str(exc).replace(settings.store_url, redact_url(settings.store_url))
    return ConfigError(f"[store].url: {message}")


def async_proxy(settings: Settings) -> AsyncProxy:
    """The asyncio proxy ``settings`` describe. Raises ``ConfigError``."""
    keys = load_or_create_keyring(settings.keys_file)
    try:
        store = open_async_store(settings.store_url)
    except (ValueError, ImportError, OSError) as exc:
        raise _store_error(settings, exc) from None
    safe = AsyncSafeFetcher(
        allow_loopback=settings.proxy.cimd_allow_loopback,
        lookups_in_flight=settings.proxy.bounds.document_lookups_in_flight,
    )
    return AsyncProxy(settings.proxy, keys, store, AsyncHttpClient(), fetch=safe)


def sync_proxy(settings: Settings) -> Proxy:
    """The blocking proxy ``settings`` describe (WSGI applications). Raises ``ConfigError``."""
    keys = load_or_create_keyring(settings.keys_file)
    try:
        store = open_store(settings.store_url)
    except (ValueError, ImportError, OSError) as exc:
        raise _store_error(settings, exc) from None
    safe = SyncSafeFetcher(
        allow_loopback=settings.proxy.cimd_allow_loopback,
        lookups_in_flight=settings.proxy.bounds.document_lookups_in_flight,
    )
    return Proxy(settings.proxy, keys, store, SyncHttpClient(), fetch=safe)


async def close_async_proxy(proxy: AsyncProxy) -> None:
    """Close the store and HTTP clients of a proxy built by ``async_proxy``."""
    for client in (proxy.http, proxy.fetch):
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()
    await proxy.store.close()


def close_sync_proxy(proxy: Proxy) -> None:
    """Close the store and HTTP clients of a proxy built by ``sync_proxy``."""
    for client in (proxy.http, proxy.fetch):
        close = getattr(client, "close", None)
        if close is not None:
            close()
    proxy.store.close()
