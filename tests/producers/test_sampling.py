"""Range -> sampled bytes expansion (pure), checked against brute force, wrap included."""

from __future__ import annotations

import random

import pytest

from latscope.producers.sampling import (
    SEQ_SPACE,
    effective_size,
    holds_sample,
    sampled_bytes,
    udp_modulus,
)


def brute(seq: int, length: int, size: int) -> list[int]:
    return [b for b in ((seq + k) % SEQ_SPACE for k in range(length)) if b % size == 0]


@pytest.mark.parametrize("size", [1, 7, 1448, 72400, 1 << 20])
def test_matches_brute_force_including_wrap(size: int) -> None:
    rng = random.Random(size)
    cases = [(SEQ_SPACE - 5, 20), (SEQ_SPACE - 1, 1), (0, 1), (size - 1, 2), (size, 1)]
    cases += [(rng.randrange(SEQ_SPACE), rng.randrange(1, 70_000)) for _ in range(40)]
    cases += [(SEQ_SPACE - rng.randrange(1, 5000), rng.randrange(1, 70_000)) for _ in range(20)]
    for seq, length in cases:
        want = brute(seq, length, size)
        assert sampled_bytes(seq, length, size) == want, (seq, length)
        assert holds_sample(seq, length, size) == bool(want), (seq, length)


def test_split_ranges_pick_the_same_bytes() -> None:
    """TSO/GRO: however a stream is cut into ranges, the union of samples is the same."""
    size, start, total = 1448 * 3, SEQ_SPACE - 100_000, 300_000
    whole = sampled_bytes(start, total, size)
    rng = random.Random(1)
    pos, parts = 0, []
    while pos < total:
        n = min(rng.randrange(1, 65_536), total - pos)
        parts += sampled_bytes((start + pos) % SEQ_SPACE, n, size)
        pos += n
    assert parts == whole and len(whole) > 60


def test_sizes() -> None:
    assert effective_size(0) == 1448 and effective_size(72400) == 72400
    assert udp_modulus(72400) == 50 and udp_modulus(0) == 1
    with pytest.raises(ValueError, match="sampling size"):
        effective_size(-1)
    assert sampled_bytes(5, 0, 7) == []
