"""Shared session-ticket keys: one file, read by every process (and host) of a service.

A TLS server encrypts the session tickets it gives clients with a key of its own; with
OpenSSL's default that key is random per process, so a client that comes back to another
worker process (or another host behind the same balancer) cannot resume.  Processes that
read the same key file encrypt and decrypt tickets alike.

The file (``session-ticket-keys`` in the certificate store by default, mode 0600) holds one
key per line, in hex: 16 bytes of key name, 32 of AES-256 key, 32 of HMAC-SHA256 key.  The
first line encrypts new tickets; the others still decrypt the tickets they made (a client
resuming with one gets a new ticket under the current key).  ``sslsock cert tickets rotate``
puts a new key first and keeps the previous ones (two by default).  Running listeners
notice a rewritten file within seconds (see :mod:`sslsock._deploy.renewal`).

No message, log line or exception ever contains key bytes.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any, Optional, Union

from sslsock._core.errors import CertificateError

KEY_LEN = 80  # name 16 + AES 32 + HMAC 32 (the C core's SS_TICKET_KEY_LEN)
MAX_KEYS = 16
DEFAULT_KEEP = 2  # previous keys kept by a rotation
FILE_NAME = "session-ticket-keys"
_HEADER = ("# sslsock session-ticket keys: the first line encrypts new tickets, the others "
           "still decrypt.\n# Keep this file mode 0600; rotate with: sslsock cert tickets "
           "rotate\n")


def default_path(store: Any) -> Path:
    """Where a store keeps its ticket keys."""
    return Path(store.path) / FILE_NAME


def fingerprint(path: Union[str, Path]) -> tuple[int, int, int]:
    """What changes when the file is rewritten (no byte of it is read): inode, size, time."""
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def parse(data: bytes, source: str) -> bytearray:
    """The keys of a key file's contents, concatenated (current first).  Errors name the
    line, never its contents."""
    keys = bytearray()
    for n, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            key = bytes.fromhex(line.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CertificateError(
                f"{source}, line {n}: not a hexadecimal session-ticket key; make a new file "
                "with: sslsock cert tickets rotate") from None
        if len(key) != KEY_LEN:
            raise CertificateError(
                f"{source}, line {n}: a session-ticket key is {KEY_LEN} bytes "
                f"({2 * KEY_LEN} hex digits), this one has {len(key)}; make a new file with: "
                "sslsock cert tickets rotate")
        keys += key
        if len(keys) > MAX_KEYS * KEY_LEN:
            raise CertificateError(f"{source}: more than {MAX_KEYS} session-ticket keys")
    if not keys:
        raise CertificateError(
            f"{source}: no session-ticket key in it; make one with: sslsock cert tickets rotate")
    return keys


def load(path: Union[str, Path]) -> bytearray:
    """Read a key file, refusing one that other users can read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CertificateError(
            f"{path}: no session-ticket key file; create it with: sslsock cert tickets rotate"
            + ("" if path.name == FILE_NAME else f" --file {path}")) from None
    except OSError as e:
        raise CertificateError(f"{path}: cannot read it ({e.strerror or e})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CertificateError(
            f"{path}: session-ticket keys readable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}) let them decrypt resumed sessions: run "
            f"chmod 600 {path}, then rotate the keys (sslsock cert tickets rotate)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CertificateError(f"{path}: cannot read it ({e.strerror or e})") from None
    return parse(data, str(path))


def new_key() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def rotate(path: Union[str, Path], keep: int = DEFAULT_KEEP) -> int:
    """Put a new key first in ``path`` (created if missing), keeping ``keep`` previous ones;
    written to a temporary file (0600) then renamed over, so readers see the old file or
    the new one, never half of one.  Returns how many keys the file holds."""
    path = Path(path)
    if not 0 <= keep < MAX_KEYS:
        raise CertificateError(f"keep {keep} previous keys? 0 to {MAX_KEYS - 1}")
    old = bytearray()
    if path.exists():
        old = load(path)
    keys = [new_key()] + [bytes(old[i:i + KEY_LEN]) for i in range(0, len(old), KEY_LEN)]
    keys = keys[:keep + 1]
    text = _HEADER + "".join(k.hex() + "\n" for k in keys)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(keys)


class TicketKeys:
    """Where a listener's ticket keys come from: a file (re-read when it changes) or fixed
    bytes (``sslsock serve --workers`` without a file: made once, shared by its workers)."""

    def __init__(self, source: Union[str, Path, bytes, bytearray], store: Any = None) -> None:
        self.path: Optional[Path] = None
        self._fixed: Optional[bytes] = None
        if isinstance(source, (bytes, bytearray)):
            parse(b"\n".join(bytes(source[i:i + KEY_LEN]).hex().encode()
                             for i in range(0, len(source), KEY_LEN)), "ticket_keys")
            self._fixed = bytes(source)
        elif source == "store":
            self.path = default_path(store)
        else:
            self.path = Path(source).expanduser()
        self.seen: Optional[tuple[int, int, int]] = None
        # names in-memory keys in a context cache key (never the keys themselves)
        self._token = secrets.token_hex(8)

    def describe(self) -> str:
        return str(self.path) if self.path else f"keys shared in memory ({self._token})"

    def changed(self) -> bool:
        if self.path is None:
            return False
        try:
            return fingerprint(self.path) != self.seen
        except OSError:
            return self.seen is not None

    def read(self) -> bytearray:
        """The keys now (and remember which version of the file they came from)."""
        if self._fixed is not None:
            return bytearray(self._fixed)
        assert self.path is not None
        seen = fingerprint(self.path) if self.path.exists() else None
        keys = load(self.path)
        self.seen = seen
        return keys
