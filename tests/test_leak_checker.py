"""scripts/leaks_in_core.py decides which leak records are the C core's: it must flag an
allocation the core made and pass one Python code made in a callback the core called."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("leaks_in_core", ROOT / "scripts" / "leaks_in_core.py")
assert _spec and _spec.loader
leaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(leaks)

CORE_LEAK = """==1== 48 bytes in 1 blocks are definitely lost in loss record 1 of 9
==1==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1==    by 0x7D1: ss_conn_new (conn.c:120)
==1==    by 0x7D2: ffi_call (in /usr/lib/x86_64-linux-gnu/libffi.so.8)
==1==    by 0x494E226: _PyEval_EvalFrameDefault (ceval.c:3461)
==1==
"""
CALLBACK = """==1== 143 bytes in 1 blocks are definitely lost in loss record 2 of 9
==1==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1==    by 0x7D11383: lib_build_cpython_func (in /x/_cffi_backend.so)
==1==    by 0x49FD3E7: PyObject_GetAttr (object.c:916)
==1==    by 0x494E226: _PyEval_EvalFrameDefault (ceval.c:3461)
==1==    by 0x8163A2B: Guard_close (fastio.c:166)
==1==    by 0x494F9C2: _PyEval_EvalFrameDefault (ceval.c:4769)
==1==
"""
PYTHONS_OWN = """==1== 64 bytes in 1 blocks are possibly lost in loss record 3 of 9
==1==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==1==    by 0x4A1: ss_hub_new (hub.c:80)
==1==
"""


def test_a_core_allocation_is_flagged() -> None:
    ours, seen = leaks.findings(CORE_LEAK)
    assert seen == 1 and len(ours) == 1


def test_an_allocation_by_python_code_in_a_callback_is_not_the_cores() -> None:
    ours, seen = leaks.findings(CALLBACK + PYTHONS_OWN)
    assert seen == 2 and ours == []


def test_both_together_flag_only_the_core() -> None:
    ours, _ = leaks.findings(CALLBACK + CORE_LEAK)
    assert len(ours) == 1 and "ss_conn_new" in "\n".join(ours[0])
