"""Who may sign in: the ``[access]`` rules and the one decision they make (spec/security.md 33).

The proxy first establishes who the user is (the callback: upstream code, ID token, UserInfo); then,
before any code is minted, ``decide`` applies the operator's rules to what the provider vouched for
(``Facts``). A user is admitted when any rule matches, and everyone is admitted when there is no rule
at all (``AccessPolicy.open``; ``serve`` and ``check-config`` say so loudly). The same decision runs
again when a grant is re-validated at refresh (``revalidation.py``), so a user removed upstream loses
access at the first refresh after ``Lifetimes.revalidate_after``.

Every comparison is exact. Subjects are ``<provider>:<id>`` as minted by the callback. Email addresses
and domains are compared case-insensitively (RFC 5321 §2.4 lets a server treat the local part as
case-sensitive, but no provider we support issues two accounts that differ only in case), and only
for an address the provider vouched for (spec/security.md 32). A domain rule matches the exact domain
after the last ``@``: ``example.com`` never matches ``evil-example.com`` or ``sub.example.com``.
Google's ``hd`` and Entra's ``tid`` are read only from the verified ID token (the ``hd`` request
parameter is a hint the user can strip). GitHub organizations and teams come from the REST API
(``/user/orgs``, ``/user/teams``); logins and slugs are compared case-insensitively, as GitHub
treats them. Groups come from the claim at ``groups_claim`` (a dotted path), and compare exactly.

The refusal names the classes of rules that exist, never their values: telling a stranger which
organizations or domains are admitted would help them pick a target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "MAX_FORWARDED_GROUPS",
    "MAX_GROUP_LENGTH",
    "AccessPolicy",
    "Decision",
    "Facts",
    "RULE_CLASSES",
    "claim_at_path",
    "decide",
    "forwarded_groups",
    "groups_from",
]

#: Groups carried into access tokens and ``X-OAuthProxy-Groups``: enough for real directories'
#: relevant memberships while a token stays far below ``tokens.MAX_TOKEN_LENGTH``.
MAX_FORWARDED_GROUPS = 100
#: Longer group names are dropped, never cut (a cut name could equal another group's).
MAX_GROUP_LENGTH = 128
#: Entries read from one claim or API answer; past it the rest is ignored (bounded work).
MAX_GROUPS_READ = 5000

#: Rule class -> how the refusal page names it (never with the configured values).
RULE_CLASSES: dict[str, str] = {
    "allowed_subjects": "certain named accounts",
    "allowed_emails": "certain verified email addresses",
    "allowed_email_domains": "verified email addresses of certain domains",
    "github_orgs": "members of certain GitHub organizations or teams",
    "google_hosted_domains": "accounts of certain Google Workspace domains",
    "entra_tenants": "accounts of certain Microsoft Entra tenants",
    "allowed_groups": "members of certain groups",
}

_ORG_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_TEAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_DOMAIN_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))+")
_GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CLAIM_PATH_RE = re.compile(r"[A-Za-z0-9_:/-]{1,64}(?:\.[A-Za-z0-9_:/-]{1,64}){0,7}")


def _lower_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(v.lower() for v in values)


def _tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _each(check: Any, what: str) -> Any:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        for item in value:
            if not isinstance(item, str) or not check(item):
                raise ValueError(f"{attribute.name}: {item!r} is not {what}")

    return validate


def _is_subject(value: str) -> bool:
    provider, sep, rest = value.partition(":")
    return bool(provider) and bool(sep) and bool(rest) and value.isprintable() and " " not in value


def _is_email(value: str) -> bool:
    local, sep, domain = value.rpartition("@")
    return bool(local) and bool(sep) and _DOMAIN_RE.fullmatch(domain) is not None


def _is_org_rule(value: str) -> bool:
    org, sep, team = value.partition("/")
    return _ORG_RE.fullmatch(org) is not None and (not sep or _TEAM_RE.fullmatch(team) is not None)


def _is_group(value: str) -> bool:
    return 0 < len(value) <= MAX_GROUP_LENGTH and value.isprintable()


def _check_claim_path(_inst: object, _a: attrs.Attribute[str], value: str) -> None:
    if not _CLAIM_PATH_RE.fullmatch(value):
        raise ValueError(
            "groups_claim must be a claim name or a dotted path such as realm_access.roles"
        )


@attrs.frozen(kw_only=True)
class AccessPolicy:
    """The ``[access]`` rules. With none set, everyone the provider signs in is admitted."""

    #: Exact ``<provider>:<id>`` subjects (``github:4242``).
    allowed_subjects: tuple[str, ...] = attrs.field(
        converter=_tuple, default=(), validator=_each(_is_subject, "a <provider>:<id> subject")
    )
    #: Verified email addresses, compared case-insensitively.
    allowed_emails: tuple[str, ...] = attrs.field(
        converter=_lower_tuple, default=(), validator=_each(_is_email, "an email address")
    )
    #: Exact domains of verified addresses (never a suffix match).
    allowed_email_domains: tuple[str, ...] = attrs.field(
        converter=_lower_tuple,
        default=(),
        validator=_each(lambda d: _DOMAIN_RE.fullmatch(d) is not None, "a domain name"),
    )
    #: ``org`` or ``org/team-slug`` (GitHub and GitHub Enterprise Server).
    github_orgs: tuple[str, ...] = attrs.field(
        converter=_lower_tuple,
        default=(),
        validator=_each(_is_org_rule, "an organization or organization/team-slug"),
    )
    #: The verified ``hd`` claim of Google ID tokens.
    google_hosted_domains: tuple[str, ...] = attrs.field(
        converter=_lower_tuple,
        default=(),
        validator=_each(lambda d: _DOMAIN_RE.fullmatch(d) is not None, "a domain name"),
    )
    #: The ``tid`` claim of Entra ID tokens (tenant GUIDs).
    entra_tenants: tuple[str, ...] = attrs.field(
        converter=_lower_tuple,
        default=(),
        validator=_each(lambda t: _GUID_RE.fullmatch(t) is not None, "a tenant GUID"),
    )
    #: Groups read from ``groups_claim`` (or Microsoft Graph on an Entra group overage).
    allowed_groups: tuple[str, ...] = attrs.field(
        converter=_tuple, default=(), validator=_each(_is_group, "a group name")
    )
    #: Where the groups are: a claim name or a dotted path (``realm_access.roles``).
    groups_claim: str = attrs.field(default="groups", validator=_check_claim_path)

    @property
    def open(self) -> bool:
        """No rule: everyone the provider signs in is admitted."""
        return not self.rule_classes

    @property
    def rule_classes(self) -> tuple[str, ...]:
        """The classes of rule in use, in declaration order (for pages, logs and the summary)."""
        return tuple(name for name in RULE_CLASSES if getattr(self, name))

    @property
    def wants_github_teams(self) -> bool:
        return any("/" in rule for rule in self.github_orgs)

    def describe(self) -> str:
        """The rule classes in words, never their values ("members of certain groups")."""
        return "; or ".join(RULE_CLASSES[name] for name in self.rule_classes)


@attrs.frozen(kw_only=True)
class Facts:
    """What the provider vouched for about one user, as the rules read it."""

    #: ``<provider>:<id>``.
    subject: str
    #: A verified address only (spec/security.md 32), else ``None``.
    email: str | None = None
    #: Google's ``hd`` from the verified ID token.
    hosted_domain: str | None = None
    #: Entra's ``tid`` from the verified ID token.
    tenant: str | None = None
    groups: tuple[str, ...] = attrs.field(converter=_tuple, default=())
    #: GitHub organization logins (lower case).
    github_orgs: tuple[str, ...] = attrs.field(converter=_lower_tuple, default=())
    #: GitHub teams as ``org/team-slug`` (lower case).
    github_teams: tuple[str, ...] = attrs.field(converter=_lower_tuple, default=())


@attrs.frozen(kw_only=True)
class Decision:
    admitted: bool
    #: The rule class that admitted the user (``None`` when the policy is open or refused).
    rule: str | None = None
    #: Groups to forward to the MCP server (``forwarded_groups``).
    groups: tuple[str, ...] = ()


def _matches(policy: AccessPolicy, facts: Facts) -> str | None:
    # Long by nature: one line per rule class, in the documented order.
    if facts.subject in policy.allowed_subjects:
        return "allowed_subjects"
    email = facts.email.lower() if facts.email else None
    if email is not None and email in policy.allowed_emails:
        return "allowed_emails"
    if email is not None and email.rpartition("@")[2] in policy.allowed_email_domains:
        return "allowed_email_domains"
    memberships = set(facts.github_orgs) | set(facts.github_teams)
    if any(rule in memberships for rule in policy.github_orgs):
        return "github_orgs"
    if facts.hosted_domain and facts.hosted_domain.lower() in policy.google_hosted_domains:
        return "google_hosted_domains"
    if facts.tenant and facts.tenant.lower() in policy.entra_tenants:
        return "entra_tenants"
    if set(facts.groups) & set(policy.allowed_groups):
        return "allowed_groups"
    return None


def decide(policy: AccessPolicy, facts: Facts) -> Decision:
    """Admit ``facts`` when the policy is open or any rule matches (spec/security.md 33)."""
    groups = forwarded_groups(policy, facts)
    if policy.open:
        return Decision(admitted=True, groups=groups)
    rule = _matches(policy, facts)
    return Decision(admitted=rule is not None, rule=rule, groups=groups if rule else ())


def forwarded_groups(policy: AccessPolicy, facts: Facts) -> tuple[str, ...]:
    """The groups the MCP server is told about: claim groups, then GitHub orgs and teams.

    Bounded by ``MAX_FORWARDED_GROUPS``; groups named by ``allowed_groups`` or ``github_orgs`` come
    first, so the ones a rule looked at are never the ones left out.
    """
    seen: dict[str, None] = {}
    for group in (*facts.groups, *facts.github_orgs, *facts.github_teams):
        if _is_group(group):
            seen.setdefault(group, None)
    wanted = set(policy.allowed_groups) | set(policy.github_orgs)
    ordered = [g for g in seen if g in wanted] + [g for g in seen if g not in wanted]
    return tuple(ordered[:MAX_FORWARDED_GROUPS])


def claim_at_path(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or ``None``.

    A claim whose own name holds the dots (``"realm_access.roles"`` at the top level) wins over the
    nested reading, as some providers flatten namespaced claims.
    """
    if path in document:
        return document[path]
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def groups_from(value: Any) -> tuple[str, ...]:
    """Group names from a claim value: a list of strings (numbers are read as text), or one
    string. Anything else, and any element that is not a usable group name, is ignored."""
    if isinstance(value, str):
        return (value,) if _is_group(value) else ()
    if not isinstance(value, list):
        return ()
    out: list[str] = []
    for item in value[:MAX_GROUPS_READ]:
        if isinstance(item, bool) or not isinstance(item, str | int):
            continue
        text = str(item)
        if _is_group(text):
            out.append(text)
    return tuple(out)
