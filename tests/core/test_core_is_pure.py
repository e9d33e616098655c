"""The core imports nothing of I/O (spec/architecture.md, "Layers")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "oauthproxy_core"
FORBIDDEN = {
    "oauthproxy_adapters",
    "httpx",
    "starlette",
    "h11",
    "sqlite3",
    "socket",
    "asyncio",
    "time",
    "secrets",
    "os",
    "redis",
    "random",
    "uuid",
    "threading",
    "subprocess",
    "pathlib",
    "io",
    "datetime",
    "logging",
    "urllib.request",
    "http.client",
    "ssl",
    "select",
    "selectors",
    "multiprocessing",
    "concurrent",
    "tempfile",
    "shutil",
    "signal",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_modules_import_no_io() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert name not in FORBIDDEN and top not in FORBIDDEN, f"{path.name} imports {name}"


def test_core_uses_no_builtin_io() -> None:
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"open", "print", "input", "exec", "eval"}, path.name


def test_importing_the_core_loads_no_adapter_or_framework() -> None:
    # asyncio is absent from this list only because python-statemachine imports it for its own
    # async callbacks; the core itself never does (checked above).
    code = (
        "import sys, oauthproxy_core, oauthproxy_core.server\n"
        "bad = [m for m in ('oauthproxy_adapters','httpx','starlette','h11','sqlite3','redis')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
