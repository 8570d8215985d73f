"""``python -m sslsock``: the ``sslsock`` command (see :mod:`sslsock._cli.main`)."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``sslsock`` console script; returns the exit status."""
    from sslsock._cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
