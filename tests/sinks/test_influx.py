"""The InfluxDB sink against the real InfluxDB: idempotent writes, flush on close, the
dashboard's Flux queries, and the report's PNGs."""

from __future__ import annotations

import json
import random
import sys
import time
from types import MappingProxyType

import pytest

from latscope.paths import REPO_ROOT
from latscope.sinks.influx import sample_line, window_line
from latscope.sinks.influx_writer import InfluxSink
from latscope.sinks.report import ReportError, make_report
from latscope.sinks.report_data import query
from latscope.sinks.settings import InfluxSettings
from latscope.sinks.timerange import time_range
from latscope.stats.sketch import Sketch
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.synthetic import PathSpec, sample_records
from latscope.stream.windows import rows

pytestmark = pytest.mark.stack


def write_windows(influx, n_windows: int = 3, start_ns: int | None = None,
                  flow: str = "f9") -> int:
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
            lines.append(sample_line(bd, flow, t0 + i, influx.tags))
            for tags, v, pos in rows(bd, flow):
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
    """A synthetic flow (15 segments, 3 windows of 20 samples): its figure set, the index
    linking each, and clear errors for an empty selection."""
    write_windows(influx)
    other = InfluxSettings(influx.url, influx.org, influx.bucket, influx.token,
                           tags={"run": influx.tags["run"] + "-other"})
    write_windows(other, flow="f8")   # another run, same time: never in this run's report
    span = time_range(since="1h")
    rep = make_report(influx, tmp_path, span, run=influx.tags["run"])
    assert rep.flows == ["f9"] and rep.segments == 15 and rep.samples == 60
    assert [f.name for f in rep.files] == ["breakdown.png", "e2e_vs_wire.png",
                                           "layers_per_sample.png", "layer_cdf.png",
                                           "p99_over_time.png"]
    for f in rep.files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000
        assert f'href="f9/{f.name}"' in rep.index.read_text()
    # 15 segments: p99 over time on two axes of at most 8 series
    assert len(rep.time_axes[str(tmp_path / "f9" / "p99_over_time.png")]) == 2
    with pytest.raises(ReportError, match="nothing to plot"):
        make_report(influx, tmp_path, span, run="lsxd-no-such-run")
    with pytest.raises(ReportError, match="flow nope"):
        make_report(influx, tmp_path, span, run=influx.tags["run"], flows=["nope"])


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
    from latscope.sinks.settings import InfluxSettings

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
    from latscope.sinks.settings import InfluxSettings

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


def both_paths(bd: dict, flow: str = "f1", wall_ns: int = 1_700_000_000_000_000_000,
               extra: dict | None = None) -> str:
    """The raw sample line from C and from the Python reference: they must be identical."""
    extra = extra or {}
    c = sample_line(bd, flow, wall_ns, extra)
    py = sample_line(bd, flow, wall_ns, extra, native=False)
    assert c == py
    return c


def test_sample_line_c_equals_python_on_varied_breakdowns() -> None:
    """Paths of 2-4 hosts, skewed clocks (negative segments), hosts missing (incomplete, no
    end_to_end), many flows and tag sets: C's line is the Python reference's, every time."""
    rng = random.Random(7)
    names = ["h1", "h2", "r 1", "c=1", "c,2", "hé", "h%d"]
    seen_incomplete = 0
    for _ in range(400):
        hosts = rng.sample(names, rng.randint(2, 4))
        spec = PathSpec(hosts, step_ns=rng.choice([1, 999, 10**6, 2**40]),
                        offsets_ns={h: rng.randint(-10**7, 10**7) for h in hosts})
        recs = sample_records(spec, rng.randint(0, 2**32), rng.randint(0, 2**62))
        if rng.random() < 0.3:
            recs = recs[:-1]     # the receiver's record never came
        bd = breakdown(recs, ClockView({}, None), path=hosts)
        seen_incomplete += not bd["complete"]
        extra = rng.choice([{}, {"run": "lsxline"}, {"run": "a b", "z": "é"}])
        line = both_paths(bd, rng.choice(["f1", "f,1", "f é"]), rng.randint(-2**63, 2**63 - 1),
                          extra)
        assert line.count("layer_") >= 1 and f"seq={bd['seq']}i" in line
    assert 0 < seen_incomplete < 400


def _odd(durations: list, layers: list[str] | None = None, names: list[str] | None = None,
         **over) -> dict:
    layers = layers or ["socket", "wire", "socket"] * (len(durations) // 3 + 1)
    names = names or [f"p{i}" for i in range(len(durations) + 1)]
    segs = [{"from": names[i], "to": names[i + 1], "layer": layers[i], "duration_ns": d}
            for i, d in enumerate(durations)]
    return {"src_host": "h1", "dst_host": "c1", "complete": True, "seq": 1,
            "end_to_end_ns": 5, "segments": segs, **over}


class _Dur(int):
    def __int__(self) -> int:
        return 42


I64 = 2**63 - 1
ODD = {
    "no segments": _odd([]),
    "segments None": _odd([], segments=None),
    "no end_to_end key": {k: v for k, v in _odd([1, 2]).items() if k != "end_to_end_ns"},
    "end_to_end None": _odd([1, 2], end_to_end_ns=None),
    "negative": _odd([-1, -2, -3, -(10**12)]),
    "64-bit extremes": _odd([I64, -I64 - 1, 0]),
    "layer sum past 64 bits": _odd([I64, 0, 1]),
    "layer sum below 64 bits": _odd([-I64 - 1, 0, -1]),
    "huge int": _odd([2**70, 3]),
    "bool and float": _odd([True, 2.9, -0.5]),
    "str duration": _odd(["12", 3]),
    "int subclass with its own __int__": _odd([_Dur(7), 1]),
    "seq huge, e2e float": _odd([1], seq=2**64 + 1, end_to_end_ns=2.5),
    "seq bool": _odd([1], seq=True),
    "64-bit seq and e2e": _odd([1], seq=-I64 - 1, end_to_end_ns=I64),
    "names with % , = space": _odd([1, 2, 3], layers=["s%d", "w,x", "s%d"],
                                   names=["a%s", "b,c", "d=e", "f g"]),
    "non-ASCII names": _odd([1, 2, 3], layers=["é", "wire", "😀"], names=["ä", "→", "😀", "z"]),
    "one layer, many segments (heap)": _odd(list(range(-50, 150)), layers=["x"] * 200),
    "300 layers (Python only)": _odd([1] * 300, layers=[f"l{i}" for i in range(300)]),
    "tuple of segments": _odd([1, 2], segments=tuple(_odd([1, 2])["segments"])),
    "segments not dicts": _odd([1, 2], segments=[MappingProxyType(s)
                                                 for s in _odd([1, 2])["segments"]]),
}


@pytest.mark.parametrize("bd", ODD.values(), ids=ODD.keys())
@pytest.mark.parametrize("wall_ns", [0, -1, 2**63 - 1, 2**64, 1.5])
def test_sample_line_c_equals_python_on_odd_input(bd: dict, wall_ns) -> None:
    """Whatever C does not take (non-int numbers, past 64 bits) it hands back to Python:
    the same line either way, names with %, escapes and any script included."""
    line = both_paths(bd, "f1", wall_ns)
    assert line.endswith(f" {wall_ns}")


def test_sample_line_odd_values_by_definition() -> None:
    """A few odd lines spelled out, so the reference itself is checked, not only C == Python."""
    head = "latscope_sample,complete=true,dst_host=c1,flow=f1,src_host=h1 "
    assert both_paths(ODD["no segments"], wall_ns=9) == head + "seq=1i,end_to_end=5i 9"
    assert both_paths(ODD["layer sum past 64 bits"], wall_ns=9) == (
        head + f"seq=1i,end_to_end=5i,p0→p1={I64}i,p1→p2=0i,p2→p3=1i,"
        f"layer_socket={I64 + 1}i,layer_wire=0i 9")
    assert both_paths(ODD["names with % , = space"], wall_ns=9) == (
        head + "seq=1i,end_to_end=5i,a%s→b\\,c=1i,b\\,c→d\\=e=2i,d\\=e→f\\ g=3i,"
        "layer_s%d=4i,layer_w\\,x=2i 9")
    assert both_paths(ODD["non-ASCII names"], wall_ns=9) == (
        head + "seq=1i,end_to_end=5i,ä→→=1i,→→😀=2i,😀→z=3i,layer_é=1i,layer_wire=2i,"
        "layer_😀=3i 9")
    assert both_paths(ODD["int subclass with its own __int__"], wall_ns=9) == (
        head + "seq=1i,end_to_end=5i,p0→p1=42i,p1→p2=1i,layer_socket=42i,layer_wire=1i 9")


def test_sample_line_errors_are_pythons() -> None:
    """A segment without a duration, or not a mapping: the same error from either path."""
    for bad, err in ((_odd([1], segments=[{"from": "a", "to": "b", "layer": "x"}]), KeyError),
                     (_odd([1], seq="x"), ValueError)):
        for native in (True, False):
            with pytest.raises(err):
                sample_line(bad, "f1", 1, native=native)


def c_functions_called(bd: dict) -> set[str]:
    called: set[str] = set()

    def prof(frame, event, arg) -> None:
        if event == "c_call":
            called.add(f"{getattr(arg, '__module__', None)}.{arg.__name__}")

    sys.setprofile(prof)
    try:
        sample_line(bd, "f1", 1)
    finally:
        sys.setprofile(None)
    return called


def test_sample_line_formats_plain_samples_in_c() -> None:
    """A plain breakdown's numbers are formatted in C, not handed back: Python's layer
    sums (builtin sum) never run; an odd one (a float duration) does run them."""
    bd = breakdown(sample_records(PathSpec(["h1", "h2", "c1"]), 1, 10**12), ClockView({}, None),
                   path=["h1", "h2", "c1"])
    plain = c_functions_called(bd)
    assert "latscope.sinks._native.sample_line" in plain and "builtins.sum" not in plain
    bd["segments"][0]["duration_ns"] = 1.0
    assert "builtins.sum" in c_functions_called(bd)
