"""``latscope report`` and the Grafana dashboard's queries on the demo run of
tests/views/conftest.py, read back from the real InfluxDB."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from latscope.paths import REPO_ROOT
from latscope.schemas.points import LAYERS
from latscope.sinks.influx import window_line
from latscope.sinks.influx_writer import InfluxSink
from latscope.sinks.report import make_report
from latscope.sinks.report_data import query
from latscope.sinks.settings import InfluxSettings
from latscope.sinks.timerange import TimeRange
from latscope.stats.sketch import Sketch

pytestmark = [pytest.mark.root, pytest.mark.stack]
PNG = b"\x89PNG\r\n\x1a\n"
WINDOW_S = 1.0   # the demo's statistics window: a window's time is its start


def _whole_run(live_run) -> TimeRange:
    return TimeRange(live_run.began, live_run.ended)


def _check_files(rep) -> None:
    assert rep.files
    for f in rep.files:
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 10_000, f
    links = set(re.findall(r'href="([^"#]+)"', rep.index.read_text()))
    assert links == {f.relative_to(rep.out).as_posix() for f in rep.files}


def _axes_within(rep, lo: float, hi: float) -> None:
    assert rep.time_axes
    for name, spans in rep.time_axes.items():
        for a, b in spans:
            assert lo <= a < b <= hi, (name, a - lo, hi - b)


def _decoy(influx: InfluxSettings, live_run) -> None:
    """Another run's flow with points inside this run's time: a report of this run must not
    show it."""
    sk = Sketch()
    sk.add_all([5000.0] * 10)
    tags = {"src_host": "h1", "dst_host": "c1", "flow": "decoy", "segment": "h1:a→h1:b",
            "layer": "ip", "device": ""}
    sink = InfluxSink(InfluxSettings(influx.url, influx.org, influx.bucket, influx.token,
                                     tags={"run": live_run.opts.run_id + "-other"}))
    sink.write([window_line(tags, sk, int((live_run.traffic_started + 2) * 1e9), sink.settings.tags, 0)])
    sink.close()


@pytest.fixture(scope="module")
def run_report(live_run, influx, tmp_path_factory):
    """The report of the run, with another run's flow written into its time first."""
    _decoy(influx, live_run)
    return make_report(influx, tmp_path_factory.mktemp("report"), _whole_run(live_run),
                       run=live_run.opts.run_id)


def test_report_of_the_run(live_run, influx, run_report, tmp_path) -> None:
    """Exactly the run's flows (not another run's, in the same time); every time axis within
    the traffic (a window's time is its start, so up to one window before the first sample);
    PNGs non-empty, all linked."""
    assert make_report(influx, tmp_path / "all", _whole_run(live_run), flows=["decoy"]).flows == ["decoy"]
    rep = run_report
    assert rep.flows == sorted(f.name for f in live_run.topology.flows)
    _check_files(rep)
    assert {p.parent.name for p in rep.files} == set(rep.flows)
    assert {p.name for p in rep.files if p.parent.name == "f2"} == {
        "breakdown.png", "e2e_vs_wire.png", "layers_per_sample.png", "layer_cdf.png",
        "p99_over_time.png", "throughput.png", "socket_process.png"}
    _axes_within(rep, live_run.traffic_started - WINDOW_S - 0.5, live_run.traffic_done + 2.0)


def _integral(points: list[tuple[float, float | None, float]], unit: float) -> float:
    """What a rate series plotted per interval adds up to over the run, in bytes: each
    interval's value (``unit`` bit/s) times its length as drawn (a last interval ends when
    the agent stops: 0.5 s of 2 Mbit/s drawn over a whole second would add 3 %)."""
    return sum(v * d for _, v, d in points if v) * unit / 8


def test_report_flow_context(live_run, run_report) -> None:
    """throughput.png's series add up to the bytes each flow's sender wrote and its receiver
    read (the traffic tool's own counts), and so do the index's byte counts (1 %); the
    device series to those plus headers (IP and TCP: ~4 % at these segment sizes), less up
    to ~2 % (flow-context.md: a bulk flow through the tbf counted fewer): -3 % to +8 %.
    socket_process.png names each traffic process's pid and draws the RSS /proc gave for it.
    The index has the per-host and per-socket numbers beside the figures."""
    rep = run_report
    sent = {r["flow"]: (r["sender"]["bytes"], r["receiver"]["bytes"])
            for r in live_run.summary["traffic"]}
    for flow in live_run.topology.flows:
        data = rep.figure_data[str(rep.out / flow.name / "throughput.png")]
        wrote, read = sent[flow.name]
        assert wrote > 1_000_000, sent
        app_tx = _integral(data[f"application, Mbit/s: {flow.src} sent"], 1e6)
        app_rx = _integral(data[f"application, Mbit/s: {flow.dst} read"], 1e6)
        assert app_tx == pytest.approx(wrote, rel=0.01), (flow.name, app_tx, wrote)
        assert app_rx == pytest.approx(read, rel=0.01), (flow.name, app_rx, read)
        dev_tx = _integral(data[f"devices (IP bytes), Mbit/s: {flow.src} tx"], 1e6)
        dev_rx = _integral(data[f"devices (IP bytes), Mbit/s: {flow.dst} rx"], 1e6)
        for dev in (dev_tx, dev_rx):
            assert 0.97 * wrote <= dev <= 1.08 * wrote, (flow.name, dev, wrote)
        sock = rep.figure_data[str(rep.out / flow.name / "socket_process.png")]
        pids = live_run.pids[flow.name]
        (rss,) = [v for k, v in sock.items() if k.startswith(f"process RSS, MiB: {flow.src} "
                                                             "sender:")
                  and k.endswith(f"[{pids['sender']}]")]
        if pids["sender"] in live_run.rss:   # read while it ran (f1 may end before a look)
            truth = statistics.median(live_run.rss[pids["sender"]]) / 2**20
            assert statistics.median(v for _, v, _ in rss if v) == pytest.approx(truth, rel=0.15)
        assert any(k.startswith(f"smoothed RTT, ms: {flow.dst} receiver:")
                   and k.endswith(f"[{pids['receiver']}]") for k in sock), list(sock)
        # the index: the sender's bytes written and the receiver's read, beside the figures
        section = rep.index.read_text().split(f'<h2 id="{flow.name}">')[1].split("<h2")[0]
        assert "<h3>flow context</h3>" in section
        row = r"<tr><td>{}</td><td class=n>([0-9,]+)</td><td class=n>([0-9,]+)</td>"
        src = re.search(row.format(flow.src), section)
        dst = re.search(row.format(flow.dst), section)
        assert src and dst, section
        assert int(src[1].replace(",", "")) == pytest.approx(wrote, rel=0.01), src[1]
        assert int(dst[2].replace(",", "")) == pytest.approx(read, rel=0.01), dst[2]


def test_flow_and_range_select(live_run, influx, tmp_path) -> None:
    """--flow picks one flow; --from/--to (absolute and relative, through the CLI) keep every
    axis inside the range asked for."""
    rep = make_report(influx, tmp_path / "f", _whole_run(live_run), run=live_run.opts.run_id,
                      flows=["f2"])
    assert rep.flows == ["f2"] and {p.parent.name for p in rep.files} == {"f2"}
    _check_files(rep)

    start = datetime.fromtimestamp(live_run.traffic_started + 6).astimezone()
    stop = datetime.fromtimestamp(live_run.traffic_started + 11).astimezone()
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "latscope", "report", "--run", live_run.opts.run_id, "--flow",
         "f2", "--from", start.isoformat(), "--to", stop.strftime("%H:%M:%S.%f"),
         "--out", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["flows"] == ["f2"]
    spans = [s for v in doc["time_axes"].values() for s in v]
    assert spans and all(start.timestamp() - 0.5 <= a < b <= stop.timestamp() + 0.5
                         for a, b in spans), (spans, start.timestamp(), stop.timestamp())
    whole = make_report(influx, tmp_path / "w", _whole_run(live_run), run=live_run.opts.run_id,
                        flows=["f2"]).time_axes
    assert min(a for v in whole.values() for a, _ in v) < start.timestamp() - 2

    ago = (datetime.now().astimezone() - live_run.began).total_seconds() + 5
    proc = subprocess.run(
        [sys.executable, "-m", "latscope", "report", "--run", live_run.opts.run_id,
         f"--from=-{int(ago)}s", "--to", "now", "--out", str(tmp_path / "rel"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["flows"] == sorted(f.name for f in live_run.topology.flows)
    proc = subprocess.run(   # the same without the minus: that long ago
        [sys.executable, "-m", "latscope", "report", "--run", live_run.opts.run_id,
         "--from", f"{int(ago)}s", "--out", str(tmp_path / "rel2"), "--json"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["flows"] == sorted(f.name for f in live_run.topology.flows)


def test_demo_writes_its_own_report(live_run) -> None:
    """What `make demo` ends with (lab.demo.write_run_report): this run's report."""
    assert live_run.demo_report, live_run.demo_report_missing
    index = Path(live_run.demo_report)
    text = index.read_text()
    assert live_run.opts.run_id in text
    for f in live_run.topology.flows:
        assert f'id="{f.name}"' in text and (index.parent / f.name / "breakdown.png").is_file()


def test_grafana_panels_return_rows(live_run, influx) -> None:
    """Each panel of compose/'s dashboard, its template variables set to this run, returns
    rows from the real InfluxDB."""
    dash = json.loads((REPO_ROOT / "compose/grafana/latscope-dashboard.json").read_text())
    flows = json.dumps(sorted(f.name for f in live_run.topology.flows))
    subst = {"${bucket}": influx.bucket, "${run}": live_run.opts.run_id,
             "${flow:json}": flows, "${layer:json}": json.dumps(list(LAYERS)),
             "v.timeRangeStart": (live_run.began - timedelta(seconds=1)).isoformat(),
             "v.timeRangeStop": live_run.ended.isoformat(), "v.windowPeriod": "1s"}
    empty = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            flux = target["query"]
            for k, v in subst.items():
                flux = flux.replace(k, v)
            assert "${" not in flux and "v.time" not in flux, flux
            if not query(influx, flux):
                empty.append(panel["title"])
    assert not empty, f"panels without rows for run {live_run.opts.run_id}: {empty}"
