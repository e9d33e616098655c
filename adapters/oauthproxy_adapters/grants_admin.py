"""``oauthproxy grants list`` and ``grants revoke``: the grants of a store, for operators.

A grant is one refresh-token family (OAuth 2.1 §4.3.1): what a user's approval of one client gave
it, rotated at every refresh. Both commands read the configuration file as ``serve`` does
(``config_file.load_settings``) and open the store it names, so they act on what every instance
sharing that store serves from, while those instances run.

Theory of operation:

* Listing. The store contract has no listing (spec/architecture.md, "Storage contract"), so the
  commands ask for a store that also implements ``stores.base.ScanningStore`` and read its records
  of kind ``grant`` with ``scan``; a store without it is refused with a message, and so is
  ``memory://``, whose records live inside the serving process. Each record is decoded with the
  core's codec; one that does not decode is reported as skipped (by its key) and never stops the
  command. Only ``active`` grants are listed or revoked.
* Revocation goes through the core, never around it: ``oauthproxy_core.grants.revoke_grant`` with
  ``GrantEvent.operator_revoked``, run by the blocking driver with a ``Context`` built by
  ``AuthorizationServer.context``, as ``Proxy`` builds one. It writes the grant's revocation marker
  first, which the bearer check of every instance sharing the store consults (spec/security.md 34),
  then moves the grant to ``revoked`` through the grant machine, which drops its sealed provider
  tokens; a refresh with any of its tokens is then ``invalid_grant`` (spec/security.md 21). What
  happened to each grant is read from the domain events the core emits (``GrantChanged``), the ones
  the audit log records; the ``oauthproxy.audit`` logger gets them too, when something enabled it.
* Output: grant id, subject, client id, scopes, creation and expiry (ISO 8601, UTC), generation.
  Never a refresh-token digest nor a sealed token (spec/security.md 24). Text that came from outside
  (a subject is the provider's, a client id may be a URL a client chose) is printed with its
  unprintable characters escaped, so that it cannot send control sequences to the terminal.

Exit status: 0 success (for ``revoke``: something was revoked); 1 nothing matched, or a failure (the
store unreachable, a store that cannot list); 2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import attrs

from oauthproxy_core import AuthorizationServer, codec
from oauthproxy_core.domain_events import GrantChanged
from oauthproxy_core.effects import Emit
from oauthproxy_core.errors import TemporarilyUnavailableError
from oauthproxy_core.grants import revoke_grant
from oauthproxy_core.keys import Keyring
from oauthproxy_core.records import Grant
from oauthproxy_core.states import GrantEvent, GrantState
from oauthproxy_core.upstream_session import end_sessions

from . import audit
from .config_file import ConfigError, Settings, load_settings, redact_url
from .driver import run as drive
from .stores import open_store, sqlite_file
from .stores.base import ScanningStore, StoreUnavailableError, SyncStore

__all__ = [
    "AdminError",
    "Listing",
    "Outcome",
    "active_grants",
    "grant_json",
    "grant_table",
    "open_admin_store",
    "revoke",
    "run",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
KIND = "grant"


class AdminError(Exception):
    """A failure of an operator command, reported in one line (exit status 1)."""


@attrs.frozen
class Listing:
    """The active grants a scan found, and the keys of the grant records that did not decode."""

    grants: tuple[Grant, ...]
    skipped: tuple[str, ...]


class Outcome(enum.Enum):
    """What one revocation did, read from the domain events of ``revoke_grant``."""

    #: The grant moved to ``revoked`` (or its record was gone and the marker alone stands for it).
    REVOKED = "revoked"
    #: Nothing changed: the grant had already left ``active`` (another request revoked it first).
    NOT_ACTIVE = "not active"
    #: Concurrent writers won every compare-and-set: the marker is written (its access tokens are
    #: refused) but the grant is still ``active``; running the command again finishes it.
    CONFLICT = "conflict"


# -- the store -------------------------------------------------------------------------------------


def open_admin_store(settings: Settings) -> SyncStore:
    """The store ``serve`` uses with ``settings``, opened for an operator command.

    Refuses ``memory://`` (nothing outside the serving process can reach it) and a SQLite file that
    does not exist (opening would create an empty one: the wrong working directory, most likely).
    Raises ``AdminError``, ``ConfigError`` or ``StoreUnavailableError``.
    """
    url = settings.store_url
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        raise AdminError(
            "[store].url is memory://: its records live inside the serving process and no other "
            "process can read them; grants can be listed and revoked in a SQLite, Redis or "
            "PostgreSQL store"
        )
    try:
        if scheme == "sqlite":
            path = sqlite_file(url)
            if not os.path.exists(path):
                raise AdminError(
                    f"no store at {path}: `oauthproxy serve` with this configuration creates it "
                    "(relative paths and sqlite:// follow the working directory and "
                    "$OAUTHPROXY_DATA_DIR, as for serve)"
                )
        return open_store(url)
    except (ValueError, ImportError, OSError) as exc:
        # The message may quote the URL: never with a Redis password in it.
        raise ConfigError(f"[store].url: {str(exc).replace(url, redact_url(url))}") from None


def _scanning(store: SyncStore) -> ScanningStore:
    if not isinstance(store, ScanningStore):
        raise AdminError(
            f"this store ({type(store).__name__}) cannot list its records: it does not implement "
            "oauthproxy_adapters.stores.base.ScanningStore"
        )
    return store


def active_grants(
    store: SyncStore, *, subject: str | None = None, client_id: str | None = None
) -> Listing:
    """Every active grant of the store, of ``subject`` and of ``client_id`` when given, oldest
    first. Raises ``AdminError`` for a store that cannot list, ``StoreUnavailableError``."""
    found: list[Grant] = []
    skipped: list[str] = []
    for key, stored in _scanning(store).scan(KIND):
        try:
            grant = codec.decode(stored.value, Grant, stored.version)
        except codec.CorruptRecordError:
            skipped.append(key)
            continue
        if grant.state != GrantState.active.value:
            continue
        if subject is not None and grant.subject != subject:
            continue
        if client_id is not None and grant.client_id != client_id:
            continue
        found.append(grant)
    found.sort(key=lambda g: (g.created_at, g.id))
    return Listing(grants=tuple(found), skipped=tuple(sorted(skipped)))


# -- revocation ------------------------------------------------------------------------------------


def end_subject_sessions(store: SyncStore, server: AuthorizationServer, subject: str) -> None:
    """End every upstream session of ``subject`` begun until now (upstream_session.py)."""
    drive(end_sessions(server.context(now=int(time.time()), random=os.urandom), subject), store)


def revoke(
    store: SyncStore,
    server: AuthorizationServer,
    grant_id: str,
    *,
    clock: Callable[[], float] = time.time,
    random: Callable[[int], bytes] = os.urandom,
) -> Outcome:
    """Revoke one grant as an operator, through the core (see the module docstring).

    Raises ``TemporarilyUnavailableError`` when the store fails (the driver's translation of
    ``StoreUnavailableError``).
    """
    changes: list[GrantChanged] = []

    def observe(effect: Any, result: Any, seconds: float) -> None:
        if type(effect) is Emit and isinstance(effect.event, GrantChanged):
            changes.append(effect.event)
        audit.observe(effect, result, seconds)

    ctx = server.context(now=int(clock()), random=random)
    drive(revoke_grant(ctx, grant_id, GrantEvent.operator_revoked), store, observe=observe)
    if any(
        c.applied
        and c.cause == GrantEvent.operator_revoked.value
        and c.state == GrantState.revoked.value
        for c in changes
    ):
        return Outcome.REVOKED
    return Outcome.CONFLICT if changes else Outcome.NOT_ACTIVE


# -- output ----------------------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` with every unprintable character escaped (``\\x1b``, ``\\u2028``, ...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant_json(grant: Grant) -> dict[str, Any]:
    """The fields of ``grant`` an operator sees (none of them secret)."""
    return {
        "grant_id": grant.id,
        "subject": grant.subject,
        "client_id": grant.client_id,
        "scopes": list(grant.scopes),
        "created_at": _iso(grant.created_at),
        "expires_at": _iso(grant.expires_at),
        "generation": grant.generation,
    }


_COLUMNS = ("GRANT", "SUBJECT", "CLIENT", "SCOPES", "CREATED", "EXPIRES", "GENERATION")


def _cells(grant: Grant) -> tuple[str, ...]:
    return (
        _printable(grant.id),
        _printable(grant.subject),
        _printable(grant.client_id),
        _printable(" ".join(grant.scopes)),
        _iso(grant.created_at),
        _iso(grant.expires_at),
        str(grant.generation),
    )


def grant_table(grants: Iterable[Grant]) -> list[str]:
    """A header and one aligned line per grant."""
    rows = [_COLUMNS, *(_cells(g) for g in grants)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _describe(grant: Grant) -> str:
    return (
        f"{_printable(grant.id)} (subject {_printable(grant.subject)}, "
        f"client {_printable(grant.client_id)})"
    )


# -- the commands ----------------------------------------------------------------------------------


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _warn_skipped(skipped: Iterable[str]) -> None:
    for key in skipped:
        print(
            f"warning: skipped grant record {_printable(key)}: it does not decode "
            "(damaged, or written by another version of oauthproxy)",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    """Run ``grants list`` or ``grants revoke``; returns the exit status. Raises ``ConfigError``."""
    settings = load_settings(args.config)
    try:
        store = open_admin_store(settings)
    except (AdminError, StoreUnavailableError) as exc:
        _error(str(exc).replace(settings.store_url, redact_url(settings.store_url)))
        return EXIT_FAILURE
    try:
        if args.grants_command == "list":
            return _list(args, store)
        return _revoke(args, settings, store)
    except (AdminError, StoreUnavailableError, TemporarilyUnavailableError) as exc:
        text = str(exc).replace(settings.store_url, redact_url(settings.store_url))
        if not isinstance(exc, AdminError):
            text = f"the store is unavailable, nothing more was done: {text}"
        _error(text)
        return EXIT_FAILURE
    finally:
        store.close()


def _list(args: argparse.Namespace, store: SyncStore) -> int:
    listing = active_grants(store, subject=args.subject, client_id=args.client)
    _warn_skipped(listing.skipped)
    if args.json:
        document = {
            "grants": [grant_json(g) for g in listing.grants],
            "skipped": list(listing.skipped),
        }
        print(json.dumps(document, indent=2))
    elif listing.grants:
        for line in grant_table(listing.grants):
            print(line)
    else:
        print("no active grants" + _matching(args))
    return EXIT_OK


def _matching(args: argparse.Namespace) -> str:
    parts = []
    if args.subject is not None:
        parts.append(f"of subject {_printable(args.subject)}")
    if args.client is not None:
        parts.append(f"of client {_printable(args.client)}")
    return (" " + " and ".join(parts)) if parts else ""


def _targets(
    args: argparse.Namespace, store: SyncStore, *, none_is_fine: bool = False
) -> list[tuple[str, str]]:
    """``(grant id, description)`` of each grant to revoke; reports why when there is none (as an
    error unless ``none_is_fine``)."""
    if args.grant is None:
        listing = active_grants(store, subject=args.subject, client_id=args.client)
        _warn_skipped(listing.skipped)
        if not listing.grants:
            if none_is_fine:
                print("no active grant" + _matching(args))
            else:
                _error("no active grant" + _matching(args))
        return [(g.id, _describe(g)) for g in listing.grants]
    name = _printable(args.grant)
    stored = store.get(KIND, args.grant)
    if stored is None:
        _error(f"no grant {name} in the store (never issued, or expired)")
        return []
    try:
        grant = codec.decode(stored.value, Grant, stored.version)
    except codec.CorruptRecordError:
        # Its access tokens may still be in use: the marker alone refuses them.
        return [(args.grant, f"{name} (its record does not decode: only its marker is written)")]
    if grant.state != GrantState.active.value:
        _error(f"grant {name} is already {grant.state}")
        return []
    return [(grant.id, _describe(grant))]


def _revoke(args: argparse.Namespace, settings: Settings, store: SyncStore) -> int:
    from .app import read_keys_document  # noqa: PLC0415 (app imports the web stack)

    # Read before anything is changed, so that a dry run also proves the real run can proceed.
    server = AuthorizationServer(
        settings.proxy, Keyring.from_dict(read_keys_document(settings.keys_file))
    )
    # With several resources, a subject's upstream sessions are ended whatever its grants are:
    # one just signed in, or whose grants ended otherwise, would still mint grants from a session
    # (spec/security.md 40).
    sessions = args.subject is not None and bool(settings.proxy.resources)
    if sessions and not args.dry_run:
        end_subject_sessions(store, server, args.subject)
        print(f"ended the upstream sessions of subject {_printable(args.subject)}")
    ended = sessions and not args.dry_run
    targets = _targets(args, store, none_is_fine=ended)
    if not targets:
        return EXIT_OK if ended else EXIT_FAILURE
    if args.dry_run:
        for _grant_id, description in targets:
            print(f"would revoke {description}")
        print(f"would revoke {len(targets)} grant(s); dry run, nothing changed")
        return EXIT_OK
    revoked = 0
    for grant_id, description in targets:
        outcome = revoke(store, server, grant_id)
        if outcome is Outcome.REVOKED:
            revoked += 1
            print(f"revoked {description}")
        elif outcome is Outcome.NOT_ACTIVE:
            print(
                f"warning: {description} was revoked by something else meanwhile", file=sys.stderr
            )
        else:
            print(
                f"warning: {description}: its access tokens are refused, but concurrent updates "
                "kept it active; run the command again",
                file=sys.stderr,
            )
    print(f"revoked {revoked} grant(s)")
    return EXIT_OK if revoked else EXIT_FAILURE
