"""`latscope doctor --json` and `latscope agent` as a process: SIGINT and SIGTERM detach
everything and flush (SIGKILL, with --xdp: tests/faults/test_agent_kill.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kernel_objects import xdp_devices
from producer_helpers import agent_process, links_of, loopback_burst

from latscope.procs import free_port
from latscope.schemas.records import POINTS

pytestmark = pytest.mark.root
LATSCOPE = [sys.executable, "-m", "latscope"]


def test_doctor_json_contract() -> None:
    r = subprocess.run([*LATSCOPE, "doctor", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["btf"] is True and rep["kernel"]
    assert set(rep["points"]) == set(POINTS)
    for p in ("sock_send", "tcp_tx", "ip_out", "ip_post", "dev_queue", "dev_xmit", "xdp",
              "dev_rx", "ip_pre", "ip_in", "tcp_rx", "sock_recv"):
        assert rep["points"][p]["available"] is True and rep["points"][p]["hook"], p
    assert rep["points"]["sock_recv"]["hook"] == \
        "tp_btf/sys_enter+tp_btf/sk_data_ready+tp_btf/sock_recv_length"
    assert rep["points"]["tcp_tx"]["hook"].startswith("sockops:")
    assert rep["points"]["xdp"]["opt_in"] is True


def _thread_names(pid: int) -> list[str]:
    names = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{t}/comm").read_text().strip())
        except OSError:     # the thread ended meanwhile
            pass
    return sorted(names)


@pytest.mark.stack
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_agent_process_signals(scratch_netns: str, link_ids: Callable[[], set[int]],
                               stack: Any, topic_name: str, tmp_path: Path,
                               sig: signal.Signals) -> None:
    status = tmp_path / "status.json"
    port = free_port()                  # for the metrics endpoint
    with agent_process(
            "--host", "lsxa-solo", "--netns", scratch_netns, "--json", "--topic", topic_name,
            "--bootstrap", stack.kafka_bootstrap, "--sample-size", "14480",
            "--status-file", str(status), "--metrics-port", str(port)) as proc:
        ours = links_of(proc.pid)
        # 8 tp_btf links (3 socket: TCP's entry, the two sock_*_length; UDP's sys_enter and
        # sk_data_ready are opt-in; 2 tcp, 3 device), 4 netfilter hooks x 2 families,
        # sockops, the drop reasons (skb:kfree_skb)
        assert len(ours) == 8 + 8 + 1 + 1, ours
        assert ours <= link_ids()
        assert loopback_burst(scratch_netns, 3_000_000) == 3_000_000
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = json.loads(status.read_text())
            if st["counters"]["samples"] >= 200:
                break
            time.sleep(0.1)
        assert st["counters"]["samples"] >= 200, st["counters"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        samples = re.search(rb'^latscope_agent_samples_total\{host="lsxa-solo"\} (\S+)$',
                            metrics, re.M)
        assert samples and float(samples.group(1)) >= 200, metrics[:2000]
        assert re.search(rb"^latscope_agent_ringbuf_drops_total\{", metrics, re.M)
        # two Kafka clients: the one producer of records, flow context and stride demands,
        # and the stride topic's follower (librdkafka names each client's thread rdk:main);
        # a topic check's admin client (its rdk:bg thread) comes and goes (ci48)
        deadline = time.monotonic() + 10
        while _thread_names(proc.pid).count("rdk:main") != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _thread_names(proc.pid).count("rdk:main") == 2, _thread_names(proc.pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    final = json.loads(out[out.index("{"):])["counters"]
    # flushed on the way out: every record produced was acknowledged
    assert final["published"] == final["produced"] == final["records"] > 0, final
    assert final["failed_deliveries"] == 0 and final["ringbuf_drops"] == 0
    deadline = time.monotonic() + 5
    while ours & link_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (ours & link_ids())            # the kernel holds none of the agent's links
    assert xdp_devices(scratch_netns) == []


@pytest.mark.stack
def test_agent_points_subset(scratch_netns: str, stack: Any, topic_name: str) -> None:
    """--points attaches only the points asked for (less overhead), and the records hold
    only those; an unknown point is a clear error before anything is attached."""
    bad = subprocess.run([*LATSCOPE, "agent", "--host", "lsxa-solo", "--points",
                          "dev_rx,ip_nowhere"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--points: unknown point(s) ip_nowhere" in bad.stderr
    with agent_process(
            "--host", "lsxa-solo", "--netns", scratch_netns, "--json", "--topic", topic_name,
            "--bootstrap", stack.kafka_bootstrap, "--sample-size", "14480",
            "--points", "dev_queue,dev_xmit,dev_rx", ready="ready (3 points)") as proc:
        # + the retransmission marker and the drop reasons
        assert len(links_of(proc.pid)) == 3 + 1 + 1
        assert loopback_burst(scratch_netns, 1_000_000) == 1_000_000
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    final = json.loads(out[out.index("{"):])
    assert sorted(final["points"]) == ["dev_queue", "dev_rx", "dev_xmit"]
    assert final["counters"]["published"] > 0, final["counters"]
    # the agent created the topic as the worker would: arrival time on the broker's clock
    from confluent_kafka.admin import AdminClient, ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    cfg = admin.describe_configs([res])[res].result(15)
    assert cfg["message.timestamp.type"].value == "LogAppendTime"


def test_data_path_from_the_config_or_the_flag(tmp_path: Path) -> None:
    """agent.native in latscope.yaml (default true) and --python-path both choose the
    Python reference path."""
    from latscope import settings
    from latscope.cli import build_parser

    conf = tmp_path / "latscope.yaml"
    conf.write_text("agent:\n  native: false\n")
    parse = build_parser().parse_args
    assert settings.agent(parse(["agent", "--host", "x"])).native is True
    assert settings.agent(parse(["agent", "--host", "x", "--python-path"])).native is False
    assert settings.agent(parse(["agent", "--host", "x", "--config", str(conf)])).native is False
    conf.write_text("agent:\n  native: maybe\n")
    r = subprocess.run([*LATSCOPE, "agent", "--host", "x", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "agent.native" in r.stderr and str(conf) in r.stderr, r.stderr


def test_agent_refuses_a_hold_the_join_window_cannot_join(scratch_netns: str) -> None:
    """The worker joins a byte's records within its join window (--window + --lateness,
    1.5 s by default): a hold longer than that window less the linger and the time to
    publish would publish bytes in halves, so the agent refuses it before attaching
    anything. By default the hold is the longest the window allows."""
    from latscope.producers.agent import AgentSettings

    r = subprocess.run([*LATSCOPE, "agent", "--host", "lsxa-solo", "--netns", scratch_netns,
                        "--hold-ms", "5000"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "hold 5000 ms cannot be joined" in r.stderr, r.stderr
    assert "at most 1000 ms" in r.stderr, r.stderr
    s = AgentSettings(host="x")
    assert (s.join_window_ms, s.linger_ms, s.hold, s.max_hold_ms) == (1500, 50, 1000, 1000)
    assert AgentSettings(host="x", join_window_ms=6000, hold_ms=5000).hold == 5000
    with pytest.raises(ValueError, match="cannot be joined"):
        AgentSettings(host="x", hold_ms=1001)
    with pytest.raises(ValueError, match="too short"):
        AgentSettings(host="x", join_window_ms=200)
