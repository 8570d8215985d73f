"""The only module that imports the compiled cffi module.

It turns C error records into exceptions (through :mod:`sslsock._errors`, in one place)
and exposes the few helpers the object face needs.  ``lib`` never leaves the package.
"""
from __future__ import annotations

from typing import Any, NoReturn

from . import _errors
from ._native import ffi, lib

__all__ = ["ffi", "lib", "new_err", "raise_err", "check", "text"]


def new_err() -> Any:
    return ffi.new("ss_err *")


def text(chars: Any) -> str:
    return str(ffi.string(chars).decode("utf-8", "replace"))


def raise_err(rc: int, err: Any) -> NoReturn:
    raise _errors.from_record(rc, text(err.message), int(err.sys_code), text(err.detail))


def check(rc: int, err: Any) -> None:
    if rc != 0:
        raise_err(rc, err)


def openssl_versions() -> tuple[str, str]:
    """(compiled against, linked at run time)."""
    return (
        ffi.string(lib.ss_openssl_version_compiled()).decode(),
        ffi.string(lib.ss_openssl_version_linked()).decode(),
    )
