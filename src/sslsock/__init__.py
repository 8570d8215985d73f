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
    ConnectionReset,
    Error,
    ErrorCode,
    FrameError,
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
from .wl import *  # noqa: F401,F403 - the named face is the package's main API

__version__ = "0.1.0"

__all__ = list(_wl.__all__) + [
    "CertStore", "Identity", "StoredCertificate", "default_store_path",
    "Connection", "ConnectionInfo", "Listener", "ListenerStats", "Mode", "connect",
    "DEFAULT", "Recipe", "SSLOption", "recipe",
    "AddressError", "AddressInUse", "ArgumentError", "CertificateError", "ConnectionFailure",
    "ConnectionReset", "Error", "ErrorCode", "FrameError", "NameTakenError", "NoClientWaiting",
    "OptionsError", "PeerClosed", "ProgrammingError", "SocketClosed", "SocketNameError",
    "SocketTimeout", "TLSError", "UnknownConstantError", "VerificationError",
]
