"""Stores implementing the record store contract (spec/architecture.md, "Storage contract").

:func:`open_store` and :func:`open_async_store` pick an implementation from a URL:

* ``memory://`` -- :class:`~.memory.MemoryStore`, in this process only;
* ``sqlite://`` -- :class:`~.sqlite.SQLiteStore` at :func:`~.sqlite.default_sqlite_path`;
  ``sqlite:///state.db`` -- a path relative to the current directory;
  ``sqlite:////var/lib/oauthproxy/state.db`` -- an absolute path (SQLAlchemy's convention: what
  follows ``sqlite:///`` is the path); ``?synchronous=full`` makes every commit wait for the disk
  (survives power loss, ~200 us per write), the default ``normal`` survives process crashes;
* ``redis://host:port/db`` (or ``rediss://`` for TLS) -- :class:`~.redis.RedisStore`, shared by
  several proxy instances.

All three also implement ``base.ScanningStore`` (``scan(kind)``, listing for operators).
The Redis modules are imported only when a Redis URL is opened, so ``redis`` stays optional.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import (
    AsyncScanningStore,
    AsyncStore,
    ScanningStore,
    StoreFullError,
    StoreUnavailableError,
    SyncStore,
)
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore, default_sqlite_path

if TYPE_CHECKING:
    from .redis import AsyncRedisStore, RedisStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncRedisStore",
    "AsyncSQLiteStore",
    "AsyncScanningStore",
    "AsyncStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "ScanningStore",
    "StoreFullError",
    "StoreUnavailableError",
    "SyncStore",
    "default_sqlite_path",
    "open_async_store",
    "open_store",
    "sqlite_file",
]

_SCHEMES = "memory://, sqlite://[/path], redis://host:port/db or rediss://host:port/db"


def _sqlite_options(url: str) -> tuple[str, str]:
    """``(path, synchronous)`` from ``sqlite:///path.db[?synchronous=full|normal]``."""
    base, _, query = url.partition("?")
    synchronous = "normal"
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name != "synchronous" or value.lower() not in ("normal", "full"):
            raise ValueError(f"bad SQLite store URL option {item!r}: only synchronous=normal|full")
        synchronous = value.lower()
    return _sqlite_path(base), synchronous


def _sqlite_path(url: str) -> str:
    rest = url[len("sqlite://") :]
    if rest in ("", "/"):
        return default_sqlite_path()
    if not rest.startswith("/"):
        # sqlite://host/... has no meaning for a local file.
        raise ValueError(
            f"bad SQLite store URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db"
        )
    return rest[1:]


def sqlite_file(url: str) -> str:
    """The absolute path of the file a ``sqlite://`` URL names, resolved now (nothing is opened)."""
    return os.path.abspath(_sqlite_options(url)[0])


def _redis_options(url: str) -> tuple[str, str]:
    """``(url without our option, key prefix)``: ``redis://h:6379/0?prefix=team-a:`` gives each
    deployment sharing one Redis its own key space (default prefix ``oauthproxy:``)."""
    parts = urlsplit(url)
    prefix = "oauthproxy:"
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            if not value or any(c.isspace() for c in value):
                raise ValueError(
                    f"bad Redis store URL {url!r}: the key prefix must be non-empty, no spaces"
                )
            prefix = value
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"store URL {url!r} has no scheme; expected one of {_SCHEMES}")
    return scheme.lower()


def open_store(url: str) -> SyncStore:
    """Open a blocking store from ``url`` (see the module docstring). Unknown scheme: ValueError."""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        path, synchronous = _sqlite_options(url)
        return SQLiteStore(path, synchronous=synchronous)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore  # noqa: PLC0415 (redis is optional)

        redis_url, prefix = _redis_options(url)
        return RedisStore(redis_url, prefix=prefix)
    raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}; expected one of {_SCHEMES}")


def open_async_store(url: str) -> AsyncStore:
    """Open an asyncio store from ``url`` (see the module docstring). Unknown scheme: ValueError."""
    scheme = _scheme(url)
    if scheme == "memory":
        return AsyncMemoryStore()
    if scheme == "sqlite":
        path, synchronous = _sqlite_options(url)
        return AsyncSQLiteStore(path, synchronous=synchronous)
    if scheme in ("redis", "rediss"):
        from .redis import AsyncRedisStore  # noqa: PLC0415 (redis is optional)

        redis_url, prefix = _redis_options(url)
        return AsyncRedisStore(redis_url, prefix=prefix)
    raise ValueError(f"unknown store URL scheme {scheme!r} in {url!r}; expected one of {_SCHEMES}")


def __getattr__(name: str) -> object:
    # Lazy access to the Redis classes without importing redis for memory/SQLite users.
    if name in ("RedisStore", "AsyncRedisStore"):
        from . import redis as redis_store  # noqa: PLC0415 (redis is optional)

        return getattr(redis_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
