"""The wheel runs anywhere: built once (`pip wheel .`, as `make wheel` does), installed into a
fresh venv outside the checkout, it loads its BPF objects from the package with no `make`,
clang or source tree in reach: `latscope doctor` finds every point, `latscope agent` attaches
them in a scratch namespace and exits 0 at --duration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from latscope.bpf import build as bpf_build
from latscope.paths import REPO_ROOT, cache_dir
from latscope.schemas.records import POINTS

pytestmark = pytest.mark.root
PIP = [sys.executable, "-m", "pip"]
RUN_TOOLS = ("ip",)                       # all the agent and doctor run besides Python
BUILD_TOOLS = ("make", "clang", "cc", "gcc", "bpftool", "llc")


def _run(argv: list[str], timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@dataclass
class Installed:
    wheel: Path
    venv: Path
    env: dict[str, str]   # PATH: the venv's bin and symlinks to RUN_TOOLS only
    cwd: Path             # outside the checkout
    seconds: dict[str, float]


def _install(venv: Path, wheel: Path) -> None:
    """Install the wheel and its dependencies into ``venv`` from a local wheelhouse in the
    cache, refilled from PyPI only when it lacks something, so that a run does not download
    the ~65 MB of dependencies (numpy, matplotlib, faust) again."""
    wheelhouse = cache_dir() / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    install = [*PIP, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile",
               "--no-index", "--find-links", str(wheelhouse), str(wheel)]
    if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
        _run([*PIP, "wheel", "-q", "-w", str(wheelhouse), str(wheel)])
        for stale in wheelhouse.glob("latscope-*.whl"):   # only the dependencies stay cached
            stale.unlink()
        _run(install)


def _fresh_tree(dest: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) without its build output, as
    a fresh clone would have them: the wheel is built from nothing but sources, so an
    in-tree leftover (build/lib, build/bpf) cannot stand in for what setup.py must make."""
    files = _run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"]).stdout.split("\0")
    for rel in filter(None, files):
        f = REPO_ROOT / rel
        if f.is_file():                        # not a deletion still in the index
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(REPO_ROOT.resolve())
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    src = _fresh_tree(tmp / "src")
    _run([*PIP, "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("latscope-*.whl")
    seconds["build"] = time.monotonic() - t0
    t0 = time.monotonic()
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _install(venv, wheel)
    seconds["install"] = time.monotonic() - t0
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in RUN_TOOLS:
        exe = shutil.which(tool)
        assert exe, f"{tool} not on PATH (iproute2)"
        (bindir / tool).symlink_to(exe)
    (tmp / "home").mkdir()
    (tmp / "cwd").mkdir()
    env = {"PATH": f"{venv / 'bin'}:{bindir}", "HOME": str(tmp / "home"), "LANG": "C.UTF-8",
           "LSX_RUN_ID": os.environ["LSX_RUN_ID"]}
    return Installed(wheel, venv, env, tmp / "cwd", seconds)


def _latscope(inst: Installed, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return _run([str(inst.venv / "bin" / "latscope"), *args], timeout=timeout, cwd=inst.cwd,
                env=inst.env)


def test_wheel_carries_objects_and_extension(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    objects = {n.rsplit("/", 1)[1] for n in names if n.startswith("latscope/bpf/objects/")}
    assert objects == {f"{n}.bpf.o" for n in bpf_build.sources(REPO_ROOT)}
    assert any(n.startswith("latscope/stream/_native.") and n.endswith(".so") for n in names)
    # the live page's assets: the worker serves them from the installed package
    page = {p.name for p in (REPO_ROOT / "stream" / "page").iterdir()}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("latscope/stream/page/")} == page


# Run by the venv's Python: where latscope, its C extension and each BPF object come from
# (every object is opened: a valid ELF that libbpf parses).
PROBE = """
import json, sys, latscope
from latscope.bpf import libbpf
from latscope.stream import _native
objects = {n: str(libbpf.object_path(n)) for n in sys.argv[1:]}
for p in objects.values():
    libbpf.BpfObject(p).close()
print(json.dumps({"latscope": latscope.__file__, "native": _native.__file__, "objects": objects}))
"""


def test_runs_from_the_venv_without_a_toolchain(installed: Installed) -> None:
    for tool in BUILD_TOOLS:
        assert shutil.which(tool, path=installed.env["PATH"]) is None, tool
    names = sorted(bpf_build.sources(REPO_ROOT))
    r = _run([str(installed.venv / "bin" / "python"), "-c", PROBE, *names], timeout=60,
             cwd=installed.cwd, env=installed.env)
    got = json.loads(r.stdout)
    site = next((installed.venv / "lib").glob("python3*/site-packages")).resolve()
    for f in (got["latscope"], got["native"], *got["objects"].values()):
        p = Path(f).resolve()
        assert p.is_relative_to(site) and not p.is_relative_to(REPO_ROOT.resolve()), f


def test_doctor_and_agent_from_the_wheel(installed: Installed, scratch_netns: str) -> None:
    t0 = time.monotonic()
    rep = json.loads(_latscope(installed, "doctor", "--json").stdout)
    assert rep["btf"] is True and rep["kernel"]
    assert set(rep["points"]) == set(POINTS)
    unavailable = {p: v.get("reason") for p, v in rep["points"].items() if not v["available"]}
    assert not unavailable, unavailable
    # Kafka unreachable on purpose: nothing here depends on the shared stack, and the agent
    # still stops cleanly at --duration.
    r = _latscope(installed, "agent", "--host", "lsxw-wheel", "--netns", scratch_netns,
                  "--bootstrap", "127.0.0.1:1", "--topic", f"lsx-test-{uuid.uuid4().hex[:10]}",
                  "--duration", "2", "--json", timeout=60)
    first, rest = r.stdout.split("\n", 1)
    final = json.loads(rest[rest.index("{"):])
    expected = {p for p, v in rep["points"].items() if not v.get("opt_in")}
    assert f"ready ({len(expected)} points)" in first, r.stdout
    assert set(final["points"]) == expected, final["points"]
    assert final["netns"] == [scratch_netns]
    installed.seconds["run"] = time.monotonic() - t0
    print(f"wheel test seconds: {installed.seconds}")
