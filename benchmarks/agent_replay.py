"""Agent user-space cost per published record, without kernel or broker: a synthetic
ring-buffer replay through the agent's own decode/expand/group path (Agent.process,
expire) and the LayerEvent body each record is published as, on both data paths: Python
(grouping.Grouper and LayerEventEncoder.body, the reference) and native (producers/native,
AgentSettings.native), alternated round by round in one run so both see the same machine.
Events are packed with the layout parsed from producers/bpf/latscope.h, as the probes
write them.

The stream: one TCP flow through one host with every point (sender and receiver side), as
the kernel reports it at the given sampling stride: 64 KiB TSO/GRO ranges at the packet
points, 128 KiB socket calls, only ranges that hold a sampled byte. Prints CPU µs per
record (process time, best round) for each path, their ratio and records per CPU-second;
the target is the native path's; --profile prints the cProfile top of each path.

    .venv/bin/python benchmarks/agent_replay.py [--mbytes 2000] [--size 72400] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from typing import Any

import targets as bench

from latscope.producers import layout
from latscope.producers.agent import Agent, AgentSettings
from latscope.producers.avro import LayerEventEncoder
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
            "dport": 5201, "family": 4, "proto": 6, "flags": 0} | {
                "wait_" + c: 0 for c in layout.WAIT_CAUSES}
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


def replay(recs: list[bytes], size: int, batch: int, native: bool) -> tuple[int, float]:
    """Records published and CPU seconds for one pass over recs on one path; each record
    ends as what the publisher queues: its body and its flow id's bytes (the Kafka key)."""
    agent = Agent(AgentSettings(host="h1", sample_size=size, rate_cap_per_s=10**9,
                                native=native))
    body = LayerEventEncoder().body
    out: list[Any] = []
    n = 0
    t0 = time.process_time()
    for i in range(0, len(recs), batch):
        agent.process(recs[i:i + batch], out)
        agent.grouper.expire(out)
        if native:
            for fid, _ in out:
                fid.encode()
        else:
            for r in out:
                body(r)
                r.flow_id.encode()
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
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each path, alternated")
    ap.add_argument("--profile", action="store_true", help="print the cProfile top 25")
    ap.add_argument("--json", action="store_true")
    bench.add_check_flag(ap)
    a = ap.parse_args()
    recs = events(a.mbytes * 1_000_000, a.size)
    paths = {"python": False, "native": True}
    if a.profile:
        for name, native in paths.items():
            print(f"== {name}")
            prof = cProfile.Profile()
            prof.runcall(replay, recs, a.size, a.batch, native)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in paths}
    for _ in range(a.rounds):                     # python, native, python, native, ...
        for name, native in paths.items():
            runs[name].append(replay(recs, a.size, a.batch, native))
    counts = {name: {n for n, _ in r} for name, r in runs.items()}
    if len(counts["python"] | counts["native"]) != 1:
        raise SystemExit(f"the paths published different record counts: {counts}")
    n = runs["python"][0][0]
    best = {name: min(t for _, t in r) for name, r in runs.items()}
    res: dict[str, Any] = {"events": len(recs), "records": n,
                           "hits_per_record": round(len(recs) / n, 2)}
    for name in paths:
        res[f"{name}_cpu_us_per_record"] = round(best[name] / n * 1e6, 3)
        res[f"{name}_records_per_cpu_s"] = round(n / best[name])
    res["python_over_native"] = round(best["python"] / best["native"], 1)
    print(json.dumps(res) if a.json else "\n".join(f"{k}: {v}" for k, v in res.items()))
    return bench.report([bench.Target("agent user-space CPU per published record (native)",
                                      res["native_cpu_us_per_record"], "<=", 3.0, "µs",
                                      aim=1.0)],
                        a.check, as_json=a.json)


if __name__ == "__main__":
    raise SystemExit(main())
