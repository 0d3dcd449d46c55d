"""``latscope demo``: the default topology (or yours) end to end, summary table and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def demo(args: argparse.Namespace) -> int:
    import os

    from latscope.errors import UserError
    from latscope.lab.demo import DEFAULT_TOPOLOGY, DemoOptions, format_table, run_demo

    if os.geteuid() != 0:
        raise UserError("the demo builds network namespaces and loads eBPF: run it as root")
    if args.fleet:
        return fleet_demo(args)
    if args.wheel:
        raise UserError("--wheel: only with --fleet")
    topology = Path(args.topology) if args.topology else DEFAULT_TOPOLOGY
    if not topology.is_file():
        raise UserError(f"{topology}: no such topology file")

    opts = DemoOptions(topology=topology, duration_s=args.duration, prefix=args.prefix or "lsd",
                       web_port=args.web_port, interval_s=args.interval,
                       start_stack=not args.no_stack_start, progress=_progress,
                       topic_prefix=args.topic_prefix,
                       config=Path(args.config) if args.config else None,
                       report_dir=Path(args.report) if args.report else None)
    summary = run_demo(opts)
    _write_json(args.json, summary)
    print(format_table(summary))
    return 1 if summary.get("missing") else 0


def _progress(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _write_json(path: str | None, summary: dict) -> None:
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
        _progress(f"summary written to {path}")


def fleet_demo(args: argparse.Namespace) -> int:
    from latscope.errors import UserError
    from latscope.lab.fleet_demo import FleetDemoOptions, format_fleet_table, run_fleet_demo

    given = [f"--{n.replace('_', '-')}" for n in ("topology", "report", "config", "topic_prefix")
             if getattr(args, n)]
    if given:
        raise UserError(f"{', '.join(given)}: not with --fleet (its servers, conf and topics "
                        "are the fleet lab's own)")
    summary = run_fleet_demo(FleetDemoOptions(
        duration_s=args.duration, prefix=args.prefix or "lsdf",
        wheel=Path(args.wheel) if args.wheel else None,
        start_stack=not args.no_stack_start, progress=_progress))
    _write_json(args.json, summary)
    print(format_fleet_table(summary))
    return 1 if summary.get("missing") else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on network namespaces and print the breakdown",
        description="Build the topology as network namespaces, start the local stack if it "
                    "is down, run agents, clock sync, the stream worker and the InfluxDB sink, "
                    "drive the flows, print a breakdown per flow and write the summary JSON. "
                    "Everything is cleaned up on exit, Ctrl-C included. Needs root.")
    p.add_argument("--topology", help="topology YAML (default: topologies/default.yaml)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of traffic (default 20)")
    p.add_argument("--json", metavar="OUT", help="write the summary JSON (design §8) here")
    p.add_argument("--report", metavar="DIR",
                   help="at the end, write this run's report (latscope report: PNGs, index.html)")
    p.add_argument("--prefix", help="namespace/link name prefix (default lsd; lsdf with --fleet)")
    p.add_argument("--web-port", type=int, default=6066, help="stream worker web port")
    p.add_argument("--interval", type=float, default=1.0, help="statistics window, s")
    p.add_argument("--topic-prefix", help="use PREFIX.layer-events, PREFIX.clock, ... instead "
                                          "of the standard latscope.* topics")
    p.add_argument("--config", help="conf directory or latscope.yaml whose kafka and influxdb "
                                    "every component uses (default: the local stack's; a "
                                    "secure stack's client config per component)")
    p.add_argument("--fleet", action="store_true",
                   help="a fleet rollout instead: three servers as namespaces with their own "
                        "sshd, `latscope fleet up` over SSH, iperf3 between them, the "
                        "breakdowns, `fleet status` and `fleet down`")
    p.add_argument("--wheel", help="with --fleet: the LatScope wheel to ship (default: build one)")
    p.add_argument("--no-stack-start", action="store_true",
                   help="fail instead of starting the local stack when it is down")
    p.set_defaults(func=demo)
