"""Markers for the test suite, so that a fast loop can leave out what needs outside services.

Every test is marked by what it needs, read from its module once at collection:

- ``redis``: a Redis server on 127.0.0.1 (the module names a Redis URL or a private Redis);
- ``postgres``: the PostgreSQL server on 127.0.0.1:5432 and the tests' database (the module names
  ``POSTGRES_URL``);
- ``idp``: Node.js and the real OIDC provider in ``tests/upstream_idp``;
- ``browser``: headless Chromium;
- ``e2e``: processes and real servers on loopback (``tests/e2e``, ``tests/faults``,
  ``tests/hostile``, ``tests/integrations``): slower, and part of the full suite only.

``sh .ci/dev unit`` runs ``-m "not redis and not postgres and not idp and not browser and not
e2e"``; ``sh .ci/dev test`` runs everything, and the services a marked test needs are started or
installed first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_NEEDS = {
    "redis": re.compile(r"\bREDIS(?:_DB)?_URL\b|PrivateRedis|redis\.Redis\(|redis_topologies"),
    "postgres": re.compile(r"\bPOSTGRES_URL\b"),
    "idp": re.compile(r"conftest_idp|upstream_idp"),
    "browser": re.compile(r"chromium", re.IGNORECASE),
}
_E2E_DIRS = ("e2e", "faults", "hostile", "integrations")
_HERE = Path(__file__).parent
_by_module: dict[Path, tuple[str, ...]] = {}


def markers_for(path: Path) -> tuple[str, ...]:
    """The markers every test of the module at ``path`` gets."""
    found = _by_module.get(path)
    if found is None:
        source = path.read_text(encoding="utf-8")
        names = [name for name, pattern in _NEEDS.items() if pattern.search(source)]
        if path.relative_to(_HERE).parts[0] in _E2E_DIRS:
            names.append("e2e")
        found = _by_module[path] = tuple(names)
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix != ".py" or _HERE not in path.parents:
            continue
        for name in markers_for(path):
            item.add_marker(getattr(pytest.mark, name))
