"""``latscope topology check|up|down|run``: thin shells over latscope.lab.topology/netns/traffic."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from latscope.errors import UserError
from latscope.lab.topology import Topology, load_topology

DEFAULT_PREFIX = "lsx"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("topology", help="validate or build a topology file",
                              description="Validate a topology file (design §8) or build it as "
                                          "network namespaces.")
    sub = p.add_subparsers(dest="topology_command", metavar="ACTION", required=True)

    c = sub.add_parser("check", help="validate a file; print hosts, links, flows and paths")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="print the resolved topology as JSON")
    c.set_defaults(func=cmd_check)

    u = sub.add_parser("up", help="build the namespaces and keep them until Ctrl-C/SIGTERM")
    u.add_argument("file")
    u.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help="namespace/device name prefix (default %(default)s)")
    u.add_argument("--json", action="store_true", help="print namespaces and devices as JSON")
    u.set_defaults(func=cmd_up)

    d = sub.add_parser("down", help="remove the namespaces a crashed `up`/demo left behind")
    d.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help="namespace/device name prefix (default %(default)s)")
    d.add_argument("--kill", action="store_true",
                   help="also SIGKILL processes still running inside those namespaces")
    d.set_defaults(func=cmd_down)

    r = sub.add_parser("run", help="build, run the file's flows once, print results, tear down")
    r.add_argument("file")
    r.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help="namespace/device name prefix (default %(default)s)")
    r.add_argument("--duration", type=float, default=10.0,
                   help="bound for flows without their own duration_s (default %(default)s s)")
    r.add_argument("--json", action="store_true", help="print the flow results as JSON")
    r.set_defaults(func=cmd_run)


def _load(path: str) -> Topology:
    return load_topology(path)   # TopologyError is a UserError: printed as is


def render(t: Topology) -> str:
    s = t.summary()
    out = [f"{s['file']}: {len(t.hosts)} hosts, {len(t.bridges)} bridges, {len(t.links)} links, "
           f"{len(t.routes)} routes, {len(t.flows)} flows", "hosts:"]
    for h in s["hosts"]:
        clock = h["clock"]
        extra = f" parent={h['parent']}" if h["parent"] else ""
        sync = f" sync at {h['sync_addr']}" if "sync_addr" in h else " (clock reference)"
        out.append(f"  {h['name']:<12} {h['role']:<9}{extra} clock {clock['offset_ns']:+d} ns "
                   f"{clock['drift_ppm']:+g} ppm{sync}  {' '.join(h['addresses'])}")
    for b in s["bridges"]:
        out.append(f"  bridge {b['name']} on {b['host']}: {' '.join(b['addr'])}")
    out.append("links:")
    for lk in s["links"]:
        shaped = "".join(f"  {side}_tbf {lk[side + '_tbf']['rate']}"
                         for side in ("a", "b") if lk[side + "_tbf"])
        out.append(f"  [{lk['index']}] {lk['a']} {' '.join(lk['a_addr'])} <-> {lk['b']} "
                   f"{' '.join(lk['b_addr'])}{shaped}")
    out.append("flows:")
    for f in s["flows"]:
        amount = f"{f['bytes']} bytes" if "bytes" in f else ""
        amount += f" paced {f['rate']}" if "rate" in f else ""
        delay = f" reader_delay {f['reader_delay_ms']:g} ms" if f["reader_delay_ms"] else ""
        out.append(f"  {f['name']}: {f['src']} -> {f['dst']} {f['proto']}/v{f['family']} "
                   f"{f['dst_addr']}:{f['port']} {amount.strip()}{delay}; path "
                   + " -> ".join(f["path_hosts"]))
    out += _port_notes(t)
    return "\n".join(out)


def _port_notes(t: Topology) -> list[str]:
    """Flows whose port is not on sampling.ports. An agent samples a byte whose source or
    destination port is listed, so such a flow is sampled as the reply direction of a
    connection to a listed port (its source port), and not as a connection of its own."""
    ports = t.sampling.ports
    unsampled = [f for f in t.flows if ports and f.port not in ports]
    if not unsampled:
        return []
    out = [f"note: flows {[f.name for f in unsampled]} use ports outside sampling.ports "
           f"{ports}: a connection of their own (as `latscope demo` drives each flow) will "
           "not be sampled"]
    for f in unsampled:
        for g in t.flows:
            if (g.src, g.dst, g.proto) == (f.dst, f.src, f.proto) and g.port in ports:
                out.append(f"  {f.name} as the reply direction of {g.name}'s connection "
                           f"(source port {g.port}) is sampled")
                break
    return out


def cmd_check(args: argparse.Namespace) -> int:
    t = _load(args.file)
    print(json.dumps(t.summary(), indent=2) if args.json else render(t))
    return 0


def _net_info(net: Any) -> dict[str, Any]:
    return {"prefix": net.prefix, "epoch_ns": net.epoch_ns,
            "hosts": {h: {"netns": ns, "inode": net.netns_inode(h),
                          "devices": [{"ifindex": i, "ifname": n} for i, n in net.devices(h)]}
                      for h, ns in net.namespaces().items()}}


def cmd_up(args: argparse.Namespace) -> int:
    from latscope.lab.netns import NetnsError, build

    t = _load(args.file)
    me = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() == me:   # not in a helper child pyroute2 forked from us
            raise KeyboardInterrupt

    try:
        with build(t, prefix=args.prefix) as net:
            signal.signal(signal.SIGTERM, on_sigterm)
            try:   # everything after the handler: a SIGTERM anywhere here means "tear down"
                net.wait_all_reachable()
                info = _net_info(net)
                if args.json:
                    print(json.dumps(info), flush=True)
                else:
                    for host, h in info["hosts"].items():
                        devs = ", ".join(f"{d['ifname']}({d['ifindex']})" for d in h["devices"])
                        print(f"{host:<12} {h['netns']:<20} inode {h['inode']}  {devs}")
                    print(f"up: `ip netns exec {args.prefix}-<host> ...` to run inside; "
                          "Ctrl-C or SIGTERM tears it down", flush=True)
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                print("tearing down", file=sys.stderr)
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)   # let the teardown finish
    except NetnsError as e:
        raise UserError(str(e)) from None
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from latscope.lab.netns import list_namespaces, teardown

    found = list_namespaces(args.prefix)
    left = teardown(args.prefix, kill=args.kill)
    print(f"removed {len(found) - len(left)} namespace(s) with prefix {args.prefix}"
          + (f"; could not remove {left}" if left else ""))
    return 1 if left else 0


def cmd_run(args: argparse.Namespace) -> int:
    from latscope.lab.netns import NetnsError, build
    from latscope.lab.traffic import start_flows

    t = _load(args.file)
    try:
        with build(t, prefix=args.prefix) as net:
            net.wait_all_reachable()
            print(f"running {len(t.flows)} flow(s)", file=sys.stderr)
            runs = start_flows(net, duration_s=args.duration)
            results = [r.wait(timeout=args.duration + 60) for r in runs]
    except NetnsError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            rx, tx = r["receiver"], r["sender"]
            print(f"{r['flow']}: sent {tx['bytes']} B, received {rx['bytes']} B in "
                  f"{rx['elapsed_s']:.2f} s = {rx['throughput_bps'] / 1e6:.2f} Mbit/s")
    return 0
