"""The stream worker's C Avro paths (stream/native/) equal the shared codec: the Breakdown
encoder byte for byte, the LayerEvent decoder dict for dict and error class for error
class, on many varied records and on broken bytes."""

from __future__ import annotations

import random
from collections import OrderedDict, deque

import pytest

from latscope.producers.grouping import WAIT_KEYS
from latscope.schemas import codec
from latscope.schemas.records import POINTS, flow_id
from latscope.stream.breakdown_avro import BreakdownEncoder, encode_breakdown
from latscope.stream.layer_avro import LayerEventDecoder, decode_layer_event, decode_layer_events
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.synthetic import PathSpec, clock_model, sample_records

FLOWS = [{"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2", "sport": 40000,
          "dport": 5201},
         {"proto": "udp", "family": 6, "src": "fd00:1::1", "dst": "fd00:2::2", "sport": 1,
          "dport": 65535},
         {"proto": "tcp", "family": 6, "src": "::1", "dst": "2001:db8::ffff:1", "sport": 0,
          "dport": 443}]
DEVS = [None, "eth0", "br0", "lsxe-0a", "vëth-ü", "x" * 63, "y" * 64, ""]
# Timestamps and numbers across every varint length, both signs.
BIG = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 1 << 27, (1 << 28) + 3, 10**12,
       (1 << 55) + 1, (1 << 62) - 1, (1 << 62), (1 << 63) - 1, -(1 << 63), -(10**15)]


def layer_event(rng: random.Random) -> dict:
    flow = dict(rng.choice(FLOWS))
    odd = rng.random() < 0.1   # beyond the plain form: the codec's (64+ hits, 10-byte longs)
    hits = [{"point": rng.choice(POINTS),
             "ts_ns": rng.choice(BIG if odd else BIG[:-4]) if rng.random() < 0.2 else
             rng.randrange(2**45),
             "ifindex": rng.choice([0, 2, 63, 64, 70000, -1]),
             "dev": rng.choice(DEVS if odd else DEVS[:-2]),
             "netns": rng.choice([0, 4026531840, 4026532999, -5]), "cpu": rng.randrange(0, 200),
             "wait": None if rng.random() < 0.8 else {
                 k: rng.choice(BIG if odd else [0, 1, 900, 2**32 - 1]) for k in WAIT_KEYS}}
            for _ in range(rng.choice([64, 70] if odd else [0, 1, 5, 6, 12, 63]))]
    # a LayerEvent's schema_version is its writer schema's (a batch's items are read by it)
    return {"schema_version": 2,
            "host": rng.choice(["h1", "c1", "hôte-ü", "", "h" * 200]),
            "flow_id": flow_id(flow), "flow": flow,
            "seq": rng.choice(BIG if odd else [0, 5, 2**32 - 1, rng.randrange(2**32)]),
            "retrans": rng.random() < 0.2, "complete": rng.random() < 0.7, "hits": hits}


def test_decoder_equals_codec_on_varied_records(monkeypatch) -> None:
    rng = random.Random(11)
    records = [layer_event(rng) for _ in range(600)]
    generic = codec.decode
    fallbacks = []
    monkeypatch.setattr(codec, "decode", lambda *a, **k: fallbacks.append(1) or generic(*a, **k))
    for r in records:
        data = codec.encode("LayerEvent", r)
        want = generic(data, expect="LayerEvent")[1]
        assert want == r
        got = decode_layer_event(data)
        assert got == want and list(got) == list(want)   # same keys in the same order
        assert [list(h) for h in got["hits"]] == [list(h) for h in want["hits"]]
        assert decode_layer_event(data) == want          # again, from the caches
        assert decode_layer_events(data) == [want]
    assert 0 < len(fallbacks) < 0.15 * 3 * len(records)   # mostly read by hand
    for i in range(0, 600, 37):                           # the agents' envelope
        data = codec.encode("LayerEventBatch", {"events": records[i:i + 37]})
        assert decode_layer_events(data) == codec.decode_layer_events(data)


def test_decoder_returns_fresh_dicts() -> None:
    data = codec.encode("LayerEvent", sample_records(PathSpec(["h1", "c1"]), 7, 10**12)[0])
    a, b = decode_layer_event(data), decode_layer_event(data)
    a["flow"]["sport"] = -1
    a["hits"][0]["ts_ns"] = -1
    assert b == codec.decode(data)[1]


def outcome(data: bytes) -> tuple[object, object]:
    """(codec's, fast decoder's) record or DecodeError class for these bytes."""
    def run(f):
        try:
            return f(data)
        except codec.DecodeError as e:
            return type(e)
    return run(lambda d: codec.decode(d, expect="LayerEvent")[1]), run(decode_layer_event)


def test_decoder_raises_what_the_codec_raises() -> None:
    rng = random.Random(5)
    good = [codec.encode("LayerEvent", layer_event(rng)) for _ in range(60)]
    cases = [b"", b"\xc3", b"\xc3\x01", b"\x00" * 20, good[0][:9],
             codec.MAGIC + b"\x01" * 8 + good[0][10:],                  # unknown fingerprint
             codec.encode("ClockModel", clock_model("h1", 5.0)),        # not a LayerEvent
             good[0] + b"\x00", good[1] + b"\x01\x02"]                  # trailing bytes
    for g in good:                                                      # truncated anywhere
        cases += [g[:n] for n in sorted({rng.randrange(10, len(g)) for _ in range(8)})]
    for g in good:                                                      # garbage in the body
        for _ in range(10):
            b = bytearray(g)
            b[rng.randrange(10, len(b))] = rng.randrange(256)
            cases.append(bytes(b))
    kinds = set()
    for data in cases:
        want, got = outcome(data)
        assert got == want, data.hex()
        kinds.add(want if isinstance(want, type) else dict)
    # every error class, and garbage that still decodes (to the same record)
    assert {codec.NotSingleObject, codec.UnknownFingerprint, codec.TruncatedRecord,
            codec.DecodeError, dict} <= kinds


def test_decoder_takes_odd_but_valid_bodies_as_the_codec_does() -> None:
    # What fastavro accepts beyond the plain form goes to the codec, with its answer.
    hdr = codec.MAGIC + codec.default_codec().fingerprint("LayerEvent")
    body = bytes.fromhex("04" "046831" "06666964" "00" "08" "0261" "0262" "02" "04" "0a")

    def rec(flags: bytes, hits: bytes) -> bytes:
        return hdr + body + flags + hits

    hit = bytes.fromhex("00" "c801" "00" "00" "00" "00" "00")
    for data in (rec(b"\x02\x01", b"\x00"),                       # boolean byte 2
                 rec(b"\x00\x01", b"\x01\x0c" + hit + b"\x00"),   # negative block count
                 rec(b"\x00\x01", b"\x02" + hit + b"\x02" + hit + b"\x00"),   # two blocks
                 rec(b"\x00\x01", b"\x02\x01" + hit[1:] + b"\x00"),           # enum -1
                 rec(b"\x00\x00", b"\x02" + b"\x00" + b"\xff" * 9 + b"\x01" + hit[3:] + b"\x00")):
        assert decode_layer_event(data) == codec.decode(data)[1]


def breakdowns(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        path = rng.choice([["h1", "c1"], ["h1", "h2", "c1"], ["c1", "h2", "h1"]])
        offsets = {h: rng.randrange(-10**7, 10**7) for h in path}
        spec = PathSpec(path, step_ns=rng.choice([1, 900, 70_000]), offsets_ns=offsets,
                        flow=rng.choice(FLOWS))
        recs = sample_records(spec, seq=rng.randrange(2**32), t0_ref_ns=rng.choice(BIG[7:16]))
        if rng.random() < 0.3:
            recs.pop(rng.randrange(len(recs)))
        models = {h: clock_model(h, o, bound_ns=rng.choice([0.0, 2.5, 1e9]))
                  for h, o in offsets.items() if rng.random() < 0.7}
        bd = breakdown(recs, ClockView(models, rng.choice(["mgr", path[0]])),
                       path=rng.choice([path, None]))
        if i % 7 == 0:   # field values breakdown() never makes, still valid Avro
            bd["segments"][0]["duration_ns"] = rng.choice(BIG)
            bd["segments"][-1]["error_bound_ns"] = rng.choice([-0.0, float("nan"), 1e-300])
            bd["hosts"] = ["ü" * rng.randrange(70)]
            bd["seq"] = rng.choice(BIG)
        out.append(bd)
    return out


def test_encoder_is_byte_identical_to_codec() -> None:
    bds = breakdowns(500, seed=9)
    for bd in bds:
        want = codec.encode("Breakdown", bd)
        assert encode_breakdown(bd) == want
        assert encode_breakdown(bd) == want            # cached parts reused
    assert codec.decode(encode_breakdown(bds[0]))[1]["segments"] == bds[0]["segments"]


def test_encoder_leaves_what_it_cannot_write_to_the_codec() -> None:
    bd = breakdowns(1, seed=2)[0]
    odd = dict(bd, complete=1, retrans=0)                        # truthy, not bool
    assert encode_breakdown(odd) == codec.encode("Breakdown", odd)
    no_bound = dict(bd, segments=[{k: v for k, v in s.items() if k != "error_bound_ns"}
                                  for s in bd["segments"]])
    assert encode_breakdown(no_bound) == codec.encode("Breakdown", no_bound)
    for bad in (dict(bd, seq=1 << 63), dict(bd, src_host=None), dict(bd, ts_ns="x"),
                dict(bd, segments=[dict(bd["segments"][0], layer="nope")])):
        with pytest.raises(Exception) as want:
            codec.encode("Breakdown", bad)
        with pytest.raises(want.type):
            encode_breakdown(bad)


def test_both_check_the_schema_they_were_written_for(monkeypatch) -> None:
    from latscope.stream import breakdown_avro, layer_avro

    monkeypatch.setattr(breakdown_avro, "_PINNED_FINGERPRINT", "0" * 16)
    with pytest.raises(breakdown_avro.SchemaChanged, match=r"breakdown_avro\.py"):
        BreakdownEncoder()
    monkeypatch.setitem(layer_avro._PINNED, "LayerEvent", "0" * 16)
    with pytest.raises(layer_avro.SchemaChanged, match=r"layer_avro\.py"):
        LayerEventDecoder()


def test_encoder_varint_boundaries() -> None:
    bd = breakdowns(1, seed=4)[0]
    edges = [0]
    for bits in (6, 13, 20, 27, 34, 41, 48, 55, 62):
        edges += [(1 << bits) - 1, 1 << bits, -(1 << bits), -(1 << bits) - 1]
    edges += [(1 << 63) - 1, -(1 << 63)]
    for v in edges:
        seg = dict(bd["segments"][0], duration_ns=v)
        odd = dict(bd, seq=v, ts_ns=v, end_to_end_ns=v, segments=[seg, *bd["segments"][1:]])
        assert encode_breakdown(odd) == codec.encode("Breakdown", odd), v


def test_mutated_messages_decode_or_fail_as_the_codec_does() -> None:
    """Bytes changed, inserted, deleted or cut, in single records and batches."""
    rng = random.Random(17)
    msgs = [codec.encode("LayerEvent", layer_event(rng)) for _ in range(40)]
    msgs += [codec.encode("LayerEventBatch", {"events": [layer_event(rng)
                                                         for _ in range(rng.randrange(4))]})
             for _ in range(20)]

    def run(f, data):
        try:
            return f(data)
        except codec.DecodeError as e:
            return type(e)

    decoded = 0
    for _ in range(3000):
        b = bytearray(rng.choice(msgs))
        i = rng.randrange(10, len(b) + 1)
        op = rng.randrange(4)
        if op == 0 and i < len(b):
            b[i] = rng.randrange(256)
        elif op == 1:
            del b[i:i + rng.randrange(1, 4)]
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            del b[i:]
        data = bytes(b)
        want = run(codec.decode_layer_events, data)
        assert run(decode_layer_events, data) == want, data.hex()
        assert run(decode_layer_event, data) == run(
            lambda d: codec.decode(d, expect="LayerEvent")[1], data), data.hex()
        decoded += isinstance(want, list)
    assert 0 < decoded < 3000


def result(f, bd: dict) -> object:
    """f(bd), or the class of what it raised."""
    try:
        return f(bd)
    except Exception as e:
        return type(e)


def test_encoder_writes_plain_breakdowns_in_c_not_via_the_codec(monkeypatch) -> None:
    from latscope.stream import _native, breakdown_avro

    bds = breakdowns(200, seed=21)
    calls = []
    generic = codec.encode
    monkeypatch.setattr(codec, "encode", lambda *a: calls.append(1) or generic(*a))
    for bd in bds:
        assert encode_breakdown(bd) == generic("Breakdown", bd)
    assert calls == []
    enc = breakdown_avro.BreakdownEncoder()
    body = _native.encode_breakdown(bds[0], enc._layers, enc._protos)
    assert codec.MAGIC + codec.default_codec().fingerprint("Breakdown") + body == \
        generic("Breakdown", bds[0])


def test_encoder_rejects_to_the_codec_what_it_does_not_write_exactly(monkeypatch) -> None:
    bd = breakdowns(1, seed=3)[0]
    seg = bd["segments"][0]

    def with_seg(**kw) -> dict:
        return dict(bd, segments=[dict(seg, **kw), *bd["segments"][1:]])

    class Str(str):
        pass

    cases = [
        # bools where ints are, ints where bools are
        dict(bd, seq=True), dict(bd, schema_version=False), with_seg(duration_ns=True),
        dict(bd, end_to_end_ns=True), dict(bd, flow=dict(bd["flow"], sport=True)),
        dict(bd, complete=1), dict(bd, retrans=None), dict(bd, complete="yes"),
        # ints beyond Avro's int (32-bit) and long (64-bit)
        dict(bd, schema_version=1 << 31), dict(bd, schema_version=-(1 << 31) - 1),
        dict(bd, flow=dict(bd["flow"], dport=1 << 40)), dict(bd, seq=1 << 63),
        dict(bd, ts_ns=-(1 << 63) - 1), dict(bd, end_to_end_ns=1 << 64),
        with_seg(duration_ns=1 << 70),
        # surrogates, str subclasses, bytes, None where a string is
        dict(bd, flow_id="\ud800"), dict(bd, hosts=["h1", "\udcff"]), with_seg(device="\ud83d"),
        dict(bd, src_host=Str("h1")), dict(bd, dst_host=b"c1"), dict(bd, src_host=None),
        with_seg(layer=Str(seg["layer"])),
        # floats as durations and longs, odd doubles
        with_seg(duration_ns=1.0), with_seg(duration_ns=1.5), dict(bd, end_to_end_ns=2.0),
        with_seg(error_bound_ns=None), with_seg(error_bound_ns="1"), with_seg(error_bound_ns=True),
        with_seg(error_bound_ns=1 << 1100),
        # unknown enum symbols
        with_seg(layer="nope"), with_seg(layer=0), dict(bd, flow=dict(bd["flow"], proto="sctp")),
        # missing keys (the codec defaults some, raises for others)
        {k: v for k, v in bd.items() if k != "retrans"},
        {k: v for k, v in bd.items() if k != "missing_hosts"},
        {k: v for k, v in bd.items() if k != "seq"},
        dict(bd, flow={k: v for k, v in bd["flow"].items() if k != "dport"}),
        dict(bd, segments=[{k: v for k, v in seg.items() if k != "device"}]),
        dict(bd, segments=[{k: v for k, v in seg.items() if k != "duration_ns"}]),
        # containers of other types
        dict(bd, hosts=deque(["h1"])), dict(bd, hosts="ab"), dict(bd, segments=deque(bd["segments"])),
        dict(bd, flow=list(bd["flow"].items())),
    ]
    cases.append(OrderedDict(bd))
    generic = codec.encode
    fallbacks = []
    monkeypatch.setattr(codec, "encode", lambda *a: fallbacks.append(1) or generic(*a))
    kinds = set()
    for case in cases:
        want = result(lambda r: generic("Breakdown", r), case)
        n = len(fallbacks)
        assert result(encode_breakdown, case) == want, case
        assert len(fallbacks) == n + 1, case          # C declined, the codec answered
        kinds.add(want if isinstance(want, type) else bytes)
    assert {bytes, OverflowError, ValueError, TypeError, UnicodeEncodeError} <= kinds


def test_encoder_writes_what_it_takes_as_the_codec_does(monkeypatch) -> None:
    """Valid values at the edges, written in C (no fall-back) and byte-identical."""
    bd = breakdowns(1, seed=5)[0]
    seg = bd["segments"][0]

    def with_seg(**kw) -> dict:
        return dict(bd, segments=[dict(seg, **kw), *bd["segments"][1:]])

    cases = [with_seg(error_bound_ns=b) for b in (
        float("inf"), float("-inf"), float("nan"), -float("nan"), -0.0, 5e-324, 1.7976931348623157e308,
        7, -3, 1 << 53, (1 << 53) + 1, 1 << 64, (1 << 1000))]
    cases += [dict(bd, schema_version=v) for v in ((1 << 31) - 1, -(1 << 31), 0)]
    cases += [dict(bd, flow=dict(bd["flow"], sport=-(1 << 31), dport=(1 << 31) - 1))]
    cases += [dict(bd, hosts=("h1", "c1"), missing_hosts=(), segments=tuple(bd["segments"])),
              dict(bd, hosts=[], missing_hosts=[], segments=[]),
              dict(bd, extra="ignored by both", flow=dict(bd["flow"], extra=1)),
              dict(bd, end_to_end_ns=None, complete=False, retrans=True),
              dict(bd, flow_id="😀" * 40, src_host="ü", dst_host="")]
    # huge lists and strings: counts and lengths in multi-byte varints, the buffer grown
    cases += [dict(bd, hosts=[f"h{i}" for i in range(100_000)]),
              dict(bd, segments=bd["segments"] * 2000),
              dict(bd, flow_id="x" * 3_000_000)]
    generic = codec.encode
    fallbacks = []
    monkeypatch.setattr(codec, "encode", lambda *a: fallbacks.append(1) or generic(*a))
    for case in cases:
        assert encode_breakdown(case) == generic("Breakdown", case)
    assert fallbacks == []


def test_encoder_survives_a_breakdown_changed_while_it_is_written() -> None:
    """A key whose __eq__ runs on a hash collision empties the segments mid-write: the C
    encoder neither crashes nor writes a stale count; the codec answers."""
    bd = breakdowns(1, seed=6)[0]
    segs = [dict(s) for s in bd["segments"]]

    armed = []

    class Evil:
        def __hash__(self) -> int:
            return hash("from")

        def __eq__(self, other: object) -> bool:
            if armed:
                segs.clear()
            return False

    segs[0] = {Evil(): 0, **segs[0]}
    armed.append(1)
    evil = dict(bd, segments=segs)
    assert len(segs) > 1
    got = result(encode_breakdown, evil)
    assert segs == []
    assert got == result(lambda r: codec.encode("Breakdown", r), evil)
