"""A DEVELOPMENT-ONLY, GitHub-shaped OAuth provider for ``oauthproxy demo`` and local testing.

NOT FOR PRODUCTION. It has no users, no passwords and no consent: every authorization request is
approved at once for one fixed demo user. It exists so that the whole flow can run on one machine with
nothing to configure.

It is the testing kit's ``FakeProvider`` (``testing/provider.py``, which documents the GitHub
behaviour it mimics, spec/interop.md) with the demo's user and a banner at ``/``: it checks the
client id and secret, the registered redirect URI, PKCE (S256) and single use of codes, answers the
token endpoint form-encoded unless asked for JSON, issues no refresh token and sends no ``iss``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from oauthproxy_core import HttpRequest, HttpResponse

from .testing.provider import FakeProvider, UpstreamUser

BANNER = "oauthproxy development provider - NOT FOR PRODUCTION"

DEMO_USER = UpstreamUser(
    id=4242, login="demo-user", name="Demo User", email="demo-user@example.invalid"
)


class DevProvider(FakeProvider):
    """The provider at ``/login/oauth/authorize``, ``/login/oauth/access_token`` and ``/user`` of
    wherever ``app`` is served, with the banner at ``/``."""

    def __init__(self, *, client_id: str, client_secret: str, redirect_uri: str) -> None:
        super().__init__(
            redirect_uri=redirect_uri,
            client_id=client_id,
            client_secret=client_secret,
            user=DEMO_USER,
        )

    def other(self, req: HttpRequest) -> HttpResponse:
        if urlsplit(req.url).path == "/":
            if req.method not in ("GET", "HEAD"):
                return _plain(405, "Method Not Allowed")
            return _plain(200, BANNER + "\n")
        return super().other(req)


def _plain(status: int, text: str) -> HttpResponse:
    return HttpResponse(
        status=status, headers=(("Content-Type", "text/plain; charset=utf-8"),), body=text.encode()
    )
