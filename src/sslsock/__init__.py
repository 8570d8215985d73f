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
from sslsock._certs.store import CertStore, Identity, StoredCertificate, default_store_path
from sslsock._core.connection import Connection, ConnectionInfo, Mode
from sslsock._core.errors import (
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
from sslsock._deploy.workers import Worker, available_cpus, run_workers
from sslsock._faces import named as _wl
from sslsock._faces.named import *  # noqa: F401,F403 - the named face is the package's main API
from sslsock._faces.objects import Listener, ListenerStats, connect
from sslsock._tls.options import DEFAULT, Recipe, SSLOption, recipe
from sslsock._version import __version__ as __version__

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
