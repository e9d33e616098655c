"""Embedded record store: one SQLite file in WAL mode, the default for a single proxy host.

Theory of operation:

* One connection per thread (``threading.local``), all in autocommit mode
  (``isolation_level=None``), so that every store operation is a single SQL statement and therefore
  its own transaction. SQLite's file locking serialises writers across threads *and* processes on
  one machine; ``busy_timeout`` makes a writer wait for the lock instead of failing at once.
* Atomicity comes from single statements, never from read-then-write in Python:
  ``take`` is ``DELETE ... RETURNING`` (SQLite >= 3.35; older libraries fall back to
  ``BEGIN IMMEDIATE`` + ``SELECT`` + ``DELETE``), ``compare_and_set`` is one ``UPDATE ... WHERE
  version = ?`` or, for "only if absent", one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the
  existing row has expired.
* Expiry: every statement compares ``expires_at`` with the clock, so an expired row is never
  returned, taken or compared against (spec/security.md 27). Expired rows are deleted incrementally:
  every :data:`PURGE_EVERY` writes, at most :data:`PURGE_BATCH` of them, and after every write
  while the batch before came back full. So a write pays for at most one batch, and a backlog
  (after a quiet spell, or a burst of short-lived records) drains up to :data:`PURGE_BATCH` times
  faster than records are written.
* Schema: a ``meta`` table holds ``schema_version``; :data:`MIGRATIONS` lists one function per
  version step, applied in order inside ``BEGIN IMMEDIATE`` so that two processes opening a new file
  at once do not both migrate it.
* Listing (``scan``, for operators: ``base.ScanningStore``) reads one kind in pages of
  :data:`SCAN_BATCH` rows in key order, each page one statement that starts after the last key of
  the page before, so no read transaction stays open between pages and a long listing never holds
  back the WAL checkpoint.
* The file and its directory are created private (0o600 / 0o700): the store holds hashes and
  encrypted blobs only (spec/security.md 24), but there is no reason to let other users read it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from oauthproxy_core.effects import Stored

from .base import StoreUnavailableError, check_cas, check_kind, check_put

__all__ = [
    "MIGRATIONS",
    "PURGE_BATCH",
    "PURGE_EVERY",
    "SCAN_BATCH",
    "SCHEMA_VERSION",
    "AsyncSQLiteStore",
    "SQLiteStore",
    "default_sqlite_path",
    "purge_batch",
]

#: Environment variable naming the directory that holds ``state.db``.
DATA_DIR_ENV = "OAUTHPROXY_DATA_DIR"

#: Expired rows are purged once every this many writes ...
PURGE_EVERY = 100
#: ... at most this many at a time (bounds the latency one write pays for expiry).
PURGE_BATCH = 100

#: Rows read by one statement of ``scan``.
SCAN_BATCH = 500

#: How long a statement waits for another connection's write lock before failing (milliseconds).
BUSY_TIMEOUT_MS = 5_000

# DELETE ... RETURNING appeared in SQLite 3.35.0.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def default_sqlite_path() -> str:
    """``$OAUTHPROXY_DATA_DIR/state.db`` if the variable is set, else ``./.oauthproxy/state.db``.

    The result is absolute (resolved against the current directory now), so that a later ``chdir``
    does not move the store.
    """
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        return os.path.abspath(os.path.join(data_dir, "state.db"))
    return os.path.abspath(os.path.join(".oauthproxy", "state.db"))


# -- schema ----------------------------------------------------------------------------------------


def _migrate_to_v1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS records ("
        " kind TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " value BLOB NOT NULL,"
        " version INTEGER NOT NULL,"
        " expires_at REAL NOT NULL,"
        " PRIMARY KEY (kind, key)"
        ") WITHOUT ROWID"
    )
    # The incremental purge looks rows up by expiry.
    db.execute("CREATE INDEX IF NOT EXISTS records_expires_at ON records (expires_at)")


#: ``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``. A v2 schema is one
#: function appended here; it runs inside the migration transaction and must not commit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_v1]

#: The schema version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(db: sqlite3.Connection) -> int:
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return 0 if row is None else int(row[0])


def _migrate(db: sqlite3.Connection) -> None:
    if _schema_version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID")
        current = _schema_version(db)  # again, now that we hold the write lock
        if current > SCHEMA_VERSION:
            raise StoreUnavailableError(
                f"database schema version {current} is newer than this oauthproxy supports "
                f"({SCHEMA_VERSION}); upgrade oauthproxy"
            )
        for step in MIGRATIONS[current:]:
            step(db)
        db.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (SCHEMA_VERSION,),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# -- the store -------------------------------------------------------------------------------------


class _Connection:
    """Holds one thread's connection; weakly referenced by the store so ``close`` can reach it."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db


_SQL_GET = "SELECT value, version FROM records WHERE kind = ? AND key = ? AND expires_at > ?"
_SQL_PUT = (
    "INSERT INTO records (kind, key, value, version, expires_at) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (kind, key) DO UPDATE SET"
    " value = excluded.value, version = excluded.version, expires_at = excluded.expires_at"
)
_SQL_TAKE = (
    "DELETE FROM records WHERE kind = ? AND key = ? AND expires_at > ? RETURNING value, version"
)
_SQL_CAS = (
    "UPDATE records SET value = ?, version = ?, expires_at = ?"
    " WHERE kind = ? AND key = ? AND version = ? AND expires_at > ?"
)
# "Only if absent": an expired row counts as absent, so the conflicting row is overwritten only
# when it has expired (the upsert's WHERE); otherwise nothing changes and rowcount is 0.
_SQL_INSERT = (
    "INSERT INTO records (kind, key, value, version, expires_at) VALUES (?, ?, ?, 1, ?)"
    " ON CONFLICT (kind, key) DO UPDATE SET"
    " value = excluded.value, version = 1, expires_at = excluded.expires_at"
    " WHERE records.expires_at <= ?"
)
_SQL_DELETE = "DELETE FROM records WHERE kind = ? AND key = ?"
# Pages of one kind in key order (the primary key's order): the first page, then the pages after a
# key. Two statements rather than a sentinel, since the empty string is a valid key.
_SQL_SCAN_FIRST = (
    "SELECT key, value, version FROM records WHERE kind = ? AND expires_at > ? ORDER BY key LIMIT ?"
)
_SQL_SCAN_AFTER = (
    "SELECT key, value, version FROM records WHERE kind = ? AND key > ? AND expires_at > ?"
    " ORDER BY key LIMIT ?"
)
_SQL_PURGE = (
    "DELETE FROM records WHERE (kind, key) IN"
    " (SELECT kind, key FROM records WHERE expires_at <= ? LIMIT ?)"
)


class SQLiteStore:
    """A :class:`~oauthproxy_adapters.stores.base.SyncStore` in one SQLite file.

    Safe to share between threads (one connection each) and between processes on one machine
    (SQLite's locking). ``clock`` returns the current time in seconds (injectable for tests).
    """

    # How this store's connections wait for a lock and maintain the file (_LoopSQLiteStore differs).
    _busy_timeout_ms = BUSY_TIMEOUT_MS
    _autocheckpoint = True
    _purge_on_write = True

    def __init__(
        self, path: str, *, clock: Callable[[], float] = time.time, synchronous: str = "normal"
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self.synchronous = synchronous.upper()
        if not path or path == ":memory:" or path.startswith("file:"):
            # A per-thread connection to ":memory:" would give every thread its own database.
            raise ValueError(
                f"SQLiteStore needs a file path, got {path!r}"
                " (use memory:// for an in-memory store)"
            )
        self.path = os.path.abspath(path)
        self._clock = clock
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._closed = False
        self._writes = 0
        self._purge_backlog = False
        self._use_returning = _HAS_RETURNING
        try:
            _create_private_file(self.path)
            db = self._db()
            # WAL is a property of the file: set once, every later connection inherits it.
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailableError(f"cannot put {self.path} in WAL mode (got {mode!r})")
            _migrate(db)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailableError(f"cannot create SQLite store {self.path}: {exc}") from exc

    # -- connections ------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        holder: _Connection | None = getattr(self._local, "conn", None)
        if holder is not None:
            return holder.db
        if self._closed:
            raise StoreUnavailableError(f"SQLite store {self.path} is closed")
        db = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,  # used by its own thread only, but closed by close()
        )
        db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        if not self._autocheckpoint:
            db.execute("PRAGMA wal_autocheckpoint = 0")
        # NORMAL (the default) in WAL mode: every commit survives a crash or SIGKILL of the
        # process; only an OS crash or power cut may lose the last commits. FULL also survives
        # those (a consumed code or rotated refresh token can never roll back to usable), at about
        # 200 us of fsync per write; choose it with sqlite:///path.db?synchronous=full.
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        holder = _Connection(db)
        self._local.conn = holder
        with self._connections_lock:
            self._connections.add(holder)
        return db

    def _after_write(self, db: sqlite3.Connection, now: float) -> None:
        # A racy counter and flag are fine: they only pace the purge.
        self._writes += 1
        if self._purge_on_write and (self._purge_backlog or self._writes % PURGE_EVERY == 0):
            self._purge_backlog = purge_batch(db, now) >= PURGE_BATCH

    # -- the store contract -----------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        try:
            row = self._db().execute(_SQL_GET, (kind, key, self._clock())).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite get failed: {exc}") from exc
        return None if row is None else Stored(value=bytes(row[0]), version=row[1])

    def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        check_put(kind, version, ttl)
        try:
            db = self._db()
            now = self._clock()
            db.execute(_SQL_PUT, (kind, key, bytes(value), version, now + ttl))
            self._after_write(db, now)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite put failed: {exc}") from exc

    def take(self, kind: str, key: str) -> Stored | None:
        check_kind(kind)
        try:
            db = self._db()
            now = self._clock()
            if self._use_returning:
                # fetchall steps the statement to completion, which ends its implicit transaction.
                rows = db.execute(_SQL_TAKE, (kind, key, now)).fetchall()
            else:
                rows = self._take_without_returning(db, kind, key, now)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite take failed: {exc}") from exc
        if not rows:
            return None
        return Stored(value=bytes(rows[0][0]), version=rows[0][1])

    @staticmethod
    def _take_without_returning(
        db: sqlite3.Connection, kind: str, key: str, now: float
    ) -> list[Any]:
        # BEGIN IMMEDIATE takes the write lock before the read, so no other connection can take
        # the same row between our SELECT and DELETE.
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(_SQL_GET, (kind, key, now)).fetchall()
            if rows:
                db.execute(_SQL_DELETE, (kind, key))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return rows

    def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        check_cas(kind, expected_version, ttl)
        try:
            db = self._db()
            now = self._clock()
            if expected_version == 0:
                cur = db.execute(_SQL_INSERT, (kind, key, bytes(value), now + ttl, now))
            else:
                cur = db.execute(
                    _SQL_CAS,
                    (
                        bytes(value),
                        expected_version + 1,
                        now + ttl,
                        kind,
                        key,
                        expected_version,
                        now,
                    ),
                )
            written = cur.rowcount == 1
            if written:
                self._after_write(db, now)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite compare_and_set failed: {exc}") from exc
        return written

    def delete(self, kind: str, key: str) -> None:
        check_kind(kind)
        try:
            self._db().execute(_SQL_DELETE, (kind, key))
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite delete failed: {exc}") from exc

    def close(self) -> None:
        """Close every thread's connection; later calls raise :class:`StoreUnavailableError`."""
        self._closed = True
        with self._connections_lock:
            holders = list(self._connections)
            self._connections.clear()
        for holder in holders:
            holder.db.close()
        self._local = threading.local()

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
        try:
            db = self._db()
            now = self._clock()
            if after is None:
                rows = db.execute(_SQL_SCAN_FIRST, (kind, now, SCAN_BATCH)).fetchall()
            else:
                rows = db.execute(_SQL_SCAN_AFTER, (kind, after, now, SCAN_BATCH)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite scan failed: {exc}") from exc
        return [(str(r[0]), Stored(value=bytes(r[1]), version=r[2])) for r in rows]

    # -- inspection (tests, operators) ------------------------------------------------------------

    def dump(self) -> list[tuple[str, str, bytes]]:
        """Every live record as ``(kind, key, value)``: what an attacker reading the file sees."""
        try:
            rows = (
                self._db()
                .execute(
                    "SELECT kind, key, value FROM records WHERE expires_at > ? ORDER BY kind, key",
                    (self._clock(),),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite dump failed: {exc}") from exc
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def size(self) -> int:
        """Rows held, live or expired and not yet purged (a full count: O(rows))."""
        try:
            row = self._db().execute("SELECT count(*) FROM records").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite size failed: {exc}") from exc
        return int(row[0])

    def schema_version(self) -> int:
        """The schema version recorded in the file's ``meta`` table."""
        return _schema_version(self._db())

    def journal_mode(self) -> str:
        """The file's journal mode (``"wal"``)."""
        return str(self._db().execute("PRAGMA journal_mode").fetchone()[0]).lower()


def purge_batch(db: sqlite3.Connection, now: float) -> int:
    """Delete up to :data:`PURGE_BATCH` expired rows; returns how many were deleted."""
    return int(db.execute(_SQL_PURGE, (now, PURGE_BATCH)).rowcount)


def _create_private_file(path: str) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        # SQLite creates its -wal and -shm files with the database file's permissions.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


_T = TypeVar("_T")

#: Writes made on the event loop's connection between two maintenance runs on the worker pool
#: (purge of expired rows and a passive WAL checkpoint, which that connection never does itself).
INLINE_MAINTENANCE_EVERY = 100
#: Purge batches one maintenance run deletes at most, while they come back full.
MAINTENANCE_BATCHES = 10

# SQLITE_BUSY and SQLITE_LOCKED: another connection holds a lock this statement needs.
_BUSY_CODES = (5, 6)


class _LoopSQLiteStore(SQLiteStore):
    """The event loop's own connection: it never waits for a lock, never checkpoints, never purges.

    A statement that would wait fails at once with ``SQLITE_BUSY`` instead (``busy_timeout = 0``),
    and :class:`AsyncSQLiteStore` then runs it on its worker pool, where waiting is harmless.
    Opening the file (WAL check, schema check) still waits like :class:`SQLiteStore`.
    """

    _autocheckpoint = False
    _purge_on_write = False

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._busy_timeout_ms = 0  # connections opened from now on never wait
        try:
            self._db().execute("PRAGMA busy_timeout = 0")  # nor does the one opened above
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open SQLite store {self.path}: {exc}") from exc


def _is_busy(exc: StoreUnavailableError) -> bool:
    cause = exc.__cause__
    if not isinstance(cause, sqlite3.OperationalError):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python < 3.11
        return "locked" in str(cause) or "busy" in str(cause)
    return code & 0xFF in _BUSY_CODES


class AsyncSQLiteStore:
    """The asyncio face of :class:`SQLiteStore`, without a thread hop per call where none is needed.

    A round trip to a worker thread costs about 130 us of wake-ups, while the statements themselves
    take a few microseconds (a read) to a few tens (a write with ``synchronous=normal``). So:

    * Reads run on the event loop's own connection. In WAL mode a reader never waits for a writer.
    * Writes run there too when ``synchronous`` is ``normal``: a WAL commit then is a ``write()`` to
      the WAL file, no ``fsync``. With ``synchronous=full`` every commit syncs, so writes go to the
      worker pool and the loop never blocks on the disk.
    * The loop's connection has ``busy_timeout = 0``: a statement that would wait for another
      connection's lock (another process writing, a checkpoint) fails at once, nothing changed, and
      is run again on the worker pool, whose connections wait as :class:`SQLiteStore` does.
    * That connection never checkpoints the WAL and never purges: every
      :data:`INLINE_MAINTENANCE_EVERY` inline writes, the pool runs one purge batch and a passive
      checkpoint (neither blocks writers).

    Each statement is still one autocommit transaction, so atomicity and read-your-writes are those
    of :class:`SQLiteStore`. The pool is private (not the loop's default executor) so that a burst of
    store calls cannot starve other ``to_thread`` users, and so that the number of SQLite connections
    stays bounded.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        max_threads: int = 4,
        synchronous: str = "normal",
    ) -> None:
        self.sync = SQLiteStore(path, clock=clock, synchronous=synchronous)
        self._loop_store = _LoopSQLiteStore(path, clock=clock, synchronous=synchronous)
        self._inline_writes = self.sync.synchronous == "NORMAL"
        self._writes_since_maintenance = 0
        self._maintaining = False
        self._executor = ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="oauthproxy-sqlite"
        )

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._loop_store, name)(*args)
        except StoreUnavailableError as exc:
            if not _is_busy(exc):
                raise
        return await self._run(getattr(self.sync, name), *args)

    async def _write(self, name: str, *args: Any) -> Any:
        if self._inline_writes:
            try:
                result = getattr(self._loop_store, name)(*args)
            except StoreUnavailableError as exc:
                if not _is_busy(exc):
                    raise
            else:
                self._after_inline_write()
                return result
        return await self._run(getattr(self.sync, name), *args)

    def _after_inline_write(self) -> None:
        self._writes_since_maintenance += 1
        if self._writes_since_maintenance >= INLINE_MAINTENANCE_EVERY and not self._maintaining:
            self._writes_since_maintenance = 0
            self._maintaining = True
            try:
                self._executor.submit(self._maintain)
            except RuntimeError:  # the pool is shut down: the store is closing
                self._maintaining = False

    def _maintain(self) -> None:
        try:
            db = self.sync._db()
            now = self.sync._clock()
            # A full batch means more are waiting: a few more, each its own short transaction, so
            # that writers on the loop wait for the lock at most one batch at a time.
            for _ in range(MAINTENANCE_BATCHES):
                if purge_batch(db, now) < PURGE_BATCH:
                    break
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, StoreUnavailableError):
            pass  # maintenance only; the next run tries again
        finally:
            self._maintaining = False

    async def get(self, kind: str, key: str) -> Stored | None:
        result: Stored | None = await self._read("get", kind, key)
        return result

    async def put(self, kind: str, key: str, value: bytes, version: int, ttl: int) -> None:
        await self._write("put", kind, key, value, version, ttl)

    async def take(self, kind: str, key: str) -> Stored | None:
        result: Stored | None = await self._write("take", kind, key)
        return result

    async def compare_and_set(
        self, kind: str, key: str, expected_version: int, value: bytes, ttl: int
    ) -> bool:
        written: bool = await self._write(
            "compare_and_set", kind, key, expected_version, value, ttl
        )
        return written

    async def delete(self, kind: str, key: str) -> None:
        await self._write("delete", kind, key)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self._loop_store.close()
        self.sync.close()

    def scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        """:meth:`SQLiteStore.scan`, each page read like any other read (on the loop's connection,
        or on the pool while another connection holds a lock)."""
        check_kind(kind)
        return self._scan(kind)

    async def _scan(self, kind: str) -> AsyncIterator[tuple[str, Stored]]:
        after: str | None = None
        while True:
            page: list[tuple[str, Stored]] = await self._read("scan_page", kind, after)
            for record in page:
                yield record
            if len(page) < SCAN_BATCH:
                return
            after = page[-1][0]

    def dump(self) -> list[tuple[str, str, bytes]]:
        return self.sync.dump()

    async def size(self) -> int:
        """:meth:`SQLiteStore.size` on the worker pool (a count reads every row)."""
        return await self._run(self.sync.size)
