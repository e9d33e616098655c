"""spec/security.md 32 as properties: only claims the provider vouches for become identity.

Over arbitrary identity documents (the vouching claims ``email_verified`` and ``xms_edov`` taking
every JSON shape: absent, ``null``, booleans, numbers, ``"true"``/``"false"`` and their near misses,
arrays, objects) and every built-in profile, the ``email`` survives exactly when the profile's
vouching claim is JSON ``true`` or the string ``"true"``, and then unchanged; nothing mutable becomes
the subject or ``login``. A second property runs whole sign-ins through the core (callback, code,
token endpoint) and reads the access token.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oauthproxy_core.providers import (
    entra_profile,
    github_app_profile,
    github_profile,
    google_profile,
    oauth2_profile,
    oidc_profile_from_discovery,
)
from oauthproxy_core.upstream import (
    MUTABLE_CLAIMS,
    UpstreamProfile,
    email_vouched,
    identity_from_claims,
    parse_verified_email,
)
from tests.harness import VERIFIER, Browser, Harness, make_config
from tests.providers.idp import ABSENT, CLIENT_ID, IDP, ClaimsProvider, at_idp, json_response
from tests.providers.test_callback_flows import redeem

DISCOVERY = {
    "issuer": IDP,
    "authorization_endpoint": IDP + "/authorize",
    "token_endpoint": IDP + "/token",
    "userinfo_endpoint": IDP + "/userinfo",
}


def profiles() -> dict[str, UpstreamProfile]:
    common = {"client_id": CLIENT_ID, "client_secret": "s"}
    oauth2 = {
        "authorize_url": IDP + "/authorize",
        "token_url": IDP + "/token",
        "userinfo_url": IDP + "/me",
        **common,
    }
    return {
        "oidc": oidc_profile_from_discovery(DISCOVERY, issuer=IDP, **common),
        "google": google_profile(**common),
        "entra": entra_profile(tenant="common", **common),
        "github": github_profile(scopes=("read:user", "user:email"), **common),
        "github-app": github_app_profile(**common),
        "oauth2": oauth2_profile(**oauth2),
        "oauth2-vouching": oauth2_profile(email_verified_claim="verified", **oauth2),
    }


PROFILES = profiles()

# Every JSON shape a vouching claim can take, weighted towards the near misses of `true`.
claim_values = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.booleans(),
    st.sampled_from(["true", "false", "True", "TRUE", "1", "0", "yes", " true", "true ", ""]),
    st.integers(-2, 2),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.lists(st.booleans(), max_size=2),
    st.dictionaries(st.sampled_from(["value", "true"]), st.booleans(), max_size=1),
)
addresses = st.one_of(
    st.sampled_from(["ceo@victim.example", "a@b.c", "x+tag@sub.example.org"]),
    st.emails().map(str),
    st.text(max_size=300),  # no "@", control characters, spaces, overlong
    st.integers(),
    st.none(),
)


def vouches(value: object) -> bool:
    """The rule, written independently of the code: JSON true or exactly the string "true"."""
    return (type(value) is bool and value) or (type(value) is str and value == "true")


def plain_address(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 256
        and "@" in value
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


@settings(max_examples=400, deadline=None)
@given(
    shape=st.sampled_from(sorted(PROFILES)),
    email=addresses,
    email_verified=claim_values,
    xms_edov=claim_values,
    verified=claim_values,
    preferred_username=addresses,
)
def test_invariant_32_email_survives_only_when_the_provider_vouches_for_it(
    shape: str,
    email: object,
    email_verified: object,
    xms_edov: object,
    verified: object,
    preferred_username: object,
) -> None:
    profile = PROFILES[shape]
    document: dict[str, Any] = {
        profile.subject_field: "user-1" if profile.subject_field != "id" else 1,
        "email": email,
        "email_verified": email_verified,
        "xms_edov": xms_edov,
        "verified": verified,
        "preferred_username": preferred_username,
        "login": "handle",
        "name": "Some Name",
    }
    document = {k: v for k, v in document.items() if v is not ABSENT}
    claims = dict(identity_from_claims(profile, document).claims)

    vouching = {
        "oidc": email_verified,
        "google": email_verified,
        "entra": xms_edov,  # Entra's email_verified is not its word: only xms_edov is
        "oauth2-vouching": verified,
    }
    # GitHub's /user and a plain OAuth 2 provider never vouch for the email of their document.
    expected = shape in vouching and vouches(vouching[shape]) and plain_address(email)
    assert email_vouched(profile, document) == (shape in vouching and vouches(vouching[shape]))
    if expected:
        assert claims["email"] == email  # exactly as sent, never cleaned into another address
    else:
        assert "email" not in claims
    # Nothing but the subject field names the user; `login` never carries a mutable field.
    assert identity_from_claims(profile, document).subject in ("user-1", "1")
    if "login" in claims:
        assert claims["login"] == "handle"


@given(
    entries=st.lists(
        st.dictionaries(
            st.sampled_from(["email", "primary", "verified", "visibility"]),
            st.one_of(claim_values.filter(lambda v: v is not ABSENT), addresses),
            max_size=4,
        ),
        max_size=5,
    )
)
@settings(max_examples=300, deadline=None)
def test_invariant_32_github_email_is_the_verified_primary_one_or_none(
    entries: list[dict[str, Any]],
) -> None:
    found = parse_verified_email(json_response(entries))
    candidates = [e for e in entries if e.get("primary") is True and e.get("verified") is True]
    if found is None:
        assert not candidates or not plain_address(candidates[0].get("email"))
    else:
        assert candidates and found == candidates[0]["email"]


@pytest.mark.parametrize("field", sorted(MUTABLE_CLAIMS | {"login", "username"}))
def test_invariant_32_mutable_fields_are_never_the_subject(field: str) -> None:
    with pytest.raises(ValueError, match="immutable"):
        attrs.evolve(PROFILES["oidc"], subject_field=field)


@pytest.mark.parametrize("field", sorted(MUTABLE_CLAIMS))
def test_invariant_32_mutable_fields_are_never_login(field: str) -> None:
    with pytest.raises(ValueError, match="login may not come from"):
        attrs.evolve(PROFILES["oidc"], claim_map=(("login", field),))
    # Under its own name the field is display data, and allowed (except email, below).
    if field != "email":
        attrs.evolve(PROFILES["oidc"], claim_map=((field, field),))


@pytest.mark.parametrize("field", ["upn", "preferred_username", "mail", "unique_name"])
def test_invariant_32_email_comes_only_from_the_vouched_field(field: str) -> None:
    with pytest.raises(ValueError, match="email can only come from the email field"):
        attrs.evolve(PROFILES["entra"], claim_map=(("email", field),))


# --------------------------------------------------------------------------------------------------
# Whole sign-ins through the core: the access token carries the email only when vouched for


def sign_in(profile: UpstreamProfile, document: dict[str, Any]) -> dict[str, Any]:
    h = Harness(make_config(upstream=profile))
    h.upstream = ClaimsProvider(
        callback_url=h.config.callback_url,
        claims=document,
        id_token=profile.uses_id_token,
        now=lambda: h.clock.now,
    )
    client = h.register()
    tokens = redeem(h, client, h.run_to_callback(client, VERIFIER, Browser()))
    principal = h.bearer(tokens["access_token"])
    return dict(principal.claims)  # type: ignore[union-attr]


def test_profiles_point_at_the_scripted_provider() -> None:
    """The sign-in property below uses these shapes; each completes against ClaimsProvider."""
    assert sign_in(local("oidc"), {"sub": "u", "email": "a@b.c", "email_verified": True}) == {
        "email": "a@b.c"
    }


def local(shape: str) -> UpstreamProfile:
    """``PROFILES[shape]`` with its endpoints on the scripted provider."""
    return at_idp(PROFILES[shape])


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(shape=st.sampled_from(["oidc", "google"]), email_verified=claim_values)
def test_invariant_32_access_token_email_only_when_vouched_for(
    shape: str, email_verified: object
) -> None:
    document = {"sub": "u-1", "email": "ceo@victim.example", "email_verified": email_verified}
    if shape == "google":
        document["iss"] = IDP
    document = {k: v for k, v in document.items() if v is not ABSENT}
    claims = sign_in(local(shape), document)
    if vouches(email_verified):
        assert claims.get("email") == "ceo@victim.example"
    else:
        assert "email" not in claims and "ceo@victim.example" not in json.dumps(claims)
