"""One real demo run (namespaces, eBPF agents, XDP sync, Kafka, Faust, InfluxDB) watched in a
real headless Chromium while its traffic runs; the views' tests read what was seen, then
the report and the Grafana queries run against the run's points in InfluxDB.

Midway (``RESET_AT_S``, after f1's bulk transfer ended, while f2 runs) the test clicks the
page's reset button; after every window closed it asks ``/latscope/flows?since=`` for
bounds it derives from the traffic's start, and for bad bounds. What the traffic's own
processes are (pids) and how much memory they hold (``/proc``) is kept as a truth beside."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cdp import Chromium
from live_views import BAD_SINCE, SINCE_OFFSETS
from needs import missing

from latscope import kafka
from latscope.lab import netns
from latscope.lab.demo import DemoOptions, pipeline, write_run_report
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.sinks.settings import InfluxSettings
from latscope.stream.process import get_json

PREFIX = "lsxi" + os.environ["LSX_RUN_ID"]
TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"
DURATION_S = 15.0
RESET_AT_S = 6.0   # f1 (20 MB at 50 Mbit/s) is done by then; f2 runs to the end

# What the page shows, read from its DOM: rows of the flows table, the bars' segments, the
# partitions line and when the page last refreshed (ms).
SNAPSHOT_JS = """(() => ({
  updated: Number(document.body.dataset.updated || 0),
  status: document.querySelector('#status').textContent,
  rows: [...document.querySelectorAll('#flows tbody tr[data-flow]')].map(tr => ({
    flow: tr.dataset.flow,
    samples: tr.querySelector('.samples').textContent,
    p50: tr.querySelector('.p50').textContent, p99: tr.querySelector('.p99').textContent,
    newest: tr.querySelector('.newest').textContent})),
  bars: Object.fromEntries([...document.querySelectorAll('#bars .flowrow')].map(r =>
    [r.dataset.flow, [...r.querySelectorAll('rect.seg')].map(x => x.dataset.segment)])),
  chart_points: document.querySelectorAll('#chart polyline').length,
  since: document.querySelector('#since').dataset.since || null,
  since_text: document.querySelector('#since').textContent,
  context: [...document.querySelectorAll('#context tbody tr[data-host]')].map(tr => ({
    flow: tr.dataset.flow, host: tr.dataset.host,
    ...Object.fromEntries(['interval', 'app-tx', 'app-rx', 'dev-tx', 'dev-rx', 'retrans', 'rtt',
      'cwnd', 'proc', 'cpu', 'rss'].map(c => [c, tr.querySelector('.' + c).innerText]))})),
}))()"""
# window closes so far: a reset between two equal readings had no window close beside it
CLOSED = ("window_closed", "windows_evicted")


@dataclass
class Seen:
    """A snapshot of the page and the worker's JSON read right after it."""

    page: dict
    flows_json: dict
    summary_json: dict
    at: float


@dataclass
class ResetSeen:
    """The reset button clicked: the worker's flows just before (no window closed between
    that reading and the click's answer), the wall clock around the click, and the page."""

    before: dict
    clicked: tuple[float, float]
    since: float            # the page's data-since after the click
    since_text: str
    page_after: dict        # the page's first refresh after the click


@dataclass
class LiveRun:
    opts: DemoOptions
    topology: Any
    base_url: str
    began: datetime              # before the pipeline started
    traffic_started: float       # wall clock, s
    traffic_done: float
    ended: datetime              # after the worker stopped (InfluxDB has every point)
    during: list[Seen] = field(default_factory=list)   # while the traffic ran
    final: Seen | None = None                            # after every window closed
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    summary: dict = field(default_factory=dict)
    demo_report: str | None = None
    demo_report_missing: dict = field(default_factory=dict)
    artifacts: Path | None = None
    pids: dict[str, dict[str, int]] = field(default_factory=dict)   # flow -> side -> pid
    rss: dict[int, list[int]] = field(default_factory=dict)   # pid -> VmRSS bytes, read here
    reset: ResetSeen | None = None
    since_views: dict[str, dict] = field(default_factory=dict)   # ?since= value -> flows JSON
    bad_since: dict[str, tuple[int, dict]] = field(default_factory=dict)   # -> status, JSON


def _seen(browser: Chromium, port: int) -> Seen:
    page = browser.js(SNAPSHOT_JS)
    return Seen(page, get_json(port, "/latscope/flows"), get_json(port, "/latscope/summary"),
                time.time())


def _wait_refresh(browser: Chromium, after_ms: float, timeout: float = 15) -> None:
    browser.wait_js(f"Number(document.body.dataset.updated || 0) > {after_ms}", timeout,
                    "refresh")


def http_get(port: int, path: str) -> tuple[int, dict]:
    """Status and JSON body, errors included (urllib raises on them)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _closed(port: int) -> int:
    c = get_json(port, "/latscope/summary")["counters"]
    return sum(c[k] for k in CLOSED)


def _reset(browser: Chromium, port: int) -> ResetSeen:
    """Click the page's reset button with the worker's flows read just before. Windows of
    one start close together, once a second: right after a close, the reading, the click
    and its answer fit between two closes, so the reading holds exactly the windows the
    reset dropped (checked: the close counter is the same before and after)."""
    first = _closed(port)
    deadline = time.monotonic() + 10
    while (closed := _closed(port)) == first and time.monotonic() < deadline:
        time.sleep(0.05)
    before = get_json(port, "/latscope/flows")
    shown = browser.js("document.querySelector('#since').dataset.since || ''")
    t0 = time.time()
    browser.click("#reset")
    since = browser.wait_js(
        "(() => { const s = document.querySelector('#since').dataset.since; "
        f"return s && s !== {json.dumps(shown)} && s; }})()", 10, "the new totals' time")
    t1 = time.time()
    assert _closed(port) == closed, "a window closed beside the reset: the reading is not exact"
    _wait_refresh(browser, t1 * 1000)
    page = browser.js(SNAPSHOT_JS)
    return ResetSeen(before, (t0, t1), float(since), page["since_text"], page)


def _read_rss(run: LiveRun) -> None:
    for sides in run.pids.values():
        for pid in sides.values():
            with contextlib.suppress(OSError):   # gone, or a zombie (no VmRSS)
                status = Path(f"/proc/{pid}/status").read_text()
                kb = next((int(ln.split()[1]) for ln in status.splitlines()
                           if ln.startswith("VmRSS:")), None)
                if kb is not None:
                    run.rss.setdefault(pid, []).append(kb * 1024)


# ?since= values asked at the end, as offsets from the traffic's start (s) or as text


def _since_views(run: LiveRun, port: int) -> None:
    base = math.floor(run.traffic_started)
    values = [str(base + off) for off in SINCE_OFFSETS] + ["10m"]
    for v in values:
        status, doc = http_get(port, f"/latscope/flows?since={urllib.parse.quote(v)}")
        assert status == 200, (v, status, doc)
        run.since_views[v] = doc
    for v in BAD_SINCE:
        v = str(int(time.time()) + 3600) if v == "FUTURE" else v
        run.bad_since[v] = http_get(port, f"/latscope/flows?since={urllib.parse.quote(v)}")


@pytest.fixture(scope="session")
def influx(stack) -> InfluxSettings:
    return InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                          stack.influx_token)


@pytest.fixture(scope="session")
def live_run(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    if shutil.which("chromium") is None:
        missing("chromium (Debian package; make setup installs it)")
    from latscope.lab import traffic

    tag = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
    # Kept after the run (pytest's own temp dirs rotate, other suites' runs included).
    artifacts = Path(tempfile.gettempdir()) / "latscope-artifacts" / f"views-{tag}"
    artifacts.mkdir(parents=True)
    opts = DemoOptions(topology=TOPOLOGY, duration_s=DURATION_S, prefix=PREFIX,
                       topic_prefix=tag, web_port=free_port(), start_stack=False, run_id=tag,
                       report_dir=artifacts / "demo-report")
    began = datetime.now().astimezone()
    run: LiveRun | None = None
    try:
        with pipeline(opts) as p, Chromium(tmp_path_factory.mktemp("chromium")) as browser:
            base = f"http://127.0.0.1:{opts.web_port}"
            browser.goto(f"{base}/latscope/")
            browser.wait_js("document.body.dataset.updated", 30, "first refresh")
            t0 = time.time()
            runs = traffic.start_flows(p.net, duration_s=DURATION_S)
            run = LiveRun(opts, p.topology, base, began, t0, 0.0, began, artifacts=artifacts)
            run.pids = {r.flow.name: {"sender": r.sender.pid, "receiver": r.receiver.pid}
                        for r in runs if r.sender is not None}
            # Snapshots while the traffic runs, each after a refresh of the page; the reset
            # once f1 is done.
            while time.time() - t0 < DURATION_S - 1:
                _wait_refresh(browser, browser.js("Number(document.body.dataset.updated)"))
                run.during.append(_seen(browser, opts.web_port))
                _read_rss(run)
                if run.reset is None and time.time() - t0 > RESET_AT_S:
                    run.reset = _reset(browser, opts.web_port)
                    continue
                time.sleep(1.5)
            results = [r.wait(DURATION_S + 30) for r in runs]
            run.traffic_done = time.time()
            run.summary = p.finish(run.traffic_done - t0, results)
            # Every window closed: a refresh started after this shows the final figures.
            _wait_refresh(browser, time.time() * 1000)
            _wait_refresh(browser, browser.js("Number(document.body.dataset.updated)"))
            run.final = _seen(browser, opts.web_port)
            _since_views(run, opts.web_port)
            browser.js("window.scrollTo(0, 0)")
            run.screenshot = browser.screenshot(artifacts / "live-page.png")
            run.requests = list(browser.requests)
            run.console = list(browser.console)
        run.ended = datetime.now().astimezone()
        run.demo_report = write_run_report(opts, began, [f.name for f in run.topology.flows],
                                           run.demo_report_missing)
        print(f"\nviews artifacts (screenshot, reports): {artifacts}")
        yield run
    finally:
        with contextlib.suppress(Exception):
            kafka.delete_topics_with_prefix(stack.kafka_bootstrap, f"{tag}.")
        left = netns.teardown(PREFIX)
        assert not netns.list_namespaces(PREFIX), left
