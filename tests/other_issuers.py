"""An identity provider other than the proxy, for the tests of ``[[trusted_issuers]]`` and
``[[enterprise_issuers]]``: real keys (joserfc), real signatures, a JWK Set served to the core's
``FetchDocument`` effects, and helpers that mint access tokens and ID-JAGs with any claim changed.

The end-to-end tests use a Node ``jose`` script instead (``tests/upstream_idp/enterprise_idp.mjs``);
these in-process ones can also build the tokens no honest issuer signs (``alg: none``, an HMAC with
the public key, a ``crit`` header).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry

from oauthproxy_adapters.stores.memory import MemoryStore
from oauthproxy_core import HttpFailure, HttpResponse
from oauthproxy_core.crypto import digest
from oauthproxy_core.effects import FetchDocument
from oauthproxy_core.issuers import EnterpriseIssuer, TrustedIssuer
from oauthproxy_core.records import Client
from tests.harness import ISSUER, Harness, keys, make_config

IDP = "https://login.corp.example/"
IDP_JWKS = "https://login.corp.example/keys.json"
OTHER_IDP = "https://other-idp.example"
OTHER_JWKS = "https://other-idp.example/jwks.json"
RESOURCE = ISSUER + "/mcp"
AGENT = "agent"
AGENT_SECRET = "agent-secret-0123456789"
OTHER_AGENT = "other-agent"
OTHER_SECRET = "other-agent-secret-0123456789"
PUBLIC = "public-client"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


class FakeIssuer:
    """An issuer with an RSA and an EC signing key, its JWK Set at ``jwks_uri``.

    ``fetch`` executes the core's ``FetchDocument`` for that URL (and answers 404 elsewhere),
    counting the fetches; ``down`` makes it fail like an unreachable host; ``rotate`` replaces the
    keys (new ``kid`` values)."""

    def __init__(self, issuer: str = IDP, jwks_uri: str = IDP_JWKS) -> None:
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.fetches: list[FetchDocument] = []
        self.down = False
        self.cache_control: str | None = None
        self.generation = 0
        self.rotate()

    def rotate(self) -> None:
        self.generation += 1
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": f"rsa-{self.generation}"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": f"ec-{self.generation}"})

    def impostor(self) -> FakeIssuer:
        """Another issuer claiming this one's URL, whose EC key reuses this one's ``kid``."""
        other = FakeIssuer(self.issuer, self.jwks_uri)
        other.ec = ECKey.generate_key("P-256", parameters={"kid": str(self.ec.kid)})
        return other

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.as_dict(private=False)) for k in (self.rsa, self.ec)]}

    def fetch(self, doc: FetchDocument) -> HttpResponse | HttpFailure:
        self.fetches.append(doc)
        if self.down:
            return HttpFailure(reason="connect")
        if doc.url != self.jwks_uri:
            return HttpResponse(status=404)
        headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
        if self.cache_control:
            headers += (("Cache-Control", self.cache_control),)
        return HttpResponse(status=200, headers=headers, body=json.dumps(self.jwks()).encode())

    # -- tokens ------------------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, alg: str = "ES256", **header: Any) -> str:
        """A JWS over ``claims`` with this issuer's key for ``alg``; ``header`` adds or replaces
        header members (``typ=None`` drops ``typ``, ``kid=None`` drops ``kid``)."""
        key: Any = self.ec if alg.startswith("ES") else self.rsa
        full: dict[str, Any] = {"alg": alg, "kid": key.kid, **header}
        full = {k: v for k, v in full.items() if v is not None}
        return jwt.encode(full, claims, key, algorithms=[alg])

    def access_token(self, now: int, *, alg: str = "ES256", **changes: Any) -> str:
        """An RFC 9068 access token for the proxy's resource; ``changes`` replace claims
        (``None`` removes one); ``header`` keys go through ``header=``."""
        header = changes.pop("header", {})
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": RESOURCE,
            "client_id": "ci-job",
            "scope": "mcp offline_access admin",
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return self.sign(claims, alg=alg, **{"typ": "at+jwt", **header})

    def id_jag(self, now: int, *, alg: str = "ES256", **changes: Any) -> str:
        """An ID-JAG made out to the proxy for ``AGENT``; ``changes`` as for ``access_token``."""
        header = changes.pop("header", {})
        claims = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": ISSUER,
            "client_id": AGENT,
            "resource": RESOURCE,
            "scope": "mcp",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return self.sign(claims, alg=alg, **{"typ": "oauth-id-jag+jwt", **header})


def raw_signed(issuer: FakeIssuer, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An ES256 JWS built by hand, for headers joserfc refuses to produce (``crit``)."""
    head = segment({"alg": "ES256", "kid": issuer.ec.kid, **header})
    body = segment(claims)
    model = JWSRegistry().algorithms["ES256"]
    signature = model.sign(f"{head}.{body}".encode(), issuer.ec)
    return f"{head}.{body}.{b64(signature)}"


def unsigned(claims: dict[str, Any], **header: Any) -> str:
    """``alg: none`` (RFC 7519 §6): header, claims and an empty signature."""
    return f"{segment({'alg': 'none', **header})}.{segment(claims)}."


def hmac_with_public_key(issuer: FakeIssuer, claims: dict[str, Any], **header: Any) -> str:
    """The algorithm-confusion forgery: HS256 keyed with the issuer's public RSA key."""
    head = segment({"alg": "HS256", "kid": issuer.rsa.kid, **header})
    body = segment(claims)
    secret = json.dumps(issuer.jwks()["keys"][0], sort_keys=True).encode()
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def static_clients() -> tuple[Client, ...]:
    """A confidential client that may present ID-JAGs (Basic), another one (POST), a public one."""

    def client(client_id: str, secret: str | None, method: str) -> Client:
        return Client(
            client_id=client_id,
            secret_hash=digest(secret) if secret else None,
            token_endpoint_auth_method=method,
            redirect_uris=("https://agent.example/callback",),
            grant_types=("authorization_code", "refresh_token"),
            source="static",
            issued_at=0,
        )

    return (
        client(AGENT, AGENT_SECRET, "client_secret_basic"),
        client(OTHER_AGENT, OTHER_SECRET, "client_secret_post"),
        client(PUBLIC, None, "none"),
    )


def trusted(idp: FakeIssuer, **changes: Any) -> TrustedIssuer:
    fields: dict[str, Any] = {
        "issuer": idp.issuer,
        "jwks_uri": idp.jwks_uri,
        "audience": RESOURCE,
        "subject_prefix": "corp",
        "algorithms": ("ES256", "RS256"),
    }
    fields.update(changes)
    return TrustedIssuer(**fields)


def enterprise(idp: FakeIssuer, **changes: Any) -> EnterpriseIssuer:
    fields: dict[str, Any] = {
        "issuer": idp.issuer,
        "jwks_uri": idp.jwks_uri,
        "subject_prefix": "acme",
        "clients": (AGENT,),
        "algorithms": ("ES256", "RS256"),
    }
    fields.update(changes)
    return EnterpriseIssuer(**fields)


def issuer_harness(
    idp: FakeIssuer,
    *,
    trusted_issuers: tuple[TrustedIssuer, ...] | None = None,
    enterprise_issuers: tuple[EnterpriseIssuer, ...] | None = None,
    store: Any = None,
    **config: Any,
) -> Harness:
    """A harness whose config trusts ``idp`` in both tables (unless told otherwise) and whose
    document fetcher is ``idp.fetch``."""
    h = Harness(
        make_config(
            static_clients=static_clients(),
            trusted_issuers=(trusted(idp),) if trusted_issuers is None else trusted_issuers,
            enterprise_issuers=(
                (enterprise(idp),) if enterprise_issuers is None else enterprise_issuers
            ),
            **config,
        ),
        store=store,
    )
    h.fetch = idp.fetch
    return h


def basic(client_id: str = AGENT, secret: str = AGENT_SECRET) -> tuple[tuple[str, str], ...]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return (("authorization", f"Basic {raw}"),)


def records(store: MemoryStore) -> set[tuple[str, str]]:
    """The (kind, key) of every live record of a memory store."""
    return {key for key in store._records}


__all__ = [
    "AGENT",
    "AGENT_SECRET",
    "IDP",
    "IDP_JWKS",
    "OTHER_AGENT",
    "OTHER_IDP",
    "OTHER_JWKS",
    "OTHER_SECRET",
    "PUBLIC",
    "RESOURCE",
    "FakeIssuer",
    "basic",
    "enterprise",
    "hmac_with_public_key",
    "issuer_harness",
    "keys",
    "raw_signed",
    "records",
    "static_clients",
    "trusted",
    "unsigned",
]
