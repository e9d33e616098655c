"""Audit events: one structured JSON line per domain event the core emits.

The core cannot log (it is pure); it tells what happened with the ``Emit`` effect
(``oauthproxy_core.domain_events``), and this module writes each such event on the
``oauthproxy.audit`` logger (JSON, one object per line, INFO level):

======================  ============================================================================
``transaction``         an authorization transaction was created or took a transition (``state``:
                        ``pkce_bound``, ``upstream_pending``, ``code_issued``, ``exchanged``,
                        ``failed``, ``denied``, ``expired``, ``revoked``; ``cause``: the machine event,
                        e.g. ``deadline_passed``), with ``outcome`` ``applied`` or ``conflict`` (a
                        concurrent request won the compare-and-set)
``client_registered``   a client was registered
``grant_issued``        a refresh family was created at code redemption
``token_issued``        an access token was issued by a grant without a refresh family of its own,
                        named by ``grant_type`` (``client_credentials``: a pre-registered machine
                        client, whose ``subject`` is its configured identity); ``new_grant``: the
                        request created the client's family (handlers/client_credentials.py)
``grant_rotated``       a refresh token was rotated (``generation``)
``upstream_refreshed``  the user's provider token was refreshed for the grant
``grant_revalidation_`` re-validation at refresh (spec/security.md 33): ``..._started`` (this
``...``                 instance holds the grant), ``grant_revalidated`` (the provider confirmed the
                        user), ``..._deferred`` (the provider could not be asked; nothing revoked)
``grant_revoked``       a family was revoked, with its ``cause`` (``revocation_requested``,
                        ``refresh_replayed``, ``code_replayed``, ``upstream_refused``,
                        ``client_deleted``, ``operator_revoked``: ``oauthproxy grants revoke``;
                        ``access_withdrawn``: the ``[access]`` rules no longer admit the user)
``client_deleted``      a registration was deleted (RFC 7592 §2.3): from now on every grant and
                        access token of the client is refused
``client_refused``      the ``[clients]`` admission policy refused a client (``state``
                        ``refused``; ``cause``: ``registration_closed``, ``cimd_disabled``,
                        ``cimd_host_denied``, ``cimd_host_not_allowed``,
                        ``redirect_host_not_allowed``), ``at`` ``registration`` or ``update``
                        (nothing was written; no ``client_id`` for a registration) or ``lookup``
``access_decision``     the ``[access]`` rules admitted (``state`` ``admitted``, with the ``rule``
                        class that matched) or refused (``refused``) a user, ``when`` ``sign_in``
                        or at ``refresh``; a refused user's ``subject`` is logged here and stored
                        nowhere
``assertion_redeemed``  an enterprise issuer's ID-JAG was exchanged for an access token (``issuer``,
                        ``scopes``); no grant exists, so nothing else records it
======================  ============================================================================

Who and what: ``client_id``, ``subject`` (once known), a short reference to the transaction or grant
(the first 12 characters of the SHA-256 of its id, enough to correlate lines, useless as a
credential). Never a secret: domain events carry none (spec/security.md 24).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from oauthproxy_core.domain_events import (
    AccessDecided,
    AssertionRedeemed,
    ClientDeleted,
    ClientRefused,
    ClientRegistered,
    DeviceChanged,
    DomainEvent,
    GrantChanged,
    GrantIssued,
    TokenIssued,
    TransactionChanged,
)
from oauthproxy_core.effects import Emit

log = logging.getLogger("oauthproxy.audit")


def _ref(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()[:12]


def _outcome(applied: bool) -> str:
    return "applied" if applied else "conflict"


def emit(event: dict[str, Any]) -> None:
    """Write one event (as returned by ``record``) to the ``oauthproxy.audit`` logger."""
    log.info(json.dumps(event, separators=(",", ":"), sort_keys=True))


def enabled() -> bool:
    """Whether the ``oauthproxy.audit`` logger would write an INFO line."""
    return log.isEnabledFor(logging.INFO)


def observe(effect: Any, _result: Any, _seconds: float = 0.0) -> None:
    """Driver observer: writes an audit line for each ``Emit`` effect."""
    if type(effect) is Emit and log.isEnabledFor(logging.INFO):
        emit(record(effect.event))


#: Grant transitions that keep the family active without rotating it, by audit event name.
_NOT_ROTATIONS = {
    "upstream_refreshed": "upstream_refreshed",
    "revalidation_started": "grant_revalidation_started",
    "revalidated": "grant_revalidated",
    "revalidation_deferred": "grant_revalidation_deferred",
}


def record(event: DomainEvent) -> dict[str, Any]:
    """The audit line for a domain event (shared with ``metrics``, so log and counters agree)."""
    if isinstance(event, TransactionChanged):
        return {
            "event": "transaction",
            "txn": _ref(event.txn_id),
            "state": event.state,
            "cause": event.cause,
            "client_id": event.client_id,
            "subject": event.subject,
            "outcome": _outcome(event.applied),
        }
    if isinstance(event, DeviceChanged):
        return {
            "event": "device_authorization",
            "device": _ref(event.device_id),
            "state": event.state,
            "cause": event.cause,
            "client_id": event.client_id,
            "subject": event.subject,
            "outcome": _outcome(event.applied),
        }
    if isinstance(event, GrantChanged):
        if event.state == "revoked":
            name = "grant_revoked"
        elif event.cause in _NOT_ROTATIONS:
            name = _NOT_ROTATIONS[event.cause]
        else:
            name = "grant_rotated"
        line: dict[str, Any] = {
            "event": name,
            "grant": _ref(event.grant_id),
            "cause": event.cause,
            "client_id": event.client_id,
            "subject": event.subject,
            "outcome": _outcome(event.applied),
        }
        if name == "grant_rotated":
            line["generation"] = event.generation
        return line
    if isinstance(event, GrantIssued):
        return {
            "event": "grant_issued",
            "grant_type": event.grant_type,
            "grant": _ref(event.grant_id),
            "client_id": event.client_id,
            "subject": event.subject,
            "scopes": " ".join(event.scopes),
        }
    if isinstance(event, TokenIssued):
        return {
            "event": "token_issued",
            "grant_type": event.grant_type,
            "grant": _ref(event.grant_id),
            "client_id": event.client_id,
            "subject": event.subject,
            "scopes": " ".join(event.scopes),
            "new_grant": event.new_grant,
        }
    if isinstance(event, ClientRegistered):
        return {
            "event": "client_registered",
            "client_id": event.client_id,
            "source": event.source,
            "auth_method": event.auth_method,
        }
    if isinstance(event, ClientDeleted):
        return {"event": "client_deleted", "client_id": event.client_id}
    if isinstance(event, ClientRefused):
        return {
            "event": "client_refused",
            "state": "refused",
            "cause": event.cause,
            "at": event.at,
            "client_id": event.client_id,
        }
    if isinstance(event, AccessDecided):
        return {
            "event": "access_decision",
            "state": "admitted" if event.admitted else "refused",
            "when": event.when,
            "rule": event.rule or "",
            "client_id": event.client_id,
            "subject": event.subject,
        }
    if isinstance(event, AssertionRedeemed):
        return {
            "event": "assertion_redeemed",
            "issuer": event.issuer,
            "client_id": event.client_id,
            "subject": event.subject,
            "scopes": " ".join(event.scopes),
        }
    raise TypeError(f"unknown domain event {type(event).__name__}")
