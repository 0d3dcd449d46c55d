"""Ring buffer overrun: an agent with the smallest ring buffer (one page) and every MSS
sampled, under a loopback burst, loses events in the kernel. Every loss is counted, the
agent's figure equals the kernel's own counter (read with bpftool from the agent's map),
and no record that lost a point to the overrun is published as complete (the topic's
records checked against the points the agent attached): a loopback byte's first hits (the
sender's) may be the lost ones, so the agent flags every record incomplete for a while
after a loss, counted as overrun."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import topic_values
from producer_helpers import agent_process, loopback_burst

from latscope.bpf import libbpf
from latscope.schemas import codec

pytestmark = [pytest.mark.root, pytest.mark.stack]
RB_DROPS = 1        # LS_C_RB_DROPS in producers/bpf/latscope.h


def kernel_drops(pid: int) -> int:
    """The ring buffer drops in the process's counters map(s), per bpftool."""
    total = 0
    for mid in libbpf.held_ids(pid, "map_id"):
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(mid)],
                                         capture_output=True, text=True).stdout or "{}")
        if info.get("name") != "counters":
            continue
        dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(mid)],
                                         check=True, capture_output=True, text=True).stdout)
        entry = next(e for e in dump if e["formatted"]["key"] == RB_DROPS)
        total += sum(v["value"] for v in entry["formatted"]["values"])
    return total


def test_ring_overrun_counted_like_the_kernel(scratch_netns: str, stack: Any, topic_name: str,
                                              tmp_path: Path, fault_row: Any) -> None:
    config = tmp_path / "latscope.yaml"
    config.write_text("agent:\n  ring_buffer_bytes: 4096\n")
    status = tmp_path / "status.json"
    with agent_process("--config", str(config), "--host", "lsxg-ring", "--netns", scratch_netns,
                       "--topic", topic_name, "--bootstrap", stack.kafka_bootstrap,
                       "--sample-size", "1448", "--status-file", str(status)) as proc:
        assert loopback_burst(scratch_netns, 50_000_000) == 50_000_000
        # The burst is over: the kernel's counter no longer moves; the agent's status file
        # (written every 0.5 s) must come to say the same.
        kernel = kernel_drops(proc.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = json.loads(status.read_text())
            if st["counters"]["ringbuf_drops"] == kernel:
                break
            time.sleep(0.1)   # polling the status file, not waiting for it to happen
        reported = st["counters"]["ringbuf_drops"]
        points = set(st["points"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = [r for v in topic_values(stack.kafka_bootstrap, topic_name)
               for r in codec.decode_layer_events(v)]
    partial = [r for r in records if r["complete"] and {h["point"] for h in r["hits"]} != points]
    final = json.loads(status.read_text())["counters"]
    fault_row("ring buffer overrun (one page, every MSS)", offered=final["kernel_hits"] + kernel,
              joined=final["kernel_hits"], lost=abs(reported - kernel) + len(partial),
              detail={"kernel_drops": kernel, "agent_drops": reported, "records": len(records),
                      "complete": sum(r["complete"] for r in records), "partial": len(partial),
                      "gaps": final["gaps"], "overrun": final["overrun"]})
    assert kernel > 0, "no overrun: the test did not test anything"
    assert reported == kernel
    assert final["overrun"] > 0      # the agent knew its records could lack hits
    assert final["overrun"] <= sum(not r["complete"] for r in records)   # and flagged them
    assert not partial, [(sorted(points - {h["point"] for h in r["hits"]}), r["seq"])
                         for r in partial[:5]]   # the points each lacks
