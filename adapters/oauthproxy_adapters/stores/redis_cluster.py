"""Shared record store on a Redis Cluster, whose records are spread over the hash slots of several
primaries (``redis+cluster://host:7000,host2:7001/0``).

Theory of operation:

* A record is one key, as in :mod:`.redis`, and every operation one command on that key (``GET``,
  ``SET``, ``GETDEL``, ``DEL``, the compare-and-set script with the key as its only ``KEYS``): no
  command of a request ever names two keys, so none can fail with ``CROSSSLOT``, and there is no
  index or expiry key to keep beside a record (TTLs are Redis's own). The client (redis-py's
  ``RedisCluster``) sends each command to the primary of the key's slot and follows ``MOVED`` and
  ``ASK`` redirections, which a server sends for a command it did not run.
* Slots: the key is ``prefix + "{" + tag + "}" + kind + ":" + key`` where ``tag`` is 16 hex
  digits of a BLAKE2b digest of ``kind:key``. Redis hashes only what the first braces hold, so a
  record's slot is a function of the record's identity alone: braces in a key (a client-chosen
  ``client_id`` or metadata URL may contain any) cannot pile records onto one slot, and any key a
  later version keeps beside a record (the same tag, another suffix) lands in the record's slot,
  where a script or ``MULTI`` may touch both. The prefix may not contain braces (it would choose
  the slot of every key).
* Listing (``scan``, ``size``, ``dump``, ``clear``) walks ``SCAN`` on every primary; the values of
  a page are read with one ``MGET`` per slot, as a multi-key command must stay within one.
* Failures: as :mod:`.redis`, every error becomes :class:`~.base.StoreUnavailableError`, and
  connection errors and timeouts are not retried (the cluster client's own retries are turned
  off); a shard whose primary is down answers 503 until the cluster promotes its replica, while
  the other shards keep serving. A write is acknowledged by the shard's primary alone: a fail-over
  within a shard may lose the writes of the last moments before it (Redis replicates
  asynchronously), which the Sentinel store guards against with ``WAIT``; see
  docs/operations.md, "Choosing a store".
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from oauthproxy_core.effects import Stored

from .base import check_kind
from .redis import (
    SCAN_COUNT,
    AsyncRedisStore,
    RedisStore,
    _client_options,
    _glob_escape,
    _live,
    _unavailable,
    _unseen,
)
from .redis_ha_url import RedisHAURL, parse_redis_ha_url

__all__ = ["TAG_LENGTH", "AsyncRedisClusterStore", "RedisClusterStore", "hash_tag"]

#: Characters of the ``{tag}`` after the prefix of every key: 16 hex digits and the braces.
TAG_LENGTH = 18


def hash_tag(kind: str, key: str) -> str:
    """The ``{tag}`` that places the record ``(kind, key)`` in its hash slot."""
    digest = hashlib.blake2b(f"{kind}:{key}".encode(), digest_size=8).hexdigest()
    return "{" + digest + "}"


def _parsed(url: str | RedisHAURL) -> RedisHAURL:
    parsed = url if isinstance(url, RedisHAURL) else parse_redis_ha_url(url)
    if parsed.scheme != "redis+cluster":
        raise ValueError(f"not a redis+cluster:// URL: {parsed!r}")
    return parsed


def _options(parsed: RedisHAURL, socket_timeout: float) -> dict[str, Any]:
    options = _client_options(socket_timeout)
    # ``retry`` is the cluster client's own retry of a whole command (after a connection error or
    # a timeout, when the command may have run): none, as in the single-Redis store.
    options.update(username=parsed.username, password=parsed.password)
    return options


def _scan_pattern(prefix: str, kind: str) -> str:
    """``MATCH`` for the keys of ``kind``: the prefix, any tag, then exactly ``kind:``."""
    check_kind(kind)
    return (
        _glob_escape(prefix) + "{" + "?" * (TAG_LENGTH - 2) + "}" + _glob_escape(f"{kind}:") + "*"
    )


class RedisClusterStore(RedisStore):
    """A :class:`~.base.SyncStore` on a Redis Cluster.

    ``url`` is a ``redis+cluster://`` URL (:mod:`.redis_ha_url`); ``socket_timeout`` bounds
    connecting and every command, in seconds. Opening reads the cluster's slot map from the first
    node that answers, so an unreachable cluster raises :class:`StoreUnavailableError` here.
    """

    _errors = (RedisError, RedisClusterException)

    def __init__(self, url: str | RedisHAURL, *, socket_timeout: float = 2.0) -> None:
        parsed = _parsed(url)
        self.prefix = parsed.prefix
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in parsed.hosts
        ]
        try:
            self._redis = redis.cluster.RedisCluster(
                startup_nodes=nodes, **_options(parsed, socket_timeout)
            )
        except self._errors as exc:
            raise _unavailable("open", exc) from exc

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{hash_tag(kind, key)}{kind}:{key}"

    def _name_skip(self) -> int:
        return len(self.prefix) + TAG_LENGTH

    def scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        """The live records of ``kind``: ``SCAN`` on every primary, ``MGET`` per slot."""
        return self._scan(_scan_pattern(self.prefix, kind))

    def _scan(self, pattern: str) -> Iterator[tuple[str, Stored]]:
        seen: set[bytes | str] = set()
        names = self._redis.scan_iter(match=pattern, count=SCAN_COUNT)
        while True:
            try:
                raw = _next_page(names)
                page = _unseen(raw, seen)
                values = self._redis.mget_nonatomic(page) if page else []
            except self._errors as exc:
                raise _unavailable("scan", exc) from exc
            if not raw:
                return
            yield from _live(page, values, self._name_skip())

    def clear(self) -> int:
        """Delete every record under the prefix, one ``DEL`` per slot (tests)."""
        try:
            names = list(self._redis.scan_iter(match=_glob_escape(self.prefix) + "*", count=500))
            return sum(int(self._redis.delete(name)) for name in names)
        except self._errors as exc:
            raise _unavailable("clear", exc) from exc


def _next_page(names: Iterator[Any]) -> list[Any]:
    page = []
    for name in names:
        page.append(name)
        if len(page) >= SCAN_COUNT:
            break
    return page


class AsyncRedisClusterStore(AsyncRedisStore):
    """The asyncio twin of :class:`RedisClusterStore` (``redis.asyncio.cluster``), which reads
    the slot map at its first call."""

    _errors = (RedisError, RedisClusterException)

    def __init__(self, url: str | RedisHAURL, *, socket_timeout: float = 2.0) -> None:
        parsed = _parsed(url)
        self.prefix = parsed.prefix
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in parsed.hosts]
        options = _options(parsed, socket_timeout)
        # The asyncio cluster client takes no retry_on_timeout (its retry object says it all),
        # and an asyncio retry object.
        del options["retry_on_timeout"]
        options["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)
        self._redis = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options)

    def _k(self, kind: str, key: str) -> str:
        check_kind(kind)
        return f"{self.prefix}{hash_tag(kind, key)}{kind}:{key}"

    def _name_skip(self) -> int:
        return len(self.prefix) + TAG_LENGTH

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        """:meth:`RedisClusterStore.scan` over ``redis.asyncio.cluster``."""
        return self._scan(_scan_pattern(self.prefix, kind))

    async def _scan(self, pattern: str) -> AsyncIterator[tuple[str, Stored]]:
        seen: set[bytes | str] = set()
        names = self._redis.scan_iter(match=pattern, count=SCAN_COUNT)
        while True:
            try:
                raw: list[Any] = []
                async for name in names:
                    raw.append(name)
                    if len(raw) >= SCAN_COUNT:
                        break
                page = _unseen(raw, seen)
                values = await self._redis.mget_nonatomic(page) if page else []
            except self._errors as exc:
                raise _unavailable("scan", exc) from exc
            if not raw:
                return
            for record in _live(page, values, self._name_skip()):
                yield record
