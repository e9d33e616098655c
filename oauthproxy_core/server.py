"""The authorization server as one object: routing requests to endpoint handlers, rendering errors.

``AuthorizationServer.handle`` returns a generator (the handler for the request's endpoint, found in
the route table of routes.py) that the adapters' drivers run. Errors raised by a handler become
responses here, by the endpoint's kind:

- JSON endpoints (token, registration, revocation) answer ``{"error", "error_description"}`` with
  ``Cache-Control: no-store`` (spec/security.md 26) and CORS (spec/interop.md);
- browser endpoints (authorize, consent, callback) render an HTML page; they redirect an error to the
  client only from inside the handler, after the client and redirect URI are validated (spec/security.md 2).

A path outside the table is 404, a method its route does not list 405 with ``Allow``, and ``OPTIONS``
on a CORS route the route's preflight answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from .bearer_header import BearerCredentials
from .config import Context, ProxyConfig
from .crypto import RandomSource
from .effects import Handler
from .errors import MethodNotAllowedError, NotFoundError, OAuthError
from .handlers.bearer import Challenge, Principal, verify_bearer
from .handlers.metadata import CORS
from .http import Request, Response, json_response
from .keys import Keyring
from .pages import error_response
from .routes import RouteTable


class AuthorizationServer:
    """Everything the proxy serves, as handlers over immutable requests.

    >>> server = AuthorizationServer(config, keyring)            # doctest: +SKIP
    >>> response = run(server.handle(request, now=..., random=...), store, http)  # doctest: +SKIP
    """

    def __init__(self, config: ProxyConfig, keys: Keyring) -> None:
        self.config = config
        self.keys = keys
        #: The route table (routes.py) expanded for this configuration.
        self.routes = RouteTable(config)

    def context(self, *, now: int, random: RandomSource, remote_addr: str = "") -> Context:
        return Context(
            config=self.config, keys=self.keys, now=now, random=random, remote_addr=remote_addr
        )

    @property
    def paths(self) -> Sequence[str]:
        return self.routes.paths

    def handles(self, path: str) -> bool:
        return self.routes.match(path) is not None

    def handle(self, req: Request, *, now: int, random: RandomSource) -> Handler[Response]:
        """The generator answering ``req``; drive it with a driver from ``oauthproxy_adapters``."""
        return self._dispatch(
            req, self.context(now=now, random=random, remote_addr=req.remote_addr)
        )

    def _dispatch(self, req: Request, ctx: Context) -> Handler[Response]:
        route = self.routes.match(req.path)
        if route is None:
            return render_error(NotFoundError("no such endpoint"), browser=False, cors=False)
        if req.method == "OPTIONS" and route.cors:
            return Response(status=204, headers=route.preflight)
        endpoint = route.handler(req.method)
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
        authorization: str | BearerCredentials | None,
        *,
        now: int,
        random: RandomSource,
        required_scopes: Sequence[str] = (),
        resource: str | None = None,
    ) -> Handler[Principal | Challenge]:
        """The bearer check for ``resource`` (default: the default resource, spec/security.md 40)."""
        ctx = self.context(now=now, random=random)
        return verify_bearer(authorization, ctx, required_scopes, resource)


def render_error(err: OAuthError, *, browser: bool, cors: bool) -> Response:
    """``err`` as its class declares it: a page on a browser endpoint (``pages.error_response``),
    else JSON with the class's status and code, its ``challenge`` as ``WWW-Authenticate``."""
    if browser:
        return error_response(err)
    extra: tuple[tuple[str, str], ...] = ()
    if err.retry_after is not None:
        extra += (("Retry-After", str(err.retry_after)),)
    if cors:
        extra += CORS
    if err.challenge is not None:
        extra += (("WWW-Authenticate", err.challenge),)
    body = {"error": err.error}
    if err.description:
        body["error_description"] = err.description
    return json_response(err.status, body, extra_headers=extra + err.headers)
