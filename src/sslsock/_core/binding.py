"""The only module that imports the compiled cffi module (the lowest floor of the
package: it imports nothing of sslsock's but that module).  ``lib`` never leaves the
package.
"""
from __future__ import annotations

from typing import Any

from sslsock._native import ffi, lib

__all__ = ["ffi", "lib", "new_err", "text", "openssl_versions"]


def new_err() -> Any:
    return ffi.new("ss_err *")


def text(chars: Any) -> str:
    return str(ffi.string(chars).decode("utf-8", "replace"))


def openssl_versions() -> tuple[str, str]:
    """(compiled against, linked at run time)."""
    return (
        ffi.string(lib.ss_openssl_version_compiled()).decode(),
        ffi.string(lib.ss_openssl_version_linked()).decode(),
    )
