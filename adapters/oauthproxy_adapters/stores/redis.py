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
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from oauthproxy_core.effects import Stored

from .base import StoreUnavailableError, check_cas, check_kind, check_put
from .redis_ha_url import TLS_VERIFICATION

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


def _client_options(socket_timeout: float, *, asyncio: bool = False) -> dict[str, Any]:
    """The connection options of every Redis client here: no retries (a failure is a 503 the
    client retries), bounded waits. ``asyncio``: for a ``redis.asyncio`` client, which takes
    its own kind of retry object."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "decode_responses": False,
    }


def tls_verification(url: str) -> dict[str, Any]:
    """``TLS_VERIFICATION`` for a ``rediss://`` URL, nothing for ``redis://``."""
    return dict(TLS_VERIFICATION) if url.lower().startswith("rediss://") else {}


def _cas_command(k: str, expected_version: int, value: bytes, ttl: int) -> tuple[Any, ...]:
    """The one command of ``compare_and_set``: ``SET NX`` for "only if absent", else the script.

    ``EVAL`` rather than ``EVALSHA``: a server that lost its script cache (a restart, a fail-over
    to a replica) needs no second round trip, and the server hashes the short body in
    microseconds."""
    packed = _pack(expected_version + 1, bytes(value))
    if expected_version == 0:
        return ("SET", k, packed, "EX", ttl, "NX")
    return ("EVAL", _CAS_SCRIPT, 1, k, _VERSION.pack(expected_version), packed, ttl)


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
        self._redis: Any = redis.Redis.from_url(
            url, **_client_options(socket_timeout), **tls_verification(url)
        )

    #: What a failing backend raises (a Cluster client adds its own exceptions).
    _errors: tuple[type[Exception], ...] = (RedisError,)

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{kind}:{key}"

    def _name_skip(self) -> int:
        """How many characters of a key name come before its kind."""
        return len(self.prefix)

    def get(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        try:
            raw = self._redis.get(k)
        except self._errors as exc:
            raise _unavailable("get", exc) from exc
        return _unpack(raw)

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        self._write("put", "SET", self._k(kind, key), _pack(version, bytes(value)), "EX", ttl)

    def take(self, kind: str, key: str) -> Stored | None:
        return _unpack(self._write("take", "GETDEL", self._k(kind, key)))

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        return bool(
            self._write(
                "compare_and_set", *_cas_command(self._k(kind, key), expected_version, value, ttl)
            )
        )

    def delete(self, kind: str, key: str) -> None:
        self._write("delete", "DEL", self._k(kind, key))

    def _write(self, op: str, *command: Any) -> Any:
        """Run one writing command; the seam where a replicated store also waits for replicas."""
        try:
            return self._redis.execute_command(*command)
        except self._errors as exc:
            raise _unavailable(op, exc) from exc

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
            except self._errors as exc:
                raise _unavailable("scan", exc) from exc
            yield from _live(fresh, values, self._name_skip())
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
        except self._errors as exc:
            raise _unavailable("size", exc) from exc

    # -- inspection (tests) -----------------------------------------------------------------------

    def dump(self) -> list[tuple[str, str, bytes]]:
        """Every record under the prefix as ``(kind, key, value)`` (SCAN: for tests only)."""
        out: list[tuple[str, str, bytes]] = []
        try:
            for name in self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
                stored = _unpack(self._redis.get(name))
                if stored is not None:
                    out.append((*_split(name, self._name_skip()), stored.value))
        except self._errors as exc:
            raise _unavailable("dump", exc) from exc
        return sorted(out)

    def clear(self) -> int:
        """Delete every record under the prefix; returns how many were deleted (for tests)."""
        try:
            names = list(self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500))
            return int(self._redis.delete(*names)) if names else 0
        except self._errors as exc:
            raise _unavailable("clear", exc) from exc


_T = TypeVar("_T")


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore` (``redis.asyncio``), with the same options."""

    def __init__(
        self, url: str, *, prefix: str = "oauthproxy:", socket_timeout: float = 2.0
    ) -> None:
        self.prefix = prefix
        self._redis: Any = redis.asyncio.Redis.from_url(
            url, **_client_options(socket_timeout, asyncio=True), **tls_verification(url)
        )

    #: What a failing backend raises (a Cluster client adds its own exceptions).
    _errors: tuple[type[Exception], ...] = (RedisError,)

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{kind}:{key}"

    def _name_skip(self) -> int:
        """How many characters of a key name come before its kind."""
        return len(self.prefix)

    async def _call(self, op: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await fn()
        except self._errors as exc:
            raise _unavailable(op, exc) from exc

    async def get(self, kind: str, key: str) -> Stored | None:
        k = self._k(kind, key)
        return _unpack(await self._call("get", lambda: self._redis.get(k)))

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        await self._write("put", "SET", self._k(kind, key), _pack(version, bytes(value)), "EX", ttl)

    async def take(self, kind: str, key: str) -> Stored | None:
        return _unpack(await self._write("take", "GETDEL", self._k(kind, key)))

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        command = _cas_command(self._k(kind, key), expected_version, value, ttl)
        return bool(await self._write("compare_and_set", *command))

    async def delete(self, kind: str, key: str) -> None:
        await self._write("delete", "DEL", self._k(kind, key))

    async def _write(self, op: str, *command: Any) -> Any:
        """:meth:`RedisStore._write` over ``redis.asyncio``."""
        return await self._call(op, lambda: self._redis.execute_command(*command))

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
            except self._errors as exc:
                raise _unavailable("scan", exc) from exc
            for record in _live(fresh, values, self._name_skip()):
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
        except self._errors as exc:
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
                    out.append((*_split(name, self._name_skip()), stored.value))
        except self._errors as exc:
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


def _live(names: list[bytes | str], values: list[Any], skip: int) -> Iterator[tuple[str, Stored]]:
    for name, raw in zip(names, values, strict=True):
        stored = _unpack(raw)
        if stored is not None:  # None: expired or deleted since the SCAN saw its name
            yield _split(name, skip)[1], stored


def _split(name: bytes | str, skip: int) -> tuple[str, str]:
    """``(kind, key)`` of a key name whose first ``skip`` characters are the prefix (and tag)."""
    text = name.decode() if isinstance(name, bytes) else name
    kind, _, key = text[skip:].partition(":")
    return kind, key
