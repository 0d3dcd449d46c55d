"""Per-CPU counter arrays (``bpf/include/counters.bpf.h``): every program counts what it
does and drops into one, and user space sums the CPUs' slots."""

from __future__ import annotations

from collections.abc import Sequence

from latscope.bpf import libbpf
from latscope.bpf._native import percpu_sum


def total(m: libbpf.Map, slot: int) -> int:
    """One slot's total over all CPUs of a per-CPU u64 array (one lookup, in C: the agent
    reads its drop counter after every batch)."""
    if m.value_size != 8:
        raise ValueError(f"map {m.name}: {m.value_size}-byte values, not a u64 array")
    return percpu_sum(m.fd, slot, libbpf.NUM_CPUS)


def read(m: libbpf.Map, names: Sequence[str]) -> dict[str, int]:
    """Totals over all CPUs of a per-CPU u64 array whose slot ``i`` counts ``names[i]``."""
    return {name: total(m, i) for i, name in enumerate(names)}
