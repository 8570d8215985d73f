"""Write the seed corpora of fuzz/c/fuzz_deframe.c and fuzz/c/fuzz_proxy.c into
fuzz/c/corpus/deframe/ and fuzz/c/corpus/proxy/ (committed; rerun after
changing the input layout): every transmission mode over plain TCP and TLS, each ending,
the size headers and end tags that matter, and the regression inputs of the bugs the
harness found.

    python3 fuzz/c/make_seeds.py [DIR]

Input layout (see the top of fuzz_deframe.c): byte 0 = mode | TLS << 2 | ending << 3 |
together << 5 | batch << 6; byte 1 = tag | limit << 3 | (max_bytes & 3) << 6; byte 2 =
cut | three channels << 6 | (max_bytes & 4) << 5; then the stream.
"""
from __future__ import annotations

import sys
from pathlib import Path

END_TAG, SIZE, END_TAG_BUFFER, NO_END_TAG = range(4)
ORDERLY, ABRUPT, HOSTILE, NONE = range(4)
TAGS = [b"<EOF>", b"\r\n", b"x", b"<END-OF-A-RATHER-LONG-TAG>", b"aa", b"aba", b"\n",
        b"0123456789abcdef" * 4]
LIMIT = {"64M": 0, 0: 1, 1: 2, 2: 3, 5: 4, 16: 5, 100: 6, 4096: 7}
MAX_BYTES = {1: 0, 2: 1, 3: 2, 7: 3, 100: 4, 4096: 5, 65536: 6, "huge": 7}
BATCH = {2: 0, 3: 1, 5: 2, 64: 3}
SEP = b"\xff\xff"  # chunk separator (cut 0)
WHOLE, RECORDS = 63, 62


def seed(mode: int, stream: bytes, *, tls: bool = False, ending: int = ORDERLY,
         together: bool = False, batch: int = 64, tag: int = 0, limit: object = "64M",
         max_bytes: object = 4096, cut: int = WHOLE, channels: int = 1) -> bytes:
    mb = MAX_BYTES[max_bytes]
    b0 = mode | tls << 2 | ending << 3 | together << 5 | BATCH[batch] << 6
    b1 = tag | LIMIT[limit] << 3 | (mb & 3) << 6
    b2 = cut | (channels == 3) << 6 | (mb & 4) << 5
    return bytes([b0, b1, b2]) + stream


def seeds() -> dict[str, bytes]:
    s: dict[str, bytes] = {}
    sized = b"5\r\nhello3\r\nabc0\r\n1\nz"
    for tls in (False, True):
        t = "tls" if tls else "tcp"
        for ending, e in ((ORDERLY, "close"), (ABRUPT, "eof"), (HOSTILE, "hostile"),
                          (NONE, "open")):
            s[f"size-{t}-{e}"] = seed(SIZE, sized, tls=tls, ending=ending)
        s[f"size-{t}-bytewise"] = seed(SIZE, sized, tls=tls, cut=1)
        s[f"size-{t}-chunks"] = seed(SIZE, b"5\r\nhe" + SEP + b"llo1" + SEP + b"2\r" + SEP +
                                     b"\n" + b"x" * 12, tls=tls, cut=0)
        s[f"size-{t}-partial"] = seed(SIZE, b"10\r\nabc", tls=tls)
        s[f"endtag-{t}"] = seed(END_TAG, b"one<EOF>dropped" + SEP + b"two<EOF>", tls=tls, cut=0)
        s[f"endtagbuf-{t}"] = seed(END_TAG_BUFFER, b"one<EOF>two<EOF>thr" + SEP + b"ee<EOF>",
                                   tls=tls, cut=0)
        s[f"noendtag-{t}"] = seed(NO_END_TAG, b"raw bytes" + SEP + b"more", tls=tls, cut=0,
                                  max_bytes=3, batch=2)
    # size headers: huge, 20 digits, 2^64, leading zeros, bare LF, CR CR, CR at the end,
    # not decimal, empty, over a small limit before the header ends
    for name, stream, limit in (
            ("size-huge", b"99999999999999999999\r\n", "64M"),
            ("size-21digits", b"000000000000000000001\r\nx", "64M"),
            ("size-2pow64", b"18446744073709551616\r\n", "64M"),
            ("size-limit-plus-one", b"67108865\r\n", "64M"),
            ("size-zeros", b"0005\r\nhello00\r\n", "64M"),
            ("size-bare-lf", b"3\nabc", "64M"),
            ("size-cr-cr", b"3\r\r\nabc", "64M"),
            ("size-cr-end", b"3\r", "64M"),
            ("size-negative", b"-1\r\n", "64M"),
            ("size-hex", b"0x10\r\n", "64M"),
            ("size-empty", b"\r\nabc", "64M"),
            ("size-over-small-limit", b"17\r\n" + b"a" * 17, 16),
            ("size-limit-zero", b"0\r\n0\r\n1\r\nx", 0)):
        s[name] = seed(SIZE, stream, limit=limit)
    s["size-header-bytewise-small-limit"] = seed(SIZE, b"16\r\n" + b"b" * 16 + b"100\r\n",
                                                 limit=16, cut=1)
    # end tags: self-overlapping, split across deliveries, at the limit, the longest tag
    s["endtagbuf-overlap"] = seed(END_TAG_BUFFER, b"xaaaba" + SEP + b"ab" + SEP + b"a", tag=5,
                                  cut=0)
    s["endtagbuf-split-tag"] = seed(END_TAG_BUFFER, b"msg<E" + SEP + b"O" + SEP + b"F>",
                                    cut=0)
    s["endtagbuf-at-limit"] = seed(END_TAG_BUFFER, b"12345x123456x", tag=2, limit=5, cut=1)
    s["endtag-no-tag-too-big"] = seed(END_TAG, b"a" * 20, tag=2, limit=16)
    s["endtagbuf-64-byte-tag"] = seed(END_TAG_BUFFER, b"m" + TAGS[7] + b"n" + TAGS[7], tag=7)
    s["endtagbuf-crlf-bytewise"] = seed(END_TAG_BUFFER, b"line 1\r\nline 2\r\n", tag=1,
                                        cut=1, batch=2)
    # TLS: a KeyUpdate between chunks (empty chunk), several records in one delivery, raw
    # bytes after the records, the end in the same read as the last chunk
    s["tls-keyupdate"] = seed(SIZE, b"3\r\nabc" + SEP + SEP + b"2\r\nde", tls=True, cut=0)
    s["tls-records"] = seed(END_TAG_BUFFER, b"a<EOF>b" + SEP + b"<EOF>" + SEP + b"c<EOF>",
                            tls=True, cut=RECORDS, batch=2)
    s["tls-raw-record"] = seed(SIZE, b"3\r\nabc" + SEP + b"\x17\x03\x03\x00\x05hello",
                               tls=True, ending=HOSTILE, cut=0)
    s["tls-end-together"] = seed(NO_END_TAG, b"abcdef", tls=True, ending=ABRUPT,
                                 together=True, batch=2, max_bytes=1)
    # three channels in one hub: the scratch buffer shared, then exhausted (fuzz build:
    # 28 KiB of scratch, 20 KiB a share), the batch filled by several channels
    s["hub-3-channels"] = seed(SIZE, sized + SEP + sized, channels=3, batch=3, cut=0)
    s["hub-3-channels-big"] = seed(END_TAG_BUFFER, (b"m" * 1000 + b"<EOF>") * 7, channels=3,
                                   batch=5)
    s["hub-3-channels-tls"] = seed(NO_END_TAG, b"x" * 3000 + SEP + b"y" * 3000, tls=True,
                                   channels=3, batch=2, max_bytes=4096, cut=0)
    s["hub-3-channels-partial"] = seed(SIZE, b"7000\r\n" + b"p" * 6999, channels=3)
    # regressions (fixed): see fuzz/README.md
    s["regress-null-plus-zero"] = bytes.fromhex("300a02")
    s["regress-hub-reset-after-full-batch"] = seed(NO_END_TAG, b"ab", ending=HOSTILE,
                                                   together=True, batch=2, max_bytes=1)
    # 400 KeyUpdate requests the writer does not read the answers of (about 270 fill a
    # socketpair's default buffer), then a message: the hub spun on the readable socket
    s["regress-hub-spin-keyupdate-flood"] = seed(SIZE, SEP * 400 + b"3\r\nabc", tls=True,
                                                 cut=0, max_bytes=1)
    return s


def proxy_seeds() -> dict[str, bytes]:
    """fuzz_proxy.c: byte 0 picks the header limit (6: 65551, 3: 232), then the stream."""
    import struct

    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    v4 = bytes([127, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 51000, 443)
    v6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 51000, 443)
    hello = b"\x16\x03\x01\x00\x05hello"
    return {
        "v1-tcp4": b"\x06PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n" + hello,
        "v1-tcp6": b"\x06PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\n" + hello,
        "v1-unknown": b"\x06PROXY UNKNOWN\r\n" + hello,
        "v1-bad-port": b"\x06PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
        "v2-tcp4": b"\x06" + sig + b"\x21\x11" + struct.pack("!H", len(v4)) + v4 + hello,
        "v2-tcp6-tlv": b"\x06" + sig + b"\x21\x21" + struct.pack("!H", len(v6) + 7) + v6
        + b"\x04\x00\x04abcd" + hello,
        "v2-local": b"\x06" + sig + b"\x20\x00\x00\x00" + hello,
        "v2-over-limit": b"\x03" + sig + b"\x21\x11\x01\x00" + bytes(256),
        "tls-direct": b"\x06" + hello,
        # regression (fixed): a NUL ended the printable check of a v1 line early, so a
        # header was accepted whole that its own prefixes were refused for
        "regress-v1-nul": b"\x06PROXY UNKNOWN\x00\x16\r\n" + hello,
    }


def write(out: Path, corpus: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for name, data in corpus.items():
        (out / name).write_bytes(data)
    print(f"make_seeds: {len(corpus)} seeds in {out}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus"
    write(out / "deframe", seeds())
    write(out / "proxy", proxy_seeds())


if __name__ == "__main__":
    main()
