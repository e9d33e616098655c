"""The ``oauthproxy`` command (also ``python -m oauthproxy_adapters``).

::

    oauthproxy init [--provider P --client-id ID --base-url URL --mcp-url URL] [--yes] [--force]
    oauthproxy serve --config proxy.toml [--host H] [--port P] [--log-level warning]
    oauthproxy check-config proxy.toml
    oauthproxy keys new --out keys.json [--force]
    oauthproxy keys rotate --file keys.json [--which signing|sealing|cookie|all]
    oauthproxy keys retire --file keys.json [--keep 2]
    oauthproxy keys show --file keys.json
    oauthproxy grants list --config proxy.toml [--subject S] [--client C] [--json]
    oauthproxy grants revoke --config proxy.toml (--subject S | --client C | --grant G) [--dry-run]
    oauthproxy store migrate --config proxy.toml
    oauthproxy store status --config proxy.toml
    oauthproxy demo [...]

``init`` writes a first ``proxy.toml`` and keys file from a few answers (``init_config.py``).
``serve`` and ``check-config`` say what matters in a few lines (issuer, resource, provider, store
and its durability, who may sign in) and warn about each exposure (``start_summary.py``). ``serve``
logs through uvicorn's logging configuration with every secret-bearing query value (``code``,
``state``, ``txn``, tokens, credentials) redacted at every level (``log_redaction.py``).

Exit status: 0 success; 2 the configuration (or the command line) is wrong, with one line
``error: [table].key: problem`` on stderr for every problem of the file and never a traceback; 1 any
other failure (a file that exists, a server that could not start, the demo not installed). The
configuration's keys are declared in ``config_schema.py`` (which the help of ``--host``/``--port``,
of ``init``'s options and of ``check-config`` is generated from); key rotation is in ``keygen.py``.
``grants`` lists and revokes the grants of the configured store, while ``serve`` runs
(``grants_admin.py``): ``revoke`` exits 0 when it revoked something and 1 when nothing matched.
``store migrate`` brings the configured store's schema to this release's (PostgreSQL: ``serve``
creates it in an empty database but never migrates one), ``store status`` prints its schema version
and size (``store_admin.py``). ``serve`` whose store cannot be reached at start exits 1 with one
``error:`` line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from . import config_schema
from .config_file import ConfigError, load_settings, redact_url

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
KINDS = ("signing", "sealing", "cookie")


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _overrides(table: str, name: str) -> str:
    """Help of an option that overrides a key: the key's own help and default (config_schema)."""
    k = config_schema.key(table, name)
    return f"{k.doc.rstrip('.')} (overrides {k.path}, default {k.shown_default()})"


def _sets(table: str, name: str, extra: str = "") -> str:
    """Help of an ``init`` option that writes a key: the key's own help (config_schema)."""
    k = config_schema.key(table, name)
    return f"{k.doc.rstrip('.')}{extra} (writes {k.path})"


def _tables_help() -> str:
    lines = ["tables of the configuration file (see the configuration reference for their keys):"]
    for table in config_schema.TABLES:
        title = f"[[{table.name}]]" if table.array else f"[{table.name}]"
        required = " (required)" if table.required else ""
        keys = ", ".join(config_schema.keys_of(table.name))
        lines += textwrap.wrap(
            f"{title}{required}: {keys}", width=88, initial_indent="  ", subsequent_indent="      "
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oauthproxy",
        description="An OAuth 2.1 authorization server (and gateway) in front of an MCP server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .init_config import DEFAULT_BASE_URL, INIT_PROVIDERS  # noqa: PLC0415

    init = sub.add_parser(
        "init",
        help="write a first proxy.toml and keys file, from answers or flags",
        description="Ask for the provider, the proxy's client id there, the public base URL\n"
        "and the MCP server's URL (or take them as flags); write a commented proxy.toml that\n"
        "passes check-config and the keys file (mode 0600); print the callback URL to\n"
        "register at the provider and the commands to run next. The client secret is never\n"
        "asked for nor written: the file names the environment variable that holds it.\n"
        "Existing files are replaced only with --force.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument(
        "--provider",
        help=f"{', '.join(INIT_PROVIDERS)} (for oauth2, write its endpoints by hand) "
        "(writes [upstream].provider)",
    )
    init.add_argument("--client-id", help=_sets("upstream", "client_id"))
    init.add_argument(
        "--base-url", help=_sets("server", "base_url", f"; default {DEFAULT_BASE_URL}")
    )
    init.add_argument(
        "--mcp-url",
        help="the MCP server behind the proxy, which authenticated requests to mcp_path are "
        "forwarded to (writes [gateway].upstream_url)",
    )
    init.add_argument(
        "--client-secret-env",
        help=_sets("upstream", "client_secret_env", "; default <PROVIDER>_CLIENT_SECRET"),
    )
    init.add_argument(
        "--issuer",
        help="oidc only: the provider's issuer URL; its discovery document is fetched to check "
        "it (writes [upstream].issuer)",
    )
    init.add_argument("--tenant", help="entra: " + _sets("upstream", "tenant"))
    init.add_argument(
        "--dir", default=".", help="where to write proxy.toml and .oauthproxy/keys.json (default .)"
    )
    init.add_argument("--out", help="the configuration file to write (default <dir>/proxy.toml)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.add_argument(
        "--non-interactive",
        "--yes",
        "-y",
        dest="non_interactive",
        action="store_true",
        help="ask nothing: take the flags and defaults, or list what is missing (exit 2)",
    )

    serve = sub.add_parser("serve", help="run the proxy (and its gateway) under uvicorn")
    serve.add_argument("--config", required=True, help="the TOML configuration file")
    serve.add_argument("--host", help=_overrides("server", "host"))
    serve.add_argument("--port", type=int, help=_overrides("server", "port"))
    serve.add_argument(
        "--log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level (default: warning)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate a configuration file and summarise it",
        description="Validate a configuration file: every problem is reported, one per line\n"
        '(error: [table].key: problem), or "ok" and the summary serve prints at start\n'
        "(issuer, resource, provider, store, who may sign in, one line per warning).",
        epilog=_tables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("config", help="the TOML configuration file")

    keys = sub.add_parser("keys", help="create and rotate the proxy's keyring")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = ksub.add_parser("new", help="write a fresh keyring (mode 0600)")
    new.add_argument("--out", required=True, help="where to write the keyring")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    rotate = ksub.add_parser("rotate", help="add a new active key; old keys stay valid")
    rotate.add_argument("--file", required=True)
    rotate.add_argument("--which", choices=(*KINDS, "all"), default="all")
    retire = ksub.add_parser("retire", help="drop all but the newest keys of each kind")
    retire.add_argument("--file", required=True)
    retire.add_argument("--keep", type=int, default=2, help="keys to keep per kind (default 2)")
    show = ksub.add_parser("show", help="list the key ids and kinds (no key material)")
    show.add_argument("--file", required=True)

    grants = sub.add_parser(
        "grants",
        help="list and revoke the grants in the configured store, while serve runs",
        description="Grants are the refresh-token families users gave clients. These commands\n"
        "read the store the configuration file names, the one every instance sharing it\n"
        "serves from, and never print a secret.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gsub = grants.add_subparsers(dest="grants_command", required=True, metavar="ACTION")
    listing = gsub.add_parser(
        "list",
        help="the active grants, one line each",
        description="One line per active grant: grant id, subject, client id, scopes, creation\n"
        "and expiry (ISO 8601, UTC) and generation (refreshes so far + 1), oldest first.\n"
        "--subject and --client narrow the list; given both, a grant must match both.\n"
        "A grant record that does not decode is reported as skipped on stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--config", required=True, help="the TOML configuration file")
    listing.add_argument("--subject", metavar="S", help="only the grants of this subject")
    listing.add_argument(
        "--client",
        metavar="C",
        help="only the grants of this client id (--client=C if C starts with -)",
    )
    listing.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document: {"grants": [...], "skipped": [record keys]}',
    )
    revoking = gsub.add_parser(
        "revoke",
        help="revoke grants by subject, client or grant id",
        description="Revoke every active grant of a subject (--subject) or of a client (--client),\n"
        "or one grant (--grant), as a client's RFC 7009 revocation does: the grant's refresh\n"
        "tokens get invalid_grant and its access tokens are refused by every instance sharing\n"
        "the store. With [[resources]], the user's upstream sessions end too: their next\n"
        "server signs in at the provider again. Asks for no confirmation; --dry-run prints what\n"
        "would be revoked and changes nothing. Reads the keyring ([keys].file) like serve,\n"
        "never creates it.\n"
        "Exit status: 0 something was revoked (or would be); 1 nothing matched, or a failure;\n"
        "2 the configuration or the command line is wrong.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    revoking.add_argument("--config", required=True, help="the TOML configuration file")
    which = revoking.add_mutually_exclusive_group(required=True)
    which.add_argument("--subject", metavar="S", help="every active grant of this subject")
    which.add_argument(
        "--client",
        metavar="C",
        help="every active grant of this client id (--client=C if C starts with -)",
    )
    which.add_argument(
        "--grant",
        metavar="G",
        help="this grant, its id as grants list shows it (--grant=G if G starts with -)",
    )
    revoking.add_argument(
        "--dry-run", action="store_true", help="print what would be revoked, change nothing"
    )

    store = sub.add_parser(
        "store",
        help="migrate the configured store's schema, or show its state",
        description="The store the configuration file names, the one every instance sharing it\n"
        "serves from. migrate brings its schema to this oauthproxy's version (PostgreSQL:\n"
        "serve creates the schema in an empty database, but an older one is migrated here,\n"
        "once, after the instances of the previous release are stopped or can live with it);\n"
        "status prints the store, its schema version and the records it holds.\n"
        "Exit status: 0 success; 1 the store cannot be reached or refused; 2 the configuration\n"
        "or the command line is wrong.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ssub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    for name, text in (
        ("migrate", "create or migrate the store's schema (PostgreSQL; SQLite migrates itself)"),
        ("status", "the store, its schema version and how many records it holds"),
    ):
        action = ssub.add_parser(name, help=text, description=text)
        action.add_argument("--config", required=True, help="the TOML configuration file")

    demo = sub.add_parser(
        "demo", help="run the whole flow locally (development only)", add_help=False
    )
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help="passed to the demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if arguments[:1] == ["demo"]:
        # Everything after `demo` belongs to the demo's own parser (argparse's REMAINDER would
        # reject leading options such as `--data-dir`).
        args = argparse.Namespace(command="demo", demo_args=arguments[1:])
    else:
        args = parser.parse_args(arguments)
    try:
        if args.command == "init":
            return _init(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "grants":
            return _grants(args)
        if args.command == "store":
            return _store(args)
        if args.command == "demo":
            return _demo(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILURE
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _init(args: argparse.Namespace) -> int:
    from . import init_config  # noqa: PLC0415

    return init_config.run(args)


def _check_config(args: argparse.Namespace) -> int:
    from .start_summary import summary_lines  # noqa: PLC0415

    settings = load_settings(args.config)
    print(f"ok: {args.config}")
    for line in summary_lines(settings):
        print(line)
    return EXIT_OK


def serve_stack() -> tuple[str, str]:
    """uvicorn's (http, loop) for ``serve``: httptools and uvloop when installed, else pure Python.

    Measured side by side over loopback (benchmarks/compare_loopback.py, benchmarks/README.md): the
    server's CPU per authenticated MCP request is about 190 us on h11 and asyncio and about 57 us
    on httptools and uvloop (the ``fast`` extra); per complete flow 3.9 ms against 3.3 ms. A plain
    install has neither and runs on h11 and asyncio: the same protocol handling, only slower.
    """
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    uvloop = sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None
    return http, "uvloop" if uvloop else "asyncio"


def serve_protocol() -> tuple[type[Any], str]:
    """uvicorn's HTTP protocol class and loop for ``serve``: ``serve_stack``'s, writing one socket
    write per response instead of uvicorn's two (``write_coalescing``)."""
    import uvicorn.config  # noqa: PLC0415
    from uvicorn.importer import import_from_string  # noqa: PLC0415

    from .write_coalescing import coalescing  # noqa: PLC0415

    http, loop = serve_stack()
    return coalescing(import_from_string(uvicorn.config.HTTP_PROTOCOLS[http])), loop


def _serve(args: argparse.Namespace) -> int:
    import attrs  # noqa: PLC0415 (keep `oauthproxy keys` fast)
    import uvicorn  # noqa: PLC0415

    from .app import build_app  # noqa: PLC0415
    from .log_redaction import serve_log_config  # noqa: PLC0415
    from .start_summary import summary_lines  # noqa: PLC0415

    settings = load_settings(args.config)
    if args.host is not None:
        settings = attrs.evolve(settings, host=args.host)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError("--port: must be between 0 and 65535")
        settings = attrs.evolve(settings, port=args.port)
    from .stores.base import StoreUnavailableError  # noqa: PLC0415

    try:
        app, _proxy, _cleanup = build_app(settings)
    except StoreUnavailableError as exc:
        # Not reachable, or a schema this release does not read: say so in one line, no traceback.
        url = settings.store_url
        _error(f"[store].url: {str(exc).replace(url, redact_url(url))}")
        return EXIT_FAILURE
    http, loop = serve_protocol()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http,
        loop=loop,
        log_level=args.log_level,
        # Query values such as the callback's code and state never reach the log, at any level.
        log_config=serve_log_config(uvicorn.config.LOGGING_CONFIG),
        lifespan="on",
        server_header=False,
        # The client address the rate bounds count by (oauthproxy_core.bounds): X-Forwarded-For is
        # believed only from the peers listed in [server] forwarded_allow_ips; [] believes nobody.
        proxy_headers=settings.forwarded_allow_ips != (),
        forwarded_allow_ips=(
            None if settings.forwarded_allow_ips is None else list(settings.forwarded_allow_ips)
        ),
    )
    server = uvicorn.Server(config)
    print(f"oauthproxy: listening on {settings.host}:{settings.port}", file=sys.stderr)
    for line in summary_lines(settings):
        print(line, file=sys.stderr)
    sys.stderr.flush()
    server.run()
    # uvicorn reports a failed start (port in use, ...) in its log and leaves `started` unset.
    return EXIT_OK if server.started else EXIT_FAILURE


def _keys(args: argparse.Namespace) -> int:
    from . import keygen  # noqa: PLC0415
    from .app import read_keys_document, write_keys_document  # noqa: PLC0415

    action = args.keys_command
    if action == "new":
        try:
            write_keys_document(args.out, keygen.new_keyring_document(), overwrite=args.force)
        except FileExistsError:
            _error(f"{args.out} exists; use --force to overwrite it")
            return EXIT_FAILURE
        except OSError as exc:
            _error(f"cannot write {args.out} ({exc.strerror})")
            return EXIT_FAILURE
        print(f"wrote {args.out} (mode 0600)")
        return EXIT_OK
    document = read_keys_document(args.file)
    if action == "show":
        _show(document)
        return EXIT_OK
    if action == "rotate":
        updated = keygen.rotate(document, args.which)
    else:
        if args.keep < 1:
            raise ConfigError("--keep: must be at least 1")
        updated = keygen.retire(document, keep=args.keep)
    try:
        write_keys_document(args.file, updated, overwrite=True)
    except OSError as exc:
        _error(f"cannot write {args.file} ({exc.strerror})")
        return EXIT_FAILURE
    _show(updated)
    return EXIT_OK


def _grants(args: argparse.Namespace) -> int:
    from . import grants_admin  # noqa: PLC0415

    return grants_admin.run(args)


def _store(args: argparse.Namespace) -> int:
    from . import store_admin  # noqa: PLC0415

    return store_admin.run(args)


def _show(document: dict[str, Any]) -> None:
    """Public information only: kinds, kids, key types. Never key material."""
    for kind in KINDS:
        for index, key in enumerate(document.get(kind, [])):
            kid = str(key.get("kid", "?"))
            detail = ""
            if kind == "signing":
                detail = " ".join(str(key[f]) for f in ("kty", "crv") if f in key)
            marker = "active" if index == 0 else "previous"
            print(f"{kind:8} {kid:32} {detail:10} {marker}".rstrip())


def _demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("oauthproxy_adapters.demo")
    except ModuleNotFoundError as exc:
        missing = "" if exc.name == "oauthproxy_adapters.demo" else f" (missing {exc.name})"
        # The demo runs a real MCP server (the `mcp` SDK), which the plain install does not bring.
        print(
            f"demo is not available{missing}: install it with pip install 'oauthproxy[demo]'",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    result = demo.main(list(args.demo_args))
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
