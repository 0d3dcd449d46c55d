"""Only the C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]


def _native(package: str, folder: str, files: list[str]) -> Extension:
    """``latscope.<package>._native`` from ``<folder>/native/``: one module.c (the table),
    one file per job, native.h between them."""
    return Extension(f"latscope.{package}._native",
                     sources=[f"{folder}/native/{f}" for f in ["module.c", *files]],
                     depends=[f"{folder}/native/native.h"], extra_compile_args=_CFLAGS)


setup(ext_modules=[
    _native("stream", "stream", ["decode.c", "encode.c", "segments.c", "shapes.c"]),
    _native("stats", "stats", ["sketch.c"]),
    _native("sinks", "sinks", ["line.c"]),
])
