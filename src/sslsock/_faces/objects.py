"""The object face: :class:`Listener` and :func:`connect` (with
:class:`~sslsock._core.connection.Connection`, what they give).

Seconds as floats (``None``: no limit), context managers, exceptions from
:mod:`sslsock._core.errors`.  Every per-handshake step happens in C (the GIL is released
during each call); this module only validates, looks certificates up and keeps objects
alive while a call uses them.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

from sslsock._certs.store import CertStore, Identity
from sslsock._core import errors as _errors
from sslsock._core.binding import ffi, lib, new_err, text
from sslsock._core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_MESSAGE,
    Connection,
    Mode,
    Seconds,
    _Guard,
    _ms,
    _sliced,
)
from sslsock._core.engine import messages as _messages
from sslsock._core.errors import check, raise_err
from sslsock._deploy import renewal as _renewal
from sslsock._deploy import workers as _workers
from sslsock._deploy.tickets import TicketKeys
from sslsock._tls import contexts as _tlsconfig
from sslsock._tls.options import DEFAULT, Mask, Recipe, SSLOption, recipe

log = logging.getLogger("sslsock")

# ---------------------------------------------------------------------------------------
# TLS contexts: built and shared by sslsock._tls.contexts


def _identity(certificate: Any, by_hash: bool, store: Any, password: Any) -> Any:
    """Resolve a certificate identifier (or an Identity) through the store."""
    if isinstance(certificate, Identity):
        return certificate
    if not isinstance(certificate, str):
        raise TypeError("the certificate identifier must be a str (a name, a thumbprint or "
                        f"a file path), not {type(certificate).__name__}")
    st = store if store is not None else CertStore(password=password)
    return st.load_identity(certificate, "hash" if by_hash else "name")


def _wipe_if_identity(certificate: Any) -> None:
    if isinstance(certificate, Identity):
        certificate.wipe()


def _store(store: Any, password: Any = None) -> Any:
    return store if store is not None else CertStore(password=password)


def _warn_dropped(rec: Recipe, what: str) -> None:
    if rec.dropped:
        log.warning("%s: SSL options ask for %s, which this OpenSSL cannot do; using %s (%s)",
                    what, ", ".join(rec.dropped), ", ".join(rec.effective),
                    "; ".join(rec.dropped.values()))


def connect(
    host: str,
    port: int,
    *,
    tls: bool = True,
    options: Mask = DEFAULT,
    timeout: Seconds = 30.0,
    verify: Optional[bool] = None,
    server_hostname: Optional[str] = None,
    client_certificate: Any = None,
    store: Any = None,
    password: Any = None,
    cafile_pem: Optional[bytes] = None,
    mode: Mode = Mode.SocketSizeAtBeginning,
    end_tag: bytes = b"<EOF>",
    max_message: int = DEFAULT_MAX_MESSAGE,
    resume: bool = True,
) -> Connection:
    """Connect to ``host:port`` (empty host: this machine), with TLS unless ``tls=False``.

    The server's certificate is verified against the system's authorities and the
    certificates of the store, and must match ``server_hostname`` (default: ``host``, or
    ``localhost`` for an empty host).  ``verify=False`` (or the SSLNoVerify option) turns
    verification off for this connection.  A reconnection to the same server with the same
    settings resumes the previous TLS session (``resume=False``: always a full handshake);
    :attr:`Connection.resumed` tells.
    """
    _check_port(port, client=True)
    host = unbracket(host) or "localhost"
    ctx = None
    if tls:
        rec = recipe(options)
        _warn_dropped(rec, f"connection to {host}:{port}")
        if verify is None:
            verify = not rec.no_verify
        st = _store(store, password)
        wanted = client_certificate if client_certificate != "" else None
        try:
            ctx = _tlsconfig.client_context(
                rec, verify=verify, store=st, cafile_pem=cafile_pem, client_certificate=wanted,
                password=password, resume=resume,
                load_identity=lambda: _identity(wanted, rec.by_hash, st, password))
        finally:
            _wipe_if_identity(wanted)  # the context has the key now (or already had it)
    name = host if server_hostname is None else server_hostname
    out = ffi.new("ss_conn **")
    err = new_err()
    host_b = host.encode() if host.isascii() else host.encode("idna")
    rc = lib.ss_connect(ctx.ptr if ctx else ffi.NULL, host_b, int(port),
                        name.encode() if (tls and name) else ffi.NULL, _ms(timeout), out, err)
    if rc != 0:
        raise_err(rc, err)
    return Connection(out[0], tls=tls, mode=mode, end_tag=end_tag, max_message=max_message)


def unbracket(host: str) -> str:
    """An address as users paste it from a URL: "[::1]" is the IPv6 address "::1"."""
    if not isinstance(host, str):
        raise TypeError(f"the address must be a str, not {type(host).__name__}")
    if not (host.startswith("[") and host.endswith("]")):
        return host
    inner = host[1:-1]
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        raise _errors.ArgumentError(
            f'address "{host}": brackets enclose an IPv6 address ("[::1]", '
            f'"[fe80::1%eth0]"); give a host name or an IPv4 address without them') from None
    return inner


def _check_port(port: Any, *, client: bool = False) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    lo = 1 if client else 0
    if not lo <= port <= 65535:
        raise _errors.ArgumentError(f"port {port} is not a valid TCP port ({lo}..65535)",
                                    code=_errors.ErrorCode.PORT)


# ---------------------------------------------------------------------------------------
# Listeners


def _set_ticket_keys(ctx_ptr: Any, keys: bytearray) -> None:
    err = new_err()
    buf = ffi.from_buffer(keys)
    try:
        rc = lib.ss_ctx_set_ticket_keys(ctx_ptr, buf, len(keys) // lib.SS_TICKET_KEY_LEN, err)
    finally:
        del buf
        keys[:] = bytes(len(keys))  # wipe our copy: the C core holds its own
    if rc != 0:
        raise_err(rc, err)


@dataclass(frozen=True)
class ListenerStats:
    accepted: int
    handshakes: int
    failed_tls: int
    failed_io: int
    timed_out: int
    dropped_pending: int
    dropped_ready: int
    taken: int
    pending: int
    ready: int
    last_failure: str
    #: [extension] connections refused for their PROXY header: missing, malformed, too
    #: long, late, or from an address not allowed to send one
    proxy_refused: int = 0


def _proxy_allow(allow: Any) -> bytes:
    """Addresses / networks ("10.0.0.0/8", "::1", "192.0.2.7") as the C core's 17-byte
    entries: the IPv6 address (IPv4 mapped) and the prefix length."""
    if isinstance(allow, str):
        allow = [allow]
    out = bytearray()
    for item in allow:
        if not isinstance(item, str):
            raise TypeError(f"proxy_allow takes addresses or networks as str, not "
                            f"{type(item).__name__}")
        try:
            net = ipaddress.ip_network(unbracket(item.strip()), strict=False)
        except ValueError:
            raise _errors.ArgumentError(
                f"proxy_allow: {item!r} is not an IP address or network (\"10.0.0.0/8\", "
                "\"192.0.2.7\", \"2001:db8::/32\")") from None
        if isinstance(net, ipaddress.IPv4Network):
            out += ipaddress.IPv6Address(f"::ffff:{net.network_address}").packed
            out.append(96 + net.prefixlen)
        else:
            out += net.network_address.packed
            out.append(net.prefixlen)
    return bytes(out)


class Listener:
    """A TLS (or plain TCP, ``tls=False``) server socket with its accept engine.

    C threads accept and complete handshakes in the background; :meth:`wait` and
    :meth:`accept` take finished connections.  ``threads``: how many (default: one per CPU
    this process may use, :func:`~sslsock.available_cpus`, less one left to Python, at
    least one).  ``certificate`` is a
    store identifier (name, thumbprint or file path, as the options say) or a
    :class:`~sslsock.Identity`.

    Under mutual TLS (the SSLClientCertificate option) clients must present a certificate
    that the store's certificates or ``client_ca_pem`` vouch for; the system's authorities
    only with ``client_system_ca=True`` (or the SSLClientSystemCA option).

    Extensions for a server behind a load balancer, or made of several processes (see
    docs/deployment.md):

    * ``proxy_protocol=True``: every connection starts with a PROXY header (v1 or v2, as
      HAProxy's ``send-proxy`` / ``send-proxy-v2`` and nginx's ``proxy_protocol on`` send
      it), read before the handshake within ``handshake_timeout`` and at most
      ``proxy_max_len`` bytes; a connection without a valid one is refused and counted
      (:attr:`ListenerStats.proxy_refused`).  The client it names is the connection's
      ``peer_address``; the proxy stays readable as ``proxy_address``.  ``proxy_allow``
      (addresses or networks) limits who may send the header.
    * ``ticket_keys``: a session-ticket key file (``"store"``: the store's own, made by
      ``sslsock cert tickets rotate``), or the keys as bytes; processes sharing them resume
      each other's sessions.  A rewritten file is picked up by running listeners.
    * certificate renewal: a certificate named in the store (not by thumbprint) is watched
      every ``reload_interval`` seconds (``None``: only by :meth:`reload`, or SIGHUP in
      ``sslsock serve`` and :func:`run_workers`' workers); when the store's file is
      replaced, new handshakes use the new certificate, connections already open keep
      theirs; a replacement that cannot be served is refused with a logged error and the
      old certificate stays.  :meth:`reload` does the same at once.
    """

    def __init__(
        self,
        port: int = 0,
        certificate: Any = None,
        *,
        options: Mask = DEFAULT,
        host: str = "",
        tls: bool = True,
        store: Any = None,
        password: Any = None,
        reuse_address: bool = True,
        reuse_port: bool = False,
        threads: int = 0,
        handshake_timeout: Seconds = 10.0,
        max_pending: int = 0,
        max_ready: int = 0,
        backlog: int = 0,
        client_ca_pem: Optional[bytes] = None,
        client_system_ca: bool = False,
        mode: Mode = Mode.SocketSizeAtBeginning,
        end_tag: bytes = b"<EOF>",
        max_message: int = DEFAULT_MAX_MESSAGE,
        proxy_protocol: bool = False,
        proxy_allow: Any = (),
        proxy_max_len: int = 0,
        ticket_keys: Any = None,
        reload_interval: Optional[float] = 2.0,
    ) -> None:

        _check_port(port)
        host = unbracket(host)
        allow = _proxy_allow(proxy_allow) if proxy_allow else b""
        if allow and not proxy_protocol:
            raise _errors.ArgumentError("proxy_allow lists who may send the PROXY header: "
                                        "it needs proxy_protocol=True")
        self.tls = tls
        self.recipe: Optional[Recipe] = None
        self.certificate: Any = None
        self._tickets = None
        self._renew: Optional[dict[str, Any]] = None
        self._reload_lock = threading.Lock()
        if ticket_keys is not None and ticket_keys is not False:
            if not tls:
                raise _errors.ArgumentError("ticket_keys are for a TLS listener")
            self._tickets = TicketKeys("store" if ticket_keys is True else ticket_keys,
                                       _store(store, password))
        ctx = None
        if tls:
            if certificate is None or certificate == "":
                raise _errors.CertificateError(
                    "a TLS server needs a certificate: pass its name or thumbprint from the "
                    "store (sslsock cert list), or create one with: sslsock cert create NAME")
            rec = recipe(options)
            if client_system_ca:
                rec = recipe(int(rec.mask) | SSLOption.SSLClientSystemCA)
            _warn_dropped(rec, f"listener on port {port}")
            st = _store(store, password)
            watched = isinstance(certificate, str) and not rec.by_hash
            generation = self._generation(st, certificate) if watched else None
            ident = _identity(certificate, rec.by_hash, st, password)
            try:
                ctx = self._context(rec, ident, st, client_ca_pem)
                digest = _tlsconfig._digest(ident.cert_chain_pem)
            finally:
                ident.wipe()
            self.recipe = ctx.recipe
            self.certificate = ident.certificate
            if watched:
                self._renew = dict(rec=rec, certificate=certificate, store=st,
                                   password=password, client_ca_pem=client_ca_pem,
                                   generation=generation, digest=digest, failed=None)
        self._tls = ctx  # shared with listeners of the same configuration while open
        cfg = ffi.new("ss_listener_config *")
        host_c = ffi.new("char[]", host.encode()) if host else ffi.NULL
        cfg.host = host_c
        cfg.port = port
        cfg.reuse_addr = int(reuse_address)
        cfg.reuse_port = int(reuse_port)
        cfg.backlog = backlog
        cfg.threads = threads if threads > 0 else _workers.default_handshake_threads()
        hs_ms = _ms(handshake_timeout, "handshake_timeout")
        cfg.handshake_timeout_ms = hs_ms if hs_ms > 0 else 0
        cfg.max_pending = max_pending
        cfg.max_ready = max_ready
        cfg.proxy_protocol = int(bool(proxy_protocol))
        cfg.proxy_max_len = int(proxy_max_len)
        allow_c = ffi.from_buffer(allow) if allow else ffi.NULL
        cfg.proxy_allow = allow_c
        cfg.proxy_allow_count = len(allow) // 17
        self.proxy_protocol = bool(proxy_protocol)
        out = ffi.new("ss_listener **")
        err = new_err()
        rc = lib.ss_listener_new(ctx.ptr if ctx else ffi.NULL, cfg, out, err)
        if rc != 0:
            raise_err(rc, err)
        self._g = _Guard(ffi.gc(out[0], lib.ss_listener_free), lib.ss_listener_shutdown,
                         "the listener")
        self.port: int = int(lib.ss_listener_port(out[0]))
        self.host = host
        self._conn_args = dict(mode=Mode(mode), end_tag=end_tag, max_message=max_message)
        if self._renew or (self._tickets and self._tickets.path):
            if reload_interval is not None:
                _renewal.watch(self, float(reload_interval))
            else:
                _renewal.register(self)  # SIGHUP in sslsock serve and run_workers

    # -- the TLS context, renewal and ticket keys --------------------------------------

    def _context(self, rec: Recipe, ident: Any, st: Any, client_ca_pem: Optional[bytes]) -> Any:
        ctx = _tlsconfig.server_context(rec, identity=ident, store=st,
                                        client_ca_pem=client_ca_pem, tickets=self._tickets)
        if self._tickets is not None:
            _set_ticket_keys(ctx.ptr, self._tickets.read())
        return ctx

    @staticmethod
    def _generation(st: Any, certificate: str) -> Any:
        try:
            own = os.stat(certificate)
            extra: Any = (own.st_ino, own.st_size, own.st_mtime_ns)
        except OSError:
            extra = None
        return (st.generation(), extra)

    def reload(self, *, quiet_first_failure: bool = False) -> bool:
        """Take a renewed certificate and rewritten ticket keys now (SIGHUP in ``sslsock
        serve``).  Returns whether anything changed.  A certificate or key file that cannot
        be served raises :class:`~sslsock.CertificateError` (or a TLS error) and changes
        nothing: the listener keeps serving what it served."""
        with self._reload_lock:
            if self.closed:
                return False
            changed = False
            r = self._renew
            if self._tickets is not None and self._tickets.changed():
                keys = self._tickets.read()
                assert self._tls is not None
                _set_ticket_keys(self._tls.ptr, keys)
                log.info("listener on port %d: session-ticket keys reloaded from %s",
                         self.port, self._tickets.describe())
                changed = True
            if r is None:
                return changed
            generation = self._generation(r["store"], r["certificate"])
            if generation == r["generation"]:
                return changed
            try:
                ident = _identity(r["certificate"], False, r["store"], r["password"])
                try:
                    digest = _tlsconfig._digest(ident.cert_chain_pem)
                    if digest == r["digest"]:
                        r["generation"] = generation
                        return changed
                    ctx = self._context(r["rec"], ident, r["store"], r["client_ca_pem"])
                finally:
                    ident.wipe()
            except _errors.Error as e:
                if quiet_first_failure and r["failed"] != generation:
                    r["failed"] = generation  # maybe half-written: look again next time
                    return changed
                r["generation"] = generation  # logged once per version of the store
                raise type(e)(f"the renewed certificate \"{r['certificate']}\" cannot be "
                              f"served, so the listener on port {self.port} keeps the one it "
                              f"has ({self.certificate.name}, SHA-1 "
                              f"{self.certificate.certmgr_thumbprint}): {e}") from None
            try:
                with self._g as ptr:
                    lib.ss_listener_set_ctx(ptr, ctx.ptr)
            except _errors.SocketClosed:
                return changed  # closed meanwhile: nothing left to renew
            self._tls = ctx
            self.recipe = ctx.recipe
            self.certificate = ident.certificate
            r.update(generation=generation, digest=digest, failed=None)
            log.info("listener on port %d: now serving the renewed certificate %s (SHA-1 %s, "
                     "valid until %s)", self.port, ident.certificate.name,
                     ident.certificate.certmgr_thumbprint,
                     ident.certificate.not_after.strftime("%Y-%m-%d"))
            return True

    def messages(self, timeout: Seconds = None, *, max_bytes: int = 65536,
                 high_water: int = DEFAULT_HIGH_WATER) -> Iterator[tuple[Connection, bytes]]:
        """One thread serving every client: yields ``(connection, message)`` as messages
        arrive, accepting new clients on the way.  ``message == b""`` means that connection
        has ended (it is closed once the loop body is done with it).  Reply with
        ``connection.write(...)``.  The iteration ends when ``timeout`` passes without any
        message, or when the listener is closed; connections still open then are closed.

        The channels are read, decrypted and deframed in C, and the loop wakes once per
        batch of messages, not once per message.  ``max_bytes`` caps one message of
        ``SocketNoEndTag`` mode.  Replies are queued and sent as each client's socket takes
        them: a ``write`` waits only while more than ``high_water`` bytes are queued for
        that client (a client that does not read).
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise _errors.ArgumentError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return _messages(self, _ms(timeout), max_bytes, high_water)

    @property
    def protocols(self) -> tuple[str, ...]:
        """The versions this listener negotiates, exactly (empty for plain TCP)."""
        return self.recipe.effective if self.recipe else ()

    def wait(self, timeout: Seconds = None) -> bool:
        """True once a client is waiting (its handshake done); False on time-out."""
        ms = _ms(timeout)
        err = new_err()
        with self._g as ptr:
            rc = _sliced(lambda t: lib.ss_listener_wait(ptr, t, err), ms)
        if rc == lib.SS_E_TIMEOUT:
            return False
        check(rc, err)
        return True

    def accept(self, timeout: Seconds = None) -> Connection:
        """Take the next client (waiting at most ``timeout``; 0: do not wait)."""
        ms = _ms(timeout)
        err = new_err()
        out = ffi.new("ss_conn **")
        with self._g as ptr:
            rc = _sliced(lambda t: lib.ss_listener_accept(ptr, t, out, err), ms)
        check(rc, err)
        return Connection(out[0], tls=self.tls, **self._conn_args)  # type: ignore[arg-type]

    def stats(self) -> ListenerStats:
        st = ffi.new("ss_listener_stats *")
        with self._g as ptr:
            lib.ss_listener_get_stats(ptr, st)
        return ListenerStats(st.accepted, st.handshakes, st.failed_tls, st.failed_io,
                             st.timed_out, st.dropped_pending, st.dropped_ready, st.taken,
                             st.pending, st.ready, text(st.last_failure), st.proxy_refused)

    @property
    def closed(self) -> bool:
        return self._g.closed

    def close(self) -> None:
        """Stop accepting, wake waiters, close connections not yet accepted."""
        self._g.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "TLS " + ",".join(self.protocols) if self.tls else "TCP"
        state = "closed" if self.closed else "listening"
        return f"<sslsock.Listener port={self.port} {kind} {state}>"
