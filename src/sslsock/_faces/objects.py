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

from sslsock._certs.store import CertStore, Identity, _chain_pem, crl_file_pem
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
    checked_end_tag,
    checked_max_message,
    checked_mode,
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
    alpn: Any = (),
    require_ocsp: bool = False,
    ca: Optional[str] = None,
    system_ca: bool = False,
    check_hostname: bool = True,
) -> Connection:
    """Connect to ``host:port`` (empty host: this machine), with TLS unless ``tls=False``.

    The server's certificate is verified against the system's authorities and the
    certificates of the store, and must match ``server_hostname`` (default: ``host``, or
    ``localhost`` for an empty host).  Given a CA, ``ca`` (a store entry: name, thumbprint
    or file) or ``cafile_pem`` (PEM bytes), the connection trusts that CA alone: not the
    system's authorities (unless ``system_ca=True``), not the store's other certificates.
    ``check_hostname=False`` accepts a certificate for any name (the chain is still
    verified); ``server_hostname=""`` is refused, as it would say that silently.
    ``verify=False`` (or the SSLNoVerify option) turns verification off for this
    connection.  A reconnection to the same server with the same settings resumes the
    previous TLS session (``resume=False``: always a full handshake); :attr:`Connection.resumed`
    tells.

    ``alpn``: application protocols to offer, most preferred first (``["h2",
    "http/1.1"]``); :attr:`Connection.alpn` is the one the server chose.  ``require_ocsp``:
    the server must staple an OCSP response, signed by its certificate's issuer (or a
    responder it delegated), current, saying the certificate is good; otherwise the
    handshake fails.  With ``$SSLKEYLOGFILE`` set, the TLS secrets are appended to that
    file (docs/tls-versions.md, "Key log").
    """
    _check_port(port, client=True)
    protocols = alpn_protocols(alpn)
    if (protocols or require_ocsp) and not tls:
        raise _errors.ArgumentError("alpn and require_ocsp are TLS features: drop them or "
                                    "connect with tls=True")
    host = unbracket(host) or "localhost"
    if server_hostname == "" and tls:
        raise _errors.ArgumentError(
            'server_hostname="" would turn the check of the server\'s name off while its '
            "chain is still verified: give the name the certificate must carry, or pass "
            "check_hostname=False to accept a certificate for any name on purpose")
    if system_ca and ca is None and cafile_pem is None:
        raise _errors.ArgumentError(
            "system_ca=True adds the system's authorities to a CA given with ca= or "
            "cafile_pem=; without one they are trusted already")
    ctx = None
    if tls:
        rec = recipe(options)
        _warn_dropped(rec, f"connection to {host}:{port}")
        if verify is None:
            verify = not rec.no_verify
        st = _store(store, password)
        wanted = client_certificate if client_certificate != "" else None
        pinned = ca is not None or cafile_pem is not None
        anchors = cafile_pem
        if ca is not None:
            anchors = _ca_pem(st, ca, rec.by_hash) + (cafile_pem or b"")
        try:
            ctx = _tlsconfig.client_context(
                rec, verify=verify, store=st, cafile_pem=anchors, client_certificate=wanted,
                password=password, resume=resume,
                load_identity=lambda: _identity(wanted, rec.by_hash, st, password),
                pinned=pinned, system_ca=system_ca,
                ext=_tlsconfig.Extensions(alpn=protocols, keylog=_tlsconfig.keylog_path(),
                                          ocsp_required=bool(require_ocsp)))
        finally:
            _wipe_if_identity(wanted)  # the context has the key now (or already had it)
    name = host if server_hostname is None else server_hostname
    if not check_hostname:
        name = ""
    out = ffi.new("ss_conn **")
    err = new_err()
    host_b = host.encode() if host.isascii() else host.encode("idna")
    rc = lib.ss_connect(ctx.ptr if ctx else ffi.NULL, host_b, int(port),
                        name.encode() if (tls and name) else ffi.NULL, _ms(timeout), out, err)
    if rc != 0:
        raise_err(rc, err)
    return Connection(out[0], tls=tls, mode=mode, end_tag=end_tag, max_message=max_message)


def alpn_protocols(alpn: Any) -> tuple[str, ...]:
    """Check an ALPN protocol list (names as in IANA's registry: "h2", "http/1.1", or a
    private id)."""
    if alpn is None:
        return ()
    if isinstance(alpn, (str, bytes)):
        raise _errors.ArgumentError(
            f"alpn takes a list of protocol names, most preferred first (alpn=[{alpn!r}]), "
            "not one string")
    names = []
    for name in alpn:
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if not isinstance(name, str) or not name or len(name.encode()) > 255:
            raise _errors.ArgumentError(
                f"ALPN protocol {name!r}: each must be a non-empty str of at most 255 bytes "
                "(\"h2\", \"http/1.1\")")
        if name in names:
            raise _errors.ArgumentError(f"ALPN protocol {name!r} is given twice")
        names.append(name)
    if sum(len(n.encode()) + 1 for n in names) > 65535:
        raise _errors.ArgumentError("the ALPN protocol list is longer than 65,535 bytes")
    return tuple(names)


def _ca_pem(st: Any, ca: str, by_hash: bool) -> bytes:
    """The certificates of the store entry (or file) ``ca``, as trust anchors."""
    if not isinstance(ca, str) or not ca.strip():
        raise _errors.ArgumentError(
            "ca names the CA to trust: a store entry's name or thumbprint, or a PEM file")
    return _chain_pem(st.find(ca, "hash" if by_hash else "name"))


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


def sni_names(certificates: Any) -> dict[str, Any]:
    """Check a mapping of server names to certificate identifiers; the names come back as
    the C core compares them (lower case, IDNA for international names, no final dot)."""
    if not certificates:
        return {}
    if not hasattr(certificates, "items"):
        raise _errors.ArgumentError(
            "certificates maps server names to certificates: {\"api.example.com\": \"api\", "
            f"\"*.example.org\": \"org\"}}, not {type(certificates).__name__}")
    out: dict[str, Any] = {}
    for name, cid in certificates.items():
        if not isinstance(name, str) or not name.strip():
            raise _errors.ArgumentError(f"server name {name!r}: give a host name as a str")
        wild = name.startswith("*.")
        host = name[2:] if wild else name
        host = host.strip().rstrip(".").lower()
        try:
            host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError:
            host = ""
        labels = host.split(".")
        if (not host or len(host) > 250 or "*" in host
                or any(not lab or len(lab) > 63 or not all(c.isalnum() or c in "-_" for c in lab)
                       for lab in labels)):
            raise _errors.ArgumentError(
                f"server name {name!r} is not a host name (\"api.example.com\") or a wildcard "
                "of one label (\"*.example.com\")")
        key = ("*." if wild else "") + host
        if key in out:
            raise _errors.ArgumentError(f"server name {name!r} is given twice")
        if (not isinstance(cid, str) or not cid) and not isinstance(cid, Identity):
            raise TypeError(f"the certificate for {name!r} must be a store identifier "
                            f"(str) or an Identity, not {type(cid).__name__}")
        out[key] = cid
    return out


def ocsp_path(entry: Any) -> Any:
    """Where the OCSP response of a certificate file is kept: beside it, as NAME.ocsp (DER,
    as ``openssl ocsp -respout`` writes it)."""
    path = getattr(entry, "path", None)
    return path.with_suffix(".ocsp") if path is not None else None


def _staple(ctx: Any, entry: Any) -> str:
    """Give a server context the OCSP response kept beside its certificate (or none);
    returns the response's digest."""
    path = ocsp_path(entry)
    try:
        der = path.read_bytes() if path is not None else b""
    except FileNotFoundError:
        der = b""
    except OSError as e:
        raise _errors.CertificateError(f"cannot read the OCSP response {path}: "
                                       f"{e.strerror}") from None
    err = new_err()
    rc = lib.ss_ctx_set_ocsp_response(ctx.ptr, der, len(der), err)
    if rc != 0:
        raise _errors.CertificateError(
            f"{path}: {text(err.message)}; fetch a fresh one with: openssl ocsp -issuer "
            f"CA.pem -cert {entry.path} -url URL -respout {path}") from None
    return _tlsconfig._digest(der)


def _crl_source(crl: Any, rec: Recipe) -> Any:
    """Check where the revocation lists come from: PEM bytes, a file, or "store"."""
    if crl is None:
        return None
    if not rec.client_certificate:
        raise _errors.ArgumentError(
            "crl lists revoked client certificates: it needs mutual TLS (the "
            "SSLClientCertificate option)")
    if isinstance(crl, (bytes, bytearray)):
        return bytes(crl)
    if isinstance(crl, os.PathLike):
        crl = os.fspath(crl)
    if not isinstance(crl, str) or not crl:
        raise TypeError(f"crl must be PEM bytes, a file path or \"store\", not {crl!r}")
    return crl


def _read_crl(source: Any, st: Any) -> bytes:
    """The revocation lists as PEM (a DER file converted)."""
    if isinstance(source, bytes):
        return source
    if source == "store":
        pem = st.crl_pem()
        if not pem:
            raise _errors.CertificateError(
                f"crl=\"store\": the store {st.path} holds no revocation list (*.crl); add "
                "one with: cp ca.crl " + str(st.path) + "/")
        return pem  # type: ignore[no-any-return]
    return crl_file_pem(source)


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


def _framing(mode: Any, end_tag: Any, max_message: Any) -> tuple[Mode, bytes, int]:
    """A listener's transmission mode, end tag and message limit, checked as a
    connection's setters check them (the accept engine takes them as they are)."""
    return checked_mode(mode), checked_end_tag(end_tag), checked_max_message(max_message)


#: ``proxy_allow`` value that lets any sender give a PROXY header: only when nothing but
#: the balancer can reach the port (a firewall, a private network, a Unix-socket relay).
PROXY_ANY = "any"


def _proxy_allow(allow: Any) -> bytes:
    """Addresses / networks ("10.0.0.0/8", "::1", "192.0.2.7") as the C core's 17-byte
    entries: the IPv6 address (IPv4 mapped) and the prefix length.  ``"any"`` (alone) is
    no entry at all: every sender may give a header."""
    if isinstance(allow, str):
        allow = [allow]
    allow = list(allow)
    if any(isinstance(a, str) and a.strip().lower() == PROXY_ANY for a in allow):
        if len(allow) != 1:
            raise _errors.ArgumentError(
                'proxy_allow: "any" lets every sender give a PROXY header, so it cannot be '
                "combined with addresses; give either the balancers' addresses or \"any\"")
        return b""
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


def _proxy_allow_checked(proxy_protocol: bool, proxy_allow: Any) -> bytes:
    """The C core's allow list for a listener: PROXY needs one, and only PROXY takes one."""
    if proxy_allow and not proxy_protocol:
        raise _errors.ArgumentError("proxy_allow lists who may send the PROXY header: "
                                    "it needs proxy_protocol=True")
    if proxy_protocol and not proxy_allow:
        raise _errors.ArgumentError(
            "proxy_protocol=True lets the sender of the PROXY header name any client "
            "address: say who may send it, proxy_allow=[\"10.0.0.5\"] (the load "
            "balancers' addresses or networks), or proxy_allow=\"any\" only when nothing "
            "but the balancer can reach this port (in the named functions: "
            "Socket.ProxyAllow)")
    return _proxy_allow(proxy_allow) if proxy_allow else b""


class Listener:
    """A TLS (or plain TCP, ``tls=False``) server socket with its accept engine.

    C threads accept and complete handshakes in the background; :meth:`wait` and
    :meth:`accept` take finished connections.  ``threads``: how many (default: one per CPU
    this process may use, :func:`~sslsock.available_cpus`, less one left to Python, at
    least one).  ``certificate`` is a
    store identifier (name, thumbprint or file path, as the options say) or a
    :class:`~sslsock.Identity`.

    Under mutual TLS (the SSLClientCertificate option) clients must present a certificate
    that a client CA vouches for: the store's entries marked as client CAs (``sslsock cert
    import --client-ca``) or ``client_ca_pem``; the system's authorities only with
    ``client_system_ca=True`` (or the SSLClientSystemCA option).  The chain must reach a
    self-signed CA, unless ``client_partial_chain=True`` lets an intermediate of
    ``client_ca_pem`` or of a client-CA entry be enough on its own.  Removing a client CA
    from the store reaches running listeners like a renewal does.

    Extensions for a server behind a load balancer, or made of several processes (see
    docs/deployment.md):

    * ``proxy_protocol=True``: every connection starts with a PROXY header (v1 or v2, as
      HAProxy's ``send-proxy`` / ``send-proxy-v2`` and nginx's ``proxy_protocol on`` send
      it), read before the handshake within ``handshake_timeout`` and at most
      ``proxy_max_len`` bytes; a connection without a valid one is refused and counted
      (:attr:`ListenerStats.proxy_refused`).  The client it names is the connection's
      ``peer_address``; the proxy stays readable as ``proxy_address``.  ``proxy_allow`` is
      required with it: the addresses or networks of the balancers allowed to send the
      header (others are refused), or ``"any"``, only when nothing but the balancer can
      reach this port (anyone else who can would name any client address they like).
    * ``ticket_keys``: a session-ticket key file (``"store"``: the store's own, made by
      ``sslsock cert tickets rotate``), the keys as bytes, or a
      ``sslsock._deploy.tickets.Ratchet`` (keys rotating in memory, shared by the processes
      forked after it is made); processes sharing them resume each other's sessions.  A
      rewritten file is picked up by running listeners, and rotated once it is
      ``ticket_rotation`` seconds old (default an hour; ``None``: never, for a file rotated
      elsewhere and copied to several hosts).  A file that breaks is reported once per
      version, and the listener keeps its keys.
    * certificate renewal: a certificate named in the store (not by thumbprint) is watched
      every ``reload_interval`` seconds (``None``: only by :meth:`reload`, or SIGHUP in
      ``sslsock serve`` and :func:`run_workers`' workers); when the store's file is
      replaced, new handshakes use the new certificate, connections already open keep
      theirs; a replacement that cannot be served is refused with a logged error and the
      old certificate stays.  :meth:`reload` does the same at once.

    Extensions for a server in front of the world (docs/certificates.md, docs/tls-versions.md):

    * ``certificates``: more certificates on the same port, chosen by the name the client
      asks for (SNI): ``{"api.example.com": "api", "*.files.example.com": "files"}``, names
      (a ``*.`` wildcard covers one label) to store identifiers.  ``certificate`` serves
      every other name and clients that send none.  :attr:`Connection.server_name` is the
      name asked for.  Each is renewed as ``certificate`` is.
    * ``alpn``: the application protocols this server speaks, preferred first (``["h2",
      "http/1.1"]``); ``alpn_required=True`` refuses a client that offers none of them
      (RFC 7301's no_application_protocol alert).  :attr:`Connection.alpn` tells.
    * ``crl``: certificate revocation lists for the client certificates of mutual TLS: PEM
      bytes, a file (PEM or DER), or ``"store"`` (every ``*.crl`` file of the store).  A
      revoked client is refused while its CA stays trusted; the CA of every client
      certificate needs a list.  A rewritten file is picked up as a renewed certificate is.
    * OCSP stapling: when a file ``NAME.ocsp`` (a DER OCSP response, as ``openssl ocsp
      -respout`` writes it) lies beside a certificate's file, it is stapled for the clients
      that ask; a rewritten response is taken as a renewed certificate is.
    * with ``$SSLKEYLOGFILE`` set, the TLS secrets are appended to that file.
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
        client_partial_chain: bool = False,
        mode: Mode = Mode.SocketSizeAtBeginning,
        end_tag: bytes = b"<EOF>",
        max_message: int = DEFAULT_MAX_MESSAGE,
        proxy_protocol: bool = False,
        proxy_allow: Any = (),
        proxy_max_len: int = 0,
        ticket_keys: Any = None,
        reload_interval: Optional[float] = 2.0,
        ticket_rotation: Optional[float] = 3600.0,
        certificates: Any = None,
        alpn: Any = (),
        alpn_required: bool = False,
        crl: Any = None,
    ) -> None:

        _check_port(port)
        host = unbracket(host)
        mode, end_tag, max_message = _framing(mode, end_tag, max_message)
        allow = _proxy_allow_checked(proxy_protocol, proxy_allow)
        if not tls and (alpn or alpn_required or certificates or crl is not None):
            raise _errors.ArgumentError("certificates, alpn, alpn_required and crl are TLS "
                                        "features: drop them or listen with tls=True")
        self.tls = tls
        self.recipe: Optional[Recipe] = None
        self.certificate: Any = None
        self._tickets = None
        self._renew: Optional[dict[str, Any]] = None
        self._reload_lock = threading.Lock()
        self._client_partial_chain = bool(client_partial_chain)
        if ticket_keys is not None and ticket_keys is not False:
            if not tls:
                raise _errors.ArgumentError("ticket_keys are for a TLS listener")
            self._tickets = TicketKeys("store" if ticket_keys is True else ticket_keys,
                                       _store(store, password), rotation=ticket_rotation)
        self._tls = None  # shared with listeners of the same configuration while open
        if tls:
            self._tls = self._tls_setup(
                port, certificate, options, _store(store, password), password, client_ca_pem,
                client_system_ca, certificates=certificates, alpn=alpn,
                alpn_required=alpn_required, crl=crl)
        self.proxy_protocol = bool(proxy_protocol)
        #: who may send the PROXY header: addresses/networks, ("any",), or () without PROXY
        self.proxy_allow: tuple[str, ...] = (
            () if not proxy_protocol else
            ((proxy_allow,) if isinstance(proxy_allow, str) else tuple(proxy_allow)))
        self._start(host, port, allow, reuse_address=reuse_address, reuse_port=reuse_port,
                    backlog=backlog, threads=threads, handshake_timeout=handshake_timeout,
                    max_pending=max_pending, max_ready=max_ready, proxy_max_len=proxy_max_len)
        self._conn_args = dict(mode=mode, end_tag=end_tag, max_message=max_message)
        if self._renew or (self._tickets and (self._tickets.path or self._tickets.ratchet)):
            if reload_interval is not None:
                _renewal.watch(self, float(reload_interval))
            else:
                _renewal.register(self)  # SIGHUP in sslsock serve and run_workers

    def _tls_setup(self, port: int, certificate: Any, options: Mask, st: Any, password: Any,
                   client_ca_pem: Optional[bytes], client_system_ca: bool, *,
                   certificates: Any, alpn: Any, alpn_required: bool, crl: Any) -> Any:
        """Check the TLS settings, load the certificates and build the context; remember
        what renewal watches.  Returns the context."""
        if certificate is None or certificate == "":
            raise _errors.CertificateError(
                "a TLS server needs a certificate: pass its name or thumbprint from the "
                "store (sslsock cert list), or create one with: sslsock cert create NAME")
        rec = recipe(options)
        if client_system_ca:
            rec = recipe(int(rec.mask) | SSLOption.SSLClientSystemCA)
        _warn_dropped(rec, f"listener on port {port}")
        by_name = sni_names(certificates)
        crl_source = _crl_source(crl, rec)
        ext = dict(alpn=alpn_protocols(alpn), alpn_required=bool(alpn_required),
                   keylog=_tlsconfig.keylog_path())
        if alpn_required and not ext["alpn"]:
            raise _errors.ArgumentError("alpn_required=True needs the protocols this "
                                        "server speaks: alpn=[\"h2\", \"http/1.1\"]")
        if rec.client_certificate and not (rec.client_system_ca or client_ca_pem
                                           or st.client_ca_pem()):
            raise _errors.CertificateError(
                "mutual TLS (SSLClientCertificate) needs a CA that vouches for clients, "
                f"and the certificate store {st.path} has none marked as a client CA: "
                "import it with `sslsock cert import CA.pem --client-ca`, or give the "
                "listener client_ca_pem (serve --client-ca FILE); SSLClientSystemCA "
                "(client_system_ca=True) lets in whatever the system's authorities "
                "vouch for")
        # a certificate named in the store is renewed; by thumbprint it cannot change,
        # but the trust of a listener that requires client certificates can
        watched = (isinstance(certificate, str)
                   and (not rec.by_hash or rec.client_certificate)
                   and all(isinstance(c, str) for c in by_name.values()))
        renew = dict(rec=rec, certificate=certificate, store=st, password=password,
                     client_ca_pem=client_ca_pem, by_name=by_name, crl=crl_source,
                     ext=ext, generation=None, digest=None, failed=None,
                     trust=self._trust(rec, st, client_ca_pem))
        generation = self._state(renew) if watched else None
        ctx, cert, digest = self._load(renew, rec.by_hash)
        self.recipe = ctx.recipe
        self.certificate = cert
        renew.update(generation=generation, digest=digest)
        self._renew = renew if watched else None
        return ctx

    def _start(self, host: str, port: int, allow: bytes, *, reuse_address: bool,
               reuse_port: bool, backlog: int, threads: int, handshake_timeout: Seconds,
               max_pending: int, max_ready: int, proxy_max_len: int) -> None:
        """Open the listening socket and start the accept engine."""
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
        cfg.proxy_protocol = int(self.proxy_protocol)
        cfg.proxy_max_len = int(proxy_max_len)
        allow_c = ffi.from_buffer(allow) if allow else ffi.NULL
        cfg.proxy_allow = allow_c
        cfg.proxy_allow_count = len(allow) // lib.SS_PROXY_ALLOW_ENTRY
        out = ffi.new("ss_listener **")
        err = new_err()
        ctx = self._tls
        rc = lib.ss_listener_new(ctx.ptr if ctx else ffi.NULL, cfg, out, err)
        if rc != 0:
            raise_err(rc, err)
        self._g = _Guard(ffi.gc(out[0], lib.ss_listener_free), lib.ss_listener_shutdown,
                         "the listener")
        self.port: int = int(lib.ss_listener_port(out[0]))
        self.host = host

    # -- the TLS context, renewal and ticket keys --------------------------------------

    def _load(self, r: dict[str, Any], by_hash: bool) -> tuple[Any, Any, Any]:
        """Read the certificates (and revocation lists) ``r`` names and build the context:
        (context, the default certificate, what they are made of: their digests)."""
        rec, st, password = r["rec"], r["store"], r["password"]
        crl_pem = _read_crl(r["crl"], st) if r["crl"] is not None else b""
        ext = _tlsconfig.Extensions(crl_pem=crl_pem, **r["ext"])
        by_name: dict[str, Any] = r["by_name"]
        sni = []
        built: dict[Any, tuple[str, Any]] = {}
        staples: list[tuple[Any, Any]] = []  # (context, its certificate's entry)
        for name, cid in sorted(by_name.items()):
            key = cid if isinstance(cid, str) else id(cid)
            if key not in built:
                sub_ident = _identity(cid, by_hash, st, password)
                try:
                    built[key] = (_tlsconfig._digest(sub_ident.cert_chain_pem),
                                  _tlsconfig.server_context(
                                      rec, identity=sub_ident, store=st,
                                      client_ca_pem=r["client_ca_pem"], ext=ext,
                                      client_partial_chain=self._client_partial_chain))
                    staples.append((built[key][1], sub_ident.certificate))
                finally:
                    sub_ident.wipe()
            sni.append((name, *built[key]))
        ident = _identity(r["certificate"], by_hash, st, password)
        try:
            ctx = _tlsconfig.server_context(rec, identity=ident, store=st,
                                            client_ca_pem=r["client_ca_pem"],
                                            tickets=self._tickets, ext=ext, sni=sni or None,
                                            client_partial_chain=self._client_partial_chain)
            staples.append((ctx, ident.certificate))
            responses = tuple(_staple(c, entry) for c, entry in staples)
            r["ocsp_paths"] = [ocsp_path(entry) for _, entry in staples]
            digest = (_tlsconfig._digest(ident.cert_chain_pem),
                      tuple((n, d) for n, d, _ in sni), _tlsconfig._digest(crl_pem), responses)
        finally:
            ident.wipe()
        if self._tickets is not None:
            try:
                keys = self._tickets.read()
            except _errors.CertificateError:
                keys = self._tickets.last_good()
                if not keys:
                    raise  # a listener being created: its key file must be usable
                # a renewal: the certificate goes on, with the keys the listener has
            _set_ticket_keys(ctx.ptr, keys)
        return ctx, ident.certificate, digest

    def _reload_tickets(self) -> bool:
        """The ticket-key step of :meth:`reload`: a scheduled rotation if one is due, then
        the keys of a rewritten file (or the ratchet's next ones).  A file that cannot be
        used is logged once per version of it; the listener keeps its keys, and the
        certificate step runs all the same."""
        tickets = self._tickets
        assert tickets is not None and self._tls is not None
        try:
            tickets.tick()
        except _errors.CertificateError as e:
            log.error("listener on port %d: %s; the current keys stay", self.port, e)
        if not tickets.changed():
            return False
        version = tickets.version()
        if tickets.failed is not None and tickets.failed == version:
            return False  # said already, for this version of the file
        try:
            keys = tickets.read()
        except _errors.CertificateError as e:
            tickets.failed = version
            log.error("listener on port %d: the session-ticket keys were not reloaded, the "
                      "previous ones stay: %s", self.port, e)
            return False
        _set_ticket_keys(self._tls.ptr, keys)
        log.info("listener on port %d: session-ticket keys reloaded from %s",
                 self.port, tickets.describe())
        return True

    @staticmethod
    def _trust(rec: Recipe, st: Any, client_ca_pem: Optional[bytes]) -> Optional[str]:
        """What vouches for clients (a digest), for a listener that requires client
        certificates: a client CA removed from the store must stop letting clients in."""
        if not rec.client_certificate:
            return None
        return _tlsconfig._digest(st.client_ca_pem() + (client_ca_pem or b""))

    @staticmethod
    def _state(r: dict[str, Any]) -> Any:
        """What renewal looks at: the store, and the files named outside it."""
        def stat(path: Any) -> Any:
            try:
                own = os.stat(path)
                return (own.st_ino, own.st_size, own.st_mtime_ns)
            except (OSError, TypeError, ValueError):
                return None
        crl = r["crl"]
        return (r["store"].generation(), stat(r["certificate"]),
                tuple(stat(c) for c in r["by_name"].values()),
                stat(crl) if isinstance(crl, str) and crl != "store" else None,
                r["store"].crl_generation() if crl == "store" else None,
                tuple(stat(p) for p in r.get("ocsp_paths", ())))

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
            if self._tickets is not None:
                changed = self._reload_tickets()
            if r is None:
                return changed
            generation = self._state(r)
            if generation == r["generation"]:
                return changed
            try:
                trust = self._trust(r["rec"], r["store"], r["client_ca_pem"])
                ctx, cert, digest = self._load(r, r["rec"].by_hash)
                if digest == r["digest"] and trust == r["trust"]:
                    r["generation"] = generation
                    return changed
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
            self.certificate = cert
            renewed = digest != r["digest"]
            r.update(generation=generation, digest=digest, failed=None, trust=trust)
            if not renewed:
                log.info("listener on port %d: the client CAs changed; new handshakes are "
                         "verified against them", self.port)
                return True
            log.info("listener on port %d: now serving the renewed certificate %s (SHA-1 %s, "
                     "valid until %s)%s", self.port, cert.name, cert.certmgr_thumbprint,
                     cert.not_after.strftime("%Y-%m-%d"),
                     f" and {len(r['by_name'])} by name" if r["by_name"] else "")
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
