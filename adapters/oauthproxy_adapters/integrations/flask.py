"""Flask: a blueprint serving the authorization server, and ``@require_oauth(scopes)`` for views.

```python
app = Flask(__name__)
app.register_blueprint(oauthproxy_blueprint(proxy))      # /.well-known/..., /register, /token, ...

@app.get("/api/me")
@require_oauth(["mcp"])
def me():
    return {"subject": g.oauthproxy_principal.subject}
```

- ``oauthproxy_blueprint(proxy)`` registers one URL rule per path the core serves (and RFC 7592's
  ``/register/<client_id>``); each is answered by the core through the blocking ``Proxy``, with the
  body read as the WSGI adapter reads it (never past the core's bound: 413, spec/security.md 28). It also
  records ``proxy`` in ``app.extensions["oauthproxy"]`` for the decorator.
- ``require_oauth(scopes, proxy=None)`` checks the ``Authorization`` header with the core's verifier;
  a failure is answered with the core's challenge (401 with ``resource_metadata`` and ``scope``,
  ``error="invalid_token"`` when a token was sent; 403 ``insufficient_scope``), success puts the
  ``Principal`` on ``flask.g.oauthproxy_principal``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, current_app, g, request
from flask import Response as FlaskResponse
from flask.blueprints import BlueprintSetupState

from oauthproxy_core import Response
from oauthproxy_core.handlers.bearer import Challenge, Principal

from ..asgi import TOO_LARGE
from ..proxy import Proxy
from ..wsgi import INCOMPLETE_BODY, _BodyRefusedError, read_body, to_core_request

__all__ = ["EXTENSION_KEY", "G_KEY", "current_principal", "oauthproxy_blueprint", "require_oauth"]

#: ``app.extensions[EXTENSION_KEY]`` holds the proxy; ``g.<G_KEY>`` the verified principal.
EXTENSION_KEY = "oauthproxy"
G_KEY = "oauthproxy_principal"

F = TypeVar("F", bound=Callable[..., Any])


def flask_response(resp: Response) -> FlaskResponse:
    """The core's response as Flask's (repeated headers such as ``Set-Cookie`` kept)."""
    out = FlaskResponse(resp.body, status=resp.status)
    out.headers.clear()
    for name, value in resp.headers:
        out.headers.add(name, value)
    return out


def oauthproxy_blueprint(proxy: Proxy, name: str = "oauthproxy") -> Blueprint:
    """A blueprint answering every path of the authorization server (register it without a prefix)."""
    blueprint = Blueprint(name, __name__)

    def endpoint(**_: str) -> FlaskResponse:
        try:
            body = read_body(request.environ)
        except _BodyRefusedError as bad:
            return flask_response(bad.response)
        except (OSError, ValueError):
            return flask_response(INCOMPLETE_BODY)
        if body is None:
            return flask_response(TOO_LARGE)
        return flask_response(proxy.handle(to_core_request(request.environ, body)))

    methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
    for i, path in enumerate(proxy.server.paths):
        blueprint.add_url_rule(
            path, f"endpoint_{i}", endpoint, methods=methods, provide_automatic_options=False
        )
    for prefix, route in proxy.server.routes.prefixes:  # RFC 7592: <issuer>/register/<id>
        blueprint.add_url_rule(
            prefix + "<path:client_id>",
            route.name,
            endpoint,
            methods=methods,
            provide_automatic_options=False,
        )

    def remember(state: BlueprintSetupState) -> None:
        state.app.extensions[EXTENSION_KEY] = proxy

    blueprint.record_once(remember)
    return blueprint


def _proxy_of(app: Flask) -> Proxy:
    proxy = app.extensions.get(EXTENSION_KEY)
    if not isinstance(proxy, Proxy):
        raise RuntimeError(
            "no oauthproxy here: register oauthproxy_blueprint(proxy) or pass proxy="
        )
    return proxy


def require_oauth(scopes: Sequence[str] = (), *, proxy: Proxy | None = None) -> Callable[[F], F]:
    """Decorate a view: it runs only for a valid bearer token carrying ``scopes``."""
    required = tuple(scopes)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            verdict = (proxy or _proxy_of(current_app)).verify(
                request.headers.get("Authorization"), required
            )
            if isinstance(verdict, Challenge):
                return flask_response(verdict.response())
            setattr(g, G_KEY, verdict)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorate


def current_principal() -> Principal | None:
    """The principal ``require_oauth`` verified for this request, if any."""
    value = g.get(G_KEY)
    return value if isinstance(value, Principal) else None
