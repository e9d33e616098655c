"""The device authorization grant (RFC 8628) for clients that cannot receive a redirect: SSH sessions,
containers, CI runners. Its lifecycle is ``states.DeviceMachine``; spec/security.md 39.

- ``POST /device_authorization`` (§3.1-3.2): a client that registered the grant
  (``urn:ietf:params:oauth:grant-type:device_code``) gets a device code (256 bits, kept only as its
  digest), a user code (``user_codes.py``, kept only as a MAC), the verification URI and the
  polling interval. Requests are counted like authorization requests (bounds.py), before the
  client is looked up.
- ``GET /device`` shows the proxy's own page where the user types the user code (§3.3);
  ``verification_uri_complete`` fills it in, and the user still presses the button (§5.4: the user
  must see what they approve). ``POST /device`` accepts a form only from the proxy's own origin
  (spec/security.md 31), takes the user code's index atomically (one use), and starts an
  authorization transaction for the device's client, scopes and resource that goes through the
  same consent page (marked as a device sign-in), the same browser-bound upstream sign-in and the
  same ``[access]`` rules as the code flow. Mistyped codes are counted per source and in total,
  and past the bound the page answers 429 (503 for the total) before looking anything up.
- The callback hands the result to the device (``complete_sign_in``) instead of issuing a code;
  every denial on the way ends it (``end_sign_in``).
- ``POST /token`` with the device code grant (§3.4-3.5): ``authorization_pending`` until the user
  has finished, ``slow_down`` when the client polls faster than its interval (the interval is a
  field of the record and every poll a compare-and-set, so it holds across instances, and two polls
  racing are one too many), ``access_denied``, ``expired_token``; an approved device code is
  redeemed by a compare-and-set to ``redeemed``, so exactly one poll gets tokens, the same
  resource-bound access token and rotating refresh token as the code flow.

A refused request stores nothing: a poll by another client, an unknown device code, a malformed or
unknown user code (only its failure counter moves) change no record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import grants, persistence
from ..bounds import Slot, check_slots, per_source, take_slots
from ..browser_binding import from_own_origin
from ..client_auth import authenticate_client
from ..client_lookup import load_client
from ..config import Context
from ..crypto import digest, new_secret, seal
from ..domain_events import DeviceChanged
from ..effects import CompareAndSet, Emit, Handler
from ..errors import (
    AuthorizationPendingError,
    DeviceAccessDeniedError,
    ExpiredTokenError,
    InvalidGrantError,
    InvalidRequestError,
    NotFoundError,
    PageError,
    ServerError,
    SlowDownError,
    UnauthorizedClientError,
    UnknownClientError,
    UntrustedFormError,
)
from ..http import Request, Response, form_body, json_response, parse_params
from ..pages import device_done_page, device_entry_page
from ..pkce import s256
from ..records import Client, DeviceAuthorization, Transaction
from ..resources import select_resource
from ..scopes import parse_scope, resolve_scopes
from ..states import (
    EXPIRY_NOTICE,
    Absorbed,
    DeviceEvent,
    DeviceState,
    EventData,
    Step,
    TxEvent,
    TxState,
    device_step,
    new_device,
    new_transaction,
    step,
)
from ..upstream import stored_tokens_json
from ..upstream_identity import Established
from ..user_codes import (
    display_user_code,
    new_user_code,
    normalize_user_code,
    user_code_key,
    user_code_lookup_keys,
)
from .metadata import CORS, DEVICE_GRANT_TYPE

GRANT_TYPE = DEVICE_GRANT_TYPE
#: Index records: digest of a device code -> device id; MAC of a user code -> device id.
DEVICE_CODE = "dcode"
USER_CODE = "ucode"
_UNKNOWN_CODE = "This code is not valid. Check it on your device and type it again."
_USED = "This code was already used or has expired. Start again on your device."


def enabled(ctx: Context) -> bool:
    return ctx.config.device.enabled


# -- RFC 8628 §3.1-3.2: the device authorization request -------------------------------------------


def device_authorization_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    if not enabled(ctx):
        raise NotFoundError("not found")
    form = form_body(req)
    b, window = ctx.config.bounds, ctx.config.lifetimes.transaction
    # Counted with the authorization requests, before any lookup (bounds.py, spec/security.md 28).
    yield from take_slots(
        (
            Slot("authorize-address", per_source(ctx.source), b.authorizations_per_address, window),
            Slot("authorize", "*", b.authorizations_total, window, shared=True),
        ),
        now=ctx.now,
    )
    client = yield from authenticate_client(req, form, ctx)
    if GRANT_TYPE not in client.grant_types:
        raise UnauthorizedClientError("client may not use the device authorization grant")
    # RFC 8707 §2 as at /authorize: any protected resource (spec/security.md 40), the default one
    # when none is named; its baseline scopes are what a request asking for none gets.
    resource = select_resource(form.get("resource"), ctx.config.resource_urls)
    requested = parse_scope(form.get("scope"))
    scopes = resolve_scopes(
        requested,
        supported=ctx.config.scopes_supported,
        default=ctx.config.baseline_scopes(resource),
        client_allowed=None if requested else client.scope or None,
    )
    settings = ctx.config.device
    device_code = new_secret(ctx.random, 32)
    device_id = new_secret(ctx.random, 16)
    user_code = yield from _claim_user_code(ctx, device_id, settings.code_lifetime)
    device = new_device(
        id=device_id,
        client_id=client.client_id,
        scopes=scopes,
        resource=resource,
        created_at=ctx.now,
        expires_at=ctx.now + settings.code_lifetime,
        interval=settings.interval,
        user_code_key=user_code_key(ctx.keys, user_code),
    )
    ttl = settings.code_lifetime + EXPIRY_NOTICE
    stored = yield from persistence.create("device", device.id, device, ttl)
    if stored is None:
        raise ServerError("could not allocate a device authorization")
    yield from persistence.put_raw(DEVICE_CODE, digest(device_code), device.id.encode(), ttl)
    yield Emit(
        event=DeviceChanged(
            device_id=stored.id,
            client_id=stored.client_id,
            subject=None,
            cause="requested",
            state=stored.state,
            applied=True,
        )
    )
    shown = display_user_code(user_code)
    body = {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": ctx.config.verification_uri,
        "verification_uri_complete": f"{ctx.config.verification_uri}?user_code={shown}",
        "expires_in": settings.code_lifetime,
        "interval": settings.interval,
    }
    return json_response(200, body, extra_headers=CORS)


def _claim_user_code(ctx: Context, device_id: str, lifetime: int) -> Handler[str]:
    """A fresh user code whose index did not exist (insert-if-absent): two live devices never share
    one. With 2^34 codes and a few thousand live, a collision is rare; three tries make a failure
    practically impossible, and it would be a 500, never a shared code."""
    for _attempt in range(3):
        code = new_user_code(ctx.random)
        ok = yield CompareAndSet(
            kind=USER_CODE,
            key=user_code_key(ctx.keys, code),
            expected_version=0,
            value=device_id.encode(),
            ttl=max(lifetime, 1),
        )
        if ok:
            return code
    raise ServerError("could not allocate a user code")


# -- RFC 8628 §3.3: the verification page ----------------------------------------------------------


def device_page_get(req: Request, ctx: Context) -> Handler[Response]:
    if not enabled(ctx):
        raise NotFoundError("not found")
    params = parse_params(req.query)
    # Only a well-formed code is put back into the form; anything else starts it empty.
    typed = normalize_user_code(params.get("user_code", ""))
    message = None
    if params.get("error") == "access_denied":
        message = "The sign-in was not completed. Your device has been told."
    elif "error" in params:
        message = "The sign-in could not be completed. Start again on your device."
    return device_entry_page(
        service_name=ctx.config.service_name,
        action=ctx.config.verification_uri,
        user_code=display_user_code(typed) if typed else "",
        message=message,
        theme=ctx.config.consent_theme,
    )
    yield  # pragma: no cover - makes this a generator like every handler


def _entry_slots(ctx: Context) -> tuple[Slot, Slot]:
    settings = ctx.config.device
    window = settings.code_lifetime
    return (
        Slot(
            "device-entry-address",
            per_source(ctx.source),
            settings.failed_entries_per_address,
            window,
        ),
        Slot("device-entry", "*", settings.failed_entries_total, window, shared=True),
    )


def device_page_post(req: Request, ctx: Context) -> Handler[Response]:
    if not enabled(ctx):
        raise NotFoundError("not found")
    # spec/security.md 31: only the proxy's own page submits a user code (a cross-site form would
    # walk a victim's browser to the consent page of a device the attacker holds).
    if not from_own_origin(req, ctx.config.issuer_origin):
        raise UntrustedFormError("This form was not sent from this sign-in page.")
    slots = _entry_slots(ctx)
    yield from check_slots(slots, now=ctx.now)
    form = form_body(req)
    code = normalize_user_code(form.get("user_code", ""))
    device_id: bytes | None = None
    if code is not None:
        for key in user_code_lookup_keys(ctx.keys, code):
            # Taken, not read: a user code is entered once (user_codes.py).
            device_id = yield from persistence.take_raw(USER_CODE, key)
            if device_id is not None:
                break
    if device_id is None:
        yield from take_slots(slots, now=ctx.now)
        page = device_entry_page(
            service_name=ctx.config.service_name,
            action=ctx.config.verification_uri,
            user_code="",
            message=_UNKNOWN_CODE,
            theme=ctx.config.consent_theme,
            status=400,
        )
        return page
    device = yield from persistence.load(
        "device", device_id.decode("ascii", "replace"), DeviceAuthorization
    )
    if device is None or device.state != DeviceState.pending.value:
        raise PageError(_USED)
    client = yield from load_client(device.client_id, ctx)
    if client is None:
        yield from _end(ctx, device, DeviceEvent.client_removed, EventData(now=ctx.now))
        raise UnknownClientError("This application is no longer registered.")
    tx = _transaction(ctx, device)
    entered = device_step(
        device, DeviceEvent.user_code_entered, EventData(now=ctx.now), txn_id=tx.id
    )
    if entered.state != DeviceState.verifying.value:
        yield from persistence.commit("device", device.id, device, entered, EXPIRY_NOTICE)
        raise PageError(_USED)
    stored_tx = yield from persistence.create("tx", tx.id, tx, _tx_ttl(ctx, tx))
    if stored_tx is None:
        raise ServerError("could not allocate a transaction")
    updated = yield from _commit_entry(ctx, device, entered, tx.id)
    if updated is None:
        raise PageError(_USED)
    location = f"{ctx.config.issuer}/consent?txn={tx.id}"
    return Response(status=303, headers=(("Location", location), ("Cache-Control", "no-store")))


def _commit_entry(
    ctx: Context, device: DeviceAuthorization, entered: Step[DeviceAuthorization], txn_id: str
) -> Handler[DeviceAuthorization | None]:
    """Store the user code's entry (``pending`` to ``verifying`` for transaction ``txn_id``),
    applied again if the device's own polls wrote the record meanwhile."""
    updated = yield from persistence.commit(
        "device", device.id, device, entered, _device_ttl(ctx, device)
    )
    if updated is not None:
        return updated

    def enter(d: DeviceAuthorization) -> Step[DeviceAuthorization]:
        return device_step(d, DeviceEvent.user_code_entered, EventData(now=ctx.now), txn_id=txn_id)

    return (
        yield from _apply_again(
            ctx,
            device.id,
            before=DeviceState.pending,
            txn_id=None,
            make=enter,
            after=DeviceState.verifying,
        )
    )


def _transaction(ctx: Context, device: DeviceAuthorization) -> Transaction:
    """The authorization transaction of a device's sign-in: the device's client, scopes and
    resource; no client redirect (the proxy's own page stands in for it, and no code is ever
    issued: the callback sees ``device_id``); a PKCE challenge of a verifier nobody keeps, so the
    code flow's redemption could never succeed for it either."""
    tx = new_transaction(
        id=new_secret(ctx.random, 16),
        client_id=device.client_id,
        redirect_uri=ctx.config.verification_uri,
        redirect_uri_sent=False,
        code_challenge=s256(new_secret(ctx.random, 32)),
        scopes=device.scopes,
        resource=device.resource,
        created_at=ctx.now,
        expires_at=min(ctx.now + ctx.config.lifetimes.transaction, device.expires_at),
        device_id=device.id,
    )
    bound = step(tx, TxEvent.challenge_bound, EventData(now=ctx.now))
    if bound.state != TxState.pkce_bound.value:
        raise PageError(_USED)
    return bound.record


def _tx_ttl(ctx: Context, tx: Transaction) -> int:
    return tx.expires_at - ctx.now + EXPIRY_NOTICE


def _device_ttl(ctx: Context, device: DeviceAuthorization) -> int:
    return max(device.expires_at - ctx.now, 0) + EXPIRY_NOTICE


#: Tries of a sign-in step against the device's own polls (each poll writes the record).
_ATTEMPTS = 3


def _apply_again(
    ctx: Context,
    device_id: str,
    *,
    before: DeviceState,
    txn_id: str | None,
    make: Callable[[DeviceAuthorization], Step[DeviceAuthorization]],
    after: DeviceState,
) -> Handler[DeviceAuthorization | None]:
    """After a lost compare-and-set: reload the device and apply ``make`` again while it is still
    ``before`` (and, with ``txn_id``, still this sign-in's), at most ``_ATTEMPTS - 1`` times.

    A client polls every few seconds and each poll is a write (RFC 8628 §3.5: its interval lives in
    the record), so a sign-in step racing a poll is ordinary; failing it would end a sign-in the
    user completed. A poll never changes the state, the transaction or anything a step reads, so
    the step applied to the reloaded record is the same decision. ``None``: the device moved on
    (another step, expiry), which the caller reports as before."""
    for _ in range(_ATTEMPTS - 1):
        device = yield from persistence.load("device", device_id, DeviceAuthorization)
        if (
            device is None
            or device.state != before.value
            or (txn_id is not None and device.txn_id != txn_id)
        ):
            return None
        stepped = make(device)
        if stepped.state != after.value:
            return None
        stored = yield from persistence.commit(
            "device", device.id, device, stepped, _device_ttl(ctx, device)
        )
        if stored is not None:
            return stored
    return None


def _end(
    ctx: Context, device: DeviceAuthorization, event: DeviceEvent, data: EventData
) -> Handler[None]:
    try:
        ended = device_step(device, event, data)
    except Absorbed:
        return
    yield from persistence.commit("device", device.id, device, ended, _device_ttl(ctx, device))


# -- the sign-in's outcome, from the consent page and the callback ----------------------------------


def end_sign_in(ctx: Context, tx: Transaction) -> Handler[None]:
    """The sign-in of ``tx`` was denied or failed: its device is ``denied`` (§3.5 access_denied)."""
    if tx.device_id is None:
        return
    device = yield from persistence.load("device", tx.device_id, DeviceAuthorization)
    if device is not None:
        yield from _end(
            ctx, device, DeviceEvent.sign_in_denied, EventData(now=ctx.now, txn_id=tx.id)
        )


def complete_sign_in(
    ctx: Context,
    tx: Transaction,
    data: EventData,
    established: Established,
    groups: tuple[str, ...],
) -> Handler[Response]:
    """The provider signed the user in and ``[access]`` admitted them: the device is ``approved``
    with the identity, the granted scopes and the sealed upstream tokens; no code is issued."""
    assert tx.device_id is not None
    done = step(tx, TxEvent.device_signed_in, data, upstream_verifier_sealed=None)
    updated = yield from persistence.commit("tx", tx.id, tx, done, EXPIRY_NOTICE)
    if updated is None or done.state != TxState.exchanged.value:
        raise PageError("This sign-in is unknown, was already completed, or has expired.")
    device = yield from persistence.load("device", tx.device_id, DeviceAuthorization)
    if device is None:
        raise PageError(_USED)
    grant_id = new_secret(ctx.random, 16)
    sealed = seal(
        ctx.keys, ctx.random, stored_tokens_json(established.tokens), "upstream|" + grant_id
    )

    def approve(d: DeviceAuthorization) -> Step[DeviceAuthorization]:
        return device_step(
            d,
            DeviceEvent.sign_in_approved,
            EventData(now=ctx.now, txn_id=tx.id),
            grant_id=grant_id,
            subject=established.subject,
            claims=established.claims,
            groups=groups,
            scopes=tx.scopes,
            upstream_sealed=sealed,
        )

    approved = approve(device)
    stored = yield from persistence.commit(
        "device", device.id, device, approved, _device_ttl(ctx, device)
    )
    if stored is None and approved.state == DeviceState.approved.value:
        stored = yield from _apply_again(
            ctx,
            device.id,
            before=DeviceState.verifying,
            txn_id=tx.id,
            make=approve,
            after=DeviceState.approved,
        )
    if stored is None or stored.state != DeviceState.approved.value:
        raise PageError(_USED)
    # The server the device now uses, by name, as its consent page said (spec/security.md 40).
    server = ctx.config.resource_server(tx.resource)
    name = server.name if server is not None else ctx.config.service_name
    return device_done_page(service_name=name, theme=ctx.config.consent_theme)


# -- RFC 8628 §3.4-3.5: the device access token request ---------------------------------------------


def redeem_device_code(
    ctx: Context, client: Client, form: dict[str, str]
) -> Handler[dict[str, Any]]:
    """The token response for ``client``'s approved device code, or the §3.5 error to poll on."""
    code = form.get("device_code")
    if not code:
        raise InvalidRequestError("device_code is required")
    if len(code) > 128:
        raise InvalidGrantError("device code is invalid or expired")
    device_id = yield from persistence.get_raw(DEVICE_CODE, digest(code))
    if device_id is None:
        raise InvalidGrantError("device code is invalid or expired")
    device = yield from persistence.load(
        "device", device_id.decode("ascii", "replace"), DeviceAuthorization
    )
    if device is None:
        raise InvalidGrantError("device code is invalid or expired")
    if device.client_id != client.client_id:
        # Another client's device code: refused, nothing changes (RFC 6749 §5.2 invalid_grant).
        raise InvalidGrantError("device code is invalid or expired")
    _raise_if_final(device)
    data = EventData(now=ctx.now, client_id=client.client_id)
    if device.state == DeviceState.approved.value:
        return (yield from _redeem(ctx, client, device, data))
    too_fast = device.last_polled_at and ctx.now - device.last_polled_at < device.interval
    polled = (
        device_step(
            device,
            DeviceEvent.slowed_down,
            data,
            last_polled_at=ctx.now,
            interval=min(device.interval + 5, 3600),
        )
        if too_fast
        else device_step(device, DeviceEvent.polled, data, last_polled_at=ctx.now)
    )
    stored = yield from persistence.commit(
        "device", device.id, device, polled, _device_ttl(ctx, device)
    )
    if polled.event is DeviceEvent.deadline_passed:
        raise ExpiredTokenError("the device code has expired")
    if stored is None or too_fast:
        # Two polls at once (on two instances, say) are one too many: the loser slows down.
        raise SlowDownError("polling too fast; wait interval + 5 seconds")
    raise AuthorizationPendingError("the user has not finished signing in yet")


def _raise_if_final(device: DeviceAuthorization) -> None:
    state = device.state
    if state == DeviceState.redeemed.value:
        raise InvalidGrantError("device code was already used")
    if state == DeviceState.denied.value:
        raise DeviceAccessDeniedError("the sign-in was denied")
    if state == DeviceState.expired.value:
        raise ExpiredTokenError("the device code has expired")
    if state == DeviceState.failed.value:
        raise InvalidGrantError("device code is invalid or expired")


def _redeem(
    ctx: Context, client: Client, device: DeviceAuthorization, data: EventData
) -> Handler[dict[str, Any]]:
    redeemed = device_step(device, DeviceEvent.token_issued, data, upstream_sealed=None)
    stored = yield from persistence.commit(
        "device", device.id, device, redeemed, _device_ttl(ctx, device)
    )
    if redeemed.event is DeviceEvent.deadline_passed:
        raise ExpiredTokenError("the device code has expired")
    if stored is None or redeemed.state != DeviceState.redeemed.value:
        # Another poll redeemed it first (spec/security.md 39: never twice).
        raise InvalidGrantError("device code was already used")
    assert device.grant_id is not None and device.subject is not None  # set on approval
    return (
        yield from grants.start_family(
            ctx,
            grant_type=GRANT_TYPE,
            with_refresh="refresh_token" in client.grant_types,
            grant_id=device.grant_id,
            client_id=device.client_id,
            subject=device.subject,
            scopes=device.scopes,
            resource=device.resource,
            claims=device.claims,
            groups=device.groups,
            upstream_sealed=device.upstream_sealed,
        )
    )
