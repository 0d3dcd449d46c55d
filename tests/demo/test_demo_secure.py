"""``latscope demo`` against a secure stack (``stack up --secure``: SASL/SCRAM over TLS,
ACLs, no topic auto-creation), private to this test on its own ports and run directory;
the shared stack is never touched. Each component connects as its own principal with the
client config the stack wrote, as every other command takes its Kafka settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from needs import missing

from latscope.procs import free_port, free_port_pair
from latscope.stack.services import StackSettings

pytestmark = [pytest.mark.root, pytest.mark.stack]

PREFIX = "lsxf" + os.environ["LSX_RUN_ID"]


def test_demo_runs_on_a_secure_stack(tmp_path: Path) -> None:
    settings = StackSettings.from_env()
    if not (settings.kafka().provisioned() and settings.influxdb().provisioned()):
        missing("Kafka jars / influxd not provisioned: run `make setup`")
    run_dir, kport, iport = tmp_path / "run", free_port_pair(), free_port_pair()
    env = {**os.environ, "LATSCOPE_RUN_DIR": str(run_dir), "LATSCOPE_KAFKA_PORT": str(kport),
           "LATSCOPE_INFLUX_PORT": str(iport)}

    def latscope(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "latscope", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    up = latscope("stack", "up", "--secure", "--json")
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        assert json.loads(up.stdout)["kafka"]["security"] == "SASL_SSL"
        out = tmp_path / "summary.json"
        demo = latscope("demo", "--duration", "6", "--json", str(out), "--prefix", PREFIX,
                        "--web-port", str(free_port()), "--no-stack-start", timeout=600)
        assert demo.returncode == 0, (demo.stdout[-1500:], demo.stderr[-3000:])
        s = json.loads(out.read_text())
        assert not s.get("missing"), s["missing"]
        c = s["counters"]
        assert c["complete"] > 0 and c["dead_lettered"] == 0 and c["sync_unconverged"] == 0
        assert all(f["samples"] > 0 for f in s["flows"])
        passwords = [p.read_text().strip()
                     for p in (run_dir / "security" / "users").glob("*.password")]
        assert passwords and not any(pw in demo.stdout + demo.stderr for pw in passwords)
    finally:
        down = latscope("stack", "down")
        assert down.returncode == 0, down.stderr[-1000:]
        subprocess.run([sys.executable, "-m", "latscope", "topology", "down", "--prefix",
                        PREFIX, "--kill"], check=False, capture_output=True)
