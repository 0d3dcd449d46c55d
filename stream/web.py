"""LatScope's pages on the Faust web server (next to Faust's own ``/table/<name>/``).

``/latscope/``          the live page (stream/page/: HTML, CSS, JS, all served from here,
                        nothing from elsewhere, so it works offline)
``/latscope/summary``   counters, clock models, sink health, open windows, flow paths
                        learned from the records
``/latscope/flows``     per flow: every segment's statistics for the open windows, the
                        newest closed window and all closed windows since ``totals_since``
                        (the worker's start or the last POST to ``/latscope/flows/reset``),
                        this worker's partitions only (a flow lives on one partition); its
                        segments' path positions and its main path; its context per host
                        (throughput, resends, TCP state, process: the newest FlowStats,
                        and the one of the newest closed window)
                        ``?since=T`` (unix seconds, or a duration ago: ``10m``): each
                        ``total`` merges only the closed windows starting at or after T,
                        whatever the last reset (all but the newest 20 windows of a series kept
                        merged per minute: a T that splits merged windows moves past them,
                        ``totals_since``); ``since`` says whether the worker's memory of
                        closed windows (stream/closed_windows.py) held all of them
``/latscope/history``   ``?flow=NAME``: per segment, the closed windows' count, p50 and p99
Durations are µs, like the demo summary. A bad parameter is an HTTP 400 whose JSON ``error``
names it and what was expected.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faust.web import View

from latscope.schemas.points import LAYER_COLORS
from latscope.sinks.timerange import RangeError, since_epoch
from latscope.stats.sketch import Sketch
from latscope.stream.history import WindowHistory
from latscope.stream.windows import E2E, TAGS

if TYPE_CHECKING:
    from latscope.stream.app import Worker


def _us(stats: dict[str, float]) -> dict[str, Any]:
    def conv(v: float) -> float | None:
        return None if v is None or math.isnan(v) or math.isinf(v) else round(v / 1000, 3)

    return {"count": int(stats["count"]),
            **{f"{k}_us": conv(stats[k]) for k in ("mean", "p50", "p90", "p99", "max")}}


def summary(w: Worker) -> dict[str, Any]:
    now = time.time()
    sink, pipe = w.sink, w.pipeline
    return {
        "app_id": w.settings.app_id,
        "inputs": [w.settings.layer_topic, w.settings.clock_topic, w.settings.flow_stats_topic],
        "uptime_s": round(now - w.started, 1),
        "interval_s": w.settings.windows.interval_s,
        "counters": w.all_counters(),
        "manager": pipe.manager,
        "clock": {h: {"offset_ns": m["offset_ns"], "drift_ppm": m["drift_ppm"],
                      "error_bound_ns": m["error_bound_ns"]}
                  for h, m in w.pipeline.clock_models.items()},
        "influx": None if sink is None else {
            **sink.counters.as_dict(),
            "freshness_p99_s": _seconds(sink.freshness.quantile(0.99)),
            "freshness_p50_s": _seconds(sink.freshness.quantile(0.5))},
        "open_windows": sorted({v["w"] for v in pipe.stats.values()}),
        "partitions": w.owned_partitions(),
        "learned_paths": pipe.resolver.learned(),
    }


def _seconds(ns: float) -> float | None:
    return None if math.isnan(ns) else round(ns / 1e9, 3)


def flows(w: Worker, since: float | None = None) -> dict[str, Any]:
    """``since`` (unix s): totals of the windows starting from then (or from just after a
    merged block it falls inside: ``totals_since`` says)."""
    out: dict[str, dict] = {}

    def entry(tags: dict) -> dict:
        f = out.setdefault(tags["flow"], {"flow": tags["flow"], "src_host": tags["src_host"],
                                          "dst_host": tags["dst_host"], "end_to_end": {},
                                          "segments": {}})
        if tags["segment"] == E2E:
            return f["end_to_end"]
        return f["segments"].setdefault(tags["segment"], {
            "layer": tags["layer"], "device": tags["device"] or None})

    open_sk: dict[tuple, Sketch] = {}
    pipe = w.pipeline
    for v in pipe.stats.values():
        k = tuple(v["tags"][t] for t in TAGS)
        sk = open_sk.setdefault(k, Sketch())
        sk.merge(Sketch.of(v["s"]))
    for k, sk in open_sk.items():
        entry(dict(zip(TAGS, k, strict=True)))["open"] = _us(sk.summary())
    for v in pipe.last_closed.values():
        entry(v["tags"])["last_window"] = {"start_ns": v["w"],
                                           **_us(Sketch.of(v["s"]).summary())}
    since_ns = None if since is None else math.ceil(since * 1e9)
    if since_ns is None:
        totals = pipe.totals.items()
    else:
        merged, since_ns = pipe.closed.totals(since_ns)
        totals = merged.items()
    for k, sk in totals:
        entry(dict(zip(TAGS, k, strict=True)))["total"] = _us(sk.summary())
    for v in (*pipe.stats.values(), *pipe.last_closed.values()):
        if v["tags"]["segment"] != E2E:
            seg = entry(v["tags"])
            seg["pos"] = min(seg.get("pos", v.get("pos", 0)), v.get("pos", 0))
    ctx = w.flow_context
    for name in ctx.by_flow:
        out.setdefault(name, {"flow": name, "src_host": "", "dst_host": "", "end_to_end": {},
                              "segments": {}})
    for name, f in out.items():
        # flow context (issue #15): the newest interval per host, and the interval of the
        # newest closed latency window, joined on its start
        f["context"] = ctx.latest(name)
        last = f["end_to_end"].get("last_window")
        if last:
            f["end_to_end"]["context"] = ctx.joined(name, last["start_ns"])
    doc: dict[str, Any] = {
        "interval_s": w.settings.windows.interval_s, "partitions": w.owned_partitions(),
        "totals_since": round(pipe.totals_since if since_ns is None else since_ns / 1e9, 3)}
    if since is not None:
        doc["since"] = {"asked_s": round(since, 3), "from_s": round(since_ns / 1e9, 3),
                        **pipe.closed.coverage(since_ns)}
    doc["flows"] = [{**f, "main_path": main_path(f["segments"]),
                     "segments": [{"segment": n, **s} for n, s in f["segments"].items()]}
                    for f in out.values()]
    return doc


def _count(seg: dict) -> int:
    return max((seg.get(k) or {}).get("count", 0) for k in ("total", "open", "last_window"))


def main_path(segments: dict[str, dict]) -> list[str]:
    """The flow's main path as segment names, first point to last: from a point no segment
    ends at, each step the most frequent segment onward. Samples that missed a point add
    detours (``sock_send→dev_rx``) that would double-count the steps they skip."""
    ends = {name.split("→")[1] for name in segments}
    onward: dict[str, list[tuple[int, str]]] = {}
    for name, seg in segments.items():
        onward.setdefault(name.split("→")[0], []).append((_count(seg), name))
    starts = [c for frm, cands in onward.items() if frm not in ends for c in cands]
    path: list[str] = []
    step = max(starts, default=None)
    seen: set[str] = set()
    while step is not None:
        name = step[1]
        path.append(name)
        to = name.split("→")[1]
        if to in seen:
            break
        seen.add(to)
        step = max(onward.get(to, []), default=None)
    return path


PAGE_DIR = Path(__file__).parent / "page"
# file -> content type: the live page's assets, each served by the worker itself
ASSETS = {"page.js": "application/javascript", "page.css": "text/css"}


def _page_html() -> str:
    colors = json.dumps(LAYER_COLORS).replace("<", "\\u003c")
    return (PAGE_DIR / "index.html").read_text().replace("{{LAYER_COLORS}}", colors)


def register_views(w: Worker) -> None:
    """Both ``/latscope/summary`` and ``/latscope/summary/`` (likewise flows, history)
    answer. The history samples the newest closed windows on the worker's tick."""
    history = WindowHistory()

    def hist(request: Any) -> dict[str, Any]:
        return {"flow": request.query.get("flow"), "interval_s": w.settings.windows.interval_s,
                "series": history.flow(request.query.get("flow", ""))}

    def flows_view(request: Any) -> dict[str, Any]:
        text = request.query.get("since")
        return flows(w, None if text is None else since_epoch(text, "since"))

    views = (("summary", lambda request: summary(w)), ("flows", flows_view), ("history", hist))
    for name, build in views:
        async def page(web: Any, request: Any, build: Any = build) -> Any:
            try:
                return web.json(build(request))
            except RangeError as e:   # a bad query parameter: the asker's to mend
                return web.json({"error": str(e)}, status=400)

        for suffix in ("", "/"):
            w.app.page(f"/latscope/{name}{suffix}",
                        name=f"latscope_{name}{'_dir' if suffix else ''}")(page)

    class FlowsReset(View):
        """POST: every flow's ``total`` starts again from now (``totals_since``)."""

        async def post(self, request: Any) -> Any:
            pipe = w.pipeline
            n = pipe.reset_totals()
            return self.json({"series_reset": n, "totals_since": round(pipe.totals_since, 3)})

    w.app.page("/latscope/flows/reset", name="latscope_flows_reset")(FlowsReset)

    html = _page_html()

    async def live(web: Any, request: Any) -> Any:
        return web.html(html)

    w.app.page("/latscope/", name="latscope_live")(live)
    for asset, ctype in ASSETS.items():
        body = (PAGE_DIR / asset).read_bytes()

        async def serve(web: Any, request: Any, body: bytes = body, ctype: str = ctype) -> Any:
            return web.bytes(body, content_type=ctype)

        w.app.page(f"/latscope/{asset}", name=f"latscope_{asset.replace('.', '_')}")(serve)

    @w.app.timer(w.settings.tick_s, name="latscope_history")
    async def sample_history() -> None:
        history.take(w.pipeline.last_closed)
