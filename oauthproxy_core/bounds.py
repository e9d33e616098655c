"""Bounds on the unauthenticated endpoints (SECURITY.md 28; RFC 7591 §5 and RFC 9700 §4.15 on abuse).

Registration and authorization are open to anyone, so each is counted in fixed time windows: per
source address and in total for registrations, per client and in total for authorization requests
(each of which creates a pending transaction; the window equals the transaction lifetime, so the count
bounds how many can be pending). Past a bound the answer is 429 with ``Retry-After``; nothing stored
is touched.

A counter is a record whose store *version* is the count: the first increment inserts it (compare-and-
set on version 0), later ones compare-and-set on the version read. That makes every increment atomic
in every store with the same five operations, and the window's TTL reclaims it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import attrs

from .crypto import digest
from .effects import CompareAndSet, GetRecord
from .errors import TemporarilyUnavailableError, TooManyRequestsError

KIND = "bound"
_ATTEMPTS = 8


@attrs.frozen(kw_only=True)
class Bounds:
    """Limits per window. Defaults suit one proxy serving many users; tune in the config."""

    registrations_per_address: int = attrs.field(default=20)
    registrations_total: int = 2_000
    registration_window: int = 3600
    authorizations_per_client: int = 64
    authorizations_total: int = 20_000

    @registrations_per_address.validator
    def _positive(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise ValueError(f"{attribute.name} must be >= 1")


def take_slot(
    name: str, subject: str, *, limit: int, window: int, now: int
) -> Generator[Any, Any, None]:
    """Count one event for ``(name, subject)`` in the current window, or raise 429."""
    start = now - now % window
    key = f"{name}:{start}:{digest(subject)}"
    retry_after = max(start + window - now, 1)
    for _ in range(_ATTEMPTS):
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
