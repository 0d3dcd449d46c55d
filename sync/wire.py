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
from latscope.sync.keys import SyncKeys

HEADER = Path(__file__).resolve().parent / "bpf" / "sync.h"
_H = Header(HEADER)

Probe = _H.struct("sync_probe").ctype
SampleEvent = _H.struct("sync_sample").ctype
Addr = _H.struct("sync_addr").ctype
Key = _H.struct("sync_key").ctype
_DEFINES = _H.defines("SYNC_")
MAGIC = _DEFINES["SYNC_MAGIC"]
VERSION = _DEFINES["SYNC_VERSION"]
KIND_REQUEST = _DEFINES["SYNC_KIND_REQUEST"]
KIND_REPLY = _DEFINES["SYNC_KIND_REPLY"]
MAC_BYTES = 8 * _DEFINES["SYNC_MAC_WORDS"]       # the MAC covers the probe up to here
SAMPLE_SUSPICIOUS = _DEFINES["SYNC_SAMPLE_SUSPICIOUS"]
# Counter names in index order, lower-case without the prefix (e.g. "bad_token").
RESPONDER_COUNTERS = _H.counter_names("sync_responder_counter", "RESP_", "RESP_NCOUNTERS")
MANAGER_COUNTERS = _H.counter_names("sync_manager_counter", "MGR_", "MGR_NCOUNTERS")


def probe_payload(probe_id: int, keys: SyncKeys, epoch: int | None = None,
                  kind: int = KIND_REQUEST, t2: int = 0, t3: int = 0,
                  version: int = VERSION) -> bytes:
    """UDP payload of a probe (or, with kind=REPLY, a reply) MAC'd under ``epoch``'s key
    (default: the current epoch); magic is big-endian on the wire, the rest host order."""
    epoch = keys.epoch() if epoch is None else epoch
    p = Probe(magic=int.from_bytes(MAGIC.to_bytes(4, "big"), "little"), version=version,
              kind=kind, epoch=epoch & (1 << 64) - 1, probe_id=probe_id, t2_ns=t2, t3_ns=t3)
    p.mac = keys.mac(epoch, bytes(p)[:MAC_BYTES])
    return bytes(p)


def mac_ok(p: Probe, keys: SyncKeys) -> bool:
    """Whether a decoded probe or reply carries the MAC of its epoch's key."""
    return p.mac == keys.mac(p.epoch, bytes(p)[:MAC_BYTES])


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
    """Allow-list key of an IPv4 or IPv6 address: family 4 or 6 and the address bytes.
    An IPv4-mapped IPv6 address is refused: as a key it would only ever match IPv6 packets
    with that (bogus) source, and as the IPv4 address it would let IPv6 spoof IPv4."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ValueError(f"{address}: IPv4-mapped IPv6 address: give the IPv4 address "
                         f"{ip.ipv4_mapped} or a real IPv6 one")
    return bytes(Addr(family=ip.version, addr=(ctypes.c_uint8 * 16)(*ip.packed)))
