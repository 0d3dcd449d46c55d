"""A LayerEvent decoder for the stream worker's hot path: the same dicts as
``latscope.schemas.codec`` for the current LayerEvent and LayerEventBatch schemas
(tests/stream/test_fast_avro.py holds it to that).

Why: fastavro's generic reader costs ~10 µs per LayerEvent of a 3-host path (~5 hits),
walking the schema for every field; the stream worker reads three per sample. The body is
read in C (stream/native/decode.c), where what repeats (a host and flow's head, a hit's
point, ifindex, device, netns and cpu) is looked up by its bytes, not decoded again.

Only the plain, valid form of the current schemas is read there. Anything else goes to the
codec, which decodes it or raises exactly as before: another fingerprint (an older
writer, another record type), a body the C reader does not take on (an enum or union index
out of range, a boolean byte other than 0/1, a varint over 9 bytes, an array block with a
byte size) and every error (truncated, trailing bytes, bad UTF-8, not single-object).
This module pins the reader to the schemas' wire shape (fingerprints): if they change, it
fails loudly at construction (SchemaChanged).

    decode_layer_event(data: bytes) -> dict          # codec.decode(data, expect="LayerEvent")[1]
    decode_layer_events(data: bytes) -> list[dict]   # codec.decode_layer_events(data)
"""

from __future__ import annotations

import json

from latscope.schemas import codec
from latscope.schemas.records import POINTS
from latscope.stream._native import decode_events

# Wire shapes this reader takes: CRC-64-AVRO fingerprints of the parsing canonical forms
# when it was written (checked at construction).
_PINNED = {"LayerEvent": "9269ba1048d049ce", "LayerEventBatch": "361b3ac2dd2ee3c7"}
_HEADER = codec.HEADER_LEN


class SchemaChanged(RuntimeError):
    """schemas/layer_event*.avsc no longer have the wire shape this reader takes."""


class LayerEventDecoder:
    def __init__(self) -> None:
        c = codec.default_codec()
        for name, want in _PINNED.items():
            got = c.fingerprint(name).hex()
            if got != want:
                raise SchemaChanged(f"schemas: {name}'s wire shape changed (fingerprint {got}, "
                                    f"this reader takes {want}): update stream/layer_avro.py and "
                                    "stream/native/decode.c")
        event = json.loads((codec.SCHEMA_DIR / "layer_event.avsc").read_text())
        flow = json.loads((codec.SCHEMA_DIR / "flow_key.avsc").read_text())
        hit = next(f["type"] for f in event["fields"] if f["name"] == "hits")["items"]
        if codec.enum_symbols(hit, "point") != POINTS:
            raise SchemaChanged("schemas: PointHit.point symbols are not records.POINTS")
        version = next(f["default"] for f in event["fields"] if f["name"] == "schema_version")
        if version != 2:      # stream/native/decode.c LAYER_EVENT_VERSION
            raise SchemaChanged(f"schemas: LayerEvent is version {version}, the C reader takes "
                                "2: update stream/native/decode.c")
        self._points = POINTS
        self._protos = codec.enum_symbols(flow, "proto")
        self._event_fp = c.fingerprint("LayerEvent")
        self._batch_fp = c.fingerprint("LayerEventBatch")

    def decode_event(self, data: bytes) -> dict:
        """``codec.decode(data, expect="LayerEvent")[1]``, or its error."""
        if (type(data) is bytes and data[2:_HEADER] == self._event_fp
                and data[:2] == codec.MAGIC):
            got = decode_events(data, _HEADER, False, self._points, self._protos)
            if got is not NotImplemented:
                return got[0]
        return codec.decode(data, expect="LayerEvent")[1]

    def decode_events(self, data: bytes) -> list[dict]:
        """``codec.decode_layer_events(data)``: a LayerEventBatch's events or one LayerEvent."""
        if type(data) is bytes and data[:2] == codec.MAGIC:
            fp = data[2:_HEADER]
            if fp == self._batch_fp or fp == self._event_fp:
                got = decode_events(data, _HEADER, fp == self._batch_fp, self._points,
                                    self._protos)
                if got is not NotImplemented:
                    return got
        return codec.decode_layer_events(data)


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
