"""The ``sslsock`` command (also ``python -m sslsock``): the network commands and the
parser.  The certificate commands live in :mod:`sslsock._cli.cert`.

Exit status, for scripts (also in every ``--help``): 0 success; 1 runtime failure (network,
TLS, the peer); 2 usage error; 3 certificate or store error; 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any, Callable, Optional

from sslsock._cli import cert as _cli_cert
from sslsock._cli.common import (
    DEFAULT_OPTIONS_TEXT,
    DEFAULT_PORT,
    DEV_CERT_NAME,
    EPILOG,
    EXIT_CERT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MODE_NAMES,
    UsageError,
    client_port,
    end_tag,
    err,
    interval,
    lookup_kind,
    options_mask,
    seconds,
    server_port,
    show_warnings,
    store_of,
    transmission_mode,
    worker_count,
)
from sslsock._core import errors as _errors
from sslsock._tls.options import _VERSIONS
from sslsock._version import __version__


def _host_port(host: str, port: int) -> str:
    if not host:
        return f"*:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------
# serve


class _Stopper:
    """SIGINT / SIGTERM set a flag the accept loop checks; a second SIGINT interrupts."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._reload)
        return self

    @staticmethod
    def _reload(signum: int, frame: Any) -> None:
        from sslsock._deploy.workers import _reload_now

        _reload_now()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _EchoServer:
    """One thread per connection, each echoing messages until the peer leaves."""

    def __init__(self, verbose: bool, prefix: str = "") -> None:
        self.verbose = verbose
        self.prefix = prefix
        self._lock = threading.Lock()
        self._conns: dict[int, Any] = {}
        self._threads: list[threading.Thread] = []
        self.messages = 0
        self.served = 0

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            # one write per line: worker processes share stderr
            sys.stderr.write(f"{stamp} {self.prefix}{text}\n")
            sys.stderr.flush()

    def start(self, conn: Any) -> None:
        with self._lock:
            self.served += 1
            n = self.served
            self._conns[n] = conn
        t = threading.Thread(target=self._echo, args=(n, conn), name=f"sslsock-echo-{n}",
                             daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _echo(self, n: int, conn: Any) -> None:
        from sslsock._core.errors import PeerClosed, SocketClosed

        try:
            i = conn.info()
            peer = _host_port(i.peer_address, i.peer_port)
            self.log(f"#{n} {peer} connected: {i.protocol or 'TCP'} {i.cipher}"
                     + _client_certificate_text(conn))
        except _errors.Error as e:
            self.log(f"#{n} gone before it could be served: {e}")
            self._forget(n, conn)
            return
        count, why = 0, "closed by the peer"
        try:
            while True:
                data = conn.read(timeout=None, max_bytes=65536)
                conn.write(data)
                count += 1
                with self._lock:
                    self.messages += 1
                if self.verbose:
                    self.log(f"#{n} {peer} echoed {len(data)} bytes")
        except PeerClosed:
            pass
        except SocketClosed:
            why = "closed by the server (stopping)"
        except _errors.Error as e:
            why = f"error: {e}"
        try:
            i = conn.info()
            sizes = f", {i.bytes_in} bytes in, {i.bytes_out} out"
        except _errors.Error:
            sizes = ""
        self._forget(n, conn)
        self.log(f"#{n} {peer} {why}: {count} message{'s' if count != 1 else ''} echoed{sizes}")

    def _forget(self, n: int, conn: Any) -> None:
        with self._lock:
            self._conns.pop(n, None)
        conn.close()

    def open_channels(self) -> int:
        with self._lock:
            return len(self._conns)

    def drain(self, grace: float) -> None:
        """Graceful stop: let the channels open now finish, for at most `grace` seconds
        (stop() then closes what is left, each with close_notify)."""
        deadline = time.monotonic() + grace
        while self.open_channels() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> None:
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            c.close()
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _client_certificate_text(conn: Any) -> str:
    """", client certificate CN=... (SHA-1 ...)" in mutual TLS, else ""."""
    from cryptography.hazmat.primitives import hashes

    from sslsock._certs.store import format_thumbprint

    cert = conn.peer_certificate()
    if cert is None:
        return ""
    sha1 = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - certmgr's thumbprint
    return f", client certificate {cert.subject.rfc4514_string()} (SHA-1 {format_thumbprint(sha1)})"


def _lookup_for(args: argparse.Namespace) -> str:
    """How to read --cert: CertificateHash / CertificateName in --options decide, then
    --hash, then what the identifier looks like."""
    from sslsock._tls.options import SSLOption

    if args.options & SSLOption.CertificateHash:
        return "hash"
    if args.options & SSLOption.CertificateName:
        return "name"
    return lookup_kind(args.cert, getattr(args, "hash", False))


def _server_identity(args: argparse.Namespace, store: Any) -> Any:
    """The Identity to serve: --cert, else sslsock-dev, else the store's only certificate
    with a key, else a new sslsock-dev."""
    if args.cert:
        return store.load_identity(args.cert, _lookup_for(args))
    entries = store.entries()
    if any(DEV_CERT_NAME in e.names() for e in entries):
        return store.load_identity(DEV_CERT_NAME, "name")
    servable = [e for e in entries if e.has_key]
    if len(servable) == 1:
        return store.load_identity(str(servable[0].path), "name")
    if servable:
        listed = ", ".join(e.name for e in servable)
        raise _errors.CertificateError(
            f"the certificate store {store.path} holds {len(servable)} certificates with a "
            f"key ({listed}) and none is named {DEV_CERT_NAME}: choose one with --cert NAME")
    from sslsock._certs.generate import DEFAULT_HOSTS

    hosts = [h for h in dict.fromkeys([*DEFAULT_HOSTS, socket.gethostname()]) if h]
    entry = store.create_self_signed(DEV_CERT_NAME, hosts=hosts)
    err(f"no certificate with a private key in the store {store.path}: created the "
        f'development certificate "{DEV_CERT_NAME}" ({entry.path}), self-signed for '
        f"{', '.join(hosts)}; thumbprint {entry.certmgr_thumbprint}; SHA-256 "
        f"{entry.sha256.lower()}. Clients verify it with: sslsock cert export "
        f"{DEV_CERT_NAME} FILE --no-key")
    return store.load_identity(str(entry.path), "name")


def _listener_args(args: argparse.Namespace, store: Any, ident: Any, *,
                   reuse_port: bool = False, ticket_keys: Any = None) -> dict[str, Any]:
    return dict(options=args.options, host=args.host, store=store, mode=args.mode,
                end_tag=args.end_tag, handshake_timeout=args.handshake_timeout,
                reuse_port=reuse_port, proxy_protocol=args.proxy_protocol,
                proxy_allow=args.proxy_allow or (),
                ticket_keys=ticket_keys if ticket_keys is not None else args.ticket_keys,
                reload_interval=args.reload_interval or None)


def _stats_line(stats: Any, server: _EchoServer) -> str:
    return (f"{stats.taken} connection{'s' if stats.taken != 1 else ''} served, "
            f"{server.messages} message{'s' if server.messages != 1 else ''} echoed, "
            f"{stats.accepted} accepted, {stats.handshakes} handshakes, "
            f"{stats.failed_tls} failed TLS, {stats.failed_io} failed I/O, "
            f"{stats.timed_out} timed out, "
            f"{stats.dropped_pending + stats.dropped_ready} dropped"
            + (f", {stats.proxy_refused} refused for their PROXY header"
               if stats.proxy_refused else ""))


def _serve_loop(args: argparse.Namespace, listener: Any, server: _EchoServer,
                stopping: Callable[[], bool]) -> None:
    """Accept until `stopping()`; a status line every --stats seconds."""
    from sslsock._core.errors import SocketClosed, SocketTimeout

    next_stats = time.monotonic() + args.stats if args.stats else None
    while not stopping():
        try:
            conn = listener.accept(timeout=0.25)
        except SocketTimeout:
            conn = None
        except SocketClosed:
            break
        if conn is not None:
            server.start(conn)
        if next_stats is not None and time.monotonic() >= next_stats:
            next_stats += args.stats
            server.log(f"stats: {_stats_line(listener.stats(), server)}, "
                       f"{server.open_channels()} open now")


def _reserve_port(host: str) -> socket.socket:
    """For --workers with --port 0: a port picked now, held (bound, not listening, with
    SO_REUSEPORT) so that every worker binds the same one."""
    if host:
        family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    else:
        family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and not host:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host or ("::" if family == socket.AF_INET6 else ""), 0))
    return s


def cmd_serve(args: argparse.Namespace) -> int:
    logging.getLogger("sslsock").setLevel(logging.INFO)  # renewals and reloads are news
    store = store_of(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ident = _server_identity(args, store)
    show_warnings(caught)
    if args.workers is not None and args.workers != 1:
        return _serve_workers(args, store, ident)
    return _serve_single(args, store, ident)


def _served_certificate(args: argparse.Namespace, store: Any, ident: Any) -> Any:
    """What the listener is given: the certificate's name (or file), so that it notices a
    renewed file; the loaded identity itself when it was chosen by thumbprint (a renewed
    certificate has another one)."""
    if args.cert and _lookup_for(args) == "hash":
        return ident
    name = args.cert if args.cert else _store_name(store, ident.certificate)
    ident.wipe()
    return name


def _listener(args: argparse.Namespace, store: Any, certificate: Any, **kw: Any) -> Any:
    from sslsock._faces.objects import Listener

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shown once already, when the identity was loaded
        return Listener(args.port if "port" not in kw else kw.pop("port"), certificate,
                        **_listener_args(args, store, None, **kw))


def _serve_single(args: argparse.Namespace, store: Any, ident: Any) -> int:
    entry = ident.certificate
    listener = _listener(args, store, _served_certificate(args, store, ident))
    server = _EchoServer(args.verbose)
    started = time.monotonic()
    stopper = _Stopper()
    try:
        with stopper:
            print(f"listening on {_host_port(args.host, listener.port)} "
                  f"({','.join(listener.protocols)}) certificate {entry.name} "
                  f"thumbprint {entry.certmgr_thumbprint}", flush=True)
            server.log(f"mode {_mode_name(args.mode)}, SHA-256 "
                       f"{entry.sha256.lower()}, file {entry.path}; Ctrl-C stops"
                       + (", PROXY protocol expected" if args.proxy_protocol else ""))
            _serve_loop(args, listener, server, lambda: stopper.signal is not None)
            stats = listener.stats()
            listener.close()
            if stopper.signal == signal.SIGTERM:
                server.drain(args.grace)
            server.stop()
    finally:
        if not listener.closed:
            listener.close()
    sig = stopper.signal
    signame = signal.Signals(sig).name if sig else "closed"
    print(f"stopped ({signame}) after {time.monotonic() - started:.1f}s: "
          f"{_stats_line(stats, server)}"
          + (f"; last failure: {stats.last_failure}" if stats.last_failure else ""),
          flush=True)
    return EXIT_INTERRUPTED if sig == signal.SIGINT else EXIT_OK


def _store_name(store: Any, entry: Any) -> str:
    """How a worker finds the served certificate again: its name in the store (so that a
    renewed file under that name is picked up), else its file."""
    try:
        if entry.path.parent.resolve() == store.path.resolve():
            return str(entry.path.stem)
    except OSError:
        pass
    return str(entry.path)


def _serve_workers(args: argparse.Namespace, store: Any, ident: Any) -> int:
    from sslsock._deploy import tickets as _tickets
    from sslsock._deploy.workers import available_cpus, run_workers

    n = args.workers or available_cpus()
    entry = ident.certificate
    certificate = _served_certificate(args, store, ident)
    held = _reserve_port(args.host) if args.port == 0 else None
    port = held.getsockname()[1] if held is not None else args.port
    # Without a key file, the workers share keys made here (inherited by the fork): they
    # resume each other's sessions, though not across restarts of the whole server.
    if args.ticket_keys is not None:  # a missing or unsafe file: said once, before forking
        checked = _tickets.TicketKeys(args.ticket_keys, store).read()
        checked[:] = bytes(len(checked))
    keys = args.ticket_keys if args.ticket_keys is not None else bytes(
        b for _ in range(3) for b in _tickets.new_key())
    ready: dict[int, str] = {}
    started = time.monotonic()

    def worker(w: Any) -> int:
        server = _EchoServer(args.verbose, prefix=f"[worker {w.index} pid {os.getpid()}] ")
        try:
            listener = _listener(args, store, certificate, port=port, reuse_port=True,
                                 ticket_keys=keys)
        except _errors.Error as e:  # reported once, by the worker that met it
            err(f"error: worker {w.index}: {e}")
            return _exit_code(e, "net")
        try:
            w.ready(f"{','.join(listener.protocols)}")
            _serve_loop(args, listener, server, lambda: w.stopping)
            stats = listener.stats()
            listener.close()
            server.drain(w.grace)
            server.stop()
        finally:
            if not listener.closed:
                listener.close()
        server.log(f"stopped: {_stats_line(stats, server)}"
                   + (f"; last failure: {stats.last_failure}" if stats.last_failure else ""))
        return EXIT_OK

    def on_ready(index: int, note: str) -> None:
        if len(ready) == n:
            return  # a restarted worker
        ready[index] = note
        if len(ready) == n:
            print(f"listening on {_host_port(args.host, port)} ({note}) certificate "
                  f"{entry.name} thumbprint {entry.certmgr_thumbprint}, {n} workers",
                  flush=True)
            err(f"{n} worker processes, mode {_mode_name(args.mode)}, SHA-256 "
                f"{entry.sha256.lower()}, file {entry.path}; session-ticket keys: "
                f"{'shared in memory' if args.ticket_keys is None else args.ticket_keys}"
                + (", PROXY protocol expected" if args.proxy_protocol else "")
                + "; SIGTERM stops gracefully, SIGHUP reloads")

    def on_event(text: str) -> None:
        err(text)

    try:
        code = run_workers(worker, n, grace=args.grace, on_ready=on_ready, on_event=on_event)
    finally:
        if held is not None:
            held.close()
    why = {0: "SIGTERM", EXIT_INTERRUPTED: "SIGINT"}.get(code, f"status {code}")
    print(f"stopped ({why}) after {time.monotonic() - started:.1f}s: {n} workers", flush=True)
    return code


def _mode_name(mode: Any) -> str:
    return next(k for k, v in MODE_NAMES.items() if v == mode.name)


# ---------------------------------------------------------------------------------------
# connect


def _client_identity(args: argparse.Namespace, store: Any) -> Any:
    if not args.cert:
        return None
    by = _lookup_for(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ident = store.load_identity(args.cert, by)
    show_warnings(caught)
    return ident


def _read_cafile(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _errors.CertificateError(f"{path}: cannot read the CA file ({e.strerror or e})") \
            from None


def cmd_connect(args: argparse.Namespace) -> int:
    from sslsock._core.connection import Mode
    from sslsock._faces.objects import connect

    store = store_of(args)
    ident = _client_identity(args, store)
    conn = connect(args.host, args.port, options=args.options,
                   verify=False if args.no_verify else None, timeout=args.timeout,
                   server_hostname=args.server_name, client_certificate=ident, store=store,
                   cafile_pem=_read_cafile(args.cafile), mode=args.mode, end_tag=args.end_tag)
    raw = args.mode == Mode.SocketNoEndTag
    out = sys.stdout.buffer
    with conn:
        i = conn.info()
        if not args.quiet:
            err(f"connected to {_host_port(i.peer_address, i.peer_port)}: {i.protocol} "
                f"{i.cipher}" + (" (certificate not verified)" if args.no_verify else ""))
        for line in sys.stdin.buffer:
            message = line if raw else line.rstrip(b"\r\n")
            conn.write(message, timeout=args.timeout)
            reply = _reply(conn, args)
            out.write(reply if raw else reply + b"\n")
            out.flush()
    return EXIT_OK


def _reply(conn: Any, args: argparse.Namespace) -> bytes:
    try:
        return conn.read(timeout=args.timeout, max_bytes=65536)  # type: ignore[no-any-return]
    except _errors.SocketTimeout:
        raise _errors.SocketTimeout(
            f"no reply within {args.timeout:g} s (--timeout); is the server in the same "
            f"transmission mode (--mode {_mode_name(args.mode)})?") from None
    except (_errors.PeerClosed, _errors.FrameError) as e:
        raise type(e)(f"{e}: no reply; is the server in the same transmission mode "
                      f"(--mode {_mode_name(args.mode)})?") from None


# ---------------------------------------------------------------------------------------
# probe


# (OpenSSL's name, the option that asks for it, the C core's version bit)
PROBE_VERSIONS = tuple((name, option.name or "", bit) for option, name, bit in _VERSIONS if bit)


#: How long probe listens after a handshake for a late refusal.  In TLS 1.3 a server checks
#: the client's certificate after the client has finished its handshake, so a refusal (no
#: client certificate) arrives as an alert at the first read; a server that accepted sends
#: nothing and this wait ends.  A loopback or LAN alert takes milliseconds.
PROBE_LISTEN_S = 1.0

#: Alerts whose usual cause the bare OpenSSL text does not say.
_ALERT_HINTS = (
    ("certificate required", "the server requires a client certificate"),
    ("handshake failure", "the server requires a client certificate, or shares no cipher "
                          "with this version"),
)


def _refusal(e: _errors.Error) -> str:
    reason = e.system_message or e.message
    for words, hint in _ALERT_HINTS:
        if words in reason:
            return f"{reason} ({hint})"
    return reason


def _probe_one(args: argparse.Namespace, store: Any, option: str) -> tuple[str, str]:
    from sslsock._core.connection import Mode
    from sslsock._faces.objects import connect
    from sslsock._tls.options import SSLOption

    mask = int(SSLOption[option]) | int(SSLOption.SSLNoVerify)
    try:
        conn = connect(args.host, args.port, options=mask, verify=False, timeout=args.timeout,
                       store=store, mode=Mode.SocketNoEndTag)
    except _errors.TLSError as e:
        return "refused", _refusal(e)
    except _errors.SocketTimeout as e:
        return "no answer", str(e)
    except _errors.Error as e:
        return "error", str(e)
    with conn:
        i = conn.info()
        try:
            conn.read(min(args.timeout, PROBE_LISTEN_S))
        except _errors.SocketTimeout:
            pass  # nothing came: the server is waiting for a message, as servers do
        except _errors.TLSError as e:
            return "refused", f"after the handshake: {_refusal(e)}"
        except _errors.ConnectionFailure as e:
            return "dropped", f"the server closed the connection after the handshake ({e})"
        return "accepted", f"{i.protocol} {i.cipher}"


def cmd_probe(args: argparse.Namespace) -> int:
    import json

    from sslsock._core.binding import lib
    from sslsock._faces.objects import connect

    store = store_of(args)
    # Reachability first: without a TCP listener every version would fail the same way.
    try:
        connect(args.host, args.port, tls=False, timeout=args.timeout).close()
    except _errors.Error as e:
        err(f"cannot reach {_host_port(args.host, args.port)}: {e}")
        return EXIT_FAILURE
    supported = int(lib.ss_versions_supported())
    rows = []
    for name, option, bit in PROBE_VERSIONS:
        if not supported & bit:
            rows.append((name, "untested", f"this OpenSSL build cannot do {name}"))
            continue
        result, why = _probe_one(args, store, option)
        rows.append((name, result, why))
    if args.json:
        print(json.dumps({"host": args.host, "port": args.port,
                          "versions": [{"version": v, "result": r, "detail": d}
                                       for v, r, d in rows]}, indent=2))
        return EXIT_OK
    print(f"protocol versions accepted by {_host_port(args.host, args.port)}:")
    width = max(len(r[0]) for r in rows)
    for version, result, why in rows:
        print(f"  {version:<{width}}  {result:<9} {why}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# debug


def cmd_debug(args: argparse.Namespace) -> int:
    from sslsock import debug

    return debug.main(["--json"] if args.json else [])


# ---------------------------------------------------------------------------------------
# The parser


class _Formatter(argparse.HelpFormatter):
    """Descriptions and epilogs re-wrapped by paragraph, except paragraphs with indented
    lines (the exit-status table), kept as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width,
                                         initial_indent=indent, subsequent_indent=indent,
                                         break_on_hyphens=False))
        return "\n\n".join(out)


def _store_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", metavar="DIR", default=argparse.SUPPRESS,
                   help="certificate store directory (default: $SSLSOCK_CERT_STORE, else "
                        "~/.local/share/sslsock/certs)")
    return p


def _add_framing(p: argparse.ArgumentParser) -> None:
    from sslsock._core.connection import Mode

    p.add_argument("--mode", type=transmission_mode, default=Mode.SocketSizeAtBeginning,
                   metavar="MODE",
                   help="transmission mode, as SocketChangeTransmissionMode: size "
                        "(SocketSizeAtBeginning, default), endtag (SocketEndTag), "
                        "endtagbuffer (SocketEndTagBuffer) or raw (SocketNoEndTag)")
    p.add_argument("--end-tag", type=end_tag, default=b"<EOF>", metavar="TAG",
                   help="end tag for the endtag modes (default <EOF>; escapes such as \\r\\n "
                        "are understood)")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--options", type=options_mask, default=options_mask(DEFAULT_OPTIONS_TEXT),
                   metavar="MASK",
                   help="SSL options as in WLanguage, joined with + or |: SSL3, TLS1, TLS1_1, "
                        "TLS1_2, TLS1_3 (or ProtocolTLS1_2 ...), CertificateHash, "
                        "CertificateName, NoVerify, ClientCertificate, or a number "
                        f"(default {DEFAULT_OPTIONS_TEXT})")


def build_parser() -> argparse.ArgumentParser:

    store = _store_parent()
    parser = argparse.ArgumentParser(
        prog="sslsock", formatter_class=_Formatter, epilog=EPILOG, parents=[store],
        description="TLS sockets the WINDEV way: a certificate store with certmgr-style "
                    "thumbprints, a TLS echo server, a client, a protocol-version probe.")
    parser.add_argument("--version", action="version", version=f"sslsock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _cli_cert.add_parser(sub, store, _Formatter, EPILOG)

    p = sub.add_parser(
        "serve", parents=[store], formatter_class=_Formatter, epilog=EPILOG,
        help="run a TLS echo server",
        description="A TLS echo server: every message received is sent back, framed by the "
                    "transmission mode; one thread per connection; each connection (peer, "
                    "version, cipher) is logged on stderr.  When it is ready it prints, on "
                    "stdout: listening on HOST:PORT (VERSIONS) certificate NAME thumbprint "
                    "SHA-1.  Ctrl-C or SIGTERM stops it cleanly and prints a summary line "
                    "(exit 130 after Ctrl-C, 0 after SIGTERM; SIGTERM lets open connections "
                    "finish for --grace seconds first).  SIGHUP takes a renewed certificate "
                    "(sslsock cert import --replace) and rewritten ticket keys at once; "
                    "without it they are taken within --reload-interval (2 s).  "
                    "Without --cert it serves the "
                    f"store's \"{DEV_CERT_NAME}\" certificate, or its only certificate with a "
                    f"key; in a store without any, it creates \"{DEV_CERT_NAME}\" (self-signed "
                    "for localhost, 127.0.0.1, ::1 and this machine's name) and says so on "
                    "stderr.")
    p.add_argument("--port", type=server_port, default=DEFAULT_PORT,
                   help=f"TCP port, 5000..65000 as for SocketCreateSSL (default {DEFAULT_PORT}; "
                        "0: any free port, printed)")
    p.add_argument("--host", default="", metavar="ADDR",
                   help="address to listen on (default: all interfaces, IPv4 and IPv6)")
    p.add_argument("--cert", metavar="ID",
                   help="the certificate, as SocketCreateSSL takes it: name, or SHA-1/SHA-256 "
                        "thumbprint (recognised as such, or forced with --hash), or a file")
    p.add_argument("--hash", action="store_true", help="--cert is a thumbprint")
    _add_options(p)
    _add_framing(p)
    p.add_argument("--handshake-timeout", type=seconds, default=10.0, metavar="SECONDS",
                   help="drop clients that do not finish the handshake in time (default 10)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every message echoed")
    p.add_argument("--workers", type=worker_count, nargs="?", const=0, default=None,
                   metavar="N",
                   help="run N processes on the port (SO_REUSEPORT), restarting any that "
                        "dies; without N: one per CPU this process may use (affinity and "
                        "cgroup quota).  Default: one process")
    p.add_argument("--grace", type=seconds, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, stop accepting and give open connections this long to "
                        "finish before closing them (default 10)")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="[extension] every connection starts with a PROXY v1/v2 header (from "
                        "HAProxy send-proxy(-v2), nginx proxy_protocol): the client it names "
                        "is logged; connections without a valid one are refused")
    p.add_argument("--proxy-allow", action="append", metavar="ADDR[/BITS]",
                   help="only these proxies may send the PROXY header (repeatable)")
    p.add_argument("--ticket-keys", metavar="FILE", nargs="?", const="store", default=None,
                   help="encrypt session tickets with the keys of FILE (without FILE: the "
                        "store's, made by `sslsock cert tickets rotate`), so that processes "
                        "and hosts sharing it resume each other's sessions; re-read when it "
                        "changes")
    p.add_argument("--stats", type=seconds, default=0.0, metavar="SECONDS",
                   help="log the listener's counters on stderr every SECONDS")
    p.add_argument("--reload-interval", type=interval, default=2.0, metavar="SECONDS",
                   help="look for a renewed certificate and rewritten ticket keys every "
                        "SECONDS (default 2); 0: only on SIGHUP")
    p.set_defaults(func=cmd_serve, kind="net")

    p = sub.add_parser(
        "connect", parents=[store], formatter_class=_Formatter, epilog=EPILOG,
        help="send lines to a TLS server, print its replies",
        description="A TLS client: each line read from stdin is sent as one message (without "
                    "its line end, framed by the transmission mode), then one reply is read "
                    "and printed as a line on stdout.  In raw mode the line is sent with its "
                    "line end and the reply printed as received.  Ends at the end of stdin.  "
                    "The server certificate is verified against the system's authorities and "
                    "the certificates of the store.")
    p.add_argument("host", help="server name or address")
    p.add_argument("port", type=client_port, help="server port")
    _add_options(p)
    _add_framing(p)
    p.add_argument("--no-verify", action="store_true",
                   help="do not verify the server certificate (SSLNoVerify; tests only)")
    p.add_argument("--cafile", metavar="FILE",
                   help="also trust the certificates in this PEM file")
    p.add_argument("--server-name", metavar="NAME",
                   help="name to send (SNI) and check in the certificate (default: HOST)")
    p.add_argument("--cert", metavar="ID",
                   help="client certificate for mutual TLS (name or thumbprint in the store)")
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS",
                   help="connect, send and reply time-out (default 30)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not print the connection line on stderr")
    p.set_defaults(func=cmd_connect, kind="net")

    p = sub.add_parser(
        "probe", parents=[store], formatter_class=_Formatter, epilog=EPILOG,
        help="which protocol versions a server accepts",
        description="Try SSLv3 (when this OpenSSL can), TLS 1.0, 1.1, 1.2 and 1.3 one at a "
                    "time, each in its own handshake offering only that version, without "
                    "verifying the certificate, and print which ones the server accepts "
                    "(with the cipher) or refuses (with the reason).  After each handshake "
                    "it listens up to 1 s: a TLS 1.3 server refuses a client (one without "
                    "a certificate, say) at its first read.  Exit 0 whatever the "
                    "results; 1 if the server cannot be reached at all.")
    p.add_argument("host", help="server name or address")
    p.add_argument("port", type=client_port, help="server port")
    p.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS",
                   help="per-attempt time-out (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_probe, kind="net")

    p = sub.add_parser(
        "debug", parents=[store], formatter_class=_Formatter, epilog=EPILOG,
        help="versions of sslsock, its dependencies and OpenSSL",
        description="Versions of sslsock, Python, cffi, cryptography, the OpenSSL compiled "
                    "against and the one linked, the protocol versions this build can "
                    "negotiate, OpenSSL's default security level, and the certificate store "
                    "path.  Same as python -m sslsock.debug.")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=cmd_debug, kind="net")
    return parser


def _exit_code(e: BaseException, kind: str) -> int:
    if isinstance(e, (_errors.CertificateError, UsageError)):
        return EXIT_CERT if isinstance(e, _errors.CertificateError) else EXIT_USAGE
    if isinstance(e, (_errors.ArgumentError, _errors.OptionsError)):
        return EXIT_USAGE
    if kind == "cert" and isinstance(e, OSError) and not isinstance(e, _errors.Error):
        return EXIT_CERT
    return EXIT_FAILURE


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``sslsock`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # "sslsock" or "sslsock cert" alone
        getattr(args, "parser", parser).print_help(sys.stderr)
        return EXIT_USAGE
    if "store" in args and args.store:
        import os

        os.environ["SSLSOCK_CERT_STORE"] = args.store  # for anything that makes its own store
    _log_warnings()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_FAILURE
    except (_errors.Error, UsageError, OSError) as e:
        code = _exit_code(e, args.kind)
        err(f"error: {e}")
        return code


class _LevelFormatter(logging.Formatter):
    """"sslsock: warning: ...", "sslsock: error: ...", and "sslsock: ..." for news (a
    renewed certificate, reloaded ticket keys)."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        return f"sslsock: {level}{record.getMessage()}"


def _log_warnings() -> None:
    """The library's warnings (versions dropped from a mask, ...) go to stderr."""
    log = logging.getLogger("sslsock")
    if not any(getattr(h, "_sslsock_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LevelFormatter())
        handler._sslsock_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.WARNING:
        log.setLevel(logging.WARNING)


def _quiet_stdout() -> None:
    """After a closed pipe (``sslsock cert list | head``), do not fail again at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
