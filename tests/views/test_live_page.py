"""The live page in a real headless Chromium while a demo topology runs (tests/views/conftest.py):
what it shows against the worker's own JSON and the topology, that it refreshes by itself,
and that it loads nothing from anywhere but the worker."""

from __future__ import annotations

from itertools import groupby, pairwise

import pytest

pytestmark = [pytest.mark.root, pytest.mark.stack]


def _close(text: str, value: float | None) -> bool:
    """The page shows µs to 0.1, thousands set apart by a thin space."""
    if value is None:
        return text == "–"
    return abs(float(text.replace("\u2009", "")) - value) <= 0.05 + 1e-9


def test_flows_table_matches_the_worker(live_run) -> None:
    """After every window closed: one row per topology flow, and each row's samples, p50 and
    p99 are /latscope/flows' end-to-end totals ("–" for a flow with no window closed since
    the reset midway: f1 ended before it)."""
    final = live_run.final
    rows = {r["flow"]: r for r in final.page["rows"]}
    assert sorted(rows) == sorted(f.name for f in live_run.topology.flows)
    by_name = {f["flow"]: f for f in final.flows_json["flows"]}
    for name, row in rows.items():
        total = by_name[name]["end_to_end"].get("total") or {
            "count": None, "p50_us": None, "p99_us": None}
        assert row["samples"] == ("–" if total["count"] is None else str(total["count"])), (
            name, row, total)
        assert _close(row["p50"], total["p50_us"]), (name, row, total)
        assert _close(row["p99"], total["p99_us"]), (name, row, total)
    assert rows["f2"]["samples"] != "–"


def test_bars_have_one_segment_per_path_step(live_run) -> None:
    """Each flow's bar is a chain of segments from the sender's sock_send to the receiver's
    sock_recv, each starting where the one before ended, crossing the hosts the topology's
    routes say, every step once."""
    bars = live_run.final.page["bars"]
    known = {f["flow"]: {s["segment"] for s in f["segments"]}
             for f in live_run.final.flows_json["flows"]}
    for flow in live_run.topology.flows:
        segs = bars[flow.name]
        points = [segs[0].split("→")[0]] + [s.split("→")[1] for s in segs]
        assert all(a.split("→")[1] == b.split("→")[0] for a, b in pairwise(segs)), segs
        assert points[0] == f"{flow.src}:sock_send" and points[-1] == f"{flow.dst}:sock_recv", segs
        assert len(set(points)) == len(points), f"a point twice on {flow.name}: {points}"
        hosts = [h for h, _ in groupby(p.split(":")[0] for p in points)]
        assert hosts == live_run.topology.path_hosts(flow), (flow.name, hosts)
        assert set(segs) <= known[flow.name]


def test_page_updates_as_windows_close(live_run) -> None:
    """While the traffic ran, the page refreshed by itself: as the worker closed windows, the
    newest window and the sample counts it shows moved on."""
    during = live_run.during
    assert len(during) >= 4
    first, last = during[0], during[-1]
    closed = (first.summary_json["counters"]["window_closed"],
              last.summary_json["counters"]["window_closed"])
    assert closed[1] > closed[0]
    assert last.page["updated"] > first.page["updated"]
    newest = {s.page["rows"][i]["newest"] for s in during for i in range(len(s.page["rows"]))
              if s.page["rows"][i]["flow"] == "f2"}
    assert len(newest) >= 3, newest   # f2 runs throughout: a new newest window each look
    # The totals restart at the reset midway (test_totals_and_context): counts only grow
    # before it, and again after it, where f2's grow on.
    reset = live_run.reset.clicked[0]
    for part in ([s for s in during if s.at < reset], [s for s in during if s.at > reset]):
        samples = [int(r["samples"]) for s in part for r in s.page["rows"]
                   if r["flow"] == "f2" and r["samples"] != "–"]
        assert samples == sorted(samples), samples
    assert len(samples) >= 2 and samples[-1] > samples[0], samples


def test_nothing_loaded_from_elsewhere(live_run) -> None:
    """Every request the page made went to the worker that served it (no CDN, no font
    service); the page's partitions line is the worker's."""
    assert live_run.requests, "no request seen"
    outside = [u for u in live_run.requests if not u.startswith(live_run.base_url + "/")]
    assert not outside, outside
    assert {"/latscope/", "/latscope/page.js", "/latscope/page.css"} <= {
        u.removeprefix(live_run.base_url) for u in live_run.requests}
    parts = live_run.final.summary_json["partitions"]
    assert parts and f"shows partitions {', '.join(map(str, parts))}" in live_run.final.page["status"]
    assert not [c for c in live_run.console if c.startswith("exception")], live_run.console


def test_screenshot_saved(live_run) -> None:
    shot = live_run.screenshot
    assert shot is not None and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
