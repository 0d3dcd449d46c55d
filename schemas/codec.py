"""Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + body) with fastavro.

Readers resolve the writer's schema from the fingerprint alone, so no registry is needed:
every schema this build has ever written (``schemas/*.avsc`` plus ``schemas/history/``) is
known by fingerprint and is read into the current schema of the same name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
SCHEMA_DIR = Path(__file__).resolve().parent
# Named types other schemas refer to; loaded first, in this order.
_SHARED = ("flow_key.avsc", "layer_event.avsc")


class DecodeError(ValueError):
    """A message that is not a record this build can read. Never raised deeper than decode()."""


class NotSingleObject(DecodeError):
    """The bytes lack the single-object marker ``C3 01``."""


class UnknownFingerprint(DecodeError):
    """The writer's schema fingerprint is not one this build knows."""


class TruncatedRecord(DecodeError):
    """The body ended before the record did, or bytes follow it."""


class UnknownSymbol(TruncatedRecord):
    """The body reads an enum or union index past the schema's: a point a newer agent
    knows, or a body cut or garbled where an index was read."""


def _load(paths: Iterable[Path]) -> dict[str, dict]:
    """Parse .avsc files (shared named types first) into fastavro schemas by full name."""
    named: dict[str, Any] = {}
    out: dict[str, dict] = {}
    ordered = sorted(paths, key=lambda p: (_SHARED.index(p.name) if p.name in _SHARED
                                           else len(_SHARED), str(p)))
    for path in ordered:
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e
        parsed = parse_schema(raw, named_schemas=named)
        out[parsed["name"]] = parsed
    return out


def _fp(schema: dict) -> bytes:
    # fastavro's hex string is already the little-endian byte order the spec wants.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class Codec:
    """Encodes with the current schemas; decodes anything written by a known schema."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        current = _load(schema_dir.glob("*.avsc"))
        self.current: dict[str, dict] = {n.split(".")[-1]: s for n, s in current.items()}
        self._fp_of = {name: _fp(s) for name, s in self.current.items()}
        self._writers: dict[bytes, tuple[str, dict]] = {
            fp: (name, self.current[name]) for name, fp in self._fp_of.items()
        }
        # LayerEvent writers by their schema_version: a LayerEventBatch names LayerEvent by
        # reference, so its fingerprint is one for every LayerEvent version; its items are
        # read by the version each one starts with (_decode_batch).
        self._event_versions: dict[int, dict] = {_version(self.current["LayerEvent"]):
                                                 self.current["LayerEvent"]}
        for hist in sorted((schema_dir / "history").glob("*.avsc")):
            for full, schema in _load([*schema_dir.glob("flow_key.avsc"), hist]).items():
                short = full.split(".")[-1]
                if short in self.current and short != "FlowKey":
                    self._writers.setdefault(_fp(schema), (short, schema))
                if short == "LayerEvent":
                    self._event_versions.setdefault(_version(schema), schema)

    def fingerprint(self, name: str) -> bytes:
        return self._fp_of[name]

    def encode(self, name: str, record: dict) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._fp_of[name])
        schemaless_writer(buf, self.current[name], record)
        return buf.getvalue()

    def decode(self, data: bytes, expect: str | None = None) -> tuple[str, dict]:
        """Return (schema name, record); raise a DecodeError subclass for anything else."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise NotSingleObject(f"not Avro single-object encoded ({len(data)} bytes)")
        fp = bytes(data[2:HEADER_LEN])
        try:
            name, writer = self._writers[fp]
        except KeyError:
            raise UnknownFingerprint(f"unknown schema fingerprint {fp.hex()}") from None
        if expect is not None and name != expect:
            raise DecodeError(f"expected a {expect} record, got {name}")
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            record = (self._decode_batch(body) if name == "LayerEventBatch" else
                      schemaless_reader(body, writer, self.current[name]))
        except IndexError:   # fastavro indexes enum symbols and union branches by it
            raise UnknownSymbol(f"{name}: an enum or union index beyond the schema's") from None
        except (EOFError, UnicodeDecodeError, ValueError, TypeError) as e:
            raise TruncatedRecord(f"{name}: body does not decode: {e!r}") from None
        if body.tell() != len(data) - HEADER_LEN:
            raise TruncatedRecord(f"{name}: {len(data) - HEADER_LEN - body.tell()} bytes follow")
        return name, record


    def _decode_batch(self, body: io.BytesIO) -> dict:
        """A LayerEventBatch body: its array's blocks, each item read with the LayerEvent
        writer of the schema_version it starts with, resolved into the current one."""
        reader, events = self.current["LayerEvent"], []
        while True:
            count = _read_long(body)
            if count == 0:
                return {"events": events}
            if count < 0:          # a block with its byte size
                count = -count
                _read_long(body)
            for _ in range(count):
                at = body.tell()
                version = _read_long(body)
                body.seek(at)
                writer = self._event_versions.get(version)
                if writer is None:
                    raise UnknownFingerprint(f"LayerEventBatch: a LayerEvent of schema_version "
                                             f"{version}, which this build does not know")
                events.append(schemaless_reader(body, writer, reader))


def _version(schema: dict) -> int:
    """A record schema's schema_version default."""
    return next(f["default"] for f in schema["fields"] if f["name"] == "schema_version")


def _read_long(body: io.BytesIO) -> int:
    """An Avro long (zigzag varint) from body."""
    n = shift = 0
    while True:
        b = body.read(1)
        if not b:
            raise EOFError("end of body inside a long")
        n |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return (n >> 1) ^ -(n & 1)
        shift += 7
        if shift > 63:
            raise ValueError("a varint over 10 bytes")


_default: Codec | None = None


def enum_symbols(record: dict, field: str) -> tuple[str, ...]:
    """The symbols of a record schema's enum field (the hot paths' enum tables are built
    from the schema files, never written out by hand)."""
    t = next(f["type"] for f in record["fields"] if f["name"] == field)
    return tuple(t["symbols"])


def default_codec() -> Codec:
    global _default
    if _default is None:
        _default = Codec()
    return _default


def encode(name: str, record: dict) -> bytes:
    return default_codec().encode(name, record)


def decode(data: bytes, expect: str | None = None) -> tuple[str, dict]:
    return default_codec().decode(data, expect)


def decode_layer_events(data: bytes) -> list[dict]:
    """The LayerEvent records of one message on the layer-events topic: a LayerEventBatch
    (what agents write) or a single LayerEvent (older agents, tools)."""
    name, record = default_codec().decode(data)
    if name == "LayerEventBatch":
        return record["events"]
    if name == "LayerEvent":
        return [record]
    raise DecodeError(f"expected a LayerEvent or LayerEventBatch record, got {name}")
