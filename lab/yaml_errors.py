"""Errors of a YAML file validated by pydantic, as a person wants them: file, line, field
path (``links[2].a_addr[0]``), the bad value and what was expected."""

from __future__ import annotations

import functools
import operator
import re
import types
import typing
from typing import Any, Union

import yaml
from pydantic import BaseModel

from latscope.errors import UserError


class TopologyError(UserError):
    """Every problem of one topology file, each naming file, line, field path and expectation."""

    def __init__(self, source: str, problems: list[tuple[str, str]], lines: dict[str, int]):
        self.source = source
        self.problems = problems
        parts = []
        located = sorted(((_line_for(p, lines) or 0, p, m) for p, m in problems),
                         key=lambda x: x[0])   # file order; stable within a line
        for line, path, msg in located:
            where = f"{source}:{line}" if line else source
            parts.append(f"{where}: {path or '(top level)'}: {msg}")
        head = f"{source}: {len(problems)} problem(s) in the topology file"
        super().__init__(head + "\n  " + "\n  ".join(parts))


def _line_for(path: str, lines: dict[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        shorter = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path)
        path = "" if shorter == path else shorter
    return None


_BRANCH_LABELS = {"str", "int", "float", "bool", "none"}


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    """pydantic's location -> ``links[2].a_addr[0]`` (union-branch labels dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part not in _BRANCH_LABELS:
            out += f".{part}" if out else part
    return out


def _strip_none(ann: Any) -> Any:
    """``X | None`` -> ``X``; unions of several types are rebuilt without None."""
    if typing.get_origin(ann) in (Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return functools.reduce(operator.or_, args) if args else None
    return ann


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The annotation a pydantic error location points at (for 'expected ...' texts)."""
    cur: Any = root
    for part in loc:
        if isinstance(cur, type) and issubclass(cur, BaseModel) and isinstance(part, str):
            field = cur.model_fields.get(part)
            if field is None:
                return None
            cur = _strip_none(field.annotation)
        elif isinstance(part, int) and typing.get_origin(cur) is list:
            cur = _strip_none(typing.get_args(cur)[0])
    return cur


def describe(root: type[BaseModel], err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error as (field path, message) against the model ``root``."""
    loc = tuple(err["loc"])
    path = _fmt_loc(loc)
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = ", ".join(parent.model_fields) if isinstance(parent, type) and issubclass(
            parent, BaseModel) else "?"
        return path, f"unknown key {loc[-1]!r}; expected one of: {allowed}"
    if err["type"] == "missing":
        return path, "missing; this field is required"
    expected = err["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    return path, f"got {value!r}: {expected}"


def line_index(text: str) -> dict[str, int]:
    """Field path -> 1-based line, from the YAML node tree (for error messages)."""
    out: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out

    def walk(node: yaml.Node, path: str) -> None:
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = f"{path}.{k.value}" if path else str(k.value)
                out[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{path}[{i}]")

    if root is not None:
        walk(root, "")
    return out
