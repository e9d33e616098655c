"""The authorization server as one object: routing requests to endpoint handlers, rendering errors.

``AuthorizationServer.handle`` returns a generator (the handler for the request's endpoint) that the
adapters' drivers run. Errors raised by a handler become responses here, by the endpoint's kind:

- JSON endpoints (token, registration, revocation) answer ``{"error", "error_description"}`` with
  ``Cache-Control: no-store`` (SECURITY.md 26) and CORS (INTEROP.md);
- browser endpoints (authorize, consent, callback) render an HTML page; they redirect an error to the
  client only from inside the handler, after the client and redirect URI are validated (SECURITY.md 2).

Discovery paths follow RFC 8414 §3.1 (path insertion for issuers with a path), OpenID Connect
Discovery 1.0 §4 (path appending) and RFC 9728 §3.1.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .config import Context, ProxyConfig
from .crypto import RandomSource
from .errors import MethodNotAllowedError, NotFoundError, OAuthError
from .handlers.authorize import authorize_endpoint
from .handlers.bearer import Challenge, Principal, verify_bearer
from .handlers.callback import callback_endpoint
from .handlers.consent import consent_get, consent_post
from .handlers.metadata import CORS, as_metadata_endpoint, jwks_endpoint, prm_endpoint
from .handlers.registration import (
    client_configuration_endpoint,
    management_prefix,
    register_endpoint,
)
from .handlers.revocation import revocation_endpoint
from .handlers.token import token_endpoint
from .http import Request, Response, json_response
from .keys import Keyring
from .pages import error_page

Endpoint = Callable[[Request, Context], Generator[Any, Any, Response]]
Methods = Mapping[str, Endpoint]

_PREFLIGHT_HEADERS: tuple[tuple[str, str], ...] = (
    *CORS,
    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"),
    ("Access-Control-Max-Age", "86400"),
)


_MANAGEMENT_PREFLIGHT: tuple[tuple[str, str], ...] = (
    *CORS,
    ("Access-Control-Allow-Methods", "GET, PUT, DELETE, OPTIONS"),
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"),
    ("Access-Control-Max-Age", "86400"),
)


class _Route:
    __slots__ = ("browser", "cors", "methods", "preflight")

    def __init__(
        self,
        methods: Methods,
        *,
        browser: bool,
        cors: bool,
        preflight: tuple[tuple[str, str], ...] = _PREFLIGHT_HEADERS,
    ) -> None:
        self.methods = methods
        self.browser = browser
        self.cors = cors
        self.preflight = preflight


class AuthorizationServer:
    """Everything the proxy serves, as handlers over immutable requests.

    >>> server = AuthorizationServer(config, keyring)            # doctest: +SKIP
    >>> response = run(server.handle(request, now=..., random=...), store, http)  # doctest: +SKIP
    """

    def __init__(self, config: ProxyConfig, keys: Keyring) -> None:
        self.config = config
        self.keys = keys
        self._routes = self._build_routes()
        # RFC 7592 §3: registration_client_uri = <issuer>/register/<client_id>, one route for all.
        self._management_prefix = management_prefix(config.issuer)
        manage = {
            "GET": client_configuration_endpoint,
            "PUT": client_configuration_endpoint,
            "DELETE": client_configuration_endpoint,
        }
        self._management = _Route(manage, browser=False, cors=True, preflight=_MANAGEMENT_PREFLIGHT)

    def context(self, *, now: int, random: RandomSource, remote_addr: str = "") -> Context:
        return Context(
            config=self.config, keys=self.keys, now=now, random=random, remote_addr=remote_addr
        )

    def _build_routes(self) -> dict[str, _Route]:
        cfg = self.config
        base = urlsplit(cfg.issuer).path  # "" or "/p"
        mcp = cfg.mcp_path
        routes: dict[str, _Route] = {}

        def add(path: str, methods: Methods, *, browser: bool = False, cors: bool = False) -> None:
            routes[path] = _Route(methods, browser=browser, cors=cors)

        meta = {"GET": as_metadata_endpoint}
        for path in {
            f"/.well-known/oauth-authorization-server{base}",
            f"/.well-known/openid-configuration{base}",
            f"{base}/.well-known/openid-configuration",
            f"{base}/.well-known/oauth-authorization-server",
        }:
            add(path, meta, cors=True)
        prm = {"GET": prm_endpoint}
        add(f"/.well-known/oauth-protected-resource{base}{mcp}", prm, cors=True)
        add("/.well-known/oauth-protected-resource", prm, cors=True)
        add(f"{base}/jwks.json", {"GET": jwks_endpoint}, cors=True)
        add(f"{base}/register", {"POST": register_endpoint}, cors=True)
        add(f"{base}/token", {"POST": token_endpoint}, cors=True)
        add(f"{base}/revoke", {"POST": revocation_endpoint}, cors=True)
        add(
            f"{base}/authorize",
            {"GET": authorize_endpoint, "POST": authorize_endpoint},
            browser=True,
        )
        add(f"{base}/consent", {"GET": consent_get, "POST": consent_post}, browser=True)
        add(urlsplit(cfg.callback_url).path, {"GET": callback_endpoint}, browser=True)
        return routes

    @property
    def paths(self) -> Sequence[str]:
        return tuple(self._routes)

    def handles(self, path: str) -> bool:
        return path in self._routes or self._is_management(path)

    def _is_management(self, path: str) -> bool:
        return path.startswith(self._management_prefix) and len(path) > len(self._management_prefix)

    def handle(
        self, req: Request, *, now: int, random: RandomSource
    ) -> Generator[Any, Any, Response]:
        """The generator answering ``req``; drive it with a driver from ``oauthproxy_adapters``."""
        return self._dispatch(
            req, self.context(now=now, random=random, remote_addr=req.remote_addr)
        )

    def _dispatch(self, req: Request, ctx: Context) -> Generator[Any, Any, Response]:
        route = self._routes.get(req.path)
        if route is None and self._is_management(req.path):
            route = self._management
        if route is None:
            return render_error(NotFoundError("no such endpoint"), browser=False, cors=False)
        if req.method == "OPTIONS" and route.cors:
            return Response(status=204, headers=route.preflight)
        endpoint = route.methods.get(req.method)
        if endpoint is None:
            allow = ", ".join(route.methods)
            resp = render_error(
                MethodNotAllowedError("method not allowed"), browser=False, cors=route.cors
            )
            return Response(status=405, headers=(*resp.headers, ("Allow", allow)), body=resp.body)
        try:
            return (yield from endpoint(req, ctx))
        except OAuthError as err:
            return render_error(err, browser=route.browser, cors=route.cors)

    def verify_bearer(
        self,
        authorization: str | None,
        *,
        now: int,
        random: RandomSource,
        required_scopes: Sequence[str] = (),
    ) -> Generator[Any, Any, Principal | Challenge]:
        return verify_bearer(authorization, self.context(now=now, random=random), required_scopes)


def render_error(err: OAuthError, *, browser: bool, cors: bool) -> Response:
    extra: tuple[tuple[str, str], ...] = ()
    if err.retry_after is not None:
        extra += (("Retry-After", str(err.retry_after)),)
    if browser:
        page = error_page(err.status, err.error, err.description or "The request was not valid.")
        return Response(status=page.status, headers=page.headers + extra, body=page.body)
    if cors:
        extra += CORS
    if err.status == 401 and err.error == "invalid_client":
        # RFC 6749 §5.2: a 401 from the token endpoint carries a challenge for the client's scheme.
        extra += (("WWW-Authenticate", 'Basic realm="oauthproxy"'),)
    elif err.status == 401 and err.error == "invalid_token":
        # RFC 6750 §3 (RFC 7592 §2: the registration access token is a bearer token).
        extra += (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
    body = {"error": err.error}
    if err.description:
        body["error_description"] = err.description
    return json_response(err.status, body, extra_headers=extra)
