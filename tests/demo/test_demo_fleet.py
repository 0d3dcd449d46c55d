"""`latscope demo --fleet` as a new user runs it: every server deployed over real sshd, both
iperf3 paths joined from the breakdown topic, status for every server, and nothing left
after (namespaces, bridge, processes of the run, LatScope BPF held by them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from latscope.lab.fleet_lab import LATSCOPE, NAMES

pytestmark = [pytest.mark.root, pytest.mark.stack]

PREFIX = "lsxq" + os.environ["LSX_RUN_ID"]


def _run_processes(run_dir: str) -> list[str]:
    """Command lines of live processes that name the run's directory."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if run_dir in cmd:
            out.append(f"{pid}: {cmd[:200]}")
    return out


def test_fleet_demo_deploys_joins_both_paths_and_leaves_nothing(stack, fleet_wheel,
                                                                tmp_path) -> None:
    out = tmp_path / "fleet.json"
    p = subprocess.run([*LATSCOPE, "demo", "--fleet", "--duration", "4", "--prefix", PREFIX,
                        "--wheel", str(fleet_wheel), "--json", str(out), "--no-stack-start"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    s = json.loads(out.read_text())
    assert {h["host"] for h in s["up"]["hosts"] if h["ok"]} == {*NAMES, "management"}, s["up"]
    for pair in ("n1>n2", "n2>n3"):
        path = s["paths"][pair]
        assert path["complete"] >= 10, (pair, path)
        assert path["end_to_end_median_us"] > 0, (pair, path)
        a, b = pair.split(">")
        wires = [g for g in path["segments"] if g["layer"] == "wire"]
        assert wires and all(g["from"].startswith(f"{a}:") and g["to"].startswith(f"{b}:")
                             for g in wires), (pair, wires)
    status = {h["host"]: h for h in s["status"]["hosts"]}
    assert all(status[n]["services"]["agent"]["running"] for n in NAMES), status
    assert status["management"]["worker"]["complete"] > 0, status["management"]
    assert s["down"]["ok"], s["down"]
    assert "missing" not in s, s["missing"]
    # Nothing left: the table printed, and none of the run's namespaces, links or processes.
    assert "n1>n2:" in p.stdout and "n2>n3:" in p.stdout, p.stdout
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert PREFIX not in ns and PREFIX not in links, (ns, links)
    assert not _run_processes(s["run_dir"]), _run_processes(s["run_dir"])
