"""``proxy.toml``: the standalone proxy's configuration file, read into one validated ``Settings``.

``load_settings(path)`` parses TOML (Python's ``tomllib``), checks every key, and builds the core's
``ProxyConfig`` (with its ``UpstreamProfile``) eagerly, so that a file that loads is a file that
serves. The keys, their types, defaults and bounds are declared once in ``config_schema.py`` (which
also feeds the documentation's reference page); this module adds the rules that involve more than
one value or the outside world (URLs, secrets from the environment, OIDC discovery, files), and
assembles the result.

Every problem of the file is reported at once, in one ``ConfigError`` whose ``problems`` each start
with the key they are about (``[upstream].client_id: required``); unknown tables and keys are
problems too, with a suggestion for a near miss (``did you mean `client_secret_env`?``). A value that
is refused is reported once: whatever depends on it is skipped, not reported again. Messages and
reprs never contain a secret (the upstream client secret, or the password of a ``redis://`` URL).

Providers are built only by the core's profile factories (``oauthproxy_core.providers``): ``github``
(``github_profile``, or ``github_app_profile`` with ``github_app = true``; GitHub Enterprise Server
with ``api_base_url``, ``authorize_url`` and ``token_url`` on the enterprise host), ``google`` and
``entra`` (their built-in profiles; no network at load), ``oauth2`` (``oauth2_profile``, the three
endpoints required) and ``oidc`` (``oidc_profile_from_discovery``: the core's discovery request is
executed here once, at load, and its answer checked by the core). ``oidc``, ``google`` and ``entra``
given all three of ``authorize_url``, ``token_url`` and ``userinfo_url`` are built like ``oauth2``
under their own name, with OpenID scopes, and fetch nothing. Every upstream URL obeys the core's
rule (https, or http on a loopback host: ``oauthproxy_core.url_policy``); the file must in
addition say ``allow_insecure_http = true`` before any http URL is accepted.

Protected resources: ``[server] mcp_path`` with ``[gateway]`` (one MCP server), or ``[[resources]]``
(several, each with its ``[resources.access]`` and ``[[resources.tools]]``), never both: each entry
becomes a core ``ResourceServer`` and a ``GatewayResource`` (spec/security.md 40).

Paths: ``[keys] file`` and ``sqlite:///relative.db`` store URLs are relative to the working directory
of the process (the stores' convention). Without ``[store] url`` the store is ``sqlite://``, the
embedded durable default (``./.oauthproxy/state.db``, or ``$OAUTHPROXY_DATA_DIR/state.db``, beside
the default key file); ``memory://`` only when the file asks for it. ``oauthproxy serve`` creates
the key file on first start (mode 0600, its directory 0700) with fresh keys; manage it afterwards
with ``oauthproxy keys rotate|retire|show``. An existing key file readable by group or others is
refused.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import attrs
import httpx

from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.admission import ClientAdmission
from oauthproxy_core.bearer_header import is_token68
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.cimd import CimdDocumentError, check_jwks
from oauthproxy_core.client_metadata import DEVICE_GRANT_TYPE
from oauthproxy_core.config import DeviceGrant, Lifetimes, ProxyConfig
from oauthproxy_core.consent_theme import ConsentTheme
from oauthproxy_core.crypto import digest
from oauthproxy_core.errors import InvalidRedirectUriError, InvalidTargetError
from oauthproxy_core.issuers import (
    ALGORITHMS,
    EnterpriseIssuer,
    TrustedIssuer,
    issuer_url_problem,
    subject_prefix_problem,
)
from oauthproxy_core.jsonrpc_inspection import DEFAULT_MAX_MESSAGE_BYTES
from oauthproxy_core.providers import (
    DEFAULT_OIDC_SCOPES,
    DiscoveryError,
    build_discovery_request,
    entra_profile,
    github_app_profile,
    github_profile,
    google_profile,
    oauth2_profile,
    oidc_profile_from_discovery,
    parse_discovery_response,
)
from oauthproxy_core.providers.entra import ENTRA_EMAIL_VERIFIED_CLAIM
from oauthproxy_core.records import Client
from oauthproxy_core.redirect_uris import validate_redirect_uri
from oauthproxy_core.resource_servers import ResourceServer, resource_path_problem
from oauthproxy_core.resources import canonical_resource
from oauthproxy_core.routes import RouteTable
from oauthproxy_core.tool_policy import OFFLINE_ACCESS, ToolPolicy, ToolRule
from oauthproxy_core.upstream import UpstreamProfile
from oauthproxy_core.url_policy import (
    document_url_problem,
    has_fragment,
    has_unsafe_characters,
    has_userinfo,
    issuer_problem,
    provider_url_problem,
)

from . import config_schema
from .config_schema import PROVIDERS, Checked, Problem, Section, Unusable
from .http_clients import SyncHttpClient
from .stores import postgres_options, redis_options
from .stores.redis_ha_url import HA_SCHEMES, parse_redis_ha_url
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

_STORE_SCHEMES = (
    "memory",
    "sqlite",
    "redis",
    "rediss",
    *HA_SCHEMES,
    "postgresql",
    "postgres",
)
#: The stores reached over the network, whose URL may take a password (``[store] password_env``).
_NETWORK_STORE_SCHEMES = ("redis", "rediss", *HA_SCHEMES, "postgresql", "postgres")
_ENDPOINT_KEYS = ("authorize_url", "token_url", "userinfo_url")

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is unusable. ``problems``: one ``[table].key: problem`` line each;
    ``message`` is all of them, one per line."""

    def __init__(self, problems: str | Iterable[str | Problem]) -> None:
        lines = (problems,) if isinstance(problems, str) else tuple(str(p) for p in problems)
        self.problems: tuple[str, ...] = lines
        self.message = "\n".join(lines)
        super().__init__(self.message)

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
class GatewayResource:
    """One ``[[resources]]`` entry's gateway: its path, its MCP server and that server's rules
    (the core's side of the entry is ``ProxyConfig.resources``)."""

    path: str
    upstream_url: str
    tools: ToolPolicy = attrs.field(factory=ToolPolicy)
    forward_upstream_token: bool = False


@attrs.frozen(kw_only=True)
class Settings:
    """Everything ``oauthproxy serve`` needs, validated. Built by ``load_settings``."""

    #: The core's configuration (issuer, resource, scopes, consent, the upstream profile).
    proxy: ProxyConfig
    host: str = "127.0.0.1"
    port: int = 8000
    store_url: str = attrs.field(default="sqlite://", repr=redact_url)
    #: Absolute path of the keyring document (created on first start if missing).
    keys_file: str
    #: The MCP server behind the gateway, or ``None`` (then the proxy only protects ``mcp_path``).
    gateway_upstream_url: str | None = None
    #: ``[[gateway.tools]]``: per-tool rules (none: every tool open, no message read).
    gateway_tools: ToolPolicy = attrs.field(factory=ToolPolicy)
    #: ``[gateway] max_message_bytes``: the largest message the gateway reads to apply the rules.
    gateway_max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: ``[gateway] forward_upstream_token``: send the user's provider token to the MCP server.
    gateway_forward_upstream_token: bool = False
    #: The file the settings came from (``None`` when parsed from a mapping).
    source: str | None = None
    #: ``[metrics] enabled``: serve Prometheus metrics at ``GET /metrics`` (metrics.py).
    metrics_enabled: bool = False
    #: ``[metrics] bearer_token`` (or ``_env``): required as ``Authorization: Bearer`` on /metrics.
    metrics_bearer_token: str | None = attrs.field(default=None, repr=False)
    #: Peers trusted to name the client in ``X-Forwarded-For`` (``None``: uvicorn's default).
    forwarded_allow_ips: tuple[str, ...] | None = None
    #: ``[[resources]]``: one gateway per protected MCP server (empty: the single-resource form,
    #: ``gateway_upstream_url`` at ``mcp_path``).
    resources: tuple[GatewayResource, ...] = ()

    @property
    def issuer(self) -> str:
        return self.proxy.issuer

    @property
    def upstream(self) -> UpstreamProfile:
        return self.proxy.upstream

    @property
    def mcp_path(self) -> str:
        return self.proxy.mcp_path


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


class _Problems:
    """The problems found so far; builders add to it and raise ``Unusable`` when they cannot go on."""

    def __init__(self, found: Iterable[Problem]) -> None:
        self.found = list(found)

    def __len__(self) -> int:
        return len(self.found)

    def add(self, t: Section, key: str, why: str) -> None:
        self.found.append(config_schema.problem(t.name, key, why))

    def fail(self, t: Section, key: str, why: str) -> NoReturn:
        self.add(t, key, why)
        raise Unusable(t.path(key))

    def attempt(self, build: Callable[..., T], *args: Any) -> T | None:
        """``build(*args)``, or ``None`` if it could not build (its problems are recorded)."""
        try:
            return build(*args)
        except Unusable:
            return None

    def since(self, count: int, *needed: object) -> None:
        """Stop (``Unusable``) if problems were added since ``len(self)`` was ``count``, or if a
        ``needed`` value is missing (it was refused, and reported, before)."""
        if len(self.found) > count or any(value is None for value in needed):
            raise Unusable


def parse_settings(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    http: httpx.Client | None = None,
    source: str | None = None,
) -> Settings:
    """Validate an already-parsed TOML document (see ``load_settings``)."""
    env = os.environ if environ is None else environ
    checked = config_schema.check(data)
    p = _Problems(checked.problems)
    t = checked.sections

    server = p.attempt(_server, t["server"], p)
    profile = p.attempt(_upstream_profile, t["upstream"], p, env, http)
    consent_theme = p.attempt(_consent_theme, t["consent"], p)
    store_url = p.attempt(_store_url, t["store"], p, env)
    keys_file = p.attempt(_keys_file, t["keys"], p)
    gateway = p.attempt(_gateway, t["gateway"], p, server)
    static_clients = p.attempt(_static_clients, t["clients"], p, env, server, profile)
    bounds = p.attempt(_bounds, t["limits"])
    access = p.attempt(_access, t["access"], p)
    admission = p.attempt(_admission, t["clients"], p)
    lifetimes = p.attempt(_lifetimes, t["lifetimes"], p)
    device = p.attempt(_device, t["device"], p)
    metrics_token = p.attempt(_metrics_token, t["metrics"], p, env)
    metrics_enabled = p.attempt(t["metrics"].get, "enabled")
    resources = p.attempt(_resources, checked, server, t["gateway"], p)
    trusted, enterprise = _other_issuers(checked, server, t["clients"], p, resources)
    cimd_enabled = p.attempt(t["clients"].get, "cimd")
    cimd_allow_loopback = p.attempt(t["clients"].get, "cimd_allow_loopback")
    consent_mode = p.attempt(t["consent"].get, "mode")
    if p.found:
        ordered: list[Problem] = sorted(p.found, key=_rank)
        raise ConfigError(ordered)
    # No problem was found, so every part was built (a part that could not be built said why).
    assert server is not None and profile is not None and consent_theme is not None
    assert store_url is not None and keys_file is not None and bounds is not None
    assert consent_mode is not None and cimd_enabled is not None
    assert cimd_allow_loopback is not None and access is not None and lifetimes is not None
    assert gateway is not None and admission is not None and resources is not None
    assert device is not None
    try:
        proxy = ProxyConfig(
            issuer=server.base_url,
            mcp_path=server.mcp_path,
            upstream=profile,
            scopes_supported=server.scopes_supported,
            default_scopes=server.default_scopes,
            consent_mode=consent_mode,
            service_name=server.service_name,
            static_clients=static_clients or (),
            cimd_enabled=cimd_enabled,
            cimd_allow_loopback=cimd_allow_loopback,
            admission=admission,
            bounds=bounds,
            consent_theme=consent_theme,
            access=access,
            lifetimes=lifetimes,
            device=device,
            trusted_issuers=trusted,
            enterprise_issuers=enterprise,
            resources=tuple(server for server, _ in resources),
        )
        RouteTable(proxy)  # a resource at an endpoint's path is refused here, not at start
    except (ValueError, TypeError) as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("[") else f"[server]: {message}") from None
    return Settings(
        proxy=proxy,
        host=server.host,
        port=server.port,
        store_url=store_url,
        keys_file=keys_file,
        gateway_upstream_url=gateway.upstream_url,
        gateway_tools=gateway.tools,
        gateway_max_message_bytes=gateway.max_message_bytes,
        gateway_forward_upstream_token=gateway.forward_upstream_token,
        source=source,
        metrics_enabled=bool(metrics_enabled),
        metrics_bearer_token=metrics_token,
        forwarded_allow_ips=server.forwarded_allow_ips,
        resources=tuple(gateway for _, gateway in resources),
    )


def _rank(problem: Problem) -> tuple[int, int]:
    return problem.rank


# --------------------------------------------------------------------------------------------------
# [server]


@attrs.frozen
class _Server:
    host: str
    port: int
    base_url: str
    mcp_path: str
    service_name: str
    scopes_supported: tuple[str, ...]
    default_scopes: tuple[str, ...]
    forwarded_allow_ips: tuple[str, ...] | None


def _server(t: Section, p: _Problems) -> _Server:
    before = len(p)
    host = p.attempt(_host, t, p)
    base_url = p.attempt(_base_url, t, p)
    mcp_path = p.attempt(_mcp_path, t, p)
    supported = p.attempt(_scope_list, t, p, "scopes_supported")
    default = p.attempt(_scope_list, t, p, "default_scopes")
    forwarded = p.attempt(_forwarded_allow_ips, t, p)
    if supported is not None and not supported:
        p.add(t, "scopes_supported", "must not be empty")
    elif supported is not None and default is not None and not set(default) <= set(supported):
        p.add(t, "default_scopes", "must be a subset of scopes_supported")
    p.since(before, host, base_url, mcp_path, supported)
    assert host is not None and base_url is not None and mcp_path is not None
    assert supported is not None
    if default is None:
        default = tuple(s for s in ("mcp",) if s in supported) or supported[:1]
    return _Server(
        host=host,
        port=t.get("port"),
        base_url=base_url,
        mcp_path=mcp_path,
        service_name=t.get("service_name"),
        scopes_supported=supported,
        default_scopes=default,
        forwarded_allow_ips=forwarded,
    )


def _host(t: Section, p: _Problems) -> str:
    host: str = t.get("host")
    if not host or any(c.isspace() for c in host):
        p.fail(t, "host", "must be a host name or IP address")
    return host


def _base_url(t: Section, p: _Problems) -> str:
    # The issuer's rule (RFC 8414 §2), the core's own, so the file refuses what ProxyConfig would.
    value: str = t.get("base_url")
    problem = issuer_problem(value)
    if problem is not None:
        p.fail(t, "base_url", problem)
    return value


def _mcp_path(t: Section, p: _Problems) -> str:
    path: str = t.get("mcp_path")
    if not path.startswith("/") or (path.endswith("/") and path != "/"):
        p.fail(t, "mcp_path", "must start with '/' and not end with '/'")
    if any(c.isspace() or c in "?#\\" or ord(c) < 0x20 for c in path):
        p.fail(t, "mcp_path", "must be a plain path (no query, fragment or spaces)")
    return path


def _scope_list(t: Section, p: _Problems, key: str) -> tuple[str, ...] | None:
    """The scope names at ``key`` (duplicates dropped), or ``None`` when absent without default."""
    value = t.get(key)
    if value is None:
        return None
    if any(any(c.isspace() or ord(c) < 0x21 or c in '"\\' for c in v) for v in value):
        p.fail(t, key, "scope names may not contain spaces or quotes")
    return tuple(dict.fromkeys(value))


def _forwarded_allow_ips(t: Section, p: _Problems) -> tuple[str, ...] | None:
    entries = t.get("forwarded_allow_ips")
    if entries is None:
        return None
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            p.fail(t, "forwarded_allow_ips", f"{entry!r} is not an IP address or network")
    return tuple(entries)


def _plain_url(t: Section, p: _Problems, key: str, value: str, not_http: str) -> Any:
    """An absolute http(s) URL with a host and nothing else: no query, fragment or userinfo."""
    if has_unsafe_characters(value):
        p.fail(t, key, "must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        p.fail(t, key, "not a valid URL")
    if not parts.scheme or not parts.hostname:
        p.fail(t, key, "must be an absolute URL with a host")
    if parts.scheme not in ("https", "http"):
        p.fail(t, key, not_http)
    if parts.query or "?" in value or has_fragment(value):
        p.fail(t, key, "must not have a query or fragment")
    if has_userinfo(parts.netloc):
        p.fail(t, key, "must not contain userinfo")
    return parts


# --------------------------------------------------------------------------------------------------
# [upstream]: the provider, built by the core's profile factories

#: Fields of ``UpstreamProfile`` whose ``[upstream]`` key has another name; the others share it.
_PROFILE_FIELD_KEYS = {"subject_field": "userinfo_subject_field", "claim_map": "claims"}


@attrs.frozen
class _Upstream:
    """``[upstream]`` after its checks: what the factory of ``provider`` is called with."""

    provider: str
    #: ``UpstreamProfile`` fields common to every factory (credentials, scopes, claims, ...).
    fields: dict[str, Any]
    #: The endpoints the file gives (``authorize_url``, ``token_url``, ``userinfo_url``).
    explicit: dict[str, Any]
    issuer: str | None
    api_base_url: str | None
    #: entra: where a group overage is resolved (``None``: Microsoft Graph).
    graph_url: str | None
    allow_insecure_http: bool

    @property
    def all_explicit(self) -> bool:
        return len(self.explicit) == len(_ENDPOINT_KEYS)


def _upstream_profile(
    t: Section, p: _Problems, env: Mapping[str, str], http: httpx.Client | None
) -> UpstreamProfile:
    """The provider, built by the core's factory for it (module docstring)."""
    up = _upstream(t, p, env)
    if up.provider == "github":
        # Without `issuer`, the factory expects the RFC 9207 `iss` GitHub sends (<web>/login/oauth).
        factory = github_app_profile if t.get("github_app") else github_profile
        fields = up.fields if up.issuer is None else {**up.fields, "issuer": up.issuer}
        return _build(t, p, lambda: factory(api_base_url=up.api_base_url, **up.explicit, **fields))
    if up.provider == "oauth2" or up.all_explicit:
        return _explicit_endpoints(t, p, up)
    fields = up.fields if up.issuer is None else {**up.fields, "issuer": up.issuer}
    if up.provider == "google":
        return _build(t, p, lambda: google_profile(**up.explicit, **fields))
    if up.provider == "entra":
        tenant, app_id_uri = t.get("tenant"), t.get("app_id_uri")
        graph = {} if up.graph_url is None else {"graph_url": up.graph_url}
        return _build(
            t,
            p,
            lambda: entra_profile(
                tenant=tenant, app_id_uri=app_id_uri, **graph, **up.explicit, **fields
            ),
        )
    return _discovered(t, p, up, http)


def _upstream(t: Section, p: _Problems, env: Mapping[str, str]) -> _Upstream:
    """Check every ``[upstream]`` key (all problems reported), then collect the factory's input."""
    if not t.usable:
        raise Unusable
    before = len(p)
    provider: str | None = p.attempt(t.get, "provider")
    client_id = p.attempt(_client_id, t, p)
    secret = p.attempt(_secret, t, p, env, "client_secret")
    # None when refused: then whether an http URL is allowed is unknown, and not reported.
    insecure: bool | None = p.attempt(t.get, "allow_insecure_http")
    urls = {
        key: p.attempt(_upstream_url, t, p, key, insecure)
        for key in (*_ENDPOINT_KEYS, "issuer", "api_base_url", "graph_url")
        if t.has(key)
    }
    graph_url = urls.get("graph_url")
    if graph_url is not None and "?" in graph_url:
        # The Graph path is appended to it.
        p.add(t, "graph_url", "must not have a query")
    if t.has("userinfo_subject_field") and p.attempt(t.get, "userinfo_subject_field") == "":
        p.add(t, "userinfo_subject_field", "must not be empty")
    if provider is not None:
        for k in config_schema.keys_of("upstream").values():
            if k.providers and provider not in k.providers and t.has(k.name):
                allowed = " or ".join(repr(name) for name in k.providers)
                p.add(t, k.name, f"only used with provider = {allowed}")
        identity_source = p.attempt(t.get, "identity_source")
        if provider == "github" and identity_source not in (None, "userinfo"):
            p.add(t, "identity_source", "GitHub has only userinfo (GET /user)")
    p.since(before, provider, client_id, secret, insecure, *urls.values())
    assert provider is not None and insecure is not None
    fields: dict[str, Any] = {"client_id": client_id, "client_secret": secret}
    for key, field in (
        ("scopes", "scopes"),
        ("userinfo_subject_field", "subject_field"),
        ("identity_source", "identity_source"),
        ("forward_resource", "forward_resource"),
        ("email_verified_claim", "email_verified_claim"),
    ):
        if t.has(key):
            fields[field] = t.get(key)
    for key, field in (
        ("claims", "claim_map"),
        ("extra_authorize_params", "extra_authorize_params"),
        ("extra_token_params", "extra_token_params"),
    ):
        if t.has(key):
            fields[field] = tuple(t.get(key).items())
    return _Upstream(
        provider=provider,
        fields=fields,
        explicit={key: url for key, url in urls.items() if key in _ENDPOINT_KEYS and url},
        issuer=urls.get("issuer"),
        api_base_url=urls.get("api_base_url"),
        graph_url=urls.get("graph_url"),
        allow_insecure_http=insecure,
    )


def _explicit_endpoints(t: Section, p: _Problems, up: _Upstream) -> UpstreamProfile:
    """``oauth2``, and ``oidc``/``google``/``entra`` given every endpoint: nothing is fetched."""
    before = len(p)
    for key in _ENDPOINT_KEYS:
        if key not in up.explicit:
            p.add(t, key, "required with provider = 'oauth2'")
    source = up.fields.get("identity_source", "userinfo")
    if source != "userinfo":
        p.add(
            t,
            "identity_source",
            f"{source!r} needs a jwks_uri, found by discovery (provider = 'oidc' with issuer "
            "and without explicit endpoints)",
        )
    p.since(before)
    fields = dict(up.fields)
    if up.provider != "oauth2":
        fields.setdefault("scopes", DEFAULT_OIDC_SCOPES)
        # OIDC Core §5.1; Entra vouches only with its optional xms_edov (spec/security.md 32).
        fields.setdefault(
            "email_verified_claim",
            ENTRA_EMAIL_VERIFIED_CLAIM if up.provider == "entra" else "email_verified",
        )
    return _build(
        t, p, lambda: oauth2_profile(name=up.provider, issuer=up.issuer, **up.explicit, **fields)
    )


def _discovered(
    t: Section, p: _Problems, up: _Upstream, http: httpx.Client | None
) -> UpstreamProfile:
    """``oidc``: the endpoints from the issuer's discovery document; explicit ones win."""
    issuer = up.issuer
    if issuer is None:
        p.fail(
            t,
            "issuer",
            "required with provider = 'oidc' (for discovery), unless authorize_url, token_url "
            "and userinfo_url are all given",
        )
    document = _discover(t, p, issuer, http)
    profile = _build(
        t,
        p,
        lambda: oidc_profile_from_discovery(document, issuer=issuer, **up.explicit, **up.fields),
    )
    if not up.allow_insecure_http:
        # The discovered endpoints obey the core's rule (https, or http on loopback); http needs
        # the file's opt-in as much as an endpoint written in it does.
        for field in ("authorize_url", "token_url", "userinfo_url", "jwks_uri"):
            url = getattr(profile, field)
            if url is not None and url.startswith("http:") and field not in up.explicit:
                p.fail(t, "issuer", f"discovered {field} {_HTTP_NEEDS_OPT_IN}")
    return profile


_HTTP_NEEDS_OPT_IN = (
    "must be https (http is allowed only on loopback with [upstream].allow_insecure_http = true)"
)


def _client_id(t: Section, p: _Problems) -> str:
    client_id: str = t.get("client_id")
    if any(c.isspace() or ord(c) < 0x20 for c in client_id):
        p.fail(t, "client_id", "must not contain spaces or control characters")
    return client_id


def _upstream_url(t: Section, p: _Problems, key: str, insecure: bool | None) -> str:
    value: str = t.get(key)
    problem = provider_url_problem(value)
    if problem is not None:
        p.fail(t, key, problem)
    if value.lower().startswith("http:"):
        if insecure is None:
            raise Unusable(t.path(key))
        if not insecure:
            p.fail(t, key, _HTTP_NEEDS_OPT_IN)
    return value


def _secret(t: Section, p: _Problems, env: Mapping[str, str], key: str) -> str | None:
    """``key`` or ``key_env`` (an environment variable), not both; ``None`` when neither is given
    and the key is optional (``[metrics]``), else ``required``."""
    env_key = f"{key}_env"
    if t.has(key) and t.has(env_key):
        p.fail(t, key, f"give {key} or {env_key}, not both")
    if t.has(env_key):
        name = t.get(env_key)
        from_env = env.get(name)
        if not from_env:
            p.fail(t, env_key, f"environment variable {name} is not set or empty")
        return from_env
    value: str | None = t.get(key)
    if not value and t.name == "upstream":
        p.fail(t, key, f"required (or {env_key})")
    return value


def _discover(t: Section, p: _Problems, issuer: str, http: httpx.Client | None) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §4, executed once: the core builds the request and reads the
    answer (``oauthproxy_core.providers.oidc``); this runs it with the blocking HTTP client."""
    client = SyncHttpClient(client=http) if http is not None else SyncHttpClient()
    try:
        return parse_discovery_response(client(build_discovery_request(issuer)), issuer=issuer)
    except DiscoveryError as exc:
        p.fail(t, "issuer", str(exc))
    finally:
        if http is None:
            client.close()


def _build(t: Section, p: _Problems, make: Callable[[], UpstreamProfile]) -> UpstreamProfile:
    """Run a profile factory; its ``ValueError`` becomes a problem of the key it names."""
    try:
        return make()
    except DiscoveryError as exc:
        where = "issuer" if exc.member is None else f"issuer (discovered {exc.member})"
        p.fail(t, where, exc.reason)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        # The core's messages start with the field (``tenant must be ...``, ``claim_map: ...``).
        head, _, rest = message.partition(" ")
        field = head.rstrip(":")
        key = _PROFILE_FIELD_KEYS.get(field, field)
        if key in config_schema.keys_of("upstream") and rest:
            p.fail(t, key, rest)
        p.fail(t, "", message)


# --------------------------------------------------------------------------------------------------
# [consent]: the consent page's look

_THEME_KEYS = ("product_name", "logo_url", "primary_color", "background_color", "extra_text")
MAX_TEMPLATE_FILE = 64 * 1024


def _consent_theme(t: Section, p: _Problems) -> ConsentTheme:
    """``[consent]`` theme keys as a validated ``ConsentTheme``; ``template`` is a file path, read
    now (relative paths from the working directory, like ``[keys] file``)."""
    before = len(p)
    fields: dict[str, str] = {}
    for key in _THEME_KEYS:
        value = p.attempt(t.get, key)
        if value is not None:
            fields[key] = value
    path = p.attempt(t.get, "template")
    if path is not None:
        template = p.attempt(_read_template, t, p, path)
        if template is not None:
            fields["template"] = template
    for key, value in fields.items():
        # One key at a time, so the message names the key that is wrong.
        try:
            ConsentTheme(**{key: value})
        except ValueError as exc:
            p.add(t, key, str(exc).removeprefix(key).lstrip(" :"))
    p.since(before)
    return ConsentTheme(**fields)


def _read_template(t: Section, p: _Problems, path: str) -> str:
    _no_control_characters(t, p, "template", path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEMPLATE_FILE + 1)
    except OSError as exc:
        p.fail(t, "template", f"cannot read {path} ({exc.strerror or exc.__class__.__name__})")
    if len(raw) > MAX_TEMPLATE_FILE:
        p.fail(t, "template", f"{path} is larger than {MAX_TEMPLATE_FILE} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        p.fail(t, "template", f"{path} is not UTF-8 text")


# --------------------------------------------------------------------------------------------------
# [store], [keys], [gateway], [limits], [metrics]


def _store_url(t: Section, p: _Problems, env: Mapping[str, str]) -> str:
    value: str = t.get("url")
    _no_control_characters(t, p, "url", value)
    scheme, sep, rest = value.partition("://")
    if not sep:
        p.fail(
            t,
            "url",
            "expected memory://, sqlite:///path.db, redis://host:port/db, "
            "redis+sentinel://host:port/service/db, redis+cluster://host:port/0 or "
            "postgresql://user@host:port/dbname",
        )
    scheme = scheme.lower()
    if scheme not in _STORE_SCHEMES:
        p.fail(
            t,
            "url",
            f"unknown scheme {scheme!r} (expected memory, sqlite, redis, redis+sentinel, "
            "redis+cluster, their TLS forms rediss, rediss+sentinel, rediss+cluster, or "
            "postgresql)",
        )
    if scheme in HA_SCHEMES:
        try:
            parse_redis_ha_url(value)
        except ValueError as exc:
            p.fail(t, "url", str(exc))
    if scheme == "sqlite" and rest not in ("", "/") and not rest.startswith("/"):
        p.fail(t, "url", "use sqlite:///relative.db or sqlite:////absolute.db")
    if scheme == "sqlite" and "?" in rest:
        option = rest.partition("?")[2].lower()
        if option not in ("synchronous=normal", "synchronous=full"):
            p.fail(t, "url", "the only SQLite option is ?synchronous=normal|full")
    if scheme in ("redis", "rediss", "postgresql", "postgres"):
        kind = "Redis" if scheme.startswith("redis") else "PostgreSQL"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018
        except ValueError:
            p.fail(t, "url", f"not a valid {kind} URL")
        if kind == "Redis" and not parts.hostname:
            p.fail(t, "url", "a Redis URL needs a host")
    if scheme in ("redis", "rediss"):
        try:
            redis_options(value)
        except ValueError as exc:
            p.fail(t, "url", str(exc).removeprefix("bad Redis store URL: "))
    if scheme in ("postgresql", "postgres"):
        try:
            postgres_options(value)
        except ValueError as exc:
            p.fail(t, "url", str(exc).removeprefix("bad PostgreSQL store URL option: "))
    if t.has("password_env"):
        value = _with_password(t, p, env, value, scheme)
    return value


def _with_password(t: Section, p: _Problems, env: Mapping[str, str], url: str, scheme: str) -> str:
    """``url`` with the password from ``[store] password_env`` in its userinfo (percent-encoded)."""
    if scheme not in _NETWORK_STORE_SCHEMES:
        p.fail(t, "password_env", f"a {scheme}:// store takes no password")
    parts = urlsplit(url)
    if parts.password is not None:
        p.fail(t, "password_env", "the URL has a password already: give one or the other")
    name = t.get("password_env")
    password = env.get(name)
    if not password:
        p.fail(t, "password_env", f"environment variable {name} is not set or empty")
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _keys_file(t: Section, p: _Problems) -> str:
    path = t.get("file")
    if path:
        _no_control_characters(t, p, "file", path)
    return os.path.abspath(path) if path else os.path.abspath(default_keys_file())


def _no_control_characters(t: Section, p: _Problems, key: str, value: str) -> None:
    """A path or URL with a NUL or another control character names no file: the OS refuses it
    (``open`` raises ``ValueError`` for NUL), and a log line printing it could be forged."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        p.fail(t, key, "must not contain control characters")


def _gateway_url(t: Section, p: _Problems) -> str | None:
    value: str | None = t.get("upstream_url")
    if value is None:
        return None
    _plain_url(t, p, "upstream_url", value, "must be an http or https URL")
    return value


@attrs.frozen
class _Gateway:
    upstream_url: str | None
    tools: ToolPolicy
    max_message_bytes: int
    forward_upstream_token: bool


def _gateway(t: Section, p: _Problems, server: _Server | None) -> _Gateway:
    """``[gateway]`` and its ``[[gateway.tools]]`` rules (spec/security.md 38)."""
    before = len(p)
    url = p.attempt(_gateway_url, t, p)
    supported = server.scopes_supported if server is not None else None
    rules = [p.attempt(_tool_rule, entry, p, supported) for entry in t.entries("tools")]
    max_bytes: int = t.get("max_message_bytes")
    forward: bool = t.get("forward_upstream_token")
    if url is None and "upstream_url" not in t.bad:
        if rules:
            p.add(t, "tools", "tool rules need [gateway] upstream_url (the MCP server they guard)")
        if forward:
            p.add(t, "forward_upstream_token", "needs [gateway] upstream_url")
    p.since(before)
    return _Gateway(
        upstream_url=url,
        tools=ToolPolicy(rules=tuple(r for r in rules if r is not None)),
        max_message_bytes=max_bytes,
        forward_upstream_token=forward,
    )


def _tool_rule(t: Section, p: _Problems, supported: tuple[str, ...] | None) -> ToolRule:
    before = len(p)
    name = p.attempt(t.get, "name")
    scopes = p.attempt(t.get, "scopes") or []
    groups = p.attempt(t.get, "groups") or []
    p.since(before, name)
    assert name is not None
    for scope in scopes:
        if supported is not None and scope not in supported and scope != OFFLINE_ACCESS:
            p.add(t, "scopes", f"{scope!r} is not in [server] scopes_supported")
    try:
        rule = ToolRule(name=name, scopes=scopes, groups=groups)
    except ValueError as exc:
        # The rule names the key its message starts with ("scopes: ..."); "name" otherwise.
        message = str(exc)
        key, sep, rest = message.partition(": ")
        if sep and key in ("scopes", "groups"):
            p.fail(t, key, rest)
        if message.startswith("a rule needs"):
            p.fail(t, "scopes", message)
        p.fail(t, "name", message.removeprefix("name "))
    p.since(before)
    return rule


# --------------------------------------------------------------------------------------------------
# [[resources]]: several MCP servers under one issuer (oauthproxy_core.resource_servers)

_Resources = tuple[tuple[ResourceServer, GatewayResource], ...]


def _resources(
    checked: Checked, server: _Server | None, gateway: Section, p: _Problems
) -> _Resources:
    """Each entry as the core's ``ResourceServer`` and its gateway. They replace the
    single-resource form, so ``[gateway]``'s per-server keys and ``[server] mcp_path`` are refused
    beside them rather than silently ignored."""
    entries = checked.arrays.get("resources", ())
    if not entries:
        return ()
    before = len(p)
    for key in ("upstream_url", "tools", "forward_upstream_token"):
        if gateway.has(key):
            p.add(
                gateway, key, "with [[resources]], each resource names its own (see [[resources]])"
            )
    if checked.sections["server"].has("mcp_path"):
        p.add(checked.sections["server"], "mcp_path", "with [[resources]], each has its own path")
    built = [p.attempt(_resource, entry, server, p) for entry in entries]
    p.since(before, server, *built)
    return tuple(r for r in built if r is not None)


def _resource(
    t: Section, server: _Server | None, p: _Problems
) -> tuple[ResourceServer, GatewayResource]:
    before = len(p)
    path = p.attempt(t.get, "path")
    if path is not None and (problem := resource_path_problem(path)):
        p.add(t, "path", problem)
    url = p.attempt(_gateway_url, t, p)
    if url is None and "upstream_url" not in t.bad:
        p.add(t, "upstream_url", "required")
    supported = server.scopes_supported if server is not None else None
    scopes = p.attempt(_scope_list, t, p, "scopes")
    for scope in scopes or ():
        if supported is not None and scope not in supported:
            p.add(t, "scopes", f"{scope!r} is not in [server] scopes_supported")
    access_table = p.attempt(t.get, "access")
    access = p.attempt(_access, access_table, p, "resources.access") if access_table else None
    rules = [p.attempt(_tool_rule, entry, p, supported) for entry in t.entries("tools")]
    p.since(before, server, path, url)
    assert server is not None and path is not None and url is not None
    resource = ResourceServer(
        path=path,
        name=t.get("name") or server.service_name,
        scopes=scopes if scopes is not None else server.default_scopes,
        access=access,
    )
    gateway = GatewayResource(
        path=path,
        upstream_url=url,
        tools=ToolPolicy(rules=tuple(r for r in rules if r is not None)),
        forward_upstream_token=bool(t.get("forward_upstream_token")),
    )
    return resource, gateway


def _bounds(t: Section) -> Bounds:
    """``[limits]``: the ``Bounds`` fields (types and minimums are checked by the schema)."""
    names = attrs.fields_dict(Bounds)
    return Bounds(
        **{name: t.get(name) for name in config_schema.keys_of("limits") if name in names}
    )


def _access(t: Section, p: _Problems, table: str = "access") -> AccessPolicy:
    """``[access]`` (or a resource's ``[resources.access]``): each rule list is validated by
    ``AccessPolicy``; a bad entry names its key."""
    rules: dict[str, Any] = {}
    for name in config_schema.keys_of(table):
        if t.has(name) or name == "groups_claim":
            rules[name] = t.get(name)
    before = len(p)
    for name, value in rules.items():
        try:
            AccessPolicy(**{name: value})
        except ValueError as exc:
            p.add(t, name, str(exc).removeprefix(f"{name}: "))
    p.since(before)
    return AccessPolicy(**rules)


#: ``[clients]`` keys -> ``ClientAdmission`` fields.
_ADMISSION_KEYS = ("dcr", "cimd_allowed_hosts", "cimd_denied_hosts", "redirect_hosts")


def _admission(t: Section, p: _Problems) -> ClientAdmission:
    """``[clients]`` admission: each host list is validated by ``ClientAdmission``; a bad entry
    names its key."""
    values: dict[str, Any] = {}
    for name in _ADMISSION_KEYS:
        value = t.get(name)
        if value is not None:
            values[name] = value
    before = len(p)
    for name, value in values.items():
        try:
            ClientAdmission(**{name: value})
        except ValueError as exc:
            p.add(t, name, str(exc).removeprefix(f"{name}: "))
    p.since(before)
    return ClientAdmission(**values)


def _device(t: Section, p: _Problems) -> DeviceGrant:
    """``[device]``: ranges are checked by the schema from ``DeviceGrant``'s own bounds."""
    values = {field.name: t.get(field.name) for field in attrs.fields(DeviceGrant)}
    try:
        return DeviceGrant(**values)
    except ValueError as exc:
        p.fail(t, "", str(exc))


def _lifetimes(t: Section, p: _Problems) -> Lifetimes:
    """``[lifetimes]``: ranges are checked by the schema from ``Lifetimes``' own bounds."""
    values = {field: t.get(key) for key, field in config_schema.LIFETIME_FIELDS.items()}
    try:
        return Lifetimes(**values)
    except ValueError as exc:
        p.fail(t, "", str(exc))


#: RFC 6750 §2.1: what a client can send after ``Authorization: Bearer``.
_TOKEN68_RULE = "letters, digits and - . _ ~ + / only, optionally ending in ="


def _metrics_token(t: Section, p: _Problems, env: Mapping[str, str]) -> str | None:
    """A token no client could present would lock ``/metrics`` for everyone: name the key instead."""
    token = _secret(t, p, env, "bearer_token")
    if token is None:
        return None
    if t.has("bearer_token_env"):
        if not is_token68(token):
            p.fail(
                t, "bearer_token_env", f"the value of {t.get('bearer_token_env')}: {_TOKEN68_RULE}"
            )
    elif len(token) < 16 or not is_token68(token):
        p.fail(t, "bearer_token", f"at least 16 characters, {_TOKEN68_RULE}")
    return token


# --------------------------------------------------------------------------------------------------
# [[clients.static]]: pre-registered clients

MIN_STATIC_SECRET_LENGTH = 16


def _static_clients(
    t: Section,
    p: _Problems,
    env: Mapping[str, str],
    server: _Server | None,
    profile: UpstreamProfile | None,
) -> tuple[Client, ...]:
    """``[[clients.static]]`` tables as ``Client`` records (secrets kept only as digests)."""
    before = len(p)
    seen: set[str] = set()
    context = _StaticContext(
        env=env,
        scopes_supported=server.scopes_supported if server is not None else None,
        user_prefix=f"{profile.name}:" if profile is not None else None,
        allow_loopback=bool(p.attempt(t.get, "cimd_allow_loopback")),
    )
    clients = [p.attempt(_static_client, entry, p, seen, context) for entry in t.entries("static")]
    p.since(before)
    return tuple(c for c in clients if c is not None)


@attrs.frozen
class _StaticContext:
    """What a ``[[clients.static]]`` table is checked against besides itself."""

    env: Mapping[str, str]
    #: ``None`` when ``[server]`` was refused (its own problems are reported).
    scopes_supported: tuple[str, ...] | None
    #: The prefix of users' subjects (``github:``); ``None`` when ``[upstream]`` was refused.
    user_prefix: str | None
    allow_loopback: bool


def _static_client(t: Section, p: _Problems, seen: set[str], c: _StaticContext) -> Client:
    before = len(p)
    client_id = p.attempt(t.get, "client_id")
    if client_id is not None:
        if len(client_id) > 255 or any(ch.isspace() or ord(ch) < 0x21 for ch in client_id):
            p.add(t, "client_id", "must be printable, without spaces")
        elif client_id in seen:
            p.add(t, "client_id", f"{client_id!r} is listed twice")
        seen.add(client_id)
    found = len(p)
    secret = p.attempt(_secret, t, p, c.env, "client_secret")
    secret_key = "client_secret_env" if t.has("client_secret_env") else "client_secret"
    secret_refused = len(p) > found or bool({"client_secret", "client_secret_env"} & t.bad)
    if secret is not None and len(secret) < MIN_STATIC_SECRET_LENGTH:
        p.add(t, secret_key, f"must be at least {MIN_STATIC_SECRET_LENGTH} characters")
    method = p.attempt(t.get, "token_endpoint_auth_method")
    if method is None and not t.has("token_endpoint_auth_method"):
        method = "client_secret_basic" if secret or secret_refused else "none"
    if method is not None and not secret_refused:
        _check_secret_for_method(t, p, method, secret, secret_key)
    grant_types = p.attempt(_static_grant_types, t, p)
    keys = p.attempt(_static_keys, t, p, method, c.allow_loopback)
    uris = p.attempt(_static_redirect_uris, t, p, grant_types)
    scopes = p.attempt(_static_scopes, t, p, c.scopes_supported)
    subject = p.attempt(_static_subject, t, p, grant_types, method, c.user_prefix)
    p.since(before, client_id, method, grant_types, keys, uris, scopes)
    assert client_id is not None and method is not None and grant_types is not None
    assert keys is not None and uris is not None and scopes is not None
    name = t.get("client_name")
    application_type = "web" if all(u.startswith("https:") for u in uris) else "native"
    metadata: dict[str, Any] = {
        "token_endpoint_auth_method": method,
        "grant_types": list(grant_types),
        "response_types": ["code"] if "authorization_code" in grant_types else [],
        "application_type": application_type,
    }
    if uris:
        metadata["redirect_uris"] = list(uris)
    if name:
        metadata["client_name"] = name
    if scopes:
        metadata["scope"] = " ".join(scopes)
    encoded = {k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}
    encoded.update(keys)  # already JSON, as client_auth reads them
    return Client(
        client_id=client_id,
        secret_hash=digest(secret) if secret is not None else None,
        token_endpoint_auth_method=method,
        redirect_uris=uris,
        grant_types=grant_types,
        scope=scopes,
        client_name=name or None,
        application_type=application_type,
        source="static",
        metadata=tuple(sorted(encoded.items())),
        issued_at=0,
        subject=subject,
    )


def _check_secret_for_method(
    t: Section, p: _Problems, method: str, secret: str | None, secret_key: str
) -> None:
    """A secret exactly when the method uses one (RFC 6749 §2.3.1; RFC 7523 §2.2 uses keys)."""
    if method in ("client_secret_basic", "client_secret_post"):
        if secret is None:
            p.add(t, "client_secret", f"required with {method} (or client_secret_env)")
    elif secret is not None:
        who = "a public client (none)" if method == "none" else "a private_key_jwt client"
        p.add(t, secret_key, f"{who} has no secret")


def _static_grant_types(t: Section, p: _Problems) -> tuple[str, ...]:
    grant_types = tuple(dict.fromkeys(t.get("grant_types")))
    for grant in grant_types:
        if grant not in config_schema.STATIC_GRANT_TYPES:
            hint = config_schema.suggestion(grant, config_schema.STATIC_GRANT_TYPES)
            choices = ", ".join(config_schema.STATIC_GRANT_TYPES)
            p.fail(t, "grant_types", f"{grant!r} is not one of {choices}{hint}")
    users = {"authorization_code", DEVICE_GRANT_TYPE} & set(grant_types)
    if not users and "client_credentials" not in grant_types:
        p.fail(
            t,
            "grant_types",
            f"must include authorization_code, client_credentials or {DEVICE_GRANT_TYPE}",
        )
    if "refresh_token" in grant_types and not users:
        p.fail(t, "grant_types", f"refresh_token needs authorization_code or {DEVICE_GRANT_TYPE}")
    return grant_types


def _static_redirect_uris(
    t: Section, p: _Problems, grant_types: tuple[str, ...] | None
) -> tuple[str, ...]:
    uris: list[str] | None = t.get("redirect_uris")
    if grant_types is None:
        raise Unusable
    if "authorization_code" not in grant_types:
        if uris is not None:
            p.fail(t, "redirect_uris", "only a client of authorization_code has redirect URIs")
        return ()
    if not uris:
        p.fail(t, "redirect_uris", "required with authorization_code, a non-empty list of URIs")
    application_type = "web" if all(u.startswith("https:") for u in uris) else "native"
    for uri in uris:
        try:
            validate_redirect_uri(uri, application_type=application_type)
        except InvalidRedirectUriError as exc:
            p.fail(t, "redirect_uris", exc.description)
    return tuple(dict.fromkeys(uris))


def _static_scopes(t: Section, p: _Problems, supported: tuple[str, ...] | None) -> tuple[str, ...]:
    scopes: list[str] | None = t.get("scopes")
    if scopes is None:
        return ()
    if not scopes:
        p.fail(t, "scopes", "must not be empty (omit it for every supported scope)")
    if supported is not None:
        unknown = [s for s in scopes if s not in supported]
        if unknown:
            p.fail(t, "scopes", f"{unknown[0]!r} is not in [server] scopes_supported")
    return tuple(dict.fromkeys(scopes))


def _static_subject(
    t: Section,
    p: _Problems,
    grant_types: tuple[str, ...] | None,
    method: str | None,
    user_prefix: str | None,
) -> str | None:
    subject: str | None = t.get("subject")
    if grant_types is None or "client_credentials" not in grant_types:
        if subject is not None:
            p.fail(t, "subject", "only a client of client_credentials has a subject")
        return None
    if method == "none":
        # RFC 6749 §4.4: "MUST only be used by confidential clients".
        if t.has("token_endpoint_auth_method"):
            p.fail(
                t, "token_endpoint_auth_method", "client_credentials needs a confidential client"
            )
        p.fail(
            t,
            "client_secret",
            "client_credentials needs a confidential client: give client_secret_env (or "
            "client_secret), or private_key_jwt with its keys",
        )
    if subject is None:
        p.fail(t, "subject", 'required with client_credentials (e.g. "service:ci-bot")')
    if not subject or len(subject) > 255 or not subject.isprintable() or subject != subject.strip():
        p.fail(t, "subject", "must be 1 to 255 printable characters, without outer spaces")
    if user_prefix is not None and subject.startswith(user_prefix):
        # spec/security.md 36: a machine must not pass for a user of the provider.
        p.fail(t, "subject", f"must not start with {user_prefix!r}, the prefix of users' subjects")
    return subject


def _static_keys(
    t: Section, p: _Problems, method: str | None, allow_loopback: bool
) -> dict[str, str]:
    """``jwks`` / ``jwks_uri`` as the JSON-encoded metadata ``client_auth`` reads."""
    jwks, uri = t.get("jwks"), t.get("jwks_uri")
    if method != "private_key_jwt":
        for name in ("jwks", "jwks_uri"):
            if t.has(name):
                p.fail(t, name, 'only with token_endpoint_auth_method = "private_key_jwt"')
        return {}
    if jwks is not None and uri is not None:
        # RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present".
        p.fail(t, "jwks", "give jwks or jwks_uri, not both")
    if jwks is not None:
        try:
            checked = check_jwks(json.loads(json.dumps(jwks)))
        except (CimdDocumentError, TypeError, ValueError) as exc:
            p.fail(t, "jwks", str(exc))
        return {"jwks": json.dumps(checked, sort_keys=True)}
    if uri is not None:
        problem = document_url_problem(uri, allow_loopback=allow_loopback)
        if problem is not None:
            p.fail(t, "jwks_uri", "must be an https URL with a path, on a public host")
        return {"jwks_uri": json.dumps(uri)}
    p.fail(t, "jwks", "private_key_jwt needs jwks or jwks_uri")


# --------------------------------------------------------------------------------------------------
# [[trusted_issuers]] and [[enterprise_issuers]]: other issuers' JWTs (oauthproxy_core.issuers)


def _other_issuers(
    checked: Checked,
    server: _Server | None,
    clients: Section,
    p: _Problems,
    resources: _Resources | None = None,
) -> tuple[tuple[TrustedIssuer, ...], tuple[EnterpriseIssuer, ...]]:
    """The two tables as the core's records; an entry that cannot be built is reported by key.
    Rules across entries and tables (prefixes, our own issuer, the clients) are the core's:
    ``ProxyConfig`` reports them, each naming its table."""
    # Every protected resource by path, the default first (the first of [[resources]], else the
    # one at mcp_path); an entry's tokens are for the one its `resource` names.
    urls: dict[str, str] = {}
    if server is not None:
        for path in [r.path for r, _ in resources] if resources else [server.mcp_path]:
            try:
                urls[path] = canonical_resource(server.base_url + path)
            except InvalidTargetError:
                continue
    loopback = bool(p.attempt(clients.get, "cimd_allow_loopback"))
    trusted = [
        p.attempt(_trusted_issuer, entry, p, urls, loopback)
        for entry in checked.arrays.get("trusted_issuers", ())
    ]
    enterprise = [
        p.attempt(_enterprise_issuer, entry, p, loopback)
        for entry in checked.arrays.get("enterprise_issuers", ())
    ]
    return (
        tuple(t for t in trusted if t is not None),
        tuple(e for e in enterprise if e is not None),
    )


def _issuer_fields(t: Section, p: _Problems, loopback: bool) -> dict[str, Any]:
    before = len(p)
    fields = {name: p.attempt(t.get, name) for name in ("issuer", "jwks_uri", "subject_prefix")}
    issuer, jwks_uri, prefix = fields.values()
    if issuer is not None and (problem := issuer_url_problem(issuer)):
        p.add(t, "issuer", problem)
    if prefix is not None and (problem := subject_prefix_problem(prefix)):
        p.add(t, "subject_prefix", problem)
    if jwks_uri is not None and (
        problem := document_url_problem(jwks_uri, allow_loopback=loopback)
    ):
        # The document rule speaks of a client_id URL; here the URL is a JWK Set's. http and this
        # machine only under [clients] cimd_allow_loopback (tests), as for every fetched document.
        rule = problem.replace("the client_id URL ", "").replace("the client_id ", "")
        p.add(t, "jwks_uri", rule)
    algorithms = p.attempt(t.get, "algorithms")
    if algorithms is not None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if not algorithms or unknown:
            p.add(t, "algorithms", "must list some of " + ", ".join(ALGORITHMS))
    p.since(before, *fields.values(), algorithms)
    assert algorithms is not None
    return {**fields, "algorithms": tuple(algorithms)}


def _built(t: Section, p: _Problems, build: Callable[..., T], **fields: Any) -> T:
    try:
        return build(**fields)
    except ValueError as exc:
        # The record names the field that broke its rule first: report it at that key.
        message = str(exc)
        name = message.split(" ", 1)[0]
        if name in fields:
            p.fail(t, name, message.split(" ", 1)[1])
        p.fail(t, "", message)


def _trusted_issuer(
    t: Section, p: _Problems, urls: dict[str, str], loopback: bool
) -> TrustedIssuer:
    default = next(iter(urls.values()), None)
    resource = default
    if t.has("resource"):
        path = p.attempt(t.get, "resource")
        resource = urls.get(path) if path is not None else None
        if path is not None and resource is None:
            p.add(t, "resource", "must be the path of a protected resource: " + ", ".join(urls))
    audience = p.attempt(t.get, "audience") if t.has("audience") else resource
    scopes_claim = p.attempt(t.get, "scopes_claim")
    fields = _issuer_fields(t, p, loopback)
    p.since(len(p), audience, scopes_claim, resource)
    return _built(
        t,
        p,
        TrustedIssuer,
        audience=audience,
        scopes_claim=scopes_claim,
        # The default resource stays implicit in the record (it follows the configuration).
        resource="" if resource == default else resource,
        **fields,
    )


def _enterprise_issuer(t: Section, p: _Problems, loopback: bool) -> EnterpriseIssuer:
    clients = p.attempt(t.get, "clients")
    if clients is not None and not clients:
        p.add(t, "clients", "required, at least one `[[clients.static]]` client id")
    before = len(p)
    fields = _issuer_fields(t, p, loopback)
    p.since(before, clients)
    assert clients is not None
    return _built(t, p, EnterpriseIssuer, clients=tuple(clients), **fields)
