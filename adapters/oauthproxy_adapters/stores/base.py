"""The record store contract (spec/architecture.md, "Storage contract"), as typing protocols.

Every store (memory, SQLite, Redis) implements :class:`SyncStore` or :class:`AsyncStore`. The
drivers in ``oauthproxy_adapters.driver`` execute the core's store effects
(``oauthproxy_core.effects``) against one of them.

Theory of operation:

* A record is addressed by ``(kind, key)``; ``kind`` is a short identifier (non-empty, no ``":"``,
  so that ``kind + ":" + key`` is unambiguous in stores with one flat key space), ``key`` any string
  (for secrets, a SHA-256 of the secret: spec/security.md 24).
* A record holds opaque ``bytes``, an integer ``version`` (>= 1) and a TTL in whole seconds (>= 1).
  A store never returns an expired record, from any method, however the clock moves (spec/security.md 27:
  "advancing the clock never revives an expired record").
* ``take`` is an atomic get-and-delete: of N concurrent takes of one key at most one sees the value
  (single-use authorization codes, RFC 6749 section 4.1.2, and refresh-token rotation depend on it).
* ``compare_and_set`` replaces the record only if its version equals ``expected_version`` and gives
  it version ``expected_version + 1``; ``expected_version == 0`` means "only if absent" (an expired
  record counts as absent) and yields version 1. Of N concurrent compare-and-sets on one version at
  most one returns ``True``.
* A store whose backend cannot be reached, or answers with errors, raises
  :class:`StoreUnavailableError`; the driver maps it to a 503 ``temporarily_unavailable``. A store
  never hangs: every backend call is bounded by a timeout.

Listing is not part of that contract: no handler ever needs it, and the five methods above are all a
request costs. Operators do need it (``oauthproxy grants list``), so the stores that can list also
implement :class:`ScanningStore` (or :class:`AsyncScanningStore`), a separate protocol that only
administrative code asks for. ``scan(kind)`` yields ``(key, Stored)`` for the live records of one
kind, in no promised order, reading them in bounded batches rather than all at once:

* every record that is live for the whole scan is yielded exactly once;
* a record written, deleted or expiring while the scan runs may or may not be yielded;
* no record that had expired when its batch was read is ever yielded, and no record of another kind.

Every store also reports its size (:class:`SizedStore`, :class:`AsyncSizedStore`): the records it
holds, live or expired and not yet reclaimed, which is what occupies memory or disk and what shows
whether expired records are reclaimed as fast as new ones are written. Counting is O(records) in the
SQL stores and in Redis, so it serves operators (``oauthproxy store status``) and benchmarks, never
a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Protocol, runtime_checkable

from oauthproxy_core.effects import Stored

__all__ = [
    "AsyncScanningStore",
    "AsyncSizedStore",
    "AsyncStore",
    "ScanningStore",
    "SizedStore",
    "StoreFullError",
    "StoreUnavailableError",
    "Stored",
    "SyncStore",
    "check_kind",
    "check_put",
    "check_cas",
]


class StoreUnavailableError(Exception):
    """The store's backend cannot be reached or answered with an error (maps to HTTP 503)."""


class StoreFullError(StoreUnavailableError):
    """A bounded store holds its maximum number of live records and cannot take a new one."""


@runtime_checkable
class SyncStore(Protocol):
    """A blocking record store. Implementations are safe to share between threads."""

    def get(self, kind: str, key: str) -> Stored | None:
        """Return the live record at ``(kind, key)``, or ``None`` if absent or expired."""
        ...

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        """Create or replace the record unconditionally, with the given version and TTL."""
        ...

    def take(self, kind: str, key: str) -> Stored | None:
        """Atomically return and delete the live record (at most one concurrent caller gets it)."""
        ...

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        """Replace the record, at version ``expected_version + 1``, if its version matches.

        ``expected_version == 0`` inserts only if no live record exists. Returns whether it wrote.
        """
        ...

    def delete(self, kind: str, key: str) -> None:
        """Delete the record; deleting an absent record is not an error."""
        ...

    def close(self) -> None:
        """Release the store's resources (connections, file handles)."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asyncio twin of :class:`SyncStore`, with the same semantics."""

    async def get(self, kind: str, key: str) -> Stored | None: ...

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None: ...

    async def take(self, kind: str, key: str) -> Stored | None: ...

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool: ...

    async def delete(self, kind: str, key: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class ScanningStore(Protocol):
    """A :class:`SyncStore` that can also list the live records of one kind (operators only)."""

    def scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        """``(key, record)`` for every live record of ``kind`` (see the module docstring).

        Raises ``ValueError`` for a bad kind at once, and :class:`StoreUnavailableError` while
        iterating when the backend fails.
        """
        ...


@runtime_checkable
class AsyncScanningStore(Protocol):
    """The asyncio twin of :class:`ScanningStore`, with the same semantics."""

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]: ...


@runtime_checkable
class SizedStore(Protocol):
    """A :class:`SyncStore` that reports how many records it holds (operators, benchmarks)."""

    def size(self) -> int:
        """Records held, live or expired and not yet reclaimed."""
        ...


@runtime_checkable
class AsyncSizedStore(Protocol):
    """The asyncio twin of :class:`SizedStore`."""

    async def size(self) -> int: ...


# Argument checks shared by every store, so that all of them reject the same calls (the conformance
# suite runs one test list against each). They raise ValueError: a bad argument is a programming
# error in the caller, not a store outage.


def check_kind(kind: str) -> None:
    """Reject a kind that would make ``kind + ":" + key`` ambiguous."""
    if not kind or ":" in kind:
        raise ValueError(f"record kind must be non-empty and contain no ':', got {kind!r}")


def check_put(kind: str, version: int, ttl: int) -> None:
    """Validate the arguments of ``put``."""
    if not kind or ":" in kind:
        check_kind(kind)
    if type(ttl) is not int or ttl < 1:
        raise ValueError(f"ttl must be an integer number of seconds >= 1, got {ttl!r}")
    if type(version) is not int or version < 1:
        # Version 0 is reserved: compare_and_set(expected_version=0) means "only if absent".
        raise ValueError(f"version must be an integer >= 1, got {version!r}")


def check_cas(kind: str, expected_version: int, ttl: int) -> None:
    """Validate the arguments of ``compare_and_set``."""
    if not kind or ":" in kind:
        check_kind(kind)
    if type(ttl) is not int or ttl < 1:
        raise ValueError(f"ttl must be an integer number of seconds >= 1, got {ttl!r}")
    if type(expected_version) is not int or expected_version < 0:
        raise ValueError(f"expected_version must be an integer >= 0, got {expected_version!r}")
