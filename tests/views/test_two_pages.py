"""Two workers with one app id: each one's live page (real headless Chromium) says which
partitions it shows and lists exactly the flows that the producer's partitioner put there."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest
from cdp import Chromium
from kafka_helpers import Topics
from needs import missing

from latscope import kafka
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.stream.kafkaio import produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, encoded, sample_records

pytestmark = pytest.mark.stack
PARTITIONS = 4   # the worker's default for a layer-events topic it creates

ROWS_JS = ("[...document.querySelectorAll('#flows tbody tr[data-flow]')]"
           ".map(tr => tr.dataset.flow)")


def test_each_page_shows_its_partitions(stack, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        missing("chromium (Debian package; make setup installs it)")
    tag = f"lsxi{os.environ['LSX_RUN_ID']}-{uuid.uuid4().hex[:8]}"
    topics = Topics.named(tag)

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", tag,
             "--data-dir", str(tmp_path / name), "--no-influx",
             "--topology", str(REPO_ROOT / "topologies/default.yaml"), *topics.args()],
            free_port(), tmp_path / f"{name}.log")

    try:
        with worker("a") as a, worker("b") as b:
            parts = {}
            for w in (a, b):
                w.wait_ready()
            for w in (a, b):
                parts[w] = w.wait_until(lambda s: 0 < len(s["partitions"]) < PARTITIONS, 90,
                                        "a share of the partitions")["partitions"]
            assert sorted(parts[a] + parts[b]) == list(range(PARTITIONS))
            # Flows the topology does not know are named by their flow id.
            specs = [PathSpec(["h1", "c1"], flow={
                "proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
                "sport": 42000 + i, "dport": 7100 + i}) for i in range(12)]
            t0 = monotonic_ns()
            recs = [r for i, s in enumerate(specs) for r in sample_records(s, i * 72400, t0)]
            produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
            ids = {r["flow_id"] for r in recs}
            where = {fid: kafka.partition_of(fid.encode(), PARTITIONS) for fid in ids}
            for w in (a, b):
                mine = {fid for fid, p in where.items() if p in parts[w]}
                n = len(mine)
                w.wait_until(lambda s, n=n: s["counters"]["published"] >= n, 60,
                             "its flows' samples")
                with Chromium(tmp_path / f"chromium-{w.web_port}") as browser:
                    browser.goto(f"http://127.0.0.1:{w.web_port}/latscope/")
                    # rows and the partitions line of one refresh, once it names partitions
                    shown, status = browser.wait_js(
                        f"(() => {{ const r = {ROWS_JS}; "
                        "const s = document.querySelector('#status').textContent; "
                        f"return r.length >= {n} && s.includes('shows partitions') && [r, s]; }})()",
                        30, "every flow of its partitions")
                    shown = set(shown)
                assert shown == mine, (parts[w], sorted(shown), sorted(mine))
                assert f"shows partitions {', '.join(map(str, parts[w]))}" in status, status
            assert 0 < len({fid for fid, p in where.items() if p in parts[a]}) < len(ids)
    finally:
        with contextlib.suppress(Exception):
            kafka.delete_topics_with_prefix(stack.kafka_bootstrap, f"{tag}")
