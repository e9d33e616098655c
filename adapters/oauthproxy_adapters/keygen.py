"""Key generation for the proxy's keyring (the core only loads keys; randomness lives here).

A keyring document is JSON: ``{"signing": [JWK...], "sealing": [{"kid","k"}], "cookie": [...]}``,
active key first in each list. ``rotate`` prepends a fresh key and keeps the old ones for
verification and unsealing until ``retire`` drops them (spec/security.md: rotation logs nobody out).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc.jwk import ECKey

from oauthproxy_core.keys import Keyring, SymmetricKey, keyring_document


def _kid(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(4)}"


def new_signing_jwk() -> dict[str, Any]:
    key = ECKey.generate_key("P-256", parameters={"kid": _kid("sig")}, private=True)
    return dict(key.as_dict(private=True))


def new_symmetric(prefix: str) -> SymmetricKey:
    return SymmetricKey(kid=_kid(prefix), secret=secrets.token_bytes(32))


def new_keyring_document() -> dict[str, Any]:
    return keyring_document([new_signing_jwk()], [new_symmetric("seal")], [new_symmetric("cookie")])


def new_keyring() -> Keyring:
    return Keyring.from_dict(new_keyring_document())


def rotate(document: dict[str, Any], which: str = "all") -> dict[str, Any]:
    """Prepend a new active key to ``which`` (signing, sealing, cookie or all)."""
    doc = {k: list(v) for k, v in document.items()}
    fresh = new_keyring_document()
    for name in ("signing", "sealing", "cookie"):
        if which in (name, "all"):
            doc[name] = fresh[name] + doc.get(name, [])
    Keyring.from_dict(doc)  # validate
    return doc


def retire(document: dict[str, Any], keep: int = 2) -> dict[str, Any]:
    """Keep only the ``keep`` newest keys of each kind."""
    doc = {k: list(v)[:keep] for k, v in document.items()}
    Keyring.from_dict(doc)
    return doc
