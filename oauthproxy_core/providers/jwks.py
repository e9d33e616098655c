"""The provider's JWK Set, cached in the store, refetched once when its keys rotate.

The JWK Set is fetched with the ``HttpCall`` effect and kept as a record of kind ``jwks`` keyed by
the SHA-256 of the ``jwks_uri`` (store keys are digests, as everywhere), for ``profile.jwks_cache_ttl``
seconds. An ID token whose ``kid`` is not in the cached set causes exactly one refetch (the provider
rotated its keys: OIDC Core §10.1.1, "the RP ... re-retrieves the keys when it sees an unfamiliar
kid"); if the fresh set does not know it either, the token is rejected. A set fetched in this very
call is never refetched, so a forged ``kid`` costs at most one extra request per callback.
"""

from __future__ import annotations

import json
from typing import Any

from .. import persistence
from ..crypto import digest
from ..effects import Handler, HttpCall
from ..upstream import UpstreamProfile
from .id_token import (
    UnknownSigningKeyError,
    build_jwks_request,
    jwks_document,
    parse_jwks_response,
    verify_id_token,
)

__all__ = ["JWKS_KIND", "current_jwks", "verified_id_token_claims"]

JWKS_KIND = "jwks"


def current_jwks(
    profile: UpstreamProfile, *, refresh: bool = False
) -> Handler[tuple[dict[str, Any], bool]]:
    """``(jwk_set, from_cache)``: the cached set unless ``refresh``, else fetched and cached."""
    assert profile.jwks_uri is not None
    key = digest(profile.jwks_uri)
    if not refresh:
        raw = yield from persistence.get_raw(JWKS_KIND, key)
        cached = None if raw is None else jwks_document(raw)
        if cached is not None:
            return cached, True
    result = yield HttpCall(request=build_jwks_request(profile))
    document = parse_jwks_response(result)
    yield from persistence.put_raw(
        JWKS_KIND, key, json.dumps(document).encode(), profile.jwks_cache_ttl
    )
    return document, False


def verified_id_token_claims(
    profile: UpstreamProfile, id_token: str, *, now: int, nonce: str | None
) -> Handler[dict[str, Any]]:
    """``verify_id_token`` against the cached JWK Set, refetching it once on an unknown key."""
    document, from_cache = yield from current_jwks(profile)
    try:
        return verify_id_token(profile, id_token, document, now=now, nonce=nonce)
    except UnknownSigningKeyError:
        if not from_cache:
            raise
    document, _ = yield from current_jwks(profile, refresh=True)
    return verify_id_token(profile, id_token, document, now=now, nonce=nonce)
