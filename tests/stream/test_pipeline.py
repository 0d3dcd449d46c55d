"""The worker's pipeline without a broker: plain dicts for its tables, its outputs kept in
lists, its table changes read as the changelog records a commit would send."""

from __future__ import annotations

import json
import time

from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.schemas import codec
from latscope.settings import flow_resolver
from latscope.stats.sketch import Sketch
from latscope.stream.changes import TableChanges
from latscope.stream.join import JoinPolicy
from latscope.stream.pipeline import PENDING, STATS, Pipeline
from latscope.stream.settings import StreamSettings
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records
from latscope.stream.windows import WindowPolicy

PATH = ["h1", "h2", "c1"]
SERIES = 16   # a 3-host sample: 15 segments and the end-to-end delay


class Kept:
    """Where the pipeline's outputs go in these tests: Kafka records and sink writes, kept."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes | None, bytes | None, dict | None]] = []
        self.samples: list = []
        self.windows: list = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: dict[str, bytes] | None = None) -> None:
        self.published.append((topic, key, value, headers))

    def write_samples(self, samples: list) -> None:
        self.samples += samples

    def write_windows(self, windows: list) -> None:
        self.windows += windows


def pipeline() -> tuple[Pipeline, Kept]:
    s = StreamSettings(flows=flow_resolver(REPO_ROOT / "topologies/default.yaml"), join=JoinPolicy(1.0, 0.5),
                       windows=WindowPolicy(1.0, 2.0))
    kept = Kept()
    p = Pipeline(s, {PENDING: {}, STATS: {}}, kept, kept)   # type: ignore[arg-type]
    p.on_clock(b"h1", codec.encode("ClockModel", clock_model("h1", 0)))
    p.on_clock(b"h2", codec.encode("ClockModel", clock_model("h2", 0)))
    return p, kept


def messages(seqs: range, host_filter: set[str] | None = None) -> list:
    t0 = monotonic_ns()
    recs = [r for i in seqs for r in sample_records(PathSpec(PATH), i * 1448, t0 + i * 1000)
            if host_filter is None or r["host"] in host_filter]
    return [(0, k, v, time.time()) for k, v in encoded("LayerEvent", recs, "flow_id")]


def test_a_batch_is_published_folded_and_sealed_once_per_key() -> None:
    p, kept = pipeline()
    p.on_batch(messages(range(10)))
    assert [t for t, *_ in kept.published] == [p.settings.breakdown_topic] * 10
    assert len(kept.samples) == 10 and p.pending == {}
    windows = {p.settings.windows.start_of(wall) for *_, wall in kept.samples}
    assert len(p.stats) == SERIES * len(windows)
    p.on_batch(messages(range(10, 20)))
    records = p.changes.seal()
    # every open window once, with its last value; no pending sample ever reached the table
    assert sorted(k for _, _, k, _ in records) == sorted(p.stats)
    assert {name for name, *_ in records} == {STATS}
    counts = [json.loads(v)["s"]["n"] for *_, v in records if v is not None]
    assert sum(counts) == 20 * SERIES
    assert p.changes.seal() == []


def test_closed_windows_go_to_the_sink_before_their_tombstones_are_sealed() -> None:
    p, kept = pipeline()
    p.on_batch(messages(range(5)))
    p.changes.seal()                       # the windows are in the changelog now
    keys = set(p.stats)
    p.on_tick(time.time() + 10)
    assert len(kept.windows) == len(keys) and p.stats == {}
    assert sum(sk.count for tags, sk, _, _ in kept.windows if tags["segment"] == "end_to_end") == 5
    assert {k for _, _, k, v in p.changes.seal() if v is None} == keys
    assert p.all_counters()["window_closed"] == len(keys)


def test_pending_samples_wait_in_the_table_and_close_by_window() -> None:
    p, kept = pipeline()
    p.on_batch(messages(range(3), {"h1", "h2"}))
    assert len(p.pending) == 3 and kept.published == []
    assert [(name, v is not None) for name, _, _, v in p.changes.seal()] == [(PENDING, True)] * 3
    p.on_tick(time.time() + 10)
    assert p.pending == {} and p.counters.incomplete == 3 and len(kept.published) == 3
    sealed = p.changes.seal()
    assert sorted((name, v) for name, _, _, v in sealed if name == PENDING) == [(PENDING, None)] * 3


def test_undecodable_input_is_dead_lettered_and_counted() -> None:
    p, kept = pipeline()
    p.on_batch([(0, b"k", b"not avro", 0.0)])
    p.on_clock(b"h9", b"\xc3\x01junk")
    assert [(t, h["source"]) for t, _, _, h in kept.published] == [
        (p.settings.dead_letter_topic, p.settings.layer_topic.encode()),
        (p.settings.dead_letter_topic, p.settings.clock_topic.encode())]
    assert p.counters.dead_lettered == 2


def test_revoked_partitions_leave_no_changelog_record() -> None:
    p, _ = pipeline()
    p.on_batch(messages(range(2), {"h1"}))
    p.drop_partitions({1, 2})
    assert p.pending == {} and p.changes.seal() == []
    assert p.counters.dropped_revoked == 2


def test_sealed_values_do_not_change_with_the_table() -> None:
    tables: dict[str, dict] = {"t": {}}
    ch = TableChanges(tables, {"t": lambda v: {**v, "s": Sketch.of(v["s"]).to_dict()}})
    sk = Sketch()
    sk.add(5)
    ch.apply("t", {"a": {"p": 0, "s": sk}, "b": (1, {"p": 1, "s": Sketch()})})
    ch.apply("t", {"b": (1, None)})        # born and gone before the seal: no record
    sealed = ch.seal()
    sk.add(7)                              # a later batch changes the live sketch
    assert [(name, p, k) for name, p, k, _ in sealed] == [("t", 0, "a")]
    assert json.loads(sealed[0][3]) == {"p": 0, "s": Sketch.from_dict(
        {"a": 0.01, "n": 1, "s": 5, "mn": 5, "mx": 5, "z": 0, "p": [[81, 1]], "ng": []}).to_dict()}
    ch.apply("t", {"a": (0, None)})
    assert ch.seal() == [("t", 0, "a", None)]
