"""The proxy's key material: three separate, rotatable key sets.

A single secret serving signing, encryption at rest and cookies cannot be rotated without ending
every session (spec/security.md, the incidents section); that is why there are three: signing keys
for access tokens (RFC 9068, published as a JWKS, RFC 7517), sealing keys for AEAD-encrypted
material at rest, and cookie keys for HMAC-bound cookies and CSRF tokens. Each set is ordered: the
first key is active for new material; the others stay valid for verifying and unsealing until
retired, so a rotation logs nobody out.

Key *generation* needs randomness and lives in the adapters (``oauthproxy keys``); the core only loads
keys from their JWK dictionaries.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

SIGNING_ALGS = {"EC": "ES256", "OKP": "Ed25519", "RSA": "RS256"}


class KeyError_(ValueError):
    """Key material is malformed. Messages name the problem, never the key bytes."""


def _tuple(items: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(items)


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@attrs.frozen(kw_only=True)
class SymmetricKey:
    kid: str
    secret: bytes = attrs.field(repr=False, eq=False)
    #: The AES-256-GCM cipher for this key (``crypto.seal``), built once instead of per call.
    aead: AESGCM = attrs.field(init=False, repr=False, eq=False)

    @secret.validator
    def _check(self, _a: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) != 32:
            raise KeyError_("symmetric keys are 256 bits")

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "aead", AESGCM(self.secret))


@attrs.frozen(kw_only=True)
class Keyring:
    """Signing, sealing and cookie keys; the first of each tuple is the active one."""

    signing: tuple[Any, ...] = attrs.field(converter=_tuple, repr=False)
    sealing: tuple[SymmetricKey, ...] = attrs.field(converter=_tuple)
    cookie: tuple[SymmetricKey, ...] = attrs.field(converter=_tuple)
    keyset: KeySet = attrs.field(init=False, repr=False, eq=False)
    algorithms: tuple[str, ...] = attrs.field(init=False)
    _seal_by_kid: dict[str, SymmetricKey] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.signing or not self.sealing or not self.cookie:
            raise KeyError_("a keyring needs at least one signing, sealing and cookie key")
        kids = [k.kid for k in self.signing]
        if len(set(kids)) != len(kids) or any(not k for k in kids):
            raise KeyError_("signing keys need distinct, non-empty kids")
        object.__setattr__(self, "keyset", KeySet(list(self.signing)))
        object.__setattr__(
            self, "algorithms", tuple(sorted({SIGNING_ALGS[k.key_type] for k in self.signing}))
        )
        object.__setattr__(self, "_seal_by_kid", {k.kid: k for k in self.sealing})

    @property
    def active_signing(self) -> Any:
        return self.signing[0]

    @property
    def active_signing_alg(self) -> str:
        return SIGNING_ALGS[self.signing[0].key_type]

    def sealing_key(self, kid: str) -> SymmetricKey | None:
        return self._seal_by_kid.get(kid)

    def public_jwks(self) -> dict[str, Any]:
        """RFC 7517 §5: the public halves of every signing key, active first."""
        keys = []
        for k in self.signing:
            d = dict(k.as_dict(private=False))
            d["use"] = "sig"
            d["alg"] = SIGNING_ALGS[k.key_type]
            keys.append(d)
        return {"keys": keys}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Keyring:
        """Load ``{"signing": [JWK...], "sealing": [{"kid","k"}...], "cookie": [...]}``."""
        try:
            signing = [_load_signing(jwk) for jwk in data["signing"]]
            sealing = [_load_symmetric(d) for d in data["sealing"]]
            cookie = [_load_symmetric(d) for d in data["cookie"]]
        except (KeyError, TypeError) as exc:
            raise KeyError_("keyring document is missing signing, sealing or cookie keys") from exc
        return cls(signing=signing, sealing=sealing, cookie=cookie)


def _load_signing(jwk: Mapping[str, Any]) -> Any:
    kty = jwk.get("kty")
    loaders: dict[str, Any] = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}
    if kty not in loaders:
        raise KeyError_("unsupported signing key type")
    if "kid" not in jwk:
        raise KeyError_("signing keys need a kid")
    try:
        key = loaders[kty].import_key(dict(jwk))
    except Exception as exc:
        raise KeyError_("malformed signing key") from exc
    if not key.is_private:
        raise KeyError_("signing keys must include the private part")
    if kty == "EC" and jwk.get("crv") != "P-256":
        raise KeyError_("EC signing keys must be P-256 (ES256)")
    return key


def _load_symmetric(d: Mapping[str, Any]) -> SymmetricKey:
    try:
        return SymmetricKey(kid=str(d["kid"]), secret=_b64(str(d["k"])))
    except (KeyError, ValueError) as exc:
        raise KeyError_("malformed symmetric key") from exc


def keyring_document(
    signing: Sequence[Mapping[str, Any]],
    sealing: Sequence[SymmetricKey],
    cookie: Sequence[SymmetricKey],
) -> dict[str, Any]:
    """The inverse of ``Keyring.from_dict`` (used by key management in the adapters)."""

    def sym(k: SymmetricKey) -> dict[str, str]:
        return {"kid": k.kid, "k": base64.urlsafe_b64encode(k.secret).rstrip(b"=").decode()}

    return {
        "signing": [dict(j) for j in signing],
        "sealing": [sym(k) for k in sealing],
        "cookie": [sym(k) for k in cookie],
    }
