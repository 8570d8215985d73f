"""Who may connect, and on whose word: each setting lets in exactly whom it says, against
real peers (the stdlib's ssl module, openssl s_client), and no configuration widens that
by accident (a server's own chain, a resumed session, a removed CA, an unlisted PROXY
sender, a world-readable key, a client trusting more than the CA it was given)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from cryptography.hazmat.primitives import hashes, serialization

import sslsock
from sslsock._certs import generate as _certgen
from sslsock._certs.store import InsecureKeyFileWarning

O = sslsock.SSLOption
LOOPBACK = "127.0.0.1"
PEER_TIMEOUT = 20.0


def _client_ctx(tmp_path: Path, who: Optional[_certgen.Issued], name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if who is not None:
        cert, key = who.write_pem(tmp_path / name, split=True)
        ctx.load_cert_chain(cert, key)
    return ctx


def let_in(lst: sslsock.Listener, ctx: ssl.SSLContext,
           session: Optional[ssl.SSLSession] = None) -> tuple[bool, Any]:
    """Connect a stdlib client to ``lst``; (whether the listener let it in, the client's
    session or its error).  TLS 1.3 clients finish before the server checks them, so the
    answer is the server's: a connection handed over, or a failed handshake counted."""
    before = lst.stats().failed_tls
    out: dict[str, Any] = {}

    def client() -> None:
        try:
            with socket.create_connection((LOOPBACK, lst.port), timeout=PEER_TIMEOUT) as raw:
                with ctx.wrap_socket(raw, session=session) as s:
                    out["data"] = s.recv(64)
                    out["session"] = s.session
                    out["reused"] = s.session_reused
        except (OSError, ssl.SSLError) as e:
            out["error"] = e

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + PEER_TIMEOUT
    accepted = False
    while time.monotonic() < deadline:
        if lst.wait(0.05):
            conn = lst.accept(0)
            conn.write(b"welcome")
            accepted = True
            break
        if lst.stats().failed_tls > before:
            break
    t.join(PEER_TIMEOUT)
    if accepted:
        conn.close()
    return accepted, out


# ---- 1. mutual TLS: only client CAs vouch for clients --------------------------------


def _add_client_ca(store_dir: Path, name: str, ca: _certgen.Issued) -> None:
    """A client CA entry as `sslsock cert import --client-ca` writes it."""
    (store_dir / f"{name}.pem").write_bytes(b"# sslsock: client-ca\n" + ca.cert_pem())


@pytest.fixture
def public_ca_world(tmp_path: Path) -> dict[str, Any]:
    """A server whose certificate comes from a public CA's intermediate, stored with its
    chain; another customer of that intermediate; a partner whose CA is a client CA."""
    root = _certgen.make_ca("public root")
    inter = _certgen.make_ca("public intermediate", issuer=root)
    server = _certgen.make_leaf(inter, "localhost", hosts=["localhost", LOOPBACK])
    other = _certgen.make_leaf(inter, "other customer", hosts=["other.test"], client=True)
    partner_ca = _certgen.make_ca("partner CA")
    partner = _certgen.make_leaf(partner_ca, "partner", hosts=["partner.test"], client=True)
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    server.write_pem(d / "server.pem")
    store = sslsock.CertStore(d)
    _add_client_ca(d, "partner-ca", partner_ca)
    return dict(store=store, root=root, inter=inter, other=other, partner=partner,
                partner_ca=partner_ca, server=server)


def test_mutual_tls_does_not_trust_the_servers_own_issuer(tmp_path: Path,
                                                          public_ca_world: Any) -> None:
    w = public_ca_world
    with sslsock.Listener(0, "server", store=w["store"], host=LOOPBACK,
                          options=O.SSLClientCertificate) as lst:
        other_in, _ = let_in(lst, _client_ctx(tmp_path, w["other"], "other"))
        partner_in, _ = let_in(lst, _client_ctx(tmp_path, w["partner"], "partner"))
        nobody_in, _ = let_in(lst, _client_ctx(tmp_path, None, "nobody"))
        assert "did not verify" in lst.stats().last_failure or not nobody_in
    assert not other_in, "a customer of the server's own CA was let in"
    assert partner_in
    assert not nobody_in


def test_a_client_ca_must_reach_a_root_unless_partial_chains_are_asked_for(
        tmp_path: Path, public_ca_world: Any) -> None:
    """The listener's own CA file holding only an intermediate: its clients are let in
    only with client_partial_chain=True (the chain is otherwise checked up to a root)."""
    w = public_ca_world
    inter_pem = w["inter"].certificate.public_bytes(serialization.Encoding.PEM)
    results = []
    for partial in (False, True):
        with sslsock.Listener(0, "server", store=w["store"], host=LOOPBACK,
                              options=O.SSLClientCertificate, client_ca_pem=inter_pem,
                              client_partial_chain=partial) as lst:
            results.append(let_in(lst, _client_ctx(tmp_path, w["other"], "other"))[0])
    assert results == [False, True]


def test_openssl_client_of_the_same_public_ca_is_refused(tmp_path: Path,
                                                         public_ca_world: Any) -> None:
    """The same with openssl s_client as the peer."""
    w = public_ca_world
    cert, key = w["other"].write_pem(tmp_path / "other-ossl", split=True)
    with sslsock.Listener(0, "server", store=w["store"], host=LOOPBACK,
                          options=O.SSLClientCertificate) as lst:
        run = subprocess.run(
            ["openssl", "s_client", "-connect", f"{LOOPBACK}:{lst.port}", "-cert", str(cert),
             "-key", str(key), "-tls1_2", "-brief"],
            input=b"", capture_output=True, timeout=PEER_TIMEOUT)
        assert not lst.wait(0.5)
        assert lst.stats().handshakes == 0
    assert run.returncode != 0, run.stdout


def test_cert_import_client_ca_is_shown_by_cert_list(tmp_path: Path,
                                                     public_ca_world: Any) -> None:
    w = public_ca_world
    env = {**os.environ, "SSLSOCK_CERT_STORE": str(w["store"].path)}
    (tmp_path / "vendor-ca.pem").write_bytes(_certgen.make_ca("vendor CA").cert_pem())
    imported = subprocess.run([sys.executable, "-m", "sslsock", "cert", "import",
                               str(tmp_path / "vendor-ca.pem"), "--client-ca"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    assert "as a client CA" in imported.stdout
    listing = subprocess.run([sys.executable, "-m", "sslsock", "cert", "list", "--json"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    by_name = {c["name"]: c for c in json.loads(listing.stdout)["certificates"]}
    assert by_name["partner-ca"]["client_ca"] is True
    assert by_name["vendor-ca"]["client_ca"] is True
    assert by_name["server"]["client_ca"] is False
    table = subprocess.run([sys.executable, "-m", "sslsock", "cert", "list"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "client CA" in table.stdout
    # a leaf (not a CA) is refused as a client CA, with the reason
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(w["partner"].certificate.public_bytes(serialization.Encoding.PEM))
    bad = subprocess.run([sys.executable, "-m", "sslsock", "cert", "import", str(leaf),
                          "--client-ca"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "is not a CA certificate" in bad.stderr


def test_mutual_tls_without_any_client_ca_is_refused_with_advice(tmp_path: Path) -> None:
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    _certgen.make_self_signed("localhost").write_pem(d / "server.pem")
    with pytest.raises(sslsock.CertificateError, match="--client-ca"):
        sslsock.Listener(0, "server", store=sslsock.CertStore(d), host=LOOPBACK,
                         options=O.SSLClientCertificate)


# ---- 2. resumption does not skip a stricter listener's trust -------------------------

_RESUME_PROBE = r"""
import json, socket, ssl, sys, threading, time
sys.path.insert(0, sys.argv[4])
import sslsock
from test_who_may_connect import let_in
store = sslsock.CertStore(sys.argv[1])
keys = bytes(range(80))
O = sslsock.SSLOption
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.maximum_version = getattr(ssl.TLSVersion, sys.argv[5])
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
strict = sslsock.Listener(0, "server", store=store, host="127.0.0.1",
                          options=O.SSLClientCertificate, ticket_keys=keys)
loose = sslsock.Listener(0, "server", store=store, host="127.0.0.1",
                         options=O.SSLClientCertificate, client_system_ca=True,
                         ticket_keys=keys)
with strict, loose:
    full_strict, _ = let_in(strict, ctx)
    full_loose, out = let_in(loose, ctx)
    resumed_strict, again = let_in(strict, ctx, session=out.get("session"))
print(json.dumps({"full_strict": full_strict, "full_loose": full_loose,
                  "resumed_strict": resumed_strict, "reused": again.get("reused")}))
"""


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_a_session_from_a_looser_listener_does_not_resume_on_a_stricter_one(
        tmp_path: Path, version: str) -> None:
    public_ca = _certgen.make_ca("public CA in the system bundle")
    bundle = tmp_path / "system-bundle.pem"
    bundle.write_bytes(public_ca.cert_pem())
    stranger = _certgen.make_leaf(public_ca, "stranger", hosts=["stranger.test"], client=True)
    ccert, ckey = stranger.write_pem(tmp_path / "stranger", split=True)
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    _certgen.make_self_signed("localhost").write_pem(d / "server.pem")
    _add_client_ca(d, "partner-ca", _certgen.make_ca("partner"))
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "none")}
    run = subprocess.run([sys.executable, "-c", _RESUME_PROBE, str(d), str(ccert), str(ckey),
                          str(Path(__file__).parent), version],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["full_strict"] is False and result["full_loose"] is True, result
    assert result["resumed_strict"] is False, result


# ---- 3. removing a client CA reaches running listeners -------------------------------


def test_removing_a_client_ca_reaches_a_running_listener(tmp_path: Path,
                                                          public_ca_world: Any) -> None:
    w = public_ca_world
    store = w["store"]
    _add_client_ca(store.path, "keep-ca", _certgen.make_ca("another partner"))
    partner = _client_ctx(tmp_path, w["partner"], "partner")
    with sslsock.Listener(0, "server", store=store, host=LOOPBACK,
                          options=O.SSLClientCertificate, reload_interval=None) as lst:
        assert let_in(lst, partner)[0]
        store.remove("partner-ca")
        assert lst.reload() is True
        assert not let_in(lst, partner)[0], "the removed partner CA still lets clients in"
        assert lst.reload() is False  # nothing more changed
    # a listener named by thumbprint follows its trust too
    with sslsock.Listener(0, w["server"].certificate.fingerprint(
            hashes.SHA256()).hex(), store=store, host=LOOPBACK,
            options=O.SSLClientCertificate | O.CertificateHash,
            reload_interval=None) as lst:
        _add_client_ca(store.path, "partner-ca", w["partner_ca"])
        assert lst.reload() is True
        assert let_in(lst, partner)[0]


# ---- 4. the PROXY protocol believes only the senders it is told to ---------------------


def _spoof(port: int, ctx: ssl.SSLContext, claimed: str = "192.0.2.44") -> str:
    """A client reaching the port directly, claiming another address in a PROXY header."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT) as raw:
            raw.sendall(f"PROXY TCP4 {claimed} 10.0.0.1 4444 443\r\n".encode())
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                # (a reset that comes before the handshake leaves the stdlib socket
                # unconnected: it reads b"" without a handshake)
                data = tls.recv(64)
                return repr(data) if data else "refused: closed before any TLS"
    except (OSError, ssl.SSLError) as e:
        return f"refused: {e}"


# The stdlib client of _spoof, refused by a reset before its handshake, can leave the
# SSLSocket that ssl.wrap_socket made and failed to finish unclosed (CPython's, not ours):
# its ResourceWarning says nothing about sslsock.
_STDLIB_SPOOF_LEAK = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
                      pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@_STDLIB_SPOOF_LEAK[0]
@_STDLIB_SPOOF_LEAK[1]
def test_proxy_protocol_without_an_allow_list_is_refused(pki: Any) -> None:
    with pytest.raises(sslsock.ArgumentError, match=r'proxy_allow=\["10.0.0.5"\].*"any"'):
        sslsock.Listener(0, "localhost", host=LOOPBACK, proxy_protocol=True)
    with pytest.raises(sslsock.ArgumentError, match="cannot be combined"):
        sslsock.Listener(0, "localhost", host=LOOPBACK, proxy_protocol=True,
                         proxy_allow=["any", "10.0.0.5"])
    # "any" is said explicitly, and then every sender is believed
    with sslsock.Listener(0, "localhost", host=LOOPBACK, proxy_protocol=True,
                          proxy_allow="any") as lst:
        assert lst.proxy_allow == ("any",)
        t = threading.Thread(target=_spoof, args=(lst.port, pki.client_context()))
        t.start()
        conn = lst.accept(PEER_TIMEOUT)
        assert conn.info().peer_address == "192.0.2.44"
        conn.close()
        t.join(PEER_TIMEOUT)


@_STDLIB_SPOOF_LEAK[0]
@_STDLIB_SPOOF_LEAK[1]
def test_named_face_gives_the_proxy_allow_list(pki: Any) -> None:
    ctx = pki.client_context()
    sslsock.Socket.Option = sslsock.SocketProxyProtocol
    # without an allow list the server is not created, and the error says what to set
    assert not sslsock.SocketCreateSSL("nolist", 0, "localhost")
    assert "Socket.ProxyAllow" in sslsock.ErrorInfo()
    with pytest.raises(sslsock.ArgumentError, match="not an IP address"):
        sslsock.Socket.ProxyAllow = ["balancer.example"]
    # a balancer elsewhere: this client (127.0.0.1) is not believed
    sslsock.Socket.ProxyAllow = ["10.9.9.9"]
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", address=LOOPBACK), \
        sslsock.ErrorInfo()
    from sslsock._faces.registry import REGISTRY

    lst = REGISTRY.get("srv").obj
    assert _spoof(lst.port, ctx).startswith("refused")
    assert not sslsock.SocketWaitForConnection("srv", 300)
    assert lst.stats().proxy_refused == 1
    # the balancer's own address: believed
    sslsock.Socket.ProxyAllow = "127.0.0.1"
    assert sslsock.SocketCreateSSL("srv2", 0, "localhost", address=LOOPBACK)
    t = threading.Thread(target=_spoof, args=(REGISTRY.get("srv2").obj.port, ctx))
    t.start()
    assert sslsock.SocketWaitForConnection("srv2", 10_000), sslsock.ErrorInfo()
    channel = sslsock.SocketAccept("srv2")
    assert sslsock.SocketClientInfo(channel, sslsock.SocketAddress) == "192.0.2.44"
    sslsock.SocketClose(channel)
    t.join(PEER_TIMEOUT)


def _serve(args: list[str], store: Path) -> tuple[int, str]:
    """Start `sslsock serve`, read stderr until it says what it listens on, stop it."""
    env = {**os.environ, "SSLSOCK_CERT_STORE": str(store)}
    proc = subprocess.Popen([sys.executable, "-m", "sslsock", "serve", "--host", LOOPBACK,
                             "--port", "0", "--cert", "localhost", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if first:
            proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, first + out + err


def test_serve_says_whose_proxy_headers_it_believes(pki: Any) -> None:
    code, text = _serve(["--proxy-protocol"], pki.store_dir)
    assert code == 2, text
    assert "--proxy-allow" in text and "any" in text
    code, text = _serve(["--proxy-protocol", "--proxy-allow", "10.1.2.3",
                         "--proxy-allow", "192.0.2.0/24"], pki.store_dir)
    assert "headers believed only from 10.1.2.3, 192.0.2.0/24" in text, text
    code, text = _serve(["--proxy-protocol", "--proxy-allow", "any"], pki.store_dir)
    assert "headers believed from ANY address" in text, text


# ---- 8. a client pinned to a private CA trusts that CA alone ---------------------------

_PIN_PROBE = r"""
import json, socket, ssl, sys, threading
import sslsock
server_cert, server_key, private_ca, store = sys.argv[1:5]
srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
srv.load_cert_chain(server_cert, server_key)
sock = socket.create_server(("127.0.0.1", 0))
port = sock.getsockname()[1]

def serve():
    while True:
        try:
            raw, _ = sock.accept()
        except OSError:
            return
        try:
            with srv.wrap_socket(raw, server_side=True) as s:
                s.sendall(b"2\r\nhi")
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass

threading.Thread(target=serve, daemon=True).start()
st = sslsock.CertStore(store)
pem = open(private_ca, "rb").read()
results = {}
for label, kw in [("default", {}), ("cafile", {"cafile_pem": pem}),
                  ("store-entry", {"ca": "private-ca"}),
                  ("cafile+system", {"cafile_pem": pem, "system_ca": True})]:
    try:
        with sslsock.connect("127.0.0.1", port, server_hostname="localhost", store=st,
                             timeout=10, resume=False, **kw) as c:
            results[label] = c.read(timeout=10).decode()
    except (sslsock.Error, TypeError) as e:  # (TypeError: a version without ca=)
        results[label] = "refused: " + str(e)
# the named face, per connection
try:
    ok = sslsock.SocketConnectSSL("named", port, "localhost", ca="private-ca")
    results["named"] = "connected" if ok else "refused: " + sslsock.ErrorInfo()
except TypeError as e:  # a version without ca=
    results["named"] = "no such argument: " + str(e)
sock.close()
print(json.dumps(results))
"""


def test_a_client_given_a_private_ca_trusts_it_alone(tmp_path: Path) -> None:
    """A server whose certificate comes from a public CA (in the system bundle of the
    client's process): a client pinned to its private CA refuses it, unless it asks for
    the system's authorities too."""
    public_ca = _certgen.make_ca("public CA in the system bundle")
    bundle = tmp_path / "system-bundle.pem"
    bundle.write_bytes(public_ca.cert_pem())
    server = _certgen.make_leaf(public_ca, "localhost", hosts=["localhost", LOOPBACK])
    scert, skey = server.write_pem(tmp_path / "server", split=True)
    private = tmp_path / "private-ca.pem"
    private.write_bytes(_certgen.make_ca("our private CA").cert_pem())
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    (d / "private-ca.pem").write_bytes(private.read_bytes())
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "none"),
           "SSLSOCK_CERT_STORE": str(d)}
    run = subprocess.run([sys.executable, "-c", _PIN_PROBE, str(scert), str(skey),
                          str(private), str(d)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    assert r["default"] == "hi", r  # no CA given: the system's authorities and the store
    assert r["cafile"].startswith("refused"), r
    assert r["store-entry"].startswith("refused"), r
    assert r["cafile+system"] == "hi", r
    assert r["named"].startswith("refused"), r


def test_an_empty_server_hostname_is_refused(pki: Any) -> None:
    with sslsock.Listener(0, "localhost", host=LOOPBACK) as lst:
        with pytest.raises(sslsock.ArgumentError, match="check_hostname=False"):
            sslsock.connect(LOOPBACK, lst.port, server_hostname="")
        # said on purpose: a certificate for any name, its chain still verified
        with sslsock.connect(LOOPBACK, lst.port, server_hostname="elsewhere.test",
                             check_hostname=False, timeout=10):
            pass
        with pytest.raises(sslsock.TLSError):
            sslsock.connect(LOOPBACK, lst.port, server_hostname="elsewhere.test", timeout=10)


# ---- 7. a private key others can read is refused ---------------------------------------


def test_a_readable_private_key_is_refused_unless_allowed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    [_, key] = _certgen.make_self_signed("localhost").write_pem(d / "server", split=True)
    key.chmod(0o644)
    with pytest.raises(sslsock.CertificateError, match=f"run chmod 600 {key}"):
        sslsock.Listener(0, "server", store=sslsock.CertStore(d), host=LOOPBACK)
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(d))
    assert not sslsock.SocketCreateSSL("srv", 0, "server")
    assert f"chmod 600 {key}" in sslsock.ErrorInfo()
    # the explicit override: served, with a warning, to a real peer
    with pytest.warns(InsecureKeyFileWarning, match="chmod 600"):
        lst = sslsock.Listener(0, "server", store=sslsock.CertStore(d, allow_readable_keys=True),
                               host=LOOPBACK)
    with lst:
        run = subprocess.run(["openssl", "s_client", "-connect", f"{LOOPBACK}:{lst.port}",
                              "-brief"], input=b"", capture_output=True, timeout=PEER_TIMEOUT)
        assert lst.wait(PEER_TIMEOUT)
    assert b"CONNECTION ESTABLISHED" in run.stderr, run.stderr


# ---- 9. smaller leaks ------------------------------------------------------------------


def test_a_wrong_key_password_does_not_reuse_a_cached_key(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The client context cache once knew a password only as "given": a later connect
    with a wrong password presented the key the right one had opened."""
    ca = _certgen.make_ca("client CA")
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    _certgen.make_self_signed("localhost").write_pem(d / "server.pem")
    _add_client_ca(d, "client-ca", ca)
    _certgen.make_leaf(ca, "me", hosts=["me.test"], client=True).write_pem(
        d / "me.pem", password=b"right")
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(d))
    with sslsock.Listener(0, "server", host=LOOPBACK, options=O.SSLClientCertificate,
                          password="right") as lst:
        with sslsock.connect(LOOPBACK, lst.port, verify=False, client_certificate="me",
                             password="right", timeout=10):
            assert lst.accept(10).peer_certificate() is not None
        with pytest.raises(sslsock.CertificateError, match="wrong password"):
            sslsock.connect(LOOPBACK, lst.port, verify=False, client_certificate="me",
                            password="wrong", timeout=10)


def test_a_frame_error_describes_the_peers_bytes_without_quoting_them(pki: Any) -> None:
    secret = b"GET /reset?token=hunter2secret HTTP/1.1\r\n"
    with sslsock.Listener(0, "localhost", host=LOOPBACK) as lst:
        ctx = pki.client_context()
        with socket.create_connection((LOOPBACK, lst.port), timeout=PEER_TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(secret)
                conn = lst.accept(PEER_TIMEOUT)
                with pytest.raises(sslsock.FrameError) as e:
                    conn.read(timeout=PEER_TIMEOUT)
    message = str(e.value)
    assert "not a decimal number" in message and "a letter" in message
    for piece in (b"GET", b"token", b"hunter2", b"reset", b"HTTP"):
        assert piece.decode() not in message


@pytest.mark.parametrize("kw,match", [
    (dict(max_message=1 << 63), "max_message must be 1 to"),
    (dict(max_message=0), "max_message must be 1 to"),
    (dict(mode=sslsock.Mode.SocketEndTag, end_tag=b""), "end tag must be 1 to 64"),
    (dict(mode=sslsock.Mode.SocketEndTag, end_tag=b"x" * 65), "end tag must be 1 to 64"),
    (dict(mode=42), "unknown transmission mode"),
])
def test_a_listeners_framing_is_checked(pki: Any, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(sslsock.ArgumentError, match=match):
        sslsock.Listener(0, "localhost", host=LOOPBACK, **kw)


# ---- 5, 6. ticket keys: a broken file blocks nothing, keys rotate, written safely -------


def _hello(port: int, ctx: ssl.SSLContext, session: Any = None) -> tuple[str, Any, bool]:
    """One TLS 1.2 handshake (tickets) and one echo: (server SHA-1, session, resumed)."""
    with ctx.wrap_socket(socket.create_connection((LOOPBACK, port), timeout=PEER_TIMEOUT),
                         server_hostname="localhost", session=session) as tls:
        tls.sendall(b"2\r\nhi")
        assert tls.recv(16) == b"2\r\nhi"
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha1(der).hexdigest(), tls.session, tls.session_reused  # noqa: S324


def _echo(lst: sslsock.Listener) -> threading.Thread:
    def loop() -> None:
        while not lst.closed:
            try:
                conn = lst.accept(timeout=0.2)
            except sslsock.SocketTimeout:
                continue
            except sslsock.Error:
                return
            with conn:
                try:
                    conn.write(conn.read(timeout=PEER_TIMEOUT))
                except sslsock.Error:
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _tls12(ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def test_a_broken_ticket_key_file_does_not_block_renewal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from sslsock._deploy import tickets as _tickets

    ca = _certgen.make_ca("renewal CA")
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    store = sslsock.CertStore(d)
    old = _certgen.make_leaf(ca, "localhost", hosts=["localhost", LOOPBACK])
    new = _certgen.make_leaf(ca, "localhost", hosts=["localhost", LOOPBACK])
    old.write_pem(tmp_path / "old.pem")
    new.write_pem(tmp_path / "new.pem")
    store.import_file(tmp_path / "old.pem", name="svc")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    ctx = _tls12(tmp_path / "ca.pem")
    keys = tmp_path / "keys"
    _tickets.rotate(keys)
    caplog.set_level(logging.INFO, logger="sslsock")
    with sslsock.Listener(0, "svc", host=LOOPBACK, store=store, ticket_keys=str(keys),
                          reload_interval=0.2, threads=1) as lst:
        _echo(lst)
        _, session, _ = _hello(lst.port, ctx)
        # the key file breaks (a bad copy), then the certificate is renewed
        broken = keys.with_name("broken")
        broken.write_text("not a key\n")
        broken.chmod(0o600)
        os.replace(broken, keys)
        store.import_file(tmp_path / "new.pem", name="svc", replace=True)
        new_sha1 = hashlib.sha1(new.certificate.public_bytes(  # noqa: S324
            serialization.Encoding.DER)).hexdigest()
        deadline = time.monotonic() + PEER_TIMEOUT
        while _hello(lst.port, ctx)[0] != new_sha1:
            assert time.monotonic() < deadline, "a broken ticket-key file blocked renewal"
            time.sleep(0.1)
        # the keys the listener had still serve the new certificate's context
        _, session, _ = _hello(lst.port, ctx)
        assert _hello(lst.port, ctx, session)[2]
        time.sleep(1.0)  # five more looks at the broken file
    said = [r for r in caplog.records if "ticket keys were not reloaded" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert "line 1" in said[0].getMessage()


def test_ticket_keys_rotate_on_schedule_and_old_tickets_still_resume(
        pki: Any, tmp_path: Path) -> None:
    from sslsock._deploy import tickets as _tickets

    keys = tmp_path / "keys"
    _tickets.rotate(keys)
    first = _tickets.load(keys)[:_tickets.KEY_LEN]
    ctx = _tls12(pki.ca_file)
    with sslsock.Listener(0, "localhost", host=LOOPBACK, ticket_keys=str(keys),
                          ticket_rotation=1.0, reload_interval=0.2, threads=1) as lst:
        _echo(lst)
        _, session, _ = _hello(lst.port, ctx)
        deadline = time.monotonic() + PEER_TIMEOUT
        while _tickets.load(keys)[:_tickets.KEY_LEN] == first:
            assert time.monotonic() < deadline, "the ticket keys were not rotated"
            time.sleep(0.1)
        time.sleep(0.5)  # the listener reads the rotated file
        assert first in _tickets.load(keys), "the previous key was dropped at once"
        assert _hello(lst.port, ctx, session)[2], "a ticket of the previous key did not resume"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_in_memory_keys_rotate_by_a_ratchet_shared_by_forked_processes(pki: Any) -> None:
    from sslsock._deploy import tickets as _tickets

    now = [1000.0]
    ratchet = _tickets.Ratchet(10.0, clock=lambda: now[0])
    ctx = _tls12(pki.ca_file)
    a = sslsock.Listener(0, "localhost", host=LOOPBACK, ticket_keys=ratchet,
                         reload_interval=None, threads=1)
    _tlsconfig_clear()
    b = sslsock.Listener(0, "localhost", host=LOOPBACK, ticket_keys=ratchet,
                         reload_interval=None, threads=1)
    with a, b:
        _echo(a)
        _echo(b)
        first = bytes(ratchet.keys())
        _, session, _ = _hello(a.port, ctx)
        assert _hello(b.port, ctx, session)[2]
        now[0] += 10
        assert a.reload() and b.reload()
        assert bytes(ratchet.keys()) != first and first in bytes(ratchet.keys())
        assert _hello(b.port, ctx, session)[2], "a ticket of the previous period"
        now[0] += 10 * (_tickets.keep_for(10.0) + 1)
        assert a.reload() and b.reload()
        assert first not in bytes(ratchet.keys())
        assert not _hello(b.port, ctx, session)[2], "an expired period's key still decrypts"


def _tlsconfig_clear() -> None:
    from sslsock._tls import contexts as _tlsconfig

    _tlsconfig.clear_cache()  # another context, as another process would have


_ROTATE = r"""
import sys
from sslsock._deploy import tickets as _tickets
for _ in range(int(sys.argv[2])):
    _tickets.rotate(sys.argv[1], keep=15)
"""


def test_concurrent_rotations_lose_no_key(tmp_path: Path) -> None:
    from sslsock._deploy import tickets as _tickets

    keys = tmp_path / "keys"
    _tickets.rotate(keys, keep=15)
    procs = [subprocess.Popen([sys.executable, "-c", _ROTATE, str(keys), "4"])
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(_tickets.load(keys)) == (1 + 3 * 4) * _tickets.KEY_LEN


def test_a_rotation_does_not_write_through_a_planted_link(tmp_path: Path) -> None:
    from sslsock._deploy import tickets as _tickets

    d = tmp_path / "keys-dir"
    d.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    keys = d / "session-ticket-keys"
    for pid in range(os.getpid() - 50, os.getpid() + 50):  # the names once predictable
        (d / f".session-ticket-keys.{pid}.tmp").symlink_to(victim)
    _tickets.rotate(keys)
    assert victim.read_text() == "precious\n"
    assert not keys.is_symlink() and len(_tickets.load(keys)) == _tickets.KEY_LEN
    # the lock file beside it is never followed either
    lock = d / ".session-ticket-keys.lock"
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(sslsock.CertificateError, match="not a link"):
        _tickets.rotate(keys)
    assert victim.read_text() == "precious\n"


# ---- 10. no deprecated cryptography type at import -------------------------------------


def test_import_and_commands_print_no_warning() -> None:
    """With cryptography 51, touching its DSA (or finite-field DH) types warns, and they are
    to be removed: `import sslsock` and a command must not touch them."""
    code = "import sslsock, sslsock._cli.main, sslsock._cli.cert, sslsock.aio, sslsock._faces.named"
    run = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    env = {**os.environ, "SSLSOCK_CERT_STORE": "/nonexistent/sslsock-store"}
    listing = subprocess.run([sys.executable, "-W", "error", "-m", "sslsock", "cert", "list"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and listing.stderr == "", listing.stderr


def test_no_module_imports_a_deprecated_cryptography_type() -> None:
    """Whatever cryptography is installed: sslsock imports neither its dsa nor its dh
    module (to be removed), so the import keeps working once they are gone."""
    import ast

    src = Path(sslsock.__file__).parent
    found = []
    for path in sorted(src.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "cryptography.hazmat.primitives.asymmetric"):
                names = {a.name for a in node.names} | {(node.module or "").rsplit(".", 1)[-1]}
                found += [f"{path.name}: {n}" for n in names & {"dsa", "dh"}]
    assert found == []
