"""The host agent: probes -> ring buffer (batches) -> sampled bytes -> one record per sampled
byte and host -> Kafka. One agent covers a set of network namespaces (a host and its
containers); on one machine each simulated host runs its own agent with its clock injection.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from latscope import log
from latscope.bpf import libbpf
from latscope.bpf.clock import ClockInjection
from latscope.bpf.netns import inode_of, ip_json, nsid_of, run_in_netns
from latscope.kafka import KafkaSettings
from latscope.producers import layout
from latscope.producers.flow_stats import FlowStatsCollector, FlowStatsLoop, flow_of
from latscope.producers.group_set import GroupSet
from latscope.producers.grouping import FlowT, Grouper, Hit, Record
from latscope.producers.native_path import NativeGrouper
from latscope.producers.probes import Probes
from latscope.producers.publish import LayerEventPublisher
from latscope.producers.sampling import effective_size, sampled_bytes, udp_modulus
from latscope.producers.stride_sync import StrideLoop
from latscope.schemas.points import DEFAULT_POINTS
from latscope.schemas.records import TOPIC_FLOW_STATS, TOPIC_LAYER_EVENTS, stride_topic
from latscope.schemas.sampling import JOIN_WINDOW_MS

_log = log.get("producers.agent")
_F = layout.FIELD_INDEX
# Field positions in an unpacked event (from latscope.h, never hard-coded).
(_TS, _NETNS, _SADDR, _DADDR, _SEQ, _LEN, _IFINDEX, _CPU, _SPORT, _DPORT, _POINT, _FAMILY,
 _PROTO_F, _FLAGS, _DEV) = (_F[n] for n in (
    "ts_ns", "netns", "saddr", "daddr", "seq", "len", "ifindex", "cpu", "sport", "dport",
    "point", "family", "proto", "flags", "dev"))
_WAIT = _F["wait_" + layout.WAIT_CAUSES[0]]          # the first of the wait_* fields
_WAIT_END = _WAIT + len(layout.WAIT_CAUSES)
_PROTO = {6: "tcp", 17: "udp"}
# The main loop's wait for the ring buffer (the probes wake it earlier once a quarter of the
# ring is waiting): each turn costs a wakeup and the loop's overhead whatever it carries,
# so turns are few (docs/cpu-budget.md).
POLL_MS = 100
# The wait once a turn read nothing and nothing is open (no sampled byte waits for hits):
# the probes wake the loop with the first record it has not read (Probes.set_idle), so the
# wait only bounds how late a stop is seen. Only after an empty turn: under steady traffic
# the loop would otherwise be woken by nearly every sampled byte (records flush as soon as
# their last point is reached), costing far more wakeups than the turns it saves.
IDLE_POLL_MS = 500
# How long librdkafka gathers messages before a produce request. The records' own batching
# is the publisher's (a partition's records wait until the oldest is due: publish.py); this
# only gathers what one turn produces.
KAFKA_LINGER_MS = 20
# From a record's flush, or the time it is due in the publisher, to its arrival in Kafka:
# the turn that sees it (POLL_MS), librdkafka's linger, and a margin for a loaded agent and
# broker. A record is due this long before the join window closes on its first hit.
PUBLISH_SLACK_MS = POLL_MS + KAFKA_LINGER_MS + 330
_XDP = layout.POINT_NAMES_REV["xdp"]
_NO_DEV = object()     # not yet in the device-name cache (None is a cached "no device")
FLOW_CACHE = 100_000   # raw flow keys cached (a cache of flow_of, not a flow table)


@dataclass
class AgentSettings:
    host: str
    netns: list[str | None] = field(default_factory=lambda: [None])
    uncovered: list[str] = field(default_factory=list)   # --cover-address no namespace held
    # A covered namespace -> the name its records are published under (a container's, so
    # the stream names the host -> container hop: group_set.py); the others under host.
    names: dict[str, str] = field(default_factory=dict)
    clock: ClockInjection = field(default_factory=ClockInjection)
    sample_size: int = 72400
    ports: list[int] = field(default_factory=list)
    filter_retrans: bool = True
    linger_ms: int = 50
    # The stream worker's join window plus its allowed lateness (`latscope stream --window
    # --lateness`; the default: schemas/sampling.py): it joins a byte's records from every host that
    # reach Kafka within this of the first one; a later one is dropped as late.
    join_window_ms: int = JOIN_WINDOW_MS
    # A TCP byte still inside the host (qdisc, socket queue, a sendmsg not yet returned)
    # waits this long for its next hit before it is published incomplete. None: the longest
    # the join window allows (max_hold_ms); longer is refused: its record could only arrive
    # after the window closed, so the byte would be published in halves.
    hold_ms: int | None = None
    max_open: int = 500_000      # sampled bytes grouped at once (memory bound; evictions counted)
    rate_cap_per_s: int = 200_000
    # Records/s this host may publish; past it the fleet's stride level rises (sampling
    # size << level on every host at once: stride_level.py). 0: no budget, the size holds.
    budget_records_per_s: int = 0
    stride_topic: str | None = None   # None: the one of `topic` (records.stride_topic)
    ring_buffer_bytes: int = 8 << 20
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topic: str = TOPIC_LAYER_EVENTS
    points: tuple[str, ...] = DEFAULT_POINTS
    xdp: bool = False            # opt-in xdp point (changes the receive path it measures)
    resend_mark: bool = False    # opt-in: tcp_tx adds the resend mark's 8 option bytes
    # opt-in: UDP's socket points (sock_send, sock_recv), whose sys_enter hooks tax every
    # system call on the host (schemas/points.py SYSCALL_HOOKS)
    udp_socket_points: bool = False
    # Per-flow context every interval (sampling_info.interval; the stream's window length)
    # on flow_stats_topic: throughput, resends, TCP state, owning process (flow_stats.py).
    flow_stats: bool = True
    interval_s: float = 1.0
    flow_stats_topic: str = TOPIC_FLOW_STATS
    # Hook candidates forced off (odd kernels, tests): a hook name, one of its parts
    # (tp_btf/net_dev_queue) or a kind (tp_btf); the next candidate serves (schemas/points.py).
    skip_hooks: tuple[str, ...] = ()
    metrics_port: int | None = None   # Prometheus text endpoint (none: not served)
    # The data path in C (producers/native_path.py): the same records and counters at a
    # fraction of the CPU; False: the Python path (grouping.Grouper, the reference).
    native: bool = True

    def __post_init__(self) -> None:
        if self.hold_ms is not None and not 0 < self.hold_ms <= self.max_hold_ms:
            raise ValueError(
                f"hold {self.hold_ms} ms cannot be joined: the stream worker joins a byte's "
                f"records within {self.join_window_ms} ms (join_window_ms: its --window plus "
                f"--lateness), so the hold may be at most {self.max_hold_ms} ms (that, less "
                f"the linger {self.linger_ms} ms and {PUBLISH_SLACK_MS} ms to publish); "
                "lower the hold or widen the join window on both sides")
        if self.max_open < 1:    # the grouping evicts the oldest open byte, never the newest
            raise ValueError(f"max_open {self.max_open}: at least 1 sampled byte must be "
                             "grouped at once")
        if self.max_hold_ms < self.linger_ms:
            raise ValueError(f"join window {self.join_window_ms} ms: too short for a linger of "
                             f"{self.linger_ms} ms and {PUBLISH_SLACK_MS} ms to publish")

    @property
    def max_hold_ms(self) -> int:
        """The longest hold whose records still reach the worker inside its join window."""
        return self.join_window_ms - self.linger_ms - PUBLISH_SLACK_MS

    @property
    def hold(self) -> int:
        """The hold in effect, ms."""
        return self.max_hold_ms if self.hold_ms is None else self.hold_ms


@dataclass
class AgentCounters:
    hits: int = 0              # point hits (ranges) read from the ring buffer
    sampled_hits: int = 0      # (point, sampled byte) pairs after expanding ranges
    batches: int = 0
    idle_waits: int = 0        # long waits with nothing open (IDLE_POLL_MS)
    idle_woken: int = 0        # ... of which the probes' wakeup ended


def device_names(netns: list[str | None]) -> dict[tuple[int, int], str]:
    """(netns inode, ifindex) -> device name, for the XDP point (its hook has no device)."""
    return {(inode_of(ns), d["ifindex"]): d["ifname"]
            for ns in netns for d in ip_json(ns, "-d", "link", "show")}


def _covered_nsids(ns: str | None, netns: list[str | None]) -> set[int]:
    """The nsids namespace ``ns`` gives the other covered namespaces (a veth's
    ``link_netnsid`` there names its peer's namespace, named or not)."""
    def ids() -> set[int]:
        return {i for other in netns if other != ns
                for i in [nsid_of(other)] if i is not None}
    return run_in_netns(ns, ids)


def exit_devices(netns: list[str | None]) -> set[tuple[int, int]]:
    """(netns inode, ifindex) of devices that leave the covered namespaces: a veth whose peer
    lives in a namespace we do not cover, or a device without a peer (a NIC)."""
    out: set[tuple[int, int]] = set()
    for ns in netns:
        covered = _covered_nsids(ns, netns)
        inode = inode_of(ns)
        for dev in ip_json(ns, "-d", "link", "show"):
            kind = dev.get("linkinfo", {}).get("info_kind")
            if dev["ifname"] == "lo" or kind in ("bridge", "dummy", "tun", "ipip", "sit"):
                continue
            if "link_netnsid" in dev:
                if dev["link_netnsid"] in covered:
                    continue
            elif kind == "veth":
                continue      # both ends in this namespace
            out.add((inode, dev["ifindex"]))
    return out


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Agent:
    """`clock`: monotonic ns for the grouping and a batch without a read time (tests)."""

    def __init__(self, s: AgentSettings, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.s = s
        self.counters = AgentCounters()
        self._clock = clock
        self._size = effective_size(s.sample_size)
        self._stride = self._size      # size << the stride level in effect
        self._grouped_stride = self._size   # ... as far as the open groups know (follow_stride)
        # name -> the covered namespaces published under it (the host's first)
        self.groups: dict[str, list[str | None]] = {s.host: []}
        for ns in s.netns:
            self.groups.setdefault(s.names.get(ns or "", s.host), []).append(ns)
        # One path, chosen here: records out of it are Records (Python) or (flow id, Avro
        # body) pairs (native), published by the matching publisher call (start()).
        self.members = {name: self._grouper(name) for name in self.groups}
        self.grouper: Grouper | NativeGrouper | GroupSet = self.members[s.host]
        if len(self.members) > 1:
            self.grouper = GroupSet({name: (g, {inode_of(ns) for ns in self.groups[name]})
                                     for name, g in self.members.items()}, s.host)
        self._group: Callable[[list[bytes], list[Any], int], int] = (
            self.grouper.process if s.native else self._group_py)
        self.probes = Probes(netns=list(s.netns), sample_size=s.sample_size, ports=s.ports,
                             clock=s.clock, ring_buffer_bytes=s.ring_buffer_bytes,
                             points=s.points, xdp=s.xdp, resend_mark=s.resend_mark,
                             udp_socket_points=s.udp_socket_points, skip_hooks=s.skip_hooks,
                             flow_stats=s.flow_stats)
        self.publisher: LayerEventPublisher | None = None
        self.flow_stats: FlowStatsLoop | None = None
        self.stride: StrideLoop | None = None
        self.ring: libbpf.RingBuffer | None = None
        self._flows: dict[tuple, FlowT] = {}
        self._devs: dict[bytes, str | None] = {}
        self._xdp_names: dict[tuple[int, int], str] = {}
        self.started_at = 0.0
        self.ready = threading.Event()
        self._rb_drops = 0
        self._overrun_until = 0

    def _grouper(self, name: str) -> Grouper | NativeGrouper:
        s = self.s
        grouper = Grouper(name, linger_ns=s.linger_ms * 1_000_000,
                          hold_ns=s.hold * 1_000_000, max_open=s.max_open,
                          rate_cap_per_s=s.rate_cap_per_s, filter_retrans=s.filter_retrans,
                          clock=self._clock)
        return NativeGrouper(grouper, self._size, FLOW_CACHE) if s.native else grouper

    # -- lifecycle
    def start(self) -> dict[str, str]:
        if self.s.sample_size == 0:
            _log.warning("sampling size 0 (every packet): sampling every %d bytes (one MSS)",
                         self._size)
        exits = exit_devices(list(self.s.netns))
        for name, g in self.members.items():   # each name's own way out (into a container)
            g.exit_devices = exits if len(self.members) == 1 else exit_devices(self.groups[name])
        self.set_xdp_names(device_names(list(self.s.netns)) if self.s.xdp else {})
        wait_ms = self.s.join_window_ms - PUBLISH_SLACK_MS
        self.publisher = LayerEventPublisher(self.s.kafka, self.s.topic,
                                             linger_ms=KAFKA_LINGER_MS,
                                             wait_ns=wait_ms * 1_000_000)
        self._publish = (self.publisher.publish_encoded if self.s.native
                         else self.publisher.publish_all)
        self.probes.load()
        if self.s.budget_records_per_s:   # the fleet's level before the first byte
            self.stride = StrideLoop(self.s.kafka, self.s.host, self.s.budget_records_per_s,
                                     self._size, lambda: self.grouper.counters.records,
                                     self.set_stride_level, self.publisher.producer,
                                     self.s.stride_topic or stride_topic(self.s.topic))
            self.stride.prime()
        attached = self.probes.attach()
        # a record lacking one of these on its way is flagged incomplete (grouping._gaps)
        self.grouper.points = frozenset(attached)
        # a datagram waits for its read only where the read is seen
        self.grouper.udp_reads = self.probes.udp_reads
        self.ring = libbpf.RingBuffer(self.probes.events_fd)
        if self.s.flow_stats:
            netns = list(self.s.netns)
            self.flow_stats = FlowStatsLoop(FlowStatsCollector(
                self.s.host, self.probes.flow_stats_map, netns, self.s.ports,
                exits, device_names(netns), self.s.interval_s),
                self.s.kafka, self.publisher.producer, self.s.flow_stats_topic)
            self.flow_stats.start()
        if self.stride is not None:   # measures from now on
            self.stride.start()
        self.started_at = time.time()
        self.ready.set()
        _log.info("agent %s: %d points attached in %d namespace(s); hold %d ms (join window "
                  "%d ms)", self.s.host, len(attached), len(self.s.netns), self.s.hold,
                  self.s.join_window_ms)
        return attached

    def run(self, stop: threading.Event) -> None:
        """Read, group and publish until stop is set; then detach, drain and flush."""
        assert self.ring is not None and self.publisher is not None
        out: list[Any] = []      # Records or (flow id, body) pairs: the path's
        last_expire = 0
        last_hits = -1           # the hit counter before the last turn's read
        try:
            while not stop.is_set():
                if self.counters.hits == last_hits and self._idle():
                    woken = self.ring.wait(IDLE_POLL_MS)
                    self.probes.set_idle(False)
                    self.counters.idle_waits += 1
                    self.counters.idle_woken += woken
                else:
                    self.ring.wait(POLL_MS)
                last_hits = self.counters.hits
                # Idle times are judged at the read: a hit committed later is unread, however
                # long this thread then takes (measured: a record split around a stall of
                # more than the hold, between reading a byte's hits and expiring its group).
                now = self._clock()
                self._take(out, now)
                self.follow_stride(out)
                if now - last_expire > 5_000_000:
                    self.grouper.expire(out, now)
                    last_expire = now
                self._publish(out, now, stop)    # and what waited there and is due now
                out.clear()
                self.publisher.poll()
        finally:
            self.shutdown()

    def _idle(self) -> bool:
        """Nothing open and nothing waiting to be produced: ask the probes to wake the loop
        with their next record, unless one came already (it may have been submitted before
        they knew)."""
        if self.grouper.open_groups or self.publisher.waiting:
            return False
        self.probes.set_idle(True)
        if self.ring.pending():
            self.probes.set_idle(False)
            return False
        return True

    def _watch_overrun(self, now: int, read: bool) -> None:
        """Once the ring buffer lost hits (its drop counter moved), records come out
        incomplete for a hold and two lingers: a byte whose lost hits came first (a local
        sender's, on loopback) could otherwise complete from the hits that arrived. The
        counter is read after a batch that brought hits (a hit written after a loss is
        read with the loss counted); an empty read brought none that could complete."""
        if read:
            drops = self.probes.ring_drops()
            if drops != self._rb_drops:
                self._rb_drops = drops
                self._overrun_until = now + (self.s.hold + 2 * self.s.linger_ms) * 1_000_000
        over = now < self._overrun_until
        if over != self.grouper.overrun:
            self.grouper.overrun = over

    def shutdown(self, flush_timeout: float = 10.0) -> None:
        """Detach every probe first (nothing new arrives), then drain, flush, publish; what
        Kafka has not acknowledged within flush_timeout is counted as failed."""
        if self.ring is None:     # start() did not finish
            if self.stride is not None:
                self.stride.stop()
            self.probes.close()
            return
        self.probes_counters = self.probes.kernel_counters()
        self.points_attached = dict(self.probes.attached)   # the final status still says
        for obj in self.probes.all_objects():
            obj.detach_all()
        # their last messages go out with the records' (one producer, one flush below)
        sharing = [p for p in (self.flow_stats, self.stride) if p is not None]
        for part in sharing:
            part.stop()
        out: list[Any] = []
        self._take(out, self._clock())
        self.grouper.flush_all(out)
        assert self.publisher is not None
        deadline = threading.Event()
        timer = threading.Timer(flush_timeout, deadline.set)
        timer.start()
        try:
            self._publish(out, None, deadline)     # everything, due or not
            left = self.publisher.flush(max(0.1, flush_timeout / 2), deadline)
        finally:
            timer.cancel()
        if left:
            _log.warning("%d layer events still undelivered at exit", left)
        for part in sharing:
            part.close()
        self.publisher.close()
        self.ring.close()
        self.ring = None
        self.probes.close()

    # -- the data path
    def set_stride_level(self, level: int) -> None:
        """Sample size << level from now on: the grouping first (a range the probes took
        at the old stride holds no byte of a coarser one), then the probes (once loaded).
        Called on the stride thread; the data path's thread then flushes what the new
        stride leaves without its next hits (follow_stride). `_stride` is set once the C
        path expands at it, so a flush it prompts never precedes that."""
        stride = self._size << level
        if isinstance(self.grouper, NativeGrouper | GroupSet):
            self.grouper.set_size(stride)
        self._stride = stride
        if self.probes.objects:
            self.probes.set_sampling(stride, udp_modulus(self.s.sample_size) << level)

    def follow_stride(self, out: list[Any]) -> None:
        """After a read: once the stride rose, the groups of TCP bytes off it get no further
        hit (ranges are expanded at the new stride); flush them now (Grouper.restride), where
        a byte queued in its socket would otherwise wait queued_ns for hits that cannot
        come. A finer stride leaves every open byte on it."""
        stride = self._stride
        if stride != self._grouped_stride:
            self._grouped_stride = stride
            self.grouper.restride(stride, out)

    def set_xdp_names(self, names: dict[tuple[int, int], str]) -> None:
        """(netns inode, ifindex) -> device name: the XDP point's hook has no device."""
        self._xdp_names = names
        if isinstance(self.grouper, NativeGrouper | GroupSet):
            self.grouper.set_xdp_names(names)

    def _flow(self, fkey: tuple) -> FlowT:
        """The flow tuple of an event's raw addresses/ports (cached: few flows, many events)."""
        flow: FlowT = flow_of(*fkey)
        if len(self._flows) > FLOW_CACHE:
            self._flows.clear()
        self._flows[fkey] = flow
        return flow

    def _take(self, out: list[Any], now: int) -> None:
        """Group what the ring buffer holds, read at `now`: the native path in place, the
        Python path from a copy. The drop counter is read once the batch's end is known
        and before it is grouped (_watch_overrun)."""
        assert self.ring is not None
        if self.s.native:
            start, end = self.ring.span()
            self._watch_overrun(now, end != start)
            if end != start:
                self._count(*self.grouper.process_ring(self.ring.addresses, out, now, end))
            return
        recs = self.ring.read()
        self._watch_overrun(now, bool(recs))
        if recs:
            self.process(recs, out, now)

    def process(self, recs: list[bytes], out: list[Any], now: int | None = None) -> None:
        """Group a batch of ring-buffer events; `now`: when the ring was read. Finished
        records go to out: Records (the Python path) or (flow id, body) pairs (native)."""
        self._count(len(recs), self._group(recs, out, self._clock() if now is None else now))

    def _count(self, events: int, sampled: int) -> None:
        self.counters.batches += 1
        self.counters.hits += events
        self.counters.sampled_hits += sampled

    def _group_py(self, recs: list[bytes], out: list[Record], now: int) -> int:
        """The Python path (the reference): decode, expand, group; returns the sampled
        hits."""
        assert isinstance(self.grouper, Grouper | GroupSet)
        unpack = layout.EVENT_STRUCT.unpack
        grouper, size, names = self.grouper, self._stride, layout.POINT_NAMES
        add = grouper.add
        retrans, udp, marked = layout.RETRANS, layout.FLAG_UDP, layout.FLAG_RESENT
        waited = layout.FLAG_WAIT
        flows, devs = self._flows, self._devs
        sampled = 0
        for raw in recs:
            e = unpack(raw)
            fkey = (e[_SADDR], e[_DADDR], e[_SPORT], e[_DPORT], e[_FAMILY], e[_PROTO_F])
            flow = flows.get(fkey)
            if flow is None:
                flow = self._flow(fkey)
            seq, flags = e[_SEQ], e[_FLAGS]
            seqs = [seq] if flags & udp else sampled_bytes(seq, e[_LEN], size)
            point = e[_POINT]
            if point == retrans:
                for b in seqs:
                    grouper.mark_retrans(flow, b, out, now)
                continue
            dev = devs.get(e[_DEV], _NO_DEV)
            if dev is _NO_DEV:
                dev = devs[e[_DEV]] = e[_DEV].split(b"\0", 1)[0].decode() or None
            if dev is None and point == _XDP:
                dev = self._xdp_names.get((e[_NETNS], e[_IFINDEX]))
            # one Hit per range, shared by its sampled bytes (encoded once when published)
            hit = Hit(names[point], e[_TS], e[_IFINDEX], dev, e[_NETNS], e[_CPU],
                      e[_WAIT:_WAIT_END] if flags & waited else None)
            sampled += len(seqs)
            resent = bool(flags & marked)
            for b in seqs:
                add(flow, b, hit, out, now, resent)
        return sampled

    # -- reporting
    def status(self) -> dict:
        kc = self.probes.kernel_counters() if self.probes.objects else getattr(
            self, "probes_counters", {})
        pub = self.publisher.counters if self.publisher else None
        g = self.grouper.counters
        return {
            "host": self.s.host, "netns": [ns or "(own)" for ns in self.s.netns],
            **({"names": {name: [ns or "(own)" for ns in refs]
                          for name, refs in self.groups.items() if name != self.s.host}}
               if len(self.groups) > 1 else {}),
            "data_path": "native" if self.s.native else "python",
            **({"uncovered": self.s.uncovered} if self.s.uncovered else {}),
            "points": dict(self.probes.attached) if self.probes.objects else getattr(
                self, "points_attached", {}),
            **({"xdp_refused": dict(self.probes.xdp_refused)} if self.probes.xdp_refused else {}),
            **({"xdp_generic": list(self.probes.xdp_generic)} if self.probes.xdp_generic else {}),
            **({"unavailable": dict(self.probes.unavailable)} if self.probes.unavailable else {}),
            **({"skipped": self.probes.skipped()} if self.probes.skipped() else {}),
            "uptime_s": round(time.time() - self.started_at, 3) if self.started_at else 0,
            "cpu_s": round(_cpu_s(), 3),
            "counters": {
                "hits": self.counters.hits, "sampled_hits": self.counters.sampled_hits,
                "idle_waits": self.counters.idle_waits, "idle_woken": self.counters.idle_woken,
                "samples": g.samples, "records": g.records,
                "published": pub.delivered if pub else 0,
                "produced": pub.produced if pub else 0,
                # records in the publisher, not yet produced (their partition's oldest not due)
                "waiting": self.publisher.waiting if self.publisher else 0,
                "messages": pub.messages if pub else 0,
                "failed_deliveries": pub.failed if pub else 0,
                "buffer_waits": pub.buffer_waits if pub else 0,
                "ringbuf_drops": kc.get("rb_drops", 0), "kernel_hits": kc.get("hits", 0),
                "unparsed": kc.get("unparsed", 0),
                "rate_capped": g.rate_capped, "retrans": g.retrans,
                "retrans_dropped": g.retrans_dropped, "evicted": g.evicted,
                "late_socket": g.late_socket, "gaps": g.gaps, "overrun": g.overrun,
                "restrided": g.restrided,
                "resent_marked": kc.get("resent", 0), "mark_failed": kc.get("mark_failed", 0),
                "open_groups": self.grouper.open_groups,
                "flow_full": kc.get("flow_full", 0),
                "drop_nohdr": kc.get("drop_nohdr", 0)},
            **({"flow_stats": asdict(self.flow_stats.c.counters)} if self.flow_stats else {}),
            "stride": {"bytes": self._stride,
                       **(self.stride.status() if self.stride else {"level": 0})},
            "gap_points": dict(self.grouper.gap_points),
            "settings": {k: v for k, v in asdict(self.s).items()
                         if k not in ("kafka", "clock", "points")}
                        | {"clock": asdict(self.s.clock), "bootstrap": self.s.kafka.bootstrap,
                           "hold_ms": self.s.hold, "max_hold_ms": self.s.max_hold_ms},
        }
