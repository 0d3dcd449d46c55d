"""The design's targets (§9) as a benchmark states them: each figure with its limit, its aim,
and met/missed, or unresolved where the figure's 95 % interval holds the limit. With
``--check`` a benchmark exits non-zero when any target is missed or unresolved, so
``make bench`` is red when the code is, or when the run could not tell."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass

# Student's t, two-sided 95 %, by degrees of freedom (1..30); beyond: the normal's 1.96.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ratio_spread(off: list[float], on: list[float]) -> float | None:
    """The 95 % half-width of an on/off ratio measured in alternated pairs (the i-th off run
    with the i-th on run): Student's t over the pairs' ratios. On a noisy machine a ratio of
    medians can sit on either side of a limit by chance; this says how far. None with fewer
    than two pairs (a phase that did not run leaves one placeholder)."""
    if len(off) < 2:
        return None
    ratios = [b / a for a, b in zip(off, on, strict=True)]
    df = len(ratios) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return t * statistics.stdev(ratios) / math.sqrt(len(ratios))


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None        # None: not measured in this run (counts as missed)
    op: str                    # "<=" or ">="
    must: float
    unit: str = ""
    aim: float | None = None   # the stretch goal, reported, never enforced
    spread: float | None = None  # 95 % half-width of value, where the runs give one

    @property
    def unresolved(self) -> bool:
        """The value's interval holds the limit: this run cannot tell met from missed."""
        return (self.value is not None and self.spread is not None
                and abs(self.value - self.must) < self.spread)

    @property
    def met(self) -> bool:
        if self.value is None or self.unresolved:
            return False
        return self.value <= self.must if self.op == "<=" else self.value >= self.must

    @property
    def status(self) -> str:
        return "unresolved" if self.unresolved else "met" if self.met else "MISSED"


def add_check_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a target is missed (make bench uses it)")


def targets_json(targets: list[Target]) -> dict:
    """The targets as --json prints them (a benchmark may print them inside its own object)."""
    return {"targets": [asdict(t) | {"met": t.met, "status": t.status} for t in targets]}


def report(targets: list[Target], check: bool, as_json: bool = False) -> int:
    """Print one line per target; the exit status ``--check`` asks for."""
    if as_json:
        print(json.dumps(targets_json(targets)))
    else:
        print("\n== targets ==")
        for t in targets:
            shown = "not measured" if t.value is None else f"{t.value:,.4g} {t.unit}".strip()
            if t.value is not None and t.spread is not None:
                shown += f" ±{t.spread:.3g}"
            aim = f", aim {t.op} {t.aim:,.4g}" if t.aim is not None else ""
            print(f"{t.name:<58} {shown:>16}   must {t.op} {t.must:,.4g} {t.unit}{aim}   "
                  f"{t.status}")
    return exit_status(targets, check)


def exit_status(targets: list[Target], check: bool) -> int:
    """What ``--check`` asks for: 1 when a target is missed or unresolved (naming them),
    else 0; a benchmark that prints its targets in a table of its own ends with this. The
    names go to stderr: stdout may be --json's one object."""
    missed = [f"{t.name} ({t.status})" for t in targets if not t.met]
    if missed and check:
        print(f"not met: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0
