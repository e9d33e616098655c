"""Every key of ``proxy.toml`` described once, as data: the source of the documentation's reference.

``config_file.py`` parses and validates; this module says, for each ``[table].key`` it accepts, the
TOML type, the default and what it does. ``tests/adapters/test_config_reference.py`` keeps the two in
sync (the same tables and keys, and the defaults that can be observed by loading a minimal file), and
``spec/docs_hooks.py`` renders ``KEYS`` into the documentation's configuration reference, so the
published reference cannot drift from the parser.
"""

from __future__ import annotations

import attrs

from oauthproxy_core.bounds import Bounds

__all__ = ["KEYS", "TABLE_DOCS", "ConfigKey", "reference_markdown"]


@attrs.frozen(kw_only=True)
class ConfigKey:
    """One configuration key. ``default`` is written as TOML (``None``: no default, see ``doc``)."""

    table: str
    key: str
    type: str
    default: str | None
    doc: str
    required: bool = False


def _k(table: str, key: str, type_: str, default: str | None, doc: str, **kw: bool) -> ConfigKey:
    return ConfigKey(table=table, key=key, type=type_, default=default, doc=doc, **kw)


TABLE_DOCS: dict[str, str] = {
    "server": "Where the proxy listens and who it is. Required.",
    "upstream": "The identity provider the proxy signs users in with (one pre-registered client). "
    "Required.",
    "consent": "The proxy's own consent page: when it is shown and how it looks.",
    "store": "Where transactions, codes, grants and registrations live.",
    "keys": "The keyring: signing, sealing and cookie keys.",
    "gateway": "The MCP server behind the proxy (standalone `oauthproxy serve` only).",
    "clients": "Which MCP clients may use the proxy besides dynamically registered ones.",
    "limits": "Bounds on unauthenticated work (SECURITY.md 28, 35): counted per source (an address "
    "prefix) and in total; past one, a clear 429 (503 for a bound everyone shares), never a 5xx.",
    "metrics": "Prometheus metrics at `GET /metrics` (needs the `metrics` extra).",
}


def _bound(name: str) -> str:
    """The default of a ``Bounds`` field, read from the code."""
    return str(attrs.fields_dict(Bounds)[name].default)


KEYS: tuple[ConfigKey, ...] = (
    # [server]
    _k("server", "host", "string", '"127.0.0.1"', "Listen address of `oauthproxy serve`."),
    _k("server", "port", "integer", "8000", "Listen port (0-65535)."),
    _k(
        "server",
        "base_url",
        "string",
        None,
        "The public URL of the proxy and its OAuth issuer: https (http only on 127.0.0.1, "
        "localhost or [::1]), no trailing slash, no query, no userinfo. The upstream callback is "
        "`<base_url>/auth/callback`.",
        required=True,
    ),
    _k(
        "server",
        "mcp_path",
        "string",
        '"/mcp"',
        "Path of the protected MCP endpoint; the resource (token audience) is "
        "`base_url + mcp_path`. Starts with `/`, does not end with `/`.",
    ),
    _k("server", "service_name", "string", '"MCP server"', "Shown on the consent page."),
    _k(
        "server",
        "forwarded_allow_ips",
        "list of strings",
        None,
        "Peers (IP addresses or networks) trusted to name the client address in "
        "`X-Forwarded-For` (uvicorn's proxy headers); `[]` trusts nobody. Default: uvicorn's "
        "(`$FORWARDED_ALLOW_IPS` or 127.0.0.1). The per-address limits count by this address.",
    ),
    _k(
        "server",
        "scopes_supported",
        "list of strings",
        '["mcp"]',
        "The proxy's own scopes (not the upstream's), advertised in the metadata.",
    ),
    _k(
        "server",
        "default_scopes",
        "list of strings",
        '["mcp"]',
        "Granted when a client asks for none; a subset of `scopes_supported` (default: `mcp` if "
        "supported, else the first supported scope).",
    ),
    # [upstream]
    _k(
        "upstream",
        "provider",
        "string",
        None,
        "`github`, `google`, `entra`, `oidc` or `oauth2`.",
        required=True,
    ),
    _k(
        "upstream",
        "client_id",
        "string",
        None,
        "The proxy's client id at the provider.",
        required=True,
    ),
    _k(
        "upstream",
        "client_secret",
        "string",
        None,
        "The proxy's client secret. Give this or `client_secret_env`.",
    ),
    _k(
        "upstream",
        "client_secret_env",
        "string",
        None,
        "Name of an environment variable holding the client secret (read at load).",
    ),
    _k(
        "upstream",
        "scopes",
        "list of strings",
        None,
        "Scopes requested upstream. Default per provider: github `read:user` (GitHub App: none), "
        "google `openid email profile`, entra `openid profile email offline_access`, oidc "
        "`openid profile email`, oauth2 none.",
    ),
    _k(
        "upstream",
        "authorize_url",
        "string",
        None,
        "Authorization endpoint override (required for oauth2).",
    ),
    _k("upstream", "token_url", "string", None, "Token endpoint override (required for oauth2)."),
    _k(
        "upstream",
        "userinfo_url",
        "string",
        None,
        "UserInfo endpoint override (required for oauth2).",
    ),
    _k(
        "upstream",
        "api_base_url",
        "string",
        '"https://api.github.com"',
        "github only: where `GET /user` lives (GitHub Enterprise Server: `https://HOST/api/v3`).",
    ),
    _k(
        "upstream",
        "issuer",
        "string",
        None,
        "oidc: the discovery base (`<issuer>/.well-known/openid-configuration`, fetched at load) "
        "and the RFC 9207 `iss` to expect.",
    ),
    _k(
        "upstream",
        "userinfo_subject_field",
        "string",
        '"sub"',
        "The userinfo field holding the stable user id (github: `id`).",
    ),
    _k(
        "upstream",
        "allow_insecure_http",
        "boolean",
        "false",
        "Allow http upstream URLs on loopback hosts only (tests, local development).",
    ),
    _k(
        "upstream",
        "github_app",
        "boolean",
        "false",
        "github only: the client is a GitHub App (expiring, rotating user tokens).",
    ),
    _k(
        "upstream",
        "tenant",
        "string",
        '"common"',
        "entra only: `common`, `organizations`, `consumers` or a tenant GUID.",
    ),
    _k(
        "upstream",
        "app_id_uri",
        "string",
        None,
        "entra only: the application ID URI (`api://<app-id>`) prefixing custom API scopes.",
    ),
    _k(
        "upstream",
        "identity_source",
        "string",
        '"userinfo"',
        "oidc/oauth2: `userinfo`, `id_token` or `both` (id_token needs discovery's `jwks_uri`). "
        "google and entra use the verified ID token.",
    ),
    _k(
        "upstream",
        "claims",
        "table of strings",
        None,
        "Identity claims to keep: our name = the upstream field "
        '(`{ login = "preferred_username" }`).',
    ),
    _k(
        "upstream",
        "extra_authorize_params",
        "table of strings",
        None,
        "Extra parameters of the upstream authorization request (e.g. Auth0's `audience`).",
    ),
    _k(
        "upstream",
        "extra_token_params",
        "table of strings",
        None,
        "Extra parameters of the upstream token request.",
    ),
    _k(
        "upstream",
        "forward_resource",
        "boolean",
        "false",
        "Send the RFC 8707 `resource` parameter upstream (many providers reject it).",
    ),
    # [consent]
    _k(
        "consent",
        "mode",
        "string",
        '"always"',
        "`always` asks every time; `remember` remembers an approval of exactly (client, redirect "
        "URI, scopes, resource) in this browser, for same-site navigations only.",
    ),
    _k(
        "consent",
        "product_name",
        "string",
        None,
        "Brand shown at the top of the consent page (plain text, at most 80 characters; default: "
        "`[server].service_name`).",
    ),
    _k(
        "consent",
        "logo_url",
        "string",
        None,
        "Logo: an `https:` URL with a DNS host name, or `data:image/(png|jpeg|gif|webp);base64,...`. "
        "The page's `img-src` admits exactly that origin.",
    ),
    _k(
        "consent",
        "primary_color",
        "string",
        '"#1f5fbf"',
        "Approve button colour: `#rgb`, `#rrggbb` or `rgb(r, g, b)`; its text is black or white, "
        "whichever contrasts more.",
    ),
    _k(
        "consent",
        "background_color",
        "string",
        '"#ffffff"',
        "Page background, same notations; the text colour follows for contrast.",
    ),
    _k(
        "consent",
        "extra_text",
        "string",
        None,
        "Plain text shown under the form (at most 1000 characters; a blank line starts a new "
        "paragraph).",
    ),
    _k(
        "consent",
        "template",
        "string",
        None,
        "Path of a full-page HTML template replacing the built-in layout (read at load, at most "
        "64 KiB). See *Theming the consent page*.",
    ),
    # [store]
    _k(
        "store",
        "url",
        "string",
        '"memory://"',
        "`memory://`, `sqlite:///path.db` (`?synchronous=full` to fsync every commit) or "
        "`redis://host:6379/0?prefix=app:` (`rediss://` for TLS).",
    ),
    # [keys]
    _k(
        "keys",
        "file",
        "string",
        '"$OAUTHPROXY_DATA_DIR/keys.json" or ".oauthproxy/keys.json"',
        "The keyring file, created (mode 0600) on first start when missing; refused when "
        "readable by group or others.",
    ),
    # [gateway]
    _k(
        "gateway",
        "upstream_url",
        "string",
        None,
        "The MCP server authenticated requests to `mcp_path` are forwarded to. Without it, the "
        "proxy answers 404 there after authentication.",
    ),
    # [clients]
    _k(
        "clients",
        "cimd",
        "boolean",
        "true",
        "Accept Client ID Metadata Documents (an https URL as `client_id`).",
    ),
    _k(
        "clients",
        "cimd_allow_loopback",
        "boolean",
        "false",
        "Tests and local development only: fetch metadata documents from loopback, also over http.",
    ),
    _k(
        "clients",
        "static",
        "array of tables",
        None,
        "Pre-registered clients (`[[clients.static]]`): `client_id`, `redirect_uris`, optional "
        "`client_secret` (at least 16 characters), `token_endpoint_auth_method` (`none`, "
        "`client_secret_basic`, `client_secret_post`), `client_name`.",
    ),
    # [limits]
    _k(
        "limits",
        "registrations_per_address",
        "integer",
        _bound("registrations_per_address"),
        "Dynamic registrations per source (an address prefix, see `ipv6_prefix`) per "
        "`registration_window`. Large on purpose: web-based MCP hosts register from a few server "
        "addresses for all their users, and an office registers from one NAT address, hundreds "
        "an hour; what bounds storage is `registrations_total` and `unused_registration_lifetime`, "
        "not refusing a busy address (SECURITY.md 35).",
    ),
    _k(
        "limits",
        "registrations_total",
        "integer",
        _bound("registrations_total"),
        "Dynamic registrations from all sources per `registration_window`. With the default "
        "`unused_registration_lifetime` at most 5 000 x 7 = 35 000 never-used registrations exist "
        "at once (about 25 MB at the typical 700 bytes a record); ten busy shared addresses fit.",
    ),
    _k(
        "limits",
        "registration_window",
        "integer",
        _bound("registration_window"),
        "The registration counting window, in seconds.",
    ),
    _k(
        "limits",
        "unused_registration_lifetime",
        "integer",
        _bound("unused_registration_lifetime"),
        "Seconds a dynamic registration lives until tokens are first issued to it; from then on it "
        "lives 90 days after its last use. A sign-in completes minutes after registering (a "
        "transaction lives 10 minutes); six hours lets a user who abandoned one retry it later the "
        "same day with the same registration, and keeps registrations that never complete a flow "
        "(abandoned, or made to fill the store) from piling up.",
    ),
    _k(
        "limits",
        "authorizations_per_address",
        "integer",
        _bound("authorizations_per_address"),
        "Authorization requests per source per transaction lifetime (600 s), counted before the "
        "client is looked up or its metadata document fetched, so made-up client ids cost their "
        "sender's budget only. 256 serves an office of hundreds signing in within ten minutes; it "
        "takes 79 sources to use up `authorizations_total`.",
    ),
    _k(
        "limits",
        "authorizations_per_client",
        "integer",
        _bound("authorizations_per_client"),
        "Pending authorization requests per client *from one source*: a client shared by "
        "thousands of users (a metadata-document client) has no bucket a few sources can fill for "
        "everyone else. Half the per-source budget: one source also signs in to other clients.",
    ),
    _k(
        "limits",
        "authorizations_total",
        "integer",
        _bound("authorizations_total"),
        "Authorization requests from all sources per transaction lifetime; this bounds the pending "
        "transactions (a few hundred bytes each) in the store. Past it the page answers 503.",
    ),
    _k(
        "limits",
        "document_fetches_per_address",
        "integer",
        _bound("document_fetches_per_address"),
        "Client ID Metadata Document (and `jwks_uri`) fetches one source can cause per "
        "`document_fetch_window`. A document is cached for its `max-age` (60 s to 24 h), so a real "
        "client causes one fetch per expiry; 30 covers an office using many different clients.",
    ),
    _k(
        "limits",
        "document_fetches_per_host",
        "integer",
        _bound("document_fetches_per_host"),
        "Fetches from one document host per `document_fetch_window`, so the proxy cannot be made to "
        "hammer a site. When a budget is spent, a stale cached copy of a document is served.",
    ),
    _k(
        "limits",
        "document_fetches_total",
        "integer",
        _bound("document_fetches_total"),
        "Fetches in total per `document_fetch_window` (about 7 a second): outbound requests are "
        "never unbounded. Spent, a client seen before signs in from its stale cached document; only "
        "a client never seen before waits (503 with `Retry-After`).",
    ),
    _k(
        "limits",
        "document_fetch_window",
        "integer",
        _bound("document_fetch_window"),
        "The document-fetch counting window, in seconds.",
    ),
    _k(
        "limits",
        "document_lookups_in_flight",
        "integer",
        _bound("document_lookups_in_flight"),
        "DNS lookups for document hosts run on this many threads of their own, not on the event "
        "loop's default pool that resolves the provider for every sign-in; a lookup that finds "
        "them all busy fails at once (a stale document, else 503). A lookup takes milliseconds, so "
        "8 serve hundreds a second; slow name servers chosen by an attacker hold at most these 8.",
    ),
    _k(
        "limits",
        "ipv4_prefix",
        "integer",
        _bound("ipv4_prefix"),
        "How many leading bits of an IPv4 client address make one source for the per-source "
        "limits (32 or more: single addresses). 32: an address, since one IPv4 address is often a whole NAT.",
    ),
    _k(
        "limits",
        "ipv6_prefix",
        "integer",
        _bound("ipv6_prefix"),
        "How many leading bits of an IPv6 client address make one source (128 or more: single "
        "addresses). 64: one host or one subscriber gets at least a /64 (RFC 6177), so counting "
        "single addresses would give one machine 2^64 budgets. Lower it (48) if floods come "
        "from many /64s of one site.",
    ),
    # [metrics]
    _k(
        "metrics",
        "enabled",
        "boolean",
        "false",
        "Serve metrics at `GET /metrics` (otherwise 404).",
    ),
    _k(
        "metrics",
        "bearer_token",
        "string",
        None,
        "Required as `Authorization: Bearer` on `/metrics` (at least 16 characters). Without one, "
        "keep `/metrics` unreachable from outside.",
    ),
    _k(
        "metrics",
        "bearer_token_env",
        "string",
        None,
        "Name of an environment variable holding the metrics bearer token.",
    ),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """The reference as Markdown: one section per table, one row per key."""
    lines: list[str] = []
    for table, about in TABLE_DOCS.items():
        lines += [f"## `[{table}]`", "", about, "", "| key | type | default | meaning |"]
        lines.append("| --- | --- | --- | --- |")
        for k in KEYS:
            if k.table != table:
                continue
            default = "**required**" if k.required else (f"`{k.default}`" if k.default else "-")
            lines.append(f"| `{k.key}` | {k.type} | {_cell(default)} | {_cell(k.doc)} |")
        lines.append("")
    return "\n".join(lines)
