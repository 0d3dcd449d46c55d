"""`latscope fleet` against real sshd servers in namespaces, a real kernel and a real broker.

The tests run in file order on one room (tests/fleet/conftest.py): refused before trusted,
then deployed, then changed, broken and repaired, and finally taken down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import NAMES, Room

from latscope.schemas import codec
from latscope.stream.kafkaio import consume

pytestmark = [pytest.mark.root, pytest.mark.stack]


def _hosts(p: subprocess.CompletedProcess) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads(p.stdout)["hosts"]}


def test_unknown_host_keys_are_refused_and_nothing_installed(room: Room) -> None:
    p = room.run("up", "--json")
    assert p.returncode == 1, p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        h = hosts[name]
        fp = room.fleet.servers[name]
        assert not h["ok"] and "unknown host key" in h["reason"], h
        assert "SHA256:" in h["reason"] and f"ssh-keyscan -p 22 -t ssh-ed25519 {fp.address}" \
            in h["reason"], h["reason"]
        assert not room.host_dir(name).exists()
    assert not (room.state / "management").exists()   # nothing started centrally either


def test_up_deploys_and_traffic_yields_breakdowns_naming_every_host(room: Room) -> None:
    room.known_hosts.write_text(room.fleet.known_hosts())
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        assert hosts[name]["ok"] and hosts[name]["installed"], hosts[name]
        assert sorted(hosts[name]["started"]) == ["agent", "responder"]
    assert sorted(hosts["management"]["started"]) == ["stream-worker", "sync-manager"]
    # iperf3 n1 -> n2 and n2 -> n3 on the sampled port
    servers = room.fleet.servers
    procs = []
    try:
        for src, dst in (("n1", "n2"), ("n2", "n3")):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", servers[dst].ns, "iperf3", "-s", "-1", "-p", "5001"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
            subprocess.run(["ip", "netns", "exec", servers[src].ns, "iperf3", "-c",
                            servers[dst].address, "-p", "5001", "-t", "4", "-b", "20M"],
                           check=True, capture_output=True, timeout=60)
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
            pr.wait()
    bds: list[dict] = []

    def enough(msgs: list) -> bool:
        bds[:] = [codec.decode(m.value(), expect="Breakdown")[1] for m in msgs]
        seen = {tuple(b["hosts"]) for b in bds if b["complete"]}
        return ("n1", "n2") in seen and ("n2", "n3") in seen

    consume(room.bootstrap, "latscope.breakdowns", enough, timeout=90)
    complete = [b for b in bds if b["complete"]]
    assert {h for b in complete for h in b["hosts"]} == set(NAMES), {
        tuple(b["hosts"]) for b in bds}
    assert any(s["layer"] == "wire" for b in complete for s in b["segments"])
