"""The time range a report covers, from ``--since`` / ``--from`` / ``--to``.

A bound is absolute (ISO 8601 date and time, or a bare ``HH:MM[:SS]`` meaning today; local
time unless it carries a zone), relative to now (a Flux-style duration, that long ago:
``5m`` or ``-5m``, ``1h30m``; argparse takes ``-5m`` only as ``--from=-5m``), or ``now``.
``--since D`` is ``--from D --to now``.

The stream worker's ``GET /latscope/flows?since=`` takes one bound the same way but in the
forms a URL carries without quoting: unix seconds or a duration ago (``since_epoch``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
DURATION_RE = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w))+$")
_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w)")
_CLOCK_RE = re.compile(r"^[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$")
_UNIX_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
# Unix seconds below this (2001-09-09) are no time LatScope saw: a duration lacking its unit.
UNIX_MIN = 1_000_000_000


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


def since_epoch(text: str, what: str = "since", now: float | None = None) -> float:
    """A lower time bound as unix seconds, from unix seconds (``1717000000``, ``1717000000.5``)
    or a duration ago (``10m``, ``-10m``, ``1h30m``). A web query has no local time zone to
    read a clock time in, hence no ISO forms here. RangeError names ``what`` and what it
    expected: the worker answers it as an HTTP 400."""
    now = time.time() if now is None else now
    t = text.strip()
    expected = (f"expected unix seconds (e.g. {int(now)} or {now:.1f}) or a duration ago "
                "with its unit (10m, -10m, 90s, 1h30m)")
    if _UNIX_RE.match(t):
        when = float(t)
        if when < UNIX_MIN:
            raise RangeError(f"{what}={text!r}: {t} s after 1970 is before any LatScope data; "
                             f"{expected}")
        if when > now:
            raise RangeError(f"{what}={text!r} is {when - now:.1f} s in the future "
                             f"(now {now:.3f}); {expected}")
        return when
    rel = t[1:] if t.startswith("-") else t
    if DURATION_RE.match(rel):
        return now - duration(rel, what).total_seconds()
    raise RangeError(f"{what}={text!r}: {expected}")
