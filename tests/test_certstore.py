"""The certificate store (SPEC section 4): lookups, error messages, key hygiene.

Every certificate is made here, in ``tmp_path``, with :mod:`sslsock._certs.generate`.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from sslsock._certs import generate as _certgen
from sslsock._certs.store import (
    CertStore,
    Identity,
    InsecureKeyFileWarning,
    StoredCertificate,
    default_store_path,
    format_thumbprint,
    parse_thumbprint,
)
from sslsock._core.errors import ArgumentError, CertificateError

# The reference's own example of a thumbprint, with its typo ("of" for "0f").
REFERENCE_HASH = "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 of 24"
LRM = "\u200e"  # what certmgr.msc copies in front of the thumbprint
UTC = datetime.timezone.utc


# --- fixtures and helpers -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSLSOCK_CERT_PASSWORD", "SSLSOCK_CERT_STORE", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> _certgen.Issued:
    return _certgen.make_ca()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    return path


def leaf(ca: _certgen.Issued, name: str = "server", **kwargs: object) -> _certgen.Issued:
    return _certgen.make_leaf(ca, name, **kwargs)  # type: ignore[arg-type]


def key_marker(key_pem: bytes | bytearray) -> str:
    """A distinctive base64 chunk of a PEM private key (from the middle of its body)."""
    body = bytes(key_pem).decode().splitlines()[1]
    return body[8:40]


def assert_no_key(marker: str, *texts: object) -> None:
    for text in texts:
        assert marker not in str(text)
        assert marker not in repr(text)
        assert "-----BEGIN" not in str(text)


def message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# --- thumbprints ----------------------------------------------------------------------


def test_parse_sha1_spaces_mixed_case_and_invisible_marks(ca: _certgen.Issued) -> None:
    digest = ca.certificate.fingerprint(hashes.SHA1()).hex()
    spaced = " ".join(digest[i : i + 2] for i in range(0, 40, 2))
    mixed = "".join(c.upper() if i % 3 else c for i, c in enumerate(spaced))
    for text in (digest, spaced, mixed, LRM + spaced, "\t" + spaced.replace(" ", "\t") + " "):
        assert parse_thumbprint(text) == ("sha1", digest.upper())


def test_parse_sha256_and_colons(ca: _certgen.Issued) -> None:
    digest = ca.certificate.fingerprint(hashes.SHA256()).hex()
    colons = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    assert parse_thumbprint(digest) == ("sha256", digest.upper())
    assert parse_thumbprint(colons) == ("sha256", digest.upper())


@pytest.mark.parametrize("prefix", ["", LRM])
def test_reference_example_names_the_letter_o(prefix: str) -> None:
    with pytest.raises(CertificateError) as excinfo:
        parse_thumbprint(prefix + REFERENCE_HASH)
    text = message(excinfo)
    assert f'certificate hash "{REFERENCE_HASH}"' in text
    assert "non-hexadecimal characters: 'o' at position 54" in text
    assert '"of" looks like a typo for the hex pair "0f"' in text
    assert "40 hex digits" in text and "Thumbprint" in text and "certmgr.msc" in text
    assert isinstance(excinfo.value, ValueError)


def test_every_bad_character_is_listed() -> None:
    with pytest.raises(CertificateError) as excinfo:
        parse_thumbprint("zz" + "a" * 36 + "g!")
    text = message(excinfo)
    for part in (
        "'z' at position 0",
        "'z' at position 1",
        "'g' at position 38",
        "'!' at position 39",
    ):
        assert part in text


def test_a_name_given_as_hash_says_to_look_up_by_name() -> None:
    with pytest.raises(CertificateError, match="look it up by name"):
        parse_thumbprint("my web server")


@pytest.mark.parametrize("digits", [38, 41, 63, 65])
def test_wrong_length_says_found_and_expected(digits: int) -> None:
    with pytest.raises(CertificateError) as excinfo:
        parse_thumbprint("a" * digits)
    text = message(excinfo)
    assert f"has {digits} hexadecimal digits" in text
    assert "40" in text and "64" in text


def test_wrong_length_points_at_groups_that_are_not_pairs() -> None:
    with pytest.raises(CertificateError) as excinfo:
        parse_thumbprint("9d a4 8 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 0f 24")
    assert '"8" at position 6' in message(excinfo)


@pytest.mark.parametrize("text", ["", "   ", LRM])
def test_empty_hash(text: str) -> None:
    with pytest.raises(CertificateError, match="empty"):
        parse_thumbprint(text)


def test_format_thumbprint_is_certmgr_form() -> None:
    assert format_thumbprint("9DA484FC") == "9d a4 84 fc"
    assert format_thumbprint("9d A4 84fc") == "9d a4 84 fc"


# --- lookups --------------------------------------------------------------------------


def test_find_by_common_name_stem_file_name_and_friendly_name(
    ca: _certgen.Issued, store_dir: Path
) -> None:
    leaf(ca, "www.example.test").write_pem(store_dir / "web.pem")
    leaf(ca, "api").write_pkcs12(store_dir / "api-2024.pfx", None, friendly_name="API server")
    store = CertStore(store_dir)
    assert store.find("www.example.test").path.name == "web.pem"
    assert store.find("web").path.name == "web.pem"
    assert store.find("web.pem").path.name == "web.pem"
    pfx = store.find("API server")
    assert pfx.path.name == "api-2024.pfx" and pfx.name == "API server" and pfx.has_key
    assert store.find("api-2024").friendly_name == "API server"
    assert store.find("api").path.name == "api-2024.pfx"  # by common name
    assert store.find("web").name == "web"


def test_name_exact_case_first_then_ignoring_case(ca: _certgen.Issued, store_dir: Path) -> None:
    leaf(ca, "Server").write_pem(store_dir / "upper.pem")
    leaf(ca, "server").write_pem(store_dir / "lower.pem")
    leaf(ca, "Mail").write_pem(store_dir / "mail.pem")
    store = CertStore(store_dir)
    assert store.find("server").path.name == "lower.pem"
    assert store.find("Server").path.name == "upper.pem"
    assert store.find("MAIL").path.name == "mail.pem"  # no exact match: case ignored
    with pytest.raises(CertificateError, match="ambiguous"):
        store.find("SERVER")


def test_name_that_is_a_path_loads_that_file(ca: _certgen.Issued, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    [crt, _] = leaf(ca, "direct").write_pem(outside / "direct", split=True)
    store = CertStore(tmp_path / "empty-store")
    found = store.find(str(crt))
    assert found.path == crt and found.key_path == outside / "direct.key"
    with store.load_identity(str(crt)) as identity:
        assert identity.certificate.common_name == "direct"
    with pytest.raises(CertificateError, match="no certificate file"):
        store.find(str(outside / "missing.pem"))


def test_find_by_hash_sha1_sha256_and_certmgr_form(ca: _certgen.Issued, store_dir: Path) -> None:
    issued = leaf(ca, "hashed")
    issued.write_pem(store_dir / "hashed.pem")
    leaf(ca, "other").write_pem(store_dir / "other.pem")
    store = CertStore(store_dir)
    sha1 = issued.certificate.fingerprint(hashes.SHA1()).hex()
    sha256 = issued.certificate.fingerprint(hashes.SHA256()).hex()
    spaced_mixed = " ".join(
        (sha1[i : i + 2].upper() if i % 4 else sha1[i : i + 2]) for i in range(0, 40, 2)
    )
    for identifier in (sha1, sha1.upper(), spaced_mixed, LRM + format_thumbprint(sha1), sha256):
        assert store.find(identifier, by="hash").path.name == "hashed.pem"
    found = store.find(sha1, by="hash")
    assert found.sha1 == sha1.upper() and found.sha256 == sha256.upper()
    assert found.certmgr_thumbprint == format_thumbprint(sha1)


def test_split_crt_and_key_der_cer_and_chain(ca: _certgen.Issued, store_dir: Path) -> None:
    issued = leaf(ca, "split", key_type="rsa2048")
    issued.write_pem(store_dir / "split", split=True)
    (store_dir / "root.cer").write_bytes(ca.certificate.public_bytes(serialization.Encoding.DER))
    store = CertStore(store_dir)
    split = store.find("split")
    assert split.key_path == store_dir / "split.key" and split.has_key
    assert split.chain == (ca.certificate,)
    root = store.find("sslsock test CA")
    assert root.path.name == "root.cer" and not root.has_key and root.chain == ()
    assert [e.path.name for e in store.entries()] == ["root.cer", "split.crt"]
    assert store.problems == []


def test_stored_certificate_properties(ca: _certgen.Issued, store_dir: Path) -> None:
    issued = leaf(ca, "props")
    issued.write_pem(store_dir / "props.pem")
    stored = CertStore(store_dir).find("props")
    assert stored.common_name == "props"
    assert stored.subject == "CN=props"
    assert stored.not_before.tzinfo is not None and stored.not_after.tzinfo is not None
    assert not stored.expired and not stored.not_yet_valid
    assert stored.key_file == store_dir / "props.pem"
    assert not stored.key_world_readable
    assert stored.names() == ("props", "props.pem")


# --- lookup errors --------------------------------------------------------------------


def test_not_found_says_where_it_looked(ca: _certgen.Issued, store_dir: Path) -> None:
    leaf(ca, "one").write_pem(store_dir / "one.pem")
    leaf(ca, "two").write_pem(store_dir / "two.pem")
    store = CertStore(store_dir)
    with pytest.raises(CertificateError) as excinfo:
        store.find("three")
    text = message(excinfo)
    assert 'no certificate named "three"' in text
    assert str(store_dir) in text and "holds 2 certificates: one.pem, two.pem" in text
    assert "sslsock cert list" in text
    with pytest.raises(CertificateError) as excinfo:
        store.find("ab" * 20, by="hash")
    assert "SHA-1 thumbprint ab ab ab" in message(excinfo) and str(store_dir) in message(excinfo)


def test_missing_store_directory_is_an_empty_store(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "nowhere")
    assert store.entries() == [] and store.problems == [] and store.trust_pem() == b""
    with pytest.raises(CertificateError) as excinfo:
        store.find("server")
    assert "does not exist" in message(excinfo) and str(tmp_path / "nowhere") in message(excinfo)


def test_several_matches_list_files_and_thumbprints(ca: _certgen.Issued, store_dir: Path) -> None:
    first, second = leaf(ca, "twin"), leaf(ca, "twin")
    first.write_pem(store_dir / "twin-a.pem")
    second.write_pem(store_dir / "twin-b.pem")
    with pytest.raises(CertificateError) as excinfo:
        CertStore(store_dir).find("twin")
    text = message(excinfo)
    assert "2 certificates" in text and "twin-a.pem" in text and "twin-b.pem" in text
    for issued in (first, second):
        sha1 = issued.certificate.fingerprint(hashes.SHA1()).hex()
        assert format_thumbprint(sha1) in text
    assert "by hash" in text


def test_copies_of_one_certificate_are_ambiguous_by_hash(
    ca: _certgen.Issued, store_dir: Path
) -> None:
    issued = leaf(ca, "copy")
    issued.write_pem(store_dir / "copy1.pem")
    issued.write_pkcs12(store_dir / "copy2.pfx", None)
    sha1 = issued.certificate.fingerprint(hashes.SHA1()).hex()
    store = CertStore(store_dir)
    with pytest.raises(CertificateError, match="copies of one certificate"):
        store.find(sha1, by="hash")
    assert store.find("copy2.pfx").path.name == "copy2.pfx"


@pytest.mark.parametrize("by", ["name", "hash"])
@pytest.mark.parametrize("identifier", ["", "  "])
def test_empty_identifier(store_dir: Path, identifier: str, by: str) -> None:
    with pytest.raises(CertificateError, match="empty"):
        CertStore(store_dir).find(identifier, by=by)  # type: ignore[arg-type]


def test_bad_hash_in_find_names_the_character(store_dir: Path) -> None:
    with pytest.raises(CertificateError, match="'o' at position 54"):
        CertStore(store_dir).find(REFERENCE_HASH, by="hash")


def test_unknown_lookup_kind(store_dir: Path) -> None:
    with pytest.raises(ArgumentError, match="'name' or 'hash'"):
        CertStore(store_dir).find("x", by="subject")  # type: ignore[arg-type]


# --- identities and their errors ------------------------------------------------------


def test_identity_has_chain_and_matching_key(ca: _certgen.Issued, store_dir: Path) -> None:
    issued = leaf(ca, "srv")
    issued.write_pem(store_dir / "srv.pem")
    identity = CertStore(store_dir).load_identity("srv")
    certs = x509.load_pem_x509_certificates(identity.cert_chain_pem)
    assert certs == [issued.certificate, ca.certificate]
    assert isinstance(identity.key_pem, bytearray)
    key = serialization.load_pem_private_key(bytes(identity.key_pem), None)
    assert key.public_key() == issued.key.public_key()
    identity.wipe()
    assert not any(identity.key_pem) and len(identity.key_pem) > 0
    assert "wiped" in repr(identity)


def test_identity_context_manager_wipes(ca: _certgen.Issued, store_dir: Path) -> None:
    leaf(ca, "srv").write_pkcs12(store_dir / "srv.p12", None)
    with CertStore(store_dir).load_identity("srv") as identity:
        assert identity.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not any(identity.key_pem)


def test_no_private_key(ca: _certgen.Issued, store_dir: Path) -> None:
    (store_dir / "ca.pem").write_bytes(ca.cert_pem())
    issued = leaf(ca, "nokey")
    (store_dir / "nokey.crt").write_bytes(issued.cert_pem())
    store = CertStore(store_dir)
    with pytest.raises(CertificateError) as excinfo:
        store.load_identity("nokey")
    text = message(excinfo)
    assert "has no private key" in text and "PKCS#12" in text
    assert str(store_dir / "nokey.key") in text and "nokey.crt" in text
    with pytest.raises(CertificateError, match="no private key"):
        store.load_identity("ca")


def test_key_that_does_not_match(ca: _certgen.Issued, store_dir: Path) -> None:
    issued, stranger = leaf(ca, "mismatch"), leaf(ca, "stranger")
    (store_dir / "mismatch.crt").write_bytes(issued.cert_pem())
    key_file = store_dir / "mismatch.key"
    key_file.write_bytes(stranger.key_pem())
    key_file.chmod(0o600)
    with pytest.raises(CertificateError) as excinfo:
        CertStore(store_dir).load_identity("mismatch")
    text = message(excinfo)
    assert f"the private key in {key_file} does not match the certificate" in text
    assert_no_key(key_marker(stranger.key_pem()), text)


def test_expired(ca: _certgen.Issued, store_dir: Path) -> None:
    end = datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    leaf(ca, "old", not_after=end).write_pem(store_dir / "old.pem")
    store = CertStore(store_dir)
    assert store.find("old").expired
    with pytest.raises(CertificateError) as excinfo:
        store.load_identity("old")
    assert "expired on 2021-03-04 05:06:07 UTC" in message(excinfo)


def test_not_yet_valid(ca: _certgen.Issued, store_dir: Path) -> None:
    start = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(days=30)
    leaf(ca, "future", not_before=start).write_pem(store_dir / "future.pem")
    store = CertStore(store_dir)
    assert store.find("future").not_yet_valid
    with pytest.raises(CertificateError) as excinfo:
        store.load_identity("future")
    assert f"not valid before {start:%Y-%m-%d %H:%M:%S} UTC" in message(excinfo)


@pytest.fixture
def encrypted_store(ca: _certgen.Issued, store_dir: Path) -> Path:
    """An encrypted PEM (``locked``) and an encrypted PKCS#12 (``vault``), password s3cret."""
    locked = leaf(ca, "locked")
    locked.write_pem(store_dir / "locked.pem", password=b"s3cret")
    leaf(ca, "vault").write_pkcs12(store_dir / "vault.pfx", b"s3cret", friendly_name="vault")
    return store_dir


def test_encrypted_without_password(encrypted_store: Path) -> None:
    store_dir = encrypted_store
    store = CertStore(store_dir)
    with pytest.raises(CertificateError) as excinfo:
        store.load_identity("locked")
    text = message(excinfo)
    assert "encrypted" in text and "SSLSOCK_CERT_PASSWORD" in text and "password=" in text
    # The PKCS#12 file cannot even be listed: the lookup explains why.
    assert [e.name for e in store.entries()] == ["locked"]
    assert len(store.problems) == 1 and "vault.pfx" in store.problems[0]
    with pytest.raises(CertificateError) as excinfo:
        store.load_identity("vault")
    assert "vault.pfx" in message(excinfo) and "SSLSOCK_CERT_PASSWORD" in message(excinfo)
    with pytest.raises(CertificateError) as excinfo:
        store.find("00" * 20, by="hash")
    assert "could not be read" in message(excinfo) and "vault.pfx" in message(excinfo)


@pytest.mark.parametrize("name", ["locked", "vault"])
def test_wrong_password(encrypted_store: Path, name: str) -> None:
    store_dir = encrypted_store
    with pytest.raises(CertificateError) as excinfo:
        CertStore(store_dir, password="not it").load_identity(name)
    text = message(excinfo)
    assert "wrong password" in text and "(password= argument)" in text
    assert "not it" not in text


@pytest.mark.parametrize("name", ["locked", "vault"])
def test_right_password_from_env_or_argument(
    encrypted_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    store_dir = encrypted_store
    for password in ("s3cret", b"s3cret"):
        with CertStore(store_dir, password=password).load_identity(name) as identity:
            assert identity.certificate.common_name == name
    monkeypatch.setenv("SSLSOCK_CERT_PASSWORD", "s3cret")
    with CertStore(store_dir).load_identity(name) as identity:
        assert identity.certificate.common_name == name
    monkeypatch.setenv("SSLSOCK_CERT_PASSWORD", "wrong")
    with pytest.raises(CertificateError, match=r"\(SSLSOCK_CERT_PASSWORD\): wrong password"):
        CertStore(store_dir).load_identity(name)


def test_store_password_does_not_stop_unencrypted_files(
    ca: _certgen.Issued, store_dir: Path
) -> None:
    leaf(ca, "plain").write_pem(store_dir / "plain.pem")
    leaf(ca, "plainpfx").write_pkcs12(store_dir / "plainpfx.pfx", None)
    store = CertStore(store_dir, password=b"whatever")
    for name in ("plain", "plainpfx"):
        with store.load_identity(name) as identity:
            assert identity.certificate.name == name


def test_legacy_pkcs12_from_older_windows(ca: _certgen.Issued, store_dir: Path) -> None:
    leaf(ca, "old-windows").write_pkcs12(store_dir / "w.pfx", b"pw", "Old", legacy=True)
    with CertStore(store_dir, password=b"pw").load_identity("Old") as identity:
        assert identity.certificate.path.name == "w.pfx"


# --- problems, warnings, secrets ------------------------------------------------------


def test_garbage_files_are_problems_not_failures(ca: _certgen.Issued, store_dir: Path) -> None:
    leaf(ca, "good").write_pem(store_dir / "good.pem")
    issued = leaf(ca, "keyonly")
    (store_dir / "text.pem").write_text("not a certificate\n")
    (store_dir / "noise.pfx").write_bytes(os.urandom(300))
    (store_dir / "noise.der").write_bytes(b"\x30\x03\x02\x01\x05")
    (store_dir / "cut.crt").write_bytes(issued.cert_pem()[:200])
    (store_dir / "keyonly.pem").write_bytes(issued.key_pem())
    (store_dir / "dangling.crt").symlink_to(store_dir / "does-not-exist")
    (store_dir / "folder.pem").mkdir()
    (store_dir / "README.txt").write_text("ignored")
    (store_dir / ".hidden.pem").write_text("ignored too")
    store = CertStore(store_dir)
    assert [e.name for e in store.entries()] == ["good"]
    problems = "\n".join(store.problems)
    assert len(store.problems) == 6, problems
    for name in ("text.pem", "noise.pfx", "noise.der", "cut.crt", "keyonly.pem", "dangling.crt"):
        assert name in problems
    assert "not a PKCS#12 file" in problems
    assert "cannot read" in problems and "No such file" in problems
    assert "keyonly.key beside keyonly.crt" in problems
    assert_no_key(key_marker(issued.key_pem()), problems)
    assert store.find("good").name == "good"
    with pytest.raises(CertificateError) as excinfo:
        store.find("text")
    assert str(store_dir / "text.pem") in message(excinfo)


def test_world_readable_key_warns(ca: _certgen.Issued, store_dir: Path) -> None:
    issued = leaf(ca, "loose")
    [_, key_file] = issued.write_pem(store_dir / "loose", split=True)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    store = CertStore(store_dir)
    store.load_identity("loose").wipe()  # 0600: no warning (warnings are errors here)
    key_file.chmod(0o644)
    assert store.find("loose").key_world_readable
    with pytest.warns(InsecureKeyFileWarning, match=r"mode 0644.*chmod 600") as record:
        store.load_identity("loose").wipe()
    assert record[0].filename == __file__
    assert_no_key(key_marker(issued.key_pem()), *(w.message for w in record))


def test_no_key_material_in_reprs_or_messages(
    ca: _certgen.Issued, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = leaf(ca, "secret")
    issued.write_pem(store_dir / "secret.pem")
    store = CertStore(store_dir, password="hunter2-password")
    identity = store.load_identity("secret")
    marker = key_marker(identity.key_pem)
    assert marker in identity.key_pem.decode()  # the marker is real
    stored = store.find("secret")
    errors = []
    for call in (
        lambda: store.load_identity("nothing"),
        lambda: store.load_identity("sslsock test CA"),
        lambda: store.find("00" * 20, by="hash"),
    ):
        with pytest.raises(CertificateError) as excinfo:
            call()
        errors.append(excinfo.value)
    assert_no_key(marker, identity, stored, store, issued, *errors)
    assert "hunter2" not in repr(store) + repr(stored) + "".join(map(str, errors))
    assert isinstance(identity, Identity) and isinstance(stored, StoredCertificate)


# --- trust bundle ---------------------------------------------------------------------


def test_trust_pem_holds_every_certificate_once(ca: _certgen.Issued, store_dir: Path) -> None:
    first, second = leaf(ca, "first"), leaf(ca, "second")
    first.write_pem(store_dir / "first.pem")
    second.write_pkcs12(store_dir / "second.pfx", None)
    (store_dir / "ca.crt").write_bytes(ca.cert_pem())
    certs = x509.load_pem_x509_certificates(CertStore(store_dir).trust_pem())
    assert len(certs) == 3
    assert set(certs) == {first.certificate, second.certificate, ca.certificate}


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("key_type", ["ec", "rsa2048", "ed25519"])
def test_self_signed_identity_and_trust_work_with_openssl(
    tmp_path: Path, version: ssl.TLSVersion, key_type: str
) -> None:
    store = CertStore(tmp_path / "new-store")
    created = store.create_self_signed("dev", key_type=key_type)
    assert stat.S_IMODE(created.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    with store.load_identity("dev") as identity:
        cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
        cert_file.write_bytes(identity.cert_chain_pem)
        key_file.write_bytes(bytes(identity.key_pem))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=store.trust_pem().decode())
    for ctx in (server, client):
        ctx.minimum_version = ctx.maximum_version = version
    assert handshake(server, client, "localhost") == version.name.replace("v1_", "v1.")


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> str:
    left, right = socket.socketpair()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(right, server_side=True) as tls:
                tls.sendall(tls.recv(5))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(left, server_hostname=host) as tls:
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
            version = tls.version() or ""
    finally:
        thread.join(10)
    assert not failure, failure
    return version


# --- writing: import, remove, export, create ------------------------------------------


def test_import_encrypted_pfx_into_store_without_password(
    ca: _certgen.Issued, tmp_path: Path
) -> None:
    src = leaf(ca, "imported").write_pkcs12(tmp_path / "exported.pfx", b"pw", "Imported")
    store = CertStore(tmp_path / "store")
    stored = store.import_file(src, password="pw", name="web")
    assert stored.path == store.path / "web.pfx" and stored.name == "Imported"
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    with store.load_identity("web") as identity:  # re-encoded: no password needed now
        assert identity.certificate.common_name == "imported"
    with pytest.raises(CertificateError, match="already"):
        store.import_file(src, password="pw", name="again")
    with pytest.raises(CertificateError, match="already has a certificate named"):
        store.import_file(src, password="pw", name="web")


def test_import_with_store_password_copies_verbatim(ca: _certgen.Issued, tmp_path: Path) -> None:
    src = leaf(ca, "same").write_pem(tmp_path / "same.pem", password=b"pw")[0]
    store = CertStore(tmp_path / "store", password=b"pw")
    stored = store.import_file(src)
    assert stored.path.read_bytes() == src.read_bytes()
    with pytest.raises(CertificateError, match="encrypted"):
        CertStore(store.path).load_identity("same")


@pytest.mark.parametrize("split", [False, True])
def test_import_encrypted_pem_is_reencoded_for_the_store(
    ca: _certgen.Issued, tmp_path: Path, split: bool
) -> None:
    src = leaf(ca, "pemsrc").write_pem(tmp_path / "pemsrc.pem", password=b"old", split=split)[0]
    store = CertStore(tmp_path / "store", password="new")
    stored = store.import_file(src, password=b"old")
    assert stored.key_file is not None
    assert b"ENCRYPTED PRIVATE KEY" in stored.key_file.read_bytes()
    assert stat.S_IMODE(stored.key_file.stat().st_mode) == 0o600
    with store.load_identity("pemsrc") as identity:
        assert identity.certificate.common_name == "pemsrc"
    with pytest.raises(CertificateError, match="wrong password"):
        CertStore(store.path, password="old").load_identity("pemsrc")


def test_import_crt_brings_its_key_and_checks_it(ca: _certgen.Issued, tmp_path: Path) -> None:
    issued = leaf(ca, "pair")
    crt, key = issued.write_pem(tmp_path / "pair", split=True)
    store = CertStore(tmp_path / "store")
    with pytest.raises(CertificateError, match="import the certificate file"):
        store.import_file(key)
    stored = store.import_file(crt)
    assert stored.key_path == store.path / "pair.key"
    assert stat.S_IMODE(stored.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o644
    other = leaf(ca, "wrongpair")
    (tmp_path / "wrongpair.crt").write_bytes(other.cert_pem())
    (tmp_path / "wrongpair.key").write_bytes(issued.key_pem())
    with pytest.raises(CertificateError, match="does not match"):
        store.import_file(tmp_path / "wrongpair.crt")
    assert not (store.path / "wrongpair.crt").exists()


def test_remove(ca: _certgen.Issued, store_dir: Path, tmp_path: Path) -> None:
    issued = leaf(ca, "gone")
    issued.write_pem(store_dir / "gone", split=True)
    store = CertStore(store_dir)
    removed = store.remove(issued.certificate.fingerprint(hashes.SHA1()).hex(), by="hash")
    assert removed.name == "gone" and list(store_dir.iterdir()) == []
    outside = leaf(ca, "outside").write_pem(tmp_path / "outside.pem")[0]
    with pytest.raises(CertificateError, match="not in the certificate store"):
        store.remove(str(outside))
    assert outside.exists()


@pytest.mark.parametrize("password", [None, b"exportpw"])
def test_export_pem_and_pfx(
    ca: _certgen.Issued, store_dir: Path, tmp_path: Path, password: bytes | None
) -> None:
    issued = leaf(ca, "exp")
    issued.write_pkcs12(store_dir / "exp.pfx", None, "Exported")
    store = CertStore(store_dir)
    pem = store.export("exp", "name", tmp_path / "out.pem", password=password)
    data = pem.read_bytes()
    assert x509.load_pem_x509_certificates(data) == [issued.certificate, ca.certificate]
    label = b"ENCRYPTED PRIVATE KEY" if password else b"BEGIN PRIVATE KEY"
    assert label in data
    key = serialization.load_pem_private_key(
        data[data.index(b"-----BEGIN ENC" if password else b"-----BEGIN PRIV") :], password
    )
    assert key.public_key() == issued.key.public_key()
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    pfx = store.export("Exported", "name", tmp_path / "out.pfx", fmt="pfx", password=password)
    bundle = pkcs12.load_pkcs12(pfx.read_bytes(), password)
    assert bundle.cert is not None and bundle.cert.certificate == issued.certificate
    assert bundle.cert.friendly_name == b"Exported"
    with pytest.raises(CertificateError, match="already exists"):
        store.export("exp", "name", pfx, fmt="pfx")


def test_create_self_signed_refuses_bad_or_taken_names(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "store")
    store.create_self_signed("dev")
    for bad in ("", ".hidden", "a/b"):
        with pytest.raises(CertificateError, match="cannot be a file name"):
            store.create_self_signed(bad)
    with pytest.raises(CertificateError, match="already has"):
        store.create_self_signed("dev")


# --- store location -------------------------------------------------------------------


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local/share/sslsock/certs"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_store_path() == tmp_path / ".local/share/sslsock/certs"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data/sslsock/certs"
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(tmp_path / "mine"))
    assert default_store_path() == tmp_path / "mine"
    assert CertStore().path == tmp_path / "mine"


# --- certificate generation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        ("ec", ec.EllipticCurvePrivateKey, 256),
        ("ec384", ec.EllipticCurvePrivateKey, 384),
        ("rsa1024", rsa.RSAPrivateKey, 1024),
        ("rsa2048", rsa.RSAPrivateKey, 2048),
        ("ed25519", ed25519.Ed25519PrivateKey, None),
    ],
)
def test_certgen_key_types(
    ca: _certgen.Issued, key_type: str, kind: type, size: int | None
) -> None:
    issued = _certgen.make_leaf(ca, "k", key_type=key_type, client=True)
    assert isinstance(issued.key, kind)
    if size is not None:
        assert issued.key.key_size == size  # type: ignore[union-attr]
    usage = issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert set(usage.value) == {
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    }


def test_certgen_san_and_unknown_key_type(ca: _certgen.Issued) -> None:
    issued = _certgen.make_leaf(ca, "n", hosts=["localhost", "127.0.0.1", "::1", "bücher.test"])
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "xn--bcher-kva.test"]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
    ]
    with pytest.raises(ArgumentError, match="unknown key type"):
        _certgen.make_self_signed("x", key_type="dsa")
