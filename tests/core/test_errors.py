"""Errors decide how they are rendered (oauthproxy_core/errors.py): the class carries the status, the
``WWW-Authenticate`` challenge and whether the error may travel to the client's redirect URI.

The browser handlers refuse by raising these classes (``PageError`` and its subclasses for what is
only ever shown to the user), so no handler builds an error page from a string code of its own."""

from __future__ import annotations

import ast
import json
from html import escape
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthproxy_core import handlers
from oauthproxy_core.errors import (
    ALL_ERRORS,
    InvalidClientError,
    InvalidTokenError,
    OAuthError,
    PageError,
    SignInRefusedError,
)
from oauthproxy_core.redirects import error_redirect
from oauthproxy_core.server import render_error
from tests.harness import VERIFIER, Browser, Harness, UpstreamUser, consent_fields

REDIRECT = "http://127.0.0.1:9999/cb"
ISSUER = "https://proxy.example"


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_rfc6749_4_1_2_1_only_redirectable_errors_reach_the_redirect_uri(
    cls: type[OAuthError],
) -> None:
    """spec/security.md 2: an error whose class may not be redirected is rendered, never sent away."""
    resp = error_redirect(REDIRECT, cls("why"), client_state="s", issuer=ISSUER)
    location = resp.header("location")
    if cls.redirectable:
        assert resp.status == 302 and location is not None and location.startswith(REDIRECT)
        assert f"error={cls.error}" in location
    else:
        assert location is None
        assert resp.status == cls.status
        assert (resp.header("content-type") or "").startswith("text/html")


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_json_errors_carry_the_class_status_code_and_challenge(cls: type[OAuthError]) -> None:
    resp = render_error(cls("why"), browser=False, cors=False)
    assert resp.status == cls.status
    assert json.loads(resp.body)["error"] == cls.error
    assert resp.header("www-authenticate") == cls.challenge
    if cls.status == 401:
        assert cls.challenge is not None  # RFC 9110 §15.5.2: a 401 names a scheme


def test_rfc6749_5_2_and_rfc6750_3_challenges() -> None:
    assert (
        render_error(InvalidClientError(), browser=False, cors=True).header("www-authenticate")
        == 'Basic realm="oauthproxy"'
    )
    assert (
        render_error(InvalidTokenError(), browser=False, cors=True).header("www-authenticate")
        == 'Bearer error="invalid_token"'
    )


def test_every_error_class_is_listed() -> None:
    def subclasses(cls: type[OAuthError]) -> set[type[OAuthError]]:
        found = set(cls.__subclasses__())
        for sub in cls.__subclasses__():
            found |= subclasses(sub)
        return found

    core = {c for c in subclasses(OAuthError) if c.__module__ == "oauthproxy_core.errors"}
    assert core == set(ALL_ERRORS)


_EXTRA = ("X-Carried", "by-the-error")


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from(ALL_ERRORS),
    description=st.text(max_size=60),
    retry_after=st.none() | st.integers(min_value=0, max_value=10**6),
    cors=st.booleans(),
)
def test_invariant_2_every_error_renders_as_its_class_declares(
    cls: type[OAuthError], description: str, retry_after: int | None, cors: bool
) -> None:
    """spec/security.md 2: whatever the class and the message, the page, the JSON answer and the
    redirect carry the class's status and code, and a class that is not ``redirectable`` never
    produces a redirect (``Location``), whoever asks ``error_redirect`` for one."""
    err = cls(description, retry_after=retry_after, headers=(_EXTRA,))
    shown = escape(description or "The request was not valid.").encode()
    retry = None if retry_after is None else str(retry_after)

    page = render_error(err, browser=True, cors=cors)
    assert page.status == cls.status
    assert (page.header("content-type") or "").startswith("text/html")
    assert f"<code>{escape(cls.error)}</code>".encode() in page.body and shown in page.body
    assert page.header("location") is None and page.header("www-authenticate") is None
    assert page.header("retry-after") == retry and page.header(_EXTRA[0]) == _EXTRA[1]

    answer = render_error(err, browser=False, cors=cors)
    assert answer.status == cls.status
    expected = {"error": cls.error} | ({"error_description": description} if description else {})
    assert json.loads(answer.body) == expected
    assert answer.header("www-authenticate") == cls.challenge
    assert answer.header("location") is None
    assert answer.header("retry-after") == retry and answer.header(_EXTRA[0]) == _EXTRA[1]

    sent = error_redirect(REDIRECT, err, client_state="s", issuer=ISSUER)
    location = sent.header("location")
    assert sent.header(_EXTRA[0]) == _EXTRA[1]
    if not cls.redirectable:
        assert location is None
        assert sent.status == cls.status and sent.body == page.body
        return
    assert sent.status == 302 and location is not None and location.startswith(REDIRECT + "?")
    params = dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
    assert params["error"] == cls.error
    assert params.get("error_description") == (description or None)


def test_invariant_2_page_errors_are_never_redirectable() -> None:
    pages = [cls for cls in ALL_ERRORS if issubclass(cls, PageError)]
    assert len(pages) >= 4
    assert not any(cls.redirectable for cls in pages)


def test_no_handler_builds_an_error_page_itself() -> None:
    """Handlers raise an error class; only the renderers (server.py, redirects.py) make pages."""
    for module in sorted(Path(handlers.__file__).parent.glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = (
                {alias.name for alias in node.names}
                if isinstance(node, ast.ImportFrom)
                else {node.id}
                if isinstance(node, ast.Name)
                else {node.attr}
                if isinstance(node, ast.Attribute)
                else set()
            )
            assert not names & {"error_page", "error_response"}, module.name


def test_a_callback_refusal_page_still_clears_the_binding_cookie() -> None:
    """spec/security.md 13: the callback refuses a sign-in past its deadline with the page of
    ``SignInRefusedError``, and the binding the browser presented is forgotten on that page too."""
    h = Harness()
    client = h.register()
    browser = Browser()
    resp = h.request("GET", h.authorize_url(client, VERIFIER), browser=browser)
    consent = resp.header("location")
    assert consent is not None
    page = h.request("GET", consent.removeprefix(h.config.issuer), browser=browser)
    approved = h.form("/consent", {**consent_fields(page), "decision": "approve"}, browser=browser)
    upstream_url = approved.header("location")
    assert approved.status == 303 and upstream_url is not None
    before = set(browser.cookies)
    callback = h.upstream.login(upstream_url, UpstreamUser(id=7, login="late"))
    h.clock.advance(h.config.lifetimes.transaction + 1)

    refused = h.request("GET", callback.removeprefix(h.config.issuer), browser=browser)

    assert refused.status == SignInRefusedError.status
    assert f"<code>{SignInRefusedError.error}</code>".encode() in refused.body
    assert b"took too long" in refused.body and refused.header("location") is None
    cleared = [v for v in refused.header_values("set-cookie") if "max-age=0" in v.lower()]
    assert len(cleared) == 1
    assert len(before - set(browser.cookies)) == 1
