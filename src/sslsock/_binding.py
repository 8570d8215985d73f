"""The only module that imports the compiled cffi module.

It turns C error records into exceptions (through :mod:`sslsock._errors`, in one place)
and exposes the few helpers the object face needs.  ``lib`` never leaves the package.
"""
from __future__ import annotations

from typing import Any, NoReturn

from . import _errors
from ._native import ffi, lib

__all__ = ["ffi", "lib", "new_err", "raise_err", "check", "text", "try_write", "address"]


def _held_calls() -> Any:
    """The core's calls that never wait, bound so that Python's GIL stays held.

    cffi releases the GIL around every call.  For a call that cannot block, releasing it
    only invites a hand-off: under load another thread takes the GIL, and the caller waits
    to get it back (a context switch or two per message).  ctypes' PyDLL calls a function
    of the same shared object without releasing the GIL.  Only ss_conn_try_write goes
    through it: it takes no lock that a waiting call holds, and never waits.
    """
    import ctypes

    from . import _native

    try:
        dll = ctypes.PyDLL(_native.__file__)
        fn = dll.ss_conn_try_write
    except (OSError, AttributeError):  # a build that does not export it: the cffi path
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


#: ss_conn_try_write(conn_address, data, len, err_address) with the GIL held, or None.
try_write = None  # _held_calls()


def address(ptr: Any) -> int:
    """A cffi pointer as the integer ctypes takes."""
    return int(ffi.cast("uintptr_t", ptr))


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
