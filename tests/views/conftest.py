"""One real demo run (namespaces, eBPF agents, XDP sync, Kafka, Faust, InfluxDB) watched in a
real headless Chromium while its traffic runs; the views' tests read what was seen, then
the report and the Grafana queries run against the run's points in InfluxDB."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cdp import Chromium
from needs import missing

from latscope import kafka
from latscope.lab import netns
from latscope.lab.demo import DemoOptions, pipeline, write_run_report
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.stream.process import get_json

PREFIX = "lsxi" + os.environ["LSX_RUN_ID"]
TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"
DURATION_S = 15.0

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
}))()"""


@dataclass
class Seen:
    """A snapshot of the page and the worker's JSON read right after it."""

    page: dict
    flows_json: dict
    summary_json: dict
    at: float


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


def _seen(browser: Chromium, port: int) -> Seen:
    page = browser.js(SNAPSHOT_JS)
    return Seen(page, get_json(port, "/latscope/flows"), get_json(port, "/latscope/summary"),
                time.time())


def _wait_refresh(browser: Chromium, after_ms: float, timeout: float = 15) -> None:
    browser.wait_js(f"Number(document.body.dataset.updated || 0) > {after_ms}", timeout,
                    "refresh")


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
            # Snapshots while the traffic runs, each after a refresh of the page.
            while time.time() - t0 < DURATION_S - 1:
                _wait_refresh(browser, browser.js("Number(document.body.dataset.updated)"))
                run.during.append(_seen(browser, opts.web_port))
                time.sleep(1.5)
            results = [r.wait(DURATION_S + 30) for r in runs]
            run.traffic_done = time.time()
            run.summary = p.finish(run.traffic_done - t0, results)
            # Every window closed: a refresh started after this shows the final figures.
            _wait_refresh(browser, time.time() * 1000)
            _wait_refresh(browser, browser.js("Number(document.body.dataset.updated)"))
            run.final = _seen(browser, opts.web_port)
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
