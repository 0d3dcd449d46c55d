"""The benchmarks' target verdicts (benchmarks/targets.py): a ratio measured in alternated
pairs on a noisy machine is met or missed only when its 95 % interval leaves the limit out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import targets as bench


def test_the_spread_of_three_pairs_by_hand() -> None:
    # ratios 1.0, 0.9, 0.8: mean 0.9, sample sd 0.1; t(0.975, 2) = 4.303; 4.303 * 0.1 / sqrt 3
    assert bench.ratio_spread([10.0, 10.0, 10.0], [10.0, 9.0, 8.0]) == pytest.approx(0.24844,
                                                                                   abs=1e-4)
    assert bench.ratio_spread([10.0], [9.0]) is None
    assert bench.ratio_spread([0.0], [0.0]) is None        # a phase that did not run


def test_a_limit_inside_the_interval_is_unresolved() -> None:
    t = bench.Target("loss", -6.25, "<=", 8.0, "%", spread=62.0)
    assert t.unresolved and not t.met and t.status == "unresolved"
    assert bench.exit_status([t], check=True) == 1
    assert bench.Target("loss", 1.0, "<=", 8.0, spread=2.0).status == "met"
    assert bench.Target("loss", 12.0, "<=", 8.0, spread=2.0).status == "MISSED"
    assert bench.Target("loss", 1.0, "<=", 8.0).status == "met"   # no spread: the value
