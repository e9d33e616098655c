"""Several protected resources (MCP servers) under one issuer (spec/security.md 40).

One authorization server may protect several MCP servers, each at its own path below the issuer's
host (``[[resources]]``): ``https://proxy.example/github-tools`` and ``https://proxy.example/wiki``
are two protected resources in the sense of RFC 9728 §1, with one issuer. Without
``[[resources]]`` the proxy protects one, at ``[server] mcp_path`` (the single-resource form every
earlier configuration uses).

What each resource has of its own:

- its canonical URL (``resources.canonical_resource``), which is the one audience of every token
  issued for it (RFC 8707 §2: the client names it with ``resource``; RFC 9068 §3: ``aud``), and
  which no other resource's bearer check accepts;
- its protected resource metadata, at the RFC 9728 §3.1 URL (the well-known segment inserted
  before the resource's path), and its own ``resource_metadata`` in every challenge (§5.1);
- its display name, which the consent page names as the server being authorized;
- the baseline scopes a client needs for it (the challenge's and the metadata's ``scope``);
- optional access rules (``[resources.access]``, the keys of ``[access]``) that narrow, never
  widen, who may use it: a user must pass ``[access]`` and then these (``decide_for``).

Remembered consent is keyed on the resource already (handlers/consent.py), so it is per resource.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .access import AccessPolicy, Decision, Facts, decide

__all__ = ["ResourceServer", "decide_for", "resource_path_problem"]


def resource_path_problem(path: object) -> str | None:
    """Why ``path`` cannot be a resource's path below the issuer, or ``None``."""
    if not isinstance(path, str) or not path.startswith("/"):
        return "must start with '/'"
    if path.endswith("/") and path != "/":
        return "must not end with '/'"
    if any(c.isspace() or c in "?#\\%" or ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "must be a plain path (no query, fragment, escapes or spaces)"
    if "//" in path or any(seg in (".", "..") for seg in path.split("/")):
        return "must not contain empty, '.' or '..' segments"
    return None


def _check_path(_inst: object, _a: attrs.Attribute[str], value: str) -> None:
    problem = resource_path_problem(value)
    if problem is not None:
        raise ValueError(f"resource path {problem}")


def _tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class ResourceServer:
    """One protected MCP server: where it is, what it is called, what it needs, who may use it."""

    #: The path below the issuer's origin: the resource is ``<issuer origin><issuer path><path>``.
    path: str = attrs.field(validator=_check_path)
    #: Shown on the consent page ("Allow <client> to use <name>?") and in its metadata.
    name: str = attrs.field(validator=attrs.validators.min_len(1))
    #: The baseline scopes a client needs here (challenge ``scope``, metadata ``scopes_supported``).
    scopes: tuple[str, ...] = attrs.field(converter=_tuple)
    #: Rules that narrow ``[access]`` for this resource; ``None``: ``[access]`` alone decides.
    access: AccessPolicy | None = None


def decide_for(policy: AccessPolicy, resource: ResourceServer | None, facts: Facts) -> Decision:
    """``[access]``, then the resource's own rules: both must admit (spec/security.md 33, 40).

    The groups forwarded are those the global decision saw; a resource's rules only say yes or no.
    """
    decision = decide(policy, facts)
    if not decision.admitted or resource is None or resource.access is None:
        return decision
    narrowed = decide(resource.access, facts)
    if narrowed.admitted:
        return decision
    return Decision(admitted=False, rule=None, groups=())
