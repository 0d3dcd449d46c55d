"""The event layout, read from producers/bpf/latscope.h at import time (one source of truth)
by the platform's header reader.

The header's `struct ls_event` gives the struct format and field names; its enums give the
point numbers. The point enum must be the one latscope.schemas.points derives from its table
(checked here at import, and by tests/core/test_points.py), so the C, the decoder and the
Avro schema cannot drift apart silently.
"""

from __future__ import annotations

from pathlib import Path

from latscope.bpf.layout import Header, LayoutError
from latscope.schemas import points as _points

HEADER = Path(__file__).resolve().parent / "bpf" / "latscope.h"
_H = Header(HEADER)

EVENT = _H.struct("ls_event")
_POINT_ENUM = _H.enum("ls_point")
COUNTERS = _H.counter_names("ls_counter", "LS_C_", "LS_C_MAX")   # per-CPU slot order
FLAG_UDP = _H.defines("LS_F_")["LS_F_UDP"]
FLAG_RESENT = _H.defines("LS_F_")["LS_F_RESENT"]   # TCP: the segment carries the resend mark
NETNS_FAST = _H.defines("LS_NETNS_")["LS_NETNS_FAST"]   # namespaces the probes hold as constants
FLAG_WAIT = _H.defines("LS_F_")["LS_F_WAIT"]       # the wait_* fields hold socket-wait causes
# Socket-wait causes (wait.bpf.h): enum ls_wait's names in value order; ls_event's wait_*
# fields follow it, one after another.
WAIT_CAUSES: tuple[str, ...] = tuple(
    k[5:].lower() for k, v in sorted(_H.enum("ls_wait").items(), key=lambda kv: kv[1])
    if k != "LS_W_MAX")
if EVENT.names[EVENT.names.index("wait_" + WAIT_CAUSES[0]):][:len(WAIT_CAUSES)] != tuple(
        "wait_" + c for c in WAIT_CAUSES):
    raise LayoutError(f"{HEADER}: ls_event's wait_* fields are not enum ls_wait's order")
RETRANS = _POINT_ENUM["LS_RETRANS"]
POINT_NAMES: dict[int, str] = {v: k[3:].lower() for k, v in _POINT_ENUM.items()
                               if k != "LS_RETRANS"}
POINT_NAMES_REV: dict[str, int] = {v: k for k, v in POINT_NAMES.items()}
if _POINT_ENUM != _points.c_enum():
    raise LayoutError(f"{HEADER}: enum ls_point is {_POINT_ENUM}, but schemas/points.py's "
                      f"table says {_points.c_enum()}")

EVENT_STRUCT = EVENT.codec
FIELD_INDEX = {n: i for i, n in enumerate(EVENT.names)}

# Per-flow counters (flow_stats.bpf.h): key and value of the flow_stats map, kind names.
FS_KEY = _H.struct("ls_fs_key")
FS_VAL = _H.struct("ls_fs_val")
FS_KINDS: dict[int, str] = {v: k[6:].lower() for k, v in _H.enum("ls_fs_kind").items()}

# The sampling in effect (the `sampling` map's value; probes.Probes.set_sampling).
SAMPLING = _H.struct("ls_sampling")
