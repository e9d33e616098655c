"""The upstream session: one sign-in at the provider serves several resources in one browser.

With several protected resources under one issuer (resource_servers.py), a user who connects an
MCP client to two of them would otherwise be sent to the provider twice within a minute. After a
sign-in at the provider completes (the callback, handlers/callback.py), the proxy keeps what it
learnt, the identity, the facts the access rules read and the provider's tokens, as an upstream
session, and gives the browser a cookie naming it. A later authorization in that browser, for any
resource, still shows that resource's own consent page (or honours a consent remembered for exactly
that resource); once approved, the session stands in for the provider's round trip: the access rules
are applied again, for that resource (``[access]`` then its own, ``resource_servers.decide_for``),
and only then is a code minted (spec/security.md 33).

spec/security.md 40 bounds it:

- **Bound to the browser.** The cookie carries 256 random bits (``__Host-``, ``HttpOnly``,
  ``SameSite=Lax`` on https, as every cookie of ours, cookies.py); it is read only at the approval
  of a consent that passed the browser checks of spec/security.md 31 (or a remembered one, 15), so a
  session is used only by the browser it was given to.
- **Bounded in time.** ``[lifetimes] upstream_session`` seconds from the sign-in (default one
  hour), never extended by use; the store's TTL and the record's own ``expires_at`` both end it.
  ``0`` turns sessions off. With one protected resource there are none: every authorization
  signs in at the provider, as before ``[[resources]]`` existed.
- **Stored hashed, sealed.** The store key is the SHA-256 of the cookie's secret; the record is
  sealed (AEAD) under a purpose naming that key, so a store dump yields no cookie, no provider token
  and no identity (spec/security.md 24).
- **Revocable.** Revoking a user's grant because the provider refused it, because the rules no
  longer admit the user, or by an operator (``oauthproxy grants revoke``) ends every session of that
  subject begun before (``end_sessions``): a marker per subject, read at each use. The user ends
  the session of their own browser at the sign-out page (``end_browser_session``,
  handlers/signout.py).

A grant made from a session gets its own sealed copy of the provider's tokens. A provider that
rotates refresh tokens lets only the first grant to refresh keep the chain; another grant's copy is
then refused upstream at its own refresh, and that grant is revoked (fail closed; the user signs in
again for that resource).
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from . import persistence
from .access import Facts
from .config import Context
from .cookies import SESSION, cookie_name, set_cookie
from .crypto import UnsealError, digest, new_secret, seal, unseal
from .effects import Handler
from .http import Request
from .upstream import UpstreamTokens, stored_tokens_json
from .upstream_identity import Established

__all__ = [
    "UpstreamSession",
    "browser_holds_session",
    "end_browser_session",
    "end_sessions",
    "open_session",
    "presented_session",
]

#: Store kinds: the sealed session by the hash of its cookie secret; the end marker per subject.
SESSION_KIND = "usession"
ENDED_KIND = "usession_end"
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@attrs.frozen(kw_only=True)
class UpstreamSession:
    """A sign-in at the provider, read back for this browser (never stored as such)."""

    #: SHA-256 of the cookie's secret: the store key, and what binds a transaction to it.
    key: str = attrs.field(repr=False)
    established: Established = attrs.field(repr=False)
    created_at: int
    expires_at: int

    @property
    def browser_hash(self) -> str:
        """What a transaction approved under this session stores as its browser binding: only
        the browser holding the cookie can present it (spec/security.md 12, 40)."""
        return digest("usession-binding|" + self.key)


def _enabled(ctx: Context) -> bool:
    """Sessions serve several resources: with one (the single-resource form) every authorization
    signs in at the provider, as it always has."""
    return ctx.config.lifetimes.upstream_session > 0 and len(ctx.config.resource_urls) > 1


def _cookie_secret(req: Request, ctx: Context) -> str | None:
    """The secret of the (first) session cookie the browser sends, if it has the shape we mint."""
    secret = req.cookie(cookie_name(SESSION, ctx.config.secure_cookies))
    return secret if secret is not None and _SECRET_RE.fullmatch(secret) else None


def _ended_key(subject: str) -> str:
    return digest("subject|" + subject)


def open_session(ctx: Context, established: Established) -> Handler[tuple[str, str] | None]:
    """Keep ``established`` for this browser; the ``Set-Cookie`` header naming it (``None`` when
    ``[lifetimes] upstream_session`` is 0)."""
    lifetime = ctx.config.lifetimes.upstream_session
    if not _enabled(ctx):
        return None
    secret = new_secret(ctx.random, 32)
    key = digest(secret)
    body = {
        "subject": established.subject,
        "claims": [list(pair) for pair in established.claims],
        "facts": attrs.asdict(established.facts),
        "tokens": json.loads(stored_tokens_json(established.tokens)),
        "created_at": ctx.now,
        "expires_at": ctx.now + lifetime,
    }
    sealed = seal(ctx.keys, ctx.random, json.dumps(body).encode(), "usession|" + key)
    yield from persistence.put_raw(SESSION_KIND, key, sealed.encode(), lifetime)
    return set_cookie(SESSION, secret, secure=ctx.config.secure_cookies, max_age=lifetime)


def presented_session(req: Request, ctx: Context) -> Handler[UpstreamSession | None]:
    """The live session this browser's cookie names, or ``None`` (no cookie, a malformed one, an
    unknown, damaged, expired or ended session, or sessions turned off)."""
    if not _enabled(ctx):
        return None
    secret = _cookie_secret(req, ctx)
    if secret is None:
        return None
    key = digest(secret)
    raw = yield from persistence.get_raw(SESSION_KIND, key)
    if raw is None:
        return None
    session = _decode(ctx, key, raw)
    if session is None or session.expires_at <= ctx.now:
        return None
    ended = yield from persistence.get_raw(ENDED_KIND, _ended_key(session.established.subject))
    if ended is not None and _int(ended) >= session.created_at:
        return None
    return session


def browser_holds_session(req: Request, ctx: Context) -> bool:
    """Whether sessions are on and this browser sends a well-formed session cookie (unread: the
    consent page offers the sign-out link on this alone)."""
    return _enabled(ctx) and _cookie_secret(req, ctx) is not None


#: Session cookies one sign-out deletes at most (each a store write): a browser holds one; more
#: come only from cookies of the same name set for other paths or, on http loopback, other ports.
MAX_SIGNOUT_COOKIES = 4


def end_browser_session(req: Request, ctx: Context) -> Handler[int]:
    """Delete the sessions this browser's cookies name, whatever their state (live, expired,
    ended, damaged); how many well-formed cookies it sent. Every value of the cookie's name
    counts, not the first only: a planted cookie of the same name for another path would
    otherwise be deleted in place of the real one, which the response then clears from the
    browser while its record lives on. Nothing is read first: a deleted key is gone for every
    instance sharing the store, and deleting an absent key is harmless."""
    values = req.cookie_values(cookie_name(SESSION, ctx.config.secure_cookies))
    named = [v for v in dict.fromkeys(values) if _SECRET_RE.fullmatch(v)]
    # Browsers send cookies with longer paths first (RFC 6265 §5.4): ours, set for Path=/, is
    # among the last, so those are the ones kept when there are too many.
    for secret in named[-MAX_SIGNOUT_COOKIES:]:
        yield from persistence.delete(SESSION_KIND, digest(secret))
    return len(named)


def end_sessions(ctx: Context, subject: str) -> Handler[None]:
    """Every upstream session of ``subject`` begun until now is refused from now on."""
    ttl = ctx.config.lifetimes.upstream_session + 60
    yield from persistence.put_raw(ENDED_KIND, _ended_key(subject), str(ctx.now).encode(), ttl)


def _int(raw: bytes) -> int:
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        # A damaged marker ends every session (damage can deny, never grant).
        return 2**62


def _decode(ctx: Context, key: str, raw: bytes) -> UpstreamSession | None:
    """The session sealed in ``raw``; ``None`` when it does not unseal or decode (damage can deny
    a sign-in, never grant one)."""
    try:
        body: dict[str, Any] = json.loads(unseal(ctx.keys, raw.decode("ascii"), "usession|" + key))
        established = Established(
            tokens=UpstreamTokens(**body["tokens"]),
            subject=body["subject"],
            claims=tuple((str(n), str(v)) for n, v in body["claims"]),
            facts=Facts(**body["facts"]),
        )
        return UpstreamSession(
            key=key,
            established=established,
            created_at=int(body["created_at"]),
            expires_at=int(body["expires_at"]),
        )
    except (UnsealError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
