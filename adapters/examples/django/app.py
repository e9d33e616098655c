"""A one-file Django project serving oauthproxy's authorization server and a view for signed-in
callers. Settings are set in code to keep it to one file; in a real project they live in settings.py.

Run: ``OAUTHPROXY_CONFIG=proxy.toml python adapters/examples/django/app.py`` (``mcp_path = "/api"``)
"""

from __future__ import annotations

import os
import socketserver
from wsgiref.simple_server import WSGIServer, make_server

import django
from django.conf import settings as django_settings
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from oauthproxy_adapters.config_file import load_settings
from oauthproxy_adapters.integrations.django import oauth_required, oauthproxy_urls
from oauthproxy_adapters.integrations.proxies import sync_proxy

settings = load_settings(os.environ.get("OAUTHPROXY_CONFIG", "proxy.toml"))
django_settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ALLOWED_HOSTS=[settings.host, "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
)
django.setup()


@oauth_required(scopes=["mcp"])
def me(request: HttpRequest) -> JsonResponse:
    principal = request.oauthproxy_principal  # type: ignore[attr-defined]
    return JsonResponse(
        {"subject": principal.subject, "login": dict(principal.claims).get("login", "")}
    )


urlpatterns = [
    path("", include(oauthproxy_urls(sync_proxy(settings)))),
    path(settings.mcp_path.lstrip("/") + "/me", me),
]


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


if __name__ == "__main__":
    from django.core.wsgi import get_wsgi_application

    with make_server(
        settings.host, settings.port, get_wsgi_application(), server_class=ThreadingWSGIServer
    ) as httpd:
        httpd.serve_forever()
