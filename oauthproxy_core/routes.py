"""The route table: every endpoint of the authorization server, declared once, as data.

Each ``Route`` names its endpoint (the ``endpoint`` label of the metrics, ``x-endpoint`` in
spec/openapi.yaml), where it lives, which handler answers which method, how its errors are rendered
(JSON or an HTML page), whether it answers CORS preflights (spec/interop.md: metadata, registration,
token and revocation; never authorize or consent) and which credentials it reads. ``AuthorizationServer``
dispatches from it, the metrics take their labels from it, the adapters' front door asks it whether a
path belongs to the authorization server, and tests/hostile/test_openapi_sync.py holds the OpenAPI
document to it.

Paths are templates. ``{issuer_path}`` is the path of the issuer (``""`` for ``https://host``,
``"/p"`` for ``https://host/p``); ``{resource_path}`` the path of a protected resource (issuer path
plus ``mcp_path``, or plus the path of each ``[[resources]]`` entry: such a template is expanded
once per resource, resource_servers.py); ``{callback_path}`` the configured upstream callback path.
Discovery documents sit where RFC 8414 §3.1 (well-known segment inserted before the issuer's
path), OpenID Connect Discovery 1.0 §4 (appended after it) and RFC 9728 §3.1 (inserted before
the resource's path) put them. A template ending in ``{client_id}`` matches every non-empty tail
below its prefix: the RFC 7592 §3 ``registration_client_uri`` of each client.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from .config import Context, ProxyConfig
from .effects import Handler
from .handlers.authorize import authorize_endpoint
from .handlers.callback import callback_endpoint
from .handlers.consent import consent_get, consent_post
from .handlers.device import device_authorization_endpoint, device_page_get, device_page_post
from .handlers.metadata import CORS, as_metadata_endpoint, jwks_endpoint, prm_endpoint
from .handlers.registration import client_configuration_endpoint, register_endpoint
from .handlers.revocation import revocation_endpoint
from .handlers.signout import signout_get, signout_post
from .handlers.token import token_endpoint
from .http import Request, Response

__all__ = [
    "PREFLIGHT_HEADERS",
    "RESOURCE_ENDPOINT",
    "ROUTES",
    "Credentials",
    "Endpoint",
    "Route",
    "RouteTable",
]

Endpoint = Callable[[Request, Context], Handler[Response]]

#: The endpoint name of bearer checks at the protected resource (not a route of this table: the
#: adapters' front door guards it, oauthproxy_core.front_door).
RESOURCE_ENDPOINT = "resource"

_CLIENT_ID = "{client_id}"


class Credentials(enum.Enum):
    """What a route reads to know who calls (the ``security`` of its OpenAPI operations)."""

    #: Nobody in particular: discovery, registration, the browser endpoints.
    NONE = "none"
    #: Client authentication (RFC 6749 §2.3, RFC 7523 §2.2), optional for public clients.
    CLIENT = "client"
    #: The registration access token, as a bearer token (RFC 7592 §3).
    REGISTRATION_TOKEN = "registration_token"


def _preflight(methods: str) -> tuple[tuple[str, str], ...]:
    return (
        *CORS,
        ("Access-Control-Allow-Methods", methods),
        ("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"),
        ("Access-Control-Max-Age", "86400"),
    )


#: The answer to a CORS preflight of the JSON endpoints (spec/interop.md).
PREFLIGHT_HEADERS = _preflight("GET, POST, OPTIONS")


@attrs.frozen(kw_only=True)
class Route:
    """One path template of one endpoint (an endpoint served at several paths has several rows)."""

    name: str
    path: str
    handlers: tuple[tuple[str, Endpoint], ...]
    #: Errors before the client and its redirect URI are validated render as an HTML page
    #: (spec/security.md 2); otherwise as a JSON OAuth error.
    browser: bool = False
    cors: bool = False
    credentials: Credentials = Credentials.NONE
    preflight: tuple[tuple[str, str], ...] = PREFLIGHT_HEADERS

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(method for method, _ in self.handlers)

    def handler(self, method: str) -> Endpoint | None:
        """The handler answering ``method`` here, or ``None`` (405)."""
        for name, endpoint in self.handlers:
            if name == method:
                return endpoint
        return None

    @property
    def is_prefix(self) -> bool:
        """Whether the template matches every non-empty tail after it (``.../{client_id}``)."""
        return self.path.endswith(_CLIENT_ID)

    def expand(self, values: Mapping[str, str]) -> str:
        """The path for one configuration (a prefix route: the prefix its paths start with)."""
        path = self.path.removesuffix(_CLIENT_ID)
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        return path


def _json(name: str, path: str, *handlers: tuple[str, Endpoint], **kw: Any) -> Route:
    return Route(name=name, path=path, handlers=handlers, cors=True, **kw)


def _browser(name: str, path: str, *handlers: tuple[str, Endpoint]) -> Route:
    return Route(name=name, path=path, handlers=handlers, browser=True)


_AS_METADATA = "authorization_server_metadata"
_PRM = "protected_resource_metadata"

#: Every route of the authorization server (spec/interop.md lists the discovery URLs clients probe).
ROUTES: tuple[Route, ...] = (
    _json(
        _AS_METADATA,
        "/.well-known/oauth-authorization-server{issuer_path}",
        ("GET", as_metadata_endpoint),
    ),
    _json(
        _AS_METADATA,
        "/.well-known/openid-configuration{issuer_path}",
        ("GET", as_metadata_endpoint),
    ),
    _json(
        _AS_METADATA,
        "{issuer_path}/.well-known/openid-configuration",
        ("GET", as_metadata_endpoint),
    ),
    _json(
        _AS_METADATA,
        "{issuer_path}/.well-known/oauth-authorization-server",
        ("GET", as_metadata_endpoint),
    ),
    _json(_PRM, "/.well-known/oauth-protected-resource{resource_path}", ("GET", prm_endpoint)),
    _json(_PRM, "/.well-known/oauth-protected-resource", ("GET", prm_endpoint)),
    _json("jwks", "{issuer_path}/jwks.json", ("GET", jwks_endpoint)),
    _json("register", "{issuer_path}/register", ("POST", register_endpoint)),
    _json(
        "client_configuration",
        "{issuer_path}/register/{client_id}",
        ("GET", client_configuration_endpoint),
        ("PUT", client_configuration_endpoint),
        ("DELETE", client_configuration_endpoint),
        credentials=Credentials.REGISTRATION_TOKEN,
        preflight=_preflight("GET, PUT, DELETE, OPTIONS"),
    ),
    _json("token", "{issuer_path}/token", ("POST", token_endpoint), credentials=Credentials.CLIENT),
    _json(
        "revocation",
        "{issuer_path}/revoke",
        ("POST", revocation_endpoint),
        credentials=Credentials.CLIENT,
    ),
    _browser(
        "authorize",
        "{issuer_path}/authorize",
        ("GET", authorize_endpoint),
        ("POST", authorize_endpoint),
    ),
    _browser("consent", "{issuer_path}/consent", ("GET", consent_get), ("POST", consent_post)),
    # RFC 8628 §3.1 and §3.3: answered 404 unless ``[device] enabled``.
    _json(
        "device_authorization",
        "{issuer_path}/device_authorization",
        ("POST", device_authorization_endpoint),
        credentials=Credentials.CLIENT,
    ),
    _browser(
        "device", "{issuer_path}/device", ("GET", device_page_get), ("POST", device_page_post)
    ),
    _browser("callback", "{issuer_path}{callback_path}", ("GET", callback_endpoint)),
    # spec/security.md 40: the user ends the upstream session of their browser.
    _browser("signout", "{issuer_path}/signout", ("GET", signout_get), ("POST", signout_post)),
)


def template_values(config: ProxyConfig) -> dict[str, str]:
    """What the placeholders of the path templates stand for under ``config``."""
    issuer_path = urlsplit(config.issuer).path
    return {
        "issuer_path": issuer_path,
        "resource_path": issuer_path + config.mcp_path,
        "callback_path": config.callback_path,
    }


class RouteTable:
    """``ROUTES`` expanded for one configuration: path -> route, and the prefix routes.

    Two templates may expand to one path: ``/.well-known/openid-configuration`` for an issuer
    without a path is both the RFC 8414 and the OIDC form (one endpoint either way). Otherwise the
    later row wins, as it always has (a ``callback_path`` of ``/token`` shadows the token endpoint).
    A protected resource at an endpoint's path is refused (``ValueError``).
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, config: ProxyConfig, routes: tuple[Route, ...] = ROUTES) -> None:
        values = template_values(config)
        issuer_path = values["issuer_path"]
        # Every protected resource has its own metadata document (RFC 9728 §3.1).
        each_resource = [
            {**values, "resource_path": issuer_path + p} for p in config.resource_paths
        ]
        self._exact: dict[str, Route] = {}
        self._prefixes: list[tuple[str, Route]] = []
        for route in routes:
            for expanded in each_resource if "{resource_path}" in route.path else (values,):
                path = route.expand(expanded)
                if route.is_prefix:
                    self._prefixes.append((path, route))
                else:
                    self._exact[path] = route
        for expanded in each_resource:
            # A resource at an endpoint's path would never reach its MCP server (the front door
            # serves the endpoint): refuse the configuration rather than shadow either silently.
            clash = self.match(expanded["resource_path"])
            if clash is not None:
                raise ValueError(
                    f"the protected resource path {expanded['resource_path']} is the "
                    f"authorization server's {clash.name} endpoint"
                )

    @property
    def paths(self) -> tuple[str, ...]:
        """Every exact path served (prefix routes excluded: see ``prefixes``)."""
        return tuple(self._exact)

    @property
    def prefixes(self) -> tuple[tuple[str, Route], ...]:
        """``(prefix, route)`` of each route that serves every non-empty tail below a prefix."""
        return tuple(self._prefixes)

    def items(self) -> tuple[tuple[str, Route], ...]:
        """``(path, route)`` of every exact path, then ``(prefix + "{client_id}", route)``."""
        return (
            *self._exact.items(),
            *((prefix + _CLIENT_ID, route) for prefix, route in self._prefixes),
        )

    def match(self, path: str) -> Route | None:
        """The route serving ``path``, or ``None``."""
        route = self._exact.get(path)
        if route is not None:
            return route
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return candidate
        return None

    def name_of(self, path: str) -> str | None:
        """The endpoint name of the route serving ``path``, or ``None``."""
        route = self.match(path)
        return route.name if route is not None else None
