"""`latscope fleet` against real sshd servers in namespaces, a real kernel and a real broker.

The tests run in file order on one room (tests/fleet/conftest.py): refused before trusted,
then deployed, then changed, broken and repaired, and finally taken down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from fleet_room import LATSCOPE, NAMES, PREFIX, RUN_ID, Room
from influx_points import sample_host_pairs

from latscope.lab.fleet_lab import Container
from latscope.lab.netns import namespace_pids, wait_listening
from latscope.lab.sshd_fleet import keygen
from latscope.schemas import codec
from latscope.schemas.records import TOPIC_BREAKDOWNS
from latscope.schemas.sampling import BUDGET_RECORDS_PER_S
from latscope.sinks.settings import InfluxSettings
from latscope.stream.kafkaio import consume

pytestmark = [pytest.mark.root, pytest.mark.stack]


def _hosts(p: subprocess.CompletedProcess) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads(p.stdout)["hosts"]}


def test_unknown_host_keys_are_refused_and_nothing_installed(room: Room) -> None:
    p = room.run("up", "--json")
    assert p.returncode == 1, p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        h = hosts[name]
        fp = room.fleet.servers[name]
        assert not h["ok"] and "unknown host key" in h["reason"], h
        assert "SHA256:" in h["reason"] and f"ssh-keyscan -p 22 -t ssh-ed25519 {fp.address}" \
            in h["reason"], h["reason"]
        assert not room.host_dir(name).exists()
    assert not (room.state / "management").exists()   # nothing started centrally either


def test_up_deploys_and_traffic_yields_breakdowns_naming_every_host(room: Room, stack) -> None:
    started = time.time()
    room.known_hosts.write_text(room.fleet.known_hosts())
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        assert hosts[name]["ok"] and hosts[name]["installed"], hosts[name]
        assert sorted(hosts[name]["started"]) == ["agent", "responder"]
    assert sorted(hosts["management"]["started"]) == ["stream-worker", "sync-manager"]
    # iperf3 n1 -> n2 and n2 -> n3 on the sampled port
    assert room.iperf((("n1", "n2"), ("n2", "n3")), 4) == {}
    bds = room.breakdowns((("n1", "n2"), ("n2", "n3")), 90)
    complete = [b for b in bds if b["complete"]]
    assert {h for b in complete for h in b["hosts"]} == set(NAMES), {
        tuple(b["hosts"]) for b in bds}
    assert any(s["layer"] == "wire" for b in complete for s in b["segments"])
    # The worker's InfluxDB (the stack's, from latscope.yaml) holds them too, per host pair.
    influx = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                            stack.influx_token)
    deadline, pairs = time.monotonic() + 30, {}
    while time.monotonic() < deadline and not {("n1", "n2"), ("n2", "n3")} <= set(pairs):
        time.sleep(1)
        pairs = sample_host_pairs(influx, started)
    assert {("n1", "n2"), ("n2", "n3")} <= set(pairs), pairs


def _status(room: Room) -> dict[str, dict]:
    p = room.run("status", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return _hosts(p)


def _pids(st: dict[str, dict]) -> dict[str, tuple]:
    return {n: (st[n]["supervisor_pid"], st[n]["services"].get("agent", {}).get("pid"),
                st[n]["services"].get("responder", {}).get("pid")) for n in NAMES}


def test_status_reports_every_host_and_clocks_within_bounds(room: Room) -> None:
    from latscope import __version__

    servers = room.fleet.servers
    srv = subprocess.Popen(["ip", "netns", "exec", servers["n2"].ns, "iperf3", "-s", "-1", "-p",
                            "5001"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = None
    try:
        wait_listening(servers["n2"].ns, 5001, server=srv)
        cli = subprocess.Popen(["ip", "netns", "exec", servers["n1"].ns, "iperf3", "-c",
                                servers["n2"].address, "-p", "5001", "-t", "8", "-b", "20M"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        busy = _status(room)["management"]["worker"]   # while traffic flows
        assert cli.wait(60) == 0
    finally:
        for pr in (srv, cli):
            if pr is not None and pr.poll() is None:
                pr.kill()
                pr.wait()
    assert busy["complete_per_s"] > 0, busy
    # Traffic over, the worker catches up: nothing of the layer events is left uncommitted.
    deadline = time.monotonic() + 30
    while (st := _status(room))["management"]["worker"]["lag"]["latscope.layer-events"] \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert st["management"]["worker"]["lag"]["latscope.layer-events"] == 0, st["management"]
    # The rate is the current one, not the run's average: nothing is joined any more.
    assert st["management"]["worker"]["complete_per_s"] == 0, st["management"]["worker"]
    for name in NAMES:
        h = st[name]
        assert h["reachable"] and h["version"] == __version__, h
        assert h["services"]["agent"]["running"] and h["services"]["responder"]["running"], h
        assert "tcp_rx" in h["agent"]["points"] and h["agent"]["published"] > 0, h["agent"]
        # the default budget (2000 records/s) against 20 Mbit/s at one byte in 72 400: ~35
        # records/s, level 0; every server's demand reached every agent over the broker
        stride = h["agent"]["stride"]
        assert stride["budget"] == BUDGET_RECORDS_PER_S and stride["level"] == 0, stride
        assert sorted(stride["hosts"]) == sorted(NAMES), stride
    central = st["management"]
    assert central["worker"]["complete"] > 0, central
    # Every namespace reads the one kernel clock: the true offset is 0.
    for name in NAMES:
        model = central["clock"][name]
        assert abs(model["offset_ns"]) <= model["error_bound_ns"], (name, model)


def test_second_up_changes_nothing(room: Room) -> None:
    before = _pids(_status(room))
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        assert hosts[name]["installed"] is False and hosts[name]["started"] == [], hosts[name]
    assert hosts["management"]["started"] == []
    assert _pids(_status(room)) == before


def test_config_change_restarts_only_the_affected_service(room: Room) -> None:
    before = _pids(_status(room))
    room.write_conf(ports=(5001, 5002))      # sampling: the agents' input, not the responders'
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        assert hosts[name]["started"] == ["agent"], hosts[name]
    after = _pids(_status(room))
    for name in NAMES:
        assert after[name][0] == before[name][0] and after[name][2] == before[name][2]
        assert after[name][1] != before[name][1]


def test_killed_agent_is_restarted_by_the_supervisor(room: Room) -> None:
    st = _status(room)["n1"]["services"]["agent"]
    os.kill(st["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _status(room)["n1"]["services"]["agent"]
        if now["restarts"] >= st["restarts"] + 1 and now["running"] and now["pid"] != st["pid"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"agent not restarted: {now}")
    assert now["last_exit"] == -signal.SIGKILL
    # the restart leaves the others alone; `fleet logs` shows it
    p = room.run("logs", "n1", "agent", "-n", "200")
    assert p.returncode == 0 and "exited -9" in p.stdout, p.stdout[-2000:]


def test_a_killed_supervisor_takes_its_services_with_it(room: Room) -> None:
    """On a server without systemd (these), SIGKILL n3's supervisor: the kernel ends its
    agent and responder (parent-death signal), so no service is left running unsupervised
    (fails without it: both stay), and the next `up` starts one of each again, not a second
    agent beside a stray first (two agents would double every record)."""
    before = _status(room)["n3"]
    agent, responder = (before["services"][s]["pid"] for s in ("agent", "responder"))
    assert room.latscope_pids("n3", "agent") == [agent]
    os.kill(before["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and room.latscope_pids("n3"):
        time.sleep(0.5)
    assert room.latscope_pids("n3") == [], "services outlived their supervisor"
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(_hosts(p)["n3"]["started"]) == ["agent", "responder"], _hosts(p)["n3"]
    after = _status(room)["n3"]["services"]
    assert len(room.latscope_pids("n3", "agent")) == 1
    assert after["agent"]["pid"] not in (None, agent) and after["responder"]["pid"] != responder


def test_a_servers_container_is_covered_by_its_agent(room: Room) -> None:
    """A container entry of n1 (connect_info's ``iscontainer``, ``container_address``), its
    namespace unnamed like a container runtime's, started after `up`: `up` restarts n1's
    agent only, which reports the address uncovered until the container starts, then
    restarts itself over it (exit 75, the supervisor starts it again: fails when the agent
    watches nothing) and finds the namespace by the address; bytes sent from inside the
    container are whole samples (from the container's socket to n2's) whose hosts name the
    container, then n1, then n2, as the original's container view did."""
    c = Container(f"{PREFIX}-c1", "n1", f"10.215.{int(RUN_ID, 16) % 200 + 20}.2")
    before = _pids(_status(room))
    ports = tuple(yaml.safe_load((room.conf / "sampling_info.yaml").read_text())["ports"])
    try:
        room.write_conf(ports=ports, containers=[c])
        p = room.run("up", "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        hosts = _hosts(p)
        assert hosts["n1"]["started"] == ["agent"], hosts["n1"]
        assert hosts["n2"]["started"] == hosts["n3"]["started"] == [], hosts
        # the worker's view of the hosts changed (the container's address names it)
        assert sorted(hosts["management"]["started"]) == ["stream-worker", "sync-manager"]
        st = _status(room)["n1"]
        assert st["agent"]["uncovered"] == [c.address], st["agent"]
        c.start(room, f"lsxc{RUN_ID}", peers=["n2"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _status(room)["n1"]
            if (now["services"]["agent"]["restarts"] > st["services"]["agent"]["restarts"]
                    and now.get("agent") and now["agent"]["names"]):
                break
            time.sleep(1)
        assert now["services"]["agent"]["last_exit"] == 75, now["services"]["agent"]
        agent = now["agent"]
        assert agent["uncovered"] == [] and len(agent["netns"]) == 2, agent
        assert list(agent["names"]) == [c.name], agent
        assert _pids(_status(room))["n2"] == before["n2"]
        srv = subprocess.Popen(["ip", "netns", "exec", room.fleet.servers["n2"].ns, "iperf3",
                                "-s", "-1", "-p", "5001"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(room.fleet.servers["n2"].ns, 5001, server=srv)
            cli = subprocess.run(["nsenter", f"--net={c.ns}", "iperf3", "-c",
                                  room.fleet.servers["n2"].address, "-p", "5001", "-t", "4",
                                  "-b", "20M"], capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()
        whole: list[dict] = []

        def from_container(msgs: list) -> bool:
            bds = [codec.decode(m.value(), expect="Breakdown")[1] for m in msgs]
            whole[:] = [b for b in bds if b["complete"] and b["flow"]["src"] == c.address]
            return bool(whole)

        consume(room.bootstrap, TOPIC_BREAKDOWNS, from_container, timeout=90)
        assert whole, "no whole sample from the container's socket"
        b = whole[0]
        # the container is a hop of its own, under its connect_info hostname: its records
        # (from its socket to its veth) and its server's (from the veth's server end out)
        assert b["src_host"] == c.name and b["hosts"] == [c.name, "n1", "n2"], b["hosts"]
        assert any(s["device"] == c.ifname and s["hosts"] == [c.name]
                   for s in b["segments"]), b["segments"]
        # the step from its veth into its server reads one clock: no bound added
        hop = next(s for s in b["segments"] if s["hosts"] == [c.name, "n1"])
        assert hop["error_bound_ns"] == 0.0, hop
    finally:
        c.stop()
    room.write_conf(ports=ports)      # as before: n1's agent alone restarts again
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _hosts(p)["n1"]["started"] == ["agent"]


def test_changed_host_key_is_refused(room: Room, tmp_path: Path) -> None:
    srv = room.fleet.servers["n3"]
    for f in (srv.host_key, srv.host_key.with_suffix(".pub")):
        shutil.copy2(f, tmp_path / f.name)
    trusted = room.known_hosts.read_text()
    room.fleet.new_host_key("n3")
    try:
        before = _pids(_status_any(room))
        p = room.run("up", "--json", "--accept-new")   # not even --accept-new trusts a change
        assert p.returncode == 1
        hosts = _hosts(p)
        assert not hosts["n3"]["ok"] and "HOST KEY CHANGED" in hosts["n3"]["reason"], hosts["n3"]
        assert "ssh-keygen -R" in hosts["n3"]["reason"]
        for name in ("n1", "n2"):
            assert hosts[name]["ok"] and hosts[name]["started"] == [], hosts[name]
        assert room.known_hosts.read_text() == trusted   # nothing added or replaced
        assert _pids(_status_any(room))["n1"] == before["n1"]
    finally:
        room.fleet.stop("n3")
        for f in (srv.host_key, srv.host_key.with_suffix(".pub")):
            shutil.copy2(tmp_path / f.name, f)
        room.fleet.start("n3")


def _status_any(room: Room) -> dict[str, dict]:
    """Status where some hosts may fail: the others' entries."""
    hosts = _hosts(room.run("status", "--json"))
    return {n: h if h["ok"] else {"supervisor_pid": None, "services": {
        "agent": {"pid": None}, "responder": {"pid": None}}} for n, h in hosts.items()}


def test_wrong_user_or_key_fails_that_host_only(room: Room, tmp_path: Path) -> None:
    room.write_conf(servers={"n2": {"username": "lsxnobody"}}, ports=(5001, 5002))
    try:
        p = room.run("up", "--json")
        assert p.returncode == 1
        hosts = _hosts(p)
        assert not hosts["n2"]["ok"] and "authentication refused" in hosts["n2"]["reason"]
        assert "lsxnobody@" in hosts["n2"]["reason"]
        assert hosts["n1"]["ok"] and hosts["n3"]["ok"]
    finally:
        room.write_conf(ports=(5001, 5002))
    other = keygen(tmp_path / "other_key")
    room.fleet.authorize("n3", other)             # n3 no longer accepts the fleet's key
    try:
        hosts = _hosts(room.run("up", "--json"))
        assert not hosts["n3"]["ok"] and "authentication refused" in hosts["n3"]["reason"]
        assert hosts["n1"]["ok"] and hosts["n2"]["ok"] and hosts["n2"]["started"] == []
    finally:
        room.fleet.authorize("n3", room.fleet.client_key)


def test_unreachable_host_is_reported_and_a_second_up_completes_it(room: Room) -> None:
    p = room.run("down", "--host", "n3", "--json")
    assert p.returncode == 0 and _hosts(p)["n3"]["left"] == [], p.stdout
    before = _pids(_status_any(room))
    room.fleet.stop("n3")
    p = room.run("up", "--json")
    assert p.returncode == 1
    hosts = _hosts(p)
    assert not hosts["n3"]["ok"] and "unreachable" in hosts["n3"]["reason"], hosts["n3"]
    assert all(hosts[n]["ok"] and hosts[n]["started"] == [] for n in ("n1", "n2")), hosts
    room.fleet.start("n3")
    p = room.run("up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    assert sorted(hosts["n3"]["started"]) == ["agent", "responder"]
    assert hosts["n3"]["installed"] is False          # the venv was there: only started
    assert all(hosts[n]["started"] == [] for n in ("n1", "n2"))
    after = _pids(_status(room))
    assert {n: after[n] for n in ("n1", "n2")} == {n: before[n] for n in ("n1", "n2")}


def test_password_appears_nowhere(room: Room) -> None:
    """connect_info's password decrypts the fleet's key here: it was used, and must be in no
    output, no log or file the fleet wrote, and no process's command line."""
    check = subprocess.run([*LATSCOPE, "config", "check", str(room.conf)], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "warning:" in check.stderr and "password" in check.stderr
    secret = room.password.encode()
    texts = [t.encode() for t in [*room.outputs, check.stdout, check.stderr]]
    assert texts and not any(secret in t for t in texts)
    written = [f for d in (room.state, room.base / "hosts", room.base / "sshd")
               for f in d.rglob("*") if f.is_file() and "/venv/" not in str(f)
               and "/wheels/" not in str(f)]
    assert len(written) > 10
    assert [f for f in written if secret in f.read_bytes()] == []
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p)]
    assert len(cmdlines) > 20 and not any(secret in c for c in cmdlines)


def _readable(p: Path) -> bool:
    try:
        p.read_bytes()
        return True
    except OSError:
        return False


def test_down_stops_everything_and_leaves_no_bpf(room: Room) -> None:
    st = _status(room)
    pids = [p for n in NAMES for p in _pids(st)[n]] + [st["management"]["supervisor_pid"]]
    p = room.run("down", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    hosts = _hosts(p)
    for name in NAMES:
        assert hosts[name]["left"] == [] and hosts[name]["bpf_released"]["prog"] > 0, hosts[name]
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert alive == []
    sshd = {s.proc.pid for s in room.fleet.servers.values() if s.proc}
    for srv in room.fleet.servers.values():
        inside = [pid for pid in namespace_pids(srv.ns) if pid not in sshd]
        # `ip netns exec` keeps its pid when it execs sshd; sshd's own children are sessions
        assert [c for c in inside if b"sshd" not in Path(f"/proc/{c}/cmdline").read_bytes()] \
            == [], inside
        links = json.loads(subprocess.run(["ip", "-n", srv.ns, "-j", "-d", "link", "show"],
                                          capture_output=True, text=True, check=True).stdout)
        assert not any(link.get("xdp") for link in links), links
    br = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show", room.fleet.bridge],
                                   capture_output=True, text=True, check=True).stdout)
    assert not br[0].get("xdp"), br                 # the sync manager's t4 hook is gone
