"""Fixtures for namespace tests: the default topology built under the prefix ``lsxb``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from latscope.lab.netns import Net, build, list_namespaces, teardown
from latscope.lab.topology import Topology, load_topology

PREFIX = "lsxb" + os.environ["LSX_RUN_ID"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def default_topology() -> Topology:
    return load_topology(REPO / "topologies" / "default.yaml")


@pytest.fixture
def net(default_topology: Topology) -> Iterator[Net]:
    """The default topology as namespaces; torn down (and checked gone) even on failure."""
    teardown(PREFIX)                # leftovers of a crashed earlier run of these tests
    built = build(default_topology, prefix=PREFIX)
    try:
        yield built
    finally:
        built.close()
        assert list_namespaces(PREFIX) == []
