"""spec/openapi.yaml stays true to the code: the same routes as the server's route table (both ways,
for an issuer with and without a path), the same methods, and every status code a handler, the router
or an HTTP adapter can answer documented. Statuses come from the code (tests/hostile/derive.py walks
each endpoint's call graph), never from a copy kept here."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import h11
import pytest
import schemathesis

from oauthproxy_adapters import app as app_module
from oauthproxy_adapters import asgi, gateway, h11_server, wsgi
from oauthproxy_adapters.proxy import protected_prefixes
from oauthproxy_core.handlers.bearer import verify_bearer
from oauthproxy_core.routes import RESOURCE_ENDPOINT, Credentials
from oauthproxy_core.server import AuthorizationServer
from tests.harness import keys, make_config
from tests.hostile.derive import endpoint_statuses, module_response_statuses, summarize
from tests.hostile.support import SPEC_PATH, spec

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MANAGEMENT = "/register/{client_id}"
#: The ``security`` of an operation, by what its route reads (``None``: no ``security`` at all).
SECURITY: dict[Credentials, list[dict[str, list[str]]] | None] = {
    Credentials.NONE: None,
    Credentials.CLIENT: [{}, {"clientSecretBasic": []}],
    Credentials.REGISTRATION_TOKEN: [{"registrationAccessToken": []}],
}


SPEC = spec()


def operations(path: str) -> dict[str, dict[str, Any]]:
    item = SPEC["paths"][path]
    return {m.upper(): op for m, op in item.items() if m in HTTP_METHODS}


def documented(path: str, method: str) -> set[int]:
    return {int(code) for code in operations(path)[method]["responses"]}


def root_paths() -> set[str]:
    """The paths ``_Root`` answers itself (``scope["path"] in (...)`` in app.py)."""
    tree = ast.parse(inspect.getsource(app_module._Root))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Compare) and "path" in ast.unparse(node.left)):
            continue
        right = node.comparators[0]
        if isinstance(node.ops[0], ast.In) and isinstance(right, ast.Tuple):
            found |= {e.value for e in right.elts if isinstance(e, ast.Constant)}
        elif isinstance(node.ops[0], ast.Eq) and isinstance(right, ast.Constant):
            found.add(right.value)
    assert found, "app._Root no longer names its own paths as expected; update this test"
    return found


def served_paths(issuer: str) -> set[str]:
    """Every path template the assembled app answers for ``issuer``."""
    config = make_config(issuer=issuer)
    server = AuthorizationServer(config, keys())
    return (
        {path for path, _ in server.routes.items()}
        | root_paths()
        | set(protected_prefixes(config, None))
    )


def test_the_spec_is_openapi_3_1_and_loads_in_schemathesis() -> None:
    assert SPEC["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    ops = list(schema.get_all_operations())
    count = sum(len(operations(p)) for p in SPEC["paths"])
    assert len(ops) == count
    assert all(op.ok() for op in ops), [op for op in ops if not op.ok()]


def optional_paths() -> set[str]:
    """Paths served only when configured (``x-served-when``), e.g. ``/metrics``."""
    return {p for p, item in SPEC["paths"].items() if "x-served-when" in item}


def test_every_route_is_in_the_spec_and_every_spec_path_is_a_route() -> None:
    served = served_paths("https://proxy.example")
    assert served <= set(SPEC["paths"]), sorted(served - set(SPEC["paths"]))
    assert set(SPEC["paths"]) - served <= optional_paths()


@pytest.mark.parametrize("issuer_path", ["/p", "/tenant/a"])
def test_routes_of_an_issuer_with_a_path(issuer_path: str) -> None:
    variants: dict[str, str] = SPEC["x-issuer-path-routes"]
    expanded = {template.replace("{p}", issuer_path) for template in variants}
    served = served_paths("https://proxy.example" + issuer_path)
    assert served <= expanded, sorted(served - expanded)
    assert expanded - served <= optional_paths()
    assert set(variants.values()) == set(SPEC["paths"])  # each variant behaves like a listed path


def test_methods_match_the_route_table() -> None:
    config = make_config()
    server = AuthorizationServer(config, keys())
    routes = dict(server.routes.items())
    for path, route in routes.items():
        expected = set(route.methods) | ({"OPTIONS"} if route.cors else set())
        assert set(operations(path)) == expected, path
    management = routes[MANAGEMENT]
    assert set(operations(MANAGEMENT)) == set(management.methods) | {"OPTIONS"}


def test_every_route_names_its_endpoint_and_credentials_in_the_spec() -> None:
    """``x-endpoint`` of each path item is its route's name in the core's table (the metrics label),
    and the ``security`` of each operation is what the route reads; the protected path is
    ``resource``. No other path item claims an endpoint."""
    config = make_config()
    server = AuthorizationServer(config, keys())
    for path, route in server.routes.items():
        assert SPEC["paths"][path].get("x-endpoint") == route.name, path
        for method in route.methods:
            assert operations(path)[method].get("security") == SECURITY[route.credentials], (
                path,
                method,
            )
    protected = set(protected_prefixes(config, None))
    for path in protected:
        assert SPEC["paths"][path].get("x-endpoint") == RESOURCE_ENDPOINT
    named = {p for p, item in SPEC["paths"].items() if "x-endpoint" in item}
    assert named == {p for p, _ in server.routes.items()} | protected


def test_every_status_a_handler_can_answer_is_documented() -> None:
    """Per route: what the endpoint's call graph can answer is documented on that route. (The
    registration management endpoint is one function for GET, PUT and DELETE: its statuses are
    checked against the union of the three operations.)"""
    server = AuthorizationServer(make_config(), keys())
    routes = dict(server.routes.items())
    assert MANAGEMENT in routes
    for path, route in routes.items():
        by_function: dict[Any, set[str]] = {}
        for method, endpoint in route.handlers:
            by_function.setdefault(endpoint, set()).add(method)
        for endpoint, methods in by_function.items():
            derived = endpoint_statuses(endpoint)
            assert derived, endpoint
            union = set().union(*(documented(path, m) for m in methods))
            missing = derived - union
            assert not missing, f"{path} {sorted(methods)}: {sorted(missing)} undocumented"
        if route.cors:
            assert documented(path, "OPTIONS") == {204}, path


def test_documented_statuses_are_reachable() -> None:
    """The other direction: a documented status that no code path produces is stale (except the
    ones the adapters add: 413 for an oversized body)."""
    server = AuthorizationServer(make_config(), keys())
    routes = dict(server.routes.items())
    assert MANAGEMENT in routes
    for path, route in routes.items():
        derived = set().union(*(endpoint_statuses(e) for _, e in route.handlers))
        for method in route.methods:
            extra = documented(path, method) - derived - {413}
            assert not extra, f"{path} {method}: {sorted(extra)} documented but never produced"


def test_the_protected_path_documents_the_bearer_challenges() -> None:
    challenge_statuses = summarize(verify_bearer).returns
    assert challenge_statuses == {401, 403}
    for method in ("GET", "POST", "DELETE"):
        assert challenge_statuses <= documented("/mcp", method)
    assert documented("/mcp", "OPTIONS") == {204}


def test_the_gateway_statuses_are_documented_on_the_protected_path() -> None:
    """The gateway's own answers (``_BAD_PATH``, ``_NOT_FOUND``, ``_BAD_GATEWAY``, ...): module-level
    ``(status, body)`` pairs in gateway.py."""
    own = {
        v[0]
        for v in vars(gateway).values()
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], dict)
    }
    assert {400, 404, 502, 504} <= own
    for method in ("GET", "POST", "DELETE"):
        # 401: the gateway's "no verified principal" is the bearer challenge's status too.
        assert own <= documented("/mcp", method), sorted(own - documented("/mcp", method))


def test_router_and_transport_statuses_are_documented() -> None:
    router = {int(c) for c in SPEC["x-router-responses"]}
    assert {404, 405} <= router  # NotFoundError, MethodNotAllowedError in server._dispatch
    transport = {int(c) for c in SPEC["x-transport-responses"]}
    canned = set().union(*(module_response_statuses(m) for m in (asgi, wsgi, h11_server)))
    hints = {
        int(n)
        for f in Path(h11.__file__).parent.glob("*.py")
        for n in re.findall(r"error_status_hint=(\d+)", f.read_text(encoding="utf-8"))
    }
    hints.add(400)  # h11's default hint for RemoteProtocolError
    missing = (canned | hints) - transport
    assert not missing, sorted(missing)
