"""In-process record store: a dict behind one lock, for tests, benchmarks and single-process use.

Theory of operation: ``_records`` maps ``(kind, key)`` to ``(value, version, expires_at)``.
Expiry needs no background thread. Reads check ``expires_at`` (and drop the record they find
expired); writes push ``(expires_at, kind, key)`` on a heap and pop at most :data:`PURGE_BATCH`
expired entries per write, so the cost of expiry is spread over writes and bounded per call. A heap
entry may be stale (the record was replaced with a later expiry, or deleted): it is checked against
the dict before anything is removed, and the heap is rebuilt from the dict when stale entries
outnumber live ones.

The store is bounded (spec/security.md 28): a write that would add a record beyond ``max_records`` first
reclaims every expired record, then raises :class:`StoreFullError` if all are still live. Nothing
stored is lost by a refused write.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

from oauthproxy_core.effects import Stored

from .base import StoreFullError, check_cas, check_kind, check_put

__all__ = ["PURGE_BATCH", "AsyncMemoryStore", "MemoryStore"]

#: Most expired records reclaimed by one write (bounds the latency a write can pay for expiry).
PURGE_BATCH = 32

_Record = tuple[bytes, int, float]  # (value, version, expires_at)


class MemoryStore:
    """A thread-safe in-memory :class:`~oauthproxy_adapters.stores.base.SyncStore`.

    ``clock`` returns the current time in seconds (injectable for tests); ``max_records`` bounds the
    number of live records.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_records: int = 1_000_000
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records!r}")
        self._clock = clock
        self._max_records = max_records
        self._records: dict[tuple[str, str], _Record] = {}
        self._expiries: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    # -- reads ------------------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        k = (kind, key)
        with self._lock:
            rec = self._records.get(k)
            if rec is None:
                return None
            if rec[2] <= self._clock():
                del self._records[k]
                return None
        return Stored(value=rec[0], version=rec[1])

    def take(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        with self._lock:
            rec = self._records.pop((kind, key), None)
            if rec is None or rec[2] <= self._clock():
                return None
        return Stored(value=rec[0], version=rec[1])

    # -- writes -----------------------------------------------------------------------------------

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        value = bytes(value)
        k = (kind, key)
        with self._lock:
            now = self._clock()
            self._purge(now, PURGE_BATCH)
            if k not in self._records:
                self._make_room(now)
            self._write(k, value, version, now + ttl)

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        value = bytes(value)
        k = (kind, key)
        with self._lock:
            now = self._clock()
            self._purge(now, PURGE_BATCH)
            rec = self._records.get(k)
            live = rec is not None and rec[2] > now
            if expected_version == 0:
                if live:
                    return False
                if rec is None:
                    self._make_room(now)
            elif not live or rec is None or rec[1] != expected_version:
                return False
            self._write(k, value, expected_version + 1, now + ttl)
            return True

    def delete(self, kind: str, key: str) -> None:
        check_kind(kind)
        with self._lock:
            self._records.pop((kind, key), None)

    def close(self) -> None:
        """Nothing to release; the records stay readable (the store is just a dict)."""

    # -- listing (operators: base.ScanningStore) --------------------------------------------------

    def scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        """The live records of ``kind``, as they were when the scan started (one snapshot)."""
        check_kind(kind)
        with self._lock:
            now = self._clock()
            live = [
                (k[1], Stored(value=r[0], version=r[1]))
                for k, r in self._records.items()
                if k[0] == kind and r[2] > now
            ]
        return iter(live)

    # -- inspection (tests) -----------------------------------------------------------------------

    def dump(self) -> list[tuple[str, str, bytes]]:
        """Every live record as ``(kind, key, value)``: what an attacker reading the store sees."""
        with self._lock:
            now = self._clock()
            return [(k[0], k[1], r[0]) for k, r in self._records.items() if r[2] > now]

    def __len__(self) -> int:
        """Number of records held, live or expired-but-not-yet-reclaimed."""
        return len(self._records)

    def size(self) -> int:
        """Records held, live or expired and not yet reclaimed (every store has this method)."""
        return len(self._records)

    # -- internals (caller holds the lock) --------------------------------------------------------

    def _write(self, k: tuple[str, str], value: bytes, version: int, expires_at: float) -> None:
        self._records[k] = (value, version, expires_at)
        heapq.heappush(self._expiries, (expires_at, k[0], k[1]))
        # Replacing a record leaves its old heap entry behind; keep the heap proportional to the
        # dict so that a key rewritten forever does not grow memory forever.
        if len(self._expiries) > 2 * len(self._records) + 1024:
            self._expiries = [(r[2], kk[0], kk[1]) for kk, r in self._records.items()]
            heapq.heapify(self._expiries)

    def _purge(self, now: float, limit: int) -> None:
        """Reclaim up to ``limit`` expired records (limit < 0: all of them)."""
        heap = self._expiries
        records = self._records
        while heap and heap[0][0] <= now and limit != 0:
            expires_at, kind, key = heapq.heappop(heap)
            rec = records.get((kind, key))
            # Only the heap entry matching the current record may remove it; older entries are
            # stale leftovers of replaced records.
            if rec is not None and rec[2] == expires_at:
                del records[(kind, key)]
            limit -= 1

    def _make_room(self, now: float) -> None:
        if len(self._records) >= self._max_records:
            self._purge(now, -1)
            if len(self._records) >= self._max_records:
                raise StoreFullError(
                    f"memory store holds its maximum of {self._max_records} live records"
                )


class AsyncMemoryStore:
    """The asyncio face of :class:`MemoryStore` (its calls never block for long, so no thread)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_records: int = 1_000_000,
        store: MemoryStore | None = None,
    ) -> None:
        if store is None:
            store = MemoryStore(clock=clock, max_records=max_records)
        self.sync = store

    async def get(self, kind: str, key: str) -> Stored | None:
        return self.sync.get(kind, key)

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        self.sync.put(kind, key, value, version, ttl)

    async def take(self, kind: str, key: str) -> Stored | None:
        return self.sync.take(kind, key)

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        return self.sync.compare_and_set(kind, key, expected_version, value, ttl)

    async def delete(self, kind: str, key: str) -> None:
        self.sync.delete(kind, key)

    async def close(self) -> None:
        self.sync.close()

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        return _aiter(self.sync.scan(kind))

    def dump(self) -> list[tuple[str, str, bytes]]:
        return self.sync.dump()

    async def size(self) -> int:
        return self.sync.size()


async def _aiter(records: Iterator[tuple[str, Stored]]) -> AsyncIterator[tuple[str, Stored]]:
    for record in records:
        yield record
