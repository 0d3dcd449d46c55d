"""Check a demo's breakdowns against the injected clock truth (shared by the demo tests)."""

from __future__ import annotations

from collections import defaultdict

from latscope.schemas import codec
from latscope.stream.kafkaio import consume


def ref_of(host_ns: int, inj: dict) -> float:
    """Invert the injected clock: host = ref + offset + (ref - epoch) * drift."""
    d = round(inj["drift_ppm"] * 1000) / 1e9
    return (host_ns - inj["offset_ns"] + inj["epoch_ns"] * d) / (1 + d)


def load(bootstrap: str, summary: dict) -> tuple[list[dict], dict]:
    """Every breakdown of the run and the raw LayerEvent records per (flow id, seq)."""
    n = summary["worker"]["counters"]["published"]
    bds = [codec.decode(m.value(), expect="Breakdown")[1] for m in consume(
        bootstrap, summary["topics"]["breakdowns"], lambda ms: len(ms) >= n, 60)]
    recs: dict = defaultdict(list)
    m = summary["worker"]["counters"]["records"]
    events: list[dict] = []
    read = [0]     # messages decoded so far: each is decoded once, as it arrives

    def enough(msgs: list) -> bool:
        for msg in msgs[read[0]:]:
            events.extend(codec.decode_layer_events(msg.value()))
        read[0] = len(msgs)
        return len(events) >= m

    consume(bootstrap, summary["topics"]["layer_events"], enough, 60)
    for r in events:
        recs[(r["flow_id"], r["seq"])].append(r)
    return bds, recs


def true_end_to_end(bd: dict, recs: list[dict], injected: dict) -> float:
    src, dst = bd["hosts"][0], bd["hosts"][-1]
    send = min(h["ts_ns"] for r in recs if r["host"] == src for h in r["hits"]
               if h["point"] == "sock_send")
    recv = min(h["ts_ns"] for r in recs if r["host"] == dst for h in r["hits"]
               if h["point"] == "sock_recv")
    return ref_of(recv, injected[dst]) - ref_of(send, injected[src])
