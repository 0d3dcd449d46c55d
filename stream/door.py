"""What the stream worker takes in from Kafka, checked at the door (design §10).

Kafka is the trust boundary, yet a record that decodes can still be one no agent or sync
manager writes: a record with no hits, a point this build does not know, a flow id that
is not its flow's, a host name that would break a tag or a segment name, a clock model
whose offset is NaN or whose drift would divide by zero. Such a record would otherwise
break a breakdown (or the worker) later, far from its cause; here it gets a reason the
dead-letter topic carries and the worker counts.

    event_problem(ev) -> (reason, detail) | None
    clock_problem(model) -> (reason, detail) | None
    decode_reason(err) -> reason of a DecodeError
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from latscope.schemas import codec
from latscope.schemas.records import HOST_NAME_RE, POINTS, flow_id

# Clocks drift by 5-30 ppm (design §4); a fit beyond this is a broken or forged model, and
# at -1e6 the correction divides by zero.
MAX_DRIFT_PPM = 1000.0
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace.
MAX_DEVICE_LEN = 15
_KNOWN = 4096      # validated host, device and flow names remembered (cleared past this)

Problem = tuple[str, str]

_POINTS = frozenset(POINTS)
_hosts: set[str] = set()
_devices: set[str] = set()
_flows: dict[str, Mapping] = {}


def decode_reason(err: codec.DecodeError) -> str:
    return "unknown_symbol" if isinstance(err, codec.UnknownSymbol) else "undecodable"


def host_problem(name: object, what: str = "host") -> Problem | None:
    if type(name) is str and name in _hosts:
        return None
    if not isinstance(name, str) or not HOST_NAME_RE.fullmatch(name):
        return "bad_host", f"{what} {str(name)[:80]!r}: expected {HOST_NAME_RE.pattern}"
    _remember(_hosts, name)
    return None


def _device_ok(dev: object) -> bool:
    if dev is None or dev in _devices:
        return True
    if (not isinstance(dev, str) or not 0 < len(dev.encode()) <= MAX_DEVICE_LEN
            or "/" in dev or not dev.isprintable() or any(c.isspace() for c in dev)):
        return False
    _remember(_devices, dev)
    return True


def event_problem(ev: Mapping) -> Problem | None:
    """Why a decoded LayerEvent cannot be joined, or None."""
    bad = host_problem(ev["host"])
    if bad:
        return bad
    hits = ev["hits"]
    if not hits:
        return "no_hits", "a record with no point hits"
    for hit in hits:
        if hit["point"] not in _POINTS:
            return "unknown_point", f"point {str(hit['point'])[:40]!r} is not one of {POINTS}"
        if not _device_ok(hit.get("dev")):
            return "bad_device", (f"device {str(hit.get('dev'))[:40]!r}: expected 1-{MAX_DEVICE_LEN}"
                                  " printable bytes, no '/' or whitespace")
    fid, flow = ev["flow_id"], ev["flow"]
    if _flows.get(fid) != flow:
        if fid != flow_id(flow):
            return "flow_id_mismatch", (f"flow_id {str(fid)[:120]!r} is not its flow's "
                                        f"{flow_id(flow)[:120]!r}")
        if len(_flows) >= _KNOWN:
            _flows.clear()
        _flows[fid] = flow
    return None


def clock_problem(model: Mapping) -> Problem | None:
    """Why a decoded ClockModel cannot correct timestamps, or None."""
    bad = host_problem(model["host"]) or host_problem(model["manager"], "manager")
    if bad:
        return bad
    for f in ("offset_ns", "drift_ppm", "error_bound_ns", "min_delay_ns"):
        if not math.isfinite(model[f]):
            return "clock_not_finite", f"{f} is {model[f]!r}"
    if abs(model["drift_ppm"]) >= MAX_DRIFT_PPM:
        return "clock_drift", f"drift_ppm {model['drift_ppm']!r}: |drift| must be below {MAX_DRIFT_PPM}"
    if model["error_bound_ns"] < 0:
        return "clock_bound", f"error_bound_ns {model['error_bound_ns']!r}: expected >= 0"
    return None


def _remember(known: set[str], name: str) -> None:
    if len(known) >= _KNOWN:
        known.clear()
    known.add(name)
