"""The wheels a server installs from: LatScope's own and every dependency, gathered on the
management server so that servers need no package registry.

The LatScope wheel is ``--wheel`` or is built from this source checkout; dependencies come
from the local wheelhouse (``<cache>/wheelhouse``), which ``pip wheel`` refills from the
registry only when it lacks one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from latscope import paths
from latscope.errors import UserError
from latscope.procs import run_step

PIP = [sys.executable, "-m", "pip"]


@dataclass(frozen=True)
class Bundle:
    wheels: tuple[Path, ...]
    latscope: Path          # the LatScope wheel among them
    digest: str             # of every wheel's name and content: what a server has installed

    def __post_init__(self) -> None:
        assert self.latscope in self.wheels


def _digest(wheels: list[Path]) -> str:
    h = hashlib.sha256()
    for w in sorted(wheels, key=lambda p: p.name):
        h.update(w.name.encode() + b"\0")
        h.update(hashlib.sha256(w.read_bytes()).digest())
    return h.hexdigest()[:16]


def build_latscope_wheel(out: Path) -> Path:
    src = paths.source_checkout()
    if src is None:
        raise UserError("no source checkout to build the LatScope wheel from: give --wheel PATH")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("latscope-*.whl"):
        old.unlink()
    run_step([*PIP, "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
             "building the LatScope wheel", out / "build.log")
    (wheel,) = out.glob("latscope-*.whl")
    return wheel


def gather(state: Path, wheel: Path | None) -> Bundle:
    """Every wheel a server needs, in ``state/wheels``."""
    if wheel is None:
        wheel = build_latscope_wheel(state / "dist")
    elif not wheel.is_file():
        raise UserError(f"--wheel {wheel}: no such file")
    house = paths.cache_dir() / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    dest = state / "wheels"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    collect = [*PIP, "wheel", "-q", "--no-index", "--find-links", str(house), "-w", str(dest),
               str(wheel)]
    if subprocess.run(collect, capture_output=True).returncode != 0:
        run_step([*PIP, "wheel", "-q", "--find-links", str(house), "-w", str(house), str(wheel)],
                 "filling the wheelhouse", state / "wheelhouse.log")
        for stale in house.glob("latscope-*.whl"):
            stale.unlink()
        run_step(collect, "gathering dependency wheels", state / "wheelhouse.log")
    wheels = sorted(dest.glob("*.whl"))
    (own,) = [w for w in wheels if w.name.startswith("latscope-")]
    return Bundle(tuple(wheels), own, _digest(wheels))
