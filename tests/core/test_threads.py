"""Our threads carry their names into the kernel, where top -H and the agent benchmark's
per-thread split read them."""

from __future__ import annotations

import threading
from pathlib import Path

from latscope import threads


def _comm_of_running(name: str) -> str:
    seen: dict[str, str] = {}
    ready, done = threading.Event(), threading.Event()

    def body() -> None:
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text()
        ready.set()
        done.wait(5)

    t = threads.start(body, name)
    assert ready.wait(5)
    done.set()
    t.join(5)
    return seen["comm"].strip()


def test_the_kernel_knows_the_threads_name() -> None:
    assert _comm_of_running("flow-stats") == "flow-stats"


def test_a_long_name_is_cut_to_the_kernels_fifteen_bytes() -> None:
    assert _comm_of_running("pump-a-service-name") == "pump-a-service-"
