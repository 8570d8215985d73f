"""The package's layout: modules grouped by what they are, imports in one direction.

Every import of one sslsock module by another counts, wherever it stands in the file (a
deferred import inside a function that breaks a cycle is still a cycle).  The package's
``__init__`` gathers the public names and may import anything; no module imports it back.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "sslsock"

#: The floors, lowest first: a module may import modules of its own floor or below.
FLOORS = [
    {"sslsock._native", "sslsock._fastio", "sslsock._version"},
    {"sslsock._core.binding"},
    {"sslsock._core.errors"},
    {"sslsock._tls.options", "sslsock._certs.generate", "sslsock._deploy.renewal", "sslsock._files",
     "sslsock._deploy.tickets", "sslsock._core.connection"},
    {"sslsock._certs.store", "sslsock._deploy.workers", "sslsock._core.engine"},
    {"sslsock._tls.contexts"},
    {"sslsock._faces.objects"},
    {"sslsock._faces.registry", "sslsock.aio"},
    {"sslsock._faces.named", "sslsock.transports"},
    {"sslsock.debug", "sslsock._cli.common", "sslsock.streams"},
    {"sslsock._cli.cert"},
    {"sslsock._cli.main", "sslsock.__main__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every sslsock module this file imports, anywhere in it."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "sslsock")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "sslsock":
                continue
            for a in node.names:  # "from sslsock._core import errors": the module itself
                sub = f"{mod}.{a.name}"
                out.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                        or sub in ("sslsock._native", "sslsock._fastio") else mod)
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def test_every_module_has_a_floor() -> None:
    known = set().union(*FLOORS) | {"sslsock"}
    packages = {module_name(p) for p in PKG.rglob("__init__.py")}
    missing = set(graph()) - known - packages
    assert not missing, f"modules with no floor in this test: {sorted(missing)}"


def test_imports_go_down_the_floors_only() -> None:
    floor = {m: i for i, ms in enumerate(FLOORS) for m in ms}
    wrong = []
    for mod, deps in graph().items():
        if mod == "sslsock" or mod not in floor:
            continue
        for dep in deps:
            if dep == "sslsock" or dep.rpartition(".")[0] == "sslsock" and dep not in floor \
                    and dep.startswith("sslsock._") and dep.count(".") == 1 \
                    and (PKG / dep.split(".")[1] / "__init__.py").exists():
                wrong.append(f"{mod} imports the package {dep}")
            elif dep in floor and floor[dep] > floor[mod]:
                wrong.append(f"{mod} (floor {floor[mod]}) imports {dep} (floor {floor[dep]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    g = graph()
    g.pop("sslsock", None)  # the package gathers the public names from everything
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if seen.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(g):
        if m not in seen:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


#: A function is read in one sitting: at most this many lines (its docstring aside).
MAX_FUNCTION_LINES = 80


def _python_functions() -> list[tuple[int, str]]:
    out = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    n -= (first.end_lineno or first.lineno) - first.lineno + 1
                out.append((n, f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name}"))
    return out


def _c_functions() -> list[tuple[int, str]]:
    """Top-level C functions: a definition line ending in ")" followed by a lone "{"."""
    out = []
    for path in (PKG.parent / "_native").glob("*.c"):
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines) - 1:
            if lines[i][:1].isalpha() and lines[i].rstrip().endswith(")") \
                    and lines[i + 1] == "{":
                j = i + 2
                while j < len(lines) and lines[j] != "}":
                    j += 1
                out.append((j - i - 1, f"src/_native/{path.name}:{i + 1} {lines[i][:60]}"))
                i = j
            i += 1
    return out


def test_no_function_is_longer_than_a_sitting() -> None:
    found = _python_functions() + _c_functions()
    assert len(found) > 300, "the function finder found too little: it is broken"
    long = sorted((f for f in found if f[0] > MAX_FUNCTION_LINES), reverse=True)
    assert not long, "\n".join(f"{n} lines: {where}" for n, where in long)
