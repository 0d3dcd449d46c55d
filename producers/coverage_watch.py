"""Does the agent still cover what it was asked to (``--cover-address``)?

Probes, exit devices and names are set up for the namespaces found at start, so a container
started after the agent (an address no namespace held) or restarted into a new namespace
(a covered one gone or replaced) is covered only by a new agent. With
``--restart-on-coverage-change`` (``fleet up`` passes it for a server with containers) the
agent checks, and when coverage changed it exits with EXIT_COVERAGE after a clean shutdown
(probes detached, records flushed), so its supervisor starts it again over what is there
now. Cheap when nothing is missing: a stat per covered namespace per check; the scan of
every namespace for an uncovered address (one ``ip`` each) runs at most every RESCAN_S.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from latscope.bpf.netns import holding, inode_of

EXIT_COVERAGE = 75        # EX_TEMPFAIL: start me again
RESCAN_S = 10.0


class CoverageWatch:
    def __init__(self, netns: list[str | None], uncovered: list[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inodes = {ref: inode_of(ref) for ref in netns if ref}
        self._uncovered = list(uncovered)
        self._clock = clock
        self._next_scan = clock() + RESCAN_S

    def changed(self) -> str | None:
        """Why the coverage is no longer what the agent started with; None: unchanged."""
        for ref, ino in self._inodes.items():
            try:
                now = inode_of(ref)
            except OSError:
                return f"namespace {ref} is gone"
            if now != ino:
                return f"namespace {ref} was replaced"
        if self._uncovered and self._clock() >= self._next_scan:
            self._next_scan = self._clock() + RESCAN_S
            found = sorted(holding(self._uncovered))
            if found:
                return f"{', '.join(found)} now held by a namespace"
        return None
