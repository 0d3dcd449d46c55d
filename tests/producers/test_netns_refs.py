"""Namespaces the agent covers by address, named or not (a container runtime's have no name):
which namespace holds an address, and which of a covered namespace's devices leave the
covered set. The truth is the wiring built here: a veth from the agent's own namespace into
an unnamed one (unshare), another into a named one (ip netns)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from latscope.bpf import netns
from latscope.lab.netns import unshared
from latscope.producers.agent import exit_devices

pytestmark = pytest.mark.root
RUN_ID = os.environ["LSX_RUN_ID"]


def _ifindex(ref: str | None, name: str) -> int:
    return netns.ip_json(ref, "link", "show", "dev", name)[0]["ifindex"]


@pytest.fixture
def wiring(scratch_netns: str) -> Iterator[dict]:
    """scratch (named) ── a/b ── unnamed; scratch ── c/d ── named2 (not covered)."""
    named2 = f"{scratch_netns}x"
    unnamed = unshared()
    ref = f"/proc/{unnamed.pid}/ns/net"
    a, b, c, d = (f"lsxr{RUN_ID}{x}" for x in "abcd")
    try:
        subprocess.run(["ip", "netns", "add", named2], check=True)
        for cmd in (["link", "add", a, "type", "veth", "peer", "name", b],
                    ["link", "set", b, "netns", str(unnamed.pid)],
                    ["link", "add", c, "type", "veth", "peer", "name", d, "netns", named2]):
            subprocess.run(netns.ip(scratch_netns, *cmd), check=True)
        subprocess.run(netns.ip(ref, "addr", "add", "10.251.7.2/30", "dev", b), check=True)
        subprocess.run(netns.ip(named2, "addr", "add", "10.251.8.2/30", "dev", d), check=True)
        yield {"scratch": scratch_netns, "unnamed": ref, "named2": named2,
               "a": a, "b": b, "c": c}
    finally:
        unnamed.kill()
        unnamed.wait()
        subprocess.run(["ip", "netns", "del", named2], capture_output=True)


def test_addresses_find_named_and_unnamed_namespaces(wiring: dict) -> None:
    found = netns.holding(["10.251.7.2", "10.251.8.2", "192.0.2.77"])
    assert netns.inode_of(found["10.251.7.2"]) == netns.inode_of(wiring["unnamed"])
    assert found["10.251.8.2"] == wiring["named2"]
    assert "192.0.2.77" not in found          # nothing holds it: left out, not guessed


def test_exit_devices_follow_veth_peers_into_unnamed_namespaces(wiring: dict) -> None:
    scratch, unnamed = wiring["scratch"], wiring["unnamed"]
    out = exit_devices([scratch, unnamed])
    s_ino, u_ino = netns.inode_of(scratch), netns.inode_of(unnamed)
    # a/b join two covered namespaces: neither end leaves; c's peer is in an uncovered one
    assert (s_ino, _ifindex(scratch, wiring["a"])) not in out
    assert (u_ino, _ifindex(unnamed, wiring["b"])) not in out
    assert (s_ino, _ifindex(scratch, wiring["c"])) in out
    # covering only the scratch namespace, a leads out of it
    assert (s_ino, _ifindex(scratch, wiring["a"])) in exit_devices([scratch])


def test_covering_names_the_namespaces_an_address_brought_in(wiring: dict) -> None:
    """``NAME=ADDR`` (fleet/plan.py: a container's hostname and address) names the namespace
    holding ADDR; an address in a namespace already covered names nothing (a container on
    its host's network is the host); one no namespace holds is reported, not guessed."""
    from latscope.errors import UserError
    from latscope.settings import covering

    subprocess.run(netns.ip(wiring["scratch"], "addr", "add", "10.251.9.1/32", "dev", "lo"),
                   check=True)
    cov = covering([wiring["scratch"]], ["c7=10.251.7.2", "10.251.8.2", "c8=192.0.2.77",
                                         "hostnet=10.251.9.1"])
    assert [netns.inode_of(r) for r in cov.netns] == [netns.inode_of(wiring[k]) for k in (
        "scratch", "unnamed", "named2")]
    assert list(cov.names.values()) == ["c7"]
    assert netns.inode_of(next(iter(cov.names))) == netns.inode_of(wiring["unnamed"])
    assert cov.uncovered == ["192.0.2.77"]
    with pytest.raises(UserError, match="c7=: expected ADDR or NAME=ADDR"):
        covering([wiring["scratch"]], ["c7="])
