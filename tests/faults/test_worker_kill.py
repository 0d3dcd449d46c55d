"""The stream worker stopped, or SIGKILLed after and before a commit, with samples half
joined: the next worker of the app id loses none of them. Unmatched records wait in the
changelog-backed table; killed once its offsets are committed, the new worker does not
read those records again, so they come back only if the table's changelog was written
before the commit; killed before, it reads them again and must not join them twice."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from kafka_helpers import Topics, committed, wait_committed

from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.stream.kafkaio import produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, encoded, sample_records

pytestmark = pytest.mark.stack

SAMPLES = 50
SESSION_TIMEOUT_S = 10


@pytest.mark.parametrize("how", ["stopped", "killed-after-commit", "killed-before-commit"])
def test_pending_samples_survive_a_worker_restart(stack, tmp_path, fault_row, how: str) -> None:
    tag = f"lsxg{os.environ['LSX_RUN_ID']}-{uuid.uuid4().hex[:6]}"
    topics = Topics.named(tag)

    # A long join window: a killed worker's partitions move only after the group's session
    # timeout, and the recovered samples must still be open then. The timeout is 10 s, not
    # Faust's minute: recovery_s scales with it (the row says which), the losses do not.
    # Killed before a commit: the first worker never commits (an hour apart), rather than
    # racing a 1 s commit timer against the kill.
    def worker(name: str, *extra: str) -> WorkerProcess:
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", tag,
             "--data-dir", str(tmp_path / name), "--window", "600",
             "--topology", str(REPO_ROOT / "topologies/default.yaml"), "--no-influx",
             "--session-timeout", str(SESSION_TIMEOUT_S), *topics.args(), *extra],
            free_port(), tmp_path / f"{name}.log")

    spec = PathSpec(["h1", "h2", "c1"], flow={"proto": "tcp", "family": 4, "src": "10.1.0.1",
                                            "dst": "10.2.0.2", "sport": 42000, "dport": 5201})
    recs = [sample_records(spec, i, monotonic_ns() + i) for i in range(SAMPLES)]
    first = [r for s in recs for r in s[:2]]
    done_at_kill = None
    never = ("--commit-interval", "3600") if how == "killed-before-commit" else ()
    with worker("a", *never) as a:
        a.wait_ready()
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", first, "flow_id"))
        a.wait_until(lambda s: s["counters"]["pending"] == SAMPLES, 60, "pending samples")
        if how == "killed-after-commit":
            wait_committed(stack.kafka_bootstrap, tag, topics.layer, len(first))
        gone = time.monotonic()
        if how != "stopped":
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)
            done_at_kill = committed(stack.kafka_bootstrap, tag, topics.layer)
    with worker("b") as b:
        b.wait_until(lambda s: s["counters"]["pending"] == SAMPLES, 120,
                     "recovered pending samples")
        recovery_s = time.monotonic() - gone
        produce(stack.kafka_bootstrap, topics.layer,
                encoded("LayerEvent", [s[2] for s in recs], "flow_id"))
        c = b.wait_until(lambda s: s["counters"]["complete"] >= SAMPLES, 60,
                         "completed samples")["counters"]
    fault_row(f"stream worker {how.replace('-', ' ')}", offered=SAMPLES, joined=c["complete"],
              lost=SAMPLES - c["complete"], recovery_s=round(recovery_s, 1),
              detail={"session_timeout_s": SESSION_TIMEOUT_S, "committed_at_kill": done_at_kill,
                      "records_read_again": c["records"] - SAMPLES,
                      "incomplete": c["incomplete"], "pending": c["pending"]})
    if how == "killed-before-commit":
        assert done_at_kill == 0, \
            f"the kill came after a commit ({done_at_kill} of {len(first)} committed)"
        assert c["records"] - SAMPLES == len(first), "the next worker did not read them again"
    assert c["complete"] == SAMPLES and c["incomplete"] == 0 and c["pending"] == 0, c
