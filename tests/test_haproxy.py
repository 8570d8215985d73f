"""A real load balancer in front of sslsock: HAProxy (the Debian package, installed by
scripts/bootstrap) on loopback in TCP mode, sending the PROXY header (v2, and v1) to
sslsock listeners and to two `sslsock serve` processes it balances over.  Checked: the
client addresses the servers report, resumption on one process of a session made on the
other (shared ticket keys), renewal under load without a failed handshake, and that killing
one process loses no connection on the other.  Every process started here is stopped by
its PID; every wait is bounded."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from sslsock import CertStore, Listener
from sslsock._certs import generate as _certgen
from sslsock._deploy import tickets as _tickets

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                      if os.access("/usr/sbin/haproxy", os.X_OK) else None)
SSLSOCK = [sys.executable, "-m", "sslsock"]

# Never skipped: scripts/bootstrap installs HAProxy, and CI runs the bootstrap first.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not listen on {port} within {timeout} s") \
                    from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)


@contextmanager
def haproxy(tmp: Path, frontends: dict[int, tuple[str, list[int]]]) -> Iterator[None]:
    """HAProxy in the foreground: each frontend port balances (round robin) over servers on
    loopback, sending the PROXY header ("send-proxy" or "send-proxy-v2")."""
    assert HAPROXY, "haproxy is not installed: run scripts/bootstrap"
    cfg = ["global", "    maxconn 512", "defaults", "    mode tcp", "    timeout connect 2s",
           "    timeout client 30s", "    timeout server 30s", "    retries 3",
           "    option redispatch"]
    for n, (fport, (send, servers)) in enumerate(frontends.items()):
        cfg += [f"frontend fe{n}", f"    bind 127.0.0.1:{fport}", f"    default_backend be{n}",
                f"backend be{n}", "    balance roundrobin"]
        cfg += [f"    server s{i} 127.0.0.1:{p} {send}" for i, p in enumerate(servers)]
    path = tmp / f"haproxy-{time.monotonic_ns()}.cfg"
    path.write_text("\n".join(cfg) + "\n")
    log = open(tmp / "haproxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([HAPROXY, "-f", str(path), "-db"], stdout=log, stderr=log)
    try:
        for fport in frontends:
            wait_port(fport, proc, "haproxy")
        yield
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def pki3(tmp_path: Path) -> Any:
    ca = _certgen.make_ca("haproxy test CA")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    issued = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
    issued.write_pem(tmp_path / "svc-1.pem")
    CertStore(store).import_file(tmp_path / "svc-1.pem", name="svc")
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(ca.cert_pem())
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ca, store, ctx, issued


def test_clients_addresses_through_haproxy(pki3: Any, tmp_path: Path) -> None:
    _, store, ctx, _ = pki3
    st = CertStore(store)
    with Listener(0, "svc", store=st, host="127.0.0.1", proxy_protocol=True,
                  proxy_allow=["127.0.0.1"], threads=1) as v2, \
            Listener(0, "svc", store=st, host="127.0.0.1", proxy_protocol=True,
                     threads=1) as v1:
        f2, f1 = free_port(), free_port()
        with haproxy(tmp_path, {f2: ("send-proxy-v2", [v2.port]),
                                f1: ("send-proxy", [v1.port])}):
            for fport, lst in ((f2, v2), (f1, v1)):
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", fport), timeout=10),
                                     server_hostname="localhost") as tls:
                    conn = lst.accept(timeout=10)
                    with conn:
                        info = conn.info()
                        assert info.peer_address == "127.0.0.1"
                        assert info.peer_port == tls.getsockname()[1]  # the real client
                        assert info.proxy_address == "127.0.0.1"
                        assert info.proxy_port not in (0, tls.getsockname()[1])  # HAProxy's
                        conn.write(b"through")
                        assert tls.recv(64) == b"7\r\nthrough"
            # HAProxy without the header in front of a listener that expects it: refused and
            # counted (HAProxy may retry the connection once more)
            with Listener(0, "svc", store=st, host="127.0.0.1", proxy_protocol=True,
                          threads=1) as strict:
                f0 = free_port()
                with haproxy(tmp_path, {f0: ("", [strict.port])}):
                    # the start-up probe went through HAProxy too (a connection that ends
                    # without a byte): let its refusal be counted first
                    base, deadline = -1, time.monotonic() + 5
                    while strict.stats().proxy_refused != base and time.monotonic() < deadline:
                        base = strict.stats().proxy_refused
                        time.sleep(0.3)
                    with pytest.raises((ssl.SSLError, OSError)):
                        ctx.wrap_socket(socket.create_connection(("127.0.0.1", f0), timeout=10),
                                        server_hostname="localhost").close()
                    deadline = time.monotonic() + 5
                    while strict.stats().proxy_refused <= base and time.monotonic() < deadline:
                        time.sleep(0.02)
                assert strict.stats().proxy_refused > base
                assert strict.stats().handshakes == 0
                assert "started the TLS handshake directly" in strict.stats().last_failure
        assert v1.stats().proxy_refused == 0 and v2.stats().proxy_refused == 0


class ServeProc:
    def __init__(self, tmp: Path, store: Path, keys: Path, n: int) -> None:
        self.port = free_port()
        self.err_path = tmp / f"serve-{n}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed by close()
        env = {**os.environ, "SSLSOCK_CERT_STORE": str(store)}
        self.proc = subprocess.Popen(
            [*SSLSOCK, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--cert",
             "svc", "--proxy-protocol", "--ticket-keys", str(keys), "--grace", "2"],
            stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        wait_port(self.port, self.proc, f"sslsock serve {n}", timeout=60)

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def served(self, client_port: int) -> bool:
        return re.search(rf"#\d+ 127\.0\.0\.1:{client_port} connected", self.log()) is not None

    def close(self) -> None:
        stop(self.proc)
        self._err.close()


def echo(tls: ssl.SSLSocket, payload: bytes) -> None:
    tls.sendall(b"%d\r\n%s" % (len(payload), payload))
    want = b"%d\r\n%s" % (len(payload), payload)
    got = b""
    while len(got) < len(want):
        chunk = tls.recv(len(want) - len(got))
        assert chunk, "connection closed"
        got += chunk
    assert got == want


def wait_for(cond: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_two_processes_behind_haproxy(pki3: Any, tmp_path: Path) -> None:
    ca, store, ctx, first = pki3
    keys = tmp_path / "ticket-keys"
    _tickets.rotate(keys)
    servers = [ServeProc(tmp_path, store, keys, n) for n in (0, 1)]
    front = free_port()
    try:
        with haproxy(tmp_path, {front: ("send-proxy-v2", [s.port for s in servers])}):
            def connect(session: Any = None) -> ssl.SSLSocket:
                return ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", front), timeout=10),
                    server_hostname="localhost", session=session)

            # 1. the real client's address, in the log of the process that served it; and
            # resumption on one process of a session made on the other
            def served_by(tls: ssl.SSLSocket) -> ServeProc:
                port = tls.getsockname()[1]
                wait_for(lambda: any(s.served(port) for s in servers),
                         f"no process logged the client's own port {port}")
                return next(s for s in servers if s.served(port))

            with connect() as a:
                echo(a, b"one")
                session = a.session
                maker = served_by(a)
            for _ in range(10):
                with connect(session) as b:
                    echo(b, b"two")
                    if served_by(b) is not maker:
                        assert b.session_reused, "no resumption across the two processes"
                        break
            else:
                raise AssertionError("HAProxy never balanced to the other process")

            # 2. renewal under load: handshakes keep coming while the certificate changes
            renewed = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
            renewed.write_pem(tmp_path / "svc-2.pem")
            new_sha1 = renewed.certificate.fingerprint(hashes.SHA1()).hex()
            seen: list[str] = []
            failures: list[str] = []
            done = threading.Event()

            def load() -> None:
                while not done.is_set():
                    try:
                        with connect() as tls:
                            echo(tls, b"load")
                            der = tls.getpeercert(binary_form=True)
                            from cryptography import x509

                            assert der
                            seen.append(x509.load_der_x509_certificate(der)
                                        .fingerprint(hashes.SHA1()).hex())
                    except Exception as e:  # noqa: BLE001 - counted, then asserted
                        failures.append(repr(e))

            threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                time.sleep(0.5)
                r = subprocess.run([*SSLSOCK, "cert", "import", str(tmp_path / "svc-2.pem"),
                                    "--name", "svc", "--replace"],
                                   env={**os.environ, "SSLSOCK_CERT_STORE": str(store)},
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                # both processes serve it: several handshakes in a row see it
                wait_for(lambda: seen[-6:] == [new_sha1] * 6 and len(seen) > 6,
                         "the renewed certificate is not served by both processes", 20)
            finally:
                done.set()
                for t in threads:
                    t.join(15)
            assert not failures, failures[:3]
            assert len(seen) >= 10 and seen[0] != new_sha1
            for s in servers:
                assert "now serving the renewed certificate" in s.log(), s.log()

            # 3. kill one process: the connection on the other carries on; new clients
            # go to the one left
            with connect() as held:
                echo(held, b"held")
                keeper = served_by(held)
                victim = next(s for s in servers if s is not keeper)
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.proc.wait(10)
                for i in range(5):
                    echo(held, b"still here %d" % i)
                for _ in range(4):
                    with connect() as tls:
                        echo(tls, b"after")
                        assert served_by(tls) is keeper
    finally:
        for s in servers:
            s.close()
    assert all(s.proc.returncode in (0, -signal.SIGKILL) for s in servers)


def test_haproxy_is_there() -> None:
    """The deployment tests above need HAProxy; scripts/bootstrap installs it."""
    assert HAPROXY, "haproxy is missing: run scripts/bootstrap (Debian package haproxy)"
    out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "HAProxy version" in out.stdout


def test_worker_processes_behind_haproxy(pki3: Any, tmp_path: Path) -> None:
    """`sslsock serve --workers 2 --proxy-protocol` behind HAProxy: the workers share ticket
    keys (made by the supervisor), so a session made on one resumes on the other; killing a
    worker loses no connection on the other, and the supervisor starts it again."""
    _, store, ctx, _ = pki3
    port = free_port()
    err_path = tmp_path / "workers.err"
    with open(err_path, "wb") as err_file:
        proc = subprocess.Popen(
            [*SSLSOCK, "serve", "--host", "127.0.0.1", "--port", str(port), "--cert", "svc",
             "--workers", "2", "--proxy-protocol", "--stats", "0.2", "--grace", "2"],
            stdout=subprocess.DEVNULL, stderr=err_file,
            env={**os.environ, "SSLSOCK_CERT_STORE": str(store)})
    try:
        wait_port(port, proc, "sslsock serve --workers 2", timeout=60)

        def log() -> str:
            return err_path.read_text(errors="replace")

        def worker_of(tls: ssl.SSLSocket) -> int:
            client = tls.getsockname()[1]
            pattern = rf"\[worker \d+ pid (\d+)\] #\d+ 127\.0\.0\.1:{client} connected"
            wait_for(lambda: re.search(pattern, log()) is not None,
                     f"no worker logged the client's own port {client}")
            m = re.search(pattern, log())
            assert m
            return int(m.group(1))

        front = free_port()
        with haproxy(tmp_path, {front: ("send-proxy-v2", [port])}):
            def connect(session: Any = None) -> ssl.SSLSocket:
                return ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", front), timeout=10),
                    server_hostname="localhost", session=session)

            with connect() as a:
                echo(a, b"one")
                session, maker = a.session, worker_of(a)
            for _ in range(30):  # the kernel spreads connections over the two workers
                with connect(session) as b:
                    echo(b, b"two")
                    if worker_of(b) != maker:
                        assert b.session_reused, "no resumption across the worker processes"
                        break
            else:
                raise AssertionError("every connection went to the same worker")

            with connect() as held:
                echo(held, b"held")
                keeper = worker_of(held)
                pids = {int(p) for p in re.findall(r"\[worker \d+ pid (\d+)\]", log())}
                victim = next(p for p in pids if p != keeper and p != proc.pid)
                os.kill(victim, signal.SIGKILL)
                wait_for(lambda: f"(pid {victim}) killed by SIGKILL; starting it again" in log(),
                         "the supervisor did not notice the killed worker")
                for i in range(5):
                    echo(held, b"still here %d" % i)
                for _ in range(4):
                    with connect() as tls:  # new clients are served (by either worker)
                        echo(tls, b"after")
        assert stop(proc) == 0, log()
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
