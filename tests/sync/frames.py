"""Ethernet/IP/UDP frames built by hand: what BPF_PROG_TEST_RUN and an AF_PACKET socket
need to put a probe in front of an XDP program exactly as a forger would."""

from __future__ import annotations

import ipaddress
import struct

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")
ETH_HLEN = 14


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes,
              smac: bytes = SRC_MAC, dmac: bytes = DST_MAC) -> bytes:
    """A frame with correct IPv4 header and UDP checksums. ``src`` may be any address the
    kernel would never send from, an IPv4-mapped IPv6 one included."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    ulen = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    udp = udp[:6] + struct.pack("!H", _csum(pseudo + udp) or 0xFFFF) + udp[8:]
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0,
                         s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        return dmac + smac + b"\x08\x00" + ip + udp
    ip = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, 64, s.packed, d.packed)
    return dmac + smac + b"\x86\xdd" + ip + udp


def udp_payload(frame: bytes) -> bytes:
    """The UDP payload of a frame built by udp_frame (or a reply an XDP program made)."""
    v6 = frame[12:14] == b"\x86\xdd"
    return frame[ETH_HLEN + (40 if v6 else 20) + 8:]


def udp_checksum_ok(frame: bytes) -> bool:
    v6 = frame[12:14] == b"\x86\xdd"
    ip = frame[ETH_HLEN:ETH_HLEN + (40 if v6 else 20)]
    udp = frame[ETH_HLEN + len(ip):]
    src, dst = (ip[8:24], ip[24:40]) if v6 else (ip[12:16], ip[16:20])
    pseudo = src + dst + (struct.pack("!IxxxB", len(udp), 17) if v6
                          else struct.pack("!BBH", 0, 17, len(udp)))
    return _csum(pseudo + udp) == 0
