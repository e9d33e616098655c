"""A PostgreSQL store in ``proxy.toml`` (issue 19): the URL and its options, the password from the
environment (``[store] password_env``), what ``check-config`` says about it, and the ``oauthproxy
store migrate`` and ``store status`` commands, run as processes against the real PostgreSQL server
of the tests (``OAUTHPROXY_TEST_POSTGRES_URL``, default the ``oauthproxy_test`` database on
127.0.0.1:5432), each test under its own table prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from oauthproxy_adapters import cli
from oauthproxy_adapters.config_file import ConfigError, parse_settings
from oauthproxy_adapters.stores import postgres as postgres_module
from oauthproxy_adapters.stores.postgres import SCHEMA_VERSION, PostgresStore
from tests.adapters.test_cli import SECRET, config, run

POSTGRES_URL = os.environ.get(
    "OAUTHPROXY_TEST_POSTGRES_URL",
    "postgresql://oauthproxy_test:oauthproxy_test@127.0.0.1:5432/oauthproxy_test",
)
PASSWORD = urlsplit(POSTGRES_URL).password or ""
WITHOUT_PASSWORD = POSTGRES_URL.replace(f":{PASSWORD}@", "@") if PASSWORD else POSTGRES_URL

GITHUB = {
    "server": {"base_url": "http://127.0.0.1:8000"},
    "upstream": {"provider": "github", "client_id": "Iv1.abc", "client_secret": SECRET},
}


def settings(store: dict[str, str], environ: dict[str, str] | None = None) -> str:
    """The store URL ``parse_settings`` makes of a ``[store]`` table."""
    return parse_settings({**GITHUB, "store": store}, environ=environ or {}).store_url


def problem(store: dict[str, str], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as failure:
        settings(store, environ)
    return str(failure.value)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:16]}_"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        db.execute(f'DROP TABLE IF EXISTS "{name}records", "{name}schema_version"')


def write_config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        config("http://127.0.0.1:8000", tmp_path / "keys.json").replace('url = "memory://"', store)
    )
    return path


# -- the configuration ------------------------------------------------------------------------------


def test_postgres_urls_are_accepted_with_their_options() -> None:
    for url in (
        "postgresql://app@db.internal:5432/oauth?prefix=team_a_",
        "postgres://app@db.internal/oauth",
        "postgresql:///oauth?host=/var/run/postgresql",
        "postgresql://app@db.internal/oauth?sslmode=verify-full&synchronous_commit=off",
    ):
        assert settings({"url": url}) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://db/oauth?prefix=Team-A", "table prefix 'Team-A' must be"),
        ("postgresql://db/oauth?prefix=", "table prefix '' must be"),
        ("postgresql://db/oauth?synchronous_commit=later", "synchronous_commit='later'"),
        ("postgresql://db:port/oauth", "not a valid PostgreSQL URL"),
    ],
)
def test_bad_postgres_urls_are_problems_of_the_url(url: str, why: str) -> None:
    message = problem({"url": url})
    assert message.startswith("[store].url: "), message
    assert why in message


def test_password_env_puts_the_password_into_the_url_encoded() -> None:
    odd = "p@ss:w/rd %?#"
    url = settings(
        {"url": "postgresql://app@db.internal:5432/oauth?prefix=a_", "password_env": "DB_PW"},
        {"DB_PW": odd},
    )
    assert urlsplit(url).username == "app"
    assert urlsplit(url).hostname == "db.internal" and urlsplit(url).port == 5432
    assert url == "postgresql://app:p%40ss%3Aw%2Frd%20%25%3F%23@db.internal:5432/oauth?prefix=a_"
    # The same for Redis, whose URLs have no user name.
    redis_url = settings({"url": "redis://127.0.0.1:6379/0", "password_env": "R"}, {"R": "s3"})
    assert redis_url == "redis://:s3@127.0.0.1:6379/0"


def test_password_env_problems() -> None:
    pg = "postgresql://app@db.internal/oauth"
    assert "DB_PW is not set or empty" in problem({"url": pg, "password_env": "DB_PW"})
    assert "DB_PW is not set or empty" in problem(
        {"url": pg, "password_env": "DB_PW"}, {"DB_PW": ""}
    )
    assert "has a password already" in problem(
        {"url": "postgresql://app:x@db/oauth", "password_env": "DB_PW"}, {"DB_PW": "y"}
    )
    for url in ("sqlite:///state.db", "memory://"):
        message = problem({"url": url, "password_env": "DB_PW"}, {"DB_PW": "y"})
        assert message.startswith("[store].password_env: ") and "takes no password" in message


def test_check_config_describes_postgres_without_its_password(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        'url = "postgresql://app@db.internal:5432/oauth?prefix=mcp_&synchronous_commit=off"\n'
        'password_env = "DB_PASSWORD"',
    )
    checked = run("check-config", str(path), cwd=tmp_path, env={"DB_PASSWORD": SECRET})
    assert checked.returncode == 0, checked.stderr
    assert (
        "  store     postgresql://app:***@db.internal:5432/oauth?prefix=mcp_&synchronous_commit"
        "=off: shared by every instance using it, tables mcp_records and mcp_schema_version; "
        "survives restarts of the proxy and of PostgreSQL; synchronous_commit=off: a crash of "
        "the database server may lose its last writes\n"
    ) in checked.stdout
    assert SECRET not in checked.stdout + checked.stderr


# -- oauthproxy store migrate / status -----------------------------------------------------------------


def test_store_migrate_and_status_on_postgres(tmp_path: Path, prefix: str) -> None:
    path = write_config(
        tmp_path, f'url = "{WITHOUT_PASSWORD}?prefix={prefix}"\npassword_env = "TEST_PG_PW"'
    )
    env = {"TEST_PG_PW": PASSWORD} if PASSWORD else {}
    if not PASSWORD:
        path.write_text(path.read_text().replace('password_env = "TEST_PG_PW"', ""))

    status = run("store", "status", "--config", str(path), cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert "schema   none yet" in status.stdout  # status creates nothing

    migrated = run("store", "migrate", "--config", str(path), cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == (
        f"schema of {prefix}* migrated to version {SCHEMA_VERSION} (was none)\n"
    )
    again = run("store", "migrate", "--config", str(path), cwd=tmp_path, env=env)
    assert again.stdout == f"schema of {prefix}* at version {SCHEMA_VERSION}: nothing to migrate\n"

    store = PostgresStore(POSTGRES_URL, prefix=prefix, purge_interval=0)
    try:
        store.put("grant", "g1", b"v", 1, 600)
        store.put("client", "c1", b"v", 1, 600)
    finally:
        store.close()
    status = run("store", "status", "--config", str(path), cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[1:] == [
        f"schema   version {SCHEMA_VERSION} (this oauthproxy: {SCHEMA_VERSION})",
        "records  2 (live, and expired ones not yet reclaimed)",
    ]
    if PASSWORD:
        assert f":{PASSWORD}@" not in status.stdout and ":***@" in status.stdout
    # grants list reads the same store (base.ScanningStore on PostgreSQL).
    listed = run("grants", "list", "--config", str(path), cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "skipped" in listed.stderr  # "v" is no grant record: reported, never a traceback


def test_store_migrate_and_status_on_sqlite_and_memory(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "sqlite:///state.db"')
    status = run("store", "status", "--config", str(path), cwd=tmp_path)
    assert status.returncode == 0 and "schema   none yet (no file" in status.stdout
    assert not (tmp_path / "state.db").exists()
    migrated = run("store", "migrate", "--config", str(path), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout == f"{tmp_path / 'state.db'}: schema at version 1\n"
    status = run("store", "status", "--config", str(path), cwd=tmp_path)
    assert status.stdout.splitlines()[1:] == [
        "schema   version 1",
        "records  0 (live, and expired ones not yet reclaimed)",
    ]
    memory = write_config(tmp_path, 'url = "memory://"')
    nothing = run("store", "migrate", "--config", str(memory), cwd=tmp_path)
    assert (
        nothing.returncode == 0
        and nothing.stdout == "memory:// keeps no schema: nothing to migrate\n"
    )


def test_unreachable_postgres_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    """Nothing listens on port 1: ``serve`` and ``store`` say so in one line, never a traceback,
    never with the password."""
    path = write_config(tmp_path, f'url = "postgresql://app:{SECRET}@127.0.0.1:1/oauth"')
    for args in (("serve", "--config", str(path)), ("store", "status", "--config", str(path))):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr
        assert "127.0.0.1" in errors[0] and "Traceback" not in result.stderr
        assert SECRET not in result.stderr + result.stdout


def test_serve_refuses_an_older_schema_and_migrate_brings_it_forward(
    tmp_path: Path,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An older schema is left for the operator (instances of the previous release may still run on
    it): serve says what to run and exits 1; ``store migrate`` runs the missing step. In-process, so
    that this release can pretend to have a second schema version."""
    PostgresStore(POSTGRES_URL, prefix=prefix, purge_interval=0).close()  # version 1

    def to_v2(db: Any, names: Any) -> None:
        db.execute(f'ALTER TABLE "{names.prefix}records" ADD COLUMN note text')

    monkeypatch.setattr(postgres_module, "MIGRATIONS", [*postgres_module.MIGRATIONS, to_v2])
    monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", 2)
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, f'url = "{POSTGRES_URL}?prefix={prefix}"')

    assert cli.main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "schema is at version 1 and this oauthproxy needs 2" in err
    assert "run `oauthproxy store migrate --config <file>`" in err

    assert cli.main(["store", "migrate", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"schema of {prefix}* migrated to version 2 (was version 1)\n"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        rows = db.execute(f'SELECT version FROM "{prefix}schema_version" ORDER BY 1').fetchall()
    assert rows == [(1,), (2,)]
