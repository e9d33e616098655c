"""Test harness: the core driven through the real drivers, a scripted upstream provider, a browser
with a cookie jar, a controllable clock and a seeded random source.

The scripted upstream plays a GitHub-shaped OAuth provider: it checks the proxy's PKCE, client secret
and redirect URI at its token endpoint exactly like a real one would, so a wrong verifier or a code
from another transaction fails there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random as _random
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import attrs

from oauthproxy_adapters.driver import SyncFetch, refuse_fetch, run, run_async
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_core import (
    AuthorizationServer,
    FetchDocument,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    ProxyConfig,
    Request,
    Response,
    UpstreamProfile,
)
from oauthproxy_core.bounds import Bounds
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.handlers.bearer import Challenge, Principal

ISSUER = "https://proxy.example"
UPSTREAM = "https://idp.example"
UPSTREAM_SECRET = "upstream-client-secret-value"
_KEYS = new_keyring()


def keys() -> Any:
    return _KEYS


def make_profile(**overrides: Any) -> UpstreamProfile:
    fields: dict[str, Any] = {
        "name": "idp",
        "authorize_url": UPSTREAM + "/authorize",
        "token_url": UPSTREAM + "/token",
        "userinfo_url": UPSTREAM + "/user",
        "client_id": "proxy-client",
        "client_secret": UPSTREAM_SECRET,
        "scopes": ("read:user",),
        "subject_field": "id",
        "issuer": UPSTREAM,
    }
    fields.update(overrides)
    return UpstreamProfile(**fields)


#: Generous bounds: tests drive one address hard; tests/rfc/test_bounds.py checks real limits.
GENEROUS = Bounds(
    registrations_per_address=100_000,
    registrations_total=100_000,
    authorizations_per_address=100_000,
    authorizations_per_client=100_000,
    authorizations_total=100_000,
)


def make_config(**overrides: Any) -> ProxyConfig:
    fields: dict[str, Any] = {
        "bounds": GENEROUS,
        "issuer": ISSUER,
        "upstream": make_profile(),
        "scopes_supported": ("mcp", "offline_access"),
        "default_scopes": ("mcp",),
        # Revocations reach access tokens at the next request: the tests of what a revocation
        # ends need no wait. tests/adapters/test_token_cache.py proves the configurable bound.
        "lifetimes": Lifetimes(revocation_staleness=0),
    }
    fields.update(overrides)
    return ProxyConfig(**fields)


class Clock:
    def __init__(self, start: int = 1_800_000_000) -> None:
        self.now = start

    def __call__(self) -> float:
        return float(self.now)

    def advance(self, seconds: int) -> None:
        self.now += seconds


@attrs.define
class UpstreamUser:
    id: int
    login: str
    #: GitHub organization logins and ``org/team-slug`` teams, answered at /user/orgs, /user/teams.
    orgs: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


class ScriptedUpstream:
    """A GitHub-shaped provider: authorize by URL, token and /user over the HttpCall effect."""

    def __init__(self, *, callback_url: str) -> None:
        self.callback_url = callback_url
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, UpstreamUser] = {}
        self.calls: list[HttpRequest] = []
        self.fail_token_with: HttpResponse | HttpFailure | None = None
        #: Answer every API call (not the token endpoint) with this instead, while set.
        self.fail_api_with: HttpResponse | HttpFailure | None = None
        #: Issue a refresh token with each access token (a GitHub App with expiring tokens).
        self.issue_refresh = False
        self.refresh_tokens: dict[str, UpstreamUser] = {}
        self._n = 0

    def login(self, authorize_url: str, user: UpstreamUser, *, deny: bool = False) -> str:
        """The user signs in upstream; returns the callback URL the provider redirects to."""
        q = dict(parse_qsl(urlsplit(authorize_url).query))
        assert q["redirect_uri"] == self.callback_url
        if deny:
            return (
                self.callback_url
                + "?"
                + urlencode({"error": "access_denied", "state": q["state"], "iss": UPSTREAM})
            )
        self._n += 1
        code = f"upcode{self._n}"
        self.codes[code] = {"challenge": q.get("code_challenge"), "user": user, "state": q["state"]}
        return (
            self.callback_url
            + "?"
            + urlencode({"code": code, "state": q["state"], "iss": UPSTREAM})
        )

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        self.calls.append(req)
        url = urlsplit(req.url)
        if url.path == "/token":
            if self.fail_token_with is not None:
                return self.fail_token_with
            form = dict(parse_qsl(req.body.decode()))
            if form.get("client_secret") != UPSTREAM_SECRET:
                return _json(401, {"error": "invalid_client"})
            if form.get("grant_type") == "refresh_token":
                owner = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
                if owner is None:
                    return _json(200, {"error": "bad_refresh_token"})  # GitHub answers 200
                return self._issue(owner)
            entry = self.codes.pop(form.get("code", ""), None)
            if entry is None:
                return _json(200, {"error": "bad_verification_code"})  # GitHub answers 200
            verifier = form.get("code_verifier", "")
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if digest != entry["challenge"]:
                return _json(200, {"error": "bad_verification_code"})
            return self._issue(entry["user"])
        if self.fail_api_with is not None:
            return self.fail_api_with
        auth = dict(req.headers).get("Authorization", "")
        user = self.tokens.get(auth.removeprefix("Bearer "))
        if url.path in ("/user", "/user/orgs", "/user/teams") and user is None:
            return _json(401, {"message": "Bad credentials"})
        if url.path == "/user":
            assert user is not None
            return _json(200, {"id": user.id, "login": user.login, "name": user.login.title()})
        if url.path == "/user/orgs":
            assert user is not None
            return _json(200, [{"login": org, "id": n} for n, org in enumerate(user.orgs)])
        if url.path == "/user/teams":
            assert user is not None
            teams = [t.split("/", 1) for t in user.teams]
            return _json(200, [{"slug": t, "organization": {"login": o}} for o, t in teams])
        return _json(404, {})

    def _issue(self, user: UpstreamUser) -> HttpResponse:
        self._n += 1
        token = f"gho_upstream_token_{self._n}"
        self.tokens[token] = user
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer", "scope": "read:user"}
        if self.issue_refresh:
            refresh = f"ghr_upstream_refresh_{self._n}"
            self.refresh_tokens[refresh] = user
            body.update(refresh_token=refresh, expires_in=28800)
        return _json(200, body)

    def withdraw(self, user_id: int) -> None:
        """The user (or an administrator) revokes the app: every token of theirs stops working."""
        self.tokens = {t: u for t, u in self.tokens.items() if u.id != user_id}
        self.refresh_tokens = {t: u for t, u in self.refresh_tokens.items() if u.id != user_id}


def _json(status: int, body: dict[str, Any] | list[Any]) -> HttpResponse:
    return HttpResponse(
        status=status,
        headers=(("Content-Type", "application/json"),),
        body=json.dumps(body).encode(),
    )


#: What a browser sends with the consent form's POST from the proxy's own page: Fetch Metadata says
#: ``same-origin``, and the page's ``Referrer-Policy: no-referrer`` makes its ``Origin`` ``null``
#: (Fetch standard, "serializing a request origin"). Chromium does exactly this:
#: tests/e2e/test_consent_browser.py records what it sends and compares it with this value.
CONSENT_FORM_HEADERS = (("sec-fetch-site", "same-origin"), ("origin", "null"))


class Browser:
    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def header(self) -> tuple[tuple[str, str], ...]:
        if not self.cookies:
            return ()
        return (("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())),)

    def absorb(self, resp: Response) -> None:
        for value in resp.header_values("set-cookie"):
            name, _, rest = value.partition("=")
            if "max-age=0" in rest.lower().replace(" ", "").split(";"):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";", 1)[0]


class Harness:
    """One proxy, one store, one upstream; synchronous driver unless ``use_async``."""

    def __init__(
        self,
        config: ProxyConfig | None = None,
        *,
        seed: int = 1,
        store: Any = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or make_config()
        self.clock = clock or Clock()
        self.rng = _random.Random(seed)
        self.server = AuthorizationServer(self.config, keys())
        self.store = store if store is not None else MemoryStore(clock=self.clock)
        self.upstream = ScriptedUpstream(callback_url=self.config.callback_url)
        #: Executes ``FetchDocument`` effects; none by default, as in a driver given no fetcher.
        self.fetch: SyncFetch = refuse_fetch

    def random(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # -- raw requests ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        target: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        browser: Browser | None = None,
    ) -> Response:
        req = self.make_request(method, target, headers=headers, body=body, browser=browser)
        resp = run(
            self.server.handle(req, now=self.clock.now, random=self.random),
            self.store,
            self.upstream,
            fetch=self.fetch,
        )
        if browser is not None:
            browser.absorb(resp)
        return resp

    def make_request(
        self,
        method: str,
        target: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        browser: Browser | None = None,
    ) -> Request:
        parts = urlsplit(target)
        hdrs = tuple((k.lower(), v) for k, v in headers) + (browser.header() if browser else ())
        return Request(
            method=method,
            path=parts.path,
            query=parts.query,
            headers=hdrs,
            body=body,
            remote_addr="127.0.0.1",
        )

    def form(
        self,
        path: str,
        data: dict[str, str],
        *,
        headers: tuple[tuple[str, str], ...] = (),
        browser: Browser | None = None,
    ) -> Response:
        """POST a form. A ``browser`` submits it as from the proxy's own page, with the headers a
        browser adds (``CONSENT_FORM_HEADERS``), unless ``headers`` say where it came from."""
        if browser is not None and not {k.lower() for k, _ in headers} & {
            "sec-fetch-site",
            "origin",
        }:
            headers = (*headers, *CONSENT_FORM_HEADERS)
        return self.request(
            "POST",
            path,
            body=urlencode(data).encode(),
            browser=browser,
            headers=(("content-type", "application/x-www-form-urlencoded"), *headers),
        )

    def bearer(self, token: str | None, scopes: tuple[str, ...] = ()) -> Principal | Challenge:
        header = f"Bearer {token}" if token is not None else None
        return run(
            self.server.verify_bearer(
                header, now=self.clock.now, random=self.random, required_scopes=scopes
            ),
            self.store,
        )

    # -- flow steps -----------------------------------------------------------------------------
    def register(self, **meta: Any) -> dict[str, Any]:
        body = {
            "redirect_uris": ["http://127.0.0.1:33418/callback"],
            "client_name": "Test Client",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        }
        body.update(meta)
        resp = self.request(
            "POST",
            "/register",
            body=json.dumps(body).encode(),
            headers=(("content-type", "application/json"),),
        )
        assert resp.status == 201, resp.body
        return json.loads(resp.body)  # type: ignore[no-any-return]

    def authorize_url(self, client: dict[str, Any], verifier: str, **params: str) -> str:
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        q = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "state": "client-state-1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.config.resource,
        }
        q.update(params)
        return "/authorize?" + urlencode({k: v for k, v in q.items() if v is not None})

    def run_to_callback(
        self,
        client: dict[str, Any],
        verifier: str,
        browser: Browser,
        user: UpstreamUser | None = None,
        **params: str,
    ) -> Response:
        """authorize -> consent GET -> consent POST approve -> upstream login -> callback."""
        resp = self.request("GET", self.authorize_url(client, verifier, **params), browser=browser)
        assert resp.status == 302, resp.body
        consent_url = resp.header("location")
        assert consent_url is not None and consent_url.startswith(self.config.issuer + "/consent")
        page = self.request("GET", consent_url.removeprefix(self.config.issuer), browser=browser)
        assert page.status == 200, page.body
        fields = consent_fields(page)
        resp = self.form("/consent", {**fields, "decision": "approve"}, browser=browser)
        assert resp.status == 303, resp.body
        upstream_url = resp.header("location")
        assert upstream_url is not None
        callback = self.upstream.login(upstream_url, user or UpstreamUser(id=42, login="octocat"))
        return self.request("GET", callback.removeprefix(self.config.issuer), browser=browser)

    def token(self, data: dict[str, str], headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return self.form("/token", data, headers=headers)

    def full_code(
        self, client: dict[str, Any], verifier: str, browser: Browser | None = None
    ) -> str:
        resp = self.run_to_callback(client, verifier, browser or Browser())
        assert resp.status == 302, resp.body
        return redirect_params(resp)["code"]


def consent_fields(page: Response) -> dict[str, str]:
    html = page.body.decode()
    out = {}
    for name in ("txn", "csrf"):
        marker = f'name="{name}" value="'
        start = html.index(marker) + len(marker)
        out[name] = html[start : html.index('"', start)]
    return out


def redirect_params(resp: Response) -> dict[str, str]:
    loc = resp.header("location")
    assert loc is not None
    q = parse_qs(urlsplit(loc).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in q.values()), f"repeated parameter in {loc}"
    return {k: v[0] for k, v in q.items()}


VERIFIER = "v" * 43 + "-verifier-of-the-client-0123456789"


class AsyncHarness(Harness):
    """The same harness through the asyncio driver and the async memory store."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.astore = AsyncMemoryStore(clock=self.clock)
        self.loop_runner: Callable[[Any], Any] | None = None

    async def arequest(
        self,
        method: str,
        target: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        browser: Browser | None = None,
    ) -> Response:
        req = self.make_request(method, target, headers=headers, body=body, browser=browser)

        async def http(r: HttpRequest) -> HttpResponse | HttpFailure:
            return self.upstream(r)

        async def fetch(d: FetchDocument) -> HttpResponse | HttpFailure:
            return self.fetch(d)

        resp = await run_async(
            self.server.handle(req, now=self.clock.now, random=self.random),
            self.astore,
            http,
            fetch=fetch,
        )
        if browser is not None:
            browser.absorb(resp)
        return resp
