"""``proxy.toml``: the standalone proxy's configuration file, read into one validated ``Settings``.

``load_settings(path)`` parses TOML (Python's ``tomllib``), checks every key, and builds the core's
``ProxyConfig`` (with its ``UpstreamProfile``) eagerly, so that a file that loads is a file that
serves. Every problem is a ``ConfigError`` whose message starts with the key it is about
(``[upstream].client_id: required``); unknown tables and keys are errors too, so a typo never passes
silently. Messages and reprs never contain a secret (the upstream client secret, or the password of
a ``redis://`` URL).

The file::

    [server]
    host = "127.0.0.1"                 # where `oauthproxy serve` listens (default 127.0.0.1)
    port = 8000                        # default 8000
    base_url = "https://mcp.example"   # REQUIRED: the issuer; no trailing slash, no query
    mcp_path = "/mcp"                  # the protected resource is base_url + mcp_path
    service_name = "My MCP server"     # shown on the consent page
    scopes_supported = ["mcp"]         # the proxy's own scopes (not the upstream's)
    default_scopes = ["mcp"]           # granted when a client asks for none
    forwarded_allow_ips = ["10.0.0.5"]  # peers (addresses or networks) whose X-Forwarded-For names
                                       # the client address the rate bounds count by; [] trusts
                                       # nobody; default: uvicorn's ($FORWARDED_ALLOW_IPS, else
                                       # 127.0.0.1 and ::1)

    [upstream]
    provider = "github"                # github | google | entra | oidc | oauth2
    client_id = "..."                  # the proxy's registration at the provider
    client_secret = "..."              # or: client_secret_env = "NAME" (read at load time)
    scopes = ["read:user"]             # requested upstream
    authorize_url = "..."              # endpoint overrides (every provider)
    token_url = "..."
    userinfo_url = "..."
    api_base_url = "..."               # github only: where GET /user lives (https://api.github.com)
    issuer = "..."                     # oidc: discovery base and the RFC 9207 `iss` to expect
                                       # (github: default <authorize host>/login/oauth)
    userinfo_subject_field = "sub"     # the userinfo field holding the stable user id
    allow_insecure_http = false        # true: http upstream URLs on loopback hosts only (tests)
    github_app = false                 # github only: a GitHub App (expiring, rotating user tokens)
    tenant = "common"                  # entra only: common | organizations | consumers | <GUID>
    app_id_uri = "api://<app-id>"      # entra only: prefix for custom API scopes
    identity_source = "userinfo"       # oidc/oauth2: userinfo | id_token | both
    claims = { login = "preferred_username" }   # our claim name -> upstream field
    extra_authorize_params = { audience = "https://api.example" }   # e.g. Auth0
    extra_token_params = { audience = "https://api.example" }
    forward_resource = false           # send RFC 8707 `resource` upstream

    [consent]
    mode = "always"                    # always | remember
    product_name = "Acme tools"        # the consent page's brand (plain text)
    logo_url = "https://cdn.example/logo.png"   # https (plain DNS host) or data:image/...;base64
    primary_color = "#1f5fbf"          # #rgb, #rrggbb or rgb(r, g, b); text colours follow
    background_color = "#ffffff"
    extra_text = "Questions? Ask the platform team."   # plain text under the form
    template = "consent.html"          # a full-page template ($form, $details, ...: see
                                       # oauthproxy_core/consent_theme.py), read at load

    [store]
    url = "memory://"                  # memory:// | sqlite:///path.db | redis://host:port/db

    [keys]
    file = ".oauthproxy/keys.json"     # the keyring (see below)

    [gateway]
    upstream_url = "http://127.0.0.1:9100/mcp"   # the MCP server the gateway forwards to

    [clients]
    cimd = true                        # accept Client ID Metadata Documents (https client_id URLs)
    cimd_allow_loopback = false        # true only for tests/local dev: documents from 127.0.0.1/http

    [limits]                           # abuse bounds (SECURITY.md 28, 35; oauthproxy_core.bounds)
    registrations_per_address = 500    # per registration_window, per source (address prefix)
    registrations_total = 5000         # per registration_window, all sources
    registration_window = 3600         # seconds
    unused_registration_lifetime = 21600   # seconds a registration lives until first used
    authorizations_per_address = 256   # authorization requests per source per transaction lifetime
    authorizations_per_client = 128    # pending ones per client, per source
    authorizations_total = 20000
    document_fetches_per_address = 30  # metadata-document fetches per document_fetch_window
    document_fetches_per_host = 60
    document_fetches_total = 2000
    document_fetch_window = 300        # seconds
    document_lookups_in_flight = 8     # resolver threads for document hosts
    ipv4_prefix = 32                   # bits of a client address that make one source
    ipv6_prefix = 64

    [metrics]                          # Prometheus metrics at GET /metrics (the `metrics` extra)
    enabled = false                    # default off: /metrics is then 404
    bearer_token_env = "NAME"          # or bearer_token = "...": required as `Authorization: Bearer`;
                                       # without one, keep /metrics unreachable from outside

    [[clients.static]]                 # pre-registered clients (any number of these tables)
    client_id = "my-cli"
    client_secret = "..."              # optional; omit for a public client
    redirect_uris = ["http://127.0.0.1/callback"]
    token_endpoint_auth_method = "client_secret_basic"   # default: client_secret_basic with a
                                       # secret, none without; client_secret_post also accepted
    client_name = "My CLI"             # optional, shown on the consent page

Providers (this release): ``github`` needs only the client credentials; ``oauth2`` needs
``authorize_url``, ``token_url`` and ``userinfo_url``; ``oidc`` takes the three endpoints explicitly,
or discovers them from ``<issuer>/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0
§4) when the file is loaded, checking that the document names the same ``issuer`` (§4.3) and
requiring RFC 9207 ``iss`` at the callback when the document advertises
``authorization_response_iss_parameter_supported``; with ``identity_source = "id_token"`` or
``"both"`` the ID token is verified against the discovered ``jwks_uri`` (a nonce is sent).
``google`` and ``entra`` use the built-in profiles of ``oauthproxy_core.providers`` (no network at
load: Google's documented endpoints; Entra's URLs from ``tenant``), identity from the verified ID
token; given all three of ``authorize_url``, ``token_url`` and ``userinfo_url`` they are treated like
``oidc`` with explicit endpoints, as before. ``github`` with GitHub Enterprise Server: set
``api_base_url``, ``authorize_url`` and ``token_url`` to the enterprise host. Upstream URLs must be
https; ``allow_insecure_http = true`` admits http only when the host is a loopback address, for tests
and local development.

Paths: ``[keys] file`` and ``sqlite:///relative.db`` store URLs are relative to the working directory
of the process (the stores' convention). The default key file is ``keys.json`` in the store's default
directory: ``$OAUTHPROXY_DATA_DIR`` if set, else ``./.oauthproxy``. ``oauthproxy serve`` creates the
file on first start (mode 0600, its directory 0700) with fresh keys; manage it afterwards with
``oauthproxy keys rotate|retire|show``. An existing key file readable by group or others is refused
(``chmod 600`` it). Every instance behind one load balancer needs the same file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx

from oauthproxy_core.bounds import Bounds
from oauthproxy_core.config import ProxyConfig
from oauthproxy_core.consent_theme import ConsentTheme
from oauthproxy_core.crypto import digest
from oauthproxy_core.errors import InvalidRedirectUriError
from oauthproxy_core.providers import (
    entra_profile,
    github_app_profile,
    github_profile,
    google_profile,
)
from oauthproxy_core.providers.entra import entra_issuer
from oauthproxy_core.records import Client
from oauthproxy_core.redirect_uris import validate_redirect_uri
from oauthproxy_core.upstream import ID_TOKEN_ALGS, IDENTITY_SOURCES, UpstreamProfile

from .stores.sqlite import default_sqlite_path

__all__ = [
    "PROVIDERS",
    "ConfigError",
    "Settings",
    "default_keys_file",
    "load_settings",
    "parse_settings",
    "redact_url",
]

PROVIDERS = ("github", "google", "entra", "oidc", "oauth2")
GITHUB_AUTHORIZE_URL = "https://github.com/login/oauth/authorize"
GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
GITHUB_API_BASE_URL = "https://api.github.com"
DISCOVERY_TIMEOUT = 10.0
MAX_DISCOVERY_BYTES = 256 * 1024

_TABLES: dict[str, frozenset[str]] = {
    "server": frozenset(
        {
            "host",
            "port",
            "base_url",
            "mcp_path",
            "service_name",
            "scopes_supported",
            "default_scopes",
            "forwarded_allow_ips",
        }
    ),
    "upstream": frozenset(
        {
            "provider",
            "client_id",
            "client_secret",
            "client_secret_env",
            "scopes",
            "authorize_url",
            "token_url",
            "userinfo_url",
            "api_base_url",
            "issuer",
            "userinfo_subject_field",
            "allow_insecure_http",
            "github_app",
            "tenant",
            "app_id_uri",
            "identity_source",
            "claims",
            "extra_authorize_params",
            "extra_token_params",
            "forward_resource",
        }
    ),
    "consent": frozenset(
        {
            "mode",
            "product_name",
            "logo_url",
            "primary_color",
            "background_color",
            "extra_text",
            "template",
        }
    ),
    "store": frozenset({"url"}),
    "keys": frozenset({"file"}),
    "gateway": frozenset({"upstream_url"}),
    "clients": frozenset({"cimd", "cimd_allow_loopback", "static"}),
    "limits": frozenset(attrs.fields_dict(Bounds)),
    "metrics": frozenset({"enabled", "bearer_token", "bearer_token_env"}),
}
_REQUIRED_TABLES = ("server", "upstream")
_STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss")
_LOOPBACK_NAMES = frozenset({"localhost"})

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is unusable. ``message`` names the key (``[table].key: problem``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def default_keys_file() -> str:
    """``keys.json`` beside the default SQLite store: ``$OAUTHPROXY_DATA_DIR`` or ``./.oauthproxy``."""
    return os.path.join(os.path.dirname(default_sqlite_path()), "keys.json")


def redact_url(url: str) -> str:
    """``url`` without the password of its userinfo (``redis://:secret@host`` -> ``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


@attrs.frozen(kw_only=True)
class Settings:
    """Everything ``oauthproxy serve`` needs, validated. Built by ``load_settings``."""

    #: The core's configuration (issuer, resource, scopes, consent, the upstream profile).
    proxy: ProxyConfig
    host: str = "127.0.0.1"
    port: int = 8000
    store_url: str = attrs.field(default="memory://", repr=redact_url)
    #: Absolute path of the keyring document (created on first start if missing).
    keys_file: str
    #: The MCP server behind the gateway, or ``None`` (then the proxy only protects ``mcp_path``).
    gateway_upstream_url: str | None = None
    #: The file the settings came from (``None`` when parsed from a mapping).
    source: str | None = None
    #: ``[metrics] enabled``: serve Prometheus metrics at ``GET /metrics`` (metrics.py).
    metrics_enabled: bool = False
    #: ``[metrics] bearer_token`` (or ``_env``): required as ``Authorization: Bearer`` on /metrics.
    metrics_bearer_token: str | None = attrs.field(default=None, repr=False)
    #: Peers trusted to name the client in ``X-Forwarded-For`` (``None``: uvicorn's default).
    forwarded_allow_ips: tuple[str, ...] | None = None

    @property
    def issuer(self) -> str:
        return self.proxy.issuer

    @property
    def upstream(self) -> UpstreamProfile:
        return self.proxy.upstream

    @property
    def mcp_path(self) -> str:
        return self.proxy.mcp_path

    def summary(self) -> str:
        """One line describing the configuration, without any secret."""
        up = self.proxy.upstream
        parts = [
            f"issuer {self.proxy.issuer}",
            f"resource {self.proxy.resource}",
            f"provider {up.name} (client_id {up.client_id})",
            f"consent {self.proxy.consent_mode}",
            f"store {redact_url(self.store_url)}",
            f"keys {self.keys_file}",
            f"gateway {self.gateway_upstream_url or 'none'}",
            f"listen {self.host}:{self.port}",
        ]
        return "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# Loading


def load_settings(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    http: httpx.Client | None = None,
) -> Settings:
    """Read and validate a TOML configuration file. Raises ``ConfigError`` and nothing else.

    ``environ`` (default ``os.environ``) resolves ``client_secret_env``; ``http`` is the client used
    for OIDC discovery (a short-lived one by default).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigError(
            f"{name}: cannot read ({exc.strerror or exc.__class__.__name__})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML ({exc})") from None
    return parse_settings(data, environ=environ, http=http, source=os.path.abspath(name))


def parse_settings(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    http: httpx.Client | None = None,
    source: str | None = None,
) -> Settings:
    """Validate an already-parsed TOML document (see ``load_settings``)."""
    env = os.environ if environ is None else environ
    tables = _tables(data)
    server = _Table("server", tables["server"])
    upstream_t = _Table("upstream", tables["upstream"])
    consent = _Table("consent", tables.get("consent", {}))
    store = _Table("store", tables.get("store", {}))
    keys = _Table("keys", tables.get("keys", {}))
    gateway = _Table("gateway", tables.get("gateway", {}))
    clients_t = _Table("clients", tables.get("clients", {}))
    metrics_t = _Table("metrics", tables.get("metrics", {}))
    limits_t = _Table("limits", tables.get("limits", {}))

    host = server.get("host", str, "127.0.0.1")
    if not host or any(c.isspace() for c in host):
        raise ConfigError("[server].host: must be a host name or IP address")
    port = server.get("port", int, 8000)
    if not 0 <= port <= 65535:
        raise ConfigError("[server].port: must be between 0 and 65535")
    base_url = _base_url(server.require("base_url", str))
    mcp_path = server.get("mcp_path", str, "/mcp")
    if not mcp_path.startswith("/") or (mcp_path.endswith("/") and mcp_path != "/"):
        raise ConfigError("[server].mcp_path: must start with '/' and not end with '/'")
    if any(c.isspace() or c in "?#\\" or ord(c) < 0x20 for c in mcp_path):
        raise ConfigError("[server].mcp_path: must be a plain path (no query, fragment or spaces)")
    service_name = server.get("service_name", str, "MCP server")
    scopes_supported = server.get_str_list("scopes_supported") or ["mcp"]
    if server.has("scopes_supported") and not server.values["scopes_supported"]:
        raise ConfigError("[server].scopes_supported: must not be empty")
    default_scopes = server.get_str_list("default_scopes")
    if default_scopes is None:
        default_scopes = [s for s in ("mcp",) if s in scopes_supported] or scopes_supported[:1]
    if not set(default_scopes) <= set(scopes_supported):
        raise ConfigError("[server].default_scopes: must be a subset of scopes_supported")

    profile = _upstream_profile(upstream_t, env, http)

    consent_mode = consent.get("mode", str, "always")
    if consent_mode not in ("always", "remember"):
        raise ConfigError(f"[consent].mode: must be 'always' or 'remember', not {consent_mode!r}")
    consent_theme = _consent_theme(consent)

    store_url = _store_url(store.get("url", str, "memory://"))
    keys_file = keys.get("file", str, "")
    keys_file = os.path.abspath(keys_file) if keys_file else os.path.abspath(default_keys_file())

    gateway_url = gateway.get("upstream_url", str, None)
    if gateway_url is not None:
        _gateway_url(gateway_url)

    cimd_enabled = clients_t.get("cimd", bool, True)
    cimd_allow_loopback = clients_t.get("cimd_allow_loopback", bool, False)
    static_clients = _static_clients(clients_t)
    bounds = _bounds(limits_t)
    forwarded = server.get_str_list("forwarded_allow_ips")
    for entry in forwarded or ():
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"[server].forwarded_allow_ips: {entry!r} is not an IP address or network"
            ) from None

    try:
        proxy = ProxyConfig(
            issuer=base_url,
            mcp_path=mcp_path,
            upstream=profile,
            scopes_supported=scopes_supported,
            default_scopes=default_scopes,
            consent_mode=consent_mode,
            service_name=service_name,
            static_clients=static_clients,
            cimd_enabled=cimd_enabled,
            cimd_allow_loopback=cimd_allow_loopback,
            bounds=bounds,
            consent_theme=consent_theme,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[server]: {exc}") from None
    return Settings(
        proxy=proxy,
        host=host,
        port=port,
        store_url=store_url,
        keys_file=keys_file,
        gateway_upstream_url=gateway_url,
        source=source,
        metrics_enabled=metrics_t.get("enabled", bool, False),
        metrics_bearer_token=_metrics_token(metrics_t, env),
        forwarded_allow_ips=None if forwarded is None else tuple(forwarded),
    )


def _metrics_token(t: _Table, env: Mapping[str, str]) -> str | None:
    if t.has("bearer_token") and t.has("bearer_token_env"):
        raise ConfigError("[metrics].bearer_token: give bearer_token or bearer_token_env, not both")
    if t.has("bearer_token_env"):
        name = t.require("bearer_token_env", str)
        value = env.get(name)
        if not value:
            raise ConfigError(
                f"[metrics].bearer_token_env: environment variable {name} is not set or empty"
            )
        return value
    token = t.get("bearer_token", str, None)
    if token is not None and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ConfigError("[metrics].bearer_token: at least 16 characters, no whitespace")
    return token  # type: ignore[no-any-return]


def _bounds(t: _Table) -> Bounds:
    """``[limits]``: every key an integer >= 1; absent keys keep ``Bounds``' defaults."""
    values: dict[str, int] = {}
    for name in sorted(t.values):
        value = t.get(name, int, None)
        if value < 1:
            raise ConfigError(f"{t.key(name)}: must be at least 1")
        values[name] = value
    return Bounds(**values)


# --------------------------------------------------------------------------------------------------
# Tables and typed keys


def _tables(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        names = ", ".join(f"[{n}]" for n in unknown)
        raise ConfigError(f"{names}: unknown table (expected {', '.join(_TABLES)})")
    for name in _REQUIRED_TABLES:
        if name not in data:
            raise ConfigError(f"[{name}]: required table is missing")
    out: dict[str, Mapping[str, Any]] = {}
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}]: must be a table")
        unknown_keys = sorted(set(value) - _TABLES[name])
        if unknown_keys:
            listed = ", ".join(f"[{name}].{k}" for k in unknown_keys)
            raise ConfigError(f"{listed}: unknown key")
        out[name] = value
    return out


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


class _Table:
    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self.name = name
        self.values = values

    def key(self, key: str) -> str:
        return f"[{self.name}].{key}"

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, kind: type[T], default: Any) -> Any:
        if key not in self.values:
            return default
        value = self.values[key]
        # bool is an int in Python; TOML keeps them apart, and so do we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.key(key)}: must be {_TYPE_NAMES.get(kind, kind.__name__)}")
        return value

    def require(self, key: str, kind: type[T]) -> T:
        value = self.get(key, kind, None)
        if value is None or value == "":
            raise ConfigError(f"{self.key(key)}: required")
        return value  # type: ignore[no-any-return]

    def get_str_list(self, key: str) -> list[str] | None:
        """The list of scope-like strings at ``key``, or ``None`` when it is absent."""
        if key not in self.values:
            return None
        value = self.values[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.key(key)}: must be a list of non-empty strings")
        if any(any(c.isspace() or ord(c) < 0x21 or c in '"\\' for c in v) for v in value):
            raise ConfigError(f"{self.key(key)}: scope names may not contain spaces or quotes")
        return list(dict.fromkeys(value))


# --------------------------------------------------------------------------------------------------
# URLs


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(value: str) -> str:
    key = "[server].base_url"
    parts = _split(key, value)
    if parts.scheme not in ("https", "http"):
        raise ConfigError(f"{key}: must be an https URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"{key}: must be https (http only on 127.0.0.1, localhost or [::1])")
    if value.endswith("/"):
        raise ConfigError(f"{key}: must not end with '/'")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ConfigError(f"{key}: must not have a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: must not contain userinfo")
    return value


def _split(key: str, value: str) -> Any:
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in value):
        raise ConfigError(f"{key}: must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ConfigError(f"{key}: not a valid URL") from None
    if not parts.scheme or not parts.hostname:
        raise ConfigError(f"{key}: must be an absolute URL with a host")
    return parts


def _upstream_url(key: str, value: str, allow_insecure_http: bool) -> str:
    """RFC 6749 §3.1 / §3.2 endpoint rules, plus TLS: https, or http on loopback for tests only."""
    parts = _split(key, value)
    if parts.scheme == "http":
        if not allow_insecure_http:
            raise ConfigError(
                f"{key}: must be https (http is allowed only on loopback with "
                "[upstream].allow_insecure_http = true)"
            )
        if not _is_loopback(parts.hostname):
            raise ConfigError(
                f"{key}: http is allowed only on a loopback host, even with allow_insecure_http"
            )
    elif parts.scheme != "https":
        raise ConfigError(f"{key}: must be an https URL")
    if parts.fragment or "#" in value:
        raise ConfigError(f"{key}: must not contain a fragment")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: must not contain userinfo")
    return value


def _store_url(value: str) -> str:
    key = "[store].url"
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ConfigError(f"{key}: expected memory://, sqlite:///path.db or redis://host:port/db")
    scheme = scheme.lower()
    if scheme not in _STORE_SCHEMES:
        raise ConfigError(f"{key}: unknown scheme {scheme!r} (expected memory, sqlite or redis)")
    if scheme == "sqlite" and rest not in ("", "/") and not rest.startswith("/"):
        raise ConfigError(f"{key}: use sqlite:///relative.db or sqlite:////absolute.db")
    if scheme == "sqlite" and "?" in rest:
        option = rest.partition("?")[2].lower()
        if option not in ("synchronous=normal", "synchronous=full"):
            raise ConfigError(f"{key}: the only SQLite option is ?synchronous=normal|full")
    if scheme in ("redis", "rediss"):
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018
        except ValueError:
            raise ConfigError(f"{key}: not a valid Redis URL") from None
        if not parts.hostname:
            raise ConfigError(f"{key}: a Redis URL needs a host")
    return value


def _gateway_url(value: str) -> None:
    key = "[gateway].upstream_url"
    parts = _split(key, value)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{key}: must be an http or https URL")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ConfigError(f"{key}: must not have a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{key}: must not contain userinfo")


# --------------------------------------------------------------------------------------------------
# The upstream profile


def _upstream_profile(
    t: _Table, env: Mapping[str, str], http: httpx.Client | None
) -> UpstreamProfile:
    provider = t.require("provider", str)
    if provider not in PROVIDERS:
        raise ConfigError(f"[upstream].provider: must be one of {', '.join(PROVIDERS)}")
    client_id = t.require("client_id", str)
    if any(c.isspace() or ord(c) < 0x20 for c in client_id):
        raise ConfigError("[upstream].client_id: must not contain spaces or control characters")
    secret = _client_secret(t, env)
    insecure = t.get("allow_insecure_http", bool, False)
    scopes = t.get_str_list("scopes")
    subject_field = t.get("userinfo_subject_field", str, None)
    if subject_field == "":
        raise ConfigError("[upstream].userinfo_subject_field: must not be empty")

    def url(key: str) -> str | None:
        value = t.get(key, str, None)
        return None if value is None else _upstream_url(t.key(key), value, insecure)

    authorize_url = url("authorize_url")
    token_url = url("token_url")
    userinfo_url = url("userinfo_url")
    issuer = url("issuer")
    api_base_url = url("api_base_url")
    if api_base_url is not None and provider != "github":
        raise ConfigError("[upstream].api_base_url: only used with provider = 'github'")
    github_app = t.get("github_app", bool, False)
    if t.has("github_app") and provider != "github":
        raise ConfigError("[upstream].github_app: only used with provider = 'github'")
    for key in ("tenant", "app_id_uri"):
        if t.has(key) and provider != "entra":
            raise ConfigError(f"[upstream].{key}: only used with provider = 'entra'")
    identity_source = t.get("identity_source", str, None)
    if identity_source is not None and identity_source not in IDENTITY_SOURCES:
        raise ConfigError(
            f"[upstream].identity_source: must be one of {', '.join(IDENTITY_SOURCES)}"
        )
    common: dict[str, Any] = {}
    claim_map = _str_table(t, "claims")
    if claim_map is not None:
        common["claim_map"] = tuple(claim_map.items())
    for key in ("extra_authorize_params", "extra_token_params"):
        params = _str_table(t, key)
        if params is not None:
            common[key] = tuple(params.items())
    if t.has("forward_resource"):
        common["forward_resource"] = t.get("forward_resource", bool, False)
    explicit = (authorize_url, token_url, userinfo_url)

    fields: dict[str, Any] = {"name": provider, "client_id": client_id, "client_secret": secret}
    if provider == "github":
        if identity_source not in (None, "userinfo"):
            raise ConfigError("[upstream].identity_source: GitHub has only userinfo (GET /user)")
        factory = github_app_profile if github_app else github_profile
        # Without `issuer`, the profile expects the RFC 9207 `iss` GitHub sends (<web>/login/oauth).
        overrides: dict[str, Any] = {**common} if issuer is None else {"issuer": issuer, **common}
        if scopes is not None:
            overrides["scopes"] = scopes
        elif not github_app:
            overrides["scopes"] = ("read:user",)
        if subject_field is not None:
            overrides["subject_field"] = subject_field
        return _build(
            lambda: factory(
                client_id=client_id,
                client_secret=secret,
                api_base_url=api_base_url or GITHUB_API_BASE_URL,
                authorize_url=authorize_url or GITHUB_AUTHORIZE_URL,
                token_url=token_url or GITHUB_TOKEN_URL,
                userinfo_url=userinfo_url,
                **overrides,
            ),
        )
    if provider in ("google", "entra") and not all(v is not None for v in explicit):
        built_in: dict[str, Any] = {**common}
        for key, value in (
            ("authorize_url", authorize_url),
            ("token_url", token_url),
            ("userinfo_url", userinfo_url),
            ("issuer", issuer),
            ("subject_field", subject_field),
            ("identity_source", identity_source),
        ):
            if value is not None:
                built_in[key] = value
        if scopes is not None:
            built_in["scopes"] = scopes
        if provider == "google":
            return _build(
                lambda: google_profile(client_id=client_id, client_secret=secret, **built_in)
            )
        tenant = t.get("tenant", str, "common")
        app_id_uri = t.get("app_id_uri", str, None)
        try:
            entra_issuer(tenant)
        except ValueError as exc:
            raise ConfigError(f"[upstream].tenant: {exc}") from None
        if app_id_uri is not None and (
            not app_id_uri or any(c.isspace() or c in "?#" for c in app_id_uri)
        ):
            raise ConfigError(
                "[upstream].app_id_uri: must be an application ID URI (api://<app-id>)"
            )
        return _build(
            lambda: entra_profile(
                client_id=client_id,
                client_secret=secret,
                tenant=tenant,
                app_id_uri=app_id_uri,
                **built_in,
            ),
        )
    if provider == "oauth2":
        for key, value in (
            ("authorize_url", authorize_url),
            ("token_url", token_url),
            ("userinfo_url", userinfo_url),
        ):
            if value is None:
                raise ConfigError(f"[upstream].{key}: required with provider = 'oauth2'")
        fields.update(
            authorize_url=authorize_url,
            token_url=token_url,
            userinfo_url=userinfo_url,
            subject_field=subject_field or "sub",
            scopes=() if scopes is None else scopes,
            issuer=issuer,
        )
    else:  # oidc; google and entra with every endpoint explicit
        if all(v is not None for v in explicit):
            fields.update(
                authorize_url=authorize_url,
                token_url=token_url,
                userinfo_url=userinfo_url,
                issuer=issuer,
            )
        elif issuer is None:
            raise ConfigError(
                "[upstream].issuer: required with provider = 'oidc' (for discovery), unless "
                "authorize_url, token_url and userinfo_url are all given"
            )
        else:
            found = _discover(issuer, insecure, http)
            # An explicitly configured endpoint wins over the discovered one.
            fields.update(
                authorize_url=authorize_url or found["authorize_url"],
                token_url=token_url or found["token_url"],
                userinfo_url=userinfo_url or found["userinfo_url"],
                issuer=issuer,
                require_iss=found["require_iss"],
                token_auth_method=found["token_auth_method"],
                jwks_uri=found["jwks_uri"],
                id_token_signing_algs=found["id_token_signing_algs"],
            )
        fields.update(
            subject_field=subject_field or "sub",
            scopes=("openid", "profile", "email") if scopes is None else scopes,
        )
    if identity_source is not None and identity_source != "userinfo":
        if fields.get("jwks_uri") is None:
            raise ConfigError(
                f"[upstream].identity_source: {identity_source!r} needs a jwks_uri, found by "
                "discovery (provider = 'oidc' with issuer and without explicit endpoints)"
            )
        fields.update(identity_source=identity_source, nonce=True)
    fields.update(common)
    return _build(lambda: UpstreamProfile(**fields))


def _build(make: Any) -> UpstreamProfile:
    try:
        profile: UpstreamProfile = make()
    except (ValueError, TypeError) as exc:
        # The profile's validators name the field ("scopes ...", "client_id ..."): keep the table.
        raise ConfigError(f"[upstream]: {exc}") from None
    return profile


def _str_table(t: _Table, key: str) -> dict[str, str] | None:
    """An inline table of non-empty strings (``claims = {login = "preferred_username"}``)."""
    if not t.has(key):
        return None
    value = t.values[key]
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(f"{t.key(key)}: must be a table of non-empty strings")
    if any(any(ord(c) < 0x20 for c in k + v) for k, v in value.items()):
        raise ConfigError(f"{t.key(key)}: must not contain control characters")
    return dict(value)


def _client_secret(t: _Table, env: Mapping[str, str]) -> str:
    if t.has("client_secret") and t.has("client_secret_env"):
        raise ConfigError(
            "[upstream].client_secret: give client_secret or client_secret_env, not both"
        )
    if t.has("client_secret_env"):
        name = t.require("client_secret_env", str)
        value = env.get(name)
        if not value:
            raise ConfigError(
                f"[upstream].client_secret_env: environment variable {name} is not set or empty"
            )
        return value
    secret = t.get("client_secret", str, None)
    if not secret:
        raise ConfigError("[upstream].client_secret: required (or client_secret_env)")
    return str(secret)


def _discover(issuer: str, insecure: bool, http: httpx.Client | None) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §4: fetch and check ``<issuer>/.well-known/openid-configuration``."""
    key = "[upstream].issuer"
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    document = _fetch_json(key, url, http)
    # §4.3: "The issuer value returned MUST be identical to the Issuer URL that was used as the
    # prefix to /.well-known/openid-configuration" (the mix-up defence RFC 9207 builds on).
    if document.get("issuer") != issuer:
        raise ConfigError(f"{key}: the discovery document at {url} names another issuer")

    def endpoint(name: str) -> str:
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: the discovery document at {url} has no {name}")
        return _upstream_url(f"{key} (discovered {name})", value, insecure)

    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    if not isinstance(methods, list):
        methods = ["client_secret_basic"]
    if "client_secret_post" in methods:
        method = "client_secret_post"
    elif "client_secret_basic" in methods:
        # Discovery §3: "If omitted, the default is client_secret_basic".
        method = "client_secret_basic"
    else:
        raise ConfigError(
            f"{key}: the provider supports neither client_secret_post nor client_secret_basic"
        )
    jwks_uri = document.get("jwks_uri")
    advertised = document.get("id_token_signing_alg_values_supported")
    algs = tuple(a for a in ID_TOKEN_ALGS if isinstance(advertised, list) and a in advertised)
    return {
        "authorize_url": endpoint("authorization_endpoint"),
        "token_url": endpoint("token_endpoint"),
        "userinfo_url": endpoint("userinfo_endpoint"),
        "require_iss": document.get("authorization_response_iss_parameter_supported") is True,
        "token_auth_method": method,
        "jwks_uri": None if jwks_uri is None else endpoint("jwks_uri"),
        "id_token_signing_algs": algs or ("RS256",),
    }


def _fetch_json(key: str, url: str, http: httpx.Client | None) -> dict[str, Any]:
    client = http or httpx.Client(follow_redirects=False, trust_env=False)
    try:
        with client.stream(
            "GET", url, headers={"Accept": "application/json"}, timeout=DISCOVERY_TIMEOUT
        ) as resp:
            if resp.status_code != 200:
                raise ConfigError(f"{key}: discovery at {url} answered HTTP {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_DISCOVERY_BYTES:
                    raise ConfigError(f"{key}: the discovery document at {url} is too large")
    except httpx.HTTPError as exc:
        raise ConfigError(f"{key}: discovery at {url} failed ({exc.__class__.__name__})") from None
    finally:
        if http is None:
            client.close()
    try:
        document = json.loads(bytes(body))
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ConfigError(f"{key}: the discovery document at {url} is not a JSON object")
    return document


# --------------------------------------------------------------------------------------------------
# [consent]: the consent page's look

_THEME_KEYS = ("product_name", "logo_url", "primary_color", "background_color", "extra_text")
MAX_TEMPLATE_FILE = 64 * 1024


def _consent_theme(t: _Table) -> ConsentTheme:
    """``[consent]`` theme keys as a validated ``ConsentTheme``; ``template`` is a file path, read
    now (relative paths from the working directory, like ``[keys] file``)."""
    fields: dict[str, str] = {}
    for key in _THEME_KEYS:
        value = t.get(key, str, None)
        if value is not None:
            fields[key] = value
    path = t.get("template", str, None)
    if path is not None:
        fields["template"] = _read_template(t.key("template"), path)
    for key, value in fields.items():
        # One key at a time, so the message names the key that is wrong.
        try:
            ConsentTheme(**{key: value})
        except ValueError as exc:
            reason = str(exc).removeprefix(key).lstrip(" :")
            raise ConfigError(f"{t.key(key)}: {reason}") from None
    return ConsentTheme(**fields)


def _read_template(key: str, path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEMPLATE_FILE + 1)
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {path} ({exc.strerror or exc.__class__.__name__})"
        ) from None
    if len(raw) > MAX_TEMPLATE_FILE:
        raise ConfigError(f"{key}: {path} is larger than {MAX_TEMPLATE_FILE} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None


# --------------------------------------------------------------------------------------------------
# [clients]: pre-registered clients

_STATIC_KEYS = frozenset(
    {"client_id", "client_secret", "redirect_uris", "token_endpoint_auth_method", "client_name"}
)
_STATIC_METHODS = ("none", "client_secret_basic", "client_secret_post")
MIN_STATIC_SECRET_LENGTH = 16


def _static_clients(t: _Table) -> tuple[Client, ...]:
    """``[[clients.static]]`` tables as ``Client`` records (secrets kept only as digests)."""
    if not t.has("static"):
        return ()
    entries = t.values["static"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("[clients].static: must be an array of tables ([[clients.static]])")
    out: list[Client] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        out.append(_static_client(_Table(f"clients.static[{i}]", entry), seen))
    return tuple(out)


def _static_client(t: _Table, seen: set[str]) -> Client:
    unknown = sorted(set(t.values) - _STATIC_KEYS)
    if unknown:
        raise ConfigError(", ".join(t.key(k) for k in unknown) + ": unknown key")
    client_id = t.require("client_id", str)
    if len(client_id) > 255 or any(c.isspace() or ord(c) < 0x21 for c in client_id):
        raise ConfigError(f"{t.key('client_id')}: must be printable, without spaces")
    if client_id in seen:
        raise ConfigError(f"{t.key('client_id')}: {client_id!r} is listed twice")
    seen.add(client_id)
    secret = t.get("client_secret", str, None)
    if secret is not None and len(secret) < MIN_STATIC_SECRET_LENGTH:
        raise ConfigError(
            f"{t.key('client_secret')}: must be at least {MIN_STATIC_SECRET_LENGTH} characters"
        )
    method = t.get("token_endpoint_auth_method", str, "client_secret_basic" if secret else "none")
    if method not in _STATIC_METHODS:
        raise ConfigError(
            f"{t.key('token_endpoint_auth_method')}: must be one of {', '.join(_STATIC_METHODS)}"
        )
    if (method == "none") != (secret is None):
        raise ConfigError(
            f"{t.key('client_secret')}: required with {method}"
            if secret is None
            else f"{t.key('client_secret')}: a public client (none) has no secret"
        )
    uris = t.values.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ConfigError(f"{t.key('redirect_uris')}: required, a non-empty list of URIs")
    application_type = "web" if all(u.startswith("https:") for u in uris) else "native"
    for uri in uris:
        try:
            validate_redirect_uri(uri, application_type=application_type)
        except InvalidRedirectUriError as exc:
            raise ConfigError(f"{t.key('redirect_uris')}: {exc.description}") from None
    name = t.get("client_name", str, None)
    grant_types = ("authorization_code", "refresh_token")
    metadata = {
        "redirect_uris": list(dict.fromkeys(uris)),
        "token_endpoint_auth_method": method,
        "grant_types": list(grant_types),
        "response_types": ["code"],
        "application_type": application_type,
    }
    if name:
        metadata["client_name"] = name
    return Client(
        client_id=client_id,
        secret_hash=digest(secret) if secret is not None else None,
        token_endpoint_auth_method=method,
        redirect_uris=tuple(dict.fromkeys(uris)),
        grant_types=grant_types,
        client_name=name or None,
        application_type=application_type,
        source="static",
        metadata=tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(metadata.items())),
        issued_at=0,
    )
