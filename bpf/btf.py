"""The running kernel's BTF, read where the libbpf binding does not reach: enums by name
(the drop reasons, producers/flow_stats.py). One pass over the raw file's type section in
Python: a server has /sys/kernel/btf/vmlinux but maybe no bpftool."""

from __future__ import annotations

import struct
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# BTF (include/uapi/linux/btf.h): bytes of data after each kind's 12-byte btf_type, fixed
# and per vlen member; 0 for kinds without any (INT's 4 and VAR's 4 are fixed).
_BTF_ENUM, _BTF_ENUM64 = 6, 19
_BTF_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_BTF_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


def btf_enums(path: Path, names: set[str]) -> dict[str, dict[int, str]]:
    """The named enums of a raw BTF file (``/sys/kernel/btf/vmlinux``): value -> member name,
    the first name of a value kept. Read in Python, not through libbpf or bpftool: a server
    has the file but maybe no bpftool, and this is one pass over its type section."""
    data = path.read_bytes()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
        "<HBBIIIII", data)
    if magic != 0xEB9F:
        raise ValueError(f"{path}: not raw BTF (magic {magic:#x})")
    strs = hdr_len + str_off

    def name(off: int) -> str:
        return data[strs + off:data.index(b"\0", strs + off)].decode()

    out: dict[str, dict[int, str]] = {}
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info = struct.unpack_from("<II", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        signed = not (info >> 31)            # kind_flag set: unsigned members
        pos += 12
        if kind in (_BTF_ENUM, _BTF_ENUM64) and name_off and name(name_off) in names:
            members: dict[int, str] = {}
            for i in range(vlen):
                if kind == _BTF_ENUM:
                    m_off, val = struct.unpack_from("<Ii" if signed else "<II", data, pos + 8 * i)
                else:
                    m_off, lo, hi = struct.unpack_from("<III", data, pos + 12 * i)
                    val = lo | hi << 32
                members.setdefault(val, name(m_off))
            out.setdefault(name(name_off), members)
        pos += _BTF_FIXED.get(kind, 0) + vlen * _BTF_PER_MEMBER.get(kind, 0)
    return out
