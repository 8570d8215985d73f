"""sslsock: the WLanguage (WINDEV) named-socket API for TLS, on a C core over libssl.

Two faces over one core:

* the named face, as WINDEV programs use it::

      import sslsock as ss
      if not ss.SocketCreateSSL("srv", 5043, "my-cert"):
          print(ss.ErrorInfo())

  (French names such as ``SocketCréeSSL`` and snake_case such as ``socket_create_ssl``
  too);

* the object face: :class:`Listener`, :func:`connect`, :class:`Connection`, with seconds,
  context managers and exceptions rooted in :class:`Error`.
"""
from . import wl as _wl
from ._certstore import CertStore, Identity, StoredCertificate, default_store_path
from ._errors import (
    AddressError,
    AddressInUse,
    ArgumentError,
    CertificateError,
    ConnectionFailure,
    ConnectionRefused,
    ConnectionReset,
    Error,
    ErrorCode,
    FrameError,
    HostNotFound,
    NameTakenError,
    NoClientWaiting,
    OptionsError,
    PeerClosed,
    ProgrammingError,
    SocketClosed,
    SocketNameError,
    SocketTimeout,
    TLSError,
    UnknownConstantError,
    VerificationError,
)
from ._objects import Connection, ConnectionInfo, Listener, ListenerStats, Mode, connect
from ._options import DEFAULT, Recipe, SSLOption, recipe
from ._workers import Worker, available_cpus, run_workers
from .wl import *  # noqa: F401,F403 - the named face is the package's main API

__version__ = "0.1.0"

# Literal lists, so that type checkers (mypy --strict, which does not re-export imported
# names implicitly) see what a user's script may use.
__all__ = [
    "CertStore", "Identity", "StoredCertificate", "default_store_path",
    "Connection", "ConnectionInfo", "Listener", "ListenerStats", "Mode", "connect",
    "DEFAULT", "Recipe", "SSLOption", "recipe",
    "Worker", "available_cpus", "run_workers",
    "AddressError", "AddressInUse", "ArgumentError", "CertificateError", "ConnectionFailure",
    "ConnectionRefused", "ConnectionReset", "Error", "ErrorCode", "FrameError", "HostNotFound",
    "NameTakenError", "NoClientWaiting",
    "OptionsError", "PeerClosed", "ProgrammingError", "SocketClosed", "SocketNameError",
    "SocketTimeout", "TLSError", "UnknownConstantError", "VerificationError",
]
__all__ += _wl.__all__
