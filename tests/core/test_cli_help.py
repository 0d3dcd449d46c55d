"""Every `latscope` command and subcommand answers --help."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from latscope.cli import build_parser


def _paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _paths(sub, (*prefix, name))
    return out


COMMANDS = _paths(build_parser())


def test_the_stages_are_registered() -> None:
    top = {p[0] for p in COMMANDS if p}
    assert {"stack", "config"} <= top


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "latscope")
def test_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*path, "--help"])
    assert e.value.code == 0
    assert "usage: latscope" in capsys.readouterr().out


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "latscope", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("latscope ")
