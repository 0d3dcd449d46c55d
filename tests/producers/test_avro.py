"""The agent's LayerEvent encoder writes exactly what the shared codec writes, alone and
in the LayerEventBatch envelope the publisher sends."""

from __future__ import annotations

import random

from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Hit, Record
from latscope.schemas import codec


def test_byte_identical_to_codec_and_decodes() -> None:
    enc = LayerEventEncoder()
    rng = random.Random(3)
    flows = [("tcp", 4, "10.1.0.1", "10.2.0.2", 40000, 5201),
             ("udp", 6, "fd00:1::1", "fd00:2::2", 1, 65535)]
    points = ["sock_send", "ip_out", "dev_xmit", "dev_rx", "tcp_rx", "sock_recv"]
    records: list[Record] = []
    for i in range(300):
        hits = [Hit(rng.choice(points), rng.randrange(1 << 62), rng.randrange(1 << 20),
                    rng.choice([None, "veth0", "br0", "lsxa-0a", "é"]),
                    rng.randrange(1 << 32), rng.randrange(64)) for _ in range(rng.randrange(0, 9))]
        flow = flows[i % 2]
        r = Record("h1" if i % 3 else "host-two", flow, f"id-{flow[0]}", rng.randrange(1 << 32),
                   bool(i % 5 == 0), bool(i % 2), hits)
        want = codec.encode("LayerEvent", r.as_dict())
        assert enc.encode(r) == want
        assert enc.encode(r) == want            # cached parts reused
        assert codec.decode(want)[1]["hits"] == [h.as_record() for h in hits]
        records.append(r)
    # the envelope: a batch of bodies is the codec's LayerEventBatch of those records
    for chunk in (records[:1], records[:7], records):
        want = codec.encode("LayerEventBatch", {"events": [r.as_dict() for r in chunk]})
        assert enc.batch([enc.body(r) for r in chunk]) == want
        assert codec.decode_layer_events(want) == [codec.decode(enc.encode(r))[1]
                                                   for r in chunk]
    # negative numbers use zigzag as well
    r = Record("h", flows[0], "x", 0, False, False, [Hit("xdp", -5, -1, None, 0, 0)])
    assert enc.encode(r) == codec.encode("LayerEvent", r.as_dict())


def test_varint_boundaries() -> None:
    enc = LayerEventEncoder()
    for v in (0, 63, 64, -64, -65, (1 << 27) - 1, 1 << 27, -(1 << 27), -(1 << 27) - 1,
              (1 << 34) + 5, (1 << 62) + 1, (1 << 63) - 1, -(1 << 63)):
        r = Record("h", ("tcp", 4, "10.1.0.1", "10.2.0.2", 1, 2), "x", 7, False, True,
                   [Hit("dev_rx", v, 0, None, 0, 0)])
        assert enc.encode(r) == codec.encode("LayerEvent", r.as_dict()), v
