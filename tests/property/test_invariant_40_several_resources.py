"""spec/security.md 40 as Hypothesis properties: several protected resources under one issuer.

- A token is accepted by exactly one resource, the one it was issued for, however many resources
  there are and in whatever order their bearer checks see it: through the core's check and through
  the adapters' ``Proxy``, whose verified-token cache must not carry a token from one resource's
  check to another's. Every refusal is a 401 with the refusing resource's own metadata URL.
- An upstream session stands in for the provider only for the browser that holds its cookie, only
  within ``[lifetimes] upstream_session`` of the sign-in, and never after the user's grant was
  revoked by an operator; every other case goes to the provider. Where it is used, the code it
  yields is for the resource asked for, for the same user, and the resource's consent was shown.
- Remembered consent covers one resource: remembering an approval for one never skips another's
  consent page.

Driven through the core's real sync driver (``tests.harness``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.proxy import Proxy
from oauthproxy_adapters.testing.flow import VERIFIER, drive, exchange_code
from oauthproxy_core import grants
from oauthproxy_core.config import Lifetimes
from oauthproxy_core.crypto import digest, unseal
from oauthproxy_core.handlers.bearer import Challenge, Principal, resource_metadata_url
from oauthproxy_core.resource_servers import ResourceServer
from oauthproxy_core.routes import RouteTable
from oauthproxy_core.states import GrantEvent
from oauthproxy_core.upstream_session import SESSION_KIND
from tests.harness import (
    UPSTREAM,
    Browser,
    Clock,
    Harness,
    consent_fields,
    keys,
    make_config,
    redirect_params,
)

ISSUERS = ("https://proxy.example", "http://127.0.0.1:8080")
#: The first path segments of the authorization server's own endpoints: a resource there is
#: refused by the configuration (routes.RouteTable), so the properties draw other names.
ENDPOINT_SEGMENTS = frozenset(
    path.split("/")[1] for path in RouteTable(make_config(issuer=ISSUERS[0])).paths
) | frozenset(prefix.split("/")[1] for prefix, _ in RouteTable(make_config()).prefixes)
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(
    lambda name: name not in ENDPOINT_SEGMENTS
)
PATHS = st.lists(SEGMENT, min_size=2, max_size=4, unique=True).map(
    lambda names: tuple("/" + n for n in names)
)


def config_for(
    issuer: str, paths: tuple[str, ...], *, consent_mode: str = "always", **lifetimes: int
) -> Any:
    resources = [ResourceServer(path=p, name=f"server {p}", scopes=("mcp",)) for p in paths]
    return make_config(
        issuer=issuer,
        resources=resources,
        consent_mode=consent_mode,
        lifetimes=Lifetimes(revocation_staleness=0, **lifetimes),
    )


def _aud(token: str) -> Any:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["aud"]


def sign_in(h: Harness, browser: Browser, resource: str) -> dict[str, Any]:
    """A new client's whole flow for ``resource`` in ``browser``, through the provider; the tokens."""
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, browser, resource=resource)
    assert resp.status == 302, resp.body
    code = redirect_params(resp)["code"]
    return _redeem(h, client, code, resource)


def _redeem(h: Harness, client: dict[str, Any], code: str, resource: str) -> dict[str, Any]:
    steps = exchange_code(h.config.issuer, client, code, verifier=VERIFIER, resource=resource)
    return drive(steps, h.sender())


@settings(max_examples=40, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    paths=PATHS,
    data=st.data(),
)
def test_invariant_40_a_token_is_accepted_by_its_own_resource_only(
    issuer: str, paths: tuple[str, ...], data: st.DataObject
) -> None:
    h = Harness(config_for(issuer, paths))
    urls = h.config.resource_urls
    mine = data.draw(st.sampled_from(urls), label="issued for")
    token = sign_in(h, Browser(), mine)["access_token"]
    assert _aud(token) == mine
    # The adapters' proxy with its verified-token cache, on the same store and clock.
    proxy = Proxy(h.config, keys(), h.store, h.upstream, clock=h.clock)
    order = data.draw(st.lists(st.sampled_from(urls), min_size=1, max_size=8), label="checks")
    for url in order:
        for verdict in (
            proxy.verify(f"Bearer {token}", (), url),
            run(
                h.server.verify_bearer(
                    f"Bearer {token}", now=h.clock.now, random=h.random, resource=url
                ),
                h.store,
            ),
        ):
            if url == mine:
                assert isinstance(verdict, Principal) and verdict.resource == mine
            else:
                assert isinstance(verdict, Challenge) and verdict.status == 401, verdict
                expected = f'resource_metadata="{resource_metadata_url(url)}"'
                assert expected in verdict.www_authenticate
                assert 'error="invalid_token"' in verdict.www_authenticate


WHO = st.sampled_from(["same_browser", "other_browser", "planted_cookie", "after_revocation"])


@settings(max_examples=60, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    paths=PATHS,
    lifetime=st.integers(min_value=60, max_value=7200),
    fraction=st.floats(min_value=0, max_value=2),
    who=WHO,
)
def test_invariant_40_an_upstream_session_serves_only_its_browser_within_its_lifetime(
    issuer: str, paths: tuple[str, ...], lifetime: int, fraction: float, who: str
) -> None:
    clock = Clock()
    h = Harness(config_for(issuer, paths, upstream_session=lifetime), clock=clock)
    first, second = h.config.resource_urls[:2]
    browser = Browser()
    tokens = sign_in(h, browser, first)
    # Whose token it is, read now: the session may outlive the access token (an hour by default).
    principal = h.bearer(tokens["access_token"])
    assert isinstance(principal, Principal)
    assert h.upstream.authorize_requests == 1
    elapsed = int(lifetime * fraction)
    clock.advance(elapsed)
    if who == "after_revocation":
        grant_id = grants.split_refresh_token(tokens["refresh_token"])
        assert grant_id is not None
        ctx = h.server.context(now=clock.now, random=h.random)
        run(grants.revoke_grant(ctx, grant_id[0], GrantEvent.operator_revoked), h.store)
    session_cookie = next(name for name in browser.cookies if name.endswith("oauthproxy_session"))
    other = Browser()
    if who == "same_browser" or who == "after_revocation":
        other = browser
    elif who == "planted_cookie":
        # A value of the right shape that no sign-in minted.
        other.cookies[session_cookie] = "A" * 43
    client = h.register()
    url = h.authorize_url(client, VERIFIER, resource=second)
    resp = h.request("GET", url, browser=other)
    consent = (resp.header("location") or "").removeprefix(h.config.issuer_origin)
    assert "/consent?txn=" in consent
    page = h.request("GET", consent, browser=other)
    assert page.status == 200 and f"server {paths[1]}".encode() in page.body
    decided = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=other)
    assert decided.status == 303, decided.body
    location = decided.header("location") or ""
    reused = who == "same_browser" and elapsed < lifetime
    if not reused:
        assert location.startswith(UPSTREAM + "/authorize"), (who, elapsed, lifetime, location)
        return
    assert location.startswith(client["redirect_uris"][0] + "?"), location
    assert h.upstream.authorize_requests == 1
    code = redirect_params(decided)["code"]
    second_tokens = _redeem(h, client, code, second)
    assert _aud(second_tokens["access_token"]) == second
    verdict = run(
        h.server.verify_bearer(
            "Bearer " + second_tokens["access_token"],
            now=clock.now,
            random=h.random,
            resource=second,
        ),
        h.store,
    )
    assert isinstance(verdict, Principal) and verdict.subject == principal.subject


@settings(max_examples=20, deadline=None)
@given(issuer=st.sampled_from(ISSUERS), paths=PATHS)
def test_invariant_40_remembered_consent_covers_one_resource(
    issuer: str, paths: tuple[str, ...]
) -> None:
    # Sessions off: the second authorization of the first resource then shows where it goes.
    h = Harness(config_for(issuer, paths, consent_mode="remember", upstream_session=0))
    first, second = h.config.resource_urls[:2]
    browser = Browser()
    client = h.register()
    sign_in_resp = h.run_to_callback(client, VERIFIER, browser, resource=first)
    assert sign_in_resp.status == 302
    navigation = (("sec-fetch-site", "none"),)
    again = h.request(
        "GET",
        h.authorize_url(client, VERIFIER, resource=first),
        headers=navigation,
        browser=browser,
    )
    # The same request again is remembered: straight to the provider, no consent page.
    assert (again.header("location") or "").startswith(UPSTREAM), again.headers
    elsewhere = h.request(
        "GET",
        h.authorize_url(client, VERIFIER, resource=second),
        headers=navigation,
        browser=browser,
    )
    assert "/consent?txn=" in (elsewhere.header("location") or ""), elsewhere.headers


def test_invariant_40_a_session_is_stored_hashed_and_sealed() -> None:
    h = Harness(config_for("https://proxy.example", ("/a", "/b")))
    browser = Browser()
    sign_in(h, browser, h.config.resource_urls[0])
    secret = next(v for k, v in browser.cookies.items() if k.endswith("oauthproxy_session"))
    stored = [(key, value) for kind, key, value in h.store.dump() if kind == SESSION_KIND]
    assert len(stored) == 1
    key, value = stored[0]
    # The key is the secret's hash; the value is sealed: no secret, identity or provider token.
    assert key == digest(secret)
    for plain in (secret, "octocat", "access_token"):
        assert plain.encode() not in value, plain
    assert unseal(keys(), value.decode(), "usession|" + key)


def test_invariant_40_a_session_gives_nothing_to_a_client_deleted_while_consent_was_open() -> None:
    """RFC 7592 §2.3 on the session's path as at the callback: the client is looked up again."""
    h = Harness(config_for("https://proxy.example", ("/a", "/b")))
    browser = Browser()
    sign_in(h, browser, h.config.resource_urls[0])
    client = h.register()
    url = h.authorize_url(client, VERIFIER, resource=h.config.resource_urls[1])
    consent = (h.request("GET", url, browser=browser).header("location") or "").removeprefix(
        h.config.issuer_origin
    )
    page = h.request("GET", consent, browser=browser)
    management = client["registration_client_uri"].removeprefix(h.config.issuer_origin)
    token = client["registration_access_token"]
    deleted = h.request("DELETE", management, headers=(("authorization", f"Bearer {token}"),))
    assert deleted.status == 204, deleted.body
    decided = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert decided.status == 400 and b"no longer registered" in decided.body, decided.body
    assert not (decided.header("location") or "")
    assert h.upstream.authorize_requests == 1


COOKIE_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=", max_size=80
)


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(COOKIE_TEXT, st.sampled_from(["flip", "prefix", "suffix", "case"])))
def test_invariant_40_any_session_cookie_but_the_minted_one_goes_to_the_provider(
    value: str,
) -> None:
    """Whatever another browser sends as the session cookie (made up, or the real one altered),
    its approval goes to the provider; nothing is a 5xx."""
    h = Harness(config_for("https://proxy.example", ("/a", "/b")))
    owner = Browser()
    sign_in(h, owner, h.config.resource_urls[0])
    name, real = next((k, v) for k, v in owner.cookies.items() if k.endswith("oauthproxy_session"))
    forged = {
        "flip": real[:-1] + ("A" if real[-1] != "A" else "B"),
        "prefix": "x" + real,
        "suffix": real + "x",
        "case": real.swapcase(),
    }.get(value, value)
    if forged == real:
        return
    other = Browser()
    other.cookies[name] = forged
    client = h.register()
    url = h.authorize_url(client, VERIFIER, resource=h.config.resource_urls[1])
    consent = (h.request("GET", url, browser=other).header("location") or "").removeprefix(
        h.config.issuer_origin
    )
    page = h.request("GET", consent, browser=other)
    decided = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=other)
    assert decided.status == 303, decided.body
    assert (decided.header("location") or "").startswith(UPSTREAM + "/authorize")


def _approve_for(h: Harness, resource: str, browser: Browser) -> tuple[str, str]:
    """A new client's authorization for ``resource`` in ``browser``, approved at the consent page:
    ``(where the 303 goes, the client's redirect URI)``: to the provider, or, from a live
    session, back to the client."""
    client = h.register()
    resp = h.request("GET", h.authorize_url(client, VERIFIER, resource=resource), browser=browser)
    consent = (resp.header("location") or "").removeprefix(h.config.issuer_origin)
    page = h.request("GET", consent, browser=browser)
    decided = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert decided.status == 303, decided.body
    return decided.header("location") or "", client["redirect_uris"][0]


@settings(max_examples=20, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    paths=PATHS,
    origin=st.sampled_from(["same-origin", "none", "cross-site", "same-site", "absent"]),
)
def test_invariant_40_a_session_the_browser_signed_out_of_never_signs_anyone_in(
    issuer: str, paths: tuple[str, ...], origin: str
) -> None:
    """spec/security.md 40 and 31: ``POST /signout`` from the proxy's own page deletes the session
    its cookie names and clears the cookie; the next approval in that browser, even one that
    replays the old cookie, goes to the provider. From anywhere else it is a 403 that deletes
    nothing, and the session still serves the browser."""
    h = Harness(config_for(issuer, paths))
    first, second = h.config.resource_urls[:2]
    browser = Browser()
    sign_in(h, browser, first)
    name, secret = next((k, v) for k, v in browser.cookies.items() if k.endswith("_session"))
    headers = () if origin == "absent" else (("sec-fetch-site", origin),)
    resp = h.request("POST", "/signout", headers=headers, browser=browser)
    own = origin in ("same-origin", "none")
    if not own:
        assert resp.status == 403, resp.body
        assert name in browser.cookies
        assert [k for k, _, _ in h.store.dump() if k == SESSION_KIND]
        location, redirect_uri = _approve_for(h, second, browser)
        assert location.startswith(redirect_uri + "?"), location  # served from the session
        return
    assert resp.status == 200 and b"You are signed out" in resp.body
    assert name not in browser.cookies  # cleared by the response (Max-Age=0)
    assert not [k for k, _, _ in h.store.dump() if k == SESSION_KIND]
    browser.cookies[name] = secret  # kept, or put back: it names nothing any more
    location, _redirect_uri = _approve_for(h, second, browser)
    assert location.startswith(UPSTREAM + "/authorize"), location
