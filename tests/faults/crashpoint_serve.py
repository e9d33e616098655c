"""``oauthproxy serve`` that kills itself with SIGKILL at a chosen store write (test use only).

Usage: ``python crashpoint_serve.py CONFIG`` with, in the environment,

- ``CRASH_TRACE=FILE``: append one line ``<n> <operation> <kind>`` per store write to FILE;
- ``CRASH_AT=N`` and ``CRASH_WHEN=before|after``: SIGKILL this process just before the N-th write
  reaches SQLite, or just after it committed (before the response is sent).

Writes are ``put``, ``take``, ``compare_and_set`` and ``delete`` of the SQLite store, counted in the
order they happen (the tests drive one request at a time, so the order is the flow's). Nothing of
this is installed with the package: the process imports the real CLI and patches the store class in
its own memory only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from oauthproxy_adapters.cli import main
from oauthproxy_adapters.stores import sqlite

WRITES = ("put", "take", "compare_and_set", "delete")
_lock = threading.Lock()
_count = [0]
_trace = os.environ.get("CRASH_TRACE")
_at = int(os.environ.get("CRASH_AT", "0"))
_when = os.environ.get("CRASH_WHEN", "before")


def _patch(name: str) -> None:
    original = getattr(sqlite.SQLiteStore, name)

    def write(self: Any, kind: str, key: str, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            _count[0] += 1
            n = _count[0]
            if _trace:
                with open(_trace, "a", encoding="utf-8") as f:
                    f.write(f"{n} {name} {kind}\n")
        if n == _at and _when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(self, kind, key, *args, **kwargs)
        if n == _at and _when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(sqlite.SQLiteStore, name, write)


for _name in WRITES:
    _patch(_name)

if __name__ == "__main__":
    sys.exit(main(["serve", "--config", sys.argv[1]]))
