"""The Breakdown encoder of the stream worker's hot path, byte-identical to
``latscope.schemas.codec.encode("Breakdown", bd)`` (tests/stream/test_fast_avro.py holds it
to that).

Why C: at 20k joined samples/s the worker has 50 µs of CPU per sample for everything;
fastavro's generic writer costs ~45 µs per 3-host breakdown (15 segments), the earlier
hand-written Python ~8.5 µs. ``latscope.stream._native.encode_breakdown``
(stream/native/encode.c) writes the body in ~1 µs. Here: the schema pin, the enum
indexes it is given (read from the schema files, so C hardcodes no symbol), the
single-object header, and the fall-back.

The encoder is pinned to the Breakdown schema's wire shape (its parsing canonical form
fingerprint): if schemas/breakdown.avsc or flow_key.avsc change in any way that changes
the bytes, construction fails loudly (SchemaChanged) rather than writing records readers
would misread. A record the C encoder does not take on exactly as the codec would write
it (a missing field the codec defaults, a truthy non-bool, an int out of Avro's range, a
wrong type) comes back NotImplemented and goes to the generic codec, which writes it or
raises exactly as before. Real errors from C (MemoryError) propagate.

    encode_breakdown(bd: dict) -> bytes      # single-object encoded, like codec.encode
"""

from __future__ import annotations

import json
import sys

from latscope.schemas import codec
from latscope.stream._native import encode_breakdown as _encode_body

# Wire shape encode.c writes: the CRC-64-AVRO fingerprint of Breakdown's parsing canonical
# form when it was written (checked at construction).
_PINNED_FINGERPRINT = "192feb2aa03f9ea8"


class SchemaChanged(RuntimeError):
    """schemas/breakdown.avsc no longer has the wire shape this encoder writes."""


def _symbols(schema: dict, field: str) -> dict[str, int]:
    # interned: breakdown()'s symbols are source literals, so C's lookups match by identity
    return {sys.intern(s): i for i, s in enumerate(codec.enum_symbols(schema, field))}


class BreakdownEncoder:
    def __init__(self) -> None:
        fp = codec.default_codec().fingerprint("Breakdown")
        if fp.hex() != _PINNED_FINGERPRINT:
            raise SchemaChanged(
                f"schemas: Breakdown's wire shape changed (fingerprint {fp.hex()}, this "
                f"encoder writes {_PINNED_FINGERPRINT}): update stream/breakdown_avro.py "
                f"and stream/native/encode.c")
        schema = json.loads((codec.SCHEMA_DIR / "breakdown.avsc").read_text())
        flow = json.loads((codec.SCHEMA_DIR / "flow_key.avsc").read_text())
        seg = next(f for f in schema["fields"] if f["name"] == "segments")["type"]["items"]
        self._layers = _symbols(seg, "layer")
        self._protos = _symbols(flow, "proto")
        self._header = codec.MAGIC + fp

    def encode(self, bd: dict) -> bytes:
        body = _encode_body(bd, self._layers, self._protos)
        if body is NotImplemented:   # not the C encoder's to judge: the codec writes or raises
            return codec.encode("Breakdown", bd)
        return self._header + body


_encoder: BreakdownEncoder | None = None


def encode_breakdown(bd: dict) -> bytes:
    """``codec.encode("Breakdown", bd)``, byte for byte, in C."""
    global _encoder
    if _encoder is None:
        _encoder = BreakdownEncoder()
    return _encoder.encode(bd)
