"""`latscope topology check`: the human and JSON views, and the exit status on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latscope.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_check_prints_paths_and_destinations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "check", str(REPO / "topologies" / "default.yaml")]) == 0
    out = capsys.readouterr().out
    assert "f1: h1 -> c1 tcp/v4 10.2.0.2:5201" in out
    assert "path h1 -> h2 -> c1" in out and "path c1 -> h2 -> h1" in out
    assert "h1 " in out and "sync at 10.9.0.2" in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topology", "check", "--json", str(REPO / "topologies" / "two-hosts.yaml")]) == 0
    data = json.loads(capsys.readouterr().out)
    flows = {f["name"]: f for f in data["flows"]}
    assert flows["t6"]["dst_addr"] == "fd00:11::2"
    assert flows["t6"]["path_hosts"] == ["mgr", "h1", "c1"]
    assert {h["name"]: h.get("sync_addr") for h in data["hosts"]} == {
        "mgr": None, "h1": "10.10.0.2", "c1": "10.11.0.2"}


def test_check_bad_file_exits_2_with_the_problem(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts:\n  - {name: mgr, role: manager, colour: red}\n")
    assert main(["topology", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: hosts[0].colour: unknown key 'colour'" in err


def test_sampling_port_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / "topologies" / "default.yaml").read_text().replace(
        "ports: [5201, 5202]", "ports: [5201]")
    p = tmp_path / "t.yaml"
    p.write_text(text)
    assert main(["topology", "check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "flows ['f2'] use ports outside sampling.ports" in out
    # f2 runs c1 -> h1: the reverse of f1 (port 5201, listed), so its bytes are sampled when
    # they are f1's connection's replies (issue #11: check said they never would be)
    assert "f2 as the reply direction of f1's connection (source port 5201) is sampled" in out
    assert "their bytes will not be sampled" not in out
