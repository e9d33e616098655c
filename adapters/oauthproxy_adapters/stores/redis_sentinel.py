"""Shared record store on a Redis primary watched by Sentinel, which promotes a replica when the
primary fails (``redis+sentinel://host:26379,host2:26379/mymaster/0``).

Theory of operation:

* Records, commands and failures are those of :mod:`.redis` (one key per record, one command per
  operation, nothing retried): this store only finds the primary through the sentinels and waits
  for replicas on every write.
* Finding the primary: redis-py's ``Sentinel`` asks the sentinels, in turn, for the primary of the
  service whenever a connection is opened, and refuses one they report down. While no primary is
  known (the old one died and the sentinels have not yet agreed on a new one) every call fails with
  :class:`~.base.StoreUnavailableError`, a 503 ``temporarily_unavailable`` with ``Retry-After``,
  like a single Redis that is down; once a replica is promoted the next connection reaches it. A
  connection to a primary demoted meanwhile gets ``READONLY`` for a write: one 503, then redis-py
  drops the connection and the next one asks the sentinels again.
* Replication is asynchronous in Redis: a primary acknowledges a write before its replicas have
  it. A ``take`` of a code acknowledged by a primary that then dies before passing it on would
  leave the code in the replica promoted next, to be redeemed a second time (spec/security.md 8),
  and the same for a refresh token's rotation (spec/security.md 20). So every write (``put``, ``take``,
  ``compare_and_set``, ``delete``) is sent in one round trip with ``WAIT replicas timeout``, and
  reported done only when that many replicas hold it; otherwise the caller gets
  :class:`~.base.StoreUnavailableError`, and the result of the write (a taken code, a won
  compare-and-set) is never used: the response is a 503, and no token is minted from it. Sentinel
  promotes the replica with the most of the primary's stream, so one that acknowledged the write.
  A write that reaches no replica has still been made on the primary: a ``take`` answered 503
  has spent the code there, and the client starts again (never a second redemption). Servers
  configured with ``min-replicas-to-write 1`` refuse such writes before making them.
  ``replicas=0`` in the URL turns the wait off (a primary without replicas; fail-over may then
  lose acknowledged writes).
* Reads go to the primary only: a replica may lag, and a ``get`` that missed a write just made
  would, for instance, not see a consent just given.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.sentinel
import redis.sentinel

from .redis import AsyncRedisStore, RedisStore, _client_options, _unavailable
from .redis_ha_url import RedisHAURL, parse_redis_ha_url
from .redis_waits import ReplicaWaits

__all__ = ["AsyncRedisSentinelStore", "RedisSentinelStore"]


def _parsed(url: str | RedisHAURL) -> RedisHAURL:
    parsed = url if isinstance(url, RedisHAURL) else parse_redis_ha_url(url)
    if parsed.scheme != "redis+sentinel":
        raise ValueError(f"not a redis+sentinel:// URL: {parsed!r}")
    return parsed


def _options(
    parsed: RedisHAURL, socket_timeout: float, *, asyncio: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sentinel connections' options, data connections' options)``."""
    # rediss+sentinel://: the sentinels and the data nodes alike are reached over TLS.
    tls = parsed.ssl_options()
    sentinel = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout, **tls}
    data = _client_options(socket_timeout, asyncio=asyncio)
    # A write's read waits for the replicas too.
    data["socket_timeout"] = socket_timeout + parsed.replica_timeout
    data.update(db=parsed.db, username=parsed.username, password=parsed.password, **tls)
    if parsed.sentinel_auth:
        sentinel.update(username=parsed.username, password=parsed.password)
    return sentinel, data


class RedisSentinelStore(RedisStore):
    """A :class:`~.base.SyncStore` on the primary of a Sentinel-monitored Redis service.

    ``url`` is a ``redis+sentinel://`` URL (:mod:`.redis_ha_url`); ``socket_timeout`` bounds
    connecting to a sentinel or a server and every command, in seconds.
    """

    def __init__(self, url: str | RedisHAURL, *, socket_timeout: float = 2.0) -> None:
        parsed = _parsed(url)
        self.prefix = parsed.prefix
        self.service = parsed.service
        self._waits = ReplicaWaits(parsed)
        sentinel_options, data_options = _options(parsed, socket_timeout)
        self._sentinel = redis.sentinel.Sentinel(
            list(parsed.hosts), sentinel_kwargs=sentinel_options
        )
        self._redis = self._sentinel.master_for(parsed.service, **data_options)

    def _write(self, op: str, *command: Any) -> Any:
        if not self._waits.replicas:
            return super()._write(op, *command)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.execute_command(*command)
            pipe.execute_command(*self._waits.command())
            result, acked = pipe.execute()
        except self._errors as exc:
            raise _unavailable(op, exc) from exc
        self._waits.check(op, acked)
        return result

    def close(self) -> None:
        super().close()
        for sentinel in self._sentinel.sentinels:
            sentinel.close()


class AsyncRedisSentinelStore(AsyncRedisStore):
    """The asyncio twin of :class:`RedisSentinelStore` (``redis.asyncio.sentinel``)."""

    def __init__(self, url: str | RedisHAURL, *, socket_timeout: float = 2.0) -> None:
        parsed = _parsed(url)
        self.prefix = parsed.prefix
        self.service = parsed.service
        self._waits = ReplicaWaits(parsed)
        sentinel_options, data_options = _options(parsed, socket_timeout, asyncio=True)
        self._sentinel = redis.asyncio.sentinel.Sentinel(
            list(parsed.hosts), sentinel_kwargs=sentinel_options
        )
        self._redis = self._sentinel.master_for(parsed.service, **data_options)

    async def _write(self, op: str, *command: Any) -> Any:
        if not self._waits.replicas:
            return await super()._write(op, *command)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.execute_command(*self._waits.command())
                result, acked = await pipe.execute()
        except self._errors as exc:
            raise _unavailable(op, exc) from exc
        self._waits.check(op, acked)
        return result

    async def close(self) -> None:
        await super().close()
        for sentinel in self._sentinel.sentinels:
            await sentinel.aclose()
