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

Keys rotate on a schedule (:data:`DEFAULT_ROTATION`, an hour): a listener reading a file
rotates it once it is older than that (one process does, under a lock; the others read
the result), and keys held in memory (``sslsock serve --workers`` without a file) move on
by a one-way ratchet that every process derives alike.  Enough previous keys are kept for
the tickets they issued to stay valid (:data:`TICKET_LIFETIME`), and no longer: a key
that is gone cannot be recomputed from what remains, which is what gives resumed TLS 1.2
sessions forward secrecy past that time.

A rotation writes a temporary file under a random name (``O_EXCL | O_NOFOLLOW``, mode
0600), syncs it, renames it over the key file and syncs the directory; rotations of one
file are serialised by a lock file beside it, so none loses the key of another.

No message, log line or exception ever contains key bytes.
"""
from __future__ import annotations

import fcntl
import hashlib
import math
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any, Optional, Union

from sslsock import _files
from sslsock._core.binding import lib
from sslsock._core.errors import CertificateError

KEY_LEN: int = lib.SS_TICKET_KEY_LEN  # name 16 + AES 32 + HMAC 32
MAX_KEYS: int = lib.SS_TICKET_KEYS_MAX
DEFAULT_KEEP = 2  # previous keys kept by a rotation
FILE_NAME = "session-ticket-keys"
#: How long a ticket stays valid (OpenSSL's default session time-out, which the server
#: contexts keep): a key must decrypt for this long after it stopped encrypting.
TICKET_LIFETIME = 7200
#: Seconds between two scheduled rotations.
DEFAULT_ROTATION = 3600.0
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


def keep_for(interval: float) -> int:
    """Previous keys to keep when rotating every ``interval`` seconds: enough for a ticket
    issued just before a rotation to stay valid for its whole lifetime."""
    return min(MAX_KEYS - 1, max(1, math.ceil(TICKET_LIFETIME / max(interval, 1e-3))))


def _lock(path: Path) -> int:
    """Hold the rotation lock of ``path`` (a file beside it); returns its descriptor."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise CertificateError(f"{lock}: cannot open the rotation lock ({e.strerror or e}): "
                               "it must be a regular file (not a link) in a directory you "
                               "can write") from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def rotate(path: Union[str, Path], keep: int = DEFAULT_KEEP, *,
           older_than: Optional[float] = None) -> int:
    """Put a new key first in ``path`` (created if missing), keeping ``keep`` previous ones;
    written to a new temporary file (0600, random name, never through a link), synced,
    then renamed over, so readers see the old file or the new one, never half of one.
    Rotations of one file wait for each other (a lock file beside it), so none loses the
    key another one added.  ``older_than``: rotate only if the file is at least that many
    seconds old (a scheduled rotation: of several processes, the first one does it).
    Returns how many keys the file holds (0: not rotated, still fresh)."""
    path = Path(path)
    if not 0 <= keep < MAX_KEYS:
        raise CertificateError(f"keep {keep} previous keys? 0 to {MAX_KEYS - 1}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = _lock(path)
    try:
        old = bytearray()
        if path.exists():
            if older_than is not None and time.time() - path.stat().st_mtime < older_than:
                return 0
            old = load(path)
        keys = [new_key()] + [bytes(old[i:i + KEY_LEN]) for i in range(0, len(old), KEY_LEN)]
        old[:] = bytes(len(old))
        keys = keys[:keep + 1]
        _files.write(path, (_HEADER + "".join(k.hex() + "\n" for k in keys)).encode(),
                     private=True, replace=True)
        return len(keys)
    finally:
        os.close(lock)  # (closing releases the lock)


class Ratchet:
    """Keys held in memory that rotate every ``interval`` seconds by a one-way ratchet:
    the state of period n+1 is a hash of the state of period n, and each period's key is
    another hash of its state.  Processes forked from one holder (the workers of
    ``sslsock serve --workers``) derive the same keys without talking to each other; the
    state of a past period, and the key of a period older than the tickets still valid,
    are not kept, and cannot be computed from what is."""

    def __init__(self, interval: float = DEFAULT_ROTATION, *, clock: Any = time.time) -> None:
        if not interval > 0:
            raise CertificateError(f"ticket key rotation every {interval!r} s? give a "
                                   "positive number of seconds")
        self.interval = float(interval)
        self._clock = clock
        self._keep = keep_for(self.interval)
        self._epoch = int(clock() // self.interval)
        self._state = bytearray(secrets.token_bytes(32))
        self._recent: list[bytes] = [self._key()]  # current first

    def _key(self) -> bytes:
        s = bytes(self._state)
        return (hashlib.sha512(b"sslsock ticket key" + s).digest()
                + hashlib.sha256(b"sslsock ticket key, end" + s).digest()[:KEY_LEN - 64])

    def epoch(self) -> int:
        return int(self._clock() // self.interval)

    def advance(self) -> bool:
        """Move the ratchet to the current period; whether the keys changed."""
        now = self.epoch()
        steps = now - self._epoch
        if steps <= 0:
            return False
        new: list[bytes] = []
        for i in range(steps):
            self._state[:] = hashlib.sha256(b"sslsock ratchet" + bytes(self._state)).digest()
            if steps - i <= self._keep + 1:  # older periods' tickets have expired
                new.insert(0, self._key())
        self._recent = (new + self._recent)[:self._keep + 1]
        self._epoch = now
        return True

    def keys(self) -> bytearray:
        return bytearray(b"".join(self._recent))


class TicketKeys:
    """Where a listener's ticket keys come from: a file (re-read when it changes, rotated
    when older than ``rotation`` seconds; ``None``: never), a :class:`Ratchet` (``sslsock
    serve --workers`` without a file: shared by its workers, rotating in memory), or fixed
    bytes (rotated by whoever gives them)."""

    def __init__(self, source: Union[str, Path, bytes, bytearray, Ratchet], store: Any = None,
                 rotation: Optional[float] = DEFAULT_ROTATION) -> None:
        self.path: Optional[Path] = None
        self._fixed: Optional[bytes] = None
        self.ratchet: Optional[Ratchet] = source if isinstance(source, Ratchet) else None
        if rotation is not None and not rotation > 0:
            raise CertificateError(f"ticket key rotation every {rotation!r} s? give a "
                                   "positive number of seconds, or None (never)")
        self.rotation = rotation
        self.rotation_failed: Optional[str] = None
        if isinstance(source, Ratchet):
            pass
        elif isinstance(source, (bytes, bytearray)):
            parse(b"\n".join(bytes(source[i:i + KEY_LEN]).hex().encode()
                             for i in range(0, len(source), KEY_LEN)), "ticket_keys")
            self._fixed = bytes(source)
        elif source == "store":
            self.path = default_path(store)
        else:
            self.path = Path(source).expanduser()
        self.seen: Optional[tuple[int, int, int]] = None
        self._epoch = -1  # the ratchet's period whose keys this listener has
        self.failed: Any = None  # the file version last reported as unusable
        self._last = bytearray()  # the keys last read, for a new context when the file breaks
        # names in-memory keys in a context cache key (never the keys themselves)
        self._token = secrets.token_hex(8)

    def describe(self) -> str:
        return str(self.path) if self.path else f"keys shared in memory ({self._token})"

    def tick(self) -> None:
        """A scheduled rotation, if one is due: the file's (one process of those sharing it
        does it), or the ratchet's.  A file that cannot be rotated is reported once per
        reason (:attr:`rotation_failed`), and its keys keep serving."""
        if self.ratchet is not None or self.path is None or self.rotation is None:
            return
        try:
            rotate(self.path, keep_for(self.rotation), older_than=self.rotation)
            self.rotation_failed = None
        except (OSError, CertificateError) as e:
            why = f"{self.path}: the scheduled rotation of the session-ticket keys failed: {e}"
            if why != self.rotation_failed:
                self.rotation_failed = why
                raise CertificateError(why) from None

    def changed(self) -> bool:
        if self.ratchet is not None:
            return self.ratchet.epoch() != self._epoch
        if self.path is None:
            return False
        try:
            return fingerprint(self.path) != self.seen
        except OSError:
            return self.seen is not None

    def read(self) -> bytearray:
        """The keys now (and remember which version of the file they came from)."""
        if self.ratchet is not None:
            self.ratchet.advance()
            self._epoch = self.ratchet._epoch
            return self.ratchet.keys()
        if self._fixed is not None:
            return bytearray(self._fixed)
        assert self.path is not None
        seen = fingerprint(self.path) if self.path.exists() else None
        keys = load(self.path)
        self.seen = seen
        self.failed = None
        self._last[:] = bytes(len(self._last))
        self._last = bytearray(keys)
        return keys

    def version(self) -> Any:
        """Which version of the file is there now (None: none can be seen)."""
        try:
            return fingerprint(self.path) if self.path is not None else None
        except OSError:
            return None

    def last_good(self) -> bytearray:
        """A copy of the keys last read successfully (empty: none yet)."""
        return bytearray(self._last)
