"""Topology file validation: every kind of mistake names file, line, field path and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from latscope.errors import UserError
from latscope.lab.topology import TopologyError, load_topology

REPO = Path(__file__).resolve().parents[2]

BASE = """\
hosts:
  - {name: mgr, role: manager}
  - {name: h1, role: host, clock: {offset_ns: 5000000, drift_ppm: 20}}
  - {name: h2, role: host}
  - {name: c1, role: container, parent: h2}
bridges:
  - {name: br0, host: h2, addr: [10.2.0.1/24]}
links:
  - {a: h1, b: h2, a_addr: [10.1.0.1/24], b_addr: [10.1.0.2/24]}
  - {a: c1, b: br0, a_addr: [10.2.0.2/24]}
  - {a: mgr, b: h1, a_addr: [10.9.0.1/24], b_addr: [10.9.0.2/24]}
routes:
  - {host: h1, dst: 10.2.0.0/24, via: 10.1.0.2}
  - {host: mgr, dst: 10.0.0.0/8, via: 10.9.0.2}
  - {host: h2, dst: 10.9.0.0/24, via: 10.1.0.1}
flows:
  - {name: f1, src: h1, dst: c1, proto: tcp, family: 4, port: 5201, bytes: 1000}
"""


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> TopologyError:
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    msg = str(info.value)
    assert str(path) in msg, msg                     # every message names the file
    assert isinstance(info.value, UserError)         # the CLI prints it as a clear error
    return info.value


def test_base_is_valid(tmp_path: Path) -> None:
    t = load_topology(write(tmp_path, BASE))
    assert [h.name for h in t.hosts] == ["mgr", "h1", "h2", "c1"]
    assert t.source.endswith("topo.yaml")


@pytest.mark.parametrize("name", ["default.yaml", "two-hosts.yaml"])
def test_shipped_topologies_are_valid(name: str) -> None:
    t = load_topology(REPO / "topologies" / name)
    assert t.manager.role == "manager"
    for f in t.flows:
        assert t.path_hosts(f)[0] == f.src and t.path_hosts(f)[-1] == f.dst


@pytest.mark.parametrize(("old", "new", "path", "line", "fragments"), [
    # unknown keys, at every level
    ("  - {name: h2, role: host}", "  - {name: h2, role: host, colour: red}",
     "hosts[2].colour", 4, ["unknown key 'colour'", "sync_addr"]),
    ("flows:\n", "flowz: []\nflows:\n", "flowz", 16, ["unknown key 'flowz'", "sampling"]),
    ("clock: {offset_ns: 5000000, drift_ppm: 20}", "clock: {offset: 5}",
     "hosts[1].clock.offset", 3, ["unknown key 'offset'", "offset_ns"]),
    # bad values
    ("name: h1, role", "name: H_1, role", "hosts[1].name", 3, ["'H_1'", "a-z, 0-9"]),
    ("{name: h1, role: host,", "{name: h1, role: server,", "hosts[1].role", 3,
     ["'server'", "'manager'", "'container'"]),
    ("b_addr: [10.1.0.2/24]", "b_addr: [10.1.0.300/24]", "links[0].b_addr[0]", 9,
     ["'10.1.0.300/24'", "with prefix"]),
    ("a_addr: [10.2.0.2/24]", "a_addr: [10.2.0.2]", "links[1].a_addr[0]", 10,
     ["'10.2.0.2'", "with prefix"]),
    ("port: 5201", "port: 70000", "flows[0].port", 17, ["70000", "65535"]),
    ("proto: tcp", "proto: sctp", "flows[0].proto", 17, ["'sctp'", "'tcp'"]),
    ("family: 4", "family: 5", "flows[0].family", 17, ["5", "4", "6"]),
    ("bytes: 1000}", "reader_delay_ms: 5}", "flows[0]", 17, ["'bytes'", "'rate'"]),
    ("bytes: 1000}", "rate: fast}", "flows[0].rate", 17, ["'fast'", "50mbit"]),
    ("bytes: 1000}", "bytes: 1000, dst_addr: '10.2.0.2/24'}", "flows[0].dst_addr", 17,
     ["without prefix"]),
    ("bytes: 1000}", "bytes: 1000, dst_addr: 'fd00::1'}", "flows[0]", 17,
     ["fd00::1", "IPv4"]),
    ("dst: 10.2.0.0/24", "dst: 10.2.0.1/24", "routes[0].dst", 13, ["10.2.0.1/24", "network"]),
    ("via: 10.1.0.2}", "via: fd00::2}", "routes[0]", 13, ["different IP families"]),
    ("b_addr: [10.1.0.2/24]}", "b_addr: [10.1.0.2/24], a_tbf: {rate: 50mbit, burst: 32kbit}}",
     "links[0].a_tbf", 9, ["exactly one of 'latency'", "'limit'"]),
    ("b_addr: [10.1.0.2/24]}",
     "b_addr: [10.1.0.2/24], a_tbf: {rate: 50xbit, burst: 32kbit, latency: 5ms}}",
     "links[0].a_tbf.rate", 9, ["'50xbit'", "like 50mbit"]),
    ("b_addr: [10.1.0.2/24]}",
     "b_addr: [10.1.0.2/24], b_tbf: {rate: 5mbit, burst: 32kbit, latency: soon}}",
     "links[0].b_tbf.latency", 9, ["'soon'", "50ms"]),
    # missing required fields
    ("  - {name: h2, role: host}", "  - {role: host}", "hosts[2].name", 4, ["required"]),
    # cross references
    ("{a: c1, b: br0,", "{a: c1, b: br9,", "links[1].b", 10, ["'br9'", "host or bridge"]),
    ("src: h1, dst: c1", "src: h1, dst: c9", "flows[0].dst", 17, ["'c9'", "hosts"]),
    ("src: h1, dst: c1", "src: h7, dst: c1", "flows[0].src", 17, ["'h7'", "hosts"]),
    ("{host: h2, dst: 10.9", "{host: h3, dst: 10.9", "routes[2].host", 15, ["'h3'"]),
    ("{name: br0, host: h2,", "{name: br0, host: h5,", "bridges[0].host", 7, ["'h5'"]),
    ("parent: h2}", "parent: h8}", "hosts[3].parent", 5, ["'h8'"]),
    ("{name: c1, role: container, parent: h2}", "{name: c1, role: container}",
     "hosts[3].parent", 5, ["needs a parent"]),
    ("{name: h1, role: host,", "{name: h1, role: manager,", "hosts", 1,
     ["2 managers", "exactly one"]),
    ("{name: mgr, role: manager}", "{name: mgr, role: host}", "hosts", 1, ["0 managers"]),
    ("{name: h2, role: host}", "{name: h1, role: host}", "hosts[2].name", 4,
     ["duplicate host name"]),
    ("{name: br0,", "{name: h1,", "bridges[0].name", 7, ["already used"]),
    ("b_addr: [10.9.0.2/24]", "b_addr: [10.1.0.1/24]", "links[2].b_addr[0]", 11,
     ["already used at links[0].a_addr[0]"]),
    ("{a: c1, b: br0, a_addr: [10.2.0.2/24]}", "{a: c1, b: br0, a_addr: [10.2.0.2/24], "
     "b_addr: [10.2.0.3/24]}", "links[1].b_addr", 10, ["bridge port has no address"]),
    ("{a: c1, b: br0,", "{a: c1, b: c1,", "links[1].b", 10, ["two different"]),
    ("bytes: 1000}", "bytes: 1000, dst_addr: 10.1.0.1}", "flows[0].dst_addr", 17,
     ["expected an address of c1"]),
    ("{name: h2, role: host}", "{name: h2, role: host, sync_addr: 10.9.0.1}",
     "hosts[2].sync_addr", 4, ["h2's addresses"]),
    # reachability: what the kernel would do with these routes
    ("  - {host: h1, dst: 10.2.0.0/24, via: 10.1.0.2}\n", "", "flows[0]", 16,
     ["cannot be routed", "h1 has no route to 10.2.0.2"]),
    ("  - {host: h2, dst: 10.9.0.0/24, via: 10.1.0.1}\n", "", "hosts[2]", 4,
     ["cannot synchronise h2", "h2 has no route to 10.9.0.1"]),
    ("dst: 10.2.0.0/24, via: 10.1.0.2", "dst: 10.2.0.0/24, via: 10.3.0.2", "routes[0].via", 13,
     ["10.3.0.2", "gateway on one of h1's networks", "10.1.0.0/24"]),
    ("b_addr: [10.1.0.2/24]}",
     "b_addr: [10.1.0.2/24], a_tbf: {rate: 5mbit, burst: 1000, latency: 5ms}}",
     "links[0].a_tbf.burst", 9, ["1000", "at least 1600 bytes"]),
])
def test_mistakes_are_named(tmp_path: Path, old: str, new: str, path: str, line: int,
                            fragments: list[str]) -> None:
    assert old in BASE, old
    err = problems(tmp_path, BASE.replace(old, new, 1))
    matching = [m for p, m in err.problems if p == path]
    assert matching, f"no problem at {path}: {err.problems}"
    text = str(err)
    assert f"topo.yaml:{line}: {path}:" in text, text
    for frag in fragments:
        assert any(frag in m for m in matching), f"{frag!r} not in {matching}"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("name: h1, role", "name: H1, role").replace("port: 5201", "port: 0")
    err = problems(tmp_path, text)
    assert {p for p, _ in err.problems} == {"hosts[1].name", "flows[0].port"}


def test_routing_loop_is_reported(tmp_path: Path) -> None:
    text = BASE.replace("  - {host: h1, dst: 10.2.0.0/24, via: 10.1.0.2}\n",
                        "  - {host: h1, dst: 10.2.0.0/24, via: 10.1.0.2}\n"
                        "  - {host: h2, dst: 10.2.0.2/32, via: 10.1.0.1}\n")
    err = problems(tmp_path, text)
    assert any("routing loop" in m for _, m in err.problems), err.problems


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    err = problems(tmp_path, BASE.replace("[10.1.0.1/24]", "[10.1.0.1/24"))
    assert "not valid YAML at line" in str(err)


def test_not_a_mapping_and_missing_file(tmp_path: Path) -> None:
    err = problems(tmp_path, "- just\n- a list\n")
    assert "expected a mapping" in str(err)
    with pytest.raises(TopologyError, match=r"nope\.yaml.*cannot read"):
        load_topology(tmp_path / "nope.yaml")


def test_missing_hosts_key(tmp_path: Path) -> None:
    data = yaml.safe_load(BASE)
    del data["hosts"]
    err = problems(tmp_path, yaml.safe_dump(data))
    assert ("hosts", "missing; this field is required") in err.problems
