"""A real upstream OpenID Connect provider for the end-to-end tests.

``tests/upstream_idp/provider.mjs`` runs ``oidc-provider`` (Node) on 127.0.0.1 with one static
confidential client and a login that completes by itself for the account ``testuser``, or for the
account a test chose (``IdpProcess.set_account``, ``IdpProcess.login_as``). The helpers here install
it (``npm ci``), start it as a child process, wait for its ready line and stop it again. Nothing here
is auto-loaded: import the fixtures (``idp_installed``, ``oidc_idp``) from ``tests/e2e/conftest.py``.

A missing Node/npm or a failed ``npm ci`` raises :class:`IdpError`; these tests are never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

IDP_DIR = Path(__file__).resolve().parent.parent / "upstream_idp"
PROVIDER_SCRIPT = IDP_DIR / "provider.mjs"

CLIENT_ID = "proxy-client"
CLIENT_SECRET = "proxy-secret"
TEST_USER = {
    "sub": "testuser",
    "email": "test@example.com",
    "name": "Test User",
    "preferred_username": "tester",
}

#: How long ``start_idp`` waits for the provider's ready line. Node loads oidc-provider in a second or
#: two on an idle machine; with the suite running on every core (pytest -n 2) a start has been seen
#: to take over 15 s. A provider that never comes up still fails the test, with its output.
READY_TIMEOUT = 60.0
NPM_TIMEOUT = 600.0

_install_lock = threading.Lock()


class IdpError(RuntimeError):
    """The upstream IdP could not be installed or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise IdpError(f"`{name}` is not on PATH; the upstream IdP needs Node.js 20+ and npm")
    return path


def ensure_idp_installed() -> Path:
    """Run ``npm ci`` in tests/upstream_idp unless its node_modules is already there."""
    with _install_lock:
        marker = IDP_DIR / "node_modules" / "oidc-provider" / "package.json"
        if marker.is_file():
            return IDP_DIR
        npm = _require_executable("npm")
        try:
            completed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=IDP_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise IdpError(
                f"`npm ci` in {IDP_DIR} timed out after {NPM_TIMEOUT:.0f} s\n"
                f"--- stdout ---\n{exc.stdout or ''}\n--- stderr ---\n{exc.stderr or ''}"
            ) from exc
        if completed.returncode != 0 or not marker.is_file():
            raise IdpError(
                f"`npm ci` in {IDP_DIR} failed with exit code {completed.returncode}\n"
                f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}"
            )
        return IDP_DIR


class IdpProcess:
    """A running ``provider.mjs``; ``endpoints`` is its ready line (discovery metadata subset)."""

    def __init__(
        self, proc: subprocess.Popen[str], redirect_uris: Sequence[str], *, deny: bool
    ) -> None:
        self.proc = proc
        self.redirect_uris = list(redirect_uris)
        self.deny = deny
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.endpoints: dict[str, Any] = {}
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._ready: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump_stdout, name="idp-stdout", daemon=True),
            threading.Thread(target=self._pump_stderr, name="idp-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- output handling (pipes are always drained so the child can never block on them) --

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        announced = False
        for line in self.proc.stdout:
            self._stdout.append(line)
            if announced or not line.lstrip().startswith("{"):
                continue
            try:
                payload = json.loads(line)
            except ValueError:
                continue
            if isinstance(payload, dict) and payload.get("ready") is True:
                announced = True
                self._ready.put(payload)
        if not announced:
            self._ready.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def output(self) -> str:
        """Everything the provider printed so far (for assertion messages)."""
        return (
            f"--- upstream IdP stdout ---\n{''.join(self._stdout)}"
            f"--- upstream IdP stderr ---\n{''.join(self._stderr)}"
        )

    def _wait_ready(self, timeout: float) -> None:
        try:
            payload = self._ready.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise IdpError(
                f"upstream IdP not ready after {timeout:.0f} s\n{self.output()}"
            ) from None
        if payload is None:
            self.stop()
            raise IdpError(
                f"upstream IdP exited before it was ready (exit code {self.proc.returncode})\n"
                f"{self.output()}"
            )
        self.endpoints = payload

    # -- public surface --

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def issuer(self) -> str:
        return str(self.endpoints["issuer"])

    @property
    def port(self) -> int:
        return int(self.endpoints["port"])

    @property
    def authorization_endpoint(self) -> str:
        return str(self.endpoints["authorization_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.endpoints["token_endpoint"])

    @property
    def userinfo_endpoint(self) -> str:
        return str(self.endpoints["userinfo_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.endpoints["jwks_uri"])

    def running(self) -> bool:
        return self.proc.poll() is None

    # -- test controls (provider.mjs, "Test controls") --

    def set_account(
        self,
        account_id: str,
        *,
        claims: dict[str, Any] | None = None,
        github: dict[str, Any] | None = None,
        disabled: bool | None = None,
    ) -> dict[str, Any]:
        """Create or change an account: ``claims`` and ``github`` are merged key by key (``None``
        as a value removes the key); ``disabled`` switches the account off or on upstream."""
        body: dict[str, Any] = {}
        if claims is not None:
            body["claims"] = claims
        if github is not None:
            body["github"] = github
        if disabled is not None:
            body["disabled"] = disabled
        response = httpx.post(
            f"{self.issuer}/_test/accounts/{quote(account_id, safe='')}", json=body, timeout=5
        )
        assert response.status_code == 200, response.text
        account: dict[str, Any] = response.json()["account"]
        return account

    def settings(self, **values: str) -> dict[str, Any]:
        """``POST /_test/settings`` (deny, token_format, github_iss, email_verified, login_as)."""
        response = httpx.post(f"{self.issuer}/_test/settings?{urlencode(values)}", timeout=5)
        assert response.status_code == 200, response.text
        current: dict[str, Any] = response.json()["settings"]
        return current

    def login_as(self, account_id: str) -> None:
        """The account the next logins sign in as."""
        self.settings(login_as=account_id)

    def log(self) -> list[dict[str, Any]]:
        """What the provider saw (``GET /_test/log``): never a token, code or secret."""
        response = httpx.get(f"{self.issuer}/_test/log", timeout=5)
        assert response.status_code == 200, response.text
        seen: list[dict[str, Any]] = response.json()["seen"]
        return seen

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM this provider's PID, wait, SIGKILL it if it does not go away."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        for reader in self._readers:
            reader.join(timeout=timeout)

    def __enter__(self) -> IdpProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        issuer = self.endpoints.get("issuer", "?")
        return f"<IdpProcess pid={self.proc.pid} issuer={issuer} deny={self.deny}>"


def start_idp(
    port: int,
    redirect_uris: Sequence[str],
    *,
    access_ttl: int = 3600,
    deny: bool = False,
    token_auth_method: str = "client_secret_post",
    timeout: float = READY_TIMEOUT,
    extra_env: dict[str, str] | None = None,
) -> IdpProcess:
    """Start ``node provider.mjs`` on 127.0.0.1:``port`` (0 lets the provider pick a free port)
    and return once it has printed its ready line. The issuer is ``http://127.0.0.1:<port>``."""
    if not redirect_uris:
        raise ValueError("the static client needs at least one redirect URI")
    ensure_idp_installed()
    node = _require_executable("node")
    env = dict(os.environ)
    env.pop("NODE_ENV", None)
    env.update(
        {
            "IDP_PORT": str(port),
            "IDP_REDIRECT_URIS": ",".join(redirect_uris),
            "IDP_ACCESS_TTL": str(access_ttl),
            "IDP_DENY": "1" if deny else "0",
            "IDP_TOKEN_AUTH_METHOD": token_auth_method,
            # The provider exits when this pipe closes, so it cannot outlive the test process.
            "IDP_WATCH_STDIN": "1",
        }
    )
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [node, str(PROVIDER_SCRIPT), str(port)],
        cwd=IDP_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    idp = IdpProcess(proc, redirect_uris, deny=deny)
    idp._wait_ready(timeout)
    return idp


IdpFactory = Callable[..., IdpProcess]


@pytest.fixture(scope="session")
def idp_installed() -> Path:
    """Installs the provider's npm dependencies once per session."""
    return ensure_idp_installed()


@pytest.fixture
def oidc_idp(idp_installed: Path) -> Iterator[IdpFactory]:
    """Factory: ``oidc_idp(redirect_uris, port=0, access_ttl=3600, deny=False)`` starts an IdP;
    every IdP started through it is stopped when the test ends."""
    started: list[IdpProcess] = []

    def factory(
        redirect_uris: Sequence[str],
        *,
        port: int = 0,
        access_ttl: int = 3600,
        deny: bool = False,
        **kwargs: Any,
    ) -> IdpProcess:
        idp = start_idp(port, redirect_uris, access_ttl=access_ttl, deny=deny, **kwargs)
        started.append(idp)
        return idp

    yield factory
    for idp in reversed(started):
        idp.stop()
