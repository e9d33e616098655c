"""What an operator must know when ``oauthproxy serve`` starts, and when ``check-config`` passes.

A handful of lines, never a secret: the issuer, the resource (and where the gateway forwards it),
the provider and the callback URL registered there, the store with what survives a restart, who
may sign in, and which clients may come in (``[clients]``: registration, metadata document hosts,
pre-registered clients, redirect hosts); then one ``warning:`` line for each choice of the file that
exposes something:

- an in-memory store (a restart makes every client register and every user sign in again, and no
  other instance shares it), or a store whose client package (redis, psycopg) is not installed;
- a plain-``http`` issuer reachable beyond loopback (codes and tokens cross the network
  unencrypted);
- no ``[access]`` rule, so any account at the provider may sign in: with open dynamic registration
  (RFC 7591 §3: no initial access token is asked for) or metadata documents from any host, through
  a client of their own; with ``[clients]`` narrowed, still through any admitted client;
- ``[clients]`` that admits no client at all (registration and metadata documents off, no
  pre-registered client), or host lists that ``cimd = false`` leaves unused;
- metrics without a bearer token;
- ``X-Forwarded-For`` believed from any peer (a client then chooses the address the per-address
  limits count by: spec/security.md 35);
- client metadata documents fetched from loopback (development only: spec/security.md 23);
- the user's provider token forwarded to the MCP server (``[gateway] forward_upstream_token``).

Both commands print ``summary_lines`` of the same ``Settings``, so what ``check-config`` promises is
what ``serve`` does. ``admission`` is the one place that says who may sign in, from the ``[access]``
rules (spec/security.md 33).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from oauthproxy_core.url_policy import is_loopback_host

from .config_file import Settings, redact_url
from .stores import postgres_options, sqlite_file
from .stores.redis_ha_url import parse_redis_ha_url

__all__ = [
    "Admission",
    "admission",
    "clients",
    "store_durability",
    "summary_lines",
    "warnings",
]

#: Microsoft's multi-tenant audiences (``[upstream] tenant``), in words.
_ENTRA_AUDIENCES = {
    "common": "any Microsoft account (work, school or personal)",
    "organizations": "any work or school account of any Entra tenant",
    "consumers": "any personal Microsoft account",
}


@attrs.frozen
class Admission:
    """Who may sign in. ``everyone``: no rule narrows it beyond having an account at the provider
    (or, for an Entra tenant GUID, in that tenant)."""

    everyone: bool
    text: str


#: ``[access]`` key -> how the operator's summary names what it admits.
_RULE_WORDS = {
    "allowed_subjects": "the accounts",
    "allowed_emails": "the verified addresses",
    "allowed_email_domains": "verified addresses at",
    "github_orgs": "members of the GitHub organizations/teams",
    "google_hosted_domains": "accounts of the Google Workspace domains",
    "entra_tenants": "accounts of the Entra tenants",
    "allowed_groups": "members of the groups",
}


def admission(settings: Settings) -> Admission:
    """Who may sign in, in one clause ("any account at github (github.com) may sign in").

    With ``[access]`` rules, ``everyone`` is false and ``text`` lists the rules with their values
    (the operator's own configuration; the refusal page shown to users names only the classes).
    """
    policy = settings.proxy.access
    if not policy.open:
        parts = [
            f"{_RULE_WORDS[name]} {', '.join(getattr(policy, name))}"
            for name in policy.rule_classes
        ]
        text = "only " + "; or ".join(parts) + " may sign in"
        if policy.allowed_groups:
            text += f" (groups from the {policy.groups_claim!r} claim)"
        return Admission(everyone=False, text=text)
    up = settings.upstream
    if up.name == "entra" and up.tenant is not None:
        who = _ENTRA_AUDIENCES.get(up.tenant, f"any account of the Entra tenant {up.tenant}")
        return Admission(everyone=up.tenant in _ENTRA_AUDIENCES, text=f"{who} may sign in")
    host = urlsplit(up.authorize_url).hostname or up.authorize_url
    return Admission(everyone=True, text=f"any account at {up.name} ({host}) may sign in")


def _hosts(patterns: tuple[object, ...]) -> str:
    return ", ".join(str(p) for p in patterns)


def clients(settings: Settings) -> str:
    """Which clients may come in (``[clients]``), in one line."""
    proxy = settings.proxy
    policy = proxy.admission
    parts = ["dynamic registration" if policy.dcr else "no dynamic registration"]
    if not proxy.cimd_enabled:
        parts.append("no metadata documents")
    else:
        where = (
            "any host" if policy.cimd_allowed_hosts is None else _hosts(policy.cimd_allowed_hosts)
        )
        if policy.cimd_denied_hosts:
            where += f" except {_hosts(policy.cimd_denied_hosts)}"
        parts.append(f"metadata documents from {where}")
    if proxy.static_clients:
        parts.append(f"{len(proxy.static_clients)} pre-registered")
    if policy.redirect_hosts is not None:
        parts.append(f"redirect URIs only on {_hosts(policy.redirect_hosts)}")
    if proxy.device.enabled:
        parts.append(f"device sign-in at {proxy.verification_uri} ([device], RFC 8628)")
    return "; ".join(parts)


def store_durability(url: str) -> str:
    """The store, and what survives a restart or is shared, in words (no password)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return "memory://: this process only, lost at every restart"
    if scheme == "sqlite":
        return f"sqlite {sqlite_file(url)}: survives restarts, one machine only"
    if scheme in ("postgresql", "postgres"):
        _libpq_url, prefix, synchronous_commit = postgres_options(url)
        lost = (
            "; synchronous_commit=off: a crash of the database server may lose its last writes"
            if synchronous_commit == "off"
            else ""
        )
        return (
            f"{redact_url(url)}: shared by every instance using it, tables {prefix}records and "
            f"{prefix}schema_version; survives restarts of the proxy and of PostgreSQL{lost}"
        )
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        replicas = parse_redis_ha_url(url).replicas
        return (
            f"{redact_url(url)}: shared by every instance using it; the primary the sentinels "
            f"name, every write acknowledged by {replicas} replica(s), so a fail-over keeps it"
        )
    if scheme in ("redis+cluster", "rediss+cluster"):
        replicas = parse_redis_ha_url(url).replicas
        kept = (
            f"every write acknowledged by {replicas} replica(s) of its shard, so a fail-over "
            "keeps it"
            if replicas
            else "a fail-over within a shard may lose its last writes (replicas=1 waits for one)"
        )
        return (
            f"{redact_url(url)}: shared by every instance using it, spread over the Cluster's "
            f"primaries; {kept}"
        )
    return (
        f"{redact_url(url)}: shared by every instance using it; held in memory by Redis unless "
        "the Redis server persists it (RDB or AOF)"
    )


def _trusted_forwarders(settings: Settings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The peers ``serve`` believes ``X-Forwarded-For`` from (uvicorn's default when unset)."""
    if settings.forwarded_allow_ips is not None:
        return settings.forwarded_allow_ips
    configured = environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return tuple(part.strip() for part in configured.split(",") if part.strip())


def _trusts_everyone(entries: tuple[str, ...]) -> bool:
    for entry in entries:
        if entry == "*":
            return True
        try:
            if ipaddress.ip_network(entry, strict=False).prefixlen == 0:
                return True
        except ValueError:
            continue
    return False


def store_driver_missing(url: str) -> str | None:
    """What to install for a store URL whose client package this installation lacks, else ``None``
    (a plain ``pip install oauthproxy`` has neither redis nor psycopg)."""
    scheme = url.partition("://")[0].lower()
    if scheme.startswith("redis") and importlib.util.find_spec("redis") is None:
        return "the redis package is not installed: pip install 'oauthproxy[redis]'"
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install 'oauthproxy[postgres]'"
    return None


def warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """One sentence per exposure the configuration makes (see the module docstring)."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    if settings.store_url.partition("://")[0].lower() == "memory":
        found.append(
            "[store].url: memory:// forgets every registration, grant and sign-in at each "
            "restart (clients register again, users sign in again) and shares nothing with "
            "other instances; leave [store] out for the SQLite default"
        )
    missing = store_driver_missing(settings.store_url)
    if missing is not None:
        found.append(f"[store].url: {missing}; serve cannot open the store without it")
    issuer = urlsplit(settings.issuer)
    if issuer.scheme == "http" and not is_loopback_host(issuer.hostname):
        found.append(
            "[server].base_url: plain http outside loopback: codes and tokens cross the network "
            "unencrypted"
        )
    elif issuer.scheme == "http" and not is_loopback_host(settings.host):
        found.append(
            f"[server].base_url: plain http while [server].host {settings.host} accepts "
            "connections from other machines: codes and tokens would cross the network "
            "unencrypted"
        )
    admitted = admission(settings)
    proxy = settings.proxy
    policy = proxy.admission
    nobody = not policy.dcr and not proxy.cimd_enabled and not proxy.static_clients
    if admitted.everyone and not nobody:
        rules = "(add [access] rules: allowed_email_domains, github_orgs, allowed_groups, ...)"
        if policy.dcr or (proxy.cimd_enabled and policy.cimd_allowed_hosts is None):
            door = (
                "dynamic registration is open"
                if policy.dcr
                else "metadata documents from any host are accepted"
            )
            found.append(
                f"[access]: no rule, so {admitted.text}; {door}, so anyone with such an account "
                f"can use {proxy.resource} {rules}"
            )
        else:
            found.append(
                f"[access]: no rule, so {admitted.text}; [clients] admits only some clients, but "
                f"anyone with such an account can use {proxy.resource} through them {rules}"
            )
    if nobody:
        found.append(
            "[clients]: dcr = false, cimd = false and no [[clients.static]]: no client can sign "
            "anybody in"
        )
    if not proxy.cimd_enabled and (
        policy.cimd_allowed_hosts is not None or policy.cimd_denied_hosts
    ):
        found.append("[clients].cimd_allowed_hosts, cimd_denied_hosts: unused while cimd = false")
    if settings.metrics_enabled and settings.metrics_bearer_token is None:
        found.append(
            "[metrics].bearer_token: not set: whoever reaches /metrics reads the traffic "
            "figures; set one or keep /metrics unreachable from outside"
        )
    if _trusts_everyone(_trusted_forwarders(settings, env)):
        found.append(
            "[server].forwarded_allow_ips: X-Forwarded-For is believed from any peer: a client "
            "chooses the address the per-address limits count by; list your reverse proxy"
        )
    if settings.proxy.cimd_allow_loopback:
        found.append(
            "[clients].cimd_allow_loopback: client metadata documents are fetched from this "
            "machine too (development only)"
        )
    if settings.gateway_forward_upstream_token and settings.gateway_upstream_url:
        found.append(
            "[gateway].forward_upstream_token: the MCP server receives each user's provider "
            "token (X-OAuthProxy-Upstream-Token) and can act as them at the provider; keep it "
            "reachable through the gateway alone and its request headers out of its logs"
        )
    for entry in settings.resources:
        if entry.forward_upstream_token:
            found.append(
                f"[[resources]] {entry.path} forward_upstream_token: that MCP server receives "
                "each user's provider token and can act as them at the provider"
            )
    return found


def _resource_rows(settings: Settings) -> list[tuple[str, str]]:
    """One ``resource`` row per ``[[resources]]`` entry: its URL, its server, its tool rules."""
    rows = []
    for entry, url in zip(settings.resources, settings.proxy.resource_urls, strict=True):
        rules = len(entry.tools.rules)
        text = f"{url} -> {redact_url(entry.upstream_url)}"
        if rules:
            text += f", {rules} tool rule{'s' if rules > 1 else ''}"
        rows.append(("resource", text))
    return rows


def summary_lines(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The summary: six indented lines (one more per ``[[resources]]`` entry past the first),
    then a ``warning:`` line per exposure."""
    proxy = settings.proxy
    up = settings.upstream
    gateway = settings.gateway_upstream_url
    resource = proxy.resource + (
        f" -> {gateway}" if gateway else " (no [gateway]: 404 after sign-in)"
    )
    rules = len(settings.gateway_tools.rules)
    if gateway and rules:
        resource += f", {rules} tool rule{'s' if rules > 1 else ''} ([[gateway.tools]])"
    rows = [
        ("issuer", proxy.issuer),
        *(_resource_rows(settings) if settings.resources else [("resource", resource)]),
        (
            "provider",
            f"{up.name}, client_id {up.client_id}, callback {proxy.issuer}{proxy.callback_path}",
        ),
        ("store", store_durability(settings.store_url)),
        ("sign-in", admission(settings).text),
        ("clients", clients(settings)),
    ]
    lines = [f"  {name:<9} {value}" for name, value in rows]
    lines += [f"warning: {text}" for text in warnings(settings, environ)]
    return lines
