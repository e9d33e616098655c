"""Per-tool authorization at the gateway: the ``[[gateway.tools]]`` rules and the one decision they
make (spec/security.md 38).

A rule names tools with a glob and says what a caller needs to use them::

    [[gateway.tools]]
    name = "admin_*"          # which tools: ``*`` any run of characters, ``?`` one character
    scopes = ["mcp:admin"]    # every one of these scopes (RFC 6749 §3.3 scope tokens)
    groups = ["platform"]     # at least one of these groups (what the [access] decision saw)

How rules combine, decided once here:

- Every rule whose glob matches a tool applies, whatever their order: a tool matched by two rules
  needs what both ask for. So a broad rule written after a narrow one can never open what the narrow
  one closes, and the order of the file carries no meaning.
- A tool that no rule matches is open to every token the gateway accepts (the rules restrict, they
  do not enumerate); a rule with ``name = "*"`` closes every tool by default.
- Globs compare exactly, case included, as MCP servers look tools up (MCP 2025-11-25, "Tools": tool
  names are case-sensitive). Only ``*`` and ``?`` are special; ``[``, ``]`` and ``\\`` are refused in
  a glob so that no reader takes them for character classes or escapes.

The decision distinguishes two refusals, because a client can repair only one of them: scopes it
lacks it can ask for (MCP 2025-11-25, "Scope Challenge Handling": HTTP 403 with
``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``, RFC 6750 §3.1), while a group
the user is not in is the provider's and the operator's business, and asking again changes nothing.
So a refusal by group is never answered with a step-up challenge (a client would loop).

Groups are ``Principal.groups``: the groups the ``[access]`` decision saw at sign-in or at the last
re-validation (``access.forwarded_groups``), compared exactly.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import attrs

from .access import MAX_GROUP_LENGTH
from .scopes import MAX_SCOPE_TOKEN_LENGTH, OFFLINE_ACCESS, without_offline_access

__all__ = [
    "MAX_GLOB_LENGTH",
    "MAX_RULES",
    "OFFLINE_ACCESS",
    "ToolDecision",
    "ToolPolicy",
    "ToolRule",
    "challenge_scopes",
]

#: Tool names are at most 128 characters (MCP 2025-11-25, "Tool names"); a glob may add wildcards.
MAX_GLOB_LENGTH = 256
#: More rules than any real server has tools worth naming; bounds the work per tool looked up.
MAX_RULES = 256

# Visible ASCII except the characters a glob reader could take for a class or an escape.
_GLOB = re.compile(r"[\x21-\x5a\x5e-\x7e]+")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def _glob_regex(glob: str) -> re.Pattern[str]:
    parts = []
    for char in glob:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _check_glob(_inst: object, _a: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_GLOB_LENGTH:
        raise ValueError(f"name must be a glob of 1 to {MAX_GLOB_LENGTH} characters")
    if not _GLOB.fullmatch(value):
        raise ValueError(
            "name may hold visible ASCII characters only, without spaces, [, ] or \\ "
            "(* matches any run of characters, ? one character)"
        )


def _check_scopes(_inst: object, _a: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for scope in value:
        if (
            not isinstance(scope, str)
            or len(scope) > MAX_SCOPE_TOKEN_LENGTH
            or not _SCOPE_TOKEN.fullmatch(scope)
        ):
            raise ValueError(f"scopes: {scope!r} is not a scope token (RFC 6749 §3.3)")
        if scope == OFFLINE_ACCESS:
            raise ValueError("scopes: offline_access grants refresh tokens, not access to a tool")


def _check_groups(_inst: object, _a: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for group in value:
        if not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP_LENGTH:
            raise ValueError(f"groups: {group!r} is not a group name")
        if not group.isprintable():
            raise ValueError(f"groups: {group!r} is not a group name")


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@attrs.frozen(kw_only=True)
class ToolRule:
    """One ``[[gateway.tools]]`` table. At least one of ``scopes`` and ``groups`` is given: a rule
    that asks for nothing would read as a restriction and restrict nothing."""

    name: str = attrs.field(validator=_check_glob)
    scopes: tuple[str, ...] = attrs.field(converter=_distinct, default=(), validator=_check_scopes)
    groups: tuple[str, ...] = attrs.field(converter=_distinct, default=(), validator=_check_groups)
    _pattern: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.scopes and not self.groups:
            raise ValueError("a rule needs scopes, groups or both")
        object.__setattr__(self, "_pattern", _glob_regex(self.name))

    def matches(self, tool: str) -> bool:
        return self._pattern.fullmatch(tool) is not None


@attrs.frozen(kw_only=True)
class ToolDecision:
    """What ``ToolPolicy.decide`` found for one tool and one caller."""

    allowed: bool
    #: Every scope the matching rules require, in rule order (what a step-up asks for).
    required_scopes: tuple[str, ...] = ()
    #: True when a matching rule's groups exclude the caller: no new scope can help.
    group_refused: bool = False


_OPEN = ToolDecision(allowed=True)


def _check_rules(_inst: object, _a: attrs.Attribute[Any], value: tuple[ToolRule, ...]) -> None:
    if len(value) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} tool rules")
    for rule in value:
        if not isinstance(rule, ToolRule):
            raise TypeError("rules must be ToolRule values")


def _rule_tuple(values: Iterable[ToolRule]) -> tuple[ToolRule, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class ToolPolicy:
    """The ``[[gateway.tools]]`` rules. Without any, every tool is open and the gateway does not
    inspect a single message (``active`` is false)."""

    rules: tuple[ToolRule, ...] = attrs.field(
        converter=_rule_tuple, default=(), validator=_check_rules
    )

    @property
    def active(self) -> bool:
        return bool(self.rules)

    @property
    def scopes(self) -> tuple[str, ...]:
        """Every scope some rule requires (the configuration checks they are all supported)."""
        return _distinct(s for rule in self.rules for s in rule.scopes)

    def decide(self, tool: str, scopes: Collection[str], groups: Collection[str]) -> ToolDecision:
        """May a caller holding ``scopes`` and in ``groups`` call ``tool``?"""
        matching = [rule for rule in self.rules if rule.matches(tool)]
        if not matching:
            return _OPEN
        required = _distinct(s for rule in matching for s in rule.scopes)
        group_refused = any(rule.groups and not set(rule.groups) & set(groups) for rule in matching)
        allowed = not group_refused and all(s in scopes for s in required)
        return ToolDecision(allowed=allowed, required_scopes=required, group_refused=group_refused)

    def may_call(self, tool: str, scopes: Collection[str], groups: Collection[str]) -> bool:
        return self.decide(tool, scopes, groups).allowed


def challenge_scopes(baseline: Sequence[str], refused: Iterable[ToolDecision]) -> tuple[str, ...]:
    """The ``scope`` of a step-up challenge: the resource's baseline scopes (what its 401 challenge
    asks for), then every scope the refused tools require; never ``offline_access``.

    RFC 6750 §3.1 has the attribute name the scopes "necessary to access the requested resource",
    and a client that steps up unions them with what it asked for before (MCP SEP-2350; the mcp SDK
    does), so the token's other scopes are not repeated here; the baseline is, so that a client that
    replaces its scopes instead of adding to them still gets a token the resource accepts.
    """
    wanted = [*baseline, *(s for decision in refused for s in decision.required_scopes)]
    return without_offline_access(_distinct(wanted))
