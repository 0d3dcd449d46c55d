"""Per-CPU counter arrays (``bpf/include/counters.bpf.h``): every program counts what it
does and drops into one, and user space sums the CPUs' slots."""

from __future__ import annotations

from collections.abc import Sequence

from latscope.bpf import libbpf


def total(m: libbpf.Map, slot: int) -> int:
    """One slot's total over all CPUs of a per-CPU u64 array (one lookup)."""
    return sum(int.from_bytes(v, "little") for v in m.lookup_percpu(slot))


def read(m: libbpf.Map, names: Sequence[str]) -> dict[str, int]:
    """Totals over all CPUs of a per-CPU u64 array whose slot ``i`` counts ``names[i]``."""
    return {name: total(m, i) for i, name in enumerate(names)}
