"""Injected clock error of a simulated host (design §4).

Every timestamp a simulated host's BPF programs take is
``ktime + offset_ns + (ktime - epoch_ns) * drift_ppm * 1e-6`` (see ``producers/bpf/clock.h``),
so the true offset of that host against the un-injected reference clock is known exactly.
``epoch_ns`` is a CLOCK_MONOTONIC instant (the clock bpf_ktime_get_ns reads) shared by
every program of one run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ClockInjection:
    offset_ns: int = 0
    drift_ppm: float = 0.0
    epoch_ns: int = 0

    @property
    def drift_ppb(self) -> int:
        """What the BPF global holds: integer parts per billion."""
        return round(self.drift_ppm * 1000)

    def host_time(self, ref_ns: int) -> int:
        """The injected host clock at reference instant ``ref_ns`` (same arithmetic as BPF)."""
        return ref_ns + self.offset_ns + (ref_ns - self.epoch_ns) * self.drift_ppb // 1_000_000_000

    def true_offset(self, ref_ns: int) -> int:
        """host clock minus reference clock at reference instant ``ref_ns``."""
        return self.host_time(ref_ns) - ref_ns


def monotonic_ns() -> int:
    """The clock bpf_ktime_get_ns() reads."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
