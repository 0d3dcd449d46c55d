"""`latscope stack` on its own ports and run directory, so the suite's shared stack is untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from needs import missing

from latscope.procs import free_port_pair
from latscope.stack.services import StackSettings


def _stack(args: list[str], run_dir: Path, kport: int, iport: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "latscope", "stack", *args, "--run-dir", str(run_dir),
         "--kafka-port", str(kport), "--influx-port", str(iport)],
        capture_output=True, text=True, timeout=300, env={**os.environ})


def _pids(run_dir: Path) -> list[int]:
    out = []
    for f in run_dir.glob("*.pid"):
        out.append(int(f.read_text()))
    return out


@pytest.fixture
def own_stack(tmp_path: Path):
    settings = StackSettings.from_env()
    if not (settings.kafka().provisioned() and settings.influxdb().provisioned()):
        missing("Kafka jars / influxd not provisioned: run `make setup`")
    run_dir = tmp_path / "run"
    kport, iport = free_port_pair(), free_port_pair()
    yield run_dir, kport, iport
    _stack(["down"], run_dir, kport, iport)  # even when the test failed


def test_up_twice_status_down_status(own_stack: tuple[Path, int, int]) -> None:
    run_dir, kport, iport = own_stack
    first = _stack(["up", "--json"], run_dir, kport, iport)
    assert first.returncode == 0, first.stderr
    pids = sorted(_pids(run_dir))
    assert len(pids) == 2

    second = _stack(["up", "--json"], run_dir, kport, iport)
    assert second.returncode == 0, second.stderr
    assert sorted(_pids(run_dir)) == pids, "up twice must not start a second copy"

    status = _stack(["status", "--json"], run_dir, kport, iport)
    assert status.returncode == 0
    info = json.loads(status.stdout)
    assert info["kafka"] == {"up": True, "bootstrap": f"127.0.0.1:{kport}", "managed": True}
    assert info["influxdb"]["up"] and info["influxdb"]["url"] == f"http://127.0.0.1:{iport}"
    token = run_dir / "influxdb.token"
    assert token.stat().st_mode & 0o777 == 0o600

    down = _stack(["down", "--json"], run_dir, kport, iport)
    assert json.loads(down.stdout) == {"stopped": {"kafka": True, "influxdb": True}}
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"

    after = _stack(["status", "--json"], run_dir, kport, iport)
    assert after.returncode == 1
    info = json.loads(after.stdout)
    assert not info["kafka"]["up"] and not info["influxdb"]["up"]
