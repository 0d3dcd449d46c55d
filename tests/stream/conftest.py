"""A real stream worker on fresh topics, and helpers to feed and read Kafka."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_helpers import Topics

from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.stream.process import WorkerProcess

TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"


@pytest.fixture
def topics(topic_name: str) -> Topics:
    return Topics.named(topic_name)


@pytest.fixture
def run_tag() -> str:
    return f"lsxd{os.environ['LSX_RUN_ID']}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(stack, topics: Topics, tmp_path: Path, run_tag: str) -> Iterator[WorkerProcess]:
    """One worker with the default topology, short windows, InfluxDB points tagged run=…"""
    w = WorkerProcess(
        ["--bootstrap", stack.kafka_bootstrap, "--app-id", run_tag,
         "--data-dir", str(tmp_path / "state"), "--topology", str(TOPOLOGY),
         "--interval", "1", "--window", "1.5", "--lateness", "0.5",
         "--influx-tag", f"run={run_tag}", *topics.args()],
        free_port(), tmp_path / "worker.log")
    with w:
        w.wait_ready()
        yield w


class HoldingProxy:
    """A TCP proxy in front of the real InfluxDB that can stop answering: after ``hold()``
    nothing a client sends reaches InfluxDB and nothing comes back, as when InfluxDB is
    slow or the network is. A held write whose client dies is never delivered."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.held = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="influx-proxy", daemon=True).start()

    def hold(self) -> None:
        self.held.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:   # closed
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.held.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()
        for s in self._socks:
            s.close()


@pytest.fixture
def influx_proxy(stack) -> Iterator[HoldingProxy]:
    url = urllib.parse.urlsplit(stack.influx_url)
    proxy = HoldingProxy((url.hostname or "127.0.0.1", url.port or 8086))
    yield proxy
    proxy.close()
