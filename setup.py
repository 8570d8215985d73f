"""Wires the two compiled modules; the C core's build logic lives in src/_native/build.py.

- ``sslsock._native`` (cffi): the C core over OpenSSL.
- ``sslsock._fastio`` (CPython C API, no OpenSSL): every read and write, and the C objects'
  guard, called without cffi's per-call overhead (src/_native/fastio.c); sslsock.aio's
  inboxes, fed a batch at a time, and the resumption of the tasks waiting on them
  (src/_native/fastio_inbox.c).
"""
import os
import platform

from setuptools import Extension, setup

_san = os.environ.get("SSLSOCK_SANITIZE", "").strip()
_san_flags = ([f"-fsanitize={_san}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
               "-g"] if _san else [])

setup(
    cffi_modules=["src/_native/build.py:ffibuilder"],
    # (PyPy runs the cffi path instead: sslsock works without _fastio)
    ext_modules=[] if platform.python_implementation() != "CPython" else [
        Extension(
            "sslsock._fastio",
            sources=["src/_native/fastio.c", "src/_native/fastio_inbox.c"],
            include_dirs=["src/_native"],
            depends=["src/_native/sslsock_core.h", "src/_native/fastio.h"],
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra",
                                "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                                "-Wno-cast-function-type"] + _san_flags,
            extra_link_args=_san_flags,
        )
    ],
)
