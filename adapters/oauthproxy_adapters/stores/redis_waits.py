"""How many replicas a write of a replicated Redis store waits for, and the check of ``WAIT``'s
answer (``redis_sentinel``, ``redis_cluster``): a write no replica acknowledged in time is a
:class:`~.base.StoreUnavailableError`, and its result is never used."""

from __future__ import annotations

from typing import Any

from .base import StoreUnavailableError
from .redis_ha_url import RedisHAURL

__all__ = ["ReplicaWaits"]


class ReplicaWaits:
    """``replicas`` and ``replica_timeout`` of a parsed URL, as ``WAIT`` takes them."""

    def __init__(self, parsed: RedisHAURL) -> None:
        self.replicas = parsed.replicas
        self.timeout = parsed.replica_timeout
        self.millis = max(1, round(parsed.replica_timeout * 1000))

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.millis)

    def check(self, op: str, acked: Any) -> None:
        if not isinstance(acked, int) or acked < self.replicas:
            raise StoreUnavailableError(
                f"Redis {op}: the write reached {acked} of the {self.replicas} replicas it needs "
                f"within {self.timeout}s (replicas= in the store URL)"
            )
