"""Bounds on the unauthenticated endpoints (SECURITY.md 28; RFC 7591 §5 and RFC 9700 §4.15 on abuse).

Registration and authorization are open to anyone, so each is counted in fixed time windows: per
source address and in total for registrations, per source address, per client and in total for
authorization requests (each of which creates a pending transaction; the window equals the
transaction lifetime, so the count bounds how many can be pending). The per-address authorization
bound is checked first and set below the per-client one, so that one address alone cannot use up the
slots of a client that many users share (a Client ID Metadata Document client). Past a bound the
answer is 429 with ``Retry-After`` (a ``temporarily_unavailable`` redirect at the authorization
endpoint); nothing stored is touched.

The source address is what the adapter trusts (``Request.remote_addr``): ``oauthproxy serve`` takes
it from ``X-Forwarded-For`` only when the peer is listed in ``[server] forwarded_allow_ips``.

A counter is a record whose store *version* is the count: the first increment inserts it (compare-and-
set on version 0), later ones compare-and-set on the version read. That makes every increment atomic
in every store with the same five operations, and the window's TTL reclaims it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import attrs

from .crypto import digest
from .effects import CompareAndSet, GetRecord, Stored
from .errors import TemporarilyUnavailableError, TooManyRequestsError

KIND = "bound"
_ATTEMPTS = 8
_UNREAD = object()


@attrs.frozen(kw_only=True)
class Bounds:
    """Limits per window. Defaults suit one proxy serving many users; tune in the config."""

    registrations_per_address: int = attrs.field(default=20)
    registrations_total: int = 2_000
    registration_window: int = 3600
    authorizations_per_address: int = 32
    authorizations_per_client: int = 64
    authorizations_total: int = 20_000

    @registrations_per_address.validator
    def _positive(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise ValueError(f"{attribute.name} must be >= 1")

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Bounds):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be an integer >= 1")


@attrs.frozen
class Slot:
    """One counter a request must fit in: ``limit`` events of ``(name, subject)`` per ``window``."""

    name: str
    subject: str
    limit: int
    window: int


def _key(name: str, subject: str, window: int, now: int) -> tuple[str, int]:
    start = now - now % window
    return f"{name}:{start}:{digest(subject)}", max(start + window - now, 1)


def take_slots(slots: Sequence[Slot], *, now: int) -> Generator[Any, Any, None]:
    """Count one event in every slot, or raise 429 having created no counter.

    All counters are read before any is incremented, and a request that does not fit in one of them
    is refused there. Incrementing them one by one instead would create the per-address (or
    per-host) counter of a request that the total bound then refuses: a flood from ever new
    addresses -- IPv6 gives an attacker plenty -- would add one record per request long after the
    total was reached, and the store would grow without bound. This way a counter is created only
    for a request that fitted everywhere, so per window there are at most as many as the total
    allows (plus the requests racing between the two passes).
    """
    read: list[Stored | None] = []
    for slot in slots:
        key, retry_after = _key(slot.name, slot.subject, slot.window, now)
        stored = yield GetRecord(kind=KIND, key=key)
        if stored is not None and stored.version >= slot.limit:
            raise TooManyRequestsError("too many requests; retry later", retry_after=retry_after)
        read.append(stored)
    for slot, stored in zip(slots, read, strict=True):
        yield from take_slot(
            slot.name, slot.subject, limit=slot.limit, window=slot.window, now=now, read=stored
        )


def take_slot(
    name: str,
    subject: str,
    *,
    limit: int,
    window: int,
    now: int,
    read: Stored | object | None = _UNREAD,
) -> Generator[Any, Any, None]:
    """Count one event for ``(name, subject)`` in the current window, or raise 429.

    ``read`` is the counter as the caller just read it, which saves the first read.
    """
    key, retry_after = _key(name, subject, window, now)
    for attempt in range(_ATTEMPTS):
        if attempt == 0 and read is not _UNREAD:
            stored = read if isinstance(read, Stored) else None
        else:
            stored = yield GetRecord(kind=KIND, key=key)
        count = 0 if stored is None else stored.version
        if count >= limit:
            raise TooManyRequestsError("too many requests; retry later", retry_after=retry_after)
        ok = yield CompareAndSet(
            kind=KIND, key=key, expected_version=count, value=b"", ttl=retry_after + 1
        )
        if ok:
            return
    raise TemporarilyUnavailableError("busy; retry shortly", retry_after=1)
