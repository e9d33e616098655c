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
  the other shards keep serving.
* Replicas: Redis replicates asynchronously, so by default a write is acknowledged by the shard's
  primary alone and a fail-over within a shard may lose the writes of the moments before it (and
  revive a code just redeemed). With ``replicas=N`` in the URL every write is sent, in one round
  trip, with ``WAIT N`` to the primary of its key's slot (on a client of that node: ``WAIT``
  counts the writes of its own connection), and is a 503 unless N replicas acknowledged it, as in
  the Sentinel store. A ``MOVED`` answer there (the slot moved; the command did not run) refreshes
  the slot map and sends it once more; a connection error refreshes the map for the next call.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import MovedError, RedisClusterException, RedisError

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
from .redis_waits import ReplicaWaits

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


def _written_key(command: tuple[Any, ...]) -> Any:
    """The one key a writing command of the store names (``EVAL`` has it after the script)."""
    return command[3] if command[0] == "EVAL" else command[1]


def _options(parsed: RedisHAURL, socket_timeout: float) -> dict[str, Any]:
    options = _client_options(socket_timeout)
    # A write's read waits for the replicas too.
    options["socket_timeout"] = socket_timeout + (parsed.replica_timeout if parsed.replicas else 0)
    # ``retry`` is the cluster client's own retry of a whole command (after a connection error or
    # a timeout, when the command may have run): none, as in the single-Redis store.
    options.update(username=parsed.username, password=parsed.password)
    options.update(parsed.ssl_options())  # rediss+cluster://: every node over TLS
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
        self._waits = ReplicaWaits(parsed)
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

    def _write(self, op: str, *command: Any) -> Any:
        if not self._waits.replicas:
            return super()._write(op, *command)
        for attempt in range(2):
            try:
                node = self._redis.get_node_from_key(_written_key(command))
                pipe = self._redis.get_redis_connection(node).pipeline(transaction=False)
                pipe.execute_command(*command)
                pipe.execute_command(*self._waits.command())
                result, acked = pipe.execute()
            except MovedError as exc:
                if attempt:
                    raise _unavailable(op, exc) from exc
                self._refresh_slots()
                continue
            except self._errors as exc:
                self._refresh_slots()
                raise _unavailable(op, exc) from exc
            self._waits.check(op, acked)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _refresh_slots(self) -> None:
        """Read the slot map again (after a fail-over or a resharding); failing is for later."""
        with contextlib.suppress(*self._errors):
            self._redis.nodes_manager.initialize()

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
        self._waits = ReplicaWaits(parsed)
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in parsed.hosts]
        options = _options(parsed, socket_timeout)
        self._node_options = {**options, "retry": redis.asyncio.retry.Retry(NoBackoff(), 0)}
        self._nodes: dict[str, redis.asyncio.Redis] = {}
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

    async def _write(self, op: str, *command: Any) -> Any:
        if not self._waits.replicas:
            return await super()._write(op, *command)
        for attempt in range(2):
            try:
                await self._redis.initialize()  # the slot map, read at the first call
                node = self._redis.get_node_from_key(_written_key(command))
                async with self._node(node.host, node.port).pipeline(transaction=False) as pipe:
                    pipe.execute_command(*command)
                    pipe.execute_command(*self._waits.command())
                    result, acked = await pipe.execute()
            except MovedError as exc:
                if attempt:
                    raise _unavailable(op, exc) from exc
                await self._refresh_slots()
                continue
            except self._errors as exc:
                await self._refresh_slots()
                raise _unavailable(op, exc) from exc
            self._waits.check(op, acked)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _node(self, host: str, port: int) -> redis.asyncio.Redis:
        """A client of one node (the asyncio cluster client lends none)."""
        name = f"{host}:{port}"
        if name not in self._nodes:
            options = {k: v for k, v in self._node_options.items() if k != "retry_on_timeout"}
            self._nodes[name] = redis.asyncio.Redis(host=host, port=port, **options)
        return self._nodes[name]

    async def _refresh_slots(self) -> None:
        with contextlib.suppress(*self._errors):
            await self._redis.nodes_manager.initialize()

    async def close(self) -> None:
        await super().close()
        for client in self._nodes.values():
            await client.aclose()

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
