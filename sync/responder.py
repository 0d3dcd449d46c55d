"""The host side of clock sync: load and attach the XDP responder, read its counters.

Runs in-process: ``netns`` (a /run/netns name, or None for our own namespace) is only
entered by the attaching thread, so one process can serve several simulated hosts.
The XDP link belongs to this process and is detached when it closes or dies.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from latscope import log
from latscope import netns as nsmod
from latscope.clock import ClockInjection
from latscope.producers import libbpf
from latscope.sync import wire

_log = log.get("sync.responder")

DEFAULT_PORT = 51111  # the original LatScope's sync port (ping_info.yaml)


def inside(netns: str | None) -> contextlib.AbstractContextManager[None]:
    """The calling thread in ``netns`` for a ``with`` block (None: stay where we are)."""
    return contextlib.nullcontext() if netns is None else nsmod.entered(netns)


def ifindex_in(netns: str | None, ifname: str) -> int:
    """ifindex of ``ifname`` inside ``netns``; a clear error when it does not exist."""
    with inside(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            where = f"network namespace {netns}" if netns else "this network namespace"
            raise libbpf.BpfError(19, f"no interface {ifname!r} in {where}") from None


@dataclass
class Responder:
    """One host's responder; ``start()`` attaches it, ``close()`` detaches it."""

    ifname: str
    token: int
    allow: Iterable[str]
    netns: str | None = None
    port: int = DEFAULT_PORT
    injection: ClockInjection = field(default_factory=ClockInjection)
    _obj: libbpf.BpfObject | None = field(default=None, init=False, repr=False)

    def start(self) -> Responder:
        self.allow = list(self.allow)
        if not self.allow:
            raise ValueError("responder: empty allow-list: no manager could ever be answered")
        ifindex = ifindex_in(self.netns, self.ifname)
        obj = libbpf.BpfObject.build("responder")
        try:
            obj.set_autoload("sync_pass", False)
            obj.set_global("sync_port", self.port)
            obj.set_global("sync_token", self.token)
            obj.set_global("clock_offset_ns", self.injection.offset_ns)
            obj.set_global("clock_drift_ppb", self.injection.drift_ppb)
            obj.set_global("clock_epoch_ns", self.injection.epoch_ns)
            obj.load()
            allow = obj.map("allow")
            for addr in self.allow:
                allow.update(wire.addr_key(addr), b"\x01")
            with inside(self.netns):
                obj.attach_xdp("sync_responder", ifindex)
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        _log.info("responder on %s%s port %d, allow %s, injected offset %d ns drift %.3f ppm",
                  self.ifname, f" (netns {self.netns})" if self.netns else "", self.port,
                  ", ".join(self.allow), self.injection.offset_ns, self.injection.drift_ppm)
        return self

    def counters(self) -> dict[str, int]:
        """Per-outcome totals over all CPUs (see enum sync_responder_counter in sync.h)."""
        if self._obj is None:
            raise RuntimeError("responder not started")
        return read_counters(self._obj.map("counters"), wire.RESPONDER_COUNTERS)

    def close(self) -> None:
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Responder:
        return self.start() if self._obj is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_counters(m: libbpf.Map, names: list[str]) -> dict[str, int]:
    return {name: sum(int.from_bytes(v, "little") for v in m.lookup_percpu(i))
            for i, name in enumerate(names)}


def start_responder(netns: str | None, ifname: str, injection: ClockInjection, token: int,
                    allow: Iterable[str], port: int = DEFAULT_PORT) -> Responder:
    """Library entry point (demo, tests): an attached responder; call ``.close()`` when done."""
    return Responder(ifname=ifname, token=token, allow=allow, netns=netns, port=port,
                     injection=injection).start()


class PeerPass:
    """A pass-through XDP program on a veth peer, so native XDP_TX on the other end is
    delivered (the kernel drops it silently otherwise)."""

    def __init__(self, netns: str | None, ifname: str) -> None:
        ifindex = ifindex_in(netns, ifname)
        self._obj = libbpf.BpfObject.build("responder")
        try:
            self._obj.set_autoload("sync_responder", False)
            self._obj.load()
            with inside(netns):
                self._obj.attach_xdp("sync_pass", ifindex)
        except BaseException:
            self._obj.close()
            raise

    def close(self) -> None:
        self._obj.close()
