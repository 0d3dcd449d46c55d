"""Two runs side by side on one machine: the same topology, so the same addresses, under two
namespace prefixes, each with a flow running. Tearing one run down (its own close, then the
crash cleanup that SIGKILLs whatever is left in its namespaces) must leave the other's
namespaces, devices and processes alone, and its flow delivering.

The second prefix extends the first (``lsxp<id>`` and ``lsxp<id>z``): the hardest case for
matching by name, since every name of the second run starts with the first's prefix.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from latscope.lab.netns import Net, build, teardown
from latscope.lab.topology import load_topology
from latscope.lab.traffic import start_flows

pytestmark = pytest.mark.root
PREFIX_A = "lsxp" + os.environ["LSX_RUN_ID"]
PREFIX_B = PREFIX_A + "z"
HOSTS = ("h1", "h2", "mgr")
TOPOLOGY = """
hosts:
  - {name: mgr, role: manager}
  - {name: h1, role: host}
  - {name: h2, role: host}
links:
  - {a: h1, b: h2, a_addr: [10.7.0.1/24], b_addr: [10.7.0.2/24]}
  - {a: mgr, b: h1, a_addr: [10.9.0.1/24], b_addr: [10.9.0.2/24]}
routes:
  - {host: mgr, dst: 10.7.0.0/24, via: 10.9.0.2}
  - {host: h2, dst: 10.9.0.0/24, via: 10.7.0.1}
flows:
  - {name: f, src: h1, dst: h2, proto: tcp, family: 4, port: 5291, rate: 2mbit}
sampling: {size: 72400, ports: [5291]}
"""


def received(net: Net) -> int:
    """Bytes h2's link device has received: the kernel's counter, read in h2's namespace."""
    with net.ipr("h2") as ipr:
        (link,) = ipr.get_links(ifname=net.ifname("h2", "h1"))
        return link.get("IFLA_STATS64")["rx_bytes"]


def moving(net: Net, timeout: float = 10.0) -> int:
    """Wait until h2 receives the flow (bytes keep arriving); returns the counter."""
    start = received(net)
    deadline = time.monotonic() + timeout
    while (now := received(net)) < start + 20_000:
        assert time.monotonic() < deadline, f"{net.prefix}: flow not delivering"
        time.sleep(0.05)
    return now


# What exists is read from the kernel here, not with the builder's own helpers
# (list_namespaces, namespace_pids), which are part of what is under test.

def namespaces(prefix: str) -> list[str]:
    """Named namespaces of a run: /run/netns/{prefix}-{host}."""
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{prefix}-"))


def processes(prefix: str) -> set[int]:
    """Processes inside a run's namespaces, by the inode of their network namespace."""
    inodes = {os.stat(f"/run/netns/{n}").st_ino for n in namespaces(prefix)}
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                out.add(int(pid))
        except OSError:   # exited meanwhile
            pass
    return out


@pytest.mark.parametrize("how", ["close", "crash cleanup"])
def test_teardown_of_one_run_leaves_the_other_alone(tmp_path: Path, how: str) -> None:
    """close: A's own Net.close, then the cleanup sweep (nothing left for it). crash
    cleanup: the sweep of a crashed run, whose namespaces still hold its processes
    (SIGKILLed by namespace), then A's close."""
    path = tmp_path / "pair.yaml"
    path.write_text(TOPOLOGY)
    topo = load_topology(path)
    for prefix in (PREFIX_A, PREFIX_B):
        teardown(prefix, kill=True)     # a crashed earlier run of this test, if any
    a = build(topo, prefix=PREFIX_A)
    b = build(topo, prefix=PREFIX_B)
    try:
        assert namespaces(PREFIX_A) == [f"{PREFIX_A}-{h}" for h in HOSTS]
        assert namespaces(PREFIX_B) == [f"{PREFIX_B}-{h}" for h in HOSTS]
        assert a.addr("h2") == b.addr("h2") == "10.7.0.2"     # the same addresses in each
        (run_a,) = start_flows(a)
        (run_b,) = start_flows(b)
        moving(a)
        moving(b)
        inodes_b = {h: b.netns_inode(h) for h in HOSTS}
        devices_b = {h: b.devices(h) for h in HOSTS}
        procs_a, procs_b = processes(PREFIX_A), processes(PREFIX_B)
        assert {run_a.receiver.pid, run_a.sender.pid} <= procs_a
        assert {run_b.receiver.pid, run_b.sender.pid} <= procs_b

        if how == "close":
            a.close()
            assert teardown(PREFIX_A, kill=True) == []
        else:
            assert teardown(PREFIX_A, kill=True) == []
            a.close()

        assert namespaces(PREFIX_A) == []
        for proc in (run_a.receiver, run_a.sender):
            proc.wait(5)                            # ended (SIGTERM by close, or SIGKILL)
        # B: the same namespaces (not recreated), devices and processes, and still delivering
        assert namespaces(PREFIX_B) == [f"{PREFIX_B}-{h}" for h in HOSTS]
        assert {h: b.netns_inode(h) for h in HOSTS} == inodes_b
        for h in HOSTS:
            with b.ipr(h) as ipr:
                assert sorted((lk["index"], lk.get("IFLA_IFNAME"))
                              for lk in ipr.get_links()) == devices_b[h]
        assert processes(PREFIX_B) == procs_b
        assert all(p.poll() is None for p in (run_b.receiver, run_b.sender))
        moving(b)
        result = run_b.stop(timeout=15)
        assert result["sender"]["stopped_by"] == "signal"     # by us, not by A's teardown
        assert result["receiver"]["stopped_by"] == "eof"
        assert result["receiver"]["bytes"] == result["sender"]["bytes"] > 0
    finally:
        a.close()
        b.close()
    assert namespaces(PREFIX_A) == namespaces(PREFIX_B) == []
