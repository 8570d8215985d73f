"""The numbers the C core and Python share are read from the compiled module: checked
against the header the core was built from."""
from __future__ import annotations

import re
from pathlib import Path

import sslsock
from sslsock import debug
from sslsock._cli.main import PROBE_VERSIONS
from sslsock._core.connection import Mode
from sslsock._core.errors import ErrorCode
from sslsock._tls.options import _VERSIONS, CORE_VERSIONS

HEADER = Path(__file__).resolve().parents[1] / "src" / "_native" / "sslsock_core.h"


def _defines(prefix: str) -> dict[str, int]:
    found = re.findall(rf"#define {prefix}(\w+)\s+\(?(-?(?:0x)?[0-9a-fA-F]+)\)?", HEADER.read_text())
    return {name: int(value, 0) for name, value in found}


def test_error_codes_are_the_core_codes_without_sign() -> None:
    """Every code below 100 is a core code, sign dropped (the core may have more: codes it
    only uses inside, such as a "would wait" signal)."""
    core = _defines("SS_E_")
    renamed = {"NO_MEMORY": "NOMEM"}
    python = {c.name: c.value for c in ErrorCode if 0 < c.value < 100}
    assert len(python) >= 14
    assert {name: -core[renamed.get(name, name)] for name in python} == python
    assert ErrorCode.OK == _defines("SS_")["OK"] == 0


def test_modes_are_the_core_modes() -> None:
    core = _defines("SS_MODE_")
    assert {k: v for k, v in core.items()} == {
        "END_TAG": Mode.SocketEndTag, "SIZE": Mode.SocketSizeAtBeginning,
        "END_TAG_BUFFER": Mode.SocketEndTagBuffer, "NO_END_TAG": Mode.SocketNoEndTag}
    assert sslsock.SocketSizeAtBeginning == core["SIZE"]


def test_version_bits_are_the_core_bits_everywhere() -> None:
    core = _defines("SS_V_")
    by_name = {"SSLv3": core["SSL3"], "TLSv1": core["TLS1"], "TLSv1.1": core["TLS1_1"],
               "TLSv1.2": core["TLS1_2"], "TLSv1.3": core["TLS1_3"]}
    assert dict((name, bit) for bit, name in CORE_VERSIONS) == by_name
    assert dict((name, bit) for bit, name in debug.VERSION_BITS) == by_name
    assert {name: bit for name, _, bit in PROBE_VERSIONS} == by_name
    assert {name: bit for _, name, bit in _VERSIONS if bit} == by_name
