"""``oauthproxy serve`` as a child process for tests, and an ASGI app on a loopback socket in a thread.

``ServeProcess`` runs the console script (or any command, e.g. a test wrapper around ``serve``) with
a configuration file, its output appended to ``<workdir>/<name>.log``. ``start`` returns once
``GET /healthz`` answers 200 (the liveness endpoint ``app._Root`` serves, spec/architecture.md,
"Adapters"); ``stop`` signals the process by its own PID, never by name, and waits for it. It can
be started again on the same port and files, as a restart. ``ServeProcess.launch`` picks a free
loopback port, writes the configuration for it and starts the process in one call.

``AppThread`` serves an ASGI application (a ``FakeProvider``'s ``app``, a test MCP server) under
uvicorn in a daemon thread, on a socket bound to 127.0.0.1 before the app is built, so the app can
know its own base URL.

Everything binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

__all__ = [
    "AppThread",
    "ServeError",
    "ServeProcess",
    "free_port",
    "oauthproxy_command",
    "wait_healthy",
]

#: Seconds a process or server gets to answer ``/healthz`` after it starts.
START_TIMEOUT = 20.0


class ServeError(AssertionError):
    """A process did not start, or did not stop when told to; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oauthproxy_command() -> list[str]:
    """How to run ``oauthproxy``: the console script next to the running interpreter (a virtual
    environment's ``bin/oauthproxy``), else the one on ``PATH``, else ``python -m oauthproxy_adapters``."""
    script = Path(sys.executable).parent / "oauthproxy"
    if script.exists():
        return [str(script)]
    found = shutil.which("oauthproxy")
    if found is not None:
        return [found]
    return [sys.executable, "-m", "oauthproxy_adapters"]


def wait_healthy(
    base_url: str, alive: Callable[[], bool], what: str, timeout: float = START_TIMEOUT
) -> None:
    """Poll ``base_url + "/healthz"`` until it answers 200. Raises ``ServeError`` if ``alive()``
    turns false first, or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise ServeError(f"{what} exited at start")
        with contextlib.suppress(httpx.HTTPError):
            resp = httpx.get(base_url + "/healthz", timeout=1.0, trust_env=False)
            if resp.status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ServeError(f"{what} did not answer /healthz")
        time.sleep(0.03)


class ServeProcess:
    """One ``oauthproxy serve --config CONFIG`` (or ``command``) process listening on
    127.0.0.1:``port``, the port its configuration names.

    ``workdir`` is its working directory and holds its log; ``OAUTHPROXY_DATA_DIR`` points into it
    unless ``env`` says otherwise. ``starts`` counts the starts.
    """

    def __init__(
        self,
        config: Path,
        port: int,
        workdir: Path,
        name: str = "serve",
        command: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self.workdir = workdir
        self.name = name
        self.netloc = f"127.0.0.1:{port}"
        self.base_url = f"http://{self.netloc}"
        self.log = workdir / f"{name}.log"
        self.command = list(command or [*oauthproxy_command(), "serve", "--config", str(config)])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @classmethod
    def launch(
        cls,
        workdir: Path,
        config: Callable[[int], str],
        *options: str,
        name: str = "serve",
        env: Mapping[str, str] | None = None,
    ) -> ServeProcess:
        """Pick a free loopback port, write ``config(port)`` to ``<workdir>/<name>.toml`` and start
        ``oauthproxy serve --config <that file> *options``; return the started process."""
        port = free_port()
        path = workdir / f"{name}.toml"
        path.write_text(config(port))
        command = [*oauthproxy_command(), "serve", "--config", str(path), *options]
        return cls(path, port, workdir, name=name, command=command).start(env)

    def start(self, env: Mapping[str, str] | None = None) -> ServeProcess:
        """Start the process and wait until it is healthy; ``env`` adds to the environment."""
        if self.proc is not None and self.proc.poll() is None:
            raise ServeError(f"{self.name} is already running")
        self.starts += 1
        full_env = {**os.environ, "OAUTHPROXY_DATA_DIR": str(self.workdir / "data"), **(env or {})}
        with open(self.log, "ab") as log:
            log.write(f"--- start #{self.starts}\n".encode())
            # The command is the caller's own (a test's), never input from a request.
            self.proc = subprocess.Popen(  # noqa: S603
                self.command,
                cwd=self.workdir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(self.base_url, self.running, self.name)
        except ServeError as exc:
            self.stop(signal.SIGKILL)
            raise ServeError(f"{exc}:\n{self.output()}") from None
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServeError(f"{self.name} was never started")
        return self.proc.pid

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself; its exit status."""
        if self.proc is None:
            raise ServeError(f"{self.name} was never started")
        return self.proc.wait(timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig`` to this process (by its own PID) and wait for it to exit; its exit status
        (``None`` if it was never started). A process that ignores ``sig`` is killed, and
        ``ServeError`` raised."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise ServeError(f"{self.name} ignored {sig.name}:\n{self.output()}") from None

    def output(self, tail: int | None = 4000) -> str:
        """The last ``tail`` characters of the process's log (stdout and stderr), or all of it."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text if tail is None else text[-tail:]


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class AppThread:
    """``build(base_url)``'s ASGI app under uvicorn in a daemon thread, on a free loopback port.

    ``options`` are passed on to ``uvicorn.Config`` (``proxy_headers=False``: believe no peer's
    ``X-Forwarded-For``, as ``oauthproxy serve`` with ``forwarded_allow_ips = []``). Stop it with
    ``stop``.
    """

    def __init__(self, build: Callable[[str], Any], **options: Any) -> None:
        sock = bound_socket()
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings: dict[str, Any] = {
            "lifespan": "off",
            "log_level": "warning",
            "http": "h11",
            "ws": "none",
        }
        settings.update(options)
        self.server = uvicorn.Server(uvicorn.Config(build(self.base), **settings))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._sock = sock
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise ServeError("uvicorn did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()
