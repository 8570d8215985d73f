"""Shared bits of the benchmark servers: arguments and the READY line the harness waits for.

Every server speaks the same protocol, raw echo (each byte received is sent back), and
prints ``READY <port>`` on stdout once it listens.
"""
from __future__ import annotations

import argparse
import signal
import sys


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True, help="PEM certificate (chain) file")
    p.add_argument("--key", required=True, help="PEM private key file")
    p.add_argument("--pem", help="one PEM file with certificate and key (sslsock servers)")
    return p.parse_args()


def parse_pem_args(description: str, *extra: tuple[str, dict[str, object]]) -> argparse.Namespace:
    """The sslsock servers' arguments: one PEM file with certificate and key (--cert and
    --key are accepted and ignored, so every server takes the harness's command line), then
    SIGTERM ends the process."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--pem", required=True, help="one PEM file with certificate and key")
    p.add_argument("--cert")
    p.add_argument("--key")
    for name, kwargs in extra:
        p.add_argument(name, **kwargs)  # type: ignore[arg-type]
    args = p.parse_args()
    exit_on_term()
    return args


def ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


def exit_on_term() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def restore_term() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
