"""Discovery documents: RFC 8414 (authorization server metadata, also served at the OpenID Connect
Discovery 1.0 §4 alias), RFC 9728 (protected resource metadata) and the JWKS (RFC 7517 §5).

spec/interop.md: clients do not follow redirects here, so every probed URL answers 200 directly, and
``issuer`` is byte-identical in these documents and in every ``iss`` parameter.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..config import Context
from ..effects import Handler
from ..http import Request, Response, json_response
from ..scopes import without_offline_access
from . import id_jag
from .client_credentials import machine_clients, static_private_key_jwt

CORS: tuple[tuple[str, str], ...] = (("Access-Control-Allow-Origin", "*"),)
#: RFC 8628 §3.4 (handlers/device.py imports this module, so the name lives here).
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: Metadata may be cached briefly; it changes only with configuration.
CACHEABLE: tuple[tuple[str, str], ...] = (("Cache-Control", "public, max-age=300"),)


def authorization_server_metadata(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    iss = cfg.issuer
    methods = ["none", "client_secret_post", "client_secret_basic"]
    # RFC 7523 §2.2: CIMD clients, and pre-registered clients configured for it.
    jwt_auth = cfg.cimd_enabled or static_private_key_jwt(cfg)
    if jwt_auth:
        methods.append("private_key_jwt")
    grant_types = ["authorization_code", "refresh_token"]
    if machine_clients(cfg):
        # MCP extension io.modelcontextprotocol/oauth-client-credentials: only while a client
        # may use it (handlers/client_credentials.py).
        grant_types.append("client_credentials")
    body: dict[str, Any] = {
        "issuer": iss,
        "authorization_endpoint": iss + "/authorize",
        "token_endpoint": iss + "/token",
        "registration_endpoint": iss + "/register",
        "revocation_endpoint": iss + "/revoke",
        "jwks_uri": iss + "/jwks.json",
        "scopes_supported": list(cfg.scopes_supported),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": list(methods),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "protected_resources": list(cfg.resource_urls),
    }
    if not cfg.admission.dcr:
        # [clients] dcr = false (admission.py): RFC 8414 §2 makes the member optional; without it
        # MCP clients identify themselves with a metadata document (or a pre-registered id).
        del body["registration_endpoint"]
    if cfg.cimd_enabled:
        # draft-ietf-oauth-client-id-metadata-document §5; MCP 2025-11-25 clients check this flag.
        body["client_id_metadata_document_supported"] = True
    if jwt_auth:
        # The client credentials extension requires these whenever JWT authentication is offered.
        algs = ["ES256", "RS256", "EdDSA"]
        body["token_endpoint_auth_signing_alg_values_supported"] = algs
        body["revocation_endpoint_auth_signing_alg_values_supported"] = list(algs)
    _add_enterprise_grant(body, ctx)
    if ctx.config.device.enabled:
        # RFC 8628 §4: the endpoint, and the grant among the supported ones.
        body["device_authorization_endpoint"] = iss + "/device_authorization"
        body["grant_types_supported"].append(DEVICE_GRANT_TYPE)
    return body


def _add_enterprise_grant(body: dict[str, Any], ctx: Context) -> None:
    """While an enterprise issuer is configured: the jwt-bearer grant (RFC 7523 §2.1) and the ID-JAG
    grant profile (draft-ietf-oauth-identity-assertion-authz-grant-03, "Resource Authorization Server
    Metadata"). Which issuers are trusted is never published (its "Metadata Disclosure")."""
    if ctx.config.enterprise_issuers:
        body["grant_types_supported"].append(id_jag.GRANT_TYPE)
        body["authorization_grant_profiles_supported"] = [id_jag.GRANT_PROFILE]


#: The RFC 9728 §3.1 well-known segment, inserted before a resource's path.
PRM_PREFIX = "/.well-known/oauth-protected-resource"


def protected_resource_metadata(ctx: Context, resource: str | None = None) -> dict[str, Any]:
    """RFC 9728 §2 for ``resource`` (default: the default resource). A ``[[resources]]`` entry
    lists its own baseline scopes and name (spec/security.md 40); the single-resource form the
    catalogue, as it always has."""
    cfg = ctx.config
    url = resource or cfg.resource
    server = cfg.resource_server(url)
    scopes = server.scopes if cfg.resources and server is not None else cfg.scopes_supported
    return {
        "resource": url,
        "authorization_servers": [cfg.issuer],
        # MCP 2026-07-28 (SEP-2207): the resource lists what it needs, never offline_access.
        "scopes_supported": list(without_offline_access(scopes)),
        "bearer_methods_supported": ["header"],
        "resource_name": server.name if server is not None else cfg.service_name,
    }


def resource_of_metadata_path(ctx: Context, path: str) -> str:
    """The resource whose metadata URL (RFC 9728 §3.1) has the path ``path``; the default
    resource for the bare well-known path."""
    tail = path.removeprefix(PRM_PREFIX)
    for url in ctx.config.resource_urls:
        if urlsplit(url).path == tail:
            return url
    return ctx.config.resource


def as_metadata_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    return json_response(
        200, authorization_server_metadata(ctx), no_store=False, extra_headers=CORS + CACHEABLE
    )
    yield  # pragma: no cover - makes this a generator like every handler


def prm_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    body = protected_resource_metadata(ctx, resource_of_metadata_path(ctx, req.path))
    return json_response(200, body, no_store=False, extra_headers=CORS + CACHEABLE)
    yield  # pragma: no cover


def jwks_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    return json_response(
        200, ctx.keys.public_jwks(), no_store=False, extra_headers=CORS + CACHEABLE
    )
    yield  # pragma: no cover
