"""Shared record store on PostgreSQL, for deployments that already run one (psycopg 3 and its pool).

Theory of operation:

* Layout: one table, ``<prefix>records (kind, key, value, version, expires_at)`` with the primary
  key ``(kind, key)`` and an index on ``expires_at``; ``<prefix>schema_version`` lists the schema
  versions applied. ``key`` is ``bytea`` (the key's UTF-8): a ``text`` column cannot hold NUL, and a
  key can come from a request (a ``client_id``), so a NUL there must be a miss, never a 5xx.
  ``kind`` is ``text`` in the "C" collation, and so ``scan`` pages in byte order, like the key.
* Atomicity comes from single statements in autocommit mode, never from read-then-write in Python:
  ``take`` is ``DELETE ... RETURNING``; ``compare_and_set`` is one ``UPDATE ... WHERE version = %s``
  or, for "only if absent", one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the existing row has
  expired. Under READ COMMITTED a second writer of one row waits for the first and then re-checks
  its ``WHERE`` against the row the first left, so of two racers one matches and one does not.
* Time is the database server's (``statement_timestamp()``), as Redis keeps its own: instances on
  hosts whose clocks disagree still agree on when a record expires. Tests may inject a clock
  (``clock=``), whose reading is then sent with every statement instead.
* Expiry: every statement compares ``expires_at`` with that time, so an expired row is never
  returned, taken or compared against (spec/security.md 27). Expired rows are deleted in the
  background, the oldest :data:`PURGE_BATCH` at a time (found by the ``expires_at`` index, deleted
  by row address; ``FOR UPDATE SKIP LOCKED``, so instances purging the same table at once do not
  wait for each other), every :data:`PURGE_INTERVAL` seconds, and again after :data:`PURGE_PAUSE`
  while a batch comes back full: a backlog drains at a bounded pace and no request pays for it.
* Schema: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; :func:`migrate` applies
  the missing ones in one transaction under an advisory lock derived from the prefix, so two
  processes migrating at once do not both do it (``oauthproxy store migrate``). Opening a store
  creates the schema in a database that has none, and refuses one at another version: an older
  schema is migrated by the operator (instances of the previous release may still be running on
  it), a newer one needs a newer oauthproxy.
* Listing (``scan``, for operators: ``base.ScanningStore``) reads one kind in pages of
  :data:`SCAN_BATCH` rows in key order, each page one statement starting after the last key of the
  page before, so no transaction stays open between pages.
* Failures: every psycopg error (refused connection, timeout, server error) becomes
  :class:`StoreUnavailableError`, and nothing is retried (a retried ``take`` whose first attempt did
  run would report a miss for a write that happened). Every wait is bounded: connecting
  (``connect_timeout``), waiting for a pooled connection (``timeout``), each statement on the server
  (``statement_timeout`` and ``lock_timeout``), a silent peer (TCP keep-alives and
  ``tcp_user_timeout``), and in the asyncio store each call as a whole. A pooled connection idle for
  :data:`HEALTH_CHECK_IDLE` seconds is checked before it is handed out, so a server restarted
  during a quiet spell costs no request a 503 (one that restarts under load costs one per pooled
  connection, as it would with Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from oauthproxy_core.effects import Stored

from . import POSTGRES_SYNCHRONOUS_COMMIT, check_postgres_prefix
from .base import StoreUnavailableError, check_cas, check_kind, check_put

__all__ = [
    "DEFAULT_PREFIX",
    "HEALTH_CHECK_IDLE",
    "MIGRATIONS",
    "PURGE_BATCH",
    "PURGE_INTERVAL",
    "PURGE_PAUSE",
    "SCAN_BATCH",
    "SCHEMA_VERSION",
    "SIZE_TIMEOUT",
    "AsyncPostgresStore",
    "PostgresStore",
    "migrate",
    "schema_version",
]

#: Table names start with this unless the URL says ``?prefix=``.
DEFAULT_PREFIX = "oauthproxy_"

#: Expired rows deleted by one purge statement.
PURGE_BATCH = 1000
#: Seconds between two purge rounds ...
PURGE_INTERVAL = 5.0
#: ... or between two batches while they come back full (a backlog).
PURGE_PAUSE = 0.05

#: Rows read by one statement of ``scan``.
SCAN_BATCH = 500

#: A pooled connection unused for this many seconds is checked (an empty query) before use.
HEALTH_CHECK_IDLE = 30.0

#: ``size()`` counts every row, which on a table of millions takes longer than the statement
#: timeout of a request: its own statement may take up to this many seconds.
SIZE_TIMEOUT = 120
_SIZE_TIMEOUT_SQL = f"SET LOCAL statement_timeout = {SIZE_TIMEOUT * 1000}"

# The statements, with {r} for the records table. {now} is the statement's time: the injected
# clock's reading when there is one, else the server's; {expires} is that time plus the TTL.
_NOW = "COALESCE(to_timestamp(%(now)s::float8), statement_timestamp())"
_EXPIRES = _NOW + " + make_interval(secs => %(ttl)s::float8)"
_WHERE = "kind = %(kind)s AND key = %(key)s"
_STATEMENTS = {
    "get": "SELECT value, version FROM {r} WHERE {where} AND expires_at > {now}",
    "put": "INSERT INTO {r} (kind, key, value, version, expires_at)"
    " VALUES (%(kind)s, %(key)s, %(value)s, %(version)s, {expires})"
    " ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value,"
    " version = EXCLUDED.version, expires_at = EXCLUDED.expires_at",
    "take": "DELETE FROM {r} WHERE {where} AND expires_at > {now} RETURNING value, version",
    "cas": "UPDATE {r} SET value = %(value)s, version = %(expected)s + 1, expires_at = {expires}"
    " WHERE {where} AND version = %(expected)s AND expires_at > {now}",
    # "Only if absent": a conflicting row is overwritten only when it has expired (the upsert's
    # WHERE); a live one is left alone and no row is reported.
    "insert": "INSERT INTO {r} (kind, key, value, version, expires_at)"
    " VALUES (%(kind)s, %(key)s, %(value)s, 1, {expires})"
    " ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, version = 1,"
    " expires_at = EXCLUDED.expires_at WHERE {r}.expires_at <= {now}",
    "delete": "DELETE FROM {r} WHERE {where}",
    # Two statements rather than a sentinel key, since the empty key is a valid key.
    "scan_first": "SELECT key, value, version FROM {r} WHERE kind = %(kind)s"
    " AND expires_at > {now} ORDER BY key LIMIT %(limit)s",
    "scan_after": "SELECT key, value, version FROM {r} WHERE kind = %(kind)s AND key > %(after)s"
    " AND expires_at > {now} ORDER BY key LIMIT %(limit)s",
    # The oldest expired rows, found by the expires_at index (ORDER BY keeps the planner on it even
    # in a generic plan, which knows nothing of {now}), locked, then deleted by their row address:
    # a join back to the table by key could be planned as a scan of all of it. SKIP LOCKED:
    # instances purging one table at once take different rows instead of waiting.
    "purge": "DELETE FROM {r} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {r}"
    " WHERE expires_at <= {now} ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
    " AND expires_at <= {now}",
    "size": "SELECT count(*) FROM {r}",
    "dump": "SELECT kind, key, value FROM {r} WHERE expires_at > {now} ORDER BY kind, key",
}

_T = TypeVar("_T")


class _Names:
    """The quoted names of one prefix's tables and index, and the statements on them."""

    def __init__(self, prefix: str) -> None:
        check_postgres_prefix(prefix)
        self.prefix = prefix

        self.schema_version_regclass = prefix + "schema_version"
        # A 64-bit advisory lock key per prefix: migrations of one prefix exclude each other only.
        digest = hashlib.sha256(b"oauthproxy schema " + prefix.encode()).digest()
        self.lock_key = int.from_bytes(digest[:8], "big", signed=True)

        statements = {
            name: sql.SQL(text)
            .format(
                r=sql.Identifier(prefix + "records"),
                where=sql.SQL(_WHERE),
                now=sql.SQL(_NOW),
                expires=sql.SQL(_EXPIRES),
            )
            .as_string(None)
            for name, text in _STATEMENTS.items()
        }
        self.get = statements["get"]
        self.put = statements["put"]
        self.take = statements["take"]
        self.cas = statements["cas"]
        self.insert = statements["insert"]
        self.delete = statements["delete"]
        self.scan_first = statements["scan_first"]
        self.scan_after = statements["scan_after"]
        self.purge = statements["purge"]
        self.size = statements["size"]
        self.dump = statements["dump"]

    def ddl(self, template: str) -> sql.Composed:
        """``template`` with ``{records}``, ``{expires_index}``, ``{schema_version}`` filled in."""
        return sql.SQL(template).format(
            records=sql.Identifier(self.prefix + "records"),
            expires_index=sql.Identifier(self.prefix + "records_expires_at"),
            schema_version=sql.Identifier(self.prefix + "schema_version"),
        )


# -- schema ----------------------------------------------------------------------------------------


def _migrate_to_v1(db: psycopg.Connection[Any], names: _Names) -> None:
    # Plain CREATE (no IF NOT EXISTS): a table of that name that we did not create is an error to
    # report, not a table to write into.
    db.execute(
        names.ddl(
            "CREATE TABLE {records} ("
            ' kind text COLLATE "C" NOT NULL,'
            " key bytea NOT NULL,"
            " value bytea NOT NULL,"
            " version bigint NOT NULL,"
            " expires_at timestamptz NOT NULL,"
            " PRIMARY KEY (kind, key))"
        )
    )
    # The background purge finds expired rows by this index.
    db.execute(names.ddl("CREATE INDEX {expires_index} ON {records} (expires_at)"))


#: ``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``, inside the migration's
#: transaction (it must not commit). A v2 schema is one function appended here.
MIGRATIONS: list[Callable[[psycopg.Connection[Any], _Names], None]] = [_migrate_to_v1]

#: The schema version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)


def _version(db: psycopg.Connection[Any], names: _Names) -> int:
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (names.schema_version_regclass,))
    exists = row.fetchone()
    if not exists or not exists[0]:
        return 0
    found = db.execute(
        names.ddl("SELECT COALESCE(max(version), 0) FROM {schema_version}")
    ).fetchone()
    return int(found[0]) if found else 0


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True)


def _migrate_locked(db: psycopg.Connection[Any], names: _Names) -> tuple[int, int]:
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (names.lock_key,))
        db.execute(
            names.ddl(
                "CREATE TABLE IF NOT EXISTS {schema_version} ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        before = _version(db, names)  # again, now that we hold the lock
        if before > SCHEMA_VERSION:
            raise StoreUnavailableError(_newer(before))
        for target in range(before + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target - 1](db, names)
            db.execute(names.ddl("INSERT INTO {schema_version} (version) VALUES (%s)"), (target,))
    return before, SCHEMA_VERSION


def _newer(found: int) -> str:
    return (
        f"the PostgreSQL schema is at version {found}, newer than this oauthproxy supports "
        f"({SCHEMA_VERSION}); upgrade oauthproxy"
    )


def migrate(url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 5.0) -> tuple[int, int]:
    """Bring the schema of ``prefix`` at ``url`` to :data:`SCHEMA_VERSION`; ``(before, after)``.

    ``url`` is a libpq URL without our ``prefix`` option. Raises :class:`StoreUnavailableError`.
    """
    names = _Names(prefix)
    try:
        with _connect(_conninfo(url, timeout)) as db:
            return _migrate_locked(db, names)
    except psycopg.Error as exc:
        raise _unavailable("migrate", exc) from exc


def schema_version(url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 5.0) -> int:
    """The schema version of ``prefix`` at ``url`` (0: no schema). Raises StoreUnavailableError."""
    names = _Names(prefix)
    try:
        with _connect(_conninfo(url, timeout)) as db:
            return _version(db, names)
    except psycopg.Error as exc:
        raise _unavailable("schema check", exc) from exc


def _open_schema(conninfo: str, names: _Names) -> None:
    """Create the schema in a database that has none; refuse one at another version."""
    try:
        with _connect(conninfo) as db:
            found = _version(db, names)
            if found == 0:
                _migrate_locked(db, names)
                return
    except psycopg.Error as exc:
        raise _unavailable("open", exc) from exc
    if found > SCHEMA_VERSION:
        raise StoreUnavailableError(_newer(found))
    if found < SCHEMA_VERSION:
        raise StoreUnavailableError(
            f"the PostgreSQL schema is at version {found} and this oauthproxy needs "
            f"{SCHEMA_VERSION}: run `oauthproxy store migrate --config <file>` (once, from one "
            "place) to migrate it"
        )


# -- connections -----------------------------------------------------------------------------------


def _conninfo(url: str, timeout: float, synchronous_commit: str | None = None) -> str:
    """libpq connection parameters: ``url``'s, with bounded waits where it sets none."""
    given = conninfo_to_dict(url)
    millis = max(1, round(timeout * 1000))
    defaults: dict[str, Any] = {
        # libpq counts whole seconds and treats anything under 2 as 2.
        "connect_timeout": max(2, math.ceil(timeout)),
        "application_name": "oauthproxy",
        # A peer that vanished: unacknowledged data gives up after tcp_user_timeout, an idle
        # connection after the keep-alive probes.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    for name, value in defaults.items():
        given.setdefault(name, value)
    # Each statement is bounded on the server too; appended to any options the URL gives.
    limits = f"-c statement_timeout={millis} -c lock_timeout={millis}"
    if synchronous_commit is not None:
        if synchronous_commit not in POSTGRES_SYNCHRONOUS_COMMIT:
            raise ValueError(f"synchronous_commit must be one of {POSTGRES_SYNCHRONOUS_COMMIT}")
        limits += f" -c synchronous_commit={synchronous_commit}"
    given["options"] = f"{given['options']} {limits}" if given.get("options") else limits
    return make_conninfo("", **given)


def _unavailable(op: str, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"PostgreSQL {op} failed: {type(exc).__name__}: {exc}")


class _Freshness:
    """When each pooled connection was last used, so that one idle for long is checked first.

    Done here rather than with the pool's ``check`` and ``reset`` callbacks, whose bookkeeping costs
    about 25 microseconds on every checkout, a tenth of a whole statement on loopback.
    """

    def __init__(self) -> None:
        self.used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def _stale(self, conn: Any) -> bool:
        # A connection we never used may have waited in the pool for any time: checked too.
        last = self.used.get(conn)
        return last is None or time.monotonic() - last > HEALTH_CHECK_IDLE

    def usable(self, conn: psycopg.Connection[Any]) -> bool:
        """False if ``conn`` was idle long enough to be checked and the check failed."""
        if not self._stale(conn):
            return True
        try:
            conn.execute("")
        except psycopg.OperationalError:
            return False
        return True

    async def ausable(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """:meth:`usable` for an asyncio connection."""
        if not self._stale(conn):
            return True
        try:
            await conn.execute("")
        except psycopg.OperationalError:
            return False
        return True

    def touch(self, conn: Any) -> None:
        self.used[conn] = time.monotonic()


def _stored(row: Any) -> Stored | None:
    return None if row is None else Stored(value=bytes(row[0]), version=int(row[1]))


def _page(rows: list[Any]) -> list[tuple[str, Stored]]:
    return [(bytes(r[0]).decode(), Stored(value=bytes(r[1]), version=int(r[2]))) for r in rows]


class _Common:
    """What the blocking and the asyncio store share: names, parameters, options."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        clock: Callable[[], float] | None,
        timeout: float,
        purge_interval: float,
        synchronous_commit: str | None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.prefix = prefix
        self._names = _Names(prefix)
        self._clock = clock
        self._timeout = timeout
        self._purge_interval = purge_interval
        self._conninfo = _conninfo(url, timeout, synchronous_commit)
        #: The ``synchronous_commit`` this store's sessions set (``None``: the server's).
        self.synchronous_commit = synchronous_commit
        parts = conninfo_to_dict(self._conninfo)
        #: ``host:port/dbname`` as given (never the password), for messages.
        self.location = (
            f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/"
            f"{parts.get('dbname') or parts.get('user') or ''}"
        )
        self._fresh = _Freshness()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location} prefix={self.prefix!r}>"

    def _p(self, kind: str, key: str, **more: Any) -> dict[str, Any]:
        return {"kind": kind, "key": key.encode(), "now": self._now(), **more}

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _pool_options(self) -> dict[str, Any]:
        return {
            "kwargs": {"autocommit": True},
            "timeout": self._timeout,
            "name": f"oauthproxy-{self.prefix}",
        }


# -- the blocking store ----------------------------------------------------------------------------


class PostgresStore(_Common):
    """A :class:`~oauthproxy_adapters.stores.base.SyncStore` on PostgreSQL (psycopg 3, pooled).

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/dbname``, any libpq parameter in
    its query) without our ``prefix`` option, which is the keyword argument here. ``clock``
    replaces the server's time (tests); ``timeout`` bounds each wait (seconds); ``min_size`` and
    ``max_size`` size the pool; ``purge_interval`` paces the background purge (0: no purge thread);
    ``synchronous_commit`` (``"off"`` ...) overrides the server's setting for the store's sessions:
    ``off`` answers a write before its WAL record is on disk, so a crash of the database server may
    lose the last fraction of a second of writes (never corrupt the tables).
    Opening checks the schema (creating it in an empty database) and raises
    :class:`StoreUnavailableError` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        timeout: float = 2.0,
        min_size: int = 1,
        max_size: int = 10,
        purge_interval: float = PURGE_INTERVAL,
        synchronous_commit: str | None = None,
    ) -> None:
        super().__init__(
            url,
            prefix=prefix,
            clock=clock,
            timeout=timeout,
            purge_interval=purge_interval,
            synchronous_commit=synchronous_commit,
        )
        self._max_size = max_size
        _open_schema(self._conninfo, self._names)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo,
            min_size=min_size,
            max_size=max_size,
            open=True,
            **self._pool_options(),
        )
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None
        if purge_interval > 0:
            self._purger = threading.Thread(
                target=self._purge_forever, name="oauthproxy-postgres-purge", daemon=True
            )
            self._purger.start()

    def _run(self, op: str, query: str, params: Mapping[str, Any], read: Callable[..., _T]) -> _T:
        try:
            # Every pooled connection may have died with the server: each is tried once at most.
            for _attempt in range(self._max_size + 1):
                with self._pool.connection() as conn:
                    if not self._fresh.usable(conn):
                        continue  # dead: the pool drops it; nothing of ours was sent on it
                    result = read(conn.execute(query, params, binary=True))
                    self._fresh.touch(conn)
                    return result
        except psycopg.Error as exc:
            raise _unavailable(op, exc) from exc
        raise StoreUnavailableError(f"PostgreSQL {op} failed: no live connection to the server")

    # -- the store contract -----------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        return _stored(self._run("get", self._names.get, self._p(kind, key), _one))

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        params = self._p(kind, key, value=bytes(value), version=version, ttl=ttl)
        self._run("put", self._names.put, params, _count)

    def take(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        return _stored(self._run("take", self._names.take, self._p(kind, key), _one))

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        params = self._p(kind, key, value=bytes(value), ttl=ttl, expected=expected_version)
        query = self._names.insert if expected_version == 0 else self._names.cas
        return self._run("compare_and_set", query, params, _count) == 1

    def delete(self, kind: str, key: str) -> None:
        check_kind(kind)
        self._run("delete", self._names.delete, self._p(kind, key), _count)

    def close(self) -> None:
        """Stop the purge and close the pool; later calls raise :class:`StoreUnavailableError`."""
        self._stop.set()
        if self._purger is not None:
            self._purger.join(timeout=self._timeout + 5)
        self._pool.close()

    # -- listing (operators: base.ScanningStore) --------------------------------------------------

    def scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        """The live records of ``kind``, read in pages of :data:`SCAN_BATCH` (module docstring)."""
        check_kind(kind)
        return self._scan(kind)

    def _scan(self, kind: str) -> Iterator[tuple[str, Stored]]:
        after: str | None = None
        while True:
            page = self.scan_page(kind, after)
            yield from page
            if len(page) < SCAN_BATCH:
                return
            after = page[-1][0]

    def scan_page(self, kind: str, after: str | None) -> list[tuple[str, Stored]]:
        """One page of ``scan``: the live records of ``kind`` with a key after ``after``."""
        params: dict[str, Any] = {"kind": kind, "now": self._now(), "limit": SCAN_BATCH}
        if after is None:
            return _page(self._run("scan", self._names.scan_first, params, _all))
        params["after"] = after.encode()
        return _page(self._run("scan", self._names.scan_after, params, _all))

    # -- expiry and size --------------------------------------------------------------------------

    def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` expired rows now; returns how many were deleted."""
        params = {"now": self._now(), "limit": limit}
        return self._run("purge", self._names.purge, params, _count)

    def _purge_forever(self) -> None:
        delay = self._purge_interval
        while not self._stop.wait(delay):
            try:
                full = self.purge_expired() >= PURGE_BATCH
            except StoreUnavailableError:
                full = False  # the next round tries again; requests report the outage
            delay = PURGE_PAUSE if full else self._purge_interval

    def size(self) -> int:
        """Rows held, live or expired and not yet purged (a full count: O(rows), bounded by
        :data:`SIZE_TIMEOUT`)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(_SIZE_TIMEOUT_SQL)
                row = conn.execute(self._names.size).fetchone()
        except psycopg.Error as exc:
            raise _unavailable("size", exc) from exc
        return int(row[0]) if row else 0

    # -- inspection (tests, operators) ------------------------------------------------------------

    def dump(self) -> list[tuple[str, str, bytes]]:
        """Every live record as ``(kind, key, value)``: what an attacker reading the tables sees."""
        rows = self._run("dump", self._names.dump, {"now": self._now()}, _all)
        return [(str(r[0]), bytes(r[1]).decode(), bytes(r[2])) for r in rows]

    def schema_version(self) -> int:
        """The schema version recorded in the ``schema_version`` table."""
        try:
            with self._pool.connection() as conn:
                return _version(conn, self._names)
        except psycopg.Error as exc:
            raise _unavailable("schema check", exc) from exc

    def drop_tables(self) -> None:
        """Drop this prefix's tables, every record with them (tests)."""
        names = self._names
        try:
            with self._pool.connection() as conn:
                conn.execute(names.ddl("DROP TABLE IF EXISTS {records}, {schema_version}"))
        except psycopg.Error as exc:
            raise _unavailable("drop", exc) from exc


def _one(cur: Any) -> Any:
    return cur.fetchone()


def _all(cur: Any) -> list[Any]:
    return list(cur.fetchall())


def _count(cur: Any) -> int:
    return int(cur.rowcount)


async def _aone(cur: Any) -> Any:
    return await cur.fetchone()


async def _aall(cur: Any) -> list[Any]:
    return list(await cur.fetchall())


async def _acount(cur: Any) -> int:
    return int(cur.rowcount)


# -- the asyncio store -----------------------------------------------------------------------------


class AsyncPostgresStore(_Common):
    """The asyncio twin of :class:`PostgresStore` (psycopg's ``AsyncConnectionPool``).

    The constructor runs outside any event loop (``open_async_store`` is called before the server
    starts), so it checks the schema with one blocking connection and opens the pool, and starts the
    purge task, at the first call, inside the loop that serves. Each call as a whole is bounded by
    twice ``timeout`` plus a second (a pooled connection, then the statement).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        timeout: float = 2.0,
        min_size: int = 1,
        max_size: int = 10,
        purge_interval: float = PURGE_INTERVAL,
        synchronous_commit: str | None = None,
    ) -> None:
        super().__init__(
            url,
            prefix=prefix,
            clock=clock,
            timeout=timeout,
            purge_interval=purge_interval,
            synchronous_commit=synchronous_commit,
        )
        self._max_size = max_size
        _open_schema(self._conninfo, self._names)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            **self._pool_options(),
        )
        self._opening: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._closed = False
        self._call_timeout = 2 * timeout + 1

    async def _open(self) -> None:
        await self._pool.open()
        if self._purge_interval > 0:
            self._purger = asyncio.get_running_loop().create_task(
                self._purge_forever(), name="oauthproxy-postgres-purge"
            )

    async def _ready(self) -> None:
        if self._closed:
            raise StoreUnavailableError(f"PostgreSQL store {self.location} is closed")
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
        # Every caller waits for the one opening (a done task costs one await); shield() keeps
        # a caller's cancellation from cancelling the opening that others wait for.
        await asyncio.shield(self._opening)

    async def _run(
        self, op: str, query: str, params: Mapping[str, Any], read: Callable[..., Any]
    ) -> Any:
        try:
            async with asyncio.timeout(self._call_timeout):
                if self._opening is None or not self._opening.done():
                    await self._ready()
                elif self._closed:
                    raise StoreUnavailableError(f"PostgreSQL store {self.location} is closed")
                for _attempt in range(self._max_size + 1):
                    async with self._pool.connection() as conn:
                        if not await self._fresh.ausable(conn):
                            continue  # dead: the pool drops it; nothing of ours was sent on it
                        result = await read(await conn.execute(query, params, binary=True))
                        self._fresh.touch(conn)
                        return result
        except psycopg.Error as exc:
            raise _unavailable(op, exc) from exc
        except TimeoutError as exc:
            raise _unavailable(op, exc) from exc
        raise StoreUnavailableError(f"PostgreSQL {op} failed: no live connection to the server")

    async def get(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        return _stored(await self._run("get", self._names.get, self._p(kind, key), _aone))

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        params = self._p(kind, key, value=bytes(value), version=version, ttl=ttl)
        await self._run("put", self._names.put, params, _acount)

    async def take(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        return _stored(await self._run("take", self._names.take, self._p(kind, key), _aone))

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        params = self._p(kind, key, value=bytes(value), ttl=ttl, expected=expected_version)
        query = self._names.insert if expected_version == 0 else self._names.cas
        written: int = await self._run("compare_and_set", query, params, _acount)
        return written == 1

    async def delete(self, kind: str, key: str) -> None:
        check_kind(kind)
        await self._run("delete", self._names.delete, self._p(kind, key), _acount)

    async def close(self) -> None:
        self._closed = True
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening
            await self._pool.close()

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        """:meth:`PostgresStore.scan` on the asyncio pool."""
        check_kind(kind)
        return self._scan(kind)

    async def _scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"kind": kind, "now": self._now(), "limit": SCAN_BATCH}
            if after is None:
                rows = await self._run("scan", self._names.scan_first, params, _aall)
            else:
                params["after"] = after.encode()
                rows = await self._run("scan", self._names.scan_after, params, _aall)
            page = _page(rows)
            for record in page:
                yield record
            if len(page) < SCAN_BATCH:
                return
            after = page[-1][0]

    async def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` expired rows now; returns how many were deleted."""
        deleted: int = await self._run(
            "purge", self._names.purge, {"now": self._now(), "limit": limit}, _acount
        )
        return deleted

    async def _purge_forever(self) -> None:
        delay = self._purge_interval
        while True:
            await asyncio.sleep(delay)
            try:
                full = await self.purge_expired() >= PURGE_BATCH
            except StoreUnavailableError:
                full = False
            delay = PURGE_PAUSE if full else self._purge_interval

    async def size(self) -> int:
        """:meth:`PostgresStore.size` on the asyncio pool."""
        try:
            async with asyncio.timeout(SIZE_TIMEOUT + self._call_timeout):
                await self._ready()
                async with self._pool.connection() as conn, conn.transaction():
                    await conn.execute(_SIZE_TIMEOUT_SQL)
                    cur = await conn.execute(self._names.size)
                    row = await cur.fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            raise _unavailable("size", exc) from exc
        return int(row[0]) if row else 0

    async def dump(self) -> list[tuple[str, str, bytes]]:
        """Every live record as ``(kind, key, value)`` (tests)."""
        rows = await self._run("dump", self._names.dump, {"now": self._now()}, _aall)
        return [(str(r[0]), bytes(r[1]).decode(), bytes(r[2])) for r in rows]
