"""The sync MAC: Python's SipHash-2-4 against the reference vectors, the BPF one
(sync/bpf/siphash.h) against the same vectors, and the real responder and manager XDP
programs against Python's MACs, all through BPF_PROG_TEST_RUN on this kernel."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from frames import udp_checksum_ok, udp_frame, udp_payload

from latscope import paths
from latscope.bpf import libbpf
from latscope.sync import wire
from latscope.sync.keys import KeyRotation, SyncKeys, siphash24

XDP_DROP, XDP_TX = 1, 3
PORT = 51111

# SipHash-2-4, key 00 01 .. 0f, message 00 01 .. (n-1) for n = 0..63: the reference
# implementation's vectors (Aumasson & Bernstein, vectors.h).
VECTORS = [
    0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
    0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
    0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
    0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
    0x3f2acc7f57c29bdb, 0x699ae9f52cbe4794, 0x4bc1b3f0968dd39c, 0xbb6dc91da77961bd,
    0xbed65cf21aa2ee98, 0xd0f2cbb02e3b67c7, 0x93536795e3a33e88, 0xa80c038ccd5ccec8,
    0xb8ad50c6f649af94, 0xbce192de8a85b8ea, 0x17d835b85bbb15f3, 0x2f2e6163076bcfad,
    0xde4daaaca71dc9a5, 0xa6a2506687956571, 0xad87a3535c49ef28, 0x32d892fad841c342,
    0x7127512f72f27cce, 0xa7f32346f95978e3, 0x12e0b01abb051238, 0x15e034d40fa197ae,
    0x314dffbe0815a3b4, 0x027990f029623981, 0xcadcd4e59ef40c4d, 0x9abfd8766a33735c,
    0x0e3ea96b5304a7d0, 0xad0c42d6fc585992, 0x187306c89bc215a9, 0xd4a60abcf3792b95,
    0xf935451de4f21df2, 0xa9538f0419755787, 0xdb9acddff56ca510, 0xd06c98cd5c0975eb,
    0xe612a3cb9ecba951, 0xc766e62cfcadaf96, 0xee64435a9752fe72, 0xa192d576b245165a,
    0x0a8787bf8ecb74b2, 0x81b3e73d20b49b6f, 0x7fa8220ba3b2ecea, 0x245731c13ca42499,
    0xb78dbfaf3a8d83bd, 0xea1ad565322a1a0b, 0x60e61c23a3795013, 0x6606d7e446282b93,
    0x6ca4ecb15c5f91e1, 0x9f626da15c9625f3, 0xe51b38608ef25f57, 0x958a324ceb064572,
]
KEY = bytes(range(16))


def test_python_siphash_matches_the_reference_vectors() -> None:
    assert [siphash24(KEY, bytes(range(n))) for n in range(64)] == VECTORS


@pytest.fixture(scope="module")
def vectors_obj(tmp_path_factory: pytest.TempPathFactory) -> libbpf.BpfObject:
    libbpf.object_path("responder")  # builds vmlinux.h and the sync objects if needed
    out = tmp_path_factory.mktemp("bpf") / "siphash_vectors.bpf.o"
    src = Path(__file__).with_name("bpf") / "siphash_vectors.bpf.c"
    r = subprocess.run(["clang", "-O2", "-g", "-Wall", "-target", "bpf",
                        f"-I{paths.bpf_build_dir()}", f"-I{paths.REPO_ROOT / 'sync' / 'bpf'}",
                        "-c", str(src), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with libbpf.BpfObject(out) as obj:
        yield obj.load()


@pytest.mark.root
@pytest.mark.parametrize("words", range(8))
def test_bpf_siphash_matches_the_reference_vectors(vectors_obj: libbpf.BpfObject,
                                                   words: int) -> None:
    rc, out = vectors_obj.test_run("siphash_vectors", KEY + bytes(range(8 * words)))
    assert rc == XDP_TX
    assert struct.unpack_from("<Q", out)[0] == VECTORS[8 * words]


def _keys() -> SyncKeys:
    return SyncKeys.generate(period_s=60.0)


@pytest.fixture
def responder_obj() -> libbpf.BpfObject:
    """The responder as Responder.start() loads it, minus attaching: manager 10.9.0.1 and
    fd09::1 allowed, 10.9.0.2 and fd09::2 local."""
    obj = libbpf.BpfObject.build("responder")
    obj.set_autoload("sync_pass", False)
    obj.set_global("sync_port", PORT)
    obj.load()
    for a in ("10.9.0.1", "fd09::1"):
        obj.map("allow").update(wire.addr_key(a), b"\x01")
    for a in ("10.9.0.2", "fd09::2"):
        obj.map("local").update(wire.addr_key(a), b"\x01")
    yield obj
    obj.close()


def _counters(obj: libbpf.BpfObject, names: list[str]) -> dict[str, int]:
    from latscope.bpf import counters
    return counters.read(obj.map("counters"), names)


@pytest.mark.root
@pytest.mark.parametrize("src,dst", [("10.9.0.1", "10.9.0.2"), ("fd09::1", "fd09::2")])
def test_responder_verifies_and_makes_the_macs_python_makes(
        responder_obj: libbpf.BpfObject, src: str, dst: str) -> None:
    keys = _keys()
    KeyRotation(keys, [responder_obj.map("keys")]).update()
    probe = wire.probe_payload(0xF00DFACE12345678, keys)
    frame = udp_frame(src, dst, 40000, PORT, probe)

    rc, reply = responder_obj.test_run("sync_responder", frame)
    assert rc == XDP_TX
    p = wire.decode_probe(udp_payload(reply))
    assert p.kind == wire.KIND_REPLY and p.probe_id == 0xF00DFACE12345678
    assert 0 < p.t2_ns <= p.t3_ns
    assert wire.mac_ok(p, keys)                 # the MAC BPF made is the one Python makes
    assert udp_checksum_ok(reply)               # and the checksum fix-up covers it

    # The same probe again is a replay; a bit flipped anywhere MAC'd is a bad MAC; the
    # MAC of another key, or of an epoch whose key is gone, never verifies.
    assert responder_obj.test_run("sync_responder", frame)[0] == XDP_DROP
    flipped = bytearray(probe)
    flipped[16] ^= 1                            # probe_id
    assert responder_obj.test_run(
        "sync_responder", udp_frame(src, dst, 40000, PORT, bytes(flipped)))[0] == XDP_DROP
    other = wire.probe_payload(1, _keys())
    assert responder_obj.test_run(
        "sync_responder", udp_frame(src, dst, 40000, PORT, other))[0] == XDP_DROP
    old = wire.probe_payload(2, keys, epoch=keys.epoch() - 2)
    assert responder_obj.test_run(
        "sync_responder", udp_frame(src, dst, 40000, PORT, old))[0] == XDP_DROP
    c = _counters(responder_obj, wire.RESPONDER_COUNTERS)
    assert c == {"probes": 5, "answered": 1, "replay": 1, "bad_mac": 2, "stale_key": 1,
                 "bad_source": 0, "malformed": 0}


@pytest.mark.root
def test_ipv4_mapped_source_is_not_the_ipv4_manager(responder_obj: libbpf.BpfObject) -> None:
    keys = _keys()
    KeyRotation(keys, [responder_obj.map("keys")]).update()
    frame = udp_frame("::ffff:10.9.0.1", "fd09::2", 40000, PORT, wire.probe_payload(3, keys))
    assert responder_obj.test_run("sync_responder", frame)[0] == XDP_DROP
    assert _counters(responder_obj, wire.RESPONDER_COUNTERS)["bad_source"] == 1
    with pytest.raises(ValueError, match="IPv4-mapped"):
        wire.addr_key("::ffff:10.9.0.1")        # and it cannot be allow-listed either


@pytest.mark.root
def test_manager_verifies_the_macs_python_makes() -> None:
    keys = _keys()
    with libbpf.BpfObject.build("manager") as obj:
        obj.set_global("sync_port", PORT)
        obj.load()
        KeyRotation(keys, [obj.map("keys")]).update()
        ring = libbpf.RingBuffer(obj.map("samples").fd)
        try:
            pid, t1 = 0x1234_5678_9ABC_DEF0, 1_000
            obj.map("departures").update(pid, struct.pack("<Q", t1) + wire.addr_key("10.9.0.2"))
            good = wire.probe_payload(pid, keys, kind=wire.KIND_REPLY, t2=5_000, t3=6_000)
            bad = bytearray(good)
            bad[-1] ^= 0x80                     # the MAC itself
            for payload in (bytes(bad), good, good):
                rc, _ = obj.test_run("sync_t4", udp_frame("10.9.0.2", "10.9.0.1", PORT, 40000,
                                                          payload))
                assert rc == XDP_DROP           # replies end here either way
            events = [wire.decode_sample(r) for r in ring.read()]
            assert [(e.probe_id, e.t1_ns, e.t2_ns, e.t3_ns, e.flags) for e in events] == \
                [(pid, t1, 5_000, 6_000, 0)]
            c = _counters(obj, wire.MANAGER_COUNTERS)
            assert (c["replies"], c["bad_mac"], c["samples"], c["no_t1"]) == (3, 1, 1, 1)
        finally:
            ring.close()
