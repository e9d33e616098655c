"""Client lookup: the one place that turns a ``client_id`` into a ``Client``.

Three sources, tried in this order:

1. pre-registered clients from the configuration (``ProxyConfig.static_clients``; no store access);
2. Client ID Metadata Documents, when ``client_id`` is an https URL and CIMD is enabled: the cached
   document, else a fetch (``cimd.fetch_document``), validated on every load by
   ``cimd.client_from_document`` so a rule can never be skipped by a cache hit;
3. dynamically registered clients, the store's ``"client"`` records (RFC 7591).

Every endpoint that needs a client (authorize, consent, token and revocation authentication, RFC
7592 management) asks here, so the three kinds of clients are treated alike.

The ``[clients]`` admission policy (admission.py) is applied here, at every lookup: CIMD off, a
document host not allowed (decided before any fetch), a redirect URI host not listed, a registered
client while registration is off. ``find_client`` returns the ``Refusal``; ``admitted_client``
raises it as ``invalid_client`` with its reason (client authentication, the authorization page);
``load_client`` answers ``None`` for it as for an unknown client (consent and the callback end the
transaction as for a removed client). Each refusal is emitted as ``ClientRefused`` (audited and
counted). Static clients are checked once, when the configuration is built (config.py).

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
from .admission import CIMD_DISABLED, REGISTRATION_CLOSED, Refusal
from .cimd import (
    CLIENT_METADATA,
    CimdDocumentError,
    client_from_document,
    fetch_document,
    looks_like_cimd,
)
from .config import Context, ProxyConfig
from .domain_events import ClientRefused
from .effects import Emit, Handler
from .errors import InvalidClientError
from .records import Client
from .url_policy import document_url_problem


def load_client(client_id: str, ctx: Context) -> Handler[Client | None]:
    """The active, admitted client named ``client_id``, or ``None`` (unknown, invalid, unreachable
    or refused by the admission policy)."""
    found = yield from find_client(client_id, ctx)
    return found if isinstance(found, Client) else None


def admitted_client(client_id: str, ctx: Context) -> Handler[Client | None]:
    """Like ``load_client``, but a client the admission policy refuses raises ``InvalidClientError``
    whose description says why (fixed words, never the refused value)."""
    found = yield from find_client(client_id, ctx)
    if isinstance(found, Refusal):
        raise InvalidClientError(f"client not admitted: {found.reason}")
    return found


def find_client(client_id: str, ctx: Context) -> Handler[Client | Refusal | None]:
    """The active client named ``client_id``; the ``Refusal`` of the admission policy (emitted as
    ``ClientRefused``); or ``None`` for an unknown, invalid or unreachable one."""
    found = yield from _find(client_id, ctx)
    if isinstance(found, Refusal):
        yield Emit(event=ClientRefused(client_id=client_id, cause=found.cause, at="lookup"))
    return found


def _find(client_id: str, ctx: Context) -> Handler[Client | Refusal | None]:
    if not client_id:
        return None
    cfg = ctx.config
    static = cfg.static_client(client_id)
    if static is not None:
        return static
    if looks_like_cimd(client_id, allow_loopback=True):
        # A URL is never a generated id (those are base64url), so it never reaches the store.
        if not cfg.cimd_enabled:
            return Refusal(CIMD_DISABLED)
        if not looks_like_cimd(client_id, allow_loopback=cfg.cimd_allow_loopback):
            return None
        return (yield from load_cimd_client(client_id, ctx))
    client = yield from persistence.load("client", client_id, Client)
    if client is None or client.state != "active":
        return None
    if not cfg.admission.dcr:
        return Refusal(REGISTRATION_CLOSED)
    return cfg.admission.redirect_refusal(client.redirect_uris) or client


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


def load_cimd_client(url: str, ctx: Context) -> Handler[Client | Refusal | None]:
    """A CIMD client: the URL's rules, then the admission policy's host lists (nothing fetched for a
    refused host), then the document (cached or fetched) and its rules, then its redirect hosts."""
    cfg = ctx.config
    if document_url_problem(url, allow_loopback=cfg.cimd_allow_loopback) is not None:
        return None
    refused = cfg.admission.document_refusal(url)
    if refused is not None:
        return refused
    document = yield from fetch_document(
        url, now=ctx.now, purpose=CLIENT_METADATA, bounds=cfg.bounds, source=ctx.source
    )
    if document is None:
        return None
    try:
        client = client_from_document(
            document,
            url,
            now=ctx.now,
            supported_scopes=cfg.scopes_supported,
            allow_loopback=cfg.cimd_allow_loopback,
        )
    except CimdDocumentError:
        return None
    return cfg.admission.redirect_refusal(client.redirect_uris) or client
