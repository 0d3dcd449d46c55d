"""The publisher on the real broker: a partition's records wait for its oldest to be due and
go out as one message; none is kept past that, and none is left behind at a flush."""

from __future__ import annotations

from typing import Any

import pytest
from producer_helpers import read_topic

from latscope import kafka
from latscope.producers._native import bucket
from latscope.producers.grouping import Hit, Record
from latscope.producers.publish import MAX_BATCH, LayerEventPublisher
from latscope.schemas import codec

pytestmark = pytest.mark.stack

MS = 1_000_000
WAIT = 1000 * MS
FLOWS = [("tcp", 4, "10.1.0.1", "10.2.0.2", 40000 + i, 5201) for i in range(3)]


def _record(flow: tuple, seq: int, first: int) -> Record:
    fid = f"tcp:{flow[2]}:{flow[4]}>{flow[3]}:{flow[5]}"
    return Record("h1", flow, fid, seq, False, True,
                  [Hit("sock_send", first, 0, None, 0, 0),
                   Hit("dev_xmit", first + 5000, 2, "eth0", 0, 0)])


def test_bucket_groups_bodies_and_keeps_each_groups_earliest_due() -> None:
    """The publisher's per-record loop (C), by hand: a group per flow id (asked once per
    call), bodies in arrival order, a group's due its earliest first hit plus the wait,
    whether the group is new or already waiting."""
    pending: dict[Any, list[bytes]] = {7: [b"old"]}
    due: dict[Any, int] = {7: 1030}
    asked: list[str] = []

    def group_of(fid: str) -> int:
        asked.append(fid)
        return {"a": 7, "bb": 0, "cc": 0}[fid]
    recs = [("a", b"1", 50), ("bb", b"2", 40), ("a", b"3", 20), ("cc", b"4", 60),
            ("bb", b"5", 10)]
    assert bucket(recs, pending, due, group_of, 1000) == 5
    assert pending == {7: [b"old", b"1", b"3"], 0: [b"2", b"4", b"5"]}
    assert due == {7: 1020, 0: 1010} and asked == ["a", "bb", "cc"]
    with pytest.raises(TypeError, match="record 1 is not"):
        bucket([("a", b"1", 5), ("a", b"2")], {}, {}, group_of, 0)


def _messages(topic: str, bootstrap: str, want: int) -> list[dict]:
    """Every message's partition and record count (read until `want` records)."""
    def take(m: Any, _n: int) -> list[dict]:
        name, batch = codec.decode(m.value())
        assert name == "LayerEventBatch"
        return [{"partition": m.partition(), "offset": m.offset(), "seq": e["seq"],
                 "flow_id": e["flow_id"]} for e in batch["events"]]
    return read_topic(topic, bootstrap, want, take)


def test_a_partitions_records_wait_for_the_oldest_then_go_out_as_one_message(
        stack: Any, topic_name: str) -> None:
    """Ten turns of records of three flows, 100 ms apart (the agent's turns): nothing is
    produced until a partition's oldest record is due (its first hit plus the wait), then
    all of that partition's records go out in one message; a record due already goes out at
    once; a flush sends what still waits. Checked on the broker: the messages and records
    each partition holds. Producing at every turn (the old publisher) queued 30 messages
    here, each turn's records apart."""
    pub = LayerEventPublisher(stack.kafka_bootstrap, topic_name, linger_ms=5, wait_ns=WAIT)
    try:
        deadline = 30.0
        while pub._partitions is None and deadline > 0:   # the topic as the worker makes it
            pub.producer.poll(0.1)
            deadline -= 0.1
        parts = pub._partitions
        assert parts, "the publisher created the topic"
        t0 = 10_000 * MS
        sent = 0
        for turn in range(10):
            now = t0 + turn * 100 * MS
            pub.publish_all([_record(f, turn * 1000, now) for f in FLOWS], now)
            sent += len(FLOWS)
            assert pub.counters.produced == 0 and pub.waiting == sent, turn
        # one ns before the first turn's records are due: still nothing
        pub.publish_all([], t0 + WAIT - 1)
        assert pub.counters.produced == 0
        pub.publish_all([], t0 + WAIT)
        assert pub.counters.produced == sent and pub.waiting == 0
        groups = {kafka.partition_of(_record(f, 0, 0).flow_id.encode(), parts) for f in FLOWS}
        assert pub.counters.messages == len(groups)
        # a record whose first hit is older than the wait: produced by the call that adds it
        late = _record(FLOWS[0], 99_000, t0)
        pub.publish_all([late], t0 + 2 * WAIT)
        assert pub.counters.produced == sent + 1 and pub.waiting == 0
        # a partition holding a full message goes out whatever its age
        full = [_record(FLOWS[1], 200_000 + i, t0 + 2 * WAIT) for i in range(MAX_BATCH)]
        pub.publish_all(full, t0 + 2 * WAIT)
        assert pub.counters.produced == sent + 1 + MAX_BATCH
        # one more waits, and the flush sends it
        pub.publish_all([_record(FLOWS[2], 300_000, t0 + 3 * WAIT)], t0 + 3 * WAIT)
        assert pub.waiting == 1
        assert pub.flush(30) == 0
        total = sent + 2 + MAX_BATCH
        assert (pub.counters.delivered, pub.counters.failed, pub.waiting) == (total, 0, 0)
    finally:
        pub.close()
    got = _messages(topic_name, stack.kafka_bootstrap, total)
    assert len(got) == total
    messages = {(g["partition"], g["offset"]) for g in got}
    # the first wave's one message per partition, the late record, the full one, the flush's
    assert len(messages) == len(groups) + 3, sorted(messages)
    first_wave = [g for g in got if g["seq"] < 10_000]
    assert len(first_wave) == sent
    assert len({(g["partition"], g["offset"]) for g in first_wave}) == len(groups)
    for g in got:
        assert g["partition"] == kafka.partition_of(g["flow_id"].encode(), parts)
