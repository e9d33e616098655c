"""Assembling the standalone proxy from ``Settings``: store, HTTP client, keyring, ASGI app, gateway.

``build_app(settings)`` returns ``(app, proxy, cleanup)``:

- ``app`` is plain ASGI 3: ``GET /healthz`` answers 200 ``ok`` (for load balancers; it touches no
  store), everything else goes to ``OAuthProxyApp(proxy, Gateway(...))`` (the gateway only when
  ``[gateway] upstream_url`` is configured; without it, authenticated requests to ``mcp_path`` get
  404). With ``[[resources]]``, one gateway per resource, each at its own path with its own tool
  rules (``ResourceGateways``; the bearer check before it is the resource's own,
  spec/security.md 40). It handles the ASGI lifespan itself and calls ``cleanup`` at shutdown.
  With ``[metrics] enabled = true`` it also answers ``GET /metrics`` (Prometheus text, ``metrics.py``; behind
  ``Authorization: Bearer <[metrics] bearer_token>`` when one is set); otherwise ``/metrics`` is
  not special (404 without a gateway).
- ``proxy`` is the ``AsyncProxy`` (store from ``open_async_store(settings.store_url)``, one pooled
  ``AsyncHttpClient`` for the upstream provider, an ``AsyncSafeFetcher`` for client metadata
  documents under the ``[clients] cimd_allow_loopback`` policy, the keyring from
  ``settings.keys_file``).
- ``cleanup`` is an idempotent coroutine function closing the gateway's client, both HTTP clients
  and the store.

The keyring file is created on first start when missing: fresh keys (``keygen.new_keyring_document``),
written with mode 0600 (its directory 0700) and ``O_EXCL``, so two instances starting together end up
with the same file. An existing file readable by group or others is refused: it holds private keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from oauthproxy_core.keys import KeyError_, Keyring

from .asgi import (
    NOT_FOUND,
    ASGIApp,
    OAuthProxyApp,
    Receive,
    Scope,
    Send,
    send_response,
    serve_lifespan,
)
from .config_file import ConfigError, GatewayResource, Settings, redact_url
from .gateway import Gateway
from .gateway_policy import GatewayPolicy
from .http_clients import AsyncHttpClient
from .keygen import new_keyring_document
from .proxy import AsyncProxy
from .safe_fetch import AsyncSafeFetcher
from .stores import open_async_store
from .stores.base import StoreUnavailableError

__all__ = [
    "ResourceGateways",
    "build_app",
    "gateway_policy",
    "load_or_create_keyring",
    "read_keys_document",
    "write_keys_document",
]

Cleanup = Callable[[], Awaitable[None]]
KEY = "[keys].file"


def read_keys_document(path: str) -> dict[str, Any]:
    """The keyring JSON document at ``path``, checked to load. Raises ``ConfigError``."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{KEY}: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{KEY}: cannot read {path} ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"{KEY}: {path} is not a JSON keyring document") from None
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"{KEY}: {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            "chmod 600 it, it holds private keys"
        )
    if not isinstance(document, dict):
        raise ConfigError(f"{KEY}: {path} is not a JSON keyring document")
    try:
        Keyring.from_dict(document)
    except (KeyError_, ValueError, TypeError) as exc:
        raise ConfigError(f"{KEY}: {path}: {exc}") from None
    return document


def write_keys_document(path: str, document: dict[str, Any], *, overwrite: bool) -> None:
    """Write ``document`` to ``path`` with mode 0600, atomically.

    ``overwrite=False`` fails with ``FileExistsError`` if the file exists (``O_EXCL``: no race).
    ``overwrite=True`` writes a temporary file beside it and renames it over the old one.
    """
    data = (json.dumps(document, indent=2) + "\n").encode()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if not overwrite:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_create_keyring(path: str) -> Keyring:
    """Load the keyring at ``path``, creating it with fresh keys (mode 0600) if it is missing."""
    if not os.path.exists(path):
        try:
            write_keys_document(path, new_keyring_document(), overwrite=False)
        except FileExistsError:
            pass  # another instance created it first: use theirs
        except OSError as exc:
            raise ConfigError(f"{KEY}: cannot create {path} ({exc.strerror})") from None
    return Keyring.from_dict(read_keys_document(path))


class _Root:
    """``/healthz``, ``/readyz``, the lifespan (cleanup at shutdown), and the proxy for the rest.

    ``/healthz`` says the process serves requests (it touches nothing); ``/readyz`` also reads the
    store and answers 503 while it is unreachable, so a load balancer can take an instance whose
    Redis is gone out of rotation.
    """

    def __init__(
        self,
        app: ASGIApp,
        cleanup: Cleanup,
        proxy: AsyncProxy | None = None,
        metrics_endpoint: ASGIApp | None = None,
    ) -> None:
        self.app = app
        self.cleanup = cleanup
        self.proxy = proxy
        self.metrics_endpoint = metrics_endpoint

    async def _ready(self) -> bool:
        if self.proxy is None:
            return True
        try:
            await self.proxy.store.get("health", "probe")
        except StoreUnavailableError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.cleanup()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if (
            scope["type"] == "http"
            and self.metrics_endpoint is not None
            and scope["path"] == "/metrics"
        ):
            await self.metrics_endpoint(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"] in ("/healthz", "/readyz"):
            body = b"ok" if scope["method"] in ("GET", "HEAD") else b""
            status = 200 if body else 405
            if body and scope["path"] == "/readyz" and not await self._ready():
                body, status = b"store unavailable", 503
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
            )
            return
        await self.app(scope, receive, send)


def gateway_policy(settings: Settings, proxy: AsyncProxy) -> GatewayPolicy:
    """The gateway's ``[[gateway.tools]]`` rules and upstream-token forwarding, from ``settings``."""
    return GatewayPolicy(
        tools=settings.gateway_tools,
        max_message_bytes=settings.gateway_max_message_bytes,
        baseline_scopes=settings.proxy.default_scopes,
        upstream_token=proxy.upstream_token if settings.gateway_forward_upstream_token else None,
    )


def resource_gateway(settings: Settings, proxy: AsyncProxy, resource: GatewayResource) -> Gateway:
    """The gateway of one ``[[resources]]`` entry: its MCP server, its tool rules, its baseline."""
    url = proxy.config.resource_at(resource.path)
    baseline = proxy.config.baseline_scopes(url) if url is not None else ()
    policy = GatewayPolicy(
        tools=resource.tools,
        max_message_bytes=settings.gateway_max_message_bytes,
        baseline_scopes=baseline,
        upstream_token=proxy.upstream_token if resource.forward_upstream_token else None,
    )
    return Gateway(resource.upstream_url, mount_path=resource.path, policy=policy)


class ResourceGateways:
    """The gateways of several resources as one ASGI app: a request goes to the gateway whose
    path it is at or below (paths are disjoint, ``ProxyConfig``), anything else is 404. Only
    requests the front door verified for that very resource get here."""

    def __init__(self, gateways: tuple[Gateway, ...]) -> None:
        self.gateways = gateways

    def _for(self, path: str) -> Gateway | None:
        for gateway in self.gateways:
            mount = gateway.mount_path
            if path == mount or path.startswith(mount + "/"):
                return gateway
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # As a single Gateway does when mounted alone: its clients close at shutdown.
            await serve_lifespan(receive, send, self.aclose)
            return
        gateway = self._for(scope.get("path", ""))
        if gateway is not None:
            await gateway(scope, receive, send)
        elif scope["type"] == "http":
            await send_response(send, NOT_FOUND)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def aclose(self) -> None:
        for gateway in self.gateways:
            await gateway.aclose()


def build_app(settings: Settings) -> tuple[ASGIApp, AsyncProxy, Cleanup]:
    """Assemble the standalone proxy (see the module docstring). Raises ``ConfigError``."""
    keys = load_or_create_keyring(settings.keys_file)
    try:
        store = open_async_store(settings.store_url)
    except (ValueError, ImportError, OSError) as exc:
        # The message may quote the URL: never with a Redis password in it.
        message = str(exc).replace(settings.store_url, redact_url(settings.store_url))
        raise ConfigError(f"[store].url: {message}") from None
    upstream_http = AsyncHttpClient()
    # Client ID Metadata Documents (and private_key_jwt jwks_uri) are fetched only through the
    # SSRF-safe fetcher: the core asks for them with their own effect, which the driver hands to it.
    safe = AsyncSafeFetcher(
        allow_loopback=settings.proxy.cimd_allow_loopback,
        lookups_in_flight=settings.proxy.bounds.document_lookups_in_flight,
    )
    metrics: Any = None
    metrics_endpoint: ASGIApp | None = None
    if settings.metrics_enabled:
        try:
            from .metrics import Metrics  # noqa: PLC0415 (prometheus-client is optional)
        except ImportError:
            raise ConfigError(
                "[metrics].enabled: needs prometheus-client (pip install 'oauthproxy[metrics]')"
            ) from None
        metrics = Metrics()
        metrics_endpoint = metrics.asgi_app(bearer_token=settings.metrics_bearer_token)
    proxy = AsyncProxy(settings.proxy, keys, store, upstream_http, fetch=safe, metrics=metrics)
    gateway: Gateway | ResourceGateways | None = None
    if settings.resources:
        gateway = ResourceGateways(
            tuple(resource_gateway(settings, proxy, r) for r in settings.resources)
        )
    elif settings.gateway_upstream_url:
        gateway = Gateway(
            settings.gateway_upstream_url,
            mount_path=settings.proxy.mcp_path,
            policy=gateway_policy(settings, proxy),
        )
    closed = False

    async def cleanup() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        if gateway is not None:
            await gateway.aclose()
        await upstream_http.aclose()
        await safe.aclose()
        await store.close()

    root = _Root(OAuthProxyApp(proxy, gateway), cleanup, proxy, metrics_endpoint)
    return root, proxy, cleanup
