"""``latscope sync manager|responder|status``: thin shells over the sync library."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

from latscope import log

_log = log.get("sync.cli")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_manager(args: argparse.Namespace) -> int:
    from latscope import settings
    from latscope.errors import UserError
    from latscope.sync.estimator import EstimatorConfig
    from latscope.sync.manager import Manager
    from latscope.sync.publish import ClockPublisher

    ms = settings.sync_manager(args)
    pub = None
    if ms.kafka is not None:
        try:
            pub = ClockPublisher(ms.kafka, manager=ms.name, models_topic=ms.models_topic,
                                 samples_topic=ms.samples_topic)
        except Exception as e:
            raise UserError(f"Kafka at {ms.kafka.bootstrap}: {e}") from None
    mgr = Manager(ms.targets, ms.keys, netns=ms.netns, interval_s=ms.interval_s, burst=ms.burst,
                  estimator=EstimatorConfig(window_ns=int(ms.window_s * 1e9),
                                            bucket_ns=int(ms.interval_s * 1e9)),
                  on_sample=pub.sample if pub else None, on_model=pub.model if pub else None,
                  name=ms.name)
    last = [0.0]

    def progress(m: Manager) -> None:
        if time.monotonic() - last[0] < args.progress:
            return
        last[0] = time.monotonic()
        for host, st in m.hosts.items():
            md = st.model
            if md is None:
                print(f"{host}: {st.samples}/{st.sent} samples, no model yet", flush=True)
            else:
                print(f"{host}: offset {md.offset_ns:+.0f} ns  drift {md.drift_ppm:+.3f} ppm  "
                      f"bound {md.error_bound_ns:.0f} ns  min delay {md.min_delay_ns:.0f} ns  "
                      f"({st.samples}/{st.sent} samples, {st.lost} lost)", flush=True)

    try:
        mgr.start()
    except (OSError, ValueError) as e:
        raise UserError(f"sync manager: {e}") from None
    try:
        mgr.run(duration_s=args.duration, stop=_stop_on_signals(),
                progress=None if args.json else progress)
        summary = {host: {"sent": st.sent, "samples": st.samples, "lost": st.lost,
                          "send_errors": st.send_errors,
                          "suspicious": st.suspicious + sum(st.estimator.suspicious.values()),
                          "model": None if st.model is None else {
                              "ref_ns": st.model.ref_ns, "offset_ns": st.model.offset_ns,
                              "drift_ppm": st.model.drift_ppm,
                              "error_bound_ns": st.model.error_bound_ns,
                              "negative_delays": st.model.negative_delays,
                              "negative_one_way": st.model.negative_one_way,
                              "consistent": st.model.consistent}}
                   for host, st in mgr.hosts.items()}
        out = {"hosts": summary, "kernel": mgr.counters(), "unmatched": mgr.unmatched}
        if pub is not None:
            pub.close()
            out["kafka"] = {"produced": pub.produced, "delivered": pub.delivered,
                            "failed": pub.failed, "undelivered": pub.undelivered}
    finally:
        mgr.close()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"kernel counters: {out['kernel']}")
        if "kafka" in out:
            print(f"kafka: {out['kafka']}")
    return 0


def cmd_responder(args: argparse.Namespace) -> int:
    from latscope import settings
    from latscope.errors import UserError

    r = settings.sync_responder(args)
    try:
        r.start()
    except (OSError, ValueError) as e:
        raise UserError(f"sync responder: {e}") from None
    stop = _stop_on_signals()
    try:
        while not stop.wait(args.progress):
            c = r.counters()
            print(json.dumps(c) if args.json else
                  "  ".join(f"{k} {v}" for k, v in c.items()), flush=True)
            if args.duration is not None:
                args.duration -= args.progress
                if args.duration <= 0:
                    break
    finally:
        final = r.counters()
        r.close()
    print(json.dumps(final) if args.json else f"final: {final}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from latscope import settings
    from latscope.errors import UserError
    from latscope.schemas.records import TOPIC_CLOCK
    from latscope.sync.status import describe, read_models

    ks = settings.kafka(settings.config(args.config), args.bootstrap)
    try:
        models, bad = read_models(ks, args.topic or TOPIC_CLOCK, timeout=args.timeout)
    except Exception as e:
        raise UserError(f"Kafka at {ks.bootstrap}: {e}") from None
    rows = describe(models)
    if args.json:
        print(json.dumps({"hosts": rows, "undecodable": bad}, indent=2))
        return 0
    if not rows:
        print("no clock models yet (is `latscope sync manager` running?)")
    for r in rows:
        print(f"{r['host']:<12} offset {r['offset_ns']:+14.0f} ns  drift {r['drift_ppm']:+9.3f} ppm"
              f"  bound {r['error_bound_ns']:9.0f} ns  age {r['age_s']:8.1f} s")
    if bad:
        print(f"{bad} undecodable record(s) skipped")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="conf directory (ping_info.yaml, time_sync.yaml, ...) or latscope.yaml")
    # The secret never comes from argv (visible in ps): a key file or the environment.
    p.add_argument("--key-file", metavar="PATH",
                   help="sync key file, mode 0600 (default: $LATSCOPE_SYNC_KEY, else "
                        "~/.cache/latscope/sync/key, created by whichever of manager and "
                        "responder starts first); see sync/SECURITY.md")
    p.add_argument("--key-period", type=float, metavar="S",
                   help="seconds per key epoch (default 60; the same on every host)")
    p.add_argument("--topology", metavar="FILE",
                   help="a topology built by `latscope topology up`: hosts, addresses, devices, "
                        "namespaces and injected clocks come from it")
    p.add_argument("--prefix", default="lsx", help="namespace prefix of the built topology")
    p.add_argument("--port", type=int, help="sync UDP port (default 51111 or from the config)")
    p.add_argument("--netns", metavar="NAME", help="run in network namespace /run/netns/NAME")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--progress", type=float, default=5.0, metavar="S",
                   help="seconds between progress lines (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(subparsers: argparse._SubParsersAction) -> None:
    sync = subparsers.add_parser("sync", help="XDP clock synchronisation between hosts",
                                 description="XDP clock synchronisation (design §4).")
    sub = sync.add_subparsers(dest="sync_command", metavar="SUBCOMMAND", required=True)

    m = sub.add_parser("manager", help="probe hosts, estimate offset+drift, publish to Kafka",
                       description="Send sync probes to every host, stamp t1/t4 in kernel, fit "
                                   "offset and drift per host, publish ClockSample/ClockModel.")
    _common(m)
    m.add_argument("--host", action="append", metavar="NAME=ADDRESS",
                   help="a host to synchronise (repeatable; default: the topology's hosts, "
                        "else ping_info.yaml servers)")
    m.add_argument("--interval", type=float, metavar="S",
                   help="seconds between rounds (default: time_sync.yaml time_interval, else 1)")
    m.add_argument("--burst", type=int, default=4, help="probes per host per round (default 4)")
    m.add_argument("--window", type=float, metavar="S",
                   help="sliding window of the estimator (default: 16 rounds, at least 60 s)")
    m.add_argument("--bootstrap", help="Kafka bootstrap (default: config, else 127.0.0.1:9092)")
    m.add_argument("--name", help="manager name in the records (default: the topology's "
                                  "manager, else the management hostname)")
    m.add_argument("--topic", help="clock model topic (default latscope.clock)")
    m.add_argument("--samples-topic", help="clock sample topic (default latscope.clock-samples)")
    m.add_argument("--no-kafka", action="store_true", help="estimate only, publish nothing")
    m.set_defaults(func=cmd_manager)

    r = sub.add_parser("responder", help="answer sync probes from XDP on this host",
                       description="Attach the XDP responder to IFNAME; answer only allow-listed "
                                   "managers whose probes carry a valid MAC (sync/SECURITY.md), "
                                   "count everything else.")
    _common(r)
    r.add_argument("--host", help="with --topology: the host this responder serves")
    r.add_argument("--ifname", help="the host's sync interface (default: from --topology)")
    r.add_argument("--allow", action="append", metavar="ADDRESS",
                   help="manager address to answer (repeatable; default: management_server)")
    r.add_argument("--address", action="append", metavar="ADDRESS",
                   help="own address to answer on (repeatable; default: all of IFNAME's); "
                        "probes to other addresses are routed through and pass")
    r.add_argument("--xdp-mode", choices=["auto", "native", "generic"], default="auto",
                   help="auto: generic on veth (native XDP_TX there needs XDP on the peer), "
                        "native elsewhere")
    r.add_argument("--offset-ns", type=int,
                   help="TESTING: inject this clock offset into t2/t3 (default: the topology's)")
    r.add_argument("--drift-ppm", type=float,
                   help="TESTING: inject this clock drift into t2/t3 (default: the topology's)")
    r.add_argument("--epoch-ns", type=int,
                   help="TESTING: CLOCK_MONOTONIC epoch of the drift (default: the built "
                        "topology's, else now)")
    r.set_defaults(func=cmd_responder)

    s = sub.add_parser("status", help="per-host offset, drift, error bound, model age",
                       description="Read the current clock model of every host from Kafka.")
    s.add_argument("--config", metavar="PATH", help="conf directory or latscope.yaml")
    s.add_argument("--bootstrap", help="Kafka bootstrap (default: config, else 127.0.0.1:9092)")
    s.add_argument("--topic", help="model topic (default latscope.clock)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Kafka")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
