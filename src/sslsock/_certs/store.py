"""The certificate store: where a server finds its certificate, by name or by thumbprint.

The reference looks server certificates up in the Windows certificate store, by name or by
the SHA-1 thumbprint ``certmgr.msc`` shows.  Here the store is a directory (docs/certificates.md):
``$SSLSOCK_CERT_STORE``, else ``$XDG_DATA_HOME/sslsock/certs``, else
``~/.local/share/sslsock/certs``.

What the directory holds (only its top level is read):

- ``NAME.pfx`` / ``NAME.p12``: PKCS#12, as exported from Windows, with or without the key.
- ``NAME.pem`` / ``NAME.crt`` / ``NAME.cer`` / ``NAME.der``: certificates in PEM or DER
  (recognised by content, not by suffix).  A PEM file may also hold the private key; when it
  does not, a sibling ``NAME.key`` (PEM or DER) is the key.  A file with certificates and no
  key is a trust anchor (a CA certificate, say): it can be found, it is in
  :meth:`CertStore.trust_pem`, it cannot identify a server.
- Other files, and names starting with a dot, are ignored.

Decisions:

- **The leaf is the first certificate** of a PEM file (OpenSSL's convention for chain files);
  the others are its chain, sent along with it.  In a PKCS#12 file the leaf is the one the
  key belongs to.
- **One password for the store**: ``CertStore(password=...)``, else
  ``$SSLSOCK_CERT_PASSWORD`` read when the store object is made (an empty variable counts as
  unset).  Files that are not encrypted are read whatever the password.  A ``str`` password
  is encoded as UTF-8.
- **Name lookup** compares the identifier with the subject common name, the PKCS#12
  friendly name, the file stem and the file name, case-sensitively first; only when nothing
  matches exactly is the comparison repeated ignoring case (Windows names are not case
  sensitive, but an exact match must never become ambiguous because of a case-folded one).
  **[extension]** An identifier that names an existing file (one with a certificate suffix,
  or any file when the identifier contains a ``/``) loads that file, outside the store.
- **Hash lookup** accepts the SHA-1 thumbprint (certmgr.msc) or **[extension]** the SHA-256
  one; see :func:`parse_thumbprint` for what is ignored.
- **Several matches are an error**, even when they are copies of one certificate: the
  message lists the files so the user can pick one by file name or remove a copy.
- **Problems do not stop a scan**: an unreadable file is skipped and described in
  :attr:`CertStore.problems`; a lookup that fails mentions them, since the missing
  certificate is often in one of those files.
- **Private keys never leave as text**: no key bytes are kept in :class:`StoredCertificate`
  or put in any message.  :class:`Identity` carries the key as a ``bytearray`` that
  :meth:`Identity.wipe` zeroes (the copies made inside ``cryptography`` while converting
  cannot be reached, so this narrows the window, no more).
- **Files the store writes** (import, create) have mode 0600 when they hold a key, in a
  directory created 0700.  A key the store re-encodes is encrypted with the store password
  if there is one, and protected by the file mode only otherwise.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from sslsock._certs import generate as _certgen
from sslsock._core.errors import ArgumentError, CertificateError

__all__ = [
    "CertStore",
    "Identity",
    "InsecureKeyFileWarning",
    "StoredCertificate",
    "default_store_path",
    "format_thumbprint",
    "parse_thumbprint",
]

STORE_ENV = "SSLSOCK_CERT_STORE"
PASSWORD_ENV = "SSLSOCK_CERT_PASSWORD"

#: How to look a certificate up: the WLanguage ``CertificateName`` / ``CertificateHash``.
Lookup = Literal["name", "hash"]

# Suffixes the store reads (lower-cased) and the format they imply.  "pem" means PEM or DER,
# told apart by content: Windows writes .cer and .crt files in either.
_SUFFIXES = {
    ".pfx": "pkcs12",
    ".p12": "pkcs12",
    ".pem": "pem",
    ".crt": "pem",
    ".cer": "pem",
    ".der": "pem",
}

_PASSWORD_HINT = f"set {PASSWORD_ENV} or pass password= to CertStore"
_LIST_HINT = "Run `sslsock cert list` to see them with their thumbprints"


class InsecureKeyFileWarning(UserWarning):
    """A file holding a private key can be read by other users (group or others)."""


# --- Thumbprints ----------------------------------------------------------------------

_HEX = frozenset("0123456789abcdefABCDEF")
# Characters dropped before reading a thumbprint: certmgr.msc copies an invisible
# left-to-right mark (U+200E) along with the "Thumbprint" field; the others are their
# invisible cousins.  Whitespace of any kind, and the colons of `openssl x509 -fingerprint`,
# separate digit groups.
_INVISIBLE = frozenset("\u200e\u200f\u200b\u2060\ufeff")
_SEPARATORS = ":"
# Letters typed for the digits they look like.
_LOOKALIKES = {"o": "0", "O": "0", "l": "1", "I": "1"}
_MAX_REPORTED = 8
_THUMBPRINT_FORMAT = (
    "A SHA-1 thumbprint is 40 hex digits (spaces allowed), as shown in certmgr.msc's "
    '"Thumbprint" field; a SHA-256 thumbprint is 64'
)


def parse_thumbprint(text: str) -> tuple[str, str]:
    """Read a certificate thumbprint; return ``("sha1" | "sha256", UPPERCASE hex digits)``.

    Any case is accepted.  Whitespace, colons and invisible marks (U+200E, which certmgr.msc
    copies along) are ignored.  40 digits are a SHA-1 thumbprint, 64 a SHA-256 one.

    Positions in error messages count from 0 in the text as shown in the message, which is
    ``text`` without its invisible marks.
    """
    if not isinstance(text, str):
        raise ArgumentError(f"a certificate hash is a str, not {type(text).__name__}")
    shown = "".join(ch for ch in text if ch not in _INVISIBLE)
    digits: list[str] = []
    bad: list[tuple[int, str]] = []
    for pos, ch in enumerate(shown):
        if ch in _HEX:
            digits.append(ch)
        elif not (ch.isspace() or ch in _SEPARATORS):
            bad.append((pos, ch))
    if bad:
        raise CertificateError(_bad_characters_message(shown, bad, len(digits)))
    if not digits:
        raise CertificateError(
            "certificate hash is empty: give the thumbprint of the certificate. "
            + _THUMBPRINT_FORMAT
        )
    if len(digits) == 40:
        return "sha1", "".join(digits).upper()
    if len(digits) == 64:
        return "sha256", "".join(digits).upper()
    message = f'certificate hash "{shown}" has {len(digits)} hexadecimal digits'
    odd = [m for m in _groups(shown) if len(m.group()) != 2]
    if odd and len(odd) < len(_groups(shown)):
        listed = ", ".join(f'"{m.group()}" at position {m.start()}' for m in odd)
        message += f"; these groups are not pairs of digits: {listed}"
    raise CertificateError(f"{message}. {_THUMBPRINT_FORMAT}.")


def format_thumbprint(hexstr: str) -> str:
    """A thumbprint as certmgr.msc shows it: lowercase pairs separated by spaces."""
    digits = "".join(ch for ch in hexstr if not (ch.isspace() or ch in _SEPARATORS)).lower()
    return " ".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def _groups(shown: str) -> list[re.Match[str]]:
    return list(re.finditer(r"[^\s:]+", shown))


def _bad_characters_message(shown: str, bad: list[tuple[int, str]], n_digits: int) -> str:
    listed = ", ".join(f"{ch!r} at position {pos}" for pos, ch in bad[:_MAX_REPORTED])
    if len(bad) > _MAX_REPORTED:
        listed += f" and {len(bad) - _MAX_REPORTED} more"
    message = f'certificate hash "{shown}" has non-hexadecimal characters: {listed}'
    # A group of digits with a letter O or l in it is most likely a typo for 0 or 1.
    typos = []
    for group in _groups(shown):
        word = group.group()
        if any(ch in _LOOKALIKES for ch in word):
            fixed = "".join(_LOOKALIKES.get(ch, ch) for ch in word)
            if all(ch in _HEX for ch in fixed):
                kind = "hex pair" if len(word) == 2 else "hex digits"
                typos.append(f'"{word}" looks like a typo for the {kind} "{fixed}"')
    if typos:
        message += f" ({'; '.join(typos)})"
    message += f". {_THUMBPRINT_FORMAT}."
    if len(bad) > n_digits:
        message += " If this is the certificate's name, look it up by name, not by hash."
    return message


# --- Stored certificates --------------------------------------------------------------


def _not_before(certificate: x509.Certificate) -> datetime.datetime:
    try:
        return certificate.not_valid_before_utc
    except AttributeError:  # cryptography < 42
        return certificate.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def _not_after(certificate: x509.Certificate) -> datetime.datetime:
    try:
        return certificate.not_valid_after_utc
    except AttributeError:  # cryptography < 42
        return certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class StoredCertificate:
    """One certificate file of the store (or a file named directly), without its key.

    ``name`` is the PKCS#12 friendly name if the file has one, else the file stem.
    ``key_path`` is the separate ``NAME.key`` file, if the key lives there; ``has_key`` says
    whether a key exists at all (in the file or beside it), not that it could be decrypted.
    ``sha1``/``sha256`` are uppercase hex digits of the DER certificate's digest.
    """

    name: str
    path: Path
    key_path: Path | None
    certificate: x509.Certificate = field(repr=False)
    chain: tuple[x509.Certificate, ...] = field(repr=False)
    has_key: bool
    sha1: str
    sha256: str
    friendly_name: str | None = None

    @property
    def common_name(self) -> str | None:
        """The subject's first common name, or None."""
        attributes = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if not attributes:
            return None
        value = attributes[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string (``CN=...,O=...``)."""
        return self.certificate.subject.rfc4514_string()

    @property
    def not_before(self) -> datetime.datetime:
        return _not_before(self.certificate)

    @property
    def not_after(self) -> datetime.datetime:
        return _not_after(self.certificate)

    @property
    def expired(self) -> bool:
        return _now() > self.not_after

    @property
    def not_yet_valid(self) -> bool:
        return _now() < self.not_before

    @property
    def key_file(self) -> Path | None:
        """The file that holds the private key, or None."""
        if self.key_path is not None:
            return self.key_path
        return self.path if self.has_key else None

    @property
    def key_world_readable(self) -> bool:
        """True when the key file can be read by its group or by others (mode & 0o044)."""
        key_file = self.key_file
        if key_file is None:
            return False
        try:
            mode = key_file.stat().st_mode
        except OSError:
            return False
        return bool(mode & (stat.S_IRGRP | stat.S_IROTH))

    @property
    def certmgr_thumbprint(self) -> str:
        """The SHA-1 thumbprint as certmgr.msc shows it (``9d a4 84 ...``)."""
        return format_thumbprint(self.sha1)

    def names(self) -> tuple[str, ...]:
        """Everything a name lookup compares with: common name, friendly name, file stem and
        file name."""
        found = [self.common_name, self.friendly_name, self.path.stem, self.path.name]
        return tuple(dict.fromkeys(n for n in found if n))


@dataclass(repr=False, eq=False)
class Identity:
    """What the C core needs to serve a certificate.

    ``cert_chain_pem``: the certificate then its chain, PEM.  ``key_pem``: the private key,
    unencrypted PKCS#8 PEM, in a ``bytearray`` so :meth:`wipe` can zero it once the core has
    taken it.  Used as a context manager, it wipes the key on exit.
    """

    cert_chain_pem: bytes
    key_pem: bytearray
    certificate: StoredCertificate

    def wipe(self) -> None:
        """Overwrite the key bytes with zeros (in place; the length is kept)."""
        self.key_pem[:] = bytes(len(self.key_pem))

    def __enter__(self) -> Identity:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()

    def __repr__(self) -> str:
        state = "wiped" if not any(self.key_pem) else "present"
        return (
            f"Identity(certificate={self.certificate!r}, "
            f"cert_chain_pem=<{len(self.cert_chain_pem)} bytes>, key_pem=<{state}>)"
        )


# --- Reading files --------------------------------------------------------------------

# What cryptography raises for a damaged certificate: ValueError, or InvalidVersion (which
# is not a ValueError) for an X.509 version it does not know (found fuzzing).
_DAMAGED = (ValueError, x509.InvalidVersion)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _is_key_label(label: str) -> bool:
    return label.endswith("PRIVATE KEY")


def _looks_like_pkcs12(data: bytes) -> bool:
    """True when ``data`` starts like a PFX: ``SEQUENCE { INTEGER 3, ...`` (RFC 7292)."""
    if len(data) < 5 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80 or first == 0x80:  # short form, or BER indefinite length
        offset = 2
    else:
        length_bytes = first & 0x7F
        if length_bytes > 4:
            return False
        offset = 2 + length_bytes
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _format_of(path: Path, data: bytes) -> str:
    known = _SUFFIXES.get(path.suffix.lower())
    if known is not None:
        return known
    if b"-----BEGIN" not in data and _looks_like_pkcs12(data):
        return "pkcs12"
    return "pem"


def _read(path: Path, what: str = "") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CertificateError(f"{path}: cannot read {what or 'it'} ({reason})") from None


@dataclass(frozen=True)
class _Password:
    """The password to try and where it came from (for messages); never shown."""

    value: bytes | None = field(default=None, repr=False)
    source: str = ""

    @staticmethod
    def of(password: bytes | str | None, source: str) -> _Password:
        if password is None:
            return _Password()
        value = password.encode("utf-8") if isinstance(password, str) else bytes(password)
        return _Password(value, source)


def _open_pkcs12(
    path: Path, data: bytes, password: _Password
) -> tuple[pkcs12.PKCS12KeyAndCertificates, bool]:
    """Load a PKCS#12 file; also say whether the password was needed."""
    if password.value is not None:
        try:
            return pkcs12.load_pkcs12(data, password.value), True
        except _DAMAGED:
            pass
    # No password, then the empty one: OpenSSL tells "none" and "" apart in the MAC.
    for candidate in (None, b""):
        try:
            return pkcs12.load_pkcs12(data, candidate), False
        except _DAMAGED:
            continue
    if not _looks_like_pkcs12(data):
        raise CertificateError(f"{path}: not a PKCS#12 file (it does not start like one)")
    if password.value is None:
        raise CertificateError(
            f"{path}: could not open this PKCS#12 file without a password (it is "
            f"encrypted): {_PASSWORD_HINT}"
        )
    raise CertificateError(
        f"{path}: could not open this PKCS#12 file with the password given "
        f"({password.source}): wrong password, or a damaged file"
    )


def _friendly(entry: pkcs12.PKCS12Certificate | None) -> str | None:
    if entry is None or not entry.friendly_name:
        return None
    return entry.friendly_name.decode("utf-8", "replace")


def _make_entry(
    path: Path,
    certs: Sequence[x509.Certificate],
    *,
    has_key: bool,
    key_path: Path | None = None,
    friendly_name: str | None = None,
) -> StoredCertificate:
    leaf = certs[0]
    try:
        # cryptography parses these fields lazily: a damaged one must fail here, for this
        # file only, not later in every lookup of the store (found fuzzing)
        for certificate in certs:
            certificate.subject.rfc4514_string()
            certificate.issuer.rfc4514_string()
            _not_before(certificate), _not_after(certificate)
    except (*_DAMAGED, TypeError) as exc:  # TypeError: a name attribute of the wrong type
        raise CertificateError(f"{path}: a certificate in it is damaged ({exc})") from None
    return StoredCertificate(
        name=friendly_name or path.stem,
        path=path,
        key_path=key_path,
        certificate=leaf,
        chain=tuple(certs[1:]),
        has_key=has_key,
        sha1=leaf.fingerprint(hashes.SHA1()).hex().upper(),
        sha256=leaf.fingerprint(hashes.SHA256()).hex().upper(),
        friendly_name=friendly_name,
    )


def _load_certificates(path: Path, data: bytes) -> tuple[list[x509.Certificate], int]:
    """Certificates of a PEM or DER file, and how many private keys the file holds."""
    blocks = _pem_blocks(data)
    if not blocks:
        if b"-----BEGIN" in data:
            raise CertificateError(f"{path}: damaged PEM file (a BEGIN line without its END)")
        try:
            return [x509.load_der_x509_certificate(data)], 0
        except _DAMAGED:
            raise CertificateError(f"{path}: neither a PEM file nor a DER certificate") from None
    cert_blocks = [block for label, block in blocks if label == "CERTIFICATE"]
    n_keys = sum(1 for label, _ in blocks if _is_key_label(label))
    if not cert_blocks:
        if n_keys:
            raise CertificateError(
                f"{path}: no certificate in it, only a private key: a key alone goes in "
                f"{path.stem}.key beside {path.stem}.crt"
            )
        labels = ", ".join(sorted({label for label, _ in blocks}))
        raise CertificateError(f"{path}: no certificate in it (its PEM blocks: {labels})")
    try:
        certs = x509.load_pem_x509_certificates(b"\n".join(cert_blocks))
    except _DAMAGED:
        raise CertificateError(f"{path}: a certificate in it is damaged") from None
    return certs, n_keys


def _load_entry(path: Path, password: _Password) -> StoredCertificate:
    """Read one certificate file (without decrypting a PEM key)."""
    data = _read(path)
    if _format_of(path, data) == "pkcs12":
        bundle, _ = _open_pkcs12(path, data, password)
        if bundle.cert is not None:
            leaf = bundle.cert
            others = bundle.additional_certs
        elif bundle.additional_certs:
            leaf, others = bundle.additional_certs[0], bundle.additional_certs[1:]
        else:
            raise CertificateError(f"{path}: the PKCS#12 file holds no certificate")
        certs = [leaf.certificate, *(c.certificate for c in others)]
        return _make_entry(
            path, certs, has_key=bundle.key is not None, friendly_name=_friendly(leaf)
        )
    certs, n_keys = _load_certificates(path, data)
    if n_keys > 1:
        raise CertificateError(f"{path}: holds {n_keys} private keys; keep one key per file")
    if n_keys == 1:
        return _make_entry(path, certs, has_key=True)
    sibling = path.with_suffix(".key")
    if sibling.exists():
        return _make_entry(path, certs, has_key=True, key_path=sibling)
    return _make_entry(path, certs, has_key=False)


def _load_key(entry: StoredCertificate, password: _Password) -> tuple[PrivateKeyTypes, bool]:
    """The private key of ``entry``, and whether the password was needed to read it."""
    key_file = entry.key_file
    if key_file is None:
        raise CertificateError(f"{entry.path}: no private key")
    data = _read(key_file, "the private key")
    if entry.key_path is None and _format_of(key_file, data) == "pkcs12":
        bundle, used = _open_pkcs12(key_file, data, password)
        if bundle.key is None:
            raise CertificateError(f"{key_file}: the PKCS#12 file holds no private key")
        return bundle.key, used
    blocks = [block for label, block in _pem_blocks(data) if _is_key_label(label)]
    loader = serialization.load_pem_private_key
    if blocks:
        data = blocks[0]
        encrypted = data.startswith(b"-----BEGIN ENCRYPTED") or b"Proc-Type: 4,ENCRYPTED" in data
    elif b"-----BEGIN" in data:
        raise CertificateError(f"{key_file}: no private key in it")
    else:
        # DER: only the structure says whether it is encrypted, so try without a password.
        loader = serialization.load_der_private_key
        try:
            return loader(data, None), False
        except TypeError:
            encrypted = True
        except (ValueError, UnsupportedAlgorithm):
            raise CertificateError(f"{key_file}: not a private key (PEM or DER)") from None
    if encrypted and password.value is None:
        raise CertificateError(
            f"the private key in {key_file} is encrypted and no password was given: "
            f"{_PASSWORD_HINT}"
        )
    try:
        return loader(data, password.value if encrypted else None), encrypted
    except TypeError:  # encrypted in a way the PEM header did not show
        raise CertificateError(
            f"the private key in {key_file} is encrypted and no password was given: "
            f"{_PASSWORD_HINT}"
        ) from None
    except ValueError:
        if encrypted:
            raise CertificateError(
                f"the private key in {key_file} could not be decrypted with the password "
                f"given ({password.source}): wrong password"
            ) from None
        raise CertificateError(f"{key_file}: the private key is damaged") from None
    except UnsupportedAlgorithm:
        raise CertificateError(f"{key_file}: unsupported private key type") from None


def _public_der(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    try:
        public = key.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        # an unknown curve or a damaged key in a certificate that parses (found fuzzing)
        what = "certificate" if isinstance(key, x509.Certificate) else "private key"
        raise CertificateError(f"the {what}'s public key cannot be used: {exc}") from None
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _describe(entry: StoredCertificate) -> str:
    return f'certificate "{entry.name}" ({entry.path})'


def _utc_text(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- The store ------------------------------------------------------------------------


def default_store_path() -> Path:
    """``$SSLSOCK_CERT_STORE``, else ``$XDG_DATA_HOME/sslsock/certs``, else
    ``~/.local/share/sslsock/certs``.  A relative ``XDG_DATA_HOME`` is ignored, as the XDG
    specification says."""
    configured = os.environ.get(STORE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "sslsock" / "certs"


Generation = tuple[tuple[str, int, int, int], ...]
#: How long a store's files are trusted not to have been rewritten in place, in seconds.
RESCAN_SECONDS = 1.0
# A directory time this close to now may hide a change made within the same clock tick.
_RECENT_NS = 50_000_000
_generations: dict[Path, tuple[int, float, Generation]] = {}


class CertStore:
    """A directory of certificates, looked up by name or thumbprint.  See the module text.

    ``password`` (``bytes``, or ``str`` encoded as UTF-8) opens encrypted files; by default it
    is ``$SSLSOCK_CERT_PASSWORD`` as set when the store object is made.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        password: bytes | str | None = None,
    ) -> None:
        self._path = Path(path).expanduser() if path is not None else default_store_path()
        if password is not None:
            self._password = _Password.of(password, "password= argument")
        else:
            self._password = _Password.of(os.environ.get(PASSWORD_ENV) or None, PASSWORD_ENV)
        #: One line per file the last scan could not read: which file, and why.
        self.problems: list[str] = []
        self._problem_files: list[Path] = []

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"CertStore({str(self._path)!r})"

    # -- reading --

    def entries(self) -> list[StoredCertificate]:
        """Scan the store directory; unreadable files go to :attr:`problems` instead.

        A store directory that does not exist is an empty store.
        """
        self.problems = []
        self._problem_files = []
        try:
            candidates = sorted(self._path.iterdir()) if self._path.is_dir() else []
        except OSError as exc:
            self._note(self._path, f"{self._path}: cannot list it ({exc.strerror or exc})")
            return []
        if self._path.exists() and not self._path.is_dir():
            self._note(self._path, f"{self._path}: the certificate store is not a directory")
        found = []
        for candidate in candidates:
            if candidate.name.startswith(".") or candidate.suffix.lower() not in _SUFFIXES:
                continue
            if candidate.is_dir():
                continue
            try:
                found.append(_load_entry(candidate, self._password))
            except CertificateError as exc:
                self._note(candidate, str(exc))
        return found

    def _note(self, path: Path, problem: str) -> None:
        self.problems.append(problem)
        self._problem_files.append(path)

    def find(self, identifier: str, by: Lookup = "name", *,
             with_key: bool = False) -> StoredCertificate:
        """The one certificate ``identifier`` designates; :class:`CertificateError` otherwise.

        ``by="name"``: common name, friendly name, file stem or file name (exact case first,
        then ignoring case), or a path to a certificate file.  ``by="hash"``: SHA-1 or SHA-256
        thumbprint, in any of the forms :func:`parse_thumbprint` reads.  ``with_key``: the
        caller needs the private key (a server), so among several matches the only one that
        has a key is the one meant.
        """
        _check_by(by)
        if not isinstance(identifier, str):
            raise ArgumentError(
                f"a certificate identifier is a str, not {type(identifier).__name__}"
            )
        if by == "hash":
            algorithm, digits = parse_thumbprint(identifier)
            entries = self.entries()
            matches = [e for e in entries if getattr(e, algorithm) == digits]
            label = "SHA-1" if algorithm == "sha1" else "SHA-256"
            asked = f"with {label} thumbprint {format_thumbprint(digits)}"
            return self._one(asked, matches, entries, identifier=None, with_key=with_key)
        if not identifier.strip():
            raise CertificateError(
                "certificate name is empty: give the subject common name, the friendly name "
                "or the file name of a certificate in the store (`sslsock cert list` shows "
                "them)"
            )
        direct = _as_file(identifier)
        if direct is not None:
            return _load_entry(direct, self._password)
        entries = self.entries()
        matches = [e for e in entries if identifier in e.names()]
        if not matches:
            folded = identifier.casefold()
            matches = [e for e in entries if folded in (n.casefold() for n in e.names())]
        return self._one(f'named "{identifier}"', matches, entries, identifier=identifier,
                         with_key=with_key)

    def _one(
        self,
        asked: str,
        matches: list[StoredCertificate],
        entries: list[StoredCertificate],
        identifier: str | None,
        with_key: bool = False,
    ) -> StoredCertificate:
        if len(matches) == 1:
            return matches[0]
        keyed = [m for m in matches if m.has_key]
        if with_key and len(keyed) == 1:
            return keyed[0]  # the others could not serve: not a real ambiguity
        if matches:
            listed = ", ".join(f"{m.path.name} (SHA-1 {m.certmgr_thumbprint})" for m in matches)
            if len({m.sha1 for m in matches}) == 1:
                advice = "They are copies of one certificate: name one by its file name"
            else:
                advice = "Identify it by hash (its SHA-1 thumbprint) or by its file name"
            raise CertificateError(
                f"the certificate {asked} is ambiguous: {len(matches)} certificates in "
                f"{self._path} match: {listed}. {advice}, or remove the copies you do not "
                f"need (`sslsock cert remove`)"
            )
        # Nothing matched.  A file of that name that could not be read explains it best.
        for path, problem in zip(self._problem_files, self.problems):
            if identifier is not None and identifier in (path.stem, path.name):
                raise CertificateError(f'certificate "{identifier}": {problem}')
        if not self._path.exists():
            where = (
                f"the certificate store {self._path} does not exist (set {STORE_ENV} to use "
                f"another directory). `sslsock cert import FILE` or `sslsock cert create NAME` "
                f"creates it"
            )
        else:
            names = ", ".join(e.path.name for e in entries[:10])
            more = f" and {len(entries) - 10} more" if len(entries) > 10 else ""
            holds = f": {names}{more}" if entries else ""
            where = (
                f"it looked in the certificate store {self._path}, which holds "
                f"{len(entries)} certificate{'s' if len(entries) != 1 else ''}{holds}. "
                f"{_LIST_HINT}, or `sslsock cert import FILE` to add one"
            )
        message = f"no certificate {asked}: {where}"
        if identifier is not None and ("/" in identifier or os.sep in identifier):
            message += f'; there is no certificate file "{identifier}" either'
        if self.problems:
            message += (
                f". {len(self.problems)} file{'s' if len(self.problems) != 1 else ''} could "
                f"not be read: " + "; ".join(self.problems)
            )
        raise CertificateError(message)

    def load_identity(self, identifier: str, by: Lookup = "name") -> Identity:
        """Find a certificate and check that a server can use it; return it with its key.

        Checks, in order: the certificate has a private key, it is valid now, the key can be
        read (password), and the key belongs to the certificate.  Warns with
        :class:`InsecureKeyFileWarning` when the key file is readable by group or others.
        """
        entry = self.find(identifier, by, with_key=True)
        if not entry.has_key:
            raise CertificateError(
                f"{_describe(entry)} has no private key, and a server needs it. Import a "
                f'PKCS#12 file exported with its private key (certmgr.msc: "Yes, export '
                f'the private key"), or put the key in PEM as {entry.path.with_suffix(".key")} '
                f"beside {entry.path.name}"
            )
        now = _now()
        if now > entry.not_after:
            raise CertificateError(
                f"{_describe(entry)} expired on {_utc_text(entry.not_after)}: renew it, or "
                f"create a new one (`sslsock cert create`)"
            )
        if now < entry.not_before:
            raise CertificateError(
                f"{_describe(entry)} is not valid before {_utc_text(entry.not_before)}: "
                f"check this machine's clock, or wait until then"
            )
        key_file = entry.key_file
        if entry.key_world_readable and key_file is not None:
            mode = stat.S_IMODE(key_file.stat().st_mode)
            warnings.warn(
                InsecureKeyFileWarning(
                    f"the private key file {key_file} can be read by other users "
                    f"(mode {mode:04o}): run chmod 600 {key_file}"
                ),
                stacklevel=2,
            )
        key, _ = _load_key(entry, self._password)
        if _public_der(key) != _public_der(entry.certificate):
            raise CertificateError(
                f"the private key in {key_file} does not match the certificate in "
                f"{entry.path} (SHA-1 {entry.certmgr_thumbprint}): they do not belong "
                f"together; put the key that was made with this certificate beside it"
            )
        key_pem = bytearray(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Identity(_chain_pem(entry), key_pem, entry)

    def generation(self) -> Generation:
        """A value that changes whenever a file of the store is added, removed or rewritten
        (names, sizes, modification times and inodes; no file is read).  TLS contexts built
        from the store are reused while it stays the same.

        Adding or removing a file changes the directory's time, which one ``stat`` sees;
        the files themselves are looked at again when it changed, when it is recent, or
        after :data:`RESCAN_SECONDS` (a file rewritten in place)."""
        try:
            dir_ns = os.stat(self._path).st_mtime_ns
        except OSError:
            return ()
        now = time.monotonic()
        seen = _generations.get(self._path)
        if (seen is not None and seen[0] == dir_ns and now - seen[1] < RESCAN_SECONDS
                and time.time_ns() - dir_ns > _RECENT_NS):
            return seen[2]
        found = []
        try:
            with os.scandir(self._path) as it:
                for e in it:
                    if e.name[0] != "." and os.path.splitext(e.name)[1].lower() in _SUFFIXES:
                        st = e.stat()
                        found.append((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            return ()
        found.sort()
        generation = tuple(found)
        _generations[self._path] = (dir_ns, now, generation)
        return generation

    def trust_pem(self) -> bytes:
        """Every certificate of the store (leaves and chains, each once), as a PEM bundle:
        extra trust anchors when verifying a peer."""
        seen: set[str] = set()
        out = []
        for entry in self.entries():
            for certificate in (entry.certificate, *entry.chain):
                digest = certificate.fingerprint(hashes.SHA256()).hex()
                if digest not in seen:
                    seen.add(digest)
                    out.append(certificate.public_bytes(serialization.Encoding.PEM))
        return b"".join(out)

    # -- writing (for `sslsock cert ...`) --

    def import_file(
        self,
        src: str | Path,
        password: bytes | str | None = None,
        name: str | None = None,
        replace: bool = False,
    ) -> StoredCertificate:
        """Check a certificate file and copy it into the store as ``NAME.<suffix>``.

        ``replace=True`` renews the certificate stored as ``NAME``: the new file (and key)
        take the place of the old ones, each file renamed into place whole, so listeners
        serving ``NAME`` pick the renewed certificate up (see docs/deployment.md).  A
        replacement that has no private key while the old one had one is refused.

        ``password`` opens ``src`` (default: the store's password).  ``NAME.crt`` brings its
        ``NAME.key`` along.  The file is copied as it is, unless it needed a password other
        than the store's: then the key is re-encoded under the store password (or none), so
        the store can open what it holds.  ``name`` (default: the file stem) must be new in
        the store, and so must the certificate.
        """
        src = Path(src).expanduser()
        suffix = src.suffix.lower()
        if suffix == ".key":
            raise CertificateError(
                f"{src}: import the certificate file ({src.stem}.crt); the key beside it "
                f"comes along"
            )
        if suffix not in _SUFFIXES:
            raise CertificateError(
                f"{src}: unknown certificate file type; the store takes "
                f"{', '.join(sorted(_SUFFIXES))} files"
            )
        if not src.is_file():
            raise CertificateError(f"{src}: no such file to import")
        stem = name if name is not None else src.stem
        old_files: list[Path] = []
        if replace:
            old_files = self._existing_files(stem)
            if not old_files:
                raise CertificateError(
                    f'the store has no certificate named "{stem}" to replace: import it '
                    "without --replace")
        else:
            self._check_new(stem)
        source_password = (
            _Password.of(password, "password= argument") if password is not None else self._password
        )
        data = _read(src)
        entry = _load_entry(src, source_password)
        for existing in self.entries():
            if existing.sha256 == entry.sha256 and replace and existing.path in old_files:
                raise CertificateError(
                    f"{src}: this is the certificate already stored as {existing.path.name} "
                    "(same SHA-1 "
                    f"{entry.certmgr_thumbprint}): nothing to renew")
            if existing.sha256 == entry.sha256:
                raise CertificateError(
                    f"{src}: this certificate (SHA-1 {entry.certmgr_thumbprint}) is already in "
                    f"the store as {existing.path.name}"
                )
        key: PrivateKeyTypes | None = None
        used_password = False
        if _format_of(src, data) == "pkcs12":
            used_password = _open_pkcs12(src, data, source_password)[1]
        if entry.has_key:
            key, key_used = _load_key(entry, source_password)
            used_password = used_password or key_used
            if _public_der(key) != _public_der(entry.certificate):
                raise CertificateError(
                    f"the private key in {entry.key_file} does not match the certificate in "
                    f"{src}: they do not belong together"
                )
        verbatim = not used_password or source_password.value == self._password.value
        dest = self._path / f"{stem}{suffix}"
        files: list[tuple[Path, bytes, bool]] = []
        if verbatim:
            files.append((dest, data, entry.has_key and entry.key_path is None))
            if entry.key_path is not None:
                files.append((dest.with_suffix(".key"), _read(entry.key_path), True))
        elif _SUFFIXES[suffix] == "pkcs12":
            files.append((dest, self._pkcs12(entry, key), key is not None))
        elif entry.key_path is not None:
            assert key is not None
            files.append((dest, data, False))
            files.append((dest.with_suffix(".key"), self._key_pem(key), True))
        else:
            assert key is not None
            files.append((dest, _chain_pem(entry) + self._key_pem(key), True))
        if replace:
            had_key = any(p.suffix == ".key" or _is_private_file(p) for p in old_files)
            if had_key and not entry.has_key:
                raise CertificateError(
                    f'{src}: no private key with it, and "{stem}" has one: a server could not '
                    f"use the renewed certificate (import its key too: {src.stem}.key beside "
                    "it, or a PKCS#12 / PEM file holding both)")
            self._replace_files(files, old_files)
        else:
            self._write_files(files)
        return _load_entry(dest, self._password)

    def _existing_files(self, stem: str) -> list[Path]:
        self._check_name(stem)
        return [self._path / f"{stem}{suffix}" for suffix in (*_SUFFIXES, ".key")
                if (self._path / f"{stem}{suffix}").exists()]

    def _replace_files(self, files: list[tuple[Path, bytes, bool]], old: list[Path]) -> None:
        """Write the new files beside the old ones (hidden names), then rename each over
        its final name (the key before the certificate) and remove old files that have no
        successor: a reader sees whole files only."""
        temps: list[tuple[Path, Path]] = []
        try:
            for path, data, private in files:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
                tmp.unlink(missing_ok=True)
                _write_new(tmp, data, private=private)
                temps.append((tmp, path))
        except BaseException:
            for tmp, _ in temps:
                tmp.unlink(missing_ok=True)
            raise
        temps.sort(key=lambda t: t[1].suffix != ".key")
        for tmp, path in temps:
            os.replace(tmp, path)
        finals = {path for _, path in temps}
        for path in old:
            if path not in finals:
                path.unlink(missing_ok=True)

    def remove(self, identifier: str, by: Lookup = "name") -> StoredCertificate:
        """Delete a certificate file of the store (and its ``NAME.key``); return what it was."""
        entry = self.find(identifier, by)
        if entry.path.parent.resolve() != self._path.resolve():
            raise CertificateError(
                f"{entry.path} is not in the certificate store {self._path}: not removing it"
            )
        for path in (entry.path, entry.key_path):
            if path is not None:
                try:
                    path.unlink()
                except OSError as exc:
                    raise CertificateError(
                        f"{path}: cannot remove it ({exc.strerror or exc})"
                    ) from None
        return entry

    def export(
        self,
        identifier: str,
        by: Lookup,
        dest: str | Path,
        fmt: Literal["pem", "pfx"] = "pem",
        password: bytes | str | None = None,
    ) -> Path:
        """Write a certificate, its chain and its key (if it has one) to a new file ``dest``.

        ``fmt="pem"``: certificates then the PKCS#8 key, encrypted with ``password`` if given.
        ``fmt="pfx"``: PKCS#12, encrypted with ``password`` if given, friendly name kept.
        A file holding a key is written with mode 0600.  ``dest`` must not exist.
        """
        if fmt not in ("pem", "pfx"):
            raise ArgumentError(f"export format must be 'pem' or 'pfx', not {fmt!r}")
        entry = self.find(identifier, by)
        key = _load_key(entry, self._password)[0] if entry.has_key else None
        encryption = _encryption(_Password.of(password, "").value)
        if fmt == "pem":
            data = _chain_pem(entry)
            if key is not None:
                data += key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
                )
        else:
            data = _pkcs12_bytes(entry, key, encryption)
        dest = Path(dest).expanduser()
        _write_new(dest, data, private=key is not None)
        return dest

    def create_self_signed(
        self,
        name: str,
        hosts: Sequence[str] = _certgen.DEFAULT_HOSTS,
        key_type: str = "ec",
        days: int = 825,
    ) -> StoredCertificate:
        """Make a self-signed development certificate with common name ``name`` and store it
        as ``NAME.pem`` (certificate and key, mode 0600)."""
        self._check_new(name)
        issued = _certgen.make_self_signed(name, hosts=hosts, key_type=key_type, days=days)
        dest = self._path / f"{name}.pem"
        self._write_files([(dest, issued.cert_pem() + self._key_pem(issued.key), True)])
        return _load_entry(dest, self._password)

    # -- helpers for writing --

    def _check_new(self, name: str) -> None:
        self._check_name(name)
        if self._path.is_dir():
            for suffix in (*_SUFFIXES, ".key"):
                taken = self._path / f"{name}{suffix}"
                if taken.exists():
                    raise CertificateError(
                        f'the store already has a certificate named "{name}" ({taken}): '
                        f"remove it first (`sslsock cert remove`), renew it (`sslsock cert "
                        f"import FILE --name {name} --replace`) or choose another name"
                    )

    @staticmethod
    def _check_name(name: str) -> None:
        if (
            not name
            or name.startswith(".")
            or "/" in name
            or "\\" in name
            or os.sep in name
            or "\0" in name
        ):
            raise CertificateError(
                f"certificate name {name!r} cannot be a file name in the store: use letters, "
                f"digits, '-', '_' and '.', not starting with '.'"
            )

    def _key_pem(self, key: PrivateKeyTypes) -> bytes:
        """``key`` as PKCS#8 PEM, encrypted with the store password if there is one."""
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            _encryption(self._password.value),
        )

    def _pkcs12(self, entry: StoredCertificate, key: PrivateKeyTypes | None) -> bytes:
        """``entry`` as PKCS#12, encrypted with the store password if there is one."""
        return _pkcs12_bytes(entry, key, _encryption(self._password.value))

    def _write_files(self, files: list[tuple[Path, bytes, bool]]) -> None:
        """Create the store directory if needed, then write new files (all or none)."""
        if not self._path.is_dir():
            try:
                self._path.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self._path, 0o700)  # mkdir's mode is filtered by the umask
            except OSError as exc:
                raise CertificateError(
                    f"cannot create the certificate store {self._path} ({exc.strerror or exc})"
                ) from None
        written: list[Path] = []
        try:
            for path, data, private in files:
                _write_new(path, data, private=private)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise


def _check_by(by: str) -> None:
    if by not in ("name", "hash"):
        raise ArgumentError(f"look a certificate up by 'name' or 'hash', not {by!r}")


def _as_file(identifier: str) -> Path | None:
    """The file an identifier names, if it names one (the [extension] of name lookup)."""
    looks_like_path = "/" in identifier or os.sep in identifier or identifier.startswith("~")
    try:
        candidate = Path(identifier).expanduser()
        named = candidate.suffix.lower() in _SUFFIXES or looks_like_path
        return candidate if named and candidate.is_file() else None
    except (OSError, RuntimeError, ValueError):
        # "~nosuchuser/...", a name longer than the system allows, a NUL character: not a
        # file that can be read, so the identifier is a name (found fuzzing)
        return None


# The key types a PKCS#12 file can carry (those that sign certificates).
_PKCS12_KEYS = (
    rsa.RSAPrivateKey,
    dsa.DSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _encryption(password: bytes | None) -> serialization.KeySerializationEncryption:
    if password:
        return serialization.BestAvailableEncryption(password)
    return serialization.NoEncryption()


def _pkcs12_bytes(
    entry: StoredCertificate,
    key: PrivateKeyTypes | None,
    encryption: serialization.KeySerializationEncryption,
) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        entry.name.encode("utf-8"),
        _pkcs12_key(key),
        entry.certificate,
        list(entry.chain) or None,
        encryption,
    )


def _chain_pem(entry: StoredCertificate) -> bytes:
    certs = (entry.certificate, *entry.chain)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pkcs12_key(key: PrivateKeyTypes | None) -> pkcs12.PKCS12PrivateKeyTypes | None:
    """The key, if PKCS#12 can hold it (X25519/X448/DH keys cannot sign certificates)."""
    if key is None:
        return None
    if not isinstance(key, _PKCS12_KEYS):
        raise CertificateError(f"a {type(key).__name__} cannot go in a PKCS#12 file")
    return key


def _is_private_file(path: Path) -> bool:
    """Whether a store file holds a private key (PKCS#12 files are taken as holding one)."""
    if path.suffix.lower() in (".pfx", ".p12"):
        return True
    try:
        return any(_is_key_label(label) for label, _ in _pem_blocks(path.read_bytes()))
    except OSError:
        return False


def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    """Create ``path`` (it must not exist) with ``data``; mode 0600 when ``private``."""
    mode = 0o600 if private else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertificateError(f"{path} already exists: not replacing it") from None
    except OSError as exc:
        raise CertificateError(f"cannot create {path} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # exactly this mode, whatever the umask
            out.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
