"""Hashing, token generation, sealing and MACs: the small cryptographic vocabulary of the core.

- Secrets the proxy issues (codes, refresh tokens, client secrets, ``state`` values) are 256 random
  bits from the context's random source, base64url without padding: only unreserved characters
  (RFC 3986 §2.3), so HTTP Basic credentials survive clients that do not URL-encode (spec/interop.md) and
  spec/security.md 22 and 25 hold.
- Stores see only ``digest()`` of a secret (spec/security.md 24). Plain SHA-256 suffices: the inputs are
  256-bit random values, not passwords.
- ``seal``/``unseal``: AES-256-GCM (RFC 7518 §5.3; ``cryptography``'s AEAD, one cipher object per
  key, kept on the key) with a fresh 96-bit nonce, the key id in the envelope for rotation, and
  associated data binding a sealed value to its purpose so one sealed field cannot be replayed into
  another. Envelope: ``<kid>.<b64u(iv || tag || ciphertext)>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from .keys import Keyring

RandomSource = Callable[[int], bytes]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret(random: RandomSource, nbytes: int = 32) -> str:
    """A fresh secret of ``8 * nbytes`` bits (spec/security.md 25 requires at least 128)."""
    if nbytes < 16:
        raise ValueError("secrets carry at least 128 bits")
    return b64u(random(nbytes))


def digest(secret: str) -> str:
    """The store key / stored form of a secret (spec/security.md 24)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def equal(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


class UnsealError(Exception):
    """A sealed value could not be opened (unknown key id, tampering, wrong purpose)."""


def seal(keys: Keyring, random: RandomSource, plaintext: bytes, purpose: str) -> str:
    key = keys.sealing[0]
    iv = random(12)
    sealed = key.aead.encrypt(iv, plaintext, purpose.encode())  # ciphertext || 16-byte tag
    return f"{key.kid}.{b64u(iv + sealed[-16:] + sealed[:-16])}"


def unseal(keys: Keyring, sealed: str, purpose: str) -> bytes:
    kid, _, body = sealed.rpartition(".")
    key = keys.sealing_key(kid)
    if key is None:
        raise UnsealError("unknown sealing key")
    try:
        raw = b64u_decode(body)
        iv, tag, ct = raw[:12], raw[12:28], raw[28:]
        if len(iv) != 12 or len(tag) != 16:
            raise UnsealError("sealed value rejected")
        return key.aead.decrypt(iv, ct + tag, purpose.encode())
    except (InvalidTag, ValueError) as exc:
        raise UnsealError("sealed value rejected") from exc


def mac(keys: Keyring, message: str) -> str:
    """HMAC-SHA256 under the active cookie key (CSRF tokens, cookie binding)."""
    return b64u(hmac.new(keys.cookie[0].secret, message.encode(), hashlib.sha256).digest())


def mac_matches(keys: Keyring, message: str, candidate: str) -> bool:
    """True if ``candidate`` is the MAC of ``message`` under any cookie key (rotation-safe)."""
    for key in keys.cookie:
        expected = b64u(hmac.new(key.secret, message.encode(), hashlib.sha256).digest())
        if equal(expected, candidate):
            return True
    return False
