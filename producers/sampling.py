"""Which bytes are sampled (design §3): byte b (a 32-bit TCP sequence number) is sampled when
``b % size == 0``. The kernel only tests whether a range holds one (one division, see
ls_sampled() in producers/bpf/common.bpf.h); this expands a reported range into its sampled
bytes, modulo 2^32, exactly as the kernel tests it.
"""

from __future__ import annotations

MSS_STRIDE = 1448   # the seed's `size: 0` ("every packet") becomes one MSS
SEQ_SPACE = 1 << 32


def effective_size(size: int) -> int:
    """The stride used for a configured sampling size (0 = every packet = one MSS)."""
    if size < 0:
        raise ValueError(f"sampling size must be >= 0, got {size}")
    return size or MSS_STRIDE


def udp_modulus(size: int) -> int:
    """UDP is sampled by datagram hash: one datagram in size/MSS (at least every one)."""
    return max(1, effective_size(size) // MSS_STRIDE)


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
