"""``OAuthProxyWSGI`` driven with hand-made PEP 3333 environs: the I/O decisions the server matrix
cannot reach (how the body is read when its length is absent, chunked or wrong, latin-1 header values,
the path's UTF-8, exceptions), spec/security.md 28 and 29 at the WSGI boundary.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from oauthproxy_adapters.wsgi import (
    PRINCIPAL_KEY,
    OAuthProxyWSGI,
    principal_from_environ,
    to_core_request,
)
from oauthproxy_core import Request, Response
from oauthproxy_core.http import MAX_BODY_BYTES
from tests.adapters.live_servers import sync_proxy
from tests.harness import ScriptedUpstream, make_config

BASE = "http://127.0.0.1:8932"


class Stream:
    """A ``wsgi.input`` that records how much was read and can refuse to end."""

    def __init__(self, data: bytes, *, endless: bool = False) -> None:
        self.buf = io.BytesIO(data)
        self.endless = endless
        self.read_total = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.buf.read(n)
        if not chunk and self.endless:
            raise AssertionError("read past the end of the body: would block on a real socket")
        self.read_total += len(chunk)
        return chunk


def environ(
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8932",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": Stream(body),
        "wsgi.url_scheme": "http",
    }
    for k, v in (headers or {}).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    env.update(extra)
    return env


class Capture:
    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        self.headers = headers
        return lambda _data: None


def call(app: Any, env: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    cap = Capture()
    body = b"".join(app(env, cap))
    assert cap.status, "start_response was never called"
    return int(cap.status.split()[0]), {k.lower(): v for k, v in cap.headers}, body


@pytest.fixture
def app() -> OAuthProxyWSGI:
    config = make_config(issuer=BASE)
    return OAuthProxyWSGI(sync_proxy(config, ScriptedUpstream(callback_url=config.callback_url)))


REGISTRATION = json.dumps({"redirect_uris": ["http://127.0.0.1:9/cb"]}).encode()


def test_content_length_body_is_read_exactly(app: OAuthProxyWSGI) -> None:
    stream = Stream(REGISTRATION + b"NEXT REQUEST BYTES", endless=False)
    env = environ(
        "POST",
        "/register",
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH=str(len(REGISTRATION)),
    )
    env["wsgi.input"] = stream
    status, headers, _ = call(app, env)
    assert status == 201
    assert stream.read_total == len(REGISTRATION)  # never past CONTENT_LENGTH (PEP 3333)
    assert headers["content-length"]


def test_declared_length_over_the_bound_is_413_unread(app: OAuthProxyWSGI) -> None:
    env = environ(
        "POST",
        "/register",
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH=str(MAX_BODY_BYTES + 1),
    )
    stream = env["wsgi.input"]
    status, _, body = call(app, env)
    assert status == 413 and json.loads(body)["error"] == "invalid_request"
    assert stream.read_total == 0


@pytest.mark.parametrize("length", ["-1", "1e3", "+5", "5_0", " 12abc", "9" * 30])
def test_malformed_content_length_is_400(app: OAuthProxyWSGI, length: str) -> None:
    env = environ("POST", "/register", CONTENT_TYPE="application/json", CONTENT_LENGTH=length)
    status, _, body = call(app, env)
    assert status in (400, 413)
    assert json.loads(body)["error"] == "invalid_request"


def test_short_body_is_400(app: OAuthProxyWSGI) -> None:
    env = environ(
        "POST",
        "/register",
        body=REGISTRATION[:10],
        CONTENT_TYPE="application/json",
        CONTENT_LENGTH=str(len(REGISTRATION)),
    )
    status, _, _ = call(app, env)
    assert status == 400


def test_absent_length_means_no_body(app: OAuthProxyWSGI) -> None:
    env = environ("POST", "/register", CONTENT_TYPE="application/json")
    env["wsgi.input"] = Stream(REGISTRATION, endless=True)
    status, _, _ = call(app, env)
    assert status == 400  # an empty body is malformed JSON; the stream was not read
    assert env["wsgi.input"].read_total == 0


def test_chunked_without_a_terminated_stream_is_411(app: OAuthProxyWSGI) -> None:
    env = environ(
        "POST",
        "/register",
        headers={"Transfer-Encoding": "chunked"},
        CONTENT_TYPE="application/json",
    )
    env["wsgi.input"] = Stream(REGISTRATION, endless=True)
    status, _, _ = call(app, env)
    assert status == 411


def test_terminated_stream_is_read_to_its_end(app: OAuthProxyWSGI) -> None:
    env = environ(
        "POST",
        "/register",
        body=REGISTRATION,
        headers={"Transfer-Encoding": "chunked"},
        CONTENT_TYPE="application/json",
        **{"wsgi.input_terminated": True},
    )
    status, _, _ = call(app, env)
    assert status == 201


def test_terminated_stream_over_the_bound_is_413(app: OAuthProxyWSGI) -> None:
    env = environ(
        "POST",
        "/register",
        body=b"x" * (MAX_BODY_BYTES * 3),
        CONTENT_TYPE="application/json",
        **{"wsgi.input_terminated": True},
    )
    status, _, _ = call(app, env)
    assert status == 413
    assert env["wsgi.input"].read_total == MAX_BODY_BYTES + 1


def test_headers_are_pep_3333_native_strings() -> None:
    # PEP 3333: header bytes arrive decoded as latin-1; they reach the core exactly as under ASGI.
    raw_value = "caf\xc3\xa9"  # the UTF-8 bytes of "café", as a WSGI server presents them
    req = to_core_request(
        environ(
            "GET",
            "/caf\xc3\xa9",
            headers={"X-Name": raw_value, "Cookie": "a=1; b=2"},
            CONTENT_TYPE="text/plain",
            QUERY_STRING="q=%C3%A9",
        ),
        b"",
    )
    assert req.header("x-name") == raw_value
    assert req.header("content-type") == "text/plain"
    assert req.cookie("b") == "2"
    assert req.path == "/café"  # the path is UTF-8 like ASGI's
    assert req.query == "q=%C3%A9"
    assert req.remote_addr == "127.0.0.1"


def test_protected_path_principal_and_preflight(app: OAuthProxyWSGI) -> None:
    inner_seen: list[Any] = []

    def inner(env: dict[str, Any], start_response: Any) -> list[bytes]:
        inner_seen.append(principal_from_environ(env))
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    wrapped = OAuthProxyWSGI(app.proxy, inner)
    status, headers, _ = call(wrapped, environ("OPTIONS", "/mcp"))
    assert status == 204 and headers["access-control-allow-origin"] == "*"
    assert "content-length" not in headers  # RFC 9110 §8.6
    status, headers, _ = call(wrapped, environ("GET", "/mcp/sub/path"))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer ")
    status, _, _ = call(wrapped, environ("GET", "/elsewhere"))
    assert status == 200 and inner_seen == [None]  # not protected: passed through untouched
    assert PRINCIPAL_KEY == "oauthproxy.principal"


def test_without_app_other_paths_are_404_json(app: OAuthProxyWSGI) -> None:
    status, headers, body = call(app, environ("GET", "/elsewhere"))
    assert status == 404 and json.loads(body) == {"error": "not_found"}
    assert headers["content-type"] == "application/json"


def test_a_bug_is_a_generic_500_and_a_log_line(
    app: OAuthProxyWSGI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_req: Request) -> Response:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.proxy, "handle", broken)
    with caplog.at_level(logging.ERROR, logger="oauthproxy.wsgi"):
        status, _, body = call(app, environ("GET", "/.well-known/oauth-authorization-server"))
    assert status == 500 and json.loads(body) == {"error": "server_error"}
    assert b"secret" not in body
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


def test_a_failing_input_stream_is_answered(app: OAuthProxyWSGI) -> None:
    class Broken:
        def read(self, n: int = -1) -> bytes:
            raise ConnectionResetError("peer went away")

    env = environ("POST", "/register", CONTENT_TYPE="application/json", CONTENT_LENGTH="10")
    env["wsgi.input"] = Broken()
    status, _, _ = call(app, env)
    assert status == 400
