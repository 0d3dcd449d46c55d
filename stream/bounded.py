"""Per-series and per-flow state with a size bound: what the worker keeps for every series
or flow it has seen must not grow with every source port a fleet opens.

    LruMap(max_items)          a dict that forgets its least recently written key past the bound
    FlowTags(per_pair, idle_s) the flow tag of a sample: undeclared flows beyond ``per_pair``
                               recent ones between two hosts share the tag OTHER
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterator, ValuesView
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

OTHER = "other"   # the flow tag of undeclared flows past a host pair's bound


class LruMap(Generic[K, V]):
    """A map of at most ``max_items``: writing a key makes it the newest; past the bound the
    oldest go (``evicted`` counts them)."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.evicted = 0
        self._d: OrderedDict[K, V] = OrderedDict()

    def __setitem__(self, key: K, value: V) -> None:
        d = self._d
        d[key] = value
        d.move_to_end(key)
        while len(d) > self.max_items:
            d.popitem(last=False)
            self.evicted += 1

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def get(self, key: K) -> V | None:
        return self._d.get(key)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def items(self) -> ItemsView[K, V]:
        return self._d.items()

    def values(self) -> ValuesView[V]:
        return self._d.values()


class FlowTags:
    """Undeclared flows (no topology flow: named by their flow id, so one per connection)
    get their own tag only while a host pair has at most ``per_pair`` of them seen within
    ``idle_s``; a new one past that is tagged OTHER (``aggregated`` counts the samples).
    An idle flow's place goes to the next new one (``evicted``); at most ``max_pairs`` host
    pairs are remembered, least recently seen forgotten first."""

    def __init__(self, per_pair: int = 64, idle_s: float = 300.0, max_pairs: int = 4096) -> None:
        self.per_pair = per_pair
        self.idle_s = idle_s
        self.aggregated = 0
        self.evicted = 0
        self._pairs: LruMap[tuple[str, str], OrderedDict[str, float]] = LruMap(max_pairs)

    def tag(self, src: str, dst: str, flow: str, now: float) -> str:
        pair = (src, dst)
        seen = self._pairs.get(pair)
        if seen is None:
            seen = OrderedDict()
        self._pairs[pair] = seen   # the pair is the newest now
        if flow in seen:
            seen[flow] = now
            seen.move_to_end(flow)
            return flow
        if len(seen) >= self.per_pair:
            oldest, last = next(iter(seen.items()))
            if now - last < self.idle_s:
                self.aggregated += 1
                return OTHER
            del seen[oldest]
            self.evicted += 1
        seen[flow] = now
        return flow

    def sizes(self) -> tuple[int, int]:
        """(host pairs, flows tagged on their own)."""
        return len(self._pairs), sum(len(v) for v in self._pairs.values())

    @property
    def pairs_evicted(self) -> int:
        return self._pairs.evicted
