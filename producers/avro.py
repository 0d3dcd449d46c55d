"""A LayerEvent encoder specialised for the agent's hot path, byte-identical to
latscope.schemas.codec.encode("LayerEvent", ...) (tests/producers/test_avro.py holds it to
that). Why: fastavro's generic writer costs ~2 µs per PointHit; here a range's PointHit
is encoded once and shared by every sampled byte it holds, and a flow's header once per
flow. If the schema changes shape, construction fails loudly instead of writing a record
readers would misread."""

from __future__ import annotations

import json

from latscope.producers.grouping import WAIT_KEYS, FlowT, Hit, Record
from latscope.schemas import codec
from latscope.schemas.avro_write import long as _long
from latscope.schemas.avro_write import string as _str
from latscope.schemas.codec import MAGIC

# The shape this encoder writes, checked against the schema at construction.
_LAYER_EVENT = ["schema_version", "host", "flow_id", "flow", "seq", "retrans", "complete", "hits"]
_FLOW_KEY = ["proto", "family", "src", "dst", "sport", "dport"]
_POINT_HIT = ["point", "ts_ns", "ifindex", "dev", "netns", "cpu", "wait"]


class SchemaChanged(RuntimeError):
    """schemas/*.avsc no longer has the shape this encoder writes."""


def _fields(schema: dict) -> list[str]:
    return [f["name"] for f in schema["fields"]]


class LayerEventEncoder:
    def __init__(self) -> None:
        c = codec.default_codec()
        schema = json.loads((codec.SCHEMA_DIR / "layer_event.avsc").read_text())
        flow = json.loads((codec.SCHEMA_DIR / "flow_key.avsc").read_text())
        hits = next(f["type"] for f in schema["fields"] if f["name"] == "hits")["items"]
        point = next(f["type"] for f in hits["fields"] if f["name"] == "point")
        proto = next(f["type"] for f in flow["fields"] if f["name"] == "proto")
        wait = next(f["type"] for f in hits["fields"] if f["name"] == "wait")
        for got, want, what in ((_fields(schema), _LAYER_EVENT, "LayerEvent"),
                                (_fields(wait[1]), list(WAIT_KEYS), "SocketWait"),
                                (_fields(flow), _FLOW_KEY, "FlowKey"),
                                (_fields(hits), _POINT_HIT, "PointHit")):
            if got != want:
                raise SchemaChanged(f"schemas: {what} fields are {got}, this encoder writes "
                                    f"{want}: update producers/avro.py")
        batch = json.loads((codec.SCHEMA_DIR / "layer_event_batch.avsc").read_text())
        if [(f["name"], f["type"]) for f in batch["fields"]] != [
                ("events", {"type": "array", "items": "latscope.LayerEvent"})]:
            raise SchemaChanged("schemas: LayerEventBatch is no longer an array of LayerEvent "
                                "named events: update producers/avro.py")
        self._point = {p: _long(i) for i, p in enumerate(point["symbols"])}
        self._proto = {p: _long(i) for i, p in enumerate(proto["symbols"])}
        self._header = MAGIC + c.fingerprint("LayerEvent")
        self._batch_header = MAGIC + c.fingerprint("LayerEventBatch")
        self._flows: dict[tuple[str, FlowT], bytes] = {}
        self._where: dict[tuple[int, str | None, int, int], bytes] = {}

    # The parts of a body that know the schema, also handed to the native path
    # (producers/native_path.py), which writes the rest of the frame.
    def point(self, name: str) -> bytes:
        """A PointHit's point (enum index)."""
        return self._point[name]

    def dev(self, name: str | None) -> bytes:
        """A PointHit's dev (union of null and string)."""
        return b"\x00" if name is None else b"\x02" + _str(name)

    def flow_prefix(self, host: str, flow_id: str, f: FlowT) -> bytes:
        """A LayerEvent body up to seq: schema_version, host, flow_id, flow."""
        return (_long(2) + _str(host) + _str(flow_id) + self._proto[f[0]] + _long(f[1]) +
                _str(f[2]) + _str(f[3]) + _long(f[4]) + _long(f[5]))

    def hit(self, h: Hit) -> bytes:
        # Everything after ts_ns repeats for a device and CPU: encoded once, looked up.
        where = (h.ifindex, h.dev, h.netns, h.cpu)
        tail = self._where.get(where)
        if tail is None:
            tail = _long(h.ifindex) + self.dev(h.dev) + _long(h.netns) + _long(h.cpu)
            if len(self._where) > 100_000:
                self._where.clear()
            self._where[where] = tail
        return self._point[h.point] + _long(h.ts_ns) + tail + self.wait(h.wait)

    def wait(self, w: tuple[int, ...] | None) -> bytes:
        """A PointHit's wait (union of null and SocketWait)."""
        return b"\x00" if w is None else b"\x02" + b"".join(_long(x) for x in w)

    def _prefix(self, r: Record) -> bytes:
        key = (r.host, r.flow)
        p = self._flows.get(key)
        if p is None:
            p = self.flow_prefix(r.host, r.flow_id, r.flow)
            if len(self._flows) > 100_000:
                self._flows.clear()
            self._flows[key] = p
        return p

    def encode(self, r: Record) -> bytes:
        """One LayerEvent, single-object encoded."""
        return self._header + self.body(r)

    def batch(self, bodies: list[bytes]) -> bytes:
        """A LayerEventBatch of LayerEvent bodies (from body()), single-object encoded."""
        return b"".join((self._batch_header, _long(len(bodies)), *bodies, b"\x00"))

    def body(self, r: Record) -> bytes:
        """A LayerEvent's Avro body (no single-object header)."""
        parts = [self._prefix(r), _long(r.seq), b"\x01" if r.retrans else b"\x00",
                 b"\x01" if r.complete else b"\x00"]
        if r.hits:
            parts.append(_long(len(r.hits)))
            for h in r.hits:
                if not h.avro:
                    h.avro = self.hit(h)
                parts.append(h.avro)
        parts.append(b"\x00")
        return b"".join(parts)
