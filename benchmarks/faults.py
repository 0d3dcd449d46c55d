"""The fault suite (tests/faults, design §10) as one table: each fault with the records it
offered, joined, lost and dead-lettered, its recovery time, and whether its must-hold rule
(what it may lose: 0) was met.

The scenarios are the tests themselves: this runs ``pytest tests/faults`` and the tests
elsewhere the suite leans on (LEANED_ON: forged, replayed and IPv4-mapped sync packets need
tests/sync's network of responders; poison records and 100k flows are the stream's door and
bounds tests) as root with the local stack up (the outage tests start a private Kafka and
InfluxDB of their own), and collects the row each test reports (``fault_row``). A fault
whose test did not get as far as its row counts as missed; a row may add limits of its own
(the 100k flows' memory) to its must-hold rule.

    .venv/bin/python benchmarks/faults.py [--check] [--json] [-k EXPR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import targets as bench

from latscope.paths import REPO_ROOT

ROWS_ENV = "LATSCOPE_FAULTS_OUT"   # tests/conftest.py fault_row appends one JSON row per test
LEANED_ON = (
    "tests/sync/test_sync_security.py::test_forged_and_replayed_replies_move_no_clock",
    "tests/sync/test_sync_security.py::test_probes_nobody_may_send_are_never_answered",
    "tests/stream/test_door.py::test_poison_on_every_topic_is_dead_lettered_and_the_worker_goes_on",
    "tests/stream/test_bounds.py::test_100k_flows_keep_every_structure_bounded")
COLUMNS = ("fault", "offered", "joined", "lost", "dead-lettered", "recovery s", "must hold", "")


def run_suite(select: str | None) -> tuple[int, list[dict]]:
    """pytest's exit status and the rows the tests reported (its output shows progress)."""
    with tempfile.TemporaryDirectory(prefix="lsx-faults-") as d:
        rows_file = Path(d) / "rows.jsonl"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "tests/faults", *LEANED_ON] + (["-k", select] if select else [])
        env = {**os.environ, ROWS_ENV: str(rows_file), "LATSCOPE_TESTS_STRICT": "1"}
        rc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=sys.stderr).returncode
        rows = ([json.loads(line) for line in rows_file.read_text().splitlines() if line]
                if rows_file.exists() else [])
    return rc, rows


def row_targets(row: dict) -> list[bench.Target]:
    """A row's must-hold rules: nothing lost, and each limit of its own."""
    return [bench.Target(f"{row['fault']}: lost", row["lost"], "<=", 0),
            *(bench.Target(f"{row['fault']}: {name}", value, "<=", most)
              for name, (value, most) in row.get("limits", {}).items())]


def table(judged: list[tuple[dict, list[bench.Target]]]) -> str:
    """One line per row, met when every target of the row is."""
    def cell(v: object) -> str:
        return "-" if v is None else str(v)

    lines = [rows_line(COLUMNS)]
    for row, ts in judged:
        rules = ["lost <= 0"] + [f"{name} {cell(value)} <= {most:g}"
                                 for name, (value, most) in row.get("limits", {}).items()]
        lines.append(rows_line((row["fault"], cell(row["offered"]), cell(row["joined"]),
                                cell(row["lost"]), cell(row["dead_lettered"]),
                                cell(row["recovery_s"]), "; ".join(rules),
                                "met" if all(t.met for t in ts) else "MISSED")))
    return "\n".join(lines)


def rows_line(cells: tuple[str, ...]) -> str:
    widths = (44, 8, 8, 6, 13, 10, 11, 6)
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                  strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", dest="select", metavar="EXPR", help="only the tests pytest -k selects")
    ap.add_argument("--json", action="store_true", help="the rows and targets as one JSON object")
    bench.add_check_flag(ap)
    args = ap.parse_args()
    print("running tests/faults and the tests it leans on (about 8 minutes)…", file=sys.stderr, flush=True)
    rc, rows = run_suite(args.select)
    judged = [(r, row_targets(r)) for r in rows]
    if rc != 0:   # a failed test may have failed before its row: the run is a miss
        rows.append({"fault": f"pytest exit status {rc}", "offered": None, "joined": None,
                     "lost": None, "dead_lettered": None, "recovery_s": None})
        judged.append((rows[-1], [bench.Target(f"tests/faults passed (pytest exit {rc})",
                                               None, "<=", 0)]))
    targets = [t for _, ts in judged for t in ts]
    if args.json:
        print(json.dumps({"rows": rows, "pytest_exit": rc} | bench.targets_json(targets)))
    else:
        print(table(judged))
    return bench.exit_status(targets, args.check)


if __name__ == "__main__":
    sys.exit(main())
