"""The status codes each endpoint can answer, read from the code rather than copied by hand.

For an endpoint function this walks its call graph inside ``oauthproxy_core`` (calls resolved through
the function's module globals: ``error_page(...)``, ``persistence.load(...)``) and collects:

- statuses a response is built with: the first argument of ``error_page``/``json_response``, any
  ``status=<int>`` keyword, and the ``status`` parameter default of a callee called without
  ``status=`` (``authorization_redirect``: 302);
- ``OAuthError`` classes raised (``raise InvalidGrantError(...)``) and not caught on the way: a call
  or ``raise`` inside ``try`` whose ``except`` names that class (or a base of it) contributes only the
  responses it returns, not the errors it raises, unless that ``except`` re-raises (a bare
  ``raise``, as the callback does after adding a header to the error). The router renders an
  escaping error with its ``status``.

It over-approximates (a branch that cannot be taken still counts), which is the safe direction for
"every status the code can return is documented". The store driver adds 503 to every endpoint that
touches the store (``driver.py`` throws ``TemporarilyUnavailableError`` into the handler).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from types import FunctionType, ModuleType
from typing import Any

from oauthproxy_core import Response
from oauthproxy_core.errors import OAuthError, TemporarilyUnavailableError

_RESPONSE_BUILDERS = frozenset({"error_page", "json_response"})


class _Summary:
    __slots__ = ("default_status", "raises", "returns", "touches_store")

    def __init__(self) -> None:
        self.default_status: int | None = None
        self.returns: set[int] = set()
        self.raises: set[type[OAuthError]] = set()
        self.touches_store = False


_CACHE: dict[Any, _Summary] = {}


def _resolve(node: ast.expr, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, env)
        if isinstance(base, ModuleType):
            return getattr(base, node.attr, None)
    return None


def _is_core_function(obj: Any) -> bool:
    return isinstance(obj, FunctionType) and obj.__module__.startswith("oauthproxy_core")


def summarize(func: Callable[..., Any]) -> _Summary:
    """What ``func`` (and the core functions it calls) may answer or raise."""
    key = func
    if key in _CACHE:
        return _CACHE[key]
    summary = _Summary()
    _CACHE[key] = summary  # recursion guard: a cycle contributes what is known so far
    env = dict(func.__globals__)  # type: ignore[attr-defined]
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    if func.__module__ == "oauthproxy_core.persistence":
        summary.touches_store = True
    definition = tree.body[0]
    if isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):
        summary.default_status = _status_default(definition)
    _walk(tree, env, summary, caught=())
    return summary


def _status_default(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
    args = node.args
    positional = args.posonlyargs + args.args
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [
        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    ]
    for arg, default in pairs:
        if (
            arg.arg == "status"
            and isinstance(default, ast.Constant)
            and isinstance(default.value, int)
        ):
            return default.value
    return None


def _caught_by(cls: type[OAuthError], caught: tuple[type[BaseException], ...]) -> bool:
    return any(issubclass(cls, c) for c in caught)


def _reraises(handler: ast.ExceptHandler) -> bool:
    """The handler has a bare ``raise``: what it catches may still escape."""
    return any(isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler))


def _walk(
    node: ast.AST, env: dict[str, Any], out: _Summary, caught: tuple[type[BaseException], ...]
) -> None:
    if isinstance(node, ast.Try):
        handled: list[type[BaseException]] = []
        for handler in node.handlers:
            if _reraises(handler):
                continue
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            for t in types:
                cls = BaseException if t is None else _resolve(t, env)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    handled.append(cls)
        for stmt in node.body:
            _walk(stmt, env, out, caught + tuple(handled))
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            _walk(part, env, out, caught)
        return
    if isinstance(node, ast.Raise) and node.exc is not None:
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        cls = _resolve(target, env)
        if isinstance(cls, type) and issubclass(cls, OAuthError) and not _caught_by(cls, caught):
            out.raises.add(cls)
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        first = node.args[0] if node.args else None
        if (
            name in _RESPONSE_BUILDERS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, int)
        ):
            out.returns.add(first.value)
        for kw in node.keywords:
            if (
                kw.arg == "status"
                and isinstance(kw.value, ast.Constant)
                and isinstance(kw.value.value, int)
            ):
                out.returns.add(kw.value.value)
        callee = _resolve(node.func, env)
        if _is_core_function(callee):
            inner = summarize(callee)
            out.returns |= inner.returns
            passed = any(kw.arg == "status" for kw in node.keywords)
            if inner.default_status is not None and not passed:
                out.returns.add(inner.default_status)
            out.raises |= {c for c in inner.raises if not _caught_by(c, caught)}
            out.touches_store |= inner.touches_store
    for child in ast.iter_child_nodes(node):
        _walk(child, env, out, caught)


def endpoint_statuses(func: Callable[..., Any]) -> set[int]:
    """Every status the router can send for ``func``: its responses and its escaping errors."""
    s = summarize(func)
    statuses = set(s.returns) | {cls.status for cls in s.raises}
    if s.touches_store:
        statuses.add(TemporarilyUnavailableError.status)  # a store outage (driver.py)
    return statuses


def module_response_statuses(module: ModuleType) -> set[int]:
    """Statuses of the module-level canned responses of an adapter (``TOO_LARGE = ...``)."""
    return {v.status for v in vars(module).values() if isinstance(v, Response)}
