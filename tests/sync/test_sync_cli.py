"""`latscope sync manager` driven by the original configuration files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sync_testnet import SyncNet

from latscope.sync.keys import SyncKeys

pytestmark = pytest.mark.root


def key_file(keys: SyncKeys, path: Path, mode: int = 0o600) -> Path:
    """The key as `latscope` reads it: a file only its owner can read."""
    path.write_text(keys.to_hex() + "\n")
    path.chmod(mode)
    return path


def test_manager_reads_ping_info_and_time_sync(sync_net: SyncNet, tmp_path: Path) -> None:
    (tmp_path / "ping_info.yaml").write_text(
        "management_server: 10.92.1.1\nservers:\n"
        "    - {address: 10.92.1.2, port: 51111, eth: [lsxc-0b]}\n"
        "    - {address: 10.92.4.2, port: 51111}\n")
    (tmp_path / "time_sync.yaml").write_text("time_interval: 0.05\n")
    out = subprocess.run(
        [sys.executable, "-m", "latscope", "sync", "manager", "--config", str(tmp_path),
         "--netns", sync_net.net.ns_name("mgr"),
         "--key-file", str(key_file(sync_net.keys, tmp_path / "key")),
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


def test_token_flag_is_gone() -> None:
    """Secrets never on the command line: there is no flag to put one there."""
    out = subprocess.run([sys.executable, "-m", "latscope", "sync", "manager", "--host",
                          "h1=10.0.0.1", "--token", "0123456789abcdef", "--no-kafka"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "unrecognized arguments: --token" in out.stderr


def test_responder_cli_answers_then_detaches(sync_net: SyncNet) -> None:
    """`latscope sync responder` on r1 (which has none yet): answers the manager with its
    injected clock, reports counters, and leaves no XDP program behind when stopped."""
    import signal

    from latscope.bpf.clock import ClockInjection, monotonic_ns
    from latscope.sync.estimator import EstimatorConfig
    from latscope.sync.manager import Manager, Target

    net = sync_net.net
    ifname = net.ifname("r1", "mgr")
    inj = ClockInjection(7_000_000, -10.0, monotonic_ns())
    proc = subprocess.Popen(
        [sys.executable, "-m", "latscope", "sync", "responder", "--netns", net.ns_name("r1"),
         "--ifname", ifname, "--allow", "10.92.3.1",
         "--offset-ns", str(inj.offset_ns), "--drift-ppm", str(inj.drift_ppm),
         "--epoch-ns", str(inj.epoch_ns), "--json", "--progress", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LATSCOPE_SYNC_KEY": sync_net.keys.to_hex()})  # the environment
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first counters line: attached and running
        assert json.loads(first)["answered"] == 0, first
        mgr = Manager([Target("r1", "10.92.3.2")], sync_net.keys, netns=net.ns_name("mgr"),
                      interval_s=0.05,
                      estimator=EstimatorConfig(window_ns=2_000_000_000, bucket_ns=50_000_000))
        with mgr:
            mgr.run(duration_s=1.5)
            m = mgr.hosts["r1"].model
        assert m is not None
        assert abs(m.offset_ns - inj.true_offset(m.ref_ns)) <= m.error_bound_ns
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    final = json.loads(out.strip().splitlines()[-1])
    assert final["answered"] >= 50 and final["bad_mac"] == 0
    link = json.loads(subprocess.run(["ip", "-n", net.ns_name("r1"), "-j", "link", "show", "dev",
                                      ifname], capture_output=True, text=True,
                                     check=True).stdout)[0]
    assert "xdp" not in link, link
