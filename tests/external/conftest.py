"""External-tool agreement tests (design §9): real kernel, Kafka, Faust worker and the tool."""

from __future__ import annotations

import shutil

import pytest
from needs import missing
from sockperf_run import PREFIX

from latscope.lab import netns


@pytest.fixture(scope="session")
def tools() -> None:
    """sockperf and iperf3 (Debian packages, in the Makefile's APT_PACKAGES)."""
    absent = [t for t in ("sockperf", "iperf3") if shutil.which(t) is None]
    if absent:
        missing(f"{', '.join(absent)} not installed (make apt)")


@pytest.fixture(scope="session")
def sweep() -> object:
    """After the session: no namespace of ours is left, whatever failed."""
    yield None
    left = netns.teardown(PREFIX)   # a crashed run's leftovers, if any
    assert not netns.list_namespaces(PREFIX), left
