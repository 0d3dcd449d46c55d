"""Background services LatScope starts itself: pid files, liveness, and stopping only our own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
             alive: Callable[[], bool] | None = None) -> None:
    """Poll ``cond`` until true; fail fast if ``alive`` says the process behind it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        time.sleep(interval)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


class Service:
    """A daemon we start detached, tracked by a pid file next to its log."""

    def __init__(self, name: str, run_dir: Path, marker: str) -> None:
        self.name = name
        self.run_dir = run_dir
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = run_dir / f"{name}.log"
        self.marker = marker  # a string our command line contains: we never signal anyone else
        self._proc: subprocess.Popen | None = None

    def pid(self) -> int | None:
        """The pid in our pid file, if that process is alive and really ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # cmdline reads empty while a process is exec'ing (the JVM launcher re-execs itself)
        # and once it is a zombie: retry briefly, then give up.
        for _ in range(20):
            if not _alive(pid):
                return None
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                return None
            if cmdline:
                return pid if self.marker in cmdline else None
            time.sleep(0.05)
        return None

    def running(self) -> bool:
        if self._proc is not None:  # started by this process: the child's own status is exact
            return self._proc.poll() is None
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})})
        self._proc = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, timeout, self.name)
        if self._proc is not None:
            self._proc.poll()  # reap our own child so it does not linger as a zombie
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def terminate(pid: int, timeout: float, name: str) -> None:
    """SIGTERM (services flush on it), SIGKILL if it is still alive after ``timeout``."""
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not _alive(pid), timeout, f"stop {name}")
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), 10, f"kill {name}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port p such that p and p+1 are free on 127.0.0.1 (Kafka's controller takes p+1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_step(argv: Sequence[str], what: str, log_file: Path, *, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> str:
    """Run a long build step, showing progress (elapsed time and its latest output line).

    The full output goes to ``log_file``; a failure raises with its tail.
    """
    from rich.console import Console

    console = Console(stderr=True)
    started = time.monotonic()
    lines: list[str] = []
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log, console.status(what) as status:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            lines.append(line.rstrip())
            del lines[:-40]
            status.update(f"{what} [{time.monotonic() - started:.0f}s] {line.strip()[:70]}")
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(lines[-25:])
        raise RuntimeError(f"{what} failed (exit {rc}); see {log_file}:\n{tail}")
    console.print(f"{what}: done in {time.monotonic() - started:.0f}s")
    return "\n".join(lines)
