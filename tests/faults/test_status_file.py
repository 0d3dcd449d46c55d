"""The agent's status file on a full filesystem (a tiny tmpfs): the agent keeps running,
counts the failed writes, and still stops at --duration."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from producer_helpers import agent_process, loopback_burst

pytestmark = [pytest.mark.root, pytest.mark.stack]


@pytest.fixture
def full_fs() -> Iterator[Path]:
    """A 16 KiB tmpfs filled to the last byte, unmounted afterwards."""
    d = Path(tempfile.mkdtemp(prefix=f"lsxg{os.environ['LSX_RUN_ID']}-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "lsxgfull", str(d)], check=True)
    try:
        with open(d / "filler", "wb") as f, pytest.raises(OSError):
            f.write(b"x" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)
        d.rmdir()


def test_agent_survives_a_full_disk_and_stops_on_time(scratch_netns: str, full_fs: Path,
                                                      stack: Any, topic_name: str,
                                                      fault_row: Any) -> None:
    started = time.monotonic()
    with agent_process("--host", "lsxg-full", "--netns", scratch_netns, "--json", "--topic",
                       topic_name, "--bootstrap", stack.kafka_bootstrap, "--sample-size",
                       "14480", "--status-file", str(full_fs / "status.json"),
                       "--duration", "3") as proc:
        assert loopback_burst(scratch_netns, 2_000_000) == 2_000_000   # it still samples
        out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err
    assert elapsed < 20, f"--duration 3 took {elapsed:.1f} s"
    final = json.loads(out[out.index("{"):])
    c = final["counters"]
    fault_row("status file on a full filesystem", offered=c["records"], joined=c["published"],
              lost=c["failed_deliveries"] + int(proc.returncode != 0 or elapsed >= 20),
              detail={"write_failures": final["status_file"]["write_failures"],
                      "returncode": proc.returncode, "elapsed_s": round(elapsed, 1)})
    assert final["counters"]["samples"] > 0
    assert final["status_file"]["write_failures"] >= 4      # every 0.5 s tick failed, counted
    assert "No space left on device" in err
    assert not (full_fs / "status.json").exists()
