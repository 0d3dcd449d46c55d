"""`latscope sync manager` driven by the original configuration files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sync_testnet import SyncNet

pytestmark = pytest.mark.root


def test_manager_reads_ping_info_and_time_sync(sync_net: SyncNet, tmp_path: Path) -> None:
    (tmp_path / "ping_info.yaml").write_text(
        "management_server: 10.92.1.1\nservers:\n"
        "    - {address: 10.92.1.2, port: 51111, eth: [lsxc-0b]}\n"
        "    - {address: 10.92.4.2, port: 51111}\n")
    (tmp_path / "time_sync.yaml").write_text("time_interval: 0.05\n")
    out = subprocess.run(
        [sys.executable, "-m", "latscope", "sync", "manager", "--config", str(tmp_path),
         "--netns", sync_net.net.ns_name("mgr"), "--token", f"{sync_net.token:x}",
         "--duration", "1.5", "--no-kafka", "--json"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    hosts = json.loads(out.stdout)["hosts"]
    assert set(hosts) == {"10.92.1.2", "10.92.4.2"}  # no connect_info: named by address
    for addr, host in (("10.92.1.2", "h1"), ("10.92.4.2", "h3")):
        st = hosts[addr]
        assert st["samples"] >= 0.9 * st["sent"] > 50   # 0.05 s rounds of 4 for 1.5 s
        m = st["model"]
        truth = sync_net.net.clock(host).true_offset(m["ref_ns"])
        assert abs(m["offset_ns"] - truth) <= m["error_bound_ns"]


def test_bad_token_is_a_clear_error(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "latscope", "sync", "manager", "--host",
                          "h1=10.0.0.1", "--token", "not-hex", "--no-kafka"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--token: sync token 'not-hex': expected up to 16 hex digits" in out.stderr
