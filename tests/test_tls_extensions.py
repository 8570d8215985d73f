"""What a TLS server operator expects beside versions and trust, each against real peers:
ALPN (openssl s_client / s_server, the stdlib, curl), the key log ($SSLKEYLOGFILE, checked
against the stdlib's own key log of the same handshake), several certificates chosen by
name (openssl s_client -servername, the stdlib verifying the one it gets), revocation lists
for client certificates (openssl s_client and the stdlib presenting revoked and good
certificates).  Everything on 127.0.0.1, every wait bounded.
"""
from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import peer_env
from cryptography import x509
from cryptography.hazmat.primitives import hashes

import sslsock
from sslsock import CertStore, Listener, Mode, connect
from sslsock._certs import generate as _certgen

LOOPBACK = "127.0.0.1"
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
MODERN = sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def s_client(port: int, *flags: str, data: bytes = b"") -> subprocess.CompletedProcess[str]:
    assert OPENSSL
    return subprocess.run([OPENSSL, "s_client", "-connect", f"{LOOPBACK}:{port}", *flags],
                          input=data.decode(), capture_output=True, text=True, timeout=20)


def stdlib_client(port: int, ctx: ssl.SSLContext, name: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=name)


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store with a default certificate and two more, for names and a wildcard."""
    d = tmp_path_factory.mktemp("names")
    store = d / "store"
    store.mkdir(mode=0o700)
    ca = _certgen.make_ca("sslsock names CA")
    (d / "ca.pem").write_bytes(ca.cert_pem())
    made = {}
    for ident, hosts in (("default", ["localhost", "127.0.0.1"]), ("api", ["api.example.com"]),
                         ("files", ["*.files.example.com"])):
        issued = _certgen.make_leaf(ca, hosts[0], hosts=hosts)
        issued.write_pem(store / f"{ident}.pem")
        made[ident] = issued
    yield {"dir": d, "store": CertStore(store), "ca": ca, "ca_file": d / "ca.pem", **made}


def cn_of(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("subject="):
            return line.split("CN = ", 1)[-1].strip()
    return ""


# ---- ALPN -------------------------------------------------------------------------------


@needs_openssl
def test_alpn_server_against_openssl_s_client(pki: Any) -> None:
    with Listener(0, "localhost", alpn=["h2", "http/1.1"]) as lst:
        out = s_client(lst.port, "-alpn", "http/1.1,h2").stdout
        assert "ALPN protocol: h2" in out  # the server's preference wins
        conn = lst.accept(10)
        assert conn.alpn == "h2" and conn.info().alpn == "h2"
        out = s_client(lst.port, "-alpn", "http/1.1").stdout
        assert "ALPN protocol: http/1.1" in out
        assert lst.accept(10).alpn == "http/1.1"
        out = s_client(lst.port, "-alpn", "spdy/1").stdout  # not required: no ALPN, served
        assert "No ALPN negotiated" in out
        assert lst.accept(10).alpn == ""


def test_alpn_server_against_stdlib_client(pki: Any) -> None:
    with Listener(0, "localhost", alpn=["x-private/2", "http/1.1"]) as lst:
        ctx = pki.client_context()
        ctx.set_alpn_protocols(["x-private/2"])
        with stdlib_client(lst.port, ctx, "localhost") as s:
            assert s.selected_alpn_protocol() == "x-private/2"
            assert lst.accept(10).alpn == "x-private/2"


@needs_openssl
def test_alpn_required_refuses_with_rfc7301_alert(pki: Any) -> None:
    with Listener(0, "localhost", alpn=["h2"], alpn_required=True) as lst:
        for flags in (("-alpn", "http/1.1"), ()):
            r = s_client(lst.port, *flags)
            assert "alert no application protocol" in r.stderr  # alert 120
            assert "SSL alert number 120" in r.stderr
        deadline = time.monotonic() + 10
        while lst.stats().failed_tls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = lst.stats()
        assert st.failed_tls == 2 and st.handshakes == 0
        assert "application protocol" in st.last_failure
        assert "ALPN protocol: h2" in s_client(lst.port, "-alpn", "http/1.1,h2").stdout
        assert lst.accept(10).alpn == "h2"


def test_alpn_required_refuses_sslsock_and_stdlib_clients(pki: Any) -> None:
    with Listener(0, "localhost", alpn=["h2"], alpn_required=True) as lst:
        with pytest.raises(sslsock.TLSError):
            connect(LOOPBACK, lst.port, server_hostname="localhost", alpn=["http/1.1"])
        ctx = pki.client_context()
        ctx.set_alpn_protocols(["http/1.1"])
        with pytest.raises(ssl.SSLError, match="no application protocol"):
            stdlib_client(lst.port, ctx, "localhost")
        with connect(LOOPBACK, lst.port, server_hostname="localhost", alpn=["h2"]) as c:
            assert c.alpn == "h2"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_alpn_with_curl_http2_and_http11(pki: Any) -> None:
    assert CURL
    with Listener(0, "localhost", alpn=["h2", "http/1.1"], mode=Mode.SocketNoEndTag) as lst:
        for flag, want in (("--http2", "h2"), ("--http1.1", "http/1.1")):
            proc = subprocess.Popen(
                [CURL, "-sv", flag, "--max-time", "5", "--cacert", str(pki.ca_file),
                 "--resolve", f"localhost:{lst.port}:{LOOPBACK}",
                 f"https://localhost:{lst.port}/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=peer_env())
            try:
                conn = lst.accept(15)
                assert conn.alpn == want
                assert conn.server_name == "localhost"
                conn.close()
            finally:
                _, err = proc.communicate(timeout=15)
            assert want in err  # curl's "ALPN: server accepted h2" (wording varies)


@needs_openssl
def test_alpn_client_against_openssl_s_server(pki: Any, openssl_s_server: Any) -> None:
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file,
                          "-alpn", "http/1.1") as port:
        with connect(LOOPBACK, port, server_hostname="localhost", cafile_pem=pki.ca.cert_pem(),
                     alpn=["h2", "http/1.1"], resume=False) as c:
            assert c.alpn == "http/1.1"
        with connect(LOOPBACK, port, server_hostname="localhost", cafile_pem=pki.ca.cert_pem(),
                     resume=False) as c:
            assert c.alpn == ""


def test_alpn_client_against_stdlib_server(pki: Any) -> None:
    import threading

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    ctx.set_alpn_protocols(["h2"])
    seen: list[Any] = []
    with socket.create_server((LOOPBACK, 0)) as srv:
        def serve() -> None:
            raw, _ = srv.accept()
            with ctx.wrap_socket(raw, server_side=True) as s:
                seen.append(s.selected_alpn_protocol())
                s.recv(1)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with connect(LOOPBACK, srv.getsockname()[1], server_hostname="localhost",
                     cafile_pem=pki.ca.cert_pem(), alpn=["http/1.1", "h2"]) as c:
            assert c.alpn == "h2"
        t.join(10)
    assert seen == ["h2"]


def test_alpn_bad_input(pki: Any) -> None:
    with pytest.raises(sslsock.ArgumentError, match="list of protocol names"):
        Listener(0, "localhost", alpn="h2")
    with pytest.raises(sslsock.ArgumentError, match="non-empty"):
        Listener(0, "localhost", alpn=["h2", ""])
    with pytest.raises(sslsock.ArgumentError, match="at most 255"):
        connect(LOOPBACK, 1, alpn=["x" * 256])
    with pytest.raises(sslsock.ArgumentError, match="twice"):
        connect(LOOPBACK, 1, alpn=["h2", "h2"])
    with pytest.raises(sslsock.ArgumentError, match="alpn_required=True needs"):
        Listener(0, "localhost", alpn_required=True)
    with pytest.raises(sslsock.ArgumentError, match="TLS features"):
        Listener(0, tls=False, alpn=["h2"])


# ---- key log -----------------------------------------------------------------------------


def _secrets(path: Path) -> dict[tuple[str, str], str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            label, client_random, secret = line.split()
            out[(label, client_random)] = secret
    return out


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_keylog_matches_the_stdlib_peer(pki: Any, tmp_path: Path, monkeypatch: Any,
                                        version: str) -> None:
    ours, theirs = tmp_path / "sslsock.keys", tmp_path / "stdlib.keys"
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    ctx = pki.client_context()  # made first: the stdlib honours $SSLKEYLOGFILE too
    ctx.keylog_filename = str(theirs)
    monkeypatch.setenv("SSLKEYLOGFILE", str(ours))
    with Listener(0, "localhost", options=MODERN) as lst:
        ctx.maximum_version = ctx.minimum_version = getattr(ssl.TLSVersion,
                                                            version.replace(".", "_"))
        with stdlib_client(lst.port, ctx, "localhost") as s:
            conn = lst.accept(10)
            conn.write(b"x")
            s.recv(16)
    assert stat.S_IMODE(ours.stat().st_mode) == 0o600  # a secret: the owner's only
    mine, stdlib = _secrets(ours), _secrets(theirs)
    assert mine and mine == stdlib  # the same secrets for the same handshake
    labels = {label for label, _ in mine}
    assert labels == ({"CLIENT_RANDOM"} if version == "TLSv1.2" else
                      {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                       "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"})


def test_keylog_client_and_off_unless_set(pki: Any, tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "client.keys"
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    with Listener(0, "localhost") as lst:
        with connect(LOOPBACK, lst.port, server_hostname="localhost", resume=False):
            lst.accept(10)
        assert not path.exists()
        monkeypatch.setenv("SSLKEYLOGFILE", str(path))
        with connect(LOOPBACK, lst.port, server_hostname="localhost", resume=False):
            lst.accept(10)
        assert path.read_text().startswith(("CLIENT_RANDOM ", "CLIENT_HANDSHAKE_TRAFFIC"))
        n = len(path.read_text())
        monkeypatch.setenv("SSLKEYLOGFILE", "")
        with connect(LOOPBACK, lst.port, server_hostname="localhost", resume=False):
            lst.accept(10)
        assert len(path.read_text()) == n  # off again: nothing more written


def test_keylog_reported_by_debug_and_serve(tmp_path: Path, monkeypatch: Any) -> None:
    from sslsock import debug
    from sslsock._cli.main import keylog_note

    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    assert debug.lines()[-1] == "key log: off ($SSLKEYLOGFILE is not set)"
    assert keylog_note() == ""
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "k"))
    assert debug.lines()[-1].startswith(f"key log: ON, TLS secrets are appended to {tmp_path}")
    assert debug.info()["keylog_file"] == str(tmp_path / "k")
    assert "SSLKEYLOGFILE is set" in keylog_note() and str(tmp_path / "k") in keylog_note()


def test_keylog_announced_by_sslsock_serve(pki: Any, tmp_path: Path) -> None:
    import sys

    env = {**os.environ, "SSLKEYLOGFILE": str(tmp_path / "k")}
    proc = subprocess.Popen([sys.executable, "-m", "sslsock", "serve", "--port", "0",
                             "--cert", "localhost"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("listening on")
        line = proc.stderr.readline()
        assert "SSLKEYLOGFILE is set" in line and str(tmp_path / "k") in line
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


# ---- several certificates by name (SNI) --------------------------------------------------


SNI = {"api.example.com": "api", "*.files.example.com": "files"}


@needs_openssl
def test_sni_openssl_s_client_gets_the_certificate_it_names(names: dict[str, Any]) -> None:
    with Listener(0, "default", store=names["store"], certificates=SNI) as lst:
        for flags, cn, asked in ((("-servername", "api.example.com"), "api.example.com",
                                  "api.example.com"),
                                 (("-servername", "API.Example.COM."), "api.example.com",
                                  "api.example.com"),
                                 (("-servername", "eu.files.example.com"), "*.files.example.com",
                                  "eu.files.example.com"),
                                 (("-servername", "a.b.files.example.com"), "localhost",
                                  "a.b.files.example.com"),  # a wildcard covers one label
                                 (("-servername", "other.example.com"), "localhost",
                                  "other.example.com"),
                                 (("-noservername",), "localhost", "")):
            out = s_client(lst.port, *flags).stdout
            assert cn_of(out) == cn, (flags, out)
            conn = lst.accept(10)
            assert conn.server_name.lower().rstrip(".") == asked


def test_sni_stdlib_clients_verify_what_they_get(names: dict[str, Any]) -> None:
    ctx = ssl.create_default_context(cafile=str(names["ca_file"]))
    with Listener(0, "default", store=names["store"], certificates=SNI) as lst:
        for host in ("api.example.com", "x.files.example.com", "localhost"):
            with stdlib_client(lst.port, ctx, host) as s:
                cert = x509.load_der_x509_certificate(s.getpeercert(True))
                assert lst.accept(10).server_name == host
                assert host in str(cert.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value) or host.endswith("files.example.com")
        with pytest.raises(ssl.SSLCertVerificationError):
            stdlib_client(lst.port, ctx, "nothere.example.com")  # the default does not match


def test_sni_sslsock_client_and_resumption(names: dict[str, Any]) -> None:
    ca = names["ca"].cert_pem()
    with Listener(0, "default", store=names["store"], certificates=SNI,
                  ticket_keys=os.urandom(80)) as lst:
        resumed = []
        for _ in range(2):
            with connect(LOOPBACK, lst.port, server_hostname="api.example.com",
                         cafile_pem=ca, store=names["store"]) as c:
                srv = lst.accept(10)
                assert srv.server_name == "api.example.com"
                assert c.peer_certificate().subject.rfc4514_string() == "CN=api.example.com"
                c.write(b"hi")
                assert srv.read(5) == b"hi"
                resumed.append(c.resumed)
        assert resumed == [False, True]  # the ticket of the switched connection resumes


def test_sni_renewal_reloads_each_certificate(names: dict[str, Any], tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(names["store"].path, store_dir)
    st = CertStore(store_dir)
    with Listener(0, "default", store=st, certificates=SNI, reload_interval=None) as lst:
        def served(host: str) -> x509.Certificate:
            with connect(LOOPBACK, lst.port, server_hostname=host, verify=False,
                         resume=False) as c:
                lst.accept(10)
                return c.peer_certificate()
        before = served("api.example.com")
        time.sleep(0.01)
        renewed = _certgen.make_leaf(names["ca"], "api.example.com", hosts=["api.example.com"])
        renewed.write_pem(store_dir / "api.pem")
        os.utime(store_dir, None)
        assert lst.reload()
        after = served("api.example.com")
        assert after.serial_number == renewed.certificate.serial_number != before.serial_number
        assert served("localhost").subject.rfc4514_string() == "CN=localhost"


def test_sni_bad_input(names: dict[str, Any]) -> None:
    st = names["store"]
    for bad in ({"bad name!": "api"}, {"*.": "api"}, {"a.*.example.com": "api"},
                {"": "api"}):
        with pytest.raises(sslsock.ArgumentError, match="host name"):
            Listener(0, "default", store=st, certificates=bad)
    with pytest.raises(sslsock.ArgumentError, match="twice"):
        Listener(0, "default", store=st, certificates={"API.example.com": "api",
                                                       "api.example.com": "files"})
    with pytest.raises(sslsock.ArgumentError, match="maps server names"):
        Listener(0, "default", store=st, certificates=["api"])
    with pytest.raises(TypeError, match="store identifier"):
        Listener(0, "default", store=st, certificates={"api.example.com": 3})
    with pytest.raises(sslsock.CertificateError):
        Listener(0, "default", store=st, certificates={"api.example.com": "no-such-cert"})


def test_sni_named_face_serves_the_store_by_name(names: dict[str, Any], monkeypatch: Any) -> None:
    from sslsock._faces.registry import REGISTRY

    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(names["store"].path))
    sslsock.Socket.Option = sslsock.SocketServeByName
    assert sslsock.SocketCreateSSL("byname", 0, "default")
    port = REGISTRY.get("byname").obj.port
    ctx = ssl.create_default_context(cafile=str(names["ca_file"]))
    ctx.set_alpn_protocols(["h2"])
    with stdlib_client(port, ctx, "eu.files.example.com") as s:
        assert sslsock.SocketWaitForConnection("byname", 10_000)
        ch = sslsock.SocketAccept("byname")
        assert sslsock.SocketClientInfo(ch, sslsock.SocketServerName) == "eu.files.example.com"
        assert sslsock.SocketClientInfo(ch, sslsock.SocketALPN) == ""
        cert = x509.load_der_x509_certificate(s.getpeercert(True))
        assert cert.subject.rfc4514_string() == "CN=*.files.example.com"
    assert names["store"].names_map(exclude="default") == {
        "*.files.example.com": "files", "api.example.com": "api"}


# ---- revocation lists for client certificates ---------------------------------------------


def make_crl(issuer: Any, revoked: list[Any]) -> x509.CertificateRevocationList:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.certificate.subject)
         .last_update(now - datetime.timedelta(minutes=5))
         .next_update(now + datetime.timedelta(days=7)))
    for leaf in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(leaf.certificate.serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1)).build())
    return b.sign(issuer.key, hashes.SHA256())


@pytest.fixture(scope="module")
def revoked(pki: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from cryptography.hazmat.primitives.serialization import Encoding

    d = tmp_path_factory.mktemp("crl")
    out: dict[str, Any] = {"dir": d}
    for who in ("good", "bad"):
        leaf = _certgen.make_leaf(pki.ca, f"{who} client", hosts=[f"{who}.test"], client=True)
        out[who] = leaf
        out[f"{who}_files"] = leaf.write_pem(d / who, split=True)
    crl = make_crl(pki.ca, [out["bad"]])
    (d / "ca.crl").write_bytes(crl.public_bytes(Encoding.DER))  # as CAs publish them
    (d / "ca-crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    return out


MTLS = MODERN + sslsock.SSLClientCertificate


def _client_result(port: int, files: tuple[Path, Path], version: str) -> str:
    r = s_client(port, "-cert", str(files[0]), "-key", str(files[1]), version,
                 data=b"ping\n")
    return r.stdout + r.stderr


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_crl_refuses_the_revoked_client_only(pki: Any, revoked: dict[str, Any],
                                             version: str) -> None:
    with Listener(0, "localhost", options=MTLS, crl=revoked["dir"] / "ca.crl") as lst:
        _client_result(lst.port, revoked["bad_files"], version)
        deadline = time.monotonic() + 10
        while lst.stats().failed_tls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        st = lst.stats()
        assert st.failed_tls == 1 and st.handshakes == 0
        assert "revoked" in st.last_failure
        _client_result(lst.port, revoked["good_files"], version)
        conn = lst.accept(10)
        assert "good client" in conn.peer_certificate().subject.rfc4514_string()


def test_crl_stdlib_client_and_reload(pki: Any, revoked: dict[str, Any], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    crl_file = tmp_path / "ca.pem.crl"
    crl_file.write_bytes((revoked["dir"] / "ca-crl.pem").read_bytes())
    with Listener(0, "localhost", options=MTLS, crl=str(crl_file), reload_interval=None) as lst:
        def attempt(who: str) -> bool:
            ctx = pki.client_context()
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(*revoked[f"{who}_files"])
            try:
                with stdlib_client(lst.port, ctx, "localhost"):
                    lst.accept(10)
                    return True
            except (ssl.SSLError, sslsock.Error):
                return False
        assert attempt("good") and not attempt("bad")
        time.sleep(0.01)
        crl_file.write_bytes(make_crl(pki.ca, [revoked["bad"], revoked["good"]])
                             .public_bytes(Encoding.PEM))
        assert lst.reload()  # a rewritten list is taken like a renewed certificate
        assert not attempt("good") and not attempt("bad")
    # the CA itself stays trusted: a client it issued that no list names is served
    other = _certgen.make_leaf(pki.ca, "other client", hosts=["other.test"], client=True)
    revoked["other_files"] = other.write_pem(tmp_path / "other", split=True)
    with Listener(0, "localhost", options=MTLS, crl=str(crl_file)) as lst:
        ctx = pki.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(*revoked["other_files"])
        with stdlib_client(lst.port, ctx, "localhost"):
            assert lst.accept(10).peer_certificate().subject.rfc4514_string() == "CN=other client"


def test_crl_from_the_store(pki: Any, revoked: dict[str, Any], tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(pki.store_dir, store_dir)
    st = CertStore(store_dir)
    with pytest.raises(sslsock.CertificateError, match="holds no revocation list"):
        Listener(0, "localhost", options=MTLS, store=st, crl="store")
    shutil.copy(revoked["dir"] / "ca.crl", store_dir / "ca.crl")
    with Listener(0, "localhost", options=MTLS, store=st, crl="store") as lst:
        ctx = pki.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(*revoked["bad_files"])
        with pytest.raises(ssl.SSLError, match="revoked"):
            stdlib_client(lst.port, ctx, "localhost")


def test_crl_bad_input(pki: Any, tmp_path: Path) -> None:
    with pytest.raises(sslsock.ArgumentError, match="needs mutual TLS"):
        Listener(0, "localhost", crl=b"x")
    junk = tmp_path / "junk.crl"
    junk.write_bytes(b"not a list")
    with pytest.raises(sslsock.CertificateError, match="is not a certificate revocation list"):
        Listener(0, "localhost", options=MTLS, crl=str(junk))
    with pytest.raises(sslsock.CertificateError, match="cannot read"):
        Listener(0, "localhost", options=MTLS, crl=str(tmp_path / "missing.crl"))
    with pytest.raises(sslsock.Error, match="holds no CRL"):
        Listener(0, "localhost", options=MTLS, crl=b"-----BEGIN NOTHING-----")


# ---- OCSP stapling -------------------------------------------------------------------------


def ocsp_response(issuer: Any, leaf: Any, status: str = "good",
                  next_update: datetime.timedelta = datetime.timedelta(days=1)) -> bytes:
    """A DER OCSP response signed by the issuer itself (as a small CA's responder does)."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp

    now = datetime.datetime.now(datetime.timezone.utc)
    revoked = status == "revoked"
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=leaf.certificate, issuer=issuer.certificate, algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=now - datetime.timedelta(minutes=5), next_update=now + next_update,
        revocation_time=now - datetime.timedelta(minutes=1) if revoked else None,
        revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
    return b.sign(issuer.key, hashes.SHA256()).public_bytes(Encoding.DER)


@pytest.fixture
def stapled(pki: Any, tmp_path: Path) -> Any:
    """A copy of the test store with an OCSP response beside the server certificate."""
    store_dir = tmp_path / "store"
    shutil.copytree(pki.store_dir, store_dir)
    (store_dir / "localhost.ocsp").write_bytes(ocsp_response(pki.ca, pki.server))
    return CertStore(store_dir)


@needs_openssl
def test_ocsp_stapled_for_openssl_s_client_status(pki: Any, stapled: Any) -> None:
    with Listener(0, "localhost", store=stapled, reload_interval=None) as lst:
        out = s_client(lst.port, "-status", "-servername", "localhost").stdout
        assert "OCSP Response Status: successful" in out
        assert "Cert Status: good" in out
        out = s_client(lst.port, "-servername", "localhost").stdout
        assert "OCSP response" not in out  # not asked, not sent
        # a refreshed response is taken like a renewed certificate
        time.sleep(0.01)
        (stapled.path / "localhost.ocsp").write_bytes(ocsp_response(pki.ca, pki.server,
                                                                    "revoked"))
        assert lst.reload()
        assert "Cert Status: revoked" in s_client(lst.port, "-status").stdout


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_ocsp_curl_cert_status(pki: Any, stapled: Any) -> None:
    assert CURL

    def curl(port: int) -> subprocess.CompletedProcess[str]:
        assert CURL
        return subprocess.run(
            [CURL, "-s", "--cert-status", "--max-time", "5", "--cacert", str(pki.ca_file),
             "--resolve", f"localhost:{port}:{LOOPBACK}", f"https://localhost:{port}/"],
            capture_output=True, text=True, timeout=20, env=peer_env())

    with Listener(0, "localhost", store=stapled, mode=Mode.SocketNoEndTag) as lst:
        r = curl(lst.port)
        assert r.returncode != 91, r.stderr  # 91: "invalid or missing OCSP response"
    with Listener(0, "localhost", mode=Mode.SocketNoEndTag) as lst:  # no response file
        assert curl(lst.port).returncode == 91


def test_ocsp_required_by_the_client(pki: Any, stapled: Any) -> None:
    ca = pki.ca.cert_pem()
    with Listener(0, "localhost", store=stapled, reload_interval=None) as lst:
        with connect(LOOPBACK, lst.port, server_hostname="localhost", cafile_pem=ca,
                     require_ocsp=True, resume=False):
            lst.accept(10)
        (stapled.path / "localhost.ocsp").write_bytes(ocsp_response(pki.ca, pki.server,
                                                                    "revoked"))
        assert lst.reload()
        with pytest.raises(sslsock.TLSError, match="revoked"):
            connect(LOOPBACK, lst.port, server_hostname="localhost", cafile_pem=ca,
                    require_ocsp=True, resume=False)
        other = _certgen.make_leaf(pki.ca, "localhost", hosts=["localhost"])
        (stapled.path / "localhost.ocsp").write_bytes(ocsp_response(pki.ca, other))
        assert lst.reload()
        with pytest.raises(sslsock.TLSError, match="not about the server's certificate"):
            connect(LOOPBACK, lst.port, server_hostname="localhost", cafile_pem=ca,
                    require_ocsp=True, resume=False)
    with Listener(0, "localhost") as lst:
        with pytest.raises(sslsock.TLSError, match="stapled no OCSP response"):
            connect(LOOPBACK, lst.port, server_hostname="localhost", cafile_pem=ca,
                    require_ocsp=True, resume=False)
        with connect(LOOPBACK, lst.port, server_hostname="localhost", cafile_pem=ca,
                     resume=False):  # not required: served
            lst.accept(10)


@needs_openssl
def test_ocsp_required_against_openssl_s_server(pki: Any, openssl_s_server: Any,
                                                tmp_path: Path) -> None:
    good, stale = tmp_path / "good.der", tmp_path / "stale.der"
    good.write_bytes(ocsp_response(pki.ca, pki.server))
    stale.write_bytes(ocsp_response(pki.ca, pki.server,
                                    next_update=-datetime.timedelta(hours=1)))
    ca = pki.ca.cert_pem()
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file,
                          "-status_file", str(good)) as port:
        with connect(LOOPBACK, port, server_hostname="localhost", cafile_pem=ca,
                     require_ocsp=True, resume=False) as c:
            assert c.protocol
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file,
                          "-status_file", str(stale)) as port:
        with pytest.raises(sslsock.TLSError, match="out of date"):
            connect(LOOPBACK, port, server_hostname="localhost", cafile_pem=ca,
                    require_ocsp=True, resume=False)
    with openssl_s_server(OPENSSL, pki.server_cert_file, pki.server_key_file) as port:
        with pytest.raises(sslsock.TLSError, match="stapled no OCSP response"):
            connect(LOOPBACK, port, server_hostname="localhost", cafile_pem=ca,
                    require_ocsp=True, resume=False)


def test_ocsp_bad_response_file(pki: Any, stapled: Any) -> None:
    (stapled.path / "localhost.ocsp").write_bytes(b"not an OCSP response")
    with pytest.raises(sslsock.CertificateError, match="not a DER OCSPResponse"):
        Listener(0, "localhost", store=stapled)
