"""Records the worker must refuse at the door (design §10), on the real broker and a real
Faust worker: each poison kind is dead-lettered with its reason and counted, the worker
stays up, and the good records around them still join with their true durations.

``assert_poison_dead_lettered`` is the core check; it reports the fault table's row
(benchmarks/faults.py)."""

from __future__ import annotations

import math
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from latscope import kafka
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.schemas import codec
from latscope.settings import flow_resolver
from latscope.stream.join import JoinPolicy
from latscope.stream.kafkaio import consume, produce
from latscope.stream.pipeline import PENDING, STATS, Pipeline
from latscope.stream.process import WorkerProcess
from latscope.stream.settings import StreamSettings
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records

TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"
OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}
F1 = {"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
      "sport": 40123, "dport": 5201}
STEP_NS = 7_000
GOOD = 200


def _event(seq: int, **change: object) -> dict:
    """h1's record of one sampled byte of F1, changed."""
    rec = sample_records(PathSpec(["h1", "h2", "c1"], STEP_NS, OFFSETS, F1), seq,
                         monotonic_ns())[0]
    return {**rec, **change}


def _unknown_point() -> bytes:
    """A LayerEvent whose one hit names point 12, past the schema's 12 points: its enum
    index is written by hand (zigzag 24 = 0x18 in place of sock_recv's 0x16)."""
    ev = _event(7, hits=[{"point": "sock_recv", "ts_ns": 123456789, "ifindex": 0,
                          "dev": None, "netns": 0, "cpu": 0}])
    data = codec.encode("LayerEvent", ev)
    ts = bytes.fromhex("aab4de75")   # zigzag varint of 123456789
    assert data.count(b"\x16" + ts) == 1
    return data.replace(b"\x16" + ts, b"\x18" + ts)


def poison() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], Counter[str]]:
    """(clock-topic messages, layer-events messages, reasons expected) of every poison kind."""
    bad_clock = [
        ("clock_drift", clock_model("h1", 0) | {"drift_ppm": -1e6}),
        ("clock_not_finite", clock_model("h1", 0) | {"offset_ns": math.nan}),
        ("clock_not_finite", clock_model("h2", 0) | {"error_bound_ns": math.inf}),
        ("clock_bound", clock_model("h2", 0) | {"error_bound_ns": -1.0}),
        ("bad_host", clock_model("h1\nevil", 0)),
    ]
    clock = [(m["host"].encode(), codec.encode("ClockModel", m)) for _, m in bad_clock]
    clock.append((b"h1", b"\x00garbage that is not Avro"))
    bad_events = [
        ("no_hits", _event(1, hits=[])),
        ("bad_host", _event(2, host="h1\\\nx")),
        ("bad_host", _event(3, host="")),
        ("flow_id_mismatch", _event(4, flow_id="tcp:10.9.9.9:1>10.2.0.2:5201")),
        ("bad_device", _event(5, hits=[{"point": "dev_xmit", "ts_ns": 1, "ifindex": 2,
                                        "dev": "eth0 with spaces", "netns": 0, "cpu": 0}])),
    ]
    layer = [(ev["flow_id"].encode(), codec.encode("LayerEvent", ev)) for _, ev in bad_events]
    layer += [(b"x", b"garbage bytes, not Avro"), (b"x", b"\xc3\x01" + b"\x11" * 8 + b"zz"),
              (b"x", _unknown_point())]
    want = Counter(r for r, _ in bad_clock) + Counter(r for r, _ in bad_events)
    want += Counter({"undecodable": 3, "unknown_symbol": 1})
    return clock, layer, want


def good_records() -> list[dict]:
    spec = PathSpec(["h1", "h2", "c1"], STEP_NS, OFFSETS, F1)
    t0 = monotonic_ns()
    return [r for i in range(GOOD) for r in sample_records(spec, (i + 100) * 72400,
                                                           t0 + i * 1_000_000)]


def assert_poison_dead_lettered(bootstrap: str, topics: dict[str, str], worker: WorkerProcess,
                                want: Counter[str], fault_row) -> None:
    """Every poison record is on the dead-letter topic with its reason header, counted per
    reason, the worker still up, and the GOOD samples joined and corrected exactly."""
    total = sum(want.values())
    dead = consume(bootstrap, topics["dead"], lambda m: len(m) >= total, 60)
    got = Counter(dict(m.headers())["reason"].decode() for m in dead)
    bds = consume(bootstrap, topics["bd"], lambda m: len(m) >= GOOD, 60)
    alive = worker.proc is not None and worker.proc.poll() is None
    # lost: a good sample not joined, a poison record not dead-lettered under its reason,
    # and the worker itself
    fault_row("poison records (every kind, every topic)", offered=GOOD + total,
              joined=len(bds), dead_lettered=len(dead),
              lost=GOOD - min(len(bds), GOOD) + sum((want - got).values()) + (not alive),
              detail={"reasons": dict(got), "worker_alive": alive})
    assert got == want
    assert all(dict(m.headers())["error"] for m in dead)
    assert len(bds) == GOOD
    for m in bds:
        bd = codec.decode(m.value(), expect="Breakdown")[1]
        assert bd["complete"] and bd["hosts"] == ["h1", "h2", "c1"]
        assert [s["duration_ns"] for s in bd["segments"]] == [STEP_NS] * 15
    summ = worker.wait_until(lambda s: s["counters"]["dead_lettered"] >= total, 30,
                             "every poison record counted")
    c = summ["counters"]
    assert c["dead_lettered"] == total
    assert {k[14:]: v for k, v in c.items() if k.startswith("dead_lettered_")} == dict(want)
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    assert c.get("batch_failed", 0) == c.get("tick_failed", 0) == c.get("clock_failed", 0) == 0


@pytest.fixture
def door_worker(stack, tmp_path: Path) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    prefix = f"lsxf{os.environ['LSX_RUN_ID']}-{uuid.uuid4().hex[:8]}"
    topics = {k: f"{prefix}-{k}" for k in ("layer", "clock", "bd", "dead")}
    w = WorkerProcess(
        ["--bootstrap", stack.kafka_bootstrap, "--app-id", prefix, "--no-influx",
         "--data-dir", str(tmp_path / "state"), "--topology", str(TOPOLOGY),
         "--interval", "1", "--window", "1.5", "--lateness", "0.5",
         "--layer-topic", topics["layer"], "--clock-topic", topics["clock"],
         "--breakdown-topic", topics["bd"], "--dead-letter-topic", topics["dead"]],
        free_port(), tmp_path / "worker.log")
    try:
        with w:
            w.wait_ready()
            yield w, topics
    finally:
        kafka.delete_topics_with_prefix(stack.kafka_bootstrap, prefix)


@pytest.mark.stack
def test_poison_on_every_topic_is_dead_lettered_and_the_worker_goes_on(stack, door_worker,
                                                                      fault_row) -> None:
    worker, topics = door_worker
    bootstrap = stack.kafka_bootstrap
    good_models = [clock_model(h, OFFSETS[h], bound_ns=400) for h in ("h1", "h2")]
    produce(bootstrap, topics["clock"], encoded("ClockModel", good_models, "host"))
    worker.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "clock models")
    clock, layer, want = poison()
    produce(bootstrap, topics["clock"], clock)
    worker.wait_until(lambda s: s["counters"]["dead_lettered"] >= len(clock), 30,
                      "poison clock models refused")
    good = encoded("LayerEvent", good_records(), "flow_id")
    # poison between good records, and inside an agent's batch with good records
    mixed = good[:GOOD] + layer + good[GOOD:]
    bad_in_batch = _event(9, hits=[])
    mixed.append((b"batch", codec.encode("LayerEventBatch", {"events": [bad_in_batch]})))
    want["no_hits"] += 1
    produce(bootstrap, topics["layer"], mixed)
    assert_poison_dead_lettered(bootstrap, topics, worker, want, fault_row)


def test_a_failing_breakdown_dead_letters_its_sample_alone() -> None:
    """A sample whose breakdown raises (here a model the door would refuse, put straight
    into the table) goes to the dead letters, on the batch path and in the timer's."""
    s = StreamSettings(flows=flow_resolver(TOPOLOGY), join=JoinPolicy(1.0, 0.5))
    published: list[tuple[str, bytes | None, bytes | None, dict | None]] = []

    class Out:
        def publish(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: dict[str, bytes] | None = None) -> None:
            published.append((topic, key, value, headers))

    p = Pipeline(s, {PENDING: {}, STATS: {}}, Out())
    for h in ("h1", "h2"):
        p.on_clock(h.encode(), codec.encode("ClockModel", clock_model(h, OFFSETS[h])))
    p.clock_models["h9"] = clock_model("h9", 0) | {"drift_ppm": -1e6}   # 1 + drift = 0
    t0 = monotonic_ns()
    good = [r for i in range(5) for r in sample_records(
        PathSpec(["h1", "h2", "c1"], STEP_NS, OFFSETS, F1), i * 1448, t0)]
    lone = {"proto": "tcp", "family": 4, "src": "10.7.0.1", "dst": "10.7.0.2",
            "sport": 1, "dport": 2}
    broken = [r for i in range(3) for r in sample_records(PathSpec(["h9", "h2"], flow=lone),
                                                          i, t0) if r["host"] == "h9"]
    msgs = [(0, k, v, 1.0) for k, v in encoded("LayerEvent", good + broken, "flow_id")]
    p.on_batch(msgs)
    p.on_tick(1e12)   # the lone h9 samples close by window: in the timer
    dead = [h for t, _, _, h in published if t == s.dead_letter_topic]
    assert [h["reason"] for h in dead] == [b"breakdown_failed"] * 3
    assert all(b"ZeroDivisionError" in h["error"] for h in dead)
    bds = [codec.decode(v, expect="Breakdown")[1] for t, _, v, _ in published
           if t == s.breakdown_topic]
    assert len(bds) == 5 and all(b["complete"] for b in bds)
    assert p.all_counters()["dead_lettered_breakdown_failed"] == 3
