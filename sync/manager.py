"""The manager side of clock sync: send probes, collect t1..t4 from the kernel, estimate.

The manager's clock is the reference (no injection). Probes are plain UDP datagrams sent
from user space; the kernel routes them and resolves the next hop itself, and the manager
attaches its programs to the interface the routing table picks for each host
(``ip route get``), so direct links, bridges and routed hops need no special casing.
t1 is stamped by ``tp_btf/net_dev_start_xmit`` on that interface and t4 by its XDP hook;
completed exchanges come up through a ring buffer and feed one Estimator per host.
Probes carry a random 64-bit id and a MAC under the current epoch's key; the XDP hook
accepts a reply only from the address its probe went to, with a MAC that verifies
(sync/SECURITY.md). Samples the kernel flags as impossible (t3 < t2, negative delay) are
counted per host and never estimated.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from latscope import log
from latscope.bpf import libbpf
from latscope.bpf.netns import entered, inode_of, ip
from latscope.sync import wire
from latscope.sync.attached import Attached
from latscope.sync.estimator import Estimator, EstimatorConfig, Model, Sample
from latscope.sync.keys import KeyRotation, SyncKeys
from latscope.sync.responder import DEFAULT_PORT, ifindex_in, xdp_flags

_log = log.get("sync.manager")

PROBE_TTL_S = 2.0  # a probe unanswered this long is counted lost


@dataclass(frozen=True)
class Target:
    host: str
    address: str
    port: int = DEFAULT_PORT


@dataclass
class HostState:
    target: Target
    estimator: Estimator
    sent: int = 0
    samples: int = 0
    lost: int = 0
    send_errors: int = 0        # sendto failed (no route, neighbour unreachable, ...)
    suspicious: int = 0         # flagged by the kernel (t3 < t2, negative delay): discarded
    model: Model | None = None
    fitted_at: float = 0.0      # time.time() of the last fit
    new_samples: int = 0        # since the last fit


def egress_device(netns: str | None, address: str) -> str:
    """The interface the routing table sends ``address`` out of (in ``netns``)."""
    cmd = ip(netns, "-j", "route", "get", address)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise libbpf.BpfError(101, f"no route to {address}"
                                   f"{f' in netns {netns}' if netns else ''}: {r.stderr.strip()}")
    return json.loads(r.stdout)[0]["dev"]


# (host, sample) and (host, model) sinks, e.g. the Kafka publisher.
SampleSink = Callable[[str, Sample], None]
ModelSink = Callable[[str, Model], None]


@dataclass
class Manager(Attached):
    COUNTERS: ClassVar[list[str]] = wire.MANAGER_COUNTERS
    targets: Iterable[Target]
    keys: SyncKeys
    netns: str | None = None
    interval_s: float = 1.0          # time_sync.yaml time_interval: seconds between rounds
    burst: int = 4                   # probes per host per round
    spacing_s: float = 0.0005        # between probes of a burst
    estimator: EstimatorConfig | None = None
    on_sample: SampleSink | None = None
    on_model: ModelSink | None = None
    name: str = "manager"
    # t4's XDP: native | generic | auto (the kernel's choice: native where the driver has
    # it; receiving in native mode needs nothing from the peer, unlike XDP_TX)
    xdp_mode: str = "auto"
    t1_after_xmit: bool = True       # t1 when the driver took the probe (net_dev_xmit)
    hosts: dict[str, HostState] = field(default_factory=dict, init=False)
    _obj: libbpf.BpfObject | None = field(default=None, init=False, repr=False)
    _rotation: KeyRotation | None = field(default=None, init=False, repr=False)

    def start(self) -> Manager:
        targets = list(self.targets)
        if not targets:
            raise ValueError("manager: no hosts to synchronise")
        ports = {t.port for t in targets}
        if len(ports) != 1:
            raise ValueError(f"manager: every host must use one sync port, got {sorted(ports)}")
        self.port = ports.pop()
        est_cfg = self.estimator or EstimatorConfig(
            window_ns=int(max(30, 16 * self.interval_s) * 1e9),
            bucket_ns=int(self.interval_s * 1e9))
        self.hosts = {t.host: HostState(t, Estimator(est_cfg)) for t in targets}
        devices = {egress_device(self.netns, t.address) for t in targets}
        ino = inode_of(self.netns)
        obj = libbpf.BpfObject.build("manager")
        try:
            obj.set_global("sync_port", self.port)
            obj.load()
            self._rotation = KeyRotation(self.keys, [obj.map("keys")],
                                         name=f"sync-keys-{self.name}").start()
            for dev in sorted(devices):
                ifindex = ifindex_in(self.netns, dev)
                obj.map("devices").update(ino.to_bytes(4, "little") + ifindex.to_bytes(4, "little"),
                                          b"\x01")
                flags = 0 if self.xdp_mode == "auto" else xdp_flags(self.xdp_mode,
                                                                     self.netns, dev)
                with entered(self.netns):
                    obj.attach_xdp("sync_t4", ifindex, flags)
            obj.attach("sync_t1")
            if self.t1_after_xmit:
                obj.attach("sync_t1_sent")
            self._ring = libbpf.RingBuffer(obj.map("samples").fd)
            with entered(self.netns):  # sockets stay in the namespace they were made in
                self._socks = {fam: socket.socket(fam, socket.SOCK_DGRAM)
                               for fam in (socket.AF_INET, socket.AF_INET6)}
        except BaseException:
            if self._rotation is not None:
                self._rotation.stop()
                self._rotation = None
            obj.close()
            raise
        self._obj = obj
        self._pending: dict[int, tuple[str, float]] = {}
        self.unmatched = 0
        self.epochs_used: set[int] = set()
        _log.info("manager %s: %d host(s) via %s, every %.3g s, %d probe(s) per round",
                  self.name, len(targets), ", ".join(sorted(devices)), self.interval_s, self.burst)
        return self

    # -- one round -------------------------------------------------------------------------
    def send_round(self) -> None:
        epoch = self.keys.epoch()
        self.epochs_used.add(epoch)
        for _ in range(self.burst):
            for st in self.hosts.values():
                t = st.target
                pid = int.from_bytes(os.urandom(8), "little")  # unpredictable, per probe
                fam = socket.AF_INET6 if ":" in t.address else socket.AF_INET
                try:
                    self._socks[fam].sendto(wire.probe_payload(pid, self.keys, epoch),
                                            (t.address, t.port))
                except OSError as e:
                    if not st.send_errors:
                        _log.warning("%s: cannot send probes to %s: %s", t.host, t.address,
                                     e.strerror)
                    st.send_errors += 1
                    continue
                self._pending[pid] = (t.host, time.monotonic())
                st.sent += 1
            if self.spacing_s:
                time.sleep(self.spacing_s)

    def collect(self, timeout_ms: int) -> int:
        """Read completed exchanges from the ring buffer into the estimators."""
        got = 0
        for raw in self._ring.poll(timeout_ms):
            ev = wire.decode_sample(raw)
            owner = self._pending.pop(ev.probe_id, None)
            if owner is None:  # expired here, or a probe another process sent
                self.unmatched += 1
                continue
            st = self.hosts[owner[0]]
            if ev.flags & wire.SAMPLE_SUSPICIOUS:
                st.suspicious += 1
                if st.suspicious == 1:
                    _log.warning("%s: impossible sample (t3 < t2 or negative delay) "
                                 "discarded; more are only counted", st.target.host)
                continue
            s = Sample(ev.probe_id, ev.t1_ns, ev.t2_ns, ev.t3_ns, ev.t4_ns)
            st.samples += 1
            if not st.estimator.add(s):
                continue  # contradicts the model: counted in st.estimator.suspicious
            st.new_samples += 1
            got += 1
            if self.on_sample:
                self.on_sample(st.target.host, s)
        now = time.monotonic()
        for pid, (host, sent) in list(self._pending.items()):
            if now - sent > PROBE_TTL_S:
                del self._pending[pid]
                self.hosts[host].lost += 1
        return got

    def refit(self) -> None:
        for host, st in self.hosts.items():
            if not st.new_samples:
                continue
            st.new_samples = 0
            model = st.estimator.fit()
            if model is None:
                continue
            st.model, st.fitted_at = model, time.time()
            if self.on_model:
                self.on_model(host, model)

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None,
            progress: Callable[[Manager], None] | None = None) -> None:
        """Rounds every interval_s until duration_s passes or ``stop`` is set."""
        if self._obj is None:
            self.start()
        stop = stop or threading.Event()
        end = None if duration_s is None else time.monotonic() + duration_s
        next_round = time.monotonic()
        while not stop.is_set() and (end is None or time.monotonic() < end):
            now = time.monotonic()
            if now >= next_round:
                self.refit()  # whatever the last round brought, before the next one
                self.send_round()
                next_round += self.interval_s
                if next_round < now:  # fell behind (slow machine): skip, do not burst
                    next_round = now + self.interval_s
            wait = max(0.0, min(next_round - time.monotonic(), 0.1))
            self.collect(int(wait * 1000))
            if not self._pending:
                self.refit()  # the whole round is in: publish now, not a round later
            if progress:
                progress(self)
        self.collect(0)
        self.refit()

    def _release(self) -> None:
        if self._rotation is not None:
            self._rotation.stop()
            self._rotation = None
        self._ring.close()
        for s in self._socks.values():
            s.close()

