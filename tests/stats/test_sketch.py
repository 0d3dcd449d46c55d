"""The quantile sketch: relative accuracy, negatives, merge, storage round trip."""

from __future__ import annotations

import random

import pytest

from latscope.stats.sketch import Sketch


def exact(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[int(q * (len(s) - 1))]


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_quantiles_within_relative_accuracy(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(10, 2) for _ in range(20_000)]
    sk = Sketch(accuracy=0.01)
    for v in values:
        sk.add(v)
    assert sk.quantile(q) == pytest.approx(exact(values, q), rel=0.0101)
    assert sk.count == len(values)
    assert sk.mean == pytest.approx(sum(values) / len(values))


def test_negative_values_are_kept_and_ordered() -> None:
    sk = Sketch()
    for v in (-5000, -100, 0, 100, 200):
        sk.add(v)
    assert sk.quantile(0.0) == -5000
    assert sk.quantile(0.25) == pytest.approx(-100, rel=0.011)
    assert sk.quantile(0.5) == 0
    assert sk.max == 200 and sk.min == -5000


def test_merge_equals_one_sketch_of_everything() -> None:
    rng = random.Random(3)
    a, b, both = Sketch(), Sketch(), Sketch()
    for i in range(5000):
        v = rng.uniform(-1e3, 1e6)
        (a if i % 2 else b).add(v)
        both.add(v)
    a.merge(b)
    for q in (0.1, 0.5, 0.99):
        assert a.quantile(q) == both.quantile(q)
    assert a.count == both.count and a.max == both.max


def test_round_trip_and_empty() -> None:
    sk = Sketch()
    assert sk.summary()["count"] == 0
    for v in (1, 10, 100, -3):
        sk.add(v)
    back = Sketch.from_dict(sk.to_dict())
    assert back.summary() == sk.summary()
    with pytest.raises(ValueError, match="accuracy"):
        back.merge(Sketch(accuracy=0.05))


def test_add_all_is_add_per_value() -> None:
    rng = random.Random(8)
    values = [rng.choice([0, 0.4, -0.4, 1, -1, 7, -7, 10**9, -(10**9), 2**62]) for _ in range(50)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(500)] + [rng.randrange(10**7) for _ in range(500)]
    one, many = Sketch(), Sketch()
    for v in values:
        one.add(v)
    many.add_all(values[:300])
    many.add_all(values[300:])
    assert many.to_dict() == one.to_dict()
    assert many.count == len(values) and many.zeros == one.zeros > 0
    empty = Sketch()
    empty.add_all([])
    assert empty.to_dict() == Sketch().to_dict()


def test_add_all_keeps_what_add_keeps() -> None:
    # min and max stay the values given (int or float), compared as Python compares them,
    # also beyond 2**53 where two ints can round to one float; any iterable is taken.
    cases = [[2**53 + 1, 2**53, float(2**53)], [-(2**60) - 1, -(2**60), 3.5, 3],
             [5, 5.0, -0.0, 0], [1e300, -1e300, 7]]
    for values in cases:
        one, many = Sketch(), Sketch()
        for v in values:
            one.add(v)
        many.add_all(v for v in values)
        assert (many.min, many.max) == (one.min, one.max)
        assert (type(many.min), type(many.max)) == (type(one.min), type(one.max))
        assert many.to_dict() == one.to_dict()


def test_add_all_refuses_what_is_not_a_number() -> None:
    sk = Sketch()
    with pytest.raises(TypeError, match="int or float"):
        sk.add_all([1, "2"])
    with pytest.raises(OverflowError):
        sk.add_all([10**400])
