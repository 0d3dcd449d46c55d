"""The sync responders (XDP, one per host) and the manager are SIGKILLed while they
synchronise the suite's topology: the kernel holds none of their programs, links or maps
and no device keeps an XDP program; started again, they publish models again, each within
its error bound of the injected truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from fault_net import PREFIX, TOPOLOGY
from kafka_helpers import topic_values
from kernel_objects import held, left_after_kill

from latscope import kafka
from latscope.lab import netns
from latscope.lab.topology import load_topology
from latscope.procs import wait_for
from latscope.schemas import codec

pytestmark = [pytest.mark.root, pytest.mark.stack]
HOSTS = ("h1", "h2")


@pytest.fixture
def net() -> Iterator[netns.Net]:
    with netns.build(load_topology(TOPOLOGY), prefix=PREFIX) as n:
        n.wait_all_reachable()
        yield n


def models_since(bootstrap: str, topic: str, since_ms: int) -> dict[str, dict]:
    """The newest model per host published at or after ``since_ms`` (wall clock)."""
    out: dict[str, dict] = {}
    for v in topic_values(bootstrap, topic):
        m = codec.decode(v, expect="ClockModel")[1]
        if m["updated_unix_ms"] >= since_ms:
            out[m["host"]] = m
    return out


def test_sync_sigkill_leaves_nothing_and_models_resume(net, stack, tmp_path, fault_row) -> None:
    topic = f"{PREFIX}-{uuid.uuid4().hex[:6]}-clock"
    env = {**os.environ, "LATSCOPE_SYNC_KEY": os.urandom(32).hex()}   # this test's own secret
    common = ["--topology", str(TOPOLOGY), "--prefix", PREFIX, "--progress", "0.5"]

    def start() -> list[subprocess.Popen]:
        procs = []
        for h in HOSTS:
            p = subprocess.Popen([sys.executable, "-m", "latscope", "sync", "responder",
                                  "--host", h, "--json", *common], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline()   # the first counters line: attached and running
            assert line.startswith("{"), p.stderr.read() if p.stderr else line
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "latscope", "sync", "manager", "--bootstrap",
             stack.kafka_bootstrap, "--topic", topic, "--samples-topic", f"{topic}-samples",
             "--interval", "0.2", *common], env=env, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return procs

    def resumed(since_ms: int) -> bool:
        try:
            return set(models_since(stack.kafka_bootstrap, topic, since_ms)) == set(HOSTS)
        except Exception:   # the topic is not there yet
            return False

    procs = start()
    try:
        wait_for(lambda: resumed(0), 60, "a model for every host",
                 alive=lambda: all(p.poll() is None for p in procs))
        ours = {k: set().union(*(held(p.pid)[k] for p in procs)) for k in ("link", "prog", "map")}
        assert all(ours.values()), ours
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        namespaces = [net.ns_name(h.name) for h in net.topology.hosts]
        left, gone_s = left_after_kill(ours, namespaces)

        restart_ms, restart = int(time.time() * 1000), time.monotonic()
        procs = start()
        wait_for(lambda: resumed(restart_ms), 90, "models after the restart",
                 alive=lambda: all(p.poll() is None for p in procs))
        recovery_s = time.monotonic() - restart
        models = models_since(stack.kafka_bootstrap, topic, restart_ms)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        kafka.delete_topics_with_prefix(stack.kafka_bootstrap, topic)
    errors = {h: m["offset_ns"] - net.clock(h).true_offset(m["ref_ns"]) for h, m in models.items()}
    outside = {h: (round(e), models[h]["error_bound_ns"]) for h, e in errors.items()
               if abs(e) > models[h]["error_bound_ns"]}
    fault_row("sync responders and manager SIGKILL", offered=sum(len(v) for v in ours.values()),
              joined=len(models), lost=sum(len(v) for v in left.values()) + len(outside)
              + len(set(HOSTS) - set(models)), recovery_s=round(recovery_s, 1),
              detail={"held": {k: len(v) for k, v in ours.items()}, "left": left,
                      "freed_s": round(gone_s, 1),
                      "error_ns": {h: round(e) for h, e in errors.items()}})
    assert not any(left.values()), left
    assert set(models) == set(HOSTS) and not outside, (models, outside)
