"""Stores implementing the record store contract (spec/architecture.md, "Storage contract").

:func:`open_store` and :func:`open_async_store` pick an implementation from a URL:

* ``memory://`` -- :class:`~.memory.MemoryStore`, in this process only;
* ``sqlite://`` -- :class:`~.sqlite.SQLiteStore` at :func:`~.sqlite.default_sqlite_path`;
  ``sqlite:///state.db`` -- a path relative to the current directory;
  ``sqlite:////var/lib/oauthproxy/state.db`` -- an absolute path (SQLAlchemy's convention: what
  follows ``sqlite:///`` is the path); ``?synchronous=full`` makes every commit wait for the disk
  (survives power loss, ~200 us per write), the default ``normal`` survives process crashes;
* ``redis://host:port/db`` (or ``rediss://`` for TLS) -- :class:`~.redis.RedisStore`, shared by
  several proxy instances;
* ``redis+sentinel://host:26379,host2:26379/mymaster/0`` --
  :class:`~.redis_sentinel.RedisSentinelStore`, on the primary the sentinels name, waiting for
  ``?replicas=1`` replica on every write; ``redis+cluster://host:7000,host2:7001/0`` --
  :class:`~.redis_cluster.RedisClusterStore`, records spread over a Cluster's slots
  (:mod:`.redis_ha_url` has both forms and their options); ``rediss+sentinel://`` and
  ``rediss+cluster://`` are the same over TLS;
* ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``) --
  :class:`~.postgres.PostgresStore`, shared by several proxy instances; ``?prefix=app_`` starts its
  table names (default ``oauthproxy_``), ``?synchronous_commit=off`` trades the durability of the
  last commits before a database crash for write latency, every other query parameter goes to
  libpq (``sslmode=verify-full`` ...).

All of them also implement ``base.ScanningStore`` (``scan(kind)``, listing for operators).
The Redis and PostgreSQL modules are imported only when such a URL is opened, so ``redis`` and
``psycopg`` stay optional.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import (
    AsyncScanningStore,
    AsyncSizedStore,
    AsyncStore,
    ScanningStore,
    SizedStore,
    StoreFullError,
    StoreUnavailableError,
    SyncStore,
)
from .memory import AsyncMemoryStore, MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore, default_sqlite_path

if TYPE_CHECKING:
    from .postgres import AsyncPostgresStore, PostgresStore
    from .redis import AsyncRedisStore, RedisStore
    from .redis_cluster import AsyncRedisClusterStore, RedisClusterStore
    from .redis_sentinel import AsyncRedisSentinelStore, RedisSentinelStore

__all__ = [
    "AsyncMemoryStore",
    "AsyncPostgresStore",
    "AsyncRedisClusterStore",
    "AsyncRedisSentinelStore",
    "AsyncRedisStore",
    "AsyncSQLiteStore",
    "AsyncScanningStore",
    "AsyncSizedStore",
    "AsyncStore",
    "MemoryStore",
    "POSTGRES_SYNCHRONOUS_COMMIT",
    "PostgresStore",
    "RedisClusterStore",
    "RedisSentinelStore",
    "RedisStore",
    "SQLiteStore",
    "ScanningStore",
    "SizedStore",
    "StoreFullError",
    "StoreUnavailableError",
    "SyncStore",
    "check_postgres_prefix",
    "default_sqlite_path",
    "open_async_store",
    "open_store",
    "postgres_options",
    "sqlite_file",
]

_SCHEMES = (
    "memory://, sqlite://[/path], redis://host:port/db, rediss://host:port/db, "
    "redis+sentinel://host:port[,host:port]/service/db, redis+cluster://host:port[,host:port]/0 "
    "(rediss+sentinel://, rediss+cluster:// over TLS) "
    "or postgresql://user@host:port/dbname"
)
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_POSTGRES_EXTRA = "the PostgreSQL store needs psycopg: pip install 'oauthproxy[postgres]'"
_REDIS_EXTRA = "the Redis stores need the redis package: pip install 'oauthproxy[redis]'"


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


def redis_options(url: str) -> tuple[str, str]:
    """``(url without our option, key prefix)``: ``redis://h:6379/0?prefix=team-a:`` gives each
    deployment sharing one Redis its own key space (default prefix ``oauthproxy:``).

    Other options go to redis-py, except those that would weaken the connection or hide a
    secret where the start summary shows it: ``ssl_cert_reqs`` and ``ssl_check_hostname`` (over
    TLS the server's certificate and name are always checked), ``password`` and ``ssl_password``
    (the password belongs in the userinfo or ``[store] password_env``, which are redacted). A bad
    option raises ``ValueError`` without quoting the URL, which may hold a password."""
    parts = urlsplit(url)
    prefix = "oauthproxy:"
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            if not value or any(c.isspace() for c in value):
                raise ValueError("bad Redis store URL: the key prefix must be non-empty, no spaces")
            prefix = value
        elif name in _REFUSED_REDIS_OPTIONS:
            raise ValueError(f"bad Redis store URL: {_REFUSED_REDIS_OPTIONS[name]}")
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix


_VERIFIED = "the server's certificate and name are always checked over TLS"
_REFUSED_REDIS_OPTIONS = {
    "ssl_cert_reqs": f"{_VERIFIED} (no ssl_cert_reqs)",
    "ssl_check_hostname": f"{_VERIFIED} (no ssl_check_hostname)",
    "password": "give the password in the URL before the host or in [store] password_env, "
    "not as a query option",
    "ssl_password": "an encrypted client key (ssl_password) is not supported",
}


#: ``synchronous_commit`` values a PostgreSQL store URL may ask for (PostgreSQL's own names).
POSTGRES_SYNCHRONOUS_COMMIT = ("on", "off", "local", "remote_write", "remote_apply")


def postgres_options(url: str) -> tuple[str, str, str | None]:
    """``(libpq URL without our options, table prefix, synchronous_commit or None)``.

    ``?prefix=team_a_`` gives each deployment sharing one database its own tables (default
    ``oauthproxy_``); ``?synchronous_commit=off`` sets that PostgreSQL setting for the store's
    sessions (``None``: the server's). Needs no psycopg; raises ``ValueError`` for a bad value.
    """
    parts = urlsplit(url)
    prefix = "oauthproxy_"
    synchronous_commit: str | None = None
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "synchronous_commit":
            if value not in POSTGRES_SYNCHRONOUS_COMMIT:
                raise ValueError(
                    f"bad PostgreSQL store URL option synchronous_commit={value!r}: one of "
                    + ", ".join(POSTGRES_SYNCHRONOUS_COMMIT)
                )
            synchronous_commit = value
        else:
            kept.append((name, value))
    try:
        check_postgres_prefix(prefix)
    except ValueError as exc:
        raise ValueError(f"bad PostgreSQL store URL option: {exc}") from None
    return urlunsplit(parts._replace(query=urlencode(kept))), prefix, synchronous_commit


# Letters, digits and underscores, starting with a letter or an underscore: a prefix never needs
# quoting to be read, and the longest table name it makes stays within PostgreSQL's 63 bytes.
_PG_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,39}\Z")


def check_postgres_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a PostgreSQL table name, else raise ``ValueError``."""
    if not _PG_PREFIX.match(prefix):
        raise ValueError(
            f"table prefix {prefix!r} must be 1 to 40 lower-case letters, digits and "
            "underscores, not starting with a digit"
        )
    return prefix


def _require_redis() -> None:
    """Raise ``ImportError`` naming the extra to install when the redis package is absent."""
    if importlib.util.find_spec("redis") is None:
        raise ImportError(_REDIS_EXTRA)


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep:
        # Not quoted: something without a scheme may be a password pasted in the wrong place.
        raise ValueError(f"the store URL has no scheme; expected one of {_SCHEMES}")
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
        _require_redis()
        from .redis import RedisStore  # noqa: PLC0415 (redis is optional)

        redis_url, prefix = redis_options(url)
        return RedisStore(redis_url, prefix=prefix)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        _require_redis()
        from .redis_sentinel import RedisSentinelStore  # noqa: PLC0415 (redis is optional)

        return RedisSentinelStore(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        _require_redis()
        from .redis_cluster import RedisClusterStore  # noqa: PLC0415 (redis is optional)

        return RedisClusterStore(url)
    if scheme in _POSTGRES_SCHEMES:
        pg_url, prefix, synchronous_commit = postgres_options(url)
        try:
            from .postgres import PostgresStore  # noqa: PLC0415 (psycopg is optional)
        except ImportError as exc:
            raise ImportError(_POSTGRES_EXTRA) from exc
        return PostgresStore(pg_url, prefix=prefix, synchronous_commit=synchronous_commit)
    raise ValueError(f"unknown store URL scheme {scheme!r}; expected one of {_SCHEMES}")


def open_async_store(url: str) -> AsyncStore:
    """Open an asyncio store from ``url`` (see the module docstring). Unknown scheme: ValueError."""
    scheme = _scheme(url)
    if scheme == "memory":
        return AsyncMemoryStore()
    if scheme == "sqlite":
        path, synchronous = _sqlite_options(url)
        return AsyncSQLiteStore(path, synchronous=synchronous)
    if scheme in ("redis", "rediss"):
        _require_redis()
        from .redis import AsyncRedisStore  # noqa: PLC0415 (redis is optional)

        redis_url, prefix = redis_options(url)
        return AsyncRedisStore(redis_url, prefix=prefix)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        _require_redis()
        from .redis_sentinel import AsyncRedisSentinelStore  # noqa: PLC0415 (redis is optional)

        return AsyncRedisSentinelStore(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        _require_redis()
        from .redis_cluster import AsyncRedisClusterStore  # noqa: PLC0415 (redis is optional)

        return AsyncRedisClusterStore(url)
    if scheme in _POSTGRES_SCHEMES:
        pg_url, prefix, synchronous_commit = postgres_options(url)
        try:
            from .postgres import AsyncPostgresStore  # noqa: PLC0415 (psycopg is optional)
        except ImportError as exc:
            raise ImportError(_POSTGRES_EXTRA) from exc
        return AsyncPostgresStore(pg_url, prefix=prefix, synchronous_commit=synchronous_commit)
    raise ValueError(f"unknown store URL scheme {scheme!r}; expected one of {_SCHEMES}")


def __getattr__(name: str) -> object:
    # Lazy access to the Redis and PostgreSQL classes without importing redis or psycopg for
    # memory/SQLite users.
    if name in ("RedisStore", "AsyncRedisStore"):
        from . import redis as redis_store  # noqa: PLC0415 (redis is optional)

        return getattr(redis_store, name)
    if name in ("RedisSentinelStore", "AsyncRedisSentinelStore"):
        from . import redis_sentinel  # noqa: PLC0415 (redis is optional)

        return getattr(redis_sentinel, name)
    if name in ("RedisClusterStore", "AsyncRedisClusterStore"):
        from . import redis_cluster  # noqa: PLC0415 (redis is optional)

        return getattr(redis_cluster, name)
    if name in ("PostgresStore", "AsyncPostgresStore"):
        from . import postgres as postgres_store  # noqa: PLC0415 (psycopg is optional)

        return getattr(postgres_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
