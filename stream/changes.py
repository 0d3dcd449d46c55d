"""The worker's table writes: applied to the tables' dicts at once, and remembered per key
(its last value) for the changelog, which gets each changed key once per commit.

Per commit, not per batch: the open windows of every flow and segment change in every
batch and a sample pending at a batch's end is mostly closed by the next, and every record
is costly in Faust's producer.

Table writes name their partition explicitly: a ``take`` batch mixes partitions and a timer
has no current event, while Faust's own ``table[key] = v`` uses the current event's
partition. Every pending sample and open window carries its partition, so a rebalance
recovers each entry on the worker that owns its flow's partition.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# (table, partition, key, JSON value, or None: a tombstone)
Record = tuple[str, int, str, bytes | None]
Write = tuple[int, dict | None] | dict   # (partition, value or None) or a value with "p"


class TableChanges:
    """``tables``: name -> the dict a table keeps its rows in (the Faust memory store's own
    dict, which its recovery writes too; looked up on each use). ``encode``: per table, the
    JSON form of a value, for values holding live objects."""

    def __init__(self, tables: Mapping[str, dict],
                 encode: Mapping[str, Callable[[dict], Any]] | None = None) -> None:
        self.tables = tables
        self._encode = dict(encode or {})
        # table -> key -> (partition, value or None, in the changelog once sealed ones are sent)
        self._dirty: dict[str, dict[str, tuple[int, dict | None, bool]]] = {}

    def apply(self, name: str, writes: Mapping[str, Write]) -> None:
        """Change the table in memory now; the changelog gets the key's last value at seal()."""
        if not writes:
            return
        dirty = self._dirty.setdefault(name, {})
        data = self.tables[name]
        for key, w in writes.items():
            partition, value = (w["p"], w) if isinstance(w, dict) else w
            was = dirty.get(key)
            # in the changelog (or in a sealed change): it was in the table at the last seal
            dirty[key] = (partition, value, key in data if was is None else was[2])
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def forget(self, name: str, keys: Iterable[str]) -> None:
        """Drop keys from the table without a changelog record (another worker owns them)."""
        data, dirty = self.tables[name], self._dirty.get(name, {})
        for key in keys:
            data.pop(key, None)
            dirty.pop(key, None)

    def seal(self) -> list[Record]:
        """The changes since the last seal as changelog records, and start over. Values are
        encoded now: later batches change the same objects in place."""
        out: list[Record] = []
        for name, dirty in self._dirty.items():
            encode = self._encode.get(name)
            for key, (partition, value, logged) in dirty.items():
                if value is not None:
                    out.append((name, partition, key, _dumps(encode(value) if encode else value)))
                elif logged:     # a key born and gone since the last seal needs no tombstone
                    out.append((name, partition, key, None))
            dirty.clear()
        return out


def _dumps(value: Any) -> bytes:
    """JSON as Faust's json serializer writes it (the tables' value serializer reads it)."""
    return json.dumps(value, separators=(",", ":")).encode()
