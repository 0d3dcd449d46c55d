"""Stream worker CPU per joined sample, stage by stage, in process (no Faust, no Kafka).

Budget (design §9): 20k joined samples/s per worker is 50 µs of CPU per sample for
everything. Synthetic 3-host samples (the default topology's f1 path, injected clock
offsets with ClockModel records, 64 flows) go through the worker's per-sample code:
decode (3 LayerEvents) → join → breakdown → Breakdown Avro → window fold → raw sample line.
Each stage's µs per JOINED sample is printed (every stage in the headline sum), and,
measured side by side in the same run on the same inputs, the C Avro paths (stream/native/)
against the generic codec they replace:

* decode: stream/layer_avro.decode_layer_event vs codec.decode (one record a message) and
  decode_layer_events vs codec.decode_layer_events (the agents' LayerEventBatch)
* encode: stream/breakdown_avro.encode_breakdown vs codec.encode("Breakdown")

and the flow context (issue #15), per interval rather than per sample: each FlowStats record
(one per flow, host and interval: a sender socket, two devices, a drop reason) through the
worker's door, its table and its InfluxDB lines, as µs per record and as CPU per interval
for the 64 flows on 3 hosts, against the worker without flow stats (nothing to do).

Garbage collection: ``--gc worker`` (default) as the worker runs it (stream/app.py
run_worker: start-up objects, here the inputs, frozen out of the collector's scans, young
collections rarer); ``on``: Python's defaults, nothing frozen (the inputs then make every
full collection slow); ``off``: pure CPU.

    .venv/bin/python benchmarks/stream_cpu.py [--samples 20000] [--gc worker|on|off] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sys
import time
from collections.abc import Callable

import targets as bench

from latscope.paths import REPO_ROOT
from latscope.producers.flow_stats import flow_key, socket_record
from latscope.producers.owners import Owner
from latscope.producers.tcp_state import TcpSocket
from latscope.schemas import codec
from latscope.schemas.records import flow_id
from latscope.settings import flow_resolver
from latscope.sinks.flow_stats import flow_stats_lines
from latscope.sinks.influx import sample_line
from latscope.stream.breakdown_avro import encode_breakdown
from latscope.stream.flow_stats import FlowContext
from latscope.stream.join import Joiner, JoinPolicy
from latscope.stream.layer_avro import decode_layer_event, decode_layer_events
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.synthetic import PathSpec, clock_model, sample_records
from latscope.stream.windows import WindowPolicy, Windows

BUDGET_US = 50.0
OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}
BATCH = 2000          # messages per worker batch: the worker's --batch default
STAGES = ("decode", "join", "bd", "enc", "fold", "line")


def inputs(n: int) -> tuple[list[bytes], list[bytes]]:
    """n samples as single-record messages, and as LayerEventBatch messages (one per flow
    and host, 8 samples each: what an agent's poll sends)."""
    specs = [PathSpec(["h1", "h2", "c1"], step_ns=9000, offsets_ns=OFFSETS,
                      flow={"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
                            "sport": 30000 + i, "dport": 5201}) for i in range(64)]
    recs = []
    for i in range(n):
        recs += sample_records(specs[i % 64], seq=i * 1448, t0_ref_ns=10**12 + i * 1000)
    singles = [codec.encode("LayerEvent", r) for r in recs]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in recs:
        groups.setdefault((r["flow_id"], r["host"]), []).append(r)
    batches = []
    for g in groups.values():
        batches += [codec.encode("LayerEventBatch", {"events": g[i:i + 8]})
                    for i in range(0, len(g), 8)]
    return singles, batches


FLOWS, HOSTS = 64, ("h1", "h2", "c1")


def flow_stats_inputs(intervals: int) -> list[bytes]:
    """FlowStats messages of FLOWS flows on HOSTS, interval after interval, as agents send."""
    out = []
    info = {"state": 1, "rtt": 250, "rttvar": 40, "min_rtt": 90, "snd_cwnd": 10,
            "snd_ssthresh": 2**31 - 1, "snd_mss": 1448, "snd_wnd": 65535, "rcv_wnd": 65535,
            "pacing_rate": 10**9, "delivery_rate": 10**8, "total_retrans": 3}
    owner = Owner(4242, "iperf3", 12.5, 8 << 20)
    for k in range(intervals):
        for i in range(FLOWS):
            flow = ("tcp", 4, "10.1.0.1", "10.2.0.2", 30000 + i, 5201)
            sock = TcpSocket(1, 4, ("10.1.0.1", 30000 + i), ("10.2.0.2", 5201), 77 + i, 1, info)
            for h in HOSTS:
                fk = flow_key(flow)
                out.append(codec.encode("FlowStats", {
                    "flow_id": flow_id(fk), "flow": fk, "host": h,
                    "interval_start_ns": 10**18 + k * 10**9, "interval_ns": 10**9,
                    "duration_ns": 10**9, "app_bytes_written": 10**7, "app_writes": 80,
                    "app_bytes_read": 0, "app_reads": 0, "dev_bytes_tx": 10**7,
                    "dev_segs_tx": 7000, "dev_bytes_rx": 0, "dev_segs_rx": 0,
                    "retrans_bytes": 2896, "retrans_segs": 2,
                    "devices": [{"netns": 1, "ifindex": j, "device": f"veth{j}", "dir": "tx",
                                 "bytes": 10**7, "segs": 7000} for j in (2, 3)],
                    "drops": [{"reason": "QDISC_DROP", "netns": 1, "packets": 2,
                               "bytes": 3000}],
                    "sockets": [socket_record(sock, "sender", owner)]}))
    return out


def flow_context_us(values: list[bytes]) -> float:
    """µs of CPU per FlowStats record: the worker's door and table (FlowContext) and its
    InfluxDB lines (what the writer queues)."""
    resolver = flow_resolver(REPO_ROOT / "topologies/default.yaml")
    ctx = FlowContext(resolver, lambda v, why: None, lambda rec, name: flow_stats_lines(rec, name))
    cpu = time.process_time()
    for v in values:
        ctx.on_message(v)
    cpu = time.process_time() - cpu
    if ctx.counters.flow_stats_in != len(values):
        raise SystemExit(f"flow context took {ctx.counters.flow_stats_in} of {len(values)}")
    return cpu / len(values) * 1e6


def pipeline(values: list[bytes], batch: int = BATCH) -> tuple[dict[str, float], int]:
    """Seconds per stage over every value, as the worker runs them batch by batch, and how
    many samples were joined (the divisor: never the number requested)."""
    resolver = flow_resolver(REPO_ROOT / "topologies/default.yaml")
    models = {h: clock_model(h, OFFSETS[h]) for h in ("h1", "h2")}
    clocks = ClockView(models, resolver.manager, resolver.clock_hosts)
    joiner = Joiner(JoinPolicy(), resolver.path)
    windows = Windows(WindowPolicy())
    table: dict = {}
    stats: dict = {}
    t = dict.fromkeys(STAGES, 0.0)
    joined = 0
    clock = time.perf_counter
    for i in range(0, len(values), batch):
        a = clock()
        now = time.time()    # each record's arrival (Kafka timestamp): all of it just now
        decoded = [(0, now, decode_layer_event(v)) for v in values[i:i + batch]]
        b = clock()
        done, writes = joiner.process(decoded, table, now)
        for k, (_, v) in writes.items():
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        c = clock()
        bds = []
        joined += len(done)
        for st in done:
            ev0 = st["ev"][0]
            info = resolver.resolve(ev0["flow"], ev0["flow_id"])
            bds.append((breakdown(st["ev"], clocks, path=info.path), info.name))
        d = clock()
        for bd, _ in bds:
            encode_breakdown(bd)
        e = clock()
        stats.update(windows.fold([(0, bd, name, bd["ts_ns"]) for bd, name in bds], stats))
        f = clock()
        for bd, name in bds:
            sample_line(bd, name, bd["ts_ns"], {})
        g = clock()
        for k, dt in zip(STAGES, (b - a, c - b, d - c, e - d, f - e, g - f), strict=True):
            t[k] += dt
    return t, joined


def per_item_us(f: Callable, items: list) -> float:
    t = time.perf_counter()
    for x in items:
        f(x)
    return (time.perf_counter() - t) / len(items) * 1e6


def side_by_side(singles: list[bytes], batches: list[bytes], bds: list[dict]) -> dict:
    """Generic vs C, alternated (generic, C, generic, C) on the same inputs; best of each."""
    pairs = {
        "decode_record": (lambda v: codec.decode(v, expect="LayerEvent"), decode_layer_event,
                          singles),
        "decode_batch": (codec.decode_layer_events, decode_layer_events, batches),
        "encode_breakdown": (lambda bd: codec.encode("Breakdown", bd), encode_breakdown, bds),
    }
    out = {}
    for name, (generic, fast, items) in pairs.items():
        gs, hs = [], []
        for _ in range(2):
            gs.append(per_item_us(generic, items))
            hs.append(per_item_us(fast, items))
        g, h = min(gs), min(hs)
        out[name] = {"generic_us": round(g, 2), "fast_us": round(h, 2),
                     "speedup": round(g / h, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000, help="joined samples (3 records each)")
    ap.add_argument("--gc", choices=("worker", "on", "off"), default="worker",
                    help="worker: as stream/app.py sets it (default); on: Python's defaults; off")
    ap.add_argument("--batch", type=int, default=BATCH,
                    help="records per batch, as the worker's take() (smaller: warmer caches)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile top 25")
    bench.add_check_flag(ap)
    args = ap.parse_args()
    if args.samples < 1 or args.batch < 1:
        ap.error("--samples and --batch must be at least 1")

    print(f"building {args.samples} samples…", file=sys.stderr, flush=True)
    singles, batches = inputs(args.samples)
    if args.gc == "worker":
        gc.freeze()                          # the same two calls as stream/app.py run_worker
        gc.set_threshold(50_000, 20, 100)
    elif args.gc == "off":
        gc.disable()
    print("pipeline…", file=sys.stderr, flush=True)
    cpu = time.process_time()
    t, joined = pipeline(singles, args.batch)
    cpu = time.process_time() - cpu
    if joined == 0:
        raise SystemExit("no sample was joined: nothing to measure")
    stages = {k: round(v / joined * 1e6, 1) for k, v in t.items()}

    print("side by side vs the generic codec…", file=sys.stderr, flush=True)
    resolver = flow_resolver(REPO_ROOT / "topologies/default.yaml")
    clocks = ClockView({h: clock_model(h, OFFSETS[h]) for h in ("h1", "h2")},
                       resolver.manager, resolver.clock_hosts)
    recs = [decode_layer_event(v) for v in singles[:3 * min(args.samples, 5000)]]
    bds = [breakdown(recs[i:i + 3], clocks, path=resolver.path(recs[i]))
           for i in range(0, len(recs), 3)]
    compare = side_by_side(singles[:15000], batches[:2000], bds)

    print("flow context…", file=sys.stderr, flush=True)
    fs = flow_stats_inputs(30)
    fs_us = min(flow_context_us(fs) for _ in range(3))
    per_interval_ms = fs_us * FLOWS * len(HOSTS) / 1000

    result = {"samples": args.samples, "joined": joined, "gc": args.gc, "batch": args.batch,
              "flow_context_us_per_record": round(fs_us, 1),
              "flow_context_ms_per_interval": round(per_interval_ms, 2),
              "samples_per_cpu_s": round(joined / cpu),
              "us_per_sample": stages,
              "all_stages_us": round(sum(stages.values()), 1), "budget_us": BUDGET_US,
              "side_by_side": compare}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.samples} samples, batches of {args.batch}, gc {args.gc}: "
              f"{result['samples_per_cpu_s']} samples/s "
              f"of CPU; µs per sample: {stages}")
        print(f"{joined} of {args.samples} samples joined; all stages (join included): "
              f"{result['all_stages_us']} µs (budget {BUDGET_US:.0f} µs for everything)")
        for name, r in compare.items():
            print(f"{name}: codec {r['generic_us']} µs, C {r['fast_us']} µs: "
                  f"{r['speedup']}x")
        print(f"flow context: {fs_us:.1f} µs per FlowStats record; {FLOWS} flows on "
              f"{len(HOSTS)} hosts: {per_interval_ms:.2f} ms of CPU per 1 s interval "
              f"({per_interval_ms / 10:.2f} % of a core), against 0 with flow stats off "
              "(per interval, whatever the packet rate)")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(pipeline, singles, args.batch)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return bench.report([
        bench.Target("samples joined of those offered", joined, ">=", args.samples),
        bench.Target("worker CPU per sample, all stages, in process", result["all_stages_us"],
                     "<=", BUDGET_US, "µs"),
    ], args.check, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
