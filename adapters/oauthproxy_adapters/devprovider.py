"""A DEVELOPMENT-ONLY, GitHub-shaped OAuth provider for ``oauthproxy demo`` and local testing.

NOT FOR PRODUCTION. It has no users, no passwords and no consent: every authorization request is
approved at once for one fixed demo user. It exists so that the whole flow can run on one machine with
nothing to configure. It mimics what makes GitHub awkward for a naive OAuth client (spec/interop.md):

- the token endpoint answers form-encoded unless the request says ``Accept: application/json``, and
  answers HTTP 200 with an ``error`` field on failure;
- OAuth-App style: no refresh token and no ``expires_in``;
- identity comes from ``GET /user`` (numeric ``id``, ``login``, ``name``, ``email``), granted scopes
  from the ``X-OAuth-Scopes`` header;
- no ``iss`` in the authorization response (GitHub does not implement RFC 9207).

It checks what a real provider checks: client id and secret, the registered redirect URI, PKCE
(S256) and single use of codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

BANNER = "oauthproxy development provider - NOT FOR PRODUCTION"

DEMO_USER: dict[str, Any] = {
    "id": 4242,
    "login": "demo-user",
    "name": "Demo User",
    "email": "demo-user@example.invalid",
}


class DevProvider:
    def __init__(self, *, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/login/oauth/authorize", self.authorize),
                Route("/login/oauth/access_token", self.token, methods=["POST"]),
                Route("/user", self.user),
            ]
        )

    async def index(self, request: Request) -> Response:
        return PlainTextResponse(BANNER + "\n")

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("redirect_uri") != self.redirect_uri:
            return PlainTextResponse("unknown client or redirect_uri\n", status_code=400)
        state = q.get("state", "")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _redirect(self.redirect_uri, {"error": "invalid_request", "state": state})
        code = secrets.token_urlsafe(20)
        self.codes[code] = {
            "challenge": q["code_challenge"],
            "scope": q.get("scope", ""),
            "expires": time.time() + 600,
        }
        return _redirect(self.redirect_uri, {"code": code, "state": state})

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        wants_json = "application/json" in request.headers.get("accept", "")
        if form.get("client_id") != self.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return _answer({"error": "incorrect_client_credentials"}, wants_json)
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or entry["expires"] < time.time():
            return _answer({"error": "bad_verification_code"}, wants_json)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        if not hmac.compare_digest(digest.decode(), entry["challenge"]):
            return _answer({"error": "bad_verification_code"}, wants_json)
        token = "gho_" + secrets.token_urlsafe(24)
        self.tokens[token] = {"scope": entry["scope"]}
        body = {
            "access_token": token,
            "token_type": "bearer",
            "scope": entry["scope"].replace(" ", ","),
        }
        return _answer(body, wants_json)

    async def user(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        info = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if info is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(DEMO_USER, headers={"X-OAuth-Scopes": info["scope"].replace(" ", ", ")})


def _redirect(uri: str, params: dict[str, str]) -> Response:
    return RedirectResponse(uri + "?" + urlencode(params), status_code=302)


def _answer(body: dict[str, Any], wants_json: bool) -> Response:
    # GitHub answers 200 even for errors, form-encoded unless JSON was asked for.
    if wants_json:
        return JSONResponse(body)
    return PlainTextResponse(urlencode(body), media_type="application/x-www-form-urlencoded")
