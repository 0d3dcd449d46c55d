"""Namespace entry for one thread (setns only): what the agent and the sync responder need to
attach links inside a network namespace. Building namespaces is the lab's job, not this module's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    # Python 3.11 has no os.setns; setns(2) on a thread moves only that thread.
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns_name: str) -> Iterator[None]:
    """Move the CALLING THREAD into namespace ``ns_name`` for the block, then back.

    Sockets, netlink and BPF links created inside stay bound to that namespace afterwards.
    Other threads of the process are unaffected.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns_name), os.O_RDONLY)
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


def run_in_netns(ns_name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` on a fresh thread that lives in namespace ``ns_name``; return or raise."""
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
