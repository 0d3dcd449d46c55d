"""Batched, retried InfluxDB 2.x writes of line protocol from one background thread.

Callers hand over lines (and, for raw sample lines, each sample's wall time); every
``flush_interval_ms`` the thread joins what is pending into one request. A failed request
is retried with exponential backoff when retrying can help (no answer, 429, 5xx), within
``max_retries`` and ``max_retry_time_s``; what still fails is counted, never silent. Same
series + same timestamp overwrite in InfluxDB, so a retried or replayed write is harmless.

Each write takes the next place in the queue (``mark``); ``settled`` is the place up to
which every write is acknowledged or counted as failed: the stream worker's commit
barrier waits on it (latscope.stream.sink.StatsSink, which this class is).

Why not influxdb-client's batching writer: it pushes every item through a reactive
pipeline (~5 µs per item) and reports acknowledged batches only as text, which had to be
parsed again line by line to learn each sample's freshness; at tens of thousands of
samples a second both were a sizeable share of the stream worker's CPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from influxdb_client import InfluxDBClient
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS

from latscope import log, threads
from latscope.sinks.flow_stats import flow_stats_lines
from latscope.sinks.influx import counters_line, sample_line, socket_wait_lines, window_line
from latscope.sinks.settings import InfluxSettings
from latscope.stats.sketch import Sketch

_log = log.get("sinks.influx")


@dataclass
class SinkCounters:
    lines_written: int = 0
    lines_failed: int = 0
    windows_failed: int = 0    # window statistics among lines_failed: those windows are lost
    lines_refused: int = 0     # lines InfluxDB refused alone (among lines_failed)
    batches_retried: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def delete_run(settings: InfluxSettings, run: str) -> None:
    """Delete every point tagged ``run=<run>`` (a benchmark's or test's own data: left in
    the bucket, it slows every whole-bucket query, the dashboard's among them)."""
    with InfluxDBClient(url=settings.url, token=settings.token, org=settings.org) as client:
        client.delete_api().delete("1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                                   f'run="{run}"', bucket=settings.bucket, org=settings.org)


_WRITTEN, _REFUSED, _FAILED = "written", "refused", "failed"
# What InfluxDB answers to a batch with a line it cannot take (400: does not parse, or a
# field type conflict; 413: too large; 422: outside the retention): halved until found.
_BAD_REQUEST = frozenset({400, 413, 422})


def _status(e: Exception) -> int | None:
    if isinstance(e, InfluxDBError) and e.response is not None:
        return getattr(e.response, "status", None)
    return None


def _retryable(e: Exception) -> bool:
    if isinstance(e, InfluxDBError) and e.response is not None:
        status = getattr(e.response, "status", None)
        return status is None or status == 429 or status >= 500
    return True     # no answer at all (refused, reset, timed out)


@dataclass
class _Chunk:
    text: str
    lines: int
    sample_ns: Sequence[int]
    place: int         # its place in the queue (mark)
    windows: int = 0   # window statistics among the lines


class InfluxSink:
    """``write()`` queues, a thread sends; ``close()`` sends what is left, then returns."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = s = settings
        self.counters = SinkCounters()
        self.freshness = Sketch()          # sample wall time → acknowledged write, ns
        self._client = InfluxDBClient(url=s.url, token=s.token, org=s.org, timeout=30_000)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._pending: list[_Chunk] = []
        self._pending_lines = 0
        self._cond = threading.Condition()
        self._closing = False
        self._now = False       # send_now() asked: send without waiting for the interval
        self._mark = 0          # place of the latest chunk queued
        self._settled = 0       # every chunk up to this place is written or counted failed
        self._thread = threads.start(self._run, "influx-writer")

    def write(self, lines: Iterable[str], sample_ns: Sequence[int] = (), *, windows: int = 0) -> None:
        """Queue lines; ``sample_ns``: wall times of the raw samples among them (freshness);
        ``windows``: how many of them are window statistics (counted if they fail)."""
        lines = list(lines)
        if not lines:
            return
        with self._cond:
            self._mark += 1
            chunk = _Chunk("\n".join(lines), len(lines), sample_ns, self._mark, windows)
            self._pending.append(chunk)
            self._pending_lines += chunk.lines
            while self._pending_lines > self.settings.max_pending_lines and len(self._pending) > 1:
                old = self._pending.pop(0)
                self._pending_lines -= old.lines
                self.counters.lines_failed += old.lines
                self.counters.windows_failed += old.windows
                _log.error("InfluxDB writes backed up: %d oldest lines dropped", old.lines)

    # -- what the stream worker writes (latscope.stream.sink.StatsSink) ----------------------
    def write_samples(self, samples: Sequence[tuple[int, Mapping[str, Any], str, int]]) -> None:
        """Raw samples: (partition, breakdown, flow name, wall ns)."""
        tags = self.settings.tags
        lines = []
        for _, bd, flow, wall in samples:   # and the socket-wait causes a sample carries
            lines.append(sample_line(bd, flow, wall, tags))
            lines += socket_wait_lines(bd, flow, wall, tags)
        self.write(lines, [s[3] for s in samples])

    def write_windows(self, windows: Sequence[tuple[Mapping[str, str], Sketch, int, int]]) -> None:
        """Closed windows: (tags, sketch, window start ns, position on the path)."""
        tags = self.settings.tags
        self.write([window_line(t, sketch, start, tags, pos) for t, sketch, start, pos in windows],
                   windows=len(windows))

    def write_counters(self, worker: str, counters: Mapping[str, int], now_ns: int) -> None:
        self.write([counters_line(worker, counters, now_ns, self.settings.tags)])

    def write_flow_stats(self, record: Mapping[str, Any], flow: str) -> None:
        self.write(flow_stats_lines(record, flow, self.settings.tags))

    def mark(self) -> int:
        return self._mark

    def settled(self) -> int:
        return self._settled

    def send_now(self) -> None:
        with self._cond:
            self._now = True
            self._cond.notify_all()

    def wait_settled(self, mark: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._settled >= mark, max(timeout_s, 0.0))

    def close(self) -> None:
        """Send everything pending (blocks up to the retry budget), then disconnect."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        """Every flush interval (at once on close), send what is pending; on close, stop
        once that is sent."""
        while True:
            with self._cond:
                if not (self._closing or self._now):
                    self._cond.wait(self.settings.flush_interval_ms / 1000)
                closing, self._now = self._closing, False
                chunks, self._pending, self._pending_lines = self._pending, [], 0
            if chunks:
                self._send(chunks)
                with self._cond:   # in order: every chunk before these was sent or dropped
                    self._settled = chunks[-1].place
                    self._cond.notify_all()
            if closing:
                return

    def _send(self, chunks: list[_Chunk]) -> None:
        body = "\n".join(c.text for c in chunks)
        n = sum(c.lines for c in chunks)
        outcome = self._post(body, n)
        if outcome == _REFUSED:   # a line InfluxDB cannot take: find it, write the rest
            lines = [(line, c.windows > 0) for c in chunks for line in c.text.split("\n")]
            self._bisect(lines)
        elif outcome == _FAILED:
            with self._cond:
                self.counters.lines_failed += n
                self.counters.windows_failed += sum(c.windows for c in chunks)
            return
        else:
            with self._cond:
                self.counters.lines_written += n
        now = time.time_ns()
        fresh = Sketch()
        fresh.add_all(now - t for c in chunks for t in c.sample_ns)
        if fresh.count:
            # A new object, not a change in place: web views read it from another thread.
            total = Sketch.from_dict(self.freshness.to_dict())
            total.merge(fresh)
            self.freshness = total

    def _post(self, body: str, n: int) -> str:
        """One request, retried while retrying can help: _WRITTEN, _REFUSED (InfluxDB
        refuses what it was sent: a bad line) or _FAILED (given up, logged)."""
        s = self.settings
        delay, started, attempt = s.retry_interval_s, time.monotonic(), 0
        while True:
            try:
                self._api.write(bucket=s.bucket, org=s.org, record=body, write_precision="ns")
                return _WRITTEN
            except Exception as e:   # any failure: retried, bisected or counted by the caller
                if _status(e) in _BAD_REQUEST:
                    return _REFUSED
                attempt += 1
                if (not _retryable(e) or attempt > s.max_retries
                        or time.monotonic() - started + delay > s.max_retry_time_s):
                    _log.error("InfluxDB write of %d lines failed after %d attempt(s): %s",
                               n, attempt, e)
                    return _FAILED
                self.counters.batches_retried += 1
                _log.warning("InfluxDB write failed, retrying in %.1f s: %s", delay, e)
                time.sleep(delay)
                delay = min(delay * 2, s.max_retry_delay_s)

    def _bisect(self, lines: list[tuple[str, bool]]) -> None:
        """Write ``lines`` (line, is a window's), halving what InfluxDB refuses down to the
        lines it refuses alone: only those are counted failed (``lines_refused`` too)."""
        todo = [lines]
        while todo:
            part = todo.pop()
            outcome = self._post("\n".join(line for line, _ in part), len(part))
            if outcome == _REFUSED and len(part) > 1:
                todo += [part[len(part) // 2:], part[:len(part) // 2]]
                continue
            with self._cond:
                if outcome == _WRITTEN:
                    self.counters.lines_written += len(part)
                    continue
                self.counters.lines_failed += len(part)
                self.counters.windows_failed += sum(w for _, w in part)
                if outcome == _REFUSED:
                    self.counters.lines_refused += 1
                    _log.error("InfluxDB refused a line: %.300r", part[0][0])
