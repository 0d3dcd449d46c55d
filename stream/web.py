"""LatScope's pages on the Faust web server (next to Faust's own ``/table/<name>/``).

``/latscope/summary``   counters, clock models, sink health, open windows
``/latscope/flows``     per flow: every segment's statistics for the open windows, the
                        newest closed window and all closed windows so far (this worker's
                        partitions only: a flow lives on exactly one partition); its
                        context per host (throughput, resends, TCP state, process: the
                        newest FlowStats, and the one of the newest closed window)
Durations are µs, like the demo summary.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from latscope.stats.sketch import Sketch
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
        "uptime_s": round(now - w.started, 1),
        "interval_s": w.settings.windows.interval_s,
        "counters": w.all_counters(),
        "manager": pipe.manager,
        "clock": {h: {"offset_ns": m["offset_ns"], "drift_ppm": m["drift_ppm"],
                      "error_bound_ns": m["error_bound_ns"]}
                  for h, m in w.clock_models.items()},
        "influx": None if sink is None else {
            **sink.counters.as_dict(),
            "freshness_p99_s": _seconds(sink.freshness.quantile(0.99)),
            "freshness_p50_s": _seconds(sink.freshness.quantile(0.5))},
        "open_windows": sorted({v["w"] for v in pipe.stats.values()}),
        "partitions": w.owned_partitions(),
    }


def _seconds(ns: float) -> float | None:
    return None if math.isnan(ns) else round(ns / 1e9, 3)


def flows(w: Worker) -> dict[str, Any]:
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
    for k, sk in pipe.totals.items():
        entry(dict(zip(TAGS, k, strict=True)))["total"] = _us(sk.summary())
    ctx = w.flow_context
    for name in ctx.by_flow:
        out.setdefault(name, {"flow": name, "end_to_end": {}, "segments": {}})
    for name, f in out.items():
        # flow context (issue #15): the newest interval per host, and the interval of the
        # newest closed latency window, joined on its start
        f["context"] = ctx.latest(name)
        last = f["end_to_end"].get("last_window")
        if last:
            f["end_to_end"]["context"] = ctx.joined(name, last["start_ns"])
    return {"flows": [{**f, "segments": [{"segment": n, **s} for n, s in f["segments"].items()]}
                      for f in out.values()]}


def register_views(w: Worker) -> None:
    """Both ``/latscope/summary`` and ``/latscope/summary/`` (likewise flows) answer."""
    for name, build in (("summary", summary), ("flows", flows)):
        async def page(web: Any, request: Any, build: Any = build) -> Any:
            return web.json(build(w))

        for suffix in ("", "/"):
            w.app.page(f"/latscope/{name}{suffix}",
                        name=f"latscope_{name}{'_dir' if suffix else ''}")(page)
