"""Certificate generation with ``cryptography``: test certificates and development certificates.

Used by the test suite (certificates are made at test time, never committed) and by
``sslsock cert create`` (the reference's "How to create an SSL certificate?").

Decisions:

- Three shapes only: a CA (:func:`make_ca`), a leaf issued by it (:func:`make_leaf`), and a
  self-signed development certificate (:func:`make_self_signed`).  Anything fancier belongs
  to a real PKI.
- Validity starts five minutes in the past, so that a peer whose clock is slightly behind
  does not see a "not yet valid" certificate.
- Host names go into subjectAltName (``DNSName``, or ``IPAddress`` for an IP literal): TLS
  clients ignore the common name for host checks.  The common name is only a label, the one
  :class:`~sslsock._certs.store.CertStore` matches by name.
- A self-signed development certificate is a leaf (``CA:FALSE``) that OpenSSL 3 accepts as
  its own trust anchor: put it in a trust store (or the sslsock store) and a client can
  verify the server.  It is not a CA, so it cannot be used to issue other certificates.
- ``keyEncipherment`` is only set for RSA keys; it means nothing for EC or Ed25519 keys.
- Files holding a private key are written with mode 0600, whatever the umask.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sslsock._core.errors import ArgumentError

__all__ = [
    "DEFAULT_HOSTS",
    "KEY_TYPES",
    "Issued",
    "make_ca",
    "make_leaf",
    "make_self_signed",
]

#: The key types accepted by ``key_type``.  ``rsa1024`` exists to test the rejection of weak
#: keys (OpenSSL's default security level refuses it); do not serve it.
KEY_TYPES = ("ec", "ec384", "rsa2048", "rsa3072", "rsa4096", "rsa1024", "ed25519")

#: Names a development server on this machine answers to.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")

# The private keys this module makes (all of them can sign certificates).
PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]

# Clock skew tolerated between the machine that makes a certificate and its peers.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass
class Issued:
    """A certificate with its private key and the issuer certificates above it.

    ``chain`` holds the issuers only, nearest first; the leaf is ``certificate``.
    ``repr()`` does not show the key.
    """

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: list[x509.Certificate] = field(default_factory=list)

    def cert_pem(self) -> bytes:
        """The certificate then its chain, PEM: what a server sends."""
        certs = [self.certificate, *self.chain]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted with ``password`` if one is given."""
        encryption: serialization.KeySerializationEncryption
        if password:
            encryption = serialization.BestAvailableEncryption(password)
        else:
            encryption = serialization.NoEncryption()
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def write_pem(
        self, path: str | Path, password: bytes | None = None, split: bool = False
    ) -> list[Path]:
        """Write PEM files and return their paths, certificate file first.

        ``split=False``: one file at ``path`` with the certificate, chain and key (mode 0600).
        ``split=True``: ``NAME.crt`` (certificate and chain) and ``NAME.key`` (mode 0600)
        beside each other, ``NAME`` being ``path`` without its suffix.  Existing files are
        replaced.
        """
        path = Path(path)
        if not split:
            _write_file(path, self.cert_pem() + self.key_pem(password), private=True)
            return [path]
        crt, key = path.with_suffix(".crt"), path.with_suffix(".key")
        _write_file(crt, self.cert_pem(), private=False)
        _write_file(key, self.key_pem(password), private=True)
        return [crt, key]

    def write_pkcs12(
        self,
        path: str | Path,
        password: bytes | None,
        friendly_name: str | None = None,
        *,
        legacy: bool = False,
    ) -> Path:
        """Write a PKCS#12 file (``.pfx``/``.p12``) with key, certificate and chain (mode 0600).

        ``password=None`` writes an unencrypted file.  ``legacy=True`` uses the algorithms of
        older Windows exports (3DES and SHA-1 MAC) instead of AES-256, to test that such
        files still load.
        """
        path = Path(path)
        encryption: serialization.KeySerializationEncryption
        if password is None:
            encryption = serialization.NoEncryption()
        elif legacy:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())
                .build(password)
            )
        else:
            encryption = serialization.BestAvailableEncryption(password)
        data = pkcs12.serialize_key_and_certificates(
            friendly_name.encode("utf-8") if friendly_name else None,
            self.key,
            self.certificate,
            self.chain or None,
            encryption,
        )
        _write_file(path, data, private=True)
        return path


def make_ca(common_name: str = "sslsock test CA", key_type: str = "ec", days: int = 365) -> Issued:
    """A self-signed certification authority, able to issue leaf certificates."""
    key = _generate_key(key_type)
    name = _name(common_name)
    start = _now() - _BACKDATE
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
    )
    return Issued(builder.sign(key, _hash_for(key)), key, [])


def make_leaf(
    issuer: Issued,
    common_name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    key_type: str = "ec",
    days: int = 365,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    client: bool = False,
) -> Issued:
    """A server (and, with ``client=True``, client) certificate signed by ``issuer``.

    ``not_before``/``not_after`` override the validity, to make expired or not-yet-valid
    certificates for tests (naive datetimes are taken as UTC).  When only one is given the
    other is derived so the period stays ``days`` long and, if possible, includes now.
    """
    key = _generate_key(key_type)
    start, end = _validity(days, not_before, not_after)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    certificate = builder.sign(issuer.key, _hash_for(issuer.key))
    return Issued(certificate, key, [issuer.certificate, *issuer.chain])


def make_self_signed(
    common_name: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    key_type: str = "ec",
    days: int = 825,
    client: bool = False,
) -> Issued:
    """A self-signed development server certificate, usable as its own trust anchor.

    825 days is the longest validity Apple platforms accept for a TLS server certificate.
    ``client=True`` adds the clientAuth usage, so the same certificate can also identify a
    client in mutual TLS.
    """
    key = _generate_key(key_type)
    name = _name(common_name)
    start = _now() - _BACKDATE
    public = key.public_key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    return Issued(builder.sign(key, _hash_for(key)), key, [])


# ---------------------------------------------------------------------------------------


def _generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("rsa") and key_type in KEY_TYPES:
        # 65537: the public exponent everybody uses (and the only one cryptography advises).
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ArgumentError(f"unknown key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The signature hash that suits the signing key (Ed25519 has its own, hence None)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(dns_name(host)))
    return x509.SubjectAlternativeName(names)


_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def dns_name(host: str) -> str:
    """``host`` as a certificate's DNS name (internationalised names as A-labels,
    "xn--...", as RFC 5280 requires); ArgumentError when it is no host name at all, so that
    such text never ends up in a certificate."""
    usage = ("a host name is labels of letters, digits and '-' joined by dots "
             "(srv.example.lan, a leading *. for a wildcard), or an IP address")
    try:
        ascii_name = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ArgumentError(f"host {host!r} is not a valid host name: {usage}") from None
    labels = ascii_name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    bad = next((label for label in labels if not _LABEL.fullmatch(label)), None)
    if bad is not None or len(ascii_name) > 253:
        why = (f"the part {bad!r} is not a label" if bad is not None
               else "it is longer than 253 characters")
        raise ArgumentError(f"host {host!r} is not a valid host name ({why}): {usage}")
    return ascii_name


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _validity(
    days: int, not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    length = datetime.timedelta(days=days)
    if not_before is not None:
        start = _utc(not_before)
    elif not_after is not None:
        start = min(_now() - _BACKDATE, _utc(not_after) - length)
    else:
        start = _now() - _BACKDATE
    end = _utc(not_after) if not_after is not None else start + length
    if end <= start:
        raise ArgumentError(f"certificate validity ends ({end}) before it starts ({start})")
    return start, end


def _write_file(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` to ``path``, replacing it; mode 0600 for ``private`` files."""
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        if private:
            os.fchmod(fd, mode)  # the file may have existed with a wider mode
        out.write(data)
