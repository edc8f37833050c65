"""The code a build depends on: a module and the repository modules it imports, by digest.

A training, a derived dataset's transform and a label set's labeling functions are user code
in the repository. What they compute changes when their module, or a repository module it
imports (a shared loader), changes; third-party libraries are covered elsewhere (library
versions in the cache key). Modules are parsed, never imported.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the transforms' runner imports no pydantic
    from buildenv.core.project import Project

__all__ = ["code_files", "decorated_functions", "decorates", "function_digests", "module_closure",
           "repo_imports"]

# buildenv itself is the tool, not user code (`import buildenv` for the decorator): its version
# is recorded elsewhere, and its source changing must not make every lock of the repo stale.
_TOOL = Path(__file__).resolve().parents[1]


def repo_imports(project: Project, entry: str) -> list[Path]:
    """The entry module and the repository modules it imports, transitively (for code digests)."""
    return module_closure(project.root, [project.root / entry])


def module_closure(root: Path, start: list[Path]) -> list[Path]:
    """`start` and every repository module they import, transitively, sorted. Imports resolve
    against the root (on the training's `sys.path`) and relative to the importing file. The
    training process uses it too, for the code a model ships with."""
    root = root.resolve()
    seen: dict[Path, None] = {}
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen[path] = None
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            names: list[tuple[str, int]] = []
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [(base, node.level)] + [(f"{base}.{a.name}" if base else a.name,
                                                  node.level) for a in node.names]
            for dotted, level in names:
                parts = [p for p in dotted.split(".") if p]
                bases = [path.parent] if level else [root, path.parent]
                if level > 1:
                    bases = [path.parents[level - 1]]
                for folder in bases:
                    candidate = folder.joinpath(*parts)
                    for option in (candidate.with_suffix(".py"), candidate / "__init__.py"):
                        if not option.is_file():  # most names are libraries: no resolving
                            continue
                        found = option.resolve()
                        if found.is_relative_to(root) and not found.is_relative_to(_TOOL):
                            todo.append(found)
    return sorted(seen)


def code_files(project: Project, module_path: str) -> dict[str, str]:
    """Repository-relative path -> `sha256:` digest of the module and what it imports."""
    return {project.rel(path): "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            for path in repo_imports(project, module_path)}


def decorated_functions(path: Path, decorator: str
                        ) -> tuple[dict[str, tuple[int, str]], str] | None:
    """The module's top-level functions decorated `@<...>decorator(...)`: name -> (line, source
    with its decorators), and the rest of the module's source (what they share). None when the
    file cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    lines = text.splitlines(keepends=True)
    found: dict[str, tuple[int, str]] = {}
    taken: set[int] = set()
    aliases = decorator_aliases(tree, decorator)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not any(decorates(d, decorator, aliases) for d in node.decorator_list):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        end = node.end_lineno or node.lineno
        found[node.name] = (node.lineno, "".join(lines[start - 1:end]))
        taken.add(id(node))
    # what they share, as code (blank lines and comments between functions are not): adding
    # a function leaves the other functions' digests as they were. Only the decorated
    # definitions themselves are left out: a plain `def` of the same name is shared code
    rest = [node for node in tree.body if id(node) not in taken]
    shared = ast.unparse(ast.Module(body=rest, type_ignores=[]))
    return found, shared


def decorator_aliases(tree: ast.Module, decorator: str) -> frozenset[str]:
    """The names the module imports `decorator` under from buildenv (`from buildenv import
    labeling_function as lf`): applied under one, it is the same decorator."""
    return frozenset(
        alias.asname for node in tree.body if isinstance(node, ast.ImportFrom)
        and node.level == 0 and (node.module or "").split(".")[0] == "buildenv"
        for alias in node.names if alias.name == decorator and alias.asname)


def decorates(node: ast.expr, decorator: str, aliases: frozenset[str] = frozenset()) -> bool:
    """`@decorator`, `@decorator(...)`, `@pkg.decorator(...)`, or under one of `aliases`."""
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and (target.id == decorator or target.id in aliases)
            ) or (isinstance(target, ast.Attribute) and target.attr == decorator)


def function_digests(project: Project, module_path: str, decorator: str
                     ) -> dict[str, str] | None:
    """Each decorated function's digest: its own source, what the module shares with the
    other functions, and the repository modules it imports. Changing one function changes
    only its digest; changing shared code or an imported module changes them all."""
    found = decorated_functions(project.root / module_path, decorator)
    if found is None:
        return None
    functions, shared = found
    imported = {k: v for k, v in code_files(project, module_path).items() if k != module_path}
    common = hashlib.sha256(shared.encode("utf-8")).hexdigest()
    out = {}
    for name, (_, source) in functions.items():
        h = hashlib.sha256()
        for part in (source, common, *(f"{k}={v}" for k, v in sorted(imported.items()))):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        out[name] = f"sha256:{h.hexdigest()}"
    return out
