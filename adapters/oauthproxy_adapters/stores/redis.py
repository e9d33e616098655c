"""Shared record store on Redis, for several proxy instances behind a load balancer.

Theory of operation:

* A record ``(kind, key)`` is the Redis string ``prefix + kind + ":" + key`` (kinds contain no
  ``":"``, so the mapping is one-to-one). Its value packs the version and the payload into one
  string, ``version`` as 8 bytes big-endian followed by the value bytes, so that every operation
  is a single command: ``get`` is ``GET``, ``take`` is ``GETDEL`` (atomic, Redis >= 6.2), ``put`` is
  ``SET ... EX``, "insert if absent" is ``SET ... NX EX``.
* ``compare_and_set`` on a version is a Lua script (:data:`_CAS_SCRIPT`), which Redis runs
  atomically; it compares the 8-byte version prefix as a string, so no number parsing happens in
  Lua.
* TTLs are Redis's own (``EX``): Redis never returns an expired key, from any command.
* Listing (``scan``, for operators: ``base.ScanningStore``) walks ``SCAN`` with ``MATCH`` on the
  kind's key pattern and a ``COUNT`` of :data:`SCAN_COUNT`, never ``KEYS`` (which blocks the server
  for as long as it takes to walk every key), and reads each page of names with one ``MGET``. A key
  that expires or is deleted between the ``SCAN`` and the ``MGET`` comes back as nil and is skipped;
  ``SCAN`` may return a key twice, so the names already yielded are remembered.
* Failures: every ``redis`` error (connection refused, timeout, ``READONLY``, ``OOM`` ...) becomes
  :class:`StoreUnavailableError`. Sockets have connect and read timeouts, and commands are not
  retried: a retried ``GETDEL`` or ``SET NX`` whose first attempt did run would report a miss for a
  write that happened, so one failure is reported as one 503 instead.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from oauthproxy_core.effects import Stored

from .base import StoreUnavailableError, check_cas, check_kind, check_put

__all__ = ["SCAN_COUNT", "AsyncRedisStore", "RedisStore"]

_VERSION = struct.Struct(">Q")

# KEYS[1]: the record; ARGV[1]: expected version (8 bytes); ARGV[2]: new packed value;
# ARGV[3]: ttl in seconds. Returns 1 if written, 0 otherwise.
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, 8) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""

#: The ``COUNT`` hint of every ``SCAN``: about how many keys one call walks (one ``MGET`` reads).
SCAN_COUNT = 500

#: Health-check an idle pooled connection (PING) before reusing it after this many seconds, so a
#: connection dropped by a restarted server is noticed before a command is sent on it.
_HEALTH_CHECK_INTERVAL = 30


def _pack(version: int, value: bytes) -> bytes:
    return _VERSION.pack(version) + value


def _unpack(raw: Any) -> Stored | None:
    if raw is None:
        return None
    if not isinstance(raw, bytes) or len(raw) < _VERSION.size:
        raise StoreUnavailableError("malformed record in Redis (not written by this store?)")
    return Stored(value=raw[_VERSION.size :], version=_VERSION.unpack_from(raw)[0])


def _client_options(socket_timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "decode_responses": False,
    }


def _unavailable(op: str, exc: Exception) -> StoreUnavailableError:
    return StoreUnavailableError(f"Redis {op} failed: {type(exc).__name__}: {exc}")


class RedisStore:
    """A :class:`~oauthproxy_adapters.stores.base.SyncStore` on Redis (redis-py, pooled).

    ``url`` is a redis-py URL (``redis://host:port/db``, ``rediss://`` for TLS); ``prefix``
    namespaces every key; ``socket_timeout`` bounds connecting and every command, in seconds.
    """

    def __init__(
        self, url: str, *, prefix: str = "oauthproxy:", socket_timeout: float = 2.0
    ) -> None:
        self.prefix = prefix
        self._redis: redis.Redis = redis.Redis.from_url(url, **_client_options(socket_timeout))
        self._cas = self._redis.register_script(_CAS_SCRIPT)

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{kind}:{key}"

    def get(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        try:
            raw = self._redis.get(k)
        except RedisError as exc:
            raise _unavailable("get", exc) from exc
        return _unpack(raw)

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        k = self._k(kind, key)
        try:
            self._redis.set(k, _pack(version, bytes(value)), ex=ttl)
        except RedisError as exc:
            raise _unavailable("put", exc) from exc

    def take(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        try:
            raw = self._redis.getdel(k)
        except RedisError as exc:
            raise _unavailable("take", exc) from exc
        return _unpack(raw)

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        k = self._k(kind, key)
        packed = _pack(expected_version + 1, bytes(value))
        try:
            if expected_version == 0:
                return bool(self._redis.set(k, packed, ex=ttl, nx=True))
            result = self._cas(keys=[k], args=[_VERSION.pack(expected_version), packed, ttl])
        except RedisError as exc:
            raise _unavailable("compare_and_set", exc) from exc
        return bool(result == 1)

    def delete(self, kind: str, key: str) -> None:
        k = self._k(kind, key)
        try:
            self._redis.delete(k)
        except RedisError as exc:
            raise _unavailable("delete", exc) from exc

    def close(self) -> None:
        self._redis.close()

    # -- listing (operators: base.ScanningStore) --------------------------------------------------

    def scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        """The live records of ``kind``: ``SCAN ... MATCH ... COUNT`` and one ``MGET`` per page."""
        pattern = _scan_pattern(self.prefix, kind)
        return self._scan(pattern)

    def _scan(self, pattern: str) -> Iterator[tuple[str, Stored]]:
        seen: set[bytes | str] = set()
        cursor: int = 0
        while True:
            try:
                cursor, names = self._redis.scan(cursor, match=pattern, count=SCAN_COUNT)
                fresh = _unseen(names, seen)
                values = self._redis.mget(fresh) if fresh else []
            except RedisError as exc:
                raise _unavailable("scan", exc) from exc
            yield from _live(fresh, values, self.prefix)
            if cursor == 0:
                return

    def size(self) -> int:
        """Keys under the prefix (Redis drops expired ones itself): a ``SCAN`` walk, O(keys in the
        database), for operators, never on a request's path."""
        try:
            return sum(
                1
                for _ in self._redis.scan_iter(
                    match=_glob_escape(self.prefix) + "*", count=SCAN_COUNT
                )
            )
        except RedisError as exc:
            raise _unavailable("size", exc) from exc

    # -- inspection (tests) -----------------------------------------------------------------------

    def dump(self) -> list[tuple[str, str, bytes]]:
        """Every record under the prefix as ``(kind, key, value)`` (SCAN: for tests only)."""
        out: list[tuple[str, str, bytes]] = []
        try:
            for name in self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
                stored = _unpack(self._redis.get(name))
                if stored is not None:
                    out.append((*_split(name, self.prefix), stored.value))
        except RedisError as exc:
            raise _unavailable("dump", exc) from exc
        return sorted(out)

    def clear(self) -> int:
        """Delete every record under the prefix; returns how many were deleted (for tests)."""
        try:
            names = list(self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500))
            return int(self._redis.delete(*names)) if names else 0
        except RedisError as exc:
            raise _unavailable("clear", exc) from exc


_T = TypeVar("_T")


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore` (``redis.asyncio``), with the same options."""

    def __init__(
        self, url: str, *, prefix: str = "oauthproxy:", socket_timeout: float = 2.0
    ) -> None:
        self.prefix = prefix
        self._redis: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, **_client_options(socket_timeout)
        )
        self._cas = self._redis.register_script(_CAS_SCRIPT)

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{kind}:{key}"

    @staticmethod
    async def _call(op: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await fn()
        except RedisError as exc:
            raise _unavailable(op, exc) from exc

    async def get(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        return _unpack(await self._call("get", lambda: self._redis.get(k)))

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        k = self._k(kind, key)
        packed = _pack(version, bytes(value))
        await self._call("put", lambda: self._redis.set(k, packed, ex=ttl))

    async def take(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        return _unpack(await self._call("take", lambda: self._redis.getdel(k)))

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        k = self._k(kind, key)
        packed = _pack(expected_version + 1, bytes(value))
        if expected_version == 0:
            written = await self._call(
                "compare_and_set", lambda: self._redis.set(k, packed, ex=ttl, nx=True)
            )
            return bool(written)
        expected = _VERSION.pack(expected_version)
        result = await self._call(
            "compare_and_set", lambda: self._cas(keys=[k], args=[expected, packed, ttl])
        )
        return bool(result == 1)

    async def delete(self, kind: str, key: str) -> None:
        k = self._k(kind, key)
        await self._call("delete", lambda: self._redis.delete(k))

    async def close(self) -> None:
        await self._redis.aclose()

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        """:meth:`RedisStore.scan` over ``redis.asyncio``."""
        pattern = _scan_pattern(self.prefix, kind)
        return self._scan(pattern)

    async def _scan(self, pattern: str) -> AsyncIterator[tuple[str, Stored]]:
        seen: set[bytes | str] = set()
        cursor: int = 0
        while True:
            try:
                cursor, names = await self._redis.scan(cursor, match=pattern, count=SCAN_COUNT)
                fresh = _unseen(names, seen)
                values = await self._redis.mget(fresh) if fresh else []
            except RedisError as exc:
                raise _unavailable("scan", exc) from exc
            for record in _live(fresh, values, self.prefix):
                yield record
            if cursor == 0:
                return

    async def size(self) -> int:
        """:meth:`RedisStore.size` over ``redis.asyncio``."""
        count = 0
        try:
            async for _ in self._redis.scan_iter(
                match=_glob_escape(self.prefix) + "*", count=SCAN_COUNT
            ):
                count += 1
        except RedisError as exc:
            raise _unavailable("size", exc) from exc
        return count

    async def dump(self) -> list[tuple[str, str, bytes]]:
        """Every record under the prefix as ``(kind, key, value)`` (for tests)."""
        out: list[tuple[str, str, bytes]] = []
        try:
            async for name in self._redis.scan_iter(
                match=_glob_escape(self.prefix) + "*", count=500
            ):
                stored = _unpack(await self._redis.get(name))
                if stored is not None:
                    out.append((*_split(name, self.prefix), stored.value))
        except RedisError as exc:
            raise _unavailable("dump", exc) from exc
        return sorted(out)


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH glob metacharacters so a prefix matches only itself."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)


def _scan_pattern(prefix: str, kind: str) -> str:
    """The ``MATCH`` pattern of the keys of ``kind``, and only of ``kind`` (kinds have no ``:``)."""
    check_kind(kind)
    return _glob_escape(f"{prefix}{kind}:") + "*"


def _unseen(names: list[bytes | str], seen: set[bytes | str]) -> list[bytes | str]:
    """The names of one ``SCAN`` page not yielded before (``SCAN`` may return a key twice)."""
    fresh = [name for name in dict.fromkeys(names) if name not in seen]
    seen.update(fresh)
    return fresh


def _live(names: list[bytes | str], values: list[Any], prefix: str) -> Iterator[tuple[str, Stored]]:
    for name, raw in zip(names, values, strict=True):
        stored = _unpack(raw)
        if stored is not None:  # None: expired or deleted since the SCAN saw its name
            yield _split(name, prefix)[1], stored


def _split(name: bytes | str, prefix: str) -> tuple[str, str]:
    text = name.decode() if isinstance(name, bytes) else name
    kind, _, key = text[len(prefix) :].partition(":")
    return kind, key
