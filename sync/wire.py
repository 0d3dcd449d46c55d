"""The sync probe wire format and the sample event, read from ``sync/bpf/sync.h``.

The C header is the single definition: the platform's header reader parses its structs,
``#define``s and counter enums at import, so the Python layouts cannot drift from what the
BPF programs write.
"""

from __future__ import annotations

import ctypes
import ipaddress
from pathlib import Path

from latscope.bpf.layout import Header

HEADER = Path(__file__).resolve().parent / "bpf" / "sync.h"
_H = Header(HEADER)

Probe = _H.struct("sync_probe").ctype
SampleEvent = _H.struct("sync_sample").ctype
Addr = _H.struct("sync_addr").ctype
_DEFINES = _H.defines("SYNC_")
MAGIC = _DEFINES["SYNC_MAGIC"]
VERSION = _DEFINES["SYNC_VERSION"]
KIND_REQUEST = _DEFINES["SYNC_KIND_REQUEST"]
KIND_REPLY = _DEFINES["SYNC_KIND_REPLY"]
# Counter names in index order, lower-case without the prefix (e.g. "bad_token").
RESPONDER_COUNTERS = _H.counter_names("sync_responder_counter", "RESP_", "RESP_NCOUNTERS")
MANAGER_COUNTERS = _H.counter_names("sync_manager_counter", "MGR_", "MGR_NCOUNTERS")


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
