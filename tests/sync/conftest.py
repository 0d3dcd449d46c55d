"""Fixtures of the sync tests: the test network with a responder on every host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sync_testnet import PREFIX, SYNC_IFACE_PEER, TARGETS, TOPOLOGY, SyncNet

from latscope.lab import netns
from latscope.lab.topology import load_topology
from latscope.sync.keys import SyncKeys


@pytest.fixture(scope="module")
def sync_net(request: pytest.FixtureRequest) -> Iterator[SyncNet]:
    """A module sets KEY_PERIOD_S to have its responders rotate keys that often."""
    from latscope.sync.keys import DEFAULT_PERIOD_S
    from latscope.sync.responder import start_responder

    period = getattr(request.module, "KEY_PERIOD_S", DEFAULT_PERIOD_S)

    netns.teardown(PREFIX)  # what a crashed earlier run left behind
    with netns.build(load_topology(TOPOLOGY), prefix=PREFIX) as net:
        sn = SyncNet(net, SyncKeys.generate(period))
        try:
            for _host, addr, _ in TARGETS.values():
                net.wait_reachable("mgr", addr, timeout=10)
            for host, peer in SYNC_IFACE_PEER.items():
                sn.responders[host] = start_responder(
                    net.ns_name(host), net.ifname(host, peer), net.clock(host), sn.keys,
                    sn.allow(host))
            yield sn
        finally:
            for r in sn.responders.values():
                r.close()
