"""The per-host supervisor where PID 1 is not systemd: runs the services of one install
directory, restarts a service that exits with a capped exponential backoff, rotates their
logs, and reports each one's pid and restart count in ``run/status.json``.

``python -m latscope.fleet.supervisor DIR`` reads ``DIR/etc/services.json`` (written by
``latscope fleet up``); SIGHUP re-reads it and restarts exactly the services whose entry
changed; SIGTERM stops every child (SIGTERM, then SIGKILL) and exits. It only ever signals
the processes it started itself. Its children die with it: each gets SIGTERM from the kernel
when the supervisor ends, however it ends (util-linux ``setpriv --pdeathsig``), so a
supervisor that is SIGKILLed leaves no agent behind to be doubled by the next ``fleet up``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import threads

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0          # a run this long resets the backoff
STOP_GRACE_S = 15.0
LOG_MAX_BYTES = 5 << 20
LOG_KEEP = 3
# Prefixed to every child's argv: it sets the parent-death signal and execs the service
# (same pid). Without setpriv (not util-linux), a killed supervisor leaves its children.
SETPRIV = shutil.which("setpriv")
DIE_WITH_PARENT = [SETPRIV, "--pdeathsig", "TERM", "--"] if SETPRIV else []


class RotatingLog:
    """Append-only log of one service; at LOG_MAX_BYTES it becomes NAME.log.1 (and so on)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.f = open(path, "ab")

    def write(self, data: bytes) -> None:
        with self.lock:
            self.f.write(data)
            self.f.flush()
            if self.f.tell() >= LOG_MAX_BYTES:
                self.f.close()
                for i in range(LOG_KEEP - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{i}")
                    if older.exists():
                        older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
                self.path.rename(self.path.with_name(f"{self.path.name}.1"))
                self.f = open(self.path, "ab")


@dataclass
class Child:
    name: str
    spec: dict[str, Any]
    log: RotatingLog
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    failures_in_row: int = 0
    next_start: float = 0.0
    last_exit: int | None = None
    pumps: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        if self.spec.get("ready_file"):   # the service writes it once it is really up
            Path(self.spec["ready_file"]).unlink(missing_ok=True)
        env = {**os.environ, **self.spec.get("env", {})}
        self.proc = subprocess.Popen([*DIE_WITH_PARENT, *self.spec["argv"]], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        self.started = time.monotonic()
        self.pumps = [threads.start(self._pump, f"pump-{self.name}", self.proc)]
        self.log.write(f"--- supervisor: started {self.name} pid {self.proc.pid}"
                       f"{'' if DIE_WITH_PARENT else ' (no setpriv: it outlives this supervisor)'}"
                       "\n".encode())

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.write(line)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.write(f"--- supervisor: stopped {self.name}\n".encode())

    def status(self) -> dict[str, Any]:
        running = self.proc is not None and self.proc.poll() is None
        ready = running and (not self.spec.get("ready_file")
                             or Path(self.spec["ready_file"]).exists())
        return {"pid": self.proc.pid if running and self.proc else None, "running": running,
                "ready": ready,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "digest": self.spec.get("digest"),
                "up_s": round(time.monotonic() - self.started, 1) if running else 0.0}


class Supervisor:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.children: dict[str, Child] = {}
        self.reload = threading.Event()
        self.stopping = threading.Event()

    def specs(self) -> dict[str, dict[str, Any]]:
        return json.loads((self.root / "etc" / "services.json").read_text())["services"]

    def apply(self) -> None:
        """Start what is new, restart what changed, stop what is gone."""
        wanted = self.specs()
        for name in list(self.children):
            if name not in wanted or wanted[name] != self.children[name].spec:
                self.children.pop(name).stop()
        for name, spec in wanted.items():
            if name not in self.children:
                child = Child(name, spec, RotatingLog(self.run / f"{name}.log"))
                child.start()
                self.children[name] = child

    def tick(self) -> None:
        now = time.monotonic()
        for c in self.children.values():
            if c.proc is not None and c.proc.poll() is not None:
                c.last_exit = c.proc.returncode
                ran = now - c.started
                c.failures_in_row = 0 if ran >= STABLE_S else c.failures_in_row + 1
                delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** max(0, c.failures_in_row - 1))
                c.log.write(f"--- supervisor: {c.name} exited {c.last_exit} after {ran:.1f}s; "
                            f"restart in {delay:.0f}s\n".encode())
                c.proc, c.next_start = None, now + delay
            if c.proc is None and now >= c.next_start:
                c.restarts += 1
                c.start()

    def write_status(self) -> None:
        tmp = self.run / "status.json.tmp"
        tmp.write_text(json.dumps({"supervisor_pid": os.getpid(), "time": time.time(),
                                   "services": {n: c.status()
                                                for n, c in self.children.items()}}))
        tmp.replace(self.run / "status.json")

    def main(self) -> int:
        self.run.mkdir(parents=True, exist_ok=True)
        pid_file = self.run / "supervisor.pid"
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            self.apply()
            while not self.stopping.is_set():
                if self.reload.is_set():
                    self.reload.clear()
                    self.apply()
                self.tick()
                self.write_status()
                self.stopping.wait(0.5)
        finally:
            for c in self.children.values():
                c.stop()
            self.write_status()
            pid_file.unlink(missing_ok=True)
        return 0


if __name__ == "__main__":
    sys.exit(Supervisor(Path(sys.argv[1])).main())
