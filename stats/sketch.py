"""A mergeable quantile sketch with bounded relative error (the DDSketch idea, written small).

Values fall into logarithmic buckets ``gamma**(i-1) < |v| <= gamma**i`` with
``gamma = (1+a)/(1-a)``, so any quantile is within relative error ``a`` of a true sample
value. Two sketches merge by adding bucket counts, which is what lets per-batch sketches
fold into windows, and windows into a whole run, without keeping samples. Negative
durations (clock error across hosts) keep their own buckets: they are reported, not folded
into positives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from latscope.stats._native import sketch_add_all

DEFAULT_ACCURACY = 0.01
# |v| below this many ns counts as zero: timestamps are integer ns.
_ZERO = 1.0


@dataclass
class Sketch:
    accuracy: float = DEFAULT_ACCURACY
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    zeros: int = 0
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._gamma = (1 + self.accuracy) / (1 - self.accuracy)
        self._log_gamma = math.log(self._gamma)

    # -- building -----------------------------------------------------------------------
    def add(self, value: float, n: int = 1) -> None:
        """The definition (add_all does the same per value, in C)."""
        self.count += n
        self.total += value * n
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        mag = abs(value)
        if mag < _ZERO:
            self.zeros += n
            return
        i = math.ceil(math.log(mag) / self._log_gamma)
        store = self.pos if value > 0 else self.neg
        store[i] = store.get(i, 0) + n

    def add_all(self, values: Iterable[float]) -> None:
        """add(v) for every v, in order (the same sketch), in C (stats/native/sketch.c):
        the stream worker folds a batch's durations per series at once."""
        self.count, self.total, self.min, self.max, self.zeros = sketch_add_all(
            values, self._log_gamma, self.pos, self.neg, self.count, self.total, self.min,
            self.max, self.zeros)

    def merge(self, other: Sketch) -> None:
        if other.accuracy != self.accuracy:
            raise ValueError(f"cannot merge sketches of accuracy {other.accuracy} into "
                             f"{self.accuracy}")
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zeros += other.zeros
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            for i, c in theirs.items():
                mine[i] = mine.get(i, 0) + c

    # -- reading ------------------------------------------------------------------------
    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def _value(self, i: int) -> float:
        # Representative of bucket i: relative error <= accuracy for every value in it.
        return 2 * self._gamma ** i / (self._gamma + 1)

    def quantile(self, q: float) -> float:
        """Value at quantile q in [0, 1] (nearest rank); NaN for an empty sketch."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return math.nan
        if q == 0:
            return self.min
        if q == 1:
            return self.max
        rank = q * (self.count - 1)
        seen = 0
        # Most negative first: larger magnitude in neg means smaller value.
        for i in sorted(self.neg, reverse=True):
            seen += self.neg[i]
            if seen > rank:
                return max(self.min, -self._value(i))
        seen += self.zeros
        if seen > rank:
            return 0.0
        for i in sorted(self.pos):
            seen += self.pos[i]
            if seen > rank:
                return min(self.max, self._value(i))
        return self.max

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p90, p99, max: the fields every statistics consumer reads."""
        return {"count": self.count, "mean": self.mean, "p50": self.quantile(0.5),
                "p90": self.quantile(0.9), "p99": self.quantile(0.99), "max": self.max}

    # -- storage (Faust table values are JSON) ------------------------------------------
    def to_dict(self) -> dict:
        return {"a": self.accuracy, "n": self.count, "s": self.total,
                "mn": None if self.count == 0 else self.min,
                "mx": None if self.count == 0 else self.max, "z": self.zeros,
                "p": [[i, c] for i, c in self.pos.items()],
                "ng": [[i, c] for i, c in self.neg.items()]}

    @classmethod
    def of(cls, v: Sketch | dict) -> Sketch:
        """A window's sketch as held in memory (a Sketch) or recovered from a changelog
        (its dict form)."""
        return v if isinstance(v, Sketch) else cls.from_dict(v)

    @classmethod
    def from_dict(cls, d: dict) -> Sketch:
        s = cls(accuracy=d["a"], count=d["n"], total=d["s"], zeros=d["z"],
                pos={int(i): c for i, c in d["p"]}, neg={int(i): c for i, c in d["ng"]})
        if s.count:
            s.min, s.max = d["mn"], d["mx"]
        return s
