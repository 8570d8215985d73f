"""Shared fixtures: a test PKI made at run time, a certificate store holding it, and a
named-face registry emptied after every test."""
from __future__ import annotations

import os
import resource
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import sslsock
from sslsock._certs import generate as _certgen
from sslsock._core.binding import openssl_versions
from sslsock._faces.registry import REGISTRY


def peer_env() -> dict[str, str]:
    """The environment for a peer program that is not Python (curl): the one the tests run
    in, less the sanitizer run-time that scripts/sanitize-tests.sh preloads into every
    process (it is there for sslsock's C core; curl with it preloaded hangs in its
    resolver thread)."""
    env = dict(os.environ)
    if env.get("SSLSOCK_SANITIZED") == "1":
        env.pop("LD_PRELOAD", None)
    return env


def pytest_report_header(config: pytest.Config) -> list[str]:
    compiled, linked = openssl_versions()
    lines = [f"sslsock core: compiled against {compiled}, linked {linked}",
             f"stdlib ssl peer: {ssl.OPENSSL_VERSION}"]
    try:
        from OpenSSL import SSL as _pyssl

        lines.append("pyOpenSSL peer: " + _pyssl.SSLeay_version(_pyssl.SSLEAY_VERSION).decode())
    except Exception as e:  # pragma: no cover - pyOpenSSL is a test dependency
        lines.append(f"pyOpenSSL peer: unavailable ({e})")
    lines.append("openssl command: " + (shutil.which("openssl") or "not found"))
    return lines


@pytest.fixture(scope="session", autouse=True)
def _enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class PKI:
    """A CA, a server certificate for localhost signed by it, a client certificate, and a
    store directory holding the server and client certificates (and the CA as trust)."""

    dir: Path
    store_dir: Path
    ca: _certgen.Issued
    server: _certgen.Issued
    client: _certgen.Issued
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path

    @property
    def server_sha1(self) -> str:
        from cryptography.hazmat.primitives import hashes

        return self.server.certificate.fingerprint(hashes.SHA1()).hex()  # noqa: S303

    def client_context(self, **kw: object) -> ssl.SSLContext:
        """A stdlib client context that trusts the test CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKI]:
    d = tmp_path_factory.mktemp("pki")
    store = d / "store"
    store.mkdir(mode=0o700)
    ca = _certgen.make_ca("sslsock test CA")
    server = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1", "::1"])
    client = _certgen.make_leaf(ca, "sslsock test client", hosts=["client.test"], client=True)
    server.write_pem(store / "localhost.pem")
    client.write_pem(store / "client.pem")
    ca_file = d / "ca.pem"
    ca_file.write_bytes(ca.cert_pem())
    # the test CA issued both the server's and the client's certificates: a trust anchor
    # for clients, and marked as a client CA so that mutual TLS lets its clients in
    (store / "test-ca.pem").write_bytes(b"# sslsock: client-ca\n" + ca.cert_pem())
    files = {}
    for who, issued in (("server", server), ("client", client)):
        cert, key = issued.write_pem(d / who, split=True)
        files[who] = (cert, key)
    old = os.environ.get("SSLSOCK_CERT_STORE")
    os.environ["SSLSOCK_CERT_STORE"] = str(store)
    yield PKI(d, store, ca, server, client, ca_file, files["server"][0], files["server"][1],
              files["client"][0], files["client"][1])
    if old is None:
        os.environ.pop("SSLSOCK_CERT_STORE", None)
    else:
        os.environ["SSLSOCK_CERT_STORE"] = old


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Close whatever a test left registered, so names and ports never leak."""
    yield
    for name in REGISTRY.names():
        try:
            sslsock.SocketClose(name)
        except sslsock.Error:
            pass
    sslsock.Socket.Option = 0
    sslsock.Socket.ProxyAllow = ()


@contextmanager
def _openssl_s_server(openssl: str, cert: Path, key: Path, *flags: str,
                      timeout: float = 10.0) -> Iterator[int]:
    """`openssl s_server` on a free loopback port, serving one connection after another
    (its stdin stays open: EOF would stop it).  Yields the port once it accepts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen(
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert),
             "-key", str(key), *flags],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        pytest.fail(f"openssl s_server {' '.join(flags)} did not start")
                    time.sleep(0.05)
            yield port
        finally:
            proc.kill()


@pytest.fixture(scope="session")
def openssl_s_server() -> Callable[..., AbstractContextManager[int]]:
    """A factory: ``with openssl_s_server(openssl, cert, key, *flags) as port: ...``."""
    return _openssl_s_server
