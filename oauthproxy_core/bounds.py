"""Bounds on the unauthenticated endpoints (spec/security.md 28 and 35; RFC 7591 §5 and RFC 9700 §4.15).

Registration, authorization and metadata-document fetches are open to anyone, so each is counted in
fixed time windows, per *source* and in total:

- registrations per source and in total (``registration_window``);
- authorization requests per source and in total, counted when the request arrives, before the
  client is looked up or its metadata document fetched, so a flood of made-up client ids costs its
  sender its own budget and nothing else; and the pending transactions of one client per source
  (the window equals the transaction lifetime, so the counts bound how many can be pending). A
  client that thousands of users share (a Client ID Metadata Document client) therefore has no
  bucket that a few sources can fill for everyone (spec/security.md 35);
- metadata-document fetches per source, per document host and in total (``cimd.fetch_document``).

A *source* is an address prefix (``source_key``): an IPv4 address (``ipv4_prefix``, default /32)
or an IPv6 /64 (``ipv6_prefix``): one subscriber or one data-centre host gets a whole /64, so
counting single IPv6 addresses would give one machine 2^64 budgets and let it use up every total.
The per-source budgets are large enough for a busy shared address (an office NAT, a web-based MCP
host registering for all its users, spec/interop.md) and the totals are what bound storage, together with
the short life of a registration that never completes a flow (``unused_registration_lifetime``).

Past a bound the answer is 429 with ``Retry-After`` (503 ``temporarily_unavailable`` where the bound
is shared by everyone, and a ``temporarily_unavailable`` redirect where the authorization endpoint
has validated the redirect URI); nothing stored is touched.

The source address is what the adapter trusts (``Request.remote_addr``): ``oauthproxy serve`` takes
it from ``X-Forwarded-For`` only when the peer is listed in ``[server] forwarded_allow_ips``.

A counter is a record whose store *version* is the count: the first increment inserts it (compare-and-
set on version 0), later ones compare-and-set on the version read. That makes every increment atomic
in every store with the same five operations, and the window's TTL reclaims it.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from typing import NoReturn

import attrs

from .crypto import digest
from .effects import CompareAndSet, GetRecord, Handler, Stored
from .errors import TemporarilyUnavailableError, TooManyRequestsError

KIND = "bound"
_ATTEMPTS = 8
_UNREAD = object()


@attrs.frozen(kw_only=True)
class Bounds:
    """Limits per window (``[limits]``). The defaults, and why, are in ``config_reference.py``."""

    registrations_per_address: int = 500
    registrations_total: int = 5_000
    registration_window: int = 3600
    #: Seconds a registration lives until tokens are first issued to it (then ``Lifetimes.client``).
    unused_registration_lifetime: int = 6 * 3600
    authorizations_per_address: int = 256
    #: Per client *and source*: no few sources can fill a shared client's bucket (spec/security.md 35).
    authorizations_per_client: int = 128
    authorizations_total: int = 20_000
    document_fetches_per_address: int = 30
    document_fetches_per_host: int = 60
    document_fetches_total: int = 2_000
    document_fetch_window: int = 300
    #: Applied by the adapter's safe fetcher: its own resolver threads, and a lookup that finds them
    #: all busy fails at once (``oauthproxy_adapters.safe_fetch``).
    document_lookups_in_flight: int = 8
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Bounds):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be an integer >= 1")

    def source(self, remote_addr: str) -> str:
        """The source ``remote_addr`` is counted as: its address prefix (see ``source_key``)."""
        return source_key(remote_addr, ipv4_prefix=self.ipv4_prefix, ipv6_prefix=self.ipv6_prefix)


@functools.lru_cache(maxsize=4096)
def source_key(remote_addr: str, *, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The network ``remote_addr`` belongs to, as the per-source bounds count it.

    IPv4 by ``ipv4_prefix`` bits, IPv6 by ``ipv6_prefix`` bits (RFC 6177 and RIPE-690: a site or a
    host is given a /64 or more, so one machine can send from 2^64 addresses). An IPv4-mapped IPv6
    address (``::ffff:192.0.2.1``, a dual-stack socket's view of an IPv4 peer) counts as its IPv4
    address. A prefix longer than the address counts single addresses. Anything else that names a
    peer is counted as given; an unknown peer (empty: a Unix socket, an embedding that passes no
    address) gives ``""``, which per-source slots skip (``per_source``): one bucket for every
    unknown peer would let any of them lock out all the others. Memoised: it runs several times a
    request, and parsing an IPv6 address costs tens of microseconds.
    """
    try:
        ip = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return remote_addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    width = ip.max_prefixlen
    bits = min(ipv4_prefix if ip.version == 4 else ipv6_prefix, width)
    network = int(ip) >> (width - bits) << (width - bits)
    return f"{type(ip)(network)}/{bits}"


def per_source(source: str, *scope: str) -> str:
    """The subject of a per-source slot (``scope`` narrows it, e.g. to one client), or ``""`` for an
    unknown source: ``take_slots`` skips a slot without a subject, so only the totals count it."""
    return "\x1f".join((*scope, source)) if source else ""


@attrs.frozen
class Slot:
    """One counter a request must fit in: ``limit`` events of ``(name, subject)`` per ``window``.

    ``shared``: the counter protects everyone (a total, a document host), so a refusal says the
    server is busy (503 ``temporarily_unavailable``) rather than that the caller is too fast (429).
    """

    name: str
    subject: str
    limit: int
    window: int
    shared: bool = False


def _key(name: str, subject: str, window: int, now: int) -> tuple[str, int]:
    start = now - now % window
    return f"{name}:{start}:{digest(subject)}", max(start + window - now, 1)


def _refuse(slot: Slot, retry_after: int) -> NoReturn:
    if slot.shared:
        raise TemporarilyUnavailableError("busy; retry later", retry_after=retry_after)
    raise TooManyRequestsError("too many requests; retry later", retry_after=retry_after)


def take_slots(slots: Sequence[Slot], *, now: int) -> Handler[None]:
    """Count one event in every slot, or raise 429 (503 for a shared slot) having created no counter.

    All counters are read before any is incremented, and a request that does not fit in one of them
    is refused there. Incrementing them one by one instead would create the per-address (or
    per-host) counter of a request that the total bound then refuses: a flood from ever new
    addresses -- IPv6 gives an attacker plenty -- would add one record per request long after the
    total was reached, and the store would grow without bound. This way a counter is created only
    for a request that fitted everywhere, so per window there are at most as many as the total
    allows (plus the requests racing between the two passes).
    """
    slots = [slot for slot in slots if slot.subject]  # per_source: an unknown source
    read: list[Stored | None] = []
    for slot in slots:
        key, retry_after = _key(slot.name, slot.subject, slot.window, now)
        stored = yield GetRecord(kind=KIND, key=key)
        if stored is not None and stored.version >= slot.limit:
            _refuse(slot, retry_after)
        read.append(stored)
    for slot, stored in zip(slots, read, strict=True):
        yield from take_slot(slot, now=now, read=stored)


def take_slot(slot: Slot, *, now: int, read: Stored | object | None = _UNREAD) -> Handler[None]:
    """Count one event in ``slot``'s current window, or raise 429 (503 for a shared slot).

    ``read`` is the counter as the caller just read it, which saves the first read.
    """
    if not slot.subject:  # per_source: an unknown source
        return
    key, retry_after = _key(slot.name, slot.subject, slot.window, now)
    for attempt in range(_ATTEMPTS):
        if attempt == 0 and read is not _UNREAD:
            stored = read if isinstance(read, Stored) else None
        else:
            stored = yield GetRecord(kind=KIND, key=key)
        count = 0 if stored is None else stored.version
        if count >= slot.limit:
            _refuse(slot, retry_after)
        ok = yield CompareAndSet(
            kind=KIND, key=key, expected_version=count, value=b"", ttl=retry_after + 1
        )
        if ok:
            return
    raise TemporarilyUnavailableError("busy; retry shortly", retry_after=1)


def check_slots(slots: Sequence[Slot], *, now: int) -> Handler[None]:
    """Raise 429 (503 for a shared slot) if any slot is full, counting nothing.

    For bounds that count failures only (the device grant's mistyped user codes): the request is
    checked here before it is tried, and counted with ``take_slots`` only if it fails, so a busy
    shared address is charged for its mistakes and not for its sign-ins (spec/security.md 35).
    """
    for slot in slots:
        if not slot.subject:  # per_source: an unknown source
            continue
        key, retry_after = _key(slot.name, slot.subject, slot.window, now)
        stored = yield GetRecord(kind=KIND, key=key)
        if stored is not None and stored.version >= slot.limit:
            _refuse(slot, retry_after)
