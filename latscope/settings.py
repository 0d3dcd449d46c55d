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
    from latscope.sync.keys import SyncKeys
    from latscope.sync.responder import Responder
    from latscope.sync.settings import ManagerSettings

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
    """The broker every client of this command talks to, with ``kafka.settings`` and the
    SASL password from ``kafka.password_file`` or the environment."""
    try:
        settings = cfg.kafka.client_settings()
    except ConfigError as e:
        raise UserError(str(e)) from None
    return KafkaSettings(bootstrap or cfg.kafka.bootstrap or DEFAULT_BOOTSTRAP, settings)


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
        return [self.ns(host), *self.containers(host)]

    def containers(self, host: str) -> dict[str, str]:
        """The namespaces of the host's containers -> their names (their records' host)."""
        return {self.ns(h.name): h.name for h in self.topology.hosts
                if h.role == "container" and h.parent == host}

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
    """The stream's view of a topology: which flow a FlowKey is, the hosts its bytes cross
    (declared flows, and the routes of any other between its addresses), whose clock each
    container reads, and the reference (manager) host."""
    from latscope.stream.flows import FlowInfo, FlowResolver

    built = topology(str(path), "lsx")
    assert built is not None
    topo = built.topology
    addr_host = {str(a.ip): f.host for f in topo.ifaces() for a in f.addrs}
    flows = {(f.proto, f.dst, f.port): FlowInfo(f.name, tuple(topo.path_hosts(f)))
             for f in topo.flows}
    clock_hosts = {h.name: topo.clock_host(h.name) for h in topo.hosts
                   if topo.clock_host(h.name) != h.name}
    # Every other flow between two of its addresses (reply directions, ephemeral ports):
    # the hosts the topology routes it through, from its source's host.
    routes: dict[tuple[str, str], tuple[str, ...]] = {}
    for h in topo.hosts:
        for addr, owner in addr_host.items():
            if owner == h.name:
                continue
            try:
                routes[(h.name, addr)] = tuple(hop.host for hop in topo.path(h.name, addr))
            except ValueError:   # no route from there: the records will tell
                continue
    return FlowResolver(addr_host, flows, clock_hosts, topo.manager.name, routes)


def filter_retrans(flag: int | None, topology_path: str | None, cfg: Config | None) -> bool:
    """sampling.filter_retrans as the agents read it: the flag, else the topology's when its
    file gives a sampling section (or there is no config), else the config's."""
    if flag is not None:
        return bool(flag)
    built = topology(topology_path, "lsx")
    if built is not None and ("sampling" in built.topology.model_fields_set or cfg is None):
        return bool(built.topology.sampling.filter_retrans)
    return (cfg or Config()).sampling.filter_retrans


def fleet_view(cfg: Config) -> FlowResolver | None:
    """The stream's view of the servers in connect_info: every address a server has
    (``address``, ``other_address``, a container entry's ``container_address``) names it,
    a container reads its host's clock (``iscontainer``: the same kernel) while a VM keeps
    its own (``isvm``), and the management server is the reference. No flows are declared:
    each address pair's path is learned from its records (stream/flows.py). None without
    servers."""
    from latscope.stream.flows import FlowResolver

    if not cfg.servers:
        return None
    addr_host = {a: s.hostname for s in cfg.servers
                 for a in (s.address, *s.other_address, *s.container_address)}
    clock_hosts = {}
    for s in cfg.servers:
        parent = cfg.server(s.iscontainer) if s.iscontainer is not None else None
        if parent is not None:
            clock_hosts[s.hostname] = parent.hostname
    manager = cfg.management.hostname if cfg.management else None
    return FlowResolver(addr_host, {}, clock_hosts, manager)


def _check_netns(names: list[str | None]) -> None:
    from latscope.bpf.netns import path

    for ns in names:
        if ns and not Path(path(ns)).exists():
            raise UserError(f"--netns {ns}: no such network namespace ({path(ns)})")


@dataclass(frozen=True)
class Coverage:
    """The namespaces an agent covers, the names their records go under (a container's),
    and the addresses no namespace held (a stopped container: the agent runs without it
    and says so)."""

    netns: list[str | None]
    names: dict[str, str]
    uncovered: list[str]


def covering(netns: list[str | None], cover: list[str]) -> Coverage:
    """``netns`` plus the namespaces holding the ``cover`` addresses (a host's containers,
    found when the agent starts), each once. ``NAME=ADDR`` names the namespace holding ADDR
    (a container's hostname): its records go under NAME. A name is given only to a
    namespace the address brought in, never to one ``netns`` covers already (a container
    on the host's own network is the host)."""
    from latscope.bpf.netns import holding, inode_of

    out = list(netns or [None])
    named = [c.rpartition("=")[::-2] for c in cover]    # (address, name or "")
    if not named:
        return Coverage(out, {}, [])
    bad = [c for c, (a, _) in zip(cover, named, strict=True) if not a]
    if bad:
        raise UserError(f"--cover-address {bad[0]}: expected ADDR or NAME=ADDR")
    found = holding([a for a, _ in named])
    have = {inode_of(ns) for ns in out}
    names: dict[str, str] = {}
    for addr, name in named:
        ref = found.get(addr)
        if ref is None:
            continue
        ino = inode_of(ref)
        if ino not in have:
            have.add(ino)
            out.append(ref)
            if name and ref:
                names[ref] = name
    return Coverage(out, names, [a for a, _ in named if a not in found])


# ---- the sync key -------------------------------------------------------------------------

def default_key_file() -> Path:
    return paths.cache_dir() / "sync" / "key"


def sync_keys(key_file: str | None, period_s: float | None = None) -> SyncKeys:
    """The sync secret (sync/SECURITY.md): ``--key-file`` if given, else
    $LATSCOPE_SYNC_KEY, else the default key file. Never from argv. A key file must be
    mode 0600 or stricter. When the key file (given or default) does not exist, whichever
    of the manager and the responders starts first creates it, so neither depends on the
    other having run. Errors name the file or variable, never the key."""
    from latscope.sync.keys import (
        DEFAULT_PERIOD_S,
        ENV_VAR,
        KeyFileError,
        SyncKeys,
        create_key_file,
        read_key_file,
    )

    period = period_s if period_s is not None else DEFAULT_PERIOD_S
    if period <= 0:
        raise UserError(f"--key-period {period}: expected a positive number of seconds")
    try:
        if key_file is None and os.environ.get(ENV_VAR) is not None:
            return SyncKeys.from_hex(os.environ[ENV_VAR], ENV_VAR, period)
        path = Path(key_file or default_key_file()).expanduser()
        if not path.exists() and create_key_file(path):
            _log.info("new sync key in %s", path)
        return read_key_file(path, period)
    except KeyFileError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"sync key file {key_file or default_key_file()}: {e.strerror}") \
            from None


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
    names: dict[str, str] = {}
    built = topology(args.topology, args.prefix, args.host)
    clock = ClockInjection()
    if built is not None:
        if not netns:
            netns, names = list(built.covered(args.host)), built.containers(args.host)
        clock = built.clock(args.host, args.epoch_ns)
        # The topology's sampling wins over the config's when the file gives one (a config
        # may hold only the kafka section, e.g. a secure stack's client config).
        if "sampling" in built.topology.model_fields_set or not args.config:
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
    cov = covering(netns, args.cover_address or [])
    clock = ClockInjection(
        args.offset_ns if args.offset_ns is not None else clock.offset_ns,
        args.drift_ppm if args.drift_ppm is not None else clock.drift_ppm,
        args.epoch_ns if args.epoch_ns is not None else clock.epoch_ns)
    try:
        return AgentSettings(
            host=args.host, netns=cov.netns, names=names | cov.names,
            uncovered=cov.uncovered, clock=clock,
            sample_size=args.sample_size if args.sample_size is not None else size,
            ports=args.port or ports, filter_retrans=filt,
            linger_ms=cfg.agent.linger_ms,
            join_window_ms=args.join_window_ms or cfg.agent.join_window_ms,
            hold_ms=args.hold_ms or cfg.agent.hold_ms,
            rate_cap_per_s=args.rate_cap or cfg.agent.rate_cap_per_s,
            budget_records_per_s=(args.budget if args.budget is not None
                                  else cfg.agent.budget_records_per_s),
            ring_buffer_bytes=cfg.agent.ring_buffer_bytes,
            kafka=kafka(cfg, args.bootstrap), xdp=args.xdp, points=points,
            resend_mark=args.resend_mark or cfg.agent.resend_mark,
            udp_socket_points=args.udp_socket_points or cfg.agent.udp_socket_points,
            skip_hooks=skip_hooks(args.skip_hook),
            metrics_port=(args.metrics_port if args.metrics_port is not None
                          else cfg.agent.metrics_port),
            flow_stats=not args.no_flow_stats,
            native=cfg.agent.native and not args.python_path,
            interval_s=args.interval or cfg.sampling.interval,
            **({"topic": args.topic} if args.topic else {}),
            **({"stride_topic": args.stride_topic} if args.stride_topic else {}),
            **({"flow_stats_topic": args.flow_stats_topic}
               if args.flow_stats_topic else {}))
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
        targets=targets, keys=sync_keys(args.key_file, args.key_period), name=name, netns=netns,
        interval_s=interval, burst=args.burst,
        # The window must span several rounds: one minimum-delay sample per round is fitted.
        window_s=args.window or max(60.0, 16 * interval),
        kafka=None if args.no_kafka else kafka(cfg or Config(), args.bootstrap),
        models_topic=args.topic or TOPIC_CLOCK,
        samples_topic=args.samples_topic or TOPIC_CLOCK_SAMPLES)


def sync_responder(args: argparse.Namespace) -> Responder:
    """The responder a command line describes, not started yet (its fields are its settings)."""
    from latscope.sync.responder import DEFAULT_PORT, Responder

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
    return Responder(ifname, sync_keys(args.key_file, args.key_period), allow, netns=netns,
                     port=port or DEFAULT_PORT, injection=injection,
                     addresses=addresses or None, xdp_mode=args.xdp_mode)
