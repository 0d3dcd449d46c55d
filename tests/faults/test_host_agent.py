"""One host's agent is SIGKILLed mid-run and started again 10 s later, the other host's
agent, the sync and the worker running on: the worker closes the samples of the gap as
incomplete, naming the missing host, and counts them; once the agent is back, samples are
complete again. The breakdowns on the broker are the truth the worker's counters are held
to; the gap's edges are the test's own clock (the manager's clock is the reference)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_net import TOPOLOGY
from kafka_helpers import breakdowns_in_topic
from producer_helpers import start_agent_process

from latscope.bpf.clock import monotonic_ns
from latscope.lab import traffic
from latscope.lab.demo import pipeline
from latscope.schemas.records import TOPIC_BREAKDOWNS, TOPIC_LAYER_EVENTS

pytestmark = [pytest.mark.root, pytest.mark.stack]

KILLED = "h2"
BEFORE_S, GAP_S, AFTER_S = 5.0, 10.0, 12.0
# A new agent's first records may reach Kafka after the join window closed their samples
# (its producer still connecting; measured up to ~5 s after ready with the whole suite
# running, none alone): samples from this long after it is ready on must be complete.
SETTLE_S = 6.0


def start_agent(opts, bootstrap: str, status: Path) -> subprocess.Popen:
    return start_agent_process("--topology", str(TOPOLOGY), "--prefix", opts.prefix, "--host",
                               KILLED, "--bootstrap", bootstrap, "--topic",
                               opts.topic(TOPIC_LAYER_EVENTS), "--status-file", str(status))


def test_host_agent_killed_and_restarted(fault_options, tmp_path, fault_row) -> None:
    opts = fault_options(agent_hosts=["h1"])
    procs: list[subprocess.Popen] = []
    try:
        with pipeline(opts) as p:
            assert not p.missing, p.missing
            procs.append(start_agent(opts, p.kafka.agent.bootstrap, tmp_path / "a.json"))
            started = time.monotonic()
            (run,) = traffic.start_flows(p.net)   # paced, until stopped: agents start slowly
            time.sleep(BEFORE_S)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            killed_ns = monotonic_ns()
            time.sleep(GAP_S)
            complete_before = p.worker.summary()["counters"]["complete"]
            restart, restart_ns = time.monotonic(), monotonic_ns()
            procs.append(start_agent(opts, p.kafka.agent.bootstrap, tmp_path / "b.json"))
            back_ns, back = monotonic_ns(), time.monotonic()
            recovery_s = None
            with contextlib.suppress(TimeoutError):   # a miss is reported in the row
                p.worker.wait_until(lambda s: s["counters"]["complete"] > complete_before, 30,
                                    "complete samples again")
                recovery_s = round(time.monotonic() - restart, 1)   # its start-up included
            time.sleep(AFTER_S)
            restarted = json.loads((tmp_path / "b.json").read_text())["counters"]
            result = run.stop()
            procs[1].send_signal(signal.SIGTERM)    # detaches and flushes
            assert procs[1].wait(30) == 0
            summary = p.finish(time.monotonic() - started, [result])
        bds = breakdowns_in_topic(p.kafka.agent.bootstrap, opts.topic(TOPIC_BREAKDOWNS))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    c = summary["worker"]["counters"]
    incomplete = [b for b in bds if not b["complete"]]
    # Samples taken while no agent ran on the host, and after the new one was ready (a join
    # window's margin at each edge). The new agent attaches its points one by one before it
    # says ready: a sample it cut through may lack points of either host, or come in halves,
    # and is only required to be counted.
    gap = [b for b in bds if killed_ns + 2e9 < b["ts_ns"] < restart_ns - 2e9]
    after = [b for b in bds if b["ts_ns"] > back_ns + SETTLE_S * 1e9]
    late_incomplete = [b["ts_ns"] for b in bds if b["ts_ns"] > back_ns and not b["complete"]]
    unnamed = [b for b in gap if b["complete"] or b["missing_hosts"] != [KILLED]]
    edge = [b for b in incomplete if b not in gap]
    halves = Counter((b["flow_id"], b["seq"]) for b in bds)
    fault_row("one host's agent killed, restarted 10 s later", offered=len(bds),
              joined=sum(b["complete"] for b in bds),
              lost=len(unnamed) + abs(c["incomplete"] - len(incomplete))
              + sum(not b["complete"] for b in after),
              recovery_s=recovery_s,
              detail={"restarted_agent_kernel_hits": restarted["kernel_hits"],
                      "agent_start_s": round(back - restart, 1),
                      "incomplete": len(incomplete), "worker_incomplete": c["incomplete"],
                      "missing_hosts": {",".join(k) or "(none: a host's points)": v for k, v in
                                        Counter(tuple(b["missing_hosts"]) for b in incomplete)
                                        .items()},
                      "gap": len(gap), "after": len(after), "edge_incomplete": len(edge),
                      "incomplete_until_s_after_ready": round(
                          (max(late_incomplete, default=back_ns) - back_ns) / 1e9, 1),
                      "edge_missing_hosts": dict(Counter(",".join(b["missing_hosts"])
                                                         for b in edge)),
                      "bytes_in_halves": sum(n > 1 for n in halves.values())})
    assert len(gap) > 0 and len(after) > 0, (len(gap), len(after))
    assert not unnamed, Counter((b["complete"], tuple(b["missing_hosts"])) for b in unnamed)
    assert c["incomplete"] == len(incomplete), (c, len(incomplete))   # each one counted
    assert all(b["complete"] for b in after), Counter(tuple(b["missing_hosts"]) for b in after)
