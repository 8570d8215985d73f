"""Files that must be whole, private and durable: certificates and keys of the store, the
certificates the generator and the command line write, session-ticket keys.  One way to
write them, for all:

1. the bytes go to a temporary file beside the final one, under a random name, created
   with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted file or link is never written through)
   and given exactly its mode (0600 for anything private, 0644 otherwise, whatever the
   umask), then flushed and fsync'ed;
2. it takes the final name in one step: ``os.replace`` when the file may be replaced, a
   hard link when it must not exist yet (no check-then-write race: the link fails if the
   name was taken meanwhile);
3. the directory is fsync'ed, so that the new name survives a crash too.

A reader sees the old file or the new one, never a part; a crash leaves at most a
temporary ``.NAME.*.tmp`` file, never a truncated key.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from sslsock._core.errors import CertificateError


def stage(path: Path, data: bytes, *, private: bool) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (step 1); return its path."""
    mode = 0o600 if private else 0o644
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except OSError as e:
        raise CertificateError(f"cannot create a file in {path.parent} "
                               f"({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # exactly this mode, whatever the umask
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def install(moves: Iterable[tuple[Path, Path]], *, replace: bool) -> None:
    """Give each staged file its final name, in the order given (steps 2 and 3).  Without
    ``replace``, a final name that exists already is an error (and that temporary file is
    removed); the others installed before it stay."""
    dirs = set()
    for tmp, path in moves:
        try:
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
                tmp.unlink()
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise CertificateError(f"{path} already exists: not replacing it") from None
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise CertificateError(f"cannot write {path} ({e.strerror or e})") from None
        dirs.add(path.parent)
    for d in dirs:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the new names survive a crash
        finally:
            os.close(fd)


def write(path: Path, data: bytes, *, private: bool, replace: bool) -> None:
    """Write one file the safe way (all three steps)."""
    install([(stage(path, data, private=private), path)], replace=replace)
