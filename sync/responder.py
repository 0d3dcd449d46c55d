"""The host side of clock sync: load and attach the XDP responder, read its counters.

Runs in-process: ``netns`` (a /run/netns name, or None for our own namespace) is only
entered by the attaching thread, so one process can serve several simulated hosts.
The XDP link belongs to this process and is detached when it closes or dies.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from latscope import log
from latscope.bpf import libbpf
from latscope.bpf.clock import ClockInjection
from latscope.bpf.netns import entered, ip_json
from latscope.sync import wire
from latscope.sync.attached import Attached
from latscope.sync.keys import KeyRotation, SyncKeys

_log = log.get("sync.responder")

DEFAULT_PORT = 51111  # the original LatScope's sync port (ping_info.yaml)


def ifindex_in(netns: str | None, ifname: str) -> int:
    """ifindex of ``ifname`` inside ``netns``; a clear error when it does not exist."""
    with entered(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            where = f"network namespace {netns}" if netns else "this network namespace"
            raise libbpf.BpfError(19, f"no interface {ifname!r} in {where}") from None


@dataclass
class Responder(Attached):
    """One host's responder; ``start()`` attaches it, ``close()`` detaches it."""

    COUNTERS: ClassVar[list[str]] = wire.RESPONDER_COUNTERS  # enum sync_responder_counter

    ifname: str
    keys: SyncKeys
    allow: Iterable[str]
    netns: str | None = None
    port: int = DEFAULT_PORT
    injection: ClockInjection = field(default_factory=ClockInjection)
    xdp_mode: str = "auto"   # native | generic | auto (see xdp_flags)
    # The host's own addresses it answers on (default: every address of ifname). Probes to
    # other addresses are routed through this host to another one and pass untouched.
    addresses: Iterable[str] | None = None
    # Probe ids remembered against replays: at least a key window (3 periods) of probes.
    replay_cache: int = 65536
    _obj: libbpf.BpfObject | None = field(default=None, init=False, repr=False)
    _rotation: KeyRotation | None = field(default=None, init=False, repr=False)

    def start(self) -> Responder:
        self.allow = list(self.allow)
        if not self.allow:
            raise ValueError("responder: empty allow-list: no manager could ever be answered")
        allow_keys = [wire.addr_key(a) for a in self.allow]   # refuses IPv4-mapped IPv6
        ifindex = ifindex_in(self.netns, self.ifname)
        obj = libbpf.BpfObject.build("responder")
        try:
            obj.set_autoload("sync_pass", False)
            obj.set_max_entries("seen", self.replay_cache)
            obj.set_global("sync_port", self.port)
            obj.set_global("clock_offset_ns", self.injection.offset_ns)
            obj.set_global("clock_drift_ppb", self.injection.drift_ppb)
            obj.set_global("clock_epoch_ns", self.injection.epoch_ns)
            obj.load()
            allow = obj.map("allow")
            for key in allow_keys:
                allow.update(key, b"\x01")
            if self.addresses is None:
                self.addresses = interface_addresses(self.netns, self.ifname)
            self.addresses = list(self.addresses)
            if not self.addresses:
                raise ValueError(f"responder: {self.ifname} has no address to answer on")
            local = obj.map("local")
            for addr in self.addresses:
                local.update(wire.addr_key(addr), b"\x01")
            self._rotation = KeyRotation(self.keys, [obj.map("keys")],
                                         name=f"sync-keys-{self.ifname}").start()
            flags = xdp_flags(self.xdp_mode, self.netns, self.ifname)
            with entered(self.netns):
                obj.attach_xdp("sync_responder", ifindex, flags)
        except BaseException:
            self._release()
            obj.close()
            raise
        self._obj = obj
        _log.info("responder on %s%s (%s) port %d, allow %s, injected offset %d ns drift %.3f ppm",
                  self.ifname, f" netns {self.netns}" if self.netns else "",
                  ", ".join(self.addresses), self.port,
                  ", ".join(self.allow), self.injection.offset_ns, self.injection.drift_ppm)
        return self

    def _release(self) -> None:
        if self._rotation is not None:
            self._rotation.stop()
            self._rotation = None


def interface_addresses(netns: str | None, ifname: str) -> list[str]:
    """Every IPv4/IPv6 address on the device (link-local ones included)."""
    return [a["local"] for dev in ip_json(netns, "addr", "show", "dev", ifname)
            for a in dev.get("addr_info", []) if a.get("family") in ("inet", "inet6")]


def link_kind(netns: str | None, ifname: str) -> str | None:
    """rtnetlink's kind of a device ("veth", "bridge", ...; None for plain NICs)."""
    return (ip_json(netns, "-d", "link", "show", "dev", ifname)[0].get("linkinfo") or {}
            ).get("info_kind")


def xdp_flags(mode: str, netns: str | None, ifname: str) -> int:
    """Link flags for an XDP mode. ``auto`` is native, except on veth: there a native
    XDP_TX is silently dropped unless the peer runs XDP too, which the responder cannot
    know, so auto picks generic mode (see PeerPass to keep native)."""
    if mode == "native":
        return libbpf.XDP_FLAGS_DRV_MODE
    if mode == "generic":
        return libbpf.XDP_FLAGS_SKB_MODE
    if mode != "auto":
        raise ValueError(f"xdp mode {mode!r}: expected native, generic or auto")
    return libbpf.XDP_FLAGS_SKB_MODE if link_kind(netns, ifname) == "veth" else 0


def start_responder(netns: str | None, ifname: str, injection: ClockInjection, keys: SyncKeys,
                    allow: Iterable[str], port: int = DEFAULT_PORT,
                    xdp_mode: str = "auto") -> Responder:
    """Library entry point (demo, tests): an attached responder; call ``.close()`` when done."""
    return Responder(ifname=ifname, keys=keys, allow=allow, netns=netns, port=port,
                     injection=injection, xdp_mode=xdp_mode).start()


class PeerPass:
    """A pass-through XDP program on a veth peer, so native XDP_TX on the other end is
    delivered (the kernel drops it silently otherwise)."""

    def __init__(self, netns: str | None, ifname: str) -> None:
        ifindex = ifindex_in(netns, ifname)
        self._obj = libbpf.BpfObject.build("responder")
        try:
            self._obj.set_autoload("sync_responder", False)
            self._obj.load()
            with entered(netns):
                self._obj.attach_xdp("sync_pass", ifindex)
        except BaseException:
            self._obj.close()
            raise

    def close(self) -> None:
        self._obj.close()
