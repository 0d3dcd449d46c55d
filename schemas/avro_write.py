"""Avro primitive encoders for the agent's hand-written LayerEvent encoder
(producers/avro.py); the generic path is fastavro, in schemas/codec.py, and the stream
worker's Breakdown is written in C (stream/native/encode.c).

Varints come from tables rather than loops: ``SMALL[n]`` is the whole varint of
``n < 2**14``, ``LOW14[n]`` the two continued bytes of n's low 14 bits, and the part above
bit 28 of a large value (a nanosecond timestamp's changes every ~134 ms) is cached.
"""

from __future__ import annotations


def varint(n: int) -> bytes:
    """Unsigned LEB128 of n >= 0."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


SMALL = [varint(n) for n in range(1 << 14)]
LOW14 = [bytes(((n & 0x7F) | 0x80, (n >> 7 & 0x7F) | 0x80)) for n in range(1 << 14)]
_HIGH: dict[int, bytes] = {}
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1


def long(v: int) -> bytes:
    """Avro long (zigzag varint). Out of the 64-bit range raises OverflowError."""
    n = (v << 1) ^ (v >> 63)
    if n < 16384:
        if v < LONG_MIN:      # huge negatives wrap to small n
            raise OverflowError(f"{v} does not fit an Avro long")
        return SMALL[n]
    if n < 1 << 28:
        return LOW14[n & 16383] + SMALL[n >> 14]
    if not LONG_MIN <= v <= LONG_MAX:
        raise OverflowError(f"{v} does not fit an Avro long")
    hi = n >> 28
    tail = _HIGH.get(hi)
    if tail is None:
        if len(_HIGH) > 4096:
            _HIGH.clear()
        tail = _HIGH[hi] = varint(hi)
    return LOW14[n & 16383] + LOW14[n >> 14 & 16383] + tail


def string(s: str) -> bytes:
    b = s.encode()
    return long(len(b)) + b
