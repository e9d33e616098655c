"""PKCE: code challenge validation and verifier checking (spec/security.md invariants 5 and 6).

Implements RFC 7636 §4.1 (verifier syntax), §4.2 (S256 transform), §4.3 and §4.4 (challenge
parameters), §4.6 (server verification) as profiled by OAuth 2.1 §4.1.1 and RFC 9700 §2.1.1:
only ``S256`` is accepted, so "plain" downgrades and missing challenges never yield a code (the
incident: a verifier accepted when no challenge had been stored, workers-oauth-provider
CVE-2025-4144).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from .errors import InvalidRequestError

__all__ = ["is_valid_verifier", "s256", "validate_code_challenge", "verify_code_verifier"]

# RFC 7636 §4.1: code-verifier = 43*128unreserved. fullmatch, never "^...$": "$" also matches
# before a trailing newline.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# SHA-256 gives 32 bytes, i.e. 43 base64url characters without padding. The last character
# carries only 4 bits of data, so its two low bits are zero: only these 16 characters can end an
# S256 challenge. Anything else can never equal s256(verifier) and is refused up front.
_CHALLENGE = re.compile(r"[A-Za-z0-9_\-]{42}[AEIMQUYcgkosw048]")

_S256 = "S256"


def validate_code_challenge(challenge: str | None, method: str | None) -> str:
    """Return ``challenge`` if it is a well-formed S256 challenge, else raise InvalidRequestError.

    OAuth 2.1 §4.1.1 makes ``code_challenge`` mandatory; RFC 7636 §4.3 defaults a missing method
    to ``plain``, which we refuse like any method other than exactly ``S256`` (spec/security.md 6).
    """
    if challenge is None or challenge == "":
        raise InvalidRequestError("code_challenge is required")
    if method is None:
        raise InvalidRequestError("code_challenge_method S256 is required")
    if method != _S256:
        raise InvalidRequestError("code_challenge_method must be S256")
    if not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequestError("code_challenge is malformed")
    return challenge


def is_valid_verifier(verifier: str) -> bool:
    """RFC 7636 §4.1 syntax: 43 to 128 characters from ``[A-Za-z0-9-._~]``."""
    return isinstance(verifier, str) and _VERIFIER.fullmatch(verifier) is not None


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`` without padding."""
    try:
        data = verifier.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidRequestError("code_verifier must be ASCII") from None
    digest = hashlib.sha256(data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_code_verifier(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 §4.6: True only if ``verifier`` is well-formed and hashes to ``challenge``.

    Compared in constant time (spec/security.md 5). Bytes are compared because
    ``hmac.compare_digest`` raises TypeError on non-ASCII ``str`` arguments.
    """
    if verifier is None or not is_valid_verifier(verifier):
        return False
    if not isinstance(challenge, str) or not challenge:
        return False
    return hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("utf-8"))
