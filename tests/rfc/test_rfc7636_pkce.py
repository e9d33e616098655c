"""PKCE: RFC 7636 §4.1-4.6 as profiled by OAuth 2.1 §4.1.1. Proves spec/security.md invariants 5 and 6
for the pure checks."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from oauthproxy_core.errors import InvalidRequestError
from oauthproxy_core.pkce import (
    is_valid_verifier,
    s256,
    validate_code_challenge,
    verify_code_verifier,
)

_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
verifiers = st.text(alphabet=_UNRESERVED, min_size=43, max_size=128)


def test_rfc7636_appendix_b_example() -> None:
    # RFC 7636 Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert s256(verifier) == challenge
    assert validate_code_challenge(challenge, "S256") == challenge
    assert verify_code_verifier(verifier, challenge)


@given(verifiers)
def test_rfc7636_4_2_s256_is_base64url_sha256_without_padding(verifier: str) -> None:
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert s256(verifier) == expected.decode().rstrip("=")
    assert len(s256(verifier)) == 43
    # What S256 yields is always a well-formed challenge.
    assert validate_code_challenge(s256(verifier), "S256") == s256(verifier)


@given(verifiers)
def test_invariant_5_verifier_must_hash_to_challenge(verifier: str) -> None:
    challenge = s256(verifier)
    assert verify_code_verifier(verifier, challenge)
    # The challenge itself, or any other verifier, does not redeem it.
    assert not verify_code_verifier(challenge, challenge)
    other = verifier[:-1] + ("A" if verifier[-1] != "A" else "B")
    assert not verify_code_verifier(other, challenge)


@given(verifiers, verifiers)
def test_invariant_5_distinct_verifiers_do_not_cross(a: str, b: str) -> None:
    assume(a != b)
    assert not verify_code_verifier(a, s256(b))


@given(st.text(max_size=140))
def test_invariant_5_verifier_syntax_is_enforced_before_hashing(verifier: str) -> None:
    well_formed = 43 <= len(verifier) <= 128 and all(c in _UNRESERVED for c in verifier)
    assert is_valid_verifier(verifier) == well_formed
    if not well_formed:
        # Even when its hash is the stored challenge, a malformed verifier is refused.
        try:
            challenge = s256(verifier)
        except InvalidRequestError:
            challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        assert not verify_code_verifier(verifier, challenge)


@pytest.mark.parametrize(
    "verifier",
    [
        "a" * 42,
        "a" * 129,
        "a" * 43 + "\n",
        "a" * 42 + "\n",
        "a" * 43 + " ",
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + "\u00e9",
        "\uff41" * 43,
        "",
    ],
)
def test_rfc7636_4_1_malformed_verifiers(verifier: str) -> None:
    assert not is_valid_verifier(verifier)
    try:
        challenge = s256(verifier)
    except InvalidRequestError:
        return
    assert not verify_code_verifier(verifier, challenge)


def test_rfc7636_4_1_length_bounds() -> None:
    assert is_valid_verifier("a" * 43)
    assert is_valid_verifier("a" * 128)
    assert is_valid_verifier("-._~" * 11)


def test_verifier_none_and_empty_challenge_never_verify() -> None:
    verifier = "a" * 43
    assert not verify_code_verifier(None, s256(verifier))
    # A missing stored challenge must never be satisfied (workers-oauth-provider CVE-2025-4144).
    assert not verify_code_verifier(verifier, "")


def test_non_ascii_challenge_does_not_raise() -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str; we must just answer False.
    assert not verify_code_verifier("a" * 43, "é" * 43)


def test_s256_rejects_non_ascii() -> None:
    with pytest.raises(InvalidRequestError):
        s256("é" * 43)


@pytest.mark.parametrize(
    ("challenge", "method"),
    [
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", None),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "plain"),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "s256"),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "S256 "),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "S512"),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", ""),
        (None, "S256"),
        ("", "S256"),
        (None, None),
        (None, "plain"),
    ],
)
def test_invariant_6_plain_or_missing_challenge_rejected_table(
    challenge: str | None, method: str | None
) -> None:
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(challenge, method)


@given(verifiers, st.one_of(st.none(), st.text(max_size=10)))
def test_invariant_6_plain_or_missing_challenge_rejected(verifier: str, method: str | None) -> None:
    assume(method != "S256")
    # "plain": the challenge is the verifier itself; any method other than S256 is refused,
    # and so is a request with no challenge at all.
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(verifier, method)
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(s256(verifier), method)
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(None, "S256")


@pytest.mark.parametrize(
    "challenge",
    [
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c",  # 42
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMA",  # 44
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",  # padding
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",  # base64, not base64url
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw/cM",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",  # non-zero trailing bits
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\n",
        "a" * 128,  # a "plain" verifier sent as an S256 challenge
    ],
)
def test_rfc7636_4_2_malformed_challenges_rejected(challenge: str) -> None:
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(challenge, "S256")


@given(st.binary(min_size=32, max_size=32))
def test_every_sha256_shaped_challenge_accepted(digest: bytes) -> None:
    challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert validate_code_challenge(challenge, "S256") == challenge
