"""``oauthproxy serve`` whose document fetcher knows one test host (test use only).

Usage: ``python trusting_serve.py serve --config CONFIG`` with, in the environment,

- ``TEST_DOCUMENT_HOST=<name>``: the safe fetcher resolves this name to 127.0.0.1, and no other
  name at all (a refused host must never be looked up: a fetch of it fails here);
- ``TEST_DOCUMENT_CA=<file>``: the only certificate the fetcher trusts (the test's self-signed one).

The process imports the real CLI and replaces the safe fetcher's resolver and trust store in its own
memory only; every check of the fetcher (the address policy under ``cimd_allow_loopback``, pinning,
SNI and certificate verification for the name, size and content type) still runs. Nothing of this is
installed with the package.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
from collections.abc import Sequence

from oauthproxy_adapters import app
from oauthproxy_adapters.cli import main
from oauthproxy_adapters.safe_fetch import AsyncSafeFetcher

_HOST = os.environ["TEST_DOCUMENT_HOST"]
_TRUST = ssl.create_default_context(cafile=os.environ["TEST_DOCUMENT_CA"])


def _resolve(host: str, _port: int) -> Sequence[str]:
    return ["127.0.0.1"] if host == _HOST else []


app.AsyncSafeFetcher = functools.partial(  # type: ignore[misc]
    AsyncSafeFetcher, resolver=_resolve, verify=_TRUST
)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
