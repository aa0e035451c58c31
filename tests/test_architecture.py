"""The package's layering, read from the README and checked against the real imports.

The README's "Architecture" section holds the layer picture between ``<!-- layers -->`` markers:
one line per layer, top (imports most) to bottom (imports nothing of ours), each line starting with
the modules (``name.py``) and packages (``name/``) of that layer. This test parses that picture and
fails on any import, at module level or inside a function, that points upwards, on any import
cycle, on any module of the package missing from the picture, and on oversized modules, so the
picture cannot go stale.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntksolve"
README = ROOT / "README.md"

#: Lines a module may have. A larger module must hold one idea; none needs to today.
MAX_LINES = 520


def _modules():
    """``{dotted name: path}`` for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _layers():
    """The README's layer picture: a list (bottom layer first) of sets of units (``ntksolve.x``)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- layers -->\s*```[a-z]*\n(.*?)```\s*<!-- /layers -->", text, re.S)
    assert match, "README.md lost its layer picture between <!-- layers --> markers"
    layers = []
    for line in match.group(1).splitlines():
        units = []
        for token in line.split():
            if token.endswith(".py") or token.endswith("/"):
                units.append("ntksolve." + token.removesuffix(".py").removesuffix("/"))
            else:
                break
        if units:
            layers.append(set(units))
    return layers[::-1]


def _unit(module: str, units) -> str | None:
    """The layer unit (a top-level module or subpackage of ntksolve) a module belongs to."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        name = ".".join(parts[:n])
        if name in units:
            return name
    return None


def _imports(path: pathlib.Path, module: str, modules) -> set[str]:
    """Every ntksolve module ``path`` imports, at any depth of the file (lazy imports count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "ntksolve" or not name.startswith("ntksolve."):
                continue  # the root's __version__, or another project
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            found.add(name)
    found.discard(module)
    return found


MODULES = _modules()
LAYERS = _layers()
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}
GRAPH = {m: _imports(p, m, MODULES) for m, p in MODULES.items()}


def test_every_module_is_in_the_readme_picture():
    missing = sorted(m for m in MODULES if m != "ntksolve" and _unit(m, RANK) is None)
    assert not missing, f"modules missing from README.md's layer picture: {missing}"
    stale = sorted(u for u in RANK if u not in MODULES)
    assert not stale, f"README.md's layer picture names modules that do not exist: {stale}"


def test_imports_point_down():
    upward = []
    for module, targets in GRAPH.items():
        if module == "ntksolve":
            continue  # the root re-exports (lazily where it matters)
        here = _unit(module, RANK)
        for target in targets:
            there = _unit(target, RANK)
            if target == "ntksolve" or there == here:
                continue
            if RANK[there] > RANK[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports pointing up the README's layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t == "ntksolve" or m == "ntksolve":
                continue
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    # A package's __init__ importing its own submodules is the package, not a cycle.
    real = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not real, "import cycles:\n" + "\n".join(real)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    n = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines; split it by idea (limit {MAX_LINES})"


def test_numba_kernels_only_in_jit():
    """Numba kernels are private, under ``_jit``; everything else calls them through thin wrappers."""
    offenders = []
    for module, path in MODULES.items():
        if module.startswith("ntksolve._jit"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for dec in node.decorator_list:
                    name = ast.unparse(dec.func if isinstance(dec, ast.Call) else dec)
                    if name.split(".")[-1] in ("njit", "jit", "vectorize", "guvectorize", "jitclass"):
                        offenders.append(f"{module}.{node.name}")
    assert not offenders, f"numba kernels outside ntksolve._jit: {offenders}"
