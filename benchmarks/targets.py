"""The design's targets (§9) as a benchmark states them: each figure with its limit, its aim,
and met/missed. With ``--check`` a benchmark exits non-zero when any target is missed, so
``make bench`` is red when the code is."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None        # None: not measured in this run (counts as missed)
    op: str                    # "<=" or ">="
    must: float
    unit: str = ""
    aim: float | None = None   # the stretch goal, reported, never enforced

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.must if self.op == "<=" else self.value >= self.must


def add_check_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a target is missed (make bench uses it)")


def targets_json(targets: list[Target]) -> dict:
    """The targets as --json prints them (a benchmark may print them inside its own object)."""
    return {"targets": [asdict(t) | {"met": t.met} for t in targets]}


def report(targets: list[Target], check: bool, as_json: bool = False) -> int:
    """Print one line per target; the exit status ``--check`` asks for."""
    if as_json:
        print(json.dumps(targets_json(targets)))
    else:
        print("\n== targets ==")
        for t in targets:
            shown = "not measured" if t.value is None else f"{t.value:,.4g} {t.unit}".strip()
            aim = f", aim {t.op} {t.aim:,.4g}" if t.aim is not None else ""
            print(f"{t.name:<58} {shown:>16}   must {t.op} {t.must:,.4g} {t.unit}{aim}   "
                  f"{'met' if t.met else 'MISSED'}")
    return exit_status(targets, check)


def exit_status(targets: list[Target], check: bool) -> int:
    """What ``--check`` asks for: 1 when a target is missed (naming them), else 0; a
    benchmark that prints its targets in a table of its own ends with this. The names go to
    stderr: stdout may be --json's one object."""
    missed = [t.name for t in targets if not t.met]
    if missed and check:
        print(f"missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0
