"""Two workers with one app id split the partitions and between them join every sample."""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.schemas import codec
from latscope.stream.kafkaio import consume, produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records

pytestmark = pytest.mark.stack


def test_two_workers_split_partitions(stack, topics, tmp_path, run_tag) -> None:
    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", f"lsxd-{run_tag}",
             "--data-dir", str(tmp_path / name),
             "--topology", str(REPO_ROOT / "topologies/default.yaml"), "--no-influx",
             *topics.args()], free_port(), tmp_path / f"{name}.log")

    with worker("a") as a, worker("b") as b:
        a.wait_ready()
        b.wait_ready()
        # The first worker gives up half of its partitions in the rebalance.
        parts = {}
        for w in (a, b):
            parts[w] = w.wait_until(lambda s: 0 < len(s["partitions"]) < 4, 90,
                                    "a share of the partitions")["partitions"]
        assert sorted(parts[a] + parts[b]) == [0, 1, 2, 3]

        # Clock models reach both workers (GlobalTable), whoever consumes the clock topic.
        models = [clock_model(h, o) for h, o in (("h1", 5_000_000), ("h2", -3_000_000))]
        produce(stack.kafka_bootstrap, topics.clock, encoded("ClockModel", models, "host"))
        for w in (a, b):
            w.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "both clock models")

        specs = [PathSpec(["h1", "h2", "c1"], flow={
            "proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
            "sport": 41000 + i, "dport": 5201}) for i in range(16)]
        t0 = monotonic_ns()
        recs = [r for i in range(400) for r in sample_records(specs[i % 16], i, t0 + i)]
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
        msgs = consume(stack.kafka_bootstrap, topics.breakdowns, lambda m: len(m) >= 400)
        keys = {(bd["flow_id"], bd["seq"]) for bd in
                (codec.decode(m.value(), expect="Breakdown")[1] for m in msgs)}
        assert len(keys) == 400
        pub = [w.wait_until(lambda s: s["counters"]["published"] > 0, 30, "work")
               ["counters"]["published"] for w in (a, b)]
        assert sum(pub) >= 400 and min(pub) > 0, pub


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed-after-commit"])
def test_pending_samples_survive_a_worker_restart(stack, topics, tmp_path, run_tag,
                                                  kill: bool) -> None:
    """Unmatched records wait in the changelog-backed table: a new worker recovers them and
    completes the samples when the last host's records arrive. Killed (no shutdown) once
    its offsets are committed, the new worker does not read those records again: they come
    back only if the worker wrote the table's changelog before it committed."""
    # A long join window: a killed worker's partitions move only after the group's session
    # timeout (a minute), and the recovered samples must still be open then.
    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", f"lsxd-{run_tag}",
             "--data-dir", str(tmp_path / name), "--window", "600",
             "--topology", str(REPO_ROOT / "topologies/default.yaml"), "--no-influx",
             *topics.args()], free_port(), tmp_path / f"{name}.log")

    spec = PathSpec(["h1", "h2", "c1"], flow={"proto": "tcp", "family": 4, "src": "10.1.0.1",
                                            "dst": "10.2.0.2", "sport": 42000, "dport": 5201})
    recs = [sample_records(spec, i, monotonic_ns() + i) for i in range(50)]
    with worker("a") as a:
        a.wait_ready()
        produce(stack.kafka_bootstrap, topics.layer,
                encoded("LayerEvent", [r for s in recs for r in s[:2]], "flow_id"))
        a.wait_until(lambda s: s["counters"]["pending"] == 50, 60, "50 pending samples")
        if kill:
            wait_committed(stack.kafka_bootstrap, f"lsxd-{run_tag}", topics.layer, 100)
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)
    with worker("b") as b:
        b.wait_until(lambda s: s["counters"]["pending"] == 50, 90, "recovered pending samples")
        produce(stack.kafka_bootstrap, topics.layer,
                encoded("LayerEvent", [s[2] for s in recs], "flow_id"))
        done = b.wait_until(lambda s: s["counters"]["complete"] == 50, 60, "completed samples")
        assert done["counters"]["pending"] == 0 and done["counters"]["records"] == 50


def wait_committed(bootstrap: str, group: str, topic: str, n: int, timeout: float = 30) -> None:
    """Until the group's committed offsets on the topic add up to n messages."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in
                 c.list_topics(topic, timeout=10).topics[topic].partitions]
        deadline = time.monotonic() + timeout
        while True:
            done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
            if done >= n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{group}: {done} of {n} offsets committed")
            time.sleep(0.2)   # polling the broker's answer, not waiting for it to happen
    finally:
        c.close()
