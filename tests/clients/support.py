"""Shared fixtures for tests/clients: a document host that executes ``FetchDocument``, a real TLS
document server on loopback, and keys."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from oauthproxy_core import HttpFailure, HttpResponse
from oauthproxy_core.effects import FetchDocument
from tests.harness import Harness, ScriptedUpstream, make_config
from tests.tls_material import issue_server_cert, new_authority

CIMD_URL = "https://client.example/oauth/client.json"
REDIRECT = "http://127.0.0.1:33418/callback"


def document(url: str = CIMD_URL, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": url,
        "client_name": "Example CIMD Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


class DocumentHost(ScriptedUpstream):
    """The scripted upstream (``host(request)``), plus a document fetcher (``host.fetch``) serving
    the documents given to ``serve``; ``fetches`` records every ``FetchDocument`` it executed."""

    def __init__(self, *, callback_url: str) -> None:
        super().__init__(callback_url=callback_url)
        self.documents: dict[str, HttpResponse] = {}
        self.fetches: list[FetchDocument] = []

    def serve(
        self,
        url: str,
        body: Any,
        *,
        status: int = 200,
        headers: tuple[tuple[str, str], ...] = (),
        content_type: str = "application/json",
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.documents[url] = HttpResponse(
            status=status, headers=(("Content-Type", content_type), *headers), body=raw
        )

    def fetch(self, doc: FetchDocument) -> HttpResponse | HttpFailure:
        self.fetches.append(doc)
        resp = self.documents.get(doc.url)
        if resp is None:
            return HttpResponse(status=404)
        etag = resp.header("etag")
        if etag is not None and doc.etag == etag:
            return HttpResponse(status=304, headers=(("ETag", etag),))
        return resp


def cimd_harness(**config: Any) -> tuple[Harness, DocumentHost]:
    h = Harness(make_config(**config))
    host = DocumentHost(callback_url=h.config.callback_url)
    h.upstream = host
    h.fetch = host.fetch
    return h, host


def new_ec_key(kid: str = "k1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [dict(k.as_dict(private=False)) for k in keys]}


def assertion(
    key: Any,
    *,
    client_id: str = CIMD_URL,
    aud: Any = "https://proxy.example",  # the issuer (draft-ietf-oauth-rfc7523bis)
    now: int,
    lifetime: int = 120,
    alg: str = "ES256",
    kid: str | None = "k1",
    jti: str | None = None,
    **claims: Any,
) -> str:
    body: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti or uuid.uuid4().hex,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header: dict[str, Any] = {"alg": alg}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, body, key, algorithms=[alg])


class TlsDocumentServer:
    """Client ID Metadata Documents over real TLS on 127.0.0.1, for a host name.

    A certificate for ``host`` (written to ``cert``, signed by the CA in ``ca_file``, which ``trust``
    and nothing else trusts) serves ``GET <path>`` with the JSON body given to ``serve``; ``hits``
    records the ``Host`` header of every request. A fetcher reaches it by resolving ``host`` to
    127.0.0.1 under the test policy (``allow_loopback``), so the fetch runs the production path:
    address check, pinning to the IP literal, SNI and certificate verification for the name, the
    size cap and the content-type check. Stop it with ``stop``.
    """

    def __init__(self, workdir: Path, host: str) -> None:
        self.host = host
        # A CA of its own, trusted by ``trust`` and by nothing else, and a certificate it signs for
        # ``host`` alone.
        ca = new_authority(workdir, f"{host}-ca")
        leaf = issue_server_cert(ca, workdir, host, dns_names=(host,), ip_addresses=())
        self.cert, key = leaf.cert_file, leaf.key_file
        #: The CA file a client of this server trusts (``trust`` in process, a file for another).
        self.ca_file = ca.cert_file
        self.trust = ssl.create_default_context(cafile=str(ca.cert_file))
        self.documents: dict[str, bytes] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.headers.get("Host", ""))
                body = outer.documents.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"

    def serve(self, path: str, body: dict[str, Any]) -> str:
        """Serve ``body`` at ``path``; its URL."""
        self.documents[path] = json.dumps(body).encode()
        return self.url(path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
