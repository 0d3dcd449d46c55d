"""Line protocol against the real InfluxDB: names holding what the protocol reserves are
written and read back exactly, the C and Python sample lines agree on them, and a batch
with a line InfluxDB refuses still writes every other line."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from latscope.sinks.influx import sample_line, unescape_name, window_line
from latscope.sinks.influx_writer import InfluxSink, delete_run
from latscope.sinks.report_data import query
from latscope.sinks.settings import InfluxSettings
from latscope.stats.sketch import Sketch

pytestmark = pytest.mark.stack

# name written -> as InfluxDB stores it (derived by hand from the line protocol rules:
# InfluxDB takes off the backslash before , = and space, and nothing else)
NAMES = {
    "h1\n\\x": "h1\\n\\\\x",              # newline, backslash
    "tail\\": "tail\\x5c",                # a last backslash would escape the separator
    "a,b c=d": "a,b c=d",                 # separators: escaped, stored as they are
    "cr\r\\\\,": "cr\\r\\\\\\\\,",        # carriage return, two backslashes, then a comma
    'q"uote\\n': 'q"uote\\\\n',           # a quote; backslash-n written, not a newline
}


@pytest.fixture
def influx(stack) -> Iterator[InfluxSettings]:
    run = f"lsxf{os.environ['LSX_RUN_ID']}-{uuid.uuid4().hex[:8]}"
    s = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                       stack.influx_token, tags={"run": run}, flush_interval_ms=100)
    yield s
    delete_run(s, run)


def _bd(src: str, dst: str, seg_from: str) -> dict:
    return {"src_host": src, "dst_host": dst, "complete": True, "seq": 7,
            "end_to_end_ns": 3000,
            "segments": [{"from": seg_from, "to": f"{dst}:sock_recv", "layer": "wire",
                          "duration_ns": 1000},
                         {"from": f"{dst}:sock_recv", "to": f"{dst}:x", "layer": "socket",
                          "duration_ns": 2000}]}


def test_reserved_characters_in_names_round_trip(influx) -> None:
    now = time.time_ns() - 10**9
    sink = InfluxSink(influx)
    samples, windows = [], []
    for i, name in enumerate(NAMES):
        bd = _bd(name, "h2", f"{name}:sock_send")
        samples.append((0, bd, name, now + i))
        sk = Sketch()
        sk.add_all([1000, 2000])
        windows.append(({"src_host": name, "dst_host": "h2", "flow": name,
                         "segment": f"{name}→h2", "layer": "wire", "device": name}, sk,
                        now + i, 0))
    sink.write_samples(samples)
    sink.write_windows(windows)
    sink.close()
    assert (sink.counters.lines_written, sink.counters.lines_failed) == (2 * len(NAMES), 0)

    rows = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => r.run == "{influx.tags['run']}" and
                           (r._field == "seq" or r._field == "count"))''')
    stored = {(r["_measurement"], r["src_host"]): r for r in rows}
    assert len(stored) == 2 * len(NAMES)
    for name, want in NAMES.items():
        for m in ("latscope_sample", "latscope_segment"):
            r = stored[(m, want)]
            assert r["flow"] == want and unescape_name(r["flow"]) == name
        seg = stored[("latscope_segment", want)]
        assert seg["device"] == want and unescape_name(seg["segment"]) == f"{name}→h2"
    fields = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => r.run == "{influx.tags['run']}" and
                           r._measurement == "latscope_sample")''')
    got = {unescape_name(r["_field"]) for r in fields}
    assert {f"{n}:sock_send→h2:sock_recv" for n in NAMES} <= got


def test_c_and_python_sample_lines_agree_on_reserved_names() -> None:
    for name in NAMES:
        bd = _bd(name, name, f"{name}:dev_xmit")
        c = sample_line(bd, name, 5, {"run": name})
        py = sample_line(bd, name, 5, {"run": name}, native=False)
        assert c == py
        assert "\n" not in c and "\r" not in c


def test_a_batch_with_one_refused_line_writes_all_the_others(influx) -> None:
    run, now = influx.tags["run"], time.time_ns() - 10**9
    good = [f"latscope_stream,run={run},worker=w{i} n={i}i {now + i}" for i in range(99)]
    bad = f"latscope_stream,run={run},worker=bad n=1i,n=\"text {now}"   # unterminated string
    sink = InfluxSink(influx)
    sink.write([*good[:40], bad, *good[40:]])
    sink.write([window_line({"src_host": "a", "dst_host": "b", "flow": "f", "segment": "s",
                             "layer": "wire", "device": ""}, _sketch(), now, influx.tags)])
    sink.close()
    c = sink.counters
    assert (c.lines_written, c.lines_failed, c.lines_refused, c.windows_failed) == (100, 1, 1, 0)
    rows = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => r.run == "{run}" and (r._field == "n" or r._field == "count"))''')
    assert sorted(r["worker"] for r in rows if r["_field"] == "n") == sorted(
        f"w{i}" for i in range(99))
    assert len([r for r in rows if r["_field"] == "count"]) == 1


def _sketch() -> Sketch:
    sk = Sketch()
    sk.add_all([5, 6, 7])
    return sk


def test_socket_wait_shares_per_socket_segment(influx) -> None:
    """A sample whose socket segments carry causes (Segment.wait) writes one
    latscope_socket_wait point per such segment: each cause's µs and share of the segment,
    the unknown rest; segments without causes write none."""
    now = time.time_ns() - 10**9
    causes = ("nagle", "cwnd", "rwnd", "sndbuf", "pacing", "other", "unread", "ooo")
    snd = dict(zip((c + "_us" for c in causes), (600, 200, 0, 0, 0, 100, 0, 0), strict=True))
    bd = _bd("h1", "h2", "h1:sock_send")
    bd["segments"] = [
        {"from": "h1:sock_send", "to": "h1:tcp_tx", "layer": "socket", "duration_ns": 1_000_000,
         "wait": snd},
        {"from": "h1:tcp_tx", "to": "h2:tcp_rx", "layer": "wire", "duration_ns": 5000,
         "wait": None}]
    sink = InfluxSink(influx)
    sink.write_samples([(0, bd, "f1", now)])
    sink.close()
    assert (sink.counters.lines_written, sink.counters.lines_failed) == (2, 0)
    rows = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -1h)
      |> filter(fn: (r) => r.run == "{influx.tags['run']}" and
                           r._measurement == "latscope_socket_wait")''')
    got = {r["_field"]: r["_value"] for r in rows}
    assert {r["segment"] for r in rows} == {"h1:sock_send→h1:tcp_tx"}
    assert {r["host"] for r in rows} == {"h1"}
    assert got["duration"] == 1_000_000 and got["nagle_us"] == 600
    assert got["nagle"] == pytest.approx(0.6) and got["cwnd"] == pytest.approx(0.2)
    assert got["other"] == pytest.approx(0.1) and got["unknown"] == pytest.approx(0.1)
