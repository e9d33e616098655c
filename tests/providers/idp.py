"""Shared fixtures for the provider tests: signing keys, ID token minting, a scripted OIDC provider.

The responses follow the providers' documentation (Google "OpenID Connect", Microsoft identity
platform "ID tokens", GitHub "Authorizing OAuth apps"); nothing here talks to a network.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse

RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "key-1", "use": "sig"}, private=True)
RSA_KEY_2 = RSAKey.generate_key(2048, parameters={"kid": "key-2", "use": "sig"}, private=True)
EC_KEY = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"}, private=True)


def jwks_of(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def sign(claims: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", **header: Any) -> str:
    hdr: dict[str, Any] = {"alg": alg, "kid": key.kid}
    hdr.update(header)
    hdr = {k: v for k, v in hdr.items() if v is not None}
    return jwt.encode(hdr, dict(claims), key, algorithms=[alg])


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A JWS compact serialisation with an empty or bogus signature (never valid)."""
    head = b64u(json.dumps(header).encode())
    body = b64u(json.dumps(claims).encode())
    return f"{head}.{body}."


def json_response(
    body: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    return HttpResponse(
        status=status,
        headers=(("Content-Type", "application/json"), *headers),
        body=json.dumps(body).encode(),
    )


def s256(verifier: str) -> str:
    return b64u(hashlib.sha256(verifier.encode()).digest())


class OidcUpstream:
    """A Google-shaped provider for the harness: authorize, token (+ id_token), JWKS, userinfo."""

    def __init__(
        self,
        *,
        callback_url: str,
        issuer: str,
        client_id: str,
        base: str,
        key: Any = RSA_KEY,
    ) -> None:
        self.callback_url = callback_url
        self.issuer = issuer
        self.client_id = client_id
        self.base = base
        self.key = key
        self.jwks_keys: list[Any] = [key]
        self.codes: dict[str, dict[str, Any]] = {}
        self.calls: list[HttpRequest] = []
        self.now = 1_800_000_000
        self.claims_override: dict[str, Any] = {}
        self.refresh_response: HttpResponse | HttpFailure | None = None
        self.down = False
        self._n = 0

    def login(self, authorize_url: str, user: Any, *, deny: bool = False) -> str:
        q = dict(parse_qsl(urlsplit(authorize_url).query))
        assert q["redirect_uri"] == self.callback_url
        self._n += 1
        code = f"oidc-code-{self._n}"
        self.codes[code] = {"q": q, "user": user}
        return self.callback_url + "?" + urlencode({"code": code, "state": q["state"]})

    def count(self, path: str) -> int:
        return sum(1 for c in self.calls if urlsplit(c.url).path == path)

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        self.calls.append(req)
        if self.down:
            return HttpFailure(reason="connect")
        path = urlsplit(req.url).path
        if path == "/token":
            form = dict(parse_qsl(req.body.decode()))
            if form.get("grant_type") == "refresh_token":
                assert self.refresh_response is not None
                return self.refresh_response
            entry = self.codes.pop(form.get("code", ""), None)
            if entry is None:
                return json_response({"error": "invalid_grant"}, 400)
            q = entry["q"]
            assert s256(form["code_verifier"]) == q["code_challenge"]
            claims: dict[str, Any] = {
                "iss": self.issuer,
                "aud": self.client_id,
                "sub": str(entry["user"].id),
                "email": f"{entry['user'].login}@example.com",
                "email_verified": True,
                "name": entry["user"].login.title(),
                "iat": self.now,
                "exp": self.now + 3600,
            }
            if "nonce" in q:
                claims["nonce"] = q["nonce"]
            claims.update(self.claims_override)
            claims = {k: v for k, v in claims.items() if v is not None}
            return json_response(
                {
                    "access_token": f"ya29.access-{self._n}",
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "refresh_token": f"1//refresh-{self._n}",
                    "scope": "openid https://www.googleapis.com/auth/userinfo.email",
                    "id_token": sign(claims, self.key),
                }
            )
        if path == "/jwks":
            return json_response(jwks_of(*self.jwks_keys))
        return json_response({}, 404)
