"""The real worker on the real broker and InfluxDB, fed with synthetic per-host records.

Offsets are injected into the host clocks and announced by ClockModel records, so every
corrected segment must come back to its true duration.
"""

from __future__ import annotations

import time

import pytest
from influxdb_client import InfluxDBClient

from latscope.bpf.clock import monotonic_ns
from latscope.schemas import codec
from latscope.stream.kafkaio import consume, produce
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records

pytestmark = pytest.mark.stack

OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}   # c1 shares h2's kernel
F1 = {"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
      "sport": 40123, "dport": 5201}
UNKNOWN = {"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
           "sport": 40124, "dport": 7777}


def test_worker_joins_corrects_publishes_and_writes(stack, topics, worker, run_tag) -> None:
    models = [clock_model(h, OFFSETS[h], bound_ns=400) for h in ("h1", "h2")]
    produce(stack.kafka_bootstrap, topics.clock, encoded("ClockModel", models, "host"))
    worker.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "clock models")
    assert worker.summary()["clock"]["h1"]["offset_ns"] == 5_000_000

    spec = PathSpec(["h1", "h2", "c1"], step_ns=7_000, offsets_ns=OFFSETS, flow=F1)
    t0 = monotonic_ns()
    records = []
    for i in range(300):
        records += sample_records(spec, seq=i * 72400, t0_ref_ns=t0 + i * 1_000_000)
    # A flow the topology does not know, seen by h1 only: closed by the window, incomplete.
    lone = PathSpec(["h1", "c1"], offsets_ns=OFFSETS, flow=UNKNOWN)
    for i in range(20):
        records += [r for r in sample_records(lone, i, t0) if r["host"] == "h1"]
    items = encoded("LayerEvent", records, "flow_id")
    items += [(b"junk", b"not avro"), (b"junk", b"\xc3\x01" + b"\x00" * 8 + b"x"),
              (b"junk", codec.encode("LayerEvent", records[0])[:-3])]
    produce(stack.kafka_bootstrap, topics.layer, items)

    msgs = consume(stack.kafka_bootstrap, topics.breakdowns, lambda m: len(m) >= 320)
    assert len(msgs) == 320
    bds = [codec.decode(m.value(), expect="Breakdown")[1] for m in msgs]
    complete = [b for b in bds if b["complete"]]
    assert len(complete) == 300
    for bd in complete:
        assert bd["hosts"] == ["h1", "h2", "c1"] and bd["missing_hosts"] == []
        assert [s["duration_ns"] for s in bd["segments"]] == [7_000] * 15
        assert bd["end_to_end_ns"] == spec.end_to_end_ns()
        wires = [s for s in bd["segments"] if s["layer"] == "wire"]
        assert [w["error_bound_ns"] for w in wires] == [800.0, 0.0]   # h2, c1: one clock
    lone_bds = [b for b in bds if not b["complete"]]
    assert len(lone_bds) == 20 and all(b["hosts"] == ["h1"] for b in lone_bds)

    dead = consume(stack.kafka_bootstrap, topics.dead_letter, lambda m: len(m) >= 3, 30)
    assert len(dead) == 3 and all(m.headers() for m in dead)
    summ = worker.wait_until(lambda s: s["counters"]["window_closed"] > 0
                             and s["counters"]["open_windows"] == 0
                             and s["counters"]["pending"] == 0
                             and s["counters"]["influx_lines_written"] > 300, 30,
                             "every window closed and written")
    c = summ["counters"]
    assert (c["dead_lettered"], c["complete"], c["incomplete"]) == (3, 300, 20)
    assert c["join_by_window"] == 20

    f1 = next(f for f in worker.flows()["flows"] if f["flow"] == "f1")
    assert f1["end_to_end"]["total"]["count"] == 300
    assert f1["end_to_end"]["total"]["p50_us"] == pytest.approx(105, rel=0.011)
    assert len(f1["segments"]) == 15

    with InfluxDBClient(url=stack.influx_url, token=stack.influx_token,
                        org=stack.influx_org) as client:
        flux = f'''from(bucket: "{stack.influx_bucket}") |> range(start: -10m)
          |> filter(fn: (r) => r._measurement == "latscope_segment" and r.run == "{run_tag}"
                               and r.layer == "wire" and r._field == "p50")'''
        deadline = time.monotonic() + 30
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = [rec for t in client.query_api().query(flux) for rec in t.records]
            time.sleep(0.5)
        assert rows, "no wire statistics in InfluxDB"
        assert all(r.get_value() == pytest.approx(7_000, rel=0.011) for r in rows)
        assert {r["flow"] for r in rows} == {"f1"}


def test_flows_reset_starts_every_total_again(stack, topics, worker) -> None:
    """/latscope/flows/reset (POST): a flow's total counts only what closed after it, so a
    second run on a long-lived worker is not mixed with the first (counts by hand)."""
    import json
    import urllib.request

    models = [clock_model(h, OFFSETS[h], bound_ns=400) for h in ("h1", "h2")]
    produce(stack.kafka_bootstrap, topics.clock, encoded("ClockModel", models, "host"))
    worker.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "clock models")
    spec = PathSpec(["h1", "h2", "c1"], step_ns=7_000, offsets_ns=OFFSETS, flow=F1)

    def feed(first: int, n: int) -> None:
        t0 = monotonic_ns()
        recs = [r for i in range(first, first + n)
                for r in sample_records(spec, seq=i * 72400, t0_ref_ns=t0 + i * 1_000_000)]
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))

    def total() -> int:
        f1 = [f for f in worker.flows()["flows"] if f["flow"] == "f1"]
        return f1[0]["end_to_end"].get("total", {}).get("count", 0) if f1 else 0

    feed(0, 50)
    worker.wait_until(lambda s: total() == 50 and s["counters"]["open_windows"] == 0, 30,
                      "the first 50 in the total")
    before = worker.flows()["totals_since"]
    req = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}/latscope/flows/reset",
                                 method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        reset = json.load(r)
    assert reset["series_reset"] >= 16 and reset["totals_since"] > before, reset
    assert total() == 0
    feed(50, 30)
    worker.wait_until(lambda s: total() == 30 and s["counters"]["open_windows"] == 0, 30,
                      "only the next 30 in the total")
