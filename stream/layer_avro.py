"""A LayerEvent decoder for the stream worker's hot path: the same dicts as
``latscope.schemas.codec`` for the current LayerEvent and LayerEventBatch schemas
(tests/stream/test_fast_avro.py holds it to that).

Why: fastavro's generic reader costs ~10 µs per LayerEvent of a 3-host path (~5 hits),
walking the schema for every field; the stream worker reads three per sample. Here the
body is read by hand (~5 µs), and what repeats (a host and flow's head, a hit's ifindex,
device, netns and cpu) is decoded once and looked up by its bytes.

Only the plain, valid form of the current schemas is read here. Anything else goes to the
codec, which decodes it or raises exactly as before: another fingerprint (an older
writer, another record type), a body this reader does not take on (a negative enum or
union index, a boolean byte other than 0/1, a varint over 9 bytes, 64 or more hits or an
array in several blocks, a device name of 64 bytes or more) and every error (truncated,
trailing bytes, bad UTF-8, not single-object).
The decoder is pinned to the schemas' wire shape (fingerprints): if they change, it fails
loudly at construction (SchemaChanged).

    decode_layer_event(data: bytes) -> dict          # codec.decode(data, expect="LayerEvent")[1]
    decode_layer_events(data: bytes) -> list[dict]   # codec.decode_layer_events(data)
"""

from __future__ import annotations

import json

from latscope.schemas import codec
from latscope.schemas.records import POINTS

# Wire shapes this reader takes: CRC-64-AVRO fingerprints of the parsing canonical forms
# when it was written (checked at construction).
_PINNED = {"LayerEvent": "07636ac07c2f2d05", "LayerEventBatch": "361b3ac2dd2ee3c7"}
_PROTOS = ("tcp", "udp")     # FlowKey.proto symbols, checked at construction
_HEADER = codec.HEADER_LEN
_CACHE_MAX = 50_000          # entries per cache; cleared (not grown) past this


# A varint of n bytes (n <= 8) read little-endian as one int: the continuation bits it
# must have (all bytes but the last), and its 7-bit groups two bytes at a time.
_CONT_MASK = [(1 << 8 * n) - 1 & 0x8080808080808080 for n in range(9)]
_CONT = [m & ~(0x80 << 8 * (n - 1)) if n else -1 for n, m in enumerate(_CONT_MASK)]
_GROUPS = [(i & 0x7F) | (i >> 8 & 0x7F) << 7 for i in range(1 << 16)]


class SchemaChanged(RuntimeError):
    """schemas/layer_event*.avsc no longer have the wire shape this reader takes."""


class _NotMine(Exception):
    """Valid Avro maybe, but not the plain form this reader takes: the codec decides."""


def _symbols(schema: dict, field: str) -> tuple[str, ...]:
    t = next(f["type"] for f in schema["fields"] if f["name"] == field)
    return tuple(t["symbols"])


class LayerEventDecoder:
    def __init__(self) -> None:
        c = codec.default_codec()
        for name, want in _PINNED.items():
            got = c.fingerprint(name).hex()
            if got != want:
                raise SchemaChanged(f"schemas: {name}'s wire shape changed (fingerprint {got}, "
                                    f"this reader takes {want}): update stream/layer_avro.py")
        event = json.loads((codec.SCHEMA_DIR / "layer_event.avsc").read_text())
        flow = json.loads((codec.SCHEMA_DIR / "flow_key.avsc").read_text())
        hit = next(f["type"] for f in event["fields"] if f["name"] == "hits")["items"]
        if _symbols(flow, "proto") != _PROTOS or _symbols(hit, "point") != POINTS:
            raise SchemaChanged("schemas: FlowKey.proto or PointHit.point symbols are not "
                                "what stream/layer_avro.py reads")
        self._event_fp = c.fingerprint("LayerEvent")
        self._batch_fp = c.fingerprint("LayerEventBatch")
        # Enum index by its zigzag byte (2*i); None where that byte is no plain index.
        self._point = [None] * 256
        for i, p in enumerate(POINTS):
            self._point[2 * i] = p
        # bytes → (length, decoded): a host and flow's head; a hit's ifindex .. cpu (with
        # the hit dicts of each point byte seen with it)
        self._heads: dict[bytes, tuple[int, int, str, str, dict]] = {}
        self._tails: dict[bytes, tuple[int, dict[int, dict], tuple]] = {}
        self._head_len = 0    # where to look first
        self._tail_len = [0] * 256
        self._ts_len = [0] * 256
        self._tail_lens: set[int] = set()

    # -- public -------------------------------------------------------------------------
    def decode_event(self, data: bytes) -> dict:
        """``codec.decode(data, expect="LayerEvent")[1]``, or its error."""
        if (type(data) is bytes and data[2:_HEADER] == self._event_fp
                and data[:2] == codec.MAGIC):
            try:
                ev, pos = self._event(data, _HEADER)
                if pos == len(data):
                    return ev
            except (_NotMine, IndexError, ValueError):
                pass
        return codec.decode(data, expect="LayerEvent")[1]

    def decode_events(self, data: bytes) -> list[dict]:
        """``codec.decode_layer_events(data)``: a LayerEventBatch's events or one LayerEvent."""
        if type(data) is bytes and data[:2] == codec.MAGIC:
            fp = data[2:_HEADER]
            try:
                if fp == self._batch_fp:
                    out, pos = self._batch(data, _HEADER)
                    if pos == len(data):
                        return out
                elif fp == self._event_fp:
                    ev, pos = self._event(data, _HEADER)
                    if pos == len(data):
                        return [ev]
            except (_NotMine, IndexError, ValueError):
                pass
        return codec.decode_layer_events(data)

    # -- bodies -------------------------------------------------------------------------
    def _batch(self, d: bytes, pos: int) -> tuple[list[dict], int]:
        out: list[dict] = []
        while True:
            n, pos = _varint(d, pos)
            if n == 0:
                return out, pos
            if n < 0:
                raise _NotMine
            for _ in range(n):
                ev, pos = self._event(d, pos)
                out.append(ev)

    def _event(self, d: bytes, pos: int) -> tuple[dict, int]:
        # schema_version .. flow: the same bytes for every record of a host and flow. They
        # are prefix-free (each field delimits itself), so bytes equal to a cached head ARE
        # that head: looked up at the last head's length first, parsed only when new.
        head = self._heads.get(d[pos:pos + self._head_len])
        if head is None:
            head = self._head_at(d, pos)
        hl, version, host, flow_id, flow = head
        pos += hl
        self._head_len = hl
        seq, pos = _varint(d, pos)
        retrans, complete = d[pos], d[pos + 1]
        if retrans > 1 or complete > 1:
            raise _NotMine
        n = d[pos + 2]                     # hit count: one block of at most 63 hits
        if n & 0x81:
            raise _NotMine
        pos += 3
        hits = []
        if n:
            tails = self._tails
            from_bytes = int.from_bytes
            cont_mask, cont, groups = _CONT_MASK, _CONT, _GROUPS
            tail_len = self._tail_len      # by point byte: a point's tails look alike
            ts_len = self._ts_len          # by point byte: a timestamp's varint length
            for _ in range(n >> 1):
                pb = d[pos]                # point (checked with the template below)
                # ts_ns: zigzag varint. At the length last seen for this point (up to 8
                # bytes) its 7-bit groups are read two bytes at a time from a table.
                tl = ts_len[pb]
                x = from_bytes(d[pos + 1:pos + 1 + tl], "little")
                if x & cont_mask[tl] == cont[tl]:
                    v = (groups[x & 0xFFFF] | groups[x >> 16 & 0xFFFF] << 14 |
                         groups[x >> 32 & 0xFFFF] << 28 | groups[x >> 48] << 42)
                    pos += 1 + tl
                else:   # another length: _varint inlined (a call per hit costs), 9 bytes at most
                    b = d[pos + 1]
                    start = pos + 1
                    pos += 2
                    v = b & 0x7F
                    shift = 7
                    while b & 0x80:
                        b = d[pos]
                        pos += 1
                        v |= (b & 0x7F) << shift
                        shift += 7
                        if shift > 63:
                            raise _NotMine
                    if pos - start <= 8:
                        ts_len[pb] = pos - start
                # ifindex, dev, netns, cpu: repeat per device and CPU; prefix-free as above
                tail = tails.get(d[pos:pos + tail_len[pb]])
                if tail is None:
                    tail = self._tail_at(d, pos)
                    tail_len[pb] = tail[0]
                pos += tail[0]
                hit = tail[1].get(pb)
                if hit is None:
                    hit = self._template(tail, pb)
                hit = hit.copy()
                hit["ts_ns"] = (v >> 1) ^ -(v & 1)
                hits.append(hit)
            if d[pos] != 0:                # the array's end (several blocks: the codec's)
                raise _NotMine
            pos += 1
        return {"schema_version": version, "host": host, "flow_id": flow_id,
                "flow": flow.copy(), "seq": seq, "retrans": retrans == 1,
                "complete": complete == 1, "hits": hits}, pos

    def _head_at(self, d: bytes, start: int) -> tuple[int, int, str, str, dict]:
        """Parse a head not found at the last length: cached by its bytes."""
        version, pos = _varint(d, start)
        host, pos = _string(d, pos)
        flow_id, pos = _string(d, pos)
        p = d[pos]
        if p & 1 or p >> 1 >= len(_PROTOS):
            raise _NotMine
        family, pos = _varint(d, pos + 1)
        src, pos = _string(d, pos)
        dst, pos = _string(d, pos)
        sport, pos = _varint(d, pos)
        dport, pos = _varint(d, pos)
        key = d[start:pos]
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > _CACHE_MAX:
                self._heads.clear()
            head = self._heads[key] = (len(key), version, host, flow_id, {
                "proto": _PROTOS[p >> 1], "family": family, "src": src, "dst": dst,
                "sport": sport, "dport": dport})
        return head

    def _tail_at(self, d: bytes, start: int) -> tuple[int, dict[int, dict]]:
        """A hit's ifindex .. cpu not found at the last length: at another known length,
        else parsed and cached by its bytes."""
        tails = self._tails
        for n in self._tail_lens:
            tail = tails.get(d[start:start + n])
            if tail is not None:
                return tail
        ifindex, pos = _varint(d, start)
        u = d[pos]
        if u == 0:
            dev, pos = None, pos + 1
        elif u == 2:
            dev, pos = _string(d, pos + 1)
        else:
            raise _NotMine
        netns, pos = _varint(d, pos)
        cpu, pos = _varint(d, pos)
        key = d[start:pos]
        if len(tails) > _CACHE_MAX:
            tails.clear()
            self._tail_lens.clear()
        tail = tails[key] = (len(key), {}, (ifindex, dev, netns, cpu))
        self._tail_lens.add(len(key))
        return tail

    def _template(self, tail: tuple, pb: int) -> dict:
        """A hit dict of this point and tail, ts_ns to be set (key order as the codec's)."""
        point = self._point[pb]
        if point is None:
            raise _NotMine
        ifindex, dev, netns, cpu = tail[2]
        hit = tail[1][pb] = {"point": point, "ts_ns": 0, "ifindex": ifindex, "dev": dev,
                             "netns": netns, "cpu": cpu}
        return hit

def _varint(d: bytes, pos: int) -> tuple[int, int]:
    """Zigzag varint of at most 9 bytes (longer: the codec's, with its 64-bit wrap)."""
    b = d[pos]
    pos += 1
    v = b & 0x7F
    shift = 7
    while b & 0x80:
        b = d[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise _NotMine
    return (v >> 1) ^ -(v & 1), pos


def _string(d: bytes, pos: int) -> tuple[str, int]:
    n, pos = _varint(d, pos)
    end = pos + n
    if n < 0 or end > len(d):
        raise IndexError
    return d[pos:end].decode(), end


_decoder: LayerEventDecoder | None = None


def _get() -> LayerEventDecoder:
    global _decoder
    if _decoder is None:
        _decoder = LayerEventDecoder()
    return _decoder


def decode_layer_event(data: bytes) -> dict:
    """``codec.decode(data, expect="LayerEvent")[1]``: the same dict or the same error."""
    return _get().decode_event(data)


def decode_layer_events(data: bytes) -> list[dict]:
    """``codec.decode_layer_events(data)``: the same dicts or the same error."""
    return _get().decode_events(data)
