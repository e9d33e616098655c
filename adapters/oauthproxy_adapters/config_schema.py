"""Every ``proxy.toml`` key, declared once: table, name, type, default, bounds, help and why.

This module is the single source of the configuration's shape. From ``TABLES`` and ``KEYS``:

- ``check`` derives the parser's generic checks (``config_file.py`` adds the rules that need more
  than one value or the outside world): unknown tables and keys (with a "did you mean" suggestion
  for a near miss), missing required tables and keys, types, integer bounds, allowed values, and
  the defaults of absent keys. It reports every problem of a document, not the first;
- ``config_reference.py`` renders the documentation's reference page (``spec/docs_hooks.py``);
- ``cli.py`` takes the help of the options that override a key (``serve --host``).

Where the core already has the default (``ProxyConfig``, ``Bounds``, the provider factories), the
key reads it from there instead of repeating the number. To add a key: one ``Key`` in ``KEYS``
(table, name, type, default or ``default_text``, bounds or choices, ``doc`` and ``why``), then read
it in ``config_file.parse_settings`` (``tables["<table>"].get("<name>")``). A new ``Bounds`` field
needs only ``_limit("<name>", "<help>", "<why>")`` in the ``[limits]`` block: ``config_file``
passes every ``[limits]`` key that is a ``Bounds`` field to ``Bounds``, and
``tests/adapters/test_config_reference.py`` fails while a ``Bounds`` field has no key.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs

from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.admission import ClientAdmission
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.config import DeviceGrant, Lifetimes, ProxyConfig
from oauthproxy_core.consent_theme import ConsentTheme
from oauthproxy_core.issuers import ALGORITHMS, DEFAULT_ALGORITHMS, TrustedIssuer
from oauthproxy_core.jsonrpc_inspection import DEFAULT_MAX_MESSAGE_BYTES
from oauthproxy_core.providers.entra import GRAPH_BASE_URL, entra_profile
from oauthproxy_core.providers.github import GITHUB_API_BASE_URL, github_profile
from oauthproxy_core.providers.google import google_profile
from oauthproxy_core.providers.oidc import DEFAULT_OIDC_SCOPES
from oauthproxy_core.upstream import IDENTITY_SOURCES, UpstreamProfile

__all__ = [
    "KEYS",
    "PROVIDERS",
    "REQUIRED",
    "TABLES",
    "Checked",
    "Key",
    "Problem",
    "Section",
    "Table",
    "Type",
    "Unusable",
    "check",
    "key",
    "keys_of",
    "suggestion",
]

PROVIDERS = ("github", "google", "entra", "oidc", "oauth2")
STATIC_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
#: The grants a pre-registered client may be allowed (``[[clients.static]] grant_types``).
STATIC_GRANT_TYPES = (
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
)


class Type(enum.Enum):
    """A key's TOML type; the value is how the reference names it."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRINGS = "list of strings"
    STRING_TABLE = "table of strings"
    TABLE = "table"
    TABLES = "array of tables"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The ``default`` of a key the file must give.
REQUIRED: Any = _Required()


@attrs.frozen(kw_only=True)
class Table:
    """A TOML table. ``array``: written ``[[name]]``, any number of them (a ``TABLES`` key)."""

    name: str
    doc: str
    required: bool = False
    array: bool = False


@attrs.frozen(kw_only=True)
class Key:
    """One key. ``default`` is applied when the key is absent (``None``: it stays absent, and the
    code decides, as ``default_text`` or ``doc`` says; ``REQUIRED``: the file must give it).
    ``why`` justifies the default. ``providers``: an ``[upstream]`` key only those providers use."""

    table: str
    name: str
    type: Type
    doc: str
    default: Any = None
    default_text: str | None = None
    why: str = ""
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def path(self) -> str:
        return f"[{self.table}].{self.name}"

    def shown_default(self) -> str | None:
        """The default as the reference shows it (TOML), or ``None``."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None or self.required:
            return None
        return _toml(self.default)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value) if not isinstance(value, int) else str(value)


def _core_default(cls: type, name: str) -> Any:
    """The default of an attrs field of a core record (``ProxyConfig``, ``Bounds``, ...)."""
    default = attrs.fields_dict(cls)[name].default
    if default is attrs.NOTHING or isinstance(default, type(attrs.Factory(list))):
        raise TypeError(f"{cls.__name__}.{name} has no plain default")
    return default


def _param_default(function: Any, name: str) -> Any:
    """The default of a keyword parameter of a core profile factory."""
    default = function.__kwdefaults__[name]
    return list(default) if isinstance(default, tuple) else default


def _words(values: Any) -> str:
    return " ".join(values) if values else "none"


TABLES: tuple[Table, ...] = (
    Table(name="server", doc="Where the proxy listens and who it is.", required=True),
    Table(
        name="upstream",
        doc="The identity provider the proxy signs users in with (one pre-registered client).",
        required=True,
    ),
    Table(name="consent", doc="The proxy's own consent page: when it is shown and how it looks."),
    Table(name="store", doc="Where transactions, codes, grants and registrations live."),
    Table(name="keys", doc="The keyring: signing, sealing and cookie keys."),
    Table(
        name="gateway", doc="The MCP server behind the proxy (standalone `oauthproxy serve` only)."
    ),
    Table(
        name="gateway.tools",
        doc="Per-tool authorization (spec/security.md 38), one `[[gateway.tools]]` table per rule: "
        "the tools whose name matches `name` need every scope of `scopes` and, when `groups` is "
        "given, one of those groups. Every matching rule applies; a tool no rule matches is open "
        'to every valid token (`name = "*"` closes all by default). A forbidden `tools/call` '
        "gets 403 (with a step-up `insufficient_scope` challenge when scopes would allow it) and "
        "never reaches the MCP server; `tools/list` answers list only the tools the caller may "
        "call. With rules, the gateway reads every request body (up to `max_message_bytes`).",
        array=True,
    ),
    Table(
        name="clients",
        doc="Which MCP clients may come in: dynamic registration, Client ID Metadata Documents and "
        "the hosts they may come from, the hosts redirect URIs may use, and pre-registered "
        "clients. Host lists take host names, IP addresses and `*.example.com` (one or more whole "
        "labels below `example.com`, never `example.com` itself nor `evilexample.com`), compared "
        "without regard to case or a final dot; write internationalised names as A-labels "
        "(`xn--...`). The policy applies at every lookup of a client, so a narrower list also "
        "stops clients admitted before.",
    ),
    Table(
        name="clients.static",
        doc="Pre-registered clients, one `[[clients.static]]` table each; they never expire and "
        "are not stored.",
        array=True,
    ),
    Table(
        name="limits",
        doc="Bounds on unauthenticated work (spec/security.md 28): past one, a clear 429, never a 5xx. "
        "Every value is an integer of at least 1.",
    ),
    Table(
        name="access",
        doc="Who may sign in (spec/security.md 33). A user is admitted when any rule matches; with "
        "no rule at all, every account the provider signs in is admitted, and `serve` and "
        "`check-config` say so. Rules are applied at sign-in and again at refresh once "
        "`[lifetimes] revalidate_after` has passed.",
    ),
    Table(
        name="lifetimes",
        doc="How long tokens, grants, consent and registrations live, in seconds, and how often "
        "the provider is asked about a user again.",
    ),
    Table(
        name="device",
        doc="Device sign-in (RFC 8628, the device authorization grant) for clients without a "
        "browser: `POST /device_authorization` and the verification page `/device`. Only clients "
        "that registered the grant type `urn:ietf:params:oauth:grant-type:device_code` (DCR "
        "`grant_types`, or `[[clients.static]] grant_types`) may use it. See spec/rfc8628.md.",
    ),
    Table(name="metrics", doc="Prometheus metrics at `GET /metrics` (needs the `metrics` extra)."),
    Table(
        name="trusted_issuers",
        doc="Identity providers whose own access tokens (JWTs) the proxy accepts at `mcp_path`, "
        "one `[[trusted_issuers]]` table each. Such a token never reaches a user's upstream token "
        "(spec/security.md 37).",
        array=True,
    ),
    Table(
        name="resources",
        doc="Several MCP servers under one issuer (spec/security.md 40), one `[[resources]]` table "
        "each; instead of `[server] mcp_path` with `[gateway] upstream_url`, which remain the "
        "single-server form. Each resource is `base_url` + `path`: its own protected resource "
        "metadata (RFC 9728 §3.1 URL), its own challenge, its own consent (naming `name`), tokens "
        "whose one audience it is (refused by every other resource), and its own gateway to "
        "`upstream_url`. A user who signed in at the provider for one resource is not sent there "
        "again for another from the same browser within `[lifetimes] upstream_session`; each "
        "resource still asks for consent, and the access rules are applied again for it.",
        array=True,
    ),
    Table(
        name="resources.access",
        doc="Rules that narrow `[access]` for one resource (`[resources.access]` after its "
        "`[[resources]]`): the keys of `[access]` except `groups_claim`. A user must pass "
        "`[access]` and then these; applied at sign-in, at a sign-in from an upstream session, "
        "and at refresh.",
    ),
    Table(
        name="resources.tools",
        doc="Per-tool rules of one resource's gateway (`[[resources.tools]]` after its "
        "`[[resources]]`), with the keys and meaning of `[[gateway.tools]]`.",
        array=True,
    ),
    Table(
        name="enterprise_issuers",
        doc="Enterprise identity providers whose Identity Assertion JWT Authorization Grants "
        "(ID-JAGs, MCP enterprise-managed authorization) the token endpoint redeems, one "
        "`[[enterprise_issuers]]` table each. While one exists, the metadata advertises the "
        "`urn:ietf:params:oauth:grant-type:jwt-bearer` grant.",
        array=True,
    ),
)


def _core_key(
    table: str, record: type[Any], field: str, type_: Type, *, doc: str, why: str, name: str = ""
) -> Key:
    """A key that sets a field of a core configuration record (``Lifetimes``, ``DeviceGrant``):
    its default is the field's, its bounds the field's ``minimum``/``maximum`` metadata, so the
    core stays the one place that holds them. ``name``: the key's name when it is not the field's."""
    meta = attrs.fields_dict(record)[field].metadata
    return Key(
        table=table,
        name=name or field,
        type=type_,
        default=_core_default(record, field),
        minimum=meta.get("minimum"),
        maximum=meta.get("maximum"),
        doc=doc,
        why=why,
    )


def _lifetime(key: str, field: str, doc: str, why: str) -> Key:
    """A ``[lifetimes]`` key: a ``Lifetimes`` field (every one is bounded)."""
    made = _core_key("lifetimes", Lifetimes, field, Type.INTEGER, doc=doc, why=why, name=key)
    if made.minimum is None or made.maximum is None:
        raise RuntimeError(f"Lifetimes.{field} declares no bounds")
    return made


#: ``[lifetimes]`` key -> ``Lifetimes`` field.
LIFETIME_FIELDS = {
    "access_token": "access_token",
    "refresh_idle": "refresh_token",
    "refresh_absolute": "refresh_absolute",
    "refresh_grace": "refresh_grace",
    "consent_memory": "consent_memory",
    "client_registration": "client",
    "revalidate_after": "revalidate_after",
    "revocation_staleness": "revocation_staleness",
    "upstream_session": "upstream_session",
}


def _copies(
    keys: tuple[Key, ...], table: str, of: str, exclude: tuple[str, ...] = ()
) -> tuple[Key, ...]:
    """The keys of ``of`` again, in ``table``: a resource's own rules, with the same meaning."""
    return tuple(
        attrs.evolve(k, table=table) for k in keys if k.table == of and k.name not in exclude
    )


def _device(name: str, type_: Type, doc: str, why: str) -> Key:
    """A ``[device]`` key: a ``DeviceGrant`` field of the same name."""
    return _core_key("device", DeviceGrant, name, type_, doc=doc, why=why)


def _access_rule(name: str, doc: str, why: str = "") -> Key:
    return Key(table="access", name=name, type=Type.STRINGS, doc=doc, why=why)


def _limit(name: str, doc: str, why: str, *, minimum: int = 1, maximum: int | None = None) -> Key:
    """A ``[limits]`` key: a ``Bounds`` field, whose default the core holds."""
    return Key(
        table="limits",
        name=name,
        type=Type.INTEGER,
        default=_core_default(Bounds, name),
        minimum=minimum,
        maximum=maximum,
        doc=doc,
        why=why,
    )


_S, _I, _B, _L, _T = Type.STRING, Type.INTEGER, Type.BOOLEAN, Type.STRINGS, Type.STRING_TABLE


def _issuer_keys(table: str, what: str) -> tuple[Key, ...]:
    """The keys ``[[trusted_issuers]]`` and ``[[enterprise_issuers]]`` share (issuers.py)."""
    return (
        Key(
            table=table,
            name="issuer",
            type=_S,
            default=REQUIRED,
            doc=f"The issuer identifier its {what} carry as `iss`, compared exactly (a trailing "
            "`/` matters). Never the proxy's own `base_url`.",
        ),
        Key(
            table=table,
            name="jwks_uri",
            type=_S,
            default=REQUIRED,
            doc="Its JWK Set, fetched only through the SSRF-safe fetcher (https, a public "
            "address, `application/json`), cached per `Cache-Control` for at most an hour and "
            "fetched again on an unknown `kid` at most once a minute.",
        ),
        Key(
            table=table,
            name="subject_prefix",
            type=_S,
            default=REQUIRED,
            doc="The MCP server sees `<subject_prefix>:<sub>`: 1 to 32 of `a-z 0-9 . _ -`, "
            "unlike the provider's name and any other issuer's prefix.",
        ),
        Key(
            table=table,
            name="algorithms",
            type=_L,
            default=list(DEFAULT_ALGORITHMS),
            doc="The signature algorithms accepted, whatever a token's header says: any of "
            + ", ".join(f"`{a}`" for a in ALGORITHMS)
            + ". Never `none` or `HS*`.",
            why="What identity providers sign with; list only the ones yours uses.",
        ),
    )


KEYS: tuple[Key, ...] = (
    # [server]
    Key(
        table="server",
        name="host",
        type=_S,
        default="127.0.0.1",
        doc="Listen address of `oauthproxy serve`.",
        why="Loopback: a new install answers only this machine until you decide otherwise (a "
        "reverse proxy in front usually runs beside it).",
    ),
    Key(
        table="server",
        name="port",
        type=_I,
        default=8000,
        minimum=0,
        maximum=65535,
        doc="Listen port (0: any free port).",
        why="An unprivileged port that development tools commonly leave free.",
    ),
    Key(
        table="server",
        name="base_url",
        type=_S,
        default=REQUIRED,
        doc="The public URL of the proxy and its OAuth issuer: https (http only on a loopback "
        "host: localhost, 127.0.0.0/8 or [::1]), no trailing slash, no query, no userinfo. The "
        "upstream callback is `<base_url>/auth/callback`.",
    ),
    Key(
        table="server",
        name="mcp_path",
        type=_S,
        default=_core_default(ProxyConfig, "mcp_path"),
        doc="Path of the protected MCP endpoint; the resource (token audience) is "
        "`base_url + mcp_path`. Starts with `/`, does not end with `/`.",
        why="The path the MCP specification's examples and the SDKs' servers use.",
    ),
    Key(
        table="server",
        name="service_name",
        type=_S,
        default=_core_default(ProxyConfig, "service_name"),
        doc="Shown on the consent page.",
        why="Neutral wording until you name your service.",
    ),
    Key(
        table="server",
        name="forwarded_allow_ips",
        type=_L,
        doc="Peers (IP addresses or networks) trusted to name the client address in "
        "`X-Forwarded-For` (uvicorn's proxy headers); `[]` trusts nobody. The per-address limits "
        "count by this address.",
        default_text="uvicorn's: `$FORWARDED_ALLOW_IPS`, else 127.0.0.1",
        why="A reverse proxy on the same machine works unconfigured, and no remote peer can "
        "choose the address the limits count by.",
    ),
    Key(
        table="server",
        name="scopes_supported",
        type=_L,
        default=list(_core_default(ProxyConfig, "scopes_supported")),
        doc="The proxy's own scopes (not the upstream's), advertised in the metadata.",
        why="One scope for the whole MCP server, which is what clients ask for when the server "
        "offers nothing finer.",
    ),
    Key(
        table="server",
        name="default_scopes",
        type=_L,
        doc="Granted when a client asks for none; a subset of `scopes_supported`.",
        default_text='["mcp"]',
        why="`mcp` if supported, else the first supported scope: a client that names no scope "
        "(spec/interop.md: a request without `scope` must work) still gets a usable token.",
    ),
    # [upstream]
    Key(
        table="upstream",
        name="provider",
        type=_S,
        default=REQUIRED,
        choices=PROVIDERS,
        doc="`github`, `google`, `entra`, `oidc` (any OpenID Connect provider) or `oauth2` "
        "(explicit endpoints).",
    ),
    Key(
        table="upstream",
        name="client_id",
        type=_S,
        default=REQUIRED,
        doc="The proxy's client id at the provider.",
    ),
    Key(
        table="upstream",
        name="client_secret",
        type=_S,
        doc="The proxy's client secret. Give this or `client_secret_env`.",
    ),
    Key(
        table="upstream",
        name="client_secret_env",
        type=_S,
        doc="Name of an environment variable holding the client secret (read at load).",
    ),
    Key(
        table="upstream",
        name="scopes",
        type=_L,
        doc="Scopes requested upstream.",
        default_text="per provider: "
        f"github `{_words(_param_default(github_profile, 'scopes'))}` (GitHub App: none), "
        f"google `{_words(_param_default(google_profile, 'scopes'))}`, "
        f"entra `{_words(_param_default(entra_profile, 'scopes'))}`, "
        f"oidc `{_words(DEFAULT_OIDC_SCOPES)}`, oauth2 none",
        why="What each provider needs to name the user, and no more (RFC 9700 §2.3: least "
        "privilege); an Entra refresh token needs `offline_access`.",
    ),
    Key(
        table="upstream",
        name="authorize_url",
        type=_S,
        doc="Authorization endpoint override (required for oauth2). https, or http on loopback "
        "with `allow_insecure_http`.",
    ),
    Key(
        table="upstream",
        name="token_url",
        type=_S,
        doc="Token endpoint override (required for oauth2).",
    ),
    Key(
        table="upstream",
        name="userinfo_url",
        type=_S,
        doc="UserInfo endpoint override (required for oauth2).",
    ),
    Key(
        table="upstream",
        name="api_base_url",
        type=_S,
        providers=("github",),
        doc="Where `GET /user` lives (GitHub Enterprise Server: `https://HOST/api/v3`).",
        default_text=_toml(GITHUB_API_BASE_URL),
        why="github.com's API.",
    ),
    Key(
        table="upstream",
        name="issuer",
        type=_S,
        doc="oidc: the discovery base (`<issuer>/.well-known/openid-configuration`, fetched at "
        "load) and the RFC 9207 `iss` to expect. github: the `iss` to expect (default "
        "`<authorize host>/login/oauth`).",
    ),
    Key(
        table="upstream",
        name="userinfo_subject_field",
        type=_S,
        doc="The UserInfo field holding the stable user id.",
        default_text=f'`{_toml(_core_default(UpstreamProfile, "subject_field"))}` (github: `"id"`)',
        why="OIDC Core §5.3.2 names the subject `sub`; GitHub's profile uses its numeric `id`, "
        "which, unlike a login, is never reused.",
    ),
    Key(
        table="upstream",
        name="allow_insecure_http",
        type=_B,
        default=False,
        doc="Allow http upstream URLs, on loopback hosts only (tests, local development).",
        why="Upstream calls carry the client secret and users' tokens: TLS unless you opt out "
        "for a provider on this very machine.",
    ),
    Key(
        table="upstream",
        name="github_app",
        type=_B,
        default=False,
        providers=("github",),
        doc="The client is a GitHub App (expiring, rotating user tokens).",
        why="OAuth Apps are what most GitHub integrations register.",
    ),
    Key(
        table="upstream",
        name="tenant",
        type=_S,
        default=_param_default(entra_profile, "tenant"),
        providers=("entra",),
        doc="`common`, `organizations`, `consumers` or a tenant GUID.",
        why="Microsoft's default: work, school and personal accounts.",
    ),
    Key(
        table="upstream",
        name="app_id_uri",
        type=_S,
        providers=("entra",),
        doc="The application ID URI (`api://<app-id>`) prefixing custom API scopes.",
    ),
    Key(
        table="upstream",
        name="graph_url",
        type=_S,
        providers=("entra",),
        doc="Microsoft Graph, asked for a user's groups (`POST <graph_url>/v1.0/me/getMemberObjects` "
        "with the user's token) when their ID token reports a group overage and `[access] "
        "allowed_groups` is set. https, or http on loopback with `allow_insecure_http`; no query.",
        default_text=_toml(GRAPH_BASE_URL),
        why="The Graph of Microsoft's global cloud, where `login.microsoftonline.com` signs users "
        "in.",
    ),
    Key(
        table="upstream",
        name="identity_source",
        type=_S,
        choices=IDENTITY_SOURCES,
        doc="Where the user's identity comes from: `userinfo`, `id_token` (verified, with a "
        "nonce) or `both`. id_token needs discovery's `jwks_uri`.",
        default_text="per provider: github and oauth2 `userinfo`; google and entra `id_token`; "
        "oidc `both` when discovery finds a `jwks_uri` and a UserInfo endpoint, `id_token` with "
        "only a `jwks_uri`, else `userinfo`",
        why="The strongest source the provider offers: a signed ID token where there is one.",
    ),
    Key(
        table="upstream",
        name="claims",
        type=_T,
        doc='Display claims to keep: our name = the upstream field (`{ handle = "username" }`). '
        "The subject is the identity; claims are display data. `login` may not come from a "
        "mutable field (`preferred_username`, `upn`, `email`, `name`, ...) and `email` only "
        "from `email`, kept only when the provider vouches for it (spec/security.md 32).",
    ),
    Key(
        table="upstream",
        name="email_verified_claim",
        type=_S,
        providers=("oidc", "oauth2"),
        doc='The identity field that must be `true` (JSON true or the string `"true"`) for '
        "`email` to be kept. google uses `email_verified`, entra `xms_edov`, github the verified "
        "primary address of `GET /user/emails` (scope `user:email`).",
        default_text="oidc `email_verified`; oauth2 none (its `email` is never kept)",
        why="An address the provider does not vouch for is whatever the user typed: it must not "
        "become identity (spec/security.md 32).",
    ),
    Key(
        table="upstream",
        name="extra_authorize_params",
        type=_T,
        doc="Extra parameters of the upstream authorization request (e.g. Auth0's `audience`).",
    ),
    Key(
        table="upstream",
        name="extra_token_params",
        type=_T,
        doc="Extra parameters of the upstream token request.",
    ),
    Key(
        table="upstream",
        name="forward_resource",
        type=_B,
        default=_core_default(UpstreamProfile, "forward_resource"),
        doc="Send the RFC 8707 `resource` parameter upstream.",
        why="Many providers reject an unknown `resource` with `invalid_target` (spec/interop.md).",
    ),
    # [consent]
    Key(
        table="consent",
        name="mode",
        type=_S,
        default=_core_default(ProxyConfig, "consent_mode"),
        choices=("always", "remember"),
        doc="`always` asks every time; `remember` remembers an approval of exactly (client, "
        "redirect URI, scopes, resource) in this browser, for same-site navigations only.",
        why="Asking every time is what stops a confused deputy (spec/security.md 15).",
    ),
    Key(
        table="consent",
        name="product_name",
        type=_S,
        doc="Brand shown at the top of the consent page (plain text, at most 80 characters; "
        "default: `[server].service_name`).",
    ),
    Key(
        table="consent",
        name="logo_url",
        type=_S,
        doc="Logo: an `https:` URL with a DNS host name, or "
        "`data:image/(png|jpeg|gif|webp);base64,...`. The page's `img-src` admits exactly that "
        "origin.",
    ),
    Key(
        table="consent",
        name="primary_color",
        type=_S,
        doc="Approve button colour: `#rgb`, `#rrggbb` or `rgb(r, g, b)`; its text is black or "
        "white, whichever contrasts more.",
        default_text=_toml(ConsentTheme().palette()["primary"]),
        why="A blue with white text above the WCAG AA contrast ratio.",
    ),
    Key(
        table="consent",
        name="background_color",
        type=_S,
        doc="Page background, same notations; the text colour follows for contrast.",
        default_text=_toml(ConsentTheme().palette()["background"]),
        why="Plain white: readable, and any logo fits on it.",
    ),
    Key(
        table="consent",
        name="extra_text",
        type=_S,
        doc="Plain text shown under the form (at most 1000 characters; a blank line starts a new "
        "paragraph).",
    ),
    Key(
        table="consent",
        name="template",
        type=_S,
        doc="Path of a full-page HTML template replacing the built-in layout (read at load, at "
        "most 64 KiB). See *Theming the consent page*.",
    ),
    # [store]
    Key(
        table="store",
        name="url",
        type=_S,
        default="sqlite://",
        doc="`sqlite://`: the embedded store, `.oauthproxy/state.db` under the working directory "
        "(`$OAUTHPROXY_DATA_DIR/state.db` when that variable is set); `sqlite:///path.db` "
        "(relative to the working directory, `sqlite:////abs/path.db` absolute; "
        "`?synchronous=full` to fsync every commit); `redis://host:6379/0?prefix=app:` "
        "(`rediss://` for TLS: `?ssl_ca_certs=/path/ca.pem` for a private CA), shared by several "
        "instances; "
        "`redis+sentinel://host:26379,host2:26379/mymaster/0?prefix=app:`, the primary the "
        "sentinels name for the service, every write waiting for `replicas` replicas (default 1) "
        "for up to `replica_timeout` seconds (default 0.5) so that a fail-over keeps it "
        "(`sentinel_auth=yes` when the sentinels require the same password); "
        "`redis+cluster://host:7000,host2:7001/0?prefix=app:`, a Redis Cluster (a prefix without "
        "`{` or `}`; `replicas` defaults to 0 there, set `replicas=1` when the shards have "
        "replicas); `rediss+sentinel://` and `rediss+cluster://` are the same over TLS to every "
        "server (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` name the CA and a client "
        "certificate); "
        "`postgresql://user@host:5432/dbname?prefix=app_`, shared by several instances (tables "
        "`<prefix>records` and `<prefix>schema_version`, default prefix `oauthproxy_`; "
        "`?synchronous_commit=off` for faster writes that a database crash may lose, any libpq "
        "parameter such as `sslmode=verify-full`); `memory://`, this process only, lost at every "
        "restart (tests).",
        why="Registrations, grants and sign-ins survive a restart with nothing to install: one "
        "SQLite file, created with its directory private (0600, 0700) as the keys file is. It "
        "serves one machine; instances on several hosts share a `redis://` (or Sentinel or "
        "Cluster) or `postgresql://` store. One replica for Sentinel writes: the least that "
        "keeps a redeemed code redeemed across a fail-over, and what a primary-replica pair "
        "always has; half a second rides out a busy replica without holding a request long.",
    ),
    Key(
        table="store",
        name="password_env",
        type=_S,
        doc="Name of an environment variable holding the password of a `redis://` (Sentinel, "
        "Cluster: the data nodes') or `postgresql://` store, put into the URL's userinfo (the "
        "URL then has none of its own). "
        "Without it, a PostgreSQL password may also come from libpq's own `PGPASSWORD` or "
        "`~/.pgpass`.",
    ),
    # [keys]
    Key(
        table="keys",
        name="file",
        type=_S,
        doc="The keyring file, created (mode 0600) on first start when missing; refused when "
        "readable by group or others. Every instance behind one load balancer needs the same "
        "file.",
        default_text='"$OAUTHPROXY_DATA_DIR/keys.json" or ".oauthproxy/keys.json"',
        why="Beside the embedded store's default directory, outside the code.",
    ),
    # [gateway]
    Key(
        table="gateway",
        name="upstream_url",
        type=_S,
        doc="The MCP server authenticated requests to `mcp_path` are forwarded to. Without it, "
        "the proxy answers 404 there after authentication.",
    ),
    Key(
        table="gateway",
        name="tools",
        type=Type.TABLES,
        doc="Per-tool rules: see `[[gateway.tools]]` below.",
    ),
    Key(
        table="gateway",
        name="max_message_bytes",
        type=_I,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        minimum=1024,
        maximum=64 * 1024 * 1024,
        doc="With `[[gateway.tools]]` rules: the largest request body the gateway reads and "
        "inspects (larger: 413, never forwarded), and the largest response body or Server-Sent "
        "Event it holds to filter a tool listing. Without rules it reads nothing.",
        why="4 MiB is the bound the MCP SDKs' own servers put on one message (Python and "
        "TypeScript), so no body they would accept is refused; it also caps what one request can "
        "make the gateway hold.",
    ),
    Key(
        table="gateway",
        name="forward_upstream_token",
        type=_B,
        default=False,
        doc="Send the user's provider access token to the MCP server as "
        "`X-OAuthProxy-Upstream-Token` (refreshed when near expiry; never to a client, never "
        "logged). This widens the trust boundary: the MCP server, and whoever can read its "
        "traffic or logs, can then act as the user at the provider. A request whose token "
        "cannot be had gets 401 (sign in again) or 503, never forwarded without it.",
        why="Off: the MCP server gets only the identity headers unless it needs to call the "
        "provider's API as the user.",
    ),
    # [[gateway.tools]]
    Key(
        table="gateway.tools",
        name="name",
        type=_S,
        default=REQUIRED,
        doc="The tools the rule covers: a glob over tool names, case-sensitive, where `*` matches "
        "any run of characters and `?` one (`admin_*`); `[`, `]`, `\\` and spaces are refused.",
    ),
    Key(
        table="gateway.tools",
        name="scopes",
        type=_L,
        doc="Scopes a token needs, all of them, each among `[server] scopes_supported` "
        "(never `offline_access`). A token without them gets a step-up challenge naming them.",
    ),
    Key(
        table="gateway.tools",
        name="groups",
        type=_L,
        doc="Groups of which the user must be in at least one: the groups the `[access]` "
        "decision saw (`X-OAuthProxy-Groups`: the groups claim, GitHub organizations and teams). "
        "A rule needs `scopes`, `groups` or both.",
    ),
    # [clients]
    Key(
        table="clients",
        name="dcr",
        type=_B,
        default=_core_default(ClientAdmission, "dcr"),
        doc="Serve dynamic client registration (RFC 7591) and its management (RFC 7592). With "
        "`false`, `/register` answers 404 saying so, the metadata names no "
        "`registration_endpoint`, and clients registered earlier are refused (`invalid_client`) "
        "at their next authorization or refresh.",
        why="MCP clients of the 2025-06-18 revision and older can only register dynamically; "
        "newer ones fall back to a metadata document when registration is off.",
    ),
    Key(
        table="clients",
        name="cimd",
        type=_B,
        default=_core_default(ProxyConfig, "cimd_enabled"),
        doc="Accept Client ID Metadata Documents (an https URL as `client_id`).",
        why="The MCP specification's preferred way for clients to identify themselves.",
    ),
    Key(
        table="clients",
        name="cimd_allowed_hosts",
        type=_L,
        doc="When set, only metadata documents whose URL has one of these hosts are fetched "
        '(`["claude.ai", "*.vscode.dev"]`); any other is refused with `invalid_client` before '
        "any fetch. A non-empty list.",
        default_text="any public host",
        why="A metadata document proves only that its host vouches for the client; which hosts "
        "to trust is the operator's choice, and most deployments serve clients of many vendors.",
    ),
    Key(
        table="clients",
        name="cimd_denied_hosts",
        type=_L,
        doc="Metadata documents from these hosts are refused (`invalid_client`) and never "
        "fetched, whatever `cimd_allowed_hosts` says.",
        default=[],
        why="Nothing is denied until you know of a host to deny.",
    ),
    Key(
        table="clients",
        name="redirect_hosts",
        type=_L,
        doc="When set, every redirect URI (registration, metadata documents, `[[clients.static]]`) "
        'must be http or https on one of these hosts (`["127.0.0.1", "localhost", '
        '"app.example.com"]`), on any port; private-use schemes (`com.example.app:/cb`) are then '
        "refused. A registration outside gets `invalid_client_metadata`. A non-empty list.",
        default_text="any host the redirect URI rules accept",
        why="The redirect URI rules (spec/security.md 3) already refuse every dangerous form; "
        "which hosts may receive codes depends on the clients you serve.",
    ),
    Key(
        table="clients",
        name="cimd_allow_loopback",
        type=_B,
        default=_core_default(ProxyConfig, "cimd_allow_loopback"),
        doc="Tests and local development only: fetch metadata documents from loopback, also "
        "over http.",
        why="A document URL on this machine is an SSRF target (spec/security.md 23).",
    ),
    Key(
        table="clients",
        name="static",
        type=Type.TABLES,
        doc="Pre-registered clients: see `[[clients.static]]` below.",
    ),
    # [[clients.static]]
    Key(
        table="clients.static",
        name="client_id",
        type=_S,
        default=REQUIRED,
        doc="The client's id (printable, no spaces, at most 255 characters, unique).",
    ),
    Key(
        table="clients.static",
        name="redirect_uris",
        type=_L,
        doc="Its redirect URIs, checked as at registration (spec/security.md 3). Required with "
        "`authorization_code`; a client of `client_credentials` alone has none.",
    ),
    Key(
        table="clients.static",
        name="client_secret",
        type=_S,
        doc="Its secret, at least 16 characters; omit it for a public client and for "
        "`private_key_jwt`. Prefer `client_secret_env`.",
    ),
    Key(
        table="clients.static",
        name="client_secret_env",
        type=_S,
        doc="The environment variable holding its secret, instead of `client_secret`.",
    ),
    Key(
        table="clients.static",
        name="token_endpoint_auth_method",
        type=_S,
        choices=STATIC_AUTH_METHODS,
        doc="How it authenticates at the token endpoint (and at `/revoke`), and no other way "
        "(spec/security.md 22). `private_key_jwt` (RFC 7523 §2.2) needs `jwks` or `jwks_uri`.",
        default_text='`"client_secret_basic"` with a secret, `"none"` without',
        why="RFC 7591 §2: `client_secret_basic` is the default for a client with a secret.",
    ),
    Key(
        table="clients.static",
        name="client_name",
        type=_S,
        doc="Shown on the consent page.",
    ),
    Key(
        table="clients.static",
        name="grant_types",
        type=_L,
        default=("authorization_code", "refresh_token"),
        doc="The grants it may use: `authorization_code` (a user signs in; add `refresh_token` "
        "for refresh tokens) and `client_credentials` (RFC 6749 §4.4: it acts as itself, with "
        "`subject` as its identity; a confidential client only), alone or together.",
        why="What a pre-registered client could always do: sign users in, with refresh tokens.",
    ),
    Key(
        table="clients.static",
        name="scopes",
        type=_L,
        doc="The scopes it may ask for, each one of `[server] scopes_supported`. A client "
        "credentials request naming no scope gets all of them.",
        default_text="every scope of `[server] scopes_supported`",
        why="An operator who names no limit gives a pre-registered client what any client may "
        "ask for; listing scopes narrows it.",
    ),
    Key(
        table="clients.static",
        name="subject",
        type=_S,
        doc="Required with `client_credentials`: the identity its tokens carry and the MCP "
        'server sees (`X-OAuthProxy-Subject`), e.g. `"service:ci-bot"`. It must not start with '
        "the provider's prefix (`github:`, ...), which names users (spec/security.md 36).",
    ),
    Key(
        table="clients.static",
        name="jwks",
        type=Type.TABLE,
        doc='For `private_key_jwt`: its public keys as a JWK Set (`{ keys = [ { kty = "EC", '
        "... } ] }`, 1 to 10 EC, RSA or OKP public keys; a private or symmetric key is refused).",
    ),
    Key(
        table="clients.static",
        name="jwks_uri",
        type=_S,
        doc="For `private_key_jwt`, instead of `jwks`: an https URL serving its JWK Set, fetched "
        "through the safe fetcher and cached as a client metadata document's keys are "
        "(spec/security.md 23).",
    ),
    # [limits]: one _limit per Bounds field (its default lives in oauthproxy_core.bounds.Bounds);
    # give maximum= where a larger value makes no sense (a prefix length: 32 or 128).
    _limit(
        "registrations_per_address",
        "Dynamic registrations per source (an address prefix, see `ipv6_prefix`) per "
        "`registration_window`.",
        "Large on purpose: web-based MCP hosts register from a few server addresses for all their "
        "users, and an office registers from one NAT address, hundreds an hour; storage is bounded "
        "by `registrations_total` and `unused_registration_lifetime`, not by refusing a busy "
        "address (spec/security.md 35).",
    ),
    _limit(
        "registrations_total",
        "Dynamic registrations from all sources per `registration_window`.",
        "With the default `unused_registration_lifetime` at most about 35 000 never-used "
        "registrations exist at once (some 25 MB); ten busy shared addresses fit.",
    ),
    _limit(
        "registration_window",
        "The registration counting window, in seconds.",
        "An hour smooths bursts, and a refused source recovers within it.",
    ),
    _limit(
        "unused_registration_lifetime",
        "Seconds a dynamic registration lives until tokens are first issued to it; from then on "
        "it lives `[lifetimes]`-long after its last use.",
        "A sign-in completes minutes after registering; six hours lets a user retry the same day "
        "with the same registration, and keeps registrations that never complete a flow from "
        "piling up.",
    ),
    _limit(
        "authorizations_per_address",
        "Authorization requests per source per transaction lifetime, counted before the client is "
        "looked up or its metadata document fetched.",
        "Made-up client ids cost their sender's budget only; 256 serves an office of hundreds "
        "signing in within ten minutes.",
    ),
    _limit(
        "authorizations_per_client",
        "Pending authorization requests per client from one source.",
        "A client shared by thousands of users has no bucket a few sources can fill for everyone "
        "else; half the per-source budget, since one source also signs in to other clients.",
    ),
    _limit(
        "authorizations_total",
        "Authorization requests from all sources per transaction lifetime.",
        "Bounds the pending transactions stored, whoever starts them; past it the page answers 503.",
    ),
    _limit(
        "document_fetches_per_address",
        "Client ID Metadata Document (and `jwks_uri`) fetches one source can cause per "
        "`document_fetch_window`.",
        "A document is cached for its `max-age`, so a real client causes one fetch per expiry; 30 "
        "covers an office using many different clients.",
    ),
    _limit(
        "document_fetches_per_host",
        "Fetches from one document host per `document_fetch_window`.",
        "The proxy cannot be made to hammer a site; when a budget is spent a stale cached copy of "
        "a document is served.",
    ),
    _limit(
        "document_fetches_total",
        "Fetches in total per `document_fetch_window`.",
        "Outbound requests are never unbounded; spent, a client seen before signs in from its "
        "stale cached document and only a client never seen before waits (503, `Retry-After`).",
    ),
    _limit(
        "document_fetch_window",
        "The document-fetch counting window, in seconds.",
        "Five minutes: short enough that a refused source recovers quickly.",
    ),
    _limit(
        "document_lookups_in_flight",
        "Threads of the document fetcher's own DNS pool; a lookup that finds them all busy fails "
        "at once (a stale document, else 503).",
        "Never the event loop's default pool that resolves the provider for every sign-in; a "
        "lookup takes milliseconds, so 8 serve hundreds a second, and slow name servers chosen "
        "by an attacker hold at most these 8.",
    ),
    _limit(
        "ipv4_prefix",
        "Leading bits of an IPv4 client address that make one source for the per-source limits.",
        "32, single addresses: one IPv4 address is often a whole NAT already.",
        maximum=32,
    ),
    _limit(
        "ipv6_prefix",
        "Leading bits of an IPv6 client address that make one source.",
        "64: one host or subscriber gets at least a /64 (RFC 6177), so single addresses would give "
        "one machine 2^64 budgets. Lower it (48) if floods come from many /64s of one site.",
        maximum=128,
    ),
    # [access]: the contract of issue 15; values are checked by oauthproxy_core.access.AccessPolicy.
    _access_rule(
        "allowed_subjects",
        "Exact subjects, `<provider>:<id>` as the MCP server sees them (`github:4242`).",
    ),
    _access_rule(
        "allowed_emails",
        "Email addresses, compared case-insensitively; only an address the provider vouches for "
        "(spec/security.md 32) is compared.",
    ),
    _access_rule(
        "allowed_email_domains",
        "Domains of verified addresses: the exact domain after the `@`, never a suffix "
        "(`example.com` does not admit `evil-example.com` or `sub.example.com`).",
    ),
    _access_rule(
        "github_orgs",
        "GitHub organizations (`acme`) or teams (`acme/platform`), read from `/user/orgs` and "
        "`/user/teams` at `api_base_url`. The proxy then also asks for the `read:org` scope.",
    ),
    _access_rule(
        "google_hosted_domains",
        "Google Workspace domains: the `hd` claim of the verified ID token (the `hd` request "
        "parameter is only a hint).",
    ),
    _access_rule("entra_tenants", "Entra tenant GUIDs: the `tid` claim of the verified ID token."),
    _access_rule(
        "allowed_groups",
        "Groups, from `groups_claim` in the ID token or UserInfo; for Entra, from Microsoft Graph "
        "when the token reports a group overage. Compared exactly.",
    ),
    Key(
        table="access",
        name="groups_claim",
        type=_S,
        default=_core_default(AccessPolicy, "groups_claim"),
        doc="Where the groups are: a claim name or a dotted path for nested claims "
        "(`realm_access.roles` for Keycloak roles).",
        why="`groups` is the name Entra, Okta, Auth0 rules and most OIDC servers use.",
    ),
    # [[resources]]
    Key(
        table="resources",
        name="path",
        type=_S,
        default=REQUIRED,
        doc="Where the MCP server is served below `base_url` (`/github-tools`): the resource is "
        "`base_url` + `path`. Starts with `/`, does not end with `/`, no `.`/`..` or empty "
        "segments; no resource's path lies below another's.",
    ),
    Key(
        table="resources",
        name="upstream_url",
        type=_S,
        default=REQUIRED,
        doc="The MCP server authenticated requests to `path` (and below) are forwarded to, as "
        "`[gateway] upstream_url` is for `mcp_path`.",
    ),
    Key(
        table="resources",
        name="name",
        type=_S,
        doc='The server\'s name on the consent page ("Allow <client> to use <name>?") and in '
        "its metadata's `resource_name`.",
        default_text="`[server] service_name`",
        why="One name for every server unless told otherwise; give each its own so that the "
        "consent page says which server a client is being let into.",
    ),
    Key(
        table="resources",
        name="scopes",
        type=_L,
        doc="The scopes a client needs here, each among `[server] scopes_supported`: what its "
        "metadata's `scopes_supported` and its 401 challenge's `scope` name, and what an "
        "authorization asking for no scope gets.",
        default_text="`[server] default_scopes`",
        why="What the single-resource form asks of a client, so a resource needs no more than "
        "`mcp_path` did unless it says so.",
    ),
    Key(
        table="resources",
        name="forward_upstream_token",
        type=_B,
        default=False,
        doc="As `[gateway] forward_upstream_token`, for this resource's MCP server only.",
        why="Off: each server that should act as the user at the provider says so itself.",
    ),
    Key(
        table="resources",
        name="access",
        type=Type.TABLE,
        doc="Rules that narrow `[access]` here: see `[resources.access]` below.",
    ),
    Key(
        table="resources",
        name="tools",
        type=Type.TABLES,
        doc="Per-tool rules of this resource's gateway: see `[[resources.tools]]` below.",
    ),
    # [device]: one _device per key; defaults and bounds live in oauthproxy_core.config.DeviceGrant.
    _device(
        "enabled",
        _B,
        "Offer the device authorization grant: the endpoints, the metadata entries, and the "
        "grant type at registration.",
        "Off: a user code can be forwarded to someone who is then asked to type it (RFC 8628 "
        "§5.4, remote phishing), so a deployment turns device sign-in on when its users run "
        "clients without a browser (SSH sessions, containers, CI).",
    ),
    _device(
        "code_lifetime",
        _I,
        "`expires_in`: how long a device code and its user code live, in seconds (60 to 1800).",
        "10 minutes: long enough to find a browser, sign in at a slow provider and approve; "
        "short enough that a user code is worth guessing for only a few minutes (RFC 8628 §5.1). "
        "It is also the window of the failed-entry counters.",
    ),
    _device(
        "interval",
        _I,
        "`interval`: the least number of seconds between two polls of one device code; a faster "
        "poll gets `slow_down` and 5 seconds more from then on (RFC 8628 §3.5).",
        "5 seconds, the RFC's own default: a sign-in is noticed within seconds, and a polling "
        "client costs one store read and write per 5 seconds.",
    ),
    _device(
        "failed_entries_per_address",
        _I,
        "Wrong or malformed user codes accepted from one source (an address prefix, "
        "`[limits] ipv4_prefix` / `ipv6_prefix`) per `code_lifetime`; past it the page answers "
        "429. Correct codes are not counted.",
        "50: an office of hundreds behind one NAT address mistypes a code now and then, not 50 "
        "times in 10 minutes; a guesser from one address gets 50 tries against 20^8 codes.",
    ),
    _device(
        "failed_entries_total",
        _I,
        "Wrong or malformed user codes accepted from every source together per "
        "`code_lifetime`; past it the page answers 503 to everyone until the window ends.",
        "1000: twenty addresses' worth of mistakes. With a thousand live codes, 1000 guesses "
        "find one with a probability of about 4 in a million per window; many addresses "
        "together cannot guess faster than this.",
    ),
    # [lifetimes]: one _lifetime per key; defaults and bounds live in oauthproxy_core.config.Lifetimes.
    _lifetime(
        "access_token",
        "access_token",
        "Lifetime of the proxy's access tokens.",
        "An hour: MCP clients refresh without the user noticing, and a token that leaks is "
        "useful for at most that long; revocation reaches access tokens sooner anyway "
        "(`revocation_staleness`).",
    ),
    _lifetime(
        "refresh_idle",
        "refresh_token",
        "A refresh token unused this long expires; each refresh starts the period again.",
        "30 days: a user who opens their MCP client once a month stays signed in; one who stops "
        "using it is signed out a month later.",
    ),
    _lifetime(
        "refresh_absolute",
        "refresh_absolute",
        "The hard end of a sign-in, counted from the first consent; no refresh extends it.",
        "90 days, as Entra's default refresh-token lifetime: even a client that refreshes "
        "continuously makes the user sign in again each quarter. With re-validation on (the "
        "default), removal upstream takes effect within `revalidate_after`, so this cap is the "
        "backstop, not the main lever.",
    ),
    _lifetime(
        "refresh_grace",
        "refresh_grace",
        "A refresh retried within this window after a rotation receives the same answer "
        "instead of counting as reuse (at most 300).",
        "30 seconds covers a lost response and a retry; longer windows widen what a stolen, "
        "already-rotated token can do.",
    ),
    _lifetime(
        "consent_memory",
        "consent_memory",
        'With `[consent] mode = "remember"`, how long an approval is remembered for the same '
        "client, redirect URI, scopes and browser.",
        "30 days, like the refresh idle period.",
    ),
    _lifetime(
        "client_registration",
        "client",
        "A dynamically registered client is forgotten this long after tokens were last issued "
        "to it (one never used: `[limits] unused_registration_lifetime`).",
        "90 days: clients re-register on `invalid_client` (spec/interop.md), so forgetting an "
        "idle one costs a click, and storage stays bounded.",
    ),
    _lifetime(
        "revalidate_after",
        "revalidate_after",
        "At a refresh this long after the provider last confirmed the user, the provider is "
        "asked again and the `[access]` rules are applied again; `0` asks at every refresh.",
        "An hour: a user removed upstream (account disabled, group or organization left) loses "
        "access within about an hour, and the provider sees at most one extra call per user per "
        "hour.",
    ),
    _lifetime(
        "upstream_session",
        "upstream_session",
        "With several `[[resources]]`: how long one sign-in at the provider serves further "
        "resources in the same browser (each still asks for consent); counted from the sign-in, "
        "never extended. `0`: every authorization signs in at the provider. With one resource "
        "there is no such session.",
        "An hour, the default `revalidate_after`: the identity and group facts a resource is "
        "granted on from a session are no older than what a grant already tolerates between "
        "re-validations, and an hour covers connecting a client to several servers in one "
        "sitting. A sign-out at the provider is not seen by the proxy, so shorter is safer on "
        "shared machines.",
    ),
    _lifetime(
        "revocation_staleness",
        "revocation_staleness",
        "How stale a bearer check's view of revocations may be: an access token checked within "
        "this many seconds is not looked up again; `0` looks up every request.",
        "5 seconds: `oauthproxy grants revoke` ends a live session on every instance within "
        "seconds, while a client sending many requests a second costs one store look-up per "
        "token per 5 seconds instead of one per request.",
    ),
    # [metrics]
    Key(
        table="metrics",
        name="enabled",
        type=_B,
        default=False,
        doc="Serve metrics at `GET /metrics` (otherwise 404).",
        why="Metrics reveal traffic: published only when asked for.",
    ),
    Key(
        table="metrics",
        name="bearer_token",
        type=_S,
        doc="Required as `Authorization: Bearer` on `/metrics`: at least 16 characters, and only "
        "what RFC 6750 §2.1 lets follow `Bearer` (letters, digits, `-._~+/`, trailing `=`). Without "
        "one, keep `/metrics` unreachable from outside.",
    ),
    Key(
        table="metrics",
        name="bearer_token_env",
        type=_S,
        doc="Name of an environment variable holding the metrics bearer token.",
    ),
    # [[trusted_issuers]] and [[enterprise_issuers]]
    *_issuer_keys("trusted_issuers", "access tokens"),
    Key(
        table="trusted_issuers",
        name="audience",
        type=_S,
        doc="The `aud` value the tokens must carry (a string, or an array containing it).",
        default_text="the protected resource `resource` names, `base_url` + its path",
        why="RFC 9068 §4: an access token is for a resource; one made out to another API must "
        "not work here.",
    ),
    Key(
        table="trusted_issuers",
        name="resource",
        type=_S,
        doc="The path of the protected resource (`mcp_path`, or a `[[resources]]` entry's `path`) "
        "whose bearer check accepts this issuer's tokens; every other resource refuses them.",
        default_text="the default resource: the first `[[resources]]` entry, else `mcp_path`",
        why="One audience per token (spec/security.md 40): a token made out to one MCP server is "
        "not accepted by the others behind the same proxy.",
    ),
    Key(
        table="trusted_issuers",
        name="scopes_claim",
        type=_S,
        default=_core_default(TrustedIssuer, "scopes_claim"),
        doc="The claim holding the token's scopes: a space-separated string or an array "
        "(`scp` for Entra and Okta). Only scopes in `scopes_supported` are forwarded.",
        why="`scope` is the RFC 9068 claim.",
    ),
    *_issuer_keys("enterprise_issuers", "ID-JAGs"),
    Key(
        table="enterprise_issuers",
        name="clients",
        type=_L,
        default=REQUIRED,
        doc="The `[[clients.static]]` client ids (confidential: with a secret) that may present "
        "this issuer's ID-JAGs, each only one made out to itself (`client_id` claim).",
    ),
)

# A resource's own rules: [resources.access] and [[resources.tools]] take the keys of [access]
# (but groups_claim, which says where groups are read for everyone) and [[gateway.tools]].
KEYS = (
    *KEYS,
    *_copies(KEYS, "resources.access", "access", exclude=("groups_claim",)),
    *_copies(KEYS, "resources.tools", "gateway.tools"),
)

_TABLE_BY_NAME = {t.name: t for t in TABLES}
_KEYS_BY_TABLE: dict[str, dict[str, Key]] = {t.name: {} for t in TABLES}
for _key in KEYS:
    _KEYS_BY_TABLE[_key.table][_key.name] = _key
del _key


def keys_of(table: str) -> dict[str, Key]:
    """The keys of ``table``, in declaration order."""
    return _KEYS_BY_TABLE[table]


def key(table: str, name: str) -> Key:
    return _KEYS_BY_TABLE[table][name]


# --------------------------------------------------------------------------------------------------
# Checking a document


@attrs.frozen
class Problem:
    """One thing wrong with the file, shown as ``[table].key: why`` (``key`` empty: the table)."""

    #: Where it is listed: the table's and the key's position in the schema (sorted stably, so
    #: problems of one key keep the order they were found in).
    rank: tuple[int, int]
    table: str
    key: str
    why: str

    def __str__(self) -> str:
        where = f"[{self.table}]" + (f".{self.key}" if self.key else "")
        return f"{where}: {self.why}"


def problem(table: str, name: str, why: str) -> Problem:
    """A ``Problem`` ranked by the schema's order of ``table`` (``clients.static[2]`` as its
    array table) and ``name``; unknown ones come first, in the order found."""
    base = table.partition("[")[0]
    table_rank = [t.name for t in TABLES].index(base) if base in _TABLE_BY_NAME else -1
    keys = list(_KEYS_BY_TABLE.get(base, {}))
    key_rank = keys.index(name) if name in keys else (-1 if not name else len(keys))
    return Problem(rank=(table_rank, key_rank), table=table, key=name, why=why)


class Unusable(Exception):
    """A value is missing or was refused; its problem is already reported (used to skip the
    checks and the building that depend on it, so one mistake is reported once)."""


@attrs.frozen
class Section:
    """One table of the document after the generic checks: declared keys, defaults applied."""

    name: str
    #: Every declared key that is given or has a default (absent optional keys are missing).
    values: Mapping[str, Any]
    #: Keys present in the file.
    given: frozenset[str]
    #: Keys whose value was refused (or a required key that is missing).
    bad: frozenset[str]
    #: False when the table itself is unusable (missing while required, or not a table).
    usable: bool = True

    def path(self, name: str) -> str:
        return f"[{self.name}].{name}"

    def has(self, name: str) -> bool:
        return name in self.given

    def get(self, name: str) -> Any:
        """The value (or default; ``None`` when absent without one); ``Unusable`` if refused."""
        if not self.usable or name in self.bad:
            raise Unusable(self.path(name))
        return self.values.get(name)

    def entries(self, name: str) -> tuple[Section, ...]:
        """The checked tables of an array-of-tables key (``[[clients.static]]``)."""
        value = self.get(name)
        return () if value is None else tuple(value)


@attrs.frozen
class Checked:
    sections: Mapping[str, Section]
    problems: tuple[Problem, ...]
    #: The checked entries of each top-level array of tables (``[[trusted_issuers]]``).
    arrays: Mapping[str, tuple[Section, ...]] = attrs.field(factory=dict)


def suggestion(word: str, candidates: Any) -> str:
    """``; did you mean `x`?`` for the closest candidate, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.7)
    return f"; did you mean `{close[0]}`?" if close else ""


def check(data: Mapping[str, Any]) -> Checked:
    """Every generic problem of ``data`` (a parsed TOML document), and its tables with defaults."""
    problems: list[Problem] = []
    top = [t for t in TABLES if "." not in t.name]
    for name in data:
        if name not in _TABLE_BY_NAME or "." in name:
            expected = ", ".join(t.name for t in top)
            hint = suggestion(name, [t.name for t in top if t.name not in data])
            why = f"unknown table{hint}" if hint else f"unknown table (expected {expected})"
            problems.append(problem(name, "", why))
    sections: dict[str, Section] = {}
    arrays: dict[str, tuple[Section, ...]] = {}
    for table in top:
        raw = data.get(table.name)
        if table.array:
            arrays[table.name] = _array(table, raw, problems)
        elif raw is None and table.required:
            problems.append(problem(table.name, "", "required table is missing"))
            sections[table.name] = Section(table.name, {}, frozenset(), frozenset(), usable=False)
        elif raw is not None and not isinstance(raw, Mapping):
            problems.append(problem(table.name, "", "must be a table"))
            sections[table.name] = Section(table.name, {}, frozenset(), frozenset(), usable=False)
        else:
            sections[table.name] = _section(table.name, table.name, raw or {}, problems)
    return Checked(sections=sections, problems=tuple(problems), arrays=arrays)


def _array(table: Table, raw: Any, problems: list[Problem]) -> tuple[Section, ...]:
    """A top-level ``[[table]]``: each entry checked as a table named ``table[i]``."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(entry, Mapping) for entry in raw):
        problems.append(problem(table.name, "", f"must be an array of tables ([[{table.name}]])"))
        return ()
    return tuple(
        _section(table.name, f"{table.name}[{i}]", entry, problems) for i, entry in enumerate(raw)
    )


def _section(
    schema_table: str, name: str, raw: Mapping[str, Any], problems: list[Problem]
) -> Section:
    declared = _KEYS_BY_TABLE[schema_table]
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for given in raw:
        if given not in declared:
            problems.append(problem(name, given, "unknown key" + _hint(schema_table, given, raw)))
    for key_name, k in declared.items():
        if key_name not in raw:
            if k.required:
                problems.append(problem(name, key_name, "required"))
                bad.add(key_name)
            elif k.default is not None:
                values[key_name] = k.default
            continue
        value = raw[key_name]
        why = _type_problem(k, value)
        if why is None and k.type is Type.TABLES:
            sub = f"{schema_table}.{key_name}"
            value = tuple(
                _section(sub, f"{name}.{key_name}[{i}]", entry, problems)
                for i, entry in enumerate(value)
            )
        elif (
            why is None and k.type is Type.TABLE and f"{schema_table}.{key_name}" in _KEYS_BY_TABLE
        ):
            # A sub-table with keys of its own ([resources.access]): checked like any table.
            value = _section(f"{schema_table}.{key_name}", f"{name}.{key_name}", value, problems)
        if why is not None:
            problems.append(problem(name, key_name, why))
            bad.add(key_name)
        else:
            values[key_name] = value
    return Section(name, values, frozenset(raw), frozenset(bad))


def _hint(table: str, given: str, raw: Mapping[str, Any]) -> str:
    """A near miss among this table's keys not yet given, or the table the key belongs in."""
    hint = suggestion(given, [k for k in _KEYS_BY_TABLE[table] if k not in raw])
    if hint:
        return hint
    homes = [t for t, keys in _KEYS_BY_TABLE.items() if given in keys and t != table]
    return f"; it belongs in [{homes[0]}]" if homes else ""


_TYPE_NAMES = {
    Type.STRING: "a string",
    Type.INTEGER: "an integer",
    Type.BOOLEAN: "true or false",
    Type.STRINGS: "a list of non-empty strings",
    Type.STRING_TABLE: "a table of non-empty strings",
    Type.TABLE: "a table",
}


def _type_problem(k: Key, value: Any) -> str | None:
    """Why ``value`` does not fit ``k``'s type, bounds or choices, or ``None``."""
    t = k.type
    ok: bool
    if t is Type.STRING:
        ok = isinstance(value, str)
    elif t is Type.INTEGER:
        # bool is an int in Python; TOML keeps them apart, and so do we.
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is Type.BOOLEAN:
        ok = isinstance(value, bool)
    elif t is Type.STRINGS:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    elif t is Type.TABLE:
        ok = isinstance(value, Mapping)
    elif t is Type.STRING_TABLE:
        ok = isinstance(value, Mapping) and all(
            isinstance(n, str) and n and isinstance(v, str) and v for n, v in value.items()
        )
        if ok and any(ord(c) < 0x20 for n, v in value.items() for c in n + v):
            return "must not contain control characters"
    else:
        ok = isinstance(value, list) and all(isinstance(v, Mapping) for v in value)
        if not ok:
            return f"must be an array of tables ([[{k.table}.{k.name}]])"
    if not ok:
        return f"must be {_TYPE_NAMES[t]}"
    if k.required and value == "":
        return "required"
    if t is Type.INTEGER:
        if k.minimum is not None and k.maximum is not None:
            if not k.minimum <= value <= k.maximum:
                return f"must be between {k.minimum} and {k.maximum}"
        elif k.minimum is not None and value < k.minimum:
            return f"must be at least {k.minimum}"
        elif k.maximum is not None and value > k.maximum:
            return f"must be at most {k.maximum}"
    if k.choices and value not in k.choices:
        hint = suggestion(value, k.choices)
        return f"must be one of {', '.join(k.choices)}{hint}"
    return None
