"""[extension] Socket.Option = SocketReusePort: several server sockets share one port on
purpose (SO_REUSEPORT, for multi-process servers); without it the second one is refused."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import sslsock
from sslsock._faces.registry import REGISTRY


def test_reuse_port_shares_a_port_between_processes(pki: Any) -> None:
    sslsock.Socket.Option = sslsock.SocketReusePort
    assert sslsock.SocketCreateSSL("a", 0, "localhost"), sslsock.ErrorInfo()
    port = REGISTRY.get("a").obj.port
    # another process of ours, asking for the same sharing, gets the same port
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys, sslsock; sslsock.Socket.Option = sslsock.SocketReusePort; "
         f"ok = sslsock.SocketCreateSSL('b', {port}, 'localhost'); "
         "print(sslsock.ErrorInfo()); sys.exit(0 if ok else 1)"],
        capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stdout + child.stderr
    # the child has gone; this process still serves on the shared port
    assert sslsock.SocketConnectSSL("cli", port, "localhost"), sslsock.ErrorInfo()


def test_without_reuse_port_the_second_socket_is_refused(pki: Any) -> None:
    assert sslsock.SocketCreateSSL("a", 0, "localhost")
    port = REGISTRY.get("a").obj.port
    assert not sslsock.SocketCreateSSL("b", port, "localhost")
    assert sslsock.ErrorInfo(sslsock.errCode) == sslsock.ErrorCode.IN_USE
    assert str(port) in sslsock.ErrorInfo(sslsock.errMessage)
