"""The proxy's own consent page (GET renders, POST decides) and the start of the upstream leg.

This page is what stops a DCR proxy with one static upstream client from becoming a confused deputy
(MCP Security Best Practices; FastMCP CVE-2026-27124). spec/security.md 11, 15, 16, 17, 31; the browser
binding itself is ``browser_binding.py``:

- CSRF, bound to the browser (31): the form token is an HMAC over this browser's secret (from its
  CSRF cookie, minted here and verified by its tag) and the transaction id, so repeated renders of
  one transaction in one browser show the same token (17, idempotent), several pages open in one
  browser each work, and nothing derivable from the transaction id alone forges it. Rendering writes
  nothing to the store.
- A POST is decided only when the browser says it came from the proxy's own origin (``Sec-Fetch-Site``
  ``same-origin`` or ``none``, else an ``Origin`` equal to the issuer's); anything else is a 403 page
  before the form is even read.
- Approval creates the upstream ``state`` (256 bits) and the proxy's own upstream PKCE verifier at that
  moment, and binds the transaction to this browser with a fresh cookie set in the same response.
- Denial never contacts the upstream and answers ``access_denied`` to the validated redirect URI.
- A POST is answered with 303 (RFC 9110 §15.4.4) so a reload does not re-submit.
- The user may untick the optional scopes of a request (every one but the resource's baseline and
  ``offline_access``, ``scopes.fixed_scopes``): the transaction then carries the granted subset,
  which is what the token gets and what ``remember`` keys on (RFC 6749 §3.3).
- Remembered consent (``consent.mode = "remember"``) covers exactly (client, redirect URI, scopes,
  resource) for one browser secret, and is honoured only on navigations that are not cross-site
  (``Sec-Fetch-Site``); on an http loopback issuer only on ``same-origin`` or ``none`` ones, since
  every other port of the host is same-site there and sees the browser's cookies.
- With several resources (spec/security.md 40) the page names the resource's server, and an
  approval (given here, or remembered) from a browser holding a live upstream session completes
  from that session instead of the provider (``start_upstream``, upstream_session.py); the page of
  a browser that sends a session cookie says so and links to the sign-out page (signout.py).
"""

from __future__ import annotations

import re

from .. import persistence
from ..browser_binding import (
    browser_secret,
    form_token,
    form_token_matches,
    from_own_origin,
    mint_browser_secret,
    new_binding,
)
from ..cimd import all_loopback_redirects, document_host
from ..client_lookup import load_client
from ..config import Context
from ..crypto import digest, new_secret, seal
from ..effects import Handler
from ..errors import (
    AccessDeniedError,
    InvalidRequestError,
    PageError,
    UnknownClientError,
    UntrustedFormError,
)
from ..http import Request, Response, form_body, parse_params
from ..pages import consent_page
from ..pkce import s256
from ..records import ConsentDecision, Transaction
from ..redirect_uris import redirect_host
from ..redirects import error_redirect
from ..scopes import fixed_scopes, granted_scopes
from ..states import EXPIRY_NOTICE, Absorbed, EventData, TxEvent, TxState, step
from ..upstream import build_authorize_url
from ..upstream_session import browser_holds_session, presented_session
from . import device

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
_SAFE_FETCH_SITES = frozenset({"none", "same-origin", "same-site"})
_LOOPBACK_SAFE_FETCH_SITES = frozenset({"none", "same-origin"})
#: Where a device sign-in's answer goes: not to a redirect URI, to the device that polls.
_DEVICE_HOST = "your device (it receives the answer when it next asks)"
_NOT_FROM_HERE = (
    "This form was not sent from this sign-in page. Return to the application and start again."
)


def _browser_secret(req: Request, ctx: Context) -> str | None:
    return browser_secret(req, ctx.config.secure_cookies, ctx.keys)


def _consent_key(secret: str, tx: Transaction, scopes: tuple[str, ...] | None = None) -> str:
    granted = tx.scopes if scopes is None else scopes
    return digest(
        "\x1f".join((secret, tx.client_id, tx.redirect_uri, " ".join(granted), tx.resource))
    )


def _pending(txn: str | None) -> Handler[Transaction]:
    if not txn or not _TOKEN_RE.fullmatch(txn):
        raise PageError("This authorization request is unknown or has expired.")
    tx = yield from persistence.load("tx", txn, Transaction)
    if tx is None:
        raise PageError("This authorization request is unknown or has expired.")
    if tx.state != TxState.pkce_bound.value:
        raise PageError("This authorization request was already answered.")
    return tx


def consent_get(req: Request, ctx: Context) -> Handler[Response]:
    tx = yield from _pending(parse_params(req.query).get("txn"))
    # Rendering writes nothing, except the fact that the transaction has expired (audited).
    preview = step(tx, TxEvent.consent_approved, EventData(now=ctx.now))
    if preview.event is TxEvent.deadline_passed:
        yield from persistence.commit("tx", tx.id, tx, preview, 60)
    if preview.state != TxState.upstream_pending.value:
        raise PageError("This authorization request has expired.")
    client = yield from load_client(tx.client_id, ctx)
    if client is None:
        yield from end_for_removed_client(ctx, tx)
        raise UnknownClientError("This application is no longer registered.")
    # A CIMD client's identity is its document URL: the host is what the fetch verified. With only
    # localhost redirect URIs, any local program can use a well-known client's document
    # (localhost impersonation, draft-ietf-oauth-client-id-metadata-document §6): say so.
    cimd = client.source == "cimd"
    # A browser that already holds a secret minted here keeps it: every consent page it has open
    # stays valid. Anything else (no cookie, or one this proxy did not mint) gets a new secret.
    secret = _browser_secret(req, ctx)
    cookies: tuple[tuple[str, str], ...] = ()
    if secret is None:
        secret, cookie = mint_browser_secret(
            ctx.keys,
            ctx.random,
            secure=ctx.config.secure_cookies,
            max_age=ctx.config.lifetimes.browser_cookie,
        )
        cookies = (cookie,)
    server = ctx.config.resource_server(tx.resource)
    return consent_page(
        # The server being authorized, by name (spec/security.md 40).
        service_name=server.name if server is not None else ctx.config.service_name,
        client_name=client.client_name,
        client_id=client.client_id,
        redirect_host=_DEVICE_HOST if tx.device_id else redirect_host(tx.redirect_uri),
        scopes=tx.scopes,
        resource=tx.resource,
        upstream_name=ctx.config.upstream.name,
        transaction_id=tx.id,
        csrf_token=form_token(ctx.keys, secret, tx.id),
        action=ctx.config.issuer + "/consent",
        extra_headers=cookies,
        verified_host=document_host(client.client_id) if cimd else None,
        localhost_warning=cimd and all_loopback_redirects(client.redirect_uris),
        theme=ctx.config.consent_theme,
        fixed_scopes=fixed_scopes(tx.scopes, ctx.config.baseline_scopes(tx.resource)),
        device_sign_in=tx.device_id is not None,
        signout_url=ctx.config.issuer + "/signout" if browser_holds_session(req, ctx) else None,
    )


def consent_post(req: Request, ctx: Context) -> Handler[Response]:
    # spec/security.md 31: only the proxy's own page decides. Checked before anything is read, so a
    # cross-site or foreign-origin POST costs no store access and changes nothing.
    if not from_own_origin(req, ctx.config.issuer_origin):
        raise UntrustedFormError(_NOT_FROM_HERE)
    form = form_body(req)
    tx = yield from _pending(form.get("txn"))
    secret = _browser_secret(req, ctx)
    if secret is None or not form_token_matches(ctx.keys, secret, tx.id, form.get("csrf", "")):
        # Nothing is written: a forged POST leaves the transaction as it was (spec/security.md 27).
        raise UntrustedFormError("The form could not be verified. Reload the page.")
    decision = form.get("decision")
    if decision == "deny":
        return (yield from _deny(ctx, tx))
    if decision != "approve":
        raise InvalidRequestError("decision must be approve or deny")
    granted = _granted(form, tx, ctx)
    # A device sign-in is never remembered: each one asks (RFC 8628 §5.4, handlers/device.py).
    if ctx.config.consent_mode == "remember" and tx.device_id is None:
        # The granted set is what is remembered: a later request for exactly it is approved, one
        # for more (what the user declined) asks again (spec/security.md 15).
        decision_rec = ConsentDecision(
            client_id=tx.client_id,
            redirect_uri=tx.redirect_uri,
            scopes=granted,
            resource=tx.resource,
            decided_at=ctx.now,
            expires_at=ctx.now + ctx.config.lifetimes.consent_memory,
        )
        yield from persistence.put(
            "consent",
            _consent_key(secret, tx, granted),
            decision_rec,
            ctx.config.lifetimes.consent_memory,
        )
    return (yield from start_upstream(ctx, tx, status=303, scopes=granted, req=req))


def _granted(form: dict[str, str], tx: Transaction, ctx: Context) -> tuple[str, ...]:
    """The scopes the user left ticked. A form without the choice (an older page, a template that
    hides it) grants what was asked, as before the choice existed; nothing outside the request is
    ever granted, whatever the form says."""
    if form.get("scope_choice") != "1":
        return tx.scopes
    kept = {i for i in range(len(tx.scopes)) if form.get(f"scope_{i}") == "1"}
    baseline = ctx.config.baseline_scopes(tx.resource)
    return granted_scopes(tx.scopes, fixed_scopes(tx.scopes, baseline), kept)


def _deny(ctx: Context, tx: Transaction) -> Handler[Response]:
    denied = step(tx, TxEvent.consent_denied, EventData(now=ctx.now))
    updated = yield from persistence.commit("tx", tx.id, tx, denied, 60)
    if updated is None or denied.state != TxState.denied.value:
        raise PageError("This authorization request was already answered.")
    yield from device.end_sign_in(ctx, tx)
    return error_redirect(
        tx.redirect_uri,
        AccessDeniedError("the user denied the request"),
        client_state=tx.client_state,
        issuer=ctx.config.issuer,
        status=303,
    )


def remembered_consent(req: Request, ctx: Context, tx: Transaction) -> Handler[bool]:
    """True when this exact request was approved before in this browser (spec/security.md 15)."""
    if ctx.config.consent_mode != "remember":
        return False
    safe = _SAFE_FETCH_SITES if ctx.config.secure_cookies else _LOOPBACK_SAFE_FETCH_SITES
    if req.header("sec-fetch-site") not in safe:
        return False
    secret = _browser_secret(req, ctx)
    if secret is None:
        return False
    rec = yield from persistence.load("consent", _consent_key(secret, tx), ConsentDecision)
    remembered = (
        rec is not None
        and rec.client_id == tx.client_id
        and rec.redirect_uri == tx.redirect_uri
        and rec.scopes == tx.scopes
        and rec.resource == tx.resource
        and rec.expires_at > ctx.now
    )
    return remembered


def start_upstream(
    ctx: Context,
    tx: Transaction,
    *,
    status: int = 302,
    scopes: tuple[str, ...] | None = None,
    req: Request | None = None,
) -> Handler[Response]:
    """Approve ``tx``: bind it to this browser, mint the upstream state and PKCE, redirect upstream.
    ``scopes``: what the user granted, when it is less than what was asked for.

    The binding is minted here, never taken from the request (spec/security.md 11, 31): a cookie another
    page planted is not adopted, and every approval rotates it.

    ``req``: the approving request; when its browser holds a live upstream session
    (upstream_session.py), that sign-in completes the transaction without the provider
    (spec/security.md 40)."""
    if req is not None:
        session = yield from presented_session(req, ctx)
        if session is not None:
            # Imported here: the callback module imports this one.
            from .callback import issue_from_session  # noqa: PLC0415

            return (yield from issue_from_session(ctx, tx, session, status=status, scopes=scopes))
    narrowed = {} if scopes is None or scopes == tx.scopes else {"scopes": scopes}
    upstream_state = new_secret(ctx.random, 32)
    verifier = new_secret(ctx.random, 32)
    binding, cookie = new_binding(
        ctx.random,
        upstream_state,
        secure=ctx.config.secure_cookies,
        max_age=max(1, tx.expires_at - ctx.now),
    )
    approved = step(
        tx,
        TxEvent.consent_approved,
        EventData(now=ctx.now),
        browser_hash=digest(binding),
        upstream_state_hash=digest(upstream_state),
        upstream_verifier_sealed=seal(ctx.keys, ctx.random, verifier.encode(), "verifier|" + tx.id),
        **narrowed,
    )
    ttl = tx.expires_at - ctx.now + EXPIRY_NOTICE
    if approved.state != TxState.upstream_pending.value:
        yield from persistence.commit("tx", tx.id, tx, approved, 60)
        raise PageError("This authorization request has expired.")
    updated = yield from persistence.commit("tx", tx.id, tx, approved, ttl)
    if updated is None:
        raise PageError("This authorization request was already answered.")
    yield from persistence.put_raw("ustate", digest(upstream_state), tx.id.encode(), ttl)
    profile = ctx.config.upstream
    location = build_authorize_url(
        profile,
        redirect_uri=ctx.config.callback_url,
        state=upstream_state,
        code_challenge=s256(verifier) if profile.use_pkce else None,
        resource=tx.resource,
    )
    return Response(
        status=status,
        headers=(
            ("Location", location),
            ("Cache-Control", "no-store"),
            cookie,
            ("Referrer-Policy", "no-referrer"),
        ),
    )


def end_for_removed_client(ctx: Context, tx: Transaction) -> Handler[None]:
    """RFC 7592 §2.3: an authorization in flight dies with its client (``client_removed``)."""
    try:
        removed = step(tx, TxEvent.client_removed, EventData(now=ctx.now))
    except Absorbed:
        return
    yield from persistence.commit("tx", tx.id, tx, removed, 60)
