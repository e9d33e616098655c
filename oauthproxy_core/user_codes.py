"""User codes of the device authorization grant: minting, reading back what a person typed, and the
keyed form the store holds (RFC 8628 §3.2, §5.1, §6.1; spec/security.md 24, 39).

A user code is read off one screen and typed on another, so it is short, and that makes it the one
secret of the proxy that can be guessed. What bounds the guessing:

- **entropy**: 8 characters from 20 consonants (no vowels, so no words; no digits, so nothing to
  confuse with letters): 20^8, about 2^34.6 values, of which at most a few thousand are live at once;
- **a short life**: the device authorization's ``expires_in`` (``[device] code_lifetime``);
- **one use**: the index record is taken (atomic get-and-delete) when the code is accepted, so a code
  that was typed once cannot be typed again, by its owner or by anyone else;
- **bounded attempts**: failed entries are counted per source and in total (``handlers/device.py``).

People make mistakes typing: case is ignored, and dashes and spaces are dropped, before the code is
compared. The store never sees the code: the index is keyed by an HMAC of it under the proxy's cookie
key (``crypto.mac``), since a plain SHA-256 of so small a space would be reversed by trying every
value; the device code itself has 256 bits and is keyed by its digest like every other code.
"""

from __future__ import annotations

import hashlib
import hmac

from .crypto import RandomSource, b64u, mac
from .keys import Keyring

#: RFC 8628 §6.1's example alphabet: 20 upper-case consonants.
ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
LENGTH = 8
#: Anything longer than this is refused before any work is done on it.
MAX_INPUT = 32
_ACCEPTED = frozenset(ALPHABET)
#: The largest multiple of the alphabet's size below 256: bytes at or above it are drawn again,
#: so every character is equally likely.
_CUTOFF = 256 - 256 % len(ALPHABET)


def new_user_code(random: RandomSource) -> str:
    """A fresh user code, normalized (``BCDFGHJK``); shown as ``display_user_code`` gives it."""
    out: list[str] = []
    while len(out) < LENGTH:
        for byte in random(LENGTH * 2):
            if byte < _CUTOFF and len(out) < LENGTH:
                out.append(ALPHABET[byte % len(ALPHABET)])
    return "".join(out)


def display_user_code(code: str) -> str:
    """``BCDF-GHJK``: two groups of four read more easily (RFC 8628 §6.1)."""
    return f"{code[:4]}-{code[4:]}"


def normalize_user_code(typed: str) -> str | None:
    """What the user typed, as a user code, or ``None`` when it cannot be one.

    Case-insensitive; dashes and white space anywhere are ignored. Nothing past ``MAX_INPUT``
    characters is looked at.
    """
    if len(typed) > MAX_INPUT:
        return None
    code = "".join(ch for ch in typed.upper() if ch not in "- \t")
    if len(code) != LENGTH or not set(code) <= _ACCEPTED:
        return None
    return code


def user_code_key(keys: Keyring, code: str) -> str:
    """The store key of a (normalized) user code under the active cookie key."""
    return mac(keys, "user-code|" + code)


def user_code_lookup_keys(keys: Keyring, code: str) -> tuple[str, ...]:
    """Every key the code may be stored under: one per cookie key still accepted, so a key rotation
    during a device authorization's few minutes does not lose it."""
    message = ("user-code|" + code).encode()
    return tuple(
        b64u(hmac.new(key.secret, message, hashlib.sha256).digest()) for key in keys.cookie
    )
