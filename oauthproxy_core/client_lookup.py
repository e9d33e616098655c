"""Client lookup: the one place that turns a ``client_id`` into a ``Client``.

Three sources, tried in this order:

1. pre-registered clients from the configuration (``ProxyConfig.static_clients``; no store access);
2. Client ID Metadata Documents, when ``client_id`` is an https URL and CIMD is enabled: the cached
   document, else a fetch (``cimd.fetch_document``), validated on every load by
   ``cimd.client_from_document`` so a rule can never be skipped by a cache hit;
3. dynamically registered clients, the store's ``"client"`` records (RFC 7591).

Every endpoint that needs a client (authorize, consent, token and revocation authentication, RFC
7592 management) asks here, so the three kinds of clients are treated alike.

A registered client's record expires ``Bounds.unused_registration_lifetime`` (6 hours) after its
registration until tokens are first issued to it, and ``Lifetimes.client`` (90 days) after its last
use from then on, so a registration that never completes a flow is soon forgotten and open
registration is bounded in storage by its total rate times that short life, not by refusing a busy
address (spec/security.md 28 "registration lifetime when unused", 35); one in use never disappears under
its users: ``touch_client`` renews the record when the token endpoint issues tokens to it, the
first time at once and then at most once per ``TOUCH_INTERVAL``.
"""

from __future__ import annotations

from . import persistence
from .cimd import (
    CLIENT_METADATA,
    CimdDocumentError,
    client_from_document,
    fetch_document,
    looks_like_cimd,
)
from .config import Context, ProxyConfig
from .effects import Handler
from .records import Client
from .url_policy import document_url_problem


def load_client(client_id: str, ctx: Context) -> Handler[Client | None]:
    """The active client named ``client_id``, or ``None`` (unknown, invalid or unreachable)."""
    if not client_id:
        return None
    cfg = ctx.config
    static = cfg.static_client(client_id)
    if static is not None:
        return static
    if looks_like_cimd(client_id, allow_loopback=True):
        # A URL is never a generated id (those are base64url), so it never reaches the store.
        if not cfg.cimd_enabled or not looks_like_cimd(
            client_id, allow_loopback=cfg.cimd_allow_loopback
        ):
            return None
        return (yield from load_cimd_client(client_id, ctx))
    client = yield from persistence.load("client", client_id, Client)
    if client is None or client.state != "active":
        return None
    return client


#: A used registration is renewed at most this often: one store write per client per day.
TOUCH_INTERVAL = 24 * 3600


def registration_expires_at(client: Client, config: ProxyConfig) -> int:
    """When a registered client's record expires: the short unused lifetime after registration
    until it is first used, then ``Lifetimes.client`` after its last use."""
    if client.last_used_at is None:
        unused = min(config.bounds.unused_registration_lifetime, config.lifetimes.client)
        return client.issued_at + unused
    return max(client.issued_at, client.last_used_at) + config.lifetimes.client


def touch_client(client: Client, ctx: Context) -> Handler[None]:
    """Record a use of a registered client, renewing its record's lifetime (spec/security.md 28).

    Only DCR clients live in the store. The first use is written at once (it turns the short unused
    lifetime into the full one); later ones only when the last recorded use is ``TOUCH_INTERVAL``
    old (or a quarter of a shorter lifetime). Losing the compare-and-set to a concurrent update is
    harmless: that writer, or the next use, renews the record.
    """
    if client.source != "dcr":
        return
    lifetime = ctx.config.lifetimes.client
    if client.last_used_at is not None:
        last = max(client.issued_at, client.last_used_at)
        if ctx.now - last < min(TOUCH_INTERVAL, max(1, lifetime // 4)):
            return
    yield from persistence.replace(
        "client", client.client_id, client, lifetime, last_used_at=ctx.now
    )


def load_cimd_client(url: str, ctx: Context) -> Handler[Client | None]:
    cfg = ctx.config
    if document_url_problem(url, allow_loopback=cfg.cimd_allow_loopback) is not None:
        return None
    document = yield from fetch_document(
        url, now=ctx.now, purpose=CLIENT_METADATA, bounds=cfg.bounds, source=ctx.source
    )
    if document is None:
        return None
    try:
        return client_from_document(
            document,
            url,
            now=ctx.now,
            supported_scopes=cfg.scopes_supported,
            allow_loopback=cfg.cimd_allow_loopback,
        )
    except CimdDocumentError:
        return None
