"""``oauthproxy demo`` runs the whole flow on loopback, prints it, and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_prints_every_step_and_exits_zero(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "oauthproxy_adapters",
            "demo",
            "--data-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for step in (
        "-> 401, WWW-Authenticate: Bearer resource_metadata=",
        "3. Register (RFC 7591)",
        "the user clicks Approve",
        "state intact, iss http://127.0.0.1:",
        "5. Redeem the code",
        "you are github:4242 (login demo-user)",
        "7. Refresh the access token",
    ):
        assert step in text, step
    # The embedded default store is a real SQLite file; the keys were created with mode 0600.
    assert (tmp_path / "state" / "state.db").exists()
    assert (tmp_path / "state" / "keys.json").stat().st_mode & 0o077 == 0
    # Nothing secret is printed: codes and states are shortened.
    assert "Traceback" not in out.stderr
