"""Shared fixtures for the provider tests: signing keys, ID token minting, a scripted OIDC provider.

The providers here are OIDC-shaped (signed ID tokens, a JWK Set, scripted refresh answers and
outages), which the testing kit's GitHub-shaped ``FakeProvider`` is not; ``ClaimsProvider`` builds on
it (through ``tests.harness.ScriptedUpstream``) and replaces its answers.

The responses follow the providers' documentation (Google "OpenID Connect", Microsoft identity
platform "ID tokens", GitHub "Authorizing OAuth apps"); nothing here talks to a network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from oauthproxy_core.effects import HttpFailure, HttpRequest, HttpResponse
from oauthproxy_core.upstream import UpstreamProfile
from tests.harness import ScriptedUpstream, UpstreamUser

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


IDP = "https://idp.example"
CLIENT_ID = "proxy-client"
#: A claim the provider leaves out of its answer.
ABSENT: Any = object()


def at_idp(profile: UpstreamProfile) -> UpstreamProfile:
    """``profile`` (built by its real factory) with its endpoints and issuer on ``IDP``."""
    return attrs.evolve(
        profile,
        issuer=IDP,
        authorize_url=IDP + "/authorize",
        token_url=IDP + "/token",
        userinfo_url=IDP + "/userinfo",
        jwks_uri=IDP + "/jwks" if profile.uses_id_token else None,
        id_token_issuers=(),
    )


class ClaimsProvider(ScriptedUpstream):
    """One scripted provider for every shape: ``claims`` is what it says about the user, either as
    UserInfo / ``GET /user`` (``userinfo``) or in a signed ID token (``id_token``); ``emails`` is
    GitHub's ``GET /user/emails`` answer; ``granted`` the scope of the token response."""

    def __init__(
        self,
        *,
        callback_url: str,
        claims: dict[str, Any],
        id_token: bool,
        iss: str | None = None,
        emails: list[dict[str, Any]] | None = None,
        granted: str = "openid email profile",
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(callback_url=callback_url)
        self.now = now
        self.claims = {k: v for k, v in claims.items() if v is not ABSENT}
        self.id_token = id_token
        self.iss = iss
        self.emails = emails
        self.granted = granted
        self.paths: list[str] = []
        self._n = 0

    def login(self, authorize_url: str, user: UpstreamUser, *, deny: bool = False) -> str:
        q = dict(parse_qsl(urlsplit(authorize_url).query))
        assert q["redirect_uri"] == self.callback_url and not deny
        self._n += 1
        code = f"code-{self._n}"
        self.codes[code] = q
        back = {"code": code, "state": q["state"]}
        if self.iss is not None:
            back["iss"] = self.iss
        return self.callback_url + "?" + urlencode(back)

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        path = urlsplit(req.url).path
        self.paths.append(path)
        if path.endswith("token"):  # /token, GitHub's /login/oauth/access_token
            form = dict(parse_qsl(req.body.decode()))
            q = self.codes.pop(form.get("code", ""), None)
            if q is None:
                return json_response({"error": "invalid_grant"}, 400)
            assert s256(form["code_verifier"]) == q["code_challenge"]
            body: dict[str, Any] = {
                "access_token": f"upstream-access-{self._n}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": self.granted,
            }
            if self.id_token:
                now = int(self.now())
                claims = {"aud": CLIENT_ID, "iat": now, "exp": now + 600, **self.claims}
                if "nonce" in q:
                    claims["nonce"] = q["nonce"]
                body["id_token"] = sign(claims, RSA_KEY)
            return json_response(body)
        if path.endswith("/keys") or path.endswith("/jwks"):
            return json_response(jwks_of(RSA_KEY))
        if path.endswith("/user/emails"):
            if self.emails is None:
                return json_response({"message": "Resource not accessible by integration"}, 403)
            return json_response(self.emails)
        if path.endswith("/user") or path.endswith("/userinfo"):
            return json_response(self.claims, headers=(("X-OAuth-Scopes", self.granted),))
        return json_response({}, 404)
