"""``latscope report``: per-flow PNGs and an HTML index from InfluxDB (Flux)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def report(args: argparse.Namespace) -> int:
    from latscope.errors import UserError
    from latscope.sinks.report import ReportError, make_report
    from latscope.sinks.settings import influx_from
    from latscope.sinks.timerange import RangeError, time_range

    config = None
    if args.config:
        from latscope.config import load

        config = load(args.config).config
    args.no_influx, args.influx_tag = False, None
    settings = influx_from(args, config)

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    try:
        span = time_range(args.since, args.start, args.stop)
        say(f"querying {span.describe()}…")
        rep = make_report(settings, Path(args.out), span, run=args.run,   # type: ignore[arg-type]
                          flows=args.flow, progress=say)
    except (ReportError, RangeError) as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps({"index": str(rep.index), "files": [str(f) for f in rep.files],
                          "flows": rep.flows, "segments": rep.segments, "samples": rep.samples,
                          "from": rep.span.start.isoformat(), "to": rep.span.stop.isoformat(),
                          "time_axes": rep.time_axes}))
    else:
        print(f"{len(rep.flows)} flow(s) ({', '.join(rep.flows)}), {rep.segments} segment "
              f"series, {rep.samples} raw samples; {len(rep.files)} figures")
        print(f"open {rep.index}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="per-flow figures and an HTML index from InfluxDB (PNG)",
        description="Query InfluxDB (Flux) and draw, per flow: where the time goes segment by "
                    "segment, end-to-end vs wire delay per sample, each layer per sample, "
                    "per-layer CDFs, each segment's p99 over time; index.html links them "
                    "with the numbers. Bounds: ISO date-times (local unless zoned), HH:MM:SS "
                    "(today), a duration ago (10m, or --from=-10m), or now.")
    p.add_argument("--since", help="the last D (a duration: 10m, 1h30m, 2d); default 10m "
                                   "unless --from is given")
    p.add_argument("--from", dest="start", metavar="WHEN",
                   help="start: 2026-05-04T10:30:00, 10:30:00 (today), 15m (ago; or "
                        "--from=-15m), now")
    p.add_argument("--to", dest="stop", metavar="WHEN", help="end (same forms; default now)")
    p.add_argument("--run", help="only points tagged run=RUN (a demo's run id)")
    p.add_argument("--flow", action="append", metavar="NAME",
                   help="only this flow (repeat for more); default every flow in the range")
    p.add_argument("--out", default="latscope-report",
                   help="output folder (default ./latscope-report)")
    p.add_argument("--config", help="conf directory or latscope.yaml (InfluxDB); "
                                    "default: the local stack")
    p.add_argument("--json", action="store_true",
                   help="print the index, the figures and the time axes as JSON")
    p.set_defaults(func=report)
