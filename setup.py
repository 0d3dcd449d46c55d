"""Only the C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "latscope.stream._native",
    sources=["stream/native/module.c", "stream/native/decode.c", "stream/native/encode.c",
             "stream/native/segments.c", "stream/native/shapes.c",
             "stream/native/sketch.c", "stream/native/line.c"],
    depends=["stream/native/native.h"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers"],
)])
