"""Network namespaces as the agent, the sync responder and the manager see them: entry for one
thread (setns only), to attach links inside one; ``ip`` run in one; the namespaces that hold
given addresses (a server's containers); the nsid one namespace gives another. Building
namespaces is the lab's job, not this module's.

A namespace is named by a *ref*: None (this process's own), a name under /run/netns (``ip
netns``), or an absolute path to a namespace file such as /proc/PID/ns/net (a container
runtime's namespaces have no name).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def path(ref: str | None) -> str:
    """The namespace file of a ref."""
    if ref is None:
        return "/proc/self/ns/net"
    return ref if ref.startswith("/") else os.path.join(NETNS_DIR, ref)


def ip(ref: str | None, *args: str) -> list[str]:
    """argv of ``ip ARGS`` run inside namespace ``ref``."""
    if ref is None:
        return ["ip", *args]
    if ref.startswith("/"):
        return ["nsenter", f"--net={ref}", "ip", *args]
    return ["ip", "-n", ref, *args]


def ip_json(ref: str | None, *args: str) -> list[dict]:
    out = subprocess.run(ip(ref, "-j", *args), check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def inode_of(ref: str | None) -> int:
    """What BPF reads as net->ns.inum."""
    return os.stat(path(ref)).st_ino


def _setns(fd: int) -> None:
    # Python 3.11 has no os.setns; setns(2) on a thread moves only that thread.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns_name: str | None) -> Iterator[None]:
    """Move the CALLING THREAD into namespace ``ns_name`` (a ref) for the block, then back;
    None: stay where it is.

    Sockets, netlink and BPF links created inside stay bound to that namespace afterwards.
    Other threads of the process are unaffected.
    """
    if ns_name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path(ns_name), os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def run_in_netns(ns_name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` on a fresh thread that lives in namespace ``ns_name``; return or raise.
    None: here, on this thread."""
    if ns_name is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            with entered(ns_name):
                box["value"] = fn(*args, **kwargs)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=body, name=f"netns-{ns_name}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


_RTM_NEWNSID, _RTM_GETNSID = 88, 90
_NETNSA_NSID, _NETNSA_FD = 1, 3
_NLM_F_REQUEST = 1


def nsid_of(target: str | None) -> int | None:
    """The nsid the calling thread's namespace gives namespace ``target`` (RTM_GETNSID):
    what ``ip -d link`` prints as a veth's ``link_netnsid``. None if it has none."""
    fd = os.open(path(target), os.O_RDONLY)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
            attr = struct.pack("=HHI", 8, _NETNSA_FD, fd)
            body = struct.pack("=B3x", socket.AF_UNSPEC) + attr
            s.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETNSID, _NLM_F_REQUEST, 1, 0)
                   + body)
            reply = s.recv(4096)
    finally:
        os.close(fd)
    _len, kind = struct.unpack_from("=IH", reply)
    if kind != _RTM_NEWNSID:
        return None
    off = 16 + 4
    while off + 4 <= len(reply):
        alen, atype = struct.unpack_from("=HH", reply, off)
        if atype == _NETNSA_NSID:
            nsid = struct.unpack_from("=i", reply, off + 4)[0]
            return nsid if nsid >= 0 else None
        off += (alen + 3) & ~3
    return None


def _named() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _process_namespaces() -> dict[int, str]:
    """inode -> /proc/PID/ns/net of one process in each namespace that some process is in."""
    out: dict[int, str] = {}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        p = f"/proc/{pid}/ns/net"
        with contextlib.suppress(OSError):
            out.setdefault(os.stat(p).st_ino, p)
    return out


def holding(addresses: list[str]) -> dict[str, str | None]:
    """For each address, the ref of a namespace with an interface that has it: this process's
    own (None), else a named one, else one some process is in (its /proc/PID/ns/net; a
    container's). Addresses no namespace holds are left out."""
    found: dict[str, str | None] = {}
    want = set(addresses)
    own = inode_of(None)
    seen = {own}
    refs: list[str | None] = [None]
    for name in _named():
        with contextlib.suppress(OSError):
            ino = inode_of(name)
            if ino not in seen:
                seen.add(ino)
                refs.append(name)
    refs += [p for ino, p in _process_namespaces().items() if ino not in seen]
    for ref in refs:
        try:
            links = ip_json(ref, "addr", "show")
        except (subprocess.CalledProcessError, OSError):
            continue     # the process left, or its namespace went away
        for link in links:
            for a in link.get("addr_info", []):
                if a.get("local") in want and a["local"] not in found:
                    found[a["local"]] = ref
        if len(found) == len(want):
            break
    return found
