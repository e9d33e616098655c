"""The proxy's own consent page (GET renders, POST decides) and the start of the upstream leg.

This page is what stops a DCR proxy with one static upstream client from becoming a confused deputy
(MCP Security Best Practices; FastMCP CVE-2026-27124). SECURITY.md 11, 15, 16, 17:

- CSRF: double-submit. The token is an HMAC of the transaction id under the cookie key, so repeated
  renders of one transaction show the same token (idempotent) and no state is written to render it.
- Approval creates the upstream ``state`` (256 bits) and the proxy's own upstream PKCE verifier at that
  moment, and binds the transaction to this browser with a cookie set in the same response.
- Denial never contacts the upstream and answers ``access_denied`` to the validated redirect URI.
- A POST is answered with 303 (RFC 9110 §15.4.4) so a reload does not re-submit.
- Remembered consent (``consent.mode = "remember"``) covers exactly (client, redirect URI, scopes,
  resource) for one browser, and is honoured only on navigations that are not cross-site
  (``Sec-Fetch-Site``).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

from .. import persistence
from ..cimd import all_loopback_redirects, document_host
from ..client_lookup import load_client
from ..config import Context
from ..cookies import BROWSER, CSRF, cookie_name, set_cookie
from ..crypto import digest, mac, mac_matches, new_secret, seal
from ..errors import AccessDeniedError, InvalidRequestError
from ..http import Request, Response, form_body, parse_params
from ..pages import consent_page, error_page
from ..pkce import s256
from ..records import ConsentDecision, Transaction
from ..redirect_uris import redirect_host
from ..redirects import error_redirect
from ..states import EXPIRY_NOTICE, Absorbed, EventData, TxEvent, TxState, step
from ..upstream import build_authorize_url

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
_SAFE_FETCH_SITES = frozenset({"none", "same-origin", "same-site"})


def _csrf_message(txn: str) -> str:
    return "csrf|" + txn


def browser_id(req: Request, ctx: Context) -> str | None:
    value = req.cookie(cookie_name(BROWSER, ctx.config.secure_cookies))
    if value is None or not _TOKEN_RE.fullmatch(value):
        return None
    return value


def _consent_key(browser: str, tx: Transaction) -> str:
    return digest(
        "\x1f".join((browser, tx.client_id, tx.redirect_uri, " ".join(tx.scopes), tx.resource))
    )


def _pending(txn: str | None) -> Generator[Any, Any, Transaction | Response]:
    if not txn or not _TOKEN_RE.fullmatch(txn):
        return error_page(
            400, "invalid_request", "This authorization request is unknown or has expired."
        )
    tx = yield from persistence.load("tx", txn, Transaction)
    if tx is None:
        return error_page(
            400, "invalid_request", "This authorization request is unknown or has expired."
        )
    if tx.state != TxState.pkce_bound.value:
        return error_page(
            400, "invalid_request", "This authorization request was already answered."
        )
    return tx


def consent_get(req: Request, ctx: Context) -> Generator[Any, Any, Response]:
    found = yield from _pending(parse_params(req.query).get("txn"))
    if isinstance(found, Response):
        return found
    tx = found
    # Rendering writes nothing, except the fact that the transaction has expired (audited).
    preview = step(tx, TxEvent.consent_approved, EventData(now=ctx.now))
    if preview.event is TxEvent.deadline_passed:
        yield from persistence.commit("tx", tx.id, tx, preview, 60)
    if preview.state != TxState.upstream_pending.value:
        return error_page(400, "invalid_request", "This authorization request has expired.")
    client = yield from load_client(tx.client_id, ctx)
    if client is None:
        yield from end_for_removed_client(ctx, tx)
        return error_page(400, "invalid_client", "This application is no longer registered.")
    # A CIMD client's identity is its document URL: the host is what the fetch verified. With only
    # localhost redirect URIs, any local program can use a well-known client's document
    # (localhost impersonation, draft-ietf-oauth-client-id-metadata-document §6): say so.
    cimd = client.source == "cimd"
    token = mac(ctx.keys, _csrf_message(tx.id))
    cookie = set_cookie(
        CSRF, token, secure=ctx.config.secure_cookies, max_age=ctx.config.lifetimes.transaction
    )
    return consent_page(
        service_name=ctx.config.service_name,
        client_name=client.client_name,
        client_id=client.client_id,
        redirect_host=redirect_host(tx.redirect_uri),
        scopes=tx.scopes,
        resource=tx.resource,
        upstream_name=ctx.config.upstream.name,
        transaction_id=tx.id,
        csrf_token=token,
        action=ctx.config.issuer + "/consent",
        extra_headers=(cookie,),
        verified_host=document_host(client.client_id) if cimd else None,
        localhost_warning=cimd and all_loopback_redirects(client.redirect_uris),
        theme=ctx.config.consent_theme,
    )


def consent_post(req: Request, ctx: Context) -> Generator[Any, Any, Response]:
    form = form_body(req)
    found = yield from _pending(form.get("txn"))
    if isinstance(found, Response):
        return found
    tx = found
    submitted = form.get("csrf", "")
    cookie = req.cookie(cookie_name(CSRF, ctx.config.secure_cookies)) or ""
    if not (
        submitted and cookie == submitted and mac_matches(ctx.keys, _csrf_message(tx.id), submitted)
    ):
        # Nothing is written: a forged POST leaves the transaction as it was (SECURITY.md 27).
        return error_page(403, "access_denied", "The form could not be verified. Reload the page.")
    decision = form.get("decision")
    if decision == "deny":
        return (yield from _deny(ctx, tx))
    if decision != "approve":
        raise InvalidRequestError("decision must be approve or deny")
    # The binding cookie is (re)issued now, at approval (SECURITY.md 11); an existing one is reused so
    # that several flows in one browser, and remembered consent, keep working.
    browser = browser_id(req, ctx) or new_secret(ctx.random, 16)
    if ctx.config.consent_mode == "remember":
        decision_rec = ConsentDecision(
            client_id=tx.client_id,
            redirect_uri=tx.redirect_uri,
            scopes=tx.scopes,
            resource=tx.resource,
            decided_at=ctx.now,
            expires_at=ctx.now + ctx.config.lifetimes.consent_memory,
        )
        yield from persistence.put(
            "consent",
            _consent_key(browser, tx),
            decision_rec,
            ctx.config.lifetimes.consent_memory,
        )
    return (yield from start_upstream(ctx, tx, browser, status=303))


def _deny(ctx: Context, tx: Transaction) -> Generator[Any, Any, Response]:
    denied = step(tx, TxEvent.consent_denied, EventData(now=ctx.now))
    updated = yield from persistence.commit("tx", tx.id, tx, denied, 60)
    if updated is None or denied.state != TxState.denied.value:
        return error_page(
            400, "invalid_request", "This authorization request was already answered."
        )
    return error_redirect(
        tx.redirect_uri,
        AccessDeniedError("the user denied the request"),
        client_state=tx.client_state,
        issuer=ctx.config.issuer,
        status=303,
    )


def remembered_consent(
    req: Request, ctx: Context, tx: Transaction
) -> Generator[Any, Any, str | None]:
    """The browser id when this exact request was approved before in this browser, else ``None``."""
    if ctx.config.consent_mode != "remember":
        return None
    if req.header("sec-fetch-site") not in _SAFE_FETCH_SITES:
        return None
    browser = browser_id(req, ctx)
    if browser is None:
        return None
    rec = yield from persistence.load("consent", _consent_key(browser, tx), ConsentDecision)
    remembered = (
        rec is not None
        and rec.client_id == tx.client_id
        and rec.redirect_uri == tx.redirect_uri
        and rec.scopes == tx.scopes
        and rec.resource == tx.resource
        and rec.expires_at > ctx.now
    )
    return browser if remembered else None


def start_upstream(
    ctx: Context, tx: Transaction, browser: str, *, status: int = 302
) -> Generator[Any, Any, Response]:
    """Approve ``tx``: bind it to this browser, mint the upstream state and PKCE, redirect upstream."""
    upstream_state = new_secret(ctx.random, 32)
    verifier = new_secret(ctx.random, 32)
    approved = step(
        tx,
        TxEvent.consent_approved,
        EventData(now=ctx.now),
        browser_hash=digest(browser),
        upstream_state_hash=digest(upstream_state),
        upstream_verifier_sealed=seal(ctx.keys, ctx.random, verifier.encode(), "verifier|" + tx.id),
    )
    ttl = tx.expires_at - ctx.now + EXPIRY_NOTICE
    if approved.state != TxState.upstream_pending.value:
        yield from persistence.commit("tx", tx.id, tx, approved, 60)
        return error_page(400, "invalid_request", "This authorization request has expired.")
    updated = yield from persistence.commit("tx", tx.id, tx, approved, ttl)
    if updated is None:
        return error_page(
            400, "invalid_request", "This authorization request was already answered."
        )
    yield from persistence.put_raw("ustate", digest(upstream_state), tx.id.encode(), ttl)
    profile = ctx.config.upstream
    location = build_authorize_url(
        profile,
        redirect_uri=ctx.config.callback_url,
        state=upstream_state,
        code_challenge=s256(verifier) if profile.use_pkce else None,
        resource=tx.resource,
    )
    cookie = set_cookie(
        BROWSER,
        browser,
        secure=ctx.config.secure_cookies,
        max_age=ctx.config.lifetimes.browser_cookie,
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


def end_for_removed_client(ctx: Context, tx: Transaction) -> Generator[Any, Any, None]:
    """RFC 7592 §2.3: an authorization in flight dies with its client (``client_removed``)."""
    try:
        removed = step(tx, TxEvent.client_removed, EventData(now=ctx.now))
    except Absorbed:
        return
    yield from persistence.commit("tx", tx.id, tx, removed, 60)
