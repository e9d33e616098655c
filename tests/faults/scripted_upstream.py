"""A GitHub-shaped upstream provider on loopback whose token and userinfo endpoints misbehave on cue.

It behaves like the testing kit's ``FakeProvider`` (client id and secret, the one
registered redirect URI, S256 PKCE, single-use codes, identity from ``GET /user``) until a test
queues a fault for an endpoint: ``provider.inject("token", Fault("reset"))``. Each request to that
endpoint takes the next queued fault; an empty queue means normal service. Faults:

==============  =============================================================================
``hang``        read the request, answer nothing for ``seconds``, then drop the connection
``reset``       read the request, then close the socket with SO_LINGER 0 (the peer sees RST)
``status``      answer ``status`` with ``body`` and ``headers`` (5xx, 429 with Retry-After, ...)
``slow``        wait ``seconds``, then answer normally
``drip``        send headers and then one byte of the body every 0.2 s for ``seconds``
``malformed``   200 ``application/json`` that is not JSON (a truncated object)
``oversized``   200 ``application/json`` of ``size`` bytes (a valid JSON document, streamed)
``html``        200 ``text/html`` (a captive portal or an error page where JSON was expected)
``form_error``  200 with GitHub's form-encoded error body (``error=bad_verification_code``)
``empty``       200 ``application/json`` with an empty body
==============  =============================================================================

Why not the testing kit's ``FakeProvider`` (``oauthproxy_adapters.testing.provider``), which it
otherwise mirrors: these faults live below HTTP semantics (a socket reset, a hang, a body dripped
byte by byte, a stream cut short), which only a server that owns its sockets can produce; the kit's
provider answers whole responses, in process or through an ASGI server.

The server is ``http.server.ThreadingHTTPServer`` bound to 127.0.0.1 with HTTP/1.0 responses (one
connection per request, so a fault never poisons a pooled connection of the proxy). It is started
and stopped through the object that owns it; its threads are daemons, so a ``hang`` never blocks
the stop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs

CLIENT_ID = "proxy-at-scripted-upstream"
CLIENT_SECRET = "scripted-upstream-secret-" + "s" * 24
USER: dict[str, Any] = {"id": 4242, "login": "fault-user", "name": "Fault User"}
ENDPOINTS = ("authorize", "token", "user")


@attrs.frozen
class Fault:
    kind: str
    seconds: float = 0.0
    status: int = 500
    body: bytes = b'{"error": "server_error"}'
    headers: tuple[tuple[str, str], ...] = ()
    size: int = 2 * 1024 * 1024


class ScriptedUpstream:
    """The provider. ``base`` is its URL; ``calls`` counts requests per endpoint."""

    def __init__(self, redirect_uri: str = "") -> None:
        self.redirect_uri = redirect_uri
        self.codes: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.faults: dict[str, deque[Fault]] = {name: deque() for name in ENDPOINTS}
        self.calls: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        #: Dripped bodies the proxy stopped reading before they ended.
        self.abandoned = 0
        self.lock = threading.Lock()
        upstream = self

        class Handler(_Handler):
            provider = upstream

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def inject(self, endpoint: str, *faults: Fault) -> None:
        with self.lock:
            self.faults[endpoint].extend(faults)

    def next_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            self.calls[endpoint] += 1
            queue = self.faults[endpoint]
            return queue.popleft() if queue else None

    def wait_abandoned(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` dripped bodies were abandoned by the reader (``False`` if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.abandoned >= count:
                    self.abandoned -= count
                    return True
            time.sleep(0.05)
        return False

    def pending(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.faults.values())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    provider: ScriptedUpstream
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/login/oauth/authorize":
            self._authorize()
        elif path == "/user":
            self._with_faults("user", self._user)
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path == "/login/oauth/access_token":
            self._with_faults("token", lambda: self._token(body))
        else:
            self._send(404, b"not found", "text/plain")

    # -- normal service --------------------------------------------------------------------------

    def _authorize(self) -> None:
        p = self.provider
        q = dict(parse_qsl(urlsplit(self.path).query))
        fault = p.next_fault("authorize")
        if q.get("client_id") != CLIENT_ID or q.get("redirect_uri") != p.redirect_uri:
            self._send(400, b"unknown client or redirect_uri", "text/plain")
            return
        if fault is not None and fault.kind == "deny":
            params = {"error": "access_denied", "state": q.get("state", "")}
        elif fault is not None:
            params = {"error": "temporarily_unavailable", "state": q.get("state", "")}
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            params = {"error": "invalid_request", "state": q.get("state", "")}
        else:
            code = secrets.token_urlsafe(20)
            with p.lock:
                p.codes[code] = q["code_challenge"]
            params = {"code": code, "state": q.get("state", "")}
        self.send_response(302)
        self.send_header("Location", p.redirect_uri + "?" + urlencode(params))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _token(self, body: bytes) -> None:
        p = self.provider
        form = dict(parse_qsl(body.decode()))
        if form.get("client_id") != CLIENT_ID or not hmac.compare_digest(
            form.get("client_secret", ""), CLIENT_SECRET
        ):
            self._json({"error": "incorrect_client_credentials"})
            return
        with p.lock:
            challenge = p.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        if challenge is None or not hmac.compare_digest(digest.decode(), challenge):
            self._json({"error": "bad_verification_code"})
            return
        token = "gho_" + secrets.token_urlsafe(24)
        with p.lock:
            p.tokens.add(token)
        self._json({"access_token": token, "token_type": "bearer", "scope": "read:user"})

    def _user(self) -> None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        with self.provider.lock:
            known = token in self.provider.tokens
        if scheme.lower() not in ("bearer", "token") or not known:
            self._json({"message": "Bad credentials"}, status=401)
            return
        self._json(USER, headers=(("X-OAuth-Scopes", "read:user"),))

    # -- faults ----------------------------------------------------------------------------------

    def _with_faults(self, endpoint: str, normal: Any) -> None:
        fault = self.provider.next_fault(endpoint)
        if fault is None:
            normal()
            return
        kind = fault.kind
        if kind == "hang":
            time.sleep(fault.seconds)
            self._reset()
        elif kind == "reset":
            self._reset()
        elif kind == "status":
            self._send(fault.status, fault.body, "application/json", fault.headers)
        elif kind == "slow":
            time.sleep(fault.seconds)
            normal()
        elif kind == "drip":
            self._drip(fault.seconds)
        elif kind == "malformed":
            self._send(200, b'{"access_token": "gho_trunc', "application/json")
        elif kind == "oversized":
            self._oversized(fault.size)
        elif kind == "html":
            self._send(200, b"<html><body>Please sign in to the Wi-Fi</body></html>", "text/html")
        elif kind == "form_error":
            body = b"error=bad_verification_code&error_description=expired"
            self._send(200, body, "application/x-www-form-urlencoded")
        elif kind == "empty":
            self._send(200, b"", "application/json")
        else:  # pragma: no cover - a typo in a test
            raise AssertionError(f"unknown fault {kind}")

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _drip(self, seconds: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        deadline = time.monotonic() + seconds
        try:
            self.wfile.write(b"{")
            while time.monotonic() < deadline:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            with self.provider.lock:
                self.provider.abandoned += 1  # the proxy gave up before the body ended
            return
        self._reset()

    def _oversized(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        head = b'{"access_token": "gho_big", "pad": "'
        chunk = b"a" * 65536
        sent = len(head)
        try:
            self.wfile.write(head)
            while sent < size - 2:
                piece = chunk[: size - 2 - sent]
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.write(b'"}')
        except OSError:
            return  # the proxy stopped reading past its cap

    # -- plumbing --------------------------------------------------------------------------------

    def _json(
        self, body: dict[str, Any], status: int = 200, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
