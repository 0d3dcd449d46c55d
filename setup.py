"""What pyproject.toml cannot say: the C extension, and the BPF objects a wheel carries.

A built package needs no compiler or source tree at run time: ``build_bpf`` (a sub-command
of ``build``) compiles every BPF program with the definitions in ``bpf/build.py`` into
``build/bpf`` (incremental) and, for a wheel, copies the objects into the package as
``latscope/bpf/objects/*.bpf.o``. An editable install (``pip install -e .``) leaves them in
``build/bpf``, where a source checkout loads them from (``make bpf`` refreshes them).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from setuptools import Command, Extension, setup
from setuptools.command.build import build
from setuptools.errors import ExecError

ROOT = Path(__file__).resolve().parent


def _bpf_build():  # -> the bpf/build.py module, loaded by path (the package isn't importable yet)
    spec = importlib.util.spec_from_file_location("_latscope_bpf_build", ROOT / "bpf" / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bpfb = _bpf_build()


class build_bpf(Command):
    """Compile the CO-RE BPF objects into build/bpf; unless in place, copy them into the
    package (build_lib/latscope/bpf/objects) so the wheel carries them."""

    description = "compile the BPF objects (clang -target bpf, CO-RE)"
    user_options: ClassVar = [("inplace", "i", "only build/bpf, what a source checkout loads"),
                              ("force", "f", "recompile every object")]
    boolean_options: ClassVar = ["inplace", "force"]

    def initialize_options(self) -> None:
        self.inplace = False
        self.force = False
        self.editable_mode = False   # set by setuptools for `pip install -e .`
        self.build_lib: str | None = None

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))
        if self.editable_mode:
            self.inplace = True

    def _package_dir(self) -> Path:
        assert self.build_lib is not None
        return Path(self.build_lib) / "latscope" / "bpf" / bpfb.PACKAGE_DIR

    def run(self) -> None:
        try:
            objs = bpfb.build(ROOT, ROOT / "build" / "bpf", force=bool(self.force),
                              log=self.announce_info)
        except bpfb.BuildError as e:
            raise ExecError(str(e)) from None
        if self.inplace:
            return
        dest = self._package_dir()
        if dest.exists():
            shutil.rmtree(dest)      # no object of a deleted source lingers in the wheel
        dest.mkdir(parents=True)
        for o in objs:
            shutil.copy2(o, dest / o.name)

    def announce_info(self, msg: str) -> None:
        self.announce(msg, level=2)   # distutils' INFO

    def get_outputs(self) -> list[str]:
        if self.inplace:
            return []
        return [str(self._package_dir() / f"{n}.bpf.o") for n in bpfb.sources(ROOT)]

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [str(p.relative_to(ROOT))
                for p in (*bpfb.sources(ROOT).values(), *bpfb.headers(ROOT))]


class build_with_bpf(build):
    sub_commands: ClassVar = [*build.sub_commands, ("build_bpf", None)]


_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def _native(package: str, folder: str, files: list[str]) -> Extension:
    """``latscope.<package>._native`` from ``<folder>/native/``: one module.c (the table),
    one file per job, native.h between them."""
    return Extension(f"latscope.{package}._native",
                     sources=[f"{folder}/native/{f}" for f in ["module.c", *files]],
                     depends=[f"{folder}/native/native.h", "bpf/native/ring.h"], extra_compile_args=_CFLAGS)


setup(
    cmdclass={"build": build_with_bpf, "build_bpf": build_bpf},
    ext_modules=[
        _native("bpf", "bpf", ["ring.c", "percpu.c"]),
        _native("stream", "stream", ["decode.c", "encode.c", "segments.c", "shapes.c"]),
        _native("stats", "stats", ["sketch.c"]),
        _native("sinks", "sinks", ["line.c"]),
        _native("producers", "producers", ["maps.c", "decode.c", "grouping.c", "encode.c",
                                                   "batching.c"]),
    ],
)
