"""``latscope report``: PNG plots from InfluxDB (Flux)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def report(args: argparse.Namespace) -> int:
    from latscope.errors import UserError
    from latscope.sinks.report import ReportError, make_report
    from latscope.sinks.settings import influx_from

    config = None
    if args.config:
        from latscope.config import load

        config = load(args.config).config
    args.no_influx, args.influx_tag = False, None
    settings = influx_from(args, config)
    try:
        rep = make_report(settings, Path(args.out), since=args.since,   # type: ignore[arg-type]
                          run=args.run)
    except ReportError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps({"files": [str(f) for f in rep.files], "flows": rep.flows,
                          "segments": rep.segments, "samples": rep.samples}))
    else:
        print(f"{len(rep.flows)} flow(s), {rep.segments} segment series, {rep.samples} "
              "per-sample layer values")
        for f in rep.files:
            print(f"wrote {f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plot what the stream wrote to InfluxDB (PNG)",
                       description="Query InfluxDB (Flux) and draw: per-flow stacked segments "
                                   "(p50), per-layer CDFs, p99 over time per segment.")
    p.add_argument("--since", default="10m", help="how far back, a Flux duration (default 10m)")
    p.add_argument("--out", default="latscope-report", help="output folder (default ./latscope-report)")
    p.add_argument("--run", help="only points tagged run=RUN (a demo's run id)")
    p.add_argument("--config", help="conf directory or latscope.yaml (InfluxDB); "
                                    "default: the local stack")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=report)
