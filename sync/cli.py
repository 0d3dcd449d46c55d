"""``latscope sync manager|responder|status``: thin shells over the sync library."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import threading
import time
from pathlib import Path

from latscope import log, paths
from latscope.bpf.clock import ClockInjection, monotonic_ns

_log = log.get("sync.cli")


def default_token_file() -> Path:
    return paths.cache_dir() / "sync" / "token"


def load_token(args: argparse.Namespace, create: bool) -> int:
    """The session token: --token, $LATSCOPE_SYNC_TOKEN, or the token file (the manager
    creates it, mode 0600, when missing)."""
    from latscope.errors import UserError

    raw = args.token or os.environ.get("LATSCOPE_SYNC_TOKEN")
    source = "--token" if args.token else "LATSCOPE_SYNC_TOKEN"
    if raw is None:
        path = Path(args.token_file or default_token_file()).expanduser()
        source = str(path)
        if not path.exists():
            if not create:
                raise UserError(f"{path}: no sync token (start the manager first, or pass "
                                "--token / --token-file)")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{secrets.randbits(63):016x}\n")
            _log.info("new session token in %s", path)
        raw = path.read_text().strip()
    try:
        token = int(raw, 16)
    except ValueError:
        raise UserError(f"{source}: sync token {raw[:20]!r}: expected up to 16 hex digits") \
            from None
    if not 0 < token < 1 << 64:
        raise UserError(f"{source}: sync token: expected a non-zero 64-bit hex value")
    return token


def _load_config(path: str | None):  # -> latscope.config.Config | None
    if path is None:
        return None
    from latscope import config
    from latscope.errors import UserError

    try:
        return config.load(path).config
    except config.ConfigError as e:
        raise UserError(str(e)) from None


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _targets(args: argparse.Namespace, cfg) -> list:
    from latscope.errors import UserError
    from latscope.sync.manager import Target
    from latscope.sync.responder import DEFAULT_PORT

    targets = []
    for spec in args.host or []:
        name, sep, addr = spec.partition("=")
        if not sep or not name or not addr:
            raise UserError(f"--host {spec!r}: expected NAME=ADDRESS")
        targets.append(Target(name, addr, args.port or DEFAULT_PORT))
    if cfg is not None and cfg.ping is not None and not targets:
        names = {a: s.hostname for s in cfg.servers for a in (s.address, *s.other_address)}
        targets = [Target(names.get(t.address, t.address), t.address, t.port)
                   for t in cfg.ping.servers]
    if not targets:
        raise UserError("no hosts to synchronise: give --host NAME=ADDRESS or --config with "
                        "ping_info.yaml (or a `ping:` section)")
    return targets


def cmd_manager(args: argparse.Namespace) -> int:
    from latscope.errors import UserError
    from latscope.kafka import KafkaSettings
    from latscope.sync.estimator import EstimatorConfig
    from latscope.sync.manager import Manager
    from latscope.sync.publish import ClockPublisher

    cfg = _load_config(args.config)
    targets = _targets(args, cfg)
    interval = args.interval or (cfg.time_sync.interval_s if cfg else 1.0)
    bootstrap = args.bootstrap or (cfg.kafka.bootstrap if cfg else "127.0.0.1:9092")
    name = args.name or (cfg.management.hostname if cfg and cfg.management else "manager")
    # The window must span several rounds: one minimum-delay sample per round is fitted.
    window = args.window or max(60.0, 16 * interval)
    token = load_token(args, create=True)
    pub = None
    if not args.no_kafka:
        try:
            pub = ClockPublisher(KafkaSettings(bootstrap, cfg.kafka.settings if cfg else {}),
                                 manager=name)
        except Exception as e:
            raise UserError(f"Kafka at {bootstrap}: {e}") from None
    mgr = Manager(targets, token, netns=args.netns, interval_s=interval, burst=args.burst,
                  estimator=EstimatorConfig(window_ns=int(window * 1e9),
                                            bucket_ns=int(interval * 1e9)),
                  on_sample=pub.sample if pub else None, on_model=pub.model if pub else None,
                  name=name)
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
            left = pub.flush()
            out["kafka"] = {"produced": pub.produced, "delivered": pub.delivered,
                            "failed": pub.failed, "undelivered": left}
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
    from latscope.errors import UserError
    from latscope.sync.responder import DEFAULT_PORT, Responder

    cfg = _load_config(args.config)
    allow = list(args.allow or [])
    port = args.port
    if cfg is not None and cfg.ping is not None:
        allow = allow or [cfg.ping.management_server]
        port = port or (cfg.ping.servers[0].port if cfg.ping.servers else None)
    if not allow:
        raise UserError("no manager address to answer: give --allow ADDRESS or --config with "
                        "ping_info.yaml (management_server)")
    injection = ClockInjection(args.offset_ns, args.drift_ppm,
                               args.epoch_ns if args.epoch_ns is not None else monotonic_ns())
    r = Responder(args.ifname, load_token(args, create=False), allow, netns=args.netns,
                  port=port or DEFAULT_PORT, injection=injection,
                  addresses=args.address or None, xdp_mode=args.xdp_mode)
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
    from latscope.errors import UserError
    from latscope.kafka import KafkaSettings
    from latscope.schemas.records import TOPIC_CLOCK
    from latscope.sync.status import describe, read_models

    cfg = _load_config(args.config)
    bootstrap = args.bootstrap or (cfg.kafka.bootstrap if cfg else "127.0.0.1:9092")
    try:
        models, bad = read_models(KafkaSettings(bootstrap, cfg.kafka.settings if cfg else {}),
                                  args.topic or TOPIC_CLOCK, timeout=args.timeout)
    except Exception as e:
        raise UserError(f"Kafka at {bootstrap}: {e}") from None
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
    p.add_argument("--token", metavar="HEX", help="session token (default: the token file)")
    p.add_argument("--token-file", metavar="PATH",
                   help=f"session token file (default {default_token_file()})")
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
                   help="a host to synchronise (repeatable; default: ping_info.yaml servers)")
    m.add_argument("--interval", type=float, metavar="S",
                   help="seconds between rounds (default: time_sync.yaml time_interval, else 1)")
    m.add_argument("--burst", type=int, default=4, help="probes per host per round (default 4)")
    m.add_argument("--window", type=float, metavar="S",
                   help="sliding window of the estimator (default: 16 rounds, at least 60 s)")
    m.add_argument("--bootstrap", help="Kafka bootstrap (default: config, else 127.0.0.1:9092)")
    m.add_argument("--name", help="manager name in the records (default: management hostname)")
    m.add_argument("--no-kafka", action="store_true", help="estimate only, publish nothing")
    m.set_defaults(func=cmd_manager)

    r = sub.add_parser("responder", help="answer sync probes from XDP on this host",
                       description="Attach the XDP responder to IFNAME; answer only allow-listed "
                                   "managers carrying the session token, count everything else.")
    _common(r)
    r.add_argument("--ifname", required=True, help="the host's sync interface")
    r.add_argument("--allow", action="append", metavar="ADDRESS",
                   help="manager address to answer (repeatable; default: management_server)")
    r.add_argument("--address", action="append", metavar="ADDRESS",
                   help="own address to answer on (repeatable; default: all of IFNAME's); "
                        "probes to other addresses are routed through and pass")
    r.add_argument("--xdp-mode", choices=["auto", "native", "generic"], default="auto",
                   help="auto: generic on veth (native XDP_TX there needs XDP on the peer), "
                        "native elsewhere")
    r.add_argument("--offset-ns", type=int, default=0,
                   help="TESTING: inject this clock offset into t2/t3")
    r.add_argument("--drift-ppm", type=float, default=0.0,
                   help="TESTING: inject this clock drift into t2/t3")
    r.add_argument("--epoch-ns", type=int, help="TESTING: CLOCK_MONOTONIC epoch of the drift")
    r.set_defaults(func=cmd_responder)

    s = sub.add_parser("status", help="per-host offset, drift, error bound, model age",
                       description="Read the current clock model of every host from Kafka.")
    s.add_argument("--config", metavar="PATH", help="conf directory or latscope.yaml")
    s.add_argument("--bootstrap", help="Kafka bootstrap (default: config, else 127.0.0.1:9092)")
    s.add_argument("--topic", help="model topic (default latscope.clock)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Kafka")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
