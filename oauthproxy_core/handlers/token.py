"""The token endpoint: ``authorization_code`` (OAuth 2.1 §4.1.3, RFC 7636 §4.5-4.6, RFC 8707 §2.2)
and ``refresh_token`` (OAuth 2.1 §4.3) grants; the device code grant (RFC 8628 §3.4) is
``handlers/device.py``; ``client_credentials`` (RFC 6749 §4.4) is
``handlers/client_credentials.py``, and, while an enterprise issuer is configured, the jwt-bearer
grant with an ID-JAG (RFC 7523 §2.1) is ``id_jag.py``.

Code redemption (spec/security.md 8, 9): the transaction moves ``code_issued -> exchanged`` by a
compare-and-set on its version, so of two racing redemptions exactly one wins. The loser, and any later
replay, moves the transaction to ``revoked`` and revokes the grant the winner created.

Decided once (spec/security.md 9): after the client has authenticated, a redemption that fails any binding
check (another client, another ``redirect_uri``, another ``resource``, a wrong ``code_verifier``, or an
expired code) **consumes** the code: the transaction becomes ``failed``. A failed client
authentication consumes nothing (spec/security.md 22).
"""

from __future__ import annotations

import json
from typing import Any

from .. import grants, persistence
from ..client_auth import authenticate_client
from ..client_lookup import touch_client
from ..config import Context
from ..crypto import UnsealError, digest, equal, unseal
from ..effects import Handler
from ..errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTargetError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from ..http import Request, Response, form_body, json_response
from ..records import Client, Grant, Transaction
from ..resources import canonical_resource
from ..revalidation import revalidate, revalidation_due
from ..scopes import is_subset, parse_scope
from ..states import (
    Absorbed,
    EventData,
    GrantEvent,
    GrantState,
    TxEvent,
    TxState,
    grant_step,
    step,
)
from . import device, id_jag
from .client_credentials import GRANT_TYPE, client_credentials_grant, machine_clients
from .metadata import CORS


def token_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    form = form_body(req)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequestError("grant_type is required")
    if grant_type not in ("authorization_code", "refresh_token", *id_jag.grant_types(ctx)) and not (
        # Supported only while a client may use it, as the metadata says (client_credentials.py).
        (grant_type == GRANT_TYPE and machine_clients(ctx.config))
        or (grant_type == device.GRANT_TYPE and device.enabled(ctx))
    ):
        raise UnsupportedGrantTypeError("unsupported grant_type")
    client = yield from authenticate_client(req, form, ctx)
    if grant_type == id_jag.GRANT_TYPE:
        # Who may present an ID-JAG is the enterprise issuer's table, not the client's metadata.
        body = yield from id_jag.redeem_id_jag(ctx, client, form)
    elif grant_type not in client.grant_types:
        raise UnauthorizedClientError("client may not use this grant type")
    elif grant_type == "authorization_code":
        body = yield from _redeem_code(ctx, client, form)
    elif grant_type == GRANT_TYPE:
        body = yield from client_credentials_grant(ctx, client, form)
    elif grant_type == device.GRANT_TYPE:
        body = yield from device.redeem_device_code(ctx, client, form)
    else:
        body = yield from _refresh(ctx, client, form)
    if (yield from grants.is_client_revoked(client.client_id)):
        # RFC 7592 §2.3, spec/security.md 34: the registration was deleted while this request was under
        # way (after the client authenticated). What was just minted is refused everywhere by the
        # same marker; the client is not even told it.
        raise InvalidClientError("unknown client")
    # spec/security.md 28: a registration in use is renewed; only an unused one expires.
    yield from touch_client(client, ctx)
    return json_response(200, body, extra_headers=CORS)


def _resource_param(form: dict[str, str]) -> str | None:
    raw = form.get("resource")
    if raw is None:
        return None
    try:
        return canonical_resource(raw)
    except InvalidTargetError:
        return raw  # cannot equal the bound resource; the guard rejects it


def _redeem_code(ctx: Context, client: Client, form: dict[str, str]) -> Handler[dict[str, Any]]:
    code = form.get("code")
    if not code:
        raise InvalidRequestError("code is required")
    code_hash = digest(code)
    txn = yield from persistence.get_raw("code", code_hash)
    if txn is None:
        raise InvalidGrantError("code is invalid or expired")
    tx = yield from persistence.load("tx", txn.decode(), Transaction)
    if tx is None or tx.code_hash is None or not equal(tx.code_hash, code_hash):
        raise InvalidGrantError("code is invalid or expired")
    data = EventData(
        now=ctx.now,
        client_id=client.client_id,
        redirect_uri=form.get("redirect_uri"),
        resource=_resource_param(form),
        code_verifier=form.get("code_verifier"),
    )
    if tx.state == TxState.exchanged.value:
        yield from _punish_replay(ctx, tx)
        raise InvalidGrantError("code was already used")
    try:
        redeemed = step(tx, TxEvent.code_redeemed, data)
    except Absorbed:
        raise InvalidGrantError("code is invalid or expired") from None
    lifetimes = ctx.config.lifetimes
    exchanged = yield from persistence.commit("tx", tx.id, tx, redeemed, lifetimes.transaction)
    if exchanged is None:
        # Lost a race with another redemption: that one is now a replay of ours (spec/security.md 8).
        current = yield from persistence.load("tx", tx.id, Transaction)
        if current is not None and current.state == TxState.exchanged.value:
            yield from _punish_replay(ctx, current)
        raise InvalidGrantError("code was already used")
    if redeemed.event is TxEvent.deadline_passed:
        raise InvalidGrantError("code has expired")
    if redeemed.state != TxState.exchanged.value:
        raise InvalidGrantError(
            "code does not match this client, redirect_uri, resource or verifier"
        )

    assert tx.grant_id is not None and tx.subject is not None  # set when the code was issued
    return (
        yield from grants.start_family(
            ctx,
            grant_type="authorization_code",
            with_refresh="refresh_token" in client.grant_types,
            grant_id=tx.grant_id,
            client_id=tx.client_id,
            subject=tx.subject,
            scopes=tx.scopes,
            resource=tx.resource,
            claims=tx.claims,
            groups=tx.groups,
            upstream_sealed=tx.upstream_sealed,
        )
    )


def _punish_replay(ctx: Context, tx: Transaction) -> Handler[None]:
    try:
        replayed = step(tx, TxEvent.code_replayed, EventData(now=ctx.now))
    except Absorbed:
        pass  # already revoked by an earlier replay; the grant marker below is idempotent
    else:
        yield from persistence.commit("tx", tx.id, tx, replayed, 60)
    if tx.grant_id is not None:
        yield from grants.revoke_grant(ctx, tx.grant_id, GrantEvent.code_replayed)


# Long by nature: The refresh protocol step (OAuth 2.1 §4.3, rotation with grace and reuse
# detection) is one decision over one grant.
def _refresh(  # noqa: C901, PLR0912
    ctx: Context, client: Client, form: dict[str, str]
) -> Handler[dict[str, Any]]:
    presented = form.get("refresh_token")
    if not presented:
        raise InvalidRequestError("refresh_token is required")
    parts = grants.split_refresh_token(presented)
    if parts is None:
        raise InvalidGrantError("refresh token is invalid")
    grant_id, secret = parts
    presented_hash = digest(secret)
    for _attempt in range(4):
        grant = yield from persistence.load("grant", grant_id, Grant)
        if grant is None or grant.state != GrantState.active.value or grant.expires_at <= ctx.now:
            raise InvalidGrantError("refresh token is invalid")
        if grant.client_id != client.client_id:
            # Another client's token: nothing changes (spec/security.md 19, 21).
            raise InvalidGrantError("refresh token is invalid")
        if (yield from grants.is_revoked(grant_id)):
            raise InvalidGrantError("refresh token is invalid")
        resource = _resource_param(form)
        if resource is not None and resource != grant.resource:
            raise InvalidTargetError("resource differs from the original grant")
        requested = parse_scope(form.get("scope"))
        if requested and not is_subset(requested, grant.scopes):
            raise InvalidScopeError("scope exceeds the original grant")
        scopes = requested or grant.scopes

        if grant.refresh_hash and equal(presented_hash, grant.refresh_hash):
            if revalidation_due(ctx, grant):
                # The provider is asked about the user again before the family lives on
                # (revalidation.py); a concurrent change makes us re-read and decide afresh.
                confirmed = yield from revalidate(ctx, grant, presented_hash)
                if confirmed is None:
                    continue
                grant = confirmed
            refresh, new_hash = grants.new_refresh_secret(ctx, grant.id)
            body = grants.token_response(ctx, grant, scopes, refresh)
            rotated = grant_step(
                grant,
                GrantEvent.refresh_rotated,
                EventData(now=ctx.now, presented_hash=presented_hash),
                **grants.rotation(ctx, grant, presented_hash, body, new_hash),
            )
            stored = yield from persistence.commit(
                "grant", grant.id, grant, rotated, max(rotated.record.expires_at - ctx.now, 1)
            )
            if stored is not None:
                return body
            continue  # a concurrent refresh rotated first: re-read and answer as a retry
        if grant.previous_hash and equal(presented_hash, grant.previous_hash):
            if ctx.now <= grant.grace_until and grant.previous_response_sealed:
                try:
                    sealed = grant.previous_response_sealed
                    answer: dict[str, Any] = json.loads(
                        unseal(ctx.keys, sealed, "refresh|" + grant.id)
                    )
                except (UnsealError, ValueError):
                    raise InvalidGrantError("refresh token is invalid") from None
                return answer
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.refresh_replayed)
            raise InvalidGrantError("refresh token was already used")
        if any(equal(presented_hash, h) for h in grant.retired_hashes):
            yield from grants.revoke_grant(ctx, grant.id, GrantEvent.refresh_replayed)
            raise InvalidGrantError("refresh token was already used")
        raise InvalidGrantError("refresh token is invalid")
    raise InvalidGrantError("refresh token is contended; retry")
