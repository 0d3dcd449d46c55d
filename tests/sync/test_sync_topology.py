"""Sync of the demo's own topology (topologies/default.yaml) through TopologySync: the
library entry point the demo uses, containers and the shaped link included."""

from __future__ import annotations

import os
import time

import pytest

from latscope.lab import netns
from latscope.lab.sync_run import TopologySync
from latscope.lab.topology import load_topology
from latscope.paths import REPO_ROOT
from latscope.sync.estimator import EstimatorConfig

pytestmark = pytest.mark.root

PREFIX = "lsxcd" + os.environ["LSX_RUN_ID"]


def test_default_topology_every_host_within_bound() -> None:
    netns.teardown(PREFIX)
    topo = load_topology(REPO_ROOT / "topologies" / "default.yaml")
    with netns.build(topo, prefix=PREFIX) as net:
        net.wait_all_reachable()
        sync = TopologySync(net, interval_s=0.05, burst=2,
                            estimator=EstimatorConfig(window_ns=3_000_000_000,
                                                      bucket_ns=50_000_000))
        with sync:
            deadline = time.monotonic() + 20
            while not sync.synced():
                assert time.monotonic() < deadline, f"not synced: {sync.summary()}"
                time.sleep(0.1)
            time.sleep(1.0)  # let the window fill a little beyond the first fit
            summary = sync.summary()
    assert set(summary) == {h.name for h in topo.hosts if h.role != "manager"}
    for host, s in summary.items():
        assert abs(s["error_ns"]) <= s["bound_ns"], f"{host}: {s}"
        assert abs(s["error_ns"]) <= 50_000, f"{host}: {s}"
        c = topo.clock(host)
        assert s["drift_ppm"] == pytest.approx(c.drift_ppm, abs=2.0), f"{host}: {s}"
