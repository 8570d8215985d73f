"""The SSL-options bitmask and the one function that turns it into an OpenSSL
recipe: the version range and the exact set to negotiate, security levels, cipher lists,
and the reason for every version dropped.  Server, client, error messages and the docs all
use :func:`recipe`; nothing else decides which versions a socket speaks.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Union

from sslsock._core.binding import lib
from sslsock._core.errors import OptionsError


class SSLOption(enum.IntFlag):
    """WLanguage's SSL options (English names; French aliases: :mod:`sslsock._faces.named`)."""

    ProtocolSSL2 = 0x01
    ProtocolSSL3 = 0x02
    ProtocolTLS1 = 0x04
    ProtocolTLS1_1 = 0x08
    ProtocolTLS1_2 = 0x10
    ProtocolTLS1_3 = 0x20
    CertificateHash = 0x100
    CertificateName = 0x200
    # [extension] client: do not verify the server's certificate (for tests, never default)
    SSLNoVerify = 0x1000
    # [extension] server: mutual TLS, clients must present a certificate that verifies
    SSLClientCertificate = 0x2000
    # [extension] server, with SSLClientCertificate: also accept client certificates issued
    # by the system's authorities (by default only the store's certificates are trusted)
    SSLClientSystemCA = 0x4000


PROTOCOL_BITS = (
    SSLOption.ProtocolSSL2
    | SSLOption.ProtocolSSL3
    | SSLOption.ProtocolTLS1
    | SSLOption.ProtocolTLS1_1
    | SSLOption.ProtocolTLS1_2
    | SSLOption.ProtocolTLS1_3
)
IDENT_BITS = SSLOption.CertificateHash | SSLOption.CertificateName
EXTENSION_BITS = (SSLOption.SSLNoVerify | SSLOption.SSLClientCertificate
                  | SSLOption.SSLClientSystemCA)
ALL_BITS = PROTOCOL_BITS | IDENT_BITS | EXTENSION_BITS
DEFAULT_PROTOCOLS = SSLOption.ProtocolTLS1 | SSLOption.ProtocolTLS1_1 | SSLOption.ProtocolTLS1_2
DEFAULT = DEFAULT_PROTOCOLS | SSLOption.CertificateName

# bit -> (OpenSSL's name for the version, the C core's SS_V_* bit, or 0 if none exists)
_VERSIONS: tuple[tuple[SSLOption, str, int], ...] = (
    (SSLOption.ProtocolSSL2, "SSLv2", 0),
    (SSLOption.ProtocolSSL3, "SSLv3", int(lib.SS_V_SSL3)),
    (SSLOption.ProtocolTLS1, "TLSv1", int(lib.SS_V_TLS1)),
    (SSLOption.ProtocolTLS1_1, "TLSv1.1", int(lib.SS_V_TLS1_1)),
    (SSLOption.ProtocolTLS1_2, "TLSv1.2", int(lib.SS_V_TLS1_2)),
    (SSLOption.ProtocolTLS1_3, "TLSv1.3", int(lib.SS_V_TLS1_3)),
)
#: The C core's version bits (``ss_versions_supported()``, ``ss_ctx_versions()``) and
#: OpenSSL's name of each, oldest first.
CORE_VERSIONS: tuple[tuple[int, str], ...] = tuple((bit, name) for _, name, bit in _VERSIONS
                                                   if bit)
LEGACY_NAMES = ("SSLv3", "TLSv1", "TLSv1.1")

# Strong suites for every version we allow.  No NULL, export, RC4, DES/3DES, MD5, anonymous,
# PSK/SRP or static-RSA key exchange under any mask; TLS 1.0/1.1 get the ECDHE/DHE
# AES-CBC-SHA1 suites, the strongest those versions can use.
CIPHER_LIST = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES:"
    "!aNULL:!eNULL:!EXPORT:!RC4:!DES:!3DES:!MD5:!PSK:!SRP:!kRSA:!DSS"
)

# Connections negotiated at SSL 3, TLS 1.0 or 1.1 also accept what old peers offer: RSA key
# exchange with AES-CBC (no forward secrecy; see docs/tls-versions.md).  Listed after the
# (EC)DHE suites, so a peer that can do better does.  TLS 1.2 and 1.3 keep CIPHER_LIST.
LEGACY_CIPHER_LIST = (
    "ECDHE+AES:DHE+AES:kRSA+AES+SHA1:"
    "!aNULL:!eNULL:!EXPORT:!RC4:!DES:!3DES:!MD5:!PSK:!SRP:!DSS:!AESGCM:!AESCCM:!SHA256:!SHA384"
)

Mask = Union[int, SSLOption]


@dataclass(frozen=True)
class Recipe:
    """What a mask means on this OpenSSL build."""

    mask: int
    requested: tuple[str, ...]          # versions the mask names, oldest first
    effective: tuple[str, ...]          # versions the socket negotiates, exactly
    dropped: dict[str, str] = field(default_factory=dict)  # version -> why it is not there
    version_bits: int = 0               # SS_V_* bits for the C core
    by_hash: bool = False
    no_verify: bool = False
    client_certificate: bool = False
    client_system_ca: bool = False      # mTLS: also trust the system's authorities
    security_level: int = -1            # for TLS >= 1.2 (-1: OpenSSL's default)
    legacy_security_level: int = 0      # for SSLv3 / TLS 1.0 / 1.1 connections
    cipher_list: str = CIPHER_LIST
    legacy_cipher_list: str = ""        # server, connections below TLS 1.2 ("": cipher_list)

    @property
    def lowers_security_level(self) -> bool:
        return any(v in LEGACY_NAMES for v in self.effective)


@lru_cache(maxsize=1)
def _build() -> tuple[int, str, int]:
    supported = int(lib.ss_versions_supported())
    return supported, _linked_version(), int(lib.ss_openssl_security_level_default())


def _linked_version() -> str:
    from sslsock._core.binding import ffi

    return str(ffi.string(lib.ss_openssl_version_linked()).decode())


def _why_missing(name: str, linked: str) -> str:
    if name == "SSLv2":
        return "SSLv2 was removed from OpenSSL in 1.1.0 (broken protocol); no build can do it"
    if name == "SSLv3":
        return (f"this OpenSSL ({linked}) is built without SSLv3 (Debian's is); only a build "
                "configured with enable-ssl3 enable-ssl3-method can do it")
    return f"this OpenSSL ({linked}) is built without {name}"


def describe(mask: int) -> str:
    """'ProtocolTLS1 + ProtocolTLS1_2 + CertificateName' for error messages."""
    names = [m.name for m in SSLOption if m & mask and m.name]
    unknown = mask & ~int(ALL_BITS)
    if unknown:
        names.append(hex(unknown))
    return " + ".join(names) if names else "0"


def version_names(core_bits: int) -> tuple[str, ...]:
    """OpenSSL's names of the versions in a set of the C core's SS_V_* bits, oldest first."""
    return tuple(name for _, name, bit in _VERSIONS if bit and core_bits & bit)


_recipes: dict[int, Recipe] = {}


def recipe(mask: Mask = DEFAULT, *, supported_bits: int | None = None) -> Recipe:
    """Turn an options mask into the recipe for a socket (raises OptionsError).

    Each group defaults on its own: no protocol bit means the default protocols
    (TLS 1.0 + 1.1 + 1.2), no identification bit means CertificateName.
    """
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise TypeError(f"SSL options must be an integer mask of the Protocol*/Certificate* "
                        f"constants, not {type(mask).__name__}")
    if supported_bits is None:  # this build's recipes never change: made once per mask
        made = _recipes.get(int(mask))
        if made is None:
            made = _recipes.setdefault(int(mask), _recipe(int(mask), None))
        return made
    return _recipe(int(mask), supported_bits)


def _recipe(mask: int, supported_bits: int | None) -> Recipe:
    if mask < 0 or mask & ~int(ALL_BITS):
        raise OptionsError(
            f"SSL options {mask:#x} contain unknown bits {mask & ~int(ALL_BITS) & 0xFFFFFFFF:#x}: "
            "combine only the ProtocolSSL2..ProtocolTLS1_3, CertificateHash and "
            "CertificateName constants (and the SSLNoVerify / SSLClientCertificate extensions)"
        )
    if mask & IDENT_BITS == IDENT_BITS:
        raise OptionsError(
            "SSL options name both CertificateHash and CertificateName: the certificate "
            "identifier is either a name or a hash, choose one"
        )
    if not mask & PROTOCOL_BITS:
        mask |= int(DEFAULT_PROTOCOLS)
    if not mask & IDENT_BITS:
        mask |= int(SSLOption.CertificateName)
    if supported_bits is None:
        supported_bits, linked, default_level = _build()
    else:
        linked, default_level = "this build", 2
    requested = tuple(name for bit, name, _ in _VERSIONS if mask & bit)
    effective: list[str] = []
    dropped: dict[str, str] = {}
    bits = 0
    for bit, name, core_bit in _VERSIONS:
        if not mask & bit:
            continue
        if core_bit and supported_bits & core_bit:
            effective.append(name)
            bits |= core_bit
        else:
            dropped[name] = _why_missing(name, linked)
    if not effective:
        raise OptionsError(
            f"none of the protocol versions asked for ({', '.join(requested)}) is available: "
            + "; ".join(dropped.values())
            + ". Use ProtocolTLS1_2 + ProtocolTLS1_3, or leave the protocol bits out for "
            "the default (TLS 1.0, 1.1 and 1.2)."
        )
    # TLS 1.0/1.1 (and SSLv3) use MD5/SHA-1 in their PRF and signatures, which OpenSSL 3
    # only accepts at security level 0; TLS 1.2+ keep the library's default level.  The
    # server applies the lower level per connection, only when it negotiates such a version.
    return Recipe(
        mask=mask,
        requested=requested,
        effective=tuple(effective),
        dropped=dropped,
        version_bits=bits,
        by_hash=bool(mask & SSLOption.CertificateHash),
        no_verify=bool(mask & SSLOption.SSLNoVerify),
        client_certificate=bool(mask & SSLOption.SSLClientCertificate),
        client_system_ca=bool(mask & SSLOption.SSLClientSystemCA),
        security_level=max(default_level, 2) if default_level >= 0 else -1,
        legacy_security_level=0,
        legacy_cipher_list=LEGACY_CIPHER_LIST if any(v in LEGACY_NAMES for v in effective)
        else "",
    )
