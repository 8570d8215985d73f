"""Read a LeakSanitizer or valgrind (--leak-check=full) report and fail if a leak -- or,
for valgrind, a memory error -- has a frame of sslsock's C core on its stack.  Python and
the libraries it loads leave memory allocated at exit on purpose (and valgrind flags some
of CPython's own tricks); those records do not name the core and are ignored.

    python scripts/leaks_in_core.py REPORT
"""
from __future__ import annotations

import re
import sys

# A frame of the core: its shared object, its source files, or its functions (ss_*).  The
# cffi glue's one-time module set-up (sslsock._native.c) is not the core.
CORE = re.compile(
    r"(_native|_fastio)[.\w-]*\.so\)"  # valgrind without debug information
    r"|src/_native/"  # LeakSanitizer: the source path
    r"|\bss_[a-z_0-9]+ \(|\bin ss_[a-z_0-9]+ "  # a core function (valgrind, LeakSanitizer)
    r"|\b(fast_read|fast_write|guard_[a-z_]+|Guard_[a-z_]+) "  # sslsock._fastio
    r"|\((conn|listener|hub|ctx|errors|closing|proxy|fastio)\.c:"  # valgrind: the source file
)
# The interpreter running Python code (valgrind and LeakSanitizer name it alike).
PY_EVAL = re.compile(r"\b_PyEval_EvalFrameDefault\b")
VALGRIND = re.compile(r"^==\d+==( |$)")
# valgrind leak kinds that count; "possibly lost" and "still reachable" are Python's way
COUNTED = re.compile(r"definitely lost|indirectly lost")
OTHER_LEAK = re.compile(r"possibly lost|still reachable")


def blocks(text: str) -> list[list[str]]:
    """Records of either tool: runs of lines separated by blank (or bare '==pid==') lines."""
    out: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        body = VALGRIND.sub("", line) if VALGRIND.match(line) else line
        if not body.strip():
            if current:
                out.append(current)
            current = []
        else:
            current.append(body.rstrip())
    if current:
        out.append(current)
    return out


def findings(text: str) -> tuple[list[list[str]], int]:
    """(records with a core frame that count, number of leak/error records seen)."""
    ours, seen = [], 0
    for block in blocks(text):
        head = block[0]
        stack = [line for line in block[1:] if re.match(r"\s+(#\d+|at|by) ", line)]
        if not stack:
            continue  # a summary or a banner
        lsan = re.match(r"(Direct|Indirect) leak of", head)
        vg_leak = "lost in loss record" in head or "reachable in loss record" in head
        if vg_leak and (OTHER_LEAK.search(head) or not COUNTED.search(head)):
            seen += 1
            continue
        seen += 1
        # Only the frames between the allocation (or error) and the first Python frame
        # count: memory Python code allocated in a callback the core (or _fastio) called
        # is Python's -- cffi's one-time cache of a looked-up function, say.
        cut = next((i for i, line in enumerate(stack) if PY_EVAL.search(line)), len(stack))
        in_core = any(CORE.search(line) for line in stack[:cut])
        if in_core and (lsan or vg_leak or not head.startswith(" ")):
            ours.append(block)
    return ours, seen


def main() -> int:
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        text = f.read()
    ours, seen = findings(text)
    if ours:
        print(f"{len(ours)} leak or memory error record(s) in sslsock's C core:", file=sys.stderr)
        for block in ours:
            print("\n".join(block[:40]) + "\n", file=sys.stderr)
        return 1
    print(f"no leak or memory error in sslsock's C core ({seen} records in all, none ours)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
