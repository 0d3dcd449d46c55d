"""Stream targets (design §9): joined samples/s per Faust worker, sample → InfluxDB freshness.

Synthetic per-host LayerEvent records (three hosts per sampled byte, the default
topology's f1 path, injected clock offsets with ClockModel records) go through the real
broker into one real ``latscope stream worker``, which joins, publishes breakdowns and
writes InfluxDB.

Phase 1 (throughput): a backlog of N samples is produced first, as agents write it (a
LayerEventBatch per host and partition), then a fresh worker drains it; joined samples/s =
COMPLETE joined samples / time from first to last, read from the worker's own counters, and
every offered sample must be accounted for (complete, incomplete or dead-lettered). The same
with one LayerEvent per Kafka message (the same N samples), side by side.
Phase 2 (freshness): a fresh worker, records produced live at the target rate (20k/s) with
current timestamps; freshness = InfluxDB write acknowledged − the sample's sock_send time,
p99 from the worker's sketch (every raw sample point).

    .venv/bin/python benchmarks/stream_throughput.py [--samples 250000] [--rate 20000] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import targets as bench

from latscope import kafka
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.schemas.records import LAYER_EVENTS_CONFIG, LAYER_EVENTS_PARTITIONS
from latscope.sinks.influx_writer import delete_run
from latscope.sinks.settings import InfluxSettings
from latscope.stack import services as stack
from latscope.stream.kafkaio import produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import (
    PathSpec,
    clock_model,
    encoded,
    encoded_batches,
    sample_records,
)

TARGET_RATE = 20_000      # joined samples/s per worker
TARGET_FRESH_P99_S = 1.0   # design §9: sampled byte -> InfluxDB point at the target rate
OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}
HOSTS = ["h1", "h2", "c1"]
BATCH = 500      # records per LayerEventBatch at most (the agent's limit)


def specs(n_flows: int) -> list[PathSpec]:
    return [PathSpec(HOSTS, step_ns=9_000, offsets_ns=OFFSETS,
                     flow={"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
                           "sport": 30000 + i, "dport": 5201}) for i in range(n_flows)]


def records(flows: list[PathSpec], first: int, n: int, t0: int, gap_ns: int) -> list[dict]:
    out = []
    for i in range(first, first + n):
        out += sample_records(flows[i % len(flows)], seq=i * 1448, t0_ref_ns=t0 + i * gap_ns)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


EXTRA: list[str] = []   # --worker-arg passthrough


def worker(info: stack.StackInfo, prefix: str, tmp: Path, name: str) -> WorkerProcess:
    return WorkerProcess(
        ["--bootstrap", info.kafka_bootstrap, "--app-id", f"{prefix}-{name}",
         "--data-dir", str(tmp / name), "--topology", str(REPO_ROOT / "topologies/default.yaml"),
         "--layer-topic", f"{prefix}-{name}-layer", "--clock-topic", f"{prefix}-clock",
         "--breakdown-topic", f"{prefix}-{name}-bd", "--dead-letter-topic", f"{prefix}-dlq",
         "--influx-tag", f"run={prefix}", "--batch", "4000", *EXTRA],
        free_port(), tmp / f"{name}.log")


def throughput(info: stack.StackInfo, prefix: str, tmp: Path, n: int, batched: bool) -> dict:
    flows = specs(64)
    t0 = monotonic_ns()
    name = "tput-batch" if batched else "tput-single"
    w = worker(info, prefix, tmp, name)
    recs = records(flows, 0, n, t0, 1000)
    msgs = (encoded_batches(recs, LAYER_EVENTS_PARTITIONS, BATCH) if batched
            else encoded("LayerEvent", recs, "flow_id"))
    print(f"phase 1 ({'LayerEventBatch' if batched else 'one LayerEvent a message'}): "
          f"a backlog of {n} samples ({len(recs)} records, {len(msgs)} messages)…", flush=True)
    # as the worker or an agent creates it (the worker is not running yet)
    kafka.ensure_topics(info.kafka_bootstrap, {f"{prefix}-{name}-layer": (
        LAYER_EVENTS_PARTITIONS, LAYER_EVENTS_CONFIG)})
    produce(info.kafka_bootstrap, f"{prefix}-{name}-layer", msgs)
    with w:
        w.wait_ready()
        first = w.wait_until(lambda s: s["counters"]["complete"] > 0, 120, "first breakdown")
        t_first, cpu_first = time.monotonic(), cpu_seconds(w.proc.pid)
        n_first = first["counters"]["complete"]
        last = w.wait_until(lambda s: _accounted(s) >= n, 600, "every sample accounted for")
        t_last, cpu_last = time.monotonic(), cpu_seconds(w.proc.pid)
    if n_first > n // 2:
        raise SystemExit(f"phase 1: {n_first} of {n} samples were done before the first "
                         f"status poll: too small a backlog to time, raise --samples")
    done = last["counters"]["complete"] - n_first
    rate = done / max(t_last - t_first, 1e-9)
    cpu_us = (cpu_last - cpu_first) / max(done, 1) * 1e6
    return {"samples": n, "records": len(recs), "messages": len(msgs),
            "joined_per_s": round(rate),
            # The worker's own CPU (all its threads) per sample, and the rate that makes on
            # one whole core: steadier than the wall-clock rate on a shared 2-core machine.
            "worker_cpu_us_per_sample": round(cpu_us, 1),
            "joined_per_cpu_s": round(1e6 / cpu_us) if cpu_us > 0 else None,
            "complete": last["counters"]["complete"],
            "incomplete": last["counters"]["incomplete"],
            "dead_lettered": last["counters"]["dead_lettered"],
            "seconds": round(t_last - t_first, 2)}


def _accounted(status: dict) -> int:
    c = status["counters"]
    return c["complete"] + c["incomplete"] + c["dead_lettered"]


def freshness(info: stack.StackInfo, prefix: str, tmp: Path, rate: int, seconds: float) -> dict:
    flows = specs(64)
    w = worker(info, prefix, tmp, "fresh")
    with w:
        w.wait_ready()
        print(f"phase 2: producing {rate} samples/s live for {seconds:.0f} s…", flush=True)
        producer = kafka.producer(info.kafka_bootstrap, **{
            "linger.ms": 20, "enable.idempotence": True, "compression.type": "lz4"})
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            tick = time.monotonic()
            batch = max(1, rate // 20)   # a 50 ms flush, as the agent's linger
            for _, value, part in encoded_batches(records(flows, sent, batch, monotonic_ns(), 0),
                                                  LAYER_EVENTS_PARTITIONS):
                producer.produce(f"{prefix}-fresh-layer", value=value, partition=part)
            producer.poll(0)
            sent += batch
            time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
        if producer.flush(30):
            raise RuntimeError("phase 2: records left undelivered")
        achieved = sent / (time.monotonic() - start)
        summ = w.wait_until(lambda s: s["counters"]["published"] >= sent
                            and (s["influx"] or {}).get("lines_written", 0) > 0, 120,
                            "all samples written")
        # The sketch covers every raw sample point acknowledged so far.
        time.sleep(1.5)   # one flush interval: let the last batch be acknowledged
        summ = w.summary()
    return {"offered_per_s": round(achieved), "published": summ["counters"]["published"],
            "fresh_p50_s": summ["influx"]["freshness_p50_s"],
            "fresh_p99_s": summ["influx"]["freshness_p99_s"],
            "influx_failed": summ["influx"]["lines_failed"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=250_000,
                    help="phase 1 backlog (large enough that the worker cannot drain it before "
                         "its first status poll)")
    ap.add_argument("--rate", type=int, default=TARGET_RATE,
                    help="phase 2 samples/s (default: the target rate)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker-arg", action="append", default=[],
                    help="extra `stream worker` option, e.g. --worker-arg=--no-raw-samples")
    ap.add_argument("--skip-freshness", action="store_true")
    ap.add_argument("--skip-single", action="store_true",
                    help="skip the comparison run with one LayerEvent per message")
    bench.add_check_flag(ap)
    args = ap.parse_args()
    EXTRA.extend(args.worker_arg)
    info = stack.status(stack.StackSettings.from_env())
    if not (info.kafka_up and info.influx_up):
        raise SystemExit("local stack not running: latscope stack up")
    prefix = f"lsxd-bench-{uuid.uuid4().hex[:6]}"
    produce(info.kafka_bootstrap, f"{prefix}-clock", encoded(
        "ClockModel", [clock_model(h, OFFSETS[h]) for h in ("h1", "h2")], "host"))
    try:
        with tempfile.TemporaryDirectory(prefix="lsxd-bench-") as d:
            single = (None if args.skip_single else
                      throughput(info, prefix, Path(d), args.samples, batched=False))
            tput = throughput(info, prefix, Path(d), args.samples, batched=True)
            fresh = ({"fresh_p99_s": None, "fresh_p50_s": None, "offered_per_s": 0}
                     if args.skip_freshness else
                     freshness(info, prefix, Path(d), args.rate, args.seconds))
    finally:   # a million records and points each run: not left behind
        print("deleting the run's topics and InfluxDB points…", flush=True)
        kafka.delete_topics_with_prefix(info.kafka_bootstrap, prefix)
        delete_run(InfluxSettings(info.influx_url, info.influx_org, info.influx_bucket,
                                  info.influx_token or ""), prefix)
    result = {"throughput": tput, "throughput_one_record_a_message": single,
              "freshness": fresh,
              "ratios": {"joined_per_s / target": round(tput["joined_per_s"] / TARGET_RATE, 3),
                         "joined_per_cpu_s / target": round(
                             (tput["joined_per_cpu_s"] or 0) / TARGET_RATE, 3),
                         "batched / one record a message": round(
                             tput["joined_per_s"] / single["joined_per_s"], 2) if single else None,
                         "fresh_p99 / target": round(fresh["fresh_p99_s"] / TARGET_FRESH_P99_S, 3)
                         if fresh["fresh_p99_s"] is not None else None}}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"joined samples/s per worker: {tput['joined_per_s']} "
              f"(target ≥ {TARGET_RATE}: ratio {result['ratios']['joined_per_s / target']}); "
              f"vs one record a message: {result['ratios']['batched / one record a message']}×")
        print(f"worker CPU per sample: {tput['worker_cpu_us_per_sample']} µs, "
              f"{tput['joined_per_cpu_s']} samples per CPU second (ratio "
              f"{result['ratios']['joined_per_cpu_s / target']})")
        print(f"sample → InfluxDB freshness p99: {fresh['fresh_p99_s']} s, p50 "
              f"{fresh['fresh_p50_s']} s at {fresh['offered_per_s']} samples/s "
              f"(target ≤ {TARGET_FRESH_P99_S} s: ratio {result['ratios']['fresh_p99 / target']})")
        print(json.dumps(result, indent=1))
    return bench.report([
        bench.Target("complete joined samples/s per worker", tput["joined_per_s"], ">=",
                     TARGET_RATE, "samples/s"),
        bench.Target("offered samples joined complete", tput["complete"], ">=", tput["samples"]),
        bench.Target(f"sample -> InfluxDB point p99 at {fresh['offered_per_s']} samples/s",
                     fresh["fresh_p99_s"], "<=", TARGET_FRESH_P99_S, "s"),
        bench.Target("freshness measured at the target rate", fresh["offered_per_s"], ">=",
                     0.95 * TARGET_RATE, "samples/s"),
    ], args.check, as_json=False)


if __name__ == "__main__":
    raise SystemExit(main())
