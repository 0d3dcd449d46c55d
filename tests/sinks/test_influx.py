"""The InfluxDB sink against the real InfluxDB: idempotent writes, flush on close, the
dashboard's Flux queries, and the report's PNGs."""

from __future__ import annotations

import json
import time

import pytest

from latscope.paths import REPO_ROOT
from latscope.sinks.influx import sample_line, window_line
from latscope.sinks.influx_writer import InfluxSink
from latscope.sinks.report import ReportError, make_report, query
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.sketch import Sketch
from latscope.stream.synthetic import PathSpec, sample_records
from latscope.stream.windows import rows

pytestmark = pytest.mark.stack


def write_windows(influx, n_windows: int = 3, start_ns: int | None = None) -> int:
    """Window statistics and raw samples of a synthetic flow, as the worker writes them."""
    start = start_ns or (time.time_ns() - 60 * 10**9)
    sink = InfluxSink(influx)
    lines = []
    for w in range(n_windows):
        t0 = start + w * 10**9
        sketches: dict = {}
        for i in range(20):
            bd = breakdown(sample_records(PathSpec(["h1", "h2", "c1"], step_ns=3000 + 100 * i),
                                          i, 10**12), ClockView({}, None), path=["h1", "h2", "c1"])
            lines.append(sample_line(bd, "f9", t0 + i, influx.tags))
            for tags, v, pos in rows(bd, "f9"):
                sk, _ = sketches.setdefault(tuple(tags.items()), (Sketch(), pos))
                sk.add(v)
        for tkey, (sk, pos) in sketches.items():
            lines.append(window_line(dict(tkey), sk, t0, influx.tags, pos))
    sink.write(lines)
    sink.close()   # flushes: the points must be there right after
    assert sink.counters.lines_failed == 0
    assert sink.counters.lines_written == len(lines)
    return len(lines)


def count_points(influx, measurement: str) -> int:
    rows_ = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => r._measurement == "{measurement}" and r.run == "{influx.tags['run']}"
                           and r._field == "count")''')
    return len(rows_)


def test_writes_are_flushed_on_close_and_idempotent(influx) -> None:
    start = time.time_ns() - 30 * 10**9
    write_windows(influx, 2, start)
    first = count_points(influx, "latscope_segment")
    assert first == 2 * 15          # 15 segments per window
    write_windows(influx, 2, start)   # a replay: same series, same timestamps
    assert count_points(influx, "latscope_segment") == first
    assert count_points(influx, "latscope_flow") == 2


def test_report_writes_pngs(influx, tmp_path) -> None:
    write_windows(influx)
    rep = make_report(influx, tmp_path, since="1h", run=influx.tags["run"])
    assert rep.flows == ["f9"] and rep.segments == 15 and rep.samples > 0
    for f in rep.files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000
    with pytest.raises(ReportError, match="nothing to plot"):
        make_report(influx, tmp_path, since="1h", run="lsxd-no-such-run")
    with pytest.raises(ReportError, match="Flux duration"):
        make_report(influx, tmp_path, since="10 minutes")


def test_dashboard_queries_run(influx) -> None:
    write_windows(influx)
    dash = json.loads((REPO_ROOT / "compose/grafana/latscope-dashboard.json").read_text())
    subst = {"${bucket}": influx.bucket, "${run}": influx.tags["run"],
             "${flow:json}": '["f9"]', "${layer:json}": '["wire", "socket"]',
             "v.timeRangeStart": "-1h", "v.timeRangeStop": "now()", "v.windowPeriod": "10s"}
    results = {}
    for panel in dash["panels"]:
        flux = panel["targets"][0]["query"]
        for k, v in subst.items():
            flux = flux.replace(k, v)
        results[panel["title"]] = query(influx, flux)
    empty = [t for t, rows_ in results.items() if not rows_ and "counters" not in t]
    assert not empty, f"panels without data: {empty}"


def test_unreachable_influxdb_is_counted_not_fatal() -> None:
    """An InfluxDB outage: the writes fail after their retries and are counted."""
    from latscope.procs import free_port
    from latscope.sinks.influx_writer import InfluxSettings

    dead = InfluxSettings(f"http://127.0.0.1:{free_port()}", "latscope", "latscope", "x",
                          max_retries=1, flush_interval_ms=100, retry_interval_s=0.1)
    sink = InfluxSink(dead)
    sink.write([f"latscope_stream,worker=lsxd n={i}i {time.time_ns() + i}" for i in range(5)])
    sink.close()
    assert sink.counters.lines_failed == 5 and sink.counters.lines_written == 0


def test_sample_line_fields_tags_and_cached_parts() -> None:
    """The raw sample line by its definition; cached tag sets and field names never leak
    between flows, hosts, completeness or extra tags."""
    bd = {"src_host": "h 1", "dst_host": "c1", "complete": True, "seq": 7, "end_to_end_ns": 30,
          "segments": [
              {"from": "h 1:sock_send", "to": "h 1:tcp_tx", "layer": "socket", "duration_ns": 10},
              {"from": "h 1:tcp_tx", "to": "c1:dev_rx@e=0", "layer": "wire", "duration_ns": -5},
              {"from": "c1:dev_rx@e=0", "to": "c1:sock_recv", "layer": "socket",
               "duration_ns": 25}]}
    want = ("latscope_sample,complete=true,dst_host=c1,flow=f\\,1,run=x,src_host=h\\ 1 "
            "seq=7i,end_to_end=30i,h\\ 1:sock_send→h\\ 1:tcp_tx=10i,"
            "h\\ 1:tcp_tx→c1:dev_rx@e\\=0=-5i,c1:dev_rx@e\\=0→c1:sock_recv=25i,"
            "layer_socket=35i,layer_wire=-5i 123")
    for _ in range(2):   # the second time from the caches
        assert sample_line(bd, "f,1", 123, {"run": "x"}) == want
    incomplete = dict(bd, complete=False, end_to_end_ns=None)
    assert sample_line(incomplete, "f,1", 5, {"run": "x"}).startswith(
        "latscope_sample,complete=false,dst_host=c1,flow=f\\,1,run=x,src_host=h\\ 1 seq=7i,h")
    assert sample_line(bd, "f2", 5).startswith(
        "latscope_sample,complete=true,dst_host=c1,flow=f2,src_host=h\\ 1 seq=7i,end_to_end")
    assert sample_line(bd, "f2", 5, {"run": "y", "src_host": "z"}).startswith(
        "latscope_sample,complete=true,dst_host=c1,flow=f2,run=y,src_host=z seq=7i,")
    assert sample_line(bd, "f2", 5, {"run": ""}) == sample_line(bd, "f2", 5)   # empty: no tag
    odd = dict(bd, segments=[{"from": "a%d", "to": "b", "layer": "x%s", "duration_ns": 2.9}])
    assert sample_line(odd, "f", 1) == ("latscope_sample,complete=true,dst_host=c1,flow=f,"
                                        "src_host=h\\ 1 seq=7i,end_to_end=30i,a%d→b=2i,"
                                        "layer_x%s=2i 1")


def test_freshness_and_backlog_bound(influx) -> None:
    """Freshness is measured from each raw sample's time to InfluxDB's acknowledgement;
    while InfluxDB is away the queue is bounded and what it sheds is counted."""
    from latscope.procs import free_port
    from latscope.sinks.influx_writer import InfluxSettings

    sink = InfluxSink(influx)
    sent = time.time_ns() - 2 * 10**9          # samples taken 2 s ago
    sink.write([f"lsxd_fresh,run={influx.tags['run']} n={i}i {sent + i}" for i in range(50)],
               [sent + i for i in range(50)])
    sink.close()
    assert sink.counters.lines_written == 50 and sink.freshness.count == 50
    assert 1.95 <= sink.freshness.quantile(0.5) / 1e9 < 30      # sketch: 1 % relative error

    dead = InfluxSettings(f"http://127.0.0.1:{free_port()}", "latscope", "latscope", "x",
                          max_retries=0, flush_interval_ms=5000, max_pending_lines=10)
    sink = InfluxSink(dead)
    for i in range(4):
        sink.write([f"x n={i}i {time.time_ns()}"] * 4)
    assert sink.counters.lines_failed == 8        # two oldest chunks shed, counted
    sink.close()
    assert sink.counters.lines_failed == 16 and sink.counters.lines_written == 0
