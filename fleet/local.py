"""The management server itself, behind the same few calls as an SSH connection, so its
services (sync manager, stream worker) are configured, supervised, inspected and stopped by
the same code as a server's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from latscope.fleet.ssh import HostError, Result


class LocalMachine:
    root = os.geteuid() == 0

    def run(self, command: str, *, sudo: bool = False, timeout: float = 600,
            check: bool = False) -> Result:
        p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise HostError(f"`{command.split()[0]} …` failed (exit {p.returncode}): "
                            f"{p.stderr.strip()[-300:]}")
        return Result(p.returncode, p.stdout, p.stderr)

    def python(self, d: str) -> str:
        return sys.executable

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        tmp.replace(p)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return Path(path).stat().st_size
        except OSError:
            return None

    def close(self) -> None:
        pass
