"""Who the provider says the user is, and what the ``[access]`` rules need to know about them.

One sub-generator, ``establish``, serves both places that ask: the callback, right after the upstream
code is redeemed, and re-validation at refresh (``revalidation.py``), right after the upstream token
is refreshed. From the profile's ``identity_source`` it reads the ID token (verified against the
provider's cached JWK Set; OIDC Core §3.1.3.7), the UserInfo endpoint (OIDC Core §5.3.2, whose ``sub``
must equal the ID token's), or both; GitHub's verified primary address (spec/security.md 32); and then
the facts the rules read (access.py): ``hd`` and ``tid`` from the verified ID token only, the groups
claim at its configured path, and, only when a rule needs them, GitHub's organization and team
memberships and Microsoft Graph's answer to an Entra group overage (memberships.py).
"""

from __future__ import annotations

from typing import Any

import attrs

from .access import AccessPolicy, Facts, claim_at_path, groups_from
from .effects import Handler, HttpCall, HttpFailure, HttpResponse
from .memberships import (
    MAX_PAGES,
    build_github_page_request,
    build_group_overage_request,
    first_github_page,
    has_group_overage,
    parse_github_orgs,
    parse_github_teams,
    parse_group_overage,
)
from .providers.jwks import verified_id_token_claims
from .untrusted_json import UntrustedJsonError, parse_json_object
from .upstream import (
    MAX_RESPONSE_BYTES,
    UpstreamError,
    UpstreamIdentity,
    UpstreamProfile,
    UpstreamProtocolError,
    UpstreamTokens,
    build_userinfo_request,
    build_verified_email_request,
    identity_from_claims,
    parse_identity,
    parse_verified_email,
    wants_verified_email,
    with_verified_email,
)

__all__ = ["Established", "establish"]


@attrs.frozen(kw_only=True)
class Established:
    """The outcome of signing a user in (or re-reading them at refresh)."""

    tokens: UpstreamTokens
    #: ``<provider>:<upstream id>``: the identity.
    subject: str
    #: Display data (spec/security.md 32).
    claims: tuple[tuple[str, str], ...]
    facts: Facts
    #: False when the provider answered nothing the identity could be read from again (a refresh
    #: without an ID token for an ID-token-only profile): the refresh itself confirmed the account.
    reread: bool = True


def establish(
    profile: UpstreamProfile,
    policy: AccessPolicy,
    tokens: UpstreamTokens,
    *,
    now: int,
    nonce: str | None,
    refreshed: bool = False,
) -> Handler[Established | None]:
    """Read the identity and the rules' facts behind ``tokens``.

    ``refreshed``: the tokens come from a refresh (OIDC Core §12.2), so an ID token may be absent;
    then ``None`` is returned when nothing else can be read (the caller keeps what it knew).
    """
    identity: UpstreamIdentity | None = None
    id_claims: dict[str, Any] = {}
    if profile.uses_id_token:
        if tokens.id_token is not None:
            id_claims = yield from verified_id_token_claims(
                profile, tokens.id_token, now=now, nonce=nonce
            )
            identity = identity_from_claims(profile, id_claims)
        elif not refreshed:
            raise UpstreamProtocolError("the identity provider returned no ID token")
        elif profile.identity_source == "id_token":
            return None
    info: HttpResponse | HttpFailure | None = None
    if profile.identity_source != "id_token":
        identity, info = yield from _with_userinfo(profile, tokens, identity, id_claims)
    assert identity is not None
    if identity.scopes is not None:
        # GitHub's X-OAuth-Scopes is what the token really carries.
        tokens = attrs.evolve(tokens, scope=identity.scopes)
    if wants_verified_email(profile, tokens.scope):
        # GET /user's `email` is the public profile address, which GitHub does not verify: the
        # verified one comes from /user/emails (spec/security.md 32).
        listed = yield HttpCall(
            request=build_verified_email_request(profile, access_token=tokens.access_token)
        )
        identity = with_verified_email(profile, identity, parse_verified_email(listed))
    subject = f"{profile.name}:{identity.subject}"
    facts = yield from _facts(
        profile,
        policy,
        subject=subject,
        identity=identity,
        id_claims=id_claims,
        info=info,
        tokens=tokens,
    )
    return Established(tokens=tokens, subject=subject, claims=identity.claims, facts=facts)


def _with_userinfo(
    profile: UpstreamProfile,
    tokens: UpstreamTokens,
    identity: UpstreamIdentity | None,
    id_claims: dict[str, Any],
) -> Handler[tuple[UpstreamIdentity, HttpResponse | HttpFailure]]:
    if profile.userinfo_url is None:
        raise UpstreamError("no way to read the user's identity is configured")
    info = yield HttpCall(request=build_userinfo_request(profile, access_token=tokens.access_token))
    from_userinfo = parse_identity(profile, info)
    if identity is None:
        return from_userinfo, info
    # OIDC Core §5.3.2: "The sub Claim in the UserInfo Response MUST be verified to exactly match
    # the sub Claim in the ID Token; if they do not match, the UserInfo Response values MUST NOT be
    # used." (Checked when both name the subject in the same field.)
    if profile.subject_field == "sub" and from_userinfo.subject != id_claims.get("sub"):
        raise UpstreamProtocolError("UserInfo and ID token name different users")
    merged = dict(identity.claims)
    merged.update(from_userinfo.claims)
    combined = attrs.evolve(
        from_userinfo,
        subject=identity.subject,
        claims=tuple((name, merged[name]) for name, _f in profile.claim_pairs if name in merged),
    )
    return combined, info


def _userinfo_document(info: HttpResponse | HttpFailure) -> dict[str, Any]:
    # parse_identity has already accepted this answer as a bounded JSON object.
    if isinstance(info, HttpFailure):
        return {}
    try:
        return parse_json_object(info.body, max_bytes=MAX_RESPONSE_BYTES)
    except UntrustedJsonError:
        return {}


def _email_of(profile: UpstreamProfile, identity: UpstreamIdentity) -> str | None:
    claims = dict(identity.claims)
    for name, field in profile.claim_pairs:
        if field == "email" and name in claims:
            return claims[name]
    return None


def _facts(
    profile: UpstreamProfile,
    policy: AccessPolicy,
    *,
    subject: str,
    identity: UpstreamIdentity,
    id_claims: dict[str, Any],
    info: HttpResponse | HttpFailure | None,
    tokens: UpstreamTokens,
) -> Handler[Facts]:
    hd = id_claims.get("hd")
    tid = id_claims.get("tid")
    raw_groups = claim_at_path(id_claims, policy.groups_claim) if id_claims else None
    if raw_groups is None and info is not None:
        raw_groups = claim_at_path(_userinfo_document(info), policy.groups_claim)
    groups = groups_from(raw_groups)
    if (
        not groups
        and policy.allowed_groups
        and profile.group_overage_url is not None
        and has_group_overage(id_claims)
    ):
        answer = yield HttpCall(
            request=build_group_overage_request(profile, access_token=tokens.access_token)
        )
        groups = parse_group_overage(answer)
    orgs: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    if policy.github_orgs and profile.org_membership_url is not None:
        orgs = yield from _pages(profile, profile.org_membership_url, tokens, teams=False)
        if policy.wants_github_teams and profile.team_membership_url is not None:
            teams = yield from _pages(profile, profile.team_membership_url, tokens, teams=True)
    return Facts(
        subject=subject,
        email=_email_of(profile, identity),
        hosted_domain=hd if isinstance(hd, str) else None,
        tenant=tid if isinstance(tid, str) else None,
        groups=groups,
        github_orgs=orgs,
        github_teams=teams,
    )


def _pages(
    profile: UpstreamProfile, base: str, tokens: UpstreamTokens, *, teams: bool
) -> Handler[tuple[str, ...]]:
    found: list[str] = []
    url: str | None = first_github_page(base)
    for _page in range(MAX_PAGES):
        if url is None:
            break
        result = yield HttpCall(
            request=build_github_page_request(profile, url, access_token=tokens.access_token)
        )
        parse = parse_github_teams if teams else parse_github_orgs
        names, url = parse(result, url)
        found.extend(names)
    return tuple(found)
