"""The package keeps its shape: imports point down the rooms, and nothing imports in a circle.

buildenv is a stack of rooms, one per stage of the pipeline (README's "Layout"):

    core < env < data, toolchain < labels, access < training < compile < monitor < release < serving < cli

and inside `data`: storage, executor, keys, tables < lock < store < gate < validate,
evaluation, transfer < infer. A module may
import its own room, the rooms below it, and a room of the same rank that does not import it
back; never a room above. Every import counts: at module level, inside functions (deferred on
purpose), under `TYPE_CHECKING`, relative or absolute. `buildenv` itself holds only the version
and the decorator labeling functions are declared with (it imports nothing of the package).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "buildenv"

# room -> rank: a module may import rooms of a lower rank, or of its own rank (without a circle)
ROOMS = {"core": 0, "env": 1, "data": 2, "toolchain": 2, "labels": 3, "access": 3, "training": 4, "compile": 5,
         "monitor": 6, "release": 7, "serving": 8, "cli": 9}
DATA_ROOMS = {"storage": 0, "executor": 0, "keys": 0, "tables": 0, "lock": 1, "store": 2,
              "gate": 3, "validate": 4, "evaluation": 4, "transfer": 4, "infer": 5}
TOP = 10  # buildenv.__main__: the command line's entry point


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by __init__)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(package: Path) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: line of its first import}: every import
    statement, wherever it is (functions, TYPE_CHECKING blocks, relative forms resolved)."""
    known = modules(package)
    root = package.name

    def owner(name: str) -> str | None:  # `pkg.mod.Class` -> `pkg.mod`
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[:len(here.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name == root or name.startswith(root + "."):
                    target = owner(name)
                    if target is not None and target != module:
                        found.setdefault(target, node.lineno)
        graph[module] = found
    return graph


def room(module: str) -> tuple[str, tuple[int, ...]]:
    """(room, rank) of a module; KeyError for a room the order does not know yet."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0], (-1,)  # the package itself: its version, importable by all
    if parts[1] == "__main__":
        return "__main__", (TOP,)
    name = parts[1]
    if name == "data" and len(parts) > 2:
        return f"data.{parts[2]}", (ROOMS["data"], DATA_ROOMS[parts[2]])
    return name, (ROOMS[name],)


def upward(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports that point at a room of a higher rank."""
    out = []
    for module, targets in sorted(graph.items()):
        _, mine = room(module)
        for target, line in sorted(targets.items()):
            _, theirs = room(target)
            common = min(len(mine), len(theirs))
            if theirs[:common] > mine[:common]:
                out.append(f"{module}:{line} imports {target}, a room above it")
    return out


def cycles(graph: dict[str, set[str]] | dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def room_graph(graph: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        mine = room(module)[0]
        for target in targets:
            theirs = room(target)[0]
            if theirs != mine:
                rooms[mine].add(theirs)
    return rooms


GRAPH = imports(PACKAGE)


def test_the_graph_sees_every_kind_of_import():
    """Deferred (function-level) and type-only imports are in the graph, not only the top."""
    assert len(GRAPH) > 100
    assert "buildenv.cli.application" in GRAPH["buildenv.cli.data_commands"]  # module level
    assert "buildenv.data.validate.validate" in GRAPH["buildenv.cli.data_commands"]  # in a function
    assert "buildenv.cli" in GRAPH["buildenv.__main__"]  # relative


def test_every_room_is_in_the_order():
    unknown = sorted({module.split(".")[1] for module in GRAPH if module.count(".")}
                     - set(ROOMS) - {"__main__"})
    assert not unknown, f"rooms missing from the order in tests/test_architecture.py: {unknown}"
    data = sorted({m.split(".")[2] for m in GRAPH if m.startswith("buildenv.data.")}
                  - set(DATA_ROOMS))
    assert not data, f"data rooms missing from DATA_ROOMS: {data}"


def test_imports_point_down_the_rooms():
    problems = upward(GRAPH)
    assert not problems, "\n".join(problems)


def test_no_module_imports_in_a_circle():
    assert cycles(GRAPH) == []


def test_no_two_rooms_import_each_other():
    """Rooms of one rank (labels and access; validate and evaluation) may use each other only
    one way round."""
    assert cycles(room_graph(GRAPH)) == []


def test_every_lock_goes_through_the_one_composition_point():
    """The data room's locking takes the label-set locker as an argument; only the labels
    room's `lock_environments` passes it, so no caller can lock without label sets."""
    callers = sorted(
        str(path.relative_to(REPO_ROOT)) for root in ("buildenv", "tests", "bench")
        for path in (REPO_ROOT / root).rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(REPO_ROOT).parts)  # scratch
        and "lock_environments_with" in path.read_text(encoding="utf-8", errors="replace")
        and path.name != "test_architecture.py")
    assert callers == ["buildenv/data/lock/locking.py", "buildenv/labels/locking.py"]


# --- the checker finds what it must ---------------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "buildenv" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "buildenv"


def test_the_checker_catches_upward_and_deferred_imports(tmp_path):
    package = _tree(tmp_path, {
        "__init__.py": "", "core/__init__.py": "",
        "core/a.py": "def f():\n    from buildenv.cli import app\n",  # deferred, upward
        "env/__init__.py": "", "env/b.py": "from ..core import a\n",  # relative, downward
        "cli/__init__.py": "", "cli/app.py": "import buildenv.env.b\n",
        "data/__init__.py": "", "data/lock/__init__.py": "",
        "data/lock/l.py": "from buildenv.data.gate.g import x\n",  # lock -> gate: up
        "data/gate/__init__.py": "", "data/gate/g.py": "x = 1\n",
    })
    graph = imports(package)
    assert graph["buildenv.env.b"] == {"buildenv.core.a": 1}
    assert upward(graph) == [
        "buildenv.core.a:2 imports buildenv.cli.app, a room above it",
        "buildenv.data.lock.l:1 imports buildenv.data.gate.g, a room above it"]
    assert cycles(graph) == [["buildenv.cli.app", "buildenv.core.a", "buildenv.env.b"]]


def test_the_checker_catches_rooms_that_import_each_other(tmp_path):
    package = _tree(tmp_path, {
        "__init__.py": "", "labels/__init__.py": "", "access/__init__.py": "",
        "labels/x.py": "from buildenv.access import y\n", "access/y.py": "",
        "access/z.py": "if False:\n    from buildenv.labels.x import X\n",  # type-only
    })
    graph = imports(package)
    assert upward(graph) == [] and cycles(graph) == []
    assert cycles(room_graph(graph)) == [["access", "labels"]]


@pytest.mark.parametrize("module, expected", [
    ("buildenv", ("buildenv", (-1,))), ("buildenv.__main__", ("__main__", (TOP,))),
    ("buildenv.data.gate.reader", ("data.gate", (2, 3))), ("buildenv.cli", ("cli", (9,))),
])
def test_rooms_of_modules(module, expected):
    assert room(module) == expected


# --- imports at the top, unless deferred on purpose ------------------------------------------------

_MARKER = re.compile(r"^# Deferred imports \(([^)]*)\):", re.M)


def deferred_imports(path: Path) -> list[str]:
    """Imports inside functions that do not say why they are deferred: no comment on their
    line or just above their block of imports, and no module comment `# Deferred imports
    (pkg, ...): why` naming their package. Also imports that repeat one of the module's top."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    declared = {name.strip() for match in _MARKER.finditer(text)
                for name in match.group(1).split(",")}
    tree = ast.parse(text, str(path))
    top = {(getattr(node, "module", None), alias.name, alias.asname)
           for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
           for alias in node.names}
    problems = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            module = getattr(node, "module", None)
            names = [(module, alias.name, alias.asname) for alias in node.names]
            shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name
            where = f"{shown}:{node.lineno}"
            if any(name in top for name in names):
                problems.append(f"{where}: imports again what the module imports at its top")
                continue
            package = (module or node.names[0].name).split(".")[0]
            if package in declared or _commented(lines, node.lineno, node.end_lineno or 0):
                continue
            problems.append(f"{where}: deferred import of {package} without a reason")
    return problems


def _commented(lines: list[str], first: int, last: int) -> bool:
    """A comment on the statement, or among the lines right above it that are comments,
    blank or other imports (one comment may explain a block of deferred imports)."""
    if any("#" in line for line in lines[first - 1:last]):
        return True
    for line in reversed(lines[:first - 1]):
        stripped = line.strip()
        if stripped.startswith("#"):
            return True
        if stripped and not stripped.startswith(("import ", "from ")):
            return False
    return False


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_deferred_imports_say_why(path):
    problems = deferred_imports(path)
    assert not problems, ("imports belong at the top of the module, unless deferred on purpose "
                          "(say why in a comment):\n" + "\n".join(problems))


def test_the_deferred_import_check_catches_silence(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text(
        "import json\n"
        "# Deferred imports (mlflow): seconds of imports\n\n"
        "def a():\n    import json\n"  # again
        "def b():\n    import yaml\n"  # silent
        "def c():\n    # only for c\n    import yaml\n"  # said above
        "def d():\n    import yaml  # said on the line\n"
        "def e():\n    import mlflow.sklearn\n"  # the module's marker
        "def f():\n    x = 1\n    import pandas\n")  # silent
    problems = [p.split(": ", 1)[1] for p in deferred_imports(sample)]
    assert problems == ["imports again what the module imports at its top",
                        "deferred import of yaml without a reason",
                        "deferred import of pandas without a reason"]
