"""spec/security.md 29 (and the "never a 5xx" half of 28): any input at any endpoint produces a response or
a typed OAuth error, never an unhandled exception.

Hypothesis throws arbitrary request sequences (any method, every routed path and random ones, random
query strings, bodies of arbitrary bytes or of well-formed forms and JSON built from values that mean
something to this server, random content types, cookies and authorization headers, clock jumps) at
``AuthorizationServer.handle`` through the real sync driver and a real ``MemoryStore``, against a
server with registered clients, a transaction waiting at consent, one waiting for the upstream
callback, an unredeemed code and live tokens. Each response must be a ``Response`` with a status below
500; on the JSON endpoints (everything but the browser pages) an error status carries a JSON body with
an ``error`` string.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run
from oauthproxy_core import Request, Response
from oauthproxy_core.browser_binding import binding_cookie
from oauthproxy_core.config import DeviceGrant
from tests.harness import (
    ISSUER,
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
    make_config,
    redirect_params,
)

METHODS = ("GET", "POST", "PUT", "OPTIONS", "DELETE")
PARAM_NAMES = (
    "response_type",
    "client_id",
    "client_secret",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
    "prompt",
    "request_uri",
    "txn",
    "csrf",
    "decision",
    "code",
    "iss",
    "error",
    "grant_type",
    "code_verifier",
    "refresh_token",
    "token",
    "token_type_hint",
    "user_code",
    "device_code",
)
CONTENT_TYPES = (
    None,
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/json",
    "application/json; charset=latin-1",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
)


@attrs.frozen
class World:
    h: Harness
    browser_routes: frozenset[str]
    pool: tuple[str, ...]
    cookies: tuple[str, ...]
    #: (method, path, params, cookie): valid requests for the live records, mutated by the fuzzer.
    templates: tuple[tuple[str, str, tuple[tuple[str, str], ...], str | None], ...]


def _world() -> World:
    """A proxy in the middle of things: every kind of record exists in the store."""
    # The device grant on, so that its endpoints are fuzzed too (they answer 404 while it is off).
    h = Harness(make_config(device=DeviceGrant(enabled=True)))
    public = h.register()
    confidential = h.register(token_endpoint_auth_method="client_secret_post")
    basic = h.register(token_endpoint_auth_method="client_secret_basic")

    # A transaction waiting at the consent page.
    at_consent = Browser()
    resp = h.request("GET", h.authorize_url(public, VERIFIER), browser=at_consent)
    consent_url = (resp.header("location") or "").removeprefix(ISSUER)
    fields = consent_fields(h.request("GET", consent_url, browser=at_consent))

    # A transaction waiting for the upstream callback.
    pending = Browser()
    resp = h.request("GET", h.authorize_url(confidential, VERIFIER), browser=pending)
    page = h.request("GET", (resp.header("location") or "").removeprefix(ISSUER), browser=pending)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=pending)
    callback = h.upstream.login(resp.header("location") or "", UpstreamUser(id=9, login="fuzz"))
    cb_params = dict(parse_qsl(urlsplit(callback).query))

    # An unredeemed code, and live tokens from another flow.
    code = h.full_code(public, VERIFIER)
    done = h.run_to_callback(public, VERIFIER, Browser())
    tokens = json.loads(
        h.token(
            {
                "grant_type": "authorization_code",
                "code": redirect_params(done)["code"],
                "client_id": public["client_id"],
                "code_verifier": VERIFIER,
                "redirect_uri": public["redirect_uris"][0],
            }
        ).body
    )
    pool = (
        public["client_id"],
        confidential["client_id"],
        confidential["client_secret"],
        basic["client_id"],
        basic["client_secret"],
        public["redirect_uris"][0],
        "http://127.0.0.1:40000/callback",
        h.config.resource,
        "https://evil.example/mcp",
        consent_url.split("txn=", 1)[1],
        fields["csrf"],
        cb_params["state"],
        cb_params["code"],
        cb_params["iss"],
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        next(iter(h.upstream.tokens)),
        VERIFIER,
        "S256",
        "plain",
        "code",
        "authorization_code",
        "refresh_token",
        "approve",
        "deny",
        "mcp",
        "mcp offline_access",
        "access_denied",
    )
    cookies = (
        *("; ".join(f"{k}={v}" for k, v in b.cookies.items()) for b in (at_consent, pending)),
        # A binding cookie of the right name holding another secret of this flow.
        f"__Host-{binding_cookie(cb_params['state'])}={cb_params['state']}",
    )
    routes = frozenset(
        p
        for p in h.server.paths
        if p.endswith(("/authorize", "/consent", "/auth/callback", "/device"))
    )
    authorize = tuple(parse_qsl(urlsplit(h.authorize_url(public, VERIFIER)).query))
    templates = (
        ("GET", "/authorize", authorize, cookies[0]),
        ("POST", "/authorize", authorize, None),
        ("GET", "/consent", (("txn", pool[9]),), cookies[0]),
        (
            "POST",
            "/consent",
            (("txn", pool[9]), ("csrf", fields["csrf"]), ("decision", "approve")),
            cookies[0],
        ),
        (
            "POST",
            "/consent",
            (("txn", pool[9]), ("csrf", fields["csrf"]), ("decision", "deny")),
            cookies[0],
        ),
        ("GET", "/auth/callback", tuple(cb_params.items()), cookies[1]),
        (
            "POST",
            "/token",
            (
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", public["client_id"]),
                ("redirect_uri", public["redirect_uris"][0]),
                ("code_verifier", VERIFIER),
                ("resource", h.config.resource),
            ),
            None,
        ),
        (
            "POST",
            "/token",
            (
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"]),
                ("client_id", public["client_id"]),
            ),
            None,
        ),
        (
            "POST",
            "/revoke",
            (("token", tokens["access_token"]), ("client_id", public["client_id"])),
            None,
        ),
    )
    return World(h=h, browser_routes=routes, pool=pool, cookies=cookies, templates=templates)


def _basic(cid: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()


def _methods_for(path: str) -> tuple[str, ...]:
    if path.endswith(("/register", "/token", "/revoke")):
        return ("POST",)
    if path.endswith(("/authorize", "/consent")):
        return ("GET", "POST")
    return ("GET",)


@st.composite
def requests(draw: st.DrawFn, world: World) -> Request:
    values = st.one_of(st.sampled_from(world.pool), st.text(max_size=40))
    names = st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=12))
    params = st.lists(st.tuples(names, values), max_size=8)
    # Mostly distinct names with meaningful values: requests that get past parsing.
    good_params = st.dictionaries(
        st.sampled_from(PARAM_NAMES), st.sampled_from(world.pool), min_size=1, max_size=8
    ).map(lambda d: list(d.items()))
    routes = sorted(world.h.server.paths)

    mode = draw(st.integers(min_value=0, max_value=5), label="mode")
    cookie: str | None = None
    if mode >= 3:
        # A valid request for a live record, then mutated: drop, replace or add parameters.
        method, path, base, cookie = draw(st.sampled_from(world.templates))
        pairs = [
            (k, draw(values) if draw(st.integers(0, 9)) == 0 else v)
            for k, v in base
            if draw(st.integers(0, 11)) > 0
        ]
        if draw(st.integers(0, 3)) == 0:
            pairs += draw(st.lists(st.tuples(names, values), min_size=1, max_size=2))
        query, body, ctype = "", b"", None
        if method == "GET":
            query = urlencode(pairs)
        else:
            body, ctype = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
        if not draw(st.integers(0, 3)):
            cookie = None
    elif mode > 0:
        # A plausible request for a routed endpoint, with its own method and content type.
        path = draw(st.sampled_from(routes))
        method = draw(st.sampled_from(_methods_for(path)))
        pairs = draw(st.one_of(good_params, params))
        query, body, ctype = "", b"", None
        if method == "GET":
            query = urlencode(pairs)
        elif path.endswith("/register"):
            meta = draw(
                st.fixed_dictionaries(
                    {
                        "redirect_uris": st.lists(
                            st.one_of(
                                st.sampled_from(
                                    [
                                        "http://127.0.0.1:1234/cb",
                                        "https://app.example/cb",
                                        "com.example.app:/cb",
                                        "javascript:alert(1)",
                                    ]
                                ),
                                values,
                            ),
                            max_size=3,
                        )
                    },
                    optional={
                        "token_endpoint_auth_method": st.sampled_from(
                            ["none", "client_secret_post", "client_secret_basic", "x"]
                        ),
                        "grant_types": st.lists(
                            st.sampled_from(["authorization_code", "refresh_token", "implicit"]),
                            max_size=3,
                        ),
                        "client_name": st.text(max_size=30),
                        "scope": values,
                        "application_type": st.sampled_from(["web", "native", "x"]),
                    },
                )
            )
            body, ctype = json.dumps(meta).encode(), "application/json"
        else:
            body, ctype = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    else:
        method = draw(st.sampled_from(METHODS))
        path = draw(
            st.one_of(
                st.sampled_from(routes),
                st.sampled_from(routes).map(lambda p: p + "/"),
                st.text(max_size=30).map(lambda t: "/" + t),
                st.text(max_size=30),
            )
        )
        query = draw(
            st.one_of(
                st.just(""),
                params.map(urlencode),
                st.text(max_size=80),
                st.sampled_from(["a=1&a=2", "%ZZ", "%ff%fe", "&&&", "=", "a" * 5000, "x&" * 100]),
            )
        )
        ctype = draw(st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=30)))
        body = draw(
            st.one_of(
                st.just(b""),
                st.binary(max_size=300),
                params.map(lambda p: urlencode(p).encode()),
                st.dictionaries(
                    names, st.one_of(values, st.lists(values, max_size=3)), max_size=6
                ).map(lambda d: json.dumps(d).encode()),
                st.sampled_from(
                    [b"[" * 50_000, b"{" * 20, b"x" * 70_000, b"\x00" * 10, b"null", b'"s"']
                ),
            )
        )

    headers: list[tuple[str, str]] = []
    if ctype is not None:
        headers.append(("content-type", ctype))
    if cookie is not None:
        headers.append(("cookie", cookie))
    elif draw(st.booleans()):
        headers.append(
            (
                "cookie",
                draw(
                    st.one_of(
                        st.sampled_from(world.cookies),
                        st.text(max_size=60),
                        st.tuples(
                            st.sampled_from(
                                ["__Host-oauthproxy_browser", "__Host-oauthproxy_csrf"]
                            ),
                            values,
                        ).map(lambda kv: f"{kv[0]}={kv[1]}"),
                    )
                ),
            )
        )
    if draw(st.booleans()):
        headers.append(
            (
                "authorization",
                draw(
                    st.one_of(
                        values.map(lambda v: "Bearer " + v),
                        st.tuples(values, values).map(lambda t: _basic(*t)),
                        st.text(max_size=60).map(lambda v: "Basic " + v),
                        st.text(max_size=60),
                    )
                ),
            )
        )
    extra = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(["sec-fetch-site", "origin", "accept", "mcp-protocol-version"]),
                    st.text(max_size=15).map(str.lower),
                ),
                st.one_of(
                    st.sampled_from(["none", "same-origin", "cross-site"]), st.text(max_size=40)
                ),
            ),
            max_size=3,
        )
    )
    headers.extend(extra)
    return Request(
        method=method,
        path=path,
        query=query,
        headers=tuple(headers),
        body=body,
        remote_addr="127.0.0.1",
    )


def _check(world: World, req: Request, resp: Any) -> None:
    assert isinstance(resp, Response), resp
    assert 200 <= resp.status < 500, (req, resp.status, resp.body[:300])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in resp.headers)
    for _k, v in resp.headers:
        assert "\r" not in v and "\n" not in v, (req, resp.headers)
    if resp.status < 400:
        return
    json_endpoint = req.path not in world.browser_routes or resp.status == 405
    if json_endpoint:
        assert resp.header("content-type") == "application/json", (req, resp.headers)
        body = json.loads(resp.body)
        assert isinstance(body, dict)
        assert isinstance(body.get("error"), str) and body["error"], body
    else:
        assert (resp.header("content-type") or "").startswith("text/html")
        assert resp.header("location") is None


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_invariant_29_any_request_gets_a_response_never_an_exception(data: st.DataObject) -> None:
    world = _world()
    h = world.h
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="n_requests")):
        h.clock.advance(data.draw(st.sampled_from([0, 0, 0, 1, 31, 121, 601, 3631]), label="dt"))
        req = data.draw(requests(world), label="request")
        resp = run(h.server.handle(req, now=h.clock.now, random=h.random), h.store, h.upstream)
        _check(world, req, resp)
