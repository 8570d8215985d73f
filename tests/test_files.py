"""sslsock._files: the one way private and durable files are written (store, generator,
command line, ticket keys)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import sslsock
from sslsock import _files


def test_a_private_file_has_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        _files.write(tmp_path / "k.key", b"secret", private=True, replace=False)
        _files.write(tmp_path / "c.crt", b"public", private=False, replace=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.crt").stat().st_mode) == 0o644
    assert (tmp_path / "k.key").read_bytes() == b"secret"


def test_no_clobber_keeps_the_existing_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.pem"
    target.write_bytes(b"old")
    with pytest.raises(sslsock.CertificateError, match="already exists: not replacing it"):
        _files.write(target, b"new", private=True, replace=False)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pem"]


def test_replace_swaps_the_whole_file_and_never_writes_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    target = tmp_path / "keys"
    target.symlink_to(victim)  # a link planted at the final name is replaced, not followed
    _files.write(target, b"fresh", private=True, replace=True)
    assert victim.read_bytes() == b"do not touch"
    assert not target.is_symlink() and target.read_bytes() == b"fresh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "victim"]


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "f.pem"
    with pytest.raises(sslsock.CertificateError, match="cannot create a file in"):
        _files.write(missing, b"x", private=False, replace=True)
