"""Django: URL patterns serving the authorization server, and the ``@oauth_required`` view decorator.

```python
# urls.py
urlpatterns = [
    path("", include(oauthproxy_urls(proxy))),       # /.well-known/..., /register, /token, ...
    path("api/me", me),
]

# views.py
@oauth_required(scopes=["mcp"])                      # or plain @oauth_required
def me(request):
    return JsonResponse({"subject": request.oauthproxy_principal.subject})
```

- ``oauthproxy_urls(proxy)`` is a list of ``path()`` patterns, one per path the core serves (and
  RFC 7592's ``register/<client_id>``), each answered by the core through the blocking ``Proxy``. The
  views are exempt from Django's CSRF middleware: the token, registration and revocation endpoints
  are called by OAuth clients, not browsers with a Django session, and the consent form carries its
  own double-submit CSRF token (spec/security.md 17). A body larger than the core's bound is refused
  with 413 before it is read (spec/security.md 28). The last proxy given to ``oauthproxy_urls`` is the
  default of ``oauth_required``.
- ``oauth_required`` checks the ``Authorization`` header with the core's verifier; a failure is
  answered with the core's challenge (401 with ``resource_metadata`` and ``scope``,
  ``error="invalid_token"`` when a token was sent; 403 ``insufficient_scope``), success sets
  ``request.oauthproxy_principal``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from http.cookies import Morsel
from typing import Any, TypeVar, cast, overload

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt

from oauthproxy_core import Response
from oauthproxy_core.handlers.bearer import Challenge
from oauthproxy_core.http import MAX_BODY_BYTES

from ..asgi import TOO_LARGE
from ..proxy import Proxy
from ..wsgi import BAD_LENGTH, to_core_request

__all__ = ["PRINCIPAL_ATTRIBUTE", "django_response", "oauth_required", "oauthproxy_urls"]

#: The request attribute holding the verified ``Principal``.
PRINCIPAL_ATTRIBUTE = "oauthproxy_principal"

V = TypeVar("V", bound=Callable[..., HttpResponse])

_default: list[Proxy] = []


class _RawCookie(Morsel[str]):
    """A ``Set-Cookie`` value passed through exactly as the core wrote it."""

    def __init__(self, raw: str) -> None:
        super().__init__()
        self._raw = raw

    def OutputString(self, attrs: Any = None) -> str:
        return self._raw


def django_response(resp: Response) -> HttpResponse:
    """The core's response as Django's (each ``Set-Cookie`` kept as its own header)."""
    out = HttpResponse(resp.body, status=resp.status)
    del out["Content-Type"]
    for name, value in resp.headers:
        if name.lower() == "set-cookie":
            out.cookies[value.partition("=")[0].strip()] = _RawCookie(value)
        elif name in out:
            out[name] = out[name] + ", " + value
        else:
            out[name] = value
    return out


def _path(route: str) -> str:
    return route.lstrip("/")  # Django's routes have no leading slash


def oauthproxy_urls(proxy: Proxy) -> list[URLPattern]:
    """URL patterns for every path of the authorization server: ``include()`` them at the root."""

    def endpoint(request: HttpRequest, **_: str) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit():
            return django_response(BAD_LENGTH)
        if int(declared) > MAX_BODY_BYTES:
            return django_response(TOO_LARGE)
        body = request.body
        if len(body) > MAX_BODY_BYTES:
            return django_response(TOO_LARGE)
        return django_response(proxy.handle(to_core_request(request.META, body)))

    view = csrf_exempt(endpoint)
    _default[:] = [proxy]
    patterns = [path(_path(p), view) for p in proxy.server.paths]
    # The table's prefix routes (RFC 7592: <issuer>/register/<client_id>).
    patterns += [path(_path(p) + "<path:client_id>", view) for p, _ in proxy.server.routes.prefixes]
    return patterns


def _guard(view: V, required: tuple[str, ...], proxy: Proxy | None) -> V:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        chosen = proxy or (_default[0] if _default else None)
        if chosen is None:
            raise RuntimeError("no oauthproxy here: include oauthproxy_urls(proxy) or pass proxy=")
        verdict = chosen.verify(request.headers.get("Authorization"), required)
        if isinstance(verdict, Challenge):
            return django_response(verdict.response())
        setattr(request, PRINCIPAL_ATTRIBUTE, verdict)
        return view(request, *args, **kwargs)

    return cast(V, wrapped)


@overload
def oauth_required(view: V, /) -> V: ...
@overload
def oauth_required(
    *, scopes: Sequence[str] = (), proxy: Proxy | None = None
) -> Callable[[V], V]: ...
def oauth_required(
    view: V | None = None, /, *, scopes: Sequence[str] = (), proxy: Proxy | None = None
) -> V | Callable[[V], V]:
    """Decorate a view: it runs only for a valid bearer token carrying ``scopes``."""
    if view is not None:
        return _guard(view, (), proxy)
    return lambda v: _guard(v, tuple(scopes), proxy)
