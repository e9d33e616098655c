"""Run every benchmark, then regenerate ``benchmarks/README.md`` from their results.

Usage: ``python benchmarks/run_all.py [--quick] [--only NAME ...]`` (``sh .ci/dev bench [--quick]``
calls this). ``--quick`` is passed to each benchmark: a few rounds only, for smoke tests.

The comparison benchmarks (``compare_*.py``) need the benchmark-only packages fastmcp and mcp (the
``bench`` extra); when they are missing those benchmarks are skipped with a message and their old
result files are left as they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: (script, Python modules it needs beyond the project's own)
BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core_flow.py", ()),
    ("stores_flow.py", ("redis", "psycopg")),
    ("compare_flow.py", ("fastmcp", "mcp", "redis")),
    ("compare_bearer.py", ("fastmcp", "mcp")),
    ("compare_loopback.py", ("fastmcp", "mcp", "uvicorn")),
    ("compare_scaling.py", ()),
    ("revalidation.py", ()),
    ("client_credentials.py", ()),
    ("trusted_issuers.py", ()),
    ("gateway_policy.py", ()),
    # Fills each store with 10^6 grants and 10^6 registrations: about ten minutes on two cores.
    ("expiry_at_scale.py", ("redis", "psycopg")),
)


def missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only these scripts (e.g. compare_flow.py)"
    )
    args = parser.parse_args(argv)
    extra = ["--quick"] if args.quick else []
    # One scratch data directory for fastmcp's default store, shared by every script and server
    # subprocess of this run, removed at the end.
    env = dict(os.environ)
    home = tempfile.mkdtemp(prefix="fastmcp-bench-home-")
    env["FASTMCP_HOME"] = home
    try:
        for script, needs in BENCHMARKS:
            if args.only is not None and script not in args.only:
                continue
            if not (HERE / script).exists():
                continue
            absent = missing(needs)
            if absent:
                print(
                    f"== {script}: skipped, missing {', '.join(absent)} "
                    '(pip install -e ".[bench]") ==',
                    flush=True,
                )
                continue
            print(f"== {script} ==", flush=True)
            done = subprocess.run(
                [sys.executable, str(HERE / script), *extra], check=False, env=env
            )
            if done.returncode != 0:
                print(f"{script} failed with exit code {done.returncode}", file=sys.stderr)
                return done.returncode
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("== render_readme.py ==", flush=True)
    return subprocess.run([sys.executable, str(HERE / "render_readme.py")], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
