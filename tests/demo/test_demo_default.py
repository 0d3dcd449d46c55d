"""The default topology end to end: real probes, sync, Kafka, Faust worker, InfluxDB."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from latscope.lab.demo import DEFAULT_TOPOLOGY
from latscope.schemas.records import LAYERS
from latscope.sinks.report import make_report, query
from latscope.sinks.settings import InfluxSettings

sys.path.insert(0, str(Path(__file__).parent))
from truth import load, true_end_to_end

pytestmark = [pytest.mark.root, pytest.mark.stack]


@pytest.fixture(scope="module")
def default_run(stack, demo_runner) -> dict:
    return demo_runner(DEFAULT_TOPOLOGY, duration=10)


def test_summary_has_every_segment(default_run) -> None:
    s = default_run
    assert not s.get("missing"), s.get("missing")
    assert set(s) >= {"duration_s", "counters", "clock", "flows"}
    c = s["counters"]
    assert c["complete"] > 0 and c["dead_lettered"] == 0
    assert c["joined"] == c["complete"] + c["incomplete"]
    assert set(s["clock"]) == {"h1", "h2", "c1"}
    for h, ck in s["clock"].items():
        assert abs(ck["error_ns"]) <= ck["bound_ns"], (h, ck)
    for f in s["flows"]:
        assert f["samples"] > 0, f["name"]
        # The segments chain from the sender's sock_send to the receiver's sock_recv.
        nxt = {}
        for seg in f["segments"]:
            if seg["count"] >= f["samples"] / 2:
                nxt[seg["from"]] = seg["to"]
        at, hops = f"{f['src']}:sock_send", 0
        while at in nxt and hops < 40:
            at, hops = nxt[at], hops + 1
        assert at == f"{f['dst']}:sock_recv", (f["name"], nxt)
        assert {seg["layer"] for seg in f["segments"]} == set(LAYERS), f["name"]
        wires = [seg for seg in f["segments"] if seg["layer"] == "wire"]
        assert all(len(w["hosts"]) == 2 for w in wires)


def test_each_sample_adds_up_to_its_end_to_end(stack, default_run) -> None:
    """A plain consumer decodes the breakdowns; per sample the segments telescope."""
    bds, _ = load(stack.kafka_bootstrap, default_run)
    complete = [b for b in bds if b["complete"]]
    assert len(complete) == default_run["counters"]["complete"] > 0
    for bd in complete:
        assert sum(seg["duration_ns"] for seg in bd["segments"]) == bd["end_to_end_ns"]
        assert bd["hosts"][0] == bd["src_host"] and bd["hosts"][-1] == bd["dst_host"]


def test_corrected_end_to_end_matches_injected_truth(stack, default_run) -> None:
    """Against the injected clocks: |corrected e2e - true e2e| <= the segments' summed sync
    bound for >= 90 % of samples (the rest: the sync's own bound failed to cover it)."""
    bds, recs = load(stack.kafka_bootstrap, default_run)
    complete = [b for b in bds if b["complete"]]
    misses = []
    for bd in complete:
        bound = sum(seg["error_bound_ns"] for seg in bd["segments"])
        truth = true_end_to_end(bd, recs[(bd["flow_id"], bd["seq"])],
                                default_run["injected_clocks"])
        if abs(bd["end_to_end_ns"] - truth) > bound:
            misses.append((bd["flow_id"], bd["seq"], bd["end_to_end_ns"], round(truth), bound))
    assert len(misses) <= 0.1 * len(complete), (
        f"{len(misses)}/{len(complete)} outside the bound: {misses[:5]}")


def test_statistics_in_influxdb_and_report(stack, default_run, tmp_path) -> None:
    settings = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                              stack.influx_token)
    rows = query(settings, f'''from(bucket: "{stack.influx_bucket}") |> range(start: -30m)
      |> filter(fn: (r) => r._measurement == "latscope_segment" and r.run == "{default_run['run']}"
                           and r._field == "p99")''')
    assert {r["flow"] for r in rows} == {"f1", "f2"}
    assert {r["layer"] for r in rows} == set(LAYERS)
    rep = make_report(settings, tmp_path, since="30m", run=default_run["run"])
    assert rep.flows == ["f1", "f2"] and rep.samples > 0
    assert all(f.stat().st_size > 10_000 for f in rep.files)
