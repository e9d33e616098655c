"""The proxy's configuration as one validated, immutable record, and the per-request context.

``ProxyConfig`` holds policy (issuer, protected resource, scopes, lifetimes, bounds) and the upstream
profile. ``Context`` adds what changes per request and must not come from globals in a sans-IO core:
the clock reading, the random source and the key material (spec/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .bounds import Bounds
from .browser_binding import origin_of
from .consent_theme import ConsentTheme
from .crypto import RandomSource
from .keys import Keyring
from .records import Client
from .resources import canonical_resource
from .upstream import UpstreamProfile
from .url_policy import issuer_problem


def _tuple(v: Iterable[str]) -> tuple[str, ...]:
    return tuple(v)


def _clients(v: Iterable[Client]) -> tuple[Client, ...]:
    return tuple(v)


def _check_issuer(_inst: object, _a: attrs.Attribute[str], value: str) -> None:
    # RFC 8414 §2 and spec/interop.md §Discovery, decided in url_policy.issuer_problem.
    problem = issuer_problem(value)
    if problem is not None:
        raise ValueError(f"issuer {problem}")


@attrs.frozen(kw_only=True)
class Lifetimes:
    """Seconds. Defaults follow OAuth 2.1 §4.1.2 (codes short-lived; at most 10 minutes here)."""

    transaction: int = 600
    code: int = attrs.field(default=120)
    access_token: int = 3600
    refresh_token: int = 30 * 24 * 3600
    refresh_grace: int = 30
    consent_memory: int = 30 * 24 * 3600
    browser_cookie: int = 30 * 24 * 3600
    #: A registered client is forgotten this long after its last use (spec/security.md 28); one never
    #: used, after ``Bounds.unused_registration_lifetime``.
    client: int = 90 * 24 * 3600

    @code.validator
    def _code_bounded(self, _a: attrs.Attribute[int], value: int) -> None:
        if not 1 <= value <= 600:  # spec/security.md 9
            raise ValueError("code lifetime must be between 1 and 600 seconds")


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
    #: The consent page's look: product name, logo, colours, extra text or a full template
    #: (``[consent]``; validated in consent_theme.py so no value can inject HTML or CSS).
    consent_theme: ConsentTheme = attrs.field(factory=ConsentTheme)
    resource: str = attrs.field(init=False)
    secure_cookies: bool = attrs.field(init=False)
    #: The issuer's origin (RFC 6454 §6.2): a consent POST without Fetch Metadata must carry it.
    issuer_origin: str = attrs.field(init=False)
    _static_by_id: dict[str, Client] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.mcp_path.startswith("/") or (
            self.mcp_path.endswith("/") and self.mcp_path != "/"
        ):
            raise ValueError("mcp_path must start with '/' and not end with '/'")
        object.__setattr__(self, "resource", canonical_resource(self.issuer + self.mcp_path))
        object.__setattr__(self, "secure_cookies", self.issuer.startswith("https://"))
        object.__setattr__(self, "issuer_origin", origin_of(self.issuer))
        if not set(self.default_scopes) <= set(self.scopes_supported):
            raise ValueError("default_scopes must be a subset of scopes_supported")
        by_id = {c.client_id: c for c in self.static_clients}
        if len(by_id) != len(self.static_clients):
            raise ValueError("static client ids must be distinct")
        object.__setattr__(self, "_static_by_id", by_id)

    def static_client(self, client_id: str) -> Client | None:
        """The pre-registered client with this id, if any."""
        return self._static_by_id.get(client_id)

    @property
    def callback_url(self) -> str:
        return self.issuer + self.callback_path

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"


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
