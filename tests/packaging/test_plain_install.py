"""``pip install oauthproxy`` (no extras) runs the main job: ``check-config``, ``keys`` and ``serve``.

Issue 14, "Packaging": the plain install used to end in ``ModuleNotFoundError: No module named
'httpx'``. This builds the wheel from this checkout, installs it without extras into a fresh
virtual environment (the dependencies come from PyPI or the local pip cache), and runs the installed
console script as a user would: from a directory outside the checkout, with ``PYTHONPATH`` cleared,
so only what the wheel declares can be imported. ``oauthproxy demo`` needs the ``demo`` extra (the
``mcp`` SDK) and must say so. Marked ``packaging``: about a minute, so a fast loop can leave it out
with ``-m 'not packaging'``; the full suite runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oauthproxy_adapters.testing.serve import ServeProcess, free_port

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
#: The installed code must be the wheel's, never this checkout (which PYTHONPATH may point at):
#: an empty PYTHONPATH counts as unset.
CLEAN = {"PYTHONPATH": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
SECRET = {"PLAIN_INSTALL_SECRET": "plain-install-secret-value"}
OPTIONAL = (
    "mcp",
    "redis",
    "prometheus_client",
    "fastmcp",
    "fastapi",
    "flask",
    "django",
    "httptools",
    "uvloop",
)


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **CLEAN, **SECRET},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=dist
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = dist.glob("oauthproxy-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment holding the wheel and its declared dependencies, no extras."""
    home = tmp_path_factory.mktemp("venv")
    created = _run(sys.executable, "-m", "venv", home / "env", cwd=home)
    assert created.returncode == 0, created.stderr
    python = home / "env" / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "-q", wheel, cwd=home)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield home / "env"


def test_wheel_ships_both_packages_typed_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    # PEP 561: both packages are marked as typed for type checkers of embedding applications.
    assert "oauthproxy_core/py.typed" in names
    assert "oauthproxy_adapters/py.typed" in names
    assert "oauthproxy_adapters/config_schema.py" in names
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("oauthproxy-")}
    assert tops == {"oauthproxy_core", "oauthproxy_adapters"}, tops


def test_plain_install_has_no_extras_and_imports_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    probe = _run(
        venv / "bin" / "python",
        "-c",
        "import importlib.util, oauthproxy_core, oauthproxy_adapters.app;"
        "print(oauthproxy_core.__file__);"
        f"print([m for m in {OPTIONAL!r} if importlib.util.find_spec(m)])",
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    location, extras = probe.stdout.splitlines()
    assert Path(location).is_relative_to(venv), location
    assert extras == "[]", f"an extra was installed: {extras}"


def _minimal_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "http://127.0.0.1:{port}"

[upstream]
provider = "github"
client_id = "Iv1.plain-install"
client_secret_env = "PLAIN_INSTALL_SECRET"

[keys]
file = "{tmp_path / "keys.json"}"
"""
    )
    return path


def test_plain_install_runs_check_config_keys_and_serve(venv: Path, tmp_path: Path) -> None:
    oauthproxy = venv / "bin" / "oauthproxy"
    port = free_port()
    config = _minimal_config(tmp_path, port)

    checked = _run(oauthproxy, "check-config", config, cwd=tmp_path, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"ok: {config}\n  issuer    http://127.0.0.1:{port}\n")
    assert "ModuleNotFoundError" not in checked.stderr

    keys = _run(oauthproxy, "keys", "new", "--out", tmp_path / "other-keys.json", cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr

    command = [str(oauthproxy), "serve", "--config", str(config)]
    serve = ServeProcess(config, port, tmp_path, name="plain", command=command)
    try:
        serve.start(env={**CLEAN, **SECRET})  # waits for /healthz
        metadata = httpx.get(
            f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server",
            timeout=5,
            trust_env=False,
        )
        assert metadata.status_code == 200
        assert metadata.json()["issuer"] == f"http://127.0.0.1:{port}"
    finally:
        status = serve.stop()  # SIGTERM to its own PID
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports the signal.
    assert status in (0, -signal.SIGTERM), serve.output()
    assert "Traceback" not in serve.output()
    assert SECRET["PLAIN_INSTALL_SECRET"] not in serve.output()


def test_demo_without_its_extra_says_which_extra_to_install(venv: Path, tmp_path: Path) -> None:
    demo = _run(venv / "bin" / "oauthproxy", "demo", cwd=tmp_path, timeout=60)
    assert demo.returncode == 1
    assert "pip install 'oauthproxy[demo]'" in demo.stderr
    assert "Traceback" not in demo.stderr


def test_a_redis_store_without_its_extra_is_named_by_check_config_and_serve(
    venv: Path, tmp_path: Path
) -> None:
    """A plain install has no redis package: ``check-config`` warns, naming the extra to install,
    and ``serve`` stops with the same advice instead of ``No module named 'redis'``; the store's
    password appears in neither."""
    oauthproxy = venv / "bin" / "oauthproxy"
    config = _minimal_config(tmp_path, free_port())
    password = "store-password-" + "q" * 12
    with config.open("a") as out:
        out.write(f'\n[store]\nurl = "redis://:{password}@127.0.0.1:6379/0?prefix=plain:"\n')

    checked = _run(oauthproxy, "check-config", config, cwd=tmp_path, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "warning: [store].url: the redis package is not installed: pip install " in (
        checked.stdout
    )
    assert "'oauthproxy[redis]'" in checked.stdout

    served = _run(oauthproxy, "serve", "--config", config, cwd=tmp_path, timeout=60)
    assert served.returncode != 0
    assert "pip install 'oauthproxy[redis]'" in served.stderr
    assert "Traceback" not in served.stderr
    assert password not in checked.stdout + checked.stderr + served.stdout + served.stderr
