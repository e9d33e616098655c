"""Shared pieces of the hostile-input tests: the proxy under attack through each web adapter, raw
request drivers that bypass every client library's own validation, a flow that leaves a registered
client and a live grant behind (to check nothing stored was damaged by a barrage), and a tally of
inputs tried and server errors seen (for the results table; spec/security.md 28, 29).

Every adapter turns an unexpected exception into a generic 500 and a log line; so "no 5xx" and "no
ERROR record on an ``oauthproxy`` logger" together mean "no exception escaped a handler".
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import attrs
import yaml

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.proxy import AsyncProxy, Proxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_adapters.testing.flow import (
    Call,
    Reply,
    Session,
    authorize,
    drive,
    exchange_code,
    login,
    open_consent,
    refresh,
)
from oauthproxy_adapters.wsgi import OAuthProxyWSGI
from oauthproxy_core import HttpFailure, HttpRequest, HttpResponse, ProxyConfig
from oauthproxy_core.bounds import Bounds
from tests.harness import ScriptedUpstream, UpstreamUser, keys, make_config

BASE = "http://127.0.0.1:8000"
SPEC_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "spec", "openapi.yaml"
)


@attrs.frozen
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class ErrorLog(logging.Handler):
    """Collects ERROR records of the proxy's loggers: an exception caught by an adapter shows here."""

    def __init__(self, *extra: str) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._loggers = [logging.getLogger(n) for n in ("oauthproxy", "asyncio", *extra)]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> ErrorLog:
        for lg in self._loggers:
            lg.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for lg in self._loggers:
            lg.removeHandler(self)


# -- the tally ----------------------------------------------------------------------------------


#: Answers HTTP itself prescribes for a request the server cannot serve, not server failures:
#: 501 for an unknown transfer coding (RFC 9112 §6.1), 505 for another HTTP version (RFC 9110 §15.6.6).
PROTOCOL_5XX = frozenset({501, 505})


class Tally:
    """Inputs tried and server errors seen, per layer; written out by conftest.py at the end."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def record(self, layer: str, status: int) -> None:
        with self._lock:
            row = self.counts.setdefault(layer, {"inputs": 0, "5xx": 0, "501/505": 0})
            row["inputs"] += 1
            if status in PROTOCOL_5XX:
                row["501/505"] += 1
            elif status >= 500:
                row["5xx"] += 1

    def write(self, path: str) -> None:
        total = {
            key: sum(r[key] for r in self.counts.values()) for key in ("inputs", "5xx", "501/505")
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"layers": self.counts, "total": total}, f, indent=2, sort_keys=True)
            f.write("\n")


TALLY = Tally()


# -- the targets --------------------------------------------------------------------------------


def hostile_config(issuer: str = BASE, **overrides: Any) -> ProxyConfig:
    """Generous rate bounds (tests/rfc tests the real ones), so that a barrage does not lock the
    live client out and "still works afterwards" means "nothing was damaged". CIMD stays on: an
    https client_id is fetched from the scripted upstream, which has no such document."""
    generous = Bounds(
        **{f.name: 10**6 for f in attrs.fields(Bounds) if not f.name.endswith("window")}
    )
    return make_config(issuer=issuer, bounds=generous, **overrides)


def async_proxy(config: ProxyConfig | None = None) -> tuple[AsyncProxy, ScriptedUpstream]:
    config = config or hostile_config()
    upstream = ScriptedUpstream(callback_url=config.callback_url)

    async def http(req: HttpRequest) -> HttpResponse | HttpFailure:
        return upstream(req)

    return AsyncProxy(config, keys(), AsyncMemoryStore(), http), upstream


def async_target(config: ProxyConfig | None = None) -> tuple[OAuthProxyApp, ScriptedUpstream]:
    proxy, upstream = async_proxy(config)
    return OAuthProxyApp(proxy), upstream


def wsgi_target(config: ProxyConfig | None = None) -> tuple[OAuthProxyWSGI, ScriptedUpstream]:
    config = config or hostile_config()
    upstream = ScriptedUpstream(callback_url=config.callback_url)
    proxy = Proxy(config, keys(), MemoryStore(), upstream)
    return OAuthProxyWSGI(proxy), upstream


# -- raw drivers --------------------------------------------------------------------------------


async def asgi_raw(
    app: Any,
    method: str,
    raw_path: bytes,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    chunks: int = 1,
    client: tuple[str, int] = ("127.0.0.1", 40000),
) -> Answer:
    """One request straight into an ASGI app, as a server would hand it over (path percent-decoded
    as UTF-8 with replacement, like uvicorn; header bytes untouched), from peer ``client``."""
    path = unquote_to_bytes(raw_path).decode("utf-8", errors="replace")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": list(headers or []),
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    size = max(1, -(-len(body) // max(chunks, 1)))
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    status = 0
    out_headers: list[tuple[str, str]] = []
    out = bytearray()

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.extend(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            )
        elif message["type"] == "http.response.body":
            out.extend(message.get("body", b""))

    await app(scope, receive, send)
    return Answer(status, tuple(out_headers), bytes(out))


def wsgi_raw(
    app: Any,
    method: str,
    path_info: str,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_length: str | None = None,
) -> Answer:
    """One request straight into a WSGI app (PEP 3333 native strings, as wsgiref would build them)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ["CONTENT_LENGTH"] = str(len(body)) if content_length is None else content_length
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    captured: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = tuple((k.lower(), v) for k, v in hdrs)
        return lambda _data: None

    chunks = app(environ, start_response)
    data = b"".join(chunks)
    return Answer(captured["status"], captured["headers"], data)


# -- a flow that leaves state behind --------------------------------------------------------------


class CookieJar:
    """The flow's browser: keeps the cookies the proxy sets and sends them back."""

    def __init__(self, send: Any, base: str = BASE) -> None:
        self._send = send
        self.base = base
        self.cookies: dict[str, str] = {}

    def __call__(self, call: Call) -> Reply:
        if not call.url.startswith(self.base):  # the scripted upstream answers in-process
            raise AssertionError(f"flow left the proxy: {call.url}")
        headers = call.headers
        if self.cookies:
            jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            headers = (*headers, ("Cookie", jar))
        reply = self._send(attrs.evolve(call, headers=headers))
        for value in reply.header_values("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return reply


def new_session(send: Any, upstream: ScriptedUpstream, base: str = BASE) -> Session:
    """Register a client, authorize it and redeem the code: state that a barrage must not damage."""
    return drive(login(base, upstream), CookieJar(send, base))


def pending_consent(send: Any, session: Session, base: str = BASE) -> dict[str, str]:
    """A transaction waiting at the consent page: its ``txn``, the form's ``csrf`` token and the
    ``cookie`` header of the browser it was rendered for (spec/security.md 31)."""
    jar = CookieJar(send, base)
    fields = drive(open_consent(base, session.client), jar)
    return {**fields, "cookie": "; ".join(f"{k}={v}" for k, v in jar.cookies.items())}


def still_works(send: Any, upstream: ScriptedUpstream, session: Session, base: str = BASE) -> None:
    """The live grant still refreshes and the registered client still completes a new flow."""
    jar = CookieJar(send, base)
    refreshed = drive(refresh(base, session.client, session.tokens["refresh_token"]), jar)
    assert refreshed["refresh_token"] != session.tokens["refresh_token"]
    redirect = drive(
        authorize(base, session.client, upstream=upstream, user=UpstreamUser(42, "octocat")), jar
    )
    fresh = drive(exchange_code(base, session.client, redirect["code"]), jar)
    assert fresh["access_token"] != refreshed["access_token"]


def asgi_sender(app: Any, loop: asyncio.AbstractEventLoop | None = None) -> Any:
    def send(call: Call) -> Reply:
        parts = urlsplit(call.url)
        headers = [(k.lower().encode(), v.encode()) for k, v in call.headers]
        coro = asgi_raw(
            app, call.method, parts.path.encode(), parts.query.encode(), headers, call.body
        )
        answer = asyncio.run(coro) if loop is None else loop.run_until_complete(coro)
        return Reply(answer.status, answer.headers, answer.body)

    return send


def wsgi_sender(app: Any) -> Any:
    def send(call: Call) -> Reply:
        parts = urlsplit(call.url)
        answer = wsgi_raw(app, call.method, parts.path, parts.query, dict(call.headers), call.body)
        return Reply(answer.status, answer.headers, answer.body)

    return send


def httpx_sender(client: Any) -> Any:
    def send(call: Call) -> Reply:
        client.cookies.clear()  # the CookieJar above is the browser
        r = client.request(call.method, call.url, headers=list(call.headers), content=call.body)
        headers = tuple((k.lower(), v) for k, v in r.headers.multi_items())
        return Reply(r.status_code, headers, r.content)

    return send


# -- what the spec documents --------------------------------------------------------------------

_SPEC: dict[str, Any] | None = None
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def spec() -> dict[str, Any]:
    global _SPEC  # noqa: PLW0603 (loaded once, read-only)
    if _SPEC is None:
        with open(SPEC_PATH, encoding="utf-8") as f:
            _SPEC = yaml.safe_load(f)
    return _SPEC


def spec_path_for(path: str) -> str | None:
    """The spec path answering ``path`` (``/register/x`` -> ``/register/{client_id}``)."""
    paths = spec()["paths"]
    if path in paths:
        return path
    if path.startswith("/register/") and len(path) > len("/register/"):
        return "/register/{client_id}"
    if path.startswith("/mcp/"):
        return "/mcp"
    return None


def documented_statuses(path: str, method: str) -> set[int]:
    """Statuses the spec allows for ``method path``, including the router's and the transport's."""
    doc = spec()
    allowed = {int(c) for c in doc["x-transport-responses"]}
    allowed |= {int(c) for c in doc["x-router-responses"]}
    template = spec_path_for(path)
    if template is None:
        return allowed
    item = doc["paths"][template]
    ops = {m.upper(): op for m, op in item.items() if m in _METHODS}
    if template == "/mcp":
        # Every method on the protected path gets the bearer challenge first.
        for op in ops.values():
            allowed |= {int(c) for c in op["responses"]}
    elif method in ops:
        allowed |= {int(c) for c in ops[method]["responses"]}
    return allowed - {500}  # documented as "never expected": a bug if it happens


def is_failure(status: int) -> bool:
    """A 5xx that is not one of HTTP's own protocol answers (``PROTOCOL_5XX``)."""
    return status >= 500 and status not in PROTOCOL_5XX
