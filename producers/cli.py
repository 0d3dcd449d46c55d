"""``latscope agent`` and ``latscope doctor``: thin shells over producers.agent / .doctor."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from latscope import log, settings, threads
from latscope.schemas.sampling import JOIN_WINDOW_MS

_log = log.get("producers.cli")
SKIP_HOOK_HELP = ("force a hook candidate off, so the next one serves its point (repeatable): "
                  "a hook as doctor names it, one of its parts (tp_btf/net_dev_queue) or a kind "
                  "(tp_btf, raw_tp, fentry, kprobe)")


class StatusFile:
    """The agent's status JSON, replaced atomically. A write that fails (a full or read-only
    filesystem) is counted and logged once per distinct error; the agent goes on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failures = 0
        self._last_error = ""

    def write(self, status: dict) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        try:
            tmp.write_text(json.dumps(status, indent=1))
            os.replace(tmp, self.path)
        except OSError as e:
            self.failures += 1
            if str(e) != self._last_error:
                self._last_error = str(e)
                _log.warning("status file %s not written (%d so far): %s", self.path,
                             self.failures, e.strerror or e)
            with contextlib.suppress(OSError):
                tmp.unlink()


def cmd_agent(args: argparse.Namespace) -> int:
    from latscope.bpf import libbpf
    from latscope.errors import UserError
    from latscope.producers import metrics
    from latscope.producers.agent import Agent
    from latscope.producers.coverage_watch import EXIT_COVERAGE, CoverageWatch
    from latscope.producers.sampling import effective_size

    if os.geteuid() != 0:
        raise UserError("the agent attaches eBPF probes: run it as root")
    s = settings.agent(args)
    agent = Agent(s)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        attached = agent.start()
    except libbpf.BpfError as e:
        raise UserError(f"cannot attach the probes: {e} (see `latscope doctor`)") from None
    _log.info("agent %s ready: %s; netns %s; sampling every %d bytes; topic %s", s.host,
              ", ".join(attached), ", ".join(n or "(own)" for n in s.netns),
              effective_size(s.sample_size), s.topic)
    if s.uncovered:
        _log.warning("agent %s: no network namespace holds %s: not covered", s.host,
                     ", ".join(s.uncovered))
    server = metrics.serve(s.metrics_port, agent.status) if s.metrics_port else None
    status_file = StatusFile(Path(args.status_file)) if args.status_file else None
    watch = (CoverageWatch(list(s.netns), s.uncovered) if args.restart_on_coverage_change
             and args.cover_address else None)
    recover: list[str] = []
    if status_file or args.duration or watch:
        def tick() -> None:
            deadline = time.monotonic() + args.duration if args.duration else None
            while not stop.wait(0.5):
                if status_file:
                    status_file.write(agent.status())
                if deadline and time.monotonic() >= deadline:
                    stop.set()
                if watch and (why := watch.changed()):
                    _log.warning("agent %s: coverage changed (%s): exiting to be started "
                                 "again over it", s.host, why)
                    recover.append(why)
                    stop.set()
        threads.start(tick, "agent-tick")
    if status_file:
        status_file.write(agent.status())
    print(f"agent {s.host}: ready ({len(attached)} points)", flush=True)
    agent.run(stop)
    final = agent.status()
    if recover:
        final["coverage_changed"] = recover[0]
    if status_file:
        final["status_file"] = {"path": str(status_file.path),
                                "write_failures": status_file.failures}
        status_file.write(final)
    if server is not None:
        server.shutdown()
    if args.json:
        print(json.dumps(final, indent=1))
    else:
        c = final["counters"]
        print(f"agent {s.host}: {c['samples']} sampled bytes, {c['published']} records "
              f"published, {c['failed_deliveries']} failed, {c['ringbuf_drops']} ring-buffer "
              f"drops, {c['rate_capped']} rate-capped")
    if recover:
        return EXIT_COVERAGE
    return 0 if final["counters"]["failed_deliveries"] == 0 else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from latscope.producers import doctor

    report = doctor.run(settings.skip_hooks(args.skip_hook))
    print(json.dumps(report, indent=1) if args.json else doctor.render(report))
    return 0 if report["btf"] and any(p["available"] for p in report["points"].values()) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    a = subparsers.add_parser(
        "agent", help="host agent: eBPF probes -> sampled bytes -> Kafka",
        description="Attach LatScope's probes for a set of network namespaces (a host and its "
                    "containers), group the hits of each sampled byte, publish one LayerEvent "
                    "per byte to Kafka. SIGINT/SIGTERM detach, drain and flush.")
    a.add_argument("--config", help="conf directory or latscope.yaml (default: built-in defaults)")
    a.add_argument("--host", required=True, help="this host's name in the records")
    a.add_argument("--netns", action="append", metavar="NAME",
                   help="network namespace to cover (repeatable; default: the agent's own, or "
                        "with --topology the host's and its containers')")
    a.add_argument("--cover-address", action="append", metavar="[NAME=]ADDR",
                   help="also cover the network namespace that holds ADDR (repeatable; a "
                        "container's address: a named namespace or one a process is in, "
                        "found at start); with NAME=, that namespace's records go under NAME "
                        "(the container's hostname), so breakdowns name the host -> "
                        "container hop")
    a.add_argument("--restart-on-coverage-change", action="store_true",
                   help="exit with status 75 after a clean shutdown when a --cover-address "
                        "namespace appears, goes or is replaced (a container started or "
                        "restarted), so a supervisor starts the agent again over it")
    a.add_argument("--topology", help="topology file: namespaces, clock injection and sampling "
                                      "of --host as built by `latscope topology up`")
    a.add_argument("--prefix", default="lsx", help="namespace prefix of the built topology")
    a.add_argument("--offset-ns", type=int, help="TESTING: inject this clock offset")
    a.add_argument("--drift-ppm", type=float, help="TESTING: inject this clock drift")
    a.add_argument("--epoch-ns", type=int,
                   help="TESTING: CLOCK_MONOTONIC epoch of the drift (same as the responder's)")
    a.add_argument("--sample-size", type=int, help="override sampling.size")
    a.add_argument("--port", type=int, action="append", help="override sampling.ports")
    a.add_argument("--points", metavar="P1,P2,...",
                   help="attach only these points (default: all but xdp, which is --xdp); "
                        "fewer points, less overhead")
    a.add_argument("--xdp", action="store_true",
                   help="also the xdp point: XDP on every covered device (changes the receive "
                        "path it measures; a device with the sync responder keeps its own)")
    a.add_argument("--resend-mark", action="store_true",
                   help="tcp_tx adds 8 TCP option bytes to covered sockets' data segments and "
                        "marks resent ones, so every host knows a resend (changes the traffic "
                        "it measures; default: agent.resend_mark, off)")
    a.add_argument("--udp-socket-points", action="store_true",
                   help="UDP datagrams start at the app's send and end at its read, as TCP "
                        "bytes do (a program at every system call of every process on the "
                        "host while the agent runs; default: agent.udp_socket_points, off)")
    a.add_argument("--skip-hook", action="append", metavar="HOOK", help=SKIP_HOOK_HELP)
    a.add_argument("--hold-ms", type=int,
                   help="how long a TCP byte still inside the host (qdisc, socket queue) may "
                        "wait for its next hit before it is published incomplete (default: "
                        "agent.hold_ms, else the longest the join window allows: join window "
                        "- linger - the time to publish; a longer one is refused, naming "
                        "the longest)")
    a.add_argument("--join-window-ms", type=int,
                   help="the stream worker's join window + lateness, ms (its --window + "
                        f"--lateness; default: agent.join_window_ms, {JOIN_WINDOW_MS})")
    a.add_argument("--rate-cap", type=int, help="override agent.rate_cap_per_s (sampled bytes/s)")
    a.add_argument("--budget", type=int, metavar="RECORDS_PER_S",
                   help="records/s this host may publish before the fleet samples more "
                        "sparsely, every host alike (default: agent.budget_records_per_s; "
                        "0: none)")
    a.add_argument("--stride-topic", help="stride demands topic (default: latscope.stride with "
                                          "the default --topic, else TOPIC.stride)")
    a.add_argument("--bootstrap", help="override kafka.bootstrap")
    a.add_argument("--topic", help="records topic (default latscope.layer-events)")
    a.add_argument("--interval", type=float,
                   help="flow context interval, s (default: sampling.interval, 1)")
    a.add_argument("--flow-stats-topic", help="flow context topic (default latscope.flow-stats)")
    a.add_argument("--no-flow-stats", action="store_true",
                   help="no per-flow counters in the kernel and no flow context records")
    a.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    a.add_argument("--python-path", action="store_true",
                   help="group and encode in Python (the reference) instead of the native path")
    a.add_argument("--status-file", help="write the status JSON here every 0.5 s")
    a.add_argument("--duration", type=float, help="stop after this many seconds")
    a.add_argument("--json", action="store_true", help="print the final status as JSON")
    a.set_defaults(func=cmd_agent)

    d = subparsers.add_parser(
        "doctor", help="which kernel hook serves each observation point",
        description="Load and attach every probe once (then detach) and report, per point, "
                    "the hook that serves it or why none can.")
    d.add_argument("--json", action="store_true", help="machine-readable report (design §8)")
    d.add_argument("--skip-hook", action="append", metavar="HOOK", help=SKIP_HOOK_HELP)
    d.set_defaults(func=cmd_doctor)
