"""The traffic tool's own counts are a truth other tests compare against (bytes sent =
bytes received), so a sender stopped mid-write must still count what it handed over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from latscope.procs import free_port


def test_a_sender_stopped_inside_a_blocked_write_counts_what_it_sent() -> None:
    """The receiver reads once, then sleeps: the sender's 64 kB write blocks part-way in a
    full socket buffer when SIGTERM arrives. Its report must still equal what arrived."""
    port = free_port()
    tool = [sys.executable, "-m", "latscope.lab.traffic"]
    rx = subprocess.Popen([*tool, "recv", "--bind", "127.0.0.1", "--port", str(port),
                           "--reader-delay-ms", "1500", "--read-size", str(64 << 20)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tx = None
    try:
        assert rx.stdout.readline().strip() == "ready", rx.stderr.read()
        tx = subprocess.Popen([*tool, "send", "--dst", "127.0.0.1", "--port", str(port),
                               "--bytes", str(1 << 30)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.7)           # buffers full long before: the sender waits inside a write
        tx.send_signal(signal.SIGTERM)
        sent = json.loads(tx.communicate(timeout=30)[0].splitlines()[-1])
        got = json.loads(rx.communicate(timeout=30)[0].splitlines()[-1])
    finally:
        for p in (tx, rx):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert sent["stopped_by"] == "signal" and got["stopped_by"] == "eof", (sent, got)
    assert got["bytes"] == sent["bytes"] > 0, (sent, got)
