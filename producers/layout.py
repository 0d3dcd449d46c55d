"""The event layout, read from producers/bpf/latscope.h at import time (one source of truth).

The header's `struct ls_event` gives the struct format and field names; its enums give the
point numbers. The point enum must be the one latscope.schemas.points derives from its table
(checked here at import, and by tests/core/test_points.py), so the C, the decoder and the
Avro schema cannot drift apart silently.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from latscope.schemas import points as _points

HEADER = Path(__file__).resolve().parent / "bpf" / "latscope.h"
_TYPES = {"__u8": "B", "__u16": "H", "__u32": "I", "__u64": "Q", "__s32": "i", "__s64": "q",
          "char": "s"}
_FIELD = re.compile(r"^\s*(\w+)\s+(\w+)(?:\[(\d+)\])?\s*;")


class LayoutError(ValueError):
    """latscope.h uses something this parser does not understand."""


@dataclass(frozen=True)
class StructLayout:
    name: str
    names: tuple[str, ...]
    fmt: str

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_struct(text: str, name: str, source: str = str(HEADER)) -> StructLayout:
    m = re.search(r"struct\s+" + name + r"\s*\{(.*?)\};", _strip_comments(text), flags=re.S)
    if not m:
        raise LayoutError(f"{source}: no `struct {name} {{...}};`")
    names, fmt = [], "<"
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        f = _FIELD.match(line)
        if not f or f.group(1) not in _TYPES:
            raise LayoutError(f"{source}: struct {name}: cannot parse field {line.strip()!r} "
                              f"(expected `<{'|'.join(_TYPES)}> name[N];`)")
        ctype, fname, count = f.group(1), f.group(2), f.group(3)
        code = _TYPES[ctype]
        if count and ctype in ("__u8", "char"):
            fmt += f"{count}s"
        elif count:
            raise LayoutError(f"{source}: struct {name}.{fname}: arrays only of __u8/char")
        else:
            fmt += code
        names.append(fname)
    layout = StructLayout(name, tuple(names), fmt)
    # Python reads it packed ("<"); C pads to alignment: equal sizes (inner and trailing)
    # mean the C struct has no padding and both agree byte for byte.
    if struct.calcsize("@" + fmt[1:]) != struct.calcsize(fmt) or struct.calcsize(fmt) % 8:
        raise LayoutError(f"{source}: struct {name} would have padding in C; reorder its fields")
    return layout


def parse_enum(text: str, name: str, source: str = str(HEADER)) -> dict[str, int]:
    m = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", _strip_comments(text), flags=re.S)
    if not m:
        raise LayoutError(f"{source}: no `enum {name} {{...}};`")
    out = {}
    for item in m.group(1).split(","):
        if not item.strip():
            continue
        k, _, v = item.partition("=")
        if not v.strip():
            raise LayoutError(f"{source}: enum {name}: give {k.strip()} an explicit value")
        out[k.strip()] = int(v.strip(), 0)
    return out


def parse_defines(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 0)
            for m in re.finditer(r"#define\s+(LS_\w+)\s+(\d+|0x[0-9a-fA-F]+)", text)}


_TEXT = HEADER.read_text()
EVENT = parse_struct(_TEXT, "ls_event")
_POINT_ENUM = parse_enum(_TEXT, "ls_point")
COUNTERS = {k[len("LS_C_"):].lower(): v for k, v in parse_enum(_TEXT, "ls_counter").items()
            if k != "LS_C_MAX"}
N_COUNTERS = parse_enum(_TEXT, "ls_counter")["LS_C_MAX"]
FLAG_UDP = parse_defines(_TEXT)["LS_F_UDP"]
RETRANS = _POINT_ENUM["LS_RETRANS"]
POINT_NAMES: dict[int, str] = {v: k[3:].lower() for k, v in _POINT_ENUM.items()
                               if k != "LS_RETRANS"}
POINT_NAMES_REV: dict[str, int] = {v: k for k, v in POINT_NAMES.items()}
if _POINT_ENUM != _points.c_enum():
    raise LayoutError(f"{HEADER}: enum ls_point is {_POINT_ENUM}, but schemas/points.py's "
                      f"table says {_points.c_enum()}")

EVENT_STRUCT = struct.Struct(EVENT.fmt)
FIELD_INDEX = {n: i for i, n in enumerate(EVENT.names)}
