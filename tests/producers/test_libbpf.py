"""The ctypes libbpf loader against the real kernel: globals, shared maps, tp_btf and
netfilter links in a namespace, the mmap ring buffer reader, per-CPU counters, detach."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from producer_helpers import links_of

from latscope.bpf import counters, libbpf
from latscope.bpf.clock import monotonic_ns
from latscope.bpf.netns import entered, inode_of
from latscope.producers import layout

pytestmark = pytest.mark.root


def _tcp_burst(ns: str, nbytes: int) -> None:
    """Send nbytes over loopback TCP inside namespace ns (on a thread living there)."""
    def body() -> None:
        with entered(ns):
            srv = socket.create_server(("127.0.0.1", 0))
            port = srv.getsockname()[1]
            cli = socket.create_connection(("127.0.0.1", port))
            conn, _ = srv.accept()
        got = 0
        cli.sendall(b"x" * nbytes)
        while got < nbytes:
            got += len(conn.recv(1 << 16))
        for s in (cli, conn, srv):
            s.close()
    t = threading.Thread(target=body)
    t.start()
    t.join(10)


def test_globals_maps_tracepoints_netfilter_ringbuf(scratch_netns: str, link_ids) -> None:
    bpf_link_ids = link_ids
    inode = inode_of(scratch_netns)
    offset = 3_000_000_000_000
    dev = libbpf.BpfObject.build("dev")
    nf = libbpf.BpfObject.build("netfilter")
    try:
        for o in (dev, nf):
            o.set_global("clock_offset_ns", offset)
        nf.set_program_type("ip_point", libbpf.PROG_TYPE_NETFILTER, libbpf.ATTACH_NETFILTER)
        dev.load()
        for m in ("events", "counters", "netns_filter", "sampling"):
            nf.reuse_map(m, dev.map(m).fd)
        nf.load()
        # every byte: every data packet hits (one value both objects read)
        dev.map("sampling").update(0, layout.SAMPLING.codec.pack(1, 1))
        dev.map("netns_filter").update(inode, b"\x01")
        assert dev.map("netns_filter").lookup(inode) == b"\x01"
        assert nf.map("netns_filter").lookup(inode) == b"\x01"   # really one shared map
        dev.attach("dev_xmit")
        with entered(scratch_netns):
            nf.attach_netfilter("ip_point", libbpf.NFPROTO_IPV4, libbpf.NF_INET_LOCAL_OUT)
        ours = links_of(os.getpid())
        assert len(ours) == 2 and ours <= bpf_link_ids()

        rb = libbpf.RingBuffer(dev.map("events").fd)
        t0 = monotonic_ns()
        _tcp_burst(scratch_netns, 100_000)
        deadline = time.monotonic() + 5
        f = layout.FIELD_INDEX
        want = {layout.POINT_NAMES_REV["ip_out"], layout.POINT_NAMES_REV["dev_xmit"]}
        events: list[tuple] = []
        while time.monotonic() < deadline and {e[f["point"]] for e in events} != want:
            events += [layout.EVENT_STRUCT.unpack(r) for r in rb.poll(100)]
        points = {e[f["point"]] for e in events}
        assert points == want, points              # ip_out and dev_xmit, nothing else
        for e in events:
            ts, ns = e[f["ts_ns"]], e[f["netns"]]
            assert ns == inode                      # the netns filter held
            assert t0 + offset <= ts <= monotonic_ns() + offset   # clock_offset_ns applied
        hits = sum(struct.unpack("<Q", v)[0] for v in dev.map("counters").lookup_percpu(
            layout.COUNTERS.index("hits")))
        assert hits >= len(events)
        rb.close()
    finally:
        dev.close()
        nf.close()
    assert not (ours & bpf_link_ids())


def test_a_per_cpu_counter_is_the_sum_of_every_cpu_slot() -> None:
    """counters.total (one bpf() call in C) against values written by hand into each CPU's
    slot of the probes' per-CPU counter array."""
    dev = libbpf.BpfObject.build("dev")
    try:
        dev.load()
        m = dev.map("counters")
        vals = [(cpu + 1) * 1_000_003 + (cpu << 40) for cpu in range(libbpf.NUM_CPUS)]
        raw = ctypes.create_string_buffer(struct.pack(f"<{len(vals)}Q", *vals))
        key = ctypes.c_uint32(3)
        assert libbpf._L.bpf_map_update_elem(m.fd, ctypes.addressof(key), raw, 0) == 0
        assert counters.total(m, 3) == sum(vals)
        assert counters.total(m, 2) == 0
        with pytest.raises(OSError):                     # past the array's end
            counters.total(m, len(layout.COUNTERS) + 1000)
    finally:
        dev.close()


def test_a_batch_read_returns_every_key_with_each_cpu_value() -> None:
    """items_percpu against keys and per-CPU values written by hand into the probes' flow
    counters: more keys than one batch holds (so the batch token is followed), every CPU's
    slot distinct."""
    dev = libbpf.BpfObject.build("dev")
    try:
        dev.load()
        m = dev.map("flow_stats")
        step = (m.value_size + 7) // 8 * 8
        want = {}
        for i in range(700):
            key = struct.pack("<I", i) + bytes(m.key_size - 4)
            vals = [layout.FS_VAL.codec.pack(i, cpu + 1, 1000 + cpu, 0)
                    for cpu in range(libbpf.NUM_CPUS)]
            raw = ctypes.create_string_buffer(b"".join(v.ljust(step, b"\0") for v in vals))
            assert libbpf._L.bpf_map_update_elem(m.fd, ctypes.create_string_buffer(key),
                                                 raw, 0) == 0
            want[key] = vals
        got = m.items_percpu(chunk=64)
        assert len(got) == len(want) and dict(got) == want
    finally:
        dev.close()


def test_links_gone_after_sigkill(scratch_netns: str, link_ids) -> None:
    """A process holding links is SIGKILLed: the kernel detaches everything."""
    bpf_link_ids = link_ids
    code = (
        "import sys,time\n"
        "from latscope.lab.netns import entered\n"
        "from latscope.bpf import libbpf as L\n"
        "o = L.BpfObject.build('netfilter')\n"
        "o.set_program_type('ip_point', L.PROG_TYPE_NETFILTER, L.ATTACH_NETFILTER)\n"
        "o.load()\n"
        f"with entered({scratch_netns!r}):\n"
        "    o.attach_netfilter('ip_point', L.NFPROTO_IPV6, L.NF_INET_PRE_ROUTING)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        ours = links_of(proc.pid)
        assert len(ours) == 1 and ours <= bpf_link_ids()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while ours & bpf_link_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (ours & bpf_link_ids())


def test_bad_names_are_clear_errors() -> None:
    o = libbpf.BpfObject.build("dev")
    try:
        with pytest.raises(libbpf.BpfError, match="no global variable 'nope'"):
            o.set_global("nope", 1)
        with pytest.raises(libbpf.BpfError, match="no program named 'nope'"):
            o.attach("nope")
    finally:
        o.close()
