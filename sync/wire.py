"""The sync probe wire format and the sample event, read from ``sync/bpf/sync.h``.

The C header is the single definition: this module parses its structs, ``#define``s and
counter enums at import, so the Python layouts cannot drift from what the BPF programs
write. Only what sync.h uses is understood (fixed-width ``__uN`` fields, arrays of them).
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
from pathlib import Path

HEADER = Path(__file__).resolve().parent / "bpf" / "sync.h"

_CTYPES = {"__u8": ctypes.c_uint8, "__u16": ctypes.c_uint16, "__u32": ctypes.c_uint32,
           "__u64": ctypes.c_uint64}


class HeaderError(RuntimeError):
    """sync.h holds something this parser does not understand."""


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def _parse(text: str) -> tuple[dict[str, type[ctypes.Structure]], dict[str, int],
                                dict[str, list[str]]]:
    text = _strip_comments(text)
    structs: dict[str, type[ctypes.Structure]] = {}
    for name, body in re.findall(r"struct\s+(\w+)\s*\{(.*?)\};", text, flags=re.S):
        fields = []
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            m = re.fullmatch(r"(__u\d+)\s+(\w+)(?:\[(\d+)\])?", decl)
            if not m or m.group(1) not in _CTYPES:
                raise HeaderError(f"{HEADER}: struct {name}: cannot parse field {decl!r}")
            ctype = _CTYPES[m.group(1)]
            fields.append((m.group(2), ctype * int(m.group(3)) if m.group(3) else ctype))
        structs[name] = type(name, (ctypes.Structure,), {"_fields_": fields})
    defines = {k: int(v, 0) for k, v in
               re.findall(r"#define\s+(SYNC_\w+)\s+(0x[0-9a-fA-F]+|\d+)U?", text)}
    enums = {name: [e.split("=")[0].strip() for e in body.split(",") if e.strip()]
             for name, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\};", text, flags=re.S)}
    return structs, defines, enums


_STRUCTS, _DEFINES, _ENUMS = _parse(HEADER.read_text())
Probe = _STRUCTS["sync_probe"]
SampleEvent = _STRUCTS["sync_sample"]
Addr = _STRUCTS["sync_addr"]
MAGIC = _DEFINES["SYNC_MAGIC"]
VERSION = _DEFINES["SYNC_VERSION"]
KIND_REQUEST = _DEFINES["SYNC_KIND_REQUEST"]
KIND_REPLY = _DEFINES["SYNC_KIND_REPLY"]
# Counter names in index order, lower-case without the prefix (e.g. "bad_token").
RESPONDER_COUNTERS = [n.removeprefix("RESP_").lower()
                      for n in _ENUMS["sync_responder_counter"] if n != "RESP_NCOUNTERS"]
MANAGER_COUNTERS = [n.removeprefix("MGR_").lower()
                    for n in _ENUMS["sync_manager_counter"] if n != "MGR_NCOUNTERS"]


def probe_payload(probe_id: int, token: int, kind: int = KIND_REQUEST) -> bytes:
    """UDP payload of a probe; magic is big-endian on the wire, the rest host order."""
    p = Probe(magic=int.from_bytes(MAGIC.to_bytes(4, "big"), "little"), version=VERSION,
              kind=kind, token=token, probe_id=probe_id)
    return bytes(p)


def decode_probe(data: bytes) -> Probe:
    if len(data) < ctypes.sizeof(Probe):
        raise ValueError(f"probe payload is {len(data)} bytes, expected {ctypes.sizeof(Probe)}")
    return Probe.from_buffer_copy(data[:ctypes.sizeof(Probe)])


def decode_sample(data: bytes) -> SampleEvent:
    """A ring-buffer record of the manager's XDP program."""
    if len(data) < ctypes.sizeof(SampleEvent):
        raise ValueError(f"sample event is {len(data)} bytes, expected "
                         f"{ctypes.sizeof(SampleEvent)}")
    return SampleEvent.from_buffer_copy(data[:ctypes.sizeof(SampleEvent)])


def addr_key(address: str) -> bytes:
    """Allow-list key of an IPv4 or IPv6 address (IPv4 mapped into ::ffff:0:0/96)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip.packed
