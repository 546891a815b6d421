"""No import circles in minidiff/, but the one deliberate circle: tensor <-> functional.

Tensor's operators are functional's ops (`a + b` is `F.add(a, b)`, as in PyTorch), and every
op builds Tensors, so tensor.py imports functional at its bottom, once Tensor exists. Every
other dependency points one way, down the layers of the package.

The graph is read from the source with `ast`, never by importing it. A module is a node
(a package is its __init__.py), and each import statement in its file is an edge to the
module it names:
  - `import minidiff.a.b` and `from minidiff.a import b`, and the relative forms, at any
    level (`from . import x`, `from ..a import y`);
  - `from P import name`: an edge to the submodule P.name when there is one, else to P;
  - imports inside functions count too: a circle closed at call time is still a circle
    (rundir <-> checkpoint and distributed/__init__ <-> launch were such circles, each
    closed by an import inside a function).
The import of a package's __init__ that Python makes before any of its submodules is not an
edge: it is not a statement in the file, and every submodule would form a circle with it.

Oracle: the graph is searched for circles by reachability (u and v are on one circle when
each reaches the other), on a graph built by rules checked on a small package written here.
"""
import ast
from pathlib import Path

import minidiff

PACKAGE = Path(minidiff.__file__).resolve().parent
ALLOWED_EDGE = ("minidiff.tensor", "minidiff.functional")      # tensor.py's last line


def module_names(root, package):
    """{module name: path} for every .py file under root (the folder of `package`)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _base(module, path, level):
    """The package that a `from` import of `level` dots in `module` starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]                  # a plain module's package is its parent
    return ".".join(parts[:len(parts) - (level - 1)])


def _known(name, modules):
    """`name`, or the nearest enclosing module of the package, or None if outside it."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _from(source, name, modules):
    """The module that `from source import name` depends on: the submodule source.name if
    there is one, else source itself (name is then one of its attributes)."""
    submodule = f"{source}.{name}"
    return submodule if submodule in modules else _known(source, modules)


def imports(module, path, modules):
    """[(target module, line)] for every import statement in one file, functions included."""
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_known(a.name, modules) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node.level) if node.level else ""
            source = ".".join(p for p in (base, node.module) if p)
            targets = [_from(source, a.name, modules) for a in node.names]
        else:
            continue
        edges += [(t, node.lineno) for t in targets if t is not None]
    return edges


def import_graph(root, package):
    """{module: {imported module: (file, line) of the first import}}."""
    modules = module_names(root, package)
    graph = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imports(name, path, modules):
            edges.setdefault(target, (path.relative_to(root.parent).as_posix(), line))
    return graph


def _reachable(graph, start):
    """Every module that `start` imports, directly or not."""
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    return seen


def circles(graph):
    """The circles of the graph: sets of two or more modules that each reach all the others,
    or one module that imports itself. Sorted, each as a sorted tuple."""
    reach = {m: _reachable(graph, m) for m in graph}
    found = set()
    for m in graph:
        if m in reach[m]:
            found.add(tuple(sorted(n for n in reach[m] if m in reach[n])))
    return sorted(found)


def _path(graph, start, goal):
    """The shortest chain of imports from start to goal, as [module, ...]."""
    previous, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for m in frontier:
            for n in graph[m]:
                if n == goal:
                    chain = [m]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return chain[::-1] + [goal]
                if n not in previous:
                    previous[n] = m
                    nxt.append(n)
        frontier = nxt
    return None


def describe(graph, circle):
    """One import chain round the circle, each step with the file and line that imports."""
    chain = _path(graph, circle[0], circle[0])
    steps = [f"{a} -> {b} ({':'.join(map(str, graph[a][b]))})" for a, b in zip(chain, chain[1:])]
    return "; ".join(steps)


def without(graph, edge):
    a, b = edge
    return {m: {n: w for n, w in edges.items() if (m, n) != (a, b)} for m, edges in graph.items()}


# ---------------------------------------------------------------------------- minidiff itself
def test_no_import_circle_but_tensor_functional():
    """Without tensor.py's import of functional, the package has no circle at all."""
    graph = import_graph(PACKAGE, "minidiff")
    rest = without(graph, ALLOWED_EDGE)
    found = [f"{', '.join(c)}; e.g. {describe(rest, c)}" for c in circles(rest)]
    assert not found, "import circles: " + " || ".join(found)


def test_the_deliberate_circle_holds_only_tensor_and_functional():
    """With that import, the circle through tensor.py runs through functional/ only."""
    graph = import_graph(PACKAGE, "minidiff")
    for circle in (c for c in circles(graph) if "minidiff.tensor" in c):
        outside = [m for m in circle
                   if m != "minidiff.tensor" and not m.startswith("minidiff.functional")]
        assert not outside, f"{outside} on the circle of tensor.py: {describe(graph, circle)}"


# ---------------------------------------------------------------------------- the graph's rules
def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_rules_of_the_graph_on_a_small_package(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "from . import a\nimport os\n",
        "a.py": "def f():\n    from .sub import c\n",                  # in a function: counts
        "b.py": "import pkg.sub.c\n",
        "sub/__init__.py": "from .c import g\n",
        "sub/c.py": "from .. import a\nfrom ..b import h\n",             # a: a submodule
        "sub/d.py": "from .. import VALUE\nfrom . import c, e\nfrom pkg.sub import X\n",
    })
    graph = import_graph(root, "pkg")
    edges = {m: sorted(targets) for m, targets in graph.items()}
    assert edges == {
        "pkg": ["pkg.a"],
        "pkg.a": ["pkg.sub.c"],
        "pkg.b": ["pkg.sub.c"],
        "pkg.sub": ["pkg.sub.c"],
        "pkg.sub.c": ["pkg.a", "pkg.b"],
        "pkg.sub.d": ["pkg", "pkg.sub", "pkg.sub.c"],      # VALUE, e and X: names, not modules
    }
    assert graph["pkg.a"]["pkg.sub.c"] == ("pkg/a.py", 2)
    # pkg.a -> pkg.sub.c -> pkg.a and pkg.sub.c -> pkg.b -> pkg.sub.c: one circle of three.
    # pkg and pkg.sub.d import it, but nothing on it leads back to them.
    assert circles(graph) == [("pkg.a", "pkg.b", "pkg.sub.c")]
    assert circles(without(graph, ("pkg.a", "pkg.sub.c"))) == [("pkg.b", "pkg.sub.c")]
    assert describe(graph, ("pkg.a",)) == ("pkg.a -> pkg.sub.c (pkg/a.py:2); "
                                           "pkg.sub.c -> pkg.a (pkg/sub/c.py:1)")
    assert circles(without(without(graph, ("pkg.a", "pkg.sub.c")), ("pkg.b", "pkg.sub.c"))) == []
