"""Run ``latscope stream worker`` as a child process and read its web views.

The demo, the tests and the benchmark all drive the real worker this way: a separate
process, as in production, stopped by its own PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from latscope.procs import terminate, wait_for


def get_json(port: int, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


class WorkerProcess:
    """One worker; ``args`` are ``stream worker`` options (``--web-port`` is added);
    ``env``: environment variables set for it on top of ours."""

    def __init__(self, args: Sequence[str], web_port: int, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        self.web_port = web_port
        self.log_path = log_path
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "latscope", "stream", "worker",
               "--web-port", str(self.web_port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **self.env})
        log.close()
        return self

    def summary(self) -> dict:
        return get_json(self.web_port, "/latscope/summary")

    def flows(self) -> dict:
        return get_json(self.web_port, "/latscope/flows")

    def wait_until(self, cond: Callable[[dict], bool], timeout: float, what: str) -> dict:
        """Poll the summary until ``cond`` holds; raise with the log tail if it never does."""
        last: dict = {}

        def holds() -> bool:
            nonlocal last
            try:
                last = self.summary()
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                return False
            return cond(last)

        try:
            wait_for(holds, timeout, f"stream worker: {what}",
                     alive=lambda: self.proc is None or self.proc.poll() is None)
        except RuntimeError:
            raise RuntimeError(f"stream worker exited ({self.proc.returncode if self.proc else '?'})"
                               f" while waiting for {what}:\n{self.log_tail()}") from None
        except TimeoutError:
            raise TimeoutError(f"stream worker: no {what} within {timeout:.0f}s; last summary "
                               f"{json.dumps(last)[:800]}\n{self.log_tail()}") from None
        return last

    def wait_ready(self, timeout: float = 90) -> dict:
        return self.wait_until(lambda s: bool(s.get("partitions")), timeout,
                               "partition assignment")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (the worker flushes InfluxDB on shutdown), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        terminate(self.proc.pid, timeout, "stream worker")
        return self.proc.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
