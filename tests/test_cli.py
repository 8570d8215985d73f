"""The ``sslsock`` command, driven as a user drives it: subprocesses (``python -m sslsock``),
a certificate store in a temporary directory, real files, a real ``openssl s_client``.

Every subprocess wait is bounded, and every process started here is killed in a
``finally`` (or by its fixture's teardown).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sslsock._certs import generate as _certgen

SSLSOCK = [sys.executable, "-m", "sslsock"]
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CERT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LISTENING = re.compile(
    r"^listening on (?P<host>\S+):(?P<port>\d+) \((?P<versions>[^)]*)\) certificate "
    r"(?P<name>\S+) thumbprint (?P<sha1>(?:[0-9a-f]{2} ){19}[0-9a-f]{2})$")
CERTMGR_SHA1 = re.compile(r"(?:[0-9a-f]{2} ){19}[0-9a-f]{2}")
TIMEOUT = 30  # for any one command; they take well under a second


def make_env(store: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SSLSOCK_CERT_STORE"] = str(store)
    for name in ("SSLSOCK_CERT_PASSWORD", "XDG_DATA_HOME"):
        env.pop(name, None)
    return env


def run(env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SSLSOCK, *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)


_PENDING: dict[int, bytes] = {}


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """Bytes read from ``fd`` up to and including ``marker``; fails after ``timeout`` s or
    EOF.  What came after the marker is kept for the next call (two prompts may arrive in
    one read)."""
    data = _PENDING.pop(fd, b"")
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {marker!r} within {timeout} s; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child's side of the pty is closed
                chunk = b""
            if not chunk:
                pytest.fail(f"end of output before {marker!r}; got {data!r}")
            data += chunk
    end = data.index(marker) + len(marker)
    _PENDING[fd] = data[end:]
    return data[:end]


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 10) -> int:
    """Send ``sig`` (if the process still runs) and reap it; SIGKILL if it does not end."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    line: str
    match: re.Match[str]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def rest_of_stdout(self, timeout: float = 10) -> str:
        """What the server printed on stdout after the listening line, once it has ended."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.read().decode() if ready else ""


@contextlib.contextmanager
def serving(env: dict[str, str], logdir: Path, *args: str) -> Iterator[Server]:
    logdir.mkdir(parents=True, exist_ok=True)
    err_path = logdir / f"serve-{time.monotonic_ns()}.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([*SSLSOCK, "serve", "--port", "0", "--host", "127.0.0.1", *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
    try:
        assert proc.stdout is not None
        try:
            first = read_until(proc.stdout.fileno(), b"\n", 20).decode()
        except BaseException:
            stop(proc)
            print(err_path.read_text(), file=sys.stderr)
            raise
        line = first.splitlines()[0]
        m = LISTENING.match(line)
        assert m, f"unexpected first line: {line!r}\n{err_path.read_text()}"
        yield Server(proc, env, int(m["port"]), line, m, err_path)
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def export_certificate(env: dict[str, str], name: str, dest: Path) -> Path:
    r = run(env, "cert", "export", name, str(dest), "--no-key")
    assert r.returncode == 0, r.stderr
    return dest


def stdlib_exchange(port: int, cafile: Path, payload: bytes, expect: bytes) -> tuple[bytes, str]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            got = b""
            while len(got) < len(expect):
                chunk = tls.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got, tls.version() or ""


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"  # not created: the store makes it (0700) on first write


@pytest.fixture
def env(store: Path) -> dict[str, str]:
    return make_env(store)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `serve` for the module, started on an empty store (so it creates sslsock-dev),
    offering exactly TLS 1.2 and 1.3."""
    base = tmp_path_factory.mktemp("dev")
    env = make_env(base / "store")
    with serving(env, base, "--options", "TLS1_2+TLS1_3") as server:
        yield server


@pytest.fixture(scope="module")
def dev_ca(dev: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_certificate(dev.env, "sslsock-dev", tmp_path_factory.mktemp("ca") / "dev.pem")


# ---------------------------------------------------------------------------------------
# Help, usage, debug


SUBCOMMANDS = [[], ["cert"], ["cert", "create"], ["cert", "import"], ["cert", "export"],
               ["cert", "list"], ["cert", "show"], ["cert", "remove"], ["serve"],
               ["connect"], ["probe"], ["debug"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "sslsock")
def test_help_everywhere_documents_exit_codes(env: dict[str, str], words: list[str]) -> None:
    r = run(env, *words, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: sslsock")
    for code in ("0    success", "1    runtime failure", "2    usage error",
                 "3    certificate or store error", "130  interrupted"):
        assert code in r.stdout


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert run(env).returncode == EXIT_USAGE  # no command: help on stderr
    assert run(env, "cert").returncode == EXIT_USAGE
    assert run(env, "frobnicate").returncode == EXIT_USAGE
    r = run(env, "serve", "--options", "TLS9")
    assert r.returncode == EXIT_USAGE and "unknown SSL option 'TLS9'" in r.stderr
    r = run(env, "serve", "--options", "SSL2")
    assert r.returncode == EXIT_USAGE and "SSLv2" in r.stderr
    r = run(env, "serve", "--mode", "sideways")
    assert r.returncode == EXIT_USAGE and "transmission mode" in r.stderr
    assert run(env, "serve", "--port", "70000").returncode == EXIT_USAGE
    assert run(env, "connect", "localhost").returncode == EXIT_USAGE
    r = run(env, "cert", "create", "x", "--key-type", "rsa1024")
    assert r.returncode == EXIT_USAGE
    r = run(env, "cert", "import", "whatever.pfx", "--password-env", "SSLSOCK_TEST_UNSET_VAR")
    assert r.returncode == EXIT_USAGE and "SSLSOCK_TEST_UNSET_VAR" in r.stderr


def test_debug_reports_versions(env: dict[str, str], store: Path) -> None:
    r = run(env, "debug")
    assert r.returncode == 0, r.stderr
    assert "OpenSSL compiled against: OpenSSL" in r.stdout
    assert "OpenSSL linked:" in r.stdout
    assert "OpenSSL build:" in r.stdout and "legacy versions this build can do:" in r.stdout
    for what in ("sslsock 0.1.0", "cffi ", "cryptography ", "Python ", "TLSv1.2",
                 "default security level", str(store)):
        assert what in r.stdout
    # python -m sslsock.debug prints the same report.
    m = subprocess.run([sys.executable, "-m", "sslsock.debug"], env=env, capture_output=True,
                       text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert m.returncode == 0 and m.stdout == r.stdout
    j = json.loads(run(env, "debug", "--json").stdout)
    assert j["openssl_linked"].startswith("OpenSSL") and "TLSv1.3" in j["versions_supported"]


def test_console_script_installed(env: dict[str, str]) -> None:
    script = Path(sys.executable).parent / "sslsock"
    if not script.exists():
        pytest.skip("the sslsock console script is not installed next to this Python")
    r = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == "sslsock 0.1.0"


# ---------------------------------------------------------------------------------------
# Certificates


def test_cert_lifecycle(env: dict[str, str], store: Path, tmp_path: Path) -> None:
    r = run(env, "cert", "list")
    assert r.returncode == 0 and "does not exist yet" in r.stdout

    r = run(env, "cert", "create", "web", "--host", "example.test", "--host", "10.1.2.3")
    assert r.returncode == 0, r.stderr
    sha1 = CERTMGR_SHA1.search(r.stdout)
    assert sha1 and "certmgr" in r.stdout, r.stdout
    sha256 = re.search(r"SHA-256: ([0-9a-f]{64})", r.stdout)
    assert sha256, r.stdout

    # Store hygiene: a 0700 directory, a 0600 key file.
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "web.pem").stat().st_mode) == 0o600

    r = run(env, "cert", "list")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[1:3]
    assert header.split()[:2] == ["NAME", "SHA-1"]
    assert row.startswith("web ") and sha1[0] in row and sha256[1] in row
    assert " yes " in row and row.endswith("web.pem") and "EXPIRED" not in row

    listing = json.loads(run(env, "cert", "list", "--json").stdout)
    (entry,) = listing["certificates"]
    assert listing["store"] == str(store) and listing["problems"] == []
    assert entry["sha1"] == sha1[0] and entry["sha256"] == sha256[1]
    assert entry["has_key"] and not entry["expired"] and entry["key_mode"] == "0600"
    assert {"localhost", "127.0.0.1", "::1", "example.test", "10.1.2.3"} <= set(entry["hosts"])

    # show: by name, by the certmgr form (recognised as a thumbprint), by SHA-256, --hash.
    for ident, extra in (("web", []), (sha1[0], []), (sha256[1], []),
                         (sha1[0].replace(" ", "").upper(), ["--hash"])):
        r = run(env, "cert", "show", ident, *extra)
        assert r.returncode == 0, r.stderr
        assert "CN=web" in r.stdout and sha1[0] in r.stdout

    # export: with key (0600), certificate only (0644), PKCS#12.
    with_key, cert_only = tmp_path / "web-full.pem", tmp_path / "web-cert.pem"
    assert run(env, "cert", "export", "web", str(with_key)).returncode == 0
    assert b"PRIVATE KEY" in with_key.read_bytes()
    assert stat.S_IMODE(with_key.stat().st_mode) == 0o600
    export_certificate(env, "web", cert_only)
    assert b"PRIVATE KEY" not in cert_only.read_bytes()
    assert cert_only.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    r = run(env, "cert", "export", "web", str(cert_only))
    assert r.returncode == EXIT_CERT and "already exists" in r.stderr
    r = run(env, "cert", "export", "web", str(tmp_path / "web.pfx"))
    assert r.returncode == 0 and "PFX" in r.stdout

    # remove, then it is gone.
    r = run(env, "cert", "remove", sha1[0])
    assert r.returncode == 0 and "removed" in r.stdout and not (store / "web.pem").exists()
    r = run(env, "cert", "show", "web")
    assert r.returncode == EXIT_CERT and 'no certificate named "web"' in r.stderr

    # import the exported PEM back: same thumbprint, key present.
    r = run(env, "cert", "import", str(with_key), "--name", "web")
    assert r.returncode == 0, r.stderr
    assert "with its private key" in r.stdout and sha1[0] in r.stdout
    assert stat.S_IMODE((store / "web.pem").stat().st_mode) == 0o600
    # ... and not twice.
    r = run(env, "cert", "import", str(tmp_path / "web.pfx"))
    assert r.returncode == EXIT_CERT and 'already has a certificate named "web"' in r.stderr
    r = run(env, "cert", "import", str(tmp_path / "web.pfx"), "--name", "web-again")
    assert r.returncode == EXIT_CERT and "already in the store as web.pem" in r.stderr


def test_create_options(env: dict[str, str]) -> None:
    r = run(env, "cert", "create", "rsa-dev", "--key-type", "rsa2048", "--days", "30",
            "--no-default-hosts", "--host", "api.example.test")
    assert r.returncode == 0, r.stderr
    d = json.loads(run(env, "cert", "show", "rsa-dev", "--json").stdout)
    assert d["key_type"] == "RSA 2048" and d["hosts"] == ["api.example.test"]
    assert d["self_signed"]
    r = run(env, "cert", "create", "rsa-dev")
    assert r.returncode == EXIT_CERT and "already has a certificate" in r.stderr
    r = run(env, "cert", "create", "../escape")
    assert r.returncode == EXIT_CERT


def test_import_pkcs12_with_password(env: dict[str, str], store: Path, tmp_path: Path) -> None:
    issued = _certgen.make_self_signed("from-windows")
    pfx = issued.write_pkcs12(tmp_path / "exported.pfx", b"s3cret", friendly_name="from-windows")

    r = run({**env, "PFX_PW": "wrong"}, "cert", "import", str(pfx), "--password-env", "PFX_PW")
    assert r.returncode == EXIT_CERT
    assert "wrong password" in r.stderr and "$PFX_PW" in r.stderr, r.stderr
    r = run(env, "cert", "import", str(pfx))  # no password, stdin is not a terminal
    assert r.returncode == EXIT_CERT
    assert "without a password" in r.stderr and "--password-env" in r.stderr, r.stderr
    assert not store.exists() or not any(store.iterdir())  # nothing landed

    r = run({**env, "PFX_PW": "s3cret"}, "cert", "import", str(pfx), "--password-env", "PFX_PW")
    assert r.returncode == 0, r.stderr
    assert "with its private key" in r.stdout
    stored = store / "exported.pfx"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    (entry,) = json.loads(run(env, "cert", "list", "--json").stdout)["certificates"]
    assert entry["name"] == "from-windows" and entry["has_key"]

    # The password on stdin, under another name.
    pfx2 = _certgen.make_self_signed("second").write_pkcs12(tmp_path / "b.p12", b"pw2")
    r = run(env, "cert", "import", str(pfx2), "--name", "second-copy", "--password-stdin",
            stdin="pw2\n")
    assert r.returncode == 0, r.stderr
    assert (store / "second-copy.p12").exists()


def test_pem_without_key_is_a_trust_anchor(env: dict[str, str], tmp_path: Path) -> None:
    ca = _certgen.make_ca("Example Root CA")
    ca_file = tmp_path / "root.pem"
    ca_file.write_bytes(ca.cert_pem())
    r = run(env, "cert", "import", str(ca_file))
    assert r.returncode == 0, r.stderr
    assert "trust anchor" in r.stdout
    row = run(env, "cert", "list").stdout.splitlines()[2]
    assert row.startswith("Example Root CA ") or row.startswith("root "), row
    assert " no " in row
    r = run(env, "serve", "--port", "0", "--cert", "root")
    assert r.returncode == EXIT_CERT and "no private key" in r.stderr


def test_unknown_ids_exit_3(env: dict[str, str]) -> None:
    assert run(env, "cert", "create", "only").returncode == 0
    for command in (["show"], ["remove"], ["export"]):
        extra = ["out.pem"] if command == ["export"] else []
        r = run(env, "cert", *command, "nope", *extra)
        assert r.returncode == EXIT_CERT, (command, r.stderr)
        assert 'no certificate named "nope"' in r.stderr and "only.pem" in r.stderr
    r = run(env, "cert", "show", "00" * 20)
    assert r.returncode == EXIT_CERT and "SHA-1 thumbprint 00 00" in r.stderr
    # The reference's own thumbprint example, typo included: read as a hash, typo named.
    r = run(env, "cert", "show", "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 of 24")
    assert r.returncode == EXIT_CERT and '"of" looks like a typo' in r.stderr
    r = run(env, "cert", "show", "abc", "--hash")
    assert r.returncode == EXIT_CERT and "hexadecimal digits" in r.stderr


def test_list_reports_readable_keys_and_bad_files(env: dict[str, str], store: Path) -> None:
    assert run(env, "cert", "create", "loose").returncode == 0
    os.chmod(store / "loose.pem", 0o644)
    (store / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    r = run(env, "cert", "list")
    assert r.returncode == 0, r.stderr
    assert "READABLE BY OTHERS (0644)" in r.stdout
    assert f"warning: the private key file {store / 'loose.pem'} can be read by other users" \
        in r.stdout
    tail = r.stdout[r.stdout.index("could not be read"):]
    assert "broken.pem" in tail
    listing = json.loads(run(env, "cert", "list", "--json").stdout)
    assert listing["certificates"][0]["key_world_readable"] is True
    assert any("broken.pem" in p for p in listing["problems"])


# ---------------------------------------------------------------------------------------
# serve, connect, probe


def test_serve_first_run_creates_dev_certificate(dev: Server) -> None:
    assert dev.match["host"] == "127.0.0.1"
    assert dev.match["versions"] == "TLSv1.2,TLSv1.3"
    assert dev.match["name"] == "sslsock-dev"
    err = dev.stderr()
    assert 'created the development certificate "sslsock-dev"' in err
    assert dev.match["sha1"] in err
    (entry,) = json.loads(run(dev.env, "cert", "list", "--json").stdout)["certificates"]
    assert entry["name"] == "sslsock-dev" and entry["sha1"] == dev.match["sha1"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_serve_echoes_to_openssl_s_client(dev: Server, dev_ca: Path) -> None:
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{dev.port}", "-CAfile", str(dev_ca),
         "-verify_return_error", "-verify_ip", "127.0.0.1", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"5\r\nhello")
        client.stdin.flush()
        got = read_until(client.stdout.fileno(), b"5\r\nhello", 15)
        assert got.endswith(b"5\r\nhello")
    finally:
        stop(client)
        for pipe in (client.stdin, client.stdout, client.stderr):
            if pipe is not None:
                pipe.close()


def test_serve_echoes_to_stdlib_ssl(dev: Server, dev_ca: Path) -> None:
    message = b"12\r\nhello, world"
    got, version = stdlib_exchange(dev.port, dev_ca, message, message)
    assert got == message and version == "TLSv1.3"


def test_connect_sends_lines_and_prints_replies(dev: Server) -> None:
    r = run(dev.env, "connect", "127.0.0.1", str(dev.port), stdin="hello\nsecond line\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello\nsecond line\n\n"
    assert "connected to 127.0.0.1:" in r.stderr and "TLSv1.3" in r.stderr
    # The server logged the connection: peer, version, cipher.
    assert re.search(r"#\d+ 127\.0\.0\.1:\d+ connected: TLSv1\.(2|3) \S+", dev.stderr())


def test_connect_verifies_the_server(dev: Server, tmp_path: Path) -> None:
    stranger = make_env(tmp_path / "empty-store")  # does not know sslsock-dev
    r = run(stranger, "connect", "127.0.0.1", str(dev.port), stdin="x\n")
    assert r.returncode == EXIT_FAILURE
    assert "self-signed" in r.stderr or "verif" in r.stderr, r.stderr
    r = run(stranger, "connect", "127.0.0.1", str(dev.port), "--no-verify", stdin="x\n")
    assert r.returncode == 0 and r.stdout == "x\n", r.stderr


def test_probe_reports_versions(dev: Server) -> None:
    r = run(dev.env, "probe", "127.0.0.1", str(dev.port))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert rows["TLSv1.2"] == "accepted" and rows["TLSv1.3"] == "accepted", r.stdout
    assert rows["TLSv1"] == "refused" and rows["TLSv1.1"] == "refused", r.stdout
    assert rows["SSLv3"] in ("refused", "untested")
    j = json.loads(run(dev.env, "probe", "127.0.0.1", str(dev.port), "--json").stdout)
    assert [v["version"] for v in j["versions"]] == ["SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2",
                                                     "TLSv1.3"]


def test_probe_unreachable_exits_1(env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port nobody listens on (bound, not listening)
        s.bind(("127.0.0.1", 0))
        r = run(env, "probe", "127.0.0.1", str(s.getsockname()[1]), "--timeout", "3")
    assert r.returncode == EXIT_FAILURE and "cannot reach" in r.stderr


def test_serve_on_a_port_in_use_exits_1(dev: Server) -> None:
    r = run(dev.env, "serve", "--host", "127.0.0.1", "--port", str(dev.port))
    assert r.returncode == EXIT_FAILURE
    assert f"port {dev.port}" in r.stderr and "in use" in r.stderr


def test_serve_unknown_certificate_exits_3(dev: Server) -> None:
    r = run(dev.env, "serve", "--port", "0", "--cert", "nope")
    assert r.returncode == EXIT_CERT and 'no certificate named "nope"' in r.stderr


@pytest.mark.parametrize("mode", ["endtag", "endtagbuffer", "raw"])
def test_other_transmission_modes(dev: Server, tmp_path: Path, mode: str) -> None:
    with serving(dev.env, tmp_path, "--mode", mode) as server:
        r = run(dev.env, "connect", "localhost", str(server.port), "--mode", mode,
                stdin="one\ntwo\n")
        assert r.returncode == 0, (r.stderr, server.stderr())
        assert r.stdout == "one\ntwo\n"
        # A client in another mode gets a clear hint, not a hang.
        if mode == "endtag":
            r = run(dev.env, "connect", "localhost", str(server.port), "--timeout", "1",
                    stdin="one\n")
            assert r.returncode == EXIT_FAILURE and "transmission mode" in r.stderr


def test_sigint_stops_serve_cleanly(dev: Server, dev_ca: Path, tmp_path: Path) -> None:
    with serving(dev.env, tmp_path) as server:
        got, _ = stdlib_exchange(server.port, dev_ca, b"2\r\nhi", b"2\r\nhi")
        assert got == b"2\r\nhi"
        # An idle client still connected must not hold the shutdown up.
        idle = ssl.create_default_context(cafile=str(dev_ca)).wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=10),
            server_hostname="localhost")
        try:
            time.sleep(0.3)  # let the server take it
            started = time.monotonic()
            code = stop(server.proc, signal.SIGINT, timeout=10)
            assert time.monotonic() - started < 5
        finally:
            idle.close()
        assert code == EXIT_INTERRUPTED
        summary = server.rest_of_stdout()
        assert summary.startswith("stopped (SIGINT)"), summary
        assert "2 connections served" in summary and "1 message echoed" in summary


def test_sigterm_stops_serve_with_0(dev: Server, tmp_path: Path) -> None:
    with serving(dev.env, tmp_path) as server:
        assert stop(server.proc, signal.SIGTERM, timeout=10) == EXIT_OK
        assert server.rest_of_stdout().startswith("stopped (SIGTERM)")


def test_mutual_tls(dev: Server, tmp_path: Path) -> None:
    r = run(dev.env, "cert", "create", "client-one", "--client")
    assert r.returncode == 0, r.stderr
    try:
        with serving(dev.env, tmp_path, "--cert", "sslsock-dev", "--options",
                     "TLS1_2+TLS1_3+ClientCertificate") as server:
            r = run(dev.env, "connect", "127.0.0.1", str(server.port), "--cert", "client-one",
                    stdin="mutual\n")
            assert r.returncode == 0 and r.stdout == "mutual\n", r.stderr
            r = run(dev.env, "connect", "127.0.0.1", str(server.port), stdin="anonymous\n")
            assert r.returncode == EXIT_FAILURE and r.stdout == ""
            assert stop(server.proc, signal.SIGTERM) == EXIT_OK
            assert "client certificate CN=client-one (SHA-1 " in server.stderr()
    finally:
        assert run(dev.env, "cert", "remove", "client-one").returncode == 0


def test_serve_warns_about_a_readable_key(env: dict[str, str], store: Path,
                                          tmp_path: Path) -> None:
    assert run(env, "cert", "create", "loose").returncode == 0
    os.chmod(store / "loose.pem", 0o644)
    with serving(env, tmp_path, "--cert", "loose") as server:
        assert stop(server.proc, signal.SIGTERM) == EXIT_OK
        assert f"warning: the private key file {store / 'loose.pem'} can be read by other " \
               "users (mode 0644): run chmod 600" in server.stderr()


def test_import_prompts_for_the_password_on_a_terminal(env: dict[str, str], store: Path,
                                                       tmp_path: Path) -> None:
    pfx = _certgen.make_self_signed("typed").write_pkcs12(tmp_path / "typed.pfx", b"typed-pw")
    master, slave = os.openpty()
    # A fresh session whose controlling terminal is the pty, as in a terminal window.
    on_tty = ("import fcntl, os, sys, termios; os.setsid(); "
              "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.executable, sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", on_tty, *SSLSOCK, "cert", "import", str(pfx)],
                            env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        out += read_until(master, b"password for", 20)
        os.write(master, b"not-it\n")
        out += read_until(master, b"try again", 10)
        out += read_until(master, b"password for", 10)
        os.write(master, b"typed-pw\n")
        status = proc.wait(20)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the child's side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        stop(proc)
        os.close(master)
    assert status == 0, out
    assert b"typed-pw" not in out and b"not-it" not in out  # never echoed
    assert b"imported" in out and (store / "typed.pfx").exists()
