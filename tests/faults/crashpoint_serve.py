"""``oauthproxy serve`` that kills itself with SIGKILL at a chosen store write (test use only).

Usage: ``python crashpoint_serve.py CONFIG`` with, in the environment,

- ``CRASH_TRACE=FILE``: append one line ``<n> <operation> <kind>`` per store write to FILE;
- ``CRASH_AT=N`` and ``CRASH_WHEN=before|after``: SIGKILL this process just before the N-th write
  reaches the store, or just after the store acknowledged it (before the response is sent).

Writes are ``put``, ``take``, ``compare_and_set`` and ``delete`` of the store ``serve`` opens (the
SQLite store under the asyncio one that wraps it, or the asyncio PostgreSQL or Redis store, which
the Sentinel and Cluster stores share), counted in the order they happen (the tests drive one
request at a time, so the order is the flow's). Nothing of this is installed with the package: the
process imports the real CLI and patches the store classes in its own memory only.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
from typing import Any

from oauthproxy_adapters.cli import main
from oauthproxy_adapters.stores import postgres, redis, sqlite

WRITES = ("put", "take", "compare_and_set", "delete")
_lock = threading.Lock()
_count = [0]
_trace = os.environ.get("CRASH_TRACE")
_at = int(os.environ.get("CRASH_AT", "0"))
_when = os.environ.get("CRASH_WHEN", "before")


def _count_write(name: str, kind: str) -> int:
    with _lock:
        _count[0] += 1
        n = _count[0]
        if _trace:
            with open(_trace, "a", encoding="utf-8") as f:
                f.write(f"{n} {name} {kind}\n")
    if n == _at and _when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    return n


def _acknowledged(n: int) -> None:
    if n == _at and _when == "after":
        os.kill(os.getpid(), signal.SIGKILL)


def _patch(cls: type, name: str) -> None:
    original = getattr(cls, name)
    if inspect.iscoroutinefunction(original):

        async def awrite(self: Any, kind: str, key: str, *args: Any, **kwargs: Any) -> Any:
            n = _count_write(name, kind)
            result = await original(self, kind, key, *args, **kwargs)
            _acknowledged(n)
            return result

        setattr(cls, name, awrite)
        return

    def write(self: Any, kind: str, key: str, *args: Any, **kwargs: Any) -> Any:
        n = _count_write(name, kind)
        result = original(self, kind, key, *args, **kwargs)
        _acknowledged(n)
        return result

    setattr(cls, name, write)


for _cls in (sqlite.SQLiteStore, postgres.AsyncPostgresStore, redis.AsyncRedisStore):
    for _name in WRITES:
        _patch(_cls, _name)

if __name__ == "__main__":
    sys.exit(main(["serve", "--config", sys.argv[1]]))
