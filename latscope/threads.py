"""Background threads that carry their name into the kernel (``/proc/PID/task/TID/comm``), so
``top -H``, ``ps -L`` and the benchmark's per-thread split see which part of a service
spends the CPU. Python 3.11 names its threads only for itself."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def start(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """A started daemon thread running ``target(*args)`` under ``name`` (the kernel keeps
    its first 15 bytes)."""
    def run() -> None:
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        target(*args)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
