"""Ctrl-C in the middle of `latscope demo` tears everything down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import uuid

import pytest

from latscope.lab import netns
from latscope.procs import free_port
from latscope.stream.process import get_json

pytestmark = [pytest.mark.root, pytest.mark.stack]
PREFIX = "lsxi" + os.environ["LSX_RUN_ID"]


def test_sigint_while_flows_run_cleans_up(stack) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "latscope", "demo", "--prefix", PREFIX, "--duration", "60",
         "--web-port", str(port), "--topic-prefix", f"{PREFIX}-{uuid.uuid4().hex[:8]}",
         "--no-stack-start"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "running" in line and "flow" in line:
                break
        assert any("running" in ln for ln in seen), "".join(seen)
        assert netns.list_namespaces(PREFIX), "namespaces should exist while flows run"
        get_json(port, "/latscope/summary/")          # the worker is up
        time.sleep(2)   # let traffic and records flow: interrupt mid-run, not at the start
        os.kill(proc.pid, signal.SIGINT)
        rc = proc.wait(90)
        assert rc == 130, proc.stderr.read()[-2000:]
        assert netns.list_namespaces(PREFIX) == []
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get_json(port, "/latscope/summary/", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        netns.teardown(PREFIX)
