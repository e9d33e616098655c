"""Shared fixtures for tests/clients: a document host that executes ``FetchDocument``, and keys."""

from __future__ import annotations

import json
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from oauthproxy_core import HttpFailure, HttpResponse
from oauthproxy_core.effects import FetchDocument
from tests.harness import Harness, ScriptedUpstream, make_config

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
