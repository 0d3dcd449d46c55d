"""A server whose PID 1 is systemd, on one machine: systemd-nspawn boots the machine's own
/usr with a throwaway root (``--volatile=yes``: / is a tmpfs, /usr read-only, /etc bound
read-only), in a network namespace of the lab's, with the lab's directories bound at their
own paths. Nothing the booted system does reaches the machine's files outside those binds:
its boot-time cleanups (systemd-tmpfiles empties /tmp) act on its own tmpfs.

Its processes may call bpf() (added to nspawn's system call filter) so an agent supervised
there attaches its probes. It runs in a cgroup of its own, removed with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from latscope import log

LOG = log.get("lab.systemd_box")
NSPAWN = "systemd-nspawn"
_HIERARCHIES = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")


@dataclass
class SystemdBox:
    name: str                    # its cgroup's name (lsx + run id)
    netns: str                   # /run/netns name
    binds: list[Path]            # bound read-write at the same path
    proc: subprocess.Popen | None = None
    leader: int | None = None    # its systemd, as this machine numbers it
    log_file: Path | None = None
    _cgroups: list[Path] = field(default_factory=list)

    def boot(self, timeout: float = 60) -> None:
        self._cgroups = [Path(h) / self.name for h in _HIERARCHIES if Path(h).is_dir()]
        for cg in self._cgroups:
            cg.mkdir(exist_ok=True)
        enter = "".join(f"echo $$ > {cg}/cgroup.procs; " for cg in self._cgroups)
        argv = [NSPAWN, "--quiet", "--register=no", "--keep-unit", "--directory=/",
                "--volatile=yes", "--bind-ro=/etc",
                f"--network-namespace-path=/run/netns/{self.netns}",
                "--capability=all", "--system-call-filter=bpf perf_event_open",
                "--private-users=no", "--console=pipe",
                *[f"--bind={b}" for b in self.binds],
                "--boot", "--", "systemd.unit=basic.target"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(["sh", "-c", enter + 'exec "$@"', "sh", *argv],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if self.log_file:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while True:
            self.leader = self._child()
            if self.leader and self.run(["systemctl", "is-system-running"]).stdout.strip() in (
                    "running", "degraded"):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = "still starting" if self.proc.poll() is None else \
                    f"exited {self.proc.returncode}"
                raise RuntimeError(f"systemd did not boot in {self.netns}: nspawn {state}")
            time.sleep(0.2)

    def _child(self) -> int | None:
        assert self.proc is not None
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def run(self, argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
        """``argv`` inside (its mount, PID, network, UTS and IPC namespaces)."""
        assert self.leader is not None
        return subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-p", "-n", "-u", "-i",
                               "--", *argv], capture_output=True, text=True, check=check,
                              timeout=60)

    def stop(self, timeout: float = 30) -> None:
        """Power off (nspawn passes SIGTERM on as a shutdown request), else kill it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("%s did not power off in %.0fs: killed", self.name, timeout)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for cg in self._cgroups:          # children first
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()),
                            key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()
