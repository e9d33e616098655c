"""Errors decide how they are rendered (oauthproxy_core/errors.py): the class carries the status, the
``WWW-Authenticate`` challenge and whether the error may travel to the client's redirect URI."""

from __future__ import annotations

import json

import pytest

from oauthproxy_core.errors import ALL_ERRORS, InvalidClientError, InvalidTokenError, OAuthError
from oauthproxy_core.redirects import error_redirect
from oauthproxy_core.server import render_error

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
