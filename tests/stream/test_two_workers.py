"""Two workers with one app id split the partitions and between them join every sample."""

from __future__ import annotations

import pytest

from latscope.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.schemas import codec
from latscope.stream.kafkaio import consume, produce
from latscope.stream.process import WorkerProcess, free_port
from latscope.stream.synthetic import PathSpec, encoded, sample_records

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
