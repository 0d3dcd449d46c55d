"""``latscope stream worker``: one Faust worker; start two with one app id to split partitions."""

from __future__ import annotations

import argparse
from pathlib import Path

from latscope.schemas.sampling import JOIN_LATENESS_S, JOIN_WINDOW_S
from latscope.stream.join import JoinPolicy
from latscope.stream.windows import WindowPolicy


def config_from(args: argparse.Namespace) -> object | None:
    from latscope import settings

    return settings.config(args.config) if args.config else None


def settings_from(args: argparse.Namespace, config: object | None = None) -> object:
    from latscope import settings
    from latscope.config import Config
    from latscope.stream.settings import StreamSettings

    interval = args.interval or (config.sampling.interval if config else 1.0)
    s = StreamSettings(
        kafka=settings.kafka(config or Config(), args.bootstrap),
        app_id=args.app_id, web_host=args.web_host, web_port=args.web_port,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        join=JoinPolicy(args.window, args.lateness),
        # Windows close on the join's event-time watermark, which already waits for the
        # join window; the lateness is the slack beyond it.
        windows=WindowPolicy(interval, args.lateness),
        batch_max=args.batch, batch_within_s=args.within,
        commit_interval_s=args.commit_interval, session_timeout_s=args.session_timeout,
        flows=settings.flow_resolver(args.topology) if args.topology else (
            settings.fleet_view(config) if config else None),
        manager=args.manager, raw_samples=not args.no_raw_samples,
        filter_retrans=settings.filter_retrans(args.filter_retrans, args.topology, config),
        from_beginning=not args.latest)
    for attr in ("layer_topic", "clock_topic", "breakdown_topic", "dead_letter_topic",
                 "flow_stats_topic"):
        if getattr(args, attr):
            setattr(s, attr, getattr(args, attr))
    return s


def worker(args: argparse.Namespace) -> int:
    """The process entry: the one place the worker and its InfluxDB sink meet."""
    from latscope.sinks.influx_writer import InfluxSink
    from latscope.sinks.settings import influx_from
    from latscope.stream.app import run_worker

    config = config_from(args)
    influx = influx_from(args, config)
    return run_worker(settings_from(args, config),   # type: ignore[arg-type]
                      InfluxSink(influx) if influx else None,
                      loglevel="debug" if args.verbose else "warning")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="the Faust stream app (join, segments, statistics)")
    ssub = p.add_subparsers(dest="stream_command", metavar="COMMAND", required=True)
    w = ssub.add_parser(
        "worker", help="run one stream worker (Ctrl-C to stop; InfluxDB is flushed on exit)",
        description="Join per-host LayerEvent records into per-layer, per-hop breakdowns: "
                    "publish them as Avro, keep windowed statistics and write both to "
                    "InfluxDB. Web views on --web-port: /table/<name>/, /latscope/summary/, "
                    "/latscope/flows/.")
    w.add_argument("--config", help="conf directory or latscope.yaml (Kafka, InfluxDB, interval)")
    w.add_argument("--topology", help="topology file: expected hosts per flow, flow names")
    w.add_argument("--manager", help="reference-clock host (default: the topology's manager)")
    w.add_argument("--bootstrap", help="Kafka bootstrap (default: config, else 127.0.0.1:9092)")
    w.add_argument("--app-id", default="latscope-stream",
                   help="Faust app id: workers sharing it split the partitions")
    w.add_argument("--web-host", default="127.0.0.1")
    w.add_argument("--web-port", type=int, default=6066)
    w.add_argument("--data-dir", help="table state (default ~/.cache/latscope/stream/<app-id>)")
    w.add_argument("--interval", type=float, help="statistics window, s (default: config, 1)")
    w.add_argument("--window", type=float, default=JOIN_WINDOW_S,
                   help="how long a sampled byte waits for its other hosts, s (default "
                        f"{JOIN_WINDOW_S:g}; the agents' join_window_ms is window + lateness)")
    w.add_argument("--lateness", type=float, default=JOIN_LATENESS_S,
                   help=f"allowed lateness for joins and windows, s (default {JOIN_LATENESS_S:g}); "
                        "a statistics window closes once no sample still to close can belong "
                        "to it (the join's event-time watermark), plus this")
    w.add_argument("--filter-retrans", type=int, choices=(0, 1),
                   help="1: drop breakdowns of resent bytes (counted); 0: publish them "
                        "flagged, statistics apart (default: the topology's or config's "
                        "sampling.filter_retrans, else 1)")
    w.add_argument("--batch", type=int, default=2000, help="records per take() batch")
    w.add_argument("--within", type=float, default=0.1, help="take() timeout, s")
    w.add_argument("--commit-interval", type=float, default=1.0,
                   help="how often the offsets of what is done are committed, s (default 1)")
    w.add_argument("--session-timeout", type=float,
                   help="how long the group waits for a silent worker before its partitions "
                        "move, s (default: Faust's; at least the broker's minimum, 6)")
    w.add_argument("--no-influx", action="store_true", help="do not write to InfluxDB")
    w.add_argument("--influx-tag", action="append", metavar="KEY=VALUE",
                   help="tag every InfluxDB point (e.g. run=demo-1); repeatable")
    w.add_argument("--no-raw-samples", action="store_true",
                   help="write only window statistics, not one point per sample")
    w.add_argument("--latest", action="store_true",
                   help="a new app id starts at the end of the topics, not the beginning")
    for t in ("layer", "clock", "breakdown", "dead_letter", "flow_stats"):
        w.add_argument(f"--{t.replace('_', '-')}-topic", dest=f"{t}_topic", help="topic name")
    w.set_defaults(func=worker)
