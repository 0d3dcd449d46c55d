"""The one reader of the C headers that BPF programs and Python share.

A header (``producers/bpf/latscope.h``, ``sync/bpf/sync.h``) is the single definition of a
struct, an enum or a ``#define``; Python reads it at import, so its layouts cannot drift
from what the programs write. Only what those headers use is understood: fixed-width
``__uN``/``__sN`` fields, arrays of ``__u8``/``char``, enums, integer ``#define``s. A struct
must have no padding, so its packed (``struct``) and C (``ctypes``) layouts agree byte for
byte.
"""

from __future__ import annotations

import ctypes
import re
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

_TYPES = {"__u8": ("B", ctypes.c_uint8), "__u16": ("H", ctypes.c_uint16),
          "__u32": ("I", ctypes.c_uint32), "__u64": ("Q", ctypes.c_uint64),
          "__s32": ("i", ctypes.c_int32), "__s64": ("q", ctypes.c_int64),
          "char": ("s", ctypes.c_char)}
_FIELD = re.compile(r"(\w+)\s+(\w+)(?:\[(\d+)\])?")


class LayoutError(ValueError):
    """A header uses something this reader does not understand."""


@dataclass(frozen=True)
class StructLayout:
    name: str
    names: tuple[str, ...]
    fmt: str                                   # struct module format, little-endian, packed
    fields: tuple[tuple[str, object], ...]     # ctypes (name, type) pairs

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @cached_property
    def codec(self) -> struct.Struct:
        return struct.Struct(self.fmt)

    @cached_property
    def ctype(self) -> type[ctypes.Structure]:
        """The same layout as a ctypes Structure (attribute access, from_buffer_copy)."""
        return type(self.name, (ctypes.Structure,), {"_fields_": list(self.fields)})


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


class Header:
    """One C header, read once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = _strip_comments(path.read_text())

    def struct(self, name: str) -> StructLayout:
        m = re.search(r"struct\s+" + name + r"\s*\{(.*?)\};", self.text, flags=re.S)
        if not m:
            raise LayoutError(f"{self.path}: no `struct {name} {{...}};`")
        names, fmt, fields = [], "<", []
        for decl in filter(None, (d.strip() for d in m.group(1).split(";"))):
            f = _FIELD.fullmatch(decl)
            if not f or f.group(1) not in _TYPES:
                raise LayoutError(f"{self.path}: struct {name}: cannot parse field {decl!r} "
                                  f"(expected `<{'|'.join(_TYPES)}> name[N];`)")
            ctype, fname, count = f.group(1), f.group(2), f.group(3)
            code, ct = _TYPES[ctype]
            if count and ctype not in ("__u8", "char"):
                raise LayoutError(f"{self.path}: struct {name}.{fname}: arrays only of __u8/char")
            fmt += f"{count}s" if count else code
            fields.append((fname, ct * int(count) if count else ct))
            names.append(fname)
        layout = StructLayout(name, tuple(names), fmt, tuple(fields))
        # Python reads it packed ("<"); C pads to alignment: equal sizes (inner and trailing)
        # mean the C struct has no padding and both agree byte for byte.
        if struct.calcsize("@" + fmt[1:]) != layout.size or layout.size % 8:
            raise LayoutError(f"{self.path}: struct {name} would have padding in C; "
                              "reorder its fields")
        return layout

    def enum(self, name: str) -> dict[str, int]:
        """Names to values; a member without ``= value`` follows the previous one, as in C."""
        m = re.search(r"enum\s+" + name + r"\s*\{(.*?)\};", self.text, flags=re.S)
        if not m:
            raise LayoutError(f"{self.path}: no `enum {name} {{...}};`")
        out: dict[str, int] = {}
        nxt = 0
        for item in filter(None, (i.strip() for i in m.group(1).split(","))):
            k, _, v = item.partition("=")
            try:
                value = int(v.strip(), 0) if v.strip() else nxt
            except ValueError:
                raise LayoutError(f"{self.path}: enum {name}: {k.strip()} = {v.strip()!r}: "
                                  "expected an integer") from None
            out[k.strip()] = value
            nxt = value + 1
        return out

    def defines(self, prefix: str) -> dict[str, int]:
        """Integer ``#define``s whose names start with ``prefix``."""
        return {m.group(1): int(m.group(2), 0) for m in re.finditer(
            r"#define\s+(" + prefix + r"\w*)\s+(0x[0-9a-fA-F]+|\d+)U?", self.text)}

    def counter_names(self, enum: str, prefix: str, end: str) -> list[str]:
        """An index-ordered counter enum as lower-case names without ``prefix``; ``end`` is
        the closing count member. Gaps are an error: the per-CPU array is dense."""
        values = self.enum(enum)
        if end not in values:
            raise LayoutError(f"{self.path}: enum {enum}: no closing {end}")
        items = sorted((v, k) for k, v in values.items() if k != end)
        if [v for v, _ in items] != list(range(values[end])):
            raise LayoutError(f"{self.path}: enum {enum}: expected values 0..{end}-1 without gaps")
        return [k.removeprefix(prefix).lower() for _, k in items]
