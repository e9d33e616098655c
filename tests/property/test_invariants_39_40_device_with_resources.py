"""spec/security.md 39 and 40 together: a device sign-in (RFC 8628) under an issuer with several
protected resources (``[[resources]]``) and upstream sessions.

The device grant and the resources were written apart; these tests prove how they meet:

- A device may ask for any of the resources (RFC 8707 §2, as at ``/authorize``), and gets that
  resource's baseline scopes when it names none.
- A browser holding a live upstream session (from a code-flow sign-in for another resource) that
  enters the user code and approves completes the device from that session: no provider round
  trip, the device's own "signed in" page (200, naming the resource's server, no redirect), the
  device's one poll gets tokens whose only audience is the resource it asked for, exactly once,
  and that resource's own access rules decide (a refusal ends the device ``access_denied``, with
  nothing stored for it).
- Any other browser (none, a made-up or altered session cookie, an expired session) goes to the
  provider as before; a browser with a session of its own gives the device its own user, never
  another browser's.
- A denial on the consent page, or at the provider, sends the browser to the proxy's own
  verification page, which says so, never to a client redirect URI.
- The single-resource form (no sessions) is unchanged for devices.

Driven through the core's real sync driver and memory store (``tests.harness``).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.testing.flow import VERIFIER
from oauthproxy_adapters.testing.provider import UpstreamUser
from oauthproxy_core.access import AccessPolicy
from oauthproxy_core.config import DeviceGrant, Lifetimes
from oauthproxy_core.handlers.bearer import Challenge, Principal
from oauthproxy_core.http import Response
from oauthproxy_core.resource_servers import ResourceServer
from tests.harness import UPSTREAM, Browser, Harness, consent_fields, make_config, redirect_params
from tests.rfc.device_support import consent, enter_code, error_of, poll, register_device_client

ISSUERS = ("https://proxy.example", "http://127.0.0.1:8080")
SESSION_LIFETIME = 900
DONE = b"Your device is signed in"
OCTOCAT = UpstreamUser(id=42, login="octocat")
OTHER = UpstreamUser(id=7, login="someone-else")


def resources_config(
    issuer: str = ISSUERS[0], *, b_access: AccessPolicy | None = None, upstream_session: int = 0
) -> Any:
    """Two resources, ``/github`` (A, the default) and ``/wiki`` (B, with scopes of its own and,
    optionally, access rules of its own); the device grant on."""
    return make_config(
        issuer=issuer,
        scopes_supported=("mcp", "wiki", "offline_access"),
        resources=[
            ResourceServer(path="/github", name="GitHub tools", scopes=("mcp",)),
            ResourceServer(path="/wiki", name="Team wiki", scopes=("wiki",), access=b_access),
        ],
        device=DeviceGrant(enabled=True),
        lifetimes=Lifetimes(
            revocation_staleness=0, upstream_session=upstream_session or SESSION_LIFETIME
        ),
    )


def _claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _session_cookie(browser: Browser) -> str:
    return next(name for name in browser.cookies if name.endswith("oauthproxy_session"))


def browser_signed_in(h: Harness, resource: str, user: UpstreamUser = OCTOCAT) -> Browser:
    """A browser that signed in at the provider through the code flow for ``resource``: it holds
    an upstream session cookie (the code is left unredeemed, so no grant exists yet)."""
    browser = Browser()
    resp = h.run_to_callback(h.register(), VERIFIER, browser, user=user, resource=resource)
    assert resp.status == 302 and "code" in redirect_params(resp), resp.body
    assert _session_cookie(browser)
    return browser


def start_device(h: Harness, client: dict[str, Any], **params: str) -> dict[str, Any]:
    resp = h.form("/device_authorization", {"client_id": client["client_id"], **params})
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


def decide(h: Harness, browser: Browser, user_code: str, decision: str = "approve") -> Response:
    """The user code entered, the consent page read, the decision posted: the proxy's answer."""
    page = consent(h, browser, enter_code(h, browser, user_code))
    assert page.status == 200, page.body
    return h.form("/consent", {**consent_fields(page), "decision": decision}, browser=browser)


def grants_in_store(h: Harness) -> int:
    return sum(1 for kind, _key, _value in h.store.dump() if kind == "grant")


def accepted_at(h: Harness, token: str) -> list[str]:
    """The resources whose bearer check accepts ``token``."""
    accepted = []
    for url in h.config.resource_urls:
        verdict = run(
            h.server.verify_bearer(
                f"Bearer {token}", now=h.clock.now, random=h.random, resource=url
            ),
            h.store,
        )
        if isinstance(verdict, Principal):
            accepted.append(url)
        else:
            assert isinstance(verdict, Challenge) and verdict.status == 401
    return accepted


def assert_verification_page_redirect(h: Harness, resp: Response) -> None:
    """``resp`` sends the browser to the proxy's own verification page with ``access_denied`` (the
    device transaction's redirect URI), and that page renders and says so."""
    location = resp.header("location") or ""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == h.config.verification_uri, location
    assert parse_qs(parts.query)["error"] == ["access_denied"]
    back = h.request("GET", location.removeprefix(h.config.issuer_origin))
    assert back.status == 200 and b"not completed" in back.body


# -- 1. a browser with an upstream session approves a device for another resource ------------------


def test_invariants_39_40_a_device_for_resource_b_completes_from_the_session_of_a_sign_in_for_a() -> (
    None
):
    h = Harness(resources_config())
    a, b = h.config.resource_urls
    browser = browser_signed_in(h, a)
    assert h.upstream.authorize_requests == 1
    device_client = register_device_client(h)
    grant = start_device(h, device_client, resource=b)
    # The consent page names B's server.
    page = consent(h, browser, enter_code(h, browser, grant["user_code"]))
    assert page.status == 200 and b"Team wiki" in page.body
    session_before = browser.cookies[_session_cookie(browser)]
    done = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    # consent.start_upstream -> issue_from_session -> issue_code -> device.complete_sign_in: the
    # device's own page (not a redirect, not a 303 with no Location), naming B; no provider trip.
    assert done.status == 200, done.body
    assert done.header("location") is None
    assert DONE in done.body and b"Team wiki" in done.body
    assert h.upstream.authorize_requests == 1
    # A session is never extended or replaced by use.
    assert not [v for v in done.header_values("set-cookie") if "oauthproxy_session" in v]
    assert browser.cookies[_session_cookie(browser)] == session_before

    # A reload of the consent POST changes nothing.
    again = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert again.status == 400

    resp = poll(h, device_client, grant["device_code"])
    assert resp.status == 200, resp.body
    tokens = json.loads(resp.body)
    claims = _claims(tokens["access_token"])
    assert claims["aud"] == b and claims["sub"] == "idp:42"
    # B's baseline scope, since the device asked for none.
    assert tokens["scope"] == "wiki"
    assert accepted_at(h, tokens["access_token"]) == [b]
    # Exactly once.
    h.clock.advance(10)
    second = poll(h, device_client, grant["device_code"])
    assert second.status == 400 and error_of(second) == "invalid_grant"
    assert grants_in_store(h) == 1


def test_invariants_39_40_resource_bs_own_rules_refuse_the_device_from_a_session() -> None:
    h = Harness(resources_config(b_access=AccessPolicy(allowed_subjects=("idp:7",))))
    a, b = h.config.resource_urls
    browser = browser_signed_in(h, a)  # [access] admits octocat; A has no rules of its own
    device_client = register_device_client(h)
    grant = start_device(h, device_client, resource=b)
    refused = decide(h, browser, grant["user_code"])
    # The refusal page, naming B; its way back is the verification page, not a client URI.
    assert refused.status == 403, refused.body
    assert b"Team wiki" in refused.body
    assert h.upstream.authorize_requests == 1
    body = refused.body.decode()
    back = body[body.index('href="') + 6 :]
    back = back[: back.index('"')].replace("&amp;", "&")
    assert back.startswith(h.config.verification_uri + "?error=access_denied"), back
    resp = poll(h, device_client, grant["device_code"])
    assert resp.status == 400 and error_of(resp) == "access_denied"
    assert grants_in_store(h) == 0
    # The same session still serves A (the refusal was B's alone).
    code_client = h.register()
    url = h.authorize_url(code_client, VERIFIER, resource=a)
    first = h.request("GET", url, browser=browser)
    page = h.request(
        "GET",
        (first.header("location") or "").removeprefix(h.config.issuer_origin),
        browser=browser,
    )
    ok = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    assert ok.status == 303 and "code" in redirect_params(ok)


# -- 1 and 2 as a property: who approves, for which resource, under which rules ---------------------

WHO = st.sampled_from(
    ["same_browser", "own_session", "no_session", "planted_cookie", "altered_cookie", "expired"]
)


@settings(max_examples=60, deadline=None)
@given(
    issuer=st.sampled_from(ISSUERS),
    who=WHO,
    for_b=st.booleans(),
    b_refuses=st.booleans(),
    decision=st.sampled_from(["approve", "approve", "deny"]),
)
def test_invariants_39_40_a_session_completes_a_device_only_for_its_own_browser(
    issuer: str, who: str, for_b: bool, b_refuses: bool, decision: str
) -> None:
    """Only the browser holding a live session completes a device without the provider; the
    device gets the approving browser's user, its own resource as the one audience, once; the
    rules of that resource decide; a denial lands on the verification page."""
    b_access = AccessPolicy(allowed_subjects=("idp:nobody",)) if b_refuses else None
    h = Harness(resources_config(issuer, b_access=b_access))
    a, b = h.config.resource_urls
    signed_in = browser_signed_in(h, a)
    approver = Browser()
    user = OCTOCAT
    if who == "same_browser":
        approver = signed_in
    elif who == "own_session":
        approver, user = browser_signed_in(h, a, OTHER), OTHER
    elif who == "planted_cookie":
        approver.cookies[_session_cookie(signed_in)] = "A" * 43
    elif who == "altered_cookie":
        real = signed_in.cookies[_session_cookie(signed_in)]
        altered = real[:-1] + ("B" if real[-1] != "B" else "C")
        approver.cookies[_session_cookie(signed_in)] = altered
    elif who == "expired":
        approver = signed_in
        h.clock.advance(SESSION_LIFETIME)
    trips = h.upstream.authorize_requests
    wanted = b if for_b else a
    device_client = register_device_client(h)
    grant = start_device(h, device_client, resource=wanted)

    answer = decide(h, approver, grant["user_code"], decision)
    if decision == "deny":
        assert answer.status == 303
        assert_verification_page_redirect(h, answer)
        assert h.upstream.authorize_requests == trips
        assert error_of(poll(h, device_client, grant["device_code"])) == "access_denied"
        assert grants_in_store(h) == 0
        return
    from_session = who in ("same_browser", "own_session")
    if not from_session:
        # To the provider, as before sessions existed; the sign-in there ends the device's leg.
        assert answer.status == 303, answer.body
        location = answer.header("location") or ""
        assert location.startswith(UPSTREAM + "/authorize"), (who, location)
        callback = h.upstream.login(location, user)
        assert h.upstream.authorize_requests == trips + 1
        answer = h.request("GET", callback.removeprefix(h.config.issuer_origin), browser=approver)
    else:
        assert h.upstream.authorize_requests == trips
    resp = poll(h, device_client, grant["device_code"])
    if for_b and b_refuses:
        assert answer.status == 403 and b"Team wiki" in answer.body, answer.body
        assert resp.status == 400 and error_of(resp) == "access_denied"
        assert grants_in_store(h) == 0
        return
    assert answer.status == 200 and DONE in answer.body, (who, answer.status, answer.body)
    assert answer.header("location") is None
    assert resp.status == 200, resp.body
    token = json.loads(resp.body)["access_token"]
    assert _claims(token)["aud"] == wanted
    assert _claims(token)["sub"] == f"idp:{user.id}"
    assert accepted_at(h, token) == [wanted]
    h.clock.advance(10)
    assert error_of(poll(h, device_client, grant["device_code"])) == "invalid_grant"
    assert grants_in_store(h) == 1


# -- 3. denial at the provider, with the resources in place ----------------------------------------


def test_invariant_39_a_denial_at_the_provider_returns_to_the_verification_page() -> None:
    h = Harness(resources_config())
    _a, b = h.config.resource_urls
    device_client = register_device_client(h)
    grant = start_device(h, device_client, resource=b)
    browser = Browser()
    to_provider = decide(h, browser, grant["user_code"])
    assert to_provider.status == 303
    state = parse_qs(urlsplit(to_provider.header("location") or "").query)["state"][0]
    query = urlencode({"state": state, "error": "access_denied", "iss": UPSTREAM})
    callback = urlsplit(h.config.callback_url).path + "?" + query
    denied = h.request("GET", callback, browser=browser)
    assert denied.status in (302, 303), denied.body
    assert_verification_page_redirect(h, denied)
    # The device client's registered redirect URI is never used for a device's sign-in.
    assert "127.0.0.1:9" not in (denied.header("location") or "")
    assert error_of(poll(h, device_client, grant["device_code"])) == "access_denied"
    # No session was opened by a denied sign-in.
    assert not [n for n in browser.cookies if n.endswith("oauthproxy_session")]


# -- RFC 8707 §2 for devices: which resource, which scopes -----------------------------------------


def test_rfc8707_2_a_device_may_name_any_resource_and_gets_its_baseline_scopes() -> None:
    h = Harness(resources_config())
    a, b = h.config.resource_urls
    device_client = register_device_client(h)
    for named, resource, scope in (({}, a, "mcp"), ({"resource": b}, b, "wiki")):
        grant = start_device(h, device_client, **named)
        browser = Browser()
        to_provider = decide(h, browser, grant["user_code"])
        callback = h.upstream.login(to_provider.header("location") or "", OCTOCAT)
        done = h.request("GET", callback.removeprefix(h.config.issuer_origin), browser=browser)
        assert done.status == 200 and DONE in done.body
        tokens = json.loads(poll(h, device_client, grant["device_code"]).body)
        assert (_claims(tokens["access_token"])["aud"], tokens["scope"]) == (resource, scope)
    # A resource this issuer does not protect is refused, and nothing is stored.
    before = {r for r in h.store.dump() if r[0] != "bound"}
    refused = h.form(
        "/device_authorization",
        {"client_id": device_client["client_id"], "resource": h.config.issuer + "/elsewhere"},
    )
    assert refused.status == 400 and error_of(refused) == "invalid_target"
    assert {r for r in h.store.dump() if r[0] != "bound"} == before


# -- 4. the single-resource form is unchanged for devices ------------------------------------------


def test_invariant_39_single_resource_devices_always_sign_in_at_the_provider() -> None:
    h = Harness(make_config(device=DeviceGrant(enabled=True)))
    browser = Browser()
    signed = h.run_to_callback(h.register(), VERIFIER, browser)
    assert signed.status == 302
    # No sessions in the single-resource form.
    assert not [n for n in browser.cookies if n.endswith("oauthproxy_session")]
    device_client = register_device_client(h)
    grant = start_device(h, device_client)
    trips = h.upstream.authorize_requests
    to_provider = decide(h, browser, grant["user_code"])
    assert to_provider.status == 303
    assert (to_provider.header("location") or "").startswith(UPSTREAM + "/authorize")
    callback = h.upstream.login(to_provider.header("location") or "", OCTOCAT)
    assert h.upstream.authorize_requests == trips + 1
    done = h.request("GET", callback.removeprefix(h.config.issuer_origin), browser=browser)
    assert done.status == 200 and DONE in done.body
    assert h.config.service_name.encode() in done.body
    tokens = json.loads(poll(h, device_client, grant["device_code"]).body)
    assert _claims(tokens["access_token"])["aud"] == h.config.resource
    assert tokens["scope"] == " ".join(h.config.default_scopes)
    assert not [n for n in browser.cookies if n.endswith("oauthproxy_session")]
    # Naming the one resource explicitly is the same; any other is refused.
    start_device(h, device_client, resource=h.config.resource)
    other = h.form(
        "/device_authorization",
        {"client_id": device_client["client_id"], "resource": h.config.issuer + "/other"},
    )
    assert other.status == 400 and error_of(other) == "invalid_target"
