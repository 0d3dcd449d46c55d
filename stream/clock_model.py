"""What a ClockModel record means: mapping a host's timestamp onto the reference clock."""

from __future__ import annotations


def to_reference(model: dict, host_ns: int) -> float:
    """Map a host-clock timestamp onto the reference (manager) clock with a ClockModel record.

    Solves host = ref + offset + drift*(ref - ref_ns) for ref; exact for the linear model.
    """
    drift = model["drift_ppm"] * 1e-6
    return (host_ns - model["offset_ns"] + drift * model["ref_ns"]) / (1.0 + drift)
