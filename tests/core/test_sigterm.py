"""The suite's SIGTERM handler (tests/conftest.py): an interrupt in pytest's process, the
default death in any process forked from it. A forked child that raised instead unwound into
a second copy of the test session; that is how a CI run hung building namespaces."""

from __future__ import annotations

import os
import signal
import time

import pytest
from pyroute2.process import ChildProcess


def _sleep(seconds: float) -> bytes:
    time.sleep(seconds)
    return b"done"


def test_sigterm_in_the_session_is_an_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


def test_a_forked_child_ended_with_sigterm_dies_of_it() -> None:
    """pyroute2's namespace-socket child, stopped as pyroute2 stops it (SIGTERM), must die of
    the signal; a child that returned here instead would be running this test a second time."""
    session = os.getpid()
    proc = ChildProcess(target=_sleep, args=[30])
    try:
        proc.run()
    except BaseException:
        if os.getpid() != session:
            os._exit(70)   # the child unwound out of pyroute2's wrapper into this test
        raise
    time.sleep(0.5)        # the child is inside its target
    start = time.monotonic()
    proc.stop()
    assert proc.exitcode == -signal.SIGTERM, f"child exit code {proc.exitcode}"
    assert time.monotonic() - start < 5
