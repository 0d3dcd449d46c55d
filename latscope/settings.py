"""Config file + topology + flags -> the typed settings every command runs with.

One resolver, so every command reads its inputs the same way, in one order of precedence:
a flag wins over the topology, which wins over the config file (the original conf directory
plus ``latscope.yaml``), which wins over the defaults. Every value a topology knows (host
names, namespaces, the manager's name, sync addresses and devices, injected clocks and the
drift epoch the built namespaces carry) is taken from it, so commands started by hand
against one topology agree without being told twice. Nothing here depends on another
command having run first.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from latscope import log, paths
from latscope.config import Config, ConfigError
from latscope.config import load as _load
from latscope.errors import UserError
from latscope.kafka import DEFAULT_BOOTSTRAP, KafkaSettings

if TYPE_CHECKING:
    from latscope.bpf.clock import ClockInjection
    from latscope.lab.topology import Topology
    from latscope.producers.agent import AgentSettings
    from latscope.stream.flows import FlowResolver
    from latscope.sync.settings import ManagerSettings, ResponderSettings

_log = log.get("settings")


def config(path: str | Path | None) -> Config:
    """The configuration at ``path`` (conf directory or latscope.yaml), else the defaults."""
    if path is None:
        return Config()
    try:
        return _load(path).config
    except ConfigError as e:
        raise UserError(str(e)) from None


def kafka(cfg: Config, bootstrap: str | None = None) -> KafkaSettings:
    """The broker every client of this command talks to, with ``kafka.settings``."""
    return KafkaSettings(bootstrap or cfg.kafka.bootstrap or DEFAULT_BOOTSTRAP,
                         dict(cfg.kafka.settings))


@dataclass(frozen=True)
class BuiltTopology:
    """A topology file and the namespaces ``latscope topology up --prefix`` built from it."""

    topology: Topology
    prefix: str

    def ns(self, host: str) -> str:
        self.topology.host(host)
        return f"{self.prefix}-{host}"

    def covered(self, host: str) -> list[str]:
        """The host's namespace and those of its containers (one agent covers them all)."""
        return [self.ns(h.name) for h in self.topology.hosts
                if h.name == host or (h.role == "container" and h.parent == host)]

    def epoch_ns(self) -> int:
        from latscope.lab.netns import NetnsError, built_epoch

        ns = self.ns(self.topology.manager.name)
        if not Path(f"/run/netns/{ns}").exists():
            raise UserError(f"{self.topology.source}: namespace {ns} does not exist: build it "
                            f"with `latscope topology up {self.topology.source} --prefix "
                            f"{self.prefix}`")
        try:
            return built_epoch(ns)
        except NetnsError as e:
            raise UserError(str(e)) from None

    def clock(self, host: str, epoch_ns: int | None = None) -> ClockInjection:
        """The host's injected clock, with the built topology's drift epoch."""
        from latscope.bpf.clock import ClockInjection

        c = self.topology.clock(host)
        epoch = epoch_ns if epoch_ns is not None else (self.epoch_ns() if c.drift_ppm else 0)
        return ClockInjection(c.offset_ns, c.drift_ppm, epoch)


def topology(path: str | None, prefix: str, host: str | None = None) -> BuiltTopology | None:
    if path is None:
        return None
    from latscope.lab.topology import TopologyError, load_topology

    try:
        topo = load_topology(path)
        if host is not None:
            topo.host(host)
    except (TopologyError, KeyError) as e:
        raise UserError(f"{path}: {e}") from None
    return BuiltTopology(topo, prefix)


def flow_resolver(path: str | Path) -> FlowResolver:
    """The stream's view of a topology: which flow a FlowKey is, the hosts its bytes cross,
    whose clock each container reads, and the reference (manager) host."""
    from latscope.stream.flows import FlowInfo, FlowResolver

    built = topology(str(path), "lsx")
    assert built is not None
    topo = built.topology
    addr_host = {str(a.ip): f.host for f in topo.ifaces() for a in f.addrs}
    flows = {(f.proto, f.dst, f.port): FlowInfo(f.name, tuple(topo.path_hosts(f)))
             for f in topo.flows}
    clock_hosts = {h.name: topo.clock_host(h.name) for h in topo.hosts
                   if topo.clock_host(h.name) != h.name}
    return FlowResolver(addr_host, flows, clock_hosts, topo.manager.name)


def _check_netns(names: list[str | None]) -> None:
    for ns in names:
        if ns and not Path(f"/run/netns/{ns}").exists():
            raise UserError(f"--netns {ns}: no such network namespace (/run/netns/{ns})")


# ---- the sync session token ---------------------------------------------------------------

def default_token_file() -> Path:
    return paths.cache_dir() / "sync" / "token"


def sync_token(token: str | None, token_file: str | None) -> int:
    """The session token: --token, $LATSCOPE_SYNC_TOKEN, or the token file. Whichever of the
    manager and the responders starts first creates the file (mode 0600), so neither
    depends on the other having run."""
    raw = token or os.environ.get("LATSCOPE_SYNC_TOKEN")
    source = "--token" if token else "LATSCOPE_SYNC_TOKEN"
    if raw is None:
        path = Path(token_file or default_token_file()).expanduser()
        source = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(f"{secrets.randbits(63):016x}\n")
            _log.info("new session token in %s", path)
        raw = path.read_text().strip()
    try:
        value = int(raw, 16)
    except ValueError:
        raise UserError(f"{source}: sync token {raw[:20]!r}: expected up to 16 hex digits") \
            from None
    if not 0 < value < 1 << 64:
        raise UserError(f"{source}: sync token: expected a non-zero 64-bit hex value")
    return value


def skip_hooks(tokens: list[str] | None) -> tuple[str, ...]:
    """Hook candidates forced off (``--skip-hook``), each naming a real candidate."""
    from latscope.schemas.points import unknown_skip_tokens

    out = tuple(tokens or ())
    if bad := unknown_skip_tokens(out):
        raise UserError(f"--skip-hook: {', '.join(bad)} names no hook candidate "
                        "(see `latscope doctor`: a hook, one of its parts, or a kind like tp_btf)")
    return out


# ---- per command -----------------------------------------------------------------------------

def agent(args: argparse.Namespace) -> AgentSettings:
    from latscope.bpf.clock import ClockInjection
    from latscope.producers.agent import AgentSettings
    from latscope.schemas.points import DEFAULT_POINTS

    cfg = config(args.config)
    size, ports, filt = cfg.sampling.size, list(cfg.sampling.ports), cfg.sampling.filter_retrans
    netns: list[str | None] = list(args.netns or [])
    built = topology(args.topology, args.prefix, args.host)
    clock = ClockInjection()
    if built is not None:
        netns = netns or list(built.covered(args.host))
        clock = built.clock(args.host, args.epoch_ns)
        if not args.config:
            s = built.topology.sampling
            size, ports, filt = s.size, list(s.ports), bool(s.filter_retrans)
    points = DEFAULT_POINTS
    if args.points:
        points = tuple(p.strip() for p in args.points.split(",") if p.strip())
        bad = [p for p in points if p not in DEFAULT_POINTS]
        if bad or not points:
            raise UserError(f"--points: unknown point(s) {', '.join(bad) or '(none given)'}: "
                            f"expected a comma-separated subset of {', '.join(DEFAULT_POINTS)}")
    _check_netns(netns)
    clock = ClockInjection(
        args.offset_ns if args.offset_ns is not None else clock.offset_ns,
        args.drift_ppm if args.drift_ppm is not None else clock.drift_ppm,
        args.epoch_ns if args.epoch_ns is not None else clock.epoch_ns)
    try:
        return AgentSettings(
            host=args.host, netns=netns or [None], clock=clock,
            sample_size=args.sample_size if args.sample_size is not None else size,
            ports=args.port or ports, filter_retrans=filt,
            linger_ms=cfg.agent.linger_ms,
            join_window_ms=args.join_window_ms or cfg.agent.join_window_ms,
            hold_ms=args.hold_ms or cfg.agent.hold_ms,
            rate_cap_per_s=args.rate_cap or cfg.agent.rate_cap_per_s,
            ring_buffer_bytes=cfg.agent.ring_buffer_bytes,
            kafka=kafka(cfg, args.bootstrap), xdp=args.xdp, points=points,
            skip_hooks=skip_hooks(args.skip_hook),
            **({"topic": args.topic} if args.topic else {}))
    except ValueError as e:
        raise UserError(f"--hold-ms / agent.hold_ms: {e}") from None


def sync_manager(args: argparse.Namespace) -> ManagerSettings:
    from latscope.schemas.records import TOPIC_CLOCK, TOPIC_CLOCK_SAMPLES
    from latscope.sync.manager import Target
    from latscope.sync.responder import DEFAULT_PORT
    from latscope.sync.settings import ManagerSettings

    cfg = config(args.config) if args.config else None
    built = topology(args.topology, args.prefix)
    port = args.port or DEFAULT_PORT
    targets = []
    for spec in args.host or []:
        name, sep, addr = spec.partition("=")
        if not sep or not name or not addr:
            raise UserError(f"--host {spec!r}: expected NAME=ADDRESS")
        targets.append(Target(name, addr, port))
    if not targets and built is not None:
        targets = [Target(h, str(a), port) for h, a in built.topology.sync_targets().items()]
    if not targets and cfg is not None and cfg.ping is not None:
        names = {a: s.hostname for s in cfg.servers for a in (s.address, *s.other_address)}
        targets = [Target(names.get(t.address, t.address), t.address, args.port or t.port)
                   for t in cfg.ping.servers]
    if not targets:
        raise UserError("no hosts to synchronise: give --host NAME=ADDRESS, --topology, or "
                        "--config with ping_info.yaml (or a `ping:` section)")
    name = args.name or (built.topology.manager.name if built is not None else None) or (
        cfg.management.hostname if cfg and cfg.management else "manager")
    netns = args.netns or (built.ns(built.topology.manager.name) if built is not None else None)
    _check_netns([netns])
    interval = args.interval or (cfg.time_sync.interval_s if cfg else 1.0)
    return ManagerSettings(
        targets=targets, token=sync_token(args.token, args.token_file), name=name, netns=netns,
        interval_s=interval, burst=args.burst,
        # The window must span several rounds: one minimum-delay sample per round is fitted.
        window_s=args.window or max(60.0, 16 * interval),
        kafka=None if args.no_kafka else kafka(cfg or Config(), args.bootstrap),
        models_topic=args.topic or TOPIC_CLOCK,
        samples_topic=args.samples_topic or TOPIC_CLOCK_SAMPLES)


def sync_responder(args: argparse.Namespace) -> ResponderSettings:
    from latscope.sync.responder import DEFAULT_PORT
    from latscope.sync.settings import ResponderSettings

    cfg = config(args.config) if args.config else None
    built = topology(args.topology, args.prefix, args.host)
    allow = list(args.allow or [])
    addresses = list(args.address or [])
    ifname, netns, port = args.ifname, args.netns, args.port
    clock = None
    if built is not None:
        if args.host is None:
            raise UserError("--topology needs --host: which of its hosts this responder serves")
        t = built.topology
        from latscope.lab.netns import iface_name

        addr = str(t.sync_addr(args.host))
        ifname = ifname or iface_name(t, built.prefix, args.host, addr)
        netns = netns or built.ns(args.host)
        allow = allow or [str(t.source_addr(t.manager.name, addr))]
        addresses = addresses or [addr]
        clock = built.clock(args.host, args.epoch_ns)
    if cfg is not None and cfg.ping is not None:
        allow = allow or [cfg.ping.management_server]
        port = port or (cfg.ping.servers[0].port if cfg.ping.servers else None)
    if not allow:
        raise UserError("no manager address to answer: give --allow ADDRESS, --topology with "
                        "--host, or --config with ping_info.yaml (management_server)")
    if not ifname:
        raise UserError("no sync interface: give --ifname, or --topology with --host")
    _check_netns([netns])
    from latscope.bpf.clock import ClockInjection, monotonic_ns

    base = clock or ClockInjection()
    injection = ClockInjection(
        args.offset_ns if args.offset_ns is not None else base.offset_ns,
        args.drift_ppm if args.drift_ppm is not None else base.drift_ppm,
        args.epoch_ns if args.epoch_ns is not None else (base.epoch_ns if clock else monotonic_ns()))
    return ResponderSettings(ifname=ifname, token=sync_token(args.token, args.token_file),
                             allow=allow, netns=netns, port=port or DEFAULT_PORT,
                             injection=injection, addresses=addresses or None,
                             xdp_mode=args.xdp_mode)
