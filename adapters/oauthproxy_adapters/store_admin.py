"""``oauthproxy store migrate`` and ``store status``: the configured store's schema, for operators.

Both read the configuration file as ``serve`` does (``config_file.load_settings``) and act on the
store it names (spec/architecture.md, "Storage contract").

* ``migrate`` brings the store's schema to the version this oauthproxy reads and writes. PostgreSQL
  is the store that needs it: ``serve`` creates the schema in a database that has none, but refuses
  one at an older version, since instances of the previous release may still be running on it
  (``stores.postgres``: the migration runs in one transaction under an advisory lock, so running it
  from two places at once is harmless). A SQLite file migrates itself when it is opened, so
  ``migrate`` opens it (creating it, as ``serve`` would); Redis and ``memory://`` keep no schema.
* ``status`` prints the store as the start summary names it, its schema version, and how many
  records it holds (``size()``: live ones and expired ones not yet reclaimed; a count of every row or
  key, so it takes a moment on a large store). It changes nothing: a PostgreSQL database without the
  schema is reported as such, not given one.

Exit status: 0 success; 1 the store could not be reached or refused (a newer schema); 2 the
configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .config_file import ConfigError, Settings, load_settings, redact_url
from .start_summary import store_durability
from .stores import open_store, postgres_options, sqlite_file
from .stores.base import SizedStore, StoreUnavailableError
from .stores.sqlite import SQLiteStore

__all__ = ["migrate", "run", "status"]

EXIT_OK = 0
EXIT_FAILURE = 1
_POSTGRES = ("postgresql", "postgres")


def _scheme(settings: Settings) -> str:
    return settings.store_url.partition("://")[0].lower()


def _postgres() -> Any:
    try:
        from .stores import postgres  # noqa: PLC0415 (psycopg is optional)
    except ImportError:
        raise ConfigError(
            "[store].url: the PostgreSQL store needs psycopg: pip install 'oauthproxy[postgres]'"
        ) from None
    return postgres


def migrate(settings: Settings) -> str:
    """Migrate the store ``settings`` name; returns one line saying what was done.

    Raises ``StoreUnavailableError`` (unreachable, or a schema newer than this oauthproxy's)."""
    scheme = _scheme(settings)
    url = settings.store_url
    if scheme in _POSTGRES:
        postgres = _postgres()
        libpq_url, prefix, _sync = postgres_options(url)
        before, after = postgres.migrate(libpq_url, prefix=prefix)
        if before == after:
            return f"schema of {prefix}* at version {after}: nothing to migrate"
        was = "none" if before == 0 else f"version {before}"
        return f"schema of {prefix}* migrated to version {after} (was {was})"
    if scheme == "sqlite":
        store = open_store(url)  # opening migrates, inside its own exclusive transaction
        try:
            assert isinstance(store, SQLiteStore)
            return f"{sqlite_file(url)}: schema at version {store.schema_version()}"
        finally:
            store.close()
    return f"{scheme}:// keeps no schema: nothing to migrate"


def status(settings: Settings) -> list[str]:
    """``store``, ``schema`` and ``records`` lines for the store ``settings`` name."""
    scheme = _scheme(settings)
    url = settings.store_url
    lines = [f"store    {store_durability(url)}"]
    if scheme == "memory":
        lines.append("records  (held inside the serving process: no other process can count them)")
        return lines
    if scheme in _POSTGRES:
        postgres = _postgres()
        libpq_url, prefix, _sync = postgres_options(url)
        version = postgres.schema_version(libpq_url, prefix=prefix)
        if version == 0:
            lines.append("schema   none yet (serve or `oauthproxy store migrate` creates it)")
            return lines
        lines.append(f"schema   version {version} (this oauthproxy: {postgres.SCHEMA_VERSION})")
        if version != postgres.SCHEMA_VERSION:
            return lines
        store: Any = postgres.PostgresStore(libpq_url, prefix=prefix, purge_interval=0)
    elif scheme == "sqlite":
        if not os.path.exists(sqlite_file(url)):
            lines.append(
                "schema   none yet (no file: serve or `oauthproxy store migrate` creates it)"
            )
            return lines
        store = open_store(url)
        assert isinstance(store, SQLiteStore)
        lines.append(f"schema   version {store.schema_version()}")
    else:
        store = open_store(url)
    try:
        if isinstance(store, SizedStore):
            lines.append(f"records  {store.size():,} (live, and expired ones not yet reclaimed)")
    finally:
        store.close()
    return lines


def run(args: argparse.Namespace) -> int:
    """The ``store`` command: ``args.store_command`` is ``migrate`` or ``status``."""
    settings = load_settings(args.config)
    try:
        if args.store_command == "migrate":
            print(migrate(settings))
        else:
            for line in status(settings):
                print(line)
    except StoreUnavailableError as exc:
        message = str(exc).replace(settings.store_url, redact_url(settings.store_url))
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, ImportError, OSError) as exc:
        message = str(exc).replace(settings.store_url, redact_url(settings.store_url))
        raise ConfigError(f"[store].url: {message}") from None
    return EXIT_OK
