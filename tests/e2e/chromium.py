"""Headless Chromium for tests: find it, take screenshots, and drive a page over the DevTools protocol.

- ``chromium_binary()`` fails the test (never skips it) when Chromium is missing: ``sh .ci/dev test``
  installs Debian's ``chromium`` when it is not there.
- ``screenshot(url, path, width, height)`` is ``chromium --headless --screenshot``.
- ``Browser`` starts one headless Chromium with ``--remote-debugging-port=0`` and talks to its page
  target over the Chrome DevTools Protocol (one WebSocket, ``websockets.sync``); ``open_tab`` opens
  another ``Page`` of the same browser (same profile, same cookies) with a WebSocket of its own.

Chromium must reach nothing but loopback (no other host is a legitimate target from a test): the
flags below turn off its background services, and ``--host-resolver-rules`` makes every host name
other than 127.0.0.1 fail to resolve. Every process is started here and stopped by its own Popen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

#: Flags for a quiet, loopback-only, root-compatible headless Chromium.
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root; the sandbox refuses to start as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--no-pings",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def chromium_binary() -> str:
    """The Chromium executable; a missing browser is a failure, not a skip."""
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    pytest.fail(
        "Chromium is not installed: `apt-get install chromium` (sh .ci/dev test installs it when "
        "run as root), or set CHROMIUM to the browser's path"
    )


def screenshot(url: str, path: Path, width: int, height: int, *, timeout: float = 60.0) -> Path:
    """Render ``url`` at ``width`` x ``height`` CSS pixels into the PNG ``path``."""
    with tempfile.TemporaryDirectory(prefix="oauthproxy-chromium-") as profile:
        done = subprocess.run(
            [
                chromium_binary(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={path}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert done.returncode == 0 and path.exists(), done.stderr[-2000:]
    return path


def png_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, number of distinct pixel rows) of an 8-bit RGB/RGBA PNG, checking its format.

    Decodes the image data (zlib) and undoes no filters: identical filtered rows are identical rows
    for the purpose of telling a blank image (every row alike) from a rendered page.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos = 8
    width = height = 0
    channels = 0
    idat = bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8, f"bit depth {depth}"
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(bytes(idat))
    stride = 1 + width * channels
    assert len(raw) == stride * height, "image data does not match the header's size"
    rows = {raw[i : i + stride] for i in range(0, len(raw), stride)}
    return width, height, len(rows)


class CDPError(RuntimeError):
    pass


class Page:
    """One page (tab) of a Chromium, driven over its own DevTools WebSocket."""

    def __init__(self, ws: ClientConnection | None, timeout: float) -> None:
        self._ws: ClientConnection | None = ws
        self.timeout = timeout
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result; events received meanwhile are kept."""
        assert self._ws is not None
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first not yet consumed event named ``method`` (waiting for it if needed)."""
        assert self._ws is not None
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return dict(self.events.pop(i).get("params", {}))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no {method} event within the timeout")
            message = json.loads(self._ws.recv(timeout=remaining))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (DevTools, not the page's CSP)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def wait_until(self, expression: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                value = self.evaluate(expression)
            except CDPError:
                value = None  # the page is between two documents
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"{expression} stayed false")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def press_tab(self) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Tab",
                code="Tab",
                windowsVirtualKeyCode=9,
                nativeVirtualKeyCode=9,
            )


class Browser(Page):
    """One headless Chromium and its first page, driven over the DevTools protocol; ``open_tab``
    opens more pages in the same browser (one profile: one cookie jar)."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="oauthproxy-chromium-")
        self.process = subprocess.Popen(
            [
                chromium_binary(),
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: stopped with its helpers below
        )
        self._stack = contextlib.ExitStack()
        self._drain: threading.Thread | None = None
        self._port = 0
        super().__init__(None, timeout)
        try:
            self._port = self._devtools_port()
            self._ws = self._stack.enter_context(
                connect(self._page_ws_url(self._port), max_size=64 * 1024 * 1024)
            )
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + self.timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            seen.append(line)
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                # Keep reading Chromium's log so a full pipe never blocks it.
                stream = self.process.stderr
                self._drain = threading.Thread(target=stream.read, daemon=True)
                self._drain.start()
                return int(match.group(1))
        raise CDPError("Chromium did not start its DevTools endpoint: " + "".join(seen)[-2000:])

    def _page_ws_url(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                targets = json.load(resp)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise CDPError("Chromium has no page target")

    def open_tab(self, url: str = "about:blank") -> Page:
        """A new tab of this browser (DevTools ``/json/new``), with page and runtime events on;
        closed with the browser."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._port}/json/new?{urllib.parse.quote(url, safe='')}",
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            target = json.load(resp)
        ws = self._stack.enter_context(
            connect(str(target["webSocketDebuggerUrl"]), max_size=64 * 1024 * 1024)
        )
        tab = Page(ws, self.timeout)
        tab.send("Page.enable")
        tab.send("Runtime.enable")
        return tab

    def close(self) -> None:
        self._stack.close()
        self._ws = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Renderer and GPU helpers of this browser (its own process group) go with it.
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._drain is not None:
            self._drain.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._profile.cleanup()
