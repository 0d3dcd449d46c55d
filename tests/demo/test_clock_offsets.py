"""Injected clock offsets (+-5 ms, with drift) leave the wire segment where the offset-free
run puts it, within the sync error bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from truth import CAP_NS

pytestmark = [pytest.mark.root, pytest.mark.stack]
TOPOLOGY = Path(__file__).with_name("offsets.yaml")


def wire(summary: dict) -> dict:
    (flow,) = summary["flows"]
    (seg,) = [s for s in flow["segments"] if s["layer"] == "wire"]
    return seg


def test_offsets_leave_the_wire_segment_in_place(stack, demo_runner, tmp_path) -> None:
    free = yaml.safe_load(TOPOLOGY.read_text())
    for h in free["hosts"]:
        h.pop("clock", None)
    free_path = tmp_path / "no-offsets.yaml"
    free_path.write_text(yaml.safe_dump(free))

    with_offsets = demo_runner(TOPOLOGY, duration=8)
    without = demo_runner(free_path, duration=8)
    for s in (with_offsets, without):
        assert not s.get("missing"), s.get("missing")
        assert s["counters"]["sync_unconverged"] == 0
        assert s["flows"][0]["samples"] >= 30
    w_off, w_free = wire(with_offsets), wire(without)
    # The runs' own bounds, capped: a sync claiming a loose bound still has to be right.
    bound_us = min(sum(with_offsets["clock"][h]["bound_ns"] + without["clock"][h]["bound_ns"]
                       for h in ("h1", "h2")), 2 * CAP_NS) / 1000
    assert abs(w_off["p50_us"] - w_free["p50_us"]) <= bound_us, (w_off, w_free, bound_us)
    # Uncorrected, the wire would be off by 10 ms: the correction did the work.
    assert abs(w_off["p50_us"]) < 1000
