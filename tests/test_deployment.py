"""[extension] Past one process: shared session-ticket keys, certificate renewal without
restart, worker processes (sslsock serve --workers), the CPU count they default to.
HAProxy in front of them: tests/test_haproxy.py."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

import sslsock
from sslsock import CertStore, Listener
from sslsock._certs import generate as _certgen
from sslsock._deploy import tickets as _tickets
from sslsock._deploy.workers import _cgroup_cpu_quota, available_cpus
from sslsock._tls import contexts as _tlsconfig

SSLSOCK = [sys.executable, "-m", "sslsock"]


def sha1_of(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der
    from cryptography import x509

    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA1()).hex()


def client_ctx(ca: _certgen.Issued, tmp: Path) -> ssl.SSLContext:
    cafile = tmp / "client-ca.pem"
    cafile.write_bytes(ca.cert_pem())
    return ssl.create_default_context(cafile=str(cafile))


def hello(port: int, ctx: ssl.SSLContext, session: Any = None) -> tuple[str, Any, bool]:
    """One handshake and one echo; (server certificate SHA-1, session, resumed)."""
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="localhost", session=session) as tls:
        tls.sendall(b"2\r\nhi")
        assert tls.recv(16) == b"2\r\nhi"
        return sha1_of(tls), tls.session, tls.session_reused


def echo_all(listener: Listener, stop_after: float = 15.0) -> Any:
    """Serve `listener` on a thread: one echoing thread per connection."""
    import threading

    def serve_one(conn: sslsock.Connection) -> None:
        with conn:
            try:
                while True:
                    conn.write(conn.read(timeout=stop_after))
            except sslsock.Error:
                pass

    def loop() -> None:
        while not listener.closed:
            try:
                conn = listener.accept(timeout=0.2)
            except sslsock.SocketTimeout:
                continue
            except sslsock.Error:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


@pytest.fixture
def pki2(tmp_path: Path) -> Any:
    ca = _certgen.make_ca("deployment test CA")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    return ca, CertStore(store)


def leaf(ca: _certgen.Issued, path: Path) -> _certgen.Issued:
    issued = _certgen.make_leaf(ca, "localhost", hosts=["localhost", "127.0.0.1"])
    issued.write_pem(path)
    return issued


# ---- ticket keys ------------------------------------------------------------------------


def test_ticket_key_file_rotation_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    assert _tickets.rotate(path) == 1
    assert os.stat(path).st_mode & 0o777 == 0o600
    first = _tickets.load(path)
    assert _tickets.rotate(path) == 2 and _tickets.rotate(path) == 3
    assert _tickets.rotate(path) == 3  # keeps the current key and two previous ones
    keys = _tickets.load(path)
    assert len(keys) == 3 * _tickets.KEY_LEN and first not in keys
    os.chmod(path, 0o644)
    with pytest.raises(sslsock.CertificateError, match="chmod 600") as e:
        _tickets.load(path)
    assert keys.hex() not in str(e.value) and keys[:16].hex() not in str(e.value)
    bad = tmp_path / "bad"
    bad.write_text("# header\n" + "ab" * 79 + "\n")
    os.chmod(bad, 0o600)
    with pytest.raises(sslsock.CertificateError, match="line 2: a session-ticket key is 80 "):
        _tickets.load(bad)
    bad.write_text("zz" * 80 + "\n")
    with pytest.raises(sslsock.CertificateError, match="line 1: not a hexadecimal"):
        _tickets.load(bad)
    with pytest.raises(sslsock.CertificateError, match="sslsock cert tickets rotate"):
        _tickets.load(tmp_path / "missing")


def test_shared_keys_resume_across_contexts_and_survive_rotation(pki: Any,
                                                                 tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    _tickets.rotate(keys)
    ctx = pki.client_context()
    a = Listener(0, "localhost", host="127.0.0.1", ticket_keys=str(keys), threads=1,
                 reload_interval=None)
    _tlsconfig.clear_cache()  # b gets a context of its own, as another process would
    b = Listener(0, "localhost", host="127.0.0.1", ticket_keys=str(keys), threads=1,
                 reload_interval=None)
    _tlsconfig.clear_cache()
    c = Listener(0, "localhost", host="127.0.0.1", threads=1)  # OpenSSL's own keys
    try:
        assert a._tls is not b._tls and b._tls is not c._tls
        for lst in (a, b, c):
            echo_all(lst)
        _, session, resumed = hello(a.port, ctx)
        assert not resumed
        assert hello(b.port, ctx, session)[2], "b did not resume a's session"
        assert not hello(c.port, ctx, session)[2], "c resumed without the shared keys"
        # Rotation: the old key still decrypts, until it is rotated out.
        _, session, _ = hello(a.port, ctx)
        _tickets.rotate(keys, keep=1)
        assert b.reload()
        assert hello(b.port, ctx, session)[2], "a ticket under the previous key no longer resumes"
        _tickets.rotate(keys, keep=1)
        assert b.reload()
        assert not hello(b.port, ctx, session)[2], "a key rotated out still decrypts"
    finally:
        for lst in (a, b, c):
            lst.close()


def test_ticket_keys_cli(tmp_path: Path) -> None:
    env = {**os.environ, "SSLSOCK_CERT_STORE": str(tmp_path / "store")}
    r = subprocess.run([*SSLSOCK, "cert", "tickets", "rotate"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "store" / "session-ticket-keys"
    assert "created" in r.stdout and str(path) in r.stdout
    assert os.stat(path).st_mode & 0o777 == 0o600
    key_hex = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    r = subprocess.run([*SSLSOCK, "cert", "tickets", "rotate"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "1 previous key still decrypts" in r.stdout, r.stdout
    assert not any(k in r.stdout + r.stderr for k in key_hex)


# ---- certificate renewal -----------------------------------------------------------------


def test_renewal_without_restart(pki2: Any, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    ca, store = pki2
    old = leaf(ca, tmp_path / "old.pem")
    new = leaf(ca, tmp_path / "new.pem")
    store.import_file(tmp_path / "old.pem", name="svc")
    ctx = client_ctx(ca, tmp_path)
    old_sha1 = old.certificate.fingerprint(hashes.SHA1()).hex()
    new_sha1 = new.certificate.fingerprint(hashes.SHA1()).hex()
    with Listener(0, "svc", host="127.0.0.1", store=store, reload_interval=0.3,
                  threads=1) as lst:
        echo_all(lst)
        assert hello(lst.port, ctx)[0] == old_sha1
        # a connection open across the renewal
        held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", lst.port), timeout=10),
                               server_hostname="localhost")
        with held:
            held.sendall(b"1\r\na")
            assert held.recv(8) == b"1\r\na"
            store.import_file(tmp_path / "new.pem", name="svc", replace=True)
            deadline = time.monotonic() + 10
            while hello(lst.port, ctx)[0] != new_sha1:
                assert time.monotonic() < deadline, "the renewed certificate was not taken"
                time.sleep(0.1)
            assert lst.certificate.sha256 != old.certificate.fingerprint(hashes.SHA256()).hex()
            held.sendall(b"1\r\nb")
            assert held.recv(8) == b"1\r\nb"
            assert sha1_of(held) == old_sha1
        # A broken replacement (copied in by hand): refused, logged once, the renewed
        # certificate stays in service.
        caplog.set_level(logging.ERROR, logger="sslsock")
        junk = store.path / ".junk"
        junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        os.chmod(junk, 0o600)
        os.replace(junk, store.path / "svc.pem")
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "cannot be served" in r.getMessage()]:
            assert time.monotonic() < deadline, "the broken replacement was not reported"
            time.sleep(0.1)
        message = [r for r in caplog.records if "cannot be served" in r.getMessage()][0]
        assert "keeps the one it has" in message.getMessage()
        assert "PRIVATE KEY" not in message.getMessage()
        assert hello(lst.port, ctx)[0] == new_sha1
        time.sleep(1.0)
        assert len([r for r in caplog.records if "cannot be served" in r.getMessage()]) == 1


def test_replace_checks_the_renewed_certificate(pki2: Any, tmp_path: Path) -> None:
    ca, store = pki2
    leaf(ca, tmp_path / "a.pem")
    store.import_file(tmp_path / "a.pem", name="svc")
    with pytest.raises(sslsock.CertificateError, match="nothing to renew"):
        store.import_file(tmp_path / "a.pem", name="svc", replace=True)
    with pytest.raises(sslsock.CertificateError, match="no certificate named \"other\""):
        store.import_file(tmp_path / "a.pem", name="other", replace=True)
    certonly = tmp_path / "certonly.pem"
    certonly.write_bytes(leaf(ca, tmp_path / "b.pem").cert_pem())
    with pytest.raises(sslsock.CertificateError, match="no private key with it"):
        store.import_file(certonly, name="svc", replace=True)
    with pytest.raises(sslsock.CertificateError, match="--replace"):
        store.import_file(tmp_path / "b.pem", name="svc")
    # .crt + .key in place of a .pem: the old file goes
    issued = _certgen.make_leaf(ca, "localhost", hosts=["localhost"])
    crt, _ = issued.write_pem(tmp_path / "c", split=True)
    entry = store.import_file(crt, name="svc", replace=True)
    assert sorted(p.name for p in store.path.iterdir()) == ["svc.crt", "svc.key"]
    assert entry.has_key and oct(os.stat(store.path / "svc.key").st_mode & 0o777) == "0o600"


# ---- worker processes ----------------------------------------------------------------------


def test_available_cpus_follows_affinity_and_quota(tmp_path: Path) -> None:
    r = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                        "import sslsock; print(sslsock.available_cpus())"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    assert available_cpus() <= len(os.sched_getaffinity(0))
    # quotas in a copy of the cgroup tree, at this process's own cgroup paths
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
    v1 = next((line.split(":", 2) for line in lines
               if "cpu" in line.split(":", 2)[1].split(",")), None)
    if v2 is None and v1 is None:
        pytest.skip("this process is in no cgroup")
    if v2 is not None:
        d = tmp_path.joinpath(*[p for p in v2.split("/") if p])
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text("150000 100000\n")
        if d != tmp_path:  # a parent without a limit does not lift the child's
            (tmp_path / "cpu.max").write_text("max 100000\n")
    if v1 is not None:
        d1 = tmp_path.joinpath(v1[1], *[p for p in v1[2].split("/") if p])
        d1.mkdir(parents=True, exist_ok=True)
        (d1 / "cpu.cfs_quota_us").write_text("250000\n" if v2 is not None else "150000\n")
        (d1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_quota(str(tmp_path)) == 1.5
    if v2 is not None:
        (d / "cpu.max").write_text("max 100000\n")
    if v1 is not None:
        (d1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_cpu_quota(str(tmp_path)) is None


class Serve:
    """`sslsock serve --workers` in the background; its stderr in a file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.err_path = tmp / f"serve-{time.monotonic_ns()}.err"
        self.env = {**os.environ, "SSLSOCK_CERT_STORE": str(tmp / "store")}
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed by kill()
        self.proc = subprocess.Popen(
            [*SSLSOCK, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._err, env=self.env)
        assert self.proc.stdout
        line = self._readline(60)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) ", line)
        assert m, line + self.stderr()
        self.port = int(m.group(1))

    def _readline(self, timeout: float) -> str:
        import select

        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode() if ready else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def worker_pids(self, timeout: float = 10) -> dict[int, int]:
        """index -> pid, from the status lines (--stats)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {int(i): int(p) for i, p in
                     re.findall(r"\[worker (\d+) pid (\d+)\]", self.stderr())}
            if len(found) >= 2 or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._err.close()
        if self.proc.stdout:
            self.proc.stdout.close()


def served_by(serve: Serve, client_port: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(rf"\[worker \d+ pid (\d+)\] #\d+ 127\.0\.0\.1:{client_port} connected",
                      serve.stderr())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no worker logged the client port {client_port}: {serve.stderr()}")


def test_workers_restart_and_stop_gracefully(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--workers", "2", "--stats", "0.2", "--grace", "5")
    try:
        pids = serve.worker_pids()
        assert len(pids) == 2, serve.stderr()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", serve.port), timeout=10))
        held.sendall(b"2\r\nhi")
        assert held.recv(16) == b"2\r\nhi"
        mine = served_by(serve, held.getsockname()[1])
        other = next(p for p in pids.values() if p != mine)
        os.kill(other, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while f"(pid {other}) killed by SIGKILL; starting it again" not in serve.stderr():
            assert time.monotonic() < deadline, serve.stderr()
            time.sleep(0.05)
        # the connection on the other worker carries on
        held.sendall(b"3\r\nbye")
        assert held.recv(16) == b"3\r\nbye"
        deadline = time.monotonic() + 10
        while len({p for p in serve.worker_pids().values()} - {other}) < 2:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.05)
        # SIGTERM: no new connections, the open one may finish within the grace period
        serve.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", serve.port), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting after SIGTERM"
            time.sleep(0.05)
        held.sendall(b"4\r\nmore")
        assert held.recv(16) == b"4\r\nmore"
        assert serve.proc.poll() is None
        held.close()
        assert serve.stop(timeout=15) == 0, serve.stderr()
        assert "stopped: 1 connection served, 3 messages echoed" in serve.stderr()
        # the grace period is a limit: a client that stays is closed with close_notify
    finally:
        serve.kill()


def test_grace_period_ends_with_close_notify(tmp_path: Path) -> None:
    serve = Serve(tmp_path, "--workers", "2", "--grace", "0.5")
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", serve.port),
                                                      timeout=10)) as held:
            held.sendall(b"2\r\nhi")
            assert held.recv(16) == b"2\r\nhi"
            started = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            assert held.recv(16) == b""  # close_notify: a clean end of stream
            assert time.monotonic() - started < 8
        assert serve.stop() == 0
    finally:
        serve.kill()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SSLSOCK_CERT_STORE": str(tmp_path / "store")}
        r = subprocess.run([*SSLSOCK, "serve", "--host", "127.0.0.1", "--port", str(port),
                            "--workers", "2"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 1, r.stderr
    assert "already in use" in r.stderr and "before it was ready: stopping" in r.stderr


def test_reload_at_once(pki2: Any, tmp_path: Path) -> None:
    """Listener.reload() (SIGHUP in sslsock serve) takes the renewed certificate at once,
    and says why when it cannot."""
    ca, store = pki2
    leaf(ca, tmp_path / "one.pem")
    two = leaf(ca, tmp_path / "two.pem")
    store.import_file(tmp_path / "one.pem", name="svc")
    ctx = client_ctx(ca, tmp_path)
    with Listener(0, "svc", host="127.0.0.1", store=store, reload_interval=None,
                  threads=1) as lst:
        echo_all(lst)
        assert not lst.reload()  # nothing changed
        junk = store.path / ".junk"
        junk.write_bytes(b"not a certificate\n")
        os.replace(junk, store.path / "svc.pem")
        time.sleep(0.06)  # past the store's same-tick guard
        with pytest.raises(sslsock.CertificateError, match="keeps the one it has"):
            lst.reload()
        assert not lst.reload()  # reported once for that version of the store
        # a certificate with someone else's key, copied in by hand
        other = _certgen.make_leaf(ca, "localhost", hosts=["localhost"])
        key = (tmp_path / "one.pem").read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1]
        junk.write_bytes(other.cert_pem() + key)
        os.chmod(junk, 0o600)
        os.replace(junk, store.path / "svc.pem")
        time.sleep(0.06)
        with pytest.raises(sslsock.CertificateError, match="does not match the certificate") as e:
            lst.reload()
        assert b"PRIVATE KEY" not in str(e.value).encode()
        assert hello(lst.port, ctx)[0] != two.certificate.fingerprint(hashes.SHA1()).hex()
        (store.path / "svc.pem").unlink()
        store.import_file(tmp_path / "two.pem", name="svc")
        time.sleep(0.06)
        assert lst.reload()
        assert hello(lst.port, ctx)[0] == two.certificate.fingerprint(hashes.SHA1()).hex()


def test_serve_refuses_a_missing_or_readable_key_file(tmp_path: Path) -> None:
    env = {**os.environ, "SSLSOCK_CERT_STORE": str(tmp_path / "store")}
    cmd = [*SSLSOCK, "serve", "--host", "127.0.0.1", "--port", "0", "--ticket-keys"]
    for extra in ([], ["--workers", "2"]):
        r = subprocess.run(cmd + extra, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 3, r.stderr
        assert "no session-ticket key file; create it with: sslsock cert tickets rotate" \
            in r.stderr
    keys = tmp_path / "store" / "session-ticket-keys"
    _tickets.rotate(keys)
    os.chmod(keys, 0o644)
    r = subprocess.run(cmd + ["--workers", "2"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3 and "chmod 600" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_sighup_takes_the_renewed_certificate_in_sslsock_serve(pki2: Any, tmp_path: Path,
                                                              workers: list[str]) -> None:
    # --reload-interval 0: nothing looks at the store but SIGHUP, so only SIGHUP can
    # explain the new certificate (with the default 2 s, the watcher might).
    ca, store = pki2
    one = leaf(ca, tmp_path / "one.pem")
    two = leaf(ca, tmp_path / "two.pem")
    store.import_file(tmp_path / "one.pem", name="svc")
    ctx = client_ctx(ca, tmp_path)
    old_sha1 = one.certificate.fingerprint(hashes.SHA1()).hex()
    new_sha1 = two.certificate.fingerprint(hashes.SHA1()).hex()
    serve = Serve(tmp_path, "--cert", "svc", "--reload-interval", "0", *workers)
    try:
        assert hello(serve.port, ctx)[0] == old_sha1
        r = subprocess.run([*SSLSOCK, "cert", "import", str(tmp_path / "two.pem"), "--name",
                            "svc", "--replace"], env=serve.env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        time.sleep(3.0)  # longer than the default interval: no watcher runs
        for _ in range(4):  # every worker, whichever the client lands on
            assert hello(serve.port, ctx)[0] == old_sha1, "renewed without SIGHUP"
        serve.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while len(seen) < 6:  # six handshakes in a row with the new one: every worker has it
            sha1 = hello(serve.port, ctx)[0]
            seen = seen + [sha1] if sha1 == new_sha1 else []
            assert time.monotonic() < deadline, "SIGHUP did not renew: " + serve.stderr()
        assert serve.proc.poll() is None, serve.stderr()
        assert serve.stop() == 0, serve.stderr()
    finally:
        serve.kill()


def test_reload_interval_is_checked(tmp_path: Path) -> None:
    env = {**os.environ, "SSLSOCK_CERT_STORE": str(tmp_path / "store")}
    for bad in ("-1", "soon", "inf"):
        r = subprocess.run([*SSLSOCK, "serve", "--port", "0", "--reload-interval", bad],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "--reload-interval" in r.stderr, r.stderr
