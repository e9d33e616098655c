"""Domain events: what happened, told to observers (the audit log, metrics) by the ``Emit`` effect.

Handlers and ``persistence.commit`` emit these; adapters never reconstruct them from stored bytes.
An event names records by their identifiers and says who and what (client, subject, the machine's
event and the state it led to), and never carries a secret: no code, token, client secret, verifier,
upstream token or sealed value is a field here (spec/security.md 24). Observers that write logs
shorten identifiers further (``audit.py``).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

from .records import Client, DeviceAuthorization, Grant, Transaction
from .states import Step


@attrs.frozen(kw_only=True)
class TransactionChanged:
    """An authorization transaction was created or took a transition."""

    txn_id: str
    client_id: str
    subject: str | None
    #: The machine event applied (``challenge_bound``, ``deadline_passed``, ...).
    cause: str
    state: str
    #: False when a concurrent request won the compare-and-set and this change was not stored.
    applied: bool


@attrs.frozen(kw_only=True)
class DeviceChanged:
    """A device authorization (RFC 8628) was created or took a transition. Names no code: the
    device code and the user code are secrets (spec/security.md 24, 39)."""

    device_id: str
    client_id: str
    subject: str | None
    cause: str
    state: str
    applied: bool


@attrs.frozen(kw_only=True)
class GrantChanged:
    """A refresh-token family took a transition (rotation, upstream refresh, revocation)."""

    grant_id: str
    client_id: str | None
    subject: str | None
    cause: str
    state: str
    generation: int | None
    applied: bool


@attrs.frozen(kw_only=True)
class GrantIssued:
    """A code was redeemed and its refresh-token family created."""

    grant_id: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]
    #: The grant that created the family: ``authorization_code`` or the device code grant.
    grant_type: str = "authorization_code"


@attrs.frozen(kw_only=True)
class TokenIssued:
    """An access token was issued by a grant that creates no refresh-token family of its own:
    ``client_credentials`` (RFC 6749 §4.4, handlers/client_credentials.py). ``grant_id`` is the
    grant the token names for revocation; ``new_grant`` says whether this request created it."""

    grant_type: str
    grant_id: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]
    new_grant: bool


@attrs.frozen(kw_only=True)
class ClientRegistered:
    """A client registered itself (RFC 7591)."""

    client_id: str
    source: str
    auth_method: str


@attrs.frozen(kw_only=True)
class ClientDeleted:
    """A registration was deleted (RFC 7592 §2.3): every grant and access token of the client is
    refused from now on."""

    client_id: str


@attrs.frozen(kw_only=True)
class ClientRefused:
    """The ``[clients]`` admission policy refused a client (admission.py): a registration or an RFC
    7592 update (no record written), or a client looked up at an endpoint (a metadata document
    host not allowed, a redirect URI host not listed, a registered client while registration is
    off)."""

    #: ``None`` for a registration refused before any id was allocated.
    client_id: str | None
    #: ``admission.CAUSES``: ``cimd_host_not_allowed``, ``registration_closed``, ...
    cause: str
    #: ``registration``, ``update`` (RFC 7592 §2.2) or ``lookup``.
    at: str


@attrs.frozen(kw_only=True)
class AccessDecided:
    """The ``[access]`` rules decided about a user (spec/security.md 33), at sign-in or when a grant
    was re-validated at refresh."""

    subject: str
    client_id: str
    admitted: bool
    #: The rule class that admitted the user; ``None`` when refused or no rule exists.
    rule: str | None
    #: ``sign_in`` (the callback) or ``refresh`` (re-validation).
    when: str


@attrs.frozen(kw_only=True)
class AssertionRedeemed:
    """An enterprise issuer's ID-JAG was redeemed for an access token (``handlers/id_jag.py``): no
    grant is stored, so this is the one trace of the access it gave."""

    issuer: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]


DomainEvent: TypeAlias = (
    TransactionChanged
    | DeviceChanged
    | GrantChanged
    | GrantIssued
    | TokenIssued
    | ClientRegistered
    | ClientDeleted
    | ClientRefused
    | AccessDecided
    | AssertionRedeemed
)


def transaction_changed(step: Step[Transaction], *, applied: bool) -> TransactionChanged:
    tx = step.record
    return TransactionChanged(
        txn_id=tx.id,
        client_id=tx.client_id,
        subject=tx.subject,
        cause=step.event.value,
        state=tx.state,
        applied=applied,
    )


def grant_changed(step: Step[Grant], *, applied: bool) -> GrantChanged:
    grant = step.record
    return GrantChanged(
        grant_id=grant.id,
        client_id=grant.client_id,
        subject=grant.subject,
        cause=step.event.value,
        state=grant.state,
        generation=grant.generation,
        applied=applied,
    )


def changed(step: Step[Any], *, applied: bool) -> DomainEvent | None:
    """The event a persisted step stands for, by the kind of record it changed."""
    record = step.record
    if isinstance(record, Transaction):
        return transaction_changed(step, applied=applied)
    if isinstance(record, Grant):
        return grant_changed(step, applied=applied)
    if isinstance(record, DeviceAuthorization):
        return device_changed(step, applied=applied)
    return None


def device_changed(step: Step[DeviceAuthorization], *, applied: bool) -> DeviceChanged:
    device = step.record
    return DeviceChanged(
        device_id=device.id,
        client_id=device.client_id,
        subject=device.subject,
        cause=step.event.value,
        state=device.state,
        applied=applied,
    )


def client_registered(client: Client) -> ClientRegistered:
    return ClientRegistered(
        client_id=client.client_id,
        source=client.source,
        auth_method=client.token_endpoint_auth_method,
    )


def grant_issued(grant: Grant, grant_type: str = "authorization_code") -> GrantIssued:
    return GrantIssued(
        grant_id=grant.id,
        client_id=grant.client_id,
        subject=grant.subject,
        scopes=grant.scopes,
        grant_type=grant_type,
    )
