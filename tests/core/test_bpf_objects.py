"""In a checkout, object_path finds build/bpf's objects and never compiles: a missing or
stale object is a BpfError naming `make bpf` (the wheel's side: test_wheel.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from latscope.bpf import build as bpf_build
from latscope.bpf import libbpf
from latscope.paths import REPO_ROOT, bpf_build_dir, source_checkout


def test_checkout_objects_fresh_missing_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert source_checkout() == REPO_ROOT
    built = bpf_build_dir() / "sock.bpf.o"
    if bpf_build.outdated(REPO_ROOT, built):
        pytest.skip("build/bpf is not fresh: run `make bpf`")
    assert libbpf.object_path("sock") == built
    monkeypatch.setenv("LATSCOPE_BPF_BUILD", str(tmp_path))
    with pytest.raises(libbpf.BpfError, match=r"sock.bpf.o missing: run `make bpf`"):
        libbpf.object_path("sock")
    shutil.copy2(built, tmp_path / "sock.bpf.o")
    assert libbpf.object_path("sock") == tmp_path / "sock.bpf.o"
    src = REPO_ROOT / "producers" / "bpf" / "sock.bpf.c"
    os.utime(tmp_path / "sock.bpf.o", (0, src.stat().st_mtime - 10))
    with pytest.raises(libbpf.BpfError, match=r"older than producers/bpf/sock.bpf.c.*make bpf"):
        libbpf.object_path("sock")
    with pytest.raises(libbpf.BpfError, match=r"no BPF program 'nosuch'"):
        libbpf.object_path("nosuch")
