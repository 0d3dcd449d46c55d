"""The flows' totals (reset button, ``?since=``) and the flow context on the live page, on the
demo run of tests/views/conftest.py. The truths are the windows as the worker's sink wrote
them to InfluxDB, the traffic's own processes (pids, /proc) and its configured rate."""

from __future__ import annotations

import math
import re
import statistics
import time

import pytest
from live_views import BAD_SINCE, SINCE_OFFSETS, window_counts

pytestmark = [pytest.mark.root, pytest.mark.stack]


@pytest.fixture(scope="module")
def windows(live_run, influx) -> dict[tuple[str, str], list]:
    return window_counts(influx, live_run.opts.run_id)


def _e2e(doc: dict, flow: str) -> int:
    """A flow's end-to-end total count in a /latscope/flows answer (0: none)."""
    f = next((f for f in doc["flows"] if f["flow"] == flow), None)
    return ((f or {}).get("end_to_end", {}).get("total") or {}).get("count", 0)


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def test_reset_button_restarts_the_totals(live_run, windows) -> None:
    """The click POSTs the reset: the page shows the new since time (the worker's answer,
    between the click and its answer), its counts drop, and once every window closed each
    flow's total is exactly the windows the sink wrote less those in the worker's totals
    just before the click."""
    r = live_run.reset
    assert r is not None
    assert r.clicked[0] - 0.5 <= r.since <= r.clicked[1] + 0.5, (r.since, r.clicked)
    assert f"totals since {_hms(r.since)}" in r.since_text, r.since_text
    assert float(live_run.final.page["since"]) == pytest.approx(r.since, abs=1e-3)
    assert f"totals since {_hms(r.since)}" in live_run.final.page["since_text"]
    after = {row["flow"]: row["samples"] for row in r.page_after["rows"]}
    before_f2 = _e2e(r.before, "f2")
    assert before_f2 > 0
    assert after.get("f2", "–") == "–" or int(after["f2"]) < before_f2, (after, before_f2)
    rows = {row["flow"]: row["samples"] for row in live_run.final.page["rows"]}
    for flow in (f.name for f in live_run.topology.flows):
        written = sum(n for _, n in windows[(flow, "end_to_end")])
        expected = written - _e2e(r.before, flow)
        assert _e2e(live_run.final.flows_json, flow) == expected, (flow, written)
        assert rows[flow] == (str(expected) if expected else "–"), (flow, rows, expected)
    assert int(rows["f2"]) > 0   # f2 ran on after the reset


def test_since_filters_the_totals(live_run, windows) -> None:
    """?since=T: every series' total counts exactly the windows starting at or after T that
    the sink wrote; T a window's start is in, a bound between two starts takes the later;
    10m (before the run) takes every window, every flow has some."""
    base = math.floor(live_run.traffic_started)
    cases = {str(base + off): base + off for off in SINCE_OFFSETS}
    cases["10m"] = live_run.began.timestamp() - 1
    for text, since in cases.items():
        doc = live_run.since_views[text]
        assert doc["since"]["complete"], doc["since"]
        got: dict[tuple[str, str], int] = {}
        for f in doc["flows"]:
            got[(f["flow"], "end_to_end")] = (f["end_to_end"].get("total") or {}).get("count", 0)
            for s in f["segments"]:
                got[(f["flow"], s["segment"])] = (s.get("total") or {}).get("count", 0)
        want = {k: sum(n for t, n in rows if t >= since) for k, rows in windows.items()}
        assert {k: v for k, v in got.items() if v} == {k: v for k, v in want.items() if v}, text
        if text != "10m":
            assert doc["totals_since"] == pytest.approx(since, abs=1e-3)
    every = live_run.since_views["10m"]
    assert all(_e2e(every, f.name) > 0 for f in live_run.topology.flows)
    # the bound between two starts leaves out the window it falls in
    half = str(base + SINCE_OFFSETS[1])
    assert _e2e(live_run.since_views[half], "f2") < _e2e(every, "f2")


def test_bad_since_is_a_400(live_run) -> None:
    """Each bad value: HTTP 400, the message naming the parameter and what it expected."""
    assert len(live_run.bad_since) == len(BAD_SINCE)
    for value, (status, doc) in live_run.bad_since.items():
        assert status == 400, (value, status, doc)
        msg = doc["error"]
        assert msg.startswith(f"since={value!r}"), msg
        assert "expected unix seconds" in msg and "10m" in msg, msg
    future = next(v for v in live_run.bad_since if v.isdigit() and int(v) > time.time())
    assert "in the future" in live_run.bad_since[future][1]["error"]


def _bps(text: str) -> float:
    if text == "0":
        return 0.0
    num, unit = text.split()
    return float(num) * {"bit/s": 1, "kbit/s": 1e3, "Mbit/s": 1e6, "Gbit/s": 1e9}[unit]


def test_context_on_the_page(live_run) -> None:
    """While f2 ran, its rows on the page: the sender's host sends at the flow's configured
    rate and the receiver's reads it, each naming the traffic process's own pid and side,
    with the resident memory /proc gave for that pid."""
    f2 = live_run.topology.flow("f2")
    pids = live_run.pids["f2"]
    rows = [c for s in live_run.during[1:] for c in s.page["context"] if c["flow"] == "f2"]
    tx = [_bps(c["app-tx"]) for c in rows if c["host"] == f2.src]
    rx = [_bps(c["app-rx"]) for c in rows if c["host"] == f2.dst]
    assert len(tx) >= 4 and len(rx) >= 4, rows
    assert statistics.median(tx) == pytest.approx(f2.rate_bps, rel=0.02), tx
    assert statistics.median(rx) == pytest.approx(f2.rate_bps, rel=0.05), rx
    sender = [c for c in rows if c["host"] == f2.src][-1]
    receiver = [c for c in rows if c["host"] == f2.dst][-1]
    assert f"[{pids['sender']}] sender" in sender["proc"], sender
    assert f"[{pids['receiver']}] receiver" in receiver["proc"], receiver
    truth = statistics.median(live_run.rss[pids["sender"]]) / 2**20
    assert float(sender["rss"]) == pytest.approx(truth, rel=0.15), (sender, truth)
    for c in (sender, receiver):
        assert re.fullmatch(r"[0-9.]+", c["rtt"]) and re.fullmatch(r"[0-9.]+", c["cpu"]), c
    assert {c["host"] for c in rows} >= set(live_run.topology.path_hosts(f2)), rows
