"""The folders are the architecture; these rules keep them so.

- production code (producers/, sync/, stream/, sinks/) never imports the lab (lab/);
- the agent and the clock sync both build on the platform (bpf/) and never import each other;
- sinks never import the stream (the stream may hand records to sinks, not the reverse), so
  there is no stream <-> sinks cycle;
- the platform imports no stage.

Imports are read from the source (every ``import``, at module level or inside a function).
The module-level graph is also followed transitively, so a rule cannot be dodged through a
glue module that is imported at start-up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> import package (pyproject.toml's package-dir)
FOLDERS = {"latscope": "latscope", "bpf": "latscope.bpf", "lab": "latscope.lab",
           "stack": "latscope.stack", "producers": "latscope.producers", "sync": "latscope.sync",
           "stream": "latscope.stream", "sinks": "latscope.sinks", "schemas": "latscope.schemas",
           "fleet": "latscope.fleet"}
PRODUCTION = ("latscope.producers", "latscope.sync", "latscope.stream", "latscope.sinks",
              "latscope.fleet")
# (importer package, imported package, why)
FORBIDDEN = [
    *[(p, "latscope.lab", "production code never imports the lab") for p in PRODUCTION],
    ("latscope.sync", "latscope.producers", "sync builds on the platform, not on the agent"),
    ("latscope.producers", "latscope.sync", "the agent builds on the platform, not on sync"),
    ("latscope.sinks", "latscope.stream", "sinks never import the stream (no cycle)"),
    *[("latscope.bpf", p, "the platform imports no stage") for p in PRODUCTION],
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    package = FOLDERS[rel.parts[0]]
    parts = [*rel.parts[1:-1], rel.stem] if rel.stem != "__init__" else list(rel.parts[1:-1])
    return ".".join([package, *parts])


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every latscope module imported anywhere, those imported at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    everywhere: set[str] = set()
    top: set[str] = set()
    toplevel_nodes = {id(n) for n in tree.body}
    toplevel_nodes |= {id(c) for n in tree.body if isinstance(n, ast.If | ast.Try)
                       for c in ast.walk(n)}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        names = [n for n in names if n == "latscope" or n.startswith("latscope.")]
        everywhere.update(names)
        guarded = isinstance(node, ast.ImportFrom) and _under_type_checking(tree, node)
        if id(node) in toplevel_nodes and not guarded:
            top.update(names)
    return everywhere, top


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for n in tree.body:
        if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING":
            if any(c is target for c in ast.walk(n)):
                return True
    return False


def _graph() -> dict[str, tuple[set[str], set[str]]]:
    out = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            out[_module_name(path)] = _imports(path)
    return out


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    found = []
    modules = set(graph)
    for mod, (everywhere, _top) in graph.items():
        # transitive closure over module-level imports, plus this module's own lazy ones
        seen, todo = set(), list(everywhere)
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            if m in modules:
                todo.extend(graph[m][1])
        for importer, imported, why in FORBIDDEN:
            if not _within(mod, importer):
                continue
            bad = sorted(m for m in seen if _within(m, imported))
            if bad:
                found.append(f"{mod} reaches {bad[0]}: {why}")
    return found


def test_the_layers_import_only_downwards() -> None:
    graph = _graph()
    assert len(graph) > 60, "the walk found too few modules"
    assert violations(graph) == []


@pytest.mark.parametrize(("module", "extra", "rule"), [
    ("latscope.sync.manager", "latscope.producers.probes", "not on the agent"),
    ("latscope.stream.join", "latscope.lab.topology", "never imports the lab"),
    ("latscope.sinks.influx", "latscope.stream.windows", "no cycle"),
])
def test_a_forbidden_import_is_caught(module: str, extra: str, rule: str) -> None:
    """The check itself can fail: one wrong import added to the real graph is reported."""
    graph = _graph()
    everywhere, top = graph[module]
    graph[module] = (everywhere | {extra}, top | {extra})
    assert any(rule in v for v in violations(graph))


def test_a_forbidden_import_through_glue_is_caught() -> None:
    graph = _graph()
    everywhere, top = graph["latscope.log"]
    graph["latscope.log"] = (everywhere | {"latscope.lab.netns"}, top | {"latscope.lab.netns"})
    assert any("latscope.producers" in v and "lab" in v for v in violations(graph))
