"""A worker SIGKILLed before a commit, after a commit and in the middle of its input; a new
worker with the same app id carries on. What counts is the breakdown topic, read as any
consumer reads it: exactly the samples fed, each as often as at-least-once allows (twice at
most, and then byte for byte the same), every segment and end-to-end delay equal to the
durations injected.

Truth: each sample's 15 point-to-point durations are written out below (BASE plus a jitter
that differs per sample and per segment), on hosts whose clocks are offset by ±ms; the
expected segments are those numbers, not anything computed by the worker's code.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import Topics, committed, wait_committed

from latscope import kafka
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port, wait_for
from latscope.schemas import codec
from latscope.stream.kafkaio import produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records

pytestmark = pytest.mark.stack

RUN_ID = os.environ["LSX_RUN_ID"]
TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"
OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}   # c1 reads h2's clock
# h1 sock_send→tcp_tx→ip_out→ip_post→dev_queue→dev_xmit ⇒ h2 dev_rx→ip_pre→ip_post→
# dev_queue→dev_xmit ⇒ c1 dev_rx→ip_pre→ip_in→tcp_rx→sock_recv: 16 points, 15 durations
BASE = [3_100, 17_000, 2_300, 950, 41_000, 123_000, 800, 5_600, 12_345, 27_000, 61_000,
        700, 4_400, 9_900, 33_000]
JITTER = [0, 1_700, 230, 9_100, 40, 5_500, 777]
SPORTS = 12   # connections of flow f1 (10.1.0.1 → 10.2.0.2:5201): several partitions


def steps(i: int) -> list[int]:
    return [b + JITTER[(i + k) % len(JITTER)] for k, b in enumerate(BASE)]


def spec(i: int) -> PathSpec:
    return PathSpec(["h1", "h2", "c1"], offsets_ns=OFFSETS, steps_ns=steps(i), flow={
        "proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
        "sport": 45000 + i % SPORTS, "dport": 5201})


def records(first: int, n: int, t0: int) -> tuple[list[dict], dict[tuple[str, int], int]]:
    """Every host's record of samples first..first+n-1 and each sample's index by key."""
    out, index = [], {}
    for i in range(first, first + n):
        recs = sample_records(spec(i), i * 64, t0 + i * 20_000)
        index[(recs[0]["flow_id"], i * 64)] = i
        out += recs
    return out, index


@pytest.fixture
def env(stack, tmp_path: Path) -> Iterator[tuple[Topics, str]]:
    """Topics and an app id of this run's own (lsxe<run id>-…); deleted afterwards, the
    worker's changelogs with them."""
    prefix = f"lsxe{RUN_ID}-{uuid.uuid4().hex[:6]}"
    topics = Topics.named(prefix)
    yield topics, prefix
    kafka.delete_topics_with_prefix(stack.kafka_bootstrap, f"{prefix}-")


def worker(stack, env: tuple[Topics, str], tmp_path: Path, name: str,
           *extra: str) -> WorkerProcess:
    topics, app_id = env
    return WorkerProcess(
        ["--bootstrap", stack.kafka_bootstrap, "--app-id", app_id,
         "--data-dir", str(tmp_path / name), "--topology", str(TOPOLOGY), "--no-influx",
         "--session-timeout", "8", *extra, *topics.args()],
        free_port(), tmp_path / f"{name}.log")


def feed_clocks(stack, topics: Topics, w: WorkerProcess) -> None:
    produce(stack.kafka_bootstrap, topics.clock, encoded(
        "ClockModel", [clock_model(h, OFFSETS[h]) for h in ("h1", "h2")], "host"))
    w.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "both clock models")


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    """Every message on the topic up to its current end: (value, decoded breakdown)."""
    c = kafka.consumer(bootstrap, **{"auto.offset.reset": "earliest",
                                     "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out, pos = [], dict.fromkeys(parts, 0)
        wait_for(lambda: _drain(c, out, pos) or all(pos[p] >= ends[p] for p in parts), 60,
                 f"{topic} read to its end")
        return out
    finally:
        c.close()


def _drain(c, out: list, pos: dict) -> bool:
    for m in c.consume(1000, 0.5):
        if not m.error():
            out.append((m.value(), codec.decode(m.value(), expect="Breakdown")[1]))
            pos[m.partition()] = m.offset() + 1
    return False


def count(bootstrap: str, topic: str) -> int:
    c = kafka.consumer(bootstrap)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        c.close()


def check(got: list[tuple[bytes, dict]], index: dict[tuple[str, int], int],
          max_copies: int, exact: int | None = None) -> Counter:
    """The exact set of samples, each at most ``max_copies`` times (``exact``: that often)
    and every copy the same bytes, every duration the injected one."""
    copies: Counter = Counter()
    first: dict[tuple[str, int], bytes] = {}
    for raw, bd in got:
        key = (bd["flow_id"], bd["seq"])
        assert key in index, f"a sample never fed: {key}"
        copies[key] += 1
        assert first.setdefault(key, raw) == raw, f"two different breakdowns of {key}"
        want = steps(index[key])
        assert bd["complete"] and not bd["retrans"], bd
        assert [s["duration_ns"] for s in bd["segments"]] == want, (key, bd["segments"])
        assert bd["end_to_end_ns"] == sum(want)
    assert set(copies) == set(index), (len(copies), len(index))
    assert max(copies.values()) <= max_copies, copies.most_common(3)
    if exact is not None:
        assert set(copies.values()) == {exact}, Counter(copies.values())
    return copies


def test_killed_before_a_commit_everything_is_read_again(stack, env, tmp_path) -> None:
    """Nothing committed (the commit interval is an hour): the next worker reads all of it
    again, so every sample is on the topic exactly twice, both copies identical."""
    topics, app_id = env
    recs, index = records(0, 300, monotonic_ns())
    with worker(stack, env, tmp_path, "a", "--commit-interval", "3600") as a:
        a.wait_ready()
        feed_clocks(stack, topics, a)
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
        wait_for(lambda: count(stack.kafka_bootstrap, topics.breakdowns) >= len(index), 60,
                 "a's breakdowns")
        assert committed(stack.kafka_bootstrap, app_id, topics.layer) == 0
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
    with worker(stack, env, tmp_path, "b") as b:
        b.wait_until(lambda s: s["counters"]["published"] >= len(index), 120,
                     "the input read again")
        wait_committed(stack.kafka_bootstrap, app_id, topics.layer, len(recs), 60)
    check(read_all(stack.kafka_bootstrap, topics.breakdowns), index, 2, exact=2)


def test_killed_after_a_commit_nothing_is_read_twice(stack, env, tmp_path) -> None:
    """Every offset committed before the kill (outputs are acknowledged before their
    offsets commit): the next worker publishes only what is fed after, each sample once."""
    topics, app_id = env
    t0 = monotonic_ns()
    recs, index = records(0, 300, t0)
    more, index_more = records(300, 300, t0)
    with worker(stack, env, tmp_path, "a") as a:
        a.wait_ready()
        feed_clocks(stack, topics, a)
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
        wait_committed(stack.kafka_bootstrap, app_id, topics.layer, len(recs), 60)
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
    with worker(stack, env, tmp_path, "b") as b:
        b.wait_ready()
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", more, "flow_id"))
        b.wait_until(lambda s: s["counters"]["published"] >= len(index_more), 120,
                     "the new input")
        wait_committed(stack.kafka_bootstrap, app_id, topics.layer, len(recs) + len(more), 60)
        assert b.summary()["counters"]["records"] == len(more)
    check(read_all(stack.kafka_bootstrap, topics.breakdowns), index | index_more, 1, exact=1)


def test_killed_mid_stream_at_least_once_and_identical(stack, env, tmp_path) -> None:
    """Killed while it works through its input in small batches (between a quarter and
    three quarters of it published, read back from the topic): some batches committed,
    some published and not committed, some not read. Every sample comes out, at most twice,
    copies identical."""
    topics, app_id = env
    recs, index = records(0, 6000, monotonic_ns())
    n = len(index)
    with worker(stack, env, tmp_path, "a", "--batch", "100") as a:
        a.wait_ready()
        feed_clocks(stack, topics, a)
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
        # read back from the topic, not a's counter: that counts breakdowns handed to the
        # producer, and those not yet acknowledged are gone with it (their input is read again)
        wait_for(lambda: count(stack.kafka_bootstrap, topics.breakdowns) >= n // 4, 120,
                 "a quarter on the breakdown topic")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(10)
    at_kill = count(stack.kafka_bootstrap, topics.breakdowns)
    done = committed(stack.kafka_bootstrap, app_id, topics.layer)
    assert n // 4 <= at_kill < 3 * n // 4 and done < len(recs), (at_kill, done)
    with worker(stack, env, tmp_path, "b") as b:
        b.wait_ready()
        wait_committed(stack.kafka_bootstrap, app_id, topics.layer, len(recs), 120)
        reread = b.summary()["counters"]["records"]
    copies = check(read_all(stack.kafka_bootstrap, topics.breakdowns), index, 2)
    twice = sum(v == 2 for v in copies.values())
    # b read again exactly what a had not committed: its duplicates are among those
    assert reread == len(recs) - done and twice <= reread // 3, (reread, done, twice)
