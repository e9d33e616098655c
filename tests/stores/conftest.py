"""Fixtures of the store tests: the replicated Redis deployments (``redis_topologies``), started
once per test session on free loopback ports and stopped by PID at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stores.redis_topologies import ClusterSet, SentinelSet


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A primary, a replica and three sentinels, shared by the tests that do not stop them."""
    topology = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def cluster_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """A Cluster of three primaries, shared by the tests."""
    topology = ClusterSet(tmp_path_factory.mktemp("cluster"))
    try:
        yield topology.start()
    finally:
        topology.stop()
