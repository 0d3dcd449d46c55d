"""One grouper per name an agent publishes under, behind one grouper's interface.

An agent covers its host's namespaces and its containers'; a container named in the
configuration (connect_info's ``iscontainer`` entries, a topology's containers) gets records
of its own, under its own name, as if it ran its own agent: the stream then names the
host → container hop, and the byte's way through the container's veth is a segment between
two hosts that read one clock. Each member groups the hits of its own namespaces, with the
devices that leave them as its exits; a resend mark reaches every member (the byte's copies
on the way to or from the container are resent copies too). Counters are the members' sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple
from typing import Any

from latscope.producers.grouping import FlowT, GroupCounters, Grouper, Hit
from latscope.producers.native_path import NativeGrouper

Member = Grouper | NativeGrouper


class GroupSet:
    """``members``: name -> (its grouper, the netns inodes whose hits it groups); hits of
    any other namespace go to ``default``'s."""

    def __init__(self, members: Mapping[str, tuple[Member, set[int]]], default: str) -> None:
        self.members = {name: g for name, (g, _) in members.items()}
        self._by_netns = {ns: g for g, inodes in members.values() for ns in inodes}
        self._default = self.members[default]
        for g, inodes in members.values():
            if isinstance(g, NativeGrouper):
                g.set_netns(inodes)
        self._all = list(self.members.values())

    # -- the data path (the Python members: Agent._group_py; the native: process)
    def add(self, flow: FlowT, seq: int, hit: Hit, out: list, now: int | None = None,
            resent: bool = False) -> None:
        self._by_netns.get(hit.netns, self._default).add(flow, seq, hit, out, now, resent)

    def mark_retrans(self, flow: FlowT, seq: int, out: list, now: int | None = None) -> None:
        for g in self._all:
            g.mark_retrans(flow, seq, out, now)

    def process(self, recs: list[bytes], out: list[Any], now: int) -> int:
        """The native members, each over the batch (each takes its namespaces' events)."""
        return sum(g.process(recs, out, now) for g in self._all)

    def process_ring(self, ring: tuple[int, int, int, int], out: list[Any], now: int,
                     end: int) -> tuple[int, int]:
        """The native members, each over the ring buffer's events up to `end` in place; the
        last gives them back. (events, sampled hits)"""
        events = sampled = 0
        for i, g in enumerate(self._all):
            events, s = g.process_ring(ring, out, now, end, i == len(self._all) - 1)
            sampled += s
        return events, sampled

    def expire(self, out: list, now: int | None = None) -> None:
        for g in self._all:
            g.expire(out, now)

    def flush_all(self, out: list) -> None:
        for g in self._all:
            g.flush_all(out)

    def restride(self, size: int, out: list) -> None:
        for g in self._all:
            g.restride(size, out)

    # -- settings every member shares
    @property
    def points(self) -> frozenset[str]:
        return self._default.points

    @points.setter
    def points(self, names: frozenset[str]) -> None:
        for g in self._all:
            g.points = names

    @property
    def udp_reads(self) -> bool:
        return self._default.udp_reads

    @udp_reads.setter
    def udp_reads(self, on: bool) -> None:
        for g in self._all:
            g.udp_reads = on

    @property
    def overrun(self) -> bool:
        return self._default.overrun

    @overrun.setter
    def overrun(self, on: bool) -> None:
        for g in self._all:
            g.overrun = on

    def set_size(self, size: int) -> None:
        for g in self._all:
            if isinstance(g, NativeGrouper):
                g.set_size(size)

    def set_xdp_names(self, names: dict[tuple[int, int], str]) -> None:
        for g in self._all:
            if isinstance(g, NativeGrouper):
                g.set_xdp_names(names)

    # -- reporting
    @property
    def counters(self) -> GroupCounters:
        return GroupCounters(*(sum(v) for v in zip(*(astuple(g.counters) for g in self._all),
                                                   strict=True)))

    @property
    def gap_points(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self._all:
            for p, n in g.gap_points.items():
                out[p] = out.get(p, 0) + n
        return out

    @property
    def open_groups(self) -> int:
        return sum(g.open_groups for g in self._all)
