"""A fake upstream provider for tests: GitHub-shaped OAuth 2.0, usable in process or on a socket.

NOT FOR PRODUCTION: it has no passwords, and every authorization request it accepts signs in its one
configured user (or the user a test names). It checks what a real provider checks, so a proxy that
sends the wrong thing fails against it as it would against GitHub: the client id and secret, the
registered redirect URI, PKCE ``S256`` (RFC 7636 §4.6) and single use of codes (RFC 6749 §4.1.2).
It answers the way GitHub does (spec/interop.md), which a naive client gets wrong:

- the token endpoint answers form-encoded unless the request says ``Accept: application/json``, and
  answers HTTP 200 with an ``error`` field on failure;
- OAuth-App style by default: no refresh token and no ``expires_in``; with ``refresh_tokens=True``
  GitHub-App style: ``expires_in``, and a refresh token that rotates at each use (RFC 6749 §6);
- identity comes from ``GET /user`` (numeric ``id``, ``login``, ``name``), granted scopes from the
  ``X-OAuth-Scopes`` header; organization and team memberships from ``GET /user/orgs`` and
  ``GET /user/teams`` (the user's ``orgs`` and ``teams``), for the ``[access]`` rules;
- no ``iss`` in the authorization response unless ``issuer`` is given (GitHub does not implement
  RFC 9207; a provider that does sends it, RFC 9207 §2).

The provider is sans-IO: ``handle`` turns one ``HttpRequest`` into one ``HttpResponse``. Around it:

- ``provider(request)`` and ``await provider.async_http(request)`` execute the core's ``HttpCall``
  effects, so a ``Proxy`` or ``AsyncProxy`` can be given the provider as its HTTP client and never
  open a socket; ``calls`` records what it was asked;
- ``provider.login(authorize_url)`` is the user at the provider's authorization page: it returns the
  URL the provider redirects the browser to, without HTTP;
- ``provider.change_user(user)`` is an administrator changing the user at the provider (an
  organization left): every token of theirs answers for the new record from then on;
  ``provider.withdraw(user_id)`` revokes every token of the user (the app's authorization removed);
- ``provider.app`` is an ASGI application with the same endpoints, for ``httpx.ASGITransport`` or a
  real server on loopback (``oauthproxy_adapters.testing.serve.AppThread``);
- ``provider.upstream_toml()`` (or ``upstream_toml(base, ...)`` before the provider exists) is the
  ``[upstream]`` table of a ``proxy.toml`` that points ``oauthproxy serve`` at it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs

from oauthproxy_core import HttpFailure, HttpRequest, HttpResponse, UpstreamProfile

__all__ = ["FakeProvider", "ProviderError", "UpstreamUser", "upstream_toml"]

#: An ASGI application (scope, receive, send); typed loosely, as the ASGI servers are.
ASGIApp = Callable[[Any, Any, Any], Any]


class ProviderError(AssertionError):
    """The provider refused an authorization request it was sent without HTTP (``login``)."""


@attrs.frozen
class UpstreamUser:
    """Who signs in at the provider; ``GET /user`` answers these fields (``name`` defaults to the
    login in title case; ``email`` is left out when ``None``)."""

    id: int
    login: str
    name: str | None = None
    email: str | None = None
    #: Organization logins (``GET /user/orgs``) and ``org/team-slug`` teams (``GET /user/teams``).
    orgs: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "login": self.login,
            "name": self.name if self.name is not None else self.login.title(),
        }
        if self.email is not None:
            out["email"] = self.email
        return out


@attrs.frozen(kw_only=True)
class _Code:
    challenge: str
    scope: str
    user: UpstreamUser
    expires: float


@attrs.frozen(kw_only=True)
class _Token:
    scope: str
    user: UpstreamUser


class FakeProvider:
    """A GitHub-shaped provider at ``base`` that knows one client.

    ``redirect_uri`` is the proxy's callback (``ProxyConfig.callback_url``). ``client_id=None``
    accepts any client id (the secret is still checked). ``paths`` name the authorization, token and
    user endpoints (GitHub's by default). ``user`` signs in unless ``login`` names another.
    """

    GITHUB_PATHS = ("/login/oauth/authorize", "/login/oauth/access_token", "/user")

    def __init__(
        self,
        *,
        redirect_uri: str,
        base: str = "https://provider.test",
        client_id: str | None = "proxy-client",
        client_secret: str = "provider-secret-" + "s" * 24,
        user: UpstreamUser = UpstreamUser(id=4242, login="octocat"),
        paths: tuple[str, str, str] = GITHUB_PATHS,
        issuer: str | None = None,
        code_lifetime: int = 600,
        clock: Callable[[], float] = time.time,
        refresh_tokens: bool = False,
    ) -> None:
        self.base = base.rstrip("/")
        self.redirect_uri = redirect_uri
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = user
        self.authorize_path, self.token_path, self.user_path = paths
        self.issuer = issuer
        self.code_lifetime = code_lifetime
        self.clock = clock
        self.codes: dict[str, _Code] = {}
        self.tokens: dict[str, _Token] = {}
        #: Issue rotating refresh tokens (a GitHub App with expiring user tokens).
        self.issue_refresh = refresh_tokens
        self.refresh_tokens: dict[str, _Token] = {}
        #: Every request executed as an ``HttpCall`` (``provider(request)``), in order.
        self.calls: list[HttpRequest] = []
        #: How many times a user agent reached the authorization endpoint (each a sign-in page).
        self.authorize_requests = 0
        self._lock = threading.Lock()
        #: The provider as an ASGI application.
        self.app: ASGIApp = _ProviderApp(self)

    # -- what the proxy is configured with ------------------------------------------------------

    @property
    def authorize_url(self) -> str:
        return self.base + self.authorize_path

    @property
    def token_url(self) -> str:
        return self.base + self.token_path

    @property
    def userinfo_url(self) -> str:
        return self.base + self.user_path

    def profile(self, **overrides: Any) -> UpstreamProfile:
        """The proxy's ``UpstreamProfile`` for this provider (a generic OAuth 2.0 provider whose
        subject is the numeric ``id`` of ``GET /user``); ``overrides`` replace fields."""
        fields: dict[str, Any] = {
            "name": "github",
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "userinfo_url": self.userinfo_url,
            "client_id": self.client_id or "proxy-client",
            "client_secret": self.client_secret,
            "scopes": ("read:user",),
            "subject_field": "id",
            "issuer": self.issuer,
            "org_membership_url": self.userinfo_url + "/orgs",
            "team_membership_url": self.userinfo_url + "/teams",
        }
        fields.update(overrides)
        return UpstreamProfile(**fields)

    def upstream_toml(self, *, scopes: tuple[str, ...] = ("read:user",)) -> str:
        """The ``[upstream]`` table of a ``proxy.toml`` for this provider (see ``upstream_toml``)."""
        return upstream_toml(
            self.base,
            client_id=self.client_id or "proxy-client",
            client_secret=self.client_secret,
            scopes=scopes,
            paths=(self.authorize_path, self.token_path, self.user_path),
        )

    # -- the ways in ----------------------------------------------------------------------------

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        """Execute an ``HttpCall`` of a ``Proxy`` (blocking driver)."""
        self.calls.append(req)
        return self.handle(req)

    async def async_http(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        """Execute an ``HttpCall`` of an ``AsyncProxy``."""
        return self(req)

    def login(
        self, authorize_url: str, user: UpstreamUser | None = None, *, deny: bool = False
    ) -> str:
        """``user`` (default: the provider's) at the authorization page: approves (or, with
        ``deny``, refuses, RFC 6749 §4.1.2.1 ``access_denied``); returns where the provider sends
        the browser. Raises ``ProviderError`` where the provider would show an error page."""
        query = dict(parse_qsl(urlsplit(authorize_url).query))
        resp = self._authorize(query, user or self.user, deny=deny)
        location = resp.header("location")
        if location is None:
            raise ProviderError(f"the provider refused: {resp.status} {resp.body.decode()}")
        return location

    def handle(self, req: HttpRequest) -> HttpResponse:
        """One request to the provider, answered."""
        parts = urlsplit(req.url)
        if parts.path == self.authorize_path and req.method in ("GET", "HEAD"):
            return self._authorize(dict(parse_qsl(parts.query)), self.user)
        if parts.path == self.token_path and req.method == "POST":
            return self._token(req)
        if parts.path == self.user_path and req.method in ("GET", "HEAD"):
            return self._user(req)
        if parts.path in (self.user_path + "/orgs", self.user_path + "/teams"):
            return self._memberships(req, teams=parts.path.endswith("/teams"))
        if parts.path in (self.authorize_path, self.token_path, self.user_path):
            return _text(405, "Method Not Allowed")
        return self.other(req)

    def other(self, req: HttpRequest) -> HttpResponse:
        """A request to none of the three endpoints: 404 (a subclass may serve more)."""
        return _text(404, "Not Found")

    # -- the endpoints ----------------------------------------------------------------------------

    def _authorize(
        self, q: dict[str, str], user: UpstreamUser, *, deny: bool = False
    ) -> HttpResponse:
        with self._lock:
            self.authorize_requests += 1
        client_ok = self.client_id is None or q.get("client_id") == self.client_id
        if not client_ok or q.get("redirect_uri") != self.redirect_uri:
            return _text(400, "unknown client or redirect_uri\n")
        back = {"state": q.get("state", "")}
        if self.issuer is not None:
            back["iss"] = self.issuer
        if deny:
            return _redirect(self.redirect_uri, {"error": "access_denied", **back})
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _redirect(self.redirect_uri, {"error": "invalid_request", **back})
        code = secrets.token_urlsafe(20)
        with self._lock:
            self.codes[code] = _Code(
                challenge=q["code_challenge"],
                scope=q.get("scope", ""),
                user=user,
                expires=self.clock() + self.code_lifetime,
            )
        return _redirect(self.redirect_uri, {"code": code, **back})

    def _token(self, req: HttpRequest) -> HttpResponse:
        form = dict(parse_qsl(req.body.decode("utf-8", errors="replace")))
        wants_json = "application/json" in _header(req, "accept")
        client_ok = self.client_id is None or form.get("client_id") == self.client_id
        if not client_ok or not hmac.compare_digest(
            form.get("client_secret", "").encode(), self.client_secret.encode()
        ):
            return _answer({"error": "incorrect_client_credentials"}, wants_json)
        if form.get("grant_type") == "refresh_token":
            with self._lock:
                used = self.refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotates
            if used is None:
                return _answer({"error": "bad_refresh_token"}, wants_json)
            return self._issue(used.scope, used.user, wants_json)
        with self._lock:
            entry = self.codes.pop(form.get("code", ""), None)  # single use, even when refused
        if entry is None or entry.expires < self.clock():
            return _answer({"error": "bad_verification_code"}, wants_json)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        if not hmac.compare_digest(digest, entry.challenge.encode()):
            return _answer({"error": "bad_verification_code"}, wants_json)
        return self._issue(entry.scope, entry.user, wants_json)

    def _issue(self, scope: str, user: UpstreamUser, wants_json: bool) -> HttpResponse:
        token = "gho_" + secrets.token_urlsafe(24)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "bearer",
            "scope": scope.replace(" ", ","),
        }
        with self._lock:
            self.tokens[token] = _Token(scope=scope, user=user)
            if self.issue_refresh:
                refresh = "ghr_" + secrets.token_urlsafe(24)
                self.refresh_tokens[refresh] = _Token(scope=scope, user=user)
                body.update(refresh_token=refresh, expires_in=28800)
        return _answer(body, wants_json)

    def _memberships(self, req: HttpRequest, *, teams: bool) -> HttpResponse:
        scheme, _, token = _header(req, "authorization").partition(" ")
        info = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if info is None:
            return _json(401, {"message": "Bad credentials"})
        if teams:
            pairs = [team.split("/", 1) for team in info.user.teams]
            listed = [{"slug": slug, "organization": {"login": org}} for org, slug in pairs]
            return _json(200, listed)
        return _json(200, [{"login": org, "id": n} for n, org in enumerate(info.user.orgs)])

    # -- what happens at the provider meanwhile -----------------------------------------------------

    def change_user(self, user: UpstreamUser) -> None:
        """The provider's record of ``user.id`` becomes ``user`` (a membership changed): every
        token of theirs answers for the new record."""
        with self._lock:
            for table in (self.tokens, self.refresh_tokens):
                for token, info in list(table.items()):
                    if info.user.id == user.id:
                        table[token] = _Token(scope=info.scope, user=user)

    def withdraw(self, user_id: int) -> None:
        """The user (or an administrator) revoked the app: every token of the user stops working."""
        with self._lock:
            for table in (self.tokens, self.refresh_tokens):
                for token in [t for t, info in table.items() if info.user.id == user_id]:
                    del table[token]

    def _user(self, req: HttpRequest) -> HttpResponse:
        scheme, _, token = _header(req, "authorization").partition(" ")
        info = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if info is None:
            return _json(401, {"message": "Bad credentials"})
        scopes = (("X-OAuth-Scopes", info.scope.replace(" ", ", ")),)
        return _json(200, info.user.as_json(), scopes)


def upstream_toml(
    base: str,
    *,
    client_id: str = "proxy-client",
    client_secret: str = "provider-secret-" + "s" * 24,
    scopes: tuple[str, ...] = ("read:user",),
    paths: tuple[str, str, str] = FakeProvider.GITHUB_PATHS,
) -> str:
    """The ``[upstream]`` table of a ``proxy.toml`` for a ``FakeProvider`` served at ``base``.

    A generic OAuth 2.0 provider (``provider = "oauth2"``) whose subject is the numeric ``id`` of
    its user endpoint, over plain HTTP on loopback (``allow_insecure_http``, which a real
    deployment never sets). Values are written as TOML basic strings (JSON's escapes are TOML's).
    """
    authorize, token, user = (base.rstrip("/") + path for path in paths)
    return (
        "[upstream]\n"
        'provider = "oauth2"\n'
        f"client_id = {json.dumps(client_id)}\n"
        f"client_secret = {json.dumps(client_secret)}\n"
        f"authorize_url = {json.dumps(authorize)}\n"
        f"token_url = {json.dumps(token)}\n"
        f"userinfo_url = {json.dumps(user)}\n"
        'userinfo_subject_field = "id"\n'
        f"scopes = {json.dumps(list(scopes))}\n"
        "allow_insecure_http = true\n"
    )


class _ProviderApp:
    """``FakeProvider.handle`` behind the ASGI interface (an object whose ``__call__`` is a
    coroutine function, which is how servers recognise ASGI 3)."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.provider.base + scope["path"] + ("?" + query if query else "")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        req = HttpRequest(method=scope["method"], url=url, headers=headers, body=bytes(body))
        resp = self.provider.handle(req)
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers]
        raw.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": raw})
        body_out = b"" if scope["method"] == "HEAD" else resp.body
        await send({"type": "http.response.body", "body": body_out})


def _header(req: HttpRequest, name: str) -> str:
    return next((v for k, v in req.headers if k.lower() == name), "")


def _redirect(uri: str, params: dict[str, str]) -> HttpResponse:
    return HttpResponse(status=302, headers=(("Location", uri + "?" + urlencode(params)),))


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(
        status=status,
        headers=(("Content-Type", "text/plain; charset=utf-8"),),
        body=text.encode(),
    )


def _json(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(
        status=status,
        headers=(("Content-Type", "application/json"), *headers),
        body=json.dumps(body).encode(),
    )


def _answer(body: dict[str, Any], wants_json: bool) -> HttpResponse:
    # GitHub answers 200 even for errors, form-encoded unless JSON was asked for.
    if wants_json:
        return _json(200, body)
    return HttpResponse(
        status=200,
        headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        body=urlencode(body).encode(),
    )
