"""The package's import graph: no cycles, and no arrow against the pipeline.

Built from the source with `ast` (every import statement, at module level or inside a
function; only those under ``if TYPE_CHECKING:`` are left out, since they never run), so
a lazy import inside a function counts as much as one at the top.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nncompile"

#: (importer prefix, imported prefix, why): an import from a module under the first to a
#: module under the second is refused.  "*" matches any module of the package.
FORBIDDEN = [
    ("backends", "dsl", "backends see the Program IR only, never the DSL"),
    ("backends", "derive.backprop", "backends see the Program IR only"),
    ("backends", "derive.entrypoints", "backends see the Program IR only"),
    ("backends", "explain", "backends see the Program IR only"),
    ("derive.ir", "*", "the IR imports nothing of the package"),
    ("runtime", "*", "the runtime is embedded verbatim in scripts: it imports only runtime modules"),
    ("dsl", "derive", "the DSL imports no later stage"),
    ("dsl", "backends", "the DSL imports no later stage"),
    ("dsl", "explain", "the DSL imports no later stage"),
    ("dsl", "cli", "the DSL imports no later stage"),
    ("dsl", "program", "the DSL imports no later stage"),
    ("symbolic", "dsl", "the registry sits below the DSL"),
    ("symbolic", "derive", "the registry sits below the derivation"),
    ("symbolic", "backends", "the registry sits below the backends"),
    ("symbolic", "explain", "the registry sits below the explanations"),
    ("derive", "explain", "the derivation does not depend on how it is shown"),
    ("derive", "backends", "the derivation does not know the backends"),
    ("explain", "backends", "the explanations read the derivation, not the backends"),
    ("train", "symbolic", "the trainer sees the compiled step only, never SymPy"),
    ("train", "derive", "the trainer sees the compiled step only"),
    ("*", "cli", "nothing but the command line itself imports the command line"),
    ("*", "report", "the report is shown by the command line and the _repr_html_ hooks only"),
    ("report.runview", "explain", "a training result is shown without SymPy"),
]
#: Importers a rule's target admits anyway: imported prefix -> importer prefixes.
ADMITTED = {"report": ("cli", "program", "train")}
#: Modules any stage may import (they import nothing), except where a rule says "*".
LEAVES = {"errors", "version"}
#: Third-party modules a stage must not import: (importer prefix, module, why).
FORBIDDEN_EXTERNAL = [
    ("runtime", "sympy", "the runtime is NumPy only"),
    ("runtime", "jinja2", "the runtime is NumPy only"),
    ("runtime", "tqdm", "the runtime is NumPy only"),
    ("train", "sympy", "the trainer sees the compiled step only"),
    ("backends.cuda.cupy_support", "sympy", "embedded in generated CUDA programs: NumPy only"),
    ("derive.ir", "numpy", "the IR is plain data"),
    ("report.runview", "sympy", "a training result is shown without SymPy"),
]
RUNTIME_EXTERNAL_ALLOWED = {"numpy", "matplotlib", "mpi4py"}  # mpi4py: imported only for --distributed


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules, top-level external modules) that `name` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    internal, external = set(), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "":
        package = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif (node.module or "").split(".")[0] == "nncompile":
                target = node.module[len("nncompile."):] if "." in node.module else ""
            else:
                external.add((node.module or "").split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}".strip(".")
                internal.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "nncompile":
                    internal.add(alias.name[len("nncompile."):] if "." in alias.name else "")
                else:
                    external.add(top)
    internal.discard(name)
    return internal, external


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules(root)
    graph, external = {}, {}
    for name, path in modules.items():
        graph[name], external[name] = imports_of(name, path, modules)
    return graph, external


def _under(module: str, prefix: str) -> bool:
    return prefix == "*" or module == prefix or module.startswith(prefix + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == "" or dep not in graph:
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def violations(graph: dict[str, set[str]], external: dict[str, set[str]]) -> list[str]:
    """Every import against the rules above, one line each."""
    found = []
    for importer, deps in sorted(graph.items()):
        if importer == "":
            continue                      # the root package is the public face: it re-exports every stage
        for dep in sorted(deps):
            if dep == "" and not _under(importer, "cli"):
                found.append(f"{importer} imports the root package nncompile: import the module it needs")
            for src, dst, why in FORBIDDEN:
                if not _under(importer, src):
                    continue
                if dst == "*":            # importer may import only inside its own folder
                    if dep and not _under(dep, src):
                        found.append(f"{importer} -> {dep}: {why}")
                elif dep not in LEAVES and _under(dep, dst) and not _under(importer, dst):
                    if not any(_under(importer, a) for a in ADMITTED.get(dst, ())):
                        found.append(f"{importer} -> {dep}: {why}")
    for importer, mods in sorted(external.items()):
        for src, mod, why in FORBIDDEN_EXTERNAL:
            if _under(importer, src) and mod in mods:
                found.append(f"{importer} imports {mod}: {why}")
        if _under(importer, "runtime"):
            extra = mods - RUNTIME_EXTERNAL_ALLOWED - set(sys.stdlib_module_names) - {"__future__"}
            found += [f"{importer} imports {m}: the runtime is NumPy and the standard library only"
                      for m in sorted(extra)]
    return found


def test_no_import_cycles():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_forbidden_arrows():
    graph, external = import_graph()
    assert violations(graph, external) == []


def test_layers_are_read_as_the_pipeline():
    """Every module is in a stage folder or is one of the few top-level modules the README lists."""
    top_level = {"", "errors", "version", "nn", "data", "program", "jit", "generate", "gradcheck", "train"}
    stages = {"dsl", "symbolic", "derive", "explain", "backends", "runtime", "report", "cli"}
    for name in _modules():
        assert name in top_level or name.split(".")[0] in stages, f"{name} belongs in a stage folder"


def test_no_two_module_names_differ_by_one_letter():
    def one_apart(a: str, b: str) -> bool:
        if abs(len(a) - len(b)) > 1 or a == b:
            return False
        if len(a) == len(b):
            return sum(x != y for x, y in zip(a, b)) == 1
        short, long_ = sorted((a, b), key=len)
        return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
    leaves = sorted({name.rsplit(".", 1)[-1] for name in _modules() if name})
    close = [(a, b) for i, a in enumerate(leaves) for b in leaves[i + 1:] if one_apart(a, b)]
    assert close == []


@pytest.mark.parametrize("source, target, message", [
    ("backends/numpy/lowering.py", "from ...dsl.layers import Dense", "backends see the Program IR only"),
    ("runtime/loop.py", "import sympy", "the runtime is NumPy only"),
    ("runtime/engine.py", "from ..errors import DataError", "the runtime is embedded verbatim"),
    ("derive/ir.py", "from ..errors import ModelError", "the IR imports nothing"),
    ("dsl/models.py", "from ..derive.backprop import derive", "the DSL imports no later stage"),
    ("train.py", "import sympy", "the trainer sees the compiled step only"),
    ("backends/numpy/lowering.py", "from ...report.page import build", "the report is shown by the command line"),
    ("explain/render.py", "from ..report import page", "the report is shown by the command line"),
    ("report/runview.py", "from ..explain.printers import show", "a training result is shown without SymPy"),
])
def test_a_planted_forbidden_import_is_caught(tmp_path, source, target, message):
    """The checks can fail: a copy of the package with one forbidden import added is refused."""
    import shutil
    copy = tmp_path / "nncompile"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    path = copy / source
    path.write_text(path.read_text(encoding="utf-8") + f"\n\ndef _planted():\n    {target}\n", encoding="utf-8")
    graph, external = import_graph(copy)
    assert any(message in v for v in violations(graph, external))


def test_a_planted_cycle_is_caught(tmp_path):
    import shutil
    copy = tmp_path / "nncompile"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    path = copy / "explain" / "printers.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _planted():\n    from .render import render\n",
                    encoding="utf-8")
    graph, _ = import_graph(copy)
    assert find_cycle(graph) is not None
