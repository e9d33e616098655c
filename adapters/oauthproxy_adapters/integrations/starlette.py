"""Starlette and FastAPI: the authorization server as routes, and a dependency for the caller.

```python
app = FastAPI()
install(app, proxy)                        # /.well-known/..., /register, /authorize, /token, ...

@app.get("/api/me")
async def me(principal: Annotated[Principal, Depends(require_principal(scopes=["mcp"]))]) -> dict:
    return {"subject": principal.subject}
```

- ``authorization_server_routes(proxy)``: one Starlette ``Route`` per path the core serves (every
  metadata URL of spec/interop.md, registration and RFC 7592 management, authorize, consent, the upstream
  callback, token, revocation, JWKS), all answered by the core through ``..asgi.OAuthProxyApp``.
  Methods are left to the core (it answers 405 and CORS preflights itself).
- ``install(app, proxy)``: puts those routes first in ``app``'s router, remembers ``proxy`` on
  ``app.state`` for ``require_principal`` and registers the handler that renders a challenge.
- ``require_principal(scopes=..., proxy=None)``: a dependency (FastAPI's ``Depends``, or awaited
  directly in a Starlette endpoint) returning the verified ``Principal``. A missing or bad token raises
  ``OAuthChallengeError``, answered 401 with the core's ``WWW-Authenticate`` (``resource_metadata``,
  ``scope``, ``error="invalid_token"`` when a token was sent); missing scopes give 403
  ``insufficient_scope`` (RFC 6750 §3.1). The principal is also put on
  ``request.state.oauthproxy_principal``.

FastAPI is Starlette underneath: this module imports only Starlette.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response as StarletteResponse
from starlette.routing import BaseRoute, Route

from oauthproxy_core.bearer_header import parse_bearer
from oauthproxy_core.handlers.bearer import Challenge, Principal

from ..asgi import PRINCIPAL_KEY, OAuthProxyApp
from ..proxy import AsyncProxy

__all__ = [
    "OAuthChallengeError",
    "authorization_server_routes",
    "challenge_response",
    "install",
    "principal_of",
    "require_principal",
]

#: Where ``install`` keeps the proxy (``app.state.oauthproxy``).
STATE_KEY = "oauthproxy"


def authorization_server_routes(proxy: AsyncProxy) -> list[BaseRoute]:
    """A ``Route`` for every path the core serves, each answered by the core."""
    endpoint = OAuthProxyApp(proxy, None, protect=())
    routes: list[BaseRoute] = [Route(path, endpoint=endpoint) for path in proxy.server.paths]
    # The table's prefix routes (RFC 7592: <issuer>/register/<client_id>, one for every client).
    for prefix, _ in proxy.server.routes.prefixes:
        routes.append(Route(prefix + "{client_id:path}", endpoint=endpoint))
    return routes


class OAuthChallengeError(HTTPException):
    """A bearer check failed: carries the core's ``Challenge`` (status and ``WWW-Authenticate``).

    Without ``install``'s handler, Starlette and FastAPI still answer with the right status and
    ``WWW-Authenticate`` header (their own body); with it, the body is the core's JSON error.
    """

    def __init__(self, challenge: Challenge) -> None:
        self.challenge = challenge
        super().__init__(
            status_code=challenge.status,
            detail=challenge.error or "authorization required",
            headers={"WWW-Authenticate": challenge.www_authenticate},
        )


def challenge_response(challenge: Challenge) -> StarletteResponse:
    """The core's response for ``challenge`` as a Starlette response."""
    core = challenge.response()
    return StarletteResponse(
        content=core.body,
        status_code=core.status,
        headers=dict(core.headers),
    )


async def _render_challenge(request: Request, exc: Exception) -> StarletteResponse:
    assert isinstance(exc, OAuthChallengeError)
    return challenge_response(exc.challenge)


def install(app: Starlette, proxy: AsyncProxy) -> None:
    """Serve the authorization server from ``app`` and enable ``require_principal`` in it."""
    app.router.routes[:0] = authorization_server_routes(proxy)
    setattr(app.state, STATE_KEY, proxy)
    app.add_exception_handler(OAuthChallengeError, _render_challenge)


def _proxy_of(request: Request) -> AsyncProxy:
    proxy = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(proxy, AsyncProxy):
        raise RuntimeError("no oauthproxy here: call install(app, proxy) or pass proxy=")
    return proxy


def require_principal(
    scopes: Sequence[str] = (), *, proxy: AsyncProxy | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency returning the request's verified ``Principal`` (see the module docstring)."""
    required = tuple(scopes)

    async def principal(request: Request) -> Principal:
        verdict = await (proxy or _proxy_of(request)).verify(
            parse_bearer(request.headers.getlist("authorization")), required
        )
        if isinstance(verdict, Challenge):
            raise OAuthChallengeError(verdict)
        setattr(request.state, PRINCIPAL_KEY, verdict)
        return verdict

    return principal


def principal_of(request: Request) -> Principal | None:
    """The principal a ``require_principal`` dependency (or ``OAuthProxyApp``) verified, if any."""
    value: Any = getattr(request.state, PRINCIPAL_KEY, None)
    return value if isinstance(value, Principal) else None
