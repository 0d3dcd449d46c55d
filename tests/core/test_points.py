"""The one point table (schemas/points.py) against every place that spells points out by
itself: the C enum, the Avro enum, the BPF programs each hook candidate names (their SEC and
their file's hook list), and the tables the stream and the grouper derive from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from latscope.bpf.layout import Header
from latscope.producers import layout
from latscope.schemas import points, records
from latscope.schemas.points import BY_NAME, TABLE, all_hooks, unknown_skip_tokens

REPO = Path(__file__).resolve().parents[2]
BPF_DIR = REPO / "producers" / "bpf"
TRACING = ("tp_btf", "raw_tp", "fentry", "kprobe")


def test_c_enum_is_the_table() -> None:
    assert Header(BPF_DIR / "latscope.h").enum("ls_point") == points.c_enum()
    assert layout.RETRANS == points.RETRANS_NUM == len(TABLE)
    assert [layout.POINT_NAMES[i] for i in range(len(TABLE))] == list(points.POINTS)


def test_avro_enum_is_the_table() -> None:
    schema = json.loads((REPO / "schemas" / "layer_event.avsc").read_text())
    hits = next(f for f in schema["fields"] if f["name"] == "hits")
    point = next(f for f in hits["type"]["items"]["fields"] if f["name"] == "point")
    assert tuple(point["type"]["symbols"]) == points.POINTS
    assert records.POINTS is points.POINTS and records.LAYERS is points.LAYERS


def _programs(src: Path) -> dict[str, str]:
    """program name -> SEC of a .bpf.c file."""
    text = src.read_text()
    out = {}
    for m in re.finditer(r'SEC\("([^"]+)"\)\s*\nint\s+(?:BPF_PROG\(|BPF_KPROBE\()?(\w+)', text):
        out[m.group(2)] = m.group(1)
    return out


def test_every_candidate_names_real_programs_of_its_object() -> None:
    for hook in all_hooks():
        src = BPF_DIR / f"{hook.obj}.bpf.c"
        progs = _programs(src)
        header = src.read_text().split("*/", 1)[0]       # the file's hook list
        if hook.kind in TRACING:
            # helpers' hooks first, the point's own last: "helper+point"
            secs = [progs.get(p) for p in (*hook.helpers, hook.prog)]
            assert secs == list(hook.parts), (hook.name, secs)
            for part in hook.parts:
                assert part in header, f"{src.name}'s header comment does not list {part}"
        else:
            assert progs.get(hook.prog, "").startswith(hook.kind), (hook.name, progs)
    # ... and every program of a point object serves some candidate
    served = {(h.obj, p) for h in all_hooks() for p in h.programs}
    for obj in {h.obj for h in all_hooks()}:
        for prog in _programs(BPF_DIR / f"{obj}.bpf.c"):
            assert (obj, prog) in served, f"{obj}.bpf.c: {prog} is no candidate of any point"


def test_candidate_order_and_fallbacks() -> None:
    for p in TABLE:
        kinds = [h.kind for h in p.hooks]
        if "tp_btf" in kinds:        # every BTF tracepoint has its raw twin right after it
            assert kinds[:2] == ["tp_btf", "raw_tp"], p.name
        assert len({h.name for h in p.hooks}) == len(p.hooks)
    assert unknown_skip_tokens(["tp_btf", "fexit", "tp_btf/sock_send_length",
                                "raw_tp/net_dev_queue", "sockops"]) == []
    assert unknown_skip_tokens(["tp_btf/nowhere", "bpf"]) == ["tp_btf/nowhere", "bpf"]
    dq = BY_NAME["dev_queue"].hooks[0]
    assert dq.skipped_by(["x", "tp_btf"]) == "tp_btf" and dq.skipped_by(["raw_tp"]) is None


def test_stream_and_grouper_tables_come_from_it() -> None:
    from latscope.producers import grouping
    from latscope.stream import segments

    assert segments._RANK == {p.name: p.rank for p in TABLE}
    assert segments.DEVICE_POINTS == {"xdp", "dev_rx", "dev_queue", "dev_xmit"}
    assert segments._POINT_LAYER["dev_queue"] == "qdisc"
    assert grouping._LAST == {"tcp": "sock_recv", "udp": "sock_recv"}
    assert grouping._EXIT == {"dev_xmit"}
    assert {p.layer for p in TABLE} <= set(points.LAYERS)
