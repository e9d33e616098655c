"""Run every benchmark, then regenerate ``benchmarks/README.md`` from their results.

Usage: ``python benchmarks/run_all.py [--quick]`` (``sh .ci/dev bench [--quick]`` calls this).
``--quick`` is passed to each benchmark: a few rounds only, for smoke tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("core_flow.py", "stores_flow.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    args = parser.parse_args(argv)
    extra = ["--quick"] if args.quick else []
    for script in BENCHMARKS:
        print(f"== {script} ==", flush=True)
        done = subprocess.run([sys.executable, str(HERE / script), *extra], check=False)
        if done.returncode != 0:
            print(f"{script} failed with exit code {done.returncode}", file=sys.stderr)
            return done.returncode
    print("== render_readme.py ==", flush=True)
    return subprocess.run([sys.executable, str(HERE / "render_readme.py")], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
