"""Agent user-space cost per published record, without kernel or broker: a synthetic
ring-buffer replay through the agent's own decode/expand/group path (Agent.process,
Grouper.expire) and the LayerEvent encoder the publisher uses. Events are packed with the
layout parsed from producers/bpf/latscope.h, as the probes write them.

The stream: one TCP flow through one host with every point (sender and receiver side), as
the kernel reports it at the given sampling stride: 64 KiB TSO/GRO ranges at the packet
points, 128 KiB socket calls, only ranges that hold a sampled byte. Prints CPU µs per
record (process time) and records per CPU-second; --profile prints the cProfile top.

    .venv/bin/python benchmarks/agent_replay.py [--mbytes 2000] [--size 72400] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import targets as bench

from latscope.producers import layout
from latscope.producers.agent import Agent, AgentSettings
from latscope.producers.avro import LayerEventEncoder
from latscope.producers.grouping import Record
from latscope.producers.sampling import holds_sample

TSO = 65160          # 45 MSS
CALL = 131072



def events(total: int, size: int) -> list[bytes]:
    """Packed ls_event records in ring-buffer order for `total` bytes of one flow."""
    fields = layout.EVENT.names
    pack = layout.EVENT_STRUCT.pack
    rev = layout.POINT_NAMES_REV
    base = {"netns": 4026531840, "saddr": bytes([10, 1, 0, 1]) + bytes(12),
            "daddr": bytes([10, 1, 0, 2]) + bytes(12), "cpu": 1, "sport": 40000,
            "dport": 5201, "family": 4, "proto": 6, "flags": 0}
    out: list[bytes] = []
    ts = 1_000_000_000

    def ev(point: str, seq: int, length: int, dev: bytes, ifindex: int) -> None:
        nonlocal ts
        if not holds_sample(seq, length, size):
            return
        ts += 1000
        v = base | {"ts_ns": ts, "seq": seq % (1 << 32), "len": length, "ifindex": ifindex,
                    "point": rev[point], "dev": dev}
        out.append(pack(*(v[n] for n in fields)))

    for call in range(0, total, CALL):
        for seq in range(call, call + CALL, TSO):
            n = min(TSO, call + CALL - seq)
            for p in ("tcp_tx", "ip_out", "ip_post", "dev_queue", "dev_xmit"):
                ev(p, seq, n, b"veth0" if p.startswith("dev") else b"", 2)
            for p in ("dev_rx", "ip_pre", "ip_in", "tcp_rx"):
                ev(p, seq, n, b"veth1" if p.startswith("dev") else b"", 3)
        ev("sock_send", call, CALL, b"", 0)
        ev("sock_recv", call, CALL, b"", 0)
    return out


def replay(recs: list[bytes], size: int, batch: int) -> tuple[int, float]:
    agent = Agent(AgentSettings(host="h1", sample_size=size, rate_cap_per_s=10**9))
    enc = LayerEventEncoder()
    out: list[Record] = []
    n = 0
    t0 = time.process_time()
    for i in range(0, len(recs), batch):
        agent.process(recs[i:i + batch], out)
        agent.grouper.expire(out)
        for r in out:
            enc.encode(r)
            r.flow_id.encode()       # the Kafka key, as publish() makes it
        n += len(out)
        out.clear()
    agent.grouper.flush_all(out)
    n += len(out)
    return n, time.process_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mbytes", type=int, default=2000, help="flow bytes to replay (MB)")
    ap.add_argument("--size", type=int, default=72400, help="sampling stride")
    ap.add_argument("--batch", type=int, default=256, help="ring-buffer records per poll")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print the cProfile top 25")
    ap.add_argument("--json", action="store_true")
    bench.add_check_flag(ap)
    a = ap.parse_args()
    recs = events(a.mbytes * 1_000_000, a.size)
    if a.profile:
        prof = cProfile.Profile()
        prof.runcall(replay, recs, a.size, a.batch)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    runs = [replay(recs, a.size, a.batch) for _ in range(a.rounds)]
    n = runs[0][0]
    best = min(t for _, t in runs)
    res = {"events": len(recs), "records": n, "hits_per_record": round(len(recs) / n, 2),
           "cpu_us_per_record": round(best / n * 1e6, 2),
           "records_per_cpu_s": round(n / best), "hits_per_cpu_s": round(len(recs) / best)}
    print(json.dumps(res) if a.json else "\n".join(f"{k}: {v}" for k, v in res.items()))
    return bench.report([bench.Target("agent user-space CPU per published record",
                                      res["cpu_us_per_record"], "<=", 3.0, "µs", aim=1.0)],
                        a.check, as_json=a.json)


if __name__ == "__main__":
    raise SystemExit(main())
