"""Window folding, closing and the late horizon."""

from __future__ import annotations

from latscope.stats.sketch import Sketch
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.synthetic import PathSpec, sample_records
from latscope.stream.windows import E2E, WindowPolicy, Windows


def bd_at(seq: int) -> dict:
    return breakdown(sample_records(PathSpec(["h1", "c1"], step_ns=500), seq, 10**12),
                     ClockView({}, None), path=["h1", "c1"])


def canonical(window: dict) -> dict:
    s = Sketch.of(window["s"]).to_dict()
    return {**window, "s": {**s, "p": sorted(s["p"]), "ng": sorted(s["ng"])}}


def test_fold_merges_batches_and_closes_after_lateness() -> None:
    w = Windows(WindowPolicy(interval_s=1.0, lateness_s=0.5))
    table: dict = {}
    t = 1_000 * 10**9 + 200_000_000   # 1000.2 s
    table.update(w.fold([(0, bd_at(1), "f1", t), (0, bd_at(2), "f1", t + 1)], table))
    table.update(w.fold([(0, bd_at(3), "f1", t + 2)], table))
    e2e = [v for v in table.values() if v["tags"]["segment"] == E2E]
    assert len(e2e) == 1 and e2e[0]["w"] == 1000 * 10**9
    assert Sketch.of(e2e[0]["s"]).count == 3
    nseg = len(bd_at(1)["segments"])
    assert len(table) == nseg + 1
    assert w.due(table, watermark_s=1001.4) == []
    assert w.due(table, watermark_s=float("-inf")) == []   # a partition not read yet
    due = w.due(table, watermark_s=1001.5)
    assert len(due) == len(table)
    for k, _ in due:
        del table[k]
    # A sample of the closed window is late, one of the next window is not.
    assert w.fold([(0, bd_at(4), "f1", t)], table) == {} and w.counters.late == 1
    assert w.fold([(0, bd_at(5), "f1", t + 10**9)], table)


def reference_fold(items: list, table: dict, policy: WindowPolicy) -> dict:
    """What fold must write, from its definition: every row a value of its series'
    sketch, added in order, merged with the table's; the earliest position."""
    from latscope.stream.windows import rows, stat_key

    out: dict = {}
    for partition, bd, flow, wall in items:
        start = policy.start_of(wall)
        for tags, value, pos in rows(bd, flow):
            key = stat_key(start, tags)
            e = out.setdefault(key, {"p": partition, "w": start, "tags": tags, "pos": pos,
                                     "s": Sketch()})
            e["s"].add(value)
            e["pos"] = min(e["pos"], pos)
    for key, e in out.items():
        if key in table:
            e["s"].merge(Sketch.of(table[key]["s"]))
            e["pos"] = min(e["pos"], table[key].get("pos", e["pos"]))
        e["s"] = e["s"].to_dict()
    return out


def test_fold_equals_its_definition_over_batches() -> None:
    import random

    from latscope.stream.synthetic import clock_model

    rng = random.Random(4)
    policy = WindowPolicy(interval_s=1.0, lateness_s=0.5)
    w = Windows(policy)
    table: dict = {}
    for batch in range(12):
        items = []
        for i in range(rng.randrange(1, 40)):
            path = rng.choice([["h1", "c1"], ["h1", "h2", "c1"]])
            recs = sample_records(PathSpec(path, step_ns=rng.choice([1, 300, 9000])),
                                  i, 10**12 + rng.randrange(10**6))
            if rng.random() < 0.3:
                recs.pop()          # incomplete: no end-to-end row
            clocks = ClockView({"c1": clock_model("c1", rng.randrange(-9000, 9000))}, "h1")
            bd = breakdown(recs, clocks, path=path)
            items.append((rng.randrange(4), bd, rng.choice(["f1", "f 2"]),
                          10**18 + batch * 300_000_000 + rng.randrange(900_000_000)))
        want = reference_fold(items, table, policy)
        if batch % 2:
            got = w.fold(items, table)
        else:   # as the worker does: collected chunk by chunk, flushed once
            cut = rng.randrange(len(items) + 1)
            w.collect(items[:cut])
            w.collect(items[cut:])
            got = w.flush(table)
        # the same windows; a sketch's buckets may come in another order
        assert {k: canonical(v) for k, v in got.items()} == \
            {k: canonical(v) for k, v in want.items()} and list(got) == list(want)
        table.update(got)
    assert w.counters.samples > 100 and w.counters.late == 0
