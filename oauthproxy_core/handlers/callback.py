"""The upstream provider's redirect back to the proxy (the fixed ``<issuer>/auth/callback``).

RFC 6749 §4.1.2 from the proxy's side as a client, with RFC 9207 §2.4 (``iss`` checked against the
upstream's issuer, spec/security.md 14), RFC 7636 (the proxy's own verifier, spec/security.md 7) and the
browser binding of spec/security.md 12 and 13: the upstream ``state`` is taken atomically from the store
(a second callback finds nothing), and the transaction advances only when the cookie set at consent is
presented by this browser. Only then is the upstream code redeemed and the proxy's own code issued.

The upstream code is redeemed only at ``ctx.config.upstream.token_url``: the profile is fixed per
proxy, so nothing in the callback can steer the code to another token endpoint (RFC 9700 §4.4).
The identity comes from the profile's ``identity_source``: the UserInfo endpoint, the ID token
(verified against the provider's cached JWK Set, with the nonce derived from the upstream state:
``upstream.nonce_for_state``), or both (OIDC Core §5.3.2: UserInfo's ``sub`` must equal the ID
token's). The proxy's subject is ``<provider>:<upstream user id>``: that is the identity; the other
claims are display data, and an ``email`` is among them only when the provider vouched for it
(spec/security.md 32: ``email_verified`` / ``xms_edov`` in the same document, or GitHub's verified primary
address from ``GET /user/emails``, asked only when the token was granted ``user:email``).
"""

from __future__ import annotations

from .. import persistence
from ..access import AccessPolicy, decide
from ..browser_binding import binding_cookie, presented_binding
from ..client_lookup import load_client
from ..config import Context
from ..cookies import clear_cookie
from ..crypto import UnsealError, digest, new_secret, seal, unseal
from ..domain_events import AccessDecided
from ..effects import Emit, Handler, HttpCall
from ..errors import (
    AccessDeniedError,
    OAuthError,
    PageError,
    ServerError,
    SignInRefusedError,
    TemporarilyUnavailableError,
    UnknownClientError,
)
from ..http import Request, Response, parse_params
from ..pages import refusal_page
from ..records import Transaction
from ..redirect_uris import match_redirect_uri
from ..redirects import authorization_redirect, error_redirect
from ..resource_servers import decide_for
from ..states import EXPIRY_NOTICE, Absorbed, EventData, Step, TxEvent, TxState, step
from ..upstream import (
    UpstreamUnavailableError,
    build_token_request,
    check_callback_issuer,
    nonce_for_state,
    parse_token_response,
    stored_tokens_json,
)
from ..upstream_identity import Established, establish
from ..upstream_session import UpstreamSession, open_session
from . import device
from .consent import end_for_removed_client

_UNKNOWN = "This sign-in is unknown, was already completed, or has expired."


def callback_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    params = parse_params(req.query)
    upstream_state = params.get("state")
    if not upstream_state:
        raise PageError(_UNKNOWN)
    secure = ctx.config.secure_cookies
    cookie = binding_cookie(upstream_state)
    binding = presented_binding(req, cookie, secure)
    try:
        resp = yield from _callback(ctx, params, upstream_state, binding)
    except PageError as err:
        # The callback's own refusals forget the binding like its other answers. Any other error
        # (a store outage) keeps it: the state may not have been taken, and a retry may succeed.
        if binding is not None:
            err.headers += (clear_cookie(cookie, secure=secure),)
        raise
    if binding is not None:
        # The state was taken, so the binding has had its one use: the browser may forget it.
        resp = Response(
            status=resp.status,
            headers=(*resp.headers, clear_cookie(cookie, secure=secure)),
            body=resp.body,
        )
    return resp


# Long by nature: the callback step of the flow (RFC 6749 §4.1.2, RFC 9207, spec/security.md
# 12-14) checks state, browser, issuer, client and provider answer in that order, each
# refusal where it is decided.
def _callback(
    ctx: Context, params: dict[str, str], upstream_state: str, binding: str | None
) -> Handler[Response]:
    txn = yield from persistence.take_raw("ustate", digest(upstream_state))
    if txn is None:
        raise PageError(_UNKNOWN)
    tx = yield from persistence.load("tx", txn.decode(), Transaction)
    if tx is None or tx.upstream_state_hash != digest(upstream_state):
        raise PageError(_UNKNOWN)
    data = EventData(now=ctx.now, browser_hash=digest(binding) if binding else None)

    # RFC 7592 §2.3, spec/security.md 34: a client deleted while its user was at the provider (or one
    # whose registration no longer lists this redirect URI) gets nothing -- no upstream code
    # redeemed, no code, and no redirect to a URI that is not registered (spec/security.md 1, 2).
    yield from _require_client(ctx, tx)

    if "error" in params:
        denied = _try_step(tx, TxEvent.upstream_denied, data)
        if denied is None:
            raise SignInRefusedError(_UNKNOWN)
        updated = yield from persistence.commit("tx", tx.id, tx, denied, 60)
        if updated is None or denied.state != TxState.denied.value:
            raise SignInRefusedError(_UNKNOWN)
        yield from device.end_sign_in(ctx, tx)
        # Upstream error text is never relayed (it is not ours to vouch for).
        err: OAuthError = (
            AccessDeniedError("the user or the identity provider denied the request")
            if params["error"] == "access_denied"
            else TemporarilyUnavailableError("the identity provider could not complete sign-in")
        )
        return error_redirect(
            tx.redirect_uri, err, client_state=tx.client_state, issuer=ctx.config.issuer
        )

    # Check the browser before the upstream code is redeemed: a callback from another browser must
    # not cause any upstream traffic, let alone a code (spec/security.md 13).
    preview = _try_step(tx, TxEvent.upstream_returned, data)
    if preview is None:
        raise PageError(_UNKNOWN)
    if preview.state != TxState.code_issued.value:
        yield from persistence.commit("tx", tx.id, tx, preview, 60)
        if preview.event is TxEvent.deadline_passed:
            raise SignInRefusedError("This sign-in took too long. Start again.")
        raise SignInRefusedError("This sign-in was started in another browser.")
    try:
        check_callback_issuer(ctx.config.upstream, params.get("iss"))
        code = params.get("code")
        if not code:
            raise ServerError("the identity provider returned no code")
        established = yield from _redeem_upstream(ctx, tx, code, upstream_state)
    except OAuthError as exc:
        yield from persistence.commit("tx", tx.id, tx, step(tx, TxEvent.upstream_failed, data), 60)
        yield from device.end_sign_in(ctx, tx)
        client_err: OAuthError = (
            TemporarilyUnavailableError("the identity provider is unavailable")
            if isinstance(exc, UpstreamUnavailableError)
            else AccessDeniedError("sign-in with the identity provider failed")
        )
        return error_redirect(
            tx.redirect_uri, client_err, client_state=tx.client_state, issuer=ctx.config.issuer
        )

    return (yield from issue_code(ctx, tx, data, established, new_session=True))


def _require_client(ctx: Context, tx: Transaction) -> Handler[None]:
    """End ``tx`` with a page unless its client is still registered with its redirect URI."""
    client = yield from load_client(tx.client_id, ctx)
    # A device's sign-in has no redirect URI of the client: the proxy's own page stands in.
    if client is None or (
        tx.device_id is None
        and match_redirect_uri(
            client.redirect_uris,
            tx.redirect_uri,
            allow_localhost_port=ctx.config.allow_localhost_port,
        )
        is None
    ):
        yield from end_for_removed_client(ctx, tx)
        raise UnknownClientError("This application is no longer registered.")


def issue_code(
    ctx: Context,
    tx: Transaction,
    data: EventData,
    established: Established,
    *,
    new_session: bool,
) -> Handler[Response]:
    """spec/security.md 33 then RFC 6749 §4.1.2: the rules decide, and only then is a code minted.

    The rules are ``[access]`` and then the transaction's resource's own (spec/security.md 40).
    ``new_session``: the user has just signed in at the provider, so the browser is given an
    upstream session for its next resources (upstream_session.py); a code made from a session
    opens none (a session is never extended by use)."""
    server = ctx.config.resource_server(tx.resource)
    decision = decide_for(ctx.config.access, server, established.facts)
    yield Emit(
        event=AccessDecided(
            subject=established.subject,
            client_id=tx.client_id,
            admitted=decision.admitted,
            rule=decision.rule,
            when="sign_in",
        )
    )
    if not decision.admitted:
        # The refusal page names the rules that refused: the resource's own when [access] admits.
        refusing = ctx.config.access
        if (
            server is not None
            and server.access is not None
            and decide(ctx.config.access, established.facts).admitted
        ):
            refusing = server.access
        return (yield from _refuse(ctx, tx, data, refusing))
    if tx.device_id is not None:
        # RFC 8628: the device, polling, gets the result; no code exists for it.
        return (yield from device.complete_sign_in(ctx, tx, data, established, decision.groups))

    # The transaction must outlive its code so a replay can still be recognised and punished.
    code_value = new_secret(ctx.random, 32)
    grant_id = new_secret(ctx.random, 16)
    lifetimes = ctx.config.lifetimes
    issued = step(
        tx,
        TxEvent.upstream_returned,
        data,
        code_hash=digest(code_value),
        code_expires_at=ctx.now + lifetimes.code,
        grant_id=grant_id,
        subject=established.subject,
        claims=established.claims,
        groups=decision.groups,
        upstream_sealed=seal(
            ctx.keys, ctx.random, stored_tokens_json(established.tokens), "upstream|" + grant_id
        ),
        upstream_verifier_sealed=None,
    )
    updated = yield from persistence.commit("tx", tx.id, tx, issued, lifetimes.transaction)
    if updated is None:
        raise PageError(_UNKNOWN)
    yield from persistence.put_raw(
        "code", digest(code_value), tx.id.encode(), lifetimes.transaction
    )
    resp = authorization_redirect(
        tx.redirect_uri,
        [("code", code_value)],
        client_state=tx.client_state,
        issuer=ctx.config.issuer,
    )
    cookie = (yield from open_session(ctx, established)) if new_session else None
    if cookie is None:
        return resp
    return Response(status=resp.status, headers=(*resp.headers, cookie), body=resp.body)


def issue_from_session(
    ctx: Context,
    tx: Transaction,
    session: UpstreamSession,
    *,
    status: int,
    scopes: tuple[str, ...] | None,
) -> Handler[Response]:
    """Approve ``tx`` (a consent this browser just gave, or remembered for exactly this request)
    and complete it from the browser's upstream session instead of a round trip to the provider
    (upstream_session.py, spec/security.md 40).

    The transaction takes the same two steps as a sign-in at the provider, in one request: approved
    (bound to the session's browser hash, which only the cookie's holder has) and returned
    (``same_browser`` checks that hash); then ``issue_code`` applies the rules for this resource.
    The answer to a POST is a 303 (spec/security.md 17)."""
    # As at the callback: a client deleted while its consent page was open gets nothing.
    yield from _require_client(ctx, tx)
    narrowed = {} if scopes is None or scopes == tx.scopes else {"scopes": scopes}
    approved = step(
        tx,
        TxEvent.consent_approved,
        EventData(now=ctx.now),
        browser_hash=session.browser_hash,
        **narrowed,
    )
    if approved.state != TxState.upstream_pending.value:
        yield from persistence.commit("tx", tx.id, tx, approved, 60)
        raise PageError("This authorization request has expired.")
    updated = yield from persistence.commit(
        "tx", tx.id, tx, approved, tx.expires_at - ctx.now + EXPIRY_NOTICE
    )
    if updated is None:
        raise PageError("This authorization request was already answered.")
    data = EventData(now=ctx.now, browser_hash=session.browser_hash)
    resp = yield from issue_code(ctx, updated, data, session.established, new_session=False)
    if resp.status == 302:
        resp = Response(status=status, headers=resp.headers, body=resp.body)
    return resp


def _refuse(
    ctx: Context, tx: Transaction, data: EventData, policy: AccessPolicy
) -> Handler[Response]:
    """spec/security.md 33: the provider signed the user in, but no ``[access]`` rule admits them.

    The transaction ends ``denied`` with nothing of the user in it (no subject, claims or upstream
    token: the row declares no such write), no code exists, and the upstream tokens are dropped
    without ever being stored. The user is told which classes of rule exist (never their values)
    and may return to the application, which receives ``access_denied`` (RFC 6749 §4.1.2.1).
    """
    refused = step(tx, TxEvent.access_refused, data, upstream_verifier_sealed=None)
    yield from persistence.commit("tx", tx.id, tx, refused, 60)
    yield from device.end_sign_in(ctx, tx)
    back = error_redirect(
        tx.redirect_uri,
        AccessDeniedError("this account is not allowed to use this server"),
        client_state=tx.client_state,
        issuer=ctx.config.issuer,
    )
    server = ctx.config.resource_server(tx.resource)
    return refusal_page(
        policy.describe(),
        location=back.header("location") or "",
        service=server.name if server is not None else ctx.config.service_name,
    )


def _try_step(tx: Transaction, event: TxEvent, data: EventData) -> Step[Transaction] | None:
    """The step for ``event``, or ``None`` when ``tx`` is already final (nothing to change)."""
    try:
        return step(tx, event, data)
    except Absorbed:
        return None


def _redeem_upstream(
    ctx: Context, tx: Transaction, code: str, upstream_state: str
) -> Handler[Established]:
    profile = ctx.config.upstream
    verifier: str | None = None
    if tx.upstream_verifier_sealed is not None:
        try:
            verifier = unseal(ctx.keys, tx.upstream_verifier_sealed, "verifier|" + tx.id).decode()
        except UnsealError:
            raise ServerError("transaction damaged") from None
    result = yield HttpCall(
        request=build_token_request(
            profile,
            code=code,
            redirect_uri=ctx.config.callback_url,
            code_verifier=verifier,
            resource=tx.resource,
        )
    )
    tokens = parse_token_response(result, now=ctx.now, profile=profile)
    nonce = nonce_for_state(upstream_state) if profile.nonce else None
    established = yield from establish(
        profile, ctx.config.facts_policy, tokens, now=ctx.now, nonce=nonce
    )
    assert established is not None  # only a refresh may leave the identity unread
    return established
