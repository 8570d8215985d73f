"""Write the fuzzers' seed corpus.

    python fuzz/make_corpus.py              # the committed seeds, into fuzz/corpus/<harness>/
    python fuzz/make_corpus.py --fresh DIR  # seeds holding private keys, made anew each run
                                            # (run_all.sh): no key is committed, none expires

Each file is one input in the layout its harness describes at its top.
"""
from __future__ import annotations

import argparse
import ssl
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The reference page's own example thumbprint, with its typo ("of" for "0f").
REFERENCE_HASH = "9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 of 24"


def client_hello(version: ssl.TLSVersion, server_name: str | None = "localhost") -> bytes:
    """The first flight of a stdlib ssl client: its ClientHello record."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = version
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def committed() -> dict[str, dict[str, bytes]]:
    hello13 = client_hello(ssl.TLSVersion.TLSv1_3)
    hello12 = client_hello(ssl.TLSVersion.TLSv1_2, None)
    return {
        "frames": {
            # byte 0: limit (bits 0-1), tag (bits 2-3); see fuzz_frames.py
            "size-two-frames": b"\x00" + b"5\r\nhello" + b"0\r\n" + b"3\nabc",
            "size-huge": b"\x00" + b"99999999999999999999999\r\nx",
            "size-2-pow-64": b"\x00" + b"18446744073709551616\r\n",
            "size-limit-plus-one": b"\x00" + b"67108865\r\n",
            "size-negative": b"\x00" + b"-5\r\nhello",
            "size-hex": b"\x00" + b"0x10\r\n0123456789abcdef",
            "size-space": b"\x00" + b"12 \r\nhello world!",
            "size-never-ends": b"\x00" + b"123456789012",
            "size-lone-cr": b"\x00" + b"5\r\rhello",
            "size-small-limit": b"\x01" + b"4097\r\n",
            "tag-eof": b"\x00" + b"hello<EOF>world<EOF>tail",
            "tag-split": b"\x00" + b"<EO<EOF><E<EOF>",
            "tag-crlf": b"\x05" + b"line1\r\nline2\r\n\r\n",
            "tag-over-limit": b"\x02" + b"0123456789abcdefXYZ<EOF>",
            "tag-long": b"\x0c" + b"a<END-OF-A-RATHER-LONG-TAG>b<END-OF-A-RATHER",
        },
        "thumbprint": {
            "reference-typo": REFERENCE_HASH.encode(),
            "sha1-spaces": b"9d a4 84 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 0f 24",
            "sha1-colons": b"9D:A4:84:FC:F6:62:92:90:9A:62:D4:CA:65:FB:08:7E:06:45:0F:24",
            "sha1-lrm": "\u200e9da484fcf66292909a62d4ca65fb087e06450f24".encode(),
            "sha256": b"ab" * 32,
            "odd-groups": b"9da 484 fc f6 62 92 90 9a 62 d4 ca 65 fb 08 7e 06 45 0f 2",
            "name": b"localhost",
            "tilde-user": b"~nosuchuser/cert.pem",
            "long-path": b"/" + b"a" * 300 + b".pem",
            "nul": b"/tmp/a\x00b.pem",
            "empty": b"",
        },
        "options": {
            # FuzzedDataProvider input: kind, then the value
            "default-int": b"\x00\x01\x1c\x02",
            "all-bits": b"\x02\x02\xff\x3f",
            "negative": b"\x01\x04\xff\xff\xff\xff",
            "float": b"\x05" + b"\x00" * 8,
            "text": b"\x06hello",
        },
        "certstore": {
            # byte 0: layout (bits 0-1), password (bit 2); the key-bearing seeds are made
            # fresh by run_all.sh (make_corpus.py --fresh)
            "pem-truncated": b"\x00-----BEGIN CERTIFICATE-----\nMIIB\n",
            "pem-empty-block": b"\x00-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "pem-key-label": b"\x00-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "pfx-header": b"\x01\x30\x82\x01\x00\x02\x01\x03\x30\x82\x00\x10",
            "pfx-indefinite": b"\x05\x30\x80\x02\x01\x03\x00\x00",
            "der-sequence": b"\x02\x30\x82\x00\x04\x30\x02\x05\x00",
            "split": b"\x03\x00\x05garbage-key",
        },
        "listener": {
            # byte 0: see fuzz_listener.py
            "hello-tls13": b"\x00" + hello13,
            "hello-tls12": b"\x00" + hello12,
            "hello-tls13-bytewise": b"\x02" + hello13,
            "hello-half": b"\x00" + hello13[: len(hello13) // 2],
            "hello-header-only": b"\x00" + hello13[:5],
            "sslv2-hello": b"\x00\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10",
            "http": b"\x00GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "record-fake-appdata-12": b"\x01\x17\x03\x03\x00\x05hello",
            "record-alert-13": b"\x05\x15\x03\x03\x00\x02\x01\x00",
            "record-huge-length": b"\x01\x17\x03\x03\xff\xff",
            "record-renegotiate-12": b"\x01" + hello12,
            "inside-frame-12": b"\x09" + b"5\r\nhello",
            "inside-frame-13": b"\x0d" + b"5\r\nhello3\nabc",
            "inside-huge-13": b"\x0d" + b"99999999999999999999\r\n",
            "inside-bytewise-13": b"\x0f" + b"11\r\nhello world",
        },
    }


def fresh() -> dict[str, dict[str, bytes]]:
    from cryptography.hazmat.primitives import serialization

    from sslsock._certs import generate as _certgen

    ca = _certgen.make_ca("sslsock fuzz seed CA")
    leaf = _certgen.make_leaf(ca, "fuzz")
    cert_pem = leaf.cert_pem()
    key_pem = leaf.key_pem()
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)

    def pkcs12(password: bytes | None) -> bytes:
        from cryptography.hazmat.primitives.serialization import pkcs12 as p12

        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        return p12.serialize_key_and_certificates(b"fuzz", leaf.key, leaf.certificate,
                                                  [ca.certificate], enc)

    crt_key = len(cert_pem).to_bytes(2, "big") + cert_pem + key_pem
    return {
        "certstore": {
            "fresh-pem-cert-key": b"\x00" + cert_pem + key_pem,
            "fresh-pem-cert-only": b"\x00" + cert_pem,
            "fresh-pem-encrypted-key": b"\x04" + cert_pem + leaf.key_pem(b"fuzz-password"),
            "fresh-pfx": b"\x01" + pkcs12(None),
            "fresh-pfx-password": b"\x05" + pkcs12(b"fuzz-password"),
            "fresh-pfx-truncated": b"\x01" + pkcs12(None)[:200],
            "fresh-der": b"\x02" + der,
            "fresh-crt-key": b"\x03" + crt_key,
            "fresh-crt-der-key": b"\x03" + len(der).to_bytes(2, "big") + der + key_pem,
        }
    }


def write(seeds: dict[str, dict[str, bytes]], root: Path) -> None:
    for harness, files in seeds.items():
        d = root / harness
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", metavar="DIR", help="write the key-bearing seeds into DIR/<harness>")
    args = ap.parse_args()
    if args.fresh:
        write(fresh(), Path(args.fresh))
    else:
        write(committed(), HERE / "corpus")


if __name__ == "__main__":
    main()
