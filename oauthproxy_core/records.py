"""Persisted records: clients, authorization transactions, grants, consent decisions.

Every record is a frozen attrs class validated at construction (h11 ``_events.py`` style: a record
that exists is well-formed) and carries ``state`` and ``version``; the version is the store's
compare-and-set token (spec/architecture.md, "Storage contract"). Secret material never appears here in
plaintext (spec/security.md 24): secrets are stored as SHA-256 digests, upstream tokens and the upstream
PKCE verifier as AEAD-sealed strings. Such fields are excluded from ``repr`` and ``eq``.

Records are encoded by ``codec.py``, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .states import DeviceState, GrantState, TxState


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _pairs(value: Iterable[Iterable[str]]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in value:
        k, v = item
        out.append((str(k), str(v)))
    return tuple(out)


def _secret(default: Any = None) -> Any:
    return attrs.field(default=default, repr=False, eq=False)


def _positive_version(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError("version must be >= 1")


@attrs.frozen(kw_only=True)
class Client:
    """A registered client (RFC 7591 §3.2.1): DCR-registered, static, or resolved from CIMD."""

    client_id: str
    state: str = "active"
    version: int = attrs.field(default=1, validator=_positive_version)
    secret_hash: str | None = _secret()
    token_endpoint_auth_method: str
    redirect_uris: tuple[str, ...] = attrs.field(converter=_tuple)
    grant_types: tuple[str, ...] = attrs.field(converter=_tuple)
    scope: tuple[str, ...] = attrs.field(converter=_tuple, default=())
    client_name: str | None = None
    application_type: str = "web"
    source: str = "dcr"
    #: The full registration metadata as echoed (RFC 7591 §3.2.1), JSON-encoded values.
    metadata: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs, default=())
    issued_at: int
    #: SHA-256 of the RFC 7592 registration access token (DCR clients only).
    registration_token_hash: str | None = _secret()
    #: When tokens were last issued to this client, recorded at most once a day
    #: (``client_lookup.touch_client``); ``None`` before the first use. spec/security.md 28: a DCR
    #: registration lives ``Bounds.unused_registration_lifetime`` after registration while unused,
    #: and ``Lifetimes.client`` after its last use once used.
    last_used_at: int | None = None
    #: The identity the tokens of the client credentials grant carry (RFC 6749 §4.4: the client
    #: acts on its own behalf), e.g. ``service:ci-bot``. Pre-registered clients only
    #: (``[[clients.static]] subject``); ``None``: the client cannot use that grant.
    subject: str | None = attrs.field(default=None)

    @redirect_uris.validator
    def _check_redirects(self, _a: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        # RFC 6749 §3.1.2: redirection belongs to the grants that send a browser somewhere; a
        # client that only uses the client credentials grant (§4.4) has none to register.
        if not value and "authorization_code" in self.grant_types:
            raise ValueError("a client of the authorization code grant needs a redirect URI")

    @subject.validator
    def _check_subject(self, _a: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and (
            not value or len(value) > 255 or not value.isprintable() or value != value.strip()
        ):
            raise ValueError("subject must be 1 to 255 printable characters")


@attrs.frozen(kw_only=True)
class Transaction:
    """One authorization transaction, from the client's request to the code's redemption.

    ``state`` is a ``TxState`` value; every change goes through ``states.advance`` and is persisted
    with a compare-and-set on ``version``.
    """

    id: str
    state: str = attrs.field(validator=attrs.validators.in_(frozenset(s.value for s in TxState)))
    version: int = attrs.field(default=1, validator=_positive_version)
    client_id: str
    redirect_uri: str
    #: Whether ``redirect_uri`` was sent explicitly (RFC 6749 §4.1.3 ties the token request to it).
    redirect_uri_sent: bool = True
    #: The client's ``state`` parameter, returned byte for byte (spec/security.md 4).
    client_state: str | None = None
    code_challenge: str
    scopes: tuple[str, ...] = attrs.field(converter=_tuple)
    resource: str
    created_at: int
    expires_at: int
    #: SHA-256 of the browser-binding cookie value set when consent was approved (spec/security.md 11).
    browser_hash: str | None = _secret()
    #: SHA-256 of the upstream ``state`` (spec/security.md 11, 24).
    upstream_state_hash: str | None = _secret()
    #: The proxy's own upstream PKCE verifier, sealed (spec/security.md 7, 24).
    upstream_verifier_sealed: str | None = _secret()
    #: SHA-256 of the proxy's authorization code once issued.
    code_hash: str | None = _secret()
    code_expires_at: int | None = None
    grant_id: str | None = None
    subject: str | None = None
    claims: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs, default=())
    #: The groups the ``[access]`` decision saw, forwarded to the MCP server (access.py).
    groups: tuple[str, ...] = attrs.field(converter=_tuple, default=())
    #: Upstream tokens, sealed; moved into the grant at redemption.
    upstream_sealed: str | None = _secret()
    #: The device authorization this sign-in completes (RFC 8628 §3.3); ``None`` for the code flow.
    #: Such a transaction never issues a code: its result goes to the device record.
    device_id: str | None = None


@attrs.frozen(kw_only=True)
class Grant:
    """A refresh-token family (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2): one consent, many rotations."""

    id: str
    state: str = attrs.field(
        default=GrantState.active.value,
        validator=attrs.validators.in_(frozenset(s.value for s in GrantState)),
    )
    version: int = attrs.field(default=1, validator=_positive_version)
    client_id: str
    subject: str
    scopes: tuple[str, ...] = attrs.field(converter=_tuple)
    resource: str
    claims: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs, default=())
    #: The groups the last ``[access]`` decision saw (access.py).
    groups: tuple[str, ...] = attrs.field(converter=_tuple, default=())
    created_at: int
    #: The sliding expiry: ``Lifetimes.refresh_token`` after the last rotation, never past
    #: ``absolute_expires_at``.
    expires_at: int
    #: The hard end of the family, ``Lifetimes.refresh_absolute`` after the first consent; ``0``
    #: for a grant stored before the cap existed (then ``expires_at`` alone bounds it).
    absolute_expires_at: int = 0
    #: When the provider last confirmed the user (sign-in, or re-validation at refresh); ``0``:
    #: at ``created_at``.
    confirmed_at: int = 0
    #: A re-validation in progress holds the grant until then (one at a time, on every instance).
    revalidating_until: int = 0
    generation: int = 1
    #: SHA-256 of the current refresh token's secret part.
    refresh_hash: str = _secret("")
    #: SHA-256 of the previous refresh token, answered idempotently until ``grace_until``.
    previous_hash: str | None = _secret()
    grace_until: int = 0
    #: The sealed response that rotated ``previous_hash`` (returned again on a retry, invariant 20).
    previous_response_sealed: str | None = _secret()
    #: Hashes of older generations: presenting one is reuse and revokes the family.
    retired_hashes: tuple[str, ...] = attrs.field(
        converter=_tuple, default=(), repr=False, eq=False
    )
    upstream_sealed: str | None = _secret()


@attrs.frozen(kw_only=True)
class DeviceAuthorization:
    """One device authorization request (RFC 8628 §3.1-3.5), from the device code's issue to its
    one redemption. Stored under its ``id``; the device code and the user code are found through
    index records keyed by their digest and MAC (``handlers/device.py``), never stored themselves.
    """

    id: str
    state: str = attrs.field(
        validator=attrs.validators.in_(frozenset(s.value for s in DeviceState))
    )
    version: int = attrs.field(default=1, validator=_positive_version)
    client_id: str
    scopes: tuple[str, ...] = attrs.field(converter=_tuple)
    resource: str
    created_at: int
    expires_at: int
    #: RFC 8628 §3.2 ``interval``: the least number of seconds between two polls (grows on
    #: ``slow_down``).
    interval: int = attrs.field()
    #: When the client last polled; ``0``: never.
    last_polled_at: int = 0
    #: MAC of the user code (``user_codes.user_code_key``), so the verification page can end it.
    user_code_key: str = _secret("")
    #: The transaction started from the user code (``user_code_entered``).
    txn_id: str | None = None
    #: Set on approval: the identity and the grant the redemption creates.
    grant_id: str | None = None
    subject: str | None = None
    claims: tuple[tuple[str, str], ...] = attrs.field(converter=_pairs, default=())
    groups: tuple[str, ...] = attrs.field(converter=_tuple, default=())
    upstream_sealed: str | None = _secret()

    @interval.validator
    def _check_interval(self, _a: attrs.Attribute[int], value: int) -> None:
        if not 1 <= value <= 3600:
            raise ValueError("interval must be 1 to 3600 seconds")


@attrs.frozen(kw_only=True)
class ConsentDecision:
    """A remembered approval: exactly (client, redirect URI, scopes, resource) for one browser."""

    client_id: str
    state: str = "approved"
    version: int = attrs.field(default=1, validator=_positive_version)
    redirect_uri: str
    scopes: tuple[str, ...] = attrs.field(converter=_tuple)
    resource: str
    decided_at: int
    expires_at: int
