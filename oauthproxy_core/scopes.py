"""Scope parsing and policy (RFC 6749 §3.3, as carried into OAuth 2.1 §1.4.1).

``scope = scope-token *( SP scope-token )`` and ``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``.
Refresh never widens scopes (spec/security.md 19): ``is_subset`` is the check the refresh path uses.
What a protected resource advertises (its metadata, its challenges) never lists ``offline_access``
(``without_offline_access``; MCP 2026-07-28, SEP-2207). On the consent page the user may decline the
optional scopes of a request (``fixed_scopes``, ``granted_scopes``): the granted set is a subset of
what was asked for, never more (RFC 6749 §3.3: "The authorization server MAY fully or partially
ignore the scope requested by the client").
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence

from .errors import InvalidScopeError

__all__ = [
    "MAX_SCOPE_TOKENS",
    "MAX_SCOPE_TOKEN_LENGTH",
    "OFFLINE_ACCESS",
    "format_scope",
    "is_subset",
    "parse_scope",
    "fixed_scopes",
    "granted_scopes",
    "resolve_scopes",
    "without_offline_access",
]

MAX_SCOPE_TOKENS = 64
MAX_SCOPE_TOKEN_LENGTH = 128
#: Asks for a refresh token (OpenID Connect Core §11), not for access to anything.
OFFLINE_ACCESS = "offline_access"

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def parse_scope(value: str | None) -> tuple[str, ...]:
    """Split a ``scope`` parameter into distinct tokens, first occurrence first.

    Lenient on runs of spaces (some clients join with two), strict on everything else: a tab,
    newline, ``"`` or ``\\`` is not a separator and not part of a scope-token (RFC 6749 §3.3).
    None and "" mean no scope was requested.
    """
    if value is None:
        return ()
    if not isinstance(value, str):
        raise InvalidScopeError("scope must be a string")
    tokens = [token for token in value.split(" ") if token]
    # Bound before doing any work per token (spec/security.md 28).
    if len(tokens) > MAX_SCOPE_TOKENS:
        raise InvalidScopeError("too many scopes")
    seen: dict[str, None] = {}
    for token in tokens:
        if len(token) > MAX_SCOPE_TOKEN_LENGTH:
            raise InvalidScopeError("scope token is too long")
        if not _SCOPE_TOKEN.fullmatch(token):
            raise InvalidScopeError("scope contains invalid characters")
        seen.setdefault(token, None)
    return tuple(seen)


def format_scope(scopes: Sequence[str]) -> str:
    """RFC 6749 §3.3: the space-delimited form for responses."""
    return " ".join(scopes)


def resolve_scopes(
    requested: tuple[str, ...],
    *,
    supported: Sequence[str],
    default: Sequence[str],
    client_allowed: Sequence[str] | None,
) -> tuple[str, ...]:
    """Decide the scopes of a grant.

    RFC 6749 §3.3: with no scope requested the server "MUST either process the request using a
    pre-defined default value or fail": we use ``default``, narrowed to what the client may have.
    A requested scope the server does not support, or the client did not register, is an error
    rather than silently dropped, so the consent page never shows less than what was asked.
    """
    if not requested:
        if client_allowed is None:
            return tuple(dict.fromkeys(default))
        allowed = set(client_allowed)
        return tuple(scope for scope in dict.fromkeys(default) if scope in allowed)
    supported_set = set(supported)
    allowed_set = None if client_allowed is None else set(client_allowed)
    for scope in requested:
        if scope not in supported_set:
            raise InvalidScopeError("scope is not supported")
        if allowed_set is not None and scope not in allowed_set:
            raise InvalidScopeError("scope is not allowed for this client")
    return tuple(dict.fromkeys(requested))


def is_subset(a: Sequence[str], b: Sequence[str]) -> bool:
    """True if every scope of ``a`` is in ``b`` (RFC 6749 §6: a refresh may only narrow)."""
    return set(a) <= set(b)


def without_offline_access(scopes: Sequence[str]) -> tuple[str, ...]:
    """``scopes`` as a protected resource advertises them: without ``offline_access``, which asks
    for a refresh token rather than for access, and which MCP clients add by themselves when the
    authorization server lists it (MCP 2026-07-28, SEP-2207). The authorization server's metadata
    keeps it in its ``scopes_supported``: there it is the catalogue."""
    return tuple(s for s in scopes if s != OFFLINE_ACCESS)


def fixed_scopes(requested: Sequence[str], baseline: Sequence[str]) -> tuple[str, ...]:
    """The scopes of ``requested`` the user cannot decline on the consent page: the resource's
    baseline (``default_scopes``, what its challenges ask for) and ``offline_access`` (which the
    proxy does not need to grant a refresh token, so declining it would change nothing)."""
    keep = {*baseline, OFFLINE_ACCESS}
    return tuple(s for s in requested if s in keep)


def granted_scopes(
    requested: Sequence[str], fixed: Container[str], kept: Container[int]
) -> tuple[str, ...]:
    """What the user granted: every fixed scope, and each optional one whose position in
    ``requested`` is in ``kept`` (its checkbox stayed ticked). Always a subset of ``requested``,
    in its order."""
    return tuple(s for i, s in enumerate(requested) if s in fixed or i in kept)
