"""Audit events: one structured JSON line per state change, derived from the core's effects.

The core cannot log (it is pure); every state change it makes is a store effect, so the drivers hand
each executed effect to an observer and this module turns the ones that matter into events on the
``oauthproxy.audit`` logger (JSON, one object per line, INFO level):

=====================  =============================================================================
``transaction``        an authorization transaction was created or changed state (``state``:
                       ``pkce_bound``, ``upstream_pending``, ``code_issued``, ``exchanged``,
                       ``failed``, ``denied``, ``expired``, ``revoked``), with ``outcome``
                       ``applied`` or ``conflict`` (a concurrent request won the compare-and-set)
``client_registered``  a client was registered
``grant_issued``       a refresh family was created at code redemption
``grant_rotated``      a refresh token was rotated (``generation``)
``grant_revoked``      a family was revoked (revocation, code or refresh-token replay, upstream
                       ``invalid_grant``)
=====================  =============================================================================

Who and what: ``client_id``, ``subject`` (once known), a short reference to the transaction or grant
(the first 12 characters of the SHA-256 of its id, enough to correlate lines, useless as a
credential). Never a secret: records hold none in plaintext (SECURITY.md 24) and only the named fields
are copied out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from oauthproxy_core import codec
from oauthproxy_core.effects import CompareAndSet, PutRecord
from oauthproxy_core.records import Client, Grant, Transaction

log = logging.getLogger("oauthproxy.audit")


def _ref(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()[:12]


def emit(event: dict[str, Any]) -> None:
    """Write one event (as returned by ``events``) to the ``oauthproxy.audit`` logger."""
    log.info(json.dumps(event, separators=(",", ":"), sort_keys=True))


def enabled() -> bool:
    """Whether the ``oauthproxy.audit`` logger would write an INFO line."""
    return log.isEnabledFor(logging.INFO)


def observe(effect: Any, result: Any) -> None:
    """Driver observer: called with each executed effect and its result."""
    if not log.isEnabledFor(logging.INFO):
        return
    for event in events(effect, result):
        emit(event)


def events(effect: Any, result: Any) -> list[dict[str, Any]]:
    """The audit events one executed effect stands for (most effects stand for none).

    Shared with ``metrics`` (its transition counters), so the log and the counters agree.
    """
    kind = getattr(effect, "kind", None)
    if type(effect) is CompareAndSet:
        outcome = "applied" if result else "conflict"
        try:
            if kind == "tx":
                tx = codec.decode(effect.value, Transaction)
                return [
                    {
                        "event": "transaction",
                        "txn": _ref(tx.id),
                        "state": tx.state,
                        "client_id": tx.client_id,
                        "subject": tx.subject,
                        "outcome": outcome,
                    }
                ]
            if kind == "client" and effect.expected_version == 0 and result:
                client = codec.decode(effect.value, Client)
                return [
                    {
                        "event": "client_registered",
                        "client_id": client.client_id,
                        "source": client.source,
                        "auth_method": client.token_endpoint_auth_method,
                    }
                ]
            if kind == "grant":
                grant = codec.decode(effect.value, Grant)
                return [
                    {
                        "event": "grant_rotated",
                        "grant": _ref(grant.id),
                        "client_id": grant.client_id,
                        "subject": grant.subject,
                        "generation": grant.generation,
                        "outcome": outcome,
                    }
                ]
        except codec.CorruptRecordError:
            return []
    elif type(effect) is PutRecord:
        if kind == "grant":
            try:
                grant = codec.decode(effect.value, Grant)
            except codec.CorruptRecordError:
                return []
            return [
                {
                    "event": "grant_issued",
                    "grant": _ref(grant.id),
                    "client_id": grant.client_id,
                    "subject": grant.subject,
                    "scopes": " ".join(grant.scopes),
                }
            ]
        if kind == "revoked":
            return [{"event": "grant_revoked", "grant": _ref(effect.key)}]
    return []
