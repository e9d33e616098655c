"""Token revocation, RFC 7009.

The client authenticates as at the token endpoint. Revoking a refresh token or an access token revokes
its grant, and with it every token of the family (RFC 7009 §2.1 allows this; spec/security.md 21). A token
that is unknown, malformed, or belongs to another client changes nothing, and the answer is 200 either
way (RFC 7009 §2.2) so the endpoint reveals nothing about tokens it did not issue to the caller.
"""

from __future__ import annotations

from .. import grants, persistence
from ..client_auth import authenticate_client
from ..config import Context
from ..crypto import digest, equal
from ..effects import Handler
from ..errors import InvalidRequestError, InvalidTokenError
from ..http import NO_STORE, Request, Response, form_body
from ..records import Grant
from ..states import GrantEvent
from ..tokens import verify_access_token
from .metadata import CORS


def revocation_endpoint(req: Request, ctx: Context) -> Handler[Response]:
    form = form_body(req)
    client = yield from authenticate_client(req, form, ctx)
    token = form.get("token")
    if token is None:
        raise InvalidRequestError("token is required")
    grant_id = yield from _grant_of(ctx, token, client.client_id)
    if grant_id is not None:
        yield from grants.revoke_grant(ctx, grant_id, GrantEvent.revocation_requested)
    return Response(status=200, headers=NO_STORE + CORS)


def _grant_of(ctx: Context, token: str, client_id: str) -> Handler[str | None]:
    parts = grants.split_refresh_token(token)
    if parts is not None:
        grant = yield from persistence.load("grant", parts[0], Grant)
        if grant is None or grant.client_id != client_id:
            return None
        h = digest(parts[1])
        known = (grant.refresh_hash, grant.previous_hash or "", *grant.retired_hashes)
        return grant.id if any(k and equal(h, k) for k in known) else None
    # The token's one audience is one of our resources (spec/security.md 40).
    for resource in ctx.config.resource_urls:
        try:
            claims = verify_access_token(ctx, token, audience=resource)
        except InvalidTokenError:
            continue
        return claims.grant_id if claims.client_id == client_id else None
    return None
