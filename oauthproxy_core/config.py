"""The proxy's configuration as one validated, immutable record, and the per-request context.

``ProxyConfig`` holds policy (issuer, protected resource, scopes, lifetimes, bounds) and the upstream
profile. ``Context`` adds what changes per request and must not come from globals in a sans-IO core:
the clock reading, the random source and the key material (spec/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .access import AccessPolicy
from .admission import ClientAdmission
from .bounds import Bounds
from .browser_binding import origin_of
from .consent_theme import ConsentTheme
from .crypto import RandomSource
from .issuers import EnterpriseIssuer, TrustedIssuer
from .keys import Keyring
from .records import Client
from .resource_servers import ResourceServer
from .resources import canonical_resource
from .upstream import UpstreamProfile
from .url_policy import document_url_problem, issuer_problem


def _tuple(v: Iterable[str]) -> tuple[str, ...]:
    return tuple(v)


def _clients(v: Iterable[Client]) -> tuple[Client, ...]:
    return tuple(v)


def _trusted(v: Iterable[TrustedIssuer]) -> tuple[TrustedIssuer, ...]:
    return tuple(v)


def _enterprise(v: Iterable[EnterpriseIssuer]) -> tuple[EnterpriseIssuer, ...]:
    return tuple(v)


def _resources(v: Iterable[ResourceServer]) -> tuple[ResourceServer, ...]:
    return tuple(v)


def _check_issuer(_inst: object, _a: attrs.Attribute[str], value: str) -> None:
    # RFC 8414 §2 and spec/interop.md §Discovery, decided in url_policy.issuer_problem.
    problem = issuer_problem(value)
    if problem is not None:
        raise ValueError(f"issuer {problem}")


def _seconds(default: int, low: int, high: int, why: str = "") -> Any:
    """A lifetime field: ``default`` seconds, refused outside ``[low, high]``. The bounds are kept
    as field metadata so the configuration schema states the same ones."""

    def check(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low} and {high} seconds{why}")

    return attrs.field(default=default, validator=check, metadata={"minimum": low, "maximum": high})


_DAY = 24 * 3600


@attrs.frozen(kw_only=True)
class Lifetimes:
    """Seconds. Each default is justified in the configuration reference (``[lifetimes]``).

    Codes are short-lived (OAuth 2.1 §4.1.2: at most 10 minutes here, spec/security.md 9). A refresh
    family slides ``refresh_token`` (``[lifetimes] refresh_idle``) at each rotation and ends for
    good ``refresh_absolute`` after the first consent, whatever the rotations; the provider is asked
    again about the user at a refresh once ``revalidate_after`` has passed since it last confirmed
    them (revalidation.py). A revocation reaches every instance's bearer check within
    ``revocation_staleness`` (spec/security.md 34).
    """

    transaction: int = _seconds(600, 60, 3600)
    code: int = _seconds(120, 1, 600, " (spec/security.md 9)")
    access_token: int = _seconds(3600, 60, _DAY)
    #: The sliding idle lifetime of a refresh family (``[lifetimes] refresh_idle``).
    refresh_token: int = _seconds(30 * _DAY, 300, 366 * _DAY)
    #: The hard cap from the first consent that no rotation extends.
    refresh_absolute: int = _seconds(90 * _DAY, 3600, 5 * 366 * _DAY)
    #: A retried refresh inside this window gets the same answer (spec/security.md 20).
    refresh_grace: int = _seconds(30, 0, 300)
    consent_memory: int = _seconds(30 * _DAY, 0, 366 * _DAY)
    browser_cookie: int = _seconds(30 * _DAY, 0, 366 * _DAY)
    #: A registered client is forgotten this long after its last use (spec/security.md 28); one never
    #: used, after ``Bounds.unused_registration_lifetime``.
    client: int = _seconds(90 * _DAY, _DAY, 5 * 366 * _DAY)
    #: Re-validate the user with the provider at a refresh this long after it last confirmed them
    #: (``0``: at every refresh).
    revalidate_after: int = _seconds(3600, 0, 30 * _DAY)
    #: How stale a bearer check's view of revocations may be: a verified token is re-checked
    #: against the revocation markers at most this long after its last check (``0``: every request).
    revocation_staleness: int = _seconds(5, 0, 300)
    #: How long one sign-in at the provider serves further resources in the same browser
    #: (upstream_session.py, spec/security.md 40); ``0``: every authorization signs in again.
    upstream_session: int = _seconds(3600, 0, _DAY)


def _count(default: int, low: int, high: int) -> Any:
    def check(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low} and {high}")

    return attrs.field(default=default, validator=check, metadata={"minimum": low, "maximum": high})


@attrs.frozen(kw_only=True)
class DeviceGrant:
    """The device authorization grant (RFC 8628; ``[device]``, handlers/device.py). Each default
    is justified in the configuration reference.

    Off unless the operator turns it on: a user code can be handed to someone else to type
    (RFC 8628 §5.4, remote phishing), so a deployment decides that its users need it.
    """

    enabled: bool = False
    #: §3.2 ``expires_in``: how long the device code and the user code live.
    code_lifetime: int = _seconds(600, 60, 1800)
    #: §3.2 ``interval``: the least number of seconds between two polls (§3.5 default: 5).
    interval: int = _seconds(5, 1, 60)
    #: Mistyped or guessed user codes accepted per source per ``code_lifetime`` (§5.1).
    failed_entries_per_address: int = _count(50, 1, 100_000)
    #: ... and from every source together: the bound on guessing from many addresses.
    failed_entries_total: int = _count(1_000, 1, 1_000_000)

    def __attrs_post_init__(self) -> None:
        if self.failed_entries_per_address > self.failed_entries_total:
            raise ValueError("failed_entries_per_address must not exceed failed_entries_total")


@attrs.frozen(kw_only=True)
class ProxyConfig:
    issuer: str = attrs.field(validator=_check_issuer)
    #: Path of the protected MCP endpoint; the resource is ``issuer + mcp_path``.
    mcp_path: str = "/mcp"
    upstream: UpstreamProfile
    scopes_supported: tuple[str, ...] = attrs.field(converter=_tuple, default=("mcp",))
    default_scopes: tuple[str, ...] = attrs.field(converter=_tuple, default=("mcp",))
    consent_mode: str = attrs.field(
        default="always", validator=attrs.validators.in_(("always", "remember"))
    )
    lifetimes: Lifetimes = attrs.field(factory=Lifetimes)
    callback_path: str = "/auth/callback"
    service_name: str = "MCP server"
    #: Allow the RFC 8252 §7.3 port tolerance for ``localhost`` as well as loopback IP literals.
    allow_localhost_port: bool = True
    #: Registration and pending-transaction bounds (spec/security.md 28).
    bounds: Bounds = attrs.field(factory=Bounds)
    #: Pre-registered clients (``[[clients.static]]``), secrets as digests; never in the store.
    static_clients: tuple[Client, ...] = attrs.field(converter=_clients, default=())
    #: Accept Client ID Metadata Documents (an https URL as ``client_id``; cimd.py).
    cimd_enabled: bool = True
    #: Tests and local development only: fetch CIMD documents from loopback, also over http.
    cimd_allow_loopback: bool = False
    #: Which clients may come in (``[clients]`` dcr and host lists; admission.py).
    admission: ClientAdmission = attrs.field(factory=ClientAdmission)
    #: The consent page's look: product name, logo, colours, extra text or a full template
    #: (``[consent]``; validated in consent_theme.py so no value can inject HTML or CSS).
    consent_theme: ConsentTheme = attrs.field(factory=ConsentTheme)
    #: Who may sign in (``[access]``, access.py); with no rule, everyone the provider signs in.
    access: AccessPolicy = attrs.field(factory=AccessPolicy)
    #: Identity providers whose access tokens the bearer check accepts (``[[trusted_issuers]]``).
    trusted_issuers: tuple[TrustedIssuer, ...] = attrs.field(converter=_trusted, default=())
    #: Enterprise identity providers whose ID-JAGs the token endpoint redeems
    #: (``[[enterprise_issuers]]``, ``handlers/id_jag.py``).
    enterprise_issuers: tuple[EnterpriseIssuer, ...] = attrs.field(
        converter=_enterprise, default=()
    )
    #: Several protected MCP servers under this issuer (``[[resources]]``, resource_servers.py);
    #: empty: the one at ``mcp_path`` (the single-resource form).
    resources: tuple[ResourceServer, ...] = attrs.field(converter=_resources, default=())
    #: The device authorization grant (``[device]``, RFC 8628).
    device: DeviceGrant = attrs.field(factory=DeviceGrant)
    #: The default resource (the first), for a request that names none (RFC 8707 §2).
    resource: str = attrs.field(init=False)
    #: Every protected resource's canonical URL, the default first.
    resource_urls: tuple[str, ...] = attrs.field(init=False)
    _resource_by_url: dict[str, ResourceServer] = attrs.field(init=False, repr=False, eq=False)
    #: What sign-in must read about a user for every rule to decide: ``[access]`` with every
    #: resource's own rules merged in (``upstream_identity.establish``; never used to decide).
    facts_policy: AccessPolicy = attrs.field(init=False, repr=False, eq=False)
    secure_cookies: bool = attrs.field(init=False)
    #: The issuer's origin (RFC 6454 §6.2): a consent POST without Fetch Metadata must carry it.
    issuer_origin: str = attrs.field(init=False)
    _static_by_id: dict[str, Client] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.mcp_path.startswith("/") or (
            self.mcp_path.endswith("/") and self.mcp_path != "/"
        ):
            raise ValueError("mcp_path must start with '/' and not end with '/'")
        self._index_resources()
        object.__setattr__(self, "secure_cookies", self.issuer.startswith("https://"))
        object.__setattr__(self, "issuer_origin", origin_of(self.issuer))
        if not set(self.default_scopes) <= set(self.scopes_supported):
            raise ValueError("default_scopes must be a subset of scopes_supported")
        by_id = {c.client_id: c for c in self.static_clients}
        if len(by_id) != len(self.static_clients):
            raise ValueError("static client ids must be distinct")
        object.__setattr__(self, "_static_by_id", by_id)
        for client in self.static_clients:
            if self.admission.redirect_refusal(client.redirect_uris) is not None:
                raise ValueError(
                    f"[clients].redirect_hosts: the static client {client.client_id!r} has a "
                    "redirect URI on a host the list does not name"
                )
            self._check_machine_client(client)
        object.__setattr__(self, "facts_policy", self._facts_policy())
        if self.facts_policy.github_orgs:
            self._ask_for_memberships()
        self._check_other_issuers()

    def _index_resources(self) -> None:
        """The protected resources by canonical URL (spec/security.md 40): distinct, none below
        another (a request path would then belong to two), each needing supported scopes."""
        servers = self.resources or (
            ResourceServer(path=self.mcp_path, name=self.service_name, scopes=self.default_scopes),
        )
        by_url: dict[str, ResourceServer] = {}
        for server in servers:
            url = canonical_resource(self.issuer + server.path)
            if url in by_url:
                raise ValueError(f"[[resources]] lists the path {server.path} twice")
            if not set(server.scopes) <= set(self.scopes_supported):
                raise ValueError(
                    f"[[resources]] {server.path}: its scopes must be among scopes_supported"
                )
            by_url[url] = server
        paths = [s.path for s in servers]
        for a in paths:
            for b in paths:
                if a != b and (a == "/" or b.startswith(a + "/")):
                    raise ValueError(f"[[resources]] {b} lies below {a}: give them disjoint paths")
        object.__setattr__(self, "_resource_by_url", by_url)
        object.__setattr__(self, "resource_urls", tuple(by_url))
        object.__setattr__(self, "resource", self.resource_urls[0])

    def _facts_policy(self) -> AccessPolicy:
        own = [r.access for r in self.resources if r.access is not None]
        if not own:
            return self.access
        policies = (self.access, *own)
        return attrs.evolve(
            self.access,
            allowed_groups=tuple(dict.fromkeys(g for p in policies for g in p.allowed_groups)),
            github_orgs=tuple(dict.fromkeys(o for p in policies for o in p.github_orgs)),
        )

    def resource_server(self, url: str) -> ResourceServer | None:
        """The protected resource whose canonical URL is ``url``, if any."""
        return self._resource_by_url.get(url)

    def baseline_scopes(self, resource: str) -> tuple[str, ...]:
        """The scopes a client needs at ``resource`` (``default_scopes`` in the single form)."""
        server = self._resource_by_url.get(resource)
        return server.scopes if server is not None else self.default_scopes

    @property
    def resource_paths(self) -> tuple[str, ...]:
        """The path (below the issuer) of every protected resource, the default first."""
        return tuple(s.path for s in self._resource_by_url.values())

    def resource_for_request(self, path: str) -> str | None:
        """The resource a bearer check at request path ``path`` is for: with ``[[resources]]`` the
        one at or above the path (spec/security.md 40), else ``None`` (the default resource). Every
        adapter's check asks this, so that no adapter checks one resource's path against another's
        audience."""
        return self.resource_at(path) if self.resources else None

    def resource_at(self, path: str) -> str | None:
        """The canonical URL of the resource protecting the request path ``path`` (its own path
        or below it, as the front door's protected prefixes read it), or ``None``."""
        for url, server in self._resource_by_url.items():
            if path == server.path or path.startswith(server.path.rstrip("/") + "/"):
                return url
        return None

    def _check_other_issuers(self) -> None:
        """spec/security.md 37: no other issuer can pass for us, for each other, or for the
        provider's users; only pre-registered confidential clients present ID-JAGs."""
        prefixes: dict[str, str] = {}
        for table, entries in (
            ("trusted_issuers", self.trusted_issuers),
            ("enterprise_issuers", self.enterprise_issuers),
        ):
            seen: set[str] = set()
            for entry in entries:
                if entry.issuer == self.issuer:
                    raise ValueError(f"[{table}] issuer must not be this proxy's own issuer")
                if entry.issuer in seen:
                    raise ValueError(f"[{table}] lists the issuer {entry.issuer} twice")
                seen.add(entry.issuer)
                self._check_jwks_uri(table, entry.jwks_uri)
                self._check_prefix(table, entry.subject_prefix, entry.issuer, prefixes)
        for trusted in self.trusted_issuers:
            if trusted.audience == self.issuer:
                # An ID-JAG's aud is our issuer: such an audience would let one pass as a token.
                raise ValueError("[trusted_issuers] audience must not be this proxy's issuer")
            if trusted.resource and trusted.resource not in self.resource_urls:
                raise ValueError(
                    f"[trusted_issuers] resource {trusted.resource} is not one of this server's "
                    "protected resources"
                )
        for enterprise in self.enterprise_issuers:
            for client_id in enterprise.clients:
                client = self._static_by_id.get(client_id)
                if client is None or client.token_endpoint_auth_method == "none":
                    raise ValueError(
                        f"[enterprise_issuers] clients: {client_id} is not a pre-registered "
                        "confidential client"
                    )

    def _check_jwks_uri(self, table: str, uri: str) -> None:
        problem = document_url_problem(uri, allow_loopback=self.cimd_allow_loopback)
        if problem is not None:
            # The document rule speaks of a client_id URL; here the URL is a JWK Set's.
            rule = problem.replace("the client_id URL ", "").replace("the client_id ", "")
            raise ValueError(f"[{table}] jwks_uri {rule}")

    def _check_prefix(self, table: str, prefix: str, issuer: str, owners: dict[str, str]) -> None:
        # The subject of our own users is "<provider>:<id>": a prefix equal to the provider's
        # name would let the other issuer name any of them. One issuer may appear in both tables
        # with one prefix; two issuers never share one.
        if prefix == self.upstream.name:
            raise ValueError(f"[{table}] subject_prefix must differ from the provider's name")
        if owners.setdefault(prefix, issuer) != issuer:
            raise ValueError(f"[{table}] subject_prefix {prefix} is another issuer's")

    def _ask_for_memberships(self) -> None:
        if self.upstream.org_membership_url is None:
            raise ValueError("[access] github_orgs (or a resource's) needs a GitHub upstream")
        # Private memberships need read:org (GitHub docs, "Scopes for OAuth apps"); asked only
        # when a rule reads them. A GitHub App has no scopes: its "Members" permission decides.
        if self.upstream.scopes and "read:org" not in self.upstream.scopes:
            upstream = attrs.evolve(self.upstream, scopes=(*self.upstream.scopes, "read:org"))
            object.__setattr__(self, "upstream", upstream)

    def _check_machine_client(self, client: Client) -> None:
        """A pre-registered client of the client credentials grant (handlers/client_credentials.py)."""
        where = f"static client {client.client_id!r}"
        if not set(client.scope) <= set(self.scopes_supported):
            raise ValueError(f"{where}: its scopes must be among scopes_supported")
        if "client_credentials" not in client.grant_types:
            return
        # RFC 6749 §4.4: "The client credentials grant type MUST only be used by confidential
        # clients."
        if client.token_endpoint_auth_method == "none" or client.subject is None:
            raise ValueError(
                f"{where}: client_credentials needs a confidential client and a subject"
            )
        # spec/security.md 36: a machine identity never takes the form of a user's, which is
        # ``<provider name>:<id>`` (upstream.identity_from_claims).
        if client.subject.startswith(self.upstream.name + ":"):
            raise ValueError(f"{where}: its subject must not start with {self.upstream.name}:")

    def static_client(self, client_id: str) -> Client | None:
        """The pre-registered client with this id, if any."""
        return self._static_by_id.get(client_id)

    @property
    def callback_url(self) -> str:
        return self.issuer + self.callback_path

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @property
    def verification_uri(self) -> str:
        """RFC 8628 §3.2 ``verification_uri``: the proxy's own page for user codes."""
        return self.issuer + "/device"


@attrs.frozen(kw_only=True)
class Context:
    config: ProxyConfig
    keys: Keyring
    now: int
    random: RandomSource = attrs.field(repr=False)
    #: The request's peer as the adapter trusts it (``Request.remote_addr``); only for the bounds.
    remote_addr: str = ""

    @property
    def source(self) -> str:
        """The address prefix the per-source bounds count this request under (bounds.py)."""
        return self.config.bounds.source(self.remote_addr)
