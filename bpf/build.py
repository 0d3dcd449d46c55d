"""How LatScope's CO-RE BPF objects are compiled: the one definition of sources and flags.

Used at build time only: by ``setup.py`` (a wheel carries the objects as package data,
``latscope/bpf/objects``; an editable install and ``make bpf`` put them in ``build/bpf``) and
by ``python bpf/build.py``. Nothing at run time compiles. Standard library only, because
setup.py loads this file by path, before the package (or its dependencies) can be imported.

Every ``producers/bpf/*.bpf.c`` and ``sync/bpf/*.bpf.c`` becomes ``<out>/<name>.bpf.o``
(clang ``-target bpf``) against a ``vmlinux.h`` dumped from the build machine's kernel BTF
(``bpftool btf dump file /sys/kernel/btf/vmlinux format c``); CO-RE relocations make the
objects load on other kernels with BTF. Environment: ``BPF_CLANG`` (default ``clang``),
``BPF_VMLINUX`` (the BTF to dump, default the running kernel's).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SOURCE_DIRS = ("producers/bpf", "sync/bpf")          # every *.bpf.c in them is one object
INCLUDE_DIRS = ("bpf/include", "producers/bpf", "sync/bpf")
CFLAGS = ("-O2", "-g", "-Wall", "-Wno-unused-function", "-target", "bpf")
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390",
         "ppc64le": "powerpc", "riscv64": "riscv"}
PACKAGE_DIR = "objects"      # inside latscope/bpf/ of an installed wheel


class BuildError(RuntimeError):
    """A prerequisite (clang, bpftool, kernel BTF) is missing or a compile failed."""


def sources(root: Path) -> dict[str, Path]:
    """name -> its ``<name>.bpf.c`` under ``root`` (the source tree)."""
    return {p.name[: -len(".bpf.c")]: p
            for d in SOURCE_DIRS for p in sorted((root / d).glob("*.bpf.c"))}


def headers(root: Path) -> list[Path]:
    """Every header an object may include: a change to any of them rebuilds all objects."""
    return [p for d in INCLUDE_DIRS for p in sorted((root / d).glob("*.h"))]


def outdated(root: Path, obj: Path) -> list[Path]:
    """The inputs newer than ``obj`` (all of them when it does not exist): its ``.bpf.c``,
    every header, and this file (the flags)."""
    name = obj.name[: -len(".bpf.o")]
    src = sources(root).get(name)
    this = root / "bpf" / "build.py"
    inputs = [*([src] if src else []), *headers(root), *([this] if this.exists() else [])]
    if not obj.exists():
        return inputs
    built = obj.stat().st_mtime
    return [p for p in inputs if p.stat().st_mtime > built]


def _tool(env: str, default: str, what: str) -> str:
    exe = shutil.which(os.environ.get(env, default))
    if exe is None:
        raise BuildError(f"{os.environ.get(env, default)} not found: building LatScope's BPF "
                         f"objects needs {what} (Debian: apt-get install clang llvm bpftool, "
                         "or `make apt`)")
    return exe


def _vmlinux_h(out_dir: Path) -> Path:
    """``out_dir/vmlinux.h`` from the kernel's BTF, regenerated when the BTF is newer."""
    btf = Path(os.environ.get("BPF_VMLINUX", "/sys/kernel/btf/vmlinux"))
    header = out_dir / "vmlinux.h"
    if not btf.exists():
        raise BuildError(f"{btf} missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), so "
                         "vmlinux.h cannot be generated; build on a kernel with BTF or set "
                         "BPF_VMLINUX to a BTF file (e.g. a vmlinux with .BTF)")
    if header.exists() and header.stat().st_mtime >= btf.stat().st_mtime:
        return header
    bpftool = _tool("BPF_BPFTOOL", "bpftool", "bpftool")
    r = subprocess.run([bpftool, "btf", "dump", "file", str(btf), "format", "c"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"bpftool btf dump file {btf} failed: {r.stderr.strip()}")
    tmp = header.with_suffix(f".h.{os.getpid()}.tmp")
    tmp.write_text(r.stdout)
    os.replace(tmp, header)
    return header


def compile_command(root: Path, src: Path, out: Path, clang: str = "clang") -> list[str]:
    """The clang command line, run in ``root``, that turns ``src`` into the CO-RE object
    ``out``. Paths are relative to ``root`` where they can be, so the debug info (BTF line
    info) names ``producers/bpf/x.bpf.c``, not the directory a wheel happened to be built in."""
    def rel(p: Path) -> str:
        return os.path.relpath(p, root) if p.resolve().is_relative_to(root.resolve()) else str(p)

    arch = _ARCH.get(platform.machine(), platform.machine())
    incs = [f"-I{d}" for d in (rel(out.parent), *INCLUDE_DIRS)]
    return [clang, *CFLAGS, f"-D__TARGET_ARCH_{arch}", *incs, "-c", rel(src), "-o", str(out)]


def build(root: Path, out_dir: Path, *, force: bool = False,
          log: Callable[[str], None] | None = None) -> list[Path]:
    """Compile every object under ``root`` into ``out_dir`` (only the outdated ones unless
    ``force``); returns all object paths. Outputs are written atomically, so a concurrent
    loader never opens half an object."""
    srcs = sources(root)
    if not srcs:
        raise BuildError(f"no *.bpf.c under {root}/{{{','.join(SOURCE_DIRS)}}}")
    out_dir.mkdir(parents=True, exist_ok=True)
    header = _vmlinux_h(out_dir)
    objs = {name: out_dir / f"{name}.bpf.o" for name in srcs}
    todo = [n for n, o in objs.items()
            if force or outdated(root, o) or o.stat().st_mtime < header.stat().st_mtime]
    if todo:
        clang = _tool("BPF_CLANG", "clang", "clang (with the BPF target)")
        if log:
            log(f"compiling BPF objects into {out_dir}: {', '.join(todo)}")

        def one(name: str) -> str | None:
            tmp = objs[name].with_suffix(f".{os.getpid()}.tmp")
            r = subprocess.run(compile_command(root, srcs[name], tmp, clang), cwd=root,
                               capture_output=True, text=True)
            if r.returncode != 0:
                tmp.unlink(missing_ok=True)
                return f"{srcs[name]}:\n{r.stderr.strip()}"
            os.replace(tmp, objs[name])
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            errors = [e for e in pool.map(one, todo) if e]
        if errors:
            raise BuildError("BPF compile failed:\n" + "\n".join(errors))
    return list(objs.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="compile LatScope's BPF objects (make bpf)")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="source tree (default: the checkout holding this file)")
    ap.add_argument("--out", type=Path, help="output directory (default: <root>/build/bpf)")
    ap.add_argument("--force", action="store_true", help="rebuild every object")
    args = ap.parse_args(argv)
    try:
        build(args.root, args.out or args.root / "build" / "bpf", force=args.force, log=print)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
