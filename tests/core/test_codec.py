"""Avro single-object codec: round trips, schema evolution, typed errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from latscope.schemas import codec
from latscope.schemas.records import flow_id

FLOW = {"proto": "tcp", "family": 6, "src": "fd00:1::1", "dst": "fd00:1::2",
        "sport": 40312, "dport": 5201}
EVENT = {"host": "h1", "flow_id": flow_id(FLOW), "flow": FLOW, "seq": 4294900000,
         "retrans": True, "complete": True,
         "hits": [{"point": "sock_send", "ts_ns": 10, "ifindex": 0, "dev": None, "netns": 4026531840,
                   "cpu": 1, "wait": None},
                  {"point": "dev_xmit", "ts_ns": 2_000_000_000_000, "ifindex": 7, "dev": "veth0",
                   "netns": 4026531840, "cpu": 0, "wait": None}]}


def test_a_batch_reads_each_event_by_its_version() -> None:
    """A LayerEventBatch's fingerprint is one for every LayerEvent version (it names it):
    a batch of v1 events (an agent before socket-wait causes) reads as v1, resolved into
    the current schema (wait: null), as a batch of current ones does."""
    import io
    import json

    from fastavro import parse_schema, schemaless_writer

    from latscope.schemas.avro_write import long
    named: dict = {}
    parse_schema(json.loads((codec.SCHEMA_DIR / "flow_key.avsc").read_text()), named_schemas=named)
    v1 = parse_schema(json.loads((codec.SCHEMA_DIR / "history" / "layer_event.v1.avsc")
                                 .read_text()), named_schemas=named)
    old = {**EVENT, "schema_version": 1, "hits": [
        {k: v for k, v in h.items() if k != "wait"} for h in EVENT["hits"]]}
    bodies = []
    for _ in range(2):
        b = io.BytesIO()
        schemaless_writer(b, v1, old)
        bodies.append(b.getvalue())
    data = (codec.MAGIC + codec.default_codec().fingerprint("LayerEventBatch") + long(2) +
            b"".join(bodies) + b"\x00")
    assert codec.decode_layer_events(data) == [{**EVENT, "schema_version": 1}] * 2
    new = codec.encode("LayerEventBatch", {"events": [{**EVENT, "schema_version": 2}]})
    assert codec.decode_layer_events(new) == [{**EVENT, "schema_version": 2}]


def test_flow_id_brackets_ipv6() -> None:
    assert flow_id(FLOW) == "tcp:[fd00:1::1]:40312>[fd00:1::2]:5201"


@pytest.mark.parametrize("name,record", [
    ("LayerEvent", EVENT),
    ("ClockSample", {"manager": "mgr", "host": "h1", "probe_id": 3, "t1_ns": 1, "t2_ns": 5_000_002,
                     "t3_ns": 5_000_003, "t4_ns": 4, "offset_ns": 5e6, "delay_ns": -2.0}),
    ("ClockModel", {"manager": "mgr", "host": "h1", "ref_ns": 10**12, "offset_ns": -3e6,
                    "drift_ppm": -15.5, "error_bound_ns": 900.0, "samples": 12,
                    "min_delay_ns": 30_000.0, "updated_unix_ms": 1_790_000_000_000}),
    ("Breakdown", {"flow_id": flow_id(FLOW), "flow": FLOW, "seq": 1, "src_host": "h1",
                   "dst_host": "h2", "ts_ns": 5, "end_to_end_ns": -20, "complete": False,
                   "hosts": ["h1"], "missing_hosts": ["h2"],
                   "segments": [{"from": "h1:sock_send", "to": "h1:ip_out", "layer": "socket",
                                 "hosts": ["h1"], "device": None, "duration_ns": -20,
                                 "error_bound_ns": 0.0, "wait": {
                                     "nagle_us": 1, "cwnd_us": 2, "rwnd_us": 3, "sndbuf_us": 4,
                                     "pacing_us": 5, "other_us": 6, "unread_us": 7,
                                     "ooo_us": 8}}]}),
])
def test_round_trip(name: str, record: dict) -> None:
    data = codec.encode(name, record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.default_codec().fingerprint(name)
    got_name, got = codec.decode(data)
    assert got_name == name
    for key, value in record.items():
        assert got[key] == value


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    """Independent check of the spec: CRC-64-AVRO of the canonical form, low byte first."""
    from fastavro.schema import to_parsing_canonical_form

    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    canonical = to_parsing_canonical_form(codec.default_codec().current["ClockModel"])
    fp = empty
    for byte in canonical.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    assert codec.default_codec().fingerprint("ClockModel") == fp.to_bytes(8, "little")


def _evolved_dir(tmp_path: Path, mutate) -> Path:
    """A copy of the schema folder with one schema changed."""
    d = tmp_path / "schemas"
    shutil.copytree(codec.SCHEMA_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = d / "clock_model.avsc"
    schema = json.loads(path.read_text())
    mutate(schema)
    path.write_text(json.dumps(schema))
    return d


MODEL = {"manager": "mgr", "host": "h1", "ref_ns": 7, "offset_ns": 1.5, "drift_ppm": 2.0,
         "error_bound_ns": 3.0, "samples": 4, "min_delay_ns": 5.0, "updated_unix_ms": 6}


def test_newer_writer_read_by_older_reader(tmp_path: Path) -> None:
    """A newer producer adds a field with a default: today's reader still reads it."""
    newer_dir = _evolved_dir(tmp_path, lambda s: s["fields"].append(
        {"name": "jitter_ns", "type": "double", "default": 0.0}))
    newer = codec.Codec(newer_dir)
    data = newer.encode("ClockModel", {**MODEL, "jitter_ns": 9.0})
    # The current reader learns the newer writer schema the way a deployment does: history/.
    current_dir = tmp_path / "current"
    shutil.copytree(codec.SCHEMA_DIR, current_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (current_dir / "history").mkdir(exist_ok=True)
    shutil.copy(newer_dir / "clock_model.avsc", current_dir / "history" / "clock_model.v2.avsc")
    name, got = codec.Codec(current_dir).decode(data)
    assert name == "ClockModel" and got["offset_ns"] == 1.5 and "jitter_ns" not in got


def test_older_writer_read_by_newer_reader(tmp_path: Path) -> None:
    newer_dir = _evolved_dir(tmp_path, lambda s: s["fields"].append(
        {"name": "jitter_ns", "type": "double", "default": -1.0}))
    (newer_dir / "history").mkdir(exist_ok=True)
    shutil.copy(codec.SCHEMA_DIR / "clock_model.avsc", newer_dir / "history" / "clock_model.v1.avsc")
    old_bytes = codec.encode("ClockModel", MODEL)
    _, got = codec.Codec(newer_dir).decode(old_bytes)
    assert got["jitter_ns"] == -1.0 and got["drift_ppm"] == 2.0


def test_unknown_fingerprint_is_typed() -> None:
    data = bytearray(codec.encode("ClockModel", MODEL))
    data[5] ^= 0xFF
    with pytest.raises(codec.UnknownFingerprint):
        codec.decode(bytes(data))


@pytest.mark.parametrize("cut", [11, 20, -1])
def test_truncated_body_is_typed(cut: int) -> None:
    data = codec.encode("LayerEvent", EVENT)
    with pytest.raises(codec.TruncatedRecord):
        codec.decode(data[:cut])


def test_trailing_garbage_is_typed() -> None:
    with pytest.raises(codec.TruncatedRecord):
        codec.decode(codec.encode("ClockModel", MODEL) + b"\x00")


@pytest.mark.parametrize("data", [b"", b"\xc3", b"{\"json\": 1}", b"\xc3\x02" + bytes(20)])
def test_not_single_object(data: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(data)


def test_expect_other_name() -> None:
    with pytest.raises(codec.DecodeError, match="expected a Breakdown"):
        codec.decode(codec.encode("ClockModel", MODEL), expect="Breakdown")


def test_layer_events_of_a_message() -> None:
    """The layer-events topic carries batches (agents) and single records (older writers);
    anything else is a typed error the worker dead-letters."""
    one = codec.decode(codec.encode("LayerEvent", EVENT))[1]
    other = {**one, "seq": 2, "host": "h2"}
    batch = codec.encode("LayerEventBatch", {"events": [EVENT, other]})
    assert codec.decode_layer_events(batch) == [one, other]
    assert codec.decode_layer_events(codec.encode("LayerEvent", EVENT)) == [one]
    with pytest.raises(codec.DecodeError, match="LayerEventBatch"):
        codec.decode_layer_events(codec.encode("ClockModel", MODEL))
    with pytest.raises(codec.TruncatedRecord):
        codec.decode_layer_events(batch[:-4])


def test_hand_written_avro_long_matches_fastavro() -> None:
    """The hot-path encoders' primitive (schemas/avro_write.py) against fastavro, across
    every varint length and the table/cache boundaries; out of range raises."""
    import io
    import random

    from fastavro import schemaless_writer

    from latscope.schemas import avro_write

    rng = random.Random(5)
    edges = [v + d for k in (7, 14, 28, 35, 42, 56, 62) for v in (1 << k, -(1 << k))
             for d in (-2, -1, 0, 1)]
    values = edges + [(1 << 63) - 1, -(1 << 63)] + [
        rng.randrange(-(1 << 63), 1 << 63) >> rng.randrange(64) for _ in range(5000)]
    for v in values:
        buf = io.BytesIO()
        schemaless_writer(buf, "long", v)
        assert avro_write.long(v) == buf.getvalue(), v
    assert avro_write.string("é") == b"\x04\xc3\xa9"
    for v in (1 << 63, -(1 << 63) - 1, -(1 << 80)):
        with pytest.raises(OverflowError):
            avro_write.long(v)
