"""producers/bpf/clock.h computes exactly what latscope.clock.ClockInjection.host_time does
(the agent's probes and the sync responder both stamp through it)."""

from __future__ import annotations

import struct

import pytest

from latscope.bpf import libbpf
from latscope.bpf.clock import ClockInjection

pytestmark = pytest.mark.root


@pytest.mark.parametrize("inj", [
    ClockInjection(0, 0.0, 0),
    ClockInjection(5_000_000, 20.0, 1_000_000_000_000),
    ClockInjection(-3_000_000, -15.0, 7_777_777_777_777),
    ClockInjection(123, 30.5, 10**15),
])
def test_bpf_clock_matches_python(inj: ClockInjection) -> None:
    # around the epoch, an hour and a day either side, and 23 days (no 64-bit overflow)
    ktimes = [0, max(inj.epoch_ns - 1, 0), inj.epoch_ns, inj.epoch_ns + 999_999_999,
              inj.epoch_ns + 3_600_000_000_000, max(inj.epoch_ns - 86_400_000_000_000, 0),
              inj.epoch_ns + 86_400_000_000_001, 2 * 10**15]
    obj = libbpf.BpfObject.build("clock_check")
    try:
        obj.set_global("clock_offset_ns", inj.offset_ns)
        obj.set_global("clock_drift_ppb", inj.drift_ppb)
        obj.set_global("clock_epoch_ns", inj.epoch_ns)
        obj.load()
        rc, out = obj.test_run("clock_check", struct.pack("<16Q", *ktimes, *[0] * 8))
    finally:
        obj.close()
    assert rc == 3                                    # XDP_TX: the program ran to the end
    got = struct.unpack("<16Q", out[:128])[8:]
    assert list(got) == [inj.host_time(k) % (1 << 64) for k in ktimes]
