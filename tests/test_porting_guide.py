"""What a WINDEV developer porting a program needs (issue 24): WLanguage's character
constants, a named face that is clean under ``python -bb`` (the guard docs/porting.md
recommends against comparing bytes with str), an untrusted-server error that names its fix
and a fix that works, and docs/porting.md itself.  The guide's example (a line service) is
run by tests/test_examples.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
from test_named_face import LOOPBACK, WAIT_MS, accept, code, port_of, raw_client, recv_exact

import sslsock
from sslsock._certs import generate as _certgen

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "porting.md"
TLS12_13 = sslsock.ProtocolTLS1_2 + sslsock.ProtocolTLS1_3
TIMEOUT = 30
OPENSSL = shutil.which("openssl")

# --- the character constants ------------------------------------------------------------


def test_character_constants_have_wlanguage_values() -> None:
    assert sslsock.CR == b"\r\n" and type(sslsock.CR) is bytes  # CR + LF, not a lone CR
    assert sslsock.RC is sslsock.CR                              # the French name
    assert sslsock.TAB == b"\t" and type(sslsock.TAB) is bytes
    assert {"CR", "RC", "TAB"} <= set(sslsock.__all__)
    from sslsock._faces import named as wl
    assert wl.CR is sslsock.CR and wl.RC is sslsock.CR and wl.TAB is sslsock.TAB


def test_cr_is_an_end_tag_with_a_line_peer(pki: Any) -> None:
    """SocketChangeTransmissionMode(ch, SocketEndTagBuffer, CR) against a stdlib peer
    speaking lines: what is read has no CR, what is written gets one."""
    assert sslsock.SocketCreateSSL("srv", 0, "localhost", TLS12_13), sslsock.ErrorInfo()
    with raw_client(pki, port_of("srv")) as peer:
        ch = accept("srv")
        assert sslsock.SocketChangeTransmissionMode(ch, sslsock.SocketEndTagBuffer, sslsock.CR)
        peer.sendall(b"one\r\ntwo\tparts\r\n\r\n")
        assert sslsock.SocketRead(ch, False, WAIT_MS) == b"one"
        second = sslsock.SocketRead(ch, False, WAIT_MS)
        assert second.split(sslsock.TAB) == [b"two", b"parts"]
        assert sslsock.SocketRead(ch, False, WAIT_MS) == b""   # the empty line
        assert not sslsock.ErrorOccurred()
        assert sslsock.SocketWrite(ch, "réponse")
        assert recv_exact(peer, 10) == "réponse".encode() + b"\r\n"
        # TAB as the tag
        assert sslsock.SocketChangeTransmissionMode(ch, sslsock.SocketEndTagBuffer, sslsock.TAB)
        assert sslsock.SocketWrite(ch, b"x")
        assert recv_exact(peer, 2) == b"x\t"


def test_cr_does_not_mix_with_str() -> None:
    """The decision docs/functions.md records: CR is bytes, so "OK" + CR fails at once."""
    with pytest.raises(TypeError):
        "OK" + sslsock.CR  # type: ignore[operator]  # (what the test is about)
    assert b"OK" + sslsock.CR == b"OK\r\n"


# --- python -bb --------------------------------------------------------------------------

BB_SCRIPT = r'''
import os
import threading

import sslsock as ss

try:
    b"" == ""
except BytesWarning:
    pass
else:
    raise SystemExit("-bb is not in effect")

OPTS = ss.ProtocolTLS1_2 + ss.ProtocolTLS1_3
WAIT = 10000
INFO = (ss.SocketAddress, ss.SocketPort, ss.SocketCertificate, ss.SocketProtocol,
        ss.SocketCipher, ss.SocketResumed, ss.SocketProxyAddress, ss.SocketProxyPort)
ERRINFO = (ss.errMessage, ss.errCode, ss.errSystemCode, ss.errSystemMessage,
           ss.errFullDetails)


def check(ok):
    if not ok:
        raise AssertionError(ss.ErrorInfo())


def pair(listener, client, port):
    check(ss.SocketConnectSSL(client, port, "localhost", OPTS, WAIT))
    check(ss.SocketWaitForConnection(listener, WAIT))
    channel = ss.SocketAccept(listener)
    check(channel != "")
    return channel


def read_all(name, size):
    got = b""
    while len(got) < size:
        got += ss.SocketRead(name, False, WAIT)
        check(not ss.ErrorOccurred())
    return got


def exchange(listener, client, port):
    """Every mode, str and bytes messages and tags, both directions, a time-out, the end."""
    ch = pair(listener, client, port)
    for what in INFO:
        ss.SocketClientInfo(ch, what)
        ss.SocketClientInfo(client, what)
    for mode, tag in ((ss.SocketSizeAtBeginning, b"<EOF>"), (ss.SocketEndTag, ss.CR),
                      (ss.SocketEndTagBuffer, "\r\n"), (ss.SocketEndTagBuffer, ss.TAB),
                      (ss.SocketEndTag, "<fin>"), (ss.SocketNoEndTag, b"<EOF>")):
        for name in (ch, client):
            check(ss.SocketChangeTransmissionMode(name, mode, tag))
        for message in ("héllo", b"bytes", bytearray(b"array"), memoryview(b"view")):
            check(ss.SocketWrite(client, message))
            expected = message.encode() if isinstance(message, str) else bytes(message)
            if mode == ss.SocketNoEndTag:
                check(read_all(ch, len(expected)) == expected)
            else:
                check(ss.SocketRead(ch, False, WAIT) == expected)
            check(ss.SocketWrite(ch, expected))
            if mode == ss.SocketNoEndTag:
                check(read_all(client, len(expected)) == expected)
            else:
                check(ss.SocketRead(client) == expected)
        check(ss.SocketRead(ch, False, 20) == b"" and not ss.ErrorOccurred())  # time-out
    ss.SocketClose(client)
    check(ss.SocketRead(ch) == b"" and ss.ErrorInfo(ss.errCode) == ss.ErrorCode.PEER_CLOSED)
    check(ss.SocketClientInfo(ch, ss.SocketAddress) == "" and ss.ErrorOccurred())
    for what in ERRINFO:
        ss.ErrorInfo(what)
    ss.SocketClose(ch)


check(ss.SocketCreateSSL("srv", 0, "localhost", OPTS))
port = int(ss.SocketClientInfo("srv", ss.SocketPort))
ss.SocketClientInfo("srv", ss.SocketProtocol)
exchange("srv", "cli", port)                    # on the main thread (reads in slices)
failures = []


def in_thread():
    try:
        exchange("srv", "cli2", port)            # off it (sslsock._fastio's one C call)
    except BaseException as e:
        failures.append(e)


t = threading.Thread(target=in_thread)
t.start()
t.join()
if failures:
    raise failures[0]

# SocketDeny, the simplified server, SocketWaitForMessage
check(ss.SocketConnectSSL("denied", port, "localhost", OPTS, WAIT))
check(ss.SocketWaitForConnection("srv", WAIT))
check(ss.SocketDeny("srv"))
check(ss.SocketCreateSSL("simple", 0, "localhost", OPTS))
check(ss.SocketConnectSSL("sc", int(ss.SocketClientInfo("simple", ss.SocketPort)),
                          "localhost", OPTS, WAIT))
check(ss.SocketWrite("sc", "hi"))
check(ss.SocketRead("simple", False, WAIT) == b"hi")
check(ss.SocketWrite("simple", "ok") and ss.SocketRead("sc", False, WAIT) == b"ok")
check(ss.SocketCreateSSL("many", 0, "localhost", OPTS))
check(ss.SocketConnectSSL("mc", int(ss.SocketClientInfo("many", ss.SocketPort)),
                          "localhost", OPTS, WAIT))
check(ss.SocketWrite("mc", "one"))
channel = ss.SocketWaitForMessage("many", WAIT)
check(channel != "" and ss.SocketRead(channel, False, WAIT) == b"one")
check(ss.SocketWaitForMessage("many", 20) == "" and not ss.ErrorOccurred())

# plain TCP, NetIPAddress, Socket.Option, errors
check(ss.SocketCreate("plain", 0))
check(ss.SocketConnect("pc", int(ss.SocketClientInfo("plain", ss.SocketPort)), "", WAIT))
ss.NetIPAddress()
ss.NetIPAddress("localhost")
ss.Socket.Option = ss.SocketNoReuseAddress
ss.Socket.Option = 0
check(not ss.SocketCreateSSL("srv", 0, "localhost", OPTS))          # name taken
check(not ss.SocketCreateSSL("other", 0, "no-such-certificate"))
check(not ss.SocketConnect("nobody", 1, "127.0.0.1", WAIT))
for what in ERRINFO:
    ss.ErrorInfo(what)
os.environ["SSLSOCK_CERT_STORE"] = os.environ["EMPTY_STORE"]        # trusts nobody
check(not ss.SocketConnectSSL("untrusted", port, "localhost", OPTS, WAIT))
check("sslsock cert export" in ss.ErrorInfo())
for name in ("srv", "sc", "simple", "mc", "many", "plain", "pc"):
    ss.SocketClose(name)

# the trap the guard is for: a literal port compares SocketRead's result with ""
check(ss.SocketCreate("trap", 0))
check(ss.SocketConnect("tc", int(ss.SocketClientInfo("trap", ss.SocketPort)), "", WAIT))
check(ss.SocketWaitForConnection("trap", WAIT))
ch = ss.SocketAccept("trap")
sCmd = ss.SocketRead(ch, False, 20)
try:
    if sCmd == "":
        pass
except BytesWarning as e:
    print(f"BytesWarning: {e}")
'''


def test_named_face_is_clean_under_python_bb(pki: Any, tmp_path: Path) -> None:
    """A real exchange through the named face, every function and mode, on the main thread
    and off it, with ``python -bb``: a bytes/str comparison anywhere in sslsock would raise
    BytesWarning.  The last lines show the guard catching a literal port's ``sCmd == ""``."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, SSLSOCK_CERT_STORE=str(pki.store_dir), EMPTY_STORE=str(empty))
    r = subprocess.run([sys.executable, "-bb", "-c", BB_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "BytesWarning: Comparison between bytes and string\n", r.stdout
    assert r.stderr == "", r.stderr


# --- a client that does not trust the server -----------------------------------------------

UNTRUSTED_FIX = ("this client does not trust the server's certificate. Export it without its "
                 "key on the server (`sslsock cert export NAME server.crt --no-key`; `sslsock "
                 "cert list` shows NAME) and import it into the client's certificate store "
                 "(`sslsock cert import server.crt`), or import the CA that signed it")


def _cli(store: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "sslsock", "cert", *args, "--store", str(store)],
                       capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


def _server_store(tmp_path: Path, kind: str) -> Path:
    """A server's store holding "server": self-signed, or signed by a CA the client does
    not know, which the server sends in its chain or not."""
    store = tmp_path / "server-store"
    store.mkdir()
    if kind == "self-signed":
        _certgen.make_self_signed("server", hosts=["localhost"]).write_pem(store / "server.pem")
        return store
    ca = _certgen.make_ca("a CA the client does not know")
    leaf = _certgen.make_leaf(ca, "server", hosts=["localhost"])
    if kind == "CA not sent":
        leaf = dataclasses.replace(leaf, chain=[])
    leaf.write_pem(store / "server.pem")
    return store


@pytest.mark.parametrize(("kind", "reason"), [
    ("self-signed", "18 self-signed certificate"),
    ("CA sent", "19 self-signed certificate in certificate chain"),
    ("CA not sent", "20 unable to get local issuer certificate"),
])
def test_untrusted_server_message_names_the_fix_that_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, reason: str) -> None:
    server_store = _server_store(tmp_path, kind)
    client_store = tmp_path / "client-store"
    client_store.mkdir()
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(server_store))
    assert sslsock.SocketCreateSSL("srv", 0, "server", TLS12_13), sslsock.ErrorInfo()
    port = port_of("srv")
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(client_store))

    assert not sslsock.SocketConnectSSL("cli", port, "localhost", TLS12_13, WAIT_MS)
    assert code() == sslsock.ErrorCode.VERIFY
    number, text = reason.split(" ", 1)
    assert sslsock.ErrorInfo(sslsock.errMessage) == (
        f"TLS handshake with localhost port {port}: the peer's certificate did not verify "
        f"({text}): {UNTRUSTED_FIX}")
    assert str(sslsock.ErrorInfo()).endswith(f"\nError code: 5 (VERIFY)\nSystem error: {reason}")
    with pytest.raises(sslsock.VerificationError) as caught:  # the object face says the same
        sslsock.connect("localhost", port, options=TLS12_13, timeout=TIMEOUT)
    assert UNTRUSTED_FIX in str(caught.value)
    assert caught.value.system_code == int(number)

    # the fix, as the message gives it
    crt = tmp_path / "server.crt"
    _cli(server_store, "export", "server", str(crt), "--no-key")
    assert b"PRIVATE KEY" not in crt.read_bytes()
    _cli(client_store, "import", str(crt))
    assert sslsock.SocketConnectSSL("cli", port, "localhost", TLS12_13, WAIT_MS), \
        sslsock.ErrorInfo()
    channel = accept("srv")
    assert sslsock.SocketWrite("cli", "hello")
    assert sslsock.SocketRead(channel, False, WAIT_MS) == b"hello"


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
def test_untrusted_openssl_server_gets_the_same_advice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        openssl_s_server: Callable[..., Any]) -> None:
    issued = _certgen.make_self_signed("localhost", hosts=["localhost", LOOPBACK])
    cert, key = issued.write_pem(tmp_path / "s_server", split=True)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(tmp_path / "empty"))  # trusts nothing
    with openssl_s_server(OPENSSL, cert, key) as port:
        assert not sslsock.SocketConnectSSL("cli", port, LOOPBACK, TLS12_13, WAIT_MS)
    assert code() == sslsock.ErrorCode.VERIFY
    assert UNTRUSTED_FIX in str(sslsock.ErrorInfo(sslsock.errMessage))


def test_other_verify_failures_keep_their_own_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trust advice is for an untrusted certificate only: a trusted certificate for
    another host is a name problem, not a trust problem."""
    monkeypatch.setenv("SSLSOCK_CERT_STORE", str(tmp_path))
    _certgen.make_self_signed("elsewhere", hosts=["example.org"]).write_pem(
        tmp_path / "elsewhere.pem")
    assert sslsock.SocketCreateSSL("srv", 0, "elsewhere", TLS12_13), sslsock.ErrorInfo()
    assert not sslsock.SocketConnectSSL("cli", port_of("srv"), "localhost", TLS12_13, WAIT_MS)
    assert sslsock.ErrorInfo(sslsock.errSystemMessage) == "hostname mismatch"
    assert str(sslsock.ErrorInfo(sslsock.errMessage)).endswith("did not verify")


# --- docs/porting.md ----------------------------------------------------------------------


def _python_blocks(text: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL)]


def test_guide_names_only_what_exists() -> None:
    """Every ss.NAME in the guide's Python, and every name in its WLanguage-to-Python
    table, is sslsock's."""
    text = GUIDE.read_text(encoding="utf-8")
    used = {name for block in _python_blocks(text) for name in re.findall(r"\bss\.(\w+)", block)}
    assert len(used) >= 15
    assert not sorted(n for n in used if not hasattr(sslsock, n))
    table = text.split("## Names and argument orders", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^\| `(\w+)`", table, re.MULTILINE)
    assert len(named) >= 12
    assert not [n for n in named if not hasattr(sslsock, n)]


def test_guide_is_built_around_the_example_and_linked() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for example in ("examples/line_server.py", "examples/line_client.py"):
        assert f"]({'../' + example})" in text, example
        assert (ROOT / example).exists()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documentation = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    assert "[docs/porting.md](docs/porting.md)" in documentation
    assert "WINDEV" in documentation.split("docs/porting.md", 1)[1].split("\n- ", 1)[0]
    for flag in ("-crlf", "-nocommands", "-bb"):
        assert flag in text, flag


def test_guide_python_runs_under_bb_where_it_stands_alone(tmp_path: Path) -> None:
    """The guide's snippets that need no server (marked by `# runs alone`) run under -bb
    and print what the guide says they print."""
    text = GUIDE.read_text(encoding="utf-8")
    alone = [b for b in _python_blocks(text) if b.startswith("# runs alone")]
    assert alone
    for block in alone:
        shown = re.findall(r"#> (.*)", block)
        r = subprocess.run([sys.executable, "-bb", "-c", block], capture_output=True,
                           text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, SSLSOCK_CERT_STORE=str(tmp_path)))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == shown, block


def test_guide_excerpts_are_the_example() -> None:
    """A block headed `# examples/NAME.py (excerpt)` is lines of that file, in its order
    (lines may be left out, none changed)."""
    text = GUIDE.read_text(encoding="utf-8")
    excerpts = 0
    for block in _python_blocks(text):
        m = re.match(r"# (examples/\w+\.py) \(excerpt\)\n", block)
        if not m:
            continue
        excerpts += 1
        source = iter(line.strip() for line in (ROOT / m.group(1)).read_text().splitlines())
        for line in block[m.end():].splitlines():
            if line.strip():
                assert line.strip() in source, f"{m.group(1)} has no (further) line {line!r}"
    assert excerpts >= 2
