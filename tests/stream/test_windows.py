"""Window folding, closing and the late horizon."""

from __future__ import annotations

from latscope.stream.segments import ClockView, breakdown
from latscope.stream.sketch import Sketch
from latscope.stream.synthetic import PathSpec, sample_records
from latscope.stream.windows import E2E, WindowPolicy, Windows


def bd_at(seq: int) -> dict:
    return breakdown(sample_records(PathSpec(["h1", "c1"], step_ns=500), seq, 10**12),
                     ClockView({}, None), path=["h1", "c1"])


def test_fold_merges_batches_and_closes_after_lateness() -> None:
    w = Windows(WindowPolicy(interval_s=1.0, lateness_s=0.5))
    table: dict = {}
    t = 1_000 * 10**9 + 200_000_000   # 1000.2 s
    table.update(w.fold([(0, bd_at(1), "f1", t), (0, bd_at(2), "f1", t + 1)], table))
    table.update(w.fold([(0, bd_at(3), "f1", t + 2)], table))
    e2e = [v for v in table.values() if v["tags"]["segment"] == E2E]
    assert len(e2e) == 1 and e2e[0]["w"] == 1000 * 10**9
    assert Sketch.from_dict(e2e[0]["s"]).count == 3
    nseg = len(bd_at(1)["segments"])
    assert len(table) == nseg + 1
    assert w.due(table, now_s=1001.4) == []
    due = w.due(table, now_s=1001.5)
    assert len(due) == len(table)
    for k, _ in due:
        del table[k]
    # A sample of the closed window is late, one of the next window is not.
    assert w.fold([(0, bd_at(4), "f1", t)], table) == {} and w.counters.late == 1
    assert w.fold([(0, bd_at(5), "f1", t + 10**9)], table)
