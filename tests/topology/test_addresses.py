"""§8 address rules, implicit routes, clocks and path simulation (pure, no namespaces)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from latscope.lab.routing import Hop
from latscope.lab.topology import (
    Topology,
    load_topology,
    parse_rate,
    parse_size,
    parse_time_us,
    parse_topology,
)

REPO = Path(__file__).resolve().parents[2]
ip = ipaddress.ip_address


@pytest.fixture(scope="module")
def default() -> Topology:
    return load_topology(REPO / "topologies" / "default.yaml")


def topo(**parts: object) -> Topology:
    return parse_topology(parts, "<test>")


def test_flow_destination_is_first_address_of_family_in_link_order(default: Topology) -> None:
    assert default.flow_dst_addr("f1") == ip("10.2.0.2")
    assert default.flow_dst_addr("f2") == ip("10.1.0.1")      # h1's link 0 before link 2
    v6 = default.flow("f1").model_copy(update={"family": 6})
    assert default.flow_dst_addr(v6) == ip("fd00:2::2")
    explicit = default.flow("f2").model_copy(update={"dst_addr": ip("10.9.0.2")})
    assert default.flow_dst_addr(explicit) == ip("10.9.0.2")


def test_addresses_in_link_then_bridge_order(default: Topology) -> None:
    assert [str(a) for a in default.addresses("h2")] == [
        "10.1.0.2/24", "fd00:1::2/64", "10.2.0.1/24", "fd00:2::1/64"]
    assert [str(a.ip) for a in default.addresses("h1", 6)] == ["fd00:1::1", "fd00:9::2"]


def test_sync_addr_prefers_the_link_shared_with_the_manager(default: Topology) -> None:
    assert default.sync_addr("h1") == ip("10.9.0.2")          # on the mgr-h1 link, not link 0
    assert default.sync_addr("h2") == ip("10.1.0.2")          # no shared link: first address
    assert default.sync_addr("h1", 6) == ip("fd00:9::2")
    assert default.sync_targets() == {"h1": ip("10.9.0.2"), "h2": ip("10.1.0.2"),
                                      "c1": ip("10.2.0.2")}


def test_sync_addr_explicit() -> None:
    t = topo(hosts=[{"name": "m", "role": "manager"},
                    {"name": "a", "sync_addr": "10.0.1.2"}],
             links=[{"a": "m", "b": "a", "a_addr": ["10.0.0.1/24"], "b_addr": ["10.0.0.2/24"]},
                    {"a": "m", "b": "a", "a_addr": ["10.0.1.1/24"], "b_addr": ["10.0.1.2/24"]}])
    assert t.sync_addr("a") == ip("10.0.1.2")


def test_sync_over_a_shared_bridge_segment() -> None:
    # the manager and h both hang off a bridge on sw: they share that segment
    t = topo(hosts=[{"name": "sw"}, {"name": "m", "role": "manager"}, {"name": "h"}],
             bridges=[{"name": "br", "host": "sw", "addr": ["10.5.0.1/24"]}],
             links=[{"a": "h", "b": "sw", "a_addr": ["10.6.0.2/24"], "b_addr": ["10.6.0.1/24"]},
                    {"a": "m", "b": "br", "a_addr": ["10.5.0.2/24"]},
                    {"a": "h", "b": "br", "a_addr": ["10.5.0.3/24"]}],
             routes=[{"host": "m", "dst": "10.6.0.0/24", "via": "10.5.0.1"}])
    assert t.sync_addr("h") == ip("10.5.0.3")
    # m -> h crosses sw's bridge only at L2
    assert t.path("m", "10.5.0.3") == [Hop("m", True, None, (1,)), Hop("sw", False, "br", (1, 2)),
                                       Hop("h", True, 2, (2,))]


def test_path_hosts_of_default(default: Topology) -> None:
    assert default.path_hosts("f1") == ["h1", "h2", "c1"]
    assert default.path_hosts("f2") == ["c1", "h2", "h1"]
    assert [h.host for h in default.path("mgr", "fd00:2::2")] == ["mgr", "h1", "h2", "c1"]
    assert [h.host for h in default.path("c1", "10.9.0.1")] == ["c1", "h2", "h1", "mgr"]
    hops = default.path("h1", "10.2.0.2")   # in h2: veth in, bridge device, bridge port out
    assert hops == [Hop("h1", True, None, (0,)), Hop("h2", True, 0, (0, "br0", 1)),
                    Hop("c1", True, 1, (1,))]
    back = default.path("c1", "10.9.0.1")    # into h2 through its bridge, out toward h1
    assert [h.devices for h in back] == [(1,), (1, "br0", 0), (0, 2), (2,)]


def test_container_default_routes_to_its_bridge(default: Topology) -> None:
    assert default.routes_for("c1") == [(ipaddress.ip_network("0.0.0.0/0"), ip("10.2.0.1")),
                                        (ipaddress.ip_network("::/0"), ip("fd00:2::1"))]
    assert default.source_addr("c1", "10.9.0.1") == ip("10.2.0.2")
    assert default.source_addr("mgr", "10.2.0.2") == ip("10.9.0.1")


def test_explicit_default_route_wins_over_the_implicit_one() -> None:
    t = topo(hosts=[{"name": "m", "role": "manager"}, {"name": "p"},
                    {"name": "c", "role": "container", "parent": "p"}],
             links=[{"a": "m", "b": "p", "a_addr": ["10.0.0.1/24"], "b_addr": ["10.0.0.2/24"]},
                    {"a": "c", "b": "p", "a_addr": ["10.1.0.2/24"], "b_addr": ["10.1.0.1/24"]},
                    {"a": "c", "b": "m", "a_addr": ["10.2.0.2/24"], "b_addr": ["10.2.0.1/24"]}],
             routes=[{"host": "c", "dst": "default", "via": "10.2.0.1"},
                     {"host": "m", "dst": "10.1.0.0/24", "via": "10.0.0.2"}])
    assert t.routes_for("c") == [(ipaddress.ip_network("0.0.0.0/0"), ip("10.2.0.1"))]
    assert [h.host for h in t.path("c", "10.0.0.2")] == ["c", "m", "p"]


def test_longest_prefix_wins() -> None:
    t = topo(hosts=[{"name": "m", "role": "manager"}, {"name": "a"}, {"name": "b"}],
             links=[{"a": "m", "b": "a", "a_addr": ["10.0.0.1/24"], "b_addr": ["10.0.0.2/24"]},
                    {"a": "m", "b": "b", "a_addr": ["10.3.0.1/24"], "b_addr": ["10.3.0.2/24"]},
                    {"a": "a", "b": "b", "a_addr": ["10.4.0.1/24"], "b_addr": ["10.4.0.2/24"]}],
             routes=[{"host": "m", "dst": "10.4.0.0/16", "via": "10.0.0.2"},
                     {"host": "m", "dst": "10.4.0.2/32", "via": "10.3.0.2"},
                     {"host": "b", "dst": "10.0.0.0/24", "via": "10.3.0.1"},
                     {"host": "a", "dst": "10.3.0.0/24", "via": "10.0.0.1"}])
    assert [h.host for h in t.path("m", "10.4.0.2")] == ["m", "b"]
    assert [h.host for h in t.path("m", "10.4.0.1")] == ["m", "a"]


def test_clock_inheritance(default: Topology) -> None:
    assert default.clock("c1") == default.clock("h2")          # a container shares the kernel
    assert default.clock("h1").offset_ns == 5_000_000
    assert default.clock("mgr").offset_ns == 0


@pytest.mark.parametrize(("text", "bits"), [("50mbit", 50_000_000), ("2mbit", 2_000_000),
                                            ("1gbit", 1_000_000_000), ("500kbps", 4_000_000),
                                            (1000, 1000), ("1.5mbit", 1_500_000)])
def test_parse_rate(text: object, bits: int) -> None:
    assert parse_rate(text) == bits


def test_parse_size_and_time() -> None:
    assert parse_size("32kbit") == 4096       # tc: sizes are binary
    assert parse_size("64kb") == 65536
    assert parse_size(1500) == 1500
    assert parse_time_us("50ms") == 50_000
    assert parse_time_us("200us") == 200
    for bad in ("fast", "", "-5mbit", True):
        with pytest.raises(ValueError):
            parse_rate(bad)
