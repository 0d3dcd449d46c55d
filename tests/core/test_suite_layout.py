"""The suite's own modules import each other by names that mean one file. Every conftest.py
is imported as ``conftest`` (pytest's default import mode, no packages): ``from conftest
import X`` gets whichever directory's conftest was loaded last, which depends on the paths
pytest was given (benchmarks/faults.py's run once gave the fault tests tests/sync's
topology). Likewise two helper modules of one basename in two folders shadow each other."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "data" not in p.relative_to(TESTS).parts)


def test_nothing_imports_a_conftest() -> None:
    bad = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            bad += [f"{path.relative_to(TESTS)}:{node.lineno}" for n in names
                    if n.split(".")[0] == "conftest"]
    assert not bad, f"import from a module of its own name instead: {bad}"


def test_module_basenames_are_unique() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        if path.name != "conftest.py":
            where[path.stem].append(str(path.relative_to(TESTS)))
    assert not {k: v for k, v in where.items() if len(v) > 1}
