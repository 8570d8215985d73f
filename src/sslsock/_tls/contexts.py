"""The TLS configuration of a socket, built once.

One owner for OpenSSL contexts: :func:`client_context` and :func:`server_context` turn what
a socket asks for (role, options recipe, identity, trust) into a C context, and keep it in a
small cache so the next socket asking for the same thing shares it.  Sharing matters twice:
building a verifying context costs tens of milliseconds (trust anchors, key checks), and a
client context carries the sessions its connections resume.

A cache entry is keyed by everything the context is made of.  The certificate store enters
the key through :meth:`CertStore.generation` (file names, sizes, times; nothing is read), so
adding, removing or replacing a certificate gives the next socket a fresh context, and the
stale one is dropped.  Private keys never enter a key: an identity is named by where it
comes from (store, identifier) or by its certificate's digest (its key pair is checked
against the certificate).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sslsock._core.binding import ffi, lib, new_err
from sslsock._core.errors import raise_err
from sslsock._tls.options import Recipe, version_names

log = logging.getLogger("sslsock")

#: Contexts kept at once (each holds its trust store and, for a client, its sessions).
CACHE_SIZE = 32


@dataclass(frozen=True)
class TLSContext:
    """A built context and the recipe it really negotiates (see :func:`server_context`:
    a weak certificate can remove versions)."""

    ptr: Any
    recipe: Recipe


class _Cache:
    """Least recently used contexts, by configuration; each configuration keeps one
    context, replaced when its generation (the store's state) changes.  A ``weak`` entry
    lives only while a socket holds its context: a server's private key does not stay in
    memory after its last listener closes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Hashable, Callable[[], Optional[TLSContext]]]]
        self._entries = OrderedDict()

    def get(self, key: Hashable, generation: Hashable, build: Callable[[], TLSContext], *,
            weak: bool = False) -> TLSContext:
        with self._lock:
            hit = self._entries.get(key)
            found = hit[1]() if hit is not None and hit[0] == generation else None
            if found is not None:
                self._entries.move_to_end(key)
                return found
        ctx = build()  # outside the lock: building can take tens of milliseconds
        ref: Callable[[], Optional[TLSContext]] = weakref.ref(ctx) if weak else (lambda: ctx)
        with self._lock:
            self._entries[key] = (generation, ref)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return ctx

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _, ref in self._entries.values() if ref() is not None)


_cache = _Cache(CACHE_SIZE)


def clear_cache() -> None:
    """Forget every cached context (sockets already open keep theirs)."""
    _cache.clear()


def cache_size() -> int:
    return len(_cache)


def _digest(data: Optional[bytes]) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def _build(
    is_server: bool,
    rec: Recipe,
    *,
    cert_pem: bytes = b"",
    key_pem: Optional[bytearray] = None,
    verify: bool,
    ca_pem: bytes = b"",
    use_system_ca: bool,
    resume: bool = True,
) -> TLSContext:
    cfg = ffi.new("ss_ctx_config *")
    keep = []  # the char buffers must outlive ss_ctx_new
    cfg.is_server = int(is_server)
    cfg.versions = rec.version_bits
    cfg.security_level = rec.security_level
    cfg.legacy_security_level = rec.legacy_security_level
    cipher = ffi.new("char[]", rec.cipher_list.encode())
    keep.append(cipher)
    cfg.cipher_list = cipher
    cfg.ciphersuites = ffi.NULL
    if rec.legacy_cipher_list:
        legacy = ffi.new("char[]", rec.legacy_cipher_list.encode())
        keep.append(legacy)
        cfg.legacy_cipher_list = legacy
    if cert_pem:
        cfg.cert_pem = ffi.from_buffer(cert_pem)
        cfg.cert_pem_len = len(cert_pem)
    key_buf = None
    if key_pem:
        key_buf = ffi.from_buffer(key_pem)
        cfg.key_pem = key_buf
        cfg.key_pem_len = len(key_pem)
    if ca_pem:
        cfg.ca_pem = ffi.from_buffer(ca_pem)
        cfg.ca_pem_len = len(ca_pem)
    cfg.verify_peer = int(verify)
    cfg.use_system_ca = int(use_system_ca and verify)
    cfg.no_resumption = int(not resume)
    out = ffi.new("ss_ctx **")
    err = new_err()
    rc = lib.ss_ctx_new(cfg, out, err)
    del key_buf, keep
    if rc != 0:
        raise_err(rc, err)
    ptr = ffi.gc(out[0], lib.ss_ctx_free)
    return TLSContext(ptr, _served(rec, ptr) if is_server else rec)


def _served(rec: Recipe, ptr: Any) -> Recipe:
    """The recipe narrowed to the versions the server's certificate can serve."""
    served = int(lib.ss_ctx_versions(ptr))
    if served == rec.version_bits:
        return rec
    bits = int(lib.ss_ctx_cert_security_bits(ptr))
    gone = version_names(rec.version_bits & ~served)
    why = (f"the certificate gives {bits} bits of security, below what security level "
           f"{rec.security_level} requires on TLS 1.2 and later: use an RSA key of 2048 bits "
           "or more, or an EC key")
    narrowed = dataclasses.replace(
        rec,
        effective=tuple(v for v in rec.effective if v not in gone),
        dropped={**rec.dropped, **{v: why for v in gone}},
        version_bits=served,
    )
    log.warning("server certificate too weak for %s: serving only %s (%s)", ", ".join(gone),
                ", ".join(narrowed.effective), why)
    return narrowed


def client_context(
    rec: Recipe,
    *,
    verify: bool,
    store: Any,
    cafile_pem: Optional[bytes],
    client_certificate: Any,
    password: Any,
    resume: bool,
    load_identity: Callable[[], Any],
) -> TLSContext:
    """The context for a client: verifying servers against the system's authorities, the
    store's certificates and ``cafile_pem``; presenting ``client_certificate`` if given."""
    from sslsock._certs.store import Identity

    generation = store.generation() if (verify or client_certificate) else ()
    ident_key: Hashable = None
    if isinstance(client_certificate, Identity):
        ident_key = ("object", _digest(client_certificate.cert_chain_pem))
    elif client_certificate:
        ident_key = ("store", str(client_certificate), password is not None)
    key = ("client", rec.mask, verify, str(store.path), _digest(cafile_pem), ident_key, resume)

    def build() -> TLSContext:
        ca = store.trust_pem() if verify else b""
        if cafile_pem:
            ca += cafile_pem
        ident = load_identity() if client_certificate else None
        try:
            return _build(False, rec, cert_pem=ident.cert_chain_pem if ident else b"",
                          key_pem=ident.key_pem if ident else None, verify=verify, ca_pem=ca,
                          use_system_ca=True, resume=resume)
        finally:
            if ident is not None:
                ident.wipe()

    return _cache.get(key, generation, build)


def server_context(
    rec: Recipe,
    *,
    identity: Any,
    store: Any,
    client_ca_pem: Optional[bytes],
    tickets: Any = None,
) -> TLSContext:
    """The context for a server presenting ``identity`` (already loaded: a server always
    checks its certificate afresh).  Under mutual TLS, clients are verified against the
    store's certificates and ``client_ca_pem`` only; the system's authorities too only when
    the recipe says so (SSLClientSystemCA).  Shared by the listeners open at the same time
    with the same configuration, and only while one is open: the caller keeps it."""
    generation = store.generation() if rec.client_certificate else ()
    # The key pair is checked against the certificate, so the certificate names it.
    # Listeners with shared ticket keys (``tickets``: a :class:`_tickets.TicketKeys`, set on
    # the context by the caller) do not share a context with listeners without them.
    key = ("server", rec.mask, _digest(identity.cert_chain_pem), str(store.path),
           _digest(client_ca_pem), tickets.describe() if tickets is not None else None)

    def build() -> TLSContext:
        ca = b""
        if rec.client_certificate:
            ca = store.trust_pem() + (client_ca_pem or b"")
        return _build(True, rec, cert_pem=identity.cert_chain_pem, key_pem=identity.key_pem,
                      verify=rec.client_certificate, ca_pem=ca,
                      use_system_ca=rec.client_system_ca)

    return _cache.get(key, generation, build, weak=True)
