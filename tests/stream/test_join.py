"""The table-backed join, driven without a broker."""

from __future__ import annotations

import json

from latscope.stream.join import Joiner, JoinPolicy, sample_key
from latscope.stream.synthetic import PathSpec, sample_records

PATH = ["h1", "h2", "c1"]


def apply(table: dict, writes: dict) -> None:
    for k, (_p, v) in writes.items():
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


def test_all_hosts_in_one_batch_never_touch_the_table() -> None:
    j = Joiner(JoinPolicy(), lambda ev: PATH)
    recs = sample_records(PathSpec(PATH), 7, 10**12)
    done, writes = j.process([(1, 100.0, r) for r in recs], {}, now=100.0)
    assert len(done) == 1 and writes == {}
    assert {e["host"] for e in done[0]["ev"]} == set(PATH)


def test_partners_across_batches_wait_in_table() -> None:
    j = Joiner(JoinPolicy(), lambda ev: PATH)
    recs = sample_records(PathSpec(PATH), 7, 10**12)
    table: dict = {}
    done, writes = j.process([(3, 100.0, recs[0])], table, now=100.0)
    assert done == [] and writes[sample_key(recs[0])][0] == 3
    apply(table, writes)
    done, writes = j.process([(3, 100.4, recs[1]), (3, 100.4, recs[2])], table, now=100.5)
    assert len(done) == 1 and writes == {sample_key(recs[0]): (3, None)}
    apply(table, writes)
    assert table == {}
    assert j.counters.joined == 1 and j.counters.by_window == 0


def test_a_record_read_again_joins_its_restored_sample_once() -> None:
    """A worker restarted from a changelog written before its input offsets were committed
    restores a sample holding h1's record and reads that record again: h1 counts once, and
    the sample closes complete on its three records."""
    j = Joiner(JoinPolicy(), lambda ev: PATH)
    recs = sample_records(PathSpec(PATH), 7, 10**12)
    _, writes = Joiner(JoinPolicy(), lambda ev: PATH).process([(3, 100.0, recs[0])], {}, 100.0)
    table = json.loads(json.dumps({k: v for k, (_p, v) in writes.items()}))   # the changelog
    done, _ = j.process([(3, 100.0, r) for r in recs], table, now=101.0)
    assert len(done) == 1 and [e["host"] for e in done[0]["ev"]] == PATH
    assert j.counters.repeated == 1


def test_window_closes_incomplete_and_late_records_are_counted() -> None:
    pol = JoinPolicy(window_s=1.0, lateness_s=0.5)
    j = Joiner(pol, lambda ev: PATH)
    recs = sample_records(PathSpec(PATH), 7, 10**12)
    table: dict = {}
    _, writes = j.process([(0, 10.0, recs[0])], table, now=10.0)
    apply(table, writes)
    # a quiet partition: its samples close a window after they were seen, by wall time
    assert j.expire(table, now=11.4) == []
    done = j.expire(table, now=11.5)
    assert len(done) == 1 and j.counters.by_window == 1
    table.clear()
    done, writes = j.process([(0, 11.6, recs[2])], table, now=11.6)
    assert done == [] and writes == {} and j.counters.late == 1
    # Far later the key is forgotten: a new sample with that key opens normally.
    done, writes = j.process([(0, 20.0, recs[0])], table, now=20.0)
    assert sample_key(recs[0]) in writes


def test_window_runs_on_arrival_not_on_processing_time() -> None:
    """A worker behind on a backlog (or busy with one big batch) must not close a sample
    whose partners already sit in the partition: the window follows the partition's
    watermark, the newest arrival read there."""
    pol = JoinPolicy(window_s=1.0, lateness_s=0.5)
    j = Joiner(pol, lambda ev: PATH)
    a, b = (sample_records(PathSpec(PATH), seq, 10**12) for seq in (7, 8))
    table: dict = {}
    # both samples arrived 100 s ago, back to back; the worker reads them only now, and
    # then spends 10 s on something else while partition 0 still holds unread records
    _, writes = j.process([(0, 1.0, a[0]), (0, 1.0, b[0])], table, now=100.0)
    apply(table, writes)
    j.backlogged = {0}
    assert j.expire(table, now=110.0) == []      # 10 s on the wall, but not quiet
    done, writes = j.process([(0, 1.1, a[1]), (0, 1.1, a[2])], table, now=110.0)
    apply(table, writes)
    assert len(done) == 1 and {e["host"] for e in done[0]["ev"]} == set(PATH)
    # ...and on arrival time only 0.1 s passed: b waits until the watermark passes 2.5
    j.backlogged = set()
    assert j.expire(table, now=110.1) == []     # read to the end, but quiet only 0.1 s
    j.process([(0, 2.6, a[0] | {"flow_id": "other"})], table, now=110.2)
    done = j.expire(table, now=110.2)
    assert [s["k"] for s in done] == [sample_key(b[0])] and j.counters.by_window == 1


def test_without_topology_only_the_window_closes() -> None:
    j = Joiner(JoinPolicy(window_s=1, lateness_s=0), lambda ev: None)
    recs = sample_records(PathSpec(PATH), 7, 10**12)
    done, writes = j.process([(0, 0.0, r) for r in recs], {}, now=0.0)
    assert done == [] and len(writes[sample_key(recs[0])][1]["ev"]) == 3


def test_one_default_join_window_for_the_worker_its_cli_and_the_agents() -> None:
    """Issue #11: JoinPolicy said 2.0 + 1.0 s, the CLI 1.0 + 0.5 s, the agent 1500 ms."""
    import argparse

    from latscope.config import Config
    from latscope.producers.agent import AgentSettings
    from latscope.stream.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["stream", "worker"])
    pol = JoinPolicy()
    assert (args.window, args.lateness) == (pol.window_s, pol.lateness_s)
    window_ms = round(pol.close_after_s * 1000)
    assert AgentSettings(host="x").join_window_ms == window_ms == 1500
    assert Config().agent.join_window_ms == window_ms
