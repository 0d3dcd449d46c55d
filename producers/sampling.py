"""Which bytes are sampled (design §3): byte b (a 32-bit TCP sequence number) is sampled when
``b % size == 0``. The kernel only tests whether a range holds one (one division, see
ls_sampled() in producers/bpf/common.bpf.h); this expands a reported range into its sampled
bytes, modulo 2^32, exactly as the kernel tests it.
"""

from __future__ import annotations

from latscope.schemas.sampling import MSS_STRIDE, effective_size, udp_modulus

__all__ = ["MSS_STRIDE", "SEQ_SPACE", "effective_size", "holds_sample", "sampled_bytes",
           "udp_modulus"]

SEQ_SPACE = 1 << 32


def holds_sample(seq: int, length: int, size: int) -> bool:
    """The kernel's test, in Python (for tests): does [seq, seq+length) mod 2^32 hold one?"""
    if length <= 0:
        return False
    off = seq % size
    off = size - off if off else 0
    return off < length or seq + length > SEQ_SPACE


def sampled_bytes(seq: int, length: int, size: int) -> list[int]:
    """Every b in [seq, seq+length) mod 2^32 with b % size == 0, in stream order."""
    end = seq + length
    first = seq + (-seq) % size
    if length <= size and end <= SEQ_SPACE:   # the hot case (one skb or call, no wrap): 0 or 1
        return [first] if first < end else []
    if length <= 0:
        return []
    length = min(length, SEQ_SPACE)
    end = seq + length
    out = list(range(first, min(end, SEQ_SPACE), size))
    if end > SEQ_SPACE:            # the range wraps: continue from 0
        out += range(0, end - SEQ_SPACE, size)
    return out
