"""The worker's input order (stream/sequence.py), driven with deliveries as Faust made them
around a partition assignment (tests/stream/test_recovery.py has the real worker): records
fetched before the seek delivered, some again after it, some never. Truth: the offsets
written out here, each taken exactly once and in order."""

from __future__ import annotations

from types import SimpleNamespace

from latscope.stream.sequence import HOLE_AFTER, RESEEK_EVERY_S, InputOrder


def ev(p: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(partition=p, offset=offset))


def offsets(events: list) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in events]


def test_repeated_records_are_skipped_and_counted() -> None:
    order = InputOrder()
    order.start(0, 10)
    take, seek = order.split([ev(0, 10), ev(0, 11), ev(0, 12)], 0.0)
    assert offsets(take) == [(0, 10), (0, 11), (0, 12)] and seek == {}
    # delivered again (the fetcher sought back): none taken twice
    take, seek = order.split([ev(0, 11), ev(0, 12), ev(0, 13)], 0.1)
    assert offsets(take) == [(0, 13)] and seek == {}
    assert order.counters.input_repeated == 2


def test_records_before_the_start_are_not_taken() -> None:
    """Fetched before the seek to the committed offset: already done by the last worker."""
    order = InputOrder()
    order.start(3, 4100)
    take, _ = order.split([ev(3, 4098), ev(3, 4099), ev(3, 4100)], 0.0)
    assert offsets(take) == [(3, 4100)]


def test_a_gap_seeks_back_once_and_waits_for_the_missing_records() -> None:
    """Offset 3 never delivered (cleared from a queue): 4 and 5 wait, the partition is sought
    back to 3 once (not again for the records still in flight), other partitions go on."""
    order = InputOrder()
    order.start(2, 0)
    order.start(1, 0)
    take, seek = order.split([ev(2, 0), ev(2, 1), ev(2, 2), ev(2, 4), ev(1, 0), ev(2, 5)], 0.0)
    assert offsets(take) == [(2, 0), (2, 1), (2, 2), (1, 0)] and seek == {2: 3}
    take, seek = order.split([ev(2, 6), ev(1, 1)], 0.2)
    assert offsets(take) == [(1, 1)] and seek == {}
    take, seek = order.split([ev(2, 3), ev(2, 4), ev(2, 5), ev(2, 6)], 0.4)
    assert offsets(take) == [(2, 3), (2, 4), (2, 5), (2, 6)] and seek == {}
    assert order.counters.input_reseeks == 1 and order.counters.input_holes == 0


def test_a_gap_that_stays_is_sought_again_then_taken_as_a_hole() -> None:
    order = InputOrder()
    order.start(0, 7)
    now, seeks = 0.0, 0
    for _ in range(HOLE_AFTER):
        take, seek = order.split([ev(0, 9)], now)
        assert take == [] and seek == {0: 7}
        seeks += 1
        now += RESEEK_EVERY_S
    take, seek = order.split([ev(0, 9), ev(0, 10)], now)
    assert offsets(take) == [(0, 9), (0, 10)] and seek == {}
    assert order.counters.input_reseeks == seeks and order.counters.input_holes == 2


def test_settled_offsets_and_reset() -> None:
    order = InputOrder()
    order.start(0, 5)
    order.split([ev(0, 5), ev(0, 6)], 0.0)
    order.settle(0, 5)
    order.settle(0, 6)
    assert order.settled == {0: 7}
    order.reset()
    assert order.unknown([ev(0, 7), ev(1, 0)]) == {0, 1}
    # settling after the reassignment what was taken before: not this worker's to commit
    order.settle(0, 7)
    assert order.settled == {}
    order.start(0, 7)
    order.settle(0, 7)
    assert order.settled == {0: 8}


def test_a_partition_waiting_after_its_seek_is_sought_again_without_new_records() -> None:
    """The copies fetched after the seek never came and nothing later either (the fetcher
    dropped them, the partition is at its end): sought again a while later, until it moves."""
    order = InputOrder()
    order.start(1, 20)
    _, seek = order.split([ev(1, 22)], 0.0)
    assert seek == {1: 20}
    assert order.stalled(RESEEK_EVERY_S / 2) == {}
    assert order.stalled(RESEEK_EVERY_S) == {1: 20}
    take, _ = order.split([ev(1, 20), ev(1, 21), ev(1, 22)], RESEEK_EVERY_S + 0.1)
    assert len(take) == 3
    assert order.stalled(10 * RESEEK_EVERY_S) == {}
