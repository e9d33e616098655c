"""spec/openapi.yaml exercised by schemathesis against the assembled server (``build_app``, memory
store) under uvicorn on 127.0.0.1: positive and negative examples for every operation, checked for
no server error and for conformance of status code, content type, headers and body to the spec.

Bounded for CI: a fixed number of examples per operation, derandomized (reproducible). The upstream
provider is never reached (nothing here gets past consent), and client metadata documents are off so
that no generated ``https`` client_id makes the server fetch from the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from oauthproxy_adapters.app import build_app
from oauthproxy_adapters.config_file import parse_settings
from tests.adapters.live_servers import UvicornThread
from tests.hostile.support import SPEC_PATH, TALLY

#: Examples per operation; ``OAUTHPROXY_SCHEMATHESIS_EXAMPLES=200`` for a longer, randomized soak.
SOAK = os.environ.get("OAUTHPROXY_SCHEMATHESIS_EXAMPLES")
MAX_EXAMPLES = int(SOAK) if SOAK else 12

schema = schemathesis.openapi.from_path(SPEC_PATH)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class Live:
    def __init__(self, tmp: Path) -> None:
        self.cleanups: list[Any] = []

        def build(base: str) -> Any:
            settings_ = parse_settings(
                {
                    "server": {"base_url": base},
                    "upstream": {
                        "provider": "oauth2",
                        "client_id": "proxy-client",
                        "client_secret": "upstream-secret-value",
                        # Nothing listens on port 9: never reached by these requests anyway.
                        "authorize_url": "http://127.0.0.1:9/authorize",
                        "token_url": "http://127.0.0.1:9/token",
                        "userinfo_url": "http://127.0.0.1:9/user",
                        "allow_insecure_http": True,
                    },
                    "clients": {"cimd": False},
                    "store": {"url": "memory://"},
                    "keys": {"file": str(tmp / "keys.json")},
                }
            )
            app, _proxy, cleanup = build_app(settings_)
            self.cleanups.append(cleanup)
            return app

        self.server = UvicornThread(build)
        self.base = self.server.base
        self.session = requests.Session()

    def stop(self) -> None:
        self.session.close()
        self.server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("schemathesis"))
    yield server
    server.stop()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms_and_never_fails(case: Any, live: Live) -> None:
    response = case.call(base_url=live.base, session=live.session, timeout=10)
    TALLY.record("openapi (schemathesis, uvicorn)", response.status_code)
    case.validate_response(response, checks=CHECKS)
