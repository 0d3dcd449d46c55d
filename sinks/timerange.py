"""The time range a report covers, from ``--since`` / ``--from`` / ``--to``.

A bound is absolute (ISO 8601 date and time, or a bare ``HH:MM[:SS]`` meaning today; local
time unless it carries a zone), relative to now (a Flux-style duration, that long ago:
``5m`` or ``-5m``, ``1h30m``; argparse takes ``-5m`` only as ``--from=-5m``), or ``now``.
``--since D`` is ``--from D --to now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
DURATION_RE = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w))+$")
_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_CLOCK_RE = re.compile(r"^[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$")


class RangeError(ValueError):
    """A bound that is none of the accepted forms, or a range that ends before it starts."""


def duration(text: str, what: str, shown: str | None = None) -> timedelta:
    if not DURATION_RE.match(text):
        raise RangeError(f"{what} {shown or text!r}: expected a duration like 10m, 1h30m, 2d, "
                         "500ms")
    return sum((int(n) * _UNITS[u] for n, u in _PART_RE.findall(text)), timedelta())


def bound(text: str, what: str, now: datetime) -> datetime:
    """One bound as an aware datetime; ``now`` is aware."""
    t = text.strip()
    if t == "now":
        return now
    if t.startswith("-"):
        return now - duration(t[1:], what, text)
    if DURATION_RE.match(t):
        return now - duration(t, what)
    if _CLOCK_RE.match(t):
        t = f"{now.astimezone().date().isoformat()}T{t}"
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{what} {text!r}: expected an ISO date and time (2026-05-04T10:30:00, "
                         "local unless it has a zone), HH:MM:SS (today), a relative -10m, "
                         "or now") from None
    return when.astimezone() if when.tzinfo is None else when


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    stop: datetime

    def flux(self) -> str:
        """The Flux ``range`` call for it."""
        return f"range(start: {_rfc3339(self.start)}, stop: {_rfc3339(self.stop)})"

    def describe(self) -> str:
        fmt = "%Y-%m-%d %H:%M:%S %Z"
        return f"{self.start.astimezone().strftime(fmt)} – {self.stop.astimezone().strftime(fmt)}"


def _rfc3339(t: datetime) -> str:
    return t.astimezone().isoformat(timespec="microseconds")


def time_range(since: str | None = None, start: str | None = None, stop: str | None = None,
               now: datetime | None = None) -> TimeRange:
    """``--since`` and ``--from`` exclude each other; neither: the last 10 minutes."""
    now = (now or datetime.now()).astimezone()
    if since is not None and start is not None:
        raise RangeError("--since and --from both given: --since D is --from -D, pick one")
    begin = (now - duration(since, "--since") if since is not None
             else bound(start, "--from", now) if start is not None
             else now - timedelta(minutes=10))
    end = bound(stop, "--to", now) if stop is not None else now
    if end <= begin:
        raise RangeError(f"the range ends ({end.isoformat()}) before it starts "
                         f"({begin.isoformat()})")
    return TimeRange(begin, end)
