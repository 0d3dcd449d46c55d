"""Components wired by hand against one built topology, as on real hosts: `topology up`, then
each host's `sync responder` and the `sync manager` started separately with nothing but
`--topology`. Names, namespaces, devices, addresses and injected clocks (with the built
topology's drift epoch) all come from the file and the namespaces; no command needs another
to have run first (the responders start before the manager and create the key file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from latscope.bpf.clock import ClockInjection
from latscope.lab import netns
from latscope.sync.status import read_models

pytestmark = [pytest.mark.root, pytest.mark.stack]

PREFIX = "lsxh" + os.environ["LSX_RUN_ID"]
LATSCOPE = [sys.executable, "-m", "latscope"]
# Drifts large enough that an epoch off by the 2 s the test waits moves a clock by 60-100 µs.
TOPOLOGY = """\
hosts:
  - {name: boss, role: manager}
  - {name: ha, role: host, clock: {offset_ns: 3000000, drift_ppm: 50}}
  - {name: hb, role: host, clock: {offset_ns: -2000000, drift_ppm: -30}}
links:
  - {a: boss, b: ha, a_addr: [10.93.1.1/24], b_addr: [10.93.1.2/24]}
  - {a: boss, b: hb, a_addr: [10.93.2.1/24], b_addr: [10.93.2.2/24]}
"""


def test_responders_and_manager_started_by_hand_agree_with_the_topology(
        stack, tmp_path: Path) -> None:
    topo = tmp_path / "hand.yaml"
    topo.write_text(TOPOLOGY)
    key_file = tmp_path / "key"
    topic = f"lsxt{os.environ['LSX_RUN_ID']}-clock-{uuid.uuid4().hex[:8]}"
    netns.teardown(PREFIX)
    up = subprocess.Popen([*LATSCOPE, "topology", "up", str(topo), "--prefix", PREFIX, "--json"],
                          stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = []
    try:
        built = json.loads(up.stdout.readline())
        epoch = built["epoch_ns"]          # what `topology up` says, read independently
        time.sleep(2)                      # a responder's own start time would be 2 s late
        common = ["--topology", str(topo), "--prefix", PREFIX, "--key-file", str(key_file)]
        for host in ("ha", "hb"):
            procs.append(subprocess.Popen(
                [*LATSCOPE, "sync", "responder", *common, "--host", host, "--duration", "30",
                 "--progress", "1", "--json"], stdout=subprocess.DEVNULL, text=True))
        out = subprocess.run(
            [*LATSCOPE, "sync", "manager", *common, "--interval", "0.05", "--duration", "4",
             "--topic", topic, "--samples-topic", topic + "-samples", "--json"],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        hosts = json.loads(out.stdout)["hosts"]
        assert set(hosts) == {"ha", "hb"}                 # the topology's names
        models, bad = read_models(stack.kafka_bootstrap, topic)
        assert bad == 0 and set(models) == {"ha", "hb"}
        assert {m["manager"] for m in models.values()} == {"boss"}   # not "manager"
        clocks = {"ha": (3_000_000, 50.0), "hb": (-2_000_000, -30.0)}
        for host, (offset, drift) in clocks.items():
            m = hosts[host]["model"]
            truth = ClockInjection(offset, drift, epoch).true_offset(m["ref_ns"])
            err = m["offset_ns"] - truth
            assert abs(err) <= max(m["error_bound_ns"], 1.0), (host, err, m)
            assert abs(err) <= 5_000, (host, err)
            assert abs(m["drift_ppm"] - drift) < 1.0, (host, m["drift_ppm"])
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(30)
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        netns.teardown(PREFIX)
    assert netns.list_namespaces(PREFIX) == []
    assert all(p.returncode == 0 for p in procs)
