"""The exception tree, and the one place where C error records become exceptions.

Every exception raised by sslsock derives from :class:`Error`; most also derive from the
builtin a caller would naturally catch (``TimeoutError``, ``ConnectionError``,
``ValueError``, ``OSError``).  Each carries the four fields WLanguage's ``ErrorInfo``
exposes: a code (:class:`ErrorCode`), a message saying what was asked and what to do, and
the system side (OpenSSL's or the OS's reason, and its numeric code).
"""
from __future__ import annotations

import enum
import errno as _errno
import socket as _socket
from typing import Any, NoReturn, Optional

from sslsock._core.binding import lib as _core
from sslsock._core.binding import text


class ErrorCode(enum.IntEnum):
    """Stable error codes, readable as ``ErrorInfo(errCode)``.

    The values below 100 are the C core's negative return codes (``SS_E_*``, sign
    dropped), read from the compiled module; 100 and above are raised by the Python layers
    only.
    """

    OK = _core.SS_OK
    TIMEOUT = -_core.SS_E_TIMEOUT
    PEER_CLOSED = -_core.SS_E_PEER_CLOSED
    RESET = -_core.SS_E_RESET
    TLS = -_core.SS_E_TLS
    VERIFY = -_core.SS_E_VERIFY
    SYSTEM = -_core.SS_E_SYSTEM
    FRAME = -_core.SS_E_FRAME
    TOO_BIG = -_core.SS_E_TOO_BIG
    ADDRESS = -_core.SS_E_ADDRESS
    IN_USE = -_core.SS_E_IN_USE
    CLOSED = -_core.SS_E_CLOSED
    NO_MEMORY = -_core.SS_E_NOMEM
    INVALID = -_core.SS_E_INVALID
    CONFIG = -_core.SS_E_CONFIG
    # Python-side codes
    CERTIFICATE = 100
    OPTIONS = 101
    NAME = 102
    PORT = 103
    ARGUMENT = 104
    NO_CLIENT = 105


class Error(Exception):
    """Base of every sslsock exception.

    ``message`` says what went wrong in the caller's terms; ``system_message`` and
    ``system_code`` carry the underlying OpenSSL or OS reason when there is one.
    """

    code: ErrorCode = ErrorCode.SYSTEM

    def __init__(
        self,
        message: str,
        *,
        code: Optional[ErrorCode] = None,
        system_code: int = 0,
        system_message: str = "",
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.system_code = system_code
        self.system_message = system_message
        super().__init__(message)
        if isinstance(self, OSError) and system_code:
            _os_fields(self, system_code, system_message)

    def __str__(self) -> str:
        if self.system_message and self.system_message not in self.message:
            return f"{self.message} ({self.system_message})"
        return self.message

    # OSError-derived subclasses would otherwise replace str() with "[Errno ...]".
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


def _os_fields(e: OSError, code: int, reason: str) -> None:
    """What ``except OSError as e: e.errno`` expects (errno, or EAI_* for the resolver)."""
    e.errno = code
    e.strerror = reason


class ArgumentError(Error, ValueError):
    """A bad argument: wrong value or range (port, name, mode, size ...)."""

    code = ErrorCode.ARGUMENT


class CertificateError(Error, ValueError):
    """The certificate identifier, the store, or a certificate file is not usable."""

    code = ErrorCode.CERTIFICATE


class OptionsError(Error, ValueError):
    """The SSL-options mask cannot be honoured (unknown bits, contradictions, no version)."""

    code = ErrorCode.OPTIONS


class ProgrammingError(Error):
    """Errors WLanguage treats as fatal: the named face raises them instead of returning
    False (unknown socket name, undefined constant)."""


class SocketNameError(ProgrammingError, KeyError):
    """A socket name that is not registered (a programming error: it raises)."""

    code = ErrorCode.NAME

    def __str__(self) -> str:  # KeyError would quote the message
        return Error.__str__(self)


class UnknownConstantError(ProgrammingError, ValueError):
    """A value that is none of the constants a parameter takes."""

    code = ErrorCode.ARGUMENT


class NameTakenError(Error, ValueError):
    """Creating a socket under a name that is already registered (returns False)."""

    code = ErrorCode.NAME


class SocketTimeout(Error, TimeoutError):
    """Nothing arrived (or could be sent) within the time allowed; the socket stays usable."""

    code = ErrorCode.TIMEOUT

    def __str__(self) -> str:
        return Error.__str__(self)


class ConnectionFailure(Error, ConnectionError):
    """Base of connection-level failures; after one the connection is unusable."""

    code = ErrorCode.SYSTEM

    def __str__(self) -> str:
        return Error.__str__(self)


class PeerClosed(ConnectionFailure):
    """The peer closed the connection (cleanly or not) ; no more data will come."""

    code = ErrorCode.PEER_CLOSED


class ConnectionReset(ConnectionFailure):
    """The peer reset the connection or vanished mid-exchange."""

    code = ErrorCode.RESET


class TLSError(ConnectionFailure):
    """The TLS layer failed: handshake, protocol alert, record error."""

    code = ErrorCode.TLS


class VerificationError(TLSError):
    """The peer's certificate did not verify; ``system_message`` has OpenSSL's reason."""

    code = ErrorCode.VERIFY


class FrameError(ConnectionFailure):
    """A malformed or oversized frame for the transmission mode; the connection is broken."""

    code = ErrorCode.FRAME


class SocketClosed(Error, OSError):
    """The socket was closed locally (by SocketClose / close())."""

    code = ErrorCode.CLOSED

    def __str__(self) -> str:
        return Error.__str__(self)


class AddressError(Error, OSError):
    """Name resolution or binding failed (unknown host, address in use ...)."""

    code = ErrorCode.ADDRESS

    def __str__(self) -> str:
        return Error.__str__(self)


class AddressInUse(AddressError):
    code = ErrorCode.IN_USE


class ConnectionRefused(AddressError, ConnectionRefusedError):
    """No server listens at that address and port: ``except ConnectionRefusedError`` (and
    ``except ConnectionError``) catch it, as they catch the socket module's."""

    code = ErrorCode.ADDRESS


class HostNotFound(AddressError, _socket.gaierror):
    """The host name does not resolve; like ``socket.gaierror``, ``errno`` is the resolver's
    code (``socket.EAI_NONAME`` ...) and ``strerror`` its reason."""

    code = ErrorCode.ADDRESS


class NoClientWaiting(Error, LookupError):
    """SocketAccept / SocketDeny with no client waiting on the listener."""

    code = ErrorCode.NO_CLIENT

    def __str__(self) -> str:
        return Error.__str__(self)


# C core code (positive form) -> exception class.  TOO_BIG is a FrameError (the
# connection is broken by an oversized size header).
_BY_CODE: dict[int, type[Error]] = {
    ErrorCode.TIMEOUT: SocketTimeout,
    ErrorCode.PEER_CLOSED: PeerClosed,
    ErrorCode.RESET: ConnectionReset,
    ErrorCode.TLS: TLSError,
    ErrorCode.VERIFY: VerificationError,
    ErrorCode.SYSTEM: ConnectionFailure,
    ErrorCode.FRAME: FrameError,
    ErrorCode.TOO_BIG: FrameError,
    ErrorCode.ADDRESS: AddressError,
    ErrorCode.IN_USE: AddressInUse,
    ErrorCode.CLOSED: SocketClosed,
    ErrorCode.NO_MEMORY: Error,
    ErrorCode.INVALID: ArgumentError,
    ErrorCode.CONFIG: CertificateError,
}


# OpenSSL's verify results (X509_V_ERR_*, x509_vfy.h; numbers fixed by its ABI) that mean
# "this client does not trust the chain the server showed": UNABLE_TO_GET_ISSUER_CERT (2),
# DEPTH_ZERO_SELF_SIGNED_CERT (18), SELF_SIGNED_CERT_IN_CHAIN (19),
# UNABLE_TO_GET_ISSUER_CERT_LOCALLY (20), UNABLE_TO_VERIFY_LEAF_SIGNATURE (21),
# CERT_UNTRUSTED (27).  One fix for all: trust the server's certificate (partial chains are
# accepted, so the certificate itself will do) or the CA that signed it.
_UNTRUSTED = frozenset({2, 18, 19, 20, 21, 27})


def _with_fix(code: ErrorCode, message: str, system_code: int, system_message: str) -> str:
    """The message, with what to do when a client does not trust the server.  VERIFY comes
    only from a client's handshake: a server's refusals of client certificates are counted
    by the listener, not raised."""
    if code is not ErrorCode.VERIFY or system_code not in _UNTRUSTED:
        return message
    reason = f" ({system_message})" if system_message else ""
    return (f"{message}{reason}: this client does not trust the server's certificate. Export "
            "it without its key on the server (`sslsock cert export NAME server.crt "
            "--no-key`; `sslsock cert list` shows NAME) and import it into the client's "
            "certificate store (`sslsock cert import server.crt`), or import the CA that "
            "signed it")


def from_record(rc: int, message: str, system_code: int, system_message: str) -> Error:
    """Build the exception for a C error record (``rc`` is the negative return code)."""
    try:
        code = ErrorCode(-rc)
    except ValueError:
        code = ErrorCode.SYSTEM
    message = _with_fix(code, message, system_code, system_message)
    cls = _BY_CODE.get(code, Error)
    if code is ErrorCode.ADDRESS and system_code == _errno.ECONNREFUSED:
        cls = ConnectionRefused
    elif code is ErrorCode.ADDRESS and system_code < 0:  # the C core stores EAI_* codes
        cls = HostNotFound
    return cls(message, code=code, system_code=system_code, system_message=system_message)


def raise_err(rc: int, err: Any) -> NoReturn:
    """Raise the exception of a failed C call: ``rc`` and its error record (an ``ss_err``)."""
    raise from_record(rc, text(err.message), int(err.sys_code), text(err.detail))


def check(rc: int, err: Any) -> None:
    if rc != 0:
        raise_err(rc, err)
