"""Fixtures of the producer tests: a scratch network namespace with the `lsxa` prefix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kernel_objects import kernel_ids


@pytest.fixture
def link_ids() -> Callable[[], set[int]]:
    """IDs of every BPF link in the kernel right now (bpftool), to compare before/after."""
    return lambda: kernel_ids("link")


# ---- a two-host topology with a container, and traffic through it ------------------------------

TOPOLOGY = {
    "hosts": [{"name": "h1", "role": "host", "clock": {"offset_ns": 5_000_000, "drift_ppm": 20}},
              {"name": "h2", "role": "manager"},
              {"name": "c1", "role": "container", "parent": "h2"}],
    "bridges": [{"name": "br0", "host": "h2", "addr": ["10.2.0.1/24", "fd00:2::1/64"]}],
    "links": [{"a": "h1", "b": "h2", "a_addr": ["10.1.0.1/24", "fd00:1::1/64"],
               "b_addr": ["10.1.0.2/24", "fd00:1::2/64"]},
              {"a": "c1", "b": "br0", "a_addr": ["10.2.0.2/24", "fd00:2::2/64"]}],
    "routes": [{"host": "h1", "dst": "10.2.0.0/24", "via": "10.1.0.2"},
               {"host": "h1", "dst": "fd00:2::/64", "via": "fd00:1::2"}],
}


@pytest.fixture(scope="module")
def net() -> Iterator[Any]:
    """h1 ==veth== h2 --br0-- c1, namespaces lsxa<run id>-*, removed afterwards."""
    from producer_helpers import PREFIX

    from latscope.lab import netns
    from latscope.lab.topology import parse_topology
    netns.teardown(PREFIX, ["h1", "h2", "c1"])
    with netns.build(parse_topology(TOPOLOGY, "producers-test"), prefix=PREFIX) as n:
        n.wait_all_reachable()
        yield n
