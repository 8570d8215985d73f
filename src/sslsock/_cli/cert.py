"""``sslsock cert ...``: the certificate store from the command line, what certmgr.msc is
on Windows.  Every command works on :class:`~sslsock._certs.store.CertStore`; this module only
parses, asks for passwords and prints.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from sslsock._cli.common import (
    EXIT_OK,
    UsageError,
    err,
    lookup_kind,
    store_of,
)
from sslsock._core import errors as _errors

PASSWORD_ENV = "SSLSOCK_CERT_PASSWORD"

CERT_EPILOG_EXTRA = """\

Certificate IDs are taken as SocketCreateSSL takes them: a name (subject common
name, PKCS#12 friendly name or file name in the store; or a path to a certificate
file), or a thumbprint: SHA-1 as certmgr.msc and `sslsock cert list` show it
("9d a4 84 ...", spaces and case ignored) or SHA-256.  An ID of 40 or 64 hex
digits is looked up as a thumbprint; --hash / --name force either reading."""


# ---------------------------------------------------------------------------------------
# Describing a certificate


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _key_mode(entry: Any) -> Optional[str]:
    key_file = entry.key_file
    if key_file is None:
        return None
    try:
        return f"{stat.S_IMODE(key_file.stat().st_mode):04o}"
    except OSError:
        return None


def _key_type(public: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(public, dsa.DSAPublicKey):
        return f"DSA {public.key_size}"
    return type(public).__name__


def _hosts(certificate: Any) -> list[str]:
    from cryptography import x509

    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]


def describe(entry: Any) -> dict[str, Any]:
    """A stored certificate as plain data (the --json form)."""
    cert = entry.certificate
    return {
        "name": entry.name,
        "file": str(entry.path),
        "key_file": str(entry.key_file) if entry.key_file else None,
        "has_key": entry.has_key,
        "key_mode": _key_mode(entry),
        "key_world_readable": entry.key_world_readable,
        "subject": entry.subject,
        "common_name": entry.common_name,
        "friendly_name": entry.friendly_name,
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.issuer == cert.subject,
        "serial": f"{cert.serial_number:x}",
        "hosts": _hosts(cert),
        "key_type": _key_type(cert.public_key()),
        "sha1": entry.certmgr_thumbprint,
        "sha1_hex": entry.sha1.lower(),
        "sha256": entry.sha256.lower(),
        "not_before": entry.not_before.isoformat(),
        "not_after": entry.not_after.isoformat(),
        "expired": entry.expired,
        "not_yet_valid": entry.not_yet_valid,
        "chain": [c.subject.rfc4514_string() for c in entry.chain],
    }


def _validity_flag(entry: Any) -> str:
    if entry.expired:
        return "EXPIRED"
    if entry.not_yet_valid:
        return "NOT YET VALID"
    return ""


def _key_column(entry: Any) -> str:
    if not entry.has_key:
        return "no"
    if entry.key_world_readable:
        return f"yes, READABLE BY OTHERS ({_key_mode(entry)})"
    return "yes"


def _print_thumbprints(entry: Any) -> None:
    print(f"  thumbprint (SHA-1, as certmgr.msc shows it): {entry.certmgr_thumbprint}")
    print(f"  SHA-256: {entry.sha256.lower()}")


# ---------------------------------------------------------------------------------------
# Passwords


def _option_password(args: argparse.Namespace) -> tuple[Optional[str], str]:
    """(password, where it came from) from --password-env / --password-stdin."""
    if getattr(args, "password_env", None):
        var = args.password_env
        value = os.environ.get(var)
        if value is None:
            raise UsageError(f"--password-env {var}: the environment variable {var} is not set")
        return value, f"from ${var}"
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        return line.rstrip("\r\n"), "from stdin"
    return None, ""


def _needs_password(path: Path) -> bool:
    """Whether the file (or its NAME.key) cannot be read without a password."""
    try:
        data = path.read_bytes()
    except OSError:
        return False  # the import reports it
    if path.suffix.lower() in (".pfx", ".p12"):
        from cryptography.hazmat.primitives.serialization import pkcs12

        for candidate in (None, b""):
            try:
                pkcs12.load_pkcs12(data, candidate)
                return False
            except ValueError:
                continue
        return True
    if b"PRIVATE KEY-----" not in data:
        try:
            data = path.with_suffix(".key").read_bytes()
        except OSError:
            return False
    return b"ENCRYPTED" in data


def _cli_message(e: _errors.CertificateError, source: str = "") -> _errors.CertificateError:
    """The store's message, with its library-side hints replaced by command-line ones."""
    text = str(e)
    if source:
        text = text.replace("password= argument", source)
    text = text.replace(
        f"set {PASSWORD_ENV} or pass password= to CertStore",
        f"give it with --password-env VAR or --password-stdin, or set {PASSWORD_ENV}")
    return _errors.CertificateError(text)


def _translated(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except _errors.CertificateError as e:
            raise _cli_message(e, getattr(args, "_password_source", "")) from None
    return run


# ---------------------------------------------------------------------------------------
# Commands


def cmd_create(args: argparse.Namespace) -> int:
    from sslsock._certs.generate import DEFAULT_HOSTS

    hosts = [] if args.no_default_hosts else [*DEFAULT_HOSTS, socket.gethostname()]
    hosts = list(dict.fromkeys(h for h in [*hosts, *args.host] if h))
    if not hosts:
        raise UsageError("no host names: give --host NAME (with --no-default-hosts)")
    store = store_of(args)
    if args.client:
        entry = _create_with_client_auth(store, args.name, hosts, args.key_type, args.days)
    else:
        entry = store.create_self_signed(args.name, hosts=hosts, key_type=args.key_type,
                                         days=args.days)
    print(f'created certificate "{entry.name}" in {entry.path} (self-signed, '
          f"{_key_type(entry.certificate.public_key())}, valid until "
          f"{entry.not_after.strftime('%Y-%m-%d')})")
    print(f"  hosts: {', '.join(hosts)}")
    _print_thumbprints(entry)
    print(f'  serve it: SocketCreateSSL("server", 5043, "{entry.name}"), or by hash: '
          f'SocketCreateSSL("server", 5043, "{entry.certmgr_thumbprint}", CertificateHash)')
    return EXIT_OK


def _create_with_client_auth(store: Any, name: str, hosts: list[str], key_type: str,
                             days: int) -> Any:
    """A development certificate that can also identify a client (mutual TLS).

    CertStore.create_self_signed has no ``client=`` yet, so the certificate is made here and
    goes in through import_file (the same checks, file modes and store password)."""
    import tempfile

    from sslsock._certs.generate import make_self_signed

    issued = make_self_signed(name, hosts=hosts, key_type=key_type, days=days, client=True)
    store_password = os.environ.get(PASSWORD_ENV) or None
    with tempfile.TemporaryDirectory(prefix="sslsock-") as tmp:
        path = Path(tmp) / "new.pem"  # the store name comes from name=, checked by the store
        issued.write_pem(path, store_password.encode() if store_password else None)
        return store.import_file(path, name=name)


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    password, source = _option_password(args)
    args._password_source = source
    store = store_of(args)
    prompt = (password is None and not os.environ.get(PASSWORD_ENV)
              and sys.stdin.isatty() and _needs_password(path))
    if prompt:
        args._password_source = "the password typed"
        for attempt in range(3):
            password = getpass.getpass(f"password for {path}: ")
            try:
                entry = store.import_file(path, password=password, name=args.name,
                                          replace=args.replace)
                break
            except _errors.CertificateError as e:
                if "password" not in str(e) or attempt == 2:
                    raise
                err("that password does not open it; try again")
    else:
        entry = store.import_file(path, password=password, name=args.name,
                                  replace=args.replace)
    kind = ("with its private key" if entry.has_key else
            "as a trust anchor (no private key: clients verify servers against it; it "
            "cannot identify a server)")
    print(f'{"renewed" if args.replace else "imported"} "{entry.name}" {kind}: {entry.path}')
    print(f"  subject: {entry.subject}")
    print(f"  valid: {_utc(entry.not_before)} to {_utc(entry.not_after)}"
          + (f"  {_validity_flag(entry)}" if _validity_flag(entry) else ""))
    _print_thumbprints(entry)
    if entry.expired:
        err(f'warning: "{entry.name}" expired on {_utc(entry.not_after)}: a server cannot use it')
    return EXIT_OK


def _write_new(dest: Path, data: bytes, private: bool) -> None:
    mode = 0o600 if private else 0o644
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise _errors.CertificateError(f"{dest} already exists: not replacing it") from None
    except OSError as e:
        raise _errors.CertificateError(f"cannot create {dest} ({e.strerror or e})") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)
        out.write(data)


def _certificates_only(entry: Any, fmt: str, password: Optional[str]) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    certs = [entry.certificate, *entry.chain]
    if fmt == "pem":
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    encryption: Any = (serialization.BestAvailableEncryption(password.encode())
                       if password else serialization.NoEncryption())
    return pkcs12.serialize_key_and_certificates(entry.name.encode(), None, entry.certificate,
                                                 list(entry.chain) or None, encryption)


def cmd_export(args: argparse.Namespace) -> int:
    password, source = _option_password(args)
    args._password_source = source
    fmt = args.format
    if fmt is None:
        fmt = "pfx" if Path(args.dest).suffix.lower() in (".pfx", ".p12") else "pem"
    store = store_of(args)
    by = lookup_kind(args.id, args.hash, args.by_name)
    entry = store.find(args.id, by)
    with_key = entry.has_key and not args.no_key
    if args.dest == "-":
        if with_key or fmt != "pem":
            raise UsageError("export to stdout (-) is for certificates only: add --no-key "
                             "(and use the pem format)")
        sys.stdout.buffer.write(_certificates_only(entry, "pem", None))
        sys.stdout.flush()
        return EXIT_OK
    dest = Path(args.dest).expanduser()
    if with_key:
        store.export(args.id, by, dest, fmt, password=password)
    else:
        _write_new(dest, _certificates_only(entry, fmt, password), private=False)
    what = "certificate and private key" if with_key else "certificate only"
    if entry.chain:
        what += f", with {len(entry.chain)} chain certificate{'s' if len(entry.chain) > 1 else ''}"
    print(f'exported "{entry.name}" ({what}) as {fmt.upper()} to {dest}')
    if with_key and not password:
        err(f"note: the private key in {dest} is not encrypted (file mode 0600); "
            "--password-env VAR encrypts it")
    return EXIT_OK


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _store_dir_warning(path: Path) -> Optional[str]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return (f"the store directory {path} is mode {mode:04o} (other users can list it): "
                f"run chmod 700 {path}")
    return None


def cmd_list(args: argparse.Namespace) -> int:
    store = store_of(args)
    entries = store.entries()
    dir_warning = _store_dir_warning(store.path) if store.path.is_dir() else None
    key_warnings = [
        f"the private key file {e.key_file} can be read by other users (mode "
        f"{_key_mode(e)}): run chmod 600 {e.key_file}"
        for e in entries if e.key_world_readable]
    if args.json:
        print(json.dumps({"store": str(store.path), "exists": store.path.is_dir(),
                          "certificates": [describe(e) for e in entries],
                          "warnings": ([dir_warning] if dir_warning else []) + key_warnings,
                          "problems": list(store.problems)}, indent=2))
        return EXIT_OK
    if not store.path.exists():
        print(f"the certificate store {store.path} does not exist yet: "
              "`sslsock cert create NAME` or `sslsock cert import FILE` creates it")
        return EXIT_OK
    n = len(entries)
    print(f"certificate store {store.path}: {n} certificate{'s' if n != 1 else ''}")
    if entries:
        rows = [["NAME", "SHA-1 THUMBPRINT (certmgr.msc)", "SHA-256", "VALID FROM",
                 "VALID UNTIL", "KEY", "FILE"]]
        for e in entries:
            flag = _validity_flag(e)
            rows.append([e.name, e.certmgr_thumbprint, e.sha256.lower(),
                         e.not_before.strftime("%Y-%m-%d"),
                         e.not_after.strftime("%Y-%m-%d") + (f" {flag}" if flag else ""),
                         _key_column(e), e.path.name])
        print("\n".join(_table(rows)))
    for w in ([dir_warning] if dir_warning else []) + key_warnings:
        print(f"warning: {w}")
    if store.problems:
        k = len(store.problems)
        print(f"{k} file{'s' if k != 1 else ''} in the store could not be read:")
        for p in store.problems:
            print(f"  - {p}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    store = store_of(args)
    entry = store.find(args.id, lookup_kind(args.id, args.hash, args.by_name))
    d = describe(entry)
    if args.json:
        print(json.dumps(d, indent=2))
        return EXIT_OK
    flag = _validity_flag(entry)
    key = "no (it can be a trust anchor, not a server certificate)"
    if entry.has_key:
        key = f"yes, in {d['key_file']} (mode {d['key_mode']})"
        if entry.key_world_readable:
            key += f": READABLE BY OTHER USERS, run chmod 600 {d['key_file']}"
    lines = [
        ("name", d["name"]),
        ("subject", d["subject"]),
        ("issuer", d["issuer"] + ("  (self-signed)" if d["self_signed"] else "")),
        ("hosts", ", ".join(d["hosts"]) or "(no subjectAltName)"),
        ("key type", d["key_type"]),
        ("serial", d["serial"]),
        ("valid from", _utc(entry.not_before)),
        ("valid until", _utc(entry.not_after) + (f"  {flag}" if flag else "")),
        ("SHA-1 thumbprint", f"{d['sha1']}  (as certmgr.msc shows it)"),
        ("SHA-256", d["sha256"]),
        ("private key", key),
        ("file", d["file"]),
    ]
    if d["friendly_name"]:
        lines.insert(1, ("friendly name", d["friendly_name"]))
    for i, subject in enumerate(d["chain"], 1):
        lines.append((f"chain {i}", subject))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k + ':':<{width + 1}} {v}")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    store = store_of(args)
    entry = store.remove(args.id, lookup_kind(args.id, args.hash, args.by_name))
    files = ", ".join(str(p) for p in (entry.path, entry.key_path) if p is not None)
    print(f'removed "{entry.name}" (SHA-1 {entry.certmgr_thumbprint}): {files}')
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# Parser


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"days must be a whole number, not {text!r}") from None
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError(f"days must be between 1 and 36500, got {days}")
    return days


def _add_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="certificate name or thumbprint (see below)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hash", action="store_true",
                   help="ID is a thumbprint (CertificateHash)")
    g.add_argument("--name", dest="by_name", action="store_true",
                   help="ID is a name, even if it looks like a thumbprint (CertificateName)")


def _add_password(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-env", metavar="VAR",
                   help=f"read the password {what} from the environment variable VAR")
    g.add_argument("--password-stdin", action="store_true",
                   help=f"read the password {what} from the first line of stdin")


def cmd_tickets_rotate(args: argparse.Namespace) -> int:
    from sslsock._deploy import tickets as _tickets

    path = Path(args.file).expanduser() if args.file else _tickets.default_path(store_of(args))
    existed = path.exists()
    count = _tickets.rotate(path, keep=args.keep)
    print(f"{'rotated' if existed else 'created'} the session-ticket keys {path} (mode 0600): "
          f"a new key encrypts from now on; {count - 1} previous key"
          f"{'s' if count != 2 else ''} still decrypt{'s' if count == 2 else ''}")
    print("  running listeners reading this file take the new key within a few seconds; "
          "copy the file to the other hosts of the service (keep it 0600)")
    return EXIT_OK


def add_parser(sub: Any, store: argparse.ArgumentParser, formatter: Any, epilog: str) -> None:
    from sslsock._certs.generate import KEY_TYPES

    epilog = epilog + "\n" + CERT_EPILOG_EXTRA
    cert = sub.add_parser(
        "cert", parents=[store], formatter_class=formatter, epilog=epilog,
        help="manage the certificate store (create, import, export, list, show, remove)",
        description="The certificate store: what certmgr.msc is on Windows.")
    cert.set_defaults(func=None, parser=cert)
    csub = cert.add_subparsers(dest="cert_command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = csub.add_parser(
            name, parents=[store], formatter_class=formatter, epilog=epilog, help=help,
            description=description)
        p.set_defaults(func=_translated(func), kind="cert")
        return p

    p = add("create", cmd_create, "create a self-signed development certificate",
            "Create a self-signed certificate and its private key in the store, as NAME.pem "
            "(mode 0600, store directory 0700), for development: the reference's \"How to "
            "create an SSL certificate?\".  Its common name is NAME; it is valid for "
            "localhost, 127.0.0.1, ::1 and this machine's host name, plus each --host.  "
            "Prints its thumbprint as certmgr.msc shows it, and its SHA-256.")
    p.add_argument("name", metavar="NAME", help="certificate name (its common name and file name)")
    p.add_argument("--key-type", choices=[k for k in KEY_TYPES if k != "rsa1024"], default="ec",
                   help="key type (default ec: P-256)")
    p.add_argument("--days", type=_days, default=825, help="validity in days (default 825)")
    p.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                   help="extra DNS name or IP address (repeatable)")
    p.add_argument("--client", action="store_true",
                   help="also usable as a client certificate (mutual TLS: connect --cert)")
    p.add_argument("--no-default-hosts", action="store_true",
                   help="only the --host names, not localhost, 127.0.0.1, ::1 and the hostname")

    p = add("import", cmd_import, "import a PEM or PKCS#12 file",
            "Check a certificate file and copy it into the store.  PKCS#12 (.pfx/.p12, as "
            "exported from certmgr.msc) or PEM/DER (.pem/.crt/.cer/.der; a .crt brings the "
            ".key beside it).  It is checked first: it must open, its key must match its "
            "certificate, and neither its name nor the certificate may already be in the "
            "store.  A file without a private key (a CA certificate, say) is imported as a "
            "trust anchor: clients then trust servers it signed (or itself), but it cannot "
            "identify a server.  The password of an encrypted file comes from "
            "--password-env VAR or --password-stdin, else $SSLSOCK_CERT_PASSWORD, else it "
            "is asked for when stdin is a terminal; there is no --password option, so "
            "that it does not show in the process list.  A key that needed a password is "
            "stored re-encrypted with $SSLSOCK_CERT_PASSWORD, or unencrypted (mode 0600) "
            "when it is not set.")
    p.add_argument("file", metavar="FILE", help="the file to import")
    p.add_argument("--name", metavar="NAME", help="name in the store (default: the file name "
                                                 "without its suffix)")
    p.add_argument("--replace", action="store_true",
                   help="renew the certificate stored under NAME: the checked file takes its "
                        "place, and running listeners serving NAME switch to it within a few "
                        "seconds (connections already open keep the old one)")
    _add_password(p, "of FILE")

    p = add("export", cmd_export, "write a certificate (and its key) to a file",
            "Write a certificate of the store, its chain and (unless --no-key) its private "
            "key to DEST, which must not exist.  A file holding a key is written with mode "
            "0600; the key is encrypted only when a password is given.  DEST - writes the "
            "certificates (with --no-key) to stdout: what a client needs to trust a "
            "self-signed server (openssl s_client -CAfile FILE).")
    _add_id(p)
    p.add_argument("dest", metavar="DEST", help="the file to write (- for stdout)")
    p.add_argument("--format", choices=("pem", "pfx"),
                   help="pem or pfx (PKCS#12); default from DEST's suffix (.pfx/.p12: pfx), "
                        "else pem")
    p.add_argument("--no-key", action="store_true", help="the certificates only, no key")
    _add_password(p, "encrypting DEST")

    p = add("list", cmd_list, "list the certificates in the store",
            "A table of the store: name, SHA-1 thumbprint as certmgr.msc shows it, SHA-256, "
            "validity (EXPIRED / NOT YET VALID flagged), whether the private key is there "
            "(and whether other users can read it), file.  Warnings and files that could "
            "not be read follow the table.  Exit 0 even then.")
    p.add_argument("--json", action="store_true", help="print the store as JSON")

    p = add("show", cmd_show, "show one certificate in detail",
            "Details of one certificate: subject, issuer, host names, key type, validity, "
            "thumbprints, key file and mode.")
    _add_id(p)
    p.add_argument("--json", action="store_true", help="print it as JSON")

    p = add("remove", cmd_remove, "delete a certificate (and its key) from the store",
            "Delete the certificate's file from the store (and its NAME.key), at once, "
            "without asking.  Export it first to keep a copy.")
    _add_id(p)

    tickets = csub.add_parser(
        "tickets", parents=[store], formatter_class=formatter, epilog=epilog,
        help="session-ticket keys shared by processes and hosts (rotate)",
        description="Session-ticket keys: processes and hosts serving with the same key file "
                    "(sslsock serve --ticket-keys, Listener(ticket_keys=...)) resume each "
                    "other's TLS sessions.")
    tickets.set_defaults(func=None, parser=tickets)
    tsub = tickets.add_subparsers(dest="tickets_command", metavar="COMMAND")
    p = tsub.add_parser(
        "rotate", parents=[store], formatter_class=formatter, epilog=epilog,
        help="put a new key first, keep the previous ones",
        description="Create the store's session-ticket key file (session-ticket-keys, mode "
                    "0600), or rotate it: a new random key encrypts new tickets, the "
                    "previous ones (--keep, default 2) still decrypt tickets already given "
                    "out.  The file is replaced whole (written aside, then renamed).  No key "
                    "is ever printed.  Rotate daily, say, from a timer, then copy the file to "
                    "the other hosts.")
    p.add_argument("--file", metavar="FILE",
                   help="the key file (default: session-ticket-keys in the store)")
    p.add_argument("--keep", type=int, default=2, metavar="N",
                   help="previous keys kept for decryption (default 2)")
    p.set_defaults(func=_translated(cmd_tickets_rotate), kind="cert")
