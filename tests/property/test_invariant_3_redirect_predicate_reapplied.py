"""spec/security.md 3, second sentence: the redirect URI predicate is applied again at authorize, at consent
and before the final redirect. A client or transaction record damaged at rest so that it names a URI
registration would have refused (``javascript:``, userinfo, fragments, backslashes, dot segments,
whitespace, control characters) never produces a redirect at any of the three places."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run
from oauthproxy_core import codec
from oauthproxy_core.effects import CompareAndSet, PutRecord
from oauthproxy_core.errors import AccessDeniedError
from oauthproxy_core.http import Response
from oauthproxy_core.records import Client, Transaction
from oauthproxy_core.redirect_uris import is_acceptable_redirect_uri
from oauthproxy_core.redirects import authorization_redirect, error_redirect
from tests.harness import (
    CONSENT_FORM_HEADERS,
    VERIFIER,
    Browser,
    Harness,
    UpstreamUser,
    consent_fields,
)

DANGEROUS_PREFIXES = (
    "javascript:",
    "JavaScript:alert(1)//",
    "data:text/html,",
    "file:///",
    "vbscript:",
    "http://localhost@evil.example/",
    "https://client.example@evil.example/",
    "https://client.example/cb#",
    "https://client.example/a/../cb",
    "https://client.example/./cb",
    "https://client.example\\@evil.example/",
    "https://client.example/c b",
    "https://client.example/cb\t",
    "https://client.example/\x00",
    "http://evil.example/cb",
    "//evil.example/cb",
    "",
)
unacceptable_uris = (
    st.builds(
        lambda prefix, tail: prefix + tail,
        st.sampled_from(DANGEROUS_PREFIXES),
        st.text(max_size=16),
    )
    | st.text(max_size=40)
).filter(lambda uri: not is_acceptable_redirect_uri(uri))

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def observed(h: Harness, method: str, target: str, **kw: Any) -> tuple[Response, list[Any]]:
    """Send one request through the real driver; return the response and every effect executed."""
    effects: list[Any] = []
    req = h.make_request(method, target, **kw)
    resp = run(
        h.server.handle(req, now=h.clock.now, random=h.random),
        h.store,
        h.upstream,
        lambda effect, _result, _seconds: effects.append(effect),
    )
    browser = kw.get("browser")
    if browser is not None:
        browser.absorb(resp)
    return resp, effects


def writes(effects: list[Any], kind: str) -> list[Any]:
    return [e for e in effects if type(e) in (CompareAndSet, PutRecord) and e.kind == kind]


def damage(h: Harness, kind: str, key: str, cls: type[Any], **changes: Any) -> None:
    """Rewrite a stored record in place, as corruption or a compromised store could."""
    stored = h.store.get(kind, key)
    assert stored is not None
    record = attrs.evolve(codec.decode(stored.value, cls, stored.version), **changes)
    h.store.put(kind, key, codec.encode(record), stored.version, 600)


def no_redirect(resp: Response, bad_uri: str) -> bool:
    location = resp.header("location")
    return resp.status == 400 and (location is None or not location.startswith(bad_uri or "\0"))


def to_consent(h: Harness, client: dict[str, Any], browser: Browser) -> tuple[str, Response]:
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    consent_url = resp.header("location")
    assert consent_url is not None
    txn = dict(parse_qsl(urlsplit(consent_url).query))["txn"]
    page = h.request("GET", consent_url.removeprefix(h.config.issuer), browser=browser)
    assert page.status == 200
    return txn, page


@SETTINGS
@given(bad=unacceptable_uris)
def test_invariant_3_predicate_reapplied_at_authorize(bad: str) -> None:
    """A registration entry damaged at rest matches nothing: a page, no redirect, no transaction."""
    h = Harness()
    client = h.register()
    damage(h, "client", client["client_id"], Client, redirect_uris=(bad,))
    resp, effects = observed(
        h, "GET", h.authorize_url({**client, "redirect_uris": [bad]}, VERIFIER)
    )
    assert resp.status == 400
    assert resp.header("location") is None
    assert writes(effects, "tx") == []


@SETTINGS
@given(bad=unacceptable_uris, decision=st.sampled_from(["approve", "deny"]))
def test_invariant_3_predicate_reapplied_at_consent(bad: str, decision: str) -> None:
    """A pending transaction whose redirect URI was damaged after authorize: approving neither
    contacts the upstream nor redirects; denying sends no ``access_denied`` to the damaged URI."""
    h = Harness()
    client = h.register()
    browser = Browser()
    txn, page = to_consent(h, client, browser)
    damage(h, "tx", txn, Transaction, redirect_uri=bad)
    resp, effects = observed(
        h,
        "POST",
        "/consent",
        body=f"txn={txn}&csrf={consent_fields(page)['csrf']}&decision={decision}".encode(),
        headers=(("content-type", "application/x-www-form-urlencoded"), *CONSENT_FORM_HEADERS),
        browser=browser,
    )
    assert no_redirect(resp, bad)
    assert resp.header("location") is None
    assert writes(effects, "ustate") == []
    assert h.upstream.calls == []
    stored = h.store.get("tx", txn)
    assert stored is not None
    assert codec.decode(stored.value, Transaction, stored.version).state == "failed"


@SETTINGS
@given(bad=unacceptable_uris)
def test_invariant_3_predicate_reapplied_before_the_final_redirect(bad: str) -> None:
    """Damaged between consent and the upstream callback: the code never travels to the URI."""
    h = Harness()
    client = h.register()
    browser = Browser()
    txn, page = to_consent(h, client, browser)
    resp = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    upstream_url = resp.header("location")
    assert upstream_url is not None
    damage(h, "tx", txn, Transaction, redirect_uri=bad)
    callback = h.upstream.login(upstream_url, UpstreamUser(id=1, login="u"))
    resp, _effects = observed(h, "GET", callback.removeprefix(h.config.issuer), browser=browser)
    assert no_redirect(resp, bad)
    assert resp.header("location") is None
    assert b"code=" not in resp.body


@SETTINGS
@given(bad=unacceptable_uris, state=st.none() | st.text(max_size=20))
def test_invariant_3_redirect_builders_refuse_unacceptable_uris(
    bad: str, state: str | None
) -> None:
    """``redirects.py`` itself: whatever a caller passes, an unacceptable URI yields a page."""
    ok = authorization_redirect(
        bad, [("code", "c0de")], client_state=state, issuer="https://proxy.example"
    )
    err = error_redirect(
        bad, AccessDeniedError("denied"), client_state=state, issuer="https://proxy.example"
    )
    for resp in (ok, err):
        assert resp.status == 400
        assert resp.header("location") is None
        assert b"c0de" not in resp.body
