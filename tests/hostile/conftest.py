"""The tally of hostile inputs (support.TALLY): printed at the end of the run and written as JSON to
``$OAUTHPROXY_HOSTILE_TALLY`` (default: ``oauthproxy-hostile-tally.json`` in the temp directory).

``no_exception_logged``: a module that uses it (``pytestmark``) fails any test during which an
exception reached an ``oauthproxy`` logger at ERROR, which every adapter does before answering 500."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.support import TALLY, ErrorLog


@pytest.fixture
def no_exception_logged() -> Iterator[None]:
    with ErrorLog() as errors:
        yield
    assert not errors.records, [r.getMessage() for r in errors.records]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY.counts:
        return
    path = os.environ.get("OAUTHPROXY_HOSTILE_TALLY") or os.path.join(
        tempfile.gettempdir(), "oauthproxy-hostile-tally.json"
    )
    TALLY.write(path)
    tr = terminalreporter
    tr.write_sep("-", "hostile inputs")
    tr.write_line(f"{'layer':<44} {'inputs':>8} {'5xx':>5} {'501/505':>8}")
    for layer, row in sorted(TALLY.counts.items()):
        tr.write_line(f"{layer:<44} {row['inputs']:>8} {row['5xx']:>5} {row['501/505']:>8}")
    tr.write_line(f"written to {path}")
