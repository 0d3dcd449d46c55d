"""ctypes binding to Debian's libbpf.so.1 (1.1): the one BPF loader of LatScope.

Why ctypes: libbpf 1.1 is what the distribution ships, there are no kernel headers (no BCC),
and the few calls we need are a stable C ABI. Everything newer than libbpf 1.1 (netfilter
programs, tcx links) is done with the raw ``bpf(BPF_LINK_CREATE)`` syscall here.

Every attachment is a BPF *link* bound to a file descriptor of this process, so the kernel
detaches it when the process exits, even on SIGKILL.

API (stable; the sync engine uses it too)::

    obj = BpfObject(path)                       # open (no load yet); or BpfObject.build("name")
    obj.set_global("clock_offset_ns", 5000)     # .rodata/.data/.bss variable, before load
    obj.set_program_type("prog", PROG_TYPE_NETFILTER, ATTACH_NETFILTER)  # before load
    obj.set_autoload("prog", False)             # skip a program (capability probing)
    obj.set_max_entries("events", 1 << 22)      # e.g. ring buffer size, before load
    obj.reuse_map("events", other.map("events").fd)  # share a map of another object
    obj.load()
    link = obj.attach("prog")                   # tp/, tp_btf/, raw_tp/ by its SEC name
    link = obj.attach_netfilter("prog", pf=NFPROTO_IPV4, hooknum=NF_INET_LOCAL_OUT, priority=0)
    link = obj.attach_xdp("prog", ifindex, flags=XDP_FLAGS_SKB_MODE)   # flags 0: native if any
    link = obj.attach_tcx("prog", ifindex, ingress=True)
    link = obj.attach_cgroup("prog", "/sys/fs/cgroup/unified")
    link.detach()                               # or obj.close(): detaches every link, frees maps
    m = obj.map("name"); m.fd; m.update(k, v); m.lookup(k) -> bytes | None; m.delete(k)
    m.keys(); m.lookup_percpu(k) -> list[bytes]; m.items_percpu() -> [(k, [bytes per CPU])]
    obj.test_run("prog", packet) -> (retval, packet_after)   # BPF_PROG_TEST_RUN
    rb = RingBuffer(obj.map("events").fd); rb.poll(timeout_ms) -> list[bytes]; rb.close()
Namespaces: create XDP/tcx/netfilter links inside ``latscope.bpf.netns.entered(name)``; they stay
bound to that namespace afterwards.

Keys and values are ``bytes`` (pack them with ``struct``); ints are accepted as u32 keys.
Errors raise ``BpfError`` with the failing call and errno text.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib.resources
import os
import select
from pathlib import Path

from latscope import log, paths
from latscope.bpf._native import ring_pending, ring_read, ring_span

_log = log.get("producers.libbpf")

PROG_TYPE_SCHED_CLS = 3
PROG_TYPE_XDP = 6
PROG_TYPE_NETFILTER = 32
ATTACH_NETFILTER = 45
ATTACH_TCX_INGRESS = 46
ATTACH_TCX_EGRESS = 47
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = (
    range(5))
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
_ATTACH_XDP = 37  # BPF_XDP

_SYS_BPF = 321  # x86_64
_BPF_PROG_TEST_RUN = 10
_BPF_LINK_CREATE = 28
_BTF_KIND_VAR = 14
_BTF_KIND_DATASEC = 15


class BpfError(OSError):
    """A libbpf call or bpf() syscall failed."""


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    P, I, U, S, C = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_char_p  # noqa: E741
    sig = {
        "bpf_object__open_file": (P, [C, P]),
        "bpf_object__load": (I, [P]),
        "bpf_object__close": (None, [P]),
        "bpf_object__btf": (P, [P]),
        "bpf_object__find_program_by_name": (P, [P, C]),
        "bpf_object__find_map_by_name": (P, [P, C]),
        "bpf_object__next_map": (P, [P, P]),
        "bpf_object__next_program": (P, [P, P]),
        "bpf_program__name": (C, [P]),
        "bpf_program__section_name": (C, [P]),
        "bpf_program__set_type": (I, [P, I]),
        "bpf_program__set_expected_attach_type": (I, [P, I]),
        "bpf_program__set_autoload": (I, [P, ctypes.c_bool]),
        "bpf_program__fd": (I, [P]),
        "bpf_program__attach": (P, [P]),
        "bpf_program__attach_xdp": (P, [P, I]),
        "bpf_program__attach_cgroup": (P, [P, I]),
        "bpf_link__fd": (I, [P]),
        "bpf_link__destroy": (I, [P]),
        "bpf_map__name": (C, [P]),
        "bpf_map__fd": (I, [P]),
        "bpf_map__set_max_entries": (I, [P, ctypes.c_uint32]),
        "bpf_map__reuse_fd": (I, [P, I]),
        "bpf_map__max_entries": (ctypes.c_uint32, [P]),
        "bpf_map__value_size": (ctypes.c_uint32, [P]),
        "bpf_map__key_size": (ctypes.c_uint32, [P]),
        "bpf_map__initial_value": (P, [P, ctypes.POINTER(S)]),
        "bpf_map_update_elem": (I, [I, P, P, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (I, [I, P, P]),
        "bpf_map_delete_elem": (I, [I, P]),
        "bpf_map_lookup_and_delete_elem": (I, [I, P, P]),
        "bpf_map_get_next_key": (I, [I, P, P]),
        "bpf_map_lookup_batch": (I, [I, P, P, P, P, ctypes.POINTER(ctypes.c_uint32), P]),
        "btf__find_by_name_kind": (I, [P, C, U]),
        "btf__type_by_id": (P, [P, U]),
        "btf__name_by_offset": (C, [P, U]),
        "libbpf_num_possible_cpus": (I, []),
        "libbpf_set_print": (P, [P]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_L = _lib()
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

NUM_CPUS = _L.libbpf_num_possible_cpus()


def quiet_libbpf() -> None:
    """Silence libbpf's own stderr output (capability probing expects failures)."""
    _L.libbpf_set_print(None)


def _err(what: str, code: int | None = None) -> BpfError:
    e = abs(code) if code else ctypes.get_errno()
    return BpfError(e, f"{what}: {os.strerror(e)}")


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        raise _err(what)
    return ptr


class Link:
    """One attachment; detached when detach() runs or this process's fds close."""

    def __init__(self, what: str, *, ptr: int | None = None, fd: int | None = None) -> None:
        self.what = what
        self._ptr = ptr
        self._fd = fd

    @property
    def fd(self) -> int:
        return self._fd if self._fd is not None else _L.bpf_link__fd(self._ptr)

    def detach(self) -> None:
        if self._ptr:
            _L.bpf_link__destroy(self._ptr)
            self._ptr = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"Link({self.what})"


class Map:
    """A BPF map of a loaded object; keys/values are bytes (ints = little-endian u32 keys)."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return _L.bpf_map__fd(self._ptr)

    @property
    def key_size(self) -> int:
        return _L.bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return _L.bpf_map__value_size(self._ptr)

    def _key(self, key: bytes | int) -> ctypes.Array:
        raw = key.to_bytes(self.key_size, "little") if isinstance(key, int) else key
        if len(raw) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(raw)} bytes, expected {self.key_size}")
        return ctypes.create_string_buffer(raw, len(raw))

    def update(self, key: bytes | int, value: bytes, flags: int = 0) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, "
                             f"expected {self.value_size}")
        v = ctypes.create_string_buffer(value, len(value))
        if _L.bpf_map_update_elem(self.fd, self._key(key), v, flags) != 0:
            raise _err(f"update map {self.name}")

    def _lookup(self, key: bytes | int, size: int, pop: bool = False) -> bytes | None:
        out = ctypes.create_string_buffer(size)
        fn = _L.bpf_map_lookup_and_delete_elem if pop else _L.bpf_map_lookup_elem
        if fn(self.fd, self._key(key), out) != 0:
            if ctypes.get_errno() == errno.ENOENT:
                return None
            raise _err(f"{'pop from' if pop else 'lookup'} map {self.name}")
        return out.raw

    def lookup(self, key: bytes | int) -> bytes | None:
        return self._lookup(key, self.value_size)

    @property
    def _cpu_step(self) -> int:
        """A per-CPU value's size in the kernel's layout (padded to 8 bytes)."""
        return (self.value_size + 7) // 8 * 8

    def _cpu_values(self, raw: bytes) -> list[bytes]:
        """One key's per-CPU values, NUM_CPUS padded slots, as one value each."""
        step, vs = self._cpu_step, self.value_size
        return [raw[i * step:i * step + vs] for i in range(NUM_CPUS)]

    def lookup_percpu(self, key: bytes | int, pop: bool = False) -> list[bytes]:
        """Per-CPU maps: one value per possible CPU (each padded to 8 bytes by the kernel).
        pop: read and remove the key in one step, so no update between the two is lost."""
        raw = self._lookup(key, self._cpu_step * NUM_CPUS, pop)
        return [] if raw is None else self._cpu_values(raw)

    def items_percpu(self, chunk: int = 256) -> list[tuple[bytes, list[bytes]]]:
        """Per-CPU hash maps: every key with its per-CPU values, read in batches of up to
        `chunk` keys (one syscall each, not two per key). A key added meanwhile may be read
        next time, not this one."""
        ks, per = self.key_size, self._cpu_step * NUM_CPUS
        out: list[tuple[bytes, list[bytes]]] = []
        batch_in, batch_out = None, ctypes.create_string_buffer(8)
        while True:
            keys = ctypes.create_string_buffer(ks * chunk)
            vals = ctypes.create_string_buffer(per * chunk)
            count = ctypes.c_uint32(chunk)
            rc = _L.bpf_map_lookup_batch(self.fd, batch_in, batch_out, keys, vals,
                                         ctypes.byref(count), None)
            err = ctypes.get_errno() if rc else 0
            if rc and err == errno.ENOSPC and not count.value:   # a bucket larger than chunk
                chunk *= 2
                continue
            if rc and err != errno.ENOENT:
                raise _err(f"batch lookup in map {self.name}")
            kraw, vraw = keys.raw, vals.raw
            out += [(kraw[i * ks:(i + 1) * ks], self._cpu_values(vraw[i * per:(i + 1) * per]))
                    for i in range(count.value)]
            if rc:        # ENOENT: the last batch
                return out
            batch_in = ctypes.create_string_buffer(batch_out.raw, 8)

    def delete(self, key: bytes | int) -> bool:
        if _L.bpf_map_delete_elem(self.fd, self._key(key)) != 0:
            if ctypes.get_errno() == errno.ENOENT:
                return False
            raise _err(f"delete from map {self.name}")
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while _L.bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
        return out


class BpfObject:
    """An opened (then loaded) BPF ELF object and the links made from its programs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._ptr = _check_ptr(_L.bpf_object__open_file(str(self.path).encode(), None),
                               f"open BPF object {self.path}")
        self.links: list[Link] = []
        self.loaded = False

    @classmethod
    def build(cls, name: str) -> BpfObject:
        """Open the compiled <name>.bpf.o (see object_path: never compiles)."""
        return cls(object_path(name))

    # -- before load ---------------------------------------------------------------------
    def _prog(self, name: str) -> int:
        p = _L.bpf_object__find_program_by_name(self._ptr, name.encode())
        if not p:
            raise BpfError(errno.ENOENT, f"{self.path.name}: no program named {name!r}")
        return p

    def programs(self) -> list[str]:
        out, p = [], None
        while p := _L.bpf_object__next_program(self._ptr, p):
            out.append(_L.bpf_program__name(p).decode())
        return out

    def section(self, prog: str) -> str:
        return _L.bpf_program__section_name(self._prog(prog)).decode()

    def set_program_type(self, prog: str, prog_type: int, attach_type: int | None = None) -> None:
        p = self._prog(prog)
        if _L.bpf_program__set_type(p, prog_type) != 0:
            raise _err(f"set type of {prog}")
        if attach_type is not None and _L.bpf_program__set_expected_attach_type(p, attach_type):
            raise _err(f"set attach type of {prog}")

    def set_autoload(self, prog: str, on: bool) -> None:
        _L.bpf_program__set_autoload(self._prog(prog), on)

    def set_max_entries(self, map_name: str, n: int) -> None:
        if _L.bpf_map__set_max_entries(self.map(map_name)._ptr, n) != 0:
            raise _err(f"set max_entries of {map_name}")

    def reuse_map(self, map_name: str, fd: int) -> None:
        """Share another loaded object's map (e.g. one ring buffer for every probe object)."""
        if _L.bpf_map__reuse_fd(self.map(map_name)._ptr, fd) != 0:
            raise _err(f"reuse map {map_name}")

    def set_global(self, name: str, value: int | bytes) -> None:
        """Set a global variable's initial value (found through the object's BTF DATASECs)."""
        if self.loaded:
            raise BpfError(errno.EBUSY, f"set_global({name}) after load")
        btf = _L.bpf_object__btf(self._ptr)
        for sec in (".rodata", ".data", ".bss"):
            sid = _L.btf__find_by_name_kind(btf, sec.encode(), _BTF_KIND_DATASEC)
            if sid < 0:
                continue
            t = _L.btf__type_by_id(btf, sid)
            _name_off, info, _size = (ctypes.c_uint32 * 3).from_address(t)
            for i in range(info & 0xFFFF):
                vtype, off, size = (ctypes.c_uint32 * 3).from_address(t + 12 + 12 * i)
                vt = _L.btf__type_by_id(btf, vtype)
                vname = _L.btf__name_by_offset(btf, ctypes.c_uint32.from_address(vt).value)
                if vname.decode() != name:
                    continue
                raw = value.to_bytes(size, "little", signed=value < 0) \
                    if isinstance(value, int) else value
                if len(raw) != size:
                    raise ValueError(f"global {name} is {size} bytes, got {len(raw)}")
                m = self._section_map(sec)
                n = ctypes.c_size_t()
                data = _check_ptr(_L.bpf_map__initial_value(m, ctypes.byref(n)),
                                  f"initial value of {sec}")
                ctypes.memmove(data + off, raw, size)
                return
        raise BpfError(errno.ENOENT, f"{self.path.name}: no global variable {name!r}")

    def _section_map(self, sec: str) -> int:
        m = None
        while m := _L.bpf_object__next_map(self._ptr, m):
            if _L.bpf_map__name(m).decode().endswith(sec):
                return m
        raise BpfError(errno.ENOENT, f"{self.path.name}: no {sec} map")

    def load(self) -> BpfObject:
        rc = _L.bpf_object__load(self._ptr)
        if rc != 0:
            raise _err(f"load {self.path.name} (the verifier log is above)", rc)
        self.loaded = True
        return self

    # -- after load ----------------------------------------------------------------------
    def prog_fd(self, prog: str) -> int:
        return _L.bpf_program__fd(self._prog(prog))

    def map(self, name: str) -> Map:
        m = _L.bpf_object__find_map_by_name(self._ptr, name.encode())
        if not m:
            raise BpfError(errno.ENOENT, f"{self.path.name}: no map named {name!r}")
        return Map(m, name)

    def _keep(self, link: Link) -> Link:
        self.links.append(link)
        return link

    def attach(self, prog: str) -> Link:
        """Attach by SEC name (tp/, tp_btf/, raw_tp/ ...)."""
        ptr = _L.bpf_program__attach(self._prog(prog))
        return self._keep(Link(f"{prog} ({self.section(prog)})",
                               ptr=_check_ptr(ptr, f"attach {prog}")))

    def attach_xdp(self, prog: str, ifindex: int, flags: int = 0) -> Link:
        """XDP link on ifindex of the calling thread's netns (native if the driver has it).

        ``flags``: XDP_FLAGS_SKB_MODE (generic) or XDP_FLAGS_DRV_MODE (native only)."""
        if flags:
            mode = "generic" if flags & XDP_FLAGS_SKB_MODE else "native"
            return self._link_create(prog, ifindex, _ATTACH_XDP, [], f"{prog} xdp({mode})@{ifindex}",
                                     flags=flags)
        ptr = _L.bpf_program__attach_xdp(self._prog(prog), ifindex)
        return self._keep(Link(f"{prog} xdp@{ifindex}",
                               ptr=_check_ptr(ptr, f"attach {prog} to XDP of ifindex {ifindex}")))

    def attach_cgroup(self, prog: str, cgroup: str | Path) -> Link:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            ptr = _L.bpf_program__attach_cgroup(self._prog(prog), fd)
            return self._keep(Link(f"{prog} cgroup {cgroup}",
                                   ptr=_check_ptr(ptr, f"attach {prog} to {cgroup}")))
        finally:
            os.close(fd)

    def _link_create(self, prog: str, target: int, attach_type: int, extra: list[int],
                     what: str, flags: int = 0) -> Link:
        attr = (ctypes.c_uint32 * 16)()
        attr[0], attr[1], attr[2], attr[3] = self.prog_fd(prog), target, attach_type, flags
        for i, v in enumerate(extra):
            attr[4 + i] = v & 0xFFFFFFFF
        fd = _libc.syscall(_SYS_BPF, _BPF_LINK_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
        if fd < 0:
            raise _err(f"BPF_LINK_CREATE {what}")
        return self._keep(Link(what, fd=fd))

    def attach_netfilter(self, prog: str, pf: int, hooknum: int, priority: int = 0,
                         flags: int = 0) -> Link:
        """Netfilter link in the calling thread's netns (needs the program type set first:
        set_program_type(prog, PROG_TYPE_NETFILTER, ATTACH_NETFILTER) before load)."""
        return self._link_create(prog, 0, ATTACH_NETFILTER, [pf, hooknum, priority, flags],
                                 f"{prog} netfilter pf={pf} hook={hooknum}")

    def attach_tcx(self, prog: str, ifindex: int, ingress: bool) -> Link:
        """tcx link (kernel 6.6+) on ifindex of the calling thread's netns."""
        at = ATTACH_TCX_INGRESS if ingress else ATTACH_TCX_EGRESS
        return self._link_create(prog, ifindex, at, [],
                                 f"{prog} tcx {'ingress' if ingress else 'egress'}@{ifindex}")

    def test_run(self, prog: str, data: bytes) -> tuple[int, bytes]:
        """BPF_PROG_TEST_RUN on a packet (XDP, tc): returns (return value, packet after)."""
        din = ctypes.create_string_buffer(data, len(data))
        dout = ctypes.create_string_buffer(len(data) + 256)
        attr = (ctypes.c_uint32 * 20)()
        attr[0] = self.prog_fd(prog)
        attr[2], attr[3] = len(data), len(dout)             # data_size_in / _out
        for i, buf in ((4, din), (6, dout)):                  # data_in / data_out
            addr = ctypes.addressof(buf)
            attr[i], attr[i + 1] = addr & 0xFFFFFFFF, addr >> 32
        if _libc.syscall(_SYS_BPF, _BPF_PROG_TEST_RUN, ctypes.byref(attr),
                         ctypes.sizeof(attr)) != 0:
            raise _err(f"BPF_PROG_TEST_RUN {prog}")
        return attr[1], dout.raw[:attr[3]]

    def detach_all(self) -> None:
        while self.links:
            self.links.pop().detach()

    def close(self) -> None:
        self.detach_all()
        if self._ptr:
            _L.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def object_path(name: str) -> Path:
    """Where ``<name>.bpf.o`` is: an installed wheel's own copy (``latscope/bpf/objects``),
    else a source checkout's ``build/bpf`` (``make bpf``, the editable install), or
    ``$LATSCOPE_BPF_BUILD`` when set. Nothing is compiled here: a server runs the wheel
    without clang or make. A missing object, or in a checkout one older than its sources,
    is a BpfError that says how to build it."""
    from latscope.bpf import build as bpf_build

    fname = f"{name}.bpf.o"
    checkout = paths.source_checkout()
    if "LATSCOPE_BPF_BUILD" not in os.environ:
        packaged = importlib.resources.files("latscope.bpf") / bpf_build.PACKAGE_DIR / fname
        if isinstance(packaged, Path) and packaged.is_file():
            return packaged
        if checkout is None:
            have = sorted(p.name for p in packaged.parent.glob("*.bpf.o")) if isinstance(
                packaged, Path) and packaged.parent.is_dir() else []
            raise BpfError(errno.ENOENT, (
                f"no BPF object {fname} in this installation ({packaged.parent}; it holds "
                f"{', '.join(have) or 'none'}): reinstall LatScope from a wheel built with "
                "`make wheel` (which compiles the objects), or run from a checkout after "
                "`make bpf`"))
    out = paths.bpf_build_dir() / fname
    if checkout is not None:
        if name not in bpf_build.sources(checkout):
            raise BpfError(errno.ENOENT, f"no BPF program {name!r}: no {name}.bpf.c under "
                           f"{checkout}/{{{','.join(bpf_build.SOURCE_DIRS)}}}")
        newer = bpf_build.outdated(checkout, out)
        if out.is_file() and newer:
            raise BpfError(errno.ESTALE, (
                f"{out} is older than {', '.join(str(p.relative_to(checkout)) for p in newer)}:"
                f" run `make bpf` in {checkout} to recompile the BPF objects"))
    if not out.is_file():
        where = f" in {checkout}" if checkout else ""
        raise BpfError(errno.ENOENT, f"BPF object {out} missing: run `make bpf`{where} "
                       "(compiles the BPF objects; needs clang and bpftool)")
    return out


class RingBuffer:
    """Batch reader of a BPF_MAP_TYPE_RINGBUF, straight from its mmap (no per-record callback).

    poll() waits for the kernel's wakeup (or the timeout), then returns every committed
    record since the last call; busy (still being written) records stop the batch and are
    picked up next time, discarded ones are skipped. The epoll is edge-triggered, so data a
    producer left without a wakeup (BPF_RB_NO_WAKEUP: the agent's probes wake it only once a
    batch waits) does not end the wait early: the reader takes batches, not single events.
    """

    def __init__(self, map_fd: int, size: int | None = None) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        if size is None:
            size = _map_max_entries(map_fd)
        self.size, self.mask = size, size - 1
        self._cons = _libc.mmap(None, self.page, 3, 1, map_fd, 0)  # RW, MAP_SHARED
        if self._cons in (None, ctypes.c_void_p(-1).value):
            raise _err("mmap ring buffer consumer page")
        self._prod = _libc.mmap(None, self.page + 2 * size, 1, 1, map_fd, self.page)
        if self._prod in (None, ctypes.c_void_p(-1).value):
            raise _err("mmap ring buffer data")
        self._data = self._prod + self.page
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def pending(self) -> int:
        """Unread bytes, read after a full fence (bpf/native/ring.c says why)."""
        return ring_pending(self._cons, self._prod)

    def read(self) -> list[bytes]:
        """Every committed record since the last read, consumed (bpf/native/ring.c)."""
        return ring_read(self._cons, self._prod, self._data, self.mask)

    @property
    def addresses(self) -> tuple[int, int, int, int]:
        """(consumer position, producer position, data area, mask): for a reader in C that
        takes the records in place (bpf/native/ring.h)."""
        return self._cons, self._prod, self._data, self.mask

    def span(self) -> tuple[int, int]:
        """The committed records' (start, end) positions, nothing consumed."""
        return ring_span(self._cons, self._prod, self._data, self.mask)

    def wait(self, timeout_ms: int) -> bool:
        """Until the kernel signals data (True) or the timeout (False)."""
        return bool(self._ep.poll(timeout_ms / 1000))

    def poll(self, timeout_ms: int) -> list[bytes]:
        self.wait(timeout_ms)
        return self.read()

    def close(self) -> None:
        if self._cons:
            _libc.munmap(self._cons, self.page)
            _libc.munmap(self._prod, self.page + 2 * self.size)
            self._cons = self._prod = None
            self._ep.close()


def fdinfo_int(fd: int, key: str, pid: int | str = "self") -> int | None:
    """An integer field of /proc/PID/fdinfo/FD (``max_entries``, ``prog_id``, ``link_id``…):
    the kernel lists them for every BPF fd, so no BPF_OBJ_GET_INFO is needed."""
    prefix = f"{key}:"
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith(prefix):
            return int(line.split()[1])
    return None


def held_ids(pid: int, key: str) -> set[int]:
    """IDs (``prog_id``, ``link_id``, ``map_id``) of the BPF objects a process holds by fd:
    Debian's bpftool lists no owner pids, and other processes' objects must not be counted."""
    out = set()
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            value = fdinfo_int(int(fd.name), key, pid)
        except OSError:
            continue    # closed while we looked
        if value is not None:
            out.add(value)
    return out


def _map_max_entries(map_fd: int) -> int:
    entries = fdinfo_int(map_fd, "max_entries")
    if entries is None:
        raise BpfError(errno.EINVAL, f"fd {map_fd} is not a BPF map")
    return entries
