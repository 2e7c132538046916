"""No import cycles in normlab/: the package's import graph, read from the source with ``ast``, has none.

Every import statement counts wherever it stands (module level, inside a function, a class, an ``if`` or a
``try``): a function-level import only defers the cycle to the first call, it does not remove it. An edge
goes to the module that the statement names:

* ``import normlab.x``, ``import normlab.x as y``: normlab.x;
* ``from normlab.x import y``: normlab.x.y when that is a module of the package, else normlab.x;
* ``from normlab import x``: normlab.x (a subpackage's ``__init__.py`` when x is a package);
* relative imports (``from . import x``, ``from .x import y``, ``from .. import x``) resolve against the
  importing module's package in the same way;
* ``importlib.import_module("normlab.x")`` with a literal name: normlab.x.

Parent packages that Python initializes on the way to a submodule are not edges (every submodule would
otherwise "import" its package's ``__init__``, which usually imports it back). The walker checks itself on a
small package written to a temporary folder, with a cycle it must find (one edge of it inside a function)
and the same package without that edge, where it must find none.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package in ``package_dir`` (its folder name is the package's name): dotted name ->
    file. A package's name maps to its ``__init__.py``."""
    package_dir = Path(package_dir)
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _target(base: str, name: str | None, modules: dict[str, Path]) -> str | None:
    """The module that ``from base import name`` (or ``import base`` when name is None) loads: base.name
    when that is a module, else base; None when base is outside the package."""
    if name is not None and f"{base}.{name}" in modules:
        return f"{base}.{name}"
    while base and base not in modules:  # ``import normlab.x.y`` of a name that is not a module: its module
        base = base.rpartition(".")[0]
    return base or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` (source file ``path``) imports, at any nesting level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_target(alias.name, None, modules) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    continue  # beyond the top package: not ours
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found |= {_target(base, alias.name, modules) for alias in node.names}
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.add(_target(node.args[0].value, None, modules))
    return {m for m in found if m in modules and m != module}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    modules = module_names(package_dir)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each strongly connected component of more than one module
    (Tarjan's algorithm, then a shortest path back to the component's first module)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    found = []
    for component in components:
        start = min(component)
        paths = {w: [start, w] for w in sorted(graph[start]) if w in component}
        frontier = list(paths)
        while start not in paths:  # breadth first, inside the component
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in component and w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
            frontier = nxt
        found.append(paths[start])
    return sorted(found)


def describe(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in found)


def test_normlab_has_no_import_cycles():
    graph = import_graph(REPO / "normlab")
    assert "normlab.runtime" in graph and graph["normlab.report"]  # the walker read the package
    found = cycles(graph)
    assert not found, f"import cycles in normlab/ (move the shared piece into a leaf module):\n{describe(found)}"


def test_the_shared_pieces_are_leaf_modules():
    """The error type, the checksum and the column checks are imported by modules that must not import each
    other (datasets, download, preprocess): they import nothing from normlab but the error type."""
    graph = import_graph(REPO / "normlab")
    assert graph["normlab.errors"] == set()
    assert graph["normlab.checksums"] == set()
    assert graph["normlab.columns"] <= {"normlab.errors"}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "toypkg"


# a package with every import form the walker resolves; acyclic as written
TOY = {
    "toypkg/__init__.py": "import os\n",
    "toypkg/errors.py": "class ToyError(ValueError):\n    pass\n",
    "toypkg/a.py": "import toypkg.b as bee\nfrom toypkg.errors import ToyError\n",
    "toypkg/b.py": "from toypkg import errors\n\n\ndef f():\n    return errors\n",
    "toypkg/sub/__init__.py": "from .core import g\nfrom . import extra\n",
    "toypkg/sub/core.py": "from ..errors import ToyError\n\n\ndef g():\n    raise ToyError\n",
    # an absolute import of a sibling: Python initializes toypkg.sub on the way, which is not an edge
    "toypkg/sub/extra.py": "from toypkg.sub.core import g\n",
    "toypkg/c.py": "import importlib\n\n\ndef h():\n    return importlib.import_module('toypkg.a')\n",
}


def test_the_walker_resolves_every_import_form(tmp_path):
    graph = import_graph(_write(tmp_path, TOY))
    assert graph == {
        "toypkg": set(),
        "toypkg.errors": set(),
        "toypkg.a": {"toypkg.b", "toypkg.errors"},
        "toypkg.b": {"toypkg.errors"},
        "toypkg.sub": {"toypkg.sub.core", "toypkg.sub.extra"},
        "toypkg.sub.core": {"toypkg.errors"},
        "toypkg.sub.extra": {"toypkg.sub.core"},
        "toypkg.c": {"toypkg.a"},
    }
    assert cycles(graph) == []


def test_the_walker_finds_a_cycle_hidden_in_a_function(tmp_path):
    # b imports a only when f runs: a -> b -> a
    hidden = dict(TOY, **{"toypkg/b.py": "def f():\n    from toypkg import a\n    return a\n"})
    assert cycles(import_graph(_write(tmp_path / "one", hidden))) == [["toypkg.a", "toypkg.b", "toypkg.a"]]
    # a longer one through a subpackage, relative imports and a method: sub -> sub.core -> c -> sub
    longer = dict(TOY, **{
        "toypkg/sub/core.py": "from .. import c\n",
        "toypkg/c.py": "class K:\n    def m(self):\n        from .sub import g\n        return g\n",
    })
    found = cycles(import_graph(_write(tmp_path / "two", longer)))
    assert found == [["toypkg.c", "toypkg.sub", "toypkg.sub.core", "toypkg.c"]], describe(found)
