"""Test harness: the core driven through the real drivers, a scripted upstream provider, a browser
with a cookie jar, a controllable clock and a seeded random source.

The flow steps and the upstream provider are the testing kit's (``oauthproxy_adapters.testing``):
``Harness.sender`` turns the kit's client steps into requests to the core, and ``ScriptedUpstream``
is the kit's ``FakeProvider`` at ``UPSTREAM``, which checks the proxy's PKCE, client secret and
redirect URI like a real provider, so a wrong verifier or a code from another transaction fails there.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from oauthproxy_adapters.driver import SyncFetch, refuse_fetch, run, run_async
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.stores.memory import AsyncMemoryStore, MemoryStore
from oauthproxy_adapters.testing import flow
from oauthproxy_adapters.testing.flow import CONSENT_FORM_HEADERS, VERIFIER, Call, Reply, drive
from oauthproxy_adapters.testing.provider import FakeProvider, UpstreamUser
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

#: Re-exported for the tests that import them from here.
__all__ = ["CONSENT_FORM_HEADERS", "VERIFIER", "UpstreamUser"]

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


class ScriptedUpstream(FakeProvider):
    """The kit's provider at ``UPSTREAM`` with the endpoints of ``make_profile`` (``/authorize``,
    ``/token``, ``/user``), sending RFC 9207 ``iss``, accepting any client id (the secret is still
    checked), and failing its token endpoint with ``fail_token_with`` when a test sets it."""

    def __init__(self, *, callback_url: str) -> None:
        super().__init__(
            redirect_uri=callback_url,
            base=UPSTREAM,
            client_id=None,
            client_secret=UPSTREAM_SECRET,
            user=UpstreamUser(id=42, login="octocat"),
            paths=("/authorize", "/token", "/user"),
            issuer=UPSTREAM,
        )
        self.callback_url = callback_url
        self.fail_token_with: HttpResponse | HttpFailure | None = None
        #: Answer every API call (``/user``, ``/user/orgs``, ...) with this instead, while set.
        self.fail_api_with: HttpResponse | HttpFailure | None = None

    def __call__(self, req: HttpRequest) -> HttpResponse | HttpFailure:
        path = urlsplit(req.url).path
        if self.fail_token_with is not None and path == self.token_path:
            self.calls.append(req)
            return self.fail_token_with
        if self.fail_api_with is not None and path.startswith(self.user_path):
            self.calls.append(req)
            return self.fail_api_with
        return super().__call__(req)


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
            fetch=self.fetch,
        )

    # -- flow steps: the kit's client steps (oauthproxy_adapters.testing.flow), through the core ------
    def sender(self, browser: Browser | None = None) -> Callable[[Call], Reply]:
        """A ``send`` for the kit's ``drive``: each call becomes a request to the core, with
        ``browser``'s cookies; only the URL's path and query are kept (the issuer is implied)."""

        def send(call: Call) -> Reply:
            parts = urlsplit(call.url)
            target = parts.path + ("?" + parts.query if parts.query else "")
            resp = self.request(
                call.method, target, headers=call.headers, body=call.body, browser=browser
            )
            return Reply(resp.status, tuple((k.lower(), v) for k, v in resp.headers), resp.body)

        return send

    def register(self, **meta: Any) -> dict[str, Any]:
        return drive(flow.register(self.config.issuer, meta), self.sender())

    def authorize_url(self, client: dict[str, Any], verifier: str, **params: str) -> str:
        params = {"resource": self.config.resource, **params}
        url = flow.authorization_url(self.config.issuer, client, verifier=verifier, **params)
        return url.removeprefix(self.config.issuer_origin)

    def run_to_callback(
        self,
        client: dict[str, Any],
        verifier: str,
        browser: Browser,
        user: UpstreamUser | None = None,
        **params: str,
    ) -> Response:
        """authorize -> consent GET -> consent POST approve -> upstream login -> callback."""
        params = {"resource": self.config.resource, **params}
        steps = flow.to_callback(
            self.config.issuer,
            client,
            upstream=self.upstream,
            user=user or UpstreamUser(id=42, login="octocat"),
            verifier=verifier,
            **params,
        )
        callback = drive(steps, self.sender(browser))
        return self.request(
            "GET", callback.removeprefix(self.config.issuer_origin), browser=browser
        )

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
