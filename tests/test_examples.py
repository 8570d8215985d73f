"""The examples and the documentation, checked by running them.

- Each program of ``examples/`` runs for real, as a subprocess, with a certificate store in
  a temporary directory filled by ``sslsock cert create``.  Every run is bounded (the
  servers' ``--max-clients`` / ``--timeout``, and a time-out on every wait), and every
  process started here is killed in a ``finally``.
- ``docs/functions.md`` names every public name of :mod:`sslsock._faces.named`, and every name and
  value it gives exists.
- Every ```python block of README.md and docs/*.md compiles; the README's side-by-side
  example prints the message the README shows.
- The messages quoted in docs/errors.md and the wire bytes of docs/modes.md are the
  library's, reproduced here.
"""
from __future__ import annotations

import datetime
import os
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sslsock as ss
from sslsock._certs import generate as _certgen
from sslsock._faces import named as wl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
TIMEOUT = 20  # any one wait; each takes well under a second
MODERN = ss.ProtocolTLS1_2 | ss.ProtocolTLS1_3
OPENSSL = shutil.which("openssl")


def _env(store: Path) -> dict[str, str]:
    env = dict(os.environ, SSLSOCK_CERT_STORE=str(store), PYTHONUNBUFFERED="1")
    for name in ("SSLSOCK_CERT_PASSWORD", "XDG_DATA_HOME"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store made as the docs say: a server certificate and a client certificate."""
    path = tmp_path_factory.mktemp("examples") / "store"
    for args in (["sslsock-dev"], ["alice", "--client"]):
        r = subprocess.run([sys.executable, "-m", "sslsock", "cert", "create", *args],
                           env=_env(path), capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def env(store: Path) -> dict[str, str]:
    return _env(store)


class Example:
    """An example server in a subprocess, started on a free port (``--port 0``)."""

    def __init__(self, env: dict[str, str], script: str, *args: str,
                 flags: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *flags, str(EXAMPLES / script), *args, "--port", "0"], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._out = b""

    def __enter__(self) -> Example:
        try:
            line = self._first_line()
            m = re.fullmatch(rb"listening on port (\d+)\n", line)
            assert m, f"unexpected first line {line!r}"
            self.port = int(m.group(1))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _first_line(self) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"the server printed no line within {TIMEOUT} s: {self._out!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(TIMEOUT)
                pytest.fail(f"the server ended: {self._out!r} {self.proc.stderr.read()!r}")
            self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line + b"\n"

    def finish(self) -> tuple[int, str, str]:
        """Wait for the server to stop by itself: its exit status, stdout, stderr."""
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, (self._out + out).decode(), err.decode()

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


def run(env: dict[str, str], script: str, *args: str,
        flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run an example to its end; `flags` go to the interpreter (``-bb``)."""
    return subprocess.run([sys.executable, *flags, str(EXAMPLES / script), *args], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- examples ---------------------------------------------------------------------------


def test_standard_server_serves_clients_in_parallel(env: dict[str, str], store: Path) -> None:
    with Example(env, "standard_server.py", "--max-clients", "2", "--timeout", "10") as server:
        # A first client stays connected (and silent) while client.py is served: each
        # channel has its own thread.
        with ss.connect("localhost", server.port, options=MODERN, store=ss.CertStore(store),
                        timeout=TIMEOUT) as first:
            r = run(env, "client.py", "--port", str(server.port), "hello", "wörld")
            assert r.returncode == 0, r.stderr
            assert r.stdout == "connected with TLSv1.3\nhello\nwörld\n"
            first.write("still here")
            assert first.read(timeout=TIMEOUT) == b"still here"
        status, out, err = server.finish()
    assert status == 0, err
    assert out.count("connected (TLSv1.3)") == 2, out
    assert out.count(": the peer closed the connection") == 2, out


def test_workers_server_serves_and_stops_gracefully(env: dict[str, str]) -> None:
    with Example(env, "workers_server.py", "--workers", "2", "--grace", "1") as server:
        for words in (["hello"], ["wörld", "again"]):
            r = run(env, "client.py", "--port", str(server.port), *words)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "connected with TLSv1.3\n" + "".join(w + "\n" for w in words)
        server.proc.send_signal(signal.SIGTERM)
        status, out, err = server.finish()
    assert status == 0, err
    assert out.count("client ::ffff:127.0.0.1 connected") + out.count(
        "client 127.0.0.1 connected") == 2, out
    assert "worker 0: stopped" in out and "worker 1: stopped" in out, out
    assert out.rstrip().endswith("stopped (0)"), out


@pytest.mark.parametrize("script", ["one_thread_server.py", "messages_server.py",
                                    "pool_server.py"])
def test_one_thread_servers_serve_clients_together(env: dict[str, str], store: Path,
                                                   script: str) -> None:
    with Example(env, script, "--max-clients", "2", "--timeout", "10") as server:
        # A first client stays connected while client.py is served by the same thread.
        with ss.connect("localhost", server.port, options=MODERN, store=ss.CertStore(store),
                        timeout=TIMEOUT) as first:
            first.write("first")
            assert first.read(timeout=TIMEOUT) == b"first"
            r = run(env, "client.py", "--port", str(server.port), "hello", "wörld")
            assert r.returncode == 0, r.stderr
            assert r.stdout == "connected with TLSv1.3\nhello\nwörld\n"
            first.write("still here")
            assert first.read(timeout=TIMEOUT) == b"still here"
        status, out, err = server.finish()
    assert status == 0, err
    if script in ("one_thread_server.py", "pool_server.py"):
        assert out.count(": the peer closed the connection") == 2, out
    else:
        assert out.count(" left\n") == 2 and "(TLSv1.3): 5 bytes" in out, out


def test_standard_server_stops_after_its_timeout(env: dict[str, str]) -> None:
    with Example(env, "standard_server.py", "--timeout", "0.3") as server:
        status, out, err = server.finish()
    assert status == 0, err
    assert 'stopped waiting: no client connected to "server" within the time-out' in out


def test_simplified_server_stops_after_its_timeout(env: dict[str, str]) -> None:
    """A read time-out is b"" with no error (as in WLanguage): the example tells it so."""
    with Example(env, "simplified_server.py", "--timeout", "0.3") as server:
        status, out, err = server.finish()
    assert status == 0, err
    assert "stopping: nothing arrived within the time-out" in out


def test_simplified_server_takes_clients_in_turn(env: dict[str, str]) -> None:
    with Example(env, "simplified_server.py", "--max-clients", "2", "--timeout", "10") as server:
        for words in (["one", "two"], ["three"]):
            r = run(env, "client.py", "--port", str(server.port), *words)
            assert r.returncode == 0, r.stderr
            assert r.stdout.splitlines()[1:] == words
        status, out, err = server.finish()
    assert status == 0, err
    assert out.count("client left") == 2, out


def test_client_says_why_it_cannot_connect(env: dict[str, str]) -> None:
    port = free_port()
    r = run(env, "client.py", "--port", str(port))
    assert r.returncode == 1
    assert f"no server is listening on localhost port {port}" in r.stderr


def test_mutual_tls(env: dict[str, str]) -> None:
    with Example(env, "mutual_tls.py", "server", "--max-clients", "1") as server:
        port = str(server.port)
        refused = run(env, "mutual_tls.py", "client", "", "--port", port)  # no certificate
        assert refused.returncode == 1
        assert "certificate required" in refused.stderr
        r = run(env, "mutual_tls.py", "client", "alice", "--port", port)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello alice\n"
        status, out, err = server.finish()
    assert status == 0, err
    assert "client certificate: subject=CN=alice; issuer=CN=alice; thumbprint=" in out


# ---- the line service of docs/porting.md ------------------------------------------------

LINE_COMMANDS = ["PING", "ECHO hello wörld", "upper wörld", "", "ECHO", "NOPE", "COUNT", "QUIT"]
LINE_REPLIES = ["PONG", "hello wörld", "WÖRLD", "ERR empty command (HELP lists the commands)",
                "ERR ECHO needs some text",
                'ERR unknown command "NOPE" (HELP lists the commands)', "7", "BYE"]


@pytest.mark.parametrize("flags", [(), ("-bb",)], ids=["python", "python-bb"])
def test_line_service(env: dict[str, str], store: Path, flags: tuple[str, ...]) -> None:
    """The port of the guide, server and client; under ``-bb`` any bytes/str comparison in
    them or in the named face would be an error (BytesWarning) and end the thread."""
    with Example(env, "line_server.py", "--max-clients", "3", "--timeout", "10",
                 "--idle", "800", flags=flags) as server:
        r = run(env, "line_client.py", "--port", str(server.port), *LINE_COMMANDS, flags=flags)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == LINE_REPLIES
        assert r.stderr == ""
        # two lines in one TLS record: SocketEndTagBuffer answers both
        with ss.connect("localhost", server.port, options=MODERN, store=ss.CertStore(store),
                        timeout=TIMEOUT, mode=ss.SocketNoEndTag) as raw:
            raw.write(b"PING\r\nUPPER abc\r\nQUIT\r\n")
            got = b""
            while not got.endswith(b"BYE\r\n"):
                got += raw.read(timeout=TIMEOUT)
            assert got == b"PONG\r\nABC\r\nBYE\r\n"
        # a silent client is dropped after --idle ms, with a last line
        with ss.connect("localhost", server.port, options=MODERN, store=ss.CertStore(store),
                        timeout=TIMEOUT, mode=ss.SocketEndTagBuffer, end_tag=ss.CR) as quiet:
            t0 = time.monotonic()
            assert quiet.read(timeout=TIMEOUT) == b"BYE idle"
            assert time.monotonic() - t0 >= 0.7
            with pytest.raises(ss.PeerClosed):
                quiet.read(timeout=TIMEOUT)
        status, out, err = server.finish()
    assert status == 0, err
    assert err == "", err
    assert out.count("QUIT, 8 commands served") == 1, out
    assert out.count("QUIT, 3 commands served") == 1, out
    assert "server#3: dropped after 800 ms of silence" in out, out


def test_porting_md_shows_what_the_line_client_prints(env: dict[str, str]) -> None:
    """The guide's "Run it": the client's command line and the lines it prints."""
    guide = (DOCS / "porting.md").read_text(encoding="utf-8")
    m = re.search(r"python examples/line_client\.py (.*?)\n```\s*```text\n(.*?)```", guide,
                  re.DOTALL)
    assert m, "docs/porting.md: no line_client.py run followed by its output"
    with Example(env, "line_server.py", "--max-clients", "1", "--timeout", "10") as server:
        r = run(env, "line_client.py", "--port", str(server.port), *shlex.split(m.group(1)))
        assert r.returncode == 0, r.stderr
        server.finish()
    assert r.stdout == m.group(2)


def test_line_client_says_how_to_trust_the_server(env: dict[str, str], tmp_path: Path) -> None:
    """A client whose store does not hold the server's self-signed certificate is told the
    fix; following it (export without the key, import on the client) lets it in."""
    client_env = _env(tmp_path / "client-store")
    with Example(env, "line_server.py", "--max-clients", "2", "--timeout", "10") as server:
        port = str(server.port)
        r = run(client_env, "line_client.py", "--port", port, "PING", flags=("-bb",))
        assert r.returncode == 1
        assert "self-signed certificate" in r.stderr and "Error code: 5 (VERIFY)" in r.stderr
        assert ("Export it without its key on the server (`sslsock cert export NAME "
                "server.crt --no-key`" in r.stderr), r.stderr
        assert "`sslsock cert import server.crt`" in r.stderr, r.stderr
        crt = tmp_path / "server.crt"
        for cmd, cmd_env in ((["export", "sslsock-dev", str(crt), "--no-key"], env),
                             (["import", str(crt)], client_env)):
            done = subprocess.run([sys.executable, "-m", "sslsock", "cert", *cmd],
                                  env=cmd_env, capture_output=True, text=True,
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL)
            assert done.returncode == 0, done.stderr
        r = run(client_env, "line_client.py", "--port", port, "PING", "QUIT", flags=("-bb",))
        assert r.returncode == 0, r.stderr
        assert r.stdout == "PONG\nBYE\n"
        status, out, err = server.finish()
    assert status == 0, err


def _s_client(port: int, cafile: Path, typed: bytes, *flags: str) -> bytes:
    """What `openssl s_client` prints when a user types `typed` and waits for the server to
    close (stdin stays open: no end of input)."""
    assert OPENSSL is not None
    with subprocess.Popen([OPENSSL, "s_client", "-connect", f"localhost:{port}", "-CAfile",
                           str(cafile), "-verify_return_error", "-quiet", *flags],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(typed)
            proc.stdin.flush()
            proc.wait(TIMEOUT)
            return proc.stdout.read()
        finally:
            proc.kill()
            proc.stdin.close()


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
def test_line_service_with_openssl_s_client(env: dict[str, str], tmp_path: Path) -> None:
    """What docs/porting.md says of openssl s_client as a test client of a line service
    (-quiet: print only what the server sends)."""
    crt = tmp_path / "server.crt"
    done = subprocess.run([sys.executable, "-m", "sslsock", "cert", "export", "sslsock-dev",
                           str(crt), "--no-key"], env=env, capture_output=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    with Example(env, "line_server.py", "--max-clients", "4", "--timeout", "10",
                 "--idle", "1500", flags=("-bb",)) as server:
        # -crlf ends each typed line with CR LF, -nocommands sends "QUIT" as typed; several
        # lines in one go arrive in one TLS record, and each gets its reply
        assert _s_client(server.port, crt, b"ping\nECHO a b\nQUIT\n", "-crlf",
                         "-nocommands") == b"PONG\r\na b\r\nBYE\r\n"
        # without -crlf a line ends with LF alone: no command, no reply, until the server
        # drops the silent client
        assert _s_client(server.port, crt, b"PING\n", "-nocommands") == b"BYE idle\r\n"
        # the command letters: a line starting with Q is s_client's own "quit" (R
        # renegotiates, k/K update keys), so QUIT never reaches the server.  -quiet turns
        # them off (it implies -ign_eof); -no_ign_eof after it turns them back on, as a
        # session without -quiet has them
        assert _s_client(server.port, crt, b"QUIT\n", "-crlf", "-no_ign_eof") == b""
        assert _s_client(server.port, crt, b"QUIT\n", "-crlf", "-no_ign_eof",
                         "-nocommands") == b"BYE\r\n"
        status, out, err = server.finish()
    assert status == 0, err
    assert "server#1: QUIT, 3 commands served" in out, out
    assert "server#2: dropped after 1500 ms of silence" in out, out
    assert "server#3: QUIT" not in out, out
    assert "server#4: QUIT, 1 command served" in out, out


# ---- documentation ----------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _table_rows(text: str) -> Iterator[list[str]]:
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            yield [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_functions_md_names_every_public_name() -> None:
    text = (DOCS / "functions.md").read_text(encoding="utf-8")
    missing = [name for name in wl.__all__ if f"`{name}`" not in text]
    assert not missing, f"docs/functions.md does not mention {missing}"


def test_functions_md_names_and_values_are_real() -> None:
    """Every name in a table's first columns exists, French aliases are the same object,
    and every value column gives the constant's value."""
    text = (DOCS / "functions.md").read_text(encoding="utf-8")
    checked = 0
    for cells in _table_rows(text):
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if not m:
            continue  # a header row
        english = getattr(ss, m.group(1))
        for alias in re.findall(r"`(\w+)`", " ".join(cells[1:3])):
            assert getattr(ss, alias) is english, f"{alias} is not {m.group(1)}"
        try:
            value = int(cells[2], 0)
        except ValueError:
            continue
        assert int(english) == value, f"{m.group(1)} is {int(english)}, the doc says {value}"
        checked += 1
    assert checked >= 26  # SSL options, modes, SocketClientInfo, ErrorInfo, Socket.Option


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.name)
def test_python_blocks_compile(path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
    for i, block in enumerate(blocks, 1):
        # a block inside a list item is indented as a whole: its code starts at the left
        compile(textwrap.dedent(block), f"{path.name}, python block {i}", "exec")


def test_readme_side_by_side_prints_what_it_shows(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The reference example, side by side", 1)[1]
    code = re.search(r"With sslsock:\s*```python\n(.*?)```", section, re.DOTALL)
    shown = re.search(r"sslsock says so:\s*```\w*\n(.*?)```", section, re.DOTALL)
    assert code and shown
    r = subprocess.run([sys.executable, "-c", code.group(1)], env=_env(tmp_path / "store"),
                       capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert _squash(r.stdout) == _squash(shown.group(1))


DOC_STORE = "/home/you/.local/share/sslsock/certs"


def test_errors_md_quotes_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _squash((DOCS / "errors.md").read_text(encoding="utf-8"))
    store = tmp_path / "store"
    store.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(store))
    monkeypatch.delenv("SSLSOCK_CERT_PASSWORD", raising=False)
    _certgen.make_self_signed("sslsock-dev").write_pem(store / "sslsock-dev.pem")

    def quoted(what: str, port_shown: bool = False) -> None:
        assert ss.ErrorOccurred(), what
        text = ss.ErrorInfo().replace(str(store), DOC_STORE)
        if not port_shown:  # the system chose the port; the doc says 5043
            text = re.sub(r"port \d+", "port 5043", text)
        assert _squash(text) in doc, f"docs/errors.md does not quote ({what}):\n{text}"

    # ports and names
    assert ss.SocketCreateSSL("server", 0, "sslsock-dev", MODERN)
    port = int(ss.SocketClientInfo("server", ss.SocketPort))
    assert not ss.SocketCreateSSL("other", port, "sslsock-dev")
    quoted("port in use")
    assert not ss.SocketCreateSSL("other", 443, "sslsock-dev")
    quoted("port out of range", port_shown=True)
    assert not ss.SocketCreateSSL("server", 0, "sslsock-dev")
    quoted("name taken")
    assert not ss.SocketConnectSSL("client", free_port(), "localhost")
    quoted("no server")

    # certificates
    assert not ss.SocketCreateSSL("other", 0, "my-server")
    quoted("unknown certificate")
    for thumbprint in ("9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 of 24",
                       "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 de"):
        assert not ss.SocketCreateSSL("other", 0, thumbprint, ss.CertificateHash)
        quoted(f"thumbprint {thumbprint}")
    (store / "partner.crt").write_bytes(_certgen.make_self_signed("partner").cert_pem())
    assert not ss.SocketCreateSSL("other", 0, "partner")
    quoted("no private key")
    ca = _certgen.make_ca()
    old = _certgen.make_leaf(ca, "old-server", not_after=datetime.datetime(2020, 1, 1))
    old.write_pem(store / "old-server.pem")
    assert not ss.SocketCreateSSL("other", 0, "old-server")
    quoted("expired")
    _certgen.make_self_signed("secret").write_pem(store / "secret.pem", password=b"pw")
    assert not ss.SocketCreateSSL("other", 0, "secret")
    quoted("encrypted")

    # verification and versions
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(empty))  # a client that trusts nothing
    assert not ss.SocketConnectSSL("client", port, "localhost", MODERN)
    quoted("self-signed")
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(store))
    _certgen.make_self_signed("elsewhere", hosts=["example.org"]).write_pem(
        store / "elsewhere.pem")
    assert ss.SocketCreateSSL("elsewhere", 0, "elsewhere", MODERN)
    assert not ss.SocketConnectSSL(
        "client", int(ss.SocketClientInfo("elsewhere", ss.SocketPort)), "localhost", MODERN)
    quoted("hostname mismatch")
    assert ss.SocketCreateSSL("tls12", 0, "sslsock-dev", ss.ProtocolTLS1_2)
    assert not ss.SocketConnectSSL(
        "client", int(ss.SocketClientInfo("tls12", ss.SocketPort)), "localhost",
        ss.ProtocolTLS1_3)
    quoted("protocol version")

    # during the exchange; a stdlib client sends what sslsock would not
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    assert ss.SocketConnectSSL("client", port, "localhost", MODERN)
    assert ss.SocketWaitForConnection("server", TIMEOUT * 1000)
    name = ss.SocketAccept("server")
    assert ss.SocketRead(name, False, 100) == b""
    assert not ss.ErrorOccurred()  # a time-out is not an error (docs/errors.md says so)
    ss.SocketClose("client")  # close_notify
    assert ss.SocketRead(name, False, TIMEOUT * 1000) == b""
    quoted("peer closed")
    for send, what in ((b"hello world\r\n", "malformed frame"),
                       (b"67108865\r\n", "oversized frame")):
        with ctx.wrap_socket(socket.create_connection(("localhost", port), timeout=TIMEOUT),
                             server_hostname="localhost") as raw:
            assert ss.SocketWaitForConnection("server", TIMEOUT * 1000)
            name = ss.SocketAccept("server")
            raw.sendall(send)
            assert ss.SocketRead(name, False, TIMEOUT * 1000) == b""
            quoted(what)


def test_modes_md_wire_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes docs/modes.md shows for SocketWrite(s, "héllo") and SocketWrite(s, "")."""
    rows: dict[str, list[str]] = {}  # the first table: mode, value, wire bytes
    for cells in _table_rows((DOCS / "modes.md").read_text(encoding="utf-8")):
        if cells[0].startswith("`Socket"):
            rows.setdefault(cells[0].split()[0].strip("`"), cells)
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(tmp_path))
    _certgen.make_self_signed("localhost").write_pem(tmp_path / "localhost.pem")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert ss.SocketCreateSSL("server", 0, "localhost", MODERN)
    port = int(ss.SocketClientInfo("server", ss.SocketPort))

    def wire(mode: int, message: str) -> bytes:
        """What goes on the wire: the channel writes one message and closes."""
        with ctx.wrap_socket(socket.create_connection(("localhost", port), timeout=TIMEOUT),
                             server_hostname="localhost") as raw:
            assert ss.SocketWaitForConnection("server", TIMEOUT * 1000)
            name = ss.SocketAccept("server")
            assert ss.SocketChangeTransmissionMode(name, mode)
            assert ss.SocketWrite(name, message)
            ss.SocketClose(name)  # close_notify: the end of what raw receives
            data = b""
            while chunk := raw.recv(4096):
                data += chunk
            return data

    for mode in (ss.SocketSizeAtBeginning, ss.SocketEndTag, ss.SocketEndTagBuffer,
                 ss.SocketNoEndTag):
        cells = rows[mode.name]
        assert cells[1] == str(int(mode))
        assert cells[2] == f"`{wire(mode, 'héllo')!r}`", mode.name
        empty = wire(mode, "")
        assert cells[3] == (f"`{empty!r}`" if empty else "nothing"), mode.name


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_server_and_client(env: dict[str, str], store: Path, loop: str) -> None:
    extra = ["--uvloop"] if loop == "uvloop" else []
    with Example(env, "asyncio_server.py", "--max-clients", "2", *extra) as server:
        # a first client (the object face) stays connected while asyncio_client.py is
        # served by the same loop
        with ss.connect("localhost", server.port, options=MODERN, store=ss.CertStore(store),
                        timeout=TIMEOUT) as first:
            first.write("first")
            assert first.read(timeout=TIMEOUT) == b"first"
            r = run(env, "asyncio_client.py", "--port", str(server.port), "hello", "wörld")
            assert r.returncode == 0, r.stderr
            assert r.stdout == "connected with TLSv1.3\nhello\nwörld\n"
            first.write("still here")
            assert first.read(timeout=TIMEOUT) == b"still here"
        status, out, err = server.finish()
    assert status == 0, err
    assert out.count(" left\n") == 2 and out.count("connected (TLSv1.3)") == 2, out
    assert ": 5 bytes" in out, out


def test_asyncio_client_says_what_failed(env: dict[str, str]) -> None:
    r = run(env, "asyncio_client.py", "--port", str(free_port()), "hello")
    assert r.returncode == 1
    assert "no server is listening" in r.stdout, r.stdout
