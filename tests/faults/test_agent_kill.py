"""An agent with every point and --xdp, sampling, is SIGKILLed: the kernel holds none of
its BPF links, programs or maps afterwards, and no device keeps an XDP program. The
kernel's own listings (bpftool, ip link) are the truth; the agent never gets to detach."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kernel_objects import held, kernel_ids, left_after_kill, xdp_devices
from producer_helpers import agent_process, loopback_burst

pytestmark = [pytest.mark.root, pytest.mark.stack]


def test_agent_sigkill_leaves_nothing_attached(scratch_netns: str, stack: Any, topic_name: str,
                                               tmp_path: Path, fault_row: Any) -> None:
    ns = scratch_netns   # a veth pair beside lo: XDP on real devices, not only on lo
    subprocess.run(["ip", "-n", ns, "link", "add", "lsxgv0", "type", "veth", "peer", "name",
                    "lsxgv1"], check=True)
    for dev in ("lsxgv0", "lsxgv1"):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    status = tmp_path / "status.json"
    with agent_process("--host", "lsxg-kill", "--netns", ns, "--json", "--xdp", "--topic",
                       topic_name, "--bootstrap", stack.kafka_bootstrap, "--sample-size", "14480",
                       "--status-file", str(status)) as proc:
        ours = held(proc.pid)
        for k, ids in ours.items():
            assert ids and ids <= kernel_ids(k), (k, ids)
        attached = xdp_devices(ns)
        assert set(attached) >= {"lsxgv0", "lsxgv1"}, attached
        assert loopback_burst(ns, 2_000_000) == 2_000_000
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if status.exists() and json.loads(status.read_text())["counters"]["samples"] > 0:
                break
            time.sleep(0.1)   # polling the agent's status file, not waiting for it to happen
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    left, gone_s = left_after_kill(ours, [ns])
    fault_row("agent SIGKILL (--xdp, every point)",
              offered=sum(len(v) for v in ours.values()) + len(attached), joined=None,
              lost=sum(len(v) for v in left.values()), recovery_s=round(gone_s, 1),
              detail={"held": {k: len(v) for k, v in ours.items()}, "xdp": attached,
                      "left": left})
    assert not any(left.values()), left
