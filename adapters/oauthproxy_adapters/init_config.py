"""``oauthproxy init``: a first ``proxy.toml`` and keys file, from a few answers or flags.

It asks for (or takes as flags) the provider, the proxy's client id there, the proxy's public base
URL and the URL of the MCP server behind it (``oidc`` also its issuer, ``entra`` its tenant), then:

- checks the answers exactly as ``check-config`` will check the file (``config_file.parse_settings``
  on the very document it is about to write; the client secret's environment variable may be unset
  now), so the file it writes passes ``check-config``. Asked interactively, a refused answer is
  asked again with the reason; with ``--non-interactive`` every problem is listed and nothing is
  written (exit status 2);
- writes ``proxy.toml``, each key commented with its help from ``config_schema`` (the one
  declaration of every key), the secret only as the name of an environment variable;
- writes the keys file as ``oauthproxy keys new`` does (``app.write_keys_document``: mode 0600, its
  directory 0700);
- refuses to replace either file without ``--force`` (exit status 1, nothing written);
- prints the callback URL to register at the provider (``<base_url>/auth/callback``), where the
  provider's console asks for it, and the commands to run next.

Values are written as TOML basic strings with every quote, backslash and control character escaped
(``toml_string``), so no answer can add a key or a table to the file.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from typing import IO, Any
from urllib.parse import urlsplit

import attrs

from oauthproxy_core.url_policy import is_loopback_host

from . import config_schema
from .config_file import ConfigError, parse_settings

__all__ = ["INIT_PROVIDERS", "PROVIDER_HINTS", "Answers", "check", "render", "run", "toml_string"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

#: The providers ``init`` configures from a client id alone (``oauth2`` needs three endpoints).
INIT_PROVIDERS = ("github", "google", "entra", "oidc")

#: Where each provider's console takes the callback URL (spec/docs/providers/*.md in full).
PROVIDER_HINTS: dict[str, str] = {
    "github": "GitHub: Settings > Developer settings > OAuth Apps > New OAuth App (for an "
    'organization: its Settings > Developer settings > OAuth Apps), field "Authorization callback '
    'URL"; then "Generate a new client secret".',
    "google": "Google Cloud console: APIs & Services > Credentials > Create credentials > OAuth "
    'client ID, application type "Web application", under "Authorized redirect URIs" (Google '
    "accepts http only for localhost).",
    "entra": "Microsoft Entra admin center: Identity > Applications > App registrations > New "
    'registration, "Redirect URI" with platform "Web"; then Certificates & secrets > New client '
    "secret (copy its Value).",
    "oidc": "your provider's settings for a confidential (web) client: add it to the allowed "
    "redirect (callback) URIs, exactly as written.",
}

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
CONFIG_NAME = "proxy.toml"
KEYS_NAME = os.path.join(".oauthproxy", "keys.json")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen(kw_only=True)
class Answers:
    """What ``init`` writes; ``None``: not answered yet."""

    provider: str | None = None
    client_id: str | None = None
    base_url: str | None = None
    mcp_url: str | None = None
    client_secret_env: str | None = None
    issuer: str | None = None
    tenant: str | None = None

    def secret_env(self) -> str:
        """The environment variable named in the file (``GITHUB_CLIENT_SECRET`` by default)."""
        return self.client_secret_env or f"{(self.provider or 'upstream').upper()}_CLIENT_SECRET"


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string: quote, backslash and control characters escaped."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _comment(table: str, name: str, extra: str = "") -> list[str]:
    """The key's help from the schema, as ``#`` lines (backquotes dropped)."""
    text = (config_schema.key(table, name).doc + " " + extra).strip().replace("`", "")
    return textwrap.wrap(text, width=96, initial_indent="# ", subsequent_indent="# ")


def _listen_port(base_url: str) -> int:
    """The port of a loopback base URL (the proxy is reached directly), else the default."""
    parts = urlsplit(base_url)
    default: int = config_schema.key("server", "port").default
    try:
        port = parts.port
    except ValueError:
        return default
    return port if port and is_loopback_host(parts.hostname) else default


def render(a: Answers) -> str:
    """The commented ``proxy.toml`` for complete answers."""
    assert a.provider is not None and a.client_id is not None
    assert a.base_url is not None and a.mcp_url is not None
    keys_file = KEYS_NAME.replace(os.sep, "/")
    lines = [
        "# proxy.toml, written by `oauthproxy init`. Check it with `oauthproxy check-config",
        "# proxy.toml`; every key is in the configuration reference. Relative paths are",
        "# relative to the directory `oauthproxy serve` runs in.",
        "",
        "[server]",
        *_comment("server", "base_url"),
        f"base_url = {toml_string(a.base_url)}",
        *_comment("server", "host"),
        f"host = {toml_string(config_schema.key('server', 'host').default)}",
        *_comment("server", "port"),
        f"port = {_listen_port(a.base_url)}",
        *_comment("server", "mcp_path"),
        f"# mcp_path = {toml_string(config_schema.key('server', 'mcp_path').default)}",
        "",
        "[upstream]",
        f"provider = {toml_string(a.provider)}",
        *_comment("upstream", "client_id"),
        f"client_id = {toml_string(a.client_id)}",
        *_comment("upstream", "client_secret_env", "The secret itself is never written here."),
        f"client_secret_env = {toml_string(a.secret_env())}",
    ]
    if a.provider == "oidc":
        lines += [*_comment("upstream", "issuer"), f"issuer = {toml_string(a.issuer or '')}"]
    if a.provider == "entra":
        tenant = a.tenant or config_schema.key("upstream", "tenant").default
        lines += [*_comment("upstream", "tenant"), f"tenant = {toml_string(tenant)}"]
    lines += [
        "",
        "[gateway]",
        *_comment("gateway", "upstream_url"),
        f"upstream_url = {toml_string(a.mcp_url)}",
        "",
        "[store]",
        *_comment("store", "url"),
        "# Left out, it is sqlite://, created on first start.",
        '# url = "redis://127.0.0.1:6379/0?prefix=oauthproxy:"',
        "",
        "[keys]",
        *_comment("keys", "file"),
        f"file = {toml_string(keys_file)}",
        "",
    ]
    return "\n".join(lines)


#: ``[table].key`` of a problem -> the answer that caused it.
_FIELDS = {
    "[server].base_url": "base_url",
    "[upstream].provider": "provider",
    "[upstream].client_id": "client_id",
    "[upstream].client_secret_env": "client_secret_env",
    "[upstream].issuer": "issuer",
    "[upstream].tenant": "tenant",
    "[gateway].upstream_url": "mcp_url",
}


def check(a: Answers, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(answer, problem)`` for everything ``check-config`` would refuse in ``render(a)``.

    The client secret's variable may be unset now (the secret is read by ``serve``); everything
    else is checked as at load, OIDC discovery included.
    """
    quick = _quick_problem("provider", a)
    if quick is not None:
        return [("provider", quick)]
    if not _ENV_NAME.fullmatch(a.secret_env()):
        why = "--client-secret-env: must be an environment variable name (A-Z, a-z, 0-9, _)"
        return [("client_secret_env", why)]
    env = dict(os.environ if environ is None else environ)
    env[a.secret_env()] = env.get(a.secret_env()) or "set-when-serve-starts"
    try:
        parse_settings(tomllib.loads(render(a)), environ=env)
    except ConfigError as exc:
        found = []
        for line in exc.problems:
            where, _, why = line.partition(": ")
            # "[upstream].issuer (discovered jwks_uri)" is still about the issuer answer.
            found.append((_FIELDS.get(where.split(" ", 1)[0], ""), line))
        return found
    return []


# -- the command -----------------------------------------------------------------------------------


@attrs.frozen
class _Question:
    field: str
    prompt: str
    default: Callable[[Answers], str | None]


def _questions(a: Answers) -> list[_Question]:
    provider = a.provider or "github"
    questions = [
        _Question("provider", f"Provider ({', '.join(INIT_PROVIDERS)})", lambda _a: "github"),
    ]
    if provider == "oidc":
        questions.append(_Question("issuer", "Issuer URL of the OIDC provider", lambda _a: None))
    if provider == "entra":
        tenant = config_schema.key("upstream", "tenant").default
        questions.append(
            _Question(
                "tenant",
                "Entra tenant (a tenant GUID, organizations, common or consumers)",
                lambda _a: tenant,
            )
        )
    questions += [
        _Question("client_id", f"Client id of this proxy at {provider}", lambda _a: None),
        _Question(
            "base_url", "Public base URL of this proxy (the issuer)", lambda _a: DEFAULT_BASE_URL
        ),
        _Question("mcp_url", "URL of the MCP server behind the proxy", lambda _a: None),
    ]
    return questions


class _NoAnswer(Exception):
    pass


def _ask(question: _Question, a: Answers, stdin: IO[str], stderr: IO[str]) -> str:
    default = question.default(a)
    while True:
        stderr.write(f"{question.prompt}{f' [{default}]' if default else ''}: ")
        stderr.flush()
        line = stdin.readline()
        if not line:
            stderr.write("\n")
            raise _NoAnswer(question.field)
        answer = line.strip() or (default or "")
        if answer:
            return answer


def _normalise(field: str, value: str) -> str:
    # A trailing slash is the most common slip in a base URL; the issuer must not have one.
    return value.rstrip("/") if field == "base_url" and value.count("/") > 2 else value


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _quick_problem(field: str, a: Answers) -> str | None:
    """What is wrong with one answer on its own (asked again at once), or ``None``."""
    if field == "provider" and a.provider not in INIT_PROVIDERS:
        hint = config_schema.suggestion(a.provider or "", INIT_PROVIDERS)
        return f"--provider: must be one of {', '.join(INIT_PROVIDERS)}{hint}"
    return None


#: Stand-ins for answers not given yet, so that one answer can be checked as soon as it is given.
_STAND_INS = {
    "client_id": "stand-in",
    "base_url": DEFAULT_BASE_URL,
    "mcp_url": "http://127.0.0.1:9/mcp",
}


def _problems_of(field: str, a: Answers) -> list[str]:
    """The problems ``check`` finds with the answer ``field`` (others stand in when missing)."""
    quick = _quick_problem(field, a)
    if quick is not None:
        return [quick]
    stand_ins = {f: v for f, v in _STAND_INS.items() if getattr(a, f) is None}
    return [why for f, why in check(attrs.evolve(a, **stand_ins)) if f == field]


def gather(
    given: Answers, *, interactive: bool, stdin: IO[str], stderr: IO[str]
) -> tuple[Answers, list[str]]:
    """Complete ``given``: ask for what is missing (or, non-interactive, take the defaults), then
    check; a refused answer is asked again interactively. Returns the answers and the problems
    left (empty when the answers are good)."""
    a = given
    if not interactive:
        defaults = {q.field: q.default(a) for q in _questions(a) if q.field != "provider"}
        a = attrs.evolve(a, **{f: getattr(a, f) or d for f, d in defaults.items()})
        missing = [f for f in ("provider", "client_id", "mcp_url") if getattr(a, f) is None]
        if a.provider == "oidc" and a.issuer is None:
            missing.append("issuer")
        problems = [f"{_flag(f)}: required with --non-interactive" for f in missing]
        quick = _quick_problem("provider", a) if a.provider is not None else None
        if problems or quick:
            return a, [*([quick] if quick else []), *problems]
        return a, [why for _field, why in check(a)]
    while True:
        # One question at a time: the provider decides which questions follow.
        pending = [q for q in _questions(a) if getattr(a, q.field) is None]
        if pending:
            question = pending[0]
            a = attrs.evolve(
                a,
                **{question.field: _normalise(question.field, _ask(question, a, stdin, stderr))},
            )
            refused = _problems_of(question.field, a)
            for why in refused:
                stderr.write(f"error: {why}\n")
            if refused:
                a = attrs.evolve(a, **{question.field: None})
            continue
        # Each answer passed on its own; what is left is about answers together.
        found = check(a)
        if not found:
            return a, []
        unfixable = [why for field, why in found if not field]
        if unfixable:
            return a, unfixable
        for _field, why in found:
            stderr.write(f"error: {why}\n")
        a = attrs.evolve(a, **{field: None for field, _why in found})


def _shown(path: str) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path


def run(args: Any, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """The ``init`` command (``args`` from ``cli``'s parser)."""
    from .app import write_keys_document  # noqa: PLC0415 (keys need joserfc: load it late)
    from .keygen import new_keyring_document  # noqa: PLC0415

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = sys.stderr
    directory = os.path.abspath(args.dir)
    config_path = os.path.abspath(args.out or os.path.join(directory, CONFIG_NAME))
    keys_path = os.path.join(directory, KEYS_NAME)
    existing = [p for p in (config_path, keys_path) if os.path.exists(p)]
    if existing and not args.force:
        for path in existing:
            stderr.write(f"error: {_shown(path)} exists; use --force to replace it\n")
        return EXIT_FAILURE
    given = Answers(
        provider=args.provider,
        client_id=args.client_id,
        base_url=_normalise("base_url", args.base_url) if args.base_url else None,
        mcp_url=args.mcp_url,
        client_secret_env=args.client_secret_env,
        issuer=args.issuer,
        tenant=args.tenant,
    )
    try:
        answers, problems = gather(
            given, interactive=not args.non_interactive, stdin=stdin, stderr=stderr
        )
    except _NoAnswer as exc:
        stderr.write(f"error: no answer for {_flag(str(exc))} (end of input)\n")
        return EXIT_CONFIG
    if problems:
        for why in problems:
            stderr.write(f"error: {why}\n")
        return EXIT_CONFIG
    try:
        _write_config(config_path, render(answers), replace=args.force)
        write_keys_document(keys_path, new_keyring_document(), overwrite=args.force)
    except FileExistsError as exc:
        stderr.write(f"error: {_shown(str(exc.filename))} exists; use --force to replace it\n")
        return EXIT_FAILURE
    except OSError as exc:
        stderr.write(f"error: cannot write {exc.filename} ({exc.strerror})\n")
        return EXIT_FAILURE
    stdout.write(_next_steps(answers, directory, config_path, keys_path))
    return EXIT_OK


def _write_config(path: str, text: str, *, replace: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w" if replace else "x", encoding="utf-8") as f:
        f.write(text)


def _next_steps(a: Answers, directory: str, config_path: str, keys_path: str) -> str:
    """What was written, the callback URL to register, and the commands to run next."""
    assert a.provider and a.base_url
    config_arg = os.path.relpath(config_path, directory)
    if config_arg.startswith(".."):
        config_arg = config_path
    commands = [] if directory == os.getcwd() else [f"cd {directory}"]
    commands += [
        f"export {a.secret_env()}='...'   # the client secret {a.provider} gave you",
        f"oauthproxy check-config {config_arg}",
        f"oauthproxy serve --config {config_arg}",
    ]
    mcp_path = config_schema.key("server", "mcp_path").default
    lines = [
        f"wrote {_shown(config_path)}",
        f"wrote {_shown(keys_path)} (mode 0600)",
        "",
        f"Register this callback URL at {a.provider}:",
        f"    {a.base_url}/auth/callback",
        *textwrap.wrap(
            PROVIDER_HINTS[a.provider], width=96, initial_indent="  ", subsequent_indent="  "
        ),
        "",
        "Next:",
        *[f"    {command}" for command in commands],
        "",
        f"MCP clients then connect to {a.base_url}{mcp_path}",
        "",
    ]
    return "\n".join(lines)
