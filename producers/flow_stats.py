"""Per-flow context, once an interval: the kernel's per-flow counters (flow_stats.bpf.h, every
byte and segment, read and differenced here), the TCP state of the flow's sockets
(tcp_state.py) and the owning process (owners.py; the one the counters saw calling), as one
FlowStats record per (flow, host, interval) on ``latscope.flow-stats``. Drops carry the
kernel's reason: the probe counts the enum skb_drop_reason value (drops.bpf.c), named here
from the running kernel's BTF, so a kernel that adds or renumbers reasons needs no change
here.

Intervals are aligned on the wall clock (multiples of the interval, as the stream worker's
windows), so a record and the latency window of the same flow and start describe the same
time. The map is never reset: the agent keeps the last totals per key and sends differences,
and removes a key after it stayed unchanged for IDLE_INTERVALS, reading it as it goes (a flow
that resumes then is counted in full: what it did before the removal with this read, the rest
in a new key).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from latscope import kafka, log, threads
from latscope.bpf import libbpf
from latscope.bpf.btf import VMLINUX_BTF, btf_enums
from latscope.producers import layout
from latscope.producers.owners import Owners
from latscope.producers.tcp_state import TCP_STATES, Ends, TcpSocket, TcpStateReader
from latscope.schemas import codec
from latscope.schemas.records import TOPIC_FLOW_STATS, TOPICS, flow_id

_log = log.get("producers.flow_stats")
IDLE_INTERVALS = 30
_KEY = layout.FS_KEY.codec.unpack
_VAL = layout.FS_VAL.codec.unpack
_K = {n: i for i, n in enumerate(layout.FS_KEY.names)}
_KIND = {name: v for v, name in layout.FS_KINDS.items()}
_PROTO = {6: "tcp", 17: "udp"}
FlowT = tuple[str, int, str, str, int, int]   # proto, family, src, dst, sport, dport
_DROP_PREFIX = "SKB_DROP_REASON_"


@functools.cache
def drop_reasons() -> tuple[dict[int, str], dict[int, str]]:
    """The running kernel's enum skb_drop_reason (value -> name without SKB_DROP_REASON_, as
    the tracepoint prints it) and enum skb_drop_reason_subsys (subsystem -> its name). Read
    once (tens of ms of CPU): no argument, so every caller finds the one cache entry."""
    try:
        enums = btf_enums(VMLINUX_BTF, {"skb_drop_reason", "skb_drop_reason_subsys"})
    except (OSError, ValueError, struct.error) as e:
        _log.warning("drop reasons not named (BTF %s unreadable: %s): numbers sent",
                     VMLINUX_BTF, e)
        enums = {}
    core = {v: n[len(_DROP_PREFIX):] if n.startswith(_DROP_PREFIX) else n.removeprefix("SKB_")
            for v, n in enums.get("skb_drop_reason", {}).items()
            if not n.endswith(("_MAX", "_SUBSYS_MASK"))}     # SKB_DROP_REASON_SKB_CSUM: SKB_CSUM
    subsys = {v: n.removeprefix(_DROP_PREFIX + "SUBSYS_")
              for v, n in enums.get("skb_drop_reason_subsys", {}).items()
              if not n.endswith("_NUM")}
    return core, subsys


def drop_reason_name(value: int) -> str:
    """A drop reason's name: the kernel's (``QDISC_DROP``), a subsystem's reason as
    ``SUBSYSTEM:code`` (their names live in module BTF), else ``UNKNOWN_<value>``."""
    core, subsys = drop_reasons()
    if value in core:
        return core[value]
    if value >> 16 and value >> 16 in subsys:     # 0 is the core: its own enum above
        return f"{subsys[value >> 16]}:{value & 0xFFFF}"
    return f"UNKNOWN_{value}"


def flow_of(saddr: bytes, daddr: bytes, sport: int, dport: int, family: int,
            proto: int) -> FlowT:
    """The flow tuple of a probe's raw addresses and ports (IPv4 in the first 4 bytes)."""
    n = 16 if family == 6 else 4
    return (_PROTO.get(proto, "tcp"), family, str(ipaddress.ip_address(saddr[:n])),
            str(ipaddress.ip_address(daddr[:n])), sport, dport)


def flow_key(f: FlowT) -> dict[str, Any]:
    return {"proto": f[0], "family": f[1], "src": f[2], "dst": f[3], "sport": f[4],
            "dport": f[5]}


@dataclass
class FlowStatsCounters:
    intervals: int = 0
    records: int = 0
    delivered: int = 0
    failed: int = 0
    read_errors: int = 0      # an interval whose sockets or processes could not be read
    removed_keys: int = 0     # idle flow keys removed from the kernel map


@dataclass
class _Acc:
    """One flow's interval on this host, while it is assembled."""
    counts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    devices: list[dict] = field(default_factory=list)
    drops: list[dict] = field(default_factory=list)
    sockets: list[dict] = field(default_factory=list)


class FlowStatsCollector:
    """Reads the counters, the sockets and their owners; builds the interval's records."""

    def __init__(self, host: str, fmap: libbpf.Map, netns: list[str | None], ports: list[int],
                 exit_devices: set[tuple[int, int]], dev_names: dict[tuple[int, int], str],
                 interval_s: float) -> None:
        self.host = host
        self.map = fmap
        self.exit_devices = exit_devices
        self.dev_names = dev_names
        self.step = int(interval_s * 1e9)
        self.netns, self.ports = netns, ports
        # made on first use, on the thread that reads (where its namespaces are entered)
        self.tcp: TcpStateReader | None = None
        self.owners = Owners()
        self.counters = FlowStatsCounters()
        self._last: dict[bytes, tuple[int, int]] = {}
        self._idle: dict[bytes, int] = {}
        self._decoded: dict[bytes, tuple[int, int, str, FlowT]] = {}   # see _key
        self._tgid: dict[bytes, int] = {}     # send/recv keys: the last caller's process
        self._read_at = time.monotonic_ns()
        # read as the agent starts, not in the interval of the first drop (it tripled it)
        drop_reasons()

    def _deltas(self) -> dict[bytes, tuple[int, int]]:
        """key -> (bytes, count) since the last read, summed over CPUs."""
        out = {}
        for key, values in self.map.items_percpu():
            # an idle key is read for the last time as it is removed: a packet counted
            # between a read and a separate delete would be lost
            pop = self._idle.get(key, 0) + 1 >= IDLE_INTERVALS
            if pop:
                values = self.map.lookup_percpu(key, pop=True)
            total_b = total_c = 0
            for v in values:
                b, c, tgid, _ = _VAL(v)
                total_b += b
                total_c += c
                if tgid:
                    self._tgid[key] = tgid
            last = self._last.get(key, (0, 0))
            d = (total_b - last[0], total_c - last[1])
            self._last[key] = (total_b, total_c)
            if pop:
                self._last.pop(key)
                self._decoded.pop(key, None)
                self._tgid.pop(key, None)
                self._idle.pop(key, None)
                self.counters.removed_keys += 1
            elif d == (0, 0):
                self._idle[key] = self._idle.get(key, 0) + 1
            else:
                self._idle.pop(key, None)
            if d != (0, 0):
                out[key] = d
        return out

    def collect(self, start_ns: int) -> list[dict]:
        """The records of the interval starting at start_ns (wall), ending now."""
        now = time.monotonic_ns()
        duration, self._read_at = now - self._read_at, now
        accs: dict[FlowT, _Acc] = defaultdict(_Acc)
        for raw, (nbytes, count) in self._deltas().items():
            netns, ifindex, kind, flow = self._key(raw)
            acc = accs[flow]
            where = (netns, ifindex)
            if kind == "drop":        # the key's ifindex is the drop reason (latscope.h)
                acc.drops.append({"reason": drop_reason_name(where[1]), "netns": where[0],
                                  "packets": count, "bytes": nbytes})
                continue
            if kind in ("tx", "rx"):
                acc.devices.append({"netns": where[0], "ifindex": where[1],
                                    "device": self.dev_names.get(where), "dir": kind,
                                    "bytes": nbytes, "segs": count})
                if where not in self.exit_devices:
                    continue
            c = acc.counts[kind]
            c[0] += nbytes
            c[1] += count
        try:
            self._add_sockets(accs)
        except OSError as e:     # netlink or /proc refused: the counts still go out
            self.counters.read_errors += 1
            _log.warning("flow stats: sockets not read this interval: %s", e)
        self.counters.intervals += 1
        return [self._record(flow, acc, start_ns, duration) for flow, acc in accs.items()]

    def _add_sockets(self, accs: dict[FlowT, _Acc]) -> None:
        if self.tcp is None:
            self.tcp = TcpStateReader(self.netns, self.ports)
        socks = self.tcp.find(self._ends())
        callers = self._callers()
        wanted = []
        for s in socks:
            out_flow: FlowT = ("tcp", s.family, s.local[0], s.remote[0], s.local[1], s.remote[1])
            in_flow: FlowT = ("tcp", s.family, s.remote[0], s.local[0], s.remote[1], s.local[1])
            sides = []
            if out_flow in accs or s.info.get("unacked") or s.info.get("notsent_bytes"):
                sides.append(("sender", out_flow))
            if in_flow in accs:
                sides.append(("receiver", in_flow))
            if sides:
                # the socket's own calls: its sends go out as out_flow, its reads take in_flow
                pid = (callers.get((s.netns, "send", out_flow))
                       or callers.get((s.netns, "recv", in_flow)))
                wanted.append((s, sides, pid))
        # /proc only for sockets no call of which was seen (their data predates the agent)
        walked = self.owners.pids({s.inode for s, _, pid in wanted if pid is None})
        pids = {s.inode: pid or walked.get(s.inode, -1) for s, _, pid in wanted}
        owners = self.owners.read(set(pids.values()) - {-1})
        for s, sides, _ in wanted:
            owner = owners.get(pids[s.inode])
            for side, flow in sides:
                accs[flow].sockets.append(socket_record(s, side, owner))

    def _callers(self) -> dict[tuple[int, str, FlowT], int]:
        """(netns, send|recv, flow) -> the process the probes last saw calling."""
        out = {}
        for raw, tgid in self._tgid.items():
            netns, _, kind, flow = self._key(raw)
            out[(netns, kind, flow)] = tgid
        return out

    def _key(self, raw: bytes) -> tuple[int, int, str, FlowT]:
        """A key's (netns, ifindex, kind, flow): decoded once while the map holds the key
        (a key removed this interval is decoded without being kept)."""
        d = self._decoded.get(raw)
        if d is None:
            k = _KEY(raw)
            d = (k[_K["netns"]], k[_K["ifindex"]], layout.FS_KINDS.get(k[_K["kind"]], "unknown"),
                 flow_of(k[_K["saddr"]], k[_K["daddr"]], k[_K["sport"]], k[_K["dport"]],
                         k[_K["family"]], k[_K["proto"]]))
            if raw in self._last:
                self._decoded[raw] = d
        return d

    def _ends(self) -> set[Ends]:
        """Both ends' sockets of every TCP flow the map holds (active, or idle and not yet
        removed), in each namespace where the flow was counted: where a flow's socket can
        be. A forwarding host has neither; the lookups find nothing."""
        ends: set[Ends] = set()
        for raw in self._last:
            netns, _, _, (proto, family, src, dst, sport, dport) = self._key(raw)
            if proto == "tcp":
                ends.add((netns, family, (src, sport), (dst, dport)))
                ends.add((netns, family, (dst, dport), (src, sport)))
        return ends

    def _record(self, flow: FlowT, acc: _Acc, start_ns: int, duration: int) -> dict:
        c = acc.counts
        fk = flow_key(flow)
        return {
            "flow_id": flow_id(fk), "flow": fk, "host": self.host,
            "interval_start_ns": start_ns, "interval_ns": self.step, "duration_ns": duration,
            "app_bytes_written": c["send"][0], "app_writes": c["send"][1],
            "app_bytes_read": c["recv"][0], "app_reads": c["recv"][1],
            "dev_bytes_tx": c["tx"][0], "dev_segs_tx": c["tx"][1],
            "dev_bytes_rx": c["rx"][0], "dev_segs_rx": c["rx"][1],
            "retrans_bytes": c["retrans"][0], "retrans_segs": c["retrans"][1],
            "devices": acc.devices, "drops": acc.drops, "sockets": acc.sockets,
        }

    def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()


def socket_record(s: TcpSocket, side: str, owner: Any) -> dict:
    """One socket of a FlowStats record: its tcp_info fields and its owner."""
    i = s.info
    return {
        "side": side, "netns": s.netns,
        "state": TCP_STATES[i["state"]] if i.get("state", 0) < len(TCP_STATES) else "?",
        "srtt_us": i.get("rtt", 0), "rttvar_us": i.get("rttvar", 0),
        "min_rtt_us": i.get("min_rtt", 0), "cwnd": i.get("snd_cwnd", 0),
        "ssthresh": i.get("snd_ssthresh", 0), "mss": i.get("snd_mss", 0),
        "snd_wnd": i.get("snd_wnd", 0), "rcv_wnd": i.get("rcv_wnd"),
        "rcv_space": i.get("rcv_space", 0), "pacing_rate": i.get("pacing_rate", 0),
        "delivery_rate": i.get("delivery_rate", 0), "busy_us": i.get("busy_time", 0),
        "rwnd_limited_us": i.get("rwnd_limited", 0),
        "sndbuf_limited_us": i.get("sndbuf_limited", 0),
        "total_retrans": i.get("total_retrans", 0), "bytes_acked": i.get("bytes_acked", 0),
        "bytes_received": i.get("bytes_received", 0), "unacked": i.get("unacked", 0),
        "notsent_bytes": i.get("notsent_bytes", 0),
        "pid": owner.pid if owner else None, "command": owner.command if owner else None,
        "cgroup_id": s.cgroup_id, "cpu_percent": owner.cpu_percent if owner else None,
        "rss_bytes": owner.rss_bytes if owner else None,
    }


class FlowStatsLoop:
    """The collector on its own thread (sock_diag and /proc must not hold up the ring
    buffer), one interval at a time, publishing each record keyed by its flow id; a last,
    shorter interval at stop."""

    def __init__(self, collector: FlowStatsCollector, ks: kafka.KafkaSettings,
                 producer: Producer, topic: str = TOPIC_FLOW_STATS) -> None:
        self.c = collector
        self.topic = topic
        self.ks = ks
        self._producer = producer     # the agent's (publish.agent_producer): its loop polls
        self._codec = codec.default_codec()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threads.start(self._run, "flow-stats", self._stop)

    def _run(self, stop: threading.Event) -> None:
        step = self.c.step
        start = time.time_ns() // step * step
        topic_known = False
        while True:
            end = start + step
            stopped = stop.wait(max(0.0, (end - time.time_ns()) / 1e9))
            if not topic_known:   # a broker not up yet holds up neither the probes nor start
                topic_known = self._know_topic()
            try:
                self.publish(self.c.collect(start))
            except Exception:    # one bad interval never ends the agent's context
                self.c.counters.read_errors += 1
                _log.exception("flow stats interval failed")
            start = end
            if stopped:
                return

    def _know_topic(self) -> bool:
        try:
            kafka.ensure_topics(self.ks, {self.topic: TOPICS[TOPIC_FLOW_STATS]})
            return True
        except Exception as e:   # unreachable broker: deliveries report their own failures
            _log.debug("topic %s not checked yet: %s", self.topic, e)
            return False

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.c.counters.delivered += 1
        else:
            self.c.counters.failed += 1

    def publish(self, records: list[dict]) -> None:
        for r in records:
            kafka.produce(self._producer, self.topic, self._codec.encode("FlowStats", r),
                          key=r["flow_id"].encode(), on_delivery=self._delivered)
            self.c.counters.records += 1

    def stop(self, timeout: float = 5.0) -> None:
        """Once the probes are detached: the last interval queued, the thread ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 2 * self.c.step / 1e9)
        self.c.close()

    def close(self) -> None:
        """Once the agent flushed the producer: what Kafka has not acknowledged counts as
        failed."""
        c = self.c.counters
        c.failed += c.records - c.delivered - c.failed
